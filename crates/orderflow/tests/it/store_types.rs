//! Enums at the store boundary: a stored name this build does not know is corrupt data
//! (`StoreError::Corrupt`), never read as some default.

use orderflow::store::{Store, StoreError};
use sqlx::Connection;

/// Plants rows the schema's CHECK constraints would refuse (as an older or newer build, or
/// a hand edit, could leave), through a connection of its own.
async fn plant(url: &str, sql: &str) {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let sql = format!("PRAGMA ignore_check_constraints = ON; {sql}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_unknown_client_role_or_timer_kind_is_corrupt_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
    let store = Store::open(&url).await.unwrap();
    plant(
        &url,
        "INSERT INTO clients (name, role, token_hash, created_at) \
         VALUES ('old', 'root', 'h-old', '2026-01-01T00:00:00+00:00'); \
         INSERT INTO orders (reference, process, attributes, version, created_at, updated_at) \
         VALUES ('R-1', 'Test01', '{}', 1, '2026-01-01T00:00:00+00:00', \
         '2026-01-01T00:00:00+00:00'); \
         INSERT INTO items (order_id, sku, quantity, state, reserved, state_entered_at, \
         attributes) VALUES (1, 'SKU-1', 1, 'waiting', 0, '2026-01-01T00:00:00+00:00', '{}'); \
         INSERT INTO timers (order_id, item_id, state, kind, event, due_at) \
         VALUES (1, 1, 'waiting', 'alarm', NULL, '2026-01-01T00:00:00+00:00');",
    )
    .await;

    let client = store.client_by_token_hash("h-old").await;
    assert!(
        matches!(&client, Err(StoreError::Corrupt(m)) if m.contains("client role")),
        "{client:?}"
    );
    let mut tx = store.begin().await.unwrap();
    let timers = tx.due_timers_of_order(1, orderflow::store::now()).await;
    assert!(
        matches!(&timers, Err(StoreError::Corrupt(m)) if m.contains("timer kind")),
        "{timers:?}"
    );
    drop(tx);
    store.close().await;
}
