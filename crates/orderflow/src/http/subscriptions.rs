//! `/v1/admin/subscriptions`: order events to subscribers (admin). Create (the signing
//! secret is in that answer only), list, read, enable/disable, delete; a subscription's
//! deliveries with their attempts, retry of one delivery, replay since a time. The rules
//! live in [`crate::subscriptions`], shared with `orderflow subscriptions`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AdminOnly, ApiJson, ApiPath, ApiQuery};
use super::paging::PageLimit;
use super::{ApiResult, AppState};
use crate::subscriptions::{
    self as subs, Created, DeliveryView, EventType, ReplayReport, SubscriptionView,
};

/// A new subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSubscription {
    /// Where events are posted: `http` or `https`, no credentials in it.
    #[schema(example = "https://erp.example/orderflow-events")]
    pub url: String,
    /// Event types to send; absent or empty: every type.
    #[serde(default)]
    pub events: Vec<EventType>,
}

/// A change to a subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscriptionPatch {
    /// `false` stops deliveries (they wait); `true` resumes them and clears the failure
    /// run, and changes made meanwhile are delivered.
    pub enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
}

/// Delivery status filter.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveryQuery {
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<PageLimit>,
    /// `next_before` of the previous page: deliveries with a lower id.
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// Which events to send again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    /// Changes committed at or after this instant (RFC 3339).
    pub since: DateTime<Utc>,
}

/// Creates a subscription. The answer carries its `signing_secret` (`whsec_...`), shown
/// this once; deliveries start with the next change (replay sends earlier ones).
#[utoipa::path(post, path = "/v1/admin/subscriptions", tag = "admin",
    security(("bearer" = [])), request_body = NewSubscription,
    responses(
        (status = 201, body = Created),
        (status = 403, description = "forbidden: admin role only"),
        (status = 422, description = "invalid_request: a URL that is not http(s), has credentials, or (with outbound.block_private_addresses) points inside; an unknown event type"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn create(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiJson(body): ApiJson<NewSubscription>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let events: Vec<String> = body.events.iter().map(|t| t.as_str().to_owned()).collect();
    let created = subs::create(state.service.store(), &state.outbound, &body.url, &events).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every subscription, with its backlog, failure run and whether it is disabled (and why).
#[utoipa::path(get, path = "/v1/admin/subscriptions", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SubscriptionList),
        (status = 403, description = "forbidden: admin role only"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn list(
    State(state): State<AppState>,
    admin: AdminOnly,
) -> ApiResult<Json<SubscriptionList>> {
    let subscriptions = subs::list(state.service.store()).await?;
    Ok(Json(SubscriptionList { subscriptions }))
}

/// One subscription (its secret masked).
#[utoipa::path(get, path = "/v1/admin/subscriptions/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, subscription = id))]
pub(super) async fn get(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<SubscriptionView>> {
    Ok(Json(subs::get(state.service.store(), id).await?))
}

/// Enables or disables a subscription.
#[utoipa::path(patch, path = "/v1/admin/subscriptions/{id}", tag = "admin",
    security(("bearer" = [])), request_body = SubscriptionPatch,
    params(("id" = i64, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, subscription = id))]
pub(super) async fn patch(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SubscriptionPatch>,
) -> ApiResult<Json<SubscriptionView>> {
    let view = subs::set_enabled(state.service.store(), id, body.enabled).await?;
    if body.enabled {
        state.service.wake_deliveries();
    }
    Ok(Json(view))
}

/// Deletes a subscription with its deliveries and their attempts.
#[utoipa::path(delete, path = "/v1/admin/subscriptions/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, subscription = id))]
pub(super) async fn delete(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    subs::delete(state.service.store(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subscription's deliveries, newest first, each with every attempt (status code,
/// latency, response excerpt, error).
#[utoipa::path(get, path = "/v1/admin/subscriptions/{id}/deliveries", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Subscription id"), DeliveryQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
        (status = 422, description = "invalid_request"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, subscription = id))]
pub(super) async fn deliveries(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    let limit = PageLimit::get(q.limit);
    let (deliveries, next_before) = subs::deliveries(
        state.service.store(),
        id,
        q.status.map(DeliveryStatus::as_str),
        q.before,
        limit,
    )
    .await?;
    Ok(Json(DeliveryPage {
        deliveries,
        next_before,
    }))
}

/// Sends one delivery again: due now, with a fresh retry schedule (its attempts are kept).
/// A later event of its order waits for it again.
#[utoipa::path(post, path = "/v1/admin/subscriptions/{id}/deliveries/{delivery}/retry",
    tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Subscription id"),
        ("delivery" = i64, Path, description = "Delivery id")),
    responses(
        (status = 200, body = DeliveryView),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, subscription = path.0, delivery = path.1))]
pub(super) async fn retry(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(path): ApiPath<(i64, i64)>,
) -> ApiResult<Json<DeliveryView>> {
    let view = subs::retry(state.service.store(), path.0, path.1).await?;
    state.service.wake_deliveries();
    Ok(Json(view))
}

/// Queues the subscription's events again for every change committed since `since` that
/// it has already passed (delivered, dead, or of a type it does not take: only its types
/// are queued). New deliveries, same event ids and bodies.
#[utoipa::path(post, path = "/v1/admin/subscriptions/{id}/replay", tag = "admin",
    security(("bearer" = [])), request_body = ReplayRequest,
    params(("id" = i64, Path, description = "Subscription id")),
    responses(
        (status = 200, body = ReplayReport),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
        (status = 422, description = "invalid_request"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, subscription = id))]
pub(super) async fn replay(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> ApiResult<Json<ReplayReport>> {
    let report = subs::replay(state.service.store(), id, body.since, |_, _| {}).await?;
    state.service.wake_deliveries();
    Ok(Json(report))
}
