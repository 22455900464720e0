//! `orderflow worker`: the inbox worker (with the effects executor and the subscription
//! deliveries) on its own, for a fleet of worker processes beside `serve --no-worker`, or
//! with `--once` from cron or a CI scheduler.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::StoreArgs;
use super::serve::stop_on_signal;
use crate::inbox::transit::Transit;
use crate::inbox::worker::{WorkerOptions, WorkerTotals};
use crate::inbox::{Inbox, InboxSettings};
use crate::outbound::effects::Executor;
use crate::subscriptions::worker::Deliverer;

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Folder with the process definitions (default: processes).
    #[arg(long)]
    processes: Option<PathBuf>,
    /// Process the updates that are due now, then exit.
    #[arg(long)]
    once: bool,
    /// After SIGTERM/SIGINT: how long the batch in flight may take to finish before its
    /// leases are released (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_grace)]
    grace: Duration,
    /// With --once: print the totals as one JSON object instead of a sentence.
    #[arg(long, requires = "once")]
    json: bool,
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    crate::config::duration("--grace", s).map_err(|e| e.to_string())
}

pub(super) async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.store.load()?;
    if let Some(dir) = args.processes {
        config.processes = dir;
    }
    let settings = InboxSettings::from_config(&config);
    let service = super::boot(&config).await?;
    let store = service.store().clone();
    let deliverer = if config.subscriptions.in_process {
        Some(Deliverer::new(
            store.clone(),
            &config.subscriptions,
            &config.outbound,
        )?)
    } else {
        None
    };
    let transit = Transit::from_config(&config, &store)
        .await
        .context("cannot start the inbox transport")?;
    let inbox = Inbox::new(service.clone(), settings).with_transit(transit);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    // A broker transport's consumers, unless this run only drains the database (--once).
    let consumers = match inbox.transit() {
        Some(t) if !args.once => t.spawn_consumers(&inbox, &shutdown),
        _ => Vec::new(),
    };
    let options = WorkerOptions {
        once: args.once,
        grace: args.grace,
    };
    let started = Instant::now();
    // Subscription deliveries beside the inbox worker (with --once: what is due after it).
    let deliveries = match (&deliverer, args.once) {
        (Some(d), false) => Some(tokio::spawn(
            d.clone().run(service.clone(), shutdown.child_token()),
        )),
        _ => None,
    };
    // HTTP commands after commit: beside the worker, or (--once) until none is due.
    let effects = match config.effects.enabled {
        true => Some(Executor::new(store.clone(), &config)?),
        false => None,
    };
    let totals = match (&effects, args.once) {
        (Some(executor), false) => {
            let (totals, _) = tokio::join!(
                inbox.run_worker(options, shutdown.clone()),
                executor.run(shutdown.clone())
            );
            totals
        }
        (Some(executor), true) => {
            let totals = inbox.run_worker(options, shutdown.clone()).await;
            while !shutdown.is_cancelled() && executor.step(crate::store::now()).await?.total() > 0
            {
            }
            totals
        }
        (None, _) => inbox.run_worker(options, shutdown.clone()).await,
    };
    shutdown.cancel();
    if let Some(task) = deliveries {
        let _ = task.await;
    }
    if let (Some(d), true, Ok(_)) = (&deliverer, args.once, &totals) {
        let attempts = d.drain().await?;
        tracing::info!(attempts, "subscription deliveries drained");
    }
    for c in consumers {
        let _ = c.await;
    }
    store.close().await;
    let totals = totals?;
    if args.once {
        if args.json {
            println!("{}", serde_json::to_string(&totals)?);
        } else {
            println!("{}", summary(&totals, started.elapsed()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One sentence: what `--once` did.
fn summary(t: &WorkerTotals, took: Duration) -> String {
    let done = t.applied + t.parked + t.ignored + t.rejected + t.dead;
    format!(
        "processed {done} updates in {} batches ({:.2} s): {} applied, {} parked, {} ignored, \
         {} rejected, {} dead, {} to retry, {} taken over by another worker",
        t.batches,
        took.as_secs_f64(),
        t.applied,
        t.parked,
        t.ignored,
        t.rejected,
        t.dead,
        t.retried,
        t.lost
    )
}
