//! The cleanup worker's job (spec §7.15): expired preview bundles, stale temp directories,
//! orphaned preview objects, log rotation, unused caches.
//!
//! Safety first. Cleanup only ever deletes
//! - direct children of `DATA_DIR/tmp` and `DATA_DIR/previews`,
//! - entries one level inside each `DATA_DIR/cache/<cache>/`,
//! - rotated log files directly in `DATA_DIR/logs`,
//! - objects under the `previews/` prefix of the object store;
//!
//! it never follows a symbolic link (a link is removed as a link; a directory is removed without
//! descending through links), never touches `DATA_DIR/repos` or `DATA_DIR/objects`, and keeps the
//! temp directory of a job that is still running however old it is. Every run first makes a
//! [`CleanupPlan`], which `--dry-run` prints instead of applying.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hivesync_core::clock::SharedClock;
use hivesync_core::config::{CleanupConfig, DataSubdir};
use hivesync_core::domain::{JobId, JobState};
use hivesync_core::ports::{ObjectKey, ObjectStore, Queue, Store};
use hivesync_core::preview_files::{OBJECT_PREFIX, PreviewFiles};
use hivesync_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::jobs::{JobKind, Submission};
use crate::worker::{JobContext, JobError, TypedHandler};

/// The kind of the periodic cleanup job.
pub const CLEANUP_JOB_KIND: &str = "cleanup";
/// Preview objects younger than this are never called orphans: their record may be in flight.
const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// One thing cleanup would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CleanupAction {
    /// Remove a file, a directory tree, or a symbolic link (never its target).
    Remove {
        path: PathBuf,
        bytes: u64,
        reason: String,
    },
    /// Rename a large log file out of the way.
    Rotate {
        path: PathBuf,
        to: PathBuf,
        bytes: u64,
    },
    /// Delete an object from the object store.
    DeleteObject {
        key: String,
        bytes: u64,
        reason: String,
    },
}

/// Everything one cleanup run would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupPlan {
    pub actions: Vec<CleanupAction>,
}

