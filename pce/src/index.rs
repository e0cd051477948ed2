//! The in-memory index of every booking in a domain: one bandwidth calendar per link and
//! per end port (both directions on one time axis) and one label calendar per link and
//! per end port. A cache of the store, rebuilt at start and kept current on every change;
//! the store re-checks at write time, so a stale index can cost a retry but never an
//! over-booking.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use sluice_model::topology::{LinkIdx, NodeIdx, PortIdx};
use sluice_model::{Direction, Mbps, Resource, TimeWindow, Topology, Vlan};

use crate::calendar::{BandwidthCalendar, FOREVER, Hold, Leave, Millis, Pair, Rid, Step, millis};
use crate::labels::{LabelCalendar, LabelHold, LeaveLabel, VlanBits};

/// Where bandwidth or a VLAN is booked: an end port, or a link (whose two ports carry
/// the same VLAN, so they share one label calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Port(PortIdx),
    Link(LinkIdx),
}

/// What one reservation occupies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub window: TimeWindow,
    /// Set while the reservation is only held.
    pub hold_until: Option<DateTime<Utc>>,
    pub bandwidth: Vec<(Resource, Mbps)>,
    pub labels: Vec<(Place, Vlan)>,
}

impl Usage {
    /// Sums repeated resources, so each appears once.
    pub fn normalized(mut self) -> Usage {
        let mut sums: HashMap<Resource, Mbps> = HashMap::new();
        for (r, bw) in self.bandwidth.drain(..) {
            let sum = sums.entry(r).or_default();
            *sum = *sum + bw;
        }
        let mut bandwidth: Vec<_> = sums.into_iter().collect();
        bandwidth.sort();
        self.bandwidth = bandwidth;
        self.labels.sort();
        self.labels.dedup();
        self
    }
}

impl Usage {
    /// What it books per place, as the store keeps it: `[forward, reverse]` Mb/s and
    /// the VLAN, one entry per place.
    pub fn per_place(&self) -> Vec<(Place, [u64; 2], Option<Vlan>)> {
        let mut rows: Vec<(Place, [u64; 2], Option<Vlan>)> = Vec::new();
        fn row(rows: &mut Vec<(Place, [u64; 2], Option<Vlan>)>, place: Place) -> usize {
            match rows.iter().position(|r| r.0 == place) {
                Some(i) => i,
                None => {
                    rows.push((place, [0, 0], None));
                    rows.len() - 1
                }
            }
        }
        for &(r, m) in &self.bandwidth {
            let (place, d) = place_of(r);
            let i = row(&mut rows, place);
            rows[i].1[d] += m.0;
        }
        for &(place, v) in &self.labels {
            let i = row(&mut rows, place);
            rows[i].2 = Some(v);
        }
        rows
    }
}

fn place_of(r: Resource) -> (Place, usize) {
    let d = |d: Direction| match d {
        Direction::Forward => 0,
        Direction::Reverse => 1,
    };
    match r {
        Resource::Link(l, dir) => (Place::Link(l), d(dir)),
        Resource::Port(p, dir) => (Place::Port(p), d(dir)),
    }
}

/// What one reservation books on one place, in 12 bytes (there are about ten per
/// reservation and a hundred thousand reservations).
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Bits 0-18: the port or link index (`MAX_PLACES`); bit 19: a link; bits 20-31:
    /// the VLAN used there (0 for none).
    packed: u32,
    /// Mb/s `[forward, reverse]`.
    bw: [u32; 2],
}

const INDEX_BITS: u32 = (1 << 19) - 1;
const LINK_BIT: u32 = 1 << 19;
const VLAN_SHIFT: u32 = 20;

impl Slot {
    fn new(place: Place) -> Slot {
        let packed = match place {
            Place::Port(p) => p as u32,
            Place::Link(l) => l as u32 | LINK_BIT,
        };
        Slot { packed, bw: [0, 0] }
    }

