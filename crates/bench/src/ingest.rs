//! Ingest benchmark: async ERP updates with unique idempotency keys over many connections,
//! against the same server's `GET /healthz` as the baseline in the same run.
//!
//! Each run measures, on one server and for each number of connections given (16, 64 and
//! 256 by default), the baseline at full speed and updates at full speed (every 202 is a
//! durable ack: the update was committed first); then updates paced at half the best rate
//! reached, on the fewest connections, for the latency a server sees when it is not
//! saturated. The ratio compares the best rate of each, whatever number of connections
//! reached it: a no-op does best with few requests in flight (8 to 16 here), while an update
//! waits for its group's commit (a disk flush) and needs many more to keep the cores busy.
//! With several runs the medians are printed at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;

mod commits;
mod keys;
pub(crate) mod phase;

use commits::Commits;
use keys::Keys;
use phase::{MakeRequest, Phase, async_update, phase};

use crate::machine::{CpuClock, CpuUse};
use crate::median;
use crate::server::{Server, Transport, default_binary};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The orderflow binary (default: the release build beside this benchmark).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Database URL (default: a fresh SQLite file).
    #[arg(long)]
    database_url: Option<String>,
    /// Connections of the load client; with several (`16,64,256`), the baseline and the
    /// updates at full speed run at each, and each rate counts at its best: an update's
    /// acknowledgement waits for a commit, so it takes more requests in flight than
    /// `/healthz` to keep the cores busy. The half-rate phase runs on the fewest.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256", value_parser = clap::value_parser!(u16).range(1..))]
    connections: Vec<u16>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Runs of the three phases; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Orders the updates are spread over.
    #[arg(long, default_value_t = 1_000)]
    orders: u64,
    /// Share of the requests that resend an update: the same key and body as a new update
    /// sent about 500 requests earlier, as an ERP retries what it did not see
    /// acknowledged. A resend is answered with the first answer and stores nothing; `0`
    /// sends only new updates.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    resent: f64,
    /// The idempotency keys: `counter` (`bench-<pid>-<n>`, each new key a little after the
    /// last, as an ERP that numbers its messages sends) or `uuid` (random UUIDs, as many
    /// ERPs send: each key lands anywhere in the store's index of keys).
    #[arg(long, value_enum, default_value_t = Keys::Counter)]
    keys: Keys,
    /// Inbox transports to measure one after the other, each on a server of its own:
    /// `database`, or a broker URL (`amqp://...`, `redis://...`). The first is the baseline
    /// of the others. A broker's queues or streams get a prefix of their own and are deleted
    /// afterwards (`rabbitmqctl` / `redis-cli`); Redis runs with `accept_loss` set.
    #[arg(long, value_delimiter = ',', default_value = "database")]
    inbox: Vec<String>,
}

/// How many requests back a resent update was first sent (`--resent`); a multiple of 100.
const RESEND_DISTANCE: u64 = 500;

/// A share from 0 up to, not including, 1 (some updates must be new to be resent).
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share from 0 up to 1")),
    }
}

/// One transport's medians.
struct Summary {
    transport: String,
    baseline: f64,
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let mut summaries = Vec::new();
    for inbox in &args.inbox {
        summaries.push(run_transport(&args, inbox)?);
    }
    if summaries.len() > 1 {
        let first = &summaries[0];
        println!(
            "transports (medians; ratios to the same server's GET /healthz and to the first):"
        );
        for s in &summaries {
            println!(
                "  {:<10} {:>8.0} acks/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  \
                 {:.2} of healthz ({:.0}/s)  {:.2} of {}",
                s.transport,
                s.rate,
                s.p50,
                s.p99,
                s.p999,
                s.rate / s.baseline,
                s.baseline,
                s.rate / first.rate,
                first.transport
            );
        }
    }
    Ok(())
}

