//! The RabbitMQ transport when the broker stops answering but keeps the connection open
//! (a hung broker, a stalled network): requests get 503 `transport_unavailable` within the
//! confirm and connect timeouts, never a 202 without a confirm and never a request held
//! for good; once the broker answers again, the next request is accepted on a new
//! connection. The stall is a TCP proxy in front of the real broker that stops forwarding.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Backend, TestServer, eventually, start_with};

/// The broker the proxy forwards to (the host and port of `support::AMQP_URL`).
const BROKER: &str = "127.0.0.1:5672";
/// Longer than the confirm timeout (10 s) plus a connect timeout (5 s): a request that
/// takes this long was held, not answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(40);

/// A TCP proxy to [`BROKER`] that holds every byte while `stalled` is set.
struct Proxy {
    addr: String,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stalled);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(BROKER).await else {
                    continue;
                };
                let (client_in, client_out) = client.into_split();
                let (broker_in, broker_out) = broker.into_split();
                tokio::spawn(pipe(client_in, broker_out, Arc::clone(&flag)));
                tokio::spawn(pipe(broker_in, client_out, Arc::clone(&flag)));
            }
        });
        Self {
            addr,
            stalled,
            task,
        }
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding what it read while `stalled` is set.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Posts an async update with `key`; fails the test if no answer comes in
/// [`ANSWER_WITHIN`]. The status, the error code (if any) and the update id (on 202).
async fn post(s: &TestServer, key: &str, reference: &str) -> (StatusCode, String, String) {
    let body = json!({"order_reference": reference, "attributes": {"key": key}});
    let headers = [("prefer", "respond-async"), ("idempotency-key", key)];
    let started = Instant::now();
    let (code, answer) = tokio::time::timeout(ANSWER_WITHIN, s.post_update(&headers, &body))
        .await
        .unwrap_or_else(|_| panic!("{key}: no answer within {ANSWER_WITHIN:?}"));
    eprintln!("{key}: {code} in {:?}", started.elapsed());
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (code, text(&answer["error"]["code"]), text(&answer["id"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn a_broker_that_stops_answering_gets_503_and_then_a_new_connection() {
    let proxy = Proxy::start().await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let Some(s) = start_with(Backend::RabbitPostgres, |c| c.inbox.rabbitmq.url = url).await else {
        return;
    };
    let (code, _, _) = post(&s, "stall-0", "STALL-1").await;
    assert_eq!(code, StatusCode::ACCEPTED);

    proxy.stall(true);
    // Published, never confirmed: 503 once the confirm is overdue. Then the connection is
    // given up, and opening a new one through the stalled proxy times out: 503 again.
    for key in ["stall-1", "stall-2"] {
        let (code, error, _) = post(&s, key, "STALL-1").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{key}");
        assert_eq!(error, "transport_unavailable", "{key}");
    }

    proxy.stall(false);
    // The broker answers again: the same request, repeated with its key, is accepted.
    let id = eventually(Duration::from_secs(30), "accepted again", || async {
        let (code, _, id) = post(&s, "stall-1", "STALL-1").await;
        (code == StatusCode::ACCEPTED).then_some(id)
    })
    .await;
    let (code, _, again) = post(&s, "stall-1", "STALL-1").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(
        again, id,
        "a repeat with the same key names the same update"
    );
    s.stop().await;
    proxy.task.abort();
}
