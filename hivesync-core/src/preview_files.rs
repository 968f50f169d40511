//! Where a preview build's files live, on a worker's disk and in the object store: the one place
//! that spells the layout out (the builder writes it, the API reads it, cleanup prunes it).
//!
//! On the worker that builds it, under `DATA_DIR`:
//! - `tmp/preview-job-<job>/`: the build's work directory, with `logs/build.log` growing as the
//!   build runs (spec §7.13);
//! - `previews/<job>/`: what the worker keeps after the build: `bundle.zip`, `build.log` and, for a
//!   build that ran out of time, `metadata.json` (spec §7.10).
//!
//! In the object store, for every server:
//! - `previews/<project>/<job>/bundle.zip` (spec §7.8) and `previews/<project>/<job>/build.log`.
//!
//! The API reads only the object store, so an API server that shares no disk with the workers
//! answers exactly like one that does.

use std::path::{Path, PathBuf};

use crate::Result;
use crate::config::DataSubdir;
use crate::domain::{JobId, ProjectId};
use crate::ports::ObjectKey;

/// The object-store prefix that holds every preview object.
pub const OBJECT_PREFIX: &str = "previews/";
/// The prefix of a build's work directory name in `DATA_DIR/tmp`.
const WORK_DIR_PREFIX: &str = "preview-job-";

/// A worker's preview files, under one `DATA_DIR`.
#[derive(Debug, Clone)]
pub struct PreviewFiles {
    data_dir: PathBuf,
}

impl PreviewFiles {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        PreviewFiles {
            data_dir: data_dir.into(),
        }
    }

    /// `DATA_DIR/tmp/preview-job-<job>`: the build's work directory.
    pub fn work_dir(&self, job: JobId) -> PathBuf {
        self.data_dir
            .join(DataSubdir::Tmp.as_str())
            .join(format!("{WORK_DIR_PREFIX}{job}"))
    }

    /// The log of a build while it runs.
    pub fn live_log(&self, job: JobId) -> PathBuf {
        self.work_dir(job).join("logs/build.log")
    }

    /// `DATA_DIR/previews/<job>`: what the worker keeps of a finished build.
    pub fn kept_dir(&self, job: JobId) -> PathBuf {
        self.data_dir
            .join(DataSubdir::Previews.as_str())
            .join(job.to_string())
    }

    pub fn kept_bundle(&self, job: JobId) -> PathBuf {
        self.kept_dir(job).join("bundle.zip")
    }

    pub fn kept_log(&self, job: JobId) -> PathBuf {
        self.kept_dir(job).join("build.log")
    }

    /// The metadata of a build that ran out of time (spec §7.10).
    pub fn kept_metadata(&self, job: JobId) -> PathBuf {
        self.kept_dir(job).join("metadata.json")
    }

    /// The job whose work directory `path` is, if it is one.
    pub fn job_of_work_dir(path: &Path) -> Option<JobId> {
        path.file_name()?
            .to_str()?
            .strip_prefix(WORK_DIR_PREFIX)?
            .parse()
            .ok()
    }

    /// The object key of a build's bundle (spec §7.8).
    pub fn bundle_object(project: ProjectId, job: JobId) -> Result<ObjectKey> {
        ObjectKey::new(format!("{OBJECT_PREFIX}{project}/{job}/bundle.zip"))
    }

    /// The object key of a build's log, beside the bundle (and for failed builds too).
    pub fn log_object(project: ProjectId, job: JobId) -> Result<ObjectKey> {
        ObjectKey::new(format!("{OBJECT_PREFIX}{project}/{job}/build.log"))
    }

    /// The job a preview object belongs to (`previews/<project>/<job>/…`).
    pub fn job_of_object(key: &str) -> Option<JobId> {
        let rest = key.strip_prefix(OBJECT_PREFIX)?;
        rest.split('/').nth(1)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_and_key_names_its_job() {
        let files = PreviewFiles::new("/data");
        let (project, job) = (ProjectId::new(), JobId::new());
        assert_eq!(
            PreviewFiles::job_of_work_dir(&files.work_dir(job)),
            Some(job)
        );
        assert!(files.live_log(job).starts_with(files.work_dir(job)));
        assert!(files.kept_bundle(job).starts_with("/data/previews"));
        for key in [
            PreviewFiles::bundle_object(project, job).unwrap(),
            PreviewFiles::log_object(project, job).unwrap(),
        ] {
            assert_eq!(PreviewFiles::job_of_object(key.as_str()), Some(job));
        }
        assert_eq!(PreviewFiles::job_of_object("previews/x/not-a-job/a"), None);
        assert_eq!(PreviewFiles::job_of_object("other/x/y"), None);
        assert_eq!(
            PreviewFiles::job_of_work_dir(Path::new("/data/tmp/other")),
            None
        );
    }
}
