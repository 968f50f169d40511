//! Project repositories: one bare git repository per project under `DATA_DIR/repos/<id>`,
//! written through gix.
//!
//! Clients send trees three ways — a whole archive ([`Repos::sync_archive`]), a manifest and
//! only the contents the server lacks ([`Repos::plan`], [`Repos::commit_upload`]), or a git URL
//! ([`Repos::import`]) — and each becomes one commit on a branch. The rules every path follows:
//!
//! - **Validate, then write.** Everything a client sends is checked (paths, entry types, link
//!   targets, sizes, counts, hashes) before the first object is written, so a rejected upload
//!   leaves the repository exactly as it was. Imports fetch into a quarantine repository under
//!   `DATA_DIR/tmp` and only move the fetched pack in once the tree passed the same checks.
//! - **Compare and swap.** A branch moves only from the head the commit was built on; a writer
//!   that lost a race gets `CONFLICT`, and even a forced sync keeps the current head as its
//!   parent. No commit is ever lost.
//! - **Nothing outside the tree.** Paths are [`RepoPath`]s (no absolute paths, `..` or `.git`),
//!   links must resolve inside the tree, and device files are refused.
//!
//! A commit that loses a race to move its branch leaves its objects unreachable (git's own
//! behaviour); nothing references them.
//!
//! Every method blocks (git is file I/O); async callers run them on a blocking thread.

mod archive;
mod checkout;
mod import;
mod path;
mod shared;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use gix::ObjectId;
use gix::objs::tree::EntryKind;
use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use serde::{Deserialize, Serialize};

pub use archive::ArchiveKind;
pub use checkout::{Checkout, Revision};
pub use import::{
    IMPORT_REF_PATTERN, IMPORT_URL_PATTERN, ImportOutcome, ImportPolicy, check_import_ref,
    is_private,
};
pub use path::{BranchName, RepoPath};
pub use shared::SharedRepos;
use shared::{Home, Missing, Need, ReadAhead, SharingContents};

use crate::config::{Config, DataSubdir, SyncConfig};
use crate::domain::ProjectId;
use crate::error::{Error, ErrorKind, Result};

/// The longest commit message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// What a file in a synced tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryMode {
    File,
    Executable,
    /// A symbolic link; its content is the link target.
    Symlink,
}

impl EntryMode {
    fn git_kind(self) -> EntryKind {
        match self {
            EntryMode::File => EntryKind::Blob,
            EntryMode::Executable => EntryKind::BlobExecutable,
            EntryMode::Symlink => EntryKind::Link,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryMode::File => "file",
            EntryMode::Executable => "executable",
            EntryMode::Symlink => "symlink",
        }
    }
}

/// Limits on what one sync may carry; exceeding one is `PAYLOAD_TOO_LARGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncLimits {
    pub max_file_bytes: u64,
    /// The upload itself, and the unpacked contents of an archive.
    pub max_upload_bytes: u64,
    pub max_files: usize,
    pub max_manifest_bytes: u64,
}

impl SyncLimits {
    pub fn from_config(config: &SyncConfig) -> Self {
        SyncLimits {
            max_file_bytes: config.max_file_bytes,
            max_upload_bytes: config.max_upload_bytes,
            max_files: config.max_files,
            max_manifest_bytes: config.max_manifest_bytes,
        }
    }
}

/// A commit id: 40 lowercase hex digits (SHA-1 repositories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitId(ObjectId);

impl CommitId {
    pub fn parse(raw: &str) -> Result<Self> {
        parse_object_id(raw)
            .map(CommitId)
            .map_err(|err| err.with_context("field", "parent"))
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn parse_object_id(raw: &str) -> Result<ObjectId> {
    let valid = raw.len() == 40
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(
            Error::validation("expected a 40-digit lowercase hex object id")
                .with_context("value", crate::domain::truncate_for_display(raw)),
        );
    }
    ObjectId::from_hex(raw.as_bytes()).map_err(|_| Error::validation("invalid object id"))
}

/// Which head a new commit must be built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedParent {
    /// Whatever the head is when the sync starts (still swapped atomically at the end).
    Current,
    /// The branch must not exist yet.
    NoBranch,
    /// The branch head must be this commit.
    Commit(CommitId),
}

/// Who a commit is by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// How a sync turns into a commit.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub branch: BranchName,
    pub message: String,
    pub expected_parent: ExpectedParent,
    /// Build on the current head even when it is not the expected parent (the current head
    /// stays the parent, so nothing is lost).
    pub force: bool,
    pub author: Author,
}

impl CommitRequest {
    fn validate(&self) -> Result<()> {
        if self.message.len() > MAX_MESSAGE_BYTES {
            return Err(Error::validation(format!(
                "the commit message is longer than {MAX_MESSAGE_BYTES} bytes"
            ))
            .with_context("field", "message"));
        }
        if self.message.contains('\0') {
            return Err(Error::validation("the commit message contains a NUL byte")
                .with_context("field", "message"));
        }
        Ok(())
    }
}

/// The result of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOutcome {
    pub branch: String,
    /// The branch head after the sync: the new commit, or the unchanged head.
    pub commit: String,
    pub parent: Option<String>,
    /// Whether a commit was made (an identical tree makes none).
    pub created: bool,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    /// Files in the tree.
    pub files: usize,
    /// File contents written that the repository did not have.
    pub stored: usize,
}

/// One file of a delta-sync manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub mode: EntryMode,
    /// The git blob id of the content: SHA-1 of `"blob <size>\0"` followed by the content (what
    /// `git hash-object` prints). A link's content is its target.
    pub hash: String,
}

/// The complete tree a client wants committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

/// What the server lacks to commit a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncPlan {
    /// The branch head the plan was made against.
    pub head: Option<String>,
    /// Hashes whose content must be uploaded, each once.
    pub missing: Vec<String>,
    pub files: usize,
}

/// A branch or tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefInfo {
    /// `refs/heads/main`, `refs/tags/v1`.
    pub name: String,
    /// `main`, `v1`.
    pub short_name: String,
    pub kind: RefKind,
    /// The commit it points to (tags peeled).
    pub commit: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    Branch,
    Tag,
}

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeEntryKind {
    File,
    Executable,
    Symlink,
    Directory,
    Submodule,
}

