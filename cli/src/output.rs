//! What the CLI prints: a readable form for people, and with `--json` one JSON document
//! per command (one per line for `watch`).

use chrono::{DateTime, TimeDelta, Utc};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use sluice_model::Error;
use sluice_proto::convert::{lifecycle_state_name, provision_state_name, reservation_state_name};
use sluice_proto::v1;

use crate::time::{from_timestamp, human_duration, show};

pub fn states(r: &v1::Reservation) -> v1::States {
    r.states.clone().unwrap_or_default()
}

pub fn reservation_json(r: &v1::Reservation) -> Value {
    let s = states(r);
    json!({
        "id": r.id,
        "owner": r.owner,
        "description": r.description,
        "src": r.src,
        "src_vlan": r.src_vlan,
        "dst": r.dst,
        "dst_vlan": r.dst_vlan,
        "bw_mbps": r.capacity_mbps,
        "start": show(&r.start),
        "end": show(&r.end),
        "state": {
            "reservation": reservation_state_name(s.reservation()),
            "provision": provision_state_name(s.provision()),
            "lifecycle": lifecycle_state_name(s.lifecycle()),
            "data_plane_active": s.data_plane_active,
            "summary": s.summary,
        },
        "version": r.version,
        "committed_version": r.committed_version,
        "provision_mode": if r.provision_mode() == v1::ProvisionMode::Manual { "manual" } else { "automatic" },
        "hold_expires_at": r.hold_expires_at.as_ref().map(|_| show(&r.hold_expires_at)),
        "reverse_bw_mbps": r.reverse_capacity_mbps,
        "path": r.path.iter().map(hop_json).collect::<Vec<_>>(),
        "segments": r.segments.iter().map(segment_json).collect::<Vec<_>>(),
        "data_plane": r.data_plane.iter().map(|d| json!({
            "node": d.node,
            "applied": d.applied,
            "state": (!d.state.is_empty()).then_some(&d.state),
            "updated_at": d.updated_at.as_ref().map(|_| show(&d.updated_at)),
            "error": (!d.error.is_empty()).then_some(&d.error),
        })).collect::<Vec<_>>(),
        "ero": {"include": r.ero_include, "exclude": r.ero_exclude},
        "created_at": show(&r.created_at),
        "updated_at": show(&r.updated_at),
    })
}

fn segment_json(s: &v1::Segment) -> Value {
    let st = s.states.clone().unwrap_or_default();
    json!({
        "domain": s.domain,
        "id": s.id,
        "ingress": s.ingress,
        "ingress_vlan": s.ingress_vlan,
        "egress": s.egress,
        "egress_vlan": s.egress_vlan,
        "state": {
            "reservation": reservation_state_name(st.reservation()),
            "provision": provision_state_name(st.provision()),
            "lifecycle": lifecycle_state_name(st.lifecycle()),
            "data_plane_active": st.data_plane_active,
            "summary": st.summary,
        },
        "error": (!s.error.is_empty()).then_some(&s.error),
    })
}

/// One line per domain of a circuit across domains.
fn segments_human(r: &v1::Reservation) -> String {
    let mut out = format!(
        "  across {} domains:
",
        r.segments.len()
    );
    for (i, s) in r.segments.iter().enumerate() {
        let st = s.states.clone().unwrap_or_default();
        out += &format!(
            "    {}. {:<10} {} vlan {} → {} vlan {}  {}  ({})
",
            i + 1,
            s.domain,
            s.ingress,
            s.ingress_vlan,
            s.egress,
            s.egress_vlan,
            if s.error.is_empty() {
                st.summary.clone()
            } else {
                format!("{} (now: {})", st.summary, s.error)
            },
            s.id
        );
    }
    out
}

fn hop_json(h: &v1::PathHop) -> Value {
    json!({"link": h.link, "from": h.from, "to": h.to, "vlan": (h.vlan != 0).then_some(h.vlan)})
}

/// The VLANs along a path as `150`, or `150→300` where a node translates.
fn vlan_run(src: u32, path: &[v1::PathHop], dst: u32) -> String {
    let mut run: Vec<u32> = vec![src];
    for v in path.iter().map(|h| h.vlan).filter(|v| *v != 0).chain([dst]) {
        if run.last() != Some(&v) {
            run.push(v);
        }
    }
    run.iter().map(u32::to_string).collect::<Vec<_>>().join("→")
}

