//! Configuration from the environment.
//!
//! Every setting has the spec's canonical variable name (DESIGN.md §4). With nothing set,
//! everything runs embedded under `./hivesync-data`: SQLite, the filesystem object store, the
//! in-process rate limiter, and secrets generated once and kept in `DATA_DIR/secrets/`. An invalid
//! value is an error of kind [`ErrorKind::Config`] whose message and `variable` context name the
//! variable. A deployment with an external database must be given `JWT_SECRET` and
//! `PREVIEW_TOKEN_SECRET` explicitly: silently generating them would log every user out whenever a
//! replica starts on a fresh disk.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATA_DIR` | `./hivesync-data` | repos, previews, tmp, logs, cache, objects |
//! | `DATABASE_URL` | `sqlite://$DATA_DIR/hivesync.db` | `sqlite://…` or `postgres://…` |
//! | `REDIS_URL` | unset | `redis://…` or `rediss://…` |
//! | `JWT_SECRET` | generated (embedded) | HS256 key for access tokens, ≥ 32 bytes |
//! | `JWT_TTL_SECONDS` | 3600 | access-token lifetime |
//! | `PREVIEW_TOKEN_SECRET` | generated (embedded) | signing key for preview tokens, ≥ 32 bytes |
//! | `PREVIEW_TOKEN_KEY_ID` | `k1` | key id of the signing key |
//! | `PREVIEW_TOKEN_PREVIOUS_SECRETS` | unset | `kid:secret,kid:secret`: keys that still verify |
//! | `PREVIEW_TOKEN_TTL_SECONDS` | 300 | preview-token lifetime |
//! | `PREVIEW_MAX_TIMEOUT_MS` | 120000 | a preview build's time limit, not counting its dependency install |
//! | `PREVIEW_INSTALL_TIMEOUT_MS` | 600000 | a dependency install's own time limit (it fills a cache later builds reuse) |
//! | `PREVIEW_BUILDER_CONCURRENCY` | 2 | parallel builds per worker |
//! | `PREVIEW_BUILDS_PER_MINUTE` | 30 | `POST /preview/build` requests per user and project per minute |
//! | `PREVIEW_DOWNLOAD_REDIRECT` | `false` | downloads redirect to a presigned object-store URL (S3 only) |
//! | `PREVIEW_STATUS_CACHE` | `true` | with PostgreSQL, serve build status from memory, kept correct by the database's change feed |
//! | `PREVIEW_OPTIMIZE` | `false` | build previews as for release: minified, and Hermes bytecode for Expo (slower builds, smaller bundles); off, previews are unminified JavaScript, which Hermes runs too and whose stack traces are readable |
//! | `PREVIEW_SANDBOX` | `auto` | `auto` (bubblewrap when it runs here), `bwrap` (required), `none`: how the bundler, which runs the project's code, is confined |
//! | `PREVIEW_INSTALL_HOSTS` | `registry.npmjs.org,registry.yarnpkg.com` | the only hosts a dependency install may reach (`host`, `*.domain`, `host:port`): the registries; a manifest or lockfile naming anything else fails the build |
//! | `PREVIEW_INSTALL_ALLOW_PRIVATE` | `false` | let those hosts be at loopback or private addresses (a registry mirror on the local network) |
//! | `PUBLIC_URL` | unset (the request's `Host`) | external base URL used in preview URLs and QR codes |
//! | `WORKER_CONCURRENCY` | 2 | parallel jobs per CPU worker |
//! | `OBJECT_STORAGE_PROVIDER` | `filesystem` (`s3` when a bucket is set) | `filesystem`, `s3`, `r2`, `linode`, `minio` |
//! | `OBJECT_STORAGE_ENDPOINT` | unset (AWS) | custom endpoint; path-style addressing |
//! | `OBJECT_STORAGE_REGION` | `us-east-1` (`auto` for R2) | |
//! | `OBJECT_STORAGE_ACCESS_KEY` / `_SECRET_KEY` | unset (ambient AWS credentials) | set both or neither |
//! | `OBJECT_STORAGE_BUCKET_PREVIEWS` | unset | bucket for preview bundles |
//! | `OBJECT_STORAGE_PREFIX` | empty | key prefix inside the bucket |
//! | `REPO_STORAGE` | `shared` with PostgreSQL and an S3 bucket, else `local` | `local`: project repositories on this node's disk; `shared`: branch heads in the database and git objects in the object store, `DATA_DIR/repos` a cache (several machines) |
//! | `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_MODEL` | unset, `https://api.openai.com/v1`, `gpt-4o-mini` | any OpenAI-compatible `/chat/completions` endpoint |
//! | `OPENAI_TIMEOUT_SECONDS`, `OPENAI_MAX_RETRIES` | 60, 2 | per call; retries on 429 and 5xx, honouring `Retry-After` |
//! | `LOCAL_AI_ENABLED`, `LOCAL_AI_MODEL_PATH` | `false`, unset | a GGUF model (llama architecture, byte-level BPE tokenizer inside) run by candle in the workers; needs a build with the `local-ai` feature |
//! | `LOCAL_AI_DEVICE` | `cpu` | `cpu`: local-model jobs run on CPU workers from `ai_jobs`; `gpu`: they go to `gpu_ai_jobs`, which only `hivesync worker --role gpu` takes |
//! | `LOCAL_AI_CPU_FALLBACK` | `false` | let a GPU worker whose build or machine has no CUDA run the model on its CPU instead of refusing to start |
//! | `LOCAL_AI_MAX_NEW_TOKENS`, `LOCAL_AI_TIMEOUT_SECONDS` | 256, 120 | the token budget of one answer; how long one generation may run before the chain moves on |
//! | `AI_REQUESTS_PER_MINUTE` | 30 | AI requests (`POST /ai/*`) per user |
//! | `AI_MAX_INPUT_BYTES` | 262144 | the largest file an AI request takes (413 beyond) |
//! | `AUTOSCALER_ENABLED`, `_MIN_WORKERS`, `_MAX_WORKERS`, `_SCALE_OUT_THRESHOLD`, `_SCALE_IN_THRESHOLD`, `_POLL_INTERVAL_SECONDS` | `false`, 1, 4, 20, 5, 30 | |
//! | `AUTOSCALER_SCALER`, `AUTOSCALER_COMMAND`, `AUTOSCALER_DRAIN_TARGET_SECONDS`, `AUTOSCALER_SCALE_IN_COOLDOWN_SECONDS` | `none`, unset, unset, 300 | `none`, `command` (runs the command with `{n}`, `{role}`), `local` (worker processes here) |
//! | `REDIS_KEY_PREFIX` | empty | prefix of every Redis key |
//! | `CLEANUP_INTERVAL_SECONDS` | 600 | how often the cleanup worker runs |
//! | `PREVIEW_RETENTION_SECONDS`, `PREVIEW_OBJECT_RETENTION_SECONDS` | 86400, 604800 | age of local bundles / stored preview objects that cleanup removes |
//! | `TMP_RETENTION_SECONDS` | 21600 | age of `DATA_DIR/tmp` entries that cleanup removes |
//! | `LOG_ROTATE_BYTES`, `LOG_RETENTION_SECONDS` | 10 MiB, 604800 | rotation size and age of rotated logs in `DATA_DIR/logs` |
//! | `CACHE_RETENTION_SECONDS` | 2592000 | age of unused `DATA_DIR/cache` entries |
//! | `METRICS_TOKEN` | unset | a bearer token for `/metrics` (admins can always read it) |
//! | `LOG_LEVEL` | `info` | a level or a `target=level,…` filter |
//! | `LOG_FORMAT` | `text` | `text` or `json` |
//! | `HIVESYNC_BIND` | `127.0.0.1:8080` | listen address of `hivesync serve` |
//! | `MAX_REQUEST_BODY_BYTES` | 1048576 | JSON request bodies larger than this get 413 |
//! | `LOGIN_RATE_LIMIT_PER_MINUTE` | 10 | login attempts per client address, failed logins per account |
//! | `TRUST_PROXY_HEADERS` | `false` | behind one reverse proxy: the client address is the last `X-Forwarded-For` entry |
//! | `HTTP_HEADER_TIMEOUT_SECONDS` | 20 | the longest a request head may take to arrive (and a keep-alive connection may idle) |
//! | `HTTP_BODY_TIMEOUT_SECONDS` | 30 | the longest a request body may pause before the request gets `408` |
//! | `HTTP_MAX_CONNECTIONS` | ¾ of the open-file limit | connections held at once; more are answered `503` and closed |
//! | `HTTP_MAX_CONNECTIONS_PER_CLIENT` | 128 (0 with `TRUST_PROXY_HEADERS`) | connections one client address holds at once; more are answered `429` and closed; 0: no bound |
//! | `SYNC_MAX_FILE_BYTES` | 52428800 (50 MiB) | largest file a sync may carry |
//! | `SYNC_MAX_UPLOAD_BYTES` | 524288000 (500 MiB) | largest sync upload (request body, and unpacked archive contents) |
//! | `SYNC_MAX_FILES` | 100000 | most files in one tree |
//! | `SYNC_MAX_MANIFEST_BYTES` | 33554432 (32 MiB) | largest delta-sync manifest |
//! | `IMPORT_FILE_ROOTS` | unset (no `file://` imports) | comma-separated directories `file://` imports may read from (never inside `DATA_DIR`) |
//! | `IMPORT_ALLOW_PRIVATE_NETWORKS` | `false` | let `http(s)://` imports reach loopback, private and link-local addresses |
//! | `IMPORT_TIMEOUT_SECONDS` | 300 | time limit of one import |

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::{self, Secret};

