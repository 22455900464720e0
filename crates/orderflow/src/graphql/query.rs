//! `Query`: orders (one from the primary store, lists from the projection), ERP update
//! status, processes, reservations, and for admins the inbox and stats.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::error::{IntoGraphql, to_graphql};
use super::process::Process;
use super::types::{InboxUpdate, Order, OrderSummary, Reservation, Status, Update};
use super::{ADMIN, ERP, SHOP, State, caller};
use crate::domain::Target;
use crate::domain::types::{OrderId, OrderReference, Role, Sku};
use crate::http::ApiError;
use crate::http::paging::{Cursor, PageLimit};
use crate::inbox::model::{UpdateDetail, UpdateView};
use crate::inbox::ops::{self, InboxFilter as OpsFilter, StatusCounts};
use crate::store::projection::ListFilter;

pub struct QueryRoot;

/// Which orders `orders` lists; every given field must match.
#[derive(Default, InputObject)]
pub(super) struct OrderFilter {
    /// Orders with at least one item in this state.
    pub state: Option<String>,
    pub process: Option<String>,
    /// Orders with at least one item of this SKU.
    pub sku: Option<String>,
    /// Orders changed after this instant.
    pub updated_after: Option<DateTime<Utc>>,
}

/// Which updates `inbox` lists; every given field must match.
#[derive(Default, InputObject)]
pub struct InboxFilter {
    pub status: Option<Status>,
    pub order_reference: Option<String>,
    /// Only updates with this OMS event.
    pub event: Option<String>,
    /// Received at or after this instant.
    pub received_after: Option<DateTime<Utc>>,
    /// Received before this instant.
    pub received_before: Option<DateTime<Utc>>,
}

impl From<InboxFilter> for OpsFilter {
    fn from(f: InboxFilter) -> Self {
        Self {
            status: f.status.map(Into::into),
            order_reference: f.order_reference,
            event: f.event,
            received_after: f.received_after,
            received_before: f.received_before,
        }
    }
}

/// Inbox updates by status.
#[derive(SimpleObject)]
pub(super) struct InboxCounts {
    pub accepted: i64,
    pub processing: i64,
    pub applied: i64,
    pub parked: i64,
    pub ignored: i64,
    pub rejected: i64,
    pub dead: i64,
}

/// How far the list view (`orders`) is behind the primary store.
#[derive(SimpleObject)]
pub(super) struct ProjectionStats {
    /// Changes not yet in the list view.
    pub pending_changes: i64,
    /// Age of the oldest of them; 0 when the list view is current.
    pub lag_seconds: f64,
}

/// What `GET /v1/admin/stats` shows.
#[derive(SimpleObject)]
pub(super) struct Stats {
    pub inbox: InboxCounts,
    /// Age of the oldest accepted, processing or parked update; 0 when there is none.
    pub oldest_pending_age_seconds: f64,
    pub projection: ProjectionStats,
}

impl From<StatusCounts> for InboxCounts {
    fn from(c: StatusCounts) -> Self {
        Self {
            accepted: c.accepted,
            processing: c.processing,
            applied: c.applied,
            parked: c.parked,
            ignored: c.ignored,
            rejected: c.rejected,
            dead: c.dead,
        }
    }
}

#[Object(name = "Query")]
impl QueryRoot {
    /// One order by id, from the primary store: a write is visible at once.
    #[graphql(guard = "SHOP")]
    async fn order(&self, ctx: &Context<'_>, id: i64) -> Result<Order> {
        let state = ctx.data::<State>()?;
        let order = state.service.get(&Target::Id(OrderId(id))).await.gql()?;
        Ok(order.into())
    }

    /// One order by the shop's reference, from the primary store.
    #[graphql(guard = "SHOP")]
    async fn order_by_reference(&self, ctx: &Context<'_>, reference: String) -> Result<Order> {
        let state = ctx.data::<State>()?;
        let reference =
            OrderReference::parse(reference).map_err(|e| invalid(e.to_string(), "reference"))?;
        let order = state
            .service
            .get(&Target::Reference(reference))
            .await
            .gql()?;
        Ok(order.into())
    }

