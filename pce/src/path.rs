//! Path computation: the lowest-metric path whose every link has room for the request
//! over the whole window (A→Z and Z→A bandwidth each in its own direction), with a VLAN
//! free on every port along it (one VLAN end to end, or changed at nodes that
//! translate); up to k alternatives and the widest path; and, when nothing fits, why,
//! how much would, and from when.
//!
//! The search is goal-directed (A*) with an exact lower bound from the topology alone
//! (`Index::distances_to`), and it opens a link's calendar only when the search reaches
//! the link, once per query. Labels are checked on the path found; only when that path
//! has no continuous VLAN does a label-aware search (a set of VLANs carried per node,
//! with dominance) run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sluice_model::topology::{LinkIdx, NodeIdx, PortIdx};
use sluice_model::{
    CapacityFeedback, Criteria, Direction, Error, ErrorCode, Mbps, PathHop, Resource, TimeWindow,
    Topology, Vlan, VlanSet,
};

use crate::calendar::{Millis, from_millis, millis};
use crate::index::{Ignore, Index, Place, UNREACHABLE, Usage};
use crate::labels::VlanBits;

/// A point an ERO makes the path pass, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waypoint {
    Node(NodeIdx),
    /// A port of an internal link: the path reaches its node and leaves through it.
    Port(PortIdx),
}

/// A request resolved against the topology.
#[derive(Debug, Clone)]
pub struct PathRequest {
    pub src: PortIdx,
    pub dst: PortIdx,
    pub src_vlans: VlanSet,
    pub dst_vlans: VlanSet,
    /// A→Z (src to dst) bandwidth.
    pub bw: Mbps,
    /// Z→A bandwidth.
    pub bw_reverse: Mbps,
    pub window: TimeWindow,
    pub include: Vec<Waypoint>,
    pub exclude_nodes: HashSet<NodeIdx>,
    pub exclude_links: HashSet<LinkIdx>,
    /// A reservation whose own bookings do not count (the one being modified).
    pub ignore: Option<Arc<str>>,
}

/// One link of a path, the direction A→Z traffic crosses it in, and its VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub link: LinkIdx,
    pub dir: Direction,
    pub vlan: Vlan,
}

/// A path that fits, with the labels chosen along it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPlan {
    pub src: PortIdx,
    pub dst: PortIdx,
    pub hops: Vec<Hop>,
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