/// The shortest secret accepted for signing keys, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The whole configuration of a HiveSync process.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub redis_url: Option<Secret>,
    pub jwt: JwtConfig,
    pub preview: PreviewConfig,
    pub worker_concurrency: usize,
    pub object_storage: ObjectStorageConfig,
    /// Where project repositories live (`REPO_STORAGE`).
    pub repo_storage: RepoStorage,
    pub openai: Option<OpenAiConfig>,
    pub local_ai: LocalAiConfig,
    /// Limits of the AI requests.
    pub ai: AiConfig,
    pub autoscaler: AutoscalerConfig,
    pub cleanup: CleanupConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    /// Prepended to every Redis key (`REDIS_KEY_PREFIX`), to share one Redis between deployments.
    pub redis_key_prefix: String,
    /// A bearer token that may read `/metrics` besides admins (`METRICS_TOKEN`).
    pub metrics_token: Option<Secret>,
    pub sync: SyncConfig,
}

/// Where the `Store` lives. The URL may carry a password, so it is kept as a [`Secret`].
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub backend: DatabaseBackend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseBackend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: SecretSource,
    pub ttl: Duration,
}

/// Where a signing secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Its variable.
    Given(Secret),
    /// Embedded mode, with the variable unset: this file under `DATA_DIR/secrets`, generated the
    /// first time [`SigningKeys::prepare`] needs it.
    Stored(PathBuf),
}

impl SecretSource {
    /// The secret; a stored one is generated when missing (and `generate` allows), or made up for
    /// this process only when it does not. `name` is the variable, for errors.
    fn resolve(&self, name: &'static str, generate: bool) -> Result<Secret> {
        match self {
            SecretSource::Given(secret) => Ok(secret.clone()),
            SecretSource::Stored(file) => {
                let loaded = if generate {
                    secret::load_or_generate(file).map(Some)
                } else {
                    secret::read_stored(file)
                };
                let loaded = loaded.map_err(|err| {
                    Error::new(
                        ErrorKind::Config,
                        format!("cannot load or create {name} under DATA_DIR"),
                    )
                    .with_context("variable", name)
                    .with_source(err)
                })?;
                Ok(loaded.unwrap_or_else(Secret::generate))
            }
        }
    }
}

/// The keys that sign and verify access and preview tokens.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub jwt: Secret,
    /// The key that signs new preview tokens.
    pub preview: PreviewKey,
}

impl SigningKeys {
    /// The keys of a process that issues or checks tokens (the server, a worker). In embedded
    /// mode a secret not set by its variable is read from `DATA_DIR/secrets`, and generated and
    /// stored there the first time, so tokens survive a restart.
    pub fn prepare(config: &Config) -> Result<Self> {
        Self::resolve(config, true)
    }

    /// The keys of a command that neither issues nor checks tokens (`health`, `admin`,
    /// `cleanup`): stored ones when there are, else keys for this process alone. Never writes.
    pub fn without_storing(config: &Config) -> Result<Self> {
        Self::resolve(config, false)
    }

    fn resolve(config: &Config, generate: bool) -> Result<Self> {
        let jwt = config.jwt.secret.resolve("JWT_SECRET", generate)?;
        let preview = config
            .preview
            .signing_secret
            .resolve("PREVIEW_TOKEN_SECRET", generate)?;
        check_distinct(&jwt, &preview)?;
        Ok(SigningKeys {
            jwt,
            preview: PreviewKey {
                id: config.preview.signing_key_id.clone(),
                secret: preview,
            },
        })
    }
}

/// One leaked key must not forge both kinds of token.
fn check_distinct(jwt: &Secret, preview: &Secret) -> Result<()> {
    if jwt == preview {
        return Err(invalid(
            "PREVIEW_TOKEN_SECRET",
            "must differ from JWT_SECRET, so one leaked key cannot forge both kinds of token",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct PreviewConfig {
    /// The id of the key that signs new tokens (`PREVIEW_TOKEN_KEY_ID`).
    pub signing_key_id: String,
    /// Its secret (`PREVIEW_TOKEN_SECRET`).
    pub signing_secret: SecretSource,
    /// Older keys that still verify tokens during a rotation.
    pub previous_keys: Vec<PreviewKey>,
    pub token_ttl: Duration,
    /// A build's limit, not counting its dependency install (`PREVIEW_MAX_TIMEOUT_MS`).
    pub max_build_time: Duration,
    /// A dependency install's own limit (`PREVIEW_INSTALL_TIMEOUT_MS`).
    pub max_install_time: Duration,
    pub builder_concurrency: usize,
    /// `POST /preview/build` requests per minute per user and project.
    pub builds_per_minute: u32,
    /// Answer downloads with a redirect to a presigned object-store URL, when the store can sign.
    pub download_redirect: bool,
    /// Serve build status from memory while PostgreSQL's change feed is live.
    pub status_cache: bool,
    /// How the bundler step, which runs the project's code, is confined.
    pub sandbox: SandboxMode,
    /// Previews minified (and, for Expo, as Hermes bytecode) as for a release.
    pub optimize: bool,
    /// The hosts dependency installs may reach (`PREVIEW_INSTALL_HOSTS`).
    pub install_hosts: Vec<String>,
    /// Whether those hosts may be at private addresses (`PREVIEW_INSTALL_ALLOW_PRIVATE`).
    pub install_allow_private: bool,
    /// The externally visible base URL (`https://hivesync.example.com`) that preview URLs and QR
    /// codes use; `None` takes it from each request's `Host` header.
    pub public_url: Option<String>,
}

/// The registries dependency installs reach when `PREVIEW_INSTALL_HOSTS` is not set: npm's, and
/// yarn's alias of it (yarn lockfiles name it).
pub const DEFAULT_INSTALL_HOSTS: &[&str] = &["registry.npmjs.org", "registry.yarnpkg.com"];

/// One entry of `PREVIEW_INSTALL_HOSTS`: a host name (`*.example.com` for a domain's subdomains),
/// lowercased, and its port when one is named.
pub fn parse_install_host(text: &str) -> std::result::Result<(String, Option<u16>), String> {
    let text = text.trim().to_ascii_lowercase();
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{text:?}: the port must be a number from 1 to 65535"))?;
            (name.to_owned(), Some(port))
        }
        None => (text.clone(), None),
    };
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!(
            "{text:?} is not a host name (expected e.g. registry.npmjs.org, *.example.com or mirror.lan:4873)"
        ));
    }
    Ok((name, port))
}

