//! `hivesync ai summary|comment|rename <file>`: AI documentation from a terminal.
//!
//! With `--project`, the server answers (through its workers and its provider chain): the local
//! file's text is sent as an unsaved buffer, or with `--ref` the server reads the file at that
//! revision. Without `--project`, the chain this environment configures runs here (the static
//! analyser at least, so it works offline). `--apply` writes the edits into the local file, only
//! if it is still exactly the content they were computed on.

use std::path::{Path, PathBuf};

use hivesync_ai::client::{self as ai, AiAsk};
use hivesync_ai::{AiOutcome, edits};
use hivesync_core::client::usage_error;
use hivesync_core::config::Config;
use hivesync_core::ports::{AiTask, Language};
use hivesync_core::{Error, ErrorKind, Result};

use crate::client::ServerArgs;

/// What `hivesync ai` was asked.
#[derive(Debug, Clone)]
pub struct AiCommand {
    pub task: AiTask,
    pub file: PathBuf,
    pub project: Option<uuid::Uuid>,
    pub git_ref: Option<String>,
    pub language: Option<String>,
    pub apply: bool,
    pub json: bool,
}

/// Runs the command and prints the answer.
pub async fn run(args: ServerArgs, command: AiCommand) -> Result<()> {
    let path = if command.git_ref.is_some() {
        // A path in the project, not on this disk.
        command
            .file
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned()
    } else {
        repo_path(&command.file)
    };
    let local = || {
        std::fs::read(&command.file)
            .map_err(|err| usage_error(format!("cannot read {}: {err}", command.file.display())))
    };
    let outcome = match command.project {
        None => {
            if command.git_ref.is_some() {
                return Err(usage_error(
                    "--ref needs --project: only a server has revisions",
                ));
            }
            let language = match &command.language {
                Some(name) => Language::parse(name)?,
                None => Language::from_path(&path)?,
            };
            let content = String::from_utf8(local()?).map_err(|_| {
                usage_error(format!("{} is not UTF-8 text", command.file.display()))
            })?;
            let config = Config::from_env()?;
            hivesync_ai::providers::chain(&config, hivesync_ai::providers::ChainFor::Cpu)?
                .run(command.task, language, &path, &content)
                .await?
        }
        Some(project) => {
            let client = args.client()?;
            let content = match &command.git_ref {
                Some(_) => None,
                None => Some(String::from_utf8(local()?).map_err(|_| {
                    usage_error(format!("{} is not UTF-8 text", command.file.display()))
                })?),
            };
            let ask = AiAsk {
                project_id: project,
                path: path.clone(),
                git_ref: command.git_ref.clone(),
                content,
                language: command.language.clone(),
            };
            let accepted = ai::ask(&client, command.task, &ask).await?;
            let done = ai::follow(&client, accepted.job_id).await?;
            match (done.result, done.error) {
                (Some(outcome), _) => outcome,
                (None, Some(error)) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("the AI job failed: {} ({})", error.message, error.code),
                    ));
                }
                (None, None) => {
                    return Err(Error::internal(format!(
                        "the AI job ended {} without an answer",
                        done.state
                    )));
                }
            }
        }
    };
    print(&outcome, command.json)?;
    if command.apply {
        apply(&command.file, &outcome)?;
    }
    Ok(())
}

/// A local file's name in the project: its path from the current folder when it is inside it,
/// else its file name (a project path is relative and never leaves the tree).
fn repo_path(file: &Path) -> String {
    let inside = std::env::current_dir()
        .and_then(|cwd| cwd.canonicalize())
        .ok()
        .zip(file.canonicalize().ok())
        .and_then(|(cwd, file)| file.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    let path = inside.unwrap_or_else(|| PathBuf::from(file.file_name().unwrap_or_default()));
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn print(outcome: &AiOutcome, json: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(outcome)
            .map_err(|err| Error::internal("cannot print the answer").with_source(err))?;
        println!("{text}");
        return Ok(());
    }
    eprintln!(
        "answered by {} ({}){}",
        outcome.provider,
        outcome.model,
        if outcome.redactions > 0 {
            format!(
                "; {} secrets redacted before it saw the file",
                outcome.redactions
            )
        } else {
            String::new()
        }
    );
    for attempt in outcome.attempts.iter().filter(|a| a.reason.is_some()) {
        eprintln!(
            "  {} {:?}: {}",
            attempt.provider,
            attempt.outcome,
            attempt.reason.as_deref().unwrap_or_default()
        );
    }
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(summary) = &outcome.summary {
        println!("{}", summary.text);
        for symbol in &summary.symbols {
            println!(
                "  {:<10} {} (lines {}-{})",
                symbol.kind, symbol.name, symbol.line, symbol.end_line
            );
        }
    } else if outcome.diff.is_empty() {
        println!("no changes suggested");
    } else {
        print!("{}", outcome.diff);
    }
    Ok(())
}

/// Writes the edits into `file`, if it still has the content they were computed on; through a
/// file beside it renamed into place, so a crash leaves the old file or the new one.
fn apply(file: &Path, outcome: &AiOutcome) -> Result<()> {
    if outcome.edits.is_empty() {
        return Ok(());
    }
    let bytes = std::fs::read(file)
        .map_err(|err| usage_error(format!("cannot read {}: {err}", file.display())))?;
    if hivesync_core::repo::blob_id(&bytes)? != outcome.blob_id {
        return Err(Error::conflict(format!(
            "{} is not the content the edits were computed on (blob {}); nothing was written",
            file.display(),
            outcome.blob_id
        )));
    }
    let original = String::from_utf8(bytes)
        .map_err(|_| usage_error(format!("{} is not UTF-8 text", file.display())))?;
    let edited = edits::apply(&original, &outcome.edits);
    let staging = file.with_file_name(format!(
        ".{}.hivesync-{}",
        file.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        std::fs::write(&staging, edited.as_bytes())?;
        if let Ok(meta) = std::fs::metadata(file) {
            std::fs::set_permissions(&staging, meta.permissions())?;
        }
        std::fs::rename(&staging, file)
    };
    write().map_err(|err| {
        let _ = std::fs::remove_file(&staging);
        Error::internal(format!("cannot write {}: {err}", file.display()))
    })?;
    eprintln!(
        "applied {} edits to {}",
        outcome.edits.len(),
        file.display()
    );
    Ok(())
}
