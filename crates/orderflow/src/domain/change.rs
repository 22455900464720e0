//! What a change to an order is (its input, its source, its target), how it can fail, and
//! how its item references and attribute patches resolve.

use oms::engine::{Cause, EngineError};
use serde_json::{Map, Value};

use super::types::{Currency, EventName, OrderId, OrderReference, Quantity, Sku, Version};
use super::view::{ItemState, Move, OrderView, Stay};
use crate::store::StoreError;
use crate::store::orders::ItemRow;

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

/// Item ids for references: an id must be the order's, a SKU selects every item with it.
pub(super) fn select_items(items: &[ItemRow], refs: &[ItemRef]) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for r in refs {
        let found: Vec<i64> = match r {
            ItemRef::Id(id) => items.iter().filter(|i| i.id == *id).map(|i| i.id).collect(),
            ItemRef::Sku(sku) => items
                .iter()
                .filter(|i| &i.sku == sku)
                .map(|i| i.id)
                .collect(),
        };
        if found.is_empty() {
            return Err(match r {
                ItemRef::Id(id) => DomainError::UnknownItem(*id),
                ItemRef::Sku(sku) => DomainError::UnknownSku(sku.clone()),
            });
        }
        for id in found {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// RFC 7386 JSON merge patch on an object: `null` removes, objects merge, the rest replaces.
/// Returns whether `target` changed (a patch that sets what is already there does not).
pub(super) fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (k, v) in patch {
        match v {
            Value::Null => changed |= target.remove(k).is_some(),
            Value::Object(p) => {
                let entry = target.entry(k.clone()).or_insert(Value::Null);
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                    changed = true;
                }
                if let Value::Object(t) = entry {
                    changed |= merge_patch(t, p);
                }
            }
            other => changed |= target.insert(k.clone(), other.clone()).as_ref() != Some(other),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": 4})
            .as_object()
            .unwrap()
            .clone();
        let p = json!({"a": null, "b": {"c": null, "x": 5}, "e": [1]})
            .as_object()
            .unwrap()
            .clone();
        assert!(merge_patch(&mut t, &p));
        assert_eq!(Value::Object(t), json!({"b": {"d": 3, "x": 5}, "e": [1]}));
    }

    #[test]
    fn merge_patch_says_whether_it_changed_anything() {
        let object = |v: Value| v.as_object().unwrap().clone();
        let mut t = object(json!({"a": 1, "b": {"c": 2}}));
        let same = object(json!({"a": 1, "b": {"c": 2}, "gone": null}));
        assert!(
            !merge_patch(&mut t, &same),
            "setting what is there is no change"
        );
        assert!(!merge_patch(&mut t, &object(json!({}))));
        for patch in [
            json!({"a": 2}),
            json!({"a": null}),
            json!({"b": {"d": 3}}),
            json!({"new": {}}),
            json!({"a": {"x": null}}),
        ] {
            let mut t = object(json!({"a": 1, "b": {"c": 2}}));
            let before = t.clone();
            assert!(merge_patch(&mut t, &object(patch.clone())), "{patch}");
            assert_ne!(t, before, "{patch}");
        }
    }

    #[test]
    fn source_labels() {
        assert_eq!(Source::Api.label(Cause::Trigger), "api");
        assert_eq!(Source::Erp("u1".into()).label(Cause::Trigger), "erp:u1");
        assert_eq!(Source::Api.label(Cause::OnEnter), "on_enter");
        assert_eq!(Source::Api.label(Cause::Timeout), "timeout");
        assert_eq!(Source::Timeout.label(Cause::Trigger), "timeout");
        assert_eq!(Source::Condition.label(Cause::Trigger), "condition");
        assert_eq!(Source::Timeout.label(Cause::OnEnter), "on_enter");
    }
}
