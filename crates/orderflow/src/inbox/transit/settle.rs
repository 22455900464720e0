//! The database side of a broker transport: accepting an update by publishing it, waiting
//! for its outcome, and what a consumer does with the updates it received.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Delivered, REDELIVERIES, Transit, TransitError, TransitMessage};
use crate::backoff::Backoff;
use crate::inbox::Inbox;
use crate::inbox::ingest::{Accepted, Incoming, IngestError, Mode, Result};
use crate::inbox::model::{Answer, UpdateStatus};
use crate::store::inbox::{Finish, NewUpdate};
use crate::store::{self, StoreError};

impl Inbox {
    /// [`Inbox::accept`] over the broker: validated, published and confirmed; in wait
    /// mode, answered with the outcome once a consumer has it (in any process).
    pub(in crate::inbox) async fn accept_transit(
        &self,
        transit: &Transit,
        incoming: Incoming,
        mode: Mode,
    ) -> Result<Accepted> {
        let mut update = self.prepare(
            &incoming.client,
            incoming.key,
            incoming.body,
            &incoming.path,
        )?;
        update.id = transit.ids().issue(&update);
        let id = update.id.clone();
        // Subscribed before the consumer can settle it: no wake-up is missed.
        let settled = self.store().wakeups().settled().await;
        transit
            .publish(&[TransitMessage::from(update)])
            .await
            .map_err(IngestError::Transit)?;
        match mode {
            Mode::Async => Ok(Accepted::Stored(Answer::pending(
                &id,
                UpdateStatus::Accepted,
            ))),
            Mode::Wait(d) => self.wait_transit(&id, settled, Instant::now() + d).await,
        }
    }

