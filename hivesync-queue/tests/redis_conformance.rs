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
