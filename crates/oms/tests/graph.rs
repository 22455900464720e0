//! What a user of the drawings checks: every state and transition is there with its markers,
//! text is escaped, the SVG is a valid standalone document whose boxes do not overlap, and
//! the same input always gives the same output.

use std::collections::BTreeMap;
use std::path::Path;

use oms::Timeout;
use oms::graph::{GraphOptions, to_dot, to_svg};
use oms::model::{Event, EventId, Origin, Process, State, StateId, Transition};

const ODD: &str = r#"ship "fast" \ <now> & co"#;

fn state(name: &str, reserved: bool, flags: &[&str]) -> State {
    State {
        name: name.into(),
        display: None,
        reserved,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        process: "Test".into(),
        origin: Origin::default(),
    }
}

fn event(name: &str, manual: bool, on_enter: bool, timeout: Option<&str>) -> Event {
    Event {
        name: name.into(),
        manual,
        on_enter,
        command: manual.then(|| "Oms/Capture".to_owned()),
        timeout: timeout.map(|t| Timeout::parse(t).expect("valid timeout")),
        timeout_processor: None,
        process: "Test".into(),
        origin: Origin::default(),
    }
}

fn tr(
    source: u32,
    target: u32,
    event: Option<u32>,
    condition: Option<&str>,
    happy: bool,
) -> Transition {
    Transition {
        source: StateId(source),
        target: StateId(target),
        event: event.map(EventId),
        condition: condition.map(Into::into),
        happy,
        process: "Test".into(),
        origin: Origin::default(),
    }
}

/// new → paid → shipped → closed on the happy path, with a manual, an onEnter and a timeout
/// event, an event-less transition, a self-loop, a back edge and a state with odd characters.
fn process() -> Process {
    Process::new(
        "Test01",
        StateId(0),
        vec![
            state("new", false, &[]),
            state("paid", true, &["exported", "cancellable"]),
            state(ODD, false, &[]),
            state("closed", false, &[]),
            state("canceled", false, &[]),
        ],
        vec![
            event("capture payment", true, false, None),
            event("ship", false, true, None),
            event("close", false, false, Some("1 hour")),
            event("retry", false, false, Some("PT30M")),
            event("cancel", true, false, None),
        ],
        vec![
            tr(0, 1, Some(0), Some("Payment/IsAuthorized"), true),
            tr(1, 2, Some(1), None, true),
            tr(2, 3, Some(2), None, true),
            tr(1, 4, None, Some("Payment/IsVoided"), false),
            tr(1, 1, Some(3), None, false),
            tr(4, 0, Some(4), None, false),
            tr(1, 4, Some(4), None, false),
        ],
        Vec::new(),
    )
}

fn counts() -> GraphOptions {
    GraphOptions {
        counts: BTreeMap::from([("paid".to_owned(), 12), ("closed".to_owned(), 0)]),
        legend: true,
        show_commands: true,
        ..GraphOptions::default()
    }
}

/// The DOT line that draws the edge `from -> to`.
fn dot_edge<'a>(dot: &'a str, from: &str, to: &str) -> &'a str {
    let prefix = format!("  \"{from}\" -> \"{to}\" [");
    dot.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no edge {from} -> {to} in\n{dot}"))
}

#[test]
fn dot_has_every_state_and_edge_label() {
    let p = process();
    let dot = to_dot(&p, &GraphOptions::default());
    assert!(dot.starts_with("digraph \"Test01\" {"));
    for s in [
        "new",
        "paid",
        "closed",
        "canceled",
        r#"ship \"fast\" \\ <now> & co"#,
    ] {
        assert!(
            dot.contains(&format!("\n  \"{s}\" [label=\"{s}")),
            "{s} missing:\n{dot}"
        );
    }
    for e in [
        "capture payment",
        "ship",
        "close",
        "retry",
        "cancel",
        "[Payment/IsVoided]",
    ] {
        assert!(dot.contains(e), "{e} missing");
    }
    assert!(dot_edge(&dot, "paid", "paid").contains("retry"));
    let parallel = dot
        .lines()
        .filter(|l| l.starts_with("  \"paid\" -> \"canceled\" ["))
        .count();
    assert_eq!(
        parallel, 2,
        "one edge per transition, also between the same states"
    );
    assert!(dot_edge(&dot, "__start", "new").contains("color"));
}

