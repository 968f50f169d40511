//! Importing a branch or tag from another git repository.
//!
//! The fetch goes into a quarantine repository first, and the imported tree must pass the same
//! checks as an uploaded one (paths, links, sizes, counts) before its pack is moved into the
//! project's repository and the branch moves. A refused or failed import therefore leaves the
//! project's repository as it was.
//!
//! What an import may reach is policy: `file://` only below the configured roots (never
//! `DATA_DIR`), `http(s)://` only to public addresses unless private networks are allowed, and
//! no credentials in URLs (they would end up in logs).

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gix::ObjectId;
use gix::objs::tree::EntryKind;
use serde::Serialize;

use super::{CommitRequest, ProjectRepo, Remote, RepoPath, Repos, conflict, git_error};
use crate::config::Config;
use crate::domain::truncate_for_display;
use crate::error::{Error, ErrorKind, Result};

/// What imports may reach.
#[derive(Debug, Clone)]
pub struct ImportPolicy {
    /// Canonical directories `file://` imports may read below.
    pub file_roots: Vec<PathBuf>,
    /// Never readable by an import, whatever the roots say.
    pub data_dir: PathBuf,
    pub allow_private_networks: bool,
    pub timeout: Duration,
}

impl ImportPolicy {
    pub fn from_config(config: &Config) -> Self {
        ImportPolicy {
            file_roots: config.sync.import_file_roots.clone(),
            data_dir: config.data_dir.clone(),
            allow_private_networks: config.sync.import_allow_private_networks,
            timeout: config.sync.import_timeout,
        }
    }

    /// Checks `raw` against the policy and returns the URL to fetch from.
    pub fn check_url(&self, raw: &str) -> Result<String> {
        let refuse = |why: &str| {
            Error::validation(format!("cannot import from this URL: {why}"))
                .with_context("field", "url")
        };
        let url = url::Url::parse(raw.trim()).map_err(|_| refuse("it is not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("credentials in URLs are not accepted"));
        }
        // Query strings carry tokens as often as user names do, and the URL is logged.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("query strings and fragments are not accepted"));
        }
        match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(refuse("a file:// URL must name a local path"));
                }
                let path = url
                    .to_file_path()
                    .map_err(|_| refuse("it is not a local path"))?;
                let data_dir =
                    std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
                let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
                let allowed = |path: &Path| {
                    self.file_roots.iter().any(|root| path.starts_with(root))
                        && !path.starts_with(&data_dir)
                };
                let forbidden = || {
                    Error::forbidden("file:// imports may only read below IMPORT_FILE_ROOTS")
                        .with_context("field", "url")
                };
                // Judged on the path as written first, so that whether a path outside the roots
                // exists is never revealed; then again once links are resolved.
                if !allowed(&path) {
                    return Err(forbidden());
                }
                let path = path.canonicalize().map_err(|_| {
                    Error::conflict("cannot import from this URL: no repository at that path")
                        .with_context("field", "url")
                })?;
                if !allowed(&path) {
                    return Err(forbidden());
                }
                let path = path
                    .to_str()
                    .ok_or_else(|| refuse("the path is not UTF-8"))?;
                Ok(format!("file://{path}"))
            }
            "http" | "https" => {
                let host = url.host_str().ok_or_else(|| refuse("it names no host"))?;
                if !self.allow_private_networks {
                    let port = url.port_or_known_default().unwrap_or(443);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let addresses: Vec<IpAddr> = (host, port)
                        .to_socket_addrs()
                        .map_err(|_| {
                            Error::conflict(
                                "cannot import from this URL: its host cannot be resolved",
                            )
                            .with_context("field", "url")
                        })?
                        .map(|a| a.ip())
                        .collect();
                    if addresses.is_empty() || addresses.iter().any(|ip| is_private(*ip)) {
                        return Err(Error::forbidden(
                            "imports may not reach loopback, private or link-local addresses",
                        )
                        .with_context("field", "url"));
                    }
                }
                Ok(url.to_string())
            }
            _ => Err(refuse("only file://, http:// and https:// are supported")),
        }
    }
}

