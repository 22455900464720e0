//! What operators do with the inbox: list and count by filter, stats, retry one update or
//! a page of them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::{COLUMNS, UpdateFilter, UpdateRow, UpdateStatus};
use crate::store::{List, Result, Store, on_reader, on_tx};
use sqlx::types::Json;

/// The filter of [`UpdateFilter`] over `$1`..`$5`; the caller binds status, order
/// reference, event, received after and received before, in that order.
const FILTER: &str = "($1 IS NULL OR status = $1) AND ($2 IS NULL OR order_reference = $2) \
     AND ($3 IS NULL OR event = $3) AND ($4 IS NULL OR received_at >= $4) \
     AND ($5 IS NULL OR received_at < $5)";

/// Statuses an operator may retry.
/// [`UpdateStatus::RETRYABLE`] as an SQL list (a test keeps the two the same).
const RETRYABLE: &str = "('dead', 'rejected', 'ignored', 'parked')";

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

/// Binds an [`UpdateFilter`] to `$1`..`$5` of [`FILTER`]; with `page`, its paging to `$6`
/// and `$7` as well.
macro_rules! bind_filter {
    ($q:expr, $f:expr) => {
        $q.bind($f.status)
            .bind(&$f.order_reference)
            .bind(&$f.event)
            .bind($f.received_after)
            .bind($f.received_before)
    };
    ($q:expr, $f:expr, page) => {
        bind_filter!($q, $f)
            .bind($f.after_seq.unwrap_or(0))
            .bind($f.limit)
    };
}

impl Store {
    /// Updates matching `filter`, in receive order.
    pub async fn list_updates(&self, filter: &UpdateFilter) -> Result<Vec<UpdateRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM inbox WHERE {FILTER} AND seq > $6 ORDER BY seq LIMIT $7"
        );
        Ok(on_reader!(self, |p| {
            bind_filter!(sqlx::query_as(AssertSqlSafe(sql)), filter, page)
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
            bind_filter!(sqlx::query_as(AssertSqlSafe(sql)), filter)
                .fetch_one(p)
                .await
        })?;
        Ok((matched, retryable))
    }

    /// Counts by status and the receive time of the oldest update not yet finished.
    pub async fn inbox_stats(&self) -> Result<(Vec<(String, i64)>, Option<DateTime<Utc>>)> {
        const COUNTS: &str = "SELECT status, COUNT(*) FROM inbox GROUP BY status ORDER BY status";
        let counts: Vec<(String, i64)> =
            on_reader!(self, |p| sqlx::query_as(COUNTS).fetch_all(p).await)?;
        Ok((counts, self.oldest_pending().await?))
    }

    /// How many updates have `status`: a range of the `inbox_status` index, so the count
    /// takes time in proportion to its result.
    pub async fn count_status(&self, status: UpdateStatus) -> Result<i64> {
        const SQL: &str = "SELECT COUNT(*) FROM inbox WHERE status = $1";
        Ok(on_reader!(self, |p| sqlx::query_scalar(SQL)
            .bind(status.as_str())
            .fetch_one(p)
            .await)?)
    }

    /// The receive time of the oldest update not yet finished: of each pending status, the
    /// first update in store order (`seq`), read at the start of its range of the
    /// `inbox_status` index, so three index probes whatever the backlog.
    ///
    /// Updates are stored in the order they arrive, so the first stored is the first
    /// received; an update whose receive time is older than its place in the store (a
    /// broker transport's redelivery, settled after later ones) counts from its place.
    /// The minimum of `received_at` over every pending row, as this read before, took a
    /// table row per pending update: with a backlog of 400,000 updates 55–140 ms of a core
    /// on every gauge refresh (every 5 s) and every `/metrics` scrape, and as long again for
    /// each scrape that timed out and left it running; on PostgreSQL without statistics, a
    /// walk of `inbox_received` past every finished update (218 ms at 1,000,000).
    pub async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        const OLDEST: &str = "SELECT MIN(received_at) FROM (\
             SELECT (SELECT received_at FROM inbox WHERE status = 'accepted' \
                 ORDER BY seq LIMIT 1) AS received_at \
             UNION ALL SELECT (SELECT received_at FROM inbox WHERE status = 'parked' \
                 ORDER BY seq LIMIT 1) \
             UNION ALL SELECT (SELECT received_at FROM inbox WHERE status = 'processing' \
                 ORDER BY seq LIMIT 1)) AS firsts";
        Ok(on_reader!(self, |p| sqlx::query_scalar(OLDEST)
            .fetch_one(p)
            .await)?)
    }

    /// Makes a finished or waiting update due now again (`inbox retry`, admin retry):
    /// dead, rejected, ignored and parked updates go back to `accepted`, with their attempt
    /// history kept and an `operator_retry` entry appended to it (from there on the update
    /// has a fresh set of attempts and a fresh park time limit). Applied, accepted or
    /// processing updates are left alone; returns the row if it was moved.
    pub async fn retry_update(&self, id: &str, now: DateTime<Utc>) -> Result<Option<UpdateRow>> {
        let mut tx = self.begin().await?;
        let set = tx.dialect().retry_set;
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
            tx.raise_inbox();
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
            bind_filter!(sqlx::query_as(AssertSqlSafe(select)), filter, page)
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
            let d = tx.dialect();
            let update = format!(
                "UPDATE inbox SET {} WHERE status IN {RETRYABLE} AND {}",
                d.retry_set,
                d.in_list("seq", 3)
            );
            let marker = retry_marker(now);
            retried = on_tx!(&mut tx, |c| {
                sqlx::query(AssertSqlSafe(update))
                    .bind(now)
                    .bind(Json(&marker))
                    .bind(List(&seqs))
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        if retried > 0 {
            tx.raise_inbox();
        }
        tx.commit().await?;
        Ok(RetryPage {
            matched: page.len() as u64,
            retried,
            last_seq: Some(last_seq),
        })
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
