//! Errors on the wire: a stable code onto a gRPC status with rich details, and back.

use std::collections::HashMap;

use sluice_model::{CapacityFeedback, ChildFailure, Error, ErrorCode, Mbps, OccurrenceConflict};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC status code each stable code travels under.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidParameter
        | ErrorCode::MissingParameter
        | ErrorCode::InvalidLabelFormat
        | ErrorCode::InvalidEroMember => Code::InvalidArgument,
        ErrorCode::InvalidTransition | ErrorCode::NoPathFound => Code::FailedPrecondition,
        ErrorCode::ReservationNonexistent | ErrorCode::UnknownStp => Code::NotFound,
        ErrorCode::Unauthorized => Code::PermissionDenied,
        ErrorCode::StpUnavailable | ErrorCode::CapacityUnavailable => Code::ResourceExhausted,
        ErrorCode::ChildSegmentError => Code::Aborted,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::NotImplemented => Code::Unimplemented,
    }
}

const DOMAIN: &str = "sluice";

pub fn to_status(e: &Error) -> Status {
    let mut metadata = HashMap::from([("code".to_string(), e.code.as_str().to_string())]);
    if let Some(f) = &e.field {
        metadata.insert("field".into(), f.clone());
    }
    if let Some(c) = &e.capacity {
        metadata.insert("requested_mbps".into(), c.requested.0.to_string());
        metadata.insert("available_mbps".into(), c.available.0.to_string());
        metadata.insert("bottlenecks".into(), c.bottlenecks.join("; "));
    }
    if let Some(t) = e.earliest_start {
        metadata.insert(
            "earliest_start".into(),
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    }
    if let Some(c) = &e.child {
        metadata.insert("child_domain".into(), c.domain.clone());
        metadata.insert("child_segment".into(), c.segment.to_string());
        metadata.insert("child_code".into(), c.code.as_str().to_string());
    }
    // A refused series: per occurrence, its window and code, what fits on the series'
    // path, the nearest start, and another path, as `occurrence.N...` keys; the reason
    // itself as a precondition violation with subject `occurrence N`.
    for c in &e.conflicts {
        let key = |k: &str| format!("occurrence.{}{k}", c.number);
        let time = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        metadata.insert(
            key(""),
            format!(
                "{} {} {}",
                time(c.start),
                time(c.end),
                c.reason.code.as_str()
            ),
        );
        if let Some(f) = &c.reason.capacity {
            metadata.insert(key(".available_mbps"), f.available.0.to_string());
            metadata.insert(key(".requested_mbps"), f.requested.0.to_string());
            metadata.insert(key(".bottlenecks"), f.bottlenecks.join("; "));
        }
        if let Some(t) = c.reason.earliest_start {
            metadata.insert(key(".earliest_start"), time(t));
        }
        if let Some(via) = &c.alternative {
            metadata.insert(key(".via"), via.join(" "));
        }
    }
    let mut details = ErrorDetails::with_error_info(e.code.name(), DOMAIN, metadata);
    if let Some(f) = &e.field {
        details.add_bad_request_violation(f.clone(), e.message.clone());
    }
    for c in &e.conflicts {
        details.add_precondition_failure_violation(
            c.reason.code.as_str(),
            format!("occurrence {}", c.number),
            c.reason.message.clone(),
        );
    }
    Status::with_error_details(grpc_code(e.code), e.message.clone(), details)
}

/// The conflicts of a refused series, read back from `to_status`'s keys.
fn conflicts_of(s: &Status, metadata: &HashMap<String, String>) -> Vec<OccurrenceConflict> {
    let reasons: HashMap<String, String> = s
        .get_details_precondition_failure()
        .map(|p| {
            p.violations
                .into_iter()
                .map(|v| (v.subject, v.description))
                .collect()
        })
        .unwrap_or_default();
    let time = |v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let mut out: Vec<OccurrenceConflict> = metadata
        .iter()
        .filter_map(|(k, v)| {
            let number: u32 = k.strip_prefix("occurrence.")?.parse().ok()?;
            let mut parts = v.split(' ');
            let (start, end, code) = (time(parts.next()?)?, time(parts.next()?)?, parts.next()?);
            let get = |suffix: &str| metadata.get(&format!("occurrence.{number}{suffix}"));
            let mbps = |suffix: &str| get(suffix).and_then(|v| v.parse().ok()).map(Mbps);
            let mut reason = Error::new(
                ErrorCode::parse(code).unwrap_or(ErrorCode::Internal),
                reasons
                    .get(&format!("occurrence {number}"))
                    .cloned()
                    .unwrap_or_default(),
            );
            if let (Some(requested), Some(available)) =
                (mbps(".requested_mbps"), mbps(".available_mbps"))
            {
                reason.capacity = Some(Box::new(CapacityFeedback {
                    requested,
                    available,
                    bottlenecks: get(".bottlenecks")
                        .map(|b| {
                            b.split("; ")
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                }));
            }
            reason.earliest_start = get(".earliest_start").and_then(|t| time(t));
            Some(OccurrenceConflict {
                number,
                start,
                end,
                reason: Box::new(reason),
                alternative: get(".via").map(|v| v.split(' ').map(String::from).collect()),
            })
        })
        .collect();
    out.sort_by_key(|c| c.number);
    out
}

/// Reads a status back into an error; one without Sluice details (a transport failure,
/// another server) becomes 00500 with the status's own words.
pub fn from_status(s: &Status) -> Error {
    let Some(info) = s.get_details_error_info().filter(|i| i.domain == DOMAIN) else {
        return Error::internal(format!("{:?}: {}", s.code(), s.message()));
    };
    let code = info
        .metadata
        .get("code")
        .and_then(|c| ErrorCode::parse(c))
        .unwrap_or(ErrorCode::Internal);
    let mbps = |k: &str| info.metadata.get(k).and_then(|v| v.parse().ok()).map(Mbps);
    let capacity = match (mbps("requested_mbps"), mbps("available_mbps")) {
        (Some(requested), Some(available)) => Some(CapacityFeedback {
            requested,
            available,
            bottlenecks: info
                .metadata
                .get("bottlenecks")
                .map(|b| {
                    b.split("; ")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        }),
        _ => None,
    };
    Error {
        code,
        field: info.metadata.get("field").cloned(),
        message: s.message().to_string(),
        capacity: capacity.map(Box::new),
        earliest_start: info
            .metadata
            .get("earliest_start")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        conflicts: conflicts_of(s, &info.metadata),
        child: child_of(&info.metadata).map(Box::new),
    }
}

fn child_of(metadata: &HashMap<String, String>) -> Option<ChildFailure> {
    Some(ChildFailure {
        domain: metadata.get("child_domain")?.clone(),
        segment: metadata.get("child_segment")?.parse().ok()?,
        code: ErrorCode::parse(metadata.get("child_code")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_the_wire() {
        for code in ErrorCode::ALL {
            let mut e = Error::field(code, "capacity_mbps", format!("boom {code}"));
            if code == ErrorCode::CapacityUnavailable {
                e.capacity = Some(Box::new(CapacityFeedback {
                    requested: Mbps(10_000),
                    available: Mbps(2_500),
                    bottlenecks: vec!["link a-b (a→b)".into(), "port x:y (in)".into()],
                }));
                e.earliest_start = chrono::DateTime::from_timestamp_millis(1_800_000_000_123);
            }
            let status = to_status(&e);
            assert_eq!(status.code(), grpc_code(code));
            assert_eq!(from_status(&status), e);
        }
    }

    #[test]
    fn a_refused_series_carries_every_conflict() {
        let t = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let mut full = Error::field(
            ErrorCode::CapacityUnavailable,
            "capacity_mbps",
            "requested 500, available 100",
        );
        full.capacity = Some(Box::new(CapacityFeedback {
            requested: Mbps(500),
            available: Mbps(100),
            bottlenecks: vec!["link a-b (a→b)".into()],
        }));
        full.earliest_start = Some(t(1_800_000_900_000));
        let no_vlan = Error::new(ErrorCode::StpUnavailable, "no VLAN free all along");
        let mut e = Error::field(
            ErrorCode::CapacityUnavailable,
            "recurrence",
            "2 of 10 occurrences do not fit",
        );
        e.conflicts = vec![
            OccurrenceConflict {
                number: 3,
                start: t(1_800_000_000_000),
                end: t(1_800_000_600_000),
                reason: Box::new(full),
                alternative: Some(vec!["c".into(), "d".into()]),
            },
            OccurrenceConflict {
                number: 7,
                start: t(1_800_100_000_000),
                end: t(1_800_100_600_000),
                reason: Box::new(no_vlan),
                alternative: None,
            },
        ];
        let back = from_status(&to_status(&e));
        // The reasons come back without their field (the series' own is kept).
        let mut want = e.clone();
        for c in &mut want.conflicts {
            c.reason.field = None;
        }
        assert_eq!(back, want);
    }

    #[test]
    fn a_child_failure_names_the_domain_segment_and_code() {
        let mut cause = Error::field(ErrorCode::CapacityUnavailable, "capacity_mbps", "full");
        cause.capacity = Some(Box::new(CapacityFeedback {
            requested: Mbps(1000),
            available: Mbps(400),
            bottlenecks: vec!["link:x".into()],
        }));
        let e = Error::child("geant", 2, cause);
        assert_eq!(e.code, ErrorCode::ChildSegmentError);
        assert!(e.message.contains("segment 2 in geant"), "{}", e.message);
        let back = from_status(&to_status(&e));
        assert_eq!(back, e);
        let child = back.child.unwrap();
        assert_eq!(
            (child.domain.as_str(), child.segment, child.code),
            ("geant", 2, ErrorCode::CapacityUnavailable)
        );
    }

    #[test]
    fn foreign_statuses_become_internal() {
        let e = from_status(&Status::unavailable("connection refused"));
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("connection refused"));
    }
}