/// Checks the criteria against the topology and turns names into indices. ERO members
/// are node ids, link ids, or `node:port` for a port of an internal link.
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
        let field = format!("ero_include[{i}]");
        if let Some(n) = topo.node_by_id(name) {
            include.push(Waypoint::Node(n));
        } else if let Some(p) = name
            .split_once(':')
            .and_then(|(n, p)| topo.port_by_local(n, p))
        {
            if topo.port(p).link.is_none() {
                return Err(Error::field(
                    ErrorCode::InvalidEroMember,
                    field,
                    format!(
                        "{name:?} is an edge port; a path passes through internal-link ports only"
                    ),
                ));
            }
            include.push(Waypoint::Port(p));
        } else {
            return Err(Error::field(
                ErrorCode::InvalidEroMember,
                field,
                format!(
                    "{name:?} is neither a node nor a node:port of {}",
                    topo.domain
                ),
            ));
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
    for (i, w) in include.iter().enumerate() {
        let (node, link) = match *w {
            Waypoint::Node(n) => (n, None),
            Waypoint::Port(p) => (topo.port(p).node, topo.port(p).link),
        };
        if exclude_nodes.contains(&node) || link.is_some_and(|l| exclude_links.contains(&l)) {
            return Err(Error::field(
                ErrorCode::InvalidEroMember,
                format!("ero_include[{i}]"),
                format!(
                    "{:?} is both to be passed and to be avoided",
                    c.ero.include[i]
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
        bw_reverse: c.bw_reverse.unwrap_or(c.bw),
        window: c.window,
        include,
        exclude_nodes,
        exclude_links,
        ignore: None,
    })
}

impl PathPlan {
    /// Everything the circuit occupies: each link in both directions (A→Z bandwidth the
    /// way the path crosses it, Z→A the other way), both end ports, and the VLAN on every
    /// link and end port.
    pub fn usage(
        &self,
        bw: Mbps,
        bw_reverse: Mbps,
        window: TimeWindow,
        hold_until: Option<DateTime<Utc>>,
    ) -> Usage {
        let mut bandwidth = Vec::with_capacity(2 * self.hops.len() + 4);
        // A port's forward direction is into the domain.
        bandwidth.push((Resource::Port(self.src, Direction::Forward), bw));
        bandwidth.push((Resource::Port(self.src, Direction::Reverse), bw_reverse));
        bandwidth.push((Resource::Port(self.dst, Direction::Forward), bw_reverse));
        bandwidth.push((Resource::Port(self.dst, Direction::Reverse), bw));
        let mut labels = Vec::with_capacity(self.hops.len() + 2);
        labels.push((Place::Port(self.src), self.src_vlan));
        labels.push((Place::Port(self.dst), self.dst_vlan));
        for h in &self.hops {
            bandwidth.push((Resource::Link(h.link, h.dir), bw));
            bandwidth.push((Resource::Link(h.link, h.dir.reversed()), bw_reverse));
            labels.push((Place::Link(h.link), h.vlan));
        }
        bandwidth.retain(|(_, b)| *b > Mbps::ZERO);
        Usage {
            window,
            hold_until,
            bandwidth,
            labels,
        }
        .normalized()
    }

    pub fn path_hops(&self, topo: &Topology) -> Vec<PathHop> {
        self.hops
            .iter()
            .map(|h| PathHop {
                link: topo.link(h.link).id.clone(),
                from: topo.node(topo.link_tail(h.link, h.dir)).id.clone(),
                to: topo.node(topo.link_head(h.link, h.dir)).id.clone(),
                vlan: Some(h.vlan),
            })
            .collect()
    }

    /// Rebuilds a plan from a stored path. A hop stored without its VLAN (written before
    /// VLANs were kept per hop) carries the source VLAN.
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
            let dir = if topo.link_tail(l, Direction::Forward) == from {
                Direction::Forward
            } else {
                Direction::Reverse
            };
            metric += topo.link(l).metric as u64;
            out.push(Hop {
                link: l,
                dir,
                vlan: h.vlan.unwrap_or(src_vlan),
            });
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

    /// The nodes along the path, from the source's to the destination's.
    pub fn nodes(&self, topo: &Topology) -> Vec<NodeIdx> {
        let mut nodes = vec![topo.port(self.src).node];
        nodes.extend(self.hops.iter().map(|h| topo.link_head(h.link, h.dir)));
        nodes
    }
}

/// The links of a path, each with the direction A→Z traffic crosses it in.
pub type Route = Vec<(LinkIdx, Direction)>;

/// What a path search looks at: the request with its window(s) as milliseconds, and
/// what it found on the way (memoised per link direction). With several windows (the
/// occurrences of a series) a place must have room, and a VLAN must be free, in every
/// one of them.
pub(crate) struct Search<'a> {
    pub index: &'a Index,
    pub topo: &'a Topology,
    pub req: &'a PathRequest,
    pub windows: Vec<(Millis, Millis)>,
    pub now: Millis,
    pub ig: Ignore<'a>,
    /// Per link direction: 0 not looked at, 1 fits, 2 does not.
    fits: Vec<u8>,
    /// Places whose calendar stood in the way, for the search forward in time.
    pub blocked: Vec<Place>,
    /// The free requested VLANs of the end ports, once looked up.
    end_sets: [Option<VlanBits>; 2],
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Forward => 0,
        Direction::Reverse => 1,
    }
}

impl<'a> Search<'a> {
    pub fn new(index: &'a Index, req: &'a PathRequest, now: DateTime<Utc>) -> Search<'a> {
        Search::at(
            index,
            req,
            millis(req.window.start),
            millis(req.window.end),
            millis(now),
        )
    }

    pub fn at(
        index: &'a Index,
        req: &'a PathRequest,
        w0: Millis,
        w1: Millis,
        now: Millis,
    ) -> Search<'a> {
        Search::in_windows(index, req, vec![(w0, w1)], now)
    }

    pub fn in_windows(
        index: &'a Index,
        req: &'a PathRequest,
        windows: Vec<(Millis, Millis)>,
        now: Millis,
    ) -> Search<'a> {
        Search {
            index,
            topo: index.topology(),
            req,
            windows,
            now,
            ig: index.ignore(req.ignore.as_deref()),
            fits: vec![0; 2 * index.topology().links().len()],
            blocked: Vec::new(),
            end_sets: [None, None],
        }
    }

    /// The highest booked level `[forward, reverse]` of a place in any of the windows.
    fn peak(&self, place: Place) -> [u64; 2] {
        let mut peak = [0, 0];
        for &(w0, w1) in &self.windows {
            let p = self.index.peak_ms(place, w0, w1, self.now, self.ig);
            peak = [peak[0].max(p[0]), peak[1].max(p[1])];
        }
        peak
    }

    /// The VLANs of a place free for the whole of every window.
    fn free(&self, place: Place) -> VlanBits {
        let mut windows = self.windows.iter();
        let &(w0, w1) = windows.next().expect("at least one window");
        let mut free = self.index.free_labels_ms(place, w0, w1, self.now, self.ig);
        for &(w0, w1) in windows {
            free = free.and(&self.index.free_labels_ms(place, w0, w1, self.now, self.ig));
        }
        free
    }

    /// Room on link `l` crossed in `dir`: `[along, against]`.
    fn link_room(&self, l: LinkIdx, dir: Direction) -> [u64; 2] {
        let peak = self.peak(Place::Link(l));
        let link = self.topo.link(l);
        let (a, b) = (dir_index(dir), dir_index(dir.reversed()));
        [
            link.capacity(dir).0.saturating_sub(peak[a]),
            link.capacity(dir.reversed()).0.saturating_sub(peak[b]),
        ]
    }

    /// Room on an end port: `[in, out]`.
    fn port_room(&self, p: PortIdx) -> [u64; 2] {
        let peak = self.peak(Place::Port(p));
        let cap = self.topo.port(p).capacity.0;
        [cap.saturating_sub(peak[0]), cap.saturating_sub(peak[1])]
    }

    /// What the request needs of a link crossed in its A→Z direction: `[along, against]`.
    fn need(&self) -> [u64; 2] {
        [self.req.bw.0, self.req.bw_reverse.0]
    }

    /// Whether `place` has room for `need` `[forward, reverse]` even at its busiest:
    /// then its calendar need not be opened.
    fn surely_fits(&self, place: Place, cap: [u64; 2], need: [u64; 2]) -> bool {
        let top = self.index.ceiling(place);
        top[0] + need[0] <= cap[0] && top[1] + need[1] <= cap[1]
    }

    fn ports_fit(&mut self) -> bool {
        let (a, z) = (self.req.src, self.req.dst);
        let need = self.need();
        let (ca, cz) = (self.topo.port(a).capacity.0, self.topo.port(z).capacity.0);
        if self.surely_fits(Place::Port(a), [ca, ca], need)
            && self.surely_fits(Place::Port(z), [cz, cz], [need[1], need[0]])
        {
            return true;
        }
        let ra = self.port_room(a);
        let rz = self.port_room(z);
        let mut ok = true;
        if ra[0] < need[0] || ra[1] < need[1] {
            self.blocked.push(Place::Port(a));
            ok = false;
        }
        if rz[0] < need[1] || rz[1] < need[0] {
            self.blocked.push(Place::Port(z));
            ok = false;
        }
        ok
    }

    fn link_fits(&mut self, l: LinkIdx, dir: Direction) -> bool {
        let k = 2 * l + dir_index(dir);
        if self.fits[k] == 0 {
            let link = self.topo.link(l);
            let cap = [link.capacity(dir).0, link.capacity(dir.reversed()).0];
            // The calendar keeps [forward, reverse]; the need is [along, against].
            let need = self.need();
            let need_fr = match dir {
                Direction::Forward => need,
                Direction::Reverse => [need[1], need[0]],
            };
            let cap_fr = match dir {
                Direction::Forward => cap,
                Direction::Reverse => [cap[1], cap[0]],
            };
            let ok = self.surely_fits(Place::Link(l), cap_fr, need_fr) || {
                let room = self.link_room(l, dir);
                room[0] >= need[0] && room[1] >= need[1]
            };
            self.fits[k] = if ok { 1 } else { 2 };
            if !ok {
                self.blocked.push(Place::Link(l));
            }
        }
        self.fits[k] == 1
    }

    /// Lowest-metric route from `from` to `to` over links with room, avoiding `banned`
    /// nodes and links. Goal-directed with an exact lower bound; a link's calendar is
    /// opened only when the search would step over it.
    fn shortest(
        &mut self,
        from: NodeIdx,
        to: NodeIdx,
        banned: &[bool],
        banned_links: &HashSet<LinkIdx>,
    ) -> Option<(Route, u64)> {
        let h = self.index.distances_to(to);
        if h[from] == UNREACHABLE {
            return None;
        }
        // Per node, how it was reached: 0 not yet, else 1 + 2 * link + direction (the
        // start: u32::MAX). One small array instead of a closed set and a parent array.
        let mut reached_by = vec![0u32; self.topo.nodes().len()];
        // (f, tie-break preferring the deeper entry, g, node, how it is reached)
        let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
        heap.push(Reverse((
            h[from] as u64,
            u64::MAX,
            0,
            from as u32,
            u32::MAX,
        )));
        let mut metric = None;
        while let Some(Reverse((_, _, g, u, via))) = heap.pop() {
            let u = u as usize;
            if reached_by[u] != 0 {
                continue;
            }
            if via != u32::MAX {
                let (l, d) = decode(via);
                if !self.link_fits(l, d) {
                    continue;
                }
            }
            reached_by[u] = via;
            if u == to {
                metric = Some(g);
                break;
            }
            for step in self.index.edges_from(u) {
                let v = step.head as usize;
                if reached_by[v] != 0 || banned[v] || h[v] == UNREACHABLE {
                    continue;
                }
                if !banned_links.is_empty() && banned_links.contains(&decode(step.via).0) {
                    continue;
                }
                let g2 = g + step.metric as u64;
                heap.push(Reverse((
                    g2 + h[v] as u64,
                    u64::MAX - g2,
                    g2,
                    step.head,
                    step.via,
                )));
            }
        }
        let metric = metric?;
        let mut route = Vec::new();
        let mut at = to;
        while at != from {
            let (l, d) = decode(reached_by[at]);
            route.push((l, d));
            at = self.topo.link_tail(l, d);
        }
        route.reverse();
        Some((route, metric))
    }
}

