//! Every port's conformance suite against every adapter: SQLite, the filesystem and the in-process
//! rate limiter always; PostgreSQL and the S3 server when their URLs are set.

use std::sync::Arc;
use std::time::Duration;

use hivesync_core::adapters::{FilesystemObjectStore, InProcessRateLimiter, SqliteStore};
use hivesync_core::ports::Store;
use hivesync_core::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("conformance.db").display()
    );
    let store = SqliteStore::connect_sqlite(&url).await.unwrap();
    store.migrate().await.unwrap();
    testkit::store::run(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    use hivesync_core::adapters::PostgresStore;
    use hivesync_core::testkit::postgres::TestDatabase;

    let Some(admin_url) = testkit::service_env("DATABASE_URL", "postgres_store_conforms") else {
        return;
    };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let store = PostgresStore::connect_postgres(database.url(), 8)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    testkit::store::run(Arc::new(store.clone())).await;
    store.close().await;
    database.drop_database().await.unwrap();
}

/// The status cache against PostgreSQL's change feed: a job update or a membership removal
/// committed by anyone reaches the cache, which then reads the new state.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_change_feed_keeps_the_status_cache_correct() {
    use hivesync_core::adapters::PostgresStore;
    use hivesync_core::domain::{
        Email, JobId, JobState, JobUpdate, NewJob, NewProject, NewUser, Role,
    };
    use hivesync_core::job_cache::MemberJobCache;
    use hivesync_core::testkit::postgres::TestDatabase;

    let Some(admin_url) = testkit::service_env(
        "DATABASE_URL",
        "the_postgres_change_feed_keeps_the_status_cache_correct",
    ) else {
        return;
    };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let store = PostgresStore::connect_postgres(database.url(), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let user = |name: &str| NewUser {
        email: Email::parse(&format!("{name}@example.com")).unwrap(),
        display_name: name.to_owned(),
        password_hash: "x".to_owned(),
    };
    let owner = store.create_user(user("owner")).await.unwrap().id;
    let viewer = store.create_user(user("viewer")).await.unwrap().id;
    let project = store
        .create_project(NewProject {
            name: "p".into(),
            description: String::new(),
            owner,
        })
        .await
        .unwrap()
        .id;
    store
        .add_member(project, viewer, Role::Viewer)
        .await
        .unwrap();
    let job = store
        .create_job(NewJob {
            id: JobId::new(),
            kind: "preview_build".into(),
            queue: "preview_build".into(),
            project_id: Some(project),
            user_id: Some(owner),
            payload: serde_json::json!({}),
            dedup_key: None,
        })
        .await
        .unwrap()
        .id;

    let cache = Arc::new(MemberJobCache::new(Duration::from_secs(60), 100));
    let mut announced = cache.subscribe();
    let stop = tokio_util::sync::CancellationToken::new();
    let feed = tokio::spawn(hivesync_core::adapters::sql::postgres::watch_changes(
        database.url().to_owned(),
        cache.clone(),
        stop.clone(),
    ));
    async fn wait(announced: &mut tokio::sync::watch::Receiver<u64>, what: &str) {
        tokio::time::timeout(Duration::from_secs(10), announced.changed())
            .await
            .unwrap_or_else(|_| panic!("no announcement: {what}"))
            .unwrap();
    }
    while !cache.is_live() {
        wait(&mut announced, "the feed going live").await;
    }
    let seen = |who| {
        let (cache, store) = (&cache, &store);
        async move { cache.get(store, job, who).await.unwrap().map(|j| j.state) }
    };
    assert_eq!(seen(viewer).await, Some(JobState::Queued));

    // A job without a project is never in the cache, so its updates are not announced: every
    // announcing commit waits for the one before, fsync included. Notifications arrive in commit
    // order, so had the first update been announced, the cache would count two changes by the
    // time it reads the second one's state.
    let projectless = store
        .create_job(NewJob {
            id: JobId::new(),
            kind: "ping".into(),
            queue: "system_events".into(),
            project_id: None,
            user_id: None,
            payload: serde_json::json!({}),
            dedup_key: None,
        })
        .await
        .unwrap()
        .id;
    let before = *announced.borrow_and_update();
    store
        .update_job(
            projectless,
            JobUpdate::progress(JobState::Running, 0.5, "running"),
        )
        .await
        .unwrap();
    store
        .update_job(
            job,
            JobUpdate::progress(JobState::Bundling, 0.5, "bundling"),
        )
        .await
        .unwrap();
    loop {
        wait(&mut announced, "the job update").await;
        if seen(viewer).await == Some(JobState::Bundling) {
            break;
        }
    }
    assert_eq!(
        *announced.borrow(),
        before + 1,
        "only the project's job was announced"
    );

    store.remove_member(project, viewer).await.unwrap();
    wait(&mut announced, "the membership removal").await;
    assert_eq!(seen(viewer).await, None, "a removed member sees nothing");
    assert_eq!(seen(owner).await, Some(JobState::Bundling));

    // The listening connection dies: the cache turns off, and on again once a new connection has
    // proven the feed with a ping.
    let connections = cache.times_switched_on();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(killed, [(true,)], "one listening connection");
    // Off and on again may both happen before this task looks: count the switches on instead.
    while cache.times_switched_on() == connections || !cache.is_live() {
        wait(&mut announced, "the feed reconnecting").await;
    }
    store
        .update_job(
            job,
            JobUpdate::progress(JobState::Uploading, 0.9, "uploading"),
        )
        .await
        .unwrap();
    wait(&mut announced, "an update after the reconnection").await;
    assert_eq!(seen(owner).await, Some(JobState::Uploading));

    stop.cancel();
    feed.await.unwrap();
    assert!(!cache.is_live(), "a stopped feed turns the cache off");
    store.close().await;
    database.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_object_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilesystemObjectStore::open(dir.path().join("objects"))
        .await
        .unwrap();
    testkit::object_store::run(Arc::new(store), "conformance").await;
    // Nothing was left in the staging area by failed or finished puts.
    let staging = std::fs::read_dir(dir.path().join("objects/.staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0, "staging files left behind");
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_store_conforms() {
    use futures::StreamExt;
    use hivesync_core::adapters::S3ObjectStore;
    use hivesync_core::config::{S3Config, S3Provider};
    use hivesync_core::ports::{ObjectKey, ObjectStore};
    use hivesync_core::secret::Secret;

    let test = "s3_object_store_conforms";
    let Some(endpoint) = testkit::service_env("OBJECT_STORAGE_ENDPOINT", test) else {
        return;
    };
    let bucket = testkit::service_env("OBJECT_STORAGE_BUCKET_PREVIEWS", test)
        .expect("OBJECT_STORAGE_BUCKET_PREVIEWS must be set with OBJECT_STORAGE_ENDPOINT");
    let credentials = match (
        std::env::var("OBJECT_STORAGE_ACCESS_KEY"),
        std::env::var("OBJECT_STORAGE_SECRET_KEY"),
    ) {
        (Ok(access), Ok(secret)) => Some((access, Secret::new(secret))),
        _ => None,
    };
    let config = S3Config {
        provider: S3Provider::Minio,
        endpoint: Some(endpoint),
        region: std::env::var("OBJECT_STORAGE_REGION").unwrap_or_else(|_| "us-east-1".to_owned()),
        credentials,
        bucket,
        // Every run works under its own prefix.
        prefix: format!("conformance-{}", testkit::unique_suffix()),
    };
    let store = S3ObjectStore::connect(&config).await.unwrap();
    store
        .check_bucket()
        .await
        .expect("the bucket must exist (.ci/run creates it)");
    testkit::object_store::run(Arc::new(store.clone()), "suite").await;

    // Failed and cancelled multipart uploads leave no parts behind. S3's API hides unfinished
    // uploads from listings, and s3s-fs does not implement ListMultipartUploads, so this looks at
    // the server's own directory when .ci/run says where it is (S3_SERVER_ROOT).
    let Ok(root) = std::env::var("S3_SERVER_ROOT") else {
        eprintln!("not checking for leftover upload parts: S3_SERVER_ROOT is not set");
        return;
    };
    let parts_left = || {
        std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".upload_id-") || name.starts_with(".upload-")
            })
            .count()
    };
    assert_eq!(parts_left(), 0, "failed multipart puts were aborted");

    // Cancel a put after two parts were sent: the body then never ends.
    let key = ObjectKey::new("cancelled/never-finished").unwrap();
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let body = futures::stream::iter((0..17).map(move |_| Ok(chunk.clone())))
        .chain(futures::stream::pending())
        .boxed();
    let put = store.put(&key, body);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), put)
            .await
            .is_err(),
        "the put is still waiting for its body"
    );
    // The abort runs in the background after the drop: wait for its effect, with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while parts_left() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(parts_left(), 0, "a cancelled multipart put was aborted");
    assert!(store.head(&key).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn in_process_rate_limiter_conforms() {
    let limiter = InProcessRateLimiter::new();
    let advance =
        |by: Duration| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            Box::pin(tokio::time::advance(by))
        };
    testkit::rate_limiter::run(&limiter, "conformance", &advance).await;
}
