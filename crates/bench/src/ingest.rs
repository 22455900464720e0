//! Ingest benchmark: async ERP updates with unique idempotency keys over many connections,
//! against the same server's `GET /healthz` as the baseline in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::server::{Server, default_binary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The orderflow binary (default: the release build beside this benchmark).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Database URL (default: a fresh SQLite file).
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Orders the updates are spread over.
    #[arg(long, default_value_t = 1_000)]
    orders: u64,
}

/// Builds the n-th request of a phase on a connection's client.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

struct Phase {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, name: &str) {
        let q = |p: f64| self.latency.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{name:<22} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  ({} requests, {} errors)",
            self.rate(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.requests,
            self.errors
        );
    }
}

/// Runs `connections` loops for `duration`; `pace` (requests/s over all loops) throttles.
async fn phase(
    connections: usize,
    duration: Duration,
    pace: Option<f64>,
    request: MakeRequest,
    expect: u16,
) -> Phase {
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let binary = args.binary.clone().unwrap_or_else(default_binary);
    let server = Server::start(&binary, args.database_url.as_deref(), &["--no-worker"])?;
    let token = server.create_client("bench-erp", "erp")?;
    let rt = tokio::runtime::Runtime::new()?;
    let duration = Duration::from_secs(args.seconds);
    let base = server.base.clone();
    let run_id = std::process::id();
    let orders = args.orders;

    let health = {
        let base = base.clone();
        Arc::new(move |c: &reqwest::Client, _n: u64| c.get(format!("{base}/healthz")))
    };
    let ingest = {
        let base = base.clone();
        Arc::new(move |c: &reqwest::Client, n: u64| {
            c.post(format!("{base}/v1/erp/order-updates"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("prefer", "respond-async")
                .header("idempotency-key", format!("bench-{run_id}-{n}"))
                .body(format!(
                    r#"{{"order_reference":"BENCH-{}","event":"ship","attributes":{{"tracking":"T{n}"}}}}"#,
                    n % orders
                ))
        })
    };

    println!(
        "ingest benchmark: {} connections, {} s per phase, server {} ({}), worker off",
        args.connections,
        args.seconds,
        base,
        if args.database_url.is_some() {
            "given database"
        } else {
            "SQLite file"
        }
    );
    let baseline = rt.block_on(phase(args.connections, duration, None, health, 200));
    baseline.print("GET /healthz");
    let full = rt.block_on(phase(args.connections, duration, None, ingest.clone(), 202));
    full.print("POST async (max)");
    if full.requests == 0 {
        bail!(
            "no update was acknowledged; see {}",
            server.dir.join("server.log").display()
        );
    }
    let half = rt.block_on(phase(
        args.connections,
        duration,
        Some(full.rate() / 2.0),
        ingest,
        202,
    ));
    half.print("POST async (half rate)");
    println!(
        "ratio to baseline: {:.2} (durable acks/s ÷ healthz req/s)",
        full.rate() / baseline.rate()
    );
    Ok(())
}
