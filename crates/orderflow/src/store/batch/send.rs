//! Sending collected [`Writes`]: one multi-row statement per table, `UNNEST` arrays on
//! PostgreSQL, `VALUES` lists on SQLite, in the order a single change writes its rows.

use super::*;

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
