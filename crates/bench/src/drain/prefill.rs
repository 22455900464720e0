//! `bench drain --prefill N`: an inbox that already holds `N` applied updates, written
//! straight into the server's database before the end-to-end phase.

use super::*;

/// `--prefill`: applied updates `$1..=$2` over `$3` orders, received `$4` a second until
/// the unix time `$5` (SQLite).
const PREFILL_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n \
     WHERE i < $2) \
     INSERT INTO inbox (id, client, request_hash, order_reference, event, payload, status, \
       attempts, result, response_status, response_body, received_at, processed_at, \
       next_attempt_at) \
     SELECT printf('prefill-%012d', i), 'bench', printf('%064d', i), 'D-' || (i % $3), \
       'touch', json_object('order_reference', 'D-' || (i % $3), 'event', 'touch', \
       'attributes', json_object('c', i % 32)), 'applied', 1, '{}', 202, \
       json_object('id', printf('prefill-%012d', i), 'status', 'accepted'), \
       strftime('%Y-%m-%dT%H:%M:%f+00:00', $5 - ($2 - i) * 1.0 / $4, 'unixepoch'), \
       strftime('%Y-%m-%dT%H:%M:%f+00:00', $5 - ($2 - i) * 1.0 / $4 + 0.01, 'unixepoch'), \
       strftime('%Y-%m-%dT%H:%M:%f+00:00', $5 - ($2 - i) * 1.0 / $4, 'unixepoch') \
     FROM n";
/// The same on PostgreSQL.
const PREFILL_POSTGRES: &str = "INSERT INTO inbox (id, client, request_hash, order_reference, \
       event, payload, status, attempts, result, response_status, response_body, received_at, \
       processed_at, next_attempt_at) \
     SELECT 'prefill-' || lpad(i::text, 12, '0'), 'bench', lpad(i::text, 64, '0'), \
       'D-' || (i % $3), 'touch', jsonb_build_object('order_reference', 'D-' || (i % $3), \
       'event', 'touch', 'attributes', jsonb_build_object('c', i % 32)), 'applied', 1, '{}', \
       202, jsonb_build_object('id', 'prefill-' || lpad(i::text, 12, '0'), 'status', \
       'accepted'), to_timestamp($5 - ($2 - i)::float8 / $4), \
       to_timestamp($5 - ($2 - i)::float8 / $4 + 0.01), to_timestamp($5 - ($2 - i)::float8 / $4) \
     FROM generate_series($1::bigint, $2::bigint) AS i";

/// Stores `n` applied updates over `orders` orders, received `rate` a second until now
/// (`--prefill`), in transactions of 200,000, through the server's database.
pub(super) async fn prefill(
    database_url: &str,
    n: u64,
    orders: u64,
    rate: u64,
) -> anyhow::Result<()> {
    const CHUNK: u64 = 200_000;
    let now = Utc::now().timestamp_micros() as f64 / 1e6;
    // Each chunk's `$1..$5`: first and last number, orders, rate, time of the last.
    let chunks = (1..=n).step_by(CHUNK as usize).map(|a| {
        let b = (a + CHUNK - 1).min(n);
        let end = now - (n - b) as f64 / rate as f64;
        (a as i64, b as i64, orders as i64, rate as f64, end)
    });
    macro_rules! chunk {
        ($sql:expr, $p:expr) => {
            sqlx::query($sql)
                .bind($p.0)
                .bind($p.1)
                .bind($p.2)
                .bind($p.3)
                .bind($p.4)
        };
    }
    if let Some(file) = database_url.strip_prefix("sqlite://") {
        let mut c = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(file)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await?;
        for p in chunks {
            chunk!(PREFILL_SQLITE, p).execute(&mut c).await?;
        }
        // The run starts with the prefill in the database file, not in the WAL.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut c)
            .await?;
        c.close().await?;
    } else {
        let mut c = sqlx::PgConnection::connect(database_url).await?;
        for p in chunks {
            chunk!(PREFILL_POSTGRES, p).execute(&mut c).await?;
        }
        sqlx::query("ANALYZE inbox").execute(&mut c).await?;
        c.close().await?;
    }
    Ok(())
}
