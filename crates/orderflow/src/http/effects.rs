//! After-commit effects for admins (`/v1/admin/effects...`): list by status, show one with
//! every attempt, retry a dead one. The executor is `outbound::effects`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::{AdminOnly, ApiPath, ApiQuery};
use super::paging::{Cursor, PageLimit};
use super::{ApiError, ApiResult, AppState};
use crate::store::effects::{AttemptRow, EffectFilter, EffectRow};

/// Where an effect is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum EffectStatus {
    /// Waiting to be sent (also between retries).
    Pending,
    /// Claimed by an executor, under a lease.
    Running,
    /// The receiver answered 2xx.
    Done,
    /// Out of attempts, or refused (a 4xx other than 408 and 429); `on_failure` was fed back.
    Dead,
}

impl EffectStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EffectsQuery {
    /// Only effects with this status.
    #[param(inline)]
    pub status: Option<EffectStatus>,
    /// Only effects of this order (its id).
    pub order_id: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<PageLimit>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One attempt: the response's status (none without a response), how long it took, the
/// start of the response body and the error.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EffectAttempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// At most 1 KiB of the response body.
    pub excerpt: Option<String>,
    pub error: Option<String>,
}

/// An after-commit effect: an HTTP command's call, with the body it sends.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Effect {
    /// Also the `Idempotency-Key` of its requests.
    pub id: i64,
    pub order_id: i64,
    /// The order version whose change recorded it.
    pub order_version: i64,
    /// `http` for HTTP commands; other kinds are an embedder's records, never run.
    pub kind: String,
    /// `pending`, `running`, `done` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// When it was done or died.
    pub done_at: Option<DateTime<Utc>>,
    /// When it is due (pending) or its lease ends (running).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub last_error: Option<String>,
    /// The request body less `effect_id` and `created_at` (see the README); null when the
    /// stored value cannot be read.
    pub payload: Value,
    /// Every attempt, oldest first (only in `GET /v1/admin/effects/{id}` and a retry's
    /// answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<EffectAttempt>>,
}

impl Effect {
    fn of(row: &EffectRow, attempts: Option<Vec<AttemptRow>>) -> Self {
        Self {
            id: row.id,
            order_id: row.order_id,
            order_version: row.order_version,
            kind: row.kind.clone(),
            status: row.status.clone(),
            attempts: row.attempts,
            created_at: row.created_at,
            done_at: row.done_at,
            next_attempt_at: row.next_attempt_at,
            lease_owner: row.lease_owner.clone(),
            last_error: row.last_error.clone(),
            payload: row.payload.ok().cloned().unwrap_or(Value::Null),
            attempt_log: attempts.map(|a| {
                a.into_iter()
                    .map(|a| EffectAttempt {
                        attempt: a.attempt,
                        at: a.at,
                        status_code: a.status_code,
                        latency_ms: a.latency_ms,
                        excerpt: a.excerpt,
                        error: a.error,
                    })
                    .collect()
            }),
        }
    }
}

/// A page of effects in creation order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EffectsPage {
    pub effects: Vec<Effect>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Lists after-commit effects, oldest first, by status and order.
#[utoipa::path(get, path = "/v1/admin/effects", tag = "admin", security(("bearer" = [])),
    params(EffectsQuery),
    responses(
        (status = 200, body = EffectsPage),
        (status = 403, description = "forbidden: admin role only"),
        (status = 422, description = "invalid_request"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name))]
pub(super) async fn list_effects(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiQuery(q): ApiQuery<EffectsQuery>,
) -> ApiResult<Json<EffectsPage>> {
    let limit = PageLimit::get(q.limit);
    let after_id = match &q.cursor {
        None => None,
        Some(c) => Some(Cursor::Effects.decode(c)?),
    };
    let filter = EffectFilter {
        status: q.status.map(|s| s.as_str().to_owned()),
        order_id: q.order_id,
        after_id,
        limit: limit + 1,
    };
    let mut rows = state.service.store().list_effects(&filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| Cursor::Effects.encode(r.id)))
        .flatten();
    Ok(Json(EffectsPage {
        effects: rows.iter().map(|r| Effect::of(r, None)).collect(),
        next_cursor,
    }))
}

/// One effect with every attempt.
#[utoipa::path(get, path = "/v1/admin/effects/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Effect id")),
    responses(
        (status = 200, body = Effect),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, effect = id))]
pub(super) async fn get_effect(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Effect>> {
    let store = state.service.store();
    let Some(row) = store.effect(id).await? else {
        return Err(ApiError::NotFound(format!("no effect {id}")));
    };
    let attempts = store.effect_attempts(id).await?;
    Ok(Json(Effect::of(&row, Some(attempts))))
}

/// Makes a dead effect pending and due now with a fresh set of attempts (its attempt log
/// is kept); the executor sends it again with the same `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/effects/{id}/retry", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Effect id")),
    responses(
        (status = 200, body = Effect, description = "Pending again"),
        (status = 403, description = "forbidden: admin role only"),
        (status = 404, description = "not_found"),
        (status = 409, description = "not_retryable: only dead effects (`status` names its status)"),
    ))]
#[tracing::instrument(skip_all, fields(client = %admin.0.name, effect = id))]
pub(super) async fn retry_effect(
    State(state): State<AppState>,
    admin: AdminOnly,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Effect>> {
    let store = state.service.store();
    match store.retry_effect(id, crate::store::now()).await? {
        None => Err(ApiError::NotFound(format!("no effect {id}"))),
        Some((row, false)) => Err(ApiError::EffectNotRetryable {
            id,
            status: row.status,
        }),
        Some((row, true)) => {
            tracing::info!("effect retried by an operator");
            let attempts = store.effect_attempts(id).await?;
            Ok(Json(Effect::of(&row, Some(attempts))))
        }
    }
}
