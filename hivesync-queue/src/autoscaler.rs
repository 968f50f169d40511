//! The autoscaler (spec §11.3, off by default): a pure decision over queue depth, heartbeats, wait
//! times and job durations, a small state machine that keeps it from flapping, and the `Scaler`
//! adapters that carry decisions out.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hivesync_core::config::AutoscalerConfig;
use hivesync_core::ports::{Scaler, WorkerRole};
use hivesync_core::{Error, ErrorKind, Result};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// What the autoscaler looks at for one worker role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Observation {
    /// Jobs waiting (ready and delayed) on the role's queues.
    pub depth: u64,
    /// How long the oldest ready job has waited.
    pub oldest_wait: Option<Duration>,
    /// The median duration of recent jobs on the role's queues.
    pub median_job: Option<Duration>,
    /// Workers of the role that sent a heartbeat within 120 s.
    pub responsive_workers: u32,
}

/// The bounds and thresholds of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    pub scale_out_threshold: u64,
    pub scale_in_threshold: u64,
    pub drain_target: Option<Duration>,
}

impl From<&AutoscalerConfig> for Bounds {
    fn from(config: &AutoscalerConfig) -> Self {
        Bounds {
            min: config.min_workers,
            max: config.max_workers,
            scale_out_threshold: config.scale_out_threshold,
            scale_in_threshold: config.scale_in_threshold,
            drain_target: config.drain_target,
        }
    }
}

/// Why a target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Depth above the scale-out threshold: one more worker.
    DepthAboveThreshold,
    /// The queue would not drain within the target: as many workers as that needs.
    DrainTooSlow,
    /// Depth below the scale-in threshold: one worker fewer.
    DepthBelowThreshold,
    /// Between the thresholds: keep the current count.
    Steady,
    /// Clamped to the configured minimum or maximum.
    Bounded,
}

/// A target worker count and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub target: u32,
    pub reason: Reason,
}

/// The pure decision: given the current target and what was observed, the next target.
///
/// - depth > scale-out threshold → current + 1;
/// - with a drain target and a known median job duration: at least
///   ⌈depth × median ÷ drain target⌉ workers, and one more than now when the oldest job has
///   already waited longer than the drain target;
/// - depth < scale-in threshold (and no drain requirement) → current − 1;
/// - always within `[min, max]`.
///
/// The target is a count of workers the `Scaler` keeps running; workers that died are its to
/// replace (`Scaler::maintain`), so the decision itself does not shrink with them.
pub fn decide(current_target: u32, seen: &Observation, bounds: &Bounds) -> Decision {
    let current = current_target;
    let (mut target, mut reason) = if seen.depth > bounds.scale_out_threshold {
        (current.saturating_add(1), Reason::DepthAboveThreshold)
    } else if seen.depth < bounds.scale_in_threshold {
        (current.saturating_sub(1), Reason::DepthBelowThreshold)
    } else {
        (current, Reason::Steady)
    };
    if let Some(needed) = drain_workers(seen, bounds)
        && needed > target
    {
        target = needed;
        reason = Reason::DrainTooSlow;
    }
    if target == current {
        reason = Reason::Steady;
    }
    let bounded = target.clamp(bounds.min, bounds.max);
    if bounded != target {
        return Decision {
            target: bounded,
            reason: Reason::Bounded,
        };
    }
    Decision { target, reason }
}

/// With a drain target and a known median job duration: the workers needed to drain the queue
/// within the target, and at least one more than now when a job already waited longer.
fn drain_workers(seen: &Observation, bounds: &Bounds) -> Option<u32> {
    let drain = bounds.drain_target.filter(|d| !d.is_zero())?;
    let median = seen.median_job?;
    if seen.depth == 0 {
        return None;
    }
    let work = median.as_secs_f64() * seen.depth as f64;
    let mut needed = (work / drain.as_secs_f64()).ceil() as u32;
    if seen.oldest_wait.is_some_and(|wait| wait > drain) {
        needed = needed.max(seen.responsive_workers.saturating_add(1));
    }
    Some(needed)
}

/// Applies decisions over time: scales out at once, scales in only after the queue stayed low
/// for the cool-down, and never touches the cleanup worker.
#[derive(Debug)]
pub struct Autoscaler {
    bounds: Bounds,
    cooldown: Duration,
    targets: HashMap<WorkerRole, u32>,
    low_since: HashMap<WorkerRole, Instant>,
    history: Vec<(WorkerRole, Decision)>,
}

impl Autoscaler {
    pub fn new(bounds: Bounds, cooldown: Duration) -> Self {
        Autoscaler {
            bounds,
            cooldown,
            targets: HashMap::new(),
            low_since: HashMap::new(),
            history: Vec::new(),
        }
    }

