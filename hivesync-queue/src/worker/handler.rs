//! What a job handler sees and returns.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use hivesync_core::domain::{Job, JobState, JobUpdate};
use hivesync_core::ports::{Delivery, Queue, Store};
use hivesync_core::{ApiErrorCode, Result};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::jobs::{JobKind, decode, encode};

/// Why a running job is being asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Someone cancelled the job.
    Cancelled,
    /// The lease went to another worker (this one was too slow to renew, or the queue lost it).
    LeaseLost,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
}

/// Everything a handler needs for one delivery of one job.
pub struct JobContext {
    /// The job's record as this delivery started it: `attempts` counts this attempt, `state` is
    /// the handler's start state. (The record itself may say so a moment later: see
    /// `worker/start.rs`.)
    pub job: Job,
    pub delivery: Delivery,
    /// Fires when the handler should stop; see [`JobContext::stop_reason`].
    pub stop: CancellationToken,
    pub(crate) reason: Arc<std::sync::Mutex<Option<StopReason>>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) start: Arc<super::start::RecordStart>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job.id)
            .field("kind", &self.job.kind)
            .field("attempt", &self.delivery.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// Records progress in the job's record (0.0 to 1.0, with a phase name). Fenced to this
    /// delivery's attempt: once another worker has taken the job over, this fails with `Conflict`.
    /// The first report also writes the delivery's start, if it is not written yet.
    pub async fn progress(&self, state: JobState, progress: f64, phase: &str) -> Result<()> {
        let attempts = self.start.ensure().await?;
        let update = JobUpdate::progress(state, progress, phase).for_attempt(attempts);
        self.store.update_job(self.job.id, update).await.map(|_| ())
    }

    /// Why the handler is asked to stop, once it is.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Another attempt may succeed (a backend was down, a timeout).
    Retryable { code: String, message: String },
    /// Another attempt would fail the same way (invalid input, a broken project).
    Permanent { code: String, message: String },
    /// The handler stopped because it was asked to (see [`JobContext::stop_reason`]).
    Stopped,
}

impl JobError {
    pub fn retryable(code: ApiErrorCode, message: impl Into<String>) -> Self {
        JobError::Retryable {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    pub fn permanent(code: ApiErrorCode, message: impl Into<String>) -> Self {
        JobError::Permanent {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }
}

impl From<hivesync_core::Error> for JobError {
    fn from(err: hivesync_core::Error) -> Self {
        let code = err.code().as_str().to_owned();
        let message = err.to_string();
        if err.is_retryable() {
            JobError::Retryable { code, message }
        } else {
            JobError::Permanent { code, message }
        }
    }
}

/// An untyped handler's answer: an optional result stored with the job, or an error.
pub type JobResult = std::result::Result<Option<serde_json::Value>, JobError>;

/// Runs jobs of kind `J`: the worker hands it the decoded payload, and stores what it returns as
/// the job's result. A payload that does not decode fails the job permanently
/// (`VALIDATION_ERROR`) without calling the handler: another attempt would read the same bytes.
#[async_trait]
pub trait TypedHandler<J: JobKind>: Send + Sync + 'static {
    /// The state the job enters when a delivery starts (`building` for previews).
    fn start_state(&self) -> JobState {
        JobState::Running
    }

    /// Runs the job. Long handlers should watch `ctx.stop` and return [`JobError::Stopped`]
    /// promptly when it fires.
    async fn handle(&self, job: J, ctx: &JobContext) -> std::result::Result<J::Output, JobError>;
}

/// A [`TypedHandler`] seen as an untyped one: decodes once, encodes once.
struct Typed<J, H> {
    handler: H,
    kind: PhantomData<fn() -> J>,
}

#[async_trait]
impl<J: JobKind, H: TypedHandler<J>> JobHandler for Typed<J, H> {
    fn start_state(&self) -> JobState {
        self.handler.start_state()
    }

    async fn handle(&self, ctx: &JobContext) -> JobResult {
        let job: J = decode(J::KIND, "payload", &ctx.job.payload)
            .map_err(|err| JobError::permanent(ApiErrorCode::ValidationError, err.message()))?;
        let output = self.handler.handle(job, ctx).await?;
        encode(J::KIND, "result", &output)
            .map(Some)
            .map_err(JobError::from)
    }
}

/// Runs jobs of one kind, with the payload and result as stored JSON: the layer under
/// [`TypedHandler`], for tools and tests that exercise the queue itself.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The state the job enters when a delivery starts (`building` for previews).
    fn start_state(&self) -> JobState {
        JobState::Running
    }

    /// Runs the job. Long handlers should watch `ctx.stop` and return [`JobError::Stopped`]
    /// promptly when it fires.
    async fn handle(&self, ctx: &JobContext) -> JobResult;
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<String, Arc<dyn JobHandler>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self.by_kind.keys().collect();
        kinds.sort();
        f.debug_struct("Handlers").field("kinds", &kinds).finish()
    }
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for jobs of kind `J`, replacing any earlier one.
    pub fn on<J: JobKind>(self, handler: impl TypedHandler<J>) -> Self {
        self.register(
            J::KIND,
            Typed {
                handler,
                kind: PhantomData,
            },
        )
    }

    /// Registers an untyped `handler` for jobs of `kind`, replacing any earlier one.
    pub fn register(mut self, kind: &str, handler: impl JobHandler) -> Self {
        self.by_kind.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.by_kind.get(kind).cloned()
    }
}

/// A `ping` job on `system_events`: the smoke test of the whole path (`hivesync queue ping`).
/// With `hold_ms` the handler holds the job that long first (at most ten minutes, and it stops
/// when asked), so operators can watch a job run: in the admin views, across a worker restart, at
/// shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub hold_ms: u64,
}

/// A ping's answer: which worker took it, on which attempt, and how long it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub pong: bool,
    pub worker: String,
    pub attempt: u32,
    #[serde(default)]
    pub held_ms: u64,
}

impl JobKind for Ping {
    const KIND: &'static str = "ping";
    const QUEUE: Queue = Queue::SystemEvents;
    type Output = Pong;
}

/// Answers [`Ping`] jobs; its result says which worker answered.
#[derive(Debug, Clone)]
pub struct PingHandler {
    pub worker_id: String,
}

/// The longest hold a ping may ask for.
const MAX_PING_HOLD: std::time::Duration = std::time::Duration::from_secs(600);

#[async_trait]
impl TypedHandler<Ping> for PingHandler {
    async fn handle(&self, ping: Ping, ctx: &JobContext) -> std::result::Result<Pong, JobError> {
        let hold = std::time::Duration::from_millis(ping.hold_ms).min(MAX_PING_HOLD);
        if !hold.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(hold) => {}
                () = ctx.stop.cancelled() => return Err(JobError::Stopped),
            }
        }
        Ok(Pong {
            pong: true,
            worker: self.worker_id.clone(),
            attempt: ctx.delivery.attempt,
            held_ms: hold.as_millis() as u64,
        })
    }
}
