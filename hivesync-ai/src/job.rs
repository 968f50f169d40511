//! The `ai` job: its payload ([`AiRequest`]), its result ([`AiOutcome`]) and the handler that
//! runs the chain on a worker.
//!
//! Records outlive code: fields added later get `#[serde(default)]`.

use std::sync::Arc;

use async_trait::async_trait;
use hivesync_core::domain::{Job, ProjectId};
use hivesync_core::ports::{AiTask, Language, Queue};
use hivesync_core::repo::Repos;
use hivesync_core::{ApiErrorCode, Error};
use hivesync_queue::jobs::{JobKind, JobRecord};
use hivesync_queue::worker::{JobContext, JobError, TypedHandler};
use serde::{Deserialize, Serialize};

use crate::pipeline::{AiOutcome, Chain};

/// The job kind of AI tasks, on the `ai_jobs` queue.
pub const AI_JOB_KIND: &str = "ai";
/// The job kind of AI tasks for the local model on a GPU, on the `gpu_ai_jobs` queue.
pub const GPU_AI_JOB_KIND: &str = "ai_gpu";

/// Whether jobs of `kind` are AI tasks (either queue).
pub fn is_ai_kind(kind: &str) -> bool {
    kind == AI_JOB_KIND || kind == GPU_AI_JOB_KIND
}

/// An AI job's request and, once it succeeded, its result, whichever queue it went to.
pub fn read_ai_job(job: &Job) -> hivesync_core::Result<(AiRequest, Option<AiOutcome>)> {
    if job.kind == GPU_AI_JOB_KIND {
        let GpuAiRequest(request) = job.payload_as::<GpuAiRequest>()?;
        Ok((request, job.output_as::<GpuAiRequest>()?))
    } else {
        Ok((
            job.payload_as::<AiRequest>()?,
            job.output_as::<AiRequest>()?,
        ))
    }
}

/// Where the file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AiSource {
    /// The project's repository at `commit` (resolved when the request was taken).
    Repository { commit: String },
    /// Sent with the request (an unsaved editor buffer).
    Inline { content: String },
}

/// An AI task on one file: the job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiRequest {
    pub task: AiTask,
    pub project_id: ProjectId,
    pub path: String,
    pub language: Language,
    pub source: AiSource,
    /// The blob the request was taken for (the result is computed on exactly this content).
    pub blob_id: String,
    /// The result-cache key ([`Chain::cache_key`]).
    pub cache_key: String,
    /// For the local model on a GPU worker ([`Chain::routes_to_gpu`]): submitted as a
    /// [`GpuAiRequest`].
    #[serde(default)]
    pub gpu: bool,
}

impl JobKind for AiRequest {
    const KIND: &'static str = AI_JOB_KIND;
    const QUEUE: Queue = Queue::AiJobs;
    type Output = AiOutcome;
}

/// The same task tagged for the local model on a GPU: only GPU workers consume its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuAiRequest(pub AiRequest);

impl JobKind for GpuAiRequest {
    const KIND: &'static str = GPU_AI_JOB_KIND;
    const QUEUE: Queue = Queue::GpuAiJobs;
    type Output = AiOutcome;
}

/// Runs `ai` jobs (and `ai_gpu` jobs) through a chain.
#[derive(Clone)]
pub struct AiHandler {
    pub chain: Chain,
    pub repos: Arc<Repos>,
    /// The worker's id, recorded in each result.
    pub worker: String,
}

impl std::fmt::Debug for AiHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiHandler")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl AiHandler {
    /// The file's text, checked against the blob the request was taken for.
    async fn content(&self, request: &AiRequest) -> Result<String, JobError> {
        let bytes = match &request.source {
            AiSource::Inline { content } => content.clone().into_bytes(),
            AiSource::Repository { commit } => {
                let repos = self.repos.clone();
                let (project, commit, path) =
                    (request.project_id, commit.clone(), request.path.clone());
                tokio::task::spawn_blocking(move || repos.read_file(project, &commit, &path))
                    .await
                    .map_err(|err| {
                        JobError::from(Error::internal("reading a file failed").with_source(err))
                    })??
                    .bytes
            }
        };
        let id = hivesync_core::repo::blob_id(&bytes)?;
        if id != request.blob_id {
            return Err(JobError::permanent(
                ApiErrorCode::ValidationError,
                format!(
                    "the file is blob {id}, not the {} asked about",
                    request.blob_id
                ),
            ));
        }
        String::from_utf8(bytes).map_err(|_| {
            JobError::permanent(ApiErrorCode::ValidationError, "the file is not UTF-8 text")
        })
    }
}

#[async_trait]
impl TypedHandler<GpuAiRequest> for AiHandler {
    async fn handle(&self, request: GpuAiRequest, ctx: &JobContext) -> Result<AiOutcome, JobError> {
        // Answered without the model it was routed for, the job would be cached as if it had
        // been: give it back for a GPU worker instead.
        if !self.chain.is_gpu_workers() {
            return Err(JobError::retryable(
                ApiErrorCode::AiProviderUnavailable,
                "an ai_gpu job reached a worker without the local model on a GPU: only `hivesync worker --role gpu` may consume gpu_ai_jobs",
            ));
        }
        TypedHandler::<AiRequest>::handle(self, request.0, ctx).await
    }
}

#[async_trait]
impl TypedHandler<AiRequest> for AiHandler {
    async fn handle(&self, request: AiRequest, ctx: &JobContext) -> Result<AiOutcome, JobError> {
        let content = self.content(&request).await?;
        let run = self
            .chain
            .run(request.task, request.language, &request.path, &content);
        let outcome = tokio::select! {
            outcome = run => outcome,
            () = ctx.stop.cancelled() => return Err(JobError::Stopped),
        };
        let labels = |outcome: &'static str, provider: String| {
            [
                ("task", request.task.as_str().to_owned()),
                ("provider", provider),
                ("outcome", outcome.to_owned()),
            ]
        };
        match outcome {
            Ok(mut outcome) => {
                outcome.worker = Some(self.worker.clone());
                metrics::counter!(
                    "ai_jobs_total",
                    &labels("success", outcome.provider.clone())
                )
                .increment(1);
                Ok(outcome)
            }
            Err(err) => {
                metrics::counter!("ai_jobs_total", &labels("failed", "none".to_owned()))
                    .increment(1);
                Err(if err.kind() == hivesync_core::ErrorKind::Unavailable {
                    JobError::retryable(ApiErrorCode::AiProviderUnavailable, err.message())
                } else {
                    JobError::from(err)
                })
            }
        }
    }
}
