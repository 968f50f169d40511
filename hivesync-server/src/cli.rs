//! The `hivesync` command line.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use hivesync_core::config::{self, Config};
use hivesync_core::{Result, adapters};
use poem::listener::{Acceptor, Listener, TcpListener};

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
    /// Run the API server (applies migrations first).
    Serve {
        /// Address to listen on; overrides HIVESYNC_BIND. Port 0 picks a free port.
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<()> {
    let config = Config::from_env()?;
    crate::telemetry::init(&config.log);
    match cli.command {
        Command::Serve { bind } => serve(config, bind).await,
        Command::Migrate => migrate(config).await,
    }
}

async fn migrate(config: Config) -> Result<()> {
    config::prepare_data_dir(&config)?;
    let store = adapters::open_store(&config).await?;
    store.migrate().await?;
    println!("migrations applied");
    Ok(())
}

async fn serve(config: Config, bind: Option<SocketAddr>) -> Result<()> {
    let bind = bind.unwrap_or(config.http.bind);
    let embedded = config.is_embedded();
    let data_dir = config.data_dir.clone();
    let state = AppState::open(config).await?;
    let acceptor = TcpListener::bind(bind).into_acceptor().await.map_err(|e| {
        hivesync_core::Error::new(
            hivesync_core::ErrorKind::Config,
            "cannot listen on the bind address",
        )
        .with_context("variable", "HIVESYNC_BIND")
        .with_context("address", bind)
        .with_source(e)
    })?;
    let local = acceptor
        .local_addr()
        .into_iter()
        .find_map(|addr| addr.as_socket_addr().copied())
        .unwrap_or(bind);
    tracing::info!(address = %local, embedded, data_dir = %data_dir.display(), objects = state.objects.name(), "listening");
    // Tests and scripts read this line to find the port when binding to port 0.
    println!("hivesync listening on http://{local}");
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            crate::http::app(state),
            shutdown_signal(),
            Some(std::time::Duration::from_secs(30)),
        )
        .await
        .map_err(|e| {
            hivesync_core::Error::internal("the server stopped with an error").with_source(e)
        })?;
    tracing::info!("shut down");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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
    }
}
