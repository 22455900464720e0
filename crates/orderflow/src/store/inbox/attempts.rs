//! A worker's batch, committed before it is applied (`inbox_attempts`), so that a batch
//! whose process ended before its commit (an abort, a crash, the OOM killer: nothing the
//! process could catch) is found by the next claim of one of its updates. What the worker
//! makes of that is in `inbox::attempt`.
//!
//! The record must be committed while the batch's own transaction still holds the claim.
//! On PostgreSQL it is written on a connection of its own; on SQLite, where the batch holds
//! the one writer, the batch's transaction commits there and begins again on the same
//! connection ([`Tx::begin_attempt`]). On PostgreSQL that commit does not wait for the
//! disk (`synchronous_commit = off`): the record only has to outlive the process, not the
//! machine. SQLite cannot lower a transaction's safety level once it has begun; its commit
//! there is a full one, a fsync of about 0.3 ms against the tens of milliseconds of a
//! batch of 500. The batch's own commit is as durable as ever.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use crate::store::{Conn, List, Result, Store, StoreError, Tx, on_tx};

/// A recorded batch that holds some of the updates just claimed.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub id: i64,
    pub owner: String,
    pub seqs: Vec<i64>,
    pub started_at: DateTime<Utc>,
}

/// What earlier batches left on the updates a claim read.
#[derive(Clone, Debug, Default)]
pub struct Leftovers {
    /// Recorded batches that hold one of the claimed updates.
    pub recorded: Vec<Recorded>,
    /// How many batches whose process ended held each claimed update, as counted so far.
    pub crashes: HashMap<i64, u32>,
}

/// How a batch's record is committed, by backend.
const SQLITE_COMMIT_POINT: &str = "COMMIT; BEGIN IMMEDIATE";
const KEPT: &str = "SELECT COUNT(*) FROM inbox_attempts WHERE id = $1";
const POSTGRES_BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = off";

