//! Previews: `POST /preview/token`, `POST /preview/build`, and a build's status, download and log.
//!
//! Who may ask:
//! - a preview token is made by a project member (`POST /preview/token`, with the member's access
//!   token) and then stands alone: the phone sends it as `Authorization: Bearer v1.…`;
//! - `POST /preview/build` takes only a preview token; its user must still be a member;
//! - a build's status, download and log take the member's access token, or a preview token of the
//!   build's project and platform. Builds are shared between identical requests, so a build is not
//!   one token's: any token that could have asked for the same build may read it. Everyone else
//!   gets `404 NOT_FOUND`, as if the build did not exist.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use hivesync_core::domain::{Job, JobId, JobState, Platform, ProjectId};
use hivesync_core::ports::{ObjectKey, RateDecision};
use hivesync_core::preview_files::PreviewFiles;
use hivesync_core::preview_token::{PreviewClaims, PreviewGrant, TOKEN_VERSION, validate_ref};
use hivesync_core::{ApiErrorCode, Error};
use hivesync_preview::job::{BuildCache, PREVIEW_JOB_KIND, PreviewBuilt, PreviewRequest};
use hivesync_preview::request::BuildOrder;
use hivesync_preview::runtime::{ClientRuntime, Runtime};
use hivesync_preview::toolchain::{Toolchain, toolchain};
use hivesync_queue::jobs::JobRecord;
use poem::{Body, Request};
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json, PlainText};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, SecurityScheme, Tags};
use uuid::Uuid;

use super::error::ApiError;
use super::projects::{Needs, authorize};
use super::security::{BearerAuth, Caller};
use super::sync::blocking;
use super::text::Text;
use crate::state::AppState;

/// The default branch a build uses when neither the token nor the request names a ref.
const DEFAULT_REF: &str = "main";
/// How long a presigned download URL stays valid.
const PRESIGN_SECONDS: u64 = 300;

#[derive(Tags)]
enum PreviewTags {
    /// Preview tokens and preview builds.
    Preview,
}

/// The phone platform of a preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum PlatformView {
    Ios,
    Android,
}

impl From<PlatformView> for Platform {
    fn from(view: PlatformView) -> Self {
        match view {
            PlatformView::Ios => Platform::Ios,
            PlatformView::Android => Platform::Android,
        }
    }
}

impl From<Platform> for PlatformView {
    fn from(platform: Platform) -> Self {
        match platform {
            Platform::Ios => PlatformView::Ios,
            Platform::Android => PlatformView::Android,
        }
    }
}

/// A preview token (`v1.…`) from `POST /preview/token`, sent as `Authorization: Bearer <token>`.
#[derive(Debug, SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "HiveSync preview token",
    checker = "check_preview_token"
)]
pub struct PreviewTokenAuth(pub PreviewClaims);

/// Either a preview token or a member's access token.
#[derive(Debug, SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "HiveSync preview token or JWT",
    checker = "check_preview_or_member"
)]
pub struct PreviewOrMemberAuth(pub PreviewCaller);

/// Who is reading a build.
#[derive(Debug, Clone)]
pub enum PreviewCaller {
    Member(Caller),
    Token(PreviewClaims),
}

fn state_of(req: &Request) -> poem::Result<&Arc<AppState>> {
    req.data::<Arc<AppState>>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))
}

fn verify_preview_token(state: &AppState, token: &str) -> Result<PreviewClaims, ApiError> {
    Ok(state
        .preview_tokens
        .verify(token, state.clock.now().timestamp())?)
}

async fn check_preview_token(req: &Request, bearer: Bearer) -> poem::Result<PreviewClaims> {
    let state = state_of(req)?;
    Ok(verify_preview_token(state, &bearer.token)?)
}

