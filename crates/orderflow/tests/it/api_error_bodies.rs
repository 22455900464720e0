//! Errors for people: malformed JSON is a 400 with line and column, 422 messages speak
//! JSON rather than Rust, and every error status has the JSON envelope.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, start};

backend_tests!(malformed_json_is_400_and_stores_nothing);

/// Words that only Rust or serde would use.
const RUST_WORDS: &[&str] = &[
    "struct ", "enum ", "variant", "i64", "u64", "i32", "u32", "usize", "sequence", "`map`",
];

async fn send(s: &TestServer, method: Method, path: &str, body: &[u8]) -> (StatusCode, Value) {
    let resp = s
        .http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(&s.admin)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text:?}"));
    (status, body)
}

async fn malformed_json_is_400_and_stores_nothing(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order =
        json!({"reference": "DE--1", "process": "Test01", "items": [{"sku": "A", "quantity": 1}]})
            .to_string();
    let update = json!({"order_reference": "DE--1", "attributes": {"a": 1}}).to_string();
    let cases: Vec<(&str, String, (u64, u64))> = vec![
        ("/v1/orders", r#"{"reference": "DE--1","#.into(), (1, 22)),
        (
            "/v1/orders",
            "{\n  \"reference\": \"DE--1\",\n  \"process\" \"Test01\"\n}".into(),
            (3, 13),
        ),
        (
            "/v1/orders",
            format!("{order} x"),
            (1, order.len() as u64 + 2),
        ),
        (
            "/v1/orders",
            format!("{order}{order}"),
            (1, order.len() as u64 + 1),
        ),
        ("/v1/orders", String::new(), (1, 0)),
        (
            "/v1/erp/order-updates",
            format!("{update}]"),
            (1, update.len() as u64 + 1),
        ),
        (
            "/v1/erp/order-updates/batch",
            format!("{{\"updates\": [{update}]}} {{}}"),
            (1, update.len() as u64 + 17),
        ),
    ];
    for (path, body, (line, column)) in cases {
        let (status, e) = send(&s, Method::POST, path, body.as_bytes()).await;
        let e = &e["error"];
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body:?}: {e}");
        assert_eq!(e["code"], "malformed_json", "{body:?}: {e}");
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(line), Some(column)),
            "{body:?}: {e}"
        );
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("not valid JSON"), "{message}");
    }
    // Valid JSON of the wrong shape stays a 422 with the path.
    let (status, e) = send(&s, Method::POST, "/v1/orders", b"[1, 2]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["path"], "$", "{e}");
    // Nothing was stored: neither the order nor the update.
    let (status, _) = s.get("/v1/orders/by-reference/DE--1", &s.shop).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, inbox) = s.get("/v1/admin/inbox", &s.admin).await;
    assert_eq!(inbox["updates"], json!([]), "{inbox}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_use_json_words_and_name_the_path() {
    let Some(s) = start(Backend::Sqlite).await else {
        return;
    };
    s.create_order("DE--1", &[("A", 1)]).await;
    let order = |items: Value| json!({"reference": "DE--2", "process": "Test01", "items": items});
    let update =
        |items: Value| json!({"order_reference": "DE--1", "event": "ship", "items": items});
    let bodies: Vec<(Method, &str, Value, &str, &str)> = vec![
        (
            Method::POST,
            "/v1/orders",
            order(json!([[]])),
            "$.items[0]",
            "must be an object, not an array",
        ),
        (
            Method::POST,
            "/v1/orders",
            order(json!([{"sku": "A", "quantity": "2"}])),
            "$.items[0].quantity",
            "must be an integer",
        ),
        (
            Method::POST,
            "/v1/orders",
            order(json!([{"sku": "A", "quantity": 1.5}])),
            "$.items[0].quantity",
            "must be an integer",
        ),
        (
            Method::POST,
            "/v1/orders",
            json!({"reference": "DE--2", "process": "Test01", "items": {}}),
            "$.items",
            "must be an array",
        ),
        (
            Method::POST,
            "/v1/orders",
            json!({"reference": 7, "process": "Test01", "items": []}),
            "$.reference",
            "must be a string",
        ),
        (
            Method::POST,
            "/v1/erp/order-updates",
            update(json!([{"x": 1}])),
            "$.items[0]",
            r#"{"id": <integer>} or {"sku": <string>}"#,
        ),
        (
            Method::POST,
            "/v1/erp/order-updates",
            update(json!([{"id": 1, "sku": "A"}])),
            "$.items[0]",
            r#"{"id": <integer>} or {"sku": <string>}"#,
        ),
        (
            Method::POST,
            "/v1/erp/order-updates",
            update(json!([{"id": "a"}])),
            "$.items[0].id",
            "must be an integer",
        ),
        (
            Method::POST,
            "/v1/erp/order-updates",
            update(json!([7])),
            "$.items[0]",
            r#"{"id": <integer>} or {"sku": <string>}"#,
        ),
        (
            Method::POST,
            "/v1/erp/order-updates/batch",
            json!({"updates": [update(json!([{"x": 1}]))]}),
            "$.updates[0].items[0]",
            r#"{"id": <integer>} or {"sku": <string>}"#,
        ),
        (
            Method::POST,
            "/v1/admin/inbox/replay",
            json!({"status": 1}),
            "$.status",
            "must be one of accepted",
        ),
        (
            Method::POST,
            "/v1/admin/inbox/replay",
            json!({"status": "lost"}),
            "$.status",
            "must be one of accepted",
        ),
        (
            Method::PATCH,
            "/v1/orders/1",
            json!({"version": "x", "attributes": {}}),
            "$.version",
            "must be an integer",
        ),
        (
            Method::POST,
            "/v1/orders/1/events",
            json!({"event": "pay", "items": ["x"]}),
            "$.items[0]",
            "must be an integer",
        ),
    ];
    for (method, path, body, at, says) in bodies {
        let (status, e) = send(&s, method, path, body.to_string().as_bytes()).await;
        // A batch answers 202 with one error per entry.
        let e = if status == StatusCode::ACCEPTED {
            e["results"][0]["error"].clone()
        } else {
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {body}: {e}"
            );
            e["error"].clone()
        };
        assert_eq!(e["code"], "invalid_request", "{body}: {e}");
        assert_eq!(e["path"], at, "{body}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        for word in RUST_WORDS {
            assert!(!message.contains(word), "{body}: {message}");
        }
    }
    let params = [
        (
            "/v1/orders/abc",
            "id",
            "path parameter `id` must be an integer",
        ),
        (
            "/v1/orders/99999999999999999999/history",
            "id",
            "path parameter `id` is out of range",
        ),
        (
            "/v1/orders?limit=abc",
            "limit",
            "query parameter `limit` must be an integer from 1 to 500",
        ),
        (
            "/v1/orders?updated_after=yesterday",
            "updated_after",
            "query parameter `updated_after` must be an RFC 3339 date-time",
        ),
        (
            "/v1/orders?colour=red",
            "colour",
            "unknown query parameter `colour`",
        ),
        (
            "/v1/admin/inbox?status=lost",
            "status",
            "query parameter `status` must be one of accepted",
        ),
        (
            "/v1/admin/inbox?limit=1&limit=2",
            "limit",
            "query parameter `limit` is given more than once",
        ),
    ];
    for (path, name, says) in params {
        let (status, e) = s.get(path, &s.admin).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {e}");
        let e = &e["error"];
        assert_eq!(
            (e["code"].as_str(), e["path"].as_str()),
            (Some("invalid_request"), Some(name)),
            "{path}: {e}"
        );
        let message = e["message"].as_str().unwrap();
        assert!(message.starts_with(says), "{path}: {message}");
        for word in RUST_WORDS {
            assert!(!message.contains(word), "{path}: {message}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_has_a_json_body() {
    let Some(s) = start(Backend::Sqlite).await else {
        return;
    };
    let request = |method: Method, path: &str| s.http.request(method, format!("{}{path}", s.base));

    let resp = request(Method::DELETE, "/v1/orders").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "method_not_allowed", "{e}");
    let resp = request(Method::from_bytes(b"BREW").unwrap(), "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "method_not_allowed", "{e}");
    // The message names the method as sent, not the metrics' `other`.
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("BREW"), "{e}");

    let long = format!("/healthz?x={}", "a".repeat(9 * 1024));
    let resp = request(Method::GET, &long).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["limit"].as_u64()),
        (Some("uri_too_long"), Some(8192)),
        "{e}"
    );

    let resp = request(Method::GET, "/healthz")
        .header("x-padding", "a".repeat(10 * 1024))
        .header("x-more-padding", "a".repeat(7 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["limit"].as_u64()),
        (Some("headers_too_large"), Some(16384)),
        "{e}"
    );

    let resp = request(Method::GET, "/v2/nothing").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "not_found", "{e}");

    // Within the limits, the same requests are served.
    let resp = request(Method::GET, &format!("/healthz?x={}", "a".repeat(7 * 1024)))
        .header("x-padding", "a".repeat(15 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.stop().await;
}
