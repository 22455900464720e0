//! Drain benchmark: how fast the inbox worker applies a backlog, and how long an update
//! takes from its 202 to applied under a steady offered load.
//!
//! - Drain: `--orders` orders of the `Drain01` process (a `touch` self-loop, so every update
//!   moves an item, writes history and bumps the version) and `--updates` updates spread
//!   over them at random, stored through `POST /v1/erp/order-updates/batch` of a
//!   `serve --no-worker`. The server is stopped; then `orderflow worker --once` (SQLite) or
//!   N `orderflow worker` processes (PostgreSQL) apply the backlog. The baseline in the same
//!   run is the rate at which the same updates were stored (durable, through the API).
//! - Acks behind the backlog (SQLite, `--backlog-rate`): a `serve` with its worker starts
//!   on a copy of the filled backlog while `--backlog-rate` single async updates a second
//!   arrive; their 202's latency while it drains, against the same stream once it is idle.
//! - I/O mode (PostgreSQL): the same with a process whose `touch` runs a command that
//!   waits `--io-ms` (a remote call), drained by 1, 3 and 6 workers; each rate against N
//!   times the 1-worker rate.
//! - End to end: a `serve` with its in-process worker on SQLite, offered `--rate` single
//!   async updates per second; the time from each 202 to the update being visible as
//!   applied in the database (polled every 2 ms), and the server's own stamps
//!   (`processed_at - received_at`); the latencies of the first and the last tenth of the
//!   run side by side, and the server's RSS over them, so a long run shows any growth.

mod backlog;
mod latency;
mod postgres;
mod prefill;

use latency::end_to_end;
pub(crate) use postgres::ScratchDb;
use postgres::drain_postgres;

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

use crate::server::{Server, Transport, default_binary};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
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
    /// Applied updates stored in the inbox before the end-to-end phase starts, as if the
    /// server had run for a long time (`--rate` of them a second, received until now), so
    /// a minute's run shows whether the server slows as its inbox grows.
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// `worker.batch_size` of the workers (default: the configured one, 500 on SQLite and
    /// 100 on PostgreSQL).
    #[arg(long)]
    batch_size: Option<u32>,
    /// I/O mode (PostgreSQL): also drain a backlog whose every update runs a command that
    /// waits this many milliseconds, standing in for a remote call (0 skips it).
    #[arg(long, default_value_t = 5)]
    io_ms: u64,
    /// Worker processes of each I/O-mode run.
    #[arg(long, value_delimiter = ',', default_value = "1,3,6")]
    io_workers: Vec<usize>,
    /// Updates in the I/O-mode backlog (over `--orders` orders). Six workers run twelve
    /// loops of `worker.batch_size` (100) claims each: 12,000 updates are ten such rounds,
    /// so the rate is the fleet's and not its last, half-empty round's (at 3,000 it was
    /// three rounds, and 6 workers reached 0.68 × 6 where 12,000 gave 0.88).
    #[arg(long, default_value_t = 12_000)]
    io_updates: u64,
    /// Updates per second offered to a `serve` (with its worker) while it drains a copy of
    /// the SQLite backlog, for the wait of the 202 behind the worker's batches (0 skips it).
    #[arg(long, default_value_t = 200)]
    backlog_rate: u64,
    /// Inbox transports of the PostgreSQL drains, one after the other: `database`, or a
    /// broker URL (`amqp://...`, `redis://...`): the backlog is accepted into the broker and
    /// the workers consume it (see `bench ingest --inbox`).
    #[arg(long, value_delimiter = ',', default_value = "database")]
    inbox: Vec<String>,
}

/// The processes and configuration one drain runs with.
struct Setup {
    processes: PathBuf,
    config: PathBuf,
    /// Removes the generated configuration with it.
    _dir: Option<tempfile::TempDir>,
    /// The inbox transport (`None`: the database, configured as `config` says).
    transport: Option<Transport>,
}

impl Setup {
    /// `Drain01` as it is: every update moves an item, writes history, bumps the version.
    fn plain() -> Self {
        Self {
            processes: processes(),
            config: crate::server::default_config(),
            _dir: None,
            transport: None,
        }
    }

    /// [`Setup::plain`] on the inbox transport `inbox` (see [`Transport::new`]). The
    /// database transport is the default configuration as it is (so a build from before
    /// the transports existed runs it too, for before/after figures).
    fn plain_on(inbox: &str) -> anyhow::Result<Self> {
        if inbox == "database" {
            return Ok(Self::plain());
        }
        let transport = Transport::new(inbox)?;
        Ok(Self {
            config: transport.config(),
            transport: Some(transport),
            ..Self::plain()
        })
    }

    /// The transport's name, for the report.
    fn inbox(&self) -> &'static str {
        self.transport.as_ref().map_or("database", |t| t.name)
    }

    /// `--inbox-url URL` of a broker transport.
    fn inbox_args(&self) -> Vec<&str> {
        self.transport
            .as_ref()
            .map(Transport::args)
            .unwrap_or_default()
    }

    /// `Drain01` whose `touch` also runs a command that waits `ms` milliseconds.
    fn io(ms: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("orderflow.toml");
        std::fs::write(
            &config,
            format!("[commands.\"Bench/RemoteCall\"]\ntype = \"sleep\"\nmillis = {ms}\n"),
        )?;
        Ok(Self {
            processes: Path::new(env!("CARGO_MANIFEST_DIR")).join("processes-io"),
            config,
            _dir: Some(dir),
            transport: None,
        })
    }
}

