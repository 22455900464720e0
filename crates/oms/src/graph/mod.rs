//! Drawings of a process: Graphviz DOT text and a standalone SVG that needs no graphviz.
//!
//! Both renderers share one view of the process ([`GraphOptions`] applied to a [`Process`]):
//! states become boxes labelled with their name, a second line with `reserved` and the
//! flags, and the number of items in them when counts are given; transitions become arrows
//! labelled with the event and its markers (manual ✋, onEnter ⟶, timeout ⏱), the condition
//! in brackets and, optionally, the command. Happy transitions are drawn thick and green,
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

/// Marker for a manual event (a person triggers it, e.g. from the back office).
pub const MANUAL_MARK: &str = "✋";
/// Marker for an onEnter event (fired as soon as an item enters the source state).
pub const ON_ENTER_MARK: &str = "⟶ on enter";
/// Marker in front of a timeout (the event fires when the time has passed).
pub const TIMEOUT_MARK: &str = "⏱";
/// Marker in front of a command name.
pub const COMMAND_MARK: &str = "⚙";
/// Separator between a state name and its item count.
pub const COUNT_SEPARATOR: &str = " · ";

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
    pub fn title(&self) -> String {
        if self.count > 0 {
            format!("{}{COUNT_SEPARATOR}{}", self.name, self.count)
        } else {
            self.name.clone()
        }
    }

    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.title()];
        lines.extend(self.detail.clone());
        lines
    }
}

/// What a line of an edge label says, so the SVG can style each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineKind {
    Event,
    OnEnter,
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
                    let name = if e.manual {
                        format!("{MANUAL_MARK} {}", e.name)
                    } else {
                        e.name.clone()
                    };
                    lines.push((LineKind::Event, name));
                    if e.on_enter {
                        lines.push((LineKind::OnEnter, ON_ENTER_MARK.to_owned()));
                    }
                    if let Some(timeout) = &e.timeout {
                        lines.push((LineKind::Timeout, format!("{TIMEOUT_MARK} {timeout}")));
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

/// Legend lines shared by both renderers.
pub(crate) const LEGEND: &[&str] = &[
    "● start: new items enter the state it points to",
    "✋ manual event",
    "⟶ on enter: fires when an item enters the state",
    "⏱ timeout event",
    "[Condition] must hold to take the transition",
    "thick green arrow: happy path",
    "dashed arrow: event-less, taken when its condition holds",
    "amber box: reserved (items hold stock)",
    "blue border: state has items (· count) or is highlighted",
];
