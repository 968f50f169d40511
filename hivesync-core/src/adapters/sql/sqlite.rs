//! The SQLite `Store`: the embedded default, one file in `DATA_DIR`.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Dialect;
use crate::error::{Error, ErrorKind, Result};

type Db = sqlx::Sqlite;

const DIALECT: Dialect = Dialect {
    begin_write: "BEGIN IMMEDIATE",
    lock_project: "SELECT id FROM projects WHERE id = $1",
};

static MIGRATIONS: std::sync::LazyLock<Migrator> = std::sync::LazyLock::new(|| {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("queue"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0002_queue.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("job_keys"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0003_job_keys.sql").into_sql_str(),
            false,
        ),
    ])
});

include!("store_impl.rs");

impl SqlStore {
    /// Opens (creating if needed) the database at a `sqlite://` URL, in WAL mode with foreign keys
    /// enforced.
    pub async fn connect_sqlite(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::new(ErrorKind::Config, "invalid DATABASE_URL").with_source(e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(ErrorKind::Config, "cannot create the database's directory")
                    .with_context("path", dir.display())
                    .with_source(e)
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| Error::unavailable("cannot open the SQLite database").with_source(e))?;
        Ok(SqlStore::from_pool(pool))
    }
}
