//! Standalone SVG output drawn from [`super::layout`].

use std::fmt::Write;

use super::layout::{self, Input, Kind, Layout, Size, Waypoint};
use super::text::{text_width, xml_escape};
use super::{EdgeView, GraphOptions, LEGEND, LineKind, Mark, NodeView, View};

const FONT: &str = "DejaVu Sans, Verdana, Geneva, sans-serif";
const TITLE_SIZE: f64 = 13.0;
const DETAIL_SIZE: f64 = 10.5;
const EDGE_SIZE: f64 = 10.5;
const EDGE_LINE: f64 = 13.0;
const NODE_PAD_X: f64 = 14.0;
const NODE_PAD_Y: f64 = 8.0;
const MARGIN: f64 = 24.0;
const HEADER: f64 = 40.0;
const LOOP_REACH: f64 = 26.0;

/// Room a drawn marker (manual badge, clock) takes in front of its text.
const MARK_W: f64 = 14.0;

const EDGE_COLOR: &str = "#718096";
const TIMEOUT_COLOR: &str = "#b45309";
const HAPPY_COLOR: &str = "#15803d";
const START_COLOR: &str = "#1a202c";

fn node_size(node: &NodeView) -> Size {
    let mut w = text_width(&node.title(), TITLE_SIZE) * 1.08;
    let mut h = TITLE_SIZE + 4.0;
    if let Some(detail) = &node.detail {
        w = w.max(text_width(detail, DETAIL_SIZE));
        h += DETAIL_SIZE + 4.0;
    }
    Size {
        w: (w + 2.0 * NODE_PAD_X).max(70.0),
        h: h + 2.0 * NODE_PAD_Y,
    }
}

fn label_size(edge: &EdgeView) -> Size {
    let w = edge
        .lines
        .iter()
        .map(|(kind, l)| match kind {
            LineKind::Event { manual } => {
                text_width(l, EDGE_SIZE) * 1.08 + if *manual { MARK_W } else { 0.0 }
            }
            LineKind::Timeout => text_width(l, EDGE_SIZE) + MARK_W,
            _ => text_width(l, EDGE_SIZE),
        })
        .fold(0.0, f64::max);
    Size {
        w,
        h: edge.lines.len() as f64 * EDGE_LINE + 4.0,
    }
}

/// Renders the view: layout, then edges under labels under states, a title and a legend.
pub(super) fn render(view: &View, opts: &GraphOptions) -> String {
    let label_sizes: Vec<Size> = view.edges.iter().map(label_size).collect();
    let mut loop_room = vec![0.0; view.nodes.len()];
    for (e, edge) in view.edges.iter().enumerate() {
        if edge.source == edge.target {
            let room = &mut loop_room[edge.source];
            *room = f64::max(*room, LOOP_REACH + 8.0 + label_sizes[e].w);
        }
    }
    let input = Input {
        states: view.nodes.iter().map(node_size).collect(),
        loop_room,
        initial: view.initial,
        edges: view
            .edges
            .iter()
            .zip(&label_sizes)
            .map(|(e, s)| (e.source, e.target, *s))
            .collect(),
        preferred: view.edges.iter().map(|e| e.happy).collect(),
    };
    let layout = layout::layout(&input);

    let legend_w = if opts.legend {
        LEGEND
            .iter()
            .map(|l| text_width(l.svg, EDGE_SIZE) + legend_mark_w(l.mark))
            .fold(0.0, f64::max)
            + 24.0
    } else {
        0.0
    };
    let legend_h = (LEGEND.len() + 1) as f64 * 16.0 + 16.0;
    let title_w = text_width(&view.title, 18.0) * 1.1;
    let graph_w = layout.width.max(title_w);
    let width = MARGIN * 2.0 + graph_w + if opts.legend { legend_w + MARGIN } else { 0.0 };
    let height =
        MARGIN * 2.0 + HEADER + layout.height.max(if opts.legend { legend_h } else { 0.0 });
    let (ox, oy) = (MARGIN, MARGIN + HEADER);

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="{FONT}">"#,
        w = width.ceil(),
        h = height.ceil()
    );
    out.push('\n');
    let _ = writeln!(out, "<title>{}</title>", xml_escape(&view.title));
    out.push_str("<defs>\n");
    for (id, color) in [
        ("arrow", EDGE_COLOR),
        ("arrow-happy", HAPPY_COLOR),
        ("arrow-start", START_COLOR),
    ] {
        let _ = writeln!(
            out,
            r#"<marker id="{id}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#
        );
    }
    out.push_str("</defs>\n");
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{MARGIN}" y="{:.1}" font-size="18" font-weight="bold" fill="#1a202c">{}</text>"##,
        MARGIN + 20.0,
        xml_escape(&view.title)
    );
    let _ = writeln!(out, r#"<g transform="translate({ox:.1},{oy:.1})">"#);
    draw_edges(&mut out, view, &layout);
    draw_self_loops(&mut out, view, &layout, &label_sizes);
    draw_labels(&mut out, view, &layout);
    draw_nodes(&mut out, view, &layout, opts);
    out.push_str("</g>\n");
    if opts.legend {
        draw_legend(&mut out, ox + graph_w + MARGIN, oy, legend_w, legend_h);
    }
    out.push_str("</svg>\n");
    out
}

