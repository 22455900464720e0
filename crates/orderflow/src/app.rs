//! Wiring: the API server and its background tasks on one bound listener, until shutdown.

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::{OrderService, timers};
use crate::http::{self, AppState};
use crate::inbox::transit::Transit;
use crate::inbox::worker::WorkerOptions;
use crate::inbox::{Inbox, InboxSettings};
use crate::outbound::effects::Executor;
use crate::projector;
use crate::subscriptions::worker::Deliverer;

/// How often the inbox gauges (`orderflow_inbox_updates{status}`, oldest pending age) are
/// refreshed from the store.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Serves the API on `listener` and runs the list projector, the inbox gauges, the effects
/// executor (unless `effects.enabled` is off), the subscription deliveries (unless
/// `subscriptions.in_process` is off) and (unless `worker.in_process` is off) the inbox
/// worker and the check-condition loop until
/// `shutdown` is cancelled; then finishes requests in flight and stops them all.
pub async fn run(
    service: OrderService,
    listener: TcpListener,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Installs the recorder before the first metric is recorded.
    crate::telemetry::metrics();
    let limits = &config.server;
    let poll = config.projector.poll_interval;
    let check_poll = config.worker.poll_interval;
    let projector = watched(
        "projector",
        shutdown.clone(),
        projector::run(
            service.clone(),
            config.projector.batch_size.max(1),
            poll.max(Duration::from_millis(10)),
            shutdown.child_token(),
        ),
    );
    let transit = Transit::from_config(config, service.store())
        .await
        .context("cannot start the inbox transport")?;
    let inbox =
        Inbox::new(service.clone(), InboxSettings::from_config(config)).with_transit(transit);
    // A broker transport's consumers run where the inbox worker runs.
    let consumers = match inbox.transit() {
        Some(t) if config.worker.in_process => t.spawn_consumers(&inbox, &shutdown.child_token()),
        _ => Vec::new(),
    };
    let transit_gauges = inbox.transit().is_some().then(|| {
        let inbox = inbox.clone();
        let token = shutdown.child_token();
        watched("transit gauges", shutdown.clone(), async move {
            crate::inbox::ops::run_transit_gauges(inbox, GAUGE_INTERVAL, token).await;
        })
    });
    let gauges = watched(
        "inbox gauges",
        shutdown.clone(),
        crate::inbox::ops::run_gauges(
            service.store().clone(),
            GAUGE_INTERVAL,
            shutdown.child_token(),
        ),
    );
    // The inbox worker and the check-condition loop, unless `serve --no-worker`.
    let background = config.worker.in_process.then(|| {
        let inbox = inbox.clone();
        let token = shutdown.child_token();
        let worker = watched("inbox worker", shutdown.clone(), async move {
            inbox.run_worker(WorkerOptions::default(), token).await
        });
        let checker = watched(
            "check-condition loop",
            shutdown.clone(),
            timers::run_loop(
                service.clone(),
                check_poll.max(Duration::from_millis(10)),
                shutdown.child_token(),
            ),
        );
        (worker, checker)
    });
    // The effects executor (HTTP commands after commit), unless `[effects] enabled = false`.
    let effects = match config.effects.enabled {
        true => {
            let executor = Executor::new(service.store().clone(), config)?;
            let token = shutdown.child_token();
            Some(watched("effects executor", shutdown.clone(), async move {
                executor.run(token).await
            }))
        }
        false => None,
    };
    // Order events to subscribers, unless `[subscriptions] in_process = false`.
    let deliveries = config.subscriptions.in_process.then(|| {
        let service = service.clone();
        let token = shutdown.child_token();
        let (subs, outbound) = (config.subscriptions.clone(), config.outbound.clone());
        watched("subscription deliveries", shutdown.clone(), async move {
            match Deliverer::new(service.store().clone(), &subs, &outbound) {
                Ok(d) => {
                    d.run(service, token).await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    });
    let state = AppState::new(service.clone(), inbox, config);
    let served = http::serve(
        listener,
        state,
        config.max_body_bytes,
        limits,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = projector.await;
    let _ = gauges.await;
    if let Some(effects) = effects {
        let _ = effects.await;
    }
    if let Some(deliveries) = deliveries {
        let _ = deliveries.await;
    }
    for c in consumers {
        let _ = c.await;
    }
    if let Some(g) = transit_gauges {
        let _ = g.await;
    }
    if let Some((worker, checker)) = background {
        let _ = worker.await;
        let _ = checker.await;
    }
    served?;
    Ok(())
}

/// Spawns a background task and logs how it ends when that is not the shutdown: a panic at
/// ERROR (with its message), an early return with its result at WARN. The server keeps
/// serving either way; the log says what stopped.
fn watched<F>(
    name: &'static str,
    shutdown: CancellationToken,
    task: F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future + Send + 'static,
    F::Output: std::fmt::Debug + Send,
{
    let inner = tokio::spawn(task);
    tokio::spawn(async move {
        match inner.await {
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = name, panic = %message, "background task panicked");
            }
            Err(_) => {}
            Ok(result) if !shutdown.is_cancelled() => {
                tracing::warn!(task = name, result = ?result, "background task stopped early");
            }
            Ok(_) => {}
        }
    })
}
