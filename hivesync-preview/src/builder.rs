//! The `preview_build` job: checkout → dependencies → bundler → package → upload (spec §7.3),
//! with the spec's states and progress points, one deadline for the whole build
//! (`PREVIEW_MAX_TIMEOUT_MS`), and every step in `build.log`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use hivesync_core::domain::{JobId, JobState, ProjectId};
use hivesync_core::ports::{ByteStream, ObjectKey, ObjectStore, ObjectStoreExt};
use hivesync_core::preview_files::PreviewFiles;
use hivesync_core::repo::Repos;
use hivesync_core::{ApiErrorCode, ErrorKind};
use hivesync_queue::worker::{JobContext, JobError, TypedHandler};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::bundler::{BundleError, BundleJob};
use crate::deps::{DepsError, DepsSource, DepsStore};
use crate::detect::{DetectError, detect};
use crate::job::{BuildCache, CacheReport, PreviewBuilt, PreviewRequest};
use crate::log::BuildLog;
use crate::package::{CacheHits, Metadata, package, sha256_file};
use crate::process::StepError;
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::slot::BuildSlot;
use crate::workspace;

/// How many times an upload is tried (spec §7.8).
const UPLOAD_ATTEMPTS: u32 = 3;
/// The longest a copy of the build log may wait for the object store.
const LOG_PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a running build's log is copied to the object store (when it grew).
const LIVE_LOG_EVERY: Duration = Duration::from_secs(2);

/// Builds previews.
#[derive(Clone)]
pub struct PreviewBuilder {
    pub repos: Arc<Repos>,
    pub deps: Arc<DepsStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub data_dir: PathBuf,
    /// The build's time limit, not counting its dependency install (`PREVIEW_MAX_TIMEOUT_MS`).
    pub timeout: Duration,
    /// The dependency install's own limit (`PREVIEW_INSTALL_TIMEOUT_MS`): an install fills the
    /// store later builds reuse, so a slow first one is not cut short by the bundler's deadline.
    pub install_timeout: Duration,
    /// `PREVIEW_BUILDER_CONCURRENCY` builds at once in this worker.
    pub slots: Arc<Semaphore>,
    /// How the bundler is confined (`PREVIEW_SANDBOX`).
    pub sandbox: Arc<Sandbox>,
    /// `PREVIEW_OPTIMIZE`.
    pub optimize: bool,
}

impl std::fmt::Debug for PreviewBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewBuilder")
            .field("objects", &self.objects.name())
            .field("data_dir", &self.data_dir)
            .field("timeout", &self.timeout)
            .field("install_timeout", &self.install_timeout)
            .finish_non_exhaustive()
    }
}

fn permanent(code: ApiErrorCode, message: impl Into<String>) -> JobError {
    JobError::permanent(code, message)
}

fn internal(what: &str, err: impl std::fmt::Display) -> JobError {
    JobError::retryable(ApiErrorCode::InternalError, format!("{what}: {err}"))
}

/// A step's end that was not its own: out of time (`timed_out` says which limit ran out) or asked
/// to stop.
fn interrupted(
    err: StepError,
    timed_out: &str,
    log: &BuildLog,
    files: &PreviewFiles,
    job: JobId,
) -> JobError {
    match err {
        StepError::TimedOut => {
            log.line(format_args!("{timed_out}; its processes were killed"));
            // Spec §7.10: the timeout is written into the job's metadata.
            let _ = std::fs::create_dir_all(files.kept_dir(job));
            let _ = std::fs::write(
                files.kept_metadata(job),
                serde_json::to_vec_pretty(&serde_json::json!({"job_id": job, "timeout": true}))
                    .unwrap_or_default(),
            );
            permanent(ApiErrorCode::PreviewTimeout, timed_out)
        }
        StepError::Stopped => JobError::Stopped,
        other => internal("a build step failed", other),
    }
}

/// The files whose content changes what Metro produces but is not in Metro's own cache key.
const CONFIG_FILES: &[&str] = &[
    "babel.config.js",
    "babel.config.cjs",
    ".babelrc",
    ".babelrc.js",
    "metro.config.js",
    "metro.config.cjs",
    "app.json",
    "app.config.js",
    "app.config.ts",
];

