//! Asking for a build: the whole-build cache and the `preview_build` submission.
//!
//! A build is keyed by everything that decides its bundle: the revision's root tree (which covers
//! every source file, `package.json`, the lockfile and the Babel and Metro configs), the platform,
//! the build environment, the toolchain and this builder's version. Nothing else — not the commit
//! message, the branch name, the user or the token — is in the key.
//!
//! - An identical earlier build whose bundle is still stored completes the request at once: a new
//!   job record, already `success`, pointing at that bundle (`cache.build = "hit"`).
//! - An identical build still running is shared: the request gets that job (the key is the job's
//!   dedup key, which the `Store` holds unique among unfinished jobs, across every server).
//! - Otherwise a new job is queued; the payload pins the resolved commit, so a branch that moves
//!   while the job waits does not change what is built.

use std::collections::BTreeMap;
use std::sync::Arc;

use hivesync_core::domain::{Job, JobFilter, JobId, JobState, Page};
use hivesync_core::domain::{ProjectId, UserId};
use hivesync_core::ports::{JobQueue, ObjectKey, ObjectStore, Store};
use hivesync_core::repo::{Repos, Revision};
use hivesync_core::{Error, Result};
use hivesync_queue::jobs::{JobRecord, Submission, submit, succeeded};
use sha2::{Digest, Sha256};

use crate::bundler::Platform;
use crate::job::{BuildCache, PREVIEW_JOB_KIND, PreviewBuilt, PreviewRequest};
use crate::toolchain::Toolchain;

/// Changes whenever a change to the builder could change its output for the same inputs.
pub const BUILDER_VERSION: &str = concat!("hivesync-preview ", env!("CARGO_PKG_VERSION"), "/2");

/// The prefix every build environment variable needs: Expo inlines exactly these into the bundle,
/// so they are public by definition and nothing secret can be smuggled into a build this way.
pub const ENV_PREFIX: &str = "EXPO_PUBLIC_";
const MAX_ENV_VARS: usize = 32;
const MAX_ENV_NAME: usize = 128;
const MAX_ENV_VALUE: usize = 4096;

/// Checks a build environment: at most 32 `EXPO_PUBLIC_[A-Z0-9_]+` names with values of up to
/// 4096 bytes and no NUL.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<()> {
    if env.len() > MAX_ENV_VARS {
        return Err(
            Error::validation(format!("at most {MAX_ENV_VARS} environment variables"))
                .with_context("field", "env"),
        );
    }
    for (name, value) in env {
        let suffix = name.strip_prefix(ENV_PREFIX).unwrap_or("");
        let name_ok = !suffix.is_empty()
            && name.len() <= MAX_ENV_NAME
            && suffix
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(Error::validation(format!(
                "environment variable names must match {ENV_PREFIX}[A-Z0-9_]+ (at most {MAX_ENV_NAME} bytes)"
            ))
            .with_context("field", "env")
            .with_context("name", name.chars().take(MAX_ENV_NAME).collect::<String>()));
        }
        if value.len() > MAX_ENV_VALUE || value.contains('\0') {
            return Err(Error::validation(format!(
                "the value of {name} must be at most {MAX_ENV_VALUE} bytes without NUL"
            ))
            .with_context("field", "env"));
        }
    }
    Ok(())
}

/// Checks an app folder named in a build request: a path inside the tree, normalised (`./` and
/// trailing `/` dropped; `.` or empty means the top, `None`).
pub fn validate_app_dir(app: Option<&str>) -> Result<Option<String>> {
    let Some(app) = app
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "." && *a != "./")
    else {
        return Ok(None);
    };
    hivesync_core::repo::RepoPath::parse(app)
        .map(|path| Some(path.as_str().to_owned()))
        .map_err(|err| err.with_context("field", "app"))
}

