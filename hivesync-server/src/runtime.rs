//! The background parts of a HiveSync process: workers, the cleanup scheduler, the reconciler and
//! the autoscaler, started by `hivesync serve` and `hivesync worker`.

use std::sync::Arc;
use std::time::Duration;

use hivesync_ai::{AiRequest, GpuAiRequest};
use hivesync_core::domain::{JobFilter, JobState, Page};
use hivesync_core::ports::{Queue, WorkerRole};
use hivesync_preview::job::PreviewRequest;
use hivesync_queue::autoscaler::{self, Autoscaler, Bounds, Observation};
use hivesync_queue::cleanup::{self, Cleaner, CleanupHandler, CleanupJob};
use hivesync_queue::jobs::{GoneWorkerSweeper, Reconciler};
use hivesync_queue::worker::{Handlers, Ping, PingHandler, WorkerConfig, WorkerDeps};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the reconciler looks for jobs the queue lost.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// How often the registry is read for workers whose heartbeats stopped.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// The lock that keeps one autoscaler running across the cluster.
const AUTOSCALER_LOCK: &str = "autoscaler";

/// The handlers every worker of this build registers.
pub fn handlers(state: &AppState, role: WorkerRole, worker_id: &str) -> Handlers {
    let ai = state.ai_handler(role, worker_id);
    Handlers::new()
        .on::<Ping>(PingHandler {
            worker_id: worker_id.to_owned(),
        })
        .on::<CleanupJob>(CleanupHandler {
            cleaner: cleaner(state),
        })
        .on::<PreviewRequest>(state.preview_builder())
        .on::<AiRequest>(ai.clone())
        .on::<GpuAiRequest>(ai)
}

/// Whether local-model jobs go to GPU workers in this configuration.
pub fn wants_gpu_worker(config: &hivesync_core::config::Config) -> bool {
    config.local_ai.enabled && config.local_ai.device == hivesync_core::config::LocalAiDevice::Gpu
}

/// The cleaner for this process's `DATA_DIR` and object store.
pub fn cleaner(state: &AppState) -> Cleaner {
    Cleaner::new(
        state.config.data_dir.clone(),
        state.objects.clone(),
        state.store.clone(),
        state.config.cleanup.clone(),
        state.clock.clone(),
    )
}

fn deps(state: &AppState) -> WorkerDeps {
    WorkerDeps {
        store: state.store.clone(),
        queue: state.queue.clone(),
        registry: state.registry.clone(),
        locks: state.locks.clone(),
        clock: state.clock.clone(),
    }
}

/// Runs one worker until `shutdown`; for `cleanup` workers also schedules the periodic cleanup.
pub fn spawn_worker(
    state: &Arc<AppState>,
    config: WorkerConfig,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if config.role == WorkerRole::Cleanup {
        tasks.push(tokio::spawn(cleanup::schedule(
            state.store.clone(),
            state.queue.clone(),
            state.config.cleanup.interval,
            shutdown.clone(),
        )));
    }
    let worker = hivesync_queue::worker::Worker::new(
        config.clone(),
        deps(state),
        handlers(state, config.role, &config.id),
    );
    let shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(err) = worker.run(shutdown).await {
            tracing::error!(error = %err, "worker stopped with an error");
        }
    }));
    tasks
}

/// The workers `hivesync serve` runs in process on the embedded defaults: a CPU worker, the
/// cleanup worker, and a GPU worker when the local model runs on one (`LOCAL_AI_DEVICE=gpu`;
/// [`AppState::prepare_gpu`] must have succeeded).
pub fn spawn_embedded_workers(
    state: &Arc<AppState>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut cpu = WorkerConfig::new(WorkerRole::Cpu, state.config.worker_concurrency);
    cpu.poll_interval = Duration::from_millis(500);
    let mut tasks = spawn_worker(state, cpu, shutdown);
    if wants_gpu_worker(&state.config) {
        let mut gpu = WorkerConfig::new(WorkerRole::Gpu, 1);
        gpu.poll_interval = Duration::from_millis(500);
        tasks.extend(spawn_worker(state, gpu, shutdown));
    }
    tasks.extend(spawn_worker(
        state,
        WorkerConfig::new(WorkerRole::Cleanup, 1),
        shutdown,
    ));
    tasks
}

