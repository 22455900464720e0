//! `/v1/admin/strays` and `/v1/admin/items/move`: items whose state (or process) the loaded
//! definitions do not have, and moving them into a state of the new definition. The rules
//! live in [`crate::domain::strays`], shared with `orderflow items`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{AdminOnly, ApiJson};
use super::{ApiError, ApiResult, AppState};
use crate::domain::strays::{Move, MoveError, MoveReport, Strays};

/// Move every item of `process` in state `from` to state `to`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveRequest {
    #[schema(min_length = 1, max_length = 255)]
    pub process: String,
    /// The state the items are in (usually one the loaded process no longer has); `*` for
    /// every item (whole orders).
    #[schema(min_length = 1, max_length = 255)]
    pub from: String,
    /// Move whole orders to this loaded process (e.g. a versioned name); orders with items
    /// outside `from` are skipped and named in the report.
    #[schema(min_length = 1, max_length = 255)]
    #[serde(default)]
    pub to_process: Option<String>,
    /// A state of the target process.
    #[schema(min_length = 1, max_length = 255)]
    pub to: String,
    /// Say what would move; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Items per process and state that the loaded definitions cannot place. Computed at
/// start and after each move (also shown by `/readyz`).
#[utoipa::path(get, path = "/v1/admin/strays", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<Strays>)))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn list_strays(
    State(state): State<AppState>,
    admin: AdminOnly,
) -> ApiResult<Json<Vec<Strays>>> {
    Ok(Json(state.service.strays().await?))
}

/// Moves the items, one order per transaction: they enter `to` as if they had moved there
/// (its timers are set, its onEnter event runs), each with a history row of source
/// `operator`; each order gets a new version.
#[utoipa::path(post, path = "/v1/admin/items/move", tag = "admin", security(("bearer" = [])),
    request_body = MoveRequest,
    responses(
        (status = 200, body = MoveReport),
        (status = 422, description = "invalid_request: the process is not loaded or has no state `to`"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn move_items(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiJson(req): ApiJson<MoveRequest>,
) -> ApiResult<Json<MoveReport>> {
    let now = crate::store::now();
    let report = state
        .service
        .move_items(
            &Move {
                process: &req.process,
                from: &req.from,
                to_process: req.to_process.as_deref(),
                to: &req.to,
                dry_run: req.dry_run,
            },
            now,
        )
        .await
        .map_err(|e| match e {
            MoveError::Domain(d) => ApiError::Domain(d),
            e @ MoveError::UnknownProcess(_) => ApiError::InvalidRequest {
                message: e.to_string(),
                path: Some(
                    if req.to_process.is_some() {
                        "$.to_process"
                    } else {
                        "$.process"
                    }
                    .into(),
                ),
            },
            e @ MoveError::UnknownTarget { .. } => ApiError::InvalidRequest {
                message: e.to_string(),
                path: Some("$.to".into()),
            },
        })?;
    if !req.dry_run {
        state.service.strays().await?;
    }
    Ok(Json(report))
}
