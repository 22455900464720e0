//! The processing function for claimed updates: the worker and wait mode both call
//! [`Inbox::process_batch`].
//!
//! Claimed updates (at most one per order) are processed in one transaction: the order
//! changes and the updates' new statuses commit together, so an update is applied exactly
//! once, and one commit (one fsync) covers the batch. That transaction reads the updates,
//! their orders and their items in three statements, decides each update in memory with
//! the order service, and sends the rows all of them write in one multi-row statement per
//! table ([`Writes`]): a batch costs a dozen round trips, not a dozen per update.
//!
//! Should that transaction fail (a database error, or a panic in the engine or in a
//! plugin's command or condition), the batch is done again one update at a time, each
//! under a savepoint: an update whose processing hits a database error or panics is rolled
//! back to its savepoint and recorded as a failed attempt (code `store_error` or
//! `panicked`, retried with backoff, `dead` after `worker.max_attempts`); the others commit.
//! One update that panics each time cannot stop the worker, and one that ends the process
//! each time cannot stop the fleet ([`attempt`]).
//!
//! Outcomes:
//! - applied: the change committed; the result names the new version and the moves;
//! - the order does not exist, or the event applies to none of the selected items: the
//!   event's policy decides: `park` (retried when the order changes and on a backoff,
//!   `dead` after `park_ttl`), `ignore` (`ignored`) or `reject` (`rejected`). Under `park`,
//!   an update whose selected items are all in final states (no transition leaves them) is
//!   `rejected` at once: nothing can make its event apply, so waiting `park_ttl` only
//!   delays the answer;
//! - the update cannot apply to this order (unknown item or SKU, an event its process
//!   lacks): `rejected` at once (a fatal error; retrying cannot help);
//! - a retryable failure (database error, a panic, a command that failed retryably, a
//!   process this worker has not loaded): `accepted` again after an exponential backoff with
//!   jitter, `dead` after `worker.max_attempts`.

mod attempt;
mod outcome;

use attempt::Attempt;
use outcome::unreadable;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Inbox;
use super::model::{OrderUpdate, UpdateStatus, is_retry_marker};
use crate::config::EventPolicy;
use crate::domain::types::OrderReference;
use crate::domain::view::ItemState;
use crate::domain::{Applied, Change, DomainError, Target};
use crate::store::batch::Writes;
use crate::store::inbox::{Finish, UpdateRow};
use crate::store::orders::{ItemRow, OrderRow};
use crate::store::{self, StoreError, Tx};

/// Error codes of a parked update (not failures: they do not count toward max_attempts).
const PARK_CODES: [&str; 2] = ["order_not_found", "event_not_applicable"];

/// How one update's attempt ends: its new status, the row to write, and whether its order
/// changed.
type Decided = (UpdateStatus, Finish, bool);

