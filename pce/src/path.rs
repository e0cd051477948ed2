//! Path computation: the lowest-metric path whose every link has room for the request in
//! both directions over the whole window, with a free label at each end; and, when
//! nothing fits, why and how much would.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sluice_model::topology::{LinkIdx, NodeIdx, PortIdx};
use sluice_model::{
    CapacityFeedback, Criteria, Direction, Error, ErrorCode, Mbps, PathHop, Resource, TimeWindow,
    Topology, Vlan, VlanSet,
};

use crate::index::{Index, Usage};

/// A request resolved against the topology.
#[derive(Debug, Clone)]
pub struct PathRequest {
    pub src: PortIdx,
    pub dst: PortIdx,
    pub src_vlans: VlanSet,
    pub dst_vlans: VlanSet,
    pub bw: Mbps,
    pub window: TimeWindow,
    /// Nodes to pass through, in order.
    pub include: Vec<NodeIdx>,
    pub exclude_nodes: HashSet<NodeIdx>,
    pub exclude_links: HashSet<LinkIdx>,
    /// A reservation whose own bookings do not count (the one being modified).
    pub ignore: Option<Arc<str>>,
}

/// A path that fits, with the labels chosen at its ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPlan {
    pub src: PortIdx,
    pub dst: PortIdx,
    pub hops: Vec<(LinkIdx, Direction)>,
    pub metric: u64,
    pub src_vlan: Vlan,
    pub dst_vlan: Vlan,
}

fn resolve_end(
    topo: &Topology,
    req: &sluice_model::StpRequest,
    field: &str,
) -> Result<(PortIdx, VlanSet), Error> {
    let stp = &req.stp;
    if stp.domain != topo.domain {
        return Err(Error::field(
            ErrorCode::UnknownStp,
            field,
            format!(
                "{stp} is in domain {:?}; this IDC serves {:?}",
                stp.domain, topo.domain
            ),
        ));
    }
    let Some(node) = topo.node_by_id(&stp.node) else {
        return Err(Error::field(
            ErrorCode::UnknownStp,
            field,
            format!("{stp}: no node {:?} in {}", stp.node, topo.domain),
        ));
    };
    let Some(port) = topo.port_by_name(node, &stp.port) else {
        return Err(Error::field(
            ErrorCode::UnknownStp,
            field,
            format!("{stp}: node {:?} has no port {:?}", stp.node, stp.port),
        ));
    };
    let p = topo.port(port);
    if let Some(link) = p.link {
        return Err(Error::field(
            ErrorCode::UnknownStp,
            field,
            format!(
                "{stp} terminates internal link {:?}; circuits start and end on edge ports",
                topo.link(link).id
            ),
        ));
    }
    let vlans = match &req.vlans {
        None => p.vlans.clone(),
        Some(wanted) => {
            if !wanted.is_subset_of(&p.vlans) {
                return Err(Error::field(
                    ErrorCode::InvalidLabelFormat,
                    format!("{field}_vlan"),
                    format!("VLAN {wanted} is outside {stp}'s range {}", p.vlans),
                ));
            }
            wanted.clone()
        }
    };
    Ok((port, vlans))
}

