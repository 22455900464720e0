//! Coordinates: x by neighbour-pulling sweeps with exact minimum gaps, y by stacking layers.

use super::{BAND_GAP, Kind, MIN_LABEL_BAND, Node, SWEEPS};

const NODE_GAP: f64 = 28.0;
const DUMMY_GAP: f64 = 10.0;

fn gap(a: &Node, b: &Node) -> f64 {
    let real = |n: &Node| matches!(n.kind, Kind::State(_) | Kind::Start | Kind::Label(_));
    if real(a) && real(b) {
        NODE_GAP
    } else {
        DUMMY_GAP
    }
}

/// Sweeps that move nodes towards their neighbours' mean x while keeping the order and gaps.
pub(super) fn place_x(
    nodes: &mut [Node],
    layers: &[Vec<usize>],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) {
    for layer in layers {
        let mut x = 0.0;
        for (i, &v) in layer.iter().enumerate() {
            if i > 0 {
                x += nodes[layer[i - 1]].right
                    + gap(&nodes[layer[i - 1]], &nodes[v])
                    + nodes[v].left;
            }
            nodes[v].x = x;
        }
    }
    for sweep in 0..SWEEPS {
        let ids: Vec<usize> = if sweep % 2 == 0 {
            (1..layers.len()).collect()
        } else {
            (0..layers.len().saturating_sub(1)).rev().collect()
        };
        let last = sweep + 2 >= SWEEPS;
        for l in ids {
            let layer = &layers[l];
            let targets: Vec<(f64, f64)> = layer
                .iter()
                .map(|&v| {
                    let ns: Vec<usize> = match (last, sweep % 2 == 0) {
                        (true, _) => up[v].iter().chain(&down[v]).copied().collect(),
                        (false, true) => up[v].clone(),
                        (false, false) => down[v].clone(),
                    };
                    // Virtual nodes pull harder so long edges straighten.
                    let weight = if matches!(nodes[v].kind, Kind::Dummy) {
                        4.0
                    } else {
                        1.0
                    };
                    if ns.is_empty() {
                        (nodes[v].x, 0.1)
                    } else {
                        let mean = ns.iter().map(|&u| nodes[u].x).sum::<f64>() / ns.len() as f64;
                        (mean, weight)
                    }
                })
                .collect();
            let seps: Vec<f64> = layer
                .windows(2)
                .map(|w| nodes[w[0]].right + gap(&nodes[w[0]], &nodes[w[1]]) + nodes[w[1]].left)
                .collect();
            for (&v, x) in layer.iter().zip(fit(&targets, &seps)) {
                nodes[v].x = x;
            }
        }
    }
}

/// Least-squares positions closest to `targets` (value, weight) with `x[i+1] - x[i] >=
/// seps[i]`: subtracting the cumulative separation turns it into isotonic regression, which
/// pool-adjacent-violators solves exactly.
fn fit(targets: &[(f64, f64)], seps: &[f64]) -> Vec<f64> {
    let mut offset = Vec::with_capacity(targets.len());
    let mut acc = 0.0;
    for i in 0..targets.len() {
        if i > 0 {
            acc += seps[i - 1];
        }
        offset.push(acc);
    }
    // Blocks of (weighted sum, weight, length).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for (i, &(t, w)) in targets.iter().enumerate() {
        blocks.push((w * (t - offset[i]), w, 1));
        while blocks.len() > 1 {
            let (s1, w1, n1) = blocks[blocks.len() - 1];
            let (s0, w0, n0) = blocks[blocks.len() - 2];
            if s0 / w0 <= s1 / w1 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (s0 + s1, w0 + w1, n0 + n1);
        }
    }
    let mut out = Vec::with_capacity(targets.len());
    for (s, w, n) in blocks {
        for _ in 0..n {
            out.push(s / w + offset[out.len()]);
        }
    }
    out
}

/// Stacks the layers; returns the total height.
pub(super) fn place_y(nodes: &mut [Node], layers: &[Vec<usize>]) -> f64 {
    let mut y = 0.0;
    for (l, layer) in layers.iter().enumerate() {
        let mut h = layer.iter().map(|&v| nodes[v].h).fold(0.0, f64::max);
        if l % 2 == 1 {
            h = h.max(MIN_LABEL_BAND);
        }
        for &v in layer {
            nodes[v].y = y + h / 2.0;
        }
        y += h + BAND_GAP;
    }
    y - BAND_GAP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_separations_and_reaches_free_targets() {
        let x = fit(&[(0.0, 1.0), (0.0, 1.0), (100.0, 1.0)], &[10.0, 10.0]);
        assert_eq!(x, vec![-5.0, 5.0, 100.0]);
    }
}
