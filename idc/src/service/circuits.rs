//! What the federation needs of the IDC: circuits across domains (a reservation row
//! without bookings, plus its segments), and facts about this domain's own ports for the
//! topology document and label agreement.

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::{
    Change, Criteria, Direction, Error, ErrorCode, Mbps, Recurrence, Reservation, Resource, Series,
    SeriesRef, States, Stp, TimeWindow, Vlan, VlanSet,
};
use sluice_pce::Place;
use tracing::info;

use super::{Idc, store_error};
use crate::store::{BookingChange, Bookings, HeldOccurrence, SegmentRecord};

/// One occurrence of a recurring circuit, held in every domain.
#[derive(Debug, Clone)]
pub struct CircuitOccurrence {
    pub number: u32,
    pub window: TimeWindow,
    pub src_vlan: Vlan,
    pub dst_vlan: Vlan,
    pub segments: Vec<SegmentRecord>,
}

/// A stretch of time over which a port has `free` bandwidth in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpan {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub free: Mbps,
}

impl Idc {
    /// A fresh id, for a circuit whose segments are about to be asked for.
    pub fn new_circuit_id(&self) -> String {
        self.inner.new_id()
    }

    pub fn hold_timeout(&self) -> TimeDelta {
        self.inner.hold_timeout
    }

    fn local_port(&self, stp: &Stp, field: &str) -> Result<usize, Error> {
        self.inner.topo.port_by_stp(stp).ok_or_else(|| {
            Error::field(
                ErrorCode::UnknownStp,
                field,
                format!("{stp} is not a port of {}", self.inner.topo.domain),
            )
        })
    }

    /// The VLANs of `stp`'s range free for the whole window.
    pub fn free_vlans(
        &self,
        stp: &Stp,
        window: &TimeWindow,
        field: &str,
    ) -> Result<VlanSet, Error> {
        let pi = self.local_port(stp, field)?;
        let now = self.now();
        let mut free = self.inner.topo.port(pi).vlans.clone();
        for v in self
            .inner
            .read_index()
            .vlans_in_use(Place::Port(pi), window, now)
        {
            free.remove(v);
        }
        Ok(free)
    }

