//! Group commits on SQLite: the `BEGIN`, the inserts and `COMMIT` sent as one
//! statement list, on the writer connection held from one group to the next (see
//! `store::group`).

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, FromRow};

use super::SqliteStore;
use crate::store::Result;
use crate::store::group::{Admit, INSERT_CHUNK, OnError, bind_updates, insert_sql};
use crate::store::inbox::NewUpdate;

/// Groups stored in a row on one connection before other writers (the inbox worker, the
/// orders API) get their turn.
pub(super) const HOLD_GROUPS: u32 = 4;

/// The writer connection a group writer holds between groups.
#[derive(Default)]
pub(crate) struct GroupConn {
    held: Option<PoolConnection<sqlx::Sqlite>>,
    in_a_row: u32,
}

impl GroupConn {
    /// Stores `updates` in one transaction; the `(id, seq)` of each inserted one.
    pub(crate) async fn insert(
        &mut self,
        s: &SqliteStore,
        updates: &[NewUpdate],
    ) -> Result<Vec<(String, i64)>> {
        let mut conn = match self.held.take() {
            Some(c) => c,
            None => s.writer().acquire().await?,
        };
        let result = insert(&mut conn, updates).await;
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
}

/// [`super::BEGIN`] (the WAL bound, then `BEGIN IMMEDIATE`), the inserts and `COMMIT` as
/// one statement list: `Ok` only after the commit. On error the transaction is rolled
/// back, or the connection given up.
///
/// The transaction holds nothing but the group, and any failure rolls all of it back, so
/// the inserts are `INSERT OR ROLLBACK`: SQLite then keeps no statement journal (a copy of
/// every page a statement changes, kept so that the statement alone can be undone).
async fn insert(
    conn: &mut PoolConnection<sqlx::Sqlite>,
    updates: &[NewUpdate],
) -> Result<Vec<(String, i64)>> {
    let mut sql = format!("{};\n", super::BEGIN);
    for chunk in updates.chunks(INSERT_CHUNK) {
        sql.push_str(&insert_sql(OnError::Transaction, Admit::Later, chunk.len()));
        sql.push_str(";\n");
    }
    sql.push_str("COMMIT");
    let q = bind_updates!(sqlx::query(AssertSqlSafe(sql)), updates);
    // The first row is the `PRAGMA`'s (the WAL bound it set), then each insert's.
    let ids = q
        .fetch_all(&mut **conn)
        .await
        .and_then(|rows| rows.iter().skip(1).map(<(String, i64)>::from_row).collect());
    match ids {
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
