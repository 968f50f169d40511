//! The OpenAI provider against a mock OpenAI-compatible server (wiremock: OpenAI's cloud cannot
//! run here): what it sends, how it reads answers, retries and falls back, and that no planted
//! secret ever leaves.

use std::sync::Arc;
use std::time::Duration;

use hivesync_ai::edits;
use hivesync_ai::providers::openai::OpenAiProvider;
use hivesync_ai::{AiOutcome, Chain, Outcome};
use hivesync_core::config::OpenAiConfig;
use hivesync_core::ports::{AiTask, Language};
use hivesync_core::secret::Secret;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-0123456789abcdefghijklmnop";

fn provider(server: &MockServer, timeout: Duration, max_retries: u32) -> OpenAiProvider {
    OpenAiProvider::new(&OpenAiConfig {
        api_key: Secret::new(KEY),
        base_url: format!("{}/v1", server.uri()),
        model: "test-model".to_owned(),
        timeout,
        max_retries,
    })
    .unwrap()
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 17, "total_tokens": 117},
    })
}

const SOURCE: &str = "use std::fs;\n\npub fn load_config(path: &str) -> String {\n    fs::read_to_string(path).unwrap_or_default()\n}\n\npub struct Settings {\n    pub name: String,\n}\n";

async fn run(server: &MockServer, task: AiTask, content: &str, timeout: Duration) -> AiOutcome {
    Chain::new(vec![Arc::new(provider(server, timeout, 2))])
        .run(task, Language::Rust, "src/settings.rs", content)
        .await
        .unwrap()
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn answers_are_read_into_the_structured_result() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            r#"{"comments": [{"symbol": "load_config", "line": 3, "text": "Reads the settings file.\n\nAn empty string when it cannot be read."}, {"symbol": "nowhere", "line": 40, "text": "Made up."}]}"#,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = run(
        &server,
        AiTask::InlineComment,
        SOURCE,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(outcome.provider, "openai");
    assert_eq!(outcome.model, "test-model");
    assert_eq!(outcome.tokens_generated, 17);
    // The comment the model placed on a real definition, in Rust's convention; the one for a
    // definition the file does not have is dropped, with the reason.
    assert_eq!(outcome.comments.len(), 1);
    assert_eq!(outcome.edits.len(), 1);
    let edited = edits::apply(SOURCE, &outcome.edits);
    assert!(
        edited.contains("/// Reads the settings file.\n///\n/// An empty string when it cannot be read.\npub fn load_config"),
        "{edited}"
    );
    assert!(
        outcome.warnings.iter().any(|w| w.contains("nowhere")),
        "{:?}",
        outcome.warnings
    );

    let sent = &bodies(&server).await[0];
    assert_eq!(sent["model"], "test-model");
    assert_eq!(sent["temperature"], 0);
    assert!(sent["max_completion_tokens"].as_u64().is_some());
    assert!(
        sent.get("max_tokens").is_none(),
        "the deprecated field is not sent"
    );
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);
    let user = sent["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("3| pub fn load_config(path: &str) -> String {"),
        "{user}"
    );
}

#[tokio::test]
async fn a_prose_summary_is_completed_from_the_parse() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "```json\n{\"summary\": \"Loads settings from a file.\"}\n```",
        )))
        .mount(&server)
        .await;
    let outcome = run(
        &server,
        AiTask::FileSummary,
        SOURCE,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(outcome.provider, "openai");
    let summary = outcome.summary.unwrap();
    assert_eq!(summary.text, "Loads settings from a file.");
    let names: Vec<&str> = summary.symbols.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["load_config", "Settings"]);
    assert_eq!(summary.imports, ["std::fs"]);
}

/// The chain fell back to the static analyser after `reason`.
fn assert_fell_back(outcome: &AiOutcome, reason: &str) {
    assert_eq!(outcome.provider, "static", "{outcome:?}");
    assert_eq!(outcome.attempts.len(), 2);
    assert_eq!(outcome.attempts[0].provider, "openai");
    assert_eq!(outcome.attempts[0].outcome, Outcome::Failed);
    let why = outcome.attempts[0].reason.as_deref().unwrap();
    assert!(why.contains(reason), "{why}");
    assert!(!why.contains(KEY), "the key never shows in a reason");
    assert_eq!(outcome.attempts[1].outcome, Outcome::Answered);
}

#[tokio::test]
async fn a_refused_key_falls_back_without_retrying() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "bad key", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = run(
        &server,
        AiTask::RenameSuggestions,
        SOURCE,
        Duration::from_secs(10),
    )
    .await;
    assert_fell_back(&outcome, "401");
}

