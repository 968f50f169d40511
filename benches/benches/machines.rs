//! Several machines: syncs and an identical preview request through an API server whose
//! `DATA_DIR` is empty, on PostgreSQL and an S3-compatible server (`REPO_STORAGE=shared`) —
//! against one server on the embedded defaults (SQLite, the disk), measured in the same run.
//!
//! ```sh
//! DATABASE_URL=postgres://… OBJECT_STORAGE_ENDPOINT=… (the other OBJECT_STORAGE_* as .ci/run
//! exports them) cargo bench -p hivesync-benches --bench machines
//! ```
//! `BENCH_FILES` (default 2000), `BENCH_ROUNDS` (default 7; each delta round on a new server,
//! whose connections are opened by a health check and a `users/me` first, so that the figure is
//! the empty `DATA_DIR`'s and not a new process's),
//! `BENCH_PREVIEW=0` skips the two preview builds.
//!
//! Goals: a one-file delta re-sync through a new server within 1.5× of the single node's; the
//! first build on a new worker downloads the tree at most once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hivesync_benches::{env_number, generate_project, median, ms};
use hivesync_core::client::Client;
use hivesync_core::client::sync::sync_folder;
use hivesync_core::config::Config;
use hivesync_core::domain::Platform;
use hivesync_core::ports::WorkerRole;
use hivesync_core::testkit;
use hivesync_preview::client::{BuildRequest, TokenRequest};
use hivesync_queue::worker::WorkerConfig;
use hivesync_server::state::AppState;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// An API server in this process on a local socket.
struct Node {
    base: String,
    port: u16,
    state: Arc<AppState>,
    data_dir: PathBuf,
    stop: CancellationToken,
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Node {
    async fn start(vars: &HashMap<&'static str, String>, data_dir: PathBuf) -> Node {
        Self::start_at(vars, data_dir, 0).await
    }

    /// A server on `port` (0: any): a new server in place of a stopped one keeps the address a
    /// load balancer would give clients, and so the client's record of its last sync.
    async fn start_at(vars: &HashMap<&'static str, String>, data_dir: PathBuf, port: u16) -> Node {
        let mut vars = vars.clone();
        vars.insert("DATA_DIR", data_dir.display().to_string());
        let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
        let state = AppState::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        let app = hivesync_server::http::app(state.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let serving = tokio::spawn(async move {
            poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, stopped.cancelled_owned(), None)
                .await
        });
        Node {
            base,
            port,
            state,
            data_dir,
            stop,
            serving: Some(serving),
        }
    }

    /// Stops serving and frees the port.
    async fn shut_down(mut self) {
        self.stop.cancel();
        if let Some(serving) = self.serving.take() {
            serving.await.unwrap().unwrap();
        }
    }

    fn client(&self, token: &str) -> Client {
        Client::new(&self.base, Some(token.to_owned())).unwrap()
    }

    /// Opens the connections a running server has (database, object store): what is measured
    /// after this is the empty `DATA_DIR`, not a process's first connections.
    async fn warm_up(&self, token: &str) {
        let client = self.client(token);
        let _: Value = client.get("/health").await.unwrap();
        let _: Value = client.get("/users/me").await.unwrap();
    }

    /// Runs a CPU worker on this node's state until `stop`.
    fn run_worker(&self) {
        let mut worker = WorkerConfig::new(WorkerRole::Cpu, 1);
        worker.poll_interval = Duration::from_millis(100);
        hivesync_server::runtime::spawn_worker(&self.state, worker, &self.stop);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Registers an account and makes two projects: the generated tree and the example app.
async fn account(node: &Node) -> (String, uuid::Uuid, uuid::Uuid) {
    let http = reqwest::Client::new();
    let email = format!("bench-{}@example.com", testkit::unique_suffix());
    let registered: Value = http
        .post(format!("{}/api/v1/auth/register", node.base))
        .json(&json!({"email": email, "password": "benchmark password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let client = node.client(&token);
    let mut projects = Vec::new();
    for name in ["generated", "rn-app"] {
        let project: Value = client
            .post("/projects", &json!({ "name": name }))
            .await
            .unwrap();
        projects.push(project["id"].as_str().unwrap().parse().unwrap());
    }
    (token, projects[0], projects[1])
}

/// One file edited in `folder` for round `round`.
fn edit(folder: &Path, files: usize, round: usize, tag: &str) -> String {
    let dirs = (files / 50).max(1);
    let path = format!(
        "src/feature{}/component{}.js",
        round % dirs,
        (round % dirs) * 50
    );
    std::fs::write(
        folder.join(&path),
        format!("// {tag} round {round}\nexport default {round};\n"),
    )
    .unwrap();
    path
}

/// Builds `project` for Android through `node` and waits; the job id.
async fn build(node: &Node, token: &str, project: uuid::Uuid) -> (uuid::Uuid, Duration, bool) {
    let issued = hivesync_preview::client::issue_token(
        &node.client(token),
        &TokenRequest {
            project_id: project,
            platform: Platform::Android,
            git_ref: None,
        },
    )
    .await
    .unwrap();
    let phone = node.client(&issued.token);
    let started = Instant::now();
    let accepted = hivesync_preview::client::request_build(&phone, &BuildRequest::default())
        .await
        .unwrap();
    let answered = started.elapsed();
    let done = hivesync_preview::client::follow(&phone, accepted.job_id, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, "success", "{:?}", done.error);
    (accepted.job_id, answered, accepted.cached)
}

fn rn_app(scratch: &Path, name: &str) -> PathBuf {
    let folder = scratch.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let example = testkit::examples::example_app("rn-app");
    for entry in std::fs::read_dir(&example).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "node_modules" {
            continue;
        }
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(&folder)
            .status()
            .unwrap();
        assert!(copied.success());
    }
    folder
}

/// Objects in a repository's object database, and in a commit's tree (files, trees, commit).
fn objects_in(repo: &Path) -> usize {
    hivesync_core::repo::count_objects(repo).unwrap()
}

#[tokio::main]
async fn main() {
    let (Ok(admin_url), Ok(_)) = (
        std::env::var("DATABASE_URL"),
        std::env::var("OBJECT_STORAGE_ENDPOINT"),
    ) else {
        println!("skipped: set DATABASE_URL and OBJECT_STORAGE_* (as .ci/run exports them)");
        return;
    };
    let files = env_number("BENCH_FILES", 2000);
    let rounds = env_number("BENCH_ROUNDS", 7);
    let previews = std::env::var("BENCH_PREVIEW").map_or(true, |v| v != "0");
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();

    // The single node: the embedded defaults.
    let embedded = Node::start(&HashMap::new(), root.join("embedded")).await;
    // The shared deployment: a throwaway database, a fresh prefix in the bucket.
    let database = testkit::postgres::TestDatabase::create(&admin_url)
        .await
        .unwrap();
    let suffix = testkit::unique_suffix();
    let mut vars: HashMap<&'static str, String> = HashMap::from([
        ("DATABASE_URL", database.url().to_owned()),
        ("JWT_SECRET", format!("jwt-{suffix}-{}", "x".repeat(32))),
        (
            "PREVIEW_TOKEN_SECRET",
            format!("pt-{suffix}-{}", "y".repeat(32)),
        ),
        ("OBJECT_STORAGE_PREFIX", format!("bench-machines-{suffix}")),
    ]);
    for var in [
        "OBJECT_STORAGE_PROVIDER",
        "OBJECT_STORAGE_ENDPOINT",
        "OBJECT_STORAGE_BUCKET_PREVIEWS",
        "OBJECT_STORAGE_ACCESS_KEY",
        "OBJECT_STORAGE_SECRET_KEY",
        "OBJECT_STORAGE_REGION",
    ] {
        if let Ok(value) = std::env::var(var) {
            vars.insert(var, value);
        }
    }
    let mut nodes = 0;
    let mut fresh_dir = || {
        nodes += 1;
        root.join(format!("node-{nodes}"))
    };
    // The shared deployment's address: each new server takes it over from the last, as servers
    // behind one load balancer share the clients' URL.
    let first = Node::start(&vars, fresh_dir()).await;
    assert!(first.state.repos.is_shared());
    let port = first.port;

    let (e_token, e_project, e_app) = account(&embedded).await;
    let (s_token, s_project, s_app) = account(&first).await;

    // Full syncs of the same generated tree.
    let (e_folder, s_folder) = (root.join("tree-embedded"), root.join("tree-shared"));
    generate_project(&e_folder, files);
    generate_project(&s_folder, files);
    // The client trusts only files whose change time has settled (see the sync bench).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (e_cache, s_cache) = (
        root.join("cache-embedded.json"),
        root.join("cache-shared.json"),
    );
    let time_sync = |client: Client, folder: PathBuf, project, cache: PathBuf| async move {
        let started = Instant::now();
        let report = sync_folder(&client, &folder, project, "main", None, false, &cache)
            .await
            .unwrap();
        (started.elapsed(), report)
    };
    let (e_full, _) = time_sync(
        embedded.client(&e_token),
        e_folder.clone(),
        e_project,
        e_cache.clone(),
    )
    .await;
    let (s_full, report) = time_sync(
        first.client(&s_token),
        s_folder.clone(),
        s_project,
        s_cache.clone(),
    )
    .await;
    println!("project: {} files", report.files);
    println!(
        "RESULT full sync: shared {} vs single node {} ({:.2}x)",
        ms(s_full),
        ms(e_full),
        s_full.as_secs_f64() / e_full.as_secs_f64()
    );

    // One-file delta re-syncs: the single node's, and each through a server started on an
    // empty DATA_DIR (then again through it, warm).
    let (mut e_delta, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    // (scan, upload and commit) of each, from the client's report.
    let (mut e_parts, mut cold_parts) = (Vec::new(), Vec::new());
    let mut front = first;
    for round in 0..rounds {
        let path = edit(&e_folder, files, round, "embedded");
        let (took, report) = time_sync(
            embedded.client(&e_token),
            e_folder.clone(),
            e_project,
            e_cache.clone(),
        )
        .await;
        assert_eq!(report.sent, [path]);
        e_delta.push(took);
        e_parts.push((report.scan_time, report.commit_time));

        front.shut_down().await;
        let node = Node::start_at(&vars, fresh_dir(), port).await;
        node.warm_up(&s_token).await;
        let path = edit(&s_folder, files, round, "cold");
        let (took, report) = time_sync(
            node.client(&s_token),
            s_folder.clone(),
            s_project,
            s_cache.clone(),
        )
        .await;
        assert_eq!(report.sent, [path]);
        cold.push(took);
        cold_parts.push((report.scan_time, report.commit_time));
        let path = edit(&s_folder, files, round + rounds, "warm");
        let (took, report) = time_sync(
            node.client(&s_token),
            s_folder.clone(),
            s_project,
            s_cache.clone(),
        )
        .await;
        assert_eq!(report.sent, [path]);
        warm.push(took);
        front = node;
    }
    let first = front;
    let (e_delta, cold, warm) = (median(e_delta), median(cold), median(warm));
    let parts = |parts: &[(Duration, Duration)]| {
        format!(
            "scan {}, upload+commit {}",
            ms(median(parts.iter().map(|p| p.0).collect())),
            ms(median(parts.iter().map(|p| p.1).collect()))
        )
    };
    println!(
        "  delta parts (medians): single node {}; new server {}",
        parts(&e_parts),
        parts(&cold_parts)
    );
    let ratio = cold.as_secs_f64() / e_delta.as_secs_f64();
    println!(
        "RESULT one-file delta re-sync through a new server: {} median of {rounds}, {ratio:.2}x the single node's {} — goal ≤ 1.5x: {}",
        ms(cold),
        ms(e_delta),
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );
    println!(
        "RESULT one-file delta re-sync through that server again (warm): {}, {:.2}x",
        ms(warm),
        warm.as_secs_f64() / e_delta.as_secs_f64()
    );

    if !previews {
        database.drop_database().await.unwrap();
        return;
    }
    // The example app built once in each deployment: in process on the single node, on a worker
    // node with an empty DATA_DIR in the shared one.
    let e_app_folder = rn_app(root, "rn-embedded");
    let s_app_folder = rn_app(root, "rn-shared");
    let apps_cache = root.join("cache-apps.json");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    embedded.run_worker();
    let worker = Node::start(&vars, fresh_dir()).await;
    worker.run_worker();
    let e_sync = sync_folder(
        &embedded.client(&e_token),
        &e_app_folder,
        e_app,
        "main",
        None,
        false,
        &apps_cache,
    )
    .await
    .unwrap();
    let s_sync = sync_folder(
        &first.client(&s_token),
        &s_app_folder,
        s_app,
        "main",
        None,
        false,
        &apps_cache,
    )
    .await
    .unwrap();
    let (_, _, cached) = build(&embedded, &e_token, e_app).await;
    assert!(!cached);
    let (_, _, cached) = build(&first, &s_token, s_app).await;
    assert!(!cached);
    // What the worker fetched: the commit, its trees and its files, each once.
    let fetched = objects_in(&worker.data_dir.join("repos").join(s_app.to_string()));
    let tree_objects = {
        let repo = embedded.data_dir.join("repos").join(e_app.to_string());
        objects_in(&repo)
    };
    println!(
        "RESULT first build on a new worker: fetched {fetched} repository objects; the commit, its trees and files are {tree_objects} (the single node's repository after one sync): {}",
        if fetched <= tree_objects {
            "at most one download of the tree"
        } else {
            "MORE than one download"
        }
    );
    assert_eq!(e_sync.files, s_sync.files);

    // An identical request: the single node's answer, and through servers on empty DATA_DIRs.
    let (mut e_same, mut s_same) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (_, answered, cached) = build(&embedded, &e_token, e_app).await;
        assert!(cached);
        e_same.push(answered);
        let node = Node::start(&vars, fresh_dir()).await;
        node.warm_up(&s_token).await;
        let (_, answered, cached) = build(&node, &s_token, s_app).await;
        assert!(cached);
        s_same.push(answered);
    }
    let (e_same, s_same) = (median(e_same), median(s_same));
    println!(
        "RESULT identical preview request through a new server: {} median of {rounds}, {:.2}x the single node's {}",
        ms(s_same),
        s_same.as_secs_f64() / e_same.as_secs_f64(),
        ms(e_same)
    );
    drop(worker);
    database.drop_database().await.unwrap();
}
