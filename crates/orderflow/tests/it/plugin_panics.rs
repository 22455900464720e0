//! Plugins that panic (a bug in an embedder's code) fail only the work of their own order.
//!
//! A command that panics on one order's ERP update: that update alone fails. It is tried again with backoff and goes `dead` after
//! `worker.max_attempts`, with the panic's message as its error; the updates of other
//! orders, in the same batch or after it, are applied, and the worker keeps running. The
//! same command run by a manual event gets `500 internal`.
//!
//! A condition that panics on one order: the check-condition pass goes on, the other
//! orders' items move, and that order's timer is checked again on its backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use oms::Registry;
use oms::engine::{Item, Order};
use oms::plugin::{CommandContext, PluginError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start_with_plugins};

backend_tests!(
    a_panicking_command_fails_its_update_alone,
    a_panicking_condition_holds_back_its_order_alone
);

const MAX_ATTEMPTS: u32 = 3;

/// Panics for the order `PANIC-1`; passes for any other.
struct PanicsOnOne;

impl oms::plugin::Command for PanicsOnOne {
    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        assert!(ctx.order.reference != "PANIC-1", "the plugin's bug");
        Ok(())
    }
}

/// An order with two items, paid (so that `export` runs `Test/NotBound`): its id.
pub(crate) async fn paid_order(s: &TestServer, reference: &str) -> Value {
    let order = s
        .create_order(reference, &[("SKU-A", 1), ("SKU-B", 2)])
        .await;
    s.event(&order["id"], "pay").await;
    order["id"].clone()
}

/// `POST /v1/erp/order-updates` (async) of `export` for `reference`: the update's id.
pub(crate) async fn export(s: &TestServer, reference: &str) -> String {
    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", "respond-async")
        .header("idempotency-key", format!("export-{reference}"))
        .json(&json!({"order_reference": reference, "event": "export"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: Value = resp.json().await.expect("JSON body");
    v["id"].as_str().expect("id").to_owned()
}

/// The update's status resource once it is final.
async fn settled(s: &TestServer, id: &str) -> Value {
    eventually(Duration::from_secs(20), "the update is final", || async {
        let (_, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
        (v["status"] != "accepted" && v["status"] != "processing").then_some(v)
    })
    .await
}

async fn a_panicking_command_fails_its_update_alone(b: Backend) {
    let mut registry = Registry::new();
    // `Test/NotBound` is the command of Test01's `export` event (paid -> exported).
    registry.register_command("Test/NotBound", PanicsOnOne);
    let configure = |c: &mut orderflow::config::Config| {
        c.worker.max_attempts = MAX_ATTEMPTS;
        c.worker.backoff_base = Duration::from_millis(20);
        c.worker.backoff_max = Duration::from_millis(100);
        c.worker.poll_interval = Duration::from_millis(50);
    };
    let Some(s) = start_with_plugins(b, configure, registry).await else {
        return;
    };
    let id = paid_order(&s, "PANIC-1").await;
    for reference in ["CALM-1", "CALM-2"] {
        paid_order(&s, reference).await;
    }
    // Sent together, so that a batch may hold all three (whether it does depends on when
    // the worker claims; either way only the poisoned update may fail).
    let (poisoned, calm_1, calm_2) = tokio::join!(
        export(&s, "PANIC-1"),
        export(&s, "CALM-1"),
        export(&s, "CALM-2")
    );

    for id in [&calm_1, &calm_2] {
        let v = settled(&s, id).await;
        assert_eq!(v["status"], "applied", "{v}");
    }
    let v = settled(&s, &poisoned).await;
    assert_eq!(v["status"], "dead", "{v}");
    assert_eq!(v["attempts"], MAX_ATTEMPTS, "{v}");
    assert_eq!(v["last_error"]["code"], "panicked", "{v}");
    let message = v["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the plugin's bug"),
        "the panic's message is the error: {v}"
    );

    // A manual event through the orders API runs the same command: the request gets
    // `500 internal` (the connection is not dropped), and the order is unchanged.
    let (_, before) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    let (code, body) = s
        .post(
            &format!("/v1/orders/{id}/events"),
            &s.shop,
            json!({"event": "export"}),
        )
        .await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    let (_, after) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(after, before);

    // The worker is still running: a later update of another order is applied.
    paid_order(&s, "CALM-3").await;
    let later = export(&s, "CALM-3").await;
    let v = settled(&s, &later).await;
    assert_eq!(v["status"], "applied", "{v}");
}

/// `Test/Approved` of Timeout01 (`review -> approved`): the order attribute `approved` is
/// `true`; panics when it is `"boom"`.
struct ApprovedOrPanics;

impl oms::plugin::Condition for ApprovedOrPanics {
    fn check(&self, order: &Order, _: &Item, _: DateTime<Utc>) -> Result<bool, PluginError> {
        let approved = order.attributes.get("approved");
        assert!(approved != Some(&json!("boom")), "the condition's bug");
        Ok(approved == Some(&json!(true)))
    }

    fn may_block(&self) -> bool {
        false
    }
}

/// A Timeout01 order in `review` (a condition timer, due at once), its attribute
/// `approved` then set to `approved`: the order's id.
async fn in_review(s: &TestServer, reference: &str, approved: Value) -> i64 {
    let body = json!({"reference": reference, "process": "Timeout01",
        "items": [{"sku": "SKU-1", "quantity": 1}]});
    let (status, o) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let id = o["id"].as_i64().expect("id");
    let r = s.event(&o["id"], "review").await;
    let version = r["order"]["version"].as_i64().expect("version");
    let body = json!({"version": version, "attributes": {"approved": approved}});
    let (status, r) = s.patch(&format!("/v1/orders/{id}"), &s.shop, body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    id
}

async fn state_of(s: &TestServer, id: i64) -> Value {
    let (_, o) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    o["items"][0]["state"].clone()
}

async fn a_panicking_condition_holds_back_its_order_alone(b: Backend) {
    let mut registry = Registry::new();
    registry.register_condition("Test/Approved", ApprovedOrPanics);
    let configure = |c: &mut orderflow::config::Config| {
        // The test's binding of `Test/Approved` would replace the registered condition.
        c.conditions.remove("Test/Approved");
        // The server's own check-condition loop stays out of the way.
        c.worker.poll_interval = Duration::from_secs(3600);
    };
    let Some(s) = start_with_plugins(b, configure, registry).await else {
        return;
    };
    let poisoned = in_review(&s, "T-PANIC", json!("boom")).await;
    let calm = in_review(&s, "T-CALM", json!(true)).await;

    let now = orderflow::store::now() + chrono::TimeDelta::seconds(1);
    let pass = s
        .service
        .check_due(now, 100)
        .await
        .expect("the pass goes on");
    assert_eq!((pass.orders, pass.items_moved, pass.rescheduled), (2, 1, 1));
    assert_eq!(state_of(&s, calm).await, "approved");
    assert_eq!(state_of(&s, poisoned).await, "review");
    // Backed off: not checked again at once.
    let again = s
        .service
        .check_due(now, 100)
        .await
        .expect("the pass goes on");
    assert_eq!(again.timers_fired, 0);
}
