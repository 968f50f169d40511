//! The worker runtime: takes jobs from queues, runs their handlers under renewed leases, records
//! the outcome in the `Store`, and reports heartbeats.
//!
//! Delivery is at least once; completion is exactly once. Before running a delivery the worker
//! reads the job's record, and a job the `Store` already holds as finished is only acknowledged;
//! the record's start is written once it is due, or folded into the outcome (`start.rs`).
//! Outcomes go to the `Store` first and the queue second, so a crash between the two re-delivers a
//! job that the next worker then sees finished.

mod handler;
mod start;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hivesync_core::clock::SharedClock;
use hivesync_core::domain::{JobId, JobState, JobUpdate};
use hivesync_core::ports::{
    Delivery, FailOutcome, Failure, JobQueue, LeaseRef, LeaseStatus, Locks, Queue, ReleaseOutcome,
    Store, WorkerRegistry, WorkerRole, WorkerStatus,
};
use hivesync_core::{ApiErrorCode, ErrorKind, Result};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use handler::{
    Handlers, JobContext, JobError, JobHandler, JobResult, Ping, PingHandler, Pong, StopReason,
    TypedHandler,
};

/// The lock that keeps exactly one cleanup worker active across the cluster.
pub const CLEANUP_LOCK: &str = "worker:cleanup";

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: String,
    pub role: WorkerRole,
    /// Queues to take jobs from, in the order tried first (the start rotates, so none starves).
    pub queues: Vec<Queue>,
    /// Jobs run at once. GPU and cleanup workers always run one.
    pub concurrency: usize,
    /// Longest wait between looks at empty queues (woken sooner when work arrives).
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    /// After a shutdown signal, how long running jobs may take to finish before they are stopped
    /// and given back to their queues.
    pub shutdown_grace: Duration,
    /// Overrides every queue's lease (and so how often leases are renewed: a third of it).
    pub lease: Option<Duration>,
    /// How long a job may run before its record is marked `running` (its first progress report
    /// marks it at once). A job that finishes sooner has its start and its outcome written in
    /// one write (`worker/start.rs`).
    pub record_start_after: Duration,
}

impl WorkerConfig {
    /// A configuration for `role` with its default queues.
    pub fn new(role: WorkerRole, concurrency: usize) -> Self {
        WorkerConfig {
            id: worker_id(),
            role,
            queues: role.default_queues(),
            concurrency: match role {
                WorkerRole::Gpu | WorkerRole::Cleanup => 1,
                WorkerRole::Cpu => concurrency.max(1),
            },
            poll_interval: Duration::from_secs(1),
            // Three missed heartbeats and its jobs are given back: 15 s, well inside any lease.
            heartbeat_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            lease: None,
            record_start_after: Duration::from_millis(100),
        }
    }

    /// The lease this worker takes on jobs of `queue`.
    pub fn lease_for(&self, queue: Queue) -> Duration {
        self.lease.unwrap_or(queue.policy().lease)
    }
}

/// The longest a worker waits between tries of a write the database refused as unavailable.
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
/// The first such wait; each further one doubles it.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);

/// Checks a worker id given by the operator (`--id`, `WORKER_ID`): a stable id lets a restarted
/// worker take back at once the jobs its previous run held. Two running workers must never share
/// one.
pub fn check_worker_id(id: &str) -> Result<()> {
    let fits = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if fits {
        Ok(())
    } else {
        Err(hivesync_core::Error::validation(
            "a worker id is 1 to 128 characters of letters, digits, '.', '_', ':' and '-'",
        )
        .with_context("value", hivesync_core::domain::truncate_for_display(id)))
    }
}

/// A worker id: host, process and a random suffix, so restarts never reuse one.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let suffix: u16 = rand::rng().random();
    format!("{host}-{}-{suffix:04x}", std::process::id())
}

/// The ports a worker uses.
#[derive(Clone)]
pub struct WorkerDeps {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn JobQueue>,
    pub registry: Arc<dyn WorkerRegistry>,
    pub locks: Arc<dyn Locks>,
    pub clock: SharedClock,
}

impl std::fmt::Debug for WorkerDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerDeps")
            .field("queue", &self.queue.name())
            .finish_non_exhaustive()
    }
}

