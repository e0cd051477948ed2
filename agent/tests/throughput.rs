//! What the Linux backend delivers, measured with iperf3 on a real kernel: two hosts and
//! two virtual routers as network namespaces, 500 Mb/s links (HTB at each router's egress),
//! a 200 Mb/s circuit host A → host B configured on both routers by the agent's backend,
//! and best-effort traffic flooding the same links. Needs root and iperf3 (CI installs
//! it); without them the test says so and checks nothing else. Every namespace is removed
//! at the end, also on failure; every run is bounded.
//!
//! ```text
//!  hA h0 ── p0 r1 p1 ── p0 r2 p1 ── h0 hB     10.0.0.0/30, 10.1.0.0/30, 10.2.0.0/30
//!     .2     .1    .2     .1    .2     .1
//!  circuit: hA VNI 150 ─ r1 ─ VNI 3001 ─ r2 ─ VNI 160 hB   (192.168.150.1 → .2)
//! ```

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Netns, circuit, ip_root, is_root};
use sluice_agent::linux::LinuxNode;
use sluice_agent::{AgentConfig, Desired, PortConfig};
use sluice_model::Mbps;

const CIRCUIT_MBPS: u64 = 200;
/// The links' capacity: low enough that a UDP flood saturates it even on a busy 2-core
/// machine (at 1 Gb/s the sender itself ran short of CPU under load).
const LINK_MBPS: u64 = 500;

fn has_iperf3() -> bool {
    Command::new("iperf3").arg("--version").output().is_ok()
}

/// An iperf3 server in a namespace, killed when dropped.
struct Server(Child);

