//! Logging in and out, the session extractor and CSRF-checked forms.
//!
//! An admin enters a token once; it is checked as the API checks a bearer token (the
//! client cache, then the client's rate limit) and only the admin role may log in. The
//! session is a random id in an HttpOnly, SameSite=Strict cookie; the database keeps its
//! SHA-256, the hash of the token it was opened with (reissuing the client's token ends
//! it) and its CSRF token, so any `serve` process on the same database accepts it.
//!
//! Every state-changing form is a [`Protected`] extractor: it needs the session and the
//! session's CSRF token in the form (403 otherwise, before the form is read further). The
//! login form itself is protected by a short-lived double-submit cookie.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{COOKIE as COOKIE_HEADER, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::layout;
use super::{UiError, UiResult, html};
use crate::auth::hash_token;
use crate::domain::types::Role;
use crate::http::AppState;
use crate::store::sessions::NewSession;

/// The session cookie's name.
pub const COOKIE: &str = "orderflow_session";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "orderflow_login";
/// How long a session lasts.
const SESSION_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(12);
/// How long a login form may stay open.
const LOGIN_TTL_SECONDS: i64 = 15 * 60;

/// A logged-in admin: the client's name and the session's CSRF token.
#[derive(Clone, Debug)]
pub(super) struct Session {
    pub client: String,
    pub csrf: String,
}

/// 32 random bytes, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// `Set-Cookie` for `name`: HttpOnly, SameSite=Strict, on `/admin` only; `Secure` when the
/// request came over HTTPS (a proxy in front says so in `X-Forwarded-Proto`).
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if https { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

/// Where to go after logging in: a page of the UI, never another site.
fn next_page(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/admin") && !n.contains("//") && !n.contains('\\') => n,
        _ => "/admin",
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    /// The request's session. Without one a page redirects to the login form, and a form
    /// is refused (403): a form sent from a page whose session ended changes nothing.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(session.clone());
        }
        let found = match cookie(&parts.headers, COOKIE) {
            None => None,
            Some(id) => state
                .service
                .store()
                .session(&hash_token(id), crate::store::now())
                .await
                .map_err(|e| UiError::from(e).into_response())?,
        };
        let Some(row) = found else {
            if parts.method == Method::GET || parts.method == Method::HEAD {
                let here = parts.uri.path_and_query().map_or("/admin", |p| p.as_str());
                let to = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", here)
                    .finish();
                return Err(see_other(&format!("/admin/login?{to}")));
            }
            return Err(UiError::new(
                StatusCode::FORBIDDEN,
                "You are not logged in (or your session ended): nothing was changed. \
                 Log in and try again.",
            )
            .into_response());
        };
        let session = Session {
            client: row.client,
            csrf: row.csrf_token,
        };
        parts.extensions.insert(session.clone());
        Ok(session)
    }
}

/// A state-changing form: the session, and the form's fields once its `csrf` field has
/// matched the session's token.
pub(super) struct Protected<T> {
    pub session: Session,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Protected<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let sent = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !sent.is_some_and(|s| same(&s, &session.csrf)) {
            return Err(UiError::new(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or wrong, so nothing was changed. \
                 Reload the page and try again.",
            )
            .into_response());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            UiError::bad_form(format!("the form is not valid: {e}")).into_response()
        })?;
        Ok(Self { session, form })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

fn login_form(nonce: &str, next: &str, problem: Option<&str>) -> maud::Markup {
    layout::bare(
        "Log in",
        html! {
            @if let Some(problem) = problem {
                p.flash.warning role="alert" { (problem) }
            }
            form.card.login method="post" action="/admin/login" {
                input type="hidden" name="csrf" value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                p.hint { "A token of a client with the admin role ("
                    code { "orderflow clients create NAME --role admin" } ")." }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// The login form, with a fresh double-submit nonce.
fn login_response(
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    problem: Option<&str>,
) -> Response {
    let nonce = random_token();
    let mut response = html(status, login_form(&nonce, next, problem));
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &nonce, LOGIN_TTL_SECONDS),
    );
    response
}

/// `GET /admin/login`.
pub(super) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = next_page(q.next.as_deref());
    if let Some(id) = cookie(&headers, COOKIE)
        && let Ok(Some(_)) = state
            .service
            .store()
            .session(&hash_token(id), crate::store::now())
            .await
    {
        return see_other(next);
    }
    login_response(&headers, StatusCode::OK, next, None)
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /admin/login`: checks the token as the API does; only admins get a session.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> UiResult {
    let next = next_page(form.next.as_deref());
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if nonce.is_empty() || !same(nonce, &form.csrf) {
        return Ok(login_response(
            &headers,
            StatusCode::FORBIDDEN,
            next,
            Some("The login form expired or was not sent from this site. Try again."),
        ));
    }
    let token = form.token.trim();
    let client = match state.clients.by_token(token).await {
        Err(e) => return Err(crate::http::ApiError::Internal(Box::new(e)).into()),
        Ok(c) => c,
    };
    let Some(client) = client.filter(|_| !token.is_empty()) else {
        return Ok(login_response(
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            Some("Unknown token."),
        ));
    };
    if state.rate_limits.check(&client.name).is_err() {
        return Ok(login_response(
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            next,
            Some("Too many requests for this client; wait a moment and try again."),
        ));
    }
    if client.role != Role::Admin {
        let problem = format!(
            "Client {} has the {} role; only admin clients may log in.",
            client.name, client.role
        );
        return Ok(login_response(
            &headers,
            StatusCode::FORBIDDEN,
            next,
            Some(&problem),
        ));
    }
    let id = random_token();
    let csrf = random_token();
    let now = crate::store::now();
    state
        .service
        .store()
        .insert_session(&NewSession {
            id_hash: &hash_token(&id),
            token_hash: &hash_token(token),
            csrf_token: &csrf,
            at: now,
            expires_at: now + SESSION_TTL,
        })
        .await?;
    tracing::info!(client = %client.name, "admin logged in to the UI");
    let mut response = see_other(next);
    let cookies = response.headers_mut();
    cookies.append(
        SET_COOKIE,
        set_cookie(&headers, COOKIE, &id, SESSION_TTL.num_seconds()),
    );
    cookies.append(SET_COOKIE, set_cookie(&headers, LOGIN_COOKIE, "", 0));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct Nothing {}

/// `POST /admin/logout`: ends the session in the database and clears the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Protected { session, .. }: Protected<Nothing>,
) -> UiResult {
    if let Some(id) = cookie(&headers, COOKIE) {
        state
            .service
            .store()
            .delete_session(&hash_token(id))
            .await?;
    }
    tracing::info!(client = %session.client, "admin logged out of the UI");
    let mut response = see_other("/admin/login");
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(&headers, COOKIE, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE_HEADER,
            HeaderValue::from_static("a=1; orderflow_session_x=2; orderflow_session=3"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("3"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn only_pages_of_the_ui_are_next() {
        assert_eq!(
            next_page(Some("/admin/inbox?status=dead")),
            "/admin/inbox?status=dead"
        );
        assert_eq!(next_page(Some("https://evil.example/admin")), "/admin");
        assert_eq!(next_page(Some("/admin//evil.example")), "/admin");
        assert_eq!(next_page(Some("/v1/orders")), "/admin");
        assert_eq!(next_page(None), "/admin");
    }
}
