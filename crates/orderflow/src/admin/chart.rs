//! The dashboard's throughput chart: a bar per minute, drawn as SVG on the server.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use maud::{Markup, PreEscaped};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 12.0;

/// Bars for `counts`, the `i`th for the minute starting at `starts[i]`; the y axis has a
/// round maximum. The SVG scales to its container's width.
pub(super) fn bars(starts: &[DateTime<Utc>], counts: &[i64]) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let top = nice_ceiling(max.max(2));
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / counts.len().max(1) as f64;
    let total: i64 = counts.iter().sum();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Updates settled per minute, last {} minutes: {total} in total" xmlns="http://www.w3.org/2000/svg">"##,
        counts.len()
    );
    for (frac, label) in [(0.0, 0.0), (0.5, top as f64 / 2.0), (1.0, top as f64)] {
        let y = TOP + plot_h * (1.0 - frac);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e2e8f0"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#64748b" text-anchor="end">{label}</text>"##,
            WIDTH - 8.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (i, (&n, start)) in counts.iter().zip(starts).enumerate() {
        let h = plot_h * n as f64 / top as f64;
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" rx="2" fill="#2563eb"><title>{} UTC: {n}</title></rect>"##,
            TOP + plot_h - h,
            slot * 0.7,
            start.format("%H:%M")
        );
        if i % 5 == 0 || i + 1 == counts.len() {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#64748b" text-anchor="middle">{}</text>"##,
                x + slot * 0.35,
                HEIGHT - 6.0,
                start.format("%H:%M")
            );
        }
    }
    svg.push_str("</svg>");
    PreEscaped(svg)
}

/// The smallest of 1, 2, 5 × 10^k that is at least `n`.
fn nice_ceiling(n: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if let Some(v) = step.checked_mul(m)
                && v >= n
            {
                return v;
            }
        }
        match step.checked_mul(10) {
            Some(s) => step = s,
            None => return n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maximum_is_round() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(nice_ceiling(i64::MAX), i64::MAX);
    }

    #[test]
    fn one_bar_per_minute() {
        let t = Utc::now();
        let svg = bars(&[t, t, t], &[0, 4, 2]).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("6 in total"), "{svg}");
    }
}
