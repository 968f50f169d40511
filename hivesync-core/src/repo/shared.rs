//! Repositories shared by several machines.
//!
//! With `REPO_STORAGE=shared`, no node's disk is the source of truth for a project repository:
//!
//! - **Branch heads** live in the [`Store`] (`repo_refs`) and move only by compare-and-swap, so
//!   two servers syncing one branch at once cannot both win.
//! - **Git objects** are immutable and named by their content, stored in git's loose format (zlib
//!   of `"<kind> <size>\0<data>"`): commits and trees in the Store (`repo_objects`: small, and
//!   every sync reads a whole tree of them, one database round trip per level), file contents in
//!   the [`ObjectStore`] under `repos/<project>/objects/<id>`. Content addressing makes every
//!   write idempotent: two nodes uploading the same object store the same content (the
//!   compression may differ; every read is checked against the id).
//! - **`DATA_DIR/repos`** is each node's read-through cache: an object missing there is
//!   downloaded, its hash checked, and written into the local repository, which then serves it
//!   from disk. Deleting the cache loses nothing.
//!
//! The invariant that makes this safe: every object reachable from a reference in the Store is
//! shared. A writer uploads what a new commit adds *before* it swaps the reference, so
//! whoever reads the reference finds every object it reaches; a writer that crashes or loses the
//! race leaves only unreferenced objects behind.
//!
//! An object that a reference reaches but the shared storage cannot produce is the deployment's
//! fault (a store that is down, or a bucket not shared by every node): `Unavailable`, retryable.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gix::ObjectId;
use gix::objs::Write as _;
use gix::objs::tree::EntryKind;

use crate::domain::{ProjectId, RefUpdate, RepoObject};
use crate::error::{Error, ErrorKind, Result};
use crate::ports::{ObjectKey, ObjectStore, ObjectStoreExt, Store};

/// Object transfers in flight at once per operation.
const PARALLEL_TRANSFERS: usize = 32;
/// Commits remembered as hydrated before the memo starts over.
const MEMO_ENTRIES: usize = 100_000;
/// Commits and trees per insert into the Store.
const UPLOAD_BATCH: usize = 256;

/// The shared half of the repositories: references in the Store, objects in the object store.
#[derive(Clone)]
pub struct SharedRepos {
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    /// Repository methods block (git is file I/O) and run on blocking threads; they reach the
    /// async ports through the runtime that made this value.
    runtime: tokio::runtime::Handle,
    /// What this process's cache is known to hold, so that a commit's trees are walked once per
    /// process rather than once per request.
    hydrated: Arc<std::sync::Mutex<HashSet<(ProjectId, ObjectId, Need)>>>,
    /// Writes of operations' objects to the cache still under way.
    writing: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for SharedRepos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRepos")
            .field("objects", &self.objects.name())
            .finish_non_exhaustive()
    }
}

/// What a reader needs of a commit in its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Need {
    /// The commit, every tree, and the links' targets: enough to list, diff and commit on top.
    Trees,
    /// Everything: a checkout.
    Everything,
}

