//! `orderflow check-condition --once`, run as cron would: the real binary on a SQLite file.

use std::process::{Command, Output};
use std::sync::Arc;

use orderflow::config::Config;
use orderflow::domain::types::{EventName, OrderId};
use orderflow::domain::{Change, EventInput, OrderService, ProcessSet, Source, Target};
use orderflow::store::Store;
use serde_json::json;

use crate::support::{self, fixtures};

/// `[conditions."Test/Approved"]` always true, as a user would bind it in orderflow.toml.
const CONFIG: &str = "[conditions.\"Test/Approved\"]\ntype = \"constant\"\nvalue = true\n";

fn check_condition(dir: &std::path::Path) -> Output {
    let processes = fixtures().join("processes");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(["check-condition", "--once", "--processes"])
        .arg(processes)
        .current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDERFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run orderflow")
}

/// An order of Timeout01 whose item entered `review`: its condition timer is due at once.
async fn order_in_review(url: &str) -> i64 {
    let mut config = Config::default();
    config.conditions.insert(
        "Test/Approved".into(),
        serde_json::from_value(json!({"type": "constant", "value": true})).unwrap(),
    );
    let processes = ProcessSet::load(&fixtures().join("processes"), &config.bindings()).unwrap();
    let store = Store::open(url).await.unwrap();
    let service = OrderService::new(store.clone(), Arc::new(processes));
    let input = support::one_item_order("CLI-1", "Timeout01");
    let order = service.create(input, Source::Api).await.unwrap();
    let change = Change {
        expected: None,
        attributes: None,
        items: None,
        item_attributes: None,
        event: Some(EventInput {
            event: EventName::parse("review").unwrap(),
            manual_only: false,
        }),
        source: Source::Api,
    };
    service
        .apply(Target::Id(OrderId(order.id)), change)
        .await
        .unwrap();
    store.close().await;
    order.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_moves_what_is_due_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
    let id = order_in_review(&url).await;
    std::fs::write(dir.path().join("orderflow.toml"), CONFIG).unwrap();

    let out = check_condition(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert!(
        stdout.contains("1 orders, 1 items moved, 1 timers fired, 0 rescheduled"),
        "{stdout}"
    );

    let store = Store::open(&url).await.unwrap();
    let (_, items) = store.order(id).await.unwrap().unwrap();
    assert_eq!(items[0].state, "approved");
    let history = store.history(id).await.unwrap();
    assert_eq!(history.last().unwrap().source, "condition");
    store.close().await;

    let out = check_condition(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("0 timers fired"), "{stdout}");
}
