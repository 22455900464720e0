//! The inbox worker: claims due updates in batches and processes them, each batch in the
//! transaction that claimed it (a lease committed first only where a batch fails and its
//! updates are processed one at a time); on PostgreSQL `worker.concurrency` batches at a
//! time.
//!
//! It wakes on the store's wake-ups ([`crate::store::Wakeups`]: updates stored, woken by a
//! change of their order or retried, here or in another process) and polls every
//! `worker.poll_interval` as the floor. The loop is [`Inbox::run_worker`]; its step,
//! [`Inbox::process_next_batch`], takes the time so tests can drive it. On shutdown it stops claiming, gives the batch in
//! flight a grace period, releases the leases of whatever it could not finish and returns
//! (a batch held in its transaction is rolled back and due at once).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Inbox;
use super::model::UpdateStatus;
use crate::store;

/// How a worker runs.
#[derive(Clone, Copy, Debug)]
pub struct WorkerOptions {
    /// Process what is due, then return.
    pub once: bool,
    /// Time the batch in flight gets to finish after shutdown is requested.
    pub grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            once: false,
            grace: Duration::from_secs(10),
        }
    }
}

/// Counts of what a worker did, by new status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerTotals {
    pub batches: u64,
    pub applied: u64,
    pub parked: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub dead: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Updates whose lease another worker had taken over.
    pub lost: u64,
}

impl WorkerTotals {
    fn merge(&mut self, other: &WorkerTotals) {
        self.batches += other.batches;
        self.applied += other.applied;
        self.parked += other.parked;
        self.ignored += other.ignored;
        self.rejected += other.rejected;
        self.dead += other.dead;
        self.retried += other.retried;
        self.lost += other.lost;
    }

    fn add(&mut self, statuses: &[Option<UpdateStatus>]) -> WorkerTotals {
        let mut batch = WorkerTotals {
            batches: 1,
            ..WorkerTotals::default()
        };
        for s in statuses {
            match s {
                Some(UpdateStatus::Applied) => batch.applied += 1,
                Some(UpdateStatus::Parked) => batch.parked += 1,
                Some(UpdateStatus::Ignored) => batch.ignored += 1,
                Some(UpdateStatus::Rejected) => batch.rejected += 1,
                Some(UpdateStatus::Dead) => batch.dead += 1,
                Some(UpdateStatus::Accepted | UpdateStatus::Processing) => batch.retried += 1,
                None => batch.lost += 1,
            }
        }
        self.merge(&batch);
        batch
    }
}

impl WorkerTotals {
    /// The batch's summary: INFO when an update reached a final status (or a lease was
    /// lost), DEBUG when every update was only parked again or retried later, so a parked
    /// update waiting out its backoff does not log at INFO on every attempt (each attempt
    /// has its own DEBUG line).
    fn log(&self, size: usize, took: Duration) {
        macro_rules! batch {
            ($level:ident) => {
                tracing::$level!(
                    size,
                    applied = self.applied,
                    parked = self.parked,
                    ignored = self.ignored,
                    rejected = self.rejected,
                    dead = self.dead,
                    retried = self.retried,
                    lost = self.lost,
                    duration_ms = took.as_millis() as u64,
                    "inbox batch"
                )
            };
        }
        if self.parked + self.retried == size as u64 {
            batch!(debug);
        } else {
            batch!(info);
        }
    }
}

/// How often the worker frees idempotency keys older than the retention.
const KEY_EXPIRY_EVERY: Duration = Duration::from_secs(600);

impl Inbox {
    /// Runs the worker until `shutdown` (or, with `once`, until nothing is due; then a failed
    /// batch ends the run with its error). On PostgreSQL `worker.concurrency` loops claim
    /// and process batches side by side, each under a lease owner of its own
    /// (`<owner>-<n>`); their totals are added up.
    pub async fn run_worker(
        &self,
        options: WorkerOptions,
        shutdown: CancellationToken,
    ) -> Result<WorkerTotals, store::StoreError> {
        let loops = match self.store().backend() {
            store::Backend::Sqlite => 1,
            store::Backend::Postgres => self.settings.concurrency(),
        };
        if loops == 1 {
            return self
                .run_loop(self.owner.to_string(), true, options, shutdown)
                .await;
        }
        let mut set = tokio::task::JoinSet::new();
        for n in 0..loops {
            let (inbox, shutdown) = (self.clone(), shutdown.clone());
            let owner = format!("{}-{n}", self.owner);
            set.spawn(async move { inbox.run_loop(owner, n == 0, options, shutdown).await });
        }
        let mut totals = WorkerTotals::default();
        let mut failed = None;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(t)) => totals.merge(&t),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(totals),
        }
    }

    /// One claim-and-process loop as `owner`; `upkeep`: this loop also frees expired
    /// idempotency keys.
    async fn run_loop(
        &self,
        owner: String,
        upkeep: bool,
        options: WorkerOptions,
        shutdown: CancellationToken,
    ) -> Result<WorkerTotals, store::StoreError> {
        let wakeups = self.store().wakeups().clone();
        let mut totals = WorkerTotals::default();
        let mut next_expiry = Instant::now();
        // Keys received before this were all freed by an earlier run.
        let mut freed_before = None;
        let mut failures = 0_u32;
        tracing::info!(owner = %owner, once = options.once, "inbox worker started");
        while !shutdown.is_cancelled() {
            if upkeep && Instant::now() >= next_expiry {
                next_expiry = Instant::now() + KEY_EXPIRY_EVERY;
                freed_before = self.expire_keys(freed_before).await;
            }
            let started = Instant::now();
            let step = self.process_next_batch(&owner, store::now());
            tokio::pin!(step);
            let result = tokio::select! {
                r = &mut step => Some(r),
                () = shutdown.cancelled() => {
                    tracing::info!(grace_ms = options.grace.as_millis() as u64, "shutdown: finishing the batch in flight");
                    tokio::time::timeout(options.grace, &mut step).await.ok()
                }
            };
            match result {
                Some(Ok(statuses)) if statuses.is_empty() => {
                    failures = 0;
                    if options.once {
                        break;
                    }
                    tokio::select! {
                        () = wakeups.inbox_due() => {}
                        () = tokio::time::sleep(self.settings.worker.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Some(Ok(statuses)) => {
                    failures = 0;
                    let batch = totals.add(&statuses);
                    batch.log(statuses.len(), started.elapsed());
                }
                Some(Err(e)) => {
                    failures += 1;
                    let delay = self.settings.backoff(failures).min(Duration::from_secs(30));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "inbox batch failed; releasing its leases");
                    self.release_leases(&owner).await;
                    if options.once {
                        // A cron run reports the failure instead of retrying forever.
                        return Err(e);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                None => {
                    tracing::warn!("grace period over; releasing leases");
                    self.release_leases(&owner).await;
                }
            }
        }
        tracing::info!(?totals, "inbox worker stopped");
        Ok(totals)
    }

    async fn release_leases(&self, owner: &str) {
        match self.store().release_leases(owner, store::now()).await {
            Ok(n) if n > 0 => tracing::info!(released = n, "leases released"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "releasing leases failed; they expire"),
        }
    }

    /// Frees the keys received before the retention and at or after `from`; returns the
    /// time before which every key is now free (`from` again if this run failed).
    async fn expire_keys(&self, from: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let retention =
            chrono::Duration::from_std(self.settings.erp.idempotency_retention).unwrap_or_default();
        let before = store::now() - retention;
        match self.store().expire_keys(from, before).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(expired = n, "idempotency keys past retention freed");
                }
                Some(before)
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiring idempotency keys failed");
                from
            }
        }
    }
}
