//! Any OpenAI-compatible `/chat/completions` endpoint (OpenAI, llama.cpp's server, vLLM,
//! Ollama), asked for structured output (a JSON schema per task).
//!
//! A 429 or a 5xx is tried again (at most `max_retries` times), after the `Retry-After` the
//! endpoint asked for, or a short backoff; a wait longer than [`MAX_RETRY_WAIT`] is not waited
//! for: the chain moves on. Every other failure (401, a timeout, an answer that does not parse
//! into the schema) is `Unavailable` at once, and the chain moves on. The key goes only into the
//! `Authorization` header; errors never carry it.

use std::time::Duration;

use async_trait::async_trait;
use hivesync_core::config::OpenAiConfig;
use hivesync_core::ports::{
    AiAnswer, AiInput, AiProvider, AiReply, AiTask, CommentSuggestion, FileSummary, LineCounts,
    RenameReason, RenameSuggestion,
};
use hivesync_core::secret::Secret;
use hivesync_core::{Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};

/// The longest `Retry-After` worth waiting for inside one job.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(20);
/// What a file may be, in characters, to be sent (the chain moves on past it).
const MAX_PROMPT_CHARS: usize = 120_000;
/// The most tokens asked for in one answer.
const MAX_COMPLETION_TOKENS: u32 = 2048;

/// An OpenAI-compatible endpoint.
pub struct OpenAiProvider {
    http: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Secret,
    max_retries: u32,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(config: &OpenAiConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|err| Error::internal("cannot build an HTTP client").with_source(err))?;
        Ok(OpenAiProvider {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            max_retries: config.max_retries,
        })
    }

    /// One call, retried on 429 and 5xx.
    async fn complete(&self, body: &Value) -> Result<(String, u32)> {
        let url = format!("{}/chat/completions", self.base_url);
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .http
                .post(&url)
                .bearer_auth(self.api_key.expose())
                .json(body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(err) => {
                    let what = if err.is_timeout() {
                        "timed out"
                    } else {
                        "could not be reached"
                    };
                    // Not the error itself: it names the URL, which is fine, but keep one shape.
                    return Err(Error::unavailable(format!("the OpenAI endpoint {what}")));
                }
            };
            let status = response.status();
            if status.is_success() {
                let value: Value = response.json().await.map_err(|_| {
                    Error::unavailable("the OpenAI endpoint answered with malformed JSON")
                })?;
                return read_completion(&value);
            }
            let retryable = status.as_u16() == 429 || status.is_server_error();
            let wait = retry_after(response.headers())
                .unwrap_or_else(|| Duration::from_millis(250 * (1 << tries.min(5))));
            if retryable && tries <= self.max_retries && wait <= MAX_RETRY_WAIT {
                tracing::info!(
                    status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64,
                    "the OpenAI endpoint asked to retry"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(Error::unavailable(format!(
                "the OpenAI endpoint answered {status}{}",
                if retryable {
                    format!(" after {tries} tries")
                } else {
                    String::new()
                }
            )));
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not worth waiting for inside a job).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The message content and the completion tokens of a chat completion.
fn read_completion(value: &Value) -> Result<(String, u32)> {
    let unusable = || Error::unavailable("the OpenAI endpoint's answer has no message content");
    let choice = value["choices"].get(0).ok_or_else(unusable)?;
    if choice["finish_reason"] == "length" {
        return Err(Error::unavailable(
            "the OpenAI endpoint's answer was cut off at the token limit",
        ));
    }
    let content = choice["message"]["content"]
        .as_str()
        .ok_or_else(unusable)?
        .to_owned();
    let tokens = value["usage"]["completion_tokens"].as_u64().unwrap_or(0) as u32;
    Ok((content, tokens))
}

#[async_trait]
impl AiProvider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn model(&self) -> String {
        self.model.clone()
    }

    fn accepts(&self, input: &AiInput) -> std::result::Result<(), String> {
        if input.content.chars().count() > MAX_PROMPT_CHARS {
            return Err(format!(
                "the file is longer than the {MAX_PROMPT_CHARS} characters sent to OpenAI"
            ));
        }
        Ok(())
    }

    async fn answer(&self, input: &AiInput) -> Result<AiReply> {
        let body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": system_prompt(input.task)},
                {"role": "user", "content": user_prompt(input)},
            ],
            "temperature": 0,
            "max_completion_tokens": MAX_COMPLETION_TOKENS,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": input.task.as_str(), "strict": true, "schema": schema(input.task)},
            },
        });
        let (content, tokens) = self.complete(&body).await?;
        let answer = parse_answer(input.task, &content)?;
        Ok(AiReply {
            answer,
            warnings: Vec::new(),
            tokens_generated: tokens,
        })
    }
}

