//! `Subscription.orderChanged`: every committed change of one order, in version order,
//! read from the change feed.
//!
//! A subscription reads the feed after the version it saw last when a commit in this
//! process wakes it ([`OrderService::watch_changes`]), and every [`FALLBACK_POLL`]
//! otherwise, for changes written by other processes sharing a PostgreSQL. Nothing runs
//! while nobody subscribes.
//!
//! [`OrderService::watch_changes`]: crate::domain::OrderService::watch_changes

use std::collections::VecDeque;
use std::time::Duration;

use async_graphql::{Context, Json, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::watch;

use super::error::IntoGraphql;
use super::query::invalid;
use super::types::Move;
use super::{SHOP, State};
use crate::domain::types::{OrderId, OrderReference};
use crate::domain::{OrderService, Target};
use crate::store::feed::FeedRow;

/// How often a subscription looks for changes made by other processes.
pub(super) const FALLBACK_POLL: Duration = Duration::from_secs(2);
/// Feed rows read at once.
const PAGE: i64 = 100;

pub struct SubscriptionRoot;

/// One committed change to an order.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct OrderChange {
    pub order_id: i64,
    pub reference: String,
    /// The order's version after the change.
    pub version: i64,
    /// What changed: `created`, `event`, `attributes`, ...
    pub kind: String,
    pub event: Option<String>,
    /// `api`, `erp:<update id>`, `on_enter`, `timeout` or `condition`.
    pub source: Option<String>,
    /// The items that moved, in the order they moved.
    pub moved: Vec<Move>,
    /// The change as the feed holds it.
    pub payload: Json<Value>,
    pub at: DateTime<Utc>,
}

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The changes of one order (by `id` or `reference`) in version order: those committed
    /// after subscribing, or, with `afterVersion`, every change after that version (so a
    /// client that reconnects misses nothing).
    #[graphql(guard = "SHOP")]
    async fn order_changed(
        &self,
        ctx: &Context<'_>,
        id: Option<i64>,
        reference: Option<String>,
        after_version: Option<i64>,
    ) -> Result<impl Stream<Item = OrderChange> + use<>> {
        let state = ctx.data::<State>()?;
        let target = match (id, reference) {
            (Some(id), None) => Target::Id(OrderId(id)),
            (None, Some(r)) => {
                Target::Reference(OrderReference::parse(r).map_err(|e| invalid(e.0, "reference"))?)
            }
            _ => return Err(invalid("give id or reference, not both".into(), "id")),
        };
        let service = state.service.clone();
        // Subscribed before the read: a commit between the two wakes the first poll.
        let wake = service.watch_changes();
        let order = service.get(&target).await.gql()?;
        let feed = Feed {
            service,
            wake,
            order_id: order.id,
            reference: order.reference,
            seen: after_version.unwrap_or(order.version),
            ready: VecDeque::new(),
        };
        Ok(futures_util::stream::unfold(feed, |mut feed| async move {
            let change = feed.next().await;
            Some((change, feed))
        }))
    }
}

/// One subscription's position in its order's changes.
struct Feed {
    service: OrderService,
    wake: watch::Receiver<u64>,
    order_id: i64,
    reference: String,
    /// The last version delivered.
    seen: i64,
    ready: VecDeque<FeedRow>,
}

impl Feed {
    /// The next change, waiting for it as long as it takes.
    async fn next(&mut self) -> OrderChange {
        loop {
            if let Some(row) = self.ready.pop_front() {
                self.seen = row.version;
                return self.change(row);
            }
            // Marked seen before reading, so a commit during the read wakes the next wait.
            self.wake.borrow_and_update();
            match self
                .service
                .store()
                .order_changes(self.order_id, self.seen, PAGE)
                .await
            {
                Ok(rows) if !rows.is_empty() => {
                    self.ready.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, order = self.order_id, "reading the change feed failed")
                }
            }
            let woken = tokio::time::timeout(FALLBACK_POLL, self.wake.changed()).await;
            if let Ok(Err(_)) = woken {
                // No more wake-ups (the service is gone): the slow poll alone.
                tokio::time::sleep(FALLBACK_POLL).await;
            }
        }
    }

    fn change(&self, row: FeedRow) -> OrderChange {
        let payload = row.payload.ok().cloned().unwrap_or(Value::Null);
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
        let moved = payload
            .get("moved")
            .and_then(Value::as_array)
            .map(|moves| {
                moves
                    .iter()
                    .filter_map(|m| {
                        Some(Move {
                            item: m.get("item")?.as_i64()?,
                            from: m.get("from")?.as_str()?.to_owned(),
                            to: m.get("to")?.as_str()?.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        OrderChange {
            order_id: row.order_id,
            reference: self.reference.clone(),
            version: row.version,
            kind: row.kind,
            event: text("event"),
            source: text("source"),
            moved,
            payload: Json(payload),
            at: row.at,
        }
    }
}
