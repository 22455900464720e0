//! Reads and writes for many orders at once. The inbox worker reads the orders and items of
//! a whole batch of updates in two statements, and collects the rows their changes write
//! ([`Writes`]) to send them in one multi-row statement per table instead of one per row:
//! a round trip to the database (a thread hop on SQLite, a network round trip on
//! PostgreSQL) costs more than the row it carries.
//!
//! Each statement is written twice: PostgreSQL takes one array per column (`UNNEST`), so its
//! statement text is the same for any number of rows and stays prepared; SQLite, which
//! has no arrays, takes a multi-row `VALUES` list. Statements run in the order a single
//! change would write its rows (timers are dropped before new ones are set). A set must
//! hold at most one change per order: two changes to one item in one multi-row `UPDATE`
//! would leave either.

mod send;

pub(crate) use send::placeholders;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::inbox::NewUpdate;
use super::orders::{Attributes, ItemRow, NewHistory, NewTimer, OrderRow};
use super::{Result, Tx};

impl Tx {
    /// Reads the orders with these references and holds them until commit (PostgreSQL:
    /// row locks, taken in id order so two such transactions cannot deadlock; SQLite: the
    /// transaction holds the only writer). References without an order are left out.
    pub async fn lock_orders_by_reference(
        &mut self,
        references: &[String],
    ) -> Result<Vec<OrderRow>> {
        const COLUMNS: &str =
            "id, reference, process, currency, attributes, version, created_at, updated_at";
        let rows = match self {
            Tx::Postgres(t) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM orders WHERE reference = ANY($1) ORDER BY id FOR NO KEY UPDATE"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(references)
                    .fetch_all(&mut **t)
                    .await?
            }
            Tx::Sqlite(t) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM orders \
                     WHERE reference IN (SELECT value FROM json_each($1)) ORDER BY id"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(Json(references))
                    .fetch_all(&mut **t)
                    .await?
            }
        };
        Ok(rows)
    }

    /// The items of these orders, by order and id.
    pub async fn items_of(&mut self, order_ids: &[i64]) -> Result<Vec<ItemRow>> {
        const COLUMNS: &str = "id, order_id, sku, quantity, unit_price, state, reserved, \
             state_entered_at, attributes";
        let rows = match self {
            Tx::Postgres(t) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM items WHERE order_id = ANY($1) ORDER BY order_id, id"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(order_ids)
                    .fetch_all(&mut **t)
                    .await?
            }
            Tx::Sqlite(t) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM items \
                     WHERE order_id IN (SELECT value FROM json_each($1)) ORDER BY order_id, id"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(Json(order_ids))
                    .fetch_all(&mut **t)
                    .await?
            }
        };
        Ok(rows)
    }
}

#[derive(Clone, Debug)]
struct ItemWrite {
    id: i64,
    state: String,
    reserved: bool,
    state_entered_at: DateTime<Utc>,
    attributes: Attributes,
}

#[derive(Clone, Debug)]
struct HistoryWrite {
    order_id: i64,
    item_id: i64,
    from_state: Option<String>,
    to_state: String,
    event: Option<String>,
    source: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct TimerWrite {
    order_id: i64,
    item_id: i64,
    state: String,
    kind: &'static str,
    event: Option<String>,
    due_at: DateTime<Utc>,
}

/// An effect or change-feed row: `(order id, order version, kind, payload, at)`.
#[derive(Clone, Debug)]
struct FeedWrite {
    order_id: i64,
    version: i64,
    kind: String,
    payload: Value,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct OrderWrite {
    id: i64,
    attributes: Attributes,
    version: i64,
    at: DateTime<Utc>,
}

/// Writes of one or more order changes, not yet sent; [`Tx::write`] sends them.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    items: Vec<ItemWrite>,
    history: Vec<HistoryWrite>,
    timers_dropped: Vec<i64>,
    timers: Vec<TimerWrite>,
    effects: Vec<FeedWrite>,
    orders: Vec<OrderWrite>,
    changes: Vec<FeedWrite>,
    /// Orders whose parked updates become due at the given time.
    wake: Vec<String>,
    wake_at: Option<DateTime<Utc>>,
    /// Orders whose condition timers become due at `wake_at` (their attributes changed).
    wake_conditions: Vec<i64>,
    /// Follow-up events of commands, as new inbox updates.
    follow_ups: Vec<NewUpdate>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
            && self.history.is_empty()
            && self.timers_dropped.is_empty()
            && self.timers.is_empty()
            && self.effects.is_empty()
            && self.orders.is_empty()
            && self.changes.is_empty()
            && self.wake.is_empty()
            && self.wake_conditions.is_empty()
            && self.follow_ups.is_empty()
    }

