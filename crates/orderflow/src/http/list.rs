//! `GET /v1/orders`: the eventually consistent list view, read only from the projection.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, ShopOrAdmin};
use super::paging::{Cursor, PageLimit};
use super::{ApiResult, AppState};
use crate::store::projection::{ListFilter, ListRow};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Orders with at least one item in this state.
    pub state: Option<String>,
    pub process: Option<String>,
    /// Orders with at least one item of this SKU.
    pub sku: Option<String>,
    /// Orders changed after this instant (RFC 3339).
    pub updated_after: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<PageLimit>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OrderSummary {
    pub id: i64,
    pub reference: String,
    pub process: String,
    pub version: i64,
    /// Distinct states of the order's items.
    pub states: Vec<String>,
    pub skus: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl From<ListRow> for OrderSummary {
    fn from(r: ListRow) -> Self {
        Self {
            id: r.order_id,
            reference: r.reference,
            process: r.process,
            version: r.version,
            states: r.states.0,
            skus: r.skus.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Lists orders from the projection, oldest first. It may lag a write by a moment (the
/// lag is exported as `orderflow_projection_lag_seconds`). The cursor is keyset on the
/// order id, so pages stay stable while orders are written.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = OrderPage), (status = 422, description = "invalid_request")))]
pub(super) async fn list_orders(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<OrderPage>> {
    let limit = PageLimit::get(q.limit);
    let after_id = match &q.cursor {
        None => 0,
        Some(c) => Cursor::Orders.decode(c)?,
    };
    let filter = ListFilter {
        state: q.state,
        process: q.process,
        sku: q.sku,
        updated_after: q.updated_after,
        after_id,
        limit: limit + 1,
    };
    let mut rows = state.service.store().list_orders(&filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor::Orders.encode(r.order_id))
    } else {
        None
    };
    Ok(Json(OrderPage {
        orders: rows.into_iter().map(OrderSummary::from).collect(),
        next_cursor,
    }))
}
