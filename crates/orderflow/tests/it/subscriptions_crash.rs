//! Crash safety of subscription deliveries: the real `orderflow serve` is killed with
//! SIGKILL while orders change and deliveries are in flight (the receiver answers slowly
//! and fails some first attempts), then restarted on the same database, several times.
//! Afterwards every change in the change feed was delivered at least once, and no event id
//! ever came with a different body.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::binary::{Server, create_client};
use crate::support::webhook_receiver::{Answer, Receiver};
use crate::support::{self, Backend, backend_tests, eventually};

backend_tests!(every_event_is_delivered_across_sigkills);

const KILLS: usize = 3;
const ORDERS: usize = 6;

/// A short schedule, short leases (a killed server's claims are taken again soon) and a
/// timeout above the receiver's slow answers.
const CONFIG: &str = r#"
[worker]
lease = "3s"
poll_interval = "250ms"

[subscriptions]
retry_schedule = ["0s", "100ms", "200ms", "400ms", "800ms", "1s", "1s", "1s", "1s", "1s"]
timeout = "1s"
lease = "2s"
poll_interval = "100ms"
"#;

async fn every_event_is_delivered_across_sigkills(backend: Backend) {
    let Some((url, _db)) = support::database(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("orderflow.toml"), CONFIG).expect("config");
    let processes = support::fixtures().join("crash");
    let admin = create_client(&url, dir.path(), "admin-crash", "admin").await;
    let receiver = Receiver::start().await;
    // Slow answers keep deliveries in flight; some first attempts fail.
    receiver.script(|version, before| match (version % 3, before) {
        (0, 0) => Answer::Status(500),
        (1, _) => Answer::Slow(Duration::from_millis(150)),
        _ => Answer::Ok,
    });
    // The subscription, made with the CLI before the first start.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["subscriptions", "create", &receiver.url, "--json"])
        .args(["--database-url", &url])
        .current_dir(dir.path())
        .output()
        .await
        .expect("orderflow subscriptions create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    receiver.set_secret(created["signing_secret"].as_str().unwrap());

    let mut server = Server::start(&url, dir.path(), &processes, 0).await;
    let base = Arc::new(std::sync::RwLock::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    // One writer: creates orders, then touches them round-robin, ignoring failures while
    // the server is down (a change either committed or not; the feed says which).
    let writer = {
        let (base, stop, admin) = (base.clone(), stop.clone(), admin.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids: Vec<i64> = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let b = base.read().unwrap().clone();
                if ids.len() < ORDERS {
                    let body = json!({"reference": format!("SUBCRASH-{n}"), "process": "Crash01",
                        "items": [{"sku": "SKU-1", "quantity": 1}]});
                    n += 1;
                    let r = http
                        .post(format!("{b}/v1/orders"))
                        .bearer_auth(&admin)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(r) = r
                        && r.status() == reqwest::StatusCode::CREATED
                        && let Ok(o) = r.json::<Value>().await
                    {
                        ids.push(o["id"].as_i64().unwrap());
                    }
                } else {
                    let id = ids[n % ids.len()];
                    n += 1;
                    let _ = http
                        .post(format!("{b}/v1/orders/{id}/events"))
                        .bearer_auth(&admin)
                        .json(&json!({"event": "touch"}))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    for generation in 0..KILLS {
        let wait = rand::rng().random_range(800..1600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill().await;
        server = Server::start(&url, dir.path(), &processes, generation + 1).await;
        *base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let feed = feed_events(&url).await;
    assert!(feed.len() > 20, "only {} changes were made", feed.len());
    eventually(
        Duration::from_secs(60),
        "every change delivered",
        || async {
            let got: BTreeSet<String> = receiver.delivered().into_iter().map(|g| g.id).collect();
            feed.iter().all(|e| got.contains(e)).then_some(())
        },
    )
    .await;
    let got = receiver.got();
    assert!(
        got.iter().all(|g| g.signature_ok),
        "a signature did not verify"
    );
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &got {
        let first = bodies.entry(&g.id).or_insert(&g.raw);
        assert_eq!(*first, g.raw, "event {} came with another payload", g.id);
    }
    let delivered = receiver.delivered().len();
    eprintln!(
        "subscription crash test ({backend:?}): {} changes, {} requests, {delivered} answered 2xx ({} repeats)",
        feed.len(),
        got.len(),
        delivered - feed.len()
    );
    server.kill().await;
}

/// The event ids of every change in the change feed.
async fn feed_events(url: &str) -> Vec<String> {
    const SQL: &str = "SELECT order_id, version FROM change_feed ORDER BY order_id, version";
    let rows: Vec<(i64, i64)> = if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(SQL).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(SQL).fetch_all(&mut c).await.unwrap()
    };
    rows.into_iter()
        .map(|(o, v)| format!("evt_{o}_{v}"))
        .collect()
}
