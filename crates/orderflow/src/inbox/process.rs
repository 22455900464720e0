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
//! Should that transaction fail (a database error), the batch is done again one update at
//! a time, each under a savepoint: an update whose processing hits a database error is
//! rolled back to its savepoint and recorded as a failed attempt; the others commit.
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
//! - a retryable failure (database error, a command that failed retryably, a process
//!   this worker has not loaded): `accepted` again after an exponential backoff with
//!   jitter, `dead` after `worker.max_attempts`.

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
use crate::store::{self, Store, StoreError, Tx};

/// Error codes of a parked update (not failures: they do not count toward max_attempts).
const PARK_CODES: [&str; 2] = ["order_not_found", "event_not_applicable"];

/// How one update's attempt ends: its new status, the row to write, and whether its order
/// changed.
type Decided = (UpdateStatus, Finish, bool);

impl Inbox {
    /// The worker's step: claims up to `worker.batch_size` due updates for `owner` and
    /// processes them. Returns their new statuses (`None`: the lease was lost to another
    /// worker); empty when nothing was due.
    ///
    /// On SQLite the claim and the processing share one transaction. SQLite has one
    /// writer, so that transaction holds the updates as a lease would (no other worker can
    /// claim them before it commits, and a crash rolls the claim back with the work), and
    /// the batch costs one commit instead of two. On PostgreSQL the claim commits first,
    /// so other workers skip the claimed updates while this one processes them.
    pub async fn process_next_batch(
        &self,
        owner: &str,
    ) -> Result<Vec<Option<UpdateStatus>>, StoreError> {
        let started = Instant::now();
        let now = store::now();
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        let limit = i64::from(self.settings.batch_size);
        if let Store::Sqlite(_) = self.store() {
            match self.claim_and_process(now, limit, owner, now + lease).await {
                Ok((rows, out, changed)) => {
                    self.processed(&rows, &out, changed, started);
                    return Ok(out);
                }
                // Claim on its own, then find the update at fault one at a time.
                Err(e) => tracing::warn!(error = %e, "batch failed; claiming it on its own"),
            }
        }
        let rows = self
            .store()
            .claim_updates(now, limit, owner, now + lease)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.process_batch(&rows, owner).await
    }

    /// Processes updates claimed by `owner`. Returns each update's new status, or `None`
    /// when `owner` no longer held its lease (another worker took it over).
    pub async fn process_batch(
        &self,
        rows: &[UpdateRow],
        owner: &str,
    ) -> Result<Vec<Option<UpdateStatus>>, StoreError> {
        let started = Instant::now();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let orders: HashSet<&str> = rows.iter().map(|r| r.order_reference.as_str()).collect();
        // Two updates of one order cannot share the batch's multi-row writes (claims never
        // give a worker two; the check keeps this function right for any caller).
        let together = if orders.len() == rows.len() {
            Some(self.process_together(&seqs, owner).await)
        } else {
            None
        };
        let (out, changed) = match together {
            Some(Ok(done)) => done,
            Some(Err(e)) => {
                tracing::warn!(error = %e, size = rows.len(), "batch failed; processing its updates one at a time");
                self.process_one_by_one(&seqs, owner).await?
            }
            None => self.process_one_by_one(&seqs, owner).await?,
        };
        self.processed(rows, &out, changed, started);
        Ok(out)
    }

