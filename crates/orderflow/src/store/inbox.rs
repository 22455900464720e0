//! The ERP inbox: updates stored before they are acknowledged, claimed by workers under a
//! lease, and finished with their outcome in the same transaction as the order change.
//!
//! Claiming keeps two rules on both backends:
//! - an update is claimed only when no other update of its order is `processing` and no
//!   earlier one is still waiting (`accepted`, or `parked` and due): updates of one order
//!   are applied one at a time, in receive order (`seq`);
//! - a claim sets `next_attempt_at` to the lease's end, so an update whose worker died is
//!   due again when the lease runs out.
//!
//! On PostgreSQL claims take a transaction-scoped advisory lock, so two claims never decide
//! on the same snapshot, and skip rows another transaction holds (`SKIP LOCKED`), so a claim
//! never waits for an order transaction. SQLite has one writer, which serialises them; there
//! the worker reads the due updates ([`Tx::due_updates`]) and finishes them in the same
//! transaction, which holds them as a lease would until it commits.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::batch::placeholders;
use super::group::{INSERT_CHUNK, SQLITE_ROW, bind_updates, insert_sql, postgres_row};
use super::json::StoredJson;
pub use super::status::UpdateStatus;
use super::{Result, Store, Tx, on_reader, on_tx};

/// Every column of an inbox row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UpdateRow {
    pub seq: i64,
    pub id: String,
    pub client: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub order_reference: String,
    pub event: Option<String>,
    pub payload: StoredJson<Value>,
    pub status: UpdateStatus,
    pub attempts: i32,
    pub errors: StoredJson<Vec<Value>>,
    pub result: Option<StoredJson<Value>>,
    pub response_status: Option<i32>,
    pub response_body: Option<StoredJson<Value>>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub park_until: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
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

    pub fn response_body(&self) -> Option<&Value> {
        self.response_body.as_ref().and_then(StoredJson::ok)
    }
}

/// True when `e` is a value that could not be decoded (not a failure of the database).
fn is_decode(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_))
}

pub(super) const COLUMNS: &str = "seq, id, client, idempotency_key, request_hash, \
     order_reference, event, payload, status, attempts, errors, result, response_status, \
     response_body, received_at, processed_at, next_attempt_at, park_until, lease_owner, \
     lease_until";

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
    /// The response to replay for a repeat, when it is known at insert time (async mode).
    pub response: Option<(u16, Value)>,
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

/// The filter of [`UpdateFilter`] over `$1`..`$5`; the caller binds status, order
/// reference, event, received after and received before, in that order.
const FILTER: &str = "($1 IS NULL OR status = $1) AND ($2 IS NULL OR order_reference = $2) \
     AND ($3 IS NULL OR event = $3) AND ($4 IS NULL OR received_at >= $4) \
     AND ($5 IS NULL OR received_at < $5)";

/// Statuses an operator may retry.
/// [`UpdateStatus::RETRYABLE`] as an SQL list (a test keeps the two the same).
const RETRYABLE: &str = "('dead', 'rejected', 'ignored', 'parked')";

/// The claim predicate over `r` (`$1` = now). Processing rows past their lease are claimed
/// again as they are; any other row only when nothing of its order is processing and no
/// earlier update of its order is still waiting.
const CLAIMABLE: &str = "r.status IN ('accepted', 'parked', 'processing') \
     AND r.next_attempt_at <= $1 \
     AND (r.status = 'processing' OR NOT EXISTS ( \
         SELECT 1 FROM inbox o \
         WHERE o.order_reference = r.order_reference \
           AND o.status IN ('accepted', 'parked', 'processing') \
           AND o.seq <> r.seq \
           AND (o.status = 'processing' \
                OR (o.seq < r.seq AND (o.status = 'accepted' \
                    OR (o.status = 'parked' AND o.next_attempt_at <= $1))))))";

