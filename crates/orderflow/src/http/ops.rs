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
pub(super) struct Status {
    pub status: &'static str,
}

/// Ready, and what the loaded process definitions cannot place.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Readiness {
    pub status: &'static str,
    /// Items whose process or state the loaded definitions do not have (they do not move
    /// until an operator moves them: `POST /v1/admin/items/move`), counted at start and
    /// after each move.
    pub stray_items: i64,
    pub strays: Vec<crate::domain::strays::Strays>,
    /// With a broker transport: which, and what an acknowledged update survives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit: Option<TransitReadiness>,
}

/// The broker transport in use.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TransitReadiness {
    /// `rabbitmq` or `redis`.
    pub transport: &'static str,
    /// `quorum_confirms` (RabbitMQ), `fsync_always` (Redis with `appendfsync always`) or
    /// `accepted_loss` (Redis without it, started because `accept_loss` is set).
    pub durability: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Status)))]
pub(super) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The store answers and every migration of this build is applied; also says how many items
/// are in states the loaded process definitions do not have (still ready: every other
/// order works).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "not_ready")))]
pub(super) async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Readiness>> {
    match state.service.store().ready().await {
        Ok(true) => {
            let strays = state.service.last_strays();
            Ok(Json(Readiness {
                status: "ready",
                stray_items: strays.iter().map(|s| s.items).sum(),
                strays,
                transit: state.inbox.transit().map(|t| TransitReadiness {
                    transport: t.name(),
                    durability: t.durability(),
                }),
            }))
        }
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
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The inbox gauges are also refreshed every few seconds in the background; a scrape
    // gets current values (each large count at a bounded cost) unless the store is slow.
    let refresh = crate::inbox::ops::refresh_gauges_bounded(state.service.store());
    if let Ok(Err(e)) = tokio::time::timeout(GAUGE_REFRESH_LIMIT, refresh).await {
        tracing::debug!(error = %e, "refreshing the inbox gauges failed");
    }
    let body = crate::telemetry::metrics().render();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