async fn check_preview_or_member(req: &Request, bearer: Bearer) -> poem::Result<PreviewCaller> {
    let state = state_of(req)?;
    // Preview tokens carry a version prefix; access tokens are JWTs, which never start this way.
    if bearer.token.starts_with("v1.") {
        return Ok(PreviewCaller::Token(verify_preview_token(
            state,
            &bearer.token,
        )?));
    }
    let claims = state
        .jwt
        .verify(&bearer.token)
        .map_err(|err| ApiError::unauthorized(err.message().to_owned()))?;
    Ok(PreviewCaller::Member(Caller {
        user_id: claims.sub,
    }))
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct TokenRequest {
    project_id: Uuid,
    platform: PlatformView,
    /// A branch, tag or commit id the token is pinned to; without it the build request chooses
    /// (default `main`).
    #[oai(rename = "ref")]
    git_ref: Option<Text>,
}

/// A new preview token.
#[derive(Debug, Object)]
struct TokenResponse {
    /// Send as `Authorization: Bearer <token>` to `POST /preview/build`.
    token: String,
    expires_at: DateTime<Utc>,
    /// Seconds until `expires_at`.
    expires_in: u64,
    project_id: Uuid,
    platform: PlatformView,
    #[oai(rename = "ref")]
    git_ref: Option<String>,
    /// The link a phone opens: this server's preview page with the token in the fragment (never
    /// sent to a server, so it stays out of access logs).
    preview_url: String,
    /// `preview_url` as a QR code, an SVG document.
    qr_svg: String,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct BuildRequest {
    /// A branch, tag or commit id; the token's ref when it pins one, else `main`.
    #[oai(rename = "ref")]
    git_ref: Option<Text>,
    /// Build-time variables, `EXPO_PUBLIC_[A-Z0-9_]+` only (at most 32).
    env: Option<BTreeMap<String, Text>>,
    /// The app's folder in a monorepo (`apps/mobile`); by default the top of the tree, or the
    /// one React Native / Expo app among the workspace's members.
    app: Option<Text>,
}

/// A build request's answer.
#[derive(Debug, Object)]
struct BuildAccepted {
    job_id: Uuid,
    /// `queued` for a new build; `success` when an identical earlier build's bundle was reused;
    /// the running state when an identical build was already under way.
    status: String,
    /// The commit being built.
    commit: String,
    /// An identical earlier build's bundle answers this request.
    cached: bool,
    /// An identical build was already running; this is that build.
    shared: bool,
    status_url: String,
}

#[derive(Debug, ApiResponse)]
enum BuildResponse {
    /// Accepted; follow `status_url`.
    #[oai(status = 202)]
    Accepted(Json<BuildAccepted>),
}

/// Which caches a build hit.
#[derive(Debug, Object)]
struct CacheView {
    /// `hit` when an identical earlier build's bundle was reused, else `miss`.
    build: Option<String>,
    /// `store` (the dependency store had them), `installed` (npm installed them for this build)
    /// or `repository` (the project brings its own `node_modules`).
    dependencies: Option<String>,
    /// Whether Metro's transform cache for this project and configuration was warm.
    metro_warm: Option<bool>,
}

/// What the app that runs a bundle must be: a client with another React Native minor, Expo SDK,
/// Hermes bytecode version or native module version cannot run it.
#[derive(Debug, Object)]
struct RuntimeView {
    react_native: Option<String>,
    expo_sdk: Option<String>,
    /// Only for Hermes bytecode bundles.
    hermes_bytecode: Option<u32>,
    /// Packages with native code the app must contain, with the versions built against.
    native_modules: BTreeMap<String, String>,
    /// sha256 of all of the above; a client may send just this (`fingerprint=<hex>`).
    fingerprint: String,
}

impl From<Runtime> for RuntimeView {
    fn from(runtime: Runtime) -> Self {
        RuntimeView {
            react_native: runtime.react_native,
            expo_sdk: runtime.expo_sdk,
            hermes_bytecode: runtime.hermes_bytecode,
            native_modules: runtime.native_modules,
            fingerprint: runtime.fingerprint,
        }
    }
}

/// `409 RUNTIME_MISMATCH` when the client described by `described` cannot run `built`'s bundle
/// (builds from before runtimes were recorded have none, and are not checked).
fn check_runtime(built: &PreviewBuilt, described: Option<&str>) -> Result<(), ApiError> {
    let Some(described) = described.filter(|d| !d.trim().is_empty()) else {
        return Ok(());
    };
    let client = ClientRuntime::parse(described).map_err(|why| {
        Error::validation(format!("invalid runtime description: {why}"))
            .with_context("field", "runtime")
    })?;
    let Some(runtime) = &built.runtime else {
        return Ok(());
    };
    let differences = runtime.differences(&client);
    if differences.is_empty() {
        return Ok(());
    }
    let message = format!(
        "this bundle would not run in this app: {}",
        differences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let body = super::error::ErrorBody::new(ApiErrorCode::RuntimeMismatch.as_str(), message)
        .with_detail(
            "differences",
            serde_json::to_value(&differences).unwrap_or_default(),
        )
        .with_detail("runtime", serde_json::to_value(runtime).unwrap_or_default());
    Err(ApiError::Conflict(Json(body)))
}

/// Why a build failed.
#[derive(Debug, Object)]
struct BuildError {
    /// `PREVIEW_BUILD_FAILED`, `PREVIEW_TIMEOUT`, `MISSING_DEPENDENCIES`,
    /// `INVALID_PROJECT_STRUCTURE`, `STORAGE_UPLOAD_FAILED`, ...
    code: String,
    message: String,
}

/// Where a build stands.
#[derive(Debug, Object)]
struct StatusView {
    job_id: Uuid,
    project_id: Uuid,
    platform: Option<PlatformView>,
    /// `queued`, `building`, `bundling`, `uploading`, `success` or `failed` (or `cancelled`).
    status: String,
    /// From 0 to 1: 0.10 checkout, 0.25 dependencies, 0.50 bundling, 0.80 packaging, 1 ready.
    progress: f64,
    phase: Option<String>,
    error: Option<BuildError>,
    /// The build ran out of time (`PREVIEW_TIMEOUT`).
    timeout: bool,
    cache: Option<CacheView>,
    #[oai(rename = "ref")]
    git_ref: Option<String>,
    commit: Option<String>,
    /// The zip's size and sha256, once built.
    bytes: Option<u64>,
    sha256: Option<String>,
    bundler: Option<String>,
    bundler_version: Option<String>,
    /// What the app that runs the bundle must be, once built.
    runtime: Option<RuntimeView>,
    /// What installed the dependencies: `npm`, `yarn 1.22.22`, `pnpm 10.34.9`.
    package_manager: Option<String>,
    /// The lockfile they were installed from; absent when the project has none.
    lockfile: Option<String>,
    /// What the developer should know about the build, such as a missing lockfile.
    warnings: Vec<String>,
    /// The build whose bundle this is, when it was reused.
    built_by: Option<String>,
    download_url: Option<String>,
    logs_url: String,
    attempts: u32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// A bundle, or part of one.
#[derive(Debug, ApiResponse)]
enum DownloadResponse {
    /// The whole `bundle.zip`.
    #[oai(status = 200, content_type = "application/zip")]
    Full(
        Binary<Body>,
        /// The zip's sha256, quoted.
        #[oai(header = "ETag")]
        String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Accept-Ranges")] String,
        #[oai(header = "Content-Disposition")] String,
    ),
    /// The requested byte range.
    #[oai(status = 206, content_type = "application/zip")]
    Partial(
        Binary<Body>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
    ),
    /// The `If-None-Match` tag still matches.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
    /// Fetch it from the object store (`PREVIEW_DOWNLOAD_REDIRECT`).
    #[oai(status = 302)]
    Redirect(#[oai(header = "Location")] String),
    /// The range is outside the bundle.
    #[oai(status = 416)]
    RangeNotSatisfiable(
        Json<super::error::ErrorBody>,
        #[oai(header = "Content-Range")] String,
    ),
}

#[derive(Debug)]
pub struct PreviewApi {
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/preview", tag = "PreviewTags::Preview")]
impl PreviewApi {
    /// Create a preview token
    ///
    /// For a member of the project. The token lets a phone build previews of this project for
    /// this platform until it expires (`PREVIEW_TOKEN_TTL_SECONDS`), with no other credentials.
    #[oai(path = "/token", method = "post", operation_id = "createPreviewToken")]
    async fn token(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<TokenRequest>,
    ) -> Result<Json<TokenResponse>, ApiError> {
        let state = &self.state;
        let body = body.0;
        let project = ProjectId::from_uuid(body.project_id);
        authorize(state, auth.0, project, Needs::Read).await?;
        let git_ref = match body.git_ref {
            Some(git_ref) => {
                validate_ref(git_ref.as_str())?;
                // A token for a ref the project lacks would only fail later, on the phone.
                let repos = state.repos.clone();
                let rev = git_ref.0.clone();
                blocking(move || repos.revision(project, &rev)).await?;
                Some(git_ref.0)
            }
            None => None,
        };
        let now = state.clock.now().timestamp();
        let ttl = state.config.preview.token_ttl.as_secs();
        let grant = PreviewGrant {
            project_id: project,
            user_id: auth.0.user_id,
            platform: body.platform.into(),
            git_ref: git_ref.clone(),
        };
        let token = state.preview_tokens.sign(&grant, now, ttl as i64)?;
        let preview_url = format!("{}/preview#token={token}", public_base(state, req));
        let qr_svg = crate::qr::svg(&preview_url).map_err(|err| {
            Error::internal("cannot encode the QR code").with_context("cause", err)
        })?;
        tracing::info!(project_id = %project, user_id = %auth.0.user_id, platform = %grant.platform, "preview token issued");
        Ok(Json(TokenResponse {
            expires_at: Utc
                .timestamp_opt(now + ttl as i64, 0)
                .single()
                .unwrap_or_else(Utc::now),
            expires_in: ttl,
            project_id: body.project_id,
            platform: body.platform,
            git_ref,
            preview_url,
            qr_svg,
            token,
        }))
    }

    /// Build a preview
    ///
    /// Authorised by the preview token alone. Answers at once: with a queued build, with an
    /// identical build already running (shared), or with an identical earlier build's bundle
    /// (`cached`, status `success`). Rate limited per user and project
    /// (`PREVIEW_BUILDS_PER_MINUTE`).
    #[oai(path = "/build", method = "post", operation_id = "buildPreview")]
    async fn build(
        &self,
        auth: PreviewTokenAuth,
        body: Json<BuildRequest>,
    ) -> Result<BuildResponse, ApiError> {
        let state = &self.state;
        let claims = auth.0;
        let body = body.0;
        let git_ref = match (&claims.git_ref, body.git_ref) {
            (Some(pinned), Some(asked)) if *pinned != asked.0 => {
                return Err(ApiError::forbidden(format!(
                    "this preview token is for ref {pinned}"
                )));
            }
            (_, Some(asked)) => asked.0,
            (Some(pinned), None) => pinned.clone(),
            (None, None) => DEFAULT_REF.to_owned(),
        };
        validate_ref(&git_ref)?;
        if state
            .store
            .get_role(claims.project_id, claims.user_id)
            .await?
            .is_none()
        {
            return Err(ApiError::forbidden(
                "the preview token's user is no longer a member of the project",
            ));
        }
        let env = body
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, value.0))
            .collect();
        let order = BuildOrder {
            project_id: claims.project_id,
            user_id: claims.user_id,
            platform: claims.platform,
            git_ref,
            app_dir: body.app.map(|app| app.0),
            env,
            token_version: TOKEN_VERSION as u8,
            token_id: Some(claims.jti.clone()),
        };
        // A malformed request (bad environment, unknown ref) does not count against the caller's
        // allowance.
        let prepared = state.previews.prepare(order).await?;
        let decision = state
            .rate_limiter
            .check(
                &format!("preview:build:{}:{}", claims.user_id, claims.project_id),
                state.build_quota,
            )
            .await?;
        refuse_unless_allowed(decision)?;
        let toolchain = current_toolchain().await?;
        let requested = state.previews.request(prepared, &toolchain).await?;
        let job = requested.job;
        tracing::info!(
            job_id = %job.id, project_id = %claims.project_id, platform = %claims.platform,
            commit = %requested.revision.commit, cached = requested.reused.is_some(),
            shared = requested.shared, "preview build requested"
        );
        Ok(BuildResponse::Accepted(Json(BuildAccepted {
            job_id: job.id.as_uuid(),
            status: job.state.to_string(),
            commit: requested.revision.commit,
            cached: requested.reused.is_some(),
            shared: requested.shared,
            status_url: format!("{}/preview/status/{}", super::API_PREFIX, job.id),
        })))
    }

    /// A build's status
    ///
    /// State, progress, phase, the error when it failed, the timeout flag, which caches hit, and
    /// timestamps. For a member, or a preview token of the build's project and platform.
    #[oai(
        path = "/status/:job_id",
        method = "get",
        operation_id = "previewStatus"
    )]
    async fn status(
        &self,
        auth: PreviewOrMemberAuth,
        job_id: Path<Uuid>,
    ) -> Result<Json<StatusView>, ApiError> {
        let build = self.readable_build(&auth.0, job_id.0).await?;
        Ok(Json(status_view(&build)))
    }

    /// Download a bundle
    ///
    /// The build's `bundle.zip`, with `Content-Length`, an `ETag` (its sha256) and byte ranges;
    /// or, with `PREVIEW_DOWNLOAD_REDIRECT` and an S3 store, a redirect to a presigned URL.
    ///
    /// A client that describes its runtime (`X-HiveSync-Runtime` or `?runtime=`, as
    /// `react-native=0.86.3;expo-sdk=57.0.0;react-native-screens=4.26.2` or
    /// `fingerprint=<hex>`) is answered `409 RUNTIME_MISMATCH`, naming each difference, when the
    /// bundle needs another React Native minor, Expo SDK, Hermes bytecode version or native
    /// module version than it has.
    #[oai(
        path = "/download/:job_id",
        method = "get",
        operation_id = "downloadPreview"
    )]
    async fn download(
        &self,
        auth: PreviewOrMemberAuth,
        job_id: Path<Uuid>,
        #[oai(name = "Range")] range: Header<Option<String>>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
        /// The client's runtime, as `key=value;…` (see above).
        #[oai(name = "X-HiveSync-Runtime")]
        runtime_header: Header<Option<String>>,
        /// The client's runtime, when it cannot set a header.
        runtime: Query<Option<String>>,
    ) -> Result<DownloadResponse, ApiError> {
        let state = &self.state;
        let build = self.readable_build(&auth.0, job_id.0).await?;
        let built = build.bundle()?;
        check_runtime(built, runtime_header.0.as_deref().or(runtime.0.as_deref()))?;
        let bundle = Bundle {
            key: built.bundle_key.clone(),
            bytes: built.bytes,
            sha256: built.sha256.clone(),
        };
        let etag = format!("\"{}\"", bundle.sha256);
        if super::conditional::not_modified(if_none_match.0.as_deref(), &etag) {
            return Ok(DownloadResponse::NotModified(etag));
        }
        let key = ObjectKey::new(&bundle.key)?;
        if state.config.preview.download_redirect && state.objects.capabilities().presign {
            let url = state
                .objects
                .presign_get(&key, std::time::Duration::from_secs(PRESIGN_SECONDS))
                .await?;
            return Ok(DownloadResponse::Redirect(url));
        }
        let range = match parse_range(range.0.as_deref(), bundle.bytes) {
            Ok(range) => range,
            Err(()) => {
                return Ok(DownloadResponse::RangeNotSatisfiable(
                    Json(
                        super::error::ErrorBody::new(
                            ApiErrorCode::ValidationError.as_str(),
                            "the range is outside the bundle",
                        )
                        .with_detail("bytes", bundle.bytes),
                    ),
                    format!("bytes */{}", bundle.bytes),
                ));
            }
        };
        let span = range.clone().unwrap_or(0..bundle.bytes);
        let body = self.bundle_body(&bundle, &key, span.clone()).await?;
        let length = span.end - span.start;
        Ok(match range {
            Some(range) => DownloadResponse::Partial(
                Binary(body),
                etag,
                length,
                format!("bytes {}-{}/{}", range.start, range.end - 1, bundle.bytes),
            ),
            None => DownloadResponse::Full(
                Binary(body),
                etag,
                length,
                "bytes".to_owned(),
                format!("attachment; filename=\"preview-{}.zip\"", build.job.id),
            ),
        })
    }

    /// A build's log
    ///
    /// `build.log`: every step with its timings, and the bundler's own words when it failed.
    /// While the build runs, the log so far (copied from the worker every two seconds).
    #[oai(path = "/logs/:job_id", method = "get", operation_id = "previewLogs")]
    async fn logs(
        &self,
        auth: PreviewOrMemberAuth,
        job_id: Path<Uuid>,
    ) -> Result<PlainText<String>, ApiError> {
        let state = &self.state;
        let build = self.readable_build(&auth.0, job_id.0).await?;
        let job = &build.job;
        // The object the worker keeps up to date while the build runs: every server reads the same
        // log, whether or not it shares a disk with the worker.
        let builder = build.built.as_ref().map_or(job.id, |b| b.builder(job.id));
        let key = PreviewFiles::log_object(build.request.project_id, builder)?;
        if state.objects.head(&key).await?.is_some() {
            use hivesync_core::ports::ObjectStoreExt;
            let bytes = state.objects.get_bytes(&key).await?;
            return Ok(PlainText(String::from_utf8_lossy(&bytes).into_owned()));
        }
        Err(ApiError::not_found(if job.state == JobState::Queued {
            "the build has not started; it has no log yet"
        } else if !job.state.is_terminal() {
            "the build has no log yet; try again in a moment"
        } else {
            "this build's log is no longer kept"
        }))
    }
}

