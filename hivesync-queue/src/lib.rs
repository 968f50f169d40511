//! HiveSync's job queues and workers.
//!
//! # Layout
//!
//! - [`sql`]: the SQL-backed `JobQueue`, `WorkerRegistry` and `Locks` (SQLite, PostgreSQL).

pub mod sql;

pub use sql::sqlite::SqlBackend as SqliteBackend;
#[cfg(feature = "postgres")]
pub use sql::postgres::SqlBackend as PostgresBackend;
