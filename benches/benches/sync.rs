//! Project sync: a generated project synced in full, then one-file delta re-syncs, through a real
//! HiveSync server on a local socket with the client `hivesync sync` uses — against
//! `git add -A && git commit` of the same tree and the same change in a local repository,
//! measured in the same run.
//!
//! `cargo bench -p hivesync-benches --bench sync` (`BENCH_FILES`, default 5000; `BENCH_ROUNDS`,
//! default 10 delta rounds).
//!
//! Goal: a delta re-sync within 2× of the local commit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hivesync_benches::{env_number, generate_project as generate, median, ms};

use hivesync_core::client::Client;
use hivesync_core::client::sync::sync_folder;
use hivesync_core::config::Config;
use hivesync_server::state::AppState;
use serde_json::{Value, json};

fn git(dir: &Path, script: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let files = env_number("BENCH_FILES", 5000);
    let rounds = env_number("BENCH_ROUNDS", 10);
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let synced = scratch.path().join("synced");
    let local = scratch.path().join("local");
    let cache = scratch.path().join("cache.json");
    generate(&synced, files);
    generate(&local, files);
    // The client's stat cache trusts only files whose change time (which cannot be backdated) is
    // two seconds old; a project at rest is older than that.
    std::thread::sleep(Duration::from_millis(2100));

    // A real server on the embedded defaults, on a local socket.
    let data = data_dir.to_str().unwrap().to_owned();
    let config = Config::from_lookup(|name| (name == "DATA_DIR").then(|| data.clone())).unwrap();
    let state = AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    let app = hivesync_server::http::app(state);
    tokio::spawn(async move { poem::Server::new_with_acceptor(acceptor).run(app).await });

    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "bench@example.com", "password": "benchmark password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let project: Value = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project: uuid::Uuid = project["id"].as_str().unwrap().parse().unwrap();
    let client = Client::new(&base, Some(token)).unwrap();

    println!("project: {files} files");
    let started = Instant::now();
    let full = sync_folder(
        &client,
        &synced,
        project,
        "main",
        Some("full"),
        false,
        &cache,
    )
    .await
    .unwrap();
    let full_sync = started.elapsed();
    assert_eq!(full.sent.len(), full.files);
    let full_git = git(&local, "git init -q && git add -A && git commit -q -m full");
    let per_second = |d: Duration| full.files as f64 / d.as_secs_f64();
    println!(
        "RESULT full sync: {} ({:.0} files/s), {:.2}x git add -A && git commit ({}, {:.0} files/s)",
        ms(full_sync),
        per_second(full_sync),
        full_sync.as_secs_f64() / full_git.as_secs_f64(),
        ms(full_git),
        per_second(full_git),
    );

    let mut delta = Vec::new();
    let mut parts = Vec::new();
    let mut local_commit = Vec::new();
    for round in 0..rounds {
        let path = format!(
            "src/feature{}/component{}.js",
            round % (files / 50).max(1),
            (round % (files / 50).max(1)) * 50
        );
        let content = format!("// edited in round {round}\nexport default {round};\n");
        std::fs::write(synced.join(&path), &content).unwrap();
        std::fs::write(local.join(&path), &content).unwrap();

        let started = Instant::now();
        let report = sync_folder(
            &client,
            &synced,
            project,
            "main",
            Some("edit"),
            false,
            &cache,
        )
        .await
        .unwrap();
        delta.push(started.elapsed());
        parts.push((report.scan_time, report.plan_time, report.commit_time));
        assert_eq!(report.sent, vec![path.clone()], "one file sent");
        assert_eq!(report.changed, 1);
        local_commit.push(git(&local, "git add -A && git commit -q -m edit"));
    }
    let (delta, local_commit) = (median(delta), median(local_commit));
    println!(
        "  delta parts (medians): scan {}, plan {}, upload+commit {}",
        ms(median(parts.iter().map(|p| p.0).collect())),
        ms(median(parts.iter().map(|p| p.1).collect())),
        ms(median(parts.iter().map(|p| p.2).collect())),
    );
    let ratio = delta.as_secs_f64() / local_commit.as_secs_f64();
    println!(
        "RESULT one-file delta re-sync: {} median of {rounds}, {ratio:.2}x git add -A && git commit ({}) — goal ≤ 2x: {}",
        ms(delta),
        ms(local_commit),
        if ratio <= 2.0 { "met" } else { "NOT met" }
    );
}