/// Checks the criteria against the topology and turns names into indices.
pub fn resolve(topo: &Topology, c: &Criteria) -> Result<PathRequest, Error> {
    let (src, src_vlans) = resolve_end(topo, &c.src, "src")?;
    let (dst, dst_vlans) = resolve_end(topo, &c.dst, "dst")?;
    if src == dst {
        return Err(Error::invalid(
            "dst",
            format!("source and destination are the same port {}", c.dst.stp),
        ));
    }
    let mut include = Vec::new();
    for (i, name) in c.ero.include.iter().enumerate() {
        match topo.node_by_id(name) {
            Some(n) => include.push(n),
            None => {
                return Err(Error::field(
                    ErrorCode::InvalidEroMember,
                    format!("ero_include[{i}]"),
                    format!("{name:?} is not a node of {}", topo.domain),
                ));
            }
        }
    }
    let mut exclude_nodes = HashSet::new();
    let mut exclude_links = HashSet::new();
    for (i, name) in c.ero.exclude.iter().enumerate() {
        if let Some(n) = topo.node_by_id(name) {
            exclude_nodes.insert(n);
        } else if let Some(l) = topo.link_by_id(name) {
            exclude_links.insert(l);
        } else {
            return Err(Error::field(
                ErrorCode::InvalidEroMember,
                format!("ero_exclude[{i}]"),
                format!("{name:?} is neither a node nor a link of {}", topo.domain),
            ));
        }
    }
    for end in [src, dst] {
        let node = topo.port(end).node;
        if exclude_nodes.contains(&node) {
            return Err(Error::field(
                ErrorCode::InvalidEroMember,
                "ero_exclude",
                format!(
                    "node {:?} holds an end point and cannot be avoided",
                    topo.node(node).id
                ),
            ));
        }
    }
    Ok(PathRequest {
        src,
        dst,
        src_vlans,
        dst_vlans,
        bw: c.bw,
        window: c.window,
        include,
        exclude_nodes,
        exclude_links,
        ignore: None,
    })
}

impl PathPlan {
    /// Everything the circuit occupies: both directions of every link and of both end ports.
    pub fn usage(&self, bw: Mbps, window: TimeWindow, hold_until: Option<DateTime<Utc>>) -> Usage {
        let mut bandwidth = Vec::with_capacity(2 * self.hops.len() + 4);
        for port in [self.src, self.dst] {
            for d in [Direction::Forward, Direction::Reverse] {
                bandwidth.push((Resource::Port(port, d), bw));
            }
        }
        for &(l, _) in &self.hops {
            for d in [Direction::Forward, Direction::Reverse] {
                bandwidth.push((Resource::Link(l, d), bw));
            }
        }
        Usage {
            window,
            hold_until,
            bandwidth,
            labels: vec![(self.src, self.src_vlan), (self.dst, self.dst_vlan)],
        }
        .normalized()
    }

    pub fn path_hops(&self, topo: &Topology) -> Vec<PathHop> {
        self.hops
            .iter()
            .map(|&(l, d)| PathHop {
                link: topo.link(l).id.clone(),
                from: topo.node(topo.link_tail(l, d)).id.clone(),
                to: topo.node(topo.link_head(l, d)).id.clone(),
            })
            .collect()
    }

    /// Rebuilds a plan from a stored path.
    pub fn from_hops(
        topo: &Topology,
        src: PortIdx,
        dst: PortIdx,
        hops: &[PathHop],
        src_vlan: Vlan,
        dst_vlan: Vlan,
    ) -> Option<PathPlan> {
        let mut out = Vec::with_capacity(hops.len());
        let mut metric = 0;
        for h in hops {
            let l = topo.link_by_id(&h.link)?;
            let from = topo.node_by_id(&h.from)?;
            let d = if topo.link_tail(l, Direction::Forward) == from {
                Direction::Forward
            } else {
                Direction::Reverse
            };
            metric += topo.link(l).metric as u64;
            out.push((l, d));
        }
        Some(PathPlan {
            src,
            dst,
            hops: out,
            metric,
            src_vlan,
            dst_vlan,
        })
    }
}

/// Room on a link for a circuit that uses it in both directions.
fn link_room(index: &Index, l: LinkIdx, req: &PathRequest, now: DateTime<Utc>) -> Mbps {
    let ig = req.ignore.as_deref();
    let fwd = index.available(Resource::Link(l, Direction::Forward), &req.window, now, ig);
    let rev = index.available(Resource::Link(l, Direction::Reverse), &req.window, now, ig);
    fwd.min(rev)
}

