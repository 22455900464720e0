//! A layered (Sugiyama-style) layout, top to bottom, sized for readable labels.
//!
//! 1. Ranks: a depth-first walk from the start marker (happy transitions first, so the happy
//!    path becomes the spine) finds the back edges of cycles; they are reversed, and each
//!    state's rank is its longest path from a source.
//! 2. Every rank becomes two layers: one for states and one below it for edge labels. An edge
//!    is a chain of virtual nodes through the layers between its ends; its label is the
//!    virtual node next to its source and is as wide as its text, so labels take part in
//!    ordering and spacing and can never overlap a state or another label.
//! 3. Order within layers: barycenter sweeps down and up; the order with the fewest
//!    crossings wins.
//! 4. x: repeated sweeps pull each node towards the mean of its neighbours, then solve the
//!    minimum separations exactly (pool-adjacent-violators on the layer's order).
//! 5. y: layers stacked with their tallest member's height.
//!
//! Self-loops stay out of the graph; their space is reserved on the right of their state.

/// Size of something to place, in px.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Size {
    pub w: f64,
    pub h: f64,
}

/// What the layout needs to know: state sizes, the edges and their label sizes.
#[derive(Clone, Debug)]
pub(super) struct Input {
    pub states: Vec<Size>,
    /// Extra room on the right of a state for its self-loops.
    pub loop_room: Vec<f64>,
    pub initial: usize,
    /// (source, target, label size) per edge; self-loops are skipped by the layout.
    pub edges: Vec<(usize, usize, Size)>,
    /// Edges that should be kept forward when a cycle must be broken.
    pub preferred: Vec<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    State(usize),
    Start,
    /// The label of an edge; the edge passes at the node's x and the text starts right of it.
    Label(usize),
    Dummy,
}

#[derive(Clone, Debug)]
pub(super) struct Node {
    pub kind: Kind,
    /// Extents left and right of `x`, and height.
    pub left: f64,
    pub right: f64,
    pub h: f64,
    pub layer: usize,
    pub x: f64,
    pub y: f64,
}

/// A point of a route. `vertical` points are left and entered vertically (ports and the
/// ends of a label's straight run); the others are passed through smoothly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Waypoint {
    pub x: f64,
    pub y: f64,
    pub vertical: bool,
}

/// One edge's route, from the original source to the original target.
#[derive(Clone, Debug)]
pub(super) struct Route {
    /// Index into `Input::edges`; `None` for the start marker's arrow.
    pub edge: Option<usize>,
    pub points: Vec<Waypoint>,
}

#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub nodes: Vec<Node>,
    pub routes: Vec<Route>,
    pub width: f64,
    pub height: f64,
}

const NODE_GAP: f64 = 28.0;
const DUMMY_GAP: f64 = 10.0;
const BAND_GAP: f64 = 12.0;
const MIN_LABEL_BAND: f64 = 16.0;
const SWEEPS: usize = 24;

impl Layout {
    /// Index of the layout node that draws state `s`.
    pub fn state_node(s: usize) -> usize {
        s
    }
}