/// The Metro cache directory of a build: per project, keyed by the configuration files, the
/// build environment, the dependencies and the checkout's path (transforms can bake it in: see
/// [`crate::slot`]).
fn metro_cache_key(
    project_dir: &Path,
    app_dir: &Path,
    request: &PreviewRequest,
    deps_key: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request.project_id.to_string().as_bytes());
    hasher.update(b"\0checkout\0");
    hasher.update(project_dir.as_os_str().as_encoded_bytes());
    hasher.update(b"\0app\0");
    hasher.update(app_dir.as_os_str().as_encoded_bytes());
    hasher.update(b"\0deps\0");
    hasher.update(deps_key.as_bytes());
    for name in CONFIG_FILES {
        if let Ok(bytes) = std::fs::read(app_dir.join(name)) {
            hasher.update(format!("\0{name}\0").as_bytes());
            hasher.update(bytes);
        }
    }
    for (key, value) in &request.env {
        hasher.update(format!("\0env\0{key}={value}").as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A build's places on the worker, each with the name shown in their stead: as given and as
/// resolved (once, when the build starts), longest first, so a checkout inside `DATA_DIR` becomes
/// `.`, not `$DATA_DIR/...`.
#[derive(Debug, Clone)]
struct ServerPaths(Arc<Vec<(String, &'static str)>>);

impl ServerPaths {
    fn new<'a>(known: impl IntoIterator<Item = (&'a Path, &'static str)>) -> Self {
        let mut known: Vec<(String, &'static str)> = known
            .into_iter()
            .flat_map(|(path, name)| {
                let canonical = path.canonicalize().ok();
                std::iter::once(path.to_path_buf())
                    .chain(canonical)
                    .map(move |p| (p.to_string_lossy().trim_end_matches('/').to_owned(), name))
            })
            .filter(|(path, _)| path.len() > 1)
            .collect();
        known.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        ServerPaths(Arc::new(known))
    }

    /// `text` naming no server path: the known places by their names, and any other absolute
    /// path as `<path>`.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (path, name) in self.0.iter() {
            text = text.replace(path.as_str(), name);
        }
        without_other_paths(&text)
    }
}

/// Which copy of a build log is stored.
#[derive(Debug, Clone, Copy)]
enum LogCopy {
    /// While the build runs: its whole lines so far.
    Live,
    /// When it has ended.
    Whole,
}

/// `text` with every absolute path replaced by `<path>`.
fn without_other_paths(text: &str) -> String {
    // What is left: paths outside the build (npm's own files, the system's). A path starts at a
    // `/` that begins a word (not `https://` or `a/b`) and ends at a space or a quote.
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let mut previous: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        let starts_word = previous.is_none_or(|p| p.is_whitespace() || "'\"`([{=,".contains(p));
        let next = text[at + c.len_utf8()..].chars().next();
        if c == '/'
            && starts_word
            && next.is_some_and(|n| n.is_alphanumeric() || n == '.' || n == '_')
        {
            out.push_str("<path>");
            previous = Some(c);
            while let Some(&(_, n)) = chars.peek() {
                if n.is_whitespace() || "'\"`)]},;".contains(n) {
                    break;
                }
                previous = Some(n);
                chars.next();
            }
            continue;
        }
        out.push(c);
        previous = Some(c);
    }
    out
}

#[async_trait]
impl TypedHandler<PreviewRequest> for PreviewBuilder {
    fn start_state(&self) -> JobState {
        JobState::Building
    }

    async fn handle(
        &self,
        request: PreviewRequest,
        ctx: &JobContext,
    ) -> Result<PreviewBuilt, JobError> {
        let _slot = tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot.map_err(|err| internal("builder slots", err))?,
            () = ctx.stop.cancelled() => return Err(JobError::Stopped),
        };
        let started = Instant::now();
        let deadline = started + self.timeout;
        let slot = {
            let root = self.data_dir.join("cache/preview_build");
            let affinity = request.project_id.to_string();
            tokio::task::spawn_blocking(move || BuildSlot::acquire(&root, &affinity))
                .await
                .map_err(|err| internal("cannot take a build slot", err))?
                .map_err(|err| internal("cannot take a build slot", err))?
        };
        let job = ctx.job.id;
        let work = self.files().work_dir(job);
        if work.exists() {
            // A previous attempt of this job: its directory is ours to replace.
            std::fs::remove_dir_all(&work)
                .map_err(|err| internal("cannot reset the work directory", err))?;
        }
        std::fs::create_dir_all(&work)
            .map_err(|err| internal("cannot create the work directory", err))?;
        let log = BuildLog::create(&self.files().live_log(job))
            .map_err(|err| internal("cannot create the build log", err))?;
        // What readers of the log and of a failure's message are shown instead of where this
        // worker keeps things: files in the project, never the server's layout.
        let (checkout, home) = (slot.project(), std::env::var_os("HOME").map(PathBuf::from));
        let paths = ServerPaths::new(
            [
                (checkout.as_path(), "."),
                (slot.dir(), "."),
                (work.as_path(), "."),
                (self.data_dir.as_path(), "$DATA_DIR"),
            ]
            .into_iter()
            .chain(home.as_deref().map(|home| (home, "~"))),
        );
        log.line(format_args!(
            "preview build {job} (attempt {}): project {}, {} at {}, in build slot {}",
            ctx.job.attempts,
            request.project_id,
            request.platform.as_str(),
            request.git_ref,
            slot.index()
        ));
        let outcome = self
            .with_live_log(
                self.build(ctx, &request, job, &slot, &log, deadline),
                request.project_id,
                job,
                log.path(),
                &paths,
                &ctx.stop,
            )
            .await;
        // A failure's message is shown to whoever asks for the build's status.
        let outcome = outcome.map_err(|err| match err {
            JobError::Permanent { code, message } => JobError::Permanent {
                code,
                message: paths.scrub(&message),
            },
            JobError::Retryable { code, message } => JobError::Retryable {
                code,
                message: paths.scrub(&message),
            },
            JobError::Stopped => JobError::Stopped,
        });
        let elapsed = started.elapsed();
        match &outcome {
            Ok(_) => {
                log.line(format_args!("success after {:.3}s", elapsed.as_secs_f64()));
                metrics::counter!("preview_build_success_total").increment(1);
            }
            Err(JobError::Stopped) => log.line("stopped"),
            Err(err) => {
                log.line(format_args!(
                    "failed after {:.3}s: {err:?}",
                    elapsed.as_secs_f64()
                ));
                metrics::counter!("preview_build_failures_total").increment(1);
            }
        }
        metrics::histogram!("preview_build_time_seconds").record(elapsed.as_secs_f64());
        // The log outlives the work directory: a copy on this worker, and the object beside the
        // bundle that GET /preview/logs reads.
        let kept = std::fs::create_dir_all(self.files().kept_dir(job)).is_ok()
            && std::fs::copy(log.path(), self.files().kept_log(job)).is_ok();
        if !matches!(outcome, Err(JobError::Stopped)) {
            self.store_log(request.project_id, job, log.path(), &paths, LogCopy::Whole)
                .await;
        }
        // Nothing of the build stays on disk but what status, logs and downloads read (the
        // bundle and the log, under `previews/`, and in the object store) and the caches: the
        // checkout and the output go now, however the build ended, while the slot is still held
        // (its `node_modules` is set aside for the next build, as a reset at its start would).
        let work = kept.then_some(work);
        let emptied = tokio::task::spawn_blocking(move || {
            let emptied = slot.reset();
            if let Some(work) = work {
                let _ = std::fs::remove_dir_all(work);
            }
            drop(slot);
            emptied
        })
        .await;
        if let Ok(Err(err)) | Err(err) = emptied.map_err(std::io::Error::other) {
            tracing::warn!(%job, error = %err, "cannot empty the build slot after the build");
        }
        outcome
    }
}

