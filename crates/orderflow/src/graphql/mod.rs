//! GraphQL at `/graphql` (async-graphql): the same service, consistency, roles and error
//! codes as the REST API, an `orderChanged` subscription over WebSocket, and an offline
//! GraphiQL page.
//!
//! Reads of one order (`order`, `orderByReference`) go to the primary store and are
//! read-after-write consistent; `orders` reads the list projection and is eventually
//! consistent, as `GET /v1/orders` is. Every request is bounded: query depth, complexity
//! (list fields cost their page size times their selection) and operations per batch.

mod error;
mod graphiql;
mod mutation;
mod process;
mod query;
mod subscription;
mod transport;
mod types;

use async_graphql::{Context, Guard, Result, Schema, SchemaBuilder};

pub use error::code;
pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;
pub use transport::router;

use crate::domain::types::Role;
use crate::http::AppState;
use crate::http::extract::Caller;

/// What resolvers share: the REST handlers' state.
type State = AppState;

/// The orderflow GraphQL schema.
pub type OrderflowSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Deepest selection nesting a query may have. The standard introspection query (GraphiQL's)
/// nests 13 deep; no query of orderflow's own types needs more than 5.
pub const MAX_DEPTH: usize = 15;
/// Most a query may cost: each field costs 1; a list field costs its page size (`first`,
/// default 50) times its selection, so one request cannot read the whole database.
pub const MAX_COMPLEXITY: usize = 1000;
/// Most operations one batched request (a JSON array of queries) may hold.
pub const MAX_BATCH: usize = 10;

/// The schema with its limits, before the service is attached.
fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
}

/// The executable schema over `state`.
pub fn schema(state: AppState) -> OrderflowSchema {
    builder().data(state).finish()
}

/// The schema in SDL, as `orderflow graphql schema` prints it and `schema.graphql` holds.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// The authenticated client of the request (or WebSocket connection).
fn caller<'a>(ctx: &'a Context<'_>) -> Result<&'a Caller> {
    ctx.data::<Caller>().map_err(|_| {
        error::to_graphql(crate::http::ApiError::Unauthenticated(
            "missing Authorization: Bearer <token>",
        ))
    })
}

/// Allows a field to the given roles only (`FORBIDDEN` otherwise), as REST's extractors do
/// for an endpoint.
pub struct RoleGuard(&'static [Role]);

/// Orders, processes, reservations: the shop API.
pub const SHOP: RoleGuard = RoleGuard(&[Role::Shop, Role::Admin]);
/// ERP updates.
pub const ERP: RoleGuard = RoleGuard(&[Role::Erp, Role::Admin]);
/// Inbox operations and stats.
pub const ADMIN: RoleGuard = RoleGuard(&[Role::Admin]);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        caller(ctx)?.require(self.0).map_err(error::to_graphql)
    }
}
