//! Health: whether each component answers, shared by `GET /health` and `hivesync health`.
//!
//! Components: `database`, `object_store`, `queue` (and `redis` when configured), `workers`
//! (heartbeats) and `queues` (saturation). Each is `up`, `degraded` (works, but needs a look: an
//! unresponsive worker, a queue past its scale-out threshold) or `down`. The endpoint is public,
//! so that load balancers can probe it without credentials; it says only the status and how long
//! each check took. The command, run by operators, adds the details.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hivesync_core::ports::{ObjectKey, Queue, QueueStats, WorkerRole};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use serde::Serialize;

use crate::state::AppState;

/// A component that answers slower than this counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Tags)]
enum HealthTags {
    /// Service health.
    Operations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Enum, Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ComponentStatus {
    Up,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Object, Serialize)]
pub struct ComponentHealth {
    pub status: ComponentStatus,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
    /// What an operator should know (only in `hivesync health`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum OverallStatus {
    /// Every component is up.
    Ok,
    /// Everything answers, but something needs a look.
    Degraded,
    /// At least one component is down.
    Down,
}

#[derive(Debug, Clone, Object, Serialize)]
pub struct HealthReport {
    pub status: OverallStatus,
    pub version: String,
    pub components: BTreeMap<String, ComponentHealth>,
}

/// Per-queue counts, for `hivesync health`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueHealth {
    pub queue: Queue,
    #[serde(flatten)]
    pub stats: QueueStats,
    pub saturated: bool,
}

/// A report plus the operator's details.
#[derive(Debug, Clone, Serialize)]
pub struct DetailedHealth {
    #[serde(flatten)]
    pub report: HealthReport,
    pub queues: Vec<QueueHealth>,
    pub workers: Vec<WorkerHealth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerHealth {
    pub id: String,
    pub role: WorkerRole,
    pub responsive: bool,
    pub seconds_since_heartbeat: i64,
    pub active_jobs: usize,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// Every component works (some may be degraded).
    #[oai(status = 200)]
    Ok(Json<HealthReport>),
    /// Some component is down.
    #[oai(status = 503)]
    Down(Json<HealthReport>),
}

#[derive(Debug)]
pub struct HealthApi {
    pub state: Arc<AppState>,
}

async fn timed<F>(probe: F) -> (hivesync_core::Result<()>, f64)
where
    F: Future<Output = hivesync_core::Result<()>>,
{
    let started = Instant::now();
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Err(hivesync_core::Error::unavailable("the check timed out")),
    };
    (outcome, started.elapsed().as_secs_f64() * 1000.0)
}

fn component(name: &str, outcome: hivesync_core::Result<()>, latency_ms: f64) -> ComponentHealth {
    match outcome {
        Ok(()) => ComponentHealth {
            status: ComponentStatus::Up,
            latency_ms,
            detail: None,
        },
        Err(err) => {
            tracing::warn!(component = name, error = ?err, "health check failed");
            ComponentHealth {
                status: ComponentStatus::Down,
                latency_ms,
                detail: Some(err.to_string()),
            }
        }
    }
}

