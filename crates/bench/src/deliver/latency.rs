//! The steady phase of the delivery benchmark: single async ERP updates offered at a fixed
//! rate to a `serve` whose subscription is live; the time from each change's commit to its
//! receipt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use super::{Args, Receiver, wait_for};
use crate::drain::{XorShift, load_average};
use crate::server::Server;

/// Offers `--rate` updates per second for `--seconds` over 32 connections and reports
/// commit to receipt.
pub(super) async fn steady(
    server: &Server,
    receiver: &Receiver,
    secret: &str,
    args: &Args,
    name: &str,
) -> anyhow::Result<()> {
    let erp = server.create_client("bench-erp-steady", "erp")?;
    receiver.reset(secret)?;
    let http = reqwest::Client::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let connections = 32_u64;
    let interval = Duration::from_secs_f64(connections as f64 / args.rate as f64);
    let duration = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, base, erp, accepted) = (
            http.clone(),
            server.base.clone(),
            erp.clone(),
            accepted.clone(),
        );
        let orders = args.orders;
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ (c + 1));
        tasks.push(tokio::spawn(async move {
            let mut next = started + interval.mul_f64(c as f64 / connections as f64);
            let mut errors = 0_u64;
            while next < started + duration {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let body = json!({"order_reference": format!("D-{}", rng.below(orders)),
                    "event": "touch", "attributes": {"c": c}});
                let r = http
                    .post(format!("{base}/v1/erp/order-updates"))
                    .bearer_auth(&erp)
                    .header("prefer", "respond-async")
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        accepted.fetch_add(1, Ordering::Relaxed);
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
    let accepted = accepted.load(Ordering::Relaxed);
    wait_for(receiver, accepted).await;
    let got = receiver.received();
    let mut latency = Histogram::<u64>::new(3)?;
    for r in got.first.values() {
        let us = (r.at - r.committed).num_microseconds().unwrap_or(0).max(0);
        latency.record(us as u64)?;
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name}: steady: {} updates/s offered over {connections} connections; {accepted} \
         accepted in {:.1} s ({errors} errors), {} of {accepted} delivered ({} repeats, {} bad \
         signatures, {} unreadable)",
        args.rate,
        sent_for.as_secs_f64(),
        got.first.len(),
        got.repeats,
        got.bad_signatures,
        got.unreadable,
    );
    println!(
        "{name}:   commit -> receipt: p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms; \
         load {}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0,
        load_average()
    );
    Ok(())
}