    /// [`Inbox::accept_batch`] over the broker: every valid entry published, all confirmed
    /// before the answer.
    pub(in crate::inbox) async fn accept_batch_transit(
        &self,
        transit: &Transit,
        entries: Vec<Incoming>,
    ) -> Result<Vec<Result<Accepted>>> {
        let mut results = Vec::with_capacity(entries.len());
        let mut messages = Vec::new();
        for entry in entries {
            match self.prepare(&entry.client, entry.key, entry.body, &entry.path) {
                Ok(mut u) => {
                    u.id = transit.ids().issue(&u);
                    results.push(Ok(Accepted::Stored(Answer::pending(
                        &u.id,
                        UpdateStatus::Accepted,
                    ))));
                    messages.push(TransitMessage::from(u));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        transit
            .publish(&messages)
            .await
            .map_err(IngestError::Transit)?;
        Ok(results)
    }

    /// Waits for update `id` to be settled by a consumer until `deadline`; then answers
    /// with where it is (`accepted` while still in transit).
    async fn wait_transit(
        &self,
        id: &str,
        mut settled: store::Settled,
        deadline: Instant,
    ) -> Result<Accepted> {
        let poll = self.settings.settle_poll;
        loop {
            let row = self.store().update_by_id(id).await?;
            let answer = row
                .as_ref()
                .map_or_else(|| Answer::pending(id, UpdateStatus::Accepted), Answer::of);
            if answer.is_settled() || Instant::now() >= deadline {
                return Ok(Accepted::first(answer));
            }
            match row {
                // Stored by a consumer, not settled yet: woken when it is.
                Some(r) => settled.wait(r.seq, poll, deadline).await,
                // Still in transit: its seq is not known, any settled update wakes us.
                None => settled.any(poll, deadline).await,
            }
        }
    }

    /// What a consumer does with the updates it received from one queue, in order: each
    /// is stored in the database inbox and, with `apply`, applied in the same transaction
    /// when its order has no earlier update waiting there; ids the inbox has already
    /// (redeliveries, repeats) are skipped. Returns once that is committed (the caller
    /// acknowledges then), with the messages the database refused to store even one by
    /// one (the caller dead-letters them). A store outage is retried with backoff until it
    /// passes or `shutdown` ([`TransitError::Stopped`]: acknowledge nothing).
    pub async fn settle_transit(
        &self,
        delivered: Vec<Delivered>,
        apply: bool,
        ttl: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Vec<TransitMessage>, TransitError> {
        let redelivered = delivered.iter().filter(|d| d.redelivered).count() as u64;
        if redelivered > 0 {
            REDELIVERIES.fetch_add(redelivered, Ordering::Relaxed);
            metrics::counter!("orderflow_transit_redeliveries_total").increment(redelivered);
        }
        // A redelivery means a consumer ended before it acknowledged: maybe by applying one
        // of these updates (an abort, the OOM killer). Applied here again, it could end
        // every consumer in turn; stored, the database worker applies them, and tries
        // alone the updates of a batch whose process ended (`inbox::process::attempt`).
        let apply = apply && redelivered == 0;
        let messages: Vec<TransitMessage> = delivered.into_iter().map(|d| d.message).collect();
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).jittered();
        let mut failures = 0;
        loop {
            let now = store::now();
            let overdue = now - chrono::Duration::from_std(ttl).unwrap_or_default();
            let error = match self.settle_rounds(&messages, apply, overdue, now).await {
                Ok(()) => return Ok(Vec::new()),
                Err(e) => e,
            };
            tracing::warn!(error = %error, updates = messages.len(), "applying updates from the broker failed; storing them for the inbox worker");
            // Whatever failed the transaction, the database worker retries each update
            // on its own (with backoff, `dead` after max_attempts).
            let error = match self.settle_rounds(&messages, false, overdue, now).await {
                Ok(()) => return Ok(Vec::new()),
                Err(e) => e,
            };
            if self.store().ready().await.is_ok() {
                // The database answers: find the message it refuses, store the others. Each
                // is tried twice: a first failure may be another consumer storing the same
                // id at the same time (a repeat), which the second attempt then skips.
                let mut refused = Vec::new();
                for m in &messages {
                    let one = std::slice::from_ref(m);
                    if self.settle_rounds(one, false, overdue, now).await.is_err()
                        && let Err(e) = self.settle_rounds(one, false, overdue, now).await
                    {
                        tracing::error!(error = %e, update = %m.id, "the database refuses this update; dead-lettered");
                        refused.push(m.clone());
                    }
                }
                // All refused by a database that answers a probe: still an outage unless
                // there was only one.
                if refused.len() < messages.len() || messages.len() == 1 {
                    return Ok(refused);
                }
            }
            failures += 1;
            let delay = backoff.delay(failures - 1);
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "storing updates from the broker failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return Err(TransitError::Stopped),
            }
        }
    }

    /// The messages in rounds that hold at most one update per order, in receive order:
    /// one transaction per round.
    async fn settle_rounds(
        &self,
        messages: &[TransitMessage],
        apply: bool,
        overdue: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut rounds: Vec<Vec<&TransitMessage>> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for m in messages {
            let n = seen.entry(m.order_reference.as_str()).or_insert(0);
            if rounds.len() <= *n {
                rounds.push(Vec::new());
            }
            rounds[*n].push(m);
            *n += 1;
        }
        for round in rounds {
            self.settle_round(&round, apply, overdue, now).await?;
        }
        Ok(())
    }

    /// One round in one transaction: new updates stored; with `apply`, those whose order
    /// has nothing waiting (and that are not older than `overdue`) applied.
    async fn settle_round(
        &self,
        round: &[&TransitMessage],
        apply: bool,
        overdue: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let ids: Vec<String> = round.iter().map(|m| m.id.clone()).collect();
        let mut tx = self.store().begin().await?;
        let existing = tx.existing_update_ids(&ids).await?;
        let fresh: Vec<NewUpdate> = round
            .iter()
            .filter(|m| !existing.contains(&m.id))
            .map(|m| (*m).clone().into_new_update())
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let references: Vec<String> = fresh
            .iter()
            .map(|u| u.order_reference.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let waiting = if apply {
            tx.orders_with_waiting_updates(&references, now).await?
        } else {
            HashSet::new()
        };
        let inserted = tx.insert_updates(&fresh).await?;
        // Not inserted: the client used its key before, for another body (the same body
        // has the same id and was skipped above). Recorded as rejected, without the key.
        let reused: Vec<(NewUpdate, String)> = fresh
            .iter()
            .filter(|u| !inserted.contains_key(&u.id))
            .map(|u| {
                let key = u.idempotency_key.clone().unwrap_or_default();
                (
                    NewUpdate {
                        idempotency_key: None,
                        ..u.clone()
                    },
                    key,
                )
            })
            .collect();
        let rows: Vec<NewUpdate> = reused.iter().map(|(u, _)| u.clone()).collect();
        let reused_seqs = tx.insert_updates(&rows).await?;
        let finishes: Vec<Finish> = reused
            .iter()
            .filter_map(|(u, key)| {
                let seq = *reused_seqs.get(&u.id)?;
                Some(Finish {
                    seq,
                    status: UpdateStatus::Rejected,
                    attempts: 1,
                    result: None,
                    errors: Some(vec![json!({
                        "attempt": 1,
                        "at": now,
                        "code": "idempotency_key_reused",
                        "message": format!("idempotency key {key:?} was used for a different update"),
                    })]),
                    next_attempt_at: now,
                    park_until: None,
                    processed_at: Some(now),
                })
            })
            .collect();
        let seqs: Vec<i64> = if apply {
            fresh
                .iter()
                .filter(|u| !waiting.contains(&u.order_reference) && u.received_at >= overdue)
                .filter_map(|u| inserted.get(&u.id).copied())
                .collect()
        } else {
            Vec::new()
        };
        let mut rows = tx.updates_by_seq(&seqs).await?;
        for row in &mut rows {
            // As a claim would: this is the update's first attempt.
            row.attempts += 1;
            row.status = UpdateStatus::Processing;
        }
        let (statuses, changed) = self.apply_held(&mut tx, &rows, now).await?;
        tx.finish_updates(&finishes).await?;
        tx.commit().await?;
        let out: Vec<Option<UpdateStatus>> = statuses.into_iter().map(Some).collect();
        self.processed(&rows, &out, changed, started);
        tracing::debug!(
            received = round.len(),
            redelivered_or_repeated = existing.len(),
            applied_now = rows.len(),
            stored_for_the_worker = inserted.len() - rows.len(),
            key_reused = finishes.len(),
            "updates from the broker settled"
        );
        Ok(())
    }
}
