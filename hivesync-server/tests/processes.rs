//! Real `hivesync` processes: workers killed with SIGKILL mid-job, graceful stops, `queue ping`,
//! `health`, `admin grant`, `cleanup --dry-run`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hivesync_core::adapters::SqliteStore;
use hivesync_core::clock::system_clock;
use hivesync_core::domain::{Email, Job, JobId, JobState, NewUser};
use hivesync_core::ports::{JobQueue, Queue, Store};
use hivesync_core::testkit;
use hivesync_queue::jobs::{Submission, submit};
use hivesync_queue::{RedisBackend, SqliteBackend};

const BINARY: &str = env!("CARGO_BIN_EXE_hivesync");

/// A `DATA_DIR` (SQLite records) and, optionally, a Redis namespace for the queue.
struct Deployment {
    data: tempfile::TempDir,
    redis: Option<(String, String)>,
}

impl Deployment {
    fn embedded() -> Self {
        Deployment {
            data: tempfile::tempdir().unwrap(),
            redis: None,
        }
    }

    fn with_redis(url: String) -> Self {
        Deployment {
            data: tempfile::tempdir().unwrap(),
            redis: Some((url, format!("hivesync-test:{}:", testkit::unique_suffix()))),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", self.data.path())
            .env("LOG_LEVEL", "warn");
        if let Some((url, prefix)) = &self.redis {
            command
                .env("REDIS_URL", url)
                .env("REDIS_KEY_PREFIX", prefix);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts `hivesync worker` (with a 1 s lease unless `extra` sets one) and waits until it
    /// says it started; returns it and its id.
    fn worker(&self, extra: &[&str]) -> (Child, String) {
        self.start_worker(self.command(&[]), extra)
    }

    fn start_worker(&self, mut command: Command, extra: &[&str]) -> (Child, String) {
        let mut args = vec!["worker", "--role", "cpu"];
        if !extra.contains(&"--lease-seconds") {
            args.extend(["--lease-seconds", "1"]);
        }
        args.extend_from_slice(extra);
        let mut child = command.args(&args).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let id = line
            .strip_prefix("hivesync worker ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (child, id)
    }

    /// The store and queue, as the processes see them.
    async fn backends(&self) -> (Arc<dyn Store>, Arc<dyn JobQueue>) {
        // `migrate` prepares the schema exactly as the processes will find it.
        assert!(self.run(&["migrate"]).status.success());
        let url = format!(
            "sqlite://{}",
            self.data.path().join("hivesync.db").display()
        );
        let store = SqliteStore::connect_sqlite(&url).await.unwrap();
        let queue: Arc<dyn JobQueue> = match &self.redis {
            Some((url, prefix)) => Arc::new(
                RedisBackend::connect(url, prefix, system_clock())
                    .await
                    .unwrap(),
            ),
            None => Arc::new(SqliteBackend::new(store.pool().clone(), system_clock())),
        };
        (Arc::new(store), queue)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some((url, prefix)) = self.redis.take() {
            // Best effort: remove this test's keys.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    if let Ok(redis) = RedisBackend::connect(&url, &prefix, system_clock()).await {
                        let _ = redis.clear_namespace().await;
                    }
                })
            })
            .join();
        }
    }
}

