//! Admin UI sessions, stored so that every `serve` process on one database accepts them:
//! the SHA-256 of the cookie's random id, the token hash of the client that logged in, and
//! the session's CSRF token.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{Result, Store, on_reader, on_tx};

/// A live session: the admin client it belongs to and its CSRF token.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub client: String,
    pub csrf_token: String,
}

/// A session to store.
#[derive(Clone, Copy, Debug)]
pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub token_hash: &'a str,
    pub csrf_token: &'a str,
    pub at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores a session, and drops the sessions that expired (they are refused anyway).
    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<()> {
        const SQL: &str = "INSERT INTO admin_sessions (id_hash, token_hash, csrf_token, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
        const EXPIRED: &str = "DELETE FROM admin_sessions WHERE expires_at <= $1";
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(EXPIRED).bind(s.at).execute(&mut *c).await?;
            sqlx::query(SQL)
                .bind(s.id_hash)
                .bind(s.token_hash)
                .bind(s.csrf_token)
                .bind(s.at)
                .bind(s.expires_at)
                .execute(c)
                .await
                .map(|_| ())
        })?;
        tx.commit().await
    }

    /// The session with id hash `id_hash` if it has not expired at `now` and its client
    /// still exists with the admin role and the same token.
    pub async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<SessionRow>> {
        const SQL: &str = "SELECT c.name AS client, s.csrf_token FROM admin_sessions s \
             JOIN clients c ON c.token_hash = s.token_hash \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND c.role = 'admin'";
        Ok(on_reader!(self, |p| sqlx::query_as(SQL)
            .bind(id_hash)
            .bind(now)
            .fetch_optional(p)
            .await)?)
    }

    /// Ends a session (logout). Nothing happens when it does not exist.
    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        const SQL: &str = "DELETE FROM admin_sessions WHERE id_hash = $1";
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| sqlx::query(SQL)
            .bind(id_hash)
            .execute(c)
            .await
            .map(|_| ()))?;
        tx.commit().await
    }

    /// Inbox updates that finished processing (`processed_at`) in each of the windows
    /// `[edges[i], edges[i + 1])`, one count per window, through the `processed_at` index.
    pub async fn settled_between(&self, edges: &[DateTime<Utc>]) -> Result<Vec<i64>> {
        let windows = edges.len().saturating_sub(1);
        if windows == 0 {
            return Ok(Vec::new());
        }
        let sums: Vec<String> = (1..=windows)
            .map(|i| {
                format!(
                    "COALESCE(SUM(CASE WHEN processed_at >= ${i} AND processed_at < ${} \
                     THEN 1 ELSE 0 END), 0)",
                    i + 1
                )
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM inbox WHERE processed_at >= $1 AND processed_at < ${}",
            sums.join(", "),
            windows + 1
        );
        let counts = on_reader!(self, |p| {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for e in edges {
                q = q.bind(*e);
            }
            let row = q.fetch_one(p).await?;
            (0..windows)
                .map(|i| sqlx::Row::try_get::<i64, _>(&row, i))
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(counts)
    }
}
