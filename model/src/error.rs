//! Stable error codes (after NSI CS 2.x) and the one error type every layer passes up.
//!
//! A code never changes meaning once released: scripts and peer domains match on it.

use std::fmt;

use crate::units::Mbps;

/// The stable codes. The numbers follow NSI CS 2.x where NSI has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 00100: a parameter is present but its value is not acceptable.
    InvalidParameter,
    /// 00101: a required parameter is absent.
    MissingParameter,
    /// 00201: the request is not allowed in the reservation's current state.
    InvalidTransition,
    /// 00203: no reservation with that id.
    ReservationNonexistent,
    /// 00302: the caller may not do this.
    Unauthorized,
    /// 00403: no path connects the end points under the constraints.
    NoPathFound,
    /// 00500: something broke inside the IDC; not the caller's fault.
    Internal,
    /// 00502: a child domain's segment failed (wraps the child's code).
    ChildSegmentError,
    /// 00701: the STP does not exist in this domain's topology.
    UnknownStp,
    /// 00704: the STP exists but none of the requested labels is free.
    StpUnavailable,
    /// 00705: not enough bandwidth for the window (with feedback).
    CapacityUnavailable,
    /// 00707: an ERO member names nothing in the topology.
    InvalidEroMember,
    /// 00709: a label (VLAN) is malformed or outside the port's range.
    InvalidLabelFormat,
    /// 00103: this IDC cannot do what is asked as it is set up (no agents to measure).
    NotImplemented,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidParameter,
        ErrorCode::MissingParameter,
        ErrorCode::InvalidTransition,
        ErrorCode::ReservationNonexistent,
        ErrorCode::Unauthorized,
        ErrorCode::NoPathFound,
        ErrorCode::Internal,
        ErrorCode::ChildSegmentError,
        ErrorCode::UnknownStp,
        ErrorCode::StpUnavailable,
        ErrorCode::CapacityUnavailable,
        ErrorCode::InvalidEroMember,
        ErrorCode::InvalidLabelFormat,
        ErrorCode::NotImplemented,
    ];

    /// The five-digit code as printed and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameter => "00100",
            ErrorCode::MissingParameter => "00101",
            ErrorCode::InvalidTransition => "00201",
            ErrorCode::ReservationNonexistent => "00203",
            ErrorCode::Unauthorized => "00302",
            ErrorCode::NoPathFound => "00403",
            ErrorCode::Internal => "00500",
            ErrorCode::ChildSegmentError => "00502",
            ErrorCode::UnknownStp => "00701",
            ErrorCode::StpUnavailable => "00704",
            ErrorCode::CapacityUnavailable => "00705",
            ErrorCode::InvalidEroMember => "00707",
            ErrorCode::InvalidLabelFormat => "00709",
            ErrorCode::NotImplemented => "00103",
        }
    }

    /// The NSI-style symbolic name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameter => "INVALID_PARAMETER",
            ErrorCode::MissingParameter => "MISSING_PARAMETER",
            ErrorCode::InvalidTransition => "INVALID_TRANSITION",
            ErrorCode::ReservationNonexistent => "RESERVATION_NONEXISTENT",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NoPathFound => "NO_PATH_FOUND",
            ErrorCode::Internal => "INTERNAL_ERROR",
            ErrorCode::ChildSegmentError => "CHILD_SEGMENT_ERROR",
            ErrorCode::UnknownStp => "UNKNOWN_STP",
            ErrorCode::StpUnavailable => "STP_UNAVAILABLE",
            ErrorCode::CapacityUnavailable => "CAPACITY_UNAVAILABLE",
            ErrorCode::InvalidEroMember => "INVALID_ERO_MEMBER",
            ErrorCode::InvalidLabelFormat => "INVALID_LABEL_FORMAT",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
        }
    }

    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.as_str(), self.name())
    }
}

/// What would have fitted, returned with 00705 so the caller can adjust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityFeedback {
    pub requested: Mbps,
    /// The most that fits on the best path for the requested window.
    pub available: Mbps,
    /// Resources (links or ports) that limit the best path.
    pub bottlenecks: Vec<String>,
}

/// An error with a stable code, the offending field (a dotted path such as
/// `criteria.src.vlan`) and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
    /// Boxed: it is rare, and errors travel in every `Result`.
    pub capacity: Option<Box<CapacityFeedback>>,
    /// When nothing fits: the earliest start at or after the requested one from which
    /// the whole request (same duration) would fit, if one was found.
    pub earliest_start: Option<chrono::DateTime<chrono::Utc>>,
    /// When a series is refused: each occurrence that does not fit, and why.
    pub conflicts: Vec<OccurrenceConflict>,
    /// With 00502: which domain's segment failed, and that domain's own code.
    pub child: Option<Box<ChildFailure>>,
}

/// The segment of a circuit across domains that failed, as 00502 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFailure {
    pub domain: String,
    /// From 1, in order from the source.
    pub segment: u32,
    /// The child's code (its message is in the 00502's).
    pub code: ErrorCode,
}

/// One occurrence of a series that does not fit, with what would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccurrenceConflict {
    pub number: u32,
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
    /// Why (its code, message, capacity feedback and earliest start); never nested.
    pub reason: Box<Error>,
    /// Another path on which this occurrence alone would fit, as its nodes in order.
    pub alternative: Option<Vec<String>>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            field: None,
            message: message.into(),
            capacity: None,
            earliest_start: None,
            conflicts: Vec::new(),
            child: None,
        }
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            code,
            field: Some(field.into()),
            message: message.into(),
            capacity: None,
            earliest_start: None,
            conflicts: Vec::new(),
            child: None,
        }
    }

    /// 00502: segment `segment` (from 1) in `domain` failed with `cause`; the cause's
    /// field, capacity feedback, earliest start and refused occurrences are kept.
    pub fn child(domain: &str, segment: u32, cause: Error) -> Error {
        let mut e = Error::new(
            ErrorCode::ChildSegmentError,
            format!(
                "segment {segment} in {domain} failed: {} {}",
                cause.code, cause.message
            ),
        );
        e.field = cause.field;
        e.capacity = cause.capacity;
        e.earliest_start = cause.earliest_start;
        e.conflicts = cause.conflicts;
        e.child = Some(Box::new(ChildFailure {
            domain: domain.to_string(),
            segment,
            code: cause.code,
        }));
        e
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::field(ErrorCode::InvalidParameter, field, message)
    }

    pub fn missing(field: impl Into<String>) -> Error {
        let field = field.into();
        let message = format!("{field} is required");
        Error::field(ErrorCode::MissingParameter, field, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Internal, message)
    }

    pub fn not_found(id: &str) -> Error {
        Error::field(
            ErrorCode::ReservationNonexistent,
            "id",
            format!("no reservation {id}"),
        )
    }

    /// Prefixes the field, so a nested conversion can say `criteria.` + `src.vlan`.
    pub fn within(mut self, prefix: &str) -> Error {
        self.field = Some(match self.field {
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_string(),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(code.as_str().len(), 5);
        }
        assert_eq!(ErrorCode::parse("99999"), None);
    }

    #[test]
    fn within_prefixes_the_field() {
        let e = Error::invalid("vlan", "bad").within("criteria.src");
        assert_eq!(e.field.as_deref(), Some("criteria.src.vlan"));
        let e = Error::new(ErrorCode::Internal, "x").within("criteria");
        assert_eq!(e.field.as_deref(), Some("criteria"));
    }
}
