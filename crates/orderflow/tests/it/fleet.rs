//! A fleet of `orderflow worker` processes (the real binary) on one PostgreSQL database:
//! one is killed with SIGKILL in the middle of a batch, while its transaction holds the
//! updates it claimed; the others take them over once PostgreSQL has rolled it back.
//! Checked from the database afterwards: every update applied exactly once, and the updates
//! of each order applied in the order they were received.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orderflow::config::Config;
use orderflow::domain::{OrderService, ProcessSet, Source};
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::Store;
use orderflow::store::inbox::{NewUpdate, Stored};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{self, Backend, fixtures};

const ORDERS: usize = 200;
const UPDATES: usize = 10_000;
const WORKERS: usize = 3;
/// Short, so the killed worker's updates are taken over within the test.
const LEASE: &str = "2s";

fn reference(order: usize) -> String {
    format!("FLEET-{order:03}")
}

/// A running `orderflow worker` and the number of batches it has logged.
struct Worker {
    child: Child,
    /// Its connections' `application_name`, so the test can see them close.
    name: String,
    batches: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn spawn(url: &str, dir: &Path) -> Self {
        static SPAWNED: AtomicU64 = AtomicU64::new(0);
        let name = format!("fleet-worker-{}", SPAWNED.fetch_add(1, Ordering::Relaxed));
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}application_name={name}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
        cmd.args(["--log-format", "json", "worker", "--database-url", &url])
            .arg("--processes")
            .arg(fixtures().join("fleet"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("ORDERFLOW_") {
                cmd.env_remove(k);
            }
        }
        // Small batches, so the workers interleave on the same orders.
        cmd.env("ORDERFLOW_WORKER__LEASE", LEASE)
            .env("ORDERFLOW_WORKER__BATCH_SIZE", "20")
            .env("ORDERFLOW_WORKER__POLL_INTERVAL", "200ms");
        let mut child = cmd.spawn().expect("start orderflow worker");
        let batches = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let (b, l) = (batches.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(r#""message":"inbox batch""#) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
                l.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            name,
            batches,
            log,
        }
    }

    fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(5)..].join("\n")
    }
}

/// The updates as stored: public id -> (sequence number, order, n).
type Sent = HashMap<String, (i64, usize, usize)>;

async fn store_updates(inbox: &Inbox, sent: &mut Sent, updates: &[(NewUpdate, usize, usize)]) {
    for chunk in updates.chunks(500) {
        let rows: Vec<NewUpdate> = chunk.iter().map(|(u, _, _)| u.clone()).collect();
        let stored = inbox.store_updates(rows).await.expect("store updates");
        for ((u, order, n), s) in chunk.iter().zip(stored) {
            let Stored::New(seq) = s else {
                panic!("update {n} stored twice")
            };
            sent.insert(u.id.clone(), (seq, *order, *n));
        }
    }
}

