//! Crash safety of the inbox: the real `orderflow` binary is killed with SIGKILL while ERP
//! clients send updates, then restarted on the same database, several times. Afterwards
//! every update that got a 202 is in the inbox and `applied`, and every stored update took
//! effect exactly once, in receive order.
//!
//! Each client owns its orders and sends one update at a time, so the receive order of an
//! order's updates is the order they were sent in. A request that failed (the server died
//! under it, or was down) was never acknowledged: the client either gives it up (it may or
//! may not have been stored) or sends it again with the same idempotency key until it gets
//! a 202, which must give it exactly one effect.
//!
//! Effects are counted three ways: the order's version (every update changes the order, so
//! it grows by one per applied update), its `last` attribute (the last stored update wins),
//! and the history rows of `touch` updates (`touch` moves an item from `open` to `open`,
//! one row per item and application; see `fixtures/crash/Crash01.xml`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use orderflow::store::Store;
use orderflow::store::inbox::{UpdateFilter, UpdateRow};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::binary::{Server, create_client};
use crate::support::{self, Backend, Queues, transport_tests};

transport_tests!(acknowledged_updates_survive_sigkill);

/// What happens to the system under load, `KILLS` times.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Disruption {
    /// SIGKILL `serve` (API, worker and consumers) and start it again.
    KillServer,
    /// `rabbitmqctl stop_app`, then `start_app`, while `serve` keeps running: it answers
    /// 503 `transport_unavailable` (never a false 202) until the broker is back.
    RestartBroker,
}

async fn acknowledged_updates_survive_sigkill(backend: Backend) {
    survive(backend, Disruption::KillServer).await;
}

/// Stops the broker every other test uses, so it cannot run beside them: `.ci/run` runs it
/// on its own after the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared RabbitMQ: .ci/run runs it on its own (--ignored)"]
async fn acknowledged_updates_survive_a_broker_restart() {
    survive(Backend::RabbitPostgres, Disruption::RestartBroker).await;
}

async fn rabbitmqctl(command: &str) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", command])
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CLIENTS: usize = 8;
const ORDERS_PER_CLIENT: usize = 4;
/// Items per order: an applied `touch` writes this many history rows.
const ITEMS: usize = 2;
const KILLS: usize = 4;
/// Updates each client sends at least (not counting repeats). Clients go on until the last
/// disruption is over, so each one happens while they send, however fast this build
/// streams (a release build sent all 2,000 before the broker had stopped once).
const PER_CLIENT: usize = 250;
/// A pause between a client's updates while the broker restarts (several seconds each):
/// keeps the stream, so the work the worker must finish, small.
const BROKER_PACE: Duration = Duration::from_millis(50);

/// Short leases: updates a killed server had claimed are claimed again soon after restart.
const CONFIG: &str = r#"
[worker]
lease = "3s"
poll_interval = "250ms"
backoff_base = "100ms"
backoff_max = "2s"
"#;