/// The link and direction `Search::shortest` encoded as `1 + 2 * link + direction`.
fn decode(code: u32) -> (LinkIdx, Direction) {
    let c = code - 1;
    let d = if c & 1 == 0 {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    ((c >> 1) as usize, d)
}

/// A search queue entry: (f, tie-break preferring the deeper entry, g, node, the link and
/// direction it is reached over, encoded).
type Entry = (u64, u64, u64, u32, u32);

/// One stretch of a route between stops: (search, from, to, banned nodes, banned links,
/// whether it is the last stretch) → route and metric.
type Leg<'f, 'a> = dyn FnMut(
        &mut Search<'a>,
        NodeIdx,
        NodeIdx,
        &[bool],
        &HashSet<LinkIdx>,
        bool,
    ) -> Option<(Route, u64)>
    + 'f;

/// Why a search found nothing, before it is explained to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No VLAN of the requested set is free on an end port (`src` or `dst`).
    EndLabel(&'static str),
    /// An end port lacks bandwidth.
    Ports,
    /// No route has room (or none exists under the ERO).
    Capacity,
    /// Routes have room, but none has a VLAN free all along (the places named are
    /// where the last route tried lost its last VLAN).
    Labels(Vec<Place>),
}

/// An all-ones VLAN set: what a node that translates passes on.
fn full() -> VlanBits {
    VlanBits::from_set(&VlanSet::from_ranges([(0, 4095)]))
}

/// One state of the label-aware search: a node reached at cost `g` with `set` still free
/// all the way back (to the last node that translates).
struct Label {
    node: NodeIdx,
    g: u64,
    set: VlanBits,
    parent: u32,
    via: (LinkIdx, Direction),
}

/// The nodes of a label's route, back to the start.
fn route_nodes(labels: &[Label], mut k: u32) -> Vec<NodeIdx> {
    let mut nodes = Vec::new();
    loop {
        let lab = &labels[k as usize];
        nodes.push(lab.node);
        if lab.parent == u32::MAX {
            return nodes;
        }
        k = lab.parent;
    }
}

/// Beyond this many labels the label-aware search gives up (it is exponential only on
/// adversarial inputs).
const MAX_LABELS: usize = 200_000;

impl<'a> Search<'a> {
    fn translates(&self, n: NodeIdx) -> bool {
        self.topo.node(n).vlan_translation
    }

    /// The requested VLANs free on an end port; the port counts as in the way if
    /// something is booked on it.
    fn end_free(&mut self, port: PortIdx, wanted: &VlanSet) -> VlanBits {
        let place = Place::Port(port);
        let f = self.free(place);
        if &f != self.index.vlan_range(place) {
            self.blocked.push(place);
        }
        f.and(&VlanBits::from_set(wanted))
    }

    fn src_free(&mut self) -> VlanBits {
        if self.end_sets[0].is_none() {
            self.end_sets[0] = Some(self.end_free(self.req.src, &self.req.src_vlans));
        }
        self.end_sets[0].clone().expect("just set")
    }

    fn dst_free(&mut self) -> VlanBits {
        if self.end_sets[1].is_none() {
            self.end_sets[1] = Some(self.end_free(self.req.dst, &self.req.dst_vlans));
        }
        self.end_sets[1].clone().expect("just set")
    }

    fn link_free(&mut self, l: LinkIdx) -> VlanBits {
        let place = Place::Link(l);
        let free = self.free(place);
        if &free != self.index.vlan_range(place) {
            self.blocked.push(place);
        }
        free
    }

    /// The stops a route must make: each waypoint's node, and for a port waypoint the
    /// hop out through it.
    fn waypoint_stop(&self, w: Waypoint) -> (NodeIdx, Option<(LinkIdx, Direction)>) {
        match w {
            Waypoint::Node(n) => (n, None),
            Waypoint::Port(p) => {
                let port = self.topo.port(p);
                let l = port.link.expect("resolve admits only link ports");
                let dir = if self.topo.link(l).a == p {
                    Direction::Forward
                } else {
                    Direction::Reverse
                };
                (port.node, Some((l, dir)))
            }
        }
    }

    /// A route from `from` through `waypoints` to `to`, each stretch the lowest-metric
    /// one (`leg`), stretches not sharing nodes. Greedy: a later stretch may fail where a
    /// costlier earlier one would have left room.
    fn route_via(
        &mut self,
        from: NodeIdx,
        waypoints: &[Waypoint],
        to: NodeIdx,
        mut banned: Vec<bool>,
        banned_links: &HashSet<LinkIdx>,
        leg: &mut Leg<'_, 'a>,
    ) -> Option<(Route, u64)> {
        let stops: Vec<_> = waypoints.iter().map(|&w| self.waypoint_stop(w)).collect();
        let mut route = Vec::new();
        let mut metric = 0;
        let mut at = from;
        let targets = stops
            .iter()
            .map(|s| (s.0, s.1))
            .chain(std::iter::once((to, None)));
        let all_stop_nodes: Vec<NodeIdx> = stops.iter().map(|s| s.0).chain([to]).collect();
        for (i, (target, forced)) in targets.enumerate() {
            let last = i == stops.len();
            if at != target {
                // Later stops stay reachable only as the ends of their own stretch.
                let mut leg_banned = banned.clone();
                for &s in &all_stop_nodes {
                    if s != at && s != target {
                        leg_banned[s] = true;
                    }
                }
                let (hops, m) = leg(self, at, target, &leg_banned, banned_links, last)?;
                banned[at] = true;
                for &(l, d) in &hops {
                    banned[self.topo.link_tail(l, d)] = true;
                }
                route.extend(hops);
                metric += m;
                at = target;
            }
            if let Some((l, d)) = forced {
                let next = self.topo.link_head(l, d);
                if banned[next] || banned_links.contains(&l) || !self.link_fits(l, d) {
                    return None;
                }
                banned[at] = true;
                route.push((l, d));
                metric += self.topo.link(l).metric as u64;
                at = next;
            }
        }
        Some((route, metric))
    }

    fn banned_from_request(&self) -> Vec<bool> {
        let mut banned = vec![false; self.topo.nodes().len()];
        for &n in &self.req.exclude_nodes {
            banned[n] = true;
        }
        banned
    }

    /// The lowest-metric route with room (labels not yet considered).
    fn capacity_route(&mut self) -> Option<(Route, u64)> {
        self.route_request(&mut |s, a, b, banned, links, _| s.shortest(a, b, banned, links))
    }

    /// `route_via` from the request's source to its destination through its waypoints,
    /// avoiding what it excludes, each stretch found by `leg`.
    fn route_request(&mut self, leg: &mut Leg<'_, 'a>) -> Option<(Route, u64)> {
        let from = self.topo.port(self.req.src).node;
        let to = self.topo.port(self.req.dst).node;
        let banned = self.banned_from_request();
        let excluded = self.req.exclude_links.clone();
        let include = self.req.include.clone();
        self.route_via(from, &include, to, banned, &excluded, leg)
    }

    /// Chooses the VLANs along `route`: one per run of places between nodes that
    /// translate, the lowest free in all of them. On failure, the run that has none.
    fn assign_labels(&mut self, route: &Route) -> Result<(Vlan, Vec<Vlan>, Vlan), Vec<Place>> {
        let (src, dst) = (self.src_free(), self.dst_free());
        let mut places: Vec<Place> = Vec::with_capacity(route.len() + 2);
        places.push(Place::Port(self.req.src));
        places.extend(route.iter().map(|&(l, _)| Place::Link(l)));
        places.push(Place::Port(self.req.dst));
        let last = places.len() - 1;
        // nodes[i] sits between places[i] and places[i + 1].
        let mut nodes = vec![self.topo.port(self.req.src).node];
        nodes.extend(route.iter().map(|&(l, d)| self.topo.link_head(l, d)));
        let mut chosen = Vec::with_capacity(places.len());
        let mut run_start = 0;
        for i in 0..places.len() {
            if i != last && !self.translates(nodes[i]) {
                continue;
            }
            // The run's VLANs: what its end ports have free, within every link's range,
            // less whatever is taken on any of its links. One set gathers what is taken
            // (a link's range is usually the same as the one before).
            let mut set = VlanBits::FULL;
            let mut taken = VlanBits::EMPTY;
            let mut range_seen = None;
            for (k, &place) in places.iter().enumerate().take(i + 1).skip(run_start) {
                match place {
                    _ if k == 0 => set.intersect(&src),
                    _ if k == last => set.intersect(&dst),
                    place => {
                        let range = self.index.vlan_range_id(place);
                        if range_seen != Some(range) {
                            set.intersect(self.index.vlan_set(range));
                            range_seen = Some(range);
                        }
                        for &(w0, w1) in &self.windows {
                            self.index
                                .taken_into(place, w0, w1, self.now, self.ig, &mut taken);
                        }
                    }
                }
            }
            set.remove_all(&taken);
            let Some(v) = set.first() else {
                // Every link with something taken stood in the way (for a later start).
                for &(l, _) in route {
                    self.link_free(l);
                }
                return Err(places[run_start..=i].to_vec());
            };
            chosen.extend(std::iter::repeat_n(v, i + 1 - run_start));
            run_start = i + 1;
        }
        let src = chosen[0];
        let dst = chosen[chosen.len() - 1];
        Ok((src, chosen[1..chosen.len() - 1].to_vec(), dst))
    }

    /// Lowest-metric simple route from `from` to `to` that keeps a VLAN free all along,
    /// starting with `start` free; returns the set still free on arrival.
    ///
    /// First among walks (a node may be revisited), where dropping a state for another
    /// that reached the same node no costlier with every VLAN it has is exact and prunes
    /// hard. The best walk is nearly always a simple route; only if it is not (a detour
    /// through a translating node that comes back) is the search redone over simple
    /// routes, where a state may only be dropped for one whose route visited no other
    /// nodes, which prunes far less.
    fn label_route(
        &mut self,
        from: NodeIdx,
        to: NodeIdx,
        start: VlanBits,
        end: Option<&VlanBits>,
        banned: &[bool],
        banned_links: &HashSet<LinkIdx>,
    ) -> Option<(Route, u64, VlanBits)> {
        let walk = self.label_search(from, to, start.clone(), end, banned, banned_links, false)?;
        let mut seen = HashSet::from([from]);
        if walk
            .0
            .iter()
            .all(|&(l, d)| seen.insert(self.topo.link_head(l, d)))
        {
            return Some(walk);
        }
        self.label_search(from, to, start, end, banned, banned_links, true)
    }

    /// The label-setting search behind `label_route`; `simple` keeps routes simple.
    #[allow(clippy::too_many_arguments)]
    fn label_search(
        &mut self,
        from: NodeIdx,
        to: NodeIdx,
        start: VlanBits,
        end: Option<&VlanBits>,
        banned: &[bool],
        banned_links: &HashSet<LinkIdx>,
        simple: bool,
    ) -> Option<(Route, u64, VlanBits)> {
        let h = self.index.distances_to(to);
        if h[from] == UNREACHABLE || start.is_empty() {
            return None;
        }
        let full = full();
        let normalize = |s: &Self, n: NodeIdx, set: VlanBits| {
            if s.translates(n) { full.clone() } else { set }
        };
        let mut labels: Vec<Label> = vec![Label {
            node: from,
            g: 0,
            set: normalize(self, from, start),
            parent: u32::MAX,
            via: (usize::MAX, Direction::Forward),
        }];
        let mut at_node: Vec<Vec<u32>> = vec![Vec::new(); self.topo.nodes().len()];
        at_node[from].push(0);
        let mut dead = vec![false];
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((h[from] as u64, u64::MAX, 0u32)));
        let mut link_sets: std::collections::HashMap<LinkIdx, VlanBits> = Default::default();
        while let Some(Reverse((_, _, li))) = heap.pop() {
            if dead[li as usize] {
                continue;
            }
            let (u, g) = (labels[li as usize].node, labels[li as usize].g);
            if u == to {
                let set = &labels[li as usize].set;
                let arrived = match end {
                    Some(e) if !self.translates(u) => set.and(e),
                    Some(e) => e.clone(),
                    None => set.clone(),
                };
                if !arrived.is_empty() {
                    let mut route = Vec::new();
                    let mut k = li;
                    while labels[k as usize].parent != u32::MAX {
                        route.push(labels[k as usize].via);
                        k = labels[k as usize].parent;
                    }
                    route.reverse();
                    return Some((route, g, arrived));
                }
                continue;
            }
            for &(l, d) in self.topo.adjacent(u) {
                let v = self.topo.link_head(l, d);
                if banned[v] || h[v] == UNREACHABLE || banned_links.contains(&l) {
                    continue;
                }
                // The nodes of the route so far, when routes must stay simple.
                let visited: Vec<NodeIdx> = if simple {
                    let mut v = route_nodes(&labels, li);
                    v.sort_unstable();
                    v
                } else {
                    Vec::new()
                };
                if (simple && visited.binary_search(&v).is_ok()) || !self.link_fits(l, d) {
                    continue;
                }
                let lf = match link_sets.get(&l) {
                    Some(s) => s.clone(),
                    None => {
                        let s = self.link_free(l);
                        link_sets.insert(l, s.clone());
                        s
                    }
                };
                let set = labels[li as usize].set.and(&lf);
                if set.is_empty() {
                    continue;
                }
                let set = normalize(self, v, set);
                let g2 = g + self.topo.link(l).metric as u64;
                // Over simple routes, a state can only stand in for one whose route
                // visited at least the nodes its own did.
                let mut new_visited = visited;
                if simple {
                    let at = new_visited.binary_search(&v).unwrap_err();
                    new_visited.insert(at, v);
                }
                let covers =
                    |a: &[NodeIdx], b: &[NodeIdx]| a.iter().all(|x| b.binary_search(x).is_ok());
                let sorted_route = |k: u32| {
                    let mut r = route_nodes(&labels, k);
                    r.sort_unstable();
                    r
                };
                if at_node[v].iter().any(|&o| {
                    let ol = &labels[o as usize];
                    ol.g <= g2
                        && set.is_subset_of(&ol.set)
                        && (!simple || covers(&sorted_route(o), &new_visited))
                }) {
                    continue;
                }
                // The new state makes worse ones at v redundant.
                for &o in &at_node[v] {
                    let ol = &labels[o as usize];
                    if g2 <= ol.g
                        && ol.set.is_subset_of(&set)
                        && (!simple || covers(&new_visited, &sorted_route(o)))
                    {
                        dead[o as usize] = true;
                    }
                }
                at_node[v].retain(|&o| !dead[o as usize]);
                if labels.len() >= MAX_LABELS {
                    return None;
                }
                let id = labels.len() as u32;
                labels.push(Label {
                    node: v,
                    g: g2,
                    set,
                    parent: li,
                    via: (l, d),
                });
                dead.push(false);
                at_node[v].push(id);
                heap.push(Reverse((g2 + h[v] as u64, u64::MAX - g2, id)));
            }
        }
        None
    }

    /// The lowest-metric route with room and a VLAN all along, through the waypoints
    /// (stretch by stretch, carrying the free set from one to the next).
    fn labelled_route(&mut self) -> Option<(Route, u64)> {
        let mut carried = self.src_free();
        let dst_free = self.dst_free();
        self.route_request(&mut |s, a, b, banned, links, last| {
            let end = last.then_some(&dst_free);
            let (route, m, set) = s.label_route(a, b, carried.clone(), end, banned, links)?;
            carried = set;
            Some((route, m))
        })
    }

    fn plan(&self, route: Route, metric: u64, labels: (Vlan, Vec<Vlan>, Vlan)) -> PathPlan {
        let (src_vlan, vlans, dst_vlan) = labels;
        PathPlan {
            src: self.req.src,
            dst: self.req.dst,
            hops: route
                .into_iter()
                .zip(vlans)
                .map(|((link, dir), vlan)| Hop { link, dir, vlan })
                .collect(),
            metric,
            src_vlan,
            dst_vlan,
        }
    }

    /// The lowest-metric plan that fits, or why there is none.
    pub(crate) fn find(&mut self) -> Result<PathPlan, Failure> {
        if self.src_free().is_empty() {
            self.blocked.push(Place::Port(self.req.src));
            return Err(Failure::EndLabel("src"));
        }
        if self.dst_free().is_empty() {
            self.blocked.push(Place::Port(self.req.dst));
            return Err(Failure::EndLabel("dst"));
        }
        if !self.ports_fit() {
            return Err(Failure::Ports);
        }
        let Some((route, metric)) = self.capacity_route() else {
            return Err(Failure::Capacity);
        };
        let gap = match self.assign_labels(&route) {
            Ok(labels) => return Ok(self.plan(route, metric, labels)),
            Err(gap) => gap,
        };
        // The shortest route with room has no VLAN all along: search with labels.
        if let Some((route, metric)) = self.labelled_route()
            && let Ok(labels) = self.assign_labels(&route)
        {
            return Ok(self.plan(route, metric, labels));
        }
        // The end ports have some VLAN free, so they were not counted as in the way,
        // but a VLAN released there can complete a run: a later start must look at them.
        self.blocked.push(Place::Port(self.req.src));
        self.blocked.push(Place::Port(self.req.dst));
        Err(Failure::Labels(gap))
    }

    /// Scales Z→A room into A→Z terms, so one figure says how much fits on a resource
    /// with the request's ratio of the two directions.
    fn width(&self, room: [u64; 2]) -> u64 {
        let (bw, rev) = (self.req.bw.0, self.req.bw_reverse.0);
        if rev == 0 || bw == 0 {
            return room[0];
        }
        let scaled = (room[1] as u128 * bw as u128 / rev as u128).min(u64::MAX as u128) as u64;
        room[0].min(scaled)
    }

    fn port_widths(&self) -> [(u64, Resource); 2] {
        let (a, z) = (self.req.src, self.req.dst);
        let ra = self.port_room(a);
        let rz = self.port_room(z);
        let res = |p, d| Resource::Port(p, d);
        [
            (
                self.width(ra),
                if ra[0] <= self.width([u64::MAX, ra[1]]) {
                    res(a, Direction::Forward)
                } else {
                    res(a, Direction::Reverse)
                },
            ),
            (
                self.width([rz[1], rz[0]]),
                if rz[1] <= self.width([u64::MAX, rz[0]]) {
                    res(z, Direction::Reverse)
                } else {
                    res(z, Direction::Forward)
                },
            ),
        ]
    }

    fn hop_width(&self, l: LinkIdx, d: Direction) -> (u64, Resource) {
        let room = self.link_room(l, d);
        let w = self.width(room);
        let r = if room[0] <= self.width([u64::MAX, room[1]]) {
            Resource::Link(l, d)
        } else {
            Resource::Link(l, d.reversed())
        };
        (w, r)
    }

    /// The route with the most room (maximin over its links), through the waypoints.
    fn widest_route(&mut self) -> Option<(Route, u64)> {
        let mut width = u64::MAX;
        let routed = self.route_request(&mut |s, a, b, banned, links, _| {
            let (route, w) = s.widest(a, b, banned, links)?;
            width = width.min(w);
            let m = route
                .iter()
                .map(|&(l, _)| s.topo.link(l).metric as u64)
                .sum();
            Some((route, m))
        });
        // A forced hop (port waypoint) was checked for the full request only; count it.
        routed.map(|(route, _)| {
            let w = route
                .iter()
                .map(|&(l, d)| self.hop_width(l, d).0)
                .min()
                .unwrap_or(u64::MAX)
                .min(width);
            (route, w)
        })
    }

    fn widest(
        &mut self,
        from: NodeIdx,
        to: NodeIdx,
        banned: &[bool],
        banned_links: &HashSet<LinkIdx>,
    ) -> Option<(Route, u64)> {
        let n = self.topo.nodes().len();
        let mut width: Vec<Option<u64>> = vec![None; n];
        let mut prev: Vec<Option<(LinkIdx, Direction)>> = vec![None; n];
        let mut done = vec![false; n];
        let mut heap = BinaryHeap::new();
        width[from] = Some(u64::MAX);
        heap.push((u64::MAX, Reverse(0u64), from));
        while let Some((w, Reverse(g), u)) = heap.pop() {
            if done[u] {
                continue;
            }
            done[u] = true;
            if u == to {
                break;
            }
            for &(l, dir) in self.topo.adjacent(u) {
                let v = self.topo.link_head(l, dir);
                if banned[v] || done[v] || banned_links.contains(&l) {
                    continue;
                }
                let nw = w.min(self.hop_width(l, dir).0);
                if width[v].is_none_or(|cur| nw > cur) {
                    width[v] = Some(nw);
                    prev[v] = Some((l, dir));
                    heap.push((nw, Reverse(g + self.topo.link(l).metric as u64), v));
                }
            }
        }
        let w = width[to]?;
        let mut route = Vec::new();
        let mut at = to;
        while at != from {
            let (l, d) = prev[at]?;
            route.push((l, d));
            at = self.topo.link_tail(l, d);
        }
        route.reverse();
        Some((route, w))
    }

    /// How much of the request fits on `route` (A→Z Mb/s at the request's ratio), and
    /// the resources that set that figure.
    fn route_width(&self, route: &Route) -> (u64, Vec<Resource>) {
        let mut limits: Vec<(u64, Resource)> = self.port_widths().to_vec();
        for &(l, d) in route {
            limits.push(self.hop_width(l, d));
        }
        let w = limits.iter().map(|x| x.0).min().unwrap_or(0);
        let mut at: Vec<Resource> = limits.iter().filter(|x| x.0 == w).map(|x| x.1).collect();
        at.dedup();
        (w, at)
    }
}

