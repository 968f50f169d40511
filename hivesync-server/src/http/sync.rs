//! Project sync and browsing: `/projects/{id}/sync`, `/sync/plan`, `/sync/commit`, `/import`,
//! `/refs`, `/tree` and `/files/{path}`.
//!
//! Uploads are raw request bodies, spooled to `DATA_DIR/tmp` while their size is counted (so a
//! large upload never sits in memory) and handed to [`Repos`] on a blocking thread. Editors and
//! owners write; viewers browse; non-members get `NOT_FOUND`.

use std::path::PathBuf;
use std::sync::Arc;

use hivesync_core::config::DataSubdir;
use hivesync_core::domain::ProjectId;
use hivesync_core::repo::{
    ArchiveKind, Author, BranchName, CommitId, CommitRequest, EntryMode, ExpectedParent,
    ImportOutcome, Manifest, ManifestEntry, RefInfo, RefKind, Repos, SyncOutcome, TreeEntryKind,
    TreeListing,
};
use hivesync_core::{Error, ErrorKind};
use poem::Body;
use poem::http::{HeaderValue, StatusCode, header};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiRequest, ApiResponse, Enum, Object, OpenApi, Tags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::error::ApiError;
use super::projects::{Needs, authorize};
use super::security::{BearerAuth, Caller};
use super::text::{BranchRule, ImportRefRule, ImportUrlRule, Ruled, Text, TreePathRule};
use crate::state::AppState;

#[derive(Tags)]
enum SyncTags {
    /// Sending a project's tree to HiveSync: whole archives, delta syncs, imports.
    Sync,
    /// Reading a project's branches, directories and files.
    Browse,
}

/// A tree, as the raw request body.
#[derive(Debug, ApiRequest)]
enum TreeUpload {
    /// A tar archive.
    #[oai(content_type = "application/x-tar")]
    Tar(Binary<Body>),
    /// A gzip-compressed tar archive.
    #[oai(content_type = "application/gzip")]
    Gzip(Binary<Body>),
    /// A zip archive.
    #[oai(content_type = "application/zip")]
    Zip(Binary<Body>),
}

impl TreeUpload {
    fn into_parts(self) -> (ArchiveKind, Body) {
        match self {
            TreeUpload::Tar(body) => (ArchiveKind::Tar, body.0),
            TreeUpload::Gzip(body) => (ArchiveKind::TarGz, body.0),
            TreeUpload::Zip(body) => (ArchiveKind::Zip, body.0),
        }
    }
}

/// A delta-sync upload: a tar of `manifest.json` and `blobs/<hash>` for each missing content.
#[derive(Debug, ApiRequest)]
enum DeltaUpload {
    /// A tar archive.
    #[oai(content_type = "application/x-tar")]
    Tar(Binary<Body>),
    /// A gzip-compressed tar archive.
    #[oai(content_type = "application/gzip")]
    Gzip(Binary<Body>),
}

/// What a file in a tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum FileModeView {
    File,
    Executable,
    /// A symbolic link; its content is the target, which must stay inside the project.
    Symlink,
}

impl From<FileModeView> for EntryMode {
    fn from(mode: FileModeView) -> Self {
        match mode {
            FileModeView::File => EntryMode::File,
            FileModeView::Executable => EntryMode::Executable,
            FileModeView::Symlink => EntryMode::Symlink,
        }
    }
}

/// One file of a manifest.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ManifestFileView {
    /// `/`-separated, relative to the project's top.
    path: Ruled<TreePathRule>,
    size: u64,
    mode: FileModeView,
    /// The git blob id: what `git hash-object <file>` prints.
    #[oai(validator(pattern = r"^[0-9a-f]{40}$"))]
    hash: Text,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct PlanRequest {
    /// The branch the commit will go to (default `main`).
    branch: Option<Ruled<BranchRule>>,
    /// Every file of the tree to commit.
    #[oai(validator(min_items = 1))]
    files: Vec<ManifestFileView>,
}

/// What the server lacks to commit a manifest.
#[derive(Debug, Object)]
struct PlanView {
    /// The branch head the plan was made against: pass it as `parent` to `/sync/commit`.
    head: Option<String>,
    /// Hashes whose contents `/sync/commit` must carry.
    missing: Vec<String>,
    /// Files in the manifest.
    files: u64,
}