impl Inbox {
    /// The worker's step at time `now`: claims up to `worker.batch_size` updates due at
    /// `now` for `owner` and processes them. Returns their new statuses (`None`: the lease
    /// was lost to another worker); empty when nothing was due. Tests step `now` to drive
    /// backoff and leases without waiting.
    ///
    /// The claim is held by the processing transaction itself (one commit for the batch,
    /// see `Store::claim_batch`); should that transaction fail, the batch is claimed under
    /// a lease and processed one update at a time.
    pub async fn process_next_batch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<UpdateStatus>>, StoreError> {
        let started = Instant::now();
        let lease = chrono::Duration::from_std(self.settings.worker.lease).unwrap_or_default();
        let limit = i64::from(self.settings.worker.batch_size(self.store().backend()));
        let (mut tx, rows) = self
            .store()
            .claim_batch(now, limit, owner, now + lease)
            .await?;
        // Processing happens after the claim: at `now`, or later when the claim took time
        // (it may have waited for other workers' claims). Never earlier, so an update is
        // never recorded as processed before the one of its order that another worker
        // finished while this one claimed.
        let now = now.max(store::now());
        if rows.is_empty() {
            // Committed, not dropped: reading the due updates may have set an unreadable
            // one dead (with its `update.dead` events).
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let (id, rows, cleared) = match self.begin_attempt(&mut tx, rows, owner, now).await? {
            Attempt::Apply { id, rows, cleared } => (id, rows, cleared),
            Attempt::Dead { row, crashes } => return self.finish_crashed(tx, row, crashes).await,
            Attempt::Nothing => {
                tx.commit().await?;
                return Ok(Vec::new());
            }
        };
        let held = async {
            let done = self.apply_held(&mut tx, &rows, now).await?;
            tx.end_attempt(id, &cleared).await?;
            Ok::<_, StoreError>(done)
        }
        .await;
        let done = match held {
            Ok((statuses, changed)) => match tx.commit().await {
                Ok(()) => Ok((statuses, changed)),
                Err(e) => {
                    self.forget_attempt(id).await;
                    Err(e)
                }
            },
            // Rolled back (the transaction may hold the only writer), its record gone: an
            // error is not a crash.
            Err(e) => {
                self.abandon_attempt(tx, id).await;
                Err(e)
            }
        };
        let rows = match done {
            Ok((statuses, changed)) => {
                let out: Vec<_> = statuses.into_iter().map(Some).collect();
                self.processed(&rows, &out, changed, started);
                return Ok(out);
            }
            // Claim on its own, then find the update at fault one at a time.
            Err(e) => {
                tracing::warn!(error = %e, "batch failed; claiming it on its own");
                self.store()
                    .claim_updates(now, limit, owner, now + lease)
                    .await?
            }
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.process_batch(&rows, owner, now).await
    }

    /// Processes updates claimed by `owner`, at time `now`. Returns each update's new
    /// status, or `None` when `owner` no longer held its lease (another worker took it
    /// over).
    pub async fn process_batch(
        &self,
        rows: &[UpdateRow],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<UpdateStatus>>, StoreError> {
        let started = Instant::now();
        let orders: HashSet<&str> = rows.iter().map(|r| r.order_reference.as_str()).collect();
        // Two updates of one order cannot share the batch's multi-row writes (claims never
        // give a worker two; the check keeps this function right for any caller).
        let together = if orders.len() == rows.len() {
            Some(self.process_together(rows, owner, now).await)
        } else {
            None
        };
        let (out, changed) = match together {
            Some(Ok(done)) => done,
            Some(Err(e)) => {
                tracing::warn!(error = %e, size = rows.len(), "batch failed; processing its updates one at a time");
                self.process_one_by_one(rows, owner, now).await?
            }
            None => self.process_one_by_one(rows, owner, now).await?,
        };
        self.processed(rows, &out, changed, started);
        Ok(out)
    }

    /// After commit: wake-ups and metrics.
    pub(in crate::inbox) fn processed(
        &self,
        rows: &[UpdateRow],
        out: &[Option<UpdateStatus>],
        changed: bool,
        started: Instant,
    ) {
        // A death queued `update.dead` deliveries: their worker is woken as by a change.
        if changed || out.contains(&Some(UpdateStatus::Dead)) {
            self.service.committed();
        } else if !rows.is_empty() {
            // Finished updates may unblock later ones of the same order.
            self.store().wakeups().raise_inbox();
        }
        let done = Utc::now();
        let took = started.elapsed().as_secs_f64();
        for (row, status) in rows.iter().zip(out) {
            let Some(status) = status else { continue };
            metrics::counter!("orderflow_inbox_processed_total", "status" => status.as_str())
                .increment(1);
            if *status == UpdateStatus::Dead {
                metrics::counter!("orderflow_inbox_dead_total").increment(1);
            }
            if status.is_final() {
                let waited = (done - row.received_at).to_std().unwrap_or_default();
                metrics::histogram!("orderflow_inbox_received_to_done_seconds")
                    .record(waited.as_secs_f64());
                metrics::histogram!("orderflow_inbox_claim_to_done_seconds").record(took);
            }
        }
    }

    /// The whole batch in one transaction with batched reads and writes.
    async fn process_together(
        &self,
        rows: &[UpdateRow],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Option<UpdateStatus>>, bool), StoreError> {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let mut tx = self.store().begin().await?;
        let locked: HashSet<i64> = tx.lock_held(&seqs, owner).await?.into_iter().collect();
        let held: Vec<UpdateRow> = rows
            .iter()
            .filter(|r| locked.contains(&r.seq))
            .cloned()
            .collect();
        let (statuses, changed) = self.apply_held(&mut tx, &held, now).await?;
        tx.commit().await?;
        let by_seq: HashMap<i64, UpdateStatus> = held.iter().map(|r| r.seq).zip(statuses).collect();
        Ok((
            seqs.iter().map(|s| by_seq.get(s).copied()).collect(),
            changed,
        ))
    }

    /// Applies updates this transaction holds (one per order), reading their orders and
    /// items and writing every row in a few statements. Returns their new statuses.
    pub(in crate::inbox) async fn apply_held(
        &self,
        tx: &mut Tx,
        held: &[UpdateRow],
        now: DateTime<Utc>,
    ) -> Result<(Vec<UpdateStatus>, bool), StoreError> {
        let references: Vec<String> = held.iter().map(|r| r.order_reference.clone()).collect();
        let orders = tx.lock_orders_by_reference(&references).await?;
        let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
        let mut items: HashMap<i64, Vec<ItemRow>> = HashMap::new();
        for item in tx.items_of(&ids).await? {
            items.entry(item.order_id).or_default().push(item);
        }
        let mut orders: HashMap<String, OrderRow> = orders
            .into_iter()
            .map(|o| (o.reference.clone(), o))
            .collect();
        // The decisions run the processes' commands, which may block their thread (see
        // `ProcessSet::run_engine`): once for the batch, not once an update. A panic (a bug
        // in the engine or a plugin) fails the transaction like a database error: the
        // batch is then done one update at a time, where it fails only its own update.
        let (out, finishes, writes, changed) =
            self.service.processes().run_engine_caught(|| {
                let mut writes = Writes::default();
                let mut finishes = Vec::with_capacity(held.len());
                let mut out = Vec::with_capacity(held.len());
                let mut changed = false;
                for row in held {
                    let loaded = orders.remove(&row.order_reference).map(|o| {
                        let its = items.remove(&o.id).unwrap_or_default();
                        (o, its)
                    });
                    let (status, finish, ch) = self.decide(row, loaded, now, &mut writes);
                    changed |= ch;
                    out.push(status);
                    finishes.push(finish);
                }
                (out, finishes, writes, changed)
            })?;
        tx.write(&writes).await?;
        tx.finish_updates(&finishes).await?;
        Ok((out, changed))
    }

    /// The batch one update at a time, each under a savepoint: an update that fails with a
    /// database error is recorded as a failed attempt, the others commit.
    async fn process_one_by_one(
        &self,
        rows: &[UpdateRow],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Option<UpdateStatus>>, bool), StoreError> {
        let mut tx = self.store().begin().await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut changed = false;
        for row in rows {
            tx.savepoint().await?;
            if tx.lock_held(&[row.seq], owner).await?.is_empty() {
                tx.release_savepoint().await?;
                out.push(None);
                continue;
            }
            let (status, finish, ch) = match self.apply_one(&mut tx, row, now).await {
                Ok(done) => done,
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    let code = match e {
                        StoreError::Panicked(_) => {
                            tracing::error!(update = %row.id, order = %row.order_reference, error = %e, "processing the update panicked");
                            "panicked"
                        }
                        _ => "store_error",
                    };
                    self.retry_later(row, now, code, &e.to_string())
                }
            };
            tx.finish_updates(std::slice::from_ref(&finish)).await?;
            tx.release_savepoint().await?;
            changed |= ch;
            out.push(Some(status));
        }
        tx.commit().await?;
        Ok((out, changed))
    }

    /// One update, its order read and written at once; a database error is returned.
    async fn apply_one(
        &self,
        tx: &mut Tx,
        row: &UpdateRow,
        now: DateTime<Utc>,
    ) -> Result<Decided, StoreError> {
        let change = match change(row) {
            Ok(c) => c,
            Err(e) => return Ok(unreadable(row, now, &e)),
        };
        let target = Target::Reference(
            OrderReference::parse(&row.order_reference)
                .map_err(|e| StoreError::Corrupt(format!("update {}: {e}", row.id)))?,
        );
        match self.service.apply_in(tx, &target, &change, now).await {
            Err(DomainError::Store(e)) => Err(e),
            applied => Ok(self.outcome(row, applied, now)),
        }
    }

    /// One update of a batch, its order as read under the batch's lock (`None`: no such
    /// order); the rows it writes go to `writes`.
    fn decide(
        &self,
        row: &UpdateRow,
        loaded: Option<(OrderRow, Vec<ItemRow>)>,
        now: DateTime<Utc>,
        writes: &mut Writes,
    ) -> Decided {
        let change = match change(row) {
            Ok(c) => c,
            Err(e) => return unreadable(row, now, &e),
        };
        let applied = match loaded {
            Some((order, items)) => self.service.decide(order, items, &change, now, writes),
            None => Err(DomainError::OrderNotFound),
        };
        self.outcome(row, applied, now)
    }
}

/// The change an update makes, or why its stored payload cannot be read.
fn change(row: &UpdateRow) -> Result<Change, String> {
    let payload = row
        .payload()
        .map_err(|e| format!("the stored payload is not readable JSON: {e}"))?;
    OrderUpdate::deserialize(payload)
        .map(|u| u.change(&row.id))
        .map_err(|e| format!("the stored payload is not an order update: {e}"))
}
