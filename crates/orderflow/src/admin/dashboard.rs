//! The dashboard: inbox counts by status, the oldest pending update's age, the list view's
//! lag, updates settled per minute, and the dead updates that need an operator.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DurationRound, TimeDelta, Utc};
use maud::html;

use super::layout::{self, Nav};
use super::session::Session;
use super::{UiResult, chart, html};
use crate::http::AppState;
use crate::inbox::model::UpdateStatus;
use crate::inbox::ops::{self, InboxFilter};

/// Minutes the throughput chart covers.
const MINUTES: i64 = 15;
/// Dead updates listed on the dashboard.
const DEAD_SHOWN: i64 = 10;

/// `GET /admin`.
pub(super) async fn page(State(state): State<AppState>, session: Session) -> UiResult<Response> {
    let store = state.inbox.store();
    let stats = ops::stats(store).await?;
    let (pending_changes, oldest_change) = store.projection_backlog().await?;
    let now = Utc::now();
    let lag = oldest_change.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
    let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    let edges: Vec<_> = (0..=MINUTES)
        .map(|i| minute - TimeDelta::minutes(MINUTES - 1 - i))
        .collect();
    let settled = store.settled_between(&edges).await?;
    let dead_filter = InboxFilter {
        status: Some(UpdateStatus::Dead),
        ..InboxFilter::default()
    };
    let (dead, more_dead) = ops::list(store, &dead_filter, None, DEAD_SHOWN).await?;
    let counts = stats.counts;
    let body = html! {
        section.tiles {
            @for s in UpdateStatus::ALL {
                a.tile href={ "/admin/inbox?status=" (s.as_str()) } {
                    span.label { (layout::status(s)) }
                    span.value { (counts.get(s)) }
                }
            }
        }
        section.tiles {
            div.tile {
                span.label { "Oldest pending update" }
                span.value { (layout::age(stats.oldest_pending_age_seconds)) }
            }
            div.tile {
                span.label { "List view lag" }
                span.value { (layout::age(lag)) }
                span.note { (pending_changes) " changes not yet in the list" }
            }
            div.tile {
                span.label { "Settled, last " (MINUTES) " min" }
                span.value { (settled.iter().sum::<i64>()) }
            }
        }
        section.card {
            h2 { "Updates settled per minute (UTC)" }
            div.scroll { (chart::bars(&edges[..edges.len() - 1], &settled)) }
        }
        section.card {
            h2 { "Dead updates needing attention (" (counts.dead) ")" }
            @if dead.is_empty() {
                p.empty { "None. Every update was applied, ignored, rejected or is still being worked on." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Received" } th { "Order" } th { "Event" } th { "Last error" } th {} } }
                        tbody {
                            @for u in &dead {
                                tr {
                                    td { (layout::time(u.received_at)) }
                                    td { a href={ "/admin/orders?reference=" (urlencode(&u.order_reference)) } { (u.order_reference) } }
                                    td { (u.event.as_deref().unwrap_or("–")) }
                                    td.error { (last_message(u.errors())) }
                                    td.row-actions {
                                        a href={ "/admin/inbox/" (u.id) } { "Open" }
                                        form method="post" action={ "/admin/inbox/" (u.id) "/retry" } {
                                            (layout::csrf(&session))
                                            button.small type="submit" { "Retry" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.links {
                    @if more_dead.is_some() {
                        a href="/admin/inbox?status=dead" { "All dead updates →" }
                    }
                    a href="/admin/inbox/replay?status=dead" { "Replay every dead update…" }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page("Dashboard", Nav::Dashboard, &session, None, body),
    ))
}

/// The message of the last error in an update's error history.
pub(super) fn last_message(errors: &[serde_json::Value]) -> String {
    errors
        .iter()
        .rev()
        .find(|e| !crate::inbox::model::is_retry_marker(e))
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_owned()
}

/// `s` for a query string.
pub(super) fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
