//! Group-committed inserts of new inbox updates: the store side of the inbox's writer.
//!
//! A group is stored in one transaction and acknowledged after its commit. On SQLite that
//! commit syncs the WAL (`synchronous = FULL`), so the cost of a group is one fsync plus
//! round trips to the thread that owns the connection; this module keeps those few:
//! - `BEGIN IMMEDIATE`, the inserts and `COMMIT` go to the connection as one statement
//!   list (one round trip instead of three); the answer comes back after `COMMIT`;
//! - [`GroupWriter`] keeps the writer connection from one group to the next while groups
//!   follow each other (at most [`HOLD_GROUPS`] in a row, then other writers get their
//!   turn), which skips the pool's release and acquire: sqlx pings a connection when it
//!   is given back, one more round trip per group;
//! - placeholders are positional (`?`): SQLite finds a numbered one (`$n`) by a linear
//!   search, which makes binding a large group quadratic.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;
use sqlx::pool::PoolConnection;

use super::inbox::{COLUMNS, NewUpdate, Stored, UpdateRow};
use super::{Result, Store, StoreError, on_reader};

/// Rows per multi-row INSERT: 11 binds a row stays under both backends' bind limits.
pub(super) const INSERT_CHUNK: usize = 500;

/// Groups one [`GroupWriter`] stores in a row on one SQLite connection before it lets
/// other writers (the inbox worker, the orders API) have the connection.
pub const HOLD_GROUPS: u32 = 4;

/// Stores groups of new updates one after the other. Release the held connection with
/// [`GroupWriter::release`] when no group is waiting.
pub struct GroupWriter {
    store: Store,
    held: Option<PoolConnection<sqlx::Sqlite>>,
    in_a_row: u32,
}

impl GroupWriter {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            held: None,
            in_a_row: 0,
        }
    }

    /// Stores `updates` in one transaction, in order; a repeated `(client,
    /// idempotency_key)` stores nothing and answers with the row stored first, also when
    /// the repeat is in the same group.
    pub async fn insert(&mut self, updates: &[NewUpdate]) -> Result<Vec<Stored>> {
        let inserted: HashMap<String, i64> = match &self.store {
            Store::Sqlite(s) => {
                let mut conn = match self.held.take() {
                    Some(c) => c,
                    None => s.writer.acquire().await?,
                };
                let result = insert_sqlite(&mut conn, updates).await;
                self.in_a_row += 1;
                if result.is_ok() && self.in_a_row < HOLD_GROUPS {
                    self.held = Some(conn);
                } else {
                    self.in_a_row = 0;
                }
                result?
            }
            Store::Postgres(p) => insert_postgres(p, updates).await?,
        }
        .into_iter()
        .collect();
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            match inserted.get(&u.id) {
                Some(seq) => out.push(Stored::New(*seq)),
                None => out.push(Stored::Existing(Box::new(self.existing(u).await?))),
            }
        }
        Ok(out)
    }

    /// Gives the writer connection back to the pool (the queue is empty).
    pub fn release(&mut self) {
        self.held = None;
        self.in_a_row = 0;
    }

    /// The row stored first under `u`'s key: committed (earlier, or in this group), so a
    /// reader sees it.
    async fn existing(&self, u: &NewUpdate) -> Result<UpdateRow> {
        let sql = format!("SELECT {COLUMNS} FROM inbox WHERE client = $1 AND idempotency_key = $2");
        let row: Option<UpdateRow> = on_reader!(&self.store, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(&u.client)
                .bind(&u.idempotency_key)
                .fetch_optional(p)
                .await
        })?;
        row.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "update {} was neither stored nor found by its idempotency key",
                u.id
            ))
        })
    }
}

/// The columns a new update sets, in bind order (11 per row).
const INSERT_HEAD: &str = "INSERT INTO inbox (id, client, idempotency_key, request_hash, \
     order_reference, event, payload, status, response_status, response_body, received_at, \
     next_attempt_at) VALUES ";

/// One multi-row INSERT with `row(i)` as the placeholders of row `i`; a conflicting key
/// inserts nothing and returns nothing.
pub(super) fn insert_sql(rows: usize, mut row: impl FnMut(usize) -> String) -> String {
    let mut sql = String::with_capacity(INSERT_HEAD.len() + rows * 64 + 96);
    sql.push_str(INSERT_HEAD);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&row(i));
    }
    sql.push_str(" ON CONFLICT (client, idempotency_key) DO NOTHING RETURNING id, seq");
    sql
}

/// Binds the 11 values of each update, in [`INSERT_HEAD`] order.
macro_rules! bind_updates {
    ($q:expr, $updates:expr) => {{
        let mut q = $q;
        for u in $updates {
            // `response_status` is no longer written (see `UpdateRow::answer`).
            let (status, body) = (None::<i32>, u.response.as_ref().map(::sqlx::types::Json));
            q = q
                .bind(&u.id)
                .bind(&u.client)
                .bind(&u.idempotency_key)
                .bind(&u.request_hash)
                .bind(&u.order_reference)
                .bind(&u.event)
                .bind(::sqlx::types::Json(&u.payload))
                .bind(status)
                .bind(body)
                .bind(u.received_at)
                .bind(u.received_at);
        }
        q
    }};
}
pub(super) use bind_updates;

/// The placeholders of one row on SQLite: anonymous (numbered ones bind in quadratic time).
pub(super) const SQLITE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?)";

/// The placeholders of row `i` on PostgreSQL.
pub(super) fn postgres_row(i: usize) -> String {
    let b = i * 11;
    let p: Vec<String> = (b + 1..=b + 11).map(|n| format!("${n}")).collect();
    format!(
        "({}, {}, {}, {}, {}, {}, {}, 'accepted', {}, {}, {}, {})",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]
    )
}

/// `BEGIN IMMEDIATE`, the inserts and `COMMIT` as one statement list: `Ok` only after the
/// commit. On error the transaction is rolled back, or the connection given up.
async fn insert_sqlite(
    conn: &mut PoolConnection<sqlx::Sqlite>,
    updates: &[NewUpdate],
) -> Result<Vec<(String, i64)>> {
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for chunk in updates.chunks(INSERT_CHUNK) {
        sql.push_str(&insert_sql(chunk.len(), |_| SQLITE_ROW.to_owned()));
        sql.push_str(";\n");
    }
    sql.push_str("COMMIT");
    let q = bind_updates!(sqlx::query_as(AssertSqlSafe(sql)), updates);
    match q.fetch_all(&mut **conn).await {
        Ok(ids) => Ok(ids),
        Err(e) => {
            // The list stopped at the failing statement; end the transaction it may have
            // left open. A failed BEGIN leaves none, and that ROLLBACK fails harmlessly.
            let open = sqlx::raw_sql("ROLLBACK").execute(&mut **conn).await;
            if let Err(rollback) = open
                && !rollback.to_string().contains("no transaction is active")
            {
                conn.close_on_drop();
            }
            Err(e.into())
        }
    }
}

/// One transaction: the inserts and a `NOTIFY` for workers in other processes.
async fn insert_postgres(pool: &sqlx::PgPool, updates: &[NewUpdate]) -> Result<Vec<(String, i64)>> {
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(updates.len());
    for chunk in updates.chunks(INSERT_CHUNK) {
        let sql = insert_sql(chunk.len(), postgres_row);
        let q = bind_updates!(sqlx::query_as(AssertSqlSafe(sql)), chunk);
        ids.extend(q.fetch_all(&mut *tx).await?);
    }
    if !ids.is_empty() {
        sqlx::query("SELECT pg_notify('orderflow_inbox', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ids)
}