    /// After commit: wake-ups and metrics.
    fn processed(
        &self,
        rows: &[UpdateRow],
        out: &[Option<UpdateStatus>],
        changed: bool,
        started: Instant,
    ) {
        if changed {
            self.service.committed();
        } else if !rows.is_empty() {
            // Finished updates may unblock later ones of the same order.
            self.service.inbox_signal().notify_one();
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

    /// SQLite: claim and process in one transaction (see [`Inbox::process_next_batch`]).
    async fn claim_and_process(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(Vec<UpdateRow>, Vec<Option<UpdateStatus>>, bool), StoreError> {
        let mut tx = self.store().begin().await?;
        let mut rows = tx.due_updates(now, limit).await?;
        if rows.is_empty() {
            return Ok((rows, Vec::new(), false));
        }
        // What the claim would have written: finishing writes the attempt count.
        for r in &mut rows {
            r.attempts += 1;
            r.status = UpdateStatus::Processing;
            r.lease_owner = Some(owner.to_owned());
            r.lease_until = Some(lease_until);
        }
        let (statuses, changed) = self.apply_held(&mut tx, &rows, store::now()).await?;
        tx.commit().await?;
        Ok((rows, statuses.into_iter().map(Some).collect(), changed))
    }

    /// The whole batch in one transaction with batched reads and writes.
    async fn process_together(
        &self,
        seqs: &[i64],
        owner: &str,
    ) -> Result<(Vec<Option<UpdateStatus>>, bool), StoreError> {
        let mut tx = self.store().begin().await?;
        let held = tx.lock_claimed_many(seqs, owner).await?;
        let (statuses, changed) = self.apply_held(&mut tx, &held, store::now()).await?;
        tx.commit().await?;
        let by_seq: HashMap<i64, UpdateStatus> = held.iter().map(|r| r.seq).zip(statuses).collect();
        Ok((
            seqs.iter().map(|s| by_seq.get(s).copied()).collect(),
            changed,
        ))
    }

    /// Applies updates this transaction holds (one per order), reading their orders and
    /// items and writing every row in a few statements. Returns their new statuses.
    async fn apply_held(
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
        tx.write(&writes).await?;
        tx.finish_updates(&finishes).await?;
        Ok((out, changed))
    }

    /// The batch one update at a time, each under a savepoint: an update that fails with a
    /// database error is recorded as a failed attempt, the others commit.
    async fn process_one_by_one(
        &self,
        seqs: &[i64],
        owner: &str,
    ) -> Result<(Vec<Option<UpdateStatus>>, bool), StoreError> {
        let mut tx = self.store().begin().await?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut changed = false;
        for &seq in seqs {
            tx.savepoint().await?;
            let Some(row) = tx.lock_claimed(seq, owner).await? else {
                tx.release_savepoint().await?;
                out.push(None);
                continue;
            };
            let now = store::now();
            let (status, finish, ch) = match self.apply_one(&mut tx, &row, now).await {
                Ok(done) => done,
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    self.retry_later(&row, now, "store_error", &e.to_string())
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

    /// What the attempt's result means for the update.
    fn outcome(
        &self,
        row: &UpdateRow,
        applied: Result<Applied, DomainError>,
        now: DateTime<Utc>,
    ) -> Decided {
        let (policy, park_ttl) = self.settings.policy(row.event.as_deref());
        let (error, policy) = match applied {
            Ok(applied) => {
                let result = json!({
                    "order": {
                        "id": applied.order.id,
                        "reference": applied.order.reference,
                        "version": applied.order.version,
                    },
                    "moved": applied.moved,
                    "not_applicable": applied.not_applicable,
                    "stayed": applied.stayed,
                });
                let status = UpdateStatus::Applied;
                let finish = finish(row, status, Some(result), None, now, None);
                return (status, finish, applied.changed);
            }
            Err(DomainError::CommandFailed(message)) => {
                return self.retry_later(row, now, "command_failed", &message);
            }
            // This process lacks the order's process definition (a fleet mid-deploy, a
            // wrong --processes): another attempt, maybe by another worker, can apply it.
            Err(e @ DomainError::UnknownProcess(_)) => {
                return self.retry_later(row, now, "unknown_process", &e.to_string());
            }
            Err(DomainError::Store(e)) => {
                return self.retry_later(row, now, "store_error", &e.to_string());
            }
            Err(e @ DomainError::OrderNotFound) => (e, EventPolicy::Park),
            Err(e @ DomainError::EventNotApplicable { .. }) => (e, policy),
            Err(e) => (e, EventPolicy::Reject),
        };
        let mut entry = error_entry(row, now, error.code(), &error.to_string());
        let mut never = false;
        if let DomainError::EventNotApplicable {
            event,
            items,
            all_final,
        } = &error
        {
            entry["event"] = json!(event);
            entry["items"] = json!(items);
            if *all_final && policy == EventPolicy::Park {
                never = true;
                entry["message"] = json!(no_way_out(row, event, items));
                entry["final"] = json!(true);
            }
        }
        let (status, finish) = match policy {
            EventPolicy::Ignore => {
                let result = json!({"not_applicable": entry.get("items")});
                let status = UpdateStatus::Ignored;
                (
                    status,
                    finish(row, status, Some(result), Some(entry), now, None),
                )
            }
            EventPolicy::Reject => {
                let status = UpdateStatus::Rejected;
                (status, finish(row, status, None, Some(entry), now, None))
            }
            EventPolicy::Park if never => {
                tracing::debug!(
                    update = %row.id,
                    order = %row.order_reference,
                    reason = entry["message"].as_str().unwrap_or_default(),
                    "rejected: its event can never apply"
                );
                let status = UpdateStatus::Rejected;
                (status, finish(row, status, None, Some(entry), now, None))
            }
            EventPolicy::Park => {
                let ttl = chrono::Duration::from_std(park_ttl).unwrap_or(chrono::Duration::MAX);
                // Parked since it was received, or since an operator retried it.
                let since = last_retry(row).unwrap_or(row.received_at);
                let until = row
                    .park_until
                    .unwrap_or_else(|| since.checked_add_signed(ttl).unwrap_or(now));
                if now >= until {
                    entry["message"] =
                        json!(format!("{error} (parked since {since}, past park_ttl)"));
                    tracing::warn!(
                        update = %row.id,
                        order = %row.order_reference,
                        error = %error,
                        %since,
                        "parked past park_ttl; dead"
                    );
                    let status = UpdateStatus::Dead;
                    (status, finish(row, status, None, Some(entry), now, None))
                } else {
                    let parks = count_errors(row, |e| {
                        e.get("code")
                            .and_then(Value::as_str)
                            .is_some_and(|c| PARK_CODES.contains(&c))
                    });
                    let next = later(now, self.settings.backoff(parks + 1)).min(until);
                    tracing::debug!(
                        update = %row.id,
                        order = %row.order_reference,
                        attempt = row.attempts,
                        error = %error,
                        next_attempt_at = %next,
                        "parked"
                    );
                    let status = UpdateStatus::Parked;
                    let finish = finish(row, status, None, Some(entry), next, Some(until));
                    (status, finish)
                }
            }
        };
        (status, finish, false)
    }

    /// A retryable failure: `accepted` again after a backoff, or `dead` when this was the
    /// last attempt.
    fn retry_later(
        &self,
        row: &UpdateRow,
        now: DateTime<Utc>,
        code: &str,
        message: &str,
    ) -> Decided {
        let mut entry = error_entry(row, now, code, message);
        entry["retryable"] = json!(true);
        let failures = count_errors(row, |e| e.get("retryable") == Some(&json!(true))) + 1;
        let status = if failures >= self.settings.max_attempts {
            UpdateStatus::Dead
        } else {
            UpdateStatus::Accepted
        };
        let next = later(now, self.settings.backoff(failures));
        if status == UpdateStatus::Accepted {
            entry["retry_at"] = json!(next);
            tracing::debug!(
                update = %row.id,
                order = %row.order_reference,
                attempt = row.attempts,
                code,
                error = message,
                retry_at = %next,
                "attempt failed; retried later"
            );
        } else {
            tracing::warn!(
                update = %row.id,
                order = %row.order_reference,
                attempts = failures,
                code,
                error = message,
                "attempt failed; out of attempts, dead"
            );
        }
        let finish = finish(row, status, None, Some(entry), next, row.park_until);
        (status, finish, false)
    }
}

/// Why a parked update is rejected at once: e.g. "order DE-1 has every item in a final
/// state (cancelled); event ship can never apply".
fn no_way_out(row: &UpdateRow, event: &str, items: &[ItemState]) -> String {
    let mut states: Vec<&str> = items.iter().map(|i| i.state.as_str()).collect();
    states.sort_unstable();
    states.dedup();
    let states = states.join(", ");
    let order = &row.order_reference;
    let selected = row
        .payload()
        .ok()
        .and_then(|p| p.get("items"))
        .is_some_and(|v| !v.is_null());
    if selected {
        format!(
            "every selected item of order {order} is in a final state ({states}); \
             event {event} can never apply"
        )
    } else {
        format!(
            "order {order} has every item in a final state ({states}); \
             event {event} can never apply"
        )
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

/// How an update ends whose stored payload cannot be read: `dead` at once, with the reason
/// (fatal: no retry can read it). The attempt is counted, and the batch and every other
/// order go on.
fn unreadable(row: &UpdateRow, now: DateTime<Utc>, e: &str) -> Decided {
    let error = error_entry(row, now, "invalid_payload", e);
    let status = UpdateStatus::Dead;
    (
        status,
        finish(row, status, None, Some(error), now, None),
        false,
    )
}

fn error_entry(row: &UpdateRow, now: DateTime<Utc>, code: &str, message: &str) -> Value {
    json!({"attempt": row.attempts, "at": now, "code": code, "message": message})
}

/// Errors since the last operator retry that satisfy `pred`: a retry starts the count of
/// attempts again.
fn count_errors(row: &UpdateRow, pred: impl Fn(&Value) -> bool) -> u32 {
    row.errors()
        .iter()
        .rev()
        .take_while(|e| !is_retry_marker(e))
        .filter(|e| pred(e))
        .count() as u32
}

/// When an operator last retried the update.
fn last_retry(row: &UpdateRow) -> Option<DateTime<Utc>> {
    let marker = row.errors().iter().rev().find(|e| is_retry_marker(e))?;
    serde_json::from_value(marker.get("at")?.clone()).ok()
}

fn later(now: DateTime<Utc>, delay: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX / 2)
}

/// The row that ends the attempt: `error` is appended to the update's errors.
fn finish(
    row: &UpdateRow,
    status: UpdateStatus,
    result: Option<Value>,
    error: Option<Value>,
    next_attempt_at: DateTime<Utc>,
    park_until: Option<DateTime<Utc>>,
) -> Finish {
    let errors = error.map(|e| {
        let mut all = row.errors().to_vec();
        all.push(e);
        all
    });
    Finish {
        seq: row.seq,
        status,
        attempts: row.attempts,
        result,
        errors,
        next_attempt_at,
        park_until,
        processed_at: status.is_final().then_some(next_attempt_at),
    }
}