/// A path the engine offers, with how much room it has for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub plan: PathPlan,
    /// The most A→Z bandwidth (at the request's A→Z:Z→A ratio) that fits on this path
    /// for the window; the headroom is this minus the request.
    pub available: Mbps,
    /// The resources that set `available`.
    pub bottlenecks: Vec<Resource>,
}

/// What a dry run returns: the path a reservation would get, alternatives after it in
/// order of metric, and the widest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub best: Candidate,
    pub alternatives: Vec<Candidate>,
    pub widest: Option<Candidate>,
}

/// How far ahead the search for an earliest start looks, and how many starts it tries.
pub const EARLIEST_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(366);
pub const EARLIEST_TRIES: usize = 512;

/// Finds the lowest-metric path that fits, or says why none does, how much would fit,
/// and the earliest start from which the whole request fits.
pub fn find_path(index: &Index, req: &PathRequest, now: DateTime<Utc>) -> Result<PathPlan, Error> {
    let mut s = Search::new(index, req, now);
    match s.find() {
        Ok(plan) => Ok(plan),
        Err(f) => {
            let blocked = std::mem::take(&mut s.blocked);
            Err(explain(&mut s, f, blocked))
        }
    }
}

/// The lowest-metric path that fits in every one of `windows` at once (the occurrences of
/// a series, booked on one path), with the same VLANs throughout; the request's own
/// window is ignored. When none does, the error says why for the set as a whole (the
/// most that fits in all windows on one path, and its bottlenecks); it names no earliest
/// start, since shifting a series is the caller's decision.
pub fn find_path_in_all(
    index: &Index,
    req: &PathRequest,
    windows: &[TimeWindow],
    now: DateTime<Utc>,
) -> Result<PathPlan, Error> {
    if windows.is_empty() {
        return Err(Error::missing("windows"));
    }
    let ms: Vec<(Millis, Millis)> = windows
        .iter()
        .map(|w| (millis(w.start), millis(w.end)))
        .collect();
    let mut s = Search::in_windows(index, req, ms, millis(now));
    s.find().map_err(|f| explain(&mut s, f, Vec::new()))
}

