//! An operator's changes are logged with the name of the client that made them: the real
//! `serve` binary, its JSON log read back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::binary::{Server, create_client};
use crate::support::{self, Backend, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_logged_with_the_client() {
    let Some((url, _db)) = support::database(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orderflow.toml"), "").unwrap();
    let token = create_client(&url, dir.path(), "ops-alice", "admin").await;
    let server = Server::start(&url, dir.path(), &support::fixtures().join("processes"), 0).await;
    let http = reqwest::Client::new();

    let created: Value = http
        .post(format!("{}/v1/admin/subscriptions", server.base))
        .bearer_auth(&token)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["order.created"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().expect("a subscription id");
    let deleted = http
        .delete(format!("{}/v1/admin/subscriptions/{id}", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let lines = eventually(Duration::from_secs(10), "the audit lines", || async {
        let lines: Vec<Value> = server
            .log_lines()
            .into_iter()
            .filter(|l| {
                l["fields"]["message"] == "subscription created"
                    || l["fields"]["message"] == "subscription deleted"
            })
            .collect();
        (lines.len() == 2).then_some(lines)
    })
    .await;
    assert_eq!(lines[0]["fields"]["message"], "subscription created");
    for line in &lines {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["span"]["client"], "ops-alice", "{line}");
        assert_eq!(line["fields"]["subscription"], id, "{line}");
    }
    server.kill().await;
}
