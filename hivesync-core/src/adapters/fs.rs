//! The filesystem `ObjectStore`: one file per object under a root directory.
//!
//! A put streams into `<root>/.staging/<random>`, syncs it, and renames it over the final path,
//! so a crash or a failed upload never leaves a partial object under a real key. Keys cannot start
//! a segment with `.` (see [`ObjectKey`]), so nothing a caller names can reach `.staging`.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::object_store::resolve_range;
use crate::ports::{ByteStream, Capabilities, GetResult, ObjectKey, ObjectMeta, ObjectStore};

const STAGING_DIR: &str = ".staging";
const READ_CHUNK: usize = 64 * 1024;

/// Objects as files under `root`.
#[derive(Debug, Clone)]
pub struct FilesystemObjectStore {
    root: PathBuf,
}

impl FilesystemObjectStore {
    /// A store rooted at `root`, created if missing.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join(STAGING_DIR))
            .await
            .map_err(|e| fs_error("cannot create the object store directory", &root, e))?;
        Ok(FilesystemObjectStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey guarantees plain segments, so this join stays under root.
        let mut path = self.root.clone();
        path.extend(key.segments());
        path
    }

    async fn meta_of(&self, key: &ObjectKey, path: &Path) -> Result<Option<ObjectMeta>> {
        match tokio::fs::metadata(path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta_from_fs(key.clone(), &meta))),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(fs_error("cannot read object metadata", path, e)),
        }
    }

    /// Streams `body` into the staging file `staging`, then syncs it to disk.
    async fn write_staging(&self, staging: &Path, mut body: ByteStream) -> Result<()> {
        let mut file = tokio::fs::File::create(staging)
            .await
            .map_err(|e| fs_error("cannot create a staging file", staging, e))?;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?)
                .await
                .map_err(|e| fs_error("cannot write a staging file", staging, e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| fs_error("cannot sync a staging file", staging, e))
    }
}

/// Removes the staging file if the put is dropped or fails between staging and rename.
struct StagingGuard(Option<PathBuf>);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[async_trait]
impl ObjectStore for FilesystemObjectStore {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { presign: false }
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<ObjectMeta> {
        let staged = self
            .root
            .join(STAGING_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        // Removes the staging file on every early return, and when the caller drops the put.
        let mut guard = StagingGuard(Some(staged.clone()));
        self.write_staging(&staged, body).await?;
        let target = self.path_of(key);
        let parent = target
            .parent()
            .ok_or_else(|| Error::internal("object path has no parent"))?;
        // A concurrent delete may remove an emptied parent between creating it and renaming into
        // it; one more round settles that race.
        let mut attempts = 0;
        loop {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| fs_error("cannot create the object's directory", parent, e))?;
            match tokio::fs::rename(&staged, &target).await {
                Ok(()) => break,
                Err(e) if is_missing(&e) && attempts < 3 => attempts += 1,
                Err(e) => {
                    let kind = if target.is_dir() {
                        ErrorKind::Conflict
                    } else {
                        ErrorKind::Unavailable
                    };
                    return Err(Error::new(kind, "cannot move the object into place")
                        .with_context("key", key)
                        .with_source(e));
                }
            }
        }
        guard.0 = None;
        self.meta_of(key, &target)
            .await?
            .ok_or_else(|| Error::unavailable("the object vanished right after it was written"))
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<GetResult> {
        let path = self.path_of(key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(not_found(key)),
            Err(e) => return Err(fs_error("cannot open object", &path, e)),
        };
        let fs_meta = file
            .metadata()
            .await
            .map_err(|e| fs_error("cannot read object metadata", &path, e))?;
        if !fs_meta.is_file() {
            return Err(not_found(key));
        }
        let meta = meta_from_fs(key.clone(), &fs_meta);
        let range = resolve_range(range, meta.size)?;
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(|e| fs_error("cannot seek in object", &path, e))?;
        }
        let limited = file.take(range.end - range.start);
        let body = ReaderStream::with_capacity(limited, READ_CHUNK)
            .map(move |chunk| chunk.map_err(Error::from))
            .boxed();
        Ok(GetResult { meta, range, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        self.meta_of(key, &self.path_of(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the deepest directory that the prefix fully names.
        let start_dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if start_dir
            .split('/')
            .any(|s| s == ".." || s.starts_with('.'))
            && !start_dir.is_empty()
        {
            return Ok(Vec::new());
        }
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let start = if start_dir.is_empty() {
            root.clone()
        } else {
            root.join(start_dir)
        };
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&root, &start, &prefix, &mut found)?;
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
        .map_err(|e| Error::internal("listing task failed").with_source(e))?
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(fs_error("cannot delete object", &path, e)),
        }
        // Tidy up directories the delete emptied; a directory that is not empty (or that a
        // concurrent put just filled) stops the walk.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn presign_get(&self, _key: &ObjectKey, _expires_in: Duration) -> Result<String> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "the filesystem object store cannot presign URLs",
        ))
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, found: &mut Vec<ObjectMeta>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) || e.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(fs_error("cannot list objects", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| fs_error("cannot list objects", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| fs_error("cannot list objects", &path, e))?;
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let Some(key) = relative
            .to_str()
            .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
        else {
            continue;
        };
        if file_type.is_dir() {
            // Descend only where keys below could still match the prefix.
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, found)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            let meta = entry
                .metadata()
                .map_err(|e| fs_error("cannot read object metadata", &path, e))?;
            if let Ok(key) = ObjectKey::new(key) {
                found.push(meta_from_fs(key, &meta));
            }
        }
    }
    Ok(())
}

fn meta_from_fs(key: ObjectKey, meta: &std::fs::Metadata) -> ObjectMeta {
    let modified = meta.modified().ok();
    let last_modified = modified.map(DateTime::<Utc>::from).unwrap_or_default();
    let nanos = modified
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    ObjectMeta {
        key,
        size: meta.len(),
        last_modified,
        // Every put renames a new file into place, so the inode changes with each version even
        // when two writes land within the filesystem's timestamp resolution.
        etag: Some(format!("{inode:x}-{nanos:x}-{:x}", meta.len())),
    }
}

fn is_missing(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

fn not_found(key: &ObjectKey) -> Error {
    Error::not_found("no such object").with_context("key", key)
}

fn fs_error(what: &'static str, path: &Path, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Unavailable, what)
        .with_context("path", path.display())
        .with_source(err)
}