impl PreviewBuilder {
    /// Where each build's files go under `data_dir`.
    fn files(&self) -> PreviewFiles {
        PreviewFiles::new(&self.data_dir)
    }

    async fn build(
        &self,
        ctx: &JobContext,
        request: &PreviewRequest,
        job: JobId,
        slot: &BuildSlot,
        log: &BuildLog,
        deadline: Instant,
    ) -> Result<PreviewBuilt, JobError> {
        let progress = |state, value, phase: &'static str| async move {
            log.line(format_args!("{phase} ({:.0}%)", value * 100.0));
            ctx.progress(state, value, phase)
                .await
                .map_err(JobError::from)
        };

        progress(JobState::Building, 0.10, "checkout").await?;
        slot.reset()
            .map_err(|err| internal("cannot empty the build slot", err))?;
        let project_dir = slot.project();
        let checkout = {
            let repos = self.repos.clone();
            let project = request.project_id;
            let rev = request.git_ref.clone();
            let dest = project_dir.clone();
            tokio::task::spawn_blocking(move || repos.checkout(project, &rev, &dest))
                .await
                .map_err(|err| internal("the checkout failed", err))?
        }
        .map_err(|err| match err.kind() {
            // The API resolved this commit in its repository before queueing the build: if this
            // worker's copy lacks it, the deployment is at fault (a worker that does not see the
            // server's repositories), not the project, and another worker may succeed.
            ErrorKind::NotFound if request.pinned_commit().is_some() => {
                JobError::from(hivesync_core::Error::unavailable(format!(
                    "this worker cannot find commit {} of project {} ({}); it does not share the server's repositories (REPO_STORAGE=shared)",
                    request.git_ref,
                    request.project_id,
                    err.message()
                )))
            }
            ErrorKind::NotFound | ErrorKind::Validation | ErrorKind::PayloadTooLarge => permanent(
                ApiErrorCode::InvalidProjectStructure,
                format!("cannot check out {}: {}", request.git_ref, err.message()),
            ),
            _ => JobError::from(err),
        })?;
        log.line(format_args!(
            "checked out {} (tree {}): {} files, {} bytes",
            checkout.commit, checkout.tree, checkout.files, checkout.bytes
        ));
        let to_job_error = |err: DetectError| match err {
            DetectError::Invalid(why) => permanent(ApiErrorCode::InvalidProjectStructure, why),
            DetectError::Io(err) => internal("cannot read the checkout", err),
        };
        let layout =
            workspace::layout(&project_dir, request.app_dir.as_deref()).map_err(to_job_error)?;
        if !layout.app.is_empty() {
            log.line(format_args!(
                "app: {}{}",
                layout.app,
                if layout.members.is_empty() {
                    String::new()
                } else {
                    format!(" in a workspace of {}", layout.members.join(", "))
                }
            ));
        }
        let app_dir = layout.app_dir(&project_dir);
        let kind = detect(&app_dir).map_err(to_job_error)?;
        log.line(format_args!("project: {kind:?}"));

