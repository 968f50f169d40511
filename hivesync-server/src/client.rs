//! The client commands of `hivesync`: `login` and `sync`, printed for a terminal. The work is in
//! the client library ([`hivesync_core::client`]); this is the command line around it.
//!
//! The server and credentials come from `--url`/`--token`, then `HIVESYNC_URL`/`HIVESYNC_TOKEN`,
//! then what `hivesync login` stored (see [`hivesync_core::client::credentials`]).

use std::io::BufRead;
use std::path::PathBuf;

use clap::Args;
use hivesync_core::Result;
use hivesync_core::client::credentials::{self, Credentials};
use hivesync_core::client::sync::{default_cache_file, sync_folder};
use hivesync_core::client::{Client, usage_error};

/// Where a client command finds the server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server, e.g. `https://hivesync.example.com`.
    #[arg(long, env = "HIVESYNC_URL")]
    pub url: Option<String>,
    /// An access token (from `POST /auth/login`).
    #[arg(long, env = "HIVESYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    /// The client these arguments name, falling back to the stored login.
    pub fn client(&self) -> Result<Client> {
        Client::resolve(self.url.as_deref(), self.token.as_deref())
    }
}

/// `hivesync login`: stores the server and a token for later commands. With `--token` the token
/// is checked and stored; otherwise it logs in with `--email` and the password from
/// `HIVESYNC_PASSWORD`, a prompt, or the first line of standard input.
pub async fn login(args: ServerArgs, email: Option<String>) -> Result<()> {
    let url = args
        .url
        .clone()
        .ok_or_else(|| usage_error("pass --url (or set HIVESYNC_URL) to name the server"))?;
    let token = match (args.token.clone(), email) {
        (Some(token), _) => token,
        (None, Some(email)) => {
            let password = match std::env::var("HIVESYNC_PASSWORD") {
                Ok(password) if !password.is_empty() => password,
                _ if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                    rpassword::prompt_password(format!("password for {email}: "))?
                }
                _ => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            Client::new(&url, None)?.login(&email, &password).await?
        }
        (None, None) => {
            return Err(usage_error(
                "pass --email to log in, or --token to store a token",
            ));
        }
    };
    let me = Client::new(&url, Some(token.clone()))?.me().await?;
    let path = credentials::store(&Credentials {
        url: url.trim_end_matches('/').to_owned(),
        token,
    })?;
    println!(
        "logged in to {url} as {}; credentials stored in {}",
        me.email,
        path.display()
    );
    Ok(())
}

/// `hivesync sync <dir> --project <id>`: a delta sync ([`sync_folder`]), printing what it sent.
pub async fn sync(
    args: ServerArgs,
    dir: PathBuf,
    project: uuid::Uuid,
    branch: String,
    message: Option<String>,
    force: bool,
) -> Result<()> {
    let client = args.client()?;
    let cache_file = default_cache_file(&dir)?;
    let report = sync_folder(
        &client,
        &dir,
        project,
        &branch,
        message.as_deref(),
        force,
        &cache_file,
    )
    .await?;
    for path in report.sent.iter().take(50) {
        println!("  sent {path}");
    }
    if report.sent.len() > 50 {
        println!("  … and {} more", report.sent.len() - 50);
    }
    println!(
        "sent {} of {} files ({} bytes)",
        report.sent.len(),
        report.files,
        report.sent_bytes
    );
    if report.created {
        println!(
            "{} is now {}: {} added, {} changed, {} removed",
            report.branch, report.commit, report.added, report.changed, report.removed
        );
    } else {
        println!(
            "{} is unchanged at {}: the tree is identical",
            report.branch, report.commit
        );
    }
    Ok(())
}
