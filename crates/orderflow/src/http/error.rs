//! `ApiError`: every error the API answers with, mapped to a status and a stable code in
//! one `match`. Bodies are `{"error": {"code", "message", ...details}}`.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::domain::DomainError;
use crate::inbox::ingest::IngestError;
use crate::inbox::model::{Answer, UpdateStatus};
use crate::inbox::ops::OpsError;
use crate::store::StoreError;
use crate::subscriptions::SubscriptionError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    BadSignature(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is not JSON at all (a syntax error, cut short, or data after the value);
    /// `line` and `column` are 1-based and point at the problem.
    #[error("{message}")]
    MalformedJson {
        message: String,
        line: usize,
        column: usize,
    },
    /// The route exists, the method does not; the `allow` header (set by axum) lists the
    /// methods it has.
    #[error("method {method} is not allowed on this route; the allow header lists its methods")]
    MethodNotAllowed { method: String },
    #[error("the request target is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("the request headers are larger than {limit} bytes in total")]
    HeadersTooLarge { limit: usize },
    #[error("{message}")]
    InvalidRequest {
        message: String,
        /// JSON path of the problem (`$.items[0].quantity`), or the parameter name.
        path: Option<String>,
    },
    #[error("give the expected version in the body (`version`) or in If-Match")]
    VersionRequired,
    #[error("store not ready")]
    NotReady,
    /// The answer took longer than the server's request timeout.
    #[error("the request took longer than {} s", .0.as_secs())]
    Timeout(Duration),
    /// The body did not arrive within the body read timeout.
    #[error("the request body was not received within {} s", .0.as_secs())]
    BodyTimeout(Duration),
    /// Over the client's rate limit; `retry_after` is sent in whole seconds, at least one.
    #[error("rate limit exceeded, retry after {} s", retry_secs(*retry_after))]
    RateLimited { retry_after: Duration },
    /// An operator asked to retry an update that is not finished or was applied.
    #[error(
        "update {id} is {status}: only dead, rejected, ignored and parked updates can be retried"
    )]
    NotRetryable { id: String, status: UpdateStatus },
    /// An operator asked to retry an effect that is not dead.
    #[error("effect {id} is {status}: only dead effects can be retried")]
    EffectNotRetryable { id: i64, status: String },
    /// The inbox refused an update before storing it (or could not store it).
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A processed update that could not be applied, as wait mode (and its replays)
    /// answer: the error its last attempt recorded (`code`, `message` and the details of
    /// the code), with the update's id and status.
    #[error("{message}")]
    UpdateFailed {
        update_id: String,
        status: UpdateStatus,
        code: String,
        message: String,
        details: Map<String, Value>,
    },
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every error answer (OpenAPI): `{"error": {"code", "message", ...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code`, a sentence for people, and the details of the code.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code: `unauthenticated`, `bad_signature`, `forbidden`,
    /// `not_found`, `order_not_found`, `malformed_json`, `invalid_request`,
    /// `payload_too_large`, `unsupported_media_type`, `version_conflict`, `unknown_event`,
    /// `idempotency_key_reused`, `command_refused`, ...
    #[schema(example = "invalid_request")]
    pub code: String,
    #[schema(example = "quantity must be an integer from 1 to 1000000, got 0")]
    pub message: String,
    /// `invalid_request`: the JSON path of the problem (`$.items[0].quantity`), or the
    /// name of the query parameter, path parameter or header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `malformed_json`: where the problem is, 1-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    /// `payload_too_large`, `uri_too_long`, `headers_too_large`: the limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `rate_limited`: seconds to wait (also in `retry-after`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `version_conflict`: the order's current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    /// `event_not_applicable`: the event, and each selected item with its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<crate::domain::view::ItemState>>,
    /// `not_retryable`, and a failed update in wait mode: the update's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A failed update in wait mode (`event_not_applicable`, `order_not_found`,
    /// `unknown_item`, `command_refused`, ...): the update's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_id: Option<String>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Domain(DomainError::Store(e))
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::NotFound(id) => Self::NotFound(format!("no update {id}")),
            OpsError::NotRetryable { id, status } => Self::NotRetryable { id, status },
            e @ OpsError::NoFilter => Self::InvalidRequest {
                message: e.to_string(),
                path: Some("$".into()),
            },
            OpsError::Store(e) => e.into(),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        use SubscriptionError as E;
        match e {
            E::Url(u) => Self::InvalidRequest {
                message: u.to_string(),
                path: Some("$.url".into()),
            },
            e @ E::UnknownEventType(_) => Self::InvalidRequest {
                message: e.to_string(),
                path: Some("$.events".into()),
            },
            e @ (E::NotFound(_) | E::NoDelivery { .. }) => Self::NotFound(e.to_string()),
            E::Store(e) => e.into(),
        }
    }
}