        progress(JobState::Building, 0.25, "dependencies").await?;
        // The install has its own limit, and the build's does not count it: what it installs is
        // kept for the builds after this one, even when this one then runs out of time.
        let install_started = Instant::now();
        let install_timed_out = format!(
            "the dependency install took longer than PREVIEW_INSTALL_TIMEOUT_MS ({} ms)",
            self.install_timeout.as_millis()
        );
        let restored = self
            .deps
            .restore_workspace(
                &layout.install_dir(&project_dir),
                &layout.members,
                log,
                install_started + self.install_timeout,
                &ctx.stop,
            )
            .await
            .map_err(|err| match err {
                DepsError::Missing(why) => permanent(ApiErrorCode::MissingDependencies, why),
                DepsError::Interrupted(step) => {
                    interrupted(step, &install_timed_out, log, &self.files(), job)
                }
                DepsError::Io(err) => internal("dependency store", err),
            })?;
        let deadline = deadline + install_started.elapsed();
        let build_timed_out = format!(
            "the build took longer than PREVIEW_MAX_TIMEOUT_MS ({} ms, not counting the dependency install) while bundling",
            self.timeout.as_millis()
        );

        progress(JobState::Bundling, 0.50, "bundling").await?;
        let metro_cache = self.data_dir.join("cache/metro").join(metro_cache_key(
            &project_dir,
            &app_dir,
            request,
            &restored.key,
        ));
        let metro_warm = metro_cache.is_dir();
        if metro_warm {
            // Cleanup removes cache entries unused for CACHE_RETENTION_SECONDS: this one is in use.
            let _ = std::fs::File::open(&metro_cache)
                .and_then(|dir| dir.set_modified(std::time::SystemTime::now()));
        }
        let mut warnings = Vec::new();
        if restored.lockfile.is_none() && restored.source != DepsSource::Repository {
            warnings.push(format!(
                "the project has no lockfile: {} installed the newest versions package.json allows, which may not be what the developer runs",
                restored.manager
            ));
        }
        let deps_hit = restored.source != DepsSource::Installed;
        for (cache, hit) in [("dependencies", deps_hit), ("metro", metro_warm)] {
            let name = if hit {
                "preview_cache_hits_total"
            } else {
                "preview_cache_misses_total"
            };
            metrics::counter!(name, "cache" => cache).increment(1);
        }
        let out = slot.out();
        let previous_node_modules = slot.kept_node_modules();
        let bundled = BundleJob {
            kind: &kind,
            platform: request.platform,
            project: &project_dir,
            layout: &layout,
            deps: &restored,
            previous_node_modules: Some(&previous_node_modules),
            out: &out,
            metro_cache: &metro_cache,
            env: &request.env,
            sandbox: &self.sandbox,
            optimize: self.optimize,
        }
        .run(log, deadline, &ctx.stop)
        .await
        .map_err(|err| match err {
            BundleError::Failed(why) => permanent(ApiErrorCode::PreviewBuildFailed, why),
            BundleError::Interrupted(step) => {
                interrupted(step, &build_timed_out, log, &self.files(), job)
            }
            BundleError::Io(err) => internal("bundling", err),
        })?;

