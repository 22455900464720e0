//! PostgreSQL's multi-row writes: one array per column, `UNNEST`ed, so a statement's text
//! is the same for any number of rows and stays prepared.

use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres};

use crate::store::batch::Writes;
use crate::store::inbox::{FINISH_SET, Finish, NewUpdate};
use crate::store::subscriptions::{AttemptRecord, ClaimedDelivery};

/// Sends collected writes, one statement per table.
pub(crate) async fn write(c: &mut PgConnection, w: &Writes) -> sqlx::Result<()> {
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
                "INSERT INTO effects (order_id, order_version, kind, payload, created_at, \
                 next_attempt_at) \
                 SELECT o, v, k, p, a, a FROM UNNEST($1::int8[], $2::int8[], $3::text[], \
                 $4::jsonb[], $5::timestamptz[]) AS u(o, v, k, p, a)"
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

/// The `INSERT` of new updates (see [`insert_updates`]), `RETURNING id, seq`: arrays `$1`
/// to `$9` as [`bind_new`] binds them.
pub(super) const INSERT_UPDATES: &str = "INSERT INTO inbox (id, client, idempotency_key, \
     request_hash, order_reference, event, payload, status, response_body, received_at, \
     next_attempt_at) \
     SELECT id, client, key, hash, reference, event, payload, 'accepted', response, at, at \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::jsonb[], $8::jsonb[], $9::timestamptz[]) WITH ORDINALITY \
     AS u(id, client, key, hash, reference, event, payload, response, at, n) ORDER BY n \
     ON CONFLICT (client, idempotency_key) DO NOTHING RETURNING id, seq";

/// Binds the new updates `u` to `$1`..`$9` of [`INSERT_UPDATES`], one array per column.
pub(super) fn bind_new<'q, O>(
    q: QueryAs<'q, Postgres, O, PgArguments>,
    u: &'q [NewUpdate],
) -> QueryAs<'q, Postgres, O, PgArguments> {
    q.bind(u.iter().map(|x| x.id.as_str()).collect::<Vec<_>>())
        .bind(u.iter().map(|x| x.client.as_str()).collect::<Vec<_>>())
        .bind(
            u.iter()
                .map(|x| x.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            u.iter()
                .map(|x| x.request_hash.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            u.iter()
                .map(|x| x.order_reference.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(u.iter().map(|x| x.event.as_deref()).collect::<Vec<_>>())
        .bind(u.iter().map(|x| Json(&x.payload)).collect::<Vec<_>>())
        .bind(
            u.iter()
                .map(|x| x.response.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(u.iter().map(|x| x.received_at).collect::<Vec<_>>())
}

/// Inserts new updates as `accepted` in one statement, in the order given (`seq` follows
/// it: `WITH ORDINALITY ... ORDER BY`); a repeated `(client, idempotency_key)`, also within
/// `updates`, inserts nothing. Returns `(id, seq)` of those inserted. One text for any
/// number of rows, so a group of any size runs the prepared statement (a `VALUES` list
/// would be a statement of its own per size, parsed and planned again).
pub(crate) async fn insert_updates(
    c: &mut PgConnection,
    updates: &[NewUpdate],
) -> sqlx::Result<Vec<(String, i64)>> {
    bind_new(sqlx::query_as(INSERT_UPDATES), updates)
        .fetch_all(c)
        .await
}

/// Ends attempts in one statement (see `Tx::finish_updates`).
pub(crate) async fn finish_updates(c: &mut PgConnection, f: &[Finish]) -> sqlx::Result<()> {
    let sql = format!(
        "UPDATE inbox SET {FINISH_SET} FROM UNNEST($1::int8[], $2::text[], $3::int4[], \
         $4::jsonb[], $5::jsonb[], $6::timestamptz[], $7::timestamptz[], \
         $8::timestamptz[]) AS v(seq, status, attempts, result, errors, \
         next_attempt_at, park_until, processed_at) WHERE inbox.seq = v.seq"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(f.iter().map(|x| x.seq).collect::<Vec<_>>())
        .bind(f.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
        .bind(f.iter().map(|x| x.attempts).collect::<Vec<_>>())
        .bind(
            f.iter()
                .map(|x| x.result.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(
            f.iter()
                .map(|x| x.errors.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(f.iter().map(|x| x.next_attempt_at).collect::<Vec<_>>())
        .bind(f.iter().map(|x| x.park_until).collect::<Vec<_>>())
        .bind(f.iter().map(|x| x.processed_at).collect::<Vec<_>>())
        .execute(c)
        .await?;
    Ok(())
}

/// Records delivered attempts of claims in one statement: the attempts inserted, each
/// delivery still held by its claim set `delivered`, and the failure run of their
/// subscriptions ended. Returns `(id, claims)` of the deliveries set.
pub(crate) async fn record_delivered(
    c: &mut PgConnection,
    done: &[(ClaimedDelivery, AttemptRecord)],
) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as(
        "WITH v AS (SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::timestamptz[], \
         $4::int4[], $5::int8[], $6::text[], $7::text[]) \
         AS v(id, claims, at, status_code, latency_ms, excerpt, error)), \
         a AS (INSERT INTO delivery_attempts (delivery_id, at, status_code, latency_ms, \
         response_excerpt, error) SELECT id, at, status_code, latency_ms, excerpt, error FROM v), \
         u AS (UPDATE deliveries d SET status = 'delivered', attempts = d.attempts + 1, \
         due_at = v.at, lease_until = NULL, done_at = v.at FROM v \
         WHERE d.id = v.id AND d.claims = v.claims AND d.status = 'pending' \
         RETURNING d.id, d.claims, d.subscription_id), \
         r AS (UPDATE subscriptions SET failures = 0, failing_since = NULL \
         WHERE id IN (SELECT subscription_id FROM u) AND failures <> 0) \
         SELECT id, claims FROM u",
    )
    .bind(done.iter().map(|(d, _)| d.id).collect::<Vec<_>>())
    .bind(done.iter().map(|(d, _)| d.claims).collect::<Vec<_>>())
    .bind(done.iter().map(|(_, a)| a.at).collect::<Vec<_>>())
    .bind(
        done.iter()
            .map(|(_, a)| a.status_code.map(i32::from))
            .collect::<Vec<_>>(),
    )
    .bind(done.iter().map(|(_, a)| a.latency_ms).collect::<Vec<_>>())
    .bind(
        done.iter()
            .map(|(_, a)| a.response_excerpt.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        done.iter()
            .map(|(_, a)| a.error.as_deref())
            .collect::<Vec<_>>(),
    )
    .fetch_all(c)
    .await
}
