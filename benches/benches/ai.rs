//! The AI pipeline, against baselines measured in the same run:
//!
//! - **static provider**: files per second summarising this repository's own sources (Rust,
//!   Python, JavaScript, TypeScript), against bare tree-sitter parsing of the same files. Goal:
//!   the whole summary ≤ 1.5× the bare parse. Also the whole chain (redaction, blob id, provider,
//!   placement) and the edit-producing tasks, for scale.
//! - **a cached request**: `POST /api/v1/ai/file-summary` answered from the result cache plus the
//!   `GET /api/v1/ai/result/{id}` that reads it, through the server's whole HTTP stack in process
//!   on the embedded defaults, against `GET /api/v1/users/me` (an authenticated request that
//!   reads one row) in the same loop. Goal: ≤ 10 ms.
//!
//! `cargo bench -p hivesync-benches --bench ai`. `AI_BENCH_PASSES` (5) repeats the file pass;
//! `AI_BENCH_REQUESTS` (300) the cached requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hivesync_ai::Chain;
use hivesync_ai::providers::static_analysis;
use hivesync_benches::env_number;
use hivesync_benches::in_process::InProcess;
use hivesync_core::ports::{AiInput, AiTask, Language};
use poem::http::Method;

/// Every source file of the languages the pipeline reads, outside build output and dependencies.
fn sources(root: &Path) -> Vec<(PathBuf, Language, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || ["target", "node_modules"].contains(&name.as_str()) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(language) = Language::from_path(&name)
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                out.push((path, language, text));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn bare_parse(files: &[(PathBuf, Language, String)]) -> usize {
    let mut nodes = 0;
    for (_, language, text) in files {
        let mut parser = tree_sitter::Parser::new();
        let grammar: tree_sitter::Language = match language {
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::Python => tree_sitter_python::LANGUAGE.into(),
            Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
        };
        parser.set_language(&grammar).unwrap();
        let tree = parser.parse(text, None).unwrap();
        nodes += tree.root_node().child_count() as usize;
    }
    nodes
}

/// The best of `passes` timings of `pass`.
fn best(passes: usize, mut pass: impl FnMut()) -> Duration {
    (0..passes)
        .map(|_| {
            let started = Instant::now();
            pass();
            started.elapsed()
        })
        .min()
        .unwrap()
}

fn static_provider(passes: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = sources(&root);
    let bytes: usize = files.iter().map(|f| f.2.len()).sum();
    println!(
        "static provider: {} files, {:.1} MiB, best of {passes} passes",
        files.len(),
        bytes as f64 / 1_048_576.0
    );
    let input = |task, (path, language, text): &(PathBuf, Language, String)| AiInput {
        task,
        language: *language,
        path: path.display().to_string(),
        content: text.clone(),
    };
    let inputs: HashMap<AiTask, Vec<AiInput>> = AiTask::ALL
        .into_iter()
        .map(|task| (task, files.iter().map(|f| input(task, f)).collect()))
        .collect();

    let parse = best(passes, || {
        std::hint::black_box(bare_parse(&files));
    });
    let per_s = |d: Duration| files.len() as f64 / d.as_secs_f64();
    println!(
        "RESULT bare tree-sitter parse: {:.0} files/s ({:.1} ms per pass)",
        per_s(parse),
        parse.as_secs_f64() * 1e3
    );
    for task in AiTask::ALL {
        let took = best(passes, || {
            for input in &inputs[&task] {
                std::hint::black_box(static_analysis::answer(input).unwrap());
            }
        });
        println!(
            "RESULT static provider {task}: {:.0} files/s, {:.2}x the bare parse{}",
            per_s(took),
            took.as_secs_f64() / parse.as_secs_f64(),
            if task == AiTask::FileSummary {
                " (goal <= 1.5x)"
            } else {
                ""
            }
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let chain = Chain::default();
    let took = best(passes, || {
        runtime.block_on(async {
            for (path, language, text) in &files {
                let path = path.display().to_string();
                std::hint::black_box(
                    chain
                        .run(AiTask::FileSummary, *language, &path, text)
                        .await
                        .unwrap(),
                );
            }
        });
    });
    println!(
        "RESULT whole chain file_summary (redaction, blob id, provider): {:.0} files/s, {:.2}x the bare parse",
        per_s(took),
        took.as_secs_f64() / parse.as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e3
}

fn cached_requests(requests: usize) {
    let server = InProcess::start(&[("AI_REQUESTS_PER_MINUTE", "100000".to_owned())]);
    let runtime = &server.runtime;
    let content = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hivesync-ai/src/pipeline.rs"),
    )
    .unwrap();
    let body = serde_json::json!({
        "project_id": server.project.to_string(),
        "path": "src/pipeline.rs",
        "content": content,
    })
    .to_string();
    let call =
        |method: Method, path: String, body: Option<String>| server.call(method, &path, body);
    // The first request runs on the worker; wait for it (not timed).
    runtime.block_on(async {
        let (status, bytes) = call(
            Method::POST,
            "/api/v1/ai/file-summary".into(),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
        let accepted: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let job = accepted["job_id"].as_str().unwrap().to_owned();
        loop {
            let (_, bytes) = call(Method::GET, format!("/api/v1/ai/result/{job}"), None).await;
            let result: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if result["state"] == "success" {
                break;
            }
            assert_ne!(result["state"], "failed", "{result}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut cached = Vec::with_capacity(requests);
    let mut baseline = Vec::with_capacity(requests);
    runtime.block_on(async {
        for _ in 0..requests {
            let started = Instant::now();
            let (status, bytes) = call(Method::GET, "/api/v1/users/me".into(), None).await;
            assert_eq!(status, 200);
            std::hint::black_box(bytes);
            baseline.push(started.elapsed());

            let started = Instant::now();
            let (status, bytes) = call(
                Method::POST,
                "/api/v1/ai/file-summary".into(),
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 202);
            let accepted: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(accepted["cached"], true, "{accepted}");
            let job = accepted["job_id"].as_str().unwrap();
            let (status, bytes) = call(Method::GET, format!("/api/v1/ai/result/{job}"), None).await;
            assert_eq!(status, 200);
            let result: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(result["state"], "success");
            cached.push(started.elapsed());
        }
    });
    cached.sort();
    baseline.sort();
    println!(
        "RESULT cached AI request (POST + GET result, {} bytes of source): p50 {:.2} ms, p99 {:.2} ms (goal <= 10 ms); {:.2}x GET /users/me (p50 {:.2} ms, p99 {:.2} ms)",
        content.len(),
        percentile(&cached, 0.5),
        percentile(&cached, 0.99),
        percentile(&cached, 0.5) / percentile(&baseline, 0.5),
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
    );
}

fn main() {
    static_provider(env_number("AI_BENCH_PASSES", 5));
    cached_requests(env_number("AI_BENCH_REQUESTS", 300));
}
