//! Drawings of a process: Graphviz DOT text and a standalone SVG that needs no graphviz.
//!
//! Both renderers share one view of the process ([`GraphOptions`] applied to a [`Process`]):
//! states become boxes labelled with their name, a second line with `reserved` and the
//! flags, and the number of items in them when counts are given; transitions become arrows
//! labelled with the event and its markers (manual, onEnter ⟶, timeout), the condition in
//! brackets and, optionally, the command. Markers use only characters that DejaVu Sans (a
//! stock Debian desktop's font) has, or are drawn as SVG shapes: no emoji font needed. Happy transitions are drawn thick and green,
//! event-less ones dashed. Output is deterministic: the same process and options give the
//! same bytes, so drawings can be cached and compared.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Process;

mod dot;
mod layout;
mod svg;
mod text;

/// What to draw besides the process itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphOptions {
    /// Heading of the drawing; the process name when `None`.
    pub title: Option<String>,
    /// Number of items per state, keyed by state name (the form the store keeps states in).
    /// A state with a count above zero shows it (`shipped · 12`) and is highlighted; names
    /// that are not states of the process are ignored.
    pub counts: BTreeMap<String, u64>,
    /// State names to emphasise even without items, e.g. where one order's items are.
    pub highlight: BTreeSet<String>,
    /// Show each event's command (`⚙ Oms/SendInvoice`) on its edges.
    pub show_commands: bool,
    /// Add a legend explaining the markers, colours and line styles.
    pub legend: bool,
    /// SVG only: a link per state name; the state's box becomes `<a href>` to it (a web
    /// page drawing the graph links each state to its items).
    pub state_links: BTreeMap<String, String>,
}

impl GraphOptions {
    /// Options with a legend, the default for humans looking at a drawing.
    pub fn with_legend() -> Self {
        Self {
            legend: true,
            ..Self::default()
        }
    }
}

/// Renders `process` as a Graphviz `digraph`, top to bottom.
pub fn to_dot(process: &Process, opts: &GraphOptions) -> String {
    dot::render(&View::new(process, opts), opts)
}

/// Renders `process` as a standalone SVG document with its own layered layout.
pub fn to_svg(process: &Process, opts: &GraphOptions) -> String {
    svg::render(&View::new(process, opts), opts)
}

/// Text after a manual event's name in DOT labels (a person triggers it, e.g. from the back
/// office). The SVG draws an "M" badge in front of the name instead.
pub(crate) const MANUAL_MARK: &str = "(manual)";
/// Marker for an onEnter event (fired as soon as an item enters the source state).
pub(crate) const ON_ENTER_MARK: &str = "⟶ on enter";
/// Text in front of a timeout in DOT labels (the event fires when the time has passed). The
/// SVG draws a clock (a circle and two hands) instead.
pub(crate) const TIMEOUT_MARK: &str = "timeout";
/// Marker in front of a command name.
pub(crate) const COMMAND_MARK: &str = "⚙";
/// Separator between a state name and its item count.
pub(crate) const COUNT_SEPARATOR: &str = " · ";

/// One state as drawn.
#[derive(Clone, Debug)]
pub(crate) struct NodeView {
    pub name: String,
    /// `reserved` and the flags, when there are any.
    pub detail: Option<String>,
    pub count: u64,
    pub reserved: bool,
    pub initial: bool,
    /// Has items or was asked to be highlighted.
    pub highlighted: bool,
}

impl NodeView {
    /// The first label line: the name, and the count when there are items.
    pub(crate) fn title(&self) -> String {
        if self.count > 0 {
            format!("{}{COUNT_SEPARATOR}{}", self.name, self.count)
        } else {
            self.name.clone()
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.title()];
        lines.extend(self.detail.clone());
        lines
    }
}

/// What a line of an edge label says, so the SVG can style each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// The event's name; `manual` draws a marker with it.
    Event {
        manual: bool,
    },
    OnEnter,
    /// The timeout as written (`1 hour`), without a marker: each renderer adds its own.
    Timeout,
    Condition,
    Command,
}