/// Checks every component.
pub async fn check(state: &AppState) -> DetailedHealth {
    let probe_key = ObjectKey::new("health/probe").expect("a valid key");
    let ((db, db_ms), (objects, objects_ms), (queue, queue_ms)) = tokio::join!(
        timed(state.store.ping()),
        timed(async { state.objects.head(&probe_key).await.map(|_| ()) }),
        timed(state.queue.ping()),
    );
    let mut components = BTreeMap::from([
        ("database".to_owned(), component("database", db, db_ms)),
        (
            "object_store".to_owned(),
            component("object_store", objects, objects_ms),
        ),
        ("queue".to_owned(), component("queue", queue, queue_ms)),
    ]);
    if let Some(redis) = &state.redis {
        let (outcome, ms) = timed(hivesync_core::ports::JobQueue::ping(redis)).await;
        components.insert("redis".to_owned(), component("redis", outcome, ms));
    }

    // Queue saturation.
    let started = Instant::now();
    let threshold = state.config.autoscaler.scale_out_threshold;
    let mut queues = Vec::new();
    let mut stats_error = None;
    for queue in Queue::ALL {
        match tokio::time::timeout(CHECK_TIMEOUT, state.queue.stats(queue)).await {
            Ok(Ok(stats)) => queues.push(QueueHealth {
                queue,
                saturated: stats.depth() > threshold,
                stats,
            }),
            Ok(Err(err)) => stats_error = Some(err.to_string()),
            Err(_) => stats_error = Some("queue statistics timed out".to_owned()),
        }
    }
    let saturated: Vec<&str> = queues
        .iter()
        .filter(|q| q.saturated)
        .map(|q| q.queue.as_str())
        .collect();
    let queues_component = match (&stats_error, saturated.is_empty()) {
        (Some(err), _) => ComponentHealth {
            status: ComponentStatus::Down,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: Some(err.clone()),
        },
        (None, true) => ComponentHealth {
            status: ComponentStatus::Up,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: None,
        },
        (None, false) => ComponentHealth {
            status: ComponentStatus::Degraded,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: Some(format!(
                "more than {threshold} jobs waiting on {}",
                saturated.join(", ")
            )),
        },
    };
    components.insert("queues".to_owned(), queues_component);

    // Worker heartbeats.
    let started = Instant::now();
    let now = state.clock.now();
    let (workers, workers_component) =
        match tokio::time::timeout(CHECK_TIMEOUT, state.registry.list()).await {
            Ok(Ok(list)) => {
                let workers: Vec<WorkerHealth> = list
                    .iter()
                    .map(|w| WorkerHealth {
                        id: w.id.clone(),
                        role: w.role,
                        responsive: w.is_responsive(now),
                        seconds_since_heartbeat: now
                            .signed_duration_since(w.heartbeat_at)
                            .num_seconds(),
                        active_jobs: w.active_jobs.len(),
                    })
                    .collect();
                let unresponsive = workers.iter().filter(|w| !w.responsive).count();
                let responsive = workers.len() - unresponsive;
                let waiting = queues.iter().any(|q| q.stats.ready > 0);
                let (status, detail) = if unresponsive > 0 {
                    (
                        ComponentStatus::Degraded,
                        Some(format!(
                            "{unresponsive} of {} workers unresponsive (silent for over 120 s)",
                            workers.len()
                        )),
                    )
                } else if responsive == 0 && waiting {
                    (
                        ComponentStatus::Degraded,
                        Some("jobs are waiting and no worker is running".to_owned()),
                    )
                } else {
                    (
                        ComponentStatus::Up,
                        Some(format!("{responsive} workers responsive")),
                    )
                };
                let component = ComponentHealth {
                    status,
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    detail,
                };
                (workers, component)
            }
            Ok(Err(err)) => (
                Vec::new(),
                component(
                    "workers",
                    Err(err),
                    started.elapsed().as_secs_f64() * 1000.0,
                ),
            ),
            Err(_) => (
                Vec::new(),
                component(
                    "workers",
                    Err(hivesync_core::Error::unavailable("the check timed out")),
                    started.elapsed().as_secs_f64() * 1000.0,
                ),
            ),
        };
    components.insert("workers".to_owned(), workers_component);

    let worst = components
        .values()
        .map(|c| c.status)
        .max()
        .unwrap_or(ComponentStatus::Up);
    let status = match worst {
        ComponentStatus::Up => OverallStatus::Ok,
        ComponentStatus::Degraded => OverallStatus::Degraded,
        ComponentStatus::Down => OverallStatus::Down,
    };
    DetailedHealth {
        report: HealthReport {
            status,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            components,
        },
        queues,
        workers,
    }
}

#[OpenApi(tag = "HealthTags::Operations")]
impl HealthApi {
    /// Health of each component
    ///
    /// 200 while everything answers (`ok` or `degraded`), 503 when a component is down.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        let mut report = check(&self.state).await.report;
        for component in report.components.values_mut() {
            component.detail = None;
        }
        match report.status {
            OverallStatus::Ok | OverallStatus::Degraded => HealthResponse::Ok(Json(report)),
            OverallStatus::Down => HealthResponse::Down(Json(report)),
        }
    }
}
