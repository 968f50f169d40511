//! The ports: object-safe traits that the rest of HiveSync programs against, each held as
//! `Arc<dyn Port>` and implemented by adapters chosen from configuration.
//!
//! Every port documents its contract in a `# Behavior` list; `crate::testkit` holds one
//! conformance suite per port that runs that list against every adapter.

pub mod ai;
pub mod coordination;
pub mod object_store;
pub mod queue;
pub mod rate_limit;
pub mod scaler;
pub mod store;

pub use ai::{
    AiAnswer, AiInput, AiProvider, AiReply, AiTask, CommentSuggestion, FileSummary, Language,
    LineCounts, RenameReason, RenameSuggestion, Symbol,
};
pub use coordination::{
    GONE_AFTER_AT_LEAST, GONE_AFTER_MISSED_HEARTBEATS, Locks, UNRESPONSIVE_AFTER, WorkerRegistry,
    WorkerRole, WorkerStatus,
};
pub use object_store::{
    ByteStream, Capabilities, GetResult, ObjectKey, ObjectMeta, ObjectStore, ObjectStoreExt,
    bytes_stream,
};
pub use queue::{
    CancelOutcome, DeadLetter, Delivery, Enqueued, FailOutcome, Failure, JobQueue, LeaseRef,
    LeaseStatus, NewQueuedJob, Queue, QueuePolicy, QueueStats, ReleaseOutcome,
};
pub use rate_limit::{Quota, RateDecision, RateLimiter};
pub use scaler::Scaler;
pub use store::Store;
