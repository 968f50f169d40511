use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::error::ErrorKind;

const LIMITS: SyncLimits = SyncLimits {
    max_file_bytes: 1 << 20,
    max_upload_bytes: 4 << 20,
    max_files: 50,
    max_manifest_bytes: 1 << 20,
};

struct Fixture {
    dir: tempfile::TempDir,
    repos: Repos,
    project: ProjectId,
}

fn fixture() -> Fixture {
    fixture_with(LIMITS)
}

fn fixture_with(limits: SyncLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("sources");
    std::fs::create_dir_all(&roots).unwrap();
    let data = dir.path().join("data");
    let repos = Repos::new(
        data.join("repos"),
        data.join("tmp"),
        limits,
        ImportPolicy {
            file_roots: vec![roots.canonicalize().unwrap()],
            data_dir: data,
            allow_private_networks: false,
            timeout: std::time::Duration::from_secs(60),
        },
    );
    let project = ProjectId::new();
    repos.create(project).unwrap();
    Fixture {
        dir,
        repos,
        project,
    }
}

fn request(branch: &str) -> CommitRequest {
    CommitRequest {
        branch: BranchName::parse(branch).unwrap(),
        message: "test sync".to_owned(),
        expected_parent: ExpectedParent::Current,
        force: false,
        author: Author {
            name: "Ada".to_owned(),
            email: "ada@example.com".to_owned(),
        },
    }
}

