//! The shared corpus of real Spryker OMS definitions: every main file loads, the facts the
//! corpus notes (`SOURCES.md`) list are read right, and the engine can walk each happy path.
//!
//! The corpus folder comes from `ORDERFLOW_CORPUS_DIR` (CI sets it); without it the tests
//! look for the shared corpus beside the repository and, outside CI, skip loudly when it
//! is not there.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oms::bindings::ConditionBinding;
use oms::check::WarningCode;
use oms::engine::{EngineOptions, Item, Order, UnboundPolicy};
use oms::model::{Process, StateId, Transition};
use oms::parse::{self, Loaded};
use oms::{Engine, Registry};

/// The `spryker-oms` folder of the corpus, or `None` when the tests should be skipped.
fn spryker_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ORDERFLOW_CORPUS_DIR") {
        let dir = PathBuf::from(dir).join("spryker-oms");
        assert!(
            dir.is_dir(),
            "ORDERFLOW_CORPUS_DIR is set but {} is not a folder: fix the variable or the corpus",
            dir.display()
        );
        return Some(dir);
    }
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/spryker-oms");
    if fallback.is_dir() {
        return Some(fallback);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but there is no corpus: set ORDERFLOW_CORPUS_DIR to the shared corpus"
    );
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!! CORPUS TESTS SKIPPED: set ORDERFLOW_CORPUS_DIR to the shared corpus \
         folder (the one holding spryker-oms/) to run them !!!!!!!!!!\n"
    );
    None
}

