//! The delivery loop: materialise deliveries from the change feed, claim due ones under a
//! lease (the first pending one of each subscription and order), send them concurrently,
//! record each failed attempt at once and the delivered ones together at the next pass
//! (one transaction, not one each). Woken by commits in this process, polling as the
//! floor. A slow or failing receiver holds one slot per order of its own and nothing else:
//! the inbox, the API and other subscriptions go on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::event;
use super::send;
use crate::config::{OutboundConfig, SubscriptionsConfig};
use crate::domain::OrderService;
use crate::outbound::attempt::{Attempt, Sender, Verdict};
use crate::store::subscriptions::{AttemptRecord, ClaimedDelivery, Recorded};
use crate::store::{self, Store, StoreError};
use crate::webhook::SigningSecret;

/// How often the backlog gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a shutdown waits for attempts in flight before it gives their leases up.
const GRACE: Duration = Duration::from_secs(5);

/// The loop's settings and its HTTP client.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    config: Arc<SubscriptionsConfig>,
    sender: Sender,
    /// Delivered attempts not recorded yet: the next pass records them in one transaction.
    delivered: Arc<Mutex<Vec<(ClaimedDelivery, AttemptRecord)>>>,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    pub materialised: usize,
    pub claimed: usize,
}

impl Deliverer {
    /// The loop over `store` with the HTTP client of `outbound`.
    pub fn new(
        store: Store,
        config: &SubscriptionsConfig,
        outbound: &OutboundConfig,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            store,
            config: Arc::new(config.clone()),
            sender: Sender::new(outbound)?,
            delivered: Arc::default(),
        })
    }

    /// Materialises what the feed holds for every subscription, records the attempts
    /// delivered since the last pass and claims up to `free` due deliveries (those two in
    /// one transaction), spawning their attempts into `inflight`.
    pub async fn pass(&self, free: usize, inflight: &mut JoinSet<()>) -> Result<Pass, StoreError> {
        let now = store::now();
        let materialised = self
            .store
            .materialise(i64::from(self.config.batch_size), now, event::delivery_of)
            .await?;
        let lease = now + TimeDelta::from_std(self.config.lease).unwrap_or(TimeDelta::MAX);
        let rows = self.record_and_claim(now, free, lease).await?;
        let claimed = rows.len();
        for row in rows {
            let this = self.clone();
            inflight.spawn(async move { this.deliver(row).await });
        }
        Ok(Pass {
            materialised,
            claimed,
        })
    }

    /// One attempt of a claimed delivery, recorded.
    async fn deliver(&self, claimed: ClaimedDelivery) {
        let now = store::now();
        let outcome = match SigningSecret::parse(&claimed.secret) {
            Err(e) => Attempt {
                verdict: Verdict::Fatal,
                status: None,
                latency: Duration::ZERO,
                excerpt: None,
                error: Some(e.to_string()),
            },
            Ok(secret) => {
                send::attempt(
                    &self.sender,
                    &claimed.url,
                    &secret,
                    &claimed.event_id,
                    now.timestamp(),
                    &claimed.body,
                    self.config.timeout,
                )
                .await
            }
        };
        let delivered = outcome.verdict == Verdict::Done;
        let retry_after = match outcome.verdict {
            Verdict::Retry { after } => after,
            Verdict::Done | Verdict::Fatal => None,
        };
        let finished = store::now();
        let record = AttemptRecord {
            at: finished,
            status_code: outcome.status,
            latency_ms: outcome.latency.as_millis().min(i64::MAX as u128) as i64,
            response_excerpt: outcome.excerpt.clone(),
            error: outcome.error.clone(),
        };
        metrics::histogram!("orderflow_subscription_attempt_duration_seconds")
            .record(outcome.latency.as_secs_f64());
        metrics::counter!("orderflow_subscription_attempts_total",
            "outcome" => if delivered { "delivered" } else { "failed" })
        .increment(1);
        if delivered {
            // Recorded with the others of this pass, by the next one; till then the lease
            // holds it, and the order's next event waits.
            self.delivered.lock().unwrap().push((claimed, record));
            return;
        }
        let next_due = self.next_due(claimed.attempts + 1, finished, retry_after);
        let (failures, window) = (
            i64::from(self.config.disable_after_failures),
            TimeDelta::from_std(self.config.disable_after).unwrap_or(TimeDelta::MAX),
        );
        let disable = move |run: i64, since: DateTime<Utc>| {
            (run >= failures && finished - since >= window)
                .then(|| format!("failing: {run} failed attempts in a row since {since}"))
        };
        match self
            .store
            .record_failure(&claimed, &record, next_due, disable)
            .await
        {
            Ok((recorded, disabled)) => {
                if recorded == Recorded::Dead {
                    metrics::counter!("orderflow_subscription_deliveries_total", "outcome" => "dead")
                        .increment(1);
                    tracing::warn!(subscription = claimed.subscription_id, delivery = claimed.id,
                        event = %claimed.event_id, error = ?record.error, "delivery dead");
                } else {
                    tracing::debug!(subscription = claimed.subscription_id, delivery = claimed.id,
                        event = %claimed.event_id, status = ?record.status_code,
                        error = ?record.error, recorded = ?recorded, "delivery attempt");
                }
                if disabled {
                    metrics::counter!("orderflow_subscriptions_disabled_total").increment(1);
                    tracing::warn!(
                        subscription = claimed.subscription_id,
                        "subscription disabled: its deliveries kept failing"
                    );
                }
            }
            Err(e) => {
                // The lease runs out and another pass sends it again: at least once.
                tracing::warn!(delivery = claimed.id, error = %e, "recording a delivery attempt failed");
            }
        }
    }

    /// Records the attempts delivered since the last call and claims up to `free` due
    /// deliveries until `lease`, in one transaction. On failure the attempts are kept for
    /// the next call; a lease that runs out meanwhile sends the event again (at least once).
    async fn record_and_claim(
        &self,
        now: DateTime<Utc>,
        free: usize,
        lease: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let done = std::mem::take(&mut *self.delivered.lock().unwrap());
        if done.is_empty() {
            if free == 0 {
                return Ok(Vec::new());
            }
            return self.store.claim_deliveries(now, free as i64, lease).await;
        }
        match self
            .store
            .record_and_claim(&done, now, free as i64, lease)
            .await
        {
            Ok((recorded, rows)) => {
                report_delivered(&done, &recorded);
                Ok(rows)
            }
            Err(e) => {
                self.delivered.lock().unwrap().extend(done);
                Err(e)
            }
        }
    }

    /// When attempt `done + 1` is due after `done` attempts failed; `None`: the schedule
    /// is over. A `Retry-After` longer than the schedule's step wins (up to a day).
    fn next_due(
        &self,
        done: i64,
        now: DateTime<Utc>,
        retry_after: Option<Duration>,
    ) -> Option<DateTime<Utc>> {
        let step = *self
            .config
            .retry_schedule
            .get(usize::try_from(done).ok()?)?;
        let wait = retry_after
            .map_or(step, |r| r.min(Duration::from_secs(86_400)))
            .max(step);
        Some(now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX))
    }

    /// Refreshes the gauges: backlog and oldest undelivered age per subscription, and how
    /// many subscriptions are enabled and disabled.
    pub async fn refresh_gauges(&self) -> Result<(), StoreError> {
        let subs = self.store.subscriptions().await?;
        let backlog = self.store.delivery_backlog().await?;
        let now = Utc::now();
        let disabled = subs.iter().filter(|s| !s.enabled).count();
        metrics::gauge!("orderflow_subscriptions", "state" => "enabled")
            .set((subs.len() - disabled) as f64);
        metrics::gauge!("orderflow_subscriptions", "state" => "disabled").set(disabled as f64);
        for s in &subs {
            let b = backlog.iter().find(|b| b.subscription_id == s.id);
            let id = s.id.to_string();
            metrics::gauge!("orderflow_subscription_backlog", "subscription" => id.clone())
                .set(b.map_or(0, |b| b.pending) as f64);
            let age = b
                .and_then(|b| b.oldest)
                .map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
            metrics::gauge!("orderflow_subscription_oldest_undelivered_seconds", "subscription" => id)
                .set(age);
        }
        Ok(())
    }

    /// Runs until `shutdown`; then waits a moment for attempts in flight (an attempt cut
    /// off is sent again once its lease runs out).
    pub async fn run(self, service: OrderService, shutdown: CancellationToken) {
        let mut changes = service.watch_changes();
        let mut watching = true;
        let mut inflight = JoinSet::new();
        let poll = self.config.poll_interval.max(Duration::from_millis(10));
        let mut gauges_at = tokio::time::Instant::now();
        let mut failures: u32 = 0;
        tracing::info!("subscription deliveries started");
        loop {
            let free = self.config.concurrency.saturating_sub(inflight.len());
            let mut pause = poll;
            match self.pass(free, &mut inflight).await {
                Ok(p) => {
                    failures = 0;
                    if p.materialised >= self.config.batch_size as usize
                        || (p.claimed > 0 && p.claimed == free)
                    {
                        pause = Duration::ZERO;
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let max = poll.saturating_mul(32).min(Duration::from_secs(30));
                    pause = crate::backoff::Backoff::new(poll, max).delay(failures);
                    tracing::warn!(error = %e, failures, "subscription pass failed");
                }
            }
            if gauges_at.elapsed() >= GAUGE_INTERVAL {
                gauges_at = tokio::time::Instant::now();
                if let Err(e) = self.refresh_gauges().await {
                    tracing::debug!(error = %e, "refreshing the subscription gauges failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                r = changes.changed(), if watching => watching = r.is_ok(),
                _ = tokio::time::sleep(pause) => {}
            }
            // Every attempt that finished meanwhile frees its slot for the next pass, not
            // only the one the select saw: else each pass claims one delivery and the rate
            // is bounded by passes per second.
            while inflight.try_join_next().is_some() {}
        }
        let _ = tokio::time::timeout(GRACE, async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
        inflight.shutdown().await;
        let now = store::now();
        if let Err(e) = self.record_and_claim(now, 0, now).await {
            tracing::warn!(error = %e, "recording delivered attempts failed");
        }
        tracing::info!("subscription deliveries stopped");
    }

    /// Delivers what is due now until nothing is (`orderflow worker --once`); returns the
    /// attempts made.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut attempts = 0;
        loop {
            let mut inflight = JoinSet::new();
            let p = self.pass(self.config.concurrency, &mut inflight).await?;
            while inflight.join_next().await.is_some() {}
            attempts += p.claimed;
            if p.claimed == 0 && p.materialised == 0 {
                return Ok(attempts);
            }
        }
    }
}

/// Counts and logs delivered attempts once they are recorded.
fn report_delivered(done: &[(ClaimedDelivery, AttemptRecord)], recorded: &[Recorded]) {
    for ((claimed, record), recorded) in done.iter().zip(recorded) {
        if *recorded == Recorded::Delivered {
            metrics::counter!("orderflow_subscription_deliveries_total", "outcome" => "delivered")
                .increment(1);
        }
        tracing::debug!(subscription = claimed.subscription_id, delivery = claimed.id,
            event = %claimed.event_id, status = ?record.status_code,
            recorded = ?recorded, "delivery attempt");
    }
}
