//! Sluice's plain data: identifiers, units, topology, reservations and their state
//! machines, and the stable error codes.
//!
//! **Architecture invariant:** this crate does no I/O, reads no clock and knows no wire
//! format. Times are passed in; conversions to protobuf or SQL live in `proto` and `idc`.

pub mod audit;
pub mod circuit;
pub mod dataplane;
pub mod error;
pub mod measurement;
pub mod recurrence;
pub mod reservation;
pub mod status;
pub mod stp;
pub mod topology;
pub mod units;

pub use audit::AuditRecord;
pub use circuit::CircuitSegment;
pub use error::{CapacityFeedback, ChildFailure, Error, ErrorCode, OccurrenceConflict};
pub use measurement::{Figures, Measurement, MeasurementKind, Thresholds, Verdict, VerifyEach};
pub use recurrence::{
    MAX_OCCURRENCES, Occurrence, Recurrence, RecurrenceRule, Series, SkippedOccurrence,
};
pub use reservation::{
    Change, Criteria, Endpoint, Ero, LifecycleState, Machine, PathCandidate, PathHop, PathOffers,
    ProvisionState, Reservation, ReservationState, SeriesRef, States,
};
pub use status::{AgentHealth, Counters, DomainStatus, NodeStatus, StatusShare};
pub use stp::{Stp, StpRequest};
pub use topology::{Direction, Resource, Topology};
pub use units::{Mbps, TimeWindow, Vlan, VlanSet};
