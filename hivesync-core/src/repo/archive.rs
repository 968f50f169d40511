//! Reading uploaded trees: tar, gzip-compressed tar, and zip.
//!
//! An archive is read twice. The first pass checks everything — paths, entry types, links,
//! sizes, counts, duplicates — and hashes every file without storing anything; only when the
//! whole archive passes does the second pass write the blobs. A rejected upload therefore leaves
//! the repository as it was: no object is written for it.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use gix::ObjectId;

use crate::error::{Error, ErrorKind, Result};
use crate::repo::path::RepoPath;
use crate::repo::{EntryMode, Manifest, SyncLimits};

/// The longest link target accepted (git's own `PATH_MAX`-sized limit is larger; no project
/// needs more).
pub(crate) const MAX_LINK_TARGET: usize = 4096;

/// The formats `POST /projects/{id}/sync` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `application/x-tar`
    Tar,
    /// `application/gzip`: a gzip-compressed tar.
    TarGz,
    /// `application/zip`
    Zip,
}

/// What one file entry of an archive is (directories need no checks beyond their paths).
enum Kind {
    File { executable: bool },
    Symlink(String),
}

fn refuse(why: impl Into<String>) -> Error {
    Error::validation(why.into())
}

fn too_large(what: String) -> Error {
    Error::new(ErrorKind::PayloadTooLarge, what)
}

fn corrupt(err: impl std::fmt::Display) -> Error {
    Error::validation(format!("the archive cannot be read: {err}"))
}

