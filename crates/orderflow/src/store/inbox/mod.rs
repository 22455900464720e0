//! The ERP inbox: updates stored before they are acknowledged, claimed by workers, and
//! finished with their outcome in the same transaction as the order change.
//!
//! Claiming keeps two rules on both backends:
//! - an update is claimed only when no other update of its order is `processing` and no
//!   earlier one is still waiting (`accepted`, or `parked` and due): updates of one order
//!   are applied one at a time, in receive order (`seq`);
//! - a worker's batch is held by the transaction that processes it, and an update whose
//!   worker died is due again as soon as that transaction is rolled back; a claim that
//!   commits a lease first (wait mode, a failed batch's updates one at a time) sets
//!   `next_attempt_at` to the lease's end, so it is due again when the lease runs out.
//!
//! The worker reads the due updates ([`Tx::due_updates`]) and finishes them in the same
//! transaction, which holds them as a lease would until it commits. On PostgreSQL that read
//! locks the rows and skips rows another transaction holds (`SKIP LOCKED`), so it never
//! waits for another worker; SQLite has one writer, which serialises the batches. On
//! PostgreSQL a leased claim also takes a transaction lock per order (keyed by a hash of
//! its reference) and checks its rows again after it got them (see the dialect's
//! `claim_read` and `claim_recheck`). On SQLite the ERP's group commit leaves its updates
//! out of the per-order index that the first rule reads, and each claim admits some first
//! and claims none past the first one still left out ([`Tx::admit_updates`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::json::StoredJson;
pub use super::status::UpdateStatus;

mod attempts;
mod claim;
mod operator;

use super::{List, Result, Store, Tx, on_reader, on_tx, per_backend};
pub use attempts::{Leftovers, Recorded};
pub use operator::{RETRY_CODE, RetryPage};

/// Every column of an inbox row.
/// `Deserialize`: from the one-row read of a batch on SQLite (`sqlite::rows`).
#[derive(Clone, Debug, sqlx::FromRow, serde::Deserialize)]
pub struct UpdateRow {
    pub seq: i64,
    pub id: String,
    pub client: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub order_reference: String,
    pub event: Option<String>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::stored")]
    pub payload: StoredJson<Value>,
    pub status: UpdateStatus,
    pub attempts: i32,
    #[serde(deserialize_with = "crate::store::sqlite::rows::stored")]
    pub errors: StoredJson<Vec<Value>>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::stored_opt")]
    pub result: Option<StoredJson<Value>>,
    /// The first answer given for the update (the inbox's `Answer`, as JSON), replayed
    /// to repeats of its idempotency key. Kept in `response_body`; earlier versions also
    /// wrote `response_status`, which is no longer read.
    #[sqlx(rename = "response_body")]
    #[serde(
        rename = "response_body",
        deserialize_with = "crate::store::sqlite::rows::stored_opt"
    )]
    pub answer: Option<StoredJson<Value>>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time")]
    pub received_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time_opt")]
    pub processed_at: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time")]
    pub next_attempt_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time_opt")]
    pub park_until: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time_opt")]
    pub lease_until: Option<DateTime<Utc>>,
}

impl UpdateRow {
    /// The update as sent, or why the stored payload cannot be read.
    pub fn payload(&self) -> Result<&Value, &str> {
        self.payload.get()
    }

    /// Every attempt's error (none when the stored list cannot be read).
    pub fn errors(&self) -> &[Value] {
        self.errors.ok().map_or(&[], Vec::as_slice)
    }

    pub fn result(&self) -> Option<&Value> {
        self.result.as_ref().and_then(StoredJson::ok)
    }

    /// The first answer given for the update, if one was given.
    pub fn answer(&self) -> Option<&Value> {
        self.answer.as_ref().and_then(StoredJson::ok)
    }
}

pub(super) const COLUMNS: &str = "seq, id, client, idempotency_key, request_hash, \
     order_reference, event, payload, status, attempts, errors, result, \
     response_body, received_at, processed_at, next_attempt_at, park_until, lease_owner, \
     lease_until";

/// What finishing an attempt sets (`v` is the row of values per update).
pub(crate) const FINISH_SET: &str = "status = v.status, attempts = v.attempts, \
     result = COALESCE(v.result, inbox.result), \
     errors = COALESCE(v.errors, inbox.errors), next_attempt_at = v.next_attempt_at, \
     park_until = v.park_until, processed_at = v.processed_at, \
     lease_owner = NULL, lease_until = NULL";

/// A validated update to store as `accepted`.
#[derive(Clone, Debug)]
pub struct NewUpdate {
    pub id: String,
    pub client: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub order_reference: String,
    pub event: Option<String>,
    pub payload: Value,
    /// The answer to replay for a repeat (the inbox's `Answer` as JSON), when it is known
    /// at insert time (async mode).
    pub response: Option<Value>,
    pub received_at: DateTime<Utc>,
}

/// What storing one update did.
#[derive(Clone, Debug)]
pub enum Stored {
    /// A new row, with its `seq`.
    New(i64),
    /// The client already used this idempotency key: the row stored then.
    Existing(Box<UpdateRow>),
}

