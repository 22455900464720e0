//! Accepting updates: validation, the idempotency rule, and the answer in async or wait
//! mode. Updates are stored by the group-commit writer ([`super::writer`]) and
//! acknowledged only once committed.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::Inbox;
use super::batcher::WriterStopped;
use super::model::{Answer, OrderUpdate, UpdateStatus};
use super::writer::StoreBatch;
use crate::store::inbox::{NewUpdate, Stored, UpdateRow};
use crate::store::{self, StoreError};

/// One update as it arrives: who sent it, its idempotency key, the JSON as sent, and where
/// that JSON sits in its request (`$` for a single update, `$.updates[3]` for an entry of
/// a batch); the paths of its errors start there.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub client: String,
    pub key: Option<String>,
    pub body: Value,
    pub path: String,
}

/// How to answer a single update.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Answer once it is stored.
    Async,
    /// Process it inline and answer with its outcome within this time, else as stored.
    Wait(Duration),
}

/// What accepting an update did, with the answer to give. A transport renders the answer
/// the same way whichever variant carries it: a replay is indistinguishable from the first
/// answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Accepted {
    /// Stored and not finished yet (async mode, or wait mode past its time): the worker
    /// finishes it.
    Stored(Answer),
    /// Stored and processed inline (wait mode): applied, ignored, rejected, dead or parked.
    Settled(Answer),
    /// The key was used before for the same update: the first answer; nothing is stored.
    Replayed(Answer),
}

impl Accepted {
    pub fn answer(&self) -> &Answer {
        match self {
            Self::Stored(a) | Self::Settled(a) | Self::Replayed(a) => a,
        }
    }

    /// A first answer, by what it says.
    pub(in crate::inbox) fn first(answer: Answer) -> Self {
        if answer.is_settled() {
            Self::Settled(answer)
        } else {
            Self::Stored(answer)
        }
    }
}

/// Why an update was not accepted. Nothing is stored for it.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not a valid update; `path` is the JSON path of the problem.
    #[error("{message}")]
    Invalid { path: String, message: String },
    /// The update names an event no loaded process has.
    #[error("{message}")]
    UnknownEvent { path: String, message: String },
    /// More updates in one batch than `[erp] max_batch`.
    #[error("a batch holds at most {max} updates, this one has {size}")]
    BatchTooLarge { max: usize, size: usize },
    /// The client used the idempotency key before, for a different update; `path` is the
    /// batch entry's.
    #[error("idempotency key {key:?} was used for a different update ({first})")]
    KeyReused {
        key: String,
        /// The id of the update stored under the key.
        first: String,
        path: Option<String>,
    },
    /// Storing (or reading back) the update failed: nothing is acknowledged.
    #[error("storing the update failed")]
    Store(#[source] Arc<StoreError>),
    #[error(transparent)]
    Stopped(#[from] WriterStopped),
    /// The broker transport did not confirm the update: nothing is acknowledged, the
    /// client sends it again.
    #[error("the update was not accepted: {0}; send it again")]
    Transit(#[source] Arc<super::transit::TransitError>),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

impl IngestError {
    fn invalid(path: String, message: String) -> Self {
        Self::Invalid { path, message }
    }

    /// Storage failures fail the whole request, not one entry of it.
    fn is_storage(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Stopped(_) | Self::Transit(_))
    }
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// SHA-256 of a JSON value with object keys sorted: the same update with its keys in
/// another order is the same request. The bytes hashed are the value's compact JSON with
/// sorted keys, written straight into the hasher (stored hashes depend on them: keep them).
pub fn request_hash(value: &Value) -> String {
    fn write(v: &Value, out: &mut Sha256) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.update(b"{");
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.update(b",");
                    }
                    // Writing JSON into a hasher cannot fail.
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.update(b":");
                    write(&m[k], out);
                }
                out.update(b"}");
            }
            Value::Array(a) => {
                out.update(b"[");
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.update(b",");
                    }
                    write(x, out);
                }
                out.update(b"]");
            }
            other => {
                let _ = serde_json::to_writer(&mut *out, other);
            }
        }
    }
    let mut hasher = Sha256::new();
    write(value, &mut hasher);
    crate::auth::to_hex(&hasher.finalize())
}

/// Why `value` is not an [`OrderUpdate`], at its JSON path under `path`.
fn shape_error(value: &Value, path: &str) -> IngestError {
    let Err(e) = serde_path_to_error::deserialize::<_, OrderUpdate>(value) else {
        return IngestError::invalid(path.to_owned(), "not an order update".into());
    };
    IngestError::invalid(
        crate::wording::json_path(path, &e.path().to_string()),
        crate::wording::data_error(&e.inner().to_string()),
    )
}

