//! The SQLite `Store`: the embedded default, one file in `DATA_DIR`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::Backend;
use crate::error::{Error, ErrorKind, Result};

/// The `Store` on SQLite.
pub type SqlStore = super::SqlStore<Sqlite>;

impl Backend for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_PROJECT: &'static str = "SELECT id FROM projects WHERE id = $1";
    // The whole directory rather than a list, so that no migration can be left out of it.
    const MIGRATOR: &'static Migrator = &sqlx::migrate!("./migrations/sqlite");

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

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
