//! The admin web UI at `/admin`: server-rendered HTML (maud) over the same typed operations
//! as the API (`inbox::ops`, the order service, the list projection), with one embedded
//! stylesheet and no script. Pages: dashboard, inbox, orders, processes; an admin token
//! logs in once and is kept as a database-backed session (see [`session`]), so every
//! `serve` process on one database accepts it. Every state-changing form carries the
//! session's CSRF token.

mod chart;
mod dashboard;
mod inbox;
mod layout;
mod orders;
mod processes;
mod session;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;

use crate::http::{ApiError, AppState};

pub use session::COOKIE;

const CSS: &str = include_str!("assets/admin.css");

/// No script runs and nothing loads from elsewhere; no page may be framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes, under `/admin`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin", get(dashboard::page))
        .route("/admin/", get(dashboard::page))
        .route(
            "/admin/login",
            get(session::login_page).post(session::login),
        )
        .route("/admin/logout", post(session::logout))
        .route("/admin/inbox", get(inbox::list))
        .route(
            "/admin/inbox/replay",
            get(inbox::replay_preview).post(inbox::replay),
        )
        .route("/admin/inbox/{id}", get(inbox::show))
        .route("/admin/inbox/{id}/retry", post(inbox::retry))
        .route("/admin/orders", get(orders::search))
        .route("/admin/orders/{id}", get(orders::show))
        .route("/admin/orders/{id}/events", post(orders::trigger))
        .route("/admin/processes", get(processes::list))
        .route("/admin/processes/{name}", get(processes::show))
        .route("/admin/assets/admin.css", get(stylesheet))
        .route("/admin/{*rest}", get(not_found))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
        .into_response()
}

async fn not_found() -> UiError {
    UiError::new(StatusCode::NOT_FOUND, "There is no such page.")
}

/// Pages are never cached (they show live data and carry CSRF tokens) and never framed.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An HTML response.
fn html(status: StatusCode, page: Markup) -> Response {
    (status, Html(page.into_string())).into_response()
}

/// A failed page or form: the API's status and message (a 500 is logged with its cause
/// and shows "internal error"), as an HTML page.
#[derive(Debug)]
pub(crate) struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_form(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{message}"))
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        let (status, body) = e.parts();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("internal error")
            .to_owned();
        Self { status, message }
    }
}

/// The API's mapping of the errors the pages meet.
macro_rules! via_api_error {
    ($($t:ty),*) => {$(
        impl From<$t> for UiError {
            fn from(e: $t) -> Self {
                ApiError::from(e).into()
            }
        }
    )*};
}
via_api_error!(
    crate::store::StoreError,
    crate::inbox::ops::OpsError,
    crate::domain::DomainError
);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        html(self.status, layout::message(title, &self.message))
    }
}

type UiResult<T = Response> = Result<T, UiError>;
