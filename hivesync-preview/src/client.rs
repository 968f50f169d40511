//! Previews from a client (feature `client`): a preview token, a build request, following the
//! build, its log and its bundle, over [`hivesync_core::client::Client`]. What the CLI, the
//! bindings and the editor extensions call; the answers read into the same types the builder
//! writes ([`CacheReport`], [`Runtime`]), so the two cannot drift apart silently.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hivesync_core::client::Client;
use hivesync_core::domain::{JobState, Platform};
use hivesync_core::{Error, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::CacheReport;
use crate::runtime::Runtime;

/// How often [`follow`] asks for the status.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What a preview token is for.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRequest {
    pub project_id: Uuid,
    pub platform: Platform,
    /// A branch, tag or commit the token is pinned to.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// A preview token, as `POST /preview/token` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub expires_in: u64,
    pub project_id: Uuid,
    pub platform: Platform,
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    /// The link a phone opens.
    pub preview_url: String,
    /// `preview_url` as a QR code, an SVG document.
    pub qr_svg: String,
}

/// A build request's body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildRequest {
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// `EXPO_PUBLIC_*` variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The app's folder in a monorepo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// How `POST /preview/build` answered.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildAccepted {
    pub job_id: Uuid,
    /// `queued`, `success` (reused) or the running state of the build it joined.
    pub status: String,
    /// The commit being built.
    pub commit: String,
    /// An identical earlier build's bundle answers the request.
    pub cached: bool,
    /// An identical build was already running; this is that build.
    pub shared: bool,
    pub status_url: String,
}

/// Why a build failed.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildFailure {
    pub code: String,
    pub message: String,
}

/// Where a build stands (`GET /preview/status/{job}`).
#[derive(Debug, Clone, Deserialize)]
pub struct PreviewStatus {
    pub job_id: Uuid,
    pub project_id: Uuid,
    #[serde(default)]
    pub platform: Option<Platform>,
    /// `queued`, `building`, `bundling`, `uploading`, `success`, `failed` or `cancelled`; kept as
    /// the server's word, so a client still reads the status of a newer server ([`Self::state`]).
    pub status: String,
    pub progress: f64,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub error: Option<BuildFailure>,
    pub timeout: bool,
    #[serde(default)]
    pub cache: Option<CacheReport>,
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub bundler: Option<String>,
    #[serde(default)]
    pub bundler_version: Option<String>,
    #[serde(default)]
    pub runtime: Option<Runtime>,
    #[serde(default)]
    pub package_manager: Option<String>,
    #[serde(default)]
    pub lockfile: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub built_by: Option<Uuid>,
    #[serde(default)]
    pub download_url: Option<String>,
    pub logs_url: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl PreviewStatus {
    /// The status as a job state, when it is one this client knows.
    pub fn state(&self) -> Option<JobState> {
        self.status.parse().ok()
    }

    /// Whether the build is over (for any reason).
    pub fn is_finished(&self) -> bool {
        self.state().is_some_and(JobState::is_terminal)
    }
}

/// A preview token for `request`, asked for with a member's client.
pub async fn issue_token(member: &Client, request: &TokenRequest) -> Result<IssuedToken> {
    member.post("/preview/token", request).await
}

/// Requests a build; `phone` carries the preview token.
pub async fn request_build(phone: &Client, request: &BuildRequest) -> Result<BuildAccepted> {
    phone.post("/preview/build", request).await
}

/// A build's status.
pub async fn status(client: &Client, job: Uuid) -> Result<PreviewStatus> {
    client.get(&format!("/preview/status/{job}")).await
}

/// Polls the status until the build is finished, showing each answer to `seen`.
pub async fn follow(
    client: &Client,
    job: Uuid,
    mut seen: impl FnMut(&PreviewStatus),
) -> Result<PreviewStatus> {
    loop {
        let current = status(client, job).await?;
        seen(&current);
        if current.is_finished() {
            return Ok(current);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A build's log: every step with its timings.
pub async fn log(client: &Client, job: Uuid) -> Result<String> {
    client.text(&format!("/preview/logs/{job}")).await
}

/// Downloads a build's bundle into `out`, streamed into a file beside it and renamed in once
/// whole. `runtime` describes the app that will run it (`react-native=0.86.3;…`): the server
/// refuses a bundle that app cannot run (`RUNTIME_MISMATCH`). Returns the bytes written.
pub async fn download(
    client: &Client,
    job: Uuid,
    out: &Path,
    runtime: Option<&str>,
) -> Result<u64> {
    let mut request = client.request(reqwest::Method::GET, &format!("/preview/download/{job}"));
    if let Some(runtime) = runtime {
        request = request.header("X-HiveSync-Runtime", runtime);
    }
    let response = client.send(request).await?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let body = response.bytes().await.unwrap_or_default();
        return Err(hivesync_core::client::refusal(status, &body));
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut staging = tempfile::Builder::new()
        .prefix(".hivesync-download-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|err| Error::unavailable(format!("the download failed: {err}")))?;
        staging.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    staging.as_file().sync_all()?;
    staging.persist(out).map_err(|err| err.error)?;
    Ok(written)
}

impl Runtime {
    /// The runtime in one line: what the app that opens the bundle must have.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.react_native {
            parts.push(format!("react-native {v}"));
        }
        if let Some(v) = &self.expo_sdk {
            parts.push(format!("expo-sdk {v}"));
        }
        if let Some(v) = self.hermes_bytecode {
            parts.push(format!("hermes-bytecode {v}"));
        }
        parts.push(if self.native_modules.is_empty() {
            "no native modules".to_owned()
        } else {
            let modules: Vec<String> = self
                .native_modules
                .iter()
                .map(|(name, version)| format!("{name}@{version}"))
                .collect();
            format!("native modules {}", modules.join(", "))
        });
        format!("{} (fingerprint {})", parts.join(", "), self.fingerprint)
    }
}