/// `PREVIEW_SANDBOX`: how preview builds confine the project's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap when it runs on this host, else unconfined (said in every build log).
    Auto,
    /// bubblewrap, or builds fail.
    Bwrap,
    /// Unconfined: for hosts where every project is trusted.
    None,
}

/// A preview-token key with its id.
#[derive(Debug, Clone)]
pub struct PreviewKey {
    pub id: String,
    pub secret: Secret,
}

/// `REPO_STORAGE`: where project repositories live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoStorage {
    /// On this node's disk, `DATA_DIR/repos`: one node serves them (the embedded default).
    Local,
    /// Branch heads in the database, git objects in the object store; `DATA_DIR/repos` is a cache
    /// that may be lost. For any number of servers and workers.
    Shared,
}

impl RepoStorage {
    fn parse(
        env: &Env<'_>,
        database: DatabaseBackend,
        objects: &ObjectStorageConfig,
    ) -> Result<Self> {
        let shared_backends =
            database == DatabaseBackend::Postgres && matches!(objects, ObjectStorageConfig::S3(_));
        match env.get("REPO_STORAGE").as_deref() {
            None if shared_backends => Ok(RepoStorage::Shared),
            None | Some("local") => Ok(RepoStorage::Local),
            Some("shared") if database == DatabaseBackend::Sqlite => Err(invalid(
                "REPO_STORAGE",
                "shared repositories keep their branches in the database: set DATABASE_URL to PostgreSQL",
            )),
            Some("shared") => Ok(RepoStorage::Shared),
            Some(_) => Err(invalid("REPO_STORAGE", "expected local or shared")),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ObjectStorageConfig {
    /// Objects as files under `root` (the embedded default, `DATA_DIR/objects`).
    Filesystem { root: PathBuf },
    /// An S3-compatible service.
    S3(S3Config),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Provider {
    Aws,
    R2,
    Linode,
    Minio,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub provider: S3Provider,
    /// A custom endpoint; when set, requests use path-style addressing.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; `None` uses the ambient AWS credential chain.
    pub credentials: Option<(String, Secret)>,
    pub bucket: String,
    /// Prepended to every key (no leading or trailing `/`).
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    pub api_key: Secret,
    pub base_url: String,
    pub model: String,
    /// `OPENAI_TIMEOUT_SECONDS`: one call, from sending to the whole answer.
    pub timeout: Duration,
    /// `OPENAI_MAX_RETRIES`: further tries after a 429 or a 5xx.
    pub max_retries: u32,
}

#[derive(Debug, Clone)]
pub struct AiConfig {
    /// `AI_REQUESTS_PER_MINUTE`, per user.
    pub requests_per_minute: u32,
    /// `AI_MAX_INPUT_BYTES`.
    pub max_input_bytes: usize,
}

impl AiConfig {
    fn parse(env: &Env<'_>) -> Result<Self> {
        Ok(AiConfig {
            requests_per_minute: env.number("AI_REQUESTS_PER_MINUTE", 30, 1..=100_000)? as u32,
            max_input_bytes: env.number("AI_MAX_INPUT_BYTES", 256 * 1024, 1..=16 * 1024 * 1024)?
                as usize,
        })
    }
}

#[derive(Debug, Clone)]
pub struct LocalAiConfig {
    pub enabled: bool,
    pub model_path: Option<PathBuf>,
    /// `LOCAL_AI_DEVICE`.
    pub device: LocalAiDevice,
    /// `LOCAL_AI_CPU_FALLBACK`.
    pub cpu_fallback: bool,
    /// `LOCAL_AI_MAX_NEW_TOKENS`.
    pub max_new_tokens: u32,
    /// `LOCAL_AI_TIMEOUT_SECONDS`.
    pub timeout: Duration,
}

impl Default for LocalAiConfig {
    fn default() -> Self {
        LocalAiConfig {
            enabled: false,
            model_path: None,
            device: LocalAiDevice::Cpu,
            cpu_fallback: false,
            max_new_tokens: 256,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Where the local model runs (spec §10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAiDevice {
    /// On CPU workers, from `ai_jobs`.
    Cpu,
    /// On GPU workers only, from `gpu_ai_jobs`.
    Gpu,
}

#[derive(Debug, Clone)]
pub struct AutoscalerConfig {
    pub enabled: bool,
    pub min_workers: u32,
    pub max_workers: u32,
    pub scale_out_threshold: u64,
    pub scale_in_threshold: u64,
    pub poll_interval: Duration,
    /// How decisions are carried out.
    pub scaler: ScalerKind,
    /// For [`ScalerKind::Command`]: the command, with `{n}` and `{role}` filled in.
    pub command: Option<String>,
    /// Optional: scale out until the queue would drain (depth × median job duration / workers)
    /// within this long.
    pub drain_target: Option<Duration>,
    /// Scale in only after the queue has stayed below the threshold this long.
    pub scale_in_cooldown: Duration,
}

/// How the autoscaler's decisions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalerKind {
    /// Log the decision only (the default).
    None,
    /// Run `AUTOSCALER_COMMAND`.
    Command,
    /// Start and stop `hivesync worker` processes on this machine.
    LocalProcesses,
}

/// What the cleanup worker removes, and when.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    /// How often a cleanup runs.
    pub interval: Duration,
    /// Local bundles under `DATA_DIR/previews` older than this are removed.
    pub preview_retention: Duration,
    /// Preview objects under `previews/` in the object store older than this are removed.
    pub preview_object_retention: Duration,
    /// Entries of `DATA_DIR/tmp` older than this are removed (unless their job still runs).
    pub tmp_retention: Duration,
    /// Log files in `DATA_DIR/logs` larger than this are rotated.
    pub log_rotate_bytes: u64,
    /// Rotated logs older than this are removed.
    pub log_retention: Duration,
    /// Entries of `DATA_DIR/cache/*` not changed for this long are removed.
    pub cache_retention: Duration,
}

/// Limits of project syncs, and what imports may reach.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub max_file_bytes: u64,
    pub max_upload_bytes: u64,
    pub max_files: usize,
    pub max_manifest_bytes: u64,
    /// Directories `file://` imports may read from; empty refuses every `file://` import.
    pub import_file_roots: Vec<PathBuf>,
    pub import_allow_private_networks: bool,
    pub import_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter: a level, or `target=level` directives.
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    pub max_body_bytes: usize,
    pub login_attempts_per_minute: u32,
    pub trust_proxy_headers: bool,
    /// The longest a request head may take to arrive, and a keep-alive connection may idle.
    pub header_timeout: Duration,
    /// The longest a request body may pause.
    pub body_timeout: Duration,
    /// Connections the server holds at once; `None`: three quarters of the open-file limit.
    pub max_connections: Option<usize>,
    /// Connections one client address holds at once; `None`: no bound.
    pub max_connections_per_client: Option<usize>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests). Reading
    /// changes nothing on disk: the embedded mode's secrets are generated by
    /// [`SigningKeys::prepare`], when a command that signs tokens prepares the data directory.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let env = Env { lookup: &lookup };
        let data_dir = env
            .get("DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("./hivesync-data"));
        let database = DatabaseConfig::parse(&env, &data_dir)?;
        let embedded = database.backend == DatabaseBackend::Sqlite;
        let redis_url = match env.get("REDIS_URL") {
            None => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Some(Secret::new(url))
            }
            Some(_) => return Err(invalid("REDIS_URL", "expected a redis:// or rediss:// URL")),
        };
        let secrets_dir = data_dir.join("secrets");
        let jwt = JwtConfig::parse(&env, embedded, &secrets_dir)?;
        let preview = PreviewConfig::parse(&env, embedded, &secrets_dir)?;
        if let (SecretSource::Given(a), SecretSource::Given(b)) =
            (&jwt.secret, &preview.signing_secret)
        {
            check_distinct(a, b)?;
        }
        let cleanup = CleanupConfig::parse(&env)?;
        if cleanup.tmp_retention <= preview.max_build_time + preview.max_install_time {
            return Err(invalid(
                "TMP_RETENTION_SECONDS",
                "must be longer than PREVIEW_MAX_TIMEOUT_MS and PREVIEW_INSTALL_TIMEOUT_MS together, or cleanup could remove a running build's files",
            ));
        }
        let object_storage = object_storage_config(&env, &data_dir)?;
        Ok(Config {
            repo_storage: RepoStorage::parse(&env, database.backend, &object_storage)?,
            object_storage,
            openai: OpenAiConfig::parse(&env)?,
            local_ai: LocalAiConfig::parse(&env)?,
            ai: AiConfig::parse(&env)?,
            autoscaler: AutoscalerConfig::parse(&env)?,
            log: LogConfig::parse(&env)?,
            http: HttpConfig::parse(&env)?,
            sync: SyncConfig::parse(&env, &data_dir)?,
            worker_concurrency: env.number("WORKER_CONCURRENCY", 2, 1..=256)? as usize,
            redis_key_prefix: env.get("REDIS_KEY_PREFIX").unwrap_or_default(),
            metrics_token: env.get("METRICS_TOKEN").map(Secret::new),
            data_dir,
            database,
            redis_url,
            jwt,
            preview,
            cleanup,
        })
    }

    /// Whether this process runs on the embedded defaults (SQLite in `DATA_DIR`).
    pub fn is_embedded(&self) -> bool {
        self.database.backend == DatabaseBackend::Sqlite
    }

    /// `DATA_DIR/<sub>`; `sub` is one of the fixed directory names of DESIGN.md §9.
    pub fn data_path(&self, sub: DataSubdir) -> PathBuf {
        self.data_dir.join(sub.as_str())
    }
}

/// The fixed subdirectories of `DATA_DIR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSubdir {
    Repos,
    Previews,
    Tmp,
    Logs,
    Cache,
    Objects,
}

impl DataSubdir {
    pub const ALL: [DataSubdir; 6] = [
        DataSubdir::Repos,
        DataSubdir::Previews,
        DataSubdir::Tmp,
        DataSubdir::Logs,
        DataSubdir::Cache,
        DataSubdir::Objects,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataSubdir::Repos => "repos",
            DataSubdir::Previews => "previews",
            DataSubdir::Tmp => "tmp",
            DataSubdir::Logs => "logs",
            DataSubdir::Cache => "cache",
            DataSubdir::Objects => "objects",
        }
    }
}

/// Creates `DATA_DIR` and its fixed subdirectories.
pub fn prepare_data_dir(config: &Config) -> Result<()> {
    for sub in DataSubdir::ALL {
        let path = config.data_path(sub);
        std::fs::create_dir_all(&path).map_err(|err| {
            Error::new(ErrorKind::Config, "cannot create a DATA_DIR subdirectory")
                .with_context("variable", "DATA_DIR")
                .with_context("path", path.display())
                .with_source(err)
        })?;
    }
    Ok(())
}

impl DatabaseConfig {
    fn parse(env: &Env<'_>, data_dir: &Path) -> Result<Self> {
        Ok(match env.get("DATABASE_URL") {
            None => DatabaseConfig {
                url: Secret::new(format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("hivesync.db").display()
                )),
                backend: DatabaseBackend::Sqlite,
            },
            Some(url) => {
                let backend = if url.starts_with("sqlite:") {
                    DatabaseBackend::Sqlite
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    DatabaseBackend::Postgres
                } else {
                    return Err(invalid(
                        "DATABASE_URL",
                        "expected a sqlite:// or postgres:// URL",
                    ));
                };
                DatabaseConfig {
                    url: Secret::new(url),
                    backend,
                }
            }
        })
    }
}

