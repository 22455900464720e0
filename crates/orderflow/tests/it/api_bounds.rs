//! Bounds on domain values: quantities, prices, item counts, idempotency keys and page
//! sizes are refused with 422 and the path past their limits, and accepted up to them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, start_with};

backend_tests!(order_bounds, update_bounds, page_limits);

/// Large enough for 1,001 items.
async fn server(b: Backend) -> Option<TestServer> {
    start_with(b, |c| c.max_body_bytes = 1 << 20).await
}

fn assert_invalid(status: StatusCode, body: &Value, path: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(body["error"]["path"], path, "{body}");
}

fn order(reference: &str, items: Value) -> Value {
    json!({"reference": reference, "process": "Test01", "currency": "EUR", "items": items})
}

async fn order_bounds(b: Backend) {
    let Some(s) = server(b).await else { return };
    let refused = [
        (json!([{"sku": "A", "quantity": 0}]), "$.items[0].quantity"),
        (
            json!([{"sku": "A", "quantity": 1_000_001}]),
            "$.items[0].quantity",
        ),
        (
            json!([{"sku": "A", "quantity": 1, "unit_price": -1}]),
            "$.items[0].unit_price",
        ),
        (
            json!([{"sku": "A", "quantity": 1, "unit_price": 1_000_000_000_001_i64}]),
            "$.items[0].unit_price",
        ),
        (json!([]), "$.items"),
        (
            json!(vec![json!({"sku": "A", "quantity": 1}); 1001]),
            "$.items",
        ),
    ];
    for (items, path) in refused {
        let (status, body) = s.post("/v1/orders", &s.shop, order("DE--1", items)).await;
        assert_invalid(status, &body, path);
    }
    // The limits themselves are accepted, stored and read back.
    let items = json!([{"sku": "A", "quantity": 1_000_000, "unit_price": 1_000_000_000_000_i64}]);
    let (status, created) = s.post("/v1/orders", &s.shop, order("DE--1", items)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, read) = s.get("/v1/orders/by-reference/DE--1", &s.shop).await;
    assert_eq!(read["items"][0]["quantity"], 1_000_000, "{read}");
    let (_, reserved) = s.get("/v1/reservations/A", &s.shop).await;
    assert_eq!(reserved["reserved_quantity"], 1_000_000, "{reserved}");
    let items = json!(vec![json!({"sku": "A", "quantity": 1}); 1000]);
    let (status, created) = s.post("/v1/orders", &s.shop, order("DE--2", items)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["items"].as_array().unwrap().len(), 1000);

    // A manual event selects at most 1,000 items.
    let id = created["id"].as_i64().unwrap();
    let ids: Vec<i64> = (0..1001).collect();
    let (status, body) = s
        .post(
            &format!("/v1/orders/{id}/events"),
            &s.admin,
            json!({"event": "pay", "items": ids}),
        )
        .await;
    assert_invalid(status, &body, "$.items");
    s.stop().await;
}

async fn update_bounds(b: Backend) {
    let Some(s) = server(b).await else { return };
    s.create_order("DE--1", &[("A", 1)]).await;
    let update = json!({"order_reference": "DE--1", "attributes": {"x": 1}});
    let selectors = vec![json!({"sku": "A"}); 1001];
    let many = json!({"order_reference": "DE--1", "event": "ship", "items": selectors});
    let (status, body) = s.post("/v1/erp/order-updates", &s.erp, many).await;
    assert_invalid(status, &body, "$.items");

    let post_with_key = |key: String| {
        let req = s
            .http
            .post(format!("{}/v1/erp/order-updates", s.base))
            .bearer_auth(&s.erp)
            .header("Idempotency-Key", key)
            .json(&update);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    for key in ["a b".to_owned(), "a\tb".to_owned(), "k".repeat(256)] {
        let (status, body) = post_with_key(key.clone()).await;
        assert_invalid(status, &body, "idempotency-key");
    }
    let (status, body) = post_with_key("k".repeat(255)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = post_with_key("!~#1".into()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // A batch entry's own key follows the same rule; the bad entry alone is refused.
    let entry = |key: &str| json!({"order_reference": "DE--1", "attributes": {"x": 2}, "idempotency_key": key});
    let batch = json!({"updates": [entry("has space"), entry(""), entry("fine-key")]});
    let (status, body) = s.post("/v1/erp/order-updates/batch", &s.erp, batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let results = body["results"].as_array().unwrap();
    for (i, result) in results.iter().take(2).enumerate() {
        assert_eq!(result["error"]["code"], "invalid_request", "{body}");
        let path = format!("$.updates[{i}].idempotency_key");
        assert_eq!(result["error"]["path"], path, "{body}");
    }
    assert_eq!(results[2]["status"], "accepted", "{body}");
    s.stop().await;
}

async fn page_limits(b: Backend) {
    let Some(s) = server(b).await else { return };
    for path in ["/v1/orders", "/v1/admin/inbox"] {
        for bad in ["0", "501", "-1", "abc", "1.5", ""] {
            let (status, body) = s.get(&format!("{path}?limit={bad}"), &s.admin).await;
            assert_invalid(status, &body, "limit");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("from 1 to 500"), "{message}");
        }
        for good in ["1", "500"] {
            let (status, body) = s.get(&format!("{path}?limit={good}"), &s.admin).await;
            assert_eq!(status, StatusCode::OK, "{path}?limit={good}: {body}");
        }
    }
    s.stop().await;
}
