//! The OpenAPI document is 3.1, lists every API route, and every listed route is served.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Backend, backend_tests, start};

backend_tests!(openapi_covers_routes);

/// The routes DESIGN §3 promises (outside the ERP endpoints).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/orders"),
    ("get", "/v1/orders"),
    ("get", "/v1/orders/{id}"),
    ("patch", "/v1/orders/{id}"),
    ("get", "/v1/orders/by-reference/{reference}"),
    ("post", "/v1/orders/{id}/events"),
    ("get", "/v1/orders/{id}/history"),
    ("get", "/v1/reservations/{sku}"),
    ("get", "/v1/processes"),
    ("get", "/v1/processes/{name}"),
    ("get", "/v1/processes/{name}/graph.svg"),
    ("get", "/v1/processes/{name}/graph.dot"),
    ("get", "/v1/admin/inbox"),
    ("get", "/v1/admin/inbox/{id}"),
    ("post", "/v1/admin/inbox/{id}/retry"),
    ("post", "/v1/admin/inbox/replay"),
    ("get", "/v1/admin/stats"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

async fn openapi_covers_routes(b: Backend) {
    let Some(s) = start(b).await else { return };
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing"
        );
    }
    // Every documented operation is routed: no 404 "no such route" or 405.
    s.create_order("DE--1", &[("SKU-A", 1)]).await;
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{reference}", "DE--1")
            .replace("{sku}", "SKU-A")
            .replace("{name}", "Test01");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = s
                .http
                .request(m, format!("{}{concrete}", s.base))
                .bearer_auth(&s.admin)
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!body.contains("no such route"), "{method} {path}: {body}");
            assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
        }
    }
    // The drawings carry live counts.
    let (status, dot) = s.get("/v1/processes/Test01/graph.dot", &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    let dot = dot.as_str().unwrap().to_owned();
    assert!(dot.contains("digraph"), "{dot}");
    assert!(dot.contains("waiting") && dot.contains('1'), "{dot}");
    let resp = s
        .http
        .get(format!("{}/v1/processes/Test01/graph.svg", s.base))
        .bearer_auth(&s.shop)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    assert!(resp.text().await.unwrap().contains("<svg"));
    let (status, p) = s.get("/v1/processes/Test01", &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["initial_state"], "new");
    let waiting = p["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "waiting")
        .unwrap();
    assert_eq!(waiting["reserved"], true);
    assert_eq!(waiting["flags"][0], "cancellable");
    let docs = s.text("/docs/").await;
    assert!(docs.to_lowercase().contains("swagger"), "{docs}");
    s.stop().await;
}