impl TreeEntryKind {
    fn of(kind: EntryKind) -> Self {
        match kind {
            EntryKind::Blob => TreeEntryKind::File,
            EntryKind::BlobExecutable => TreeEntryKind::Executable,
            EntryKind::Link => TreeEntryKind::Symlink,
            EntryKind::Tree => TreeEntryKind::Directory,
            EntryKind::Commit => TreeEntryKind::Submodule,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TreeEntryKind::File => "file",
            TreeEntryKind::Executable => "executable",
            TreeEntryKind::Symlink => "symlink",
            TreeEntryKind::Directory => "directory",
            TreeEntryKind::Submodule => "submodule",
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeEntry {
    pub name: String,
    pub path: String,
    pub kind: TreeEntryKind,
    /// Content size of files and links.
    pub size: Option<u64>,
    pub id: String,
}

/// A directory of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeListing {
    pub commit: String,
    /// The directory, `""` at the top.
    pub path: String,
    pub entries: Vec<TreeEntry>,
}

/// A file of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub commit: String,
    pub path: String,
    pub mode: EntryMode,
    pub id: String,
    pub bytes: Vec<u8>,
}

/// The repositories of all projects: on this node's disk alone (the embedded default), or shared
/// by several machines through the Store and the object store ([`SharedRepos`]), with the disk a
/// cache.
#[derive(Debug, Clone)]
pub struct Repos {
    root: PathBuf,
    tmp: PathBuf,
    limits: SyncLimits,
    import: ImportPolicy,
    shared: Option<Arc<SharedRepos>>,
}

/// A tree as a flat map: path → (kind, blob id).
type FlatTree = BTreeMap<String, (EntryKind, ObjectId)>;

/// The committer of every commit the server writes; the author is the user.
const COMMITTER_NAME: &str = "HiveSync";
const COMMITTER_EMAIL: &str = "hivesync@localhost";

/// Hashes a blob; SHA-1 collision detection refusing crafted content is the client's fault.
fn hash_blob(kind: gix::hash::Kind, bytes: &[u8]) -> Result<ObjectId> {
    gix::objs::compute_hash(kind, gix::objs::Kind::Blob, bytes).map_err(|err| {
        Error::validation("a file cannot be hashed: it looks crafted to collide in SHA-1")
            .with_context("cause", err)
    })
}

fn git_error(what: &'static str) -> impl FnOnce(gix::Error) -> Error {
    move |err| Error::internal(what).with_context("cause", err)
}

impl Repos {
    /// `root` holds one repository per project; `tmp` is scratch space on the same filesystem
    /// (import quarantines).
    pub fn new(root: PathBuf, tmp: PathBuf, limits: SyncLimits, import: ImportPolicy) -> Self {
        Repos {
            root,
            tmp,
            limits,
            import,
            shared: None,
        }
    }