async fn survive(backend: Backend, disruption: Disruption) {
    let Some((url, _db)) = support::database(backend).await else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    // With a broker the server that is killed is also the consumer: what it had received
    // and not acknowledged is redelivered to the next one.
    let queues = matches!(backend, Backend::RabbitPostgres).then(|| Queues {
        prefix: format!("orderflow_test_{:016x}", rand::random::<u64>()),
        shards: 2,
    });
    let config = match &queues {
        Some(q) => format!(
            "{CONFIG}\n[inbox]\ntransport = \"rabbitmq\"\n[inbox.rabbitmq]\nurl = \"{}\"\n\
             prefix = \"{}\"\nshards = {}\n",
            support::AMQP_URL,
            q.prefix,
            q.shards
        ),
        None => CONFIG.to_owned(),
    };
    // With Redis the killed server holds shard leases: the next one takes them after
    // `lease` and claims what the killed one had read and not acknowledged.
    let redis_keys = matches!(backend, Backend::RedisPostgres)
        .then(|| support::RedisKeys::new(support::REDIS_URL));
    let config = match &redis_keys {
        Some(k) => format!(
            "{config}\n[inbox]\ntransport = \"redis\"\n[inbox.redis]\nurl = \"{}\"\n\
             prefix = \"{}\"\nshards = 2\nlease = \"2s\"\naccept_loss = \"{}\"\n",
            support::REDIS_URL,
            k.prefix,
            support::TEST_ACCEPT_LOSS
        ),
        None => config,
    };
    std::fs::write(dir.path().join("orderflow.toml"), config).expect("config");
    let processes = support::fixtures().join("crash");
    let erp = create_client(&url, dir.path(), "erp-crash", "erp").await;
    let shop = create_client(&url, dir.path(), "shop-crash", "shop").await;
    let mut server = Server::start(&url, dir.path(), &processes, 0).await;

    // Orders first, so that every update applies: (id, version before any update).
    let http = reqwest::Client::new();
    let mut orders = Vec::new();
    for o in 0..CLIENTS * ORDERS_PER_CLIENT {
        let items: Vec<Value> = (0..ITEMS)
            .map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1}))
            .collect();
        let body = json!({"reference": reference(o), "process": "Crash01", "items": items});
        let resp = http
            .post(format!("{}/v1/orders", server.base))
            .bearer_auth(&shop)
            .json(&body)
            .send()
            .await
            .expect("create order");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let order: Value = resp.json().await.expect("order");
        assert!(
            order["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["state"] == "open")
        );
        orders.push((
            order["id"].as_i64().unwrap(),
            order["version"].as_i64().unwrap(),
        ));
    }

    let base = Arc::new(RwLock::new(server.base.clone()));
    let sent = Arc::new(AtomicUsize::new(0));
    let disrupted = Arc::new(AtomicBool::new(false));
    let pace = match disruption {
        Disruption::KillServer => Duration::ZERO,
        Disruption::RestartBroker => BROKER_PACE,
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stream = Stream {
                sent: sent.clone(),
                disrupted: disrupted.clone(),
                pace,
            };
            tokio::spawn(client(c, erp.clone(), base.clone(), stream))
        })
        .collect();
    // Kill at a random moment in each of KILLS stretches of the stream.
    let stretch = CLIENTS * PER_CLIENT / (KILLS + 1);
    let kill_at: Vec<usize> = {
        let mut rng = rand::rng();
        (1..=KILLS)
            .map(|k| k * stretch + rng.random_range(0..stretch / 2) - stretch / 4)
            .collect()
    };
    for (generation, at) in kill_at.into_iter().enumerate() {
        // (Clients that all stopped early have failed: joining them below says why.)
        while sent.load(Ordering::Relaxed) < at && !clients.iter().all(|c| c.is_finished()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match disruption {
            Disruption::KillServer => {
                server.kill().await;
                server = Server::start(&url, dir.path(), &processes, generation + 1).await;
                *base.write().unwrap() = server.base.clone();
            }
            Disruption::RestartBroker => {
                rabbitmqctl("stop_app").await;
                rabbitmqctl("start_app").await;
            }
        }
    }
    disrupted.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        match c.await {
            Ok(log) => logs.push(log),
            Err(e) => panic!(
                "client task: {e}\nthe server's last warnings and errors:\n{}",
                server.log_tail(40)
            ),
        }
    }
    let streamed = started.elapsed();
    let acked: Vec<&Acked> = logs.iter().flat_map(|l| &l.acked).collect();

    // The restarted server's worker finishes everything, including what a killed one held.
    let store = Store::connect(&url).await.expect("store");
    if backend.is_broker() {
        // Updates reach the database when consumed: wait for every acknowledged id (one
        // that never arrives is lost, and this fails).
        let ids: Vec<&str> = acked.iter().map(|a| a.id.as_str()).collect();
        let store = &store;
        support::eventually(
            Duration::from_secs(60),
            "every acknowledged update consumed",
            || {
                let ids = &ids;
                async move {
                    for id in ids {
                        store.update_by_id(id).await.expect("read")?;
                    }
                    Some(())
                }
            },
        )
        .await;
    }
    support::eventually(Duration::from_secs(60), "the inbox drains", || async {
        let (counts, _) = store.inbox_stats().await.expect("stats");
        let waiting = ["accepted", "processing", "parked"];
        counts
            .iter()
            .all(|(s, n)| *n == 0 || !waiting.contains(&s.as_str()))
            .then_some(())
    })
    .await;
    let drained = started.elapsed();
    let rows = all_rows(&store).await;
    store.close().await;

    // Nothing lost: every 202 names a stored update, under its key, and it is applied.
    let by_id: HashMap<&str, &UpdateRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let lost: Vec<&&Acked> = acked
        .iter()
        .filter(|a| {
            by_id
                .get(a.id.as_str())
                .is_none_or(|r| r.idempotency_key.as_deref() != Some(a.key.as_str()))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged updates are not stored, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let unfinished: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.status.as_str() != "applied")
        .map(|r| (r.id.as_str(), r.status.as_str()))
        .collect();
    assert!(
        unfinished.is_empty(),
        "{} of {} stored updates are not applied, e.g. {:?}",
        unfinished.len(),
        rows.len(),
        &unfinished[..unfinished.len().min(5)]
    );
    check_statuses_over_http(&server.base, &erp, &acked).await;

    // Exactly once, in receive order: per order, version, `last` and the touch history.
    for (o, (id, version_before)) in orders.iter().enumerate() {
        let mine: Vec<&UpdateRow> = rows
            .iter()
            .filter(|r| r.order_reference == reference(o))
            .collect();
        let order: Value = get(&http, &server.base, &shop, &format!("/v1/orders/{id}")).await;
        let applied = order["version"].as_i64().unwrap() - version_before;
        assert_eq!(
            applied,
            mine.len() as i64,
            "{}: version grew by {applied} for {} stored updates",
            reference(o),
            mine.len()
        );
        let keys: Vec<&str> = mine
            .iter()
            .filter_map(|r| r.idempotency_key.as_deref())
            .collect();
        assert!(
            keys.windows(2).all(|w| sent_index(w[0]) < sent_index(w[1])),
            "{}: stored out of send order: {keys:?}",
            reference(o)
        );
        assert_eq!(
            order["attributes"]["last"].as_str(),
            keys.last().copied(),
            "{}: the last stored update is not the last applied",
            reference(o)
        );

        let history: Value = get(
            &http,
            &server.base,
            &shop,
            &format!("/v1/orders/{id}/history"),
        )
        .await;
        let item = order["items"][0]["id"].as_i64().unwrap();
        let mut per_update: HashMap<&str, usize> = HashMap::new();
        let mut touches_of_item = Vec::new();
        for e in history["entries"].as_array().unwrap() {
            if let Some(update) = e["source"].as_str().and_then(|s| s.strip_prefix("erp:")) {
                *per_update.entry(update).or_default() += 1;
                if e["item"].as_i64() == Some(item) {
                    touches_of_item.push(update);
                }
            }
        }
        for r in &mine {
            let want = if r.event.is_some() { ITEMS } else { 0 };
            let got = per_update.remove(r.id.as_str()).unwrap_or(0);
            assert_eq!(
                got, want,
                "update {} wrote {got} history rows, not {want}",
                r.id
            );
        }
        assert!(
            per_update.is_empty(),
            "history of updates not in the inbox: {per_update:?}"
        );
        let stored_touches: Vec<&str> = mine
            .iter()
            .filter(|r| r.event.is_some())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            touches_of_item,
            stored_touches,
            "{}: touches applied out of receive order",
            reference(o)
        );
    }

    // The run exercised what it claims to: kills under load, and retries after them.
    let failures: u64 = logs.iter().map(|l| l.failures).sum();
    let retried = acked.iter().filter(|a| a.retried).count();
    let given_up: Vec<&String> = logs.iter().flat_map(|l| &l.given_up).collect();
    let keys: std::collections::HashSet<&str> = rows
        .iter()
        .filter_map(|r| r.idempotency_key.as_deref())
        .collect();
    let stored_unacked = given_up
        .iter()
        .filter(|k| keys.contains(k.as_str()))
        .count();
    assert!(
        acked.len() >= 100,
        "only {} updates acknowledged",
        acked.len()
    );
    assert!(
        failures > 0 && retried > 0,
        "no request failed during {KILLS} kills"
    );
    server.kill().await;
    eprintln!(
        "crash test ({backend:?}, {disruption:?}): {KILLS} times, {} acknowledged ({retried} after a retry with the same key), \
         {failures} failed requests, {} given up ({stored_unacked} of them stored anyway), \
         {} stored, all applied once; streamed {:.1} s, drained at {:.1} s, checked at {:.1} s",
        acked.len(),
        given_up.len(),
        rows.len(),
        streamed.as_secs_f64(),
        drained.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[derive(Debug)]
struct Acked {
    key: String,
    id: String,
    /// Acknowledged for a repeat with the same key after the first attempt failed.
    retried: bool,
}

#[derive(Default)]
struct ClientLog {
    acked: Vec<Acked>,
    /// Keys of requests that failed and were not sent again.
    given_up: Vec<String>,
    failures: u64,
}

fn reference(order: usize) -> String {
    format!("CRASH-{order}")
}

/// The position of a key in its client's sequence (`crash-<client>-<n>`).
fn sent_index(key: &str) -> usize {
    key.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("key")
}

/// What the clients share: the updates sent, whether the last disruption is over, and the
/// pause after each update.
struct Stream {
    sent: Arc<AtomicUsize>,
    disrupted: Arc<AtomicBool>,
    pace: Duration,
}

/// One ERP client: [`PER_CLIENT`] updates to its own orders, or more until the last
/// disruption is over, one at a time, counted in `stream.sent`. Every third one is a
/// `touch`; all set `last` to their key. Every other failed request is sent again with the
/// same key until it is acknowledged; the rest are given up.
async fn client(c: usize, token: String, base: Arc<RwLock<String>>, stream: Stream) -> ClientLog {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut log = ClientLog::default();
    for n in 0.. {
        if n >= PER_CLIENT && stream.disrupted.load(Ordering::Relaxed) {
            break;
        }
        if !stream.pace.is_zero() {
            tokio::time::sleep(stream.pace).await;
        }
        stream.sent.fetch_add(1, Ordering::Relaxed);
        let key = format!("crash-{c}-{n}");
        let order = c + CLIENTS * (n % ORDERS_PER_CLIENT);
        let mut body = json!({"order_reference": reference(order), "attributes": {"last": key}});
        if n % 3 == 2 {
            body["event"] = json!("touch");
        }
        let url = base.read().unwrap().clone();
        match send(&http, &url, &token, &key, &body).await {
            Ok(id) => log.acked.push(Acked {
                key,
                id,
                retried: false,
            }),
            Err(_) => {
                log.failures += 1;
                if log.failures % 2 == 0 {
                    log.given_up.push(key);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                let id = loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let url = base.read().unwrap().clone();
                    match send(&http, &url, &token, &key, &body).await {
                        Ok(id) => break id,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "{key} never acknowledged: {e:?}")
                        }
                    }
                };
                log.acked.push(Acked {
                    key,
                    id,
                    retried: true,
                });
            }
        }
    }
    log
}

