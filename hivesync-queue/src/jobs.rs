//! Submitting jobs, and the reconciler that keeps the queue in step with the `Store`.
//!
//! The `Store` is the source of truth: a job is first recorded there, then enqueued. If the
//! enqueue fails, or the queue later loses the job (Redis restarted without persistence, or was
//! flushed), the reconciler finds the unfinished record the queue no longer has and enqueues it
//! again. It also finishes records whose job the queue dead-lettered on its own (a worker that
//! died on the last attempt leaves no one to record the failure).
//!
//! The [`GoneWorkerSweeper`] watches the worker registry: a worker it has seen miss three
//! heartbeats is taken to be dead, and the jobs it leased go back to the front of their queues at once
//! rather than after their leases run out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use hivesync_core::clock::SharedClock;
use hivesync_core::domain::{
    Job, JobFilter, JobId, JobState, JobUpdate, NewJob, Page, ProjectId, UserId,
};
use hivesync_core::ports::{Enqueued, JobQueue, Locks, NewQueuedJob, Queue, Store, WorkerRegistry};
use hivesync_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// A kind of job: the type is its payload, [`JobKind::Output`] its result, and the crate that
/// runs the job owns both. Everything that writes or reads such a job (the API that submits it,
/// the worker that runs it, the CLI and the bindings that show it) goes through these types, so a
/// renamed field is a compile error rather than a silent `null` in a record.
///
/// Records outlive code: a payload or result stored by an older version must still read, so new
/// fields get `#[serde(default)]`.
pub trait JobKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind name stored with each job, which picks its handler.
    const KIND: &'static str;
    /// The queue its jobs go on.
    const QUEUE: Queue;
    /// What a successful run stores as the job's result.
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// Reading a job record as the kind it is.
pub trait JobRecord {
    /// The payload, decoded. `Validation` when the record is another kind or does not read as
    /// this one.
    fn payload_as<J: JobKind>(&self) -> Result<J>;
    /// The result of a finished run, decoded: `None` while there is none.
    fn output_as<J: JobKind>(&self) -> Result<Option<J::Output>>;
}

impl JobRecord for Job {
    fn payload_as<J: JobKind>(&self) -> Result<J> {
        check_kind::<J>(self)?;
        decode(J::KIND, "payload", &self.payload)
    }

    fn output_as<J: JobKind>(&self) -> Result<Option<J::Output>> {
        check_kind::<J>(self)?;
        self.result
            .as_ref()
            .map(|result| decode(J::KIND, "result", result))
            .transpose()
    }
}

/// A record of another kind is refused rather than misread.
fn check_kind<J: JobKind>(job: &Job) -> Result<()> {
    if job.kind == J::KIND {
        return Ok(());
    }
    Err(Error::validation(format!(
        "job {} is a {} job, not {}",
        job.id,
        job.kind,
        J::KIND
    )))
}

/// The update that finishes a job of kind `J` with `output`, for a job that is answered without
/// running (a result reused from an earlier job).
pub fn succeeded<J: JobKind>(output: &J::Output) -> Result<JobUpdate> {
    Ok(JobUpdate::success(Some(encode(J::KIND, "result", output)?)))
}

/// Decodes a stored payload or result, in place (status reads do this on every request).
pub(crate) fn decode<T: DeserializeOwned>(
    kind: &str,
    what: &str,
    value: &serde_json::Value,
) -> Result<T> {
    T::deserialize(value).map_err(|err| Error::validation(format!("invalid {kind} {what}: {err}")))
}

/// Encodes a payload or result for storage.
pub(crate) fn encode<T: Serialize>(kind: &str, what: &str, value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|err| Error::internal(format!("cannot encode a {kind} {what}")).with_source(err))
}

/// A job to run: made from its typed payload ([`Submission::of`]), which fixes its kind, queue
/// and payload; who it is for, its dedup key and its delay are set with the `with_*` methods.
#[derive(Debug, Clone)]
pub struct Submission {
    queue: Queue,
    kind: String,
    payload: serde_json::Value,
    project_id: Option<ProjectId>,
    user_id: Option<UserId>,
    dedup_key: Option<String>,
    delay: Option<Duration>,
}

impl Submission {
    /// A job of kind `J` with `payload`, on `J`'s queue.
    pub fn of<J: JobKind>(payload: &J) -> Result<Self> {
        Ok(Submission::new(
            J::QUEUE,
            J::KIND,
            encode(J::KIND, "payload", payload)?,
        ))
    }

    /// The project and user the job is for (the admin views and status reads go by them).
    pub fn with_owner(mut self, project: Option<ProjectId>, user: Option<UserId>) -> Self {
        self.project_id = project;
        self.user_id = user;
        self
    }

