//! AI documentation: `POST /ai/file-summary`, `/ai/inline-comment`, `/ai/rename-suggestions`
//! and `GET /ai/result/{job_id}`.
//!
//! Members of the project only, viewers included (the answer changes nothing: edits come back
//! as a diff for the caller to apply); anyone else gets `404 NOT_FOUND`, for the project and for
//! its jobs alike. A request is checked completely (the file read at its ref, its size, its
//! language, that it is text) before it counts against `AI_REQUESTS_PER_MINUTE`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hivesync_ai::job::{is_ai_kind, read_ai_job};
use hivesync_ai::{AiOrder, AiOutcome, Outcome};
use hivesync_core::domain::{Job, JobId, ProjectId};
use hivesync_core::ports::{AiTask, Language};
use hivesync_core::preview_token::validate_ref;
use hivesync_core::{Error, ErrorKind};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::projects::{Needs, authorize};
use super::security::BearerAuth;
use super::sync::blocking;
use super::text::{Ruled, Text, TreePathRule};
use crate::state::AppState;

/// The branch a file is read from when the request names no ref.
const DEFAULT_REF: &str = "main";

#[derive(Tags)]
enum AiTags {
    /// File summaries, doc comments and rename suggestions.
    Ai,
}

/// One file to ask about: from the project's repository (`path`, optional `ref`), or sent as
/// `content` (an unsaved editor buffer; `path` still names it, and its language unless
/// `language` does).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct AiFileRequest {
    project_id: Uuid,
    /// The file's path in the project, `/`-separated.
    path: Ruled<TreePathRule>,
    /// A branch, tag or commit id to read `path` at (default `main`); not with `content`.
    #[oai(rename = "ref")]
    git_ref: Option<Text>,
    /// The file's text, instead of reading it from the repository.
    content: Option<Text>,
    /// `rust`, `python`, `javascript`, `typescript` or `tsx`; by default from the path's
    /// extension.
    language: Option<Text>,
}

/// An AI request's answer.
#[derive(Debug, Object)]
struct AiAccepted {
    job_id: Uuid,
    /// `queued` for a new job; `success` when an identical earlier result answers it; the
    /// running state when an identical request was already under way.
    status: String,
    /// An identical earlier result answers this request.
    cached: bool,
    /// An identical request was already under way; this is that job.
    shared: bool,
    /// The git blob id of the content the answer is (or will be) computed on.
    blob_id: String,
    /// The commit the file was read at; absent for `content`.
    commit: Option<String>,
    status_url: String,
}

#[derive(Debug, ApiResponse)]
enum AiResponse {
    /// Accepted; follow `status_url`.
    #[oai(status = 202)]
    Accepted(Json<AiAccepted>),
}

/// What one provider of the chain did.
#[derive(Debug, Object)]
struct AttemptView {
    provider: String,
    model: String,
    /// `answered`, `skipped` or `failed`.
    outcome: String,
    reason: Option<String>,
    millis: u64,
}

#[derive(Debug, Object)]
struct LinesView {
    total: u32,
    code: u32,
    comment: u32,
    blank: u32,
}

#[derive(Debug, Object)]
struct SymbolView {
    kind: String,
    name: String,
    line: u32,
    end_line: u32,
}

#[derive(Debug, Object)]
struct SummaryView {
    text: String,
    lines: LinesView,
    symbols: Vec<SymbolView>,
    imports: Vec<String>,
    module_doc: Option<String>,
}

/// A doc comment placed above (Python: inside) a definition.
#[derive(Debug, Object)]
struct CommentView {
    symbol: String,
    line: u32,
    text: String,
}

#[derive(Debug, Object)]
struct RenameView {
    from: String,
    to: String,
    line: u32,
    /// `convention`, `vague`, `boolean` or `other`.
    reason: String,
    explanation: String,
}

/// Replace bytes `start_byte..end_byte` of the blob (an insertion when equal) with `new_text`.
#[derive(Debug, Object)]
struct EditView {
    start_line: u32,
    end_line: u32,
    start_byte: u64,
    end_byte: u64,
    new_text: String,
}

#[derive(Debug, Object)]
struct AiOutcomeView {
    /// `file_summary`, `inline_comment` or `rename_suggestions`.
    task: String,
    language: String,
    path: String,
    /// The git blob id of the exact content the answer was computed on.
    blob_id: String,
    /// The provider that answered, and its model.
    provider: String,
    model: String,
    /// Every provider of the chain up to the one that answered, with why each earlier one did
    /// not.
    attempts: Vec<AttemptView>,
    /// Secrets replaced before any provider saw the file.
    redactions: u32,
    warnings: Vec<String>,
    summary: Option<SummaryView>,
    comments: Vec<CommentView>,
    renames: Vec<RenameView>,
    /// Sorted, never overlapping, never inside an existing comment or a redacted secret.
    edits: Vec<EditView>,
    /// The edits as a unified diff (`git apply` takes it); empty when there are none.
    diff: String,
    tokens_generated: u32,
    /// The earlier job whose answer this is, for a request answered from the cache.
    reused_from: Option<String>,
    /// The worker that computed it.
    worker: Option<String>,
}

