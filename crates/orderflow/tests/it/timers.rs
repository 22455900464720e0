//! The check-condition worker, driven by the test with an injected clock: timeouts,
//! event-less transitions, backoff, concurrent passes and the due query's plan.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, start_with};

backend_tests!(
    timeout_moves_the_item_when_due,
    eventless_transition_moves_once_its_condition_holds,
    woken_condition_timers_are_checked_at_once,
    concurrent_passes_move_each_item_once,
    due_query_reads_the_due_index_only
);

/// A server whose own check-condition loop stays out of the way: its first pass would run
/// after an hour, so only the test's passes (with the test's clock) move anything.
async fn server(b: Backend) -> Option<TestServer> {
    start_with(b, |c| c.worker.poll_interval = Duration::from_secs(3600)).await
}

/// Creates a Timeout01 order with `items` items and triggers `event` (`wait` or `review`)
/// on all of them; returns the order id and the item ids.
async fn order(s: &TestServer, reference: &str, items: usize, event: &str) -> (i64, Vec<i64>) {
    let items: Vec<Value> = (0..items)
        .map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1}))
        .collect();
    let body = json!({"reference": reference, "process": "Timeout01", "items": items});
    let (status, o) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let id = o["id"].as_i64().unwrap();
    let path = format!("/v1/orders/{id}/events");
    let (status, r) = s.post(&path, &s.shop, json!({"event": event})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let ids = r["order"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    (id, ids)
}

/// The order's version and its items' states.
async fn states(s: &TestServer, id: i64) -> (i64, Vec<String>) {
    let (status, o) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    let states = o["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap().to_owned())
        .collect();
    (o["version"].as_i64().unwrap(), states)
}

/// History rows of the order with the given source, as (item, from, to, event).
async fn history(s: &TestServer, id: i64, source: &str) -> Vec<(i64, Value, Value, Value)> {
    let (status, h) = s.get(&format!("/v1/orders/{id}/history"), &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == source)
        .map(|e| {
            let item = e["item"].as_i64().unwrap();
            (item, e["from"].clone(), e["to"].clone(), e["event"].clone())
        })
        .collect()
}

fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

async fn pass(s: &TestServer, now: DateTime<Utc>) -> orderflow::domain::CheckPass {
    s.service.check_due(now, 100).await.expect("pass")
}

async fn timeout_moves_the_item_when_due(b: Backend) {
    let Some(s) = server(b).await else { return };
    let (id, items) = order(&s, "TO-1", 2, "wait").await;
    // The timeout counts from the event, which is over when its response arrived.
    let entered = Utc::now();
    let (version, before) = states(&s, id).await;
    assert_eq!(before, ["waiting", "waiting"]);

    let p = pass(&s, entered + days(13)).await;
    assert_eq!((p.orders, p.timers_fired, p.items_moved), (0, 0, 0));
    assert_eq!(states(&s, id).await, (version, before));

    let p = pass(&s, entered + days(14) + secs(1)).await;
    assert_eq!(
        (p.orders, p.timers_fired, p.items_moved, p.rescheduled),
        (1, 2, 2, 0)
    );
    let (after, now) = states(&s, id).await;
    assert_eq!(now, ["expired", "expired"]);
    assert_eq!(after, version + 1, "one change, one new version");
    let expected: Vec<_> = items
        .iter()
        .map(|&i| (i, json!("waiting"), json!("expired"), json!("expire")))
        .collect();
    assert_eq!(history(&s, id, "timeout").await, expected);

    // The move dropped the timers: nothing is left to fire, even much later.
    let p = pass(&s, entered + days(400)).await;
    assert_eq!((p.orders, p.timers_fired), (0, 0));
    s.stop().await;
}

async fn eventless_transition_moves_once_its_condition_holds(b: Backend) {
    let Some(s) = server(b).await else { return };
    let (id, items) = order(&s, "EL-1", 1, "review").await;
    // Entering `review` set a condition timer due at once.
    let t0 = Utc::now();
    let (version, _) = states(&s, id).await;

    // `approved` is not set: checked, nothing moves, backed off by 1 s.
    let p = pass(&s, t0).await;
    assert_eq!(
        (p.orders, p.timers_fired, p.items_moved, p.rescheduled),
        (1, 1, 0, 1)
    );
    assert_eq!(states(&s, id).await, (version, vec!["review".to_owned()]));
    // Not fired again on the next pass.
    assert_eq!(pass(&s, t0).await.timers_fired, 0);
    // Due again after 1 s; still false, so the delay doubles to 2 s.
    assert_eq!(pass(&s, t0 + secs(1)).await.rescheduled, 1);
    assert_eq!(pass(&s, t0 + secs(2)).await.timers_fired, 0);

    let (status, r) = s
        .patch(
            &format!("/v1/orders/{id}"),
            &s.shop,
            json!({"version": version, "attributes": {"approved": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");

    let p = pass(&s, t0 + secs(3)).await;
    assert_eq!((p.timers_fired, p.items_moved, p.rescheduled), (1, 1, 0));
    let (after, now) = states(&s, id).await;
    assert_eq!(now, ["approved"]);
    assert_eq!(after, version + 2, "the patch and the move");
    assert_eq!(
        history(&s, id, "condition").await,
        vec![(items[0], json!("review"), json!("approved"), Value::Null)]
    );
    s.stop().await;
}

async fn woken_condition_timers_are_checked_at_once(b: Backend) {
    let Some(s) = server(b).await else { return };
    // Three orders waiting on a condition; one statement wakes the first two (a batch's
    // patched orders), the third stays on its backoff.
    let mut ids = Vec::new();
    for reference in ["EL-2", "EL-3", "EL-4"] {
        ids.push(order(&s, reference, 1, "review").await.0);
    }
    // Microseconds, as stored: a wake-up at `t0` is due at `t0`.
    let t0 = orderflow::store::now();
    assert_eq!(pass(&s, t0).await.rescheduled, 3);
    for &id in &ids {
        let (version, _) = states(&s, id).await;
        let body = json!({"version": version, "attributes": {"approved": true}});
        let (status, r) = s.patch(&format!("/v1/orders/{id}"), &s.shop, body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
    }

    let mut tx = s.service.store().begin().await.unwrap();
    tx.wake_condition_timers(&ids[..2], t0).await.unwrap();
    tx.wake_condition_timers(&[], t0).await.unwrap();
    tx.commit().await.unwrap();
    let p = pass(&s, t0).await;
    assert_eq!((p.timers_fired, p.items_moved), (2, 2));
    assert_eq!(states(&s, ids[0]).await.1, ["approved"]);
    assert_eq!(states(&s, ids[1]).await.1, ["approved"]);
    assert_eq!(states(&s, ids[2]).await.1, ["review"]);
    s.stop().await;
}

async fn concurrent_passes_move_each_item_once(b: Backend) {
    let Some(s) = server(b).await else { return };
    let mut orders = Vec::new();
    for n in 0..12 {
        orders.push(order(&s, &format!("CC-{n}"), 3, "wait").await);
    }
    let at = Utc::now() + days(14) + secs(1);
    // Small batches so the two walks interleave over many orders.
    let passes: Vec<_> = (0..2)
        .map(|_| {
            let service = s.service.clone();
            tokio::spawn(async move { service.check_due(at, 5).await })
        })
        .collect();
    let mut total = orderflow::domain::CheckPass::default();
    for p in passes {
        total += &p.await.unwrap().expect("pass");
    }
    assert_eq!(
        (total.orders, total.timers_fired, total.items_moved),
        (12, 36, 36),
        "{total:?}"
    );
    for (id, items) in &orders {
        let mut moved: Vec<i64> = history(&s, *id, "timeout")
            .await
            .into_iter()
            .map(|(item, ..)| item)
            .collect();
        moved.sort_unstable();
        assert_eq!(&moved, items, "one timeout move per item of order {id}");
        assert_eq!(
            states(&s, *id).await.0,
            3,
            "created, wait, one timeout change"
        );
    }
    assert_eq!(pass(&s, at).await.timers_fired, 0);
    s.stop().await;
}

async fn due_query_reads_the_due_index_only(b: Backend) {
    let Some(s) = server(b).await else { return };
    let (id, items) = order(&s, "IX-1", 1, "wait").await;
    if let Some(pool) = s.service.store().postgres_pool() {
        // Enough waiting timers that PostgreSQL's planner prefers the index on its own.
        sqlx::query(
            "INSERT INTO timers (order_id, item_id, state, kind, event, due_at) \
             SELECT $1, $2, 'waiting', 'timeout', 'expire', now() + g * interval '1 minute' \
             FROM generate_series(1, 20000) g",
        )
        .bind(id)
        .bind(items[0])
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE timers").execute(pool).await.unwrap();
    }
    let plan = s
        .service
        .store()
        .explain_due_timers(Utc::now())
        .await
        .unwrap();
    let text = plan.join("\n");
    assert!(text.contains("timers_due"), "{text}");
    let full_scan = match b {
        Backend::Sqlite => plan.iter().any(|l| l.starts_with("SCAN")),
        Backend::Postgres | Backend::RabbitPostgres | Backend::RedisPostgres => {
            text.contains("Seq Scan")
        }
    };
    assert!(!full_scan, "{text}");
    s.stop().await;
}
