//! The fallback chain (spec §6.2): each provider in turn until one gives a usable answer, with
//! the input redacted first and the answer placed as edits against the original.

use std::sync::Arc;
use std::time::Instant;

use hivesync_core::domain::ProjectId;
use hivesync_core::ports::{AiAnswer, AiInput, AiProvider, AiTask, Language};
use hivesync_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::edits::{self, Edit};
use crate::parse::parse;
use crate::providers::static_analysis::{self, StaticProvider};
use crate::redact::redact;

/// What happened to one provider of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Answered,
    /// It does not take this input (not enabled, too big, ...).
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub millis: u64,
}

/// A finished AI task: the `ai` job's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiOutcome {
    pub task: AiTask,
    pub language: Language,
    pub path: String,
    /// The git blob id of the exact content the answer was computed on.
    pub blob_id: String,
    /// Who answered, and what each provider before it did.
    pub provider: String,
    pub model: String,
    pub attempts: Vec<Attempt>,
    /// How many secrets were replaced before any provider saw the file.
    pub redactions: u32,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<hivesync_core::ports::FileSummary>,
    /// The doc comments placed (inline-comment tasks).
    #[serde(default)]
    pub comments: Vec<hivesync_core::ports::CommentSuggestion>,
    /// The renames kept (rename tasks).
    #[serde(default)]
    pub renames: Vec<hivesync_core::ports::RenameSuggestion>,
    /// The edits against the blob, sorted, never overlapping.
    #[serde(default)]
    pub edits: Vec<Edit>,
    /// The same edits as a unified diff (`git apply` takes it); empty when there are none.
    #[serde(default)]
    pub diff: String,
    #[serde(default)]
    pub tokens_generated: u32,
    /// Set when this answer is an earlier job's, reused for an identical request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// The worker that computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// Whether an input goes to the local model on a GPU worker.
pub type GpuRoute = Arc<dyn Fn(&AiInput) -> bool + Send + Sync>;

/// Providers in order; the static analyser always ends it.
#[derive(Clone)]
pub struct Chain {
    providers: Vec<Arc<dyn AiProvider>>,
    gpu_route: Option<GpuRoute>,
    gpu_worker: bool,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.name().to_owned()))
            .finish()
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new(Vec::new())
    }
}

impl Chain {
    /// `providers` in order, then the static analyser (unless the list already ends with it).
    pub fn new(mut providers: Vec<Arc<dyn AiProvider>>) -> Self {
        if providers.last().is_none_or(|p| p.name() != "static") {
            providers.push(Arc::new(StaticProvider));
        }
        Chain {
            providers,
            gpu_route: None,
            gpu_worker: false,
        }
    }

    /// The same chain, marked as a GPU worker's (its local model runs in this process).
    pub fn for_gpu_worker(mut self) -> Self {
        self.gpu_worker = true;
        self
    }

    /// Whether this is a GPU worker's chain: the only one that may answer `ai_gpu` jobs.
    pub fn is_gpu_workers(&self) -> bool {
        self.gpu_worker
    }

    /// The same chain, sending the inputs `route` picks to GPU workers.
    pub fn with_gpu_route(mut self, route: GpuRoute) -> Self {
        self.gpu_route = Some(route);
        self
    }

    /// Whether `input` is for the local model on a GPU worker (`gpu_ai_jobs`).
    pub fn routes_to_gpu(&self, input: &AiInput) -> bool {
        self.gpu_route.as_ref().is_some_and(|route| route(input))
    }

    /// Whether this chain sends some inputs to GPU workers at all (the API asks before it
    /// builds an input to route).
    pub fn has_gpu_route(&self) -> bool {
        self.gpu_route.is_some()
    }

    pub fn providers(&self) -> &[Arc<dyn AiProvider>] {
        &self.providers
    }