impl PreviewApi {
    /// The preview build `id`, if `caller` may read it; `404` otherwise. One read: the job joined
    /// to the caller's membership of its project.
    async fn readable_build(&self, caller: &PreviewCaller, id: Uuid) -> Result<Build, ApiError> {
        let hidden = || ApiError::not_found("no such preview build");
        let user = match caller {
            PreviewCaller::Member(caller) => caller.user_id,
            PreviewCaller::Token(claims) => claims.user_id,
        };
        let state = &self.state;
        let job = state
            .job_cache
            .get(state.store.as_ref(), JobId::from_uuid(id), user)
            .await?
            .filter(|job| job.kind == PREVIEW_JOB_KIND)
            .ok_or_else(hidden)?;
        if let PreviewCaller::Token(claims) = caller
            && job.project_id != Some(claims.project_id)
        {
            return Err(hidden());
        }
        let build = Build::of(job)?;
        if let PreviewCaller::Token(claims) = caller {
            // A token pinned to a ref reads only builds of that ref.
            let pinned_elsewhere = claims
                .git_ref
                .as_deref()
                .is_some_and(|pinned| build.request.asked_ref() != pinned);
            if build.job.project_id != Some(claims.project_id)
                || build.request.platform != claims.platform
                || pinned_elsewhere
            {
                return Err(hidden());
            }
        }
        Ok(build)
    }

