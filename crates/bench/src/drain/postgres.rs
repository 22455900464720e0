//! The PostgreSQL drains: a scratch database per run, the backlog stored through a
//! `serve --no-worker` (into the inbox or a broker), then N `orderflow worker` processes
//! until every update is settled.

use super::*;
use crate::machine::{ProcessClock, cores, pids_named};

/// A scratch database on the PostgreSQL server, dropped with it.
pub(crate) struct ScratchDb {
    admin: String,
    name: String,
    pub(crate) url: String,
}

impl ScratchDb {
    pub(crate) async fn create(admin: &str, label: &str) -> anyhow::Result<Self> {
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

    pub(crate) async fn drop(self) -> anyhow::Result<()> {
        let mut c = sqlx::PgConnection::connect(&self.admin).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        Ok(())
    }
}

/// Drains `updates` updates with `workers` worker processes on a scratch database; returns
/// the applied/s.
pub(super) async fn drain_postgres(
    binary: &Path,
    admin: &str,
    workers: usize,
    args: &Args,
    setup: &Setup,
    updates: u64,
) -> anyhow::Result<f64> {
    let db = ScratchDb::create(admin, &format!("w{workers}")).await?;
    let mut extra = vec!["--no-worker"];
    extra.extend(setup.inbox_args());
    let mut server = Server::start_with(
        binary,
        Some(&db.url),
        &setup.processes,
        &setup.config,
        &extra,
    )?;
    let stored = fill(&server, args.orders, updates).await?;
    server.terminate()?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let cpu_before = ProcessClock::read(
        pids_named("postgres")
            .into_iter()
            .chain([std::process::id()]),
    );
    let started = Instant::now();
    let mut children: Vec<Child> = (0..workers)
        .map(|_| {
            worker(&server, &db.url, args.batch_size, setup)
                .env("ORDERFLOW_WORKER__POLL_INTERVAL", "20ms")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let deadline = started + Duration::from_secs(600);
    loop {
        // Cheap while work is left: one open row, found through the due index (counting
        // every settled row every 20 ms took half a core from the workers measured). Only
        // when none is open, check that every update has arrived and settled (with a
        // broker, rows appear only as consumers take them).
        let open: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM inbox \
             WHERE status IN ('accepted', 'processing', 'parked'))",
        )
        .fetch_one(&pool)
        .await?;
        if !open {
            let settled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
                .fetch_one(&pool)
                .await?;
            if settled >= updates as i64 {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("updates still open after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let worker_pids: Vec<u32> = children.iter().map(Child::id).collect();
    let postgres_pids = pids_named("postgres");
    let cpu_after = ProcessClock::read(
        worker_pids
            .iter()
            .chain(&postgres_pids)
            .copied()
            .chain([std::process::id()]),
    );
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
        "PostgreSQL, {workers} worker{}{}",
        if workers == 1 { "" } else { "s" },
        match setup.inbox() {
            "database" => String::new(),
            broker => format!(", {broker}"),
        }
    );
    let rate = report(&name, applied as u64, updates, took, stored);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        print_cpu(
            &before,
            &after,
            &worker_pids,
            &postgres_pids,
            applied as f64 / took.as_secs_f64(),
        );
    }
    drop(server);
    db.drop().await?;
    Ok(rate)
}

/// Who used the cores over a drain: the workers, PostgreSQL's own processes (its backends
/// serve the workers' connections), this benchmark's progress poll, or nobody; and the
/// workers' and PostgreSQL's CPU time per update applied (`rate` a second).
fn print_cpu(
    before: &ProcessClock,
    after: &ProcessClock,
    workers: &[u32],
    postgres: &[u32],
    rate: f64,
) {
    let workers = after.cores(before, workers);
    let postgres = after.cores(before, postgres);
    let poll = after.cores(before, &[std::process::id()]);
    let idle = after.idle(before);
    let others = (cores() - workers - postgres - poll - idle).max(0.0);
    let per_update = |used: f64| used / rate.max(1.0) * 1e6;
    println!(
        "  cores used: workers {workers:.2}, PostgreSQL {postgres:.2}, this benchmark {poll:.2}, \
         others {others:.2}; idle {idle:.2} of {}; CPU per update applied: workers {:.0} µs, \
         PostgreSQL {:.0} µs",
        cores(),
        per_update(workers),
        per_update(postgres)
    );
}
