//! The Redis backend: `JobQueue`, `WorkerRegistry`, `Locks` and `RateLimiter` on one Redis.
//!
//! Every step that reads and then writes is one Lua script (`lua/*.lua`), so it is atomic on the
//! server. Times come from the backend's `Clock` (passed to the scripts), not from Redis, which
//! makes schedules testable and identical to the SQL backend's; the clocks of a cluster's
//! machines need only agree to well within a lease (NTP does).
//!
//! Keys, under an optional prefix (`REDIS_KEY_PREFIX`, empty by default):
//!
//! | key | type | what |
//! |---|---|---|
//! | `job:{id}` | hash | a queued job: queue, kind, payload, state, attempts, lease, errors |
//! | `queue:{q}:ready` | list | due jobs; pushed at the head, taken from the tail |
//! | `queue:{q}:delayed` | sorted set | delayed jobs and retries, by due time |
//! | `queue:{q}:leased` | sorted set | running jobs, by lease expiry |
//! | `queue:{q}:dead` | sorted set | dead letters, by time of death |
//! | `queue:{q}:dedup:{key}` | string | the job holding a dedup key |
//! | `queue:{q}:notify` | list | wake-up tokens for waiting workers (`BRPOP`) |
//! | `worker:{id}:heartbeat`, `worker:{id}:type`, `worker:{id}:info` | strings | heartbeats (spec §10.4): Unix ms, role, status JSON |
//! | `workers` | set | ids of workers that sent heartbeats |
//! | `lock:{name}` | hash | lock owner and expiry |
//! | `ratelimit:{key}` | string | GCRA state |
//!
//! Scripts build key names from the prefix, so this backend needs a single Redis (or a cluster
//! where all these keys share one slot).

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hivesync_core::clock::SharedClock;
use hivesync_core::domain::JobId;
use hivesync_core::ports::{
    CancelOutcome, DeadLetter, Delivery, Enqueued, FailOutcome, Failure, JobQueue, LeaseRef,
    LeaseStatus, Locks, NewQueuedJob, Queue, QueueStats, Quota, RateDecision, RateLimiter,
    ReleaseOutcome, WorkerRegistry, WorkerStatus,
};
use hivesync_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, Script};

use crate::sql::{from_ms, lease_token, to_ms};

/// The longest single `BRPOP` in `wait_for_work`.
const MAX_BLOCKING_WAIT: Duration = Duration::from_secs(30);
/// Workers silent for this long are dropped from the registry.
const WORKER_RETENTION: Duration = Duration::from_secs(24 * 3600);

struct Scripts {
    enqueue: Script,
    reserve: Script,
    renew: Script,
    complete: Script,
    complete_reserve: Script,
    fail: Script,
    release: Script,
    reclaim_worker: Script,
    cancel: Script,
    retry_dead: Script,
    purge_dead: Script,
    stats: Script,
    dead_letters: Script,
    lock_acquire: Script,
    lock_release: Script,
    rate_limit: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("../lua/enqueue.lua")),
    reserve: Script::new(concat!(
        include_str!("../lua/lib/reclaim.lua"),
        include_str!("../lua/lib/reserve.lua"),
        include_str!("../lua/reserve.lua")
    )),
    renew: Script::new(include_str!("../lua/renew.lua")),
    complete: Script::new(concat!(
        include_str!("../lua/lib/complete.lua"),
        include_str!("../lua/complete.lua")
    )),
    complete_reserve: Script::new(concat!(
        include_str!("../lua/lib/complete.lua"),
        include_str!("../lua/lib/reclaim.lua"),
        include_str!("../lua/lib/reserve.lua"),
        include_str!("../lua/complete_reserve.lua"),
    )),
    fail: Script::new(include_str!("../lua/fail.lua")),
    release: Script::new(include_str!("../lua/release.lua")),
    reclaim_worker: Script::new(concat!(
        include_str!("../lua/lib/reclaim.lua"),
        include_str!("../lua/reclaim_worker.lua")
    )),
    cancel: Script::new(include_str!("../lua/cancel.lua")),
    retry_dead: Script::new(include_str!("../lua/retry_dead.lua")),
    purge_dead: Script::new(include_str!("../lua/purge_dead.lua")),
    stats: Script::new(include_str!("../lua/stats.lua")),
    dead_letters: Script::new(include_str!("../lua/dead_letters.lua")),
    lock_acquire: Script::new(include_str!("../lua/lock_acquire.lua")),
    lock_release: Script::new(include_str!("../lua/lock_release.lua")),
    rate_limit: Script::new(include_str!("../lua/rate_limit.lua")),
});

