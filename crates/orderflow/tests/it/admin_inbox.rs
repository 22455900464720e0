//! The admin inbox endpoints: list and filter, show, retry, replay (dry run and real),
//! stats, the inbox metrics, and that only admins may use them.

use std::time::Duration;

use orderflow::config::{ErpMode, EventConfig, EventPolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, eventually, start_with};

backend_tests!(
    admin_lists_filters_and_counts,
    replay_dry_run_then_for_real,
    admin_endpoints_are_admin_only
);

/// A server that processes ERP updates inline (wait mode), rejects `ship` and ignores
/// `export` when they do not apply, and retries parked updates only after an hour, so
/// statuses hold still while the test looks at them.
async fn start(b: Backend) -> Option<TestServer> {
    start_with(b, |c| {
        c.erp.default_mode = ErpMode::Wait;
        c.worker.backoff_base = Duration::from_secs(3600);
        c.worker.backoff_max = Duration::from_secs(7200);
        for (event, policy) in [
            ("ship", EventPolicy::Reject),
            ("export", EventPolicy::Ignore),
        ] {
            c.events.insert(
                event.into(),
                EventConfig {
                    policy,
                    park_ttl: Duration::from_secs(72 * 3600),
                },
            );
        }
    })
    .await
}

/// Sends an update in wait mode; returns its id.
async fn update(s: &TestServer, reference: &str, event: &str, want: StatusCode) -> String {
    let body = json!({"order_reference": reference, "event": event});
    let (status, body) = s.post("/v1/erp/order-updates", &s.erp, body).await;
    assert_eq!(status, want, "{event} on {reference}: {body}");
    let id = body["id"].as_str().or(body["error"]["update_id"].as_str());
    id.unwrap_or_else(|| panic!("no id in {body}")).to_owned()
}

/// One update of each outcome: on DE--1 (waiting) `ship` is rejected, `export` ignored,
/// `pay` applied; `pay` for an order that does not exist is parked.
async fn one_of_each(s: &TestServer) -> [String; 4] {
    s.create_order("DE--1", &[("SKU-A", 1)]).await;
    let rejected = update(s, "DE--1", "ship", StatusCode::CONFLICT).await;
    let ignored = update(s, "DE--1", "export", StatusCode::OK).await;
    let applied = update(s, "DE--1", "pay", StatusCode::OK).await;
    let parked = update(s, "DE--404", "pay", StatusCode::NOT_FOUND).await;
    [rejected, ignored, applied, parked]
}

