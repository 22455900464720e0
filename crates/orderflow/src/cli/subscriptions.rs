//! `orderflow subscriptions create|list|enable|disable|delete|deliveries|retry|replay`:
//! the admin API's subscription operations on the command line, against the store.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::{StoreArgs, open_store};
use crate::subscriptions::{self as subs, SubscriptionView};

#[derive(Debug, Subcommand)]
pub(super) enum SubscriptionsCommand {
    /// Subscribe URL to order events and print the signing secret (shown once).
    Create {
        /// Where events are posted (http or https).
        url: String,
        /// Event types, comma-separated: order.created, item.state_changed,
        /// order.updated, update.dead (default: every type).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Print the subscription and its `signing_secret` as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List subscriptions with their backlog and state.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Resume a subscription (changes made while it was disabled are delivered).
    Enable {
        id: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Stop a subscription's deliveries (they wait until it is enabled).
    Disable {
        id: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a subscription with its deliveries.
    Delete {
        id: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// A subscription's deliveries, newest first, with their attempts.
    Deliveries {
        id: i64,
        /// Only pending, delivered or dead ones.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Send one delivery again, with a fresh retry schedule.
    Retry {
        id: i64,
        delivery: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Queue a subscription's events again for the changes committed since a time.
    Replay {
        id: i64,
        /// An RFC 3339 instant (2026-01-31T12:00:00Z) or a duration back from now (2h, 7d).
        #[arg(long, value_parser = parse_since)]
        since: DateTime<Utc>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let back = crate::config::duration("--since", s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 instant nor a duration such as 2h or 7d")
    })?;
    let back = chrono::TimeDelta::from_std(back).map_err(|e| e.to_string())?;
    Ok(Utc::now() - back)
}

pub(super) async fn run(cmd: SubscriptionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SubscriptionsCommand::Create {
            url,
            events,
            json,
            store,
        } => {
            let config = store.load()?;
            let store = open_store(&config).await?;
            let created = subs::create(&store, &config.outbound, &url, &events).await;
            store.close().await;
            let created = created?;
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                let s = &created.subscription;
                println!("created subscription {} to {}", s.id, s.url);
                println!("events: {}", events_text(s));
                println!("signing secret: {}", created.signing_secret);
                println!("store it now: it is not shown again");
            }
        }
        SubscriptionsCommand::List { json, store } => {
            let config = store.load()?;
            let store = open_store(&config).await?;
            let list = subs::list(&store).await;
            store.close().await;
            let list = list?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no subscriptions");
            } else {
                for s in &list {
                    println!("{}", line(s));
                }
            }
        }
        SubscriptionsCommand::Enable { id, store } => set_enabled(id, &store, true).await?,
        SubscriptionsCommand::Disable { id, store } => set_enabled(id, &store, false).await?,
        SubscriptionsCommand::Delete { id, store } => {
            let config = store.load()?;
            let store = open_store(&config).await?;
            let done = subs::delete(&store, id).await;
            store.close().await;
            done?;
            println!("deleted subscription {id}");
        }
        SubscriptionsCommand::Deliveries {
            id,
            status,
            limit,
            json,
            store,
        } => {
            if !(1..=500).contains(&limit) {
                anyhow::bail!("--limit must be 1 to 500");
            }
            let config = store.load()?;
            let store = open_store(&config).await?;
            let page = subs::deliveries(&store, id, status.as_deref(), None, limit).await;
            store.close().await;
            let (rows, _) = page?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no deliveries");
            } else {
                for d in &rows {
                    let order = match (d.order_id, d.version) {
                        (Some(o), Some(v)) => format!("order {o} v{v}"),
                        (Some(o), None) => format!("order {o}"),
                        (None, _) => "no order".to_owned(),
                    };
                    println!(
                        "{} {} {} {order} {} ({} attempts)",
                        d.id, d.event_id, d.event_type, d.status, d.attempts
                    );
                    for a in &d.attempt_log {
                        let status = a.status_code.map_or("-".to_owned(), |s| s.to_string());
                        println!(
                            "    {} status {status} {} ms {}",
                            a.at.to_rfc3339(),
                            a.latency_ms,
                            a.error.as_deref().unwrap_or("ok")
                        );
                    }
                }
            }
        }
        SubscriptionsCommand::Retry {
            id,
            delivery,
            store,
        } => {
            let config = store.load()?;
            let store = open_store(&config).await?;
            let done = subs::retry(&store, id, delivery).await;
            store.close().await;
            let d = done?;
            println!("delivery {} ({}) is due again", d.id, d.event_id);
        }
        SubscriptionsCommand::Replay { id, since, store } => {
            let config = store.load()?;
            let store = open_store(&config).await?;
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} events replayed ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let report = subs::replay(&store, id, since, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
            bar.finish_and_clear();
            store.close().await;
            let report = report?;
            println!(
                "replayed subscription {id} since {}: {} changes, {} dead updates, {} deliveries queued",
                since.to_rfc3339(),
                report.changes,
                report.dead_updates,
                report.queued
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_enabled(id: i64, store: &StoreArgs, enabled: bool) -> anyhow::Result<()> {
    let config = store.load()?;
    let store = open_store(&config).await?;
    let done = subs::set_enabled(&store, id, enabled).await;
    store.close().await;
    println!("{}", line(&done?));
    Ok(())
}

fn events_text(s: &SubscriptionView) -> String {
    if s.events.is_empty() {
        "every type".to_owned()
    } else {
        s.events.join(",")
    }
}

fn line(s: &SubscriptionView) -> String {
    let state = if s.enabled {
        "enabled".to_owned()
    } else {
        format!(
            "disabled ({})",
            s.disabled_reason.as_deref().unwrap_or("no reason")
        )
    };
    format!(
        "{} {} [{}] {state}, {} pending, oldest {:.0} s, {} failures in a row",
        s.id,
        s.url,
        events_text(s),
        s.backlog,
        s.oldest_undelivered_age_seconds,
        s.failures
    )
}
