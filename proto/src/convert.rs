//! Model ⇄ wire. Every fallible conversion names the field it could not use.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use sluice_model as m;
use sluice_model::{Error, Mbps, StpRequest, TimeWindow, VlanSet};

use crate::v1;

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A wire time, truncated to the millisecond.
///
/// Protobuf allows nanos in 0..=999,999,999 only; chrono would also take 1e9.. as a leap
/// second, so that range is checked here. Sluice keeps times to the millisecond (the
/// store's resolution): truncating on the way in makes what a call answers equal to what
/// is stored, and the in-memory index agree with the store.
pub fn from_timestamp(ts: &Timestamp, field: &str) -> Result<DateTime<Utc>, Error> {
    u32::try_from(ts.nanos)
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .and_then(|n| DateTime::from_timestamp(ts.seconds, n - n % 1_000_000))
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!("{}s {}ns is not a valid time", ts.seconds, ts.nanos),
            )
        })
}

pub(crate) fn opt_timestamp(
    ts: &Option<Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    ts.as_ref().map(|t| from_timestamp(t, field)).transpose()
}

fn end_point(stp: &str, vlan: &str, field: &str) -> Result<StpRequest, Error> {
    if stp.is_empty() {
        return Err(Error::missing(field));
    }
    let mut req = StpRequest::parse(stp).map_err(|mut e| {
        e.field = Some(field.to_string());
        e
    })?;
    if !vlan.is_empty() {
        let vlan_field = format!("{field}_vlan");
        req.vlans = Some(VlanSet::parse(vlan).map_err(|mut e| {
            e.field = Some(vlan_field);
            e
        })?);
    }
    Ok(req)
}

pub fn capacity(mbps: i64, field: &str) -> Result<Mbps, Error> {
    if mbps <= 0 {
        return Err(Error::invalid(
            field,
            format!("capacity must be a positive number of Mb/s, got {mbps}"),
        ));
    }
    Ok(Mbps(mbps as u64))
}

/// Z→A bandwidth: zero is allowed (a one-way circuit).
pub fn reverse_capacity(mbps: i64, field: &str) -> Result<Mbps, Error> {
    if mbps < 0 {
        return Err(Error::invalid(
            field,
            format!("capacity must not be negative, got {mbps}"),
        ));
    }
    Ok(Mbps(mbps as u64))
}

/// The request's criteria; an absent start means `now`.
pub fn criteria(c: &v1::Criteria, now: DateTime<Utc>) -> Result<m::Criteria, Error> {
    let src = end_point(&c.src, &c.src_vlan, "src")?;
    let dst = end_point(&c.dst, &c.dst_vlan, "dst")?;
    let bw = capacity(c.capacity_mbps, "capacity_mbps")?;
    let bw_reverse = c
        .reverse_capacity_mbps
        .map(|r| reverse_capacity(r, "reverse_capacity_mbps"))
        .transpose()?;
    let start = opt_timestamp(&c.start, "start")?.unwrap_or(now);
    let end = opt_timestamp(&c.end, "end")?.ok_or_else(|| Error::missing("end"))?;
    let window = TimeWindow::new(start, end)?;
    let criteria = m::Criteria {
        src,
        dst,
        bw,
        bw_reverse,
        window,
        ero: m::Ero {
            include: c.ero_include.clone(),
            exclude: c.ero_exclude.clone(),
        },
        description: c.description.clone(),
        auto_provision: c.provision_mode() == v1::ProvisionMode::Automatic,
    };
    criteria.check(now)?;
    Ok(criteria)
}

pub fn reservation_state(s: m::ReservationState) -> v1::ReservationState {
    use m::ReservationState as S;
    use v1::ReservationState as P;
    match s {
        S::ReserveStart => P::ReserveStart,
        S::ReserveChecking => P::ReserveChecking,
        S::ReserveHeld => P::ReserveHeld,
        S::ReserveCommitting => P::ReserveCommitting,
        S::ReserveFailed => P::ReserveFailed,
        S::ReserveAborting => P::ReserveAborting,
        S::ReserveTimeout => P::ReserveTimeout,
    }
}

