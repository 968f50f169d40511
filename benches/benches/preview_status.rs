//! `GET /api/v1/preview/status/{job_id}` under load, against `../shared/bench/fastapi-ref` (the
//! same endpoint as the original design would have written it: FastAPI, uvicorn with two workers,
//! asyncpg, PyJWT) on the same PostgreSQL with the same wrk command, in one run.
//!
//! Both databases are seeded alike: 10,000 jobs over 100 projects and 100 users, each user a
//! member of 5 projects; the load reads the 500 jobs user 0 may see, with user 0's JWT.
//!
//! Needs `DATABASE_URL` (PostgreSQL), `wrk`, `psql` and `python3`; without them it says why and
//! does nothing. `FASTAPI_REF` points at the reference (default `../shared/bench/fastapi-ref`);
//! it is copied to `~/.cache/hivesync-bench/fastapi-ref` so its virtualenv is made once.
//! `DURATION_S` (20) and `WARMUP_S` (5) as in the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hivesync_core::config::Config;
use hivesync_core::domain::UserId;
use hivesync_server::http::app;
use hivesync_server::http::serve::{self, Limits};
use hivesync_server::state::AppState;
use poem::listener::Listener;

const DATABASE: &str = "hivesync_bench_status";
const JWT_SECRET: &str = "bench-secret-not-for-production-use";

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .status()
        .expect("psql");
    assert!(status.success(), "psql failed: {sql}");
}

/// `key=value` pairs of a `RESULT` / `SUMMARY` line.
fn fields(line: &str) -> HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn result_line(output: &str, prefix: &str) -> HashMap<String, f64> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{output}"));
    fields(line)
}

fn reference_dir() -> PathBuf {
    let source = std::env::var_os("FASTAPI_REF").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/fastapi-ref"),
        PathBuf::from,
    );
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let copy = home.join(".cache/hivesync-bench/fastapi-ref");
    std::fs::create_dir_all(&copy).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", source.display()))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success(), "cannot copy {}", source.display());
    copy
}

