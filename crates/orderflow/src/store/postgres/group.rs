//! Group commits on PostgreSQL: a group is one statement outside a transaction block, so
//! it is a transaction of its own, committed (`synchronous_commit`: flushed) before the
//! answer comes back. It inserts the rows and notifies the listening processes, on a
//! connection held from one group to the next: one round trip per group, instead of the
//! pool's acquire, `BEGIN`, `INSERT`, `pg_notify` and `COMMIT` (see `store::group`).

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;

use super::writes::{INSERT_UPDATES, bind_new};
use super::{CHANNEL, DUE};
use crate::store::Result;
use crate::store::inbox::NewUpdate;

/// [`INSERT_UPDATES`] and a `NOTIFY` of due updates (`$10`, `$11`). The `woke` CTE calls a
/// volatile function, so it is materialised: evaluated at most once, when the join first
/// reads it (the plan reads `ins` first, so a group that inserted nothing notifies nobody;
/// a notify too many would only wake a worker that finds nothing).
static INSERT_NOTIFYING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH ins AS ({INSERT_UPDATES}), woke AS (SELECT pg_notify($10, $11)) \
         SELECT ins.id, ins.seq FROM ins, woke"
    )
});

/// The connection a group writer holds between groups.
#[derive(Default)]
pub(crate) struct GroupConn {
    held: Option<PoolConnection<Postgres>>,
}

impl GroupConn {
    /// Stores `updates` in one statement, committed when it returns; the `(id, seq)` of
    /// each inserted one. A failed statement stores nothing.
    pub(crate) async fn insert(
        &mut self,
        pool: &PgPool,
        updates: &[NewUpdate],
    ) -> Result<Vec<(String, i64)>> {
        let mut conn = match self.held.take() {
            Some(c) => c,
            None => pool.acquire().await?,
        };
        let inserted = bind_new(sqlx::query_as(INSERT_NOTIFYING.as_str()), updates)
            .bind(CHANNEL)
            .bind(DUE)
            .fetch_all(&mut *conn)
            .await?;
        // Kept only after a success: after an error it goes back to the pool, whose ping on
        // release drops it if it is broken, and the next group takes one from the pool.
        self.held = Some(conn);
        Ok(inserted)
    }

    pub(crate) fn release(&mut self) {
        self.held = None;
    }
}
