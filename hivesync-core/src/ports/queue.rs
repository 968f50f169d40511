//! The `JobQueue` port: durable, leased, retried delivery of jobs to workers.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, truncate_for_display};
use crate::error::{Error, Result};

/// The queues. Each is isolated: its own ready list, delayed set, leases and dead letters, so a
/// flood on one never delays another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    /// File summaries, inline comments, rename suggestions.
    AiJobs,
    /// AI jobs that need a local model on a GPU.
    GpuAiJobs,
    /// Preview bundle builds.
    PreviewBuild,
    /// Cleanup of `DATA_DIR` and the object store.
    Cleanup,
    /// Operational events, such as `hivesync queue ping`.
    SystemEvents,
}

impl Queue {
    pub const ALL: [Queue; 5] = [
        Queue::AiJobs,
        Queue::GpuAiJobs,
        Queue::PreviewBuild,
        Queue::Cleanup,
        Queue::SystemEvents,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::AiJobs => "ai_jobs",
            Queue::GpuAiJobs => "gpu_ai_jobs",
            Queue::PreviewBuild => "preview_build",
            Queue::Cleanup => "cleanup",
            Queue::SystemEvents => "system_events",
        }
    }

    /// The retry and lease policy of this queue.
    pub fn policy(self) -> QueuePolicy {
        let base = QueuePolicy {
            max_attempts: 3,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(60),
        };
        match self {
            // A build is deterministic: a second try covers a crashed worker, a third rarely
            // helps and costs minutes.
            Queue::PreviewBuild => QueuePolicy {
                max_attempts: 2,
                lease: Duration::from_secs(120),
                ..base
            },
            Queue::Cleanup => QueuePolicy {
                max_attempts: 5,
                ..base
            },
            Queue::AiJobs | Queue::GpuAiJobs | Queue::SystemEvents => base,
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Queue {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Queue::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| {
                Error::validation(
                "queue must be one of ai_jobs, gpu_ai_jobs, preview_build, cleanup, system_events",
            )
            .with_context("value", truncate_for_display(s))
            })
    }
}

/// How a queue retries and leases its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Deliveries before a failing job goes to the dead letters.
    pub max_attempts: u32,
    /// The first retry waits about this long; each further retry doubles it.
    pub backoff_base: Duration,
    /// No retry waits longer than this.
    pub backoff_max: Duration,
    /// How long a delivery is leased to a worker before it renews it.
    pub lease: Duration,
}

impl QueuePolicy {
    /// The wait before the retry that follows failed attempt `attempt` (1-based): exponential,
    /// capped at `backoff_max`, with "equal jitter" — a random point in the upper half — so that
    /// jobs that failed together do not retry together. Below the cap each retry waits at least
    /// as long as the previous one could have; at the cap the waits spread over its upper half.
    pub fn backoff(&self, attempt: u32, unit_random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let full = self
            .backoff_base
            .saturating_mul(1u32 << exponent)
            .min(self.backoff_max);
        full.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
    }
}

/// A job to put on a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQueuedJob {
    /// The id of the job's record in the `Store`.
    pub job_id: JobId,
    pub queue: Queue,
    pub kind: String,
    pub payload: serde_json::Value,
    /// Not delivered before this much time has passed.
    pub delay: Option<Duration>,
    /// While a job with the same key is waiting or running on this queue, enqueueing returns
    /// that job instead of adding another.
    pub dedup_key: Option<String>,
    /// Overrides the queue's `max_attempts`.
    pub max_attempts: Option<u32>,
}

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was added.
    Added(JobId),
    /// A job with the same dedup key is already waiting or running: this is its id.
    Duplicate(JobId),
}

