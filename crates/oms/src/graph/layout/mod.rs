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

mod order;
mod place;

/// Vertical room between layers; the curves between a state and its labels bend in it.
const BAND_GAP: f64 = 24.0;
const MIN_LABEL_BAND: f64 = 16.0;
const SWEEPS: usize = 24;
/// Room per edge along the side of a state, so arrows arriving together stay apart.
const PORT_SPACING: f64 = 20.0;

impl Layout {
    /// Index of the layout node that draws state `s`.
    pub(super) fn state_node(s: usize) -> usize {
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
    // A state with many edges on one side grows wide enough to keep its arrows apart.
    for (v, node) in nodes.iter_mut().enumerate().take(n) {
        let busiest = up[v].len().max(down[v].len()) as f64;
        let half = node.left.max(busiest * PORT_SPACING / 2.0);
        node.right += half - node.left;
        node.left = half;
    }
    let layers = order::order(
        &nodes,
        layer_count,
        &order::dfs_order(nodes.len(), start, &down),
        &up,
        &down,
    );
    place::place_x(&mut nodes, &layers, &up, &down);
    // The start marker sits straight above the initial state when nothing else shares its
    // layer, so its arrow is a plain vertical line.
    if layers[nodes[start].layer].len() == 1 {
        nodes[start].x = nodes[input.initial].x;
    }
    let height = place::place_y(&mut nodes, &layers);
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
        let span = (node.left * 2.0 * 0.8).min(PORT_SPACING * peers.len() as f64);
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
