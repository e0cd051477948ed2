//! A circuit's status as one domain sees its part: states, each node's agent and
//! counters, the last measurement. What a domain shows a peer is its policy.

use crate::dataplane::NodeReport;
use crate::{Measurement, States};

/// How much of a segment's status a domain shows the peer whose circuit it is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusShare {
    /// States, nodes with their agents and counters, and the last measurement.
    #[default]
    Full,
    /// The states only.
    States,
    /// Nothing: the peer's status request is refused.
    Nothing,
}

impl StatusShare {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusShare::Full => "full",
            StatusShare::States => "states",
            StatusShare::Nothing => "none",
        }
    }

    pub fn parse(s: &str) -> Option<StatusShare> {
        [StatusShare::Full, StatusShare::States, StatusShare::Nothing]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Bytes, packets and drops of a circuit's queue on one node, one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
}

/// Whether a node's agent answered just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentHealth {
    Answered,
    /// It did not answer: why.
    Unreachable(String),
    /// This IDC drives no agent for the node.
    NotDriven,
}

impl AgentHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentHealth::Answered => "up",
            AgentHealth::Unreachable(_) => "unreachable",
            AgentHealth::NotDriven => "none",
        }
    }
}

/// One node of a segment's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// What its agent last answered for the circuit.
    pub report: NodeReport,
    pub agent: AgentHealth,
    /// The circuit's queue counters on the node (A→Z, Z→A), if the agent answered and
    /// carries it.
    pub counters: Option<(Counters, Counters)>,
}

/// One domain's part of a circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainStatus {
    pub domain: String,
    /// The reservation there (for the domain that holds the circuit: the circuit's own
    /// segment).
    pub segment_id: String,
    pub states: States,
    pub summary: String,
    pub shared: StatusShare,
    pub nodes: Vec<NodeStatus>,
    pub last_measurement: Option<Measurement>,
}

impl DomainStatus {
    /// What `share` lets a peer see of it.
    pub fn restricted(mut self, share: StatusShare) -> DomainStatus {
        if share != StatusShare::Full {
            self.nodes.clear();
            self.last_measurement = None;
        }
        // Who measured is this domain's user: not the peer's business.
        if let Some(m) = &mut self.last_measurement {
            m.who.clear();
        }
        self.shared = share;
        self
    }
}