        progress(JobState::Bundling, 0.80, "packaging").await?;
        let expo = std::fs::read(out.join("metadata.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let (bundle_sha256, bundle_bytes) = sha256_file(&out.join(&bundled.bundle))
            .map_err(|err| internal("cannot read the bundle", err))?;
        let runtime = {
            let mut head = [0u8; 16];
            let read = std::fs::File::open(out.join(&bundled.bundle))
                .and_then(|mut file| std::io::Read::read(&mut file, &mut head))
                .map_err(|err| internal("cannot read the bundle", err))?;
            Runtime::of(
                &app_dir,
                &restored.modules_for(layout.app_in_install_root()),
                &head[..read],
            )
        };
        log.line(format_args!(
            "runtime: react-native {}, expo sdk {}, {} native modules, fingerprint {}",
            runtime.react_native.as_deref().unwrap_or("unknown"),
            runtime.expo_sdk.as_deref().unwrap_or("none"),
            runtime.native_modules.len(),
            runtime.fingerprint
        ));
        let metadata = Metadata {
            job_id: job.to_string(),
            project_id: request.project_id.to_string(),
            platform: request.platform.as_str().to_owned(),
            built_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            token_version: request.token_version,
            commit: checkout.commit.clone(),
            tree: checkout.tree.clone(),
            bundler: bundled.bundler.to_owned(),
            bundler_version: bundled.bundler_version.clone(),
            bundle: bundled.bundle.to_string_lossy().into_owned(),
            bundle_sha256: bundle_sha256.clone(),
            bundle_bytes,
            cache: CacheHits {
                dependencies: match restored.source {
                    DepsSource::StoreHit => "store",
                    DepsSource::Installed => "installed",
                    DepsSource::Repository => "repository",
                }
                .to_owned(),
                metro_warm,
            },
            timeout: false,
            runtime: runtime.clone(),
            package_manager: restored.manager.clone(),
            lockfile: restored.lockfile.map(str::to_owned),
            warnings: warnings.clone(),
            expo,
        };
        let zip_path = self.files().kept_bundle(job);
        let packaged = {
            let (out, log_path, zip_path, metadata) = (
                out.clone(),
                log.path().to_path_buf(),
                zip_path.clone(),
                metadata.clone(),
            );
            tokio::task::spawn_blocking(move || package(&out, &metadata, &log_path, &zip_path))
                .await
                .map_err(|err| internal("packaging failed", err))?
                .map_err(|err| internal("packaging failed", err))?
        };
        log.line(format_args!(
            "packaged {} ({} bytes, sha256 {})",
            zip_path.display(),
            packaged.bytes,
            packaged.sha256
        ));

        progress(JobState::Uploading, 0.90, "uploading").await?;
        let key = PreviewFiles::bundle_object(request.project_id, job)
            .map_err(|err| internal("bundle key", err))?;
        self.upload(&key, &zip_path, log, deadline, ctx).await?;

        Ok(PreviewBuilt {
            bundle_key: key.to_string(),
            bytes: packaged.bytes,
            sha256: packaged.sha256,
            commit: Some(checkout.commit),
            tree: Some(checkout.tree),
            platform: Some(request.platform),
            bundler: Some(bundled.bundler.to_owned()),
            bundler_version: Some(bundled.bundler_version),
            bundle_sha256: Some(bundle_sha256),
            build_key: request.build_key.clone(),
            runtime: Some(runtime),
            package_manager: Some(restored.manager.clone()),
            lockfile: restored.lockfile.map(str::to_owned),
            warnings,
            cache: CacheReport {
                build: Some(BuildCache::Miss),
                dependencies: Some(metadata.cache.dependencies),
                metro_warm: Some(metro_warm),
            },
            built_by: None,
        })
    }

    /// Stores the build log at `path` in the object store, beside the bundle, where the API
    /// reads it; whether it did. Best effort, and never longer than [`LOG_PUT_TIMEOUT`]: a store
    /// that is down or silent fails the upload of the bundle, and this worker keeps its copy.
    ///
    /// The copy names no server path ([`ServerPaths`]). A live copy ends at the last whole line,
    /// so that each is the beginning of the next and of the final one.
    async fn store_log(
        &self,
        project: ProjectId,
        job: JobId,
        path: &Path,
        paths: &ServerPaths,
        copy: LogCopy,
    ) -> bool {
        let Ok(key) = PreviewFiles::log_object(project, job) else {
            return false;
        };
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(job_id = %job, error = %err, "cannot read the build log");
                return false;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = match copy {
            LogCopy::Whole => &text[..],
            LogCopy::Live => text.rfind('\n').map_or("", |end| &text[..=end]),
        };
        let bytes = paths.scrub(text).into_bytes();
        match tokio::time::timeout(LOG_PUT_TIMEOUT, self.objects.put_bytes(&key, bytes.into()))
            .await
        {
            Ok(Ok(_)) => true,
            Ok(Err(err)) => {
                tracing::warn!(job_id = %job, error = %err, "the build log was not stored");
                false
            }
            Err(_) => {
                tracing::warn!(job_id = %job, "the object store did not answer; the build log was not stored");
                false
            }
        }
    }

    /// Runs `build` while copying its log (at `path`) to the object store every
    /// [`LIVE_LOG_EVERY`] when it grew, so `GET /preview/logs` follows the build on any server.
    /// Copies run beside the build, never holding it up; a store that failed one is not asked
    /// again for this build. No copy is left in flight on return (one is cut short if the build
    /// was asked to stop), so a later copy of the whole log cannot be overwritten by an older one.
    async fn with_live_log<T>(
        &self,
        build: impl std::future::Future<Output = T>,
        project: ProjectId,
        job: JobId,
        path: &Path,
        paths: &ServerPaths,
        stop: &tokio_util::sync::CancellationToken,
    ) -> T {
        tokio::pin!(build);
        let mut tick = tokio::time::interval(LIVE_LOG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut copied = None;
        let mut copying: Option<tokio::task::JoinHandle<bool>> = None;
        let mut live = true;
        let outcome = loop {
            tokio::select! {
                outcome = &mut build => break outcome,
                _ = tick.tick() => {
                    if let Some(done) = copying.take_if(|copy| copy.is_finished()) {
                        live &= done.await.unwrap_or(false);
                    }
                    let size = std::fs::metadata(path).map(|m| m.len()).ok();
                    if live && copying.is_none() && size.is_some() && size != copied {
                        copied = size;
                        let (builder, path, paths) =
                            (self.clone(), path.to_path_buf(), paths.clone());
                        copying = Some(tokio::spawn(async move {
                            builder
                                .store_log(project, job, &path, &paths, LogCopy::Live)
                                .await
                        }));
                    }
                }
            }
        };
        if let Some(copy) = copying {
            if stop.is_cancelled() {
                copy.abort();
            }
            let _ = copy.await;
        }
        outcome
    }

    /// Uploads the bundle, retrying transient failures while the build's deadline allows and no
    /// one asks it to stop; the object store never shows a partial object, so a failed try leaves
    /// nothing behind.
    async fn upload(
        &self,
        key: &ObjectKey,
        zip_path: &Path,
        log: &BuildLog,
        deadline: Instant,
        ctx: &JobContext,
    ) -> Result<(), JobError> {
        let timed_out = || {
            log.line("the build ran out of time while uploading");
            permanent(
                ApiErrorCode::PreviewTimeout,
                format!(
                    "the build took longer than PREVIEW_MAX_TIMEOUT_MS ({} ms, not counting the dependency install) while uploading",
                    self.timeout.as_millis()
                ),
            )
        };
        let mut last = None;
        for attempt in 1..=UPLOAD_ATTEMPTS {
            let file = tokio::fs::File::open(zip_path)
                .await
                .map_err(|err| internal("cannot read the bundle", err))?;
            let body: ByteStream = tokio_util::io::ReaderStream::new(file)
                .map(|chunk| chunk.map_err(hivesync_core::Error::from))
                .boxed();
            let put = tokio::select! {
                put = self.objects.put(key, body) => put,
                () = tokio::time::sleep_until(deadline.into()) => return Err(timed_out()),
                () = ctx.stop.cancelled() => return Err(JobError::Stopped),
            };
            match put {
                Ok(_) => {
                    log.line(format_args!("uploaded {key} (attempt {attempt})"));
                    return Ok(());
                }
                Err(err) => {
                    log.line(format_args!("upload attempt {attempt} failed: {err}"));
                    let retry = err.is_retryable();
                    last = Some(err);
                    if !retry {
                        break;
                    }
                    if attempt < UPLOAD_ATTEMPTS {
                        let pause = Duration::from_millis(500 * u64::from(attempt));
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = tokio::time::sleep_until(deadline.into()) => return Err(timed_out()),
                            () = ctx.stop.cancelled() => return Err(JobError::Stopped),
                        }
                    }
                }
            }
        }
        metrics::counter!("preview_upload_failures_total").increment(1);
        Err(permanent(
            ApiErrorCode::StorageUploadFailed,
            format!(
                "the bundle could not be uploaded: {}",
                last.map_or_else(|| "unknown error".to_owned(), |e| e.message().to_owned())
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_messages_name_no_server_paths() {
        let data = Path::new("/srv/hivesync/data");
        let checkout = Path::new("/srv/hivesync/data/cache/preview_build/slot-0/project");
        let home = Path::new("/home/worker");
        let known = [(checkout, "."), (data, "$DATA_DIR"), (home, "~")];
        let cases = [
            (
                "Unable to resolve module ./Foo from /srv/hivesync/data/cache/preview_build/slot-0/project/App.js: none",
                "Unable to resolve module ./Foo from ./App.js: none",
            ),
            (
                "npm error A complete log of this run can be found in: /home/worker/.npm/_logs/x.log",
                "npm error A complete log of this run can be found in: ~/.npm/_logs/x.log",
            ),
            (
                "npm error path /usr/lib/node_modules/npm/x (see '/etc/npmrc')",
                "npm error path <path> (see '<path>')",
            ),
            (
                "fetch https://registry.npmjs.org/a/-/a-1.tgz failed: a/b c/d 1/2",
                "fetch https://registry.npmjs.org/a/-/a-1.tgz failed: a/b c/d 1/2",
            ),
            ("cd $DATA_DIR/tmp/x", "cd $DATA_DIR/tmp/x"),
            ("at /srv/hivesync/data/secrets", "at $DATA_DIR/secrets"),
            // Progress bars and other text outside ASCII, next to paths and not.
            ("▒▒▒ ⸩ é/x /usr/lib/é ▒/tmp", "▒▒▒ ⸩ é/x <path> ▒/tmp"),
        ];
        let paths = ServerPaths::new(known);
        for (message, expected) in cases {
            assert_eq!(paths.scrub(message), expected);
        }
    }
}