fn ids(page: &Value) -> Vec<&str> {
    page["updates"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect()
}

async fn admin_lists_filters_and_counts(b: Backend) {
    let Some(s) = start(b).await else { return };
    let [rejected, ignored, applied, parked] = one_of_each(&s).await;

    let (status, page) = s.get("/v1/admin/inbox", &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), [&rejected, &ignored, &applied, &parked]);
    assert!(page["next_cursor"].is_null(), "{page}");
    let first = &page["updates"][0];
    assert_eq!(first["status"], "rejected", "{first}");
    assert_eq!(first["client"], "erp", "{first}");
    assert_eq!(first["payload"]["event"], "ship", "{first}");
    assert_eq!(
        first["errors"][0]["code"], "event_not_applicable",
        "{first}"
    );

    for (query, want) in [
        ("status=parked", vec![&parked]),
        ("status=applied", vec![&applied]),
        ("order_reference=DE--1", vec![&rejected, &ignored, &applied]),
        ("event=pay", vec![&applied, &parked]),
        ("event=pay&status=parked", vec![&parked]),
        ("status=dead", vec![]),
        (
            "received_after=2000-01-01T00:00:00Z&received_before=2001-01-01T00:00:00Z",
            vec![],
        ),
    ] {
        let (status, page) = s.get(&format!("/v1/admin/inbox?{query}"), &s.admin).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(ids(&page), want, "{query}");
    }

    // Pages of two, by cursor.
    let (_, one) = s.get("/v1/admin/inbox?limit=2", &s.admin).await;
    assert_eq!(ids(&one), [&rejected, &ignored]);
    let cursor = one["next_cursor"].as_str().expect("a next page");
    let (_, two) = s
        .get(
            &format!("/v1/admin/inbox?limit=2&cursor={cursor}"),
            &s.admin,
        )
        .await;
    assert_eq!(ids(&two), [&applied, &parked]);
    assert!(two["next_cursor"].is_null(), "{two}");

    for bad in ["status=lost", "limit=0", "cursor=zzz", "colour=red"] {
        let (status, body) = s.get(&format!("/v1/admin/inbox?{bad}"), &s.admin).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }

    let (status, detail) = s.get(&format!("/v1/admin/inbox/{parked}"), &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["status"], "parked", "{detail}");
    assert_eq!(detail["errors"][0]["code"], "order_not_found", "{detail}");
    assert!(detail["park_until"].is_string(), "{detail}");
    let (status, _) = s.get("/v1/admin/inbox/nope", &s.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, stats) = s.get("/v1/admin/stats", &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats["inbox"],
        json!({"accepted": 0, "processing": 0, "applied": 1, "parked": 1, "ignored": 1,
               "rejected": 1, "dead": 0}),
        "{stats}"
    );
    // The parked update is pending since it was received.
    let age = stats["oldest_pending_age_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "{stats}");
    assert!(
        stats["projection"]["pending_changes"].as_i64().is_some(),
        "{stats}"
    );

    // Retrying the parked update makes it due now; it parks again (still no order).
    let (status, body) = s
        .post(
            &format!("/v1/admin/inbox/{parked}/retry"),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(Duration::from_secs(10), "parked again", || async {
        let (_, d) = s.get(&format!("/v1/admin/inbox/{parked}"), &s.admin).await;
        (d["status"] == "parked" && d["attempts"] == 2).then_some(())
    })
    .await;
    // Applied updates and updates still waiting for the worker are not retried.
    let (status, body) = s
        .post(
            &format!("/v1/admin/inbox/{applied}/retry"),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_retryable", "{body}");
    assert_eq!(body["error"]["status"], "applied", "{body}");

    // The gauges and counters behind /metrics.
    let metrics = s.text("/metrics").await;
    for line in [
        "orderflow_inbox_updates{status=\"applied\"}",
        "orderflow_inbox_updates{status=\"dead\"}",
        "orderflow_inbox_oldest_pending_age_seconds",
        "orderflow_inbox_attempts_total",
        "orderflow_inbox_group_commit_size_count",
        "orderflow_inbox_group_commit_seconds_count",
        "orderflow_transitions_total{process=\"Test01\",event=\"pay\"}",
        "orderflow_transitions_total{process=\"Test01\",event=\"start\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    s.stop().await;
}

async fn replay_dry_run_then_for_real(b: Backend) {
    let Some(s) = start(b).await else { return };
    let [rejected, ignored, applied, parked] = one_of_each(&s).await;
    let replay = |body: Value| s.post("/v1/admin/inbox/replay", &s.admin, body);

    let (status, report) = replay(json!({"order_reference": "DE--1", "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"matched": 3, "retried": 2, "dry_run": true}),
        "rejected and ignored would be retried, applied not"
    );
    let (_, page) = s.get("/v1/admin/inbox?status=rejected", &s.admin).await;
    assert_eq!(ids(&page), [&rejected], "a dry run changes nothing");

    let (status, report) = replay(json!({"status": "applied"})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"matched": 1, "retried": 0, "dry_run": false})
    );

    let (status, report) = replay(json!({"order_reference": "DE--1"})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"matched": 3, "retried": 2, "dry_run": false})
    );
    // Both are processed again, in receive order. DE--1 is paid now: `ship` applies this
    // time; then `export` finds the item shipped and is ignored again.
    for (id, want) in [(&rejected, "applied"), (&ignored, "ignored")] {
        eventually(
            Duration::from_secs(10),
            "replayed update processed",
            || async {
                let (_, d) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
                (d["status"] == want && d["attempts"] == 2).then_some(())
            },
        )
        .await;
    }
    let (_, detail) = s
        .get(&format!("/v1/admin/inbox/{rejected}"), &s.admin)
        .await;
    let codes: Vec<&str> = detail["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["event_not_applicable", "operator_retry"],
        "{detail}"
    );
    let (_, parked_now) = s.get(&format!("/v1/admin/inbox/{parked}"), &s.admin).await;
    assert_eq!(
        parked_now["attempts"], 1,
        "another order's update is untouched"
    );

    for bad in [
        json!({}),
        json!({"dry_run": true}),
        json!({"status": "lost"}),
        json!({"colour": 1}),
    ] {
        let (status, body) = replay(bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let _ = applied;
    s.stop().await;
}

async fn admin_endpoints_are_admin_only(b: Backend) {
    let Some(s) = start(b).await else { return };
    let id = update(&s, "DE--404", "pay", StatusCode::NOT_FOUND).await;
    for token in [&s.shop, &s.erp] {
        for path in [
            "/v1/admin/inbox".to_owned(),
            format!("/v1/admin/inbox/{id}"),
            "/v1/admin/stats".into(),
        ] {
            let (status, body) = s.get(&path, token).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
        }
        for path in [
            format!("/v1/admin/inbox/{id}/retry"),
            "/v1/admin/inbox/replay".into(),
        ] {
            let (status, body) = s.post(&path, token, json!({"status": "parked"})).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        }
    }
    let (status, _) = s.get("/v1/admin/stats", "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing was retried by the refused calls.
    let (_, detail) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
    assert_eq!(detail["status"], "parked", "{detail}");
    assert_eq!(detail["errors"].as_array().unwrap().len(), 1, "{detail}");
    s.stop().await;
}
