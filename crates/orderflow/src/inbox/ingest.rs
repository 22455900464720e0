//! Accepting updates: validation, idempotency, group-committed inserts, and the answer in
//! async or wait mode.
//!
//! Durability: an update is acknowledged only after the transaction that stored it has
//! committed. On SQLite that commit is an fsync of the WAL (`synchronous = FULL`, see
//! `store::Store::connect`), so an acknowledged update survives power loss, not only a
//! crash of the process. The cost of that fsync is shared: one writer task stores whatever
//! requests queued up while the previous commit was running, in one transaction.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::Inbox;
use super::batcher::{Batcher, Flush, WriterStopped};
use super::model::{OrderUpdate, UpdateStatus, accepted_body};
use crate::domain::OrderService;
use crate::store::group::GroupWriter;
use crate::store::inbox::{NewUpdate, Stored, UpdateRow};
use crate::store::{self, StoreError};

/// The updates of one request, stored together.
pub struct StoreBatch(pub Vec<NewUpdate>);

/// One answer per update of the request, or the store's error for all of them.
pub type BatchAnswer = Result<Vec<Stored>, Arc<StoreError>>;

/// Requests stored in one transaction at most (a batch request holds up to `max_batch`
/// updates).
const GROUP_REQUESTS: usize = 256;

pub(super) fn spawn_writer(service: OrderService) -> Batcher<StoreBatch, BatchAnswer> {
    let writer = Writer {
        group: GroupWriter::new(service.store().clone()),
    };
    let (writer, _task) = Batcher::spawn(GROUP_REQUESTS, 4096, writer);
    writer
}

/// The writer task's side: stores the requests of a batch as one group.
struct Writer {
    group: GroupWriter,
}

impl Writer {
    /// Stores one request's updates in a transaction of their own.
    async fn store_one(&mut self, updates: &[NewUpdate]) -> BatchAnswer {
        match self.group.insert(updates).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                tracing::error!(error = %e, updates = updates.len(), "storing updates failed");
                Err(Arc::new(e))
            }
        }
    }
}

impl Flush<StoreBatch, BatchAnswer> for Writer {
    async fn flush(&mut self, requests: Vec<StoreBatch>) -> Vec<BatchAnswer> {
        let sizes: Vec<usize> = requests.iter().map(|g| g.0.len()).collect();
        let all: Vec<NewUpdate> = requests.into_iter().flat_map(|g| g.0).collect();
        metrics::histogram!("orderflow_inbox_group_commit_size").record(all.len() as f64);
        match self.group.insert(&all).await {
            Ok(stored) => {
                let mut stored = stored.into_iter();
                sizes
                    .into_iter()
                    .map(|n| Ok(stored.by_ref().take(n).collect()))
                    .collect()
            }
            Err(e) if sizes.len() > 1 => {
                // One request's bad row must not fail the others that shared its
                // transaction: store each request on its own, so only a request whose own
                // rows fail gets the error.
                tracing::warn!(error = %e, requests = sizes.len(), "storing a group failed; storing its requests one by one");
                let mut all = all.into_iter();
                let mut answers = Vec::with_capacity(sizes.len());
                for n in sizes {
                    let one: Vec<NewUpdate> = all.by_ref().take(n).collect();
                    answers.push(self.store_one(&one).await);
                }
                answers
            }
            Err(e) => {
                tracing::error!(error = %e, updates = all.len(), "storing updates failed");
                vec![Err(Arc::new(e))]
            }
        }
    }

    async fn idle(&mut self) {
        self.group.release();
    }
}

/// Why an update was not accepted: a stable code, a message, and the JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub path: Option<String>,
}

impl Refused {
    fn invalid(path: String, message: String) -> Self {
        Self {
            status: 422,
            code: "invalid_request",
            message,
            path: Some(path),
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(path) = &self.path {
            error["path"] = json!(path);
        }
        json!({ "error": error })
    }
}

/// An answer to the caller: status, JSON body, and `Location` for a stored update.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
}