    /// The current target for `role` (the minimum until a decision was made).
    pub fn target(&self, role: WorkerRole) -> u32 {
        self.targets.get(&role).copied().unwrap_or(self.bounds.min)
    }

    /// Where a role starts: its responsive workers, within the bounds — so an autoscaler that
    /// starts (or takes over the lock) next to running workers moves them one step, instead of
    /// snapping them to the minimum.
    fn starting_point(&self, seen: &Observation) -> u32 {
        seen.responsive_workers
            .clamp(self.bounds.min, self.bounds.max)
    }

    /// The last decisions, newest last (at most 50).
    pub fn history(&self) -> &[(WorkerRole, Decision)] {
        &self.history
    }

    /// Decides for `role` given an observation made now; returns the new target when it changed.
    pub fn observe(&mut self, role: WorkerRole, seen: &Observation) -> Option<u32> {
        if role == WorkerRole::Cleanup {
            return None;
        }
        let known = self.targets.get(&role).copied();
        let current = known.unwrap_or_else(|| self.starting_point(seen));
        let decision = decide(current, seen, &self.bounds);
        let target = if decision.target < current {
            // Scale in only once the queue has been low for the whole cool-down.
            let since = *self.low_since.entry(role).or_insert_with(Instant::now);
            if since.elapsed() < self.cooldown {
                current
            } else {
                self.low_since.remove(&role);
                decision.target
            }
        } else {
            self.low_since.remove(&role);
            decision.target
        };
        self.history.push((role, Decision { target, ..decision }));
        if self.history.len() > 50 {
            self.history.remove(0);
        }
        self.targets.insert(role, target);
        if known == Some(target) {
            return None;
        }
        Some(target)
    }
}

/// A `Scaler` that only logs (the default: spec §11.3 "local dev: autoscaler does nothing").
#[derive(Debug, Default, Clone, Copy)]
pub struct LogScaler;

#[async_trait]
impl Scaler for LogScaler {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn scale_to(&self, role: WorkerRole, workers: u32) -> Result<()> {
        tracing::info!(role = %role, workers, "autoscaler decision (not carried out: AUTOSCALER_SCALER=none)");
        Ok(())
    }
}

/// A `Scaler` that runs a command, e.g. `kubectl scale deployment/hivesync-worker-{role}
/// --replicas={n}`. The template is split on whitespace and run without a shell, so `{role}` and
/// `{n}` can never inject anything.
#[derive(Debug, Clone)]
pub struct CommandScaler {
    template: Vec<String>,
    timeout: Duration,
}

impl CommandScaler {
    pub fn new(template: &str) -> Result<Self> {
        let template: Vec<String> = template.split_whitespace().map(str::to_owned).collect();
        if template.is_empty() {
            return Err(Error::new(ErrorKind::Config, "AUTOSCALER_COMMAND is empty")
                .with_context("variable", "AUTOSCALER_COMMAND"));
        }
        Ok(CommandScaler {
            template,
            timeout: Duration::from_secs(120),
        })
    }

    /// The argument vector for `role` and `workers`.
    pub fn command_line(&self, role: WorkerRole, workers: u32) -> Vec<String> {
        self.template
            .iter()
            .map(|arg| {
                arg.replace("{n}", &workers.to_string())
                    .replace("{role}", role.as_str())
            })
            .collect()
    }
}

#[async_trait]
impl Scaler for CommandScaler {
    fn name(&self) -> &'static str {
        "command"
    }

    async fn scale_to(&self, role: WorkerRole, workers: u32) -> Result<()> {
        let argv = self.command_line(role, workers);
        let output = tokio::time::timeout(
            self.timeout,
            tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| Error::unavailable("the scaling command timed out"))?
        .map_err(|e| Error::unavailable("cannot run the scaling command").with_source(e))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::unavailable("the scaling command failed")
                .with_context("status", output.status)
                .with_context(
                    "stderr",
                    stderr.trim().chars().take(500).collect::<String>(),
                ));
        }
        tracing::info!(role = %role, workers, command = ?argv, "scaled");
        Ok(())
    }
}

/// A `Scaler` that starts and stops `hivesync worker --role <role>` processes on this machine.
/// Scaling in sends SIGTERM to the newest worker, which finishes or gives back its jobs.
#[derive(Debug)]
pub struct LocalProcessScaler {
    program: std::path::PathBuf,
    extra_args: Vec<String>,
    children: Mutex<HashMap<WorkerRole, Vec<tokio::process::Child>>>,
}

