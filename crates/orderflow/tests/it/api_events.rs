//! Manual events: moves, not-applicable items, 409, role rules, history with sources.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, backend_tests, start};

backend_tests!(
    event_moves_and_reports,
    history_lists_transitions_with_source
);

async fn event_moves_and_reports(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("DE--1", &[("SKU-A", 1), ("SKU-B", 1)]).await;
    let (a, bb) = (
        order["items"][0]["id"].as_i64().unwrap(),
        order["items"][1]["id"].as_i64().unwrap(),
    );
    let path = format!("/v1/orders/{}/events", order["id"]);

    let (status, r) = s
        .post(
            &path,
            &s.shop,
            json!({"event": "pay", "items": [a], "version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        r["moved"],
        json!([{"item": a, "from": "waiting", "to": "paid"}])
    );
    assert_eq!(r["not_applicable"], json!([]));
    assert_eq!(r["order"]["version"], 2);
    assert_eq!(
        r["order"]["items"][0]["flags"],
        json!(["cancellable", "paid"])
    );

    // All items: the paid one cannot take `pay` again, the other moves.
    let (status, r) = s.post(&path, &s.shop, json!({"event": "pay"})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        r["moved"],
        json!([{"item": bb, "from": "waiting", "to": "paid"}])
    );
    assert_eq!(r["not_applicable"], json!([a]));
    assert_eq!(r["order"]["version"], 3);

    // Nothing can move: 409 naming each item's state; nothing changes.
    let (status, r) = s.post(&path, &s.shop, json!({"event": "pay"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"]["code"], "event_not_applicable");
    assert_eq!(
        r["error"]["items"],
        json!([{"item": a, "state": "paid"}, {"item": bb, "state": "paid"}])
    );
    let (_, read) = s.get(&format!("/v1/orders/{}", order["id"]), &s.shop).await;
    assert_eq!(read["version"], 3);

    // A stale version is refused before anything runs.
    let (status, r) = s
        .post(&path, &s.shop, json!({"event": "ship", "version": 1}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(r["error"]["current_version"], 3);

    let (status, r) = s.post(&path, &s.shop, json!({"event": "nope"})).await;
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("unknown_event"))
    );
    let (status, r) = s
        .post(&path, &s.shop, json!({"event": "ship", "items": [999999]}))
        .await;
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("unknown_item"))
    );

    // `export` runs a command nothing is bound to: the item stays and says why.
    let (status, r) = s
        .post(&path, &s.shop, json!({"event": "export", "items": [a]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["moved"], json!([]));
    assert_eq!(r["stayed"][0]["state"], "paid");
    assert!(
        r["stayed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Test/NotBound"),
        "{r}"
    );
    s.stop().await;
}

async fn history_lists_transitions_with_source(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("DE--1", &[("SKU-A", 1)]).await;
    let item = order["items"][0]["id"].as_i64().unwrap();
    let events = format!("/v1/orders/{}/events", order["id"]);

    // `expire` is not manual: a shop may not trigger it, an admin may.
    let (status, r) = s.post(&events, &s.shop, json!({"event": "expire"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(r["error"]["code"], "event_not_manual");
    let (status, r) = s.post(&events, &s.admin, json!({"event": "expire"})).await;
    assert_eq!(status, StatusCode::OK, "{r}");

    let (status, h) = s
        .get(&format!("/v1/orders/{}/history", order["id"]), &s.shop)
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<(Value, Value, Value, Value)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["item"], item);
            (
                e["from"].clone(),
                e["to"].clone(),
                e["event"].clone(),
                e["source"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (Value::Null, json!("new"), Value::Null, json!("api")),
            (
                json!("new"),
                json!("waiting"),
                json!("start"),
                json!("on_enter")
            ),
            (
                json!("waiting"),
                json!("cancelled"),
                json!("expire"),
                json!("api")
            ),
        ]
    );
    let (status, _) = s.get("/v1/orders/999999/history", &s.shop).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}
