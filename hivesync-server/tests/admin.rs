//! The admin API and `/metrics`, through the test client on the embedded defaults.

mod common;

use std::time::Duration;

use common::{TestApp, TestUser};
use hivesync_core::domain::JobState;
use hivesync_core::ports::{Failure, Queue};
use hivesync_queue::jobs::{Submission, submit};
use poem::http::{Method, StatusCode};
use serde_json::json;

async fn admin(app: &TestApp) -> TestUser {
    let user = app.register("admin").await;
    app.state
        .store
        .set_admin(user.id.parse().unwrap(), true)
        .await
        .unwrap();
    user
}

const ADMIN_GETS: [&str; 5] = [
    "/api/v1/admin/workers",
    "/api/v1/admin/queues",
    "/api/v1/admin/jobs",
    "/api/v1/admin/dead-letters",
    "/api/v1/admin/autoscaler",
];

#[tokio::test]
async fn only_admins_reach_the_admin_api() {
    let app = TestApp::new().await;
    let user = app.register("plain").await;
    for path in ADMIN_GETS {
        app.get(path, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        app.get(path, Some(&user.token))
            .await
            .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let id = uuid::Uuid::now_v7();
    for (method, path) in [
        (
            Method::POST,
            format!("/api/v1/admin/dead-letters/{id}/retry"),
        ),
        (Method::DELETE, format!("/api/v1/admin/dead-letters/{id}")),
    ] {
        app.call(method, &path, Some(&user.token), None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let boss = admin(&app).await;
    for path in ADMIN_GETS {
        let answer = app.get(path, Some(&boss.token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
    }
}

#[tokio::test]
async fn queues_jobs_and_dead_letters_can_be_inspected_and_retried() {
    let app = TestApp::new().await;
    let boss = admin(&app).await;
    let token = Some(boss.token.as_str());
    let store = &*app.state.store;
    let queue = &*app.state.queue;
    let ping = submit(
        store,
        queue,
        Submission::new(Queue::SystemEvents, "ping", json!({})),
    )
    .await
    .unwrap();
    let build = submit(
        store,
        queue,
        Submission::new(Queue::PreviewBuild, "preview_build", json!({})),
    )
    .await
    .unwrap();

    let queues = app.get("/api/v1/admin/queues", token).await;
    let system = queues.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "system_events")
        .unwrap()
        .clone();
    assert_eq!(
        (system["ready"].as_u64(), system["running"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(system["records"], json!([{"state": "queued", "count": 1}]));

    // Filters: by queue, by state, by worker type.
    let jobs = app.get("/api/v1/admin/jobs", token).await;
    let ids: Vec<&str> = jobs.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [build.id.to_string(), ping.id.to_string()],
        "newest first"
    );
    let only = app
        .get("/api/v1/admin/jobs?queue=preview_build", token)
        .await;
    assert_eq!(only.body["items"].as_array().unwrap().len(), 1);
    let cpu = app.get("/api/v1/admin/jobs?worker_type=cpu", token).await;
    assert_eq!(cpu.body["items"].as_array().unwrap().len(), 2);
    let gpu = app.get("/api/v1/admin/jobs?worker_type=gpu", token).await;
    assert_eq!(gpu.body["items"], json!([]));
    let failed = app.get("/api/v1/admin/jobs?state=failed", token).await;
    assert_eq!(failed.body["items"], json!([]));
    for bad in ["queue=nope", "state=weird", "worker_type=tpu", "limit=0"] {
        app.get(&format!("/api/v1/admin/jobs?{bad}"), token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }

    // A job fails for good: its record says failed, and it sits in the dead letters.
    let delivery = queue
        .reserve(Queue::PreviewBuild, "test-worker", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store
        .update_job(
            build.id,
            hivesync_core::domain::JobUpdate::failed("PREVIEW_BUILD_FAILED", "syntax error"),
        )
        .await
        .unwrap();
    let failure = Failure {
        retryable: false,
        code: "PREVIEW_BUILD_FAILED".to_owned(),
        message: "syntax error".to_owned(),
        retry_after: Duration::ZERO,
    };
    queue.fail(&delivery.lease, failure).await.unwrap();
    let dead = app.get("/api/v1/admin/dead-letters", token).await;
    assert_eq!(dead.body["items"][0]["job_id"], build.id.to_string());
    assert_eq!(dead.body["items"][0]["error_code"], "PREVIEW_BUILD_FAILED");

    // Retrying puts the record back to queued and the job back on its queue.
    let retried = app
        .post(
            &format!("/api/v1/admin/dead-letters/{}/retry", build.id),
            token,
            json!({}),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(retried.body["state"], "queued");
    assert_eq!(
        store.get_job(build.id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let again = queue
        .reserve(Queue::PreviewBuild, "w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.job_id(), again.attempt), (build.id, 1));
    assert_eq!(
        app.get("/api/v1/admin/dead-letters", token).await.body["items"],
        json!([])
    );

    // Retrying something that is not dead is a conflict; unknown ids are not found.
    app.post(
        &format!("/api/v1/admin/dead-letters/{}/retry", ping.id),
        token,
        json!({}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "CONFLICT");
    app.delete(
        &format!("/api/v1/admin/dead-letters/{}", uuid::Uuid::now_v7()),
        token,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn workers_and_the_autoscaler_are_reported() {
    let app = TestApp::new().await;
    let boss = admin(&app).await;
    let status = hivesync_core::ports::WorkerStatus {
        id: "w-1".to_owned(),
        role: hivesync_core::ports::WorkerRole::Cpu,
        queues: vec![Queue::PreviewBuild],
        hostname: "host".to_owned(),
        pid: 7,
        version: "0".to_owned(),
        concurrency: 2,
        active_jobs: vec![],
        draining: false,
        started_at: chrono::Utc::now(),
        heartbeat_at: chrono::Utc::now() - chrono::Duration::seconds(300),
        heartbeat_interval_ms: 10_000,
    };
    app.state.registry.heartbeat(&status).await.unwrap();
    let workers = app.get("/api/v1/admin/workers", Some(&boss.token)).await;
    assert_eq!(workers.body["items"][0]["id"], "w-1");
    assert_eq!(
        workers.body["items"][0]["state"], "unresponsive",
        "silent for 300 s"
    );
    assert!(
        workers.body["items"][0]["seconds_since_heartbeat"]
            .as_i64()
            .unwrap()
            >= 300
    );

    let autoscaler = app.get("/api/v1/admin/autoscaler", Some(&boss.token)).await;
    assert_eq!(autoscaler.body["enabled"], false, "off by default");
    assert_eq!(
        (
            autoscaler.body["min_workers"].as_u64(),
            autoscaler.body["max_workers"].as_u64()
        ),
        (Some(1), Some(4))
    );
    assert_eq!(autoscaler.body["scaler"], "none");
}

#[tokio::test]
async fn metrics_need_an_admin_or_the_metrics_token_and_export_every_name() {
    let app = TestApp::with_env(&[("METRICS_TOKEN", "metrics-secret-token-0123456789")]).await;
    let user = app.register("viewer").await;
    let boss = admin(&app).await;
    app.get("/metrics", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    app.get("/metrics", Some("wrong-token"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    app.get("/metrics", Some(&user.token))
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");

    submit(
        &*app.state.store,
        &*app.state.queue,
        Submission::new(Queue::AiJobs, "summary", json!({})),
    )
    .await
    .unwrap();
    for token in ["metrics-secret-token-0123456789", boss.token.as_str()] {
        let answer = app.get("/metrics", Some(token)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        for name in [
            "hivesync_queue_depth{queue=\"ai_jobs\"} 1",
            "hivesync_jobs{queue=\"ai_jobs\",state=\"queued\"} 1",
            "hivesync_queue_jobs{queue=\"preview_build\",status=\"dead\"} 0",
            "hivesync_workers{type=\"cpu\",state=\"responsive\"}",
            "hivesync_jobs_total{queue=\"ai_jobs\",outcome=\"success\"}",
            "hivesync_job_duration_seconds_bucket{queue=\"ai_jobs\",le=\"0.005\"}",
            "preview_build_time_seconds_bucket",
            "preview_build_success_total",
            "preview_build_failures_total",
            "preview_upload_failures_total",
            "# HELP hivesync_queue_depth",
        ] {
            assert!(
                answer.text.contains(name),
                "{name} missing from:\n{}",
                answer.text
            );
        }
    }
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let available = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok();
    if !available {
        assert!(
            !testkit_required(),
            "promtool is not installed, and HIVESYNC_REQUIRE_SERVICES=1 requires it (Debian package prometheus)"
        );
        eprintln!(
            "skipping promtool_accepts_the_metrics: promtool is not installed (Debian package prometheus)"
        );
        return;
    }
    let app = TestApp::with_env(&[("METRICS_TOKEN", "metrics-secret-token-0123456789")]).await;
    let answer = app
        .get("/metrics", Some("metrics-secret-token-0123456789"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn testkit_required() -> bool {
    hivesync_core::testkit::services_required()
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let app = TestApp::new().await;
    let page = common::read(app.client.get("/admin").send().await).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.text.contains("/admin/admin.js"));
    assert!(!page.text.contains("<script>"), "no inline script");
    let script = common::read(app.client.get("/admin/admin.js").send().await).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        !script.text.contains("innerHTML"),
        "server data is inserted as text only"
    );
    // The script parses (Node is on every machine that runs these tests; skip where it is not).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.js");
    std::fs::write(&file, &script.text).unwrap();
    match std::process::Command::new("node")
        .arg("--check")
        .arg(&file)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!("node is not installed: the script's syntax was not checked"),
    }
    let style = common::read(app.client.get("/admin/admin.css").send().await).await;
    assert_eq!(style.status, StatusCode::OK);
}

#[tokio::test]
async fn dead_letters_whose_worker_died_can_be_retried_and_purged() {
    let app = TestApp::new().await;
    let boss = admin(&app).await;
    let token = Some(boss.token.as_str());
    let store = &*app.state.store;
    let queue = &*app.state.queue;
    // Two jobs die in the queue while their records still say running: their worker died on the
    // last attempt and nobody recorded the failure yet.
    let mut dead = Vec::new();
    for _ in 0..2 {
        let job = submit(
            store,
            queue,
            Submission::new(Queue::AiJobs, "summary", json!({})),
        )
        .await
        .unwrap();
        let delivery = queue
            .reserve(Queue::AiJobs, "w", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        store
            .update_job(
                job.id,
                hivesync_core::domain::JobUpdate::progress(JobState::Running, 0.2, "working"),
            )
            .await
            .unwrap();
        let failure = Failure {
            retryable: false,
            code: "LEASE_EXPIRED".to_owned(),
            message: "the worker stopped renewing its lease on the last attempt".to_owned(),
            retry_after: Duration::ZERO,
        };
        queue.fail(&delivery.lease, failure).await.unwrap();
        dead.push(job.id);
    }

    let retried = app
        .post(
            &format!("/api/v1/admin/dead-letters/{}/retry", dead[0]),
            token,
            json!({}),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(retried.body["state"], "queued");
    assert!(queue.contains(dead[0]).await.unwrap());

    let purged = app
        .delete(&format!("/api/v1/admin/dead-letters/{}", dead[1]), token)
        .await;
    assert_eq!(purged.status, StatusCode::NO_CONTENT, "{}", purged.text);
    assert!(!queue.contains(dead[1]).await.unwrap());
    let record = store.get_job(dead[1]).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.error_code.as_deref()),
        (JobState::Failed, Some("LEASE_EXPIRED"))
    );
    // Finished records are left alone by the reconciler: the purged job stays gone.
    let mut reconciler = hivesync_queue::jobs::Reconciler::new(
        app.state.store.clone(),
        app.state.queue.clone(),
        app.state.clock.clone(),
    );
    reconciler.grace = Duration::ZERO;
    reconciler.run_once().await.unwrap();
    assert!(!queue.contains(dead[1]).await.unwrap());
    app.delete(&format!("/api/v1/admin/dead-letters/{}", dead[1]), token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}
