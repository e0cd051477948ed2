//! The Linux backend on a real kernel: a network namespace that the test makes (and
//! removes, also on failure) stands for a router with three ports. Needs root (CI runs
//! as root); without it the test says so and checks nothing else.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::circuit;
use sluice_agent::lab::{Netns, is_root};
use sluice_agent::linux::{BEST_EFFORT, LinuxNode, wire_kbit};
use sluice_agent::{AgentConfig, Desired, PortConfig};
use sluice_model::Mbps;

#[test]
fn a_router_namespace_converges_idempotently_and_is_left_clean() {
    if !is_root() {
        eprintln!("skipped: creating network namespaces needs root (CI runs as root)");
        return;
    }
    let ns = Netns::new("r1");
    // Three ports, each a veth whose peer stays in the namespace (the other end of the
    // link does not matter to this node's configuration).
    let mut ports = Vec::new();
    for (i, name) in ["xe-0", "xe-1", "xe-2"].iter().enumerate() {
        let (dev, peer) = (format!("p{i}"), format!("q{i}"));
        ns.ip(&format!("link add {dev} type veth peer name {peer}"));
        ns.ip(&format!("addr add 10.{i}.0.1/30 dev {dev}"));
        ns.ip(&format!("link set {dev} up"));
        ns.ip(&format!("link set {peer} up"));
        ports.push(PortConfig {
            name: name.to_string(),
            dev,
            capacity: Mbps(1000),
            local: Ipv4Addr::new(10, i as u8, 0, 1),
            remote: Ipv4Addr::new(10, i as u8, 0, 2),
            vxlan_port: 4789 + i as u16,
        });
    }
    let cfg = AgentConfig {
        node: "r1".into(),
        netns: Some(ns.0.clone()),
        ports,
    };
    let node = LinuxNode::new(cfg.netns.clone());
    let desired = Desired {
        version: 1,
        circuits: vec![
            circuit("c1", ("xe-0", 150), ("xe-1", 3001), 200, 200),
            circuit("c2", ("xe-0", 151), ("xe-2", 3002), 300, 0),
        ],
    };
    let done = node.converge(&cfg, &desired).expect("applied and checked");
    assert!(!done.is_empty());
    let cur = node.read(&cfg).unwrap();
    assert_eq!(cur.links["vx1.3001"].master.as_deref(), Some("xc0.150"));
    // Rates on the wire: full-size VXLAN frames carry the booked IP rate.
    let wire = |mbps| wire_kbit(Mbps(mbps)) * 1000;
    assert_eq!(
        cur.ports["p1"].classes[&(0x1000 + 3001)].rate_bps,
        wire(200)
    );
    assert_eq!(
        cur.ports["p1"].classes[&BEST_EFFORT].rate_bps,
        1_000_000_000 - wire(200)
    );
    // Applying twice changes nothing.
    assert!(node.converge(&cfg, &desired).unwrap().is_empty());

    // A change touches only what changed: c1's bridge is the same device afterwards.
    let ifindex = |name: &str| {
        let out = Command::new("ip")
            .args(["-n", &ns.0, "-j", "link", "show", name])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["ifindex"].as_u64().unwrap()
    };
    let before = ifindex("xc0.150");
    let second = Desired {
        version: 2,
        circuits: vec![circuit("c1", ("xe-0", 150), ("xe-1", 3001), 250, 200)],
    };
    node.converge(&cfg, &second).unwrap();
    assert_eq!(ifindex("xc0.150"), before, "c1 was not rebuilt");
    let cur = node.read(&cfg).unwrap();
    assert!(!cur.links.contains_key("xc0.151"));
    assert_eq!(
        cur.ports["p1"].classes[&(0x1000 + 3001)].rate_bps,
        wire(250)
    );

    // Nothing wanted: nothing of any circuit is left.
    node.converge(&cfg, &Desired::default()).unwrap();
    let cur = node.read(&cfg).unwrap();
    assert!(
        cur.links
            .keys()
            .all(|n| !n.starts_with("vx") && !n.starts_with("xc")),
        "{:?}",
        cur.links.keys()
    );
    for q in cur.ports.values() {
        assert!(q.filters.is_empty());
        assert_eq!(
            q.classes.keys().copied().collect::<Vec<_>>(),
            [1, BEST_EFFORT]
        );
    }
}
