//! Project sync over HTTP: whole-tree syncs, delta syncs, imports (file:// and smart HTTP
//! served by `git http-backend`), browsing, limits and authorization.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Answer, TestApp, TestUser};
use hivesync_core::repo::{EntryMode, Manifest, ManifestEntry, blob_id, write_delta_upload};
use poem::http::{Method, StatusCode};
use serde_json::{Value, json};

/// One file of a test tree: path, content, executable.
type File = (&'static str, Vec<u8>, bool);

fn sample() -> Vec<File> {
    vec![
        ("package.json", b"{\"name\":\"app\"}\n".to_vec(), false),
        (
            "src/App.js",
            b"export default () => null;\n".to_vec(),
            false,
        ),
        (
            "src/screens/Home.tsx",
            b"export const Home = 1;\n".to_vec(),
            false,
        ),
        (
            "assets/icon.png",
            (0..=255u8).cycle().take(5000).collect(),
            false,
        ),
        ("scripts/run.sh", b"#!/bin/sh\necho run\n".to_vec(), true),
    ]
}

fn tar_of(files: &[File], links: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes, executable) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(if *executable { 0o755 } else { 0o644 });
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .unwrap();
    }
    for (path, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, path, target).unwrap();
    }
    builder.into_inner().unwrap()
}

fn manifest_of(files: &[File]) -> (Manifest, Vec<(String, Vec<u8>)>) {
    let mut entries = Vec::new();
    let mut contents = Vec::new();
    for (path, bytes, executable) in files {
        let hash = blob_id(bytes).unwrap();
        entries.push(ManifestEntry {
            path: (*path).to_owned(),
            size: bytes.len() as u64,
            mode: if *executable {
                EntryMode::Executable
            } else {
                EntryMode::File
            },
            hash: hash.clone(),
        });
        contents.push((hash, bytes.clone()));
    }
    (Manifest { files: entries }, contents)
}

struct Setup {
    app: TestApp,
    owner: TestUser,
    project: String,
}

async fn setup_with(env: &[(&str, &str)]) -> Setup {
    let app = TestApp::with_env(env).await;
    let owner = app.register("owner").await;
    let project = app.create_project(&owner, "sync").await;
    Setup {
        app,
        owner,
        project,
    }
}

impl Setup {
    fn url(&self, rest: &str) -> String {
        format!("/api/v1/projects/{}/{rest}", self.project)
    }

    async fn sync(&self, token: &str, query: &str, content_type: &str, body: Vec<u8>) -> Answer {
        self.app
            .send_bytes(
                Method::POST,
                &self.url(&format!("sync{query}")),
                Some(token),
                content_type,
                body,
            )
            .await
    }

    async fn refs(&self) -> Value {
        let answer = self
            .app
            .get(&self.url("refs"), Some(&self.owner.token))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.body["items"].clone()
    }
}

