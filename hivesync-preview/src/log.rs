//! The build log: `DATA_DIR/tmp/preview-job-<id>/logs/build.log` (spec §7.13). Every step writes
//! a timed line; the bundler's and npm's own output goes straight into the same file.

use std::fmt::Display;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// An append-only build log.
#[derive(Debug)]
pub struct BuildLog {
    path: PathBuf,
    file: File,
    started: Instant,
}

impl BuildLog {
    /// Creates the log (and its directory).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            file,
            started: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `[ 12.345s] message`. A log that cannot be written does not fail the build.
    pub fn line(&self, message: impl Display) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let _ = writeln!(&self.file, "[{elapsed:8.3}s] {message}");
    }

    /// A handle a child process writes its output to (appending, like everything else).
    pub fn stdio(&self) -> std::io::Result<Stdio> {
        Ok(Stdio::from(self.file.try_clone()?))
    }

    /// The log's current length: a mark to read a step's own output from.
    pub fn mark(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// What was written after `mark`, at most `max_bytes` of it (the first ones: the cause
    /// of a failure comes before its stack trace).
    pub fn since(&self, mark: u64, max_bytes: u64) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(&self.path)?;
            file.seek(SeekFrom::Start(mark))?;
            let mut bytes = Vec::new();
            file.take(max_bytes).read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        read().unwrap_or_default()
    }

    /// The last `max_bytes` of the log, for error messages.
    pub fn tail(&self, max_bytes: u64) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(&self.path)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        read().unwrap_or_default()
    }
}