/// An AI job: its state, and its answer once it has one.
#[derive(Debug, Object)]
struct AiResultView {
    job_id: Uuid,
    /// `file_summary`, `inline_comment` or `rename_suggestions`.
    task: String,
    /// `queued`, `running`, `success` or `failed`.
    state: String,
    progress: f64,
    /// `ai_jobs`, or `gpu_ai_jobs` for the local model on a GPU worker.
    queue: String,
    /// The provider that answered, once one has.
    provider: Option<String>,
    result: Option<AiOutcomeView>,
    error: Option<ErrorBody>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<AiOutcome> for AiOutcomeView {
    fn from(outcome: AiOutcome) -> Self {
        AiOutcomeView {
            task: outcome.task.as_str().to_owned(),
            language: outcome.language.as_str().to_owned(),
            path: outcome.path,
            blob_id: outcome.blob_id,
            provider: outcome.provider,
            model: outcome.model,
            attempts: outcome
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    provider: a.provider,
                    model: a.model,
                    outcome: match a.outcome {
                        Outcome::Answered => "answered",
                        Outcome::Skipped => "skipped",
                        Outcome::Failed => "failed",
                    }
                    .to_owned(),
                    reason: a.reason,
                    millis: a.millis,
                })
                .collect(),
            redactions: outcome.redactions,
            warnings: outcome.warnings,
            summary: outcome.summary.map(|s| SummaryView {
                text: s.text,
                lines: LinesView {
                    total: s.lines.total,
                    code: s.lines.code,
                    comment: s.lines.comment,
                    blank: s.lines.blank,
                },
                symbols: s
                    .symbols
                    .into_iter()
                    .map(|s| SymbolView {
                        kind: s.kind,
                        name: s.name,
                        line: s.line,
                        end_line: s.end_line,
                    })
                    .collect(),
                imports: s.imports,
                module_doc: s.module_doc,
            }),
            comments: outcome
                .comments
                .into_iter()
                .map(|c| CommentView {
                    symbol: c.symbol,
                    line: c.line,
                    text: c.text,
                })
                .collect(),
            renames: outcome
                .renames
                .into_iter()
                .map(|r| RenameView {
                    from: r.from,
                    to: r.to,
                    line: r.line,
                    reason: serde_json::to_value(r.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    explanation: r.explanation,
                })
                .collect(),
            edits: outcome
                .edits
                .into_iter()
                .map(|e| EditView {
                    start_line: e.start_line,
                    end_line: e.end_line,
                    start_byte: e.start_byte as u64,
                    end_byte: e.end_byte as u64,
                    new_text: e.new_text,
                })
                .collect(),
            diff: outcome.diff,
            tokens_generated: outcome.tokens_generated,
            reused_from: outcome.reused_from,
            worker: outcome.worker,
        }
    }
}

#[derive(Debug)]
pub struct AiApi {
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/ai", tag = "AiTags::Ai")]
impl AiApi {
    /// Summarise a file
    ///
    /// Queues a summary of one file (language, line counts, definitions, imports, the file's own
    /// first sentence, in prose and structured). For members of the project (viewers included).
    /// `422` for a language the pipeline does not read or a binary file; `413` past
    /// `AI_MAX_INPUT_BYTES`; `429` past `AI_REQUESTS_PER_MINUTE`.
    #[oai(
        path = "/file-summary",
        method = "post",
        operation_id = "aiFileSummary"
    )]
    async fn file_summary(
        &self,
        auth: BearerAuth,
        body: Json<AiFileRequest>,
    ) -> Result<AiResponse, ApiError> {
        self.take(AiTask::FileSummary, auth, body.0).await
    }

    /// Suggest doc comments
    ///
    /// Queues doc comments for the file's undocumented functions, methods and types, in the
    /// language's own convention, returned as insertions and a unified diff against the blob.
    /// Existing comments are never changed. As `file-summary` for who may ask and the limits.
    #[oai(
        path = "/inline-comment",
        method = "post",
        operation_id = "aiInlineComment"
    )]
    async fn inline_comment(
        &self,
        auth: BearerAuth,
        body: Json<AiFileRequest>,
    ) -> Result<AiResponse, ApiError> {
        self.take(AiTask::InlineComment, auth, body.0).await
    }

    /// Suggest renames
    ///
    /// Queues renames of identifiers that break their language's naming convention or say
    /// nothing (`tmp`, `data2`, a lone letter outside a loop, a boolean that is not a question),
    /// each covering every occurrence in the file, returned as edits and a unified diff. A
    /// rename to a name the file already uses is dropped. As `file-summary` for who may ask and
    /// the limits.
    #[oai(
        path = "/rename-suggestions",
        method = "post",
        operation_id = "aiRenameSuggestions"
    )]
    async fn rename_suggestions(
        &self,
        auth: BearerAuth,
        body: Json<AiFileRequest>,
    ) -> Result<AiResponse, ApiError> {
        self.take(AiTask::RenameSuggestions, auth, body.0).await
    }

    /// An AI job's result
    ///
    /// Its state, and once it succeeded, the answer: which provider gave it (and what each
    /// provider before it did), the summary or the edits and their diff. Members of the job's
    /// project only.
    #[oai(path = "/result/:job_id", method = "get", operation_id = "aiResult")]
    async fn result(
        &self,
        auth: BearerAuth,
        job_id: Path<Uuid>,
    ) -> Result<Json<AiResultView>, ApiError> {
        let state = &self.state;
        let not_found = || ApiError::not_found("no such AI job");
        let job = state
            .store
            .get_job(JobId::from_uuid(job_id.0))
            .await?
            .filter(|job| is_ai_kind(&job.kind))
            .ok_or_else(not_found)?;
        let project = job.project_id.ok_or_else(not_found)?;
        // A stranger learns nothing, not even that the job exists.
        authorize(state, auth.0, project, Needs::Read)
            .await
            .map_err(|_| not_found())?;
        Ok(Json(result_view(job)?))
    }
}

