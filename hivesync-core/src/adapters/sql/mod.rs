//! The SQL `Store` adapters: SQLite (the embedded default) and PostgreSQL.
//!
//! [`SqlStore`] holds the implementation, generic over the sqlx database; `sqlite` and `postgres`
//! each supply its [`Backend`] (the statements where the databases differ, and the migrations in
//! `migrations/{sqlite,postgres}`, whose schemas are kept column for column identical) and their
//! own way to connect.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Decode, Encode, IntoArguments, Type};

use crate::domain::RepoObject;
use crate::error::{Error, ErrorKind};

#[cfg(test)]
mod migration_tests;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
mod store;

pub use store::SqlStore;

/// What one database needs beyond what sqlx abstracts over, for the SQL code shared by both
/// (this crate's `Store`, and the SQL job queue of `hivesync-queue`).
pub trait Backend: sqlx::Database<Connection: Migrate, Arguments: IntoArguments<Self>> {
    /// Starts a transaction that will write. SQLite needs `BEGIN IMMEDIATE` to take the write lock
    /// up front: a deferred transaction that reads and then writes fails with SQLITE_BUSY when
    /// another writer got there first, instead of waiting.
    const BEGIN_WRITE: &'static str;
    /// Selects a project and locks it until the transaction ends, serialising membership changes
    /// of one project (PostgreSQL `FOR UPDATE`; SQLite's write lock already serialises writers).
    const LOCK_PROJECT: &'static str;
    /// The schema migrations: every file of this database's directory under `migrations/`,
    /// embedded at build time. Cargo does not rebuild when only a new file appears there, so
    /// `migration_tests` fails on a build that lags behind the directory.
    const MIGRATOR: &'static Migrator;
    /// Reference `$2`'s target in project `$1` and every object reached from it through
    /// `links`, one recursive query: rows of `id`, `is_target` (1 for the target, 0 for what it
    /// reaches), `data` and `links` (both absent for a target that is not stored).
    /// Only the expansion of the JSON array differs between the databases.
    const REPO_BRANCH: &'static str;

    /// The rows a statement changed: each driver has this as an inherent method of its own
    /// result type, not as a method of a sqlx trait.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Reads the repository objects of `project` named in `ids` (those it has).
    fn get_repo_objects<'a>(
        pool: &'a sqlx::Pool<Self>,
        project: uuid::Uuid,
        ids: &'a [String],
    ) -> impl Future<Output = crate::error::Result<Vec<RepoObject>>> + Send + 'a;

    /// Inserts repository objects of `project` in the order given; ids it has are left alone.
    fn put_repo_objects<'a>(
        pool: &'a sqlx::Pool<Self>,
        project: uuid::Uuid,
        objects: &'a [RepoObject],
    ) -> impl Future<Output = crate::error::Result<()>> + Send + 'a;
}

/// A repository object read back: `links` is the JSON array the row keeps (NULL on rows stored
/// before links were).
pub(crate) fn repo_object(
    id: String,
    data: Vec<u8>,
    links: Option<String>,
) -> crate::error::Result<RepoObject> {
    let links = match links {
        Some(json) => serde_json::from_str(&json).map_err(|err| {
            Error::internal("a stored repository object has unreadable links")
                .with_context("object", &id)
                .with_context("cause", err)
        })?,
        None => Vec::new(),
    };
    Ok(RepoObject { id, data, links })
}

/// The JSON array a row keeps for an object's links.
pub(crate) fn links_json(object: &RepoObject) -> String {
    serde_json::to_string(&object.links).expect("a list of strings is JSON")
}

/// A Rust type that a column holds on this database: bound as a parameter and read from rows.
/// Only shortens the `where` clauses of the shared SQL code.
pub trait ColumnType<DB: sqlx::Database>:
    Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>
{
}

impl<DB, T> ColumnType<DB> for T
where
    DB: sqlx::Database,
    T: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
{
}