    /// The place bits, without the VLAN.
    fn key(&self) -> u32 {
        self.packed & (INDEX_BITS | LINK_BIT)
    }

    fn place(&self) -> Place {
        let i = (self.packed & INDEX_BITS) as usize;
        if self.packed & LINK_BIT != 0 {
            Place::Link(i)
        } else {
            Place::Port(i)
        }
    }

    fn bw(&self) -> Pair {
        [self.bw[0] as u64, self.bw[1] as u64]
    }

    fn vlan(&self) -> Option<Vlan> {
        Vlan::new((self.packed >> VLAN_SHIFT) as u16)
    }

    fn set_vlan(&mut self, vlan: Vlan) {
        self.packed = self.key() | (vlan.id() as u32) << VLAN_SHIFT;
    }
}

/// A fast, unkeyed hash for reservation ids (FxHash's mixing step). Ids are made by the
/// IDC, not chosen by callers, so flooding the map with colliding keys is not a concern;
/// SipHash was a tenth of the time of a rebuild.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// A reservation id as a map key: ids up to 30 bytes (all the IDC makes) are kept inline,
/// so a lookup compares bytes in the table itself instead of following a pointer to
/// them; longer ones on the heap.
#[derive(Clone)]
enum IdKey {
    Inline { len: u8, bytes: [u8; 30] },
    Heap(Box<str>),
}

impl IdKey {
    fn new(id: &str) -> IdKey {
        if id.len() <= 30 {
            let mut bytes = [0u8; 30];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            IdKey::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            IdKey::Heap(id.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            IdKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).expect("made from a str")
            }
            IdKey::Heap(s) => s,
        }
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &IdKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IdKey {}

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that lookups by `&str` find it.
        self.as_str().hash(state)
    }
}

impl std::borrow::Borrow<str> for IdKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// What the index remembers of one reservation: enough to take it out again.
#[derive(Debug)]
struct Booked {
    rid: Rid,
    held: bool,
    start: Millis,
    end: Millis,
    slots: Box<[Slot]>,
}

/// A reservation a query leaves out (the one being modified), resolved once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore<'a> {
    booked: Option<&'a Booked>,
}

impl Ignore<'_> {
    fn bandwidth(&self, place: Place) -> Option<Leave> {
        let b = self.booked?;
        if b.held {
            return Some(Leave::Hold(b.rid));
        }
        let slot = b.slots.iter().find(|s| s.place() == place)?;
        Some(Leave::Committed {
            rid: b.rid,
            start: b.start,
            end: b.end,
            bw: slot.bw(),
        })
    }

    fn label(&self, place: Place) -> Option<LeaveLabel> {
        let b = self.booked?;
        if b.held {
            return Some(LeaveLabel::Hold(b.rid));
        }
        let vlan = b.slots.iter().find(|s| s.place() == place)?.vlan()?;
        Some(LeaveLabel::Committed {
            rid: b.rid,
            start: b.start,
            vlan,
        })
    }
}

/// One step out of a node, as the search reads it: where it leads, over which link in
/// which direction (`1 + 2 * link + direction`), at what metric. Kept contiguous per node
/// so a search step reads one short slice instead of chasing links and ports.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub head: u32,
    pub via: u32,
    pub metric: u32,
}

