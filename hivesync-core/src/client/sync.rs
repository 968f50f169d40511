//! Delta sync of a local folder to a project branch: scan (hashing only files whose size, times
//! or inode changed since the last sync, per a stat cache), upload only the contents the server
//! lacks, commit.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::credentials::{cache_dir, write_private};
use super::{Client, refusal, usage_error};
use crate::repo::{EntryMode, Manifest, ManifestEntry, SyncOutcome, blob_id, write_delta_upload};
use crate::{Error, ErrorKind, Result};

/// What the stat cache remembers of a file, to skip hashing it when it did not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    size: u64,
    mtime_ns: i128,
    /// Changed by every write, and by tools that restore the modification time (`cp -p`).
    ctime_ns: i128,
    device: u64,
    inode: u64,
    hash: String,
}

/// What a folder's cache file keeps between syncs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SyncState {
    /// The stat cache, by path.
    files: BTreeMap<String, Cached>,
    /// The last successful sync of this folder.
    last: Option<LastSync>,
}

/// A successful sync: the server has every content in `hashes` (git never forgets an object),
/// and `commit` was the branch head after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastSync {
    server: String,
    project: uuid::Uuid,
    branch: String,
    commit: String,
    hashes: Vec<String>,
}

/// What `/sync/plan` answers.
#[derive(Debug, Deserialize)]
struct Plan {
    head: Option<String>,
    missing: Vec<String>,
}

/// A commit refused because the branch moved (`409`) or a content is missing (`400`).
#[derive(Debug, Default, Deserialize)]
struct Refused {
    #[serde(default)]
    details: RefusedDetails,
}

#[derive(Debug, Default, Deserialize)]
struct RefusedDetails {
    head: Option<String>,
    missing: Option<String>,
}

/// The result of sending a commit.
enum Attempt {
    Done {
        outcome: SyncOutcome,
        sent: Vec<String>,
        sent_bytes: u64,
    },
    /// An optimistic commit against the head the last sync left, and the branch has moved.
    Moved { head: Option<String> },
    /// An optimistic commit that named a content the server lacks: plan instead.
    Missing,
}

/// One file of the local tree.
#[derive(Debug, Clone)]
struct LocalFile {
    path: String,
    absolute: PathBuf,
    mode: EntryMode,
    size: u64,
    hash: String,
}

/// Reads a file's content as it is synced: a link's content is its target.
fn content_of(file: &Path, mode: EntryMode) -> Result<Vec<u8>> {
    if mode == EntryMode::Symlink {
        let target = std::fs::read_link(file)?;
        let target = target
            .to_str()
            .ok_or_else(|| usage_error(format!("the target of {} is not UTF-8", file.display())))?;
        Ok(target.as_bytes().to_vec())
    } else {
        Ok(std::fs::read(file)?)
    }
}

/// Walks `dir` as git would see it (`.gitignore`, `.git/info/exclude`; never `.git`), hashing
/// what changed since the last sync of this folder.
fn scan(dir: &Path, cache: &mut BTreeMap<String, Cached>) -> Result<Vec<LocalFile>> {
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    // A file changed within the same timestamp tick as its hashing would look unchanged later:
    // only files older than this are remembered.
    let settled_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
        - 2_000_000_000;
    for entry in walker {
        let entry = entry.map_err(|err| usage_error(format!("cannot read the folder: {err}")))?;
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(dir)
            .map_err(|_| Error::internal("a walked path is outside the folder"))?;
        let path = relative
            .to_str()
            .ok_or_else(|| usage_error(format!("{} is not a UTF-8 path", relative.display())))?
            .to_owned();
        let metadata = entry
            .path()
            .symlink_metadata()
            .map_err(|err| usage_error(format!("cannot read {path}: {err}")))?;
        let mode = if file_type.is_symlink() {
            EntryMode::Symlink
        } else if file_type.is_file() {
            if metadata.mode() & 0o111 != 0 {
                EntryMode::Executable
            } else {
                EntryMode::File
            }
        } else {
            // Sockets, fifos and devices are not part of a project.
            continue;
        };
        let mtime_ns =
            i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
        let ctime_ns =
            i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec());
        let stat = Cached {
            size: metadata.len(),
            mtime_ns,
            ctime_ns,
            device: metadata.dev(),
            inode: metadata.ino(),
            hash: String::new(),
        };
        let unchanged = |c: &Cached| {
            (c.size, c.mtime_ns, c.ctime_ns, c.device, c.inode)
                == (
                    stat.size,
                    stat.mtime_ns,
                    stat.ctime_ns,
                    stat.device,
                    stat.inode,
                )
        };
        let hash = match cache.get(&path) {
            Some(c) if unchanged(c) => c.hash.clone(),
            _ => {
                let content = content_of(entry.path(), mode)?;
                blob_id(&content)?
            }
        };
        let size = if mode == EntryMode::Symlink {
            content_of(entry.path(), mode)?.len() as u64
        } else {
            metadata.len()
        };
        if mtime_ns < settled_before && ctime_ns < settled_before {
            cache.insert(
                path.clone(),
                Cached {
                    hash: hash.clone(),
                    ..stat
                },
            );
            seen.insert(path.clone());
        }
        files.push(LocalFile {
            path,
            absolute: entry.path().to_path_buf(),
            mode,
            size,
            hash,
        });
    }
    cache.retain(|path, _| seen.contains(path));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// What a folder sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Files in the folder's tree.
    pub files: usize,
    /// The paths whose contents were uploaded (one per distinct content).
    pub sent: Vec<String>,
    pub sent_bytes: u64,
    pub branch: String,
    /// The branch head after the sync.
    pub commit: String,
    /// Whether a commit was made.
    pub created: bool,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    /// Where the time went: scanning the folder, the plan request (zero when none was needed),
    /// the upload and commit.
    pub scan_time: Duration,
    pub plan_time: Duration,
    pub commit_time: Duration,
}

