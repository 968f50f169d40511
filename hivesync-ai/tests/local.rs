//! The local provider on a tiny random GGUF model the test writes itself: the real GGUF reader,
//! the tokenizer built from the file's metadata, candle's llama and greedy decoding. Its output is
//! noise, which is the point of half of these tests: noise must never become a result.

#![cfg(feature = "local")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use candle_core::Device;
use hivesync_ai::pipeline::{Chain, Outcome};
use hivesync_ai::providers::local::{ChatPrompt, LocalProvider, Placement, fixture};
use hivesync_core::ErrorKind;
use hivesync_core::config::LocalAiConfig;
use hivesync_core::ports::{AiInput, AiProvider, AiTask, Language};

/// The tiny model's context, small enough that an ordinary file overflows it.
const CONTEXT: u32 = 1024;

fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    fixture::write_tiny_model(&path, CONTEXT).unwrap();
    path
}

fn config(path: &Path, max_new_tokens: u32) -> LocalAiConfig {
    LocalAiConfig {
        enabled: true,
        model_path: Some(path.to_owned()),
        max_new_tokens,
        timeout: Duration::from_secs(60),
        ..LocalAiConfig::default()
    }
}

fn provider(path: &Path, max_new_tokens: u32) -> LocalProvider {
    LocalProvider::new(&config(path, max_new_tokens), Placement::Here(Device::Cpu)).unwrap()
}

fn chat(body: &str, may_clip: bool) -> ChatPrompt {
    ChatPrompt {
        system: "Summarise.".to_owned(),
        head: "Path: a.py\n\n".to_owned(),
        body: body.to_owned(),
        tail: String::new(),
        may_clip,
    }
}

fn input(task: AiTask, content: &str) -> AiInput {
    AiInput {
        task,
        language: Language::Python,
        path: "app/point.py".to_owned(),
        content: content.to_owned(),
    }
}

#[tokio::test]
async fn the_local_provider_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let local = provider(&tiny_model(dir.path()), 16);
    hivesync_core::testkit::ai::run(&local).await;
    assert_eq!(local.name(), "local");
    assert!(local.model().starts_with("tiny@"), "{}", local.model());
    assert_eq!(local.context(), CONTEXT as usize);
}

#[test]
fn generation_is_greedy_bounded_and_loads_the_model_once() {
    let dir = tempfile::tempdir().unwrap();
    let local = provider(&tiny_model(dir.path()), 12);
    assert_eq!(local.loads(), 0, "nothing is loaded before a job needs it");
    let never = AtomicBool::new(false);
    let first = local
        .generate(&chat("def f():\n    return 1\n", true), &never)
        .unwrap();
    assert!(first.tokens >= 1 && first.tokens <= 12, "{first:?}");
    assert!(first.prompt_tokens > 10, "{first:?}");
    assert!(!first.clipped);
    let clone = local.clone();
    let second = clone
        .generate(&chat("def f():\n    return 1\n", true), &never)
        .unwrap();
    assert_eq!(first.text, second.text, "greedy decoding is deterministic");
    assert_eq!(first.tokens, second.tokens);
    assert_eq!(local.loads(), 1, "clones share the one loaded model");
}

#[test]
fn a_long_file_is_clipped_for_a_summary_and_refused_for_line_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let local = provider(&tiny_model(dir.path()), 8);
    let long: String = (0..200)
        .map(|i| format!("def function_{i}():\n    return {i}\n"))
        .collect();
    let never = AtomicBool::new(false);
    let summary = local.generate(&chat(&long, true), &never).unwrap();
    assert!(summary.clipped);
    assert!(
        summary.prompt_tokens as usize <= CONTEXT as usize - 8,
        "the prompt leaves room for the answer: {summary:?}"
    );
    let refused = local.generate(&chat(&long, false), &never).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    assert!(refused.message().contains("context"), "{refused}");

    // The API routes by the same rule, before any tokenizer is loaded.
    assert!(local.eligible(&input(AiTask::FileSummary, &long)).is_ok());
    let why = local
        .eligible(&input(AiTask::InlineComment, &long))
        .unwrap_err();
    assert!(why.contains("context"), "{why}");
    assert!(
        local
            .eligible(&input(AiTask::InlineComment, "x = 1\n"))
            .is_ok()
    );
}

