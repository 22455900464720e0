//! `/v1/orders`: create, read (read-after-write, from the primary store), patch, history.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath, ShopOrAdmin, if_match};
use super::{ApiError, ApiResult, AppState};
use crate::domain::types::{Currency, OrderId, OrderReference, Quantity, Sku, UnitPrice, Version};
use crate::domain::view::{HistoryEntry, OrderView};
use crate::domain::{Change, NewItemInput, NewOrderInput, Source, Target};

/// Most items one order may have.
const MAX_ITEMS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateOrder {
    /// Unique across orders; no control characters or surrounding whitespace.
    #[schema(value_type = String, min_length = 1, max_length = 255, example = "DE--1001")]
    pub reference: OrderReference,
    /// Name of a loaded main process.
    #[schema(example = "ErpOrder01")]
    pub process: String,
    /// ISO 4217 code.
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: Option<Currency>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// 1 to 1,000 items.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<CreateItem>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateItem {
    /// No control characters or surrounding whitespace.
    #[schema(value_type = String, min_length = 1, max_length = 255, example = "SKU-1")]
    pub sku: Sku,
    /// An integer from 1 to 1,000,000.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000, example = 1)]
    pub quantity: Quantity,
    /// Minor units (cents) of the order's currency, 0 to 1,000,000,000,000.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64, example = 1999)]
    pub unit_price: Option<UnitPrice>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchOrder {
    /// The version the change is based on; or send `If-Match: "<version>"`.
    pub version: Option<i64>,
    /// Merged into the order's attributes (JSON merge patch: `null` removes a key).
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct History {
    pub order: i64,
    pub entries: Vec<HistoryEntry>,
}

/// Creates an order; its items enter the process's initial state and its onEnter chain runs.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = CreateOrder,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = OrderView),
        (status = 409, description = "reference_taken"),
        (status = 422, description = "invalid_request or unknown_process"),
    ))]
#[tracing::instrument(skip_all, fields(reference, client))]
pub(super) async fn create_order(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiJson(body): ApiJson<CreateOrder>,
) -> ApiResult<(StatusCode, Json<OrderView>)> {
    tracing::Span::current().record("reference", body.reference.as_str());
    if body.items.is_empty() || body.items.len() > MAX_ITEMS {
        return Err(ApiError::InvalidRequest {
            message: format!("an order needs 1 to {MAX_ITEMS} items"),
            path: Some("$.items".into()),
        });
    }
    let input = NewOrderInput {
        reference: body.reference,
        process: body.process,
        currency: body.currency,
        attributes: body.attributes.unwrap_or_default(),
        items: body
            .items
            .into_iter()
            .map(|i| NewItemInput {
                sku: i.sku,
                quantity: i.quantity,
                unit_price: i.unit_price.map(UnitPrice::get),
                attributes: i.attributes.unwrap_or_default(),
            })
            .collect(),
    };
    let order = state.service.create(input, Source::Api).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// Reads an order from the primary store (read-after-write consistent).
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, description = "order_not_found")))]
pub(super) async fn get_order(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<OrderView>> {
    Ok(Json(state.service.get(&Target::Id(OrderId(id))).await?))
}

/// Reads an order by the shop's reference, from the primary store.
#[utoipa::path(get, path = "/v1/orders/by-reference/{reference}", tag = "orders",
    security(("bearer" = [])),
    params(("reference" = String, Path, min_length = 1, max_length = 255, description = "Order reference")),
    responses((status = 200, body = OrderView), (status = 404, description = "order_not_found")))]
pub(super) async fn get_order_by_reference(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<OrderView>> {
    let reference = OrderReference::parse(reference).map_err(|e| ApiError::InvalidRequest {
        message: e.to_string(),
        path: Some("reference".into()),
    })?;
    Ok(Json(
        state.service.get(&Target::Reference(reference)).await?,
    ))
}

/// Merges attributes into the order, if `version` (or `If-Match`) is still current.
#[utoipa::path(patch, path = "/v1/orders/{id}", tag = "orders", request_body = PatchOrder,
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id"),
        ("If-Match" = Option<String>, Header, description = "Expected version, quoted")),
    responses((status = 200, body = OrderView),
        (status = 404, description = "order_not_found"),
        (status = 409, description = "version_conflict, with current_version"),
        (status = 428, description = "version_required")))]
#[tracing::instrument(skip_all, fields(order = id, client))]
pub(super) async fn patch_order(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchOrder>,
) -> ApiResult<Json<OrderView>> {
    let expected = body
        .version
        .or(if_match(&headers)?)
        .ok_or(ApiError::VersionRequired)?;
    let change = Change {
        expected: Some(Version(expected)),
        attributes: Some(body.attributes),
        items: None,
        item_attributes: None,
        event: None,
        source: Source::Api,
    };
    let applied = state.service.apply(Target::Id(OrderId(id)), change).await?;
    Ok(Json(applied.order))
}

/// Every transition of the order's items, oldest first, with its source.
#[utoipa::path(get, path = "/v1/orders/{id}/history", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses((status = 200, body = History), (status = 404, description = "order_not_found")))]
pub(super) async fn order_history(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<History>> {
    let entries = state.service.history(OrderId(id)).await?;
    Ok(Json(History { order: id, entries }))
}