fn edge_style(edge: Option<&EdgeView>) -> (&'static str, f64, &'static str, &'static str) {
    match edge {
        None => (START_COLOR, 1.5, "arrow-start", ""),
        Some(e) => {
            let dash = if e.eventless {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            if e.happy {
                (HAPPY_COLOR, 2.6, "arrow-happy", dash)
            } else {
                (EDGE_COLOR, 1.3, "arrow", dash)
            }
        }
    }
}

/// Joins route points with cubic Hermite segments: vertical tangents at ports and labels,
/// Catmull-Rom tangents through the other points, so long edges flow instead of wiggling.
fn path_data(points: &[Waypoint]) -> String {
    let mut d = String::new();
    let Some(first) = points.first() else {
        return d;
    };
    let _ = write!(d, "M{:.1},{:.1}", first.x, first.y);
    let tangent = |i: usize, seg_dy: f64| -> (f64, f64) {
        let p = points[i];
        if p.vertical || i == 0 || i + 1 == points.len() {
            (0.0, seg_dy)
        } else {
            let (a, b) = (points[i - 1], points[i + 1]);
            ((b.x - a.x) / 2.0, (b.y - a.y) / 2.0)
        }
    };
    for i in 0..points.len() - 1 {
        let (a, b) = (points[i], points[i + 1]);
        if (a.x - b.x).abs() < 0.5 && a.vertical && b.vertical {
            let _ = write!(d, " L{:.1},{:.1}", b.x, b.y);
            continue;
        }
        let dy = b.y - a.y;
        let (ta, tb) = (tangent(i, dy), tangent(i + 1, dy));
        let _ = write!(
            d,
            " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
            a.x + ta.0 / 3.0,
            a.y + ta.1 / 3.0,
            b.x - tb.0 / 3.0,
            b.y - tb.1 / 3.0,
            b.x,
            b.y
        );
    }
    d
}

fn draw_edges(out: &mut String, view: &View, layout: &Layout) {
    // Happy edges last so they are drawn on top.
    let mut routes: Vec<_> = layout.routes.iter().collect();
    routes.sort_by_key(|r| r.edge.is_some_and(|e| view.edges[e].happy));
    for route in routes {
        let (color, width, marker, dash) = edge_style(route.edge.map(|e| &view.edges[e]));
        let _ = writeln!(
            out,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="{width}"{dash} marker-end="url(#{marker})"/>"#,
            path_data(&route.points)
        );
    }
}

/// A manual event's marker: a dark badge with a white "M", left edge at `x`.
fn manual_badge(out: &mut String, x: f64, baseline: f64) {
    let _ = writeln!(
        out,
        r##"<g class="manual-mark"><rect x="{x:.1}" y="{:.1}" width="11" height="11" fill="#374151"/><text x="{:.1}" y="{:.1}" font-size="8.5" font-weight="bold" fill="#ffffff" text-anchor="middle">M</text></g>"##,
        baseline - 9.5,
        x + 5.5,
        baseline - 1.0
    );
}

/// A timeout's marker: a clock (a circle and two hands), left edge at `x`.
fn clock(out: &mut String, x: f64, baseline: f64) {
    let (cx, cy) = (x + 5.5, baseline - 4.0);
    let _ = writeln!(
        out,
        r#"<g class="timeout-mark" fill="none" stroke="{TIMEOUT_COLOR}" stroke-width="1.2" stroke-linecap="round"><circle cx="{cx:.1}" cy="{cy:.1}" r="5"/><path d="M{cx:.1},{cy:.1} V{:.1} M{cx:.1},{cy:.1} H{:.1}"/></g>"#,
        cy - 3.3,
        cx + 2.5
    );
}

fn legend_mark_w(mark: Mark) -> f64 {
    match mark {
        Mark::None => 0.0,
        Mark::Manual | Mark::Timeout => MARK_W,
    }
}

fn label_text(out: &mut String, edge: &EdgeView, x: f64, top: f64, anchor: &str) {
    for (i, (kind, line)) in edge.lines.iter().enumerate() {
        let (fill, extra) = match kind {
            LineKind::Event { .. } if edge.happy => ("#14532d", r#" font-weight="bold""#),
            LineKind::Event { .. } => ("#1a202c", r#" font-weight="bold""#),
            LineKind::OnEnter => ("#6b21a8", ""),
            LineKind::Timeout => (TIMEOUT_COLOR, ""),
            LineKind::Condition => ("#1d4ed8", r#" font-style="italic""#),
            LineKind::Command => ("#4a5568", ""),
        };
        let baseline = top + 2.0 + (i + 1) as f64 * EDGE_LINE - 3.0;
        let text_x = match kind {
            LineKind::Event { manual: true } => {
                manual_badge(out, x, baseline);
                x + MARK_W
            }
            LineKind::Timeout => {
                clock(out, x, baseline);
                x + MARK_W
            }
            _ => x,
        };
        let _ = writeln!(
            out,
            r#"<text x="{text_x:.1}" y="{baseline:.1}" font-size="{EDGE_SIZE}" fill="{fill}" text-anchor="{anchor}"{extra}>{}</text>"#,
            xml_escape(line)
        );
    }
}

fn draw_labels(out: &mut String, view: &View, layout: &Layout) {
    for node in &layout.nodes {
        if let Kind::Label(e) = node.kind {
            let edge = &view.edges[e];
            let top = node.y - node.h / 2.0;
            let _ = writeln!(
                out,
                r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" rx="3" fill="#ffffff" fill-opacity="0.85"/>"##,
                node.x + 4.0,
                node.right - 2.0,
                node.h
            );
            label_text(out, edge, node.x + 7.0, top, "start");
        }
    }
}

fn draw_self_loops(out: &mut String, view: &View, layout: &Layout, sizes: &[Size]) {
    let mut seen = vec![0usize; view.nodes.len()];
    for (e, edge) in view.edges.iter().enumerate() {
        if edge.source != edge.target {
            continue;
        }
        let node = &layout.nodes[Layout::state_node(edge.source)];
        let k = seen[edge.source] as f64;
        seen[edge.source] += 1;
        let right = node.x + node.left;
        let reach = LOOP_REACH + 6.0 * k;
        let (y0, y1) = (node.y - node.h / 4.0, node.y + node.h / 4.0);
        let (color, width, marker, dash) = edge_style(Some(edge));
        let _ = writeln!(
            out,
            r#"<path d="M{right:.1},{y0:.1} C{:.1},{:.1} {:.1},{:.1} {right:.1},{y1:.1}" fill="none" stroke="{color}" stroke-width="{width}"{dash} marker-end="url(#{marker})"/>"#,
            right + reach,
            y0 - 10.0,
            right + reach,
            y1 + 10.0
        );
        let top = node.y - node.h / 2.0 - sizes[e].h * k;
        label_text(out, edge, right + reach + 6.0, top, "start");
    }
}

fn draw_nodes(out: &mut String, view: &View, layout: &Layout, opts: &GraphOptions) {
    for node in &layout.nodes {
        match node.kind {
            Kind::Start => {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="6" fill="{START_COLOR}"/>"#,
                    node.x, node.y
                );
            }
            Kind::State(s) => {
                let state = &view.nodes[s];
                let link = opts.state_links.get(&state.name);
                if let Some(href) = link {
                    let _ = writeln!(out, r#"<a href="{}">"#, xml_escape(href));
                }
                draw_state(out, state, node);
                if link.is_some() {
                    let _ = writeln!(out, "</a>");
                }
            }
            Kind::Label(_) | Kind::Dummy => {}
        }
    }
}

fn draw_state(out: &mut String, state: &NodeView, node: &layout::Node) {
    let (w, h) = (node.left * 2.0, node.h);
    let (x, y) = (node.x - node.left, node.y - h / 2.0);
    let fill = match (state.reserved, state.highlighted) {
        (true, _) => "#fef3c7",
        (false, true) => "#dbeafe",
        (false, false) => "#ffffff",
    };
    let (stroke, width) = match (state.highlighted, state.initial) {
        (true, _) => ("#2563eb", 2.8),
        (false, true) => (START_COLOR, 2.2),
        (false, false) => ("#4a5568", 1.2),
    };
    let _ = writeln!(out, "<g>");
    let _ = writeln!(out, "<title>{}</title>", xml_escape(&state.name));
    let _ = writeln!(
        out,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="9" fill="{fill}" stroke="{stroke}" stroke-width="{width}"/>"#
    );
    let text_color = if state.highlighted {
        "#1e3a8a"
    } else {
        "#1a202c"
    };
    let mut baseline = y + NODE_PAD_Y + TITLE_SIZE;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{baseline:.1}" font-size="{TITLE_SIZE}" font-weight="bold" fill="{text_color}" text-anchor="middle">{}</text>"#,
        node.x,
        xml_escape(&state.title())
    );
    if let Some(detail) = &state.detail {
        baseline += DETAIL_SIZE + 5.0;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{baseline:.1}" font-size="{DETAIL_SIZE}" fill="#92400e" text-anchor="middle">{}</text>"##,
            node.x,
            xml_escape(detail)
        );
    }
    let _ = writeln!(out, "</g>");
}

fn draw_legend(out: &mut String, x: f64, y: f64, w: f64, h: f64) {
    let _ = writeln!(
        out,
        r##"<g><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="6" fill="#f7fafc" stroke="#cbd5e0"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold" fill="#1a202c">Legend</text>"##,
        x + 12.0,
        y + 20.0
    );
    for (i, line) in LEGEND.iter().enumerate() {
        let (left, baseline) = (x + 12.0, y + 38.0 + i as f64 * 16.0);
        match line.mark {
            Mark::None => {}
            Mark::Manual => manual_badge(out, left, baseline),
            Mark::Timeout => clock(out, left, baseline),
        }
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{baseline:.1}" font-size="{EDGE_SIZE}" fill="#2d3748">{}</text>"##,
            left + legend_mark_w(line.mark),
            xml_escape(line.svg)
        );
    }
    out.push_str("</g>\n");
}