/// The path a request would get, up to `k` alternatives (Yen's algorithm over the
/// links with room, each checked for a VLAN), and with `widest` the path with the most
/// room.
pub fn compute(
    index: &Index,
    req: &PathRequest,
    now: DateTime<Utc>,
    k: usize,
    widest: bool,
) -> Result<Computed, Error> {
    let best = find_path(index, req, now)?;
    let mut s = Search::new(index, req, now);
    let candidate = |s: &mut Search, plan: PathPlan| {
        let route: Route = plan.hops.iter().map(|h| (h.link, h.dir)).collect();
        let (w, at) = s.route_width(&route);
        Candidate {
            plan,
            available: Mbps(w),
            bottlenecks: at,
        }
    };
    let alternatives = yen(&mut s, &best, k)
        .into_iter()
        .map(|p| candidate(&mut s, p))
        .collect();
    let widest = if widest {
        s.widest_route().and_then(|(route, _)| {
            let labels = s.assign_labels(&route).ok()?;
            let metric = route
                .iter()
                .map(|&(l, _)| s.topo.link(l).metric as u64)
                .sum();
            let plan = s.plan(route, metric, labels);
            Some(candidate(&mut s, plan))
        })
    } else {
        None
    };
    let best = candidate(&mut s, best);
    Ok(Computed {
        best,
        alternatives,
        widest,
    })
}

