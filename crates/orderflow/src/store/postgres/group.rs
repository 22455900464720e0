//! Group commits on PostgreSQL: a group is one statement outside a transaction block, so
//! it is a transaction of its own, committed (`synchronous_commit`: flushed) before the
//! answer comes back. It inserts the rows and notifies the listening processes, on a
//! connection of the group writer's own: one round trip per group, instead of the pool's
//! acquire, `BEGIN`, `INSERT`, `pg_notify` and `COMMIT` (see `store::group`); two for a
//! group that meets a repeated key while none was expected (see `GroupConn::insert`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection as _};

use super::writes::{INSERT_UPDATES, INSERT_UPDATES_NO_REPEAT, bind_new};
use super::{CHANNEL, DUE, PING_IDLE};
use crate::store::inbox::{NewUpdate, UpdateRow};
use crate::store::{List, Result, StoreError};

/// [`INSERT_UPDATES`] and a `NOTIFY` of due updates (`$10`, `$11`), answering with the
/// `(id, seq)` of each inserted row.
static INSERT_NOTIFYING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| notifying(INSERT_UPDATES, "ins.id, ins.seq"));

/// The same with [`INSERT_UPDATES_NO_REPEAT`], which fails, storing nothing, if a key
/// repeats; it answers with the `seq`s alone, ascending, in one row: every row was
/// inserted, in the order given, so they are the updates' in order.
static INSERT_NO_REPEAT_NOTIFYING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    notifying(
        INSERT_UPDATES_NO_REPEAT,
        "array_agg(ins.seq ORDER BY ins.seq)",
    )
});

/// `insert` (its `RETURNING` read as `ins`) with a `NOTIFY` of due updates (`$10`, `$11`),
/// answering with `answer`. The `woke` CTE calls a volatile function, so it is
/// materialised: evaluated at most once, when the join first reads it (the plan reads
/// `ins` first, so a group that inserted nothing notifies nobody; a notify too many would
/// only wake a worker that finds nothing).
fn notifying(insert: &str, answer: &str) -> String {
    format!(
        "WITH ins AS ({insert}), woke AS (SELECT pg_notify($10, $11)) \
         SELECT {answer} FROM ins, woke"
    )
}

/// For this long after a group met a repeated key, groups go with `ON CONFLICT` at once:
/// an ERP that resends, resends a run of updates (a batch it retries), and each failed
/// statement costs a group's work.
const AFTER_REPEAT: Duration = Duration::from_secs(10);

/// The group writer's own connection, opened at the first group and kept (see
/// `store::group`: the writer runs on a thread and runtime of its own, and a connection of
/// the pool would have its socket driven by the server's runtime, behind the requests).
#[derive(Default)]
pub(crate) struct GroupConn {
    own: Option<Own>,
    /// When a group last met a repeated key.
    repeat_at: Option<Instant>,
}

struct Own {
    conn: PgConnection,
    used: Instant,
}

impl GroupConn {
    /// Stores `updates` in one statement, committed when it returns; the `seq` of each, in
    /// order, or `None` where a repeated key stored nothing. A failed statement stores
    /// nothing.
    ///
    /// Most groups hold no repeated key, so a group is first inserted without `ON CONFLICT`
    /// (see [`INSERT_UPDATES_NO_REPEAT`]). If a key repeats, that statement fails and
    /// stores nothing, and the group goes again with it, as do the groups of the next
    /// [`AFTER_REPEAT`].
    pub(crate) async fn insert(
        &mut self,
        pool: &PgPool,
        updates: &[NewUpdate],
    ) -> Result<Vec<Option<i64>>> {
        let repeats_likely = self.repeat_at.is_some_and(|at| at.elapsed() < AFTER_REPEAT);
        let conn = self.conn(pool).await?;
        if !repeats_likely {
            let inserted: sqlx::Result<(Option<Vec<i64>>,)> =
                bind_new(sqlx::query_as(INSERT_NO_REPEAT_NOTIFYING.as_str()), updates)
                    .bind(CHANNEL)
                    .bind(DUE)
                    .fetch_one(&mut *conn)
                    .await;
            match inserted {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    self.repeat_at = Some(Instant::now());
                }
                inserted => {
                    let seqs = self.kept(inserted)?.0.unwrap_or_default();
                    if seqs.len() != updates.len() {
                        return Err(StoreError::Corrupt(format!(
                            "a group of {} updates was stored as {} rows",
                            updates.len(),
                            seqs.len()
                        )));
                    }
                    return Ok(seqs.into_iter().map(Some).collect());
                }
            }
        }
        let conn = self.conn(pool).await?;
        let inserted: sqlx::Result<Vec<(String, i64)>> =
            bind_new(sqlx::query_as(INSERT_NOTIFYING.as_str()), updates)
                .bind(CHANNEL)
                .bind(DUE)
                .fetch_all(&mut *conn)
                .await;
        let seq_of: HashMap<String, i64> = self.kept(inserted)?.into_iter().collect();
        Ok(updates.iter().map(|u| seq_of.get(&u.id).copied()).collect())
    }

    /// The rows of `client` stored under `keys`, read on the writer's connection.
    pub(crate) async fn existing(
        &mut self,
        pool: &PgPool,
        sql: &str,
        client: &str,
        keys: &[&str],
    ) -> Result<Vec<UpdateRow>> {
        let conn = self.conn(pool).await?;
        let rows = sqlx::query_as(AssertSqlSafe(sql))
            .bind(client)
            .bind(List(keys))
            .fetch_all(&mut *conn)
            .await;
        self.kept(rows)
    }

    /// The connection, opened on first use on the caller's runtime (the writer's). One that
    /// sat idle since its last group is pinged first, as the pool does with the ones it
    /// hands out, and replaced when that fails.
    async fn conn(&mut self, pool: &PgPool) -> Result<&mut PgConnection> {
        if let Some(own) = &mut self.own
            && own.used.elapsed() >= PING_IDLE
            && own.conn.ping().await.is_err()
        {
            self.own = None;
        }
        let own = match self.own.take() {
            Some(own) => own,
            None => Own {
                conn: PgConnection::connect_with(&pool.connect_options()).await?,
                used: Instant::now(),
            },
        };
        let own = self.own.insert(own);
        own.used = Instant::now();
        Ok(&mut own.conn)
    }

    /// `r`, after dropping the connection on an error that may have broken it (anything
    /// but an error PostgreSQL reported for the statement); the next group opens another.
    fn kept<T>(&mut self, r: sqlx::Result<T>) -> Result<T> {
        if let Err(e) = &r
            && !matches!(e, sqlx::Error::Database(_))
        {
            self.own = None;
        }
        Ok(r?)
    }
}