fn signal(child: &Child, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits, with a deadline, until the job's record satisfies `done`.
async fn wait_for(store: &dyn Store, id: JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = store.get_job(id).await.unwrap().unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A worker killed with SIGKILL mid-job: its lease expires, another worker takes the job, and
/// the job completes exactly once.
async fn killed_worker_job_completes_once_elsewhere(deployment: Deployment) {
    let (store, queue) = deployment.backends().await;
    let (mut doomed, doomed_id) = deployment.worker(&[]);
    let job = submit(
        &*store,
        &*queue,
        Submission::new(
            Queue::SystemEvents,
            "ping",
            serde_json::json!({"hold_ms": 3000}),
        ),
    )
    .await
    .unwrap();
    wait_for(&*store, job.id, "the first worker to start the job", |j| {
        j.state == JobState::Running
    })
    .await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    let (mut survivor, survivor_id) = deployment.worker(&[]);
    let done = wait_for(&*store, job.id, "the job to finish", |j| {
        j.state.is_terminal()
    })
    .await;
    assert_eq!(done.state, JobState::Success);
    let result = done.result.unwrap();
    assert_eq!(
        result["worker"],
        survivor_id.as_str(),
        "finished by the survivor, not {doomed_id}"
    );
    assert_eq!(
        result["attempt"], 2,
        "the killed delivery counted as an attempt"
    );
    assert_eq!(done.attempts, 2);
    // Acknowledged: nothing left to deliver.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.contains(job.id).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    signal(&survivor, "-TERM");
    assert!(survivor.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_on_the_embedded_queue() {
    killed_worker_job_completes_once_elsewhere(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_on_redis() {
    let Some(url) = testkit::service_env("REDIS_URL", "sigkill_mid_job_on_redis") else {
        return;
    };
    killed_worker_job_completes_once_elsewhere(Deployment::with_redis(url)).await;
}

/// Submits a ping job that holds for `hold_ms`.
async fn ping(store: &dyn Store, queue: &dyn JobQueue, hold_ms: u64) -> JobId {
    submit(
        store,
        queue,
        Submission::new(
            Queue::SystemEvents,
            "ping",
            serde_json::json!({"hold_ms": hold_ms}),
        ),
    )
    .await
    .unwrap()
    .id
}

/// A worker killed mid-job whose job comes back long before its 60 s lease could run out, and
/// ahead of the jobs queued behind it: `restart` brings the replacement up (and says who it is).
/// The backlog's `backlog_len` jobs hold `backlog_hold_ms` each; with `replacement_waits`, the replacement has
/// nothing else to do until it gets the job back, so every backlog job must start after it.
async fn a_killed_workers_job_comes_back_at_once_and_first(
    deployment: &Deployment,
    doomed_args: &[&str],
    backlog_len: usize,
    backlog_hold_ms: u64,
    replacement_waits: bool,
    restart: impl FnOnce() -> (Child, String),
) {
    let (store, queue) = deployment.backends().await;
    let (mut doomed, doomed_id) = deployment.worker(doomed_args);
    // Long enough that it is still running when the worker is killed, on a loaded machine too.
    let crashed = ping(&*store, &*queue, 5000).await;
    wait_for(
        &*store,
        crashed,
        "the doomed worker to start the job",
        |j| j.state == JobState::Running,
    )
    .await;
    let mut backlog = Vec::new();
    for _ in 0..backlog_len {
        backlog.push(ping(&*store, &*queue, backlog_hold_ms).await);
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    let (mut replacement, replacement_id) = restart();
    // The deadline (30 s) is half the lease: only a take-back, not an expiry, gets here.
    let done = wait_for(&*store, crashed, "the crashed job to finish", |j| {
        j.state.is_terminal()
    })
    .await;
    assert_eq!(done.state, JobState::Success);
    assert_eq!(
        done.attempts, 2,
        "the killed delivery counted as an attempt"
    );
    assert_eq!(
        done.result.as_ref().unwrap()["worker"],
        replacement_id.as_str(),
        "not finished by {doomed_id}"
    );
    let finished = done.finished_at.unwrap();
    let mut started_after = 0;
    for &id in &backlog {
        let later = wait_for(&*store, id, "the backlog to finish", |j| {
            j.state.is_terminal()
        })
        .await;
        if later.started_at.unwrap() >= finished {
            started_after += 1;
        }
    }
    if replacement_waits {
        assert_eq!(
            started_after,
            backlog.len(),
            "the job taken back ran before every job queued after it"
        );
    } else {
        assert!(
            started_after > 0,
            "the job taken back went to the front, not behind the whole backlog"
        );
    }
    signal(&replacement, "-TERM");
    assert!(replacement.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_its_id_takes_back_its_jobs_at_once() {
    let deployment = Deployment::embedded();
    // Heartbeats a minute apart: the registry would not call it gone within the test's deadline.
    let steady = [
        "--id",
        "steady-worker",
        "--heartbeat-ms",
        "60000",
        "--lease-seconds",
        "60",
        "--concurrency",
        "1",
    ];
    a_killed_workers_job_comes_back_at_once_and_first(&deployment, &steady, 5, 200, true, || {
        deployment.worker(&steady)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_heartbeats_stop_has_its_jobs_taken_back() {
    let Some(url) = testkit::service_env(
        "REDIS_URL",
        "a_worker_whose_heartbeats_stop_has_its_jobs_taken_back",
    ) else {
        return;
    };
    let deployment = Deployment::with_redis(url);
    let doomed = [
        "--heartbeat-ms",
        "300",
        "--lease-seconds",
        "60",
        "--concurrency",
        "1",
    ];
    // A new worker under a new id: only the registry can tell it the old one is gone.
    // The replacement runs the backlog until its sweeper has watched the old worker miss three
    // heartbeats (3 s at least, after the dead worker's hold on the sweeper lock runs out): a
    // backlog of 20 s leaves jobs to run after the one taken back, which goes to the front.
    a_killed_workers_job_comes_back_at_once_and_first(
        &deployment,
        &doomed,
        10,
        2000,
        false,
        || deployment.worker(&["--lease-seconds", "60", "--concurrency", "1"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_a_running_job_back_and_the_next_worker_finishes_it() {
    let deployment = Deployment::embedded();
    let (store, queue) = deployment.backends().await;
    // The job holds for 2 s, well within the 30 s grace period: the stopping worker finishes it.
    let (mut worker, worker_id) = deployment.worker(&[]);
    let job = submit(
        &*store,
        &*queue,
        Submission::new(
            Queue::SystemEvents,
            "ping",
            serde_json::json!({"hold_ms": 2000}),
        ),
    )
    .await
    .unwrap();
    wait_for(&*store, job.id, "the job to start", |j| {
        j.state == JobState::Running
    })
    .await;
    signal(&worker, "-TERM");
    let status = worker.wait().unwrap();
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    // The running job finished within the grace period rather than being dropped.
    let done = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Success);
    assert_eq!(done.result.unwrap()["worker"], worker_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_gives_the_job_back_to_its_queue() {
    let deployment = Deployment::embedded();
    let (store, queue) = deployment.backends().await;
    let (mut stopping, _) = deployment.worker(&["--grace-seconds", "1"]);
    let job = submit(
        &*store,
        &*queue,
        Submission::new(
            Queue::SystemEvents,
            "ping",
            serde_json::json!({"hold_ms": 60_000}),
        ),
    )
    .await
    .unwrap();
    wait_for(&*store, job.id, "the job to start", |j| {
        j.state == JobState::Running
    })
    .await;
    signal(&stopping, "-TERM");
    assert!(
        stopping.wait().unwrap().success(),
        "a graceful stop exits 0"
    );
    let released = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        released.state,
        JobState::Queued,
        "the record says queued again"
    );
    assert_eq!(released.phase.as_deref(), Some("released at shutdown"));
    assert!(
        queue.contains(job.id).await.unwrap(),
        "back in the queue, not lost"
    );

    // Delivered again, the interrupted delivery does not count as an attempt.
    let again = queue
        .reserve(Queue::SystemEvents, "inspector", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("deliverable again");
    assert_eq!((again.job_id(), again.attempt), (job.id, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ping_round_trips_through_an_embedded_server() {
    let deployment = Deployment::embedded();
    let mut server = deployment
        .command(&["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("hivesync listening on"), "{line}");

    let output = deployment.run(&["queue", "ping", "--timeout", "30"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ping failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("pong from "), "{stdout}");
    assert!(stdout.contains(" ms (job "), "{stdout}");

    // `health` sees the in-process workers and every component up.
    let output = deployment.run(&["health", "-json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["components"]["database"]["status"], "up");
    assert_eq!(report["components"]["workers"]["status"], "up");
    let roles: Vec<&str> = report["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["role"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"cpu") && roles.contains(&"cleanup"),
        "{roles:?}"
    );
    let text = deployment.run(&["health"]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("database"));

    signal(&server, "-TERM");
    assert!(server.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ping_without_a_worker_fails_and_leaves_nothing_behind() {
    let deployment = Deployment::embedded();
    let (store, queue) = deployment.backends().await;
    let output = deployment.run(&["queue", "ping", "--timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no worker answered"));
    let jobs = store
        .list_jobs(&Default::default(), hivesync_core::domain::Page::first(10))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Cancelled);
    assert!(!queue.contains(jobs[0].id).await.unwrap());
}

#[test]
fn health_exits_non_zero_when_the_database_is_down() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["health", "--json"])
        .env_clear()
        .env("DATA_DIR", data.path())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("JWT_SECRET", "x".repeat(40))
        .env("PREVIEW_TOKEN_SECRET", "y".repeat(40))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"], "down");
}

#[test]
fn health_on_the_embedded_defaults_generates_no_secret() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BINARY)
            .args(args)
            .env_clear()
            .env("DATA_DIR", data.path())
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    let output = run(&["health", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_ne!(report["status"], "down", "{report}");
    assert!(
        !data.path().join("secrets").exists(),
        "only a command that signs tokens generates their keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_grant_and_revoke() {
    let deployment = Deployment::embedded();
    let (store, _) = deployment.backends().await;
    let email = Email::parse("ops@example.org").unwrap();
    let user = store
        .create_user(NewUser {
            email: email.clone(),
            display_name: "ops".to_owned(),
            password_hash: "x".to_owned(),
        })
        .await
        .unwrap();
    let granted = deployment.run(&["admin", "grant", "OPS@example.org"]);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert!(store.get_user(user.id).await.unwrap().unwrap().is_admin);
    assert!(
        deployment
            .run(&["admin", "revoke", "ops@example.org"])
            .status
            .success()
    );
    assert!(!store.get_user(user.id).await.unwrap().unwrap().is_admin);
    let unknown = deployment.run(&["admin", "grant", "nobody@example.org"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account"));
}

fn make_old(path: &Path) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(30 * 86_400))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_dry_run_lists_without_deleting() {
    let deployment = Deployment::embedded();
    deployment.backends().await;
    let stale = deployment.data.path().join("tmp/stale-build");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("file"), b"x").unwrap();
    make_old(&stale);
    let dry = deployment.run(&["cleanup", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{out}");
    assert!(
        out.contains("would remove") && out.contains("stale-build"),
        "{out}"
    );
    assert!(stale.exists(), "a dry run deletes nothing");
    let real = deployment.run(&["cleanup"]);
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stdout)
    );
    assert!(!stale.exists());
}

/// A TCP relay to PostgreSQL that the test can cut: while cut, the relayed connections are
/// closed and new ones are accepted and closed at once — the database as a worker meets it in an
/// outage (a restart, a failover behind a proxy).
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    relayed: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let relayed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let (cut, relayed) = (cut.clone(), relayed.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    relayed.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Relay {
            addr,
            cut,
            relayed,
            accepting,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.relayed.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

/// The database goes away while a worker runs a job and while it takes another: the finished job
/// is recorded once the database is back (it does not run again), the other runs once, and the
/// worker waits with backoff instead of handing the job back and forth in a busy loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_neither_reruns_a_finished_job_nor_spins() {
    const TEST: &str = "a_database_outage_neither_reruns_a_finished_job_nor_spins";
    let Some(admin_url) = testkit::service_env("DATABASE_URL", TEST) else {
        return;
    };
    let Some(redis_url) = testkit::service_env("REDIS_URL", TEST) else {
        return;
    };
    let database = testkit::postgres::TestDatabase::create(&admin_url)
        .await
        .unwrap();
    let deployment = Deployment::with_redis(redis_url);
    // Records in PostgreSQL, as in production (which then needs its own signing secret).
    let on_postgres = |args: &[&str], url: &str| {
        let mut command = deployment.command(args);
        command
            .env("DATABASE_URL", url)
            .env(
                "JWT_SECRET",
                "jwt-test-secret-that-is-long-enough-0123456789",
            )
            .env(
                "PREVIEW_TOKEN_SECRET",
                "preview-test-secret-that-is-long-enough-0123456789",
            );
        command
    };
    let migrated = on_postgres(&["migrate"], database.url()).output().unwrap();
    assert!(migrated.status.success(), "{migrated:?}");

    let direct = reqwest::Url::parse(database.url()).unwrap();
    let upstream = format!(
        "{}:{}",
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    let mut relayed = direct.clone();
    relayed.set_port(Some(relay.addr.port())).unwrap();
    relayed.set_host(Some("127.0.0.1")).unwrap();

    let store: Arc<dyn Store> = Arc::new(
        hivesync_core::adapters::PostgresStore::connect_postgres(database.url(), 4)
            .await
            .unwrap(),
    );
    let (url, prefix) = deployment.redis.clone().unwrap();
    let queue: Arc<dyn JobQueue> = Arc::new(
        RedisBackend::connect(&url, &prefix, system_clock())
            .await
            .unwrap(),
    );
    let mut command = on_postgres(&[], relayed.as_str());
    command.stderr(Stdio::piped());
    // A lease of 3 s: an outage longer than it re-ran finished jobs before.
    let (mut worker, _) =
        deployment.start_worker(command, &["--lease-seconds", "3", "--concurrency", "2"]);
    let log = BufReader::new(worker.stderr.take().unwrap());
    let log_lines =
        std::thread::spawn(move || log.lines().map_while(|l| l.ok()).collect::<Vec<_>>());

    let finishing = ping(&*store, &*queue, 1500).await;
    wait_for(&*store, finishing, "the job to start", |j| {
        j.state == JobState::Running
    })
    .await;
    relay.cut();
    // Recorded and enqueued past the relay: the worker takes it but cannot read its record.
    let waiting = ping(&*store, &*queue, 0).await;
    // The outage lasts a while: the fault under test, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(8)).await;
    relay.restore();

    for (id, what) in [
        (finishing, "the finished job"),
        (waiting, "the waiting job"),
    ] {
        let done = wait_for(&*store, id, what, |j| j.state.is_terminal()).await;
        assert_eq!(done.state, JobState::Success, "{what}: {done:?}");
        assert_eq!(done.attempts, 1, "{what} ran once: {done:?}");
        assert_eq!(done.result.unwrap()["attempt"], 1, "{what}");
    }
    signal(&worker, "-TERM");
    assert!(worker.wait().unwrap().success());
    let lines = log_lines.join().unwrap();
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("the database is unavailable")),
        "the outage was met and said: {lines:#?}"
    );
    assert!(
        warnings.len() <= 20,
        "backoff, not a busy loop: {} warnings in 8 s: {warnings:#?}",
        warnings.len()
    );
    drop(relay);
    database.drop_database().await.unwrap();
}