fn result_view(job: Job) -> Result<AiResultView, ApiError> {
    let (request, result) = read_ai_job(&job)?;
    let error = job
        .error_code
        .as_ref()
        .map(|code| ErrorBody::new(code, job.error_message.clone().unwrap_or_default()));
    Ok(AiResultView {
        job_id: job.id.as_uuid(),
        task: request.task.as_str().to_owned(),
        state: job.state.to_string(),
        progress: job.progress,
        queue: job.queue.clone(),
        provider: result.as_ref().map(|r| r.provider.clone()),
        result: result.map(AiOutcomeView::from),
        error,
        created_at: job.created_at,
        finished_at: job.finished_at,
    })
}

impl AiApi {
    async fn take(
        &self,
        task: AiTask,
        auth: BearerAuth,
        body: AiFileRequest,
    ) -> Result<AiResponse, ApiError> {
        let state = &self.state;
        let caller = auth.0;
        let project = ProjectId::from_uuid(body.project_id);
        authorize(state, caller, project, Needs::Read).await?;
        let language = body
            .language
            .map(|name| Language::parse(name.as_str()))
            .transpose()
            .map_err(unprocessable)?;
        let path = body.path.0;
        let (commit, content) = match (body.content, body.git_ref) {
            (Some(_), Some(_)) => {
                return Err(Error::validation("send either content or ref, not both")
                    .with_context("field", "ref")
                    .into());
            }
            (Some(content), None) => (None, content.0.into_bytes()),
            (None, git_ref) => {
                let git_ref = git_ref.map_or_else(|| DEFAULT_REF.to_owned(), |r| r.0);
                validate_ref(&git_ref)?;
                let repos = state.repos.clone();
                let file_path = path.clone();
                let file = blocking(move || repos.read_file(project, &git_ref, &file_path)).await?;
                (Some(file.commit), file.bytes)
            }
        };
        let order = AiOrder {
            task,
            project_id: project,
            user_id: caller.user_id,
            path,
            language,
            commit: commit.clone(),
            content,
        };
        // Checked before it counts: a request that could never run costs the caller nothing.
        let payload =
            hivesync_ai::request::check(&order, &state.ai.chain, state.ai.max_input_bytes)
                .map_err(unprocessable)?;
        let decision = state
            .rate_limiter
            .check(&format!("ai:{}", caller.user_id), state.ai_quota)
            .await?;
        if !decision.allowed {
            return Err(Error::rate_limited(decision.retry_after).into());
        }
        let blob_id = payload.blob_id.clone();
        let taken = state
            .ai
            .take_checked(payload, caller.user_id)
            .await
            .map_err(unprocessable)?;
        let job = taken.job;
        tracing::info!(
            job_id = %job.id, project_id = %project, task = %task,
            cached = taken.reused.is_some(), shared = taken.shared, "AI request taken"
        );
        Ok(AiResponse::Accepted(Json(AiAccepted {
            job_id: job.id.as_uuid(),
            status: job.state.to_string(),
            cached: taken.reused.is_some(),
            shared: taken.shared,
            blob_id,
            commit,
            status_url: format!("{}/ai/result/{}", super::API_PREFIX, job.id),
        })))
    }
}

/// `Unsupported` input (a language the pipeline does not read, a binary file) is `422` in the
/// standard shape with what is supported; everything else converts as usual.
fn unprocessable(err: Error) -> ApiError {
    if err.kind() == ErrorKind::Unsupported
        || (err.kind() == ErrorKind::Validation
            && err.context().iter().any(|(key, _)| *key == "supported"))
    {
        let mut body = ErrorBody::new(
            hivesync_core::ApiErrorCode::ValidationError.as_str(),
            err.message(),
        );
        for (key, value) in err.context() {
            body.details.insert((*key).to_owned(), value.clone().into());
        }
        body.details.insert(
            "languages".to_owned(),
            serde_json::json!(Language::ALL.map(Language::as_str)),
        );
        return ApiError::Unprocessable(Json(body));
    }
    err.into()
}
