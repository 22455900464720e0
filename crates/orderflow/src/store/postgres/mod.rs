//! PostgreSQL: for many instances on one database. Its connection setup, its [`Dialect`],
//! the statements whose shape is its own ([`writes`]: one array per column, `UNNEST`), and
//! the wake-ups between processes: `NOTIFY` at commit ([`notify`]), `LISTEN` in one task per
//! store ([`listen`]).

mod group;
mod writes;

use std::str::FromStr;
use std::sync::Weak;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::wake::{Raised, Wakeups};
use super::{Dialect, Result, StoreError, cause};

pub(super) use group::GroupConn;
pub(super) use writes::{finish_updates, insert_updates, record_delivered, write};

pub(super) static MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Begins a transaction that claims from the due index (see `claim_begin`). With sequential
/// scans off, a table that has no other path (the small `inbox_attempts`, read in every
/// worker batch) is planned at a cost of 10^10, far past `jit_above_cost`: PostgreSQL then
/// compiled that read, 190 ms a batch (measured: a drain at 0.4 of its rate). JIT is off
/// for these transactions, whose statements are all small.
const CLAIM_BEGIN: &str = "BEGIN; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL enable_seqscan = off; SET LOCAL jit = off";

pub(super) static DIALECT: Dialect = Dialect {
    list: |col, n| format!("{col} = ANY(${n})"),
    placeholder: |n| format!("${n}"),
    // Exclusive among writers, yet rows that reference the order can still be inserted.
    lock_order: " FOR NO KEY UPDATE",
    try_lock_order: " FOR NO KEY UPDATE SKIP LOCKED",
    lock_rows: " FOR UPDATE",
    due_index: "",
    // Claims run side by side. Each locks the due rows it reads (skipping rows another
    // claim holds) and takes a transaction lock per order (keyed by a hash of its
    // reference; a row whose order another claim holds is left for the next claim). The
    // lock is released only after its claim committed, so the update that follows (a new
    // snapshot) sees every earlier claim of its orders: see `claim_recheck`. `OFFSET 0`
    // keeps the lock call out of the inner scan, so it runs only for rows returned.
    claim_lock: " FOR UPDATE OF r SKIP LOCKED",
    claim_read: |inner| {
        format!(
            "SELECT c.seq, c.order_reference \
             FROM ({inner} OFFSET 0 FOR UPDATE OF r SKIP LOCKED) c \
             WHERE pg_try_advisory_xact_lock(7036111, hashtext(c.order_reference)) LIMIT $2"
        )
    },
    // Updates go into the per-order index as they are stored: without that index at all,
    // the ingest was no faster here (an index entry is a WAL record, not a page).
    admits: false,
    claim_recheck: true,
    // Walk the due index in claim order, stopping at the limit: without fresh statistics
    // (a burst into an idle inbox) the planner expects a few due rows, reads them all with
    // a bitmap scan and sorts them, so each claim would cost time in proportion to the
    // backlog. Both settings end with the transaction; they go with its `BEGIN`, in one
    // round trip.
    claim_begin: Some(CLAIM_BEGIN),
    // The worker's batch reads the due index as a claim does (see `claim_begin`). Its read
    // locks the due rows it returns (`claim_lock`), and the transaction processes and
    // finishes them: one commit and one write of each row a batch, where a committed lease
    // cost a second of each (the lease's `UPDATE` touched every index of `inbox`). Other
    // workers skip the held rows and see them waiting until the commit makes them final,
    // so none claims a later update of their orders meanwhile. Wait mode and the
    // one-by-one fallback still commit a lease first (`claim_read`).
    batch_begin: Some(CLAIM_BEGIN),
    append_error: "errors || jsonb_build_array($4::jsonb)",
    retry_set: "status = 'accepted', next_attempt_at = $1, park_until = NULL, \
         lease_owner = NULL, lease_until = NULL, processed_at = NULL, \
         errors = errors || jsonb_build_array(CAST($2 AS JSONB) || \
         jsonb_build_object('attempt', attempts, 'from', status))",
    // SUM of bigint is a numeric wider than any integer column.
    reserved_quantity: "SELECT LEAST(COALESCE(SUM(quantity), 0), 9223372036854775807)::BIGINT \
         FROM items WHERE sku = $1 AND reserved",
    explain: "EXPLAIN ",
    // A transaction that drew a lower `seq` can commit after one with a higher `seq`: read
    // in `(tx, seq)` order, and only up to the oldest transaction still running, so no
    // late commit is skipped.
    feed_after: "SELECT seq, CAST(CAST(tx AS TEXT) AS BIGINT) AS tx, order_id, at \
         FROM change_feed \
         WHERE (tx, seq) > (CAST(CAST($1 AS TEXT) AS XID8), $2) \
           AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY tx, seq LIMIT $3",
    // `COLLATE "C"`: by bytes, as the other backend and Rust sort, whatever the database's
    // collation.
    sorted_item_values: |col| {
        format!(
            "COALESCE((SELECT jsonb_agg(v ORDER BY v COLLATE \"C\") \
             FROM (SELECT DISTINCT {col} AS v FROM items WHERE order_id = o.id) d), '[]')"
        )
    },
    feed_backlog: "SELECT COUNT(*), MIN(f.at) FROM change_feed f \
         JOIN projector_checkpoint c ON c.name = $1 \
         WHERE (f.tx, f.seq) > (CAST(CAST(c.last_tx AS TEXT) AS XID8), c.last_seq)",
    feed_rows_after: "SELECT f.seq, CAST(CAST(f.tx AS TEXT) AS BIGINT) AS tx, f.order_id, \
         f.version, f.kind, f.payload, f.at, o.reference \
         FROM change_feed f JOIN orders o ON o.id = f.order_id \
         WHERE (f.tx, f.seq) > (CAST(CAST($1 AS TEXT) AS XID8), $2) \
           AND f.tx < pg_snapshot_xmin(pg_current_snapshot()) \
           AND ($4 IS NULL OR NOT pg_visible_in_snapshot(f.tx, CAST($4 AS pg_snapshot))) \
         ORDER BY f.tx, f.seq LIMIT $3",
    feed_rows_replay: "SELECT f.seq, CAST(CAST(f.tx AS TEXT) AS BIGINT) AS tx, f.order_id, \
         f.version, f.kind, f.payload, f.at, o.reference \
         FROM change_feed f JOIN orders o ON o.id = f.order_id \
         WHERE f.at >= $1 AND f.seq > $4 \
           AND ((f.tx, f.seq) <= (CAST(CAST($2 AS TEXT) AS XID8), $3) \
             OR ($6 IS NOT NULL AND pg_visible_in_snapshot(f.tx, CAST($6 AS pg_snapshot)))) \
         ORDER BY f.seq LIMIT $5",
    // Every transaction older than the oldest one still running has committed; a change
    // of a transaction still running is after the end.
    feed_end: "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT) - 1, \
         CAST(9223372036854775807 AS BIGINT), CAST(pg_current_snapshot() AS TEXT)",
    delivery_claim_lock: " FOR UPDATE OF d SKIP LOCKED",
    subscription_lock: " FOR UPDATE SKIP LOCKED",
    subscription_key_share: " FOR KEY SHARE",
    feed_pending_of_order: "SELECT CAST(CAST(f.tx AS TEXT) AS BIGINT), f.seq \
         FROM change_feed f JOIN subscriptions s ON s.id = $1 \
         WHERE f.order_id = $2 \
           AND (f.tx, f.seq) > (CAST(CAST(s.cursor_tx AS TEXT) AS XID8), s.cursor_seq) \
           AND (s.start_snapshot IS NULL \
             OR NOT pg_visible_in_snapshot(f.tx, CAST(s.start_snapshot AS pg_snapshot))) \
         ORDER BY f.tx DESC, f.seq DESC LIMIT 1",
};