/// Runs the job-keeping tasks every `serve` and `worker` process offers, each active in one
/// process at a time under its cluster-wide lock, until `shutdown`: the reconciler (jobs the
/// queue lost) and the sweeper (jobs of workers whose heartbeats stopped).
pub fn spawn_job_keepers(
    state: &Arc<AppState>,
    owner: &str,
    shutdown: &CancellationToken,
) -> [JoinHandle<()>; 2] {
    let reconciler = Reconciler::new(
        state.store.clone(),
        state.queue.clone(),
        state.clock.clone(),
    );
    let sweeper = GoneWorkerSweeper::new(
        state.store.clone(),
        state.queue.clone(),
        state.registry.clone(),
        state.clock.clone(),
    );
    [
        tokio::spawn(reconciler.run(
            state.locks.clone(),
            format!("{owner}:reconciler"),
            RECONCILE_EVERY,
            shutdown.clone(),
        )),
        tokio::spawn(sweeper.run(
            state.locks.clone(),
            format!("{owner}:sweeper"),
            SWEEP_EVERY,
            shutdown.clone(),
        )),
    ]
}

/// Runs the autoscaler (under its cluster-wide lock) until `shutdown`, when it is enabled.
pub fn spawn_autoscaler(
    state: &Arc<AppState>,
    owner: &str,
    shutdown: &CancellationToken,
) -> Option<JoinHandle<()>> {
    let config = state.config.autoscaler.clone();
    if !config.enabled {
        return None;
    }
    let scaler = match autoscaler::scaler_from_config(&config) {
        Ok(scaler) => scaler,
        Err(err) => {
            tracing::error!(error = %err, "the autoscaler cannot start");
            return None;
        }
    };
    let state = state.clone();
    let owner = format!("{owner}:autoscaler");
    let shutdown = shutdown.clone();
    Some(tokio::spawn(async move {
        let bounds = Bounds::from(&config);
        let mut autoscaler = Autoscaler::new(bounds, config.scale_in_cooldown);
        state.autoscaler.write().await.bounds = Some(bounds);
        let mut tick = tokio::time::interval(config.poll_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            let held = state
                .locks
                .acquire(AUTOSCALER_LOCK, &owner, config.poll_interval * 2)
                .await
                .unwrap_or(false);
            state.autoscaler.write().await.active = held;
            if !held {
                continue;
            }
            for role in [WorkerRole::Cpu, WorkerRole::Gpu] {
                let outcome = match observe(&state, role).await {
                    Ok(seen) => match autoscaler.observe(role, &seen) {
                        Some(target) => scaler.scale_to(role, target).await,
                        None => scaler.maintain(role, autoscaler.target(role)).await,
                    },
                    Err(err) => Err(err),
                };
                let mut view = state.autoscaler.write().await;
                view.last_error = outcome.err().map(|e| e.to_string());
                view.targets = [WorkerRole::Cpu, WorkerRole::Gpu]
                    .into_iter()
                    .map(|r| (r.to_string(), autoscaler.target(r)))
                    .collect();
                view.decisions = autoscaler
                    .history()
                    .iter()
                    .map(|(r, d)| (r.to_string(), *d))
                    .collect();
            }
        }
        let _ = state.locks.release(AUTOSCALER_LOCK, &owner).await;
    }))
}

/// What the autoscaler sees for `role`: depth and waits of its queues, the median duration of its
/// recent jobs, and its responsive workers.
async fn observe(state: &AppState, role: WorkerRole) -> hivesync_core::Result<Observation> {
    let queues: Vec<Queue> = role.default_queues();
    let mut seen = Observation::default();
    let mut durations = Vec::new();
    for queue in &queues {
        let stats = state.queue.stats(*queue).await?;
        seen.depth += stats.depth();
        if let Some(ms) = stats.oldest_ready_ms {
            let wait = Duration::from_millis(ms);
            seen.oldest_wait = Some(seen.oldest_wait.map_or(wait, |w| w.max(wait)));
        }
        let filter = JobFilter {
            queue: Some(queue.to_string()),
            state: Some(JobState::Success),
            ..JobFilter::default()
        };
        for job in state.store.list_jobs(&filter, Page::first(50)).await? {
            if let (Some(start), Some(end)) = (job.started_at, job.finished_at) {
                durations.extend(end.signed_duration_since(start).to_std().ok());
            }
        }
    }
    durations.sort();
    seen.median_job = durations.get(durations.len() / 2).copied();
    let now = state.clock.now();
    seen.responsive_workers = state
        .registry
        .list()
        .await?
        .iter()
        .filter(|w| w.role == role && w.is_responsive(now))
        .count() as u32;
    Ok(seen)
}
