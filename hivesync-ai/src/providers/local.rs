//! A local GGUF model run by candle inside the worker process (spec §6.2's first provider).
//!
//! The file is checked when the provider is built (architecture, tokenizer, context length; its
//! sha256 names the model, so a different file never reuses a cached answer), but the weights
//! are loaded only when the first job needs them, once per process, and kept: an API server that
//! only takes requests never holds a model in memory. One generation runs at a time per process
//! (a GPU worker runs one job at a time anyway).
//!
//! The prompt is ChatML written by hand (candle does not render chat templates), clipped to the
//! model's context: a summary reads the head of a file that does not fit, with a warning; comment
//! and rename tasks need every numbered line, so a file that does not fit is skipped. Decoding is
//! greedy, within a token budget and a time limit, and stops when the job is given up. The output
//! is parsed into the same structured answer as OpenAI's; output that does not parse is
//! `Unavailable`, so the chain moves on: a small model's garbage is never a result.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{self, ModelWeights};
use hivesync_core::config::{LocalAiConfig, LocalAiDevice};
use hivesync_core::ports::{
    AiAnswer, AiInput, AiProvider, AiReply, AiTask, FileSummary, LineCounts,
};
use hivesync_core::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::ChainFor;
use super::openai::{parse_answer, system_prompt, user_prompt};

/// The architectures `quantized_llama` runs (candle does not dispatch on the GGUF's own).
const ARCHITECTURES: [&str; 2] = ["llama", "mistral"];
/// The fewest prompt tokens a budget must leave in the context.
const MIN_PROMPT_ROOM: usize = 64;
/// Characters per token assumed before the tokenizer is loaded (code tokenises at 3–4).
const CHARS_PER_TOKEN_ESTIMATE: usize = 3;

/// Where this process runs the model.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Here, on this device.
    Here(Device),
    /// Not in this process: the provider skips every input, saying why (CPU workers when the
    /// model runs on GPU workers).
    Elsewhere(&'static str),
}

/// Where `place` runs the model `config` describes.
pub fn placement(config: &LocalAiConfig, place: ChainFor) -> Result<Placement> {
    match (config.device, place) {
        (LocalAiDevice::Cpu, ChainFor::Cpu) => Ok(Placement::Here(Device::Cpu)),
        (LocalAiDevice::Cpu, ChainFor::Gpu) => Err(Error::new(
            ErrorKind::Config,
            "LOCAL_AI_DEVICE is cpu: local-model jobs run on CPU workers and a GPU worker would have none to take; set LOCAL_AI_DEVICE=gpu",
        )),
        (LocalAiDevice::Gpu, ChainFor::Cpu) => Ok(Placement::Elsewhere(
            "the local model runs on GPU workers (LOCAL_AI_DEVICE=gpu)",
        )),
        (LocalAiDevice::Gpu, ChainFor::Gpu) => {
            let why = if candle_core::utils::cuda_is_available() {
                match Device::new_cuda(0) {
                    Ok(device) => return Ok(Placement::Here(device)),
                    Err(err) => format!("no CUDA device could be opened ({err})"),
                }
            } else {
                "this build has no CUDA (build with `--features local-ai,candle-core/cuda`)"
                    .to_owned()
            };
            if config.cpu_fallback {
                tracing::warn!(%why, "the GPU worker runs the local model on its CPU (LOCAL_AI_CPU_FALLBACK)");
                Ok(Placement::Here(Device::Cpu))
            } else {
                Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "a GPU worker cannot start: {why}; set LOCAL_AI_CPU_FALLBACK=true to run the model on the CPU instead"
                    ),
                ))
            }
        }
    }
}

