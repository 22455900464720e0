//! The check-condition worker: moves items whose timeout is due and items in states with
//! event-less transitions, driven by the `timers` table the engine's decisions fill.
//!
//! # Claiming
//! A pass walks the due part of `timers` in `(due_at, id)` order with a cursor, a batch at a
//! time; the walk is an index range, so a pass reads the timers that are due and never the
//! ones that wait. For each order it meets, in one transaction, it takes the order, re-reads
//! that order's due timers, runs [`oms::Engine::check`] for their items, persists the
//! decisions through the same planner as any other change (version, history with source
//! `timeout`/`condition`, change feed; the change's [`Source`] is [`Source::Timeout`] or
//! [`Source::Condition`]) and commits. A pass that moves an item also makes the order's parked inbox
//! updates due, in the same transaction, like any other change of the order: the move may
//! be what lets their event apply.
//!
//! Every write to an order's timers happens with the order held, so the re-read under the
//! lock is the truth: whoever takes the order after a pass that moved an item finds that
//! item's timers gone (the move dropped them) or in the future (rescheduled), and does
//! nothing. That is why two instances never move an item twice, with no lease column and
//! nothing left behind by a crash (the transaction rolls back, the timers stay due). On
//! PostgreSQL the order is taken with `FOR NO KEY UPDATE SKIP LOCKED`: an order that another
//! instance (or an API request) holds is skipped, not waited for, and left to the holder or
//! the next pass. SQLite has one writer, so passes are serialised anyway.
//!
//! Each order is visited at most once per pass. A chain of event-less transitions advances
//! one step per pass (the engine sets the next state's condition timer due at once), and a
//! cycle of always-true conditions cannot keep a pass from ending.
//!
//! # Backoff
//! A due timer whose check moved nothing (a timeout event whose transitions' conditions are
//! all false or whose command failed; event-less transitions with no true condition) would
//! otherwise fire on every pass. It is moved to `now + min(base * 2^attempts, max)` and its
//! `attempts` column counts up: base is the poll interval (1 s for [`OrderService::check_due`]), max
//! one hour. A move drops the item's timers, so the next state starts again at zero.
//! Attribute conditions change with the order, not with time: a change that sets attributes
//! can make the order's condition timers due again with `Tx::wake_condition_timers`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use oms::engine::{Cause, Decisions, EngineError, Outcome};
use oms::{Process, engine};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::plan::{self, Kind, Patched, Plan, engine_order};
use super::service::{DomainError, OrderService, Result, Source};
use crate::store::batch::Writes;
use crate::store::orders::{ItemRow, OrderRow};
use crate::store::timers::{DueCursor, TimerRow};
use crate::store::{self, StoreError};

/// Timers read per batch by the background loop.
pub const BATCH: u32 = 100;

/// The longest a timer that keeps moving nothing waits between checks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Delay before a due timer that moved nothing is checked again: from the poll interval,
/// doubled per check that moved nothing, at most [`MAX_BACKOFF`].
pub use crate::backoff::Backoff;

/// The backoff of timers checked every `poll`.
pub fn timer_backoff(poll: Duration) -> Backoff {
    Backoff::new(poll, MAX_BACKOFF)
}

