//! Cleanup removes what it should, and nothing outside its directories: decoys sit beside every
//! target, links point out of `DATA_DIR`, and a hand-made plan tries to escape.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hivesync_core::adapters::{FilesystemObjectStore, SqliteStore};
use hivesync_core::clock::ManualClock;
use hivesync_core::config::CleanupConfig;
use hivesync_core::domain::{JobId, JobUpdate, NewJob};
use hivesync_core::ports::{ObjectKey, ObjectStore, ObjectStoreExt, Store};
use hivesync_queue::cleanup::{Cleaner, CleanupAction, CleanupPlan};

const DAY: Duration = Duration::from_secs(86_400);

fn policy() -> CleanupConfig {
    CleanupConfig {
        interval: Duration::from_secs(600),
        preview_retention: DAY,
        preview_object_retention: 7 * DAY,
        tmp_retention: Duration::from_secs(6 * 3600),
        log_rotate_bytes: 1024,
        log_retention: 7 * DAY,
        cache_retention: 30 * DAY,
    }
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// Sets a file's or directory's modification time `age` into the past.
fn age(path: &Path, age: Duration) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

async fn new_job(store: &dyn Store) -> JobId {
    store
        .create_job(NewJob {
            id: JobId::new(),
            kind: "preview_build".to_owned(),
            queue: "preview_build".to_owned(),
            project_id: None,
            user_id: None,
            payload: serde_json::json!({}),
            dedup_key: None,
        })
        .await
        .unwrap()
        .id
}

struct World {
    _root: tempfile::TempDir,
    data: PathBuf,
    outside: PathBuf,
    cleaner: Cleaner,
    objects: Arc<dyn ObjectStore>,
    running: JobId,
    finished: JobId,
    orphan_key: ObjectKey,
    kept_keys: Vec<ObjectKey>,
}

async fn world() -> World {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let outside = root.path().join("outside");
    for sub in ["repos", "previews", "tmp", "logs", "cache", "objects"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    let store = SqliteStore::connect_sqlite(&format!(
        "sqlite://{}?mode=rwc",
        data.join("db.sqlite").display()
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let running = new_job(&*store).await;
    let finished = new_job(&*store).await;
    store
        .update_job(finished, JobUpdate::success(None))
        .await
        .unwrap();

    // Outside DATA_DIR, and inside it but outside the cleanable directories: old decoys.
    write(&outside.join("secret.txt"), b"keep");
    write(&outside.join("dir/inner.txt"), b"keep");
    write(&data.join("repos/p1/old-file"), b"keep");
    age(&data.join("repos/p1/old-file"), 90 * DAY);
    age(&data.join("repos/p1"), 90 * DAY);

    // tmp: an old build with a link out of DATA_DIR inside it; a running job's old directory; a
    // finished job's old directory; a fresh directory; a fresh link to a directory outside.
    write(&data.join("tmp/old-build/file"), b"x");
    std::os::unix::fs::symlink(outside.join("secret.txt"), data.join("tmp/old-build/link"))
        .unwrap();
    age(&data.join("tmp/old-build"), DAY);
    let running_dir = data.join(format!("tmp/preview-job-{running}"));
    write(&running_dir.join("project/package.json"), b"{}");
    age(&running_dir, DAY);
    let finished_dir = data.join(format!("tmp/preview-job-{finished}"));
    write(&finished_dir.join("project/package.json"), b"{}");
    age(&finished_dir, DAY);
    write(&data.join("tmp/fresh/file"), b"x");
    std::os::unix::fs::symlink(outside.join("dir"), data.join("tmp/link-out")).unwrap();

    // previews: one expired bundle, one recent.
    write(&data.join("previews/old-job/bundle.zip"), &[0u8; 100]);
    age(&data.join("previews/old-job"), 2 * DAY);
    write(&data.join("previews/new-job/bundle.zip"), &[0u8; 100]);

    // logs: a large current log, a small one, an old rotated one, a recent rotated one.
    write(&data.join("logs/app.log"), &[b'l'; 4096]);
    write(&data.join("logs/small.log"), b"small");
    write(&data.join("logs/app.log.20200101T000000Z"), b"old");
    age(&data.join("logs/app.log.20200101T000000Z"), 30 * DAY);
    write(&data.join("logs/app.log.20991231T000000Z"), b"recent");

    // cache: an unused dependency archive and a fresh one.
    write(
        &data.join("cache/preview_deps/old-hash/node_modules.tar"),
        b"x",
    );
    age(&data.join("cache/preview_deps/old-hash"), 60 * DAY);
    write(
        &data.join("cache/preview_deps/new-hash/node_modules.tar"),
        b"x",
    );

    // Objects: an orphan bundle (no job record), a finished job's bundle, something elsewhere.
    let objects: Arc<dyn ObjectStore> = Arc::new(
        FilesystemObjectStore::open(data.join("objects"))
            .await
            .unwrap(),
    );
    let orphan_key = ObjectKey::new(format!("previews/p1/{}/bundle.zip", JobId::new())).unwrap();
    let finished_key = ObjectKey::new(format!("previews/p1/{finished}/bundle.zip")).unwrap();
    let elsewhere = ObjectKey::new("exports/p1/keep.zip").unwrap();
    for key in [&orphan_key, &finished_key, &elsewhere] {
        objects
            .put_bytes(key, Bytes::from_static(b"zip"))
            .await
            .unwrap();
    }

    // The clock stands two hours ahead: the objects are past the orphan grace period.
    let clock = ManualClock::starting_now();
    clock.advance(Duration::from_secs(2 * 3600));
    let cleaner = Cleaner::new(&data, objects.clone(), store, policy(), Arc::new(clock));
    World {
        _root: root,
        data,
        outside,
        cleaner,
        objects,
        running,
        finished,
        orphan_key,
        kept_keys: vec![finished_key, elsewhere],
    }
}

fn removed_paths(plan: &CleanupPlan) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            CleanupAction::Remove { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn cleanup_removes_exactly_what_it_should() {
    let w = world().await;
    let plan = w.cleaner.plan().await.unwrap();
    let mut expected = vec![
        w.data.join("cache/preview_deps/old-hash"),
        w.data.join("logs/app.log.20200101T000000Z"),
        w.data.join("previews/old-job"),
        w.data.join("tmp/old-build"),
        w.data.join(format!("tmp/preview-job-{}", w.finished)),
    ];
    expected.sort();
    assert_eq!(removed_paths(&plan), expected);
    let rotations: Vec<&PathBuf> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            CleanupAction::Rotate { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(rotations, [&w.data.join("logs/app.log")]);
    let deleted: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            CleanupAction::DeleteObject { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, [w.orphan_key.as_str()]);

    // A dry run changes nothing.
    let (dry_plan, dry_report) = w.cleaner.run(true).await.unwrap();
    assert_eq!(dry_plan, plan);
    assert_eq!(dry_report, Default::default());
    assert!(w.data.join("tmp/old-build").exists());

    let (_, report) = w.cleaner.run(false).await.unwrap();
    assert_eq!(
        (
            report.removed,
            report.rotated,
            report.objects_deleted,
            report.failures
        ),
        (5, 1, 1, 0)
    );
    for path in &expected {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{} removed",
            path.display()
        );
    }
    assert!(!w.data.join("logs/app.log").exists(), "rotated away");
    assert!(std::fs::read_dir(w.data.join("logs")).unwrap().any(|e| {
        let name = e.unwrap().file_name().into_string().unwrap();
        name.starts_with("app.log.") && name != "app.log.20991231T000000Z"
    }));

    // Everything else is where it was.
    for kept in [
        w.outside.join("secret.txt"),
        w.outside.join("dir/inner.txt"),
        w.data.join("repos/p1/old-file"),
        w.data.join(format!(
            "tmp/preview-job-{}/project/package.json",
            w.running
        )),
        w.data.join("tmp/fresh/file"),
        w.data.join("previews/new-job/bundle.zip"),
        w.data.join("logs/small.log"),
        w.data.join("logs/app.log.20991231T000000Z"),
        w.data.join("cache/preview_deps/new-hash/node_modules.tar"),
    ] {
        assert!(kept.exists(), "{} must be kept", kept.display());
    }
    assert!(
        std::fs::symlink_metadata(w.data.join("tmp/link-out")).is_ok(),
        "a fresh link is kept"
    );
    assert_eq!(
        std::fs::read(w.outside.join("secret.txt")).unwrap(),
        b"keep",
        "link targets untouched"
    );
    assert!(w.objects.head(&w.orphan_key).await.unwrap().is_none());
    for key in &w.kept_keys {
        assert!(w.objects.head(key).await.unwrap().is_some(), "{key} kept");
    }
}

#[tokio::test]
async fn a_plan_cannot_reach_outside_the_cleanable_directories() {
    let w = world().await;
    let escape = |path: PathBuf| CleanupAction::Remove {
        path,
        bytes: 0,
        reason: "hostile".to_owned(),
    };
    let plan = CleanupPlan {
        actions: vec![
            escape(w.outside.join("secret.txt")),
            escape(w.data.join("tmp/../repos/p1")),
            escape(w.data.join("repos/p1/old-file")),
            escape(w.data.join("tmp/link-out/inner.txt")),
            escape(w.data.join("tmp")),
            escape(w.data.clone()),
            CleanupAction::Rotate {
                path: w.data.join("logs/small.log"),
                to: w.outside.join("stolen.log"),
                bytes: 0,
            },
            CleanupAction::DeleteObject {
                key: "exports/p1/keep.zip".to_owned(),
                bytes: 0,
                reason: "hostile".to_owned(),
            },
        ],
    };
    let report = w.cleaner.apply(&plan).await.unwrap();
    assert_eq!(report.failures, 8, "every hostile action is refused");
    assert_eq!(
        (report.removed, report.rotated, report.objects_deleted),
        (0, 0, 0)
    );
    for kept in [
        w.outside.join("secret.txt"),
        w.outside.join("dir/inner.txt"),
        w.data.join("repos/p1/old-file"),
        w.data.join("tmp"),
        w.data.join("logs/small.log"),
    ] {
        assert!(kept.exists(), "{} must be kept", kept.display());
    }
    assert!(!w.outside.join("stolen.log").exists());
    assert!(w.objects.head(&w.kept_keys[1]).await.unwrap().is_some());
}

#[tokio::test]
async fn a_cleanable_directory_that_is_a_link_is_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(data.join("previews")).unwrap();
    write(&elsewhere.join("precious/file"), b"keep");
    age(&elsewhere.join("precious"), 365 * DAY);
    // DATA_DIR/tmp and DATA_DIR/logs point out of DATA_DIR; cache points into repos.
    std::os::unix::fs::symlink(&elsewhere, data.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, data.join("logs")).unwrap();
    write(&data.join("repos/p1/old/file"), b"keep");
    age(&data.join("repos/p1/old"), 365 * DAY);
    std::os::unix::fs::symlink(data.join("repos"), data.join("cache")).unwrap();

    let store = SqliteStore::connect_sqlite(&format!(
        "sqlite://{}?mode=rwc",
        data.join("db.sqlite").display()
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(
        FilesystemObjectStore::open(data.join("objects"))
            .await
            .unwrap(),
    );
    let cleaner = Cleaner::new(
        &data,
        objects,
        Arc::new(store),
        policy(),
        Arc::new(ManualClock::starting_now()),
    );
    let plan = cleaner.plan().await.unwrap();
    assert!(
        plan.actions.is_empty(),
        "nothing reachable through a linked root: {plan:?}"
    );
    let (_, report) = cleaner.run(false).await.unwrap();
    assert_eq!(report, Default::default());
    assert!(elsewhere.join("precious/file").exists());
    assert!(data.join("repos/p1/old/file").exists());
}