/// One transition as drawn.
#[derive(Clone, Debug)]
pub(crate) struct EdgeView {
    pub source: usize,
    pub target: usize,
    /// Label lines: event with markers, timeout, condition, command. Empty for an
    /// event-less transition without condition.
    pub lines: Vec<(LineKind, String)>,
    pub happy: bool,
    pub eventless: bool,
}

/// The process reduced to what the renderers draw, in definition order.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub title: String,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    pub initial: usize,
}

impl View {
    fn new(process: &Process, opts: &GraphOptions) -> Self {
        let initial = process.initial().0 as usize;
        let nodes = process
            .states()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let count = opts.counts.get(&s.name).copied().unwrap_or(0);
                let mut detail = Vec::new();
                if s.reserved {
                    detail.push("reserved".to_owned());
                }
                if !s.flags.is_empty() {
                    detail.push(format!("⚑ {}", s.flags.join(", ")));
                }
                NodeView {
                    name: s.name.clone(),
                    detail: (!detail.is_empty()).then(|| detail.join(COUNT_SEPARATOR)),
                    count,
                    reserved: s.reserved,
                    initial: i == initial,
                    highlighted: count > 0 || opts.highlight.contains(&s.name),
                }
            })
            .collect();
        let edges = process
            .transitions()
            .iter()
            .map(|t| {
                let mut lines = Vec::new();
                if let Some(e) = t.event.map(|e| process.event(e)) {
                    let kind = LineKind::Event { manual: e.manual };
                    lines.push((kind, e.name.clone()));
                    if e.on_enter {
                        lines.push((LineKind::OnEnter, ON_ENTER_MARK.to_owned()));
                    }
                    if let Some(timeout) = &e.timeout {
                        lines.push((LineKind::Timeout, timeout.to_string()));
                    }
                }
                if let Some(c) = &t.condition {
                    lines.push((LineKind::Condition, format!("[{c}]")));
                }
                if opts.show_commands
                    && let Some(cmd) = t.event.and_then(|e| process.event(e).command.as_ref())
                {
                    lines.push((LineKind::Command, format!("{COMMAND_MARK} {cmd}")));
                }
                EdgeView {
                    source: t.source.0 as usize,
                    target: t.target.0 as usize,
                    lines,
                    happy: t.happy,
                    eventless: t.event.is_none(),
                }
            })
            .collect();
        Self {
            title: opts
                .title
                .clone()
                .unwrap_or_else(|| process.name().to_owned()),
            nodes,
            edges,
            initial,
        }
    }
}

/// The text of a label line as DOT shows it (the SVG draws the manual and timeout markers).
pub(crate) fn line_text(kind: LineKind, text: &str) -> String {
    match kind {
        LineKind::Event { manual: true } => format!("{text} {MANUAL_MARK}"),
        LineKind::Timeout => format!("{TIMEOUT_MARK} {text}"),
        _ => text.to_owned(),
    }
}

/// A marker the SVG draws as a shape in front of a legend line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    None,
    Manual,
    Timeout,
}

/// Legend lines shared by both renderers: DOT prints `dot`, the SVG draws `mark` and `svg`.
pub(crate) struct LegendLine {
    pub mark: Mark,
    pub dot: &'static str,
    pub svg: &'static str,
}

const fn plain(text: &'static str) -> LegendLine {
    LegendLine {
        mark: Mark::None,
        dot: text,
        svg: text,
    }
}

pub(crate) const LEGEND: &[LegendLine] = &[
    plain("● start: new items enter the state it points to"),
    LegendLine {
        mark: Mark::Manual,
        dot: "event (manual): manual event",
        svg: "manual event",
    },
    plain("⟶ on enter: fires when an item enters the state"),
    LegendLine {
        mark: Mark::Timeout,
        dot: "timeout 1 hour: timeout event",
        svg: "timeout event",
    },
    plain("[Condition] must hold to take the transition"),
    plain("thick green arrow: happy path"),
    plain("dashed arrow: event-less, taken when its condition holds"),
    plain("amber box: reserved (items hold stock)"),
    plain("blue border: state has items (· count) or is highlighted"),
];
