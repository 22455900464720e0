//! The inbox pages: updates by filter with paging, one update (payload, every attempt's
//! error, result), retry one, and replay by filter after a dry-run count and a
//! confirmation. The rules are [`crate::inbox::ops`]'s, as for the API and the CLI.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::IntoResponse;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dashboard::{last_message, urlencode};
use super::layout::{self, Flash, Nav};
use super::session::{Protected, Session};
use super::{UiError, UiResult, html};
use crate::http::AppState;
use crate::inbox::model::{UpdateStatus, is_retry_marker};
use crate::inbox::ops::{self, InboxFilter};

/// Updates per page.
const PAGE: i64 = 50;

/// The filter as the form sends it: every field optional, an empty field is no filter.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct FilterForm {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    order_reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    event: String,
    /// UTC, `YYYY-MM-DDTHH:MM` (a `datetime-local` field) or RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    received_after: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    received_before: String,
}

impl FilterForm {
    /// The typed filter, or what is wrong with a field.
    fn filter(&self) -> Result<InboxFilter, String> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let status = match self.status.trim() {
            "" => None,
            s => Some(UpdateStatus::parse(s).ok_or_else(|| format!("unknown status {s:?}"))?),
        };
        Ok(InboxFilter {
            status,
            order_reference: text(&self.order_reference),
            event: text(&self.event),
            received_after: time(&self.received_after, "received after")?,
            received_before: time(&self.received_before, "received before")?,
        })
    }

    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="status" value=(self.status);
            input type="hidden" name="order_reference" value=(self.order_reference);
            input type="hidden" name="event" value=(self.event);
            input type="hidden" name="received_after" value=(self.received_after);
            input type="hidden" name="received_before" value=(self.received_before);
        }
    }
}

/// A time field: empty, RFC 3339, or a `datetime-local` value read as UTC.
fn time(s: &str, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .map(|t| Some(t.and_utc()))
    .ok_or_else(|| format!("{what}: {s:?} is not a time (YYYY-MM-DD HH:MM, UTC)"))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(flatten)]
    filter: FilterForm,
    /// Receive position to continue after.
    after: Option<i64>,
    /// Set after a replay: how many were retried of how many matched.
    replayed: Option<u64>,
    matched: Option<u64>,
}

