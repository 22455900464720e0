//! Drain benchmark: how fast the inbox worker applies a backlog, and how long an update
//! takes from its 202 to applied under a steady offered load.
//!
//! - Drain: `--orders` orders of the `Drain01` process (a `touch` self-loop, so every update
//!   moves an item, writes history and bumps the version) and `--updates` updates spread
//!   over them at random, stored through `POST /v1/erp/order-updates/batch` of a
//!   `serve --no-worker`. The server is stopped; then `orderflow worker --once` (SQLite) or
//!   N `orderflow worker` processes (PostgreSQL) apply the backlog. The baseline in the same
//!   run is the rate at which the same updates were stored (durable, through the API).
//! - End to end: a `serve` with its in-process worker on SQLite, offered `--rate` single
//!   async updates per second; the time from each 202 to the update being visible as
//!   applied in the database (polled every 2 ms), and the server's own stamps
//!   (`processed_at - received_at`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::server::{Server, default_binary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The orderflow binary (default: the release build beside this benchmark).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Updates in the backlog.
    #[arg(long, default_value_t = 100_000)]
    updates: u64,
    /// Orders the updates are spread over.
    #[arg(long, default_value_t = 10_000)]
    orders: u64,
    /// PostgreSQL server to create scratch databases on; without it only SQLite runs.
    #[arg(long, env = "ORDERFLOW_TEST_DATABASE_URL")]
    postgres: Option<String>,
    /// Worker processes of each PostgreSQL drain run.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    workers: Vec<usize>,
    /// Updates per second offered in the end-to-end phase (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of the end-to-end phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `worker.batch_size` of the workers (default: the configured one, 100).
    #[arg(long)]
    batch_size: Option<u32>,
}

fn processes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("processes")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let binary = args.binary.clone().unwrap_or_else(default_binary);
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "drain benchmark: {} updates over {} orders (process Drain01), worker.batch_size {}, \
         {} cores, load {}",
        args.updates,
        args.orders,
        args.batch_size
            .map_or("100 (default)".to_owned(), |n| n.to_string()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    let mut server = Server::start_with(&binary, None, &processes(), &["--no-worker"])?;
    let stored = rt.block_on(fill(&server, args.orders, args.updates))?;
    server.terminate()?;
    let started = Instant::now();
    let out = server
        .command()
        .args([
            "worker",
            "--once",
            "--json",
            "--database-url",
            &server.database_url,
        ])
        .arg("--processes")
        .arg(processes())
        .stderr(Stdio::null())
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "worker --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let totals: Value = serde_json::from_slice(&out.stdout).context("worker --once --json")?;
    let applied = totals["applied"].as_u64().unwrap_or_default();
    report("SQLite, worker --once", applied, args.updates, took, stored);
    drop(server);

    if let Some(admin) = &args.postgres {
        for &n in &args.workers {
            rt.block_on(drain_postgres(&binary, admin, n, &args))?;
        }
    } else {
        println!("PostgreSQL: skipped (give --postgres URL or ORDERFLOW_TEST_DATABASE_URL)");
    }

    if args.rate > 0 {
        rt.block_on(end_to_end(&binary, &args))?;
    }
    Ok(())
}

