//! The effects executor: runs HTTP commands after the transaction that recorded them has
//! committed. It claims due `effects` rows of kind `http` under a lease (see
//! `store::effects`), sends each one's request with an `Idempotency-Key` (the effect id),
//! records the attempt and settles the effect: `done`, due again after a backoff (or the
//! receiver's `Retry-After`), or `dead` after `max_attempts` or a fatal answer. A dead
//! effect whose command has `on_failure` feeds that event back through the inbox for the
//! effect's items, in the transaction that settles it.
//!
//! Delivery is at least once: an executor that dies after sending and before settling
//! leaves the effect claimed until its lease ends, and the next executor sends it again
//! with the same key. Receivers deduplicate by `Idempotency-Key`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oms::bindings::CommandBinding;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::attempt::{Attempt, Request, Sender, Verdict};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::inbox::follow_up::FollowUp;
use crate::store::batch::Writes;
use crate::store::effects::{EffectRow, NewAttempt, Settle};
use crate::store::{self, Store, StoreError};
use crate::telemetry::GaugeCounts;

/// The request header that carries the effect id.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// An HTTP command's request, as configured (`[commands."NAME"] type = "http"`).
#[derive(Clone, Debug)]
pub struct HttpTarget {
    pub url: Url,
    pub method: Method,
    pub timeout: Option<Duration>,
    pub headers: HeaderMap,
    pub on_failure: Option<String>,
}

impl HttpTarget {
    /// The target of an `http` binding (`None` for other bindings), or the key that is
    /// wrong and why.
    pub fn from_binding(b: &CommandBinding) -> Result<Option<Self>, (&'static str, String)> {
        let CommandBinding::Http {
            url,
            method,
            timeout,
            headers,
            on_failure,
        } = b
        else {
            return Ok(None);
        };
        let url = crate::outbound::address::parse_url(url).map_err(|e| ("url", e.to_string()))?;
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ("method", format!("{method:?} is not an HTTP method")))?;
        let timeout = match timeout {
            None => None,
            Some(t) => Some(crate::config::duration::parse(t).map_err(|e| ("timeout", e))?),
        };
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ("headers", format!("{k:?} is not a header name")))?;
            if name == IDEMPOTENCY_HEADER {
                return Err((
                    "headers",
                    format!("{k} is set by orderflow (the effect id)"),
                ));
            }
            // The value is never echoed: it may be a credential.
            let value = HeaderValue::from_str(v)
                .map_err(|_| ("headers", format!("the value of {k} is not a header value")))?;
            map.insert(name, value);
        }
        if on_failure.as_deref().is_some_and(|e| e.trim().is_empty()) {
            return Err(("on_failure", "must name an event".into()));
        }
        Ok(Some(Self {
            url,
            method,
            timeout,
            headers: map,
            on_failure: on_failure.clone(),
        }))
    }
}

/// `[effects]` as the executor uses it.
#[derive(Clone, Debug)]
pub struct EffectsSettings {
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl EffectsSettings {
    pub fn from_config(config: &Config) -> Self {
        let e = &config.effects;
        Self {
            batch_size: i64::from(e.batch_size.max(1)),
            poll_interval: e.poll_interval.max(Duration::from_millis(10)),
            lease: e.lease,
            max_attempts: e.max_attempts.max(1),
            backoff: Backoff::new(e.backoff_base, e.backoff_max).jittered(),
        }
    }

    /// How attempt number `attempts` (1 for the first) ends its effect.
    pub fn settle(&self, verdict: Verdict, attempts: u32, now: DateTime<Utc>) -> Settle {
        match verdict {
            Verdict::Done => Settle::Done,
            Verdict::Fatal => Settle::Dead,
            Verdict::Retry { .. } if attempts >= self.max_attempts => Settle::Dead,
            Verdict::Retry { after } => {
                let delay = match after {
                    Some(after) => after.min(self.backoff.max),
                    None => self.backoff.delay(attempts.saturating_sub(1)),
                };
                Settle::Retry(now + chrono::Duration::from_std(delay).unwrap_or_default())
            }
        }
    }
}

/// Runs due effects; cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    store: Store,
    sender: Sender,
    targets: Arc<HashMap<String, HttpTarget>>,
    settings: EffectsSettings,
    /// The longest request deadline of any target: a lease never ends before it.
    longest: Duration,
    owner: Arc<str>,
}

