//! SQLite's multi-row writes: `VALUES` lists of anonymous parameters, in chunks.

use rusqlite::types::Value;
use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;
use sqlx::types::Json;

use crate::store::List;
use crate::store::batch::Writes;
use crate::store::group::{Admit, INSERT_CHUNK, OnError, RETURNING, insert_sql};
use crate::store::inbox::{FINISH_SET, Finish, NewUpdate};
use crate::store::subscriptions::{AttemptRecord, ClaimedDelivery};

/// Rows per multi-row statement: at most 8 binds a row keeps it far below SQLite's limit
/// of 32,766 variables.
const CHUNK: usize = 500;

/// `(?, ?, ?), (?, ?, ?)` for `rows` rows of `cols` columns. Anonymous parameters: the
/// driver looks a numbered one (`$7`) up by name, which SQLite does by walking a list,
/// so a statement with n numbered parameters costs n² steps to bind.
fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

/// Sends collected writes, a statement per table and chunk.
pub(crate) async fn write(c: &mut SqliteConnection, w: &Writes) -> sqlx::Result<()> {
    for i in w.items.chunks(CHUNK) {
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
    for h in w.history.chunks(CHUNK) {
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
    for ids in w.timers_dropped.chunks(CHUNK) {
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
    for t in w.timers.chunks(CHUNK) {
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
            // An effect is due when it is created.
            "INSERT INTO effects (order_id, order_version, kind, payload, created_at, \
             next_attempt_at) SELECT column1, column2, column3, column4, column5, column5 \
             FROM (VALUES",
            ")",
        ),
        (
            &w.changes,
            "INSERT INTO change_feed (order_id, version, kind, payload, at) VALUES",
            "",
        ),
    ];
    for (rows, insert, end) in feeds {
        for f in rows.chunks(CHUNK) {
            let sql = format!("{insert} {}{end}", placeholders(f.len(), 5));
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
    for o in w.orders.chunks(CHUNK) {
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

/// Inserts new updates, a multi-row `INSERT` per chunk (see `Tx::insert_updates`); returns
/// `(id, seq)` of those inserted.
pub(crate) async fn insert_updates(
    c: &mut SqliteConnection,
    updates: &[NewUpdate],
) -> sqlx::Result<Vec<(String, i64)>> {
    let mut ids = Vec::with_capacity(updates.len());
    for chunk in updates.chunks(INSERT_CHUNK) {
        let sql = insert_sql(OnError::Statement, Admit::Now, chunk.len()) + RETURNING;
        let mut q = sqlx::query_as(AssertSqlSafe(sql));
        // The values the group writer binds through rusqlite, so both store the same text.
        for v in chunk.iter().flat_map(super::group::values) {
            q = match super::group::owned(v) {
                Value::Null => q.bind(None::<String>),
                Value::Integer(i) => q.bind(i),
                Value::Real(f) => q.bind(f),
                Value::Text(s) => q.bind(s),
                Value::Blob(b) => q.bind(b),
            };
        }
        ids.extend(q.fetch_all(&mut *c).await?);
    }
    Ok(ids)
}

/// Ends attempts, a statement per chunk (see `Tx::finish_updates`).
pub(crate) async fn finish_updates(c: &mut SqliteConnection, f: &[Finish]) -> sqlx::Result<()> {
    for chunk in f.chunks(CHUNK) {
        // SQLite names the columns of a VALUES list column1, column2, ...
        let sql = format!(
            "UPDATE inbox SET {} FROM (SELECT column1 AS seq, column2 AS status, \
             column3 AS attempts, column4 AS result, column5 AS errors, \
             column6 AS next_attempt_at, column7 AS park_until, \
             column8 AS processed_at FROM (VALUES {})) AS v \
             WHERE inbox.seq = v.seq",
            FINISH_SET,
            placeholders(chunk.len(), 8)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for x in chunk {
            q = q
                .bind(x.seq)
                .bind(x.status)
                .bind(x.attempts)
                .bind(x.result.as_ref().map(Json))
                .bind(x.errors.as_ref().map(Json))
                .bind(x.next_attempt_at)
                .bind(x.park_until)
                .bind(x.processed_at);
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

/// Records delivered attempts of claims, a statement per table and chunk (see the
/// PostgreSQL twin). Returns `(id, claims)` of the deliveries set `delivered`.
pub(crate) async fn record_delivered(
    c: &mut SqliteConnection,
    done: &[(ClaimedDelivery, AttemptRecord)],
) -> sqlx::Result<Vec<(i64, i64)>> {
    let mut set = Vec::with_capacity(done.len());
    for chunk in done.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO delivery_attempts (delivery_id, at, status_code, latency_ms, \
             response_excerpt, error) VALUES {}",
            placeholders(chunk.len(), 6)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (d, a) in chunk {
            q = q
                .bind(d.id)
                .bind(a.at)
                .bind(a.status_code.map(i32::from))
                .bind(a.latency_ms)
                .bind(a.response_excerpt.as_deref())
                .bind(a.error.as_deref());
        }
        q.execute(&mut *c).await?;
        let sql = format!(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
             due_at = v.column3, lease_until = NULL, done_at = v.column3 \
             FROM (VALUES {}) AS v WHERE deliveries.id = v.column1 \
             AND deliveries.claims = v.column2 AND deliveries.status = 'pending' \
             RETURNING id, claims, subscription_id",
            placeholders(chunk.len(), 3)
        );
        let mut q = sqlx::query_as(AssertSqlSafe(sql));
        for (d, a) in chunk {
            q = q.bind(d.id).bind(d.claims).bind(a.at);
        }
        let rows: Vec<(i64, i64, i64)> = q.fetch_all(&mut *c).await?;
        let subscriptions: Vec<i64> = rows.iter().map(|r| r.2).collect();
        sqlx::query(
            "UPDATE subscriptions SET failures = 0, failing_since = NULL \
             WHERE id IN (SELECT value FROM json_each(?)) AND failures <> 0",
        )
        .bind(List(&subscriptions))
        .execute(&mut *c)
        .await?;
        set.extend(rows.into_iter().map(|(id, claims, _)| (id, claims)));
    }
    Ok(set)
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
