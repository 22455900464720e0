//! The processing function for claimed updates: the worker and wait mode both call
//! [`Inbox::process_batch`].
//!
//! Claimed updates (at most one per order) are processed in one transaction, each under a
//! savepoint: the order change and the update's new status commit together, so an update
//! is applied exactly once, and one commit (one fsync) covers the batch. An update whose
//! processing hits a database error is rolled back to its savepoint and recorded as a
//! failed attempt; the others commit.
//!
//! Outcomes:
//! - applied: the change committed; the result names the new version and the moves;
//! - the order does not exist, or the event applies to none of the selected items: the
//!   event's policy decides: `park` (retried when the order changes and on a backoff,
//!   `dead` after `park_ttl`), `ignore` (`ignored`) or `reject` (`rejected`);
//! - the update cannot apply to this order (unknown item or SKU, an event its process
//!   lacks): `rejected` at once (a fatal error; retrying cannot help);
//! - a retryable failure (database error, a command that failed retryably, a process
//!   this worker has not loaded): `accepted` again after an exponential backoff with
//!   jitter, `dead` after `worker.max_attempts`.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Inbox;
use super::model::{OrderUpdate, UpdateStatus, is_retry_marker};
use crate::config::EventPolicy;
use crate::domain::types::OrderReference;
use crate::domain::{DomainError, Target};
use crate::store::inbox::{Finish, UpdateRow};
use crate::store::{self, StoreError, Tx};

/// Error codes of a parked update (not failures: they do not count toward max_attempts).
const PARK_CODES: [&str; 2] = ["order_not_found", "event_not_applicable"];