    /// Keeps branch heads in the Store and objects in the object store, with `DATA_DIR/repos` a
    /// cache (see [`SharedRepos`]).
    pub fn with_sharing(mut self, shared: SharedRepos) -> Self {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// Whether repositories are shared with other nodes.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared half, when repositories are shared.
    pub fn shared(&self) -> Option<&SharedRepos> {
        self.shared.as_deref()
    }

    pub fn from_config(config: &Config) -> Self {
        Repos::new(
            config.data_path(DataSubdir::Repos),
            config.data_path(DataSubdir::Tmp),
            SyncLimits::from_config(&config.sync),
            ImportPolicy::from_config(config),
        )
    }

    pub fn limits(&self) -> &SyncLimits {
        &self.limits
    }

    /// `DATA_DIR/repos/<project>`.
    pub fn path_of(&self, project: ProjectId) -> PathBuf {
        self.root.join(project.to_string())
    }

    /// Creates the project's bare repository if it does not exist yet. Creation is atomic: the
    /// repository is laid out beside its final place and renamed into it.
    ///
    /// Only what git needs to open a bare repository is written (no hook samples, no probe of
    /// the filesystem): a new node's first request for a project pays for this.
    pub fn create(&self, project: ProjectId) -> Result<()> {
        let target = self.path_of(project);
        if target.join("HEAD").is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root)?;
        let staging = self.root.join(format!(".init-{}", uuid::Uuid::new_v4()));
        let result = (|| -> Result<()> {
            for dir in ["objects/info", "objects/pack", "refs/heads", "refs/tags"] {
                std::fs::create_dir_all(staging.join(dir))?;
            }
            std::fs::write(
                staging.join("config"),
                "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n",
            )?;
            // HEAD names `main`, the branch syncs use by default; written last, it marks the
            // repository complete.
            std::fs::write(staging.join("HEAD"), "ref: refs/heads/main\n")?;
            match std::fs::rename(&staging, &target) {
                Ok(()) => Ok(()),
                // Another request created it first.
                Err(_) if target.join("HEAD").is_file() => Ok(()),
                Err(err) => Err(err.into()),
            }
        })();
        if staging.exists() {
            // Our own staging directory, never anything a user made.
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    /// Moves a deleted project's repository out of `repos/` into `DATA_DIR/tmp`, where the
    /// cleanup worker removes it after `TMP_RETENTION_SECONDS` (until then an operator can still
    /// move it back). Nothing to do when the project never had one.
    pub fn retire(&self, project: ProjectId) -> Result<Option<PathBuf>> {
        let path = self.path_of(project);
        if !path.exists() {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.tmp)?;
        let target = self.tmp.join(format!(
            "deleted-project-{project}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::rename(&path, &target)?;
        // Cleanup ages tmp entries by their modification time: the retention counts from now.
        std::fs::File::open(&target)?.set_modified(std::time::SystemTime::now())?;
        Ok(Some(target))
    }

    fn open(&self, project: ProjectId) -> Result<ProjectRepo> {
        self.open_reading(project, None)
    }

    /// Opens the repository of a project whose `branch` the operation is about to read: shared,
    /// its head and trees are read from the Store while the operation goes on.
    fn open_reading(&self, project: ProjectId, branch: Option<&BranchName>) -> Result<ProjectRepo> {
        let path = self.path_of(project);
        if let Some(shared) = &self.shared
            && !path.join("HEAD").is_file()
        {
            // A cache deleted under this process holds nothing any more.
            shared.forget(project);
        }
        self.create(project)?;
        let mut repo = gix::open(&path).map_err(|err| {
            Error::internal("cannot open the project repository").with_context("cause", err)
        })?;
        if self.shared.is_some() {
            // Commits and trees fetched or written during the operation stay in memory and reach
            // the disk after it (see `Drop for ProjectRepo`): a cold cache costs a database
            // round trip per tree level, not a file per tree.
            repo = repo.with_object_memory();
        }
        let project_repo = ProjectRepo {
            repo,
            limits: self.limits,
            files_cache: RefCell::default(),
            remote: self.shared.clone().map(|shared| Remote {
                shared,
                project,
                hydrated: RefCell::default(),
                heads: RefCell::default(),
                read_ahead: RefCell::default(),
                sharing: RefCell::default(),
            }),
        };
        project_repo.adopt_local_branches()?;
        if let (Some(remote), Some(branch)) = (&project_repo.remote, branch) {
            *remote.read_ahead.borrow_mut() = Some(remote.shared.read_ahead(
                project,
                project_repo.repo.path().join("objects"),
                project_repo.repo.object_hash(),
                branch.full_ref(),
            ));
        }
        Ok(project_repo)
    }

    /// Commits the tree in the archive at `file` (a spooled request body).
    pub fn sync_archive(
        &self,
        project: ProjectId,
        kind: ArchiveKind,
        file: &Path,
        request: &CommitRequest,
    ) -> Result<SyncOutcome> {
        request.validate()?;
        let project_repo = self.open_reading(project, Some(&request.branch))?;
        let repo = &project_repo.repo;
        let hash_kind = repo.object_hash();
        let scanned = archive::scan(kind, file, &self.limits, |bytes| {
            hash_blob(hash_kind, bytes)
        })?;
        let files = scanned.files;
        if files.is_empty() {
            return Err(Error::validation("the archive contains no files"));
        }
        let tree: FlatTree = files
            .iter()
            .map(|(path, (mode, id, _))| (path.as_str().to_owned(), (mode.git_kind(), *id)))
            .collect();
        check_link_chains(&tree, |_, id| {
            scanned
                .targets
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::internal("a link's target went missing"))
        })?;
        // Fail a stale sync before writing anything.
        project_repo.check_parent(request)?;
        let missing: HashSet<ObjectId> = files
            .values()
            .map(|(_, id, _)| *id)
            .filter(|id| !repo.has_object(id))
            .collect();
        let mut stored = 0;
        if !missing.is_empty() {
            let mut written = HashSet::new();
            archive::contents(kind, file, &self.limits, |_path, bytes| {
                let id = hash_blob(hash_kind, bytes)?;
                if missing.contains(&id) && written.insert(id) {
                    project_repo.write_blob(bytes)?;
                }
                Ok(())
            })?;
            if written.len() != missing.len() {
                return Err(Error::internal("the archive changed while it was read"));
            }
            stored = written.len();
        }
        let mut outcome = project_repo.commit_tree(tree, request)?;
        outcome.stored = stored;
        Ok(outcome)
    }

    /// Answers which contents of `manifest` the repository lacks.
    pub fn plan(
        &self,
        project: ProjectId,
        branch: &BranchName,
        manifest: &Manifest,
    ) -> Result<SyncPlan> {
        let project_repo = self.open_reading(project, Some(branch))?;
        let files = validate_manifest(manifest, &self.limits)?;
        let head = project_repo.head(branch)?;
        let committed = match head {
            Some(head) => project_repo.files_of(head)?,
            None => Rc::default(),
        };
        // What this node's disk holds is not what the others have: shared, a content counts as
        // stored when the head's tree has it (every object a branch reaches is shared).
        let shared_contents: HashSet<ObjectId> = match project_repo.remote {
            Some(_) => committed.values().map(|(_, id)| *id).collect(),
            None => HashSet::new(),
        };
        let stored = |id: &ObjectId| match project_repo.remote {
            Some(_) => shared_contents.contains(id),
            None => project_repo.repo.has_object(id),
        };
        let mut seen = HashSet::new();
        let missing = files
            .iter()
            .filter(|(path, (mode, id, _))| {
                committed.get(path.as_str()) != Some(&(mode.git_kind(), *id))
            })
            .map(|(_, (_, id, _))| *id)
            .filter(|id| seen.insert(*id) && !stored(id))
            .map(|id| id.to_string())
            .collect();
        Ok(SyncPlan {
            head: head.map(|id| id.to_string()),
            missing,
            files: files.len(),
        })
    }

    /// Commits a manifest with the contents the repository lacked: `file` is a tar (or gzipped
    /// tar) holding `manifest.json` and `blobs/<hash>` for each content sent.
    pub fn commit_upload(
        &self,
        project: ProjectId,
        kind: ArchiveKind,
        file: &Path,
        request: &CommitRequest,
    ) -> Result<SyncOutcome> {
        request.validate()?;
        let project_repo = self.open_reading(project, Some(&request.branch))?;
        let repo = &project_repo.repo;
        let hash_kind = repo.object_hash();
        let upload = archive::scan_upload(kind, file, &self.limits, |bytes| {
            hash_blob(hash_kind, bytes)
        })?;
        let files = validate_manifest(&upload.manifest, &self.limits)?;
        // Contents sent that the manifest names and this disk lacks.
        let wanted = |repo: &gix::Repository| -> HashSet<ObjectId> {
            files
                .values()
                .map(|(_, id, _)| *id)
                .filter(|id| upload.blobs.contains_key(id) && !repo.has_object(id))
                .collect()
        };
        let store_sent = |wanted: &HashSet<ObjectId>| -> Result<usize> {
            let mut stored = 0;
            if !wanted.is_empty() {
                archive::upload_blobs(kind, file, &self.limits, |id, bytes| {
                    if wanted.contains(&id) {
                        project_repo.write_blob(bytes)?;
                        stored += 1;
                    }
                    Ok(())
                })?;
            }
            Ok(stored)
        };
        let mut stored = 0;
        if let Some(remote) = &project_repo.remote {
            // Shared, the sent contents go to the cache and on their way to the bucket now, while
            // the head's trees are read; the checks below still decide whether they are
            // committed.
            let sent = wanted(repo);
            stored = store_sent(&sent)?;
            *remote.sharing.borrow_mut() = Some(remote.shared.share_contents(
                &repo.path().join("objects"),
                remote.project,
                sent,
            ));
        }
        let head = project_repo.check_parent(request)?;
        let committed = match head {
            Some(head) => project_repo.files_of(head)?,
            None => Rc::default(),
        };
        if let Some(remote) = &project_repo.remote {
            // A content not sent that this node lacks may be shared (a plan made on another
            // server said so): fetch what the bucket has; what it lacks is missing below.
            let elsewhere = files
                .iter()
                .filter(|(path, (mode, id, _))| {
                    committed.get(path.as_str()) != Some(&(mode.git_kind(), *id))
                        && !upload.blobs.contains_key(id)
                })
                .map(|(_, (_, id, _))| *id);
            remote.shared.download(
                repo,
                remote.project,
                elsewhere,
                Home::ObjectStore,
                Missing::Skip,
            )?;
        }
        let link_target = |path: &str, id: ObjectId| -> Result<String> {
            let bytes = match upload.link_targets.get(&id) {
                Some(bytes) => bytes.clone(),
                None => repo
                    .find_blob(id)
                    .map_err(git_error("cannot read a stored object"))?
                    .data
                    .clone(),
            };
            String::from_utf8(bytes)
                .map_err(|_| Error::validation(format!("the target of link {path} is not UTF-8")))
        };
        // Every content must be sent or already stored as a blob, with the size the manifest
        // claims. An entry the head already has, unchanged, passed these checks when it was
        // committed.
        let mut absent = Vec::new();
        for (path, (mode, id, size)) in &files {
            if committed.get(path.as_str()) == Some(&(mode.git_kind(), *id)) {
                continue;
            }
            let actual = match upload.blobs.get(id) {
                Some(size) => *size,
                None if repo.has_object(id) => {
                    let header = repo
                        .find_header(*id)
                        .map_err(git_error("cannot read a stored object"))?;
                    if header.kind() != gix::objs::Kind::Blob {
                        return Err(Error::validation(format!(
                            "{path}: {id} is not a file's content"
                        )));
                    }
                    header.size()
                }
                None => {
                    absent.push(id.to_string());
                    continue;
                }
            };
            if actual != *size {
                return Err(Error::validation(format!(
                    "{path}: the manifest says {size} bytes but its content has {actual}"
                )));
            }
            if *mode == EntryMode::Symlink {
                archive::check_link(path, &link_target(path.as_str(), *id)?)?;
            }
        }
        if !absent.is_empty() {
            absent.sort();
            absent.dedup();
            return Err(Error::validation(format!(
                "{} contents named in the manifest were neither uploaded nor stored; ask /sync/plan again",
                absent.len()
            ))
            .with_context("missing", absent.iter().take(10).cloned().collect::<Vec<_>>().join(",")));
        }
        let tree: FlatTree = files
            .iter()
            .map(|(path, (mode, id, _))| (path.as_str().to_owned(), (mode.git_kind(), *id)))
            .collect();
        check_link_chains(&tree, link_target)?;
        stored += store_sent(&wanted(repo))?;
        let mut outcome = project_repo.commit_tree(tree, request)?;
        outcome.stored = stored;
        Ok(outcome)
    }

    /// Fetches `reference` from `url` and moves `request.branch` to it (creating the branch, or
    /// fast-forwarding it; anything else is `CONFLICT`).
    pub fn import(
        &self,
        project: ProjectId,
        url: &str,
        reference: &str,
        request: &CommitRequest,
    ) -> Result<ImportOutcome> {
        let project_repo = self.open(project)?;
        import::import(
            self,
            &project_repo,
            &self.path_of(project),
            url,
            reference,
            request,
        )
    }

    /// The project's branches and tags.
    pub fn refs(&self, project: ProjectId) -> Result<Vec<RefInfo>> {
        if let Some(shared) = &self.shared {
            // Opening adopts branches this disk had before it was shared.
            self.open(project)?;
            let mut refs: Vec<RefInfo> = shared
                .refs(project)?
                .into_iter()
                .filter_map(|(name, commit)| {
                    let (kind, short) = ref_kind(&name)?;
                    Some(RefInfo {
                        short_name: short.to_owned(),
                        name,
                        kind,
                        commit: commit.to_string(),
                    })
                })
                .collect();
            refs.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(refs);
        }
        let project_repo = self.open(project)?;
        let repo = &project_repo.repo;
        let platform = repo
            .references()
            .map_err(git_error("cannot list references"))?;
        let mut refs = Vec::new();
        for reference in platform
            .all()
            .map_err(git_error("cannot list references"))?
        {
            let mut reference = reference.map_err(|err| {
                Error::internal("cannot read a reference").with_context("cause", err)
            })?;
            let name = reference.name().as_bstr().to_string();
            let Some((kind, short)) = ref_kind(&name) else {
                continue;
            };
            let short = short.to_owned();
            let Ok(commit) = reference.peel_to_commit() else {
                continue;
            };
            refs.push(RefInfo {
                name,
                short_name: short,
                kind,
                commit: commit.id.to_string(),
            });
        }
        refs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(refs)
    }

    /// The entries of directory `path` (`""` for the top) at revision `rev`.
    pub fn tree(&self, project: ProjectId, rev: &str, path: &str) -> Result<TreeListing> {
        let project_repo = self.open(project)?;
        let repo = &project_repo.repo;
        let commit = project_repo.resolve(rev)?;
        let path = normalise_browse_path(path)?;
        project_repo.ensure_path(commit, path.as_ref().map_or("", |p| p.as_str()))?;
        let root = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git_error("cannot read a commit"))?;
        let tree = match &path {
            None => root,
            Some(path) => {
                let entry = root
                    .lookup_entry_by_path(path.as_str())
                    .map_err(git_error("cannot read a tree"))?
                    .ok_or_else(|| {
                        Error::not_found(format!("no directory {path} at this revision"))
                    })?;
                if !entry.mode().is_tree() {
                    return Err(Error::not_found(format!("{path} is not a directory")));
                }
                repo.find_tree(entry.object_id())
                    .map_err(git_error("cannot read a tree"))?
            }
        };
        let prefix = path.as_ref().map(|p| format!("{p}/")).unwrap_or_default();
        // Sizes come from the blobs' headers: a cold cache fetches this directory's files.
        if let Some(remote) = &project_repo.remote {
            let mut blobs = Vec::new();
            for entry in tree.iter() {
                let entry = entry.map_err(git_error("cannot read a tree"))?;
                if entry.inner.mode.is_blob_or_symlink() {
                    blobs.push(entry.inner.oid.to_owned());
                }
            }
            remote
                .shared
                .fetch_reachable(repo, project, blobs, Home::ObjectStore)?;
        }
        let mut entries = Vec::new();
        for entry in tree.iter() {
            let entry = entry.map_err(git_error("cannot read a tree"))?;
            let name = entry.inner.filename.to_string();
            let kind = TreeEntryKind::of(entry.inner.mode.kind());
            let id = entry.inner.oid.to_owned();
            let size = match kind {
                TreeEntryKind::File | TreeEntryKind::Executable | TreeEntryKind::Symlink => Some(
                    repo.find_header(id)
                        .map_err(git_error("cannot read an object"))?
                        .size(),
                ),
                _ => None,
            };
            entries.push(TreeEntry {
                path: format!("{prefix}{name}"),
                name,
                kind,
                size,
                id: id.to_string(),
            });
        }
        Ok(TreeListing {
            commit: commit.to_string(),
            path: path.map(|p| p.as_str().to_owned()).unwrap_or_default(),
            entries,
        })
    }

    /// A file's content at revision `rev` (a link's target for links).
    pub fn read_file(&self, project: ProjectId, rev: &str, path: &str) -> Result<FileContent> {
        let project_repo = self.open(project)?;
        let repo = &project_repo.repo;
        let commit = project_repo.resolve(rev)?;
        let path = RepoPath::parse(path)?;
        project_repo.ensure_path(commit, path.as_str())?;
        let root = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git_error("cannot read a commit"))?;
        let entry = root
            .lookup_entry_by_path(path.as_str())
            .map_err(git_error("cannot read a tree"))?
            .ok_or_else(|| Error::not_found(format!("no file {path} at this revision")))?;
        let mode = match entry.mode().kind() {
            EntryKind::Blob => EntryMode::File,
            EntryKind::BlobExecutable => EntryMode::Executable,
            EntryKind::Link => EntryMode::Symlink,
            EntryKind::Tree => return Err(Error::not_found(format!("{path} is a directory"))),
            EntryKind::Commit => return Err(Error::not_found(format!("{path} is a submodule"))),
        };
        let id = entry.object_id();
        let size = repo
            .find_header(id)
            .map_err(git_error("cannot read a file"))?
            .size();
        if size > self.limits.max_file_bytes {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "{path} is {size} bytes, more than the {} bytes served",
                    self.limits.max_file_bytes
                ),
            ));
        }
        let blob = repo
            .find_blob(id)
            .map_err(git_error("cannot read a file"))?;
        Ok(FileContent {
            commit: commit.to_string(),
            path: path.as_str().to_owned(),
            mode,
            id: id.to_string(),
            bytes: blob.data.clone(),
        })
    }
}