impl SharedRepos {
    /// Must be called inside a tokio runtime, whose handle the repositories keep.
    pub fn new(store: Arc<dyn Store>, objects: Arc<dyn ObjectStore>) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::internal("shared repositories need a tokio runtime to reach the Store")
        })?;
        Ok(SharedRepos {
            store,
            objects,
            runtime,
            hydrated: Arc::default(),
            writing: Arc::default(),
        })
    }

    /// Forgets what the cache of `project` held (it was deleted under this process).
    pub(crate) fn forget(&self, project: ProjectId) {
        self.memo().retain(|(p, _, _)| *p != project);
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashSet<(ProjectId, ObjectId, Need)>> {
        self.hydrated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// `repos/<project>/objects/<id>`.
    pub fn object_key(project: ProjectId, id: &ObjectId) -> ObjectKey {
        ObjectKey::new(format!("repos/{project}/objects/{id}"))
            .expect("a uuid and a hex id make a valid key")
    }

    /// Where reference `full_name` points.
    pub(crate) fn head(&self, project: ProjectId, full_name: &str) -> Result<Option<ObjectId>> {
        self.block_on(self.store.get_repo_ref(project, full_name))?
            .map(|target| parse_target(&target))
            .transpose()
    }

    /// Every reference of the project, by name.
    pub(crate) fn refs(&self, project: ProjectId) -> Result<Vec<(String, ObjectId)>> {
        self.block_on(self.store.list_repo_refs(project))?
            .into_iter()
            .map(|r| Ok((r.name, parse_target(&r.target)?)))
            .collect()
    }

    /// Moves `full_name` from `from` to `to`; `Err(current)` when it was elsewhere.
    pub(crate) fn swap(
        &self,
        project: ProjectId,
        full_name: &str,
        from: Option<ObjectId>,
        to: ObjectId,
    ) -> Result<std::result::Result<(), Option<ObjectId>>> {
        let from = from.map(|id| id.to_string());
        let update = self
            .block_on(self.store.swap_repo_ref(
                project,
                full_name,
                from.as_deref(),
                &to.to_string(),
            ))
            .map_err(|err| match err.kind() {
                // The project's record went while the sync ran.
                ErrorKind::Validation => Error::not_found("no such project").with_source(err),
                _ => err,
            })?;
        match update {
            RefUpdate::Updated => Ok(Ok(())),
            RefUpdate::Moved { current } => Ok(Err(current
                .map(|target| parse_target(&target))
                .transpose()?)),
        }
    }

    /// Shares `ids` from the local repository (each must be there): file contents into the
    /// object store while trees and then commits go into the Store, so that a commit found there
    /// has its trees. Ids go in one sorted order, so that two writers inserting the same rows
    /// cannot deadlock; contents are read one at a time as their upload starts.
    ///
    /// Contents that `sharing` already uploads are not uploaded again; the Store is written
    /// while `sharing` finishes, and this returns when both have succeeded.
    pub(crate) fn upload(
        &self,
        repo: &gix::Repository,
        project: ProjectId,
        ids: &HashSet<ObjectId>,
        sharing: Option<SharingContents>,
    ) -> Result<()> {
        let mut ids: Vec<ObjectId> = ids.iter().copied().collect();
        ids.sort();
        let read_error =
            |err| Error::internal("cannot read an object to share").with_context("cause", err);
        let (mut contents, mut trees, mut commits) = (Vec::new(), Vec::new(), Vec::new());
        let (under_way, sharing) = match sharing {
            Some(sharing) => (sharing.ids, Some(sharing.uploading)),
            None => (HashSet::new(), None),
        };
        for id in ids {
            if under_way.contains(&id) {
                continue;
            }
            match repo.find_header(id).map_err(read_error)?.kind() {
                gix::objs::Kind::Blob => contents.push(id),
                gix::objs::Kind::Commit => commits.push(id),
                _ => trees.push(id),
            }
        }
        let row = |id: &ObjectId| -> Result<RepoObject> {
            let object = repo.find_object(*id).map_err(read_error)?;
            let mut links = Vec::new();
            reached_from(repo.object_hash(), object.kind, &object.data, &mut links).map_err(
                |err| Error::internal("cannot read an object to share").with_source(err),
            )?;
            Ok(RepoObject {
                id: id.to_string(),
                data: encode_loose(object.kind, &object.data)?.to_vec(),
                links: links.iter().map(ToString::to_string).collect(),
            })
        };
        // Commits after trees in one list: a statement is atomic and statements run in order,
        // so a commit in the Store has its trees there (one statement for most syncs).
        let structure = trees
            .iter()
            .chain(&commits)
            .map(row)
            .collect::<Result<Vec<_>>>()?;
        let objects = self.objects.clone();
        let contents = futures::stream::iter(contents)
            .map(|id| {
                let encoded = repo
                    .find_object(id)
                    .map_err(read_error)
                    .and_then(|object| encode_loose(object.kind, &object.data));
                let objects = objects.clone();
                async move { Self::put_content(&*objects, project, id, encoded?).await }
            })
            .buffer_unordered(PARALLEL_TRANSFERS)
            .try_collect::<Vec<_>>();
        let structure = async {
            for batch in structure.chunks(UPLOAD_BATCH) {
                self.store.put_repo_objects(project, batch).await?;
            }
            Ok::<_, Error>(())
        };
        let shared_before = async {
            match sharing {
                Some(uploading) => uploading.await.map_err(|err| {
                    Error::internal("sharing the sent contents failed").with_context("cause", err)
                })?,
                None => Ok(()),
            }
        };
        self.block_on(async {
            let (shared_before, contents, structure) =
                tokio::join!(shared_before, contents, structure);
            shared_before?;
            contents?;
            structure
        })
    }

    /// Puts one file content (git's loose format) where every node finds it.
    async fn put_content(
        objects: &dyn ObjectStore,
        project: ProjectId,
        id: ObjectId,
        encoded: Bytes,
    ) -> Result<()> {
        objects
            .put_bytes(&Self::object_key(project, &id), encoded)
            .await
            .map(drop)
            .map_err(|err| {
                Error::unavailable("cannot share a file's content")
                    .with_context("object", id)
                    .with_source(err)
            })
    }

    /// Starts uploading contents this operation has just written to the cache as loose objects
    /// (their files are git's loose format, which the object store keeps), while the operation
    /// goes on; [`SharedRepos::upload`] waits for it before anything can reference them. A sync
    /// that is refused or loses its race afterwards leaves them in the bucket unreferenced, as a
    /// crash would.
    pub(crate) fn share_contents(
        &self,
        objects_dir: &std::path::Path,
        project: ProjectId,
        ids: HashSet<ObjectId>,
    ) -> SharingContents {
        let objects = self.objects.clone();
        let files: Vec<(ObjectId, std::path::PathBuf)> = ids
            .iter()
            .map(|id| (*id, loose_path(objects_dir, id)))
            .collect();
        let uploading = self.runtime.spawn(async move {
            futures::stream::iter(files)
                .map(|(id, file)| {
                    let objects = objects.clone();
                    async move {
                        // Read in the task, not on the blocking pool: the operation waits for
                        // this upload from a blocking thread, and one waiting on another's
                        // slot could exhaust the pool. A content is at most the sync's file
                        // size limit.
                        let encoded = std::fs::read(&file).map_err(|err| {
                            Error::internal("cannot read a content to share")
                                .with_context("object", id)
                                .with_context("cause", err)
                        })?;
                        Self::put_content(&*objects, project, id, Bytes::from(encoded)).await
                    }
                })
                .buffer_unordered(PARALLEL_TRANSFERS)
                .try_collect::<Vec<_>>()
                .await
                .map(drop)
        });
        SharingContents { ids, uploading }
    }

    /// Starts reading `reference`'s head, and the commit and trees under it that neither this
    /// process's memo nor the cache at `objects_dir` holds, while the operation does something
    /// else (a sync scans its upload meanwhile), off the operation's path. What it read is
    /// checked when the operation takes it. An async task, not a blocking one: the operation
    /// waits for it from a blocking thread, and must not wait for another slot of that pool.
    pub(crate) fn read_ahead(
        &self,
        project: ProjectId,
        objects_dir: std::path::PathBuf,
        hash: gix::hash::Kind,
        reference: String,
    ) -> ReadAhead {
        let this = self.clone();
        let name = reference.clone();
        // Looked at now, before the operation writes anything there.
        let cold = holds_no_objects(&objects_dir);
        let reading = self.runtime.spawn(async move {
            this.read_branch(project, &objects_dir, cold, hash, &name)
                .await
        });
        ReadAhead { reference, reading }
    }

    async fn read_branch(
        &self,
        project: ProjectId,
        objects_dir: &std::path::Path,
        cold: bool,
        hash: gix::hash::Kind,
        reference: &str,
    ) -> Result<ReadBranch> {
        let on_disk = |id: &ObjectId| loose_path(objects_dir, id).is_file();
        // A cache holding nothing of the project reads the branch with all its commits and trees
        // at once; one holding some reads the head, and then only what it lacks.
        let (head, mut fetched) = if cold {
            let Some(branch) = self.store.get_repo_branch(project, reference).await? else {
                return Ok(ReadBranch {
                    head: None,
                    objects: Vec::new(),
                });
            };
            let fetched: HashMap<String, RepoObject> = branch
                .objects
                .into_iter()
                .map(|object| (object.id.clone(), object))
                .collect();
            (parse_target(&branch.target)?, fetched)
        } else {
            let head = self.store.get_repo_ref(project, reference).await?;
            let Some(head) = head.map(|target| parse_target(&target)).transpose()? else {
                return Ok(ReadBranch {
                    head: None,
                    objects: Vec::new(),
                });
            };
            if self.remembers(project, head, Need::Trees)
                || self.remembers(project, head, Need::Everything)
            {
                return Ok(ReadBranch {
                    head: Some(head),
                    objects: Vec::new(),
                });
            }
            (head, HashMap::new())
        };
        // Walked a level at a time: what the first read did not bring (objects stored before
        // links were) is fetched a level at a time. An object on disk is not entered: what it
        // reaches is most likely there too, and the operation's own walk fetches whatever is not.
        let mut objects = Vec::new();
        // A subtree can appear at several depths; it is taken once.
        let mut seen = HashSet::from([head]);
        let mut level: Vec<ObjectId> = [head].into_iter().filter(|id| !on_disk(id)).collect();
        while !level.is_empty() {
            let mut found = Vec::new();
            let mut wanted = Vec::new();
            for id in level {
                match fetched.remove(&id.to_string()) {
                    Some(object) => found.push(object),
                    None => wanted.push(id.to_string()),
                }
            }
            if !wanted.is_empty() {
                found.extend(self.store.get_repo_objects(project, &wanted).await?);
            }
            let mut next = Vec::new();
            for object in found {
                let id = parse_target(&object.id)?;
                let (kind, data) = decode_loose(&object.data)?;
                reached_from(hash, kind, &data, &mut next)?;
                objects.push((id, kind, data));
            }
            next.retain(|id| seen.insert(*id) && !on_disk(id));
            level = next;
        }
        Ok(ReadBranch {
            head: Some(head),
            objects,
        })
    }

    /// The head a read-ahead found, with the commits and trees it read now in `repo`'s
    /// memory, each checked against its id; an error when it failed, which the caller answers
    /// by reading the usual way.
    pub(crate) fn take(
        &self,
        repo: &gix::Repository,
        read_ahead: ReadAhead,
    ) -> Result<Option<ObjectId>> {
        let read = self.block_on(read_ahead.reading).map_err(|err| {
            Error::internal("reading a branch ahead failed").with_context("cause", err)
        })??;
        for (id, kind, data) in &read.objects {
            keep_in_memory(repo, *id, *kind, data)?;
        }
        Ok(read.head)
    }

    /// Downloads those of `ids` the local repository lacks from where objects of that kind
    /// live: commits and trees into the operation's memory (see `Repos::open`), contents to
    /// disk as each arrives. One that is not there is `NotFound` with its id, or skipped with
    /// [`Missing::Skip`].
    pub(crate) fn download(
        &self,
        repo: &gix::Repository,
        project: ProjectId,
        ids: impl IntoIterator<Item = ObjectId>,
        home: Home,
        missing: Missing,
    ) -> Result<()> {
        let mut seen = HashSet::new();
        let wanted: Vec<ObjectId> = ids
            .into_iter()
            .filter(|id| seen.insert(*id) && !repo.has_object(id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let decode = |id: ObjectId, bytes: &[u8]| -> Result<(gix::objs::Kind, Vec<u8>)> {
            let (kind, data) = decode_loose(bytes).map_err(|err| err.with_context("object", id))?;
            if Home::of(kind) != home {
                return Err(Error::unavailable(
                    "a shared repository object is not of the kind stored there",
                )
                .with_context("object", id));
            }
            Ok((kind, data))
        };
        match home {
            Home::Store => {
                let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
                let found = self.block_on(self.store.get_repo_objects(project, &names))?;
                if found.len() < wanted.len() && missing == Missing::Fail {
                    let have: HashSet<&str> = found.iter().map(|o| o.id.as_str()).collect();
                    let absent = names.iter().find(|id| !have.contains(id.as_str()));
                    return Err(Error::not_found("the Store has no such repository object")
                        .with_context("object", absent.cloned().unwrap_or_default()));
                }
                for object in found {
                    let id = parse_target(&object.id)?;
                    let (kind, data) = decode(id, &object.data)?;
                    keep_in_memory(repo, id, kind, &data)?;
                }
                Ok(())
            }
            Home::ObjectStore => {
                let loose =
                    gix::odb::loose::Store::at(repo.path().join("objects"), repo.object_hash());
                let objects = self.objects.clone();
                let mut arriving = futures::stream::iter(wanted)
                    .map(|id| {
                        let objects = objects.clone();
                        async move {
                            match objects.get_bytes(&Self::object_key(project, &id)).await {
                                Ok(bytes) => Ok((id, Some(bytes))),
                                Err(err)
                                    if err.kind() == ErrorKind::NotFound
                                        && missing == Missing::Skip =>
                                {
                                    Ok((id, None))
                                }
                                Err(err) if err.kind() == ErrorKind::NotFound => Err(
                                    Error::not_found("the object store has no such file content")
                                        .with_context("object", id),
                                ),
                                Err(err) => Err(Error::unavailable(
                                    "cannot fetch a file's content from the object store",
                                )
                                .with_context("object", id)
                                .with_source(err)),
                            }
                        }
                    })
                    .buffer_unordered(PARALLEL_TRANSFERS);
                self.block_on(async {
                    while let Some(next) = arriving.next().await {
                        let (id, Some(bytes)) = next? else {
                            continue;
                        };
                        let (kind, data) = decode(id, &bytes)?;
                        let written = loose.write_buf(kind, &data).map_err(|err| {
                            Error::unavailable("cannot cache a file's content")
                                .with_context("cause", err)
                        })?;
                        check_id(written, id)?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// Makes sure the cache holds what `need` asks of `commit`.
    pub(crate) fn hydrate(
        &self,
        repo: &gix::Repository,
        project: ProjectId,
        commit: ObjectId,
        need: Need,
    ) -> Result<()> {
        self.fetch_reachable(repo, project, [commit], Home::Store)?;
        let mut level = vec![tree_of(repo, commit)?];
        let mut blobs = Vec::new();
        while !level.is_empty() {
            self.fetch_reachable(repo, project, level.iter().copied(), Home::Store)?;
            let mut next = Vec::new();
            for id in level {
                for (_, kind, oid) in entries_of(repo, id)? {
                    match kind {
                        EntryKind::Tree => next.push(oid),
                        EntryKind::Link => blobs.push(oid),
                        EntryKind::Blob | EntryKind::BlobExecutable if need == Need::Everything => {
                            blobs.push(oid)
                        }
                        _ => {}
                    }
                }
            }
            level = next;
        }
        self.fetch_reachable(repo, project, blobs, Home::ObjectStore)
    }

    /// Whether this process's cache is known to hold what `need` asks of `commit`.
    pub(crate) fn remembers(&self, project: ProjectId, commit: ObjectId, need: Need) -> bool {
        self.memo().contains(&(project, commit, need))
    }

    /// Writes what an operation kept in memory to the cache on disk, off the request's path,
    /// then remembers what the operation made sure of. Commits are written last: a commit on
    /// disk has its trees there too.
    pub(crate) fn persist(
        &self,
        objects_dir: std::path::PathBuf,
        hash: gix::hash::Kind,
        project: ProjectId,
        objects: Option<Vec<MemoryObject>>,
        hydrated: HashSet<(ObjectId, Need)>,
    ) {
        let objects = objects.unwrap_or_default();
        let remember = {
            let memo = self.hydrated.clone();
            move || {
                let mut memo = memo
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if memo.len() + hydrated.len() > MEMO_ENTRIES {
                    memo.clear();
                }
                memo.extend(
                    hydrated
                        .into_iter()
                        .map(|(commit, need)| (project, commit, need)),
                );
            }
        };
        if objects.is_empty() {
            remember();
            return;
        }
        let writing = self.runtime.spawn_blocking(move || {
            let mut objects = objects;
            objects.sort_by_key(|(_, (kind, _))| *kind == gix::objs::Kind::Commit);
            let loose = gix::odb::loose::Store::at(objects_dir, hash);
            for (id, (kind, data)) in &objects {
                if loose.contains(id) {
                    continue;
                }
                if let Err(err) = loose.write_buf(*kind, data) {
                    // The objects are shared; the next operation fetches them again.
                    tracing::warn!(%id, error = %err, "cannot cache a repository object");
                    return;
                }
            }
            remember();
        });
        let mut under_way = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        under_way.retain(|write| !write.is_finished());
        under_way.push(writing);
    }

    /// Removes a deleted project's file contents from the object store (its references,
    /// commits and trees went with its record). Returns how many were removed.
    pub async fn remove_contents(&self, project: ProjectId) -> Result<usize> {
        let listed = self
            .objects
            .list(&format!("repos/{project}/objects/"))
            .await?;
        let removed = listed.len();
        let objects = self.objects.clone();
        futures::stream::iter(listed)
            .map(|meta| {
                let objects = objects.clone();
                async move { objects.delete(&meta.key).await }
            })
            .buffer_unordered(PARALLEL_TRANSFERS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(removed)
    }

    /// Waits until what finished operations kept in memory is in the cache on disk.
    pub async fn flushed(&self) {
        loop {
            let under_way = std::mem::take(
                &mut *self
                    .writing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if under_way.is_empty() {
                return;
            }
            for write in under_way {
                let _ = write.await;
            }
        }
    }

    /// Makes sure the cache holds the commit, the trees from its root down to `path` (a
    /// directory or a file, `/`-separated; `""` for the top) and `path`'s own object: what one
    /// listing or one file needs, without the rest of the tree.
    pub(crate) fn hydrate_path(
        &self,
        repo: &gix::Repository,
        project: ProjectId,
        commit: ObjectId,
        path: &str,
    ) -> Result<()> {
        self.fetch_reachable(repo, project, [commit], Home::Store)?;
        let mut at = tree_of(repo, commit)?;
        self.fetch_reachable(repo, project, [at], Home::Store)?;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            // Not there, or a submodule: the caller answers from what the cache holds.
            let Some((_, kind, id)) = entries_of(repo, at)?
                .into_iter()
                .find(|(name, kind, _)| name == component.as_bytes() && *kind != EntryKind::Commit)
            else {
                return Ok(());
            };
            at = id;
            if kind != EntryKind::Tree {
                return self.fetch_reachable(repo, project, [at], Home::ObjectStore);
            }
            self.fetch_reachable(repo, project, [at], Home::Store)?;
        }
        Ok(())
    }

    /// Downloads `ids`, which a published commit reaches: one that is missing is the
    /// deployment's fault, not the project's.
    pub(crate) fn fetch_reachable(
        &self,
        repo: &gix::Repository,
        project: ProjectId,
        ids: impl IntoIterator<Item = ObjectId>,
        home: Home,
    ) -> Result<()> {
        self.download(repo, project, ids, home, Missing::Fail)
            .map_err(|err| {
                if err.kind() != ErrorKind::NotFound {
                    return err;
                }
                Error::unavailable(format!(
                    "project {project}'s repository data is missing from the shared storage; \
                 do all nodes use one database and one bucket?"
                ))
                .with_source(err)
            })
    }
}

/// Contents on their way to the object store (see [`SharedRepos::share_contents`]).
#[derive(Debug)]
pub(crate) struct SharingContents {
    ids: HashSet<ObjectId>,
    uploading: tokio::task::JoinHandle<Result<()>>,
}

/// A branch being read ahead (see [`SharedRepos::read_ahead`]).
#[derive(Debug)]
pub(crate) struct ReadAhead {
    pub(crate) reference: String,
    reading: tokio::task::JoinHandle<Result<ReadBranch>>,
}

/// A branch's head and the commits and trees read under it, unchecked until taken.
#[derive(Debug)]
pub(crate) struct ReadBranch {
    head: Option<ObjectId>,
    objects: Vec<(ObjectId, gix::objs::Kind, Vec<u8>)>,
}

/// Whether a cache's object database is empty: no loose object, no pack.
fn holds_no_objects(objects_dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(objects_dir) else {
        return true;
    };
    entries.flatten().all(|entry| {
        let name = entry.file_name();
        name == "info"
            || (name == "pack"
                && std::fs::read_dir(entry.path()).is_ok_and(|mut packs| packs.next().is_none()))
    })
}

/// Where git keeps loose object `id` under `objects_dir`.
fn loose_path(objects_dir: &std::path::Path, id: &ObjectId) -> std::path::PathBuf {
    let hex = id.to_string();
    objects_dir.join(&hex[..2]).join(&hex[2..])
}

/// Adds to `into` the objects a commit or tree names that live in the Store: a commit's tree, a
/// tree's subtrees.
fn reached_from(
    hash: gix::hash::Kind,
    kind: gix::objs::Kind,
    data: &[u8],
    into: &mut Vec<ObjectId>,
) -> Result<()> {
    let corrupt = || Error::unavailable("a repository object in the Store is corrupt");
    match kind {
        gix::objs::Kind::Commit => into.push(
            gix::objs::CommitRefIter::from_bytes(data, hash)
                .tree_id()
                .map_err(|_| corrupt())?,
        ),
        gix::objs::Kind::Tree => {
            for entry in gix::objs::TreeRefIter::from_bytes(data, hash) {
                let entry = entry.map_err(|_| corrupt())?;
                if entry.mode.is_tree() {
                    into.push(entry.oid.to_owned());
                }
            }
        }
        _ => return Err(corrupt()),
    }
    Ok(())
}

/// What a download does about an object the shared storage does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Fails with `NotFound`.
    Fail,
    /// Leaves it out: the caller only wanted what is there.
    Skip,
}

/// An object an operation kept in memory: its id, kind and data.
pub(crate) type MemoryObject = (ObjectId, (gix::objs::Kind, Vec<u8>));

/// Where objects of a kind are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// Commits and trees: small, and read by every sync, so one database round trip fetches a
    /// whole level of a tree.
    Store,
    /// File contents: any size, read by checkouts and file views.
    ObjectStore,
}

impl Home {
    fn of(kind: gix::objs::Kind) -> Self {
        match kind {
            gix::objs::Kind::Blob => Home::ObjectStore,
            _ => Home::Store,
        }
    }
}

/// Writes a commit or tree into the operation's memory (see `Repos::open`), refusing bytes that
/// are not `id`'s.
fn keep_in_memory(
    repo: &gix::Repository,
    id: ObjectId,
    kind: gix::objs::Kind,
    data: &[u8],
) -> Result<()> {
    let written = repo.objects.write_buf(kind, data).map_err(|err| {
        Error::internal("cannot cache a repository object").with_context("cause", err)
    })?;
    check_id(written, id)
}

/// Someone stored other bytes under this id: refuse them rather than serve them.
fn check_id(written: ObjectId, expected: ObjectId) -> Result<()> {
    if written == expected {
        return Ok(());
    }
    Err(
        Error::unavailable("a shared repository object does not match its id")
            .with_context("object", expected),
    )
}

pub(crate) fn tree_of(repo: &gix::Repository, commit: ObjectId) -> Result<ObjectId> {
    Ok(repo
        .find_commit(commit)
        .and_then(|c| c.tree_id())
        .map_err(|err| Error::internal("cannot read a commit").with_context("cause", err))?
        .detach())
}

/// A tree's entries: name, kind and id.
fn entries_of(
    repo: &gix::Repository,
    tree: ObjectId,
) -> Result<Vec<(Vec<u8>, EntryKind, ObjectId)>> {
    let tree = repo
        .find_tree(tree)
        .map_err(|err| Error::internal("cannot read a tree").with_context("cause", err))?;
    let decoded = tree
        .decode()
        .map_err(|err| Error::internal("cannot read a tree").with_context("cause", err))?;
    Ok(decoded
        .entries
        .iter()
        .map(|e| (e.filename.to_vec(), e.mode.kind(), e.oid.to_owned()))
        .collect())
}

/// The objects tree `new` has that tree `old` does not: `new` itself when it differs, every
/// subtree that differs, and every blob at a path where it is new. Unchanged subtrees are not
/// entered, so a one-file change costs one path of trees.
pub(crate) fn added_objects(
    repo: &gix::Repository,
    old: Option<ObjectId>,
    new: ObjectId,
    into: &mut HashSet<ObjectId>,
) -> Result<()> {
    if old == Some(new) || into.contains(&new) {
        return Ok(());
    }
    into.insert(new);
    let before: HashMap<Vec<u8>, (EntryKind, ObjectId)> = match old {
        Some(old) => entries_of(repo, old)?
            .into_iter()
            .map(|(name, kind, id)| (name, (kind, id)))
            .collect(),
        None => HashMap::new(),
    };
    for (name, kind, id) in entries_of(repo, new)? {
        let previous = before.get(&name);
        match kind {
            EntryKind::Tree => {
                let old_tree = previous
                    .filter(|(kind, _)| *kind == EntryKind::Tree)
                    .map(|(_, id)| *id);
                added_objects(repo, old_tree, id, into)?;
            }
            // A submodule's commit is not an object of this repository.
            EntryKind::Commit => {}
            _ => {
                if previous.map(|(_, old)| *old) != Some(id) {
                    into.insert(id);
                }
            }
        }
    }
    Ok(())
}

fn parse_target(target: &str) -> Result<ObjectId> {
    ObjectId::from_hex(target.as_bytes()).map_err(|_| {
        Error::internal("a shared reference does not hold a commit id")
            .with_context("target", target)
    })
}

fn encode_loose(kind: gix::objs::Kind, data: &[u8]) -> Result<Bytes> {
    let mut encoder = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(&gix::objs::encode::loose_header(kind, data.len() as u64))?;
    encoder.write_all(data)?;
    Ok(Bytes::from(encoder.finish()?))
}

fn decode_loose(bytes: &[u8]) -> Result<(gix::objs::Kind, Vec<u8>)> {
    let corrupt = || Error::unavailable("a repository object in the object store is corrupt");
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .read_to_end(&mut inflated)
        .map_err(|_| corrupt())?;
    let (kind, size, header) = gix::objs::decode::loose_header(&inflated).map_err(|_| corrupt())?;
    if (inflated.len() - header) as u64 != size {
        return Err(corrupt());
    }
    inflated.drain(..header);
    Ok((kind, inflated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_objects_round_trip_and_corruption_is_refused() {
        let bytes = encode_loose(gix::objs::Kind::Blob, b"hello\n").unwrap();
        let (kind, data) = decode_loose(&bytes).unwrap();
        assert_eq!(kind, gix::objs::Kind::Blob);
        assert_eq!(data, b"hello\n");
        assert!(decode_loose(&bytes[..bytes.len() - 2]).is_err());
        assert!(decode_loose(b"not zlib").is_err());
        let lying = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b"blob 99\0hello\n").unwrap();
            e.finish().unwrap()
        };
        let err = decode_loose(&lying).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
