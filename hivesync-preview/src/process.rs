//! Running npm and the bundlers: in their own process group (so a timeout kills every process
//! they started), with a minimal environment (the worker's secrets never reach them), output into
//! the build log.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Instant;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use crate::log::BuildLog;

/// Why a step did not succeed.
#[derive(Debug)]
pub enum StepError {
    /// It ran and exited unsuccessfully.
    Failed(ExitStatus),
    /// The build's deadline passed; the whole process group was killed.
    TimedOut,
    /// The job was asked to stop; the whole process group was killed.
    Stopped,
    /// It could not be started.
    Spawn(std::io::Error),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Failed(status) => write!(f, "exited with {status}"),
            StepError::TimedOut => f.write_str("timed out"),
            StepError::Stopped => f.write_str("stopped"),
            StepError::Spawn(err) => write!(f, "could not start: {err}"),
        }
    }
}

/// The variables a step inherits from the worker: what finding programs and writing temp files
/// need, nothing else.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// The shell every step runs under (`sh -c SUPERVISOR sh program args…`): it starts the step,
/// waits for it and exits with its status, while a watcher beside it checks every second that the
/// worker that started it is alive, and kills the step's whole process group (itself and the
/// shell included) once it is not. A worker killed with SIGKILL cannot kill its steps itself; this
/// way none of their processes outlives it by more than a second, sandboxed or not, and none
/// goes on writing into a directory the retry of the build uses.
const SUPERVISOR: &str = r#"worker=$PPID
"$@" & step=$!
( while kill -0 "$worker" 2>/dev/null; do sleep 1; done; kill -KILL 0 ) & watcher=$!
wait "$step"; status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

/// A command to run as one build step.
#[derive(Debug)]
pub struct Step<'a> {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: &'a Path,
    /// Set on top of the inherited variables.
    pub env: Vec<(String, OsString)>,
}

impl<'a> Step<'a> {
    pub fn new(program: impl Into<OsString>, cwd: &'a Path) -> Self {
        Step {
            program: program.into(),
            args: Vec::new(),
            cwd,
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Runs the step to completion, or kills its process group at `deadline` or when `stop`
    /// fires.
    pub async fn run(
        self,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), StepError> {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(&self.program)
            .args(&self.args)
            .current_dir(self.cwd)
            .env_clear()
            .process_group(0)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(log.stdio().map_err(StepError::Spawn)?)
            .stderr(log.stdio().map_err(StepError::Spawn)?);
        for name in INHERITED {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        // Plain text in the log: the bundlers colour their output even without a terminal.
        command.env("NO_COLOR", "1").env("FORCE_COLOR", "0");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let shown: Vec<String> = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        log.line(format_args!("$ {}", shown.join(" ")));
        let started = Instant::now();
        let mut child = command.spawn().map_err(StepError::Spawn)?;
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let kill_group = || {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
        };
        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(StepError::Failed(status)),
                Err(err) => Err(StepError::Spawn(err)),
            },
            () = tokio::time::sleep_until(deadline.into()) => Err(StepError::TimedOut),
            () = stop.cancelled() => Err(StepError::Stopped),
        };
        // Whatever happened, nothing the step started outlives it.
        kill_group();
        if matches!(outcome, Err(StepError::TimedOut | StepError::Stopped)) {
            let _ = child.wait().await;
            // SIGKILL lands asynchronously: let the rest of the group die before the build moves
            // on (bounded, since orphans that init never reaps stay zombies in the group).
            if let Some(group) = group {
                let until = Instant::now() + std::time::Duration::from_secs(2);
                while killpg(group, None).is_ok() && Instant::now() < until {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        log.line(format_args!(
            "{} after {:.3}s",
            match &outcome {
                Ok(()) => "done".to_owned(),
                Err(err) => err.to_string(),
            },
            started.elapsed().as_secs_f64()
        ));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_step_past_its_deadline_takes_its_whole_process_group_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(&dir.path().join("build.log")).unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        // The step starts a grandchild that would outlive a plain kill of the child.
        let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
        let step = Step::new("sh", dir.path()).args(["-c", script.as_str()]);
        let deadline = Instant::now() + Duration::from_millis(500);
        let outcome = step.run(&log, deadline, &CancellationToken::new()).await;
        assert!(matches!(outcome, Err(StepError::TimedOut)), "{outcome:?}");
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // killpg sent SIGKILL to it too, but the kernel delivers it asynchronously: give it up
        // to 5 s to die. Once reaped by init it is gone; `kill -0` on a zombie still succeeds, so
        // look at its state instead.
        let dead = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true)
        };
        let until = Instant::now() + Duration::from_secs(5);
        while !dead() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(dead(), "the grandchild {grandchild} survived");
        assert!(log.tail(4096).contains("timed out"));
    }

    /// Whether process `pid` is gone (or a zombie, which runs nothing).
    fn gone(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn a_step_dies_with_the_worker_that_started_it() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("step.pid");
        let step = format!("echo $$ > {}; exec sleep 300", pid_file.display());
        // A stand-in worker (in a process group of its own, as Step::run gives its steps) that
        // starts a step under the supervisor and is then killed with SIGKILL.
        let mut worker = std::process::Command::new("/bin/sh")
            .args(["-c", r#"/bin/sh -c "$1" sh /bin/sh -c "$2" & wait"#, "sh"])
            .arg(SUPERVISOR)
            .arg(&step)
            .process_group(0)
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            {
                break pid;
            }
            assert!(Instant::now() < until, "the step never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!gone(pid));
        worker.kill().unwrap();
        worker.wait().unwrap();
        // The watcher looks once a second.
        let until = Instant::now() + Duration::from_secs(10);
        while !gone(pid) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(pid), "the step {pid} outlived its worker");
    }

    #[tokio::test]
    async fn steps_see_no_worker_secrets_and_log_their_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(&dir.path().join("build.log")).unwrap();
        // cargo runs tests with CARGO_MANIFEST_DIR set: a worker variable the step must not see.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let step = Step::new("sh", dir.path())
            .args([
                "-c",
                "echo visible=$VISIBLE; echo inherited=${CARGO_MANIFEST_DIR:-absent}; exit 3",
            ])
            .env("VISIBLE", "yes");
        let outcome = step
            .run(
                &log,
                Instant::now() + Duration::from_secs(30),
                &CancellationToken::new(),
            )
            .await;
        assert!(matches!(outcome, Err(StepError::Failed(status)) if status.code() == Some(3)));
        let text = log.tail(4096);
        assert!(text.contains("visible=yes"), "{text}");
        assert!(text.contains("inherited=absent"), "{text}");
    }
}