/// The local model provider. Clones share the loaded model.
#[derive(Clone)]
pub struct LocalProvider {
    path: PathBuf,
    identity: String,
    context: usize,
    max_new_tokens: usize,
    timeout: Duration,
    placement: Placement,
    loaded: Arc<Mutex<Option<Loaded>>>,
    loads: Arc<AtomicUsize>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("model", &self.identity)
            .field("context", &self.context)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

/// A model in memory, with its tokenizer and chat-turn tokens.
struct Loaded {
    model: ModelWeights,
    tokenizer: Tokenizer,
    device: Device,
    im_start: u32,
    im_end: u32,
    eos: Option<u32>,
}

/// What one generation made.
#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    pub tokens: u32,
    pub prompt_tokens: u32,
    /// The file was cut to fit the context.
    pub clipped: bool,
    /// Generation hit the token budget before the end of its turn.
    pub truncated: bool,
}

impl LocalProvider {
    /// Checks the model file `config` names (readable, GGUF, an architecture and tokenizer this
    /// provider runs) and names it by its sha256; nothing is loaded yet.
    pub fn new(config: &LocalAiConfig, placement: Placement) -> Result<Self> {
        let path = config.model_path.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "LOCAL_AI_MODEL_PATH must be set when LOCAL_AI_ENABLED is true",
            )
        })?;
        let header = read_header(&path)?;
        let context = header_context(&header)?;
        // A prompt needs room too: a budget that leaves none would fail every request.
        if config.max_new_tokens as usize + MIN_PROMPT_ROOM > context {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "LOCAL_AI_MAX_NEW_TOKENS ({}) leaves no room for a prompt in the model's context of {context} tokens",
                    config.max_new_tokens
                ),
            ));
        }
        let identity = model_identity(&path)?;
        Ok(LocalProvider {
            path,
            identity,
            context,
            max_new_tokens: config.max_new_tokens as usize,
            timeout: config.timeout,
            placement,
            loaded: Arc::default(),
            loads: Arc::default(),
        })
    }

    /// How many times this provider (and its clones) read the weights: once per process.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::Relaxed)
    }

    /// The context this model is run with, in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Whether `input` could be answered by this model wherever it runs (the API routes jobs by
    /// it): everything but comment and rename tasks on files too long to fit whole.
    pub fn eligible(&self, input: &AiInput) -> std::result::Result<(), String> {
        if input.task == AiTask::FileSummary {
            return Ok(());
        }
        let estimate = user_prompt(input).len() / CHARS_PER_TOKEN_ESTIMATE
            + system_prompt(input.task).len() / CHARS_PER_TOKEN_ESTIMATE;
        if estimate + self.max_new_tokens > self.context {
            return Err(format!(
                "the file (about {estimate} tokens) does not fit the local model's context of {} with {} to answer",
                self.context, self.max_new_tokens
            ));
        }
        Ok(())
    }

    /// Loads the model if this process has not yet (blocking: call off the async runtime).
    pub fn load(&self) -> Result<()> {
        let device = match &self.placement {
            Placement::Here(device) => device.clone(),
            Placement::Elsewhere(why) => return Err(Error::unavailable(*why)),
        };
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Loaded::open(&self.path, &device)?);
            self.loads.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The tokens `prompt` is sent to the model as (clipped as [`LocalProvider::generate`]
    /// clips it), for benchmarks that drive the same model with candle alone.
    pub fn prompt_ids(&self, prompt: &ChatPrompt) -> Result<Vec<u32>> {
        self.load()?;
        let slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = slot
            .as_ref()
            .ok_or_else(|| Error::internal("the local model is not loaded"))?;
        Ok(loaded
            .prompt(prompt, self.context.saturating_sub(self.max_new_tokens))?
            .0)
    }

    /// Generates the answer to `prompt` greedily, within the budget. Blocking; stops when
    /// `cancel` is set.
    ///
    /// The time limit counts from the call: waiting for another job's generation and the
    /// prompt's forward pass are part of it.
    pub fn generate(&self, prompt: &ChatPrompt, cancel: &AtomicBool) -> Result<Generated> {
        let deadline = Instant::now() + self.timeout;
        self.load()?;
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = slot
            .as_mut()
            .ok_or_else(|| Error::internal("the local model is not loaded"))?;
        loaded.generate(prompt, self.context, self.max_new_tokens, deadline, cancel)
    }
}

