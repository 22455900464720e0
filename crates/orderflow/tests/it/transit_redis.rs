//! The Redis inbox transport, beyond the ERP behaviour tests it also runs (`api_erp.rs`,
//! `crash.rs`): a Redis that does not fsync acknowledged writes is refused unless the loss
//! is accepted, and the mode is shown by `/readyz`, `/metrics` and the stats; entries a dead
//! consumer had read are claimed after its lease and applied once, in order; entries that
//! cannot be read are dead-lettered and counted.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use orderflow::config::RedisConfig;
use orderflow::inbox::transit::TransitError;
use orderflow::inbox::transit::redis::{Durability, Redis};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, REDIS_URL, RedisKeys, eventually, start_with};

const WAIT: Duration = Duration::from_secs(30);

/// A `redis-server` of the test's own, on a free port with its own directory; killed by
/// its PID when dropped.
struct OwnRedis {
    child: Child,
    url: String,
    port: u16,
    persistence: Vec<String>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    async fn start(persistence: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let persistence: Vec<String> = persistence.iter().map(|s| (*s).to_owned()).collect();
        let child = Self::spawn(port, &persistence, dir.path()).await;
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            port,
            persistence,
            dir,
        }
    }

    async fn spawn(port: u16, persistence: &[String], dir: &std::path::Path) -> Child {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .args(persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        eventually(Duration::from_secs(10), "redis-server answers", || async {
            let mut con = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .ok()
        })
        .await;
        child
    }

    /// SIGKILL, then start again on the same port and directory.
    async fn restart(&mut self) {
        self.child.kill().expect("SIGKILL redis-server");
        self.child.wait().expect("redis-server ended");
        self.child = Self::spawn(self.port, &self.persistence, self.dir.path()).await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(url: &str, keys: &RedisKeys, accept_loss: Option<&str>) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        prefix: keys.prefix.clone(),
        shards: 2,
        accept_loss: accept_loss.map(str::to_owned),
        ..RedisConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_does_not_fsync_is_refused_unless_the_loss_is_accepted() {
    if !crate::support::redis_here() {
        return;
    }
    // The shared test Redis runs without persistence.
    let keys = RedisKeys::new(REDIS_URL);
    let err = Redis::connect(config(REDIS_URL, &keys, None))
        .await
        .expect_err("no persistence must be refused");
    assert!(matches!(err, TransitError::Durability(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("appendonly \"no\""), "{text}");
    assert!(text.contains("appendfsync"), "{text}");
    assert!(text.contains("save \"\""), "{text}");
    assert!(text.contains("accept_loss"), "{text}");
    let accepted = Redis::connect(config(REDIS_URL, &keys, Some("up to everything")))
        .await
        .expect("started with accept_loss");
    assert_eq!(accepted.durability(), Durability::AcceptedLoss);

    // appendfsync everysec: up to a second of acknowledged writes can be lost: refused.
    let everysec = OwnRedis::start(&["--appendonly", "yes", "--appendfsync", "everysec"]).await;
    let keys = RedisKeys::new(&everysec.url);
    let text = Redis::connect(config(&everysec.url, &keys, None))
        .await
        .expect_err("everysec must be refused")
        .to_string();
    assert!(
        text.contains("appendonly \"yes\"") && text.contains("appendfsync \"everysec\""),
        "{text}"
    );
    // appendfsync always: started, and says so.
    let always = OwnRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let keys = RedisKeys::new(&always.url);
    let redis = Redis::connect(config(&always.url, &keys, None))
        .await
        .expect("fsync always is durable");
    assert_eq!(redis.durability(), Durability::FsyncAlways);
}

/// The real binary stops with the reason (the shared test Redis runs without persistence,
/// as `.ci/run` starts it).
#[test]
fn serve_refuses_to_start_on_a_redis_without_fsync() {
    if !crate::support::redis_here() {
        return;
    }
    let keys = RedisKeys::new(REDIS_URL);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orderflow.toml");
    std::fs::write(
        &config,
        format!(
            "[inbox]\ntransport = \"redis\"\n[inbox.redis]\nurl = \"{REDIS_URL}\"\n\
             prefix = \"{}\"\n",
            keys.prefix
        ),
    )
    .unwrap();
    let database = format!("sqlite://{}", dir.path().join("orderflow.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--processes")
        .arg(crate::support::fixtures().join("processes"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot start the inbox transport")
            && stderr.contains("does not fsync acknowledged writes (appendonly \"no\"")
            && stderr.contains("accept_loss"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn fsync_always_mode_is_shown_and_updates_are_applied() {
    let own = OwnRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let url = own.url.clone();
    let Some(s) = start_with(Backend::RedisPostgres, |c| {
        c.inbox.redis.url = url;
        c.inbox.redis.accept_loss = None;
    })
    .await
    else {
        return;
    };
    let (code, ready) = s.get("/readyz", &s.admin).await;
    assert_eq!(code, StatusCode::OK, "{ready}");
    assert_eq!(ready["transit"]["transport"], "redis", "{ready}");
    assert_eq!(ready["transit"]["durability"], "fsync_always", "{ready}");

    s.create_order("F-1", &[("A", 1)]).await;
    let (code, r) = s
        .post_update(
            &[("prefer", "wait=20")],
            &json!({"order_reference": "F-1", "event": "pay"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "applied");

    let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
    assert_eq!(st["transit"]["transport"], "redis", "{st}");
    assert_eq!(st["transit"]["durability"], "fsync_always", "{st}");
    assert_eq!(st["transit"]["in_transit"], 0, "{st}");
    assert_eq!(
        st["transit"]["consumers"], 2,
        "both shard leases held: {st}"
    );
    let metrics = s.text("/metrics").await;
    assert!(
        metrics
            .contains("orderflow_transit_durability{transport=\"redis\",mode=\"fsync_always\"} 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn a_dead_consumers_entries_are_claimed_after_its_lease_and_poison_is_dead_lettered() {
    // A consumer of another process holds both shard leases; it reads the updates and
    // dies without acknowledging them.
    let keys = RedisKeys::new(REDIS_URL);
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let lease = |n: u16| format!("{}:lease:{n}", keys.prefix);
    let shard = |n: u16| format!("{}:shard:{n}", keys.prefix);
    for n in 0..2 {
        let _: () = redis::cmd("SET")
            .arg(lease(n))
            .arg("dead-consumer")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let prefix = keys.prefix.clone();
    let Some(s) = start_with(Backend::RedisPostgres, |c| {
        c.inbox.redis.prefix = prefix;
        c.inbox.redis.lease = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let created = s.create_order("D-1", &[("A", 1)]).await;
    let v0 = created["version"].as_i64().unwrap();
    let mut ids = Vec::new();
    for body in [
        json!({"order_reference": "D-1", "event": "pay"}),
        json!({"order_reference": "D-1", "attributes": {"n": 1}}),
        json!({"order_reference": "D-1", "attributes": {"n": 2}}),
    ] {
        let (code, r) = s.post_update(&[], &body).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{r}");
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    // In transit, with the id known.
    let (code, v) = s
        .get(&format!("/v1/erp/order-updates/{}", ids[0]), &s.erp)
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "accepted");
    // Not from orderflow: garbage on both shards, after the updates.
    for n in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(shard(n))
            .arg("*")
            .arg("m")
            .arg("{not json")
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("orderflow")
        .arg("dead-consumer")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(shard(0))
        .arg(shard(1))
        .arg(">")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let read: usize = read.keys.iter().map(|k| k.ids.len()).sum();
    assert_eq!(read, 5, "three updates and two unreadable entries");
    let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
    assert_eq!(st["transit"]["in_transit"], 5, "{st}");
    // The command line says it too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orderflow.toml");
    std::fs::write(
        &config,
        format!(
            "[inbox]\ntransport = \"redis\"\n[inbox.redis]\nurl = \"{REDIS_URL}\"\n\
             prefix = \"{}\"\nshards = 2\naccept_loss = \"tests\"\n",
            keys.prefix
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "inbox",
            "list",
            "--database-url",
            &s.database_url,
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("in transit (redis): 5 waiting for a consumer, 0 dead-lettered"),
        "{stderr}"
    );
    // The dead consumer's leases run out a second from now.
    for n in 0..2 {
        let _: () = redis::cmd("SET")
            .arg(lease(n))
            .arg("dead-consumer")
            .arg("PX")
            .arg(1_000)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    for id in &ids {
        s.until_update_status(id, "applied", WAIT).await;
    }
    let (_, o) = s.get("/v1/orders/by-reference/D-1", &s.shop).await;
    assert_eq!(
        o["version"].as_i64().unwrap(),
        v0 + 3,
        "each applied once: {o}"
    );
    assert_eq!(o["attributes"]["n"], 2, "in order: {o}");
    let st = eventually(WAIT, "dead-lettered and drained", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        (st["transit"]["dead_lettered"] == 2 && st["transit"]["in_transit"] == 0).then_some(st)
    })
    .await;
    // Counted in this process (other tests in it may add theirs).
    assert!(st["transit"]["redeliveries"].as_u64().unwrap() >= 3, "{st}");
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("orderflow_transit_dead_lettered_total{transport=\"redis\"}"),
        "{metrics}"
    );
    s.stop().await;
}

/// Clients, and updates each sends (one at a time, to its own orders).
const LOSS_CLIENTS: usize = 8;
const LOSS_PER_CLIENT: usize = 150;
const LOSS_ORDERS_PER_CLIENT: usize = 2;
/// Times Redis is SIGKILLed and restarted during a run.
const LOSS_KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn redis_killed_under_load_loses_acknowledged_updates_only_without_fsync() {
    // The measured loss of each persistence setting (README: "Redis killed under load").
    let mut table = Vec::new();
    for (name, persistence) in [
        ("none", &["--appendonly", "no"][..]),
        (
            "everysec",
            &["--appendonly", "yes", "--appendfsync", "everysec"][..],
        ),
        (
            "always",
            &["--appendonly", "yes", "--appendfsync", "always"][..],
        ),
    ] {
        let Some(run) = redis_kill_run(persistence, name != "always").await else {
            return;
        };
        eprintln!(
            "redis kill ({name}): {} kills, {} acknowledged, {} in transit just before the kills, \
             {} acknowledged and lost, {} stored, all stored applied once and in order",
            LOSS_KILLS, run.acked, run.in_transit_at_kills, run.lost, run.stored
        );
        table.push((name, run));
    }
    let always = &table[2].1;
    assert_eq!(
        always.lost, 0,
        "appendfsync always loses nothing acknowledged"
    );
    assert!(
        always.acked >= LOSS_CLIENTS * LOSS_PER_CLIENT / 2,
        "{}",
        always.acked
    );
}

struct LossRun {
    acked: usize,
    lost: usize,
    stored: usize,
    in_transit_at_kills: usize,
}

/// One run: a server on the Redis transport with its own `redis-server` (`persistence`),
/// clients sending updates, Redis SIGKILLed and restarted [`LOSS_KILLS`] times; then what
/// was acknowledged and never reached the database. Everything that did reach it must be
/// applied once and in order.
async fn redis_kill_run(persistence: &[&str], accept_loss: bool) -> Option<LossRun> {
    let mut own = OwnRedis::start(persistence).await;
    let url = own.url.clone();
    let s = start_with(Backend::RedisPostgres, |c| {
        c.inbox.redis.url = url;
        c.inbox.redis.accept_loss = accept_loss.then(|| "measured by this test".to_owned());
        c.inbox.redis.lease = Duration::from_secs(1);
    })
    .await?;
    let s = std::sync::Arc::new(s);
    let mut v0 = std::collections::HashMap::new();
    for c in 0..LOSS_CLIENTS {
        for k in 0..LOSS_ORDERS_PER_CLIENT {
            let r = format!("L-{c}-{k}");
            let o = s.create_order(&r, &[("A", 1)]).await;
            v0.insert(r, o["version"].as_i64().unwrap());
        }
    }
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..LOSS_CLIENTS)
        .map(|c| {
            let (s, sent) = (s.clone(), sent.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..LOSS_PER_CLIENT {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let key = format!("loss-{c}-{n}");
                    let body = json!({
                        "order_reference": format!("L-{c}-{}", n % LOSS_ORDERS_PER_CLIENT),
                        "attributes": {"n": n},
                    });
                    // Sent again with the same key until acknowledged (503 while Redis is
                    // down): one update, one effect.
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    loop {
                        let (code, r) = s.post_update(&[("idempotency-key", &key)], &body).await;
                        if code == StatusCode::ACCEPTED {
                            acked.push(r["id"].as_str().unwrap().to_owned());
                            break;
                        }
                        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{r}");
                        assert!(std::time::Instant::now() < deadline, "{key}: {r}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                acked
            })
        })
        .collect();
    let total = LOSS_CLIENTS * LOSS_PER_CLIENT;
    // Entries in the streams (not yet applied) just before each kill.
    let mut in_transit_at_kills = 0;
    for k in 1..=LOSS_KILLS {
        while sent.load(std::sync::atomic::Ordering::Relaxed) < k * total / (LOSS_KILLS + 1) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        in_transit_at_kills += st["transit"]["in_transit"].as_u64().unwrap_or(0) as usize;
        own.restart().await;
    }
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.expect("client"));
    }
    // Drained: nothing in the streams, nothing waiting in the database.
    eventually(Duration::from_secs(60), "drained", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        let waiting = ["accepted", "processing", "parked"]
            .iter()
            .map(|k| st["inbox"][k].as_i64().unwrap_or(0))
            .sum::<i64>();
        (st["transit"]["in_transit"] == 0 && waiting == 0).then_some(())
    })
    .await;
    let mut lost = 0;
    for id in &acked {
        match s.store.update_by_id(id).await.expect("read") {
            None => lost += 1,
            Some(row) => assert_eq!(row.status.as_str(), "applied", "{id}"),
        }
    }
    // Each stored update applied once (the version grows by one per update), in order
    // (the order ends with the attribute of its last stored update).
    let rows = s
        .store
        .list_updates(&orderflow::store::inbox::UpdateFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("rows");
    for (reference, v) in &v0 {
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| &r.order_reference == reference)
            .collect();
        let (_, o) = s
            .get(&format!("/v1/orders/by-reference/{reference}"), &s.shop)
            .await;
        assert_eq!(
            o["version"].as_i64().unwrap(),
            v + mine.len() as i64,
            "{reference}: once each"
        );
        let last = mine
            .iter()
            .filter_map(|r| r.payload.ok()?["attributes"]["n"].as_i64())
            .max();
        assert_eq!(o["attributes"]["n"].as_i64(), last, "{reference}: in order");
    }
    let stored = rows.len();
    drop(own);
    match std::sync::Arc::try_unwrap(s) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("server still shared"),
    }
    Some(LossRun {
        acked: acked.len(),
        lost,
        stored,
        in_transit_at_kills,
    })
}
