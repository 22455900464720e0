//! Subscriptions to order events, against a real receiver (see `support::webhook_receiver`) that
//! verifies every signature on its own: order, retries, disabling, replay, retry of one
//! delivery, the admin API's rules, and the CLI.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::webhook_receiver::{Answer, Receiver, signature_matches};
use crate::support::{Backend, TestServer, backend_tests, eventually, start_with};

backend_tests!(
    events_arrive_signed_and_in_version_order,
    a_failing_subscription_is_disabled,
    replay_resends_what_was_asked_and_nothing_else,
    retry_of_one_delivery_and_retry_after,
    admin_api_rules,
    two_instances_never_send_one_delivery_twice,
    cli_manages_subscriptions
);

const WITHIN: Duration = Duration::from_secs(30);

/// A server whose retry schedule is short: at once, then 50 ms steps.
async fn start(
    b: Backend,
    configure: impl FnOnce(&mut orderflow::config::Config),
) -> Option<TestServer> {
    start_with(b, |c| {
        c.subscriptions.retry_schedule = [0, 50, 50, 50, 50, 50, 50]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        c.subscriptions.poll_interval = Duration::from_millis(50);
        c.subscriptions.timeout = Duration::from_millis(500);
        c.subscriptions.lease = Duration::from_secs(5);
        configure(c);
    })
    .await
}