/// How an attempt at update `seq` ends: the row's new status and what to keep.
#[derive(Clone, Debug)]
pub struct Finish {
    pub seq: i64,
    pub status: UpdateStatus,
    /// Attempts made, this one included.
    pub attempts: i32,
    pub result: Option<Value>,
    /// Every attempt's error, this one's last, when this attempt failed (else kept).
    pub errors: Option<Vec<Value>>,
    /// When it is due again (`accepted`/`parked`); ignored for final states.
    pub next_attempt_at: DateTime<Utc>,
    pub park_until: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// Filters of the admin list and replay.
#[derive(Clone, Debug, Default)]
pub struct UpdateFilter {
    pub status: Option<UpdateStatus>,
    pub order_reference: Option<String>,
    pub event: Option<String>,
    pub received_after: Option<DateTime<Utc>>,
    pub received_before: Option<DateTime<Utc>>,
    /// Rows after this `seq` (paging).
    pub after_seq: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// One update by its public id.
    pub async fn update_by_id(&self, id: &str) -> Result<Option<UpdateRow>> {
        let sql = format!("SELECT {COLUMNS} FROM inbox WHERE id = $1");
        Ok(on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(p)
                .await
        })?)
    }

    /// One update by its receive sequence number.
    pub async fn update_by_seq(&self, seq: i64) -> Result<Option<UpdateRow>> {
        let sql = format!("SELECT {COLUMNS} FROM inbox WHERE seq = $1");
        Ok(on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(seq)
                .fetch_optional(p)
                .await
        })?)
    }

    /// Stores the first answer to replay for the update, unless one is stored already;
    /// returns the one that is stored.
    pub async fn set_answer(&self, seq: i64, answer: &Value) -> Result<Value> {
        const SQL: &str = "UPDATE inbox SET response_body = $2 \
             WHERE seq = $1 AND response_body IS NULL";
        const READ: &str = "SELECT response_body FROM inbox WHERE seq = $1";
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(SQL)
                .bind(seq)
                .bind(Json(answer))
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let stored: Option<Json<Value>> = on_tx!(&mut tx, |c| {
            sqlx::query_scalar(READ).bind(seq).fetch_one(c).await
        })?;
        // A repeat of the update's key waits for this answer.
        tx.raised.settled.push(seq);
        tx.commit().await?;
        Ok(stored.map_or_else(|| answer.clone(), |b| b.0))
    }

    /// Frees idempotency keys of updates received before `before` and, when given, at or
    /// after `from`; returns how many. Updates are kept, and without `from` the statement
    /// visits every update ever received before `before`, freed or not (2.4 million took
    /// 0.6 to 2 s here, on SQLite with the writer held): a caller that freed everything
    /// before `from` already passes it, and each run then reads only what was received
    /// since the last.
    pub async fn expire_keys(
        &self,
        from: Option<DateTime<Utc>>,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        const SQL: &str = "UPDATE inbox SET idempotency_key = NULL \
             WHERE received_at < $1 AND idempotency_key IS NOT NULL";
        const SINCE: &str = "UPDATE inbox SET idempotency_key = NULL \
             WHERE received_at < $1 AND received_at >= $2 AND idempotency_key IS NOT NULL";
        let mut tx = self.begin().await?;
        let n = on_tx!(&mut tx, |c| {
            match from {
                Some(from) => sqlx::query(SINCE).bind(before).bind(from),
                None => sqlx::query(SQL).bind(before),
            }
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(n)
    }
}

impl Tx {
    /// Inserts updates as `accepted`, skipping repeated `(client, idempotency_key)`s;
    /// returns the `seq` of each inserted one by id. Workers are woken at commit.
    pub async fn insert_updates(
        &mut self,
        updates: &[NewUpdate],
    ) -> Result<std::collections::HashMap<String, i64>> {
        let inserted: std::collections::HashMap<String, i64> =
            per_backend!(self, insert_updates(updates))?
                .into_iter()
                .collect();
        self.raised.inbox |= !inserted.is_empty();
        Ok(inserted)
    }

    /// Ends attempts: new status, result, errors, and the leases released. One statement
    /// for all of them (a few on SQLite). The `update.dead` events of those that end `dead`
    /// are queued in the same transaction. Waiters on these updates are woken at commit.
    pub async fn finish_updates(&mut self, finishes: &[Finish]) -> Result<()> {
        if finishes.is_empty() {
            return Ok(());
        }
        per_backend!(self, finish_updates(finishes))?;
        let dead: Vec<i64> = finishes
            .iter()
            .filter(|f| f.status == UpdateStatus::Dead)
            .map(|f| f.seq)
            .collect();
        self.queue_dead_updates(&dead, super::now()).await?;
        self.raised.settled.extend(finishes.iter().map(|f| f.seq));
        Ok(())
    }

    /// Makes the parked updates of these orders due at `now` at the latest: their order was
    /// created or changed, so they may apply. Returns how many there are.
    ///
    /// The due time is lowered in `SET`, not tested in `WHERE`: a range test on
    /// `next_attempt_at` let PostgreSQL, with statistics from before a burst, read the due
    /// index for every update due later (tens of thousands in a backlog) in every batch,
    /// to find none parked; now only the orders' parked updates are read (`inbox_parked`).
    ///
    /// A parked update that a worker's batch holds is left alone (the dialect's
    /// `claim_lock`): that batch is processing it, and reads its order only once this
    /// transaction, which holds the order, has committed. Waiting for it instead could
    /// deadlock, as that batch may be waiting for this transaction's order.
    pub async fn wake_parked_many(
        &mut self,
        references: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let d = self.dialect();
        let sql = format!(
            "UPDATE inbox SET next_attempt_at = \
             CASE WHEN next_attempt_at > $2 THEN $2 ELSE next_attempt_at END \
             WHERE seq IN (SELECT r.seq FROM inbox r WHERE {} AND r.status = 'parked'{})",
            d.in_list("r.order_reference", 1),
            d.claim_lock
        );
        let n = on_tx!(self, |c| sqlx::query(AssertSqlSafe(sql))
            .bind(List(references))
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        self.raised.inbox |= n > 0;
        Ok(n)
    }

    /// Wakes the inbox worker at commit, here and in other processes.
    pub(crate) fn raise_inbox(&mut self) {
        self.raised.inbox = true;
    }
}