/// The current time at the precision both databases store (microseconds), so that values read
/// back compare equal to the values written.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Connections idle longer than this are pinged before they are lent out again.
const PING_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a pooled connection may be lent out: one idle for a while is pinged first (a database
/// restart or a dropped link shows there, before a query is spent on it); one in steady use is
/// not, where sqlx's default would spend a round trip on every statement (measured in
/// docs/BENCHMARKS.md, "Job queue"). A connection that breaks in use fails that query and is
/// closed when it comes back to the pool, which pings it then.
pub(crate) async fn fit_to_lend<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> sqlx::Result<bool> {
    if meta.idle_for >= PING_WHEN_IDLE_FOR {
        conn.ping().await?;
    }
    Ok(true)
}

/// Converts a sqlx error into ours. Bound values never appear in sqlx's messages, so nothing a
/// user sent (a password hash, an e-mail address) can leak through an error.
/// Whether a connection given back to the pool may serve another request: not when it is still
/// in a transaction (its rollback failed, on a full disk say), which would make every later
/// `BEGIN` on it a savepoint and every request it serves fail. Such a connection is closed and
/// the pool opens a fresh one, so the server heals by itself once the cause is gone.
pub(crate) async fn fit_for_reuse<C: sqlx::Connection>(conn: &mut C) -> sqlx::Result<bool> {
    let fit = !conn.is_in_transaction();
    if !fit {
        tracing::warn!("closing a database connection left inside a transaction");
    }
    Ok(fit)
}

/// The first row a write `… RETURNING` gave back, read with `fetch_all` so that the statement
/// has run to its end: on SQLite a statement outside a transaction commits there, and an error
/// at that point (a full disk) comes after the rows. `fetch_one`/`fetch_optional` stop at the
/// first row and drop that error, reporting a write that was never stored as done.
pub fn first_row<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// As [`first_row`], for a write that must return one.
pub fn only_row<T>(rows: Vec<T>) -> std::result::Result<T, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

pub fn db_error(err: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &err
        && let Some(what) = unavailable_because(db.code().as_deref())
    {
        // The operator's log gets the cause; the client a 503 that says what is wrong.
        return Error::unavailable(what).with_source(err);
    }
    let kind = match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => ErrorKind::Conflict,
        sqlx::Error::Database(db) if db.is_foreign_key_violation() || db.is_check_violation() => {
            ErrorKind::Validation
        }
        sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => ErrorKind::Unavailable,
        // Any other database error (a syntax error, a NOT NULL violation) is a bug of ours, and
        // retrying will not fix it.
        sqlx::Error::Database(_) => ErrorKind::Internal,
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, "database error").with_source(err)
}

/// What a database error that is the machine's, not the request's, says about the machine:
/// SQLite's FULL, IOERR, READONLY, PERM and CANTOPEN (with their extended codes), PostgreSQL's
/// insufficient resources (53…), connection exceptions (08…), I/O errors (58030), a read-only
/// or not yet accepting server (25006, 55000).
fn unavailable_because(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    // SQLite's codes are numbers below 10000; PostgreSQL's SQLSTATEs five characters.
    if code.len() < 5
        && let Ok(n) = code.parse::<i32>()
    {
        return match n & 0xff {
            13 => Some("the database's disk is full"),
            10 => Some("the database cannot read or write its files (I/O error)"),
            8 => Some("the database's files are read-only"),
            3 => Some("the database's files may not be accessed (permission denied)"),
            14 => Some("the database's files cannot be opened"),
            _ => None,
        };
    }
    match code {
        "53100" => Some("the database server's disk is full"),
        "58030" => Some("the database server cannot read or write its files (I/O error)"),
        "25006" => Some("the database server is read-only"),
        "55000" => Some("the database server is not accepting this yet"),
        _ if code.starts_with("53") => Some("the database server is out of resources"),
        _ if code.starts_with("08") => Some("the connection to the database server failed"),
        _ => None,
    }
}

/// Database errors that a retry can clear: PostgreSQL's serialization failures, deadlocks,
/// lock timeouts and shutdowns; SQLite's BUSY and LOCKED (including their extended codes).
fn is_transient(code: Option<&str>) -> bool {
    match code {
        Some("40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03") => true,
        Some(code) => code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        for code in ["40001", "40P01", "5", "517", "6", "262"] {
            assert!(is_transient(Some(code)), "{code}");
        }
        for code in ["23502", "42601", "19", "1"] {
            assert!(!is_transient(Some(code)), "{code}");
        }
        assert!(!is_transient(None));
        for code in [
            "13", "10", "4874", "8", "1032", "3", "14", "53100", "53300", "08006",
        ] {
            assert!(unavailable_because(Some(code)).is_some(), "{code}");
        }
        for code in ["1", "19", "2067", "23505", "42601", "40001"] {
            assert!(unavailable_because(Some(code)).is_none(), "{code}");
        }
        assert_eq!(
            unavailable_because(Some("13")),
            Some("the database's disk is full")
        );
        assert_eq!(
            db_error(sqlx::Error::PoolClosed).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            db_error(sqlx::Error::RowNotFound).kind(),
            ErrorKind::NotFound
        );
    }
}
