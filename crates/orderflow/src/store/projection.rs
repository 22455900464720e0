//! The list projection: `order_list` (one row per order) and `order_list_terms` (its states
//! and SKUs, for filtering), fed from `change_feed` after a checkpoint.
//!
//! Consuming the feed in order is backend-specific (`Dialect::feed_after`). SQLite has one
//! writer, so `seq` order is commit order. On PostgreSQL a transaction that drew a lower
//! `seq` can commit after one with a higher `seq`; the feed is therefore read in `(tx, seq)`
//! order and only up to the oldest transaction still running (`pg_snapshot_xmin`), so no
//! late commit is skipped.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{List, Result, Store, Tx, on_reader, on_tx};

const CHECKPOINT: &str = "order_list";

/// What one projector step did.
#[derive(Clone, Debug, Default)]
pub struct Projected {
    /// Change-feed rows consumed.
    pub rows: usize,
    /// Distinct orders rewritten.
    pub orders: usize,
    /// When each consumed change was committed (for the lag metric).
    pub changed_at: Vec<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    seq: i64,
    tx: i64,
    order_id: i64,
    at: DateTime<Utc>,
}

/// A row of the list view.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ListRow {
    pub order_id: i64,
    pub reference: String,
    pub process: String,
    pub version: i64,
    pub states: Json<Vec<String>>,
    pub skus: Json<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of the list view; `after_id` is the keyset cursor (order ids only grow, so a
/// page boundary never moves under concurrent writes).
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub state: Option<String>,
    pub process: Option<String>,
    pub sku: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
    pub after_id: i64,
    pub limit: i64,
}

impl Store {
    /// Projects up to `limit` change-feed rows past the checkpoint and advances the
    /// checkpoint in the same transaction. Safe to run from several processes at once: the
    /// checkpoint row is locked (PostgreSQL) or the writer is held (SQLite).
    pub async fn project_batch(&self, limit: i64) -> Result<Projected> {
        let mut tx = self.begin().await?;
        let d = tx.dialect();
        let checkpoint = format!(
            "SELECT last_tx, last_seq FROM projector_checkpoint WHERE name = $1{}",
            d.lock_rows
        );
        let (last_tx, last_seq): (i64, i64) = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(checkpoint))
                .bind(CHECKPOINT)
                .fetch_one(c)
                .await
        })?;
        let rows: Vec<FeedRow> = on_tx!(&mut tx, |c| {
            sqlx::query_as(d.feed_after)
                .bind(last_tx)
                .bind(last_seq)
                .bind(limit)
                .fetch_all(c)
                .await
        })?;
        let Some(last) = rows.last() else {
            return Ok(Projected::default());
        };
        let (new_tx, new_seq) = (last.tx, last.seq);
        let mut orders: Vec<i64> = rows.iter().map(|r| r.order_id).collect();
        orders.sort_unstable();
        orders.dedup();
        project_orders(&mut tx, &orders).await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(
                "UPDATE projector_checkpoint SET last_tx = $2, last_seq = $3 WHERE name = $1",
            )
            .bind(CHECKPOINT)
            .bind(new_tx)
            .bind(new_seq)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(Projected {
            rows: rows.len(),
            orders: orders.len(),
            changed_at: rows.iter().map(|r| r.at).collect(),
        })
    }

    /// Change-feed rows the projector has not consumed yet, and when the oldest of them was
    /// committed (admin stats: how far the list view lags).
    pub async fn projection_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>)> {
        let sql = self.dialect().feed_backlog;
        Ok(on_reader!(self, |p| sqlx::query_as(sql)
            .bind(CHECKPOINT)
            .fetch_one(p)
            .await)?)
    }

    /// One page of the list view, ordered by order id.
    pub async fn list_orders(&self, f: &ListFilter) -> Result<Vec<ListRow>> {
        const SQL: &str = "SELECT l.order_id, l.reference, l.process, l.version, l.states, \
             l.skus, l.created_at, l.updated_at FROM order_list l \
             WHERE l.order_id > $1 \
               AND ($2 IS NULL OR l.process = $2) \
               AND ($3 IS NULL OR l.updated_at > $3) \
               AND ($4 IS NULL OR EXISTS (SELECT 1 FROM order_list_terms t \
                    WHERE t.kind = 'state' AND t.value = $4 AND t.order_id = l.order_id)) \
               AND ($5 IS NULL OR EXISTS (SELECT 1 FROM order_list_terms t \
                    WHERE t.kind = 'sku' AND t.value = $5 AND t.order_id = l.order_id)) \
             ORDER BY l.order_id LIMIT $6";
        Ok(on_reader!(self, |p| {
            sqlx::query_as(SQL)
                .bind(f.after_id)
                .bind(f.process.as_deref())
                .bind(f.updated_after)
                .bind(f.state.as_deref())
                .bind(f.sku.as_deref())
                .bind(f.limit)
                .fetch_all(p)
                .await
        })?)
    }
}

/// Rewrites the list rows of `orders` (ids; one that has no order row is skipped) from
/// their order and items, in three statements whatever their number: the rows upserted,
/// then the filter terms no item has any more deleted and the missing ones inserted (terms
/// that stay are not touched).
async fn project_orders(tx: &mut Tx, orders: &[i64]) -> Result<()> {
    let d = tx.dialect();
    let upsert = format!(
        "INSERT INTO order_list (order_id, reference, process, version, states, skus, \
         created_at, updated_at) \
         SELECT o.id, o.reference, o.process, o.version, {}, {}, o.created_at, o.updated_at \
         FROM orders o WHERE {} \
         ON CONFLICT (order_id) DO UPDATE SET reference = excluded.reference, \
         process = excluded.process, version = excluded.version, states = excluded.states, \
         skus = excluded.skus, updated_at = excluded.updated_at",
        (d.sorted_item_values)("state"),
        (d.sorted_item_values)("sku"),
        d.in_list("o.id", 1),
    );
    let stale = format!(
        "DELETE FROM order_list_terms WHERE {} AND NOT EXISTS (SELECT 1 FROM items i \
         WHERE i.order_id = order_list_terms.order_id \
           AND CASE order_list_terms.kind WHEN 'state' THEN i.state ELSE i.sku END \
               = order_list_terms.value)",
        d.in_list("order_id", 1),
    );
    let missing = format!(
        "INSERT INTO order_list_terms (kind, value, order_id) \
         SELECT 'state', state, order_id FROM items WHERE {list} \
         UNION SELECT 'sku', sku, order_id FROM items WHERE {list} \
         ON CONFLICT DO NOTHING",
        list = d.in_list("order_id", 1),
    );
    for sql in [upsert, stale, missing] {
        on_tx!(&mut *tx, |c| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(List(orders))
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}
