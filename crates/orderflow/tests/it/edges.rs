//! Hostile and odd input at the edges: values the stores cannot round-trip are refused with
//! 422 and their path, an unreadable inbox row goes dead without stopping the worker, one
//! request's bad row cannot fail others, and timeouts, limits and labels hold.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, Backend, TestServer, backend_tests, eventually};

backend_tests!(
    poison_values_are_refused_and_the_worker_goes_on,
    a_planted_unreadable_update_goes_dead_and_the_rest_are_applied,
    clean_updates_beside_nul_probes_are_all_accepted,
    reservations_saturate_instead_of_overflowing,
);

const HUGE: &str = "1.7976931348623157e308";

/// Sends `body` as it is (not re-encoded), so duplicate keys and odd numbers reach the
/// server byte for byte.
async fn raw(
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
) -> (StatusCode, Value) {
    let resp = s
        .http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("prefer", "wait=10")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_invalid(what: &str, (status, body): &(StatusCode, Value), path: &str) {
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{what}: {body}");
    assert_eq!(body["error"]["path"], path, "{what}: {body}");
}

async fn poison_values_are_refused_and_the_worker_goes_on(backend: Backend) {
    let Some(s) = support::start(backend).await else {
        return;
    };
    let order = s.create_order("EDGE-1", &[("SKU-1", 1)]).await;
    let id = order["id"].as_i64().unwrap();
    let erp = "/v1/erp/order-updates";

    let huge = format!(r#"{{"order_reference":"EDGE-1","attributes":{{"x":{HUGE}}}}}"#);
    assert_invalid(
        "f64::MAX",
        &raw(&s, Method::POST, erp, &s.erp, &huge).await,
        "$.attributes.x",
    );
    let nul = r#"{"order_reference":"EDGE-1","attributes":{"note":"a\u0000b"}}"#;
    assert_invalid(
        "NUL",
        &raw(&s, Method::POST, erp, &s.erp, nul).await,
        "$.attributes.note",
    );
    let twice = r#"{"order_reference":"EDGE-1","event":"start","event":"cancel"}"#;
    assert_invalid(
        "duplicate key",
        &raw(&s, Method::POST, erp, &s.erp, twice).await,
        "$.event",
    );
    let patch = format!(r#"{{"version":1,"attributes":{{"x":[{HUGE}]}}}}"#);
    let path = format!("/v1/orders/{id}");
    assert_invalid(
        "PATCH f64::MAX",
        &raw(&s, Method::PATCH, &path, &s.shop, &patch).await,
        "$.attributes.x[0]",
    );
    let create = r#"{"reference":"EDGE-2","process":"Test01","items":[{"sku":"S","quantity":1,"attributes":{"k":"\u0000"}}]}"#;
    assert_invalid(
        "create NUL",
        &raw(&s, Method::POST, "/v1/orders", &s.shop, create).await,
        "$.items[0].attributes.k",
    );
    for (path, at) in [
        ("/v1/orders/by-reference/a%00b", "path"),
        ("/v1/orders?state=a%00", "query"),
        ("/v1/erp/order-updates/x%00", "path"),
    ] {
        let got = s.get(path, &s.admin).await;
        assert_invalid(path, &got, at);
    }

    // Nothing of that was stored; the order is readable and the worker applies the next
    // update at once.
    let (status, order) = s.get(&path, &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    let ok = r#"{"order_reference":"EDGE-1","event":"pay","attributes":{"x":1e300}}"#;
    let (status, body) = raw(&s, Method::POST, erp, &s.erp, ok).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "applied", "{body}");
    let (_, list) = s.get("/v1/admin/inbox", &s.admin).await;
    assert_eq!(list["updates"].as_array().map(Vec::len), Some(1), "{list}");
    s.stop().await;
}

/// Overwrites the stored payload of update `id` with something no reader can decode:
/// on PostgreSQL a number `jsonb` keeps exactly but `f64` cannot hold (how f64::MAX came
/// back before it was refused at the edge), on SQLite text that is not JSON.
async fn corrupt_payload(s: &TestServer, backend: Backend, id: &str) {
    let sql = match backend {
        Backend::Postgres | Backend::RabbitPostgres | Backend::RedisPostgres => {
            let big = format!("1{}", "0".repeat(320));
            let payload = format!(
                r#"{{"order_reference":"POISON-1","event":"start","attributes":{{"x":{big}}}}}"#
            );
            format!("UPDATE inbox SET payload = '{payload}'::jsonb WHERE id = '{id}'")
        }
        Backend::Sqlite => {
            format!(
                "UPDATE inbox SET payload = '{{\"order_reference\": \"POISON-1\", ' WHERE id = '{id}'"
            )
        }
    };
    s.execute_sql(&sql).await;
}

async fn update_status(s: &TestServer, id: &str) -> Value {
    let (status, body) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn a_planted_unreadable_update_goes_dead_and_the_rest_are_applied(backend: Backend) {
    let Some(s) = support::start(backend).await else {
        return;
    };
    // Parked: the order does not exist yet.
    let (status, body) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "POISON-1", "event": "start"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let poison = body["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "parked", || async {
        (update_status(&s, &poison).await["status"] == "parked").then_some(())
    })
    .await;
    corrupt_payload(&s, backend, &poison).await;

    // Its GET, the admin list and the detail still answer while it waits.
    assert_eq!(update_status(&s, &poison).await["status"], "parked");
    let (status, list) = s.get("/v1/admin/inbox", &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{list}");

    // Creating the order wakes it, beside updates of other orders in the same batches.
    s.create_order("POISON-1", &[("SKU-1", 1)]).await;
    let mut clean = Vec::new();
    for n in 0..5 {
        let reference = format!("CLEAN-{n}");
        s.create_order(&reference, &[("SKU-1", 1)]).await;
        let (status, body) = s
            .post(
                "/v1/erp/order-updates",
                &s.erp,
                json!({"order_reference": reference, "event": "pay"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        clean.push(body["id"].as_str().unwrap().to_owned());
    }
    let dead = eventually(
        Duration::from_secs(20),
        "the planted update is dead",
        || async {
            let v = update_status(&s, &poison).await;
            (v["status"] == "dead").then_some(v)
        },
    )
    .await;
    // One attempt parked it; the next found it unreadable.
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert_eq!(dead["last_error"]["code"], "invalid_payload", "{dead}");
    for id in &clean {
        eventually(
            Duration::from_secs(20),
            "a clean update is applied",
            || async { (update_status(&s, id).await["status"] == "applied").then_some(()) },
        )
        .await;
    }
    // The operator can still see it, with the reason, and retry it (dead again).
    let (status, detail) = s.get(&format!("/v1/admin/inbox/{poison}"), &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let (status, body) = s
        .post(
            &format!("/v1/admin/inbox/{poison}/retry"),
            &s.admin,
            json!({}),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    s.stop().await;
}

async fn clean_updates_beside_nul_probes_are_all_accepted(backend: Backend) {
    let Some(s) = support::start(backend).await else {
        return;
    };
    const CLEAN: usize = 1800;
    let s = std::sync::Arc::new(s);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            let mut n = worker;
            while n < CLEAN {
                let clean = json!({"order_reference": format!("NUL-{n}"), "attributes": {"n": n}});
                let (status, _) = s
                    .call(Method::POST, "/v1/erp/order-updates", &s.erp, Some(clean))
                    .await;
                statuses.push(status);
                if n % 3 == 0 {
                    let probe = json!({"order_reference": format!("NUL-{n}"), "attributes": {"n": "a\u{0}b"}});
                    let (status, body) = s
                        .call(Method::POST, "/v1/erp/order-updates", &s.erp, Some(probe))
                        .await;
                    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
                }
                n += 32;
            }
            statuses
        });
    }
    let mut accepted = 0;
    while let Some(statuses) = tasks.join_next().await {
        for status in statuses.unwrap() {
            assert_eq!(status, StatusCode::ACCEPTED);
            accepted += 1;
        }
    }
    assert_eq!(accepted, CLEAN);
    if let Ok(s) = std::sync::Arc::try_unwrap(s) {
        s.stop().await;
    }
}

async fn reservations_saturate_instead_of_overflowing(backend: Backend) {
    let Some(s) = support::start(backend).await else {
        return;
    };
    s.create_order("BIG-1", &[("BIG", 1)]).await;
    s.create_order("BIG-2", &[("BIG", 1)]).await;
    let sql = "UPDATE items SET quantity = 9000000000000000000, reserved = TRUE WHERE sku = 'BIG'";
    s.execute_sql(sql).await;
    let (status, body) = s.get("/v1/reservations/BIG", &s.shop).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reserved_quantity"], i64::MAX, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let Some(s) = support::start(Backend::Sqlite).await else {
        return;
    };
    for n in 0..50 {
        let method = Method::from_bytes(format!("INVENTED{n}").as_bytes()).unwrap();
        let _ = s
            .http
            .request(method, format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap();
    }
    let metrics = s.text("/metrics").await;
    assert!(
        !metrics.contains("INVENTED"),
        "invented methods became labels"
    );
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    s.stop().await;
}

/// A raw connection to the test server.
async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(c: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, c.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Without a `Content-Length` the body is read until it passes the limit; the 413 still
/// names the limit (the extractors get it from the server's limits layer).
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_with_the_limit() {
    let Some(s) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut c = connect(&s).await;
    let body = format!(
        r#"{{"order_reference": "R", "event": "ship", "attributes": {{"x": "{}"}}}}"#,
        "y".repeat(support::MAX_BODY)
    );
    let request = format!(
        "POST /v1/erp/order-updates HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        s.erp,
        body.len()
    );
    c.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut c, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(
        answer.contains(&format!("\"limit\":{}", support::MAX_BODY)),
        "{answer}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_content_length_is_refused_before_the_body() {
    let Some(s) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut c = connect(&s).await;
    let head = format!(
        "POST /v1/erp/order-updates HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100000000\r\n\r\n",
        s.erp
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut c, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let Some(s) = support::start_with(Backend::Sqlite, |c| {
        c.server.header_read_timeout = Duration::from_secs(1);
        c.server.keep_alive_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    // A head that never ends (slowloris), and a connection that never says anything.
    let mut slow = connect(&s).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = connect(&s).await;
    assert_eq!(read_to_close(&mut slow, Duration::from_secs(10)).await, "");
    assert_eq!(
        read_to_close(&mut silent, Duration::from_secs(10)).await,
        ""
    );
    // A keep-alive connection is served again and again before it idles out.
    let mut kept = connect(&s).await;
    for _ in 0..3 {
        kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(read_to_close(&mut kept, Duration::from_secs(10)).await, "");
    s.stop().await;
}

#[tokio::test]
async fn a_slow_request_gets_a_timeout_answer() {
    let Some(s) = support::start_with(Backend::Sqlite, |c| {
        c.server.body_read_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let mut c = connect(&s).await;
    let head = format!(
        "POST /v1/erp/order-updates HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"order_",
        s.erp
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut c, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_503() {
    let Some(s) = support::start_with(Backend::Sqlite, |c| {
        c.server.request_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    // Another writer holds SQLite's write lock, so creating an order waits for it.
    use sqlx::Connection as _;
    let mut blocker = sqlx::SqliteConnection::connect(&s.database_url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let body = serde_json::json!({"reference": "SLOW-1", "process": "Test01",
        "items": [{"sku": "S", "quantity": 1}]});
    let (status, answer) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "timeout", "{answer}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    // Health does not wait for the store.
    assert_eq!(s.get("/healthz", &s.shop).await.0, StatusCode::OK);
    s.stop().await;
}

/// A row whose non-JSON column cannot be decoded (here a hand-written `received_at`) is
/// set dead by the worker, without reading it, while the other orders' updates apply.
#[tokio::test]
async fn a_row_with_an_undecodable_column_is_buried_and_the_rest_apply() {
    let Some(s) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (status, body) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "GARBLED-1", "event": "pay"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let garbled = body["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "parked", || async {
        (update_status(&s, &garbled).await["status"] == "parked").then_some(())
    })
    .await;
    s.execute_sql(&format!(
        "UPDATE inbox SET received_at = 'not a time' WHERE id = '{garbled}'"
    ))
    .await;
    s.create_order("GARBLED-1", &[("SKU-1", 1)]).await;
    s.create_order("FINE-1", &[("SKU-1", 1)]).await;
    let (_, fine) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "FINE-1", "event": "pay"}),
        )
        .await;
    let fine = fine["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(20),
        "the other update applies",
        || async { (update_status(&s, &fine).await["status"] == "applied").then_some(()) },
    )
    .await;
    use sqlx::Connection as _;
    let mut c = sqlx::SqliteConnection::connect(&s.database_url)
        .await
        .unwrap();
    let (status, errors): (String, String) =
        sqlx::query_as("SELECT status, errors FROM inbox WHERE id = $1")
            .bind(&garbled)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(status, "dead", "{errors}");
    assert!(errors.contains("unreadable_row"), "{errors}");
    s.stop().await;
}