fn filter_form(f: &FilterForm) -> Markup {
    html! {
        form.filters.card method="get" action="/admin/inbox" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in UpdateStatus::ALL {
                        option value=(s.as_str()) selected[f.status == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Order reference" input type="text" name="order_reference" value=(f.order_reference); }
            label { "Event" input type="text" name="event" value=(f.event); }
            label { "Received after (UTC)" input type="datetime-local" name="received_after" value=(f.received_after); }
            label { "Received before (UTC)" input type="datetime-local" name="received_before" value=(f.received_before); }
            div.actions {
                button type="submit" { "Filter" }
                a.button.secondary href="/admin/inbox" { "Clear" }
            }
        }
    }
}

/// `GET /admin/inbox`.
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> UiResult {
    let filter = match q.filter.filter() {
        Ok(f) => f,
        Err(problem) => {
            let body = filter_form(&q.filter);
            return Ok(html(
                StatusCode::UNPROCESSABLE_ENTITY,
                layout::page(
                    "Inbox",
                    Nav::Inbox,
                    &session,
                    Some(Flash::Warning(problem)),
                    body,
                ),
            ));
        }
    };
    let (rows, next) = ops::list(state.inbox.store(), &filter, q.after, PAGE).await?;
    let flash = q.replayed.map(|n| {
        Flash::Done(format!(
            "Replayed: {n} of {} matching updates were made due again.",
            q.matched.unwrap_or(n)
        ))
    });
    let query = q.filter.query();
    let body = html! {
        (filter_form(&q.filter))
        @if filter.status.is_some() || filter.order_reference.is_some() || filter.event.is_some()
            || filter.received_after.is_some() || filter.received_before.is_some() {
            p { a.button.secondary href={ "/admin/inbox/replay?" (query) } { "Replay matching updates…" } }
        }
        @if rows.is_empty() {
            p.empty { "No updates match." }
        } @else {
            div.scroll {
                table.updates {
                    thead { tr { th { "Received (UTC)" } th { "Status" } th { "Order" } th { "Event" } th.num { "Attempts" } th { "Last error" } } }
                    tbody {
                        @for u in &rows {
                            tr {
                                td { a href={ "/admin/inbox/" (u.id) } { (layout::time(u.received_at)) } }
                                td { (layout::status(u.status)) }
                                td { a href={ "/admin/orders?reference=" (urlencode(&u.order_reference)) } { (u.order_reference) } }
                                td { (u.event.as_deref().unwrap_or("–")) }
                                td.num { (u.attempts) }
                                td.error { (last_message(u.errors())) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if q.after.is_some() { a href={ "/admin/inbox?" (query) } { "← First page" } }
            @if let Some(seq) = next {
                a href={ "/admin/inbox?" (query) (if query.is_empty() { "" } else { "&" }) "after=" (seq) } { "Next page →" }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page("Inbox", Nav::Inbox, &session, flash, body),
    ))
}

/// `GET /admin/inbox/replay`: how many updates the filter matches and how many would be
/// retried (a dry run), and the button that does it.
pub(super) async fn replay_preview(
    State(state): State<AppState>,
    session: Session,
    Query(form): Query<FilterForm>,
) -> UiResult {
    let filter = form.filter().map_err(UiError::bad_form)?;
    let report = ops::replay(state.inbox.store(), &filter, true, |_| {}).await?;
    let body = html! {
        section.card {
            p { "The filter matches " strong { (report.matched) } " updates; "
                strong { (report.retried) } " of them (dead, rejected, ignored or parked) would be made due again, with fresh attempts. The others are left as they are." }
            dl.facts {
                @for (name, value) in [("Status", &form.status), ("Order reference", &form.order_reference), ("Event", &form.event), ("Received after", &form.received_after), ("Received before", &form.received_before)] {
                    @if !value.is_empty() { dt { (name) } dd { (value) } }
                }
            }
            @if report.retried > 0 {
                form method="post" action="/admin/inbox/replay" {
                    (layout::csrf(&session))
                    (form.hidden())
                    input type="hidden" name="expected" value=(report.retried);
                    div.actions {
                        button.danger type="submit" { "Replay " (report.retried) " updates" }
                        a.button.secondary href={ "/admin/inbox?" (form.query()) } { "Cancel" }
                    }
                }
            } @else {
                p { "Nothing to replay. " a href={ "/admin/inbox?" (form.query()) } { "Back to the inbox" } }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page("Replay updates", Nav::Inbox, &session, None, body),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct ReplayForm {
    #[serde(flatten)]
    filter: FilterForm,
}

/// `POST /admin/inbox/replay`: the confirmed replay.
pub(super) async fn replay(
    State(state): State<AppState>,
    Protected { form, .. }: Protected<ReplayForm>,
) -> UiResult {
    let filter = form.filter.filter().map_err(UiError::bad_form)?;
    let report = ops::replay(state.inbox.store(), &filter, false, |_| {}).await?;
    let query = form.filter.query();
    let to = format!(
        "/admin/inbox?{query}{}replayed={}&matched={}",
        if query.is_empty() { "" } else { "&" },
        report.retried,
        report.matched
    );
    Ok((StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ShowQuery {
    retried: Option<u8>,
}

/// `GET /admin/inbox/{id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> UiResult {
    let Some(u) = state.inbox.store().update_by_id(&id).await? else {
        return Err(UiError::new(
            StatusCode::NOT_FOUND,
            format!("There is no update {id}."),
        ));
    };
    let flash = q.retried.map(|_| {
        Flash::Done("Retried: the update is due again and the worker picks it up now.".into())
    });
    let payload = u
        .payload()
        .cloned()
        .unwrap_or_else(|e| serde_json::json!({ "unreadable": e }));
    let body = html! {
        section.card {
            dl.facts {
                dt { "Status" } dd { (layout::status(u.status)) }
                dt { "Order" } dd { a href={ "/admin/orders?reference=" (urlencode(&u.order_reference)) } { (u.order_reference) } }
                dt { "Event" } dd { (u.event.as_deref().unwrap_or("–")) }
                dt { "Client" } dd { (u.client) }
                dt { "Idempotency key" } dd { code { (u.idempotency_key.as_deref().unwrap_or("–")) } }
                dt { "Received" } dd { (layout::time(u.received_at)) " UTC" }
                dt { "Processed" } dd { @if let Some(t) = u.processed_at { (layout::time(t)) " UTC" } @else { "–" } }
                dt { "Attempts" } dd { (u.attempts) }
                @if !u.status.is_final() {
                    dt { "Next attempt" } dd { (layout::time(u.next_attempt_at)) " UTC" }
                    @if let Some(t) = u.park_until { dt { "Parked until" } dd { (layout::time(t)) " UTC" } }
                }
            }
            @if UpdateStatus::RETRYABLE.contains(&u.status) {
                form method="post" action={ "/admin/inbox/" (u.id) "/retry" } {
                    (layout::csrf(&session))
                    button type="submit" { "Retry this update" }
                }
            }
        }
        section.card {
            h2 { "Attempts" }
            @if u.errors().is_empty() {
                p.empty { "No failed attempts." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th.num { "#" } th { "At (UTC)" } th { "Code" } th { "Message" } } }
                        tbody {
                            @for e in u.errors() {
                                tr.retry-marker[is_retry_marker(e)] {
                                    td.num { (field(e, "attempt")) }
                                    td { (when(e)) }
                                    td { code { (field(e, "code")) } }
                                    td.error { (field(e, "message")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(result) = u.result() {
            section.card { h2 { "Result" } (layout::json(result)) }
        }
        section.card { h2 { "Payload" } (layout::json(&payload)) }
    };
    let title = format!("Update {}", u.id);
    Ok(html(
        StatusCode::OK,
        layout::page(&title, Nav::Inbox, &session, flash, body),
    ))
}

/// An error entry's `at`, formatted as the rest of the UI's times.
fn when(entry: &Value) -> Markup {
    match entry
        .get("at")
        .and_then(Value::as_str)
        .map(DateTime::parse_from_rfc3339)
    {
        Some(Ok(t)) => layout::time(t.with_timezone(&Utc)),
        _ => html! { (field(entry, "at")) },
    }
}

fn field(entry: &Value, key: &str) -> String {
    match entry.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// `POST /admin/inbox/{id}/retry`.
pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Protected { .. }: Protected<super::session::Nothing>,
) -> UiResult {
    let row = ops::retry(state.inbox.store(), &id).await?;
    let to = format!("/admin/inbox/{}?retried=1", urlencode(&row.id));
    Ok((StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response())
}