/// A branch or a tag, with its short name; `None` for other references.
fn ref_kind(name: &str) -> Option<(RefKind, &str)> {
    if let Some(short) = name.strip_prefix("refs/heads/") {
        Some((RefKind::Branch, short))
    } else {
        name.strip_prefix("refs/tags/")
            .map(|short| (RefKind::Tag, short))
    }
}

/// A browse path: `""` or `/` is the top.
fn normalise_browse_path(raw: &str) -> Result<Option<RepoPath>> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        Ok(None)
    } else {
        RepoPath::parse(trimmed).map(Some)
    }
}

/// Links may point at links, but never *through* one: with `a/up -> ..`, the link
/// `b -> a/up/..` climbs out of the tree although each target alone stays inside. Checked on a
/// whole tree, with `target_of` giving a link's target.
pub(crate) fn check_link_chains(
    tree: &FlatTree,
    mut target_of: impl FnMut(&str, ObjectId) -> Result<String>,
) -> Result<()> {
    let links: HashSet<&str> = tree
        .iter()
        .filter(|(_, (kind, _))| *kind == EntryKind::Link)
        .map(|(path, _)| path.as_str())
        .collect();
    // Where each link points, as a path in the tree.
    let mut points_at: HashMap<&str, String> = HashMap::new();
    for path in &links {
        let (_, id) = tree[*path];
        let target = target_of(path, id)?;
        let mut at: Vec<&str> = path
            .rsplit_once('/')
            .map_or("", |(dir, _)| dir)
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let segments: Vec<&str> = target
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        for (index, segment) in segments.iter().enumerate() {
            if *segment == ".." {
                at.pop();
            } else {
                at.push(segment);
            }
            let last = index + 1 == segments.len();
            if !last && links.contains(at.join("/").as_str()) {
                return Err(Error::validation(format!(
                    "the link {path} leads through the link {}; links may only point at links, not through them",
                    at.join("/")
                )));
            }
        }
        points_at.insert(path, at.join("/"));
    }
    // A link may point at a link, but a chain must end: one that comes back to itself would
    // only ever resolve to an error (ELOOP) in whatever reads the checkout.
    for start in &links {
        let mut seen = vec![*start];
        let mut at = *start;
        while let Some(next) = points_at.get(at).map(String::as_str) {
            if !links.contains(next) {
                break;
            }
            if seen.contains(&next) {
                seen.push(next);
                return Err(Error::validation(format!(
                    "the links {} form a loop",
                    seen.join(" → ")
                )));
            }
            seen.push(next);
            at = next;
        }
    }
    Ok(())
}

