//! The real `hivesync` binary on `127.0.0.1:0`: on the embedded defaults, against PostgreSQL and
//! an S3-compatible server by configuration alone, shutdown on SIGTERM, and configuration errors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hivesync_core::testkit;
use serde_json::{Value, json};

#[path = "common/binary.rs"]
mod binary;

use binary::{BINARY, Server, send};

/// Register, log in, read the profile, create and list a project: the path every client takes.
async fn exercise(server: &Server) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (_, health) = send(http.get(server.url("/api/v1/health"))).await;
    assert_eq!(health["status"], "ok", "{health}");

    let email = format!("bin-{}@example.org", testkit::unique_suffix());
    let credentials = json!({"email": email, "password": "binary password"});
    let (status, _) = send(
        http.post(server.url("/api/v1/auth/register"))
            .json(&credentials),
    )
    .await;
    assert_eq!(status, 201);
    let (status, login) = send(
        http.post(server.url("/api/v1/auth/login"))
            .json(&credentials),
    )
    .await;
    assert_eq!(status, 200);
    let token = login["access_token"].as_str().expect("token").to_owned();
    let (_, me) = send(http.get(server.url("/api/v1/users/me")).bearer_auth(&token)).await;
    assert_eq!(me["email"], email.as_str());
    let project = json!({"name": "from the binary"});
    let (status, _) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&project),
    )
    .await;
    assert_eq!(status, 201);
    let (_, listed) = send(http.get(server.url("/api/v1/projects")).bearer_auth(&token)).await;
    assert_eq!(listed["items"][0]["name"], "from the binary");
    let (status, spec) = send(http.get(server.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, 200);
    assert!(spec["paths"]["/projects"].is_object());
}

#[tokio::test]
async fn embedded_defaults_serve_and_shut_down_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[("DATA_DIR", data.path().display().to_string())]);
    exercise(&server).await;
    // Embedded mode made its database, object root and secrets under DATA_DIR.
    for sub in [
        "hivesync.db",
        "objects",
        "repos",
        "previews",
        "tmp",
        "logs",
        "cache",
        "secrets/jwt_secret",
    ] {
        assert!(data.path().join(sub).exists(), "{sub} under DATA_DIR");
    }
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// The first ```sh block after the line `heading` in `markdown`.
fn sh_block_after(markdown: &str, heading: &str) -> String {
    let after = markdown
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in the README"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no sh block after {heading:?}"))
        .0;
    block.to_owned()
}

/// The README's quick start and sync commands, run by bash exactly as written, except where a test
/// must differ: the server it starts itself (on a free port, so the address is replaced), the
/// built binary for `cargo run --release -p hivesync-server --`, and curl made to fail on an
/// HTTP error (`-s` alone exits 0 on a `400`, which is how the README's own sync command was
/// refused unnoticed).
#[tokio::test]
async fn the_readme_quick_start_and_sync_commands_work_as_written() {
    if Command::new("jq").arg("--version").output().is_err() {
        assert!(
            !testkit::services_required(),
            "the README's commands need jq (.ci/run installs it)"
        );
        println!("skipped: jq is not installed");
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read the README");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[("DATA_DIR", data.path().display().to_string())]);
    let work = tempfile::tempdir().unwrap();
    let my_app = work.path().join("my-app");
    let tar = testkit::examples::tar_of_sources(
        &testkit::examples::example_app("rn-app"),
        &|_, bytes| Some(bytes),
    );
    tar::Archive::new(tar.as_slice()).unpack(&my_app).unwrap();

    let mut script = String::from(
        "set -euo pipefail\ncurl() { command curl --fail-with-body --show-error \"$@\"; }\n",
    );
    for heading in ["## Quick start", "## Project sync"] {
        for line in sh_block_after(&readme, heading).lines() {
            if line.trim_end().ends_with("serve &") {
                continue;
            }
            script.push_str(
                &line
                    .replace("cargo run --release -p hivesync-server --", BINARY)
                    .replace("http://127.0.0.1:8080", &server.base),
            );
            script.push('\n');
        }
    }
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("HIVESYNC_CONFIG_DIR", work.path().join("config"))
        .env("HIVESYNC_PASSWORD", "analytical engine")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README's commands failed ({}):\n{stdout}\n{stderr}\n--- script ---\n{script}",
        output.status
    );
    // The last command reads a file the tar sync committed.
    let app_js = std::fs::read_to_string(my_app.join("src/App.js")).unwrap();
    assert!(
        stdout.trim_end().ends_with(app_js.trim_end()),
        "the synced src/App.js was read back:\n{stdout}"
    );
    server.terminate();
}

