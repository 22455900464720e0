//! Items left in a state the loaded process no longer has (the process file changed while
//! orders were open): reported, and moved by an operator into a state of the new
//! definition, on both backends.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{self, Backend, backend_tests, fixtures};

backend_tests!(items_in_a_removed_state_are_reported_and_moved);

/// `orderflow items ...` against the test server's database and fixture processes.
fn items(url: &str, args: &[&str]) -> std::process::Output {
    let processes = fixtures().join("processes");
    std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("items")
        .args(args)
        .args(["--database-url", url])
        .arg("--processes")
        .arg(&processes)
        .env_remove("ORDERFLOW_DATABASE_URL")
        .output()
        .expect("run orderflow items")
}

async fn items_in_a_removed_state_are_reported_and_moved(backend: Backend) {
    let Some(s) = support::start(backend).await else {
        return;
    };
    let order = s
        .create_order("STRAY-1", &[("SKU-1", 1), ("SKU-2", 1)])
        .await;
    s.create_order("STRAY-2", &[("SKU-1", 1)]).await;
    let id = order["id"].as_i64().unwrap();
    let item = order["items"][0]["id"].as_i64().unwrap();
    // As if the process file no longer had the item's state.
    let sql = format!("UPDATE items SET state = 'legacy' WHERE id = {item}");
    s.execute_sql(&sql).await;

    let strays = s.service.strays().await.unwrap();
    assert_eq!(strays.len(), 1, "{strays:?}");
    assert_eq!(
        (
            strays[0].process.as_str(),
            strays[0].state.as_str(),
            strays[0].items
        ),
        ("Test01", "legacy", 1)
    );
    let out = items(&s.database_url, &["strays", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "strays exit 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["reason"], "unknown_state", "{listed}");

    // Before a deploy: `process check` against the database names what would be stranded.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "process",
            "check",
            "--json",
            "--database-url",
            &s.database_url,
        ])
        .arg(fixtures().join("processes"))
        .env_remove("ORDERFLOW_DATABASE_URL")
        .output()
        .expect("run orderflow process check");
    let checked: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(checked["strays"][0]["state"], "legacy", "{checked}");
    assert_eq!(checked["strays"][0]["items"], 1, "{checked}");

    // Strict mode refuses to start a worker that would leave them where they are (here:
    // a folder without Test01, so every item of the test's orders is stranded).
    let strict = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "check-condition",
            "--once",
            "--database-url",
            &s.database_url,
        ])
        .arg("--processes")
        .arg(fixtures().join("fleet"))
        .env_remove("ORDERFLOW_DATABASE_URL")
        .env("ORDERFLOW_STRICT", "true")
        .output()
        .expect("run orderflow check-condition");
    let said = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{said}");
    assert!(
        said.contains("strict mode") && said.contains("items of Test01"),
        "{said}"
    );

    // A dry run changes nothing; a move to a state the process has does.
    let moving = [
        "move",
        "--process",
        "Test01",
        "--from",
        "legacy",
        "--to",
        "waiting",
    ];
    let out = items(&s.database_url, &[&moving[..], &["--dry-run"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would move 1 items of 1 orders"));
    let (_, before) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(before["items"][0]["state"], "legacy");
    let bad = items(
        &s.database_url,
        &[
            "move",
            "--process",
            "Test01",
            "--from",
            "legacy",
            "--to",
            "nowhere",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("has no state \"nowhere\""));

    // The admin API: the strays, readiness that names them, and the move itself.
    let (status, listed) = s.get("/v1/admin/strays", &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed[0]["state"], "legacy", "{listed}");
    let (_, ready) = s.get("/readyz", &s.admin).await;
    assert_eq!(ready["stray_items"], 1, "{ready}");
    let body = serde_json::json!({"process": "Test01", "from": "legacy", "to": "nowhere"});
    let (status, refused) = s.post("/v1/admin/items/move", &s.admin, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["path"], "$.to", "{refused}");
    let body = serde_json::json!({"process": "Test01", "from": "legacy", "to": "waiting"});
    let (status, report) = s.post("/v1/admin/items/move", &s.shop, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{report}");
    let (status, report) = s.post("/v1/admin/items/move", &s.admin, body).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["orders"].as_i64(), report["items"].as_i64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let (_, ready) = s.get("/readyz", &s.admin).await;
    assert_eq!(ready["stray_items"], 0, "{ready}");
    let (status, after) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["items"][0]["state"], "waiting", "{after}");
    assert_eq!(
        after["version"].as_i64(),
        before["version"].as_i64().map(|v| v + 1),
        "{after}"
    );
    let (_, history) = s.get(&format!("/v1/orders/{id}/history"), &s.shop).await;
    let moved = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["source"] == "operator")
        .unwrap_or_else(|| panic!("no operator row: {history}"));
    assert_eq!(
        (moved["from"].as_str(), moved["to"].as_str()),
        (Some("legacy"), Some("waiting")),
        "{moved}"
    );
    assert!(s.service.strays().await.unwrap().is_empty());

    // A process that is no longer loaded (renamed with a version, say): whole orders move
    // to a loaded one.
    s.execute_sql("UPDATE orders SET process = 'Gone01' WHERE reference = 'STRAY-2'")
        .await;
    let strays = s.service.strays().await.unwrap();
    assert_eq!(strays[0].reason, "unknown_process", "{strays:?}");
    let across = [
        "move",
        "--process",
        "Gone01",
        "--from",
        "*",
        "--to-process",
        "Test01",
        "--to",
        "paid",
    ];
    let out = items(&s.database_url, &across);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moved 1 items of 1 orders"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, moved) = s.get("/v1/orders/by-reference/STRAY-2", &s.shop).await;
    assert_eq!(moved["process"], "Test01", "{moved}");
    assert_eq!(moved["items"][0]["state"], "paid", "{moved}");
    assert!(s.service.strays().await.unwrap().is_empty());
    s.stop().await;
}
