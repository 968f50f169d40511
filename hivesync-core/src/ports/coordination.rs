//! Ports that let workers on many machines see each other: the `WorkerRegistry` (heartbeats) and
//! `Locks` (one holder per name at a time, with expiry).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, truncate_for_display};
use crate::error::{Error, Result};
use crate::ports::Queue;

/// A worker silent for longer than this is reported unresponsive (spec §10.4).
pub const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(120);
/// Heartbeats a worker may miss in a row before it is taken to be gone and its jobs are given
/// back (long before [`UNRESPONSIVE_AFTER`] flags it to operators, and before its leases run out).
pub const GONE_AFTER_MISSED_HEARTBEATS: u32 = 3;
/// The shortest silence taken as gone, whatever the heartbeat interval: a busy machine can delay
/// a heartbeat by a moment without anyone losing their job.
pub const GONE_AFTER_AT_LEAST: Duration = Duration::from_secs(3);
/// The interval assumed for a worker that did not report one (written by an older version).
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// What a worker is for (spec §10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerRole {
    /// Preview builds, AI jobs without a GPU, system events.
    Cpu,
    /// Local model inference; always one job at a time.
    Gpu,
    /// The cleanup queue; exactly one is active across the cluster.
    Cleanup,
}

impl WorkerRole {
    pub const ALL: [WorkerRole; 3] = [WorkerRole::Cpu, WorkerRole::Gpu, WorkerRole::Cleanup];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerRole::Cpu => "cpu",
            WorkerRole::Gpu => "gpu",
            WorkerRole::Cleanup => "cleanup",
        }
    }

    /// The queues a worker of this role consumes unless told otherwise.
    pub fn default_queues(self) -> Vec<Queue> {
        match self {
            WorkerRole::Cpu => vec![Queue::PreviewBuild, Queue::AiJobs, Queue::SystemEvents],
            WorkerRole::Gpu => vec![Queue::GpuAiJobs],
            WorkerRole::Cleanup => vec![Queue::Cleanup],
        }
    }
}

impl fmt::Display for WorkerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerRole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        WorkerRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::validation("worker role must be cpu, gpu or cleanup")
                    .with_context("value", truncate_for_display(s))
            })
    }
}

/// What a worker reports about itself at every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub role: WorkerRole,
    pub queues: Vec<Queue>,
    pub hostname: String,
    pub pid: u32,
    pub version: String,
    pub concurrency: u32,
    pub active_jobs: Vec<JobId>,
    /// Set once the worker has stopped taking jobs (shutting down).
    pub draining: bool,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// How often this worker promised to report, in milliseconds (0: not said).
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
}

impl WorkerStatus {
    /// Whether the worker has been heard from within [`UNRESPONSIVE_AFTER`] of `now`.
    pub fn is_responsive(&self, now: DateTime<Utc>) -> bool {
        now.signed_duration_since(self.heartbeat_at)
            .to_std()
            .map_or(true, |silence| silence <= UNRESPONSIVE_AFTER)
    }

    /// How long the worker may stay silent before it is taken to be dead and the jobs it leased
    /// are given back: [`GONE_AFTER_MISSED_HEARTBEATS`] of its heartbeat intervals, and at least
    /// [`GONE_AFTER_AT_LEAST`]. The silence is timed by whoever watches (on its own clock, from
    /// when it first saw this heartbeat), never by comparing clocks. A worker that comes back
    /// finds its leases lost and stops.
    pub fn gone_after(&self) -> Duration {
        let interval = match self.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT_INTERVAL,
            ms => Duration::from_millis(ms),
        };
        (interval * GONE_AFTER_MISSED_HEARTBEATS).max(GONE_AFTER_AT_LEAST)
    }
}

/// Where workers publish heartbeats and where operators read them.
///
/// Adapters: Redis (`worker:{id}:heartbeat`, `worker:{id}:type` as the spec names them, plus
/// `worker:{id}:info`) and SQL (a `workers` table).
///
/// # Behavior
///
/// - `heartbeat` creates or replaces the worker's entry; `list` returns every worker heard from in
///   the last day, sorted by id, with the last reported status.
/// - `deregister` removes the entry (a worker that shut down cleanly); unknown ids are fine.
#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    async fn heartbeat(&self, status: &WorkerStatus) -> Result<()>;
    async fn deregister(&self, worker_id: &str) -> Result<()>;
    async fn list(&self) -> Result<Vec<WorkerStatus>>;
}

/// Named locks with expiry, for "exactly one of these across the cluster" (the cleanup worker,
/// the reconciler).
///
/// # Behavior
///
/// - `acquire` succeeds when the lock is free, expired, or already held by the same owner (which
///   extends it to `ttl` from now); it fails while another owner holds it.
/// - `release` frees the lock only for its holder and says whether it did.
/// - `holder` names the current, unexpired holder.
#[async_trait]
pub trait Locks: Send + Sync + 'static {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool>;
    async fn release(&self, name: &str, owner: &str) -> Result<bool>;
    async fn holder(&self, name: &str) -> Result<Option<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporting_every(interval_ms: u64) -> WorkerStatus {
        let at = Utc::now();
        WorkerStatus {
            id: "w".to_owned(),
            role: WorkerRole::Cpu,
            queues: vec![],
            hostname: "h".to_owned(),
            pid: 1,
            version: "0".to_owned(),
            concurrency: 1,
            active_jobs: vec![],
            draining: false,
            started_at: at,
            heartbeat_at: at,
            heartbeat_interval_ms: interval_ms,
        }
    }

    #[test]
    fn gone_takes_three_missed_heartbeats_and_never_less_than_the_floor() {
        let after = |ms| reporting_every(ms).gone_after();
        assert_eq!(after(200), Duration::from_secs(3), "the floor holds");
        assert_eq!(after(5_000), Duration::from_secs(15));
        assert_eq!(
            after(0),
            Duration::from_secs(30),
            "an older worker: 10 s assumed"
        );
    }
}
