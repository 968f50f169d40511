//! Everything a request handler needs, built once from the configuration.

use std::sync::Arc;

use hivesync_core::Result;
use hivesync_core::adapters::{self, InProcessRateLimiter};
use hivesync_core::auth::{JwtIssuer, PasswordHasher};
use hivesync_core::config::{self, Config};
use hivesync_core::ports::{ObjectStore, Quota, RateLimiter, Store};
use hivesync_core::preview_token::PreviewTokenSigner;

/// The adapters and services of one running server, shared by every request.
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    pub passwords: PasswordHasher,
    pub jwt: JwtIssuer,
    pub preview_tokens: PreviewTokenSigner,
    /// Attempts per client address and per account on `/auth/login` and `/auth/register`.
    pub login_quota: Quota,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &"dyn Store")
            .field("objects", &self.objects.name())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Prepares `DATA_DIR`, opens the adapters the configuration names and applies migrations.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        config::prepare_data_dir(&config)?;
        let store = adapters::open_store(&config).await?;
        store.migrate().await?;
        let objects = adapters::open_object_store(&config).await?;
        Self::with_adapters(
            config,
            store,
            objects,
            Arc::new(InProcessRateLimiter::new()),
        )
    }

    /// Assembles a state from adapters the caller opened (tests, embedders).
    pub fn with_adapters(
        config: Config,
        store: Arc<dyn Store>,
        objects: Arc<dyn ObjectStore>,
        rate_limiter: Arc<dyn RateLimiter>,
    ) -> Result<Arc<Self>> {
        Ok(Arc::new(AppState {
            jwt: JwtIssuer::from_config(&config.jwt),
            preview_tokens: PreviewTokenSigner::from_config(&config.preview)?,
            login_quota: Quota::per_minute(config.http.login_attempts_per_minute)?,
            passwords: PasswordHasher::owasp(),
            config,
            store,
            objects,
            rate_limiter,
        }))
    }
}
