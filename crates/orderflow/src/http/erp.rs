//! ERP updates: `POST /v1/erp/order-updates`, `.../batch`, `GET .../{id}`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument as _;
use utoipa::ToSchema;

use super::extract::{Caller, ErpOrAdmin, JsonRequest, parse_json, parse_json_value};
use super::{ApiError, ApiResult, AppState};
use crate::config::ErpMode;
use crate::domain::types::{Role, check_idempotency_key};
use crate::inbox::ingest::{Incoming, Mode};
use crate::inbox::model::{Answer, OrderUpdate, UpdateStatus, UpdateView};
use crate::webhook::{SigningSecret, VerifyError};
use secrecy::ExposeSecret;

/// The longest `Prefer: wait=N` honoured; longer waits are cut to this.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(60);

/// The 202 answer: the update is stored (and, in wait mode, not finished in time).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UpdateAccepted {
    pub id: String,
    pub status: UpdateStatus,
    /// A parked update's reason (wait mode).
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<Value>,
}

/// The 200 answer in wait mode: the update was processed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UpdateOutcome {
    pub id: String,
    /// `applied`, `ignored`, or `dead`.
    pub status: UpdateStatus,
    /// For `applied`: the order's new version and the items moved.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it was ignored or is dead.
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<Value>,
}

/// The batch body as documented; entries are parsed one by one (see `BatchEnvelope`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "documents the body in OpenAPI")]
pub(super) struct UpdateBatch {
    pub updates: Vec<OrderUpdate>,
}

/// One result per entry of a batch, in order: `{id, status}` or `{error: {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BatchResults {
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// Stores an order update and answers at once (`Prefer: respond-async`, 202) or with the
/// result of processing it inline (`Prefer: wait=N`; past N seconds, 202). The default
/// mode comes from `[erp] default_mode`. A repeated `Idempotency-Key` (else `webhook-id`)
/// gets the first answer and has no second effect.
#[utoipa::path(post, path = "/v1/erp/order-updates", tag = "erp", request_body = OrderUpdate,
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "Unique per update and client, 1 to 255 printable ASCII characters without spaces; `webhook-id` is used when absent"),
        ("Prefer" = Option<String>, Header, description = "`respond-async` or `wait=N` (seconds, at most 60)"),
    ),
    responses(
        (status = 202, body = UpdateAccepted, description = "Stored; `Location` names its status resource"),
        (status = 200, body = UpdateOutcome, description = "Wait mode: processed (`applied`, `ignored`, `dead`), with the moved items"),
        (status = 404, description = "Wait mode: order_not_found (the update is parked until the order exists)"),
        (status = 409, description = "Wait mode: event_not_applicable under the reject policy"),
        (status = 422, description = "invalid_request (with `path`), unknown_event, idempotency_key_reused; in wait mode also a rejected update, with its code (`unknown_item`, `command_refused`, ...) and `update_id`"),
    ))]
pub(super) async fn post_update(
    State(state): State<AppState>,
    ErpOrAdmin(caller): ErpOrAdmin,
    JsonRequest { headers, body }: JsonRequest,
) -> Response {
    // A span costs about 4 % of the server's work for an async update (callgrind: made,
    // entered and left at each poll, closed), and such an update's answer logs nothing. So
    // the span that names the client is made only where a line may be logged: around wait
    // mode's inline processing, and around an error's answer (a 5xx logs its cause).
    let span = || tracing::info_span!("post_update", client = %caller.name);
    match accept_update(&state, &caller, &headers, &body, span).await {
        Ok(response) => response,
        Err(e) => span().in_scope(|| e.into_response()),
    }
}

async fn accept_update(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    span: impl Fn() -> tracing::Span,
) -> ApiResult<Response> {
    verify_signature(caller, headers, body)?;
    let value = parse_json_value(body)?;
    let key = idempotency_key(headers)?;
    let (mode, applied) = mode(
        headers,
        state.inbox.settings().erp.default_mode,
        state.inbox.settings().default_wait(),
    )?;
    let incoming = Incoming {
        client: caller.name.clone(),
        key,
        body: value,
        path: "$".into(),
    };
    // Boxed: the accepting future is large (wait mode, transports), and the handler's own
    // future is moved several times on its way into hyper's task; a pointer moves cheaply.
    let accepting = state.inbox.accept(incoming, mode);
    let accepted = match mode {
        Mode::Async => Box::pin(accepting).await?,
        Mode::Wait(_) => Box::pin(accepting.instrument(span())).await?,
    };
    let mut response = answer_response(accepted.answer());
    response
        .headers_mut()
        .insert(HeaderName::from_static("preference-applied"), applied);
    Ok(response)
}

