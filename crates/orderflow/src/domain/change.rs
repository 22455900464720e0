//! What a change to an order is (its input, its source, its target) and how it can fail.

use oms::engine::{Cause, EngineError};
use serde_json::{Map, Value};

use super::types::{Currency, EventName, OrderId, OrderReference, Quantity, Sku, Version};
use super::view::{ItemState, Move, OrderView, Stay};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("order not found")]
    OrderNotFound,
    #[error("process {0:?} is not loaded")]
    UnknownProcess(String),
    #[error("order reference {0:?} is already used")]
    ReferenceTaken(String),
    #[error("the order changed: current version is {current}")]
    VersionConflict { current: i64 },
    #[error("event {event:?} applies to none of the selected items")]
    EventNotApplicable {
        event: String,
        items: Vec<ItemState>,
        /// Every one of `items` is in a final state (no transition leaves it): the event
        /// can never apply to them, whatever happens to the order.
        all_final: bool,
    },
    #[error("process {process} has no event {event:?}")]
    UnknownEvent { process: String, event: String },
    #[error("the order has no item {0}")]
    UnknownItem(i64),
    #[error("the order has no item with SKU {0:?}")]
    UnknownSku(String),
    #[error("a command failed and may succeed later: {0}")]
    CommandFailed(String),
    /// An ERP update's command failed for good (not retryable): the update is refused as
    /// a whole and changes nothing.
    #[error("command {command} failed and will not succeed on a retry: {message}")]
    CommandRefused { command: String, message: String },
    #[error("event {0:?} is not manual; this client may trigger manual events only")]
    NotManual(String),
    #[error("item {item} is in state {state:?}, which process {process} does not define")]
    UnknownState {
        item: i64,
        state: String,
        process: String,
    },
    /// An engine error the service has no answer of its own for.
    #[error(transparent)]
    Engine(EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DomainError {
    /// The stable error code the API and the inbox report.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OrderNotFound => "order_not_found",
            Self::UnknownProcess(_) => "unknown_process",
            Self::ReferenceTaken(_) => "reference_taken",
            Self::VersionConflict { .. } => "version_conflict",
            Self::EventNotApplicable { .. } => "event_not_applicable",
            Self::UnknownEvent { .. } => "unknown_event",
            Self::UnknownItem(_) | Self::UnknownSku(_) => "unknown_item",
            Self::NotManual(_) => "event_not_manual",
            Self::CommandFailed(_) => "command_failed",
            Self::CommandRefused { .. } => "command_refused",
            Self::UnknownState { .. } | Self::Engine(_) | Self::Store(_) => "internal",
        }
    }
}

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// Who caused a change: the change feed's `source`, and history's `source` for the moves
/// the change itself made (triggered moves, items placed in a state). Moves the engine
/// made on its own are labelled by their cause (`on_enter`, `timeout`, `condition`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The orders API (shop or admin).
    Api,
    /// An ERP update, by inbox id.
    Erp(String),
    /// An operator's move of items out of a state the process no longer has.
    Operator,
    /// A check-condition pass that fired a due timeout (the first move it made).
    Timeout,
    /// A check-condition pass that took an event-less transition.
    Condition,
}

impl Source {
    pub(super) fn label(&self, cause: Cause) -> String {
        match (cause, self) {
            (Cause::Trigger, Self::Api) => "api".into(),
            (Cause::Trigger, Self::Erp(id)) => format!("erp:{id}"),
            (Cause::Trigger, Self::Operator) => "operator".into(),
            (Cause::Trigger, Self::Timeout) => "timeout".into(),
            (Cause::Trigger, Self::Condition) => "condition".into(),
            // on_enter, timeout, condition, and whatever else the engine may add.
            (cause, _) => cause.as_str().into(),
        }
    }
}

/// A new order, checked at the edge.
#[derive(Clone, Debug)]
pub struct NewOrderInput {
    pub reference: OrderReference,
    pub process: String,
    pub currency: Option<Currency>,
    pub attributes: Map<String, Value>,
    pub items: Vec<NewItemInput>,
}

#[derive(Clone, Debug)]
pub struct NewItemInput {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Option<i64>,
    pub attributes: Map<String, Value>,
}

/// Which order a change is for.
#[derive(Clone, Debug)]
pub enum Target {
    Id(OrderId),
    Reference(OrderReference),
}

/// An event to trigger.
#[derive(Clone, Debug)]
pub struct EventInput {
    pub event: EventName,
    /// Refuse events not marked `manual="true"` (the shop role).
    pub manual_only: bool,
}

/// An item named by its id or by SKU (every item with that SKU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemRef {
    Id(i64),
    Sku(String),
}

/// One change to an existing order: attributes are merged first (RFC 7386 merge patch:
/// `null` removes a key), then the event is triggered on the selected items.
#[derive(Clone, Debug)]
pub struct Change {
    pub expected: Option<Version>,
    pub attributes: Option<Map<String, Value>>,
    /// The items the event and `item_attributes` apply to; all items when `None`.
    pub items: Option<Vec<ItemRef>>,
    /// Merged into the attributes of each selected item.
    pub item_attributes: Option<Map<String, Value>>,
    pub event: Option<EventInput>,
    pub source: Source,
}

/// What a change did.
#[derive(Clone, Debug)]
pub struct Applied {
    pub order: OrderView,
    pub moved: Vec<Move>,
    pub not_applicable: Vec<i64>,
    pub stayed: Vec<Stay>,
    /// False when nothing changed and the version stayed.
    pub changed: bool,
}
