//! Subscriptions and their deliveries: each subscription reads the change feed after its
//! own cursor (as the list projector does, in commit order per backend) and materialises
//! one delivery per matching change in the same transaction that moves the cursor, so a
//! change is materialised exactly once. Deliveries are claimed under a lease, at most the
//! first pending one of each subscription and order, and finished by the claim that still
//! holds them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;

mod dead;
mod deliveries;

pub use dead::DeadUpdate;
pub use deliveries::{AttemptRecord, Backlog, ClaimedDelivery, Recorded};

use super::json::StoredJson;
use super::{Result, Store, on_reader, on_tx};

/// A subscription as stored. `Debug` leaves the secret out.
#[derive(Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub id: i64,
    pub url: String,
    /// The `whsec_` signing secret.
    pub secret: String,
    /// Event types, comma-separated; empty means every type.
    pub events: String,
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Failed attempts in a row.
    pub failures: i64,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for SubscriptionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"***")
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, secret, events, enabled, disabled_at, \
     disabled_reason, failures, failing_since, created_at";

/// A change-feed row with its order's reference, as a subscription reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FeedEvent {
    pub seq: i64,
    pub tx: i64,
    pub order_id: i64,
    pub version: i64,
    pub kind: String,
    pub payload: StoredJson<Value>,
    pub at: DateTime<Utc>,
    pub reference: String,
}

/// A delivery to write: one event for one subscription.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub event_id: String,
    pub event_type: String,
    /// The order whose lane it waits in; `None` (an `update.dead` of an order that does
    /// not exist): a lane of its own.
    pub order_id: Option<i64>,
    /// The order's version after the change; `None` for `update.dead`.
    pub version: Option<i64>,
    pub body: String,
}

/// A delivery as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub subscription_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub order_id: Option<i64>,
    pub version: Option<i64>,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub due_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "id, subscription_id, event_id, event_type, order_id, version, \
     body, status, attempts, due_at, lease_until, created_at, done_at";

/// One HTTP attempt of a delivery.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: i64,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

