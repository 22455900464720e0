//! An update whose command ends the process (`abort`: nothing a panic handler sees) is
//! tried alone after the first time and goes `dead` after `worker.max_crashes`, while the
//! other updates of its batch apply.
//!
//! The workers are child processes: this test binary run again as
//! `process_ended::abort_worker`, a `worker --once` on the test's database with a command
//! that aborts for the order `ABORT-1`. The test starts one after the other until the inbox
//! holds nothing waiting, as a supervisor restarts a worker that died.

use std::sync::Arc;
use std::time::Duration;

use oms::Registry;
use oms::plugin::{CommandContext, PluginError};
use orderflow::config::Config;
use orderflow::domain::{OrderService, ProcessSet};
use orderflow::inbox::worker::WorkerOptions;
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, TestServer, backend_tests, fixtures, start_with, test_config};

backend_tests!(an_update_that_aborts_the_process_goes_dead_alone);

/// The database of the helper worker.
const ABORT_URL: &str = "ORDERFLOW_TEST_ABORT_URL";

const MAX_CRASHES: u32 = 3;

/// Ends the process for the order `ABORT-1`; passes for any other.
struct AbortsOnOne;

impl oms::plugin::Command for AbortsOnOne {
    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        if ctx.order.reference == "ABORT-1" {
            std::process::abort();
        }
        Ok(())
    }
}

/// The worker settings of the test and of its helper. On SQLite a record younger than the
/// lease may be another process's batch in flight, so the lease is short.
fn configure(c: &mut Config) {
    c.worker.in_process = false;
    c.worker.max_crashes = MAX_CRASHES;
    c.worker.lease = Duration::from_millis(200);
}

/// The helper: a worker with [`AbortsOnOne`] that processes what is due on the database
/// named by [`ABORT_URL`], then returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by an_update_that_aborts_the_process_goes_dead_alone"]
async fn abort_worker() {
    let url = std::env::var(ABORT_URL).expect("the helper's database");
    let mut config = test_config(&url);
    configure(&mut config);
    let mut registry = Registry::new();
    // `Test/NotBound` is the command of Test01's `export` event (paid -> exported).
    registry.register_command("Test/NotBound", AbortsOnOne);
    let processes = ProcessSet::load_with_options(
        &fixtures().join("processes"),
        &config.bindings(),
        registry,
        &config.load_options(),
    )
    .expect("processes");
    let store = Store::open(&url).await.expect("open store");
    let service = OrderService::new(store, Arc::new(processes));
    let inbox = Inbox::new(service, InboxSettings::from_config(&config));
    let options = WorkerOptions {
        once: true,
        ..WorkerOptions::default()
    };
    inbox
        .run_worker(options, CancellationToken::new())
        .await
        .expect("the worker's run");
}

/// An order with two items, paid (so that `export` runs `Test/NotBound`).
async fn paid_order(s: &TestServer, reference: &str) {
    let order = s
        .create_order(reference, &[("SKU-A", 1), ("SKU-B", 2)])
        .await;
    s.event(&order["id"], "pay").await;
}

/// `POST /v1/erp/order-updates` (async) of `export` for `reference`: the update's id.
async fn export(s: &TestServer, reference: &str) -> String {
    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", "respond-async")
        .json(&json!({"order_reference": reference, "event": "export"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: Value = resp.json().await.expect("JSON body");
    v["id"].as_str().expect("id").to_owned()
}

async fn update(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp)
        .await
        .1
}

async fn an_update_that_aborts_the_process_goes_dead_alone(b: Backend) {
    let Some(s) = start_with(b, configure).await else {
        return;
    };
    let references: Vec<String> = (1..=4)
        .map(|n| format!("CALM-{n}"))
        .chain(["ABORT-1".to_owned()])
        .chain((5..=8).map(|n| format!("CALM-{n}")))
        .collect();
    let mut ids = Vec::new();
    for reference in &references {
        paid_order(&s, reference).await;
        ids.push(export(&s, reference).await);
    }

    let (mut aborted, mut clean) = (0, 0);
    for _ in 0..20 {
        let waiting = {
            let mut n = 0;
            for id in &ids {
                let status = update(&s, id).await["status"].clone();
                n += usize::from(status == "accepted" || status == "processing");
            }
            n
        };
        if waiting == 0 {
            break;
        }
        let status = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "process_ended::abort_worker",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(ABORT_URL, &s.database_url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .expect("run the helper worker");
        if status.success() {
            // Nothing it could take (on SQLite, a record still young): the next one may.
            clean += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            aborted += 1;
        }
    }

    // Once in the first batch, which held every update, then twice alone.
    assert_eq!(
        aborted, MAX_CRASHES,
        "helpers that aborted ({clean} ended cleanly)"
    );
    for (reference, id) in references.iter().zip(&ids) {
        let v = update(&s, id).await;
        if reference == "ABORT-1" {
            assert_eq!(v["status"], "dead", "{v}");
            assert_eq!(v["last_error"]["code"], "process_ended", "{v}");
            let message = v["last_error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("ended 3 times") && message.contains("not tried again"),
                "{v}"
            );
        } else {
            assert_eq!(v["status"], "applied", "{reference}: {v}");
        }
    }
    // Every record and every count went with the batches that committed.
    for table in ["inbox_attempts", "inbox_crashes"] {
        let left = s.count_rows(table).await;
        assert_eq!(left, 0, "rows left in {table}");
    }
}
