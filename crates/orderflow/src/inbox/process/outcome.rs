//! How an attempt ends: applied, parked (with its backoff and time limit), ignored,
//! rejected, retried later or dead, and the error entry it leaves.

use super::*;

impl Inbox {
    /// What the attempt's result means for the update.
    pub(super) fn outcome(
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
            // A command that failed for good (fatal, DESIGN §4): no retry can apply the
            // update, and waiting for the order to change cannot either. Rejected at once,
            // whatever the event's policy; the order was left unchanged.
            Err(e @ DomainError::CommandRefused { .. }) => (e, EventPolicy::Reject),
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
    pub(super) fn retry_later(
        &self,
        row: &UpdateRow,
        now: DateTime<Utc>,
        code: &str,
        message: &str,
    ) -> Decided {
        let mut entry = error_entry(row, now, code, message);
        entry["retryable"] = json!(true);
        let failures = count_errors(row, |e| e.get("retryable") == Some(&json!(true))) + 1;
        let status = if failures >= self.settings.max_attempts() {
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
pub(super) fn no_way_out(row: &UpdateRow, event: &str, items: &[ItemState]) -> String {
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

/// How an update ends whose stored payload cannot be read: `dead` at once, with the reason
/// (fatal: no retry can read it). The attempt is counted, and the batch and every other
/// order go on.
pub(super) fn unreadable(row: &UpdateRow, now: DateTime<Utc>, e: &str) -> Decided {
    let error = error_entry(row, now, "invalid_payload", e);
    let status = UpdateStatus::Dead;
    (
        status,
        finish(row, status, None, Some(error), now, None),
        false,
    )
}

pub(super) fn error_entry(row: &UpdateRow, now: DateTime<Utc>, code: &str, message: &str) -> Value {
    json!({"attempt": row.attempts, "at": now, "code": code, "message": message})
}

/// Errors since the last operator retry that satisfy `pred`: a retry starts the count of
/// attempts again.
pub(super) fn count_errors(row: &UpdateRow, pred: impl Fn(&Value) -> bool) -> u32 {
    row.errors()
        .iter()
        .rev()
        .take_while(|e| !is_retry_marker(e))
        .filter(|e| pred(e))
        .count() as u32
}

/// When an operator last retried the update.
pub(super) fn last_retry(row: &UpdateRow) -> Option<DateTime<Utc>> {
    let marker = row.errors().iter().rev().find(|e| is_retry_marker(e))?;
    serde_json::from_value(marker.get("at")?.clone()).ok()
}

pub(super) fn later(now: DateTime<Utc>, delay: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX / 2)
}

/// The row that ends the attempt: `error` is appended to the update's errors.
pub(super) fn finish(
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
