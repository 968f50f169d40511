//! The dependency store: `DATA_DIR/cache/preview_deps/<key>/node_modules`, one installation per
//! distinct `package.json` + lockfile (+ Node and npm versions), shared by every build that needs
//! it.
//!
//! A build's checkout gets `node_modules` as a symbolic link into the store. That is the fastest
//! restore measured (`../shared/notes/preview-bundling.md`: 0 s against 0.3 s for hard links and
//! 13 s for `npm ci`), and the only one that keeps Metro's cache warm, because Metro keys its cache
//! by real paths and the store's path never changes.
//!
//! On a miss, npm installs into a staging directory beside the store entry — `npm ci` with a
//! lockfile, `npm install --legacy-peer-deps` without, offline-first, with install scripts off
//! (a project's dependencies must not run code on the worker) — and the staging directory is
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

/// The lockfiles npm honours, in its order of preference.
const LOCKFILES: &[&str] = &["npm-shrinkwrap.json", "package-lock.json"];

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
    /// The real path of the `node_modules` the build uses (Metro must watch it).
    pub node_modules: PathBuf,
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

/// The store.
#[derive(Debug)]
pub struct DepsStore {
    root: PathBuf,
    npm: OsString,
    /// Identifies the Node and npm in use; part of every key.
    toolchain: String,
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DepsStore {
    /// A store under `root` using the `npm` program; `toolchain` names the Node and npm versions.
    pub fn new(root: PathBuf, npm: impl Into<OsString>, toolchain: impl Into<String>) -> Self {
        DepsStore {
            root,
            npm: npm.into(),
            toolchain: toolchain.into(),
            turns: Mutex::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key of a checkout's dependencies: its `package.json`, its lockfile and the toolchain.
    pub fn key(&self, project: &Path) -> std::io::Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(b"package.json\0");
        hasher.update(std::fs::read(project.join("package.json"))?);
        for lockfile in LOCKFILES {
            if let Ok(bytes) = std::fs::read(project.join(lockfile)) {
                hasher.update(format!("\0{lockfile}\0").as_bytes());
                hasher.update(bytes);
                break;
            }
        }
        hasher.update(format!("\0toolchain\0{}", self.toolchain).as_bytes());
        Ok(hex(&hasher.finalize()))
    }

    fn turn(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(key.to_owned()).or_default().clone()
    }

    /// Gives the checkout at `project` a `node_modules`, installing into the store on a miss.
    pub async fn restore(
        &self,
        project: &Path,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<Restored, DepsError> {
        let key = self.key(project)?;
        let own = project.join("node_modules");
        if std::fs::symlink_metadata(&own).is_ok_and(|m| m.is_dir()) {
            log.line("dependencies: using the node_modules in the repository");
            return Ok(Restored {
                key,
                source: DepsSource::Repository,
                node_modules: own,
            });
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
            self.install(project, &key, &entry, log, deadline, stop)
                .await?;
            DepsSource::Installed
        };
        // Cleanup removes store entries unused for CACHE_RETENTION_SECONDS: this one is in use.
        std::fs::File::open(&entry)?.set_modified(std::time::SystemTime::now())?;
        if std::fs::symlink_metadata(&own).is_ok() {
            // A file or a link named node_modules in the checkout: ours replaces it.
            std::fs::remove_file(&own)?;
        }
        std::os::unix::fs::symlink(&modules, &own)?;
        Ok(Restored {
            key,
            source,
            node_modules: modules,
        })
    }

    async fn install(
        &self,
        project: &Path,
        key: &str,
        entry: &Path,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), DepsError> {
        std::fs::create_dir_all(&self.root)?;
        let staging = self
            .root
            .join(format!(".staging-{key}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&staging)?;
        let result = self
            .install_into(project, &staging, log, deadline, stop)
            .await;
        match result {
            Ok(()) => match std::fs::rename(&staging, entry) {
                Ok(()) => Ok(()),
                // Another worker process finished the same key first: use theirs.
                Err(_) if entry.join("node_modules").is_dir() => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Ok(())
                }
                Err(err) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Err(err.into())
                }
            },
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(err)
            }
        }
    }

    async fn install_into(
        &self,
        project: &Path,
        staging: &Path,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), DepsError> {
        std::fs::copy(project.join("package.json"), staging.join("package.json"))?;
        let mut lockfile = None;
        for name in LOCKFILES {
            if project.join(name).is_file() {
                std::fs::copy(project.join(name), staging.join(name))?;
                lockfile = Some(*name);
                break;
            }
        }
        let command = if lockfile.is_some() { "ci" } else { "install" };
        let step = Step::new(&self.npm, staging)
            .args([
                command,
                "--prefer-offline",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--legacy-peer-deps",
                "--loglevel=error",
            ])
            .env("CI", "1")
            .env("npm_config_update_notifier", "false");
        let mark = log.mark();
        match step.run(log, deadline, stop).await {
            Ok(()) => Ok(()),
            Err(StepError::Failed(status)) => {
                let tail = log.since(mark, 64 * 1024);
                let reason = tail
                    .lines()
                    .filter(|l| l.contains("npm error") || l.contains("ERR!"))
                    .take(6)
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(DepsError::Missing(format!(
                    "npm {command} failed ({status}): {}",
                    if reason.is_empty() {
                        "see the build log"
                    } else {
                        &reason
                    }
                )))
            }
            Err(StepError::Spawn(err)) => Err(DepsError::Missing(format!(
                "npm could not be started: {err}"
            ))),
            Err(err) => Err(DepsError::Interrupted(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store(root: &Path) -> DepsStore {
        DepsStore::new(root.to_path_buf(), "npm", "node-test")
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
        let other = DepsStore::new(dir.path().join("store"), "npm", "node-other");
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
