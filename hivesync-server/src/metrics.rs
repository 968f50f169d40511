//! Prometheus metrics: the recorder, the names HiveSync exports, and the gauges refreshed from the
//! backends at each scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hivesync_queue_depth` | gauge | `queue`: ready + delayed jobs |
//! | `hivesync_queue_jobs` | gauge | `queue`, `status` (`ready`, `delayed`, `running`, `dead`) |
//! | `hivesync_jobs` | gauge | `queue`, `state`: job records, cluster-wide |
//! | `hivesync_jobs_total` | counter | `queue`, `outcome`: jobs finished by workers in this process |
//! | `hivesync_job_duration_seconds` | histogram | `queue` |
//! | `hivesync_workers` | gauge | `type`, `state` (`responsive`, `unresponsive`, `draining`) |
//! | `preview_build_time_seconds` | histogram | spec §7.14 |
//! | `preview_build_success_total`, `preview_build_failures_total`, `preview_upload_failures_total` | counters | spec §7.14 |
//! | `preview_cache_hits_total`, `preview_cache_misses_total` | counters | `cache`: `build` (whole-build cache, at request time), `dependencies`, `metro` |
//! | `ai_jobs_total` | counter | `task`, `provider` (the one that answered), `outcome` (`success`, `failed`) |
//! | `ai_provider_attempts_total` | counter | `provider`, `outcome` (`answered`, `skipped`, `failed`) |
//! | `ai_provider_seconds` | histogram | `provider`: one provider call |
//! | `ai_tokens_generated_total` | counter | `provider` |
//! | `ai_cache_hits_total`, `ai_cache_misses_total` | counters | AI requests answered from the result cache, or queued |

use std::sync::OnceLock;

use hivesync_core::domain::JobState;
use hivesync_core::ports::{Queue, WorkerRole};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Bucket bounds for job durations, in seconds: from a fast no-op to a long build.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &DURATION_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (embedding); then ours only renders its
            // own registrations, which is still correct for this process.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Descriptions, and a zero for every counter and histogram, so each name is exported from the
/// first scrape on.
fn describe() {
    describe_gauge!(
        "hivesync_queue_depth",
        "Jobs waiting on a queue: ready and delayed."
    );
    describe_gauge!(
        "hivesync_queue_jobs",
        "Jobs on a queue by status: ready, delayed, running, dead."
    );
    describe_gauge!(
        "hivesync_jobs",
        "Job records by queue and state, across the cluster."
    );
    describe_counter!(
        "hivesync_jobs_total",
        "Jobs finished by workers of this process, by queue and outcome."
    );
    describe_histogram!(
        "hivesync_job_duration_seconds",
        Unit::Seconds,
        "Time workers of this process spent on a job."
    );
    describe_gauge!(
        "hivesync_workers",
        "Workers by type and state, from their heartbeats."
    );
    describe_histogram!(
        "preview_build_time_seconds",
        Unit::Seconds,
        "Time from the start of a preview build to its bundle."
    );
    describe_counter!(
        "preview_build_success_total",
        "Preview builds that produced a bundle."
    );
    describe_counter!(
        "preview_build_failures_total",
        "Preview builds that failed."
    );
    describe_counter!(
        "preview_upload_failures_total",
        "Preview bundles that could not be uploaded."
    );
    metrics::counter!("preview_build_success_total").absolute(0);
    metrics::counter!("preview_build_failures_total").absolute(0);
    metrics::counter!("preview_upload_failures_total").absolute(0);
    describe_counter!(
        "preview_cache_hits_total",
        "Preview cache hits: build (an identical bundle reused), dependencies, metro."
    );
    describe_counter!(
        "preview_cache_misses_total",
        "Preview cache misses: build, dependencies, metro."
    );
    for cache in ["build", "dependencies", "metro"] {
        metrics::counter!("preview_cache_hits_total", "cache" => cache).absolute(0);
        metrics::counter!("preview_cache_misses_total", "cache" => cache).absolute(0);
    }
    let _ = metrics::histogram!("preview_build_time_seconds");
    describe_counter!(
        "ai_jobs_total",
        "AI jobs finished by workers of this process, by task, answering provider and outcome."
    );
    describe_counter!(
        "ai_provider_attempts_total",
        "AI provider calls by provider and outcome: answered, skipped, failed."
    );
    describe_histogram!(
        "ai_provider_seconds",
        Unit::Seconds,
        "Time one AI provider took to answer or fail."
    );
    describe_counter!(
        "ai_tokens_generated_total",
        "Tokens generated by AI models, by provider."
    );
    describe_counter!(
        "ai_cache_hits_total",
        "AI requests answered from an identical earlier result."
    );
    describe_counter!("ai_cache_misses_total", "AI requests queued as new jobs.");
    metrics::counter!("ai_cache_hits_total").absolute(0);
    metrics::counter!("ai_cache_misses_total").absolute(0);
    for queue in Queue::ALL {
        let _ = metrics::histogram!("hivesync_job_duration_seconds", "queue" => queue.as_str());
        for outcome in [
            "success",
            "failed",
            "retried",
            "cancelled",
            "released",
            "lease_lost",
            "error",
        ] {
            metrics::counter!("hivesync_jobs_total", "queue" => queue.as_str(), "outcome" => outcome).absolute(0);
        }
    }
}

/// Refreshes the gauges from the backends and renders the exposition text.
pub async fn render(state: &AppState, handle: &PrometheusHandle) -> hivesync_core::Result<String> {
    for queue in Queue::ALL {
        let stats = state.queue.stats(queue).await?;
        gauge!("hivesync_queue_depth", "queue" => queue.as_str()).set(stats.depth() as f64);
        for (status, value) in [
            ("ready", stats.ready),
            ("delayed", stats.delayed),
            ("running", stats.running),
            ("dead", stats.dead),
        ] {
            gauge!("hivesync_queue_jobs", "queue" => queue.as_str(), "status" => status)
                .set(value as f64);
        }
    }
    let counts = state.store.count_jobs().await?;
    for queue in Queue::ALL {
        for job_state in JobState::ALL {
            let count = counts
                .iter()
                .find(|c| c.queue == queue.as_str() && c.state == job_state)
                .map_or(0, |c| c.count);
            gauge!("hivesync_jobs", "queue" => queue.as_str(), "state" => job_state.as_str())
                .set(count as f64);
        }
    }
    let now = state.clock.now();
    let workers = state.registry.list().await?;
    for role in WorkerRole::ALL {
        let of_role: Vec<_> = workers.iter().filter(|w| w.role == role).collect();
        let unresponsive = of_role.iter().filter(|w| !w.is_responsive(now)).count();
        let draining = of_role
            .iter()
            .filter(|w| w.is_responsive(now) && w.draining)
            .count();
        let responsive = of_role.len() - unresponsive - draining;
        for (worker_state, value) in [
            ("responsive", responsive),
            ("unresponsive", unresponsive),
            ("draining", draining),
        ] {
            gauge!("hivesync_workers", "type" => role.as_str(), "state" => worker_state)
                .set(value as f64);
        }
    }
    handle.run_upkeep();
    Ok(handle.render())
}
