//! `POST /v1/orders/{id}/events`: trigger an OMS event on an order's items.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath, ShopOrAdmin, if_match};
use super::{ApiError, ApiResult, AppState};
use crate::domain::types::{EventName, OrderId, Role, Version};
use crate::domain::view::{Move, OrderView, Stay};
use crate::domain::{Change, EventInput, ItemRef, Source, Target};
use crate::inbox::model::MAX_SELECTORS;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerEvent {
    #[schema(value_type = String, min_length = 1, max_length = 255, example = "pay")]
    pub event: EventName,
    /// Item ids, at most 1,000; all items of the order when absent.
    #[schema(max_items = 1000)]
    pub items: Option<Vec<i64>>,
    /// Only apply if the order is still at this version (or send `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Triggered {
    pub order: OrderView,
    pub moved: Vec<Move>,
    /// Items with no transition for the event in their state.
    pub not_applicable: Vec<i64>,
    /// Items the event applied to that stayed (no condition held, a command failed, an
    /// unbound plugin), with the reason.
    pub stayed: Vec<Stay>,
}

/// Triggers an event. Shop clients may trigger manual events only; admins any event.
#[utoipa::path(post, path = "/v1/orders/{id}/events", tag = "orders", request_body = TriggerEvent,
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses((status = 200, body = Triggered),
        (status = 403, description = "forbidden (role), or event_not_manual: a shop client triggered an event that is not manual"),
        (status = 404, description = "order_not_found"),
        (status = 409, description = "event_not_applicable (naming each item's state) or version_conflict"),
        (status = 422, description = "unknown_event, unknown_item or invalid_request")))]
#[tracing::instrument(skip_all, fields(order = id, event, client))]
pub(super) async fn trigger_event(
    State(state): State<AppState>,
    ShopOrAdmin(caller): ShopOrAdmin,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TriggerEvent>,
) -> ApiResult<Json<Triggered>> {
    tracing::Span::current().record("event", body.event.as_str());
    if let Some(items) = &body.items
        && items.len() > MAX_SELECTORS
    {
        return Err(ApiError::InvalidRequest {
            message: format!("an event selects at most {MAX_SELECTORS} items"),
            path: Some("$.items".into()),
        });
    }
    let expected = body.version.or(if_match(&headers)?).map(Version);
    let change = Change {
        expected,
        attributes: None,
        items: body
            .items
            .map(|ids| ids.into_iter().map(ItemRef::Id).collect()),
        item_attributes: None,
        event: Some(EventInput {
            event: body.event,
            manual_only: caller.role != Role::Admin,
        }),
        source: Source::Api,
    };
    let applied = state.service.apply(Target::Id(OrderId(id)), change).await?;
    Ok(Json(Triggered {
        order: applied.order,
        moved: applied.moved,
        not_applicable: applied.not_applicable,
        stayed: applied.stayed,
    }))
}
