//! A real HTTP receiver for outbound requests (after-commit HTTP commands), on
//! 127.0.0.1:0: it answers from a script (fail, hang, 429 with `Retry-After`, ...), then
//! 200, and records every request with its `Idempotency-Key`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;

/// One scripted answer.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: N` (seconds).
    RetryAfter(u64),
    /// Answers 200 after this long (longer than the sender's timeout: a hang).
    Slow(Duration),
}

/// A request as it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub key: Option<String>,
    pub at: Instant,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    /// Used when the script is empty.
    default: Option<Reply>,
    hits: Vec<Hit>,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{*path}", any(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// The next answers, in order; then the default (200 unless [`Receiver::always`]).
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// The answer when the script is empty.
    pub(crate) fn always(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// Requests per idempotency key.
    pub(crate) fn by_key(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for h in self.hits() {
            *m.entry(h.key.unwrap_or_default()).or_default() += 1;
        }
        m
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut i = inner.lock().unwrap();
        i.hits.push(Hit {
            key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: Instant::now(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let default = i.default.clone().unwrap_or(Reply::Ok);
        i.script.pop_front().unwrap_or(default)
    };
    match reply {
        Reply::Ok => (StatusCode::OK, "ok").into_response(),
        Reply::Status(s) => {
            (StatusCode::from_u16(s).unwrap(), format!("failed with {s}")).into_response()
        }
        Reply::RetryAfter(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
    }
}