fn rate(a: u64, z: u64) -> String {
    if a == z {
        format!("{a} Mb/s")
    } else {
        format!("{a} Mb/s A→Z, {z} Mb/s Z→A")
    }
}

fn path_line(r: &v1::Reservation) -> String {
    let src_node = r.src.split(':').nth(1).unwrap_or("?");
    let mut nodes = vec![src_node.to_string()];
    nodes.extend(r.path.iter().map(|h| h.to.clone()));
    format!(
        "{} ({} hop{})",
        nodes.join(" → "),
        r.path.len(),
        if r.path.len() == 1 { "" } else { "s" }
    )
}

pub fn reservation_human(r: &v1::Reservation) -> String {
    let s = states(r);
    let duration = match (from_timestamp(&r.start), from_timestamp(&r.end)) {
        (Some(a), Some(b)) => format!(" ({})", human_duration(b - a)),
        _ => String::new(),
    };
    let committed = match r.committed_version {
        Some(v) => format!(" (committed v{v})"),
        None => String::new(),
    };
    let mut out = format!("reservation {}  {}\n", r.id, s.summary);
    if !r.description.is_empty() {
        out += &format!("  {}\n", r.description);
    }
    out += &format!(
        "  {} vlan {} → {} vlan {}\n",
        r.src, r.src_vlan, r.dst, r.dst_vlan
    );
    out += &format!(
        "  {}  {} .. {}{}\n",
        rate(r.capacity_mbps, r.reverse_capacity_mbps),
        show(&r.start),
        show(&r.end),
        duration
    );
    if r.segments.is_empty() {
        out += &format!(
            "  path: {}  vlan {}\n",
            path_line(r),
            vlan_run(r.src_vlan, &r.path, r.dst_vlan)
        );
    } else {
        out += &segments_human(r);
    }
    out += &format!(
        "  states: {}{} · {} · {} · data plane {}\n",
        reservation_state_name(s.reservation()),
        committed,
        provision_state_name(s.provision()),
        lifecycle_state_name(s.lifecycle()),
        if s.data_plane_active {
            "active"
        } else {
            "inactive"
        }
    );
    if r.hold_expires_at.is_some() {
        out += &format!("  hold expires at {}\n", show(&r.hold_expires_at));
    }
    if !r.data_plane.is_empty() {
        let nodes: Vec<String> = r
            .data_plane
            .iter()
            .map(|d| {
                let state = if d.state.is_empty() { "-" } else { &d.state };
                if d.error.is_empty() {
                    format!("{} {state}", d.node)
                } else {
                    format!("{} {state} ({})", d.node, d.error)
                }
            })
            .collect();
        out += &format!("  agents: {}\n", nodes.join(", "));
    }
    out += &format!(
        "  owner {} · {} provisioning · version {}",
        r.owner,
        if r.provision_mode() == v1::ProvisionMode::Manual {
            "manual"
        } else {
            "automatic"
        },
        r.version
    );
    out
}

pub fn measurement_json(m: &v1::Measurement) -> Value {
    json!({
        "seq": m.seq,
        "reservation_id": m.reservation_id,
        "series_id": (!m.series_id.is_empty()).then_some(&m.series_id),
        "occurrence": (m.occurrence > 0).then_some(m.occurrence),
        "at": show(&m.at),
        "kind": m.kind,
        "who": m.who,
        "booked_mbps": m.booked_mbps,
        "duration_ms": m.duration_ms,
        "throughput_mbps": m.throughput_mbps,
        "ip_throughput_mbps": m.ip_throughput_mbps,
        "probes_sent": m.probes_sent,
        "probes_received": m.probes_received,
        "loss": m.loss,
        "rtt_us": {"min": m.rtt_min_us, "mean": m.rtt_avg_us, "max": m.rtt_max_us},
        "forward_us": m.forward_avg_us,
        "backward_us": m.backward_avg_us,
        "jitter_us": m.jitter_us,
        "thresholds": {
            "min_throughput_ratio": m.min_throughput_ratio,
            "max_loss": m.max_loss,
            "max_rtt_ms": m.max_rtt_ms,
        },
        "verdict": m.verdict,
        "reasons": m.reasons,
    })
}

