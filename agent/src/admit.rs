//! Which circuits of a desired state this node can carry: each is checked on its own,
//! so one the node cannot carry (a port its agent does not have, a label out of range
//! or already taken, one that would clash with a label on another port of the same
//! VXLAN UDP port, more than a port's capacity) is refused by itself and the others are
//! still applied, and circuits that ended still go.

use std::collections::{BTreeMap, BTreeSet};

use sluice_model::dataplane::{Desired, NodeCircuit};

use crate::config::AgentConfig;
use crate::linux::{MAX_LABEL, PlanError};

/// A circuit the node does not carry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub id: String,
    pub reason: PlanError,
}

/// The circuits of `desired` the node can carry, and those it refuses. Circuits it
/// carries already (`carried`) come first, so a new circuit never pushes a running one
/// off; then the others in the order sent. The result keeps the order of `desired`.
pub fn admit(cfg: &AgentConfig, desired: &Desired, carried: &Desired) -> (Desired, Vec<Refused>) {
    let running: BTreeSet<&str> = carried.circuits.iter().map(|c| c.id.as_str()).collect();
    let (old, new): (Vec<&NodeCircuit>, Vec<&NodeCircuit>) = desired
        .circuits
        .iter()
        .partition(|c| running.contains(c.id.as_str()));
    let mut taken: BTreeMap<(usize, u32), &str> = BTreeMap::new();
    // The kernel takes a VNI once per VXLAN UDP port: (UDP port, label) → (port, circuit).
    let mut vnis: BTreeMap<(u16, u32), (usize, &str)> = BTreeMap::new();
    let mut reserved: Vec<u64> = vec![0; cfg.ports.len()];
    let mut accepted = Desired {
        version: desired.version,
        circuits: Vec::with_capacity(desired.circuits.len()),
    };
    let mut refused = Vec::new();
    'circuits: for c in old.into_iter().chain(new) {
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
            let why = why.or_else(|| {
                let (pi, p) = cfg.port(&end.port).expect("checked above");
                let clash = |(other_pi, first): (usize, &str)| {
                    (other_pi != pi).then(|| PlanError::SharedVni {
                        circuit: c.id.clone(),
                        label: end.label,
                        port: end.port.clone(),
                        first: first.to_string(),
                        other_port: cfg.ports[other_pi].name.clone(),
                        vxlan_port: p.vxlan_port,
                    })
                };
                vnis.get(&(p.vxlan_port, end.label))
                    .and_then(|&x| clash(x))
                    .or_else(|| {
                        // This circuit's own other end.
                        ends.iter()
                            .find(|&&(q, l)| {
                                l == end.label && cfg.ports[q].vxlan_port == p.vxlan_port
                            })
                            .and_then(|&(q, _)| clash((q, c.id.as_str())))
                    })
            });
            if let Some(why) = why {
                refused.push(Refused {
                    id: c.id.clone(),
                    reason: why,
                });
                continue 'circuits;
            }
            let (pi, _) = cfg.port(&end.port).expect("checked above");
            ends.push((pi, end.label));
        }
        // A→Z leaves through z, Z→A through a (both may be one port).
        let mut after = reserved.clone();
        for (&(pi, _), rate) in [(&ends[1], c.rate_az), (&ends[0], c.rate_za)] {
            after[pi] += rate.0;
        }
        if let Some(pi) = (0..cfg.ports.len()).find(|&pi| after[pi] > cfg.ports[pi].capacity.0) {
            let p = &cfg.ports[pi];
            refused.push(Refused {
                id: c.id.clone(),
                reason: PlanError::OverCapacity {
                    port: p.name.clone(),
                    reserved: after[pi],
                    capacity: p.capacity.0,
                },
            });
            continue 'circuits;
        }
        reserved = after;
        for &(pi, label) in &ends {
            taken.insert((pi, label), &c.id);
            vnis.insert((cfg.ports[pi].vxlan_port, label), (pi, &c.id));
        }
        accepted.circuits.push(c.clone());
    }
    let order: BTreeMap<&str, usize> = desired
        .circuits
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    accepted.circuits.sort_by_key(|c| order[c.id.as_str()]);
    refused.sort_by_key(|r| order[r.id.as_str()]);
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
        let port = |name: &str, dev: &str, vxlan_port: u16| PortConfig {
            name: name.into(),
            dev: dev.into(),
            capacity: Mbps(1000),
            local: Ipv4Addr::new(10, 0, 0, 1),
            remote: Ipv4Addr::new(10, 0, 0, 2),
            vxlan_port,
        };
        AgentConfig {
            node: "r1".into(),
            netns: None,
            ports: vec![port("a", "p0", 4789), port("b", "p1", 4790)],
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
        let (ok, refused) = admit(&cfg(), &desired, &Desired::default());
        assert_eq!(ok.version, 7);
        let ids: Vec<&str> = ok.circuits.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1", "c6"]);
        let why: Vec<(String, String)> = refused
            .iter()
            .map(|r| (r.id.clone(), r.reason.to_string()))
            .collect();
        assert_eq!(
            why,
            vec![
                (
                    "c2".to_string(),
                    "circuit c2: no port nope on this node".to_string()
                ),
                (
                    "c3".to_string(),
                    "circuits c1 and c3 both use label 100 on port a".to_string()
                ),
                (
                    "c4".to_string(),
                    "circuit c4: label 5000 is outside 1-4094".to_string()
                ),
                (
                    "c5".to_string(),
                    "port a: circuits reserve 1100 Mb/s of its 1000 Mb/s".to_string()
                ),
                (
                    "c7".to_string(),
                    "circuits c7 and c7 both use label 106 on port a".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_label_kept_through_the_node_needs_ports_on_different_vxlan_udp_ports() {
        // a and b on different UDP ports: label 100 on both is fine.
        let one = Desired {
            version: 1,
            circuits: vec![circuit("c1", ("a", 100), ("b", 100), 10)],
        };
        assert!(admit(&cfg(), &one, &Desired::default()).1.is_empty());
        // On one UDP port: refused, naming both ports; and so is a second circuit whose
        // label there clashes with the first's on the other port.
        let mut shared = cfg();
        shared.ports[1].vxlan_port = 4789;
        let (_, refused) = admit(&shared, &one, &Desired::default());
        assert_eq!(
            refused[0].reason.to_string(),
            "circuit c1: label 100 on port b clashes with c1's on port a: both use VXLAN UDP port 4789, where a VNI is taken once (give the ports different vxlan_port)"
        );
        let two = Desired {
            version: 2,
            circuits: vec![
                circuit("c1", ("a", 100), ("b", 200), 10),
                circuit("c2", ("a", 300), ("b", 100), 10),
            ],
        };
        let (ok, refused) = admit(&shared, &two, &Desired::default());
        assert_eq!(ok.circuits.len(), 1);
        assert_eq!(refused[0].id, "c2");
        assert!(matches!(refused[0].reason, PlanError::SharedVni { .. }));
    }

    #[test]
    fn a_circuit_carried_already_keeps_its_place_against_a_new_one() {
        let running = circuit("r-f00", ("a", 100), ("b", 100), 700);
        let carried = Desired {
            version: 1,
            circuits: vec![running.clone()],
        };
        // The new one sorts first by id, but the running one keeps the capacity.
        let desired = Desired {
            version: 2,
            circuits: vec![circuit("r-0aa", ("a", 101), ("b", 101), 700), running],
        };
        let (ok, refused) = admit(&cfg(), &desired, &carried);
        assert_eq!(ok.circuits.len(), 1);
        assert_eq!(ok.circuits[0].id, "r-f00");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].id, "r-0aa");
    }

    #[test]
    fn both_directions_on_one_port_count_together() {
        // 600 each way, both leaving through port a: 1200 of its 1000.
        let hairpin = circuit("h1", ("a", 100), ("a", 101), 600);
        let (ok, refused) = admit(
            &cfg(),
            &Desired {
                version: 1,
                circuits: vec![hairpin],
            },
            &Desired::default(),
        );
        assert!(ok.circuits.is_empty());
        assert_eq!(
            refused[0].reason.to_string(),
            "port a: circuits reserve 1200 Mb/s of its 1000 Mb/s"
        );
        // 400 each way fits, and the plan of what is admitted holds.
        let fits = Desired {
            version: 1,
            circuits: vec![circuit("h2", ("a", 100), ("a", 101), 400)],
        };
        let (ok, refused) = admit(&cfg(), &fits, &Desired::default());
        assert!(refused.is_empty());
        assert!(crate::linux::plan(&cfg(), &ok, &Default::default()).is_ok());
    }
}