/// The 1-minute load average (Linux), to print beside the figures: the load generator and
/// the server share the machine, and anything else running skews them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// One run's figures.
struct Figures {
    baseline: f64,
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    half_p99: f64,
    commit_size: f64,
    /// What the best baseline and the best POST at max used of the CPUs (`None`: `/proc`
    /// not readable).
    at_baseline: Option<CpuUse>,
    at_max: Option<CpuUse>,
    /// The share of the POST at max the group writer spent storing groups (`None`: a
    /// broker transport, which has no group commits).
    writer_busy: Option<f64>,
    /// The connections of the best baseline and of the best POST at max.
    top_connections: (u16, u16),
}

/// A run's CPU readings at the best baseline and the best POST at max, with its figures.
type Measured<'a> = (CpuUse, CpuUse, &'a Figures);

/// One number of connections of a run: the baseline and the updates at full speed.
struct Swept {
    connections: u16,
    baseline: Phase,
    full: Phase,
    /// What the baseline and the updates at full speed used of the CPUs.
    at_baseline: Option<CpuUse>,
    at_max: Option<CpuUse>,
    /// The group commits during the updates at full speed.
    commits: Commits,
}

/// Prints what `phase`, from `before` to `after`, used of the CPUs, also per request;
/// returns it.
fn print_cpu(before: Option<CpuClock>, after: Option<CpuClock>, phase: &Phase) -> Option<CpuUse> {
    let used = after?.since(before?);
    let [server, client, others] = used.per_request(phase.rate());
    println!(
        "  {:<24} {used}\n  {:<24} CPU per request: server {server:.1} µs, load client \
         {client:.1} µs, others {others:.1} µs",
        "", ""
    );
    Some(used)
}