/// Lays out `input`. States keep their indices as node indices; the start marker follows.
pub(super) fn layout(input: &Input) -> Layout {
    let n = input.states.len();
    let start = n;
    // (dag source, dag target, edge index, reversed)
    let mut dag: Vec<(usize, usize, Option<usize>, bool)> =
        vec![(start, input.initial, None, false)];
    let real: Vec<usize> = (0..input.edges.len())
        .filter(|&i| input.edges[i].0 != input.edges[i].1)
        .collect();
    let back = back_edges(n + 1, start, input, &real);
    for &i in &real {
        let (s, t, _) = input.edges[i];
        if back[i] {
            dag.push((t, s, Some(i), true));
        } else {
            dag.push((s, t, Some(i), false));
        }
    }
    let rank = ranks(n + 1, &dag);

    let mut nodes: Vec<Node> = input
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| Node {
            kind: Kind::State(i),
            left: s.w / 2.0,
            right: s.w / 2.0 + input.loop_room[i],
            h: s.h,
            layer: 2 * rank[i],
            x: 0.0,
            y: 0.0,
        })
        .collect();
    nodes.push(Node {
        kind: Kind::Start,
        left: 6.0,
        right: 6.0,
        h: 12.0,
        layer: 2 * rank[start],
        x: 0.0,
        y: 0.0,
    });
    // Chains of node indices, in dag direction.
    let mut chains: Vec<(Vec<usize>, Option<usize>, bool)> = Vec::new();
    for &(s, t, edge, reversed) in &dag {
        let (l0, l1) = (nodes[s].layer, nodes[t].layer);
        let label_layer = if reversed { l1 - 1 } else { l0 + 1 };
        let mut chain = vec![s];
        for layer in l0 + 1..l1 {
            let label = edge
                .map(|e| input.edges[e].2)
                .filter(|_| layer == label_layer);
            let node = match label {
                Some(size) if size.w > 0.0 => Node {
                    kind: Kind::Label(edge.unwrap_or(0)),
                    left: 4.0,
                    right: size.w + 6.0,
                    h: size.h,
                    layer,
                    x: 0.0,
                    y: 0.0,
                },
                _ => Node {
                    kind: Kind::Dummy,
                    left: 2.0,
                    right: 2.0,
                    h: 0.0,
                    layer,
                    x: 0.0,
                    y: 0.0,
                },
            };
            chain.push(nodes.len());
            nodes.push(node);
        }
        chain.push(t);
        chains.push((chain, edge, reversed));
    }

    let layer_count = nodes.iter().map(|n| n.layer).max().unwrap_or(0) + 1;
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (chain, _, _) in &chains {
        for w in chain.windows(2) {
            down[w[0]].push(w[1]);
            up[w[1]].push(w[0]);
        }
    }
    let layers = order(
        &nodes,
        layer_count,
        &dfs_order(nodes.len(), start, &down),
        &up,
        &down,
    );
    place_x(&mut nodes, &layers, &up, &down);
    let height = place_y(&mut nodes, &layers);
    let min_x = nodes
        .iter()
        .map(|n| n.x - n.left)
        .fold(f64::INFINITY, f64::min);
    let max_x = nodes
        .iter()
        .map(|n| n.x + n.right)
        .fold(f64::NEG_INFINITY, f64::max);
    for node in &mut nodes {
        node.x -= min_x;
    }
    let routes = route(&nodes, &chains, &up, &down);
    Layout {
        nodes,
        routes,
        width: max_x - min_x,
        height,
    }
}

/// Marks the edges that close a cycle in a depth-first walk from the start marker, then from
/// every state not reached yet. Preferred (happy) edges are walked first.
fn back_edges(count: usize, start: usize, input: &Input, real: &[usize]) -> Vec<bool> {
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); count];
    out[start].push((input.initial, usize::MAX));
    for pass in [true, false] {
        for &i in real {
            if input.preferred[i] == pass {
                let (s, t, _) = input.edges[i];
                out[s].push((t, i));
            }
        }
    }
    let mut back = vec![false; input.edges.len()];
    // 0 unvisited, 1 on the stack, 2 done.
    let mut mark = vec![0u8; count];
    let roots = std::iter::once(start).chain(0..count - 1);
    for root in roots {
        if mark[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        mark[root] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&(w, e)) = out[v].get(*next) {
                *next += 1;
                match mark[w] {
                    0 => {
                        mark[w] = 1;
                        stack.push((w, 0));
                    }
                    1 if e != usize::MAX => back[e] = true,
                    _ => {}
                }
            } else {
                mark[v] = 2;
                stack.pop();
            }
        }
    }
    back
}

/// Longest path from a source in the acyclic graph; sources that only feed deeper states
/// are then pulled down next to their first successor so they do not hang at the top.
fn ranks(count: usize, dag: &[(usize, usize, Option<usize>, bool)]) -> Vec<usize> {
    let mut indegree = vec![0usize; count];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); count];
    for &(s, t, _, _) in dag {
        indegree[t] += 1;
        succ[s].push(t);
    }
    let mut rank = vec![0usize; count];
    let mut queue: Vec<usize> = (0..count).filter(|&v| indegree[v] == 0).collect();
    let mut topo = Vec::with_capacity(count);
    while let Some(v) = queue.pop() {
        topo.push(v);
        for &w in &succ[v] {
            rank[w] = rank[w].max(rank[v] + 1);
            indegree[w] -= 1;
            if indegree[w] == 0 {
                queue.push(w);
            }
        }
    }
    let has_pred: Vec<bool> = (0..count).map(|v| dag.iter().any(|e| e.1 == v)).collect();
    for &v in topo.iter().rev() {
        if !has_pred[v]
            && let Some(min) = succ[v].iter().map(|&w| rank[w]).min()
        {
            rank[v] = min.saturating_sub(1).max(rank[v]);
        }
    }
    rank
}

