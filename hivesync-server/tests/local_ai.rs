//! The local model through real `hivesync` processes: GPU routing (a `worker --role gpu` takes
//! the tagged job, a CPU worker never does), a GPU worker that cannot run the model refusing to
//! start, and the real SmolLM2-135M-Instruct answering a summary through the API and a worker.

#![cfg(feature = "local-ai")]

#[path = "common/binary.rs"]
mod binary;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use binary::{BINARY, Server, send};
use serde_json::{Value, json};

/// The tiny model's context: a file of a few hundred lines does not fit it whole.
const TINY_CONTEXT: u32 = 1024;

struct Deployment {
    /// Removed when the test ends.
    _data: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Deployment {
    fn new(model: &Path, extra: &[(&'static str, &str)]) -> Deployment {
        let data = tempfile::tempdir().unwrap();
        let mut env = vec![
            ("DATA_DIR", data.path().display().to_string()),
            ("LOCAL_AI_ENABLED", "true".to_owned()),
            ("LOCAL_AI_MODEL_PATH", model.display().to_string()),
            // Two busy cores: candle's own thread pool only oversubscribes them.
            ("RAYON_NUM_THREADS", "1".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Deployment { _data: data, env }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_LEVEL", "warn");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Starts `hivesync worker --role <role>` and waits for the line saying it started.
    fn worker(&self, role: &str) -> (Child, String) {
        let mut child = self
            .command(&["worker", "--role", role])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Keep reading, so that a later line never meets a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let id = line
            .strip_prefix("hivesync worker ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (child, id)
    }
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Client {
    http: reqwest::Client,
    server: Server,
    token: String,
    project: String,
}

impl Client {
    async fn new(server: Server) -> Client {
        let http = reqwest::Client::new();
        let (status, body) =
            send(http.post(server.url("/api/v1/auth/register")).json(
                &json!({"email": "local-ai@example.org", "password": "a long enough password"}),
            ))
            .await;
        assert_eq!(status, 201, "{body}");
        let token = body["access_token"].as_str().unwrap().to_owned();
        let (status, body) = send(
            http.post(server.url("/api/v1/projects"))
                .bearer_auth(&token)
                .json(&json!({"name": "local"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let project = body["id"].as_str().unwrap().to_owned();
        Client {
            http,
            server,
            token,
            project,
        }
    }

    async fn ask(&self, task: &str, path: &str, content: &str) -> String {
        let (status, body) = send(
            self.http
                .post(self.server.url(&format!("/api/v1/ai/{task}")))
                .bearer_auth(&self.token)
                .json(&json!({"project_id": self.project, "path": path, "content": content})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    async fn result(&self, job: &str) -> Value {
        let (status, body) = send(
            self.http
                .get(self.server.url(&format!("/api/v1/ai/result/{job}")))
                .bearer_auth(&self.token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn finished(&self, job: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let body = self.result(job).await;
            if ["success", "failed", "cancelled"].contains(&body["state"].as_str().unwrap()) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn long_python_file() -> String {
    (0..150)
        .map(|i| format!("def step_{i}(value):\n    return value + {i}\n\n"))
        .collect()
}

#[tokio::test]
async fn local_model_jobs_go_to_the_gpu_worker_and_cpu_workers_never_take_them() {
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("tiny.gguf");
    hivesync_ai::providers::local::fixture::write_tiny_model(&model, TINY_CONTEXT).unwrap();
    // No machine here has CUDA: the GPU worker is allowed to run the model on its CPU.
    let deployment = Deployment::new(
        &model,
        &[
            ("LOCAL_AI_DEVICE", "gpu"),
            ("LOCAL_AI_CPU_FALLBACK", "true"),
            ("LOCAL_AI_MAX_NEW_TOKENS", "16"),
        ],
    );
    let server = Server::start_with(&["--no-workers"], &deployment.env);
    let client = Client::new(server).await;

    // A summary: the local model takes it, so it is tagged for a GPU worker.
    let summary = client
        .ask(
            "file-summary",
            "geo.py",
            "import math\n\ndef area(radius):\n    return math.pi * radius ** 2\n",
        )
        .await;
    let queued = client.result(&summary).await;
    assert_eq!(queued["queue"], "gpu_ai_jobs", "{queued}");
    assert_eq!(queued["state"], "queued");
    // Comments on a file too long for the model's context: not for the model, so for CPU workers.
    let comments = client
        .ask("inline-comment", "steps.py", &long_python_file())
        .await;
    assert_eq!(client.result(&comments).await["queue"], "ai_jobs");

    // A CPU worker answers its own job and leaves the tagged one alone.
    let (cpu, cpu_id) = deployment.worker("cpu");
    let _cpu = Stop(cpu);
    let done = client.finished(&comments, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["result"]["worker"], cpu_id.as_str());
    assert_eq!(done["provider"], "static");
    let local = &done["result"]["attempts"][0];
    assert_eq!(local["provider"], "local");
    assert_eq!(local["outcome"], "skipped", "{done}");
    let still = client.result(&summary).await;
    assert_eq!(
        still["state"], "queued",
        "a CPU worker took a GPU job: {still}"
    );

    // The GPU worker takes it and runs the model (the tiny model writes noise, which the chain
    // refuses and answers from the static analyser).
    let (gpu, gpu_id) = deployment.worker("gpu");
    let _gpu = Stop(gpu);
    let done = client.finished(&summary, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["queue"], "gpu_ai_jobs");
    assert_eq!(done["result"]["worker"], gpu_id.as_str(), "{done}");
    let local = &done["result"]["attempts"][0];
    assert_eq!(local["provider"], "local");
    assert_eq!(local["outcome"], "failed", "{done}");
    assert!(
        local["reason"].as_str().unwrap().contains("summary"),
        "the model ran and its noise was refused: {done}"
    );
    assert!(
        local["model"].as_str().unwrap().starts_with("tiny@"),
        "{done}"
    );
    assert_eq!(done["provider"], "static");
}

#[test]
fn workers_that_cannot_run_gpu_jobs_refuse_to_start() {
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("tiny.gguf");
    hivesync_ai::providers::local::fixture::write_tiny_model(&model, TINY_CONTEXT).unwrap();
    let refused = |deployment: &Deployment, args: &[&str], says: &[&str]| {
        let out = deployment.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        for words in says {
            assert!(stderr.contains(words), "{args:?}: {stderr}");
        }
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("started"),
            "it says so at start, it does not run"
        );
    };
    // A GPU worker where the model runs on CPU workers would have nothing to take.
    let on_cpu = Deployment::new(&model, &[("LOCAL_AI_DEVICE", "cpu")]);
    refused(&on_cpu, &["worker", "--role", "gpu"], &["LOCAL_AI_DEVICE"]);
    // A CPU worker told to consume the GPU queue would answer its jobs without the model.
    let on_gpu = Deployment::new(&model, &[("LOCAL_AI_DEVICE", "gpu")]);
    refused(
        &on_gpu,
        &["worker", "--role", "cpu", "--queues", "ai_jobs,gpu_ai_jobs"],
        &["gpu_ai_jobs", "--role gpu"],
    );
    // A GPU worker without CUDA, unless allowed the CPU.
    if !candle_core::utils::cuda_is_available() {
        refused(
            &on_gpu,
            &["worker", "--role", "gpu"],
            &["CUDA", "LOCAL_AI_CPU_FALLBACK"],
        );
    }
}

/// The real model (`.ci/fetch-model` puts it in a cache and `.ci/run` exports its path): one
/// summary through the API and the worker of `hivesync serve` on the embedded defaults.
#[tokio::test]
async fn smollm2_writes_a_summary_through_the_api_and_a_worker() {
    let test = "smollm2_writes_a_summary_through_the_api_and_a_worker";
    let Some(model) = hivesync_core::testkit::service_env("HIVESYNC_LOCAL_MODEL", test) else {
        return;
    };
    let deployment = Deployment::new(
        Path::new(&model),
        &[
            ("LOCAL_AI_MAX_NEW_TOKENS", "96"),
            // Weights dequantised at load: 3–6× faster on these CPUs (ai-models note).
            ("CANDLE_DEQUANTIZE_ALL", "1"),
        ],
    );
    let server = Server::start(&deployment.env);
    let client = Client::new(server).await;
    let source = "\"\"\"Shapes and their areas.\"\"\"\n\nimport math\n\n\nclass Circle:\n    def __init__(self, radius):\n        self.radius = radius\n\n    def area(self):\n        return math.pi * self.radius ** 2\n\n\ndef total_area(shapes):\n    return sum(shape.area() for shape in shapes)\n";
    let job = client.ask("file-summary", "shapes.py", source).await;
    let done = client.finished(&job, Duration::from_secs(600)).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["queue"], "ai_jobs");
    assert_eq!(done["provider"], "local", "{done}");
    let result = &done["result"];
    assert!(
        result["model"]
            .as_str()
            .unwrap()
            .starts_with("SmolLM2-135M-Instruct.Q4_1@b179c9523d0e"),
        "{result}"
    );
    assert_eq!(result["attempts"][0]["outcome"], "answered");
    let tokens = result["tokens_generated"].as_u64().unwrap();
    assert!((1..=96).contains(&tokens), "{result}");
    let text = result["summary"]["text"].as_str().unwrap();
    assert!(text.split_whitespace().count() >= 3, "{text:?}");
    // The prose is the model's; the facts are the parse's.
    let symbols: Vec<&str> = result["summary"]["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["Circle", "total_area"], "{result}");
    assert_eq!(result["summary"]["module_doc"], "Shapes and their areas.");
    eprintln!("SmolLM2 said ({tokens} tokens): {text}");
}

/// A worker whose chain does not run the model on a GPU (here a CPU worker a library user
/// pointed at `gpu_ai_jobs`) gives a GPU job back rather than answering it without the model.
#[tokio::test]
async fn a_gpu_job_is_never_answered_without_the_model_it_was_routed_for() {
    use hivesync_core::domain::{Email, JobState, NewProject, NewUser};
    use hivesync_core::ports::{AiTask, Queue, WorkerRole};
    use hivesync_queue::worker::WorkerConfig;

    let data = tempfile::tempdir().unwrap();
    let model = data.path().join("tiny.gguf");
    hivesync_ai::providers::local::fixture::write_tiny_model(&model, TINY_CONTEXT).unwrap();
    let vars = std::collections::HashMap::from([
        ("DATA_DIR", data.path().join("data").display().to_string()),
        ("LOG_LEVEL", "warn".to_owned()),
        ("LOCAL_AI_ENABLED", "true".to_owned()),
        ("LOCAL_AI_MODEL_PATH", model.display().to_string()),
        ("LOCAL_AI_DEVICE", "gpu".to_owned()),
    ]);
    let config =
        hivesync_core::config::Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let state = hivesync_server::state::AppState::open(config)
        .await
        .unwrap();
    let user = state
        .store
        .create_user(NewUser {
            email: Email::parse("gpu@example.org").unwrap(),
            display_name: "gpu".into(),
            password_hash: "x".into(),
        })
        .await
        .unwrap();
    let project = state
        .store
        .create_project(NewProject {
            name: "gpu".into(),
            description: String::new(),
            owner: user.id,
        })
        .await
        .unwrap();
    let taken = state
        .ai
        .take(hivesync_ai::AiOrder {
            task: AiTask::FileSummary,
            project_id: project.id,
            user_id: user.id,
            path: "geo.py".into(),
            language: None,
            commit: None,
            content: b"def area(r):\n    return 3.14 * r * r\n".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(taken.job.queue, "gpu_ai_jobs");

    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut worker = WorkerConfig::new(WorkerRole::Cpu, 1);
    worker.queues = vec![Queue::GpuAiJobs];
    worker.poll_interval = Duration::from_millis(20);
    let _worker = hivesync_server::runtime::spawn_worker(&state, worker, &shutdown);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = state.store.get_job(taken.job.id).await.unwrap().unwrap();
        if job.error_code.is_some() || job.state == JobState::Success {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "untouched: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    assert_ne!(
        job.state,
        JobState::Success,
        "answered without the model: {job:?}"
    );
    assert!(job.result.is_none(), "{job:?}");
    assert!(
        job.error_message
            .as_deref()
            .unwrap_or("")
            .contains("--role gpu"),
        "{job:?}"
    );
}
