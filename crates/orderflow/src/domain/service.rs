//! The one processing function: every change to an order (create, attribute patch, manual
//! event, and later ERP updates and timeouts) runs through [`OrderService`] in one
//! transaction that holds the order, writes items, history, timers, effects and a
//! change-feed row, bumps the version and commits.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use oms::engine::{Cause, Decisions, EngineError, Outcome, StayReason, TimerKind};
use oms::{Process, engine};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use super::processes::ProcessSet;
use super::types::{Currency, EventName, OrderId, OrderReference, Quantity, Sku, Version};
use super::view::{HistoryEntry, ItemState, Move, OrderView, Stay};
use crate::store::batch::Writes;
use crate::store::inbox::NewUpdate;
use crate::store::orders::{ItemRow, NewHistory, NewItem, NewOrder, NewTimer, OrderRow};
use crate::store::{self, Store, StoreError, Tx};

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
            Self::UnknownState { .. } | Self::Engine(_) | Self::Store(_) => "internal",
        }
    }
}

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// Who caused a change; written to history as `source` for triggered moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The orders API (shop or admin).
    Api,
    /// An ERP update, by inbox id.
    Erp(String),
    /// An operator's move of items out of a state the process no longer has.
    Operator,
}

impl Source {
    fn label(&self, cause: Cause) -> String {
        match (cause, self) {
            (Cause::Trigger, Self::Api) => "api".into(),
            (Cause::Trigger, Self::Erp(id)) => format!("erp:{id}"),
            (Cause::Trigger, Self::Operator) => "operator".into(),
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

/// The order service: the store, the processes and the projector's wake-up.
#[derive(Clone)]
pub struct OrderService {
    store: Store,
    processes: Arc<ProcessSet>,
    changed: Arc<Notify>,
    inbox: Arc<Notify>,
}

impl OrderService {
    pub fn new(store: Store, processes: Arc<ProcessSet>) -> Self {
        Self {
            store,
            processes,
            changed: Arc::new(Notify::new()),
            inbox: Arc::new(Notify::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn processes(&self) -> &Arc<ProcessSet> {
        &self.processes
    }

    /// Notified after every commit that appended to the change feed.
    pub fn changes(&self) -> &Arc<Notify> {
        &self.changed
    }

    /// Notified when inbox updates may have become due in this process (stored, or woken
    /// by a change of their order): the worker's in-process wake-up.
    pub fn inbox_signal(&self) -> &Arc<Notify> {
        &self.inbox
    }

    /// After a commit that changed an order: wake the projector and the inbox worker (the
    /// change may have woken parked updates of the order).
    pub(crate) fn committed(&self) {
        self.changed.notify_one();
        self.inbox.notify_one();
    }
    /// Creates an order: items enter the initial state and its onEnter chain runs.
    pub async fn create(&self, input: NewOrderInput, source: Source) -> Result<OrderView> {
        let process = self
            .processes
            .get(&input.process)
            .ok_or_else(|| DomainError::UnknownProcess(input.process.clone()))?
            .clone();
        let now = store::now();
        let initial = process.state(process.initial());
        let mut tx = self.store.begin().await?;
        let row = tx
            .insert_order(&NewOrder {
                reference: input.reference.as_str(),
                process: process.name(),
                currency: input.currency.as_ref().map(Currency::as_str),
                attributes: &input.attributes,
                at: now,
            })
            .await
            .map_err(|e| match e {
                StoreError::ReferenceTaken(r) => DomainError::ReferenceTaken(r),
                e => e.into(),
            })?;
        let mut items = Vec::with_capacity(input.items.len());
        for i in &input.items {
            let new = NewItem {
                sku: i.sku.as_str(),
                quantity: i.quantity.get(),
                unit_price: i.unit_price,
                state: &initial.name,
                reserved: initial.reserved,
                attributes: &i.attributes,
            };
            let id = tx.insert_item(row.id, &new, now).await?;
            let history = NewHistory {
                item_id: id,
                from_state: None,
                to_state: &initial.name,
                event: None,
                source: &source.label(Cause::Trigger),
                reason: None,
            };
            tx.insert_history(row.id, &history, now).await?;
            items.push(ItemRow {
                id,
                order_id: row.id,
                sku: new.sku.to_owned(),
                quantity: new.quantity,
                unit_price: new.unit_price,
                state: initial.name.clone(),
                reserved: initial.reserved,
                state_entered_at: now,
                attributes: sqlx::types::Json(i.attributes.clone()),
            });
        }
        let mut order = engine_order(&row, &items, &process)?;
        let decisions = self.processes.engine(&process).start(&mut order, now);
        let (row, items, _) = persist(
            &mut tx, &process, row, &items, &order, &decisions, &source, 1, now,
        )
        .await?;
        let payload = feed_payload("created", None, &decisions, &process, &source);
        tx.append_change(row.id, row.version, "created", &payload, now)
            .await?;
        // Updates the ERP sent before the shop created the order may apply now.
        tx.wake_parked(&row.reference, now).await?;
        tx.commit().await?;
        self.committed();
        Ok(OrderView::new(&row, &items, Some(&process)))
    }

    /// Applies one change to an existing order in one transaction.
    pub async fn apply(&self, target: Target, change: Change) -> Result<Applied> {
        let now = store::now();
        let mut tx = self.store.begin().await?;
        let applied = self.apply_in(&mut tx, &target, &change, now).await?;
        tx.commit().await?;
        if applied.changed {
            self.committed();
        }
        Ok(applied)
    }

    /// [`OrderService::apply`] inside a transaction the caller commits (the inbox finishes
    /// the update in the same one). On error nothing has been written yet; the transaction
    /// is still usable unless the error is [`DomainError::Store`]. The caller signals
    /// [`OrderService::committed`] after committing a change.
    pub async fn apply_in(
        &self,
        tx: &mut Tx,
        target: &Target,
        change: &Change,
        now: DateTime<Utc>,
    ) -> Result<Applied> {
        let row = match target {
            Target::Id(id) => tx.lock_order(id.0).await?,
            Target::Reference(r) => tx.lock_order_by_reference(r.as_str()).await?,
        }
        .ok_or(DomainError::OrderNotFound)?;
        let items = tx.items(row.id).await?;
        let mut writes = Writes::default();
        let applied = self.decide(row, items, change, now, &mut writes)?;
        tx.write(&writes).await?;
        Ok(applied)
    }

    /// The pure part of [`OrderService::apply_in`]: given the order as read under its lock,
    /// decides the change and adds the rows it writes to `writes`, which the caller sends
    /// in the same transaction (the inbox worker collects a whole batch of updates, one per
    /// order, before it sends them). On error nothing is added.
    pub fn decide(
        &self,
        row: OrderRow,
        items: Vec<ItemRow>,
        change: &Change,
        now: DateTime<Utc>,
        writes: &mut Writes,
    ) -> Result<Applied> {
        if let Some(expected) = change.expected
            && expected.0 != row.version
        {
            return Err(DomainError::VersionConflict {
                current: row.version,
            });
        }
        let process = self
            .processes
            .get(&row.process)
            .ok_or_else(|| DomainError::UnknownProcess(row.process.clone()))?
            .clone();
        let mut order = engine_order(&row, &items, &process)?;
        let selected = change
            .items
            .as_deref()
            .map(|refs| select_items(&items, refs))
            .transpose()?;
        if let Some(patch) = &change.attributes {
            merge_patch(&mut order.attributes, patch);
        }
        if let Some(patch) = &change.item_attributes {
            for item in &mut order.items {
                if selected.as_ref().is_none_or(|ids| ids.contains(&item.id)) {
                    merge_patch(&mut item.attributes, patch);
                }
            }
        }
        let attributes_changed = order.attributes != row.attributes.0
            || order
                .items
                .iter()
                .zip(&items)
                .any(|(new, old)| new.attributes != old.attributes.0);
        let decisions = match &change.event {
            None => Decisions::default(),
            Some(ev) => self.trigger(&process, &mut order, selected.as_deref(), ev, now)?,
        };
        // An ERP update whose command failed for a reason that may pass (a remote endpoint
        // down) is retried as a whole later; a manual event records the stay and answers.
        if matches!(change.source, Source::Erp(_))
            && let Some(e) = decisions.retryable_failure()
        {
            return Err(DomainError::CommandFailed(e.to_string()));
        }
        let changed = attributes_changed || decisions.changed();
        let version = if changed {
            row.version + 1
        } else {
            row.version
        };
        let (row, items, stayed) = plan(
            writes,
            &process,
            row,
            &items,
            &order,
            &decisions,
            &change.source,
            version,
            now,
        );
        if changed {
            let event = change.event.as_ref().map(|e| e.event.as_str());
            let payload = feed_payload("updated", event, &decisions, &process, &change.source);
            writes.append_change(row.id, version, "updated", &payload, now);
            writes.wake_parked(&row.reference, now);
            if attributes_changed {
                // Event-less transitions may hang on the attributes just changed.
                writes.wake_condition_timers(row.id, now);
            }
        }
        let moved = decisions
            .moves()
            .map(|(item, from, to)| Move {
                item,
                from: process.state(from).name.clone(),
                to: process.state(to).name.clone(),
            })
            .collect();
        let not_applicable = decisions.not_applicable().map(|(id, _)| id).collect();
        Ok(Applied {
            order: OrderView::new(&row, &items, Some(&process)),
            moved,
            not_applicable,
            stayed,
            changed,
        })
    }

    fn trigger(
        &self,
        process: &Process,
        order: &mut engine::Order,
        items: Option<&[i64]>,
        ev: &EventInput,
        now: DateTime<Utc>,
    ) -> Result<Decisions> {
        let name = ev.event.as_str();
        let unknown = || DomainError::UnknownEvent {
            process: process.name().to_owned(),
            event: name.to_owned(),
        };
        let event_id = process.event_id(name).ok_or_else(unknown)?;
        if ev.manual_only && !process.event(event_id).manual {
            return Err(DomainError::NotManual(name.to_owned()));
        }
        let decisions = self
            .processes
            .engine(process)
            .trigger(order, items, name, now)
            .map_err(|e| match e {
                EngineError::UnknownEvent { .. } => unknown(),
                EngineError::UnknownItem { item, .. } => DomainError::UnknownItem(item),
                other => DomainError::Engine(other),
            })?;
        let nothing_applies = decisions
            .steps
            .iter()
            .all(|s| matches!(s.outcome, Outcome::NotApplicable { .. }));
        if nothing_applies {
            let items = decisions
                .not_applicable()
                .map(|(item, state)| ItemState {
                    item,
                    state: process.state(state).name.clone(),
                })
                .collect();
            let all_final = decisions.not_applicable().next().is_some()
                && decisions
                    .not_applicable()
                    .all(|(_, state)| process.is_final(state));
            return Err(DomainError::EventNotApplicable {
                event: name.to_owned(),
                items,
                all_final,
            });
        }
        Ok(decisions)
    }

    pub async fn get(&self, target: &Target) -> Result<OrderView> {
        let found = match target {
            Target::Id(id) => self.store.order(id.0).await?,
            Target::Reference(r) => self.store.order_by_reference(r.as_str()).await?,
        };
        let (row, items) = found.ok_or(DomainError::OrderNotFound)?;
        let process = self.processes.get(&row.process).map(|p| p.as_ref());
        Ok(OrderView::new(&row, &items, process))
    }

    pub async fn history(&self, id: OrderId) -> Result<Vec<HistoryEntry>> {
        if self.store.order(id.0).await?.is_none() {
            return Err(DomainError::OrderNotFound);
        }
        let rows = self.store.history(id.0).await?;
        Ok(rows.into_iter().map(HistoryEntry::from).collect())
    }
}

/// Item ids for references: an id must be the order's, a SKU selects every item with it.
fn select_items(items: &[ItemRow], refs: &[ItemRef]) -> Result<Vec<i64>> {
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
fn plan(
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
            TimerKind::Timeout(e) => ("timeout", Some(process.event(e).name.as_str())),
            TimerKind::Condition => ("condition", None),
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

/// RFC 7386 JSON merge patch on an object: `null` removes, objects merge, the rest replaces.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        merge_patch(&mut t, &p);
        assert_eq!(Value::Object(t), json!({"b": {"d": 3, "x": 5}, "e": [1]}));
    }

    #[test]
    fn source_labels() {
        assert_eq!(Source::Api.label(Cause::Trigger), "api");
        assert_eq!(Source::Erp("u1".into()).label(Cause::Trigger), "erp:u1");
        assert_eq!(Source::Api.label(Cause::OnEnter), "on_enter");
        assert_eq!(Source::Api.label(Cause::Timeout), "timeout");
    }
}
