//! Build slots: the fixed directories a build checks out, bundles and writes its output in.
//!
//! Metro's transform cache is keyed by file contents and paths relative to the project, but
//! some transforms bake the project's absolute location into their output: expo-router's route
//! table (`require.context` of the app directory, written as a path from the store's
//! `expo-router/_ctx.*.js` to `<project>/app`) is the one that shipped empty route tables. A cache
//! is only sound where every build that shares it sees the project at the same path, so builds
//! never run in a per-job directory: each takes a free slot, `DATA_DIR/cache/preview_build/slot-<n>`,
//! and the Metro cache it uses is keyed by that slot. A build prefers a free slot that built the
//! same project recently (its `affinity` file lists the last few), since only there is Metro's
//! cache for it warm; otherwise it takes the first free one. Concurrent builds (in this process or in
//! another worker on the same `DATA_DIR`) never share a slot.
//!
//! A slot is held with an exclusive `flock` on its `lock` file, which the kernel releases when
//! the holder exits however it exits, so a crashed worker never leaves a slot taken. Cleanup may
//! remove a slot unused for `CACHE_RETENTION_SECONDS` (taking one touches it).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// How many slots are tried before giving up: far more than any worker's concurrency.
const MAX_SLOTS: usize = 256;
/// How many recent projects a slot remembers.
const AFFINITY_KEPT: usize = 32;

/// A held slot. Dropping it frees the slot.
#[derive(Debug)]
pub struct BuildSlot {
    dir: PathBuf,
    index: usize,
    _lock: Flock<File>,
}

