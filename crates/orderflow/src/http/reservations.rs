//! `GET /v1/reservations/{sku}`: stock held by items in reserved states.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{ApiPath, ShopOrAdmin};
use super::{ApiError, ApiResult, AppState};
use crate::domain::types::Sku;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Reservation {
    pub sku: String,
    /// Sum of the quantities of items of this SKU whose state is `reserved="true"`.
    pub reserved_quantity: i64,
}

#[utoipa::path(get, path = "/v1/reservations/{sku}", tag = "orders", security(("bearer" = [])),
    params(("sku" = String, Path, min_length = 1, max_length = 255, description = "SKU")),
    responses((status = 200, body = Reservation)))]
pub(super) async fn reservations(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(sku): ApiPath<String>,
) -> ApiResult<Json<Reservation>> {
    let sku = Sku::parse(sku).map_err(|e| ApiError::InvalidRequest {
        message: e.to_string(),
        path: Some("sku".into()),
    })?;
    let reserved_quantity = state
        .service
        .store()
        .reserved_quantity(sku.as_str())
        .await?;
    Ok(Json(Reservation {
        sku: sku.into_inner(),
        reserved_quantity,
    }))
}
