//! The processes pages: the loaded processes with their item counts, and one process drawn
//! with live counts per state; each state links to the orders with items in it.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::{PreEscaped, html};
use oms::graph::GraphOptions;

use super::dashboard::urlencode;
use super::layout::{self, Nav};
use super::session::Session;
use super::{UiError, UiResult, html};
use crate::http::AppState;

/// `GET /admin/processes`.
pub(super) async fn list(State(state): State<AppState>, session: Session) -> UiResult {
    let mut items: BTreeMap<String, i64> = BTreeMap::new();
    for (process, _, n) in state.service.store().item_state_counts().await? {
        *items.entry(process).or_default() += n;
    }
    let body = html! {
        div.scroll {
            table {
                thead { tr { th { "Process" } th { "Initial state" } th.num { "States" } th.num { "Events" } th.num { "Items" } } }
                tbody {
                    @for p in state.service.processes().iter() {
                        tr {
                            td { a href={ "/admin/processes/" (urlencode(p.name())) } { (p.name()) } }
                            td { (p.state(p.initial()).name) }
                            td.num { (p.states().len()) }
                            td.num { (p.events().len()) }
                            td.num { (items.get(p.name()).copied().unwrap_or(0)) }
                        }
                    }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page("Processes", Nav::Processes, &session, None, body),
    ))
}

/// `GET /admin/processes/{name}`: the graph with the number of items in each state (read
/// from the primary store) and the states as a table.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> UiResult {
    let Some(process) = state.service.processes().get(&name).cloned() else {
        return Err(UiError::new(
            StatusCode::NOT_FOUND,
            format!("No process named {name:?} is loaded."),
        ));
    };
    let counts: BTreeMap<String, u64> = state
        .service
        .store()
        .state_counts(process.name())
        .await?
        .into_iter()
        .map(|(s, n)| (s, n.max(0) as u64))
        .collect();
    let link = |s: &str| {
        format!(
            "/admin/orders?process={}&state={}",
            urlencode(process.name()),
            urlencode(s)
        )
    };
    let mut opts = GraphOptions::with_legend();
    opts.counts = counts.clone();
    opts.state_links = process
        .states()
        .iter()
        .map(|s| (s.name.clone(), link(&s.name)))
        .collect();
    let svg = oms::graph::to_svg(&process, &opts);
    let total: u64 = counts.values().sum();
    let body = html! {
        p.note { (total) " items. Select a state to list the orders with items in it." }
        section.card.graph {
            div.scroll { (PreEscaped(strip_prolog(&svg))) }
        }
        section.card {
            h2 { "States" }
            div.scroll {
                table {
                    thead { tr { th { "State" } th { "Flags" } th { "Reserved" } th.num { "Items" } } }
                    tbody {
                        @for s in process.states() {
                            tr {
                                td { a href=(link(&s.name)) { (s.name) } }
                                td { @for f in &s.flags { span.tag { (f) } " " } }
                                td { @if s.reserved { span.tag.reserved { "reserved" } } @else { "–" } }
                                td.num { (counts.get(&s.name).copied().unwrap_or(0)) }
                            }
                        }
                    }
                }
            }
        }
    };
    let title = format!("Process {}", process.name());
    Ok(html(
        StatusCode::OK,
        layout::page(&title, Nav::Processes, &session, None, body),
    ))
}

/// The SVG document without an XML declaration, to sit inside the HTML page.
fn strip_prolog(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(at) => &svg[at..],
        None => svg,
    }
}