fn port_room(index: &Index, p: PortIdx, req: &PathRequest, now: DateTime<Utc>) -> (Mbps, Resource) {
    let ig = req.ignore.as_deref();
    [Direction::Forward, Direction::Reverse]
        .into_iter()
        .map(|d| {
            let r = Resource::Port(p, d);
            (index.available(r, &req.window, now, ig), r)
        })
        .min()
        .expect("two directions")
}

/// Lowest-metric path from `from` to `to` over links for which `usable` holds, avoiding
/// `banned` nodes.
fn shortest(
    topo: &Topology,
    from: NodeIdx,
    to: NodeIdx,
    banned: &HashSet<NodeIdx>,
    usable: &mut dyn FnMut(LinkIdx) -> bool,
) -> Option<(Vec<(LinkIdx, Direction)>, u64)> {
    let n = topo.nodes().len();
    let mut dist = vec![u64::MAX; n];
    let mut prev: Vec<Option<(LinkIdx, Direction)>> = vec![None; n];
    let mut heap = BinaryHeap::new();
    dist[from] = 0;
    heap.push(Reverse((0u64, from)));
    while let Some(Reverse((d, u))) = heap.pop() {
        if d > dist[u] {
            continue;
        }
        if u == to {
            break;
        }
        for &(l, dir) in topo.adjacent(u) {
            let v = topo.link_head(l, dir);
            if banned.contains(&v) {
                continue;
            }
            let nd = d + topo.link(l).metric as u64;
            if nd < dist[v] && usable(l) {
                dist[v] = nd;
                prev[v] = Some((l, dir));
                heap.push(Reverse((nd, v)));
            }
        }
    }
    if dist[to] == u64::MAX {
        return None;
    }
    let mut hops = Vec::new();
    let mut at = to;
    while at != from {
        let (l, dir) = prev[at].expect("reached nodes have a predecessor");
        hops.push((l, dir));
        at = topo.link_tail(l, dir);
    }
    hops.reverse();
    Some((hops, dist[to]))
}

/// The path with the most room (maximin), from `from` to `to`.
fn widest(
    topo: &Topology,
    from: NodeIdx,
    to: NodeIdx,
    banned: &HashSet<NodeIdx>,
    room: &mut dyn FnMut(LinkIdx) -> Option<Mbps>,
) -> Option<(Vec<(LinkIdx, Direction)>, Mbps)> {
    let n = topo.nodes().len();
    let mut width: Vec<Option<Mbps>> = vec![None; n];
    let mut prev: Vec<Option<(LinkIdx, Direction)>> = vec![None; n];
    let mut done = vec![false; n];
    let mut heap = BinaryHeap::new();
    width[from] = Some(Mbps(u64::MAX));
    heap.push((Mbps(u64::MAX), from));
    while let Some((w, u)) = heap.pop() {
        if done[u] {
            continue;
        }
        done[u] = true;
        if u == to {
            break;
        }
        for &(l, dir) in topo.adjacent(u) {
            let v = topo.link_head(l, dir);
            if banned.contains(&v) || done[v] {
                continue;
            }
            let Some(r) = room(l) else { continue };
            let nw = w.min(r);
            if width[v].is_none_or(|cur| nw > cur) {
                width[v] = Some(nw);
                prev[v] = Some((l, dir));
                heap.push((nw, v));
            }
        }
    }
    let w = width[to]?;
    let mut hops = Vec::new();
    let mut at = to;
    while at != from {
        let (l, dir) = prev[at]?;
        hops.push((l, dir));
        at = topo.link_tail(l, dir);
    }
    hops.reverse();
    Some((hops, w))
}

/// The links of a stretch, each with the direction it is crossed in.
type Hops = Vec<(LinkIdx, Direction)>;

