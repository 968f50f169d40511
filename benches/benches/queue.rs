//! Jobs per second end to end (enqueue → handler → acknowledge), against raw Redis `LPUSH` +
//! `BRPOP` measured in the same run.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p hivesync-benches --bench queue`
//!
//! Each scenario has one producer enqueueing `N` jobs while `W` consumers take and finish them,
//! concurrently; the rate is `N` over the time until the last one is finished.
//!
//! - raw: `LPUSH` a 16-byte id / `BRPOP` it (each consumer on its own connection);
//! - queue layer: `JobQueue::enqueue` / `reserve` + `complete` with a no-op handler (Redis, then
//!   the SQL queue on SQLite);
//! - job records: the full path a HiveSync job takes — `submit` (a `Store` record, then the
//!   queue) and the worker runtime (read the record, mark it running, run the handler, record
//!   success, acknowledge) — with records in SQLite, and with `DATABASE_URL` (PostgreSQL, a
//!   throwaway database per scenario) in PostgreSQL too, the production setting; and the SQL
//!   queue on PostgreSQL.
//!
//! - BullMQ (`benches/bullmq`, installed from its lockfile with `npm ci`) on the same Redis, 1 worker
//!   × 1 and 4 workers × 50 concurrency, the peer a newcomer compares HiveSync with; skipped, with
//!   the reason printed, without Node.
//!
//! Goals: the Redis queue layer ≥ 50 % of the raw round-trip rate; and against BullMQ 4 × 50 (#16):
//! the queue layer alone ≥ 2×, the full runtime with records in PostgreSQL and the Redis queue
//! (4 workers) ≥ 1×, the embedded default (SQLite queue and records, 4 workers) ≥ 0.5×.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hivesync_core::adapters::{PostgresStore, SqliteStore};
use hivesync_core::clock::system_clock;
use hivesync_core::domain::{JobId, JobState};
use hivesync_core::ports::{JobQueue, NewQueuedJob, Queue, Store, WorkerRole};
use hivesync_core::testkit::postgres::TestDatabase;
use hivesync_queue::jobs::{Submission, submit};
use hivesync_queue::worker::{Handlers, Ping, PingHandler, Worker, WorkerConfig, WorkerDeps};
use hivesync_queue::{PostgresBackend, RedisBackend, SqliteBackend};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);

