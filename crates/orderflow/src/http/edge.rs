//! The error envelope where axum and hyper would answer with an empty body: 405 from the
//! method router, and our own limits on the request target (414) and headers (431).
//!
//! hyper refuses requests on its own, with an empty body, above its hard limits: a request
//! target of 64 KiB, a request head (request line and headers) of about 400 KiB, and more
//! than 100 header lines. The limits here are lower, so a client that is merely careless
//! gets a JSON answer.

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::ALLOW;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The longest request target (path and query) answered; longer is 414 `uri_too_long`.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) answered; more is 431 `headers_too_large`.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Middleware: checks the limits, and gives an empty-bodied 405 the error envelope. axum
/// adds the `allow` header to it afterwards, at the top of the router.
pub async fn envelope(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::UriTooLong {
            limit: MAX_URI_BYTES,
        }
        .into_response();
    }
    // As on the wire: `name: value\r\n`.
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        }
        .into_response();
    }
    let method = req.method().clone();
    let response = next.run(req).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && response.body().size_hint().exact() == Some(0)
    {
        let mut envelope = ApiError::MethodNotAllowed {
            method: method.as_str().chars().take(32).collect(),
        }
        .into_response();
        if let Some(allow) = response.headers().get(ALLOW) {
            envelope.headers_mut().insert(ALLOW, allow.clone());
        }
        return envelope;
    }
    response
}
