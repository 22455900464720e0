//! Issue #5, "done means": an update whose command fails retryably is attempted on the
//! configured backoff schedule until `max_attempts`, then it is dead; an operator's retry
//! (admin API or `orderflow inbox retry`) brings it back and it applies.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oms::Registry;
use oms::plugin::{CommandContext, PluginError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use orderflow::config::Config;
use orderflow::inbox::model::UpdateStatus;
use orderflow::inbox::{Inbox, InboxSettings};

use crate::support::{Backend, TestServer, backend_tests, eventually, start_with_plugins};

backend_tests!(
    dead_after_max_attempts_then_admin_retry_applies,
    cli_retry_and_replay_apply_dead_updates,
    attempts_follow_the_backoff_schedule_on_a_stepped_clock
);

/// A command that fails retryably ("remote endpoint down") while `down` is set.
struct Remote {
    down: Arc<AtomicBool>,
}

impl oms::plugin::Command for Remote {
    fn run(&self, _ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        if self.down.load(Ordering::SeqCst) {
            Err(PluginError::retryable("remote endpoint down"))
        } else {
            Ok(())
        }
    }
}

const BASE_MS: i64 = 200;
const MAX_MS: i64 = 1000;
const MAX_ATTEMPTS: usize = 3;

/// A server whose `export` event (paid → exported) runs the flaky command, with a fast
/// backoff schedule.
async fn start(b: Backend, down: &Arc<AtomicBool>) -> Option<TestServer> {
    start_worker(b, down, true).await
}

/// The worker settings of these tests.
fn schedule(c: &mut Config) {
    c.worker.backoff_base = Duration::from_millis(BASE_MS as u64);
    c.worker.backoff_max = Duration::from_millis(MAX_MS as u64);
    c.worker.max_attempts = MAX_ATTEMPTS as u32;
    c.worker.poll_interval = Duration::from_millis(50);
}

/// [`start`]; without `in_process` the server runs no worker (the test steps one).
async fn start_worker(b: Backend, down: &Arc<AtomicBool>, in_process: bool) -> Option<TestServer> {
    let mut registry = Registry::new();
    // `Test/NotBound` is the command of Test01's `export` event.
    registry.register_command("Test/NotBound", Remote { down: down.clone() });
    start_with_plugins(
        b,
        |c| {
            schedule(c);
            c.worker.in_process = in_process;
        },
        registry,
    )
    .await
}

fn at(v: &Value, key: &str) -> DateTime<Utc> {
    serde_json::from_value(v[key].clone()).unwrap_or_else(|e| panic!("{key} in {v}: {e}"))
}

/// Sends `export` for a paid order while the remote is down and waits until the update is
/// dead; checks the attempts against the schedule. Returns the update id.
async fn dead_update(s: &TestServer, reference: &str) -> String {
    let order = s.create_order(reference, &[("SKU-A", 1)]).await;
    let path = format!("/v1/orders/{}/events", order["id"]);
    let (status, body) = s.post(&path, &s.shop, json!({"event": "pay"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let update = json!({"order_reference": reference, "event": "export"});
    let (status, body) = s.post("/v1/erp/order-updates", &s.erp, update).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();

    let detail = eventually(Duration::from_secs(15), "the update is dead", || async {
        let (_, d) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
        (d["status"] == "dead").then_some(d)
    })
    .await;
    assert_eq!(detail["attempts"], MAX_ATTEMPTS, "{detail}");
    let errors = detail["errors"].as_array().unwrap();
    assert_eq!(
        errors.len(),
        MAX_ATTEMPTS,
        "one error per attempt: {detail}"
    );
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], i + 1, "{e}");
        assert_eq!(e["code"], "command_failed", "{e}");
        assert_eq!(e["retryable"], true, "{e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("remote endpoint down"),
            "{e}"
        );
    }
    // Attempt n failed: the next is due after backoff(n), in [d/2, d] for
    // d = min(max, base * 2^(n-1)), and it is not tried before then.
    for n in 1..MAX_ATTEMPTS {
        let (this, next) = (&errors[n - 1], &errors[n]);
        let d = (BASE_MS << (n - 1)).min(MAX_MS);
        let planned = (at(this, "retry_at") - at(this, "at")).num_milliseconds();
        assert!(
            (d / 2..=d).contains(&planned),
            "attempt {n}: backoff {planned} ms not in [{}, {d}]",
            d / 2
        );
        let gap = (at(next, "at") - at(this, "at")).num_milliseconds();
        assert!(
            gap >= planned,
            "attempt {} came {gap} ms after attempt {n}, before its backoff of {planned} ms",
            n + 1
        );
        // That it comes when due, not later, is checked on a stepped clock (below).
    }
    assert!(errors[MAX_ATTEMPTS - 1].get("retry_at").is_none());
    // The update's public status says the same.
    let (_, view) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
    assert_eq!(view["status"], "dead", "{view}");
    assert_eq!(view["last_error"]["code"], "command_failed", "{view}");
    // Still paid: nothing was applied.
    let (_, order) = s.get(&format!("/v1/orders/{}", order["id"]), &s.shop).await;
    assert_eq!(order["items"][0]["state"], "paid", "{order}");
    id
}

/// Waits until the update is applied and the order's item is exported.
async fn applied(s: &TestServer, id: &str, reference: &str) -> Value {
    let detail = eventually(Duration::from_secs(10), "the update applies", || async {
        let (_, d) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
        (d["status"] == "applied").then_some(d)
    })
    .await;
    let (_, order) = s
        .get(&format!("/v1/orders/by-reference/{reference}"), &s.shop)
        .await;
    assert_eq!(order["items"][0]["state"], "exported", "{order}");
    detail
}

async fn dead_after_max_attempts_then_admin_retry_applies(b: Backend) {
    let down = Arc::new(AtomicBool::new(true));
    let Some(s) = start(b, &down).await else {
        return;
    };
    let id = dead_update(&s, "DE--R1").await;

    // Retrying an update that is not finished or failed is refused, naming its status.
    let (status, body) = s
        .post("/v1/admin/inbox/no-such-update/retry", &s.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Retried while the remote is still down: the retry starts a fresh set of attempts, so
    // the next failure is retried on the backoff instead of making the update dead again.
    let (status, body) = s
        .post(&format!("/v1/admin/inbox/{id}/retry"), &s.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    let detail = eventually(
        Duration::from_secs(10),
        "an attempt after the retry",
        || async {
            let (_, d) = s.get(&format!("/v1/admin/inbox/{id}"), &s.admin).await;
            (d["errors"].as_array().unwrap().len() > MAX_ATTEMPTS + 1).then_some(d)
        },
    )
    .await;
    down.store(false, Ordering::SeqCst);
    let errors = detail["errors"].as_array().unwrap();
    let marker = &errors[MAX_ATTEMPTS];
    assert_eq!(marker["code"], "operator_retry", "{marker}");
    assert_eq!(marker["from"], "dead", "{marker}");
    assert_eq!(marker["attempt"], MAX_ATTEMPTS, "{marker}");
    let failed = &errors[MAX_ATTEMPTS + 1];
    assert_eq!(failed["attempt"], MAX_ATTEMPTS + 1, "{failed}");
    assert_eq!(failed["code"], "command_failed", "{failed}");
    assert!(
        failed["retry_at"].is_string(),
        "retried, not dead: {failed}"
    );

    let detail = applied(&s, &id, "DE--R1").await;
    assert_eq!(detail["result"]["moved"][0]["to"], "exported", "{detail}");
    let (_, view) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
    assert_eq!(view["status"], "applied", "{view}");

    // Applied now: a second retry is refused.
    let (status, body) = s
        .post(&format!("/v1/admin/inbox/{id}/retry"), &s.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_retryable", "{body}");
    assert_eq!(body["error"]["status"], "applied", "{body}");
    s.stop().await;
}

fn orderflow(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDERFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run orderflow")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn cli_retry_and_replay_apply_dead_updates(b: Backend) {
    let down = Arc::new(AtomicBool::new(true));
    let Some(s) = start(b, &down).await else {
        return;
    };
    let id = dead_update(&s, "DE--R2").await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--database-url".into(), s.database_url.clone()]);
        let dir = dir.path().to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                orderflow(&dir, &args)
            })
            .await
        }
    };

    let out = run(&["inbox", "list", "--status", "dead"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = table.lines().find(|l| l.starts_with(&id)).expect(&table);
    for cell in ["dead", "DE--R2", "export", "3", "command_failed"] {
        assert!(row.split_whitespace().any(|c| c == cell), "{cell} in {row}");
    }
    let out = run(&["inbox", "show", &id]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert_eq!(shown.matches("remote endpoint down").count(), 3, "{shown}");

    // A second dead update, for replay.
    let other = dead_update(&s, "DE--R3").await;
    let out = run(&["inbox", "replay", "--status", "dead"]).await.unwrap();
    assert!(
        !out.status.success(),
        "a replay without a terminal needs --yes"
    );
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    let out = run(&["inbox", "replay", "--status", "dead", "--dry-run"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "2 updates match; 2 would be retried (dead, rejected, ignored or parked)"
    );

    down.store(false, Ordering::SeqCst);
    let out = run(&["inbox", "retry", &id]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("accepted again"),
        "{}",
        text(&out.stdout)
    );
    // The server's worker is in another process: it finds the update by polling
    // (PostgreSQL also wakes it with NOTIFY).
    applied(&s, &id, "DE--R2").await;
    let out = run(&["inbox", "replay", "--status", "dead", "--yes"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("retried 1 of 1 matching updates"),
        "{}",
        text(&out.stdout)
    );
    applied(&s, &other, "DE--R3").await;

    let out = run(&["inbox", "retry", &id]).await.unwrap();
    assert!(!out.status.success(), "an applied update is not retried");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("is applied") && err.lines().count() == 1,
        "{err}"
    );
    let out = run(&["inbox", "show", &id, "--json"]).await.unwrap();
    let detail: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(detail["status"], "applied", "{detail}");
    s.stop().await;
}

/// The schedule of [`dead_update`] with the worker's step driven by the test: each attempt
/// is due after its backoff, not a millisecond before, and is made when the clock reaches
/// it; after `max_attempts` the update is dead.
async fn attempts_follow_the_backoff_schedule_on_a_stepped_clock(b: Backend) {
    let down = Arc::new(AtomicBool::new(true));
    let Some(s) = start_worker(b, &down, false).await else {
        return;
    };
    let mut config = Config::default();
    schedule(&mut config);
    let inbox = Inbox::new(s.service.clone(), InboxSettings::from_config(&config));
    let order = s.create_order("DE--S1", &[("SKU-A", 1)]).await;
    let path = format!("/v1/orders/{}/events", order["id"]);
    let (status, body) = s.post(&path, &s.shop, json!({"event": "pay"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let update = json!({"order_reference": "DE--S1", "event": "export"});
    let (status, body) = s.post("/v1/erp/order-updates", &s.erp, update).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();

    let mut clock = orderflow::store::now();
    for n in 1..=MAX_ATTEMPTS {
        let step = inbox.process_next_batch("stepper", clock).await.unwrap();
        let row = s.store.update_by_id(&id).await.unwrap().unwrap();
        assert_eq!(row.attempts, n as i32, "{row:?}");
        if n == MAX_ATTEMPTS {
            assert_eq!(step, vec![Some(UpdateStatus::Dead)]);
            break;
        }
        assert_eq!(step, vec![Some(UpdateStatus::Accepted)], "attempt {n}");
        let d = (BASE_MS << (n - 1)).min(MAX_MS);
        // The attempt is recorded at the step's time (the clock, or later if it lags).
        let failed = row.errors().last().cloned().unwrap();
        assert!(at(&failed, "at") >= clock, "{failed}");
        let planned = (row.next_attempt_at - at(&failed, "at")).num_milliseconds();
        assert!(
            (d / 2..=d).contains(&planned),
            "attempt {n}: backoff {planned} ms not in [{}, {d}]",
            d / 2
        );
        let early = row.next_attempt_at - chrono::Duration::milliseconds(1);
        let step = inbox.process_next_batch("stepper", early).await.unwrap();
        assert!(step.is_empty(), "attempt {} came before its backoff", n + 1);
        clock = row.next_attempt_at;
    }
    s.stop().await;
}
