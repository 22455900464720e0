//! `orderflow items strays | move`: items whose state (or process) the loaded process
//! definitions do not have, and moving them into a state of the new definition.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use super::{StoreArgs, open_store};
use crate::domain::strays::Move;
use crate::domain::{OrderService, ProcessSet};

#[derive(Debug, Subcommand)]
pub(super) enum ItemsCommand {
    /// List items whose process or state the loaded definitions do not have, per process
    /// and state (exit status 1 when there are any).
    Strays {
        /// Folder with the process definitions (default: the configured one).
        #[arg(long)]
        processes: Option<PathBuf>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Move every item of PROCESS in state FROM to state TO of the loaded definition; each
    /// order in its own transaction, with a history row (source `operator`) per item.
    Move {
        /// The orders' process now (it may no longer be loaded).
        #[arg(long)]
        process: String,
        /// The items' state; `*` for every item (whole orders).
        #[arg(long)]
        from: String,
        /// Move whole orders to this loaded process (e.g. a versioned name); orders with
        /// items outside FROM are skipped and named.
        #[arg(long)]
        to_process: Option<String>,
        /// A state of the target process.
        #[arg(long)]
        to: String,
        /// Say what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Folder with the process definitions (default: the configured one).
        #[arg(long)]
        processes: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

async fn service(store: &StoreArgs, processes: Option<PathBuf>) -> anyhow::Result<OrderService> {
    let mut config = store.load()?;
    if let Some(dir) = processes {
        config.processes = dir;
    }
    let set = ProcessSet::load_configured(&config)?;
    let store = open_store(&config).await?;
    Ok(OrderService::new(store, Arc::new(set)))
}

pub(super) async fn run(cmd: ItemsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ItemsCommand::Strays {
            processes,
            json,
            store,
        } => {
            let service = service(&store, processes).await?;
            let strays = service.strays().await;
            service.store().close().await;
            let strays = strays?;
            if json {
                println!("{}", serde_json::to_string_pretty(&strays)?);
            } else if strays.is_empty() {
                println!("every item is in a state of its loaded process");
            } else {
                println!("{:<24} {:<32} {:>8}  reason", "process", "state", "items");
                for s in &strays {
                    println!(
                        "{:<24} {:<32} {:>8}  {}",
                        s.process, s.state, s.items, s.reason
                    );
                }
            }
            Ok(if strays.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ItemsCommand::Move {
            process,
            from,
            to_process,
            to,
            dry_run,
            processes,
            store,
        } => {
            let service = service(&store, processes).await?;
            let report = service
                .move_items(
                    &Move {
                        process: &process,
                        from: &from,
                        to_process: to_process.as_deref(),
                        to: &to,
                        dry_run,
                    },
                    crate::store::now(),
                )
                .await;
            service.store().close().await;
            let report = report?;
            let verb = if dry_run { "would move" } else { "moved" };
            println!(
                "{verb} {} items of {} orders from {from:?} to {to:?}",
                report.items, report.orders
            );
            for s in &report.skipped {
                println!("skipped order {}: {}", s.order, s.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
