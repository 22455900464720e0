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

/// Rows per multi-row statement on SQLite: at most 8 binds a row keeps it far below
/// SQLite's limit of 32,766 variables.
const SQLITE_CHUNK: usize = 500;

/// `(?, ?, ?), (?, ?, ?)` for `rows` rows of `cols` columns. Anonymous parameters: the
/// driver looks a numbered one (`$7`) up by name, which SQLite does by walking a list,
/// so a statement with n numbered parameters costs n² steps to bind.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

impl Tx {
    /// Sends collected writes, a few statements in all.
    pub async fn write(&mut self, w: &Writes) -> Result<()> {
        match self {
            Tx::Postgres(t) => write_postgres(t, w).await?,
            Tx::Sqlite(t) => write_sqlite(t, w).await?,
        }
        if !w.wake.is_empty()
            && let Some(at) = w.wake_at
        {
            self.wake_parked_many(&w.wake, at).await?;
        }
        if let Some(at) = w.wake_at {
            for &order_id in &w.wake_conditions {
                self.wake_condition_timers(order_id, at).await?;
            }
        }
        if !w.follow_ups.is_empty() {
            self.insert_updates(&w.follow_ups).await?;
        }
        Ok(())
    }
}

async fn write_postgres(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    w: &Writes,
) -> sqlx::Result<()> {
    let c = &mut **t;
    if !w.items.is_empty() {
        let i = &w.items;
        sqlx::query(
            "UPDATE items SET state = v.state, reserved = v.reserved, \
             state_entered_at = v.entered, attributes = v.attributes \
             FROM UNNEST($1::int8[], $2::text[], $3::bool[], $4::timestamptz[], $5::jsonb[]) \
             AS v(id, state, reserved, entered, attributes) WHERE items.id = v.id",
        )
        .bind(i.iter().map(|x| x.id).collect::<Vec<_>>())
        .bind(i.iter().map(|x| x.state.as_str()).collect::<Vec<_>>())
        .bind(i.iter().map(|x| x.reserved).collect::<Vec<_>>())
        .bind(i.iter().map(|x| x.state_entered_at).collect::<Vec<_>>())
        .bind(i.iter().map(|x| Json(&x.attributes)).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    if !w.history.is_empty() {
        let h = &w.history;
        sqlx::query(
            "INSERT INTO item_history (order_id, item_id, from_state, to_state, event, source, \
             reason, at) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::timestamptz[])",
        )
        .bind(h.iter().map(|x| x.order_id).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.item_id).collect::<Vec<_>>())
        .bind(
            h.iter()
                .map(|x| x.from_state.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(h.iter().map(|x| x.to_state.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.event.as_deref()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.source.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.reason.as_deref()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.at).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    if !w.timers_dropped.is_empty() {
        sqlx::query("DELETE FROM timers WHERE item_id = ANY($1)")
            .bind(&w.timers_dropped[..])
            .execute(&mut *c)
            .await?;
    }
    if !w.timers.is_empty() {
        let t = &w.timers;
        sqlx::query(
            "INSERT INTO timers (order_id, item_id, state, kind, event, due_at) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], \
             $6::timestamptz[])",
        )
        .bind(t.iter().map(|x| x.order_id).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.item_id).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.state.as_str()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.kind).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.event.as_deref()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.due_at).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    for (rows, table) in [(&w.effects, "effects"), (&w.changes, "change_feed")] {
        if rows.is_empty() {
            continue;
        }
        let sql = match table {
            "effects" => {
                "INSERT INTO effects (order_id, order_version, kind, payload, created_at) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::jsonb[], \
                 $5::timestamptz[])"
            }
            _ => {
                "INSERT INTO change_feed (order_id, version, kind, payload, at) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::jsonb[], \
                 $5::timestamptz[])"
            }
        };
        sqlx::query(sql)
            .bind(rows.iter().map(|x| x.order_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|x| x.version).collect::<Vec<_>>())
            .bind(rows.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|x| Json(&x.payload)).collect::<Vec<_>>())
            .bind(rows.iter().map(|x| x.at).collect::<Vec<_>>())
            .execute(&mut *c)
            .await?;
    }
    if !w.orders.is_empty() {
        let o = &w.orders;
        sqlx::query(
            "UPDATE orders SET attributes = v.attributes, version = v.version, \
             updated_at = v.at FROM UNNEST($1::int8[], $2::jsonb[], $3::int8[], \
             $4::timestamptz[]) AS v(id, attributes, version, at) WHERE orders.id = v.id",
        )
        .bind(o.iter().map(|x| x.id).collect::<Vec<_>>())
        .bind(o.iter().map(|x| Json(&x.attributes)).collect::<Vec<_>>())
        .bind(o.iter().map(|x| x.version).collect::<Vec<_>>())
        .bind(o.iter().map(|x| x.at).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

async fn write_sqlite(
    t: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    w: &Writes,
) -> sqlx::Result<()> {
    let c = &mut **t;
    for i in w.items.chunks(SQLITE_CHUNK) {
        let sql = format!(
            "UPDATE items SET state = v.column2, reserved = v.column3, \
             state_entered_at = v.column4, attributes = v.column5 \
             FROM (VALUES {}) AS v WHERE items.id = v.column1",
            placeholders(i.len(), 5)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for x in i {
            q = q
                .bind(x.id)
                .bind(&x.state)
                .bind(x.reserved)
                .bind(x.state_entered_at)
                .bind(Json(&x.attributes));
        }
        q.execute(&mut *c).await?;
    }
    for h in w.history.chunks(SQLITE_CHUNK) {
        let sql = format!(
            "INSERT INTO item_history (order_id, item_id, from_state, to_state, event, source, \
             reason, at) VALUES {}",
            placeholders(h.len(), 8)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for x in h {
            q = q
                .bind(x.order_id)
                .bind(x.item_id)
                .bind(&x.from_state)
                .bind(&x.to_state)
                .bind(&x.event)
                .bind(&x.source)
                .bind(&x.reason)
                .bind(x.at);
        }
        q.execute(&mut *c).await?;
    }
    for ids in w.timers_dropped.chunks(SQLITE_CHUNK) {
        let sql = format!(
            "DELETE FROM timers WHERE item_id IN {}",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        q.execute(&mut *c).await?;
    }
    for t in w.timers.chunks(SQLITE_CHUNK) {
        let sql = format!(
            "INSERT INTO timers (order_id, item_id, state, kind, event, due_at) VALUES {}",
            placeholders(t.len(), 6)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for x in t {
            q = q
                .bind(x.order_id)
                .bind(x.item_id)
                .bind(&x.state)
                .bind(x.kind)
                .bind(&x.event)
                .bind(x.due_at);
        }
        q.execute(&mut *c).await?;
    }
    let feeds = [
        (
            &w.effects,
            "INSERT INTO effects (order_id, order_version, kind, payload, created_at) VALUES",
        ),
        (
            &w.changes,
            "INSERT INTO change_feed (order_id, version, kind, payload, at) VALUES",
        ),
    ];
    for (rows, insert) in feeds {
        for f in rows.chunks(SQLITE_CHUNK) {
            let sql = format!("{insert} {}", placeholders(f.len(), 5));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for x in f {
                q = q
                    .bind(x.order_id)
                    .bind(x.version)
                    .bind(&x.kind)
                    .bind(Json(&x.payload))
                    .bind(x.at);
            }
            q.execute(&mut *c).await?;
        }
    }
    for o in w.orders.chunks(SQLITE_CHUNK) {
        let sql = format!(
            "UPDATE orders SET attributes = v.column2, version = v.column3, \
             updated_at = v.column4 FROM (VALUES {}) AS v WHERE orders.id = v.column1",
            placeholders(o.len(), 4)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for x in o {
            q = q
                .bind(x.id)
                .bind(Json(&x.attributes))
                .bind(x.version)
                .bind(x.at);
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_are_rows_of_anonymous_parameters() {
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(placeholders(1, 1), "(?)");
    }
}
