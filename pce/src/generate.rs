//! Synthetic topologies and bookings, for benchmarks and tests.
//!
//! Pure and deterministic: everything is drawn from a small self-contained PRNG
//! (splitmix64) seeded by the caller, so one seed gives one network and one booking
//! history (on a given platform: the link draw uses `f64::exp`).
//!
//! The network looks like a continental research network: nodes at random points of a
//! box of longitude/latitude, joined first by a nearest-neighbour spanning tree (so it
//! is connected), then by further links between near neighbours, drawn Waxman-style
//! (the chance of a link falls off exponentially with its length). Metrics are lengths
//! in km.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::topology::{LinkSpec, NodeSpec, PortIdx, PortSpec};
use sluice_model::{Mbps, TimeWindow, Topology, VlanSet};

use crate::index::{Index, Usage};
use crate::path::{PathRequest, find_path};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub nodes: usize,
    /// Total links, the spanning tree's included: at least `nodes - 1` and at most
    /// `nodes * (nodes - 1) / 2`.
    pub links: usize,
    pub seed: u64,
}

/// splitmix64: tiny, fast, and good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`; the bias of the multiply-shift is below 2^-40 for
    /// any `n` used here).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// An item of `items`, by weight.
    fn weighted<T: Copy>(&mut self, items: &[(u32, T)]) -> T {
        let total: u32 = items.iter().map(|(w, _)| w).sum();
        let mut x = self.below(total as usize) as u32;
        for &(w, v) in items {
            if x < w {
                return v;
            }
            x -= w;
        }
        unreachable!("x < total")
    }
}

/// The box nodes are placed in: roughly the contiguous United States.
const LON0: f64 = -124.0;
const LON_SPAN: f64 = 55.0;
const LAT0: f64 = 25.0;
const LAT_SPAN: f64 = 24.0;
/// km per degree of longitude at the box's middle latitude (37°), and of latitude.
const KM_PER_LON: f64 = 111.32 * 0.798_635_510_047_292_9;
const KM_PER_LAT: f64 = 110.57;

fn km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dx = (a.0 - b.0) * KM_PER_LON;
    let dy = (a.1 - b.1) * KM_PER_LAT;
    (dx * dx + dy * dy).sqrt()
}

pub fn node_id(i: usize) -> String {
    format!("n{i:04}")
}

/// Names of the two edge ports every node has.
pub const EDGE_PORTS: [&str; 2] = ["xe-0/0/0", "xe-0/0/1"];
pub const EDGE_VLANS: &str = "100-999";
pub const EDGE_MBPS: u64 = 10_000;
pub const LINK_VLANS: &str = "2-4094";