    /// While an unfinished job with this key is on the same queue, submitting returns that job.
    pub fn with_dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Runs the job no sooner than `delay` from now.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The record of this job, as the `Store` keeps it, under `id`.
    pub fn record(&self, id: JobId) -> NewJob {
        NewJob {
            id,
            kind: self.kind.clone(),
            queue: self.queue.as_str().to_owned(),
            project_id: self.project_id,
            user_id: self.user_id,
            payload: self.payload.clone(),
            dedup_key: self.dedup_key.clone(),
        }
    }

    /// A job whose payload has no [`JobKind`]: for tools and tests that exercise the queue
    /// itself. The product's jobs use [`Submission::of`].
    pub fn new(queue: Queue, kind: &str, payload: serde_json::Value) -> Self {
        Submission {
            queue,
            kind: kind.to_owned(),
            payload,
            project_id: None,
            user_id: None,
            dedup_key: None,
            delay: None,
        }
    }
}

/// Records a job in the `Store` and puts it on its queue. Returns the job that will run: the new
/// one, or the unfinished twin holding the same dedup key.
///
/// A failure to enqueue is logged, not returned: the job is safely recorded, and the reconciler
/// enqueues it once the queue is reachable again.
pub async fn submit(
    store: &dyn Store,
    queue: &dyn JobQueue,
    submission: Submission,
) -> Result<Job> {
    submit_telling(store, queue, submission)
        .await
        .map(|(job, _)| job)
}

/// [`submit`], also telling whether the job is the one just recorded (`true`) or its unfinished
/// twin.
pub async fn submit_telling(
    store: &dyn Store,
    queue: &dyn JobQueue,
    submission: Submission,
) -> Result<(Job, bool)> {
    let id = JobId::new();
    let job = store.create_job(submission.record(id)).await?;
    if job.id != id {
        return Ok((job, false));
    }
    let enqueued = queue
        .enqueue(NewQueuedJob {
            job_id: id,
            queue: submission.queue,
            kind: submission.kind,
            payload: submission.payload,
            delay: submission.delay,
            // Deduplication already happened in the Store, which outlives the queue's memory.
            dedup_key: None,
            max_attempts: None,
        })
        .await;
    if let Err(err) = enqueued {
        tracing::warn!(job_id = %id, error = %err, "recorded but not enqueued; the reconciler will enqueue it");
    }
    Ok((job, true))
}

/// Puts a recorded job on `queue` again, from its record — for a queue that lost it. No dedup
/// key: the `Store` already holds the job's.
pub async fn enqueue_record(queue: &dyn JobQueue, job: &Job, on: Queue) -> Result<Enqueued> {
    queue
        .enqueue(NewQueuedJob {
            job_id: job.id,
            queue: on,
            kind: job.kind.clone(),
            payload: job.payload.clone(),
            delay: None,
            dedup_key: None,
            max_attempts: None,
        })
        .await
}

/// What one reconciliation pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Unfinished records looked at.
    pub checked: u64,
    /// Of those, jobs the queue did not have and that were enqueued again.
    pub restored: u64,
    /// Of those, jobs the queue had dead-lettered without a worker recording it (a worker that
    /// died on the job's last attempt): their records now say `failed`.
    pub failed: u64,
}

enum Repair {
    Nothing,
    Restored,
    MarkedFailed,
}

/// The name of the lock that keeps one reconciler running at a time across the cluster.
pub const RECONCILER_LOCK: &str = "reconciler";