/// A worker process's job loop.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    deps: WorkerDeps,
    handlers: Handlers,
    active: Arc<Mutex<HashSet<JobId>>>,
    started_at: chrono::DateTime<Utc>,
    /// Where the round-robin over queues starts next, so that no queue starves another.
    next_queue: AtomicUsize,
    /// Set once shutdown began, so every later heartbeat says so.
    draining: AtomicBool,
}

/// Why the worker stopped retrying a write the database refused as unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GaveUp {
    /// The lease went to another delivery meanwhile: that one owns the job now.
    LeaseLost,
    /// The worker is stopping.
    Stopping,
}

impl Worker {
    pub fn new(config: WorkerConfig, deps: WorkerDeps, handlers: Handlers) -> Self {
        Worker {
            config,
            deps,
            handlers,
            active: Arc::default(),
            started_at: Utc::now(),
            next_queue: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    fn status(&self) -> WorkerStatus {
        let mut active: Vec<JobId> = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        active.sort();
        WorkerStatus {
            id: self.config.id.clone(),
            role: self.config.role,
            queues: self.config.queues.clone(),
            hostname: self
                .config
                .id
                .rsplitn(3, '-')
                .nth(2)
                .unwrap_or("unknown")
                .to_owned(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            concurrency: self.config.concurrency as u32,
            active_jobs: active,
            draining: self.draining.load(Ordering::Relaxed),
            started_at: self.started_at,
            heartbeat_at: self.deps.clock.now(),
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
        }
    }

    async fn heartbeat(&self) {
        if let Err(err) = self.deps.registry.heartbeat(&self.status()).await {
            tracing::warn!(error = %err, "heartbeat failed");
        }
    }

    /// Runs until `shutdown` fires, then stops taking jobs, lets running ones finish within the
    /// grace period, gives the rest back to their queues, and deregisters.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let this = Arc::new(self);
        tracing::info!(worker = %this.config.id, role = %this.config.role, queues = ?this.config.queues,
            concurrency = this.config.concurrency, "worker started");
        this.take_back_previous_run().await;
        this.heartbeat().await;
        let beating = CancellationToken::new();
        let heartbeats = tokio::spawn({
            let this = this.clone();
            let beating = beating.clone();
            async move {
                let mut tick = tokio::time::interval(this.config.heartbeat_interval);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => this.heartbeat().await,
                        () = beating.cancelled() => break,
                    }
                }
            }
        });

        // Cancelled after the grace period: tells handlers still running to stop.
        let stop_all = CancellationToken::new();
        let mut running = JoinSet::new();
        let result = this
            .clone()
            .consume(&shutdown, &stop_all, &mut running)
            .await;

        this.draining.store(true, Ordering::Relaxed);
        this.heartbeat().await;
        let drained = tokio::time::timeout(this.config.shutdown_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                jobs = running.len(),
                "grace period over: stopping running jobs and giving them back"
            );
            stop_all.cancel();
            // Handlers that ignore their stop signal are aborted after a further moment.
            if tokio::time::timeout(Duration::from_secs(5), async {
                while running.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                running.abort_all();
            }
        }
        beating.cancel();
        let _ = heartbeats.await;
        if let Err(err) = this.deps.registry.deregister(&this.config.id).await {
            tracing::warn!(error = %err, "cannot deregister");
        }
        if this.config.role == WorkerRole::Cleanup {
            let _ = this.deps.locks.release(CLEANUP_LOCK, &this.config.id).await;
        }
        tracing::info!(worker = %this.config.id, "worker stopped");
        result
    }

    /// A worker that restarts under the id of its previous run knows that run is dead: the jobs
    /// it held go back at once, at the front of their queues, instead of waiting for their leases
    /// to run out.
    async fn take_back_previous_run(&self) {
        match self.deps.queue.reclaim_worker(&self.config.id).await {
            Ok(taken) if taken.is_empty() => {}
            Ok(taken) => {
                tracing::warn!(
                    jobs = taken.len(),
                    "took back the jobs this worker's previous run held"
                );
                crate::jobs::settle_taken_back(
                    &*self.deps.store,
                    &*self.deps.queue,
                    &taken,
                    "its worker restarted",
                )
                .await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot take back the jobs of this worker's previous run; their leases will expire");
            }
        }
    }

