//! A node's desired data plane, model ⇄ wire.

use sluice_model::dataplane::{CircuitEnd, Desired, NodeCircuit};
use sluice_model::{Error, Mbps};

use crate::v1;

pub fn desired(node: &str, d: &Desired) -> v1::DesiredState {
    v1::DesiredState {
        node: node.to_string(),
        version: d.version,
        circuits: d
            .circuits
            .iter()
            .map(|c| v1::NodeCircuit {
                id: c.id.clone(),
                a_port: c.a.port.clone(),
                a_label: c.a.label,
                z_port: c.z.port.clone(),
                z_label: c.z.label,
                rate_az_mbps: c.rate_az.0,
                rate_za_mbps: c.rate_za.0,
            })
            .collect(),
    }
}

/// The desired state and the node it is for; a circuit without an id or a port is
/// refused, naming it.
pub fn desired_from_wire(d: &v1::DesiredState) -> Result<(String, Desired), Error> {
    let mut circuits = Vec::with_capacity(d.circuits.len());
    for (i, c) in d.circuits.iter().enumerate() {
        let at = |f: &str| format!("circuits[{i}].{f}");
        for (value, field) in [(&c.id, "id"), (&c.a_port, "a_port"), (&c.z_port, "z_port")] {
            if value.is_empty() {
                return Err(Error::missing(at(field)));
            }
        }
        circuits.push(NodeCircuit {
            id: c.id.clone(),
            a: CircuitEnd {
                port: c.a_port.clone(),
                label: c.a_label,
            },
            z: CircuitEnd {
                port: c.z_port.clone(),
                label: c.z_label,
            },
            rate_az: Mbps(c.rate_az_mbps),
            rate_za: Mbps(c.rate_za_mbps),
        });
    }
    Ok((
        d.node.clone(),
        Desired {
            version: d.version,
            circuits,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_desired_state_survives_the_wire_and_a_missing_port_is_named() {
        let d = Desired {
            version: 7,
            circuits: vec![NodeCircuit {
                id: "internet2-1".into(),
                a: CircuitEnd {
                    port: "xe-0/0/0".into(),
                    label: 150,
                },
                z: CircuitEnd {
                    port: "et-1/0/0".into(),
                    label: 151,
                },
                rate_az: Mbps(200),
                rate_za: Mbps(0),
            }],
        };
        let (node, back) = desired_from_wire(&desired("houston", &d)).unwrap();
        assert_eq!((node.as_str(), back), ("houston", d.clone()));
        let mut wire = desired("houston", &d);
        wire.circuits[0].z_port.clear();
        let e = desired_from_wire(&wire).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("circuits[0].z_port"));
    }
}