#[tokio::test]
async fn a_synced_tree_reads_back_byte_for_byte() {
    let s = setup_with(&[]).await;
    let repo_dir = s.app.data_dir().join("repos").join(&s.project);
    assert!(
        repo_dir.join("HEAD").is_file(),
        "the repository is made with the project"
    );

    let files = sample();
    let answer = s
        .sync(
            &s.owner.token,
            "?message=first%20sync",
            "application/x-tar",
            tar_of(&files, &[("src/index.js", "App.js")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["created"], true);
    assert_eq!(answer.body["added"], 6);
    assert_eq!(answer.body["branch"], "main");
    let commit = answer.body["commit"].as_str().unwrap().to_owned();

    let refs = s.refs().await;
    assert_eq!(refs[0]["name"], "refs/heads/main");
    assert_eq!(refs[0]["commit"], commit.as_str());

    for (path, bytes, executable) in &files {
        let answer = s
            .app
            .get(&s.url(&format!("files/{path}")), Some(&s.owner.token))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        assert_eq!(&answer.bytes, bytes, "{path}");
        let mode = if *executable { "executable" } else { "file" };
        assert_eq!(answer.headers["x-hivesync-mode"], mode);
        assert_eq!(answer.headers["x-hivesync-commit"], commit.as_str());
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
        assert_eq!(
            answer.headers["etag"],
            format!("\"{}\"", blob_id(bytes).unwrap()).as_str()
        );
    }
    let js = s
        .app
        .get(&s.url("files/src/App.js"), Some(&s.owner.token))
        .await;
    assert_eq!(js.headers["content-type"], "text/javascript; charset=utf-8");
    let png = s
        .app
        .get(
            &s.url("files/assets%2Ficon.png?ref=main"),
            Some(&s.owner.token),
        )
        .await;
    assert_eq!(png.status, StatusCode::OK, "{}", png.text);
    assert_eq!(png.headers["content-type"], "image/png");
    let link = s
        .app
        .get(&s.url("files/src/index.js"), Some(&s.owner.token))
        .await;
    assert_eq!(link.bytes, b"App.js");
    assert_eq!(link.headers["x-hivesync-mode"], "symlink");

    // Conditional reads.
    let etag = js.headers["etag"].to_str().unwrap().to_owned();
    let mut request = s.app.client.get(s.url("files/src/App.js"));
    request = request
        .header("authorization", format!("Bearer {}", s.owner.token))
        .header("if-none-match", etag);
    assert_eq!(request.send().await.0.status(), StatusCode::NOT_MODIFIED);

    let tree = s
        .app
        .get(&s.url("tree?path=src"), Some(&s.owner.token))
        .await;
    assert_eq!(tree.status, StatusCode::OK, "{}", tree.text);
    let names: Vec<(&str, &str)> = tree.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("App.js", "file"),
            ("index.js", "symlink"),
            ("screens", "directory")
        ]
    );
    let by_commit = s
        .app
        .get(&s.url(&format!("tree?ref={commit}")), Some(&s.owner.token))
        .await;
    assert_eq!(by_commit.body["commit"], commit.as_str());

    // The same tree again: no new commit.
    let again = s
        .sync(
            &s.owner.token,
            "",
            "application/x-tar",
            tar_of(&files, &[("src/index.js", "App.js")]),
        )
        .await;
    assert_eq!(again.body["created"], false, "{}", again.text);
    assert_eq!(again.body["commit"], commit.as_str());

    // git agrees with what we served.
    let output = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(&repo_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for (rest, code) in [
        ("files/nope.txt", "NOT_FOUND"),
        ("files/src", "NOT_FOUND"),
        ("tree?ref=nope", "NOT_FOUND"),
        ("tree?path=..%2Fx", "VALIDATION_ERROR"),
        // A ref no branch can have is as missing as any other (the spec takes any string).
        ("tree?ref=a..b", "NOT_FOUND"),
        ("files/..%2F..%2Fetc%2Fpasswd", "VALIDATION_ERROR"),
        (
            "files/src/..%2F..%2Fsecrets%2Fjwt_secret",
            "VALIDATION_ERROR",
        ),
        ("files/.git%2Fconfig", "VALIDATION_ERROR"),
        ("files/HEAD", "NOT_FOUND"),
    ] {
        let answer = s.app.get(&s.url(rest), Some(&s.owner.token)).await;
        let status = if code == "NOT_FOUND" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        answer.assert_error(status, code);
    }

    // Deleting the project retires its repository to DATA_DIR/tmp, for cleanup to remove later.
    let deleting_at = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    // A repository last changed long ago...
    std::fs::File::open(&repo_dir)
        .unwrap()
        .set_modified(deleting_at - std::time::Duration::from_secs(86_400))
        .unwrap();
    let deleted = s
        .app
        .delete(
            &format!("/api/v1/projects/{}", s.project),
            Some(&s.owner.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert!(!repo_dir.exists());
    let retired: Vec<String> = std::fs::read_dir(s.app.data_dir().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let prefix = format!("deleted-project-{}", s.project);
    let retired = retired
        .iter()
        .find(|name| name.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{retired:?}"));
    // Its retention counts from the deletion, not from the repository's last change.
    let modified = std::fs::metadata(s.app.data_dir().join("tmp").join(retired))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        modified >= deleting_at,
        "the retired repository's age starts at deletion"
    );
}

#[tokio::test]
async fn a_one_file_change_sends_one_content_through_the_delta_path() {
    let s = setup_with(&[]).await;
    let mut files = sample();
    let (manifest, contents) = manifest_of(&files);
    let plan = s
        .app
        .post(
            &s.url("sync/plan"),
            Some(&s.owner.token),
            serde_json::to_value(&manifest).unwrap(),
        )
        .await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.text);
    assert_eq!(plan.body["missing"].as_array().unwrap().len(), files.len());
    assert_eq!(plan.body["head"], Value::Null);
    let upload = write_delta_upload(Vec::new(), &manifest, contents).unwrap();
    let first = s
        .app
        .send_bytes(
            Method::POST,
            &s.url("sync/commit?parent=none"),
            Some(&s.owner.token),
            "application/x-tar",
            upload,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["stored"], files.len());

    files[1].1 = b"export default () => 'changed';\n".to_vec();
    let (manifest, contents) = manifest_of(&files);
    let plan = s
        .app
        .post(
            &s.url("sync/plan"),
            Some(&s.owner.token),
            serde_json::to_value(&manifest).unwrap(),
        )
        .await;
    let missing: Vec<String> = serde_json::from_value(plan.body["missing"].clone()).unwrap();
    assert_eq!(
        missing,
        vec![contents[1].0.clone()],
        "exactly the changed content"
    );
    let head = plan.body["head"].as_str().unwrap();
    assert_eq!(head, first.body["commit"].as_str().unwrap());
    let sent: Vec<(String, Vec<u8>)> = contents
        .into_iter()
        .filter(|(h, _)| missing.contains(h))
        .collect();
    assert_eq!(sent.len(), 1);
    let upload = write_delta_upload(Vec::new(), &manifest, sent).unwrap();
    let second = s
        .app
        .send_bytes(
            Method::POST,
            &s.url(&format!("sync/commit?parent={head}&message=edit")),
            Some(&s.owner.token),
            "application/x-tar",
            upload,
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["stored"], 1);
    assert_eq!(second.body["changed"], 1);
    assert_eq!(second.body["added"], 0);
    let file = s
        .app
        .get(&s.url("files/src/App.js"), Some(&s.owner.token))
        .await;
    assert_eq!(file.bytes, files[1].1);

    // A bad manifest is a validation error naming the entry.
    let bad = s
        .app
        .post(
            &s.url("sync/plan"),
            Some(&s.owner.token),
            json!({"files": [{"path": "../x", "size": 1, "mode": "file", "hash": "0".repeat(40)}]}),
        )
        .await;
    let body = bad.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(body["details"]["field"], "path", "{}", bad.text);
    assert!(
        body["message"].as_str().unwrap().contains("\"../x\""),
        "{}",
        bad.text
    );
    let bad = s
        .app
        .post(
            &s.url("sync/plan"),
            Some(&s.owner.token),
            json!({"files": [{"path": "a"}]}),
        )
        .await;
    bad.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn hostile_and_oversized_uploads_are_refused_and_change_nothing() {
    let s = setup_with(&[
        ("SYNC_MAX_UPLOAD_BYTES", "20000"),
        ("SYNC_MAX_FILE_BYTES", "8000"),
    ])
    .await;
    let first = s
        .sync(
            &s.owner.token,
            "",
            "application/x-tar",
            tar_of(&sample(), &[]),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let refs = s.refs().await;

    let escape = tar_of(
        &[("ok.txt", b"ok".to_vec(), false)],
        &[("link", "../../../etc/passwd")],
    );
    s.sync(&s.owner.token, "", "application/x-tar", escape)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let looping = tar_of(
        &[("ok.txt", b"ok".to_vec(), false)],
        &[("a", "b"), ("b", "a")],
    );
    s.sync(&s.owner.token, "", "application/x-tar", looping)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let zip_slip = {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        writer
            .start_file("../../evil.sh", zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(b"evil").unwrap();
        writer.finish().unwrap().into_inner()
    };
    s.sync(&s.owner.token, "", "application/zip", zip_slip)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let big_file = tar_of(&[("big.bin", vec![7; 9000], false)], &[]);
    s.sync(&s.owner.token, "", "application/x-tar", big_file)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    let big_upload: Vec<File> = (0..4)
        .map(|i| (["a", "b", "c", "d"][i], vec![i as u8; 7000], false))
        .collect();
    s.sync(
        &s.owner.token,
        "",
        "application/x-tar",
        tar_of(&big_upload, &[]),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    s.sync(&s.owner.token, "", "text/plain", b"hello".to_vec())
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "VALIDATION_ERROR");
    // Not git's rules, or a name git would read as something else.
    for branch in ["a..b", "HEAD", "refs%2Fheads%2Fmain", "ORIG_HEAD"] {
        s.sync(
            &s.owner.token,
            &format!("?branch={branch}"),
            "application/x-tar",
            tar_of(&sample(), &[]),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }
    s.sync(
        &s.owner.token,
        "?parent=xyz",
        "application/x-tar",
        tar_of(&sample(), &[]),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    assert_eq!(s.refs().await, refs, "no refused upload moved a branch");
    // No spooled upload is left behind.
    let tmp = s.app.data_dir().join("tmp");
    let leftovers: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn viewers_browse_editors_sync_and_strangers_see_nothing() {
    let s = setup_with(&[]).await;
    let viewer = s.app.register("viewer").await;
    let editor = s.app.register("editor").await;
    let stranger = s.app.register("stranger").await;
    s.app
        .add_member(&s.owner, &s.project, &viewer, "viewer")
        .await;
    s.app
        .add_member(&s.owner, &s.project, &editor, "editor")
        .await;
    let tree = tar_of(&sample(), &[]);

    let by_editor = s
        .sync(&editor.token, "", "application/x-tar", tree.clone())
        .await;
    assert_eq!(by_editor.status, StatusCode::OK, "{}", by_editor.text);
    s.sync(&viewer.token, "", "application/x-tar", tree.clone())
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    let manifest = serde_json::to_value(manifest_of(&sample()).0).unwrap();
    s.app
        .post(&s.url("sync/plan"), Some(&viewer.token), manifest.clone())
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    s.app
        .post(
            &s.url("import"),
            Some(&viewer.token),
            json!({"url": "https://example.com/x.git"}),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    let read = s
        .app
        .get(&s.url("files/src/App.js"), Some(&viewer.token))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);

    for rest in ["refs", "tree", "files/src/App.js", "files/package.json"] {
        s.app
            .get(&s.url(rest), Some(&stranger.token))
            .await
            .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
        s.app
            .get(&s.url(rest), None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    s.sync(&stranger.token, "", "application/x-tar", tree.clone())
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    s.app
        .post(&s.url("sync/plan"), Some(&stranger.token), manifest)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let forged = s
        .app
        .get(&s.url("files/src/App.js"), Some("not-a-token"))
        .await;
    forged.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn two_syncs_racing_on_one_branch_give_one_conflict_and_lose_nothing() {
    let s = setup_with(&[]).await;
    let base = s
        .sync(
            &s.owner.token,
            "",
            "application/x-tar",
            tar_of(&sample(), &[]),
        )
        .await;
    let head = base.body["commit"].as_str().unwrap().to_owned();
    let query = format!("?parent={head}");
    let one = tar_of(&[("a.txt", b"one".to_vec(), false)], &[]);
    let two = tar_of(&[("a.txt", b"two".to_vec(), false)], &[]);
    let (a, b) = tokio::join!(
        s.sync(&s.owner.token, &query, "application/x-tar", one),
        s.sync(&s.owner.token, &query, "application/x-tar", two),
    );
    let (winner, loser) = if a.status == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(winner.status, StatusCode::OK, "{}", winner.text);
    let body = loser.assert_error(StatusCode::CONFLICT, "CONFLICT");
    assert_eq!(body["details"]["head"], winner.body["commit"]);
    assert_eq!(winner.body["parent"], head.as_str());
    assert_eq!(s.refs().await[0]["commit"], winner.body["commit"]);

    // The loser retries against the new head, or forces: either way on top of the winner.
    let forced = s
        .sync(
            &s.owner.token,
            &format!("{query}&force=true"),
            "application/x-tar",
            tar_of(&[("a.txt", b"three".to_vec(), false)], &[]),
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text);
    assert_eq!(forced.body["parent"], winner.body["commit"]);
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
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn source_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    git(dir, &["init", "-q"]);
    std::fs::write(dir.join("README.md"), "imported\n").unwrap();
    std::fs::write(dir.join("src/index.js"), "1;\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "initial"]);
    git(dir, &["rev-parse", "HEAD"]).trim().to_owned()
}

#[tokio::test]
async fn imports_from_allowed_file_roots_and_refuses_the_rest() {
    let sources = tempfile::tempdir().unwrap();
    let roots = sources.path().canonicalize().unwrap();
    let s = setup_with(&[("IMPORT_FILE_ROOTS", roots.to_str().unwrap())]).await;
    let head = source_repo(&roots.join("app"));
    let url = format!("file://{}", roots.join("app").display());
    let answer = s
        .app
        .post(
            &s.url("import"),
            Some(&s.owner.token),
            json!({"url": url, "ref": "main"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["commit"], head.as_str());
    assert_eq!(answer.body["updated"], true);
    let file = s
        .app
        .get(&s.url("files/src/index.js"), Some(&s.owner.token))
        .await;
    assert_eq!(file.bytes, b"1;\n");

    // The server's own data, other places, private networks, other schemes.
    let missing_repo = format!("file://{}", roots.join("nothing-here").display());
    let data_repo = format!(
        "file://{}",
        s.app.data_dir().join("repos").join(&s.project).display()
    );
    for (url, status, code) in [
        (data_repo.as_str(), StatusCode::FORBIDDEN, "FORBIDDEN"),
        ("file:///etc", StatusCode::FORBIDDEN, "FORBIDDEN"),
        (
            "http://127.0.0.1:1/repo.git",
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            "http://169.254.169.254/latest",
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            "ssh://example.com/repo.git",
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            "https://user:secret@example.com/x.git",
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            "https://example.com/x.git?secret=1",
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        // Well formed, but nothing is there: the request conflicts with the world, and the
        // project is not what is missing (404 would say it is).
        (
            "https://no-such-host.invalid/x.git",
            StatusCode::CONFLICT,
            "CONFLICT",
        ),
        (missing_repo.as_str(), StatusCode::CONFLICT, "CONFLICT"),
    ] {
        let answer = s
            .app
            .post(&s.url("import"), Some(&s.owner.token), json!({"url": url}))
            .await;
        answer.assert_error(status, code);
        assert!(!answer.text.contains("secret"), "{}", answer.text);
    }
    // A ref is what git would fetch, exactly: no padding, nothing git reads as another ref.
    for reference in [
        " main",
        "main ",
        "refs/heads/HEAD",
        "refs/remotes/x",
        "a..b",
    ] {
        let answer = s
            .app
            .post(
                &s.url("import"),
                Some(&s.owner.token),
                json!({"url": url, "ref": reference}),
            )
            .await;
        let body = answer.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(
            body["details"]["field"], "ref",
            "{reference:?}: {}",
            answer.text
        );
    }
}

/// A smart-HTTP git server: `git http-backend` behind a tiny CGI bridge.
async fn serve_git_over_http(root: std::path::PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    use poem::{Body, Request, Response, handler};

    #[handler]
    async fn cgi(
        req: &Request,
        body: Body,
        root: poem::web::Data<&std::path::PathBuf>,
    ) -> Response {
        let body = body.into_vec().await.unwrap_or_default();
        let root = root.0.clone();
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let content_type = req.content_type().unwrap_or("").to_owned();
        let protocol = req
            .headers()
            .get("git-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let output = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new("git")
                .arg("http-backend")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", method)
                .env("PATH_INFO", path)
                .env("QUERY_STRING", query)
                .env("CONTENT_TYPE", content_type)
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("GIT_PROTOCOL", protocol)
                .env("REMOTE_ADDR", "127.0.0.1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&body).unwrap();
            child.wait_with_output().unwrap().stdout
        })
        .await
        .unwrap();
        let split = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
            .unwrap();
        let head = String::from_utf8_lossy(&output[..split.0]).into_owned();
        let mut response = Response::builder();
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("status") {
                let code: u16 = value.trim()[..3].parse().unwrap();
                response = response.status(StatusCode::from_u16(code).unwrap());
            } else {
                response = response.header(name.trim(), value.trim());
            }
        }
        response.body(output[split.0 + split.1..].to_vec())
    }

    // Bound before the server starts, so connections queue until it accepts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    let app = poem::EndpointExt::data(poem::Route::new().at("/*path", cgi), root);
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (format!("http://{address}"), server)
}

#[tokio::test]
async fn imports_over_smart_http() {
    let sources = tempfile::tempdir().unwrap();
    let head = source_repo(&sources.path().join("app.git"));
    git(&sources.path().join("app.git"), &["tag", "v1"]);
    let (base, server) = serve_git_over_http(sources.path().to_path_buf()).await;
    let s = setup_with(&[("IMPORT_ALLOW_PRIVATE_NETWORKS", "true")]).await;
    let answer = s
        .app
        .post(
            &s.url("import"),
            Some(&s.owner.token),
            json!({"url": format!("{base}/app.git"), "ref": "v1", "branch": "imported"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["commit"], head.as_str());
    assert_eq!(answer.body["branch"], "imported");
    let file = s
        .app
        .get(&s.url("files/README.md?ref=imported"), Some(&s.owner.token))
        .await;
    assert_eq!(file.bytes, b"imported\n");
    let missing = s
        .app
        .post(
            &s.url("import"),
            Some(&s.owner.token),
            json!({"url": format!("{base}/app.git"), "ref": "nope", "branch": "other"}),
        )
        .await;
    // A ref the other end lacks is a conflict with the request; 404 would say the project is.
    missing.assert_error(StatusCode::CONFLICT, "CONFLICT");
    server.abort();
}
