//! The dependency store against the real npm, with the example app's real lockfile.

use std::path::Path;
use std::time::{Duration, Instant};

use hivesync_core::testkit::examples::example_app;
use hivesync_preview::deps::{DepsSource, DepsStore};
use hivesync_preview::log::BuildLog;
use tokio_util::sync::CancellationToken;

/// A checkout-like copy of the example's manifest files (sources do not matter to the store).
fn project_from(example: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    for name in ["package.json", "package-lock.json"] {
        std::fs::copy(example.join(name), into.join(name)).unwrap();
    }
}

#[tokio::test]
async fn the_first_build_installs_and_the_next_one_links_the_same_store_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = DepsStore::new(dir.path().join("store"), "npm", "test-toolchain");
    let log = BuildLog::create(&dir.path().join("build.log")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let stop = CancellationToken::new();

    let first = dir.path().join("job-1/project");
    project_from(&example_app("rn-app"), &first);
    let restored = store.restore(&first, &log, deadline, &stop).await.unwrap();
    assert_eq!(restored.source, DepsSource::Installed, "{}", log.tail(4000));
    assert_eq!(
        std::fs::read_link(first.join("node_modules")).unwrap(),
        restored.node_modules
    );
    assert!(
        first
            .join("node_modules/react-native/package.json")
            .is_file()
    );
    assert!(first.join("node_modules/.bin/react-native").exists());

    let second = dir.path().join("job-2/project");
    project_from(&example_app("rn-app"), &second);
    let again = store.restore(&second, &log, deadline, &stop).await.unwrap();
    assert_eq!(again.source, DepsSource::StoreHit);
    assert_eq!(again.key, restored.key);
    assert_eq!(again.node_modules, restored.node_modules);
    // Only the entry itself is in the store: no staging directory was left.
    let entries: Vec<String> = std::fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec![restored.key.clone()]);
}
