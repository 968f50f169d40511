//! A warm build must produce what a cold build of the same tree produces (`../shared/STYLE.md`
//! §12): for each example app, a cold build, a one-line change built warm, and the same tree
//! built again with Metro's cache emptied; the two builds of the changed tree must ship the same
//! bundle bytes and the same assets, and nothing a client receives may name a server path.
//!
//! Expo Router is the case that broke: its route table is a transform of the app directory's
//! location, which a cache shared between builds in different directories kept from the first
//! build (an empty route table, "No routes found" at launch).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use common::{Env, env};
use hivesync_core::domain::{Job, JobState};
use hivesync_preview::bundler::Platform;
use hivesync_preview::job::{PreviewBuilt, PreviewRequest};
use hivesync_queue::jobs::JobRecord;

/// A bundle as a client receives it: every file of `bundle.zip` but the per-job ones.
fn shipped(env: &Env, job: &Job) -> BTreeMap<String, Vec<u8>> {
    let zip = env
        .data()
        .join("previews")
        .join(job.id.to_string())
        .join("bundle.zip");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    let mut files = BTreeMap::new();
    for index in 0..zip.len() {
        let mut file = zip.by_index(index).unwrap();
        let name = file.name().unwrap().into_owned();
        if name == "metadata.json" || name == "logs.txt" {
            continue;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

fn bundle_of(files: &BTreeMap<String, Vec<u8>>) -> (&str, &[u8]) {
    files
        .iter()
        .find(|(name, _)| name.ends_with(".jsbundle") || name.ends_with(".js"))
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .expect("a bundle in the zip")
}

fn built_of(job: &Job) -> PreviewBuilt {
    job.output_as::<PreviewRequest>().unwrap().unwrap()
}

fn metro_warm(job: &Job) -> bool {
    built_of(job).cache.metro_warm == Some(true)
}

async fn built(env: &Env, branch: &str, platform: Platform) -> Job {
    let job = env
        .build_for(
            env.builder(env.objects.clone(), Duration::from_secs(900)),
            branch,
            platform,
        )
        .await;
    assert_eq!(
        job.state,
        JobState::Success,
        "{branch} {platform:?}: {:?}\n{}",
        job.error_message,
        env.log_of(&job)
    );
    job
}

/// Builds `app` cold, then with `file` changed by one line warm and cold, and compares.
/// `expected` are strings the changed app's bundle must contain (its screens). Returns the
/// environment and the warm build.
async fn warm_equals_cold(app: &str, file: &str, expected: &[&str]) -> (Env, Job) {
    let env = env().await;
    env.sync(app, "main", |_, bytes| Some(bytes));
    let edited = |path: &str, bytes: Vec<u8>| {
        Some(if path == file {
            let mut text = String::from_utf8(bytes).unwrap();
            text.push_str("\nconsole.log('HiveSync one-line change');\n");
            text.into_bytes()
        } else {
            bytes
        })
    };
    env.sync(app, "edited", edited);

    let cold = built(&env, "main", Platform::Android).await;
    assert!(!metro_warm(&cold));
    let warm = built(&env, "edited", Platform::Android).await;
    assert!(metro_warm(&warm), "{}", env.log_of(&warm));
    std::fs::remove_dir_all(env.data().join("cache/metro")).unwrap();
    let fresh = built(&env, "edited", Platform::Android).await;
    assert!(!metro_warm(&fresh));

    let (warm_files, fresh_files) = (shipped(&env, &warm), shipped(&env, &fresh));
    let names = |files: &BTreeMap<String, Vec<u8>>| files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&warm_files),
        names(&fresh_files),
        "{app}: the warm build shipped other files than a cold one"
    );
    let (name, bundle) = bundle_of(&warm_files);
    let text = String::from_utf8_lossy(bundle);
    for wanted in expected.iter().chain(&["HiveSync one-line change"]) {
        assert!(text.contains(wanted), "{app}: {wanted:?} is not in {name}");
    }
    assert!(
        warm_files == fresh_files,
        "{app}: the warm build's {name} differs from a cold build's of the same tree"
    );
    assert_ne!(
        bundle_of(&shipped(&env, &cold)).1,
        bundle,
        "the one-line change is in the rebuild"
    );

    // No server path in anything the client receives.
    let data = env.data().display().to_string();
    for (name, bytes) in &warm_files {
        for leak in ["___", "preview_deps", "preview_build", data.as_str()] {
            assert!(!name.contains(leak), "{app}: {name} names {leak}");
        }
        assert!(
            !String::from_utf8_lossy(bytes).contains(&data),
            "{app}: {name} contains the data directory's path"
        );
    }

    // And the other platform builds too.
    let ios = built(&env, "edited", Platform::Ios).await;
    let ios_files = shipped(&env, &ios);
    let (name, bundle) = bundle_of(&ios_files);
    let text = String::from_utf8_lossy(bundle);
    for wanted in expected {
        assert!(
            text.contains(wanted),
            "{app} ios: {wanted:?} is not in {name}"
        );
    }
    (env, warm)
}

/// The version of `package` installed in the dependency store (one entry per test environment).
fn installed_version(env: &Env, package: &str) -> String {
    let store = env.data().join("cache/preview_deps");
    let versions: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let manifest = entry
                .path()
                .join("node_modules")
                .join(package)
                .join("package.json");
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(manifest).ok()?).ok()?;
            json["version"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(versions.len(), 1, "{package} in {versions:?}");
    versions[0].clone()
}

/// The yarn (classic and berry) and pnpm-locked apps pin left-pad 1.1.3 where `^1.1.0` would give npm 1.3.0: the
/// build must install what the lockfile says, with the project's own package manager.
async fn installs_from_its_lockfile(app: &str, manager: &str, lockfile: &str) {
    let (env, warm) = warm_equals_cold(app, "src/App.js", &["HiveSync"]).await;
    let result = built_of(&warm);
    assert!(
        result
            .package_manager
            .as_deref()
            .unwrap()
            .starts_with(manager),
        "{result:?}"
    );
    assert_eq!(result.lockfile.as_deref(), Some(lockfile));
    assert_eq!(result.warnings, Vec::<String>::new());
    assert_eq!(installed_version(&env, "left-pad"), "1.1.3");
    assert!(
        env.log_of(&warm).contains(&format!(
            "dependencies: {lockfile}, installed with {manager}"
        )),
        "{}",
        env.log_of(&warm)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yarn_locked_app_installs_with_yarn_from_its_lockfile() {
    installs_from_its_lockfile("rn-yarn-app", "yarn 1.", "yarn.lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yarn_berry_locked_app_installs_with_yarn_berry_from_its_lockfile() {
    installs_from_its_lockfile("rn-berry-app", "yarn 4.", "yarn.lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pnpm_locked_app_installs_with_pnpm_from_its_lockfile() {
    installs_from_its_lockfile("rn-pnpm-app", "pnpm ", "pnpm-lock.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expo_router_rebuilds_ship_every_route() {
    warm_equals_cold(
        "expo-router-app",
        "app/index.tsx",
        &[
            "HiveSync router home",
            "HiveSync router about",
            "HiveSync router item",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expo_rebuilds_equal_cold_builds() {
    warm_equals_cold("expo-app", "src/App.js", &["HiveSync"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_native_rebuilds_equal_cold_builds() {
    let (env, warm) = warm_equals_cold("rn-app", "src/App.js", &["HiveSync preview"]).await;
    // An image from a dependency (react-native's own) is shipped under a name relative to the
    // project, which warm_equals_cold checked names no server path.
    let files = shipped(&env, &warm);
    assert!(
        files
            .keys()
            .any(|name| name == "assets/drawable-mdpi/node_modules_reactnative_libraries_logbox_ui_logboximages_chevronright.png"),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );
}

/// A yarn workspaces monorepo synced whole: the one app among its members is built, its
/// dependencies install once at the workspace root, and the workspace package is linked from the
/// checkout (its name exists on no registry, so a lookup there would have failed the install).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monorepo_builds_its_app_with_the_workspace_package() {
    let (env, warm) = warm_equals_cold(
        "monorepo",
        "apps/mobile/src/App.js",
        &[
            "HiveSync monorepo preview",
            "Greetings from the HiveSync workspace package",
        ],
    )
    .await;
    let log = env.log_of(&warm);
    assert!(log.contains("app: apps/mobile in a workspace"), "{log}");
    assert_eq!(built_of(&warm).lockfile.as_deref(), Some("yarn.lock"));
    let store = env.data().join("cache/preview_deps");
    let entry = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("node_modules").is_dir())
        .unwrap()
        .path();
    let linked = entry.join("node_modules/@hivesync-example/greeting");
    assert!(
        std::fs::symlink_metadata(&linked)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the workspace package is a link into the workspace, not a download"
    );
}
