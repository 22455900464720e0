//! What a change writes follows from what was decided (the engine's decisions and the
//! caller's own patch), not from comparing rows: an item a command changed is written even
//! when it does not move, and a patch that changes nothing makes no new version.

use oms::Registry;
use oms::plugin::{Command, CommandContext, CommandMode, PluginError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, backend_tests, start, start_with_plugins};

backend_tests!(
    a_command_may_change_an_item_that_does_not_move,
    a_patch_that_changes_nothing_keeps_the_version
);

/// Marks the order's other items with the ids it ran for (once per order and state).
struct MarkOthers;

impl Command for MarkOthers {
    fn mode(&self) -> CommandMode {
        CommandMode::ByOrder
    }

    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        let running: Vec<i64> = ctx.items().map(|i| i.id).collect();
        let others: Vec<i64> = ctx
            .order
            .items
            .iter()
            .map(|i| i.id)
            .filter(|id| !running.contains(id))
            .collect();
        for id in others {
            ctx.set_item_attribute(id, "exported_with", json!(running));
        }
        Ok(())
    }
}

fn item<'a>(order: &'a Value, id: &Value) -> &'a Value {
    let items = order["items"].as_array().unwrap();
    items.iter().find(|i| &i["id"] == id).unwrap()
}

async fn a_command_may_change_an_item_that_does_not_move(b: Backend) {
    let mut registry = Registry::new();
    // Test01's `export` event runs this command (unbound in the other tests).
    registry.register_command("Test/NotBound", MarkOthers);
    let Some(s) = start_with_plugins(b, |_| {}, registry).await else {
        return;
    };
    let order = s.create_order("W-1", &[("A", 1), ("B", 1)]).await;
    let (a, other) = (&order["items"][0]["id"], &order["items"][1]["id"]);
    let events = format!("/v1/orders/{}/events", order["id"]);
    for event in ["pay", "export"] {
        let body = json!({"event": event, "items": [a]});
        let (status, r) = s.post(&events, &s.admin, body).await;
        assert_eq!(status, StatusCode::OK, "{event}: {r}");
    }

    let (status, read) = s.get(&format!("/v1/orders/{}", order["id"]), &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["version"], order["version"].as_i64().unwrap() + 2);
    assert_eq!(item(&read, a)["state"], "exported");
    let unmoved = item(&read, other);
    assert_eq!(unmoved["state"], "waiting", "{read}");
    assert_eq!(unmoved["attributes"]["exported_with"], json!([a]), "{read}");
    s.stop().await;
}

async fn a_patch_that_changes_nothing_keeps_the_version(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("W-2", &[("A", 1)]).await;
    let path = format!("/v1/orders/{}", order["id"]);
    let body = json!({"version": 1, "attributes": {"note": "gift", "tags": {"a": 1}}});
    let (status, patched) = s.patch(&path, &s.shop, body).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["version"], 2);

    for same in [
        json!({"note": "gift"}),
        json!({"tags": {"a": 1}, "missing": null}),
        json!({}),
    ] {
        let body = json!({"version": 2, "attributes": same});
        let (status, r) = s.patch(&path, &s.shop, body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["version"], 2, "{same} changes nothing");
    }
    let body = json!({"version": 2, "attributes": {"tags": {"a": null}}});
    let (status, r) = s.patch(&path, &s.shop, body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["version"], 3);
    assert_eq!(r["attributes"]["tags"], json!({}));
    let (_, read) = s.get(&path, &s.shop).await;
    assert_eq!(read, r, "the change is stored");
    s.stop().await;
}