/// A lease outlasts the longest request by this much, so a slow answer is settled by the
/// executor that sent it.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What one step did, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepTotals {
    pub done: u32,
    pub retried: u32,
    pub dead: u32,
    /// Settled by another executor meanwhile (this one's lease ran out).
    pub lost: u32,
}

impl StepTotals {
    pub fn total(&self) -> u32 {
        self.done + self.retried + self.dead + self.lost
    }
}

impl Executor {
    /// An executor with the configured HTTP commands and `[outbound]` client.
    pub fn new(store: Store, config: &Config) -> anyhow::Result<Self> {
        let mut targets = HashMap::new();
        for (name, binding) in &config.commands {
            let target = HttpTarget::from_binding(binding)
                .map_err(|(key, reason)| anyhow::anyhow!("commands.\"{name}\".{key}: {reason}"))?;
            if let Some(t) = target {
                targets.insert(name.clone(), t);
            }
        }
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let longest = targets
            .values()
            .map(|t: &HttpTarget| t.timeout.unwrap_or(config.outbound.timeout))
            .max()
            .unwrap_or(config.outbound.timeout);
        Ok(Self {
            longest,
            store,
            sender: Sender::new(&config.outbound)?,
            targets: Arc::new(targets),
            settings: EffectsSettings::from_config(config),
            owner: owner.into(),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claims a batch of due effects, sends them concurrently (one per order) and settles
    /// each. Returns what happened; an empty total means nothing was due.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<StepTotals, StoreError> {
        let lease = self.settings.lease.max(self.longest + LEASE_MARGIN);
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let rows = self
            .store
            .claim_effects(now, self.settings.batch_size, &self.owner, lease_until)
            .await?;
        let runs = rows.iter().map(|row| self.run_one(row));
        let results = futures_util::future::join_all(runs).await;
        let mut totals = StepTotals::default();
        for r in results {
            match r? {
                None => totals.lost += 1,
                Some(Settle::Done) => totals.done += 1,
                Some(Settle::Retry(_)) => totals.retried += 1,
                Some(Settle::Dead) => totals.dead += 1,
            }
        }
        Ok(totals)
    }

    /// Sends one claimed effect and settles it; `None` when the lease was lost meanwhile.
    #[tracing::instrument(skip_all, fields(effect = row.id, order = row.order_id))]
    async fn run_one(&self, row: &EffectRow) -> Result<Option<Settle>, StoreError> {
        let payload = row.payload.get().ok();
        let command = payload
            .and_then(|p| p.get("command"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let target = self.targets.get(command);
        let attempt = match (payload, target) {
            (None, _) => refused("the stored payload cannot be read"),
            (Some(_), None) => refused(&format!(
                "command {command:?} is not bound to an HTTP command in this configuration"
            )),
            (Some(p), Some(t)) => self.sender.send(request(row, p, t)).await,
        };
        let at = store::now();
        let attempts = u32::try_from(row.attempts).unwrap_or(1).max(1);
        let settle = self.settings.settle(attempt.verdict, attempts, at);
        let outcome = match settle {
            Settle::Done => "done",
            Settle::Retry(_) => "retry",
            Settle::Dead => "dead",
        };
        metrics::counter!("orderflow_effects_total", "outcome" => outcome).increment(1);
        metrics::histogram!("orderflow_effect_attempt_seconds")
            .record(attempt.latency.as_secs_f64());
        let record = NewAttempt {
            attempt: row.attempts,
            at,
            status_code: attempt.status,
            latency_ms: i64::try_from(attempt.latency.as_millis()).unwrap_or(i64::MAX),
            excerpt: attempt.excerpt.as_deref(),
            error: attempt.error.as_deref(),
        };
        let mut tx = self.store.begin().await?;
        let settled = tx
            .finish_effect(row.id, &self.owner, &record, &settle)
            .await?;
        if settled
            && matches!(settle, Settle::Dead)
            && let (Some(p), Some(event)) = (payload, target.and_then(|t| t.on_failure.as_deref()))
        {
            feed_back(&mut tx, p, event, at).await?;
        }
        tx.commit().await?;
        match &settle {
            Settle::Dead => tracing::warn!(
                command,
                attempts,
                error = attempt.error.as_deref().unwrap_or_default(),
                "effect is dead"
            ),
            Settle::Retry(due) => tracing::info!(
                command,
                attempts,
                due = %due,
                error = attempt.error.as_deref().unwrap_or_default(),
                "effect failed; retrying"
            ),
            Settle::Done => tracing::debug!(command, "effect done"),
        }
        Ok(settled.then_some(settle))
    }

    /// Runs until `shutdown`: a step whenever effects may be due (woken after commits,
    /// polled at `poll_interval`), then gives back what it still holds.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let wakeups = self.store.wakeups().clone();
        let mut failures = 0_u32;
        tracing::info!(owner = %self.owner, commands = self.targets.len(), "effects executor started");
        while !shutdown.is_cancelled() {
            let step = tokio::select! {
                r = self.step(store::now()) => r,
                () = shutdown.cancelled() => break,
            };
            match step {
                Ok(t) if t.total() > 0 => {
                    failures = 0;
                    tracing::info!(
                        done = t.done,
                        retried = t.retried,
                        dead = t.dead,
                        lost = t.lost,
                        "effects batch"
                    );
                }
                Ok(_) => {
                    failures = 0;
                    tokio::select! {
                        () = wakeups.effects_due() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay = self
                        .settings
                        .backoff
                        .delay(failures - 1)
                        .min(Duration::from_secs(30));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "effects step failed");
                    self.release().await;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
        self.release().await;
        tracing::info!("effects executor stopped");
        Ok(())
    }

    async fn release(&self) {
        match self.store.release_effects(&self.owner, store::now()).await {
            Ok(n) if n > 0 => tracing::info!(released = n, "effect leases released"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "releasing effect leases failed; they expire"),
        }
    }
}

/// Sets `orderflow_effects{status}`: HTTP command effects by status (every status
/// present). Effects are kept, so `done` grows for as long as the system runs: each count
/// is taken at a bounded cost ([`GaugeCounts`]).
pub async fn refresh_gauges(store: &Store) -> Result<(), StoreError> {
    static COUNTED: GaugeCounts<4> = GaugeCounts::new();
    for (i, status) in ["pending", "running", "done", "dead"]
        .into_iter()
        .enumerate()
    {
        let n = COUNTED.get(i, || store.effect_count(status)).await?;
        metrics::gauge!("orderflow_effects", "status" => status).set(n as f64);
    }
    Ok(())
}

/// An attempt that was never sent (the effect cannot be run here).
fn refused(error: &str) -> Attempt {
    Attempt {
        verdict: Verdict::Fatal,
        status: None,
        latency: Duration::ZERO,
        excerpt: None,
        error: Some(error.to_owned()),
    }
}

/// The request of effect `row`: the documented body (the stored snapshot with the effect's
/// id and time), the configured headers, `Content-Type` and `Idempotency-Key`.
fn request(row: &EffectRow, payload: &Value, target: &HttpTarget) -> Request {
    let mut body = json!({
        "effect_id": row.id,
        "created_at": row.created_at,
    });
    if let (Some(b), Some(p)) = (body.as_object_mut(), payload.as_object()) {
        for (k, v) in p {
            b.insert(k.clone(), v.clone());
        }
    }
    let mut headers = target.headers.clone();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(key) = HeaderValue::from_str(&row.id.to_string()) {
        headers.insert(IDEMPOTENCY_HEADER, key);
    }
    Request {
        method: target.method.clone(),
        url: target.url.clone(),
        headers,
        body: serde_json::to_vec(&body).unwrap_or_default(),
        timeout: target.timeout,
    }
}

/// Stores the `on_failure` event of a dead effect as an inbox update for its items.
async fn feed_back(
    tx: &mut store::Tx,
    payload: &Value,
    event: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(reference) = payload.pointer("/order/reference").and_then(Value::as_str) else {
        return Ok(());
    };
    let items: Vec<i64> = payload
        .get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|i| i.get("id")?.as_i64()).collect())
        .unwrap_or_default();
    let mut writes = Writes::default();
    FollowUp {
        order_reference: reference,
        event,
        items: &items,
    }
    .stage(&mut writes, at);
    tx.write(&writes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EffectsSettings {
        EffectsSettings {
            batch_size: 1,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(60)),
        }
    }

    #[test]
    fn attempts_settle_by_verdict_and_count() {
        let s = settings();
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let secs = |t: Settle| match t {
            Settle::Retry(at) => (at - now).num_seconds(),
            other => panic!("{other:?}"),
        };
        assert!(matches!(s.settle(Verdict::Done, 1, now), Settle::Done));
        assert!(matches!(s.settle(Verdict::Fatal, 1, now), Settle::Dead));
        assert_eq!(secs(s.settle(Verdict::Retry { after: None }, 1, now)), 2);
        assert_eq!(secs(s.settle(Verdict::Retry { after: None }, 2, now)), 4);
        let after = Some(Duration::from_secs(7));
        assert_eq!(secs(s.settle(Verdict::Retry { after }, 1, now)), 7);
        // A receiver cannot push a retry past backoff_max.
        let after = Some(Duration::from_secs(86_400));
        assert_eq!(secs(s.settle(Verdict::Retry { after }, 1, now)), 60);
        assert!(matches!(
            s.settle(Verdict::Retry { after: None }, 3, now),
            Settle::Dead
        ));
    }

    #[test]
    fn http_bindings_are_checked() {
        let binding = |v: Value| serde_json::from_value::<CommandBinding>(v).unwrap();
        let t = HttpTarget::from_binding(&binding(json!({
            "type": "http", "url": "https://psp.example/capture", "timeout": "10s",
            "headers": {"Authorization": "Bearer s3cret"}, "on_failure": "capture failed"
        })))
        .unwrap()
        .unwrap();
        assert_eq!(t.method, Method::POST);
        assert_eq!(t.timeout, Some(Duration::from_secs(10)));
        assert_eq!(t.on_failure.as_deref(), Some("capture failed"));
        for (v, key) in [
            (json!({"type": "http", "url": "ftp://x/"}), "url"),
            (
                json!({"type": "http", "url": "http://x/", "method": "GE T"}),
                "method",
            ),
            (
                json!({"type": "http", "url": "http://x/", "timeout": "soon"}),
                "timeout",
            ),
            (
                json!({"type": "http", "url": "http://x/", "headers": {"Idempotency-Key": "1"}}),
                "headers",
            ),
            (
                json!({"type": "http", "url": "http://x/", "headers": {"X-A": "a\nb"}}),
                "headers",
            ),
        ] {
            let (k, reason) = HttpTarget::from_binding(&binding(v.clone())).unwrap_err();
            assert_eq!(k, key, "{v}: {reason}");
            assert!(!reason.contains("a\nb"));
        }
        assert!(
            HttpTarget::from_binding(&CommandBinding::Noop)
                .unwrap()
                .is_none()
        );
    }
}
