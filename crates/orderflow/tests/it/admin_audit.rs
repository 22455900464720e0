//! Log lines name the client whose request they are about: an operator's changes, and an
//! ERP update that failed to be stored. The real `serve` binary, its JSON log read back.

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

/// An ERP update that cannot be stored gets `500 internal`, and the server's error line
/// names the client (the handler makes its span only on the error path, see
/// `http::erp::post_update`). Once the store is back, the next update is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_erp_update_is_logged_with_the_client() {
    use sqlx::Connection as _;

    let Some((url, _db)) = support::database(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orderflow.toml"), "").unwrap();
    let token = create_client(&url, dir.path(), "erp-bob", "erp").await;
    let server = Server::start(&url, dir.path(), &support::fixtures().join("processes"), 0).await;
    let http = reqwest::Client::new();
    let post = |key: &'static str| {
        http.post(format!("{}/v1/erp/order-updates", server.base))
            .bearer_auth(&token)
            .header("prefer", "respond-async")
            .header("idempotency-key", key)
            .json(&json!({"order_reference": "R-LOG", "event": "pay"}))
            .send()
    };

    // The inbox table is moved away under the running server, then back.
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(rename("inbox", "inbox_away")))
        .execute(&mut db)
        .await
        .unwrap();
    let failed = post("log-1").await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");

    let line = eventually(Duration::from_secs(10), "the error line", || async {
        server
            .log_lines()
            .into_iter()
            .find(|l| l["fields"]["message"] == "request failed")
    })
    .await;
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["span"]["name"], "post_update", "{line}");
    assert_eq!(line["span"]["client"], "erp-bob", "{line}");
    let cause = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(cause.contains("inbox"), "the cause is logged: {line}");

    sqlx::raw_sql(sqlx::AssertSqlSafe(rename("inbox_away", "inbox")))
        .execute(&mut db)
        .await
        .unwrap();
    let accepted = post("log-2").await.unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    server.kill().await;
}
