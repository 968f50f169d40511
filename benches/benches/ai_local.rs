//! The local model provider (SmolLM2-135M-Instruct, the model CI uses), against a bare candle
//! generation loop measured in the same run:
//!
//! - **tokens per second**: the provider's whole generation (tokenising the ChatML prompt, the
//!   prompt's forward pass, greedy decoding with its stop, budget and cancellation checks) against
//!   candle alone running the same model on the same prompt tokens for the same number of tokens.
//!   Goal: ≥ 0.9×.
//! - **`POST` to result** for a 200-line file: `POST /api/v1/ai/file-summary` through the server's
//!   HTTP stack in process, a worker running the chain, polling `GET /api/v1/ai/result/{id}`
//!   until it succeeds (the model is loaded by then, as on a worker that has run a job).
//!
//! `CANDLE_DEQUANTIZE_ALL=1 RAYON_NUM_THREADS=2 cargo bench -p hivesync-benches --features local-ai --bench ai_local`
//! with the model at `HIVESYNC_LOCAL_MODEL` (`.ci/fetch-model` prints its path). `AI_LOCAL_TOKENS`
//! (64) is the token budget, `AI_LOCAL_RUNS` (3) the runs of each side (the best is kept).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use hivesync_ai::providers::local::{ChatPrompt, LocalProvider, Placement};
use hivesync_benches::env_number;
use hivesync_benches::in_process::InProcess;
use hivesync_core::config::LocalAiConfig;
use hivesync_core::ports::{AiInput, AiTask, Language};
use poem::http::Method;

fn model_path() -> Option<PathBuf> {
    let path = std::env::var("HIVESYNC_LOCAL_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/hivesync-models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    path.is_file().then_some(path)
}

/// The first 200 lines of one of our own files.
fn two_hundred_lines() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hivesync-ai/src/pipeline.rs"),
    )
    .unwrap();
    text.lines().take(200).map(|l| format!("{l}\n")).collect()
}

/// candle alone: the prompt's forward pass, then `tokens - 1` greedy steps, no stop.
fn bare_loop(model: &mut ModelWeights, prompt: &[u32], tokens: usize) -> Duration {
    let started = Instant::now();
    model.clear_kv_cache();
    let mut sampler = LogitsProcessor::from_sampling(0, Sampling::ArgMax);
    let input = Tensor::new(prompt, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let mut next = sampler.sample(&logits).unwrap();
    for step in 1..tokens {
        let input = Tensor::new(&[next], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model
            .forward(&input, prompt.len() + step - 1)
            .unwrap()
            .squeeze(0)
            .unwrap();
        next = sampler.sample(&logits).unwrap();
    }
    std::hint::black_box(next);
    started.elapsed()
}

fn tokens_per_second(model: &Path, budget: u32, runs: usize) {
    let config = LocalAiConfig {
        enabled: true,
        model_path: Some(model.to_owned()),
        max_new_tokens: budget,
        timeout: Duration::from_secs(600),
        ..LocalAiConfig::default()
    };
    let provider = LocalProvider::new(&config, Placement::Here(Device::Cpu)).unwrap();
    let started = Instant::now();
    provider.load().unwrap();
    let load = started.elapsed();
    let input = AiInput {
        task: AiTask::FileSummary,
        language: Language::Rust,
        path: "src/pipeline.rs".to_owned(),
        content: two_hundred_lines(),
    };
    let prompt = ChatPrompt::for_input(&input);
    let never = AtomicBool::new(false);
    let mut provider_best = Duration::MAX;
    let mut generated = None;
    for _ in 0..runs {
        let started = Instant::now();
        let answer = provider.generate(&prompt, &never).unwrap();
        provider_best = provider_best.min(started.elapsed());
        generated = Some(answer);
    }
    let generated = generated.unwrap();
    let ids = provider.prompt_ids(&prompt).unwrap();
    assert_eq!(ids.len() as u32, generated.prompt_tokens);

    let mut file = std::fs::File::open(model).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut bare = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let tokens = generated.tokens as usize;
    let bare_best = (0..runs)
        .map(|_| bare_loop(&mut bare, &ids, tokens))
        .min()
        .unwrap();
    let provider_rate = tokens as f64 / provider_best.as_secs_f64();
    let bare_rate = tokens as f64 / bare_best.as_secs_f64();
    println!(
        "RESULT local provider (SmolLM2-135M Q4_1, {} prompt + {} generated tokens, best of {runs}): {:.1} tokens/s, {:.2}x a bare candle loop ({:.1} tokens/s) (goal >= 0.9x); model load {:.2} s",
        ids.len(),
        tokens,
        provider_rate,
        provider_rate / bare_rate,
        bare_rate,
        load.as_secs_f64(),
    );
}

fn post_to_result(model: &Path, budget: u32) {
    let server = InProcess::start(&[
        ("LOCAL_AI_ENABLED", "true".to_owned()),
        ("LOCAL_AI_MODEL_PATH", model.display().to_string()),
        ("LOCAL_AI_MAX_NEW_TOKENS", budget.to_string()),
    ]);
    let project = server.project;
    let call = |method: Method, path: String, body: Option<String>| {
        let server = &server;
        async move {
            let (status, bytes) = server.call(method, &path, body).await;
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let ask = |content: String| {
        let call = &call;
        async move {
            let body = serde_json::json!({
                "project_id": project.to_string(),
                "path": "src/pipeline.rs",
                "content": content,
            });
            let started = Instant::now();
            let (status, accepted) = call(
                Method::POST,
                "/api/v1/ai/file-summary".into(),
                Some(body.to_string()),
            )
            .await;
            assert_eq!(status, 202, "{accepted}");
            let job = accepted["job_id"].as_str().unwrap().to_owned();
            loop {
                let (_, result) = call(Method::GET, format!("/api/v1/ai/result/{job}"), None).await;
                if result["state"] == "success" {
                    return (started.elapsed(), result);
                }
                assert_ne!(result["state"], "failed", "{result}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let file = two_hundred_lines();
    server.runtime.block_on(async {
        // The worker's first job loads the model; a warm worker is what is measured.
        let (first, _) = ask(format!("// warm-up\n{file}")).await;
        let (elapsed, result) = ask(file).await;
        println!(
            "RESULT local provider POST to result (200-line file, warm worker): {:.2} s (the first job, which loads the model: {:.2} s); answered by {}, {} tokens generated",
            elapsed.as_secs_f64(),
            first.as_secs_f64(),
            result["provider"],
            result["result"]["tokens_generated"],
        );
    });
}

fn main() {
    let Some(model) = model_path() else {
        println!(
            "SKIP local provider: no model at HIVESYNC_LOCAL_MODEL or ~/.cache/hivesync-models (run .ci/fetch-model)"
        );
        return;
    };
    let budget = env_number("AI_LOCAL_TOKENS", 64) as u32;
    tokens_per_second(&model, budget, env_number("AI_LOCAL_RUNS", 3));
    post_to_result(&model, budget);
}
