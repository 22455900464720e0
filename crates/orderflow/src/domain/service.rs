//! The one processing function: every change to an order (create, attribute patch, manual
//! event, ERP update) runs through [`OrderService`] in one transaction that holds the order.
//! The engine decides; the planner (`plan`, shared with check-condition passes and operator
//! moves) turns its decisions into the rows the change writes (items, history, timers,
//! effects, follow-up events, the change-feed row and the new version), sent in a few
//! statements ([`Writes`]) before the commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use oms::engine::{Decisions, EngineError, Outcome};
use oms::{Process, engine};
use tokio::sync::{Notify, watch};

pub use super::change::{
    Applied, Change, DomainError, EventInput, ItemRef, NewItemInput, NewOrderInput, Result, Source,
    Target,
};
use super::change::{merge_patch, select_items};
use super::plan::{self, Kind, Patched, Placed, Plan, engine_order};
use super::processes::ProcessSet;
use super::types::{Currency, OrderId};
use super::view::{HistoryEntry, ItemState, Move, OrderView};
use crate::store::batch::Writes;
use crate::store::orders::{ItemRow, NewItem, NewOrder, OrderRow};
use crate::store::{self, Store, StoreError, Tx};

/// The order service: the store, the processes and the projector's wake-up.
#[derive(Clone)]
pub struct OrderService {
    store: Store,
    processes: Arc<ProcessSet>,
    changed: Arc<Notify>,
    /// Counts commits in this process; every subscriber sees each change of it (GraphQL
    /// subscriptions), unlike `changed`, which wakes the one projector.
    feed: Arc<watch::Sender<u64>>,
    /// Items the loaded definitions cannot place, as last counted (see `strays`).
    pub(super) strays: Arc<std::sync::Mutex<Vec<super::strays::Strays>>>,
}

impl OrderService {
    pub fn new(store: Store, processes: Arc<ProcessSet>) -> Self {
        Self {
            store,
            processes,
            changed: Arc::new(Notify::new()),
            feed: Arc::new(watch::Sender::new(0)),
            strays: Arc::default(),
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

    /// Changes on every commit that appended to the change feed, for any number of
    /// watchers; costs nothing while nobody watches.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.feed.subscribe()
    }

    /// Wakes what watches the change feed in this process (the delivery loop) without a
    /// change: deliveries became due another way (a subscription enabled, a delivery
    /// retried, a replay queued). Other processes find them at their next poll.
    pub fn wake_deliveries(&self) {
        self.feed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// After a commit that changed an order: wake the projector and the inbox worker (the
    /// change may have woken parked updates of the order).
    pub(crate) fn committed(&self) {
        self.changed.notify_one();
        self.store.wakeups().raise_inbox();
        self.feed.send_modify(|n| *n = n.wrapping_add(1));
    }
    /// Creates an order: items enter the initial state and its onEnter chain runs.
    pub async fn create(&self, input: NewOrderInput, source: Source) -> Result<OrderView> {
        let process = self
            .processes
            .get(&input.process)
            .ok_or_else(|| DomainError::UnknownProcess(input.process.clone()))?
            .clone();
        let now = store::now();
        let initial = process.initial();
        let state = process.state(initial);
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
        // Items need their ids before the engine runs: its decisions name items by id.
        let mut items = Vec::with_capacity(input.items.len());
        for i in &input.items {
            let new = NewItem {
                sku: i.sku.as_str(),
                quantity: i.quantity.get(),
                unit_price: i.unit_price,
                state: &state.name,
                reserved: state.reserved,
                attributes: &i.attributes,
            };
            let id = tx.insert_item(row.id, &new, now).await?;
            items.push(ItemRow {
                id,
                order_id: row.id,
                sku: new.sku.to_owned(),
                quantity: new.quantity,
                unit_price: new.unit_price,
                state: state.name.clone(),
                reserved: state.reserved,
                state_entered_at: now,
                attributes: sqlx::types::Json(i.attributes.clone()),
            });
        }
        let mut order = engine_order(&row, &items, &process)?;
        let decisions = self
            .processes
            .run_engine_caught(|| self.processes.engine(&process).start(&mut order, now))?;
        let placed: Vec<Placed> = items
            .iter()
            .map(|i| Placed {
                item: i.id,
                from: None,
                to: initial,
                reason: None,
            })
            .collect();
        let plan = Plan {
            process: &process,
            source: &source,
            kind: Kind::Created,
            placed: &placed,
            patched: &Patched::default(),
            decisions: &decisions,
            now,
            wake_at: now,
        };
        let mut writes = Writes::default();
        let done = plan::plan(&mut writes, &plan, row, items, &order);
        tx.write(&writes).await?;
        tx.commit().await?;
        self.committed();
        Ok(OrderView::new(&done.row, &done.items, Some(&process)))
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
        let applied = self
            .processes
            .run_engine_caught(|| self.decide(row, items, change, now, &mut writes))??;
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
        let mut patched = Patched::default();
        if let Some(patch) = &change.attributes {
            patched.order = merge_patch(&mut order.attributes, patch);
        }
        if let Some(patch) = &change.item_attributes {
            for item in &mut order.items {
                if selected.as_ref().is_none_or(|ids| ids.contains(&item.id))
                    && merge_patch(&mut item.attributes, patch)
                {
                    patched.items.push(item.id);
                }
            }
        }
        let decisions = match &change.event {
            None => Decisions::default(),
            Some(ev) => self.trigger(&process, &mut order, selected.as_deref(), ev, now)?,
        };
        // An ERP update whose command failed for a reason that may pass (a remote endpoint
        // down) is retried as a whole later; a manual event records the stay and answers.
        // One that failed for good refuses the update: it is rejected at once, never
        // applied in part (DESIGN §4: fatal failures are rejected, not retried).
        if matches!(change.source, Source::Erp(_)) {
            if let Some(e) = decisions.retryable_failure() {
                return Err(DomainError::CommandFailed(e.to_string()));
            }
            if let Some((command, e)) = decisions.fatal_command_failure() {
                return Err(DomainError::CommandRefused {
                    command: command.to_owned(),
                    message: e.message.clone(),
                });
            }
        }
        let plan = Plan {
            process: &process,
            source: &change.source,
            kind: Kind::Updated {
                event: change.event.as_ref().map(|e| e.event.as_str()),
            },
            placed: &[],
            patched: &patched,
            decisions: &decisions,
            now,
            wake_at: now,
        };
        let done = plan::plan(writes, &plan, row, items, &order);
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
            order: OrderView::new(&done.row, &done.items, Some(&process)),
            moved,
            not_applicable,
            stayed: done.stayed,
            changed: done.changed,
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