/// The result of a sync.
#[derive(Debug, Object)]
struct SyncView {
    branch: String,
    /// The branch head after the sync.
    commit: String,
    parent: Option<String>,
    /// Whether a commit was made; an identical tree makes none.
    created: bool,
    added: u64,
    changed: u64,
    removed: u64,
    /// Files in the tree.
    files: u64,
    /// Contents stored that the repository did not have.
    stored: u64,
}

impl From<SyncOutcome> for SyncView {
    fn from(o: SyncOutcome) -> Self {
        SyncView {
            branch: o.branch,
            commit: o.commit,
            parent: o.parent,
            created: o.created,
            added: o.added as u64,
            changed: o.changed as u64,
            removed: o.removed as u64,
            files: o.files as u64,
            stored: o.stored as u64,
        }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct ImportRequest {
    /// `https://…`, `http://…`, or `file://…` below the server's `IMPORT_FILE_ROOTS`.
    url: Ruled<ImportUrlRule>,
    /// What to import: `HEAD` (default), a branch or tag name, or `refs/heads/…`/`refs/tags/…`.
    #[oai(rename = "ref")]
    reference: Option<Ruled<ImportRefRule>>,
    /// The branch to create or fast-forward (default `main`).
    branch: Option<Ruled<BranchRule>>,
}

/// The result of an import.
#[derive(Debug, Object)]
struct ImportView {
    branch: String,
    commit: String,
    /// The branch head before the import.
    previous: Option<String>,
    /// Whether the branch moved.
    updated: bool,
    files: u64,
}

impl From<ImportOutcome> for ImportView {
    fn from(o: ImportOutcome) -> Self {
        ImportView {
            branch: o.branch,
            commit: o.commit,
            previous: o.previous,
            updated: o.updated,
            files: o.files as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
enum RefKindView {
    Branch,
    Tag,
}

/// A branch or tag.
#[derive(Debug, Object)]
struct RefView {
    /// `refs/heads/main`
    name: String,
    /// `main`
    short_name: String,
    kind: RefKindView,
    commit: String,
}

impl From<RefInfo> for RefView {
    fn from(r: RefInfo) -> Self {
        RefView {
            name: r.name,
            short_name: r.short_name,
            kind: match r.kind {
                RefKind::Branch => RefKindView::Branch,
                RefKind::Tag => RefKindView::Tag,
            },
            commit: r.commit,
        }
    }
}

#[derive(Debug, Object)]
struct RefList {
    items: Vec<RefView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
enum TreeEntryKindView {
    File,
    Executable,
    Symlink,
    Directory,
    Submodule,
}

/// An entry of a directory.
#[derive(Debug, Object)]
struct TreeEntryView {
    name: String,
    path: String,
    kind: TreeEntryKindView,
    /// Content size of files and links.
    size: Option<u64>,
    /// The object id (for files, also the `ETag` of `/files/{path}`).
    id: String,
}

/// A directory of a commit.
#[derive(Debug, Object)]
struct TreeView {
    commit: String,
    /// The directory, `""` at the top.
    path: String,
    entries: Vec<TreeEntryView>,
}

impl From<TreeListing> for TreeView {
    fn from(t: TreeListing) -> Self {
        TreeView {
            commit: t.commit,
            path: t.path,
            entries: t
                .entries
                .into_iter()
                .map(|e| TreeEntryView {
                    name: e.name,
                    path: e.path,
                    kind: match e.kind {
                        TreeEntryKind::File => TreeEntryKindView::File,
                        TreeEntryKind::Executable => TreeEntryKindView::Executable,
                        TreeEntryKind::Symlink => TreeEntryKindView::Symlink,
                        TreeEntryKind::Directory => TreeEntryKindView::Directory,
                        TreeEntryKind::Submodule => TreeEntryKindView::Submodule,
                    },
                    size: e.size,
                    id: e.id,
                })
                .collect(),
        }
    }
}

/// A file's raw content.
#[derive(Debug, ApiResponse)]
pub enum FileResponse {
    /// The content, typed by the file's extension (`application/octet-stream` otherwise). For a
    /// link, its target.
    #[oai(status = 200)]
    Content(
        Binary<Vec<u8>>,
        /// The blob id, quoted.
        #[oai(header = "ETag")]
        String,
        /// `file`, `executable` or `symlink`.
        #[oai(header = "X-HiveSync-Mode")]
        String,
        /// The commit the file was read from.
        #[oai(header = "X-HiveSync-Commit")]
        String,
    ),
    /// The `If-None-Match` tag still matches.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

#[derive(Debug)]
pub struct SyncApi {
    pub state: Arc<AppState>,
}

/// A spooled upload, removed when dropped.
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `body` to a new file under `DATA_DIR/tmp`, refusing it once it passes `limit` bytes.
async fn spool(state: &AppState, body: Body, limit: u64) -> Result<Spooled, ApiError> {
    let dir = state.config.data_path(DataSubdir::Tmp);
    tokio::fs::create_dir_all(&dir).await.map_err(Error::from)?;
    let spooled = Spooled(dir.join(format!("upload-{}", Uuid::new_v4())));
    let mut file = tokio::fs::File::create(&spooled.0)
        .await
        .map_err(Error::from)?;
    let mut reader = body.into_async_read();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let read = reader.read(&mut buffer).await.map_err(|err| {
            Error::validation("the request body could not be read").with_context("cause", err)
        })?;
        if read == 0 {
            break;
        }
        total += read as u64;
        if total > limit {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the upload is larger than {limit} bytes"),
            )
            .with_context("limit_bytes", limit)
            .into());
        }
        file.write_all(&buffer[..read]).await.map_err(Error::from)?;
    }
    file.flush().await.map_err(Error::from)?;
    Ok(spooled)
}

/// The query parameters of a commit (`/sync`, `/sync/commit`).
struct CommitQuery {
    branch: Option<String>,
    message: Option<String>,
    parent: Option<String>,
    force: Option<bool>,
}

impl CommitQuery {
    fn new(
        branch: Query<Option<Ruled<BranchRule>>>,
        message: Query<Option<String>>,
        parent: Query<Option<String>>,
        force: Query<Option<bool>>,
    ) -> Self {
        CommitQuery {
            branch: branch.0.map(Ruled::into_string),
            message: message.0,
            parent: parent.0,
            force: force.0,
        }
    }
}

/// Runs a blocking repository operation off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> hivesync_core::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal("a repository operation failed").with_context("cause", err))?
        .map_err(ApiError::from)
}

fn branch_or_main(raw: Option<&str>) -> Result<BranchName, ApiError> {
    Ok(BranchName::parse(raw.unwrap_or("main"))
        .map_err(|err| err.with_context("field", "branch"))?)
}

/// `parent`: absent or empty for "whatever the head is", `none` for "the branch must not exist",
/// or the commit the client last saw.
fn expected_parent(raw: Option<&str>) -> Result<ExpectedParent, ApiError> {
    Ok(match raw.map(str::trim) {
        None | Some("") => ExpectedParent::Current,
        Some("none") => ExpectedParent::NoBranch,
        Some(id) => ExpectedParent::Commit(CommitId::parse(id)?),
    })
}

impl SyncApi {
    async fn author(&self, caller: Caller) -> Result<Author, ApiError> {
        let user = self
            .state
            .store
            .get_user(caller.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
        Ok(Author {
            name: user.display_name,
            email: user.email.to_string(),
        })
    }

    async fn commit_request(
        &self,
        caller: Caller,
        query: CommitQuery,
    ) -> Result<CommitRequest, ApiError> {
        Ok(CommitRequest {
            branch: branch_or_main(query.branch.as_deref())?,
            message: query.message.unwrap_or_default(),
            expected_parent: expected_parent(query.parent.as_deref())?,
            force: query.force.unwrap_or(false),
            author: self.author(caller).await?,
        })
    }

    /// What `/sync` and `/sync/commit` share: the caller may edit the project, the query makes a
    /// commit request, and the body is spooled (up to `limit` bytes) and committed off the async
    /// threads by `commit`.
    async fn commit_spooled(
        &self,
        caller: Caller,
        project: ProjectId,
        query: CommitQuery,
        body: poem::Body,
        limit: u64,
        commit: impl FnOnce(
            &Repos,
            &std::path::Path,
            &CommitRequest,
        ) -> hivesync_core::Result<SyncOutcome>
        + Send
        + 'static,
    ) -> Result<SyncOutcome, ApiError> {
        // Both read the Store: one wait rather than two. The authorization's answer comes
        // first whatever the other's, and the body is read only once the caller may edit.
        let (allowed, request) = tokio::join!(
            authorize(&self.state, caller, project, Needs::Edit),
            self.commit_request(caller, query)
        );
        allowed?;
        let request = request?;
        let spooled = spool(&self.state, body, limit).await?;
        let repos = self.repos();
        blocking(move || {
            let outcome = commit(&repos, &spooled.0, &request);
            drop(spooled);
            outcome
        })
        .await
    }

    fn repos(&self) -> Arc<Repos> {
        self.state.repos.clone()
    }
}

#[OpenApi]
impl SyncApi {
    /// Sync a tree
    ///
    /// The request body is the whole tree as a tar, gzip-compressed tar or zip archive
    /// (`curl --data-binary @tree.tar -H 'Content-Type: application/x-tar'`). It becomes one
    /// commit on `branch` whose parent is the branch head; an identical tree makes no commit.
    /// With `parent` (a commit id, or `none` for a new branch) a sync against a head that moved
    /// is `409 CONFLICT` unless `force` is set; a forced sync still keeps the current head as its
    /// parent, so no commit is lost. Absolute paths, `..`, `.git`, links leaving the tree and
    /// device files are refused (400); limits on file size, upload size and file count give 413.
    /// A refused upload leaves the repository unchanged. Owners and editors.
    #[oai(
        path = "/projects/:id/sync",
        method = "post",
        operation_id = "syncTree",
        tag = "SyncTags::Sync"
    )]
    // Each query parameter is an argument: that is how poem-openapi documents them.
    #[allow(clippy::too_many_arguments)]
    async fn sync(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        branch: Query<Option<Ruled<BranchRule>>>,
        message: Query<Option<String>>,
        parent: Query<Option<String>>,
        force: Query<Option<bool>>,
        body: TreeUpload,
    ) -> Result<Json<SyncView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        let query = CommitQuery::new(branch, message, parent, force);
        let (kind, body) = body.into_parts();
        let limit = self.state.config.sync.max_upload_bytes;
        let outcome = self
            .commit_spooled(
                auth.0,
                project,
                query,
                body,
                limit,
                move |repos, file, request| repos.sync_archive(project, kind, file, request),
            )
            .await?;
        tracing::info!(
            project_id = %project, branch = %outcome.branch, commit = %outcome.commit,
            created = outcome.created, added = outcome.added, changed = outcome.changed,
            removed = outcome.removed, stored = outcome.stored, "tree synced"
        );
        Ok(Json(outcome.into()))
    }

    /// Plan a delta sync
    ///
    /// Takes the manifest of the whole tree (path, size, mode and git blob hash of every file)
    /// and answers which contents the server lacks, each hash once, with the branch head to
    /// name as `parent` in `/sync/commit`. Owners and editors.
    #[oai(
        path = "/projects/:id/sync/plan",
        method = "post",
        operation_id = "planSync",
        tag = "SyncTags::Sync"
    )]
    async fn plan(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<PlanRequest>,
    ) -> Result<Json<PlanView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        authorize(&self.state, auth.0, project, Needs::Edit).await?;
        let body = body.0;
        let branch = branch_or_main(body.branch.as_ref().map(Ruled::as_str))?;
        // The document states this bound (`maximum`), so breaking it is a validation error here;
        // an archive's contents over it are still 413.
        let max_file_bytes = self.state.config.sync.max_file_bytes;
        if let Some((index, file)) = body
            .files
            .iter()
            .enumerate()
            .find(|(_, f)| f.size > max_file_bytes)
        {
            return Err(ApiError::from(
                Error::validation(format!(
                    "{} is {} bytes; files may be at most {max_file_bytes} bytes",
                    file.path.as_str(),
                    file.size
                ))
                .with_context("field", "size")
                .with_context("index", index),
            ));
        }
        let manifest = Manifest {
            files: body
                .files
                .into_iter()
                .map(|f| ManifestEntry {
                    path: f.path.into_string(),
                    size: f.size,
                    mode: f.mode.into(),
                    hash: f.hash.0,
                })
                .collect(),
        };
        let repos = self.repos();
        let plan = blocking(move || repos.plan(project, &branch, &manifest)).await?;
        Ok(Json(PlanView {
            head: plan.head,
            missing: plan.missing,
            files: plan.files as u64,
        }))
    }

    /// Commit a delta sync
    ///
    /// The body is a tar (or gzip-compressed tar) holding `manifest.json` — `{"files": [...]}`
    /// as sent to `/sync/plan` — and `blobs/<hash>` for each content the plan listed. Contents
    /// must hash to their names and match the manifest's sizes; a content neither sent nor
    /// stored is `400`. Query parameters as for `/sync`. Owners and editors.
    #[oai(
        path = "/projects/:id/sync/commit",
        method = "post",
        operation_id = "commitSync",
        tag = "SyncTags::Sync"
    )]
    // Each query parameter is an argument: that is how poem-openapi documents them.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        branch: Query<Option<Ruled<BranchRule>>>,
        message: Query<Option<String>>,
        parent: Query<Option<String>>,
        force: Query<Option<bool>>,
        body: DeltaUpload,
    ) -> Result<Json<SyncView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        let query = CommitQuery::new(branch, message, parent, force);
        let (kind, body) = match body {
            DeltaUpload::Tar(body) => (ArchiveKind::Tar, body.0),
            DeltaUpload::Gzip(body) => (ArchiveKind::TarGz, body.0),
        };
        let limit =
            self.state.config.sync.max_upload_bytes + self.state.config.sync.max_manifest_bytes;
        let outcome = self
            .commit_spooled(
                auth.0,
                project,
                query,
                body,
                limit,
                move |repos, file, request| repos.commit_upload(project, kind, file, request),
            )
            .await?;
        tracing::info!(
            project_id = %project, branch = %outcome.branch, commit = %outcome.commit,
            created = outcome.created, changed = outcome.changed, stored = outcome.stored,
            "delta sync committed"
        );
        Ok(Json(outcome.into()))
    }

    /// Import from a git repository
    ///
    /// Fetches `ref` from `url` and creates `branch` at it, or fast-forwards it; an import that
    /// does not descend from the branch head is `409` (import into a new branch instead). The
    /// imported tree passes the same checks as an upload. `file://` URLs are allowed only below
    /// the server's `IMPORT_FILE_ROOTS`, and `http(s)` only to public addresses unless
    /// `IMPORT_ALLOW_PRIVATE_NETWORKS` is set (403 otherwise). Owners and editors.
    #[oai(
        path = "/projects/:id/import",
        method = "post",
        operation_id = "importRepository",
        tag = "SyncTags::Sync"
    )]
    async fn import(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<ImportRequest>,
    ) -> Result<Json<ImportView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        authorize(&self.state, auth.0, project, Needs::Edit).await?;
        let body = body.0;
        let query = CommitQuery {
            branch: body.branch.map(Ruled::into_string),
            message: None,
            parent: None,
            force: None,
        };
        let request = self.commit_request(auth.0, query).await?;
        let url = body.url.into_string();
        let reference = body
            .reference
            .map_or_else(|| "HEAD".to_owned(), Ruled::into_string);
        let repos = self.repos();
        let outcome = blocking(move || repos.import(project, &url, &reference, &request)).await?;
        tracing::info!(
            project_id = %project, branch = %outcome.branch, commit = %outcome.commit,
            updated = outcome.updated, "repository imported"
        );
        Ok(Json(outcome.into()))
    }

    /// List branches and tags
    #[oai(
        path = "/projects/:id/refs",
        method = "get",
        operation_id = "listRefs",
        tag = "SyncTags::Browse"
    )]
    async fn refs(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<RefList>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        authorize(&self.state, auth.0, project, Needs::Read).await?;
        let repos = self.repos();
        let refs = blocking(move || repos.refs(project)).await?;
        Ok(Json(RefList {
            items: refs.into_iter().map(RefView::from).collect(),
        }))
    }

    /// List a directory
    ///
    /// `ref` is a branch, a tag or a commit id (default `main`); `path` a directory (default
    /// the top).
    #[oai(
        path = "/projects/:id/tree",
        method = "get",
        operation_id = "listTree",
        tag = "SyncTags::Browse"
    )]
    async fn tree(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        #[oai(name = "ref")] reference: Query<Option<String>>,
        path: Query<Option<String>>,
    ) -> Result<Json<TreeView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        authorize(&self.state, auth.0, project, Needs::Read).await?;
        let repos = self.repos();
        let rev = reference.0.unwrap_or_else(|| "main".to_owned());
        let path = path.0.unwrap_or_default();
        let listing = blocking(move || repos.tree(project, &rev, &path)).await?;
        Ok(Json(listing.into()))
    }

    /// Read a file
    ///
    /// The raw content of the file at `path` (its `/` may be written as is or as `%2F`) in
    /// `ref` (default `main`), typed by its extension, with the blob id as `ETag`.
    #[oai(
        path = "/projects/:id/files/:path",
        method = "get",
        operation_id = "readFile",
        tag = "SyncTags::Browse"
    )]
    async fn file(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        path: Path<String>,
        #[oai(name = "ref")] reference: Query<Option<String>>,
        #[oai(name = "If-None-Match")] if_none_match: poem_openapi::param::Header<Option<String>>,
    ) -> Result<FileResponse, ApiError> {
        read_file(
            &self.state,
            auth.0,
            id.0,
            path.0,
            reference.0,
            if_none_match.0,
        )
        .await
    }
}

