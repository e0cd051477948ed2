//! Helpers for the tests that make network namespaces (see `sluice_agent::lab`).

#![allow(dead_code)]

use sluice_agent::NodeCircuit;
use sluice_model::Mbps;

pub fn circuit(id: &str, a: (&str, u32), z: (&str, u32), az: u64, za: u64) -> NodeCircuit {
    NodeCircuit::new(id, a, z, Mbps(az), Mbps(za))
}
