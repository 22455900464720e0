//! The edge of every request, as one middleware ([`edge`]): the metrics of each request,
//! our own limits on the request target (414) and headers (431), the refusal of a NUL in
//! the path or query, and the error envelope where axum would answer with an empty body (a
//! 405 from the method router).
//!
//! hyper refuses requests on its own, with an empty body, above its hard limits: a request
//! target of 64 KiB, a request head (request line and headers) of about 400 KiB, and more
//! than 100 header lines. The limits here are lower, so a client that is merely careless
//! gets a JSON answer.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::ALLOW;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};

use super::{ApiError, validate};

/// The longest request target (path and query) answered; longer is 414 `uri_too_long`.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) answered; more is 431 `headers_too_large`.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Middleware: counts the request and its duration ([`Meters`]) whatever answers it; checks
/// the limits and refuses a NUL; gives an empty-bodied 405 the error envelope. axum adds the
/// `allow` header to that afterwards, at the top of the router.
///
/// One middleware instead of three: each `from_fn` layer boxes its future and clones the
/// rest of the stack for every request, and a request that waits (an ERP update waits for
/// its commit) goes through every layer's future again when it is woken.
pub async fn edge(State(meters): State<Meters>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    // The method as sent, for the 405's message (a standard one is copied without
    // allocating); the metrics' label is one of a bounded set.
    let method = req.method().clone();
    let response = match refusal(&req) {
        Some(refused) => refused,
        None => envelope(method.as_str(), next.run(req).await),
    };
    meters.record(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method_label(&method),
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The answer to a request over our limits, or with a NUL in its path or query.
fn refusal(req: &Request) -> Option<Response> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(
            ApiError::UriTooLong {
                limit: MAX_URI_BYTES,
            }
            .into_response(),
        );
    }
    // As on the wire: `name: value\r\n`.
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Some(
            ApiError::HeadersTooLarge {
                limit: MAX_HEADER_BYTES,
            }
            .into_response(),
        );
    }
    // No store can hold a NUL (see `validate`). Only the sequence `%00` decodes to one, and
    // a raw NUL byte never gets past the HTTP parser.
    let uri = req.uri();
    let checks = [
        ("path", uri.path()),
        ("query", uri.query().unwrap_or_default()),
    ];
    checks
        .into_iter()
        .find(|(_, raw)| raw.contains("%00"))
        .map(|(what, _)| {
            let v = validate::nul(what);
            ApiError::InvalidRequest {
                message: v.message,
                path: Some(v.path),
            }
            .into_response()
        })
}

/// An empty-bodied 405 as the error envelope, keeping its `allow` header.
fn envelope(method: &str, response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.body().size_hint().exact() != Some(0)
    {
        return response;
    }
    let mut envelope = ApiError::MethodNotAllowed {
        method: method.chars().take(32).collect(),
    }
    .into_response();
    if let Some(allow) = response.headers().get(ALLOW) {
        envelope.headers_mut().insert(ALLOW, allow.clone());
    }
    envelope
}

/// The `method` label: one of the standard methods, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// `orderflow_http_requests_total` and `orderflow_http_request_duration_seconds` per route,
/// method and status. Every label takes a bounded set of values, whatever a client sends:
/// the route template (or `unmatched`), a known method (or `other`) and the status code.
///
/// The handles of each combination seen are kept, so a request records its two figures
/// without building their labels and finding them in the recorder's registry again: that
/// took eleven allocations and two hashed lookups a request.
#[derive(Clone, Default)]
pub struct Meters(Arc<RwLock<HashMap<String, Vec<Meter>>>>);

struct Meter {
    method: &'static str,
    status: StatusCode,
    count: Counter,
    duration: Histogram,
}

impl Meters {
    /// Kept handles belong to the recorder installed when they were made: install it first.
    pub fn new() -> Self {
        crate::telemetry::metrics();
        Self::default()
    }

    fn record(&self, route: &str, method: &'static str, status: StatusCode, seconds: f64) {
        let routes = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = find(&routes, route, method, status) {
            m.count.increment(1);
            m.duration.record(seconds);
            return;
        }
        drop(routes);
        let mut routes = self.0.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have added it meanwhile.
        if find(&routes, route, method, status).is_none() {
            let labels = [
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.as_u16().to_string()),
            ];
            routes.entry(route.to_owned()).or_default().push(Meter {
                method,
                status,
                count: metrics::counter!("orderflow_http_requests_total", &labels),
                duration: metrics::histogram!("orderflow_http_request_duration_seconds", &labels),
            });
        }
        if let Some(m) = find(&routes, route, method, status) {
            m.count.increment(1);
            m.duration.record(seconds);
        }
    }
}

fn find<'a>(
    routes: &'a HashMap<String, Vec<Meter>>,
    route: &str,
    method: &str,
    status: StatusCode,
) -> Option<&'a Meter> {
    routes
        .get(route)?
        .iter()
        .find(|m| m.status == status && m.method == method)
}