/// Waits until no connection named `name` is left (at most 30 s).
async fn gone(pool: &PgPool, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(name)
                .fetch_one(pool)
                .await
                .unwrap();
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections of {name} stay open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The waiting updates that an open transaction of the connections named `name` holds: a
/// row's `xmax` is the transaction that locked it (`FOR UPDATE`) or changed it, not yet
/// committed.
async fn held(pool: &PgPool, name: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT i.seq FROM inbox i JOIN pg_stat_activity a ON i.xmax = a.backend_xid \
         WHERE a.application_name = $1 \
           AND i.status IN ('accepted', 'parked', 'processing')",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Of the updates `seqs`, those not processed before `at`: still waiting, or processed
/// later.
async fn not_done_before(pool: &PgPool, seqs: &[i64], at: DateTime<Utc>) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT seq FROM inbox WHERE seq = ANY($1) \
         AND (status IN ('accepted', 'parked', 'processing') OR processed_at > $2)",
    )
    .bind(seqs)
    .bind(at)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn workers_apply_every_update_once_and_in_order_when_one_is_killed() {
    let Some((url, _db)) = support::database(Backend::Postgres).await else {
        return;
    };
    let started = Instant::now();
    let config = Config {
        database_url: url.clone(),
        ..Config::default()
    };
    let processes = ProcessSet::load(&fixtures().join("fleet"), &config.bindings()).unwrap();
    let store = Store::open(&url).await.unwrap();
    let service = OrderService::new(store.clone(), Arc::new(processes));
    let inbox = Inbox::new(service.clone(), InboxSettings::from_config(&config));
    for o in 0..ORDERS {
        let input = support::one_item_order(&reference(o), "Touch01");
        service.create(input, Source::Api).await.unwrap();
    }
    // Each update sets `last_n` (a merge patch replaces it, so only the last one applied
    // stays) and triggers `touch`, whose history row names the update: `erp:<id>`.
    let updates: Vec<(NewUpdate, usize, usize)> = (0..UPDATES)
        .map(|n| {
            let order = rand::random_range(0..ORDERS);
            let body = json!({"order_reference": reference(order), "event": "touch",
                "attributes": {"last_n": n}});
            let row = inbox.prepare("erp", None, body, "$").unwrap();
            (row, order, n)
        })
        .collect();
    let mut sent = Sent::new();
    // Half is waiting when the workers start; the rest arrives while they run.
    let (first, rest) = updates.split_at(UPDATES / 2);
    store_updates(&inbox, &mut sent, first).await;

    let pool = store.postgres_pool().expect("a PostgreSQL store").clone();
    let dir = tempfile::tempdir().unwrap();
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|_| Worker::spawn(&url, dir.path()))
        .collect();
    store_updates(&inbox, &mut sent, rest).await;

    // Kill a worker in the middle of a batch, after it has finished a few: while its
    // transaction holds updates. Should that batch commit between the look and the kill,
    // a fresh worker takes its place.
    let mut orphans: Vec<i64> = Vec::new();
    let mut killed_at = Utc::now();
    let mut kills = 0;
    while orphans.is_empty() {
        assert!(
            kills < 5,
            "could not kill a worker in the middle of a batch"
        );
        let victim = &workers[0];
        let deadline = Instant::now() + Duration::from_secs(30);
        let holding = loop {
            assert!(
                Instant::now() < deadline,
                "worker never held updates: {}",
                victim.tail()
            );
            if victim.batches.load(Ordering::Relaxed) >= 2 {
                let holding = held(&pool, &victim.name).await;
                if !holding.is_empty() {
                    break holding;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut victim = workers.remove(0);
        victim.child.kill().unwrap();
        killed_at = Utc::now();
        victim.child.wait().unwrap();
        kills += 1;
        // A COMMIT the worker sent just before it died still lands, with the time its
        // batch began as the updates' `processed_at`: look only once PostgreSQL has
        // closed its connections. What it held and did not commit is left to the others.
        gone(&pool, &victim.name).await;
        orphans = not_done_before(&pool, &holding, killed_at).await;
        if orphans.is_empty() {
            workers.push(Worker::spawn(&url, dir.path()));
        }
    }

    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE status IN ('accepted', 'processing', 'parked')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = workers.iter().map(Worker::tail).collect();
            panic!(
                "{open} updates still open; worker logs:\n{}",
                tails.join("\n--\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    for w in &workers {
        let status = Command::new("kill")
            .args(["-TERM", &w.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for w in &mut workers {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = w.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "worker ignored SIGTERM: {}",
                w.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "worker exit {status}: {}", w.tail());
    }

    check_database(&pool, &sent, &orphans, killed_at).await;
    eprintln!(
        "fleet: {UPDATES} updates over {ORDERS} orders, {WORKERS} workers, {kills} killed \
         holding {} updates; drained in {:.1} s",
        orphans.len(),
        drained.as_secs_f64()
    );
}

/// Everything the test asserts, read back from the database.
async fn check_database(pool: &PgPool, sent: &Sent, orphans: &[i64], killed_at: DateTime<Utc>) {
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM inbox GROUP BY status")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("applied".to_owned(), UPDATES as i64)]);

    // Exactly one `touch` per update, on the update's order.
    let history: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT h.id, o.reference, h.source FROM item_history h \
         JOIN orders o ON o.id = h.order_id WHERE h.source LIKE 'erp:%' ORDER BY h.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut seen = HashSet::new();
    let mut applied: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, order, source) in &history {
        let update = source.trim_start_matches("erp:");
        let (seq, o, _) = sent
            .get(update)
            .unwrap_or_else(|| panic!("history row {id} names an unknown update {update}"));
        assert!(seen.insert(update), "update {update} applied twice");
        assert_eq!(
            order,
            &reference(*o),
            "update {update} applied to another order"
        );
        applied.entry(order.clone()).or_default().push(*seq);
    }
    assert_eq!(history.len(), UPDATES, "every update applied once");

    // Per order, in receive order: history, processing times and the last attribute set.
    let mut expected: BTreeMap<String, Vec<(i64, usize)>> = BTreeMap::new();
    for (seq, o, n) in sent.values() {
        expected.entry(reference(*o)).or_default().push((*seq, *n));
    }
    let processed: Vec<(String, i64, DateTime<Utc>, i32)> = sqlx::query_as(
        "SELECT order_reference, seq, processed_at, attempts FROM inbox ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut last_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    for (order, seq, at, _) in &processed {
        if let Some(prev) = last_at.insert(order.clone(), *at) {
            assert!(
                prev <= *at,
                "{order}: update {seq} processed before an earlier one"
            );
        }
    }
    let orders: Vec<(String, i64, sqlx::types::Json<Value>)> =
        sqlx::query_as("SELECT reference, version, attributes FROM orders")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(orders.len(), ORDERS);
    for (order, version, attributes) in orders {
        let mut want = expected.remove(&order).unwrap_or_default();
        want.sort();
        let seqs: Vec<i64> = want.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            applied.get(&order).cloned().unwrap_or_default(),
            seqs,
            "{order}: updates applied out of receive order"
        );
        assert_eq!(
            version,
            1 + want.len() as i64,
            "{order}: one version per update"
        );
        let last = want.last().map(|(_, n)| json!(n));
        assert_eq!(attributes.0.get("last_n").cloned(), last, "{order}");
    }

    // The killed worker's updates were applied by another worker, after it died.
    let at: HashMap<i64, DateTime<Utc>> = processed.iter().map(|(_, s, t, _)| (*s, *t)).collect();
    for seq in orphans {
        assert!(
            at[seq] > killed_at,
            "orphaned update {seq} was not taken over"
        );
    }
    let attempts: HashMap<i64, i32> = processed.iter().map(|(_, s, _, a)| (*s, *a)).collect();
    let retried = attempts.values().filter(|a| **a > 1).count();
    eprintln!(
        "fleet: {retried} updates took more than one attempt ({} were orphaned)",
        orphans.len()
    );
}
