//! A command that fails for good (a non-retryable plugin failure) on an ERP update: what
//! "fatal" means for commands (DESIGN §4). The update is `rejected` at its first attempt
//! with the code `command_refused`, never `applied` and never retried, and its order is
//! unchanged: neither the update's attributes nor what the command staged are kept.

use std::time::Duration;

use oms::Registry;
use oms::plugin::{CommandContext, PluginError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start_with_plugins};

backend_tests!(a_command_that_fails_for_good_rejects_the_update_at_once);

/// Stages an attribute, then refuses: a failure no retry can fix.
struct Refuses;

impl oms::plugin::Command for Refuses {
    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        ctx.set_order_attribute("staged_by_command", json!(true));
        Err(PluginError::fatal("the ERP refuses the export: no VAT id"))
    }
}

/// `POST /v1/erp/order-updates` with `Prefer` and `Idempotency-Key`.
async fn send(s: &TestServer, prefer: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", prefer)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("JSON body"))
}

/// The order as the API shows it, and the transitions ERP updates made.
async fn order_and_erp_moves(s: &TestServer, id: &Value) -> (Value, usize) {
    let (_, order) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    let (_, history) = s.get(&format!("/v1/orders/{id}/history"), &s.shop).await;
    let moves = history["entries"]
        .as_array()
        .expect("history entries")
        .iter()
        .filter(|e| e["source"].as_str().unwrap_or_default().starts_with("erp:"))
        .count();
    (order, moves)
}

/// The status resource of an update, checked to be rejected at its first attempt by the
/// command.
async fn rejected_once(s: &TestServer, id: &str) {
    let (code, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "rejected", "{v}");
    assert_eq!(v["attempts"], 1, "one attempt, no retry: {v}");
    assert_eq!(v["last_error"]["code"], "command_refused", "{v}");
    assert!(v["last_error"].get("retryable").is_none(), "{v}");
    assert!(v.get("result").is_none(), "never applied: {v}");
    let (_, detail) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
    assert_eq!(
        detail["errors"].as_array().map(Vec::len),
        Some(1),
        "{detail}"
    );
}

async fn a_command_that_fails_for_good_rejects_the_update_at_once(b: Backend) {
    let mut registry = Registry::new();
    // `Test/NotBound` is the command of Test01's `export` event (paid -> exported).
    registry.register_command("Test/NotBound", Refuses);
    let Some(s) = start_with_plugins(b, |_| {}, registry).await else {
        return;
    };
    let order = s
        .create_order("FATAL-1", &[("SKU-A", 1), ("SKU-B", 2)])
        .await;
    let id = &order["id"];
    s.event(id, "pay").await;
    let (before, erp_moves) = order_and_erp_moves(&s, id).await;
    assert_eq!(erp_moves, 0);

    // Wait mode answers at once with the command's error; the update is kept as rejected.
    let export = json!({"order_reference": "FATAL-1", "event": "export",
        "attributes": {"exported_by": "erp"}});
    let (code, r) = send(&s, "wait=5", "export-1", &export).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    let error = &r["error"];
    assert_eq!(error["code"], "command_refused", "{r}");
    assert_eq!(error["status"], "rejected", "{r}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Test/NotBound") && message.contains("no VAT id"),
        "the message names the command and its error: {r}"
    );
    let update = error["update_id"].as_str().expect("update_id").to_owned();
    rejected_once(&s, &update).await;
    // A repeat gets the same answer and has no effect.
    let again = send(&s, "wait=5", "export-1", &export).await;
    assert_eq!(again, (code, r.clone()));

    // Async: the worker rejects it at its first attempt too.
    let (code, r) = send(&s, "respond-async", "export-2", &export).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let update = r["id"].as_str().expect("id").to_owned();
    eventually(
        Duration::from_secs(10),
        "the update is rejected",
        || async {
            let (_, v) = s
                .get(&format!("/v1/erp/order-updates/{update}"), &s.erp)
                .await;
            (v["status"] != "accepted" && v["status"] != "processing").then_some(())
        },
    )
    .await;
    rejected_once(&s, &update).await;

    // The order is as it was: same version, no attribute from the update or the command,
    // every item still paid, and no move by an ERP update.
    let (after, erp_moves) = order_and_erp_moves(&s, id).await;
    assert_eq!(after, before);
    assert_eq!(after["attributes"].get("exported_by"), None, "{after}");
    assert_eq!(
        after["attributes"].get("staged_by_command"),
        None,
        "{after}"
    );
    for item in after["items"].as_array().expect("items") {
        assert_eq!(item["state"], "paid", "{after}");
    }
    assert_eq!(erp_moves, 0);
    s.stop().await;
}