/// Checks a manifest and returns its files by path.
fn validate_manifest(
    manifest: &Manifest,
    limits: &SyncLimits,
) -> Result<BTreeMap<RepoPath, (EntryMode, ObjectId, u64)>> {
    if manifest.files.is_empty() {
        return Err(Error::validation("the manifest lists no files"));
    }
    if manifest.files.len() > limits.max_files {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the manifest lists more than {} files", limits.max_files),
        ));
    }
    let mut files = BTreeMap::new();
    for (index, entry) in manifest.files.iter().enumerate() {
        let at = |err: Error| err.with_context("index", index);
        let path = RepoPath::parse(&entry.path).map_err(at)?;
        let id =
            parse_object_id(&entry.hash).map_err(|err| at(err.with_context("field", "hash")))?;
        if entry.size > limits.max_file_bytes {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "{path} is {} bytes; files may be at most {} bytes",
                    entry.size, limits.max_file_bytes
                ),
            ));
        }
        if entry.mode == EntryMode::Symlink && entry.size > 4096 {
            return Err(at(Error::validation(format!(
                "the link {path} has a target longer than 4096 bytes"
            ))));
        }
        if files
            .insert(path.clone(), (entry.mode, id, entry.size))
            .is_some()
        {
            return Err(at(Error::validation(format!(
                "{path} appears twice in the manifest"
            ))));
        }
    }
    archive::check_file_dir_clashes(files.keys())?;
    Ok(files)
}

/// An open project repository.
pub(crate) struct ProjectRepo {
    repo: gix::Repository,
    limits: SyncLimits,
    /// The files of the last commit [`ProjectRepo::files_of`] read: checking a manifest and
    /// committing it both need the head's.
    files_cache: RefCell<Option<(ObjectId, Rc<FlatTree>)>>,
    /// Where branch heads and objects really live when repositories are shared.
    remote: Option<Remote>,
}

/// A project's shared half.
#[derive(Debug)]
pub(crate) struct Remote {
    shared: Arc<SharedRepos>,
    project: ProjectId,
    /// What this operation made sure of; remembered for the process once on disk.
    hydrated: RefCell<HashSet<(ObjectId, Need)>>,
    /// Branch heads read during this operation. Reading one again (the fail-fast check, then
    /// the commit) may use what was read: the swap that ends a sync checks the head anyway.
    heads: RefCell<HashMap<String, Option<ObjectId>>>,
    /// The branch being read ahead, taken by the first read of its head.
    read_ahead: RefCell<Option<ReadAhead>>,
    /// Contents this operation sent on their way to the object store, awaited by `publish`.
    sharing: RefCell<Option<SharingContents>>,
}

impl Remote {
    /// The same project for another handle, which has made sure of nothing yet.
    pub(crate) fn another(&self) -> Remote {
        Remote {
            shared: self.shared.clone(),
            project: self.project,
            hydrated: RefCell::default(),
            heads: RefCell::default(),
            read_ahead: RefCell::default(),
            sharing: RefCell::default(),
        }
    }
}

impl Drop for ProjectRepo {
    fn drop(&mut self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let objects = self.repo.objects.take_object_memory();
        remote.shared.persist(
            self.repo.path().join("objects"),
            self.repo.object_hash(),
            remote.project,
            objects.map(|mut memory| std::mem::take(&mut *memory).into_iter().collect()),
            std::mem::take(&mut *remote.hydrated.borrow_mut()),
        );
    }
}

