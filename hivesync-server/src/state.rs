//! Everything a request handler needs, built once from the configuration.

use std::sync::{Arc, OnceLock};

use hivesync_ai::providers::ChainFor;
use hivesync_ai::{AiHandler, AiRequests, Chain};
use hivesync_core::Result;
use hivesync_core::auth::{JwtIssuer, PasswordHasher};
use hivesync_core::clock::{SharedClock, system_clock};
use hivesync_core::config::{self, Config, RepoStorage, SigningKeys};
use hivesync_core::job_cache::MemberJobCache;
use hivesync_core::ports::{
    JobQueue, Locks, ObjectStore, Quota, RateLimiter, Store, WorkerRegistry, WorkerRole,
};
use hivesync_core::preview_token::PreviewTokenSigner;
use hivesync_core::repo::{Repos, SharedRepos};
use hivesync_preview::builder::PreviewBuilder;
use hivesync_preview::deps::DepsStore;
use hivesync_preview::install_network::{InstallNetwork, InstallPolicy};
use hivesync_preview::request::Previews;
use hivesync_preview::sandbox::Sandbox;
use hivesync_preview::toolchain::toolchain;
use hivesync_queue::RedisBackend;
use hivesync_queue::autoscaler::{Bounds, Decision};
use hivesync_queue::backends::Backends;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

/// The adapters and services of one running server, shared by every request.
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn JobQueue>,
    pub registry: Arc<dyn WorkerRegistry>,
    pub locks: Arc<dyn Locks>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// The Redis backend, when `REDIS_URL` is set (for health checks).
    pub redis: Option<RedisBackend>,
    pub clock: SharedClock,
    pub passwords: PasswordHasher,
    pub jwt: JwtIssuer,
    pub preview_tokens: PreviewTokenSigner,
    /// The projects' git repositories under `DATA_DIR/repos`.
    pub repos: Arc<Repos>,
    /// Attempts per client address and per account on `/auth/login` and `/auth/register`.
    pub login_quota: Quota,
    /// Build requests: the whole-build cache in front of the `preview_build` queue.
    pub previews: Previews,
    /// `POST /preview/build` requests per user and project.
    pub build_quota: Quota,
    /// AI requests: the result cache in front of the `ai_jobs` queue, with the provider chain
    /// this deployment is configured with.
    pub ai: AiRequests,
    /// `POST /ai/*` requests per user (`AI_REQUESTS_PER_MINUTE`).
    pub ai_quota: Quota,
    /// Build status reads, from memory while the database's change feed is live (PostgreSQL).
    pub job_cache: Arc<MemberJobCache>,
    /// Stops this state's background tasks (the change feed) when the state is dropped.
    background: CancellationToken,
    /// The dependency store this process's preview builders share (made on first use: it asks
    /// Node and npm for their versions).
    preview_deps: OnceLock<(Arc<DepsStore>, Arc<Sandbox>)>,
    /// The chain of this process's GPU worker ([`AppState::prepare_gpu`]).
    gpu_chain: OnceLock<Chain>,
    /// Renders `/metrics`; `None` when this process did not install the Prometheus recorder.
    pub metrics: Option<PrometheusHandle>,
    /// What the autoscaler last decided, for `/admin/autoscaler`.
    pub autoscaler: Arc<RwLock<AutoscalerView>>,
}

/// The autoscaler as the admin API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AutoscalerView {
    /// Whether this process runs the autoscaler loop (and holds its lock).
    pub active: bool,
    pub bounds: Option<Bounds>,
    /// The current target per role.
    pub targets: Vec<(String, u32)>,
    /// The latest decisions, newest last.
    pub decisions: Vec<(String, Decision)>,
    pub last_error: Option<String>,
}

/// How long a cached status read may be served, even with no change announced.
const JOB_CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);
/// The status cache empties itself at this many jobs.
const JOB_CACHE_MAX_ENTRIES: usize = 100_000;

/// Starts the change feed that keeps `cache` correct, where the database has one (PostgreSQL) and
/// a runtime is there to run it; otherwise the cache stays off and every read goes to the Store.
fn watch_changes(config: &Config, cache: &Arc<MemberJobCache>, stop: &CancellationToken) {
    if config.preview.status_cache
        && config.database.backend == config::DatabaseBackend::Postgres
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let url = config.database.url.expose().to_owned();
        runtime.spawn(hivesync_core::adapters::sql::postgres::watch_changes(
            url,
            cache.clone(),
            stop.clone(),
        ));
    }
}

