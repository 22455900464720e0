//! Items the loaded process definitions cannot place: their order's process is not loaded,
//! or their state is not in it (a process file changed while orders were open). They are
//! reported at start, by `/readyz` and `orderflow process strays`, and an operator moves
//! them to a state of the new definition.

use std::sync::PoisonError;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::plan::{self, Kind, Patched, Placed, Plan, engine_order};
use super::service::{DomainError, OrderService, Result, Source};
use crate::store::StoreError;
use crate::store::batch::Writes;

/// Items of one process in one state that the loaded definitions do not have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Strays {
    pub process: String,
    pub state: String,
    /// How many items are there.
    pub items: i64,
    /// `unknown_process` or `unknown_state`.
    pub reason: &'static str,
}

/// What a move did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct MoveReport {
    /// Orders changed (each in its own transaction, with a new version).
    pub orders: usize,
    /// Items moved.
    pub items: usize,
    pub dry_run: bool,
    /// Orders left as they were, with the reason (e.g. another of their items is also in a
    /// state the process does not have).
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Skipped {
    pub order: String,
    pub reason: String,
}

/// Which items to move where (see [`OrderService::move_items`]).
#[derive(Clone, Copy, Debug)]
pub struct Move<'a> {
    /// The orders' process now (it may no longer be loaded).
    pub process: &'a str,
    /// The items' state, or `*` for every item (whole orders).
    pub from: &'a str,
    /// Another loaded process to move whole orders to; `None` stays in `process`.
    pub to_process: Option<&'a str>,
    /// A state of the target process.
    pub to: &'a str,
    pub dry_run: bool,
}

/// Why a move cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("process {0:?} is not loaded: load a definition with that name, then move")]
    UnknownProcess(String),
    #[error("process {process} has no state {state:?} to move to")]
    UnknownTarget { process: String, state: String },
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// The groups of `counts` (process, state, items) that `process` (by name) cannot place.
pub fn strays_of<'a>(
    counts: Vec<(String, String, i64)>,
    process: impl Fn(&str) -> Option<&'a oms::Process>,
) -> Vec<Strays> {
    counts
        .into_iter()
        .filter_map(|(name, state, items)| {
            let reason = match process(&name) {
                None => "unknown_process",
                Some(p) if p.state_id(&state).is_none() => "unknown_state",
                Some(_) => return None,
            };
            Some(Strays {
                process: name,
                state,
                items,
                reason,
            })
        })
        .collect()
}

impl OrderService {
    /// Every group of items whose process or state the loaded definitions do not have,
    /// counted now (one pass over the items) and kept for [`OrderService::last_strays`].
    pub async fn strays(&self) -> Result<Vec<Strays>> {
        let counts = self.store().item_state_counts().await?;
        let strays = strays_of(counts, |name| self.processes().get(name).map(|p| &**p));
        *self.strays.lock().unwrap_or_else(PoisonError::into_inner) = strays.clone();
        Ok(strays)
    }

    /// The strays as last counted by [`OrderService::strays`] (at start, by the admin API,
    /// after a move): what `/readyz` shows without counting on every probe.
    pub fn last_strays(&self) -> Vec<Strays> {
        self.strays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Moves items into state `to` of a loaded definition, one order per transaction: the
    /// items enter `to` as if they had moved there (its timers are set and its onEnter event
    /// runs), a history row with source `operator` records each move, and the order gets a
    /// new version and a change-feed row. With `dry_run` nothing is written and the report
    /// says what would move.
    ///
    /// Within one process, the items in state `from` move. To another process
    /// (`to_process`, e.g. a versioned name after the old file was removed), whole orders
    /// move: those whose every item is in `from`, or every order of `process` when `from` is
    /// `*`; an order with items elsewhere is skipped and named.
    pub async fn move_items(
        &self,
        m: &Move<'_>,
        now: DateTime<Utc>,
    ) -> Result<MoveReport, MoveError> {
        let target_name = m.to_process.unwrap_or(m.process);
        let definition = self
            .processes()
            .get(target_name)
            .ok_or_else(|| MoveError::UnknownProcess(target_name.to_owned()))?
            .clone();
        let target = definition
            .state_id(m.to)
            .ok_or_else(|| MoveError::UnknownTarget {
                process: target_name.to_owned(),
                state: m.to.to_owned(),
            })?;
        let across = target_name != m.process;
        let any = m.from == "*";
        let mut report = MoveReport {
            dry_run: m.dry_run,
            ..MoveReport::default()
        };
        let state = (!any).then_some(m.from);
        let orders = self
            .store()
            .orders_in_state(m.process, state)
            .await
            .map_err(DomainError::from)?;
        for order_id in orders {
            let mut tx = self.store().begin().await.map_err(DomainError::from)?;
            let Some(mut row) = tx.lock_order(order_id).await.map_err(DomainError::from)? else {
                continue;
            };
            let before = tx.items(row.id).await.map_err(DomainError::from)?;
            let moving = |i: &&crate::store::orders::ItemRow| any || i.state == m.from;
            let ids: Vec<i64> = before.iter().filter(moving).map(|i| i.id).collect();
            if ids.is_empty() || row.process != m.process {
                continue;
            }
            if across && ids.len() != before.len() {
                report.skipped.push(Skipped {
                    order: row.reference.clone(),
                    reason: format!(
                        "only some of its items are in {:?}: an order moves to another process \
                         whole (use from \"*\")",
                        m.from
                    ),
                });
                continue;
            }
            // The engine sees the moved items already in the target state.
            let mut entered = before.clone();
            for item in entered.iter_mut().filter(|i| ids.contains(&i.id)) {
                item.state = m.to.to_owned();
            }
            let mut order = match engine_order(&row, &entered, &definition) {
                Ok(order) => order,
                Err(e) => {
                    report.skipped.push(Skipped {
                        order: row.reference.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            report.orders += 1;
            report.items += ids.len();
            if m.dry_run {
                continue;
            }
            let decisions = self
                .processes()
                .run_engine_caught(|| {
                    self.processes()
                        .engine(&definition)
                        .enter(&mut order, &ids, target, now)
                })
                .map_err(DomainError::Store)?
                .map_err(|e| DomainError::Store(StoreError::Corrupt(e.to_string())))?;
            let reason = if across {
                format!("moved by an operator from process {}", m.process)
            } else {
                "moved by an operator".to_owned()
            };
            let placed: Vec<Placed> = before
                .iter()
                .filter(|i| ids.contains(&i.id))
                .map(|i| Placed {
                    item: i.id,
                    from: Some(i.state.clone()),
                    to: target,
                    reason: Some(reason.clone()),
                })
                .collect();
            if across {
                tx.set_order_process(row.id, target_name)
                    .await
                    .map_err(DomainError::from)?;
                row.process = target_name.to_owned();
            }
            let plan = Plan {
                process: &definition,
                source: &Source::Operator,
                kind: Kind::Moved,
                placed: &placed,
                patched: &Patched::default(),
                decisions: &decisions,
                now,
                wake_at: now,
            };
            let mut writes = Writes::default();
            plan::plan(&mut writes, &plan, row, before, &order);
            tx.write(&writes).await.map_err(DomainError::from)?;
            tx.commit().await.map_err(DomainError::from)?;
            self.committed();
        }
        if !m.dry_run {
            tracing::info!(
                process = m.process,
                to_process = m.to_process,
                from = m.from,
                to = m.to,
                orders = report.orders,
                items = report.items,
                skipped = report.skipped.len(),
                "items moved by an operator"
            );
        }
        Ok(report)
    }
}
