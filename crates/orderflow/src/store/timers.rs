//! Timer queries for the check-condition worker: the due range in `(due_at, id)` order, an
//! order's due timers once the order is held, and rescheduling.
//!
//! Every query reaches timers through an index (`timers_due`, `timers_order_due` or the
//! primary key): a pass reads the rows that are due and never the ones that wait. On SQLite
//! `due_at` is RFC 3339 text with a `+00:00` offset (sqlx's encoding of `DateTime<Utc>`),
//! which sorts like the instant it names, so `due_at <= $1` is an index range there too.

use chrono::{DateTime, Utc};

use sqlx::AssertSqlSafe;

use super::orders::{OrderRow, order_sql};
use super::{List, Result, Store, TimerKind, Tx, on_reader, on_tx};

/// A due timer as the pass sees it before taking the order: where to continue and which
/// order to visit.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DueTimer {
    pub id: i64,
    pub order_id: i64,
    pub due_at: DateTime<Utc>,
}

/// A timer row of an order that is held by the transaction.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TimerRow {
    pub id: i64,
    pub item_id: i64,
    pub state: String,
    pub kind: TimerKind,
    pub event: Option<String>,
    pub due_at: DateTime<Utc>,
    /// Checks of this timer that moved nothing so far.
    pub attempts: i32,
}

/// Due timers after the cursor `($2, $3)`, oldest first: one index range on both backends.
const DUE: &str = "SELECT id, order_id, due_at FROM timers \
     WHERE due_at <= $1 AND (due_at, id) > ($2, $3) ORDER BY due_at, id LIMIT $4";

impl Store {
    /// Up to `limit` timers due at `now`, after `after` (`(due_at, id)` of the last timer
    /// seen; start with [`DueCursor::START`]).
    pub async fn due_timers(
        &self,
        now: DateTime<Utc>,
        after: DueCursor,
        limit: u32,
    ) -> Result<Vec<DueTimer>> {
        Ok(on_reader!(self, |p| sqlx::query_as(DUE)
            .bind(now)
            .bind(after.due_at)
            .bind(after.id)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?)
    }

    /// The plan of the due-timers query, one line per plan row (SQLite `EXPLAIN QUERY
    /// PLAN`, PostgreSQL `EXPLAIN`): shows that a pass reads the due index only.
    pub async fn explain_due_timers(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let start = DueCursor::START;
        let sql = format!("{}{DUE}", self.dialect().explain);
        Ok(on_reader!(self, |p| {
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(now)
                .bind(start.due_at)
                .bind(start.id)
                .bind(100_i64)
                .fetch_all(p)
                .await?;
            super::plan_lines(&rows)
        })?)
    }
}

/// Where a walk over the due range continues: after this `(due_at, id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueCursor {
    pub due_at: DateTime<Utc>,
    pub id: i64,
}

impl DueCursor {
    /// Before every timer (timer ids start at 1; no timer is due before 1970).
    pub const START: Self = Self {
        due_at: DateTime::UNIX_EPOCH,
        id: 0,
    };
}

impl From<&DueTimer> for DueCursor {
    fn from(t: &DueTimer) -> Self {
        Self {
            due_at: t.due_at,
            id: t.id,
        }
    }
}

impl Tx {
    /// [`Tx::lock_order`] that does not wait: `None` when another transaction holds the
    /// order (PostgreSQL `SKIP LOCKED`) or it does not exist. On SQLite the transaction is
    /// the only writer and never has to wait.
    pub async fn try_lock_order(&mut self, id: i64) -> Result<Option<OrderRow>> {
        let sql = order_sql("id", self.dialect().try_lock_order);
        Ok(on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    /// The order's timers due at `now`. Call with the order held: nothing else changes them
    /// until commit.
    pub async fn due_timers_of_order(
        &mut self,
        order_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<TimerRow>> {
        const SQL: &str = "SELECT id, item_id, state, kind, event, due_at, attempts FROM timers \
             WHERE order_id = $1 AND due_at <= $2 ORDER BY id";
        Ok(on_tx!(self, |c| sqlx::query_as(SQL)
            .bind(order_id)
            .bind(now)
            .fetch_all(c)
            .await)?)
    }

    /// Moves a timer that was checked without effect to `due_at` and counts the attempt.
    pub async fn reschedule_timer(&mut self, id: i64, due_at: DateTime<Utc>) -> Result<()> {
        const SQL: &str = "UPDATE timers SET due_at = $2, attempts = attempts + 1 WHERE id = $1";
        on_tx!(self, |c| sqlx::query(SQL)
            .bind(id)
            .bind(due_at)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Deletes one timer (set for a state its item has left).
    pub async fn delete_timer(&mut self, id: i64) -> Result<()> {
        const SQL: &str = "DELETE FROM timers WHERE id = $1";
        on_tx!(self, |c| sqlx::query(SQL)
            .bind(id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Makes these orders' condition timers due at `now` with their backoff reset: call
    /// after a change that can make an event-less transition's condition true
    /// (attributes), so the next pass checks at once instead of after the backoff. One
    /// statement for a batch's orders. Pass `now` from [`super::now`] (microseconds, as
    /// stored).
    pub async fn wake_condition_timers(
        &mut self,
        order_ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE timers SET due_at = $2, attempts = 0 \
             WHERE {} AND kind = $3 AND due_at > $2",
            self.dialect().in_list("order_id", 1)
        );
        on_tx!(self, |c| sqlx::query(AssertSqlSafe(sql))
            .bind(List(order_ids))
            .bind(now)
            .bind(TimerKind::Condition)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }
}