pub fn provision_state(s: m::ProvisionState) -> v1::ProvisionState {
    use m::ProvisionState as S;
    use v1::ProvisionState as P;
    match s {
        S::Released => P::Released,
        S::Provisioning => P::Provisioning,
        S::Provisioned => P::Provisioned,
        S::Releasing => P::Releasing,
    }
}

pub fn lifecycle_state(s: m::LifecycleState) -> v1::LifecycleState {
    use m::LifecycleState as S;
    use v1::LifecycleState as P;
    match s {
        S::Created => P::Created,
        S::Failed => P::Failed,
        S::PassedEndTime => P::PassedEndTime,
        S::Terminating => P::Terminating,
        S::Terminated => P::Terminated,
    }
}

/// The model's name for a wire state ("ReserveHeld", "Provisioned", ...), as people and
/// scripts see it.
pub fn reservation_state_name(s: v1::ReservationState) -> &'static str {
    m::ReservationState::ALL
        .iter()
        .find(|m| reservation_state(**m) == s)
        .map_or("Unspecified", |m| m.as_str())
}

pub fn provision_state_name(s: v1::ProvisionState) -> &'static str {
    m::ProvisionState::ALL
        .iter()
        .find(|m| provision_state(**m) == s)
        .map_or("Unspecified", |m| m.as_str())
}

pub fn lifecycle_state_name(s: v1::LifecycleState) -> &'static str {
    m::LifecycleState::ALL
        .iter()
        .find(|m| lifecycle_state(**m) == s)
        .map_or("Unspecified", |m| m.as_str())
}

pub fn states(s: &m::States, summary: &str) -> v1::States {
    v1::States {
        reservation: reservation_state(s.reservation) as i32,
        provision: provision_state(s.provision) as i32,
        lifecycle: lifecycle_state(s.lifecycle) as i32,
        data_plane_active: s.data_plane_active,
        summary: summary.to_string(),
    }
}

/// The model's states from a peer's reply (`field` names where they were missing).
pub fn states_from_wire(s: &Option<v1::States>, field: &str) -> Result<m::States, Error> {
    let s = s.as_ref().ok_or_else(|| Error::missing(field))?;
    let bad = || Error::invalid(field, format!("unknown states {s:?}"));
    Ok(m::States {
        reservation: m::ReservationState::ALL
            .iter()
            .copied()
            .find(|m| reservation_state(*m) as i32 == s.reservation)
            .ok_or_else(bad)?,
        provision: m::ProvisionState::ALL
            .iter()
            .copied()
            .find(|m| provision_state(*m) as i32 == s.provision)
            .ok_or_else(bad)?,
        lifecycle: m::LifecycleState::ALL
            .iter()
            .copied()
            .find(|m| lifecycle_state(*m) as i32 == s.lifecycle)
            .ok_or_else(bad)?,
        data_plane_active: s.data_plane_active,
    })
}

/// A circuit across domains: the circuit as a reservation, with its segments.
pub fn circuit(r: &m::Reservation, segments: &[m::CircuitSegment]) -> v1::Reservation {
    let mut wire = reservation(r);
    wire.segments = segments.iter().map(segment).collect();
    wire
}

/// A recurring circuit across domains: each occurrence with its segments.
pub fn circuit_series(
    s: &m::Series,
    occurrences: &[(m::Reservation, Vec<m::CircuitSegment>)],
) -> v1::Series {
    let rs: Vec<m::Reservation> = occurrences.iter().map(|(r, _)| r.clone()).collect();
    let mut wire = series(s, &rs);
    for (w, (_, segs)) in wire.occurrences.iter_mut().zip(occurrences) {
        w.segments = segs.iter().map(segment).collect();
    }
    wire
}

