//! HiveSync's job queues and workers.
//!
//! # Layout
//!
//! - [`redis`]: the Redis `JobQueue`, `WorkerRegistry`, `Locks` and `RateLimiter`, with their Lua
//!   scripts in `lua/`.
//! - [`backends`]: opening the store, object store and queue family from configuration.
//! - [`autoscaler`]: the scaling decision, its cool-down, and the `Scaler` adapters.
//! - [`cleanup`]: the cleanup worker's job: what it may delete, planned, then applied.
//! - [`jobs`]: submitting jobs (`Store` first, then the queue) and the reconciler.
//! - [`worker`]: the worker runtime: leases, handlers, outcomes, heartbeats, shutdown.
//! - [`sql`]: the SQL-backed `JobQueue`, `WorkerRegistry` and `Locks` (SQLite, PostgreSQL).

pub mod autoscaler;
pub mod backends;
pub mod cleanup;
pub mod jobs;
pub mod redis;
pub mod sql;
pub mod worker;

pub use redis::RedisBackend;
#[cfg(feature = "postgres")]
pub use sql::postgres::SqlBackend as PostgresBackend;
pub use sql::sqlite::SqlBackend as SqliteBackend;
