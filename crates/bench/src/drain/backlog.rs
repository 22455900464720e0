//! The ERP's wait for a 202 while a backlog drains (SQLite): a `serve` with its worker
//! starts on a copy of the filled backlog, and a steady stream of single async updates
//! arrives meanwhile. Each commit of the group writer waits for SQLite's one writer, which
//! a worker batch (500 updates) holds for the whole batch; the same stream on the idle
//! server after the drain is the baseline in the same run.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::ingest::phase::{MakeRequest, Phase, async_update, phase};

/// Connections of the stream (paced, so the number only bounds requests in flight).
const CONNECTIONS: u16 = 16;
/// The stream is measured in slices of this length, and the backlog read after each.
const SLICE: Duration = Duration::from_secs(1);
/// The baseline's length, on the idle server after the drain.
const IDLE: Duration = Duration::from_secs(5);

/// Copies the stopped server's SQLite database (with its WAL, if any) into a new folder;
/// returns the folder and the copy's URL.
pub(super) fn copy_database(server: &Server) -> anyhow::Result<(tempfile::TempDir, String)> {
    let from = server
        .database_url
        .strip_prefix("sqlite://")
        .context("the backlog copy is of a SQLite file")?;
    let dir = tempfile::tempdir()?;
    for suffix in ["", "-wal", "-shm"] {
        let source = PathBuf::from(format!("{from}{suffix}"));
        if source.exists() {
            std::fs::copy(&source, dir.path().join(format!("orderflow.db{suffix}")))?;
        }
    }
    let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
    Ok((dir, url))
}

/// Starts `serve` with its worker on `database_url` (a filled backlog) and offers `rate`
/// async updates a second until the backlog is applied, then as long again on the idle
/// server; prints the 202's latency in both.
pub(super) async fn acks_behind_backlog(
    binary: &Path,
    database_url: &str,
    orders: u64,
    rate: u64,
) -> anyhow::Result<()> {
    let plain = Setup::plain();
    let server = Server::start_with(
        binary,
        Some(database_url),
        &plain.processes,
        &plain.config,
        &[],
    )?;
    let started = Instant::now();
    let token = server.create_client("bench-erp", "erp")?;
    let reader = sqlx::SqlitePool::connect(&format!("{database_url}?mode=ro")).await?;
    let backlog: i64 = sqlx::query_scalar(super::latency::LAST_SEQ)
        .fetch_one(&reader)
        .await?;
    let sent = Arc::new(AtomicU64::new(0));
    let run = std::process::id();
    let request: MakeRequest = {
        let base = server.base.clone();
        Arc::new(move |c: &reqwest::Client, _n: u64| {
            let n = sent.fetch_add(1, Ordering::Relaxed);
            async_update(
                c,
                &base,
                &token,
                format!("backlog-{run}-{n}"),
                format!(
                    r#"{{"order_reference":"D-{}","event":"touch","attributes":{{"stream":{n}}}}}"#,
                    n % orders
                ),
            )
        })
    };
    let pace = Some(rate as f64);
    let first = waiting(&reader, backlog).await?;
    let mut during: Option<Phase> = None;
    let mut left = first;
    // At most ten minutes: a backlog that does not drain is reported as it stands.
    while left > 0 && started.elapsed() < Duration::from_secs(600) {
        let slice = phase(CONNECTIONS, SLICE, pace, request.clone(), 202).await;
        match &mut during {
            Some(p) => p.merge(&slice),
            None => during = Some(slice),
        }
        left = waiting(&reader, backlog).await?;
    }
    let drained = started.elapsed();
    let idle = phase(CONNECTIONS, IDLE, pace, request, 202).await;
    reader.close().await;
    println!(
        "acks behind a backlog (SQLite serve with its worker, {rate} updates/s offered over \
         {CONNECTIONS} connections): {first} waiting updates applied in {:.1} s{}",
        drained.as_secs_f64(),
        if left > 0 {
            format!(", {left} still waiting after ten minutes")
        } else {
            String::new()
        }
    );
    let Some(during) = during else {
        println!("  the backlog was applied before the stream began");
        return Ok(());
    };
    during.print("POST async, draining");
    idle.print("POST async, idle");
    println!(
        "  request -> 202 while draining / idle: p50 {:.2}, p99 {:.2}, max {:.2}",
        during.ms(0.5) / idle.ms(0.5),
        during.ms(0.99) / idle.ms(0.99),
        during.ms(1.0) / idle.ms(1.0)
    );
    Ok(())
}

/// Updates up to `seq` `last` not applied yet.
async fn waiting(reader: &sqlx::SqlitePool, last: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbox WHERE seq <= $1 AND status IN ('accepted', 'processing')",
    )
    .bind(last)
    .fetch_one(reader)
    .await
}
