//! Engine throughput on a corpus process, and the load time of the whole corpus.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use oms::bindings::{CommandBinding, ConditionBinding};
use oms::engine::{Item, Order};
use oms::model::Process;
use oms::{Engine, Registry};

use crate::median;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder holding `spryker-oms/` (default: $ORDERFLOW_CORPUS_DIR, else ../shared/corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Corpus main file whose happy path is walked.
    #[arg(
        long,
        default_value = "mollie__MolliePaymentStateMachineManualCapture01.xml"
    )]
    process: String,
    /// Items per order.
    #[arg(long, default_value_t = 10)]
    items: usize,
    /// Timed rounds; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

fn corpus_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = arg
        .or_else(|| std::env::var_os("ORDERFLOW_CORPUS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/corpus"))
        .join("spryker-oms");
    if !dir.is_dir() {
        bail!(
            "corpus folder {} not found: pass --corpus or set ORDERFLOW_CORPUS_DIR",
            dir.display()
        );
    }
    Ok(dir)
}

/// Conditions on the happy path are true, every other condition false; commands succeed.
fn happy_registry(p: &Process) -> Registry {
    let mut reg = Registry::new();
    for name in p.command_names() {
        reg.register_command(name, CommandBinding::Noop);
    }
    for name in p.condition_names() {
        reg.register_condition(name, ConditionBinding::Constant { value: false });
    }
    for t in p.happy_path() {
        if let Some(c) = &p.transition(t).condition {
            reg.register_condition(c.clone(), ConditionBinding::Constant { value: true });
        }
    }
    reg
}

fn new_order(p: &Process, items: usize, now: DateTime<Utc>) -> Order {
    Order {
        reference: "bench".into(),
        attributes: Default::default(),
        items: (0..items as i64)
            .map(|id| Item {
                id,
                sku: "SKU".into(),
                quantity: 1,
                state: p.initial(),
                state_entered_at: now,
                attributes: Default::default(),
            })
            .collect(),
    }
}

/// Walks one order along the happy path; returns the number of item transitions.
fn walk(engine: &Engine<'_>, order: &mut Order, now: DateTime<Utc>) -> usize {
    let p = engine.process;
    let mut moves = engine.start(order, now).moves().count();
    for t in p.happy_path() {
        let tr = p.transition(t);
        if order.items[0].state != tr.source {
            continue; // an onEnter chain already took it
        }
        let d = match tr.event {
            Some(e) => engine.trigger(order, None, &p.event(e).name, now),
            None => engine.check(order, None, now),
        };
        moves += d.map(|d| d.moves().count()).unwrap_or(0);
    }
    moves
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let dir = corpus_dir(args.corpus)?;

    // Corpus load time: every main file, parsed and checked.
    let mut load_ms = Vec::new();
    let mut files = 0;
    for _ in 0..args.rounds {
        let start = Instant::now();
        let loaded = oms::parse::load_dir(&dir)?;
        load_ms.push(start.elapsed().as_secs_f64() * 1e3);
        files = loaded.len();
    }
    println!(
        "corpus load: {files} main files in {:.2} ms (median of {})",
        median(load_ms),
        args.rounds
    );

    let loaded = oms::parse::load_file(&dir.join(&args.process))
        .with_context(|| format!("loading {}", args.process))?;
    let p = &loaded.process;
    let reg = happy_registry(p);
    let engine = Engine::new(p, &reg);
    let now = DateTime::UNIX_EPOCH;
    let template = new_order(p, args.items, now);
    let per_order = walk(&engine, &mut template.clone(), now);
    if per_order == 0 {
        bail!("{}: the happy path moves nothing", args.process);
    }

    // Baseline in the same run: cloning the order, the harness's own cost per walk.
    let mut rates = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..args.rounds {
        let (mut n, mut moves) = (0usize, 0usize);
        let start = Instant::now();
        while start.elapsed().as_millis() < 300 {
            for _ in 0..64 {
                let mut o = template.clone();
                moves += walk(&engine, &mut o, now);
                n += 1;
            }
        }
        rates.push(moves as f64 / start.elapsed().as_secs_f64());
        let start = Instant::now();
        let mut sink = 0usize;
        for _ in 0..n {
            sink += std::hint::black_box(template.clone()).items.len();
        }
        std::hint::black_box(sink);
        baseline.push(start.elapsed().as_secs_f64() / n as f64);
    }
    let rate = median(rates);
    println!(
        "engine: {} ({} states), {} items/order, {per_order} transitions/order along the happy path",
        p.name(),
        p.states().len(),
        args.items
    );
    println!(
        "engine: {:.0} item transitions/s (median of {} rounds, one core); target 2,000,000: {:.2}x",
        rate,
        args.rounds,
        rate / 2e6
    );
    let walk_us = per_order as f64 / rate * 1e6;
    let clone_us = median(baseline) * 1e6;
    println!(
        "engine: {walk_us:.2} us per order walk vs {clone_us:.2} us to clone the order (baseline): {:.1}x",
        walk_us / clone_us
    );
    Ok(())
}