/// The whole-build key of a project's revision tree built for `platform` with `env` by
/// `toolchain`. The project is part of it: builds are never shared across projects, whose
/// bundles, logs and metadata belong to them.
pub fn build_key(
    project: ProjectId,
    tree: &str,
    platform: Platform,
    env: &BTreeMap<String, String>,
    toolchain: &Toolchain,
) -> String {
    let mut hasher = Sha256::new();
    let project = project.to_string();
    for part in [
        BUILDER_VERSION,
        &toolchain.to_string(),
        &project,
        tree,
        platform.as_str(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update(b"\0");
    }
    // The map is ordered, and lengths delimit names and values, so no two environments collide.
    for (name, value) in env {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    let digest = hasher.finalize();
    format!("preview:{}", hex::encode(digest))
}

/// A request for a build, as a verified preview token and the request body describe it.
#[derive(Debug, Clone)]
pub struct BuildOrder {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub platform: Platform,
    /// A branch, a tag or a commit id.
    pub git_ref: String,
    /// The app's folder in a monorepo (checked with [`validate_app_dir`]).
    pub app_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub token_version: u8,
    /// The `jti` of the token that asked.
    pub token_id: Option<String>,
}

/// A checked build request with its ref resolved ([`Previews::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    order: BuildOrder,
    revision: Revision,
}

/// How a request was answered.
#[derive(Debug, Clone)]
pub struct Requested {
    pub job: Job,
    pub revision: Revision,
    /// The earlier build whose bundle this request reuses.
    pub reused: Option<JobId>,
    /// An identical build was already running; `job` is that build.
    pub shared: bool,
}

/// Takes build requests: the whole-build cache in front of the `preview_build` queue.
#[derive(Clone)]
pub struct Previews {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn JobQueue>,
    pub objects: Arc<dyn ObjectStore>,
    pub repos: Arc<Repos>,
    /// `PREVIEW_OPTIMIZE`: another output, so another key.
    pub optimize: bool,
}

impl std::fmt::Debug for Previews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previews").finish_non_exhaustive()
    }
}

impl Previews {
    /// Checks `order` without changing anything: its environment, and that its ref names a
    /// commit (resolved now, so the build is of exactly that commit). Errors: `Validation` for a
    /// bad environment, `NotFound` for a ref the project does not have.
    pub async fn prepare(&self, mut order: BuildOrder) -> Result<Prepared> {
        validate_env(&order.env)?;
        order.app_dir = validate_app_dir(order.app_dir.as_deref())?;
        let repos = self.repos.clone();
        let (project, git_ref) = (order.project_id, order.git_ref.clone());
        let revision = tokio::task::spawn_blocking(move || repos.revision(project, &git_ref))
            .await
            .map_err(|err| Error::internal("resolving a ref failed").with_source(err))??;
        Ok(Prepared { order, revision })
    }

    /// Answers a prepared request: from the whole-build cache, by joining an identical running
    /// build, or by queueing a new one.
    pub async fn request(&self, prepared: Prepared, toolchain: &Toolchain) -> Result<Requested> {
        let Prepared { order, revision } = prepared;
        let mut env = order.env.clone();
        if self.optimize {
            // Not a variable the build sees: it only makes the key differ (env names are checked
            // to be EXPO_PUBLIC_*, so it cannot collide with a real one).
            env.insert("hivesync:optimize".to_owned(), "1".to_owned());
        }
        if let Some(app) = &order.app_dir {
            // Another app of the same tree is another build.
            env.insert("hivesync:app".to_owned(), app.clone());
        }
        let key = build_key(
            order.project_id,
            &revision.tree,
            order.platform,
            &env,
            toolchain,
        );

        if let Some((earlier, result)) = self.finished_build(&key).await? {
            let job = self
                .record_reuse(&order, &revision, &key, &earlier, result)
                .await?;
            let reused = (job.state == JobState::Success).then_some(earlier.id);
            metrics::counter!("preview_cache_hits_total", "cache" => "build").increment(1);
            return Ok(Requested {
                shared: reused.is_none(),
                job,
                revision,
                reused,
            });
        }

        let submission = Submission::of(&self.payload(&order, &revision, &key))?
            .with_owner(Some(order.project_id), Some(order.user_id))
            .with_dedup_key(key.clone());
        let job = submit(self.store.as_ref(), self.queue.as_ref(), submission).await?;
        let asked_by = job.payload_as::<PreviewRequest>().ok().map(|p| p.token_id);
        let shared = job.user_id != Some(order.user_id) || asked_by != Some(order.token_id.clone());
        metrics::counter!("preview_cache_misses_total", "cache" => "build").increment(1);
        Ok(Requested {
            job,
            revision,
            reused: None,
            shared,
        })
    }

    fn payload(&self, order: &BuildOrder, revision: &Revision, key: &str) -> PreviewRequest {
        PreviewRequest {
            project_id: order.project_id,
            platform: order.platform,
            git_ref: revision.commit.clone(),
            requested_ref: Some(order.git_ref.clone()),
            app_dir: order.app_dir.clone(),
            env: order.env.clone(),
            token_version: order.token_version,
            token_id: order.token_id.clone(),
            build_key: Some(key.to_owned()),
        }
    }