/// What each task asks of a model, in words.
pub fn system_prompt(task: AiTask) -> &'static str {
    match task {
        AiTask::FileSummary => {
            "You document source code. Summarise the file you are given in two to four plain \
             sentences: what it is for and its main parts. Answer in JSON: {\"summary\": string}."
        }
        AiTask::InlineComment => {
            "You document source code. For each function, method and type in the file that has no \
             doc comment, write a short doc comment (one sentence, then details only if needed). \
             Lines are numbered `N| `. Give the name and the line number where the name appears, \
             and the comment text without comment markers. Answer in JSON: \
             {\"comments\": [{\"symbol\": string, \"line\": integer, \"text\": string}]}."
        }
        AiTask::RenameSuggestions => {
            "You review source code. List identifiers declared in this file whose names break the \
             language's naming convention or say nothing about what they hold (tmp, data2, a \
             single letter outside a loop, a boolean that is not a question), with a better name. \
             Lines are numbered `N| `. Answer in JSON: {\"renames\": [{\"from\": string, \"to\": \
             string, \"line\": integer, \"explanation\": string}]}."
        }
    }
}

/// The file, with line numbers for the tasks that answer by line.
pub fn user_prompt(input: &AiInput) -> String {
    let mut prompt = format!(
        "Path: {}\nLanguage: {}\n\n",
        input.path,
        input.language.display_name()
    );
    if input.task == AiTask::FileSummary {
        prompt.push_str(&input.content);
    } else {
        for (number, line) in input.content.lines().enumerate() {
            prompt.push_str(&format!("{}| {line}\n", number + 1));
        }
    }
    prompt
}

fn schema(task: AiTask) -> Value {
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    match task {
        AiTask::FileSummary => object(json!({"summary": {"type": "string"}}), &["summary"]),
        AiTask::InlineComment => object(
            json!({"comments": {"type": "array", "items": object(
                json!({"symbol": {"type": "string"}, "line": {"type": "integer"}, "text": {"type": "string"}}),
                &["symbol", "line", "text"],
            )}}),
            &["comments"],
        ),
        AiTask::RenameSuggestions => object(
            json!({"renames": {"type": "array", "items": object(
                json!({"from": {"type": "string"}, "to": {"type": "string"}, "line": {"type": "integer"}, "explanation": {"type": "string"}}),
                &["from", "to", "line", "explanation"],
            )}}),
            &["renames"],
        ),
    }
}

#[derive(Deserialize)]
struct SummaryAnswer {
    summary: String,
}

#[derive(Deserialize)]
struct CommentsAnswer {
    comments: Vec<CommentItem>,
}

#[derive(Deserialize)]
struct CommentItem {
    symbol: String,
    line: u32,
    text: String,
}

#[derive(Deserialize)]
struct RenamesAnswer {
    renames: Vec<RenameItem>,
}

#[derive(Deserialize)]
struct RenameItem {
    from: String,
    to: String,
    line: u32,
    #[serde(default)]
    explanation: String,
}

/// A model's answer as the structured result; anything else is `Unavailable` (an unusable
/// answer moves the chain on, it is never passed off as a result). Models that wrap JSON in a
/// Markdown fence are forgiven the fence.
pub fn parse_answer(task: AiTask, content: &str) -> Result<AiAnswer> {
    let trimmed = content.trim();
    let json_text = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim();
    let unusable = |what: &str| Error::unavailable(format!("the model's answer is not {what}"));
    let answer = match task {
        AiTask::FileSummary => {
            let parsed: SummaryAnswer = serde_json::from_str(json_text)
                .map_err(|_| unusable("a summary in the requested JSON"))?;
            let text = parsed.summary.trim().to_owned();
            if text.is_empty() {
                return Err(unusable("a non-empty summary"));
            }
            AiAnswer::Summary(FileSummary {
                text,
                lines: LineCounts::default(),
                symbols: Vec::new(),
                imports: Vec::new(),
                module_doc: None,
            })
        }
        AiTask::InlineComment => {
            let parsed: CommentsAnswer = serde_json::from_str(json_text)
                .map_err(|_| unusable("comments in the requested JSON"))?;
            AiAnswer::Comments {
                comments: parsed
                    .comments
                    .into_iter()
                    .map(|c| CommentSuggestion {
                        symbol: c.symbol,
                        line: c.line,
                        text: c.text,
                    })
                    .collect(),
            }
        }
        AiTask::RenameSuggestions => {
            let parsed: RenamesAnswer = serde_json::from_str(json_text)
                .map_err(|_| unusable("renames in the requested JSON"))?;
            AiAnswer::Renames {
                renames: parsed
                    .renames
                    .into_iter()
                    .map(|r| RenameSuggestion {
                        from: r.from,
                        to: r.to,
                        line: r.line,
                        reason: RenameReason::Other,
                        explanation: r.explanation,
                    })
                    .collect(),
            }
        }
    };
    Ok(answer)
}