/// Stores up to `[erp] max_batch` updates, each its own inbox row, and answers 202 with
/// one result per entry, in order. Invalid entries get their error and store nothing;
/// the others are stored. An entry's idempotency key is its `idempotency_key`, else the
/// request's `Idempotency-Key` (or `webhook-id`) with `#<index>` appended.
#[utoipa::path(post, path = "/v1/erp/order-updates/batch", tag = "erp", request_body = UpdateBatch,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Key of the batch, 1 to 255 printable ASCII characters without spaces; entry `i` uses `<key>#<i>`")),
    responses(
        (status = 202, body = BatchResults),
        (status = 422, description = "invalid_request: not `{updates: [...]}`, or more than max_batch entries"),
    ))]
#[tracing::instrument(skip_all, fields(client = %caller.name, size))]
pub(super) async fn post_batch(
    State(state): State<AppState>,
    ErpOrAdmin(caller): ErpOrAdmin,
    JsonRequest { headers, body }: JsonRequest,
) -> ApiResult<Response> {
    verify_signature(&caller, &headers, &body)?;
    let envelope: BatchEnvelope = parse_json(&body)?;
    tracing::Span::current().record("size", envelope.updates.len());
    let key = idempotency_key(&headers)?;
    let entries = envelope
        .updates
        .into_iter()
        .enumerate()
        .map(|(i, body)| Incoming {
            client: caller.name.clone(),
            key: key.as_ref().map(|k| format!("{k}#{i}")),
            body,
            path: format!("$.updates[{i}]"),
        })
        .collect();
    let results: Vec<Value> = Box::pin(state.inbox.accept_batch(entries))
        .await?
        .into_iter()
        .map(|r| match r {
            Ok(accepted) => answer_parts(accepted.answer()).1,
            Err(e) => ApiError::from(e).body(),
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "results": results }))).into_response())
}

/// The batch body with entries kept as JSON, so each is checked on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope {
    updates: Vec<Value>,
}

/// An update's status. ERP clients see their own updates; admins see all. With a broker
/// transport, an update the broker holds and no consumer has stored yet is `accepted`
/// with `in_transit: true` (its `received_at` is absent when it was sent with an
/// idempotency key: its id carries no time, so a repeat gets the same id).
#[utoipa::path(get, path = "/v1/erp/order-updates/{id}", tag = "erp", security(("bearer" = [])),
    params(("id" = String, Path, description = "Update id from the 202")),
    responses((status = 200, body = UpdateView), (status = 404, description = "not_found")))]
pub(super) async fn get_update(
    State(state): State<AppState>,
    ErpOrAdmin(caller): ErpOrAdmin,
    super::extract::ApiPath(id): super::extract::ApiPath<String>,
) -> ApiResult<Response> {
    let row = state.inbox.store().update_by_id(&id).await?;
    let allowed = |client: &str| caller.role == Role::Admin || client == caller.name;
    match row {
        Some(row) if allowed(&row.client) => Ok(Json(UpdateView::of(&row)).into_response()),
        Some(_) => Err(ApiError::NotFound(format!("no update {id}"))),
        None => match state.inbox.in_transit(&id) {
            Some(t) if allowed(&t.client) => {
                let mut view = json!({
                    "id": id,
                    "status": UpdateStatus::Accepted,
                    "order_reference": t.order_reference,
                    "event": t.event,
                    "attempts": 0,
                    "in_transit": true,
                });
                if let Some(at) = t.received_at() {
                    view["received_at"] = json!(at);
                }
                Ok(Json(view).into_response())
            }
            _ => Err(ApiError::NotFound(format!("no update {id}"))),
        },
    }
}