#[test]
fn markers_for_manual_on_enter_timeout_and_condition() {
    let p = process();
    let opts = counts();
    let dot = to_dot(&p, &opts);
    let pay = dot_edge(&dot, "new", "paid");
    assert!(pay.contains("capture payment (manual)"), "{pay}");
    assert!(pay.contains("[Payment/IsAuthorized]"), "{pay}");
    assert!(pay.contains("⚙ Oms/Capture"), "{pay}");
    assert!(dot_edge(&dot, "paid", r#"ship \"fast\" \\ <now> & co"#).contains("⟶ on enter"));
    assert!(dot.contains("timeout 1 hour"));
    assert!(dot.contains("timeout PT30M"));
    let svg = to_svg(&p, &opts);
    for marker in [
        "capture payment",
        "⟶ on enter",
        ">1 hour<",
        "[Payment/IsAuthorized]",
    ] {
        assert!(svg.contains(marker), "{marker} missing from the SVG");
    }
    // Manual events get a drawn "M" badge and timeouts a drawn clock: one per edge (three
    // manual, two timeout) and one in the legend.
    assert_eq!(svg.matches(r#"class="manual-mark""#).count(), 3 + 1);
    assert_eq!(svg.matches(r#"class="timeout-mark""#).count(), 2 + 1);
}

/// Every character of the drawings is one a stock Debian machine's DejaVu Sans has: no
/// emoji, which show as empty boxes without an emoji font.
#[test]
fn drawings_need_no_emoji_font() {
    let opts = GraphOptions {
        show_commands: true,
        ..GraphOptions::with_legend()
    };
    let p = process();
    for (format, text) in [("dot", to_dot(&p, &opts)), ("svg", to_svg(&p, &opts))] {
        // Characters outside the test process's own names: the renderer's markers.
        let marks: std::collections::BTreeSet<char> =
            text.chars().filter(|c| !c.is_ascii()).collect();
        let allowed = ['●', '⟶', '⚙', '⚑', '·'];
        let odd: Vec<char> = marks.into_iter().filter(|c| !allowed.contains(c)).collect();
        assert!(odd.is_empty(), "{format} uses {odd:?}");
    }
}

#[test]
fn happy_edges_are_emphasised_and_event_less_ones_dashed() {
    let dot = to_dot(&process(), &GraphOptions::default());
    assert!(dot_edge(&dot, "new", "paid").contains("penwidth=2.5"));
    assert!(!dot_edge(&dot, "canceled", "new").contains("penwidth"));
    assert!(dot_edge(&dot, "paid", "canceled").contains("style=dashed"));
    assert!(!dot_edge(&dot, "new", "paid").contains("dashed"));

    let svg = to_svg(&process(), &GraphOptions::default());
    let happy = svg.matches("marker-end=\"url(#arrow-happy)\"").count();
    assert_eq!(happy, 3, "one thick arrow per happy transition");
    assert_eq!(svg.matches("stroke-dasharray").count(), 1);
}

#[test]
fn reserved_states_and_flags_are_marked() {
    let dot = to_dot(&process(), &GraphOptions::default());
    let paid = dot
        .lines()
        .find(|l| l.starts_with("  \"paid\" ["))
        .unwrap_or_default();
    assert!(
        paid.contains("reserved · ⚑ exported, cancellable"),
        "{paid}"
    );
    assert!(
        paid.contains("fillcolor"),
        "reserved states get their own fill: {paid}"
    );
}

#[test]
fn counts_appear_and_states_with_items_are_highlighted() {
    let p = process();
    let dot = to_dot(&p, &counts());
    let paid = dot
        .lines()
        .find(|l| l.starts_with("  \"paid\" ["))
        .unwrap_or_default();
    assert!(paid.contains("label=\"paid · 12"), "{paid}");
    assert!(paid.contains("penwidth"), "{paid}");
    let closed = dot
        .lines()
        .find(|l| l.starts_with("  \"closed\" ["))
        .unwrap_or_default();
    assert!(
        !closed.contains('·') && !closed.contains("penwidth"),
        "a zero count is not shown: {closed}"
    );
    let svg = to_svg(&p, &counts());
    assert!(svg.contains(">paid · 12</text>"));
}

#[test]
fn dot_is_well_formed() {
    let dot = to_dot(&process(), &counts());
    // layout-rs ships a DOT parser: the text must be accepted by it.
    let mut parser = layout::gv::DotParser::new(&dot);
    assert!(parser.process().is_ok(), "not valid DOT:\n{dot}");
    for line in dot.lines() {
        let unescaped = line.replace("\\\\", "").replace("\\\"", "");
        assert_eq!(
            unescaped.matches('"').count() % 2,
            0,
            "unbalanced quotes: {line}"
        );
    }
    assert!(dot.ends_with("}\n"));
}

#[test]
fn svg_is_a_standalone_document_with_every_state() {
    let p = process();
    let svg = to_svg(&p, &counts());
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    for attr in ["width", "height", "viewBox"] {
        assert!(root.attribute(attr).is_some(), "{attr} missing");
    }
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for s in p.states() {
        assert!(
            texts
                .iter()
                .any(|t| *t == s.name || t.starts_with(&format!("{} · ", s.name))),
            "{} not drawn",
            s.name
        );
    }
}

/// Rectangles of state boxes and edge-label backgrounds must not overlap.
fn assert_no_overlap(svg: &str) {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).and_then(|v| v.parse::<f64>().ok());
    let rects: Vec<(f64, f64, f64, f64)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("rx").is_some())
        .filter_map(|n| {
            Some((
                num(&n, "x")?,
                num(&n, "y")?,
                num(&n, "width")?,
                num(&n, "height")?,
            ))
        })
        .collect();
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            let apart =
                a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
            assert!(apart, "{a:?} overlaps {b:?}");
        }
    }
}

#[test]
fn svg_boxes_do_not_overlap() {
    let svg = to_svg(&process(), &counts());
    let boxes = svg.matches(" rx=\"").count();
    assert!(boxes >= 5 + 4, "states and labels are drawn as boxes");
    assert_no_overlap(&svg);
}

/// The project's own example process, loaded by the real parser.
#[test]
fn renders_the_example_process() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processes/ErpOrder01.xml");
    let loaded = oms::parse::load_file(&file).expect("example process loads");
    let svg = to_svg(&loaded.process, &GraphOptions::with_legend());
    assert_no_overlap(&svg);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    for s in loaded.process.states() {
        assert!(
            doc.descendants().any(|n| n.text() == Some(s.name.as_str())),
            "{}",
            s.name
        );
    }
    let dot = to_dot(&loaded.process, &GraphOptions::default());
    assert!(layout::gv::DotParser::new(&dot).process().is_ok());
}

#[test]
fn a_process_without_transitions_renders() {
    let p = Process::new(
        "One",
        StateId(0),
        vec![state("new", false, &[])],
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let svg = to_svg(&p, &GraphOptions::default());
    assert!(roxmltree::Document::parse(&svg).is_ok());
    assert!(to_dot(&p, &GraphOptions::default()).contains("\"__start\" -> \"new\""));
}

#[test]
fn highlighted_states_are_emphasised_without_counts() {
    let opts = GraphOptions {
        highlight: ["closed".to_owned()].into(),
        ..GraphOptions::default()
    };
    let dot = to_dot(&process(), &opts);
    let closed = dot
        .lines()
        .find(|l| l.starts_with("  \"closed\" ["))
        .unwrap_or_default();
    assert!(closed.contains("penwidth"), "{closed}");
    assert!(!closed.contains('·'), "no count without items: {closed}");
}

#[test]
fn output_is_deterministic() {
    let opts = counts();
    assert_eq!(to_dot(&process(), &opts), to_dot(&process(), &opts));
    assert_eq!(to_svg(&process(), &opts), to_svg(&process(), &opts));
}

#[test]
fn title_defaults_to_the_process_name_and_can_be_set() {
    let p = process();
    assert!(to_svg(&p, &GraphOptions::default()).contains("<title>Test01</title>"));
    let opts = GraphOptions {
        title: Some("A & B".into()),
        ..GraphOptions::default()
    };
    assert!(to_svg(&p, &opts).contains("<title>A &amp; B</title>"));
    assert!(to_dot(&p, &opts).starts_with("digraph \"A & B\" {"));
}

/// A state given a link is drawn inside `<a href>` (escaped); the others are not, and DOT
/// has no links.
#[test]
fn states_link_where_asked() {
    let opts = GraphOptions {
        state_links: BTreeMap::from([("paid".to_owned(), "/orders?state=paid&x=<1>".to_owned())]),
        ..GraphOptions::default()
    };
    let svg = to_svg(&process(), &opts);
    assert_eq!(svg.matches("<a href=").count(), 1, "{svg}");
    assert!(
        svg.contains(r#"<a href="/orders?state=paid&amp;x=&lt;1&gt;">"#),
        "{svg}"
    );
    let link = svg.find("<a href=").unwrap();
    let title = svg[link..].find("<title>paid</title>").unwrap();
    assert!(
        svg[link..link + title].matches("<g>").count() == 1,
        "the link wraps the state"
    );
    assert!(!to_dot(&process(), &opts).contains("href"));
}