pub struct Index {
    topo: Arc<Topology>,
    /// `edges[edge_from[n]..edge_from[n + 1]]`: the steps out of node `n`.
    edge_from: Vec<u32>,
    edges: Vec<Edge>,
    link_bw: Vec<BandwidthCalendar>,
    link_labels: Vec<LabelCalendar>,
    /// Per port, its calendars' place in `port_bw` and `port_labels`. Only edge ports
    /// (where circuits start and end) have calendars of their own; internal-link ports
    /// share the last, empty one, as their bookings are the link's.
    port_cal: Vec<u32>,
    port_bw: Vec<BandwidthCalendar>,
    port_labels: Vec<LabelCalendar>,
    /// The VLANs each link can carry (the intersection of its two ports' ranges) and
    /// each port can: indices into `vlan_sets`, which holds each distinct set once (a
    /// topology has thousands of ports and a handful of ranges).
    link_vlans: Vec<u32>,
    port_vlans: Vec<u32>,
    vlan_sets: Vec<VlanBits>,
    booked: HashMap<IdKey, Booked, FxBuild>,
    free_rids: Vec<Rid>,
    next_rid: Rid,
    /// Per target node, the metric of the shortest path to it from every node with no
    /// calendar in the way: an exact lower bound for goal-directed search, which only
    /// changes with the topology. Filled on first use; `u32::MAX` is unreachable, and
    /// larger sums are capped below it (still a lower bound, still consistent).
    to_target: Vec<OnceLock<Box<[u32]>>>,
}

/// Where `distances_to` says a node cannot reach the target.
pub const UNREACHABLE: u32 = u32::MAX;