impl Server {
    fn start(ns: &Netns, bind: &str, port: u16) -> Server {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "iperf3", "-s", "-B", bind, "-p"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An iperf3 client run in `ns`; the receiver's rate in Mb/s.
fn client(ns: &Netns, args: &str) -> f64 {
    client_in(&ns.0, args)
}

fn client_in(ns: &str, args: &str) -> f64 {
    let out = Command::new("timeout")
        .args(["30", "ip", "netns", "exec", ns, "iperf3", "-J"])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 {args}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .or_else(|| end["sum"]["bits_per_second"].as_f64())
        .unwrap_or_else(|| panic!("iperf3 {args} gave no rate: {v}"));
    bps / 1e6
}

fn port(name: &str, dev: &str, local: [u8; 4], remote: [u8; 4]) -> PortConfig {
    PortConfig {
        name: name.into(),
        dev: dev.into(),
        capacity: Mbps(LINK_MBPS),
        local: Ipv4Addr::from(local),
        remote: Ipv4Addr::from(remote),
    }
}

#[test]
fn a_reserved_circuit_keeps_its_rate_under_a_best_effort_flood_and_no_more() {
    if !is_root() || !has_iperf3() {
        eprintln!("skipped: needs root and iperf3 (CI has both)");
        return;
    }
    let (ha, r1, r2, hb) = (
        Netns::new("ha"),
        Netns::new("r1"),
        Netns::new("r2"),
        Netns::new("hb"),
    );
    // Links: hA-r1, r1-r2, r2-hB.
    for (a, adev, b, bdev, net) in [
        (&ha, "h0", &r1, "p0", 0),
        (&r1, "p1", &r2, "p0", 1),
        (&r2, "p1", &hb, "h0", 2),
    ] {
        ip_root(&format!(
            "link add {adev}x{net} netns {} type veth peer name {bdev}x{net} netns {}",
            a.0, b.0
        ));
        a.ip(&format!("link set {adev}x{net} name {adev}"));
        b.ip(&format!("link set {bdev}x{net} name {bdev}"));
        a.ip(&format!("addr add 10.{net}.0.2/30 dev {adev}"));
        b.ip(&format!("addr add 10.{net}.0.1/30 dev {bdev}"));
        a.ip(&format!("link set {adev} up"));
        b.ip(&format!("link set {bdev} up"));
    }
    // On each link the first side is .2, the second .1: hA .2 / r1 .1, r1 .2 / r2 .1,
    // r2 .2 / hB .1.
    for ns in [&ha, &r1, &r2, &hb] {
        ns.ip("link set lo up");
    }
    for r in [&r1, &r2] {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                &r.0,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    // Best-effort routes: hA ↔ hB through r1 and r2.
    ha.ip("route add 10.0.0.0/8 via 10.0.0.1");
    r1.ip("route add 10.2.0.0/30 via 10.1.0.1");
    r2.ip("route add 10.0.0.0/30 via 10.1.0.2");
    hb.ip("route add 10.0.0.0/8 via 10.2.0.2");

    // The circuit on both routers, through the agent's backend.
    let r1_cfg = AgentConfig {
        node: "r1".into(),
        netns: Some(r1.0.clone()),
        ports: vec![
            port("edge", "p0", [10, 0, 0, 1], [10, 0, 0, 2]),
            port("to-r2", "p1", [10, 1, 0, 2], [10, 1, 0, 1]),
        ],
    };
    let r2_cfg = AgentConfig {
        node: "r2".into(),
        netns: Some(r2.0.clone()),
        ports: vec![
            port("to-r1", "p0", [10, 1, 0, 1], [10, 1, 0, 2]),
            port("edge", "p1", [10, 2, 0, 2], [10, 2, 0, 1]),
        ],
    };
    let on = |cfg: &AgentConfig, a: (&str, u32), z: (&str, u32)| {
        LinuxNode::new(cfg.netns.clone())
            .converge(
                cfg,
                &Desired {
                    version: 1,
                    circuits: vec![circuit("c1", a, z, CIRCUIT_MBPS, CIRCUIT_MBPS)],
                },
            )
            .expect("converged")
    };
    on(&r1_cfg, ("edge", 150), ("to-r2", 3001));
    on(&r2_cfg, ("to-r1", 3001), ("edge", 160));
    // The hosts' ends of the circuit (customer equipment, not the agent's).
    ha.ip("link add c0 type vxlan id 150 local 10.0.0.2 remote 10.0.0.1 dev h0 dstport 4789 nolearning");
    ha.ip("addr add 192.168.150.1/24 dev c0");
    ha.ip("link set c0 up");
    hb.ip("link add c0 type vxlan id 160 local 10.2.0.1 remote 10.2.0.2 dev h0 dstport 4789 nolearning");
    hb.ip("addr add 192.168.150.2/24 dev c0");
    hb.ip("link set c0 up");

    let _circuit_server = Server::start(&hb, "192.168.150.2", 5201);
    let _flood_server = Server::start(&hb, "10.2.0.1", 5202);
    let alone = client(&ha, "-c 192.168.150.2 -p 5201 -t 4");
    // Best effort floods the same links with more than they carry.
    let flood = std::thread::spawn({
        let ha = ha.0.clone();
        move || client_in(&ha, "-c 10.2.0.1 -p 5202 -u -b 1500M -t 7")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let flooded = client(&ha, "-c 192.168.150.2 -p 5201 -t 4");
    let best_effort = flood.join().unwrap();
    // Sent above its reservation, the circuit gets no more than it booked.
    let over = client(&ha, "-c 192.168.150.2 -p 5201 -u -b 400M -t 4");
    eprintln!(
        "circuit {CIRCUIT_MBPS} Mb/s: alone {alone:.1}, under a best-effort flood {flooded:.1} \
         (the flood got {best_effort:.1} meanwhile), sending 400 Mb/s {over:.1}"
    );
    // The flood was real: it took (at least most of) what the circuit left of the links.
    assert!(
        best_effort > 0.4 * LINK_MBPS as f64,
        "best effort only got {best_effort:.1} Mb/s"
    );
    assert!(
        flooded >= 0.95 * CIRCUIT_MBPS as f64,
        "under the flood: {flooded:.1} Mb/s"
    );
    assert!(
        over <= 1.05 * CIRCUIT_MBPS as f64,
        "rate limit: {over:.1} Mb/s"
    );
}