/// The delay after `attempts` earlier checks that moved nothing. Never under 100 ms: a
/// rescheduled timer must leave the range the current pass walks.
fn recheck_delay(backoff: &Backoff, attempts: i32) -> Duration {
    backoff
        .delay(attempts.max(0).unsigned_abs())
        .max(Duration::from_millis(100))
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckPass {
    /// Orders whose due timers were checked.
    pub orders: usize,
    /// Items whose state changed.
    pub items_moved: usize,
    /// Due timers checked.
    pub timers_fired: usize,
    /// Due timers that moved nothing and were backed off.
    pub rescheduled: usize,
    pub duration: Duration,
}

impl std::ops::AddAssign<&CheckPass> for CheckPass {
    fn add_assign(&mut self, p: &CheckPass) {
        self.orders += p.orders;
        self.items_moved += p.items_moved;
        self.timers_fired += p.timers_fired;
        self.rescheduled += p.rescheduled;
        self.duration += p.duration;
    }
}

impl OrderService {
    /// One pass over the timers due at `now`, `limit` per batch, with the default backoff.
    pub async fn check_due(&self, now: DateTime<Utc>, limit: u32) -> Result<CheckPass> {
        self.check_due_with(now, limit, timer_backoff(Duration::from_secs(1)))
            .await
    }

    /// [`OrderService::check_due`] with the given backoff for timers that move nothing.
    pub async fn check_due_with(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        backoff: Backoff,
    ) -> Result<CheckPass> {
        self.pass(now, limit, backoff, None).await
    }

    /// Walks the due range; stops early (between orders) when `stop` is cancelled.
    async fn pass(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        backoff: Backoff,
        stop: Option<&CancellationToken>,
    ) -> Result<CheckPass> {
        let started = Instant::now();
        // What both backends store, so due_at values written here compare as written.
        let now = now
            .duration_trunc(TimeDelta::microseconds(1))
            .unwrap_or(now);
        let limit = limit.max(1);
        let mut pass = CheckPass::default();
        let mut visited = HashSet::new();
        let mut cursor = DueCursor::START;
        'walk: loop {
            let batch = self.store().due_timers(now, cursor, limit).await?;
            for t in &batch {
                if stop.is_some_and(CancellationToken::is_cancelled) {
                    break 'walk;
                }
                if visited.insert(t.order_id) {
                    let span = tracing::debug_span!("check_order", order = t.order_id);
                    self.check_order(t.order_id, now, backoff, &mut pass)
                        .instrument(span)
                        .await?;
                }
            }
            match batch.last() {
                Some(last) if batch.len() >= limit as usize => cursor = last.into(),
                _ => break,
            }
        }
        pass.duration = started.elapsed();
        record(&pass);
        Ok(pass)
    }

    /// Checks one order's due timers in one transaction.
    async fn check_order(
        &self,
        order_id: i64,
        now: DateTime<Utc>,
        backoff: Backoff,
        pass: &mut CheckPass,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        let Some(row) = tx.try_lock_order(order_id).await? else {
            return Ok(());
        };
        let timers = tx.due_timers_of_order(order_id, now).await?;
        if timers.is_empty() {
            // Another pass got here first.
            return Ok(());
        }
        pass.orders += 1;
        let items = tx.items(order_id).await?;
        // A timer is void once its item left the state it was set for. Moves drop timers,
        // so this only catches rows written some other way.
        let (live, stale): (Vec<&TimerRow>, Vec<&TimerRow>) = timers.iter().partition(|t| {
            items
                .iter()
                .any(|i| i.id == t.item_id && i.state == t.state)
        });
        for t in stale {
            tx.delete_timer(t.id).await?;
        }
        pass.timers_fired += live.len();
        let mut due_items: Vec<i64> = live.iter().map(|t| t.item_id).collect();
        due_items.sort_unstable();
        due_items.dedup();

        let mut moved = Vec::new();
        let mut changed = false;
        if !due_items.is_empty() {
            match self
                .processes()
                .run_engine_caught(|| self.decide_due(&row, &items, &due_items, now))
                .map_err(DomainError::from)
                .and_then(|decided| decided)
            {
                Ok((process, order, decisions)) => {
                    moved = decisions.timers_dropped.clone();
                    let plan = Plan {
                        process: &process,
                        source: &checked_by(&decisions),
                        kind: Kind::Updated { event: None },
                        placed: &[],
                        patched: &Patched::default(),
                        decisions: &decisions,
                        now,
                        // Parked updates are due on the inbox's clock (the wall clock), not
                        // the pass's: a pass run with a later `now` (a test's clock, a
                        // catch-up) must not push them into the future.
                        wake_at: store::now().min(now),
                    };
                    let mut writes = Writes::default();
                    changed = plan::plan(&mut writes, &plan, row, items, &order).changed;
                    tx.write(&writes).await?;
                }
                // A plugin's bug: backed off like the case below, but it is not the data.
                Err(e @ DomainError::Store(StoreError::Panicked(_))) => tracing::error!(
                    order = order_id,
                    error = %e,
                    "checking due timers panicked; backing off"
                ),
                // The order cannot be checked as stored (its process is gone, an item is in
                // a state the process lacks): back off instead of failing every pass.
                Err(e) => tracing::warn!(
                    order = order_id,
                    error = %e,
                    "cannot check due timers; backing off"
                ),
            }
        }
        for t in live.iter().filter(|t| !moved.contains(&t.item_id)) {
            let due = now + recheck_delay(&backoff, t.attempts);
            tx.reschedule_timer(t.id, due).await?;
            pass.rescheduled += 1;
        }
        tx.commit().await?;
        pass.items_moved += moved.len();
        if changed {
            // The projector, and the inbox worker for the parked updates just woken.
            self.committed();
        }
        Ok(())
    }

    /// The engine's decisions for the due items; writes nothing.
    fn decide_due(
        &self,
        row: &OrderRow,
        items: &[ItemRow],
        due_items: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(std::sync::Arc<Process>, engine::Order, Decisions)> {
        let process = self
            .processes()
            .get(&row.process)
            .ok_or_else(|| DomainError::UnknownProcess(row.process.clone()))?
            .clone();
        let mut order = engine_order(row, items, &process)?;
        let decisions = self
            .processes()
            .engine(&process)
            .check(&mut order, Some(due_items), now)
            .map_err(|e| match e {
                EngineError::UnknownItem { item, .. } => DomainError::UnknownItem(item),
                EngineError::UnknownEvent { process, event } => {
                    DomainError::UnknownEvent { process, event }
                }
                other => DomainError::Engine(other),
            })?;
        Ok((process, order, decisions))
    }
}

/// Who a pass's change is credited to (the change feed's `source`): the cause of its first
/// move, a due timeout or an event-less transition.
fn checked_by(decisions: &Decisions) -> Source {
    let first = decisions
        .steps
        .iter()
        .find(|s| matches!(s.outcome, Outcome::Moved { .. }));
    match first.map(|s| s.cause) {
        Some(Cause::Timeout) => Source::Timeout,
        _ => Source::Condition,
    }
}

fn record(pass: &CheckPass) {
    metrics::histogram!("orderflow_check_condition_pass_seconds")
        .record(pass.duration.as_secs_f64());
    metrics::counter!("orderflow_check_condition_timers_total", "outcome" => "fired")
        .increment(pass.timers_fired as u64);
    metrics::counter!("orderflow_check_condition_timers_total", "outcome" => "rescheduled")
        .increment(pass.rescheduled as u64);
    // A pass that only backed off timers is a retry: DEBUG, like the inbox's retries.
    if pass.items_moved > 0 {
        tracing::info!(
            orders = pass.orders,
            moved = pass.items_moved,
            fired = pass.timers_fired,
            rescheduled = pass.rescheduled,
            duration_ms = pass.duration.as_millis() as u64,
            "check-condition pass"
        );
    } else if pass.timers_fired > 0 {
        tracing::debug!(
            orders = pass.orders,
            moved = pass.items_moved,
            fired = pass.timers_fired,
            rescheduled = pass.rescheduled,
            duration_ms = pass.duration.as_millis() as u64,
            "check-condition pass"
        );
    }
}

/// Runs a pass every `poll` until `shutdown`; a pass in progress stops between orders. The
/// first pass runs after one interval. Failures (store unreachable) are logged and the
/// next pass is delayed, doubling up to 30 s.
pub async fn run_loop(service: OrderService, poll: Duration, shutdown: CancellationToken) {
    let backoff = timer_backoff(poll);
    let mut pause = poll;
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = poll;
        match service
            .pass(store::now(), BATCH, backoff, Some(&shutdown))
            .await
        {
            Ok(_) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                pause = poll
                    .saturating_mul(2u32.saturating_pow(failures.min(5)))
                    .min(Duration::from_secs(30));
                let error = format!("{:#}", anyhow::Error::new(e));
                tracing::warn!(error, failures, "check-condition pass failed");
            }
        }
    }
    tracing::info!("check-condition loop stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_never_zero() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(recheck_delay(&b, 0), Duration::from_millis(100));
        assert_eq!(recheck_delay(&b, -3), Duration::from_millis(100));
        let b = timer_backoff(Duration::from_secs(2));
        assert_eq!(recheck_delay(&b, i32::MAX), MAX_BACKOFF);
    }
}
