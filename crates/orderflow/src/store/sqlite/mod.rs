//! SQLite: the embedded default. Its connection setup, its [`Dialect`], and the statements
//! whose shape is its own ([`writes`]: multi-row `VALUES` lists; [`group`]: inserts sent
//! as one statement list on a held connection).

mod checkpoint;
mod group;
pub(crate) mod rows;
mod writes;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Dialect, Result, StoreError, cause};

pub(super) use group::GroupConn;
pub(super) use writes::{finish_updates, insert_updates, record_delivered, write};

pub(super) static MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

pub(super) static DIALECT: Dialect = Dialect {
    list: |col, n| format!("{col} IN (SELECT value FROM json_each(${n}))"),
    placeholder: |_| "?".to_owned(),
    // The transaction holds the only writer: nothing else changes a row until it commits.
    lock_order: "",
    try_lock_order: "",
    lock_rows: "",
    // Walk the due index in claim order and stop at the limit. Left to itself, SQLite's
    // planner (no statistics) picks the status index, checks the order rule for every
    // waiting update and sorts them all: each claim then costs time in proportion to the
    // backlog.
    due_index: " INDEXED BY inbox_due",
    // One writer at a time: a claim's read sees every claim before it.
    claim_lock: "",
    claim_read: |inner| format!("{inner} LIMIT $2"),
    // The ERP's group commits write no page of the per-order index (a page of its own for
    // nearly every update: half of what such a commit wrote); each claim admits them first,
    // in the one writer's transaction (migration `0013_inbox_admitted`).
    admits: true,
    claim_recheck: false,
    claim_begin: None,
    // One writer: the batch's transaction holds the updates as a lease would (no other
    // worker can claim them before it commits, and a crash rolls the claim back with the
    // work), and a batch costs one commit instead of two.
    batch_begin: Some(BATCH_BEGIN),
    append_error: "CASE WHEN json_valid(errors) AND json_type(errors) = 'array' \
         THEN json_insert(errors, '$[#]', json($4)) ELSE json_array(json($4)) END",
    retry_set: "status = 'accepted', next_attempt_at = $1, park_until = NULL, \
         lease_owner = NULL, lease_until = NULL, processed_at = NULL, \
         errors = json_insert(errors, '$[#]', json_set(json($2), '$.attempt', attempts, \
         '$.from', status))",
    // TOTAL is a float that cannot overflow (SUM raises an error on overflow).
    reserved_quantity: "SELECT CAST(MIN(TOTAL(quantity), 9223372036854775807) AS INTEGER) \
         FROM items WHERE sku = $1 AND reserved",
    explain: "EXPLAIN QUERY PLAN ",
    // One writer: `seq` order is commit order. There is no transaction id; the checkpoint's
    // stays what it is (0).
    feed_after: "SELECT seq, CAST($1 AS INTEGER) AS tx, order_id, at FROM change_feed \
         WHERE seq > $2 ORDER BY seq LIMIT $3",
    sorted_item_values: |col| {
        format!(
            "(SELECT json_group_array(v ORDER BY v) \
             FROM (SELECT DISTINCT {col} AS v FROM items WHERE order_id = o.id))"
        )
    },
    feed_backlog: "SELECT COUNT(*), MIN(f.at) FROM change_feed f \
         JOIN projector_checkpoint c ON c.name = $1 WHERE f.seq > c.last_seq",
    // Row values: the cursor's `tx` is always 0 on SQLite.
    feed_rows_after: "SELECT f.seq, CAST(0 AS INTEGER) AS tx, f.order_id, f.version, f.kind, \
         f.payload, f.at, o.reference FROM change_feed f JOIN orders o ON o.id = f.order_id \
         WHERE (0, f.seq) > ($1, $2) AND (CAST($4 AS TEXT) IS NULL OR 1) \
         ORDER BY f.seq LIMIT $3",
    feed_rows_replay: "SELECT f.seq, CAST(0 AS INTEGER) AS tx, f.order_id, f.version, f.kind, \
         f.payload, f.at, o.reference FROM change_feed f JOIN orders o ON o.id = f.order_id \
         WHERE f.at >= $1 AND (0, f.seq) <= ($2, $3) AND f.seq > $4 \
           AND (CAST($6 AS TEXT) IS NULL OR 1) ORDER BY f.seq LIMIT $5",
    feed_end: "SELECT CAST(0 AS INTEGER), COALESCE(MAX(seq), 0), CAST(NULL AS TEXT) \
         FROM change_feed",
    delivery_claim_lock: "",
    subscription_lock: "",
    subscription_key_share: "",
    feed_pending_of_order: "SELECT CAST(0 AS INTEGER), f.seq FROM change_feed f \
         JOIN subscriptions s ON s.id = $1 \
         WHERE f.order_id = $2 AND (0, f.seq) > (s.cursor_tx, s.cursor_seq) \
         ORDER BY f.seq DESC LIMIT 1",
};

/// The WAL bound of a write transaction on the writer, 1,000 pages (see [`connect`]).
macro_rules! writer_wal_bound {
    () => {
        "PRAGMA wal_autocheckpoint = 1000"
    };
}

/// How a write transaction begins on the writer: under its WAL bound.
pub(super) const BEGIN: &str = concat!(writer_wal_bound!(), "; BEGIN IMMEDIATE");

/// The WAL bound of [`BEGIN`], set once on the ERP inbox's group writer's own connection,
/// where only groups are written.
pub(super) const GROUP_WAL_BOUND: &str = writer_wal_bound!();

