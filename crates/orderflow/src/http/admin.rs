//! Operations for admins: the inbox (`/v1/admin/inbox...`: list, show, retry, replay) and
//! `/v1/admin/stats`. The rules live in [`crate::inbox::ops`], shared with the
//! `orderflow inbox` commands.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AdminOnly, ApiJson, ApiPath, ApiQuery};
use super::paging::{Cursor, PageLimit};
use super::{ApiError, ApiResult, AppState};
use crate::inbox::model::{UpdateDetail, UpdateStatus};
use crate::inbox::ops::{self, InboxFilter, ReplayReport, StatusCounts};
use crate::inbox::transit::TransitStats;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InboxQuery {
    /// Only updates with this status.
    #[param(inline)]
    pub status: Option<UpdateStatus>,
    pub order_reference: Option<String>,
    /// Only updates with this OMS event.
    pub event: Option<String>,
    /// Received at or after this instant (RFC 3339).
    pub received_after: Option<DateTime<Utc>>,
    /// Received before this instant (RFC 3339).
    pub received_before: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<PageLimit>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of updates in receive order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InboxPage {
    pub updates: Vec<UpdateDetail>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which updates to replay; at least one filter is required. With `dry_run` nothing
/// changes and the answer says how many would be retried.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    pub status: Option<UpdateStatus>,
    pub order_reference: Option<String>,
    pub event: Option<String>,
    /// Received at or after this instant (RFC 3339).
    pub received_after: Option<DateTime<Utc>>,
    /// Received before this instant (RFC 3339).
    pub received_before: Option<DateTime<Utc>>,
    #[serde(default)]
    pub dry_run: bool,
}

/// How far the list view (`GET /v1/orders`) is behind the primary store.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProjectionStats {
    /// Changes not yet in the list view.
    pub pending_changes: i64,
    /// Age of the oldest of them; 0 when the list view is current.
    pub lag_seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Stats {
    /// Inbox updates by status; every status is present.
    pub inbox: StatusCounts,
    /// Age of the oldest accepted, processing or parked update; 0 when there is none.
    pub oldest_pending_age_seconds: f64,
    pub projection: ProjectionStats,
    /// With a broker transport: what the broker holds (absent with the database
    /// transport, or when the broker does not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit: Option<TransitStats>,
}

/// Lists inbox updates with everything stored about them, oldest first, by filter. The
/// cursor is keyset on the receive order, so pages stay stable while updates arrive.
#[utoipa::path(get, path = "/v1/admin/inbox", tag = "admin", security(("bearer" = [])),
    params(InboxQuery),
    responses(
        (status = 200, body = InboxPage),
        (status = 403, description = "forbidden: admin role only"),
        (status = 422, description = "invalid_request"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn list_inbox(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<InboxPage>> {
    let limit = PageLimit::get(q.limit);
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(Cursor::Inbox.decode(c)?),
    };
    let filter = InboxFilter {
        status: q.status,
        order_reference: q.order_reference,
        event: q.event,
        received_after: q.received_after,
        received_before: q.received_before,
    };
    let (rows, next) = ops::list(state.inbox.store(), &filter, after, limit).await?;
    Ok(Json(InboxPage {
        updates: rows.iter().map(UpdateDetail::of).collect(),
        next_cursor: next.map(|seq| Cursor::Inbox.encode(seq)),
    }))
}

/// Everything stored about one update: payload, every attempt's error, result, lease.
#[utoipa::path(get, path = "/v1/admin/inbox/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Update id")),
    responses(
        (status = 200, body = UpdateDetail),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, update = %id))]
pub(super) async fn get_inbox_update(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<UpdateDetail>> {
    match state.inbox.store().update_by_id(&id).await? {
        Some(row) => Ok(Json(UpdateDetail::of(&row))),
        None => Err(ApiError::NotFound(format!("no update {id}"))),
    }
}

/// Makes a dead, rejected, ignored or parked update due now, with a fresh set of attempts
/// and park time; its error history is kept and gets an `operator_retry` entry. The worker
/// picks it up at once.
#[utoipa::path(post, path = "/v1/admin/inbox/{id}/retry", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Update id")),
    responses(
        (status = 200, body = UpdateDetail, description = "Accepted again"),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
        (status = 409, description = "not_retryable: applied, accepted or processing (`status` names it)"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, update = %id))]
pub(super) async fn retry_update(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<UpdateDetail>> {
    // The store wakes the worker when the retry commits.
    let row = ops::retry(state.inbox.store(), &id).await?;
    Ok(Json(UpdateDetail::of(&row)))
}

/// Retries every dead, rejected, ignored and parked update that matches the filter, in
/// pages of 500 (one transaction each), and says how many matched and were retried.
#[utoipa::path(post, path = "/v1/admin/inbox/replay", tag = "admin",
    security(("bearer" = [])), request_body = ReplayRequest,
    responses(
        (status = 200, body = ReplayReport),
        (status = 403, description = "forbidden: admin role only"),
        (status = 422, description = "invalid_request: no filter, or a malformed one"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn replay(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> ApiResult<Json<ReplayReport>> {
    let filter = InboxFilter {
        status: body.status,
        order_reference: body.order_reference,
        event: body.event,
        received_after: body.received_after,
        received_before: body.received_before,
    };
    let report = ops::replay(state.inbox.store(), &filter, body.dry_run, |_| {}).await?;
    Ok(Json(report))
}

/// Inbox depth by status, the oldest pending update's age and the list view's lag. Also
/// refreshes the inbox gauges of `/metrics`.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = Stats),
        (status = 403, description = "forbidden: admin role only"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn stats(
    State(state): State<AppState>,
    admin: AdminOnly,
) -> ApiResult<Json<Stats>> {
    let store = state.inbox.store();
    let inbox = ops::refresh_gauges(store).await?;
    let (pending, oldest) = store.projection_backlog().await?;
    let lag = oldest.map_or(0.0, |t| (Utc::now() - t).as_seconds_f64().max(0.0));
    Ok(Json(Stats {
        inbox: inbox.counts,
        oldest_pending_age_seconds: inbox.oldest_pending_age_seconds,
        projection: ProjectionStats {
            pending_changes: pending,
            lag_seconds: lag,
        },
        transit: ops::transit_stats(&state.inbox).await,
    }))
}