impl JwtConfig {
    fn parse(env: &Env<'_>, embedded: bool, secrets_dir: &Path) -> Result<Self> {
        Ok(JwtConfig {
            secret: env.secret("JWT_SECRET", embedded, &secrets_dir.join("jwt_secret"))?,
            ttl: Duration::from_secs(env.number("JWT_TTL_SECONDS", 3600, 60..=30 * 86_400)?),
        })
    }
}

impl PreviewConfig {
    fn parse(env: &Env<'_>, embedded: bool, secrets_dir: &Path) -> Result<Self> {
        let signing_key_id = env
            .get("PREVIEW_TOKEN_KEY_ID")
            .map(|id| parse_key_id("PREVIEW_TOKEN_KEY_ID", &id))
            .transpose()?
            .unwrap_or_else(|| "k1".to_owned());
        let previous_keys = env
            .get("PREVIEW_TOKEN_PREVIOUS_SECRETS")
            .map(|list| parse_previous_keys(&list))
            .transpose()?
            .unwrap_or_default();
        let mut key_ids = HashSet::new();
        for id in std::iter::once(&signing_key_id).chain(previous_keys.iter().map(|k| &k.id)) {
            if !key_ids.insert(id.as_str()) {
                return Err(invalid(
                    "PREVIEW_TOKEN_PREVIOUS_SECRETS",
                    format!("key id {id:?} is used twice"),
                ));
            }
        }

        Ok(PreviewConfig {
            signing_key_id,
            signing_secret: env.secret(
                "PREVIEW_TOKEN_SECRET",
                embedded,
                &secrets_dir.join("preview_token_secret"),
            )?,
            previous_keys,
            token_ttl: Duration::from_secs(env.number(
                "PREVIEW_TOKEN_TTL_SECONDS",
                300,
                1..=86_400,
            )?),
            max_build_time: Duration::from_millis(env.number(
                "PREVIEW_MAX_TIMEOUT_MS",
                120_000,
                1..=86_400_000,
            )?),
            max_install_time: Duration::from_millis(env.number(
                "PREVIEW_INSTALL_TIMEOUT_MS",
                600_000,
                1..=86_400_000,
            )?),
            builder_concurrency: env.number("PREVIEW_BUILDER_CONCURRENCY", 2, 1..=64)? as usize,
            builds_per_minute: env.number("PREVIEW_BUILDS_PER_MINUTE", 30, 1..=100_000)? as u32,
            download_redirect: env.boolean("PREVIEW_DOWNLOAD_REDIRECT", false)?,
            status_cache: env.boolean("PREVIEW_STATUS_CACHE", true)?,
            optimize: env.boolean("PREVIEW_OPTIMIZE", false)?,
            install_hosts: match env.get("PREVIEW_INSTALL_HOSTS") {
                None => DEFAULT_INSTALL_HOSTS
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
                Some(list) => {
                    let hosts: Vec<String> = list
                        .split(',')
                        .map(|h| h.trim().to_owned())
                        .filter(|h| !h.is_empty())
                        .collect();
                    if hosts.is_empty() {
                        return Err(invalid(
                            "PREVIEW_INSTALL_HOSTS",
                            "expected host names separated by commas",
                        ));
                    }
                    for host in &hosts {
                        parse_install_host(host)
                            .map_err(|why| invalid("PREVIEW_INSTALL_HOSTS", why))?;
                    }
                    hosts
                }
            },
            install_allow_private: env.boolean("PREVIEW_INSTALL_ALLOW_PRIVATE", false)?,
            sandbox: match env.get("PREVIEW_SANDBOX").as_deref().map(str::trim) {
                None | Some("auto") => SandboxMode::Auto,
                Some("bwrap") => SandboxMode::Bwrap,
                Some("none") => SandboxMode::None,
                Some(_) => {
                    return Err(invalid("PREVIEW_SANDBOX", "expected auto, bwrap or none"));
                }
            },
            public_url: env
                .get("PUBLIC_URL")
                .map(|url| parse_http_url("PUBLIC_URL", &url))
                .transpose()?,
        })
    }
}

