//! Graphviz DOT output.

use std::fmt::Write;

use super::text::dot_escape;
use super::{GraphOptions, LEGEND, View, line_text};

const FONT: &str = "Helvetica,Arial,sans-serif";

/// Writes the view as a `digraph`. Node ids are the state names, quoted, so the text reads
/// like the XML it came from; labels join lines with `\n`.
pub(super) fn render(view: &View, opts: &GraphOptions) -> String {
    let mut out = String::new();
    let q = |s: &str| format!("\"{}\"", dot_escape(s));
    let label = |lines: &mut dyn Iterator<Item = &str>| {
        let escaped: Vec<String> = lines.map(dot_escape).collect();
        format!("\"{}\"", escaped.join("\\n"))
    };
    // Writing to a String cannot fail; `let _` keeps the builder free of unwraps.
    let _ = writeln!(out, "digraph {} {{", q(&view.title));
    let _ = writeln!(
        out,
        "  graph [label={}, labelloc=t, fontname=\"{FONT}\", fontsize=16, rankdir=TB, nodesep=0.5, ranksep=0.6];",
        q(&view.title)
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", color=\"#4a5568\", fontname=\"{FONT}\", fontsize=11];"
    );
    let _ = writeln!(
        out,
        "  edge [fontname=\"{FONT}\", fontsize=9, color=\"#718096\", fontcolor=\"#2d3748\"];"
    );
    let _ = writeln!(
        out,
        "  \"__start\" [shape=point, width=0.15, color=\"#1a202c\", label=\"\"];"
    );
    for node in &view.nodes {
        let mut attrs = vec![format!(
            "label={}",
            label(&mut node.lines().iter().map(String::as_str))
        )];
        if node.reserved {
            attrs.push("fillcolor=\"#fef3c7\"".into());
        }
        if node.highlighted {
            attrs.push("color=\"#2563eb\", penwidth=2.5, fontcolor=\"#1e3a8a\"".into());
        }
        if node.initial {
            attrs.push("peripheries=2".into());
        }
        let _ = writeln!(out, "  {} [{}];", q(&node.name), attrs.join(", "));
    }
    let _ = writeln!(
        out,
        "  \"__start\" -> {} [color=\"#1a202c\"];",
        q(&view.nodes[view.initial].name)
    );
    for edge in &view.edges {
        let lines: Vec<String> = edge.lines.iter().map(|(k, l)| line_text(*k, l)).collect();
        let mut attrs = vec![format!(
            "label={}",
            label(&mut lines.iter().map(String::as_str))
        )];
        if edge.happy {
            attrs.push("color=\"#15803d\", penwidth=2.5, fontcolor=\"#14532d\"".into());
        }
        if edge.eventless {
            attrs.push("style=dashed".into());
        }
        let _ = writeln!(
            out,
            "  {} -> {} [{}];",
            q(&view.nodes[edge.source].name),
            q(&view.nodes[edge.target].name),
            attrs.join(", ")
        );
    }
    if opts.legend {
        // `\l` left-aligns each legend line.
        let text: String = LEGEND
            .iter()
            .map(|l| format!("{}\\l", dot_escape(l.dot)))
            .collect();
        let _ = writeln!(
            out,
            "  \"__legend\" [shape=note, fillcolor=\"#f7fafc\", fontsize=9, label=\"Legend\\n{text}\"];"
        );
    }
    out.push_str("}\n");
    out
}
