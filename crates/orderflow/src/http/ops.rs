//! `/healthz`, `/readyz`, `/metrics`: public operational endpoints.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState};

/// How long a scrape waits for fresh inbox gauges before it renders the last ones.
const GAUGE_REFRESH_LIMIT: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The store answers and every migration of this build is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Status), (status = 503, description = "not_ready")))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    match state.service.store().ready().await {
        Ok(true) => Ok(Json(Status { status: "ready" })),
        Ok(false) => Err(ApiError::NotReady),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::NotReady)
        }
    }
}

/// Prometheus text exposition: request counts and durations, projection lag, inbox depth
/// by status and the age of its oldest pending update, processing outcomes, transitions.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The inbox gauges are also refreshed every few seconds in the background; a scrape
    // gets current values unless the store is slow to answer.
    let refresh = crate::inbox::ops::refresh_gauges(state.service.store());
    if let Ok(Err(e)) = tokio::time::timeout(GAUGE_REFRESH_LIMIT, refresh).await {
        tracing::debug!(error = %e, "refreshing the inbox gauges failed");
    }
    let body = crate::telemetry::metrics().render();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