/// A connected network of `p.nodes` nodes and exactly `p.links` links (no self-loops,
/// at most one link between two nodes), ready for `Topology::build`.
///
/// # Panics
/// If `p.links` is outside `nodes - 1 ..= nodes * (nodes - 1) / 2`.
pub fn topology(p: &Params) -> (Vec<NodeSpec>, Vec<LinkSpec>) {
    let n = p.nodes;
    assert!(n >= 1, "a topology needs a node");
    let max_links = n * (n - 1) / 2;
    assert!(
        p.links >= n - 1 && p.links <= max_links,
        "{} links cannot join {n} nodes connectedly without duplicates (need {}..={max_links})",
        p.links,
        n - 1
    );
    let mut rng = Rng::new(p.seed);
    let at: Vec<(f64, f64)> = (0..n)
        .map(|_| (LON0 + rng.unit() * LON_SPAN, LAT0 + rng.unit() * LAT_SPAN))
        .collect();
    let translates: Vec<bool> = (0..n).map(|_| rng.unit() < 0.05).collect();
    let dist = |a: usize, b: usize| km(at[a], at[b]);

    let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(p.links);
    let mut have: HashSet<(usize, usize)> = HashSet::with_capacity(p.links);
    let add = |a: usize, b: usize, pairs: &mut Vec<_>, have: &mut HashSet<_>| {
        let key = (a.min(b), a.max(b));
        if have.insert(key) {
            pairs.push(key);
        }
    };

    // Prim's algorithm on distance: each step joins the node nearest to the tree.
    let mut in_tree = vec![false; n];
    let mut best: Vec<(f64, usize)> = (0..n).map(|v| (dist(0, v), 0)).collect();
    in_tree[0] = true;
    for _ in 1..n {
        let v = (0..n)
            .filter(|&v| !in_tree[v])
            .min_by(|&a, &b| best[a].0.total_cmp(&best[b].0))
            .expect("a node is still outside the tree");
        in_tree[v] = true;
        add(best[v].1, v, &mut pairs, &mut have);
        for w in 0..n {
            if !in_tree[w] {
                let d = dist(v, w);
                if d < best[w].0 {
                    best[w] = (d, v);
                }
            }
        }
    }

    // Waxman: a random pair is linked with probability exp(-d / scale), the scale a
    // couple of typical nearest-neighbour spacings.
    let area = LON_SPAN * KM_PER_LON * LAT_SPAN * KM_PER_LAT;
    let scale = 2.0 * (area / n as f64).sqrt();
    let mut attempts = 0usize;
    let max_attempts = 1000 * (p.links - pairs.len()) + 10_000;
    while pairs.len() < p.links && attempts < max_attempts {
        attempts += 1;
        let (a, b) = (rng.below(n), rng.below(n));
        if a == b || have.contains(&(a.min(b), a.max(b))) {
            continue;
        }
        if rng.unit() < (-dist(a, b) / scale).exp() {
            add(a, b, &mut pairs, &mut have);
        }
    }
    if pairs.len() < p.links {
        // Nearly complete graphs: take the nearest pairs still unlinked.
        let mut rest: Vec<(f64, usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .filter(|k| !have.contains(k))
            .map(|(a, b)| (dist(a, b), a, b))
            .collect();
        rest.sort_by(|x, y| x.0.total_cmp(&y.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        for (_, a, b) in rest.into_iter().take(p.links - pairs.len()) {
            add(a, b, &mut pairs, &mut have);
        }
    }
    debug_assert_eq!(pairs.len(), p.links);

    let edge_vlans = VlanSet::parse(EDGE_VLANS).expect("static range");
    let link_vlans = VlanSet::parse(LINK_VLANS).expect("static range");
    let mut nodes: Vec<NodeSpec> = (0..n)
        .map(|i| NodeSpec {
            id: node_id(i),
            name: format!("Generated node {i}"),
            vlan_translation: translates[i],
            location: Some(at[i]),
            ports: EDGE_PORTS
                .iter()
                .map(|name| PortSpec {
                    name: (*name).into(),
                    vlans: edge_vlans.clone(),
                    capacity: Mbps(EDGE_MBPS),
                    peer: None,
                    peer_metric: 1,
                })
                .collect(),
        })
        .collect();
    let mut link_ports = vec![0usize; n];
    let mut port_for = |node: usize, capacity: Mbps, nodes: &mut Vec<NodeSpec>| {
        let name = format!("et-1/0/{}", link_ports[node]);
        link_ports[node] += 1;
        nodes[node].ports.push(PortSpec {
            name: name.clone(),
            vlans: link_vlans.clone(),
            capacity,
            peer: None,
            peer_metric: 1,
        });
        (node_id(node), name)
    };
    let links = pairs
        .into_iter()
        .map(|(a, b)| {
            let capacity = Mbps(rng.weighted(&[(60, 10_000), (35, 100_000), (5, 40_000)]));
            LinkSpec {
                id: format!("{}-{}", node_id(a), node_id(b)),
                a: port_for(a, capacity, &mut nodes),
                b: port_for(b, capacity, &mut nodes),
                capacity_ab: capacity,
                capacity_ba: capacity,
                metric: dist(a, b).round().clamp(1.0, u32::MAX as f64) as u32,
            }
        })
        .collect();
    (nodes, links)
}

/// `topology(p)` built.
pub fn build(p: &Params) -> Topology {
    let (nodes, links) = topology(p);
    Topology::build(
        "gen",
        &format!(
            "generated: {} nodes, {} links, seed {}",
            p.nodes, p.links, p.seed
        ),
        nodes,
        links,
    )
    .expect("generated topologies are valid")
}

/// A booking's length: mostly a few hours, some a day or a few, at most a week.
pub fn duration(rng: &mut Rng) -> TimeDelta {
    let (lo, hi) = rng.weighted(&[
        (45, (60, 4 * 60)),
        (30, (4 * 60, 12 * 60)),
        (12, (12 * 60, 24 * 60)),
        (9, (24 * 60, 3 * 24 * 60)),
        (4, (3 * 24 * 60, 7 * 24 * 60)),
    ]);
    TimeDelta::minutes(lo + rng.below((hi - lo + 1) as usize) as i64)
}

pub fn bandwidth(rng: &mut Rng) -> Mbps {
    Mbps(rng.weighted(&[(30, 100), (25, 200), (20, 500), (15, 1000), (10, 2000)]))
}

/// One random request: between edge ports (`edges`) of two different nodes, any VLAN
/// of theirs, symmetric bandwidth, `duration(rng)` long (at most `span`), starting at a
/// whole minute such that it lies inside `[span_start, span_start + span)`. `edges`
/// must hold ports of at least two nodes (`requests` and `book` make sure of it).
pub fn request(
    topo: &Topology,
    edges: &[PortIdx],
    rng: &mut Rng,
    span_start: DateTime<Utc>,
    span: TimeDelta,
) -> PathRequest {
    assert!(span > TimeDelta::zero(), "the span must be positive");
    let src = edges[rng.below(edges.len())];
    let dst = loop {
        let d = edges[rng.below(edges.len())];
        if topo.port(d).node != topo.port(src).node {
            break d;
        }
    };
    let length = duration(rng).min(span);
    let slack = (span - length).num_minutes().max(0) as usize;
    let start = span_start + TimeDelta::minutes(rng.below(slack + 1) as i64);
    let bw = bandwidth(rng);
    PathRequest {
        src,
        dst,
        src_vlans: topo.port(src).vlans.clone(),
        dst_vlans: topo.port(dst).vlans.clone(),
        bw,
        bw_reverse: bw,
        window: TimeWindow::new(start, start + length).expect("positive length"),
        include: Vec::new(),
        exclude_nodes: HashSet::new(),
        exclude_links: HashSet::new(),
        ignore: None,
    }
}

fn edge_ports(topo: &Topology) -> Option<Vec<PortIdx>> {
    let edges: Vec<PortIdx> = topo.edge_ports().collect();
    let first = topo.port(*edges.first()?).node;
    edges
        .iter()
        .any(|&p| topo.port(p).node != first)
        .then_some(edges)
}

/// `count` random requests (see `request`); empty if the topology has no two nodes
/// with edge ports.
pub fn requests(
    topo: &Topology,
    count: usize,
    span_start: DateTime<Utc>,
    span: TimeDelta,
    seed: u64,
) -> Vec<PathRequest> {
    let Some(edges) = edge_ports(topo) else {
        return Vec::new();
    };
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| request(topo, &edges, &mut rng, span_start, span))
        .collect()
}

/// Books up to `count` random committed reservations (see `request`) inside the span,
/// each routed by `find_path` as of `span_start` against what is already booked;
/// requests that do not fit are skipped. Returns how many were booked.
pub fn book(
    index: &mut Index,
    count: usize,
    span_start: DateTime<Utc>,
    span: TimeDelta,
    seed: u64,
) -> usize {
    book_each(index, count, span_start, span, seed, |_, _| {})
}

/// `book`, calling `on_booked(id, usage)` for each booking made (to keep the usages,
/// e.g. to rebuild an index without routing again). Ids are `g<seed in hex>-<n>`.
pub fn book_each(
    index: &mut Index,
    count: usize,
    span_start: DateTime<Utc>,
    span: TimeDelta,
    seed: u64,
    mut on_booked: impl FnMut(&str, &Usage),
) -> usize {
    let topo = index.topology().clone();
    let Some(edges) = edge_ports(&topo) else {
        return 0;
    };
    let mut rng = Rng::new(seed);
    let mut booked = 0;
    for i in 0..count {
        let req = request(&topo, &edges, &mut rng, span_start, span);
        let Ok(plan) = find_path(index, &req, span_start) else {
            continue;
        };
        let usage = plan.usage(req.bw, req.bw_reverse, req.window, None);
        let id = format!("g{seed:x}-{i}");
        index.insert(&id, &usage);
        on_booked(&id, &usage);
        booked += 1;
    }
    booked
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use sluice_model::{Direction, Resource};

    use super::*;
    use crate::calendar::{Interval, peak_of};
    use crate::index::Place;

    fn connected(topo: &Topology) -> bool {
        let mut seen = vec![false; topo.nodes().len()];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(u) = stack.pop() {
            for &(l, d) in topo.adjacent(u) {
                let v = topo.link_head(l, d);
                if !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        seen.iter().all(|s| *s)
    }

    #[test]
    fn topologies_are_connected_exact_and_build() {
        for (nodes, links, seed) in [
            (1, 0, 1),
            (2, 1, 1),
            (50, 49, 2),
            (50, 150, 3),
            (12, 66, 4),
            (12, 60, 5),
            (300, 1500, 6),
        ] {
            let p = Params { nodes, links, seed };
            let (ns, ls) = topology(&p);
            let mut pairs = HashSet::new();
            for l in &ls {
                assert_ne!(l.a.0, l.b.0, "self-loop {}", l.id);
                let key = if l.a.0 < l.b.0 {
                    (&l.a.0, &l.b.0)
                } else {
                    (&l.b.0, &l.a.0)
                };
                assert!(pairs.insert(key), "two links join {key:?}");
                assert!(l.metric >= 1);
                assert!([10_000, 40_000, 100_000].contains(&l.capacity_ab.0));
            }
            let topo = Topology::build("gen", "", ns, ls).expect("builds");
            assert_eq!(topo.nodes().len(), nodes);
            assert_eq!(topo.links().len(), links, "{p:?}");
            assert_eq!(topo.edge_ports().count(), 2 * nodes);
            assert_eq!(topo.ports().len(), 2 * nodes + 2 * links);
            assert!(connected(&topo), "{p:?}");
        }
    }

    #[test]
    fn one_seed_one_network_and_a_realistic_mix() {
        let p = Params {
            nodes: 400,
            links: 2000,
            seed: 42,
        };
        assert_eq!(topology(&p), topology(&p));
        assert_ne!(topology(&p), topology(&Params { seed: 43, ..p }));
        let topo = build(&p);
        let caps: HashSet<u64> = topo.links().iter().map(|l| l.capacity_ab.0).collect();
        assert!(caps.contains(&10_000) && caps.contains(&100_000));
        let translating = topo.nodes().iter().filter(|n| n.vlan_translation).count();
        assert!((5..=40).contains(&translating), "{translating} translate");
        let n = topo.node_by_id("n0042").expect("ids are n0000..");
        assert!(topo.port_by_name(n, "xe-0/0/1").is_some());
        // Near neighbours: the typical link is far shorter than the box (~4400 km).
        let mut metrics: Vec<u32> = topo.links().iter().map(|l| l.metric).collect();
        metrics.sort_unstable();
        assert!(
            metrics[metrics.len() / 2] < 800,
            "median {}",
            metrics[metrics.len() / 2]
        );
    }

    #[test]
    #[should_panic(expected = "cannot join")]
    fn refuses_impossible_link_counts() {
        topology(&Params {
            nodes: 5,
            links: 11,
            seed: 0,
        });
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_893_456_000, 0).unwrap() // 2030-01-01
    }

    /// Books `count` over `span` and checks every link and end port against capacity,
    /// both with the index's calendars and, independently, from the bookings made.
    fn book_and_check(p: &Params, count: usize, span: TimeDelta) -> usize {
        let topo = Arc::new(build(p));
        let mut index = Index::new(topo.clone());
        let mut by_resource: HashMap<Resource, Vec<Interval>> = HashMap::new();
        let booked = book_each(&mut index, count, start(), span, 9, |_, u| {
            for &(r, bw) in &u.bandwidth {
                by_resource.entry(r).or_default().push(Interval {
                    start: u.window.start,
                    end: u.window.end,
                    bw,
                });
            }
        });
        assert_eq!(index.reservations(), booked);
        let whole = TimeWindow::new(start(), start() + span).unwrap();
        let mut resources: Vec<Resource> = (0..topo.links().len())
            .flat_map(|l| [Direction::Forward, Direction::Reverse].map(|d| Resource::Link(l, d)))
            .collect();
        resources.extend(
            topo.edge_ports().flat_map(|p| {
                [Direction::Forward, Direction::Reverse].map(|d| Resource::Port(p, d))
            }),
        );
        for r in resources {
            let (place, d) = match r {
                Resource::Link(l, d) => (Place::Link(l), d),
                Resource::Port(p, d) => (Place::Port(p), d),
            };
            let d = usize::from(d == Direction::Reverse);
            let peak = index.peak(place, &whole, start(), index.ignore(None))[d];
            let reference = peak_of(by_resource.get(&r).into_iter().flatten().copied(), &whole);
            assert_eq!(peak, reference.0, "{}", topo.describe(r));
            assert!(
                peak <= topo.capacity(r).0,
                "{} over-booked",
                topo.describe(r)
            );
        }
        booked
    }

    #[test]
    fn books_most_of_a_light_load_and_never_over_books() {
        let p = Params {
            nodes: 50,
            links: 120,
            seed: 11,
        };
        let booked = book_and_check(&p, 300, TimeDelta::days(30));
        assert!(booked >= 270, "booked {booked} of 300");
    }

    #[test]
    fn never_over_books_under_contention() {
        // 400 bookings crammed into six hours: many do not fit.
        let p = Params {
            nodes: 20,
            links: 30,
            seed: 12,
        };
        let booked = book_and_check(&p, 400, TimeDelta::hours(6));
        assert!((1..400).contains(&booked), "booked {booked} of 400");
    }
}
