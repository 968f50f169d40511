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

/// Converts a sqlx error into ours. Bound values never appear in sqlx's messages, so nothing a
/// user sent (a password hash, an e-mail address) can leak through an error.
pub fn db_error(err: sqlx::Error) -> Error {
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
