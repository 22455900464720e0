//! Deliveries of subscriptions: claimed under a lease, at most the first pending one of
//! each subscription and order, finished by the claim that still holds them; listed,
//! retried and counted for the operators.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{AttemptRow, DELIVERY_COLUMNS, DeliveryRow};
use crate::store::{List, Result, Store, Tx, on_reader, on_tx, per_backend};

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
    /// Claims up to `limit` due deliveries of enabled subscriptions until `lease_until`:
    /// each the first pending delivery of its subscription and order.
    pub async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>> {
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
        let mut tx = self.begin().await?;
        let rows = claim_in(&mut tx, now, limit, lease_until).await?;
        if !rows.is_empty() {
            tx.commit().await?;
        }
        Ok(rows)
    }

    /// Records delivered attempts and claims up to `limit` due deliveries, in one
    /// transaction (one commit per pass of the delivery loop, not two): an order whose
    /// delivery is recorded here has its next event claimed in the same transaction.
    pub async fn record_and_claim(
        &self,
        done: &[(ClaimedDelivery, AttemptRecord)],
        now: DateTime<Utc>,
        limit: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<(Vec<Recorded>, Vec<ClaimedDelivery>)> {
        let mut tx = self.begin().await?;
        let recorded = record_in(&mut tx, done).await?;
        let claimed = if limit > 0 {
            claim_in(&mut tx, now, limit, lease_until).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok((recorded, claimed))
    }

    /// Records a failed attempt of the claim `claimed` (delivered ones are recorded
    /// together, by [`Store::record_and_claim`]). `next_due`: when it is tried again
    /// (`None`: the delivery is dead). The failure counts towards the subscription's failure
    /// run; `disable` decides from the run (failures, since) whether it is disabled now, and
    /// names why. Returns what was recorded and whether the subscription was disabled.
    pub async fn record_failure(
        &self,
        claimed: &ClaimedDelivery,
        attempt: &AttemptRecord,
        next_due: Option<DateTime<Utc>>,
        disable: impl Fn(i64, DateTime<Utc>) -> Option<String>,
    ) -> Result<(Recorded, bool)> {
        let mut tx = self.begin().await?;
        insert_attempt(&mut tx, claimed, attempt).await?;
        let (status, due, recorded) = match next_due {
            Some(due) => ("pending", due, Recorded::Retry),
            None => ("dead", attempt.at, Recorded::Dead),
        };
        let n = finish(&mut tx, claimed, status, due, attempt.at).await?;
        if n == 0 {
            tx.commit().await?;
            return Ok((Recorded::LeaseLost, false));
        }
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
        let mut disabled = false;
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

async fn insert_attempt(
    tx: &mut Tx,
    claimed: &ClaimedDelivery,
    attempt: &AttemptRecord,
) -> Result<()> {
    on_tx!(tx, |c| {
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
    Ok(())
}

/// Sets a claimed delivery's outcome if the claim still holds it; returns the rows changed
/// (0: another claim holds it now).
async fn finish(
    tx: &mut Tx,
    claimed: &ClaimedDelivery,
    status: &str,
    due: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<u64> {
    let done = (status != "pending").then_some(at);
    Ok(on_tx!(tx, |c| {
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
    })?)
}

/// Claims, in `tx`, up to `limit` due deliveries until `lease_until` (see
/// [`Store::claim_deliveries`]).
async fn claim_in(
    tx: &mut Tx,
    now: DateTime<Utc>,
    limit: i64,
    lease_until: DateTime<Utc>,
) -> Result<Vec<ClaimedDelivery>> {
    let d = tx.dialect();
    let sql = format!(
        "SELECT d.id, d.subscription_id, d.event_id, d.body, d.attempts, \
         d.claims + 1 AS claims, s.url, s.secret FROM {CLAIMABLE} \
         ORDER BY d.due_at, d.id LIMIT $2{}",
        d.delivery_claim_lock
    );
    let rows: Vec<ClaimedDelivery> = on_tx!(tx, |c| {
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
    on_tx!(tx, |c| {
        sqlx::query(AssertSqlSafe(update))
            .bind(lease_until)
            .bind(List(&ids))
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(rows)
}

/// Records delivered attempts in `tx`: a few multi-row statements, whatever their number.
/// Returns, in order, [`Recorded::Delivered`] or [`Recorded::LeaseLost`].
async fn record_in(
    tx: &mut Tx,
    done: &[(ClaimedDelivery, AttemptRecord)],
) -> Result<Vec<Recorded>> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let set: std::collections::HashSet<(i64, i64)> = per_backend!(tx, record_delivered(done))?
        .into_iter()
        .collect();
    Ok(done
        .iter()
        .map(|(d, _)| {
            if set.contains(&(d.id, d.claims)) {
                Recorded::Delivered
            } else {
                Recorded::LeaseLost
            }
        })
        .collect())
}
