//! `orderflow serve`: the API, the list projector, until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::StoreArgs;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Folder with the process definitions (default: processes).
    #[arg(long)]
    processes: Option<PathBuf>,
    /// Do not run the inbox worker and check-condition loop in this process (run
    /// `orderflow worker` and `orderflow check-condition` separately).
    #[arg(long)]
    no_worker: bool,
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.store.load()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.processes {
        config.processes = dir;
    }
    if args.no_worker {
        config.worker.in_process = false;
    }
    let service = super::boot(&config).await?;
    let store = service.store().clone();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        database = %crate::config::mask_url_password(&config.database_url),
        config = %config.file.as_deref().map_or_else(|| "none (defaults)".into(), |p| p.display().to_string()),
        processes_dir = %config.processes.display(),
        processes = service.processes().len(),
        worker = config.worker.in_process,
        "orderflow serving"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    crate::app::run(service, listener, &config, shutdown).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Cancels `shutdown` on SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: finishing requests in flight");
    shutdown.cancel();
}
