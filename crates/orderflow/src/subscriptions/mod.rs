//! Subscriptions: order events out of the change feed, signed the Standard Webhooks way and
//! delivered at least once, in change order per subscription and order, in parallel across
//! orders, retried on a schedule (`[subscriptions] retry_schedule`). The typed operations
//! here serve the admin API (`http/subscriptions`) and `orderflow subscriptions`; the
//! delivery loop is [`worker`].

pub mod event;
pub mod send;
pub mod worker;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::OutboundConfig;
pub use crate::outbound::address::UrlError;
use crate::store::subscriptions::{AttemptRow, DeliveryRow, SubscriptionRow};
use crate::store::{self, Store, StoreError};
pub use event::{DeadUpdateEvent, Event, EventType};

/// Feed rows per replay page (one transaction each).
const REPLAY_PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(
        "unknown event type {0:?}: one of order.created, item.state_changed, order.updated, update.dead"
    )]
    UnknownEventType(String),
    #[error("no subscription {0}")]
    NotFound(i64),
    #[error("subscription {subscription} has no delivery {delivery}")]
    NoDelivery { subscription: i64, delivery: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = SubscriptionError> = std::result::Result<T, E>;

/// A subscription as the admin API and the CLI show it: never its secret.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: i64,
    pub url: String,
    /// Event types it takes; empty: every type.
    pub events: Vec<String>,
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled (`failing: ...` when deliveries kept failing, else by an
    /// operator).
    pub disabled_reason: Option<String>,
    /// Failed attempts in a row (0 after a success).
    pub failures: i64,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Deliveries not yet delivered or dead.
    pub backlog: i64,
    /// Age of the oldest of them, in seconds; 0 when there is none.
    pub oldest_undelivered_age_seconds: f64,
    /// Always `whsec_***`: the secret is shown once, at creation.
    pub secret: &'static str,
}

impl SubscriptionView {
    pub fn of(row: &SubscriptionRow, backlog: i64, oldest: Option<DateTime<Utc>>) -> Self {
        Self {
            id: row.id,
            url: row.url.clone(),
            events: split_events(&row.events),
            enabled: row.enabled,
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason.clone(),
            failures: row.failures,
            failing_since: row.failing_since,
            created_at: row.created_at,
            backlog,
            oldest_undelivered_age_seconds: oldest
                .map_or(0.0, |t| (Utc::now() - t).as_seconds_f64().max(0.0)),
            secret: "whsec_***",
        }
    }
}

/// A new subscription and its secret, shown once. No `Debug`: the secret stays out of logs.
#[derive(Clone, Serialize, ToSchema)]
pub struct Created {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// The `whsec_` signing secret: store it now, it is not shown again.
    #[serde(rename = "signing_secret")]
    pub signing_secret: String,
}

/// One HTTP attempt of a delivery.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub at: DateTime<Utc>,
    /// The response status; absent when no answer came (timeout, connection error).
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// The start of the response body (at most 1 KiB).
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// A delivery and its attempts.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub subscription_id: i64,
    pub event_id: String,
    pub event_type: String,
    /// The order whose lane the delivery waits in; `null` for an `update.dead` of an order
    /// that does not exist.
    pub order_id: Option<i64>,
    /// The order's version after the change; `null` for `update.dead`.
    pub version: Option<i64>,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts of the current schedule (a retry starts a new one).
    pub attempts: i64,
    /// When it is (or was) due.
    pub due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptView>,
}