/// How a worker's batch begins: under a WAL bound of 10,000 pages (see [`connect`]).
const BATCH_BEGIN: &str = "PRAGMA wal_autocheckpoint = 10000; BEGIN IMMEDIATE";

/// The two SQLite pools: one writer connection (all writes are serialised through it, which
/// is what SQLite does anyway, minus the busy errors) and a pool of readers (WAL lets them
/// read while the writer writes).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Copies the WAL into the database file off the write path.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// What began to write, for the checkpointer.
    writes: checkpoint::Writes,
}

impl SqliteStore {
    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Begins a write transaction on the writer with `begin` ([`BEGIN`] or
    /// [`BATCH_BEGIN`]), marked for the checkpointer.
    pub(super) async fn begin_with(
        &self,
        begin: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        if begin == BATCH_BEGIN {
            self.writes.batch();
        } else {
            self.writes.acked();
        }
        Ok(self.writer.begin_with(begin).await?)
    }

    pub(super) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub(super) async fn close(&self) {
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Opens the database file (created if missing).
pub(super) async fn connect(url: &str) -> Result<SqliteStore> {
    // synchronous=FULL: a write we acknowledged survives power loss. WAL with NORMAL could
    // lose the last commits; throughput comes from group commit in the inbox, never from
    // weaker durability.
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    // No ping before each use: a connection to a local file does not go stale, and the
    // ping is a round trip to the connection's thread on every write. Commits fsync the
    // WAL. Checkpoints (copying the WAL into the database file) run on a connection of
    // their own ([`checkpoint`]), but only the writer's own, inline one, in the commit
    // that finds the WAL past `wal_autocheckpoint` pages, gets to its end and fsyncs the
    // database file: a sync of everything copied since the last one, while every write
    // waits. The bound is set by each write transaction as it begins: 1,000 pages
    // (SQLite's default; [`BEGIN`], and [`GROUP_WAL_BOUND`] for the ERP inbox's groups)
    // where a caller waits for the commit, so a sync holds the writer a few milliseconds;
    // 10,000 (40 MB) for a worker's batch ([`BATCH_BEGIN`]), where fewer, larger syncs
    // write a page that changed many times once (measured: the ingest's p99 at half rate
    // 16–28 ms at 10,000 pages, 8–11 ms at 1,000; a drain 0.7–0.9 times as fast at 1,000).
    //
    // temp_store=MEMORY on the writer: a batch is one transaction of several multi-row
    // statements, and SQLite keeps a statement journal (the pages each statement changes,
    // so a failed statement can be undone alone) for every one of them. In a temporary
    // file that is as many `pwrite`s as the WAL itself gets; in memory it is a copy. It is
    // never needed after a crash (the WAL is), so durability is the same.
    let writer_options = options
        .clone()
        .pragma("wal_autocheckpoint", "1000")
        .pragma("temp_store", "memory");
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(writer_options)
        .await
        .map_err(|e| {
            StoreError::Connect(format!(
                "cannot open the SQLite database {}: {} (does its folder exist and may this \
                 user write there?)",
                options.get_filename().display(),
                cause(&e)
            ))
        })?;
    let reader = SqlitePoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .connect_with(options.clone().read_only(true))
        .await?;
    let writes = checkpoint::Writes::default();
    let checkpointer = checkpoint::spawn(&options, writes.clone()).await;
    Ok(SqliteStore {
        writes,
        writer,
        reader,
        checkpointer,
    })
}

#[cfg(test)]
mod tests {
    /// The writer's settings that durability and speed rest on, as SQLite reports them.
    #[tokio::test]
    async fn the_writer_is_durable_and_keeps_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = super::connect(&url).await.unwrap();
        let mut settings = Vec::new();
        for pragma in ["journal_mode", "synchronous", "foreign_keys", "temp_store"] {
            let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST({pragma} AS TEXT) FROM pragma_{pragma}"
            )))
            .fetch_one(store.writer())
            .await
            .unwrap();
            settings.push((pragma, value));
        }
        // synchronous 2 = FULL, temp_store 2 = MEMORY.
        assert_eq!(
            settings,
            [
                ("journal_mode", "wal".to_owned()),
                ("synchronous", "2".to_owned()),
                ("foreign_keys", "1".to_owned()),
                ("temp_store", "2".to_owned()),
            ]
        );
        store.close().await;
    }

    /// The WAL bound each write transaction begins under: 1,000 pages where a caller waits
    /// for the commit, 10,000 in a worker's batch, and 1,000 again after one.
    #[tokio::test]
    async fn a_worker_batch_commits_under_a_larger_wal_bound_than_other_writes() {
        use crate::store::{Conn, Store, Tx};

        async fn bound(tx: &mut Tx) -> i64 {
            let Conn::Sqlite(c) = &mut tx.conn else {
                unreachable!("a SQLite store")
            };
            sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                .fetch_one(&mut **c)
                .await
                .unwrap()
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("b.db").display());
        let store = Store::open(&url).await.unwrap();
        let now = crate::store::now();
        let mut seen = Vec::new();
        let mut tx = store.begin().await.unwrap();
        seen.push(bound(&mut tx).await);
        tx.commit().await.unwrap();
        let (mut tx, rows) = store.claim_batch(now, 10, "w", now).await.unwrap();
        assert!(rows.is_empty());
        seen.push(bound(&mut tx).await);
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        seen.push(bound(&mut tx).await);
        tx.commit().await.unwrap();
        assert_eq!(seen, [1000, 10000, 1000]);
        store.close().await;
    }
}
