//! Wiring: the API server and its background tasks on one bound listener, until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::domain::OrderService;
use crate::http::{self, AppState};
use crate::inbox::worker::WorkerOptions;
use crate::inbox::{Inbox, InboxSettings};
use crate::projector;

/// How often the inbox gauges (`orderflow_inbox_updates{status}`, oldest pending age) are
/// refreshed from the store.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Serves the API on `listener` and runs the list projector until `shutdown` is cancelled;
/// then finishes requests in flight and stops the projector. It also refreshes the inbox
/// gauges every few seconds.
pub async fn run(
    service: OrderService,
    listener: TcpListener,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Installs the recorder before the first metric is recorded.
    crate::telemetry::metrics();
    let poll = config::duration("projector.poll_interval", &config.projector.poll_interval)?;
    let projector = tokio::spawn(projector::run(
        service.clone(),
        config.projector.batch_size.max(1),
        poll.max(Duration::from_millis(10)),
        shutdown.child_token(),
    ));
    let inbox = Inbox::new(service.clone(), InboxSettings::from_config(config)?);
    let gauges = tokio::spawn(crate::inbox::ops::run_gauges(
        service.store().clone(),
        GAUGE_INTERVAL,
        shutdown.child_token(),
    ));
    let worker = config.worker.in_process.then(|| {
        let inbox = inbox.clone();
        let token = shutdown.child_token();
        tokio::spawn(async move { inbox.run_worker(WorkerOptions::default(), token).await })
    });
    let state = AppState::new(service.clone(), inbox, config);
    let served = http::serve(listener, state, config.max_body_bytes, shutdown.clone()).await;
    shutdown.cancel();
    let _ = projector.await;
    let _ = gauges.await;
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    served?;
    Ok(())
}
