//! Orders: create, read-after-write, versions and 409s, reservations.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, backend_tests, start};

backend_tests!(
    create_then_read_after_write,
    patch_checks_versions,
    concurrent_patches_one_wins,
    reservations_sum_reserved_items,
);

async fn create_then_read_after_write(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("DE--1", &[("SKU-A", 2), ("SKU-B", 1)]).await;
    assert_eq!(order["version"], 1);
    assert_eq!(order["reference"], "DE--1");
    assert_eq!(order["currency"], "EUR");
    // The initial state's onEnter chain ran: new -> waiting, with its command.
    for item in order["items"].as_array().unwrap() {
        assert_eq!(item["state"], "waiting", "{order}");
        assert_eq!(item["reserved"], true);
        assert_eq!(item["flags"], json!(["cancellable"]));
    }
    assert_eq!(
        order["attributes"]["stamped"], true,
        "onEnter command ran: {order}"
    );

    let id = order["id"].as_i64().unwrap();
    let (status, by_id) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id, order, "the read returns what the write returned");
    let (status, by_ref) = s.get("/v1/orders/by-reference/DE--1", &s.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_ref, order);

    let body =
        json!({"reference": "DE--1", "process": "Test01", "items": [{"sku": "X", "quantity": 1}]});
    let (status, err) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "reference_taken");

    let body =
        json!({"reference": "DE--2", "process": "Nope", "items": [{"sku": "X", "quantity": 1}]});
    let (status, err) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["code"], "unknown_process");

    let (status, err) = s.get("/v1/orders/999999", &s.shop).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "order_not_found");
    s.stop().await;
}

async fn patch_checks_versions(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("DE--1", &[("SKU-A", 1)]).await;
    let path = format!("/v1/orders/{}", order["id"]);

    let body = json!({"version": 1, "attributes": {"note": "gift", "stamped": null}});
    let (status, patched) = s.patch(&path, &s.shop, body).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["attributes"], json!({"note": "gift"}));
    let (_, read) = s.get(&path, &s.shop).await;
    assert_eq!(
        read, patched,
        "a successful write is visible to the next read"
    );

    let (status, err) = s
        .patch(&path, &s.shop, json!({"version": 1, "attributes": {}}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "version_conflict");
    assert_eq!(err["error"]["current_version"], 2);

    let resp = s
        .http
        .patch(format!("{}{path}", s.base))
        .bearer_auth(&s.shop)
        .header("If-Match", "\"2\"")
        .json(&json!({"attributes": {"note": "none"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["version"], 3);

    let (status, err) = s.patch(&path, &s.shop, json!({"attributes": {}})).await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{err}");
    assert_eq!(err["error"]["code"], "version_required");
    s.stop().await;
}

async fn concurrent_patches_one_wins(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("DE--1", &[("SKU-A", 1)]).await;
    let path = format!("/v1/orders/{}", order["id"]);
    // All twenty requests are in flight at once, each on its own task.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (http, url, token) = (s.http.clone(), format!("{}{path}", s.base), s.shop.clone());
            tokio::spawn(async move {
                let body = json!({"version": 1, "attributes": {"writer": i}});
                let resp = http
                    .patch(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                (status, resp.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    let conflicts: Vec<_> = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::CONFLICT)
        .collect();
    assert_eq!(ok, 1, "{results:?}");
    assert_eq!(conflicts.len(), 19, "{results:?}");
    for (_, body) in conflicts {
        assert_eq!(body["error"]["code"], "version_conflict");
        assert_eq!(body["error"]["current_version"], 2);
    }
    let (_, read) = s.get(&path, &s.shop).await;
    assert_eq!(read["version"], 2);
    s.stop().await;
}

async fn reservations_sum_reserved_items(b: Backend) {
    let Some(s) = start(b).await else { return };
    let a = s.create_order("DE--1", &[("SKU-R", 2), ("SKU-O", 7)]).await;
    s.create_order("DE--2", &[("SKU-R", 3)]).await;
    let (status, r) = s.get("/v1/reservations/SKU-R", &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r, json!({"sku": "SKU-R", "reserved_quantity": 5}));

    // paid is reserved, shipped is not: shipping order A's SKU-R item releases 2.
    let item = a["items"][0]["id"].as_i64().unwrap();
    let path = format!("/v1/orders/{}/events", a["id"]);
    for event in ["pay", "ship"] {
        let (status, body) = s
            .post(&path, &s.shop, json!({"event": event, "items": [item]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, r) = s.get("/v1/reservations/SKU-R", &s.shop).await;
    assert_eq!(r["reserved_quantity"], 3);
    let (_, r) = s.get("/v1/reservations/UNKNOWN", &s.shop).await;
    assert_eq!(r["reserved_quantity"], 0);
    s.stop().await;
}
