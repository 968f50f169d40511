//! The SQL-backed `JobQueue`, `WorkerRegistry` and `Locks`: the embedded default on SQLite, and
//! a Redis-free option on PostgreSQL (`FOR UPDATE SKIP LOCKED`). Their tables are created by the
//! `Store` migrations, so one `hivesync migrate` prepares everything.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;

use hivesync_core::adapters::sql::Backend;
pub(crate) use hivesync_core::adapters::sql::db_error;

mod backend;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

pub use backend::SqlBackend;

/// Expired leases of a queue are looked for at most this often (by the backend's clock).
pub(crate) const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// Workers silent for this long are dropped from the registry.
pub(crate) const WORKER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The statements of the SQL queue where the two databases differ.
pub trait QueueBackend: Backend {
    /// Leases the oldest due job of a queue (`$1` queue, `$2` now, `$3` token, `$4` expiry,
    /// `$5` worker). PostgreSQL skips rows other workers are leasing at this instant.
    const RESERVE: &'static str;
    /// Reads a lease's cancellation flag (`$1` job, `$2` token), locking the row on PostgreSQL.
    const LOCK_LEASE: &'static str;
}

pub(crate) fn to_ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A random token for one delivery.
pub(crate) fn lease_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