/// The job queue, worker registry, locks and rate limiter on one Redis.
#[derive(Clone)]
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    clock: SharedClock,
    /// Connections for blocking `BRPOP`s, which would stall every other command sharing a
    /// multiplexed connection; kept for reuse between waits.
    blocking: std::sync::Arc<Mutex<Vec<MultiplexedConnection>>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A delivery from the fields the reserve script returns.
fn delivery(
    queue: Queue,
    token: String,
    expiry: i64,
    (id, kind, payload, attempt, max_attempts, enqueued_at): (
        String,
        String,
        String,
        i64,
        i64,
        i64,
    ),
) -> Result<Delivery> {
    Ok(Delivery {
        lease: LeaseRef {
            job_id: id.parse()?,
            queue,
            token,
        },
        kind,
        payload: serde_json::from_str(&payload)
            .map_err(|e| Error::internal("a queued payload is not JSON").with_source(e))?,
        attempt: attempt.max(0) as u32,
        max_attempts: max_attempts.max(0) as u32,
        enqueued_at: from_ms(enqueued_at),
        lease_expires_at: from_ms(expiry),
    })
}

fn redis_error(err: redis::RedisError) -> Error {
    let transient = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal();
    let kind = if transient {
        hivesync_core::ErrorKind::Unavailable
    } else {
        hivesync_core::ErrorKind::Internal
    };
    Error::new(kind, "redis error").with_source(err)
}

impl RedisBackend {
    /// Connects to `url` (`redis://` or `rediss://`). Keys are prefixed with `prefix`.
    pub async fn connect(url: &str, prefix: &str, clock: SharedClock) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::new(hivesync_core::ErrorKind::Config, "invalid REDIS_URL")
                .with_context("variable", "REDIS_URL")
                .with_source(e)
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| Error::unavailable("cannot connect to Redis").with_source(e))?;
        Ok(RedisBackend {
            client,
            conn,
            prefix: prefix.to_owned(),
            clock,
            blocking: Default::default(),
        })
    }

    fn now_ms(&self) -> i64 {
        to_ms(self.clock.now())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)
    }

    /// Deletes every key under this backend's prefix. For tests that need an empty namespace;
    /// refuses an empty prefix, which would mean the whole database.
    pub async fn clear_namespace(&self) -> Result<u64> {
        if self.prefix.is_empty() {
            return Err(Error::validation(
                "refusing to clear the unprefixed Redis namespace",
            ));
        }
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if !keys.is_empty() {
                deleted += conn.del::<_, u64>(&keys).await.map_err(redis_error)?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn blocking_connection(&self) -> Result<MultiplexedConnection> {
        let reused = self
            .blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match reused {
            Some(conn) => Ok(conn),
            None => {
                // The response timeout must outlast the longest BRPOP, or every quiet wait would
                // end in a timeout error.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(MAX_BLOCKING_WAIT + Duration::from_secs(10)));
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| Error::unavailable("cannot connect to Redis").with_source(e))
            }
        }
    }
}

