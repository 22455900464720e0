//! An update whose command ends the process (`abort`: nothing a panic handler sees) is
//! tried alone after the first time and goes `dead` after `worker.max_crashes`, while the
//! other updates of its batch apply; through a broker as well, whose redelivered messages
//! go to the database worker instead of ending every consumer in turn.
//!
//! The workers are child processes: this test binary run again as one of the helpers
//! below, with a command that aborts for the order `ABORT-1`, on the test's database. The
//! test starts one after the other until the inbox holds nothing waiting, as a supervisor
//! restarts a worker that died.

use std::sync::Arc;
use std::time::Duration;

use oms::Registry;
use oms::plugin::{CommandContext, PluginError};
use orderflow::config::{Config, TransportKind};
use orderflow::domain::OrderService;
use orderflow::inbox::worker::WorkerOptions;
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::Store;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::plugin_panics::{export, paid_order};
use crate::support::{
    AMQP_URL, Backend, TestServer, backend_tests, fixture_processes, start_with, test_config,
};

backend_tests!(an_update_that_aborts_the_process_goes_dead_alone);

/// The database of a helper.
const ABORT_URL: &str = "ORDERFLOW_TEST_ABORT_URL";
/// The RabbitMQ queue prefix of the broker helper.
const ABORT_PREFIX: &str = "ORDERFLOW_TEST_ABORT_PREFIX";

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

/// The worker settings of the test and of its helpers. On SQLite a record younger than
/// the lease may be another process's batch in flight where `/proc` cannot tell that its
/// process is gone, so the lease is short.
fn configure(c: &mut Config) {
    c.worker.in_process = false;
    c.worker.max_crashes = MAX_CRASHES;
    c.worker.lease = Duration::from_millis(200);
}

/// A helper's configuration and service, with [`AbortsOnOne`], on [`ABORT_URL`].
async fn helper() -> (Config, OrderService) {
    let url = std::env::var(ABORT_URL).expect("the helper's database");
    let mut config = test_config(&url);
    configure(&mut config);
    let mut registry = Registry::new();
    // `Test/NotBound` is the command of Test01's `export` event (paid -> exported).
    registry.register_command("Test/NotBound", AbortsOnOne);
    let processes = fixture_processes(&config, registry);
    let store = Store::open(&url).await.expect("open store");
    (config, OrderService::new(store, Arc::new(processes)))
}

/// A helper: a worker that processes what is due, then returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by an_update_that_aborts_the_process_goes_dead_alone"]
async fn abort_worker() {
    let (config, service) = helper().await;
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

/// A helper: a server whose RabbitMQ consumers and worker run until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by an_update_through_a_broker_that_aborts_the_consumer_goes_dead_alone"]
async fn abort_server() {
    let (mut config, service) = helper().await;
    config.worker.in_process = true;
    config.inbox.transport = TransportKind::Rabbitmq;
    config.inbox.rabbitmq.url = AMQP_URL.into();
    config.inbox.rabbitmq.prefix = std::env::var(ABORT_PREFIX).expect("the queue prefix");
    config.inbox.rabbitmq.shards = 2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    orderflow::app::run(service, listener, &config, CancellationToken::new())
        .await
        .expect("the server's run");
}

async fn update(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp)
        .await
        .1
}

/// Eight calm orders and `ABORT-1` among them, paid, and an `export` update for each: the
/// references and the updates' ids.
async fn send(s: &TestServer) -> (Vec<String>, Vec<String>) {
    let references: Vec<String> = (1..=4)
        .map(|n| format!("CALM-{n}"))
        .chain(["ABORT-1".to_owned()])
        .chain((5..=8).map(|n| format!("CALM-{n}")))
        .collect();
    let mut ids = Vec::new();
    for reference in &references {
        paid_order(s, reference).await;
        ids.push(export(s, reference).await);
    }
    (references, ids)
}

/// How many of the updates are not final yet.
async fn waiting(s: &TestServer, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        let status = update(s, id).await["status"].clone();
        n += usize::from(status == "accepted" || status == "processing");
    }
    n
}

/// The test binary as the helper `name`, on the test's database.
fn helper_process(s: &TestServer, name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--ignored", "--nocapture"])
        .env(ABORT_URL, &s.database_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// `ABORT-1`'s update is `dead` for the processes it ended, every other one applied, and
/// every record and count went with the batches that committed.
async fn assert_outcome(s: &TestServer, references: &[String], ids: &[String]) {
    for (reference, id) in references.iter().zip(ids) {
        let v = update(s, id).await;
        if reference == "ABORT-1" {
            assert_eq!(v["status"], "dead", "{v}");
            assert_eq!(v["last_error"]["code"], "process_ended", "{v}");
            let message = v["last_error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!("ended {MAX_CRASHES} times"))
                    && message.contains("not tried again"),
                "{v}"
            );
        } else {
            assert_eq!(v["status"], "applied", "{reference}: {v}");
        }
    }
    for table in ["inbox_attempts", "inbox_crashes"] {
        let left = s.count_rows(table).await;
        assert_eq!(left, 0, "rows left in {table}");
    }
}

async fn an_update_that_aborts_the_process_goes_dead_alone(b: Backend) {
    let Some(s) = start_with(b, configure).await else {
        return;
    };
    let (references, ids) = send(&s).await;
    let (mut aborted, mut clean) = (0, 0);
    for _ in 0..20 {
        if waiting(&s, &ids).await == 0 {
            break;
        }
        let status = helper_process(&s, "process_ended::abort_worker")
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
    // Only the last helper ended cleanly, having applied the rest: each one before took
    // the ended batch's updates at once, on SQLite too (its process was gone), without
    // waiting out the record's lease.
    if std::path::Path::new("/proc/self").exists() {
        assert_eq!(clean, 1, "helpers that ended cleanly");
    }
    assert_outcome(&s, &references, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn an_update_through_a_broker_that_aborts_the_consumer_goes_dead_alone() {
    // The test's server publishes; the helpers consume.
    let Some(s) = start_with(Backend::RabbitPostgres, configure).await else {
        return;
    };
    let (references, ids) = send(&s).await;
    let prefix = s.rabbit_prefix.clone().expect("a queue prefix");
    let mut aborted = 0;
    for _ in 0..20 {
        if waiting(&s, &ids).await == 0 {
            break;
        }
        let mut child = helper_process(&s, "process_ended::abort_server")
            .env(ABORT_PREFIX, &prefix)
            .spawn()
            .expect("start the helper server");
        loop {
            tokio::select! {
                status = child.wait() => {
                    assert!(!status.expect("the helper's status").success());
                    aborted += 1;
                    break;
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if waiting(&s, &ids).await == 0 {
                        child.kill().await.expect("stop the helper server");
                        break;
                    }
                }
            }
        }
    }
    // Once in a consumer, which applied the update as it came, then as without a broker:
    // its redelivery went to the database worker.
    assert_eq!(aborted, 1 + MAX_CRASHES, "helpers that aborted");
    assert_outcome(&s, &references, &ids).await;
}
