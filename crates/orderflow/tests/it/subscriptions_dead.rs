//! `update.dead` events: an ERP update that ends `dead` (here: parked past a short
//! `park_ttl`) is delivered, signed, to the subscriptions that take the type, once; in its
//! order's lane after the order's earlier events, or in a lane of its own when the order
//! does not exist; and a replay sends it again with the same bytes.

use std::time::Duration;

use orderflow::config::{EventConfig, EventPolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::webhook_receiver::{Answer, Got, Receiver};
use crate::support::{Backend, TestServer, backend_tests, eventually, start_with};

backend_tests!(
    a_dead_update_of_an_unknown_order_is_delivered_once,
    a_dead_update_comes_after_its_orders_earlier_events
);

const WITHIN: Duration = Duration::from_secs(30);

/// A server where `pay` and `ship` updates that cannot apply die after 300 ms parked, with
/// a short delivery schedule.
async fn start(b: Backend) -> Option<TestServer> {
    start_with(b, |c| {
        c.worker.poll_interval = Duration::from_millis(50);
        c.worker.backoff_base = Duration::from_millis(50);
        c.worker.backoff_max = Duration::from_millis(100);
        for event in ["pay", "ship"] {
            c.events.insert(
                event.into(),
                EventConfig {
                    policy: EventPolicy::Park,
                    park_ttl: Duration::from_millis(300),
                },
            );
        }
        c.subscriptions.retry_schedule = [0, 50, 50, 50, 50]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        c.subscriptions.poll_interval = Duration::from_millis(50);
    })
    .await
}

async fn subscribe(s: &TestServer, receiver: &Receiver, events: Option<Value>) -> i64 {
    let mut body = json!({"url": receiver.url});
    if let Some(e) = events {
        body["events"] = e;
    }
    let (status, created) = s.post("/v1/admin/subscriptions", &s.admin, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    receiver.set_secret(created["signing_secret"].as_str().unwrap());
    created["id"].as_i64().unwrap()
}

/// Sends an ERP update and waits until it is dead; returns its detail.
async fn dead_update(s: &TestServer, reference: &str, event: &str) -> Value {
    let body = json!({"order_reference": reference, "event": event});
    let (status, body) = s.post("/v1/erp/order-updates", &s.erp, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    eventually(WITHIN, "the update is dead", || async {
        let (_, d) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
        (d["status"] == "dead").then_some(d)
    })
    .await
}

fn dead_events(got: &[Got]) -> Vec<Got> {
    got.iter()
        .filter(|g| g.body["type"] == "update.dead")
        .cloned()
        .collect()
}

async fn deliveries(s: &TestServer, sub: i64) -> Vec<Value> {
    let (status, page) = s
        .get(
            &format!("/v1/admin/subscriptions/{sub}/deliveries"),
            &s.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries in {page}"))
        .clone()
}

async fn a_dead_update_of_an_unknown_order_is_delivered_once(b: Backend) {
    let Some(s) = start(b).await else {
        return;
    };
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (every, orders_only, deaths_only) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let all = subscribe(&s, &every, None).await;
    let created = subscribe(&s, &orders_only, Some(json!(["order.created"]))).await;
    subscribe(&s, &deaths_only, Some(json!(["update.dead"]))).await;

    let detail = dead_update(&s, "GHOST-1", "pay").await;
    let update_id = detail["id"].as_str().unwrap();
    let attempts = detail["attempts"].as_i64().unwrap();
    let event_id = format!("evt_update_{update_id}_{attempts}");
    for r in [&every, &deaths_only] {
        let got = eventually(WITHIN, "update.dead delivered", || async {
            let d = dead_events(&r.delivered());
            (!d.is_empty()).then_some(d)
        })
        .await;
        let g = &got[0];
        assert!(g.signature_ok, "signature of {}", g.raw);
        assert_eq!(g.id, event_id, "{}", g.raw);
        let body = &g.body;
        assert_eq!(body["id"], event_id.as_str(), "{body}");
        let data = &body["data"];
        assert_eq!(data["update_id"], update_id, "{body}");
        assert_eq!(data["client"], detail["client"], "{body}");
        assert_eq!(data["order_reference"], "GHOST-1", "{body}");
        assert_eq!(data["order_id"], Value::Null, "{body}");
        assert_eq!(data["event"], "pay", "{body}");
        assert_eq!(data["attempts"], attempts, "{body}");
        assert_eq!(
            data["error"]["code"], detail["last_error"]["code"],
            "{body}"
        );
        assert!(data["error"]["message"].is_string(), "{body}");
        assert!(data["received_at"].is_string(), "{body}");
    }
    // A later change is delivered to all three kinds; by then a second copy of the death
    // would have been sent too.
    s.create_order("LATER-1", &[("SKU-1", 1)]).await;
    eventually(WITHIN, "order.created delivered", || async {
        let created = |r: &Receiver| {
            r.delivered()
                .iter()
                .any(|g| g.body["type"] == "order.created")
        };
        (created(&every) && created(&orders_only)).then_some(())
    })
    .await;
    assert_eq!(dead_events(&every.got()).len(), 1, "sent once");
    assert_eq!(dead_events(&deaths_only.got()).len(), 1, "sent once");
    assert!(
        dead_events(&orders_only.got()).is_empty(),
        "a subscription without the type does not get it"
    );
    assert!(
        deaths_only
            .got()
            .iter()
            .all(|g| g.body["type"] == "update.dead"),
        "a subscription of update.dead alone gets nothing else"
    );
    let listed: Vec<Value> = deliveries(&s, all)
        .await
        .into_iter()
        .filter(|d| d["event_type"] == "update.dead")
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["order_id"], Value::Null, "{listed:?}");
    assert_eq!(listed[0]["status"], "delivered", "{listed:?}");
    assert!(
        deliveries(&s, created)
            .await
            .iter()
            .all(|d| d["event_type"] == "order.created")
    );

    // A replay sends the death again: the same id and bytes.
    let (status, report) = s
        .post(
            &format!("/v1/admin/subscriptions/{all}/replay"),
            &s.admin,
            json!({"since": since}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["dead_updates"], 1, "{report}");
    let again = eventually(WITHIN, "the replay delivered", || async {
        let d = dead_events(&every.delivered());
        (d.len() == 2).then_some(d)
    })
    .await;
    assert_eq!(again[0].id, again[1].id);
    assert_eq!(again[0].raw, again[1].raw, "the same bytes");

    // The type is accepted and named; the schema is documented.
    let (status, body) = s
        .post(
            "/v1/admin/subscriptions",
            &s.admin,
            json!({"url": every.url, "events": ["update.gone"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("update.dead"), "{body}");
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &doc["components"]["schemas"]["DeadUpdateEvent"];
    assert!(schema["properties"]["data"].is_object(), "{schema}");
    s.stop().await;
}

async fn a_dead_update_comes_after_its_orders_earlier_events(b: Backend) {
    let Some(s) = start(b).await else {
        return;
    };
    let receiver = Receiver::start().await;
    // Every order event fails its first attempt; the death (no version) never does.
    receiver.script(|version, before| match (version, before) {
        (-1, _) => Answer::Ok,
        (_, 0) => Answer::Status(500),
        _ => Answer::Ok,
    });
    let sub = subscribe(&s, &receiver, None).await;
    // Disabled, the subscription materialises nothing: the order's changes are not queued
    // when the update dies, so its death must wait for them.
    let (status, body) = s
        .patch(
            &format!("/v1/admin/subscriptions/{sub}"),
            &s.admin,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order = s.create_order("KNOWN-1", &[("SKU-1", 1)]).await;
    let id = order["id"].as_i64().unwrap();
    let (status, o) = s
        .patch(
            &format!("/v1/orders/{id}"),
            &s.shop,
            json!({"version": order["version"], "attributes": {"note": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{o}");
    let versions = o["version"].as_i64().unwrap();
    // `ship` cannot apply to a waiting order: parked, then dead.
    let detail = dead_update(&s, "KNOWN-1", "ship").await;
    let (status, body) = s
        .patch(
            &format!("/v1/admin/subscriptions/{sub}"),
            &s.admin,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let got = eventually(WITHIN, "the death delivered", || async {
        let got = receiver.delivered();
        got.iter()
            .any(|g| g.body["type"] == "update.dead")
            .then_some(got)
    })
    .await;
    let order_of = |g: &Got| match g.body["type"].as_str() {
        Some("update.dead") => i64::MAX,
        _ => g.body["data"]["version"].as_i64().unwrap(),
    };
    let delivered: Vec<i64> = got.iter().map(order_of).collect();
    let expected: Vec<i64> = (1..=versions).chain([i64::MAX]).collect();
    assert_eq!(
        delivered, expected,
        "every version, then the death (i64::MAX)"
    );
    let dead = got.last().unwrap();
    assert!(dead.signature_ok);
    assert_eq!(dead.body["data"]["order_id"], id, "{}", dead.raw);
    assert_eq!(dead.body["data"]["update_id"], detail["id"], "{}", dead.raw);
    assert_eq!(dead.body["data"]["event"], "ship", "{}", dead.raw);
    s.stop().await;
}

/// A row whose `received_at` cannot be decoded is buried without being read whole
/// (SQLite only: PostgreSQL does not store such a value); its death is still announced,
/// with what could be read.
#[tokio::test]
async fn a_buried_update_is_announced_with_what_can_be_read() {
    // Parked updates are re-checked only an hour later here: the order's creation must be
    // what wakes it (a re-check before that would bury it with no order to name).
    let Some(s) = start_with(Backend::Sqlite, |c| {
        c.worker.poll_interval = Duration::from_millis(50);
        c.worker.backoff_base = Duration::from_secs(3600);
        c.worker.backoff_max = Duration::from_secs(3600);
        c.subscriptions.retry_schedule = vec![Duration::ZERO];
        c.subscriptions.poll_interval = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    subscribe(&s, &receiver, Some(json!(["update.dead"]))).await;
    // `cancel` parks for the default 72 h: the order does not exist yet.
    let body = json!({"order_reference": "GARBLED-1", "event": "cancel"});
    let (status, body) = s.post("/v1/erp/order-updates", &s.erp, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    eventually(WITHIN, "parked", || async {
        let (_, d) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
        (d["status"] == "parked").then_some(())
    })
    .await;
    s.execute_sql(&format!(
        "UPDATE inbox SET received_at = 'not a time' WHERE id = '{id}'"
    ))
    .await;
    // The order's creation wakes the update, which is then found unreadable.
    let order = s.create_order("GARBLED-1", &[("SKU-1", 1)]).await;
    let got = eventually(WITHIN, "update.dead delivered", || async {
        let d = dead_events(&receiver.delivered());
        (!d.is_empty()).then_some(d)
    })
    .await;
    let g = &got[0];
    assert!(g.signature_ok, "{}", g.raw);
    let data = &g.body["data"];
    assert_eq!(data["update_id"], id.as_str(), "{}", g.raw);
    assert_eq!(data["order_reference"], "GARBLED-1", "{}", g.raw);
    assert_eq!(data["order_id"], order["id"], "{}", g.raw);
    assert_eq!(data["received_at"], Value::Null, "{}", g.raw);
    assert_eq!(g.id, format!("evt_update_{id}_{}", data["attempts"]));
    s.stop().await;
}
