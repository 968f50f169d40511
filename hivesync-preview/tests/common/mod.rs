//! The harness the builder tests share: a project repository, the embedded SQL queue and SQLite
//! records, a dependency store, and a real worker that runs one build at a time.

#![allow(dead_code)] // each test crate uses its own part of it

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hivesync_core::adapters::{FilesystemObjectStore, SqliteStore};
use hivesync_core::clock::system_clock;
use hivesync_core::domain::{Job, JobId, ProjectId};
use hivesync_core::ports::{ObjectStore, Queue, Store, WorkerRole};
use hivesync_core::repo::{
    ArchiveKind, Author, BranchName, CommitRequest, ExpectedParent, ImportPolicy, Repos, SyncLimits,
};
use hivesync_core::testkit::examples::{example_app, tar_of_sources};
use hivesync_preview::builder::PreviewBuilder;
use hivesync_preview::bundler::Platform;
use hivesync_preview::deps::DepsStore;
use hivesync_preview::install_network::InstallNetwork;
use hivesync_preview::job::PreviewRequest;
use hivesync_preview::sandbox::{Sandbox, SandboxMode};
use hivesync_queue::SqliteBackend;
use hivesync_queue::jobs::{Submission, submit};
use hivesync_queue::worker::{Handlers, Worker, WorkerConfig, WorkerDeps};
use tokio_util::sync::CancellationToken;

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) backend: SqliteBackend,
    pub(crate) repos: Arc<Repos>,
    pub(crate) deps: Arc<DepsStore>,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) project: ProjectId,
}

pub(crate) async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for sub in ["repos", "tmp", "previews", "cache", "objects"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let sqlite = SqliteStore::connect_sqlite(&url).await.unwrap();
    sqlite.migrate().await.unwrap();
    let backend = SqliteBackend::new(sqlite.pool().clone(), system_clock());
    let repos = Arc::new(Repos::new(
        data.join("repos"),
        data.join("tmp"),
        SyncLimits {
            max_file_bytes: 50 << 20,
            max_upload_bytes: 500 << 20,
            max_files: 10_000,
            max_manifest_bytes: 32 << 20,
        },
        ImportPolicy {
            file_roots: Vec::new(),
            data_dir: data.clone(),
            allow_private_networks: false,
            timeout: Duration::from_secs(60),
        },
    ));
    let project = ProjectId::new();
    repos.create(project).unwrap();
    Env {
        store: Arc::new(sqlite),
        backend,
        deps: Arc::new(DepsStore::new(
            data.join("cache/preview_deps"),
            "npm",
            "test-toolchain",
            InstallNetwork::registries_only(&data),
        )),
        objects: Arc::new(
            FilesystemObjectStore::open(data.join("objects"))
                .await
                .unwrap(),
        ),
        repos,
        project,
        dir,
    }
}

impl Env {
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Syncs the example (edited by `edit`) to `branch`.
    pub(crate) fn sync(
        &self,
        name: &str,
        branch: &str,
        edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>,
    ) {
        let file = self.dir.path().join(format!("{branch}.tar"));
        std::fs::write(&file, tar_of_sources(&example_app(name), &edit)).unwrap();
        self.repos
            .sync_archive(
                self.project,
                ArchiveKind::Tar,
                &file,
                &CommitRequest {
                    branch: BranchName::parse(branch).unwrap(),
                    message: "sync".into(),
                    expected_parent: ExpectedParent::Current,
                    force: false,
                    author: Author {
                        name: "T".into(),
                        email: "t@example.com".into(),
                    },
                },
            )
            .unwrap();
    }

    pub(crate) fn builder(
        &self,
        objects: Arc<dyn ObjectStore>,
        timeout: Duration,
    ) -> PreviewBuilder {
        PreviewBuilder {
            repos: self.repos.clone(),
            deps: self.deps.clone(),
            objects,
            data_dir: self.data(),
            timeout,
            install_timeout: Duration::from_secs(600),
            slots: Arc::new(tokio::sync::Semaphore::new(1)),
            sandbox: Arc::new(Sandbox::for_mode(SandboxMode::Auto, &self.data())),
            optimize: false,
        }
    }

    /// Submits a build of `branch` and runs a worker with `builder` until the job is finished.
    pub(crate) async fn build(&self, builder: PreviewBuilder, branch: &str) -> Job {
        self.build_for(builder, branch, Platform::Android).await
    }

    /// Like [`Env::build`], for `platform`.
    pub(crate) async fn build_for(
        &self,
        builder: PreviewBuilder,
        branch: &str,
        platform: Platform,
    ) -> Job {
        let request = PreviewRequest {
            project_id: self.project,
            platform,
            git_ref: branch.to_owned(),
            requested_ref: None,
            app_dir: None,
            env: Default::default(),
            token_version: 1,
            token_id: None,
            build_key: None,
        };
        self.run(builder, &request).await
    }

    /// Submits `request` and runs a worker with `builder` until the job is finished.
    pub(crate) async fn run(&self, builder: PreviewBuilder, request: &PreviewRequest) -> Job {
        let id = submit(
            &*self.store,
            &self.backend,
            Submission::of(request).unwrap(),
        )
        .await
        .unwrap()
        .id;
        let mut config = WorkerConfig::new(WorkerRole::Cpu, 1);
        config.queues = vec![Queue::PreviewBuild];
        config.poll_interval = Duration::from_millis(50);
        let deps = WorkerDeps {
            store: self.store.clone(),
            queue: Arc::new(self.backend.clone()),
            registry: Arc::new(self.backend.clone()),
            locks: Arc::new(self.backend.clone()),
            clock: system_clock(),
        };
        let worker = Worker::new(config, deps, Handlers::new().on::<PreviewRequest>(builder));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let job = self.wait_finished(id).await;
        shutdown.cancel();
        running.await.unwrap().unwrap();
        self.assert_no_build_left_on_disk(&job);
        job
    }

    /// However a build ended, its checkout, output and work directory are gone; its log stays.
    pub(crate) fn assert_no_build_left_on_disk(&self, job: &Job) {
        let slots = self.data().join("cache/preview_build");
        for slot in std::fs::read_dir(&slots).into_iter().flatten().flatten() {
            for part in ["project", "out", "builder"] {
                let left = slot.path().join(part);
                assert!(
                    !left.exists(),
                    "{} left after job {}",
                    left.display(),
                    job.id
                );
            }
        }
        let work = self.data().join(format!("tmp/preview-job-{}", job.id));
        assert!(!work.exists(), "{} left", work.display());
        assert!(
            self.data()
                .join(format!("previews/{}/build.log", job.id))
                .is_file(),
            "the build's log is kept"
        );
    }

    pub(crate) async fn wait_finished(&self, id: JobId) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let job = self.store.get_job(id).await.unwrap().unwrap();
            if job.state.is_terminal() {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job stuck in {:?}",
                job.state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn log_of(&self, job: &Job) -> String {
        std::fs::read_to_string(
            self.data()
                .join("previews")
                .join(job.id.to_string())
                .join("build.log"),
        )
        .unwrap_or_default()
    }

    pub(crate) fn repo_state(&self) -> (Vec<String>, usize) {
        let refs = self
            .repos
            .refs(self.project)
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {}", r.name, r.commit))
            .collect();
        (
            refs,
            hivesync_core::repo::count_objects(&self.repos.path_of(self.project)).unwrap(),
        )
    }
}
