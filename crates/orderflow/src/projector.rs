//! The list projector: reads the change feed after its checkpoint and rewrites the list
//! rows of the orders that changed. Woken in-process after each commit, polling as the
//! floor (changes made by other processes sharing a PostgreSQL).

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::domain::OrderService;
use crate::store::StoreError;
use crate::store::projection::Projected;

/// One step: projects up to `batch` changes and records the lag metrics.
pub async fn step(service: &OrderService, batch: u32) -> Result<Projected, StoreError> {
    let started = std::time::Instant::now();
    let projected = service.store().project_batch(i64::from(batch)).await?;
    let now = Utc::now();
    for at in &projected.changed_at {
        let delay = (now - *at).as_seconds_f64().max(0.0);
        metrics::histogram!("orderflow_projection_delay_seconds").record(delay);
    }
    // Lag: how old the oldest change not yet in the list is. A short batch means the
    // projector caught up with everything visible to it.
    let lag = match projected.changed_at.last() {
        Some(last) if projected.rows >= batch as usize => (now - *last).as_seconds_f64(),
        _ => 0.0,
    };
    metrics::gauge!("orderflow_projection_lag_seconds").set(lag.max(0.0));
    metrics::counter!("orderflow_projection_changes_total").increment(projected.rows as u64);
    if projected.rows > 0 {
        tracing::debug!(
            changes = projected.rows,
            orders = projected.orders,
            duration_ms = started.elapsed().as_millis() as u64,
            "projected list rows"
        );
    }
    Ok(projected)
}

/// Runs until `shutdown`: drains the feed, then waits for a commit or `poll`.
pub async fn run(service: OrderService, batch: u32, poll: Duration, shutdown: CancellationToken) {
    let wake = service.changes().clone();
    let mut failures: u32 = 0;
    loop {
        let mut pause = poll;
        match step(&service, batch).await {
            Ok(p) if p.rows >= batch as usize => {
                failures = 0;
                continue;
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                // Back off on repeated failures (store down): up to 32 polls, at most 30 s.
                let max = poll.saturating_mul(32).min(Duration::from_secs(30));
                pause = Backoff::new(poll, max).delay(failures);
                tracing::warn!(error = %error_chain(&e), failures, "projector step failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("projector stopped");
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