/// A reader that fails once more than `cap` bytes were read from it, remembering why.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read as u64 > self.remaining {
            self.exceeded.set(true);
            return Err(std::io::Error::other(
                "the archive unpacks to more than its limit",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

/// The most entries an archive may have, directories and extension headers included.
fn max_entries(limits: &SyncLimits) -> usize {
    limits.max_files.saturating_mul(2).saturating_add(1024)
}

fn declared_size_check(path: &RepoPath, declared: u64, limits: &SyncLimits) -> Result<()> {
    if declared > limits.max_file_bytes {
        return Err(too_large(format!(
            "{path} is {declared} bytes; files may be at most {} bytes",
            limits.max_file_bytes
        )));
    }
    Ok(())
}

fn path_of(raw: &[u8]) -> Result<RepoPath> {
    let text =
        std::str::from_utf8(raw).map_err(|_| refuse("a path in the archive is not UTF-8"))?;
    RepoPath::parse(text)
}

/// Checks a directory entry's path. The archive's own top (`./`, which GNU tar writes first for
/// `tar -C dir -cf - .`, or `.`) is no path in the tree and is skipped; any other directory is
/// checked like a file's path, since a directory entry may be the only trace of a hostile path.
fn check_dir_entry(raw: &[u8]) -> Result<()> {
    let is_top = !raw.is_empty()
        && !raw.starts_with(b"/")
        && raw.split(|b| *b == b'/').all(|s| s.is_empty() || s == b".");
    if is_top {
        return Ok(());
    }
    path_of(raw).map(drop)
}

/// Walks every entry of the archive, calling `visit` with the entry's validated path, kind and
/// a reader of its content (bounded to the per-file limit).
fn walk(
    kind: ArchiveKind,
    file: &Path,
    limits: &SyncLimits,
    visit: impl FnMut(RepoPath, Kind, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    match kind {
        ArchiveKind::Tar | ArchiveKind::TarGz => walk_tar(kind, file, limits, visit),
        ArchiveKind::Zip => walk_zip(file, limits, visit),
    }
}

fn walk_tar(
    kind: ArchiveKind,
    file: &Path,
    limits: &SyncLimits,
    mut visit: impl FnMut(RepoPath, Kind, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let opened = BufReader::new(File::open(file)?);
    let raw: Box<dyn Read> = match kind {
        ArchiveKind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(opened)),
        _ => Box::new(opened),
    };
    // The tar crate reads long names and PAX headers whole before an entry reaches us: the
    // unpacked stream is capped so that no header can make it allocate without end.
    let entries_limit = max_entries(limits);
    let cap = limits
        .max_upload_bytes
        .saturating_add((entries_limit as u64).saturating_mul(4096));
    let exceeded = Rc::new(Cell::new(false));
    let reader = CappedReader {
        inner: raw,
        remaining: cap,
        exceeded: exceeded.clone(),
    };
    let unpack_error = |err: std::io::Error| {
        if exceeded.get() {
            too_large(format!("the archive unpacks to more than {cap} bytes"))
        } else {
            corrupt(err)
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut seen = 0usize;
    for entry in archive.entries().map_err(unpack_error)? {
        let mut entry = entry.map_err(unpack_error)?;
        seen += 1;
        if seen > entries_limit {
            return Err(too_large(format!(
                "the archive has more than {entries_limit} entries"
            )));
        }
        let header_kind = entry.header().entry_type();
        let raw_path = entry.path_bytes().into_owned();
        if header_kind.is_pax_global_extensions() || header_kind.is_pax_local_extensions() {
            continue;
        }
        if header_kind.is_dir() {
            check_dir_entry(&raw_path)?;
            continue;
        }
        let path = path_of(&raw_path)?;
        let kind = if header_kind.is_file() {
            let mode = entry.header().mode().map_err(corrupt)?;
            Kind::File {
                executable: mode & 0o111 != 0,
            }
        } else if header_kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refuse("a symbolic link without a target"))?;
            if target.len() > MAX_LINK_TARGET {
                return Err(refuse(format!(
                    "the target of link {path} is longer than {MAX_LINK_TARGET} bytes"
                )));
            }
            let target = std::str::from_utf8(&target)
                .map_err(|_| refuse("a link target is not UTF-8"))?
                .to_owned();
            Kind::Symlink(target)
        } else if header_kind.is_hard_link() {
            return Err(refuse(format!("hard links are not supported: {path}")));
        } else {
            return Err(refuse(format!(
                "device files, fifos and sparse files are not allowed: {path}"
            )));
        };
        let declared = entry.header().size().map_err(corrupt)?;
        declared_size_check(&path, declared, limits)?;
        let mut bounded = (&mut entry).take(limits.max_file_bytes + 1);
        visit(path, kind, declared, &mut bounded)?;
    }
    if exceeded.get() {
        return Err(too_large(format!(
            "the archive unpacks to more than {cap} bytes"
        )));
    }
    Ok(())
}

fn walk_zip(
    file: &Path,
    limits: &SyncLimits,
    mut visit: impl FnMut(RepoPath, Kind, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = zip::ZipArchive::new(BufReader::new(File::open(file)?)).map_err(corrupt)?;
    let entries_limit = max_entries(limits);
    if archive.len() > entries_limit {
        return Err(too_large(format!(
            "the archive has more than {entries_limit} entries"
        )));
    }
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(corrupt)?;
        let raw_path = entry.name_raw().to_vec();
        if entry.is_dir() {
            check_dir_entry(&raw_path)?;
            continue;
        }
        let path = path_of(&raw_path)?;
        let unix = entry.unix_mode();
        let kind = match unix.map(|m| m & 0o170000) {
            None | Some(0) | Some(0o100000) => Kind::File {
                executable: unix.is_some_and(|m| m & 0o111 != 0),
            },
            Some(0o120000) => {
                let mut target = Vec::new();
                (&mut entry)
                    .take(MAX_LINK_TARGET as u64 + 1)
                    .read_to_end(&mut target)
                    .map_err(corrupt)?;
                if target.len() > MAX_LINK_TARGET {
                    return Err(refuse(format!(
                        "the target of link {path} is longer than {MAX_LINK_TARGET} bytes"
                    )));
                }
                let target = String::from_utf8(target)
                    .map_err(|_| refuse(format!("the target of link {path} is not UTF-8")))?;
                Kind::Symlink(target)
            }
            Some(0o040000) => continue,
            Some(_) => {
                return Err(refuse(format!(
                    "device files and fifos are not allowed: {path}"
                )));
            }
        };
        let declared = entry.size();
        declared_size_check(&path, declared, limits)?;
        // The declared size may lie (a zip bomb): the reader is bounded regardless.
        let mut bounded = (&mut entry).take(limits.max_file_bytes + 1);
        visit(path, kind, declared, &mut bounded)?;
    }
    Ok(())
}

/// An archive's tree after the first pass.
pub(crate) struct Scanned {
    /// Every file: mode, blob id, size.
    pub(crate) files: BTreeMap<RepoPath, (EntryMode, ObjectId, u64)>,
    /// The targets of the links, by blob id.
    pub(crate) targets: HashMap<ObjectId, String>,
}

/// The first pass: validates the whole archive and returns its files with their blob ids,
/// writing nothing.
pub(crate) fn scan(
    kind: ArchiveKind,
    file: &Path,
    limits: &SyncLimits,
    hash_blob: impl Fn(&[u8]) -> Result<ObjectId>,
) -> Result<Scanned> {
    let mut files = BTreeMap::new();
    let mut targets = HashMap::new();
    let mut total: u64 = 0;
    let mut buffer = Vec::new();
    walk(
        kind,
        file,
        limits,
        |path, entry_kind, _declared, content| {
            if files.len() >= limits.max_files {
                return Err(too_large(format!(
                    "the archive has more than {} files",
                    limits.max_files
                )));
            }
            buffer.clear();
            let mode = match &entry_kind {
                Kind::Symlink(target) => {
                    check_link(&path, target)?;
                    buffer.extend_from_slice(target.as_bytes());
                    EntryMode::Symlink
                }
                Kind::File { executable } => {
                    content.read_to_end(&mut buffer).map_err(corrupt)?;
                    if buffer.len() as u64 > limits.max_file_bytes {
                        return Err(too_large(format!(
                            "{path} is larger than {} bytes",
                            limits.max_file_bytes
                        )));
                    }
                    if *executable {
                        EntryMode::Executable
                    } else {
                        EntryMode::File
                    }
                }
            };
            total += buffer.len() as u64;
            if total > limits.max_upload_bytes {
                return Err(too_large(format!(
                    "the archive unpacks to more than {} bytes",
                    limits.max_upload_bytes
                )));
            }
            let id = hash_blob(&buffer)?;
            if let Kind::Symlink(target) = entry_kind {
                targets.insert(id, target);
            }
            if files
                .insert(path.clone(), (mode, id, buffer.len() as u64))
                .is_some()
            {
                return Err(refuse(format!("{path} appears twice in the archive")));
            }
            Ok(())
        },
    )?;
    check_file_dir_clashes(files.keys())?;
    Ok(Scanned { files, targets })
}

/// A link's own checks: its name, and a target that stays inside the tree.
pub(crate) fn check_link(path: &RepoPath, target: &str) -> Result<()> {
    if !path.may_be_a_link() {
        return Err(refuse(format!("{path} may not be a link")));
    }
    if target.len() > MAX_LINK_TARGET || !path.link_stays_inside(target) {
        return Err(refuse(format!(
            "the link {path} points outside the project"
        )));
    }
    Ok(())
}

/// The second pass: hands every file's content (or a link's target) to `write`.
pub(crate) fn contents(
    kind: ArchiveKind,
    file: &Path,
    limits: &SyncLimits,
    mut write: impl FnMut(&RepoPath, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut buffer = Vec::new();
    walk(
        kind,
        file,
        limits,
        |path, entry_kind, _declared, content| {
            buffer.clear();
            match entry_kind {
                Kind::Symlink(target) => buffer.extend_from_slice(target.as_bytes()),
                Kind::File { .. } => {
                    content.read_to_end(&mut buffer).map_err(corrupt)?;
                }
            }
            write(&path, &buffer)
        },
    )
}

/// A path cannot be both a file and a directory (`a` and `a/b`).
pub(crate) fn check_file_dir_clashes<'a>(paths: impl Iterator<Item = &'a RepoPath>) -> Result<()> {
    let paths: Vec<&RepoPath> = paths.collect();
    let files: HashSet<&str> = paths.iter().map(|p| p.as_str()).collect();
    for path in &paths {
        let mut prefix = path.as_str();
        while let Some((dir, _)) = prefix.rsplit_once('/') {
            if files.contains(dir) {
                return Err(refuse(format!("{dir} is both a file and a directory")));
            }
            prefix = dir;
        }
    }
    Ok(())
}

/// The name of the manifest inside a delta-sync upload.
const MANIFEST_NAME: &str = "manifest.json";

/// A delta-sync upload after its first pass.
pub(crate) struct Upload {
    pub(crate) manifest: Manifest,
    /// Every content sent, with its size.
    pub(crate) blobs: HashMap<ObjectId, u64>,
    /// The contents of the manifest's links, kept for checking their targets.
    pub(crate) link_targets: HashMap<ObjectId, Vec<u8>>,
}

/// What an entry of a delta-sync upload is.
enum UploadEntry {
    Manifest,
    Blob(ObjectId),
}

fn upload_entry(path: &RepoPath) -> Result<UploadEntry> {
    if path.as_str() == MANIFEST_NAME {
        return Ok(UploadEntry::Manifest);
    }
    let hash = path.as_str().strip_prefix("blobs/").ok_or_else(|| {
        refuse(format!(
            "unexpected entry {path}: an upload holds manifest.json and blobs/<hash>"
        ))
    })?;
    super::parse_object_id(hash)
        .map(UploadEntry::Blob)
        .map_err(|_| refuse(format!("{path} is not named blobs/<40-digit hex hash>")))
}

/// The first pass over a delta-sync upload: reads the manifest (which must come first) and checks
/// that every content hashes to its name, writing nothing.
pub(crate) fn scan_upload(
    kind: ArchiveKind,
    file: &Path,
    limits: &SyncLimits,
    hash_blob: impl Fn(&[u8]) -> Result<ObjectId>,
) -> Result<Upload> {
    if kind == ArchiveKind::Zip {
        return Err(refuse(
            "a delta-sync upload is a tar, optionally gzip-compressed",
        ));
    }
    // The manifest may be larger than a file, up to its own limit.
    let walk_limits = SyncLimits {
        max_file_bytes: limits.max_file_bytes.max(limits.max_manifest_bytes),
        ..*limits
    };
    let mut manifest = None;
    let mut blobs = HashMap::new();
    let mut link_targets = HashMap::new();
    let mut link_ids: HashSet<ObjectId> = HashSet::new();
    let mut total: u64 = 0;
    let mut buffer = Vec::new();
    walk(
        kind,
        file,
        &walk_limits,
        |path, entry_kind, _declared, content| {
            if let Kind::Symlink(_) = entry_kind {
                return Err(refuse(format!(
                    "{path}: an upload holds only regular files"
                )));
            }
            buffer.clear();
            content.read_to_end(&mut buffer).map_err(corrupt)?;
            match upload_entry(&path)? {
                UploadEntry::Manifest => {
                    if buffer.len() as u64 > limits.max_manifest_bytes {
                        return Err(too_large(format!(
                            "the manifest is larger than {} bytes",
                            limits.max_manifest_bytes
                        )));
                    }
                    if manifest.is_some() {
                        return Err(refuse("the upload holds two manifests"));
                    }
                    if !blobs.is_empty() {
                        return Err(refuse(
                            "manifest.json must be the first entry of the upload",
                        ));
                    }
                    let parsed: Manifest = serde_json::from_slice(&buffer).map_err(|err| {
                        refuse(format!("manifest.json is not a valid manifest: {err}"))
                    })?;
                    link_ids = parsed
                        .files
                        .iter()
                        .filter(|f| f.mode == EntryMode::Symlink)
                        .filter_map(|f| super::parse_object_id(&f.hash).ok())
                        .collect();
                    manifest = Some(parsed);
                }
                UploadEntry::Blob(id) => {
                    if manifest.is_none() {
                        return Err(refuse(
                            "manifest.json must be the first entry of the upload",
                        ));
                    }
                    if buffer.len() as u64 > limits.max_file_bytes {
                        return Err(too_large(format!(
                            "{path} is larger than {} bytes",
                            limits.max_file_bytes
                        )));
                    }
                    if blobs.len() >= limits.max_files {
                        return Err(too_large(format!(
                            "the upload has more than {} contents",
                            limits.max_files
                        )));
                    }
                    total += buffer.len() as u64;
                    if total > limits.max_upload_bytes {
                        return Err(too_large(format!(
                            "the upload carries more than {} bytes",
                            limits.max_upload_bytes
                        )));
                    }
                    let actual = hash_blob(&buffer)?;
                    if actual != id {
                        return Err(refuse(format!(
                            "the content sent as {path} hashes to {actual}"
                        )));
                    }
                    if blobs.insert(id, buffer.len() as u64).is_some() {
                        return Err(refuse(format!("{path} appears twice in the upload")));
                    }
                    if link_ids.contains(&id) && buffer.len() <= MAX_LINK_TARGET {
                        link_targets.insert(id, buffer.clone());
                    }
                }
            }
            Ok(())
        },
    )?;
    let manifest = manifest.ok_or_else(|| refuse("the upload holds no manifest.json"))?;
    Ok(Upload {
        manifest,
        blobs,
        link_targets,
    })
}

/// The second pass over a delta-sync upload: hands every content to `write` with its id.
pub(crate) fn upload_blobs(
    kind: ArchiveKind,
    file: &Path,
    limits: &SyncLimits,
    mut write: impl FnMut(ObjectId, &[u8]) -> Result<()>,
) -> Result<()> {
    let walk_limits = SyncLimits {
        max_file_bytes: limits.max_file_bytes.max(limits.max_manifest_bytes),
        ..*limits
    };
    let mut buffer = Vec::new();
    walk(
        kind,
        file,
        &walk_limits,
        |path, _kind, _declared, content| {
            if let UploadEntry::Blob(id) = upload_entry(&path)? {
                buffer.clear();
                content.read_to_end(&mut buffer).map_err(corrupt)?;
                write(id, &buffer)?;
            }
            Ok(())
        },
    )
}