/// Addresses an import must not reach from a server: loopback, private, link-local, shared,
/// unspecified, multicast and broadcast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (high >> 8) as u8,
                    high as u8,
                    (low >> 8) as u8,
                    low as u8,
                ))
            };
            // NAT64 (64:ff9b::/96), 6to4 (2002::/16) and IPv4-compatible (::/96) addresses
            // reach the IPv4 address inside them.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private(embedded(segments[6], segments[7]));
            }
            if segments[0] == 0x2002 {
                return is_private(embedded(segments[1], segments[2]));
            }
            if segments[..6] == [0; 6] {
                return true;
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
        }
    }
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportOutcome {
    pub branch: String,
    pub commit: String,
    /// The branch head before the import.
    pub previous: Option<String>,
    /// Whether the branch moved (importing what it already points to changes nothing).
    pub updated: bool,
    pub files: usize,
}

/// A directory this module created and removes when done.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What an import's `ref` may be: empty or `HEAD`, a branch or tag name, or `refs/heads/…` or
/// `refs/tags/…` (an ECMA-262 pattern with look-aheads, for the OpenAPI document).
pub const IMPORT_REF_PATTERN: &str = concat!(
    r"^(?:HEAD|(?:refs/(?:heads|tags)/)?",
    super::path::branch_name_pattern!(),
    r")?$"
);

/// What an import's `url` may be (a pattern without look-aheads): `http(s)://` a host name whose
/// last label starts with a letter, or a dotted IPv4 address, an optional port and a path; or
/// `file://` a local path. No credentials, query or fragment; nothing `url` cannot parse.
pub const IMPORT_URL_PATTERN: &str = concat!(
    r"^(?:[hH][tT][tT][pP][sS]?://",
    r"(?:(?:[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*\.)*[a-zA-Z][a-zA-Z0-9]*(?:-[a-zA-Z0-9]+)*",
    r"|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))",
    r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?",
    r"|[fF][iI][lL][eE]://(?:localhost)?/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)$"
);

/// Whether `reference` is a ref an import may fetch ([`IMPORT_REF_PATTERN`]).
pub fn check_import_ref(reference: &str) -> Result<()> {
    refspecs(reference).map(drop)
}

/// The refspecs that fetch `reference` into the quarantine's `refs/import/*`.
fn refspecs(reference: &str) -> Result<Vec<String>> {
    if reference.is_empty() || reference == "HEAD" {
        return Ok(vec!["+HEAD:refs/import/head".to_owned()]);
    }
    let invalid = || {
        Error::validation(
            "invalid ref: expected HEAD, a branch or tag name, or refs/heads/… or refs/tags/…",
        )
        .with_context("field", "ref")
        .with_context("value", truncate_for_display(reference))
    };
    for prefix in ["refs/heads/", "refs/tags/"] {
        if let Some(name) = reference.strip_prefix(prefix) {
            super::BranchName::parse(name).map_err(|_| invalid())?;
            return Ok(vec![format!("+{reference}:refs/import/head")]);
        }
    }
    let name = super::BranchName::parse(reference).map_err(|_| invalid())?;
    Ok(vec![
        format!("+refs/heads/{name}:refs/import/head"),
        format!("+refs/tags/{name}:refs/import/tag"),
    ])
}

