//! The dependency store against the real npm, with the example app's real lockfile.

use std::path::Path;
use std::time::{Duration, Instant};

use hivesync_core::testkit::examples::example_app;
use std::os::unix::fs::MetadataExt;

use hivesync_preview::deps::{DepsSource, DepsStore, Placement};
use hivesync_preview::install_network::InstallNetwork;
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
async fn the_first_build_installs_and_the_next_one_uses_the_same_store_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = DepsStore::new(
        dir.path().join("store"),
        "npm",
        "test-toolchain",
        InstallNetwork::registries_only(dir.path()),
    );
    let log = BuildLog::create(&dir.path().join("build.log")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let stop = CancellationToken::new();

    let first = dir.path().join("job-1/project");
    project_from(&example_app("rn-app"), &first);
    let restored = store.restore(&first, &log, deadline, &stop).await.unwrap();
    assert_eq!(restored.source, DepsSource::Installed, "{}", log.tail(4000));
    assert!(
        !first.join("node_modules").exists(),
        "restore leaves the checkout alone"
    );
    // Unconfined: a real directory of hard links inside the checkout, never a link out of it.
    assert_eq!(
        restored.place(&first, None, false).unwrap(),
        Placement::Linked { reused: false }
    );
    let modules = first.join("node_modules");
    assert!(std::fs::symlink_metadata(&modules).unwrap().is_dir());
    let linked = modules.join("react-native/package.json");
    let stored = restored.node_modules.join("react-native/package.json");
    assert_eq!(
        std::fs::metadata(&linked).unwrap().ino(),
        std::fs::metadata(&stored).unwrap().ino()
    );
    assert!(modules.join(".bin/react-native").exists());
    // The next build of the same key in the same slot takes the tree back instead of linking.
    let previous = dir.path().join("previous");
    std::fs::rename(&modules, &previous).unwrap();
    assert_eq!(
        restored.place(&first, Some(&previous), false).unwrap(),
        Placement::Linked { reused: true }
    );
    assert!(linked.is_file() && !previous.exists());
    // Confined: an empty mount point for the sandbox to mount the store entry on.
    assert_eq!(
        restored.place(&first, None, true).unwrap(),
        Placement::Mount {
            mounts: vec![(restored.node_modules.clone(), modules.clone())]
        }
    );
    assert_eq!(std::fs::read_dir(&modules).unwrap().count(), 0);
    assert!(stored.is_file(), "replacing the linked tree kept the store");

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
