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
//!   queue) and the worker runtime (start the record, run the handler, record success,
//!   acknowledge) — with the Redis or the SQL queue and records in SQLite, and with `DATABASE_URL`
//!   (PostgreSQL, a throwaway database per scenario) in PostgreSQL too, the production setting. Each
//!   in BullMQ's shapes: 1 worker × 1 slot and 4 workers × 50 slots with one producer submitting
//!   one job at a time, and 4 × 50 with 8 concurrent producers (an API server under load);
//! - latency of one job through an idle runtime (the call to `submit` → the handler's start), p50
//!   and p99 of 500 one after another, against raw `LPUSH` → `BRPOP`.
//!
//! - BullMQ (`benches/bullmq`, installed from its lockfile with `npm ci`) on the same Redis in the
//!   same three shapes, the peer a newcomer compares HiveSync with; skipped, with the reason
//!   printed, without Node.
//!
//! Goals: the Redis queue layer ≥ 50 % of the raw round-trip rate; and against BullMQ 4 × 50 (#16):
//! the queue layer alone ≥ 2×, the full runtime with records in PostgreSQL and the Redis queue
//! (4 × 50) ≥ 1×, the embedded default (SQLite queue and records, 4 × 50) ≥ 0.5×.
//!
//! `BENCH_JOBS` sets every scenario's count at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hivesync_core::adapters::{PostgresStore, SqliteStore};
use hivesync_core::clock::system_clock;
use hivesync_core::domain::{JobId, JobState};
use hivesync_core::ports::{JobQueue, NewQueuedJob, Queue, Store, WorkerRole};
use hivesync_core::testkit::postgres::TestDatabase;
use hivesync_queue::jobs::{Submission, submit};
use hivesync_queue::worker::{
    Handlers, JobContext, JobError, Ping, Pong, TypedHandler, Worker, WorkerConfig, WorkerDeps,
};
use hivesync_queue::{PostgresBackend, RedisBackend, SqliteBackend};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);

fn jobs_for(queue_kind: &str) -> usize {
    let default = match queue_kind {
        "sql" => 3_000,
        "records" => 10_000,
        "latency" => 500,
        _ => 20_000,
    };
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

/// How a records scenario runs: `workers` worker runtimes of `slots` concurrent jobs each, fed by
/// `producers` concurrent submit loops (BullMQ's scenarios have the same three numbers).
#[derive(Debug, Clone, Copy)]
struct Shape {
    workers: usize,
    slots: usize,
    producers: usize,
}

impl Shape {
    /// How `BENCH_SHAPE` names it: `1x1`, `4x50`, `4x50x8`.
    fn key(&self) -> String {
        match self.producers {
            1 => format!("{}x{}", self.workers, self.slots),
            producers => format!("{}x{}x{producers}", self.workers, self.slots),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} x {}", self.workers, self.slots)?;
        if self.producers > 1 {
            write!(f, ", {} producers", self.producers)?;
        }
        Ok(())
    }
}

/// Counts handled pings and tells when the handler started each one.
struct Counting {
    handled: Arc<AtomicUsize>,
    all_handled: Arc<tokio::sync::Notify>,
    expected: usize,
    started: Option<tokio::sync::mpsc::UnboundedSender<Instant>>,
}

#[async_trait::async_trait]
impl TypedHandler<Ping> for Counting {
    async fn handle(&self, _: Ping, _: &JobContext) -> Result<Pong, JobError> {
        if let Some(started) = &self.started {
            let _ = started.send(Instant::now());
        }
        if self.handled.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
            self.all_handled.notify_one();
        }
        Ok(Pong {
            pong: true,
            worker: String::new(),
            attempt: 1,
            held_ms: 0,
        })
    }
}

/// The worker runtimes of `shape` on `store` and `queue`, all running a [`Counting`] handler.
fn start_workers(
    store: &Arc<dyn Store>,
    queue: &Arc<dyn JobQueue>,
    shape: Shape,
    counting: impl Fn() -> Counting,
) -> (
    CancellationToken,
    Vec<tokio::task::JoinHandle<hivesync_core::Result<()>>>,
) {
    let shutdown = CancellationToken::new();
    let running = (0..shape.workers)
        .map(|w| {
            let mut config = WorkerConfig::new(WorkerRole::Cpu, shape.slots);
            config.id = format!("bench-{w}");
            config.queues = vec![Queue::SystemEvents];
            config.poll_interval = Duration::from_millis(50);
            let deps = WorkerDeps {
                store: store.clone(),
                queue: queue.clone(),
                registry: Arc::new(hivesync_queue_bench_registry::Null),
                locks: Arc::new(hivesync_queue_bench_registry::Null),
                clock: system_clock(),
            };
            let worker = Worker::new(config, deps, Handlers::new().on::<Ping>(counting()));
            tokio::spawn(worker.run(shutdown.clone()))
        })
        .collect();
    (shutdown, running)
}

