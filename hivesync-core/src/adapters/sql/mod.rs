//! The SQL `Store` adapters: SQLite (embedded default) and PostgreSQL, sharing one
//! implementation (`store_impl.rs`) and two column-for-column identical schemas
//! (`migrations/{sqlite,postgres}`).

use chrono::{DateTime, SubsecRound, Utc};

use crate::error::{Error, ErrorKind};

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

/// The statements where the two databases differ.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// Starts a transaction that will write. SQLite needs `BEGIN IMMEDIATE` to take the write lock
    /// up front: a deferred transaction that reads and then writes fails with SQLITE_BUSY when
    /// another writer got there first, instead of waiting.
    pub(crate) begin_write: &'static str,
    /// Selects a project and locks it until the transaction ends, serialising membership changes
    /// of one project (PostgreSQL `FOR UPDATE`; SQLite's write lock already serialises writers).
    pub(crate) lock_project: &'static str,
}

/// The current time at the precision both databases store (microseconds), so that values read
/// back compare equal to the values written.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Converts a sqlx error into ours. Bound values never appear in sqlx's messages, so nothing a
/// user sent (a password hash, an e-mail address) can leak through an error.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    let kind = match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => ErrorKind::Conflict,
        sqlx::Error::Database(db) if db.is_foreign_key_violation() || db.is_check_violation() => {
            ErrorKind::Validation
        }
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::Migrate(_) => ErrorKind::Internal,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, "database error").with_source(err)
}