impl LocalProcessScaler {
    /// Workers are started as `program worker --role <role> <extra_args>`.
    pub fn new(program: impl Into<std::path::PathBuf>, extra_args: Vec<String>) -> Self {
        LocalProcessScaler {
            program: program.into(),
            extra_args,
            children: Mutex::default(),
        }
    }

    /// How many started workers of `role` are still running.
    pub async fn running(&self, role: WorkerRole) -> usize {
        let mut children = self.children.lock().await;
        let list = children.entry(role).or_default();
        list.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        list.len()
    }
}

#[async_trait]
impl Scaler for LocalProcessScaler {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn maintain(&self, role: WorkerRole, workers: u32) -> Result<()> {
        self.scale_to(role, workers).await
    }

    async fn scale_to(&self, role: WorkerRole, workers: u32) -> Result<()> {
        if role == WorkerRole::Cleanup {
            return Err(Error::validation("the cleanup worker is never scaled"));
        }
        let mut children = self.children.lock().await;
        let list = children.entry(role).or_default();
        // Workers that died are replaced.
        list.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        while list.len() < workers as usize {
            let child = tokio::process::Command::new(&self.program)
                .args(["worker", "--role", role.as_str()])
                .args(&self.extra_args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::unavailable("cannot start a worker process").with_source(e))?;
            tracing::info!(role = %role, pid = child.id(), "started a worker process");
            list.push(child);
        }
        while list.len() > workers as usize {
            let Some(mut child) = list.pop() else { break };
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                tracing::info!(role = %role, pid, "asked a worker process to stop");
            }
            // Reap it in the background once it has given back its jobs.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Ok(())
    }
}

