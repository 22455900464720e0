//! Crash safety of everything orderflow sends out, at once: the real `orderflow serve` is
//! killed with SIGKILL several times while after-commit HTTP commands (a slow receiver) and
//! subscription deliveries (a slow receiver that fails some first attempts) are both in
//! flight, then restarted on the same database. Meanwhile orders are created and captured
//! (an effect and two changes each, some refunded: one more of each), and ERP updates for
//! orders that do not exist die past a short `park_ttl` (an `update.dead` event each).
//!
//! Afterwards:
//! - every effect is `done`, settled by exactly one successful attempt, and the receiver saw
//!   its idempotency key at least once and no key of an effect that does not exist;
//! - every change in the feed and every dead update was delivered at least once, every
//!   signature verifies, and no event id came with a different body.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use orderflow::store::Store;
use orderflow::store::effects::EffectFilter;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::binary::{Server, create_client};
use crate::support::receiver::{self, Reply};
use crate::support::webhook_receiver::{self, Answer};
use crate::support::{self, Backend, backend_tests, eventually};

backend_tests!(effects_and_deliveries_survive_sigkills);

const KILLS: usize = 3;

/// Short leases (a killed server's claims are taken again soon), short schedules, and
/// timeouts above the receivers' slow answers.
fn config(effects_url: &str) -> String {
    format!(
        r#"
[worker]
lease = "3s"
poll_interval = "100ms"
backoff_base = "100ms"
backoff_max = "500ms"

[events.captured]
park_ttl = "700ms"

[outbound]
timeout = "2s"

[effects]
lease = "1s"
poll_interval = "100ms"
backoff_base = "100ms"
backoff_max = "1s"
batch_size = 4

[commands."Test/Capture"]
type = "http"
url = "{effects_url}/capture"

[commands."Test/Refund"]
type = "http"
url = "{effects_url}/refund"

[subscriptions]
retry_schedule = ["0s", "100ms", "200ms", "400ms", "800ms", "1s", "1s", "1s", "1s", "1s"]
timeout = "1s"
lease = "2s"
poll_interval = "100ms"
"#
    )
}

/// The tokens the writer uses.
#[derive(Clone)]
struct Clients {
    shop: String,
    erp: String,
}