impl Store {
    /// Stores updates in one transaction (one commit, one fsync, for the whole group), in
    /// order. A repeated `(client, idempotency_key)` stores nothing and returns the row
    /// stored first, also when the repeat is in the same group.
    pub async fn insert_updates(&self, updates: &[NewUpdate]) -> Result<Vec<Stored>> {
        let mut tx = self.begin().await?;
        let inserted = tx.insert_updates(updates).await?;
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            if let Some(seq) = inserted.get(&u.id) {
                out.push(Stored::New(*seq));
                continue;
            }
            let sql =
                format!("SELECT {COLUMNS} FROM inbox WHERE client = $1 AND idempotency_key = $2");
            let row: UpdateRow = on_tx!(&mut tx, |c| {
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(&u.client)
                    .bind(&u.idempotency_key)
                    .fetch_one(c)
                    .await
            })?;
            out.push(Stored::Existing(Box::new(row)));
        }
        tx.commit().await?;
        Ok(out)
    }

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

    /// Claims up to `limit` due updates for `owner` until `lease_until`: at most one per
    /// order, each the next of its order. Each claim counts as an attempt.
    pub async fn claim_updates(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<UpdateRow>> {
        let mut tx = self.begin().await?;
        let rows = tx.claim(None, now, limit, owner, lease_until).await?;
        tx.commit().await?;
        metrics::counter!("orderflow_inbox_attempts_total").increment(rows.len() as u64);
        Ok(rows)
    }

    /// Claims the update `seq` if it is due and next of its order (wait mode processes it
    /// inline then); `None` when it must wait for the worker.
    pub async fn claim_update(
        &self,
        seq: i64,
        now: DateTime<Utc>,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<UpdateRow>> {
        let mut tx = self.begin().await?;
        let rows = tx.claim(Some(seq), now, 1, owner, lease_until).await?;
        tx.commit().await?;
        metrics::counter!("orderflow_inbox_attempts_total").increment(rows.len() as u64);
        Ok(rows.into_iter().next())
    }

    /// Stores the first response to replay for the update, unless one is stored already;
    /// returns the one that is stored.
    pub async fn set_response(&self, seq: i64, status: u16, body: &Value) -> Result<(u16, Value)> {
        const SQL: &str = "UPDATE inbox SET response_status = $2, response_body = $3 \
             WHERE seq = $1 AND response_status IS NULL";
        const READ: &str = "SELECT response_status, response_body FROM inbox WHERE seq = $1";
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(SQL)
                .bind(seq)
                .bind(i32::from(status))
                .bind(Json(body))
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let (s, b): (Option<i32>, Option<Json<Value>>) = on_tx!(&mut tx, |c| {
            sqlx::query_as(READ).bind(seq).fetch_one(c).await
        })?;
        tx.commit().await?;
        Ok((
            s.and_then(|s| u16::try_from(s).ok()).unwrap_or(status),
            b.map_or_else(|| body.clone(), |b| b.0),
        ))
    }

    /// Frees idempotency keys of updates received before `before`; returns how many.
    pub async fn expire_keys(&self, before: DateTime<Utc>) -> Result<u64> {
        const SQL: &str = "UPDATE inbox SET idempotency_key = NULL \
             WHERE received_at < $1 AND idempotency_key IS NOT NULL";
        let mut tx = self.begin().await?;
        let n = on_tx!(&mut tx, |c| {
            sqlx::query(SQL)
                .bind(before)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(n)
    }

    /// Updates matching `filter`, in receive order.
    pub async fn list_updates(&self, filter: &UpdateFilter) -> Result<Vec<UpdateRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM inbox WHERE {FILTER} AND seq > $6 ORDER BY seq LIMIT $7"
        );
        Ok(on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(filter.status)
                .bind(&filter.order_reference)
                .bind(&filter.event)
                .bind(filter.received_after)
                .bind(filter.received_before)
                .bind(filter.after_seq.unwrap_or(0))
                .bind(filter.limit)
                .fetch_all(p)
                .await
        })?)
    }

    /// How many updates match `filter` (paging and limit ignored), and how many of them an
    /// operator could retry.
    pub async fn count_updates(&self, filter: &UpdateFilter) -> Result<(i64, i64)> {
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status IN {RETRYABLE} THEN 1 ELSE 0 END), 0) \
             FROM inbox WHERE {FILTER}"
        );
        let (matched, retryable): (i64, i64) = on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(filter.status)
                .bind(&filter.order_reference)
                .bind(&filter.event)
                .bind(filter.received_after)
                .bind(filter.received_before)
                .fetch_one(p)
                .await
        })?;
        Ok((matched, retryable))
    }

    /// Counts by status and the receive time of the oldest update not yet finished.
    pub async fn inbox_stats(&self) -> Result<(Vec<(String, i64)>, Option<DateTime<Utc>>)> {
        const COUNTS: &str = "SELECT status, COUNT(*) FROM inbox GROUP BY status ORDER BY status";
        const OLDEST: &str = "SELECT MIN(received_at) FROM inbox \
             WHERE status IN ('accepted', 'parked', 'processing')";
        let counts: Vec<(String, i64)> =
            on_reader!(self, |p| sqlx::query_as(COUNTS).fetch_all(p).await)?;
        let oldest: Option<DateTime<Utc>> =
            on_reader!(self, |p| sqlx::query_scalar(OLDEST).fetch_one(p).await)?;
        Ok((counts, oldest))
    }

    /// Makes a finished or waiting update due now again (`inbox retry`, admin retry):
    /// dead, rejected, ignored and parked updates go back to `accepted`, with their attempt
    /// history kept and an `operator_retry` entry appended to it (from there on the update
    /// has a fresh set of attempts and a fresh park time limit). Applied, accepted or
    /// processing updates are left alone; returns the row if it was moved.
    pub async fn retry_update(&self, id: &str, now: DateTime<Utc>) -> Result<Option<UpdateRow>> {
        let mut tx = self.begin().await?;
        let set = retry_set(&tx);
        let sql = format!(
            "UPDATE inbox SET {set} WHERE id = $3 AND status IN {RETRYABLE} RETURNING {COLUMNS}"
        );
        let marker = retry_marker(now);
        let row: Option<UpdateRow> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(now)
                .bind(Json(&marker))
                .bind(id)
                .fetch_optional(c)
                .await
        })?;
        if row.is_some() {
            tx.notify_inbox().await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Retries the retryable updates among the next `filter.limit` matches after
    /// `filter.after_seq`, in one transaction (see [`Store::retry_update`]). The caller
    /// pages on with the returned `last_seq`.
    pub async fn retry_page(&self, filter: &UpdateFilter, now: DateTime<Utc>) -> Result<RetryPage> {
        let mut tx = self.begin().await?;
        let select = format!(
            "SELECT seq, status FROM inbox WHERE {FILTER} AND seq > $6 ORDER BY seq LIMIT $7"
        );
        let page: Vec<(i64, UpdateStatus)> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(select))
                .bind(filter.status)
                .bind(&filter.order_reference)
                .bind(&filter.event)
                .bind(filter.received_after)
                .bind(filter.received_before)
                .bind(filter.after_seq.unwrap_or(0))
                .bind(filter.limit)
                .fetch_all(c)
                .await
        })?;
        let Some(&(last_seq, _)) = page.last() else {
            return Ok(RetryPage::default());
        };
        let seqs: Vec<i64> = page
            .iter()
            .filter(|(_, status)| UpdateStatus::RETRYABLE.contains(status))
            .map(|(seq, _)| *seq)
            .collect();
        let mut retried = 0;
        if !seqs.is_empty() {
            // The status is checked again: on PostgreSQL a worker may have claimed a parked
            // row since the SELECT.
            let placeholders: Vec<String> =
                (0..seqs.len()).map(|i| format!("${}", i + 3)).collect();
            let update = format!(
                "UPDATE inbox SET {} WHERE status IN {RETRYABLE} AND seq IN ({})",
                retry_set(&tx),
                placeholders.join(", ")
            );
            let marker = retry_marker(now);
            retried = on_tx!(&mut tx, |c| {
                let mut q = sqlx::query(AssertSqlSafe(update))
                    .bind(now)
                    .bind(Json(&marker));
                for s in &seqs {
                    q = q.bind(*s);
                }
                q.execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        if retried > 0 {
            tx.notify_inbox().await?;
        }
        tx.commit().await?;
        Ok(RetryPage {
            matched: page.len() as u64,
            retried,
            last_seq: Some(last_seq),
        })
    }
}

/// What [`Store::retry_page`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryPage {
    /// Rows of the page that matched the filter.
    pub matched: u64,
    /// Of those, the ones moved back to `accepted`.
    pub retried: u64,
    /// Where the next page starts; `None` when there was nothing left.
    pub last_seq: Option<i64>,
}

