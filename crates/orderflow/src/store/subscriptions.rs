//! Subscriptions and their deliveries: each subscription reads the change feed after its
//! own cursor (as the list projector does, in commit order per backend) and materialises
//! one delivery per matching change in the same transaction that moves the cursor, so a
//! change is materialised exactly once. Deliveries are claimed under a lease, at most the
//! first pending one of each subscription and order, and finished by the claim that still
//! holds them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::json::StoredJson;
use super::{List, Result, Store, on_reader, on_tx};

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
    pub order_id: i64,
    pub version: i64,
    pub body: String,
}

/// A delivery as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub subscription_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub order_id: i64,
    pub version: i64,
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

/// A claimed delivery, with what sending it needs. `claims` identifies the claim.
#[derive(Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub subscription_id: i64,
    pub event_id: String,
    pub body: String,
    pub attempts: i64,
    pub claims: i64,
    pub url: String,
    pub secret: String,
}

/// What an attempt found, to record.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// What recording an attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Delivered,
    /// Failed; due again at the given time.
    Retry,
    Dead,
    /// Another claim holds the delivery now (the lease ran out): only the attempt was kept.
    LeaseLost,
}

/// Pending deliveries of one subscription and when the oldest of them was created.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Backlog {
    pub subscription_id: i64,
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Deliveries `d` (with their subscription `s`) that may be claimed at `$1`: pending, due,
/// not leased, of an enabled subscription, and the first pending one of their subscription
/// and order.
const CLAIMABLE: &str = "deliveries d JOIN subscriptions s ON s.id = d.subscription_id \
     WHERE d.status = 'pending' AND d.due_at <= $1 \
       AND (d.lease_until IS NULL OR d.lease_until <= $1) AND s.enabled \
       AND NOT EXISTS (SELECT 1 FROM deliveries e \
           WHERE e.subscription_id = d.subscription_id AND e.order_id = d.order_id \
             AND e.status = 'pending' AND e.id < d.id)";

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

    /// Deletes a subscription with its deliveries and their attempts; false when there was
    /// none.
    pub async fn delete_subscription(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let mut gone = 0;
        for sql in [
            "DELETE FROM delivery_attempts WHERE delivery_id IN \
             (SELECT id FROM deliveries WHERE subscription_id = $1)",
            "DELETE FROM deliveries WHERE subscription_id = $1",
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

    /// Claims up to `limit` due deliveries of enabled subscriptions until `lease_until`:
    /// each the first pending delivery of its subscription and order.
    pub async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>> {
        let d = self.dialect();
        // A look on a reader first: most passes find nothing due, and SQLite's one writer
        // is not taken for them.
        let due: Option<i64> = on_reader!(self, |p| sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT d.id FROM {CLAIMABLE} LIMIT 1"
        )))
        .bind(now)
        .fetch_optional(p)
        .await)?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT d.id, d.subscription_id, d.event_id, d.body, d.attempts, \
             d.claims + 1 AS claims, s.url, s.secret FROM {CLAIMABLE} \
             ORDER BY d.due_at, d.id LIMIT $2{}",
            d.delivery_claim_lock
        );
        let mut tx = self.begin().await?;
        let rows: Vec<ClaimedDelivery> = on_tx!(&mut tx, |c| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(now)
                .bind(limit)
                .fetch_all(c)
                .await
        })?;
        if rows.is_empty() {
            return Ok(rows);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let update = format!(
            "UPDATE deliveries SET claims = claims + 1, lease_until = $1 WHERE {}",
            d.in_list("id", 2)
        );
        on_tx!(&mut tx, |c| {
            sqlx::query(AssertSqlSafe(update))
                .bind(lease_until)
                .bind(List(&ids))
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Records an attempt of the claim `claimed`. `next_due`: when a failure is tried again
    /// (`None`: the delivery is dead). A failure counts towards the subscription's failure
    /// run; `disable` decides from the run (failures, since) whether it is disabled now, and
    /// names why. Returns what was recorded and whether the subscription was disabled.
    pub async fn record_attempt(
        &self,
        claimed: &ClaimedDelivery,
        attempt: &AttemptRecord,
        delivered: bool,
        next_due: Option<DateTime<Utc>>,
        disable: impl Fn(i64, DateTime<Utc>) -> Option<String>,
    ) -> Result<(Recorded, bool)> {
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO delivery_attempts (delivery_id, at, status_code, latency_ms, \
                 response_excerpt, error) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(claimed.id)
            .bind(attempt.at)
            .bind(attempt.status_code.map(i32::from))
            .bind(attempt.latency_ms)
            .bind(attempt.response_excerpt.as_deref())
            .bind(attempt.error.as_deref())
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let (status, due, recorded) = match (delivered, next_due) {
            (true, _) => ("delivered", attempt.at, Recorded::Delivered),
            (false, Some(due)) => ("pending", due, Recorded::Retry),
            (false, None) => ("dead", attempt.at, Recorded::Dead),
        };
        let done = (status != "pending").then_some(attempt.at);
        let n = on_tx!(&mut tx, |c| {
            sqlx::query(
                "UPDATE deliveries SET status = $3, attempts = attempts + 1, due_at = $4, \
                 lease_until = NULL, done_at = $5 WHERE id = $1 AND claims = $2 \
                 AND status = 'pending'",
            )
            .bind(claimed.id)
            .bind(claimed.claims)
            .bind(status)
            .bind(due)
            .bind(done)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        if n == 0 {
            tx.commit().await?;
            return Ok((Recorded::LeaseLost, false));
        }
        let mut disabled = false;
        if delivered {
            on_tx!(&mut tx, |c| {
                sqlx::query(
                    "UPDATE subscriptions SET failures = 0, failing_since = NULL \
                     WHERE id = $1 AND failures <> 0",
                )
                .bind(claimed.subscription_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
            })?;
        } else {
            let run: Option<(i64, DateTime<Utc>, bool)> = on_tx!(&mut tx, |c| {
                sqlx::query_as(
                    "UPDATE subscriptions SET failures = failures + 1, \
                     failing_since = COALESCE(failing_since, $2) WHERE id = $1 \
                     RETURNING failures, failing_since, enabled",
                )
                .bind(claimed.subscription_id)
                .bind(attempt.at)
                .fetch_optional(c)
                .await
            })?;
            if let Some((failures, since, true)) = run
                && let Some(reason) = disable(failures, since)
            {
                on_tx!(&mut tx, |c| {
                    sqlx::query(
                        "UPDATE subscriptions SET enabled = FALSE, disabled_at = $2, \
                         disabled_reason = $3 WHERE id = $1",
                    )
                    .bind(claimed.subscription_id)
                    .bind(attempt.at)
                    .bind(&reason)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
                })?;
                disabled = true;
            }
        }
        tx.commit().await?;
        Ok((recorded, disabled))
    }

    /// A subscription's deliveries, newest first, optionally of one status, before the
    /// delivery id `before` (keyset paging).
    pub async fn deliveries(
        &self,
        subscription_id: i64,
        status: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscription_id = $1 \
             AND ($2 IS NULL OR status = $2) AND id < $3 ORDER BY id DESC LIMIT $4"
        );
        Ok(on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(sql))
            .bind(subscription_id)
            .bind(status)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
        Ok(on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// The attempts of the given deliveries, oldest first.
    pub async fn delivery_attempts(&self, ids: &[i64]) -> Result<Vec<AttemptRow>> {
        let sql = format!(
            "SELECT id, delivery_id, at, status_code, latency_ms, response_excerpt, error \
             FROM delivery_attempts WHERE {} ORDER BY id",
            self.dialect().in_list("delivery_id", 1)
        );
        Ok(on_reader!(self, |p| sqlx::query_as(AssertSqlSafe(sql))
            .bind(List(ids))
            .fetch_all(p)
            .await)?)
    }

    /// Makes a delivery due now with a fresh schedule (its attempts are kept). `None` when
    /// there is no such delivery of that subscription.
    pub async fn retry_delivery(
        &self,
        subscription_id: i64,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryRow>> {
        let sql = format!(
            "UPDATE deliveries SET status = 'pending', attempts = 0, due_at = $3, \
             lease_until = NULL, done_at = NULL WHERE id = $1 AND subscription_id = $2 \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut tx = self.begin().await?;
        let row = on_tx!(&mut tx, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .bind(subscription_id)
            .bind(now)
            .fetch_optional(c)
            .await)?;
        tx.commit().await?;
        Ok(row)
    }

    /// Pending deliveries per subscription and the oldest one's creation time.
    pub async fn delivery_backlog(&self) -> Result<Vec<Backlog>> {
        Ok(on_reader!(self, |p| sqlx::query_as(
            "SELECT subscription_id, COUNT(*) AS pending, MIN(created_at) AS oldest \
             FROM deliveries WHERE status = 'pending' GROUP BY subscription_id"
        )
        .fetch_all(p)
        .await)?)
    }
}

async fn insert_delivery(
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
