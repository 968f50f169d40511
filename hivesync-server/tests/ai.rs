//! AI requests over HTTP on the embedded defaults, run by a real worker: who may ask, what each
//! task answers, the result cache, and every refusal in the standard error shape.

mod common;

use std::time::Duration;

use common::{Answer, TestApp, TestUser};
use hivesync_core::ports::WorkerRole;
use hivesync_queue::worker::WorkerConfig;
use poem::http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hivesync-ai/tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, *bytes).unwrap();
    }
    builder.into_inner().unwrap()
}

struct Setup {
    app: TestApp,
    owner: TestUser,
    viewer: TestUser,
    stranger: TestUser,
    project: String,
    commit: String,
}

async fn setup(env: &[(&str, &str)]) -> Setup {
    let app = TestApp::with_env(env).await;
    let owner = app.register("owner").await;
    let viewer = app.register("viewer").await;
    let stranger = app.register("stranger").await;
    let project = app.create_project(&owner, "docs").await;
    app.add_member(&owner, &project, &viewer, "viewer").await;
    let config = fixture("config.rs");
    let answer = app
        .send_bytes(
            Method::POST,
            &format!("/api/v1/projects/{project}/sync?message=add"),
            Some(&owner.token),
            "application/x-tar",
            tar_of(&[
                ("src/config.rs", config.as_bytes()),
                ("README.md", b"# Docs\n"),
                ("src/blob.rs", b"fn main() {}\0\x01\x02"),
            ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let commit = answer.body["commit"].as_str().unwrap().to_owned();
    Setup {
        app,
        owner,
        viewer,
        stranger,
        project,
        commit,
    }
}

impl Setup {
    async fn ask(&self, task: &str, user: &TestUser, body: Value) -> Answer {
        let mut body = body;
        body["project_id"] = json!(self.project);
        self.app
            .post(&format!("/api/v1/ai/{task}"), Some(&user.token), body)
            .await
    }

    /// Polls the result until the job is finished.
    async fn finished(&self, user: &TestUser, job: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let answer = self
                .app
                .get(&format!("/api/v1/ai/result/{job}"), Some(&user.token))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            let state = answer.body["state"].as_str().unwrap().to_owned();
            if ["success", "failed", "cancelled"].contains(&state.as_str()) {
                return answer.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stuck: {}",
                answer.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn members_get_summaries_comments_and_renames_from_a_worker() {
    let s = setup(&[]).await;
    let shutdown = CancellationToken::new();
    let workers = hivesync_server::runtime::spawn_worker(
        &s.app.state,
        WorkerConfig::new(WorkerRole::Cpu, 2),
        &shutdown,
    );

    // A viewer may ask: the answer changes nothing in the project.
    let accepted = s
        .ask("file-summary", &s.viewer, json!({"path": "src/config.rs"}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.body["commit"], s.commit.as_str());
    assert_eq!(accepted.body["cached"], false);
    let config = fixture("config.rs");
    let blob = hivesync_core::repo::blob_id(config.as_bytes()).unwrap();
    assert_eq!(accepted.body["blob_id"], blob.as_str());
    let job = accepted.body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        accepted.body["status_url"],
        format!("/api/v1/ai/result/{job}").as_str()
    );
    let done = s.finished(&s.viewer, &job).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["task"], "file_summary");
    assert_eq!(done["provider"], "static");
    let result = &done["result"];
    assert_eq!(result["blob_id"], blob.as_str());
    assert_eq!(result["attempts"][0]["outcome"], "answered");
    let summary = &result["summary"];
    assert!(
        summary["text"]
            .as_str()
            .unwrap()
            .starts_with("Rust file src/config.rs: 54 lines"),
        "{summary}"
    );
    assert_eq!(
        summary["module_doc"],
        "Loads the service configuration from disk."
    );
    let names: Vec<&str> = summary["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "DEFAULT_TIMEOUT",
            "maxRetries",
            "Config",
            "source_kind",
            "load",
            "parseValue"
        ]
    );

    // The same request again is answered from the cache, at once.
    let again = s
        .ask(
            "file-summary",
            &s.owner,
            json!({"path": "src/config.rs", "ref": "main"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.body["cached"], true, "{}", again.text);
    assert_eq!(again.body["status"], "success");
    let cached = s
        .finished(&s.owner, again.body["job_id"].as_str().unwrap())
        .await;
    assert_eq!(cached["result"]["reused_from"], job.as_str());
    assert_eq!(cached["result"]["summary"], done["result"]["summary"]);

    // An unsaved buffer: inline content, edits against exactly that content.
    let buffer = fixture("client.py");
    let accepted = s
        .ask(
            "inline-comment",
            &s.owner,
            json!({"path": "tools/client.py", "content": buffer}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert!(accepted.body["commit"].is_null());
    let done = s
        .finished(&s.owner, accepted.body["job_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "success", "{done}");
    let result = &done["result"];
    assert_eq!(result["language"], "python");
    let diff = result["diff"].as_str().unwrap();
    assert!(
        diff.starts_with("--- a/tools/client.py\n+++ b/tools/client.py\n"),
        "{diff}"
    );
    assert!(diff.contains("+    \"\"\"Load json."), "{diff}");
    let edits = result["edits"].as_array().unwrap();
    assert_eq!(edits.len(), result["comments"].as_array().unwrap().len());
    for edit in edits {
        assert_eq!(edit["start_byte"], edit["end_byte"], "comments only insert");
    }

    // Renames, from the repository at the commit.
    let accepted = s
        .ask(
            "rename-suggestions",
            &s.viewer,
            json!({"path": "src/config.rs", "ref": s.commit}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let done = s
        .finished(&s.viewer, accepted.body["job_id"].as_str().unwrap())
        .await;
    let renames: Vec<(String, String)> = done["result"]["renames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["from"].as_str().unwrap().to_owned(),
                r["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        renames.contains(&("parseValue".into(), "parse_value".into())),
        "{renames:?}"
    );
    assert!(
        renames.contains(&("maxRetries".into(), "MAX_RETRIES".into())),
        "{renames:?}"
    );

    shutdown.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
}

#[tokio::test]
async fn strangers_and_bad_input_get_the_standard_errors() {
    let s = setup(&[("AI_MAX_INPUT_BYTES", "4096")]).await;
    let path = json!({"path": "src/config.rs"});

    // Not a member: the project and its jobs do not exist for them.
    s.ask("file-summary", &s.stranger, path.clone())
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let accepted = s.ask("file-summary", &s.owner, path.clone()).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let job = accepted.body["job_id"].as_str().unwrap();
    s.app
        .get(&format!("/api/v1/ai/result/{job}"), Some(&s.stranger.token))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    s.app
        .get(&format!("/api/v1/ai/result/{job}"), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    s.app
        .get(
            &format!("/api/v1/ai/result/{}", uuid::Uuid::new_v4()),
            Some(&s.owner.token),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // Languages the pipeline does not read, and binary files: 422, listing what is supported.
    for body in [
        json!({"path": "README.md"}),
        json!({"path": "src/blob.rs"}),
        json!({"path": "notes.txt", "content": "plain"}),
        json!({"path": "a.rs", "content": "fn a() {}", "language": "cobol"}),
    ] {
        let answer = s.ask("inline-comment", &s.owner, body.clone()).await;
        let error = answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
        assert!(
            error["details"]["languages"]
                .as_array()
                .is_some_and(|l| l.contains(&json!("typescript"))),
            "{body}: {error}"
        );
    }
    // Too big for AI_MAX_INPUT_BYTES.
    s.ask(
        "file-summary",
        &s.owner,
        json!({"path": "big.py", "content": "x = 1\n".repeat(1000)}),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    // Malformed requests.
    for body in [
        json!({"path": "src/config.rs", "ref": "main", "content": "fn a() {}"}),
        json!({"path": "../etc/passwd"}),
        json!({"path": "src/config.rs", "ref": "--upload-pack=x"}),
        json!({"path": "src/config.rs", "extra": 1}),
        json!({"path": 42}),
    ] {
        s.ask("rename-suggestions", &s.owner, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }
    // A file or ref the project does not have.
    for body in [
        json!({"path": "src/missing.rs"}),
        json!({"path": "src/config.rs", "ref": "no-such-branch"}),
    ] {
        s.ask("file-summary", &s.owner, body)
            .await
            .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}

#[tokio::test]
async fn requests_are_rate_limited_per_user_and_bad_ones_do_not_count() {
    let s = setup(&[("AI_REQUESTS_PER_MINUTE", "2")]).await;
    // Refused requests cost nothing.
    for _ in 0..3 {
        s.ask("file-summary", &s.owner, json!({"path": "README.md"}))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    }
    for _ in 0..2 {
        let answer = s
            .ask("file-summary", &s.owner, json!({"path": "src/config.rs"}))
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }
    let refused = s
        .ask("inline-comment", &s.owner, json!({"path": "src/config.rs"}))
        .await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert!(refused.headers.contains_key("retry-after"));
    // Another user has their own allowance.
    let answer = s
        .ask("file-summary", &s.viewer, json!({"path": "src/config.rs"}))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
}