impl ProjectRepo {
    /// Makes sure the cache holds what `need` asks of `commit` (nothing to do when the disk is
    /// the repository).
    pub(crate) fn ensure(&self, commit: ObjectId, need: Need) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let known = |memo: &dyn Fn(Need) -> bool| {
            memo(need) || (need == Need::Trees && memo(Need::Everything))
        };
        if known(&|need| remote.hydrated.borrow().contains(&(commit, need)))
            || known(&|need| remote.shared.remembers(remote.project, commit, need))
        {
            return Ok(());
        }
        remote
            .shared
            .hydrate(&self.repo, remote.project, commit, need)?;
        remote.hydrated.borrow_mut().insert((commit, need));
        Ok(())
    }

    /// Stores a file's content. A shared repository writes it to disk at once, never into the
    /// operation's memory: contents can be large.
    fn write_blob(&self, bytes: &[u8]) -> Result<ObjectId> {
        if self.remote.is_some() {
            let loose = gix::odb::loose::Store::at(
                self.repo.path().join("objects"),
                self.repo.object_hash(),
            );
            return gix::objs::Write::write_buf(&loose, gix::objs::Kind::Blob, bytes)
                .map_err(|err| Error::internal("cannot store a file").with_context("cause", err));
        }
        Ok(self
            .repo
            .write_blob(bytes)
            .map_err(git_error("cannot store a file"))?
            .detach())
    }

    /// Makes sure the cache holds the trees from `commit`'s root to `path` and `path` itself.
    pub(crate) fn ensure_path(&self, commit: ObjectId, path: &str) -> Result<()> {
        match &self.remote {
            Some(remote) => remote
                .shared
                .hydrate_path(&self.repo, remote.project, commit, path),
            None => Ok(()),
        }
    }

    /// Shares the objects `commit` adds to `parent` (written locally), so that the branch may
    /// move to it.
    pub(crate) fn publish(&self, commit: ObjectId, parent: Option<ObjectId>) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let mut added = HashSet::from([commit]);
        let tree_of = |id| shared::tree_of(&self.repo, id);
        let old = parent.map(tree_of).transpose()?;
        shared::added_objects(&self.repo, old, tree_of(commit)?, &mut added)?;
        let sharing = remote.sharing.borrow_mut().take();
        remote
            .shared
            .upload(&self.repo, remote.project, &added, sharing)
    }

    /// A repository written before it was shared keeps its branches and tags on this disk: they
    /// are published once (objects first, then each reference created only where the Store has
    /// none; a tag as the commit it names) and moved to `refs/adopted/heads/` and
    /// `refs/adopted/tags/`, so the first shared open of each project takes them over. One the
    /// Store already has elsewhere is logged and stays set aside; nothing is deleted.
    fn adopt_local_branches(&self) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let listed = |repo: &gix::Repository| -> Result<Vec<(String, ObjectId)>> {
            let platform = repo
                .references()
                .map_err(git_error("cannot list references"))?;
            let mut local = Vec::new();
            for prefix in ["refs/heads/", "refs/tags/"] {
                for reference in platform
                    .prefixed(prefix)
                    .map_err(git_error("cannot list references"))?
                {
                    let mut reference = reference.map_err(|err| {
                        Error::internal("cannot read a reference").with_context("cause", err)
                    })?;
                    let name = reference.name().as_bstr().to_string();
                    // A tag is shared as the commit it names.
                    if let Ok(commit) = reference.peel_to_commit() {
                        local.push((name, commit.id));
                    }
                }
            }
            Ok(local)
        };
        if listed(&self.repo)?.is_empty() {
            return Ok(());
        }
        // One adoption at a time per repository in this process; the next finds nothing left.
        let turn = adoption_turn(self.repo.path());
        let _turn = turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = gix::open(self.repo.path()).map_err(|err| {
            Error::internal("cannot open the project repository").with_context("cause", err)
        })?;
        for (name, id) in listed(&fresh)? {
            self.publish_history(id, None)?;
            if let Err(current) = remote.shared.swap(remote.project, &name, None, id)?
                && current != Some(id)
            {
                tracing::warn!(
                    project = %remote.project,
                    reference = %name,
                    local = %id,
                    shared = ?current.map(|c| c.to_string()),
                    "a reference on this disk differs from the shared one; kept under refs/adopted/"
                );
            }
            let adopted = format!("refs/adopted/{}", &name["refs/".len()..]);
            let edits = [
                RefEdit {
                    change: Change::Update {
                        log: LogChange::default(),
                        expected: PreviousValue::Any,
                        new: Target::Object(id),
                    },
                    name: adopted
                        .try_into()
                        .map_err(|_| Error::internal("invalid adopted reference name"))?,
                    deref: false,
                },
                RefEdit {
                    change: Change::Delete {
                        expected: PreviousValue::Any,
                        log: RefLog::AndReference,
                    },
                    name: name
                        .as_str()
                        .try_into()
                        .map_err(|_| Error::internal("invalid reference name"))?,
                    deref: false,
                },
            ];
            fresh.edit_references(edits).map_err(|err| {
                Error::internal("cannot set an adopted reference aside").with_context("cause", err)
            })?;
        }
        Ok(())
    }

    /// Shares every object of the commits from `tip` back to (not including) `known`: an
    /// imported history.
    pub(crate) fn publish_history(&self, tip: ObjectId, known: Option<ObjectId>) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let walk = self
            .repo
            .rev_walk([tip])
            .with_hidden(known)
            .all()
            .map_err(|err| Error::internal("cannot walk the history").with_context("cause", err))?;
        let mut added = HashSet::new();
        for info in walk {
            let info = info.map_err(|err| {
                Error::internal("cannot walk the history").with_context("cause", err)
            })?;
            let commit = self
                .repo
                .find_commit(info.id)
                .map_err(git_error("cannot read a commit"))?;
            let tree = commit
                .tree_id()
                .map_err(git_error("cannot read a commit"))?
                .detach();
            let parent_tree = match commit.parent_ids().next() {
                Some(parent) => Some(
                    self.repo
                        .find_commit(parent.detach())
                        .and_then(|c| c.tree_id())
                        .map_err(git_error("cannot read a commit"))?
                        .detach(),
                ),
                None => None,
            };
            added.insert(info.id);
            shared::added_objects(&self.repo, parent_tree, tree, &mut added)?;
        }
        remote
            .shared
            .upload(&self.repo, remote.project, &added, None)
    }

    /// The branch head, if the branch exists.
    fn head(&self, branch: &BranchName) -> Result<Option<ObjectId>> {
        self.ref_target(&branch.full_ref())
    }

    pub(crate) fn ref_target(&self, full_name: &str) -> Result<Option<ObjectId>> {
        if let Some(remote) = &self.remote {
            if let Some(head) = remote.heads.borrow().get(full_name) {
                return Ok(*head);
            }
            let head = match self.take_read_ahead(remote, full_name) {
                Some(head) => head,
                None => remote.shared.head(remote.project, full_name)?,
            };
            remote.heads.borrow_mut().insert(full_name.to_owned(), head);
            return Ok(head);
        }
        let reference = self
            .repo
            .try_find_reference(full_name)
            .map_err(git_error("cannot read a branch"))?;
        Ok(reference.and_then(|r| r.try_id().map(|id| id.detach())))
    }

    /// The head a read-ahead of `full_name` found, its commit and trees now in the operation's
    /// memory; `None` when there was none or it failed (the caller then reads the usual way).
    fn take_read_ahead(&self, remote: &Remote, full_name: &str) -> Option<Option<ObjectId>> {
        let read_ahead = remote
            .read_ahead
            .borrow_mut()
            .take_if(|r| r.reference == full_name)?;
        match remote.shared.take(&self.repo, read_ahead) {
            Ok(head) => Some(head),
            Err(err) => {
                tracing::warn!(project = %remote.project, error = %err, "reading a branch ahead failed; reading it again");
                None
            }
        }
    }

    fn check_parent(&self, request: &CommitRequest) -> Result<Option<ObjectId>> {
        let head = self.head(&request.branch)?;
        if let Some(head) = head {
            self.ensure(head, Need::Trees)?;
        }
        if request.force {
            return Ok(head);
        }
        let stale = match request.expected_parent {
            ExpectedParent::Current => false,
            ExpectedParent::NoBranch => head.is_some(),
            ExpectedParent::Commit(expected) => head != Some(expected.0),
        };
        if stale {
            return Err(conflict(&request.branch, head));
        }
        Ok(head)
    }

    /// Resolves a browse revision: a branch, then a tag, or a full commit id.
    fn resolve(&self, rev: &str) -> Result<ObjectId> {
        let rev = rev.trim();
        if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            let id = parse_object_id(&rev.to_ascii_lowercase())?;
            if let Some(remote) = &self.remote {
                match remote.shared.download(
                    &self.repo,
                    remote.project,
                    [id],
                    Home::Store,
                    Missing::Fail,
                ) {
                    Err(err) if err.kind() == ErrorKind::NotFound => {
                        return Err(Error::not_found("no such commit in this project"));
                    }
                    other => other?,
                }
            }
            return self
                .repo
                .find_object(id)
                .ok()
                .and_then(|object| object.peel_to_commit().ok())
                .map(|commit| commit.id)
                .ok_or_else(|| Error::not_found("no such commit in this project"));
        }
        // A name no branch can have names nothing: not found, like any other missing ref.
        let name = BranchName::parse(rev).map_err(|_| {
            Error::not_found("no such branch, tag or commit").with_context("field", "ref")
        })?;
        if self.remote.is_some() {
            for full in [name.full_ref(), format!("refs/tags/{name}")] {
                if let Some(commit) = self.ref_target(&full)? {
                    if let Some(remote) = &self.remote {
                        remote.shared.fetch_reachable(
                            &self.repo,
                            remote.project,
                            [commit],
                            Home::Store,
                        )?;
                    }
                    return Ok(commit);
                }
            }
            return Err(Error::not_found(format!("no branch or tag named {name}")));
        }
        for full in [name.full_ref(), format!("refs/tags/{name}")] {
            if let Some(mut reference) = self
                .repo
                .try_find_reference(full.as_str())
                .map_err(git_error("cannot read a reference"))?
            {
                let commit = reference
                    .peel_to_commit()
                    .map_err(|_| Error::not_found(format!("{name} does not name a commit")))?;
                return Ok(commit.id);
            }
        }
        Err(Error::not_found(format!("no branch or tag named {name}")))
    }

    /// All files of a commit's tree.
    pub(crate) fn files_of(&self, commit: ObjectId) -> Result<Rc<FlatTree>> {
        if let Some((cached, files)) = &*self.files_cache.borrow()
            && *cached == commit
        {
            return Ok(files.clone());
        }
        self.ensure(commit, Need::Trees)?;
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git_error("cannot read a commit"))?;
        let entries = tree
            .traverse()
            .breadthfirst
            .files()
            .map_err(git_error("cannot read a tree"))?;
        let files: Rc<FlatTree> = Rc::new(
            entries
                .into_iter()
                .filter(|entry| !entry.mode.is_tree())
                .map(|entry| (entry.filepath.to_string(), (entry.mode.kind(), entry.oid)))
                .collect(),
        );
        *self.files_cache.borrow_mut() = Some((commit, files.clone()));
        Ok(files)
    }

    /// Commits `tree` (the complete new tree) on the request's branch.
    fn commit_tree(&self, tree: FlatTree, request: &CommitRequest) -> Result<SyncOutcome> {
        let head = self.check_parent(request)?;
        let old = match head {
            Some(head) => self.files_of(head)?,
            None => Rc::default(),
        };
        let removed: Vec<&String> = old
            .keys()
            .filter(|path| !tree.contains_key(*path))
            .collect();
        let mut added = 0;
        let mut changes = Vec::new();
        for (path, entry) in &tree {
            match old.get(path) {
                None => {
                    added += 1;
                    changes.push((path, entry));
                }
                Some(previous) if previous != entry => changes.push((path, entry)),
                Some(_) => {}
            }
        }
        let changed = changes.len() - added;
        let base = SyncOutcome {
            branch: request.branch.as_str().to_owned(),
            commit: String::new(),
            parent: head.map(|id| id.to_string()),
            created: false,
            added,
            changed,
            removed: removed.len(),
            files: tree.len(),
            stored: 0,
        };
        if let Some(head) = head
            && changes.is_empty()
            && removed.is_empty()
        {
            return Ok(SyncOutcome {
                commit: head.to_string(),
                parent: self
                    .repo
                    .find_commit(head)
                    .ok()
                    .and_then(|c| c.parent_ids().next().map(|p| p.to_string())),
                ..base
            });
        }
        let base_tree = match head {
            Some(head) => self
                .repo
                .find_commit(head)
                .and_then(|c| c.tree_id())
                .map_err(git_error("cannot read a commit"))?
                .detach(),
            None => ObjectId::empty_tree(self.repo.object_hash()),
        };
        let tree_id = if self.remote.is_some() {
            self.write_tree_unchecked(base_tree, &removed, &changes)?
        } else {
            let mut editor = self
                .repo
                .edit_tree(base_tree)
                .map_err(git_error("cannot edit a tree"))?;
            for path in &removed {
                editor
                    .remove(*path)
                    .map_err(git_error("cannot edit a tree"))?;
            }
            for (path, (kind, id)) in changes {
                editor
                    .upsert(path, *kind, *id)
                    .map_err(git_error("cannot edit a tree"))?;
            }
            editor
                .write()
                .map_err(git_error("cannot write a tree"))?
                .detach()
        };
        let message = if request.message.trim().is_empty() {
            format!("Sync {} files", tree.len())
        } else {
            request.message.clone()
        };
        let commit = self.write_commit(tree_id, head, &message, &request.author)?;
        self.publish(commit, head)?;
        self.move_branch(
            &request.branch,
            head,
            commit,
            &format!("sync: {}", first_line(&message)),
        )?;
        Ok(SyncOutcome {
            commit: commit.to_string(),
            created: true,
            ..base
        })
    }

    /// Writes the tree `base` becomes with `changes` and without `removed`, like gix's tree
    /// editor but without its check that every entry of a rewritten tree is on this disk: a
    /// shared repository's cache holds the trees but not every file, and every entry is either
    /// in the commit being built (checked when it was sent) or in the parent (shared before the
    /// parent was). Names get gix's own validation.
    fn write_tree_unchecked(
        &self,
        base: ObjectId,
        removed: &[&String],
        changes: &[(&String, &(EntryKind, ObjectId))],
    ) -> Result<ObjectId> {
        let root: gix::objs::Tree = if base.is_empty_tree() {
            gix::objs::Tree::empty()
        } else {
            self.repo
                .find_tree(base)
                .map_err(git_error("cannot read a tree"))?
                .decode()
                .map_err(|err| Error::internal("cannot read a tree").with_context("cause", err))?
                .into()
        };
        let edit_error = |err| Error::internal("cannot edit a tree").with_context("cause", err);
        let mut editor =
            gix::objs::tree::Editor::new(root, &self.repo.objects, self.repo.object_hash());
        for path in removed {
            editor.remove(path.split('/')).map_err(edit_error)?;
        }
        for (path, (kind, id)) in changes {
            editor
                .upsert(path.split('/'), *kind, *id)
                .map_err(edit_error)?;
        }
        let written = editor
            .write(|tree| -> Result<ObjectId> {
                for entry in &tree.entries {
                    let link = entry
                        .mode
                        .is_link()
                        .then_some(gix::validate::path::component::Mode::Symlink);
                    gix::validate::path::component(
                        entry.filename.as_ref(),
                        link,
                        gix::validate::path::component::Options::default(),
                    )
                    .map_err(|err| {
                        Error::validation(format!("invalid file name {}", entry.filename))
                            .with_context("cause", err)
                    })?;
                }
                Ok(self
                    .repo
                    .write_object(tree)
                    .map_err(git_error("cannot write a tree"))?
                    .detach())
            })
            .map_err(|err| Error::internal("cannot write a tree").with_context("cause", err))?;
        Ok(written)
    }

    fn write_commit(
        &self,
        tree: ObjectId,
        parent: Option<ObjectId>,
        message: &str,
        author: &Author,
    ) -> Result<ObjectId> {
        let now = gix::date::Time::now_utc();
        let signature = |name: &str, email: &str| gix::actor::Signature {
            name: sanitize_signature_part(name).into(),
            email: sanitize_signature_part(email).into(),
            time: now,
        };
        let mut message = message.to_owned();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        let commit = gix::objs::Commit {
            tree,
            parents: parent.into_iter().collect(),
            author: signature(&author.name, &author.email),
            committer: signature(COMMITTER_NAME, COMMITTER_EMAIL),
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        Ok(self
            .repo
            .write_object(&commit)
            .map_err(git_error("cannot write a commit"))?
            .detach())
    }

    /// Moves `branch` from `from` (`None`: the branch must not exist) to `to`, atomically.
    pub(crate) fn move_branch(
        &self,
        branch: &BranchName,
        from: Option<ObjectId>,
        to: ObjectId,
        log: &str,
    ) -> Result<()> {
        let name = branch
            .full_ref()
            .try_into()
            .map_err(|_| Error::validation("invalid branch name"))?;
        let expected = match from {
            Some(from) => PreviousValue::MustExistAndMatch(Target::Object(from)),
            None => PreviousValue::MustNotExist,
        };
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: log.into(),
                },
                expected,
                new: Target::Object(to),
            },
            name,
            deref: false,
        };
        let committer = gix::actor::Signature {
            name: COMMITTER_NAME.into(),
            email: COMMITTER_EMAIL.into(),
            time: gix::date::Time::now_utc(),
        };
        if let Some(remote) = &self.remote {
            let full = branch.full_ref();
            let swapped = remote.shared.swap(remote.project, &full, from, to)?;
            let now = swapped.map_or_else(|now| now, |()| Some(to));
            remote.heads.borrow_mut().insert(full, now);
            return match swapped {
                Ok(()) => Ok(()),
                Err(now) => Err(conflict(branch, now)),
            };
        }
        let mut time = gix::date::parse::TimeBuf::default();
        // Writers in this process take turns per branch, so that one never finds the other's
        // ref lock (and fails as if on an I/O error) instead of its changed head.
        let turn = branch_turn(self.repo.path(), branch);
        let _turn = turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self
            .repo
            .edit_references_as([edit], Some(committer.to_ref(&mut time)))
        {
            Ok(_) => Ok(()),
            Err(err) => {
                // Whether the branch moved under us (a lost race) or the write failed.
                let now = self.head(branch)?;
                if now != from {
                    Err(conflict(branch, now))
                } else {
                    Err(Error::internal("cannot update the branch").with_context("cause", err))
                }
            }
        }
    }
}

