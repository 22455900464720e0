//! An update whose processing ends the process (an abort, a stack overflow, the OOM killer:
//! nothing `catch_unwind` sees) must not end every worker that claims it after it, for
//! ever, and take its batch's other updates down with it each time.
//!
//! A worker's batch is recorded before it is applied, and its commit deletes the record
//! (`store::inbox::attempts`). A claim that finds a record holding one of its updates knows
//! that batch's process ended before its commit: on PostgreSQL a batch in flight would
//! still hold the update; on SQLite the record commits a moment before its batch takes the
//! one writer back, so a record younger than `worker.lease` may be another process's batch
//! in flight, and its updates are left to it, unless that process is gone ([`owner_gone`]).
//! Every update of an ended batch counts a crash, and from then on is tried alone, in a
//! batch of its own, until one commits: the innocent ones apply and their counts go. An
//! update in `worker.max_crashes` ended batches goes `dead` without running again (error
//! code `process_ended`).

use super::*;

/// What a worker's claim does this time.
pub(super) enum Attempt {
    /// Apply `rows` under the record `id`; `cleared`: crash counts that go with the commit.
    Apply {
        id: Option<i64>,
        rows: Vec<UpdateRow>,
        cleared: Vec<i64>,
    },
    /// `row` was in `crashes` batches whose process ended: `dead` without running.
    Dead { row: Box<UpdateRow>, crashes: u32 },
    /// Every update claimed is held by another process's batch (SQLite).
    Nothing,
}

impl Inbox {
    /// Reads what earlier batches left on the claimed `rows`, decides what this batch runs,
    /// and commits its record (and the crashes it found) while `tx` holds the claim.
    pub(super) async fn begin_attempt(
        &self,
        tx: &mut Tx,
        rows: Vec<UpdateRow>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Attempt, StoreError> {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let left = tx.leftovers(&seqs).await?;
        let sqlite = self.store().backend() == store::Backend::Sqlite;
        let young = chrono::Duration::from_std(self.settings.worker.lease).unwrap_or_default();
        let mut crashes = left.crashes;
        let mut ended = Vec::new();
        let mut taken = HashSet::new();
        for r in &left.recorded {
            if sqlite && now < r.started_at + young && !owner_gone(&r.owner) {
                taken.extend(r.seqs.iter().copied());
                continue;
            }
            tracing::warn!(
                batch_owner = %r.owner,
                started_at = %r.started_at,
                updates = r.seqs.len(),
                "a batch's process ended before its commit; its updates are tried one at a time"
            );
            metrics::counter!("orderflow_inbox_batches_ended_total").increment(1);
            ended.push(r.id);
            for s in &r.seqs {
                *crashes.entry(*s).or_default() += 1;
            }
        }
        let mut rows: Vec<UpdateRow> = rows
            .into_iter()
            .filter(|r| !taken.contains(&r.seq))
            .collect();
        let suspect = rows
            .iter()
            .position(|r| crashes.get(&r.seq).is_some_and(|&n| n > 0));
        if let Some(at) = suspect {
            let row = rows.swap_remove(at);
            let n = crashes[&row.seq];
            if n >= self.settings.max_crashes() {
                tx.begin_attempt(self.store(), &ended, &[], owner, now)
                    .await?;
                return Ok(Attempt::Dead {
                    row: Box::new(row),
                    crashes: n,
                });
            }
            rows = vec![row];
        }
        if rows.is_empty() {
            tx.begin_attempt(self.store(), &ended, &[], owner, now)
                .await?;
            return Ok(Attempt::Nothing);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let id = tx
            .begin_attempt(self.store(), &ended, &seqs, owner, now)
            .await?;
        let cleared = if suspect.is_some() { seqs } else { Vec::new() };
        Ok(Attempt::Apply { id, rows, cleared })
    }

    /// Rolls back a batch that failed with an error and deletes its record (an error is not
    /// a crash: its updates are claimed again as they were).
    pub(super) async fn abandon_attempt(&self, tx: Tx, id: Option<i64>) {
        let Some(id) = id else { return };
        if let Err(e) = tx.abandon_attempt(self.store(), id).await {
            tracing::warn!(error = %e, "deleting the record of a failed batch failed");
        }
    }

    /// Deletes the record of a batch whose commit failed.
    pub(super) async fn forget_attempt(&self, id: Option<i64>) {
        let Some(id) = id else { return };
        if let Err(e) = self.store().forget_attempt(id).await {
            tracing::warn!(error = %e, "deleting the record of a failed batch failed");
        }
    }

    /// Sets `row` `dead` for the ended batches it was in, in `tx`, and commits.
    pub(super) async fn finish_crashed(
        &self,
        mut tx: Tx,
        row: Box<UpdateRow>,
        crashes: u32,
    ) -> Result<Vec<Option<UpdateStatus>>, StoreError> {
        let started = Instant::now();
        let now = store::now();
        tracing::error!(
            update = %row.id,
            order = %row.order_reference,
            crashes,
            "an update whose processing ended the process {crashes} times; dead"
        );
        let alone = match crashes {
            0 | 1 => String::new(),
            2 => ", the last time with this update alone".to_owned(),
            n => format!(", the last {} times with this update alone", n - 1),
        };
        let message = format!(
            "the worker's process ended {crashes} times while applying a batch that held this \
             update{alone} (an abort, a stack overflow, the OOM killer): it is not tried again"
        );
        let mut entry = outcome::error_entry(&row, now, "process_ended", &message);
        entry["crashes"] = json!(crashes);
        let finish = outcome::finish(&row, UpdateStatus::Dead, None, Some(entry), now, None);
        tx.finish_updates(std::slice::from_ref(&finish)).await?;
        tx.end_attempt(None, &[row.seq]).await?;
        tx.commit().await?;
        let out = vec![Some(UpdateStatus::Dead)];
        self.processed(std::slice::from_ref(&row), &out, false, started);
        Ok(out)
    }
}

/// SQLite: the process of a record's owner (`<pid>-<uuid>`, see `Inbox::new`) has ended.
/// Every process of a SQLite database runs on its host (WAL needs shared memory), so a
/// record whose process `/proc` does not list ended, whatever its age. Where `/proc` cannot
/// tell, or the pid is in use (maybe by another program), the age decides.
fn owner_gone(owner: &str) -> bool {
    let Some(pid) = owner.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}
