//! What a broker transport needs from the store: the key that signs its update ids, and
//! the reads of the transaction that applies updates coming from the broker (which of
//! them the database has already, which orders still have updates waiting).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::inbox::{COLUMNS, UpdateRow};
use super::{List, Result, Store, StoreError, Tx, on_tx};

impl Store {
    /// The secret named `name`, made (32 random bytes, hex) by the first process that asks
    /// for it; every process reading this store gets the same one.
    pub async fn transit_key(&self, name: &str) -> Result<String> {
        const INSERT: &str =
            "INSERT INTO transit_keys (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        const READ: &str = "SELECT secret FROM transit_keys WHERE name = $1";
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| sqlx::query(INSERT)
            .bind(name)
            .bind(&fresh)
            .execute(c)
            .await
            .map(|_| ()))?;
        let secret: Option<String> = on_tx!(&mut tx, |c| sqlx::query_scalar(READ)
            .bind(name)
            .fetch_optional(c)
            .await)?;
        tx.commit().await?;
        secret.ok_or_else(|| StoreError::Corrupt(format!("transit key {name} vanished")))
    }
}

impl Tx {
    /// Which of `ids` the inbox has (a redelivered message, or a repeat of an update).
    pub async fn existing_update_ids(&mut self, ids: &[String]) -> Result<HashSet<String>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT id FROM inbox WHERE {}",
            self.dialect().in_list("id", 1)
        );
        let found: Vec<String> = on_tx!(self, |c| sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(List(ids))
            .fetch_all(c)
            .await)?;
        Ok(found.into_iter().collect())
    }

    /// Which of the orders `references` have updates the inbox worker must apply before
    /// a newer one: `accepted`, `processing`, or `parked` and due at `now` (the claim
    /// rule of the database inbox; a parked update that is not due does not hold back
    /// later ones).
    pub async fn orders_with_waiting_updates(
        &mut self,
        references: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashSet<String>> {
        if references.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT DISTINCT order_reference FROM inbox WHERE {} \
             AND (status IN ('accepted', 'processing') \
                  OR (status = 'parked' AND next_attempt_at <= $2))",
            self.dialect().in_list("order_reference", 1)
        );
        let found: Vec<String> = on_tx!(self, |c| sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(List(references))
            .bind(now)
            .fetch_all(c)
            .await)?;
        Ok(found.into_iter().collect())
    }

    /// Inbox rows by `seq`, in no particular order (rows this transaction inserted).
    pub async fn updates_by_seq(&mut self, seqs: &[i64]) -> Result<Vec<UpdateRow>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM inbox WHERE {}",
            self.dialect().in_list("seq", 1)
        );
        Ok(on_tx!(self, |c| sqlx::query_as(AssertSqlSafe(sql))
            .bind(List(seqs))
            .fetch_all(c)
            .await)?)
    }
}