/// One mutex per repository for adopting its references, for the whole process.
fn adoption_turn(repo: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
    type Turns = HashMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>;
    static TURNS: std::sync::LazyLock<std::sync::Mutex<Turns>> =
        std::sync::LazyLock::new(Default::default);
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    turns.entry(repo.to_path_buf()).or_default().clone()
}

/// One mutex per repository and branch, for the whole process.
fn branch_turn(repo: &Path, branch: &BranchName) -> std::sync::Arc<std::sync::Mutex<()>> {
    type Turns = HashMap<(PathBuf, String), std::sync::Arc<std::sync::Mutex<()>>>;
    static TURNS: std::sync::LazyLock<std::sync::Mutex<Turns>> =
        std::sync::LazyLock::new(Default::default);
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    turns
        .entry((repo.to_path_buf(), branch.as_str().to_owned()))
        .or_default()
        .clone()
}

fn conflict(branch: &BranchName, head: Option<ObjectId>) -> Error {
    let head_text = head.map_or_else(|| "none".to_owned(), |id| id.to_string());
    Error::conflict(format!(
        "branch {branch} has moved: its head is {head_text}; sync again against it, or force"
    ))
    .with_context("branch", branch)
    .with_context("head", head_text)
}

fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

/// Names and emails go into commit headers: no angle brackets or line breaks.
fn sanitize_signature_part(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '<' | '>' | '\n' | '\r' | '\0'))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The git blob id of `content`: what `git hash-object` prints, and what manifests carry. Fails
/// only for content crafted to collide in SHA-1 (which git's hasher detects).
pub fn blob_id(content: &[u8]) -> Result<String> {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, content)
        .map(|id| id.to_string())
        .map_err(|err| Error::validation("the content cannot be hashed").with_context("cause", err))
}

