//! Row structs and their conversion to and from the model.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use sluice_model::{
    Change, Endpoint, Ero, LifecycleState, Machine, Mbps, PathHop, ProvisionState, Recurrence,
    RecurrenceRule, Reservation, ReservationState, Series, SeriesRef, SkippedOccurrence, States,
    Stp, TimeWindow, Vlan,
};

use super::schema::{events, reservations, series};
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
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
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
    pub series_id: Option<String>,
    pub occurrence: Option<i32>,
    pub missed: bool,
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
            series_id: r.series.as_ref().map(|s| s.id.clone()),
            occurrence: r.series.as_ref().map(|s| s.occurrence as i32),
            missed: r.missed,
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
            series: match (self.series_id, self.occurrence) {
                (Some(id), Some(n)) => Some(SeriesRef {
                    id,
                    occurrence: n as u32,
                }),
                _ => None,
            },
            missed: self.missed,
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
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
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

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = series)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub struct SeriesRow {
    pub id: String,
    pub owner: String,
    pub description: String,
    pub rule: String,
    pub duration_ms: i64,
    pub same_path: bool,
    pub skipped: String,
    pub created_ms: i64,
}

fn corrupt_series(id: &str, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("series {id}: bad {what} {value:?}"))
}

/// The rule as one text: its kind on the first line, then its parts a line each.
fn rule_text(rule: &RecurrenceRule) -> String {
    match rule {
        RecurrenceRule::ICalendar(text) => format!("ical\n{}", text.trim()),
        RecurrenceRule::Cron {
            expr,
            tz,
            from,
            count,
            until,
            exdates,
        } => {
            let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            let dates: Vec<String> = exdates.iter().map(|d| d.to_string()).collect();
            format!(
                "cron\n{expr}\n{tz}\n{}\n{}\n{}\n{}",
                ms(*from),
                opt(count.map(i64::from)),
                opt(until.map(ms)),
                dates.join(",")
            )
        }
    }
}

fn rule_of(id: &str, text: &str) -> Result<RecurrenceRule, StoreError> {
    let bad = || corrupt_series(id, "rule", text);
    let (kind, rest) = text.split_once('\n').ok_or_else(bad)?;
    match kind {
        "ical" => Ok(RecurrenceRule::ICalendar(rest.to_string())),
        "cron" => {
            let parts: Vec<&str> = rest.split('\n').collect();
            let [expr, tz, from, count, until, dates] = parts[..] else {
                return Err(bad());
            };
            let num = |v: &str| -> Result<Option<i64>, StoreError> {
                match v {
                    "-" => Ok(None),
                    v => v.parse().map(Some).map_err(|_| bad()),
                }
            };
            Ok(RecurrenceRule::Cron {
                expr: expr.to_string(),
                tz: tz.to_string(),
                from: from_ms(from.parse().map_err(|_| bad())?)?,
                count: num(count)?.map(|c| c as u32),
                until: num(until)?.map(from_ms).transpose()?,
                exdates: dates
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| d.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?,
            })
        }
        _ => Err(bad()),
    }
}

impl SeriesRow {
    pub fn from_model(s: &Series) -> SeriesRow {
        SeriesRow {
            id: s.id.clone(),
            owner: s.owner.clone(),
            description: s.description.clone(),
            rule: rule_text(&s.recurrence.rule),
            duration_ms: s.recurrence.duration.num_milliseconds(),
            same_path: s.same_path,
            skipped: s
                .skipped
                .iter()
                .map(|k| {
                    // The reason is free text: one line of it.
                    let reason = k.reason.replace('\n', " ");
                    format!(
                        "{} {} {} {} {reason}",
                        k.number,
                        ms(k.window.start),
                        ms(k.window.end),
                        k.code
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            created_ms: ms(s.created_at),
        }
    }

    pub fn into_model(self) -> Result<Series, StoreError> {
        let id = self.id.clone();
        let skipped = self
            .skipped
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let bad = || corrupt_series(&id, "skipped occurrence", l);
                let mut parts = l.splitn(5, ' ');
                let (Some(n), Some(a), Some(b), Some(code)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                let t = |v: &str| v.parse::<i64>().map_err(|_| bad()).and_then(from_ms);
                Ok(SkippedOccurrence {
                    number: n.parse().map_err(|_| bad())?,
                    window: TimeWindow::new(t(a)?, t(b)?).map_err(|_| bad())?,
                    code: code.to_string(),
                    reason: parts.next().unwrap_or("").to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Series {
            recurrence: Recurrence {
                rule: rule_of(&id, &self.rule)?,
                duration: chrono::TimeDelta::milliseconds(self.duration_ms),
            },
            id: self.id,
            owner: self.owner,
            description: self.description,
            same_path: self.same_path,
            skipped,
            created_at: from_ms(self.created_ms)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeDelta};

    #[test]
    fn a_series_row_round_trips_both_kinds_of_rule() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let cron = RecurrenceRule::Cron {
            expr: "0 14 * * 2".into(),
            tz: "Europe/Rome".into(),
            from: t(0),
            count: None,
            until: Some(t(86_400 * 70)),
            exdates: vec![NaiveDate::from_ymd_opt(2027, 1, 12).unwrap()],
        };
        let ical = RecurrenceRule::ICalendar(
            "DTSTART;TZID=Europe/Rome:20261201T140000\nRRULE:FREQ=WEEKLY;COUNT=10\nEXDATE;TZID=Europe/Rome:20261208T140000".into(),
        );
        for rule in [cron, ical] {
            let s = Series {
                id: "d-1".into(),
                owner: "alice".into(),
                description: "weekly".into(),
                recurrence: Recurrence {
                    rule,
                    duration: TimeDelta::hours(4),
                },
                same_path: false,
                skipped: vec![SkippedOccurrence {
                    number: 7,
                    window: TimeWindow::new(t(100), t(200)).unwrap(),
                    code: "00705".into(),
                    reason: "requested 1000, available 100\non a-b".into(),
                }],
                created_at: t(0),
            };
            let back = SeriesRow::from_model(&s).into_model().unwrap();
            assert_eq!(back.recurrence, s.recurrence);
            assert_eq!(
                back.skipped[0].reason,
                "requested 1000, available 100 on a-b"
            );
            assert_eq!(
                (back.skipped[0].number, back.skipped[0].window),
                (7, s.skipped[0].window)
            );
        }
        let mut bad = SeriesRow::from_model(&Series {
            id: "d-2".into(),
            owner: String::new(),
            description: String::new(),
            recurrence: Recurrence {
                rule: RecurrenceRule::ICalendar("x".into()),
                duration: TimeDelta::hours(1),
            },
            same_path: true,
            skipped: vec![],
            created_at: t(0),
        });
        bad.rule = "weekly\nsometimes".into();
        assert!(matches!(bad.into_model(), Err(StoreError::Corrupt(_))));
    }
}