    /// Runs `op` until the database answers something other than "unavailable", waiting longer
    /// after each refusal (0.1 s doubling to 5 s) rather than giving the job back: another worker
    /// would meet the same outage, and a finished job would run again. Once `op` has failed,
    /// `lease` (when given) is renewed every third of its length, while waiting and while trying,
    /// so the job stays with this worker. A lease lost, `give_up` firing, or `patience` running
    /// out (for work not started yet, which another worker may be able to do) ends the retries.
    async fn until_stored<T, Fut>(
        &self,
        what: &'static str,
        lease: Option<&LeaseRef>,
        give_up: &CancellationToken,
        patience: Option<Duration>,
        mut op: impl FnMut() -> Fut,
    ) -> std::result::Result<Result<T>, GaveUp>
    where
        Fut: Future<Output = Result<T>>,
    {
        let first = op().await;
        if !matches!(&first, Err(err) if err.kind() == ErrorKind::Unavailable) {
            return Ok(first);
        }
        let mut answer = first;
        let began = Instant::now();
        let mut tries = 0u32;
        let mut wait = STORE_RETRY_FIRST;
        // One future for the whole outage, so that a renewal under way is never dropped.
        let renewing = self.keep_renewed(lease);
        tokio::pin!(renewing);
        loop {
            match &answer {
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    tries += 1;
                    if tries == 1 {
                        tracing::warn!(error = %err, "the database is unavailable; keeping the job and retrying to {what}");
                    } else {
                        tracing::debug!(error = %err, tries, "still unavailable; retrying to {what}");
                    }
                }
                _ => {
                    tracing::info!(tries, "the database is back: could {what}");
                    return Ok(answer);
                }
            }
            if patience.is_some_and(|patience| began.elapsed() >= patience) {
                return Err(GaveUp::Stopping);
            }
            let pause = tokio::time::sleep(wait.mul_f64(rand::rng().random_range(0.5..=1.0)));
            tokio::select! {
                () = pause => {}
                () = give_up.cancelled() => return Err(GaveUp::Stopping),
                () = &mut renewing => return Err(GaveUp::LeaseLost),
            }
            wait = (wait * 2).min(STORE_RETRY_MAX);
            answer = tokio::select! {
                answer = op() => answer,
                () = &mut renewing => return Err(GaveUp::LeaseLost),
            };
        }
    }

    /// Renews `lease` every third of its length, from now; returns only once it is lost (never
    /// without a lease). A failed renewal waits for the next: the queue may share the database's
    /// outage, and the fenced write decides in the end.
    async fn keep_renewed(&self, lease: Option<&LeaseRef>) {
        let Some(lease) = lease else {
            return std::future::pending().await;
        };
        let lease_for = self.config.lease_for(lease.queue);
        let mut every = tokio::time::interval(lease_for / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The first tick is at once: when the handler last renewed is not known here.
            every.tick().await;
            if let Ok(LeaseStatus::Lost) = self.deps.queue.renew(lease, lease_for).await {
                return;
            }
        }
    }

    /// The take-and-spawn loop; returns when `shutdown` fires.
    async fn consume(
        self: Arc<Self>,
        shutdown: &CancellationToken,
        stop_all: &CancellationToken,
        running: &mut JoinSet<()>,
    ) -> Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut holds_cleanup_lock = false;
        let mut lock_checked_at: Option<Instant> = None;
        loop {
            // Reap finished tasks so the set does not grow.
            while running.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if self.config.role == WorkerRole::Cleanup
                && lock_checked_at.is_none_or(|at| at.elapsed() >= self.config.heartbeat_interval)
            {
                holds_cleanup_lock = self.hold_cleanup_lock(holds_cleanup_lock).await;
                lock_checked_at = Some(Instant::now());
            }
            if self.config.role == WorkerRole::Cleanup && !holds_cleanup_lock {
                tokio::select! {
                    () = tokio::time::sleep(self.config.heartbeat_interval) => continue,
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = shutdown.cancelled() => return Ok(()),
            };
            match self.reserve_next().await {
                Ok(Some(delivery)) => {
                    let this = self.clone();
                    let stop_all = stop_all.clone();
                    let shutdown = shutdown.clone();
                    // A slot keeps working while each success hands it the next job.
                    running.spawn(async move {
                        let mut next = Some(delivery);
                        while let Some(delivery) = next.take() {
                            next = this
                                .clone()
                                .execute(delivery, stop_all.clone(), shutdown.clone())
                                .await;
                        }
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        result = self.deps.queue.wait_for_work(&self.config.queues, self.config.poll_interval) => {
                            if let Err(err) = result {
                                tracing::warn!(error = %err, "waiting for work failed");
                                tokio::time::sleep(self.config.poll_interval).await;
                            }
                        }
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
                Err(err) => {
                    drop(permit);
                    tracing::warn!(error = %err, "cannot take a job; retrying shortly");
                    tokio::select! {
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    /// The queue the round-robin offers next, advancing it.
    fn rotate(&self) -> Queue {
        let queues = &self.config.queues;
        queues[self.next_queue.fetch_add(1, Ordering::Relaxed) % queues.len()]
    }

    /// Takes the next job, trying each queue once, starting where the round-robin stands.
    async fn reserve_next(&self) -> Result<Option<Delivery>> {
        for _ in 0..self.config.queues.len() {
            let queue = self.rotate();
            if let Some(delivery) = self
                .deps
                .queue
                .reserve(queue, &self.config.id, self.config.lease_for(queue))
                .await?
            {
                return Ok(Some(delivery));
            }
        }
        Ok(None)
    }

    async fn hold_cleanup_lock(&self, held: bool) -> bool {
        let ttl = self.config.heartbeat_interval * 3;
        match self
            .deps
            .locks
            .acquire(CLEANUP_LOCK, &self.config.id, ttl)
            .await
        {
            Ok(true) => {
                if !held {
                    tracing::info!("this is now the active cleanup worker");
                }
                true
            }
            Ok(false) => {
                if held {
                    tracing::warn!("another cleanup worker took over");
                }
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot check the cleanup lock");
                false
            }
        }
    }

    /// Runs one delivery to an outcome recorded in the `Store` and the queue, inside a span that
    /// names the job. After a success it may already hold the next job, which it returns.
    async fn execute(
        self: Arc<Self>,
        delivery: Delivery,
        stop_all: CancellationToken,
        shutdown: CancellationToken,
    ) -> Option<Delivery> {
        let span = tracing::info_span!("job", job_id = %delivery.job_id(), kind = %delivery.kind,
            queue = %delivery.lease.queue, attempt = delivery.attempt);
        self.execute_in_span(delivery, stop_all, shutdown)
            .instrument(span)
            .await
    }

    async fn execute_in_span(
        self: Arc<Self>,
        delivery: Delivery,
        stop_all: CancellationToken,
        shutdown: CancellationToken,
    ) -> Option<Delivery> {
        let job_id = delivery.job_id();
        let queue = delivery.lease.queue;
        let store = &self.deps.store;
        let read = self
            .until_stored(
                "read the job's record",
                Some(&delivery.lease),
                &shutdown,
                Some(self.config.lease_for(queue)),
                || store.get_job(job_id),
            )
            .await;
        let record = match read {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None)) => {
                tracing::warn!("a delivered job has no record; dropping it");
                self.acknowledge(&delivery).await;
                return None;
            }
            Ok(Err(err)) => {
                let why = "the job's record could not be read";
                let start = self.record_start(&delivery, delivery.attempt, JobState::Running);
                self.not_started(&delivery, &start, Ok(err), why, &stop_all)
                    .await;
                return None;
            }
            Err(gave_up) => {
                let start = self.record_start(&delivery, delivery.attempt, JobState::Running);
                self.not_started(&delivery, &start, Err(gave_up), "", &stop_all)
                    .await;
                return None;
            }
        };
        if record.state.is_terminal() {
            tracing::info!(state = %record.state, "already finished; acknowledging");
            self.acknowledge(&delivery).await;
            return None;
        }
        let Some(handler) = self.handlers.get(&delivery.kind) else {
            let message = format!("no handler for job kind {:?} on this worker", delivery.kind);
            tracing::error!("{message}");
            let start = self.record_start(&delivery, record.attempts, JobState::Running);
            self.finish_failed(
                &delivery,
                &start,
                ApiErrorCode::InternalError.as_str(),
                &message,
                false,
                &stop_all,
            )
            .await;
            return None;
        };
        let start = Arc::new(self.record_start(&delivery, record.attempts, handler.start_state()));
        // The record as the start will write it; the handler sees this, whenever it is written.
        let mut record = record;
        record.attempts += 1;
        record.state = handler.start_state();
        record.progress = 0.0;
        record.phase = Some("started".to_owned());
        record.started_at.get_or_insert_with(Utc::now);

        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job_id);
        let ctx = JobContext {
            job: record,
            delivery: delivery.clone(),
            stop: stop_all.child_token(),
            reason: Arc::default(),
            store: self.deps.store.clone(),
            start,
        };
        let started = Instant::now();
        let outcome = self.supervise(handler.as_ref(), &ctx, &stop_all).await;
        let elapsed = started.elapsed();
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job_id);
        let (outcome_label, next) = self
            .record_outcome(&delivery, &ctx, outcome, &shutdown, &stop_all)
            .await;
        metrics::counter!("hivesync_jobs_total", "queue" => queue.as_str(), "outcome" => outcome_label)
            .increment(1);
        metrics::histogram!("hivesync_job_duration_seconds", "queue" => queue.as_str())
            .record(elapsed.as_secs_f64());
        next
    }

    /// The start of `delivery`, whose record counted `before` attempts.
    fn record_start(
        &self,
        delivery: &Delivery,
        before: u32,
        state: JobState,
    ) -> start::RecordStart {
        start::RecordStart::new(
            self.deps.store.clone(),
            delivery.job_id(),
            before,
            JobUpdate::progress(state, 0.0, "started"),
        )
    }

    /// Ends a delivery whose job's record could not be read. An error that is not an
    /// outage (`Ok(err)`, described to the record's readers as `why`; the cause goes to the log
    /// only) fails the delivery, so the queue's backoff decides when to try again rather than a
    /// release loop; an outage that outlasted this worker's patience, or shutdown, gives the job
    /// back to the front for a worker that can reach the database; a lost lease leaves it.
    async fn not_started(
        &self,
        delivery: &Delivery,
        start: &start::RecordStart,
        error: std::result::Result<hivesync_core::Error, GaveUp>,
        why: &str,
        stop_all: &CancellationToken,
    ) {
        match error {
            Ok(err) => {
                tracing::error!(error = %err, "{why}");
                let code = ApiErrorCode::InternalError.as_str();
                self.finish_failed(delivery, start, code, why, true, stop_all)
                    .await;
            }
            Err(GaveUp::LeaseLost) => {}
            Err(GaveUp::Stopping) => {
                let _ = self.deps.queue.release(&delivery.lease).await;
            }
        }
    }

    /// Runs the handler while renewing the lease (and, on the cleanup worker, the cleanup lock),
    /// telling it to stop when the job is cancelled, the lease is lost, or shutdown's grace
    /// period is over.
    async fn supervise(
        &self,
        handler: &dyn JobHandler,
        ctx: &JobContext,
        stop_all: &CancellationToken,
    ) -> JobResult {
        let stop = |reason: StopReason| {
            ctx.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(reason);
            ctx.stop.cancel();
        };
        let lease = self.config.lease_for(ctx.delivery.lease.queue);
        let handling = handler.handle(ctx);
        tokio::pin!(handling);
        // Often enough for both the lease and, on the cleanup worker, the cleanup lock (whose
        // time-to-live is three heartbeats).
        let every = (lease / 3).min(self.config.heartbeat_interval);
        // From one period on: an interval's first tick, due at once, still waits for the timer.
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut last_renewed = Instant::now();
        let start_due = tokio::time::sleep(self.config.record_start_after);
        tokio::pin!(start_due);
        let mut start_asked = false;
        // In a task of its own, so that the handler runs on while it is written; an outage
        // leaves it unwritten, to be tried again at the next renewal.
        let write_start = || {
            let start = ctx.start.clone();
            tokio::spawn(async move {
                if let Err(err) = start.ensure().await {
                    tracing::debug!(error = %err, "the job's start is not recorded");
                }
            });
        };
        loop {
            tokio::select! {
                outcome = &mut handling => {
                    // The handler may see its stop signal before this loop does.
                    if stop_all.is_cancelled() && ctx.stop_reason().is_none() {
                        ctx.reason.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(StopReason::Shutdown);
                    }
                    return outcome;
                }
                _ = renew.tick() => {
                    match self.deps.queue.renew(&ctx.delivery.lease, lease).await {
                        Ok(LeaseStatus::Held) => last_renewed = Instant::now(),
                        Ok(LeaseStatus::CancelRequested) => {
                            last_renewed = Instant::now();
                            stop(StopReason::Cancelled);
                        }
                        Ok(LeaseStatus::Lost) => stop(StopReason::LeaseLost),
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot renew the lease");
                            // Unrenewed for a whole lease, the job may already be running
                            // elsewhere: stop rather than race the other worker.
                            if last_renewed.elapsed() >= lease {
                                stop(StopReason::LeaseLost);
                            }
                        }
                    }
                    if self.config.role == WorkerRole::Cleanup && !self.hold_cleanup_lock(true).await {
                        stop(StopReason::LeaseLost);
                    }
                    if start_asked && !ctx.start.settled().await {
                        write_start();
                    }
                }
                () = &mut start_due, if !start_asked => {
                    start_asked = true;
                    write_start();
                }
                // The job finished elsewhere or another delivery owns it.
                () = ctx.start.refused().cancelled(), if ctx.stop_reason().is_none() => stop(StopReason::LeaseLost),
                () = stop_all.cancelled(), if ctx.stop_reason().is_none() => stop(StopReason::Shutdown),
            }
        }
    }

    /// Records the outcome of a delivery, and returns a label for metrics and, after a success
    /// while not shutting down, the next job (taken in the same round trip as the
    /// acknowledgement). Every `Store` write is fenced to this delivery's attempt, so a worker
    /// whose job went to another worker meanwhile cannot overwrite that worker's record.
    ///
    /// Which of the two is written first depends on who decides what happens next:
    /// - the worker decides a success or a cancellation: the `Store` first, then the queue. A
    ///   crash in between re-delivers a job whose record is finished, and the next delivery only
    ///   acknowledges it, so a job completes exactly once;
    /// - the queue decides after a failure (a retry while attempts remain, else a dead letter) and
    ///   at shutdown (back to the queue, or dropped when cancelled meanwhile): the queue first,
    ///   then the record follows what it decided. A crash in between is repaired by the next
    ///   delivery (a retry) or by the reconciler (a dead letter, or a release).
    async fn record_outcome(
        &self,
        delivery: &Delivery,
        ctx: &JobContext,
        outcome: JobResult,
        shutdown: &CancellationToken,
        stop_all: &CancellationToken,
    ) -> (&'static str, Option<Delivery>) {
        let start = &ctx.start;
        let outcome = Outcome::of(outcome, ctx.stop_reason());
        if let Some(kind) = start.refusal().await {
            // The record refused this delivery's start: the job finished or another delivery
            // owns it. Nothing more is written; the acknowledgement is fenced to this lease.
            tracing::warn!(refused = ?kind, "the job's record refused this delivery; not recording its outcome");
            self.acknowledge(delivery).await;
            return ("superseded", None);
        }
        match outcome {
            Outcome::Succeeded(result) => {
                self.record_success(delivery, start, result, shutdown, stop_all)
                    .await
            }
            Outcome::LeaseLost => {
                tracing::warn!("the lease was lost; another worker owns the job now");
                ("lease_lost", None)
            }
            Outcome::Cancelled => (self.record_cancelled(delivery, ctx, stop_all).await, None),
            Outcome::Interrupted => (self.release_at_shutdown(delivery, ctx).await, None),
            Outcome::Failed {
                code,
                message,
                retryable,
            } => (
                self.finish_failed(delivery, start, &code, &message, retryable, stop_all)
                    .await,
                None,
            ),
        }
    }

    /// Records a success, then acknowledges it (taking the next job in the same round trip).
    async fn record_success(
        &self,
        delivery: &Delivery,
        start: &start::RecordStart,
        result: Option<serde_json::Value>,
        shutdown: &CancellationToken,
        stop_all: &CancellationToken,
    ) -> (&'static str, Option<Delivery>) {
        let update = start.fence(JobUpdate::success(result)).await;
        let store = &self.deps.store;
        // The work is done: the outcome is kept and retried through an outage, under the lease,
        // rather than left to a lease expiry that would run the job again.
        let recorded = self
            .until_stored(
                "record the success",
                Some(&delivery.lease),
                stop_all,
                None,
                || store.update_job(delivery.job_id(), update.clone()),
            )
            .await;
        match recorded {
            Ok(Ok(_)) => tracing::info!("job succeeded"),
            Ok(Err(err)) if err.kind() == ErrorKind::Conflict => {
                // Finished or taken over elsewhere: that delivery owns the record now.
                tracing::warn!(error = %err, "the job's record moved on; not recording this success");
                self.acknowledge(delivery).await;
                return ("superseded", None);
            }
            Ok(Err(err)) => {
                // Leave the lease to expire: the job runs again rather than being lost.
                tracing::error!(error = %err, "cannot record success; the job will run again");
                return ("error", None);
            }
            Err(GaveUp::LeaseLost) => {
                tracing::warn!(
                    "the lease was lost while the database was unavailable; another worker owns the job now"
                );
                return ("lease_lost", None);
            }
            Err(GaveUp::Stopping) => {
                tracing::error!(
                    "stopped before the database took the success; the job will run again"
                );
                return ("error", None);
            }
        }
        // The cleanup worker takes each job through `consume`, which checks its lock first.
        if shutdown.is_cancelled() || self.config.role == WorkerRole::Cleanup {
            self.acknowledge(delivery).await;
            return ("success", None);
        }
        let next_queue = self.rotate();
        let lease = self.config.lease_for(next_queue);
        match self
            .deps
            .queue
            .complete_and_reserve(&delivery.lease, next_queue, &self.config.id, lease)
            .await
        {
            Ok((_, next)) => ("success", next),
            Err(err) => {
                tracing::warn!(error = %err, "cannot acknowledge the job; retrying");
                self.acknowledge_with_retries(delivery, stop_all).await;
                ("success", None)
            }
        }
    }

    /// Records a cancellation that stopped the handler, then acknowledges the delivery.
    async fn record_cancelled(
        &self,
        delivery: &Delivery,
        ctx: &JobContext,
        stop_all: &CancellationToken,
    ) -> &'static str {
        let cancelled = ctx
            .start
            .fence(JobUpdate::cancelled(
                ctx.job.progress,
                "cancelled while running",
            ))
            .await;
        let store = &self.deps.store;
        let recorded = self
            .until_stored(
                "record the cancellation",
                Some(&delivery.lease),
                stop_all,
                None,
                || store.update_job(delivery.job_id(), cancelled.clone()),
            )
            .await;
        if recorded.is_err() {
            // Unacknowledged, the job's expired lease drops it (its cancellation was requested).
            return "error";
        }
        self.acknowledge_with_retries(delivery, stop_all).await;
        tracing::info!("job cancelled");
        "cancelled"
    }

    /// Gives a job stopped by shutdown back to its queue without counting the attempt; the
    /// record follows the queue's answer.
    async fn release_at_shutdown(&self, delivery: &Delivery, ctx: &JobContext) -> &'static str {
        let update = match self.deps.queue.release(&delivery.lease).await {
            Ok(ReleaseOutcome::Released) => {
                JobUpdate::progress(JobState::Queued, 0.0, "released at shutdown")
            }
            Ok(ReleaseOutcome::Dropped) => {
                JobUpdate::cancelled(ctx.job.progress, "cancelled while running")
            }
            Ok(ReleaseOutcome::LeaseLost) => return "lease_lost",
            Err(err) => {
                tracing::warn!(error = %err, "cannot give the job back; its lease will expire");
                return "error";
            }
        };
        let _ = self
            .deps
            .store
            .update_job(delivery.job_id(), ctx.start.fence(update).await)
            .await;
        tracing::info!("job given back to its queue at shutdown");
        "released"
    }

    /// Records a failure. The queue decides first — a retry while attempts remain (and no
    /// cancellation was requested), otherwise a dead letter — and the record follows what it
    /// decided. A crash in between is repaired by the next delivery (a retry) or by the
    /// reconciler (a dead letter).
    async fn finish_failed(
        &self,
        delivery: &Delivery,
        start: &start::RecordStart,
        code: &str,
        message: &str,
        retryable: bool,
        stop_all: &CancellationToken,
    ) -> &'static str {
        let job_id = delivery.job_id();
        let policy = delivery.lease.queue.policy();
        let failure = Failure {
            retryable,
            code: code.to_owned(),
            message: message.to_owned(),
            retry_after: policy.backoff(delivery.attempt, rand::rng().random()),
        };
        let queue = &self.deps.queue;
        let decided = self
            .until_stored(
                "record the failure in the queue",
                None,
                stop_all,
                None,
                || queue.fail(&delivery.lease, failure.clone()),
            )
            .await;
        let Ok(decided) = decided else {
            tracing::error!("stopped before the queue took the failure; the job will run again");
            return "error";
        };
        let (update, label) = match decided {
            Ok(FailOutcome::Retrying { at }) => {
                tracing::warn!(code, message, retry_at = %at, "job failed; retrying");
                let update = JobUpdate {
                    state: JobState::Queued,
                    progress: 0.0,
                    phase: Some("retrying".to_owned()),
                    new_attempt: false,
                    error_code: Some(code.to_owned()),
                    error_message: Some(message.to_owned()),
                    result: None,
                    expected_attempts: None,
                };
                (update, "retried")
            }
            Ok(FailOutcome::DeadLettered) => {
                tracing::warn!(code, message, "job failed for good");
                (JobUpdate::failed(code, message), "failed")
            }
            Ok(FailOutcome::LeaseLost) => return "lease_lost",
            Err(err) => {
                tracing::error!(error = %err, "cannot record the failure in the queue; the job will run again");
                return "error";
            }
        };
        // The queue has decided; the record follows it once the database takes it. The write is
        // fenced to this attempt, so a retry that started meanwhile is never overwritten.
        let update = start.fence(update).await;
        let store = &self.deps.store;
        let recorded = self
            .until_stored("record the failure", None, stop_all, None, || {
                store.update_job(job_id, update.clone())
            })
            .await;
        match recorded {
            Ok(Err(err)) if err.kind() != ErrorKind::Conflict => {
                tracing::error!(error = %err, "cannot record the failure; the reconciler will");
            }
            Err(_) => {
                tracing::error!("stopped before the failure was recorded; the reconciler will")
            }
            Ok(_) => {}
        }
        label
    }

    /// Acknowledges a delivery whose outcome is recorded, through a queue outage: unacknowledged,
    /// it would be delivered again only to be acknowledged then.
    async fn acknowledge_with_retries(&self, delivery: &Delivery, stop_all: &CancellationToken) {
        let queue = &self.deps.queue;
        let acknowledged = self
            .until_stored("acknowledge the job", None, stop_all, None, || {
                queue.complete(&delivery.lease)
            })
            .await;
        if let Ok(Err(err)) = acknowledged {
            tracing::warn!(error = %err, "cannot acknowledge the job; it may be delivered again");
        }
    }

    async fn acknowledge(&self, delivery: &Delivery) {
        if let Err(err) = self.deps.queue.complete(&delivery.lease).await {
            tracing::warn!(error = %err, "cannot acknowledge the job; it may be delivered again");
        }
    }
}