    /// Names and models in order: what decides whether an earlier result may be reused.
    pub fn signature(&self) -> String {
        self.providers
            .iter()
            .map(|p| format!("{}={}", p.name(), p.model()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The result-cache key of `task` on blob `blob_id` at `path` in `project` through this
    /// chain. The project is part of it: results are never shared across projects.
    pub fn cache_key(
        &self,
        project: ProjectId,
        task: AiTask,
        language: Language,
        path: &str,
        blob_id: &str,
    ) -> String {
        let mut hasher = Sha256::new();
        let project = project.to_string();
        for part in [
            &project,
            task.as_str(),
            language.as_str(),
            path,
            blob_id,
            &self.signature(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        format!("ai:{}", hex_string(&hasher.finalize()))
    }

    /// Runs `task` on `original`. Fails only when every provider failed (`Unavailable`, which
    /// the static analyser does only for a bug), or for input no provider could take.
    pub async fn run(
        &self,
        task: AiTask,
        language: Language,
        path: &str,
        original: &str,
    ) -> Result<AiOutcome> {
        let redacted = redact(original);
        let blob_id = hivesync_core::repo::blob_id(original.as_bytes())?;
        let input = AiInput {
            task,
            language,
            path: path.to_owned(),
            content: redacted.text.clone(),
        };
        let mut attempts = Vec::new();
        for provider in &self.providers {
            let name = provider.name().to_owned();
            let model = provider.model();
            if let Err(reason) = provider.accepts(&input) {
                metrics::counter!("ai_provider_attempts_total", "provider" => name.clone(), "outcome" => "skipped").increment(1);
                attempts.push(Attempt {
                    provider: name,
                    model,
                    outcome: Outcome::Skipped,
                    reason: Some(reason),
                    millis: 0,
                });
                continue;
            }
            let started = Instant::now();
            let reply = provider.answer(&input).await;
            let millis = started.elapsed().as_millis() as u64;
            metrics::histogram!("ai_provider_seconds", "provider" => name.clone())
                .record(started.elapsed().as_secs_f64());
            let reply = match reply {
                Ok(reply) if reply.answer.task() == task => {
                    metrics::counter!("ai_provider_attempts_total", "provider" => name.clone(), "outcome" => "answered").increment(1);
                    reply
                }
                Ok(reply) => {
                    metrics::counter!("ai_provider_attempts_total", "provider" => name.clone(), "outcome" => "failed").increment(1);
                    attempts.push(failed(
                        name,
                        model,
                        millis,
                        format!("answered {} instead", reply.answer.task()),
                    ));
                    continue;
                }
                Err(err) if err.kind() == ErrorKind::Validation => return Err(err),
                Err(err) => {
                    metrics::counter!("ai_provider_attempts_total", "provider" => name.clone(), "outcome" => "failed").increment(1);
                    tracing::info!(provider = %name, error = %err, "an AI provider failed; trying the next");
                    attempts.push(failed(name, model, millis, err.to_string()));
                    continue;
                }
            };
            metrics::counter!("ai_tokens_generated_total", "provider" => name.clone())
                .increment(u64::from(reply.tokens_generated));
            attempts.push(Attempt {
                provider: name.clone(),
                model: model.clone(),
                outcome: Outcome::Answered,
                reason: None,
                millis,
            });
            let mut outcome = AiOutcome {
                task,
                language,
                path: path.to_owned(),
                blob_id: blob_id.clone(),
                provider: name,
                model,
                attempts,
                redactions: redacted.spans.len() as u32,
                warnings: reply.warnings,
                summary: None,
                comments: Vec::new(),
                renames: Vec::new(),
                edits: Vec::new(),
                diff: String::new(),
                tokens_generated: reply.tokens_generated,
                reused_from: None,
                worker: None,
            };
            place(
                &mut outcome,
                reply.answer,
                original,
                &redacted.text,
                &redacted.spans,
            )?;
            return Ok(outcome);
        }
        Err(Error::unavailable("every AI provider failed").with_context(
            "attempts",
            attempts
                .iter()
                .map(|a| a.provider.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ))
    }
}

fn failed(provider: String, model: String, millis: u64, reason: String) -> Attempt {
    Attempt {
        provider,
        model,
        outcome: Outcome::Failed,
        reason: Some(reason),
        millis,
    }
}

/// Fills `outcome` from `answer`: a summary completed from the parse where a provider wrote only
/// prose; comments and renames as edits against `original`.
fn place(
    outcome: &mut AiOutcome,
    answer: AiAnswer,
    original: &str,
    redacted: &str,
    protected: &[std::ops::Range<usize>],
) -> Result<()> {
    match answer {
        AiAnswer::Summary(mut summary) => {
            if summary.symbols.is_empty() && summary.lines.total == 0 {
                // The parse of what the provider saw (line numbers are the original's).
                let parsed = parse(outcome.language, redacted)?;
                let facts = static_analysis::summary(&parsed, &outcome.path);
                summary.lines = facts.lines;
                summary.symbols = facts.symbols;
                summary.imports = facts.imports;
                summary.module_doc = facts.module_doc;
            }
            outcome.summary = Some(summary);
        }
        AiAnswer::Comments { comments } => {
            let parsed = parse(outcome.language, original)?;
            let (edits, kept, dropped) = edits::comment_edits(&parsed, &comments, protected);
            outcome.comments = kept;
            outcome.warnings.extend(dropped);
            outcome.diff =
                edits::unified_diff(&outcome.path, original, &edits::apply(original, &edits));
            outcome.edits = edits;
        }
        AiAnswer::Renames { renames } => {
            let parsed = parse(outcome.language, original)?;
            let (edits, kept, dropped) = edits::rename_edits(&parsed, &renames, protected);
            outcome.renames = kept;
            outcome.warnings.extend(dropped);
            outcome.diff =
                edits::unified_diff(&outcome.path, original, &edits::apply(original, &edits));
            outcome.edits = edits;
        }
    }
    Ok(())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
