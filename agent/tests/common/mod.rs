//! Helpers for tests that make network namespaces: each is deleted when dropped, so
//! nothing is left behind, also when a test fails.

#![allow(dead_code)]

use std::process::Command;

use sluice_agent::{CircuitEnd, NodeCircuit};
use sluice_model::Mbps;

/// A namespace that is deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("sluice-t{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &str) {
        let ok = Command::new("ip")
            .args(["-n", &self.0])
            .args(args.split_whitespace())
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip -n {} {args}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

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

/// `ip ARGS` in the root namespace, which must succeed.
pub fn ip_root(args: &str) {
    let ok = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip {args}");
}
