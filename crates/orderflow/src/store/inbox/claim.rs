//! Claiming updates: which are due (at most one per order, in receive order), the lease,
//! and rows that cannot be read set aside so they never stop a batch.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use crate::store::List;
use crate::store::dialect::Dialect;

use super::{COLUMNS, UpdateRow, UpdateStatus};
use crate::store::{Result, Store, Tx, on_reader, on_tx};

/// True when `e` is a value that could not be decoded (not a failure of the database).
fn is_decode(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_))
}

/// At most this many updates are admitted into the per-order index by a claim of one update
/// by its `seq` (wait mode, see [`Tx::admit_updates`]): an update stored behind more than
/// that many still waiting to be admitted is left to the worker.
const ADMIT_AT_MOST: i64 = 1024;

/// The claim predicate over `r` (`$1` = now, `$3` = the admitted frontier, see
/// [`Tx::admit_updates`]). Processing rows past their lease are claimed again as they are;
/// any other row only when it is [`next_of_order`].
static CLAIMABLE: LazyLock<[String; 2]> = LazyLock::new(|| {
    [false, true].map(|admits| {
        format!(
            "{} AND r.next_attempt_at <= $1 AND r.seq <= $3 AND {}",
            waiting(admits, "r"),
            next_of_order(admits, "$1")
        )
    })
});

/// `t` is waiting: accepted, parked or processing, in the words of the per-order and due
/// indexes' conditions. Where the store admits (SQLite), those say it as an equality and a
/// list of two: SQLite evaluates a list of more than two constants as an ephemeral table,
/// and for an index's condition filled it anew for every row written (migration `0014`).
/// A claim's terms must match the conditions' for SQLite to read those indexes.
fn waiting(admits: bool, t: &str) -> String {
    if admits {
        format!("({t}.status = 'accepted' OR {t}.status IN ('parked', 'processing'))")
    } else {
        format!("{t}.status IN ('accepted', 'parked', 'processing')")
    }
}

/// [`CLAIMABLE`] in the dialect's words.
fn claimable(d: &Dialect) -> &'static str {
    &CLAIMABLE[usize::from(d.admits)]
}

/// The worker's read of `columns` of the due updates `r` in claim order (`$1` = now, `$2` =
/// the limit, `$3` = the admitted frontier), through the dialect's due index, holding the
/// rows it returns until commit and skipping those another transaction holds.
fn due_read(d: &Dialect, columns: &str) -> String {
    format!(
        "SELECT {columns} FROM inbox r{} WHERE {} ORDER BY r.next_attempt_at, r.seq LIMIT $2{}",
        d.due_index,
        claimable(d),
        d.claim_lock
    )
}

/// `r` is processing, or nothing of its order is processing and no earlier update of its
/// order is still waiting (`now` names the parameter holding the time). The per-order index
/// holds admitted updates only (`admits`: the store admits them, see
/// [`Tx::admit_updates`]); a claim only looks at updates all of whose predecessors are.
fn next_of_order(admits: bool, now: &str) -> String {
    let admitted = if admits { "AND o.admitted = 1 " } else { "" };
    format!(
        "(r.status = 'processing' OR NOT EXISTS ( \
         SELECT 1 FROM inbox o \
         WHERE o.order_reference = r.order_reference \
           AND {} {admitted}\
           AND o.seq <> r.seq \
           AND (o.status = 'processing' \
                OR (o.seq < r.seq AND (o.status = 'accepted' \
                    OR (o.status = 'parked' AND o.next_attempt_at <= {now}))))))",
        waiting(admits, "o")
    )
}