pub(crate) fn import(
    repos: &Repos,
    project_repo: &ProjectRepo,
    repo_dir: &Path,
    url: &str,
    reference: &str,
    request: &CommitRequest,
) -> Result<ImportOutcome> {
    request.validate()?;
    let source = repos.import.check_url(url)?;
    let specs = refspecs(reference)?;
    // Refuse a stale request before fetching anything.
    let head = project_repo.check_parent(request)?;

    std::fs::create_dir_all(&repos.tmp)?;
    let scratch = Scratch(repos.tmp.join(format!("import-{}", uuid::Uuid::new_v4())));
    let quarantine = gix::init_bare(&scratch.0).map_err(|err| {
        Error::internal("cannot create the import quarantine").with_context("cause", err)
    })?;
    drop(quarantine);
    // No redirects (a public URL could send the fetch to a private address), a bounded connect,
    // and a floor on the transfer rate.
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(scratch.0.join("config"))?;
    std::io::Write::write_all(
        &mut config,
        b"[http]\n\tfollowRedirects = false\n\tlowSpeedLimit = 1024\n\tlowSpeedTime = 60\n[gitoxide \"http\"]\n\tconnectTimeout = 30000\n",
    )?;
    drop(config);
    let quarantine = gix::open(&scratch.0).map_err(|err| {
        Error::internal("cannot open the import quarantine").with_context("cause", err)
    })?;
    fetch(&quarantine, &source, &specs, repos.import.timeout)?;

    let mut imported = None;
    for name in ["refs/import/head", "refs/import/tag"] {
        if let Some(mut found) = quarantine
            .try_find_reference(name)
            .map_err(git_error("cannot read a fetched reference"))?
        {
            let commit = found.peel_to_commit().map_err(|_| {
                Error::conflict("the imported ref does not name a commit")
                    .with_context("field", "ref")
            })?;
            imported = Some(commit.id);
            break;
        }
    }
    let commit = imported.ok_or_else(|| {
        Error::conflict("the repository has no such branch or tag").with_context("field", "ref")
    })?;
    let files = check_tree(&quarantine, commit, &repos.limits)?;

    if head == Some(commit) {
        return Ok(ImportOutcome {
            branch: request.branch.as_str().to_owned(),
            commit: commit.to_string(),
            previous: head.map(|h| h.to_string()),
            updated: false,
            files,
        });
    }
    if let Some(head) = head
        && !is_ancestor(&quarantine, head, commit)?
    {
        return Err(Error::conflict(format!(
            "the imported commit does not descend from the head of {}; import into another branch",
            request.branch
        ))
        .with_context("branch", &request.branch)
        .with_context("head", head));
    }
    move_objects(&scratch.0.join("objects"), &repo_dir.join("objects"))?;
    // A fresh handle sees the moved pack.
    let fresh = ProjectRepo {
        repo: gix::open(repo_dir).map_err(|err| {
            Error::internal("cannot open the project repository").with_context("cause", err)
        })?,
        limits: project_repo.limits,
        files_cache: Default::default(),
        remote: project_repo.remote.as_ref().map(Remote::another),
    };
    if !fresh.repo.has_object(commit) {
        return Err(Error::internal("the imported objects did not arrive"));
    }
    fresh.publish_history(commit, head)?;
    fresh
        .move_branch(
            &request.branch,
            head,
            commit,
            &format!("import: {}", truncate_for_display(url)),
        )
        .map_err(|err| match err.kind() {
            ErrorKind::Conflict => {
                conflict(&request.branch, fresh.head(&request.branch).ok().flatten())
            }
            _ => err,
        })?;
    Ok(ImportOutcome {
        branch: request.branch.as_str().to_owned(),
        commit: commit.to_string(),
        previous: head.map(|h| h.to_string()),
        updated: true,
        files,
    })
}

fn fetch(
    quarantine: &gix::Repository,
    source: &str,
    specs: &[String],
    timeout: Duration,
) -> Result<()> {
    // The request is well formed; the repository it names cannot be read (a 409, like every
    // failure that depends on what is at the other end rather than on what was sent).
    let unreachable = |err: gix::Error| {
        Error::conflict("cannot fetch from the repository")
            .with_context("field", "url")
            .with_context("cause", err)
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                interrupt.store(true, Ordering::SeqCst);
            }
        })
    };
    let result = (|| -> Result<()> {
        let remote = quarantine
            .remote_at(source)
            .map_err(unreachable)?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs(
                specs.iter().map(String::as_str),
                gix::remote::Direction::Fetch,
            )
            .map_err(unreachable)?;
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(unreachable)?;
        let prepared = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(unreachable)?;
        if prepared.ref_map().is_missing_required_mapping() {
            return Err(Error::conflict("the repository has no such branch or tag")
                .with_context("field", "ref"));
        }
        prepared
            .receive(gix::progress::Discard, &interrupt)
            .map_err(unreachable)?;
        Ok(())
    })();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    if interrupt.load(Ordering::SeqCst) {
        return Err(
            Error::new(ErrorKind::Unavailable, "the import took too long")
                .with_context("timeout_seconds", timeout.as_secs()),
        );
    }
    result
}

