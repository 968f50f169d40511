//! The worker runtime on the embedded SQL queue, in real time with short leases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hivesync_core::ApiErrorCode;
use hivesync_core::adapters::SqliteStore;
use hivesync_core::clock::system_clock;
use hivesync_core::domain::{JobId, JobState};
use hivesync_core::ports::{JobQueue, Queue, Store, WorkerRegistry, WorkerRole};
use hivesync_queue::SqliteBackend;
use hivesync_queue::jobs::{JobRecord, Reconciler, Submission, submit};
use hivesync_queue::worker::{
    Handlers, JobContext, JobError, JobHandler, JobResult, Ping, PingHandler, Pong, Worker,
    WorkerConfig, WorkerDeps,
};
use tokio_util::sync::CancellationToken;

struct Env {
    store: Arc<dyn Store>,
    backend: SqliteBackend,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
    let store = SqliteStore::connect_sqlite(&url).await.unwrap();
    store.migrate().await.unwrap();
    let backend = SqliteBackend::new(store.pool().clone(), system_clock());
    Env {
        store: Arc::new(store),
        backend,
        _dir: dir,
    }
}

impl Env {
    fn deps(&self) -> WorkerDeps {
        WorkerDeps {
            store: self.store.clone(),
            queue: Arc::new(self.backend.clone()),
            registry: Arc::new(self.backend.clone()),
            locks: Arc::new(self.backend.clone()),
            clock: system_clock(),
        }
    }

    fn worker(&self, handlers: Handlers, lease: Duration) -> (Worker, String) {
        let mut config = WorkerConfig::new(WorkerRole::Cpu, 2);
        config.queues = vec![Queue::SystemEvents, Queue::AiJobs];
        config.poll_interval = Duration::from_millis(50);
        config.heartbeat_interval = Duration::from_millis(200);
        config.shutdown_grace = Duration::from_millis(300);
        config.lease = Some(lease);
        let id = config.id.clone();
        (Worker::new(config, self.deps(), handlers), id)
    }

    async fn submit(&self, queue: Queue, kind: &str) -> JobId {
        submit(
            &*self.store,
            &self.backend,
            Submission::new(queue, kind, serde_json::json!({"k": kind})),
        )
        .await
        .unwrap()
        .id
    }