    /// Orders from the list view, oldest first; it may lag a write by a moment. `first` is
    /// 1 to 500 (default 50); `after` is an edge's cursor.
    #[graphql(guard = "SHOP", complexity = "page_cost(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<OrderFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, OrderSummary>> {
        let state = ctx.data::<State>()?;
        let limit = page_size(first)?;
        let after_id = match &after {
            None => 0,
            Some(c) => Cursor::Orders.decode(c).map_err(to_graphql)?,
        };
        let filter = filter.unwrap_or_default();
        let list = ListFilter {
            state: filter.state,
            process: filter.process,
            sku: filter.sku,
            updated_after: filter.updated_after,
            after_id,
            limit: limit + 1,
        };
        let mut rows = state.service.store().list_orders(&list).await.gql()?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let mut page = Connection::new(after.is_some(), more);
        page.edges.extend(
            rows.into_iter()
                .map(|r| Edge::new(Cursor::Orders.encode(r.order_id), OrderSummary::from(r))),
        );
        Ok(page)
    }

    /// An ERP update's status. ERP clients see their own updates; admins see all.
    #[graphql(guard = "ERP")]
    async fn update(&self, ctx: &Context<'_>, id: String) -> Result<Update> {
        let state = ctx.data::<State>()?;
        let caller = caller(ctx)?;
        let row = state.inbox.store().update_by_id(&id).await.gql()?;
        match row {
            Some(row) if caller.role == Role::Admin || row.client == caller.name => {
                Ok(UpdateView::of(&row).into())
            }
            _ => Err(to_graphql(ApiError::NotFound(format!("no update {id}")))),
        }
    }

    /// The loaded main processes.
    #[graphql(guard = "SHOP")]
    async fn processes(&self, ctx: &Context<'_>) -> Result<Vec<Process>> {
        let state = ctx.data::<State>()?;
        Ok(state
            .service
            .processes()
            .iter()
            .cloned()
            .map(Process)
            .collect())
    }

    /// One loaded process by name.
    #[graphql(guard = "SHOP")]
    async fn process(&self, ctx: &Context<'_>, name: String) -> Result<Process> {
        let state = ctx.data::<State>()?;
        let found = state.service.processes().get(&name).cloned();
        found.map(Process).ok_or_else(|| {
            to_graphql(ApiError::NotFound(format!(
                "no process named {name:?} is loaded"
            )))
        })
    }

    /// Stock of a SKU held by items in reserved states.
    #[graphql(guard = "SHOP")]
    async fn reservation(&self, ctx: &Context<'_>, sku: String) -> Result<Reservation> {
        let state = ctx.data::<State>()?;
        let sku = Sku::parse(sku).map_err(|e| invalid(e.to_string(), "sku"))?;
        let reserved_quantity = state
            .service
            .store()
            .reserved_quantity(sku.as_str())
            .await
            .gql()?;
        Ok(Reservation {
            sku: sku.into_inner(),
            reserved_quantity,
        })
    }

    /// Inbox updates with everything stored about them, oldest first (admin only).
    #[graphql(guard = "ADMIN", complexity = "page_cost(first, child_complexity)")]
    async fn inbox(
        &self,
        ctx: &Context<'_>,
        filter: Option<InboxFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, InboxUpdate>> {
        let state = ctx.data::<State>()?;
        let limit = page_size(first)?;
        let after_seq = match &after {
            None => None,
            Some(c) => Some(Cursor::Inbox.decode(c).map_err(to_graphql)?),
        };
        let filter = OpsFilter::from(filter.unwrap_or_default());
        let store = state.inbox.store();
        let (rows, next) = ops::list(store, &filter, after_seq, limit).await.gql()?;
        let mut page = Connection::new(after.is_some(), next.is_some());
        page.edges.extend(
            rows.iter()
                .map(|r| Edge::new(Cursor::Inbox.encode(r.seq), UpdateDetail::of(r).into())),
        );
        Ok(page)
    }

    /// Inbox depth by status, the oldest pending update's age and the list view's lag
    /// (admin only).
    #[graphql(guard = "ADMIN")]
    async fn stats(&self, ctx: &Context<'_>) -> Result<Stats> {
        let state = ctx.data::<State>()?;
        let store = state.inbox.store();
        let inbox = ops::refresh_gauges(store).await.gql()?;
        let (pending, oldest) = store.projection_backlog().await.gql()?;
        let lag = oldest.map_or(0.0, |t| (Utc::now() - t).as_seconds_f64().max(0.0));
        Ok(Stats {
            inbox: inbox.counts.into(),
            oldest_pending_age_seconds: inbox.oldest_pending_age_seconds,
            projection: ProjectionStats {
                pending_changes: pending,
                lag_seconds: lag,
            },
        })
    }
}

/// A page's cost: its size times the cost of one entry's selection.
fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let size = first
        .map_or(PageLimit::DEFAULT, i64::from)
        .clamp(1, PageLimit::MAX);
    (size as usize).saturating_mul(child_complexity)
}

/// `first`, checked as REST checks `limit`.
fn page_size(first: Option<i32>) -> Result<i64> {
    match first {
        None => Ok(PageLimit::DEFAULT),
        Some(n) if (1..=PageLimit::MAX).contains(&i64::from(n)) => Ok(i64::from(n)),
        Some(n) => Err(invalid(
            format!("must be an integer from 1 to {}, got {n}", PageLimit::MAX),
            "first",
        )),
    }
}

/// `INVALID_REQUEST` naming the argument.
pub(super) fn invalid(message: String, path: &str) -> async_graphql::Error {
    to_graphql(ApiError::InvalidRequest {
        message,
        path: Some(path.to_owned()),
    })
}
