//! The admin API (`/admin/*`): workers, queues, jobs, dead letters, the autoscaler. Admins only
//! (`hivesync admin grant <email>`); everyone else gets 403.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hivesync_core::domain::{Job, JobFilter, JobId, JobState, Page};
use hivesync_core::ports::{Queue, WorkerRole};
use hivesync_core::{Error, ErrorKind};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use super::error::ApiError;
use super::security::{BearerAuth, Caller};
use super::views::NoContent;
use crate::state::AppState;

#[derive(Tags)]
enum AdminTags {
    /// Operators only.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum WorkerStateView {
    /// Heard from within 120 s.
    Responsive,
    /// Silent for more than 120 s.
    Unresponsive,
    /// Shutting down: no new jobs.
    Draining,
}

#[derive(Debug, Clone, Object)]
pub struct WorkerView {
    pub id: String,
    /// `cpu`, `gpu` or `cleanup`.
    pub role: String,
    pub state: WorkerStateView,
    pub queues: Vec<String>,
    pub hostname: String,
    pub pid: u32,
    pub version: String,
    pub concurrency: u32,
    pub active_jobs: Vec<Uuid>,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub seconds_since_heartbeat: i64,
}

#[derive(Debug, Clone, Object)]
pub struct WorkerList {
    pub items: Vec<WorkerView>,
}

#[derive(Debug, Clone, Object)]
pub struct StateCount {
    pub state: String,
    pub count: u64,
}

#[derive(Debug, Clone, Object)]
pub struct QueueView {
    pub queue: String,
    /// Due and waiting for a worker.
    pub ready: u64,
    /// Waiting for their time (delays, retries).
    pub delayed: u64,
    pub running: u64,
    pub dead: u64,
    /// How long the oldest ready job has waited.
    pub oldest_ready_ms: Option<u64>,
    /// Job records of this queue per state.
    pub records: Vec<StateCount>,
}

#[derive(Debug, Clone, Object)]
pub struct QueueList {
    pub items: Vec<QueueView>,
}

