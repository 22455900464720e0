//! The GraphQL object types of orders, items, history and inbox updates, built from the
//! views the REST API serves.

use async_graphql::{ComplexObject, Context, Enum, Json, Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::State;
use super::error::IntoGraphql;
use crate::domain::types::OrderId;
use crate::domain::view::{self, ItemView, OrderView};
use crate::inbox::model::{Answer, UpdateDetail, UpdateView};
use crate::store::projection::ListRow;

/// An order with its items, read from the primary store (read-after-write consistent).
#[derive(SimpleObject)]
#[graphql(complex)]
pub(super) struct Order {
    pub id: i64,
    pub reference: String,
    /// Increases with every committed change, including background processing.
    pub version: i64,
    pub process: String,
    pub currency: Option<String>,
    pub attributes: Json<Map<String, Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub items: Vec<Item>,
}

#[ComplexObject]
impl Order {
    /// Every transition of the order's items, oldest first, with its source.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<HistoryEntry>> {
        let state = ctx.data::<State>()?;
        let entries = state.service.history(OrderId(self.id)).await.gql()?;
        Ok(entries.into_iter().map(Into::into).collect())
    }
}

impl From<OrderView> for Order {
    fn from(o: OrderView) -> Self {
        Self {
            id: o.id,
            reference: o.reference,
            version: o.version,
            process: o.process,
            currency: o.currency,
            attributes: Json(o.attributes),
            created_at: o.created_at,
            updated_at: o.updated_at,
            items: o.items.into_iter().map(Item::from).collect(),
        }
    }
}

#[derive(SimpleObject)]
pub(super) struct Item {
    pub id: i64,
    pub sku: String,
    pub quantity: i64,
    /// Price per unit in minor units of the order's currency (cents), when given.
    pub unit_price: Option<i64>,
    pub state: String,
    /// The `<flag>`s of the item's state.
    pub flags: Vec<String>,
    /// The item's state holds stock.
    pub reserved: bool,
    pub state_entered_at: DateTime<Utc>,
    pub attributes: Json<Map<String, Value>>,
}

impl From<ItemView> for Item {
    fn from(i: ItemView) -> Self {
        Self {
            id: i.id,
            sku: i.sku,
            quantity: i.quantity,
            unit_price: i.unit_price,
            state: i.state,
            flags: i.flags,
            reserved: i.reserved,
            state_entered_at: i.state_entered_at,
            attributes: Json(i.attributes),
        }
    }
}

/// One row of an order's history: a move, or a stay with the reason.
#[derive(SimpleObject)]
pub(super) struct HistoryEntry {
    pub item: i64,
    /// `null` when the item was created.
    pub from: Option<String>,
    pub to: String,
    pub event: Option<String>,
    /// `api`, `erp:<update id>`, `on_enter`, `timeout` or `condition`.
    pub source: String,
    /// Why the item stayed (failed command, unbound plugin), when it did.
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<view::HistoryEntry> for HistoryEntry {
    fn from(h: view::HistoryEntry) -> Self {
        Self {
            item: h.item,
            from: h.from,
            to: h.to,
            event: h.event,
            source: h.source,
            reason: h.reason,
            at: h.at,
        }
    }
}

/// An item that moved.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct Move {
    pub item: i64,
    pub from: String,
    pub to: String,
}

/// An item the event applied to that did not move, and why.
#[derive(SimpleObject)]
pub(super) struct Stay {
    pub item: i64,
    pub state: String,
    pub reason: String,
}

/// What `triggerEvent` did.
#[derive(SimpleObject)]
pub(super) struct EventResult {
    pub order: Order,
    pub moved: Vec<Move>,
    /// Items with no transition for the event in their state.
    pub not_applicable: Vec<i64>,
    /// Items the event applied to that stayed, with the reason.
    pub stayed: Vec<Stay>,
}

/// An order as the list view (eventually consistent) holds it.
#[derive(SimpleObject)]
pub(super) struct OrderSummary {
    pub id: i64,
    pub reference: String,
    pub process: String,
    pub version: i64,
    /// Distinct states of the order's items.
    pub states: Vec<String>,
    pub skus: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ListRow> for OrderSummary {
    fn from(r: ListRow) -> Self {
        Self {
            id: r.order_id,
            reference: r.reference,
            process: r.process,
            version: r.version,
            states: r.states.0,
            skus: r.skus.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Where an ERP update is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(name = "UpdateStatus", remote = "crate::store::status::UpdateStatus")]
pub enum Status {
    Accepted,
    Processing,
    Applied,
    Parked,
    Ignored,
    Rejected,
    Dead,
}

/// An ERP update's status, as `GET /v1/erp/order-updates/{id}` shows it.
#[derive(SimpleObject)]
pub(super) struct Update {
    pub id: String,
    pub status: Status,
    pub order_reference: String,
    pub event: Option<String>,
    /// Processing attempts so far.
    pub attempts: i32,
    /// The last attempt's error: `{attempt, at, code, message, ...}`.
    pub last_error: Option<Json<Value>>,
    /// For `APPLIED`: the order's new version and the items moved.
    pub result: Option<Json<Value>>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

impl From<UpdateView> for Update {
    fn from(v: UpdateView) -> Self {
        Self {
            id: v.id,
            status: v.status.into(),
            order_reference: v.order_reference,
            event: v.event,
            attempts: v.attempts,
            last_error: v.last_error.map(Json),
            result: v.result.map(Json),
            received_at: v.received_at,
            processed_at: v.processed_at,
        }
    }
}

/// Everything stored about an update (admin only).
#[derive(SimpleObject)]
pub(super) struct InboxUpdate {
    pub update: Update,
    pub client: String,
    pub idempotency_key: Option<String>,
    /// Every attempt's error, oldest first, and an `operator_retry` entry per retry.
    pub errors: Vec<Json<Value>>,
    pub payload: Json<Value>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub park_until: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
}

impl From<UpdateDetail> for InboxUpdate {
    fn from(d: UpdateDetail) -> Self {
        Self {
            update: d.view.into(),
            client: d.client,
            idempotency_key: d.idempotency_key,
            errors: d.errors.into_iter().map(Json).collect(),
            payload: Json(d.payload),
            next_attempt_at: d.next_attempt_at,
            park_until: d.park_until,
            lease_owner: d.lease_owner,
        }
    }
}

/// What `sendOrderUpdate` answers: the update stored (and, when waiting, processed).
#[derive(SimpleObject)]
pub(super) struct UpdateAnswer {
    pub id: String,
    pub status: Status,
    /// For `APPLIED`, `IGNORED` and `DEAD`: what processing recorded.
    pub result: Option<Json<Value>>,
    /// For `IGNORED`, `DEAD` and `PARKED`: the last attempt's error entry.
    pub last_error: Option<Json<Value>>,
}

impl From<&Answer> for UpdateAnswer {
    fn from(a: &Answer) -> Self {
        Self {
            id: a.id.clone(),
            status: a.status.into(),
            result: a.result.clone().map(Json),
            last_error: a.last_error.clone().map(Json),
        }
    }
}

/// Stock held by items in reserved states.
#[derive(SimpleObject)]
pub(super) struct Reservation {
    pub sku: String,
    pub reserved_quantity: i64,
}
