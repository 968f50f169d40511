//! Taking an AI request: checking the file, the result cache, and the `ai` submission.
//!
//! A request is keyed by everything that decides its answer: the project, the task, the
//! language, the path (providers see it), the blob, and the chain's providers and models
//! ([`Chain::cache_key`]). An identical earlier result answers at once (a new job record, already
//! `success`, with `reused_from` naming the job that computed it); an identical request still
//! running is shared (the key is the job's dedup key).

use std::sync::Arc;

use hivesync_core::domain::{Job, JobFilter, JobId, JobState, Page, ProjectId, UserId};
use hivesync_core::ports::{AiInput, AiTask, JobQueue, Language, Store};
use hivesync_core::{Error, ErrorKind, Result};
use hivesync_queue::jobs::{Submission, submit_telling, succeeded};

use crate::job::{AiRequest, AiSource, GpuAiRequest, is_ai_kind, read_ai_job};
use crate::pipeline::Chain;

/// One file to ask about, as the API or the CLI read it.
#[derive(Debug, Clone)]
pub struct AiOrder {
    pub task: AiTask,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub path: String,
    /// Named by the request, or read from the path's extension.
    pub language: Option<Language>,
    /// The commit the file was read at, or `None` for content sent with the request.
    pub commit: Option<String>,
    pub content: Vec<u8>,
}

/// How a request was answered.
#[derive(Debug, Clone)]
pub struct Taken {
    pub job: Job,
    /// The earlier job whose result answers this request.
    pub reused: Option<JobId>,
    /// An identical request was already running; `job` is that one.
    pub shared: bool,
}

/// The result cache in front of the `ai_jobs` queue.
#[derive(Clone)]
pub struct AiRequests {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn JobQueue>,
    pub chain: Chain,
    /// `AI_MAX_INPUT_BYTES`.
    pub max_input_bytes: usize,
}

impl std::fmt::Debug for AiRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiRequests")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// What the pipeline takes, for errors that list it.
pub const SUPPORTED: &str = "UTF-8 text in rust, python, javascript, typescript or tsx";

/// Checks `order` and makes its payload: `PayloadTooLarge` past the limit; `Unsupported` for an
/// unknown language or a binary file (the API answers `422` with what is supported).
pub fn check(order: &AiOrder, chain: &Chain, max_input_bytes: usize) -> Result<AiRequest> {
    if order.content.len() > max_input_bytes {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the file is {} bytes; AI requests take at most {max_input_bytes}",
                order.content.len()
            ),
        )
        .with_context("limit", max_input_bytes));
    }
    let language = match order.language {
        Some(language) => language,
        None => Language::from_path(&order.path).map_err(unsupported)?,
    };
    let text = std::str::from_utf8(&order.content)
        .ok()
        .filter(|text| !text.contains('\0'))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} is a binary file; AI requests take {SUPPORTED}",
                    order.path
                ),
            )
            .with_context("supported", SUPPORTED)
        })?;
    let blob_id = hivesync_core::repo::blob_id(&order.content)?;
    let source = match &order.commit {
        Some(commit) => AiSource::Repository {
            commit: commit.clone(),
        },
        None => AiSource::Inline {
            content: text.to_owned(),
        },
    };
    let gpu = chain.has_gpu_route()
        && chain.routes_to_gpu(&AiInput {
            task: order.task,
            language,
            path: order.path.clone(),
            content: text.to_owned(),
        });
    Ok(AiRequest {
        gpu,
        task: order.task,
        project_id: order.project_id,
        path: order.path.clone(),
        language,
        source,
        cache_key: chain.cache_key(
            order.project_id,
            order.task,
            language,
            &order.path,
            &blob_id,
        ),
        blob_id,
    })
}

fn unsupported(err: Error) -> Error {
    let mut out = Error::new(ErrorKind::Unsupported, err.message().to_owned());
    for (key, value) in err.context() {
        out = out.with_context(key, value);
    }
    out
}

impl AiRequests {
    /// Checks `order` ([`check`]) and takes it ([`AiRequests::take_checked`]).
    pub async fn take(&self, order: AiOrder) -> Result<Taken> {
        let payload = check(&order, &self.chain, self.max_input_bytes)?;
        self.take_checked(payload, order.user_id).await
    }

    /// Answers a request [`check`] made, for `user`: from the result cache, by joining an
    /// identical running request, or by queueing a new job.
    pub async fn take_checked(&self, payload: AiRequest, user: UserId) -> Result<Taken> {
        let submission = if payload.gpu {
            Submission::of(&GpuAiRequest(payload.clone()))?
        } else {
            Submission::of(&payload)?
        };
        let submission = submission
            .with_owner(Some(payload.project_id), Some(user))
            .with_dedup_key(payload.cache_key.clone());
        if let Some(earlier) = self.finished(&payload.cache_key).await? {
            let id = JobId::new();
            let job = self.store.create_job(submission.record(id)).await?;
            if job.id != id {
                return Ok(Taken {
                    job,
                    reused: None,
                    shared: true,
                });
            }
            let mut result = read_ai_job(&earlier)?
                .1
                .ok_or_else(|| Error::internal("a finished AI job without its result"))?;
            result.reused_from = Some(earlier.id.to_string());
            let job = self
                .store
                .update_job(id, succeeded::<AiRequest>(&result)?)
                .await?;
            metrics::counter!("ai_cache_hits_total").increment(1);
            return Ok(Taken {
                job,
                reused: Some(earlier.id),
                shared: false,
            });
        }
        let (job, new) =
            submit_telling(self.store.as_ref(), self.queue.as_ref(), submission).await?;
        metrics::counter!("ai_cache_misses_total").increment(1);
        Ok(Taken {
            job,
            reused: None,
            shared: !new,
        })
    }

    /// The newest successful job with `key` whose result reads (the key is an AI task's, on
    /// whichever queue it ran).
    async fn finished(&self, key: &str) -> Result<Option<Job>> {
        let filter = JobFilter {
            dedup_key: Some(key.to_owned()),
            state: Some(JobState::Success),
            ..JobFilter::default()
        };
        let earlier = self
            .store
            .list_jobs(&filter, Page::first(1))
            .await?
            .into_iter()
            .next();
        Ok(earlier
            .filter(|job| is_ai_kind(&job.kind) && matches!(read_ai_job(job), Ok((_, Some(_))))))
    }
}
