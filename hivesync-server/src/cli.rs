//! The `hivesync` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hivesync_core::clock::system_clock;
use hivesync_core::config::{self, Config, SigningKeys};
use hivesync_core::domain::{Email, JobState, JobUpdate};
use hivesync_core::ports::{AiTask, Queue, WorkerRole};
use hivesync_core::{Error, ErrorKind, Result};
use hivesync_queue::backends::Backends;
use hivesync_queue::jobs::{JobRecord, Submission, submit};
use hivesync_queue::worker::{Ping, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::client::{self, ServerArgs};
use crate::http::health::{self, ComponentStatus, DetailedHealth, OverallStatus};
use crate::http::serve;
use crate::runtime;
use crate::state::AppState;

#[derive(Debug, Parser)]
#[command(
    name = "hivesync",
    version,
    about = "HiveSync: preview React Native / Expo apps on phones and document code with AI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server (applies migrations first). On the embedded defaults (no REDIS_URL) it
    /// also runs the workers.
    Serve {
        /// Address to listen on; overrides HIVESYNC_BIND. Port 0 picks a free port.
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Do not run workers in this process, even without Redis.
        #[arg(long)]
        no_workers: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Run a worker: take jobs from queues until SIGTERM or Ctrl-C.
    Worker {
        /// cpu (previews, AI, system events), gpu (local models) or cleanup.
        #[arg(long, value_parser = parse_role)]
        role: WorkerRole,
        /// Comma-separated queues instead of the role's defaults.
        #[arg(long, value_delimiter = ',', value_parser = parse_queue)]
        queues: Option<Vec<Queue>>,
        /// Jobs at once (CPU workers only; default WORKER_CONCURRENCY).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Lease length in seconds, overriding each queue's (renewed every third of it).
        #[arg(long)]
        lease_seconds: Option<u64>,
        /// Serve this worker's /metrics on this address.
        #[arg(long)]
        metrics_bind: Option<SocketAddr>,
        /// After SIGTERM, how long running jobs may take before they are given back (default 30).
        #[arg(long)]
        grace_seconds: Option<u64>,
        /// A stable id for this worker (default: host, process and a random suffix). A worker
        /// restarted under the same id takes back at once the jobs its previous run held; two
        /// running workers must never share one.
        #[arg(long, env = "WORKER_ID")]
        id: Option<String>,
        /// How often the worker reports to the registry, in milliseconds (default 5000); three
        /// missed reports and its jobs are given to other workers.
        #[arg(long)]
        heartbeat_ms: Option<u64>,
    },
    /// Administer accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Queue operations.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Check every component; exits non-zero when one is down.
    Health {
        /// JSON for machines instead of text for people (`-json` works too).
        #[arg(long)]
        json: bool,
    },
    /// Remove expired previews, stale temp files, orphaned objects; rotate logs.
    Cleanup {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Store a server and an access token for the client commands.
    Login {
        #[command(flatten)]
        server: ServerArgs,
        /// Log in as this account (password from HIVESYNC_PASSWORD or standard input).
        #[arg(long)]
        email: Option<String>,
    },
    /// Document a file with AI: a summary, doc comments or rename suggestions (printed as a
    /// diff; --apply writes them). With --project the server answers; without, this machine.
    Ai {
        #[command(subcommand)]
        command: AiSubcommand,
    },
    /// Preview a project on a phone: preview tokens (with a QR code) and builds.
    Preview {
        #[command(subcommand)]
        command: PreviewCommand,
    },
    /// Send a local folder to a project: a delta sync that uploads only what the server lacks
    /// (files ignored by .gitignore are left out).
    Sync {
        /// The folder to sync.
        dir: std::path::PathBuf,
        /// The project's id.
        #[arg(long)]
        project: uuid::Uuid,
        /// The branch to commit to.
        #[arg(long, default_value = "main")]
        branch: String,
        /// The commit message.
        #[arg(long)]
        message: Option<String>,
        /// Commit even when the branch moved since this folder's last sync (on top of it).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// What `hivesync ai` documents.
#[derive(Debug, Clone, clap::Args)]
pub struct AiTarget {
    /// The file (with --project and no --ref: sent as it is on disk; with --ref: its path in the
    /// project).
    file: std::path::PathBuf,
    /// The project's id: the server answers. Without it, the chain configured here does.
    #[arg(long)]
    project: Option<uuid::Uuid>,
    /// Read the file from the project's repository at this branch, tag or commit.
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// `rust`, `python`, `javascript`, `typescript` or `tsx` (default: from the extension).
    #[arg(long)]
    language: Option<String>,
    /// Print the whole answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum AiSubcommand {
    /// Summarise a file.
    Summary {
        #[command(flatten)]
        target: AiTarget,
    },
    /// Suggest doc comments for undocumented definitions (a diff).
    Comment {
        #[command(flatten)]
        target: AiTarget,
        /// Write the comments into the file.
        #[arg(long)]
        apply: bool,
    },
    /// Suggest renames of badly named identifiers (a diff).
    Rename {
        #[command(flatten)]
        target: AiTarget,
        /// Write the renames into the file.
        #[arg(long)]
        apply: bool,
    },
}

/// What to preview.
#[derive(Debug, Clone, clap::Args)]
pub struct PreviewTarget {
    /// The project's id.
    #[arg(long)]
    project: uuid::Uuid,
    /// `ios` or `android`.
    #[arg(long, value_parser = ["ios", "android"])]
    platform: String,
    /// A branch, tag or commit id (default: `main`).
    #[arg(long = "ref")]
    git_ref: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PreviewCommand {
    /// Create a preview token and show it as a QR code for a phone to scan.
    Token {
        #[command(flatten)]
        target: PreviewTarget,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Build a preview with a fresh preview token; with --follow, wait for it and download it.
    Build {
        #[command(flatten)]
        target: PreviewTarget,
        /// A build variable, `EXPO_PUBLIC_NAME=value` (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// The app's folder in a monorepo (default: the top, or the workspace's one app).
        #[arg(long)]
        app: Option<String>,
        /// Show progress until the build is done, then download the bundle.
        #[arg(long)]
        follow: bool,
        /// Where to save the bundle (default: preview-<job>.zip).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make an account an admin.
    Grant { email: String },
    /// Take admin rights away.
    Revoke { email: String },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Enqueue a ping on system_events and wait for a worker to answer.
    Ping {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Ask the worker to hold the job this many milliseconds before answering.
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
    },
}

fn parse_role(s: &str) -> std::result::Result<WorkerRole, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_queue(s: &str) -> std::result::Result<Queue, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// Parses the process's arguments, accepting the spec's single-dash `-json` as `--json`.
pub fn parse_args() -> Cli {
    let args = std::env::args_os().map(|arg| if arg == "-json" { "--json".into() } else { arg });
    Cli::parse_from(args)
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    // Client commands talk to a server; only the others read (and may create) DATA_DIR.
    let server_config = || -> Result<Config> {
        let config = Config::from_env()?;
        crate::telemetry::init(&config.log);
        Ok(config)
    };
    match cli.command {
        Command::Login { server, email } => {
            client::login(server, email).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            dir,
            project,
            branch,
            message,
            force,
            server,
        } => {
            client::sync(server, dir, project, branch, message, force).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ai { command } => {
            let (task, target, apply) = match command {
                AiSubcommand::Summary { target } => (AiTask::FileSummary, target, false),
                AiSubcommand::Comment { target, apply } => (AiTask::InlineComment, target, apply),
                AiSubcommand::Rename { target, apply } => {
                    (AiTask::RenameSuggestions, target, apply)
                }
            };
            let command = crate::ai_client::AiCommand {
                task,
                file: target.file,
                project: target.project,
                git_ref: target.git_ref,
                language: target.language,
                apply,
                json: target.json,
            };
            crate::ai_client::run(target.server, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Preview { command } => {
            let target = |t: PreviewTarget| crate::preview_client::Target {
                project: t.project,
                platform: t.platform,
                git_ref: t.git_ref,
            };
            match command {
                PreviewCommand::Token { target: t, server } => {
                    crate::preview_client::token(server, target(t)).await?;
                }
                PreviewCommand::Build {
                    target: t,
                    env,
                    app,
                    follow,
                    out,
                    server,
                } => {
                    let options = crate::preview_client::BuildOptions {
                        env,
                        app,
                        follow,
                        out,
                    };
                    crate::preview_client::build(server, target(t), options).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { bind, no_workers } => serve(server_config()?, bind, no_workers).await,
        Command::Migrate => migrate(server_config()?).await,
        Command::Worker {
            role,
            queues,
            concurrency,
            lease_seconds,
            metrics_bind,
            grace_seconds,
            id,
            heartbeat_ms,
        } => {
            let config = server_config()?;
            let mut worker =
                WorkerConfig::new(role, concurrency.unwrap_or(config.worker_concurrency));
            if let Some(queues) = queues {
                if role != WorkerRole::Gpu && queues.contains(&Queue::GpuAiJobs) {
                    return Err(Error::validation(
                        "gpu_ai_jobs is for `--role gpu`: its jobs need the local model on a GPU",
                    )
                    .with_context("option", "--queues"));
                }
                worker.queues = queues;
            }
            worker.lease = lease_seconds.map(Duration::from_secs);
            if let Some(grace) = grace_seconds {
                worker.shutdown_grace = Duration::from_secs(grace);
            }
            if let Some(id) = id {
                hivesync_queue::worker::check_worker_id(&id)?;
                worker.id = id;
            }
            if let Some(ms) = heartbeat_ms {
                worker.heartbeat_interval = Duration::from_millis(ms.clamp(100, 60_000));
            }
            run_worker(config, worker, metrics_bind).await
        }
        Command::Admin { command } => admin(server_config()?, command).await,
        Command::Queue {
            command: QueueCommand::Ping { timeout, hold_ms },
        } => ping(server_config()?, Duration::from_secs(timeout), hold_ms).await,
        Command::Health { json } => health_command(server_config()?, json).await,
        Command::Cleanup { dry_run } => cleanup(server_config()?, dry_run).await,
    }
}

/// Opens the backends without migrating (only `serve` and `migrate` change the schema), for a
/// command that issues no tokens: no secret is generated for it.
async fn open_state(config: Config) -> Result<Arc<AppState>> {
    config::prepare_data_dir(&config)?;
    let keys = SigningKeys::without_storing(&config)?;
    let backends = Backends::open(&config, system_clock(), false).await?;
    AppState::with_keys(config, &keys, backends, None)
}

async fn migrate(config: Config) -> Result<ExitCode> {
    config::prepare_data_dir(&config)?;
    Backends::open(&config, system_clock(), true).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

async fn listen(bind: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let cannot = |e: std::io::Error| {
        Error::new(ErrorKind::Config, "cannot listen on the bind address")
            .with_context("variable", "HIVESYNC_BIND")
            .with_context("address", bind)
            .with_source(e)
    };
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(cannot)?;
    let local = listener.local_addr().map_err(cannot)?;
    Ok((listener, local))
}

async fn serve(config: Config, bind: Option<SocketAddr>, no_workers: bool) -> Result<ExitCode> {
    let bind = bind.unwrap_or(config.http.bind);
    config::prepare_data_dir(&config)?;
    let metrics = crate::metrics::install();
    let backends = Backends::open(&config, system_clock(), true).await?;
    let embedded_queue = backends.queue_is_embedded();
    let state = AppState::new(config, backends, Some(metrics))?;
    let (listener, local) = listen(bind).await?;
    let limits = serve::Limits::from_config(&state.config.http);

    let shutdown = CancellationToken::new();
    tokio::spawn(forward_signals(shutdown.clone()));
    let owner = format!("serve-{}", hivesync_queue::worker::worker_id());
    let mut tasks = Vec::new();
    let in_process_workers = embedded_queue && !no_workers;
    if runtime::wants_gpu_worker(&state.config) {
        if in_process_workers {
            state.prepare_gpu()?;
        } else {
            tracing::warn!(
                "LOCAL_AI_DEVICE=gpu: local-model AI jobs wait on gpu_ai_jobs until a `hivesync worker --role gpu` takes them"
            );
        }
    }
    if in_process_workers {
        tasks.extend(runtime::spawn_embedded_workers(&state, &shutdown));
    }
    tasks.extend(runtime::spawn_job_keepers(&state, &owner, &shutdown));
    tasks.extend(runtime::spawn_autoscaler(&state, &owner, &shutdown));

    tracing::info!(address = %local, embedded = state.config.is_embedded(), in_process_workers,
        data_dir = %state.config.data_dir.display(), objects = state.objects.name(),
        queue = state.queue.name(), "listening");
    // Tests and scripts read this line to find the port when binding to port 0.
    println!("hivesync listening on http://{local}");
    let stopping = shutdown.clone();
    serve::serve(
        listener,
        crate::http::app(state),
        limits,
        async move { stopping.cancelled().await },
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| Error::internal("the server stopped with an error").with_source(e))?;
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("shut down");
    Ok(ExitCode::SUCCESS)
}

async fn run_worker(
    config: Config,
    worker: WorkerConfig,
    metrics_bind: Option<SocketAddr>,
) -> Result<ExitCode> {
    let metrics = crate::metrics::install();
    config::prepare_data_dir(&config)?;
    let backends = Backends::open(&config, system_clock(), false).await?;
    let state = AppState::new(config, backends, Some(metrics))?;
    if worker.role == WorkerRole::Gpu {
        // Says at start why this worker cannot run the model, rather than failing every job.
        state.prepare_gpu()?;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(forward_signals(shutdown.clone()));
    let mut tasks = runtime::spawn_worker(&state, worker.clone(), &shutdown);
    tasks.extend(runtime::spawn_job_keepers(&state, &worker.id, &shutdown));
    if let Some(bind) = metrics_bind {
        let (listener, local) = listen(bind).await?;
        let limits = serve::Limits::from_config(&state.config.http);
        tracing::info!(address = %local, "serving worker metrics");
        let app = crate::http::with_middleware(
            poem::Route::new().at("/metrics", poem::get(crate::http::metrics_endpoint)),
            state.clone(),
        );
        let stopping = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let _ = serve::serve(
                listener,
                app,
                limits,
                async move { stopping.cancelled().await },
                Duration::from_secs(5),
            )
            .await;
        }));
    }
    println!("hivesync worker {} ({}) started", worker.id, worker.role);
    for task in tasks {
        let _ = task.await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn admin(config: Config, command: AdminCommand) -> Result<ExitCode> {
    let state = open_state(config).await?;
    let (email, grant) = match &command {
        AdminCommand::Grant { email } => (email, true),
        AdminCommand::Revoke { email } => (email, false),
    };
    let email = Email::parse(email)?;
    let user = state
        .store
        .get_user_by_email(&email)
        .await?
        .ok_or_else(|| {
            Error::not_found("no account with this email").with_context("email", &email)
        })?;
    state.store.set_admin(user.id, grant).await?;
    println!(
        "{email} is {}an admin",
        if grant { "now " } else { "no longer " }
    );
    Ok(ExitCode::SUCCESS)
}

async fn ping(config: Config, timeout: Duration, hold_ms: u64) -> Result<ExitCode> {
    let state = open_state(config).await?;
    let started = Instant::now();
    let job = submit(
        &*state.store,
        &*state.queue,
        Submission::of(&Ping {
            sent_at: Some(chrono::Utc::now()),
            hold_ms,
        })?,
    )
    .await?;
    loop {
        let current = state
            .store
            .get_job(job.id)
            .await?
            .ok_or_else(|| Error::internal("the ping job vanished"))?;
        match current.state {
            JobState::Success => {
                let worker = current
                    .output_as::<Ping>()?
                    .map_or_else(|| "a worker".to_owned(), |pong| pong.worker);
                println!(
                    "pong from {worker} in {} ms (job {}, queue {})",
                    started.elapsed().as_millis(),
                    job.id,
                    state.queue.name()
                );
                return Ok(ExitCode::SUCCESS);
            }
            state_now if state_now.is_terminal() => {
                eprintln!(
                    "ping job {} ended {state_now}: {}",
                    job.id,
                    current.error_message.unwrap_or_default()
                );
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
        if started.elapsed() >= timeout {
            // Leave nothing behind: a worker that starts later must not answer a ping nobody
            // waits for.
            let _ = state.queue.cancel(job.id).await;
            let cancelled = JobUpdate::cancelled(0.0, "no worker answered in time");
            let _ = state.store.update_job(job.id, cancelled).await;
            eprintln!(
                "no worker answered within {} s (is a worker running?)",
                timeout.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn health_command(config: Config, json: bool) -> Result<ExitCode> {
    let state = match open_state(config).await {
        Ok(state) => state,
        Err(err) => {
            // The database (or Redis) cannot even be opened: that is a "down" answer too.
            if json {
                println!(
                    "{}",
                    serde_json::json!({"status": "down", "error": err.to_string()})
                );
            } else {
                println!("{} cannot connect: {err}", paint("down", Paint::Red));
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = health::check(&state).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_health(&report);
    }
    Ok(if report.report.status == OverallStatus::Down {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Clone, Copy)]
enum Paint {
    Green,
    Yellow,
    Red,
}

/// Colours text when stdout is a terminal.
fn paint(text: &str, colour: Paint) -> String {
    if !std::io::stdout().is_terminal() {
        return text.to_owned();
    }
    let code = match colour {
        Paint::Green => 32,
        Paint::Yellow => 33,
        Paint::Red => 31,
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn print_health(report: &DetailedHealth) {
    let overall = match report.report.status {
        OverallStatus::Ok => paint("ok", Paint::Green),
        OverallStatus::Degraded => paint("degraded", Paint::Yellow),
        OverallStatus::Down => paint("down", Paint::Red),
    };
    println!("HiveSync {}: {overall}", report.report.version);
    for (name, component) in &report.report.components {
        let status = match component.status {
            ComponentStatus::Up => paint("up", Paint::Green),
            ComponentStatus::Degraded => paint("degraded", Paint::Yellow),
            ComponentStatus::Down => paint("down", Paint::Red),
        };
        let detail = component
            .detail
            .as_deref()
            .map(|d| format!(" — {d}"))
            .unwrap_or_default();
        println!(
            "  {name:<13} {status:<8} {:>8.1} ms{detail}",
            component.latency_ms
        );
    }
    println!("  queues:");
    for q in &report.queues {
        let flag = if q.saturated {
            paint(" saturated", Paint::Yellow)
        } else {
            String::new()
        };
        println!(
            "    {:<14} ready {:>5}  delayed {:>5}  running {:>4}  dead {:>4}{flag}",
            q.queue.as_str(),
            q.stats.ready,
            q.stats.delayed,
            q.stats.running,
            q.stats.dead
        );
    }
    println!("  workers:");
    if report.workers.is_empty() {
        println!("    (none)");
    }
    for w in &report.workers {
        let state = if w.responsive {
            paint("responsive", Paint::Green)
        } else {
            paint("unresponsive", Paint::Red)
        };
        println!(
            "    {:<32} {:<7} {state}  last heartbeat {} s ago, {} jobs",
            w.id,
            w.role.as_str(),
            w.seconds_since_heartbeat,
            w.active_jobs
        );
    }
}

async fn cleanup(config: Config, dry_run: bool) -> Result<ExitCode> {
    let state = open_state(config).await?;
    let (plan, report) = runtime::cleaner(&state).run(dry_run).await?;
    for action in &plan.actions {
        println!(
            "{}{}",
            if dry_run { "would " } else { "" },
            describe_action(action)
        );
    }
    if dry_run {
        println!(
            "{} actions, {} bytes would be freed (dry run: nothing changed)",
            plan.actions.len(),
            plan.bytes()
        );
    } else {
        println!(
            "removed {}, rotated {}, deleted {} objects, freed {} bytes, {} failures",
            report.removed,
            report.rotated,
            report.objects_deleted,
            report.bytes_freed,
            report.failures
        );
    }
    Ok(if report.failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn describe_action(action: &hivesync_queue::cleanup::CleanupAction) -> String {
    use hivesync_queue::cleanup::CleanupAction;
    match action {
        CleanupAction::Remove {
            path,
            bytes,
            reason,
        } => format!("remove {} ({bytes} bytes): {reason}", path.display()),
        CleanupAction::Rotate { path, to, .. } => {
            format!("rotate {} -> {}", path.display(), to.display())
        }
        CleanupAction::DeleteObject { key, bytes, reason } => {
            format!("delete object {key} ({bytes} bytes): {reason}")
        }
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn forward_signals(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        () = token.cancelled() => return,
    }
    token.cancel();
}
