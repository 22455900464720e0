//! Orders, items, history, timers, change feed and effects: the rows one order change
//! writes, and the reads behind the order endpoints.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{Result, Store, StoreError, TimerKind, Tx, is_unique_violation, on_reader, on_tx};

pub type Attributes = Map<String, Value>;

#[derive(Clone, Debug, sqlx::FromRow, serde::Deserialize)]
pub struct OrderRow {
    pub id: i64,
    pub reference: String,
    pub process: String,
    pub currency: Option<String>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::json")]
    pub attributes: Json<Attributes>,
    pub version: i64,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time")]
    pub created_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, sqlx::FromRow, serde::Deserialize)]
pub struct ItemRow {
    pub id: i64,
    pub order_id: i64,
    pub sku: String,
    pub quantity: i64,
    pub unit_price: Option<i64>,
    pub state: String,
    #[serde(deserialize_with = "crate::store::sqlite::rows::flag")]
    pub reserved: bool,
    #[serde(deserialize_with = "crate::store::sqlite::rows::time")]
    pub state_entered_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::store::sqlite::rows::json")]
    pub attributes: Json<Attributes>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub item_id: i64,
    pub from_state: Option<String>,
    pub to_state: String,
    pub event: Option<String>,
    pub source: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A new order row.
pub struct NewOrder<'a> {
    pub reference: &'a str,
    pub process: &'a str,
    pub currency: Option<&'a str>,
    pub attributes: &'a Attributes,
    pub at: DateTime<Utc>,
}

/// A new item row, in the state it enters first.
pub struct NewItem<'a> {
    pub sku: &'a str,
    pub quantity: i64,
    pub unit_price: Option<i64>,
    pub state: &'a str,
    pub reserved: bool,
    pub attributes: &'a Attributes,
}

/// One history row: a move, or a stay worth recording.
pub struct NewHistory<'a> {
    pub item_id: i64,
    pub from_state: Option<&'a str>,
    pub to_state: &'a str,
    pub event: Option<&'a str>,
    pub source: &'a str,
    pub reason: Option<&'a str>,
}

/// A timer for an item in a state: a timeout (with the event) or a condition check.
pub struct NewTimer<'a> {
    pub item_id: i64,
    pub state: &'a str,
    pub kind: TimerKind,
    pub event: Option<&'a str>,
    pub due_at: DateTime<Utc>,
}

/// The columns of [`OrderRow`], for every statement that reads one.
pub(crate) const ORDER_COLUMNS: &str =
    "id, reference, process, currency, attributes, version, created_at, updated_at";

/// The columns of [`ItemRow`].
pub(crate) const ITEM_COLUMNS: &str = "id, order_id, sku, quantity, unit_price, state, \
     reserved, state_entered_at, attributes";

/// An order by `id` or `reference` (`$1`), with `lock` (a [`super::Dialect`] suffix or "").
pub(crate) fn order_sql(by: &str, lock: &str) -> String {
    format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {by} = $1{lock}")
}

fn items_sql() -> String {
    format!("SELECT {ITEM_COLUMNS} FROM items WHERE order_id = $1 ORDER BY id")
}