    /// The bundle's bytes in `span`, from the object store (the filesystem store in embedded
    /// mode), never from a worker's disk.
    async fn bundle_body(
        &self,
        bundle: &Bundle,
        key: &ObjectKey,
        span: Range<u64>,
    ) -> Result<Body, ApiError> {
        let stored = if span.start == 0 && span.end == bundle.bytes {
            self.state.objects.get(key, None).await?
        } else {
            self.state.objects.get(key, Some(span)).await?
        };
        Ok(Body::from_bytes_stream(
            stored.body.map_err(std::io::Error::other),
        ))
    }
}

/// A preview build's record, read as one.
struct Build {
    job: Arc<Job>,
    request: PreviewRequest,
    /// The result, once the build succeeded.
    built: Option<PreviewBuilt>,
}

impl Build {
    /// The record read as a preview build. A payload that does not read is the server's fault
    /// (`500`, logged); a result that does not read leaves the status without it.
    fn of(job: Arc<Job>) -> Result<Build, ApiError> {
        let request = job.payload_as::<PreviewRequest>().map_err(|err| {
            tracing::error!(job_id = %job.id, error = %err, "a preview build record does not read");
            Error::internal("this build's record does not read")
        })?;
        let built = job.output_as::<PreviewRequest>().unwrap_or_else(|err| {
            tracing::error!(job_id = %job.id, error = %err, "a preview build's result does not read");
            None
        });
        Ok(Build {
            job,
            request,
            built,
        })
    }