impl ApiError {
    /// The error a processed update's answer stands for, if it is one (see
    /// [`Answer::failure`]).
    pub fn update_failed(answer: &Answer) -> Option<Self> {
        let mut details = match answer.failure()? {
            Value::Object(entry) => entry.clone(),
            _ => Map::new(),
        };
        let mut text = |key: &str| match details.remove(key) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let (code, message) = (text("code"), text("message"));
        // When and which attempt are the update's history, not the answer.
        for key in ["attempt", "at", "retryable"] {
            details.remove(key);
        }
        Some(Self::UpdateFailed {
            update_id: answer.id.clone(),
            status: answer.status,
            code,
            message,
            details,
        })
    }

    /// The status and the JSON body of the answer.
    pub fn parts(&self) -> (StatusCode, Value) {
        use DomainError as D;
        use IngestError as I;
        let mut details = Map::new();
        let (status, code): (StatusCode, &str) = match self {
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::PayloadTooLarge { limit } => {
                details.insert("limit".into(), json!(limit));
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::MalformedJson { line, column, .. } => {
                details.insert("line".into(), json!(line));
                details.insert("column".into(), json!(column));
                (StatusCode::BAD_REQUEST, "malformed_json")
            }
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UriTooLong { limit } => {
                details.insert("limit".into(), json!(limit));
                (StatusCode::URI_TOO_LONG, "uri_too_long")
            }
            Self::HeadersTooLarge { limit } => {
                details.insert("limit".into(), json!(limit));
                (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "headers_too_large",
                )
            }
            Self::InvalidRequest { path, .. } => {
                if let Some(path) = path {
                    details.insert("path".into(), json!(path));
                }
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            Self::VersionRequired => (StatusCode::PRECONDITION_REQUIRED, "version_required"),
            Self::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Self::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::RateLimited { retry_after } => {
                details.insert("retry_after".into(), json!(retry_secs(*retry_after)));
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            Self::NotRetryable { status, .. } => {
                details.insert("status".into(), json!(status));
                (StatusCode::CONFLICT, "not_retryable")
            }
            Self::EffectNotRetryable { status, .. } => {
                details.insert("status".into(), json!(status));
                (StatusCode::CONFLICT, "not_retryable")
            }
            Self::Ingest(e) => match e {
                I::Invalid { path, .. } => {
                    details.insert("path".into(), json!(path));
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
                }
                I::BatchTooLarge { .. } => {
                    details.insert("path".into(), json!("$.updates"));
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
                }
                I::UnknownEvent { path, .. } => {
                    details.insert("path".into(), json!(path));
                    (StatusCode::UNPROCESSABLE_ENTITY, "unknown_event")
                }
                I::KeyReused { path, .. } => {
                    if let Some(path) = path {
                        details.insert("path".into(), json!(path));
                    }
                    (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                }
                I::Store(_) | I::Stopped(_) => internal(self),
                I::Transit(cause) => {
                    tracing::warn!(error = %cause, "update not accepted: the broker did not confirm it");
                    (StatusCode::SERVICE_UNAVAILABLE, "transport_unavailable")
                }
            },
            Self::UpdateFailed {
                update_id,
                status,
                code,
                details: recorded,
                ..
            } => {
                details.extend(recorded.clone());
                details.insert("update_id".into(), json!(update_id));
                details.insert("status".into(), json!(status));
                let http = match code.as_str() {
                    "event_not_applicable" => StatusCode::CONFLICT,
                    "order_not_found" => StatusCode::NOT_FOUND,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                (http, code.as_str())
            }
            Self::Domain(d) => {
                let status = match d {
                    D::OrderNotFound => StatusCode::NOT_FOUND,
                    D::ReferenceTaken(_) | D::EventNotApplicable { .. } => StatusCode::CONFLICT,
                    D::VersionConflict { current } => {
                        details.insert("current_version".into(), json!(current));
                        StatusCode::CONFLICT
                    }
                    D::UnknownProcess(_)
                    | D::UnknownEvent { .. }
                    | D::UnknownItem(_)
                    | D::UnknownSku(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    D::NotManual(_) => StatusCode::FORBIDDEN,
                    D::CommandFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
                    D::CommandRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                    D::UnknownState { .. } | D::Engine(_) | D::Store(_) => internal(self).0,
                };
                if let D::EventNotApplicable { event, items, .. } = d {
                    details.insert("event".into(), json!(event));
                    details.insert("items".into(), json!(items));
                }
                (status, d.code())
            }
            Self::Internal(_) => internal(self),
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let mut error = Map::new();
        error.insert("code".into(), json!(code));
        error.insert("message".into(), json!(message));
        error.extend(details);
        (status, json!({ "error": Value::Object(error) }))
    }

    /// The JSON body alone (a batch entry's result).
    pub fn body(&self) -> Value {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_secs(retry_after)));
        }
        response
    }
}

/// `retry-after` has whole seconds only; rounded up, and never 0 (an immediate retry would
/// be refused again).
fn retry_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Logs the whole cause chain; the client only sees `internal`.
fn internal(e: &dyn std::error::Error) -> (StatusCode, &'static str) {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Many errors already print their cause ("database error: X", then X).
        let text = s.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = s.source();
    }
    tracing::error!(error = %chain, "request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_secs(Duration::from_millis(2001)), 3);
    }
}
