//! The SQLite `Store`: the embedded default, one file in `DATA_DIR`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::{Backend, db_error, links_json, repo_object};
use crate::domain::RepoObject;
use crate::error::{Error, ErrorKind, Result};

/// The `Store` on SQLite.
pub type SqlStore = super::SqlStore<Sqlite>;

impl Backend for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_PROJECT: &'static str = "SELECT id FROM projects WHERE id = $1";
    // The whole directory rather than a list, so that no migration can be left out of it.
    const MIGRATOR: &'static Migrator = &sqlx::migrate!("./migrations/sqlite");
    const REPO_BRANCH: &'static str = "WITH RECURSIVE reach (id, is_target) AS ( \
             SELECT target, 1 FROM repo_refs WHERE project_id = $1 AND name = $2 \
           UNION \
             SELECT link.value, 0 FROM reach \
             JOIN repo_objects o ON o.project_id = $1 AND o.id = reach.id \
             JOIN json_each(COALESCE(o.links, '[]')) AS link \
         ) \
         SELECT reach.id, reach.is_target, o.data, o.links FROM reach \
         LEFT JOIN repo_objects o ON o.project_id = $1 AND o.id = reach.id";

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    // A parameter per id, in batches: SQLite has no arrays, and preparing a statement is a call
    // within the process.
    async fn get_repo_objects(
        pool: &SqlitePool,
        project: uuid::Uuid,
        ids: &[String],
    ) -> Result<Vec<RepoObject>> {
        let mut found = Vec::with_capacity(ids.len());
        for batch in ids.chunks(REPO_OBJECT_BATCH) {
            let wanted: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT id, data, links FROM repo_objects WHERE project_id = $1 AND id IN ({})",
                wanted.join(", ")
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(project);
            for id in batch {
                query = query.bind(id.as_str());
            }
            let rows: Vec<(String, Vec<u8>, Option<String>)> =
                query.fetch_all(pool).await.map_err(db_error)?;
            for (id, data, links) in rows {
                found.push(repo_object(id, data, links)?);
            }
        }
        Ok(found)
    }

    async fn put_repo_objects(
        pool: &SqlitePool,
        project: uuid::Uuid,
        objects: &[RepoObject],
    ) -> Result<()> {
        for batch in objects.chunks(REPO_OBJECT_BATCH) {
            let rows: Vec<String> = (0..batch.len())
                .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                .collect();
            let sql = format!(
                "INSERT INTO repo_objects (project_id, id, data, links) VALUES {} \
                 ON CONFLICT (project_id, id) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(project);
            for object in batch {
                query = query
                    .bind(object.id.as_str())
                    .bind(object.data.as_slice())
                    .bind(links_json(object));
            }
            query.execute(pool).await.map_err(db_error)?;
        }
        Ok(())
    }
}

/// Repository objects per statement: within SQLite's limit on parameters (three per object).
const REPO_OBJECT_BATCH: usize = 200;

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
            writable(dir)?;
        }
        // Two writers: SQLite takes one at a time anyway, and a writer waiting in the pool is
        // served as soon as a connection is back, where one waiting in SQLite's busy handler
        // sleeps between tries. Not one: sqlx pings every connection it takes back, and a single
        // writer would sit idle through each ping; with two, one writes while the other is
        // handed back (measured in docs/BENCHMARKS.md, "Job queue").
        let pool = |connections: u32, wait: u64| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(wait))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| Box::pin(super::fit_to_lend(conn, meta)))
                .after_release(|conn, _| Box::pin(super::fit_for_reuse(conn)))
                .connect_with(options.clone())
        };
        let opened = |e| Error::unavailable("cannot open the SQLite database").with_source(e);
        let writer = pool(2, 30).await.map_err(opened)?;
        // In WAL mode readers never wait for the writer.
        let readers = pool(8, 10).await.map_err(opened)?;
        Ok(SqlStore::from_pool(writer).with_readers(readers))
    }
}

/// Whether the database's directory takes new files (the database, its WAL): said at start-up,
/// naming the directory, rather than as SQLite's "unable to open database file".
fn writable(dir: &std::path::Path) -> Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map(drop);
    let _ = std::fs::remove_file(&probe);
    created.map_err(|err| {
        let why = match err.kind() {
            std::io::ErrorKind::PermissionDenied => "permission denied",
            std::io::ErrorKind::ReadOnlyFilesystem => "the filesystem is read-only",
            std::io::ErrorKind::StorageFull => "the disk is full",
            _ => "it cannot be written",
        };
        Error::new(
            ErrorKind::Config,
            format!("cannot write the database in {}: {why}", dir.display()),
        )
        .with_source(err)
    })
}