pub fn segment(s: &m::CircuitSegment) -> v1::Segment {
    v1::Segment {
        domain: s.domain.clone(),
        id: s.segment_id.clone(),
        ingress: s.ingress.clone(),
        ingress_vlan: u32::from(s.ingress_vlan.id()),
        egress: s.egress.clone(),
        egress_vlan: u32::from(s.egress_vlan.id()),
        states: Some(states(&s.states, &s.summary)),
        error: s.error.clone().unwrap_or_default(),
        series_id: s.series_id.clone().unwrap_or_default(),
    }
}

/// One word for a segment's states, as `Reservation::summary` gives for a reservation
/// (a segment's committed version is not known to the aggregator: a segment at
/// ReserveStart that is neither terminated nor failed counts as committed).
pub fn segment_summary(s: &m::States) -> &'static str {
    use m::{LifecycleState as L, ProvisionState as P, ReservationState as R};
    match (s.lifecycle, s.reservation) {
        (L::Terminated, _) => "terminated",
        (L::Terminating, _) => "terminating",
        (L::Failed, _) => "failed",
        (L::PassedEndTime, _) => "ended",
        (L::Created, R::ReserveHeld) => "held",
        (L::Created, R::ReserveTimeout) => "timed-out",
        (L::Created, R::ReserveFailed) => "reserve-failed",
        (L::Created, R::ReserveChecking) => "checking",
        (L::Created, R::ReserveCommitting) => "committing",
        (L::Created, R::ReserveAborting) => "aborting",
        (L::Created, R::ReserveStart) if s.data_plane_active => "active",
        (L::Created, R::ReserveStart) if s.provision == P::Provisioned => "provisioned",
        (L::Created, R::ReserveStart) => "committed",
    }
}

pub fn reservation(r: &m::Reservation) -> v1::Reservation {
    v1::Reservation {
        id: r.id.clone(),
        owner: r.owner.clone(),
        description: r.description.clone(),
        src: r.src.stp.to_string(),
        src_vlan: r.src.vlan.id() as u32,
        dst: r.dst.stp.to_string(),
        dst_vlan: r.dst.vlan.id() as u32,
        capacity_mbps: r.bw.0,
        start: Some(timestamp(r.window.start)),
        end: Some(timestamp(r.window.end)),
        path: r.path.iter().map(path_hop).collect(),
        version: r.version,
        committed_version: r.committed_version,
        states: Some(states(&r.states, r.summary())),
        provision_mode: if r.auto_provision {
            v1::ProvisionMode::Automatic
        } else {
            v1::ProvisionMode::Manual
        } as i32,
        hold_expires_at: r.hold_expires_at.map(timestamp),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        ero_include: r.ero.include.clone(),
        ero_exclude: r.ero.exclude.clone(),
        reverse_capacity_mbps: r.bw_reverse.0,
        series_id: r.series.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
        occurrence: r.series.as_ref().map_or(0, |s| s.occurrence),
        missed: r.missed,
        segments: Vec::new(),
        data_plane: Vec::new(),
    }
}

/// Per node: whether its agent has the circuit, and why not.
pub fn data_plane(nodes: &[sluice_model::dataplane::NodeReport]) -> Vec<v1::NodeDataPlane> {
    use sluice_model::dataplane::NodeState;
    nodes
        .iter()
        .map(|n| v1::NodeDataPlane {
            node: n.node.clone(),
            applied: n.state == Some(NodeState::Applied),
            error: n.error.clone(),
            state: n.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
            updated_at: n.updated_at.map(timestamp),
        })
        .collect()
}