/// The value of the sample `name` (with its labels) in a Prometheus text page; 0 when absent.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Subscribes `receiver` (every type unless `events`) and gives it the secret.
async fn subscribe(s: &TestServer, receiver: &Receiver, events: Option<Value>) -> i64 {
    let mut body = json!({"url": receiver.url});
    if let Some(e) = events {
        body["events"] = e;
    }
    let (status, created) = s.post("/v1/admin/subscriptions", &s.admin, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["signing_secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.set_secret(secret);
    created["id"].as_i64().unwrap()
}

/// An order with four changes: created (v1), attributes (v2), pay (v3), ship (v4).
async fn order_with_four_changes(s: &TestServer, reference: &str) -> i64 {
    let order = s.create_order(reference, &[("SKU-1", 1)]).await;
    let id = order["id"].as_i64().unwrap();
    let v = order["version"].as_i64().unwrap();
    let (st, o) = s
        .patch(
            &format!("/v1/orders/{id}"),
            &s.shop,
            json!({"version": v, "attributes": {"note": reference}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{o}");
    for event in ["pay", "ship"] {
        let (st, o) = s
            .post(
                &format!("/v1/orders/{id}/events"),
                &s.shop,
                json!({"event": event}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{o}");
    }
    id
}

async fn events_arrive_signed_and_in_version_order(b: Backend) {
    let Some(s) = start(b, |_| {}).await else {
        return;
    };
    let receiver = Receiver::start().await;
    // The first attempt of every even version fails (500, or no answer within the
    // timeout for version 2), and of version 3 it is 429.
    receiver.script(|version, before| match (version, before) {
        (2, 0) => Answer::Hang(Duration::from_secs(2)),
        (3, 0) => Answer::TooMany(0),
        (v, 0) if v % 2 == 0 => Answer::Status(500),
        _ => Answer::Ok,
    });
    subscribe(&s, &receiver, None).await;
    let mut orders = Vec::new();
    for n in 0..3 {
        orders.push(order_with_four_changes(&s, &format!("SUB-ORD-{n}")).await);
    }
    let per_order = |got: &[crate::support::webhook_receiver::Got]| {
        let mut m: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for g in got {
            m.entry(g.body["data"]["order_id"].as_i64().unwrap())
                .or_default()
                .push(g.body["data"]["version"].as_i64().unwrap());
        }
        m
    };
    eventually(WITHIN, "every event delivered", || async {
        let m = per_order(&receiver.delivered());
        (orders.iter().all(|o| m.get(o).map_or(0, Vec::len) >= 4)).then_some(())
    })
    .await;
    let got = receiver.got();
    assert!(
        got.iter().all(|g| g.signature_ok),
        "a signature did not verify"
    );
    // Every request, failed ones included: an order's versions never go backwards, and a
    // version is asked again only until it succeeded.
    for (order, versions) in per_order(&got) {
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "order {order}: versions out of order: {versions:?}"
        );
    }
    for (order, versions) in per_order(&receiver.delivered()) {
        assert_eq!(versions, vec![1, 2, 3, 4], "order {order}");
    }
    // The event's shape: id, type, timestamp, data with the moves.
    let shipped = got
        .iter()
        .find(|g| g.body["data"]["version"] == 4 && g.answered == Answer::Ok)
        .unwrap();
    let b4 = &shipped.body;
    assert_eq!(b4["type"], "item.state_changed", "{b4}");
    assert_eq!(b4["data"]["event"], "ship", "{b4}");
    assert_eq!(b4["data"]["source"], "api", "{b4}");
    assert_eq!(b4["data"]["moved"][0]["from"], "paid", "{b4}");
    assert_eq!(b4["data"]["moved"][0]["to"], "shipped", "{b4}");
    let order_id = b4["data"]["order_id"].as_i64().unwrap();
    assert_eq!(b4["id"], format!("evt_{order_id}_4"));
    assert_eq!(
        shipped.id,
        format!("evt_{order_id}_4"),
        "webhook-id is the event id"
    );
    let types: Vec<&str> = got
        .iter()
        .filter(|g| g.body["data"]["order_id"] == order_id && g.answered == Answer::Ok)
        .map(|g| g.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "order.created",
            "order.updated",
            "item.state_changed",
            "item.state_changed"
        ]
    );
    // Each event id always came with the same bytes.
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &got {
        let first = bodies.entry(&g.id).or_insert(&g.raw);
        assert_eq!(*first, g.raw, "event {} came with another payload", g.id);
    }
    // The admin API lists the attempts, failures with their status or error.
    let (_, list) = s.get("/v1/admin/subscriptions", &s.admin).await;
    let sub = &list["subscriptions"][0];
    assert_eq!(sub["secret"], "whsec_***", "{sub}");
    assert_eq!(sub["enabled"], true);
    let id = sub["id"].as_i64().unwrap();
    // The receiver answers before orderflow records the answer: wait for the records.
    let page = eventually(WITHIN, "12 deliveries recorded as delivered", || async {
        let (st, page) = s
            .get(
                &format!("/v1/admin/subscriptions/{id}/deliveries?limit=500"),
                &s.admin,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let done = page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "delivered")
            .count();
        (done == 12).then_some(page)
    })
    .await;
    let deliveries = page["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 12, "{page}");
    let v2 = deliveries.iter().find(|d| d["version"] == 2).unwrap();
    let log = v2["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{v2}");
    assert!(log[0]["status_code"].is_null(), "{v2}");
    assert!(
        log[0]["error"].as_str().unwrap().contains("timed out"),
        "{v2}"
    );
    assert_eq!(log[1]["status_code"], 200, "{v2}");
    let v4 = deliveries.iter().find(|d| d["version"] == 4).unwrap();
    let log = v4["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["status_code"], 500, "{v4}");
    assert_eq!(
        log[0]["response_excerpt"], "receiver told to fail this one",
        "{v4}"
    );
    // Metrics are per process, shared with the tests running beside this one: at least;
    // and counted just after the record commits.
    let metrics = eventually(WITHIN, "the deliveries counted", || async {
        let m = s.text("/metrics").await;
        let name = "orderflow_subscription_deliveries_total{outcome=\"delivered\"}";
        (metric(&m, name) >= 12.0).then_some(m)
    })
    .await;
    assert!(metrics.contains("orderflow_subscription_attempt_duration_seconds"));
    s.stop().await;
}

async fn a_failing_subscription_is_disabled(b: Backend) {
    let Some(s) = start(b, |c| {
        c.subscriptions.disable_after_failures = 3;
        c.subscriptions.disable_after = Duration::ZERO;
    })
    .await
    else {
        return;
    };
    let failing = Receiver::start().await;
    failing.script(|_, _| Answer::Status(503));
    let healthy = Receiver::start().await;
    let bad = subscribe(&s, &failing, None).await;
    subscribe(&s, &healthy, None).await;
    let order = s.create_order("SUB-DIS-1", &[("SKU-1", 1)]).await;
    let sub = eventually(WITHIN, "the failing subscription disabled", || async {
        let (_, sub) = s
            .get(&format!("/v1/admin/subscriptions/{bad}"), &s.admin)
            .await;
        (sub["enabled"] == false).then_some(sub)
    })
    .await;
    assert!(
        sub["disabled_reason"]
            .as_str()
            .unwrap()
            .starts_with("failing: 3 failed attempts in a row"),
        "{sub}"
    );
    assert_eq!(sub["backlog"], 1, "the delivery waits: {sub}");
    assert_eq!(failing.got().len(), 3);
    // Nothing more is sent to it, while the healthy subscription goes on.
    let id = order["id"].as_i64().unwrap();
    let (st, _) = s
        .post(
            &format!("/v1/orders/{id}/events"),
            &s.shop,
            json!({"event": "pay"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    eventually(WITHIN, "the healthy receiver got both events", || async {
        (healthy.delivered().len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        failing.got().len(),
        3,
        "a disabled subscription is not called"
    );
    eventually(WITHIN, "the disabling counted", || async {
        let m = s.text("/metrics").await;
        (metric(&m, "orderflow_subscriptions_disabled_total") >= 1.0).then_some(())
    })
    .await;
    // Enabled again, with a receiver that answers: what waited is delivered.
    failing.script(|_, _| Answer::Ok);
    let (st, sub) = s
        .patch(
            &format!("/v1/admin/subscriptions/{bad}"),
            &s.admin,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{sub}");
    assert_eq!(sub["failures"], 0, "{sub}");
    eventually(WITHIN, "the waiting events delivered", || async {
        (failing.delivered().len() == 2).then_some(())
    })
    .await;
    let versions: Vec<i64> = failing
        .delivered()
        .iter()
        .map(|g| g.body["data"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    s.stop().await;
}

async fn replay_resends_what_was_asked_and_nothing_else(b: Backend) {
    let Some(s) = start(b, |_| {}).await else {
        return;
    };
    let receiver = Receiver::start().await;
    // Before the subscription: order A, then (after `since`) order B.
    let a = s.create_order("SUB-REP-A", &[("SKU-1", 1)]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let bo = s.create_order("SUB-REP-B", &[("SKU-1", 1)]).await;
    let id = subscribe(&s, &receiver, Some(json!(["order.created"]))).await;
    // After it: order C (created, then an attribute change it does not take).
    let c = order_with_four_changes(&s, "SUB-REP-C").await;
    eventually(WITHIN, "C's creation delivered", || async {
        (receiver.delivered().len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refs = |got: Vec<crate::support::webhook_receiver::Got>| -> Vec<String> {
        let mut r: Vec<String> = got
            .iter()
            .map(|g| g.body["data"]["reference"].as_str().unwrap().to_owned())
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        refs(receiver.delivered()),
        ["SUB-REP-C"],
        "a new subscription starts now"
    );
    // A replay takes the changes the subscription has passed: wait until it has read C's
    // three later changes too (they deliver nothing, so no delivery says when).
    eventually(WITHIN, "the subscription past C's changes", || async {
        let n = s.store.replay_count(id, since).await.expect("count");
        (n == 5).then_some(())
    })
    .await;
    let first_c = receiver.delivered()[0].raw.clone();
    let (st, report) = s
        .post(
            &format!("/v1/admin/subscriptions/{id}/replay"),
            &s.admin,
            json!({"since": since}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{report}");
    // B's creation and C's four changes are since then; only the creations are taken.
    assert_eq!(
        report,
        json!({"changes": 5, "queued": 2, "dead_updates": 0})
    );
    eventually(WITHIN, "the replay delivered", || async {
        (receiver.delivered().len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        refs(receiver.delivered()),
        ["SUB-REP-B", "SUB-REP-C", "SUB-REP-C"]
    );
    let again: Vec<String> = receiver
        .delivered()
        .iter()
        .filter(|g| g.body["data"]["reference"] == "SUB-REP-C")
        .map(|g| g.raw.clone())
        .collect();
    assert_eq!(
        again,
        [first_c.clone(), first_c],
        "a replay sends the same event"
    );
    assert!(receiver.got().iter().all(|g| g.signature_ok));
    let _ = (a, bo, c);
    s.stop().await;
}

async fn retry_of_one_delivery_and_retry_after(b: Backend) {
    let Some(s) = start(b, |c| {
        // Two attempts only: the second 400 makes it dead.
        c.subscriptions.retry_schedule = vec![Duration::ZERO, Duration::ZERO];
    })
    .await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(|_, before| match before {
        0 => Answer::TooMany(1),
        _ => Answer::Status(400),
    });
    let id = subscribe(&s, &receiver, None).await;
    s.create_order("SUB-RETRY-1", &[("SKU-1", 1)]).await;
    let path = format!("/v1/admin/subscriptions/{id}/deliveries");
    let dead = eventually(WITHIN, "the delivery dead", || async {
        let (_, page) = s.get(&format!("{path}?status=dead"), &s.admin).await;
        page["deliveries"]
            .as_array()
            .and_then(|d| d.first().cloned())
    })
    .await;
    let log = dead["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{dead}");
    assert_eq!(log[0]["status_code"], 429);
    assert_eq!(log[1]["status_code"], 400);
    // Retry-After: 1 held the second attempt back for at least a second, although the
    // schedule said at once.
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let gap = at(&log[1]["at"]) - at(&log[0]["at"]);
    assert!(gap >= chrono::TimeDelta::milliseconds(1000), "{dead}");
    receiver.script(|_, _| Answer::Ok);
    let delivery = dead["id"].as_i64().unwrap();
    let (st, retried) = s
        .post(&format!("{path}/{delivery}/retry"), &s.admin, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "pending");
    let delivered = eventually(WITHIN, "the retried delivery delivered", || async {
        let (_, page) = s.get(&format!("{path}?status=delivered"), &s.admin).await;
        page["deliveries"]
            .as_array()
            .and_then(|d| d.first().cloned())
    })
    .await;
    assert_eq!(delivered["attempt_log"].as_array().unwrap().len(), 3);
    assert_eq!(receiver.delivered().len(), 1);
    let (st, e) = s
        .post(&format!("{path}/999999/retry"), &s.admin, json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{e}");
    s.stop().await;
}

async fn admin_api_rules(b: Backend) {
    let Some(s) = start(b, |_| {}).await else {
        return;
    };
    let base = "/v1/admin/subscriptions";
    for (body, path) in [
        (json!({"url": "ftp://example.com/x"}), "$.url"),
        (json!({"url": "http://user:pw@example.com/x"}), "$.url"),
        (json!({"url": "not a url"}), "$.url"),
        (
            json!({"url": "http://example.com/", "events": ["order.exploded"]}),
            "$.events[0]",
        ),
        (json!({"url": "http://example.com/", "secret": "x"}), "$"),
    ] {
        let (st, e) = s.post(base, &s.admin, body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["code"], "invalid_request", "{e}");
        assert!(
            e["error"]["path"].as_str().unwrap().starts_with(path),
            "{body}: {e}"
        );
    }
    let (st, _) = s
        .post(base, &s.shop, json!({"url": "http://example.com/"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, created) = s
        .post(
            base,
            &s.admin,
            json!({"url": "http://example.com/hook", "events": ["item.state_changed"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["events"], json!(["item.state_changed"]));
    let (_, one) = s.get(&format!("{base}/{id}"), &s.admin).await;
    assert_eq!(one["secret"], "whsec_***", "{one}");
    assert!(one.get("signing_secret").is_none(), "{one}");
    let (st, off) = s
        .patch(&format!("{base}/{id}"), &s.admin, json!({"enabled": false}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(off["disabled_reason"], "disabled by an operator", "{off}");
    let (st, _) = s
        .call(Method::DELETE, &format!("{base}/{id}"), &s.admin, None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, e) = s.get(&format!("{base}/{id}"), &s.admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{e}");
    let (st, e) = s
        .call(Method::DELETE, &format!("{base}/{id}"), &s.admin, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{e}");
    s.stop().await;
}

/// The receiver's own HMAC agrees with the Standard Webhooks reference vectors, so the
/// tests above check orderflow against the standard, not against itself.
#[test]
fn the_receivers_verifier_passes_the_reference_vectors() {
    use base64::Engine as _;
    let Some(dir) = crate::corpus::corpus_dir() else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("standard-webhooks/signatures.json")).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(!vectors.is_empty());
    for v in &vectors {
        let secret = v["secret"].as_str().unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap();
        let ts = v["timestamp"].as_i64().unwrap().to_string();
        let (id, payload, sig) = (
            v["id"].as_str().unwrap(),
            v["payload"].as_str().unwrap(),
            v["signature"].as_str().unwrap(),
        );
        assert!(
            signature_matches(&key, id, &ts, payload.as_bytes(), sig),
            "{v}"
        );
        assert!(!signature_matches(&key, id, &ts, b"{}", sig), "{v}");
        // And orderflow signs the same way.
        let ours = orderflow::webhook::SigningSecret::parse(secret)
            .unwrap()
            .sign(id, v["timestamp"].as_i64().unwrap(), payload.as_bytes());
        assert!(sig.split(' ').any(|s| s == ours), "{v}");
    }
}

/// A second instance's delivery loop on the same database (its own connections): the
/// work is shared, yet every event is sent once (the receiver answers at once, no lease
/// runs out) and each order's events in version order.
async fn two_instances_never_send_one_delivery_twice(b: Backend) {
    let Some(s) = start(b, |c| c.subscriptions.concurrency = 4).await else {
        return;
    };
    let receiver = Receiver::start().await;
    subscribe(&s, &receiver, None).await;
    let store = orderflow::store::Store::open(&s.database_url)
        .await
        .unwrap();
    let other = orderflow::domain::OrderService::new(store.clone(), s.service.processes().clone());
    let mut config = orderflow::config::SubscriptionsConfig {
        concurrency: 4,
        ..Default::default()
    };
    config.poll_interval = Duration::from_millis(20);
    let deliverer = orderflow::subscriptions::worker::Deliverer::new(
        store.clone(),
        &config,
        &orderflow::config::OutboundConfig::default(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let second = tokio::spawn(deliverer.run(other, stop.clone()));
    let mut orders = Vec::new();
    for n in 0..8 {
        orders.push(order_with_four_changes(&s, &format!("SUB-TWO-{n}")).await);
    }
    eventually(WITHIN, "every event delivered", || async {
        (receiver.delivered().len() >= 32).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    second.await.unwrap();
    let got = receiver.got();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_order: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for g in &got {
        *seen.entry(g.id.clone()).or_default() += 1;
        per_order
            .entry(g.body["data"]["order_id"].as_i64().unwrap())
            .or_default()
            .push(g.body["data"]["version"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 32);
    assert!(seen.values().all(|&n| n == 1), "sent twice: {seen:?}");
    for (order, versions) in per_order {
        assert_eq!(versions, [1, 2, 3, 4], "order {order}");
    }
    store.close().await;
    s.stop().await;
}

/// `orderflow subscriptions ...` against the store: create (the secret once), list (masked),
/// disable, enable, deliveries, replay with a progress bar, delete, and the errors.
async fn cli_manages_subscriptions(b: Backend) {
    let Some((url, _db)) = crate::support::database(b).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("subscriptions")
            .args(args)
            .args(["--database-url", &url])
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "create",
        "http://127.0.0.1:9/hook",
        "--events",
        "order.created,order.updated",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("created subscription 1"), "{out}");
    let secret_line = out
        .lines()
        .find(|l| l.starts_with("signing secret: whsec_"))
        .unwrap();
    let secret = secret_line.trim_start_matches("signing secret: ");
    let (ok, out, err) = run(&["list", "--json"]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["events"], json!(["order.created", "order.updated"]));
    assert_eq!(list[0]["secret"], "whsec_***");
    assert!(!out.contains(secret), "the secret is shown once");
    let (ok, out, _) = run(&["disable", "1"]);
    assert!(
        ok && out.contains("disabled (disabled by an operator)"),
        "{out}"
    );
    let (ok, out, _) = run(&["enable", "1"]);
    assert!(ok && out.contains("enabled"), "{out}");
    let (ok, out, err) = run(&["replay", "1", "--since", "2h"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("0 changes, 0 dead updates, 0 deliveries queued"),
        "{out}"
    );
    let (ok, out, _) = run(&["deliveries", "1"]);
    assert!(ok && out.contains("no deliveries"), "{out}");
    for (args, says) in [
        (vec!["create", "ftp://x/"], "http or https"),
        (
            vec!["create", "http://x/", "--events", "order.gone"],
            "unknown event type",
        ),
        (vec!["disable", "7"], "no subscription 7"),
        (
            vec!["replay", "1", "--since", "yesterday"],
            "neither an RFC 3339 instant",
        ),
        (vec!["retry", "1", "5"], "subscription 1 has no delivery 5"),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (ok, out, _) = run(&["delete", "1"]);
    assert!(ok && out.contains("deleted subscription 1"), "{out}");
    let (ok, out, _) = run(&["list"]);
    assert!(ok && out.contains("no subscriptions"), "{out}");
}
