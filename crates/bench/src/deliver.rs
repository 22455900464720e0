//! Delivery benchmark: how fast subscription events reach a receiver that answers 200 at
//! once, against how fast the same changes were applied, and how long a change takes from
//! its commit to its receipt under a steady offered load.
//!
//! - Backlog: a subscription to the receiver is created and disabled; `--orders` orders of
//!   `Drain01` are created and `--updates` ERP updates stored over them (as `bench drain`
//!   does), and `orderflow worker --once` applies them: that is the drain figure of this
//!   run. Then a `serve` starts on the same database, the subscription is enabled through
//!   the admin API and every change (each order's creation and each applied update) is
//!   delivered; the rate is counted from the first receipt to the last, and from the
//!   enabling request to the last.
//! - Steady: on that `serve`, `--rate` async ERP updates per second for `--seconds`; the
//!   time from each change's commit (the body's `timestamp`) to its receipt.
//!
//! SQLite always; PostgreSQL too with `--postgres`, on a scratch database.

mod latency;
mod receiver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::drain::{ScratchDb, drain_once, fill, load_average, processes};
use crate::server::{Server, default_binary, default_config};
use receiver::Receiver;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The orderflow binary (default: the release build beside this benchmark).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// ERP updates applied before the subscription is enabled (each one change).
    #[arg(long, default_value_t = 5_000)]
    updates: u64,
    /// Orders the updates are spread over (each creation is a change as well).
    #[arg(long, default_value_t = 1_000)]
    orders: u64,
    /// PostgreSQL server to create a scratch database on; without it only SQLite runs.
    #[arg(long, env = "ORDERFLOW_TEST_DATABASE_URL")]
    postgres: Option<String>,
    /// Updates per second offered in the steady phase (0 skips it).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `subscriptions.concurrency` of the delivering `serve` (default: the configured 128).
    #[arg(long)]
    concurrency: Option<usize>,
    /// `subscriptions.poll_interval` of the delivering `serve`, e.g. `100ms` (default: the
    /// configured 1s).
    #[arg(long)]
    poll_interval: Option<String>,
    /// `subscriptions.batch_size` of the delivering `serve` (default: the configured 500).
    #[arg(long)]
    batch_size: Option<u32>,
}

/// How long deliveries may stop arriving before a phase gives up on the rest.
const STALL: Duration = Duration::from_secs(30);

/// The configuration of the delivering `serve`: the repository's, with the
/// `[subscriptions]` settings given on the command line.
struct Tuned {
    config: PathBuf,
    settings: String,
    _dir: tempfile::TempDir,
}

impl Tuned {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let mut section = String::new();
        let mut shown = Vec::new();
        let mut set = |key: &str, value: Option<String>, default: &str| match value {
            Some(v) => {
                section.push_str(&format!("{key} = {v}\n"));
                shown.push(format!("{key} {}", v.trim_matches('"')));
            }
            None => shown.push(format!("{key} {default} (default)")),
        };
        set(
            "concurrency",
            args.concurrency.map(|n| n.to_string()),
            "128",
        );
        set(
            "poll_interval",
            args.poll_interval.as_ref().map(|s| format!("{s:?}")),
            "1s",
        );
        set("batch_size", args.batch_size.map(|n| n.to_string()), "500");
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("orderflow.toml");
        let mut toml = std::fs::read_to_string(default_config())?;
        if !section.is_empty() {
            toml.push_str(&format!("\n[subscriptions]\n{section}"));
        }
        std::fs::write(&config, toml)?;
        Ok(Self {
            config,
            settings: shown.join(", "),
            _dir: dir,
        })
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let binary = args.binary.clone().unwrap_or_else(default_binary);
    let rt = tokio::runtime::Runtime::new()?;
    let receiver = Receiver::default();
    let url = rt.block_on(receiver.start())?;
    let tuned = Tuned::new(&args)?;
    println!(
        "delivery benchmark: {} orders and {} updates over them (process Drain01), every \
         change to a receiver answering 200 at once; subscriptions: {}; {} cores, load {}",
        args.orders,
        args.updates,
        tuned.settings,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let run = Run {
        binary: &binary,
        args: &args,
        receiver: &receiver,
        url: &url,
        tuned: &tuned,
    };
    rt.block_on(run.backend("SQLite", None))?;
    match &args.postgres {
        Some(admin) => rt.block_on(async {
            let db = ScratchDb::create(admin, "deliver").await?;
            let result = run.backend("PostgreSQL", Some(&db.url)).await;
            db.drop().await?;
            result
        })?,
        None => {
            println!("PostgreSQL: skipped (give --postgres URL or ORDERFLOW_TEST_DATABASE_URL)")
        }
    }
    Ok(())
}

/// What every backend's run shares.
struct Run<'a> {
    binary: &'a Path,
    args: &'a Args,
    receiver: &'a Receiver,
    url: &'a str,
    tuned: &'a Tuned,
}

