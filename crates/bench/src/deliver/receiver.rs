//! The benchmark's subscriber: an HTTP server on a free loopback port that answers 200 at
//! once and records, per delivery, when it arrived, its `webhook-id` and the commit time in
//! its body (`timestamp`). Each signature is checked with orderflow's own verifier (one
//! HMAC-SHA256 over a few hundred bytes; a failure is counted, not refused, so a bad
//! signature shows in the report rather than as retries).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Utc};
use orderflow::webhook::SigningSecret;
use serde_json::Value;

/// The first receipt of an event.
#[derive(Clone, Debug)]
pub(crate) struct Receipt {
    /// When it arrived (wall clock, to compare with the commit time).
    pub(crate) at: DateTime<Utc>,
    /// When it arrived (monotonic, for rates).
    pub(crate) instant: Instant,
    /// The body's `timestamp`: the commit time of the change.
    pub(crate) committed: DateTime<Utc>,
}

#[derive(Default)]
struct Log {
    secret: Option<SigningSecret>,
    first: HashMap<String, Receipt>,
    repeats: u64,
    bad_signatures: u64,
    unreadable: u64,
}

/// What the receiver holds; cloned into every request.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    log: Arc<Mutex<Log>>,
}

/// What arrived since the last [`Receiver::reset`].
pub(crate) struct Received {
    pub(crate) first: HashMap<String, Receipt>,
    /// Deliveries of an id that had arrived before.
    pub(crate) repeats: u64,
    pub(crate) bad_signatures: u64,
    /// Bodies without an `id` and a `timestamp`.
    pub(crate) unreadable: u64,
}

impl Receiver {
    /// Serves on 127.0.0.1 on a free port in the current runtime; returns the URL to
    /// subscribe.
    pub(crate) async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the receiver")?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(format!("http://{addr}/hook"))
    }

    /// Forgets what arrived and checks signatures with `secret` from now on.
    pub(crate) fn reset(&self, secret: &str) -> anyhow::Result<()> {
        let secret = SigningSecret::parse(secret).context("the subscription's secret")?;
        *self.log.lock().unwrap() = Log {
            secret: Some(secret),
            ..Log::default()
        };
        Ok(())
    }

    /// Distinct event ids received so far.
    pub(crate) fn distinct(&self) -> usize {
        self.log.lock().unwrap().first.len()
    }

    /// What arrived (the log is kept).
    pub(crate) fn received(&self) -> Received {
        let log = self.log.lock().unwrap();
        Received {
            first: log.first.clone(),
            repeats: log.repeats,
            bad_signatures: log.bad_signatures,
            unreadable: log.unreadable,
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Utc::now();
    let instant = Instant::now();
    let event: Option<(String, DateTime<Utc>)> =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            let id = v["id"].as_str()?.to_owned();
            let ts = DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
            Some((id, ts.with_timezone(&Utc)))
        });
    let secret = r.log.lock().unwrap().secret.clone();
    let signed = secret.as_ref().is_some_and(|s| {
        s.verify(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            &body,
            at.timestamp(),
        )
        .is_ok()
    });
    let mut log = r.log.lock().unwrap();
    if !signed {
        log.bad_signatures += 1;
    }
    let header_id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    match event {
        Some((id, committed)) if header_id == Some(id.as_str()) => match log.first.entry(id) {
            Entry::Occupied(_) => log.repeats += 1,
            Entry::Vacant(v) => {
                v.insert(Receipt {
                    at,
                    instant,
                    committed,
                });
            }
        },
        _ => log.unreadable += 1,
    }
    StatusCode::OK
}
