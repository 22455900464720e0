//! Group commits on SQLite: the `BEGIN`, the inserts and `COMMIT` of a group run on a
//! connection of the group writer's own, on the writer's thread, while it holds the pool's
//! one writer connection as its permit to write (see `store::group`).
//!
//! Why a second connection: sqlx runs each SQLite connection on a thread of its own and
//! hands it every statement and every returned row across a channel, so a group cost two
//! thread wake-ups and the scheduling behind them on two busy cores. The group writer is
//! the ingest's one serial step and has a thread of its own (`inbox::writer`), so it
//! drives SQLite synchronously with `rusqlite` (the same bundled SQLite, through
//! `libsqlite3-sys`): measured, a commit took 0.8–0.95 ms for 16–17 updates instead of
//! 1.5–1.6 ms for 20–21 (see docs/benchmarks.md, "The one writer's cycle"). Everything
//! else stays on sqlx.
//!
//! One writer at a time still holds: a group is written only while the writer pool's one
//! connection is held (`GroupConn::held`), so no sqlx write runs beside it, and `seq`
//! order stays commit order. The connection uses the store's settings (WAL,
//! `synchronous = FULL`, foreign keys, `temp_store = MEMORY`); an update is acknowledged
//! only after `COMMIT` returned, which synced the WAL.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use sqlx::pool::PoolConnection;

use super::SqliteStore;
use crate::store::group::{Admit, INSERT_CHUNK, OnError, insert_sql};
use crate::store::inbox::NewUpdate;
use crate::store::{Result, StoreError};

/// Groups stored in a row while holding the pool's writer connection, before other writers
/// (the inbox worker, the orders API) get their turn.
pub(super) const HOLD_GROUPS: u32 = 4;

/// The writer connection a group writer holds between groups, and its own connection.
#[derive(Default)]
pub(crate) struct GroupConn {
    /// The pool's writer connection: held while a group is written, so that nothing else
    /// writes meanwhile. No statement of the group runs on it.
    held: Option<PoolConnection<sqlx::Sqlite>>,
    in_a_row: u32,
    /// The connection the groups are written on, opened at the first group. Only the group
    /// writer uses it; the mutex makes the writer `Sync` (a `rusqlite` connection is only
    /// `Send`) and is never contended.
    own: Option<Mutex<Own>>,
}

/// The group writer's own connection, and the text of its insert for each group size seen:
/// written once, not for every group (its prepared statement is cached by that text).
struct Own {
    conn: rusqlite::Connection,
    inserts: Vec<Option<String>>,
}

/// The insert of `rows` updates (at most [`INSERT_CHUNK`]), from `kept`.
fn insert_text(kept: &mut Vec<Option<String>>, rows: usize) -> &str {
    if kept.len() <= rows {
        kept.resize(rows + 1, None);
    }
    kept[rows].get_or_insert_with(|| insert_sql(OnError::Transaction, Admit::Later, rows))
}

impl GroupConn {
    /// Stores `updates` in one transaction; the `seq` of each, in order, or `None` where a
    /// repeated key stored nothing.
    pub(crate) async fn insert(
        &mut self,
        s: &SqliteStore,
        updates: &[NewUpdate],
    ) -> Result<Vec<Option<i64>>> {
        let conn = match self.held.take() {
            Some(c) => c,
            None => s.writer().acquire().await?,
        };
        // An ERP group begins (on this writer's own connection): mark it for the checkpointer.
        s.writes.acked();
        let result = self.own(s).and_then(|own| {
            let mut own = own.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            insert(&mut own, updates)
        });
        // A failure that left a transaction open (its ROLLBACK failed too) would fail every
        // later group: give that connection up, the next group opens another.
        if result.is_err()
            && let Some(own) = &self.own
            && !own.lock().is_ok_and(|o| o.conn.is_autocommit())
        {
            self.own = None;
        }
        self.in_a_row += 1;
        if result.is_ok() && self.in_a_row < HOLD_GROUPS {
            self.held = Some(conn);
        } else {
            self.in_a_row = 0;
        }
        result
    }

    pub(crate) fn release(&mut self) {
        self.held = None;
        self.in_a_row = 0;
    }

    /// The group writer's own connection, opened on first use.
    fn own(&mut self, s: &SqliteStore) -> Result<&Mutex<Own>> {
        if self.own.is_none() {
            self.own = Some(Mutex::new(Own {
                conn: open(s)?,
                inserts: Vec::new(),
            }));
        }
        Ok(self.own.as_ref().expect("opened above"))
    }
}

/// Opens the store's database file with the writer's settings (see `sqlite::connect`).
fn open(s: &SqliteStore) -> Result<rusqlite::Connection> {
    let options = s.writer().connect_options();
    let path = options.get_filename();
    let name = path.to_string_lossy();
    // sqlx names an in-memory database `file:sqlx-in-memory-N` (or `:memory:`): a second
    // connection by that name would open another database.
    if name == ":memory:" || name.starts_with("file:") {
        return Err(StoreError::Connect(format!(
            "the ERP inbox writes to the SQLite database by its file name, and {name:?} is \
             not a file: use sqlite://FILE"
        )));
    }
    let failed = |e: rusqlite::Error| {
        StoreError::Connect(format!(
            "cannot open the SQLite database {} for the ERP inbox's writer: {e}",
            path.display()
        ))
    };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000",
    )
    .map_err(failed)?;
    // Only groups are written on this connection: their WAL bound is set once.
    conn.execute_batch(super::GROUP_WAL_BOUND).map_err(failed)?;
    // Nor does anything else run on it, and a group's `status` is the literal `'accepted'`
    // (`insert_sql`), which the table's one CHECK (the seven statuses) always admits. SQLite
    // tests that list for every row, as an ephemeral table filled anew (seven inserts and
    // a clear a row; see docs/benchmarks.md, "Constant lists that SQLite fills in for every
    // row"): not on this connection.
    conn.execute_batch("PRAGMA ignore_check_constraints = ON")
        .map_err(failed)?;
    // One prepared insert per chunk size, each kept.
    conn.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(conn)
}