/// Re-enqueues unfinished jobs that the queue lost.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    clock: SharedClock,
    /// Records younger than this are left alone: they may be between being recorded and enqueued.
    pub grace: Duration,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn JobQueue>, clock: SharedClock) -> Self {
        Reconciler {
            store,
            queue,
            clock,
            grace: Duration::from_secs(30),
        }
    }

    /// One pass over every unfinished record.
    pub async fn run_once(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let cutoff = self.clock.now() - chrono::Duration::from_std(self.grace).unwrap_or_default();
        let unfinished = [
            JobState::Queued,
            JobState::Running,
            JobState::Building,
            JobState::Bundling,
            JobState::Uploading,
        ];
        for state in unfinished {
            let filter = JobFilter {
                state: Some(state),
                ..JobFilter::default()
            };
            let mut page = Page::first(Page::<JobId>::MAX_LIMIT);
            loop {
                let jobs = self.store.list_jobs(&filter, page).await?;
                for job in &jobs {
                    if job.updated_at > cutoff {
                        continue;
                    }
                    report.checked += 1;
                    match self.repair(job).await? {
                        Repair::Restored => report.restored += 1,
                        Repair::MarkedFailed => report.failed += 1,
                        Repair::Nothing => {}
                    }
                }
                match jobs.last() {
                    Some(last) if jobs.len() == page.limit as usize => page.after = Some(last.id),
                    _ => break,
                }
            }
        }
        if report.restored > 0 {
            tracing::warn!(
                restored = report.restored,
                checked = report.checked,
                "re-enqueued jobs the queue had lost"
            );
        }
        Ok(report)
    }

    /// Brings one unfinished record in line with the queue.
    async fn repair(&self, job: &Job) -> Result<Repair> {
        if let Some(dead) = self.queue.find_dead(job.id).await? {
            let failed = JobUpdate::failed(dead.error_code, dead.error_message);
            return Ok(match self.store.update_job(job.id, failed).await {
                Ok(_) => Repair::MarkedFailed,
                // Finished in the meantime.
                Err(_) => Repair::Nothing,
            });
        }
        if self.queue.contains(job.id).await? {
            return Ok(Repair::Nothing);
        }
        let Ok(queue) = job.queue.parse::<Queue>() else {
            tracing::error!(job_id = %job.id, queue = %job.queue, "an unfinished job names an unknown queue");
            return Ok(Repair::Nothing);
        };
        if job.state != JobState::Queued {
            // It was running when the queue lost it: it starts over.
            let requeued =
                JobUpdate::progress(JobState::Queued, 0.0, "re-queued by the reconciler");
            if self.store.update_job(job.id, requeued).await.is_err() {
                // Finished in the meantime.
                return Ok(Repair::Nothing);
            }
        }
        enqueue_record(&*self.queue, job, queue).await?;
        Ok(Repair::Restored)
    }

    /// Runs a pass every `interval` while holding the cluster-wide reconciler lock, until
    /// `shutdown` fires.
    pub async fn run(
        self,
        locks: Arc<dyn Locks>,
        owner: String,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let lock = ClusterLock {
            locks,
            name: RECONCILER_LOCK,
            owner,
            ttl: interval * 2,
        };
        let mut tick = ClusterLock::ticker(interval);
        while let Some(held) = lock.next(&mut tick, &shutdown).await {
            if held && let Err(err) = self.run_once().await {
                tracing::warn!(error = %err, "reconciliation failed");
            }
        }
        lock.release().await;
    }
}

/// A cluster-wide lock that one process at a time holds to run a periodic task.
struct ClusterLock {
    locks: Arc<dyn Locks>,
    name: &'static str,
    owner: String,
    ttl: Duration,
}

impl ClusterLock {
    fn ticker(interval: Duration) -> tokio::time::Interval {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// Waits for the next tick, then takes (or keeps) the lock: whether this process holds it,
    /// or `None` once `shutdown` fires.
    async fn next(
        &self,
        tick: &mut tokio::time::Interval,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return None,
        }
        match self.locks.acquire(self.name, &self.owner, self.ttl).await {
            Ok(held) => Some(held),
            Err(err) => {
                tracing::warn!(error = %err, lock = self.name, "cannot take the lock");
                Some(false)
            }
        }
    }

    async fn release(&self) {
        let _ = self.locks.release(self.name, &self.owner).await;
    }
}

/// Brings the records of jobs taken back from a gone worker in line with what the queue did with
/// them: `failed` for a dead letter, `cancelled` for a job dropped on its cancellation request,
/// `queued` for one back on its queue. Each write is fenced to the record's attempt, so a delivery
/// that has already started the job again is left alone. Best effort: what this misses, the
/// reconciler repairs.
pub async fn settle_taken_back(store: &dyn Store, queue: &dyn JobQueue, jobs: &[JobId], why: &str) {
    for &id in jobs {
        let Ok(Some(record)) = store.get_job(id).await else {
            continue;
        };
        if record.state.is_terminal() {
            continue;
        }
        let update = match queue.find_dead(id).await {
            Ok(Some(dead)) => JobUpdate::failed(dead.error_code, dead.error_message),
            Ok(None) => match queue.contains(id).await {
                Ok(true) if record.state == JobState::Queued => continue,
                Ok(true) => JobUpdate::progress(JobState::Queued, 0.0, format!("re-queued: {why}")),
                Ok(false) => JobUpdate::cancelled(record.progress, format!("cancelled; {why}")),
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        if let Err(err) = store
            .update_job(id, update.for_attempt(record.attempts))
            .await
        {
            tracing::debug!(job_id = %id, error = %err, "a taken-back job's record moved on");
        }
    }
}

/// The name of the lock that keeps one sweeper running at a time across the cluster.
pub const SWEEPER_LOCK: &str = "gone-worker-sweeper";

/// Gives back the jobs of workers whose heartbeats stopped: at once and at the front of their
/// queues, instead of after their leases run out behind the backlog.
///
/// Silence is measured on the sweeper's own clock — how long it has seen the same last heartbeat
/// — never by comparing a worker's timestamp with it: clocks that disagree, or an outage of the
/// registry itself (no one could report, no one could look), must not make live workers look dead.
/// After such an outage, or when this process did not hold the sweeper lock, it starts watching
/// afresh.
pub struct GoneWorkerSweeper {
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    registry: Arc<dyn WorkerRegistry>,
    clock: SharedClock,
    sightings: Mutex<HashMap<String, Sighting>>,
}

/// The last heartbeat the sweeper saw of one worker, and since when it has seen it.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    heartbeat_at: DateTime<Utc>,
    since: DateTime<Utc>,
    /// Its jobs were taken back for this silence.
    swept: bool,
}

impl std::fmt::Debug for GoneWorkerSweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoneWorkerSweeper").finish_non_exhaustive()
    }
}