/// Runs `leg` over each stretch between the end points and the ERO waypoints, keeping the
/// path simple (a node used by an earlier stretch is not entered again).
fn by_waypoints<T>(
    topo: &Topology,
    req: &PathRequest,
    mut leg: impl FnMut(NodeIdx, NodeIdx, &HashSet<NodeIdx>) -> Option<(Hops, T)>,
) -> Option<Vec<(Hops, T)>> {
    let mut stops = vec![topo.port(req.src).node];
    stops.extend(req.include.iter().copied());
    stops.push(topo.port(req.dst).node);
    let mut banned = req.exclude_nodes.clone();
    let mut legs = Vec::new();
    for pair in stops.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a == b {
            continue;
        }
        // Later stops stay reachable only as the ends of their own stretch.
        let mut leg_banned = banned.clone();
        leg_banned.extend(stops.iter().copied().filter(|&s| s != a && s != b));
        let (hops, extra) = leg(a, b, &leg_banned)?;
        banned.insert(a);
        for &(l, d) in &hops {
            banned.insert(topo.link_tail(l, d));
        }
        legs.push((hops, extra));
    }
    Some(legs)
}

/// Finds the lowest-metric path that fits, or says why none does.
pub fn find_path(index: &Index, req: &PathRequest, now: DateTime<Utc>) -> Result<PathPlan, Error> {
    let topo = index.topology().clone();
    let (src_vlan, dst_vlan) = choose_labels(index, req, now)?;

    let ports_fit = [req.src, req.dst]
        .iter()
        .all(|&p| port_room(index, p, req, now).0 >= req.bw);
    let fits = ports_fit.then(|| {
        by_waypoints(&topo, req, |a, b, banned| {
            shortest(&topo, a, b, banned, &mut |l| {
                !req.exclude_links.contains(&l) && link_room(index, l, req, now) >= req.bw
            })
        })
    });
    if let Some(Some(legs)) = fits {
        let metric = legs.iter().map(|(_, m)| *m).sum();
        let hops = legs.into_iter().flat_map(|(h, _)| h).collect();
        let plan = PathPlan {
            src: req.src,
            dst: req.dst,
            hops,
            metric,
            src_vlan,
            dst_vlan,
        };
        return translation_check(&topo, plan, req);
    }

    // Nothing fits: is there a path at all, and how much would fit on the widest one?
    let widest_legs = by_waypoints(&topo, req, |a, b, banned| {
        widest(&topo, a, b, banned, &mut |l| {
            (!req.exclude_links.contains(&l)).then(|| link_room(index, l, req, now))
        })
    });
    let Some(legs) = widest_legs else {
        return Err(Error::field(
            ErrorCode::NoPathFound,
            "dst",
            format!(
                "no path joins {} and {} in {}{}",
                topo.port_local_name(req.src),
                topo.port_local_name(req.dst),
                topo.domain,
                if req.include.is_empty()
                    && req.exclude_links.is_empty()
                    && req.exclude_nodes.is_empty()
                {
                    ""
                } else {
                    " under the ERO"
                }
            ),
        ));
    };
    let hops: Vec<_> = legs.into_iter().flat_map(|(h, _)| h).collect();
    match shortfall_on(index, req.src, req.dst, &hops, req, now) {
        Some(e) => Err(e),
        // The widest path has room after all: only the label or waypoint rules failed.
        None => Err(Error::field(
            ErrorCode::NoPathFound,
            "ero",
            "no simple path through the ERO waypoints has room".to_string(),
        )),
    }
}

/// The capacity error for a path if some resource on it lacks room, naming the
/// bottlenecks; `None` if the request fits.
fn shortfall_on(
    index: &Index,
    src: PortIdx,
    dst: PortIdx,
    hops: &[(LinkIdx, Direction)],
    req: &PathRequest,
    now: DateTime<Utc>,
) -> Option<Error> {
    let mut limits: Vec<(Mbps, Resource)> = [src, dst]
        .iter()
        .map(|&p| port_room(index, p, req, now))
        .collect();
    for &(l, d) in hops {
        limits.push((link_room(index, l, req, now), Resource::Link(l, d)));
    }
    let available = limits.iter().map(|(m, _)| *m).min().unwrap_or(Mbps::ZERO);
    if available >= req.bw {
        return None;
    }
    let topo = index.topology();
    let bottlenecks = limits
        .iter()
        .filter(|(m, _)| *m == available)
        .map(|(_, r)| topo.describe(*r))
        .collect();
    Some(capacity_error(req, available, bottlenecks))
}