impl Reply {
    fn new(status: u16, body: Value, id: &str) -> Self {
        Self {
            status,
            body,
            location: Some(location(id)),
        }
    }
}

pub fn location(id: &str) -> String {
    format!("/v1/erp/order-updates/{id}")
}

/// How to answer a single update.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// 202 once stored.
    Async,
    /// Process inline and answer with the result within this time, else 202.
    Wait(Duration),
}

/// A storage failure while accepting: nothing is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("storing the update failed")]
    Store(#[source] Arc<StoreError>),
    #[error(transparent)]
    Stopped(#[from] WriterStopped),
}

impl From<StoreError> for AcceptError {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

/// SHA-256 of a JSON value with object keys sorted: the same update with its keys in
/// another order is the same request.
pub fn request_hash(value: &Value) -> String {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).unwrap_or_default());
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
        }
    }
    let mut bytes = Vec::new();
    write(value, &mut bytes);
    hex::encode(Sha256::digest(&bytes))
}

impl Inbox {
    /// Checks one update (a request body or a batch entry at `path`) and makes its row.
    pub fn prepare(
        &self,
        client: &str,
        key: Option<String>,
        value: Value,
        path: &str,
    ) -> Result<NewUpdate, Refused> {
        let hash = request_hash(&value);
        if !value.is_object() {
            return Err(Refused::invalid(
                path.to_owned(),
                "an update must be a JSON object".into(),
            ));
        }
        let update: OrderUpdate = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let inner = e.path().to_string();
            let full = match inner.as_str() {
                "." => path.to_owned(),
                i if i.starts_with('[') => format!("{path}{i}"),
                i => format!("{path}.{i}"),
            };
            Refused::invalid(
                full,
                crate::http::wording::data_error(&e.inner().to_string()),
            )
        })?;
        let processes = self.service.processes();
        update
            .check(|e| processes.iter().any(|p| p.event_id(e).is_some()))
            .map_err(|(p, message)| {
                let full = format!("{path}{}", p.trim_start_matches('$'));
                if p == "$.event" {
                    Refused {
                        status: 422,
                        code: "unknown_event",
                        message,
                        path: Some(full),
                    }
                } else {
                    Refused::invalid(full, message)
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
    pub async fn store_updates(&self, updates: Vec<NewUpdate>) -> Result<Vec<Stored>, AcceptError> {
        self.writer
            .submit(StoreBatch(updates))
            .await?
            .map_err(AcceptError::Store)
    }

    /// Accepts one update and answers it: 202 once stored (async), or the result of
    /// processing it inline within the wait time. A repeated key gets the first answer.
    pub async fn accept(&self, mut update: NewUpdate, mode: Mode) -> Result<Reply, AcceptError> {
        let deadline = Instant::now()
            + match mode {
                Mode::Async => Duration::ZERO,
                Mode::Wait(d) => d,
            };
        if matches!(mode, Mode::Async) {
            update.response = Some((202, accepted_body(&update.id, UpdateStatus::Accepted)));
        }
        let (id, hash) = (update.id.clone(), update.request_hash.clone());
        let stored = self
            .store_updates(vec![update])
            .await?
            .pop()
            .ok_or_else(|| AcceptError::Store(Arc::new(StoreError::Corrupt("no answer".into()))))?;
        match stored {
            Stored::Existing(row) => self.replay(&row, &hash, deadline).await,
            Stored::New(seq) => match mode {
                Mode::Async => Ok(Reply::new(
                    202,
                    accepted_body(&id, UpdateStatus::Accepted),
                    &id,
                )),
                Mode::Wait(_) => self.wait(seq, &id, deadline).await,
            },
        }
    }

    /// The answer for a repeated key: 422 if the body differs, else the first answer
    /// (waiting for it, up to the deadline, while the first request is still processing).
    pub async fn replay(
        &self,
        row: &UpdateRow,
        hash: &str,
        deadline: Instant,
    ) -> Result<Reply, AcceptError> {
        if row.request_hash != hash {
            let refused = Refused {
                status: 422,
                code: "idempotency_key_reused",
                message: format!(
                    "idempotency key {:?} was used for a different update ({})",
                    row.idempotency_key.as_deref().unwrap_or_default(),
                    row.id
                ),
                path: None,
            };
            return Ok(Reply {
                status: refused.status,
                body: refused.body(),
                location: None,
            });
        }
        metrics::counter!("orderflow_inbox_replays_total").increment(1);
        // A repeat waits at least as long as the default wait for the first answer.
        let deadline = deadline.max(Instant::now() + self.settings.default_wait);
        let mut settled = self.store().wakeups().settled();
        let mut current = row.clone();
        if current.response_status.is_none() {
            // The answer may have been stored between the read and the subscription.
            if let Some(r) = self.store().update_by_seq(current.seq).await? {
                current = r;
            }
        }
        loop {
            if let (Some(status), Some(body)) = (current.response_status, current.response_body()) {
                let status = u16::try_from(status).unwrap_or(500);
                return Ok(Reply::new(status, body.clone(), &current.id));
            }
            if Instant::now() >= deadline {
                let status = current.status;
                let (status, body) = self
                    .store()
                    .set_response(current.seq, 202, &accepted_body(&current.id, status))
                    .await?;
                return Ok(Reply::new(status, body, &current.id));
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
    async fn wait(&self, seq: i64, id: &str, deadline: Instant) -> Result<Reply, AcceptError> {
        let now = store::now();
        let owner = format!("{}-inline", self.owner);
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        // Subscribed before anything can settle it: no wake-up is missed.
        let mut wake = self.store().wakeups().settled();
        let claimed = self
            .store()
            .claim_update(seq, now, &owner, now + lease)
            .await?;
        if let Some(row) = claimed {
            // Processing goes on if the deadline passes; the 202 says the worker finishes.
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
            let status = row.status;
            let settled = !matches!(status, UpdateStatus::Accepted | UpdateStatus::Processing);
            if settled || Instant::now() >= deadline {
                let (code, body) = outcome_reply(&row);
                let (code, body) = self.store().set_response(seq, code, &body).await?;
                return Ok(Reply::new(code, body, id));
            }
            // Woken when an attempt at it ends, here or in another process.
            wake.wait(seq, self.settings.settle_poll, deadline).await;
        }
    }
}

/// The answer that describes an update's current state (wait mode).
pub fn outcome_reply(row: &UpdateRow) -> (u16, Value) {
    let status = row.status;
    let last_error = row
        .errors()
        .iter()
        .rev()
        .find(|e| !super::model::is_retry_marker(e))
        .cloned();
    let code = last_error
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let error_body = |http: u16| {
        let mut error = last_error.clone().unwrap_or_else(|| json!({}));
        if let Value::Object(m) = &mut error {
            m.remove("attempt");
            m.remove("at");
            m.remove("retryable");
            m.insert("update_id".into(), json!(row.id));
            m.insert("status".into(), json!(status));
        }
        (http, json!({ "error": error }))
    };
    match status {
        UpdateStatus::Applied | UpdateStatus::Ignored | UpdateStatus::Dead => {
            let mut body = accepted_body(&row.id, status);
            if let Some(r) = row.result() {
                body["result"] = r.clone();
            }
            if let Some(e) = last_error.filter(|_| status != UpdateStatus::Applied) {
                body["last_error"] = e;
            }
            (200, body)
        }
        UpdateStatus::Rejected if code == "event_not_applicable" => error_body(409),
        UpdateStatus::Rejected => error_body(422),
        UpdateStatus::Parked if code == "order_not_found" => error_body(404),
        UpdateStatus::Parked => {
            let mut body = accepted_body(&row.id, status);
            if let Some(e) = last_error {
                body["last_error"] = e;
            }
            (202, body)
        }
        UpdateStatus::Accepted | UpdateStatus::Processing => (202, accepted_body(&row.id, status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b: Value = serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = json!({"b": 1, "a": {"y": [2, 1], "x": "s"}});
        assert_ne!(request_hash(&a), request_hash(&c));
    }
}