fn main() {
    let Ok(base_url) = std::env::var("DATABASE_URL") else {
        println!("SKIP preview_status: DATABASE_URL (PostgreSQL) is not set");
        return;
    };
    if !base_url.starts_with("postgres") {
        println!("SKIP preview_status: DATABASE_URL is not PostgreSQL");
        return;
    }
    for program in ["wrk", "psql", "python3"] {
        if !have(program) {
            println!("SKIP preview_status: {program} is not installed");
            return;
        }
    }
    let duration: u64 = std::env::var("DURATION_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let warmup: u64 = std::env::var("WARMUP_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let reference = reference_dir();

    // The reference first: it seeds its own database and runs the wrk command.
    let server_url = base_url
        .rsplit_once('/')
        .map_or(base_url.clone(), |(server, _)| server.to_owned());
    let output = Command::new("bash")
        .arg("run.sh")
        .current_dir(&reference)
        .env("DATABASE_URL", format!("{server_url}/fastapi_ref"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("WORKERS", "2")
        .env("DURATION_S", duration.to_string())
        .env("WARMUP_S", warmup.to_string())
        .output()
        .expect("run.sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fastapi-ref failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let baseline = result_line(&text, "SUMMARY");

    // HiveSync on its own database, seeded alike.
    psql(
        &format!("{server_url}/postgres"),
        &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
    );
    psql(
        &format!("{server_url}/postgres"),
        &format!("CREATE DATABASE {DATABASE}"),
    );
    let database_url = format!("{server_url}/{DATABASE}");
    let data_dir = tempfile::tempdir().unwrap();
    let vars: HashMap<&'static str, String> = HashMap::from([
        ("DATABASE_URL", database_url.clone()),
        ("DATA_DIR", data_dir.path().display().to_string()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        (
            "PREVIEW_TOKEN_SECRET",
            "bench-preview-secret-not-for-production".to_owned(),
        ),
        ("LOG_LEVEL", "warn".to_owned()),
    ]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let open = |cache: bool| {
        let mut vars = vars.clone();
        vars.insert("PREVIEW_STATUS_CACHE", cache.to_string());
        let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
        runtime.block_on(AppState::open(config)).unwrap()
    };
    let state = open(true);
    psql(&database_url, SEED);
    let ids_file = data_dir.path().join("job_ids.txt");
    let output = Command::new("psql")
        .args([&database_url, "-At", "-c", MY_JOBS])
        .output()
        .unwrap();
    let ids = String::from_utf8(output.stdout).unwrap();
    assert_eq!(ids.lines().count(), 500, "user 0 may read 500 jobs");
    std::fs::write(&ids_file, &ids).unwrap();
    let user0 = UserId::from_uuid(uuid::Uuid::from_u128(1));
    let token = state
        .jwt
        .issue(user0, chrono_now())
        .expect("a token for user 0");

    // The production server loop (`http::serve`: timeouts and connection bounds), and poem's own
    // `Server`, which served before them, to measure what the bounds cost.
    let serve = |state: std::sync::Arc<AppState>, poem_loop: bool| {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits::from_config(&state.config.http);
        if poem_loop {
            drop(listener);
            let acceptor = runtime
                .block_on(poem::listener::TcpListener::bind(addr).into_acceptor())
                .unwrap();
            runtime.spawn(async move {
                poem::Server::new_with_acceptor(acceptor)
                    .run(app(state))
                    .await
                    .unwrap();
            });
        } else {
            runtime.spawn(async move {
                serve::serve(
                    listener,
                    app(state),
                    limits,
                    std::future::pending(),
                    std::time::Duration::ZERO,
                )
                .await
                .unwrap();
            });
        }
        format!("http://{addr}")
    };
    let wrk = |url: &str, seconds: u64, latency: bool| {
        let mut command = Command::new("wrk");
        command
            .args(["-t2", "-c64", &format!("-d{seconds}s")])
            .args(latency.then_some("--latency"))
            .args(["-s", "load.lua", url])
            .current_dir(&reference)
            .env("TOKEN", &token)
            .env("JOB_IDS_FILE", &ids_file);
        let output = command.output().expect("wrk");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The cache serves only once the change feed is live.
    let mut announced = state.job_cache.subscribe();
    runtime.block_on(async {
        while !state.job_cache.is_live() {
            tokio::time::timeout(std::time::Duration::from_secs(10), announced.changed())
                .await
                .expect("the change feed did not go live")
                .unwrap();
        }
    });
    let cached_url = serve(state.clone(), false);
    wrk(&cached_url, warmup, false);
    let ours = result_line(&wrk(&cached_url, duration, true), "RESULT");
    let poem_url = serve(state.clone(), true);
    wrk(&poem_url, warmup, false);
    let poem_loop = result_line(&wrk(&poem_url, duration, true), "RESULT");
    let uncached_url = serve(open(false), false);
    wrk(&uncached_url, warmup, false);
    let uncached = result_line(&wrk(&uncached_url, duration, true), "RESULT");
    let rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024);

    let show = |name: &str, r: &HashMap<String, f64>| {
        println!(
            "{name:<28} {:>9.0} req/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  non-2xx {}",
            r["requests_per_sec"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["non2xx"]
        );
    };
    show("fastapi-ref (2 workers)", &baseline);
    show("hivesync", &ours);
    show("hivesync on poem's Server", &poem_loop);
    show("hivesync, no status cache", &uncached);
    for result in [&ours, &poem_loop, &uncached] {
        assert_eq!(
            result["non2xx"], 0.0,
            "every request must be an authorised hit"
        );
    }
    println!(
        "RESULT preview_status requests_per_sec={:.0} p99_ms={:.2} baseline_requests_per_sec={:.0} \
         baseline_p99_ms={:.2} ratio={:.2} uncached_requests_per_sec={:.0} uncached_p99_ms={:.2} \
         uncached_ratio={:.2} poem_server_requests_per_sec={:.0} bounded_vs_poem={:.2} \
         peak_rss_mb={rss_mb} baseline_peak_rss_mb={}",
        ours["requests_per_sec"],
        ours["p99_ms"],
        baseline["requests_per_sec"],
        baseline["p99_ms"],
        ours["requests_per_sec"] / baseline["requests_per_sec"],
        uncached["requests_per_sec"],
        uncached["p99_ms"],
        uncached["requests_per_sec"] / baseline["requests_per_sec"],
        poem_loop["requests_per_sec"],
        ours["requests_per_sec"] / poem_loop["requests_per_sec"],
        baseline.get("peak_rss_mb").copied().unwrap_or(0.0),
    );
    runtime.shutdown_background();
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// 100 users (user i has id i + 1), 100 projects; user u is a member of projects u..u+4; 10,000
/// preview jobs, project i % 100, states and progress spread like the reference's seed.
const SEED: &str = "
INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(i + 1), 12, '0'))::uuid,
       'user' || i || '@example.com', 'user ' || i, 'x', now(), now()
FROM generate_series(0, 99) AS i;
INSERT INTO projects (id, name, created_by, created_at, updated_at)
SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(i + 1), 12, '0'))::uuid, 'project ' || i,
       ('00000000-0000-0000-0000-' || lpad(to_hex(i + 1), 12, '0'))::uuid, now(), now()
FROM generate_series(0, 99) AS i;
INSERT INTO project_members (project_id, user_id, role, added_at)
SELECT ('00000000-0000-0000-0001-' || lpad(to_hex((u + k) % 100 + 1), 12, '0'))::uuid,
       ('00000000-0000-0000-0000-' || lpad(to_hex(u + 1), 12, '0'))::uuid,
       CASE WHEN k = 0 THEN 'owner' ELSE 'viewer' END, now()
FROM generate_series(0, 99) AS u, generate_series(0, 4) AS k;
INSERT INTO jobs (id, kind, queue, project_id, user_id, state, progress, phase, error_code,
                  payload, created_at, updated_at)
SELECT gen_random_uuid(), 'preview_build', 'preview_build',
       ('00000000-0000-0000-0001-' || lpad(to_hex(i % 100 + 1), 12, '0'))::uuid,
       ('00000000-0000-0000-0000-' || lpad(to_hex(i % 100 + 1), 12, '0'))::uuid,
       (ARRAY['queued', 'bundling', 'success', 'failed'])[i % 4 + 1],
       (ARRAY[0.0, 0.5, 1.0, 1.0])[i % 4 + 1],
       (ARRAY['queued', 'bundling', 'done', 'failed'])[i % 4 + 1],
       CASE WHEN i % 4 = 3 THEN 'PREVIEW_BUILD_FAILED' END,
       jsonb_build_object(
           'project_id', '00000000-0000-0000-0001-' || lpad(to_hex(i % 100 + 1), 12, '0'),
           'platform', 'ios', 'git_ref', 'main', 'token_version', 1),
       now(), now()
FROM generate_series(0, 9999) AS i;
ANALYZE;
";

/// The jobs user 0 (id …0001) may read: those of its 5 projects.
const MY_JOBS: &str = "
SELECT j.id FROM jobs j JOIN project_members m ON m.project_id = j.project_id
WHERE m.user_id = '00000000-0000-0000-0000-000000000001' ORDER BY j.id";
