//! `orderflow inbox list|show|retry|replay`: the admin inbox endpoints on the command line,
//! straight against the store (the rules are in [`crate::inbox::ops`]).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{StoreArgs, open_store};
use crate::inbox::model::{UpdateDetail, UpdateStatus, is_retry_marker};
use crate::inbox::ops::{self, InboxFilter};

#[derive(Debug, Subcommand)]
pub(super) enum InboxCommand {
    /// List updates in receive order as a table (or JSON lines with --json).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many updates.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Continue after this cursor (printed when more updates match).
        #[arg(long)]
        cursor: Option<i64>,
        /// One JSON object per update, everything stored about it.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show everything stored about one update, every attempt's error included.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a dead, rejected, ignored or parked update due again, with fresh attempts.
    Retry {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Retry every dead, rejected, ignored or parked update that matches the filters.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only count what would be retried.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub(super) struct FilterArgs {
    #[arg(long, value_enum)]
    status: Option<UpdateStatus>,
    #[arg(long)]
    order_reference: Option<String>,
    /// OMS event name.
    #[arg(long)]
    event: Option<String>,
    /// Received at or after: RFC 3339 (2026-03-01T12:00:00Z) or a duration ago (2h, 7d).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Received before: RFC 3339 or a duration ago.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn filter(self) -> InboxFilter {
        InboxFilter {
            status: self.status,
            order_reference: self.order_reference,
            event: self.event,
            received_after: self.since,
            received_before: self.until,
        }
    }
}

/// With a broker transport, one line on what it holds beside the database inbox.
async fn in_transit(config: &crate::config::Config, store: &crate::store::Store) -> Option<String> {
    use crate::inbox::transit::Transit;
    let transit = match Transit::from_config(config, store).await {
        Ok(t) => t?,
        Err(e) => return Some(format!("in transit: unknown ({e})")),
    };
    Some(match transit.stats().await {
        // Redis has no in-transit TTL: nothing is ever overdue.
        Ok(s) if s.transport == "redis" => format!(
            "in transit ({}): {} waiting for a consumer, {} dead-lettered",
            s.transport, s.in_transit, s.dead_lettered
        ),
        Ok(s) => format!(
            "in transit ({}): {} messages (one or more updates each) waiting for a consumer, \
             {} overdue (moving to the database inbox), {} dead-lettered",
            s.transport, s.in_transit, s.overdue, s.dead_lettered
        ),
        Err(e) => format!("in transit: unknown ({e})"),
    })
}

/// An instant as RFC 3339, or a duration before now (`30m`, `2h`, `7d`).
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = crate::config::duration("time", s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 2h"))?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
    Ok(Utc::now() - ago)
}

pub(super) async fn run(cmd: InboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        InboxCommand::List {
            filter,
            limit,
            cursor,
            json,
            store,
        } => {
            if !(1..=10_000).contains(&limit) {
                anyhow::bail!("--limit must be between 1 and 10000");
            }
            let config = store.load()?;
            let store = open_store(&config).await?;
            let (rows, next) = ops::list(&store, &filter.filter(), cursor, limit).await?;
            let in_transit = in_transit(&config, &store).await;
            store.close().await;
            let details: Vec<UpdateDetail> = rows.iter().map(UpdateDetail::of).collect();
            if json {
                for d in &details {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                print!("{}", table(&details));
            }
            if let Some(next) = next {
                eprintln!("more updates match: add --cursor {next}");
            }
            if let Some(line) = in_transit {
                eprintln!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        InboxCommand::Show { id, json, store } => {
            let store = open_store(&store.load()?).await?;
            let row = store.update_by_id(&id).await?;
            store.close().await;
            let Some(row) = row else {
                anyhow::bail!("no update {id}");
            };
            let detail = UpdateDetail::of(&row);
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print!("{}", show(&detail));
            }
            Ok(ExitCode::SUCCESS)
        }
        InboxCommand::Retry { id, store } => {
            let store = open_store(&store.load()?).await?;
            let result = ops::retry(&store, &id).await;
            store.close().await;
            let row = result?;
            println!(
                "update {} ({}, order {}) is accepted again; a worker will apply it",
                row.id,
                row.event.as_deref().unwrap_or("no event"),
                row.order_reference
            );
            Ok(ExitCode::SUCCESS)
        }
        InboxCommand::Replay {
            filter,
            dry_run,
            yes,
            store,
        } => {
            let filter = filter.filter();
            let store = open_store(&store.load()?).await?;
            let result = replay(&store, &filter, dry_run, yes).await;
            store.close().await;
            result
        }
    }
}

async fn replay(
    store: &crate::store::Store,
    filter: &InboxFilter,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let count = ops::replay(store, filter, true, |_| {}).await?;
    if dry_run {
        println!(
            "{} updates match; {} would be retried (dead, rejected, ignored or parked)",
            count.matched, count.retried
        );
        return Ok(ExitCode::SUCCESS);
    }
    if count.retried == 0 {
        println!("{} updates match; none can be retried", count.matched);
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirm(count.retried)? {
        println!("nothing retried");
        return Ok(ExitCode::FAILURE);
    }
    let bar = ProgressBar::new(count.matched);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} updates checked, {msg} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = ops::replay(store, filter, false, |r| {
        bar.set_length(r.matched.max(count.matched));
        bar.set_position(r.matched);
        bar.set_message(format!("{} retried", r.retried));
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    println!(
        "retried {} of {} matching updates; a worker will apply them",
        report.retried, report.matched
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal; without one, refuses (a script must say --yes).
fn confirm(n: u64) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("replay would retry {n} updates: add --yes to confirm (or --dry-run)");
    }
    eprint!("retry {n} updates? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The list as aligned columns.
fn table(rows: &[UpdateDetail]) -> String {
    let header = [
        "ID",
        "STATUS",
        "ORDER",
        "EVENT",
        "ATTEMPTS",
        "RECEIVED",
        "LAST ERROR",
    ];
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for d in rows {
        let v = &d.view;
        let last = v
            .last_error
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        lines.push([
            v.id.clone(),
            v.status.to_string(),
            v.order_reference.clone(),
            v.event.clone().unwrap_or_else(|| "-".into()),
            v.attempts.to_string(),
            time(&v.received_at),
            last.to_owned(),
        ]);
    }
    let mut widths = [0; 7];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no updates match)\n");
    }
    out
}

/// One update, field by field, then its history of errors, payload and result.
fn show(d: &UpdateDetail) -> String {
    let v = &d.view;
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<16}{value}\n"));
    field("id", v.id.clone());
    field("status", v.status.to_string());
    field("order", v.order_reference.clone());
    field("event", v.event.clone().unwrap_or_else(|| "-".into()));
    field("client", d.client.clone());
    field(
        "idempotency key",
        d.idempotency_key.clone().unwrap_or_else(|| "-".into()),
    );
    field("attempts", v.attempts.to_string());
    field("received", time(&v.received_at));
    if let Some(t) = &v.processed_at {
        field("processed", time(t));
    }
    if let Some(t) = &d.next_attempt_at {
        field("next attempt", time(t));
    }
    if let Some(t) = &d.park_until {
        field("parked until", time(t));
    }
    if let Some(owner) = &d.lease_owner {
        field("lease owner", owner.clone());
    }
    out.push_str(&format!("errors ({}):\n", d.errors.len()));
    for e in &d.errors {
        let text = |k: &str| e.get(k).map(plain).unwrap_or_default();
        if is_retry_marker(e) {
            out.push_str(&format!(
                "  retried by an operator at {} (was {}): attempts start again\n",
                text("at"),
                text("from"),
            ));
            continue;
        }
        let retryable = if e.get("retryable") == Some(&Value::Bool(true)) {
            " (retryable)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  attempt {} at {}: {}: {}{retryable}\n",
            text("attempt"),
            text("at"),
            text("code"),
            text("message"),
        ));
    }
    out.push_str("payload:\n");
    out.push_str(&indent(&d.payload));
    if let Some(result) = &v.result {
        out.push_str("result:\n");
        out.push_str(&indent(result));
    }
    out
}

/// A JSON value as text: strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn indent(v: &Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let t = parse_time("2026-03-01T12:00:00Z").unwrap();
        assert_eq!(time(&t), "2026-03-01T12:00:00Z");
        let ago = Utc::now() - parse_time("2h").unwrap();
        assert!((ago.num_seconds() - 7200).abs() < 5, "{ago}");
        assert!(parse_time("yesterday").is_err());
    }
}
