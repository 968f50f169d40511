//! Confinement of the bundler step, which runs the project's own code (its Metro, Babel and app
//! configs, and every package it depends on) with the worker's user id.
//!
//! With bubblewrap (`bwrap`), the bundler sees the whole filesystem read-only except:
//! - `DATA_DIR` and `HOME` are replaced by empty in-memory directories (no secrets, database,
//!   repositories or other builds; no `~/.aws`, `~/.npmrc`), with only this build's own
//!   directories mounted back (the job's directory and Metro cache writable, the dependency store
//!   read-only), and the Node installation if it lives under `HOME`;
//! - `/tmp` and `/run` are empty, and `/var/run/secrets` (Kubernetes) is hidden;
//! - it has its own process namespace (no other process's `/proc/<pid>/environ`), no network, and
//!   dies with the worker.
//!
//! `PREVIEW_SANDBOX=auto` (the default) uses bubblewrap when it can run here and says in every
//! build log when it cannot; `bwrap` requires it; `none` runs builds unconfined (for hosts where
//! every project is trusted). npm's install step is not confined: it runs no package scripts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `PREVIEW_SANDBOX`.
pub use hivesync_core::config::SandboxMode;

/// How the bundler step is confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Unconfined, by choice (`PREVIEW_SANDBOX=none`) or because bubblewrap cannot run (`auto`).
    None { reason: String },
    /// Confined by bubblewrap; `hide` are the directories replaced by empty ones.
    Bwrap {
        program: PathBuf,
        hide: Vec<PathBuf>,
    },
    /// `PREVIEW_SANDBOX=bwrap`, but bubblewrap cannot run: every build fails with this reason.
    Unavailable { reason: String },
}

/// What every confined step gets, before the masks and mounts: namespaces, a read-only system,
/// fresh `/proc`, `/dev` and `/tmp`.
const BASE: &[&str] = &[
    "--die-with-parent",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-net",
    "--unshare-cgroup-try",
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
];

/// Whether `bwrap` runs here with exactly the setup the sandbox uses.
fn probe(program: &Path) -> Result<(), String> {
    let output = Command::new(program)
        .args(BASE)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} does not work here: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize()
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

impl Sandbox {
    /// The sandbox `mode` asks for, hiding `data_dir` and the worker's `HOME`.
    pub fn for_mode(mode: SandboxMode, data_dir: &Path) -> Sandbox {
        if mode == SandboxMode::None {
            return Sandbox::None {
                reason: "PREVIEW_SANDBOX=none".to_owned(),
            };
        }
        let program = PathBuf::from("bwrap");
        match probe(&program) {
            Ok(()) => {
                let mut hide = vec![absolute(data_dir)];
                if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
                    let home = absolute(Path::new(&home));
                    // A home of `/` would hide everything.
                    if home.parent().is_some() {
                        hide.push(home);
                    }
                }
                Sandbox::Bwrap { program, hide }
            }
            Err(reason) if mode == SandboxMode::Auto => Sandbox::None {
                reason: format!("no sandbox: {reason} (install bubblewrap)"),
            },
            Err(reason) => Sandbox::Unavailable {
                reason: format!("PREVIEW_SANDBOX=bwrap, but {reason}"),
            },
        }
    }

    /// Whether the sandbox can mount a directory elsewhere (the dependency store at a
    /// checkout's `node_modules`).
    pub fn mounts(&self) -> bool {
        matches!(self, Sandbox::Bwrap { .. })
    }

    /// The command line that runs `program args` in `cwd` inside the sandbox, with `writable`
    /// paths mounted back and then each `(source, target)` of `read_only` mounted at `target`
    /// (over what `writable` shows there).
    pub fn wrap(
        &self,
        program: &OsString,
        args: &[OsString],
        cwd: &Path,
        writable: &[&Path],
        read_only: &[(&Path, &Path)],
    ) -> Result<(OsString, Vec<OsString>), String> {
        let (bwrap, hide) = match self {
            Sandbox::None { .. } => return Ok((program.clone(), args.to_vec())),
            Sandbox::Unavailable { reason } => return Err(reason.clone()),
            Sandbox::Bwrap { program, hide } => (program, hide),
        };
        let mut line: Vec<OsString> = BASE.iter().map(OsString::from).collect();
        let mut mask = |path: &Path| {
            if path.is_dir() {
                line.extend(["--tmpfs".into(), path.as_os_str().to_owned()]);
            }
        };
        mask(Path::new("/run"));
        mask(Path::new("/var/run/secrets"));
        for dir in hide {
            mask(dir);
        }
        let mut mount = |flag: &str, source: &Path, target: &Path| {
            line.extend([
                flag.into(),
                absolute(source).into(),
                absolute(target).into(),
            ]);
        };
        // Node itself, when it is installed under a hidden directory (nvm, volta, asdf).
        if let Some(node) = find_node()
            && hide.iter().any(|h| node.starts_with(h))
            && let Some(prefix) = node.parent().and_then(Path::parent)
        {
            mount("--ro-bind", prefix, prefix);
        }
        for path in writable {
            mount("--bind", path, path);
        }
        for (source, target) in read_only {
            mount("--ro-bind", source, target);
        }
        line.extend(["--chdir".into(), absolute(cwd).into(), "--".into()]);
        line.push(program.clone());
        line.extend(args.iter().cloned());
        Ok((bwrap.clone().into(), line))
    }

    /// A line for the build log saying how the bundler is confined.
    pub fn describe(&self) -> String {
        match self {
            Sandbox::None { reason } => format!("sandbox: none ({reason})"),
            Sandbox::Bwrap { .. } => {
                "sandbox: bubblewrap (read-only system, DATA_DIR and HOME hidden, no network, own process namespace)".to_owned()
            }
            Sandbox::Unavailable { reason } => format!("sandbox: unavailable ({reason})"),
        }
    }
}