#[async_trait]
impl JobQueue for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn enqueue(&self, job: NewQueuedJob) -> Result<Enqueued> {
        let now = self.now_ms();
        let run_at = now + job.delay.map_or(0, |d| d.as_millis() as i64);
        let max_attempts = job
            .max_attempts
            .unwrap_or(job.queue.policy().max_attempts)
            .max(1);
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| Error::internal("cannot encode a job payload").with_source(e))?;
        let (outcome, id): (String, String) = self
            .run(
                SCRIPTS
                    .enqueue
                    .arg(&self.prefix)
                    .arg(job.job_id.to_string())
                    .arg(job.queue.as_str())
                    .arg(&job.kind)
                    .arg(payload)
                    .arg(max_attempts)
                    .arg(now)
                    .arg(run_at)
                    .arg(job.dedup_key.as_deref().unwrap_or_default()),
            )
            .await?;
        let id: JobId = id.parse()?;
        Ok(if outcome == "added" {
            Enqueued::Added(id)
        } else {
            Enqueued::Duplicate(id)
        })
    }

    async fn reserve(
        &self,
        queue: Queue,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Delivery>> {
        let now = self.now_ms();
        let expiry = now + lease.as_millis() as i64;
        let token = lease_token();
        let reserved: Option<(String, String, String, i64, i64, i64)> = self
            .run(
                SCRIPTS
                    .reserve
                    .arg(&self.prefix)
                    .arg(queue.as_str())
                    .arg(now)
                    .arg(expiry)
                    .arg(&token)
                    .arg(worker),
            )
            .await?;
        reserved
            .map(|fields| delivery(queue, token, expiry, fields))
            .transpose()
    }

    async fn complete_and_reserve(
        &self,
        lease: &LeaseRef,
        next: Queue,
        worker: &str,
        lease_for: Duration,
    ) -> Result<(bool, Option<Delivery>)> {
        let now = self.now_ms();
        let expiry = now + lease_for.as_millis() as i64;
        let token = lease_token();
        let answer: Vec<redis::Value> = self
            .run(
                SCRIPTS
                    .complete_reserve
                    .arg(&self.prefix)
                    .arg(lease.job_id.to_string())
                    .arg(&lease.token)
                    .arg(next.as_str())
                    .arg(now)
                    .arg(expiry)
                    .arg(&token)
                    .arg(worker),
            )
            .await?;
        let decode = |value: &redis::Value| -> Result<i64> {
            redis::from_redis_value_ref(value)
                .map_err(|e| Error::internal("unexpected script answer").with_source(e))
        };
        let text = |value: &redis::Value| -> Result<String> {
            redis::from_redis_value_ref(value)
                .map_err(|e| Error::internal("unexpected script answer").with_source(e))
        };
        let done = answer.first().map(decode).transpose()?.unwrap_or(0) == 1;
        if answer.len() < 7 {
            return Ok((done, None));
        }
        let fields = (
            text(&answer[1])?,
            text(&answer[2])?,
            text(&answer[3])?,
            decode(&answer[4])?,
            decode(&answer[5])?,
            decode(&answer[6])?,
        );
        Ok((done, Some(delivery(next, token, expiry, fields)?)))
    }

    async fn renew(&self, lease: &LeaseRef, duration: Duration) -> Result<LeaseStatus> {
        let expiry = self.now_ms() + duration.as_millis() as i64;
        let status: i64 = self
            .run(
                SCRIPTS
                    .renew
                    .arg(&self.prefix)
                    .arg(lease.job_id.to_string())
                    .arg(&lease.token)
                    .arg(expiry),
            )
            .await?;
        Ok(match status {
            1 => LeaseStatus::Held,
            2 => LeaseStatus::CancelRequested,
            _ => LeaseStatus::Lost,
        })
    }

    async fn complete(&self, lease: &LeaseRef) -> Result<bool> {
        let done: i64 = self
            .run(
                SCRIPTS
                    .complete
                    .arg(&self.prefix)
                    .arg(lease.job_id.to_string())
                    .arg(&lease.token),
            )
            .await?;
        Ok(done == 1)
    }

    async fn fail(&self, lease: &LeaseRef, failure: Failure) -> Result<FailOutcome> {
        let now = self.now_ms();
        let retry_at = now + failure.retry_after.as_millis() as i64;
        let outcome: String = self
            .run(
                SCRIPTS
                    .fail
                    .arg(&self.prefix)
                    .arg(lease.job_id.to_string())
                    .arg(&lease.token)
                    .arg(if failure.retryable { "1" } else { "0" })
                    .arg(retry_at)
                    .arg(now)
                    .arg(&failure.code)
                    .arg(&failure.message),
            )
            .await?;
        Ok(match outcome.as_str() {
            "retry" => FailOutcome::Retrying {
                at: from_ms(retry_at),
            },
            "dead" => FailOutcome::DeadLettered,
            _ => FailOutcome::LeaseLost,
        })
    }

    async fn release(&self, lease: &LeaseRef) -> Result<ReleaseOutcome> {
        let released: i64 = self
            .run(
                SCRIPTS
                    .release
                    .arg(&self.prefix)
                    .arg(lease.job_id.to_string())
                    .arg(&lease.token),
            )
            .await?;
        Ok(match released {
            1 => ReleaseOutcome::Released,
            2 => ReleaseOutcome::Dropped,
            _ => ReleaseOutcome::LeaseLost,
        })
    }

    async fn reclaim_worker(&self, worker: &str) -> Result<Vec<JobId>> {
        let mut script = SCRIPTS.reclaim_worker.prepare_invoke();
        script.arg(&self.prefix).arg(worker).arg(self.now_ms());
        for queue in Queue::ALL {
            script.arg(queue.as_str());
        }
        let ids: Vec<String> = self.run(&mut script).await?;
        ids.iter().map(|id| id.parse()).collect()
    }

    async fn cancel(&self, job: JobId) -> Result<CancelOutcome> {
        let outcome: String = self
            .run(SCRIPTS.cancel.arg(&self.prefix).arg(job.to_string()))
            .await?;
        Ok(match outcome.as_str() {
            "removed" => CancelOutcome::Removed,
            "requested" => CancelOutcome::Requested,
            _ => CancelOutcome::NotFound,
        })
    }

    async fn contains(&self, job: JobId) -> Result<bool> {
        let mut conn = self.conn.clone();
        conn.exists(self.key(&format!("job:{job}")))
            .await
            .map_err(redis_error)
    }

    async fn stats(&self, queue: Queue) -> Result<QueueStats> {
        let now = self.now_ms();
        let (ready, delayed, running, dead, oldest): (i64, i64, i64, i64, i64) = self
            .run(SCRIPTS.stats.arg(&self.prefix).arg(queue.as_str()).arg(now))
            .await?;
        Ok(QueueStats {
            ready: ready.max(0) as u64,
            delayed: delayed.max(0) as u64,
            running: running.max(0) as u64,
            dead: dead.max(0) as u64,
            oldest_ready_ms: (oldest >= 0).then(|| (now - oldest).max(0) as u64),
        })
    }

    async fn dead_letters(&self, queue: Queue, limit: u32) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = self
            .run(
                SCRIPTS
                    .dead_letters
                    .arg(&self.prefix)
                    .arg(queue.as_str())
                    .arg(limit),
            )
            .await?;
        flat.chunks_exact(7)
            .map(|f| {
                Ok(DeadLetter {
                    job_id: f[0].parse()?,
                    queue,
                    kind: f[1].clone(),
                    payload: serde_json::from_str(&f[2]).unwrap_or(serde_json::Value::Null),
                    attempts: f[3].parse().unwrap_or(0),
                    error_code: f[4].clone(),
                    error_message: f[5].clone(),
                    died_at: from_ms(f[6].parse().unwrap_or(0)),
                })
            })
            .collect()
    }

    async fn find_dead(&self, job: JobId) -> Result<Option<DeadLetter>> {
        let mut conn = self.conn.clone();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key(&format!("job:{job}")))
            .arg(&[
                "state",
                "queue",
                "kind",
                "payload",
                "attempt",
                "error_code",
                "error_message",
                "died_at",
            ])
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let text = |i: usize| fields.get(i).cloned().flatten().unwrap_or_default();
        if text(0) != "dead" {
            return Ok(None);
        }
        Ok(Some(DeadLetter {
            job_id: job,
            queue: text(1).parse()?,
            kind: text(2),
            payload: serde_json::from_str(&text(3)).unwrap_or(serde_json::Value::Null),
            attempts: text(4).parse().unwrap_or(0),
            error_code: text(5),
            error_message: text(6),
            died_at: from_ms(text(7).parse().unwrap_or(0)),
        }))
    }

    async fn retry_dead(&self, job: JobId) -> Result<bool> {
        let revived: i64 = self
            .run(
                SCRIPTS
                    .retry_dead
                    .arg(&self.prefix)
                    .arg(job.to_string())
                    .arg(self.now_ms()),
            )
            .await?;
        Ok(revived == 1)
    }

    async fn purge_dead(&self, queue: Queue, job: Option<JobId>) -> Result<u64> {
        let purged: i64 = self
            .run(
                SCRIPTS
                    .purge_dead
                    .arg(&self.prefix)
                    .arg(queue.as_str())
                    .arg(job.map(|id| id.to_string()).unwrap_or_default()),
            )
            .await?;
        Ok(purged.max(0) as u64)
    }

    async fn wait_for_work(&self, queues: &[Queue], timeout: Duration) -> Result<()> {
        if queues.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let mut conn = self.blocking_connection().await?;
        let mut command = redis::cmd("BRPOP");
        for queue in queues {
            command.arg(self.key(&format!("queue:{queue}:notify")));
        }
        command.arg(timeout.min(MAX_BLOCKING_WAIT).as_secs_f64().max(0.01));
        let woke: redis::RedisResult<Option<(String, String)>> =
            command.query_async(&mut conn).await;
        match woke {
            Ok(_) => {
                self.blocking
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn);
                Ok(())
            }
            // The connection is dropped, not reused: a broken one would fail every later wait.
            Err(err) => Err(redis_error(err)),
        }
    }
}