/// How long a first connection to PostgreSQL may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled connection idle this long is pinged before it is handed out.
const PING_IDLE: Duration = Duration::from_secs(1);

/// The channel of every wake-up.
const CHANNEL: &str = "orderflow_inbox";
/// Payload of "updates may be due" (an empty payload, from older builds, means the same).
const DUE: &str = "due";
/// Payload of "effects may be due".
const EFFECTS: &str = "effects";
/// Payload prefix of settled updates: `settled:` and their `seq`s, comma-separated.
const SETTLED: &str = "settled:";
/// `seq`s per settled payload (PostgreSQL takes payloads up to 8,000 bytes).
const SEQS_PER_PAYLOAD: usize = 300;

pub(super) async fn connect(url: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    // One direct attempt first: the pool would retry until its acquire timeout and then say
    // only "pool timed out", not why.
    let at = format!("{}:{}", options.get_host(), options.get_port());
    let probe = tokio::time::timeout(
        CONNECT_TIMEOUT,
        <PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await;
    match probe {
        Ok(Ok(c)) => {
            let _ = sqlx::Connection::close(c).await;
        }
        Ok(Err(e)) => {
            return Err(StoreError::Connect(format!(
                "cannot connect to PostgreSQL at {at}: {}",
                cause(&e)
            )));
        }
        Err(_) => {
            return Err(StoreError::Connect(format!(
                "cannot connect to PostgreSQL at {at}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    }
    Ok(PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        // sqlx pings every connection it hands out by default: one more round trip before
        // each transaction. It already pings each one it takes back (and drops it when that
        // fails), so only a connection that sat idle since may have been cut off.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?)
}

/// Sends what a transaction raised to every listening process, at its commit. The one
/// place that calls `pg_notify`.
pub(super) async fn notify(c: &mut PgConnection, raised: &Raised) -> Result<()> {
    let mut payloads = Vec::new();
    if raised.inbox {
        payloads.push(DUE.to_owned());
    }
    if raised.effects {
        payloads.push(EFFECTS.to_owned());
    }
    for seqs in raised.settled.chunks(SEQS_PER_PAYLOAD) {
        let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
        payloads.push(format!("{SETTLED}{}", list.join(",")));
    }
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(c)
        .await?;
    Ok(())
}

/// Forwards `NOTIFY`s from any process to `wake`; reconnects after a lost connection (the
/// waiters' fallback polling covers the gap). Ends when the store is closed, or at the
/// first notification after it was dropped.
pub(super) async fn listen(pool: PgPool, wake: Weak<Wakeups>, closed: CancellationToken) {
    while !closed.is_cancelled() && wake.strong_count() > 0 && !pool.is_closed() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match wake.upgrade() {
            Some(wake) => wake.listen_ready.send_replace(true),
            None => return,
        };
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) => {
                        let Some(wake) = wake.upgrade() else { return };
                        deliver(&wake, n.payload());
                    }
                    Err(e) => {
                        if !pool.is_closed() {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        }
                        if let Some(wake) = wake.upgrade() {
                            wake.listen_ready.send_replace(false);
                        }
                        break;
                    }
                },
                () = closed.cancelled() => return,
            }
        }
    }
}

/// One notification's payload, delivered in this process.
fn deliver(wake: &Wakeups, payload: &str) {
    match payload.strip_prefix(SETTLED) {
        Some(list) => {
            let seqs: Vec<i64> = list.split(',').filter_map(|s| s.parse().ok()).collect();
            wake.publish_settled(&seqs);
        }
        None if payload == EFFECTS => wake.raise_effects(),
        None => wake.raise_inbox(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_say_due_or_which_updates_settled() {
        let wake = Wakeups::new(None);
        let mut rx = wake.settled.subscribe();
        deliver(&wake, "settled:3,17");
        assert_eq!(rx.try_recv().ok(), Some(3));
        assert_eq!(rx.try_recv().ok(), Some(17));
        deliver(&wake, DUE);
        assert!(rx.try_recv().is_err());
    }
}
