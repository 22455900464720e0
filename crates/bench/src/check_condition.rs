//! Check-condition pass time over a store full of waiting timers, none due, against a
//! `SELECT 1` round trip to the same database in the same run. A pass's cost should follow
//! the due timers, not the waiting ones: with nothing due it is one index probe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use orderflow::domain::{OrderService, ProcessSet};
use orderflow::store::{self, Store};
use sqlx::Connection as _;

use crate::median;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also measure PostgreSQL: a server URL (postgres://user@host/db). A fresh database is
    /// created beside `db` and dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// Waiting timers to fill the store with.
    #[arg(long, default_value_t = 1_000_000)]
    timers: i64,
    /// Orders (one item each) the timers belong to.
    #[arg(long, default_value_t = 1_000)]
    orders: i64,
    /// Timed passes (and baseline round trips).
    #[arg(long, default_value_t = 20)]
    passes: usize,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        println!(
            "check-condition: {} waiting timers over {} orders, none due; {} passes",
            args.timers, args.orders, args.passes
        );
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        measure("sqlite", &url, &args).await?;
        if let Some(server) = &args.database_url {
            let db = PgDatabase::create(server).await?;
            let result = measure("postgres", &db.url, &args).await;
            db.drop().await?;
            result?;
        }
        Ok(())
    })
}

async fn measure(name: &str, url: &str, args: &Args) -> anyhow::Result<()> {
    let store = Store::open(url).await?;
    let started = Instant::now();
    fill(url, args).await?;
    println!("{name}: filled in {:.1} s", started.elapsed().as_secs_f64());
    for line in store.explain_due_timers(store::now()).await? {
        println!("{name}: plan: {line}");
    }
    let service = OrderService::new(store.clone(), Arc::new(ProcessSet::default()));
    // Warm-up: connections, statement caches, the index pages a pass reads.
    for _ in 0..3 {
        service.check_due(store::now(), 100).await?;
    }
    let mut passes = Vec::with_capacity(args.passes);
    for _ in 0..args.passes {
        let t = Instant::now();
        let pass = service.check_due(store::now(), 100).await?;
        passes.push(ms(t.elapsed()));
        anyhow::ensure!(pass.timers_fired == 0, "a timer was due: {pass:?}");
    }
    store.close().await;
    let baseline = select_one(url, args.passes).await?;
    let (pm, p90) = (median(passes.clone()), quantile(passes, 0.9));
    let (bm, b90) = (median(baseline.clone()), quantile(baseline, 0.9));
    println!("{name}: check_due pass  median {pm:>7.3} ms  p90 {p90:>7.3} ms");
    println!("{name}: SELECT 1        median {bm:>7.3} ms  p90 {b90:>7.3} ms");
    println!("{name}: pass / SELECT 1 (median) {:.1}x", pm / bm);
    Ok(())
}

/// Orders and items as far as the timers' foreign keys need them, then the timers, due
/// between one day and 180 days from now; all in SQL, then ANALYZE.
async fn fill(url: &str, args: &Args) -> anyhow::Result<()> {
    let now = Utc::now();
    let first_due = (now + TimeDelta::days(1))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    const ITEMS: &str = "INSERT INTO items (order_id, sku, quantity, state, state_entered_at) \
         SELECT id, 'SKU-1', 1, 'waiting', created_at FROM orders ORDER BY id";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query(
            "INSERT INTO orders (reference, process, attributes, version, created_at, updated_at) \
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $1) \
             SELECT 'BENCH-' || n, 'Bench', '{}', 1, $2, $2 FROM g",
        )
        .bind(args.orders)
        .bind(now)
        .execute(&mut c)
        .await?;
        sqlx::query(ITEMS).execute(&mut c).await?;
        // due_at as sqlx writes DateTime<Utc> on SQLite: RFC 3339 with +00:00.
        sqlx::query(
            "INSERT INTO timers (order_id, item_id, state, kind, event, due_at) \
             WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < $1 - 1) \
             SELECT n % $2 + 1, n % $2 + 1, 'waiting', 'timeout', 'expire', \
             strftime('%Y-%m-%dT%H:%M:%S+00:00', $3, '+' || (n % 15552000) || ' seconds') \
             FROM g",
        )
        .bind(args.timers)
        .bind(args.orders)
        .bind(&first_due)
        .execute(&mut c)
        .await?;
        sqlx::query("ANALYZE").execute(&mut c).await?;
        c.close().await?;
    } else {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query(
            "INSERT INTO orders (reference, process, attributes, version, created_at, updated_at) \
             SELECT 'BENCH-' || g, 'Bench', '{}', 1, $2, $2 FROM generate_series(1, $1) g",
        )
        .bind(args.orders)
        .bind(now)
        .execute(&mut c)
        .await?;
        sqlx::query(ITEMS).execute(&mut c).await?;
        sqlx::query(
            "INSERT INTO timers (order_id, item_id, state, kind, event, due_at) \
             SELECT g % $2 + 1, g % $2 + 1, 'waiting', 'timeout', 'expire', \
             $3::timestamptz + make_interval(secs => g % 15552000) \
             FROM generate_series(0, $1 - 1) g",
        )
        .bind(args.timers)
        .bind(args.orders)
        .bind(now + TimeDelta::days(1))
        .execute(&mut c)
        .await?;
        sqlx::query("ANALYZE").execute(&mut c).await?;
        c.close().await?;
    }
    Ok(())
}

/// `SELECT 1` round trips (a prepared statement, like the pass's query) on a connection of
/// its own to the same database, in ms.
async fn select_one(url: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    macro_rules! time {
        ($conn:ty) => {{
            let mut c = <$conn>::connect(url).await?;
            sqlx::query("SELECT 1").execute(&mut c).await?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                sqlx::query("SELECT 1").execute(&mut c).await?;
                v.push(ms(t.elapsed()));
            }
            c.close().await?;
            Ok(v)
        }};
    }
    if url.starts_with("sqlite:") {
        time!(sqlx::SqliteConnection)
    } else {
        time!(sqlx::PgConnection)
    }
}

/// A fresh PostgreSQL database on the server of `server_url`, dropped by [`Self::drop`].
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        let name = format!("orderflow_bench_{}", std::process::id());
        let (base, _) = server_url
            .rsplit_once('/')
            .context("the PostgreSQL URL needs a database name")?;
        let mut c = sqlx::PgConnection::connect(server_url).await?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await?;
        }
        c.close().await?;
        Ok(Self {
            admin_url: server_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop(self) -> anyhow::Result<()> {
        let mut c = sqlx::PgConnection::connect(&self.admin_url).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (nearest rank) of a non-empty sample.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
