//! The `preview_build` job through the real worker runtime (embedded SQL queue and SQLite
//! records), on the example app synced into a project repository: success, each error code from a
//! real cause, the timeout, and the repository left as it was.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::env;

use hivesync_core::adapters::S3ObjectStore;
use hivesync_core::config::{S3Config, S3Provider};
use hivesync_core::domain::JobState;
use hivesync_core::ports::{ObjectKey, ObjectStore, ObjectStoreExt};
use hivesync_core::secret::Secret;
use hivesync_preview::job::PreviewRequest;
use hivesync_queue::jobs::JobRecord;

/// Processes whose command line mentions a path in `data` (builds run in slots there).
fn processes_under(data: &std::path::Path) -> Vec<String> {
    let needle = data.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// An S3 store at `endpoint`, for object stores that misbehave (nothing listening, no answer).
async fn s3_store_at(endpoint: String) -> Arc<dyn ObjectStore> {
    Arc::new(
        S3ObjectStore::connect(&S3Config {
            provider: S3Provider::Minio,
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            credentials: Some(("key".into(), Secret::new("secret-secret".to_owned()))),
            bucket: "previews".into(),
            prefix: String::new(),
        })
        .await
        .unwrap(),
    )
}

/// A commit the API resolved but this worker's repositories lack is the deployment's fault (a
/// worker that does not see the server's repositories), not the project's: retried, and never
/// reported as `INVALID_PROJECT_STRUCTURE`. A ref the project lacks stays the project's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_worker_cannot_see_is_retried_as_a_server_fault() {
    let env = env().await;
    let long = Duration::from_secs(600);
    let pinned = PreviewRequest {
        project_id: env.project,
        platform: hivesync_preview::bundler::Platform::Android,
        git_ref: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        requested_ref: Some("main".to_owned()),
        app_dir: None,
        env: Default::default(),
        token_version: 1,
        token_id: None,
        build_key: None,
    };
    let job = env
        .run(env.builder(env.objects.clone(), long), &pinned)
        .await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_code.as_deref(), Some("UNAVAILABLE"));
    assert_eq!(job.attempts, 2, "retried: another worker may see it");
    assert!(
        job.error_message
            .as_deref()
            .is_some_and(|m| m.contains("this worker cannot find commit")),
        "{:?}",
        job.error_message
    );

    let unpinned = PreviewRequest {
        git_ref: "no-such-branch".to_owned(),
        requested_ref: None,
        ..pinned
    };
    let job = env
        .run(env.builder(env.objects.clone(), long), &unpinned)
        .await;
    assert_eq!(job.error_code.as_deref(), Some("INVALID_PROJECT_STRUCTURE"));
    assert_eq!(job.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_succeed_fail_with_the_right_code_and_never_touch_the_repository() {
    let env = env().await;
    // The project's own code runs in the bundler: it tries to read a secret in DATA_DIR.
    let secret = env.data().join("secrets/probe");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "probe-secret-value").unwrap();
    let probe = format!(
        "try {{ console.log('PROBE read ' + require('fs').readFileSync({:?}, 'utf8')); }} \
         catch (e) {{ console.log('PROBE refused ' + e.code); }}\n",
        secret.display().to_string()
    );
    env.sync("rn-app", "main", |path, bytes| {
        Some(if path == "metro.config.js" {
            [probe.as_bytes(), &bytes].concat()
        } else {
            bytes
        })
    });
    env.sync("rn-app", "broken", |path, bytes| {
        Some(if path == "src/App.js" {
            b"export default function App( {\n".to_vec()
        } else {
            bytes
        })
    });
    env.sync("rn-app", "no-entry", |path, bytes| {
        (path != "index.js").then_some(bytes)
    });
    env.sync("rn-app", "bad-deps", |path, bytes| match path {
        "package-lock.json" => None,
        "package.json" => Some(
            String::from_utf8(bytes)
                .unwrap()
                .replace(
                    "\"react\": \"19.3.1\"",
                    "\"react\": \"19.3.1\", \"left-pad\": \"999.999.999\"",
                )
                .into_bytes(),
        ),
        _ => Some(bytes),
    });
    let repository = env.repo_state();
    let long = Duration::from_secs(600);

    // Success: the zip's layout, its metadata, the object, the record.
    let job = env
        .build(env.builder(env.objects.clone(), long), "main")
        .await;
    assert_eq!(
        job.state,
        JobState::Success,
        "{:?}\n{}",
        job.error_message,
        env.log_of(&job)
    );
    assert_eq!(job.progress, 1.0);
    let log = env.log_of(&job);
    if log.contains("sandbox: bubblewrap") {
        assert!(log.contains("PROBE refused ENOENT"), "{log}");
        assert!(!log.contains("probe-secret-value"), "{log}");
    } else {
        assert!(
            !hivesync_core::testkit::services_required(),
            "CI must build in the sandbox: {log}"
        );
        // Unconfined, the probe does read it: the check above is a real one.
        assert!(log.contains("PROBE read probe-secret-value"), "{log}");
    }
    let result = job.output_as::<PreviewRequest>().unwrap().unwrap();
    let key = result.bundle_key.as_str();
    assert_eq!(
        key,
        format!("previews/{}/{}/bundle.zip", env.project, job.id)
    );
    let stored = env
        .objects
        .get_bytes(&ObjectKey::new(key).unwrap())
        .await
        .unwrap();
    let local = env
        .data()
        .join("previews")
        .join(job.id.to_string())
        .join("bundle.zip");
    assert_eq!(stored.as_ref(), std::fs::read(&local).unwrap().as_slice());
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&local).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    for wanted in [
        "main.jsbundle",
        "metadata.json",
        "logs.txt",
        "assets/drawable-mdpi/assets_hive.png",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    assert!(zip.by_name("main.jsbundle").unwrap().size() > 100_000);
    let mut metadata = String::new();
    zip.by_name("metadata.json")
        .unwrap()
        .read_to_string(&mut metadata)
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata["job_id"], job.id.to_string());
    assert_eq!(metadata["project_id"], env.project.to_string());
    assert_eq!(metadata["platform"], "android");
    assert_eq!(metadata["bundler"], "metro");
    assert_eq!(metadata["cache"]["dependencies"], "installed");
    assert_eq!(metadata["timeout"], false);
    assert_eq!(metadata["bundle_sha256"].as_str().unwrap().len(), 64);
    let log = env.log_of(&job);
    for step in [
        "checkout",
        "dependencies",
        "bundling",
        "packaging",
        "uploading",
        "success after",
    ] {
        assert!(log.contains(step), "{step} in the log");
    }

    // A syntax error: PREVIEW_BUILD_FAILED with the error in the log.
    let job = env
        .build(env.builder(env.objects.clone(), long), "broken")
        .await;
    assert_eq!(
        job.error_code.as_deref(),
        Some("PREVIEW_BUILD_FAILED"),
        "{:?}",
        job.error_message
    );
    assert!(env.log_of(&job).contains("SyntaxError"));

    // No entry file: INVALID_PROJECT_STRUCTURE.
    let job = env
        .build(env.builder(env.objects.clone(), long), "no-entry")
        .await;
    assert_eq!(
        job.error_code.as_deref(),
        Some("INVALID_PROJECT_STRUCTURE"),
        "{:?}",
        job.error_message
    );

    // A dependency that cannot be installed: MISSING_DEPENDENCIES.
    let job = env
        .build(env.builder(env.objects.clone(), long), "bad-deps")
        .await;
    assert_eq!(
        job.error_code.as_deref(),
        Some("MISSING_DEPENDENCIES"),
        "{:?}",
        job.error_message
    );
    // Without a lockfile the log says the install is not the developer's (npm picks the newest).
    assert!(
        env.log_of(&job).contains("WARNING: no lockfile"),
        "{}",
        env.log_of(&job)
    );

    // The object store is down (nothing listens at its endpoint): STORAGE_UPLOAD_FAILED.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = s3_store_at(endpoint).await;
    let job = env.build(env.builder(down, long), "main").await;
    assert_eq!(
        job.error_code.as_deref(),
        Some("STORAGE_UPLOAD_FAILED"),
        "{:?}",
        job.error_message
    );
    assert_eq!(env.log_of(&job).matches("upload attempt").count(), 3);

    // The object store takes connections and never answers: the build does not wait on it past
    // its deadline (the copies of the log give up on their own, the upload at the deadline).
    let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent_listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent_listener.incoming().flatten() {
            held.push(connection);
        }
    });
    let silent = s3_store_at(endpoint).await;
    let job = env
        .build(env.builder(silent, Duration::from_secs(60)), "main")
        .await;
    assert_eq!(
        job.error_code.as_deref(),
        Some("PREVIEW_TIMEOUT"),
        "{:?}\n{}",
        job.error_message,
        env.log_of(&job)
    );
    assert!(
        env.log_of(&job)
            .contains("the build ran out of time while uploading"),
        "{}",
        env.log_of(&job)
    );

    // Out of time while Metro runs: PREVIEW_TIMEOUT, nothing of the build left running.
    std::fs::remove_dir_all(env.data().join("cache/metro")).unwrap();
    let job = env
        .build(
            env.builder(env.objects.clone(), Duration::from_secs(4)),
            "main",
        )
        .await;
    assert_eq!(
        job.error_code.as_deref(),
        Some("PREVIEW_TIMEOUT"),
        "{:?}\n{}",
        job.error_message,
        env.log_of(&job)
    );
    let left = processes_under(&env.data());
    assert!(left.is_empty(), "{left:?}");
    let metadata = std::fs::read_to_string(
        env.data()
            .join("previews")
            .join(job.id.to_string())
            .join("metadata.json"),
    )
    .unwrap();
    assert!(metadata.contains("\"timeout\": true"), "{metadata}");

    // None of it wrote to the repository.
    assert_eq!(env.repo_state(), repository);
}

