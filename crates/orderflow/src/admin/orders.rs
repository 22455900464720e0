//! The orders pages: search by reference, the list view filtered by process and state,
//! and one order (items with states, flags and reservations, the history timeline, its
//! ERP updates, and buttons for the manual events that apply now, sent with the version
//! the page showed).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use oms::Process;
use serde::Deserialize;

use super::dashboard::{last_message, urlencode};
use super::layout::{self, Flash, Nav};
use super::session::{Protected, Session};
use super::{UiError, UiResult, html};
use crate::domain::types::{EventName, OrderId, OrderReference, Version};
use crate::domain::view::OrderView;
use crate::domain::{Change, DomainError, EventInput, Source, Target};
use crate::http::AppState;
use crate::inbox::ops::{self, InboxFilter};
use crate::store::projection::ListFilter;

/// Orders per page of the list, and ERP updates shown on an order's page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub(super) struct SearchQuery {
    reference: Option<String>,
    process: Option<String>,
    state: Option<String>,
    after: Option<i64>,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `GET /admin/orders`: a reference opens that order; otherwise the list view (eventually
/// consistent), filtered by process and state.
pub(super) async fn search(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<SearchQuery>,
) -> UiResult {
    let reference = nonempty(&q.reference);
    let mut flash = None;
    if let Some(r) = &reference {
        match OrderReference::parse(r.as_str()) {
            Err(e) => flash = Some(Flash::Warning(format!("Not an order reference: {}", e.0))),
            Ok(parsed) => match state.service.get(&Target::Reference(parsed)).await {
                Ok(order) => {
                    let to = format!("/admin/orders/{}", order.id);
                    return Ok((StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response());
                }
                Err(DomainError::OrderNotFound) => {
                    flash = Some(Flash::Warning(format!("There is no order {r}.")));
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
    let (process, item_state) = (nonempty(&q.process), nonempty(&q.state));
    let mut rows = state
        .service
        .store()
        .list_orders(&ListFilter {
            state: item_state.clone(),
            process: process.clone(),
            sku: None,
            updated_after: None,
            after_id: q.after.unwrap_or(0),
            limit: PAGE + 1,
        })
        .await?;
    let next = (rows.len() as i64 > PAGE).then(|| {
        rows.truncate(PAGE as usize);
        rows.last().map_or(0, |r| r.order_id)
    });
    let status = if flash.is_some() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let filters = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(process.as_ref().map(|p| ("process", p)))
        .extend_pairs(item_state.as_ref().map(|s| ("state", s)))
        .finish();
    let body = html! {
        form.filters.card method="get" action="/admin/orders" {
            label.grow { "Order reference" input type="search" name="reference" value=(reference.clone().unwrap_or_default()) placeholder="DE-1001"; }
            div.actions { button type="submit" { "Open" } }
        }
        @if process.is_some() || item_state.is_some() {
            p.note {
                "Orders"
                @if let Some(p) = &process { " of process " strong { (p) } }
                @if let Some(s) = &item_state { " with items in state " strong { (s) } }
                " — " a href="/admin/orders" { "show all" }
            }
        }
        p.note { "The list is read from the list view, which may lag a change by a moment." }
        @if rows.is_empty() {
            p.empty { "No orders." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th { "Reference" } th { "Process" } th { "States" } th.num { "Version" } th { "Updated (UTC)" } } }
                    tbody {
                        @for r in &rows {
                            tr {
                                td { a href={ "/admin/orders/" (r.order_id) } { (r.reference) } }
                                td { (r.process) }
                                td { @for s in &r.states.0 { span.tag { (s) } " " } }
                                td.num { (r.version) }
                                td { (layout::time(r.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if q.after.is_some() { a href={ "/admin/orders?" (filters) } { "← First page" } }
            @if let Some(after) = next {
                a href={ "/admin/orders?" (filters) (if filters.is_empty() { "" } else { "&" }) "after=" (after) } { "Next page →" }
            }
        }
    };
    Ok(html(
        status,
        layout::page("Orders", Nav::Orders, &session, flash, body),
    ))
}

/// The manual events that apply to at least one item now, with how many items each.
fn manual_events(process: &Process, order: &OrderView) -> BTreeMap<String, usize> {
    let mut events = BTreeMap::new();
    for item in &order.items {
        let Some(state) = process.state_id(&item.state) else {
            continue;
        };
        let mut names: Vec<&str> = process
            .transitions()
            .iter()
            .filter(|t| t.source == state)
            .filter_map(|t| t.event.map(|e| process.event(e)))
            .filter(|e| e.manual)
            .map(|e| e.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            *events.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    events
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ShowQuery {
    triggered: Option<String>,
    moved: Option<usize>,
}

/// `GET /admin/orders/{id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Query(q): Query<ShowQuery>,
) -> UiResult {
    let flash = q.triggered.map(|event| {
        Flash::Done(format!(
            "Event {event} triggered: {} item(s) moved.",
            q.moved.unwrap_or(0)
        ))
    });
    order_page(&state, &session, id, flash, StatusCode::OK).await
}

async fn order_page(
    state: &AppState,
    session: &Session,
    id: i64,
    flash: Option<Flash>,
    status: StatusCode,
) -> UiResult {
    let order = match state.service.get(&Target::Id(OrderId(id))).await {
        Err(DomainError::OrderNotFound) => {
            return Err(UiError::new(
                StatusCode::NOT_FOUND,
                format!("There is no order {id}."),
            ));
        }
        other => other?,
    };
    let history = state.service.history(OrderId(id)).await?;
    let filter = InboxFilter {
        order_reference: Some(order.reference.clone()),
        ..InboxFilter::default()
    };
    let (updates, more_updates) = ops::list(state.inbox.store(), &filter, None, PAGE).await?;
    let process = state.service.processes().get(&order.process).cloned();
    let events = process
        .as_deref()
        .map(|p| manual_events(p, &order))
        .unwrap_or_default();
    let skus: BTreeMap<i64, &str> = order.items.iter().map(|i| (i.id, i.sku.as_str())).collect();
    let body = html! {
        section.card {
            dl.facts {
                dt { "Process" } dd { a href={ "/admin/processes/" (urlencode(&order.process)) } { (order.process) } }
                dt { "Version" } dd { (order.version) }
                dt { "Created" } dd { (layout::time(order.created_at)) " UTC" }
                dt { "Updated" } dd { (layout::time(order.updated_at)) " UTC" }
                @if let Some(c) = &order.currency { dt { "Currency" } dd { (c) } }
            }
            @if !order.attributes.is_empty() {
                details { summary { "Attributes" } (layout::json(&serde_json::Value::Object(order.attributes.clone()))) }
            }
        }
        section.card {
            h2 { "Manual events" }
            @if events.is_empty() {
                p.empty { "No manual event applies to the items' current states." }
            } @else {
                div.events {
                    @for (event, items) in &events {
                        form method="post" action={ "/admin/orders/" (order.id) "/events" } {
                            (layout::csrf(session))
                            input type="hidden" name="event" value=(event);
                            input type="hidden" name="version" value=(order.version);
                            button type="submit" title={ "applies to " (items) " item(s)" } { (event) }
                        }
                    }
                }
                p.hint { "Sent with version " (order.version) ": if the order changes meanwhile, nothing happens and you are asked to reload." }
            }
        }
        section.card {
            h2 { "Items" }
            div.scroll {
                table {
                    thead { tr { th.num { "Id" } th { "SKU" } th.num { "Qty" } th { "State" } th { "Flags" } th { "Reserved" } th { "Since (UTC)" } } }
                    tbody {
                        @for i in &order.items {
                            tr {
                                td.num { (i.id) }
                                td { (i.sku) }
                                td.num { (i.quantity) }
                                td { span.tag.state { (i.state) } }
                                td { @for f in &i.flags { span.tag { (f) } " " } }
                                td { @if i.reserved { span.tag.reserved { "reserved" } } @else { "–" } }
                                td { (layout::time(i.state_entered_at)) }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "History" }
            (timeline(&history, &skus))
        }
        section.card {
            h2 { "ERP updates" }
            @if updates.is_empty() {
                p.empty { "None for this order." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Received (UTC)" } th { "Status" } th { "Event" } th { "Last error" } } }
                        tbody {
                            @for u in &updates {
                                tr {
                                    td { a href={ "/admin/inbox/" (u.id) } { (layout::time(u.received_at)) } }
                                    td { (layout::status(u.status)) }
                                    td { (u.event.as_deref().unwrap_or("–")) }
                                    td.error { (last_message(u.errors())) }
                                }
                            }
                        }
                    }
                }
                @if more_updates.is_some() {
                    p { a href={ "/admin/inbox?order_reference=" (urlencode(&order.reference)) } { "All updates of this order →" } }
                }
            }
        }
    };
    let title = format!("Order {}", order.reference);
    Ok(html(
        status,
        layout::page(&title, Nav::Orders, session, flash, body),
    ))
}

fn timeline(history: &[crate::domain::view::HistoryEntry], skus: &BTreeMap<i64, &str>) -> Markup {
    html! {
        ol.timeline {
            @for h in history.iter().rev() {
                li {
                    div.when { (layout::time(h.at)) }
                    div.what {
                        "Item " (h.item) " (" (skus.get(&h.item).copied().unwrap_or("?")) "): "
                        @if let Some(from) = &h.from { span.tag.state { (from) } " → " }
                        span.tag.state { (h.to) }
                        @if let Some(e) = &h.event { " on " strong { (e) } }
                        " · " span.source { (h.source) }
                        @if let Some(r) = &h.reason { div.error { (r) } }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EventForm {
    event: String,
    version: i64,
}

/// `POST /admin/orders/{id}/events`: triggers a manual event at the version the page
/// showed. A stale page changes nothing and says so (409).
pub(super) async fn trigger(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Protected { session, form }: Protected<EventForm>,
) -> UiResult {
    let event = EventName::parse(form.event.as_str())
        .map_err(|e| UiError::bad_form(format!("not an event name: {}", e.0)))?;
    let change = Change {
        expected: Some(Version(form.version)),
        attributes: None,
        items: None,
        item_attributes: None,
        event: Some(EventInput {
            event,
            manual_only: true,
        }),
        source: Source::Api,
    };
    match state.service.apply(Target::Id(OrderId(id)), change).await {
        Ok(applied) => {
            tracing::info!(client = %session.client, order = id, event = %form.event, "manual event from the admin UI");
            let to = format!(
                "/admin/orders/{id}?triggered={}&moved={}",
                urlencode(&form.event),
                applied.moved.len()
            );
            Ok((StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response())
        }
        Err(DomainError::VersionConflict { current }) => {
            Ok(conflict(&session, id, form.version, current))
        }
        Err(e @ DomainError::EventNotApplicable { .. }) => {
            let flash = Flash::Warning(format!("Nothing happened: {e}."));
            order_page(&state, &session, id, Some(flash), StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The answer to a button pressed on a stale page.
fn conflict(session: &Session, id: i64, shown: i64, current: i64) -> Response {
    let body = html! {
        p.flash.warning role="alert" {
            "This order changed meanwhile (the page showed version " (shown) ", it is now at version "
            (current) "), so nothing was done. Reload the order to see what changed, then try again."
        }
        p { a.button href={ "/admin/orders/" (id) } { "Reload the order" } }
    };
    html(
        StatusCode::CONFLICT,
        layout::page("Order changed meanwhile", Nav::Orders, session, None, body),
    )
}
