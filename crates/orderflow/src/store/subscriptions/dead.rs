//! `update.dead` deliveries: an ERP update that ends `dead` has no change-feed row (its
//! order may not even exist), so its deliveries are written in the transaction that sets it
//! `dead`, one per subscription that takes the type, and a crash cannot lose them. They are
//! written for disabled subscriptions too, where they wait as order events do until the
//! subscription is enabled again; a subscription created later does not get earlier
//! deaths.
//!
//! Lanes go by delivery id. A death of a known order whose earlier changes the subscription
//! has not materialised yet (its cursor is before them) would overtake their events, so it
//! is held (`held_deliveries`) until the materialising transaction that passes the order's
//! last change before the death, which moves it into `deliveries` after their events.
//!
//! A replay queues copies of the ones a subscription was given (same id, same bytes),
//! since the update itself may have been retried and changed since.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::{NewDelivery, SUBSCRIPTION_COLUMNS, SubscriptionRow, insert_delivery};
use crate::store::json::StoredJson;
use crate::store::{Result, Store, Tx, on_reader, on_tx};
use crate::subscriptions::event::{self, EventType};

/// A dead update as its event describes it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeadUpdate {
    pub id: String,
    pub client: String,
    pub order_reference: String,
    pub event: Option<String>,
    /// Attempts counted, the last one included (never the same for two deaths of one
    /// update: an operator's retry keeps the count).
    pub attempts: i32,
    /// Every attempt's error; `None` when the row could only be read in part.
    pub errors: Option<StoredJson<Vec<Value>>>,
    pub received_at: Option<DateTime<Utc>>,
    /// When it was set dead.
    pub processed_at: Option<DateTime<Utc>>,
    /// The order of that reference; `None` when there is no such order.
    pub order_id: Option<i64>,
}

const DEAD_UPDATE: &str = "SELECT i.id, i.client, i.order_reference, i.event, i.attempts, \
     i.errors, i.received_at, i.processed_at, o.id AS order_id \
     FROM inbox i LEFT JOIN orders o ON o.reference = i.order_reference \
     WHERE i.seq = $1 AND i.status = 'dead'";

/// The columns a row that cannot be read whole (set dead for that) still gives.
const DEAD_UPDATE_IN_PART: &str = "SELECT i.id, i.client, i.order_reference, i.attempts, \
     o.id AS order_id FROM inbox i LEFT JOIN orders o ON o.reference = i.order_reference \
     WHERE i.seq = $1 AND i.status = 'dead'";

/// What [`DEAD_UPDATE_IN_PART`] reads: id, client, order reference, attempts, order.
type InPart = (String, String, String, i32, Option<i64>);

/// The first delivery of each `update.dead` event subscription `$1` was given since `$2`.
const FIRST_DEAD_SINCE: &str = "FROM deliveries d WHERE d.subscription_id = $1 \
     AND d.event_type = 'update.dead' AND d.created_at >= $2 \
     AND d.id = (SELECT MIN(e.id) FROM deliveries e \
         WHERE e.subscription_id = d.subscription_id AND e.event_id = d.event_id)";