/// Up to `k` further plans after `best`, by metric: Yen's algorithm, spur routes found
/// by the same goal-directed search; a candidate without a VLAN all along is skipped.
fn yen(s: &mut Search, best: &PathPlan, k: usize) -> Vec<PathPlan> {
    const MAX_POPS: usize = 64;
    let to = s.topo.port(s.req.dst).node;
    let first: Route = best.hops.iter().map(|h| (h.link, h.dir)).collect();
    let mut found: Vec<(Route, u64)> = vec![(first, best.metric)];
    let mut plans = Vec::new();
    let mut pool: BinaryHeap<Reverse<(u64, Route)>> = BinaryHeap::new();
    let mut seen: HashSet<Route> = HashSet::new();
    seen.insert(found[0].0.clone());
    let mut pops = 0;
    while plans.len() < k && pops < MAX_POPS {
        let (last, _) = found.last().expect("starts with best").clone();
        let from_node = s.topo.port(s.req.src).node;
        let mut nodes = vec![from_node];
        nodes.extend(last.iter().map(|&(l, d)| s.topo.link_head(l, d)));
        for i in 0..last.len() {
            let root = &last[..i];
            let spur = nodes[i];
            let mut banned_links = s.req.exclude_links.clone();
            for (r, _) in &found {
                if r.len() > i && &r[..i] == root {
                    banned_links.insert(r[i].0);
                }
            }
            let mut banned = s.banned_from_request();
            for &n in &nodes[..i] {
                banned[n] = true;
            }
            let remaining = remaining_waypoints(s, root);
            let include = s.req.include[s.req.include.len() - remaining..].to_vec();
            let Some((spur_route, _)) = s.route_via(
                spur,
                &include,
                to,
                banned,
                &banned_links,
                &mut |s, a, b, banned, links, _| s.shortest(a, b, banned, links),
            ) else {
                continue;
            };
            let mut route = root.to_vec();
            route.extend(spur_route);
            if seen.insert(route.clone()) {
                let metric = route
                    .iter()
                    .map(|&(l, _)| s.topo.link(l).metric as u64)
                    .sum();
                pool.push(Reverse((metric, route)));
            }
        }
        let Some(Reverse((metric, route))) = pool.pop() else {
            break;
        };
        pops += 1;
        found.push((route.clone(), metric));
        if let Ok(labels) = s.assign_labels(&route) {
            plans.push(s.plan(route, metric, labels));
        }
    }
    plans
}

