//! Adapters for the ports, and the functions that pick one from configuration.

use std::sync::Arc;

use crate::config::{Config, DatabaseBackend, ObjectStorageConfig};
use crate::error::Result;
#[cfg(not(all(feature = "postgres", feature = "s3")))]
use crate::error::{Error, ErrorKind};
use crate::ports::{ObjectStore, Store};

pub mod fs;
pub mod rate_limiter;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sql;

pub use fs::FilesystemObjectStore;
pub use rate_limiter::InProcessRateLimiter;
#[cfg(feature = "s3")]
pub use s3::S3ObjectStore;
#[cfg(feature = "postgres")]
pub use sql::postgres::SqlStore as PostgresStore;
pub use sql::sqlite::SqlStore as SqliteStore;

/// Connections a PostgreSQL pool may open; SQLite's pool is sized by its adapter.
#[cfg(feature = "postgres")]
const POSTGRES_POOL_SIZE: u32 = 16;

/// Opens the `Store` that `DATABASE_URL` names. Migrations are not applied here.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    let url = config.database.url.expose();
    match config.database.backend {
        DatabaseBackend::Sqlite => Ok(Arc::new(SqliteStore::connect_sqlite(url).await?)),
        #[cfg(feature = "postgres")]
        DatabaseBackend::Postgres => Ok(Arc::new(
            PostgresStore::connect_postgres(url, POSTGRES_POOL_SIZE).await?,
        )),
        #[cfg(not(feature = "postgres"))]
        DatabaseBackend::Postgres => Err(Error::new(
            ErrorKind::Config,
            "DATABASE_URL names PostgreSQL, but this build has no `postgres` feature",
        )
        .with_context("variable", "DATABASE_URL")),
    }
}

/// Opens the `ObjectStore` that the `OBJECT_STORAGE_*` variables describe.
pub async fn open_object_store(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    match &config.object_storage {
        ObjectStorageConfig::Filesystem { root } => {
            Ok(Arc::new(FilesystemObjectStore::open(root.clone()).await?))
        }
        #[cfg(feature = "s3")]
        ObjectStorageConfig::S3(s3) => Ok(Arc::new(S3ObjectStore::connect(s3).await?)),
        #[cfg(not(feature = "s3"))]
        ObjectStorageConfig::S3(_) => Err(Error::new(
            ErrorKind::Config,
            "OBJECT_STORAGE_PROVIDER names an S3-compatible store, but this build has no `s3` feature",
        )
        .with_context("variable", "OBJECT_STORAGE_PROVIDER")),
    }
}