impl Tx {
    /// Writes the `update.dead` deliveries of the updates `seqs`, which this transaction
    /// has just set `dead`, due at `now`. Returns how many were written.
    pub(crate) async fn queue_dead_updates(
        &mut self,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Result<usize> {
        if seqs.is_empty() {
            return Ok(0);
        }
        // Only the subscriptions that take the type are read (and locked on PostgreSQL);
        // `event::takes` decides, the condition narrows the locks.
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions \
             WHERE events = '' OR ',' || events || ',' LIKE $1 ORDER BY id{}",
            self.dialect().subscription_key_share
        );
        let kind = EventType::UpdateDead.as_str();
        let pattern = format!("%,{kind},%");
        let subs: Vec<SubscriptionRow> = on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(&pattern)
            .fetch_all(c)
            .await)?;
        let subs: Vec<SubscriptionRow> =
            subs.into_iter().filter(|s| event::takes(s, kind)).collect();
        if subs.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        for &seq in seqs {
            let Some(dead) = self.dead_update(seq).await? else {
                continue;
            };
            let new = event::dead_delivery(&dead, now);
            for sub in &subs {
                match dead.order_id {
                    Some(order) => match self.feed_pending_of_order(sub.id, order).await? {
                        Some(after) => self.hold_delivery(sub.id, after, order, &new, now).await?,
                        None => insert_delivery(self, sub.id, &new, now).await?,
                    },
                    None => insert_delivery(self, sub.id, &new, now).await?,
                }
                written += 1;
            }
        }
        Ok(written)
    }

    /// The feed position `(tx, seq)` of the last change of `order` that subscription `sub`
    /// has yet to materialise; `None` when it has them all.
    async fn feed_pending_of_order(&mut self, sub: i64, order: i64) -> Result<Option<(i64, i64)>> {
        let sql = self.dialect().feed_pending_of_order;
        Ok(on_tx!(self, |c| sqlx::query_as(sql)
            .bind(sub)
            .bind(order)
            .fetch_optional(c)
            .await)?)
    }

    async fn hold_delivery(
        &mut self,
        sub: i64,
        (after_tx, after_seq): (i64, i64),
        order: i64,
        new: &NewDelivery,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_tx!(self, |c| sqlx::query(
            "INSERT INTO held_deliveries (subscription_id, after_tx, after_seq, event_id, \
             event_type, order_id, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(sub)
        .bind(after_tx)
        .bind(after_seq)
        .bind(&new.event_id)
        .bind(&new.event_type)
        .bind(order)
        .bind(&new.body)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Moves the held deliveries of subscription `sub` whose order's changes its cursor has
    /// now passed (at `(cursor_tx, cursor_seq)`) into `deliveries`, due at `now`, in the
    /// order they were held; returns how many. Called by the transaction that moves the
    /// cursor, after it wrote the deliveries of the changes it read.
    pub(super) async fn release_held(
        &mut self,
        sub: i64,
        (cursor_tx, cursor_seq): (i64, i64),
        now: DateTime<Utc>,
    ) -> Result<usize> {
        const PASSED: &str = "subscription_id = $1 AND (after_tx, after_seq) <= ($2, $3)";
        let moved = on_tx!(self, |c| sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO deliveries (subscription_id, event_id, event_type, order_id, version, \
             body, status, attempts, claims, due_at, created_at) \
             SELECT subscription_id, event_id, event_type, order_id, CAST(NULL AS BIGINT), \
             body, 'pending', 0, 0, $4, created_at FROM held_deliveries WHERE {PASSED} \
             ORDER BY id"
        )))
        .bind(sub)
        .bind(cursor_tx)
        .bind(cursor_seq)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        if moved > 0 {
            on_tx!(self, |c| sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM held_deliveries WHERE {PASSED}"
            )))
            .bind(sub)
            .bind(cursor_tx)
            .bind(cursor_seq)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        }
        Ok(moved as usize)
    }

    /// Update `seq` if it is dead; in part when a column cannot be read (the reason it
    /// may have been set dead).
    async fn dead_update(&mut self, seq: i64) -> Result<Option<DeadUpdate>> {
        let whole: Result<Option<DeadUpdate>, sqlx::Error> = on_tx!(self, |c| {
            sqlx::query_as(DEAD_UPDATE)
                .bind(seq)
                .fetch_optional(c)
                .await
        });
        let error = match whole {
            Ok(found) => return Ok(found),
            Err(e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_))) => e,
            Err(e) => return Err(e.into()),
        };
        let part: Result<Option<InPart>, sqlx::Error> = on_tx!(self, |c| {
            sqlx::query_as(DEAD_UPDATE_IN_PART)
                .bind(seq)
                .fetch_optional(c)
                .await
        });
        match part {
            Ok(found) => {
                Ok(found.map(
                    |(id, client, order_reference, attempts, order_id)| DeadUpdate {
                        id,
                        client,
                        order_reference,
                        event: None,
                        attempts,
                        errors: None,
                        received_at: None,
                        processed_at: None,
                        order_id,
                    },
                ))
            }
            Err(e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_))) => {
                tracing::warn!(seq, error = %e, first = %error,
                    "dead update cannot be read; no update.dead event for it");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Store {
    /// How many `update.dead` events subscription `id` was given since `since`.
    pub async fn replay_dead_count(&self, id: i64, since: DateTime<Utc>) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) {FIRST_DEAD_SINCE}");
        Ok(on_reader!(self, |p| sqlx::query_scalar(AssertSqlSafe(
            sql
        ))
        .bind(id)
        .bind(since)
        .fetch_one(p)
        .await)?)
    }

    /// Queues again, due at `now`, the `update.dead` events subscription `id` was given
    /// since `since` (their deaths), as copies of their first delivery: the same id and
    /// bytes. Returns how many.
    pub async fn replay_dead(
        &self,
        id: i64,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let sql = format!(
            "INSERT INTO deliveries (subscription_id, event_id, event_type, order_id, version, \
             body, status, attempts, claims, due_at, created_at) \
             SELECT d.subscription_id, d.event_id, d.event_type, d.order_id, d.version, d.body, \
             'pending', 0, 0, $3, $3 {FIRST_DEAD_SINCE} ORDER BY d.id"
        );
        let mut tx = self.begin().await?;
        let n = on_tx!(&mut tx, |c| sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(since)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(n)
    }
}