async fn read_file(
    state: &Arc<AppState>,
    caller: Caller,
    id: Uuid,
    path: String,
    reference: Option<String>,
    if_none_match: Option<String>,
) -> Result<FileResponse, ApiError> {
    let project = ProjectId::from_uuid(id);
    authorize(state, caller, project, Needs::Read).await?;
    let repos = state.repos.clone();
    let rev = reference.unwrap_or_else(|| "main".to_owned());
    let file = blocking(move || repos.read_file(project, &rev, &path)).await?;
    let etag = format!("\"{}\"", file.id);
    if super::conditional::not_modified(if_none_match.as_deref(), &etag) {
        return Ok(FileResponse::NotModified(etag));
    }
    Ok(FileResponse::Content(
        Binary(file.bytes),
        etag,
        file.mode.as_str().to_owned(),
        file.commit,
    ))
}

/// The content type served for a file, by extension. Text types carry a charset; anything
/// unknown is `application/octet-stream`.
fn content_type_of(path: &str) -> &'static str {
    let extension = path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("js" | "mjs" | "cjs" | "jsx") => "text/javascript; charset=utf-8",
        Some("ts" | "tsx" | "md" | "txt" | "yml" | "yaml" | "toml" | "lock" | "gitignore") => {
            "text/plain; charset=utf-8"
        }
        Some("json" | "map") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ttf") => "font/ttf",
        Some("otf") => "font/otf",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// `GET /api/v1/projects/:id/files/*path`: the same operation as `readFile` for paths that
