//! One order's changes from the change feed, in version order: what a subscriber to the
//! order reads after the version it saw last.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::StoredJson;
use super::{Result, Store, on_reader};

/// A committed change to one order, as the change feed holds it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FeedRow {
    pub order_id: i64,
    /// The order's version after the change.
    pub version: i64,
    pub kind: String,
    /// `{kind, event, source, moved: [{item, from, to}]}`.
    pub payload: StoredJson<Value>,
    pub at: DateTime<Utc>,
}

impl Store {
    /// Up to `limit` changes of the order after `after_version`, oldest first. The order's
    /// changes are written under its lock, so versions are committed in order.
    pub async fn order_changes(
        &self,
        order_id: i64,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<FeedRow>> {
        const SQL: &str = "SELECT order_id, version, kind, payload, at FROM change_feed \
             WHERE order_id = $1 AND version > $2 ORDER BY version LIMIT $3";
        Ok(on_reader!(self, |p| sqlx::query_as(SQL)
            .bind(order_id)
            .bind(after_version)
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }
}