/// One chat: the system turn and the user turn, whose `body` (the file) is what may be clipped.
#[derive(Debug, Clone, Default)]
pub struct ChatPrompt {
    pub system: String,
    pub head: String,
    pub body: String,
    pub tail: String,
    /// Whether the body may be cut to fit the context (else a file that does not fit fails).
    pub may_clip: bool,
}

impl ChatPrompt {
    /// What the local model is asked for `input`. A summary is asked after the file, in words
    /// (a 135M model echoes a file it reads last); the line tasks send OpenAI's numbered file.
    pub fn for_input(input: &AiInput) -> ChatPrompt {
        if input.task == AiTask::FileSummary {
            return ChatPrompt {
                system: "You are a helpful assistant who documents source code. Answer in plain \
                         English sentences, without code."
                    .to_owned(),
                head: format!(
                    "Here is the {} file `{}`:\n```\n",
                    input.language.display_name(),
                    input.path
                ),
                body: input.content.clone(),
                tail: "\n```\nIn two or three sentences: what is this file for, and what are \
                       its main parts?"
                    .to_owned(),
                may_clip: true,
            };
        }
        let prompt = user_prompt(input);
        let (head, body) = prompt
            .split_once("\n\n")
            .map(|(head, body)| (format!("{head}\n\n"), body.to_owned()))
            .unwrap_or_else(|| (String::new(), prompt.clone()));
        ChatPrompt {
            system: system_prompt(input.task).to_owned(),
            head,
            body,
            tail: String::new(),
            may_clip: false,
        }
    }
}

fn model_error(what: &str) -> impl FnOnce(candle_core::Error) -> Error + '_ {
    move |err| Error::unavailable(format!("the local model {what}: {err}"))
}

fn read_header(path: &Path) -> Result<gguf_file::Content> {
    let file = File::open(path).map_err(|err| {
        Error::new(ErrorKind::Config, "LOCAL_AI_MODEL_PATH cannot be read")
            .with_context("path", path.display())
            .with_source(err)
    })?;
    gguf_file::Content::read(&mut BufReader::new(file)).map_err(|err| {
        Error::new(
            ErrorKind::Config,
            format!("LOCAL_AI_MODEL_PATH is not a GGUF model: {err}"),
        )
        .with_context("path", path.display())
    })
}

/// The context length of a model this provider runs, or why it cannot run it.
fn header_context(header: &gguf_file::Content) -> Result<usize> {
    let text = |key: &str| {
        header
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let architecture = text("general.architecture").unwrap_or_default();
    if !ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the local model's architecture is {architecture:?}; this build runs {}",
                ARCHITECTURES.join(" and ")
            ),
        ));
    }
    if text("tokenizer.ggml.model").as_deref() != Some("gpt2") {
        return Err(Error::new(
            ErrorKind::Config,
            "the local model has no byte-level BPE (gpt2) tokenizer in its GGUF metadata",
        ));
    }
    let declared = header
        .metadata
        .get(&format!("{architecture}.context_length"))
        .and_then(|v| {
            v.to_u32()
                .ok()
                .or_else(|| v.to_u64().ok().map(|n| n as u32))
        })
        .map_or(quantized_llama::MAX_SEQ_LEN, |n| n as usize);
    // candle's rope tables stop at MAX_SEQ_LEN positions.
    Ok(declared.min(quantized_llama::MAX_SEQ_LEN))
}