#[async_trait]
impl WorkerRegistry for RedisBackend {
    async fn heartbeat(&self, status: &WorkerStatus) -> Result<()> {
        let info = serde_json::to_string(status)
            .map_err(|e| Error::internal("cannot encode a worker status").with_source(e))?;
        let id = &status.id;
        // The server-side expiry only collects garbage; responsiveness is judged by the clock.
        let keep = (WORKER_RETENTION.as_secs() * 2) as i64;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .set_ex(
                self.key(&format!("worker:{id}:heartbeat")),
                to_ms(status.heartbeat_at),
                keep as u64,
            )
            .set_ex(
                self.key(&format!("worker:{id}:type")),
                status.role.as_str(),
                keep as u64,
            )
            .set_ex(self.key(&format!("worker:{id}:info")), info, keep as u64)
            .sadd(self.key("workers"), id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn deregister(&self, worker_id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.key(&format!("worker:{worker_id}:heartbeat")))
            .del(self.key(&format!("worker:{worker_id}:type")))
            .del(self.key(&format!("worker:{worker_id}:info")))
            .srem(self.key("workers"), worker_id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn list(&self) -> Result<Vec<WorkerStatus>> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn
            .smembers(self.key("workers"))
            .await
            .map_err(redis_error)?;
        ids.sort();
        let cutoff: DateTime<Utc> =
            self.clock.now() - chrono::Duration::from_std(WORKER_RETENTION).unwrap_or_default();
        let mut workers = Vec::with_capacity(ids.len());
        for id in ids {
            let info: Option<String> = conn
                .get(self.key(&format!("worker:{id}:info")))
                .await
                .map_err(redis_error)?;
            let status = info.and_then(|info| serde_json::from_str::<WorkerStatus>(&info).ok());
            match status {
                Some(status) if status.heartbeat_at >= cutoff => workers.push(status),
                _ => self.deregister(&id).await?,
            }
        }
        Ok(workers)
    }
}

#[async_trait]
impl Locks for RedisBackend {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let taken: i64 = self
            .run(
                SCRIPTS
                    .lock_acquire
                    .arg(&self.prefix)
                    .arg(name)
                    .arg(owner)
                    .arg(self.now_ms())
                    .arg(ttl.as_millis() as i64),
            )
            .await?;
        Ok(taken == 1)
    }

    async fn release(&self, name: &str, owner: &str) -> Result<bool> {
        let released: i64 = self
            .run(SCRIPTS.lock_release.arg(&self.prefix).arg(name).arg(owner))
            .await?;
        Ok(released == 1)
    }

    async fn holder(&self, name: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let (owner, expires): (Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.key(&format!("lock:{name}")))
            .arg("owner")
            .arg("expires_at")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(owner.filter(|_| expires.is_some_and(|at| at > self.now_ms())))
    }
}

#[async_trait]
impl RateLimiter for RedisBackend {
    async fn check(&self, key: &str, quota: Quota) -> Result<RateDecision> {
        self.gcra(key, quota, true).await
    }

    async fn peek(&self, key: &str, quota: Quota) -> Result<RateDecision> {
        self.gcra(key, quota, false).await
    }
}

impl RedisBackend {
    async fn gcra(&self, key: &str, quota: Quota, consume: bool) -> Result<RateDecision> {
        let now_us = self.clock.now().timestamp_micros();
        let (allowed, remaining, retry_after_us): (i64, i64, i64) = self
            .run(
                SCRIPTS
                    .rate_limit
                    .arg(&self.prefix)
                    .arg(key)
                    .arg(now_us)
                    .arg(quota.emission_interval().as_micros() as i64)
                    .arg(quota.period.as_micros() as i64)
                    .arg(if consume { "1" } else { "0" }),
            )
            .await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u32,
            retry_after: Duration::from_micros(retry_after_us.max(0) as u64),
        })
    }
}