/// Checks every entry of the imported tree like an upload's; returns the number of files.
fn check_tree(
    repo: &gix::Repository,
    commit: ObjectId,
    limits: &super::SyncLimits,
) -> Result<usize> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(git_error("cannot read the imported commit"))?;
    let entries = tree
        .traverse()
        .breadthfirst
        .files()
        .map_err(git_error("cannot read the imported tree"))?;
    let mut files = 0;
    let mut flat = super::FlatTree::new();
    let mut targets = std::collections::HashMap::new();
    for entry in entries {
        let raw = std::str::from_utf8(entry.filepath.as_ref())
            .map_err(|_| Error::validation("the imported tree has a path that is not UTF-8"))?;
        let path = RepoPath::parse(raw)?;
        if path.as_str() != raw {
            return Err(Error::validation(format!(
                "the imported tree has an irregular path {raw:?}"
            )));
        }
        let kind = entry.mode.kind();
        if matches!(kind, EntryKind::Tree | EntryKind::Commit) {
            continue;
        }
        files += 1;
        if files > limits.max_files {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the imported tree has more than {} files", limits.max_files),
            ));
        }
        let size = repo
            .find_header(entry.oid)
            .map_err(git_error("cannot read an imported object"))?
            .size();
        if size > limits.max_file_bytes {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "{path} is {size} bytes; files may be at most {} bytes",
                    limits.max_file_bytes
                ),
            ));
        }
        if kind == EntryKind::Link {
            let blob = repo
                .find_blob(entry.oid)
                .map_err(git_error("cannot read an imported object"))?;
            let target = std::str::from_utf8(&blob.data).map_err(|_| {
                Error::validation(format!("the target of link {path} is not UTF-8"))
            })?;
            super::archive::check_link(&path, target)?;
            targets.insert(entry.oid, target.to_owned());
        }
        flat.insert(raw.to_owned(), (kind, entry.oid));
    }
    super::check_link_chains(&flat, |_, id| {
        targets
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::internal("a link's target went missing"))
    })?;
    Ok(files)
}