impl Inbox {
    /// Processes updates claimed by `owner`. Returns each update's new status, or `None`
    /// when `owner` no longer held its lease (another worker took it over).
    pub async fn process_batch(
        &self,
        rows: &[UpdateRow],
        owner: &str,
    ) -> Result<Vec<Option<UpdateStatus>>, StoreError> {
        let mut tx = self.store().begin().await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut changed = false;
        for row in rows {
            tx.savepoint().await?;
            match self.process_one(&mut tx, row, owner).await {
                Ok((status, ch)) => {
                    tx.release_savepoint().await?;
                    changed |= ch;
                    out.push(status);
                }
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    tracing::warn!(update = %row.id, error = %e, "processing failed; retried later");
                    let status = self
                        .retry_later(&mut tx, row.seq, owner, "store_error", &e.to_string())
                        .await?;
                    tx.release_savepoint().await?;
                    out.push(status);
                }
            }
        }
        tx.commit().await?;
        if changed {
            self.service.committed();
        } else {
            // Finished updates may unblock later ones of the same order.
            self.service.inbox_signal().notify_one();
        }
        let done = Utc::now();
        for (row, status) in rows.iter().zip(&out) {
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
            }
        }
        Ok(out)
    }

    /// One update inside the batch transaction: `(new status, order changed)`.
    async fn process_one(
        &self,
        tx: &mut Tx,
        claimed: &UpdateRow,
        owner: &str,
    ) -> Result<(Option<UpdateStatus>, bool), StoreError> {
        let started = Instant::now();
        let now = store::now();
        let Some(row) = tx.lock_claimed(claimed.seq, owner).await? else {
            return Ok((None, false));
        };
        let update: OrderUpdate = match serde_json::from_value(row.payload.0.clone()) {
            Ok(u) => u,
            Err(e) => {
                let error = error_entry(&row, now, "invalid_payload", &e.to_string());
                let status = UpdateStatus::Rejected;
                finish(tx, &row, status, None, Some(&error), now, None).await?;
                return Ok((Some(status), false));
            }
        };
        let target = Target::Reference(
            OrderReference::parse(&row.order_reference)
                .map_err(|e| StoreError::Corrupt(format!("update {}: {e}", row.id)))?,
        );
        let change = update.change(&row.id);
        let applied = self.service.apply_in(tx, &target, &change, now).await;
        let (policy, park_ttl) = self.settings.policy(row.event.as_deref());
        let outcome = match applied {
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
                finish(tx, &row, status, Some(&result), None, now, None).await?;
                metrics::histogram!("orderflow_inbox_claim_to_done_seconds")
                    .record(started.elapsed().as_secs_f64());
                return Ok((Some(status), applied.changed));
            }
            Err(DomainError::Store(e)) => return Err(e),
            Err(DomainError::CommandFailed(message)) => {
                let status = self
                    .retry_later(tx, row.seq, owner, "command_failed", &message)
                    .await?;
                return Ok((status, false));
            }
            // This process lacks the order's process definition (a fleet mid-deploy, a
            // wrong --processes): another attempt, maybe by another worker, can apply it.
            Err(e @ DomainError::UnknownProcess(_)) => {
                let status = self
                    .retry_later(tx, row.seq, owner, "unknown_process", &e.to_string())
                    .await?;
                return Ok((status, false));
            }
            Err(e @ DomainError::OrderNotFound) => (e, EventPolicy::Park),
            Err(e @ DomainError::EventNotApplicable { .. }) => (e, policy),
            Err(e) => (e, EventPolicy::Reject),
        };
        let (error, policy) = outcome;
        let mut entry = error_entry(&row, now, error.code(), &error.to_string());
        if let DomainError::EventNotApplicable { event, items } = &error {
            entry["event"] = json!(event);
            entry["items"] = json!(items);
        }
        let status = match policy {
            EventPolicy::Ignore => {
                let result = json!({"not_applicable": entry.get("items")});
                let status = UpdateStatus::Ignored;
                finish(tx, &row, status, Some(&result), Some(&entry), now, None).await?;
                status
            }
            EventPolicy::Reject => {
                let status = UpdateStatus::Rejected;
                finish(tx, &row, status, None, Some(&entry), now, None).await?;
                status
            }
            EventPolicy::Park => {
                let ttl = chrono::Duration::from_std(park_ttl).unwrap_or(chrono::Duration::MAX);
                // Parked since it was received, or since an operator retried it.
                let since = last_retry(&row).unwrap_or(row.received_at);
                let until = row
                    .park_until
                    .unwrap_or_else(|| since.checked_add_signed(ttl).unwrap_or(now));
                if now >= until {
                    entry["message"] =
                        json!(format!("{error} (parked since {since}, past park_ttl)"));
                    let status = UpdateStatus::Dead;
                    finish(tx, &row, status, None, Some(&entry), now, None).await?;
                    status
                } else {
                    let parks = count_errors(&row, |e| {
                        e.get("code")
                            .and_then(Value::as_str)
                            .is_some_and(|c| PARK_CODES.contains(&c))
                    });
                    let next = later(now, self.settings.backoff(parks + 1)).min(until);
                    let status = UpdateStatus::Parked;
                    finish(tx, &row, status, None, Some(&entry), next, Some(until)).await?;
                    status
                }
            }
        };
        Ok((Some(status), false))
    }

    /// Records a retryable failure: `accepted` again after a backoff, or `dead` when this
    /// was the last attempt. `None` if `owner` lost the lease meanwhile.
    async fn retry_later(
        &self,
        tx: &mut Tx,
        seq: i64,
        owner: &str,
        code: &str,
        message: &str,
    ) -> Result<Option<UpdateStatus>, StoreError> {
        let now = store::now();
        let Some(row) = tx.lock_claimed(seq, owner).await? else {
            return Ok(None);
        };
        let mut entry = error_entry(&row, now, code, message);
        entry["retryable"] = json!(true);
        let failures = count_errors(&row, |e| e.get("retryable") == Some(&json!(true))) + 1;
        let status = if failures >= self.settings.max_attempts {
            UpdateStatus::Dead
        } else {
            UpdateStatus::Accepted
        };
        let next = later(now, self.settings.backoff(failures));
        if status == UpdateStatus::Accepted {
            entry["retry_at"] = json!(next);
        }
        finish(tx, &row, status, None, Some(&entry), next, row.park_until).await?;
        Ok(Some(status))
    }
}

fn error_entry(row: &UpdateRow, now: DateTime<Utc>, code: &str, message: &str) -> Value {
    json!({"attempt": row.attempts, "at": now, "code": code, "message": message})
}

/// Errors since the last operator retry that satisfy `pred`: a retry starts the count of
/// attempts again.
fn count_errors(row: &UpdateRow, pred: impl Fn(&Value) -> bool) -> u32 {
    row.errors
        .0
        .iter()
        .rev()
        .take_while(|e| !is_retry_marker(e))
        .filter(|e| pred(e))
        .count() as u32
}

/// When an operator last retried the update.
fn last_retry(row: &UpdateRow) -> Option<DateTime<Utc>> {
    let marker = row.errors.0.iter().rev().find(|e| is_retry_marker(e))?;
    serde_json::from_value(marker.get("at")?.clone()).ok()
}

fn later(now: DateTime<Utc>, delay: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX / 2)
}

async fn finish(
    tx: &mut Tx,
    row: &UpdateRow,
    status: UpdateStatus,
    result: Option<&Value>,
    error: Option<&Value>,
    next_attempt_at: DateTime<Utc>,
    park_until: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let processed_at = status.is_final().then_some(next_attempt_at);
    tx.finish_update(
        row.seq,
        &Finish {
            status: status.as_str(),
            result,
            error,
            next_attempt_at,
            park_until,
            processed_at,
        },
    )
    .await
}
