//! The segments of circuits that cross domains, as their aggregator keeps them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use sluice_model::{
    Change, LifecycleState, ProvisionState, Reservation, ReservationState, Series, States, Vlan,
};

use super::rows::{ReservationRow, SeriesRow, from_ms, ms};
use super::schema::{reservations, segments, series};
use super::{EventRecord, HeldOccurrence, Store, StoreError, Writer, insert_events, write_tx};

pub use sluice_model::CircuitSegment as SegmentRecord;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = segments)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct SegmentRow {
    reservation_id: String,
    idx: i32,
    domain: String,
    segment_id: String,
    series_id: Option<String>,
    ingress: String,
    ingress_vlan: i32,
    egress: String,
    egress_vlan: i32,
    reservation_state: String,
    provision_state: String,
    lifecycle_state: String,
    data_plane_active: bool,
    summary: String,
    updated_ms: i64,
}

impl SegmentRow {
    fn from_model(reservation_id: &str, s: &SegmentRecord) -> SegmentRow {
        SegmentRow {
            reservation_id: reservation_id.to_string(),
            idx: s.index as i32,
            domain: s.domain.clone(),
            segment_id: s.segment_id.clone(),
            series_id: s.series_id.clone(),
            ingress: s.ingress.clone(),
            ingress_vlan: i32::from(s.ingress_vlan.id()),
            egress: s.egress.clone(),
            egress_vlan: i32::from(s.egress_vlan.id()),
            reservation_state: s.states.reservation.as_str().to_string(),
            provision_state: s.states.provision.as_str().to_string(),
            lifecycle_state: s.states.lifecycle.as_str().to_string(),
            data_plane_active: s.states.data_plane_active,
            summary: s.summary.clone(),
            updated_ms: ms(s.updated_at),
        }
    }

    fn into_model(self) -> Result<SegmentRecord, StoreError> {
        let bad = |what: &str, v: &str| {
            StoreError::Corrupt(format!(
                "segment {} of {}: bad {what} {v:?}",
                self.idx, self.reservation_id
            ))
        };
        let vlan = |v: i32, what: &str| {
            u16::try_from(v)
                .ok()
                .and_then(Vlan::new)
                .ok_or_else(|| bad(what, &v.to_string()))
        };
        Ok(SegmentRecord {
            index: self.idx as u32,
            ingress_vlan: vlan(self.ingress_vlan, "ingress VLAN")?,
            egress_vlan: vlan(self.egress_vlan, "egress VLAN")?,
            states: States {
                reservation: ReservationState::parse(&self.reservation_state)
                    .ok_or_else(|| bad("reservation state", &self.reservation_state))?,
                provision: ProvisionState::parse(&self.provision_state)
                    .ok_or_else(|| bad("provision state", &self.provision_state))?,
                lifecycle: LifecycleState::parse(&self.lifecycle_state)
                    .ok_or_else(|| bad("lifecycle state", &self.lifecycle_state))?,
                data_plane_active: self.data_plane_active,
            },
            updated_at: from_ms(self.updated_ms)?,
            summary: self.summary,
            domain: self.domain,
            segment_id: self.segment_id,
            series_id: self.series_id,
            ingress: self.ingress,
            egress: self.egress,
            error: None,
        })
    }
}

impl Store {
    /// The segments of circuit `id`, in order; empty if it is not a circuit across
    /// domains.
    pub fn segments(&self, id: &str) -> Result<Vec<SegmentRecord>, StoreError> {
        let mut conn = self.reader()?;
        segments::table
            .filter(segments::reservation_id.eq(id))
            .order(segments::idx)
            .select(SegmentRow::as_select())
            .load(&mut conn)?
            .into_iter()
            .map(SegmentRow::into_model)
            .collect()
    }

    /// The circuit (and segment index) that `domain`'s reservation `segment_id` is part of.
    pub fn circuit_of(
        &self,
        domain: &str,
        segment_id: &str,
    ) -> Result<Option<(String, u32)>, StoreError> {
        let mut conn = self.reader()?;
        Ok(segments::table
            .filter(segments::domain.eq(domain))
            .filter(segments::segment_id.eq(segment_id))
            .select((segments::reservation_id, segments::idx))
            .first::<(String, i32)>(&mut conn)
            .optional()?
            .map(|(id, idx)| (id, idx as u32)))
    }
}

