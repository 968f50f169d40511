//! The whole server in process on the embedded defaults, with one CPU worker and a user who owns
//! one project: what the request benchmarks drive through poem's endpoint (no socket).

use std::sync::Arc;
use std::time::Duration;

use hivesync_core::config::Config;
use hivesync_core::domain::{Email, NewProject, NewUser, ProjectId};
use hivesync_core::ports::WorkerRole;
use hivesync_queue::worker::WorkerConfig;
use hivesync_server::state::AppState;
use poem::Endpoint;
use poem::http::Method;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

pub struct InProcess {
    pub runtime: Runtime,
    pub state: Arc<AppState>,
    pub app: poem::endpoint::BoxEndpoint<'static, poem::Response>,
    /// A bearer token of the project's owner.
    pub token: String,
    pub project: ProjectId,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    /// Opens a fresh `DATA_DIR` with `vars` as the rest of the environment, and starts one CPU
    /// worker polling every 20 ms.
    pub fn start(vars: &[(&str, String)]) -> InProcess {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().display().to_string();
        let lookup = |name: &str| match name {
            "DATA_DIR" => Some(data_dir.clone()),
            "LOG_LEVEL" => Some("warn".to_owned()),
            _ => vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone()),
        };
        let config = Config::from_lookup(lookup).unwrap();
        let runtime = Runtime::new().unwrap();
        let state = runtime.block_on(AppState::open(config)).unwrap();
        let shutdown = CancellationToken::new();
        let mut worker = WorkerConfig::new(WorkerRole::Cpu, 1);
        worker.poll_interval = Duration::from_millis(20);
        {
            let _guard = runtime.enter();
            hivesync_server::runtime::spawn_worker(&state, worker, &shutdown);
        }
        let app = hivesync_server::http::app(state.clone());
        let (token, project) = runtime.block_on(async {
            let user = state
                .store
                .create_user(NewUser {
                    email: Email::parse("bench@example.com").unwrap(),
                    display_name: "bench".into(),
                    password_hash: "x".into(),
                })
                .await
                .unwrap();
            let project = state
                .store
                .create_project(NewProject {
                    name: "bench".into(),
                    description: String::new(),
                    owner: user.id,
                })
                .await
                .unwrap();
            let token = state
                .jwt
                .issue(user.id, chrono::Utc::now().timestamp())
                .unwrap();
            (token, project.id)
        });
        InProcess {
            runtime,
            state,
            app,
            token,
            project,
            shutdown,
            _data: data,
        }
    }

    /// One request as the owner; the status and the body.
    pub fn call<'a>(
        &'a self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> impl Future<Output = (u16, Vec<u8>)> + use<'a> {
        let mut request = poem::Request::builder()
            .method(method)
            .uri(path.parse().unwrap())
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(body.unwrap_or_default());
        async move {
            let response = self.app.get_response(request).await;
            let status = response.status().as_u16();
            let bytes = response.into_body().into_vec().await.unwrap();
            (status, bytes)
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
