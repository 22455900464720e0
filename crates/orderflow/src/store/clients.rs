//! API clients: name, role, the SHA-256 of their token, and an optional signing secret.

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreError, Tx, is_unique_violation, on_reader, on_tx};
use crate::domain::types::Role;

/// A client as the authenticator needs it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ClientRow {
    pub name: String,
    pub role: Role,
    /// Standard Webhooks secret (`whsec_...`) for ERP request signatures; never logged.
    pub signing_secret: Option<String>,
}

/// The columns of a client row, bound as `$1`..`$5` in that order.
struct ClientWrite<'a> {
    name: &'a str,
    role: Role,
    token_hash: &'a str,
    signing_secret: Option<&'a str>,
    at: DateTime<Utc>,
}

impl ClientWrite<'_> {
    async fn execute(&self, tx: &mut Tx, sql: &'static str) -> Result<u64, sqlx::Error> {
        on_tx!(tx, |c| {
            sqlx::query(sql)
                .bind(self.name)
                .bind(self.role)
                .bind(self.token_hash)
                .bind(self.signing_secret)
                .bind(self.at)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })
    }
}

impl Store {
    /// Stores a new client; a used name is [`StoreError::ClientNameTaken`].
    pub async fn insert_client(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        signing_secret: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO clients (name, role, token_hash, signing_secret, \
             created_at) VALUES ($1, $2, $3, $4, $5)";
        let mut tx = self.begin().await?;
        let row = ClientWrite {
            name,
            role,
            token_hash,
            signing_secret,
            at,
        };
        match row.execute(&mut tx, SQL).await {
            Ok(_) => tx.commit().await,
            Err(e) if is_unique_violation(&e) => Err(StoreError::ClientNameTaken(name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a client, or gives the existing client of that name and `role` a new token
    /// hash and signing secret (the old token stops working). Returns true when the client
    /// existed; an existing client with another role is [`StoreError::ClientRoleDiffers`].
    pub async fn reissue_client(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        signing_secret: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        const EXISTING: &str = "SELECT role FROM clients WHERE name = $1";
        const SQL: &str = "INSERT INTO clients (name, role, token_hash, signing_secret, \
             created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE \
             SET token_hash = excluded.token_hash, signing_secret = excluded.signing_secret \
             WHERE clients.role = excluded.role";
        let mut tx = self.begin().await?;
        let existing: Option<Role> = on_tx!(&mut tx, |c| {
            sqlx::query_scalar(EXISTING)
                .bind(name)
                .fetch_optional(c)
                .await
        })?;
        if let Some(had) = existing.filter(|had| *had != role) {
            return Err(StoreError::ClientRoleDiffers {
                name: name.to_owned(),
                role: had.to_string(),
            });
        }
        let row = ClientWrite {
            name,
            role,
            token_hash,
            signing_secret,
            at,
        };
        let written = row.execute(&mut tx, SQL).await?;
        if written != 1 {
            // The role changed between the read and the write.
            return Err(StoreError::ClientRoleDiffers {
                name: name.to_owned(),
                role: "another role".to_owned(),
            });
        }
        tx.commit().await?;
        Ok(existing.is_some())
    }

    /// The client whose token hashes to `token_hash`.
    pub async fn client_by_token_hash(&self, token_hash: &str) -> Result<Option<ClientRow>> {
        const SQL: &str = "SELECT name, role, signing_secret FROM clients WHERE token_hash = $1";
        Ok(on_reader!(self, |p| {
            sqlx::query_as(SQL).bind(token_hash).fetch_optional(p).await
        })?)
    }
}