/// Microseconds as milliseconds, to the microsecond.
pub(crate) fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1e3)
}

/// What a booking is compared with: the IP rate where the agent knew it.
pub(crate) fn carried(m: &v1::Measurement) -> f64 {
    if m.ip_throughput_mbps > 0.0 {
        m.ip_throughput_mbps
    } else {
        m.throughput_mbps
    }
}

pub fn measurement_human(m: &v1::Measurement) -> String {
    let occurrence = if m.occurrence > 0 {
        format!(" (occurrence {} of {})", m.occurrence, m.series_id)
    } else {
        String::new()
    };
    let mut out = format!(
        "{} {}{}: {}\n",
        m.kind,
        m.reservation_id,
        occurrence,
        m.verdict.to_uppercase()
    );
    if m.verdict == "error" {
        for r in &m.reasons {
            out += &format!("  {r}\n");
        }
        return out.trim_end().to_string();
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(["", "measured", "booked / limit", ""]);
    let fails = |what: &str| m.reasons.iter().any(|r| r.starts_with(what));
    let mark = |what: &str| if fails(what) { "✗" } else { "✓" };
    if m.duration_ms > 0 {
        t.add_row([
            "throughput A→Z".to_string(),
            format!(
                "{:.1} Mb/s ({:.1} Mb/s TCP payload)",
                carried(m),
                m.throughput_mbps
            ),
            format!(
                "{} Mb/s, ≥ {:.0} %: {:.1} %",
                m.booked_mbps,
                100.0 * m.min_throughput_ratio,
                100.0 * carried(m) / m.booked_mbps.max(1) as f64
            ),
            mark("throughput").to_string(),
        ]);
    }
    t.add_row([
        "round trip".to_string(),
        format!(
            "{} / {} / {} (min/mean/max)",
            ms(m.rtt_min_us),
            ms(m.rtt_avg_us),
            ms(m.rtt_max_us)
        ),
        m.max_rtt_ms
            .map_or("-".to_string(), |x| format!("mean ≤ {x} ms")),
        if m.max_rtt_ms.is_some() {
            mark("mean round trip").to_string()
        } else {
            String::new()
        },
    ]);
    t.add_row([
        "one way".to_string(),
        format!(
            "{} A→Z, {} Z→A",
            ms(m.forward_avg_us),
            ms(m.backward_avg_us)
        ),
        "-".to_string(),
        String::new(),
    ]);
    t.add_row([
        "jitter".to_string(),
        ms(m.jitter_us),
        "-".to_string(),
        String::new(),
    ]);
    t.add_row([
        "loss".to_string(),
        format!(
            "{:.1} % ({} of {} probes)",
            100.0 * m.loss,
            m.probes_sent - m.probes_received,
            m.probes_sent
        ),
        format!("≤ {:.1} %", 100.0 * m.max_loss),
        mark("loss").to_string(),
    ]);
    out += &t.to_string();
    for r in &m.reasons {
        out += &format!("\n  {r}");
    }
    out
}

pub fn status_json(s: &v1::CircuitStatus) -> Value {
    json!({
        "reservation": s.reservation.as_ref().map(reservation_json),
        "domains": s.domains.iter().map(|d| {
            let st = d.states.clone().unwrap_or_default();
            json!({
                "domain": d.domain,
                "segment_id": d.segment_id,
                "error": (!d.error.is_empty()).then_some(&d.error),
                "shared": (!d.shared.is_empty()).then_some(&d.shared),
                "state": d.states.as_ref().map(|_| json!({
                    "reservation": reservation_state_name(st.reservation()),
                    "provision": provision_state_name(st.provision()),
                    "lifecycle": lifecycle_state_name(st.lifecycle()),
                    "data_plane_active": st.data_plane_active,
                    "summary": st.summary,
                })),
                "nodes": d.nodes.iter().map(|n| json!({
                    "node": n.node,
                    "state": (!n.state.is_empty()).then_some(&n.state),
                    "error": (!n.error.is_empty()).then_some(&n.error),
                    "agent": n.agent,
                    "agent_error": (!n.agent_error.is_empty()).then_some(&n.agent_error),
                    "counters": n.counters.as_ref().map(|c| json!({
                        "az": {"bytes": c.bytes_az, "packets": c.packets_az, "drops": c.drops_az},
                        "za": {"bytes": c.bytes_za, "packets": c.packets_za, "drops": c.drops_za},
                    })),
                })).collect::<Vec<_>>(),
                "last_measurement": d.last_measurement.as_ref().map(measurement_json),
            })
        }).collect::<Vec<_>>(),
    })
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn status_human(s: &v1::CircuitStatus) -> String {
    let mut out = String::new();
    if let Some(r) = &s.reservation {
        out += &format!(
            "circuit {}  {}\n  {} → {}  {}  {} .. {}\n",
            r.id,
            states(r).summary,
            r.src,
            r.dst,
            rate(r.capacity_mbps, r.reverse_capacity_mbps),
            show(&r.start),
            show(&r.end)
        );
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "domain",
        "state",
        "node",
        "agent",
        "circuit",
        "A→Z",
        "Z→A",
        "last measurement",
    ]);
    for d in &s.domains {
        let st = d.states.clone().unwrap_or_default();
        let state = if !d.error.is_empty() {
            format!("? ({})", d.error)
        } else {
            format!(
                "{} · {} · {} · data plane {}",
                reservation_state_name(st.reservation()),
                provision_state_name(st.provision()),
                lifecycle_state_name(st.lifecycle()),
                if st.data_plane_active { "up" } else { "down" }
            )
        };
        let last = d.last_measurement.as_ref().map_or_else(
            || {
                if d.shared == "states" {
                    "(shares states only)".to_string()
                } else {
                    "-".to_string()
                }
            },
            |m| {
                format!(
                    "{} {}: {:.1} Mb/s, rtt {}, loss {:.1} %",
                    show(&m.at),
                    m.verdict,
                    carried(m),
                    ms(m.rtt_avg_us),
                    100.0 * m.loss
                )
            },
        );
        let counters = |c: Option<&v1::CircuitCounters>, az: bool| {
            c.map_or("-".to_string(), |c| {
                let (b, p, x) = if az {
                    (c.bytes_az, c.packets_az, c.drops_az)
                } else {
                    (c.bytes_za, c.packets_za, c.drops_za)
                };
                format!("{} / {p} pkts / {x} drops", bytes(b))
            })
        };
        if d.nodes.is_empty() {
            t.add_row([
                format!("{} {}", d.domain, d.segment_id),
                state,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                last,
            ]);
            continue;
        }
        for (i, n) in d.nodes.iter().enumerate() {
            let agent = if n.agent_error.is_empty() {
                n.agent.clone()
            } else {
                format!("{} ({})", n.agent, n.agent_error)
            };
            let circuit = match (n.state.as_str(), n.error.is_empty()) {
                ("", _) => "-".to_string(),
                (s, true) => s.to_string(),
                (s, false) => format!("{s} ({})", n.error),
            };
            let first = i == 0;
            t.add_row([
                if first {
                    format!("{} {}", d.domain, d.segment_id)
                } else {
                    String::new()
                },
                if first { state.clone() } else { String::new() },
                n.node.clone(),
                agent,
                circuit,
                counters(n.counters.as_ref(), true),
                counters(n.counters.as_ref(), false),
                if first { last.clone() } else { String::new() },
            ]);
        }
    }
    out += &t.to_string();
    out
}

pub fn history_human(h: &v1::HistoryReply) -> String {
    if h.measurements.is_empty() {
        return "no measurements yet (sluice verify ID)".to_string();
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "seq",
        "at",
        "kind",
        "occ",
        "booked",
        "throughput",
        "%",
        "rtt mean",
        "jitter",
        "loss",
        "verdict",
    ]);
    for m in &h.measurements {
        let measured = m.verdict != "error";
        t.add_row([
            m.seq.to_string(),
            show(&m.at),
            m.kind.clone(),
            if m.occurrence > 0 {
                m.occurrence.to_string()
            } else {
                "-".into()
            },
            format!("{} Mb/s", m.booked_mbps),
            if measured && m.duration_ms > 0 {
                format!("{:.1} Mb/s", carried(m))
            } else {
                "-".into()
            },
            if measured && m.duration_ms > 0 {
                format!("{:.1}", 100.0 * carried(m) / m.booked_mbps.max(1) as f64)
            } else {
                "-".into()
            },
            if measured {
                ms(m.rtt_avg_us)
            } else {
                "-".into()
            },
            if measured {
                ms(m.jitter_us)
            } else {
                "-".into()
            },
            if measured {
                format!("{:.1} %", 100.0 * m.loss)
            } else {
                "-".into()
            },
            if m.reasons.is_empty() {
                m.verdict.clone()
            } else {
                format!("{}: {}", m.verdict, m.reasons.join("; "))
            },
        ]);
    }
    t.to_string()
}