impl Index {
    pub fn new(topo: Arc<Topology>) -> Index {
        let (nl, nn) = (topo.links().len(), topo.nodes().len());
        let mut vlan_sets: Vec<VlanBits> = Vec::new();
        let mut known: HashMap<VlanBits, u32> = HashMap::new();
        let mut intern = |b: VlanBits| -> u32 {
            *known.entry(b.clone()).or_insert_with(|| {
                vlan_sets.push(b);
                vlan_sets.len() as u32 - 1
            })
        };
        let port_bits: Vec<VlanBits> = topo
            .ports()
            .iter()
            .map(|p| VlanBits::from_set(&p.vlans))
            .collect();
        let link_vlans = topo
            .links()
            .iter()
            .map(|l| intern(port_bits[l.a].and(&port_bits[l.b])))
            .collect();
        let port_vlans = port_bits.into_iter().map(&mut intern).collect();
        let edge_ports = topo.ports().iter().filter(|p| p.link.is_none()).count();
        let mut next = 0u32;
        let port_cal = topo
            .ports()
            .iter()
            .map(|p| match p.link {
                Some(_) => edge_ports as u32,
                None => {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        let mut edge_from = Vec::with_capacity(nn + 1);
        let mut edges = Vec::new();
        for n in 0..nn {
            edge_from.push(edges.len() as u32);
            for &(l, d) in topo.adjacent(n) {
                edges.push(Edge {
                    head: topo.link_head(l, d) as u32,
                    via: 1 + 2 * l as u32 + matches!(d, Direction::Reverse) as u32,
                    metric: topo.link(l).metric,
                });
            }
        }
        edge_from.push(edges.len() as u32);
        Index {
            edge_from,
            edges,
            link_bw: vec![BandwidthCalendar::default(); nl],
            link_labels: vec![LabelCalendar::default(); nl],
            port_bw: vec![BandwidthCalendar::default(); edge_ports + 1],
            port_labels: vec![LabelCalendar::default(); edge_ports + 1],
            port_cal,
            link_vlans,
            port_vlans,
            vlan_sets,
            booked: HashMap::default(),
            free_rids: Vec::new(),
            next_rid: 0,
            to_target: (0..nn).map(|_| OnceLock::new()).collect(),
            topo,
        }
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.topo
    }

    /// The steps out of node `n`.
    pub fn edges_from(&self, n: NodeIdx) -> &[Edge] {
        &self.edges[self.edge_from[n] as usize..self.edge_from[n + 1] as usize]
    }

    /// Where port `p`'s calendars are; for a change, it must be an edge port.
    fn port_slot(&self, p: PortIdx, changing: bool) -> usize {
        let k = self.port_cal[p] as usize;
        assert!(
            !changing || k + 1 < self.port_bw.len(),
            "bookings on internal-link port {p} belong to its link"
        );
        k
    }

    fn bw_cal(&self, place: Place) -> &BandwidthCalendar {
        match place {
            Place::Port(p) => &self.port_bw[self.port_slot(p, false)],
            Place::Link(l) => &self.link_bw[l],
        }
    }

    fn bw_cal_mut(&mut self, place: Place) -> &mut BandwidthCalendar {
        match place {
            Place::Port(p) => {
                let k = self.port_slot(p, true);
                &mut self.port_bw[k]
            }
            Place::Link(l) => &mut self.link_bw[l],
        }
    }

    fn label_cal(&self, place: Place) -> &LabelCalendar {
        match place {
            Place::Port(p) => &self.port_labels[self.port_slot(p, false)],
            Place::Link(l) => &self.link_labels[l],
        }
    }

    fn label_cal_mut(&mut self, place: Place) -> &mut LabelCalendar {
        match place {
            Place::Port(p) => {
                let k = self.port_slot(p, true);
                &mut self.port_labels[k]
            }
            Place::Link(l) => &mut self.link_labels[l],
        }
    }

    /// The VLANs a place can carry at all.
    pub fn vlan_range(&self, place: Place) -> &VlanBits {
        self.vlan_set(self.vlan_range_id(place))
    }

    /// Which of the topology's distinct VLAN ranges `place` has.
    pub(crate) fn vlan_range_id(&self, place: Place) -> u32 {
        match place {
            Place::Port(p) => self.port_vlans[p],
            Place::Link(l) => self.link_vlans[l],
        }
    }

    pub(crate) fn vlan_set(&self, id: u32) -> &VlanBits {
        &self.vlan_sets[id as usize]
    }

    /// Adds to `taken` every VLAN booked on `place` at some instant of `[w0, w1)`.
    pub(crate) fn taken_into(
        &self,
        place: Place,
        w0: Millis,
        w1: Millis,
        now: Millis,
        ig: Ignore,
        taken: &mut VlanBits,
    ) {
        self.label_cal(place)
            .for_each_taken(w0, w1, now, ig.label(place), |v| taken.insert(v));
    }

    /// Adds or replaces the bookings of reservation `id`.
    pub fn insert(&mut self, id: &str, usage: &Usage) {
        self.remove(id);
        let rid = self.free_rids.pop().unwrap_or_else(|| {
            self.next_rid += 1;
            self.next_rid - 1
        });
        let (start, end) = (millis(usage.window.start), millis(usage.window.end));
        let mut slots: Vec<Slot> = Vec::with_capacity(usage.bandwidth.len());
        let slot_of = |slots: &mut Vec<Slot>, place: Place| -> usize {
            let key = Slot::new(place).key();
            match slots.iter().position(|s| s.key() == key) {
                Some(i) => i,
                None => {
                    slots.push(Slot::new(place));
                    slots.len() - 1
                }
            }
        };
        for &(r, bw) in &usage.bandwidth {
            let (place, d) = place_of(r);
            let i = slot_of(&mut slots, place);
            let sum = slots[i].bw[d] as u64 + bw.0;
            slots[i].bw[d] = sum.min(u32::MAX as u64) as u32;
        }
        for &(place, vlan) in &usage.labels {
            let i = slot_of(&mut slots, place);
            slots[i].set_vlan(vlan);
        }
        let until = usage.hold_until.map(millis);
        for slot in &slots {
            self.book_slot(rid, start, end, until, slot);
        }
        self.booked.insert(
            IdKey::new(id),
            Booked {
                rid,
                held: until.is_some(),
                start,
                end,
                slots: slots.into_boxed_slice(),
            },
        );
    }

    /// Puts what one reservation books on one place into that place's calendars: as a
    /// hold while `until` is set, else committed.
    fn book_slot(
        &mut self,
        rid: Rid,
        start: Millis,
        end: Millis,
        until: Option<Millis>,
        slot: &Slot,
    ) {
        let place = slot.place();
        if slot.bw != [0, 0] {
            // A commitment goes beside the points, to be folded in with others later.
            self.bw_cal_mut(place).add_hold(Hold {
                rid,
                start,
                end,
                bw: slot.bw,
                until: until.unwrap_or(FOREVER),
            });
        }
        if let Some(vlan) = slot.vlan() {
            self.label_cal_mut(place).add_hold(LabelHold {
                rid,
                start,
                end,
                vlan,
                until: until.unwrap_or(FOREVER),
            });
        }
    }

    pub fn remove(&mut self, id: &str) {
        let Some(b) = self.booked.remove(id) else {
            return;
        };
        for slot in b.slots.iter() {
            let place = slot.place();
            if slot.bw != [0, 0] {
                let cal = self.bw_cal_mut(place);
                if b.held {
                    cal.remove_hold(b.rid);
                } else {
                    cal.remove_commitment(b.rid, b.start, b.end, slot.bw());
                }
            }
            if let Some(vlan) = slot.vlan() {
                let cal = self.label_cal_mut(place);
                if b.held {
                    cal.remove_hold(b.rid);
                } else {
                    cal.remove_commitment(b.rid, b.start, vlan);
                }
            }
        }
        self.free_rids.push(b.rid);
    }

    /// The hold of `id` became a commitment.
    pub fn commit(&mut self, id: &str) {
        let Some(b) = self.booked.get_mut(id) else {
            return;
        };
        if !b.held {
            return;
        }
        b.held = false;
        let (rid, slots) = (b.rid, b.slots.clone());
        for slot in slots.iter() {
            let place = slot.place();
            if slot.bw != [0, 0] {
                self.bw_cal_mut(place).commit_hold(rid);
            }
            if slot.vlan().is_some() {
                self.label_cal_mut(place).commit_hold(rid);
            }
        }
    }

    pub fn reservations(&self) -> usize {
        self.booked.len()
    }

    /// Folds recent commitments in and gives back memory the calendars grew into; for
    /// after a rebuild.
    pub fn shrink_to_fit(&mut self) {
        for c in self.link_bw.iter_mut().chain(&mut self.port_bw) {
            c.fold_recent();
            c.shrink_to_fit();
        }
        for c in self.link_labels.iter_mut().chain(&mut self.port_labels) {
            c.fold_recent();
            c.shrink_to_fit();
        }
        self.booked.shrink_to_fit();
    }

    /// Bytes of heap the calendars use (not counting the per-reservation bookkeeping).
    pub fn calendar_bytes(&self) -> usize {
        let bw: usize = self
            .link_bw
            .iter()
            .chain(&self.port_bw)
            .map(|c| c.heap_bytes() + size_of::<BandwidthCalendar>())
            .sum();
        let labels: usize = self
            .link_labels
            .iter()
            .chain(&self.port_labels)
            .map(|c| c.heap_bytes() + size_of::<LabelCalendar>())
            .sum();
        bw + labels
    }

    /// Bytes of heap the per-reservation bookkeeping uses (an estimate: the map's own
    /// table plus each entry's boxes).
    pub fn bookkeeping_bytes(&self) -> usize {
        self.booked.capacity() * (size_of::<IdKey>() + size_of::<Booked>() + 1)
            + self
                .booked
                .iter()
                .map(|(k, b)| {
                    let heap_key = match k {
                        IdKey::Heap(s) => s.len(),
                        IdKey::Inline { .. } => 0,
                    };
                    heap_key + b.slots.len() * size_of::<Slot>()
                })
                .sum::<usize>()
    }

    /// Resolves the reservation a query leaves out.
    pub fn ignore(&self, id: Option<&str>) -> Ignore<'_> {
        Ignore {
            booked: id.and_then(|id| self.booked.get(id)),
        }
    }

    /// Booked Mb/s `[forward, reverse]` at the peak of `window`.
    pub fn peak(&self, place: Place, window: &TimeWindow, now: DateTime<Utc>, ig: Ignore) -> Pair {
        self.bw_cal(place).peak(
            millis(window.start),
            millis(window.end),
            millis(now),
            ig.bandwidth(place),
        )
    }

    pub(crate) fn peak_ms(
        &self,
        place: Place,
        w0: Millis,
        w1: Millis,
        now: Millis,
        ig: Ignore,
    ) -> Pair {
        self.bw_cal(place).peak(w0, w1, now, ig.bandwidth(place))
    }

    /// At least the highest level `[forward, reverse]` ever booked on `place` (see
    /// `BandwidthCalendar::ceiling`): read before opening the calendar.
    pub(crate) fn ceiling(&self, place: Place) -> Pair {
        self.bw_cal(place).ceiling()
    }

    pub fn steps(&self, r: Resource, window: &TimeWindow, now: DateTime<Utc>) -> Vec<Step> {
        let (place, d) = place_of(r);
        self.bw_cal(place).steps(d, window, now)
    }

    /// The VLANs of the place's range that are free for the whole of `[w0, w1)`.
    pub(crate) fn free_labels_ms(
        &self,
        place: Place,
        w0: Millis,
        w1: Millis,
        now: Millis,
        ig: Ignore,
    ) -> VlanBits {
        let cal = self.label_cal(place);
        let range = self.vlan_range(place);
        if cal.is_empty() {
            return range.clone();
        }
        range.and_not(&cal.taken(w0, w1, now, ig.label(place)))
    }

    pub fn free_labels(
        &self,
        place: Place,
        window: &TimeWindow,
        now: DateTime<Utc>,
        ig: Ignore,
    ) -> VlanBits {
        self.free_labels_ms(
            place,
            millis(window.start),
            millis(window.end),
            millis(now),
            ig,
        )
    }

    pub fn vlans_in_use(&self, place: Place, window: &TimeWindow, now: DateTime<Utc>) -> Vec<Vlan> {
        self.label_cal(place)
            .taken(millis(window.start), millis(window.end), millis(now), None)
            .to_set()
            .iter()
            .collect()
    }

    /// The first instant after `t` at which bandwidth or a VLAN booked on `place` is
    /// released.
    pub(crate) fn next_release_after(
        &self,
        place: Place,
        t: Millis,
        now: Millis,
    ) -> Option<Millis> {
        let a = self.bw_cal(place).next_release_after(t, now);
        let b = self.label_cal(place).next_release_after(t, now);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lowest possible metric from every node to `target`, ignoring bookings
    /// (`UNREACHABLE` where there is no path).
    pub fn distances_to(&self, target: NodeIdx) -> &[u32] {
        self.to_target[target].get_or_init(|| {
            let topo = &self.topo;
            let mut dist = vec![u64::MAX; topo.nodes().len()];
            let mut heap = std::collections::BinaryHeap::new();
            dist[target] = 0;
            heap.push(std::cmp::Reverse((0u64, target)));
            while let Some(std::cmp::Reverse((d, u))) = heap.pop() {
                if d > dist[u] {
                    continue;
                }
                // Links carry traffic both ways with one metric, so the reverse graph
                // is the graph.
                for &(l, dir) in topo.adjacent(u) {
                    let v = topo.link_head(l, dir);
                    let nd = d + topo.link(l).metric as u64;
                    if nd < dist[v] {
                        dist[v] = nd;
                        heap.push(std::cmp::Reverse((nd, v)));
                    }
                }
            }
            dist.into_iter()
                .map(|d| {
                    if d == u64::MAX {
                        UNREACHABLE
                    } else {
                        d.min(UNREACHABLE as u64 - 1) as u32
                    }
                })
                .collect()
        })
    }
}

/// Builds an index from stored bookings in one pass (a restart): rows are gathered per
/// calendar and each calendar is then built with one sort, rather than inserted one by
/// one. Rows may come in any order.
pub struct IndexLoader {
    index: Index,
    /// Per reservation, what it books so far.
    pending: HashMap<IdKey, Pending, FxBuild>,
    link_bw: Vec<Vec<(Millis, Millis, [u32; 2])>>,
    port_bw: Vec<Vec<(Millis, Millis, [u32; 2])>>,
    link_labels: Vec<Vec<(Millis, Millis, Vlan)>>,
    port_labels: Vec<Vec<(Millis, Millis, Vlan)>>,
}

struct Pending {
    start: Millis,
    end: Millis,
    hold_until: Option<Millis>,
    slots: Vec<Slot>,
}

impl IndexLoader {
    pub fn new(topo: Arc<Topology>) -> IndexLoader {
        let index = Index::new(topo);
        let (nl, np) = (index.link_bw.len(), index.port_bw.len());
        IndexLoader {
            index,
            pending: HashMap::default(),
            link_bw: vec![Vec::new(); nl],
            port_bw: vec![Vec::new(); np],
            link_labels: vec![Vec::new(); nl],
            port_labels: vec![Vec::new(); np],
        }
    }

    /// One stored row: reservation `id` books `bw` (`[forward, reverse]`) and `vlan` on
    /// `place` over `[start, end)`, counting until `hold_until` if it is only held.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        id: &str,
        place: Place,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        hold_until: Option<DateTime<Utc>>,
        bw: [u64; 2],
        vlan: Option<Vlan>,
    ) {
        let (start, end) = (millis(start), millis(end));
        let p = match self.pending.get_mut(id) {
            Some(p) => p,
            None => self.pending.entry(IdKey::new(id)).or_insert(Pending {
                start,
                end,
                hold_until: hold_until.map(millis),
                slots: Vec::with_capacity(10),
            }),
        };
        let mut slot = Slot::new(place);
        slot.bw = [
            bw[0].min(u32::MAX as u64) as u32,
            bw[1].min(u32::MAX as u64) as u32,
        ];
        if let Some(v) = vlan {
            slot.set_vlan(v);
        }
        p.slots.push(slot);
        if p.hold_until.is_none() {
            let (bws, labels) = match place {
                Place::Link(l) => (&mut self.link_bw[l], &mut self.link_labels[l]),
                Place::Port(q) => {
                    let k = self.index.port_slot(q, true);
                    (&mut self.port_bw[k], &mut self.port_labels[k])
                }
            };
            if slot.bw != [0, 0] {
                bws.push((start, end, slot.bw));
            }
            if let Some(v) = vlan {
                labels.push((start, end, v));
            }
        }
    }

    pub fn finish(mut self) -> Index {
        let ix = &mut self.index;
        for (cal, rows) in ix.link_bw.iter_mut().zip(&self.link_bw) {
            *cal = BandwidthCalendar::from_committed(rows);
        }
        for (cal, rows) in ix.port_bw.iter_mut().zip(&self.port_bw) {
            *cal = BandwidthCalendar::from_committed(rows);
        }
        drop((self.link_bw, self.port_bw));
        for (cal, rows) in ix.link_labels.iter_mut().zip(self.link_labels) {
            *cal = LabelCalendar::from_committed(rows);
        }
        for (cal, rows) in ix.port_labels.iter_mut().zip(self.port_labels) {
            *cal = LabelCalendar::from_committed(rows);
        }
        ix.booked.reserve(self.pending.len());
        for (id, p) in self.pending.drain() {
            let rid = ix.next_rid;
            ix.next_rid += 1;
            // Holds are few: added the ordinary way (the committed rows are in the
            // calendars built above).
            if p.hold_until.is_some() {
                for slot in &p.slots {
                    ix.book_slot(rid, p.start, p.end, p.hold_until, slot);
                }
            }
            ix.booked.insert(
                id,
                Booked {
                    rid,
                    held: p.hold_until.is_some(),
                    start: p.start,
                    end: p.end,
                    slots: p.slots.into_boxed_slice(),
                },
            );
        }
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_stored_rows_gives_the_index_inserting_gives() {
        use crate::generate::{self, Params};
        let topo = Arc::new(generate::build(&Params {
            nodes: 40,
            links: 120,
            seed: 11,
        }));
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let span = chrono::TimeDelta::days(60);
        let mut usages: Vec<(String, Usage)> = Vec::new();
        let mut inserted = Index::new(topo.clone());
        generate::book_each(&mut inserted, 2_000, t0, span, 5, |id, u| {
            usages.push((id.to_string(), u.clone()));
        });
        // Some are only held: one hold still live at `now`, one expired.
        let now = t0;
        for (i, (id, u)) in usages.iter_mut().enumerate().take(40) {
            u.hold_until =
                Some(now + chrono::TimeDelta::seconds(if i % 2 == 0 { 60 } else { -60 }));
            inserted.insert(id, u);
        }
        let mut loader = IndexLoader::new(topo.clone());
        // Rows in store order (by resource), not by reservation.
        type Row<'a> = (String, Place, [u64; 2], Option<Vlan>, &'a Usage);
        let mut rows: Vec<Row> = Vec::new();
        for (id, u) in &usages {
            for (place, bw, vlan) in u.per_place() {
                rows.push((id.clone(), place, bw, vlan, u));
            }
        }
        rows.sort_by_key(|r| r.1);
        for (id, place, bw, vlan, u) in &rows {
            loader.add(
                id,
                *place,
                u.window.start,
                u.window.end,
                u.hold_until,
                *bw,
                *vlan,
            );
        }
        let mut loaded = loader.finish();
        assert_eq!(loaded.reservations(), inserted.reservations());
        let check = |a: &Index, b: &Index| {
            let mut rng = generate::Rng::new(3);
            for _ in 0..2_000 {
                let place = if rng.below(2) == 0 {
                    Place::Link(rng.below(topo.links().len()))
                } else {
                    Place::Port(rng.below(topo.ports().len()))
                };
                let s = t0 + chrono::TimeDelta::minutes(rng.below(60 * 24 * 60) as i64);
                let w = TimeWindow::new(s, s + chrono::TimeDelta::hours(1 + rng.below(200) as i64))
                    .unwrap();
                assert_eq!(
                    a.peak(place, &w, now, a.ignore(None)),
                    b.peak(place, &w, now, b.ignore(None))
                );
                assert_eq!(
                    a.free_labels(place, &w, now, a.ignore(None)),
                    b.free_labels(place, &w, now, b.ignore(None))
                );
                let id = &usages[rng.below(usages.len())].0;
                assert_eq!(
                    a.peak(place, &w, now, a.ignore(Some(id))),
                    b.peak(place, &w, now, b.ignore(Some(id)))
                );
            }
        };
        check(&inserted, &loaded);
        // And it stays the same index under changes: remove some, commit the holds.
        for (id, _) in usages.iter().step_by(7) {
            inserted.remove(id);
            loaded.remove(id);
        }
        for (id, _) in usages.iter().take(40) {
            inserted.commit(id);
            loaded.commit(id);
        }
        check(&inserted, &loaded);
    }

    #[test]
    fn a_slot_packs_place_and_vlan_in_twelve_bytes() {
        assert_eq!(size_of::<Slot>(), 12);
        let max = sluice_model::topology::MAX_PLACES;
        for place in [
            Place::Port(0),
            Place::Link(0),
            Place::Port(max),
            Place::Link(max),
        ] {
            let mut s = Slot::new(place);
            assert_eq!((s.place(), s.vlan()), (place, None));
            s.set_vlan(Vlan::new(4094).unwrap());
            assert_eq!((s.place(), s.vlan()), (place, Vlan::new(4094)));
            s.set_vlan(Vlan::new(2).unwrap());
            assert_eq!((s.place(), s.vlan()), (place, Vlan::new(2)));
        }
    }
}