/// Why a request was not acknowledged.
#[derive(Debug)]
enum SendError {
    /// It failed without an answer (the server died under it, or was down).
    Http(#[allow(dead_code)] reqwest::Error),
    /// 503 `transport_unavailable`: the broker did not confirm it.
    Unavailable,
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

/// Sends one async update: `Ok(id)` on 202, `Err` when the request failed without an
/// answer or the broker was down (503). Any other answer fails the test: a running server
/// must accept these updates.
async fn send(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> Result<String, SendError> {
    let resp = http
        .post(format!("{base}/v1/erp/order-updates"))
        .bearer_auth(token)
        .header("prefer", "respond-async")
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if status == StatusCode::SERVICE_UNAVAILABLE && text.contains("transport_unavailable") {
        // The broker is down: not acknowledged, like a request the server died under.
        return Err(SendError::Unavailable);
    }
    assert_eq!(status, StatusCode::ACCEPTED, "update {key}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(answer["status"], "accepted", "update {key}: {answer}");
    Ok(answer["id"].as_str().expect("id").to_owned())
}

/// `GET /v1/erp/order-updates/{id}` says `applied` for every acknowledged update.
async fn check_statuses_over_http(base: &str, token: &str, acked: &[&Acked]) {
    let ids: Vec<String> = acked.iter().map(|a| a.id.clone()).collect();
    let chunk = ids.len().div_ceil(8).max(1);
    let tasks: Vec<_> = ids
        .chunks(chunk)
        .map(|ids| {
            let (ids, base, token) = (ids.to_vec(), base.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for id in ids {
                    let v = get(&http, &base, &token, &format!("/v1/erp/order-updates/{id}")).await;
                    assert_eq!(v["status"], "applied", "{v}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("status check");
    }
}

async fn get(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Value {
    let resp = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect(path);
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.expect(path)
}

/// Every inbox row, in receive order.
async fn all_rows(store: &Store) -> Vec<UpdateRow> {
    let mut rows: Vec<UpdateRow> = Vec::new();
    loop {
        let filter = UpdateFilter {
            after_seq: rows.last().map(|r| r.seq),
            limit: 5_000,
            ..UpdateFilter::default()
        };
        let page = store.list_updates(&filter).await.expect("inbox rows");
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}