/// The model's name, `<file stem>@<12 hex digits of its sha256>`. Hashed once per process and
/// version of the file (a process that builds a CPU and a GPU chain reads it once).
fn model_identity(path: &Path) -> Result<String> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static NAMES: Mutex<Vec<(Key, String)>> = Mutex::new(Vec::new());
    let metadata = std::fs::metadata(path).map_err(|err| {
        Error::new(ErrorKind::Config, "LOCAL_AI_MODEL_PATH cannot be read").with_source(err)
    })?;
    let key = (path.to_owned(), metadata.len(), metadata.modified().ok());
    let known = |names: &Vec<(Key, String)>| {
        names
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, name)| name.clone())
    };
    if let Some(name) = known(&NAMES.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(name);
    }
    let name = format!(
        "{}@{}",
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_owned()),
        &file_sha256(path)?[..12]
    );
    NAMES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((key, name.clone()));
    Ok(name)
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|err| {
        Error::new(ErrorKind::Config, "LOCAL_AI_MODEL_PATH cannot be read").with_source(err)
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|err| {
            Error::new(ErrorKind::Config, "LOCAL_AI_MODEL_PATH cannot be read").with_source(err)
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// candle builds GPT-2's pre-tokenizer (a space before every text) for every byte-level
/// vocabulary it has no rule for; llama.cpp honours the file's `add_space_prefix` (false unless
/// set) and splits digits one by one for SmolLM. Without this a ChatML prompt reads
/// `<|im_start|> system`, which a model was never trained on.
fn fix_pre_tokenizer(tokenizer: &mut Tokenizer, content: &gguf_file::Content) {
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    let text = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let pre = text("tokenizer.ggml.pre").unwrap_or_else(|| "gpt2".to_owned());
    // The pre-tokenizers candle writes itself already have no prefix space.
    if ["qwen2", "smaug-bpe", "lfm2", "llama3"].contains(&pre.as_str()) {
        return;
    }
    let add_space_prefix = content
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let byte_level = ByteLevel::new(add_space_prefix, true, true);
    let pre_tokenizer: PreTokenizerWrapper = if pre == "smollm" {
        Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
    } else {
        byte_level.into()
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
}

impl Loaded {
    fn open(path: &Path, device: &Device) -> Result<Loaded> {
        let started = Instant::now();
        let file = File::open(path).map_err(|err| {
            Error::unavailable("the local model file cannot be read").with_source(err)
        })?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(model_error("is not GGUF"))?;
        let mut tokenizer =
            Tokenizer::from_gguf(&content).map_err(model_error("has no usable tokenizer"))?;
        fix_pre_tokenizer(&mut tokenizer, &content);
        let model = ModelWeights::from_gguf(content, &mut reader, device)
            .map_err(model_error("cannot be loaded"))?;
        let id = |token: &str| tokenizer.token_to_id(token);
        let (Some(im_start), Some(im_end)) = (id("<|im_start|>"), id("<|im_end|>")) else {
            return Err(Error::unavailable(
                "the local model's vocabulary has no ChatML turn tokens (<|im_start|>, <|im_end|>)",
            ));
        };
        let eos = id("<|endoftext|>");
        tracing::info!(path = %path.display(), ms = started.elapsed().as_millis() as u64,
            device = ?device, "local model loaded");
        Ok(Loaded {
            model,
            tokenizer,
            device: device.clone(),
            im_start,
            im_end,
            eos,
        })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|err| Error::unavailable(format!("the local model's tokenizer failed: {err}")))
    }

    /// The ChatML prompt's tokens: system turn, user turn (`head`, then `body` clipped to what
    /// fits), the assistant's turn opened.
    fn prompt(&self, prompt: &ChatPrompt, room: usize) -> Result<(Vec<u32>, bool)> {
        let newline = self.encode("\n")?;
        let mut ids = vec![self.im_start];
        ids.extend(self.encode("system\n")?);
        ids.extend(self.encode(&prompt.system)?);
        ids.push(self.im_end);
        ids.extend(&newline);
        ids.push(self.im_start);
        ids.extend(self.encode("user\n")?);
        // Text that spells a turn token (a file, a path) must not open a turn of its own.
        let plain = |text: &str| text.replace("<|", "<\u{200b}|");
        ids.extend(self.encode(&plain(&prompt.head))?);
        let mut tail = self.encode(&plain(&prompt.tail))?;
        tail.push(self.im_end);
        tail.extend(&newline);
        tail.push(self.im_start);
        tail.extend(self.encode("assistant\n")?);
        let mut body = self.encode(&plain(&prompt.body))?;
        let fixed = ids.len() + tail.len();
        let clipped = fixed + body.len() > room;
        if clipped {
            if !prompt.may_clip || fixed >= room {
                return Err(Error::unavailable(format!(
                    "the file is {} tokens; the local model's context leaves room for {}",
                    body.len(),
                    room.saturating_sub(fixed)
                )));
            }
            body.truncate(room - fixed);
        }
        ids.extend(body);
        ids.extend(tail);
        Ok((ids, clipped))
    }

    fn generate(
        &mut self,
        prompt: &ChatPrompt,
        context: usize,
        max_new: usize,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<Generated> {
        // An answer given up (or out of time) while it waited for the model is not started.
        stop_check(cancel, deadline, 0)?;
        let (ids, clipped) = self.prompt(prompt, context.saturating_sub(max_new))?;
        self.model.clear_kv_cache();
        let mut sampler = LogitsProcessor::from_sampling(0, Sampling::ArgMax);
        let input = Tensor::new(ids.as_slice(), &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(model_error("failed"))?;
        let logits = self
            .model
            .forward(&input, 0)
            .and_then(|t| t.squeeze(0))
            .map_err(model_error("failed"))?;
        let mut next = sampler.sample(&logits).map_err(model_error("failed"))?;
        let mut out = Vec::new();
        let mut truncated = true;
        for step in 0..max_new {
            if next == self.im_end || Some(next) == self.eos {
                truncated = false;
                break;
            }
            out.push(next);
            if step + 1 == max_new {
                break;
            }
            stop_check(cancel, deadline, out.len())?;
            let input = Tensor::new(&[next], &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(model_error("failed"))?;
            let logits = self
                .model
                .forward(&input, ids.len() + step)
                .and_then(|t| t.squeeze(0))
                .map_err(model_error("failed"))?;
            next = sampler.sample(&logits).map_err(model_error("failed"))?;
        }
        let text = self.tokenizer.decode(&out, true).map_err(|err| {
            Error::unavailable(format!("the local model's output does not decode: {err}"))
        })?;
        Ok(Generated {
            text,
            tokens: out.len() as u32,
            prompt_tokens: ids.len() as u32,
            clipped,
            truncated,
        })
    }
}

/// `Unavailable` once the answer was given up or its time is over.
fn stop_check(cancel: &AtomicBool, deadline: Instant, generated: usize) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::unavailable("the local model's answer was given up"));
    }
    if Instant::now() > deadline {
        return Err(Error::unavailable(format!(
            "the local model timed out after {generated} tokens"
        )));
    }
    Ok(())
}

/// Sets the flag when dropped: an abandoned answer (the job was stopped) stops its generation.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl AiProvider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn model(&self) -> String {
        self.identity.clone()
    }

    fn accepts(&self, input: &AiInput) -> std::result::Result<(), String> {
        if let Placement::Elsewhere(why) = &self.placement {
            return Err((*why).to_owned());
        }
        self.eligible(input)
    }

    async fn answer(&self, input: &AiInput) -> Result<AiReply> {
        let prompt = ChatPrompt::for_input(input);
        let task = input.task;
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let provider = self.clone();
        let generated = tokio::task::spawn_blocking(move || provider.generate(&prompt, &cancel))
            .await
            .map_err(|err| Error::unavailable("the local model stopped").with_source(err))??;
        let mut warnings = Vec::new();
        if generated.clipped {
            warnings.push(format!(
                "the file was clipped to the local model's context of {} tokens: the answer covers its beginning",
                self.context
            ));
        }
        let answer = match task {
            AiTask::FileSummary => AiAnswer::Summary(FileSummary {
                text: prose(&generated.text, generated.truncated)?,
                lines: LineCounts::default(),
                symbols: Vec::new(),
                imports: Vec::new(),
                module_doc: None,
            }),
            _ => parse_answer(task, &generated.text)?,
        };
        Ok(AiReply {
            answer,
            warnings,
            tokens_generated: generated.tokens,
        })
    }
}

