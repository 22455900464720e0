//! Per-request limits in front of the handlers: a declared body over the limit is refused
//! before it is read, and a request that takes too long is answered instead of hanging.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::BodyLimit;
use crate::config::ServerConfig;

/// Longest wait mode (`Prefer: wait=N`) the ERP endpoints allow: their requests get that
/// deadline and some slack when it is longer than `request_timeout`.
const MAX_WAIT: Duration = Duration::from_secs(60);
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// The body read deadline, put into request extensions for the body extractors.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyTimeout(pub Duration);

/// 413 at once when `Content-Length` is over the body limit (the body is never waited for);
/// 503 `timeout` when the answer takes longer than the request timeout.
pub(super) async fn enforce(
    State(limits): State<(ServerConfig, usize)>,
    mut req: Request,
    next: Next,
) -> Response {
    let (limits, max_body) = limits;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return ApiError::PayloadTooLarge { limit: max_body }.into_response();
    }
    req.extensions_mut().insert(BodyLimit(max_body));
    req.extensions_mut()
        .insert(BodyTimeout(limits.body_read_timeout));
    // ERP updates may be in wait mode (at most 60 s, then 202), by header or by default.
    let deadline = if req.uri().path().starts_with("/v1/erp/") {
        limits.request_timeout.max(MAX_WAIT + WAIT_SLACK)
    } else {
        limits.request_timeout
    };
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("orderflow_http_timeouts_total").increment(1);
            ApiError::Timeout(deadline).into_response()
        }
    }
}
