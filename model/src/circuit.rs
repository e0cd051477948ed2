//! Circuits across domains, as their aggregator sees them: one segment per domain.

use chrono::{DateTime, Utc};

use crate::reservation::States;
use crate::units::Vlan;

/// One domain's part of a circuit across domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitSegment {
    /// From 0, in order from the source.
    pub index: u32,
    pub domain: String,
    /// The reservation's id in that domain.
    pub segment_id: String,
    /// For an occurrence of a recurring circuit: the series it is part of in that domain.
    pub series_id: Option<String>,
    pub ingress: String,
    pub ingress_vlan: Vlan,
    pub egress: String,
    pub egress_vlan: Vlan,
    /// As that domain last reported them.
    pub states: States,
    /// Its one word (held, committed, active, aborted, ...), as that domain gave it.
    pub summary: String,
    pub updated_at: DateTime<Utc>,
    /// Why the domain could not be asked just now (never stored).
    pub error: Option<String>,
}
