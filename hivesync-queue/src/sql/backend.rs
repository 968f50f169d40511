//! The SQL `JobQueue`, `WorkerRegistry` and `Locks`, written once for SQLite and PostgreSQL.
//!
//! Like the SQL `Store` (`hivesync_core::adapters::sql`), this is generic over the sqlx database
//! and runs the same statements on both, over tables that are identical on both
//! (`hivesync-core/migrations/*/0002_queue.sql`); what differs comes from [`QueueBackend`].
//! Each `impl` block's `where` clause lists what its statements need and sqlx does not promise
//! for every database (a connection that runs queries, Rust types that fit the columns): rustc
//! does not carry such bounds over from a trait to its users, so they cannot be stated once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hivesync_core::adapters::sql::ColumnType;
use hivesync_core::clock::SharedClock;
use hivesync_core::domain::JobId;
use hivesync_core::ports::{
    CancelOutcome, DeadLetter, Delivery, Enqueued, FailOutcome, Failure, JobQueue, LeaseRef,
    LeaseStatus, Locks, NewQueuedJob, Queue, QueueStats, ReleaseOutcome, WorkerRegistry,
    WorkerStatus,
};
use hivesync_core::{Error, ErrorKind, Result};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Pool, Row, Type};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{QueueBackend, RECLAIM_EVERY, WORKER_RETENTION, db_error, from_ms, lease_token, to_ms};
use hivesync_core::adapters::sql::first_row;

/// The three statements that take back leased jobs matching `$scope` (`$1` the queue or worker,
/// `$2` now): drop the cancelled, dead-letter those on their last attempt, re-queue the rest as
/// due since they were first enqueued.
macro_rules! take_back_statements {
    ($($scope:tt)+) => {
        [
            concat!(
                "DELETE FROM queue_entries WHERE ",
                $($scope)+,
                " AND cancel_requested RETURNING job_id"
            ),
            concat!(
                "UPDATE queue_entries SET status = 'dead', died_at = $2, dedup_key = NULL, \
                 lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, \
                 error_code = 'LEASE_EXPIRED', \
                 error_message = 'the worker stopped renewing its lease on the last attempt' \
                 WHERE ",
                $($scope)+,
                " AND attempt >= max_attempts RETURNING job_id"
            ),
            concat!(
                "UPDATE queue_entries SET status = 'waiting', run_at = enqueued_at, \
                 lease_token = NULL, lease_expires_at = NULL, worker_id = NULL WHERE ",
                $($scope)+,
                " RETURNING job_id"
            ),
        ]
    };
}

/// The leases of one worker (`$1`). Every queue is named, so the leases index (queue, status, …)
/// finds the leased rows instead of a scan of the whole table; `$2` is there for the statements
/// that do not otherwise use the time.
macro_rules! worker_scope {
    () => {
        "queue IN ('ai_jobs', 'gpu_ai_jobs', 'preview_build', 'cleanup', 'system_events') \
         AND status = 'leased' AND worker_id = $1 AND $2 = $2"
    };
}

/// Whose leases [`SqlBackend::take_back`] takes back.
#[derive(Debug, Clone, Copy)]
enum Gone<'a> {
    /// Leases of this queue that ran out.
    Expired(Queue),
    /// Every lease of a worker known to be gone.
    Worker(&'a str),
}

/// The job queue, worker registry and locks on a sqlx pool:
/// [`SqliteBackend`](crate::SqliteBackend) or `PostgresBackend`.
pub struct SqlBackend<DB: Database> {
    pool: Pool<DB>,
    clock: SharedClock,
    /// Wakes this process's waiting workers when this process adds work; workers in other
    /// processes find it at their next poll.
    work_added: Arc<Notify>,
    /// When each queue's expired leases were last reclaimed, by the clock.
    last_reclaim: Arc<Mutex<HashMap<Queue, DateTime<Utc>>>>,
}

