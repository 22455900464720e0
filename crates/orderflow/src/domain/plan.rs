//! The one planner: every change to an order (a new order entering its process, an event
//! or attribute change from the API or an ERP update, a check-condition pass, an operator's
//! move) becomes rows through [`plan`], in the transaction that holds the order.
//!
//! The rows are read from what was decided, never found by comparing rows before and
//! after: the engine's [`Decisions`] (steps, attribute changes, timers to drop and set,
//! effects) and what the caller did before the engine ran (items it put into a state,
//! attributes its patch changed). An item row is written when its state changed (the
//! engine drops its timers), when a command set one of its attributes, or when the
//! caller's patch changed it; the order row when the version moves or its attributes were
//! set.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use oms::engine::{Cause, Decisions, Outcome, StayReason, TimerKind};
use oms::plugin::{AttributeChange, Effect};
use oms::{Process, StateId, engine};
use serde_json::{Value, json};

use super::change::{DomainError, Result, Source};
use super::view::Stay;
use crate::inbox::follow_up::FollowUp;
use crate::store;
use crate::store::batch::Writes;
use crate::store::orders::{ItemRow, NewHistory, NewTimer, OrderRow};

/// The engine's view of stored rows.
pub(super) fn engine_order(
    row: &OrderRow,
    items: &[ItemRow],
    process: &Process,
) -> Result<engine::Order> {
    let items = items
        .iter()
        .map(|i| {
            let state = process
                .state_id(&i.state)
                .ok_or_else(|| DomainError::UnknownState {
                    item: i.id,
                    state: i.state.clone(),
                    process: process.name().to_owned(),
                })?;
            Ok(engine::Item {
                id: i.id,
                sku: i.sku.clone(),
                quantity: i.quantity,
                state,
                state_entered_at: i.state_entered_at,
                attributes: i.attributes.0.clone(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(engine::Order {
        reference: row.reference.clone(),
        attributes: row.attributes.0.clone(),
        items,
    })
}

/// What kind of change is planned; names its change-feed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind<'a> {
    /// A new order (its row and items are inserted at version 1 by the caller).
    Created,
    /// An attribute change, a triggered event (named) or a check-condition pass.
    Updated { event: Option<&'a str> },
    /// An operator moved items (always a new version).
    Moved,
}

/// An item the caller put into a state before the engine ran (a new order's items in the
/// initial state, an operator's move). Its history row comes before the engine's steps.
#[derive(Clone, Debug)]
pub(super) struct Placed {
    pub item: i64,
    /// `None` for a new item.
    pub from: Option<String>,
    pub to: StateId,
    pub reason: Option<String>,
}

/// What the caller's own attribute patch changed (see `merge_patch`).
#[derive(Clone, Debug, Default)]
pub(super) struct Patched {
    pub order: bool,
    pub items: Vec<i64>,
}

impl Patched {
    pub(super) fn any(&self) -> bool {
        self.order || !self.items.is_empty()
    }
}

/// One decided change to one order, as the planner reads it.
pub(super) struct Plan<'a> {
    pub process: &'a Process,
    pub source: &'a Source,
    pub kind: Kind<'a>,
    pub placed: &'a [Placed],
    pub patched: &'a Patched,
    pub decisions: &'a Decisions,
    pub now: DateTime<Utc>,
    /// When the order's parked inbox updates become due, if the change is recorded.
    pub wake_at: DateTime<Utc>,
}

/// The rows as they now are, the stays worth reporting, and whether the change is recorded
/// (a new version, or the new order; with a change-feed row).
pub(super) struct Planned {
    pub row: OrderRow,
    pub items: Vec<ItemRow>,
    pub stayed: Vec<Stay>,
    pub changed: bool,
}

/// Adds the rows of the change `p` describes to `writes`. `row` and `items` are the order
/// as read under its lock (items by id, as [`engine_order`] was given them); `order` is the
/// engine's view after the change.
pub(super) fn plan(
    writes: &mut Writes,
    p: &Plan<'_>,
    mut row: OrderRow,
    mut items: Vec<ItemRow>,
    order: &engine::Order,
) -> Planned {
    let (process, decisions, now) = (p.process, p.decisions, p.now);
    let changed = match p.kind {
        Kind::Created | Kind::Moved => true,
        Kind::Updated { .. } => p.patched.any() || decisions.changed(),
    };
    let version = match p.kind {
        Kind::Created => row.version,
        _ => row.version + i64::from(changed),
    };

    let mut touched: HashSet<i64> = p.placed.iter().map(|x| x.item).collect();
    touched.extend(&decisions.timers_dropped);
    touched.extend(&p.patched.items);
    let mut order_attributes = p.patched.order;
    for c in &decisions.attribute_changes {
        match c {
            AttributeChange::Order { .. } => order_attributes = true,
            AttributeChange::Item { item, .. } => {
                touched.insert(*item);
            }
        }
    }
    for (item, new) in items.iter_mut().zip(&order.items) {
        debug_assert_eq!(item.id, new.id, "rows and engine items in the same order");
        if !touched.contains(&item.id) {
            continue;
        }
        let state = process.state(new.state);
        writes.update_item(
            item.id,
            &state.name,
            state.reserved,
            new.state_entered_at,
            &new.attributes,
        );
        item.state = state.name.clone();
        item.reserved = state.reserved;
        item.state_entered_at = new.state_entered_at;
        item.attributes = sqlx::types::Json(new.attributes.clone());
    }

    let label = p.source.label(Cause::Trigger);
    for x in p.placed {
        let h = NewHistory {
            item_id: x.item,
            from_state: x.from.as_deref(),
            to_state: &process.state(x.to).name,
            event: None,
            source: &label,
            reason: x.reason.as_deref(),
        };
        writes.insert_history(row.id, &h, now);
    }
    let stayed = steps(writes, p, row.id);
    timers(writes, process, decisions, row.id);
    let snapshot = Snapshot {
        row: &row,
        version,
        process: process.name(),
        attributes: &order.attributes,
        items: &items,
    };
    effects(writes, decisions, &snapshot, now);

    if version != row.version || order_attributes {
        writes.update_order(row.id, &order.attributes, version, now);
        row.version = version;
        row.updated_at = now;
        row.attributes = sqlx::types::Json(order.attributes.clone());
    }
    if changed {
        let (kind, payload_kind, event) = match p.kind {
            Kind::Created => ("created", "created", None),
            Kind::Updated { event } => ("updated", "updated", event),
            Kind::Moved => ("updated", "moved", None),
        };
        let payload = feed_payload(payload_kind, event, p);
        writes.append_change(row.id, version, kind, &payload, now);
        // Updates the ERP sent before this change (or before the order existed) may apply now.
        writes.wake_parked(&row.reference, p.wake_at);
        if p.patched.any() {
            // Event-less transitions may hang on the attributes just changed.
            writes.wake_condition_timers(row.id, now);
        }
    }
    Planned {
        row,
        items,
        stayed,
        changed,
    }
}

/// History rows of the engine's steps: every move, and the stays that say why (not those
/// where no condition held, which a check pass would repeat on every due timer). Returns
/// the stays.
fn steps(writes: &mut Writes, p: &Plan<'_>, order_id: i64) -> Vec<Stay> {
    let process = p.process;
    let mut stayed = Vec::new();
    for step in &p.decisions.steps {
        let event = step.event.map(|e| process.event(e).name.as_str());
        let label = p.source.label(step.cause);
        match &step.outcome {
            Outcome::Moved { from, to, .. } => {
                metrics::counter!("orderflow_transitions_total",
                    "process" => process.name().to_owned(),
                    "event" => event.unwrap_or("none").to_owned())
                .increment(1);
                let h = NewHistory {
                    item_id: step.item,
                    from_state: Some(&process.state(*from).name),
                    to_state: &process.state(*to).name,
                    event,
                    source: &label,
                    reason: None,
                };
                writes.insert_history(order_id, &h, p.now);
            }
            Outcome::Stayed { state, reason } => {
                let state = &process.state(*state).name;
                let text = reason.to_string();
                if !matches!(reason, StayReason::NoConditionHeld) {
                    let h = NewHistory {
                        item_id: step.item,
                        from_state: Some(state),
                        to_state: state,
                        event,
                        source: &label,
                        reason: Some(&text),
                    };
                    writes.insert_history(order_id, &h, p.now);
                }
                stayed.push(Stay {
                    item: step.item,
                    state: state.clone(),
                    reason: text,
                });
            }
            // Not applicable, or an outcome this service does not know: nothing to write.
            _ => {}
        }
    }
    stayed
}

/// The timers the engine dropped and set (dropped first: a moved item's new timers stay).
fn timers(writes: &mut Writes, process: &Process, decisions: &Decisions, order_id: i64) {
    for &item in &decisions.timers_dropped {
        writes.drop_timers(item);
    }
    for t in &decisions.timers_set {
        let (kind, event) = match t.kind {
            TimerKind::Timeout(e) => (
                store::TimerKind::Timeout,
                Some(process.event(e).name.as_str()),
            ),
            TimerKind::Condition => (store::TimerKind::Condition, None),
        };
        let timer = NewTimer {
            item_id: t.item,
            state: &process.state(t.state).name,
            kind,
            event,
            due_at: t.due_at,
        };
        writes.insert_timer(order_id, &timer);
    }
}

/// The order as the change leaves it, for the effects it records.
struct Snapshot<'a> {
    row: &'a OrderRow,
    version: i64,
    process: &'a str,
    attributes: &'a serde_json::Map<String, Value>,
    items: &'a [ItemRow],
}

impl Snapshot<'_> {
    /// The body of an HTTP command's call, less the effect's id and time (README,
    /// "After-commit HTTP commands"): the command, the event, the order and the items the
    /// command ran for, as this change leaves them. Taken now, so every retry sends the
    /// same body.
    fn http_payload(&self, command: &str, event: &Value, items: &[i64]) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .filter(|i| items.contains(&i.id))
            .map(|i| {
                json!({
                    "id": i.id,
                    "sku": i.sku,
                    "quantity": i.quantity,
                    "state": i.state,
                    "attributes": i.attributes.0,
                })
            })
            .collect();
        json!({
            "command": command,
            "event": event,
            "order": {
                "id": self.row.id,
                "reference": self.row.reference,
                "process": self.process,
                "version": self.version,
                "attributes": self.attributes,
            },
            "items": items,
        })
    }
}

/// Command effects. A follow-up event is handed to the inbox, which stores it with this
/// change. An HTTP command's call is recorded in `effects` (kind `http`) with the body it
/// will send, for the effects executor to run after the commit; other after-commit effects
/// (an embedder's) are recorded as they are, with the order version that caused them.
fn effects(writes: &mut Writes, decisions: &Decisions, order: &Snapshot<'_>, now: DateTime<Utc>) {
    let (order_id, reference) = (order.row.id, order.row.reference.as_str());
    for effect in &decisions.effects {
        if let Effect::FollowUpEvent { event, items } = effect {
            let follow_up = FollowUp {
                order_reference: reference,
                event,
                items,
            };
            follow_up.stage(writes, now);
            continue;
        }
        if let Effect::AfterCommit {
            command,
            items,
            payload,
        } = effect
            && payload.get("type").and_then(Value::as_str) == Some(store::effects::KIND)
        {
            let event = payload.get("event").cloned().unwrap_or(Value::Null);
            let body = order.http_payload(command, &event, items);
            writes.insert_effect(order_id, order.version, store::effects::KIND, &body, now);
            continue;
        }
        let payload = serde_json::to_value(effect).unwrap_or(Value::Null);
        let kind = payload
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("effect")
            .to_owned();
        writes.insert_effect(order_id, order.version, &kind, &payload, now);
    }
}

/// The change-feed payload: what kind of change, the triggered event, who caused it, and
/// the moves.
fn feed_payload(kind: &str, event: Option<&str>, p: &Plan<'_>) -> Value {
    let moved: Vec<Value> = p
        .decisions
        .moves()
        .map(|(item, from, to)| {
            json!({"item": item, "from": p.process.state(from).name, "to": p.process.state(to).name})
        })
        .collect();
    json!({
        "kind": kind,
        "event": event,
        "source": p.source.label(Cause::Trigger),
        "moved": moved,
    })
}