impl OpenAiConfig {
    fn parse(env: &Env<'_>) -> Result<Option<Self>> {
        Ok(match env.get("OPENAI_API_KEY") {
            None => None,
            Some(key) => Some(OpenAiConfig {
                api_key: Secret::new(key),
                base_url: match env.get("OPENAI_BASE_URL") {
                    Some(url) => parse_http_url("OPENAI_BASE_URL", &url)?,
                    None => "https://api.openai.com/v1".to_owned(),
                },
                model: env
                    .get("OPENAI_MODEL")
                    .unwrap_or_else(|| "gpt-4o-mini".to_owned()),
                timeout: Duration::from_secs(env.number("OPENAI_TIMEOUT_SECONDS", 60, 1..=3600)?),
                max_retries: env.number("OPENAI_MAX_RETRIES", 2, 0..=10)? as u32,
            }),
        })
    }
}

impl LocalAiConfig {
    fn parse(env: &Env<'_>) -> Result<Self> {
        let local_ai = LocalAiConfig {
            enabled: env.boolean("LOCAL_AI_ENABLED", false)?,
            model_path: env.get("LOCAL_AI_MODEL_PATH").map(PathBuf::from),
            device: match env
                .get("LOCAL_AI_DEVICE")
                .map(|s| s.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("cpu") => LocalAiDevice::Cpu,
                Some("gpu" | "cuda") => LocalAiDevice::Gpu,
                Some(_) => return Err(invalid("LOCAL_AI_DEVICE", "expected cpu or gpu")),
            },
            cpu_fallback: env.boolean("LOCAL_AI_CPU_FALLBACK", false)?,
            max_new_tokens: env.number("LOCAL_AI_MAX_NEW_TOKENS", 256, 1..=4096)? as u32,
            timeout: Duration::from_secs(env.number("LOCAL_AI_TIMEOUT_SECONDS", 120, 1..=3600)?),
        };
        if local_ai.enabled && local_ai.model_path.is_none() {
            return Err(invalid(
                "LOCAL_AI_MODEL_PATH",
                "must be set when LOCAL_AI_ENABLED is true",
            ));
        }
        Ok(local_ai)
    }
}

impl AutoscalerConfig {
    fn parse(env: &Env<'_>) -> Result<Self> {
        let autoscaler = AutoscalerConfig {
            enabled: env.boolean("AUTOSCALER_ENABLED", false)?,
            min_workers: env.number("AUTOSCALER_MIN_WORKERS", 1, 0..=10_000)? as u32,
            max_workers: env.number("AUTOSCALER_MAX_WORKERS", 4, 1..=10_000)? as u32,
            scale_out_threshold: env.number("AUTOSCALER_SCALE_OUT_THRESHOLD", 20, 1..=u64::MAX)?,
            scale_in_threshold: env.number("AUTOSCALER_SCALE_IN_THRESHOLD", 5, 0..=u64::MAX)?,
            poll_interval: Duration::from_secs(env.number(
                "AUTOSCALER_POLL_INTERVAL_SECONDS",
                30,
                1..=86_400,
            )?),
            scaler: match env
                .get("AUTOSCALER_SCALER")
                .map(|s| s.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("none") => ScalerKind::None,
                Some("command") => ScalerKind::Command,
                Some("local") => ScalerKind::LocalProcesses,
                Some(_) => {
                    return Err(invalid(
                        "AUTOSCALER_SCALER",
                        "expected none, command or local",
                    ));
                }
            },
            command: env.get("AUTOSCALER_COMMAND"),
            drain_target: env
                .get("AUTOSCALER_DRAIN_TARGET_SECONDS")
                .map(|_| env.number("AUTOSCALER_DRAIN_TARGET_SECONDS", 0, 1..=86_400))
                .transpose()?
                .map(Duration::from_secs),
            scale_in_cooldown: Duration::from_secs(env.number(
                "AUTOSCALER_SCALE_IN_COOLDOWN_SECONDS",
                300,
                0..=86_400,
            )?),
        };
        if autoscaler.scaler == ScalerKind::Command && autoscaler.command.is_none() {
            return Err(invalid(
                "AUTOSCALER_COMMAND",
                "must be set when AUTOSCALER_SCALER is command",
            ));
        }
        if autoscaler.min_workers > autoscaler.max_workers {
            return Err(invalid(
                "AUTOSCALER_MIN_WORKERS",
                "must not be greater than AUTOSCALER_MAX_WORKERS",
            ));
        }
        if autoscaler.scale_in_threshold >= autoscaler.scale_out_threshold {
            return Err(invalid(
                "AUTOSCALER_SCALE_IN_THRESHOLD",
                "must be less than AUTOSCALER_SCALE_OUT_THRESHOLD",
            ));
        }
        Ok(autoscaler)
    }
}

impl CleanupConfig {
    fn parse(env: &Env<'_>) -> Result<Self> {
        Ok(CleanupConfig {
            interval: Duration::from_secs(env.number(
                "CLEANUP_INTERVAL_SECONDS",
                600,
                10..=7 * 86_400,
            )?),
            preview_retention: Duration::from_secs(env.number(
                "PREVIEW_RETENTION_SECONDS",
                86_400,
                60..=365 * 86_400,
            )?),
            preview_object_retention: Duration::from_secs(env.number(
                "PREVIEW_OBJECT_RETENTION_SECONDS",
                7 * 86_400,
                60..=365 * 86_400,
            )?),
            tmp_retention: Duration::from_secs(env.number(
                "TMP_RETENTION_SECONDS",
                6 * 3600,
                60..=365 * 86_400,
            )?),
            log_rotate_bytes: env.number("LOG_ROTATE_BYTES", 10 << 20, 1024..=1 << 40)?,
            log_retention: Duration::from_secs(env.number(
                "LOG_RETENTION_SECONDS",
                7 * 86_400,
                60..=365 * 86_400,
            )?),
            cache_retention: Duration::from_secs(env.number(
                "CACHE_RETENTION_SECONDS",
                30 * 86_400,
                60..=365 * 86_400,
            )?),
        })
    }
}

impl LogConfig {
    fn parse(env: &Env<'_>) -> Result<Self> {
        Ok(LogConfig {
            filter: match env.get("LOG_LEVEL") {
                Some(level) => parse_log_filter(&level)?,
                None => "info".to_owned(),
            },
            format: match env.get("LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(_) => return Err(invalid("LOG_FORMAT", "expected text or json")),
            },
        })
    }
}