/// Whether `ancestor` is `descendant` or one of its ancestors.
fn is_ancestor(repo: &gix::Repository, ancestor: ObjectId, descendant: ObjectId) -> Result<bool> {
    if !repo.has_object(ancestor) {
        return Ok(false);
    }
    let walk = repo
        .rev_walk([descendant])
        .all()
        .map_err(git_error("cannot walk the imported history"))?;
    for info in walk {
        let info = info.map_err(|err| {
            Error::internal("cannot walk the imported history").with_context("cause", err)
        })?;
        if info.id == ancestor {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Moves the quarantine's objects into the project's object database: packs (the index last,
/// so a reader never sees an index without its pack) and any loose objects.
fn move_objects(from: &Path, to: &Path) -> Result<()> {
    let pack_dir = from.join("pack");
    if pack_dir.is_dir() {
        std::fs::create_dir_all(to.join("pack"))?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&pack_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "pack" || ext == "idx" || ext == "rev")
            })
            .collect();
        // `.pack` before `.rev` before `.idx`.
        names.sort_by_key(|p| match p.extension().and_then(|e| e.to_str()) {
            Some("pack") => 0,
            Some("rev") => 1,
            _ => 2,
        });
        for source in names {
            let name = source.file_name().expect("read_dir entries have names");
            place(&source, &to.join("pack").join(name))?;
        }
    }
    for dir in std::fs::read_dir(from)? {
        let dir = dir?;
        let name = dir.file_name();
        let is_fanout = name.len() == 2
            && name
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if !is_fanout {
            continue;
        }
        std::fs::create_dir_all(to.join(&name))?;
        for object in std::fs::read_dir(dir.path())? {
            let object = object?;
            let target = to.join(&name).join(object.file_name());
            if !target.exists() {
                place(&object.path(), &target)?;
            }
        }
    }
    Ok(())
}

/// Renames `source` to `target`, or copies it beside `target` and renames it there when they
/// are on different filesystems, so `target` appears whole or not at all.
fn place(source: &Path, target: &Path) -> Result<()> {
    if std::fs::rename(source, target).is_ok() {
        return Ok(());
    }
    let mut staging = tempfile::NamedTempFile::new_in(target.parent().unwrap_or(Path::new(".")))?;
    let mut original = std::fs::File::open(source)?;
    std::io::copy(&mut original, &mut staging)?;
    // Git writes its objects and packs read-only; the copy keeps the original's mode.
    staging
        .as_file()
        .set_permissions(original.metadata()?.permissions())?;
    staging.as_file().sync_all()?;
    staging.persist(target).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(roots: Vec<PathBuf>, data_dir: PathBuf, private: bool) -> ImportPolicy {
        ImportPolicy {
            file_roots: roots,
            data_dir,
            allow_private_networks: private,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_ref_pattern_accepts_exactly_the_refs_an_import_fetches() {
        let pattern = fancy_regex::Regex::new(IMPORT_REF_PATTERN).unwrap();
        let tokens = [
            "",
            "HEAD",
            "refs/",
            "heads/",
            "tags/",
            "refs/heads/",
            "refs/tags/",
            "main",
            "v1",
            ".",
            "..",
            "/",
            "-",
            " ",
            "~",
            "@{",
            ".lock",
            "é",
        ];
        let mut seen = (0, 0);
        for a in tokens {
            for b in tokens {
                for c in tokens {
                    let sample = format!("{a}{b}{c}");
                    let accepted = check_import_ref(&sample).is_ok();
                    if accepted {
                        seen.0 += 1;
                    } else {
                        seen.1 += 1;
                    }
                    assert_eq!(pattern.is_match(&sample).unwrap(), accepted, "{sample:?}");
                }
            }
        }
        assert!(seen.0 > 100 && seen.1 > 100, "{seen:?}");
    }

    #[test]
    fn every_url_the_pattern_accepts_parses_and_names_no_credentials() {
        let pattern = regex_lite_free(IMPORT_URL_PATTERN);
        let good = [
            "https://github.com/expo/expo.git",
            "HTTP://a",
            "http://8.8.8.8:65535/x%2Fy/@v1",
            "https://git-host.example.org:0/a/b.git",
            "file:///srv/git/app",
            "file://localhost/srv/git/app",
            "https://1.2.3.a/x",
        ];
        let bad = [
            "",
            " https://github.com/x",
            "https://user:pw@github.com/x",
            "https://github.com/x?token=1",
            "https://github.com/x#main",
            "https://256.1.1.1/x",
            "https://1.2.3/x",
            "https://0x7f.1/x",
            "https://xn--a.com/x",
            "https://a..b/x",
            "https://a.b:65536/x",
            "https://a.b:/x",
            "ssh://github.com/x",
            "file://host/x",
            "https://a.b/%zz",
        ];
        for url in good {
            assert!(pattern.is_match(url).unwrap(), "{url}");
        }
        for url in bad {
            assert!(!pattern.is_match(url).unwrap(), "{url}");
        }
        // Built from pieces: whatever matches, `url` parses without credentials or query.
        let schemes = [
            "http://",
            "https://",
            "HtTpS://",
            "file://",
            "file://localhost",
        ];
        let hosts = [
            "a",
            "a-b.c0",
            "1.2.3.4",
            "255.255.255.255",
            "x.y.z9",
            "9.a",
            "",
        ];
        let ports = ["", ":0", ":80", ":08080", ":65535"];
        let paths = [
            "",
            "/",
            "/a b",
            "/%41%e4",
            "/a/../b",
            "/@:;=!$'()*+,",
            "/~x/./y",
        ];
        let mut matched = 0;
        for scheme in schemes {
            for host in hosts {
                for port in ports {
                    for path in paths {
                        let raw = format!("{scheme}{host}{port}{path}");
                        if !pattern.is_match(&raw).unwrap() {
                            continue;
                        }
                        matched += 1;
                        let url = url::Url::parse(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
                        assert!(
                            url.username().is_empty() && url.password().is_none(),
                            "{raw}"
                        );
                        assert!(url.query().is_none() && url.fragment().is_none(), "{raw}");
                        if url.scheme() == "file" {
                            assert!(url.to_file_path().is_ok(), "{raw}");
                        } else {
                            assert!(url.host_str().is_some(), "{raw}");
                        }
                    }
                }
            }
        }
        assert!(matched > 200, "{matched}");
    }

    /// The URL pattern needs no look-around: the server's validator (the `regex` crate) runs it.
    fn regex_lite_free(pattern: &str) -> fancy_regex::Regex {
        assert!(!pattern.contains("(?=") && !pattern.contains("(?!"));
        fancy_regex::Regex::new(pattern).unwrap()
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip} is private");
        }
        for ip in [
            "64:ff9b::7f00:1",
            "2002:a00:1::",
            "::127.0.0.1",
            "fec0::1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip} is private");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_against_the_policy() {
        let roots = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let allowed = roots.path().join("repo");
        std::fs::create_dir(&allowed).unwrap();
        let root = roots.path().canonicalize().unwrap();
        let strict = policy(vec![root.clone()], data.path().to_path_buf(), false);

        let file_url = format!("file://{}", allowed.display());
        assert_eq!(
            strict.check_url(&file_url).unwrap(),
            format!("file://{}", allowed.canonicalize().unwrap().display())
        );
        // Outside the roots, inside DATA_DIR, and `..` climbing out are all refused.
        let outside = tempfile::tempdir().unwrap();
        for url in [
            format!("file://{}", outside.path().display()),
            format!("file://{}", data.path().display()),
            format!("file://{}/repo/../..", root.display()),
        ] {
            let err = strict.check_url(&url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Forbidden, "{url}");
        }
        // No roots: no file:// at all.
        let none = policy(Vec::new(), data.path().to_path_buf(), false);
        assert_eq!(
            none.check_url(&file_url).unwrap_err().kind(),
            ErrorKind::Forbidden
        );

        assert_eq!(
            strict
                .check_url("http://127.0.0.1:9/x.git")
                .unwrap_err()
                .kind(),
            ErrorKind::Forbidden
        );
        assert_eq!(
            strict
                .check_url("http://localhost:9/x.git")
                .unwrap_err()
                .kind(),
            ErrorKind::Forbidden
        );
        assert_eq!(
            strict.check_url("http://[::1]:9/x.git").unwrap_err().kind(),
            ErrorKind::Forbidden
        );
        let open = policy(Vec::new(), data.path().to_path_buf(), true);
        assert_eq!(
            open.check_url("http://127.0.0.1:9/x.git").unwrap(),
            "http://127.0.0.1:9/x.git"
        );

        for bad in [
            "ssh://host/x",
            "git://host/x",
            "not a url",
            "https://user:pw@example.com/x.git",
        ] {
            assert_eq!(
                open.check_url(bad).unwrap_err().kind(),
                ErrorKind::Validation,
                "{bad}"
            );
        }
    }

    #[test]
    fn refs_become_refspecs() {
        assert_eq!(refspecs("HEAD").unwrap(), vec!["+HEAD:refs/import/head"]);
        assert_eq!(
            refspecs("refs/tags/v1").unwrap(),
            vec!["+refs/tags/v1:refs/import/head"]
        );
        assert_eq!(refspecs("main").unwrap().len(), 2);
        for bad in ["a..b", "-x", "refs/heads/", "x:y", "refs/heads/a b"] {
            assert_eq!(
                refspecs(bad).unwrap_err().kind(),
                ErrorKind::Validation,
                "{bad}"
            );
        }
    }
}
