//! The `Scaler` port: how the autoscaler's decisions become more or fewer workers.

use async_trait::async_trait;

use crate::error::Result;
use crate::ports::WorkerRole;

/// Carries out a worker count chosen by the autoscaler.
///
/// Adapters (in `hivesync-queue`): none (logs the decision), command (runs a configured command
/// with `{n}` and `{role}` filled in, e.g. `kubectl scale deployment/hivesync-worker
/// --replicas={n}`), local processes (starts and stops `hivesync worker` processes here).
///
/// # Behavior
///
/// - `scale_to(role, n)` makes `n` workers of `role` the target; calling it again with the same
///   `n` changes nothing.
/// - The autoscaler never calls it for [`WorkerRole::Cleanup`], and never outside its bounds.
#[async_trait]
pub trait Scaler: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn scale_to(&self, role: WorkerRole, workers: u32) -> Result<()>;
    /// Called at every autoscaler poll with the unchanged target: adapters that run the workers
    /// themselves replace ones that died; the others do nothing (their platform restarts them).
    async fn maintain(&self, role: WorkerRole, workers: u32) -> Result<()> {
        let _ = (role, workers);
        Ok(())
    }
}
