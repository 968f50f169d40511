//! AI requests from a client (feature `client`): ask, follow, read the answer, over
//! [`hivesync_core::client::Client`]. What the CLI, the bindings and the editor extensions call;
//! answers read into [`AiOutcome`], the type the worker writes.

use std::time::Duration;

use hivesync_core::Result;
use hivesync_core::client::Client;
use hivesync_core::ports::AiTask;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pipeline::AiOutcome;

/// How often [`follow`] asks for the result.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// One file to ask about.
#[derive(Debug, Clone, Serialize)]
pub struct AiAsk {
    pub project_id: Uuid,
    /// The file's path in the project.
    pub path: String,
    /// Read the file from the repository at this ref (default `main`); not with `content`.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The file's text (an unsaved buffer), instead of the repository's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// How an AI request was answered.
#[derive(Debug, Clone, Deserialize)]
pub struct AiAccepted {
    pub job_id: Uuid,
    pub status: String,
    pub cached: bool,
    pub shared: bool,
    pub blob_id: String,
    #[serde(default)]
    pub commit: Option<String>,
    pub status_url: String,
}

/// Why a job failed.
#[derive(Debug, Clone, Deserialize)]
pub struct AiJobError {
    pub code: String,
    pub message: String,
}

/// `GET /ai/result/{job_id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct AiJobResult {
    pub job_id: Uuid,
    pub task: AiTask,
    pub state: String,
    pub progress: f64,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub result: Option<AiOutcome>,
    #[serde(default)]
    pub error: Option<AiJobError>,
}

impl AiJobResult {
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "success" | "failed" | "cancelled")
    }
}

fn route(task: AiTask) -> &'static str {
    match task {
        AiTask::FileSummary => "/ai/file-summary",
        AiTask::InlineComment => "/ai/inline-comment",
        AiTask::RenameSuggestions => "/ai/rename-suggestions",
    }
}

/// Asks for `task` on one file.
pub async fn ask(client: &Client, task: AiTask, ask: &AiAsk) -> Result<AiAccepted> {
    client.post(route(task), ask).await
}

/// The job's state and, once it has one, its answer.
pub async fn result(client: &Client, job: Uuid) -> Result<AiJobResult> {
    client.get(&format!("/ai/result/{job}")).await
}

/// Polls until the job is finished.
pub async fn follow(client: &Client, job: Uuid) -> Result<AiJobResult> {
    loop {
        let current = result(client, job).await?;
        if current.is_finished() {
            return Ok(current);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
