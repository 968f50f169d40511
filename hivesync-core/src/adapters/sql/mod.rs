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