/// An entry of a test archive.
#[derive(Clone)]
enum Item {
    File(&'static str, Vec<u8>, bool),
    Link(&'static str, &'static str),
}

fn sample_tree() -> Vec<Item> {
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    vec![
        Item::File("package.json", b"{\"name\":\"app\"}\n".to_vec(), false),
        Item::File(
            "src/App.js",
            b"export default () => null;\n".to_vec(),
            false,
        ),
        Item::File("assets/icon.png", binary, false),
        Item::File("scripts/build.sh", b"#!/bin/sh\necho hi\n".to_vec(), true),
        Item::Link("src/main.js", "App.js"),
        Item::Link("docs/readme", "../package.json"),
    ]
}

fn tar_bytes(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        match item {
            Item::File(path, bytes, executable) => {
                header.set_size(bytes.len() as u64);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_entry_type(tar::EntryType::Regular);
                builder
                    .append_data(&mut header, path, bytes.as_slice())
                    .unwrap();
            }
            Item::Link(path, target) => {
                header.set_size(0);
                header.set_mode(0o777);
                header.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn zip_bytes(items: &[Item]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for item in items {
        match item {
            Item::File(path, bytes, executable) => {
                let options = zip::write::SimpleFileOptions::default()
                    .unix_permissions(if *executable { 0o755 } else { 0o644 });
                writer.start_file(*path, options).unwrap();
                writer.write_all(bytes).unwrap();
            }
            Item::Link(path, target) => {
                writer
                    .add_symlink(*path, *target, zip::write::SimpleFileOptions::default())
                    .unwrap();
            }
        }
    }
    writer.finish().unwrap().into_inner()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

impl Fixture {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn sync(
        &self,
        kind: ArchiveKind,
        bytes: &[u8],
        request: &CommitRequest,
    ) -> Result<SyncOutcome> {
        let file = self.write(&format!("upload-{}", uuid::Uuid::new_v4()), bytes);
        self.repos.sync_archive(self.project, kind, &file, request)
    }

    fn sync_tar(&self, items: &[Item]) -> SyncOutcome {
        self.sync(ArchiveKind::Tar, &tar_bytes(items), &request("main"))
            .unwrap()
    }

    /// What a rejected upload must leave unchanged: the refs and the object count.
    fn snapshot(&self) -> (Vec<RefInfo>, usize) {
        (
            self.repos.refs(self.project).unwrap(),
            count_objects(&self.repos.path_of(self.project)).unwrap(),
        )
    }

    fn assert_tree_is(&self, rev: &str, items: &[Item]) {
        for item in items {
            let (path, bytes, mode) = match item {
                Item::File(path, bytes, true) => (*path, bytes.clone(), EntryMode::Executable),
                Item::File(path, bytes, false) => (*path, bytes.clone(), EntryMode::File),
                Item::Link(path, target) => (*path, target.as_bytes().to_vec(), EntryMode::Symlink),
            };
            let file = self.repos.read_file(self.project, rev, path).unwrap();
            assert_eq!(file.bytes, bytes, "content of {path}");
            assert_eq!(file.mode, mode, "mode of {path}");
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_archive_format_round_trips_byte_for_byte() {
    let items = sample_tree();
    for (kind, bytes) in [
        (ArchiveKind::Tar, tar_bytes(&items)),
        (ArchiveKind::TarGz, gzip(&tar_bytes(&items))),
        (ArchiveKind::Zip, zip_bytes(&items)),
    ] {
        let fx = fixture();
        let outcome = fx.sync(kind, &bytes, &request("main")).unwrap();
        assert!(outcome.created, "{kind:?}");
        assert_eq!((outcome.added, outcome.changed, outcome.removed), (6, 0, 0));
        assert_eq!(outcome.files, 6);
        assert_eq!(outcome.parent, None);
        fx.assert_tree_is("main", &items);
        fx.assert_tree_is(&outcome.commit, &items);

        let top = fx.repos.tree(fx.project, "main", "").unwrap();
        let names: Vec<(&str, TreeEntryKind)> = top
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("assets", TreeEntryKind::Directory),
                ("docs", TreeEntryKind::Directory),
                ("package.json", TreeEntryKind::File),
                ("scripts", TreeEntryKind::Directory),
                ("src", TreeEntryKind::Directory),
            ]
        );
        let scripts = fx.repos.tree(fx.project, "main", "scripts/").unwrap();
        assert_eq!(scripts.entries[0].path, "scripts/build.sh");
        assert_eq!(scripts.entries[0].kind, TreeEntryKind::Executable);
        assert_eq!(scripts.entries[0].size, Some(18));

        // git itself agrees the repository is sound and sees the same tree.
        let repo_dir = fx.repos.path_of(fx.project);
        git(&repo_dir, &["fsck", "--strict", "--no-dangling"]);
        let listing = git(&repo_dir, &["ls-tree", "-r", "main"]);
        assert!(listing.contains("100755 blob"), "{listing}");
        assert!(listing.contains("120000 blob"), "{listing}");
        let log = git(&repo_dir, &["log", "--format=%an <%ae>|%cn|%s", "main"]);
        assert_eq!(log.trim(), "Ada <ada@example.com>|HiveSync|test sync");
    }
}

/// What common archivers write for a folder: GNU tar of `.` starts with a `./` entry and prefixes
/// every name with `./`; zip and Python's zipfile write directory entries.
#[test]
fn archives_made_by_tar_and_zip_from_a_folder_are_accepted() {
    let source = tempfile::tempdir().unwrap();
    let items = sample_tree();
    for item in &items {
        let path = source.path().join(match item {
            Item::File(path, ..) | Item::Link(path, _) => *path,
        });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match item {
            Item::File(_, bytes, executable) => {
                std::fs::write(&path, bytes).unwrap();
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .unwrap();
            }
            Item::Link(_, target) => std::os::unix::fs::symlink(target, &path).unwrap(),
        }
    }
    let out = tempfile::tempdir().unwrap();
    let run = |program: &str, args: &[&str], cwd: &Path| {
        let status = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .status()
            .unwrap_or_else(|err| panic!("{program}: {err}"));
        assert!(status.success(), "{program} {args:?}");
    };
    let tar_file = out.path().join("dot.tar");
    run(
        "tar",
        &[
            "-C",
            source.path().to_str().unwrap(),
            "-cf",
            tar_file.to_str().unwrap(),
            ".",
        ],
        out.path(),
    );
    let tgz_file = out.path().join("dot.tar.gz");
    run(
        "tar",
        &[
            "-C",
            source.path().to_str().unwrap(),
            "-czf",
            tgz_file.to_str().unwrap(),
            "./",
        ],
        out.path(),
    );
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&tar_file)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(listing.lines().next(), Some("./"), "{listing}");
    let zip_file = out.path().join("dirs.zip");
    // --symlinks stores the link itself, as a checkout has it.
    run(
        "zip",
        &["-q", "-r", "--symlinks", zip_file.to_str().unwrap(), "."],
        source.path(),
    );
    let py_zip = out.path().join("python.zip");
    run(
        "python3",
        &[
            "-c",
            "import shutil, sys; shutil.make_archive(sys.argv[1], 'zip', sys.argv[2])",
            py_zip.with_extension("").to_str().unwrap(),
            source.path().to_str().unwrap(),
        ],
        out.path(),
    );
    for (kind, file, with_link) in [
        (ArchiveKind::Tar, &tar_file, true),
        (ArchiveKind::TarGz, &tgz_file, true),
        (ArchiveKind::Zip, &zip_file, true),
        // shutil follows links: the tree has the link's target content instead.
        (ArchiveKind::Zip, &py_zip, false),
    ] {
        let fx = fixture();
        let outcome = fx
            .sync(kind, &std::fs::read(file).unwrap(), &request("main"))
            .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert!(outcome.created);
        let expected: Vec<Item> = items
            .iter()
            .filter(|item| with_link || !matches!(item, Item::Link(..)))
            .cloned()
            .collect();
        fx.assert_tree_is("main", &expected);
        // Six paths either way: links, or the files they pointed at.
        assert_eq!(outcome.files, items.len(), "{}", file.display());
    }
}

#[test]
fn an_identical_tree_makes_no_commit_and_changes_are_counted() {
    let fx = fixture();
    let items = sample_tree();
    let first = fx.sync_tar(&items);
    let again = fx.sync_tar(&items);
    assert!(!again.created);
    assert_eq!(again.commit, first.commit);
    assert_eq!(
        (again.added, again.changed, again.removed, again.stored),
        (0, 0, 0, 0)
    );

    let mut edited = items.clone();
    edited[0] = Item::File("package.json", b"{\"name\":\"renamed\"}\n".to_vec(), false);
    edited.remove(1); // src/App.js
    edited.push(Item::File("src/new.js", b"new\n".to_vec(), false));
    // A mode change alone is a change.
    edited[2] = Item::File("scripts/build.sh", b"#!/bin/sh\necho hi\n".to_vec(), false);
    let second = fx.sync_tar(&edited);
    assert!(second.created);
    assert_eq!(second.parent.as_deref(), Some(first.commit.as_str()));
    assert_eq!((second.added, second.changed, second.removed), (1, 2, 1));
    assert_eq!(second.stored, 2, "only the new contents are written");
    fx.assert_tree_is("main", &edited);
    let err = fx
        .repos
        .read_file(fx.project, "main", "src/App.js")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // The old revision is still there.
    fx.assert_tree_is(&first.commit, &items);
}

/// Writes a tar entry with a raw name, bypassing the tar crate's own path checks.
fn raw_tar_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &[u8],
    kind: tar::EntryType,
    link: &[u8],
    data: &[u8],
) {
    let mut header = tar::Header::new_old();
    {
        let bytes = header.as_old_mut();
        bytes.name[..name.len()].copy_from_slice(name);
        bytes.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn hostile_tar(name: &[u8], kind: tar::EntryType, link: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    raw_tar_entry(
        &mut builder,
        b"ok.txt",
        tar::EntryType::Regular,
        b"",
        b"fine",
    );
    raw_tar_entry(
        &mut builder,
        name,
        kind,
        link,
        if kind == tar::EntryType::Regular {
            b"evil"
        } else {
            b""
        },
    );
    builder.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_refused_and_leave_the_repository_as_it_was() {
    let fx = fixture();
    fx.sync_tar(&sample_tree());
    let before = fx.snapshot();

    let many: Vec<Item> = (0..=LIMITS.max_files)
        .map(|i| {
            Item::File(
                Box::leak(format!("f/{i}.txt").into_boxed_str()),
                vec![b'x'],
                false,
            )
        })
        .collect();
    let mut huge_header = tar::Header::new_gnu();
    huge_header.set_path("big.bin").unwrap();
    huge_header.set_size(1 << 40);
    huge_header.set_mode(0o644);
    huge_header.set_entry_type(tar::EntryType::Regular);
    huge_header.set_cksum();
    let mut huge = huge_header.as_bytes().to_vec();
    huge.extend_from_slice(&[0; 1024]);
    let bomb = {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("zeros.bin", options).unwrap();
        writer
            .write_all(&vec![0u8; (LIMITS.max_file_bytes * 3) as usize])
            .unwrap();
        writer.finish().unwrap().into_inner()
    };
    let zip_slip = {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        writer
            .start_file("../../evil.sh", zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(b"evil").unwrap();
        writer.finish().unwrap().into_inner()
    };

    let cases: Vec<(&str, ArchiveKind, Vec<u8>, ErrorKind)> = vec![
        (
            "tar ..",
            ArchiveKind::Tar,
            hostile_tar(b"../evil", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            "nested ..",
            ArchiveKind::Tar,
            hostile_tar(b"a/../../evil", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            "directory ..",
            ArchiveKind::Tar,
            hostile_tar(b"./../", tar::EntryType::Directory, b""),
            ErrorKind::Validation,
        ),
        (
            "directory /",
            ArchiveKind::Tar,
            hostile_tar(b"/", tar::EntryType::Directory, b""),
            ErrorKind::Validation,
        ),
        (
            "absolute",
            ArchiveKind::Tar,
            hostile_tar(b"/etc/passwd", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            ".git",
            ArchiveKind::Tar,
            hostile_tar(b".git/config", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            "nested .GIT",
            ArchiveKind::Tar,
            hostile_tar(
                b"sub/.GIT/hooks/post-checkout",
                tar::EntryType::Regular,
                b"",
            ),
            ErrorKind::Validation,
        ),
        (
            "link out",
            ArchiveKind::Tar,
            hostile_tar(b"link", tar::EntryType::Symlink, b"../../outside"),
            ErrorKind::Validation,
        ),
        (
            "absolute link",
            ArchiveKind::Tar,
            hostile_tar(b"link", tar::EntryType::Symlink, b"/etc/passwd"),
            ErrorKind::Validation,
        ),
        (
            "link into .git",
            ArchiveKind::Tar,
            hostile_tar(b"link", tar::EntryType::Symlink, b".git/config"),
            ErrorKind::Validation,
        ),
        (
            "hard link",
            ArchiveKind::Tar,
            hostile_tar(b"hard", tar::EntryType::Link, b"ok.txt"),
            ErrorKind::Validation,
        ),
        (
            "device",
            ArchiveKind::Tar,
            hostile_tar(b"dev", tar::EntryType::Char, b""),
            ErrorKind::Validation,
        ),
        (
            "fifo",
            ArchiveKind::Tar,
            hostile_tar(b"fifo", tar::EntryType::Fifo, b""),
            ErrorKind::Validation,
        ),
        (
            "duplicate",
            ArchiveKind::Tar,
            hostile_tar(b"ok.txt", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            "file and dir",
            ArchiveKind::Tar,
            hostile_tar(b"ok.txt/inner", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            "huge size claim",
            ArchiveKind::Tar,
            huge,
            ErrorKind::PayloadTooLarge,
        ),
        (
            "many tiny files",
            ArchiveKind::Tar,
            tar_bytes(&many),
            ErrorKind::PayloadTooLarge,
        ),
        (
            "zip bomb",
            ArchiveKind::Zip,
            bomb,
            ErrorKind::PayloadTooLarge,
        ),
        (
            "zip slip",
            ArchiveKind::Zip,
            zip_slip,
            ErrorKind::Validation,
        ),
        (
            "not an archive",
            ArchiveKind::Zip,
            b"definitely not a zip".to_vec(),
            ErrorKind::Validation,
        ),
        (
            "truncated gzip",
            ArchiveKind::TarGz,
            gzip(&tar_bytes(&sample_tree()))[..40].to_vec(),
            ErrorKind::Validation,
        ),
        (
            "empty",
            ArchiveKind::Tar,
            tar_bytes(&[]),
            ErrorKind::Validation,
        ),
    ];
    for (name, kind, bytes, expected) in cases {
        let err = fx.sync(kind, &bytes, &request("main")).unwrap_err();
        assert_eq!(err.kind(), expected, "{name}: {err:?}");
        assert_eq!(fx.snapshot(), before, "{name} left the repository changed");
    }
}

#[test]
fn links_through_links_lookalikes_and_oversized_headers_are_refused() {
    let fx = fixture();
    fx.sync_tar(&sample_tree());
    let before = fx.snapshot();
    let long_name_bomb = {
        // A GNU long-name header claiming 10 MiB: the tar crate would read it whole.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(10 << 20);
        header.set_cksum();
        builder.append(&header, &vec![b'a'; 10 << 20][..]).unwrap();
        raw_tar_entry(&mut builder, b"x", tar::EntryType::Regular, b"", b"x");
        builder.into_inner().unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        (
            "through a link",
            tar_bytes(&[Item::Link("a/up", ".."), Item::Link("b", "a/up/..")]),
            ErrorKind::Validation,
        ),
        (
            "symlinked .gitmodules",
            tar_bytes(&[
                Item::Link(".gitmodules", "src/App.js"),
                Item::File("src/App.js", b"x".to_vec(), false),
            ]),
            ErrorKind::Validation,
        ),
        (
            ".git. lookalike",
            hostile_tar(b".git./config", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        (
            "8.3 lookalike",
            hostile_tar(b"GIT~1/config", tar::EntryType::Regular, b""),
            ErrorKind::Validation,
        ),
        ("long name bomb", long_name_bomb, ErrorKind::PayloadTooLarge),
        (
            "a loop of links",
            tar_bytes(&[
                Item::File("ok.txt", b"ok".to_vec(), false),
                Item::Link("a", "b"),
                Item::Link("b", "c"),
                Item::Link("c", "a"),
            ]),
            ErrorKind::Validation,
        ),
        (
            "a link to itself",
            tar_bytes(&[
                Item::File("ok.txt", b"ok".to_vec(), false),
                Item::Link("dir/self", "../dir/self"),
            ]),
            ErrorKind::Validation,
        ),
    ];
    for (name, bytes, expected) in cases {
        let err = fx
            .sync(ArchiveKind::Tar, &bytes, &request("main"))
            .unwrap_err();
        assert_eq!(err.kind(), expected, "{name}: {err:?}");
        assert_eq!(fx.snapshot(), before, "{name} left the repository changed");
    }
    // Links to links are fine, as long as the chain ends.
    let chained = fx.sync(
        ArchiveKind::Tar,
        &tar_bytes(&[
            Item::File("v2/app.js", b"2".to_vec(), false),
            Item::Link("current", "v2"),
            Item::Link("latest", "current"),
        ]),
        &request("main"),
    );
    assert!(chained.is_ok(), "{chained:?}");
}

#[test]
fn a_delta_commit_cannot_build_a_link_chain_or_name_a_non_blob() {
    let fx = fixture();
    let main = BranchName::parse("main").unwrap();
    let (manifest, blobs) = manifest_of(&[
        Item::Link("a/up", ".."),
        Item::File("f", b"f".to_vec(), false),
    ]);
    let first = fx.write("first.tar", &upload_tar(&manifest, &blobs));
    let committed = fx
        .repos
        .commit_upload(fx.project, ArchiveKind::Tar, &first, &request("main"))
        .unwrap();
    let before = fx.snapshot();

    // The second sync adds a link through the first one, which is unchanged (and skipped by the
    // per-entry checks).
    let (mut manifest, blobs) = manifest_of(&[
        Item::Link("b", "a/up/.."),
        Item::Link("a/up", ".."),
        Item::File("f", b"f".to_vec(), false),
    ]);
    let plan = fx.repos.plan(fx.project, &main, &manifest).unwrap();
    assert_eq!(plan.missing.len(), 1);
    let second = fx.write("second.tar", &upload_tar(&manifest, &blobs[..1]));
    let err = fx
        .repos
        .commit_upload(fx.project, ArchiveKind::Tar, &second, &request("main"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err:?}");
    assert_eq!(fx.snapshot(), before);

    // A file entry naming the commit (a tree or commit id is no file's content).
    manifest.files.truncate(1);
    manifest.files[0] = ManifestEntry {
        path: "x".to_owned(),
        size: 0,
        mode: EntryMode::File,
        hash: committed.commit.clone(),
    };
    let third = fx.write("third.tar", &upload_tar(&manifest, &[]));
    let err = fx
        .repos
        .commit_upload(fx.project, ArchiveKind::Tar, &third, &request("main"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err:?}");
    assert_eq!(fx.snapshot(), before);

    // Contents before the manifest are refused (the manifest must come first).
    let (manifest, blobs) = manifest_of(&[Item::File("g", b"g".to_vec(), false)]);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    builder
        .append_data(&mut header, format!("blobs/{}", blobs[0].0), &b"g"[..])
        .unwrap();
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    builder
        .append_data(&mut header, "manifest.json", json.as_slice())
        .unwrap();
    let fourth = fx.write("fourth.tar", &builder.into_inner().unwrap());
    let err = fx
        .repos
        .commit_upload(fx.project, ArchiveKind::Tar, &fourth, &request("main"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err:?}");
}

#[test]
fn a_branch_moves_only_from_the_head_it_was_read_at() {
    let fx = fixture();
    let first = fx.sync_tar(&sample_tree());
    let second = fx.sync_tar(&[Item::File("a", b"a".to_vec(), false)]);
    let repo = fx.repos.open(fx.project).unwrap();
    let main = BranchName::parse("main").unwrap();
    let first_id = ObjectId::from_hex(first.commit.as_bytes()).unwrap();
    let second_id = ObjectId::from_hex(second.commit.as_bytes()).unwrap();
    // Moving from a head that is no longer the head: CONFLICT, the branch stays.
    let err = repo
        .move_branch(&main, Some(first_id), first_id, "test")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = repo.move_branch(&main, None, first_id, "test").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(fx.repos.refs(fx.project).unwrap()[0].commit, second.commit);
    repo.move_branch(&main, Some(second_id), first_id, "test")
        .unwrap();
    assert_eq!(fx.repos.refs(fx.project).unwrap()[0].commit, first.commit);
}

#[test]
fn a_stale_parent_is_a_conflict_unless_forced_and_force_keeps_history() {
    let fx = fixture();
    let first = fx.sync_tar(&sample_tree());
    let second = fx.sync_tar(&[Item::File("a.txt", b"a".to_vec(), false)]);

    let mut stale = request("main");
    stale.expected_parent = ExpectedParent::Commit(CommitId::parse(&first.commit).unwrap());
    let before = fx.snapshot();
    let err = fx
        .sync(
            ArchiveKind::Tar,
            &tar_bytes(&[Item::File("b.txt", b"b".to_vec(), false)]),
            &stale,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.context()
            .iter()
            .any(|(k, v)| *k == "head" && *v == second.commit)
    );
    assert_eq!(fx.snapshot(), before);

    stale.force = true;
    let forced = fx
        .sync(
            ArchiveKind::Tar,
            &tar_bytes(&[Item::File("b.txt", b"b".to_vec(), false)]),
            &stale,
        )
        .unwrap();
    assert_eq!(
        forced.parent.as_deref(),
        Some(second.commit.as_str()),
        "force builds on the head"
    );

    let mut fresh_only = request("main");
    fresh_only.expected_parent = ExpectedParent::NoBranch;
    let err = fx
        .sync(ArchiveKind::Tar, &tar_bytes(&sample_tree()), &fresh_only)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    fresh_only.branch = BranchName::parse("feature/x").unwrap();
    let feature = fx
        .sync(ArchiveKind::Tar, &tar_bytes(&sample_tree()), &fresh_only)
        .unwrap();
    assert_eq!(feature.parent, None);
    let refs: Vec<String> = fx
        .repos
        .refs(fx.project)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(refs, vec!["refs/heads/feature/x", "refs/heads/main"]);
}

#[test]
fn concurrent_syncs_on_one_branch_lose_no_commit() {
    let fx = fixture();
    let base = fx.sync_tar(&sample_tree());
    let parent = CommitId::parse(&base.commit).unwrap();
    // Both name the same parent: exactly one can win.
    let results: Vec<Result<SyncOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let fx = &fx;
                scope.spawn(move || {
                    let mut req = request("main");
                    req.expected_parent = ExpectedParent::Commit(parent);
                    let items = [Item::File(
                        "writer.txt",
                        format!("writer {i}").into_bytes(),
                        false,
                    )];
                    fx.sync(ArchiveKind::Tar, &tar_bytes(&items), &req)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&SyncOutcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let losers: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(losers[0].kind(), ErrorKind::Conflict);
    let head = &fx.repos.refs(fx.project).unwrap()[0];
    assert_eq!(head.commit, winners[0].commit);
    assert_eq!(winners[0].parent.as_deref(), Some(base.commit.as_str()));

    // Without a parent, every sync that succeeds stays in the history.
    let results: Vec<Result<SyncOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let fx = &fx;
                scope.spawn(move || {
                    let items = [Item::File("n.txt", format!("{i}").into_bytes(), false)];
                    fx.sync(ArchiveKind::Tar, &tar_bytes(&items), &request("main"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        results.iter().any(Result::is_ok),
        "someone always wins: {results:?}"
    );
    let history = git(&fx.repos.path_of(fx.project), &["rev-list", "main"]);
    for result in &results {
        match result {
            Ok(outcome) => assert!(
                history.contains(&outcome.commit),
                "commit {} lost",
                outcome.commit
            ),
            Err(err) => assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}"),
        }
    }
}

fn manifest_of(items: &[Item]) -> (Manifest, Vec<(String, Vec<u8>)>) {
    let mut files = Vec::new();
    let mut blobs = Vec::new();
    for item in items {
        let (path, bytes, mode) = match item {
            Item::File(path, bytes, exec) => (
                *path,
                bytes.clone(),
                if *exec {
                    EntryMode::Executable
                } else {
                    EntryMode::File
                },
            ),
            Item::Link(path, target) => (*path, target.as_bytes().to_vec(), EntryMode::Symlink),
        };
        let hash = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &bytes)
            .unwrap()
            .to_string();
        files.push(ManifestEntry {
            path: path.to_owned(),
            size: bytes.len() as u64,
            mode,
            hash: hash.clone(),
        });
        blobs.push((hash, bytes));
    }
    (Manifest { files }, blobs)
}

fn upload_tar(manifest: &Manifest, blobs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let json = serde_json::to_vec(manifest).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.json", json.as_slice())
        .unwrap();
    for (hash, bytes) in blobs {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, format!("blobs/{hash}"), bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn a_delta_sync_sends_only_what_the_server_lacks() {
    let fx = fixture();
    let main = BranchName::parse("main").unwrap();
    let items = sample_tree();
    let (manifest, blobs) = manifest_of(&items);
    let plan = fx.repos.plan(fx.project, &main, &manifest).unwrap();
    assert_eq!(plan.missing.len(), 6);
    assert_eq!(plan.head, None);
    let wanted: Vec<(String, Vec<u8>)> = blobs
        .iter()
        .filter(|(h, _)| plan.missing.contains(h))
        .cloned()
        .collect();
    let upload = fx.write("first.tar", &upload_tar(&manifest, &wanted));
    let first = fx
        .repos
        .commit_upload(fx.project, ArchiveKind::Tar, &upload, &request("main"))
        .unwrap();
    assert_eq!((first.added, first.stored), (6, 6));
    fx.assert_tree_is("main", &items);

    // One file edited: the plan asks for one content, and the commit carries only it.
    let mut edited = items.clone();
    edited[1] = Item::File(
        "src/App.js",
        b"export default () => 'edited';\n".to_vec(),
        false,
    );
    let (manifest, blobs) = manifest_of(&edited);
    let plan = fx.repos.plan(fx.project, &main, &manifest).unwrap();
    assert_eq!(plan.missing, vec![blobs[1].0.clone()]);
    assert_eq!(plan.head.as_deref(), Some(first.commit.as_str()));
    let upload = fx.write("second.tar", &upload_tar(&manifest, &blobs[1..2]));
    let mut req = request("main");
    req.expected_parent =
        ExpectedParent::Commit(CommitId::parse(plan.head.as_ref().unwrap()).unwrap());
    let second = fx
        .repos
        .commit_upload(fx.project, ArchiveKind::Tar, &upload, &req)
        .unwrap();
    assert_eq!(
        (second.added, second.changed, second.removed, second.stored),
        (0, 1, 0, 1)
    );
    fx.assert_tree_is("main", &edited);

    // Bad uploads change nothing.
    let before = fx.snapshot();
    let (manifest, blobs) = manifest_of(&[Item::File("x.txt", b"brand new".to_vec(), false)]);
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        (
            "content missing",
            upload_tar(&manifest, &[]),
            ErrorKind::Validation,
        ),
        (
            "wrong content",
            upload_tar(&manifest, &[(blobs[0].0.clone(), b"other".to_vec())]),
            ErrorKind::Validation,
        ),
        (
            "no manifest",
            {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                b.append_data(&mut h, format!("blobs/{}", blobs[0].0), &b"x"[..])
                    .unwrap();
                b.into_inner().unwrap()
            },
            ErrorKind::Validation,
        ),
        (
            "size lie",
            {
                let mut lying = manifest.clone();
                lying.files[0].size = 3;
                upload_tar(&lying, &blobs)
            },
            ErrorKind::Validation,
        ),
        (
            "path escape",
            {
                let mut escaping = manifest.clone();
                escaping.files[0].path = "../x.txt".to_owned();
                upload_tar(&escaping, &blobs)
            },
            ErrorKind::Validation,
        ),
        (
            "link escape",
            {
                let (m, b) = manifest_of(&[Item::Link("l", "../../etc/passwd")]);
                upload_tar(&m, &b)
            },
            ErrorKind::Validation,
        ),
        (
            "too big",
            {
                let mut big = manifest.clone();
                big.files[0].size = LIMITS.max_file_bytes + 1;
                upload_tar(&big, &blobs)
            },
            ErrorKind::PayloadTooLarge,
        ),
    ];
    for (name, bytes, expected) in cases {
        let file = fx.write("bad.tar", &bytes);
        let err = fx
            .repos
            .commit_upload(fx.project, ArchiveKind::Tar, &file, &request("main"))
            .unwrap_err();
        assert_eq!(err.kind(), expected, "{name}: {err:?}");
        assert_eq!(fx.snapshot(), before, "{name} changed the repository");
    }
    // The link escape is refused by the plan too, before anything is sent.
    let mut escaping = manifest.clone();
    escaping.files[0].path = "/abs".to_owned();
    assert_eq!(
        fx.repos
            .plan(fx.project, &main, &escaping)
            .unwrap_err()
            .kind(),
        ErrorKind::Validation
    );
}

/// A source repository for imports, made with the git CLI.
fn source_repo(fx: &Fixture, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = fx.dir.path().join("sources").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    dir
}

#[test]
fn imports_create_and_fast_forward_branches_and_refuse_what_uploads_refuse() {
    let fx = fixture();
    let source = source_repo(
        &fx,
        "app",
        &[("README.md", "hello\n"), ("src/index.js", "1;\n")],
    );
    let url = format!("file://{}", source.display());
    let outcome = fx
        .repos
        .import(fx.project, &url, "main", &request("main"))
        .unwrap();
    assert!(outcome.updated);
    assert_eq!(outcome.files, 2);
    assert_eq!(outcome.commit, git(&source, &["rev-parse", "HEAD"]).trim());
    assert_eq!(
        fx.repos
            .read_file(fx.project, "main", "src/index.js")
            .unwrap()
            .bytes,
        b"1;\n"
    );

    // Again: nothing to do. Then a new upstream commit fast-forwards.
    assert!(
        !fx.repos
            .import(fx.project, &url, "HEAD", &request("main"))
            .unwrap()
            .updated
    );
    std::fs::write(source.join("README.md"), "hello again\n").unwrap();
    git(&source, &["commit", "-q", "-am", "second"]);
    git(&source, &["tag", "v2"]);
    let forward = fx
        .repos
        .import(fx.project, &url, "v2", &request("main"))
        .unwrap();
    assert_eq!(forward.previous.as_deref(), Some(outcome.commit.as_str()));
    git(
        &fx.repos.path_of(fx.project),
        &["fsck", "--strict", "--no-dangling"],
    );

    // A sync on top, then an import that does not descend from it: refused.
    fx.sync_tar(&sample_tree());
    let before = fx.snapshot();
    let err = fx
        .repos
        .import(fx.project, &url, "main", &request("main"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}");
    assert_eq!(fx.snapshot(), before);

    // A tree with a link out of the project, and an unknown ref, change nothing.
    let hostile = source_repo(&fx, "hostile", &[("a.txt", "a")]);
    std::os::unix::fs::symlink("/etc/passwd", hostile.join("passwd")).unwrap();
    git(&hostile, &["add", "-A"]);
    git(&hostile, &["commit", "-q", "-m", "link"]);
    let hostile_url = format!("file://{}", hostile.display());
    let err = fx
        .repos
        .import(fx.project, &hostile_url, "main", &request("other"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err:?}");
    let err = fx
        .repos
        .import(fx.project, &url, "no-such-branch", &request("other"))
        .unwrap_err();
    // What the other end lacks is a conflict with the request, not a missing project (404).
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}");
    assert_eq!(fx.snapshot(), before);

    // Outside the import roots: refused before anything is fetched.
    let elsewhere = fx.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    git(&elsewhere, &["init", "-q"]);
    let err = fx
        .repos
        .import(
            fx.project,
            &format!("file://{}", elsewhere.display()),
            "main",
            &request("x"),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    // The quarantines are gone.
    let leftovers = std::fs::read_dir(fx.dir.path().join("data/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn browsing_resolves_branches_tags_and_commits_and_rejects_bad_input() {
    let fx = fixture();
    let first = fx.sync_tar(&sample_tree());
    let err = fx.repos.tree(fx.project, "nope", "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A name no branch can have is as missing as any other.
    let err = fx.repos.tree(fx.project, "a..b", "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = fx.repos.tree(fx.project, "main", "../etc").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    let err = fx
        .repos
        .tree(fx.project, "main", "package.json")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = fx.repos.read_file(fx.project, "main", "src").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = fx
        .repos
        .read_file(fx.project, &"0".repeat(40), "package.json")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let by_id = fx
        .repos
        .tree(fx.project, &first.commit.to_uppercase(), "src")
        .unwrap();
    assert_eq!(by_id.commit, first.commit);
    assert_eq!(by_id.entries.len(), 2);
    // A project that never synced has no refs, and its repository is made on demand.
    let other = ProjectId::new();
    assert!(fx.repos.refs(other).unwrap().is_empty());
    assert_eq!(
        fx.repos.tree(other, "main", "").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn a_checkout_reproduces_the_tree_and_leaves_the_repository_alone() {
    let fx = fixture();
    let items = sample_tree();
    let synced = fx.sync_tar(&items);
    let before = fx.snapshot();
    let dest = fx.dir.path().join("work");
    let checkout = fx.repos.checkout(fx.project, "main", &dest).unwrap();
    assert_eq!(checkout.commit, synced.commit);
    assert_eq!(checkout.files, items.len());
    let revision = fx.repos.revision(fx.project, "main").unwrap();
    assert_eq!(
        (revision.commit.as_str(), revision.tree.as_str()),
        (checkout.commit.as_str(), checkout.tree.as_str())
    );
    assert_eq!(
        fx.repos
            .revision(fx.project, "no-such-branch")
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    for item in &items {
        match item {
            Item::File(path, bytes, executable) => {
                let on_disk = dest.join(path);
                assert_eq!(&std::fs::read(&on_disk).unwrap(), bytes, "{path}");
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&on_disk).unwrap().permissions(),
                );
                assert_eq!(mode & 0o111 != 0, *executable, "{path}");
            }
            Item::Link(path, target) => {
                assert_eq!(
                    std::fs::read_link(dest.join(path)).unwrap(),
                    Path::new(target)
                );
            }
        }
    }
    assert_eq!(fx.snapshot(), before);
    // The destination must be new.
    let again = fx.repos.checkout(fx.project, "main", &dest).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Internal);
    // Same tree, same id, whatever the commit.
    fx.sync_tar(&[Item::File("other", b"x".to_vec(), false)]);
    fx.sync_tar(&items);
    let second = fx
        .repos
        .checkout(fx.project, "main", &fx.dir.path().join("work2"))
        .unwrap();
    assert_eq!(second.tree, checkout.tree);
    assert_ne!(second.commit, checkout.commit);
}

#[test]
fn a_checkout_of_an_unchecked_old_commit_is_refused() {
    let fx = fixture();
    // Imported history whose tip is fine but whose first commit links out of the tree.
    let source = source_repo(&fx, "history", &[("a.txt", "a")]);
    std::os::unix::fs::symlink("/etc/passwd", source.join("passwd")).unwrap();
    git(&source, &["add", "-A"]);
    git(&source, &["commit", "-q", "-m", "link"]);
    let bad = git(&source, &["rev-parse", "HEAD"]).trim().to_owned();
    git(&source, &["rm", "-q", "passwd"]);
    git(&source, &["commit", "-q", "-m", "unlink"]);
    let url = format!("file://{}", source.display());
    fx.repos
        .import(fx.project, &url, "main", &request("main"))
        .unwrap();
    let dest = fx.dir.path().join("old");
    let err = fx.repos.checkout(fx.project, &bad, &dest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err:?}");
    assert!(!dest.exists(), "nothing was written");
}
