//! `orderflow process simulate`: a dry run of events against an in-memory order.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use oms::Registry;
use oms::bindings::ConditionBinding;
use oms::engine::{
    Cause, CommandOutcome, Decisions, EngineOptions, Item, Order, Outcome, UnboundPolicy,
};
use oms::{Engine, Process};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The main process file.
    file: PathBuf,
    /// Events to trigger in order, comma-separated. `ship@1+3` triggers `ship` on items 1
    /// and 3 only (a partial shipment); without `@` every item gets the event.
    /// `wait:14days` moves the clock forward and lets due timeouts fire. `check` runs the
    /// check-condition worker once (event-less transitions and due timeouts, until
    /// nothing moves).
    #[arg(long, value_delimiter = ',', required = true)]
    events: Vec<String>,
    /// Model the race between ERP events and the check-condition worker: event-less
    /// transitions and due timeouts run only at the `check` steps of `--events`, never on
    /// their own after an event or a `wait:`. `--events pay,check,ship` asks "what if
    /// `pay` arrives before the next check run?".
    #[arg(long)]
    explicit_checks: bool,
    /// Fix a condition's answer: `--condition Payment/IsPaid=true`. It overrides the
    /// configuration's binding; conditions bound nowhere are false, unbound commands are
    /// skipped.
    #[arg(long = "condition", value_name = "NAME=true|false")]
    conditions: Vec<String>,
    /// Configuration whose [conditions] and [commands] bind built-in plugins
    /// (default: ./orderflow.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of items in the simulated order.
    #[arg(long, default_value_t = 1)]
    items: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// After each event, event-less transitions are taken until nothing moves (at most this often).
const MAX_CHECK_PASSES: usize = 100;

/// The `--events` step that runs the check-condition worker.
const CHECK_STEP: &str = "check";

