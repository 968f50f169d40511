//! The queue, registry, lock and rate-limiter conformance suites against Redis, when `REDIS_URL`
//! is set. Every test works under its own key prefix and removes it afterwards.

use std::sync::Arc;
use std::time::Duration;

use hivesync_core::clock::ManualClock;
use hivesync_core::testkit;
use hivesync_queue::RedisBackend;

async fn backend(test: &str, clock: &ManualClock) -> Option<RedisBackend> {
    let url = testkit::service_env("REDIS_URL", test)?;
    let prefix = format!("hivesync-test:{}:", testkit::unique_suffix());
    Some(
        RedisBackend::connect(&url, &prefix, Arc::new(clock.clone()))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_conforms() {
    let clock = ManualClock::starting_now();
    let Some(backend) = backend("redis_queue_conforms", &clock).await else {
        return;
    };
    testkit::queue::run(Arc::new(backend.clone()), clock).await;
    backend.clear_namespace().await.unwrap();
}

#[tokio::test]
async fn redis_registry_and_locks_conform() {
    let clock = ManualClock::starting_now();
    let Some(backend) = backend("redis_registry_and_locks_conform", &clock).await else {
        return;
    };
    testkit::coordination::registry(&backend, &clock).await;
    testkit::coordination::locks(&backend, &clock).await;
    backend.clear_namespace().await.unwrap();
}

#[tokio::test]
async fn redis_rate_limiter_conforms() {
    let clock = ManualClock::starting_now();
    let Some(backend) = backend("redis_rate_limiter_conforms", &clock).await else {
        return;
    };
    let moved = clock.clone();
    let advance =
        move |by: Duration| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            moved.advance(by);
            Box::pin(async {})
        };
    testkit::rate_limiter::run(&backend, "conformance", &advance).await;
    backend.clear_namespace().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_restores_every_job_after_redis_loses_its_data() {
    use hivesync_core::adapters::SqliteStore;
    use hivesync_core::domain::JobState;
    use hivesync_core::ports::{JobQueue, Queue, Store};
    use hivesync_queue::jobs::{Reconciler, Submission, submit};

    let clock = ManualClock::starting_now();
    let Some(redis) = backend(
        "the_reconciler_restores_every_job_after_redis_loses_its_data",
        &clock,
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect_sqlite(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("r.db").display()
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let queues = [
        Queue::AiJobs,
        Queue::PreviewBuild,
        Queue::SystemEvents,
        Queue::Cleanup,
    ];
    let mut ids = Vec::new();
    for n in 0..20 {
        let queue = queues[n % queues.len()];
        let job = submit(
            &*store,
            &redis,
            Submission::new(queue, "work", serde_json::json!({"n": n})),
        )
        .await
        .unwrap();
        ids.push((job.id, queue));
    }
    // One of them was running when the data went.
    let running = redis
        .reserve(Queue::AiJobs, "w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    store
        .update_job(
            running.job_id(),
            hivesync_core::domain::JobUpdate::progress(JobState::Running, 0.3, "working"),
        )
        .await
        .unwrap();

    // Redis loses everything (a restart without persistence, a FLUSHALL).
    assert!(redis.clear_namespace().await.unwrap() > 0);
    for (id, _) in &ids {
        assert!(!redis.contains(*id).await.unwrap());
    }

    clock.advance(Duration::from_secs(60));
    let reconciler = Reconciler::new(
        store.clone(),
        Arc::new(redis.clone()),
        Arc::new(clock.clone()),
    );
    let report = reconciler.run_once().await.unwrap();
    assert_eq!((report.checked, report.restored), (20, 20));
    assert_eq!(
        store
            .get_job(running.job_id())
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Queued,
        "the interrupted job starts over"
    );

    // Every job is deliverable again, each exactly once, on its own queue.
    let mut delivered = Vec::new();
    for queue in queues {
        while let Some(d) = redis
            .reserve(queue, "w", Duration::from_secs(60))
            .await
            .unwrap()
        {
            delivered.push((d.job_id(), queue));
            redis.complete(&d.lease).await.unwrap();
        }
    }
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids);
    redis.clear_namespace().await.unwrap();
}