    pub fn update_item(
        &mut self,
        id: i64,
        state: &str,
        reserved: bool,
        state_entered_at: DateTime<Utc>,
        attributes: &Attributes,
    ) {
        self.items.push(ItemWrite {
            id,
            state: state.to_owned(),
            reserved,
            state_entered_at,
            attributes: attributes.clone(),
        });
    }

    pub fn insert_history(&mut self, order_id: i64, h: &NewHistory<'_>, at: DateTime<Utc>) {
        self.history.push(HistoryWrite {
            order_id,
            item_id: h.item_id,
            from_state: h.from_state.map(str::to_owned),
            to_state: h.to_state.to_owned(),
            event: h.event.map(str::to_owned),
            source: h.source.to_owned(),
            reason: h.reason.map(str::to_owned),
            at,
        });
    }

    /// Drops every timer of an item (it left the state they were set for).
    pub fn drop_timers(&mut self, item_id: i64) {
        self.timers_dropped.push(item_id);
    }

    pub fn insert_timer(&mut self, order_id: i64, t: &NewTimer<'_>) {
        self.timers.push(TimerWrite {
            order_id,
            item_id: t.item_id,
            state: t.state.to_owned(),
            kind: t.kind,
            event: t.event.map(str::to_owned),
            due_at: t.due_at,
        });
    }

    /// Records a command effect to execute after commit (outbox row, `done_at` unset).
    pub fn insert_effect(
        &mut self,
        order_id: i64,
        version: i64,
        kind: &str,
        payload: &Value,
        at: DateTime<Utc>,
    ) {
        self.effects.push(FeedWrite {
            order_id,
            version,
            kind: kind.to_owned(),
            payload: payload.clone(),
            at,
        });
    }

    /// Writes the order's attributes and new version.
    pub fn update_order(
        &mut self,
        id: i64,
        attributes: &Attributes,
        version: i64,
        at: DateTime<Utc>,
    ) {
        self.orders.push(OrderWrite {
            id,
            attributes: attributes.clone(),
            version,
            at,
        });
    }

    /// Appends to the change feed.
    pub fn append_change(
        &mut self,
        order_id: i64,
        version: i64,
        kind: &str,
        payload: &Value,
        at: DateTime<Utc>,
    ) {
        self.changes.push(FeedWrite {
            order_id,
            version,
            kind: kind.to_owned(),
            payload: payload.clone(),
            at,
        });
    }

    /// Makes the parked updates of an order due at `now` (see [`Tx::wake_parked`]).
    pub fn wake_parked(&mut self, reference: &str, now: DateTime<Utc>) {
        self.wake.push(reference.to_owned());
        self.wake_at = Some(self.wake_at.map_or(now, |t| t.max(now)));
    }

    /// Makes the order's condition timers due at `now` (see [`Tx::wake_condition_timers`]).
    pub fn wake_condition_timers(&mut self, order_id: i64, now: DateTime<Utc>) {
        self.wake_conditions.push(order_id);
        self.wake_at = Some(self.wake_at.map_or(now, |t| t.max(now)));
    }

    /// Stores a command's follow-up event as an inbox update, with this change.
    pub fn follow_up(&mut self, update: NewUpdate) {
        self.follow_ups.push(update);
    }
}
