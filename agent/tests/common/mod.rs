//! Helpers for the tests that make network namespaces (see `sluice_agent::lab`).

#![allow(dead_code)]

use sluice_agent::{CircuitEnd, NodeCircuit};
use sluice_model::Mbps;

pub fn circuit(id: &str, a: (&str, u32), z: (&str, u32), az: u64, za: u64) -> NodeCircuit {
    NodeCircuit {
        id: id.into(),
        a: CircuitEnd {
            port: a.0.into(),
            label: a.1,
        },
        z: CircuitEnd {
            port: z.0.into(),
            label: z.1,
        },
        rate_az: Mbps(az),
        rate_za: Mbps(za),
    }
}