/// Where the stat cache of `dir` lives (under the user's cache directory).
pub fn default_cache_file(dir: &Path) -> Result<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let key = blob_id(dir.as_os_str().as_encoded_bytes())?;
    Ok(cache_dir()?.join(format!("sync-{}.json", &key[..16])))
}

/// Uploads the contents of `files` whose hashes are in `missing` (each once, re-hashed as they
/// are read so a file edited since the scan is not sent under a stale hash) with the manifest,
/// and commits against `parent` (`None`: the branch must not exist).
#[allow(clippy::too_many_arguments)]
async fn send_commit(
    client: &Client,
    project_path: &str,
    manifest: &Manifest,
    files: &[LocalFile],
    missing: &HashSet<String>,
    parent: Option<&str>,
    branch: &str,
    message: Option<&str>,
    optimistic: bool,
) -> Result<Attempt> {
    let mut sent = Vec::new();
    let mut contents = Vec::new();
    let mut sent_bytes = 0u64;
    let mut queued = HashSet::new();
    for file in files {
        if !missing.contains(&file.hash) || !queued.insert(file.hash.clone()) {
            continue;
        }
        let content = content_of(&file.absolute, file.mode)?;
        if blob_id(&content)? != file.hash {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{} changed during the sync; run it again", file.path),
            ));
        }
        sent_bytes += content.len() as u64;
        sent.push(file.path.clone());
        contents.push((file.hash.clone(), content));
    }
    let upload = write_delta_upload(Vec::new(), manifest, contents)?;
    let mut query = vec![
        ("branch", branch.to_owned()),
        ("parent", parent.unwrap_or("none").to_owned()),
    ];
    if let Some(message) = message {
        query.push(("message", message.to_owned()));
    }
    let response = client
        .send(
            client
                .request(
                    reqwest::Method::POST,
                    &format!("{project_path}/sync/commit"),
                )
                .query(&query)
                .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                .body(upload),
        )
        .await?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|err| Error::unavailable(format!("cannot read the answer: {err}")))?;
    let refused = || serde_json::from_slice::<Refused>(&body).unwrap_or_default();
    match status {
        200..=299 => Ok(Attempt::Done {
            outcome: serde_json::from_slice(&body).map_err(|err| {
                Error::internal(format!("the server's answer does not read: {err}"))
            })?,
            sent,
            sent_bytes,
        }),
        409 if optimistic => Ok(Attempt::Moved {
            head: refused().details.head.filter(|h| h != "none"),
        }),
        400 if optimistic && refused().details.missing.is_some() => Ok(Attempt::Missing),
        _ => Err(refusal(status, &body)),
    }
}