/// `orderflow worker` on `database_url` with the benchmark's processes.
fn worker(server: &Server, database_url: &str, batch_size: Option<u32>) -> std::process::Command {
    let mut cmd = server.command();
    cmd.args(["worker", "--database-url", database_url])
        .arg("--processes")
        .arg(processes());
    if let Some(n) = batch_size {
        cmd.env("ORDERFLOW_WORKER__BATCH_SIZE", n.to_string());
    }
    cmd
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn report(name: &str, applied: u64, expected: u64, took: Duration, stored: f64) {
    let rate = applied as f64 / took.as_secs_f64();
    println!(
        "{name:<28} {rate:>9.0} applied/s  ({applied} of {expected} in {:.2} s; baseline: stored \
         through the API at {stored:.0}/s, ratio {:.2}; load {})",
        took.as_secs_f64(),
        rate / stored,
        load_average()
    );
}

/// Tokens of a shop and an ERP client on the server's database.
fn tokens(server: &Server) -> anyhow::Result<(String, String)> {
    Ok((
        server.create_client("bench-shop", "shop")?,
        server.create_client("bench-erp", "erp")?,
    ))
}

/// A small deterministic generator: the same spread of updates over orders every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Creates the orders and stores the backlog through the API; returns the rate at which
/// the updates were stored (the baseline).
async fn fill(server: &Server, orders: u64, updates: u64) -> anyhow::Result<f64> {
    let (shop, erp) = tokens(server)?;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let started = Instant::now();
    create_orders(&http, &base, &shop, orders).await?;
    let created = started.elapsed();

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let bodies: Vec<String> = (0..updates)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|chunk| {
            let updates: Vec<Value> = chunk
                .iter()
                .map(|n| {
                    json!({"order_reference": format!("D-{}", rng.below(orders)),
                        "event": "touch", "attributes": {"erp_seq": n}})
                })
                .collect();
            json!({ "updates": updates }).to_string()
        })
        .collect();
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (http, base, erp, queue) = (http.clone(), base.clone(), erp.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let r = http
                    .post(format!("{base}/v1/erp/order-updates/batch"))
                    .bearer_auth(&erp)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if r.status().as_u16() != 202 {
                    bail!("batch: {} {}", r.status(), r.text().await?);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let stored = updates as f64 / started.elapsed().as_secs_f64();
    println!(
        "  filled: {orders} orders created at {:.0}/s, {updates} updates stored at {stored:.0}/s",
        orders as f64 / created.as_secs_f64()
    );
    Ok(stored)
}

async fn create_orders(
    http: &reqwest::Client,
    base: &str,
    shop: &str,
    orders: u64,
) -> anyhow::Result<()> {
    let next = Arc::new(Mutex::new(0_u64));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, base, shop, next) =
            (http.clone(), base.to_owned(), shop.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                if i >= orders {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = json!({"reference": format!("D-{i}"), "process": "Drain01",
                    "items": [{"sku": "SKU-1", "quantity": 1}]});
                let r = http
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(&shop)
                    .json(&body)
                    .send()
                    .await?;
                if r.status().as_u16() != 201 {
                    bail!("create order: {} {}", r.status(), r.text().await?);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A scratch database on the PostgreSQL server, dropped with it.
struct ScratchDb {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDb {
    async fn create(admin: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("orderflow_bench_{}_{label}", std::process::id());
        let mut c = sqlx::PgConnection::connect(admin).await?;
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        let sql = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        let (base, _) = admin
            .rsplit_once('/')
            .context("the PostgreSQL URL names a database")?;
        Ok(Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop(self) -> anyhow::Result<()> {
        let mut c = sqlx::PgConnection::connect(&self.admin).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        Ok(())
    }
}

async fn drain_postgres(
    binary: &Path,
    admin: &str,
    workers: usize,
    args: &Args,
) -> anyhow::Result<()> {
    let db = ScratchDb::create(admin, &format!("w{workers}")).await?;
    let mut server = Server::start_with(binary, Some(&db.url), &processes(), &["--no-worker"])?;
    let stored = fill(&server, args.orders, args.updates).await?;
    server.terminate()?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let started = Instant::now();
    let mut children: Vec<Child> = (0..workers)
        .map(|_| {
            worker(&server, &db.url, args.batch_size)
                .env("ORDERFLOW_WORKER__POLL_INTERVAL", "20ms")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE status IN ('accepted', 'processing', 'parked')",
        )
        .fetch_one(&pool)
        .await?;
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{open} updates still open after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    for c in &mut children {
        std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        c.wait()?;
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE status = 'applied'")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let name = format!(
        "PostgreSQL, {workers} worker{}",
        if workers == 1 { "" } else { "s" }
    );
    report(&name, applied as u64, args.updates, took, stored);
    drop(server);
    db.drop().await
}

/// Offers `rate` async updates per second to a `serve` with its worker, and measures 202
/// to applied.
async fn end_to_end(binary: &Path, args: &Args) -> anyhow::Result<()> {
    let server = Server::start_with(binary, None, &processes(), &[])?;
    let (shop, erp) = tokens(&server)?;
    let http = reqwest::Client::new();
    let orders = args.orders.min(1000);
    create_orders(&http, &server.base, &shop, orders).await?;
    let file = server
        .database_url
        .trim_start_matches("sqlite://")
        .to_owned();
    let reader = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .read_only(true),
    )
    .await?;

    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let answers = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = tokio::spawn(poll_applied(reader.clone(), seen.clone(), sending.clone()));

    let connections = 32_u64;
    let interval = Duration::from_secs_f64(connections as f64 / args.rate as f64);
    let duration = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, base, erp, acked, answers) = (
            http.clone(),
            server.base.clone(),
            erp.clone(),
            acked.clone(),
            answers.clone(),
        );
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ (c + 1));
        tasks.push(tokio::spawn(async move {
            let mut next = started + interval.mul_f64(c as f64 / connections as f64);
            let mut errors = 0_u64;
            while next < started + duration {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let body = json!({"order_reference": format!("D-{}", rng.below(orders)),
                    "event": "touch", "attributes": {"c": c}});
                let sent = Instant::now();
                let r = http
                    .post(format!("{base}/v1/erp/order-updates"))
                    .bearer_auth(&erp)
                    .header("prefer", "respond-async")
                    .json(&body)
                    .send()
                    .await;
                let at = Instant::now();
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let took = at.saturating_duration_since(sent).as_micros() as u64;
                        answers.lock().unwrap().record(took).ok();
                        let v: Value = r.json().await.unwrap_or_default();
                        if let Some(id) = v["id"].as_str() {
                            acked.lock().unwrap().insert(id.to_owned(), at);
                        }
                    }
                    _ => errors += 1,
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await?;
    }
    let sent_for = started.elapsed();
    let total = acked.lock().unwrap().len();
    // Let the last updates through, then stop polling.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    poller.await??;

    let mut observed = Histogram::<u64>::new(3)?;
    let acked = acked.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    let mut missing = 0;
    for (id, at) in &acked {
        match seen.get(id) {
            Some(done) => observed.record(done.saturating_duration_since(*at).as_micros() as u64)?,
            None => missing += 1,
        }
    }
    let stamps: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT received_at, processed_at FROM inbox WHERE status = 'applied'")
            .fetch_all(&reader)
            .await?;
    let mut server_side = Histogram::<u64>::new(3)?;
    for (received, processed) in stamps {
        let d = (processed - received)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        server_side.record(d as u64)?;
    }
    reader.close().await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "end to end, SQLite serve: {} updates/s offered over {connections} connections; \
         {total} accepted in {:.1} s ({errors} errors), {} seen applied ({missing} not within \
         30 s)",
        args.rate,
        sent_for.as_secs_f64(),
        observed.len(),
    );
    let answers = answers.lock().unwrap().clone();
    println!(
        "  request -> 202 (durable):               p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        ms(&answers, 0.5),
        ms(&answers, 0.99),
        ms(&answers, 0.999),
        answers.max() as f64 / 1000.0
    );
    println!(
        "  202 -> applied (observed, 2 ms polls): p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        ms(&observed, 0.5),
        ms(&observed, 0.99),
        ms(&observed, 0.999),
        observed.max() as f64 / 1000.0
    );
    println!(
        "  received_at -> processed_at (server):    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; load {}",
        ms(&server_side, 0.5),
        ms(&server_side, 0.99),
        server_side.max() as f64 / 1000.0,
        load_average()
    );
    Ok(())
}

/// Records when each update is first seen in a final state. Keeps a low-water mark: every
/// update at or below it has been seen, so each poll reads only the recent window.
async fn poll_applied(
    reader: sqlx::SqlitePool,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    sending: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let mut low = 0_i64;
    let mut done: HashSet<i64> = HashSet::new();
    while sending.load(std::sync::atomic::Ordering::Relaxed) {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, id FROM inbox WHERE seq > $1 \
             AND status NOT IN ('accepted', 'processing') ORDER BY seq",
        )
        .bind(low)
        .fetch_all(&reader)
        .await?;
        let now = Instant::now();
        {
            let mut seen = seen.lock().unwrap();
            for (seq, id) in rows {
                if done.insert(seq) {
                    seen.insert(id, now);
                }
            }
        }
        while done.remove(&(low + 1)) {
            low += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