    /// Where `stp` has less than its capacity free (the lower of its two directions)
    /// over `window`: the summary a topology document carries.
    pub fn port_free_spans(&self, stp: &Stp, window: &TimeWindow) -> Result<Vec<FreeSpan>, Error> {
        let pi = self.local_port(stp, "port")?;
        let now = self.now();
        let topo = &self.inner.topo;
        let index = self.inner.read_index();
        let mut points: Vec<(DateTime<Utc>, DateTime<Utc>, Mbps)> = Vec::new();
        for d in [Direction::Forward, Direction::Reverse] {
            let r = Resource::Port(pi, d);
            let cap = topo.capacity(r);
            for s in index.steps(r, window, now) {
                if s.booked > Mbps::ZERO {
                    points.push((s.start, s.end, cap.saturating_sub(s.booked)));
                }
            }
        }
        // Merge the two directions: at any instant the lower of the two.
        let mut cuts: Vec<DateTime<Utc>> = points.iter().flat_map(|p| [p.0, p.1]).collect();
        cuts.sort();
        cuts.dedup();
        let cap = topo.port(pi).capacity;
        let mut out: Vec<FreeSpan> = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let free = points
                .iter()
                .filter(|p| p.0 <= a && b <= p.1)
                .map(|p| p.2)
                .min()
                .unwrap_or(cap);
            if free == cap {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end == a && last.free == free => last.end = b,
                _ => out.push(FreeSpan {
                    start: a,
                    end: b,
                    free,
                }),
            }
        }
        Ok(out)
    }

    /// Records a circuit across domains whose every segment is held: its row (held, with
    /// this IDC's hold timer, but no longer than `hold_until`, when its first segment's
    /// hold ends) and its segments.
    pub async fn insert_circuit(
        &self,
        id: String,
        owner: &str,
        criteria: &Criteria,
        (src_vlan, dst_vlan): (Vlan, Vlan),
        hold_until: Option<DateTime<Utc>>,
        segments: Vec<SegmentRecord>,
    ) -> Result<Reservation, Error> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let (mut r, changes) = Reservation::held(
            id,
            owner.to_string(),
            criteria,
            src_vlan,
            dst_vlan,
            Vec::new(),
            now,
            inner.hold_timeout,
        );
        if let (Some(own), Some(first)) = (r.hold_expires_at, hold_until) {
            r.hold_expires_at = Some(own.min(first));
        }
        let deadline = sluice_scheduler::next_deadline(&r, now);
        let events = self.may_block(|| {
            inner
                .store
                .writer()
                .and_then(|mut w| w.insert_circuit(&r, deadline, &segments, &changes, now))
                .map_err(store_error)
        })?;
        info!(reservation.id = %r.id, segments = segments.len(), "circuit held in every domain");
        inner.publish(events);
        inner.schedule(deadline);
        Ok(r)
    }

    /// Records a recurring circuit whose every occurrence is held in every domain: the
    /// series row and, per occurrence, a circuit row (held) with its segments.
    pub async fn insert_circuit_series(
        &self,
        id: String,
        owner: &str,
        criteria: &Criteria,
        recurrence: Recurrence,
        occurrences: Vec<CircuitOccurrence>,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let series = Series {
            id: id.clone(),
            owner: owner.to_string(),
            description: criteria.description.clone(),
            recurrence,
            same_path: true,
            skipped: Vec::new(),
            created_at: now,
        };
        let mut held = Vec::with_capacity(occurrences.len());
        let mut segs = Vec::with_capacity(occurrences.len());
        for o in occurrences {
            let one = Criteria {
                window: o.window,
                ..criteria.clone()
            };
            let (mut r, changes) = Reservation::held(
                format!("{id}-{:03}", o.number),
                owner.to_string(),
                &one,
                o.src_vlan,
                o.dst_vlan,
                Vec::new(),
                now,
                inner.hold_timeout,
            );
            r.series = Some(SeriesRef {
                id: id.clone(),
                occurrence: o.number,
            });
            held.push(HeldOccurrence {
                next_deadline: sluice_scheduler::next_deadline(&r, now),
                bookings: Bookings {
                    window: o.window,
                    hold_until: r.hold_expires_at,
                    bandwidth: Vec::new(),
                    labels: Vec::new(),
                },
                reservation: r,
                changes,
            });
            segs.push(o.segments);
        }
        let events = self.may_block(|| {
            inner
                .store
                .writer()
                .and_then(|mut w| w.insert_circuit_series(&series, &held, &segs, now))
                .map_err(store_error)
        })?;
        info!(series.id = %id, occurrences = held.len(), "recurring circuit held in every domain");
        inner.publish(events);
        inner.schedule(held.iter().filter_map(|h| h.next_deadline).min());
        Ok((series, held.into_iter().map(|h| h.reservation).collect()))
    }

    /// Refuses a modification the circuit's own state does not allow, before any
    /// segment is asked.
    pub async fn check_circuit_modifiable(&self, id: &str) -> Result<Reservation, Error> {
        let r = self.get(id).await?;
        r.check_modifiable(self.now())?;
        Ok(r)
    }

    /// A new version of a circuit's row (its segments have already taken it): rates and
    /// window, no bookings here.
    pub async fn modify_circuit(
        &self,
        id: &str,
        bw: Option<Mbps>,
        bw_reverse: Option<Mbps>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Reservation, Error> {
        self.may_block(|| {
            super::retrying_stale(|| self.modify_circuit_once(id, bw, bw_reverse, start, end))
        })
    }

    fn modify_circuit_once(
        &self,
        id: &str,
        bw: Option<Mbps>,
        bw_reverse: Option<Mbps>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Reservation, Error> {
        let inner = &self.inner;
        let mut writer = inner.store.writer().map_err(store_error)?;
        let now = inner.clock.now();
        let super::NewVersion {
            mut r,
            mut changes,
            bw: new_bw,
            bw_reverse: new_rev,
            window,
        } = super::NewVersion::load(&mut writer, id, (bw, bw_reverse), (start, end), now)?;
        changes.extend(r.apply_version(new_bw, new_rev, window, now)?);
        let deadline = sluice_scheduler::next_deadline(&r, now);
        let events = writer
            .save(&r, deadline, BookingChange::Keep, &changes, now)
            .map_err(store_error)?;
        drop(writer);
        inner.store.sync().map_err(store_error)?;
        inner.publish(events);
        inner.schedule(deadline);
        Ok(r)
    }

    /// Segments that should be gone (their circuit was terminated or never committed)
    /// but whose domains have not yet said so.
    pub fn unended_segments(&self) -> Result<Vec<(String, SegmentRecord)>, Error> {
        self.inner.store.unended_segments(1000).map_err(store_error)
    }

    /// The segments of circuit `id` (empty: not a circuit across domains).
    pub fn segments(&self, id: &str) -> Result<Vec<SegmentRecord>, Error> {
        self.inner.store.segments(id).map_err(store_error)
    }

    /// The circuit and segment index that `domain`'s reservation `segment_id` is part of.
    pub fn circuit_of(
        &self,
        domain: &str,
        segment_id: &str,
    ) -> Result<Option<(String, u32)>, Error> {
        self.inner
            .store
            .circuit_of(domain, segment_id)
            .map_err(store_error)
    }

    /// A segment's states as its domain reported them, with events for the circuit's
    /// watchers.
    pub fn update_segment(
        &self,
        circuit: &str,
        index: u32,
        states: States,
        summary: &str,
        changes: &[Change],
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let events = self.may_block(|| {
            let now = inner.clock.now();
            inner
                .store
                .writer()
                .and_then(|mut w| w.update_segment(circuit, index, states, summary, changes, now))
                .map_err(store_error)
        })?;
        inner.publish(events);
        Ok(())
    }
}