/// The error-history entry an operator's retry appends; `attempt` and `from` (the status
/// it had) are filled in per row.
pub const RETRY_CODE: &str = "operator_retry";

fn retry_marker(now: DateTime<Utc>) -> Value {
    serde_json::json!({
        "at": now,
        "code": RETRY_CODE,
        "message": "retried by an operator: attempts and park time start again",
    })
}

/// The SET clause of a retry (`$1` = now, `$2` = the marker): back to `accepted`, due now,
/// lease and park limit cleared, the marker appended to `errors`.
fn retry_set(tx: &Tx) -> &'static str {
    match tx {
        Tx::Sqlite(_) => {
            "status = 'accepted', next_attempt_at = $1, park_until = NULL, lease_owner = NULL, \
             lease_until = NULL, processed_at = NULL, errors = json_insert(errors, '$[#]', \
             json_set(json($2), '$.attempt', attempts, '$.from', status))"
        }
        Tx::Postgres(_) => {
            "status = 'accepted', next_attempt_at = $1, park_until = NULL, lease_owner = NULL, \
             lease_until = NULL, processed_at = NULL, errors = errors || jsonb_build_array(\
             CAST($2 AS JSONB) || jsonb_build_object('attempt', attempts, 'from', status))"
        }
    }
}

impl Tx {
    /// Wakes workers in other processes (PostgreSQL `NOTIFY`, delivered at commit).
    async fn notify_inbox(&mut self) -> Result<()> {
        if let Tx::Postgres(t) = self {
            sqlx::query("SELECT pg_notify('orderflow_inbox', '')")
                .execute(&mut **t)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Gives back the updates `owner` still holds (shutdown past its grace period): due at
    /// once for any worker.
    pub async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        const SQL: &str = "UPDATE inbox SET status = 'accepted', next_attempt_at = $2, \
             lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status = 'processing'";
        let mut tx = self.begin().await?;
        let n = on_tx!(&mut tx, |c| {
            sqlx::query(SQL)
                .bind(owner)
                .bind(now)
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
    /// returns the `seq` of each inserted one by id. On PostgreSQL workers are notified
    /// at commit.
    pub async fn insert_updates(
        &mut self,
        updates: &[NewUpdate],
    ) -> Result<std::collections::HashMap<String, i64>> {
        let mut inserted = std::collections::HashMap::new();
        for chunk in updates.chunks(INSERT_CHUNK) {
            let sql = match self {
                Tx::Sqlite(_) => insert_sql(chunk.len(), |_| SQLITE_ROW.to_owned()),
                Tx::Postgres(_) => insert_sql(chunk.len(), postgres_row),
            };
            let ids: Vec<(String, i64)> = on_tx!(&mut *self, |c| {
                bind_updates!(sqlx::query_as(AssertSqlSafe(sql.clone())), chunk)
                    .fetch_all(c)
                    .await
            })?;
            inserted.extend(ids);
        }
        if let Tx::Postgres(t) = self
            && !inserted.is_empty()
        {
            sqlx::query("SELECT pg_notify('orderflow_inbox', '')")
                .execute(&mut **t)
                .await?;
        }
        Ok(inserted)
    }

    /// The updates [`Store::claim_updates`] would claim, read but not marked: for a
    /// transaction that processes and finishes them itself, so holds them until it commits
    /// (SQLite: the worker claims and processes a batch in one transaction, see
    /// `Inbox::process_next_batch`). At most one per order, in `seq` order.
    pub async fn due_updates(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<UpdateRow>> {
        let index = match self {
            Tx::Sqlite(_) => " INDEXED BY inbox_due",
            Tx::Postgres(_) => "",
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM inbox r{index} WHERE {CLAIMABLE} \
             ORDER BY r.next_attempt_at, r.seq LIMIT $2"
        );
        let read: Result<Vec<UpdateRow>, sqlx::Error> = on_tx!(&mut *self, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(now)
                .bind(limit)
                .fetch_all(c)
                .await
        });
        let rows = match read {
            Err(e) if is_decode(&e) => {
                let sql = format!(
                    "SELECT r.seq FROM inbox r{index} WHERE {CLAIMABLE} \
                     ORDER BY r.next_attempt_at, r.seq LIMIT $2"
                );
                let seqs: Vec<i64> = on_tx!(&mut *self, |c| {
                    sqlx::query_scalar(AssertSqlSafe(sql))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(c)
                        .await
                })?;
                self.read_isolating(&seqs, now, 1).await?
            }
            read => read?,
        };
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<UpdateRow> = rows
            .into_iter()
            .filter(|r| seen.insert(r.order_reference.clone()))
            .collect();
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Reads updates `seqs` one at a time, after reading them together failed to decode a
    /// row: a row that cannot be read is set `dead` with the decoder's error (`attempt`
    /// more attempts counted: 1 when it was not claimed yet) and left out, so one bad row
    /// never stops the batch, nor the worker for every other order.
    async fn read_isolating(
        &mut self,
        seqs: &[i64],
        now: DateTime<Utc>,
        attempt: i32,
    ) -> Result<Vec<UpdateRow>> {
        let lock = match self {
            Tx::Postgres(_) => " FOR UPDATE",
            Tx::Sqlite(_) => "",
        };
        let read = format!("SELECT {COLUMNS} FROM inbox WHERE seq = $1{lock}");
        let mut rows = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            let row: Result<Option<UpdateRow>, sqlx::Error> = on_tx!(&mut *self, |c| {
                sqlx::query_as(AssertSqlSafe(read.as_str()))
                    .bind(seq)
                    .fetch_optional(c)
                    .await
            });
            match row {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => {}
                Err(e) if is_decode(&e) => {
                    tracing::error!(seq, error = %e, "inbox row cannot be read; it is dead");
                    metrics::counter!("orderflow_inbox_unreadable_total").increment(1);
                    self.bury(seq, now, attempt, &e.to_string()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(rows)
    }

    /// Sets update `seq` `dead` without reading it, appending `message` to its errors.
    async fn bury(
        &mut self,
        seq: i64,
        now: DateTime<Utc>,
        attempt: i32,
        message: &str,
    ) -> Result<()> {
        let entry = serde_json::json!({
            "at": now,
            "code": "unreadable_row",
            "message": format!("the stored row cannot be read: {message}"),
        });
        let errors = match self {
            Tx::Postgres(_) => "errors || jsonb_build_array($4::jsonb)",
            Tx::Sqlite(_) => {
                "CASE WHEN json_valid(errors) AND json_type(errors) = 'array' \
                 THEN json_insert(errors, '$[#]', json($4)) ELSE json_array(json($4)) END"
            }
        };
        let sql = format!(
            "UPDATE inbox SET status = 'dead', attempts = attempts + $3, errors = {errors}, \
             processed_at = $2, next_attempt_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE seq = $1"
        );
        on_tx!(&mut *self, |c| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(seq)
                .bind(now)
                .bind(attempt)
                .bind(Json(&entry))
                .execute(c)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    async fn claim(
        &mut self,
        only: Option<i64>,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<UpdateRow>> {
        let only_sql = if only.is_some() { "AND r.seq = $3" } else { "" };
        let (from, lock) = match self {
            // Walk the due index in claim order and stop at the limit. Left to itself,
            // SQLite's planner (no statistics) picks the status index, checks the order
            // rule for every waiting update and sorts them all: each claim then costs time
            // in proportion to the backlog. One update by seq is found by its key.
            Tx::Sqlite(_) if only.is_none() => ("inbox r INDEXED BY inbox_due", ""),
            Tx::Sqlite(_) => ("inbox r", ""),
            Tx::Postgres(_) => ("inbox r", " FOR UPDATE OF r SKIP LOCKED"),
        };
        let select = format!(
            "SELECT r.seq, r.order_reference FROM {from} WHERE {CLAIMABLE} {only_sql} \
             ORDER BY r.next_attempt_at, r.seq LIMIT $2{lock}"
        );
        if let Tx::Postgres(t) = self {
            // One claim at a time: each decides on a snapshot that sees every claim before.
            // And walk the due index in claim order, stopping at the limit: without fresh
            // statistics (a burst into an idle inbox) the planner expects a few due rows,
            // reads them all with a bitmap scan and sorts them, so each claim would cost
            // time in proportion to the backlog. Both settings end with the transaction.
            sqlx::raw_sql(
                "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; \
                 SELECT pg_advisory_xact_lock(7036111)",
            )
            .execute(&mut **t)
            .await?;
        }
        let candidates: Vec<(i64, String)> = on_tx!(&mut *self, |c| {
            let q = sqlx::query_as(AssertSqlSafe(select)).bind(now).bind(limit);
            match only {
                Some(seq) => q.bind(seq).fetch_all(c).await,
                None => q.fetch_all(c).await,
            }
        })?;
        // At most one update per order in one claim: the first is the next of its order.
        let mut seen = std::collections::HashSet::new();
        let seqs: Vec<i64> = candidates
            .into_iter()
            .filter(|(_, r)| seen.insert(r.clone()))
            .map(|(s, _)| s)
            .collect();
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        const SET: &str = "UPDATE inbox SET status = 'processing', lease_owner = $1, \
             lease_until = $2, next_attempt_at = $2, attempts = attempts + 1";
        let claimed: Result<Vec<UpdateRow>, sqlx::Error> = match self {
            Tx::Postgres(t) => {
                let sql = format!("{SET} WHERE seq = ANY($3) RETURNING {COLUMNS}");
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(owner)
                    .bind(lease_until)
                    .bind(&seqs)
                    .fetch_all(&mut **t)
                    .await
            }
            Tx::Sqlite(t) => {
                let sql = format!(
                    "{SET} WHERE seq IN (SELECT value FROM json_each($3)) RETURNING {COLUMNS}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(owner)
                    .bind(lease_until)
                    .bind(Json(&seqs))
                    .fetch_all(&mut **t)
                    .await
            }
        };
        // The rows are claimed (the statement ran); only reading one of them back failed.
        let mut rows = match claimed {
            Err(e) if is_decode(&e) => self.read_isolating(&seqs, now, 0).await?,
            claimed => claimed?,
        };
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Reads the update and holds it until commit; `None` unless `owner` still holds its
    /// lease (a worker that overran its lease must not finish an update someone else took).
    pub async fn lock_claimed(&mut self, seq: i64, owner: &str) -> Result<Option<UpdateRow>> {
        Ok(self.lock_claimed_many(&[seq], owner).await?.pop())
    }

    /// [`Tx::lock_claimed`] for several updates, in `seq` order: those `owner` still holds.
    pub async fn lock_claimed_many(&mut self, seqs: &[i64], owner: &str) -> Result<Vec<UpdateRow>> {
        let read: Result<Vec<UpdateRow>, sqlx::Error> = match self {
            Tx::Postgres(t) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM inbox WHERE seq = ANY($1) ORDER BY seq FOR UPDATE"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(seqs)
                    .fetch_all(&mut **t)
                    .await
            }
            Tx::Sqlite(t) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM inbox \
                     WHERE seq IN (SELECT value FROM json_each($1)) ORDER BY seq"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(Json(seqs))
                    .fetch_all(&mut **t)
                    .await
            }
        };
        let rows = match read {
            Err(e) if is_decode(&e) => self.read_isolating(seqs, super::now(), 0).await?,
            read => read?,
        };
        Ok(rows
            .into_iter()
            .filter(|r| {
                r.status == UpdateStatus::Processing && r.lease_owner.as_deref() == Some(owner)
            })
            .collect())
    }

    /// Ends attempts: new status, result, errors, and the leases released. One statement
    /// for all of them.
    pub async fn finish_updates(&mut self, finishes: &[Finish]) -> Result<()> {
        if finishes.is_empty() {
            return Ok(());
        }
        const SET: &str = "status = v.status, attempts = v.attempts, \
             result = COALESCE(v.result, inbox.result), \
             errors = COALESCE(v.errors, inbox.errors), next_attempt_at = v.next_attempt_at, \
             park_until = v.park_until, processed_at = v.processed_at, \
             lease_owner = NULL, lease_until = NULL";
        let f = finishes;
        match self {
            Tx::Postgres(t) => {
                let sql = format!(
                    "UPDATE inbox SET {SET} FROM UNNEST($1::int8[], $2::text[], $3::int4[], \
                     $4::jsonb[], $5::jsonb[], $6::timestamptz[], $7::timestamptz[], \
                     $8::timestamptz[]) AS v(seq, status, attempts, result, errors, \
                     next_attempt_at, park_until, processed_at) WHERE inbox.seq = v.seq"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(f.iter().map(|x| x.seq).collect::<Vec<_>>())
                    .bind(f.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
                    .bind(f.iter().map(|x| x.attempts).collect::<Vec<_>>())
                    .bind(
                        f.iter()
                            .map(|x| x.result.as_ref().map(Json))
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        f.iter()
                            .map(|x| x.errors.as_ref().map(Json))
                            .collect::<Vec<_>>(),
                    )
                    .bind(f.iter().map(|x| x.next_attempt_at).collect::<Vec<_>>())
                    .bind(f.iter().map(|x| x.park_until).collect::<Vec<_>>())
                    .bind(f.iter().map(|x| x.processed_at).collect::<Vec<_>>())
                    .execute(&mut **t)
                    .await?;
            }
            Tx::Sqlite(t) => {
                for chunk in f.chunks(INSERT_CHUNK) {
                    // SQLite names the columns of a VALUES list column1, column2, ...
                    let sql = format!(
                        "UPDATE inbox SET {} FROM (SELECT column1 AS seq, column2 AS status, \
                         column3 AS attempts, column4 AS result, column5 AS errors, \
                         column6 AS next_attempt_at, column7 AS park_until, \
                         column8 AS processed_at FROM (VALUES {})) AS v \
                         WHERE inbox.seq = v.seq",
                        SET,
                        placeholders(chunk.len(), 8)
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for x in chunk {
                        q = q
                            .bind(x.seq)
                            .bind(x.status)
                            .bind(x.attempts)
                            .bind(x.result.as_ref().map(Json))
                            .bind(x.errors.as_ref().map(Json))
                            .bind(x.next_attempt_at)
                            .bind(x.park_until)
                            .bind(x.processed_at);
                    }
                    q.execute(&mut **t).await?;
                }
            }
        }
        Ok(())
    }

    /// [`Tx::wake_parked`] for several orders at once.
    pub async fn wake_parked_many(
        &mut self,
        references: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let n = match self {
            Tx::Postgres(t) => sqlx::query(
                "UPDATE inbox SET next_attempt_at = $2 WHERE order_reference = ANY($1) \
                     AND status = 'parked' AND next_attempt_at > $2",
            )
            .bind(references)
            .bind(now)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            Tx::Sqlite(t) => sqlx::query(
                "UPDATE inbox SET next_attempt_at = $2 \
                     WHERE order_reference IN (SELECT value FROM json_each($1)) \
                     AND status = 'parked' AND next_attempt_at > $2",
            )
            .bind(Json(references))
            .bind(now)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        };
        if n > 0
            && let Tx::Postgres(t) = self
        {
            sqlx::query("SELECT pg_notify('orderflow_inbox', '')")
                .execute(&mut **t)
                .await?;
        }
        Ok(n)
    }

    /// Makes the parked updates of an order due now: the order was created or changed, so
    /// they may apply. Returns how many.
    pub async fn wake_parked(&mut self, reference: &str, now: DateTime<Utc>) -> Result<u64> {
        const SQL: &str = "UPDATE inbox SET next_attempt_at = $2 \
             WHERE order_reference = $1 AND status = 'parked' AND next_attempt_at > $2";
        let n = on_tx!(&mut *self, |c| {
            sqlx::query(SQL)
                .bind(reference)
                .bind(now)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        if n > 0
            && let Tx::Postgres(t) = self
        {
            sqlx::query("SELECT pg_notify('orderflow_inbox', '')")
                .execute(&mut **t)
                .await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_list_of_retryable_statuses_is_the_enum_s() {
        let names: Vec<String> = UpdateStatus::RETRYABLE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(RETRYABLE, format!("({})", names.join(", ")));
    }
}