/// A job record.
#[derive(Debug, Clone, Object)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub project_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub state: String,
    pub progress: f64,
    pub phase: Option<String>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        JobView {
            id: job.id.as_uuid(),
            kind: job.kind,
            queue: job.queue,
            project_id: job.project_id.map(|id| id.as_uuid()),
            user_id: job.user_id.map(|id| id.as_uuid()),
            state: job.state.to_string(),
            progress: job.progress,
            phase: job.phase,
            attempts: job.attempts,
            error_code: job.error_code,
            error_message: job.error_message,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct JobList {
    pub items: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<Uuid>,
}

#[derive(Debug, Clone, Object)]
pub struct DeadLetterView {
    pub job_id: Uuid,
    pub queue: String,
    pub kind: String,
    pub attempts: u32,
    pub error_code: String,
    pub error_message: String,
    pub died_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterView>,
}

#[derive(Debug, Clone, Object)]
pub struct RoleTarget {
    pub role: String,
    pub workers: u32,
}

#[derive(Debug, Clone, Object)]
pub struct DecisionView {
    pub role: String,
    pub target: u32,
    /// `depth_above_threshold`, `drain_too_slow`, `depth_below_threshold`, `steady`, `bounded`.
    pub reason: String,
}

#[derive(Debug, Clone, Object)]
pub struct AutoscalerStatus {
    /// `AUTOSCALER_ENABLED`.
    pub enabled: bool,
    /// Whether this server runs the autoscaler now (one does, under a lock).
    pub active: bool,
    /// `none`, `command` or `local`.
    pub scaler: String,
    pub min_workers: u32,
    pub max_workers: u32,
    pub scale_out_threshold: u64,
    pub scale_in_threshold: u64,
    pub poll_interval_seconds: u64,
    pub drain_target_seconds: Option<u64>,
    pub targets: Vec<RoleTarget>,
    /// The latest decisions, newest last.
    pub decisions: Vec<DecisionView>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct AdminApi {
    pub state: Arc<AppState>,
}

impl AdminApi {
    async fn require_admin(&self, caller: Caller) -> Result<(), ApiError> {
        let user = self
            .state
            .store
            .get_user(caller.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
        if user.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs an admin account"))
        }
    }
}

impl AdminApi {
    /// A job the queue dead-lettered on its own (its worker died on the last attempt) may still
    /// have an unfinished record until the reconciler passes: finish it now, from the letter.
    async fn settle_dead_record(&self, id: JobId) -> Result<(), ApiError> {
        let Some(job) = self.state.store.get_job(id).await? else {
            return Err(ApiError::not_found("no such dead letter"));
        };
        if job.state.is_terminal() {
            return Ok(());
        }
        match self.state.queue.find_dead(id).await? {
            Some(dead) => {
                let failed =
                    hivesync_core::domain::JobUpdate::failed(dead.error_code, dead.error_message);
                match self.state.store.update_job(id, failed).await {
                    Ok(_) => Ok(()),
                    Err(err) if err.kind() == ErrorKind::Conflict => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
            None => Err(Error::conflict("the job is not a dead letter")
                .with_context("job_id", id)
                .into()),
        }
    }
}

fn parse_queue(raw: Option<&str>) -> Result<Option<Queue>, ApiError> {
    raw.map(|q| {
        q.parse::<Queue>()
            .map_err(|e| ApiError::from(e.with_context("field", "queue")))
    })
    .transpose()
}

fn parse_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(50);
    if limit == 0 || limit > Page::<JobId>::MAX_LIMIT {
        return Err(Error::validation("limit must be between 1 and 200")
            .with_context("field", "limit")
            .into());
    }
    Ok(limit)
}

#[OpenApi(prefix_path = "/admin", tag = "AdminTags::Admin")]
impl AdminApi {
    /// Workers and their heartbeats
    #[oai(path = "/workers", method = "get", operation_id = "adminWorkers")]
    async fn workers(&self, auth: BearerAuth) -> Result<Json<WorkerList>, ApiError> {
        self.require_admin(auth.0).await?;
        let now = self.state.clock.now();
        let items = self
            .state
            .registry
            .list()
            .await?
            .into_iter()
            .map(|w| WorkerView {
                state: if !w.is_responsive(now) {
                    WorkerStateView::Unresponsive
                } else if w.draining {
                    WorkerStateView::Draining
                } else {
                    WorkerStateView::Responsive
                },
                seconds_since_heartbeat: now.signed_duration_since(w.heartbeat_at).num_seconds(),
                role: w.role.to_string(),
                queues: w.queues.iter().map(|q| q.to_string()).collect(),
                active_jobs: w.active_jobs.iter().map(|id| id.as_uuid()).collect(),
                id: w.id,
                hostname: w.hostname,
                pid: w.pid,
                version: w.version,
                concurrency: w.concurrency,
                started_at: w.started_at,
                heartbeat_at: w.heartbeat_at,
            })
            .collect();
        Ok(Json(WorkerList { items }))
    }

    /// Queues: depth, running, dead letters, and job records by state
    #[oai(path = "/queues", method = "get", operation_id = "adminQueues")]
    async fn queues(&self, auth: BearerAuth) -> Result<Json<QueueList>, ApiError> {
        self.require_admin(auth.0).await?;
        let counts = self.state.store.count_jobs().await?;
        let mut items = Vec::new();
        for queue in Queue::ALL {
            let stats = self.state.queue.stats(queue).await?;
            items.push(QueueView {
                queue: queue.to_string(),
                ready: stats.ready,
                delayed: stats.delayed,
                running: stats.running,
                dead: stats.dead,
                oldest_ready_ms: stats.oldest_ready_ms,
                records: counts
                    .iter()
                    .filter(|c| c.queue == queue.as_str())
                    .map(|c| StateCount {
                        state: c.state.to_string(),
                        count: c.count,
                    })
                    .collect(),
            });
        }
        Ok(Json(QueueList { items }))
    }

    /// Job records, newest first
    ///
    /// Filter by `queue`, `state` and `worker_type` (the queues a worker role consumes).
    #[oai(path = "/jobs", method = "get", operation_id = "adminJobs")]
    async fn jobs(
        &self,
        auth: BearerAuth,
        queue: Query<Option<String>>,
        state: Query<Option<String>>,
        worker_type: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
        after: Query<Option<Uuid>>,
    ) -> Result<Json<JobList>, ApiError> {
        self.require_admin(auth.0).await?;
        let limit = parse_limit(limit.0)?;
        let queue = parse_queue(queue.0.as_deref())?;
        let state = state
            .0
            .as_deref()
            .map(|s| {
                s.parse::<JobState>()
                    .map_err(|e| ApiError::from(e.with_context("field", "state")))
            })
            .transpose()?;
        let role = worker_type
            .0
            .as_deref()
            .map(|r| {
                r.parse::<WorkerRole>()
                    .map_err(|e| ApiError::from(e.with_context("field", "worker_type")))
            })
            .transpose()?;
        // One query per queue that matches both filters; the pages merge by id, newest first.
        let queues: Vec<Option<Queue>> = match (queue, role) {
            (q, None) => vec![q],
            (None, Some(role)) => role.default_queues().into_iter().map(Some).collect(),
            (Some(q), Some(role)) if role.default_queues().contains(&q) => vec![Some(q)],
            (Some(_), Some(_)) => Vec::new(),
        };
        let page = Page::after(limit, after.0.map(JobId::from_uuid));
        let mut jobs = Vec::new();
        for queue in queues {
            let filter = JobFilter {
                queue: queue.map(|q| q.to_string()),
                state,
                ..JobFilter::default()
            };
            jobs.extend(self.state.store.list_jobs(&filter, page).await?);
        }
        jobs.sort_by_key(|job| std::cmp::Reverse(job.id));
        jobs.truncate(limit as usize);
        let next_after = (jobs.len() == limit as usize)
            .then(|| jobs.last().map(|j| j.id.as_uuid()))
            .flatten();
        Ok(Json(JobList {
            items: jobs.into_iter().map(JobView::from).collect(),
            next_after,
        }))
    }

    /// Dead letters: jobs out of attempts
    #[oai(
        path = "/dead-letters",
        method = "get",
        operation_id = "adminDeadLetters"
    )]
    async fn dead_letters(
        &self,
        auth: BearerAuth,
        queue: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> Result<Json<DeadLetterList>, ApiError> {
        self.require_admin(auth.0).await?;
        let limit = parse_limit(limit.0)?;
        let queues = match parse_queue(queue.0.as_deref())? {
            Some(q) => vec![q],
            None => Queue::ALL.to_vec(),
        };
        let mut items = Vec::new();
        for queue in queues {
            for d in self.state.queue.dead_letters(queue, limit).await? {
                items.push(DeadLetterView {
                    job_id: d.job_id.as_uuid(),
                    queue: d.queue.to_string(),
                    kind: d.kind,
                    attempts: d.attempts,
                    error_code: d.error_code,
                    error_message: d.error_message,
                    died_at: d.died_at,
                });
            }
        }
        items.sort_by_key(|d| d.died_at);
        items.truncate(limit as usize);
        Ok(Json(DeadLetterList { items }))
    }

    /// Retry a dead letter
    ///
    /// Its record goes back to `queued` and the job runs again with fresh attempts.
    #[oai(
        path = "/dead-letters/:job_id/retry",
        method = "post",
        operation_id = "adminRetryDeadLetter"
    )]
    async fn retry_dead_letter(
        &self,
        auth: BearerAuth,
        job_id: Path<Uuid>,
    ) -> Result<Json<JobView>, ApiError> {
        self.require_admin(auth.0).await?;
        let id = JobId::from_uuid(job_id.0);
        self.settle_dead_record(id).await?;
        let job = self.state.store.reset_job(id).await?;
        // The Store first: a worker that gets the job must find a record it may run.
        if !self.state.queue.retry_dead(id).await? && !self.state.queue.contains(id).await? {
            // The queue had lost it: enqueue it afresh from its record.
            let queue = job
                .queue
                .parse::<Queue>()
                .map_err(|_| Error::new(ErrorKind::Internal, "the job names an unknown queue"))?;
            hivesync_queue::jobs::enqueue_record(&*self.state.queue, &job, queue).await?;
        }
        tracing::info!(job_id = %id, "dead letter retried");
        Ok(Json(job.into()))
    }

    /// Delete a dead letter
    #[oai(
        path = "/dead-letters/:job_id",
        method = "delete",
        operation_id = "adminPurgeDeadLetter"
    )]
    async fn purge_dead_letter(
        &self,
        auth: BearerAuth,
        job_id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        self.require_admin(auth.0).await?;
        let id = JobId::from_uuid(job_id.0);
        let job = self
            .state
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such dead letter"))?;
        let queue = job
            .queue
            .parse::<Queue>()
            .map_err(|_| ApiError::not_found("no such dead letter"))?;
        // The record must say finished before the letter goes, or the reconciler would bring
        // the job back.
        self.settle_dead_record(id).await?;
        if self.state.queue.purge_dead(queue, Some(id)).await? == 0 {
            return Err(ApiError::not_found("no such dead letter"));
        }
        Ok(NoContent::Done)
    }

    /// The autoscaler: settings, targets and recent decisions
    #[oai(path = "/autoscaler", method = "get", operation_id = "adminAutoscaler")]
    async fn autoscaler(&self, auth: BearerAuth) -> Result<Json<AutoscalerStatus>, ApiError> {
        self.require_admin(auth.0).await?;
        let config = &self.state.config.autoscaler;
        let view = self.state.autoscaler.read().await.clone();
        Ok(Json(AutoscalerStatus {
            enabled: config.enabled,
            active: view.active,
            scaler: match config.scaler {
                hivesync_core::config::ScalerKind::None => "none",
                hivesync_core::config::ScalerKind::Command => "command",
                hivesync_core::config::ScalerKind::LocalProcesses => "local",
            }
            .to_owned(),
            min_workers: config.min_workers,
            max_workers: config.max_workers,
            scale_out_threshold: config.scale_out_threshold,
            scale_in_threshold: config.scale_in_threshold,
            poll_interval_seconds: config.poll_interval.as_secs(),
            drain_target_seconds: config.drain_target.map(|d| d.as_secs()),
            targets: view
                .targets
                .into_iter()
                .map(|(role, workers)| RoleTarget { role, workers })
                .collect(),
            decisions: view
                .decisions
                .into_iter()
                .map(|(role, d)| DecisionView {
                    role,
                    target: d.target,
                    reason: serde_json::to_value(d.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                })
                .collect(),
            last_error: view.last_error,
        }))
    }
}
