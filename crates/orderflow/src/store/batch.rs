//! Reads and writes for many orders at once. The inbox worker reads the orders and items of
//! a whole batch of updates in two statements, and collects the rows their changes write
//! ([`Writes`]) to send them in one multi-row statement per table instead of one per row:
//! a round trip to the database (a thread hop on SQLite, a network round trip on
//! PostgreSQL) costs more than the row it carries.
//!
//! Sending them is the backends' own (`sqlite::write`, `postgres::write`): PostgreSQL
//! takes one array per column (`UNNEST`), so its statement text is the same for any number
//! of rows and stays prepared, and gets the rows of every table in one statement (each
//! table a part of a `WITH`: one round trip for all); SQLite, which has no arrays, takes a
//! multi-row `VALUES` list per table, in the order a single change would write its rows
//! (timers are dropped before new ones are set). A set must hold at most one change per
//! order: two changes to one item in one multi-row `UPDATE` would leave either.

mod send;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::inbox::NewUpdate;
use super::orders::{
    Attributes, ITEM_COLUMNS, ItemRow, NewHistory, NewTimer, ORDER_COLUMNS, OrderRow,
};
use super::{List, Result, TimerKind, Tx, on_tx};

impl Tx {
    /// Reads the orders with these references and holds them until commit (PostgreSQL:
    /// row locks, taken in id order so two such transactions cannot deadlock; SQLite: the
    /// transaction holds the only writer). References without an order are left out.
    pub async fn lock_orders_by_reference(
        &mut self,
        references: &[String],
    ) -> Result<Vec<OrderRow>> {
        let d = self.dialect();
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {} ORDER BY id{}",
            d.in_list("reference", 1),
            d.lock_order
        );
        if let Some(rows) = self
            .in_one_row(ORDER_COLUMNS, &sql, "id", |q| {
                sqlx::query_scalar(q).bind(List(references))
            })
            .await
        {
            return Ok(rows);
        }
        Ok(on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(List(references))
            .fetch_all(c)
            .await)?)
    }

    /// The items of these orders, by order and id.
    pub async fn items_of(&mut self, order_ids: &[i64]) -> Result<Vec<ItemRow>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE {} ORDER BY order_id, id",
            self.dialect().in_list("order_id", 1)
        );
        if let Some(rows) = self
            .in_one_row(ITEM_COLUMNS, &sql, "order_id, id", |q| {
                sqlx::query_scalar(q).bind(List(order_ids))
            })
            .await
        {
            return Ok(rows);
        }
        Ok(on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(List(order_ids))
            .fetch_all(c)
            .await)?)
    }
}

#[derive(Clone, Debug)]
pub(super) struct ItemWrite {
    pub(super) id: i64,
    pub(super) state: String,
    pub(super) reserved: bool,
    pub(super) state_entered_at: DateTime<Utc>,
    pub(super) attributes: Attributes,
}

#[derive(Clone, Debug)]
pub(super) struct HistoryWrite {
    pub(super) order_id: i64,
    pub(super) item_id: i64,
    pub(super) from_state: Option<String>,
    pub(super) to_state: String,
    pub(super) event: Option<String>,
    pub(super) source: String,
    pub(super) reason: Option<String>,
    pub(super) at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub(super) struct TimerWrite {
    pub(super) order_id: i64,
    pub(super) item_id: i64,
    pub(super) state: String,
    pub(super) kind: TimerKind,
    pub(super) event: Option<String>,
    pub(super) due_at: DateTime<Utc>,
}

/// An effect or change-feed row: `(order id, order version, kind, payload, at)`.
#[derive(Clone, Debug)]
pub(super) struct FeedWrite {
    pub(super) order_id: i64,
    pub(super) version: i64,
    pub(super) kind: String,
    pub(super) payload: Value,
    pub(super) at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub(super) struct OrderWrite {
    pub(super) id: i64,
    pub(super) attributes: Attributes,
    pub(super) version: i64,
    pub(super) at: DateTime<Utc>,
}

/// Writes of one or more order changes, not yet sent; [`Tx::write`] sends them.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    pub(super) items: Vec<ItemWrite>,
    pub(super) history: Vec<HistoryWrite>,
    pub(super) timers_dropped: Vec<i64>,
    pub(super) timers: Vec<TimerWrite>,
    pub(super) effects: Vec<FeedWrite>,
    pub(super) orders: Vec<OrderWrite>,
    pub(super) changes: Vec<FeedWrite>,
    /// Orders whose parked updates become due at the given time.
    pub(super) wake: Vec<String>,
    pub(super) wake_at: Option<DateTime<Utc>>,
    /// Orders whose condition timers become due at `wake_at` (their attributes changed).
    pub(super) wake_conditions: Vec<i64>,
    /// Follow-up events of commands, as new inbox updates.
    pub(super) follow_ups: Vec<NewUpdate>,
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

    /// Records a command's after-commit effect with the order version that caused it
    /// (`done_at` unset). Nothing executes these rows yet: they are a record.
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

    /// Makes the parked updates of an order due at `now` (see [`Tx::wake_parked_many`]).
    pub fn wake_parked(&mut self, reference: &str, now: DateTime<Utc>) {
        self.wake.push(reference.to_owned());
        self.wake_at = Some(self.wake_at.map_or(now, |t| t.max(now)));
    }

    /// Makes the order's condition timers due at `now` (see [`Tx::wake_condition_timers`]).
    pub fn wake_condition_timers(&mut self, order_id: i64, now: DateTime<Utc>) {
        self.wake_conditions.push(order_id);
        self.wake_at = Some(self.wake_at.map_or(now, |t| t.max(now)));
    }

    /// Stores an inbox update with this change: the row a command's follow-up event becomes
    /// (built by `inbox::follow_up`).
    pub fn follow_up(&mut self, update: NewUpdate) {
        self.follow_ups.push(update);
    }
}
