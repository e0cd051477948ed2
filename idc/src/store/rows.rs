//! Row structs and their conversion to and from the model.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use sluice_model::{
    Change, Endpoint, Ero, LifecycleState, Machine, Mbps, PathHop, ProvisionState, Reservation,
    ReservationState, States, Stp, TimeWindow, Vlan,
};

use super::schema::{events, reservations};
use super::{EventRecord, StoreError};

/// Milliseconds since the epoch: the store's (and the IDC's) time resolution.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt(format!("time {v} ms is out of range")))
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = reservations)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_null = true)]
pub struct ReservationRow {
    pub id: String,
    pub owner: String,
    pub description: String,
    pub src_stp: String,
    pub src_vlan: i32,
    pub dst_stp: String,
    pub dst_vlan: i32,
    pub bw_mbps: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub ero_include: String,
    pub ero_exclude: String,
    pub path: String,
    pub version: i32,
    pub committed_version: Option<i32>,
    pub reservation_state: String,
    pub provision_state: String,
    pub lifecycle_state: String,
    pub data_plane_active: bool,
    pub auto_provision: bool,
    pub hold_expires_ms: Option<i64>,
    pub next_deadline_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Z→A when it differs from `bw_mbps`.
    pub bw_rev_mbps: Option<i64>,
}

fn corrupt(id: &str, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("reservation {id}: bad {what} {value:?}"))
}

impl ReservationRow {
    pub fn from_model(r: &Reservation, next_deadline: Option<DateTime<Utc>>) -> ReservationRow {
        ReservationRow {
            id: r.id.clone(),
            owner: r.owner.clone(),
            description: r.description.clone(),
            src_stp: r.src.stp.to_string(),
            src_vlan: r.src.vlan.id() as i32,
            dst_stp: r.dst.stp.to_string(),
            dst_vlan: r.dst.vlan.id() as i32,
            bw_mbps: r.bw.0 as i64,
            start_ms: ms(r.window.start),
            end_ms: ms(r.window.end),
            ero_include: r.ero.include.join("\n"),
            ero_exclude: r.ero.exclude.join("\n"),
            path: r
                .path
                .iter()
                .map(|h| match h.vlan {
                    Some(v) => format!("{} {} {} {v}", h.link, h.from, h.to),
                    None => format!("{} {} {}", h.link, h.from, h.to),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            version: r.version as i32,
            committed_version: r.committed_version.map(|v| v as i32),
            reservation_state: r.states.reservation.as_str().to_string(),
            provision_state: r.states.provision.as_str().to_string(),
            lifecycle_state: r.states.lifecycle.as_str().to_string(),
            data_plane_active: r.states.data_plane_active,
            auto_provision: r.auto_provision,
            hold_expires_ms: r.hold_expires_at.map(ms),
            next_deadline_ms: next_deadline.map(ms),
            created_ms: ms(r.created_at),
            updated_ms: ms(r.updated_at),
            bw_rev_mbps: (r.bw_reverse != r.bw).then_some(r.bw_reverse.0 as i64),
        }
    }

    pub fn into_model(self) -> Result<Reservation, StoreError> {
        let id = self.id.clone();
        let stp = |s: &str| Stp::parse(s).map_err(|_| corrupt(&id, "STP", s));
        let vlan = |v: i32| {
            u16::try_from(v)
                .ok()
                .and_then(Vlan::new)
                .ok_or_else(|| corrupt(&id, "VLAN", &v.to_string()))
        };
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        };
        let path = self
            .path
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.split(' ');
                let hop = match (parts.next(), parts.next(), parts.next()) {
                    (Some(link), Some(from), Some(to)) => PathHop {
                        link: link.into(),
                        from: from.into(),
                        to: to.into(),
                        vlan: None,
                    },
                    _ => return Err(corrupt(&id, "path hop", l)),
                };
                // Hops written before VLANs were kept per hop have three words.
                match parts.next() {
                    None => Ok(hop),
                    Some(v) => Ok(PathHop {
                        vlan: Some(vlan(v.parse().unwrap_or(-1))?),
                        ..hop
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let window =
            TimeWindow::new(from_ms(self.start_ms)?, from_ms(self.end_ms)?).map_err(|_| {
                corrupt(
                    &id,
                    "window",
                    &format!("{}..{}", self.start_ms, self.end_ms),
                )
            })?;
        Ok(Reservation {
            src: Endpoint {
                stp: stp(&self.src_stp)?,
                vlan: vlan(self.src_vlan)?,
            },
            dst: Endpoint {
                stp: stp(&self.dst_stp)?,
                vlan: vlan(self.dst_vlan)?,
            },
            bw: Mbps(self.bw_mbps as u64),
            bw_reverse: Mbps(self.bw_rev_mbps.unwrap_or(self.bw_mbps) as u64),
            window,
            ero: Ero {
                include: lines(&self.ero_include),
                exclude: lines(&self.ero_exclude),
            },
            path,
            version: self.version as u32,
            committed_version: self.committed_version.map(|v| v as u32),
            states: States {
                reservation: ReservationState::parse(&self.reservation_state)
                    .ok_or_else(|| corrupt(&id, "reservation state", &self.reservation_state))?,
                provision: ProvisionState::parse(&self.provision_state)
                    .ok_or_else(|| corrupt(&id, "provision state", &self.provision_state))?,
                lifecycle: LifecycleState::parse(&self.lifecycle_state)
                    .ok_or_else(|| corrupt(&id, "lifecycle state", &self.lifecycle_state))?,
                data_plane_active: self.data_plane_active,
            },
            auto_provision: self.auto_provision,
            hold_expires_at: self.hold_expires_ms.map(from_ms).transpose()?,
            created_at: from_ms(self.created_ms)?,
            updated_at: from_ms(self.updated_ms)?,
            owner: self.owner,
            description: self.description,
            id: self.id,
        })
    }
}

/// One resource direction booked by a reservation, with the hold expiry of its
/// reservation (`None` once committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthRow {
    pub reservation_id: String,
    pub resource: String,
    pub direction: String,
    pub bw_mbps: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub hold_expires_ms: Option<i64>,
}

/// One VLAN booked on a port or link, with the hold expiry of its reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    pub reservation_id: String,
    /// `port:node:port` or `link:id`.
    pub resource: String,
    pub vlan: i32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub hold_expires_ms: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite))]
pub struct EventRow {
    pub seq: i64,
    pub reservation_id: String,
    pub machine: String,
    pub from_state: String,
    pub to_state: String,
    pub effective_ms: i64,
    pub detail: String,
}

impl EventRow {
    pub fn into_model(self) -> Result<EventRecord, StoreError> {
        let machine = Machine::parse(&self.machine).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "event {}: bad machine {:?}",
                self.seq, self.machine
            ))
        })?;
        Ok(EventRecord {
            seq: self.seq as u64,
            reservation_id: self.reservation_id,
            change: Change {
                machine,
                from: self.from_state,
                to: self.to_state,
                effective_at: from_ms(self.effective_ms)?,
                detail: self.detail,
            },
        })
    }
}
