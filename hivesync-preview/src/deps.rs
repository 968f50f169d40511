//! The dependency store: `DATA_DIR/cache/preview_deps/<key>/node_modules`, one installation per
//! distinct `package.json` + lockfile (+ Node and npm versions), shared by every build that needs
//! it.
//!
//! A build sees its dependencies as a real `node_modules` directory inside its checkout
//! ([`Restored::place`]), never as a link out of it: Metro names assets and resolves modules by
//! real paths, so a link made asset names carry the store's path
//! (`assets/___cache/preview_deps/<key>/…`) and needed the store in `watchFolders`. Confined by
//! bubblewrap, the store entry is mounted read-only at `<checkout>/node_modules` (no copy, and no
//! build can change what the next one installs); unconfined, the checkout gets a tree of hard links
//! to the store's files, which the next build in the same slot reuses when the key is the same.
//!
//! On a miss, npm installs into a staging directory beside the store entry — `npm ci` with a
//! lockfile, `npm install --legacy-peer-deps` without, offline-first, with install scripts off
//! (a project's dependencies must not run code on the worker) and the network only as far as the
//! registries ([`crate::install_network`]) — and the staging directory is
//! renamed into place only when npm succeeded: a failed or interrupted install leaves nothing a
//! later build could pick up. Builds of one key take turns, so one installs and the others reuse.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::log::BuildLog;
use crate::process::{Step, StepError};

use crate::install_network::{InstallError, InstallNetwork};
use crate::manager::{Manager, Plan, Tools, plan};

/// Where a build's `node_modules` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepsSource {
    /// The store had this key.
    StoreHit,
    /// npm installed it into the store for this build.
    Installed,
    /// The checkout brought its own `node_modules` (spec §7.5: reuse it).
    Repository,
}

/// A restored `node_modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub key: String,
    pub source: DepsSource,
    /// The package manager that installs them (`npm`, `yarn 1.22.22`, `pnpm 10.34.9`).
    pub manager: String,
    /// The lockfile they were installed from; `None` when the project has none, so the newest
    /// versions its `package.json` allows were installed (the build says so).
    pub lockfile: Option<&'static str>,
    /// The real path of the `node_modules` at the install root (the store entry's, or the
    /// checkout's own).
    pub node_modules: PathBuf,
    /// Folders below the install root (`""` first) that have a `node_modules` of their own: the
    /// install root's, and in a workspace the members' that the package manager did not hoist.
    pub dirs: Vec<String>,
}

/// The marker a linked `node_modules` carries: the store key it was linked from.
const LINKED_MARKER: &str = ".hivesync-deps-key";

/// How [`Restored::place`] gave the checkout its `node_modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The checkout brought its own.
    Repository,
    /// Store folders to be mounted read-only by the sandbox, each `(source, target)`; the
    /// targets are empty directories until then.
    Mount { mounts: Vec<(PathBuf, PathBuf)> },
    /// Trees of hard links to the store entry; `reused` when the previous build's tree of the
    /// same key was moved back instead of linking anew.
    Linked { reused: bool },
}

fn under(dir: &Path, relative: &str) -> PathBuf {
    if relative.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(relative)
    }
}

impl Restored {
    /// The store folder (or the checkout's own) that holds the `node_modules` of `dir` (relative
    /// to the install root).
    fn source_of(&self, dir: &str) -> PathBuf {
        let root = self.node_modules.parent().unwrap_or(&self.node_modules);
        under(root, dir).join("node_modules")
    }

    /// The `node_modules` folders that serve `app` (relative to the install root), nearest
    /// first, as real paths outside any sandbox: where to read installed packages.
    pub fn modules_for(&self, app: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if !app.is_empty() && self.dirs.iter().any(|d| d == app) {
            found.push(self.source_of(app));
        }
        found.push(self.node_modules.clone());
        found
    }