impl Inbox {
    /// Checks one update (a request body or a batch entry at `path`) and makes its row.
    pub fn prepare(
        &self,
        client: &str,
        key: Option<String>,
        value: Value,
        path: &str,
    ) -> Result<NewUpdate> {
        let hash = request_hash(&value);
        if !value.is_object() {
            return Err(IngestError::invalid(
                path.to_owned(),
                "an update must be a JSON object".into(),
            ));
        }
        // Read from the value in place; only a value that does not fit is read once more,
        // tracking the path, to say where.
        let update = match OrderUpdate::deserialize(&value) {
            Ok(update) => update,
            Err(_) => return Err(shape_error(&value, path)),
        };
        let processes = self.service.processes();
        update
            .check(|e| processes.iter().any(|p| p.event_id(e).is_some()))
            .map_err(|(p, message)| {
                let full = format!("{path}{}", p.trim_start_matches('$'));
                if p == "$.event" {
                    IngestError::UnknownEvent {
                        path: full,
                        message,
                    }
                } else {
                    IngestError::invalid(full, message)
                }
            })?;
        Ok(NewUpdate {
            id: uuid::Uuid::now_v7().to_string(),
            client: client.to_owned(),
            idempotency_key: update.idempotency_key.clone().or(key),
            request_hash: hash,
            order_reference: update.order_reference.as_str().to_owned(),
            event: update.event.as_ref().map(|e| e.as_str().to_owned()),
            payload: value,
            response: None,
            received_at: store::now(),
        })
    }

    /// Stores a request's updates in one group commit; one [`Stored`] per update, in order.
    pub async fn store_updates(&self, updates: Vec<NewUpdate>) -> Result<Vec<Stored>> {
        // The rows come back with the answer and are dropped here (see `Writer::flush`).
        let answer = self.writer.submit(StoreBatch(updates)).await?;
        answer.stored.map_err(IngestError::Store)
    }

    /// Accepts one update: answers once it is stored (async), or with the outcome of
    /// processing it inline within the wait time. A repeated key gets the first answer
    /// (see [`Inbox::replay`]).
    pub async fn accept(&self, incoming: Incoming, mode: Mode) -> Result<Accepted> {
        if let Some(transit) = self.transit.clone() {
            return Box::pin(self.accept_transit(&transit, incoming, mode)).await;
        }
        let mut update = self.prepare(
            &incoming.client,
            incoming.key,
            incoming.body,
            &incoming.path,
        )?;
        let deadline = Instant::now()
            + match mode {
                Mode::Async => Duration::ZERO,
                Mode::Wait(d) => d,
            };
        let pending = Answer::pending(&update.id, UpdateStatus::Accepted);
        if matches!(mode, Mode::Async) {
            update.response = Some(pending.to_stored());
        }
        let hash = update.request_hash.clone();
        let stored = self
            .store_updates(vec![update])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no answer".into()))?;
        // The rare paths are boxed, so the common one (async, a new update) keeps a small
        // future: it is moved on its way into the connection's task (see
        // docs/benchmarks.md, "Where a request's time goes").
        match stored {
            Stored::Existing(row) => Box::pin(self.replay(&row, &hash, Some(deadline))).await,
            Stored::New(_) if matches!(mode, Mode::Async) => Ok(Accepted::Stored(pending)),
            Stored::New(seq) => Box::pin(self.wait(seq, &pending.id, deadline)).await,
        }
    }

    /// Accepts the updates of one batch, each its own inbox row, stored in one group
    /// commit: one result per entry, in order. An invalid entry stores nothing and gets
    /// its error; a repeated key gets the first answer without waiting for it.
    pub async fn accept_batch(&self, entries: Vec<Incoming>) -> Result<Vec<Result<Accepted>>> {
        let max = self.settings.max_batch();
        if entries.len() > max {
            return Err(IngestError::BatchTooLarge {
                max,
                size: entries.len(),
            });
        }
        if let Some(transit) = self.transit.clone() {
            return Box::pin(self.accept_batch_transit(&transit, entries)).await;
        }
        let mut results: Vec<Option<Result<Accepted>>> = Vec::with_capacity(entries.len());
        let mut valid = Vec::new();
        let mut stored_at = Vec::new();
        for entry in entries {
            match self.prepare(&entry.client, entry.key, entry.body, &entry.path) {
                Ok(mut u) => {
                    u.response = Some(Answer::pending(&u.id, UpdateStatus::Accepted).to_stored());
                    stored_at.push((
                        results.len(),
                        u.id.clone(),
                        u.request_hash.clone(),
                        entry.path,
                    ));
                    results.push(None);
                    valid.push(u);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let stored = self.store_updates(valid).await?;
        for ((index, id, hash, path), stored) in stored_at.into_iter().zip(stored) {
            results[index] = Some(match stored {
                Stored::New(_) => Ok(Accepted::Stored(Answer::pending(
                    &id,
                    UpdateStatus::Accepted,
                ))),
                Stored::Existing(row) => match self.replay(&row, &hash, None).await {
                    Err(e) if e.is_storage() => return Err(e),
                    Err(IngestError::KeyReused { key, first, .. }) => Err(IngestError::KeyReused {
                        key,
                        first,
                        path: Some(path),
                    }),
                    other => other,
                },
            });
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Corrupt("no answer".into()).into())))
            .collect())
    }