impl Store {
    /// Segments that should be gone but whose domain has not said so: of circuits
    /// terminated or emergency-stopped here, or that never committed (aborted, timed out: say the
    /// aggregator stopped between the segments' commits and its own), while the segment
    /// was last seen live. `(circuit, segment)`, at most `limit`.
    pub fn unended_segments(&self, limit: i64) -> Result<Vec<(String, SegmentRecord)>, StoreError> {
        let mut conn = self.reader()?;
        let rows: Vec<SegmentRow> = segments::table
            .inner_join(reservations::table.on(reservations::id.eq(segments::reservation_id)))
            .filter(
                reservations::lifecycle_state
                    .eq_any([
                        LifecycleState::Terminated.as_str(),
                        // Emergency-stopped: a segment not told then ends when its
                        // domain answers again.
                        LifecycleState::Failed.as_str(),
                    ])
                    .or(reservations::committed_version.is_null().and(
                        reservations::reservation_state.ne(ReservationState::ReserveHeld.as_str()),
                    )),
            )
            .filter(segments::lifecycle_state.eq_any([
                LifecycleState::Created.as_str(),
                LifecycleState::Terminating.as_str(),
            ]))
            .filter(segments::summary.ne_all(["aborted", "timed-out"]))
            // Least recently tried first: one that keeps failing does not crowd out
            // the others.
            .order(segments::updated_ms)
            .select(SegmentRow::as_select())
            .limit(limit)
            .load(&mut conn)?;
        rows.into_iter()
            .map(|r| {
                let id = r.reservation_id.clone();
                r.into_model().map(|s| (id, s))
            })
            .collect()
    }
}

impl Writer<'_> {
    /// A new circuit across domains: its row (no bookings: each domain books its own
    /// segment), its segments and its events, in one transaction.
    pub fn insert_circuit(
        &mut self,
        r: &Reservation,
        next_deadline: Option<DateTime<Utc>>,
        segs: &[SegmentRecord],
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = write_tx(&mut self.conn, |conn| {
            diesel::insert_into(reservations::table)
                .values(ReservationRow::from_model(r, next_deadline))
                .execute(conn)?;
            for s in segs {
                diesel::insert_into(segments::table)
                    .values(SegmentRow::from_model(&r.id, s))
                    .execute(conn)?;
            }
            insert_events(conn, &r.id, changes, now)
        })?;
        self.committed_one();
        Ok(events)
    }

    /// A recurring circuit: its series row, each occurrence's row (no bookings) with
    /// its segments, and their events, in one transaction.
    pub fn insert_circuit_series(
        &mut self,
        series: &Series,
        held: &[HeldOccurrence],
        segs: &[Vec<SegmentRecord>],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = write_tx(&mut self.conn, |conn| {
            diesel::insert_into(series::table)
                .values(SeriesRow::from_model(series))
                .execute(conn)?;
            for (h, segs) in held.iter().zip(segs) {
                diesel::insert_into(reservations::table)
                    .values(ReservationRow::from_model(&h.reservation, h.next_deadline))
                    .execute(conn)?;
                for s in segs {
                    diesel::insert_into(segments::table)
                        .values(SegmentRow::from_model(&h.reservation.id, s))
                        .execute(conn)?;
                }
            }
            let mut events = Vec::new();
            for h in held {
                events.extend(insert_events(conn, &h.reservation.id, &h.changes, now)?);
            }
            Ok::<_, StoreError>(events)
        })?;
        self.committed_one();
        Ok(events)
    }

    /// A segment's states as its domain just reported them, and events for the circuit
    /// (say, what changed in that segment), in one transaction.
    pub fn update_segment(
        &mut self,
        circuit: &str,
        index: u32,
        states: States,
        summary: &str,
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = write_tx(&mut self.conn, |conn| {
            diesel::update(segments::table.find((circuit, index as i32)))
                .set((
                    segments::reservation_state.eq(states.reservation.as_str()),
                    segments::provision_state.eq(states.provision.as_str()),
                    segments::lifecycle_state.eq(states.lifecycle.as_str()),
                    segments::data_plane_active.eq(states.data_plane_active),
                    segments::summary.eq(summary),
                    segments::updated_ms.eq(ms(now)),
                ))
                .execute(conn)?;
            insert_events(conn, circuit, changes, now)
        })?;
        self.committed_one();
        Ok(events)
    }
}
