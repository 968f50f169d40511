//! HiveSync's job queues and workers.
//!
//! # Layout
//!
//! - [`redis`]: the Redis `JobQueue`, `WorkerRegistry`, `Locks` and `RateLimiter`, with their Lua
//!   scripts in `lua/`.
//! - [`sql`]: the SQL-backed `JobQueue`, `WorkerRegistry` and `Locks` (SQLite, PostgreSQL).

pub mod redis;
pub mod sql;

pub use redis::RedisBackend;
pub use sql::sqlite::SqlBackend as SqliteBackend;
#[cfg(feature = "postgres")]
pub use sql::postgres::SqlBackend as PostgresBackend;
