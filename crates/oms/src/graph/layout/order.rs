//! Order within layers: barycenter sweeps, keeping the order with the fewest crossings.

use super::{Node, SWEEPS};

/// Depth-first discovery order, used as the first order within each layer.
pub(super) fn dfs_order(count: usize, start: usize, down: &[Vec<usize>]) -> Vec<usize> {
    let mut seen = vec![false; count];
    let mut order = Vec::with_capacity(count);
    let roots = std::iter::once(start).chain(0..count);
    for root in roots {
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v], true) {
                continue;
            }
            order.push(v);
            stack.extend(down[v].iter().rev());
        }
    }
    order
}

/// Orders each layer by barycenter sweeps and returns the order with the fewest crossings.
pub(super) fn order(
    nodes: &[Node],
    layer_count: usize,
    first: &[usize],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) -> Vec<Vec<usize>> {
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    for &v in first {
        layers[nodes[v].layer].push(v);
    }
    let mut pos = vec![0usize; nodes.len()];
    let index = |layers: &[Vec<usize>], pos: &mut [usize]| {
        for layer in layers {
            for (i, &v) in layer.iter().enumerate() {
                pos[v] = i;
            }
        }
    };
    index(&layers, &mut pos);
    let mut best = (crossings(&layers, &pos, down), layers.clone());
    for sweep in 0..SWEEPS {
        let downward = sweep % 2 == 0;
        let range: Vec<usize> = if downward {
            (1..layer_count).collect()
        } else {
            (0..layer_count.saturating_sub(1)).rev().collect()
        };
        for l in range {
            let neighbours = if downward { up } else { down };
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&v| {
                    let ns = &neighbours[v];
                    let key = if ns.is_empty() {
                        pos[v] as f64
                    } else {
                        ns.iter().map(|&u| pos[u] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (key, v)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(pos[a.1].cmp(&pos[b.1])));
            layers[l] = keyed.into_iter().map(|(_, v)| v).collect();
            for (i, &v) in layers[l].iter().enumerate() {
                pos[v] = i;
            }
        }
        let c = crossings(&layers, &pos, down);
        if c < best.0 {
            best = (c, layers.clone());
        }
    }
    best.1
}

/// Counts edge crossings between each pair of adjacent layers.
fn crossings(layers: &[Vec<usize>], pos: &[usize], down: &[Vec<usize>]) -> usize {
    let mut total = 0;
    for layer in layers {
        let segs: Vec<(usize, usize)> = layer
            .iter()
            .flat_map(|&v| down[v].iter().map(move |&w| (pos[v], pos[w])))
            .collect();
        for (i, a) in segs.iter().enumerate() {
            total += segs[i + 1..]
                .iter()
                .filter(|b| (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1))
                .count();
        }
    }
    total
}