/// Asserts the standard error shape.
fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].is_string() && body["details"].is_object(),
        "{body}"
    );
}

#[tokio::test]
async fn errors_over_a_real_socket_and_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("DATA_DIR", data.path().display().to_string()),
        ("MAX_REQUEST_BODY_BYTES", "2048".to_owned()),
    ]);
    let http = reqwest::Client::new();
    let (status, body) = send(http.get(server.url("/api/v1/no-such-route"))).await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = send(http.get(server.url("/api/v1/users/me"))).await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    let (status, body) = send(
        http.get(server.url("/api/v1/users/me"))
            .bearer_auth("forged.jwt.token"),
    )
    .await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    let malformed = http
        .post(server.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ");
    let (status, body) = send(malformed).await;
    assert_error(status, &body, 400, "VALIDATION_ERROR");
    let huge = json!({"email": "a@example.org", "password": "p".repeat(4096)});
    let (status, body) = send(http.post(server.url("/api/v1/auth/register")).json(&huge)).await;
    assert_error(status, &body, 413, "PAYLOAD_TOO_LARGE");
    let status = server.signal("-INT");
    assert!(
        status.success(),
        "Ctrl-C shuts down gracefully, got {status}"
    );
}

#[tokio::test]
async fn data_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let env = [("DATA_DIR", data.path().display().to_string())];
    let email = format!("restart-{}@example.org", testkit::unique_suffix());
    let http = reqwest::Client::new();
    let credentials = json!({"email": email, "password": "persistent pw"});
    let first = Server::start(&env);
    let (status, registered) = send(
        http.post(first.url("/api/v1/auth/register"))
            .json(&credentials),
    )
    .await;
    assert_eq!(status, 201);
    let first_token = registered["access_token"].as_str().unwrap().to_owned();
    assert!(first.terminate().success());

    // The same DATA_DIR: the account and the generated JWT secret are both still there, so a
    // token issued before the restart still works.
    let second = Server::start(&env);
    let (status, _) = send(
        http.post(second.url("/api/v1/auth/login"))
            .json(&credentials),
    )
    .await;
    assert_eq!(status, 200);
    let (status, me) = send(
        http.get(second.url("/api/v1/users/me"))
            .bearer_auth(&first_token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], email.as_str());
}

#[tokio::test]
async fn postgres_and_s3_by_configuration_alone() {
    let test = "postgres_and_s3_by_configuration_alone";
    let Some(admin_url) = testkit::service_env("DATABASE_URL", test) else {
        return;
    };
    let Some(endpoint) = testkit::service_env("OBJECT_STORAGE_ENDPOINT", test) else {
        return;
    };
    let database = testkit::postgres::TestDatabase::create(&admin_url)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("DATA_DIR", data.path().display().to_string()),
        ("DATABASE_URL", database.url().to_owned()),
        (
            "JWT_SECRET",
            format!("jwt-{}-{}", testkit::unique_suffix(), "x".repeat(32)),
        ),
        (
            "PREVIEW_TOKEN_SECRET",
            format!("pt-{}-{}", testkit::unique_suffix(), "y".repeat(32)),
        ),
        ("OBJECT_STORAGE_PROVIDER", "minio".to_owned()),
        ("OBJECT_STORAGE_ENDPOINT", endpoint),
        (
            "OBJECT_STORAGE_PREFIX",
            format!("binary-{}", testkit::unique_suffix()),
        ),
    ];
    for var in [
        "OBJECT_STORAGE_BUCKET_PREVIEWS",
        "OBJECT_STORAGE_ACCESS_KEY",
        "OBJECT_STORAGE_SECRET_KEY",
        "OBJECT_STORAGE_REGION",
    ] {
        if let Ok(value) = std::env::var(var) {
            env.push((var, value));
        }
    }
    let server = Server::start(&env);
    exercise(&server).await;
    let (_, health) = send(reqwest::Client::new().get(server.url("/api/v1/health"))).await;
    assert_eq!(health["components"]["database"]["status"], "up");
    assert_eq!(health["components"]["object_store"]["status"], "up");
    assert!(
        !data.path().join("secrets").exists(),
        "no secrets are generated outside embedded mode"
    );
    assert!(
        !data.path().join("hivesync.db").exists(),
        "SQLite was not used"
    );
    assert!(server.terminate().success());
    database.drop_database().await.unwrap();
}

