//! PostgreSQL's multi-row writes: one array per column, `UNNEST`ed, so a statement's text
//! is the same for any number of rows and stays prepared.

use std::fmt::Write as _;

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{Arguments as _, AssertSqlSafe, Postgres};

use crate::store::batch::Writes;
use crate::store::inbox::{FINISH_SET, Finish, NewUpdate};
use crate::store::subscriptions::{AttemptRecord, ClaimedDelivery};

/// Sends collected writes: one statement for all tables, each table's rows a part of it
/// (see [`OneStatement`]), so a batch's writes cost one round trip.
///
/// The parts run on one snapshot, so none may need another's rows: the items and orders
/// they update and the rows their inserts refer to exist before the statement; the timers
/// of `timers_dropped` are deleted and the new ones inserted in one statement too, which
/// is the same as one after the other because the delete does not see the inserted rows
/// and nothing on `timers` is unique but its id.
pub(crate) async fn write(c: &mut PgConnection, w: &Writes) -> sqlx::Result<()> {
    let mut s = OneStatement::default();
    if !w.items.is_empty() {
        let i = &w.items;
        s.part(
            "UPDATE items SET state = v.state, reserved = v.reserved, \
             state_entered_at = v.entered, attributes = v.attributes \
             FROM UNNEST($1::int8[], $2::text[], $3::bool[], $4::timestamptz[], $5::jsonb[]) \
             AS v(id, state, reserved, entered, attributes) WHERE items.id = v.id",
            |a| {
                a.add(i.iter().map(|x| x.id).collect::<Vec<_>>())?;
                a.add(i.iter().map(|x| x.state.as_str()).collect::<Vec<_>>())?;
                a.add(i.iter().map(|x| x.reserved).collect::<Vec<_>>())?;
                a.add(i.iter().map(|x| x.state_entered_at).collect::<Vec<_>>())?;
                a.add(i.iter().map(|x| Json(&x.attributes)).collect::<Vec<_>>())
            },
        )?;
    }
    if !w.history.is_empty() {
        let h = &w.history;
        s.part(
            "INSERT INTO item_history (order_id, item_id, from_state, to_state, event, source, \
             reason, at) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::timestamptz[])",
            |a| {
                a.add(h.iter().map(|x| x.order_id).collect::<Vec<_>>())?;
                a.add(h.iter().map(|x| x.item_id).collect::<Vec<_>>())?;
                a.add(
                    h.iter()
                        .map(|x| x.from_state.as_deref())
                        .collect::<Vec<_>>(),
                )?;
                a.add(h.iter().map(|x| x.to_state.as_str()).collect::<Vec<_>>())?;
                a.add(h.iter().map(|x| x.event.as_deref()).collect::<Vec<_>>())?;
                a.add(h.iter().map(|x| x.source.as_str()).collect::<Vec<_>>())?;
                a.add(h.iter().map(|x| x.reason.as_deref()).collect::<Vec<_>>())?;
                a.add(h.iter().map(|x| x.at).collect::<Vec<_>>())
            },
        )?;
    }
    if !w.timers_dropped.is_empty() {
        s.part("DELETE FROM timers WHERE item_id = ANY($1)", |a| {
            a.add(&w.timers_dropped[..])
        })?;
    }
    if !w.timers.is_empty() {
        let t = &w.timers;
        s.part(
            "INSERT INTO timers (order_id, item_id, state, kind, event, due_at) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], \
             $6::timestamptz[])",
            |a| {
                a.add(t.iter().map(|x| x.order_id).collect::<Vec<_>>())?;
                a.add(t.iter().map(|x| x.item_id).collect::<Vec<_>>())?;
                a.add(t.iter().map(|x| x.state.as_str()).collect::<Vec<_>>())?;
                a.add(t.iter().map(|x| x.kind).collect::<Vec<_>>())?;
                a.add(t.iter().map(|x| x.event.as_deref()).collect::<Vec<_>>())?;
                a.add(t.iter().map(|x| x.due_at).collect::<Vec<_>>())
            },
        )?;
    }
    for (rows, sql) in [
        (
            &w.effects,
            "INSERT INTO effects (order_id, order_version, kind, payload, created_at, \
             next_attempt_at) \
             SELECT o, v, k, p, a, a FROM UNNEST($1::int8[], $2::int8[], $3::text[], \
             $4::jsonb[], $5::timestamptz[]) AS u(o, v, k, p, a)",
        ),
        (
            &w.changes,
            "INSERT INTO change_feed (order_id, version, kind, payload, at) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::jsonb[], \
             $5::timestamptz[])",
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        s.part(sql, |a| {
            a.add(rows.iter().map(|x| x.order_id).collect::<Vec<_>>())?;
            a.add(rows.iter().map(|x| x.version).collect::<Vec<_>>())?;
            a.add(rows.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>())?;
            a.add(rows.iter().map(|x| Json(&x.payload)).collect::<Vec<_>>())?;
            a.add(rows.iter().map(|x| x.at).collect::<Vec<_>>())
        })?;
    }
    if !w.orders.is_empty() {
        let o = &w.orders;
        s.part(
            "UPDATE orders SET attributes = v.attributes, version = v.version, \
             updated_at = v.at FROM UNNEST($1::int8[], $2::jsonb[], $3::int8[], \
             $4::timestamptz[]) AS v(id, attributes, version, at) WHERE orders.id = v.id",
            |a| {
                a.add(o.iter().map(|x| x.id).collect::<Vec<_>>())?;
                a.add(o.iter().map(|x| Json(&x.attributes)).collect::<Vec<_>>())?;
                a.add(o.iter().map(|x| x.version).collect::<Vec<_>>())?;
                a.add(o.iter().map(|x| x.at).collect::<Vec<_>>())
            },
        )?;
    }
    s.execute(c).await
}

/// Data-modifying statements sent as one: `WITH p0 AS (first), p1 AS (second) last`.
/// PostgreSQL runs every part, referenced or not, on the statement's snapshot, in an order
/// of its choosing: a part must not read what another writes, nor write a row another one
/// writes. Each part's parameters are numbered after the ones of the parts before it.
#[derive(Default)]
struct OneStatement {
    parts: Vec<String>,
    args: PgArguments,
}

impl OneStatement {
    /// Adds `sql`, whose parameters are `$1`, `$2`, ..., and binds their values in order.
    fn part(
        &mut self,
        sql: &str,
        bind: impl FnOnce(&mut PgArguments) -> Result<(), BoxDynError>,
    ) -> sqlx::Result<()> {
        let before = self.args.len();
        self.parts.push(renumber(sql, before));
        bind(&mut self.args).map_err(sqlx::Error::Encode)
    }

    async fn execute(self, c: &mut PgConnection) -> sqlx::Result<()> {
        let Some((last, first)) = self.parts.split_last() else {
            return Ok(());
        };
        let mut sql = String::new();
        for (i, part) in first.iter().enumerate() {
            let _ = write!(
                sql,
                "{} p{i} AS ({part})",
                if i == 0 { "WITH" } else { "," }
            );
        }
        if !first.is_empty() {
            sql.push(' ');
        }
        sql.push_str(last);
        sqlx::query_with(AssertSqlSafe(sql), self.args)
            .execute(c)
            .await?;
        Ok(())
    }
}

/// `sql` with every parameter `$n` renamed `$(n + offset)`. The statements given here have
/// no other `$` (no dollar quotes).
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => {
                let _ = write!(out, "{}", n + offset);
            }
            // Not a parameter: kept as it is.
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The `INSERT ... SELECT` of new updates from arrays `$1` to `$9` as [`bind_new`] binds
/// them, in the order given (`seq` follows it: `WITH ORDINALITY ... ORDER BY`); what
/// follows it is up to its users.
macro_rules! insert_new {
    () => {
        "INSERT INTO inbox (id, client, idempotency_key, request_hash, order_reference, \
         event, payload, status, response_body, received_at, next_attempt_at) \
         SELECT id, client, key, hash, reference, event, payload, 'accepted', response, at, at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::jsonb[], $8::jsonb[], $9::timestamptz[]) WITH ORDINALITY \
         AS u(id, client, key, hash, reference, event, payload, response, at, n) ORDER BY n"
    };
}

/// The `INSERT` of new updates (see [`insert_updates`]), `RETURNING id, seq`; a repeated
/// `(client, idempotency_key)` inserts nothing.
pub(super) const INSERT_UPDATES: &str = concat!(
    insert_new!(),
    " ON CONFLICT (client, idempotency_key) DO NOTHING RETURNING id, seq"
);

/// [`INSERT_UPDATES`] without its `ON CONFLICT`, `RETURNING seq` (every row is inserted, so
/// the ids are known): a repeated key fails the statement, which then stores nothing.
/// PostgreSQL inserts a row that may conflict as a speculative one (checked against the
/// index first, a lock on a token, a second WAL record to confirm it), a tenth to a sixth
/// of its work for an inbox row here; a group with no repeat needs none of that (see
/// `GroupConn::insert`).
pub(super) const INSERT_UPDATES_NO_REPEAT: &str = concat!(insert_new!(), " RETURNING seq");

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

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn parameters_are_renumbered_after_the_parts_before() {
        let sql = "UPDATE t SET a = v.a FROM UNNEST($1::int8[], $2::text[]) AS v WHERE $10 > 0";
        assert_eq!(renumber(sql, 0), sql);
        assert_eq!(
            renumber(sql, 9),
            "UPDATE t SET a = v.a FROM UNNEST($10::int8[], $11::text[]) AS v WHERE $19 > 0"
        );
        assert_eq!(renumber("a = $", 2), "a = $");
    }
}