impl Store {
    /// Claims the next batch for the worker `owner`: up to `limit` due updates, at most one
    /// per order, each the next of its order, read in the returned open transaction, which
    /// holds them until it commits (SQLite: the one writer; PostgreSQL: row locks, see
    /// [`Tx::due_updates`]): process them and finish them in it. The rows say what a
    /// leased claim would have written.
    pub async fn claim_batch(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(Tx, Vec<UpdateRow>)> {
        let mut tx = self.begin_as(self.dialect().batch_begin).await?;
        let mut rows = tx.due_updates(now, limit).await?;
        metrics::counter!("orderflow_inbox_attempts_total").increment(rows.len() as u64);
        // What the claim would have written: finishing writes the attempt count.
        for r in &mut rows {
            r.attempts += 1;
            r.status = UpdateStatus::Processing;
            r.lease_owner = Some(owner.to_owned());
            r.lease_until = Some(lease_until);
        }
        Ok((tx, rows))
    }

    /// Claims up to `limit` due updates for `owner` until `lease_until`: at most one per
    /// order, each the next of its order. Each claim counts as an attempt.
    pub async fn claim_updates(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<UpdateRow>> {
        let mut tx = self.begin_as(self.dialect().claim_begin).await?;
        let rows = tx.claim(None, now, limit, owner, lease_until).await?;
        tx.commit().await?;
        metrics::counter!("orderflow_inbox_attempts_total").increment(rows.len() as u64);
        Ok(rows)
    }

    /// Claims the update `seq` if it is due and next of its order (wait mode processes it
    /// inline then); `None` when it must wait for the worker.
    pub async fn claim_update(
        &self,
        seq: i64,
        now: DateTime<Utc>,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<UpdateRow>> {
        let mut tx = self.begin_as(self.dialect().claim_begin).await?;
        let rows = tx.claim(Some(seq), now, 1, owner, lease_until).await?;
        tx.commit().await?;
        metrics::counter!("orderflow_inbox_attempts_total").increment(rows.len() as u64);
        Ok(rows.into_iter().next())
    }

    /// Gives back the updates `owner` still holds (shutdown past its grace period, a failed
    /// batch): due at once for any worker. The records of its batches go too: they did not
    /// end with their process (`attempts`).
    pub async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        const SQL: &str = "UPDATE inbox SET status = 'accepted', next_attempt_at = $2, \
             lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status = 'processing'";
        const RECORDS: &str = "DELETE FROM inbox_attempts WHERE owner = $1";
        let mut tx = self.begin().await?;
        let n = on_tx!(&mut tx, |c| {
            sqlx::query(SQL)
                .bind(owner)
                .bind(now)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        on_tx!(&mut tx, |c| {
            sqlx::query(RECORDS)
                .bind(owner)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(n)
    }

    /// The plan of a worker's claim (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`), one
    /// line per plan row: shows that it walks the due index and that the order rule reads
    /// the per-order index, not the table.
    pub async fn explain_claim(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let d = self.dialect();
        let sql = format!("{}{}", d.explain, due_read(d, "r.seq"));
        Ok(on_reader!(self, |p| {
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(now)
                .bind(100_i64)
                .bind(i64::MAX)
                .fetch_all(p)
                .await?;
            crate::store::plan_lines(&rows)
        })?)
    }
}

impl Tx {
    /// Puts the oldest updates that the group commit stored without an entry in the
    /// per-order index into it (at most `at_most`, in `seq` order), and returns the
    /// frontier: every update with a `seq` up to it is admitted, so the order rule sees all
    /// updates before it. A claim in this transaction looks at no update past it (one
    /// waits for a later claim to admit its predecessors). `i64::MAX` where every update is
    /// admitted as it is stored (PostgreSQL). See the SQLite migration
    /// `0013_inbox_admitted`.
    ///
    /// A claim of `limit` updates admits `limit`: in a backlog those are the updates it
    /// then claims, processes and finishes in the same transaction, so a page of the
    /// per-order index is written once for their entries going in and out (admitting
    /// 1,024 a claim, the drain of a 100,000-update backlog ran at 0.89 times the rate of
    /// before this index was left to the claims).
    pub async fn admit_updates(&mut self, at_most: i64) -> Result<i64> {
        if !self.dialect().admits {
            return Ok(i64::MAX);
        }
        const ADMIT: &str = "UPDATE inbox SET admitted = 1 WHERE seq IN (\
             SELECT seq FROM inbox INDEXED BY inbox_unadmitted WHERE admitted = 0 \
             ORDER BY seq LIMIT $1)";
        const FIRST_LEFT: &str =
            "SELECT MIN(seq) FROM inbox INDEXED BY inbox_unadmitted WHERE admitted = 0";
        let first_left: Option<i64> = on_tx!(&mut *self, |c| {
            sqlx::query(ADMIT).bind(at_most).execute(&mut *c).await?;
            sqlx::query_scalar(FIRST_LEFT).fetch_one(&mut *c).await
        })?;
        Ok(first_left.map_or(i64::MAX, |seq| seq - 1))
    }

    /// The updates [`Store::claim_updates`] would claim, read but not marked: for a
    /// transaction that processes and finishes them itself, so holds them until it commits
    /// (the worker claims and processes a batch in one transaction, see
    /// `Inbox::process_next_batch`). At most one per order, in `seq` order.
    ///
    /// On PostgreSQL the read locks the rows it returns and skips rows another transaction
    /// holds. Until this one commits, the others see the held updates as waiting, so the
    /// order rule keeps them from every later update of the same orders; once it commits,
    /// the held updates are final, or due again later (retried or parked), and a read that
    /// began before the commit and reaches a held row checks it again as committed
    /// (`READ COMMITTED`). So no claim by a lease's side checks (a lock per order, the
    /// re-check) is needed here: they exist for a lease, whose claim commits before the
    /// update is processed.
    pub async fn due_updates(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<UpdateRow>> {
        let frontier = self.admit_updates(limit).await?;
        let sql = due_read(self.dialect(), COLUMNS);
        let read: Result<Vec<UpdateRow>, sqlx::Error> = match self
            .in_one_row(COLUMNS, &sql, "next_attempt_at, seq", |q| {
                sqlx::query_scalar(q).bind(now).bind(limit).bind(frontier)
            })
            .await
        {
            Some(rows) => Ok(rows),
            None => on_tx!(&mut *self, |c| {
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(now)
                    .bind(limit)
                    .bind(frontier)
                    .fetch_all(c)
                    .await
            }),
        };
        let rows = match read {
            Err(e) if is_decode(&e) => {
                let sql = due_read(self.dialect(), "r.seq");
                let seqs: Vec<i64> = on_tx!(&mut *self, |c| {
                    sqlx::query_scalar(AssertSqlSafe(sql))
                        .bind(now)
                        .bind(limit)
                        .bind(frontier)
                        .fetch_all(c)
                        .await
                })?;
                self.read_isolating(&seqs, now, 1).await?
            }
            read => read?,
        };
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<UpdateRow> = rows
            .into_iter()
            .filter(|r| seen.insert(r.order_reference.clone()))
            .collect();
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Reads updates `seqs` one at a time, after reading them together failed to decode a
    /// row: a row that cannot be read is set `dead` with the decoder's error (`attempt`
    /// more attempts counted: 1 when it was not claimed yet) and left out, so one bad row
    /// never stops the batch, nor the worker for every other order.
    async fn read_isolating(
        &mut self,
        seqs: &[i64],
        now: DateTime<Utc>,
        attempt: i32,
    ) -> Result<Vec<UpdateRow>> {
        let lock = self.dialect().lock_rows;
        let read = format!("SELECT {COLUMNS} FROM inbox WHERE seq = $1{lock}");
        let mut rows = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            let row: Result<Option<UpdateRow>, sqlx::Error> = on_tx!(&mut *self, |c| {
                sqlx::query_as(AssertSqlSafe(read.as_str()))
                    .bind(seq)
                    .fetch_optional(c)
                    .await
            });
            match row {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => {}
                Err(e) if is_decode(&e) => {
                    tracing::error!(seq, error = %e, "inbox row cannot be read; it is dead");
                    metrics::counter!("orderflow_inbox_unreadable_total").increment(1);
                    self.bury(seq, now, attempt, &e.to_string()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(rows)
    }

    /// Sets update `seq` `dead` without reading it, appending `message` to its errors, and
    /// queues its `update.dead` events.
    async fn bury(
        &mut self,
        seq: i64,
        now: DateTime<Utc>,
        attempt: i32,
        message: &str,
    ) -> Result<()> {
        let entry = serde_json::json!({
            "at": now,
            "code": "unreadable_row",
            "message": format!("the stored row cannot be read: {message}"),
        });
        let errors = self.dialect().append_error;
        let sql = format!(
            "UPDATE inbox SET status = 'dead', attempts = attempts + $3, errors = {errors}, \
             processed_at = $2, next_attempt_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE seq = $1"
        );
        on_tx!(&mut *self, |c| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(seq)
                .bind(now)
                .bind(attempt)
                .bind(Json(&entry))
                .execute(c)
                .await
                .map(|_| ())
        })?;
        self.queue_dead_updates(&[seq], now).await?;
        Ok(())
    }

    /// Claims in a transaction begun with the dialect's `claim_begin`.
    async fn claim(
        &mut self,
        only: Option<i64>,
        now: DateTime<Utc>,
        limit: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<UpdateRow>> {
        let frontier = self
            .admit_updates(if only.is_some() { ADMIT_AT_MOST } else { limit })
            .await?;
        let only_sql = if only.is_some() { "AND r.seq = $4" } else { "" };
        let d = self.dialect();
        // One update by seq is found by its key, not through the due index.
        let index = if only.is_none() { d.due_index } else { "" };
        let claimable = claimable(d);
        let select = (d.claim_read)(&format!(
            "SELECT r.seq, r.order_reference FROM inbox r{index} WHERE {claimable} {only_sql} \
             ORDER BY r.next_attempt_at, r.seq"
        ));
        let candidates: Vec<(i64, String)> = on_tx!(&mut *self, |c| {
            let q = sqlx::query_as(AssertSqlSafe(select))
                .bind(now)
                .bind(limit)
                .bind(frontier);
            match only {
                Some(seq) => q.bind(seq).fetch_all(c).await,
                None => q.fetch_all(c).await,
            }
        })?;
        // At most one update per order in one claim: the first is the next of its order.
        let mut seen = std::collections::HashSet::new();
        let seqs: Vec<i64> = candidates
            .into_iter()
            .filter(|(_, r)| seen.insert(r.clone()))
            .map(|(s, _)| s)
            .collect();
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        const SET: &str = "UPDATE inbox AS r SET status = 'processing', lease_owner = $1, \
             lease_until = $2, next_attempt_at = $2, attempts = attempts + 1";
        // Where claims run side by side, the read's snapshot may predate another claim of
        // the same order that committed before this one got the order's lock: this
        // statement's snapshot is newer than the lock, so it sees that claim.
        let recheck = if d.claim_recheck {
            format!(" AND {}", next_of_order(d.admits, "$4"))
        } else {
            String::new()
        };
        let sql = format!(
            "{SET} WHERE {}{recheck} RETURNING {COLUMNS}",
            d.in_list("r.seq", 3)
        );
        let claimed: Result<Vec<UpdateRow>, sqlx::Error> = on_tx!(self, |c| {
            let q = sqlx::query_as(AssertSqlSafe(sql))
                .bind(owner)
                .bind(lease_until)
                .bind(List(&seqs));
            if d.claim_recheck {
                q.bind(now).fetch_all(c).await
            } else {
                q.fetch_all(c).await
            }
        });
        // The rows are claimed (the statement ran); only reading one of them back failed.
        let mut rows = match claimed {
            // Only those the statement claimed (a re-check may have left some out).
            Err(e) if is_decode(&e) => self
                .read_isolating(&seqs, now, 0)
                .await?
                .into_iter()
                .filter(|r| {
                    r.status == UpdateStatus::Processing && r.lease_owner.as_deref() == Some(owner)
                })
                .collect(),
            claimed => claimed?,
        };
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Of the claimed updates `seqs`, those `owner` still holds, locked until commit, in
    /// `seq` order (a worker that overran its lease must not finish an update someone else
    /// took). Only their `seq` is read: the claim returned their rows, and no one else
    /// changes a row while its lease is held.
    ///
    /// The rows are found by primary key alone and whether `owner` holds them is checked on
    /// what is read: with the status or the lease in `WHERE`, PostgreSQL could match the
    /// `inbox_due` or `inbox_status` index, and with statistics behind a table that grows
    /// (a new database, a burst) it scanned all of one of those instead (about a third of
    /// a core at 2,000 updates/s). A row another worker took over is locked too, in the
    /// same `seq` order as every lock of this kind, and left out.
    pub async fn lock_held(&mut self, seqs: &[i64], owner: &str) -> Result<Vec<i64>> {
        let d = self.dialect();
        let sql = format!(
            "SELECT seq, status, lease_owner FROM inbox WHERE {} ORDER BY seq{}",
            d.in_list("seq", 1),
            d.lock_rows
        );
        let rows: Vec<(i64, String, Option<String>)> = on_tx!(self, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(List(seqs))
                .fetch_all(c)
                .await
        })?;
        Ok(rows
            .into_iter()
            .filter(|(_, status, lease)| {
                status == UpdateStatus::Processing.as_str() && lease.as_deref() == Some(owner)
            })
            .map(|(seq, _, _)| seq)
            .collect())
    }
}