#[test]
fn a_given_up_generation_stops() {
    let dir = tempfile::tempdir().unwrap();
    let local = provider(&tiny_model(dir.path()), 64);
    let cancelled = AtomicBool::new(true);
    let err = local
        .generate(&chat("def f():\n    pass\n", true), &cancelled)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("given up"), "{err}");
}

#[tokio::test]
async fn noise_is_a_provider_failure_and_the_chain_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(provider(&tiny_model(dir.path()), 24));
    let content = "import math\n\ndef area(radius):\n    return math.pi * radius ** 2\n";
    let err = local
        .answer(&input(AiTask::FileSummary, content))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = local
        .answer(&input(AiTask::RenameSuggestions, content))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    let chain = Chain::new(vec![local.clone()]);
    let outcome = chain
        .run(AiTask::FileSummary, Language::Python, "geo.py", content)
        .await
        .unwrap();
    assert_eq!(outcome.provider, "static");
    assert_eq!(outcome.attempts[0].provider, "local");
    assert_eq!(outcome.attempts[0].outcome, Outcome::Failed);
    assert!(
        outcome.attempts[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("summary"),
        "{:?}",
        outcome.attempts
    );
    assert_eq!(outcome.attempts[1].outcome, Outcome::Answered);
    assert!(outcome.summary.unwrap().text.contains("area"));
}

