//! Extractors that answer with [`ApiError`]: JSON bodies with the path of the problem,
//! path and query parameters, and the calling client.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use std::time::Duration;

use super::AppState;
use super::error::ApiError;
use super::limits::BodyTimeout;
use super::validate::Problem;
use crate::domain::types::Role;
use crate::wording;

/// A JSON body. Content type must be JSON (415), size within the limit (413), and the
/// structure must match (422 with the JSON path). Request types reject unknown fields, so
/// a misspelt field is an error instead of being silently ignored.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = JsonRequest::from_request(req, state).await?.body;
        parse_json(&body).map(Self)
    }
}

/// A JSON body's raw bytes (content type and size checked) and the request's headers, for
/// handlers that need the bytes as sent (signatures are computed over them). The headers
/// are moved out of the request: axum's `HeaderMap` extractor copies them, a map and its
/// custom names on every request.
pub struct JsonRequest {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for JsonRequest {
    type Rejection = ApiError;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // Reading the body needs only its extensions (the limits), not the headers.
        let headers = std::mem::take(req.headers_mut());
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(Duration::from_secs(30), |t| t.0);
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, state));
        let read = read.await.map_err(|_| ApiError::BodyTimeout(timeout))?;
        let body = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::InvalidRequest {
                    message: e.body_text(),
                    path: None,
                }
            }
        })?;
        Ok(Self { headers, body })
    }
}

/// Parses a JSON body into `T`. Not JSON at all (a syntax error, cut short, or anything
/// after the value) is a 400 `malformed_json` with line and column; JSON of the wrong shape
/// is a 422 naming the JSON path of the problem, in the API's words.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // One pass for the syntax (a 400 even when the start of the body already has the wrong
    // shape) and for what no store can keep (NUL characters, numbers past 1e300, a key
    // twice, deep nesting).
    super::validate::check_json(bytes).map_err(refused)?;
    an_object(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match T::deserialize(&mut de) {
        Ok(value) => {
            de.end().map_err(malformed)?;
            Ok(value)
        }
        // Read once more, tracking the path, to say where (errors only: the path costs
        // an allocation per field on every body).
        Err(_) => Err(shape_error::<T>(bytes)),
    }
}

/// [`parse_json`] into a JSON value, which the checks make in their own pass: the body is
/// read once.
pub fn parse_json_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value = super::validate::check_json_value(bytes).map_err(refused)?;
    an_object(bytes)?;
    Ok(value)
}

/// A body that is not JSON, or breaks one of the rules of [`super::validate`].
fn refused(problem: Problem) -> ApiError {
    match problem {
        Problem::Syntax(e) => malformed(e),
        Problem::Rule(v) => ApiError::InvalidRequest {
            message: v.message,
            path: Some(v.path),
        },
    }
}

/// Every body of this API is an object; serde would also take a struct as an array of its
/// fields in order.
fn an_object(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(());
    }
    Err(ApiError::InvalidRequest {
        message: "the body must be a JSON object".into(),
        path: Some("$".into()),
    })
}

/// Why a syntactically valid body is not a `T`, at its JSON path.
fn shape_error<T: DeserializeOwned>(bytes: &[u8]) -> ApiError {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => ApiError::InvalidRequest {
            message: wording::data_error(&without_position(e.inner())),
            path: Some(wording::json_path("$", &e.path().to_string())),
        },
        Ok(_) => ApiError::InvalidRequest {
            message: "the body does not fit this endpoint".into(),
            path: Some("$".into()),
        },
    }
}

/// A body that is not JSON. serde_json also counts exceeding its nesting limit as a
/// syntax error; that is JSON of the wrong shape, so a 422.
fn malformed(e: serde_json::Error) -> ApiError {
    let detail = without_position(&e);
    if detail.starts_with("recursion limit exceeded") {
        return ApiError::InvalidRequest {
            message: format!(
                "JSON nests deeper than {} levels",
                super::validate::MAX_DEPTH
            ),
            path: Some("$".into()),
        };
    }
    let detail = match detail.as_str() {
        "trailing characters" => "there is more after the JSON value".to_owned(),
        "expected value" => "expected a JSON value".to_owned(),
        d if d.starts_with("EOF while parsing") => {
            "the body ends before the JSON value is complete".to_owned()
        }
        d if d.starts_with("control character") => {
            "a string contains a raw control character (escape it, e.g. \\n)".to_owned()
        }
        d => d.to_owned(),
    };
    ApiError::MalformedJson {
        message: format!(
            "the body is not valid JSON: {detail} (line {}, column {})",
            e.line(),
            e.column()
        ),
        line: e.line(),
        column: e.column(),
    }
}

/// serde_json's message without its ` at line L column C` suffix.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
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

/// Path parameters; a malformed one is a 422 naming the parameter.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_error(parts, state, rejection).await),
        }
    }
}

async fn path_error<S: Send + Sync>(parts: &mut Parts, state: &S, e: PathRejection) -> ApiError {
    let PathRejection::FailedToDeserializePathParams(e) = e else {
        return ApiError::Internal(Box::new(e));
    };
    // The routes have one parameter each: its name, when the error does not say.
    let first = RawPathParams::from_request_parts(parts, state)
        .await
        .ok()
        .and_then(|p| p.iter().next().map(|(k, _)| k.to_owned()))
        .unwrap_or_else(|| "parameter".to_owned());
    let (name, message) = match e.kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (key.clone(), parse_message(value, expected_type)),
        ErrorKind::ParseError {
            value,
            expected_type,
        }
        | ErrorKind::ParseErrorAtIndex {
            value,
            expected_type,
            ..
        } => (first, parse_message(value, expected_type)),
        ErrorKind::InvalidUtf8InPathParam { key } => (
            key.clone(),
            "must be UTF-8 text (percent-encoded)".to_owned(),
        ),
        ErrorKind::DeserializeError { key, message, .. } => (key.clone(), message.clone()),
        ErrorKind::Message(message) => (first, message.clone()),
        _ => return ApiError::Internal(e.body_text().into()),
    };
    ApiError::InvalidRequest {
        message: wording::parameter_error("path parameter", &name, &message),
        path: Some(name),
    }
}

fn parse_message(value: &str, expected_type: &str) -> String {
    let kind = wording::rust_type_kind(expected_type);
    let digits = value.strip_prefix('-').unwrap_or(value);
    if kind == "an integer" && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        "is out of range for a 64-bit integer".to_owned()
    } else {
        format!("must be {kind}")
    }
}

/// Query parameters; a malformed one is a 422 naming the parameter. Request types reject
/// unknown parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let message = e.inner().to_string();
            // A repeated or missing parameter is reported at the root: its name is in the
            // message (``duplicate field `limit` ``).
            let name = match e.path().to_string() {
                root if root == "." => message.split('`').nth(1).map_or(root, str::to_owned),
                name => name,
            };
            ApiError::InvalidRequest {
                message: wording::parameter_error("query parameter", &name, &message),
                path: Some(name),
            }
        })
    }
}

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