/// Prepared statements kept: an insert per chunk size, `BEGIN`, `COMMIT` and the read of a
/// chunk's `seq`s when a repeated key inserted nothing.
const STATEMENTS: usize = INSERT_CHUNK + 3;

/// `BEGIN IMMEDIATE`, the inserts and `COMMIT`: `Ok` only after the commit. On error the
/// transaction is rolled back. The three statements stay prepared.
///
/// The transaction holds nothing but the group, and any failure rolls all of it back, so
/// the inserts are `INSERT OR ROLLBACK`: SQLite then keeps no statement journal (a copy of
/// every page a statement changes, kept so that the statement alone can be undone).
fn insert(own: &mut Own, updates: &[NewUpdate]) -> Result<Vec<Option<i64>>> {
    own.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    match insert_and_commit(own, updates) {
        Ok(seqs) => Ok(seqs),
        Err(e) => {
            // `INSERT OR ROLLBACK` may have ended the transaction already; then this
            // ROLLBACK fails harmlessly.
            let _ = own.conn.execute_batch("ROLLBACK");
            Err(e.into())
        }
    }
}

/// The inserts return nothing: a statement with `RETURNING` collects its rows in a
/// temporary table first, opened, filled, read and dropped for every group. A chunk that
/// inserted every row got consecutive `seq`s ending at the last one inserted; one in which
/// a repeated key inserted nothing for its row reads the `seq`s of the rows it did insert.
fn insert_and_commit(own: &mut Own, updates: &[NewUpdate]) -> rusqlite::Result<Vec<Option<i64>>> {
    let Own { conn, inserts } = own;
    let mut seqs = Vec::with_capacity(updates.len());
    for chunk in updates.chunks(INSERT_CHUNK) {
        let inserted = conn
            .prepare_cached(insert_text(inserts, chunk.len()))?
            .execute(rusqlite::params_from_iter(chunk.iter().flat_map(values)))?;
        if inserted == chunk.len() {
            let last = conn.last_insert_rowid();
            let first = last - chunk.len() as i64 + 1;
            seqs.extend((first..=last).map(Some));
        } else {
            // The ids as one JSON list, the store's way of binding a list (`store::List`).
            let chunk_ids: Vec<&str> = chunk.iter().map(|u| u.id.as_str()).collect();
            let sql = format!(
                "SELECT id, seq FROM inbox WHERE {}",
                super::DIALECT.in_list("id", 1)
            );
            let mut read = conn.prepare_cached(&sql)?;
            let mut rows = read.query([serde_json::Value::from(chunk_ids).to_string()])?;
            let mut found = HashMap::new();
            while let Some(row) = rows.next()? {
                found.insert(row.get::<_, String>(0)?, row.get::<_, i64>(1)?);
            }
            seqs.extend(chunk.iter().map(|u| found.get(&u.id).copied()));
        }
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(seqs)
}

/// The 11 values of an update, in `INSERT_HEAD` order: the one encoding of an inbox row,
/// bound by the group writer (rusqlite) and by `Tx::insert_updates` (sqlx, see
/// `writes::insert_updates`). Text columns as text, JSON as its compact text, times as
/// RFC 3339 text (`+00:00`) with the nanoseconds sqlx writes for a bound time
/// (`SecondsFormat::AutoSi`), so the rows compare and sort with times sqlx binds.
///
/// Text the row already holds is bound borrowed (SQLite copies what it binds).
pub(super) fn values(u: &NewUpdate) -> [ToSqlOutput<'_>; 11] {
    fn text(s: &str) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
    }
    fn optional(s: &Option<String>) -> ToSqlOutput<'_> {
        s.as_deref().map_or(ToSqlOutput::Owned(Value::Null), text)
    }
    // `to_string` of a JSON value writes the same text through `fmt`, a few times slower.
    fn json(v: &serde_json::Value) -> ToSqlOutput<'static> {
        ToSqlOutput::Owned(serde_json::to_string(v).map_or(Value::Null, Value::Text))
    }
    let at = u
        .received_at
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
    [
        text(&u.id),
        text(&u.client),
        optional(&u.idempotency_key),
        text(&u.request_hash),
        text(&u.order_reference),
        optional(&u.event),
        json(&u.payload),
        // `response_status` is no longer written (see `UpdateRow::answer`).
        ToSqlOutput::Owned(Value::Null),
        u.response
            .as_ref()
            .map_or(ToSqlOutput::Owned(Value::Null), json),
        ToSqlOutput::Owned(Value::Text(at.clone())),
        ToSqlOutput::Owned(Value::Text(at)),
    ]
}

/// A value of [`values`] as an owned value, for a driver other than `rusqlite`.
pub(super) fn owned(v: ToSqlOutput<'_>) -> Value {
    match v {
        ToSqlOutput::Borrowed(ValueRef::Text(t)) => {
            Value::Text(String::from_utf8_lossy(t).into_owned())
        }
        ToSqlOutput::Owned(v) => v,
        // `values` borrows only text.
        _ => Value::Null,
    }
}