pub fn emergency_stop_json(r: &v1::EmergencyStopReply) -> Value {
    json!({
        "operator": r.operator,
        "stopped": r.stopped.iter().map(reservation_json).collect::<Vec<_>>(),
        "failures": r.failures.iter().map(|f| json!({
            "id": f.id,
            "code": f.code,
            "message": f.message,
        })).collect::<Vec<_>>(),
    })
}

pub fn emergency_stop_human(r: &v1::EmergencyStopReply) -> String {
    if r.stopped.is_empty() && r.failures.is_empty() {
        return format!("nothing to stop (operator {})", r.operator);
    }
    let mut out = format!("emergency stop by operator {}\n", r.operator);
    for s in &r.stopped {
        out += &format!("  {}  {}\n", s.id, states(s).summary);
        for (i, seg) in r_segments(s) {
            let state = if seg.error.is_empty() {
                seg.states
                    .as_ref()
                    .map_or("?".to_string(), |st| st.summary.clone())
            } else {
                format!(
                    "not told yet ({}; it ends when the domain answers)",
                    seg.error
                )
            };
            out += &format!("    segment {i} in {}: {state}\n", seg.domain);
        }
    }
    for f in &r.failures {
        out += &format!("  {}  not stopped: {} {}\n", f.id, f.code, f.message);
    }
    out.trim_end().to_string()
}

