//! Writing a commit's tree into a fresh directory (a preview build's work tree).
//!
//! The repository is only read. Every path and link is checked again, whatever passed when it
//! was committed (history may come from an import whose older commits were never checked), and
//! the files are written so that nothing can land outside the destination: directories are made
//! from validated paths, files are created exclusively (never through an existing link), and links
//! are made last.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::objs::tree::EntryKind;

use super::{Need, ProjectRepo, RepoPath, Repos, check_link_chains, git_error};
use crate::domain::ProjectId;
use crate::error::{Error, ErrorKind, Result};

/// What a checkout wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub commit: String,
    /// The root tree's id: equal trees are equal checkouts, whatever the commit.
    pub tree: String,
    pub files: usize,
    pub bytes: u64,
}

/// A revision resolved to its commit and root tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    pub tree: String,
}

impl Repos {
    /// Resolves `rev` (a branch, a tag or a commit id) without writing anything.
    pub fn revision(&self, project: ProjectId, rev: &str) -> Result<Revision> {
        let project_repo = self.open(project)?;
        let commit = project_repo.resolve(rev)?;
        let tree = project_repo
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree_id())
            .map_err(git_error("cannot read a commit"))?;
        Ok(Revision {
            commit: commit.to_string(),
            tree: tree.to_string(),
        })
    }

    /// Writes the tree of `rev` (a branch, a tag or a commit id) into `dest`, which must not
    /// exist yet (its parent must).
    pub fn checkout(&self, project: ProjectId, rev: &str, dest: &Path) -> Result<Checkout> {
        let project_repo = self.open(project)?;
        let commit = project_repo.resolve(rev)?;
        project_repo.ensure(commit, Need::Everything)?;
        checkout_commit(&project_repo, commit, dest)
    }
}

fn checkout_commit(project_repo: &ProjectRepo, commit: ObjectId, dest: &Path) -> Result<Checkout> {
    let repo = &project_repo.repo;
    let limits = &project_repo.limits;
    let tree_id = repo
        .find_commit(commit)
        .and_then(|c| c.tree_id())
        .map_err(git_error("cannot read a commit"))?
        .detach();
    let files = project_repo.files_of(commit)?;
    if files.len() > limits.max_files {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the tree has more than {} files", limits.max_files),
        ));
    }
    // Validate everything before the first write.
    let mut checked: Vec<(RepoPath, EntryKind, ObjectId)> = Vec::with_capacity(files.len());
    let mut targets = std::collections::HashMap::new();
    for (raw, (kind, id)) in files.iter() {
        let path = RepoPath::parse(raw)?;
        if path.as_str() != raw {
            return Err(Error::validation(format!(
                "the tree has an irregular path {raw:?}"
            )));
        }
        if *kind == EntryKind::Link {
            let blob = repo
                .find_blob(*id)
                .map_err(git_error("cannot read a link"))?;
            let target = String::from_utf8(blob.data.clone()).map_err(|_| {
                Error::validation(format!("the target of link {path} is not UTF-8"))
            })?;
            super::archive::check_link(&path, &target)?;
            targets.insert(*id, target);
        }
        checked.push((path, *kind, *id));
    }
    check_link_chains(&files, |_, id| {
        targets
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::internal("a link's target went missing"))
    })?;
    super::archive::check_file_dir_clashes(checked.iter().map(|(p, _, _)| p))?;

    std::fs::create_dir(dest).map_err(|err| {
        Error::internal("cannot create the checkout directory")
            .with_context("path", dest.display())
            .with_source(err)
    })?;
    let mut bytes = 0u64;
    let mut links: Vec<(PathBuf, &str)> = Vec::new();
    for (path, kind, id) in &checked {
        let target_path = dest.join(path.as_str());
        if let Some(parent) = target_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match kind {
            EntryKind::Blob | EntryKind::BlobExecutable => {
                let blob = repo
                    .find_blob(*id)
                    .map_err(git_error("cannot read a file"))?;
                let mode = if *kind == EntryKind::BlobExecutable {
                    0o755
                } else {
                    0o644
                };
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&target_path)?;
                file.write_all(&blob.data)?;
                bytes += blob.data.len() as u64;
            }
            EntryKind::Link => {
                let target = targets
                    .get(id)
                    .ok_or_else(|| Error::internal("a link's target went missing"))?;
                links.push((target_path, target.as_str()));
            }
            // Submodules are not part of the checkout (their commits are not here).
            EntryKind::Commit | EntryKind::Tree => {}
        }
    }
    for (at, target) in links {
        symlink(target, &at)?;
    }
    Ok(Checkout {
        commit: commit.to_string(),
        tree: tree_id.to_string(),
        files: checked.len(),
        bytes,
    })
}
