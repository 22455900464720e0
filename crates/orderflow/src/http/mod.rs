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

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::IntoResponse;
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
/// [`serve`] wraps it in the limits (`limits::enforce`), which also hand the extractors the
/// body limit and the body's read timeout.
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
    let routes = api_router
        .with_state(state)
        .merge(
            SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", apidoc::to_json(&api)),
        )
        .merge(graphql)
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such route".into()).into_response() })
        // Around each route: the edge labels its metrics with the matched route's template,
        // which only exists once the router has matched one.
        .layer(middleware::from_fn_with_state(
            edge::Meters::new(),
            edge::edge,
        ));
    // Around the router as a whole, not around each of its routes: each `Router::layer` is
    // one more boxed service in every route's stack, and a request clones the stack below
    // each layer it passes (29 allocations a request with four layers and the limits).
    let router = Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(DefaultBodyLimit::max(max_body_bytes))
            .service(routes),
    );
    (router, api)
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