/// Depth-first discovery order, used as the first order within each layer.
fn dfs_order(count: usize, start: usize, down: &[Vec<usize>]) -> Vec<usize> {
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
fn order(
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

fn gap(a: &Node, b: &Node) -> f64 {
    let real = |n: &Node| matches!(n.kind, Kind::State(_) | Kind::Start | Kind::Label(_));
    if real(a) && real(b) {
        NODE_GAP
    } else {
        DUMMY_GAP
    }
}

/// Sweeps that move nodes towards their neighbours' mean x while keeping the order and gaps.
fn place_x(nodes: &mut [Node], layers: &[Vec<usize>], up: &[Vec<usize>], down: &[Vec<usize>]) {
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
fn place_y(nodes: &mut [Node], layers: &[Vec<usize>]) -> f64 {
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

/// Turns chains into point lists. Several edges at one side of a state are spread over its
/// width in the order of where they go, so arrows do not pile up on one point.
fn route(
    nodes: &[Node],
    chains: &[(Vec<usize>, Option<usize>, bool)],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) -> Vec<Route> {
    let port = |v: usize, other: usize, bottom: bool| -> Waypoint {
        let node = &nodes[v];
        let y = if bottom {
            node.y + node.h / 2.0
        } else {
            node.y - node.h / 2.0
        };
        let mut peers: Vec<usize> = if bottom {
            down[v].clone()
        } else {
            up[v].clone()
        };
        peers.sort_by(|a, b| nodes[*a].x.total_cmp(&nodes[*b].x).then(a.cmp(b)));
        let k = peers.iter().position(|&p| p == other).unwrap_or(0);
        let span = (node.left * 2.0 * 0.7).min(18.0 * peers.len() as f64);
        let x = if peers.len() <= 1 {
            node.x
        } else {
            node.x - span / 2.0 + span * k as f64 / (peers.len() - 1) as f64
        };
        Waypoint {
            x,
            y,
            vertical: true,
        }
    };
    chains
        .iter()
        .map(|(chain, edge, reversed)| {
            let mut points = vec![port(chain[0], chain[1], true)];
            for &v in &chain[1..chain.len() - 1] {
                let node = &nodes[v];
                if let Kind::Label(_) = node.kind {
                    for dy in [-node.h / 2.0, node.h / 2.0] {
                        points.push(Waypoint {
                            x: node.x,
                            y: node.y + dy,
                            vertical: true,
                        });
                    }
                } else {
                    points.push(Waypoint {
                        x: node.x,
                        y: node.y,
                        vertical: false,
                    });
                }
            }
            let last = chain.len() - 1;
            points.push(port(chain[last], chain[last - 1], false));
            if *reversed {
                points.reverse();
            }
            Route {
                edge: *edge,
                points,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_separations_and_reaches_free_targets() {
        let x = fit(&[(0.0, 1.0), (0.0, 1.0), (100.0, 1.0)], &[10.0, 10.0]);
        assert_eq!(x, vec![-5.0, 5.0, 100.0]);
    }

    #[test]
    fn cycles_are_broken_and_ranks_follow_edges() {
        let size = Size { w: 40.0, h: 20.0 };
        let input = Input {
            states: vec![size; 3],
            loop_room: vec![0.0; 3],
            initial: 0,
            edges: vec![(0, 1, size), (1, 2, size), (2, 0, size)],
            preferred: vec![true, true, false],
        };
        let l = layout(&input);
        assert!(l.nodes[0].y < l.nodes[1].y && l.nodes[1].y < l.nodes[2].y);
        assert_eq!(l.routes.len(), 4);
        // The back edge ends at the top state's bottom, arriving from below.
        let back = l
            .routes
            .iter()
            .find(|r| r.edge == Some(2))
            .map(|r| r.points.clone());
        let back = back.unwrap_or_default();
        assert!(back.first().map(|p| p.y) > back.last().map(|p| p.y));
    }
}