impl Run<'_> {
    /// Both phases on one database (`None`: a SQLite file of the first server).
    async fn backend(&self, name: &str, database_url: Option<&str>) -> anyhow::Result<()> {
        let processes = processes();
        let config = default_config();
        let mut filler = Server::start_with(
            self.binary,
            database_url,
            &processes,
            &config,
            &["--no-worker"],
        )?;
        let (id, secret) = subscribe(&filler, self.url)?;
        let stored = fill(&filler, self.args.orders, self.args.updates).await?;
        filler.terminate()?;
        let (applied, took) = drain_once(&filler, &processes, &config, None)?;
        let drained = applied as f64 / took.as_secs_f64();
        println!(
            "{name}: drain (worker --once, start-up included): {drained:.0} applied/s ({applied} \
             of {} in {:.2} s; stored at {stored:.0}/s)",
            self.args.updates,
            took.as_secs_f64()
        );

        let live = Server::start_with(
            self.binary,
            Some(&filler.database_url),
            &processes,
            &self.tuned.config,
            &[],
        )?;
        let admin = live.create_client("bench-admin", "admin")?;
        // The new server first projects the changes into the list view: the deliveries
        // are timed once it is done, not against its start-up.
        settle_projector(&live.base).await;
        self.receiver.reset(&secret)?;
        let expected = self.args.orders + applied;
        let enabling = Instant::now();
        let r = reqwest::Client::new()
            .patch(format!("{}/v1/admin/subscriptions/{id}", live.base))
            .bearer_auth(&admin)
            .json(&json!({"enabled": true}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "enabling the subscription: {} {}",
                r.status(),
                r.text().await?
            );
        }
        wait_for(self.receiver, expected).await;
        let got = self.receiver.received();
        let n = got.first.len() as u64;
        let first = got.first.values().map(|r| r.instant).min();
        let last = got.first.values().map(|r| r.instant).max();
        let (Some(first), Some(last)) = (first, last) else {
            bail!(
                "{name}: nothing was delivered; see {}",
                live.dir.join("server.log").display()
            );
        };
        let span = last.saturating_duration_since(first).as_secs_f64();
        let rate = n as f64 / span;
        let from_enabling = n as f64 / last.saturating_duration_since(enabling).as_secs_f64();
        println!(
            "{name}: deliveries: {rate:.0}/s from the first receipt to the last ({n} of {expected} \
             events in {span:.2} s; {from_enabling:.0}/s from enabling, {:.2} s to the first); \
             {} repeats, {} bad signatures, {} unreadable; load {}",
            first.saturating_duration_since(enabling).as_secs_f64(),
            got.repeats,
            got.bad_signatures,
            got.unreadable,
            load_average()
        );
        println!(
            "{name}: deliveries/s against the same run's drain applied/s: {:.2} \
             (from enabling: {:.2})",
            rate / drained,
            from_enabling / drained
        );
        if self.args.rate > 0 {
            latency::steady(&live, self.receiver, &secret, self.args, name).await?;
        }
        drop(live);
        drop(filler);
        Ok(())
    }
}

/// `orderflow subscriptions create URL --json`, then `disable`: changes made from now on
/// wait for it. Returns its id and signing secret.
fn subscribe(server: &Server, url: &str) -> anyhow::Result<(i64, String)> {
    let out = server.cli(&["subscriptions", "create", url, "--json"])?;
    let v: Value = serde_json::from_slice(&out).context("subscriptions create --json")?;
    let id = v["id"].as_i64().context("no id in subscriptions create")?;
    let secret = v["signing_secret"]
        .as_str()
        .context("no signing_secret in subscriptions create")?
        .to_owned();
    server.cli(&["subscriptions", "disable", &id.to_string()])?;
    Ok((id, secret))
}

/// Waits until the server's projected-changes counter held still for 300 ms (at most 30 s).
async fn settle_projector(base: &str) {
    let projected = || crate::server::metric(base, "orderflow_projection_changes_total");
    let started = Instant::now();
    let mut last = projected().await;
    while started.elapsed() < STALL {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = projected().await;
        if now == last {
            return;
        }
        last = now;
    }
}

/// Waits until `expected` distinct events arrived, or none arrived for [`STALL`].
async fn wait_for(receiver: &Receiver, expected: u64) {
    let mut seen = 0;
    let mut moved = Instant::now();
    while (seen as u64) < expected && moved.elapsed() < STALL {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = receiver.distinct();
        if now > seen {
            seen = now;
            moved = Instant::now();
        }
    }
}