/// What a delivery came to, from the handler's answer and why (if at all) it was asked to stop.
#[derive(Debug)]
enum Outcome {
    /// A success counts whatever happened around it: if the delivery was superseded, the fenced
    /// write is refused; otherwise the work is done.
    Succeeded(Option<serde_json::Value>),
    /// The job went to another worker: this one touches nothing.
    LeaseLost,
    /// Someone cancelled the job.
    Cancelled,
    /// Stopped by this worker's shutdown.
    Interrupted,
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
}

impl Outcome {
    fn of(answer: JobResult, stop: Option<StopReason>) -> Outcome {
        match (answer, stop) {
            (Ok(result), _) => Outcome::Succeeded(result),
            (Err(_), Some(StopReason::LeaseLost)) => Outcome::LeaseLost,
            (Err(_), Some(StopReason::Cancelled)) => Outcome::Cancelled,
            (Err(_), Some(StopReason::Shutdown)) => Outcome::Interrupted,
            (Err(JobError::Stopped), None) => Outcome::Failed {
                code: ApiErrorCode::InternalError.as_str().to_owned(),
                message: "the handler stopped without being asked to".to_owned(),
                retryable: true,
            },
            (Err(JobError::Retryable { code, message }), None) => Outcome::Failed {
                code,
                message,
                retryable: true,
            },
            (Err(JobError::Permanent { code, message }), None) => Outcome::Failed {
                code,
                message,
                retryable: false,
            },
        }
    }
}
