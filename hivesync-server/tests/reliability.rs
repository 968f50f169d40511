//! What the real `hivesync` binary does when the machine fails it (docs/RELIABILITY.md names the
//! test behind each promise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hivesync_core::testkit;
use serde_json::{Value, json};

#[path = "common/binary.rs"]
mod binary;

use binary::{Server, send};

/// A small tmpfs of its own, unmounted on drop: a disk the test can fill.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason printed) where mounting is not allowed; under
    /// `HIVESYNC_REQUIRE_SERVICES=1` that is a failure, as CI runs as root.
    fn mount(test: &str, megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            other => {
                let why = format!("cannot mount a tmpfs: {other:?}");
                assert!(!testkit::services_required(), "{test}: {why}");
                eprintln!("skipping {test}: {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with a file (returned), to the last byte the filesystem will take.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 16, 1 << 12, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).and_then(|()| file.flush()).is_ok() {}
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn serve(data: &Path) -> Server {
    Server::start(&[("DATA_DIR", data.display().to_string())])
}

async fn register(server: &Server, http: &reqwest::Client, email: &str) -> (u16, Value) {
    send(
        http.post(server.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": "a long enough password"})),
    )
    .await
}

async fn login(server: &Server, http: &reqwest::Client, email: &str) -> u16 {
    send(
        http.post(server.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": "a long enough password"})),
    )
    .await
    .0
}

/// A write answered while the disk is full is either done and durable, or refused with `503`
/// (never `500`); once space is back the server works again by itself; after a restart every
/// acknowledged write is there.
#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_write_and_the_server_heals() {
    let test = "a_full_disk_loses_no_acknowledged_write_and_the_server_heals";
    let Some(disk) = SmallDisk::mount(test, 24) else {
        return;
    };
    let data = disk.path().join("data");
    let http = reqwest::Client::new();
    let server = serve(&data);
    let owner_email = format!("owner-{}@example.org", testkit::unique_suffix());
    let (status, owner) = register(&server, &http, &owner_email).await;
    assert_eq!(status, 201, "{owner}");
    let token = owner["access_token"].as_str().unwrap().to_owned();

    let filler = disk.fill();
    // Writes that need new pages of the database (a registration, a large preference, a
    // project) until several have been refused.
    let mut registered = Vec::new();
    let mut names = Vec::new();
    let mut projects = Vec::new();
    let mut refused = 0;
    let large = "x".repeat(15 * 1024);
    for round in 0..40 {
        let email = format!("full-{round}-{}@example.org", testkit::unique_suffix());
        let (status, body) = register(&server, &http, &email).await;
        let name = format!("name {round}");
        let (patched, patch_body) = send(
            http.patch(server.url("/api/v1/users/me"))
                .bearer_auth(&token)
                .json(&json!({"display_name": name, "preferences": {"notes": large}})),
        )
        .await;
        let (created, project) = send(
            http.post(server.url("/api/v1/projects"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("p{round}")})),
        )
        .await;
        for (what, status, body) in [
            ("register", status, &body),
            ("patch", patched, &patch_body),
            ("project", created, &project),
        ] {
            assert!(
                (200..300).contains(&status) || status == 503,
                "{what} on a full disk: {status} {body}"
            );
            if status == 503 {
                assert_eq!(body["code"], "UNAVAILABLE", "{body}");
                refused += 1;
            }
        }
        if status == 201 {
            registered.push(email);
        }
        names.push((name, patched == 200));
        if created == 201 {
            projects.push(project["id"].as_str().unwrap().to_owned());
        }
        if refused >= 6 {
            break;
        }
    }
    assert!(refused > 0, "the disk never filled up");

    // Space is back: the server works again without a restart.
    std::fs::remove_file(&filler).unwrap();
    for round in 0..10 {
        let (status, body) = send(
            http.post(server.url("/api/v1/projects"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("after-{round}")})),
        )
        .await;
        assert_eq!(status, 201, "after space came back: {body}");
        projects.push(body["id"].as_str().unwrap().to_owned());
    }

    // Every acknowledged write survives a restart.
    assert!(server.terminate().success());
    let server = serve(&data);
    for email in &registered {
        assert_eq!(login(&server, &http, email).await, 200, "{email} was lost");
    }
    let (status, me) = send(http.get(server.url("/api/v1/users/me")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{me}");
    let last_acknowledged = names.iter().rposition(|(_, done)| *done);
    if let Some(last) = last_acknowledged {
        // The last acknowledged name, or one attempted after it whose answer was a refusal.
        let possible: Vec<&str> = names[last..].iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            possible.contains(&me["display_name"].as_str().unwrap()),
            "{me} is none of {possible:?}"
        );
    }
    let (status, listed) = send(
        http.get(server.url("/api/v1/projects?limit=200"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    for id in &projects {
        assert!(listed.contains(&id.as_str()), "project {id} was lost");
    }
}

/// The processes running under `data` (their working directory or command line inside it).
fn processes_in(data: &Path) -> Vec<String> {
    let data = data.canonicalize().unwrap();
    let data = data.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cwd.to_string_lossy().starts_with(&data) || cmdline.contains(&data) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Staging directories anywhere under `dir`.
fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(".staging-") {
                found.push(path);
            } else if entry.file_type().is_ok_and(|t| t.is_dir())
                && !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("node_modules")
            {
                pending.push(path);
            }
        }
    }
    found
}

/// A worker killed with SIGKILL while a build's dependency install runs takes the install with
/// it (unsandboxed, where nothing else would), and the next install removes what it left.
#[tokio::test]
async fn a_killed_worker_leaves_no_build_process_and_no_staging_behind() {
    use hivesync_core::testkit::examples::{example_app, tar_of_sources};
    let data = tempfile::tempdir().unwrap();
    let env = || {
        vec![
            ("DATA_DIR", data.path().display().to_string()),
            (
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned()),
            ),
            ("PREVIEW_SANDBOX", "none".to_owned()),
        ]
    };
    let http = reqwest::Client::new();
    let server = Server::start(&env());
    let email = format!("killed-{}@example.org", testkit::unique_suffix());
    let (status, owner) = register(&server, &http, &email).await;
    assert_eq!(status, 201, "{owner}");
    let owner = owner["access_token"].as_str().unwrap().to_owned();
    let (_, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&owner)
            .json(&json!({"name": "killed"})),
    )
    .await;
    let project = project["id"].as_str().unwrap().to_owned();
    let synced = http
        .post(server.url(&format!("/api/v1/projects/{project}/sync")))
        .bearer_auth(&owner)
        .header("content-type", "application/x-tar")
        .body(tar_of_sources(&example_app("rn-app"), &|_, bytes| {
            Some(bytes)
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(synced.status(), 200);
    let token = |server: &Server| {
        let request = http
            .post(server.url("/api/v1/preview/token"))
            .bearer_auth(&owner)
            .json(&json!({"project_id": project, "platform": "android"}));
        async move {
            let (status, body) = send(request).await;
            assert_eq!(status, 200, "{body}");
            body["token"].as_str().unwrap().to_owned()
        }
    };
    let preview = token(&server).await;
    let (status, accepted) = send(
        http.post(server.url("/api/v1/preview/build"))
            .bearer_auth(&preview)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");

    // Once a step runs in the data directory, the worker (in-process with this server) dies.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while processes_in(data.path()).is_empty() {
        assert!(std::time::Instant::now() < until, "no build step started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let running = processes_in(data.path());
    server.signal("-KILL");
    // The supervisor looks once a second; the install itself would run on for much longer.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut left = processes_in(data.path());
    while !left.is_empty() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = processes_in(data.path());
    }
    assert!(
        left.is_empty(),
        "build processes outlived their worker: {left:#?} (running when it was killed: \
         {running:#?})"
    );
    assert!(
        !staging_dirs(data.path()).is_empty(),
        "the killed install left no staging directory (did it reach the install?)"
    );

    // The next install of the same dependencies removes what the dead one left.
    let server = Server::start(&env());
    let preview = token(&server).await;
    let (status, accepted) = send(
        http.post(server.url("/api/v1/preview/build"))
            .bearer_auth(&preview)
            .json(&json!({"env": {"EXPO_PUBLIC_AFTER": "restart"}})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["job_id"].as_str().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let done = loop {
        let (status, body) = send(
            http.get(server.url(&format!("/api/v1/preview/status/{job}")))
                .bearer_auth(&preview),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if ["success", "failed", "cancelled"].contains(&body["status"].as_str().unwrap_or("")) {
            break body;
        }
        assert!(std::time::Instant::now() < until, "stuck: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(staging_dirs(data.path()), Vec::<PathBuf>::new());
}

/// An upload refused before the server read it (here: by someone who may not write to the
/// project) is answered: the client sends all of it (and then shuts its sending side, as some
/// clients do) and reads the standard error, instead of a connection reset in the middle of
/// sending or no answer at all.
#[tokio::test]
async fn a_refused_upload_is_answered_not_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path());
    let http = reqwest::Client::new();
    let (_, owner) = register(
        &server,
        &http,
        &format!("up-{}@example.org", testkit::unique_suffix()),
    )
    .await;
    let (_, stranger) = register(
        &server,
        &http,
        &format!("st-{}@example.org", testkit::unique_suffix()),
    )
    .await;
    let (_, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(owner["access_token"].as_str().unwrap())
            .json(&json!({"name": "uploads"})),
    )
    .await;
    let body = vec![7u8; 4 << 20];
    let address = server.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /api/v1/projects/{}/sync HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        project["id"].as_str().unwrap(),
        stranger["access_token"].as_str().unwrap(),
        body.len()
    );
    let sending = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        writer.flush().await
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        reader.read_to_end(&mut answer),
    )
    .await
    .expect("the server answered within a minute");
    let sent = sending.await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        sent.is_ok(),
        "the upload was cut: {sent:?}; answer: {answer}"
    );
    assert!(read.is_ok(), "the answer was cut: {read:?}");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(r#""code":"NOT_FOUND""#), "{answer}");
}

/// A `DATA_DIR` that became read-only (a remounted disk) stops the server at start-up with a
/// message naming the directory and why, not SQLite's "unable to open database file".
#[tokio::test]
async fn a_read_only_data_dir_is_named_at_start_up() {
    let test = "a_read_only_data_dir_is_named_at_start_up";
    let Some(disk) = SmallDisk::mount(test, 8) else {
        return;
    };
    let data = disk.path().join("data");
    assert!(serve(&data).terminate().success());
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(remounted.success());
    let out = Command::new(binary::BINARY)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", &data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(!stderr.contains("unable to open database file"), "{stderr}");
}