/// A first build whose dependency install is slower than the build's whole limit keeps what it
/// installed: the install has its own limit (the build's does not count it), the build then runs
/// out of time while bundling and says so, and the next build restores the dependencies from the
/// store instead of installing them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_install_is_kept_when_the_build_runs_out_of_time() {
    let env = env().await;
    env.sync("rn-app", "main", |_, bytes| Some(bytes));
    // Far less than `npm ci` of the example app takes, let alone Metro.
    let job = env
        .build(
            env.builder(env.objects.clone(), Duration::from_millis(1500)),
            "main",
        )
        .await;
    let log = env.log_of(&job);
    assert_eq!(job.error_code.as_deref(), Some("PREVIEW_TIMEOUT"), "{log}");
    let message = job.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("PREVIEW_MAX_TIMEOUT_MS (1500 ms, not counting the dependency install)")
            && message.contains("while bundling"),
        "{message}\n{log}"
    );
    assert!(
        log.contains("while bundling; its processes were killed"),
        "{log}"
    );

    let job = env
        .build(
            env.builder(env.objects.clone(), Duration::from_secs(600)),
            "main",
        )
        .await;
    assert_eq!(job.state, JobState::Success, "{}", env.log_of(&job));
    let result = job.result.clone().unwrap_or_default();
    assert_ne!(
        result["cache"]["dependencies"], "installed",
        "the install of the build that ran out of time was lost: {result}"
    );
}
