//! The `preview_build` job's payload ([`PreviewRequest`]) and result ([`PreviewBuilt`]): written
//! by [`crate::request`], run by [`crate::builder`], read by the API, the CLI and the bindings.
//!
//! Records outlive code: jobs stored by an earlier version (before runtimes, package managers or
//! app folders were recorded) still read, so every field added since has a default.

use std::collections::BTreeMap;

use hivesync_core::domain::{JobId, ProjectId};
use hivesync_core::ports::Queue;
use hivesync_queue::jobs::JobKind;
use serde::{Deserialize, Serialize};

use crate::bundler::Platform;
use crate::runtime::Runtime;

/// The job kind of preview builds, on the `preview_build` queue.
pub const PREVIEW_JOB_KIND: &str = "preview_build";

/// A build request: the job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRequest {
    pub project_id: ProjectId,
    pub platform: Platform,
    /// A branch, a tag or a commit id (a commit id when the API queued the build).
    pub git_ref: String,
    /// The ref the user asked for, when `git_ref` is the commit it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_ref: Option<String>,
    /// The app's folder in the tree, for monorepos ([`crate::workspace`]); `None`: the top, or
    /// the one app among the workspace's members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_dir: Option<String>,
    /// `EXPO_PUBLIC_*` variables the app is built with.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub token_version: u8,
    /// The `jti` of the preview token that asked for the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The whole-build key ([`crate::request::build_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
}

impl PreviewRequest {
    /// The ref the user asked for: a branch, a tag or a commit id.
    pub fn asked_ref(&self) -> &str {
        self.requested_ref.as_deref().unwrap_or(&self.git_ref)
    }

    /// The commit the build is pinned to, when the request was resolved before it was queued
    /// (the API always does); a request queued with a ref is resolved when it runs.
    pub fn pinned_commit(&self) -> Option<&str> {
        self.requested_ref.as_ref().map(|_| self.git_ref.as_str())
    }
}

impl JobKind for PreviewRequest {
    const KIND: &'static str = PREVIEW_JOB_KIND;
    const QUEUE: Queue = Queue::PreviewBuild;
    type Output = PreviewBuilt;
}

/// Whether a request was answered by an identical earlier build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildCache {
    Hit,
    Miss,
    /// A value a newer version wrote.
    #[serde(other)]
    Other,
}

/// Which caches a build hit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// `hit` when an identical earlier build's bundle was reused.
    #[serde(default)]
    pub build: Option<BuildCache>,
    /// `store` (the dependency store had them), `installed` (installed for this build) or
    /// `repository` (the project brings its own `node_modules`).
    #[serde(default)]
    pub dependencies: Option<String>,
    /// Whether Metro's transform cache for this project and configuration was warm.
    #[serde(default)]
    pub metro_warm: Option<bool>,
}

/// A successful build: the job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewBuilt {
    /// The bundle's object key ([`hivesync_core::preview_files::PreviewFiles::bundle_object`]).
    pub bundle_key: String,
    /// The zip's size and sha256.
    pub bytes: u64,
    pub sha256: String,
    /// The commit and tree that were built.
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub tree: Option<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub bundler: Option<String>,
    #[serde(default)]
    pub bundler_version: Option<String>,
    /// The sha256 of the JavaScript bundle inside the zip.
    #[serde(default)]
    pub bundle_sha256: Option<String>,
    #[serde(default)]
    pub build_key: Option<String>,
    /// What the app that runs the bundle must be.
    #[serde(default)]
    pub runtime: Option<Runtime>,
    /// What installed the dependencies: `npm`, `yarn 1.22.22`, `pnpm 10.34.9`.
    #[serde(default)]
    pub package_manager: Option<String>,
    /// The lockfile they were installed from.
    #[serde(default)]
    pub lockfile: Option<String>,
    /// What the developer should know about the build, such as a missing lockfile.
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub cache: CacheReport,
    /// The build that made the bundle, when this request reused an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_by: Option<JobId>,
}

impl PreviewBuilt {
    /// The job whose files these are: `job` itself, or the earlier build it reused.
    pub fn builder(&self, job: JobId) -> JobId {
        self.built_by.unwrap_or(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first shapes this builder stored: records written then must still read.
    #[test]
    fn records_written_by_earlier_versions_still_read() {
        let project = ProjectId::new();
        let request: PreviewRequest = serde_json::from_value(serde_json::json!({
            "project_id": project,
            "platform": "android",
            "git_ref": "main",
            "token_version": 1,
        }))
        .unwrap();
        assert_eq!(request.asked_ref(), "main");
        assert_eq!(request.pinned_commit(), None);
        assert!(request.env.is_empty() && request.app_dir.is_none());

        let built: PreviewBuilt = serde_json::from_value(serde_json::json!({
            "bundle_key": format!("previews/{project}/x/bundle.zip"),
            "bytes": 1234,
            "sha256": "ab".repeat(32),
            "commit": "c".repeat(40),
            "tree": "t".repeat(40),
            "platform": "android",
            "bundler": "metro",
            "bundler_version": "0.83.3",
            "bundle_sha256": "cd".repeat(32),
            "cache": {"dependencies": "installed", "metro_warm": false},
        }))
        .unwrap();
        assert_eq!(built.bytes, 1234);
        assert_eq!(built.cache.build, None);
        assert_eq!(built.cache.metro_warm, Some(false));
        assert!(built.runtime.is_none() && built.warnings.is_empty());
        let job = JobId::new();
        assert_eq!(built.builder(job), job);
    }

    #[test]
    fn a_pinned_request_names_its_commit_and_the_ref_asked_for() {
        let request = PreviewRequest {
            project_id: ProjectId::new(),
            platform: Platform::Ios,
            git_ref: "c".repeat(40),
            requested_ref: Some("main".to_owned()),
            app_dir: None,
            env: BTreeMap::new(),
            token_version: 1,
            token_id: None,
            build_key: None,
        };
        assert_eq!(request.asked_ref(), "main");
        assert_eq!(request.pinned_commit(), Some("c".repeat(40).as_str()));
        let again: PreviewRequest =
            serde_json::from_value(serde_json::to_value(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }
}