impl HttpConfig {
    fn parse(env: &Env<'_>) -> Result<Self> {
        Ok(HttpConfig {
            bind: match env.get("HIVESYNC_BIND") {
                Some(addr) => SocketAddr::from_str(&addr).map_err(|_| {
                    invalid("HIVESYNC_BIND", "expected host:port, e.g. 127.0.0.1:8080")
                })?,
                None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            },
            max_body_bytes: env.number("MAX_REQUEST_BODY_BYTES", 1 << 20, 1024..=1 << 30)? as usize,
            login_attempts_per_minute: env.number("LOGIN_RATE_LIMIT_PER_MINUTE", 10, 1..=100_000)?
                as u32,
            trust_proxy_headers: env.boolean("TRUST_PROXY_HEADERS", false)?,
            header_timeout: Duration::from_secs(env.number(
                "HTTP_HEADER_TIMEOUT_SECONDS",
                20,
                1..=3600,
            )?),
            body_timeout: Duration::from_secs(env.number(
                "HTTP_BODY_TIMEOUT_SECONDS",
                30,
                1..=3600,
            )?),
            max_connections: env
                .get("HTTP_MAX_CONNECTIONS")
                .map(|_| env.number("HTTP_MAX_CONNECTIONS", 0, 16..=10_000_000))
                .transpose()?
                .map(|n| n as usize),
            // Behind a reverse proxy every connection comes from the proxy: the proxy bounds its
            // clients, not this server.
            max_connections_per_client: match env.number(
                "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                if env.boolean("TRUST_PROXY_HEADERS", false)? {
                    0
                } else {
                    128
                },
                0..=10_000_000,
            )? {
                0 => None,
                n => Some(n as usize),
            },
        })
    }
}

impl SyncConfig {
    fn parse(env: &Env<'_>, data_dir: &Path) -> Result<Self> {
        let sync = SyncConfig {
            max_file_bytes: env.number("SYNC_MAX_FILE_BYTES", 50 << 20, 1..=1 << 40)?,
            max_upload_bytes: env.number("SYNC_MAX_UPLOAD_BYTES", 500 << 20, 1024..=1 << 42)?,
            max_files: env.number("SYNC_MAX_FILES", 100_000, 1..=10_000_000)? as usize,
            max_manifest_bytes: env.number("SYNC_MAX_MANIFEST_BYTES", 32 << 20, 1024..=1 << 32)?,
            import_file_roots: match env.get("IMPORT_FILE_ROOTS") {
                None => Vec::new(),
                Some(list) => parse_import_roots(&list, data_dir)?,
            },
            import_allow_private_networks: env.boolean("IMPORT_ALLOW_PRIVATE_NETWORKS", false)?,
            import_timeout: Duration::from_secs(env.number(
                "IMPORT_TIMEOUT_SECONDS",
                300,
                1..=86_400,
            )?),
        };
        if sync.max_file_bytes > sync.max_upload_bytes {
            return Err(invalid(
                "SYNC_MAX_FILE_BYTES",
                "must not be greater than SYNC_MAX_UPLOAD_BYTES",
            ));
        }
        Ok(sync)
    }
}

fn invalid(variable: &'static str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Config, format!("invalid {variable}: {why}"))
        .with_context("variable", variable)
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The variable's value; an empty value counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    fn number(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let value: u64 = raw.trim().parse().map_err(|_| {
            invalid(
                name,
                format!(
                    "expected a whole number between {} and {}, got {:?}",
                    range.start(),
                    range.end(),
                    crate::domain::truncate_for_display(&raw)
                ),
            )
        })?;
        if !range.contains(&value) {
            return Err(invalid(
                name,
                format!("{value} is outside {}..={}", range.start(), range.end()),
            ));
        }
        Ok(value)
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool> {
        match self
            .get(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(_) => Err(invalid(name, "expected true or false")),
        }
    }

    /// A signing secret: from the variable, or in embedded mode from `file` (read, and generated
    /// when missing, by [`SigningKeys::prepare`]).
    fn secret(&self, name: &'static str, embedded: bool, file: &Path) -> Result<SecretSource> {
        match self.get(name) {
            Some(value) => {
                if value.len() < MIN_SECRET_LEN {
                    return Err(invalid(
                        name,
                        format!("must be at least {MIN_SECRET_LEN} bytes long"),
                    ));
                }
                Ok(SecretSource::Given(Secret::new(value)))
            }
            None if embedded => Ok(SecretSource::Stored(file.to_path_buf())),
            None => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{name} is not set; it is required when DATABASE_URL points at an external database"
                ),
            )
            .with_context("variable", name)),
        }
    }
}

fn parse_key_id(variable: &'static str, id: &str) -> Result<String> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(id.to_owned())
    } else {
        Err(invalid(
            variable,
            "a key id is 1 to 32 characters of A-Z, a-z, 0-9, - and _",
        ))
    }
}

fn parse_previous_keys(list: &str) -> Result<Vec<PreviewKey>> {
    const VAR: &str = "PREVIEW_TOKEN_PREVIOUS_SECRETS";
    // Errors name entries by position: the text of a malformed entry may be a pasted secret.
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(index, entry)| {
            let position = index + 1;
            let (id, secret) = entry.split_once(':').ok_or_else(|| {
                invalid(VAR, format!("entry {position} is not kid:secret (entries are separated by commas)"))
            })?;
            if secret.len() < MIN_SECRET_LEN {
                return Err(invalid(
                    VAR,
                    format!("the secret of entry {position} must be at least {MIN_SECRET_LEN} bytes long"),
                ));
            }
            let id = parse_key_id(VAR, id).map_err(|_| {
                invalid(VAR, format!("the key id of entry {position} is not 1 to 32 of A-Z, a-z, 0-9, - and _"))
            })?;
            Ok(PreviewKey {
                id,
                secret: Secret::new(secret),
            })
        })
        .collect()
}

/// `IMPORT_FILE_ROOTS`: absolute directories, none of them inside `DATA_DIR` (imports must never
/// read another project's repository or the secrets).
fn parse_import_roots(list: &str, data_dir: &Path) -> Result<Vec<PathBuf>> {
    const VARIABLE: &str = "IMPORT_FILE_ROOTS";
    let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
    let mut roots = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let path = PathBuf::from(raw);
        if !path.is_absolute() {
            return Err(invalid(
                VARIABLE,
                format!("{raw:?} is not an absolute path"),
            ));
        }
        let path = path
            .canonicalize()
            .map_err(|_| invalid(VARIABLE, format!("{raw:?} is not an existing directory")))?;
        if path.starts_with(&data_dir) || data_dir.starts_with(&path) {
            return Err(invalid(
                VARIABLE,
                format!("{raw:?} overlaps DATA_DIR; imports may not read HiveSync's own data"),
            ));
        }
        roots.push(path);
    }
    Ok(roots)
}

fn parse_http_url(variable: &'static str, raw: &str) -> Result<String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|_| invalid(variable, "expected an http:// or https:// URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(variable, "expected an http:// or https:// URL"));
    }
    Ok(raw.trim().trim_end_matches('/').to_owned())
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn parse_log_filter(raw: &str) -> Result<String> {
    let normalised = raw.trim().to_ascii_lowercase().replace("warning", "warn");
    let valid = normalised.split(',').all(|directive| {
        let level = directive
            .rsplit_once('=')
            .map_or(
                directive,
                |(target, level)| {
                    if target.is_empty() { "" } else { level }
                },
            );
        LOG_LEVELS.contains(&level.trim())
    });
    if valid {
        Ok(normalised)
    } else {
        Err(invalid(
            "LOG_LEVEL",
            "expected trace, debug, info, warn, error, or target=level directives",
        ))
    }
}

