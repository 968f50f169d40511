//! Repositories shared by several nodes: each node a `Repos` with its own disk, all on one Store
//! and one object store. What one node commits, every other reads, browses, checks out and
//! commits on top of; a branch moves for one writer at a time; a node's disk is only a cache.

#![cfg(feature = "git")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hivesync_core::adapters::{FilesystemObjectStore, SqliteStore};
use hivesync_core::domain::{Email, NewProject, NewUser, ProjectId};
use hivesync_core::error::{ErrorKind, Result};
use hivesync_core::ports::{ObjectStore, Store};
use hivesync_core::repo::{
    ArchiveKind, Author, BranchName, CommitRequest, EntryMode, ExpectedParent, ImportPolicy,
    Manifest, ManifestEntry, Repos, SharedRepos, SyncLimits, SyncOutcome, SyncPlan, blob_id,
    write_delta_upload,
};

const LIMITS: SyncLimits = SyncLimits {
    max_file_bytes: 1 << 20,
    max_upload_bytes: 8 << 20,
    max_files: 100,
    max_manifest_bytes: 1 << 20,
};

/// One Store and one object store, and a scratch directory for the nodes' disks.
struct Cluster {
    dir: tempfile::TempDir,
    /// The Store's database, for what no port method does (rows as an older release left them).
    records: SqliteStore,
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    project: ProjectId,
}

