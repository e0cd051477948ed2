//! What one node must carry: the circuits through it, each a cross-connect between two of
//! its ports with a label on each, and a reserved rate each way. Sent whole by the IDC
//! with a version; the agent makes the data plane match it.

use crate::units::Mbps;

/// One end of a circuit on this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitEnd {
    /// The port's name in the domain topology (`xe-0/0/0`).
    pub port: String,
    /// The circuit's label on that port (its VLAN in the topology).
    pub label: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCircuit {
    /// The reservation (or occurrence) id.
    pub id: String,
    pub a: CircuitEnd,
    pub z: CircuitEnd,
    /// Reserved A→Z (leaving through `z`) and Z→A (leaving through `a`).
    pub rate_az: Mbps,
    pub rate_za: Mbps,
}

/// Every circuit the node must carry now, as of `version`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub version: u64,
    pub circuits: Vec<NodeCircuit>,
}
