//! A webhook receiver for the subscription tests (the effects tests have their own in
//! `receiver`, which scripts answers and counts idempotency keys instead): a real HTTP server (axum on
//! 127.0.0.1:0) that checks every delivery's Standard Webhooks signature with its own
//! HMAC-SHA256 (the `hmac` and `sha2` crates, not orderflow's code), records what came, and
//! answers as the test tells it: 200, a status, 429 with `Retry-After`, or not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: N` (seconds).
    TooMany(u64),
    /// No answer for this long (longer than the sender waits).
    Hang(Duration),
    /// 200, after this long (shorter than the sender waits).
    Slow(Duration),
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Got {
    pub id: String,
    pub raw: String,
    pub body: Value,
    pub signature_ok: bool,
    pub answered: Answer,
}

/// Decides the answer from the event's version and how many times this event id came
/// before (0 on its first attempt).
pub(crate) type Script = dyn Fn(i64, usize) -> Answer + Send + Sync;

struct Inner {
    secret: Option<Vec<u8>>,
    script: Arc<Script>,
    seen: HashMap<String, usize>,
    got: Vec<Got>,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl Receiver {
    /// Starts a receiver at `http://127.0.0.1:PORT/hook` that answers 200.
    pub(crate) async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            secret: None,
            script: Arc::new(|_, _| Answer::Ok),
            seen: HashMap::new(),
            got: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, url }
    }

    /// The `whsec_` secret deliveries are verified with.
    pub(crate) fn set_secret(&self, whsec: &str) {
        let key = STANDARD
            .decode(whsec.strip_prefix("whsec_").unwrap())
            .unwrap();
        self.inner.lock().unwrap().secret = Some(key);
    }

    pub(crate) fn script(&self, script: impl Fn(i64, usize) -> Answer + Send + Sync + 'static) {
        self.inner.lock().unwrap().script = Arc::new(script);
    }

    pub(crate) fn got(&self) -> Vec<Got> {
        self.inner.lock().unwrap().got.clone()
    }

    /// The requests answered 2xx (a `Slow` answer counts: the sender waits for it).
    pub(crate) fn delivered(&self) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| matches!(g.answered, Answer::Ok | Answer::Slow(_)))
            .collect()
    }
}

async fn hook(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let raw = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let version = parsed["data"]["version"].as_i64().unwrap_or(-1);
    let answer = {
        let mut g = inner.lock().unwrap();
        let signature_ok = g
            .secret
            .as_deref()
            .is_some_and(|key| verify(key, &id, &ts, &body, &sig));
        let n = g.seen.entry(id.clone()).or_insert(0);
        let before = *n;
        *n += 1;
        let answer = (g.script)(version, before);
        g.got.push(Got {
            id,
            raw,
            body: parsed,
            signature_ok,
            answered: answer,
        });
        answer
    };
    match answer {
        Answer::Ok => StatusCode::OK.into_response(),
        Answer::Status(s) => (
            StatusCode::from_u16(s).unwrap(),
            "receiver told to fail this one",
        )
            .into_response(),
        Answer::TooMany(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Answer::Hang(d) | Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Standard Webhooks, written out: HMAC-SHA256 over `id.timestamp.body` with the decoded
/// secret, base64, compared with each `v1,` entry; the timestamp within 5 minutes.
pub(crate) fn verify(key: &[u8], id: &str, ts: &str, body: &[u8], signatures: &str) -> bool {
    let Ok(t) = ts.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    signature_matches(key, id, ts, body, signatures)
}

/// The signature check alone (no clock), for the reference vectors.
pub(crate) fn signature_matches(
    key: &[u8],
    id: &str,
    ts: &str,
    body: &[u8],
    signatures: &str,
) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    signatures.split(' ').any(|s| s == expected)
}
