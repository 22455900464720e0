//! After-commit effects of kind [`KIND`] (HTTP commands): written with the change that
//! caused them (`domain::plan`), claimed by the effects executor under a lease, finished
//! with the attempt that settled them.
//!
//! Claiming keeps two rules on both backends, as the inbox does:
//! - an effect is claimed only when no earlier effect of its order is still `pending` or
//!   `running`: the effects of one order run one at a time, in creation order (`id`);
//! - a claim sets `next_attempt_at` to the lease's end, so an effect whose executor died is
//!   due again when the lease runs out.
//!
//! The claim commits before the request is sent (no transaction is held across a network
//! call); PostgreSQL claims skip rows another claim holds (`SKIP LOCKED`), SQLite's single
//! writer serialises them. Finishing checks the lease is still the finisher's.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::json::StoredJson;
use super::{List, Result, Store, Tx, on_reader, on_tx};

/// The `effects.kind` of an HTTP command's call: the rows the executor runs.
pub const KIND: &str = "http";

/// Every column the executor and the admin API read.
const COLUMNS: &str = "id, order_id, order_version, kind, payload, created_at, done_at, \
     status, attempts, next_attempt_at, lease_owner, lease_until, last_error";

/// The claim predicate over `r` (`$1` = now): due, and no earlier effect of its order
/// still open. A `running` row is due again only when its lease has run out.
const CLAIMABLE: &str = "r.kind = 'http' AND r.status IN ('pending', 'running') \
     AND r.next_attempt_at <= $1 \
     AND NOT EXISTS (SELECT 1 FROM effects o \
         WHERE o.order_id = r.order_id AND o.kind = 'http' \
           AND o.status IN ('pending', 'running') AND o.id < r.id)";

/// One effect row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EffectRow {
    pub id: i64,
    pub order_id: i64,
    pub order_version: i64,
    pub kind: String,
    pub payload: StoredJson<Value>,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    /// `pending`, `running`, `done` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// One recorded attempt.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub excerpt: Option<String>,
    pub error: Option<String>,
}

/// How an attempt ends for its effect.
#[derive(Clone, Debug)]
pub enum Settle {
    Done,
    /// Due again at this time.
    Retry(DateTime<Utc>),
    Dead,
}

impl Settle {
    fn status(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retry(_) => "pending",
            Self::Dead => "dead",
        }
    }
}

