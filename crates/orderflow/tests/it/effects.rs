//! After-commit HTTP commands against a real local receiver (`support::receiver`): the
//! call runs once after the change commits, never for a change that rolled back, retries
//! on 500 and 429 (after the `Retry-After` asked for), gives up on 400, and a dead effect
//! is visible to admins and feeds its `on_failure` event back (the items move). Process:
//! `fixtures/processes/Capture01.xml`.

use std::time::Duration;

use orderflow::config::Config;
use orderflow::outbound::effects::Executor;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestServer, backend_tests, eventually, start_with};

backend_tests!(
    runs_once_after_commit_and_not_after_a_rollback,
    retries_on_500_and_429_after_retry_after,
    gives_up_on_400_and_feeds_on_failure_back,
    effects_of_one_order_run_in_creation_order,
    several_executors_never_send_one_effect_twice,
    the_executor_is_woken_by_the_commit,
);

const WITHIN: Duration = Duration::from_secs(30);

/// Binds `Test/Capture` (with `on_failure`) and `Test/Refund` to `receiver`; quick retries.
fn bind(receiver: &Receiver, max_attempts: u32) -> impl FnOnce(&mut Config) {
    let url = receiver.url.clone();
    move |c: &mut Config| {
        c.commands.insert(
            "Test/Capture".into(),
            serde_json::from_value(json!({
                "type": "http", "url": format!("{url}/capture"), "timeout": "2s",
                "headers": {"Authorization": "Bearer psp-secret"},
                "on_failure": "capture failed"
            }))
            .unwrap(),
        );
        c.commands.insert(
            "Test/Refund".into(),
            serde_json::from_value(json!({"type": "http", "url": format!("{url}/refund")}))
                .unwrap(),
        );
        c.effects.poll_interval = Duration::from_millis(50);
        c.effects.backoff_base = Duration::from_millis(50);
        c.effects.backoff_max = Duration::from_secs(5);
        c.effects.max_attempts = max_attempts;
    }
}

/// A new Capture01 order with two items; its JSON.
async fn order(s: &TestServer, reference: &str) -> Value {
    let body = json!({"reference": reference, "process": "Capture01",
        "attributes": {"psp": "ref-1"},
        "items": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}]});
    let (status, order) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order
}

async fn trigger(s: &TestServer, id: &Value, event: &str) -> (StatusCode, Value) {
    s.post(
        &format!("/v1/orders/{id}/events"),
        &s.admin,
        json!({ "event": event }),
    )
    .await
}

