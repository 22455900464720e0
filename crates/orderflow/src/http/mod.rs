//! The HTTP API (axum): one resource's handlers per file, OpenAPI generated from them.

mod admin;
mod apidoc;
pub mod edge;
mod effects;
mod erp;
pub mod error;
mod events;
pub mod extract;
mod limits;
mod list;
mod ops;
mod orders;
pub(crate) mod paging;
mod processes;
pub mod ratelimit;
mod reservations;
pub mod server;
mod strays;
mod subscriptions;
pub mod validate;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::ClientCache;
use crate::config::Config;
use crate::domain::OrderService;
use crate::inbox::Inbox;
pub use error::{ApiError, ApiResult};
use extract::BodyLimit;
use ratelimit::RateLimits;

/// What handlers share: one `Arc`, so the copy every middleware layer and extractor takes
/// per request is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub service: OrderService,
    pub inbox: Inbox,
    /// Bearer token → client, in memory.
    pub clients: ClientCache,
    /// The configured per-client rate limits.
    pub rate_limits: Arc<RateLimits>,
    /// The outbound client's settings (the address guard of subscription URLs).
    pub outbound: Arc<crate::config::OutboundConfig>,
}

impl AppState {
    /// The state for `service` and `inbox` with the client limits from `config`.
    pub fn new(service: OrderService, inbox: Inbox, config: &Config) -> Self {
        Self(Arc::new(Shared {
            inbox,
            clients: ClientCache::new(service.store().clone()),
            rate_limits: Arc::new(RateLimits::from_config(&config.clients)),
            outbound: Arc::new(config.outbound.clone()),
            service,
        }))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        description = "Orders driven through a Spryker-compatible OMS state machine."
    ),
    modifiers(&BearerAuth),
    // The bodies of subscription deliveries (see `/v1/admin/subscriptions`): order events,
    // and `update.dead`.
    components(schemas(crate::subscriptions::Event, crate::subscriptions::DeadUpdateEvent)),
    tags(
        (name = "orders", description = "Create, read and change orders (shop, admin)"),
        (name = "erp", description = "Order updates from the ERP: stored durably, then applied (erp, admin)"),
        (name = "processes", description = "Process definitions and live item counts"),
        (name = "operations", description = "Health, readiness and metrics (public)"),
        (name = "admin", description = "Inbox and after-commit effect operations and stats: list, retry, replay; subscriptions to order events (admin)")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A client's token (`orderflow clients create`). 401 when missing or \
                         unknown; 429 `rate_limited` with `retry-after` (seconds) over the \
                         client's configured rate limit.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The router with every route, and the OpenAPI document generated from the handlers.
pub fn router(state: AppState, max_body_bytes: usize) -> (Router, utoipa::openapi::OpenApi) {
    let max_batch = state.inbox.settings().max_batch();
    let processes = state.service.processes();
    let process_names: Vec<String> = processes.iter().map(|p| p.name().to_owned()).collect();
    let mut event_names: Vec<String> = processes
        .iter()
        .flat_map(|p| p.events().iter().map(|e| e.name.clone()))
        .collect();
    event_names.sort();
    event_names.dedup();
    let (api_router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orders::create_order, list::list_orders))
        .routes(routes!(orders::get_order, orders::patch_order))
        .routes(routes!(orders::get_order_by_reference))
        .routes(routes!(events::trigger_event))
        .routes(routes!(orders::order_history))
        .routes(routes!(erp::post_update))
        .routes(routes!(erp::post_batch))
        .routes(routes!(erp::get_update))
        .routes(routes!(reservations::reservations))
        .routes(routes!(processes::list_processes))
        .routes(routes!(processes::get_process))
        .routes(routes!(processes::graph_svg))
        .routes(routes!(processes::graph_dot))
        .routes(routes!(admin::list_inbox))
        .routes(routes!(admin::replay))
        .routes(routes!(admin::get_inbox_update))
        .routes(routes!(admin::retry_update))
        .routes(routes!(admin::stats))
        .routes(routes!(effects::list_effects))
        .routes(routes!(effects::get_effect))
        .routes(routes!(effects::retry_effect))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(
            subscriptions::get,
            subscriptions::patch,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::deliveries))
        .routes(routes!(subscriptions::retry))
        .routes(routes!(subscriptions::replay))
        .routes(routes!(strays::list_strays))
        .routes(routes!(strays::move_items))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    let mut api = api;
    apidoc::add_error_responses(&mut api);
    apidoc::set_max_batch(&mut api, max_batch);
    apidoc::set_loaded_names(&mut api, &process_names, &event_names);
    apidoc::set_text_patterns(&mut api);
    apidoc::add_links(&mut api);
    let graphql = crate::graphql::router(state.clone());
    let admin = crate::admin::router(state.clone());
    let router = api_router
        .with_state(state)
        .merge(
            SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", apidoc::to_json(&api)),
        )
        .merge(graphql)
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such route".into()).into_response() })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .layer(middleware::from_fn(refuse_nul))
        .layer(middleware::from_fn(edge::envelope))
        .layer(middleware::from_fn(track))
        .layer(TraceLayer::new_for_http());
    (router, api)
}

/// Refuses a path or query that decodes to a NUL character (`%00`): no store can hold it
/// (see [`validate`]). Only the sequence `%00` decodes to NUL, and a raw NUL byte never
/// gets past the HTTP parser.
async fn refuse_nul(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let checks = [
        ("path", uri.path()),
        ("query", uri.query().unwrap_or_default()),
    ];
    for (what, raw) in checks {
        if raw.contains("%00") {
            let v = validate::nul(what);
            return ApiError::InvalidRequest {
                message: v.message,
                path: Some(v.path),
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// Counts requests and their duration per route and status. Every label takes a bounded
/// set of values, whatever a client sends: the route template (or `unmatched`), a known
/// method (or `other`) and the status code.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("orderflow_http_requests_total", &labels).increment(1);
    metrics::histogram!("orderflow_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The `method` label: one of the standard methods, else `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Serves on an already bound listener until `shutdown` is cancelled, then finishes the
/// requests in flight; under the connection limits and timeouts of `limits`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    max_body_bytes: usize,
    limits: &crate::config::ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (router, _) = router(state, max_body_bytes);
    let router = router.layer(middleware::from_fn_with_state(
        (limits.clone(), max_body_bytes),
        limits::enforce,
    ));
    server::serve(listener, router, limits, shutdown).await
}