impl BuildSlot {
    /// Takes a free slot under `root` (created as needed): the one that built for `affinity`
    /// most recently, if one is free, else the first free one.
    pub fn acquire(root: &Path, affinity: &str) -> std::io::Result<BuildSlot> {
        std::fs::create_dir_all(root)?;
        let recent = |index: usize| -> Vec<String> {
            std::fs::read_to_string(root.join(format!("slot-{index}/affinity")))
                .map(|text| text.lines().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let existing = (0..MAX_SLOTS)
            .take_while(|index| root.join(format!("slot-{index}")).is_dir())
            .count();
        let mut preferred: Vec<(usize, usize)> = (0..existing)
            .filter_map(|index| {
                let rank = recent(index).iter().position(|a| a == affinity)?;
                Some((rank, index))
            })
            .collect();
        preferred.sort_unstable();
        for index in preferred.into_iter().map(|(_, i)| i).chain(0..MAX_SLOTS) {
            if let Some(slot) = Self::try_take(root, index)? {
                let mut kept = recent(index);
                kept.retain(|a| a != affinity);
                kept.insert(0, affinity.to_owned());
                kept.truncate(AFFINITY_KEPT);
                std::fs::write(slot.dir.join("affinity"), kept.join("\n"))?;
                return Ok(slot);
            }
        }
        Err(std::io::Error::other(format!(
            "all {MAX_SLOTS} build slots under {} are taken",
            root.display()
        )))
    }

    fn try_take(root: &Path, index: usize) -> std::io::Result<Option<BuildSlot>> {
        let dir = root.join(format!("slot-{index}"));
        std::fs::create_dir_all(&dir)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                // Cleanup keeps what was used recently: this slot is in use.
                let now = std::time::SystemTime::now();
                File::open(&dir)?.set_modified(now)?;
                lock.set_modified(now)?;
                Ok(Some(BuildSlot {
                    dir,
                    index,
                    _lock: lock,
                }))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(std::io::Error::from(errno)),
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the revision is checked out.
    pub fn project(&self) -> PathBuf {
        self.dir.join("project")
    }

    /// Where the bundler writes its output.
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// Scratch space for the builder's own files.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("builder")
    }

    /// Empties the slot of the last build's checkout and output, keeping the lock. A
    /// `node_modules` that build placed in its checkout is set aside for reuse
    /// ([`crate::deps::place`] decides whether it fits), replacing the one set aside before; with
    /// none, the one set aside before stays. Builds reset their slot when they start and when
    /// they end.
    pub fn reset(&self) -> std::io::Result<()> {
        let kept = self.kept_node_modules();
        let previous = self.project().join("node_modules");
        if std::fs::symlink_metadata(&previous).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_dir_all(&kept);
            std::fs::rename(&previous, &kept)?;
        }
        for dir in [self.project(), self.out(), self.scratch()] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// The previous build's `node_modules`, moved aside by [`BuildSlot::reset`].
    pub fn kept_node_modules(&self) -> PathBuf {
        self.dir.join("node_modules.previous")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_builds_get_distinct_slots_and_a_freed_slot_is_reused() {
        let root = tempfile::tempdir().unwrap();
        let first = BuildSlot::acquire(root.path(), "p").unwrap();
        let second = BuildSlot::acquire(root.path(), "p").unwrap();
        assert_eq!((first.index(), second.index()), (0, 1));
        assert_ne!(first.project(), second.project());
        drop(first);
        let again = BuildSlot::acquire(root.path(), "p").unwrap();
        assert_eq!(again.index(), 0, "the freed slot, at the same path");
        assert_eq!(again.project(), root.path().join("slot-0/project"));
    }

    #[test]
    fn a_free_slot_that_built_the_same_project_is_preferred() {
        let root = tempfile::tempdir().unwrap();
        let a = BuildSlot::acquire(root.path(), "a").unwrap();
        let b = BuildSlot::acquire(root.path(), "b").unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        drop((a, b));
        assert_eq!(BuildSlot::acquire(root.path(), "b").unwrap().index(), 1);
        assert_eq!(BuildSlot::acquire(root.path(), "c").unwrap().index(), 0);
        // Slot 0 built a and then c: it still counts for a.
        assert_eq!(BuildSlot::acquire(root.path(), "a").unwrap().index(), 0);
        // Taken: the next free one.
        let b = BuildSlot::acquire(root.path(), "b").unwrap();
        assert_eq!(BuildSlot::acquire(root.path(), "b").unwrap().index(), 0);
        drop(b);
    }

    #[test]
    fn a_slot_held_by_another_process_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        let slot = root.path().join("slot-0");
        std::fs::create_dir_all(&slot).unwrap();
        std::fs::write(slot.join("lock"), "").unwrap();
        // flock(1) holds the lock from another process until its stdin closes.
        let mut holder = std::process::Command::new("flock")
            .arg(slot.join("lock"))
            .args(["-c", "echo held; read _"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "held\n");
        assert_eq!(BuildSlot::acquire(root.path(), "p").unwrap().index(), 1);
        drop(holder.stdin.take());
        holder.wait().unwrap();
        // Free again (for a project slot 1 never built).
        assert_eq!(BuildSlot::acquire(root.path(), "q").unwrap().index(), 0);
    }

    #[test]
    fn reset_empties_the_checkout_and_keeps_the_newest_node_modules_aside() {
        let root = tempfile::tempdir().unwrap();
        let slot = BuildSlot::acquire(root.path(), "p").unwrap();
        std::fs::create_dir_all(slot.project().join("node_modules/a")).unwrap();
        std::fs::write(slot.project().join("index.js"), "x").unwrap();
        std::fs::create_dir_all(slot.out()).unwrap();
        slot.reset().unwrap();
        assert!(!slot.project().exists());
        assert!(!slot.out().exists());
        assert!(slot.kept_node_modules().join("a").is_dir());
        // The next build's reset, with nothing new to keep (the last one reset at its end), keeps
        // it; a newer one replaces it.
        slot.reset().unwrap();
        assert!(slot.kept_node_modules().join("a").is_dir());
        std::fs::create_dir_all(slot.project().join("node_modules/b")).unwrap();
        slot.reset().unwrap();
        assert!(slot.kept_node_modules().join("b").is_dir());
        assert!(!slot.kept_node_modules().join("a").exists());
    }
}