impl DeliveryView {
    fn of(row: &DeliveryRow, attempts: &[AttemptRow]) -> Self {
        Self {
            id: row.id,
            subscription_id: row.subscription_id,
            event_id: row.event_id.clone(),
            event_type: row.event_type.clone(),
            order_id: row.order_id,
            version: row.version,
            status: row.status.clone(),
            attempts: row.attempts,
            due_at: row.due_at,
            created_at: row.created_at,
            done_at: row.done_at,
            attempt_log: attempts
                .iter()
                .filter(|a| a.delivery_id == row.id)
                .map(|a| AttemptView {
                    at: a.at,
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    response_excerpt: a.response_excerpt.clone(),
                    error: a.error.clone(),
                })
                .collect(),
        }
    }
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct ReplayReport {
    /// Changes committed since the time asked for that the subscription had passed.
    pub changes: usize,
    /// Deliveries queued again (the changes of the types the subscription takes, and the
    /// `update.dead` events).
    pub queued: usize,
    /// Of those, `update.dead` events the subscription was given for updates that died
    /// since the time asked for.
    pub dead_updates: usize,
}

fn split_events(events: &str) -> Vec<String> {
    events
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses event type names; empty means every type.
pub fn parse_events(names: &[String]) -> Result<Vec<EventType>> {
    let mut out = Vec::new();
    for n in names {
        let t = EventType::parse(n.trim())
            .ok_or_else(|| SubscriptionError::UnknownEventType(n.clone()))?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Creates a subscription of `url` for `events` (empty: every type), starting at the
/// change feed's current end. Returns it with its new secret.
pub async fn create(
    store: &Store,
    outbound: &OutboundConfig,
    url: &str,
    events: &[String],
) -> Result<Created> {
    let url = crate::outbound::address::check_url(url, outbound.block_private_addresses).await?;
    let events = parse_events(events)?;
    let names: Vec<&str> = events.iter().map(|t| t.as_str()).collect();
    let secret = crate::auth::new_signing_secret();
    let row = store
        .insert_subscription(url.as_str(), &secret, &names.join(","), store::now())
        .await?;
    tracing::info!(subscription = row.id, url = %row.url, events = %row.events, "subscription created");
    Ok(Created {
        subscription: SubscriptionView::of(&row, 0, None),
        signing_secret: secret,
    })
}

/// Every subscription with its backlog.
pub async fn list(store: &Store) -> Result<Vec<SubscriptionView>> {
    let rows = store.subscriptions().await?;
    let backlog = store.delivery_backlog().await?;
    Ok(rows
        .iter()
        .map(|r| {
            let b = backlog.iter().find(|b| b.subscription_id == r.id);
            SubscriptionView::of(r, b.map_or(0, |b| b.pending), b.and_then(|b| b.oldest))
        })
        .collect())
}

pub async fn get(store: &Store, id: i64) -> Result<SubscriptionView> {
    let row = store
        .subscription(id)
        .await?
        .ok_or(SubscriptionError::NotFound(id))?;
    let backlog = store.delivery_backlog().await?;
    let b = backlog.iter().find(|b| b.subscription_id == id);
    Ok(SubscriptionView::of(
        &row,
        b.map_or(0, |b| b.pending),
        b.and_then(|b| b.oldest),
    ))
}

/// Enables (its failure run starts again) or disables a subscription. Enabled again, it
/// goes on from where its cursor stopped: changes made while it was disabled are delivered.
pub async fn set_enabled(store: &Store, id: i64, enabled: bool) -> Result<SubscriptionView> {
    let reason = (!enabled).then_some("disabled by an operator");
    store
        .set_subscription_enabled(id, enabled, reason, store::now())
        .await?
        .ok_or(SubscriptionError::NotFound(id))?;
    tracing::info!(subscription = id, enabled, "subscription changed");
    get(store, id).await
}

pub async fn delete(store: &Store, id: i64) -> Result<()> {
    if store.delete_subscription(id).await? {
        tracing::info!(subscription = id, "subscription deleted");
        Ok(())
    } else {
        Err(SubscriptionError::NotFound(id))
    }
}

/// A page of a subscription's deliveries, newest first, with their attempts; and the
/// `before` of the next page.
pub async fn deliveries(
    store: &Store,
    id: i64,
    status: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<DeliveryView>, Option<i64>)> {
    store
        .subscription(id)
        .await?
        .ok_or(SubscriptionError::NotFound(id))?;
    let rows = store.deliveries(id, status, before, limit).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let attempts = store.delivery_attempts(&ids).await?;
    let next = (rows.len() as i64 >= limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok((
        rows.iter()
            .map(|r| DeliveryView::of(r, &attempts))
            .collect(),
        next,
    ))
}

/// Makes one delivery due now with a fresh retry schedule.
pub async fn retry(store: &Store, subscription: i64, delivery: i64) -> Result<DeliveryView> {
    let row = store
        .retry_delivery(subscription, delivery, store::now())
        .await?
        .ok_or(SubscriptionError::NoDelivery {
            subscription,
            delivery,
        })?;
    let attempts = store.delivery_attempts(&[row.id]).await?;
    tracing::info!(subscription, delivery, "delivery retried by an operator");
    Ok(DeliveryView::of(&row, &attempts))
}

/// Queues the subscription's events again for the changes committed since `since` that
/// its cursor has passed (later ones come on their own), in pages, then the `update.dead`
/// events it was given for updates that died since `since`; `progress(done, total)` after
/// each page.
pub async fn replay(
    store: &Store,
    id: i64,
    since: DateTime<Utc>,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReplayReport> {
    store
        .subscription(id)
        .await?
        .ok_or(SubscriptionError::NotFound(id))?;
    let dead = store.replay_dead_count(id, since).await?.max(0) as u64;
    let total = store.replay_count(id, since).await?.max(0) as u64 + dead;
    progress(0, total);
    let mut report = ReplayReport::default();
    let mut after = 0;
    loop {
        let (read, queued, last) = store
            .replay_page(
                id,
                since,
                after,
                REPLAY_PAGE,
                store::now(),
                event::delivery_of,
            )
            .await?;
        report.changes += read;
        report.queued += queued;
        progress(report.changes as u64, total.max(report.changes as u64));
        match last {
            Some(seq) if read as i64 >= REPLAY_PAGE => after = seq,
            _ => break,
        }
    }
    // The deaths after the changes: each copies the bytes it was first given (one
    // statement; deaths are few).
    report.dead_updates = store.replay_dead(id, since, store::now()).await? as usize;
    report.queued += report.dead_updates;
    let done = (report.changes + report.dead_updates) as u64;
    progress(done, total.max(done));
    tracing::info!(subscription = id, since = %since, changes = report.changes, queued = report.queued, dead_updates = report.dead_updates, "subscription replayed");
    Ok(report)
}