/// A model's summary when it reads as prose: code blocks and echoed prompt lines dropped, cut
/// back to its last whole sentence when the budget ran out; refused when it is not text (a
/// broken or random model writes bytes). Small models write prose far more reliably than JSON,
/// which is why summaries are asked for in words.
pub fn prose(text: &str, truncated: bool) -> Result<String> {
    let unusable = |why: &str| Error::unavailable(format!("the local model's summary {why}"));
    let mut kept = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let echoed = ["Path:", "Language:", "Here is the "]
            .iter()
            .any(|p| line.trim_start().starts_with(p));
        if !in_code && !echoed {
            kept.push(line.trim());
        }
    }
    let mut text = kept
        .into_iter()
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if truncated
        && let Some(end) = text.rfind(['.', '!', '?'])
        && end > 0
    {
        text.truncate(end + 1);
    }
    let total = text.chars().count();
    if total == 0 {
        return Err(unusable("is empty"));
    }
    let texty = text
        .chars()
        .filter(|c| {
            c.is_alphanumeric()
                || c.is_whitespace()
                || ".,;:!?'\"()[]{}`-_/*#<>=+&%$@|~".contains(*c)
        })
        .count();
    let words = text
        .split_whitespace()
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count();
    if text.contains('\u{fffd}')
        || text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(unusable("holds bytes that are not text"));
    }
    if texty * 10 < total * 9 || words < 3 {
        return Err(unusable("does not read as prose"));
    }
    Ok(text)
}

