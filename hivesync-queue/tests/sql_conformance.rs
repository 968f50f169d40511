//! The queue, registry and lock conformance suites against the SQL backend: SQLite always,
//! PostgreSQL when `DATABASE_URL` is set.

use std::sync::Arc;

use hivesync_core::adapters::SqliteStore;
use hivesync_core::clock::ManualClock;
use hivesync_core::ports::Store;
use hivesync_core::testkit;
use hivesync_queue::SqliteBackend;

async fn sqlite_backend(dir: &tempfile::TempDir, clock: &ManualClock) -> SqliteBackend {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("queue.db").display()
    );
    let store = SqliteStore::connect_sqlite(&url).await.unwrap();
    store.migrate().await.unwrap();
    SqliteBackend::new(store.pool().clone(), Arc::new(clock.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let backend = sqlite_backend(&dir, &clock).await;
    testkit::queue::run(Arc::new(backend), clock).await;
}

#[tokio::test]
async fn sqlite_registry_and_locks_conform() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let backend = sqlite_backend(&dir, &clock).await;
    testkit::coordination::registry(&backend, &clock).await;
    testkit::coordination::locks(&backend, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queue_registry_and_locks_conform() {
    use hivesync_core::adapters::PostgresStore;
    use hivesync_queue::PostgresBackend;

    let Some(admin_url) =
        testkit::service_env("DATABASE_URL", "postgres_queue_registry_and_locks_conform")
    else {
        return;
    };
    let database = testkit::postgres::TestDatabase::create(&admin_url)
        .await
        .unwrap();
    let store = PostgresStore::connect_postgres(database.url(), 8)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let clock = ManualClock::starting_now();
    let backend = PostgresBackend::new(store.pool().clone(), Arc::new(clock.clone()));
    testkit::queue::run(Arc::new(backend.clone()), clock.clone()).await;
    testkit::coordination::registry(&backend, &clock).await;
    testkit::coordination::locks(&backend, &clock).await;
    store.close().await;
    database.drop_database().await.unwrap();
}