/// Checks the Standard Webhooks signature when the client has a signing secret.
fn verify_signature(caller: &Caller, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let Some(secret) = &caller.signing_secret else {
        return Ok(());
    };
    let secret = SigningSecret::parse(secret.expose_secret()).map_err(|_| {
        ApiError::Internal(format!("client {} has an invalid signing secret", caller.name).into())
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    secret
        .verify(header, body, chrono::Utc::now().timestamp())
        .map_err(|e| {
            metrics::counter!("orderflow_signature_failures_total").increment(1);
            ApiError::BadSignature(match e {
                VerifyError::MissingHeader(_) => {
                    "missing webhook-id, webhook-timestamp or webhook-signature"
                }
                VerifyError::BadTimestamp => "webhook-timestamp is not a unix time in seconds",
                VerifyError::OutOfTolerance => {
                    "webhook-timestamp is more than 300 s away from the server's clock"
                }
                VerifyError::NoMatch => "no signature in webhook-signature matches the body",
            })
        })
}

/// `Idempotency-Key`, else `webhook-id` (or `svix-id`): 1 to 255 printable ASCII
/// characters without spaces.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    for name in ["idempotency-key", "webhook-id", "svix-id"] {
        if let Some(v) = headers.get(name) {
            let key = std::str::from_utf8(v.as_bytes())
                .ok()
                .filter(|k| check_idempotency_key(k).is_ok());
            return key
                .map(|k| Some(k.to_owned()))
                .ok_or_else(|| ApiError::InvalidRequest {
                    message: format!(
                        "{name} must be 1 to 255 printable ASCII characters without spaces"
                    ),
                    path: Some(name.into()),
                });
        }
    }
    Ok(None)
}

/// The mode from `Prefer` (RFC 7240), else the configured default, and the preference
/// applied (`Preference-Applied`). `respond-async` with `wait=N` waits up to N seconds,
/// then answers 202.
fn mode(
    headers: &HeaderMap,
    default: ErpMode,
    default_wait: Duration,
) -> ApiResult<(Mode, HeaderValue)> {
    let mut respond_async = false;
    let mut wait = None;
    for value in headers.get_all("prefer") {
        let text = value.to_str().map_err(|_| bad_prefer())?;
        for pref in text
            .split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (name, arg) = pref.split_once('=').map_or((pref, None), |(n, a)| {
                (n.trim(), Some(a.trim().trim_matches('"')))
            });
            match (name, arg) {
                (name, _) if name.eq_ignore_ascii_case("respond-async") => respond_async = true,
                (name, Some(n)) if name.eq_ignore_ascii_case("wait") => {
                    let secs: u64 = n.parse().map_err(|_| bad_prefer())?;
                    wait = Some(Duration::from_secs(secs).min(MAX_WAIT));
                }
                // Other preferences (return=minimal, ...) are not ours to refuse.
                _ => {}
            }
        }
    }
    // `wait=N` is digits after ASCII: always a valid header value.
    let waits = |w: Duration| match HeaderValue::try_from(format!("wait={}", w.as_secs())) {
        Ok(v) => (Mode::Wait(w), v),
        Err(_) => unreachable!("wait=<digits> is a valid header value"),
    };
    Ok(match (respond_async, wait, default) {
        (_, Some(w), _) => waits(w),
        (true, None, _) | (false, None, ErpMode::Async) => {
            (Mode::Async, HeaderValue::from_static("respond-async"))
        }
        (false, None, ErpMode::Wait) => waits(default_wait.min(MAX_WAIT)),
    })
}

fn bad_prefer() -> ApiError {
    ApiError::InvalidRequest {
        message: "Prefer must be respond-async or wait=<seconds>".into(),
        path: Some("Prefer".into()),
    }
}

/// How an update's answer goes out: its status and body. Stored and parked updates are
/// 202, processed ones 200; a failed one is its error (see [`ApiError::update_failed`]).
fn answer_parts(answer: &Answer) -> (StatusCode, Value) {
    match answer_status(answer) {
        Ok(status) => (status, json!(answer)),
        Err(e) => e.parts(),
    }
}