    /// The program `name` from `node_modules/.bin` for the app at `app` (relative to the install
    /// root), as the build sees it under `install_root`: the app's own, else the install root's.
    pub fn program(&self, install_root: &Path, app: &str, name: &str) -> PathBuf {
        let own = !app.is_empty()
            && self.dirs.iter().any(|d| d == app)
            && self.source_of(app).join(".bin").join(name).exists();
        under(install_root, if own { app } else { "" })
            .join("node_modules/.bin")
            .join(name)
    }

    /// Makes these dependencies the `node_modules` folders under `install_root` (the checkout's
    /// install root) for the bundler: mount points when the sandbox can mount (`mount`),
    /// otherwise hard links, reusing `previous` (the last build's tree in the same slot) when it
    /// was linked from the same key.
    pub fn place(
        &self,
        install_root: &Path,
        previous: Option<&Path>,
        mount: bool,
    ) -> std::io::Result<Placement> {
        if self.source == DepsSource::Repository {
            return Ok(Placement::Repository);
        }
        let targets: Vec<(PathBuf, PathBuf)> = self
            .dirs
            .iter()
            .map(|dir| {
                (
                    self.source_of(dir),
                    under(install_root, dir).join("node_modules"),
                )
            })
            .collect();
        for (_, target) in &targets {
            if std::fs::symlink_metadata(target).is_ok() {
                // Only a repository's own node_modules is kept (above); anything else by that
                // name in the checkout is replaced.
                remove_any(target)?;
            }
        }
        if mount {
            for (_, target) in &targets {
                std::fs::create_dir_all(target)?;
            }
            return Ok(Placement::Mount { mounts: targets });
        }
        let single = self.dirs.len() == 1;
        if single
            && let Some(previous) = previous
            && std::fs::read_to_string(previous.join(LINKED_MARKER))
                .ok()
                .as_deref()
                == Some(self.key.as_str())
        {
            std::fs::rename(previous, &targets[0].1)?;
            return Ok(Placement::Linked { reused: true });
        }
        for (source, target) in &targets {
            let staging = target.with_file_name(".node_modules.linking");
            let _ = std::fs::remove_dir_all(&staging);
            link_tree(source, &staging)?;
            std::fs::write(staging.join(LINKED_MARKER), &self.key)?;
            std::fs::rename(&staging, target)?;
        }
        Ok(Placement::Linked { reused: false })
    }
}

/// A staging directory this process works in, `<root>/.staging-<name>`, with a lock file beside
/// it (`.staging-<name>.lock`) that the process holds until it is done. A process that dies, even
/// by SIGKILL, lets go of the lock: that is how a later install tells a directory left behind by
/// a dead one from one a live process (perhaps another worker on this `DATA_DIR`) is filling.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: std::fs::File,
}

impl Staging {
    /// Removes what dead processes left in `root`, then makes a new staging directory there.
    pub(crate) fn create(root: &Path, name: &str) -> std::io::Result<Staging> {
        remove_abandoned_staging(root);
        let dir = root.join(format!(".staging-{name}"));
        let lock_path = root.join(format!(".staging-{name}.lock"));
        let lock = std::fs::File::create(&lock_path)?;
        lock.try_lock().map_err(std::io::Error::other)?;
        std::fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Staging directories left in `root` by processes that died: their lock is free (or, from a
/// version before the locks, they have not changed for an hour).
fn remove_abandoned_staging(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(".staging-")) else {
            continue;
        };
        let path = entry.path();
        if let Some(dir) = name.strip_suffix(".lock") {
            let free = std::fs::File::open(&path).is_ok_and(|lock| lock.try_lock().is_ok());
            if free {
                let _ = std::fs::remove_dir_all(root.join(dir));
                let _ = std::fs::remove_file(&path);
            }
        } else if !root.join(format!("{name}.lock")).exists()
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().unwrap_or_default() > LEGACY_STAGING_AGE)
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// How long a staging directory without a lock file (made before they had one) may sit unchanged
/// before it counts as abandoned.
const LEGACY_STAGING_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Renames a finished `staging` directory (`finished`) to `dest`, keeping the one another process
/// published first (`ready(dest)`); `staging` is gone afterwards either way, so a failed or
/// interrupted install leaves nothing a later build could pick up.
pub(crate) fn publish(
    staging: &Path,
    dest: &Path,
    finished: bool,
    ready: impl Fn(&Path) -> bool,
) -> std::io::Result<()> {
    let renamed = if finished {
        match std::fs::rename(staging, dest) {
            Ok(()) => Ok(()),
            Err(_) if ready(dest) => Ok(()),
            Err(err) => Err(err),
        }
    } else {
        Ok(())
    };
    let _ = std::fs::remove_dir_all(staging);
    renamed
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Recreates the tree `from` at `to`: directories made, files hard-linked, links copied as links.
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(from.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                std::fs::create_dir(to.join(&path))?;
                pending.push(path);
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, to.join(&path))?;
            } else if kind.is_file() {
                std::fs::hard_link(entry.path(), to.join(&path))?;
            }
        }
    }
    Ok(())
}

