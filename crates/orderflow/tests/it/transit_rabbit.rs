//! The RabbitMQ inbox transport on PostgreSQL, beyond the ERP behaviour tests it also runs
//! (`api_erp.rs`, `crash.rs`): an update in transit answers `accepted` at once and 404 to
//! anyone else; a consumer in another process (`orderflow worker`) applies it and a
//! waiting request in the server learns the outcome; a message that cannot be read goes
//! to the dead-letter queue, counted, and the updates after it are applied.

use std::process::Stdio;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use orderflow::domain::types::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::{self, AMQP_URL, Backend, TestServer, eventually, start_with};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn in_transit_then_applied_by_a_worker_process() {
    // No consumer in the server: updates stay in the broker until the worker starts.
    let Some(s) = start_with(Backend::RabbitPostgres, |c| c.worker.in_process = false).await else {
        return;
    };
    let created = s.create_order("T-1", &[("A", 1)]).await;
    let v0 = created["version"].as_i64().unwrap();
    let body = json!({"order_reference": "T-1", "event": "pay"});
    let (code, r) = s.post("/v1/erp/order-updates", &s.erp, body.clone()).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();

    // Read-after-write: in transit, the id is known.
    let (code, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["in_transit"], true);
    assert_eq!(v["order_reference"], "T-1");
    assert!(v["received_at"].is_string(), "{v}");
    // Only to its client (and admins); a forged id is unknown.
    let other = orderflow::auth::create_client(&s.store, "erp-2", Role::Erp, false)
        .await
        .unwrap();
    let (code, _) = s
        .get(&format!("/v1/erp/order-updates/{id}"), &other.token)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = s
        .get(&format!("/v1/erp/order-updates/{id}"), &s.admin)
        .await;
    assert_eq!(code, StatusCode::OK);
    let forged = format!("{}x", &id[..id.len() - 1]);
    let (code, _) = s
        .get(&format!("/v1/erp/order-updates/{forged}"), &s.erp)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // A keyed repeat in transit gets the identical answer.
    let key = [("idempotency-key", "attr-T-1")];
    let keyed = json!({"order_reference": "T-1", "attributes": {"k": 1}});
    let first = s.post_update(&key, &keyed).await;
    let again = s.post_update(&key, &keyed).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    assert_eq!(first, again);

    // Wait mode with no consumer: 202 at the deadline, still in transit.
    let waited = s
        .post_update(
            &[("prefer", "wait=1")],
            &json!({"order_reference": "T-1", "attributes": {"w": 1}}),
        )
        .await;
    assert_eq!(waited.0, StatusCode::ACCEPTED, "{}", waited.1);
    assert_eq!(waited.1["status"], "accepted");

    let stats = eventually(WAIT, "stats count what waits", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        (st["transit"]["in_transit"] == 4).then_some(st)
    })
    .await;
    assert_eq!(stats["transit"]["transport"], "rabbitmq");
    assert_eq!(stats["inbox"]["accepted"], 0, "nothing in the database yet");
    // The command line says it too.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "inbox",
            "list",
            "--database-url",
            &s.database_url,
            "--config",
        ])
        .arg(config_file(&s, dir.path(), ""))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "in transit (rabbitmq): 4 messages (one or more updates each) waiting for a consumer"
        ),
        "{stderr}"
    );

    // A worker process consumes: everything is applied once, in order.
    let mut worker = start_worker(&s, dir.path(), "").await;
    let v = s.until_update_status(&id, "applied", WAIT).await;
    assert!(v.get("in_transit").is_none(), "{v}");
    let keyed_id = first.1["id"].as_str().unwrap();
    s.until_update_status(keyed_id, "applied", WAIT).await;
    // The server's waiting request learns the outcome from the worker process.
    let (code, r) = s
        .post_update(
            &[("prefer", "wait=20")],
            &json!({"order_reference": "T-1", "attributes": {"w": 2}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "applied");
    let (_, o) = s.get("/v1/orders/by-reference/T-1", &s.shop).await;
    // pay, k, w=1, w=2: the repeat had no effect of its own.
    assert_eq!(o["version"].as_i64().unwrap(), v0 + 4, "{o}");
    assert_eq!(o["attributes"]["w"], 2);
    let _ = worker.kill().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn unreadable_messages_are_dead_lettered_and_counted() {
    let Some(s) = start_with(Backend::RabbitPostgres, |_| {}).await else {
        return;
    };
    let prefix = s.rabbit_prefix.clone().unwrap();
    s.create_order("P-1", &[("A", 1)]).await;
    // Not from orderflow: garbage on both shards, ahead of a real update.
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for shard in 0..2 {
        ch.basic_publish(
            format!("{prefix}.updates").into(),
            format!("shard.{shard}").into(),
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    let (code, r) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "P-1", "event": "pay"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    s.until_update_status(r["id"].as_str().unwrap(), "applied", WAIT)
        .await;
    let stats = eventually(WAIT, "dead-lettered", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        (st["transit"]["dead_lettered"] == 2).then_some(st)
    })
    .await;
    assert_eq!(stats["transit"]["in_transit"], 0, "{stats}");
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("orderflow_transit_dead_lettered_total"),
        "{metrics}"
    );
    let _ = conn.close(200, "done".into()).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn overdue_updates_move_into_the_database_inbox() {
    // No consumer, and a short time in transit: the broker dead-letters the update to the
    // overdue queue, whose consumer stores it as `accepted` for the database worker.
    let Some(s) = start_with(Backend::RabbitPostgres, |c| {
        c.worker.in_process = false;
        c.inbox.rabbitmq.in_transit_ttl = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    s.create_order("O-1", &[("A", 1)]).await;
    let (code, r) = s
        .post_update(&[], &json!({"order_reference": "O-1", "event": "pay"}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "moved to the overdue queue", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        (st["transit"]["overdue"] == 1 && st["transit"]["in_transit"] == 0).then_some(())
    })
    .await;
    let (_, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
    assert_eq!(v["in_transit"], true, "still in the broker: {v}");
    let dir = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&s, dir.path(), "in_transit_ttl = \"1s\"\n").await;
    s.until_update_status(&id, "applied", WAIT).await;
    let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
    assert_eq!(st["transit"]["overdue"], 0, "{st}");
    let _ = worker.kill().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn a_fleet_of_three_workers_one_killed_applies_each_update_once_in_order() {
    const ORDERS: usize = 12;
    const PER_ORDER: usize = 25;
    let Some(s) = start_with(Backend::RabbitPostgres, |c| {
        c.worker.in_process = false;
        c.inbox.rabbitmq.shards = 4;
    })
    .await
    else {
        return;
    };
    let mut before = Vec::new();
    for o in 0..ORDERS {
        let created = s.create_order(&format!("FL-{o}"), &[("A", 1)]).await;
        before.push(created["version"].as_i64().unwrap());
    }
    // Every update is published before any worker runs: the first worker to consume a
    // shard gets a full prefetch of it unacknowledged.
    for n in 0..PER_ORDER {
        let updates: Vec<Value> = (0..ORDERS)
            .map(|o| json!({"order_reference": format!("FL-{o}"), "attributes": {"last": n}}))
            .collect();
        let (code, r) = s
            .post(
                "/v1/erp/order-updates/batch",
                &s.erp,
                json!({ "updates": updates }),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    }
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut first = start_worker(&s, dirs[0].path(), "shards = 4\n").await;
    // Killed once it has applied something (and, with 300 updates in flight, before it
    // is done): its unacknowledged deliveries go to the other two.
    eventually(WAIT, "the first worker applies", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        (st["inbox"]["applied"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    let mut others = Vec::new();
    for dir in &dirs[1..] {
        others.push(start_worker(&s, dir.path(), "shards = 4\n").await);
    }
    first.kill().await.unwrap();
    let (_, at_kill) = s.get("/v1/admin/stats", &s.admin).await;
    let total = (ORDERS * PER_ORDER) as u64;
    let stats = eventually(Duration::from_secs(60), "all applied", || async {
        let (_, st) = s.get("/v1/admin/stats", &s.admin).await;
        (st["inbox"]["applied"] == total).then_some(st)
    })
    .await;
    for status in ["accepted", "processing", "parked", "dead", "rejected"] {
        assert_eq!(stats["inbox"][status], 0, "{status}: {stats}");
    }
    for (o, v0) in before.iter().enumerate() {
        let (_, order) = s
            .get(&format!("/v1/orders/by-reference/FL-{o}"), &s.shop)
            .await;
        assert_eq!(
            order["version"].as_i64().unwrap() - v0,
            PER_ORDER as i64,
            "FL-{o}: one change per update: {order}"
        );
        assert_eq!(
            order["attributes"]["last"],
            PER_ORDER - 1,
            "FL-{o}: the last one last"
        );
    }
    eprintln!(
        "fleet: {total} updates, {} applied when the first worker was killed, all applied once",
        at_kill["inbox"]["applied"]
    );
    for mut w in others {
        let _ = w.kill().await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn each_request_of_a_group_hears_of_its_own_shard_only() {
    use orderflow::inbox::transit::rabbit::shard_of;
    let Some(s) = start_with(Backend::RabbitPostgres, |_| {}).await else {
        return;
    };
    let prefix = s.rabbit_prefix.clone().unwrap();
    // Once an update went through, the consumers have declared the topology (again).
    let (code, r) = s
        .post_update(&[], &json!({"order_reference": "G-warm", "event": "pay"}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    s.until_update_status(r["id"].as_str().unwrap(), "parked", WAIT)
        .await;
    // Shard 1 loses its binding: what goes there is unroutable, shard 0 is not touched.
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let (queue, exchange) = (format!("{prefix}.shard.1"), format!("{prefix}.updates"));
    ch.queue_unbind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "shard.1".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let references: Vec<String> = (0..200).map(|i| format!("G-{i}")).collect();
    let post = |r: String| {
        let s = &s;
        async move {
            let body = json!({"order_reference": r, "attributes": {"g": 1}});
            let (code, answer) = s.post("/v1/erp/order-updates", &s.erp, body).await;
            (shard_of(&r, 2), code, answer)
        }
    };
    // Many at once: requests arriving while groups wait for their confirms go together,
    // so shard 0's requests share messages' confirm rounds with shard 1's.
    let answers = futures_util::future::join_all(references.into_iter().map(post)).await;
    for (shard, code, answer) in &answers {
        if *shard == 0 {
            assert_eq!(*code, StatusCode::ACCEPTED, "shard 0: {answer}");
        } else {
            assert_eq!(*code, StatusCode::SERVICE_UNAVAILABLE, "shard 1: {answer}");
            assert_eq!(answer["error"]["code"], "transport_unavailable", "{answer}");
        }
    }
    assert!(answers.iter().any(|a| a.0 == 0) && answers.iter().any(|a| a.0 == 1));
    // Some group held more than one request (else this test proves nothing).
    let metrics = s.text("/metrics").await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("rabbitmq"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (sum, count) = (
        value("orderflow_transit_group_size_sum"),
        value("orderflow_transit_group_size_count"),
    );
    assert!(sum > count, "no group of several updates: {sum} / {count}");
    // Bound again, shard 1 takes updates again.
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "shard.1".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let r = (0..)
        .map(|i| format!("G-{i}"))
        .find(|r| shard_of(r, 2) == 1)
        .unwrap();
    let (code, answer) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": r, "attributes": {"g": 2}}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    let _ = conn.close(200, "done".into()).await;
    s.stop().await;
}

/// `orderflow worker` on the server's database and queues (see [`config_file`]).
async fn start_worker(s: &TestServer, dir: &std::path::Path, rabbit: &str) -> Child {
    let path = config_file(s, dir, rabbit);
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("worker")
        .args(["--database-url", &s.database_url])
        .arg("--config")
        .arg(&path)
        .arg("--processes")
        .arg(support::fixtures().join("processes"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start orderflow worker")
}

/// A configuration file for the server's queues with the test processes' bindings, and
/// `rabbit` added to `[inbox.rabbitmq]` (the queues' arguments must match the server's:
/// the broker refuses to declare a queue again with others).
fn config_file(s: &TestServer, dir: &std::path::Path, rabbit: &str) -> std::path::PathBuf {
    // The test servers' default, unless `rabbit` says otherwise.
    let shards = if rabbit.contains("shards") {
        ""
    } else {
        "shards = 2\n"
    };
    let config = format!(
        "[inbox]\ntransport = \"rabbitmq\"\n[inbox.rabbitmq]\nurl = \"{AMQP_URL}\"\n\
         prefix = \"{}\"\n{shards}{rabbit}\
         [commands.\"Test/Stamp\"]\ntype = \"set_attributes\"\nscope = \"order\"\n\
         values = {{ stamped = true }}\n\
         [commands.\"Test/EmitShip\"]\ntype = \"emit_event\"\nevent = \"ship\"\n\
         [conditions.\"Test/Approved\"]\ntype = \"attribute\"\npath = \"approved\"\n",
        s.rabbit_prefix.as_deref().unwrap()
    );
    let path = dir.join("orderflow.toml");
    std::fs::write(&path, config).unwrap();
    path
}