/// The real path of the `node` on `PATH`.
fn find_node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .map(|node| node.canonicalize().unwrap_or(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_runs_the_command_as_is_and_unavailable_refuses() {
        let none = Sandbox::for_mode(SandboxMode::None, Path::new("/data"));
        let (program, args) = none
            .wrap(&"node".into(), &["x".into()], Path::new("/"), &[], &[])
            .unwrap();
        assert_eq!((program, args), ("node".into(), vec!["x".into()]));
        let unavailable = Sandbox::Unavailable {
            reason: "no bwrap".to_owned(),
        };
        assert_eq!(
            unavailable
                .wrap(&"node".into(), &[], Path::new("/"), &[], &[])
                .unwrap_err(),
            "no bwrap"
        );
    }

    #[test]
    fn bwrap_hides_the_data_directory_and_mounts_back_only_the_build() {
        let data = tempfile::tempdir().unwrap();
        let job = data.path().join("tmp/job");
        let store = data.path().join("cache/deps");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::create_dir_all(&store).unwrap();
        let sandbox = Sandbox::Bwrap {
            program: "bwrap".into(),
            hide: vec![absolute(data.path())],
        };
        let (program, args) = sandbox
            .wrap(
                &"node".into(),
                &["bundle".into()],
                &job,
                &[&job],
                &[(&store, &job.join("node_modules"))],
            )
            .unwrap();
        assert_eq!(program, "bwrap");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |needle: &[&str]| {
            args.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from {args:?}"))
        };
        let data = absolute(data.path()).display().to_string();
        let job = absolute(&job).display().to_string();
        let store = absolute(&store).display().to_string();
        let hidden = at(&["--tmpfs", &data]);
        // Mounted back after the mask, or the mask would cover them.
        assert!(at(&["--bind", &job, &job]) > hidden);
        let modules = format!("{job}/node_modules");
        // Read-only over the writable checkout, so after it.
        assert!(at(&["--ro-bind", &store, &modules]) > at(&["--bind", &job, &job]));
        assert!(at(&["--unshare-net"]) < hidden);
        assert_eq!(&args[args.len() - 3..], ["--", "node", "bundle"]);
    }

    /// On a host with working bubblewrap (CI installs it), the build's view really is confined.
    #[test]
    fn bwrap_confines_a_real_process_where_it_runs() {
        let data = tempfile::tempdir().unwrap();
        let secret = data.path().join("secrets/jwt_secret");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, "top secret").unwrap();
        let job = data.path().join("tmp/job");
        std::fs::create_dir_all(&job).unwrap();
        let sandbox = Sandbox::for_mode(SandboxMode::Auto, data.path());
        if let Sandbox::None { reason } = &sandbox {
            assert!(
                !hivesync_core::testkit::services_required(),
                "CI must run builds in the sandbox: {reason}"
            );
            println!("skipped: {reason}");
            return;
        }
        // This test's own process stands for the worker, whose environment holds its secrets.
        let script = format!(
            "cat {} 2>/dev/null && echo LEAKED; cat /proc/{}/environ 2>/dev/null && echo SEEN; \
             ls /proc | grep -c '^[0-9]'; echo written > {}/out",
            secret.display(),
            std::process::id(),
            job.display()
        );
        let (program, args) = sandbox
            .wrap(
                &"sh".into(),
                &["-c".into(), script.into()],
                &job,
                &[&job],
                &[],
            )
            .unwrap();
        let output = Command::new(program).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !stdout.contains("LEAKED"),
            "the secret was readable: {stdout}"
        );
        assert!(
            !stdout.contains("SEEN"),
            "the worker's environment was readable: {stdout}"
        );
        // bwrap's init, sh and the pipeline: nothing from outside.
        let processes: u32 = stdout.trim().parse().unwrap();
        assert!(processes <= 5, "other processes are visible: {processes}");
        assert_eq!(
            std::fs::read_to_string(job.join("out")).unwrap(),
            "written\n"
        );
    }
}
