//! Opening every backend a HiveSync process needs from its configuration.
//!
//! With `REDIS_URL` set, the queue, worker registry, locks and rate limiter live in Redis (shared
//! by every replica and worker). Without it, they live in the SQL database beside the `Store`
//! (the embedded default), and rate limits are kept in process.

use std::sync::Arc;

use hivesync_core::adapters::{self, InProcessRateLimiter};
use hivesync_core::clock::SharedClock;
use hivesync_core::config::{Config, DatabaseBackend};
use hivesync_core::ports::{JobQueue, Locks, ObjectStore, RateLimiter, Store, WorkerRegistry};
use hivesync_core::{Error, ErrorKind, Result};

use crate::RedisBackend;

/// The ports of one process, opened from configuration.
#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn JobQueue>,
    pub registry: Arc<dyn WorkerRegistry>,
    pub locks: Arc<dyn Locks>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// The Redis backend, when one is configured (for health checks).
    pub redis: Option<RedisBackend>,
    pub clock: SharedClock,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("objects", &self.objects.name())
            .field("queue", &self.queue.name())
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// Opens the store (applying migrations when `migrate`), the object store, and the queue
    /// family the configuration names.
    pub async fn open(config: &Config, clock: SharedClock, migrate: bool) -> Result<Self> {
        let objects = adapters::open_object_store(config).await?;
        let url = config.database.url.expose();
        let (store, sql_queue): (Arc<dyn Store>, Option<SqlQueue>) = match config.database.backend {
            DatabaseBackend::Sqlite => {
                let store = adapters::SqliteStore::connect_sqlite(url).await?;
                let queue = crate::SqliteBackend::new(store.pool().clone(), clock.clone());
                (Arc::new(store), Some(SqlQueue::Sqlite(queue)))
            }
            #[cfg(feature = "postgres")]
            DatabaseBackend::Postgres => {
                let store = adapters::PostgresStore::connect_postgres(url, 16).await?;
                let queue = crate::PostgresBackend::new(store.pool().clone(), clock.clone());
                (Arc::new(store), Some(SqlQueue::Postgres(queue)))
            }
            #[cfg(not(feature = "postgres"))]
            DatabaseBackend::Postgres => {
                return Err(
                    Error::new(ErrorKind::Config, "this build has no PostgreSQL support")
                        .with_context("variable", "DATABASE_URL"),
                );
            }
        };
        if migrate {
            store.migrate().await?;
        }
        if let Some(url) = &config.redis_url {
            let redis =
                RedisBackend::connect(url.expose(), &config.redis_key_prefix, clock.clone())
                    .await?;
            return Ok(Backends {
                store,
                objects,
                queue: Arc::new(redis.clone()),
                registry: Arc::new(redis.clone()),
                locks: Arc::new(redis.clone()),
                rate_limiter: Arc::new(redis.clone()),
                redis: Some(redis),
                clock,
            });
        }
        let Some(sql) = sql_queue else {
            return Err(Error::new(
                ErrorKind::Config,
                "no queue backend is configured",
            ));
        };
        let (queue, registry, locks): (Arc<dyn JobQueue>, Arc<dyn WorkerRegistry>, Arc<dyn Locks>) =
            match sql {
                SqlQueue::Sqlite(q) => (Arc::new(q.clone()), Arc::new(q.clone()), Arc::new(q)),
                #[cfg(feature = "postgres")]
                SqlQueue::Postgres(q) => (Arc::new(q.clone()), Arc::new(q.clone()), Arc::new(q)),
            };
        Ok(Backends {
            store,
            objects,
            queue,
            registry,
            locks,
            rate_limiter: Arc::new(InProcessRateLimiter::new()),
            redis: None,
            clock,
        })
    }

    /// Whether the queue is the SQL one (no Redis): then `serve` runs workers in process.
    pub fn queue_is_embedded(&self) -> bool {
        self.redis.is_none()
    }
}

enum SqlQueue {
    Sqlite(crate::SqliteBackend),
    #[cfg(feature = "postgres")]
    Postgres(crate::PostgresBackend),
}