fn object_storage_config(env: &Env<'_>, data_dir: &Path) -> Result<ObjectStorageConfig> {
    let bucket = env.get("OBJECT_STORAGE_BUCKET_PREVIEWS");
    let provider = match env
        .get("OBJECT_STORAGE_PROVIDER")
        .map(|p| p.trim().to_ascii_lowercase())
    {
        None if bucket.is_none() => return Ok(filesystem_storage(data_dir)),
        Some(p) if p == "filesystem" || p == "local" => return Ok(filesystem_storage(data_dir)),
        None => S3Provider::Aws,
        Some(p) => match p.as_str() {
            "s3" | "aws" => S3Provider::Aws,
            "r2" => S3Provider::R2,
            "linode" => S3Provider::Linode,
            "minio" => S3Provider::Minio,
            _ => {
                return Err(invalid(
                    "OBJECT_STORAGE_PROVIDER",
                    "expected filesystem, s3, r2, linode or minio",
                ));
            }
        },
    };
    let bucket = bucket.ok_or_else(|| {
        invalid(
            "OBJECT_STORAGE_BUCKET_PREVIEWS",
            "must be set for an S3-compatible provider",
        )
    })?;
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(invalid(
            "OBJECT_STORAGE_BUCKET_PREVIEWS",
            "a bucket name is 3 to 63 characters of a-z, 0-9, '-' and '.'",
        ));
    }
    let endpoint = env
        .get("OBJECT_STORAGE_ENDPOINT")
        .map(|e| parse_http_url("OBJECT_STORAGE_ENDPOINT", &e))
        .transpose()?;
    if endpoint.is_none() && provider != S3Provider::Aws {
        return Err(invalid(
            "OBJECT_STORAGE_ENDPOINT",
            "must be set for R2, Linode and MinIO",
        ));
    }
    let credentials = match (
        env.get("OBJECT_STORAGE_ACCESS_KEY"),
        env.get("OBJECT_STORAGE_SECRET_KEY"),
    ) {
        (Some(access), Some(secret)) => Some((access, Secret::new(secret))),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "OBJECT_STORAGE_SECRET_KEY",
                "must be set together with OBJECT_STORAGE_ACCESS_KEY",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "OBJECT_STORAGE_ACCESS_KEY",
                "must be set together with OBJECT_STORAGE_SECRET_KEY",
            ));
        }
    };
    let prefix = env
        .get("OBJECT_STORAGE_PREFIX")
        .map(|p| p.trim_matches('/').to_owned())
        .unwrap_or_default();
    if prefix.split('/').any(|seg| seg == "..") || prefix.contains('\\') {
        return Err(invalid(
            "OBJECT_STORAGE_PREFIX",
            "must not contain '..' or '\\'",
        ));
    }
    Ok(ObjectStorageConfig::S3(S3Config {
        provider,
        endpoint,
        region: env.get("OBJECT_STORAGE_REGION").unwrap_or_else(|| {
            if provider == S3Provider::R2 {
                "auto"
            } else {
                "us-east-1"
            }
            .to_owned()
        }),
        credentials,
        bucket,
        prefix,
    }))
}