/// What a modify asks for: new A→Z and Z→A rates, start and end, each absent to keep.
pub type ModifyFields = (
    Option<Mbps>,
    Option<Mbps>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

pub fn modify_fields(m: &v1::ModifyRequest) -> Result<ModifyFields, Error> {
    let bw = m
        .capacity_mbps
        .map(|c| capacity(c, "capacity_mbps"))
        .transpose()?;
    let rev = m
        .reverse_capacity_mbps
        .map(|c| reverse_capacity(c, "reverse_capacity_mbps"))
        .transpose()?;
    Ok((
        bw,
        rev,
        opt_timestamp(&m.start, "start")?,
        opt_timestamp(&m.end, "end")?,
    ))
}

/// Criteria as a peer domain is asked for its segment (no ERO: its path is its own).
pub fn criteria_to_wire(c: &m::Criteria) -> v1::Criteria {
    let vlans = |v: &Option<VlanSet>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    v1::Criteria {
        src: c.src.stp.to_string(),
        dst: c.dst.stp.to_string(),
        src_vlan: vlans(&c.src.vlans),
        dst_vlan: vlans(&c.dst.vlans),
        capacity_mbps: c.bw.0 as i64,
        reverse_capacity_mbps: c.bw_reverse.map(|b| b.0 as i64),
        start: Some(timestamp(c.window.start)),
        end: Some(timestamp(c.window.end)),
        ero_include: Vec::new(),
        ero_exclude: Vec::new(),
        description: c.description.clone(),
        provision_mode: if c.auto_provision {
            v1::ProvisionMode::Automatic
        } else {
            v1::ProvisionMode::Manual
        } as i32,
    }
}

/// The criteria of every occurrence of a series: as `criteria`, with a window that
/// stands in until the recurrence gives each occurrence its own.
pub fn series_criteria(c: &v1::Criteria, now: DateTime<Utc>) -> Result<m::Criteria, Error> {
    let stand_in = v1::Criteria {
        start: Some(timestamp(now)),
        end: Some(timestamp(now + chrono::TimeDelta::seconds(1))),
        ..c.clone()
    };
    criteria(&stand_in, now).map_err(|e| e.within("criteria"))
}

pub fn recurrence(r: &v1::Recurrence, now: DateTime<Utc>) -> Result<m::Recurrence, Error> {
    let rule = match &r.rule {
        None => return Err(Error::missing("recurrence.rule")),
        Some(v1::recurrence::Rule::Ical(text)) => m::RecurrenceRule::ICalendar(text.clone()),
        Some(v1::recurrence::Rule::Cron(c)) => m::RecurrenceRule::Cron {
            expr: c.expression.clone(),
            tz: c.time_zone.clone(),
            from: opt_timestamp(&c.from, "recurrence.cron.from")?.unwrap_or(now),
            count: c.count,
            until: opt_timestamp(&c.until, "recurrence.cron.until")?,
            exdates: c
                .skip_dates
                .iter()
                .map(|d| {
                    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                        Error::invalid(
                            "recurrence.cron.skip_dates",
                            format!("{d:?} is not YYYY-MM-DD"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        },
    };
    if r.duration_seconds <= 0 {
        return Err(Error::invalid(
            "recurrence.duration_seconds",
            "each occurrence must last a positive number of seconds",
        ));
    }
    Ok(m::Recurrence {
        rule,
        duration: chrono::TimeDelta::seconds(r.duration_seconds),
    })
}

pub fn recurrence_to_wire(r: &m::Recurrence) -> v1::Recurrence {
    v1::Recurrence {
        rule: Some(match &r.rule {
            m::RecurrenceRule::ICalendar(text) => v1::recurrence::Rule::Ical(text.clone()),
            m::RecurrenceRule::Cron {
                expr,
                tz,
                from,
                count,
                until,
                exdates,
            } => v1::recurrence::Rule::Cron(v1::CronRule {
                expression: expr.clone(),
                time_zone: tz.clone(),
                from: Some(timestamp(*from)),
                count: *count,
                until: until.map(timestamp),
                skip_dates: exdates.iter().map(|d| d.to_string()).collect(),
            }),
        }),
        duration_seconds: r.duration.num_seconds(),
    }
}

pub fn series(s: &m::Series, occurrences: &[m::Reservation]) -> v1::Series {
    v1::Series {
        id: s.id.clone(),
        owner: s.owner.clone(),
        description: s.description.clone(),
        recurrence: Some(recurrence_to_wire(&s.recurrence)),
        time_zone: s.recurrence.rule.time_zone(),
        same_path: s.same_path,
        skipped: s
            .skipped
            .iter()
            .map(|k| v1::SkippedOccurrence {
                number: k.number,
                start: Some(timestamp(k.window.start)),
                end: Some(timestamp(k.window.end)),
                code: k.code.clone(),
                reason: k.reason.clone(),
            })
            .collect(),
        occurrences: occurrences.iter().map(reservation).collect(),
        created_at: Some(timestamp(s.created_at)),
    }
}

pub fn path_hop(h: &m::PathHop) -> v1::PathHop {
    v1::PathHop {
        link: h.link.clone(),
        from: h.from.clone(),
        to: h.to.clone(),
        vlan: h.vlan.map_or(0, |v| v.id() as u32),
    }
}

pub fn candidate(c: &m::PathCandidate) -> v1::Candidate {
    v1::Candidate {
        path: c.path.iter().map(path_hop).collect(),
        metric: c.metric,
        src_vlan: c.src_vlan.id() as u32,
        dst_vlan: c.dst_vlan.id() as u32,
        available_mbps: c.available.0,
        bottlenecks: c.bottlenecks.clone(),
    }
}

pub fn path_offers(o: &m::PathOffers) -> v1::ComputePathsReply {
    v1::ComputePathsReply {
        best: Some(candidate(&o.best)),
        alternatives: o.alternatives.iter().map(candidate).collect(),
        widest: o.widest.as_ref().map(candidate),
        requested_mbps: o.requested.0,
        reverse_requested_mbps: o.requested_reverse.0,
    }
}

pub fn event(seq: u64, reservation_id: &str, c: &m::Change) -> v1::Event {
    v1::Event {
        seq,
        reservation_id: reservation_id.to_string(),
        machine: c.machine.as_str().to_string(),
        from: c.from.clone(),
        to: c.to.clone(),
        at: Some(timestamp(c.effective_at)),
        detail: c.detail.clone(),
    }
}

pub fn topology(t: &m::Topology) -> v1::TopologyReply {
    v1::TopologyReply {
        domain: t.domain.clone(),
        description: t.description.clone(),
        nodes: t
            .nodes()
            .iter()
            .map(|n| v1::Node {
                id: n.id.clone(),
                name: n.name.clone(),
                vlan_translation: n.vlan_translation,
                ports: n
                    .ports
                    .iter()
                    .map(|&p| {
                        let port = t.port(p);
                        v1::Port {
                            name: port.name.clone(),
                            vlans: port.vlans.to_string(),
                            capacity_mbps: port.capacity.0,
                            peer: port
                                .peer
                                .as_ref()
                                .map(|p| p.stp.to_string())
                                .unwrap_or_default(),
                            link: port.link.map(|l| t.link(l).id.clone()).unwrap_or_default(),
                        }
                    })
                    .collect(),
            })
            .collect(),
        links: t
            .links()
            .iter()
            .map(|l| v1::Link {
                id: l.id.clone(),
                a: t.port_local_name(l.a),
                b: t.port_local_name(l.b),
                capacity_ab_mbps: l.capacity_ab.0,
                capacity_ba_mbps: l.capacity_ba.0,
                metric: l.metric,
            })
            .collect(),
    }
}

pub fn audit_entry(r: &m::AuditRecord) -> v1::AuditEntry {
    v1::AuditEntry {
        seq: r.seq,
        at: Some(timestamp(r.at)),
        who: r.who.clone(),
        action: r.action.clone(),
        target: r.target.clone(),
        result: r.result.clone(),
        detail: r.detail.clone(),
    }
}

pub fn measurement(x: &m::Measurement) -> v1::Measurement {
    let f = &x.figures;
    v1::Measurement {
        seq: x.seq,
        reservation_id: x.reservation_id.clone(),
        series_id: x.series_id.clone().unwrap_or_default(),
        occurrence: x.occurrence.unwrap_or(0),
        at: Some(timestamp(x.at)),
        kind: x.kind.as_str().to_string(),
        who: x.who.clone(),
        booked_mbps: x.booked.0,
        duration_ms: x.duration_ms,
        probes_sent: f.probes_sent,
        probes_received: f.probes_received,
        loss: f.loss(),
        rtt_min_us: f.rtt_min_us,
        rtt_avg_us: f.rtt_avg_us,
        rtt_max_us: f.rtt_max_us,
        forward_avg_us: f.forward_avg_us,
        backward_avg_us: f.backward_avg_us,
        jitter_us: f.jitter_us,
        throughput_mbps: f.throughput_mbps,
        ip_throughput_mbps: f.ip_throughput_mbps,
        min_throughput_ratio: x.thresholds.min_throughput_ratio,
        max_loss: x.thresholds.max_loss,
        max_rtt_ms: x.thresholds.max_rtt_ms,
        verdict: x.verdict.as_str().to_string(),
        reasons: x.reasons.clone(),
    }
}

pub fn domain_status(d: &m::DomainStatus) -> v1::DomainStatus {
    use m::AgentHealth;
    v1::DomainStatus {
        domain: d.domain.clone(),
        segment_id: d.segment_id.clone(),
        states: Some(states(&d.states, &d.summary)),
        shared: d.shared.as_str().to_string(),
        error: String::new(),
        nodes: d
            .nodes
            .iter()
            .map(|n| v1::NodeStatus {
                node: n.report.node.clone(),
                state: n
                    .report
                    .state
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                error: n.report.error.clone(),
                agent: n.agent.as_str().to_string(),
                agent_error: match &n.agent {
                    AgentHealth::Unreachable(why) => why.clone(),
                    _ => String::new(),
                },
                counters: n.counters.map(|(az, za)| v1::CircuitCounters {
                    id: String::new(),
                    bytes_az: az.bytes,
                    packets_az: az.packets,
                    drops_az: az.drops,
                    bytes_za: za.bytes,
                    packets_za: za.packets,
                    drops_za: za.drops,
                }),
            })
            .collect(),
        last_measurement: d.last_measurement.as_ref().map(measurement),
    }
}

/// A booking's check at each start, checked field by field (`verify_each.*`).
pub fn verify_each(v: &v1::VerifyEach) -> Result<m::VerifyEach, Error> {
    let d = m::VerifyEach::default();
    let duration_ms = v.duration_ms.map_or(d.duration_ms, u64::from);
    if duration_ms > 60_000 {
        return Err(Error::invalid(
            "verify_each.duration_ms",
            "a check runs at most 60 s",
        ));
    }
    if v.probes > 10_000 {
        return Err(Error::invalid(
            "verify_each.probes",
            "a check sends at most 10000 probes",
        ));
    }
    let as_request = v1::VerifyRequest {
        min_throughput_ratio: v.min_throughput_ratio,
        max_loss: v.max_loss,
        max_rtt_ms: v.max_rtt_ms,
        ..Default::default()
    };
    let thresholds = thresholds(&as_request).map_err(|mut e| {
        e.field = e.field.map(|f| format!("verify_each.{f}"));
        e
    })?;
    Ok(m::VerifyEach {
        duration_ms,
        probes: if v.probes == 0 { d.probes } else { v.probes },
        thresholds,
    })
}

/// A verify request's thresholds, checked (each a fraction or a positive delay).
pub fn thresholds(r: &v1::VerifyRequest) -> Result<m::Thresholds, Error> {
    let d = m::Thresholds::default();
    let fraction = |v: Option<f64>, field: &str, default: f64| match v {
        None => Ok(default),
        Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Some(x) => Err(Error::invalid(
            field,
            format!("{x} is not a fraction between 0 and 1 (0.95 is 95 %)"),
        )),
    };
    Ok(m::Thresholds {
        min_throughput_ratio: fraction(
            r.min_throughput_ratio,
            "min_throughput_ratio",
            d.min_throughput_ratio,
        )?,
        max_loss: fraction(r.max_loss, "max_loss", d.max_loss)?,
        max_rtt_ms: match r.max_rtt_ms {
            Some(x) if !(x > 0.0 && x.is_finite()) => {
                return Err(Error::invalid(
                    "max_rtt_ms",
                    format!("{x} is not a positive number of milliseconds"),
                ));
            }
            other => other,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::ErrorCode;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn good() -> v1::Criteria {
        v1::Criteria {
            src: "d:a:p0?vlan=100".into(),
            dst: "d:b:p0".into(),
            dst_vlan: "100-120".into(),
            capacity_mbps: 100,
            end: Some(timestamp(now() + chrono::TimeDelta::hours(1))),
            ..Default::default()
        }
    }

    #[test]
    fn converts_a_good_request() {
        let c = criteria(&good(), now()).unwrap();
        assert_eq!(c.window.start, now(), "absent start is now");
        assert_eq!(c.src.vlans.unwrap().to_string(), "100");
        assert_eq!(c.dst.vlans.unwrap().to_string(), "100-120");
        assert!(c.auto_provision, "automatic is the default");
    }

    #[test]
    fn times_are_truncated_to_the_millisecond() {
        let t = from_timestamp(
            &Timestamp {
                seconds: 5,
                nanos: 123_456_789,
            },
            "t",
        )
        .unwrap();
        assert_eq!(t, DateTime::from_timestamp(5, 123_000_000).unwrap());
        assert!(
            from_timestamp(
                &Timestamp {
                    seconds: 59,
                    nanos: 1_000_000_000
                },
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn bad_fields_are_named() {
        type Edit = fn(&mut v1::Criteria);
        let cases: Vec<(Edit, ErrorCode, &str)> = vec![
            (|c| c.src.clear(), ErrorCode::MissingParameter, "src"),
            (|c| c.dst = "nonsense".into(), ErrorCode::UnknownStp, "dst"),
            (
                |c| c.src_vlan = "5000".into(),
                ErrorCode::InvalidLabelFormat,
                "src_vlan",
            ),
            (
                |c| c.capacity_mbps = 0,
                ErrorCode::InvalidParameter,
                "capacity_mbps",
            ),
            (
                |c| c.capacity_mbps = -5,
                ErrorCode::InvalidParameter,
                "capacity_mbps",
            ),
            (|c| c.end = None, ErrorCode::MissingParameter, "end"),
            (
                |c| c.end = Some(timestamp(now() - chrono::TimeDelta::hours(1))),
                ErrorCode::InvalidParameter,
                "end",
            ),
            (
                |c| c.start = Some(timestamp(now() - chrono::TimeDelta::hours(2))),
                ErrorCode::InvalidParameter,
                "start",
            ),
            (
                |c| {
                    c.start = Some(Timestamp {
                        seconds: 0,
                        nanos: -1,
                    })
                },
                ErrorCode::InvalidParameter,
                "start",
            ),
            // A leap second in chrono's spelling is not a protobuf time.
            (
                |c| {
                    c.end = Some(Timestamp {
                        seconds: 1_800_003_599,
                        nanos: 1_500_000_000,
                    })
                },
                ErrorCode::InvalidParameter,
                "end",
            ),
        ];
        for (i, (edit, code, field)) in cases.into_iter().enumerate() {
            let mut c = good();
            edit(&mut c);
            let e = criteria(&c, now()).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                (code, Some(field)),
                "case {i}: {e}"
            );
        }
    }
}
