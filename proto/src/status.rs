//! Errors on the wire: a stable code onto a gRPC status with rich details, and back.

use std::collections::HashMap;

use sluice_model::{CapacityFeedback, Error, ErrorCode, Mbps};
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
    let mut details = ErrorDetails::with_error_info(e.code.name(), DOMAIN, metadata);
    if let Some(f) = &e.field {
        details.add_bad_request_violation(f.clone(), e.message.clone());
    }
    Status::with_error_details(grpc_code(e.code), e.message.clone(), details)
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
        conflicts: Vec::new(),
    }
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
    fn foreign_statuses_become_internal() {
        let e = from_status(&Status::unavailable("connection refused"));
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("connection refused"));
    }
}