/// Builds the scaler the configuration names.
pub fn scaler_from_config(config: &AutoscalerConfig) -> Result<Arc<dyn Scaler>> {
    use hivesync_core::config::ScalerKind;
    Ok(match config.scaler {
        ScalerKind::None => Arc::new(LogScaler),
        ScalerKind::Command => Arc::new(CommandScaler::new(
            config.command.as_deref().unwrap_or_default(),
        )?),
        ScalerKind::LocalProcesses => {
            let program = std::env::current_exe().map_err(|e| {
                Error::internal("cannot find the hivesync executable").with_source(e)
            })?;
            Arc::new(LocalProcessScaler::new(program, Vec::new()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            min: 1,
            max: 4,
            scale_out_threshold: 20,
            scale_in_threshold: 5,
            drain_target: None,
        }
    }

    fn seen(depth: u64) -> Observation {
        Observation {
            depth,
            responsive_workers: 2,
            ..Observation::default()
        }
    }

    #[test]
    fn the_spec_thresholds() {
        use Reason::*;
        // (current, depth) -> (target, reason)
        let table = [
            ((2, 21), (3, DepthAboveThreshold)),
            ((2, 20), (2, Steady)),
            ((2, 5), (2, Steady)),
            ((2, 4), (1, DepthBelowThreshold)),
            ((4, 100), (4, Bounded)),
            ((1, 0), (1, Bounded)),
            ((0, 0), (1, Bounded)),
            ((9, 10), (4, Bounded)),
        ];
        for ((current, depth), (target, reason)) in table {
            let decision = decide(current, &seen(depth), &bounds());
            assert_eq!(
                (decision.target, decision.reason),
                (target, reason),
                "current {current}, depth {depth}"
            );
        }
    }

    #[test]
    fn the_drain_target_adds_workers_for_slow_queues() {
        let drain = Bounds {
            drain_target: Some(Duration::from_secs(60)),
            max: 10,
            ..bounds()
        };
        // 10 jobs of 30 s each: 300 s of work; draining in 60 s needs 5 workers.
        let slow = Observation {
            depth: 10,
            median_job: Some(Duration::from_secs(30)),
            ..seen(10)
        };
        assert_eq!(
            decide(2, &slow, &drain),
            Decision {
                target: 5,
                reason: Reason::DrainTooSlow
            }
        );
        // Short jobs drain fast: the thresholds decide.
        let fast = Observation {
            median_job: Some(Duration::from_secs(1)),
            ..slow
        };
        assert_eq!(
            decide(2, &fast, &drain),
            Decision {
                target: 2,
                reason: Reason::Steady
            }
        );
        // A job that already waited longer than the target asks for one more worker.
        let starved = Observation {
            oldest_wait: Some(Duration::from_secs(90)),
            ..fast
        };
        assert_eq!(
            decide(2, &starved, &drain),
            Decision {
                target: 3,
                reason: Reason::DrainTooSlow
            }
        );
        // Never past the maximum.
        let flood = Observation {
            depth: 1000,
            ..slow
        };
        assert_eq!(decide(2, &flood, &drain).target, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn scale_in_waits_for_the_cooldown_and_cleanup_is_never_scaled() {
        // One worker runs when the autoscaler starts.
        let seen = |depth| Observation {
            responsive_workers: 1,
            ..seen(depth)
        };
        let mut autoscaler = Autoscaler::new(bounds(), Duration::from_secs(300));
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(30)),
            Some(2),
            "out at once"
        );
        assert_eq!(autoscaler.observe(WorkerRole::Cpu, &seen(30)), Some(3));
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(0)),
            None,
            "in: not yet"
        );
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(0)),
            None,
            "in: still cooling down"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(0)),
            Some(2),
            "in after the cool-down"
        );
        // A busy spell resets the cool-down.
        tokio::time::advance(Duration::from_secs(200)).await;
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(10)),
            None,
            "steady"
        );
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(0)),
            None,
            "low again: the clock restarts"
        );
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(autoscaler.observe(WorkerRole::Cpu, &seen(0)), Some(1));
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &seen(0)),
            None,
            "at the minimum"
        );
        assert_eq!(
            autoscaler.observe(WorkerRole::Cleanup, &seen(1000)),
            None,
            "cleanup is never scaled"
        );
        assert_eq!(autoscaler.target(WorkerRole::Cleanup), 1);
        // Roles are independent; a role starts from its responsive workers.
        let two_running = Observation {
            responsive_workers: 2,
            depth: 25,
            ..Observation::default()
        };
        assert_eq!(autoscaler.observe(WorkerRole::Gpu, &two_running), Some(3));
        assert_eq!(autoscaler.target(WorkerRole::Cpu), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_autoscaler_starts_from_the_running_workers() {
        let mut autoscaler = Autoscaler::new(bounds(), Duration::from_secs(300));
        let four_running = Observation {
            responsive_workers: 4,
            ..seen(0)
        };
        // Four workers run and the queue is empty: no snap to the minimum, and no scale-in
        // before the cool-down.
        assert_eq!(autoscaler.observe(WorkerRole::Cpu, &four_running), Some(4));
        assert_eq!(autoscaler.target(WorkerRole::Cpu), 4);
        assert_eq!(autoscaler.observe(WorkerRole::Cpu, &four_running), None);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(
            autoscaler.observe(WorkerRole::Cpu, &four_running),
            Some(3),
            "one step at a time"
        );
    }

    #[test]
    fn command_lines_substitute_without_a_shell() {
        let scaler =
            CommandScaler::new("kubectl scale deployment/hivesync-{role} --replicas={n}").unwrap();
        assert_eq!(
            scaler.command_line(WorkerRole::Gpu, 3),
            [
                "kubectl",
                "scale",
                "deployment/hivesync-gpu",
                "--replicas=3"
            ]
        );
        assert!(CommandScaler::new("   ").is_err());
    }

    #[tokio::test]
    async fn the_command_scaler_runs_its_command_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("scaled");
        let ok = CommandScaler::new(&format!("touch {}-{{role}}-{{n}}", marker.display())).unwrap();
        ok.scale_to(WorkerRole::Cpu, 3).await.unwrap();
        assert!(dir.path().join("scaled-cpu-3").exists());
        let failing = CommandScaler::new("false").unwrap();
        assert_eq!(
            failing
                .scale_to(WorkerRole::Cpu, 1)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Unavailable
        );
    }

    #[tokio::test]
    async fn the_local_scaler_starts_and_stops_processes() {
        // A stand-in for `hivesync worker`: takes any arguments and runs until stopped.
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("fake-worker");
        // Written by a child shell, not by this process: a test thread forking while this
        // process held the file open for writing would make exec fail with ETXTBSY.
        let written = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"printf '#!/bin/sh\nexec sleep 600\n' > "$1" && chmod 755 "$1""#)
            .arg("sh")
            .arg(&program)
            .status()
            .unwrap();
        assert!(written.success());
        let scaler = LocalProcessScaler::new(&program, Vec::new());
        scaler.scale_to(WorkerRole::Cpu, 3).await.unwrap();
        assert_eq!(scaler.running(WorkerRole::Cpu).await, 3);
        scaler.scale_to(WorkerRole::Cpu, 1).await.unwrap();
        assert_eq!(scaler.running(WorkerRole::Cpu).await, 1);
        assert!(scaler.scale_to(WorkerRole::Cleanup, 2).await.is_err());
        scaler.scale_to(WorkerRole::Cpu, 0).await.unwrap();
        assert_eq!(scaler.running(WorkerRole::Cpu).await, 0);
    }
}
