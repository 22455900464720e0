//! `orderflow worker`, run as an operator would: the real binary on a SQLite file that the
//! test fills through the library (orders and stored updates, no worker of its own).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orderflow::domain::{OrderService, ProcessSet, Source};
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::Store;
use serde_json::{Value, json};

use crate::support::{self, fixtures};

/// A SQLite store with the test processes, for filling it before the worker runs.
struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    service: OrderService,
    inbox: Inbox,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
        let config = support::test_config(&url);
        let processes =
            ProcessSet::load(&fixtures().join("processes"), &config.bindings()).unwrap();
        let store = Store::open(&url).await.unwrap();
        let service = OrderService::new(store, Arc::new(processes));
        let inbox = Inbox::new(service.clone(), InboxSettings::from_config(&config));
        Self {
            dir,
            url,
            service,
            inbox,
        }
    }

    /// An order of process Test01 with one item; its onEnter chain leaves it `waiting`.
    async fn order(&self, reference: &str) {
        let input = support::one_item_order(reference, "Test01");
        self.service.create(input, Source::Api).await.unwrap();
    }

    /// Stores updates as the API would (validated, `accepted`); returns their ids.
    async fn store(&self, updates: &[Value]) -> Vec<String> {
        let rows: Vec<_> = updates
            .iter()
            .map(|u| self.inbox.prepare("erp", None, u.clone(), "$").unwrap())
            .collect();
        let ids = rows.iter().map(|r| r.id.clone()).collect();
        self.inbox.store_updates(rows).await.unwrap();
        ids
    }

    /// `orderflow worker ARGS` on this store, with the fixture processes and a config file.
    fn worker(&self, args: &[&str]) -> Command {
        let file = self.dir.path().join("worker.toml");
        // A quick polling floor (a separate process on SQLite has no in-process wake-up)
        // and a long backoff, so a parked update is not due again during the test.
        std::fs::write(
            &file,
            "[worker]\npoll_interval = \"100ms\"\nbackoff_base = \"1h\"\n\n\
             [commands.\"Test/Stamp\"]\ntype = \"set_attributes\"\nscope = \"order\"\n\
             values = { stamped = true }\n",
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
        cmd.arg("worker")
            .args(args)
            .args(["--database-url", &self.url, "--config"])
            .arg(&file)
            .arg("--processes")
            .arg(fixtures().join("processes"))
            .current_dir(self.dir.path());
        // The test's own environment must not leak configuration into the child.
        for (k, _) in std::env::vars() {
            if k.starts_with("ORDERFLOW_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run orderflow worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_applies_due_updates_in_receive_order_and_exits() {
    let f = Fixture::new().await;
    f.order("CLI-1").await;
    f.order("CLI-2").await;
    // `ship` applies only after `pay`: out of order, it would be parked.
    let ids = f
        .store(&[
            json!({"order_reference": "CLI-1", "event": "pay", "attributes": {"n": 1}}),
            json!({"order_reference": "CLI-2", "event": "pay"}),
            json!({"order_reference": "CLI-1", "event": "ship", "attributes": {"n": 2}}),
            json!({"order_reference": "CLI-3", "event": "pay"}),
        ])
        .await;

    let out = run(f
        .worker(&["--once", "--json"])
        .arg("--log-format")
        .arg("json"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let totals: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(totals["applied"], 3, "{totals}");
    assert_eq!(totals["parked"], 1, "CLI-3 does not exist: {totals}");
    assert_eq!(totals["dead"], 0);
    // One JSON log line per batch, with its size, outcome counts and duration.
    let batches: Vec<Value> = text(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "inbox batch")
        .collect();
    assert_eq!(batches.len() as u64, totals["batches"].as_u64().unwrap());
    let sizes: u64 = batches
        .iter()
        .map(|b| b["fields"]["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, 4);
    assert!(batches.iter().all(|b| b["fields"]["duration_ms"].is_u64()));

    let store = f.service.store();
    let (order, items) = store.order_by_reference("CLI-1").await.unwrap().unwrap();
    assert_eq!(items[0].state, "shipped");
    assert_eq!(order.attributes.0["n"], 2);
    let history = store.history(order.id).await.unwrap();
    let sources: Vec<&str> = history.iter().map(|h| h.source.as_str()).collect();
    let want = [format!("erp:{}", ids[0]), format!("erp:{}", ids[2])];
    assert_eq!(&sources[sources.len() - 2..], &want[..], "{sources:?}");
    for (id, status) in ids.iter().zip(["applied", "applied", "applied", "parked"]) {
        let row = store.update_by_id(id).await.unwrap().unwrap();
        assert_eq!(row.status.as_str(), status, "{id}");
    }

    // Nothing is due now (the parked update waits for its backoff): a second run is a no-op.
    let out = run(&mut f.worker(&["--once"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.starts_with("processed 0 updates"), "{line}");
    assert_eq!(line.lines().count(), 1);
}

/// The worker's stderr, line by line, as it writes it.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a log line whose message is `message`; panics after `within`.
fn wait_for(rx: &mpsc::Receiver<String>, message: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {message:?} log line within {within:?}"));
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["fields"]["message"] == message
        {
            return v;
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_worker_applies_new_updates_and_stops_on_sigterm() {
    let f = Fixture::new().await;
    f.order("RUN-1").await;
    let mut child = f
        .worker(&["--log-format", "json", "--grace", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    wait_for(&rx, "inbox worker started", Duration::from_secs(30));

    let ids = f
        .store(&[json!({"order_reference": "RUN-1", "event": "pay"})])
        .await;
    let batch = wait_for(&rx, "inbox batch", Duration::from_secs(10));
    assert_eq!(batch["fields"]["applied"], 1, "{batch}");
    let row = f.service.store().update_by_id(&ids[0]).await.unwrap();
    assert_eq!(row.unwrap().status.as_str(), "applied");

    let asked = Instant::now();
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "an idle worker stops at once, took {:?}",
        asked.elapsed()
    );
    wait_for(&rx, "inbox worker stopped", Duration::from_secs(1));
}

#[test]
fn bad_arguments_are_one_sentence_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let worker = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("worker")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = worker(&["--grace", "soon"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--grace"),
        "{}",
        text(&out.stderr)
    );
    let out = worker(&["--json"]);
    assert!(!out.status.success(), "--json needs --once");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = worker(&["--once", "--processes", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.starts_with("error: no main process found"), "{err}");
}
