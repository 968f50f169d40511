//! Several machines: two `hivesync serve` processes and one `hivesync worker`, each with its own
//! `DATA_DIR`, sharing nothing but PostgreSQL, Redis and the S3 test server. A project synced
//! through one server is browsed and delta-synced through the other, built by the worker and
//! downloaded through the first; two servers racing on one branch; a server whose `DATA_DIR` is
//! deleted loses nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hivesync_core::client::Client;
use hivesync_core::client::sync::sync_folder;
use hivesync_core::domain::Platform;
use hivesync_core::testkit;
use hivesync_core::testkit::examples::{example_app, tar_of_sources};
use hivesync_preview::client::{BuildRequest, TokenRequest};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_hivesync");

/// What every process of the deployment shares: the database, Redis, the bucket and the keys.
struct Deployment {
    env: Vec<(&'static str, String)>,
    database: testkit::postgres::TestDatabase,
    root: tempfile::TempDir,
}

impl Deployment {
    async fn new(test: &str) -> Option<Deployment> {
        let admin_url = testkit::service_env("DATABASE_URL", test)?;
        let redis_url = testkit::service_env("REDIS_URL", test)?;
        let endpoint = testkit::service_env("OBJECT_STORAGE_ENDPOINT", test)?;
        let database = testkit::postgres::TestDatabase::create(&admin_url)
            .await
            .unwrap();
        let suffix = testkit::unique_suffix();
        let mut env = vec![
            ("DATABASE_URL", database.url().to_owned()),
            ("REDIS_URL", redis_url),
            ("REDIS_KEY_PREFIX", format!("machines-{suffix}:")),
            ("JWT_SECRET", format!("jwt-{suffix}-{}", "x".repeat(32))),
            (
                "PREVIEW_TOKEN_SECRET",
                format!("pt-{suffix}-{}", "y".repeat(32)),
            ),
            ("OBJECT_STORAGE_PROVIDER", "minio".to_owned()),
            ("OBJECT_STORAGE_ENDPOINT", endpoint),
            ("OBJECT_STORAGE_PREFIX", format!("machines-{suffix}")),
            ("LOG_LEVEL", "warn".to_owned()),
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
        Some(Deployment {
            env,
            database,
            root: tempfile::tempdir().unwrap(),
        })
    }

    /// A machine's own `DATA_DIR`.
    fn data_dir(&self, machine: &str) -> PathBuf {
        self.root.path().join(machine)
    }

    fn command(&self, machine: &str, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", self.data_dir(machine))
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Starts `hivesync serve` on a free port and waits until it listens.
    fn serve(&self, machine: &str) -> Process {
        let mut child = self
            .command(machine, &["serve", "--bind", "127.0.0.1:0"])
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        let base = line
            .trim()
            .strip_prefix("hivesync listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Process { child, base }
    }

    /// Starts `hivesync worker --role cpu` and waits until it has started.
    fn worker(&self, machine: &str) -> Process {
        let mut child = self
            .command(machine, &["worker", "--role", "cpu"])
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        assert!(line.starts_with("hivesync worker "), "{line:?}");
        Process {
            child,
            base: String::new(),
        }
    }
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

struct Process {
    child: Child,
    base: String,
}

impl Process {
    fn api(&self) -> String {
        format!("{}/api/v1", self.base)
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example app's sources, as a developer's folder.
fn folder_of(example: &Path) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "node_modules" {
            continue;
        }
        assert!(
            Command::new("cp")
                .arg("-a")
                .arg(entry.path())
                .arg(folder.path())
                .status()
                .unwrap()
                .success()
        );
    }
    folder
}

async fn get_json(http: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_and_a_worker_share_nothing_but_the_services() {
    let Some(deployment) =
        Deployment::new("two_servers_and_a_worker_share_nothing_but_the_services").await
    else {
        return;
    };
    let a = deployment.serve("a");
    let b = deployment.serve("b");
    let _worker = deployment.worker("worker");
    let http = reqwest::Client::new();

    // An account made through A logs in through B: the keys and records are shared.
    let email = format!("machines-{}@example.org", testkit::unique_suffix());
    let registered: Value = http
        .post(format!("{}/auth/register", a.api()))
        .json(&json!({"email": email, "password": "machines password 1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let via_a = Client::new(&a.base, Some(token.clone())).unwrap();
    let via_b = Client::new(&b.base, Some(token.clone())).unwrap();
    let project: Value = via_b
        .post("/projects", &json!({"name": "machines"}))
        .await
        .unwrap();
    let project_id: uuid::Uuid = project["id"].as_str().unwrap().parse().unwrap();

    // A full sync through A.
    let folder = folder_of(&example_app("rn-app"));
    let stat_cache = deployment.root.path().join("stat-cache.json");
    let first = sync_folder(
        &via_a,
        folder.path(),
        project_id,
        "main",
        None,
        false,
        &stat_cache,
    )
    .await
    .unwrap();
    assert!(first.created);
    assert!(first.files >= 8, "{first:?}");

    // Browsed through B, which has never seen the project.
    let (status, refs) = get_json(
        &http,
        format!("{}/projects/{project_id}/refs", b.api()),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{refs}");
    assert_eq!(refs["items"][0]["commit"], first.commit.as_str());
    let (status, listing) = get_json(
        &http,
        format!("{}/projects/{project_id}/tree?path=src/components", b.api()),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{listing}");
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Counter.js", "Logo.js"]);
    let app_js = http
        .get(format!(
            "{}/projects/{project_id}/files/src/App.js",
            b.api()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(app_js.status(), 200);
    assert_eq!(
        app_js.bytes().await.unwrap(),
        std::fs::read(folder.path().join("src/App.js")).unwrap()
    );

    // A one-file delta sync through B sends that file alone and commits on A's commit.
    let marker = format!("several-machines-{}", testkit::unique_suffix());
    let app_path = folder.path().join("src/App.js");
    let edited = std::fs::read_to_string(&app_path).unwrap().replacen(
        "HiveSync preview",
        &format!("HiveSync preview {marker}"),
        1,
    );
    assert!(edited.contains(&marker), "src/App.js has its title");
    std::fs::write(&app_path, &edited).unwrap();
    let second = sync_folder(
        &via_b,
        folder.path(),
        project_id,
        "main",
        None,
        false,
        &stat_cache,
    )
    .await
    .unwrap();
    assert!(second.created);
    assert_eq!(second.sent, ["src/App.js"]);
    assert_eq!((second.changed, second.added, second.removed), (1, 0, 0));

    // The worker builds it; the bundle downloads through A.
    let issued = hivesync_preview::client::issue_token(
        &via_a,
        &TokenRequest {
            project_id,
            platform: Platform::Android,
            git_ref: None,
        },
    )
    .await
    .unwrap();
    let phone_b = Client::new(&b.base, Some(issued.token.clone())).unwrap();
    let accepted = hivesync_preview::client::request_build(&phone_b, &BuildRequest::default())
        .await
        .unwrap();
    assert_eq!(accepted.commit, second.commit);
    let done = hivesync_preview::client::follow(&phone_b, accepted.job_id, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, "success", "{:?}", done.error);
    let phone_a = Client::new(&a.base, Some(issued.token.clone())).unwrap();
    let zip_path = deployment.root.path().join("android.zip");
    hivesync_preview::client::download(&phone_a, accepted.job_id, &zip_path, None)
        .await
        .unwrap();
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut bundle = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("main.jsbundle").unwrap(), &mut bundle)
        .unwrap();
    assert!(
        bundle.contains(&marker),
        "the worker built the commit synced through B"
    );

    // Two syncs of one branch from one head, through A and through B at once: one wins, the
    // other is 409, and the winner's parent is that head.
    let race = |server: &Process, line: &'static str| {
        let url = format!(
            "{}/projects/{project_id}/sync?branch=main&parent={}",
            server.api(),
            second.commit
        );
        let body = tar_of_sources(folder.path(), &move |path, bytes| {
            Some(if path == "src/App.js" {
                [bytes, line.as_bytes().to_vec()].concat()
            } else {
                bytes
            })
        });
        let request = http
            .post(url)
            .bearer_auth(&token)
            .header("content-type", "application/x-tar")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (through_a, through_b) =
        tokio::join!(race(&a, "\n// through A\n"), race(&b, "\n// through B\n"));
    let mut statuses = [through_a.0, through_b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{through_a:?} {through_b:?}");
    let (winner, loser) = if through_a.0 == 200 {
        (through_a.1, through_b.1)
    } else {
        (through_b.1, through_a.1)
    };
    assert_eq!(loser["code"], "CONFLICT", "{loser}");
    assert_eq!(winner["parent"], second.commit.as_str());
    let (_, refs) = get_json(
        &http,
        format!("{}/projects/{project_id}/refs", a.api()),
        &token,
    )
    .await;
    assert_eq!(refs["items"][0]["commit"], winner["commit"]);

    // A's DATA_DIR deleted: a fresh A on an empty one serves everything as before.
    a.stop();
    std::fs::remove_dir_all(deployment.data_dir("a")).unwrap();
    let a = deployment.serve("a");
    let (status, listing) = get_json(
        &http,
        format!(
            "{}/projects/{project_id}/tree?ref={}",
            a.api(),
            second.commit
        ),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["commit"], second.commit.as_str());
    let file = http
        .get(format!(
            "{}/projects/{project_id}/files/src/App.js?ref={}",
            a.api(),
            second.commit
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.bytes().await.unwrap(), edited.as_bytes());
    let phone_a = Client::new(&a.base, Some(issued.token)).unwrap();
    let again = deployment.root.path().join("again.zip");
    hivesync_preview::client::download(&phone_a, accepted.job_id, &again, None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&zip_path).unwrap()
    );

    a.stop();
    b.stop();
    deployment.database.drop_database().await.unwrap();
}