/// Which effects to list: by status and order, after an id (keyset paging).
#[derive(Clone, Debug, Default)]
pub struct EffectFilter {
    pub status: Option<String>,
    pub order_id: Option<i64>,
    pub after_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Claims up to `limit` due effects for `owner` until `lease_until`, at most one per
    /// order, each the next of its order. Each claim counts as an attempt.
    pub async fn claim_effects(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<EffectRow>> {
        // Most polls find nothing: ask a reader first, so an idle executor never takes
        // SQLite's one writer.
        let probe = format!("SELECT r.id FROM effects r WHERE {CLAIMABLE} LIMIT 1");
        let any: Option<i64> = on_reader!(self, |p| {
            sqlx::query_scalar(AssertSqlSafe(probe))
                .bind(now)
                .fetch_optional(p)
                .await
        })?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let d = self.dialect();
        let select = format!(
            "SELECT r.id, r.order_id FROM effects r WHERE {CLAIMABLE} \
             ORDER BY r.next_attempt_at, r.id LIMIT $2{}",
            d.claim_lock
        );
        let mut tx = self.begin().await?;
        let candidates: Vec<(i64, i64)> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(select))
                .bind(now)
                .bind(limit)
                .fetch_all(c)
                .await
        })?;
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<i64> = candidates
            .into_iter()
            .filter(|(_, order)| seen.insert(*order))
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE effects SET status = 'running', lease_owner = $1, lease_until = $2, \
             next_attempt_at = $2, attempts = attempts + 1 WHERE {} RETURNING {COLUMNS}",
            d.in_list("id", 3)
        );
        let mut rows: Vec<EffectRow> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(owner)
                .bind(lease_until)
                .bind(List(&ids))
                .fetch_all(c)
                .await
        })?;
        tx.commit().await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Gives back the effects `owner` still holds (shutdown): due at once for anyone.
    pub async fn release_effects(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        const SQL: &str = "UPDATE effects SET status = 'pending', next_attempt_at = $2, \
             lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status = 'running'";
        let mut tx = self.begin().await?;
        let n = on_tx!(&mut tx, |c| {
            sqlx::query(SQL)
                .bind(owner)
                .bind(now)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.raised.effects |= n > 0;
        tx.commit().await?;
        Ok(n)
    }

    pub async fn effect(&self, id: i64) -> Result<Option<EffectRow>> {
        let sql = format!("SELECT {COLUMNS} FROM effects WHERE id = $1");
        let row = on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(p)
                .await
        })?;
        Ok(row)
    }

    /// Effects in creation order by filter, at most `filter.limit`.
    pub async fn list_effects(&self, f: &EffectFilter) -> Result<Vec<EffectRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM effects WHERE ($1 IS NULL OR status = $1) \
             AND ($2 IS NULL OR order_id = $2) AND id > $3 ORDER BY id LIMIT $4"
        );
        let rows = on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(f.status.as_deref())
                .bind(f.order_id)
                .bind(f.after_id.unwrap_or(0))
                .bind(f.limit)
                .fetch_all(p)
                .await
        })?;
        Ok(rows)
    }

    /// Every attempt of effect `id`, in order.
    pub async fn effect_attempts(&self, id: i64) -> Result<Vec<AttemptRow>> {
        const SQL: &str = "SELECT attempt, at, status_code, latency_ms, excerpt, error \
             FROM effect_attempts WHERE effect_id = $1 ORDER BY id";
        let rows = on_reader!(self, |p| {
            sqlx::query_as(SQL).bind(id).fetch_all(p).await
        })?;
        Ok(rows)
    }

    /// How many HTTP command effects have `status` (a range of the status index).
    pub async fn effect_count(&self, status: &str) -> Result<i64> {
        const SQL: &str = "SELECT COUNT(*) FROM effects WHERE status = $1 AND kind = 'http'";
        Ok(on_reader!(self, |p| sqlx::query_scalar(SQL)
            .bind(status)
            .fetch_one(p)
            .await)?)
    }

    /// Makes a dead effect pending and due now, with a fresh set of attempts (its recorded
    /// attempts are kept). `None` when there is no such effect; the row as it is when it
    /// is not dead.
    pub async fn retry_effect(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<(EffectRow, bool)>> {
        let sql = format!(
            "UPDATE effects SET status = 'pending', attempts = 0, next_attempt_at = $2, \
             done_at = NULL, lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND status = 'dead' AND kind = 'http' RETURNING {COLUMNS}"
        );
        let mut tx = self.begin().await?;
        let row: Option<EffectRow> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(id)
                .bind(now)
                .fetch_optional(c)
                .await
        })?;
        tx.raised.effects |= row.is_some();
        tx.commit().await?;
        match row {
            Some(r) => Ok(Some((r, true))),
            None => Ok(self.effect(id).await?.map(|r| (r, false))),
        }
    }
}

/// One attempt to record.
#[derive(Clone, Debug)]
pub struct NewAttempt<'a> {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub excerpt: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl Tx {
    /// Records attempt `a` of effect `id` and, when `owner` still holds its lease, settles
    /// the effect. Returns whether it was settled (false: the lease was lost, and whoever
    /// holds it now settles it).
    pub async fn finish_effect(
        &mut self,
        id: i64,
        owner: &str,
        a: &NewAttempt<'_>,
        settle: &Settle,
    ) -> Result<bool> {
        const INSERT: &str = "INSERT INTO effect_attempts \
             (effect_id, attempt, at, status_code, latency_ms, excerpt, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_tx!(&mut *self, |c| {
            sqlx::query(INSERT)
                .bind(id)
                .bind(a.attempt)
                .bind(a.at)
                .bind(a.status_code.map(i32::from))
                .bind(a.latency_ms)
                .bind(a.excerpt)
                .bind(a.error)
                .execute(c)
                .await
                .map(|_| ())
        })?;
        const SETTLE: &str = "UPDATE effects SET status = $3, next_attempt_at = $4, \
             done_at = $5, last_error = $6, lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'";
        let (next, done_at) = match settle {
            Settle::Retry(at) => (*at, None),
            Settle::Done | Settle::Dead => (a.at, Some(a.at)),
        };
        let n = on_tx!(&mut *self, |c| {
            sqlx::query(SETTLE)
                .bind(id)
                .bind(owner)
                .bind(settle.status())
                .bind(next)
                .bind(done_at)
                .bind(a.error)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        // The next effect of the order may be due now; a retry is due later (the poll).
        self.raised.effects |= n > 0;
        Ok(n > 0)
    }
}
