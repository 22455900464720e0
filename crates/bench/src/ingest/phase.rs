//! The load client: a phase of requests over many connections, each its own client and
//! connection, at full speed or paced, with the latency of every expected answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

/// Builds the n-th request of a phase on a connection's client.
pub(crate) type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// `POST /v1/erp/order-updates` of `body` under the idempotency key `key`, answered as soon
/// as it is stored (`Prefer: respond-async`).
pub(crate) fn async_update(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    key: String,
    body: String,
) -> reqwest::RequestBuilder {
    c.post(format!("{base}/v1/erp/order-updates"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("prefer", "respond-async")
        .header("idempotency-key", key)
        .body(body)
}

pub(crate) struct Phase {
    pub(crate) requests: u64,
    errors: u64,
    pub(crate) elapsed: Duration,
    latency: Histogram<u64>,
}

impl Phase {
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at quantile `q`, in milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Adds `other`'s requests, errors, time and latencies to this phase's.
    pub(crate) fn merge(&mut self, other: &Phase) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latency.add(&other.latency).ok();
    }

    pub(crate) fn print(&self, name: &str) {
        println!(
            "  {name:<24} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  ({} requests, {} errors)",
            self.rate(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.requests,
            self.errors
        );
    }
}

/// Runs `connections` loops for `duration`; `pace` (requests/s over all loops) throttles.
pub(crate) async fn phase(
    connections: u16,
    duration: Duration,
    pace: Option<f64>,
    request: MakeRequest,
    expect: u16,
) -> Phase {
    let connections = usize::from(connections);
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (counter, errors, hist, request) = (
            counter.clone(),
            errors.clone(),
            hist.clone(),
            request.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut local = Histogram::<u64>::new(3).expect("histogram");
            let interval = pace.map(|p| Duration::from_secs_f64(connections as f64 / p));
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / connections as f64));
            while start.elapsed() < duration {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match request(&client, n).send().await {
                    Ok(r) if r.status().as_u16() == expect => {
                        let _ = r.bytes().await;
                        local.record(t.elapsed().as_micros() as u64).ok();
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist.lock().await.add(&local).ok();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let latency = hist.lock().await.clone();
    Phase {
        requests: latency.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency,
    }
}