#[test]
fn invalid_configuration_is_a_startup_error_naming_the_variable() {
    let data = tempfile::tempdir().unwrap();
    let cases = [
        ("PREVIEW_TOKEN_TTL_SECONDS", "soon"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("LOG_LEVEL", "chatty"),
    ];
    for (var, value) in cases {
        let output = Command::new(BINARY)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env_clear()
            .env("DATA_DIR", data.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    // An external database without secrets is refused rather than given generated ones.
    let output = Command::new(BINARY)
        .arg("migrate")
        .env_clear()
        .env("DATA_DIR", data.path())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("JWT_SECRET"));
}

#[test]
fn migrate_applies_and_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let output = Command::new(BINARY)
            .arg("migrate")
            .env_clear()
            .env("DATA_DIR", data.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "migrations applied"
        );
    }
    assert!(data.path().join("hivesync.db").exists());
}

/// Runs a client command of the binary with exactly `env` (plus PATH).
fn client_command(
    args: &[&str],
    env: &[(&str, &Path)],
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    command.output().expect("run hivesync")
}

#[tokio::test]
async fn the_cli_logs_in_and_delta_syncs_a_folder() {
    use std::os::unix::fs::PermissionsExt;

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[("DATA_DIR", data.path().display().to_string())]);
    let http = reqwest::Client::new();
    let email = format!("cli-{}@example.org", testkit::unique_suffix());
    let password = "cli password 123";
    let (status, registered) = send(
        http.post(server.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let (_, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "cli"})),
    )
    .await;
    let project = project["id"].as_str().unwrap().to_owned();

    let home = tempfile::tempdir().unwrap();
    let config_dir = home.path().join("config");
    let cache_dir = home.path().join("cache");
    let env = [
        ("HIVESYNC_CONFIG_DIR", config_dir.as_path()),
        ("XDG_CACHE_HOME", cache_dir.as_path()),
    ];
    let login = client_command(
        &["login", "--url", &server.base, "--email", &email],
        &env,
        &[("HIVESYNC_PASSWORD", password)],
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let stored = config_dir.join("credentials.json");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "credentials are private");
    assert!(!String::from_utf8_lossy(&login.stdout).contains(password));

    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join("node_modules/left-pad")).unwrap();
    std::fs::write(root.join(".gitignore"), "node_modules/\n*.log\n").unwrap();
    std::fs::write(root.join("package.json"), "{\"name\":\"cli\"}\n").unwrap();
    std::fs::write(root.join("src/App.js"), "export default 1;\n").unwrap();
    std::fs::write(root.join("node_modules/left-pad/index.js"), "ignored\n").unwrap();
    std::fs::write(root.join("debug.log"), "ignored\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let folder_arg = root.to_str().unwrap();
    let sync = |message: &str| {
        client_command(
            &[
                "sync",
                folder_arg,
                "--project",
                &project,
                "--message",
                message,
            ],
            &env,
            &[],
        )
    };

    let first = sync("first");
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("sent 4 of 4 files"), "{stdout}");
    let (_, tree) = send(
        http.get(server.url(&format!("/api/v1/projects/{project}/tree")))
            .bearer_auth(&token),
    )
    .await;
    let names: Vec<&str> = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![".gitignore", "package.json", "run.sh", "src"],
        "{tree}"
    );
    assert_eq!(tree["entries"][2]["kind"], "executable");

    std::fs::write(root.join("src/App.js"), "export default 2;\n").unwrap();
    let second = sync("edit");
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(stdout.contains("sent 1 of 4 files"), "{stdout}");
    assert!(stdout.contains("sent src/App.js"), "{stdout}");
    assert!(stdout.contains("0 added, 1 changed, 0 removed"), "{stdout}");

    let third = sync("again");
    let stdout = String::from_utf8_lossy(&third.stdout).into_owned();
    assert!(stdout.contains("sent 0 of 4 files"), "{stdout}");
    assert!(stdout.contains("unchanged"), "{stdout}");

    let (_, file) = send(
        http.get(server.url(&format!("/api/v1/projects/{project}/refs")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(file["items"][0]["name"], "refs/heads/main");

    // Someone else moves the branch: the next sync notices, plans, and commits on top.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "other.txt", &b"other\n"[..])
        .unwrap();
    let (status, theirs) = send(
        http.post(server.url(&format!("/api/v1/projects/{project}/sync")))
            .bearer_auth(&token)
            .header("content-type", "application/x-tar")
            .body(builder.into_inner().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{theirs}");
    std::fs::write(root.join("package.json"), "{\"name\":\"cli2\"}\n").unwrap();
    let refused = sync("after theirs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(stderr.contains("--force"), "{stderr}");
    let forced = client_command(
        &["sync", folder_arg, "--project", &project, "--force"],
        &env,
        &[],
    );
    let stdout = String::from_utf8_lossy(&forced.stdout).into_owned();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(stdout.contains("sent 1 of 4 files"), "{stdout}");
    assert!(stdout.contains("sent package.json"), "{stdout}");
    // On top of their commit, whose file this folder does not have.
    let repo = data.path().join("repos").join(&project);
    let parent = Command::new("git")
        .args(["rev-parse", "main^"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&parent.stdout).trim(),
        theirs["commit"].as_str().unwrap()
    );
    let (_, top) = send(
        http.get(server.url(&format!("/api/v1/projects/{project}/tree")))
            .bearer_auth(&token),
    )
    .await;
    let names: Vec<&str> = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"other.txt"), "{names:?}");

    // A bad token is refused with the server's error, and nothing is synced.
    let refused = client_command(
        &[
            "sync",
            folder_arg,
            "--project",
            &project,
            "--token",
            "forged",
        ],
        &env,
        &[],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNAUTHORIZED"));
}

/// Decodes a QR code drawn by `hivesync preview token` (half blocks, dark modules drawn, black
/// on white by colour codes).
fn decode_terminal_qr(text: &str) -> String {
    let lines: Vec<Vec<char>> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("\x1b[30;107m")?
                .strip_suffix("\x1b[0m")
                .map(|l| l.chars().collect())
        })
        .collect();
    let width = lines[0].len();
    let mut dark = Vec::new();
    for line in &lines {
        let (mut upper, mut lower) = (Vec::new(), Vec::new());
        for c in line {
            let (u, l) = match c {
                ' ' => (false, false),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (true, true),
            };
            upper.push(u);
            lower.push(l);
        }
        dark.push(upper);
        dark.push(lower);
    }
    let scale = 4;
    let height = dark.len();
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width * scale, height * scale, |x, y| {
            if dark[y / scale][x / scale] { 0 } else { 255 }
        });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in:\n{text}");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn the_cli_shows_a_preview_qr_code_and_builds_a_preview() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("DATA_DIR", data.path().display().to_string()),
        // npm keeps its cache under HOME.
        (
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned()),
        ),
    ]);
    let http = reqwest::Client::new();
    let email = format!("preview-{}@example.org", testkit::unique_suffix());
    let password = "preview password 123";
    let (status, registered) = send(
        http.post(server.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let (_, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "rn"})),
    )
    .await;
    let project = project["id"].as_str().unwrap().to_owned();
    let env = [
        ("HIVESYNC_CONFIG_DIR", home.path().join("config")),
        ("XDG_CACHE_HOME", home.path().join("cache")),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let login = client_command(
        &["login", "--url", &server.base, "--email", &email],
        &env,
        &[("HIVESYNC_PASSWORD", password)],
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );

    // The example app's sources, as a developer's folder.
    let folder = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rn-app");
    for entry in std::fs::read_dir(&example).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "node_modules" {
            continue;
        }
        let copied = Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(folder.path())
            .status()
            .unwrap();
        assert!(copied.success());
    }
    let synced = client_command(
        &[
            "sync",
            folder.path().to_str().unwrap(),
            "--project",
            &project,
        ],
        &env,
        &[],
    );
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );

    let shown = client_command(
        &[
            "preview",
            "token",
            "--project",
            &project,
            "--platform",
            "android",
        ],
        &env,
        &[],
    );
    let stdout = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("preview URL: "))
        .unwrap_or_else(|| panic!("no preview URL in {stdout}"));
    assert!(
        url.starts_with(&format!("{}/preview#token=v1.", server.base)),
        "{url}"
    );
    assert_eq!(decode_terminal_qr(&stdout), url, "the QR code is the URL");
    // The page the URL opens.
    let page = http.get(server.url("/preview")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.text().await.unwrap().contains("/preview/preview.js"));

    let out = folder.path().join("android.zip");
    let built = client_command(
        &[
            "preview",
            "build",
            "--project",
            &project,
            "--platform",
            "android",
            "--follow",
            "--out",
            out.to_str().unwrap(),
        ],
        &env,
        &[],
    );
    let stdout = String::from_utf8_lossy(&built.stdout).into_owned();
    assert!(
        built.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        stdout.contains(&format!("bundle: {}", out.display())),
        "{stdout}"
    );
    let zip = std::fs::read(&out).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut metadata = String::new();
    std::io::Read::read_to_string(
        &mut archive.by_name("metadata.json").unwrap(),
        &mut metadata,
    )
    .unwrap();
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata["platform"], "android");
    assert_eq!(metadata["project_id"], project.as_str());
    assert!(archive.by_name("main.jsbundle").unwrap().size() > 10_000);

    // A failure says why and exits non-zero: a platform the server does not know never gets far.
    let refused = client_command(
        &[
            "preview",
            "build",
            "--project",
            &project,
            "--platform",
            "web",
        ],
        &env,
        &[],
    );
    assert!(!refused.status.success());
}