/// Why dependencies could not be restored.
#[derive(Debug)]
pub enum DepsError {
    /// npm could not install them (`MISSING_DEPENDENCIES`); the message quotes npm.
    Missing(String),
    /// The build's deadline passed or it was stopped while npm ran.
    Interrupted(StepError),
    Io(std::io::Error),
}

impl std::fmt::Display for DepsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DepsError::Missing(why) => f.write_str(why),
            DepsError::Interrupted(err) => write!(f, "dependency install {err}"),
            DepsError::Io(err) => write!(f, "dependency store: {err}"),
        }
    }
}

impl From<std::io::Error> for DepsError {
    fn from(err: std::io::Error) -> Self {
        DepsError::Io(err)
    }
}

/// One install: where, which workspace members, under which key, with which tool.
#[derive(Clone, Copy)]
struct Install<'a> {
    project: &'a Path,
    members: &'a [String],
    key: &'a str,
    plan: &'a Plan,
}

/// The store.
#[derive(Debug)]
pub struct DepsStore {
    root: PathBuf,
    /// Identifies the Node and npm in use; part of every key.
    toolchain: String,
    /// yarn and pnpm, when a lockfile asks for them.
    tools: Tools,
    /// What installs may reach.
    network: InstallNetwork,
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DepsStore {
    /// A store under `root` using the `npm` program; `toolchain` names the Node and npm versions;
    /// installs reach only what `network` allows.
    pub fn new(
        root: PathBuf,
        npm: impl Into<OsString>,
        toolchain: impl Into<String>,
        network: InstallNetwork,
    ) -> Self {
        DepsStore {
            tools: Tools::new(root.with_file_name("preview_tools"), npm),
            root,
            toolchain: toolchain.into(),
            network,
            turns: Mutex::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key of a checkout's dependencies: its `package.json`, its lockfile (and which kind),
    /// the package manager that installs it and the toolchain.
    pub fn key(&self, project: &Path) -> Result<String, DepsError> {
        self.plan(project, &[]).map(|(key, _)| key)
    }

    /// The plan and key of the install at `project`, with workspace `members` (relative folders)
    /// whose manifests are part of it.
    fn plan(&self, project: &Path, members: &[String]) -> Result<(String, Plan), DepsError> {
        let package = std::fs::read(project.join("package.json"))?;
        let json: serde_json::Value = serde_json::from_slice(&package)
            .map_err(|err| DepsError::Missing(format!("package.json is not valid JSON: {err}")))?;
        let plan = plan(project, &json).map_err(DepsError::Missing)?;
        let mut hasher = Sha256::new();
        hasher.update(b"package.json\0");
        hasher.update(&package);
        if let Some(lockfile) = plan.lockfile {
            hasher.update(format!("\0{lockfile}\0").as_bytes());
            hasher.update(std::fs::read(project.join(lockfile))?);
        }
        for member in members {
            hasher.update(format!("\0member\0{member}\0").as_bytes());
            hasher.update(std::fs::read(project.join(member).join("package.json"))?);
        }
        hasher.update(format!("\0manager\0{}", plan.manager.describe()).as_bytes());
        hasher.update(format!("\0toolchain\0{}", self.toolchain).as_bytes());
        Ok((hex::encode(hasher.finalize()), plan))
    }

    fn turn(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(key.to_owned()).or_default().clone()
    }

    /// Finds (or, on a miss, installs) the store entry for the checkout at `project`; the
    /// checkout itself is left as it is until [`Restored::place`].
    pub async fn restore(
        &self,
        project: &Path,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<Restored, DepsError> {
        self.restore_workspace(project, &[], log, deadline, stop)
            .await
    }

    /// Like [`DepsStore::restore`], for a workspace at `project` with `members` (relative
    /// folders): one install at the root, where the workspace's own packages are linked.
    pub async fn restore_workspace(
        &self,
        project: &Path,
        members: &[String],
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<Restored, DepsError> {
        let (key, plan) = self.plan(project, members)?;
        let manager = plan.manager.describe();
        let own = project.join("node_modules");
        // An empty directory is no installation: it is what a mount point leaves behind when a
        // checkout is built twice.
        let brought = std::fs::symlink_metadata(&own).is_ok_and(|m| m.is_dir())
            && std::fs::read_dir(&own).is_ok_and(|mut entries| entries.next().is_some());
        if brought {
            log.line("dependencies: using the node_modules in the repository");
            return Ok(Restored {
                key,
                source: DepsSource::Repository,
                manager,
                lockfile: plan.lockfile,
                node_modules: own,
                dirs: vec![String::new()],
            });
        }
        match plan.lockfile {
            Some(lockfile) => log.line(format_args!(
                "dependencies: {lockfile}, installed with {manager}"
            )),
            None => log.line(format_args!(
                "dependencies: WARNING: no lockfile, so {manager} installs the newest versions \
                 package.json allows, which may not be what the developer runs"
            )),
        }
        let entry = self.root.join(&key);
        let modules = entry.join("node_modules");
        let turn = self.turn(&key);
        let _turn = turn.lock().await;
        let source = if modules.is_dir() {
            log.line(format_args!("dependencies: store hit {key}"));
            DepsSource::StoreHit
        } else {
            log.line(format_args!("dependencies: store miss {key}, installing"));
            let what = Install {
                project,
                members,
                key: &key,
                plan: &plan,
            };
            self.install(&what, &entry, log, deadline, stop).await?;
            DepsSource::Installed
        };
        // Cleanup removes store entries unused for CACHE_RETENTION_SECONDS: this one is in use.
        std::fs::File::open(&entry)?.set_modified(std::time::SystemTime::now())?;
        Ok(Restored {
            key,
            source,
            manager,
            lockfile: plan.lockfile,
            node_modules: modules,
            dirs: std::iter::once(String::new())
                .chain(
                    members
                        .iter()
                        .filter(|m| entry.join(m).join("node_modules").is_dir())
                        .cloned(),
                )
                .collect(),
        })
    }

    async fn install(
        &self,
        what: &Install<'_>,
        entry: &Path,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), DepsError> {
        std::fs::create_dir_all(&self.root)?;
        let staging = Staging::create(
            &self.root,
            &format!("{}-{}", what.key, uuid::Uuid::new_v4().simple()),
        )?;
        let result = self
            .install_into(what, staging.path(), log, deadline, stop)
            .await;
        // Another worker process may have finished the same key first: theirs is kept.
        publish(staging.path(), entry, result.is_ok(), |entry| {
            entry.join("node_modules").is_dir()
        })?;
        result
    }

    async fn install_into(
        &self,
        what: &Install<'_>,
        staging: &Path,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), DepsError> {
        let Install {
            project,
            members,
            plan,
            ..
        } = *what;
        // Only the manifest and the lockfile: a project's .npmrc, .yarnrc.yml (whose yarnPath
        // would run a release the project ships) or pnpm settings never reach the install.
        std::fs::copy(project.join("package.json"), staging.join("package.json"))?;
        if let Some(lockfile) = plan.lockfile {
            std::fs::copy(project.join(lockfile), staging.join(lockfile))?;
        }
        // A workspace's members take part with their manifests only (their sources are linked
        // from the checkout at build time); pnpm learns them from a workspace file of just them.
        for member in members {
            std::fs::create_dir_all(staging.join(member))?;
            std::fs::copy(
                project.join(member).join("package.json"),
                staging.join(member).join("package.json"),
            )?;
        }
        if !members.is_empty() && project.join("pnpm-workspace.yaml").is_file() {
            let list: String = members.iter().map(|m| format!("  - '{m}'\n")).collect();
            std::fs::write(
                staging.join("pnpm-workspace.yaml"),
                format!("packages:\n{list}"),
            )?;
        }
        let program = self
            .tools
            .program(&plan.manager, &self.network, log, deadline, stop)
            .await
            .map_err(|err| match err {
                crate::manager::ToolError::Failed(why) => DepsError::Missing(why),
                crate::manager::ToolError::Interrupted(step) => DepsError::Interrupted(step),
                crate::manager::ToolError::Io(err) => DepsError::Io(err),
            })?;
        let locked = plan.lockfile.is_some();
        let step = Step::new(&program, staging)
            .env("CI", "1")
            .env("npm_config_update_notifier", "false");
        let (command, step) = match &plan.manager {
            Manager::Npm => {
                let command = if locked { "ci" } else { "install" };
                (
                    format!("npm {command}"),
                    step.args([
                        command,
                        "--prefer-offline",
                        "--no-audit",
                        "--no-fund",
                        "--ignore-scripts",
                        "--legacy-peer-deps",
                        "--loglevel=error",
                    ]),
                )
            }
            Manager::YarnClassic(_) => (
                "yarn install".to_owned(),
                step.args([
                    "install",
                    if locked {
                        "--frozen-lockfile"
                    } else {
                        "--no-lockfile"
                    },
                    "--ignore-scripts",
                    // React Native's engines ask for newer Node than many hosts have; npm only
                    // warns about it, yarn refuses.
                    "--ignore-engines",
                    "--non-interactive",
                    "--prefer-offline",
                    "--no-progress",
                ])
                .env("YARN_CACHE_FOLDER", self.tools.cache("yarn-classic")?),
            ),
            Manager::YarnBerry(_) => (
                "yarn install".to_owned(),
                step.arg("install")
                    .args(locked.then_some("--immutable"))
                    .env("YARN_ENABLE_SCRIPTS", "0")
                    .env("YARN_NODE_LINKER", "node-modules")
                    .env("YARN_ENABLE_TELEMETRY", "0")
                    .env("YARN_ENABLE_GLOBAL_CACHE", "1")
                    .env("YARN_GLOBAL_FOLDER", self.tools.cache("yarn-berry")?)
                    .env("YARN_ENABLE_PROGRESS_BARS", "0"),
            ),
            Manager::Pnpm(_) => (
                "pnpm install".to_owned(),
                step.args([
                    "install",
                    if locked {
                        "--frozen-lockfile"
                    } else {
                        "--no-frozen-lockfile"
                    },
                    "--ignore-scripts",
                    // Metro resolves a flat node_modules, not pnpm's isolated one.
                    "--config.node-linker=hoisted",
                    "--prefer-offline",
                    "--reporter=append-only",
                ])
                .arg("--store-dir")
                .arg(self.tools.cache("pnpm-store")?),
            ),
        };
        let mark = log.mark();
        let tools = self.tools.root();
        match self.network.run(step, &[tools], log, deadline, stop).await {
            Ok(()) => Ok(()),
            Err(InstallError::Refused(targets)) => {
                Err(DepsError::Missing(self.network.refusal(&command, &targets)))
            }
            Err(InstallError::Step(StepError::Failed(status))) => {
                let tail = log.since(mark, 64 * 1024);
                let reason = tail
                    .lines()
                    .filter(|l| {
                        l.contains("npm error")
                            || l.contains("ERR!")
                            || l.starts_with("error")
                            || l.contains("ERR_PNPM")
                            || l.contains("YN0") && (l.contains("Error") || l.contains("error"))
                    })
                    // npm's "a complete log of this run can be found in: <path>" says nothing
                    // a user can act on.
                    .filter(|l| !l.contains("A complete log of this run"))
                    .take(6)
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(DepsError::Missing(format!(
                    "{command} failed ({status}): {}",
                    if reason.is_empty() {
                        "see the build log"
                    } else {
                        &reason
                    }
                )))
            }
            Err(InstallError::Step(StepError::Spawn(err))) => Err(DepsError::Missing(format!(
                "{command} could not be started: {err}"
            ))),
            Err(InstallError::Step(err)) => Err(DepsError::Interrupted(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn staging_left_by_a_dead_process_is_removed_and_a_live_one_kept() {
        let root = tempfile::tempdir().unwrap();
        // What a killed install leaves: its directory and its lock file, no one holding it.
        let dead = root.path().join(".staging-abc-1");
        std::fs::create_dir_all(dead.join("node_modules/x")).unwrap();
        std::fs::write(root.path().join(".staging-abc-1.lock"), "").unwrap();
        // An install still running (in this process, as another worker would be).
        let live = Staging::create(root.path(), "abc-2").unwrap();
        std::fs::write(live.path().join("package.json"), "{}").unwrap();
        assert!(!dead.exists(), "the dead install's directory was kept");
        assert!(!root.path().join(".staging-abc-1.lock").exists());

        let next = Staging::create(root.path(), "abc-3").unwrap();
        assert!(
            live.path().join("package.json").exists(),
            "a live install was removed"
        );
        let (live_path, next_path) = (live.path().to_owned(), next.path().to_owned());
        drop(live);
        drop(next);
        for gone in [live_path, next_path] {
            assert!(!gone.exists());
            assert!(
                !gone
                    .with_file_name(format!(
                        "{}.lock",
                        gone.file_name().unwrap().to_str().unwrap()
                    ))
                    .exists()
            );
        }
    }

    fn store(root: &Path) -> DepsStore {
        DepsStore::new(
            root.to_path_buf(),
            "npm",
            "node-test",
            InstallNetwork::registries_only(root),
        )
    }

    #[test]
    fn keys_follow_package_json_lockfile_and_toolchain_only() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path();
        std::fs::write(
            project.join("package.json"),
            r#"{"dependencies": {"a": "1"}}"#,
        )
        .unwrap();
        std::fs::write(project.join("index.js"), "1").unwrap();
        let store = store(&dir.path().join("store"));
        let base = store.key(project).unwrap();
        std::fs::write(project.join("index.js"), "2").unwrap();
        assert_eq!(store.key(project).unwrap(), base, "sources do not matter");
        std::fs::write(project.join("package-lock.json"), "{}").unwrap();
        let locked = store.key(project).unwrap();
        assert_ne!(locked, base);
        std::fs::write(
            project.join("package.json"),
            r#"{"dependencies": {"a": "2"}}"#,
        )
        .unwrap();
        assert_ne!(store.key(project).unwrap(), locked);
        let other = DepsStore::new(
            dir.path().join("store"),
            "npm",
            "node-other",
            InstallNetwork::registries_only(dir.path()),
        );
        assert_ne!(other.key(project).unwrap(), store.key(project).unwrap());
    }

    #[tokio::test]
    async fn a_failed_install_is_missing_dependencies_and_leaves_nothing_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        // A version that exists nowhere.
        std::fs::write(
            project.join("package.json"),
            r#"{"name": "x", "version": "1.0.0", "dependencies": {"left-pad": "999.999.999"}}"#,
        )
        .unwrap();
        let root = dir.path().join("store");
        let store = store(&root);
        let log = BuildLog::create(&dir.path().join("build.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        let err = store
            .restore(&project, &log, deadline, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, DepsError::Missing(_)), "{err}");
        assert!(err.to_string().contains("npm install failed"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!project.join("node_modules").exists());
    }
}