pub fn capacity_error(req: &PathRequest, available: Mbps, bottlenecks: Vec<String>) -> Error {
    let mut e = Error::field(
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
        format!(
            "requested {}, available {} on the best path for {}{}",
            req.bw.0,
            available.0,
            req.window,
            if bottlenecks.is_empty() {
                String::new()
            } else {
                format!("; bottleneck: {}", bottlenecks.join(", "))
            }
        ),
    );
    e.capacity = Some(CapacityFeedback {
        requested: req.bw,
        available,
        bottlenecks,
    });
    e
}

/// Free labels at both ends; the same VLAN at both unless the path may translate,
/// which is settled once the path is known.
fn choose_labels(
    index: &Index,
    req: &PathRequest,
    now: DateTime<Utc>,
) -> Result<(Vlan, Vlan), Error> {
    let topo = index.topology();
    let ig = req.ignore.as_deref();
    let free_src = index.free_vlans(req.src, &req.src_vlans, &req.window, now, ig);
    if free_src.is_empty() {
        return Err(Error::field(
            ErrorCode::StpUnavailable,
            "src_vlan",
            format!(
                "no VLAN of {} is free on {} for {}",
                req.src_vlans,
                topo.port_local_name(req.src),
                req.window
            ),
        ));
    }
    let free_dst = index.free_vlans(req.dst, &req.dst_vlans, &req.window, now, ig);
    if free_dst.is_empty() {
        return Err(Error::field(
            ErrorCode::StpUnavailable,
            "dst_vlan",
            format!(
                "no VLAN of {} is free on {} for {}",
                req.dst_vlans,
                topo.port_local_name(req.dst),
                req.window
            ),
        ));
    }
    match free_src.intersect(&free_dst).first() {
        Some(v) => Ok((v, v)),
        None => Ok((
            free_src.first().expect("non-empty"),
            free_dst.first().expect("non-empty"),
        )),
    }
}

/// Different labels at the two ends need a node on the path that can translate.
fn translation_check(
    topo: &Topology,
    plan: PathPlan,
    req: &PathRequest,
) -> Result<PathPlan, Error> {
    if plan.src_vlan == plan.dst_vlan {
        return Ok(plan);
    }
    let mut nodes = vec![topo.port(plan.src).node];
    nodes.extend(plan.hops.iter().map(|&(l, d)| topo.link_head(l, d)));
    if nodes.iter().any(|&n| topo.node(n).vlan_translation) {
        return Ok(plan);
    }
    Err(Error::field(
        ErrorCode::StpUnavailable,
        "dst_vlan",
        format!(
            "no VLAN is free at both ends ({} on {}, {} on {}) and no node on the path translates VLANs",
            req.src_vlans,
            topo.port_local_name(req.src),
            req.dst_vlans,
            topo.port_local_name(req.dst)
        ),
    ))
}

/// Checks that an existing path still fits with a new bandwidth and window (modify),
/// not counting the reservation's own bookings.
pub fn check_plan(
    index: &Index,
    plan: &PathPlan,
    req: &PathRequest,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let topo = index.topology();
    let ig = req.ignore.as_deref();
    for (port, vlan, field) in [
        (plan.src, plan.src_vlan, "src_vlan"),
        (plan.dst, plan.dst_vlan, "dst_vlan"),
    ] {
        if index
            .free_vlans(port, &VlanSet::single(vlan), &req.window, now, ig)
            .is_empty()
        {
            return Err(Error::field(
                ErrorCode::StpUnavailable,
                field,
                format!(
                    "VLAN {vlan} on {} is taken during {}",
                    topo.port_local_name(port),
                    req.window
                ),
            ));
        }
    }
    match shortfall_on(index, plan.src, plan.dst, &plan.hops, req, now) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
