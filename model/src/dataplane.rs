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

impl NodeCircuit {
    /// A circuit between `(port, label)` ends `a` and `z`.
    pub fn new(id: &str, a: (&str, u32), z: (&str, u32), rate_az: Mbps, rate_za: Mbps) -> Self {
        let end = |(port, label): (&str, u32)| CircuitEnd {
            port: port.to_string(),
            label,
        };
        NodeCircuit {
            id: id.to_string(),
            a: end(a),
            z: end(z),
            rate_az,
            rate_za,
        }
    }
}

/// Every circuit the node must carry now, as of `version`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub version: u64,
    pub circuits: Vec<NodeCircuit>,
}

/// A circuit on one node, as that node's agent last answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// The agent has the circuit.
    Applied,
    /// The agent could not be reached, or could not apply (or remove) it.
    Failed,
    /// The agent took it away after the circuit went down.
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Applied => "applied",
            NodeState::Failed => "failed",
            NodeState::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        [NodeState::Applied, NodeState::Failed, NodeState::Removed]
            .into_iter()
            .find(|n| n.as_str() == s)
    }
}

/// What a reservation's data plane is on one node of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: String,
    /// `None`: no agent has answered for it yet.
    pub state: Option<NodeState>,
    /// Why it failed; empty otherwise.
    pub error: String,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A reservation's circuit on each node of its path, in path order: `(node id, circuit)`.
/// Each node cross-connects the port the circuit enters by (with the label it has on
/// that link or end port) and the port it leaves by; A→Z is the reservation's source to
/// destination. `None` if the path no longer matches the topology.
pub fn node_circuits(
    topo: &crate::Topology,
    r: &crate::Reservation,
) -> Option<Vec<(String, NodeCircuit)>> {
    let src = topo.port_by_stp(&r.src.stp)?;
    let dst = topo.port_by_stp(&r.dst.stp)?;
    // The ports of each node along the path, entering and leaving, with their labels.
    let mut at = topo.port(src).node;
    let mut entering = (src, u32::from(r.src.vlan.id()));
    let mut out = Vec::with_capacity(r.path.len() + 1);
    let end = |port: usize, label: u32| CircuitEnd {
        port: topo.port(port).name.clone(),
        label,
    };
    for hop in &r.path {
        let l = topo.link_by_id(&hop.link)?;
        let link = topo.link(l);
        let (here, there) = if topo.port(link.a).node == at {
            (link.a, link.b)
        } else if topo.port(link.b).node == at {
            (link.b, link.a)
        } else {
            return None;
        };
        let label = u32::from(hop.vlan.unwrap_or(r.src.vlan).id());
        out.push((
            topo.node(at).id.clone(),
            NodeCircuit {
                id: r.id.clone(),
                a: end(entering.0, entering.1),
                z: end(here, label),
                rate_az: r.bw,
                rate_za: r.bw_reverse,
            },
        ));
        at = topo.port(there).node;
        entering = (there, label);
    }
    if topo.port(dst).node != at {
        return None;
    }
    out.push((
        topo.node(at).id.clone(),
        NodeCircuit {
            id: r.id.clone(),
            a: end(entering.0, entering.1),
            z: end(dst, u32::from(r.dst.vlan.id())),
            rate_az: r.bw,
            rate_za: r.bw_reverse,
        },
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::topology::fixture;
    use crate::{Criteria, Ero, PathHop, Reservation, StpRequest, TimeWindow, Vlan};

    fn reservation(src: &str, dst: &str, hops: &[(&str, &str, &str, u16)]) -> Reservation {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let c = Criteria {
            src: StpRequest::parse(src).unwrap(),
            dst: StpRequest::parse(dst).unwrap(),
            bw: Mbps(200),
            bw_reverse: Some(Mbps(50)),
            window: TimeWindow::new(t(100), t(200)).unwrap(),
            ero: Ero::default(),
            description: String::new(),
            auto_provision: true,
        };
        let v = |n| Vlan::new(n).unwrap();
        let path = hops
            .iter()
            .map(|(link, from, to, vlan)| PathHop {
                link: link.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                vlan: Some(v(*vlan)),
            })
            .collect();
        Reservation::held(
            "r1".into(),
            "u".into(),
            &c,
            v(110),
            v(120),
            path,
            t(0),
            chrono::TimeDelta::seconds(60),
        )
        .0
    }

    fn ends(c: &NodeCircuit) -> (String, u32, String, u32) {
        (c.a.port.clone(), c.a.label, c.z.port.clone(), c.z.label)
    }

    #[test]
    fn each_node_cross_connects_the_ports_it_is_entered_and_left_by() {
        let topo = fixture::from_links("d", &[("a", "b", 1000, 1), ("b", "c", 1000, 1)], 1000);
        // a → b → c, VLAN 150 on a-b and 160 on b-c (b translates).
        let r = reservation(
            "d:a:p0",
            "d:c:p0",
            &[("a-b", "a", "b", 150), ("b-c", "b", "c", 160)],
        );
        let got = node_circuits(&topo, &r).unwrap();
        let nodes: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(nodes, ["a", "b", "c"]);
        assert_eq!(ends(&got[0].1), ("p0".into(), 110, "to-b".into(), 150));
        assert_eq!(ends(&got[1].1), ("to-a".into(), 150, "to-c".into(), 160));
        assert_eq!(ends(&got[2].1), ("to-b".into(), 160, "p0".into(), 120));
        assert!(
            got.iter()
                .all(|(_, c)| c.rate_az == Mbps(200) && c.rate_za == Mbps(50))
        );
        // Crossed the other way: c → b → a.
        let r = reservation(
            "d:c:p0",
            "d:a:p0",
            &[("b-c", "c", "b", 160), ("a-b", "b", "a", 150)],
        );
        let got = node_circuits(&topo, &r).unwrap();
        assert_eq!(ends(&got[1].1), ("to-c".into(), 160, "to-a".into(), 150));
        // A path that no longer fits the topology gives nothing.
        let r = reservation("d:a:p0", "d:c:p0", &[("b-c", "b", "c", 160)]);
        assert!(node_circuits(&topo, &r).is_none());
    }
}