/// contain `/`, which an OpenAPI path parameter cannot. Also sets the content type, and the
/// headers that keep a browser from running what it serves (user content, possibly HTML).
#[poem::handler]
pub(crate) async fn file_route(req: &poem::Request) -> poem::Result<poem::Response> {
    let state = req
        .data::<Arc<AppState>>()
        .ok_or_else(|| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))?;
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing or malformed bearer token"))?;
    let claims = state
        .jwt
        .verify(token)
        .map_err(|err| ApiError::unauthorized(err.message().to_owned()))?;
    let caller = Caller {
        user_id: claims.sub,
    };
    let id: Uuid = req
        .path_params::<(String, String)>()
        .ok()
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| {
            ApiError::from(Error::validation("invalid project id").with_context("field", "id"))
        })?;
    let (_, path) = req.path_params::<(String, String)>()?;
    let reference = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "ref")
            .map(|(_, v)| v.into_owned())
    });
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = content_type_of(&path);
    let answer = read_file(state, caller, id, path, reference, if_none_match).await;
    let mut response = match answer {
        Ok(answer) => poem::IntoResponse::into_response(answer),
        Err(err) => return Err(err.into()),
    };
    let ok = response.status() == StatusCode::OK;
    let headers = response.headers_mut();
    if ok {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(
            content_type_of("src/App.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type_of("assets/icon.PNG"), "image/png");
        assert_eq!(content_type_of("Makefile"), "application/octet-stream");
        assert_eq!(content_type_of("dir.js/binary"), "application/octet-stream");
    }

    #[test]
    fn parents_parse_or_fail_clearly() {
        assert_eq!(expected_parent(None).unwrap(), ExpectedParent::Current);
        assert_eq!(
            expected_parent(Some("none")).unwrap(),
            ExpectedParent::NoBranch
        );
        assert!(expected_parent(Some("abc")).is_err());
    }
}