#[tokio::test]
async fn the_cli_documents_a_file_here_and_through_a_server() {
    let folder = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hivesync-ai/tests/fixtures/config.rs");
    let file = folder.path().join("config.rs");
    std::fs::copy(&fixture, &file).unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let file_arg = file.to_str().unwrap();

    // Here: the static analyser, no server, no key.
    let renamed = client_command(&["ai", "rename", file_arg, "--apply"], &[], &[]);
    let stderr = String::from_utf8_lossy(&renamed.stderr);
    assert!(renamed.status.success(), "{stderr}");
    let diff = String::from_utf8_lossy(&renamed.stdout);
    assert!(
        diff.contains("-fn parseValue(rawValue: &str) -> i64 {"),
        "{diff}"
    );
    assert!(
        diff.contains("+fn parse_value(raw_value: &str) -> i64 {"),
        "{diff}"
    );
    assert!(stderr.contains("answered by static"), "{stderr}");
    let edited = std::fs::read_to_string(&file).unwrap();
    assert_ne!(edited, original);
    assert!(edited.contains("fn parse_value(raw_value: &str)"));
    // Every comment of the file is still there.
    for line in original
        .lines()
        .filter(|l| l.trim_start().starts_with("//"))
    {
        assert!(edited.contains(line), "{line}");
    }
    let refused = client_command(&["ai", "summary", "README.md"], &[], &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unsupported language"));

    // Through a server: the file's text goes as an unsaved buffer, a worker answers.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[("DATA_DIR", data.path().display().to_string())]);
    let http = reqwest::Client::new();
    let email = format!("ai-{}@example.org", testkit::unique_suffix());
    let (status, registered) = send(
        http.post(server.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": "ai password 123"})),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let (_, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "ai"})),
    )
    .await;
    let project = project["id"].as_str().unwrap().to_owned();
    let home = tempfile::tempdir().unwrap();
    let summary = client_command(
        &[
            "ai",
            "summary",
            file_arg,
            "--project",
            &project,
            "--url",
            &server.base,
        ],
        &[("HIVESYNC_CONFIG_DIR", home.path())],
        &[("HIVESYNC_TOKEN", &token)],
    );
    let out = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    assert!(out.starts_with("Rust file "), "{out}");
    assert!(
        out.contains("parse_value"),
        "the edited file was sent: {out}"
    );
}