impl GoneWorkerSweeper {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        registry: Arc<dyn WorkerRegistry>,
        clock: SharedClock,
    ) -> Self {
        GoneWorkerSweeper {
            store,
            queue,
            registry,
            clock,
            sightings: Mutex::default(),
        }
    }

    /// Forgets what it saw: silence it did not watch is not counted.
    fn forget(&self) {
        self.sightings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// One look at the registry; returns the jobs taken back.
    pub async fn run_once(&self) -> Result<Vec<JobId>> {
        let workers = match self.registry.list().await {
            Ok(workers) => workers,
            Err(err) => {
                self.forget();
                return Err(err);
            }
        };
        let now = self.clock.now();
        let silent: Vec<_> = {
            let mut sightings = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
            sightings.retain(|id, _| workers.iter().any(|w| &w.id == id));
            let mut silent = Vec::new();
            for worker in &workers {
                let fresh = Sighting {
                    heartbeat_at: worker.heartbeat_at,
                    since: now,
                    swept: false,
                };
                let seen = sightings.entry(worker.id.clone()).or_insert(fresh);
                if seen.heartbeat_at != worker.heartbeat_at {
                    *seen = fresh;
                }
                let watched = now.signed_duration_since(seen.since).to_std();
                if !seen.swept && watched.is_ok_and(|silence| silence > worker.gone_after()) {
                    silent.push((worker.id.clone(), worker.heartbeat_at));
                }
            }
            silent
        };
        if silent.is_empty() {
            return Ok(Vec::new());
        }
        // Looked at again just before acting: a worker restarted under the same id since the
        // first look has reported by now, and keeps its jobs.
        let current = match self.registry.list().await {
            Ok(current) => current,
            Err(err) => {
                self.forget();
                return Err(err);
            }
        };
        let mut taken = Vec::new();
        for (worker, heartbeat_at) in silent {
            let still_silent = current
                .iter()
                .any(|w| w.id == worker && w.heartbeat_at == heartbeat_at);
            if !still_silent {
                continue;
            }
            let jobs = self.queue.reclaim_worker(&worker).await?;
            if let Some(seen) = self
                .sightings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&worker)
            {
                seen.swept = true;
            }
            if !jobs.is_empty() {
                tracing::warn!(worker = %worker, jobs = jobs.len(), last_heartbeat = %heartbeat_at,
                    "a worker stopped sending heartbeats; took back its jobs");
                taken.push((worker, jobs));
            }
        }
        for (worker, jobs) in &taken {
            let why = format!("its worker {worker} stopped responding");
            settle_taken_back(&*self.store, &*self.queue, jobs, &why).await;
        }
        Ok(taken.into_iter().flat_map(|(_, jobs)| jobs).collect())
    }

    /// Looks every `interval` while holding the cluster-wide sweeper lock, until `shutdown`.
    pub async fn run(
        self,
        locks: Arc<dyn Locks>,
        owner: String,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let lock = ClusterLock {
            locks,
            name: SWEEPER_LOCK,
            owner,
            ttl: interval * 3,
        };
        let mut tick = ClusterLock::ticker(interval);
        while let Some(held) = lock.next(&mut tick, &shutdown).await {
            if !held {
                // Silence this process did not watch is not counted.
                self.forget();
            } else if let Err(err) = self.run_once().await {
                tracing::warn!(error = %err, "cannot look for gone workers");
            }
        }
        lock.release().await;
    }
}
