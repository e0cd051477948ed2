//! A data plane lab on this kernel, for the tests and measurements that need real
//! packets: network namespaces as two hosts and two virtual routers in a line, veth
//! links whose capacity the routers' agents shape with HTB, best-effort routes between
//! the hosts, the hosts' ends of a circuit, and iperf3 to measure what gets through.
//! Every namespace is deleted when the lab is dropped, also when a test fails. Needs
//! root; [`Lab::available`] says whether this machine can run it.
//!
//! ```text
//!  hA h0 ── p0 r1 p1 ── p0 r2 p1 ── h0 hB     10.0.0.0/30, 10.1.0.0/30, 10.2.0.0/30
//!     .2     .1    .2     .1    .2     .1
//!  a circuit: hA c0 (VNI = its VLAN at r1 "edge") ─ r1 ─ r2 ─ hB c0 (VNI at r2 "edge")
//!             192.168.150.1 ──────────────────────────────── 192.168.150.2
//! ```
//!
//! The routers' ports, as the topology and the agents name them: r1 `edge` (p0) and
//! `to-r2` (p1); r2 `to-r1` (p0) and `edge` (p1).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_model::Mbps;

use crate::config::{AgentConfig, PortConfig};
use crate::linux::{BEST_EFFORT, LinuxNode};

/// The circuit's addresses on the hosts.
pub const HOST_A_CIRCUIT: &str = "192.168.150.1";
pub const HOST_B_CIRCUIT: &str = "192.168.150.2";
/// hB's best-effort address.
pub const HOST_B: &str = "10.2.0.1";

/// A network namespace, deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    /// `sluice-t<pid>-<tag>`: unique per process, recognisable if one is ever left.
    pub fn new(tag: &str) -> Netns {
        let name = format!("sluice-t{}-{tag}", std::process::id());
        // A namespace of a crashed earlier run of this pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &str) {
        let ok = Command::new("ip")
            .args(["-n", &self.0])
            .args(args.split_whitespace())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip -n {} {args}", self.0);
    }

    /// The MAC address of interface `dev`.
    pub fn mac(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-j", "link", "show", "dev", dev])
            .output()
            .expect("ip link show");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address of {dev} in {}", self.0))
            .to_string()
    }

    /// A command run in the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
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

pub fn has_iperf3() -> bool {
    Command::new("iperf3").arg("--version").output().is_ok()
}

/// `ip ARGS` in the root namespace, which must succeed.
pub fn ip_root(args: &str) {
    let ok = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args}");
}

/// veth links `(a, its interface, b, its interface, n)`: `a` gets 10.n.0.2/30, `b`
/// 10.n.0.1/30, both up. Made in the root namespace with names unique to this process
/// and lab, then moved and renamed.
fn veth_links(tag: &str, links: &[(&Netns, &str, &Netns, &str, u8)]) {
    let pid = std::process::id() % 100_000;
    for &(a, adev, b, bdev, net) in links {
        let (x, y) = (format!("sl{pid}{tag}{net}a"), format!("sl{pid}{tag}{net}b"));
        ip_root(&format!(
            "link add {x} netns {} type veth peer name {y} netns {}",
            a.0, b.0
        ));
        a.ip(&format!("link set {x} name {adev}"));
        b.ip(&format!("link set {y} name {bdev}"));
        a.ip(&format!("addr add 10.{net}.0.2/30 dev {adev}"));
        b.ip(&format!("addr add 10.{net}.0.1/30 dev {bdev}"));
        a.ip(&format!("link set {adev} up"));
        b.ip(&format!("link set {bdev} up"));
    }
}

pub struct Lab {
    pub ha: Netns,
    pub r1: Netns,
    pub r2: Netns,
    pub hb: Netns,
    pub link: Mbps,
    /// In the lab across three domains ([`Lab::across_three_domains`]): the router of
    /// the middle domain, between r1 and r2.
    pub rt: Option<Netns>,
}