    /// The newest successful build with `key` whose bundle is still stored, with its result.
    async fn finished_build(&self, key: &str) -> Result<Option<(Job, PreviewBuilt)>> {
        let filter = JobFilter {
            dedup_key: Some(key.to_owned()),
            state: Some(JobState::Success),
            kind: Some(PREVIEW_JOB_KIND.to_owned()),
            ..JobFilter::default()
        };
        let Some(earlier) = self
            .store
            .list_jobs(&filter, Page::first(1))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let result = match earlier.output_as::<PreviewRequest>() {
            Ok(Some(result)) => result,
            Ok(None) => return Ok(None),
            Err(err) => {
                tracing::warn!(job_id = %earlier.id, error = %err, "an earlier build's result does not read; building again");
                return Ok(None);
            }
        };
        // Cleanup may have removed the bundle since, or the store may not answer: then the build
        // runs again.
        let stored = match self
            .objects
            .head(&ObjectKey::new(&result.bundle_key)?)
            .await
        {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(error = %err, "cannot check an earlier bundle; building again");
                None
            }
        };
        Ok(stored
            .is_some_and(|meta| meta.size == result.bytes)
            .then_some((earlier, result)))
    }

    /// A job record for `order` that is already finished with `earlier`'s bundle. Returns an
    /// unfinished job with the same key instead, if one appeared meanwhile.
    async fn record_reuse(
        &self,
        order: &BuildOrder,
        revision: &Revision,
        key: &str,
        earlier: &Job,
        mut result: PreviewBuilt,
    ) -> Result<Job> {
        let id = JobId::new();
        let record = Submission::of(&self.payload(order, revision, key))?
            .with_owner(Some(order.project_id), Some(order.user_id))
            .with_dedup_key(key)
            .record(id);
        let job = self.store.create_job(record).await?;
        if job.id != id {
            return Ok(job);
        }
        result.built_by = Some(result.builder(earlier.id));
        result.commit = Some(revision.commit.clone());
        result.cache.build = Some(BuildCache::Hit);
        self.store
            .update_job(id, succeeded::<PreviewRequest>(&result)?)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_key_follows_project_tree_platform_env_and_toolchain_only() {
        let node20 = Toolchain {
            node: Some("v20.19.0".to_owned()),
            npm: Some("10.8.2".to_owned()),
        };
        let node22 = Toolchain {
            node: Some("v22.1.0".to_owned()),
            ..node20.clone()
        };
        let (p, q) = (ProjectId::new(), ProjectId::new());
        let key = |project, tree, platform, vars: &[(&str, &str)], toolchain| {
            build_key(project, tree, platform, &env(vars), toolchain)
        };
        let base = key(p, "aaaa", Platform::Ios, &[], &node20);
        assert_eq!(base, key(p, "aaaa", Platform::Ios, &[], &node20));
        let variants = [
            key(q, "aaaa", Platform::Ios, &[], &node20),
            key(p, "bbbb", Platform::Ios, &[], &node20),
            key(p, "aaaa", Platform::Android, &[], &node20),
            key(p, "aaaa", Platform::Ios, &[("EXPO_PUBLIC_A", "1")], &node20),
            key(p, "aaaa", Platform::Ios, &[], &node22),
        ];
        for variant in &variants {
            assert_ne!(&base, variant);
        }
        // Lengths delimit names and values: moving a boundary is another environment.
        assert_ne!(
            key(p, "t", Platform::Ios, &[("EXPO_PUBLIC_A", "BC")], &node20),
            key(p, "t", Platform::Ios, &[("EXPO_PUBLIC_AB", "C")], &node20),
        );
        assert!(base.starts_with("preview:") && base.len() == "preview:".len() + 64);
    }

    #[test]
    fn only_public_expo_variables_of_bounded_size_are_accepted() {
        assert!(validate_env(&env(&[("EXPO_PUBLIC_API_URL", "https://x")])).is_ok());
        for bad in [
            env(&[("API_URL", "x")]),
            env(&[("EXPO_PUBLIC_", "x")]),
            env(&[("EXPO_PUBLIC_lower", "x")]),
            env(&[("EXPO_PUBLIC_A-B", "x")]),
            env(&[("EXPO_PUBLIC_A", "nul\0")]),
            env(&[("EXPO_PUBLIC_A", &"x".repeat(MAX_ENV_VALUE + 1))]),
        ] {
            let err = validate_env(&bad).unwrap_err();
            assert_eq!(err.kind(), hivesync_core::ErrorKind::Validation, "{bad:?}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_ENV_VARS)
            .map(|i| (format!("EXPO_PUBLIC_V{i}"), String::new()))
            .collect();
        assert!(validate_env(&many).is_err());
    }
}
