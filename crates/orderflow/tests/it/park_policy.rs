//! The park policy when nothing can ever make an update's event apply: an update whose
//! selected items are all in final states (no transition leaves them) is rejected at once
//! with the reason, instead of being parked until `park_ttl`; one with a way out stays
//! parked and applies once the order gets there.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start};

backend_tests!(
    update_for_an_order_with_every_item_final_is_rejected_at_once,
    update_with_a_way_out_stays_parked_until_it_applies,
);

/// POSTs an ERP update with a `Prefer` header; returns status and body.
async fn send(s: &TestServer, prefer: &str, body: Value) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", prefer)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until the update leaves `accepted`/`processing`; returns its status view.
async fn settled(s: &TestServer, id: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("update {id} settled"),
        || async {
            let (code, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
            assert_eq!(code, StatusCode::OK, "{v}");
            let pending = v["status"] == "accepted" || v["status"] == "processing";
            (!pending).then_some(v)
        },
    )
    .await
}

async fn until_status(s: &TestServer, id: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("update {id} {status}"),
        || async {
            let (_, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
            (v["status"] == status).then_some(v)
        },
    )
    .await
}

/// Triggers a manual event on the given items (all when empty) as the shop.
async fn event(s: &TestServer, order: &Value, event: &str, items: &[&Value]) {
    let mut body = json!({ "event": event });
    if !items.is_empty() {
        body["items"] = json!(items);
    }
    let path = format!("/v1/orders/{}/events", order["id"]);
    let (status, r) = s.post(&path, &s.shop, body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
}

async fn update_for_an_order_with_every_item_final_is_rejected_at_once(b: Backend) {
    let Some(s) = start(b).await else { return };
    // Test01: `cancelled` has no way out; `ship` and `pay` have the default policy, park.
    let o = s.create_order("NW-1", &[("A", 1), ("B", 1)]).await;
    event(&s, &o, "cancel", &[]).await;

    let (code, r) = send(
        &s,
        "respond-async",
        json!({"order_reference": "NW-1", "event": "ship"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let v = settled(&s, r["id"].as_str().unwrap()).await;
    assert_eq!(v["status"], "rejected", "not parked for park_ttl: {v}");
    let e = &v["last_error"];
    assert_eq!(e["code"], "event_not_applicable", "{e}");
    assert_eq!(
        e["message"],
        "order NW-1 has every item in a final state (cancelled); event ship can never apply"
    );
    assert_eq!(e["final"], true);
    assert_eq!(e["items"].as_array().map(Vec::len), Some(2), "{e}");
    assert!(v["processed_at"].is_string(), "{v}");

    // Wait mode answers at once, as under the reject policy.
    let (code, r) = send(
        &s,
        "wait=5",
        json!({"order_reference": "NW-1", "event": "pay"}),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"]["code"], "event_not_applicable");
    assert_eq!(r["error"]["status"], "rejected");
    assert_eq!(
        r["error"]["message"],
        "order NW-1 has every item in a final state (cancelled); event pay can never apply"
    );

    // Selected items: the one selected is cancelled, the other could still be paid.
    let o = s.create_order("NW-2", &[("A", 1), ("B", 1)]).await;
    let b_item = &o["items"][1]["id"];
    event(&s, &o, "cancel", &[b_item]).await;
    let body = json!({"order_reference": "NW-2", "event": "pay", "items": [{"sku": "B"}]});
    let (code, r) = send(&s, "wait=5", body).await;
    assert_eq!(code, StatusCode::CONFLICT, "{r}");
    assert_eq!(
        r["error"]["message"],
        "every selected item of order NW-2 is in a final state (cancelled); \
         event pay can never apply"
    );
    s.stop().await;
}

async fn update_with_a_way_out_stays_parked_until_it_applies(b: Backend) {
    let Some(s) = start(b).await else { return };
    // A is waiting (it can be paid, then shipped), B is cancelled: `ship` applies to neither
    // now, but may to A later.
    let o = s.create_order("WO-1", &[("A", 1), ("B", 1)]).await;
    let (a_item, b_item) = (&o["items"][0]["id"], &o["items"][1]["id"]);
    event(&s, &o, "cancel", &[b_item]).await;
    let (code, r) = send(
        &s,
        "respond-async",
        json!({"order_reference": "WO-1", "event": "ship"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let v = settled(&s, &id).await;
    assert_eq!(v["status"], "parked", "{v}");
    assert_eq!(v["last_error"]["code"], "event_not_applicable");
    assert!(v["last_error"].get("final").is_none(), "{v}");

    // An update for an order that does not exist yet is parked as before.
    let (code, r) = send(
        &s,
        "respond-async",
        json!({"order_reference": "WO-2", "event": "ship"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let v = settled(&s, r["id"].as_str().unwrap()).await;
    assert_eq!(v["status"], "parked", "{v}");
    assert_eq!(v["last_error"]["code"], "order_not_found");

    event(&s, &o, "pay", &[a_item]).await;
    let v = until_status(&s, &id, "applied").await;
    assert_eq!(v["result"]["moved"][0]["to"], "shipped", "{v}");
    s.stop().await;
}
