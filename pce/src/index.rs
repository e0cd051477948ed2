//! The in-memory index of every booking in a domain: one bandwidth calendar per resource
//! direction and one label calendar per port. A cache of the store, rebuilt at start and
//! kept current on every change; the store re-checks at write time, so a stale index can
//! cost a retry but never an over-booking.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sluice_model::topology::PortIdx;
use sluice_model::{Direction, Mbps, Resource, TimeWindow, Topology, Vlan, VlanSet};

use crate::calendar::{BandwidthCalendar, Interval, Step};
use crate::labels::LabelCalendar;

/// What one reservation occupies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub window: TimeWindow,
    /// Set while the reservation is only held.
    pub hold_until: Option<DateTime<Utc>>,
    pub bandwidth: Vec<(Resource, Mbps)>,
    pub labels: Vec<(PortIdx, Vlan)>,
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
        self
    }
}

pub struct Index {
    topo: Arc<Topology>,
    bandwidth: Vec<BandwidthCalendar>,
    labels: Vec<LabelCalendar>,
    booked: HashMap<Arc<str>, (Vec<usize>, Vec<PortIdx>)>,
}

impl Index {
    pub fn new(topo: Arc<Topology>) -> Index {
        let slots = 2 * (topo.links().len() + topo.ports().len());
        Index {
            bandwidth: vec![BandwidthCalendar::default(); slots],
            labels: vec![LabelCalendar::default(); topo.ports().len()],
            booked: HashMap::new(),
            topo,
        }
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.topo
    }

    fn slot(&self, r: Resource) -> usize {
        let d = |d: Direction| match d {
            Direction::Forward => 0,
            Direction::Reverse => 1,
        };
        match r {
            Resource::Link(l, dir) => 2 * l + d(dir),
            Resource::Port(p, dir) => 2 * self.topo.links().len() + 2 * p + d(dir),
        }
    }

    /// Adds or replaces the bookings of reservation `id`.
    pub fn insert(&mut self, id: &str, usage: &Usage) {
        self.remove(id);
        let id: Arc<str> = Arc::from(id);
        let usage = usage.clone().normalized();
        let mut slots = Vec::with_capacity(usage.bandwidth.len());
        for (r, bw) in &usage.bandwidth {
            let s = self.slot(*r);
            self.bandwidth[s].insert(
                id.clone(),
                Interval {
                    start: usage.window.start,
                    end: usage.window.end,
                    bw: *bw,
                },
                usage.hold_until,
            );
            slots.push(s);
        }
        let mut ports = Vec::with_capacity(usage.labels.len());
        for (p, vlan) in &usage.labels {
            self.labels[*p].insert(id.clone(), *vlan, usage.window, usage.hold_until);
            ports.push(*p);
        }
        self.booked.insert(id, (slots, ports));
    }

    pub fn remove(&mut self, id: &str) {
        if let Some((slots, ports)) = self.booked.remove(id) {
            for s in slots {
                self.bandwidth[s].remove(id);
            }
            for p in ports {
                self.labels[p].remove(id);
            }
        }
    }

    /// The hold of `id` became a commitment.
    pub fn commit(&mut self, id: &str) {
        if let Some((slots, ports)) = self.booked.get(id) {
            for &s in slots {
                self.bandwidth[s].commit(id);
            }
            for &p in ports {
                self.labels[p].commit(id);
            }
        }
    }

    pub fn reservations(&self) -> usize {
        self.booked.len()
    }

    pub fn peak(
        &self,
        r: Resource,
        window: &TimeWindow,
        now: DateTime<Utc>,
        ignore: Option<&str>,
    ) -> Mbps {
        self.bandwidth[self.slot(r)].peak(window, now, ignore)
    }

    /// Capacity minus the peak booked inside `window`.
    pub fn available(
        &self,
        r: Resource,
        window: &TimeWindow,
        now: DateTime<Utc>,
        ignore: Option<&str>,
    ) -> Mbps {
        self.topo
            .capacity(r)
            .saturating_sub(self.peak(r, window, now, ignore))
    }

    pub fn steps(&self, r: Resource, window: &TimeWindow, now: DateTime<Utc>) -> Vec<Step> {
        self.bandwidth[self.slot(r)].steps(window, now)
    }

    pub fn free_vlans(
        &self,
        port: PortIdx,
        wanted: &VlanSet,
        window: &TimeWindow,
        now: DateTime<Utc>,
        ignore: Option<&str>,
    ) -> VlanSet {
        self.labels[port].free(wanted, window, now, ignore)
    }

    pub fn vlans_in_use(
        &self,
        port: PortIdx,
        window: &TimeWindow,
        now: DateTime<Utc>,
    ) -> Vec<Vlan> {
        self.labels[port].in_use(window, now)
    }
}
