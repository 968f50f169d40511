//! Previews through the API: preview tokens and their misuse, build requests, the whole-build
//! cache, and real builds of both example apps for both platforms by a worker running beside the
//! server (status, download with ranges and ETag, logs, the repository left as it was).

mod common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::{Answer, TestApp, TestUser};
use hivesync_core::domain::{Platform, ProjectId, UserId};
use hivesync_core::ports::WorkerRole;
use hivesync_core::preview_token::{PreviewGrant, PreviewTokenSigner};
use hivesync_core::testkit::examples::{example_app, tar_of_sources};
use hivesync_queue::worker::WorkerConfig;
use poem::http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// The example app's sources, each file passed through `edit`.
fn tar_of(name: &str, edit: &dyn Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    tar_of_sources(&example_app(name), &|path, bytes| Some(edit(path, bytes)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unchanged(_: &str, bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

async fn sync(app: &TestApp, owner: &TestUser, project: &str, tar: Vec<u8>) -> String {
    let answer = app
        .send_bytes(
            Method::POST,
            &format!("/api/v1/projects/{project}/sync"),
            Some(&owner.token),
            "application/x-tar",
            tar,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["commit"].as_str().unwrap().to_owned()
}

async fn preview_token(
    app: &TestApp,
    user: &TestUser,
    project: &str,
    platform: &str,
    git_ref: Option<&str>,
) -> String {
    let mut body = json!({"project_id": project, "platform": platform});
    if let Some(git_ref) = git_ref {
        body["ref"] = json!(git_ref);
    }
    let answer = app
        .post("/api/v1/preview/token", Some(&user.token), body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["token"].as_str().unwrap().to_owned()
}

async fn build(app: &TestApp, token: &str, body: Value) -> Answer {
    app.post("/api/v1/preview/build", Some(token), body).await
}

async fn status(app: &TestApp, token: &str, job: &str) -> Answer {
    app.get(&format!("/api/v1/preview/status/{job}"), Some(token))
        .await
}

/// Polls the status endpoint until the build is finished.
async fn finished(app: &TestApp, token: &str, job: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut progress = 0.0;
    loop {
        let answer = status(app, token, job).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let now = answer.body["progress"].as_f64().unwrap();
        assert!(now >= progress, "progress never goes back: {}", answer.text);
        progress = now;
        if ["success", "failed", "cancelled"].contains(&answer.body["status"].as_str().unwrap()) {
            return answer.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "build stuck: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decodes the QR code of an SVG made of `M{x} {y}h1v1h-1z` modules.
fn decode_qr(svg: &str) -> String {
    let path = svg.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
    let size: usize = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut dark = vec![false; size * size];
    for module in path.split('M').filter(|m| !m.is_empty()) {
        let coords = module.trim_end_matches("h1v1h-1z");
        let (x, y) = coords.split_once(' ').unwrap();
        let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
        dark[y * size + x] = true;
    }
    // Four pixels per module, so the decoder sees clean edges.
    let scale = 4;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(size * scale, size * scale, |x, y| {
            if dark[(y / scale) * size + x / scale] {
                0
            } else {
                255
            }
        });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn tokens_are_issued_to_members_and_misuse_is_refused() {
    let app = TestApp::with_env(&[
        ("PREVIEW_BUILDS_PER_MINUTE", "6"),
        ("PUBLIC_URL", "https://hive.example.com"),
    ])
    .await;
    let owner = app.register("owner").await;
    let editor = app.register("editor").await;
    let outsider = app.register("outsider").await;
    let project = app.create_project(&owner, "app").await;
    let other_project = app.create_project(&owner, "other").await;
    app.add_member(&owner, &project, &editor, "editor").await;
    let commit = sync(&app, &owner, &project, tar_of("rn-app", &unchanged)).await;
    sync(&app, &owner, &other_project, tar_of("rn-app", &unchanged)).await;

    // Issuing: members only, a known platform and an existing ref.
    let ask = |user: Option<&TestUser>, body: Value| {
        let token = user.map(|u| u.token.clone());
        let app = &app;
        async move {
            app.post("/api/v1/preview/token", token.as_deref(), body)
                .await
        }
    };
    ask(None, json!({"project_id": project, "platform": "ios"}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    ask(
        Some(&outsider),
        json!({"project_id": project, "platform": "ios"}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    ask(
        Some(&owner),
        json!({"project_id": project, "platform": "windows"}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    ask(
        Some(&owner),
        json!({"project_id": project, "platform": "ios", "ref": "no-such-branch"}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    ask(
        Some(&owner),
        json!({"project_id": project, "platform": "ios", "ref": "--upload-pack=x"}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    let issued = ask(
        Some(&owner),
        json!({"project_id": project, "platform": "ios", "ref": "main"}),
    )
    .await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text);
    let token = issued.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("v1."));
    assert_eq!(issued.body["expires_in"], 300);
    assert_eq!(issued.body["platform"], "ios");
    assert_eq!(issued.body["ref"], "main");
    let url = issued.body["preview_url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://hive.example.com/preview#token={token}")
    );
    assert_eq!(
        decode_qr(issued.body["qr_svg"].as_str().unwrap()),
        url,
        "the QR code is the preview URL"
    );

    // Building takes the preview token alone.
    build(&app, &owner.token, json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "TOKEN_INVALID");
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    build(&app, &String::from_utf8(tampered).unwrap(), json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "TOKEN_INVALID");
    let project_id = ProjectId::from_uuid(project.parse().unwrap());
    let owner_id = UserId::from_uuid(owner.id.parse().unwrap());
    let grant = PreviewGrant {
        project_id,
        user_id: owner_id,
        platform: Platform::Ios,
        git_ref: None,
    };
    let now = chrono::Utc::now().timestamp();
    let expired = app
        .state
        .preview_tokens
        .sign(&grant, now - 600, 300)
        .unwrap();
    build(&app, &expired, json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED");
    // Signed with a key this server does not have.
    let foreign_key = hivesync_core::config::PreviewKey {
        id: "k1".to_owned(),
        secret: hivesync_core::secret::Secret::new("f".repeat(40)),
    };
    let foreign = PreviewTokenSigner::new(&foreign_key, &[])
        .unwrap()
        .sign(&grant, now, 300)
        .unwrap();
    build(&app, &foreign, json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "TOKEN_INVALID");

    // Bad bodies.
    build(&app, &token, json!({"ref": "develop"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    build(&app, &token, json!({"env": {"SECRET_KEY": "x"}}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    build(&app, &token, json!({"branch": "main"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // An app folder must be a path inside the tree.
    for outside in ["../other", "/etc", "apps/../../x", ".git/hooks"] {
        build(&app, &token, json!({"app": outside}))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }

    // A build is queued (no worker runs here), pinned to the commit the ref named.
    let accepted = build(&app, &token, json!({})).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.body["status"], "queued");
    assert_eq!(accepted.body["commit"], commit.as_str());
    assert_eq!(accepted.body["cached"], false);
    assert_eq!(accepted.body["shared"], false);
    let job = accepted.body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        accepted.body["status_url"],
        format!("/api/v1/preview/status/{job}")
    );
    let job_record = app
        .state
        .store
        .get_job(hivesync_core::domain::JobId::from_uuid(
            job.parse().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job_record.payload["git_ref"], commit.as_str());
    assert_eq!(job_record.payload["requested_ref"], "main");

    // The same request again, and another member's identical request, share that build.
    let again = build(&app, &token, json!({})).await;
    assert_eq!(again.body["job_id"], job.as_str(), "{}", again.text);
    let editor_token = preview_token(&app, &editor, &project, "ios", None).await;
    let shared = build(&app, &editor_token, json!({})).await;
    assert_eq!(shared.body["job_id"], job.as_str(), "{}", shared.text);
    assert_eq!(shared.body["shared"], true);
    // Another platform or environment is another build.
    let android = preview_token(&app, &owner, &project, "android", None).await;
    let other = build(&app, &android, json!({})).await;
    assert_ne!(other.body["job_id"], job.as_str(), "{}", other.text);
    let with_env = build(
        &app,
        &editor_token,
        json!({"env": {"EXPO_PUBLIC_API_URL": "https://api.example.com"}}),
    )
    .await;
    assert_ne!(with_env.body["job_id"], job.as_str(), "{}", with_env.text);

    // The key is the tree's: the same tree on another branch is the same build; a changed Babel
    // config or package.json is another. (A member with their own request allowance.)
    let keys = app.register("keys").await;
    app.add_member(&owner, &project, &keys, "viewer").await;
    let keys_token = preview_token(&app, &keys, &project, "ios", None).await;
    let branch = |name: &'static str, edit: &'static dyn Fn(&str, Vec<u8>) -> Vec<u8>| {
        let app = &app;
        let owner = &owner;
        let project = &project;
        async move {
            let answer = app
                .send_bytes(
                    Method::POST,
                    &format!("/api/v1/projects/{project}/sync?branch={name}"),
                    Some(&owner.token),
                    "application/x-tar",
                    tar_of("rn-app", edit),
                )
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        }
    };
    branch("same-tree", &unchanged).await;
    let same = build(&app, &keys_token, json!({"ref": "same-tree"})).await;
    assert_eq!(same.body["job_id"], job.as_str(), "{}", same.text);
    branch("babel", &|path, bytes| {
        if path == "babel.config.js" {
            [bytes, b"\n// another plugin order\n".to_vec()].concat()
        } else {
            bytes
        }
    })
    .await;
    let babel = build(&app, &keys_token, json!({"ref": "babel"})).await;
    assert_eq!(babel.status, StatusCode::ACCEPTED, "{}", babel.text);
    assert_ne!(babel.body["job_id"], job.as_str());
    branch("package", &|path, bytes| {
        if path == "package.json" {
            String::from_utf8(bytes)
                .unwrap()
                .replacen('{', "{\n  \"description\": \"changed\",", 1)
                .into_bytes()
        } else {
            bytes
        }
    })
    .await;
    let package = build(&app, &keys_token, json!({"ref": "package"})).await;
    assert_ne!(package.body["job_id"], job.as_str());
    assert_ne!(package.body["job_id"], babel.body["job_id"]);
    // A token pinned to `main` reads only builds of `main`.
    let babel_job = babel.body["job_id"].as_str().unwrap();
    assert_eq!(
        status(&app, &keys_token, babel_job).await.status,
        StatusCode::OK
    );
    status(&app, &token, babel_job)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // Reading the build: members and tokens of its project and platform; nobody else.
    let seen = status(&app, &token, &job).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text);
    assert_eq!(seen.body["status"], "queued");
    assert_eq!(seen.body["platform"], "ios");
    assert_eq!(seen.body["ref"], "main");
    assert_eq!(seen.body["commit"], commit.as_str());
    assert_eq!(seen.body["timeout"], false);
    assert!(seen.body["download_url"].is_null());
    assert_eq!(
        status(&app, &owner.token, &job).await.status,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, &editor_token, &job).await.status,
        StatusCode::OK
    );
    status(&app, &android, &job)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    status(&app, &outsider.token, &job)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let other_project_token = preview_token(&app, &owner, &other_project, "ios", None).await;
    status(&app, &other_project_token, &job)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    status(&app, &token, &uuid::Uuid::new_v4().to_string())
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    status(&app, "garbage", &job)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    status(&app, &expired, &job)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED");
    app.get(&format!("/api/v1/preview/download/{job}"), Some(&token))
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");
    app.get(&format!("/api/v1/preview/logs/{job}"), Some(&token))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // Rate limited per user and project: six requests a minute, and the owner has made three
    // (malformed requests do not count).
    for _ in 0..3 {
        let answer = build(&app, &token, json!({})).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }
    let limited = build(&app, &token, json!({})).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert!(limited.headers.get("retry-after").is_some());
    // The editor's allowance is their own.
    assert_eq!(
        build(&app, &editor_token, json!({})).await.status,
        StatusCode::ACCEPTED
    );

    // A member removed from the project: their tokens stop working at once.
    let removed = app
        .delete(
            &format!("/api/v1/projects/{project}/members/{}", editor.id),
            Some(&owner.token),
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    build(&app, &editor_token, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    status(&app, &editor_token, &job)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// A finished build's zip: its entries by name.
fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        if entry.is_dir() {
            continue;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.insert(entry.name().unwrap().to_string(), content);
    }
    files
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                files.push((
                    entry.path().display().to_string(),
                    std::fs::read(entry.path()).unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

struct Built {
    status: Value,
    zip: Vec<u8>,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

async fn build_and_download(app: &TestApp, token: &str, body: Value) -> Built {
    let accepted = build(app, token, body).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let job = accepted.body["job_id"].as_str().unwrap().to_owned();
    let status = finished(app, token, &job).await;
    if status["status"] != "success" {
        let log = app
            .get(&format!("/api/v1/preview/logs/{job}"), Some(token))
            .await;
        panic!("build failed: {status}\n{}", log.text);
    }
    let download = app
        .get(&format!("/api/v1/preview/download/{job}"), Some(token))
        .await;
    assert_eq!(download.status, StatusCode::OK);
    let zip = download.bytes.clone();
    assert_eq!(
        download.headers["content-length"].to_str().unwrap(),
        zip.len().to_string()
    );
    let sha = sha256_hex(&zip);
    assert_eq!(status["sha256"], sha.as_str());
    assert_eq!(status["bytes"], zip.len());
    assert_eq!(
        download.headers["etag"].to_str().unwrap(),
        format!("\"{sha}\"")
    );
    let files = unzip(&zip);
    Built { status, zip, files }
}

#[tokio::test]
async fn both_example_apps_build_for_both_platforms_through_the_api() {
    let app = TestApp::with_env(&[
        ("PREVIEW_BUILDER_CONCURRENCY", "2"),
        ("WORKER_CONCURRENCY", "4"),
        ("METRICS_TOKEN", "metrics-token-for-tests"),
    ])
    .await;
    let metrics = || async {
        let answer = app.get("/metrics", Some("metrics-token-for-tests")).await;
        assert_eq!(answer.status, StatusCode::OK);
        // `name{labels} value` → value, for the lines this test reads.
        let value = |text: &str, series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let text = answer.text;
        [
            value(&text, "preview_build_success_total"),
            value(&text, "preview_build_failures_total"),
            value(&text, "preview_cache_hits_total{cache=\"build\"}"),
            value(&text, "preview_build_time_seconds_count"),
        ]
    };
    // Other tests in this process may build too: compare against this starting point.
    let before = metrics().await;
    let shutdown = CancellationToken::new();
    let workers = hivesync_server::runtime::spawn_worker(
        &app.state,
        WorkerConfig::new(WorkerRole::Cpu, 4),
        &shutdown,
    );
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let rn = app.create_project(&owner, "rn").await;
    let expo = app.create_project(&owner, "expo").await;
    app.add_member(&owner, &rn, &member, "viewer").await;
    sync(&app, &owner, &rn, tar_of("rn-app", &unchanged)).await;
    sync(&app, &owner, &expo, tar_of("expo-app", &unchanged)).await;
    let repos_before = snapshot(&app.data_dir().join("repos"));

    // The first build of each app installs its dependencies; both platforms of an app then share
    // them. Two builds at a time (PREVIEW_BUILDER_CONCURRENCY).
    let mut tokens = Vec::new();
    for (project, platform) in [
        (&rn, "ios"),
        (&rn, "android"),
        (&expo, "ios"),
        (&expo, "android"),
    ] {
        tokens.push((
            project.clone(),
            platform,
            preview_token(&app, &owner, project, platform, None).await,
        ));
    }
    let builds = futures::future::join_all(
        tokens
            .iter()
            .map(|(_, _, token)| build_and_download(&app, token, json!({}))),
    )
    .await;
    for ((project, platform, _), built) in tokens.iter().zip(&builds) {
        let status = &built.status;
        let what = format!("{project} {platform}");
        assert_eq!(status["progress"], 1.0, "{what}");
        assert_eq!(status["platform"], *platform, "{what}");
        assert_eq!(status["cache"]["build"], "miss", "{what}");
        assert!(status["error"].is_null(), "{what}");
        let metadata: Value = serde_json::from_slice(&built.files["metadata.json"]).unwrap();
        assert_eq!(metadata["job_id"], status["job_id"], "{what}");
        assert_eq!(metadata["project_id"], project.as_str(), "{what}");
        assert_eq!(metadata["platform"], *platform, "{what}");
        assert_eq!(metadata["commit"], status["commit"], "{what}");
        assert_eq!(metadata["token_version"], 1, "{what}");
        assert!(built.files["logs.txt"].len() > 100, "{what}");
        let bundle_name = metadata["bundle"].as_str().unwrap();
        let bundle = &built.files[bundle_name];
        assert!(bundle.len() > 10_000, "{what}: a real bundle");
        assert_eq!(
            metadata["bundle_sha256"],
            sha256_hex(bundle).as_str(),
            "{what}"
        );
        if project == &rn {
            assert_eq!(bundle_name, "main.jsbundle", "{what}");
            assert_eq!(status["bundler"], "metro", "{what}");
            assert!(
                built
                    .files
                    .keys()
                    .any(|k| k.starts_with("assets/") && k.ends_with(".png")),
                "{what}: the image asset is packaged: {:?}",
                built.files.keys().collect::<Vec<_>>()
            );
        } else {
            assert!(
                bundle_name.starts_with(&format!("_expo/static/js/{platform}/")),
                "{what}"
            );
            assert_eq!(status["bundler"], "expo", "{what}");
        }
    }
    assert_eq!(
        snapshot(&app.data_dir().join("repos")),
        repos_before,
        "builds leave the repositories byte for byte as they were"
    );
    let rn_ios = &builds[0];
    let job = rn_ios.status["job_id"].as_str().unwrap().to_owned();
    let rn_ios_token = &tokens[0].2;

    // Downloads: byte ranges, conditional requests; members may download too.
    let partial = app
        .client
        .get(format!("/api/v1/preview/download/{job}"))
        .header("authorization", format!("Bearer {rn_ios_token}"))
        .header("range", "bytes=10-99")
        .send()
        .await;
    let partial = common::read(partial).await;
    assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(partial.bytes, rn_ios.zip[10..100]);
    assert_eq!(
        partial.headers["content-range"].to_str().unwrap(),
        format!("bytes 10-99/{}", rn_ios.zip.len())
    );
    let beyond = common::read(
        app.client
            .get(format!("/api/v1/preview/download/{job}"))
            .header("authorization", format!("Bearer {rn_ios_token}"))
            .header("range", format!("bytes={}-", rn_ios.zip.len()))
            .send()
            .await,
    )
    .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let etag = format!("\"{}\"", rn_ios.status["sha256"].as_str().unwrap());
    let cached = common::read(
        app.client
            .get(format!("/api/v1/preview/download/{job}"))
            .header("authorization", format!("Bearer {}", member.token))
            // Weak comparison: a client may send the tag back as weak.
            .header("if-none-match", format!("W/{etag}"))
            .send()
            .await,
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    let log = app
        .get(&format!("/api/v1/preview/logs/{job}"), Some(rn_ios_token))
        .await;
    assert_eq!(log.status, StatusCode::OK);
    for step in [
        "checkout",
        "dependencies",
        "bundling",
        "packaging",
        "uploading",
        "success",
    ] {
        assert!(
            log.text.contains(step),
            "the log records {step}: {}",
            log.text
        );
    }

    // The runtime gate: the status and metadata.json say what the app must be; a client that
    // describes another runtime is refused before it downloads anything.
    let runtime = &rn_ios.status["runtime"];
    assert_eq!(runtime["react_native"], "0.88.1", "{runtime}");
    assert!(runtime["expo_sdk"].is_null(), "{runtime}");
    assert_eq!(runtime["fingerprint"].as_str().unwrap().len(), 64);
    let metadata: Value = serde_json::from_slice(&rn_ios.files["metadata.json"]).unwrap();
    for field in ["fingerprint", "react_native", "native_modules"] {
        assert_eq!(metadata["runtime"][field], runtime[field], "{field}");
    }
    let expo_runtime = &builds[2].status["runtime"];
    assert_eq!(expo_runtime["react_native"], "0.86.3", "{expo_runtime}");
    assert_eq!(expo_runtime["expo_sdk"], "57.0.0", "{expo_runtime}");
    let download_as = |described: &str, in_query: bool| {
        let mut url = format!("/api/v1/preview/download/{job}");
        let mut request = app.client.get(&url);
        if in_query {
            url.push_str(&format!("?runtime={}", described.replace(';', "%3B")));
            request = app.client.get(&url);
        } else {
            request = request.header("x-hivesync-runtime", described);
        }
        let request = request.header("authorization", format!("Bearer {rn_ios_token}"));
        async move { common::read(request.send().await).await }
    };
    let older = download_as("react-native=0.85.2;react-native-screens=4.0.0", false).await;
    assert_eq!(older.status, StatusCode::CONFLICT, "{}", older.text);
    assert_eq!(older.body["code"], "RUNTIME_MISMATCH");
    assert_eq!(
        older.body["details"]["differences"][0]["what"], "react-native",
        "{}",
        older.text
    );
    assert!(older.text.contains("0.85.2"), "{}", older.text);
    assert!(older.bytes.len() < 4096, "no bundle bytes in the refusal");
    let older = download_as("react-native=0.85.2", true).await;
    assert_eq!(older.status, StatusCode::CONFLICT, "{}", older.text);
    let fingerprint = format!("fingerprint={}", runtime["fingerprint"].as_str().unwrap());
    let same = download_as(&fingerprint, false).await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.bytes, rn_ios.zip);
    let patch = download_as("react-native=0.88.0", true).await;
    assert_eq!(
        patch.status,
        StatusCode::OK,
        "a patch release keeps the native interface"
    );
    let malformed = download_as("react-native", false).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["code"], "VALIDATION_ERROR");

    // An identical request is answered from the whole-build cache, with the same bundle.
    let again = build(&app, rn_ios_token, json!({})).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["status"], "success", "{}", again.text);
    assert_eq!(again.body["cached"], true);
    let again_job = again.body["job_id"].as_str().unwrap();
    assert_ne!(again_job, job);
    let again_status = status(&app, rn_ios_token, again_job).await.body;
    assert_eq!(again_status["cache"]["build"], "hit");
    assert_eq!(again_status["built_by"], job.as_str());
    let again_zip = app
        .get(
            &format!("/api/v1/preview/download/{again_job}"),
            Some(rn_ios_token),
        )
        .await;
    assert_eq!(again_zip.bytes, rn_ios.zip);

    // A one-line change: a new build, dependencies from the store, Metro's cache warm.
    let edited = |path: &str, bytes: Vec<u8>| {
        if path == "src/App.js" {
            let mut text = String::from_utf8(bytes).unwrap();
            text.push_str("\n// one more line\n");
            text.into_bytes()
        } else {
            bytes
        }
    };
    sync(&app, &owner, &rn, tar_of("rn-app", &edited)).await;
    let rebuilt = build_and_download(&app, rn_ios_token, json!({})).await;
    assert_eq!(rebuilt.status["cache"]["build"], "miss");
    assert_eq!(rebuilt.status["cache"]["dependencies"], "store");
    assert_eq!(rebuilt.status["cache"]["metro_warm"], true);
    assert_ne!(rebuilt.status["commit"], rn_ios.status["commit"]);

    // A syntax error: PREVIEW_BUILD_FAILED, and the log says where.
    let broken = |path: &str, bytes: Vec<u8>| {
        if path == "src/App.js" {
            b"export default function App( {\n".to_vec()
        } else {
            bytes
        }
    };
    sync(&app, &owner, &rn, tar_of("rn-app", &broken)).await;
    let repos_before_failure = snapshot(&app.data_dir().join("repos"));
    let failed = build(&app, rn_ios_token, json!({})).await;
    let failed_job = failed.body["job_id"].as_str().unwrap().to_owned();
    let failed_status = finished(&app, rn_ios_token, &failed_job).await;
    assert_eq!(failed_status["status"], "failed");
    assert_eq!(failed_status["error"]["code"], "PREVIEW_BUILD_FAILED");
    assert_eq!(failed_status["timeout"], false);
    let failed_log = app
        .get(
            &format!("/api/v1/preview/logs/{failed_job}"),
            Some(rn_ios_token),
        )
        .await;
    assert!(failed_log.text.contains("App.js"), "{}", failed_log.text);
    app.get(
        &format!("/api/v1/preview/download/{failed_job}"),
        Some(rn_ios_token),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "CONFLICT");

    assert_eq!(
        snapshot(&app.data_dir().join("repos")),
        repos_before_failure,
        "a failed build leaves the repository byte for byte as it was"
    );

    let after = metrics().await;
    let grew = |i: usize| after[i] - before[i];
    assert!(grew(0) >= 5.0, "successes counted: {before:?} → {after:?}");
    assert!(
        grew(1) >= 1.0,
        "the failure counted: {before:?} → {after:?}"
    );
    assert!(
        grew(2) >= 1.0,
        "the whole-build cache hit counted: {before:?} → {after:?}"
    );
    assert!(
        grew(3) >= 6.0,
        "build times recorded: {before:?} → {after:?}"
    );

    shutdown.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
}

/// An API server that shares no disk with the worker that built a preview (only the database, the
/// queue, the object store and, until the repositories move off the disk too, the repositories)
/// answers its status, download, ranges and log exactly as the worker's own server does.
#[tokio::test]
async fn an_api_server_without_the_workers_disk_serves_the_same_build() {
    let secrets = [
        ("JWT_SECRET", "jwt-secret-shared-by-both-servers-0123456789"),
        (
            "PREVIEW_TOKEN_SECRET",
            "preview-secret-shared-by-both-servers-0123456789",
        ),
    ];
    let worker_side = TestApp::with_env(&secrets).await;
    let api_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        worker_side.data_dir().join("repos"),
        api_dir.path().join("repos"),
    )
    .unwrap();
    let mut vars: std::collections::HashMap<&str, String> = secrets
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    vars.insert("DATA_DIR", api_dir.path().to_str().unwrap().to_owned());
    let config =
        hivesync_core::config::Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    hivesync_core::config::prepare_data_dir(&config).unwrap();
    let api = TestApp::from_state(
        hivesync_server::state::AppState::new(config, worker_side.state.backends(), None).unwrap(),
    );

    let shutdown = CancellationToken::new();
    let workers = hivesync_server::runtime::spawn_worker(
        &worker_side.state,
        WorkerConfig::new(WorkerRole::Cpu, 1),
        &shutdown,
    );
    let owner = api.register("owner").await;
    let project = api.create_project(&owner, "rn").await;
    sync(&api, &owner, &project, tar_of("rn-app", &unchanged)).await;
    let token = preview_token(&api, &owner, &project, "android", None).await;
    let built = build_and_download(&api, &token, json!({})).await;
    let job = built.status["job_id"].as_str().unwrap().to_owned();
    // The client library reads the status into the types the builder wrote.
    let typed: hivesync_preview::client::PreviewStatus =
        serde_json::from_value(built.status.clone()).unwrap();
    assert_eq!(typed.sha256.as_deref(), built.status["sha256"].as_str());
    assert_eq!(typed.bytes, Some(built.zip.len() as u64));
    assert_eq!(
        typed.runtime.as_ref().map(|r| r.fingerprint.as_str()),
        built.status["runtime"]["fingerprint"].as_str()
    );
    assert_eq!(
        typed.cache.and_then(|c| c.build),
        Some(hivesync_preview::job::BuildCache::Miss)
    );
    // Nothing of the build is on the API server's disk.
    for sub in ["previews", "tmp"] {
        assert_eq!(
            std::fs::read_dir(api_dir.path().join(sub)).unwrap().count(),
            0,
            "{sub}"
        );
    }

    for (which, app) in [("worker's server", &worker_side), ("API server", &api)] {
        let status = status(app, &token, &job).await;
        assert_eq!(status.body, built.status, "{which}");
        let download = app
            .get(&format!("/api/v1/preview/download/{job}"), Some(&token))
            .await;
        assert_eq!(download.status, StatusCode::OK, "{which}");
        assert_eq!(download.bytes, built.zip, "{which}");
        let partial = common::read(
            app.client
                .get(format!("/api/v1/preview/download/{job}"))
                .header("authorization", format!("Bearer {token}"))
                .header("range", "bytes=5-49")
                .send()
                .await,
        )
        .await;
        assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT, "{which}");
        assert_eq!(partial.bytes, built.zip[5..50], "{which}");
        let log = app
            .get(&format!("/api/v1/preview/logs/{job}"), Some(&token))
            .await;
        assert_eq!(log.status, StatusCode::OK, "{which}");
        assert!(log.text.contains("success after"), "{which}: {}", log.text);
    }

    // While a build runs, the API server (which never sees the worker's files) serves its log
    // so far. Another environment is another build.
    let accepted = build(&api, &token, json!({"env": {"EXPO_PUBLIC_FLAVOR": "live"}})).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let job = accepted.body["job_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    // The earliest log read while the build was still running. A poll can read the log just as
    // the build finishes, so "mid-build" is proven against the final log below, not assumed.
    let mut live_log = None;
    loop {
        let now = status(&api, &token, &job).await;
        if ["success", "failed", "cancelled"].contains(&now.body["status"].as_str().unwrap()) {
            assert_eq!(now.body["status"], "success", "{}", now.text);
            break;
        }
        if live_log.is_none() {
            let log = api
                .get(&format!("/api/v1/preview/logs/{job}"), Some(&token))
                .await;
            if log.status == StatusCode::OK {
                live_log = Some(log.text);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "build stuck");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live_log = live_log.expect("the running build's log was readable on the API server");
    assert!(
        live_log.contains(&format!("preview build {job}")),
        "{live_log}"
    );
    let final_log = api
        .get(&format!("/api/v1/preview/logs/{job}"), Some(&token))
        .await;
    assert_eq!(final_log.status, StatusCode::OK);
    assert!(
        final_log.text.contains("success after"),
        "{}",
        final_log.text
    );
    // What was served mid-build is the beginning of the finished log, and only the beginning.
    assert!(
        final_log.text.starts_with(&live_log) && final_log.text.len() > live_log.len(),
        "live:\n{live_log}\nfinal:\n{}",
        final_log.text
    );
    shutdown.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
}

/// A build recorded by an earlier version (before runtimes, package managers, app folders and
/// pinned commits were recorded) still reads through the API.
#[tokio::test]
async fn a_build_recorded_by_an_earlier_version_still_reads() {
    use hivesync_core::domain::{JobId, JobUpdate, NewJob};
    let app = TestApp::new().await;
    let owner = app.register("owner").await;
    let project = app.create_project(&owner, "old").await;
    let project_id: ProjectId = project.parse().unwrap();
    let id = JobId::new();
    let commit = "c".repeat(40);
    app.state
        .store
        .create_job(NewJob {
            id,
            kind: "preview_build".to_owned(),
            queue: "preview_build".to_owned(),
            project_id: Some(project_id),
            user_id: None,
            payload: json!({
                "project_id": project_id,
                "platform": "android",
                "git_ref": "main",
                "token_version": 1,
            }),
            dedup_key: None,
        })
        .await
        .unwrap();
    app.state
        .store
        .update_job(
            id,
            JobUpdate::success(Some(json!({
                "bundle_key": format!("previews/{project_id}/{id}/bundle.zip"),
                "bytes": 1234,
                "sha256": "ab".repeat(32),
                "commit": commit,
                "tree": "t".repeat(40),
                "platform": "android",
                "bundler": "metro",
                "bundler_version": "0.83.3",
                "bundle_sha256": "cd".repeat(32),
                "cache": {"dependencies": "installed", "metro_warm": false},
            }))),
        )
        .await
        .unwrap();
    let answer = status(&app, &owner.token, &id.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = &answer.body;
    assert_eq!(body["status"], "success");
    assert_eq!(body["platform"], "android");
    assert_eq!(body["ref"], "main");
    assert_eq!(body["commit"], commit.as_str());
    assert_eq!(body["bytes"], 1234);
    assert_eq!(body["cache"]["dependencies"], "installed");
    assert_eq!(body["cache"]["metro_warm"], false);
    assert!(body["runtime"].is_null() && body["lockfile"].is_null());
    assert_eq!(body["warnings"], json!([]));
    // Its bundle is gone from the store: a download says so instead of failing to read the record.
    let download = app
        .get(
            &format!("/api/v1/preview/download/{id}"),
            Some(&owner.token),
        )
        .await;
    assert_eq!(download.status, StatusCode::NOT_FOUND, "{}", download.text);
}
