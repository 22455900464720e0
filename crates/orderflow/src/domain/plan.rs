//! Writing a decided change: the engine's `Decisions` for an order become rows (items,
//! history, timers, effects, follow-up events, the order's new version) in the
//! transaction that holds the order, and the change-feed payload that describes it.

use chrono::{DateTime, Utc};
use oms::engine::{Cause, Decisions, Outcome, StayReason, TimerKind};
use oms::{Process, engine};
use serde_json::{Value, json};

use super::change::{DomainError, Result, Source};
use super::view::Stay;
use crate::store::batch::Writes;
use crate::store::inbox::NewUpdate;
use crate::store::orders::{ItemRow, NewHistory, NewTimer, OrderRow};
use crate::store::{self, Tx};

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

/// Writes what the engine decided: changed items, history, timers, effects and the order
/// row. Returns the rows as they now are and the stays worth reporting.
#[allow(clippy::too_many_arguments)]
pub(super) async fn persist(
    tx: &mut Tx,
    process: &Process,
    row: OrderRow,
    before: &[ItemRow],
    order: &engine::Order,
    decisions: &Decisions,
    source: &Source,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(OrderRow, Vec<ItemRow>, Vec<Stay>)> {
    let mut writes = Writes::default();
    let done = plan(
        &mut writes,
        process,
        row,
        before,
        order,
        decisions,
        source,
        version,
        now,
    );
    tx.write(&writes).await?;
    Ok(done)
}

/// [`persist`] without sending: adds the rows to `writes`.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
    writes: &mut Writes,
    process: &Process,
    mut row: OrderRow,
    before: &[ItemRow],
    order: &engine::Order,
    decisions: &Decisions,
    source: &Source,
    version: i64,
    now: DateTime<Utc>,
) -> (OrderRow, Vec<ItemRow>, Vec<Stay>) {
    let mut after = Vec::with_capacity(before.len());
    for (old, new) in before.iter().zip(&order.items) {
        let state = process.state(new.state);
        let mut item = old.clone();
        if old.state != state.name
            || old.state_entered_at != new.state_entered_at
            || old.attributes.0 != new.attributes
        {
            writes.update_item(
                old.id,
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
        after.push(item);
    }
    let mut stayed = Vec::new();
    for step in &decisions.steps {
        let event = step.event.map(|e| process.event(e).name.as_str());
        let label = source.label(step.cause);
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
                writes.insert_history(row.id, &h, now);
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
                    writes.insert_history(row.id, &h, now);
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
        writes.insert_timer(row.id, &timer);
    }
    // A follow-up event goes into the inbox in this transaction: it is applied after this
    // change, in order with the order's other updates, exactly once. Other effects
    // (after-commit calls) are kept in `effects` with the change that caused them.
    for effect in &decisions.effects {
        if let oms::plugin::Effect::FollowUpEvent { event, items } = effect {
            writes.follow_up(follow_up(&row.reference, event, items, now));
            continue;
        }
        let payload = serde_json::to_value(effect).unwrap_or(Value::Null);
        let kind = payload
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("effect")
            .to_owned();
        writes.insert_effect(row.id, version, &kind, &payload, now);
    }
    if version != row.version || order.attributes != row.attributes.0 {
        writes.update_order(row.id, &order.attributes, version, now);
        row.version = version;
        row.updated_at = now;
        row.attributes = sqlx::types::Json(order.attributes.clone());
    }
    (row, after, stayed)
}

/// The inbox update a command's follow-up event becomes (client `orderflow`).
fn follow_up(reference: &str, event: &str, items: &[i64], now: DateTime<Utc>) -> NewUpdate {
    let items: Vec<Value> = items.iter().map(|id| json!({ "id": id })).collect();
    let payload = json!({"order_reference": reference, "event": event, "items": items});
    NewUpdate {
        id: uuid::Uuid::now_v7().to_string(),
        client: "orderflow".into(),
        idempotency_key: None,
        request_hash: crate::inbox::ingest::request_hash(&payload),
        order_reference: reference.to_owned(),
        event: Some(event.to_owned()),
        payload,
        response: None,
        received_at: now,
    }
}

pub(super) fn feed_payload(
    kind: &str,
    event: Option<&str>,
    decisions: &Decisions,
    process: &Process,
    source: &Source,
) -> Value {
    let moved: Vec<Value> = decisions
        .moves()
        .map(|(item, from, to)| {
            json!({"item": item, "from": process.state(from).name, "to": process.state(to).name})
        })
        .collect();
    json!({
        "kind": kind,
        "event": event,
        "source": source.label(Cause::Trigger),
        "moved": moved,
    })
}