impl Tx {
    /// The recorded batches that hold one of `claimed`, and the crash counts of `claimed`:
    /// one statement, which reads two tables that are empty but for batches in flight and
    /// the updates of batches whose process ended.
    pub async fn leftovers(&mut self, claimed: &[i64]) -> Result<Leftovers> {
        let sql = format!(
            "SELECT id, owner, seqs, started_at, CAST(0 AS INTEGER) AS crashes \
             FROM inbox_attempts \
             UNION ALL \
             SELECT seq, NULL, NULL, NULL, crashes FROM inbox_crashes WHERE {}",
            self.dialect().in_list("seq", 1)
        );
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
            i32,
        );
        let rows: Vec<Row> = on_tx!(self, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(List(claimed))
                .fetch_all(c)
                .await
        })?;
        let claimed: std::collections::HashSet<i64> = claimed.iter().copied().collect();
        let mut out = Leftovers::default();
        for (id, owner, seqs, started_at, crashes) in rows {
            match (owner, seqs, started_at) {
                (Some(owner), Some(seqs), Some(started_at)) => {
                    let seqs = read_seqs(id, &seqs)?;
                    if seqs.iter().any(|s| claimed.contains(s)) {
                        out.recorded.push(Recorded {
                            id,
                            owner,
                            seqs,
                            started_at,
                        });
                    }
                }
                _ => {
                    out.crashes.insert(id, crashes.max(0) as u32);
                }
            }
        }
        Ok(out)
    }

    /// Records the batch of `seqs` for `owner` (none: nothing runs) and counts a crash for
    /// every update of the `ended` batches (whose records go), committed while this
    /// transaction keeps holding its claim (see the module). Returns the record's id.
    pub async fn begin_attempt(
        &mut self,
        store: &Store,
        ended: &[i64],
        seqs: &[i64],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        if ended.is_empty() && seqs.is_empty() {
            return Ok(None);
        }
        if matches!(self.conn, Conn::Postgres(_)) {
            // A batch that found no ended one (nearly all) records itself in one statement
            // of its own transaction, one round trip.
            if ended.is_empty() {
                return store.record_attempt(seqs, owner, now).await.map(Some);
            }
            let mut side = store.begin_as(Some(POSTGRES_BEGIN)).await?;
            let id = side.record(ended, seqs, owner, now).await?;
            side.commit().await?;
            return Ok(id);
        }
        let id = self.record(ended, seqs, owner, now).await?;
        if let Conn::Sqlite(t) = &mut self.conn {
            sqlx::raw_sql(SQLITE_COMMIT_POINT).execute(&mut **t).await?;
            // Between the two, another process may have claimed these updates; it leaves
            // them to this batch unless its record looked older than `worker.lease`, and
            // then it deleted the record.
            if let Some(id) = id {
                let kept: i64 = sqlx::query_scalar(KEPT)
                    .bind(id)
                    .fetch_one(&mut **t)
                    .await?;
                if kept == 0 {
                    return Err(StoreError::TakenOver);
                }
            }
        }
        Ok(id)
    }

    async fn record(
        &mut self,
        ended: &[i64],
        seqs: &[i64],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        const DROP: &str = "DELETE FROM inbox_attempts WHERE id = $1 RETURNING seqs";
        const INSERT: &str =
            "INSERT INTO inbox_attempts (owner, seqs, started_at) VALUES ($1, $2, $3) RETURNING id";
        // Updates no longer in the inbox (retention) are not counted.
        let count = format!(
            "INSERT INTO inbox_crashes (seq, crashes) SELECT seq, 1 FROM inbox WHERE {} \
             ON CONFLICT (seq) DO UPDATE SET crashes = inbox_crashes.crashes + 1",
            self.dialect().in_list("seq", 1)
        );
        for &id in ended {
            // Another worker that claimed other updates of the same batch may have counted
            // it first: then there is nothing left to count.
            let dropped: Option<String> = on_tx!(self, |c| {
                sqlx::query_scalar(DROP).bind(id).fetch_optional(c).await
            })?;
            let Some(dropped) = dropped else { continue };
            let held = read_seqs(id, &dropped)?;
            on_tx!(self, |c| {
                sqlx::query(AssertSqlSafe(count.clone()))
                    .bind(List(&held))
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        if seqs.is_empty() {
            return Ok(None);
        }
        let text = seqs_text(seqs);
        let id: i64 = on_tx!(self, |c| {
            sqlx::query_scalar(INSERT)
                .bind(owner)
                .bind(&text)
                .bind(now)
                .fetch_one(c)
                .await
        })?;
        Ok(Some(id))
    }

    /// In the batch's transaction: its record goes with its commit, and so do the crash
    /// counts of `cleared` (updates tried alone, or set `dead` for their crashes).
    pub async fn end_attempt(&mut self, id: Option<i64>, cleared: &[i64]) -> Result<()> {
        if let Some(id) = id {
            on_tx!(self, |c| {
                sqlx::query("DELETE FROM inbox_attempts WHERE id = $1")
                    .bind(id)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        if !cleared.is_empty() {
            let sql = format!(
                "DELETE FROM inbox_crashes WHERE {}",
                self.dialect().in_list("seq", 1)
            );
            on_tx!(self, |c| {
                sqlx::query(AssertSqlSafe(sql))
                    .bind(List(cleared))
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    /// Rolls back a batch that failed with an error (not a crash of its process) and
    /// deletes its record, before its updates can be claimed again: on PostgreSQL while
    /// this transaction still holds them; on SQLite once it has freed the one writer (other
    /// processes leave the updates of a record this young alone).
    pub async fn abandon_attempt(self, store: &Store, id: i64) -> Result<()> {
        let held = if matches!(self.conn, Conn::Sqlite(_)) {
            drop(self);
            None
        } else {
            Some(self)
        };
        store.forget_attempt(id).await?;
        drop(held);
        Ok(())
    }
}

impl Store {
    /// PostgreSQL: records the batch of `seqs` in a statement that is its own transaction,
    /// committed without waiting for the disk (`set_config` of `synchronous_commit` for
    /// that transaction, read when it commits).
    async fn record_attempt(&self, seqs: &[i64], owner: &str, now: DateTime<Utc>) -> Result<i64> {
        const SQL: &str = "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)) \
             INSERT INTO inbox_attempts (owner, seqs, started_at) \
             SELECT $1, $2, $3 FROM quick RETURNING id";
        let text = seqs_text(seqs);
        let pool = self.postgres_pool().expect("a PostgreSQL store");
        Ok(sqlx::query_scalar(SQL)
            .bind(owner)
            .bind(&text)
            .bind(now)
            .fetch_one(pool)
            .await?)
    }

    /// Deletes a batch's record: the batch ended with an error, not with its process.
    pub async fn forget_attempt(&self, id: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.end_attempt(Some(id), &[]).await?;
        tx.commit().await
    }
}

/// A record's `seqs` column: a JSON array (TEXT on both backends).
fn seqs_text(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).expect("a list of integers is JSON")
}

/// The updates of the record `id`, from its `seqs` column.
fn read_seqs(id: i64, text: &str) -> Result<Vec<i64>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("inbox_attempts {id}: seqs: {e}")))
}