/// Top-level `*.xml` files that declare a main process, found by a plain text search so
/// the test does not trust the loader's own detection.
fn main_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("corpus folder is readable")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .filter(|p| {
            fs::read_to_string(p)
                .expect("corpus file is readable")
                .contains(r#"main="true""#)
        })
        .map(|p| file_name(&p))
        .collect();
    names.sort();
    names
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load(dir: &Path, file: &str) -> Loaded {
    parse::load_file(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn event<'a>(l: &'a Loaded, name: &str) -> &'a oms::model::Event {
    let id = l
        .process
        .event_id(name)
        .unwrap_or_else(|| panic!("{l}: no event {name:?}"));
    l.process.event(id)
}

#[test]
fn every_main_file_loads_and_load_dir_finds_exactly_them() {
    let Some(dir) = spryker_dir() else { return };
    let expected = main_files(&dir);
    assert_eq!(
        expected.len(),
        12,
        "the corpus has 12 main files: {expected:?}"
    );
    for file in &expected {
        let l = load(&dir, file);
        eprintln!(
            "{file}: {} states, {} events, {} transitions, subprocesses {:?}",
            l.process.states().len(),
            l.process.events().len(),
            l.process.transitions().len(),
            l.process.subprocesses()
        );
        for w in &l.warnings {
            eprintln!("  {w}");
        }
    }
    let found: Vec<String> = parse::load_dir(&dir)
        .unwrap_or_else(|e| panic!("load_dir: {e}"))
        .iter()
        .map(|l| file_name(&l.path))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn corpus_facts_are_read_as_spryker_reads_them() {
    let Some(dir) = spryker_dir() else { return };

    let mollie = load(&dir, "mollie__MolliePaymentStateMachineManualCapture01.xml");
    let start = event(&mollie, "start authorization");
    let timeout = start
        .timeout
        .as_ref()
        .expect("start authorization has a timeout");
    assert_eq!(timeout.raw(), " 1 minute");
    assert_eq!(timeout.approx_seconds(), 60);

    let amazon = load(&dir, "amazon-pay__AmazonPayAsync01.xml");
    let duplicates: Vec<&str> = amazon
        .warnings
        .iter()
        .filter(|w| w.code == WarningCode::DuplicateEvent)
        .map(|w| w.message.as_str())
        .collect();
    assert!(
        duplicates.iter().any(|m| m.contains(r#""cancel""#)),
        "{duplicates:?}"
    );
    // `close` is onEnter in Auth and manual in Close, which is read later and wins.
    let close = event(&amazon, "close");
    assert!(close.manual && !close.on_enter, "{close:?}");
    // Auth uses `waiting for capture status`, which the Capture subprocess declares.
    let waiting = amazon
        .process
        .state_id("waiting for capture status")
        .expect("state");
    assert_eq!(
        amazon.process.state(waiting).process,
        "AmazonPaySubprocessCapture01"
    );
    assert!(
        amazon
            .process
            .transitions()
            .iter()
            .any(|t| t.source == waiting && t.process == "AmazonPaySubprocessAuth01")
    );
    let new = amazon.process.state(amazon.process.initial());
    assert_eq!((new.name.as_str(), new.reserved), ("new", true));
    assert_eq!(new.flags, ["not auth"]);

    let dummy = load(&dir, "demoshop__DummyPayment01.xml");
    let pay = event(&dummy, "pay");
    assert!(pay.manual);
    assert_eq!(
        pay.timeout.as_ref().map(|t| t.approx_seconds()),
        Some(3_600)
    );
    assert_eq!(pay.command.as_deref(), Some("DummyPayment/Pay"));
    assert!(
        dummy
            .warnings
            .iter()
            .any(|w| w.code == WarningCode::UnusedEvent && w.message.contains(r#""export""#))
    );

    let nopayment = load(&dir, "demoshop-2016__Nopayment01.xml");
    let authorize = event(&nopayment, "authorize");
    assert!(authorize.on_enter && authorize.manual);

    let checkout = load(&dir, "demoshop-2016__CheckoutTest01.xml");
    let unconditional: Vec<(&str, &str)> = checkout
        .process
        .transitions()
        .iter()
        .filter(|t| t.event.is_none() && t.condition.is_none())
        .map(|t| names(&checkout.process, t))
        .collect();
    assert_eq!(unconditional, [("ship", "cronjob1")]);

    let payolution = load(&dir, "demoshop-2016__PayolutionPayment01.xml");
    let closing = event(&payolution, "start closing process with timeout");
    assert_eq!(
        closing.timeout.as_ref().map(|t| t.approx_seconds()),
        Some(183 * 86_400)
    );
    assert_eq!(
        payolution.process.subprocesses(),
        ["Authorization", "Shipment", "Capture", "Refund", "Closing"]
    );

    let heidelpay = load(&dir, "heidelpay__HeidelpayInvoiceSecuredB2c01.xml");
    assert!(
        heidelpay
            .warnings
            .iter()
            .any(|w| w.code == WarningCode::DuplicateState && w.message.contains(r#""invalid""#))
    );
}

fn names<'a>(p: &'a Process, t: &Transition) -> (&'a str, &'a str) {
    (
        p.state(t.source).name.as_str(),
        p.state(t.target).name.as_str(),
    )
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

/// Every condition of the process false, except the one of the transition being walked.
fn registry_for(process: &Process, walked: Option<&Transition>) -> Registry {
    let mut registry = Registry::new();
    let chosen = walked.and_then(|t| t.condition.as_deref());
    for name in process.condition_names() {
        let value = Some(name) == chosen;
        registry.register_condition(name, ConditionBinding::Constant { value });
    }
    registry
}

/// The transition a walker takes out of `state`: the first `happy="true"` one; when none
/// is, the first transition out that comes from a (sub)process that marks no transition
/// happy at all. Some corpus files never use `happy` (demoshop-2016 Invoice01, the
/// Payolution and Heidelpay credit-card main files); their authors left the happy path
/// unmarked rather than absent, so the walker follows definition order there.
fn next_transition(process: &Process, state: StateId) -> Option<&Transition> {
    process
        .happy_from(state)
        .map(|t| process.transition(t))
        .or_else(|| {
            process.outgoing(state).map(|(_, t)| t).find(|t| {
                !process
                    .transitions()
                    .iter()
                    .any(|u| u.happy && u.process == t.process)
            })
        })
}

/// Walks the happy path of `process` with one item; returns the visited state names.
fn walk(l: &Loaded) -> Vec<String> {
    let process = &l.process;
    let lenient = EngineOptions {
        unbound: UnboundPolicy::Lenient,
        ..EngineOptions::default()
    };
    let mut order = Order {
        reference: "CORPUS-1".into(),
        attributes: Default::default(),
        items: vec![Item {
            id: 1,
            sku: "SKU-1".into(),
            quantity: 1,
            state: process.initial(),
            state_entered_at: t0(),
            attributes: Default::default(),
        }],
    };
    let mut now = t0();
    let mut path = vec![process.state(process.initial()).name.clone()];
    let mut visited: HashSet<StateId> = HashSet::new();

    // Starting runs the initial state's onEnter chain: walk its happy transition there.
    let first = next_transition(process, process.initial());
    let registry = registry_for(process, first);
    let engine = Engine::new(process, &registry).with_options(lenient);
    let decisions = engine.start(&mut order, now);
    let mut cur = process.initial();
    if let Some(t) = first
        && t.event.is_some_and(|e| process.event(e).on_enter)
    {
        assert!(
            decisions
                .moves()
                .any(|(_, from, to)| from == cur && to == t.target),
            "{l}: start did not take {:?} -> {:?}: {:?}",
            process.state(cur).name,
            process.state(t.target).name,
            decisions.steps
        );
        visited.insert(cur);
        path.push(process.state(t.target).name.clone());
        cur = order.items[0].state;
        if cur != t.target {
            path.push(format!("(onEnter to {})", process.state(cur).name));
        }
    }

    while visited.insert(cur) {
        let Some(t) = next_transition(process, cur) else {
            break;
        };
        let registry = registry_for(process, Some(t));
        let engine = Engine::new(process, &registry).with_options(lenient);
        now += TimeDelta::days(1);
        let decisions = match t.event {
            Some(e) => engine.trigger(&mut order, None, &process.event(e).name, now),
            None => engine.check(&mut order, None, now),
        }
        .unwrap_or_else(|e| panic!("{l}: {e}"));
        let (from, to) = names(process, t);
        assert!(
            decisions
                .moves()
                .any(|(_, f, to)| f == cur && to == t.target),
            "{l}: happy transition {from:?} -> {to:?} was not taken: {:?}",
            decisions.steps
        );
        path.push(to.to_owned());
        cur = order.items[0].state;
        if cur != t.target {
            path.push(format!("(onEnter to {})", process.state(cur).name));
        }
    }
    path
}

#[test]
fn the_engine_walks_each_happy_path() {
    let Some(dir) = spryker_dir() else { return };
    for file in main_files(&dir) {
        let l = load(&dir, &file);
        let path = walk(&l);
        eprintln!("{file}: {}", path.join(" -> "));
        assert!(
            path.len() >= 2,
            "{file}: no happy step from the initial state"
        );
    }
}

#[test]
fn the_projects_example_processes_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processes");
    let loaded = parse::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!loaded.is_empty(), "no main process in {}", dir.display());
}

#[test]
fn every_main_file_renders_to_svg_and_dot() {
    use oms::graph::{GraphOptions, to_dot, to_svg};
    let Some(dir) = spryker_dir() else { return };
    for file in main_files(&dir) {
        let l = load(&dir, &file);
        let opts = GraphOptions::with_legend();
        let svg = to_svg(&l.process, &opts);
        let doc = roxmltree::Document::parse(&svg)
            .unwrap_or_else(|e| panic!("{file}: SVG is not well-formed: {e}"));
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        for s in l.process.states() {
            assert!(
                texts.contains(&s.name.as_str()),
                "{file}: state {:?} not drawn",
                s.name
            );
        }
        let dot = to_dot(&l.process, &opts);
        let mut parser = layout::gv::DotParser::new(&dot);
        assert!(parser.process().is_ok(), "{file}: DOT does not parse");
        for t in l.process.transitions() {
            if let Some(e) = t.event {
                assert!(
                    dot.contains(&l.process.event(e).name),
                    "{file}: no label for {:?}",
                    l.process.event(e).name
                );
            }
        }
    }
}