/// `submit` with records in the Store (the record, then the queue) from `shape.producers` loops,
/// and the worker runtime (start the record, run the handler, record the success, acknowledge);
/// the rate counts until every record says `success`.
async fn with_records(
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    jobs: usize,
    shape: Shape,
) -> f64 {
    let handled = Arc::new(AtomicUsize::new(0));
    let all_handled = Arc::new(tokio::sync::Notify::new());
    let (shutdown, running) = start_workers(&store, &queue, shape, || Counting {
        handled: handled.clone(),
        all_handled: all_handled.clone(),
        expected: jobs,
        started: None,
    });
    let started = Instant::now();
    let producers: Vec<_> = (0..shape.producers)
        .map(|p| {
            let (store, queue) = (store.clone(), queue.clone());
            let share = jobs / shape.producers + usize::from(p < jobs % shape.producers);
            tokio::spawn(async move {
                for _ in 0..share {
                    submit(&*store, &*queue, Submission::of(&Ping::default()).unwrap())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    all_handled.notified().await;
    // Handled is not yet recorded: wait for the records to agree.
    loop {
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
        tokio::task::yield_now().await;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    for worker in running {
        worker.await.unwrap().unwrap();
    }
    rate
}

/// Latency of one job through an idle runtime, from the call to `submit` to the handler's start,
/// `samples` times one after another: (p50, p99) in milliseconds.
async fn idle_latency(
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    samples: usize,
) -> (f64, f64) {
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let shape = Shape {
        workers: 1,
        slots: 4,
        producers: 1,
    };
    let (shutdown, running) = start_workers(&store, &queue, shape, || Counting {
        handled: Arc::default(),
        all_handled: Arc::default(),
        expected: 0,
        started: Some(started_tx.clone()),
    });
    let mut took = Vec::with_capacity(samples);
    let mut submitting = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sent = Instant::now();
        submit(&*store, &*queue, Submission::of(&Ping::default()).unwrap())
            .await
            .unwrap();
        submitting.push(sent.elapsed());
        let handled = started_rx.recv().await.unwrap();
        took.push(handled.duration_since(sent));
    }
    shutdown.cancel();
    for worker in running {
        worker.await.unwrap().unwrap();
    }
    let (submit_p50, _) = percentiles(submitting);
    println!("  (of which `submit` itself, p50: {submit_p50:.3} ms)");
    percentiles(took)
}

/// What one producer waiting for each durable record can reach at most: one-row `INSERT`s into a
/// fresh table, one after another, each its own commit, on the records' PostgreSQL.
async fn postgres_commits(admin_url: &str, rows: usize) -> f64 {
    let database = TestDatabase::create(admin_url).await.unwrap();
    let store = PostgresStore::connect_postgres(database.url(), 1)
        .await
        .unwrap();
    let pool = store.pool();
    sqlx::query("CREATE TABLE commits (id UUID PRIMARY KEY, payload JSONB NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..rows {
        sqlx::query("INSERT INTO commits (id, payload) VALUES ($1, '{}')")
            .bind(uuid::Uuid::new_v4())
            .execute(pool)
            .await
            .unwrap();
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    store.close().await;
    database.drop_database().await.unwrap();
    rate
}

/// The same through raw Redis: `LPUSH` to a list a consumer waits on with `BRPOP`.
async fn raw_latency(url: &str, samples: usize) -> (f64, f64) {
    let client = redis::Client::open(url).unwrap();
    let key = format!("hivesync-bench:latency:{}", uuid::Uuid::new_v4().simple());
    let mut consumer = client.get_multiplexed_async_connection().await.unwrap();
    let (popped_tx, mut popped_rx) = tokio::sync::mpsc::unbounded_channel();
    let consuming = tokio::spawn({
        let key = key.clone();
        async move {
            for _ in 0..samples {
                let _: (String, Vec<u8>) = redis::cmd("BRPOP")
                    .arg(&key)
                    .arg(0)
                    .query_async(&mut consumer)
                    .await
                    .unwrap();
                popped_tx.send(Instant::now()).unwrap();
            }
        }
    });
    let mut producer = client.get_multiplexed_async_connection().await.unwrap();
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sent = Instant::now();
        let id = *uuid::Uuid::new_v4().as_bytes();
        let _: i64 = producer.lpush(&key, &id[..]).await.unwrap();
        took.push(popped_rx.recv().await.unwrap().duration_since(sent));
    }
    consuming.await.unwrap();
    percentiles(took)
}

fn percentiles(mut took: Vec<Duration>) -> (f64, f64) {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
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

/// BullMQ's rate on the same Redis in `shape` (workers, concurrency, producers); `None`,
/// with the reason printed, where Node or the package cannot be had.
async fn bullmq(url: &str, jobs: usize, shape: Shape) -> Option<f64> {
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
        let args = [jobs, shape.workers, shape.slots, shape.producers].map(|n| n.to_string());
        let [jobs, workers, slots, producers] = args.each_ref().map(String::as_str);
        match run(
            "node",
            &["bench.mjs", &url, jobs, workers, slots, producers],
        ) {
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

/// Prints `rate` against BullMQ in `shape`, measured in the same run, and the #16 goal it has, if
/// any.
fn against_bullmq(what: &str, rate: f64, shape: Shape, bullmq: Option<f64>, goal: Option<f64>) {
    let Some(peer) = bullmq else {
        return;
    };
    let ratio = rate / peer;
    println!("PEER {what}: {ratio:.2}x BullMQ {shape} ({peer:.0}/s)");
    if let Some(goal) = goal {
        println!(
            "GOAL {what} >= {goal}x BullMQ {shape}: {}",
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

/// Whether the scenarios of `group` run: all of them unless `BENCH_ONLY` (a comma-separated list of
/// `peer`, `layer`, `latency`, `records`, `sqlite`, `postgres`) names a subset. `sqlite` and
/// `postgres` pick the records scenarios by where records are kept.
fn selected(group: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|g| g.trim() == group))
}

/// Concurrent submit loops in the "many producers" scenarios: an API server taking requests from
/// several clients at once.
const PRODUCERS: usize = 8;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL (e.g. redis://127.0.0.1:6379) to run the queue benchmark");
        return;
    };
    let jobs = jobs_for("redis");
    let record_jobs = jobs_for("records");
    println!(
        "{jobs} jobs per Redis scenario, {} per SQL queue layer scenario, {record_jobs} per records scenario",
        jobs_for("sql")
    );
    let admin_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"));
    if admin_url.is_none() {
        println!("no PostgreSQL scenarios: set DATABASE_URL=postgres://… to run them");
    }

    let one = Shape {
        workers: 1,
        slots: 1,
        producers: 1,
    };
    let four = Shape {
        workers: 4,
        slots: 50,
        producers: 1,
    };
    let four_many = Shape {
        producers: PRODUCERS,
        ..four
    };
    let mut peers = Vec::new();
    for shape in [one, four, four_many] {
        let rate = if selected("peer") {
            bullmq(&url, jobs, shape).await
        } else {
            None
        };
        if let Some(rate) = rate {
            report(&format!("BullMQ 6.7, {shape}"), rate, None);
        }
        peers.push((shape, rate));
    }
    let peer = peers[1].1;

    for workers in [1, 4] {
        if !selected("layer") {
            break;
        }
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
            four,
            peer,
            None,
        );
        if workers == 4 {
            println!(
                "GOAL Redis queue layer >= 50% of raw: {}",
                if layer >= raw * 0.5 { "met" } else { "NOT met" }
            );
            // BullMQ's shape: 200 take-and-acknowledge loops at once, on one connection.
            redis.clear_namespace().await.unwrap();
            let slots = four.workers * four.slots;
            let layer = queue_layer(Arc::new(redis.clone()), jobs, slots).await;
            let what = format!("Redis queue layer, {four} ({slots} consumer loops)");
            report(&what, layer, None);
            against_bullmq(&what, layer, four, peer, goal(2.0));
        }
        redis.clear_namespace().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (_, sql) = sqlite(&dir, "queue.db").await;
        let sql_layer = queue_layer(Arc::new(sql.clone()), jobs_for("sql"), workers).await;
        report(
            &format!("SQL (SQLite) queue layer, {workers} workers"),
            sql_layer,
            Some(("raw", raw)),
        );
        if let Some(admin_url) = &admin_url {
            let (database, _, sql) = postgres(admin_url).await;
            let sql_layer = queue_layer(Arc::new(sql), jobs_for("sql"), workers).await;
            report(
                &format!("SQL (PostgreSQL) queue layer, {workers} workers"),
                sql_layer,
                Some(("raw", raw)),
            );
            database.drop_database().await.unwrap();
        }
    }

    let samples = jobs_for("latency");
    if selected("latency") {
        latencies(&url, admin_url.as_deref(), samples).await;
    }

    let records = selected("records");
    // `BENCH_SHAPE` (`1x1`, `4x50`, `4x50x8`) runs the records scenarios of one shape only.
    let only_shape = std::env::var("BENCH_SHAPE").ok();
    for (shape, peer) in peers {
        if only_shape.as_ref().is_some_and(|only| *only != shape.key()) {
            continue;
        }
        // Goals are set for BullMQ's 4 x 50 with one producer, as #16 measured it.
        let goal = |goal: f64| (shape.workers == 4 && shape.producers == 1).then_some(goal);
        let prefix = format!("hivesync-bench:{}:", uuid::Uuid::new_v4().simple());
        let redis = RedisBackend::connect(&url, &prefix, system_clock())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        if records || selected("sqlite") {
            let (store, _) = sqlite(&dir, "records.db").await;
            let rate = with_records(store, Arc::new(redis.clone()), record_jobs, shape).await;
            let what = format!("Redis queue with SQLite job records, {shape}");
            report(&what, rate, None);
            against_bullmq(&what, rate, shape, peer, None);
            redis.clear_namespace().await.unwrap();

            let (store, sql) = sqlite(&dir, "both.db").await;
            let rate = with_records(store, Arc::new(sql), record_jobs, shape).await;
            let what = format!("embedded default (SQLite queue and records), {shape}");
            report(&what, rate, None);
            against_bullmq(&what, rate, shape, peer, goal(0.5));
        }

        let Some(admin_url) = admin_url
            .as_deref()
            .filter(|_| records || selected("postgres"))
        else {
            continue;
        };
        if shape.workers == 1 {
            println!(
                "RESULT PostgreSQL commits one at a time, the bound on one producer with records there: {:.0}/s",
                postgres_commits(admin_url, record_jobs).await
            );
        }
        let (database, store, _) = postgres(admin_url).await;
        let rate = with_records(store, Arc::new(redis.clone()), record_jobs, shape).await;
        let what = format!("full runtime (Redis queue, PostgreSQL records), {shape}");
        report(&what, rate, None);
        against_bullmq(&what, rate, shape, peer, goal(1.0));
        redis.clear_namespace().await.unwrap();
        database.drop_database().await.unwrap();

        let (database, store, sql) = postgres(admin_url).await;
        let rate = with_records(store, Arc::new(sql), record_jobs, shape).await;
        let what = format!("SQL (PostgreSQL) queue with job records, {shape}");
        report(&what, rate, None);
        against_bullmq(&what, rate, shape, peer, None);
        database.drop_database().await.unwrap();
    }
}

/// Idle-runtime latency on the embedded default and on the production setting, against raw Redis.
async fn latencies(url: &str, admin_url: Option<&str>, samples: usize) {
    let (raw_p50, raw_p99) = raw_latency(url, samples).await;
    println!(
        "RESULT latency, raw LPUSH -> BRPOP ({samples} one at a time): p50 {raw_p50:.3} ms, p99 {raw_p99:.3} ms"
    );
    let latency = |what: &str, (p50, p99): (f64, f64)| {
        println!(
            "RESULT latency submit -> handler start, idle runtime, {what}: p50 {p50:.3} ms ({:.1}x raw), p99 {p99:.3} ms ({:.1}x raw)",
            p50 / raw_p50,
            p99 / raw_p99
        );
    };
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, sql) = sqlite(&dir, "latency.db").await;
        latency(
            "embedded (SQLite queue and records)",
            idle_latency(store, Arc::new(sql), samples).await,
        );
    }
    if let Some(admin_url) = admin_url {
        let prefix = format!("hivesync-bench:{}:", uuid::Uuid::new_v4().simple());
        let redis = RedisBackend::connect(url, &prefix, system_clock())
            .await
            .unwrap();
        let (database, store, _) = postgres(admin_url).await;
        latency(
            "Redis queue, PostgreSQL records",
            idle_latency(store, Arc::new(redis.clone()), samples).await,
        );
        redis.clear_namespace().await.unwrap();
        database.drop_database().await.unwrap();
    }
}