fn filesystem_storage(data_dir: &Path) -> ObjectStorageConfig {
    ObjectStorageConfig::Filesystem {
        root: data_dir.join(DataSubdir::Objects.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET_A: &str = "0123456789abcdef0123456789abcdef-a";
    const SECRET_B: &str = "0123456789abcdef0123456789abcdef-b";

    fn load(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |name| map.get(name).cloned())
    }

    fn variable_of(err: &Error) -> Option<&str> {
        err.context()
            .iter()
            .find(|(k, _)| *k == "variable")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn nothing_set_runs_embedded_and_persists_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let config = load(&[("DATA_DIR", data)]).unwrap();
        assert!(config.is_embedded());
        assert!(config.database.url.expose().starts_with("sqlite://"));
        assert!(matches!(
            config.object_storage,
            ObjectStorageConfig::Filesystem { .. }
        ));
        assert_eq!(config.preview.token_ttl, Duration::from_secs(300));
        assert_eq!(config.preview.builder_concurrency, 2);
        assert!(!config.autoscaler.enabled);
        // Reading the configuration writes nothing; preparing the keys generates and stores them.
        assert!(!dir.path().join("secrets").exists());
        let operations = SigningKeys::without_storing(&config).unwrap();
        assert!(!dir.path().join("secrets").exists());
        let keys = SigningKeys::prepare(&config).unwrap();
        assert_ne!(
            operations.jwt, keys.jwt,
            "made up for one process, never stored"
        );
        // A second start reads the same secrets back instead of generating new ones.
        let again = SigningKeys::prepare(&load(&[("DATA_DIR", data)]).unwrap()).unwrap();
        assert_eq!(keys.jwt, again.jwt);
        assert_eq!(keys.preview.secret, again.preview.secret);
        assert_ne!(keys.jwt, keys.preview.secret);
        assert!(dir.path().join("secrets/jwt_secret").exists());
        // Stored keys are what a command that signs nothing reads too.
        let read = SigningKeys::without_storing(&config).unwrap();
        assert_eq!(read.jwt, keys.jwt);
    }

    #[test]
    fn reading_the_configuration_changes_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("fresh");
        load(&[("DATA_DIR", data.to_str().unwrap())]).unwrap();
        assert!(
            !data.exists(),
            "DATA_DIR is made when a command prepares it"
        );
    }

    #[test]
    fn external_database_requires_explicit_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let err = load(&[
            ("DATA_DIR", data),
            ("DATABASE_URL", "postgres://x@localhost/db"),
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(variable_of(&err), Some("JWT_SECRET"));
        assert!(err.to_string().contains("JWT_SECRET"));
        assert!(
            !dir.path().join("secrets").exists(),
            "no secret may be generated outside embedded mode"
        );

        let config = load(&[
            ("DATA_DIR", data),
            ("DATABASE_URL", "postgres://x@localhost/db"),
            ("JWT_SECRET", SECRET_A),
            ("PREVIEW_TOKEN_SECRET", SECRET_B),
        ])
        .unwrap();
        assert!(!config.is_embedded());
        assert_eq!(config.database.backend, DatabaseBackend::Postgres);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let cases: &[(&str, &str)] = &[
            ("PREVIEW_TOKEN_TTL_SECONDS", "abc"),
            ("PREVIEW_TOKEN_TTL_SECONDS", "0"),
            ("PREVIEW_MAX_TIMEOUT_MS", "-5"),
            ("PREVIEW_BUILDER_CONCURRENCY", "1000"),
            ("PREVIEW_BUILDS_PER_MINUTE", "0"),
            ("PREVIEW_DOWNLOAD_REDIRECT", "maybe"),
            ("PUBLIC_URL", "ftp://example.com"),
            ("PREVIEW_SANDBOX", "docker"),
            ("PREVIEW_INSTALL_HOSTS", "https://registry.npmjs.org/"),
            ("PREVIEW_INSTALL_HOSTS", " , "),
            ("PREVIEW_INSTALL_HOSTS", "mirror.lan:0"),
            ("PREVIEW_INSTALL_ALLOW_PRIVATE", "maybe"),
            ("HTTP_HEADER_TIMEOUT_SECONDS", "0"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "forever"),
            ("HTTP_MAX_CONNECTIONS", "3"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "-1"),
            ("WORKER_CONCURRENCY", "two"),
            ("DATABASE_URL", "mysql://localhost/db"),
            ("REDIS_URL", "http://localhost"),
            ("JWT_SECRET", "short"),
            ("LOG_LEVEL", "loud"),
            ("LOG_FORMAT", "xml"),
            ("HIVESYNC_BIND", "localhost"),
            ("LOCAL_AI_ENABLED", "maybe"),
            ("LOCAL_AI_DEVICE", "tpu"),
            ("LOCAL_AI_MAX_NEW_TOKENS", "0"),
            ("OBJECT_STORAGE_PROVIDER", "ftp"),
            ("AUTOSCALER_ENABLED", "sometimes"),
            ("OPENAI_BASE_URL", "not a url"),
        ];
        for (name, value) in cases {
            let mut vars = vec![("DATA_DIR", data), (*name, *value)];
            if *name == "OPENAI_BASE_URL" {
                vars.push(("OPENAI_API_KEY", "sk-test"));
            }
            let err = load(&vars).expect_err(&format!("{name}={value} must be rejected"));
            assert_eq!(err.kind(), ErrorKind::Config, "{name}");
            assert_eq!(variable_of(&err), Some(*name), "{name}={value}: {err}");
            assert!(
                err.to_string().contains(name),
                "message must name {name}: {err}"
            );
        }
    }

    #[test]
    fn secrets_are_never_echoed_in_errors() {
        let err = load(&[("JWT_SECRET", "tiny-secret-value")]).unwrap_err();
        assert!(!err.to_string().contains("tiny-secret-value"));
        assert!(!format!("{err:?}").contains("tiny-secret-value"));
    }

    #[test]
    fn malformed_previous_keys_are_reported_by_position_only() {
        let pasted = "s3cr3t value with no colon but long enough to count";
        for list in [
            pasted.to_owned(),
            format!("bad id!:{pasted}"),
            "k0:short".to_owned(),
        ] {
            let err = load(&[
                ("JWT_SECRET", SECRET_A),
                ("PREVIEW_TOKEN_SECRET", SECRET_B),
                ("PREVIEW_TOKEN_PREVIOUS_SECRETS", &list),
            ])
            .unwrap_err();
            assert_eq!(variable_of(&err), Some("PREVIEW_TOKEN_PREVIOUS_SECRETS"));
            assert!(err.to_string().contains("entry 1"), "{err}");
            for fragment in ["s3cr3t", "bad id", "short"] {
                assert!(!err.to_string().contains(fragment), "{err}");
            }
        }
    }

    #[test]
    fn identical_jwt_and_preview_secrets_are_rejected() {
        let err =
            load(&[("JWT_SECRET", SECRET_A), ("PREVIEW_TOKEN_SECRET", SECRET_A)]).unwrap_err();
        assert_eq!(variable_of(&err), Some("PREVIEW_TOKEN_SECRET"));
    }

    #[test]
    fn preview_key_rotation_is_parsed() {
        let previous = format!("old1:{SECRET_A}x, old2:{SECRET_B}y");
        let config = load(&[
            ("JWT_SECRET", SECRET_A),
            ("PREVIEW_TOKEN_SECRET", SECRET_B),
            ("PREVIEW_TOKEN_KEY_ID", "k7"),
            ("PREVIEW_TOKEN_PREVIOUS_SECRETS", &previous),
        ])
        .unwrap();
        assert_eq!(config.preview.signing_key_id, "k7");
        let ids: Vec<_> = config
            .preview
            .previous_keys
            .iter()
            .map(|k| k.id.as_str())
            .collect();
        assert_eq!(ids, ["old1", "old2"]);

        let dup = format!("k1:{SECRET_A}x");
        let err = load(&[
            ("JWT_SECRET", SECRET_A),
            ("PREVIEW_TOKEN_SECRET", SECRET_B),
            ("PREVIEW_TOKEN_PREVIOUS_SECRETS", &dup),
        ])
        .unwrap_err();
        assert_eq!(variable_of(&err), Some("PREVIEW_TOKEN_PREVIOUS_SECRETS"));
    }

    #[test]
    fn s3_settings_are_validated() {
        let base = [("JWT_SECRET", SECRET_A), ("PREVIEW_TOKEN_SECRET", SECRET_B)];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            load(&vars)
        };
        let config = with(&[
            ("OBJECT_STORAGE_PROVIDER", "minio"),
            ("OBJECT_STORAGE_ENDPOINT", "http://127.0.0.1:9000/"),
            ("OBJECT_STORAGE_BUCKET_PREVIEWS", "hivesync-previews"),
            ("OBJECT_STORAGE_ACCESS_KEY", "ak"),
            ("OBJECT_STORAGE_SECRET_KEY", "sk"),
            ("OBJECT_STORAGE_PREFIX", "/run-1/"),
        ])
        .unwrap();
        let ObjectStorageConfig::S3(s3) = config.object_storage else {
            panic!("expected S3");
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.prefix, "run-1");
        assert_eq!(s3.region, "us-east-1");

        let err = with(&[
            ("OBJECT_STORAGE_PROVIDER", "r2"),
            ("OBJECT_STORAGE_BUCKET_PREVIEWS", "b-1"),
        ])
        .unwrap_err();
        assert_eq!(variable_of(&err), Some("OBJECT_STORAGE_ENDPOINT"));
        let err = with(&[("OBJECT_STORAGE_PROVIDER", "s3")]).unwrap_err();
        assert_eq!(variable_of(&err), Some("OBJECT_STORAGE_BUCKET_PREVIEWS"));
        let err = with(&[("OBJECT_STORAGE_BUCKET_PREVIEWS", "Bad_Bucket")]).unwrap_err();
        assert_eq!(variable_of(&err), Some("OBJECT_STORAGE_BUCKET_PREVIEWS"));
        let err = with(&[
            ("OBJECT_STORAGE_BUCKET_PREVIEWS", "bucket"),
            ("OBJECT_STORAGE_ACCESS_KEY", "ak"),
        ])
        .unwrap_err();
        assert_eq!(variable_of(&err), Some("OBJECT_STORAGE_SECRET_KEY"));
    }

    #[test]
    fn autoscaler_bounds_are_consistent() {
        let err = load(&[
            ("JWT_SECRET", SECRET_A),
            ("PREVIEW_TOKEN_SECRET", SECRET_B),
            ("AUTOSCALER_MIN_WORKERS", "5"),
            ("AUTOSCALER_MAX_WORKERS", "2"),
        ])
        .unwrap_err();
        assert_eq!(variable_of(&err), Some("AUTOSCALER_MIN_WORKERS"));
    }

    #[test]
    fn sync_limits_and_import_roots_are_checked() {
        let base = [("JWT_SECRET", SECRET_A), ("PREVIEW_TOKEN_SECRET", SECRET_B)];
        let with = |extra: &[(&'static str, &str)]| {
            let mut vars: Vec<(&str, &str)> = base.to_vec();
            vars.extend_from_slice(extra);
            load(&vars)
        };
        let config = with(&[]).unwrap();
        assert_eq!(config.sync.max_file_bytes, 50 << 20);
        assert!(config.sync.import_file_roots.is_empty());
        assert!(!config.sync.import_allow_private_networks);

        let err = with(&[
            ("SYNC_MAX_FILE_BYTES", "2000000"),
            ("SYNC_MAX_UPLOAD_BYTES", "1000000"),
        ])
        .unwrap_err();
        assert_eq!(variable_of(&err), Some("SYNC_MAX_FILE_BYTES"));

        let data = tempfile::tempdir().unwrap();
        let roots = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap();
        let inside = data.path().join("repos");
        std::fs::create_dir_all(&inside).unwrap();
        for bad in [
            "relative/dir",
            "/no/such/dir",
            inside.to_str().unwrap(),
            data_dir,
        ] {
            let err = with(&[("DATA_DIR", data_dir), ("IMPORT_FILE_ROOTS", bad)]).unwrap_err();
            assert_eq!(variable_of(&err), Some("IMPORT_FILE_ROOTS"), "{bad}");
        }
        let root = roots.path().to_str().unwrap();
        let config = with(&[("DATA_DIR", data_dir), ("IMPORT_FILE_ROOTS", root)]).unwrap();
        assert_eq!(
            config.sync.import_file_roots,
            vec![roots.path().canonicalize().unwrap()]
        );
    }

    #[test]
    fn log_filters_accept_levels_and_directives() {
        assert_eq!(parse_log_filter("WARNING").unwrap(), "warn");
        assert_eq!(
            parse_log_filter("info,hivesync=debug").unwrap(),
            "info,hivesync=debug"
        );
        assert!(parse_log_filter("hivesync=loud").is_err());
        assert!(parse_log_filter("=debug").is_err());
    }
}