pub(crate) fn processes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("processes")
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let binary = args.binary.clone().unwrap_or_else(default_binary);
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "drain benchmark: {} updates over {} orders (process Drain01), worker.batch_size {}, \
         {} cores, load {}",
        args.updates,
        args.orders,
        args.batch_size
            .map_or("default (SQLite 500, PostgreSQL 100)".to_owned(), |n| n
                .to_string()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    let plain = Setup::plain();
    let mut server = Server::start_with(
        &binary,
        None,
        &plain.processes,
        &plain.config,
        &["--no-worker"],
    )?;
    let stored = rt.block_on(fill(&server, args.orders, args.updates))?;
    server.terminate()?;
    let copy = match args.backlog_rate {
        0 => None,
        _ => Some(backlog::copy_database(&server)?),
    };
    let (applied, took) = drain_once(&server, &plain.processes, &plain.config, args.batch_size)?;
    report("SQLite, worker --once", applied, args.updates, took, stored);
    drop(server);
    if let Some((_dir, url)) = &copy {
        rt.block_on(backlog::acks_behind_backlog(
            &binary,
            url,
            args.orders,
            args.backlog_rate,
        ))?;
    }

    if let Some(admin) = &args.postgres {
        for inbox in &args.inbox {
            let setup = Setup::plain_on(inbox)?;
            for &n in &args.workers {
                rt.block_on(drain_postgres(
                    &binary,
                    admin,
                    n,
                    &args,
                    &setup,
                    args.updates,
                ))?;
            }
        }
        if args.io_ms > 0 {
            io_mode(&rt, &binary, admin, &args)?;
        }
    } else {
        println!("PostgreSQL: skipped (give --postgres URL or ORDERFLOW_TEST_DATABASE_URL)");
    }

    if args.rate > 0 {
        rt.block_on(end_to_end(&binary, &args, None))?;
        if let Some(admin) = &args.postgres {
            rt.block_on(end_to_end(&binary, &args, Some(admin)))?;
        }
    }
    Ok(())
}

/// The I/O mode: each update's command waits `--io-ms`, so a worker spends its time
/// waiting rather than computing, and N workers can do N times the work of one even on
/// two cores if nothing serialises them. The baseline is N times the rate of one worker.
fn io_mode(
    rt: &tokio::runtime::Runtime,
    binary: &Path,
    admin: &str,
    args: &Args,
) -> anyhow::Result<()> {
    println!(
        "I/O mode: {} updates over {} orders, each running a command that waits {} ms",
        args.io_updates, args.orders, args.io_ms
    );
    let setup = Setup::io(args.io_ms)?;
    let mut one = None;
    for &n in &args.io_workers {
        let rate = rt.block_on(drain_postgres(
            binary,
            admin,
            n,
            args,
            &setup,
            args.io_updates,
        ))?;
        let base = *one.get_or_insert(rate / n as f64);
        println!(
            "  {n} worker{}: {rate:.0} applied/s = {:.2} x {n} x the 1-worker rate",
            if n == 1 { "" } else { "s" },
            rate / (base * n as f64)
        );
    }
    Ok(())
}

/// Runs `orderflow worker --once` on the (stopped) server's database until the backlog is
/// applied; returns the updates applied and how long the run took, start-up included.
pub(crate) fn drain_once(
    server: &Server,
    processes: &Path,
    config: &Path,
    batch_size: Option<u32>,
) -> anyhow::Result<(u64, Duration)> {
    let mut cmd = server.command();
    if let Some(n) = batch_size {
        cmd.env("ORDERFLOW_WORKER__BATCH_SIZE", n.to_string());
    }
    let started = Instant::now();
    let out = cmd
        .args([
            "worker",
            "--once",
            "--json",
            "--database-url",
            &server.database_url,
        ])
        .arg("--processes")
        .arg(processes)
        .arg("--config")
        .arg(config)
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
    Ok((totals["applied"].as_u64().unwrap_or_default(), took))
}

/// `orderflow worker` on `database_url` with the benchmark's processes.
fn worker(
    server: &Server,
    database_url: &str,
    batch_size: Option<u32>,
    setup: &Setup,
) -> std::process::Command {
    let mut cmd = server.command();
    cmd.args(["worker", "--database-url", database_url])
        .arg("--processes")
        .arg(&setup.processes)
        .arg("--config")
        .arg(&setup.config)
        .args(setup.inbox_args());
    if let Some(n) = batch_size {
        cmd.env("ORDERFLOW_WORKER__BATCH_SIZE", n.to_string());
    }
    cmd
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Prints one drain's figures; returns its applied/s.
fn report(name: &str, applied: u64, expected: u64, took: Duration, stored: f64) -> f64 {
    let rate = applied as f64 / took.as_secs_f64();
    println!(
        "{name:<28} {rate:>9.0} applied/s  ({applied} of {expected} in {:.2} s; baseline: stored \
         through the API at {stored:.0}/s, ratio {:.2}; load {})",
        took.as_secs_f64(),
        rate / stored,
        load_average()
    );
    rate
}

/// Tokens of a shop and an ERP client on the server's database.
pub(crate) fn tokens(server: &Server) -> anyhow::Result<(String, String)> {
    Ok((
        server.create_client("bench-shop", "shop")?,
        server.create_client("bench-erp", "erp")?,
    ))
}

/// A small deterministic generator: the same spread of updates over orders every run.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Creates the orders and stores the backlog through the API; returns the rate at which
/// the updates were stored (the baseline).
pub(crate) async fn fill(server: &Server, orders: u64, updates: u64) -> anyhow::Result<f64> {
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

pub(crate) async fn create_orders(
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
