//! `hivesync preview token` and `hivesync preview build`: the preview flow from a terminal, as a
//! desktop client and a phone would run it. The requests are the client library's
//! ([`hivesync_preview::client`]); this prints them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use hivesync_core::client::usage_error;
use hivesync_core::domain::{JobState, Platform};
use hivesync_core::{Error, ErrorKind, Result};
use hivesync_preview::client::{self as preview, BuildRequest, PreviewStatus, TokenRequest};

use crate::client::ServerArgs;

/// What to preview.
#[derive(Debug, Clone)]
pub struct Target {
    pub project: uuid::Uuid,
    pub platform: String,
    pub git_ref: Option<String>,
}

impl Target {
    fn token_request(&self) -> Result<TokenRequest> {
        Ok(TokenRequest {
            project_id: self.project,
            platform: self.platform.parse::<Platform>()?,
            git_ref: self.git_ref.clone(),
        })
    }
}

/// `hivesync preview token`: prints the token, its expiry, the preview URL and a QR code of it.
pub async fn token(args: ServerArgs, target: Target) -> Result<()> {
    let client = args.client()?;
    let issued = preview::issue_token(&client, &target.token_request()?).await?;
    let qr = crate::qr::terminal(&issued.preview_url)
        .map_err(|err| Error::internal("cannot draw the QR code").with_context("cause", err))?;
    println!("{qr}");
    println!("preview URL: {}", issued.preview_url);
    println!("token:       {}", issued.token);
    println!(
        "expires at:  {}",
        issued
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
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
    let member = args.client()?;
    let env: BTreeMap<String, String> = options
        .env
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| usage_error(format!("--env {pair:?}: expected NAME=value")))
        })
        .collect::<Result<_>>()?;
    let issued = preview::issue_token(&member, &target.token_request()?).await?;
    // From here on the phone's view: the preview token alone.
    let phone = member.with_token(issued.token);
    let accepted = preview::request_build(
        &phone,
        &BuildRequest {
            git_ref: None,
            env,
            app: options.app.clone(),
        },
    )
    .await?;
    let job = accepted.job_id;
    let how = if accepted.cached {
        " (identical to an earlier build: reused)"
    } else if accepted.shared {
        " (joined an identical build in progress)"
    } else {
        ""
    };
    println!(
        "build {job} of {}: {}{how}",
        accepted.commit, accepted.status
    );
    if !options.follow {
        return Ok(());
    }

    // Following and downloading use the member's own token: a preview token may expire during
    // a long queue wait and build (PREVIEW_TOKEN_TTL_SECONDS).
    let mut stderr = std::io::stderr();
    let status = preview::follow(&member, job, |status| draw_progress(&mut stderr, status)).await?;
    let _ = writeln!(stderr);
    if status.state() != Some(JobState::Success) {
        let log_text = preview::log(&member, job).await.unwrap_or_default();
        let tail: Vec<&str> = log_text.lines().rev().take(30).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        let (code, message) = status.error.map_or_else(
            || ("FAILED".to_owned(), "the build failed".to_owned()),
            |e| (e.code, e.message),
        );
        return Err(Error::new(
            ErrorKind::Validation,
            format!("{code}: {message}"),
        ));
    }
    let out = options
        .out
        .unwrap_or_else(|| PathBuf::from(format!("preview-{job}.zip")));
    let bytes = preview::download(&member, job, &out, None).await?;
    println!(
        "bundle: {} ({bytes} bytes, sha256 {})",
        out.display(),
        status.sha256.as_deref().unwrap_or("?")
    );
    if let Some(runtime) = &status.runtime {
        println!("runtime: {}", runtime.describe());
    }
    for warning in &status.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// A progress bar on one line of standard error.
fn draw_progress(stderr: &mut std::io::Stderr, status: &PreviewStatus) {
    let progress = status.progress.clamp(0.0, 1.0);
    let filled = (progress * 30.0).round() as usize;
    let _ = write!(
        stderr,
        "\r[{}{}] {:>3.0}% {:<12}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        progress * 100.0,
        status.phase.as_deref().unwrap_or(&status.status)
    );
    let _ = stderr.flush();
}