impl Store {
    /// Stores a subscription that starts at the feed's current end.
    pub async fn insert_subscription(
        &self,
        url: &str,
        secret: &str,
        events: &str,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionRow> {
        let d = self.dialect();
        let mut tx = self.begin().await?;
        let (cursor_tx, cursor_seq, snapshot): (i64, i64, Option<String>) =
            on_tx!(&mut tx, |c| sqlx::query_as(d.feed_end).fetch_one(c).await)?;
        let sql = format!(
            "INSERT INTO subscriptions (url, secret, events, enabled, failures, cursor_tx, \
             cursor_seq, start_snapshot, created_at) VALUES ($1, $2, $3, TRUE, 0, $4, $5, $7, $6) \
             RETURNING {SUBSCRIPTION_COLUMNS}"
        );
        let row: SubscriptionRow = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(url)
                .bind(secret)
                .bind(events)
                .bind(cursor_tx)
                .bind(cursor_seq)
                .bind(now)
                .bind(snapshot.as_deref())
                .fetch_one(c)
                .await
        })?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY id");
        Ok(on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(p)
            .await)?)
    }

    pub async fn subscription(&self, id: i64) -> Result<Option<SubscriptionRow>> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1");
        Ok(on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// Enables (clearing the failure run) or disables a subscription; `None` when there is
    /// none with that id.
    pub async fn set_subscription_enabled(
        &self,
        id: i64,
        enabled: bool,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<SubscriptionRow>> {
        let sql = format!(
            "UPDATE subscriptions SET enabled = $2, \
             disabled_at = CASE WHEN $2 THEN NULL ELSE $3 END, \
             disabled_reason = CASE WHEN $2 THEN NULL ELSE $4 END, \
             failures = 0, failing_since = NULL WHERE id = $1 RETURNING {SUBSCRIPTION_COLUMNS}"
        );
        let mut tx = self.begin().await?;
        let row: Option<SubscriptionRow> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(id)
                .bind(enabled)
                .bind(now)
                .bind(reason)
                .fetch_optional(c)
                .await
        })?;
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes a subscription with its deliveries (held ones too) and their attempts; false
    /// when there was none.
    pub async fn delete_subscription(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let mut gone = 0;
        for sql in [
            "DELETE FROM delivery_attempts WHERE delivery_id IN \
             (SELECT id FROM deliveries WHERE subscription_id = $1)",
            "DELETE FROM deliveries WHERE subscription_id = $1",
            "DELETE FROM held_deliveries WHERE subscription_id = $1",
            "DELETE FROM subscriptions WHERE id = $1",
        ] {
            gone = on_tx!(&mut tx, |c| sqlx::query(sql)
                .bind(id)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(gone > 0)
    }

    /// Materialises deliveries for every enabled subscription: up to `limit` feed rows
    /// after each one's cursor, turned into deliveries by `make` (`None`: the subscription
    /// does not take that change), due at `now`. Returns how many deliveries were written.
    /// Several processes may run it at once: a subscription another transaction holds is
    /// skipped (PostgreSQL), the writer is held (SQLite).
    pub async fn materialise(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        make: impl Fn(&SubscriptionRow, &FeedEvent) -> Option<NewDelivery>,
    ) -> Result<usize> {
        let ids: Vec<i64> = on_reader!(self, |p| sqlx::query_scalar(
            "SELECT id FROM subscriptions WHERE enabled ORDER BY id"
        )
        .fetch_all(p)
        .await)?;
        let mut written = 0;
        for id in ids {
            written += self.materialise_one(id, limit, now, &make).await?;
        }
        Ok(written)
    }

    async fn materialise_one(
        &self,
        id: i64,
        limit: i64,
        now: DateTime<Utc>,
        make: &impl Fn(&SubscriptionRow, &FeedEvent) -> Option<NewDelivery>,
    ) -> Result<usize> {
        let d = self.dialect();
        // A look on a reader first: most passes find nothing new, and SQLite's one writer
        // is not taken for them.
        let Some((cursor_tx, cursor_seq, snapshot)) = self.cursor(id).await? else {
            return Ok(0);
        };
        let peek: Vec<FeedEvent> = on_reader!(self, |p| sqlx::query_as(d.feed_rows_after)
            .bind(cursor_tx)
            .bind(cursor_seq)
            .bind(1_i64)
            .bind(snapshot.as_deref())
            .fetch_all(p)
            .await)?;
        if peek.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 AND enabled{}",
            d.subscription_lock
        );
        let sub: Option<SubscriptionRow> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(c)
                .await
        })?;
        let Some(sub) = sub else { return Ok(0) };
        // The cursor as held now (another process may have moved it since the look).
        let (cursor_tx, cursor_seq): (i64, i64) = on_tx!(&mut tx, |c| {
            sqlx::query_as("SELECT cursor_tx, cursor_seq FROM subscriptions WHERE id = $1")
                .bind(id)
                .fetch_one(c)
                .await
        })?;
        let rows: Vec<FeedEvent> = on_tx!(&mut tx, |c| {
            sqlx::query_as(d.feed_rows_after)
                .bind(cursor_tx)
                .bind(cursor_seq)
                .bind(limit)
                .bind(snapshot.as_deref())
                .fetch_all(c)
                .await
        })?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let (new_tx, new_seq) = (last.tx, last.seq);
        let mut written = 0;
        for row in &rows {
            if let Some(new) = make(&sub, row) {
                insert_delivery(&mut tx, id, &new, now).await?;
                written += 1;
            }
        }
        // Deaths of these orders held until their changes were queued go after them.
        written += tx.release_held(id, (new_tx, new_seq), now).await?;
        on_tx!(&mut tx, |c| {
            sqlx::query("UPDATE subscriptions SET cursor_tx = $2, cursor_seq = $3 WHERE id = $1")
                .bind(id)
                .bind(new_tx)
                .bind(new_seq)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(written)
    }

    /// How many feed rows a replay of `id` since `since` would read (every type).
    pub async fn replay_count(&self, id: i64, since: DateTime<Utc>) -> Result<i64> {
        let d = self.dialect();
        let Some((cursor_tx, cursor_seq, snapshot)) = self.cursor(id).await? else {
            return Ok(0);
        };
        let sql = format!("SELECT COUNT(*) FROM ({}) r", d.feed_rows_replay);
        Ok(on_reader!(self, |p| sqlx::query_scalar(AssertSqlSafe(
            sql
        ))
        .bind(since)
        .bind(cursor_tx)
        .bind(cursor_seq)
        .bind(0_i64)
        .bind(i64::MAX)
        .bind(snapshot.as_deref())
        .fetch_one(p)
        .await)?)
    }

    async fn cursor(&self, id: i64) -> Result<Option<(i64, i64, Option<String>)>> {
        Ok(on_reader!(self, |p| sqlx::query_as(
            "SELECT cursor_tx, cursor_seq, start_snapshot FROM subscriptions WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await)?)
    }

    /// One page of a replay: deliveries again for the changes committed since `since` that
    /// the subscription's cursor has passed, after feed `seq` `after`. Returns the rows
    /// read, the deliveries written and the last `seq` read (`None`: nothing left).
    pub async fn replay_page(
        &self,
        id: i64,
        since: DateTime<Utc>,
        after: i64,
        limit: i64,
        now: DateTime<Utc>,
        make: impl Fn(&SubscriptionRow, &FeedEvent) -> Option<NewDelivery>,
    ) -> Result<(usize, usize, Option<i64>)> {
        let d = self.dialect();
        let Some(sub) = self.subscription(id).await? else {
            return Ok((0, 0, None));
        };
        let Some((cursor_tx, cursor_seq, snapshot)) = self.cursor(id).await? else {
            return Ok((0, 0, None));
        };
        let mut tx = self.begin().await?;
        let rows: Vec<FeedEvent> = on_tx!(&mut tx, |c| {
            sqlx::query_as(d.feed_rows_replay)
                .bind(since)
                .bind(cursor_tx)
                .bind(cursor_seq)
                .bind(after)
                .bind(limit)
                .bind(snapshot.as_deref())
                .fetch_all(c)
                .await
        })?;
        let mut written = 0;
        for row in &rows {
            if let Some(new) = make(&sub, row) {
                insert_delivery(&mut tx, id, &new, now).await?;
                written += 1;
            }
        }
        tx.commit().await?;
        Ok((rows.len(), written, rows.last().map(|r| r.seq)))
    }
}

pub(super) async fn insert_delivery(
    tx: &mut super::Tx,
    subscription_id: i64,
    new: &NewDelivery,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
            "INSERT INTO deliveries (subscription_id, event_id, event_type, order_id, version, \
             body, status, attempts, claims, due_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, 0, $7, $7)",
        )
        .bind(subscription_id)
        .bind(&new.event_id)
        .bind(&new.event_type)
        .bind(new.order_id)
        .bind(new.version)
        .bind(&new.body)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}
