//! The real bundlers on the example apps: Metro through the React Native CLI, and the Expo CLI,
//! with dependencies restored from the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hivesync_core::testkit::examples::example_app;
use hivesync_preview::bundler::{BundleError, BundleJob, Platform};
use hivesync_preview::deps::DepsStore;
use hivesync_preview::detect::{ProjectKind, detect};
use hivesync_preview::install_network::InstallNetwork;
use hivesync_preview::log::BuildLog;
use hivesync_preview::sandbox::{Sandbox, SandboxMode};
use hivesync_preview::workspace::Layout;
use tokio_util::sync::CancellationToken;

/// Copies an example's sources (what a checkout holds) into `into`.
fn copy_sources(from: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["node_modules", "build", ".expo"].contains(&name.to_str().unwrap()) {
            continue;
        }
        let target = into.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct Build {
    dir: tempfile::TempDir,
    store: DepsStore,
    project: PathBuf,
    log: BuildLog,
}

fn build_of(name: &str) -> Build {
    let dir = tempfile::tempdir().unwrap();
    let store = DepsStore::new(
        dir.path().join("store"),
        "npm",
        "test-toolchain",
        InstallNetwork::registries_only(dir.path()),
    );
    let project = dir.path().join("job/project");
    copy_sources(&example_app(name), &project);
    let log = BuildLog::create(&dir.path().join("job/logs/build.log")).unwrap();
    Build {
        dir,
        store,
        project,
        log,
    }
}

impl Build {
    async fn bundle(
        &self,
        platform: Platform,
        out: &str,
    ) -> Result<hivesync_preview::bundler::Bundled, BundleError> {
        self.bundle_with(platform, out, false).await
    }

    async fn bundle_with(
        &self,
        platform: Platform,
        out: &str,
        optimize: bool,
    ) -> Result<hivesync_preview::bundler::Bundled, BundleError> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let stop = CancellationToken::new();
        let deps = self
            .store
            .restore(&self.project, &self.log, deadline, &stop)
            .await
            .unwrap();
        let kind = detect(&self.project).unwrap();
        let out = self.dir.path().join("job").join(out);
        let job = BundleJob {
            kind: &kind,
            platform,
            project: &self.project,
            layout: &Layout::default(),
            deps: &deps,
            previous_node_modules: None,
            out: &out,
            metro_cache: &self.dir.path().join("metro-cache"),
            env: &BTreeMap::new(),
            sandbox: &Sandbox::for_mode(SandboxMode::Auto, self.dir.path()),
            optimize,
        };
        job.run(&self.log, deadline, &stop).await
    }
}

#[tokio::test]
async fn metro_bundles_the_react_native_app_and_reports_a_syntax_error() {
    let build = build_of("rn-app");
    assert!(matches!(
        detect(&build.project).unwrap(),
        ProjectKind::ReactNative { .. }
    ));
    let android = build.bundle(Platform::Android, "android").await;
    let android = android.unwrap_or_else(|err| panic!("{err}\n{}", build.log.tail(6000)));
    assert_eq!(android.bundler, "metro");
    assert!(
        android.bundler_version.contains("react-native@0.88.1"),
        "{}",
        android.bundler_version
    );
    let bundle =
        std::fs::read_to_string(build.dir.path().join("job/android/main.jsbundle")).unwrap();
    assert!(
        bundle.contains("HiveSync preview"),
        "the app's own code is in the bundle"
    );
    assert!(
        build
            .dir
            .path()
            .join("job/android/assets/drawable-mdpi/assets_hive.png")
            .is_file()
    );

    let ios = build.bundle(Platform::Ios, "ios").await;
    let ios = ios.unwrap_or_else(|err| panic!("{err}\n{}", build.log.tail(6000)));
    assert_eq!(ios.bundle, Path::new("main.jsbundle"));
    assert!(
        build
            .dir
            .path()
            .join("job/ios/assets/assets/assets/hive.png")
            .is_file()
    );

    std::fs::write(
        build.project.join("src/App.js"),
        "export default function App( {\n",
    )
    .unwrap();
    let err = build.bundle(Platform::Android, "broken").await.unwrap_err();
    match err {
        BundleError::Failed(why) => assert!(
            why.contains("SyntaxError") || why.contains("Unexpected"),
            "{why}\n{}",
            build.log.tail(12000)
        ),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn expo_exports_the_expo_app() {
    let build = build_of("expo-app");
    assert_eq!(detect(&build.project).unwrap(), ProjectKind::Expo);
    let bundled = build.bundle(Platform::Android, "android").await;
    let bundled = bundled.unwrap_or_else(|err| panic!("{err}\n{}", build.log.tail(6000)));
    assert_eq!(bundled.bundler, "expo");
    assert!(
        bundled.bundler_version.contains("expo@57.0.26"),
        "{}",
        bundled.bundler_version
    );
    let file = build.dir.path().join("job/android").join(&bundled.bundle);
    assert!(
        std::fs::metadata(&file).unwrap().len() > 10_000,
        "{}",
        file.display()
    );
    // Unminified JavaScript by default; Hermes bytecode when optimised as for a release.
    assert_eq!(
        bundled.bundle.extension().unwrap(),
        "js",
        "{}",
        bundled.bundle.display()
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("__d("),
        "Metro's module definitions: a JS bundle"
    );
    let bytecode = build.bundle_with(Platform::Ios, "ios", true).await;
    let bytecode = bytecode.unwrap_or_else(|err| panic!("{err}\n{}", build.log.tail(6000)));
    assert_eq!(bytecode.bundle.extension().unwrap(), "hbc");
    let hbc = std::fs::read(build.dir.path().join("job/ios").join(&bytecode.bundle)).unwrap();
    // Hermes bytecode files start with the magic 0x1F1903C103BC1FC6 (little endian).
    assert_eq!(hbc[..8], 0x1F19_03C1_03BC_1FC6_u64.to_le_bytes());
}
