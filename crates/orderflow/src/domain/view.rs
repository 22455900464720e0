//! The order as the API shows it, built from stored rows and the process definition.

use chrono::{DateTime, Utc};
use oms::Process;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::store::orders::{HistoryRow, ItemRow, OrderRow};

/// An order with its items, read from the primary store.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: i64,
    pub reference: String,
    /// Increases with every committed change, including background processing.
    pub version: i64,
    pub process: String,
    pub currency: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub items: Vec<ItemView>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ItemView {
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
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

impl OrderView {
    /// `process` supplies flags; without it (a process no longer loaded) flags are empty.
    pub fn new(order: &OrderRow, items: &[ItemRow], process: Option<&Process>) -> Self {
        let items = items
            .iter()
            .map(|i| {
                let flags = process
                    .and_then(|p| p.state_id(&i.state).map(|id| p.state(id).flags.clone()))
                    .unwrap_or_default();
                ItemView {
                    id: i.id,
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                    state: i.state.clone(),
                    flags,
                    reserved: i.reserved,
                    state_entered_at: i.state_entered_at,
                    attributes: i.attributes.0.clone(),
                }
            })
            .collect();
        Self {
            id: order.id,
            reference: order.reference.clone(),
            version: order.version,
            process: order.process.clone(),
            currency: order.currency.clone(),
            attributes: order.attributes.0.clone(),
            created_at: order.created_at,
            updated_at: order.updated_at,
            items,
        }
    }
}

/// One row of an order's history: a move, or a stay with the reason.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
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

impl From<HistoryRow> for HistoryEntry {
    fn from(r: HistoryRow) -> Self {
        Self {
            item: r.item_id,
            from: r.from_state,
            to: r.to_state,
            event: r.event,
            source: r.source,
            reason: r.reason,
            at: r.at,
        }
    }
}

/// An item that moved.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct Move {
    pub item: i64,
    pub from: String,
    pub to: String,
}

/// An item the event applied to that did not move, and why.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct Stay {
    pub item: i64,
    pub state: String,
    pub reason: String,
}

/// An item's state, named in `event_not_applicable` errors.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct ItemState {
    pub item: i64,
    pub state: String,
}
