//! Error answers: status, stable code, and the JSON path for invalid bodies.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, MAX_BODY, TestServer, backend_tests, start};

backend_tests!(auth_errors, body_errors);

async fn code(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON error body");
    (status, body["error"].clone())
}

async fn auth_errors(b: Backend) {
    let Some(s) = start(b).await else { return };
    let url = format!("{}/v1/orders/1", s.base);
    let (status, e) = code(s.http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, e) = code(
        s.http
            .get(&url)
            .bearer_auth("of_wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, e) = code(
        s.http
            .get(&url)
            .header("Authorization", "Basic eDp5")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    // ERP clients use the ERP endpoints only.
    let (status, e) = s.get("/v1/orders/1", &s.erp).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, e) = s.post("/v1/orders", &s.erp, json!({})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // Public endpoints need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let resp = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    s.stop().await;
}

async fn post_raw(s: &TestServer, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/orders", s.base))
        .bearer_auth(&s.shop)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    code(resp).await
}

async fn body_errors(b: Backend) {
    let Some(s) = start(b).await else { return };
    let valid =
        json!({"reference": "DE--1", "process": "Test01", "items": [{"sku": "A", "quantity": 1}]});

    let (status, e) = post_raw(&s, "text/plain", valid.to_string().into_bytes()).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );

    let big = json!({"reference": "DE--1", "process": "Test01", "attributes": {"x": "y".repeat(MAX_BODY)},
        "items": [{"sku": "A", "quantity": 1}]});
    let (status, e) = post_raw(&s, "application/json", big.to_string().into_bytes()).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    let cases = [
        (
            json!({"reference": "DE--1", "process": "Test01", "items": [{"sku": "A", "quantity": 0}]}),
            "$.items[0].quantity",
        ),
        (
            json!({"reference": "DE--1", "process": "Test01", "items": [{"sku": "A", "quantity": "2"}]}),
            "$.items[0].quantity",
        ),
        (
            json!({"reference": "", "process": "Test01", "items": [{"sku": "A", "quantity": 1}]}),
            "$.reference",
        ),
        (
            json!({"reference": "DE--1", "process": "Test01", "currency": "euro", "items": []}),
            "$.currency",
        ),
        (
            json!({"reference": "DE--1", "process": "Test01", "items": [{"sku": "A", "quantity": 1, "colour": "red"}]}),
            "$.items[0].colour",
        ),
        (
            json!({"reference": "DE--1", "process": "Test01", "items": []}),
            "$.items",
        ),
        (json!({"process": "Test01", "items": []}), "$"),
    ];
    for (body, path) in cases {
        let (status, e) = post_raw(&s, "application/json", body.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["code"], "invalid_request", "{body}: {e}");
        assert_eq!(e["path"], path, "{body}: {e}");
    }
    let (status, e) = post_raw(&s, "application/json", b"{not json".to_vec()).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );

    // Nothing above was stored.
    let (status, _) = s.get("/v1/orders/by-reference/DE--1", &s.shop).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}