/// How many of the request's waypoints a route prefix has not passed yet.
fn remaining_waypoints(s: &Search, root: &[(LinkIdx, Direction)]) -> usize {
    let mut nodes = vec![s.topo.port(s.req.src).node];
    nodes.extend(root.iter().map(|&(l, d)| s.topo.link_head(l, d)));
    let mut next = 0;
    let wps = &s.req.include;
    // Node i of the prefix, left by hop i (if the prefix has one).
    for (i, &n) in nodes.iter().enumerate() {
        if next == wps.len() {
            break;
        }
        match wps[next] {
            Waypoint::Node(w) if w == n && i + 1 < nodes.len() => next += 1,
            Waypoint::Port(p) => {
                if let Some(&(l, d)) = root.get(i)
                    && s.topo.port(p).node == n
                    && s.topo.port(p).link == Some(l)
                    && s.topo.link_tail(l, d) == n
                {
                    next += 1;
                }
            }
            _ => {}
        }
    }
    wps.len() - next
}

/// Turns a failed search into the caller's error: which constraint failed and where,
/// the most that would fit for the window, and the earliest start that fits whole.
fn explain(s: &mut Search, failure: Failure, blocked: Vec<Place>) -> Error {
    let topo = s.topo;
    let req = s.req;
    let mut e = match &failure {
        Failure::EndLabel(end) => {
            let (port, wanted) = if *end == "src" {
                (req.src, &req.src_vlans)
            } else {
                (req.dst, &req.dst_vlans)
            };
            Error::field(
                ErrorCode::StpUnavailable,
                format!("{end}_vlan"),
                format!(
                    "no VLAN of {wanted} is free on {} for {}",
                    topo.port_local_name(port),
                    req.window
                ),
            )
        }
        Failure::Labels(gap) => {
            let names: Vec<String> = gap.iter().map(|p| describe_place(topo, *p)).collect();
            Error::field(
                ErrorCode::StpUnavailable,
                "dst_vlan",
                format!(
                    "paths have room, but none keeps a VLAN free all along for {} (VLANs change only at nodes that translate); no VLAN is free on all of: {}",
                    req.window,
                    names.join(", ")
                ),
            )
        }
        Failure::Ports | Failure::Capacity => match s.widest_route() {
            None => Error::field(
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
            ),
            Some((route, _)) => {
                let (w, at) = s.route_width(&route);
                if w >= req.bw.0 {
                    // The widest route has room: only the waypoint rules failed.
                    Error::field(
                        ErrorCode::NoPathFound,
                        "ero",
                        "no simple path through the ERO waypoints has room".to_string(),
                    )
                } else {
                    capacity_error(
                        req,
                        Mbps(w),
                        at.into_iter().map(|r| topo.describe(r)).collect(),
                    )
                }
            }
        },
    };
    if let Some(t) = earliest_start(s.index, req, s.now, blocked) {
        let at = from_millis(t);
        e.message.push_str(&format!(
            "; the whole request fits from {}",
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ));
        e.earliest_start = Some(at);
    }
    e
}