fn run_transport(args: &Args, inbox: &str) -> anyhow::Result<Summary> {
    let binary = args.binary.clone().unwrap_or_else(default_binary);
    let transport = Transport::new(inbox)?;
    let mut extra = vec!["--no-worker"];
    extra.extend(transport.args());
    let server = Server::start_with(
        &binary,
        args.database_url.as_deref(),
        &crate::server::repo_root().join("processes"),
        &transport.config(),
        &extra,
    )?;
    let token = server.create_client("bench-erp", "erp")?;
    let rt = tokio::runtime::Runtime::new()?;
    let duration = Duration::from_secs(args.seconds);
    let base = server.base.clone();
    let run_id = std::process::id();
    let orders = args.orders;
    let keys = args.keys;

    let health = {
        let base = base.clone();
        Arc::new(move |c: &reqwest::Client, _n: u64| c.get(format!("{base}/healthz")))
    };
    // Keys are unique over all phases and runs: every request is a new update, unless it
    // is one of the `--resent` share, which repeats the key and body of a new update sent
    // about `RESEND_DISTANCE` requests earlier (committed by then). Of each hundred
    // requests in a row, the first `resent` ones resend, each a different new update of
    // the hundred that many requests back.
    let sent = Arc::new(AtomicU64::new(0));
    let resent = ((args.resent * 100.0).round() as u64).min(99);
    let ingest: MakeRequest = {
        let base = base.clone();
        Arc::new(move |c: &reqwest::Client, _n: u64| {
            let s = sent.fetch_add(1, Ordering::Relaxed);
            let n = match s % 100 {
                r if r < resent && s >= RESEND_DISTANCE + 100 => {
                    s - s % 100 - RESEND_DISTANCE + resent + r % (100 - resent)
                }
                _ => s,
            };
            async_update(
                c,
                &base,
                &token,
                keys.key(run_id, n),
                format!(
                    r#"{{"order_reference":"BENCH-{}","event":"ship","attributes":{{"tracking":"T{n}"}}}}"#,
                    n % orders
                ),
            )
        })
    };

    println!(
        "ingest benchmark, {} inbox: {} connections, {} s per phase, {} runs, {} % of the \
         updates resent, {} keys, server {} ({}), worker off, {} cores, load average {}",
        transport.name,
        args.connections
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        args.seconds,
        args.runs,
        resent,
        args.keys.name(),
        base,
        if args.database_url.is_some() {
            "given database"
        } else {
            "SQLite file"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let mut runs = Vec::new();
    for run in 1..=args.runs.max(1) {
        println!("run {run} (load average {}):", load_average());
        let cpu = || CpuClock::read(server.pid());
        // Each number of connections: the baseline, then the updates at full speed.
        let mut sweep = Vec::new();
        for &connections in &args.connections {
            if args.connections.len() > 1 {
                println!(" {connections} connections:");
            }
            let start = cpu();
            let baseline = rt.block_on(phase(connections, duration, None, health.clone(), 200));
            let end = cpu();
            baseline.print("GET /healthz");
            let at_baseline = print_cpu(start, end, &baseline);
            let before = rt.block_on(Commits::read(&base));
            let start = cpu();
            let full = rt.block_on(phase(connections, duration, None, ingest.clone(), 202));
            let end = cpu();
            let after = rt.block_on(Commits::read(&base));
            full.print("POST async (max)");
            let at_max = print_cpu(start, end, &full);
            if full.requests == 0 {
                bail!(
                    "no update was acknowledged; see {}",
                    server.dir.join("server.log").display()
                );
            }
            let commits = after.since(before);
            println!(
                "  ratio to baseline {:.2}; {:.1} updates per commit at max",
                full.rate() / baseline.rate(),
                commits.per_commit()
            );
            // The database transport's group commits (a broker transport has none).
            if commits.commits > 0.0 {
                println!(
                    "  at max: {:.2} ms per commit, the writer storing a group {:.2} of the time",
                    commits.ms_per_commit(),
                    commits.busy(&full)
                );
            }
            sweep.push(Swept {
                connections,
                baseline,
                full,
                at_baseline,
                at_max,
                commits,
            });
        }
        // Each rate at its best number of connections: a durable ack waits for a commit, so
        // it needs more requests in flight than a no-op to keep the same cores busy.
        let best = |rate: fn(&Swept) -> f64| {
            sweep
                .iter()
                .max_by(|a, b| rate(a).total_cmp(&rate(b)))
                .expect("at least one number of connections")
        };
        let top_baseline = best(|s| s.baseline.rate());
        let top = best(|s| s.full.rate());
        // Half the best rate reached, paced over the fewest connections measured.
        let fewest = args.connections.iter().copied().min().unwrap_or(1);
        let before = rt.block_on(Commits::read(&base));
        let half = rt.block_on(phase(
            fewest,
            duration,
            Some(top.full.rate() / 2.0),
            ingest.clone(),
            202,
        ));
        let end = rt.block_on(Commits::read(&base));
        half.print("POST async (half rate)");
        let half_commits = end.since(before);
        if args.connections.len() > 1 {
            println!(
                "  best rates: GET /healthz {:.0}/s ({} connections), POST async {:.0}/s ({} \
                 connections); ratio {:.2}",
                top_baseline.baseline.rate(),
                top_baseline.connections,
                top.full.rate(),
                top.connections,
                top.full.rate() / top_baseline.baseline.rate()
            );
        }
        if half_commits.commits > 0.0 {
            println!(
                "  at half rate ({fewest} connections): {:.1} updates per commit, {:.2} ms per \
                 commit, the writer storing a group {:.2} of the time, {:.0} of {:.0} commits \
                 took over 10 ms",
                half_commits.per_commit(),
                half_commits.ms_per_commit(),
                half_commits.busy(&half),
                half_commits.slow,
                half_commits.commits
            );
        }
        runs.push(Figures {
            baseline: top_baseline.baseline.rate(),
            rate: top.full.rate(),
            p50: top.full.ms(0.5),
            p99: top.full.ms(0.99),
            p999: top.full.ms(0.999),
            half_p99: half.ms(0.99),
            commit_size: top.commits.per_commit(),
            at_baseline: top_baseline.at_baseline,
            at_max: top.at_max,
            writer_busy: (top.commits.commits > 0.0).then(|| top.commits.busy(&top.full)),
            top_connections: (top_baseline.connections, top.connections),
        });
    }
    let med = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    println!(
        "median of {} runs (load average now {}):\n  \
         GET /healthz {:.0} req/s; POST async {:.0} durable acks/s, p50 {:.2} ms, \
         p99 {:.2} ms, p99.9 {:.2} ms; ratio {:.2}; p99 at half rate {:.2} ms; \
         {:.1} updates per commit{}",
        runs.len(),
        load_average(),
        med(|f| f.baseline),
        med(|f| f.rate),
        med(|f| f.p50),
        med(|f| f.p99),
        med(|f| f.p999),
        med(|f| f.rate / f.baseline),
        med(|f| f.half_p99),
        med(|f| f.commit_size),
        if args.connections.len() > 1 {
            let at = |pick: fn(&Figures) -> u16| {
                runs.iter()
                    .map(|f| pick(f).to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            };
            format!(
                "\n  best rates (connections per run): GET /healthz at {}, POST async at {}",
                at(|f| f.top_connections.0),
                at(|f| f.top_connections.1)
            )
        } else {
            String::new()
        },
    );
    // Idle cores while the updates ran at full speed: where they are left over, the
    // acknowledgements wait on the store's commits, not on the CPU. And where the CPU of a
    // request went: an update's extra over a no-op's is what the ratio pays for.
    let measured: Option<Vec<Measured>> = runs
        .iter()
        .map(|f| Some((f.at_baseline?, f.at_max?, f)))
        .collect();
    if let Some(measured) = measured {
        let med_of = |pick: fn(&Measured) -> f64| median(measured.iter().map(pick).collect());
        println!(
            "  cores idle: {:.2} of {} during GET /healthz, {:.2} during POST async (max)",
            med_of(|(baseline, _, _)| baseline.idle),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            med_of(|(_, max, _)| max.idle),
        );
        let per_request = |pick: fn(&Measured) -> [f64; 3]| -> [f64; 3] {
            std::array::from_fn(|i| median(measured.iter().map(|m| pick(m)[i]).collect()))
        };
        let [hs, hc, ho] = per_request(|(baseline, _, f)| baseline.per_request(f.baseline));
        let [us, uc, uo] = per_request(|(_, max, f)| max.per_request(f.rate));
        println!(
            "  CPU per request (server / load client / others, µs): GET /healthz {hs:.1} / \
             {hc:.1} / {ho:.1}, POST async (max) {us:.1} / {uc:.1} / {uo:.1}"
        );
        // Were both phases bound by the cores alone, the ratio would be what a no-op's CPU
        // is of an update's: the ceiling for an update that costs what it costs now. A
        // ratio under it is the updates waiting (on the commits) with cores left idle.
        let ceiling = med_of(|(baseline, max, f)| {
            let total = |[s, c, o]: [f64; 3]| s + c + o;
            total(baseline.per_request(f.baseline)) / total(max.per_request(f.rate))
        });
        println!(
            "  ratio if both were bound by the cores alone (CPU per GET /healthz ÷ CPU per \
             update): {ceiling:.2}; reached {:.2}",
            med(|f| f.rate / f.baseline)
        );
    }
    if runs.iter().all(|f| f.writer_busy.is_some()) {
        println!(
            "  the group writer storing a group {:.2} of the time during POST async (max)",
            med(|f| f.writer_busy.unwrap_or_default())
        );
    }
    match server.memory() {
        Some((now, peak)) => {
            println!("  server memory: RSS {now:.1} MiB now, {peak:.1} MiB at peak")
        }
        None => println!("  server memory: not readable here"),
    }
    drop(server);
    Ok(Summary {
        transport: transport.name.to_owned(),
        baseline: med(|f| f.baseline),
        rate: med(|f| f.rate),
        p50: med(|f| f.p50),
        p99: med(|f| f.p99),
        p999: med(|f| f.p999),
    })
}
