//! The SQL backend on PostgreSQL.

use sqlx::Postgres;

use super::QueueBackend;

/// The job queue, worker registry and locks on PostgreSQL.
pub type SqlBackend = super::SqlBackend<Postgres>;

impl QueueBackend for Postgres {
    const RESERVE: &'static str = "UPDATE queue_entries SET status = 'leased', \
        attempt = attempt + 1, lease_token = $3, lease_expires_at = $4, worker_id = $5 \
        WHERE job_id = (SELECT job_id FROM queue_entries \
        WHERE queue = $1 AND status = 'waiting' AND run_at <= $2 \
        ORDER BY run_at, job_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING job_id, kind, payload, attempt, max_attempts, enqueued_at, lease_token, \
        lease_expires_at";
    const LOCK_LEASE: &'static str = "SELECT cancel_requested FROM queue_entries \
        WHERE job_id = $1 AND status = 'leased' AND lease_token = $2 FOR UPDATE";
}
