//! `timeoutProcessor` and configured initial states in the service, with the
//! check-condition pass driven by the test's clock (Deadline01: `draft -submit-> open
//! -cancel (14days, Test/PaymentDeadline)-> cancelled`).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, start_with};

backend_tests!(
    a_bound_processor_schedules_from_the_attribute,
    an_unbound_processor_leaves_the_plain_timeout,
    a_configured_initial_state_is_where_items_start
);

/// The order attribute Test/PaymentDeadline reads, and its due time (+ 1 hour).
const PAYMENT_DUE: &str = "2031-05-04T10:00:00Z";

fn payment_due() -> DateTime<Utc> {
    PAYMENT_DUE.parse::<DateTime<Utc>>().unwrap() + TimeDelta::hours(1)
}

/// A server whose own check-condition loop stays out of the way (first pass after an hour).
async fn server(b: Backend, bind: bool, initial: Option<&str>) -> Option<TestServer> {
    start_with(b, |c| {
        c.worker.poll_interval = Duration::from_secs(3600);
        if bind {
            let binding = json!({"type": "attribute", "scope": "order",
                "path": "payment_due", "offset": "1 hour"});
            c.timeout_processors.insert(
                "Test/PaymentDeadline".into(),
                serde_json::from_value(binding).unwrap(),
            );
        }
        if let Some(state) = initial {
            c.initial_states.insert("Deadline01".into(), state.into());
        }
    })
    .await
}

/// Creates a Deadline01 order; returns its id and its items' states.
async fn create(s: &TestServer, reference: &str) -> (i64, Vec<String>) {
    let body = json!({"reference": reference, "process": "Deadline01",
        "attributes": {"payment_due": PAYMENT_DUE},
        "items": [{"sku": "A", "quantity": 1}]});
    let (status, o) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    (o["id"].as_i64().unwrap(), item_states(&o))
}

fn item_states(o: &Value) -> Vec<String> {
    o["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap().to_owned())
        .collect()
}

async fn states(s: &TestServer, id: i64) -> Vec<String> {
    let (status, o) = s.get(&format!("/v1/orders/{id}"), &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    item_states(&o)
}

async fn submit(s: &TestServer, id: i64) {
    let path = format!("/v1/orders/{id}/events");
    let (status, r) = s.post(&path, &s.shop, json!({"event": "submit"})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
}

/// Timers fired and items moved by one pass at `now`.
async fn pass(s: &TestServer, now: DateTime<Utc>) -> (u64, u64) {
    let p = s.service.check_due(now, 100).await.expect("pass");
    (p.timers_fired as u64, p.items_moved as u64)
}

async fn a_bound_processor_schedules_from_the_attribute(b: Backend) {
    let Some(s) = server(b, true, None).await else {
        return;
    };
    let (id, start) = create(&s, "TP-1").await;
    assert_eq!(start, ["draft"], "the only state no transition enters");
    submit(&s, id).await;
    // Due at payment_due + 1 hour, years after the plain 14 days would have been.
    assert_eq!(pass(&s, Utc::now() + TimeDelta::days(15)).await, (0, 0));
    assert_eq!(
        pass(&s, payment_due() - TimeDelta::seconds(1)).await,
        (0, 0)
    );
    assert_eq!(states(&s, id).await, ["open"]);
    assert_eq!(pass(&s, payment_due()).await, (1, 1));
    assert_eq!(states(&s, id).await, ["cancelled"]);
    s.stop().await;
}

async fn an_unbound_processor_leaves_the_plain_timeout(b: Backend) {
    let Some(s) = server(b, false, None).await else {
        return;
    };
    let (id, _) = create(&s, "TP-2").await;
    submit(&s, id).await;
    let entered = Utc::now();
    assert_eq!(pass(&s, entered + TimeDelta::days(13)).await, (0, 0));
    let p = pass(&s, entered + TimeDelta::days(14) + TimeDelta::seconds(1)).await;
    assert_eq!(p, (1, 1));
    assert_eq!(states(&s, id).await, ["cancelled"]);
    // Reported among the unbound names.
    let unbound = s.service.processes().unbound();
    let names: Vec<String> = unbound
        .iter()
        .filter(|(p, _)| p == "Deadline01")
        .flat_map(|(_, u)| u.iter().map(|u| format!("{} {}", u.kind, u.name)))
        .collect();
    assert_eq!(names, ["timeout processor Test/PaymentDeadline"]);
    s.stop().await;
}

async fn a_configured_initial_state_is_where_items_start(b: Backend) {
    let Some(s) = server(b, true, Some("open")).await else {
        return;
    };
    let (id, start) = create(&s, "TP-3").await;
    assert_eq!(start, ["open"]);
    // Entering the initial state scheduled its timeout with the processor's answer.
    assert_eq!(
        pass(&s, payment_due() - TimeDelta::seconds(1)).await,
        (0, 0)
    );
    assert_eq!(pass(&s, payment_due()).await, (1, 1));
    assert_eq!(states(&s, id).await, ["cancelled"]);
    s.stop().await;
}