#[test]
fn a_model_that_cannot_run_is_refused_when_the_provider_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = dir.path().join("weights.bin");
    std::fs::write(&not_gguf, b"not a model at all").unwrap();
    let err = LocalProvider::new(&config(&not_gguf, 8), Placement::Here(Device::Cpu)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("GGUF"), "{err}");

    let missing = dir.path().join("missing.gguf");
    let err = LocalProvider::new(&config(&missing, 8), Placement::Here(Device::Cpu)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    // Same weights, another architecture: candle's llama must not be handed a model it is not.
    let model = tiny_model(dir.path());
    let mut file = std::fs::File::open(&model).unwrap();
    let mut content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    content.metadata.insert(
        "general.architecture".to_owned(),
        candle_core::quantized::gguf_file::Value::String("mamba".to_owned()),
    );
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            (
                name.clone(),
                content.tensor(&mut file, name, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let other = dir.path().join("mamba.gguf");
    let metadata: Vec<(&str, &candle_core::quantized::gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensors: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(
        &mut std::fs::File::create(&other).unwrap(),
        &metadata,
        &tensors,
    )
    .unwrap();
    let err = LocalProvider::new(&config(&other, 8), Placement::Here(Device::Cpu)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("mamba"), "{err}");
}

#[tokio::test]
async fn a_provider_placed_elsewhere_skips_every_input_and_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        LocalProvider::new(
            &config(&tiny_model(dir.path()), 8),
            Placement::Elsewhere("the local model runs on GPU workers (LOCAL_AI_DEVICE=gpu)"),
        )
        .unwrap(),
    );
    let why = local
        .accepts(&input(AiTask::FileSummary, "x = 1\n"))
        .unwrap_err();
    assert!(why.contains("GPU workers"), "{why}");
    let outcome = Chain::new(vec![local.clone()])
        .run(AiTask::FileSummary, Language::Python, "x.py", "x = 1\n")
        .await
        .unwrap();
    assert_eq!(outcome.provider, "static");
    assert_eq!(outcome.attempts[0].outcome, Outcome::Skipped);
    assert_eq!(local.loads(), 0);
}

/// The chain a configuration builds, in the spec's order: the local model first, OpenAI next,
/// the static analyser last; the local model's noise moves the answer to OpenAI.
#[tokio::test]
async fn the_configured_chain_runs_local_then_openai_then_static() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "{\"summary\": \"Computes the area of a circle.\"}"}, "finish_reason": "stop"}],
        })))
        .mount(&server)
        .await;
    let vars = std::collections::HashMap::from([
        ("DATA_DIR", dir.path().display().to_string()),
        ("LOCAL_AI_ENABLED", "true".to_owned()),
        ("LOCAL_AI_MODEL_PATH", model.display().to_string()),
        ("LOCAL_AI_MAX_NEW_TOKENS", "16".to_owned()),
        (
            "OPENAI_API_KEY",
            "sk-test-0123456789abcdefghijklmnop".to_owned(),
        ),
        ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
    ]);
    let config =
        hivesync_core::config::Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let chain =
        hivesync_ai::providers::chain(&config, hivesync_ai::providers::ChainFor::Cpu).unwrap();
    let names: Vec<&str> = chain.providers().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["local", "openai", "static"]);
    let content = "import math\n\ndef area(radius):\n    return math.pi * radius ** 2\n";
    let outcome = chain
        .run(AiTask::FileSummary, Language::Python, "geo.py", content)
        .await
        .unwrap();
    assert_eq!(outcome.provider, "openai");
    assert_eq!(outcome.attempts[0].provider, "local");
    assert_eq!(outcome.attempts[0].outcome, Outcome::Failed);
    assert_eq!(outcome.attempts[1].outcome, Outcome::Answered);
    assert_eq!(
        outcome.summary.unwrap().text,
        "Computes the area of a circle."
    );

    // With the model on GPU workers, the API's chain routes what the model takes to them, and
    // skips the model itself.
    let mut gpu_vars = vars.clone();
    gpu_vars.insert("LOCAL_AI_DEVICE", "gpu".to_owned());
    let config =
        hivesync_core::config::Config::from_lookup(|name| gpu_vars.get(name).cloned()).unwrap();
    let api =
        hivesync_ai::providers::chain(&config, hivesync_ai::providers::ChainFor::Cpu).unwrap();
    assert!(!api.is_gpu_workers());
    assert!(api.routes_to_gpu(&input(AiTask::FileSummary, content)));
    let long: String = (0..300).map(|i| format!("v{i} = {i}\n")).collect();
    assert!(!api.routes_to_gpu(&input(AiTask::RenameSuggestions, &long)));
    assert!(
        api.providers()[0]
            .accepts(&input(AiTask::FileSummary, content))
            .is_err()
    );
    // A GPU worker's chain where the build has no CUDA and no fallback is allowed: refused; with
    // the fallback, the model runs here.
    if !candle_core::utils::cuda_is_available() {
        let err = hivesync_ai::providers::chain(&config, hivesync_ai::providers::ChainFor::Gpu)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("LOCAL_AI_CPU_FALLBACK"), "{err}");
        gpu_vars.insert("LOCAL_AI_CPU_FALLBACK", "true".to_owned());
        let config =
            hivesync_core::config::Config::from_lookup(|name| gpu_vars.get(name).cloned()).unwrap();
        let gpu =
            hivesync_ai::providers::chain(&config, hivesync_ai::providers::ChainFor::Gpu).unwrap();
        assert!(gpu.is_gpu_workers());
        assert!(!gpu.routes_to_gpu(&input(AiTask::FileSummary, content)));
        assert!(
            gpu.providers()[0]
                .accepts(&input(AiTask::FileSummary, content))
                .is_ok()
        );
    }
}

#[test]
fn a_token_budget_that_leaves_no_room_for_a_prompt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalProvider::new(
        &config(&tiny_model(dir.path()), CONTEXT),
        Placement::Here(Device::Cpu),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("LOCAL_AI_MAX_NEW_TOKENS"), "{err}");
}
