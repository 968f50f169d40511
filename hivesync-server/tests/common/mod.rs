//! An in-process HiveSync on the embedded defaults (SQLite and the filesystem in a temporary
//! `DATA_DIR`), driven through poem's `TestClient`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::Arc;

use hivesync_core::config::Config;
use hivesync_server::http::app;
use hivesync_server::state::AppState;
use poem::Response;
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method, StatusCode};
use poem::test::TestClient;
use serde_json::{Value, json};

pub struct TestApp {
    pub client: TestClient<BoxEndpoint<'static, Response>>,
    pub state: Arc<AppState>,
    /// Removed when the app is dropped.
    data_dir: Option<tempfile::TempDir>,
}

/// One answer: status, headers and the JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// Asserts the standard error shape with `code`, and returns the body.
    pub fn assert_error(&self, status: StatusCode, code: &str) -> &Value {
        assert_eq!(self.status, status, "status of {}", self.text);
        assert_eq!(self.body["code"], code, "code of {}", self.text);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message: {}",
            self.text
        );
        assert!(self.body["details"].is_object(), "details: {}", self.text);
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(3),
            "exactly code, message, details: {}",
            self.text
        );
        &self.body
    }
}

/// A registered user and their access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_env(&[]).await
    }

    /// An app whose configuration also has `extra` variables.
    pub async fn with_env(extra: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut vars: HashMap<String, String> = HashMap::from([(
            "DATA_DIR".to_owned(),
            data_dir.path().to_str().unwrap().to_owned(),
        )]);
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
        let state = AppState::open(config).await.unwrap();
        TestApp {
            client: TestClient::new(app(state.clone())),
            state,
            data_dir: Some(data_dir),
        }
    }

    /// An app on a state the caller assembled (its DATA_DIR belongs to the caller).
    pub fn from_state(state: Arc<AppState>) -> Self {
        TestApp {
            client: TestClient::new(app(state.clone())),
            state,
            data_dir: None,
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.state.config.data_dir
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, path.to_owned());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.body_json(&body);
        }
        read(request.send().await).await
    }

    /// Sends `bytes` as the raw body with `content_type`.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, path.to_owned())
            .content_type(content_type)
            .body(bytes);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        read(request.send().await).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Registers a fresh user named `name`.
    pub async fn register(&self, name: &str) -> TestUser {
        let email = format!("{name}-{}@example.org", uuid::Uuid::new_v4().simple());
        let password = format!("pw-{name}-correct-horse");
        let answer = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": password, "display_name": name}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "register: {}",
            answer.text
        );
        TestUser {
            id: answer.body["user"]["id"].as_str().unwrap().to_owned(),
            email,
            password,
            token: answer.body["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a project owned by `owner` and returns its id.
    pub async fn create_project(&self, owner: &TestUser, name: &str) -> String {
        let answer = self
            .post(
                "/api/v1/projects",
                Some(&owner.token),
                json!({"name": name}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "create project: {}",
            answer.text
        );
        answer.body["id"].as_str().unwrap().to_owned()
    }

    /// Adds `user` to `project` with `role`, as `owner`.
    pub async fn add_member(&self, owner: &TestUser, project: &str, user: &TestUser, role: &str) {
        let answer = self
            .post(
                &format!("/api/v1/projects/{project}/members"),
                Some(&owner.token),
                json!({"email": user.email, "role": role}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "add member: {}",
            answer.text
        );
    }
}

pub async fn read(response: poem::test::TestResponse) -> Answer {
    let response = response.0;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().into_bytes().await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
        bytes: bytes.to_vec(),
    }
}