    /// The result of a successful build; `409` for any other.
    fn bundle(&self) -> Result<&PreviewBuilt, ApiError> {
        if self.job.state != JobState::Success {
            return Err(Error::conflict(format!(
                "the build is {}; only a successful build has a bundle",
                self.job.state
            ))
            .with_context("status", self.job.state)
            .into());
        }
        self.built
            .as_ref()
            .ok_or_else(|| Error::internal("a successful build without a bundle").into())
    }
}

/// The bundle a download serves.
struct Bundle {
    key: String,
    bytes: u64,
    sha256: String,
}

fn status_view(build: &Build) -> StatusView {
    let (job, request) = (&build.job, &build.request);
    let built = build.built.as_ref();
    let id = job.id.to_string();
    StatusView {
        job_id: job.id.as_uuid(),
        project_id: job.project_id.map(|p| p.as_uuid()).unwrap_or_default(),
        platform: Some(request.platform.into()),
        status: job.state.to_string(),
        progress: job.progress,
        phase: job.phase.clone(),
        timeout: job.error_code.as_deref() == Some(ApiErrorCode::PreviewTimeout.as_str()),
        error: job.error_code.clone().map(|code| BuildError {
            // An internal failure's own words may name server paths or backends: they stay in the
            // server's logs.
            message: if code == ApiErrorCode::InternalError.as_str() {
                "the build failed inside the server; its operators have the details".to_owned()
            } else {
                job.error_message.clone().unwrap_or_default()
            },
            code,
        }),
        cache: built.map(|b| CacheView {
            build: b.cache.build.map(|c| {
                match c {
                    BuildCache::Hit => "hit",
                    BuildCache::Miss => "miss",
                    BuildCache::Other => "other",
                }
                .to_owned()
            }),
            dependencies: b.cache.dependencies.clone(),
            metro_warm: b.cache.metro_warm,
        }),
        git_ref: Some(request.asked_ref().to_owned()),
        commit: built
            .and_then(|b| b.commit.clone())
            .or_else(|| request.pinned_commit().map(str::to_owned)),
        bytes: built.map(|b| b.bytes),
        sha256: built.map(|b| b.sha256.clone()),
        bundler: built.and_then(|b| b.bundler.clone()),
        bundler_version: built.and_then(|b| b.bundler_version.clone()),
        runtime: built.and_then(|b| b.runtime.clone()).map(RuntimeView::from),
        package_manager: built.and_then(|b| b.package_manager.clone()),
        lockfile: built.and_then(|b| b.lockfile.clone()),
        warnings: built.map(|b| b.warnings.clone()).unwrap_or_default(),
        built_by: built.and_then(|b| b.built_by).map(|id| id.to_string()),
        download_url: (job.state == JobState::Success)
            .then(|| format!("{}/preview/download/{id}", super::API_PREFIX)),
        logs_url: format!("{}/preview/logs/{id}", super::API_PREFIX),
        attempts: job.attempts,
        created_at: job.created_at,
        updated_at: job.updated_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
    }
}

