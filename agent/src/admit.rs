//! Which circuits of a desired state this node can carry: each is checked on its own,
//! so one the node cannot carry (a port its agent does not have, a label out of range
//! or already taken, more than a port's capacity) is refused by itself and the others
//! are still applied, and circuits that ended still go.

use std::collections::BTreeMap;

use sluice_model::dataplane::Desired;

use crate::config::AgentConfig;
use crate::linux::{MAX_LABEL, PlanError};

/// A circuit the node does not carry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub id: String,
    pub reason: String,
}

/// The circuits of `desired` the node can carry (in order, first come first served:
/// the IDC sends them sorted by id), and those it refuses.
pub fn admit(cfg: &AgentConfig, desired: &Desired) -> (Desired, Vec<Refused>) {
    let mut taken: BTreeMap<(usize, u32), &str> = BTreeMap::new();
    let mut reserved: Vec<u64> = vec![0; cfg.ports.len()];
    let mut accepted = Desired {
        version: desired.version,
        circuits: Vec::with_capacity(desired.circuits.len()),
    };
    let mut refused = Vec::new();
    'circuits: for c in &desired.circuits {
        let mut ends = Vec::with_capacity(2);
        for end in [&c.a, &c.z] {
            let why = match cfg.port(&end.port) {
                None => Some(PlanError::UnknownPort {
                    circuit: c.id.clone(),
                    port: end.port.clone(),
                }),
                Some(_) if end.label == 0 || end.label > MAX_LABEL => Some(PlanError::BadLabel {
                    circuit: c.id.clone(),
                    label: end.label,
                }),
                Some((pi, _)) => taken
                    .get(&(pi, end.label))
                    .copied()
                    .or_else(|| {
                        // Both ends on one port with one label.
                        ends.contains(&(pi, end.label)).then_some(c.id.as_str())
                    })
                    .map(|first| PlanError::LabelTaken {
                        first: first.to_string(),
                        second: c.id.clone(),
                        port: end.port.clone(),
                        label: end.label,
                    }),
            };
            if let Some(why) = why {
                refused.push(Refused {
                    id: c.id.clone(),
                    reason: why.to_string(),
                });
                continue 'circuits;
            }
            let (pi, _) = cfg.port(&end.port).expect("checked above");
            ends.push((pi, end.label));
        }
        // A→Z leaves through z, Z→A through a.
        for (&(pi, _), rate) in [(&ends[1], c.rate_az), (&ends[0], c.rate_za)] {
            let p = &cfg.ports[pi];
            if reserved[pi] + rate.0 > p.capacity.0 {
                refused.push(Refused {
                    id: c.id.clone(),
                    reason: PlanError::OverCapacity {
                        port: p.name.clone(),
                        reserved: reserved[pi] + rate.0,
                        capacity: p.capacity.0,
                    }
                    .to_string(),
                });
                continue 'circuits;
            }
        }
        for (&(pi, _), rate) in [(&ends[1], c.rate_az), (&ends[0], c.rate_za)] {
            reserved[pi] += rate.0;
        }
        for &(pi, label) in &ends {
            taken.insert((pi, label), &c.id);
        }
        accepted.circuits.push(c.clone());
    }
    (accepted, refused)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use sluice_model::Mbps;
    use sluice_model::dataplane::NodeCircuit;

    use super::*;
    use crate::config::PortConfig;

    fn cfg() -> AgentConfig {
        let port = |name: &str, dev: &str| PortConfig {
            name: name.into(),
            dev: dev.into(),
            capacity: Mbps(1000),
            local: Ipv4Addr::new(10, 0, 0, 1),
            remote: Ipv4Addr::new(10, 0, 0, 2),
        };
        AgentConfig {
            node: "r1".into(),
            netns: None,
            ports: vec![port("a", "p0"), port("b", "p1")],
        }
    }

    fn circuit(id: &str, a: (&str, u32), z: (&str, u32), mbps: u64) -> NodeCircuit {
        NodeCircuit::new(id, a, z, Mbps(mbps), Mbps(mbps))
    }

    #[test]
    fn each_circuit_the_node_cannot_carry_is_refused_alone() {
        let desired = Desired {
            version: 7,
            circuits: vec![
                circuit("c1", ("a", 100), ("b", 100), 400),
                circuit("c2", ("a", 101), ("nope", 100), 10),
                circuit("c3", ("a", 100), ("b", 102), 10),
                circuit("c4", ("a", 103), ("b", 5000), 10),
                circuit("c5", ("a", 104), ("b", 104), 700),
                circuit("c6", ("a", 105), ("b", 105), 600),
                circuit("c7", ("a", 106), ("a", 106), 1),
            ],
        };
        let (ok, refused) = admit(&cfg(), &desired);
        assert_eq!(ok.version, 7);
        let ids: Vec<&str> = ok.circuits.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1", "c6"]);
        let why: Vec<(&str, &str)> = refused
            .iter()
            .map(|r| (r.id.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            why,
            [
                ("c2", "circuit c2: no port nope on this node"),
                ("c3", "circuits c1 and c3 both use label 100 on port a"),
                ("c4", "circuit c4: label 5000 is outside 1-4094"),
                ("c5", "port b: circuits reserve 1100 Mb/s of its 1000 Mb/s"),
                ("c7", "circuits c7 and c7 both use label 106 on port a"),
            ]
        );
    }
}