    /// The idempotency rule, for single updates and batch entries alike: `row` was stored
    /// under the key first. A different body (`hash`) is refused. The same body gets the
    /// first answer; while the first request is still processing inline (it has not
    /// answered), a repeat that may wait (`deadline`) waits for that answer, at least as
    /// long as the default wait, and one that may not (a batch entry) gets where the update
    /// is now.
    pub async fn replay(
        &self,
        row: &UpdateRow,
        hash: &str,
        deadline: Option<Instant>,
    ) -> Result<Accepted> {
        if row.request_hash != hash {
            return Err(IngestError::KeyReused {
                key: row.idempotency_key.clone().unwrap_or_default(),
                first: row.id.clone(),
                path: None,
            });
        }
        metrics::counter!("orderflow_inbox_replays_total").increment(1);
        let Some(deadline) = deadline else {
            return Ok(Accepted::Replayed(match stored_answer(row)? {
                Some(answer) => answer,
                None => Answer::of(row),
            }));
        };
        let deadline = deadline.max(Instant::now() + self.settings.default_wait());
        let mut settled = self.store().wakeups().settled().await;
        let mut current = row.clone();
        if current.answer.is_none() {
            // The answer may have been stored between the read and the subscription.
            if let Some(r) = self.store().update_by_seq(current.seq).await? {
                current = r;
            }
        }
        loop {
            if let Some(answer) = stored_answer(&current)? {
                return Ok(Accepted::Replayed(answer));
            }
            if Instant::now() >= deadline {
                let answer = self
                    .first_answer(current.seq, &Answer::of(&current))
                    .await?;
                return Ok(Accepted::Replayed(answer));
            }
            // Woken when the first request's answer is stored, in any process.
            settled
                .wait(current.seq, self.settings.settle_poll, deadline)
                .await;
            if let Some(r) = self.store().update_by_seq(current.seq).await? {
                current = r;
            }
        }
    }

    /// Wait mode after storing: process inline if the update is next of its order (else the
    /// worker does it), and answer with the outcome if it is there before the deadline.
    async fn wait(&self, seq: i64, id: &str, deadline: Instant) -> Result<Accepted> {
        let now = store::now();
        let owner = format!("{}-inline", self.owner);
        let lease = chrono::Duration::from_std(self.settings.worker.lease).unwrap_or_default();
        // Subscribed before anything can settle it: no wake-up is missed.
        let mut wake = self.store().wakeups().settled().await;
        let claimed = self
            .store()
            .claim_update(seq, now, &owner, now + lease)
            .await?;
        if let Some(row) = claimed {
            // Processing goes on if the deadline passes; the answer says the worker finishes.
            let inbox = self.clone();
            let task = tokio::spawn(async move {
                let rows = [row];
                inbox.process_batch(&rows, &owner, store::now()).await
            });
            if let Ok(joined) = tokio::time::timeout_at(deadline, task).await {
                match joined {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, update = id, "inline processing failed; the worker retries")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, update = id, "inline processing panicked")
                    }
                }
            }
        }
        loop {
            let row = self
                .store()
                .update_by_seq(seq)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("update {id} vanished")))?;
            let answer = Answer::of(&row);
            if answer.is_settled() || Instant::now() >= deadline {
                return Ok(Accepted::first(self.first_answer(seq, &answer).await?));
            }
            // Woken when an attempt at it ends, here or in another process.
            wake.wait(seq, self.settings.settle_poll, deadline).await;
        }
    }

    /// Stores `answer` as the first answer to update `seq`, unless a repeat stored one
    /// first; returns the one stored.
    async fn first_answer(&self, seq: i64, answer: &Answer) -> Result<Answer> {
        let stored = self.store().set_answer(seq, &answer.to_stored()).await?;
        Answer::from_stored(&stored).map_err(|e| corrupt_answer(seq, &e).into())
    }
}

/// The first answer stored for `row`, if it has one.
fn stored_answer(row: &UpdateRow) -> Result<Option<Answer>> {
    row.answer()
        .map(Answer::from_stored)
        .transpose()
        .map_err(|e| corrupt_answer(row.seq, &e).into())
}

fn corrupt_answer(seq: i64, e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!(
        "the stored answer of update {seq} is not readable: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b: Value = serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = json!({"b": 1, "a": {"y": [2, 1], "x": "s"}});
        assert_ne!(request_hash(&a), request_hash(&c));
        // Stored hashes depend on the bytes hashed: the compact JSON with sorted keys.
        assert_eq!(
            request_hash(&a),
            "0d1dbd3b30eaebbff7eaaff9c3f5bfb754d82a189175edb050d9006def74ca09"
        );
    }
}