pub(super) fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::process::load_one(&args.file, args.config.as_deref())?;
    let process = &loaded.process;
    let mut registry = Registry::new();
    registry.bind(&super::process::load_bindings(args.config.as_deref())?);
    for c in &args.conditions {
        let (name, value) = c
            .split_once('=')
            .with_context(|| format!("--condition {c:?} must look like NAME=true or NAME=false"))?;
        let value = match value {
            "true" => true,
            "false" => false,
            other => bail!("--condition {name}: {other:?} is neither true nor false"),
        };
        registry.register_condition(name, ConditionBinding::Constant { value });
    }
    let engine = Engine::new(process, &registry).with_options(EngineOptions {
        unbound: UnboundPolicy::Lenient,
        ..Default::default()
    });
    // A fixed, readable clock: simulations do not depend on when they run.
    let mut now: DateTime<Utc> = DateTime::UNIX_EPOCH;
    let mut order = Order {
        reference: "simulation".into(),
        attributes: Default::default(),
        items: (1..=i64::from(args.items))
            .map(|id| Item {
                id,
                sku: format!("SKU-{id}"),
                quantity: 1,
                state: process.initial(),
                state_entered_at: now,
                attributes: Default::default(),
            })
            .collect(),
    };
    let mut out = Vec::new();
    let auto = !args.explicit_checks;
    let d = engine.start(&mut order, now);
    report(process, "(start)", &d, &mut out);
    if auto {
        settle(&engine, &mut order, now, "(check)", &mut out)?;
    }
    for spec in &args.events {
        if spec.trim() == CHECK_STEP {
            settle(&engine, &mut order, now, CHECK_STEP, &mut out)?;
            continue;
        }
        if let Some(wait) = spec.strip_prefix("wait:") {
            let t = oms::Timeout::parse(wait).with_context(|| format!("{spec:?}: bad duration"))?;
            now = t.after(now);
            if auto {
                let d = engine
                    .check(&mut order, None, now)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                report(process, spec, &d, &mut out);
                settle(&engine, &mut order, now, "(check)", &mut out)?;
            } else {
                out.push(json!({"input": spec, "outcome": "clock",
                    "text": format!("[{spec}] clock moved; timeouts wait for the next check")}));
            }
            continue;
        }
        let (event, items) = parse_event(spec)?;
        let d = engine
            .trigger(&mut order, items.as_deref(), event, now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        report(process, spec, &d, &mut out);
        if auto {
            settle(&engine, &mut order, now, "(check)", &mut out)?;
        }
    }
    let finals: Vec<Value> = order
        .items
        .iter()
        .map(|i| json!({"item": i.id, "state": process.state(i.state).name}))
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"process": process.name(), "steps": out, "final": finals})
            )?
        );
    } else {
        for s in &out {
            println!("{}", s["text"].as_str().unwrap_or_default());
        }
        println!("final:");
        for f in &finals {
            println!(
                "  item {}: {}",
                f["item"],
                f["state"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_event(spec: &str) -> anyhow::Result<(&str, Option<Vec<i64>>)> {
    match spec.split_once('@') {
        None => Ok((spec.trim(), None)),
        Some((event, ids)) => {
            let ids = ids
                .split('+')
                .map(|i| {
                    i.trim()
                        .parse::<i64>()
                        .with_context(|| format!("{spec:?}: item {i:?} is not a number"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((event.trim(), Some(ids)))
        }
    }
}

/// Runs check-condition passes (event-less transitions, due timeouts) until nothing moves,
/// reporting each under `label`.
fn settle(
    engine: &Engine<'_>,
    order: &mut Order,
    now: DateTime<Utc>,
    label: &str,
    out: &mut Vec<Value>,
) -> anyhow::Result<()> {
    for _ in 0..MAX_CHECK_PASSES {
        let d = engine
            .check(order, None, now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if d.moves().next().is_none() {
            return Ok(());
        }
        report(engine.process, label, &d, out);
    }
    Ok(())
}

fn cause_name(c: Cause) -> &'static str {
    match c {
        Cause::Trigger => "triggered",
        Cause::OnEnter => "onEnter",
        Cause::Timeout => "timeout",
        Cause::Condition => "event-less",
        other => other.as_str(),
    }
}

fn report(p: &Process, label: &str, d: &Decisions, out: &mut Vec<Value>) {
    for c in &d.commands {
        let outcome = match &c.outcome {
            CommandOutcome::Ok => "ran".to_owned(),
            CommandOutcome::Failed(e) => format!("failed: {e}"),
            CommandOutcome::Skipped => "skipped (not bound)".to_owned(),
            other => format!("{other:?}"),
        };
        out.push(
            json!({"input": label, "command": c.command, "items": c.items, "outcome": outcome,
            "text": format!("[{label}] command {} for items {:?}: {outcome}", c.command, c.items)}),
        );
    }
    for s in &d.steps {
        let event = s.event.map_or("(no event)", |e| p.event(e).name.as_str());
        let why = cause_name(s.cause);
        let (kind, from, to, text) = match &s.outcome {
            Outcome::Moved {
                from,
                to,
                transition,
            } => {
                let t = p.transition(*transition);
                let cond = t
                    .condition
                    .as_deref()
                    .map(|c| format!(", condition {c}"))
                    .unwrap_or_default();
                let (f, t) = (&p.state(*from).name, &p.state(*to).name);
                (
                    "moved",
                    f.clone(),
                    t.clone(),
                    format!("item {}: {f} -> {t}  ({event}, {why}{cond})", s.item),
                )
            }
            Outcome::NotApplicable { state } => {
                let st = &p.state(*state).name;
                (
                    "not_applicable",
                    st.clone(),
                    st.clone(),
                    format!("item {}: {event} not applicable in {st}", s.item),
                )
            }
            Outcome::Stayed { state, reason } => {
                let st = &p.state(*state).name;
                (
                    "stayed",
                    st.clone(),
                    st.clone(),
                    format!("item {}: stays in {st} on {event}: {reason}", s.item),
                )
            }
            other => (
                "other",
                String::new(),
                String::new(),
                format!("item {}: {other:?} on {event}", s.item),
            ),
        };
        out.push(json!({"input": label, "item": s.item, "event": s.event.map(|e| p.event(e).name.clone()),
            "cause": s.cause, "outcome": kind, "from": from, "to": to, "text": format!("[{label}] {text}")}));
    }
}