impl Tx {
    /// Reads the order and holds it until commit: a row lock on PostgreSQL; on SQLite the
    /// transaction already holds the only writer.
    pub async fn lock_order(&mut self, id: i64) -> Result<Option<OrderRow>> {
        let sql = order_sql("id", self.dialect().lock_order);
        Ok(on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    /// Puts a locked order under another process (an operator's move, see
    /// `OrderService::move_items`).
    pub async fn set_order_process(&mut self, id: i64, process: &str) -> Result<()> {
        const SQL: &str = "UPDATE orders SET process = $2 WHERE id = $1";
        on_tx!(self, |c| sqlx::query(SQL)
            .bind(id)
            .bind(process)
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// [`Tx::lock_order`] by reference (for ERP updates, which name the shop's reference).
    pub async fn lock_order_by_reference(&mut self, reference: &str) -> Result<Option<OrderRow>> {
        let sql = order_sql("reference", self.dialect().lock_order);
        Ok(on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(reference)
            .fetch_optional(c)
            .await)?)
    }

    /// Inserts an order at version 1; a used reference is [`StoreError::ReferenceTaken`].
    pub async fn insert_order(&mut self, o: &NewOrder<'_>) -> Result<OrderRow> {
        let sql = format!(
            "INSERT INTO orders (reference, process, currency, attributes, version, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5) \
             RETURNING {ORDER_COLUMNS}"
        );
        let result = on_tx!(self, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(o.reference)
                .bind(o.process)
                .bind(o.currency)
                .bind(Json(o.attributes))
                .bind(o.at)
                .fetch_one(c)
                .await
        });
        result.map_err(|e| match is_unique_violation(&e) {
            true => StoreError::ReferenceTaken(o.reference.to_owned()),
            false => e.into(),
        })
    }

    pub async fn insert_item(
        &mut self,
        order_id: i64,
        item: &NewItem<'_>,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        const SQL: &str = "INSERT INTO items (order_id, sku, quantity, unit_price, state, \
             reserved, state_entered_at, attributes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING id";
        let id = on_tx!(self, |c| {
            sqlx::query_scalar(SQL)
                .bind(order_id)
                .bind(item.sku)
                .bind(item.quantity)
                .bind(item.unit_price)
                .bind(item.state)
                .bind(item.reserved)
                .bind(at)
                .bind(Json(item.attributes))
                .fetch_one(c)
                .await
        })?;
        Ok(id)
    }

    pub async fn items(&mut self, order_id: i64) -> Result<Vec<ItemRow>> {
        Ok(on_tx!(self, |c| {
            sqlx::query_as(AssertSqlSafe(items_sql()))
                .bind(order_id)
                .fetch_all(c)
                .await
        })?)
    }

    pub async fn insert_history(
        &mut self,
        order_id: i64,
        h: &NewHistory<'_>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO item_history (order_id, item_id, from_state, to_state, \
             event, source, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_tx!(self, |c| {
            sqlx::query(SQL)
                .bind(order_id)
                .bind(h.item_id)
                .bind(h.from_state)
                .bind(h.to_state)
                .bind(h.event)
                .bind(h.source)
                .bind(h.reason)
                .bind(at)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Appends to the change feed, which the list projection (and later subscribers) read.
    pub async fn append_change(
        &mut self,
        order_id: i64,
        version: i64,
        kind: &str,
        payload: &Value,
        at: DateTime<Utc>,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO change_feed (order_id, version, kind, payload, at) \
             VALUES ($1, $2, $3, $4, $5)";
        on_tx!(self, |c| {
            sqlx::query(SQL)
                .bind(order_id)
                .bind(version)
                .bind(kind)
                .bind(Json(payload))
                .bind(at)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

impl Store {
    /// The order and its items, from the primary tables.
    pub async fn order(&self, id: i64) -> Result<Option<(OrderRow, Vec<ItemRow>)>> {
        let row: Option<OrderRow> =
            on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(order_sql("id", "")))
                .bind(id)
                .fetch_optional(p)
                .await)?;
        self.with_items(row).await
    }

    pub async fn order_by_reference(
        &self,
        reference: &str,
    ) -> Result<Option<(OrderRow, Vec<ItemRow>)>> {
        let row: Option<OrderRow> = on_reader!(self, |p| {
            sqlx::query_as(AssertSqlSafe(order_sql("reference", "")))
                .bind(reference)
                .fetch_optional(p)
                .await
        })?;
        self.with_items(row).await
    }

    async fn with_items(&self, row: Option<OrderRow>) -> Result<Option<(OrderRow, Vec<ItemRow>)>> {
        let Some(order) = row else { return Ok(None) };
        let items: Vec<ItemRow> = on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(items_sql()))
            .bind(order.id)
            .fetch_all(p)
            .await)?;
        Ok(Some((order, items)))
    }

    /// Every history row of an order, oldest first.
    pub async fn history(&self, order_id: i64) -> Result<Vec<HistoryRow>> {
        const SQL: &str = "SELECT id, item_id, from_state, to_state, event, source, reason, at \
             FROM item_history WHERE order_id = $1 ORDER BY id";
        Ok(on_reader!(self, |p| sqlx::query_as(SQL)
            .bind(order_id)
            .fetch_all(p)
            .await)?)
    }

    /// The quantity of `sku` held by items in reserved states.
    /// The sum saturates at `i64::MAX` instead of failing (SQLite's `SUM` raises an error on
    /// overflow, PostgreSQL's returns a `numeric` wider than any integer column).
    pub async fn reserved_quantity(&self, sku: &str) -> Result<i64> {
        let sql = self.dialect().reserved_quantity;
        Ok(on_reader!(self, |p| sqlx::query_scalar(sql)
            .bind(sku)
            .fetch_one(p)
            .await)?)
    }

    /// Number of items per process and state, over all orders.
    pub async fn item_state_counts(&self) -> Result<Vec<(String, String, i64)>> {
        const SQL: &str = "SELECT o.process, i.state, COUNT(*) FROM items i JOIN orders o \
             ON o.id = i.order_id GROUP BY o.process, i.state ORDER BY o.process, i.state";
        Ok(on_reader!(self, |p| sqlx::query_as(SQL)
            .fetch_all(p)
            .await)?)
    }

    /// The orders of `process` with an item in `state` (any state when `None`), by id.
    pub async fn orders_in_state(&self, process: &str, state: Option<&str>) -> Result<Vec<i64>> {
        const SQL: &str = "SELECT DISTINCT o.id FROM orders o JOIN items i ON i.order_id = o.id \
             WHERE o.process = $1 AND ($2 IS NULL OR i.state = $2) ORDER BY o.id";
        Ok(on_reader!(self, |p| sqlx::query_scalar(SQL)
            .bind(process)
            .bind(state)
            .fetch_all(p)
            .await)?)
    }

    /// Number of items per state for orders of `process`.
    pub async fn state_counts(&self, process: &str) -> Result<Vec<(String, i64)>> {
        const SQL: &str = "SELECT i.state, COUNT(*) FROM items i JOIN orders o \
             ON o.id = i.order_id WHERE o.process = $1 GROUP BY i.state";
        Ok(on_reader!(self, |p| sqlx::query_as(SQL)
            .bind(process)
            .fetch_all(p)
            .await)?)
    }
}