async fn effects_and_deliveries_survive_sigkills(backend: Backend) {
    let Some((url, _db)) = support::database(backend).await else {
        return;
    };
    let effects = receiver::Receiver::start().await;
    effects.always(Reply::Slow(Duration::from_millis(300)));
    let hooks = webhook_receiver::Receiver::start().await;
    // Slow answers keep deliveries in flight; some first attempts fail.
    hooks.script(|version, before| match (version % 3, before) {
        (0, 0) => Answer::Status(500),
        (1, _) => Answer::Slow(Duration::from_millis(150)),
        _ => Answer::Ok,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("orderflow.toml"), config(&effects.url)).expect("config");
    let processes = support::fixtures().join("effects");
    let clients = Clients {
        shop: create_client(&url, dir.path(), "shop-crash", "shop").await,
        erp: create_client(&url, dir.path(), "erp-crash", "erp").await,
    };
    subscribe(&url, dir.path(), &hooks).await;

    let mut server = Server::start(&url, dir.path(), &processes, 0).await;
    let base = Arc::new(RwLock::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(base.clone(), stop.clone(), clients));
    for generation in 1..=KILLS {
        // Both kinds in flight: more calls and more deliveries since the last start.
        let (calls, deliveries) = (effects.hits().len(), hooks.got().len());
        eventually(
            Duration::from_secs(30),
            "effects and deliveries in flight",
            || async {
                (effects.hits().len() >= calls + 3 && hooks.got().len() >= deliveries + 3)
                    .then_some(())
            },
        )
        .await;
        let wait = rand::rng().random_range(0..300);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill().await;
        server = Server::start(&url, dir.path(), &processes, generation).await;
        *base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Effects: done exactly once.
    let store = Store::connect(&url).await.expect("store");
    let filter = EffectFilter {
        limit: 10_000,
        ..EffectFilter::default()
    };
    let rows = eventually(Duration::from_secs(90), "every effect done", || async {
        let rows = store.list_effects(&filter).await.expect("effects");
        rows.iter().all(|r| r.status == "done").then_some(rows)
    })
    .await;
    assert!(rows.len() >= 10, "only {} effects were made", rows.len());
    let keys = effects.by_key();
    for e in &rows {
        let successes = store
            .effect_attempts(e.id)
            .await
            .expect("attempts")
            .iter()
            .filter(|a| a.status_code == Some(200))
            .count();
        assert_eq!(successes, 1, "effect {} settled by one success", e.id);
        let n = keys.get(&e.id.to_string()).copied().unwrap_or(0);
        assert!(n >= 1, "effect {} reached the receiver", e.id);
    }
    let ids: HashSet<String> = rows.iter().map(|e| e.id.to_string()).collect();
    assert!(
        keys.keys().all(|k| ids.contains(k)),
        "only keys of stored effects: {keys:?}"
    );
    store.close().await;

    // Events: every change and every death delivered, each id with one body.
    let (changes, deaths) = expected_events(&url).await;
    assert!(
        changes.len() > 20,
        "only {} changes were made",
        changes.len()
    );
    assert!(!deaths.is_empty(), "no update died");
    eventually(Duration::from_secs(60), "every event delivered", || async {
        let got: BTreeSet<String> = hooks.delivered().into_iter().map(|g| g.id).collect();
        changes
            .iter()
            .chain(&deaths)
            .all(|e| got.contains(e))
            .then_some(())
    })
    .await;
    let got = hooks.got();
    assert!(
        got.iter().all(|g| g.signature_ok),
        "a signature did not verify"
    );
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &got {
        let first = bodies.entry(&g.id).or_insert(&g.raw);
        assert_eq!(*first, g.raw, "event {} came with another payload", g.id);
    }
    eprintln!(
        "outbound crash test ({backend:?}, {KILLS} kills): {} effects done, {} effect requests; \
         {} changes and {} dead updates, {} delivery requests, {} answered 2xx",
        rows.len(),
        effects.hits().len(),
        changes.len(),
        deaths.len(),
        got.len(),
        hooks.delivered().len(),
    );
    server.kill().await;
}

/// A subscription to every type, made with the CLI before the first start.
async fn subscribe(url: &str, dir: &std::path::Path, hooks: &webhook_receiver::Receiver) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["subscriptions", "create", &hooks.url, "--json"])
        .args(["--database-url", url])
        .current_dir(dir)
        .output()
        .await
        .expect("orderflow subscriptions create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    hooks.set_secret(created["signing_secret"].as_str().unwrap());
}

/// One writer until `stop`: creates orders and captures them (every third is also
/// refunded), and every fifth round sends an ERP update for an order that does not exist.
/// Failures while the server is down are ignored: a change either committed or not, and
/// the database says which.
async fn write(base: Arc<RwLock<String>>, stop: Arc<AtomicBool>, clients: Clients) {
    let http = reqwest::Client::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let b = base.read().unwrap().clone();
        n += 1;
        if n.is_multiple_of(5) {
            let _ = http
                .post(format!("{b}/v1/erp/order-updates"))
                .bearer_auth(&clients.erp)
                .json(&json!({"order_reference": format!("NOWHERE-{n}"), "event": "captured"}))
                .send()
                .await;
        }
        let body = json!({"reference": format!("OC-{n}"), "process": "Capture01",
            "items": [{"sku": "A", "quantity": 1}]});
        let created = http
            .post(format!("{b}/v1/orders"))
            .bearer_auth(&clients.shop)
            .json(&body)
            .send()
            .await;
        let id = match created {
            Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Value>().await {
                Ok(o) => o["id"].clone(),
                Err(_) => continue,
            },
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let events: &[&str] = if n.is_multiple_of(3) {
            &["capture", "refund"]
        } else {
            &["capture"]
        };
        for event in events {
            let _ = http
                .post(format!("{b}/v1/orders/{id}/events"))
                .bearer_auth(&clients.shop)
                .json(&json!({"event": event}))
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The event ids of every change in the feed, and of every dead update.
async fn expected_events(url: &str) -> (Vec<String>, Vec<String>) {
    const FEED: &str = "SELECT order_id, version FROM change_feed ORDER BY order_id, version";
    const DEAD: &str = "SELECT id, CAST(attempts AS BIGINT) FROM inbox WHERE status = 'dead'";
    let feed: Vec<(i64, i64)>;
    let dead: Vec<(String, i64)>;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        feed = sqlx::query_as(FEED).fetch_all(&mut c).await.unwrap();
        dead = sqlx::query_as(DEAD).fetch_all(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        feed = sqlx::query_as(FEED).fetch_all(&mut c).await.unwrap();
        dead = sqlx::query_as(DEAD).fetch_all(&mut c).await.unwrap();
    }
    (
        feed.into_iter()
            .map(|(o, v)| format!("evt_{o}_{v}"))
            .collect(),
        dead.into_iter()
            .map(|(id, attempts)| format!("evt_update_{id}_{attempts}"))
            .collect(),
    )
}