impl Drop for AppState {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("objects", &self.objects.name())
            .field("queue", &self.queue.name())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Prepares `DATA_DIR`, opens the backends the configuration names and applies migrations.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        config::prepare_data_dir(&config)?;
        let backends = Backends::open(&config, system_clock(), true).await?;
        Self::new(config, backends, None)
    }

    /// Assembles a state from opened backends (tests, embedders), with the signing keys
    /// [`SigningKeys::prepare`] loads (generating the embedded mode's on first use).
    pub fn new(
        config: Config,
        backends: Backends,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Arc<Self>> {
        let keys = SigningKeys::prepare(&config)?;
        Self::with_keys(config, &keys, backends, metrics)
    }

    /// Assembles a state with `keys` (a command that signs nothing passes
    /// [`SigningKeys::without_storing`]).
    pub fn with_keys(
        config: Config,
        keys: &SigningKeys,
        backends: Backends,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Arc<Self>> {
        let mut repos = Repos::from_config(&config);
        if config.repo_storage == RepoStorage::Shared {
            repos = repos.with_sharing(SharedRepos::new(
                backends.store.clone(),
                backends.objects.clone(),
            )?);
        }
        let repos = Arc::new(repos);
        let job_cache = Arc::new(MemberJobCache::new(
            JOB_CACHE_MAX_AGE,
            JOB_CACHE_MAX_ENTRIES,
        ));
        let background = CancellationToken::new();
        watch_changes(&config, &job_cache, &background);
        Ok(Arc::new(AppState {
            jwt: JwtIssuer::from_config(&config.jwt, keys),
            preview_tokens: PreviewTokenSigner::from_config(&config.preview, keys)?,
            login_quota: Quota::per_minute(config.http.login_attempts_per_minute)?,
            build_quota: Quota::per_minute(config.preview.builds_per_minute)?,
            previews: Previews {
                store: backends.store.clone(),
                queue: backends.queue.clone(),
                objects: backends.objects.clone(),
                repos: repos.clone(),
                optimize: config.preview.optimize,
            },
            ai: AiRequests {
                store: backends.store.clone(),
                queue: backends.queue.clone(),
                chain: hivesync_ai::providers::chain(&config, ChainFor::Cpu)?,
                max_input_bytes: config.ai.max_input_bytes,
            },
            ai_quota: Quota::per_minute(config.ai.requests_per_minute)?,
            repos,
            preview_deps: OnceLock::new(),
            gpu_chain: OnceLock::new(),
            job_cache,
            background,
            passwords: PasswordHasher::owasp(),
            store: backends.store,
            objects: backends.objects,
            queue: backends.queue,
            registry: backends.registry,
            locks: backends.locks,
            rate_limiter: backends.rate_limiter,
            redis: backends.redis,
            clock: backends.clock,
            metrics,
            autoscaler: Arc::default(),
            config,
        }))
    }

    /// A preview builder for one worker: its own `PREVIEW_BUILDER_CONCURRENCY` slots, the
    /// process's dependency store. Blocks the first time (see [`toolchain`]).
    pub fn preview_builder(&self) -> PreviewBuilder {
        let (deps, sandbox) = self.preview_deps.get_or_init(|| {
            let sandbox = Sandbox::for_mode(self.config.preview.sandbox, &self.config.data_dir);
            match &sandbox {
                Sandbox::Bwrap { .. } => {}
                Sandbox::None { reason } | Sandbox::Unavailable { reason } => {
                    tracing::warn!(%reason, "preview builds run the project's code unconfined");
                }
            }
            let sandbox = Arc::new(sandbox);
            let policy = InstallPolicy::new(
                &self.config.preview.install_hosts,
                self.config.preview.install_allow_private,
            )
            .unwrap_or_else(|why| {
                // Checked at startup, so this cannot happen; the registries alone are still safe.
                tracing::error!(%why, "PREVIEW_INSTALL_HOSTS: using the default registries");
                InstallPolicy::default()
            });
            let deps = DepsStore::new(
                self.config.data_dir.join("cache/preview_deps"),
                "npm",
                toolchain().to_string(),
                InstallNetwork::new(policy, sandbox.clone()),
            );
            (Arc::new(deps), sandbox)
        });
        PreviewBuilder {
            repos: self.repos.clone(),
            deps: deps.clone(),
            sandbox: sandbox.clone(),
            optimize: self.config.preview.optimize,
            objects: self.objects.clone(),
            data_dir: self.config.data_dir.clone(),
            timeout: self.config.preview.max_build_time,
            install_timeout: self.config.preview.max_install_time,
            slots: Arc::new(Semaphore::new(self.config.preview.builder_concurrency)),
        }
    }

    /// Makes the chain a GPU worker of this process runs (the local model on CUDA, or on the
    /// CPU where `LOCAL_AI_CPU_FALLBACK` allows): the `Config` error says why it cannot.
    pub fn prepare_gpu(&self) -> Result<()> {
        if self.gpu_chain.get().is_none() {
            let chain = hivesync_ai::providers::chain(&self.config, ChainFor::Gpu)?;
            let _ = self.gpu_chain.set(chain);
        }
        Ok(())
    }

    /// The AI job handler for worker `worker` of `role`: a GPU worker's chain
    /// ([`AppState::prepare_gpu`] first), else this deployment's.
    pub fn ai_handler(&self, role: WorkerRole, worker: &str) -> AiHandler {
        let chain = match (role, self.gpu_chain.get()) {
            (WorkerRole::Gpu, Some(chain)) => chain.clone(),
            _ => self.ai.chain.clone(),
        };
        AiHandler {
            chain,
            repos: self.repos.clone(),
            worker: worker.to_owned(),
        }
    }

    /// The backends again, for components that take them whole (workers, cleanup).
    pub fn backends(&self) -> Backends {
        Backends {
            store: self.store.clone(),
            objects: self.objects.clone(),
            queue: self.queue.clone(),
            registry: self.registry.clone(),
            locks: self.locks.clone(),
            rate_limiter: self.rate_limiter.clone(),
            redis: self.redis.clone(),
            clock: self.clock.clone(),
        }
    }
}