impl Enqueued {
    /// The id of the job that will run.
    pub fn job_id(self) -> JobId {
        match self {
            Enqueued::Added(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// Identifies one delivery of a job: the lease a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub job_id: JobId,
    pub queue: Queue,
    /// Random per delivery: a worker whose lease expired and was re-delivered can no longer act
    /// on the job.
    pub token: String,
}

/// A job handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub lease: LeaseRef,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This delivery's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub enqueued_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
}

impl Delivery {
    pub fn job_id(&self) -> JobId {
        self.lease.job_id
    }

    /// Whether a failure of this delivery would be the last.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// The state of a lease, as `renew` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still this worker's; extended.
    Held,
    /// Cancellation was requested: stop, then `complete` the delivery.
    CancelRequested,
    /// No longer this worker's (expired and re-delivered, or the job is gone): stop without
    /// touching the job.
    Lost,
}

/// How a delivery failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Whether another attempt could succeed.
    pub retryable: bool,
    /// A standard error code, for the dead letter.
    pub code: String,
    pub message: String,
    /// When retrying: how long to wait first (see [`QueuePolicy::backoff`]).
    pub retry_after: Duration,
}

/// What `fail` did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will be delivered again at this time.
    Retrying { at: DateTime<Utc> },
    /// It is out of attempts (or not retryable) and went to the dead letters.
    DeadLettered,
    /// The lease was no longer this worker's; nothing changed.
    LeaseLost,
}

/// What `release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The job is back at the front of its queue.
    Released,
    /// Its cancellation had been requested: it is gone instead.
    Dropped,
    /// The lease was no longer this worker's; nothing changed.
    LeaseLost,
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting (or dead) and is gone.
    Removed,
    /// The job is running: its worker is told at its next renewal.
    Requested,
    /// The queue does not have the job.
    NotFound,
}

/// A job that ran out of attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub job_id: JobId,
    pub queue: Queue,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub error_code: String,
    pub error_message: String,
    pub died_at: DateTime<Utc>,
}

/// Counts of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueStats {
    /// Due and waiting for a worker.
    pub ready: u64,
    /// Waiting for their time (delayed jobs and retries).
    pub delayed: u64,
    /// Leased to a worker.
    pub running: u64,
    pub dead: u64,
    /// How long the oldest ready job has waited, in milliseconds.
    pub oldest_ready_ms: Option<u64>,
}

impl QueueStats {
    /// Jobs that still have to run: ready and delayed.
    pub fn depth(&self) -> u64 {
        self.ready + self.delayed
    }
}