/// The status of an answer that is not an error, else its error.
fn answer_status(answer: &Answer) -> Result<StatusCode, ApiError> {
    if let Some(e) = ApiError::update_failed(answer) {
        return Err(e);
    }
    Ok(match answer.status {
        UpdateStatus::Accepted | UpdateStatus::Processing | UpdateStatus::Parked => {
            StatusCode::ACCEPTED
        }
        UpdateStatus::Applied
        | UpdateStatus::Ignored
        | UpdateStatus::Rejected
        | UpdateStatus::Dead => StatusCode::OK,
    })
}

/// The answer with `Location: <the update's status resource>` on a 202. The answer is
/// written as it is, not through a JSON value first (the keys in its fields' order).
fn answer_response(answer: &Answer) -> Response {
    let (status, mut response) = match answer_status(answer) {
        Ok(status) => (status, (status, Json(answer)).into_response()),
        Err(e) => {
            let (status, body) = e.parts();
            (status, (status, Json(body)).into_response())
        }
    };
    if status == StatusCode::ACCEPTED
        && let Ok(v) = HeaderValue::from_str(&location(&answer.id))
    {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

/// The path of an update's status resource ([`get_update`]).
fn location(id: &str) -> String {
    format!("/v1/erp/order-updates/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: &str) -> Value {
        json!({"attempt": 1, "at": "2026-01-02T03:04:05Z", "code": code, "message": "m"})
    }

    #[test]
    fn a_failed_update_is_its_error_with_the_update_id_and_status() {
        let mut error = entry("event_not_applicable");
        error["event"] = json!("ship");
        error["items"] = json!([{"item": 1, "state": "cancelled"}]);
        let answer = Answer {
            id: "u-1".into(),
            status: UpdateStatus::Rejected,
            result: None,
            last_error: Some(error),
        };
        let body = json!({"error": {"code": "event_not_applicable", "message": "m",
            "event": "ship", "items": [{"item": 1, "state": "cancelled"}],
            "update_id": "u-1", "status": "rejected"}});
        assert_eq!(answer_parts(&answer), (StatusCode::CONFLICT, body));
        let parked = |code: &str| Answer {
            id: "u-2".into(),
            status: UpdateStatus::Parked,
            result: None,
            last_error: Some(entry(code)),
        };
        let (status, body) = answer_parts(&parked("order_not_found"));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["update_id"], "u-2");
        let (status, body) = answer_parts(&parked("event_not_applicable"));
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["last_error"], entry("event_not_applicable"));
    }

    /// Earlier versions stored the status and body they sent; read back, they are sent
    /// again byte for byte.
    #[test]
    fn answers_stored_by_earlier_versions_replay_unchanged() {
        let full = entry("event_not_applicable");
        let stored = [
            (202, json!({"id": "u", "status": "accepted"})),
            (202, json!({"id": "u", "status": "processing"})),
            (
                202,
                json!({"id": "u", "status": "parked", "last_error": full}),
            ),
            (
                200,
                json!({"id": "u", "status": "applied", "result": {"moved": []}}),
            ),
            (
                200,
                json!({"id": "u", "status": "ignored", "result": {"not_applicable": []},
                "last_error": full}),
            ),
            (
                200,
                json!({"id": "u", "status": "dead", "last_error": full}),
            ),
            (
                409,
                json!({"error": {"code": "event_not_applicable", "message": "m",
                "event": "ship", "items": [], "final": true, "update_id": "u",
                "status": "rejected"}}),
            ),
            (
                404,
                json!({"error": {"code": "order_not_found", "message": "m",
                "update_id": "u", "status": "parked"}}),
            ),
            (
                422,
                json!({"error": {"code": "unknown_item", "message": "m",
                "update_id": "u", "status": "rejected"}}),
            ),
        ];
        for (status, body) in stored {
            let answer = Answer::from_stored(&body).unwrap();
            let (s, b) = answer_parts(&answer);
            assert_eq!((s.as_u16(), &b), (status, &body));
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                serde_json::to_string(&body).unwrap()
            );
            // And stored again as a typed answer, it still reads the same.
            let again = Answer::from_stored(&answer.to_stored()).unwrap();
            assert_eq!(again, answer);
        }
    }
}
