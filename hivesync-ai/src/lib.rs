//! AI documentation for HiveSync: file summaries, doc comments and rename suggestions, from a
//! chain of providers (a local model, an OpenAI-compatible endpoint, the offline static
//! analyser), with secrets redacted before any provider sees a file and every answer placed as
//! edits against the exact blob it was computed on.
//!
//! - [`providers`]: the `AiProvider` adapters;
//! - [`pipeline`]: the chain, redaction and placement, and the result ([`pipeline::AiOutcome`]);
//! - [`edits`]: how suggestions become edits and a unified diff;
//! - [`job`]: the `ai` job and its worker handler.

#[cfg(feature = "client")]
pub mod client;
pub mod edits;
pub mod job;
pub mod names;
pub mod parse;
pub mod pipeline;
pub mod providers;
pub mod redact;
pub mod request;

pub use job::{AI_JOB_KIND, AiHandler, AiRequest, AiSource, GPU_AI_JOB_KIND, GpuAiRequest};
pub use pipeline::{AiOutcome, Attempt, Chain, Outcome};
pub use request::{AiOrder, AiRequests, Taken};
