//! `orderflow check-condition`: moves items whose timeout is due and items whose event-less
//! transition's condition holds; once (`--once`, for cron) or every poll interval until
//! SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::StoreArgs;
use super::serve::stop_on_signal;
use crate::domain::timers;
use crate::domain::{Backoff, CheckPass, OrderService};
use crate::store;

/// `--once` stops after this many passes even if timers are still due: only a cycle of
/// event-less transitions whose conditions stay true gets there.
const MAX_ONCE_PASSES: u32 = 100;

#[derive(Debug, Args)]
pub(super) struct CheckConditionArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Folder with the process definitions (default: processes).
    #[arg(long)]
    processes: Option<PathBuf>,
    /// Run passes until nothing is due, print a summary and exit.
    #[arg(long)]
    once: bool,
}

pub(super) async fn run(args: CheckConditionArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.store.load()?;
    if let Some(dir) = args.processes {
        config.processes = dir;
    }
    let poll = config.worker.poll_interval.max(Duration::from_millis(10));
    let service = super::boot(&config).await?;
    let store = service.store().clone();
    if args.once {
        let backoff = timers::timer_backoff(poll);
        let batch = config.worker.batch_size(store.backend());
        let (passes, total) = run_once(&service, batch, backoff).await?;
        println!(
            "check-condition: {passes} passes, {} orders, {} items moved, {} timers fired, \
             {} rescheduled in {} ms",
            total.orders,
            total.items_moved,
            total.timers_fired,
            total.rescheduled,
            total.duration.as_millis()
        );
    } else {
        tracing::info!(
            backend = ?store.backend(),
            poll_ms = poll.as_millis() as u64,
            "check-condition running"
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        timers::run_loop(service, poll, shutdown).await;
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Passes until one checks no timer (a chain of event-less transitions takes one pass per
/// step); returns the number of passes and their sum.
async fn run_once(
    service: &OrderService,
    batch: u32,
    backoff: Backoff,
) -> anyhow::Result<(u32, CheckPass)> {
    let mut total = CheckPass::default();
    for passes in 1..=MAX_ONCE_PASSES {
        let pass = service.check_due_with(store::now(), batch, backoff).await?;
        total += &pass;
        if pass.timers_fired == 0 {
            return Ok((passes, total));
        }
    }
    tracing::warn!(
        passes = MAX_ONCE_PASSES,
        "timers are still due after the last pass: is there a cycle of event-less transitions?"
    );
    Ok((MAX_ONCE_PASSES, total))
}
