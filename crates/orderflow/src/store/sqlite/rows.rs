//! A batch's rows in one: the worker's reads of a whole batch (its updates, their orders,
//! their items) come back from SQLite as one JSON array (`json_group_array`) and are
//! decoded with serde.
//!
//! sqlx runs a SQLite connection on a thread of its own and sends each row back through a
//! channel: a batch's few hundred rows cost the worker's thread as many wake-ups (in the
//! drain it spent most of its time being woken). One row costs one.
//!
//! Only values as this store writes them take this path: JSON text that parses, times in
//! RFC 3339, integers. Anything else (a BLOB, a time in another format, JSON that does not
//! parse) fails the whole read, and the caller reads the same rows one by one as before,
//! where such a value is reported with its row.

use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use sqlx::query::QueryScalar;
use sqlx::sqlite::SqliteArguments;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Sqlite};

use crate::store::json::StoredJson;
use crate::store::{Conn, Tx};

/// `inner` (a `SELECT` of `columns`) as one row holding one JSON array of objects, one per
/// row, named by column, in `order`.
pub(crate) fn as_one_row(columns: &str, inner: &str, order: &str) -> String {
    let fields: Vec<String> = columns
        .split(',')
        .map(|c| {
            let c = c.trim();
            format!("'{c}', {c}")
        })
        .collect();
    format!(
        "SELECT json_group_array(json_object({}) ORDER BY {order}) FROM ({inner})",
        fields.join(", ")
    )
}

/// The rows of an [`as_one_row`] read.
pub(crate) fn decode<T: DeserializeOwned>(text: &str) -> serde_json::Result<Vec<T>> {
    serde_json::from_str(text)
}

/// The one-row read's statement with its arguments bound.
pub(crate) type OneRow<'q> = QueryScalar<'q, Sqlite, String, SqliteArguments>;

impl Tx {
    /// SQLite: the rows of `sql` (a `SELECT` of `columns`) read as one row in `order`;
    /// `bind` makes the statement from its text and binds `sql`'s arguments. `None` on
    /// PostgreSQL, or when the read or a value failed: the caller reads row by row.
    pub(crate) async fn in_one_row<'q, T: DeserializeOwned>(
        &mut self,
        columns: &str,
        sql: &str,
        order: &str,
        bind: impl FnOnce(AssertSqlSafe<String>) -> OneRow<'q>,
    ) -> Option<Vec<T>> {
        let Conn::Sqlite(c) = &mut self.conn else {
            return None;
        };
        let text = bind(AssertSqlSafe(as_one_row(columns, sql, order)))
            .fetch_one(&mut **c)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "a batch read goes row by row"))
            .ok()?;
        decode(&text)
            .inspect_err(|e| tracing::debug!(error = %e, "a batch read goes row by row"))
            .ok()
    }
}

/// A time as sqlx writes it on SQLite (RFC 3339).
fn rfc3339<E: serde::de::Error>(s: &str) -> Result<DateTime<Utc>, E> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(E::custom)
}

/// JSON stored as text.
fn parse<T: DeserializeOwned, E: serde::de::Error>(s: &str) -> Result<T, E> {
    serde_json::from_str(s).map_err(E::custom)
}

pub(crate) fn time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    rfc3339(&String::deserialize(d)?)
}

pub(crate) fn time_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| rfc3339(&s))
        .transpose()
}

/// A boolean stored as an integer.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match i64::deserialize(d)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(D::Error::custom(format!("{n} is not a boolean"))),
    }
}

pub(crate) fn json<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Json<T>, D::Error> {
    parse(&String::deserialize(d)?).map(Json)
}

/// JSON stored as text that parses (one that does not is for the row-by-row read, which
/// keeps its error with its row).
pub(crate) fn stored<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<StoredJson<T>, D::Error> {
    parse(&String::deserialize(d)?).map(StoredJson::parsed)
}

pub(crate) fn stored_opt<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<StoredJson<T>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse(&s).map(StoredJson::parsed))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::orders::ItemRow;

    fn item(reserved: &str, entered: &str, attributes: &str) -> serde_json::Result<Vec<ItemRow>> {
        let text = format!(
            r#"[{{"id": 1, "order_id": 2, "sku": "A\"1", "quantity": 3, "unit_price": null,
                "state": "new", "reserved": {reserved}, "state_entered_at": {entered},
                "attributes": {attributes}}}]"#
        );
        decode(&text)
    }

    #[test]
    fn rows_decode_as_the_store_writes_them() {
        let rows = item(
            "1",
            r#""2026-11-30T15:30:06.589669+00:00""#,
            r#""{\"a\": \"b\\\"c\"}""#,
        )
        .unwrap();
        let row = &rows[0];
        assert_eq!((row.id, row.order_id, row.quantity), (1, 2, 3));
        assert_eq!(row.sku, "A\"1");
        assert!(row.reserved);
        assert_eq!(
            row.state_entered_at.timestamp_micros(),
            1_796_052_606_589_669
        );
        assert_eq!(row.attributes.0["a"], "b\"c");
    }

    #[test]
    fn anything_else_is_left_to_the_row_by_row_read() {
        let at = r#""2026-11-30T15:30:06+00:00""#;
        assert!(item("2", at, r#""{}""#).is_err(), "not a boolean");
        assert!(
            item("0", r#""2026-11-30 15:30:06""#, r#""{}""#).is_err(),
            "not RFC 3339"
        );
        assert!(item("0", "1764516606", r#""{}""#).is_err(), "a number");
        assert!(item("0", at, r#""{""#).is_err(), "JSON that does not parse");
        assert!(item("0", at, "{}").is_err(), "not text");
        assert!(item("0", at, r#""{}""#).is_ok());
    }

    #[test]
    fn one_row_names_every_column_and_keeps_the_order() {
        let sql = as_one_row(
            "id, order_id",
            "SELECT id, order_id FROM items",
            "order_id, id",
        );
        assert_eq!(
            sql,
            "SELECT json_group_array(json_object('id', id, 'order_id', order_id) \
             ORDER BY order_id, id) FROM (SELECT id, order_id FROM items)"
        );
    }
}