fn r_segments(r: &v1::Reservation) -> impl Iterator<Item = (usize, &v1::Segment)> {
    r.segments.iter().enumerate().map(|(i, s)| (i + 1, s))
}

pub fn audit_json(a: &v1::AuditReply) -> Value {
    json!({
        "entries": a.entries.iter().map(|e| json!({
            "seq": e.seq,
            "at": show(&e.at),
            "who": e.who,
            "action": e.action,
            "target": e.target,
            "result": e.result,
            "detail": (!e.detail.is_empty()).then_some(&e.detail),
        })).collect::<Vec<_>>(),
        "more": a.more,
    })
}

pub fn audit_human(a: &v1::AuditReply) -> String {
    if a.entries.is_empty() {
        return "no requests recorded".to_string();
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(["seq", "at", "who", "action", "target", "result"]);
    for e in &a.entries {
        let result = if e.detail.is_empty() {
            e.result.clone()
        } else {
            format!("{} {}", e.result, e.detail)
        };
        t.add_row([
            e.seq.to_string(),
            show(&e.at),
            e.who.clone(),
            e.action.clone(),
            e.target.clone(),
            result,
        ]);
    }
    let mut out = t.to_string();
    if a.more {
        let last = a.entries.last().map_or(0, |e| e.seq);
        out += &format!(
            "
more follow: --after {last}"
        );
    }
    out
}

pub fn list_human(rs: &[v1::Reservation], truncated: bool) -> String {
    if rs.is_empty() {
        return "no reservations".to_string();
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "id", "state", "Mb/s", "start", "end", "src", "dst", "hops", "owner",
    ]);
    for r in rs {
        t.add_row([
            r.id.clone(),
            states(r).summary,
            r.capacity_mbps.to_string(),
            show(&r.start),
            show(&r.end),
            format!("{}.{}", r.src, r.src_vlan),
            format!("{}.{}", r.dst, r.dst_vlan),
            r.path.len().to_string(),
            r.owner.clone(),
        ]);
    }
    let mut out = t.to_string();
    out += &format!(
        "\n{} reservation{}",
        rs.len(),
        if rs.len() == 1 { "" } else { "s" }
    );
    if truncated {
        out += " (more match: raise --limit)";
    }
    out
}