/// Durable job delivery to workers.
///
/// Adapters: Redis (production; atomic steps as Lua scripts) and SQL (the embedded default on
/// SQLite; PostgreSQL with `FOR UPDATE SKIP LOCKED`). Both read time from a `Clock`. The
/// conformance suite in `testkit::queue` checks every point below against each adapter.
///
/// # Behavior
///
/// - Delivery is at least once. `reserve` hands the oldest due job of a queue to one worker under
///   a lease; while the worker renews the lease, no other worker gets the job. A lease that
///   expires (a dead worker) makes the job deliverable again, counting as an attempt.
/// - Each delivery carries a fresh lease token; `renew`, `complete`, `fail` and `release` with a
///   stale token change nothing (`Lost` / `false` / `LeaseLost`).
/// - `fail` with `retryable` and attempts left schedules the job again after `retry_after`;
///   otherwise it goes to the dead letters, which can be listed, retried (with fresh attempts) and
///   purged. A lease that expires on the last attempt also dead-letters the job.
/// - `release` gives a job back at the front of its queue without counting the attempt (a worker
///   shutting down) — or drops it, when its cancellation was requested.
/// - A job taken back from a worker that is gone — its lease expired, or `reclaim_worker` named
///   the worker — is handled as a failed attempt would be without a retry wait: back at the front
///   of its queue (ahead of jobs enqueued after it), dead on its last attempt, dropped when its
///   cancellation was requested. `reclaim_worker` does it at once for every lease of that worker
///   and no other, and returns the jobs' ids; the old lease tokens are stale afterwards.
/// - A delayed job is not delivered before its time.
/// - A dedup key is held while its job waits, is delayed or runs; enqueueing the same key then
///   returns the existing job's id. Completion, dead-lettering and cancellation free it.
/// - `cancel` removes a waiting, delayed or dead job at once; for a running one it makes the
///   worker's next `renew` answer `CancelRequested`; a lease expiring on, a `release` of, or a
///   retryable `fail` of a job whose cancellation was requested ends it (dropped, or dead for a
///   failure) instead of delivering it again. `retry_dead` clears a cancellation request.
/// - Queues are independent; jobs of one queue are only ever delivered from that queue.
/// - `contains` says whether the queue still has the job (waiting, delayed, running or dead).
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// A short name for logs and health output (`redis`, `sql`).
    fn name(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;
    async fn enqueue(&self, job: NewQueuedJob) -> Result<Enqueued>;
    /// The oldest due job of `queue`, leased to `worker` for `lease`.
    async fn reserve(
        &self,
        queue: Queue,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Delivery>>;
    async fn renew(&self, lease: &LeaseRef, duration: Duration) -> Result<LeaseStatus>;
    /// Removes a delivered job for good (done, or cancelled at the worker's end).
    async fn complete(&self, lease: &LeaseRef) -> Result<bool>;
    /// `complete`, then `reserve` the next job of `next`: what a worker does after a success.
    /// Backends that can do both in one round trip override this.
    async fn complete_and_reserve(
        &self,
        lease: &LeaseRef,
        next: Queue,
        worker: &str,
        lease_for: Duration,
    ) -> Result<(bool, Option<Delivery>)> {
        let completed = self.complete(lease).await?;
        Ok((completed, self.reserve(next, worker, lease_for).await?))
    }
    async fn fail(&self, lease: &LeaseRef, failure: Failure) -> Result<FailOutcome>;
    async fn release(&self, lease: &LeaseRef) -> Result<ReleaseOutcome>;
    /// Takes back at once every job leased to `worker`, which is known to be gone (it restarted
    /// under the same id, or its heartbeats stopped); returns their ids.
    async fn reclaim_worker(&self, worker: &str) -> Result<Vec<JobId>>;
    async fn cancel(&self, job: JobId) -> Result<CancelOutcome>;
    async fn contains(&self, job: JobId) -> Result<bool>;
    async fn stats(&self, queue: Queue) -> Result<QueueStats>;
    /// Dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: Queue, limit: u32) -> Result<Vec<DeadLetter>>;
    /// The dead letter of `job`, if the job is dead.
    async fn find_dead(&self, job: JobId) -> Result<Option<DeadLetter>>;
    /// Puts a dead job back on its queue with fresh attempts; `false` if it is not dead.
    async fn retry_dead(&self, job: JobId) -> Result<bool>;
    /// Deletes dead letters of `queue` (all of them, or one); returns how many.
    async fn purge_dead(&self, queue: Queue, job: Option<JobId>) -> Result<u64>;
    /// Returns when a job may have become available on one of `queues`, or after `timeout`.
    /// Workers call it between empty `reserve`s instead of spinning.
    async fn wait_for_work(&self, queues: &[Queue], timeout: Duration) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_round_trip() {
        for queue in Queue::ALL {
            assert_eq!(queue.as_str().parse::<Queue>().unwrap(), queue);
        }
        assert!("nope".parse::<Queue>().is_err());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_upwards() {
        let policy = Queue::AiJobs.policy();
        let lowest = |attempt| policy.backoff(attempt, 0.0);
        let highest = |attempt| policy.backoff(attempt, 1.0);
        assert_eq!(highest(1), Duration::from_secs(2));
        assert_eq!(lowest(1), Duration::from_secs(1));
        for attempt in 1..12 {
            let next_capped = highest(attempt + 1) == policy.backoff_max;
            assert!(
                highest(attempt) <= lowest(attempt + 1) || next_capped,
                "attempt {attempt}: below the cap, retries never get shorter"
            );
            assert!(highest(attempt) <= policy.backoff_max);
        }
        assert_eq!(highest(50), policy.backoff_max);
        assert_eq!(
            lowest(50),
            policy.backoff_max / 2,
            "at the cap, waits still spread"
        );
    }
}