// Not derived: the derive would require `DB: Clone`, which sqlx's database types are not.
impl<DB: Database> Clone for SqlBackend<DB> {
    fn clone(&self) -> Self {
        SqlBackend {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            work_added: self.work_added.clone(),
            last_reclaim: self.last_reclaim.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for SqlBackend<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlBackend").finish_non_exhaustive()
    }
}

impl<DB: Database> SqlBackend<DB> {
    /// A backend on `pool`, whose tables the `Store` migrations created.
    pub fn new(pool: Pool<DB>, clock: SharedClock) -> Self {
        SqlBackend {
            pool,
            clock,
            work_added: Arc::new(Notify::new()),
            last_reclaim: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn now_ms(&self) -> i64 {
        to_ms(self.clock.now())
    }
}

impl<DB> SqlBackend<DB>
where
    DB: QueueBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Type<DB> + Encode<'a, DB> + Decode<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    Json<Value>: ColumnType<DB>,
    Uuid: ColumnType<DB>,
    String: ColumnType<DB>,
    i32: ColumnType<DB>,
    i64: ColumnType<DB>,
{
    /// Makes expired leases deliverable again (or dead, or gone), at most once per
    /// [`RECLAIM_EVERY`] per queue: every `reserve` would otherwise pay three extra statements.
    async fn reclaim_expired(&self, queue: Queue, now_ms: i64) -> Result<()> {
        let now = from_ms(now_ms);
        {
            let mut last = self.last_reclaim.lock().unwrap_or_else(|e| e.into_inner());
            match last.get(&queue) {
                Some(at)
                    if now
                        .signed_duration_since(*at)
                        .to_std()
                        .is_ok_and(|d| d < RECLAIM_EVERY) =>
                {
                    return Ok(());
                }
                _ => {
                    last.insert(queue, now);
                }
            }
        }
        let requeued = self.take_back(Gone::Expired(queue), now_ms).await?.len();
        if requeued > 0 {
            tracing::info!(queue = %queue, jobs = requeued, "took back jobs whose lease expired");
        }
        Ok(())
    }

    /// Takes back the jobs leased to workers that are gone: dropped when their cancellation was
    /// requested, dead on their last attempt, otherwise due again as of when they were first
    /// enqueued — next in line, not behind the jobs that arrived while they ran.
    async fn take_back(&self, gone: Gone<'_>, now_ms: i64) -> Result<Vec<JobId>> {
        let (statements, key) = match gone {
            Gone::Expired(queue) => (
                take_back_statements!(
                    "queue = $1 AND status = 'leased' AND lease_expires_at <= $2"
                ),
                queue.as_str(),
            ),
            Gone::Worker(worker) => (take_back_statements!(worker_scope!()), worker),
        };
        let mut taken = Vec::new();
        for statement in statements {
            let ids: Vec<Uuid> = sqlx::query_scalar(statement)
                .bind(key)
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            taken.extend(ids.into_iter().map(JobId::from_uuid));
        }
        if !taken.is_empty() {
            self.work_added.notify_waiters();
        }
        Ok(taken)
    }

    async fn job_with_key(&self, queue: Queue, key: &str) -> Result<Option<JobId>> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT job_id FROM queue_entries WHERE queue = $1 AND dedup_key = $2",
        )
        .bind(queue.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(id.map(JobId::from_uuid))
    }

    fn delivery_from_row(row: &DB::Row, queue: Queue) -> Result<Delivery> {
        let attempt: i32 = row.try_get("attempt").map_err(db_error)?;
        let max_attempts: i32 = row.try_get("max_attempts").map_err(db_error)?;
        let expires: i64 = row.try_get("lease_expires_at").map_err(db_error)?;
        let enqueued: i64 = row.try_get("enqueued_at").map_err(db_error)?;
        Ok(Delivery {
            lease: LeaseRef {
                job_id: JobId::from_uuid(row.try_get("job_id").map_err(db_error)?),
                queue,
                token: row.try_get("lease_token").map_err(db_error)?,
            },
            kind: row.try_get("kind").map_err(db_error)?,
            payload: row
                .try_get::<Json<Value>, _>("payload")
                .map_err(db_error)?
                .0,
            attempt: attempt.max(0) as u32,
            max_attempts: max_attempts.max(0) as u32,
            enqueued_at: from_ms(enqueued),
            lease_expires_at: from_ms(expires),
        })
    }

    fn dead_letter_from_row(row: &DB::Row) -> Result<DeadLetter> {
        let attempts: i32 = row.try_get("attempt").map_err(db_error)?;
        Ok(DeadLetter {
            job_id: JobId::from_uuid(row.try_get("job_id").map_err(db_error)?),
            queue: row.try_get::<&str, _>("queue").map_err(db_error)?.parse()?,
            kind: row.try_get("kind").map_err(db_error)?,
            payload: row
                .try_get::<Json<Value>, _>("payload")
                .map_err(db_error)?
                .0,
            attempts: attempts.max(0) as u32,
            error_code: row
                .try_get::<Option<String>, _>("error_code")
                .map_err(db_error)?
                .unwrap_or_default(),
            error_message: row
                .try_get::<Option<String>, _>("error_message")
                .map_err(db_error)?
                .unwrap_or_default(),
            died_at: from_ms(
                row.try_get::<Option<i64>, _>("died_at")
                    .map_err(db_error)?
                    .unwrap_or(0),
            ),
        })
    }
}

#[async_trait]
impl<DB> JobQueue for SqlBackend<DB>
where
    DB: QueueBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Type<DB> + Encode<'a, DB> + Decode<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Json<&'a Value>: Type<DB> + Encode<'a, DB>,
    Json<Value>: ColumnType<DB>,
    Uuid: ColumnType<DB>,
    Option<Uuid>: ColumnType<DB>,
    String: ColumnType<DB>,
    bool: ColumnType<DB>,
    i32: ColumnType<DB>,
    i64: ColumnType<DB>,
{
    fn name(&self) -> &'static str {
        "sql"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn enqueue(&self, job: NewQueuedJob) -> Result<Enqueued> {
        let now = self.now_ms();
        let run_at = now + job.delay.map_or(0, |d| d.as_millis() as i64);
        let max_attempts = job
            .max_attempts
            .unwrap_or(job.queue.policy().max_attempts)
            .max(1);
        for _ in 0..2 {
            let inserted = sqlx::query(
                "INSERT INTO queue_entries (job_id, queue, kind, payload, status, attempt, \
                 max_attempts, dedup_key, enqueued_at, run_at) \
                 VALUES ($1, $2, $3, $4, 'waiting', 0, $5, $6, $7, $8)",
            )
            .bind(job.job_id.as_uuid())
            .bind(job.queue.as_str())
            .bind(&job.kind)
            .bind(Json(&job.payload))
            .bind(max_attempts as i32)
            .bind(job.dedup_key.as_deref())
            .bind(now)
            .bind(run_at)
            .execute(&self.pool)
            .await
            .map_err(db_error);
            match inserted {
                Ok(_) => {
                    self.work_added.notify_one();
                    return Ok(Enqueued::Added(job.job_id));
                }
                Err(err) if err.kind() == ErrorKind::Conflict => {
                    if let Some(key) = &job.dedup_key
                        && let Some(existing) = self.job_with_key(job.queue, key).await?
                    {
                        return Ok(Enqueued::Duplicate(existing));
                    }
                    if self.contains(job.job_id).await? {
                        return Ok(Enqueued::Duplicate(job.job_id));
                    }
                    // The twin finished between the insert and the lookup: try once more.
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::conflict(
            "a job with this dedup key keeps appearing and finishing; try again",
        ))
    }

    async fn reserve(
        &self,
        queue: Queue,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Delivery>> {
        let now = self.now_ms();
        self.reclaim_expired(queue, now).await?;
        let row = sqlx::query(DB::RESERVE)
            .bind(queue.as_str())
            .bind(now)
            .bind(lease_token())
            .bind(now + lease.as_millis() as i64)
            .bind(worker)
            .fetch_all(&self.pool)
            .await
            .map(first_row)
            .map_err(db_error)?;
        row.map(|row| Self::delivery_from_row(&row, queue))
            .transpose()
    }

    async fn renew(&self, lease: &LeaseRef, duration: Duration) -> Result<LeaseStatus> {
        let expires = self.now_ms() + duration.as_millis() as i64;
        let cancel_requested: Option<bool> = sqlx::query_scalar(
            "UPDATE queue_entries SET lease_expires_at = $3 \
             WHERE job_id = $1 AND status = 'leased' AND lease_token = $2 \
             RETURNING cancel_requested",
        )
        .bind(lease.job_id.as_uuid())
        .bind(&lease.token)
        .bind(expires)
        .fetch_all(&self.pool)
        .await
        .map(first_row)
        .map_err(db_error)?;
        Ok(match cancel_requested {
            None => LeaseStatus::Lost,
            Some(true) => LeaseStatus::CancelRequested,
            Some(false) => LeaseStatus::Held,
        })
    }

    async fn complete(&self, lease: &LeaseRef) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM queue_entries WHERE job_id = $1 AND status = 'leased' \
             AND lease_token = $2",
        )
        .bind(lease.job_id.as_uuid())
        .bind(&lease.token)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn fail(&self, lease: &LeaseRef, failure: Failure) -> Result<FailOutcome> {
        let now = self.now_ms();
        let retry_at = now + failure.retry_after.as_millis() as i64;
        // One statement decides retry or death from the row's own attempt count, so a
        // concurrent reclaim cannot slip in between.
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE queue_entries SET \
             status = CASE WHEN $3 AND attempt < max_attempts AND NOT cancel_requested \
                 THEN 'waiting' ELSE 'dead' END, \
             run_at = CASE WHEN $3 AND attempt < max_attempts AND NOT cancel_requested \
                 THEN $4 ELSE run_at END, \
             died_at = CASE WHEN $3 AND attempt < max_attempts AND NOT cancel_requested \
                 THEN NULL ELSE $5 END, \
             dedup_key = CASE WHEN $3 AND attempt < max_attempts AND NOT cancel_requested \
                 THEN dedup_key ELSE NULL END, \
             error_code = $6, error_message = $7, \
             lease_token = NULL, lease_expires_at = NULL, worker_id = NULL \
             WHERE job_id = $1 AND status = 'leased' AND lease_token = $2 RETURNING status",
        )
        .bind(lease.job_id.as_uuid())
        .bind(&lease.token)
        .bind(failure.retryable)
        .bind(retry_at)
        .bind(now)
        .bind(&failure.code)
        .bind(&failure.message)
        .fetch_all(&self.pool)
        .await
        .map(first_row)
        .map_err(db_error)?;
        Ok(match status.as_deref() {
            None => FailOutcome::LeaseLost,
            Some("waiting") => {
                self.work_added.notify_one();
                FailOutcome::Retrying {
                    at: from_ms(retry_at),
                }
            }
            Some(_) => FailOutcome::DeadLettered,
        })
    }

    async fn release(&self, lease: &LeaseRef) -> Result<ReleaseOutcome> {
        // One transaction: a cancellation arriving between reading the flag and acting on it
        // must not leave a released job that is flagged as cancelled.
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let cancel_requested: Option<bool> = sqlx::query_scalar(DB::LOCK_LEASE)
            .bind(lease.job_id.as_uuid())
            .bind(&lease.token)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let outcome = match cancel_requested {
            None => ReleaseOutcome::LeaseLost,
            Some(true) => {
                sqlx::query("DELETE FROM queue_entries WHERE job_id = $1")
                    .bind(lease.job_id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                ReleaseOutcome::Dropped
            }
            Some(false) => {
                // Back to the front: it becomes due as of when it was first enqueued.
                sqlx::query(
                    "UPDATE queue_entries SET status = 'waiting', attempt = attempt - 1, \
                     run_at = enqueued_at, lease_token = NULL, lease_expires_at = NULL, \
                     worker_id = NULL \
                     WHERE job_id = $1",
                )
                .bind(lease.job_id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                ReleaseOutcome::Released
            }
        };
        tx.commit().await.map_err(db_error)?;
        if outcome == ReleaseOutcome::Released {
            self.work_added.notify_one();
        }
        Ok(outcome)
    }

    async fn reclaim_worker(&self, worker: &str) -> Result<Vec<JobId>> {
        self.take_back(Gone::Worker(worker), self.now_ms()).await
    }

    async fn cancel(&self, job: JobId) -> Result<CancelOutcome> {
        let removed = sqlx::query(
            "DELETE FROM queue_entries WHERE job_id = $1 AND status IN ('waiting', 'dead')",
        )
        .bind(job.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if DB::rows_affected(&removed) == 1 {
            return Ok(CancelOutcome::Removed);
        }
        let requested = sqlx::query(
            "UPDATE queue_entries SET cancel_requested = TRUE WHERE job_id = $1 \
             AND status = 'leased'",
        )
        .bind(job.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(if DB::rows_affected(&requested) == 1 {
            CancelOutcome::Requested
        } else {
            CancelOutcome::NotFound
        })
    }

    async fn contains(&self, job: JobId) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM queue_entries WHERE job_id = $1")
            .bind(job.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }

    async fn stats(&self, queue: Queue) -> Result<QueueStats> {
        let now = self.now_ms();
        let row = sqlx::query(
            "SELECT \
             COALESCE(SUM(CASE WHEN status = 'waiting' AND run_at <= $2 THEN 1 ELSE 0 END), 0) \
                 AS ready, \
             COALESCE(SUM(CASE WHEN status = 'waiting' AND run_at > $2 THEN 1 ELSE 0 END), 0) \
                 AS delayed, \
             COALESCE(SUM(CASE WHEN status = 'leased' THEN 1 ELSE 0 END), 0) AS running, \
             COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead, \
             MIN(CASE WHEN status = 'waiting' AND run_at <= $2 THEN run_at END) AS oldest \
             FROM queue_entries WHERE queue = $1",
        )
        .bind(queue.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let count = |name: &str| -> Result<u64> {
            Ok(row.try_get::<i64, _>(name).map_err(db_error)?.max(0) as u64)
        };
        let oldest: Option<i64> = row.try_get("oldest").map_err(db_error)?;
        Ok(QueueStats {
            ready: count("ready")?,
            delayed: count("delayed")?,
            running: count("running")?,
            dead: count("dead")?,
            oldest_ready_ms: oldest.map(|at| (now - at).max(0) as u64),
        })
    }

    async fn dead_letters(&self, queue: Queue, limit: u32) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT job_id, queue, kind, payload, attempt, error_code, error_message, died_at \
             FROM queue_entries \
             WHERE queue = $1 AND status = 'dead' ORDER BY died_at, job_id LIMIT $2",
        )
        .bind(queue.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(Self::dead_letter_from_row).collect()
    }

    async fn find_dead(&self, job: JobId) -> Result<Option<DeadLetter>> {
        sqlx::query(
            "SELECT job_id, queue, kind, payload, attempt, error_code, error_message, died_at \
             FROM queue_entries \
             WHERE job_id = $1 AND status = 'dead'",
        )
        .bind(job.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(Self::dead_letter_from_row)
        .transpose()
    }

    async fn retry_dead(&self, job: JobId) -> Result<bool> {
        let revived = sqlx::query(
            "UPDATE queue_entries SET status = 'waiting', attempt = 0, run_at = $2, \
             died_at = NULL, error_code = NULL, error_message = NULL, cancel_requested = FALSE \
             WHERE job_id = $1 AND status = 'dead'",
        )
        .bind(job.as_uuid())
        .bind(self.now_ms())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if DB::rows_affected(&revived) == 1 {
            self.work_added.notify_one();
        }
        Ok(DB::rows_affected(&revived) == 1)
    }

    async fn purge_dead(&self, queue: Queue, job: Option<JobId>) -> Result<u64> {
        let purged = sqlx::query(
            "DELETE FROM queue_entries \
             WHERE queue = $1 AND status = 'dead' AND ($2 IS NULL OR job_id = $2)",
        )
        .bind(queue.as_str())
        .bind(job.map(|id| id.as_uuid()))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(DB::rows_affected(&purged))
    }

    async fn wait_for_work(&self, _queues: &[Queue], timeout: Duration) -> Result<()> {
        let _ = tokio::time::timeout(timeout, self.work_added.notified()).await;
        Ok(())
    }
}

#[async_trait]
impl<DB> WorkerRegistry for SqlBackend<DB>
where
    DB: QueueBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Type<DB> + Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> Json<&'a WorkerStatus>: Type<DB> + Encode<'a, DB>,
    Json<WorkerStatus>: ColumnType<DB>,
    String: ColumnType<DB>,
    i64: ColumnType<DB>,
{
    async fn heartbeat(&self, status: &WorkerStatus) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, status, heartbeat_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&status.id)
        .bind(Json(status))
        .bind(to_ms(status.heartbeat_at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn deregister(&self, worker_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(worker_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<WorkerStatus>> {
        let cutoff = self.now_ms() - WORKER_RETENTION.as_millis() as i64;
        sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let rows: Vec<Json<WorkerStatus>> =
            sqlx::query_scalar("SELECT status FROM workers ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(rows.into_iter().map(|j| j.0).collect())
    }
}

#[async_trait]
impl<DB> Locks for SqlBackend<DB>
where
    DB: QueueBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Type<DB> + Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: ColumnType<DB>,
    i64: ColumnType<DB>,
{
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let now = self.now_ms();
        let taken = sqlx::query(
            "INSERT INTO locks (name, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at \
             WHERE locks.owner = excluded.owner OR locks.expires_at <= $4",
        )
        .bind(name)
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(DB::rows_affected(&taken) == 1)
    }

    async fn release(&self, name: &str, owner: &str) -> Result<bool> {
        let released = sqlx::query("DELETE FROM locks WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(DB::rows_affected(&released) == 1)
    }

    async fn holder(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT owner FROM locks WHERE name = $1 AND expires_at > $2")
            .bind(name)
            .bind(self.now_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use hivesync_core::ports::Queue;

    #[test]
    fn a_workers_take_back_looks_in_every_queue() {
        for queue in Queue::ALL {
            assert!(
                worker_scope!().contains(&format!("'{queue}'")),
                "{queue} is missing"
            );
        }
    }
}
