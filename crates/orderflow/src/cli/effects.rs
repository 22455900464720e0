//! `orderflow effects list|retry`: after-commit HTTP command calls on the command line,
//! straight against the store (as `GET /v1/admin/effects` and its retry).

use std::process::ExitCode;

use chrono::SecondsFormat;
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::{StoreArgs, open_store};
use crate::store::effects::{EffectFilter, EffectRow};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Status {
    Pending,
    Running,
    Done,
    Dead,
}

#[derive(Debug, Subcommand)]
pub(super) enum EffectsCommand {
    /// List effects in creation order as a table (or JSON lines with --json).
    List {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Only effects of this order (its id).
        #[arg(long)]
        order_id: Option<i64>,
        /// At most this many effects.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Continue after this effect id (printed when more effects match).
        #[arg(long)]
        cursor: Option<i64>,
        /// One JSON object per effect.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a dead effect pending again, with fresh attempts; it is sent again with the
    /// same Idempotency-Key.
    Retry {
        id: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub(super) async fn run(cmd: EffectsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EffectsCommand::List {
            status,
            order_id,
            limit,
            cursor,
            json,
            store,
        } => {
            if !(1..=10_000).contains(&limit) {
                anyhow::bail!("--limit must be between 1 and 10000");
            }
            let store = open_store(&store.load()?).await?;
            let filter = EffectFilter {
                status: status.map(|s| format!("{s:?}").to_lowercase()),
                order_id,
                after_id: cursor,
                limit: limit + 1,
            };
            let result = store.list_effects(&filter).await;
            store.close().await;
            let mut rows = result?;
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(&as_json(r))?);
                }
            } else {
                print!("{}", table(&rows));
            }
            if let (true, Some(last)) = (more, rows.last()) {
                eprintln!("more effects match: add --cursor {}", last.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        EffectsCommand::Retry { id, store } => {
            let store = open_store(&store.load()?).await?;
            let result = store.retry_effect(id, crate::store::now()).await;
            store.close().await;
            match result? {
                None => anyhow::bail!("no effect {id}"),
                Some((row, false)) => {
                    anyhow::bail!(
                        "effect {id} is {}: only dead effects can be retried",
                        row.status
                    )
                }
                Some(_) => {
                    println!("effect {id} is pending again; an executor will send it");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

fn command(r: &EffectRow) -> String {
    r.payload
        .ok()
        .and_then(|p| p.get("command")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| r.kind.clone())
}

fn as_json(r: &EffectRow) -> serde_json::Value {
    json!({
        "id": r.id,
        "order_id": r.order_id,
        "order_version": r.order_version,
        "kind": r.kind,
        "status": r.status,
        "attempts": r.attempts,
        "created_at": r.created_at,
        "done_at": r.done_at,
        "next_attempt_at": r.next_attempt_at,
        "last_error": r.last_error,
        "payload": r.payload.ok(),
    })
}

fn table(rows: &[EffectRow]) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:<8} {:<24} {:>8}  {:<20} {}\n",
        "ID", "ORDER", "STATUS", "COMMAND", "ATTEMPTS", "CREATED", "LAST ERROR"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<8} {:<8} {:<24} {:>8}  {:<20} {}\n",
            r.id,
            r.order_id,
            r.status,
            command(r),
            r.attempts,
            r.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            r.last_error.as_deref().unwrap_or("")
        ));
    }
    out
}
