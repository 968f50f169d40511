//! Secrets never reach the logs. In its own test binary: `tracing`'s per-callsite interest cache is
//! process-wide, so a scoped subscriber only reliably sees every event when no other test runs
//! beside it.

mod common;

use std::sync::{Arc, Mutex};

use common::TestApp;
use hivesync_core::adapters::{InProcessRateLimiter, SqliteStore};
use hivesync_server::state::AppState;
use serde_json::json;

/// A `MakeWriter` that appends everything logged to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_contain_passwords_hashes_or_tokens() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .json()
        .with_current_span(true)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new().await;
    let user = app.register("grace").await;
    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": user.email, "password": user.password}),
        )
        .await;
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    app.get("/api/v1/users/me", Some(&token)).await;
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": user.email, "password": "wrong-guess-123"}),
    )
    .await;
    app.post("/api/v1/projects", Some(&token), json!({"name": 12345}))
        .await;

    // The server-error paths log the full error with its causes: make the database fail and log
    // in again, which reaches the store with the password in hand.
    let broken_store = SqliteStore::connect_sqlite(&format!(
        "sqlite://{}",
        app.data_dir().join("hivesync.db").display()
    ))
    .await
    .unwrap();
    broken_store.close().await;
    let mut backends = app.state.backends();
    backends.store = Arc::new(broken_store);
    backends.rate_limiter = Arc::new(InProcessRateLimiter::new());
    let broken =
        TestApp::from_state(AppState::new(app.state.config.clone(), backends, None).unwrap());
    let failed = broken
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": user.email, "password": user.password}),
        )
        .await;
    failed.assert_error(poem::http::StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    let health = broken.get("/api/v1/health", None).await;
    assert_eq!(health.status, poem::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["components"]["database"]["status"], "down");

    let hash = app
        .state
        .store
        .get_credentials(&hivesync_core::domain::Email::parse(&user.email).unwrap())
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request finished"),
        "the capture works: {logs:.500}"
    );
    assert!(logs.contains("request_id"), "lines carry the request id");
    assert!(
        logs.contains("a backend is unavailable"),
        "the failure was logged with its cause"
    );
    for secret in [
        user.password.as_str(),
        "wrong-guess-123",
        &hash,
        &token,
        &user.token,
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    // Parts of the hash (its salt and digest) must not appear either.
    for part in hash.rsplit('$').take(2) {
        assert!(!logs.contains(part));
    }
}
