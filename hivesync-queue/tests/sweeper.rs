//! The sweeper that gives back the jobs of workers whose heartbeats stopped, on the embedded SQL
//! queue, with a clock the test moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hivesync_core::adapters::SqliteStore;
use hivesync_core::clock::{Clock, ManualClock, SharedClock};
use hivesync_core::domain::JobState;
use hivesync_core::ports::{JobQueue, Queue, Store, WorkerRegistry, WorkerRole, WorkerStatus};
use hivesync_queue::SqliteBackend;
use hivesync_queue::jobs::{GoneWorkerSweeper, Submission, submit};

const LEASE: Duration = Duration::from_secs(600);

/// The registry, or an outage of it.
struct Outage<R> {
    registry: R,
    down: AtomicBool,
}

#[async_trait]
impl<R: WorkerRegistry> WorkerRegistry for Outage<R> {
    async fn heartbeat(&self, status: &WorkerStatus) -> hivesync_core::Result<()> {
        self.check()?;
        self.registry.heartbeat(status).await
    }
    async fn deregister(&self, worker_id: &str) -> hivesync_core::Result<()> {
        self.check()?;
        self.registry.deregister(worker_id).await
    }
    async fn list(&self) -> hivesync_core::Result<Vec<WorkerStatus>> {
        self.check()?;
        self.registry.list().await
    }
}

impl<R> Outage<R> {
    fn check(&self) -> hivesync_core::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(hivesync_core::Error::unavailable("the registry is down"))
        } else {
            Ok(())
        }
    }
}

fn status(id: &str, clock: &ManualClock) -> WorkerStatus {
    WorkerStatus {
        id: id.to_owned(),
        role: WorkerRole::Cpu,
        queues: vec![Queue::SystemEvents],
        hostname: "host".to_owned(),
        pid: 1,
        version: "0".to_owned(),
        concurrency: 1,
        active_jobs: vec![],
        draining: false,
        started_at: clock.now(),
        heartbeat_at: clock.now(),
        heartbeat_interval_ms: 1_000,
    }
}

/// Silence is what the sweeper watched, not the age of a timestamp: after an outage in which no
/// worker could report (and the sweeper could not look), live workers keep their jobs; a worker
/// that then stays silent for three heartbeats has its job taken back, and its record follows.
#[tokio::test]
async fn only_silence_the_sweeper_watched_takes_jobs_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let clock = ManualClock::starting_now();
    let shared: SharedClock = Arc::new(clock.clone());
    let store = SqliteStore::connect_sqlite(&url).await.unwrap();
    store.migrate().await.unwrap();
    let backend = SqliteBackend::new(store.pool().clone(), shared.clone());
    let store: Arc<dyn Store> = Arc::new(store);
    let registry = Arc::new(Outage {
        registry: backend.clone(),
        down: AtomicBool::new(false),
    });
    let sweeper = GoneWorkerSweeper::new(
        store.clone(),
        Arc::new(backend.clone()),
        registry.clone(),
        shared,
    );

    let job = submit(
        &*store,
        &backend,
        Submission::new(Queue::SystemEvents, "ping", serde_json::json!({})),
    )
    .await
    .unwrap();
    backend.heartbeat(&status("alive", &clock)).await.unwrap();
    let delivery = backend
        .reserve(Queue::SystemEvents, "alive", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(sweeper.run_once().await.unwrap().is_empty());

    // A minute in which the registry is down: no heartbeat lands, every look fails. Shorter
    // than the lease, so the worker still holds its job.
    registry.down.store(true, Ordering::SeqCst);
    for _ in 0..30 {
        clock.advance(Duration::from_secs(2));
        assert!(sweeper.run_once().await.is_err());
    }
    registry.down.store(false, Ordering::SeqCst);
    assert!(
        sweeper.run_once().await.unwrap().is_empty(),
        "a heartbeat a minute old, first seen now, is not yet silence"
    );
    backend.heartbeat(&status("alive", &clock)).await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(
        sweeper.run_once().await.unwrap().is_empty(),
        "it reported again"
    );
    clock.advance(Duration::from_secs(2));
    assert!(
        sweeper.run_once().await.unwrap().is_empty(),
        "2 s watched: under three heartbeats of 1 s and the 3 s floor"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        sweeper.run_once().await.unwrap(),
        [job.id],
        "4 s of watched silence: gone"
    );
    assert!(
        sweeper.run_once().await.unwrap().is_empty(),
        "taken once per silence"
    );
    assert_eq!(
        backend.renew(&delivery.lease, LEASE).await.unwrap(),
        hivesync_core::ports::LeaseStatus::Lost,
        "the silent worker's lease is stale"
    );
    let record = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Queued);
    let again = backend
        .reserve(Queue::SystemEvents, "other", LEASE)
        .await
        .unwrap()
        .expect("deliverable again at once");
    assert_eq!((again.job_id(), again.attempt), (job.id, 2));
}