/// A delta sync of the folder `dir` to `project`: scan (hashing only files whose size, time or
/// inode changed since the last sync, per `cache_file`), then upload only the contents the
/// server lacks and commit.
///
/// After a sync from this folder the client knows what the server has, and commits at once
/// against the head it left. If that head moved, someone else committed: the sync stops with
/// `CONFLICT` unless `force`, which commits the folder on top of their commit. When the server
/// lacks something, or on a folder's first sync (which commits on top of the branch head), it
/// asks `/sync/plan` first.
pub async fn sync_folder(
    client: &Client,
    dir: &Path,
    project: uuid::Uuid,
    branch: &str,
    message: Option<&str>,
    force: bool,
    cache_file: &Path,
) -> Result<SyncReport> {
    let started = std::time::Instant::now();
    let dir = dir
        .canonicalize()
        .map_err(|_| usage_error(format!("{} is not a folder", dir.display())))?;
    if !dir.is_dir() {
        return Err(usage_error(format!("{} is not a folder", dir.display())));
    }
    let mut state: SyncState = std::fs::read(cache_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let scan_dir = dir.clone();
    let mut stat_cache = std::mem::take(&mut state.files);
    let (files, stat_cache) = tokio::task::spawn_blocking(move || {
        scan(&scan_dir, &mut stat_cache).map(|f| (f, stat_cache))
    })
    .await
    .map_err(|err| Error::internal("the folder scan failed").with_context("cause", err))??;
    if files.is_empty() {
        return Err(usage_error(format!(
            "{} has no files to sync",
            dir.display()
        )));
    }
    let manifest = Manifest {
        files: files
            .iter()
            .map(|f| ManifestEntry {
                path: f.path.clone(),
                size: f.size,
                mode: f.mode,
                hash: f.hash.clone(),
            })
            .collect(),
    };
    let scan_time = started.elapsed();
    let project_path = format!("/projects/{project}");

    let last = state
        .last
        .take()
        .filter(|l| l.server == client.base() && l.project == project && l.branch == branch);
    let mut attempt = Attempt::Missing;
    let mut plan_time = Duration::ZERO;
    if let Some(last) = &last {
        let known: HashSet<&String> = last.hashes.iter().collect();
        let missing = files
            .iter()
            .filter(|f| !known.contains(&f.hash))
            .map(|f| f.hash.clone())
            .collect();
        attempt = send_commit(
            client,
            &project_path,
            &manifest,
            &files,
            &missing,
            Some(&last.commit),
            branch,
            message,
            true,
        )
        .await?;
    }
    if let Attempt::Moved { head } = &attempt
        && !force
    {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{branch} has moved since this folder was last synced (its head is now {}); \
                 run with --force to commit this folder on top of it",
                head.as_deref().unwrap_or("gone")
            ),
        ));
    }
    if matches!(attempt, Attempt::Moved { .. } | Attempt::Missing) {
        let planning = std::time::Instant::now();
        #[derive(Serialize)]
        struct PlanRequest<'a> {
            branch: &'a str,
            files: &'a [ManifestEntry],
        }
        let plan: Plan = client
            .post(
                &format!("{project_path}/sync/plan"),
                &PlanRequest {
                    branch,
                    files: &manifest.files,
                },
            )
            .await?;
        let missing: HashSet<String> = plan.missing.into_iter().collect();
        plan_time = planning.elapsed();
        attempt = send_commit(
            client,
            &project_path,
            &manifest,
            &files,
            &missing,
            plan.head.as_deref(),
            branch,
            message,
            false,
        )
        .await?;
    }
    let Attempt::Done {
        outcome,
        sent,
        sent_bytes,
    } = attempt
    else {
        return Err(Error::internal("the server took no commit"));
    };
    let commit_time = started.elapsed() - scan_time - plan_time;
    let commit = outcome.commit.clone();

    let state = SyncState {
        files: stat_cache,
        last: Some(LastSync {
            server: client.base().to_owned(),
            project,
            branch: branch.to_owned(),
            commit: commit.clone(),
            hashes: files.iter().map(|f| f.hash.clone()).collect(),
        }),
    };
    if let Some(parent) = cache_file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_private(cache_file, &serde_json::to_vec(&state).unwrap_or_default())?;

    Ok(SyncReport {
        files: files.len(),
        sent,
        sent_bytes,
        branch: branch.to_owned(),
        commit,
        created: outcome.created,
        added: outcome.added as u64,
        changed: outcome.changed as u64,
        removed: outcome.removed as u64,
        scan_time,
        plan_time,
        commit_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(path: &Path) -> std::fs::Metadata {
        std::fs::symlink_metadata(path).unwrap()
    }

    #[test]
    fn the_stat_cache_is_used_until_anything_about_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let meta = stat_of(&file);
        let cached = Cached {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            device: meta.dev(),
            inode: meta.ino(),
            hash: "f".repeat(40),
        };
        // Unchanged: the remembered hash is trusted (here a made-up one, to see that it is).
        let mut cache = BTreeMap::from([("a.txt".to_owned(), cached.clone())]);
        let files = scan(dir.path(), &mut cache).unwrap();
        assert_eq!(files[0].hash, "f".repeat(40));

        // Same size, modification time put back (as `cp -p` or `rsync -t` do): the change of
        // ctime still gives it away.
        std::fs::write(&file, "two").unwrap();
        let modified =
            std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(cached.mtime_ns).unwrap());
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let mut cache = BTreeMap::from([("a.txt".to_owned(), cached)]);
        let files = scan(dir.path(), &mut cache).unwrap();
        assert_eq!(files[0].hash, blob_id(b"two").unwrap());
        // Files changed in the last moments are not remembered: a change within the same
        // timestamp tick would look like no change next time.
        assert!(cache.is_empty());
    }
}