/// A `Range` header against a bundle of `len` bytes (not `headers::Range`: 0.4 drops a suffix range
/// longer than the body, which RFC 9110 §14.1.2 serves whole): `Ok(None)` for the whole bundle (no header,
/// or one this server does not serve partially, like several ranges), `Ok(Some(range))` for a
/// satisfiable single range, `Err(())` for one outside the bundle.
fn parse_range(header: Option<&str>, len: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        // The last `end` bytes.
        let Ok(suffix) = end.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 {
            return Err(());
        }
        len.saturating_sub(suffix)..len
    } else {
        let Ok(first) = start.parse::<u64>() else {
            return Ok(None);
        };
        let last = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(last) if last >= first => last.min(len.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if first >= len {
            return Err(());
        }
        first..last + 1
    };
    Ok(Some(range))
}

fn refuse_unless_allowed(decision: RateDecision) -> Result<(), ApiError> {
    if decision.allowed {
        Ok(())
    } else {
        Err(Error::rate_limited(decision.retry_after).into())
    }
}

async fn current_toolchain() -> Result<Toolchain, ApiError> {
    tokio::task::spawn_blocking(|| toolchain().clone())
        .await
        .map_err(|err| ApiError::from(Error::internal("toolchain").with_context("cause", err)))
}

/// This server's external base URL: `PUBLIC_URL`, or the request's `Host` (over `https` only when
/// a trusted proxy says so).
fn public_base(state: &AppState, req: &Request) -> String {
    if let Some(url) = &state.config.preview.public_url {
        return url.clone();
    }
    let headers = req.headers();
    let host = headers
        .get(poem::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let https = state.config.http.trust_proxy_headers
        && headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=50-5000"), 100), Ok(Some(50..100)));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 100), Err(()));
        // Unparseable or multiple ranges: the whole body.
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=9-2"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-"), 100), Ok(None));
    }
}