impl Lab {
    /// Whether this machine can run the lab with measurements: root and iperf3.
    pub fn available() -> Result<(), &'static str> {
        if !is_root() {
            return Err("needs root (CI runs as root)");
        }
        if !has_iperf3() {
            return Err("needs iperf3 (.ci/run installs it)");
        }
        Ok(())
    }

    /// The hosts, routers and links, with best-effort routes between the hosts. `tag`
    /// keeps the namespaces of labs in one process apart; `link` is what the routers'
    /// ports are shaped to (by their agents).
    pub fn new(tag: &str, link: Mbps) -> Lab {
        // Interface names are at most 15 bytes: `sl` + pid + tag + 2.
        assert!(tag.len() <= 4, "lab tag {tag:?}: at most 4 bytes");
        let lab = Lab {
            ha: Netns::new(&format!("{tag}ha")),
            r1: Netns::new(&format!("{tag}r1")),
            r2: Netns::new(&format!("{tag}r2")),
            hb: Netns::new(&format!("{tag}hb")),
            link,
            rt: None,
        };
        veth_links(
            tag,
            &[
                (&lab.ha, "h0", &lab.r1, "p0", 0),
                (&lab.r1, "p1", &lab.r2, "p0", 1),
                (&lab.r2, "p1", &lab.hb, "h0", 2),
            ],
        );
        for ns in [&lab.ha, &lab.r1, &lab.r2, &lab.hb] {
            ns.ip("link set lo up");
        }
        for r in [&lab.r1, &lab.r2] {
            let ok = r
                .command("sysctl")
                .args(["-qw", "net.ipv4.ip_forward=1"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip_forward in {}", r.0);
        }
        lab.ha.ip("route add 10.0.0.0/8 via 10.0.0.1");
        lab.r1.ip("route add 10.2.0.0/30 via 10.1.0.1");
        lab.r2.ip("route add 10.0.0.0/30 via 10.1.0.2");
        lab.hb.ip("route add 10.0.0.0/8 via 10.2.0.2");
        lab
    }

    /// The lab across three domains, one router each: `a` is r1, `b` the transit router
    /// rt, `c` is r2; the hosts as in the two-router lab (hA at r1's `edge`, hB at r2's).
    /// The inter-domain links are the routers' `to-<domain>` ports. No best-effort routes:
    /// only circuits cross it.
    ///
    /// ```text
    ///  hA h0 ── p0 r1 p1 ── p0 rt p1 ── p0 r2 p1 ── h0 hB   10.0/30, 10.1/30, 10.3/30, 10.2/30
    /// ```
    pub fn across_three_domains(tag: &str, link: Mbps) -> Lab {
        assert!(tag.len() <= 4, "lab tag {tag:?}: at most 4 bytes");
        let lab = Lab {
            ha: Netns::new(&format!("{tag}ha")),
            r1: Netns::new(&format!("{tag}r1")),
            r2: Netns::new(&format!("{tag}r2")),
            hb: Netns::new(&format!("{tag}hb")),
            link,
            rt: Some(Netns::new(&format!("{tag}rt"))),
        };
        let rt = lab.rt.as_ref().expect("just made");
        veth_links(
            tag,
            &[
                (&lab.ha, "h0", &lab.r1, "p0", 0),
                (&lab.r1, "p1", rt, "p0", 1),
                (rt, "p1", &lab.r2, "p0", 3),
                (&lab.r2, "p1", &lab.hb, "h0", 2),
            ],
        );
        for ns in [&lab.ha, &lab.r1, rt, &lab.r2, &lab.hb] {
            ns.ip("link set lo up");
        }
        lab
    }

    /// The three domains' topologies (`a`, `b`, `c`), in the topology file's format:
    /// edge ports carry VLANs 100-999, the inter-domain links 3000-3099, every router
    /// translates.
    pub fn domain_topologies_toml(&self) -> [(&'static str, String); 3] {
        let m = self.link.0;
        let one = |domain: &str, node: &str, ports: &[(&str, &str, Option<&str>)]| {
            let ports: Vec<String> = ports
                .iter()
                .map(|(name, vlans, peer)| {
                    let peer = peer.map_or(String::new(), |p| format!(", peer = \"{p}\""));
                    format!(
                        "  {{ name = \"{name}\", vlans = \"{vlans}\", capacity_mbps = {m}{peer} }},"
                    )
                })
                .collect();
            format!(
                "[domain]\nid = \"{domain}\"\n\n[[node]]\nid = \"{node}\"\nvlan_translation = true\nports = [\n{}\n]\n",
                ports.join("\n")
            )
        };
        [
            (
                "a",
                one(
                    "a",
                    "r1",
                    &[
                        ("edge", "100-999", None),
                        ("to-b", "3000-3099", Some("b:rt:to-a")),
                    ],
                ),
            ),
            (
                "b",
                one(
                    "b",
                    "rt",
                    &[
                        ("to-a", "3000-3099", Some("a:r1:to-b")),
                        ("to-c", "3000-3099", Some("c:r2:to-b")),
                    ],
                ),
            ),
            (
                "c",
                one(
                    "c",
                    "r2",
                    &[
                        ("to-b", "3000-3099", Some("b:rt:to-c")),
                        ("edge", "100-999", None),
                    ],
                ),
            ),
        ]
    }

    /// Every router's agent configuration: r1 and r2 (and rt, across three domains).
    pub fn all_agent_configs(&self) -> Vec<AgentConfig> {
        let Some(rt) = &self.rt else {
            let (a, b) = self.agent_configs();
            return vec![a, b];
        };
        vec![
            AgentConfig {
                node: "r1".into(),
                netns: Some(self.r1.0.clone()),
                ports: vec![
                    self.port("edge", "p0", [10, 0, 0, 1], [10, 0, 0, 2]),
                    self.port_on("to-b", "p1", [10, 1, 0, 2], [10, 1, 0, 1], 4790),
                ],
            },
            // The transit router may keep a circuit's label from a to c: its two links
            // use different VXLAN UDP ports.
            AgentConfig {
                node: "rt".into(),
                netns: Some(rt.0.clone()),
                ports: vec![
                    self.port_on("to-a", "p0", [10, 1, 0, 1], [10, 1, 0, 2], 4790),
                    self.port_on("to-c", "p1", [10, 3, 0, 2], [10, 3, 0, 1], 4791),
                ],
            },
            AgentConfig {
                node: "r2".into(),
                netns: Some(self.r2.0.clone()),
                ports: vec![
                    self.port_on("to-b", "p0", [10, 3, 0, 1], [10, 3, 0, 2], 4791),
                    self.port("edge", "p1", [10, 2, 0, 2], [10, 2, 0, 1]),
                ],
            },
        ]
    }

    fn port(&self, name: &str, dev: &str, local: [u8; 4], remote: [u8; 4]) -> PortConfig {
        self.port_on(name, dev, local, remote, crate::linux::VXLAN_PORT)
    }

    fn port_on(
        &self,
        name: &str,
        dev: &str,
        local: [u8; 4],
        remote: [u8; 4],
        vxlan_port: u16,
    ) -> PortConfig {
        PortConfig {
            name: name.into(),
            dev: dev.into(),
            capacity: self.link,
            local: Ipv4Addr::from(local),
            remote: Ipv4Addr::from(remote),
            vxlan_port,
        }
    }

    /// The agents' configurations of r1 and r2 (node ids `r1`, `r2`).
    pub fn agent_configs(&self) -> (AgentConfig, AgentConfig) {
        (
            AgentConfig {
                node: "r1".into(),
                netns: Some(self.r1.0.clone()),
                ports: vec![
                    self.port("edge", "p0", [10, 0, 0, 1], [10, 0, 0, 2]),
                    self.port("to-r2", "p1", [10, 1, 0, 2], [10, 1, 0, 1]),
                ],
            },
            AgentConfig {
                node: "r2".into(),
                netns: Some(self.r2.0.clone()),
                ports: vec![
                    self.port("to-r1", "p0", [10, 1, 0, 1], [10, 1, 0, 2]),
                    self.port("edge", "p1", [10, 2, 0, 2], [10, 2, 0, 1]),
                ],
            },
        )
    }

    /// The domain topology of the lab (`lab`: r1 and r2, one link), in the topology
    /// file's format. The edge ports carry VLANs 100-999, the link 3000-3099.
    pub fn topology_toml(&self) -> String {
        let m = self.link.0;
        format!(
            r#"[domain]
id = "lab"
description = "two virtual routers in network namespaces"

[[node]]
id = "r1"
vlan_translation = true
ports = [
  {{ name = "edge", vlans = "100-999", capacity_mbps = {m} }},
  {{ name = "to-r2", vlans = "3000-3099", capacity_mbps = {m} }},
]

[[node]]
id = "r2"
vlan_translation = true
ports = [
  {{ name = "to-r1", vlans = "3000-3099", capacity_mbps = {m} }},
  {{ name = "edge", vlans = "100-999", capacity_mbps = {m} }},
]

[[link]]
id = "r1--r2"
a = "r1:to-r2"
b = "r2:to-r1"
capacity_mbps = {m}
metric = 1
"#
        )
    }

    /// The hosts' ends of a circuit (customer equipment, not an agent's): a VXLAN
    /// interface `c0` on each host with the circuit's VLAN at its router's edge port as
    /// VNI, addressed [`HOST_A_CIRCUIT`] and [`HOST_B_CIRCUIT`].
    pub fn host_ends(&self, vlan_a: u32, vlan_b: u32) {
        self.ha.ip(&format!(
            "link add c0 type vxlan id {vlan_a} local 10.0.0.2 remote 10.0.0.1 dev h0 dstport 4789 nolearning"
        ));
        self.ha.ip(&format!("addr add {HOST_A_CIRCUIT}/24 dev c0"));
        self.ha.ip("link set c0 up");
        self.hb.ip(&format!(
            "link add c0 type vxlan id {vlan_b} local 10.2.0.1 remote 10.2.0.2 dev h0 dstport 4789 nolearning"
        ));
        self.hb.ip(&format!("addr add {HOST_B_CIRCUIT}/24 dev c0"));
        self.hb.ip("link set c0 up");
        // Static neighbours: a probe before the circuit is up would otherwise leave ARP
        // failed and retrying once a second, and time that, not the circuit.
        let (mac_a, mac_b) = (self.ha.mac("c0"), self.hb.mac("c0"));
        self.ha.ip(&format!(
            "neigh replace {HOST_B_CIRCUIT} lladdr {mac_b} dev c0 nud permanent"
        ));
        self.hb.ip(&format!(
            "neigh replace {HOST_A_CIRCUIT} lladdr {mac_a} dev c0 nud permanent"
        ));
    }

    /// What is left of any circuit on the routers: cross-connect links, circuit classes
    /// and filters (empty when the routers carry none).
    pub fn circuit_leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for cfg in self.all_agent_configs() {
            let cur = match LinuxNode::new(cfg.netns.clone()).read(&cfg) {
                Ok(c) => c,
                Err(e) => {
                    left.push(format!("{}: cannot read: {e}", cfg.node));
                    continue;
                }
            };
            for name in cur.links.keys() {
                // Cross-connects and VXLAN labels; measurement ends (ms…, mr…).
                if ["vx", "xc", "ms", "mr"].iter().any(|p| name.starts_with(p)) {
                    left.push(format!("{}: link {name}", cfg.node));
                }
            }
            let namespaces = Command::new("ip")
                .args(["netns", "list"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for ns in namespaces
                .lines()
                .filter_map(|l| l.split_whitespace().next())
            {
                if ns.starts_with("sluice-m") && ns.contains(&format!("-{}-", cfg.node)) {
                    left.push(format!("{}: measurement namespace {ns}", cfg.node));
                }
            }
            for (dev, q) in &cur.ports {
                for minor in q.classes.keys() {
                    if *minor != 1 && *minor != BEST_EFFORT {
                        left.push(format!("{}: {dev} class 1:{minor:x}", cfg.node));
                    }
                }
                for pref in &q.filters {
                    left.push(format!("{}: {dev} filter pref {pref}", cfg.node));
                }
            }
        }
        left
    }

    /// Waits until one ping from hA reaches hB over the circuit, for at most `limit`;
    /// how long that took. Each probe waits up to 100 ms for its answer.
    pub fn wait_for_circuit(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let ok = self
                .ha
                .command("ping")
                .args(["-c", "1", "-W", "0.1", "-q", HOST_B_CIRCUIT])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(start.elapsed());
            }
        }
        None
    }
}

/// An iperf3 server in a namespace, killed when dropped.
pub struct IperfServer(Child);

impl IperfServer {
    pub fn start(ns: &Netns, bind: &str, port: u16) -> IperfServer {
        let child = ns
            .command("iperf3")
            .args(["-s", "-B", bind, "-p"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        // Ready when it listens (at most 5 s).
        let listening = |ns: &Netns| {
            ns.command("ss")
                .args(["-Htln", &format!("sport = :{port}")])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        };
        let start = Instant::now();
        while !listening(ns) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        IperfServer(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An iperf3 client run in namespace `ns` (bounded to 30 s); the rate the receiver
/// got, in Mb/s.
pub fn iperf(ns: &str, args: &str) -> f64 {
    let out = Command::new("timeout")
        .args(["30", "ip", "netns", "exec", ns, "iperf3", "-J"])
        .args(args.split_whitespace())
        .output()
        .expect("iperf3");
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

/// What a circuit between the hosts delivers, in Mb/s received.
#[derive(Debug, Clone, Copy)]
pub struct CircuitRates {
    /// TCP over the circuit, nothing else on the links.
    pub alone: f64,
    /// TCP over the circuit while best effort floods the same links over UDP.
    pub flooded: f64,
    /// What the flood got meanwhile.
    pub flood: f64,
    /// UDP sent over the circuit at twice its booked rate.
    pub over: f64,
}

impl Lab {
    /// Measures the circuit of `booked` Mb/s that is up between the hosts (about 20 s).
    pub fn measure_circuit(&self, booked: u64) -> CircuitRates {
        let _circuit_server = IperfServer::start(&self.hb, HOST_B_CIRCUIT, 5201);
        let _flood_server = IperfServer::start(&self.hb, HOST_B, 5202);
        let alone = iperf(&self.ha.0, &format!("-c {HOST_B_CIRCUIT} -p 5201 -t 4"));
        // Best effort floods the same links with three times what they carry.
        let flood_mbps = 3 * self.link.0;
        let flood = std::thread::spawn({
            let ha = self.ha.0.clone();
            move || {
                iperf(
                    &ha,
                    &format!("-c {HOST_B} -p 5202 -u -b {flood_mbps}M -t 7"),
                )
            }
        });
        std::thread::sleep(Duration::from_millis(1500));
        let flooded = iperf(&self.ha.0, &format!("-c {HOST_B_CIRCUIT} -p 5201 -t 4"));
        let flood = flood.join().expect("flood");
        // Datagrams of 1400 bytes fit the circuit's MTU (1450) without fragments.
        let over = iperf(
            &self.ha.0,
            &format!(
                "-c {HOST_B_CIRCUIT} -p 5201 -u -l 1400 -b {}M -t 4",
                2 * booked
            ),
        );
        CircuitRates {
            alone,
            flooded,
            flood,
            over,
        }
    }
}

/// Sends pings from hA to hB over the circuit every 5 ms, from before a circuit is up,
/// to tell when it first carries traffic. Killed when dropped.
pub struct Prober(Option<Child>);

impl Prober {
    /// Stops after three answers, or after `limit`.
    pub fn start(lab: &Lab, limit: Duration) -> Prober {
        let child = lab
            .ha
            .command("ping")
            .args(["-D", "-n", "-i", "0.005", "-c", "3", "-w"])
            .arg(limit.as_secs().max(1).to_string())
            .arg(HOST_B_CIRCUIT)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        Prober(Some(child))
    }

    /// When the first answer came (the wall clock, as ping's `-D` prints it); `None`
    /// if none did.
    pub fn first_answer(mut self) -> Option<std::time::SystemTime> {
        let out = self.0.take()?.wait_with_output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bytes from"))
            .find_map(|l| {
                let secs: f64 = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
                Some(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs))
            })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