fn describe_place(topo: &Topology, p: Place) -> String {
    match p {
        Place::Port(p) => format!("port {}", topo.port_local_name(p)),
        Place::Link(l) => format!("link {}", topo.link(l).id),
    }
}

/// The earliest start at or after the request's (same duration) at which the whole
/// request fits, searching forward from one release to the next: a window can only
/// gain room when something booked on a place that stood in its way ends, so only
/// those instants are tried.
fn earliest_start(
    index: &Index,
    req: &PathRequest,
    now: Millis,
    mut blocked: Vec<Place>,
) -> Option<Millis> {
    let (w0, w1) = (millis(req.window.start), millis(req.window.end));
    let horizon = w0.saturating_add(EARLIEST_HORIZON.num_milliseconds());
    let mut t = w0;
    for _ in 0..EARLIEST_TRIES {
        blocked.sort_unstable();
        blocked.dedup();
        let next = blocked
            .iter()
            .filter_map(|&p| index.next_release_after(p, t, now))
            .min()?;
        if next > horizon {
            return None;
        }
        t = next;
        let mut s = Search::at(index, req, t, t + (w1 - w0), now);
        if s.find().is_ok() {
            return Some(t);
        }
        blocked = std::mem::take(&mut s.blocked);
    }
    None
}

pub fn capacity_error(req: &PathRequest, available: Mbps, bottlenecks: Vec<String>) -> Error {
    let asym = req.bw != req.bw_reverse;
    let mut e = Error::field(
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
        format!(
            "requested {}{}, available {} on the best path for {}{}",
            req.bw.0,
            if asym {
                format!(" (Z→A {})", req.bw_reverse.0)
            } else {
                String::new()
            },
            available.0,
            req.window,
            if bottlenecks.is_empty() {
                String::new()
            } else {
                format!("; bottleneck: {}", bottlenecks.join(", "))
            }
        ),
    );
    e.capacity = Some(Box::new(CapacityFeedback {
        requested: req.bw,
        available,
        bottlenecks,
    }));
    e
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
    let mut s = Search::new(index, req, now);
    let mut labels = vec![
        (Place::Port(plan.src), plan.src_vlan, "src_vlan"),
        (Place::Port(plan.dst), plan.dst_vlan, "dst_vlan"),
    ];
    labels.extend(
        plan.hops
            .iter()
            .map(|h| (Place::Link(h.link), h.vlan, "path")),
    );
    for (place, vlan, field) in labels {
        if !s.free(place).contains(vlan.id()) {
            return Err(Error::field(
                ErrorCode::StpUnavailable,
                field,
                format!(
                    "VLAN {vlan} on {} is taken during {}",
                    describe_place(topo, place),
                    req.window
                ),
            ));
        }
    }
    let route: Route = plan.hops.iter().map(|h| (h.link, h.dir)).collect();
    if s.ports_fit() && route.iter().all(|&(l, d)| s.link_fits(l, d)) {
        return Ok(());
    }
    let (w, at) = s.route_width(&route);
    Err(capacity_error(
        req,
        Mbps(w),
        at.into_iter().map(|r| topo.describe(r)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::topology::fixture;
    use sluice_model::{Ero, Stp, StpRequest};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn w(a: i64, b: i64) -> TimeWindow {
        TimeWindow::new(t(a), t(b)).unwrap()
    }

    fn request(topo: &Topology, bw: u64, window: TimeWindow) -> PathRequest {
        let end = |n: &str| StpRequest {
            stp: Stp::parse(&format!("d:{n}:p0")).unwrap(),
            vlans: None,
        };
        let c = Criteria {
            src: end("a"),
            dst: end("d"),
            bw: Mbps(bw),
            bw_reverse: None,
            window,
            ero: Ero::default(),
            description: String::new(),
            auto_provision: false,
        };
        resolve(topo, &c).unwrap()
    }

    #[test]
    fn one_path_for_every_window_of_a_series() {
        // a-b-d is short, a-c-d long.
        let topo = Arc::new(fixture::from_links(
            "d",
            &[
                ("a", "b", 100, 1),
                ("b", "d", 100, 1),
                ("a", "c", 100, 5),
                ("c", "d", 100, 5),
            ],
            1000,
        ));
        let mut index = Index::new(topo.clone());
        // The short path is full during the third occurrence only.
        let blocker = request(&topo, 100, w(200, 250));
        let plan = find_path(&index, &blocker, t(0)).unwrap();
        index.insert("x", &plan.usage(Mbps(100), Mbps(100), blocker.window, None));
        let windows = [w(0, 50), w(100, 150), w(200, 250), w(300, 350)];
        let req = request(&topo, 10, windows[0]);
        for win in windows {
            let one = find_path(&index, &request(&topo, 10, win), t(0)).unwrap();
            let short = win != windows[2];
            assert_eq!(one.metric, if short { 2 } else { 10 }, "{win}");
        }
        let all = find_path_in_all(&index, &req, &windows, t(0)).unwrap();
        assert_eq!(all.metric, 10, "the only path with room in all four");
        for win in windows {
            let r = PathRequest {
                window: win,
                ..req.clone()
            };
            check_plan(&index, &all, &r, t(0)).unwrap();
        }
        // The VLAN is the same in every window: one taken in one occurrence is avoided.
        let vlan = all.src_vlan;
        let mut index2 = Index::new(topo.clone());
        let taken = PathPlan {
            src_vlan: vlan,
            dst_vlan: vlan,
            hops: vec![],
            ..all.clone()
        };
        index2.insert("y", &taken.usage(Mbps(1), Mbps(1), windows[3], None));
        let again = find_path_in_all(&index2, &req, &windows, t(0)).unwrap();
        assert_ne!(again.src_vlan, vlan);
        // 101 fits nowhere: the most that fits in all windows on one path is a-c-d's 100
        // (a-b-d has none left in the third).
        let big = request(&topo, 101, windows[0]);
        let e = find_path_in_all(&index, &big, &windows, t(0)).unwrap_err();
        assert_eq!(e.code, ErrorCode::CapacityUnavailable);
        assert_eq!(e.capacity.unwrap().available, Mbps(100));
        assert!(find_path_in_all(&index, &req, &windows[3..], t(0)).is_ok());
        assert!(find_path_in_all(&index, &req, &[], t(0)).is_err());
    }
}