impl Cluster {
    async fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("records.db").display());
        let store = SqliteStore::connect_sqlite(&url).await.unwrap();
        store.migrate().await.unwrap();
        let owner = store
            .create_user(NewUser {
                email: Email::parse("owner@example.org").unwrap(),
                display_name: "owner".to_owned(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
            })
            .await
            .unwrap();
        let project = store
            .create_project(NewProject {
                name: "shared".to_owned(),
                description: String::new(),
                owner: owner.id,
            })
            .await
            .unwrap()
            .id;
        let objects = FilesystemObjectStore::open(dir.path().join("objects"))
            .await
            .unwrap();
        Cluster {
            dir,
            records: store.clone(),
            store: Arc::new(store),
            objects: Arc::new(objects),
            project,
        }
    }

    /// A node with its own disk under `name`; shared unless `local`.
    fn node(&self, name: &str) -> Repos {
        let shared = SharedRepos::new(self.store.clone(), self.objects.clone()).unwrap();
        self.local_node(name).with_sharing(shared)
    }

    fn local_node(&self, name: &str) -> Repos {
        let data = self.disk(name);
        Repos::new(
            data.join("repos"),
            data.join("tmp"),
            LIMITS,
            ImportPolicy {
                file_roots: Vec::new(),
                data_dir: data,
                allow_private_networks: false,
                timeout: std::time::Duration::from_secs(60),
            },
        )
    }

    fn disk(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where uploads are written before a node reads them.
    fn scratch(&self) -> PathBuf {
        let scratch = self.disk("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        scratch
    }

    /// Commits [`tree_v1`] through `node` as the project's first commit on `main`.
    async fn first_commit(&self, node: &Repos) -> SyncOutcome {
        let (node, project, scratch) = (node.clone(), self.project, self.scratch());
        blocking(move || {
            commit(
                &node,
                project,
                &tree_v1(),
                None,
                ExpectedParent::NoBranch,
                &scratch,
            )
        })
        .await
        .unwrap()
    }
}

/// Runs repository work on a blocking thread, as the server and the builder do.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

fn request(expected_parent: ExpectedParent) -> CommitRequest {
    CommitRequest {
        branch: BranchName::parse("main").unwrap(),
        message: "sync".to_owned(),
        expected_parent,
        force: false,
        author: Author {
            name: "Ada".to_owned(),
            email: "ada@example.org".to_owned(),
        },
    }
}

type Tree = Vec<(&'static str, EntryMode, Vec<u8>)>;

fn tree_v1() -> Tree {
    vec![
        (
            "package.json",
            EntryMode::File,
            b"{\"name\":\"app\"}\n".to_vec(),
        ),
        (
            "src/App.js",
            EntryMode::File,
            b"export default () => 1;\n".to_vec(),
        ),
        (
            "src/deep/util.js",
            EntryMode::File,
            b"export const x = 1;\n".to_vec(),
        ),
        ("bin/run.sh", EntryMode::Executable, b"#!/bin/sh\n".to_vec()),
        ("src/entry.js", EntryMode::Symlink, b"App.js".to_vec()),
    ]
}

fn manifest(tree: &Tree) -> Manifest {
    Manifest {
        files: tree
            .iter()
            .map(|(path, mode, bytes)| ManifestEntry {
                path: (*path).to_owned(),
                size: bytes.len() as u64,
                mode: *mode,
                hash: blob_id(bytes).unwrap(),
            })
            .collect(),
    }
}

/// Commits `tree` through `repos`, sending only the contents in `send` (all when `None`).
fn commit(
    repos: &Repos,
    project: ProjectId,
    tree: &Tree,
    send: Option<&[String]>,
    expected: ExpectedParent,
    scratch: &Path,
) -> Result<SyncOutcome> {
    let contents = tree
        .iter()
        .map(|(_, _, bytes)| (blob_id(bytes).unwrap(), bytes.clone()))
        .filter(|(hash, _)| send.is_none_or(|send| send.contains(hash)))
        .collect::<Vec<_>>();
    let upload = write_delta_upload(Vec::new(), &manifest(tree), contents)?;
    let file = scratch.join(format!("upload-{}.tar", uuid::Uuid::new_v4()));
    std::fs::write(&file, upload)?;
    repos.commit_upload(project, ArchiveKind::Tar, &file, &request(expected))
}

/// Plans `tree` on `main` through `node`.
async fn plan_on(node: &Repos, project: ProjectId, tree: &Tree) -> SyncPlan {
    let (node, manifest) = (node.clone(), manifest(tree));
    let branch = BranchName::parse("main").unwrap();
    blocking(move || node.plan(project, &branch, &manifest))
        .await
        .unwrap()
}

/// Commits `tree` on `main` through `node` on top of `parent`, sending the contents `missing`.
async fn commit_on(
    node: &Repos,
    project: ProjectId,
    tree: &Tree,
    missing: Vec<String>,
    parent: &str,
    scratch: &Path,
) -> SyncOutcome {
    let (node, tree, scratch) = (node.clone(), tree.clone(), scratch.to_owned());
    let parent = hivesync_core::repo::CommitId::parse(parent).unwrap();
    blocking(move || {
        commit(
            &node,
            project,
            &tree,
            Some(&missing),
            ExpectedParent::Commit(parent),
            &scratch,
        )
    })
    .await
    .unwrap()
}

fn changed(tree: &Tree, path: &str, content: &[u8]) -> Tree {
    tree.iter()
        .map(|(p, mode, bytes)| {
            let bytes = if *p == path {
                content.to_vec()
            } else {
                bytes.clone()
            };
            (*p, *mode, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn what_one_node_commits_every_node_reads_checks_out_and_builds_on() {
    let cluster = Cluster::new().await;
    let project = cluster.project;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let scratch = cluster.scratch();

    let first = cluster.first_commit(&a).await;
    assert!(first.created);

    // B has never seen the project: branches, listings, files and a checkout come through it.
    let checkout = cluster.disk("checkout");
    let (refs, listing, file, done) = {
        let (b, checkout) = (b.clone(), checkout.clone());
        blocking(move || {
            (
                b.refs(project).unwrap(),
                b.tree(project, "main", "src").unwrap(),
                b.read_file(project, "main", "src/deep/util.js").unwrap(),
                b.checkout(project, "main", &checkout).unwrap(),
            )
        })
        .await
    };
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].name, "refs/heads/main");
    assert_eq!(refs[0].commit, first.commit);
    let names: Vec<&str> = listing.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["App.js", "deep", "entry.js"]);
    assert_eq!(listing.entries[0].size, Some(24));
    assert_eq!(file.bytes, b"export const x = 1;\n");
    assert_eq!(done.commit, first.commit);
    assert_eq!(done.files, 5);
    assert_eq!(
        std::fs::read(checkout.join("src/App.js")).unwrap(),
        b"export default () => 1;\n"
    );
    assert_eq!(
        std::fs::read_link(checkout.join("src/entry.js")).unwrap(),
        Path::new("App.js")
    );

    // One file read through a cold node fetches its path, not the tree: the commit, the root
    // tree and the file.
    let d = cluster.node("d");
    let reader = d.clone();
    let read = blocking(move || reader.read_file(project, "main", "package.json").unwrap()).await;
    assert_eq!(read.bytes, b"{\"name\":\"app\"}\n");
    // The commit and the tree reach the disk after the operation.
    d.shared().unwrap().flushed().await;
    let d_repo = cluster.disk("d").join("repos").join(project.to_string());
    assert_eq!(hivesync_core::repo::count_objects(&d_repo).unwrap(), 3);

    // A delta sync through C, whose disk holds nothing yet: it asks only for the changed file,
    // and A reads the result.
    let b = cluster.node("c");
    let v2 = changed(&tree_v1(), "src/App.js", b"export default () => 2;\n");
    let plan = plan_on(&b, project, &v2).await;
    assert_eq!(plan.head.as_deref(), Some(first.commit.as_str()));
    assert_eq!(
        plan.missing,
        [blob_id(b"export default () => 2;\n").unwrap()]
    );
    let second = commit_on(&b, project, &v2, plan.missing, &first.commit, &scratch).await;
    assert_eq!(second.parent.as_deref(), Some(first.commit.as_str()));
    assert_eq!((second.changed, second.stored), (1, 1));

    // Planned through A, committed through a cold E: a copy of a committed file is not sent,
    // and E fetches it from the bucket.
    let mut v3 = v2.clone();
    v3.push((
        "src/copy.js",
        EntryMode::File,
        b"export const x = 1;\n".to_vec(),
    ));
    let plan = {
        let (a, v3) = (a.clone(), v3.clone());
        let branch = BranchName::parse("main").unwrap();
        blocking(move || a.plan(project, &branch, &manifest(&v3)))
            .await
            .unwrap()
    };
    assert!(plan.missing.is_empty(), "{plan:?}");
    let third = {
        let (e, scratch) = (cluster.node("e"), scratch.clone());
        blocking(move || {
            commit(
                &e,
                project,
                &v3,
                Some(&[]),
                ExpectedParent::Current,
                &scratch,
            )
        })
        .await
        .unwrap()
    };
    assert_eq!((third.added, third.stored), (1, 0));
    let read = {
        let a = a.clone();
        blocking(move || a.read_file(project, "main", "src/App.js").unwrap()).await
    };
    assert_eq!(read.commit, third.commit);
    assert_eq!(read.bytes, b"export default () => 2;\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_nodes_read_branches_whose_objects_were_stored_without_links() {
    let cluster = Cluster::new().await;
    let project = cluster.project;
    let scratch = cluster.scratch();
    let first = cluster.first_commit(&cluster.node("a")).await;
    // As the release before links left its rows.
    sqlx::query("UPDATE repo_objects SET links = NULL")
        .execute(cluster.records.pool())
        .await
        .unwrap();

    // A cold node plans and commits on top of that history, then another reads the result:
    // the new commit's trees have links, the unchanged subtrees below them have none.
    let b = cluster.node("b");
    let v2 = changed(&tree_v1(), "src/deep/util.js", b"export const x = 2;\n");
    let plan = plan_on(&b, project, &v2).await;
    assert_eq!(plan.head.as_deref(), Some(first.commit.as_str()));
    assert_eq!(plan.missing, [blob_id(b"export const x = 2;\n").unwrap()]);
    let second = commit_on(&b, project, &v2, plan.missing, &first.commit, &scratch).await;
    assert_eq!(second.parent.as_deref(), Some(first.commit.as_str()));
    assert_eq!((second.changed, second.stored), (1, 1));
    let c = cluster.node("c");
    let plan = plan_on(&c, project, &v2).await;
    let file = blocking(move || c.read_file(project, "main", "src/App.js").unwrap()).await;
    assert_eq!(plan.head.as_deref(), Some(second.commit.as_str()));
    assert!(plan.missing.is_empty(), "{:?}", plan.missing);
    assert_eq!(file.bytes, b"export default () => 1;\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_syncing_one_branch_at_once_one_wins_and_no_commit_is_lost() {
    let cluster = Cluster::new().await;
    let project = cluster.project;
    let scratch = cluster.scratch();
    let base = cluster.first_commit(&cluster.node("a")).await;
    let parent = hivesync_core::repo::CommitId::parse(&base.commit).unwrap();
    for round in 0..5 {
        let head = {
            let a = cluster.node("a");
            blocking(move || a.refs(project).unwrap()).await[0]
                .commit
                .clone()
        };
        let head = hivesync_core::repo::CommitId::parse(&head).unwrap();
        let racers = ["a", "b"].map(|name| {
            let (node, scratch) = (cluster.node(name), scratch.clone());
            let content = format!("// {name} in round {round}\n").into_bytes();
            tokio::task::spawn_blocking(move || {
                let tree = changed(&tree_v1(), "src/App.js", &content);
                commit(
                    &node,
                    project,
                    &tree,
                    None,
                    ExpectedParent::Commit(head),
                    &scratch,
                )
            })
        });
        let mut wins = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                Ok(outcome) => wins.push(outcome),
                Err(err) => assert_eq!(err.kind(), ErrorKind::Conflict, "{err}"),
            }
        }
        assert_eq!(wins.len(), 1, "round {round}: exactly one sync wins");
        assert_eq!(wins[0].parent.as_deref(), Some(head.to_string().as_str()));
        let now = {
            let b = cluster.node("b");
            blocking(move || b.refs(project).unwrap()).await
        };
        assert_eq!(now[0].commit, wins[0].commit, "the winner is the head");
    }
    // Each winner's parent was the head its round started from, so the chain runs back to the
    // first commit, which still reads by its id.
    let b = cluster.node("b");
    let first = base.commit.clone();
    let revision = blocking(move || b.revision(project, &first).unwrap()).await;
    assert_eq!(revision.commit, parent.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_disk_is_only_a_cache() {
    let cluster = Cluster::new().await;
    let project = cluster.project;
    let a = cluster.node("a");
    let first = cluster.first_commit(&a).await;
    a.shared().unwrap().flushed().await;
    std::fs::remove_dir_all(cluster.disk("a")).unwrap();
    let a = cluster.node("a");
    let checkout = cluster.disk("checkout");
    let done = {
        let checkout = checkout.clone();
        blocking(move || a.checkout(project, "main", &checkout).unwrap()).await
    };
    assert_eq!(done.commit, first.commit);
    assert_eq!(
        std::fs::read(checkout.join("package.json")).unwrap(),
        b"{\"name\":\"app\"}\n"
    );

    // A commit id nobody made is not found; one the object store lost is the deployment's fault.
    let c = cluster.node("c");
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let err = {
        let c = c.clone();
        blocking(move || c.revision(project, unknown).unwrap_err()).await
    };
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let util = blob_id(b"export const x = 1;\n").unwrap();
    let key = SharedRepos::object_key(project, &util.parse().unwrap());
    cluster.objects.delete(&key).await.unwrap();
    let err = blocking(move || {
        c.checkout(
            project,
            "main",
            &std::env::temp_dir().join(uuid::Uuid::new_v4().to_string()),
        )
        .unwrap_err()
    })
    .await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn branches_made_before_sharing_are_adopted_once() {
    let cluster = Cluster::new().await;
    let project = cluster.project;
    let local = cluster.local_node("a");
    let first = cluster.first_commit(&local).await;
    // A tag made on that disk too.
    let repo_dir = cluster.disk("a").join("repos").join(project.to_string());
    let tagged = std::process::Command::new("git")
        .args(["tag", "-a", "v1", "-m", "release", &first.commit])
        .env("GIT_DIR", &repo_dir)
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.org")
        .status()
        .unwrap();
    assert!(tagged.success());
    // The same disk, now shared: its branch and tag are published, and another node sees them.
    let a = cluster.node("a");
    let refs = blocking(move || a.refs(project).unwrap()).await;
    let names: Vec<(&str, &str)> = refs
        .iter()
        .map(|r| (r.name.as_str(), r.commit.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("refs/heads/main", first.commit.as_str()),
            ("refs/tags/v1", first.commit.as_str())
        ]
    );
    let a = cluster.node("a");
    let read = blocking(move || a.read_file(project, "main", "package.json").unwrap()).await;
    assert_eq!(read.commit, first.commit);
    let b = cluster.node("b");
    let refs = blocking(move || b.refs(project).unwrap()).await;
    assert_eq!(refs.len(), 2);
    assert!(refs.iter().all(|r| r.commit == first.commit));
    let b = cluster.node("b");
    let read = blocking(move || b.read_file(project, "v1", "src/App.js").unwrap()).await;
    assert_eq!(read.bytes, b"export default () => 1;\n");
    // Set aside on the adopting disk, so it happens once.
    assert!(repo_dir.join("refs/adopted/heads/main").is_file());
    assert!(!repo_dir.join("refs/heads/main").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_projects_shared_data_goes_with_it() {
    let cluster = Cluster::new().await;
    let project = cluster.project;
    let a = cluster.node("a");
    cluster.first_commit(&a).await;
    let prefix = format!("repos/{project}/objects/");
    assert_eq!(cluster.objects.list(&prefix).await.unwrap().len(), 5);
    cluster.store.delete_project(project).await.unwrap();
    let removed = a.shared().unwrap().remove_contents(project).await.unwrap();
    assert_eq!(removed, 5);
    assert!(cluster.objects.list(&prefix).await.unwrap().is_empty());
    assert!(
        cluster
            .store
            .list_repo_refs(project)
            .await
            .unwrap()
            .is_empty()
    );
}
