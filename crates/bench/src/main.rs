//! orderflow's benchmark harness. Each subcommand prints figures (medians, and ratios
//! against a baseline measured in the same run); nothing here asserts a time.

mod check_condition;
mod deliver;
mod drain;
mod engine;
mod ingest;
mod load;
mod machine;
mod server;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "orderflow benchmarks (run with --release)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// OMS engine throughput (item transitions per second, one core) and corpus load time.
    Engine(engine::Args),
    /// ERP ingest: durable async acks per second and latency, against GET /healthz.
    Ingest(ingest::Args),
    /// Check-condition pass time over 1,000,000 waiting timers, against SELECT 1.
    CheckCondition(check_condition::Args),
    /// Inbox worker: a backlog applied per second (SQLite, PostgreSQL with 1 and N
    /// workers) against the rate it was stored at, and 202-to-applied latency.
    Drain(drain::Args),
    /// Subscription deliveries: a backlog of order events delivered per second to a
    /// receiver answering 200 at once, against the same run's drain rate, and commit-to-
    /// receipt latency under a steady offered load.
    Deliver(deliver::Args),
    /// Process loader scaling: load and check time of generated 1k, 10k and 70k-state
    /// processes, against parsing the same XML alone.
    Load(load::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Engine(args) => engine::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::CheckCondition(args) => check_condition::run(args),
        Command::Drain(args) => drain::run(args),
        Command::Deliver(args) => deliver::run(args),
        Command::Load(args) => load::run(args),
    }
}

/// Median of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