/// The effects of order `id` as the admin API lists them.
async fn effects_of(s: &TestServer, id: &Value) -> Vec<Value> {
    let (status, page) = s
        .get(&format!("/v1/admin/effects?order_id={id}"), &s.admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["effects"].as_array().cloned().unwrap_or_default()
}

/// Waits until every effect of order `id` (at least `n`) is `status`; returns them.
async fn settled(s: &TestServer, id: &Value, n: usize, status: &str) -> Vec<Value> {
    eventually(WITHIN, &format!("{n} effects {status}"), || async {
        let e = effects_of(s, id).await;
        (e.len() >= n && e.iter().all(|e| e["status"] == status)).then_some(e)
    })
    .await
}

async fn detail(s: &TestServer, effect: &Value) -> Value {
    let (status, d) = s
        .get(&format!("/v1/admin/effects/{}", effect["id"]), &s.admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d
}

async fn runs_once_after_commit_and_not_after_a_rollback(b: Backend) {
    let receiver = Receiver::start().await;
    let Some(s) = start_with(b, bind(&receiver, 5)).await else {
        return;
    };
    let o = order(&s, "CAP-1").await;
    let id = &o["id"];
    let (status, moved) = trigger(&s, id, "capture").await;
    assert_eq!(status, StatusCode::OK, "{moved}");

    let effects = settled(&s, id, 1, "done").await;
    assert_eq!(
        effects.len(),
        1,
        "one call for the order's two items: {effects:?}"
    );
    let effect = &effects[0];
    assert_eq!(effect["attempts"], 1, "{effect}");
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0].key.as_deref(),
        Some(effect["id"].to_string().as_str())
    );
    // The documented body: the effect, the command, the event, the order and its items
    // as the committed change left them.
    let body = &hits[0].body;
    assert_eq!(body["effect_id"], effect["id"], "{body}");
    assert_eq!(body["command"], "Test/Capture", "{body}");
    assert_eq!(body["event"], "capture", "{body}");
    assert_eq!(body["order"]["reference"], "CAP-1", "{body}");
    assert_eq!(body["order"]["process"], "Capture01", "{body}");
    assert_eq!(body["order"]["attributes"]["psp"], "ref-1", "{body}");
    assert_eq!(body["order"]["version"], effect["order_version"], "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert!(
        items.iter().all(|i| i["state"] == "capture pending"),
        "{body}"
    );
    assert!(body["created_at"].is_string(), "{body}");
    let log = detail(&s, effect).await;
    assert_eq!(log["attempt_log"][0]["status_code"], 200, "{log}");
    assert_eq!(log["attempt_log"][0]["excerpt"], "ok", "{log}");

    // A change that rolls back (a stale version) records no effect and calls nothing.
    let o2 = order(&s, "CAP-2").await;
    let id2 = &o2["id"];
    let (status, _) = s
        .patch(
            &format!("/v1/orders/{id2}"),
            &s.shop,
            json!({"version": o2["version"], "attributes": {"note": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, conflict) = s
        .post(
            &format!("/v1/orders/{id2}/events"),
            &s.admin,
            json!({"event": "capture", "version": o2["version"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["error"]["code"], "version_conflict", "{conflict}");
    assert!(effects_of(&s, id2).await.is_empty());
    // A later effect of another order runs, and the receiver still saw one call for CAP-1
    // and none for CAP-2.
    let o3 = order(&s, "CAP-3").await;
    trigger(&s, &o3["id"], "capture").await;
    settled(&s, &o3["id"], 1, "done").await;
    let refs: Vec<String> = receiver
        .hits()
        .iter()
        .map(|h| {
            h.body["order"]["reference"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(refs, ["CAP-1", "CAP-3"]);
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("orderflow_effects_total{outcome=\"done\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("orderflow_effect_attempt_seconds"),
        "{metrics}"
    );
    s.stop().await;
}

async fn retries_on_500_and_429_after_retry_after(b: Backend) {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::RetryAfter(1), Reply::Status(503)]);
    let Some(s) = start_with(b, bind(&receiver, 5)).await else {
        return;
    };
    let o = order(&s, "CAP-R").await;
    trigger(&s, &o["id"], "capture").await;
    let effects = settled(&s, &o["id"], 1, "done").await;
    let log = detail(&s, &effects[0]).await;
    let codes: Vec<i64> = log["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 429, 503, 200], "{log}");
    assert_eq!(log["attempts"], 4, "{log}");
    assert_eq!(log["attempt_log"][1]["excerpt"], "slow down", "{log}");
    let hits = receiver.hits();
    assert_eq!(hits.len(), 4);
    assert!(
        hits.iter().all(|h| h.key == hits[0].key),
        "one idempotency key across retries"
    );
    // The receiver asked for a second's pause after the 429 (the backoff alone is 50 ms).
    assert!(
        hits[2].at - hits[1].at >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        hits[2].at - hits[1].at
    );
    s.stop().await;
}

async fn gives_up_on_400_and_feeds_on_failure_back(b: Backend) {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(400)]);
    let Some(s) = start_with(b, bind(&receiver, 5)).await else {
        return;
    };
    let o = order(&s, "CAP-F").await;
    let id = &o["id"];
    trigger(&s, id, "capture").await;
    let effects = settled(&s, id, 1, "dead").await;
    let effect = &effects[0];
    assert_eq!(effect["attempts"], 1, "a 400 is not retried: {effect}");
    assert_eq!(effect["last_error"], "HTTP 400 Bad Request", "{effect}");
    let (_, dead) = s.get("/v1/admin/effects?status=dead", &s.admin).await;
    assert_eq!(dead["effects"][0]["id"], effect["id"], "{dead}");
    assert_eq!(receiver.hits().len(), 1);

    // on_failure = "capture failed" comes back through the inbox: the items move.
    eventually(WITHIN, "items in capture failed", || async {
        let (_, order) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
        order["items"]
            .as_array()?
            .iter()
            .all(|i| i["state"] == "capture failed")
            .then_some(())
    })
    .await;

    // Only a dead effect can be retried; a retry sends it again with the same key.
    let (status, again) = s
        .post(
            &format!("/v1/admin/effects/{}/retry", effect["id"]),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["attempts"], 0, "{again}");
    settled(&s, id, 1, "done").await;
    let (status, refused) = s
        .post(
            &format!("/v1/admin/effects/{}/retry", effect["id"]),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "not_retryable", "{refused}");
    assert_eq!(refused["error"]["status"], "done", "{refused}");
    let (status, _) = s
        .post("/v1/admin/effects/999999/retry", &s.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.get("/v1/admin/effects", &s.shop).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let keys = receiver.by_key();
    assert_eq!(keys.get(&effect["id"].to_string()), Some(&2), "{keys:?}");

    // `orderflow effects list` shows the same, straight from the store.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "effects",
            "list",
            "--json",
            "--database-url",
            &s.database_url,
        ])
        .current_dir(dir.path())
        .env_remove("ORDERFLOW_DATABASE_URL")
        .output()
        .expect("run orderflow");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], effect["id"]);
    assert_eq!(listed[0]["status"], "done");
    s.stop().await;
}

async fn effects_of_one_order_run_in_creation_order(b: Backend) {
    let receiver = Receiver::start().await;
    // The capture fails twice before it succeeds; the refund, recorded after it, must wait.
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let Some(s) = start_with(b, bind(&receiver, 5)).await else {
        return;
    };
    let o = order(&s, "CAP-O").await;
    let id = &o["id"];
    trigger(&s, id, "capture").await;
    let (status, moved) = trigger(&s, id, "refund").await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let effects = settled(&s, id, 2, "done").await;
    assert_eq!(effects.len(), 2);
    let commands: Vec<String> = receiver
        .hits()
        .iter()
        .map(|h| h.body["command"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        commands,
        [
            "Test/Capture",
            "Test/Capture",
            "Test/Capture",
            "Test/Refund"
        ]
    );
    s.stop().await;
}

async fn several_executors_never_send_one_effect_twice(b: Backend) {
    const ORDERS: usize = 16;
    let receiver = Receiver::start().await;
    // Slow answers keep claims open while the other executors look for work.
    receiver.always(Reply::Slow(Duration::from_millis(150)));
    let mut config = Config::default();
    bind(&receiver, 5)(&mut config);
    config.effects.batch_size = 3;
    let Some(s) = start_with(b, bind(&receiver, 5)).await else {
        return;
    };
    // Two more executors on the same database, as two more instances would run them.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut extra = Vec::new();
    for _ in 0..2 {
        let executor = Executor::new(s.store.clone(), &config).unwrap();
        let token = shutdown.clone();
        extra.push(tokio::spawn(async move { executor.run(token).await }));
    }
    let mut ids = Vec::new();
    for o in 0..ORDERS {
        let order = order(&s, &format!("CAP-M{o}")).await;
        trigger(&s, &order["id"], "capture").await;
        ids.push(order["id"].clone());
    }
    for id in &ids {
        settled(&s, id, 1, "done").await;
    }
    let keys = receiver.by_key();
    assert_eq!(keys.len(), ORDERS, "{keys:?}");
    assert!(
        keys.values().all(|&n| n == 1),
        "each effect sent once: {keys:?}"
    );
    shutdown.cancel();
    for e in extra {
        e.await.unwrap().unwrap();
    }
    s.stop().await;
}

/// With a poll interval of an hour, only the wake-up after the commit (in-process, and
/// `NOTIFY` on PostgreSQL) can start the call.
async fn the_executor_is_woken_by_the_commit(b: Backend) {
    let receiver = Receiver::start().await;
    let bind = bind(&receiver, 5);
    let Some(s) = start_with(b, |c| {
        bind(c);
        c.effects.poll_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    for o in 0..3 {
        let order = order(&s, &format!("CAP-W{o}")).await;
        trigger(&s, &order["id"], "capture").await;
        settled(&s, &order["id"], 1, "done").await;
    }
    assert_eq!(receiver.hits().len(), 3);
    s.stop().await;
}