pub mod fixture {
    //! A tiny random llama model in GGUF, written on the spot: the real loader, tokenizer and
    //! generation path with no download (tests and benchmarks). Its answers are noise.

    use std::path::Path;

    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    use candle_core::{Device, Tensor};
    use hivesync_core::{Error, Result};

    const EMBEDDING: usize = 64;
    const HEADS: usize = 4;
    const KV_HEADS: usize = 2;
    const FEED_FORWARD: usize = 128;
    const BLOCKS: usize = 2;

    /// The byte → character map of byte-level BPE (GPT-2's).
    fn byte_chars() -> Vec<char> {
        let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .collect();
        let mut chars: Vec<u32> = printable.clone();
        let mut extra = 0;
        for byte in 0..256u32 {
            if !printable.contains(&byte) {
                printable.push(byte);
                chars.push(256 + extra);
                extra += 1;
            }
        }
        let mut by_byte = vec!['\0'; 256];
        for (byte, ch) in printable.into_iter().zip(chars) {
            by_byte[byte as usize] = char::from_u32(ch).unwrap_or('?');
        }
        by_byte
    }

    /// Deterministic weights (a small linear congruential generator), so every test writes
    /// the same model.
    fn weights(seed: &mut u64, shape: (usize, usize)) -> Result<QTensor> {
        let values: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
            })
            .collect();
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu).map_err(broken)?;
        QTensor::quantize(&tensor, GgmlDType::Q8_0).map_err(broken)
    }

    fn ones(len: usize) -> Result<QTensor> {
        let tensor = Tensor::ones(len, candle_core::DType::F32, &Device::Cpu).map_err(broken)?;
        QTensor::quantize(&tensor, GgmlDType::F32).map_err(broken)
    }

    fn broken(err: candle_core::Error) -> Error {
        Error::internal(format!("cannot write the tiny model: {err}"))
    }

    /// Writes the model to `path`, with a context of `context` tokens.
    pub fn write_tiny_model(path: &Path, context: u32) -> Result<()> {
        use gguf_file::Value;
        let mut tokens = vec![
            "<|endoftext|>".to_owned(),
            "<|im_start|>".to_owned(),
            "<|im_end|>".to_owned(),
        ];
        let mut types = vec![3u32, 3, 3];
        tokens.extend(byte_chars().into_iter().map(String::from));
        types.extend(std::iter::repeat_n(1, 256));
        let merges = ["Ġ t", "h e", "i n", "Ġt he"];
        for merge in merges {
            tokens.push(merge.replace(' ', ""));
            types.push(1);
        }
        let vocab = tokens.len();
        let strings =
            |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
        let metadata: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("general.name", Value::String("hivesync tiny random".into())),
            ("llama.context_length", Value::U32(context)),
            ("llama.embedding_length", Value::U32(EMBEDDING as u32)),
            ("llama.block_count", Value::U32(BLOCKS as u32)),
            ("llama.feed_forward_length", Value::U32(FEED_FORWARD as u32)),
            ("llama.attention.head_count", Value::U32(HEADS as u32)),
            ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
            (
                "llama.rope.dimension_count",
                Value::U32((EMBEDDING / HEADS) as u32),
            ),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strings(tokens)),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::U32).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                strings(merges.iter().map(|m| (*m).to_owned()).collect()),
            ),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ];
        let mut seed = 7u64;
        let head_dim = EMBEDDING / HEADS;
        let mut tensors: Vec<(String, QTensor)> = vec![
            (
                "token_embd.weight".into(),
                weights(&mut seed, (vocab, EMBEDDING))?,
            ),
            ("output_norm.weight".into(), ones(EMBEDDING)?),
        ];
        for block in 0..BLOCKS {
            let name = |part: &str| format!("blk.{block}.{part}.weight");
            let shapes = [
                ("attn_q", (EMBEDDING, EMBEDDING)),
                ("attn_k", (KV_HEADS * head_dim, EMBEDDING)),
                ("attn_v", (KV_HEADS * head_dim, EMBEDDING)),
                ("attn_output", (EMBEDDING, EMBEDDING)),
                ("ffn_gate", (FEED_FORWARD, EMBEDDING)),
                ("ffn_down", (EMBEDDING, FEED_FORWARD)),
                ("ffn_up", (FEED_FORWARD, EMBEDDING)),
            ];
            for (part, shape) in shapes {
                tensors.push((name(part), weights(&mut seed, shape)?));
            }
            tensors.push((name("attn_norm"), ones(EMBEDDING)?));
            tensors.push((name("ffn_norm"), ones(EMBEDDING)?));
        }
        let mut file = std::fs::File::create(path)
            .map_err(|err| Error::internal("cannot write the tiny model").with_source(err))?;
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut file, &metadata, &tensors).map_err(broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_is_kept_and_noise_refused() {
        assert_eq!(
            prose("  This file defines a point and its origin. It also", true).unwrap(),
            "This file defines a point and its origin."
        );
        assert_eq!(
            prose("Parses the configuration file.", false).unwrap(),
            "Parses the configuration file."
        );
        assert_eq!(
            prose(
                "Path: x.py\nLanguage: Python\n\n```python\ndef f():\n    pass\n```\n\nThis file defines f.\nIt is small.",
                false
            )
            .unwrap(),
            "This file defines f. It is small."
        );
        assert!(prose("```python\ndef f():\n    pass\n```", false).is_err());
        for noise in [
            "",
            "   ",
            "ab",
            "\u{fffd}\u{fffd} the file",
            "x\u{1}y is it",
            "#$%^&*()!@#$%^&*( ]] ;;",
        ] {
            assert!(prose(noise, false).is_err(), "{noise:?}");
        }
    }
}
