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
    ("post", "/v1/admin/subscriptions"),
    ("get", "/v1/admin/subscriptions"),
    ("get", "/v1/admin/subscriptions/{id}"),
    ("patch", "/v1/admin/subscriptions/{id}"),
    ("delete", "/v1/admin/subscriptions/{id}"),
    ("get", "/v1/admin/subscriptions/{id}/deliveries"),
    (
        "post",
        "/v1/admin/subscriptions/{id}/deliveries/{delivery}/retry",
    ),
    ("post", "/v1/admin/subscriptions/{id}/replay"),
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
            .replace("{delivery}", "1")
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
    // The order created above has its one item in `waiting` (onEnter `start`).
    assert!(dot.contains("\"waiting\" [label=\"waiting · 1\\n"), "{dot}");
    assert!(
        !dot.contains("\"paid\" [label=\"paid · "),
        "no item is paid: {dot}"
    );
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

/// Every protected operation documents 401, 403 and 429; every operation with a JSON body
/// documents 400, 413, 415 and 422; every error answer has the envelope's schema; the
/// limits are schema constraints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_errors_and_limits() {
    let Some(s) = start(crate::support::Backend::Sqlite).await else {
        return;
    };
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut protected = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                protected += 1;
                for status in ["401", "403", "429"] {
                    assert!(has(status), "{method} {path} lacks {status}");
                }
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(has(status), "{method} {path} lacks {status}");
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(protected >= 18, "{protected} protected operations");
    let schemas = &doc["components"]["schemas"];
    let item = &schemas["CreateItem"]["properties"];
    assert_eq!(item["quantity"]["minimum"], 1);
    assert_eq!(item["quantity"]["maximum"], 1_000_000);
    assert_eq!(item["unit_price"]["maximum"], 1_000_000_000_000_i64);
    assert_eq!(item["sku"]["maxLength"], 255);
    assert!(item["sku"]["pattern"].is_string(), "{}", item["sku"]);
    assert_eq!(
        schemas["CreateOrder"]["properties"]["items"]["maxItems"],
        1000
    );
    let update = &schemas["OrderUpdate"]["properties"];
    assert_eq!(update["items"]["maxItems"], 1000);
    assert_eq!(update["idempotency_key"]["maxLength"], 255);
    assert_eq!(update["idempotency_key"]["pattern"], "^[!-~]+$");
    assert_eq!(
        schemas["UpdateBatch"]["properties"]["updates"]["maxItems"],
        1000
    );
    let limit = doc["paths"]["/v1/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&Value::from(1), &Value::from(500))
    );
    // Links in OpenAPI's spelling, and the loaded process names.
    let created = &doc["paths"]["/v1/orders"]["post"]["responses"]["201"];
    assert_eq!(created["links"]["GetOrder"]["operationId"], "get_order");
    assert_eq!(
        created["links"]["GetOrder"]["parameters"]["id"],
        "$response.body#/id"
    );
    let process = &schemas["CreateOrder"]["properties"]["process"]["enum"];
    assert!(
        process.as_array().unwrap().contains(&Value::from("Test01")),
        "{process}"
    );
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics.get("text/plain").is_some(), "{metrics}");
    s.stop().await;
}
