//! `hivesync preview token` and `hivesync preview build`: the preview flow from a terminal, as a
//! desktop client and a phone would run it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use hivesync_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use crate::client::{Client, ServerArgs, client_error};

/// How often `--follow` asks for the status.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What to preview.
#[derive(Debug, Clone)]
pub struct Target {
    pub project: uuid::Uuid,
    pub platform: String,
    pub git_ref: Option<String>,
}

async fn issue_token(client: &Client, target: &Target) -> Result<Value> {
    let mut body = json!({"project_id": target.project, "platform": target.platform});
    if let Some(git_ref) = &target.git_ref {
        body["ref"] = json!(git_ref);
    }
    client
        .send(
            client
                .http
                .post(format!("{}/preview/token", client.base))
                .json(&body),
        )
        .await
}

/// `hivesync preview token`: prints the token, its expiry, the preview URL and a QR code of it.
pub async fn token(args: ServerArgs, target: Target) -> Result<()> {
    let client = Client::resolve(&args)?;
    let issued = issue_token(&client, &target).await?;
    let field = |name: &str| issued[name].as_str().unwrap_or_default().to_owned();
    let url = field("preview_url");
    let qr = crate::qr::terminal(&url)
        .map_err(|err| Error::internal("cannot draw the QR code").with_context("cause", err))?;
    println!("{qr}");
    println!("preview URL: {url}");
    println!("token:       {}", field("token"));
    println!("expires at:  {}", field("expires_at"));
    Ok(())
}

/// Options of `hivesync preview build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `NAME=value` pairs, `EXPO_PUBLIC_*` only (the server checks).
    pub env: Vec<String>,
    /// The app's folder in a monorepo.
    pub app: Option<String>,
    /// Wait for the build and download the bundle.
    pub follow: bool,
    /// Where the bundle goes (default `preview-<job>.zip` in the current directory).
    pub out: Option<PathBuf>,
}

/// `hivesync preview build`: asks for a preview token, requests a build with it, and with
/// `--follow` shows progress until the build is done, then downloads the bundle and prints its
/// path. A failed build prints its error and the end of its log, and exits non-zero.
pub async fn build(args: ServerArgs, target: Target, options: BuildOptions) -> Result<()> {
    let member = Client::resolve(&args)?;
    let env: BTreeMap<String, String> = options
        .env
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| client_error(format!("--env {pair:?}: expected NAME=value")))
        })
        .collect::<Result<_>>()?;
    let issued = issue_token(&member, &target).await?;
    let preview_token = issued["token"].as_str().unwrap_or_default().to_owned();
    // From here on the phone's view: the preview token alone.
    let phone = Client {
        http: member.http.clone(),
        base: member.base.clone(),
        token: Some(preview_token),
    };
    let accepted = phone
        .send(
            phone
                .http
                .post(format!("{}/preview/build", phone.base))
                .json(&match &options.app {
                    Some(app) => json!({"env": env, "app": app}),
                    None => json!({"env": env}),
                }),
        )
        .await?;
    let job = accepted["job_id"].as_str().unwrap_or_default().to_owned();
    let how = if accepted["cached"] == true {
        " (identical to an earlier build: reused)"
    } else if accepted["shared"] == true {
        " (joined an identical build in progress)"
    } else {
        ""
    };
    println!(
        "build {job} of {}: {}{how}",
        accepted["commit"].as_str().unwrap_or("?"),
        accepted["status"].as_str().unwrap_or("?")
    );
    if !options.follow {
        return Ok(());
    }

    // Following and downloading use the member's own token: a preview token may expire during
    // a long queue wait and build (PREVIEW_TOKEN_TTL_SECONDS).
    let status = follow(&member, &job).await?;
    if status["status"] != "success" {
        let log_text = fetch_text(&member, &format!("/preview/logs/{job}"))
            .await
            .unwrap_or_default();
        let tail: Vec<&str> = log_text.lines().rev().take(30).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        return Err(Error::new(
            ErrorKind::Validation,
            format!(
                "{}: {}",
                status["error"]["code"].as_str().unwrap_or("FAILED"),
                status["error"]["message"]
                    .as_str()
                    .unwrap_or("the build failed")
            ),
        ));
    }
    let out = options
        .out
        .unwrap_or_else(|| PathBuf::from(format!("preview-{job}.zip")));
    let bytes = download(&member, &job, &out).await?;
    println!(
        "bundle: {} ({bytes} bytes, sha256 {})",
        out.display(),
        status["sha256"].as_str().unwrap_or("?")
    );
    if let Some(runtime) = describe_runtime(&status["runtime"]) {
        println!("runtime: {runtime}");
    }
    for warning in status["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", warning.as_str().unwrap_or_default());
    }
    Ok(())
}

/// The runtime a bundle needs, in one line: what the app that opens it must have.
fn describe_runtime(runtime: &Value) -> Option<String> {
    let fingerprint = runtime["fingerprint"].as_str()?;
    let mut parts = Vec::new();
    for (key, label) in [
        ("react_native", "react-native"),
        ("expo_sdk", "expo-sdk"),
        ("hermes_bytecode", "hermes-bytecode"),
    ] {
        match &runtime[key] {
            Value::String(v) => parts.push(format!("{label} {v}")),
            Value::Number(v) => parts.push(format!("{label} {v}")),
            _ => {}
        }
    }
    let modules: Vec<String> = runtime["native_modules"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, v)| format!("{name}@{}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    parts.push(if modules.is_empty() {
        "no native modules".to_owned()
    } else {
        format!("native modules {}", modules.join(", "))
    });
    Some(format!("{} (fingerprint {fingerprint})", parts.join(", ")))
}

/// Polls the status, drawing a progress bar on standard error, until the build is finished.
async fn follow(client: &Client, job: &str) -> Result<Value> {
    let mut stderr = std::io::stderr();
    loop {
        let status = client
            .send(
                client
                    .http
                    .get(format!("{}/preview/status/{job}", client.base)),
            )
            .await?;
        let progress = status["progress"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
        let filled = (progress * 30.0).round() as usize;
        let _ = write!(
            stderr,
            "\r[{}{}] {:>3.0}% {:<12}",
            "#".repeat(filled),
            "-".repeat(30 - filled),
            progress * 100.0,
            status["phase"]
                .as_str()
                .or(status["status"].as_str())
                .unwrap_or("")
        );
        let _ = stderr.flush();
        if matches!(
            status["status"].as_str(),
            Some("success" | "failed" | "cancelled")
        ) {
            let _ = writeln!(stderr);
            return Ok(status);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `GET {base}{path}` with the client's token, for answers that are not JSON.
async fn get(client: &Client, path: &str) -> Result<reqwest::Response> {
    let mut request = client.http.get(format!("{}{path}", client.base));
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .map_err(|err| Error::unavailable(format!("cannot reach the server: {err}")))
}

async fn fetch_text(client: &Client, path: &str) -> Result<String> {
    get(client, path)
        .await?
        .text()
        .await
        .map_err(|err| Error::unavailable(format!("cannot read the answer: {err}")))
}

/// Downloads the bundle into `out` (written beside it, then renamed in).
async fn download(client: &Client, job: &str, out: &std::path::Path) -> Result<u64> {
    let response = get(client, &format!("/preview/download/{job}")).await?;
    if !response.status().is_success() {
        return Err(client_error(format!(
            "the download was refused: {}",
            response.status()
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|err| Error::unavailable(format!("the download failed: {err}")))?;
    let staging = out.with_extension("zip.part");
    std::fs::write(&staging, &bytes)?;
    std::fs::rename(&staging, out)?;
    Ok(bytes.len() as u64)
}