fn jobs_for(queue_kind: &str) -> usize {
    let default = if queue_kind == "sql" { 3_000 } else { 20_000 };
    std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn raw_redis(url: &str, jobs: usize, consumers: usize) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let key = format!("hivesync-bench:raw:{}", uuid::Uuid::new_v4().simple());
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = key.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < jobs {
                let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
                    .arg(&key)
                    .arg(0.05)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if popped.is_some() {
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let mut producer = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..jobs {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let _: i64 = producer.lpush(&key, &id[..]).await.unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let _: i64 = producer.del(&key).await.unwrap();
    jobs as f64 / elapsed.as_secs_f64()
}

/// One producer and `consumers` take-and-acknowledge loops on `queue`, with a no-op handler.
async fn queue_layer(queue: Arc<dyn JobQueue>, jobs: usize, consumers: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..consumers {
        let queue = queue.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("bench-{w}");
            let mut current = None;
            while done.load(Ordering::SeqCst) < jobs {
                current = match current.take() {
                    // Acknowledge and take the next job in one step, as the worker runtime does.
                    Some(delivery) => {
                        let delivery: hivesync_core::ports::Delivery = delivery;
                        let (completed, next) = queue
                            .complete_and_reserve(
                                &delivery.lease,
                                Queue::SystemEvents,
                                &worker,
                                LEASE,
                            )
                            .await
                            .unwrap();
                        assert!(completed);
                        done.fetch_add(1, Ordering::SeqCst);
                        next
                    }
                    None => match queue
                        .reserve(Queue::SystemEvents, &worker, LEASE)
                        .await
                        .unwrap()
                    {
                        Some(delivery) => Some(delivery),
                        None => {
                            queue
                                .wait_for_work(&[Queue::SystemEvents], Duration::from_millis(50))
                                .await
                                .unwrap();
                            None
                        }
                    },
                };
            }
        }));
    }
    for n in 0..jobs {
        queue
            .enqueue(NewQueuedJob {
                job_id: JobId::new(),
                queue: Queue::SystemEvents,
                kind: "noop".to_owned(),
                payload: serde_json::json!({"n": n}),
                delay: None,
                dedup_key: None,
                max_attempts: None,
            })
            .await
            .unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// `submit` with records in the Store, and the worker runtime with `concurrency` slots.
async fn with_records(
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    jobs: usize,
    concurrency: usize,
) -> f64 {
    let mut config = WorkerConfig::new(WorkerRole::Cpu, concurrency);
    config.queues = vec![Queue::SystemEvents];
    config.poll_interval = Duration::from_millis(50);
    let deps = WorkerDeps {
        store: store.clone(),
        queue: queue.clone(),
        registry: Arc::new(hivesync_queue_bench_registry::Null),
        locks: Arc::new(hivesync_queue_bench_registry::Null),
        clock: system_clock(),
    };
    let worker = Worker::new(
        config,
        deps,
        Handlers::new().on::<Ping>(PingHandler {
            worker_id: "bench".to_owned(),
        }),
    );
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let mut last = None;
    for _ in 0..jobs {
        let job = submit(&*store, &*queue, Submission::of(&Ping::default()).unwrap())
            .await
            .unwrap();
        last = Some(job.id);
    }
    // The last job finishing means all have (one queue, oldest first), give or take the others
    // still in flight on other slots: wait for the records to agree.
    let last = last.unwrap();
    loop {
        let job = store.get_job(last).await.unwrap().unwrap();
        if job.state == JobState::Success {
            let done: u64 = store
                .count_jobs()
                .await
                .unwrap()
                .iter()
                .filter(|c| c.state == JobState::Success)
                .map(|c| c.count)
                .sum();
            if done as usize >= jobs {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    running.await.unwrap().unwrap();
    rate
}

/// Registry and locks that do nothing, so that the records benchmark measures the job path.
mod hivesync_queue_bench_registry {
    use std::time::Duration;

    use async_trait::async_trait;
    use hivesync_core::Result;
    use hivesync_core::ports::{Locks, WorkerRegistry, WorkerStatus};

    pub(crate) struct Null;

    #[async_trait]
    impl WorkerRegistry for Null {
        async fn heartbeat(&self, _: &WorkerStatus) -> Result<()> {
            Ok(())
        }
        async fn deregister(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn list(&self) -> Result<Vec<WorkerStatus>> {
            Ok(Vec::new())
        }
    }

    #[async_trait]
    impl Locks for Null {
        async fn acquire(&self, _: &str, _: &str, _: Duration) -> Result<bool> {
            Ok(true)
        }
        async fn release(&self, _: &str, _: &str) -> Result<bool> {
            Ok(true)
        }
        async fn holder(&self, _: &str) -> Result<Option<String>> {
            Ok(None)
        }
    }
}

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> (Arc<dyn Store>, SqliteBackend) {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    let store = SqliteStore::connect_sqlite(&url).await.unwrap();
    store.migrate().await.unwrap();
    let backend = SqliteBackend::new(store.pool().clone(), system_clock());
    (Arc::new(store), backend)
}

/// A store and SQL queue on a fresh PostgreSQL database (dropped by the caller).
async fn postgres(admin_url: &str) -> (TestDatabase, Arc<dyn Store>, PostgresBackend) {
    let database = TestDatabase::create(admin_url).await.unwrap();
    let store = PostgresStore::connect_postgres(database.url(), 16)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let backend = PostgresBackend::new(store.pool().clone(), system_clock());
    (database, Arc::new(store), backend)
}

/// BullMQ's rate on the same Redis with `workers` workers of `concurrency` slots each; `None`,
/// with the reason printed, where Node or the package cannot be had.
async fn bullmq(url: &str, jobs: usize, workers: usize, concurrency: usize) -> Option<f64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bullmq");
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .current_dir(&dir)
                .stderr(std::process::Stdio::inherit())
                .output()
        };
        if !dir.join("node_modules/bullmq").is_dir() {
            match run(
                "npm",
                &["ci", "--no-audit", "--no-fund", "--prefer-offline"],
            ) {
                Ok(out) if out.status.success() => {}
                other => {
                    println!(
                        "no BullMQ scenarios: `npm ci` in {} failed: {other:?}",
                        dir.display()
                    );
                    return None;
                }
            }
        }
        let (jobs, workers, concurrency) = (
            jobs.to_string(),
            workers.to_string(),
            concurrency.to_string(),
        );
        match run("node", &["bench.mjs", &url, &jobs, &workers, &concurrency]) {
            Ok(out) if out.status.success() => {
                let printed: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                printed["rate"].as_f64()
            }
            other => {
                println!("no BullMQ scenario: node bench.mjs failed: {other:?}");
                None
            }
        }
    })
    .await
    .unwrap()
}

/// Prints `rate` against BullMQ 4 × 50 measured in the same run, and the #16 goal it has, if any.
fn against_bullmq(what: &str, rate: f64, bullmq: Option<f64>, goal: Option<f64>) {
    let Some(peer) = bullmq else {
        return;
    };
    let ratio = rate / peer;
    println!("PEER {what}: {ratio:.2}x BullMQ 4 workers x 50 ({peer:.0}/s)");
    if let Some(goal) = goal {
        println!(
            "GOAL {what} >= {goal}x BullMQ 4 x 50: {}",
            if ratio >= goal { "met" } else { "NOT met" }
        );
    }
}

fn report(what: &str, rate: f64, baseline: Option<(&str, f64)>) {
    match baseline {
        Some((name, base)) => println!(
            "RESULT {what}: {rate:.0} jobs/s, {:.0}% of {name} ({base:.0}/s)",
            100.0 * rate / base
        ),
        None => println!("RESULT {what}: {rate:.0} jobs/s"),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL (e.g. redis://127.0.0.1:6379) to run the queue benchmark");
        return;
    };
    let jobs = jobs_for("redis");
    println!(
        "{jobs} jobs per Redis scenario, {} per SQL scenario",
        jobs_for("sql")
    );
    let peer_1 = bullmq(&url, jobs, 1, 1).await;
    if let Some(rate) = peer_1 {
        report("BullMQ 6.7, 1 worker x 1", rate, None);
    }
    let peer = bullmq(&url, jobs, 4, 50).await;
    if let Some(rate) = peer {
        report("BullMQ 6.7, 4 workers x 50", rate, None);
    }
    for workers in [1, 4] {
        let goal = |goal: f64| (workers == 4).then_some(goal);
        let raw = raw_redis(&url, jobs, workers).await;
        report(&format!("raw LPUSH+BRPOP, {workers} consumers"), raw, None);
        let prefix = format!("hivesync-bench:{}:", uuid::Uuid::new_v4().simple());
        let redis = RedisBackend::connect(&url, &prefix, system_clock())
            .await
            .unwrap();
        let layer = queue_layer(Arc::new(redis.clone()), jobs, workers).await;
        report(
            &format!("Redis queue layer, {workers} workers"),
            layer,
            Some(("raw", raw)),
        );
        against_bullmq(
            &format!("Redis queue layer, {workers} workers"),
            layer,
            peer,
            goal(2.0),
        );
        if workers == 4 {
            println!(
                "GOAL Redis queue layer >= 50% of raw: {}",
                if layer >= raw * 0.5 { "met" } else { "NOT met" }
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = sqlite(&dir, "records.db").await;
        let records = with_records(store, Arc::new(redis.clone()), jobs_for("sql"), workers).await;
        report(
            &format!("Redis queue with SQLite job records, {workers} workers"),
            records,
            Some(("raw", raw)),
        );
        against_bullmq(
            &format!("Redis queue with SQLite job records, {workers} workers"),
            records,
            peer,
            None,
        );
        redis.clear_namespace().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (_, sql) = sqlite(&dir, "queue.db").await;
        let sql_layer = queue_layer(Arc::new(sql.clone()), jobs_for("sql"), workers).await;
        report(
            &format!("SQL (SQLite) queue layer, {workers} workers"),
            sql_layer,
            Some(("raw", raw)),
        );
        let (store, sql) = sqlite(&dir, "both.db").await;
        let sql_records = with_records(store, Arc::new(sql), jobs_for("sql"), workers).await;
        report(
            &format!("SQL (SQLite) queue with job records, {workers} workers"),
            sql_records,
            Some(("raw", raw)),
        );
        against_bullmq(
            &format!("embedded default (SQLite queue and records), {workers} workers"),
            sql_records,
            peer,
            goal(0.5),
        );

        let Some(admin_url) = std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| url.starts_with("postgres"))
        else {
            println!("no PostgreSQL scenarios: set DATABASE_URL=postgres://… to run them");
            continue;
        };
        let redis = RedisBackend::connect(&url, &prefix, system_clock())
            .await
            .unwrap();
        let (database, store, _) = postgres(&admin_url).await;
        let records = with_records(store, Arc::new(redis.clone()), jobs_for("sql"), workers).await;
        report(
            &format!("Redis queue with PostgreSQL job records, {workers} workers"),
            records,
            Some(("raw", raw)),
        );
        against_bullmq(
            &format!("full runtime (Redis queue, PostgreSQL records), {workers} workers"),
            records,
            peer,
            goal(1.0),
        );
        redis.clear_namespace().await.unwrap();
        database.drop_database().await.unwrap();
        let (database, _, sql) = postgres(&admin_url).await;
        let sql_layer = queue_layer(Arc::new(sql), jobs_for("sql"), workers).await;
        report(
            &format!("SQL (PostgreSQL) queue layer, {workers} workers"),
            sql_layer,
            Some(("raw", raw)),
        );
        database.drop_database().await.unwrap();
        let (database, store, sql) = postgres(&admin_url).await;
        let sql_records = with_records(store, Arc::new(sql), jobs_for("sql"), workers).await;
        report(
            &format!("SQL (PostgreSQL) queue with job records, {workers} workers"),
            sql_records,
            Some(("raw", raw)),
        );
        against_bullmq(
            &format!("SQL (PostgreSQL) queue with job records, {workers} workers"),
            sql_records,
            peer,
            None,
        );
        database.drop_database().await.unwrap();
    }
}