impl CleanupPlan {
    /// Bytes the plan frees (rotations free nothing).
    pub fn bytes(&self) -> u64 {
        self.actions
            .iter()
            .map(|a| match a {
                CleanupAction::Remove { bytes, .. } | CleanupAction::DeleteObject { bytes, .. } => {
                    *bytes
                }
                CleanupAction::Rotate { .. } => 0,
            })
            .sum()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub removed: u64,
    pub rotated: u64,
    pub objects_deleted: u64,
    pub bytes_freed: u64,
    /// Actions that failed (logged); the next run tries again.
    pub failures: u64,
}

/// Plans and applies cleanups of one `DATA_DIR` and object store.
#[derive(Clone)]
pub struct Cleaner {
    data_dir: PathBuf,
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn Store>,
    policy: CleanupConfig,
    clock: SharedClock,
}

impl std::fmt::Debug for Cleaner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleaner")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Cleaner {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        objects: Arc<dyn ObjectStore>,
        store: Arc<dyn Store>,
        policy: CleanupConfig,
        clock: SharedClock,
    ) -> Self {
        Cleaner {
            data_dir: data_dir.into(),
            objects,
            store,
            policy,
            clock,
        }
    }

    /// Works out what a run would do, changing nothing.
    pub async fn plan(&self) -> Result<CleanupPlan> {
        let now = self.clock.now();
        let mut plan = CleanupPlan::default();
        for entry in children_of_root(self.root(DataSubdir::Tmp))? {
            if entry.age(now) < self.policy.tmp_retention {
                continue;
            }
            if let Some(job) = PreviewFiles::job_of_work_dir(&entry.path)
                && self.job_is_running(job).await?
            {
                continue;
            }
            plan.actions.push(entry.remove(format!(
                "temp entry older than {}",
                human(self.policy.tmp_retention)
            )));
        }
        for entry in children_of_root(self.root(DataSubdir::Previews))? {
            if entry.age(now) >= self.policy.preview_retention {
                plan.actions.push(entry.remove(format!(
                    "preview bundle older than {}",
                    human(self.policy.preview_retention)
                )));
            }
        }
        for cache in children_of_root(self.root(DataSubdir::Cache))? {
            if !cache.is_dir {
                continue;
            }
            for entry in children(&cache.path)? {
                if entry.age(now) >= self.policy.cache_retention {
                    plan.actions.push(entry.remove(format!(
                        "cache entry unused for {}",
                        human(self.policy.cache_retention)
                    )));
                }
            }
        }
        self.plan_logs(now, &mut plan)?;
        self.plan_objects(now, &mut plan).await?;
        Ok(plan)
    }

    /// Carries out `plan`. Each path is checked again just before it is removed: it must still
    /// be where cleanup may delete, and it is removed as what it is now (a link stays a link).
    pub async fn apply(&self, plan: &CleanupPlan) -> Result<CleanupReport> {
        let mut report = CleanupReport::default();
        for action in &plan.actions {
            let outcome = match action {
                CleanupAction::Remove { path, bytes, .. } => self.remove(path).map(|()| {
                    report.removed += 1;
                    report.bytes_freed += bytes;
                }),
                CleanupAction::Rotate { path, to, .. } => {
                    self.rotate(path, to).map(|()| report.rotated += 1)
                }
                CleanupAction::DeleteObject { key, bytes, .. } => {
                    let deleted = match ObjectKey::new(key.clone()) {
                        Ok(key) if key.as_str().starts_with(OBJECT_PREFIX) => {
                            self.objects.delete(&key).await
                        }
                        _ => Err(Error::internal(
                            "refusing to delete an object outside previews/",
                        )),
                    };
                    deleted.map(|()| {
                        report.objects_deleted += 1;
                        report.bytes_freed += bytes;
                    })
                }
            };
            if let Err(err) = outcome {
                report.failures += 1;
                tracing::warn!(error = %err, ?action, "cleanup action failed");
            }
        }
        Ok(report)
    }

    /// Plans, logs the plan, and applies it unless `dry_run`.
    pub async fn run(&self, dry_run: bool) -> Result<(CleanupPlan, CleanupReport)> {
        let plan = self.plan().await?;
        for action in &plan.actions {
            tracing::info!(?action, dry_run, "cleanup");
        }
        let report = if dry_run {
            CleanupReport::default()
        } else {
            self.apply(&plan).await?
        };
        Ok((plan, report))
    }

    /// `DATA_DIR/<sub>`, resolved — but only when it is a real directory directly inside
    /// `DATA_DIR`. A root that is a link (`tmp -> /var/tmp`, `tmp -> ../repos`) would lead
    /// cleanup outside its directories, so it is refused and left alone.
    fn root(&self, sub: DataSubdir) -> Option<PathBuf> {
        let path = self.data_dir.join(sub.as_str());
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_dir() {
            if meta.file_type().is_symlink() {
                tracing::warn!(path = %path.display(), "refusing to clean a directory that is a link");
            }
            return None;
        }
        let resolved = std::fs::canonicalize(&path).ok()?;
        let data_dir = std::fs::canonicalize(&self.data_dir).ok()?;
        (resolved.parent() == Some(data_dir.as_path())).then_some(resolved)
    }

    /// The directories whose contents cleanup may delete.
    fn allowed_roots(&self) -> Vec<PathBuf> {
        [
            DataSubdir::Tmp,
            DataSubdir::Previews,
            DataSubdir::Logs,
            DataSubdir::Cache,
        ]
        .into_iter()
        .filter_map(|sub| self.root(sub))
        .collect()
    }

    /// Whether `path` sits strictly inside one of the allowed roots, judged on its resolved
    /// parent (so `..` or a linked parent cannot lead elsewhere) — the path itself is not
    /// resolved, since it may be a link that is to be removed as a link.
    fn may_delete(&self, path: &Path) -> bool {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        if name == ".." || name == "." {
            return false;
        }
        let Ok(parent) = std::fs::canonicalize(parent) else {
            return false;
        };
        let roots = self.allowed_roots();
        roots.iter().any(|root| {
            parent == *root
                // One level inside `cache/<cache>/`.
                || (root.ends_with(DataSubdir::Cache.as_str()) && parent.parent() == Some(root.as_path()))
        })
    }

    fn remove(&self, path: &Path) -> Result<()> {
        if !self.may_delete(path) {
            return Err(Error::internal(
                "refusing to remove a path outside the cleanable directories",
            )
            .with_context("path", path.display()));
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        // `remove_dir_all` does not follow links inside the tree; a link itself is unlinked.
        if meta.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    fn rotate(&self, from: &Path, to: &Path) -> Result<()> {
        if !self.may_delete(from) || !self.may_delete(to) {
            return Err(Error::internal("refusing to rotate outside DATA_DIR/logs"));
        }
        std::fs::rename(from, to)?;
        Ok(())
    }

    fn plan_logs(&self, now: DateTime<Utc>, plan: &mut CleanupPlan) -> Result<()> {
        let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
        for entry in children_of_root(self.root(DataSubdir::Logs))? {
            if !entry.is_file {
                continue;
            }
            let name = entry
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if is_rotated_log(name) {
                if entry.age(now) >= self.policy.log_retention {
                    plan.actions.push(entry.remove(format!(
                        "rotated log older than {}",
                        human(self.policy.log_retention)
                    )));
                }
            } else if name.ends_with(".log") && entry.bytes > self.policy.log_rotate_bytes {
                let to = entry.path.with_file_name(format!("{name}.{stamp}"));
                plan.actions.push(CleanupAction::Rotate {
                    path: entry.path.clone(),
                    to,
                    bytes: entry.bytes,
                });
            }
        }
        Ok(())
    }

    async fn plan_objects(&self, now: DateTime<Utc>, plan: &mut CleanupPlan) -> Result<()> {
        for object in self.objects.list(OBJECT_PREFIX).await? {
            let age = now
                .signed_duration_since(object.last_modified)
                .to_std()
                .unwrap_or_default();
            let reason = if age >= self.policy.preview_object_retention {
                Some(format!(
                    "preview object older than {}",
                    human(self.policy.preview_object_retention)
                ))
            } else if age >= ORPHAN_GRACE && self.is_orphan(object.key.as_str()).await? {
                Some("preview object whose job is gone or did not succeed".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                plan.actions.push(CleanupAction::DeleteObject {
                    key: object.key.to_string(),
                    bytes: object.size,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// A preview object (`previews/<project>/<job>/...`) whose job has no record, or a record
    /// that did not succeed.
    async fn is_orphan(&self, key: &str) -> Result<bool> {
        let Some(job) = PreviewFiles::job_of_object(key) else {
            return Ok(false);
        };
        Ok(match self.store.get_job(job).await? {
            None => true,
            Some(record) => record.state.is_terminal() && record.state != JobState::Success,
        })
    }

    async fn job_is_running(&self, job: JobId) -> Result<bool> {
        Ok(self
            .store
            .get_job(job)
            .await?
            .is_some_and(|record| !record.state.is_terminal()))
    }
}

/// `name.log.<stamp>`: a log that rotation already moved aside.
fn is_rotated_log(name: &str) -> bool {
    name.rsplit_once(".log.").is_some_and(|(_, stamp)| {
        !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{} d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{secs} s")
    }
}

/// One directory entry, described without following links.
struct Entry {
    path: PathBuf,
    is_dir: bool,
    is_file: bool,
    modified: SystemTime,
    bytes: u64,
}

impl Entry {
    fn age(&self, now: DateTime<Utc>) -> Duration {
        now.signed_duration_since(DateTime::<Utc>::from(self.modified))
            .to_std()
            .unwrap_or_default()
    }

    fn remove(&self, reason: String) -> CleanupAction {
        CleanupAction::Remove {
            path: self.path.clone(),
            bytes: self.bytes,
            reason,
        }
    }
}

/// The entries of a cleanable root; none when the root is missing or refused.
fn children_of_root(root: Option<PathBuf>) -> Result<Vec<Entry>> {
    match root {
        Some(root) => children(&root),
        None => Ok(Vec::new()),
    }
}

/// The entries directly inside `dir` (none if it does not exist), with sizes of directory trees
/// counted without following links. Entries that vanish while being read (a build tidying up its
/// own temp files) are skipped.
fn children(dir: &Path) -> Result<Vec<Entry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry?;
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        let bytes = if meta.is_dir() {
            tree_size(&entry.path())
        } else {
            meta.len()
        };
        entries.push(Entry {
            path: entry.path(),
            is_dir: meta.is_dir(),
            is_file: meta.is_file(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            bytes,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.filter_map(|e| e.ok())
        .filter_map(|e| {
            std::fs::symlink_metadata(e.path())
                .ok()
                .map(|m| (e.path(), m))
        })
        .map(|(path, meta)| {
            if meta.is_dir() {
                tree_size(&path)
            } else {
                meta.len()
            }
        })
        .sum()
}

/// A `cleanup` job: one run of the cleaner over this worker's `DATA_DIR` and the object store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupJob {
    /// Plan and report without deleting anything.
    #[serde(default)]
    pub dry_run: bool,
}

impl JobKind for CleanupJob {
    const KIND: &'static str = CLEANUP_JOB_KIND;
    const QUEUE: Queue = Queue::Cleanup;
    type Output = CleanupReport;
}

/// Runs [`CleanupJob`]s.
#[derive(Debug, Clone)]
pub struct CleanupHandler {
    pub cleaner: Cleaner,
}

#[async_trait]
impl TypedHandler<CleanupJob> for CleanupHandler {
    async fn handle(&self, job: CleanupJob, _ctx: &JobContext) -> Result<CleanupReport, JobError> {
        let cleaner = self.cleaner.clone();
        let (plan, report) = cleaner.run(job.dry_run).await.map_err(JobError::from)?;
        tracing::info!(?report, planned = plan.actions.len(), "cleanup finished");
        Ok(report)
    }
}

/// Submits a cleanup job every `interval` (deduplicated, so any number of schedulers enqueue one
/// at a time), until `shutdown` fires.
pub async fn schedule(
    store: Arc<dyn Store>,
    queue: Arc<dyn hivesync_core::ports::JobQueue>,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let periodic = match Submission::of(&CleanupJob::default()) {
        Ok(submission) => submission.with_dedup_key("periodic"),
        Err(err) => {
            tracing::error!(error = %err, "cannot schedule cleanups");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(err) = crate::jobs::submit(&*store, &*queue, periodic.clone()).await {
            tracing::warn!(error = %err, "cannot schedule a cleanup");
        }
    }
}
