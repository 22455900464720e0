//! Extractors that answer with [`ApiError`]: JSON bodies with the path of the problem,
//! path and query parameters, and the calling client.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use std::time::Duration;

use super::AppState;
use super::error::ApiError;
use super::limits::BodyTimeout;
use crate::domain::types::Role;

/// A JSON body. Content type must be JSON (415), size within the limit (413), and the
/// structure must match (422 with the JSON path). Request types reject unknown fields, so
/// a misspelt field is an error instead of being silently ignored.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(bytes) = JsonBody::from_request(req, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// The raw bytes of a JSON body (content type and size checked), for handlers that need
/// them as sent: signatures are computed over the exact bytes.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(Duration::from_secs(30), |t| t.0);
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, state));
        let read = read.await.map_err(|_| ApiError::BodyTimeout(timeout))?;
        let bytes = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::InvalidRequest {
                    message: e.body_text(),
                    path: None,
                }
            }
        })?;
        Ok(Self(bytes))
    }
}

/// Parses JSON into `T`; a mismatch is a 422 naming the JSON path of the problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    super::validate::check_json(bytes).map_err(|v| ApiError::InvalidRequest {
        message: v.message,
        path: Some(v.path),
    })?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "$".to_owned()
        } else {
            format!("$.{path}")
        };
        ApiError::InvalidRequest {
            message: e.inner().to_string(),
            path: Some(path),
        }
    })
}

/// The configured body limit, put into request extensions so 413 can name it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Path parameters; a malformed one is a 422.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters; a malformed one is a 422.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The authenticated client (`Authorization: Bearer <token>`), within its rate limit.
///
/// Extracting it authenticates (401), then takes one request from the client's rate limit
/// (429), before any handler reads the body. Tokens are checked against
/// [`ClientCache`](crate::auth::ClientCache), not the database, on most requests. It is
/// extracted once per request: a second extraction reuses the first.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The client's Standard Webhooks secret, when it has one: its ERP requests must then
    /// be signed. Debug output shows it as redacted.
    pub signing_secret: Option<SecretString>,
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not use this endpoint",
                self.role
            )))
        }
    }
}

/// A caller with the shop or admin role: the orders and processes API. An extractor, so
/// the role is checked before the body is read (403 before 415/422).
#[derive(Clone, Debug)]
pub struct ShopOrAdmin(pub Caller);

impl FromRequestParts<AppState> for ShopOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, &[Role::Shop, Role::Admin])
            .await
            .map(Self)
    }
}

/// A caller with the erp or admin role: the ERP updates API.
#[derive(Clone, Debug)]
pub struct ErpOrAdmin(pub Caller);

impl FromRequestParts<AppState> for ErpOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, &[Role::Erp, Role::Admin])
            .await
            .map(Self)
    }
}

/// A caller with the admin role: operations on the inbox and stats.
#[derive(Clone, Debug)]
pub struct AdminOnly(pub Caller);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, &[Role::Admin]).await.map(Self)
    }
}

async fn with_role(
    parts: &mut Parts,
    state: &AppState,
    roles: &[Role],
) -> Result<Caller, ApiError> {
    let caller = Caller::from_request_parts(parts, state).await?;
    caller.require(roles)?;
    Ok(caller)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Counted against the rate limit once, however many extractors ask for the caller.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated(
                "missing Authorization: Bearer <token>",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthenticated(
                "Authorization must be Bearer <token>",
            ))?;
        let client = state
            .clients
            .by_token(token)
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?
            .ok_or(ApiError::Unauthenticated("unknown token"))?;
        tracing::Span::current().record("client", client.name.as_str());
        if let Err(retry_after) = state.rate_limits.check(&client.name) {
            metrics::counter!("orderflow_http_rate_limited_total", "client" => client.name.clone())
                .increment(1);
            return Err(ApiError::RateLimited { retry_after });
        }
        let caller = Caller {
            name: client.name.clone(),
            role: client.role,
            signing_secret: client.signing_secret.clone(),
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// The version in `If-Match: "<version>"` (quotes and a weak `W/` prefix are accepted).
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let invalid = || ApiError::InvalidRequest {
        message: "If-Match must be a quoted order version, e.g. \"3\"".into(),
        path: Some("If-Match".into()),
    };
    let raw = value.to_str().map_err(|_| invalid())?.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    raw.parse().map(Some).map_err(|_| invalid())
}