/// Writes a delta-sync upload (what `/sync/commit` takes): a tar of `manifest.json` and
/// `blobs/<hash>` for each of `contents`.
pub fn write_delta_upload<W: std::io::Write>(
    out: W,
    manifest: &Manifest,
    contents: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<W> {
    let mut builder = tar::Builder::new(out);
    let mut append = |name: &str, bytes: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, bytes)?;
        Ok(())
    };
    let json = serde_json::to_vec(manifest)
        .map_err(|err| Error::internal("cannot encode a manifest").with_context("cause", err))?;
    append("manifest.json", &json)?;
    for (hash, bytes) in contents {
        append(&format!("blobs/{hash}"), &bytes)?;
    }
    Ok(builder.into_inner()?)
}

/// A count of the objects stored in a repository's object database (loose objects and packs),
/// for tests that check a rejected upload left nothing behind.
pub fn count_objects(repo_dir: &Path) -> Result<usize> {
    let objects = repo_dir.join("objects");
    let mut count = 0;
    for dir in std::fs::read_dir(&objects)? {
        let dir = dir?;
        let name = dir.file_name();
        let name = name.to_string_lossy();
        if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            count += std::fs::read_dir(dir.path())?.count();
        } else if name == "pack" {
            count += std::fs::read_dir(dir.path())?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|ext| ext == "pack"))
                .count();
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
