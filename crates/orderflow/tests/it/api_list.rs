//! The list view: eventually consistent, filtered, paged with a stable cursor.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start};

backend_tests!(
    list_eventually_reflects_writes,
    list_pages_with_cursor,
    list_values_are_distinct_and_sorted_by_bytes
);

const WITHIN: Duration = Duration::from_secs(10);

async fn ids(s: &TestServer, query: &str) -> Vec<i64> {
    let (status, page) = s.get(&format!("/v1/orders?{query}"), &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect()
}

async fn list_eventually_reflects_writes(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("DE--1", &[("SKU-A", 1)]).await;
    let id = order["id"].as_i64().unwrap();
    eventually(WITHIN, "the list contains the new order", || async {
        ids(&s, "").await.contains(&id).then_some(())
    })
    .await;
    assert_eq!(
        ids(&s, "state=waiting&sku=SKU-A&process=Test01").await,
        vec![id]
    );
    assert!(ids(&s, "sku=OTHER").await.is_empty());
    assert!(ids(&s, "state=paid").await.is_empty());

    let (status, _) = s
        .post(
            &format!("/v1/orders/{id}/events"),
            &s.shop,
            json!({"event": "pay"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually(WITHIN, "the list shows the state change", || async {
        (ids(&s, "state=paid").await == vec![id]).then_some(())
    })
    .await;
    assert!(ids(&s, "state=waiting").await.is_empty());
    let (_, page) = s.get("/v1/orders", &s.shop).await;
    assert_eq!(page["orders"][0]["version"], 2);
    assert_eq!(page["orders"][0]["states"], json!(["paid"]));

    let future = "updated_after=2999-01-01T00:00:00Z";
    assert!(ids(&s, future).await.is_empty());
    let (_, metrics) = s.get("/metrics", "").await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("orderflow_projection_lag_seconds"),
        "{metrics}"
    );
    s.stop().await;
}

async fn list_pages_with_cursor(b: Backend) {
    let Some(s) = start(b).await else { return };
    let mut created = Vec::new();
    for i in 0..5 {
        let o = s.create_order(&format!("DE--{i}"), &[("SKU-P", 1)]).await;
        created.push(o["id"].as_i64().unwrap());
    }
    let last = *created.last().unwrap();
    eventually(WITHIN, "all orders projected", || async {
        ids(&s, "limit=500").await.contains(&last).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    let mut query = "limit=2&sku=SKU-P".to_owned();
    loop {
        let (status, page) = s.get(&format!("/v1/orders?{query}"), &s.shop).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_i64().unwrap()),
        );
        // A write between pages must not shift the next page.
        s.create_order(&format!("DE--x{}", seen.len()), &[("SKU-Q", 1)])
            .await;
        match &page["next_cursor"] {
            Value::String(c) => query = format!("limit=2&sku=SKU-P&cursor={c}"),
            _ => break,
        }
    }
    assert_eq!(seen, created);

    let (status, err) = s.get("/v1/orders?cursor=garbage", &s.shop).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["path"], "cursor");
    let (status, _) = s.get("/v1/orders?limit=0", &s.shop).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    s.stop().await;
}

/// An order's states and SKUs in its list row are each value once, sorted by bytes (upper
/// case before lower, whatever the database's collation), and each one filters.
async fn list_values_are_distinct_and_sorted_by_bytes(b: Backend) {
    let Some(s) = start(b).await else { return };
    let items = [
        ("sku-b", 1),
        ("SKU-C", 2),
        ("sku-a", 1),
        ("sku-a", 3),
        ("Ä-1", 1),
    ];
    let id = s.create_order("DE--sorted", &items).await["id"]
        .as_i64()
        .unwrap();
    let other = s.create_order("DE--other", &[("sku-z", 1)]).await["id"]
        .as_i64()
        .unwrap();
    eventually(WITHIN, "both orders projected", || async {
        let listed = ids(&s, "").await;
        (listed.contains(&id) && listed.contains(&other)).then_some(())
    })
    .await;
    let (_, page) = s.get("/v1/orders?sku=sku-a", &s.shop).await;
    let row = &page["orders"][0];
    assert_eq!(row["id"], id, "{page}");
    assert_eq!(row["skus"], json!(["SKU-C", "sku-a", "sku-b", "Ä-1"]));
    assert_eq!(row["states"], json!(["waiting"]));
    for sku in ["SKU-C", "sku-b", "%C3%84-1"] {
        assert_eq!(ids(&s, &format!("sku={sku}")).await, vec![id], "{sku}");
    }
    assert_eq!(ids(&s, "sku=sku-z").await, vec![other]);
    assert_eq!(ids(&s, "state=waiting").await, vec![id, other]);
    s.stop().await;
}