pub fn event_json(e: &v1::Event) -> Value {
    json!({
        "seq": e.seq,
        "reservation_id": e.reservation_id,
        "machine": e.machine,
        "from": e.from,
        "to": e.to,
        "at": show(&e.at),
        "detail": e.detail,
    })
}

pub fn event_human(e: &v1::Event) -> String {
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!("  ({})", e.detail)
    };
    format!(
        "{}  #{:<5} {}  {} {} → {}{}",
        show(&e.at),
        e.seq,
        e.reservation_id,
        e.machine,
        e.from,
        e.to,
        detail
    )
}

pub fn error_json(e: &Error) -> Value {
    let mut err = json!({
        "code": e.code.as_str(),
        "name": e.code.name(),
        "field": e.field,
        "message": e.message,
    });
    if let Some(c) = &e.capacity {
        err["requested_mbps"] = json!(c.requested.0);
        err["available_mbps"] = json!(c.available.0);
        err["bottlenecks"] = json!(c.bottlenecks);
    }
    if let Some(t) = e.earliest_start {
        err["earliest_start"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if let Some(c) = &e.child {
        err["child"] = json!({
            "domain": c.domain,
            "segment": c.segment,
            "code": c.code.as_str(),
        });
    }
    if !e.conflicts.is_empty() {
        err["conflicts"] = e
            .conflicts
            .iter()
            .map(|c| {
                let mut j = error_json(&c.reason)["error"].clone();
                j["occurrence"] = json!(c.number);
                j["start"] = json!(c.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                j["end"] = json!(c.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                j["alternative_path"] = json!(c.alternative);
                j
            })
            .collect();
    }
    json!({ "error": err })
}

pub fn error_human(e: &Error) -> String {
    let field = e
        .field
        .as_ref()
        .map(|f| format!(" [{f}]"))
        .unwrap_or_default();
    let mut out = format!(
        "error {} {}{}: {}",
        e.code.as_str(),
        e.code.name(),
        field,
        e.message
    );
    if let Some(c) = &e.capacity {
        out += &format!(
            "\n  requested {} Mb/s, available {} Mb/s",
            c.requested.0, c.available.0
        );
        if !c.bottlenecks.is_empty() {
            out += &format!("\n  bottleneck: {}", c.bottlenecks.join(", "));
        }
    }
    if let Some(t) = e.earliest_start {
        out += &format!(
            "\n  earliest start that fits: {} (same duration)",
            t.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    for c in &e.conflicts {
        out += &format!(
            "\n  occurrence {} ({} .. {}): {} {}",
            c.number,
            c.start.format("%Y-%m-%dT%H:%MZ"),
            c.end.format("%Y-%m-%dT%H:%MZ"),
            c.reason.code.as_str(),
            c.reason.message
        );
        if let Some(via) = &c.alternative {
            out += &format!("\n    fits alone on another path: via {}", via.join(" "));
        }
        if let Some(t) = c.reason.earliest_start {
            out += &format!(
                "\n    nearest start that fits: {}",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
    }
    out
}

fn candidate_json(c: &v1::Candidate, requested: u64) -> Value {
    json!({
        "metric": c.metric,
        "hops": c.path.len(),
        "src_vlan": c.src_vlan,
        "dst_vlan": c.dst_vlan,
        "available_mbps": c.available_mbps,
        "headroom_mbps": c.available_mbps.saturating_sub(requested),
        "bottlenecks": c.bottlenecks,
        "path": c.path.iter().map(hop_json).collect::<Vec<_>>(),
    })
}

pub fn paths_json(r: &v1::ComputePathsReply) -> Value {
    let req = r.requested_mbps;
    json!({
        "requested_mbps": req,
        "reverse_requested_mbps": r.reverse_requested_mbps,
        "best": r.best.as_ref().map(|c| candidate_json(c, req)),
        "alternatives": r.alternatives.iter().map(|c| candidate_json(c, req)).collect::<Vec<_>>(),
        "widest": r.widest.as_ref().map(|c| candidate_json(c, req)),
    })
}

pub fn paths_human(r: &v1::ComputePathsReply) -> String {
    let req = r.requested_mbps;
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
        "",
        "metric",
        "hops",
        "vlan",
        "available",
        "headroom",
        "path",
    ]);
    let mut rows: Vec<(String, &v1::Candidate)> = Vec::new();
    if let Some(b) = &r.best {
        rows.push(("best".into(), b));
    }
    for (i, a) in r.alternatives.iter().enumerate() {
        rows.push((format!("alt {}", i + 1), a));
    }
    if let Some(w) = &r.widest {
        rows.push(("widest".into(), w));
    }
    for (name, c) in rows {
        let mut nodes: Vec<&str> = c
            .path
            .first()
            .map(|h| h.from.as_str())
            .into_iter()
            .collect();
        nodes.extend(c.path.iter().map(|h| h.to.as_str()));
        table.add_row(vec![
            name,
            c.metric.to_string(),
            c.path.len().to_string(),
            vlan_run(c.src_vlan, &c.path, c.dst_vlan),
            format!("{} Mb/s", c.available_mbps),
            format!("{} Mb/s", c.available_mbps.saturating_sub(req)),
            if nodes.is_empty() {
                "(both ends on one node)".to_string()
            } else {
                nodes.join(" → ")
            },
        ]);
    }
    let mut out = format!(
        "requested {} (a dry run: nothing is booked)\n{table}",
        rate(req, r.reverse_requested_mbps)
    );
    if r.alternatives.is_empty() {
        out += "\nno alternative path has room for the request";
    }
    out
}

pub fn topology_json(t: &v1::TopologyReply) -> Value {
    json!({
        "domain": t.domain,
        "description": t.description,
        "nodes": t.nodes.iter().map(|n| json!({
            "id": n.id,
            "name": n.name,
            "vlan_translation": n.vlan_translation,
            "ports": n.ports.iter().map(|p| json!({
                "name": p.name, "vlans": p.vlans, "capacity_mbps": p.capacity_mbps,
                "peer": (!p.peer.is_empty()).then_some(&p.peer),
                "link": (!p.link.is_empty()).then_some(&p.link),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "links": t.links.iter().map(|l| json!({
            "id": l.id, "a": l.a, "b": l.b,
            "capacity_ab_mbps": l.capacity_ab_mbps, "capacity_ba_mbps": l.capacity_ba_mbps,
            "metric": l.metric,
        })).collect::<Vec<_>>(),
    })
}

pub fn topology_human(t: &v1::TopologyReply) -> String {
    let mut out = format!(
        "domain {}: {}\n{} nodes, {} links\n\n",
        t.domain,
        t.description,
        t.nodes.len(),
        t.links.len()
    );
    let mut nodes = Table::new();
    nodes.load_preset(UTF8_BORDERS_ONLY);
    nodes.set_header(["node", "name", "edge ports (STPs)", "peer ports"]);
    for n in &t.nodes {
        let edge: Vec<String> = n
            .ports
            .iter()
            .filter(|p| p.link.is_empty() && p.peer.is_empty())
            .map(|p| format!("{} [{}] {}G", p.name, p.vlans, p.capacity_mbps / 1000))
            .collect();
        let peers: Vec<String> = n
            .ports
            .iter()
            .filter(|p| !p.peer.is_empty())
            .map(|p| format!("{} → {}", p.name, p.peer))
            .collect();
        nodes.add_row([
            n.id.clone(),
            n.name.clone(),
            edge.join("\n"),
            peers.join("\n"),
        ]);
    }
    out += &nodes.to_string();
    out += "\n\n";
    let mut links = Table::new();
    links.load_preset(UTF8_BORDERS_ONLY);
    links.set_header(["link", "a", "b", "Mb/s a→b", "Mb/s b→a", "metric"]);
    for l in &t.links {
        links.add_row([
            l.id.clone(),
            l.a.clone(),
            l.b.clone(),
            l.capacity_ab_mbps.to_string(),
            l.capacity_ba_mbps.to_string(),
            l.metric.to_string(),
        ]);
    }
    out += &links.to_string();
    out
}

pub fn availability_json(a: &v1::AvailabilityReply) -> Value {
    json!({
        "resource": a.resource,
        "vlans": (!a.vlans.is_empty()).then_some(&a.vlans),
        "vlans_in_use": a.vlans_in_use,
        "directions": a.directions.iter().map(|d| json!({
            "direction": d.direction,
            "capacity_mbps": d.capacity_mbps,
            "steps": d.steps.iter().map(|s| json!({
                "start": show(&s.start), "end": show(&s.end),
                "booked_mbps": s.booked_mbps, "available_mbps": s.available_mbps,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn availability_table(a: &v1::AvailabilityReply) -> String {
    let mut out = format!("{}\n", a.resource);
    if !a.vlans.is_empty() {
        let used: Vec<String> = a.vlans_in_use.iter().map(|v| v.to_string()).collect();
        out += &format!(
            "VLANs {}; in use in this range: {}\n",
            a.vlans,
            if used.is_empty() {
                "none".to_string()
            } else {
                used.join(",")
            }
        );
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(["direction", "from", "to", "booked Mb/s", "available Mb/s"]);
    for d in &a.directions {
        for s in &d.steps {
            t.add_row([
                d.direction.clone(),
                show(&s.start),
                show(&s.end),
                s.booked_mbps.to_string(),
                s.available_mbps.to_string(),
            ]);
        }
    }
    out += &t.to_string();
    out
}

/// Booked bandwidth as bars over time, one chart per direction.
/// The most booked at any moment of `[a0, a1)` in one direction.
pub fn peak_in(d: &v1::DirectionAvailability, a0: DateTime<Utc>, a1: DateTime<Utc>) -> u64 {
    d.steps
        .iter()
        .filter(|s| {
            from_timestamp(&s.start).is_some_and(|s0| s0 < a1)
                && from_timestamp(&s.end).is_some_and(|s1| s1 > a0)
        })
        .map(|s| s.booked_mbps)
        .max()
        .unwrap_or(0)
}

pub fn availability_timeline(a: &v1::AvailabilityReply, width: usize) -> String {
    const ROWS: usize = 8;
    let mut out = format!("{}\n", a.resource);
    for d in &a.directions {
        let (Some(first), Some(last)) = (d.steps.first(), d.steps.last()) else {
            continue;
        };
        let (Some(t0), Some(t1)) = (from_timestamp(&first.start), from_timestamp(&last.end)) else {
            continue;
        };
        let span = (t1 - t0).num_milliseconds().max(1);
        let cap = d.capacity_mbps.max(1);
        // The peak booked inside each column's slice of time.
        let cols: Vec<u64> = (0..width)
            .map(|c| {
                let a0 = t0 + TimeDelta::milliseconds(span * c as i64 / width as i64);
                let a1 = t0 + TimeDelta::milliseconds(span * (c as i64 + 1) / width as i64);
                peak_in(d, a0, a1)
            })
            .collect();
        let peak = cols.iter().copied().max().unwrap_or(0);
        out += &format!(
            "\n{}  capacity {} Mb/s, peak booked {} Mb/s\n",
            d.direction, d.capacity_mbps, peak
        );
        for row in (0..ROWS).rev() {
            let pct = (row + 1) * 100 / ROWS;
            let line: String = cols
                .iter()
                .map(|&b| {
                    let filled = b as f64 / cap as f64 * ROWS as f64;
                    if filled >= row as f64 + 1.0 {
                        '█'
                    } else if filled > row as f64 {
                        '▄'
                    } else {
                        ' '
                    }
                })
                .collect();
            out += &format!("{pct:>4}% │{line}│\n");
        }
        out += &format!("      └{}┘\n", "─".repeat(width));
        let left = t0.format("%Y-%m-%d %H:%M").to_string();
        let right = t1.format("%Y-%m-%d %H:%M").to_string();
        let gap = (width + 2).saturating_sub(left.len() + right.len());
        out += &format!("      {left}{}{right}\n", " ".repeat(gap));
    }
    out
}