    /// Waits, with a deadline, until the queue no longer has the job (outcomes reach the `Store`
    /// first and the queue a moment later).
    async fn wait_until_acknowledged(&self, id: JobId) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.backend.contains(id).await.unwrap() {
            assert!(tokio::time::Instant::now() < deadline, "never acknowledged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits, with a deadline, until the job's record reaches a state that `done` accepts.
    async fn wait_for(
        &self,
        id: JobId,
        done: impl Fn(JobState) -> bool,
    ) -> hivesync_core::domain::Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.store.get_job(id).await.unwrap().unwrap();
            if done(job.state) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job stuck in {:?}",
                job.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn start(
    worker: Worker,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<hivesync_core::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    (shutdown, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_once_and_its_record_says_so() {
    let env = env().await;
    let (worker, worker_id) = env.worker(
        Handlers::new().on::<Ping>(PingHandler {
            worker_id: "w".into(),
        }),
        Duration::from_secs(5),
    );
    let (shutdown, handle) = start(worker);
    let id = env.submit(Queue::SystemEvents, "ping").await;
    let job = env.wait_for(id, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Success);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.result.unwrap()["pong"], true);
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    env.wait_until_acknowledged(id).await;
    // The worker is in the registry while it runs, and gone after it stops.
    assert!(
        env.backend
            .list()
            .await
            .unwrap()
            .iter()
            .any(|w| w.id == worker_id)
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert!(
        env.backend.list().await.unwrap().is_empty(),
        "deregistered at shutdown"
    );
}

/// Fails its first `failures` attempts with a retryable error.
struct Flaky {
    failures: u32,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl JobHandler for Flaky {
    async fn handle(&self, _ctx: &JobContext) -> JobResult {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.failures {
            Err(JobError::retryable(
                ApiErrorCode::AiProviderUnavailable,
                format!("attempt {call} failed"),
            ))
        } else {
            Ok(Some(serde_json::json!({"call": call})))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_retry_then_succeed() {
    let env = env().await;
    let calls = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new().register(
        "flaky",
        Flaky {
            failures: 1,
            calls: calls.clone(),
        },
    );
    let (worker, _) = env.worker(handlers, Duration::from_secs(5));
    let (shutdown, handle) = start(worker);
    let id = env.submit(Queue::SystemEvents, "flaky").await;
    let job = env.wait_for(id, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Success);
    assert_eq!((job.attempts, calls.load(Ordering::SeqCst)), (2, 2));
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_and_permanent_failures_end_failed_and_dead_lettered() {
    let env = env().await;
    struct Broken;
    #[async_trait]
    impl JobHandler for Broken {
        async fn handle(&self, _ctx: &JobContext) -> JobResult {
            Err(JobError::permanent(
                ApiErrorCode::InvalidProjectStructure,
                "no entry file",
            ))
        }
    }
    let handlers = Handlers::new().register("broken", Broken);
    let (worker, _) = env.worker(handlers, Duration::from_secs(5));
    let (shutdown, handle) = start(worker);
    let id = env.submit(Queue::AiJobs, "broken").await;
    let unknown = env.submit(Queue::AiJobs, "no-such-kind").await;
    let job = env.wait_for(id, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_code.as_deref(), Some("INVALID_PROJECT_STRUCTURE"));
    assert_eq!(job.error_message.as_deref(), Some("no entry file"));
    assert_eq!(job.attempts, 1, "a permanent failure is not retried");
    let job = env.wait_for(unknown, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error_message.unwrap().contains("no handler"));
    let mut dead: Vec<JobId> = env
        .backend
        .dead_letters(Queue::AiJobs, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.job_id)
        .collect();
    dead.sort();
    assert_eq!(dead, [id, unknown]);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_decode_fails_at_once_and_a_result_reads_as_its_type() {
    let env = env().await;
    let (worker, _) = env.worker(
        Handlers::new().on::<Ping>(PingHandler {
            worker_id: "typed".into(),
        }),
        Duration::from_secs(5),
    );
    let (shutdown, handle) = start(worker);
    let garbled = submit(
        &*env.store,
        &env.backend,
        Submission::new(
            Queue::SystemEvents,
            "ping",
            serde_json::json!({"hold_ms": "soon"}),
        ),
    )
    .await
    .unwrap()
    .id;
    let typed = submit(
        &*env.store,
        &env.backend,
        Submission::of(&Ping::default()).unwrap(),
    )
    .await
    .unwrap()
    .id;
    let job = env.wait_for(garbled, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_code.as_deref(), Some("VALIDATION_ERROR"));
    assert!(
        job.error_message
            .as_deref()
            .is_some_and(|m| m.contains("invalid ping payload")),
        "{:?}",
        job.error_message
    );
    assert_eq!(
        job.attempts, 1,
        "another attempt would read the same payload"
    );
    let job = env.wait_for(typed, JobState::is_terminal).await;
    let pong: Pong = job.output_as::<Ping>().unwrap().unwrap();
    assert_eq!(
        (pong.pong, pong.worker.as_str(), pong.attempt),
        (true, "typed", 1)
    );
    assert!(job.payload_as::<Ping>().is_ok());
    // Read as another kind, a record is refused rather than misread.
    assert!(
        job.output_as::<hivesync_queue::cleanup::CleanupJob>()
            .is_err()
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// Takes `duration`, unless stopped; counts its starts.
struct Slow {
    duration: Duration,
    starts: Arc<AtomicU32>,
}

#[async_trait]
impl JobHandler for Slow {
    async fn handle(&self, ctx: &JobContext) -> JobResult {
        self.starts.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            () = tokio::time::sleep(self.duration) => Ok(None),
            () = ctx.stop.cancelled() => Err(JobError::Stopped),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_that_renews_its_lease_is_not_delivered_twice() {
    let env = env().await;
    let starts = Arc::new(AtomicU32::new(0));
    let handlers = || {
        Handlers::new().register(
            "slow",
            Slow {
                duration: Duration::from_secs(3),
                starts: starts.clone(),
            },
        )
    };
    // Two workers on the same queue, each with a 600 ms lease: the job runs five leases long.
    let (first, _) = env.worker(handlers(), Duration::from_millis(600));
    let (second, _) = env.worker(handlers(), Duration::from_millis(600));
    let (stop_first, first) = start(first);
    let (stop_second, second) = start(second);
    let id = env.submit(Queue::AiJobs, "slow").await;
    let job = env.wait_for(id, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Success);
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "never handed to the second worker"
    );
    assert_eq!(job.attempts, 1);
    stop_first.cancel();
    stop_second.cancel();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_its_handler() {
    let env = env().await;
    let starts = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new().register(
        "slow",
        Slow {
            duration: Duration::from_secs(60),
            starts: starts.clone(),
        },
    );
    let (worker, _) = env.worker(handlers, Duration::from_millis(300));
    let (shutdown, handle) = start(worker);
    let id = env.submit(Queue::AiJobs, "slow").await;
    env.wait_for(id, |s| s == JobState::Running).await;
    assert_eq!(
        env.backend.cancel(id).await.unwrap(),
        hivesync_core::ports::CancelOutcome::Requested
    );
    let job = env.wait_for(id, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Cancelled);
    env.wait_until_acknowledged(id).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_unfinished_jobs_back_without_counting_the_attempt() {
    let env = env().await;
    let starts = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new().register(
        "slow",
        Slow {
            duration: Duration::from_secs(60),
            starts: starts.clone(),
        },
    );
    let (worker, _) = env.worker(handlers, Duration::from_secs(5));
    let (shutdown, handle) = start(worker);
    let id = env.submit(Queue::AiJobs, "slow").await;
    env.wait_for(id, |s| s == JobState::Running).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let job = env.store.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued, "back to queued in the record");
    let delivery = env
        .backend
        .reserve(Queue::AiJobs, "next", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("back in the queue");
    assert_eq!(
        (delivery.job_id(), delivery.attempt),
        (id, 1),
        "the interrupted attempt does not count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_delivered_again_is_only_acknowledged() {
    let env = env().await;
    let starts = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new().register(
        "slow",
        Slow {
            duration: Duration::ZERO,
            starts: starts.clone(),
        },
    );
    let id = env.submit(Queue::AiJobs, "slow").await;
    // The record says finished (a worker crashed after recording success, before acknowledging).
    env.store
        .update_job(id, hivesync_core::domain::JobUpdate::success(None))
        .await
        .unwrap();
    let (worker, _) = env.worker(handlers, Duration::from_secs(5));
    let (shutdown, handle) = start(worker);
    env.wait_until_acknowledged(id).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        0,
        "the handler did not run again"
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_restores_jobs_the_queue_lost() {
    let env = env().await;
    let ids: Vec<JobId> =
        futures::future::join_all((0..5).map(|_| env.submit(Queue::AiJobs, "ping"))).await;
    // The queue loses three of them.
    for id in &ids[..3] {
        env.backend.cancel(*id).await.unwrap();
    }
    let mut reconciler = Reconciler::new(
        env.store.clone(),
        Arc::new(env.backend.clone()),
        system_clock(),
    );
    reconciler.grace = Duration::ZERO;
    let report = reconciler.run_once().await.unwrap();
    assert_eq!((report.checked, report.restored), (5, 3));
    for id in &ids {
        assert!(env.backend.contains(*id).await.unwrap());
    }
    assert_eq!(
        reconciler.run_once().await.unwrap().restored,
        0,
        "nothing more to restore"
    );
    // A job the queue dead-lettered on its own (its worker died on the last attempt) gets a
    // record that says so.
    let delivery = env
        .backend
        .reserve(Queue::AiJobs, "gone", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let failure = hivesync_core::ports::Failure {
        retryable: false,
        code: "LEASE_EXPIRED".to_owned(),
        message: "the worker stopped renewing its lease on the last attempt".to_owned(),
        retry_after: Duration::ZERO,
    };
    env.backend.fail(&delivery.lease, failure).await.unwrap();
    let report = reconciler.run_once().await.unwrap();
    assert_eq!((report.restored, report.failed), (0, 1));
    let record = env.store.get_job(delivery.job_id()).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.error_code.as_deref()),
        (JobState::Failed, Some("LEASE_EXPIRED"))
    );

    // Records younger than the grace period are left alone.
    reconciler.grace = Duration::from_secs(3600);
    let pending = ids
        .iter()
        .copied()
        .find(|id| *id != delivery.job_id())
        .unwrap();
    env.backend.cancel(pending).await.unwrap();
    assert_eq!(reconciler.run_once().await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_cleanup_worker_is_active() {
    let env = env().await;
    let make = |starts: Arc<AtomicU32>| {
        let mut config = WorkerConfig::new(WorkerRole::Cleanup, 4);
        config.poll_interval = Duration::from_millis(50);
        config.heartbeat_interval = Duration::from_millis(200);
        config.lease = Some(Duration::from_secs(5));
        assert_eq!(config.concurrency, 1, "cleanup runs one job at a time");
        // Each job outlives the cleanup lock's time-to-live (three heartbeats): the holder must
        // renew it while the job runs, or the other worker would take over mid-job.
        let handlers = Handlers::new().register(
            "slow",
            Slow {
                duration: Duration::from_millis(900),
                starts,
            },
        );
        Worker::new(config, env.deps(), handlers)
    };
    let (first_runs, second_runs) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (first, second) = (make(first_runs.clone()), make(second_runs.clone()));
    let (first_id, second_id) = (first.id().to_owned(), second.id().to_owned());
    let (stop_first, first) = start(first);
    let (stop_second, second) = start(second);
    for _ in 0..3 {
        let id = env.submit(Queue::Cleanup, "slow").await;
        env.wait_for(id, JobState::is_terminal).await;
    }
    let holder =
        hivesync_core::ports::Locks::holder(&env.backend, hivesync_queue::worker::CLEANUP_LOCK)
            .await
            .unwrap()
            .expect("one worker holds the cleanup lock");
    let (holder_runs, other_runs) = if holder == first_id {
        (
            first_runs.load(Ordering::SeqCst),
            second_runs.load(Ordering::SeqCst),
        )
    } else {
        assert_eq!(holder, second_id);
        (
            second_runs.load(Ordering::SeqCst),
            first_runs.load(Ordering::SeqCst),
        )
    };
    assert_eq!(
        (holder_runs, other_runs),
        (3, 0),
        "every cleanup job ran on the lock holder"
    );
    stop_first.cancel();
    stop_second.cancel();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

/// Runs until `release` fires.
struct Held {
    release: CancellationToken,
}

#[async_trait]
impl JobHandler for Held {
    async fn handle(&self, ctx: &JobContext) -> JobResult {
        tokio::select! {
            () = self.release.cancelled() => Ok(None),
            () = ctx.stop.cancelled() => Err(JobError::Stopped),
        }
    }
}

/// A job's start is written once it has run `record_start_after` (a quick job folds it into its
/// outcome): a job still running reads as `running` on its first attempt, and finishes on that
/// same attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_reads_as_running_on_its_attempt() {
    let env = env().await;
    let release = CancellationToken::new();
    let handlers = Handlers::new().register(
        "held",
        Held {
            release: release.clone(),
        },
    );
    let (worker, _) = env.worker(handlers, Duration::from_secs(5));
    let (shutdown, handle) = start(worker);
    let id = env.submit(Queue::SystemEvents, "held").await;
    let running = env.wait_for(id, |state| state != JobState::Queued).await;
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.attempts, 1);
    assert!(running.started_at.is_some() && running.finished_at.is_none());
    release.cancel();
    let job = env.wait_for(id, JobState::is_terminal).await;
    assert_eq!(job.state, JobState::Success);
    assert_eq!(
        job.attempts, 1,
        "the start and the outcome count one attempt"
    );
    assert_eq!(job.started_at, running.started_at);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
