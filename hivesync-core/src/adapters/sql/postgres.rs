//! The PostgreSQL `Store`.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;

use super::Dialect;
use crate::error::{Error, Result};

type Db = sqlx::Postgres;

const DIALECT: Dialect = Dialect {
    begin_write: "BEGIN",
    lock_project: "SELECT id FROM projects WHERE id = $1 FOR UPDATE",
};

static MIGRATIONS: std::sync::LazyLock<Migrator> = std::sync::LazyLock::new(|| {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("queue"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0002_queue.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("job_keys"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0003_job_keys.sql").into_sql_str(),
            false,
        ),
    ])
});

include!("store_impl.rs");

impl SqlStore {
    /// Connects to a `postgres://` URL with a pool of `max_connections`.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL").with_source(e))?;
        Ok(SqlStore::from_pool(pool))
    }
}