#[tokio::test]
async fn too_many_requests_are_retried_after_retry_after_then_fall_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0.2"))
        .expect(3)
        .mount(&server)
        .await;
    let outcome = run(
        &server,
        AiTask::FileSummary,
        SOURCE,
        Duration::from_secs(10),
    )
    .await;
    assert_fell_back(&outcome, "429");
    // The first try and OPENAI_MAX_RETRIES (2) more, then the chain moved on.
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_server_error_is_retried_and_the_next_answer_used() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion(r#"{"summary": "A settings loader."}"#)),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let outcome = run(
        &server,
        AiTask::FileSummary,
        SOURCE,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(outcome.provider, "openai");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_falls_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion(r#"{"summary": "late"}"#))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let outcome = run(
        &server,
        AiTask::FileSummary,
        SOURCE,
        Duration::from_millis(500),
    )
    .await;
    assert_fell_back(&outcome, "timed out");
}

#[tokio::test]
async fn unusable_answers_fall_back() {
    for (body, reason) in [
        (
            ResponseTemplate::new(200).set_body_string("{not json"),
            "malformed JSON",
        ),
        (
            ResponseTemplate::new(200).set_body_json(completion("Sure! Here are some comments.")),
            "not comments",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"choices": []})),
            "no message content",
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(body)
            .mount(&server)
            .await;
        let outcome = run(
            &server,
            AiTask::InlineComment,
            SOURCE,
            Duration::from_secs(10),
        )
        .await;
        assert_fell_back(&outcome, reason);
        // The fallback's answer is still a real one.
        assert!(!outcome.edits.is_empty());
    }
}

#[tokio::test]
async fn planted_secrets_never_reach_the_provider() {
    let secrets = [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
        "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "hunter2-correct-horse",
        "MIIEowIBAAKCAQEA7bq3kZ2x",
    ];
    let source = format!(
        "//! Deployment settings.\n\nconst AWS_KEY: &str = \"{}\";\nconst GITHUB: &str = \"{}\";\nconst SLACK: &str = \"{}\";\nconst OPENAI: &str = \"{}\";\nconst SESSION: &str = \"{}\";\nlet password = \"{}\";\n\nconst PEM: &str = \"-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\";\n\npub fn connect() -> bool {{\n    true\n}}\n",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5], secrets[6]
    );
    let server = MockServer::start().await;
    for (task, answer) in [
        ("file_summary", r#"{"summary": "Settings."}"#),
        (
            "inline_comment",
            r#"{"comments": [{"symbol": "connect", "line": 15, "text": "Connects."}]}"#,
        ),
        ("rename_suggestions", r#"{"renames": []}"#),
    ] {
        Mock::given(method("POST"))
            .and(body_partial_json(
                json!({"response_format": {"json_schema": {"name": task}}}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion(answer)))
            .mount(&server)
            .await;
    }
    for task in AiTask::ALL {
        let outcome = run(&server, task, &source, Duration::from_secs(10)).await;
        assert_eq!(outcome.provider, "openai");
        assert!(
            outcome.redactions >= secrets.len() as u32,
            "{}",
            outcome.redactions
        );
    }
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    for request in received {
        let body = String::from_utf8(request.body.clone()).unwrap();
        for secret in secrets {
            assert!(!body.contains(secret), "{secret} was sent: {body}");
        }
        assert!(body.contains("[REDACTED]"));
        // The code around the secrets still went.
        assert!(body.contains("pub fn connect() -> bool"));
    }
}

#[tokio::test]
async fn the_openai_provider_conforms() {
    let server = MockServer::start().await;
    for (task, answer) in [
        ("file_summary", r#"{"summary": "A point."}"#),
        (
            "inline_comment",
            r#"{"comments": [{"symbol": "origin", "line": 7, "text": "The origin."}]}"#,
        ),
        (
            "rename_suggestions",
            r#"{"renames": [{"from": "x", "to": "horizontal", "line": 4, "explanation": "says what it is"}]}"#,
        ),
    ] {
        Mock::given(method("POST"))
            .and(body_partial_json(
                json!({"response_format": {"json_schema": {"name": task}}}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion(answer)))
            .mount(&server)
            .await;
    }
    hivesync_core::testkit::ai::run(&provider(&server, Duration::from_secs(10), 0)).await;
    assert!(server.received_requests().await.unwrap().len() >= 15);
}
