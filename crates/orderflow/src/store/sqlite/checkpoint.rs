//! WAL checkpoints off the write path.
//!
//! A checkpoint copies the pages the WAL holds into the database file and fsyncs it. Left
//! to SQLite, the commit that crosses `wal_autocheckpoint` runs it inline: that commit, and
//! every request waiting on the one writer, waits for tens of megabytes to be copied and
//! synced (measured: the p99 of ERP acks and of 202 → applied). Here a connection of its
//! own runs passive checkpoints every [`EVERY`] on its own thread while the writer goes on
//! appending to the WAL: a passive checkpoint never takes the writer's lock, and copies
//! only frames no reader still needs. The writer's `wal_autocheckpoint` stays as the bound
//! on the WAL's size: when it fires, little is left to copy.
//!
//! Except while worker batches alone write: a batch begins under a bound of its own,
//! 10,000 pages (`sqlite::BATCH_BEGIN`), so that the inline checkpoint copies a page that
//! changed in many batches once. Copied here every 20 ms, nearly every frame a batch wrote
//! was copied to the database file and synced (`strace`, `worker --once` on 100,000
//! updates: 359,113 page writes and 849 syncs of the database file, against 58,542 and 37
//! when the batches' bound does it). So while batches alone write (one began in the last
//! [`QUIET_TICKS`] ticks, and nothing else began since the last tick), a tick is skipped;
//! after any other write ([`Writes::acked`]), or a quiet spell, the tick checkpoints.
//!
//! Durability is unchanged: every commit still fsyncs the WAL (`synchronous = FULL`), and a
//! checkpoint only moves committed pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the WAL is copied into the database file. Often enough that the writer's
/// inline checkpoint, due every 1,000 pages of acknowledged writes (see
/// `sqlite::GROUP_WAL_BOUND`), finds little left to copy and only syncs: at 100 ms it
/// copied most of it itself (ERP ingest at half rate, six interleaved rounds: p99 median
/// 9.5 ms at 100 ms, 6.8 ms at 20 ms). A call with nothing to copy reads the WAL's header
/// and returns.
const EVERY: Duration = Duration::from_millis(20);

/// What began to write since the checkpointer's last tick, marked by the writers.
#[derive(Clone, Debug, Default)]
pub(super) struct Writes(Arc<AtomicU8>);

const BATCH: u8 = 1;
const ACKED: u8 = 2;

impl Writes {
    /// A worker's batch begins (under the batches' own WAL bound).
    pub(super) fn batch(&self) {
        self.0.fetch_or(BATCH, Ordering::Relaxed);
    }

    /// Any other write transaction begins: an ERP group, or one a caller waits for.
    pub(super) fn acked(&self) {
        self.0.fetch_or(ACKED, Ordering::Relaxed);
    }

    /// What began since the last call: ([`BATCH`], [`ACKED`]).
    fn take(&self) -> (bool, bool) {
        let marks = self.0.swap(0, Ordering::Relaxed);
        (marks & BATCH != 0, marks & ACKED != 0)
    }
}

/// Ticks without a batch beginning after which the checkpointer copies again: a batch of
/// 500 takes 40–100 ms, so ticks between two batches' `BEGIN`s see nothing begin.
const QUIET_TICKS: u32 = 10;

/// Whether a tick copies, given what began since the last one; `since_batch` counts the
/// ticks since a batch began.
fn copy_now(batch: bool, acked: bool, since_batch: &mut u32) -> bool {
    *since_batch = if batch {
        0
    } else {
        since_batch.saturating_add(1)
    };
    acked || *since_batch >= QUIET_TICKS
}

/// The running checkpointer: it stops on [`Checkpointer::stop`], or when the last clone is
/// dropped with the store.
#[derive(Clone, Debug)]
pub(super) struct Checkpointer {
    stop: CancellationToken,
    _dropped: Arc<DropGuard>,
}

impl Checkpointer {
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }
}

/// Starts the checkpointer on a connection of its own. Without a connection the writer's
/// autocheckpoint does the work, as SQLite would by itself.
pub(super) async fn spawn(options: &SqliteConnectOptions, writes: Writes) -> Option<Checkpointer> {
    let conn = match options.connect().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint connection; the writer checkpoints inline");
            return None;
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn(run(conn, writes, stop.clone()));
    Some(Checkpointer {
        _dropped: Arc::new(stop.clone().drop_guard()),
        stop,
    })
}

async fn run(mut conn: SqliteConnection, writes: Writes, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since_batch = QUIET_TICKS;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (batch, acked) = writes.take();
        if !copy_now(batch, acked, &mut since_batch) {
            continue;
        }
        let started = Instant::now();
        // (busy, frames in the WAL, frames copied); -1s when the database is not in WAL mode.
        let done: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await;
        let frames = match done {
            Ok((_, frames, _)) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                continue;
            }
        };
        if frames > 0 {
            metrics::histogram!("orderflow_sqlite_checkpoint_seconds")
                .record(started.elapsed().as_secs_f64());
        }
    }
    let _ = sqlx::Connection::close(conn).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_tick_copies_unless_batches_alone_keep_beginning() {
        let mut since = super::QUIET_TICKS;
        // Nothing wrote for long: copy (a call with nothing to copy is cheap).
        assert!(super::copy_now(false, false, &mut since));
        // A drain: a batch begins every few ticks, nothing else writes.
        for tick in 0..30 {
            assert!(
                !super::copy_now(tick % 3 == 0, false, &mut since),
                "tick {tick}"
            );
        }
        // An ERP group (or any other write) in between: copy at once.
        assert!(super::copy_now(true, true, &mut since));
        assert!(super::copy_now(false, true, &mut since));
        // The drain ends: ten quiet ticks later, copy again.
        assert!(!super::copy_now(true, false, &mut since));
        for _ in 1..super::QUIET_TICKS {
            assert!(!super::copy_now(false, false, &mut since));
        }
        assert!(super::copy_now(false, false, &mut since));
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.db");
        let store = super::super::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let size = || std::fs::metadata(&file).unwrap().len();
        sqlx::query("CREATE TABLE t (v BLOB)")
            .execute(store.writer())
            .await
            .unwrap();
        // 1.5 MB: about 400 pages, below the writer's own checkpoint at 1,000.
        let before = size();
        for _ in 0..48 {
            sqlx::query("INSERT INTO t VALUES (randomblob(32768))")
                .execute(store.writer())
                .await
                .unwrap();
        }
        let mut waited = Duration::ZERO;
        while size() < before + 1_500_000 {
            assert!(
                waited < Duration::from_secs(10),
                "the database file stayed at {} bytes",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        store.close().await;
    }
}
