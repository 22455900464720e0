//! A command that panics (a bug in an embedder's plugin) on one order's ERP update: that
//! update alone fails. It is tried again with backoff and goes `dead` after
//! `worker.max_attempts`, with the panic's message as its error; the updates of other
//! orders, in the same batch or after it, are applied, and the worker keeps running. The
//! same command run by a manual event gets `500 internal`.

use std::time::Duration;

use oms::Registry;
use oms::plugin::{CommandContext, PluginError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start_with_plugins};

backend_tests!(a_panicking_command_fails_its_update_alone);

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
async fn paid_order(s: &TestServer, reference: &str) -> Value {
    let order = s
        .create_order(reference, &[("SKU-A", 1), ("SKU-B", 2)])
        .await;
    let id = &order["id"];
    let (code, paid) = s
        .post(
            &format!("/v1/orders/{id}/events"),
            &s.shop,
            json!({"event": "pay"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{paid}");
    id.clone()
}

/// `POST /v1/erp/order-updates` (async) of `export` for `reference`: the update's id.
async fn export(s: &TestServer, reference: &str) -> String {
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
    // Sent together, so that the first attempt holds all three in one batch.
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
