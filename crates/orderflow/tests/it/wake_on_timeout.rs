//! Parked updates are woken by every change of their order, also by a move of the
//! check-condition worker (a timeout): the update whose event did not apply is tried again
//! at once, not after its backoff.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start_with};

backend_tests!(timeout_move_wakes_the_parked_update_of_its_order);

async fn status(s: &TestServer, id: &str) -> Value {
    let (code, v) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    v
}

async fn until_status(s: &TestServer, id: &str, want: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("update {id} {want}"),
        || async {
            let v = status(s, id).await;
            (v["status"] == want).then_some(v)
        },
    )
    .await
}

async fn timeout_move_wakes_the_parked_update_of_its_order(b: Backend) {
    // The test drives check-condition passes with its own clock. A parked update's next
    // attempt is 30 to 60 minutes away (backoff base 1h, minus jitter), and the poll is an
    // hour: only a wake-up brings it back within the test.
    let Some(s) = start_with(b, |c| {
        c.worker.poll_interval = Duration::from_secs(3600);
        c.worker.backoff_base = Duration::from_secs(3600);
        c.worker.backoff_max = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    let body =
        json!({"reference": "H-1", "process": "Hold01", "items": [{"sku": "A", "quantity": 1}]});
    let (code, o) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let id = o["id"].as_i64().unwrap();
    let (code, r) = s
        .post(
            &format!("/v1/orders/{id}/events"),
            &s.shop,
            json!({"event": "hold"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{r}");
    let held_at: DateTime<Utc> = Utc::now();

    // `ship` does not apply to a held item: parked (held has a way out, the timeout).
    let (code, r) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "H-1", "event": "ship"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let update = r["id"].as_str().unwrap().to_owned();
    let parked = until_status(&s, &update, "parked").await;
    assert_eq!(
        parked["last_error"]["code"], "event_not_applicable",
        "{parked}"
    );
    let next: DateTime<Utc> = serde_json::from_value(parked["next_attempt_at"].clone()).unwrap();
    assert!(
        next > Utc::now() + TimeDelta::minutes(20),
        "the backoff alone would not retry it soon: {parked}"
    );

    // An hour later the timeout moves the item to `ready`, where `ship` applies.
    let pass = s
        .service
        .check_due(held_at + TimeDelta::hours(1) + TimeDelta::seconds(1), 100)
        .await
        .expect("pass");
    assert_eq!(pass.items_moved, 1, "{pass:?}");

    let applied = until_status(&s, &update, "applied").await;
    assert_eq!(applied["result"]["moved"][0]["from"], "ready", "{applied}");
    assert_eq!(applied["result"]["moved"][0]["to"], "shipped", "{applied}");
    let (_, o) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(o["items"][0]["state"], "shipped", "{o}");
    s.stop().await;
}
