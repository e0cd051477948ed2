//! The Linux data plane, for a kernel without 802.1Q links (see ENVIRONMENT.md): a node
//! is a network namespace, each port a Linux interface with an address on its link.
//!
//! - **Label**: a circuit's label on a port is a VXLAN VNI over that port's link
//!   (`vx<port#>.<label>`, from this end's address to the other end's).
//! - **Cross-connect**: a bridge per circuit (`xc<port#>.<label>`, named after its A end)
//!   with the circuit's two VXLAN devices as its only members.
//! - **Queues**: on every port an HTB tree `1:` whose root class `1:1` is the port's line
//!   rate; each circuit leaving through the port has class `1:<0x1000 + label>` at its
//!   reserved rate (ceil = rate, so it gets no more) and priority 0, chosen by a u32
//!   filter on its VNI (preference = label); best-effort traffic falls into `1:fffe`
//!   (priority 7), which gets what is left and may borrow up to the line rate.
//! - **Rates**: a circuit's booked rate is what it carries as IP packets. HTB counts the
//!   frames on the wire, which VXLAN makes 64 bytes longer (inner Ethernet, VXLAN, UDP,
//!   IP, outer Ethernet) than the IP packet inside: a full-size packet of 1450 bytes (the
//!   inner MTU over a 1500-byte link) leaves as 1514. The class rate is scaled by that
//!   ratio, so full-size traffic gets exactly its booking.
//!
//! [`plan`] compares what the node must carry with what `ip`/`tc` report and returns the
//! command lines that close the gap, touching nothing that is already right and only
//! objects it names itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;
use sluice_model::Mbps;

use crate::admit::admit;
use crate::config::AgentConfig;
use crate::measure::{MeasurementEnd, Role};
use sluice_model::dataplane::{Desired, NodeCircuit};

/// The VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// HTB class of best-effort traffic on every port.
pub const BEST_EFFORT: u16 = 0xfffe;
/// Circuit classes are `1:<CIRCUIT_CLASS_BASE + label>`.
pub const CIRCUIT_CLASS_BASE: u16 = 0x1000;
/// Labels run 1..=4094, as VLANs do in the topology.
pub const MAX_LABEL: u32 = 4094;

/// A link as `ip -j -d link show` describes it (the parts that matter here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub kind: LinkKind,
    pub master: Option<String>,
    pub up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Vxlan {
        vni: u32,
        local: Option<Ipv4Addr>,
        remote: Option<Ipv4Addr>,
        dev: Option<String>,
        /// The UDP port.
        port: u16,
    },
    Bridge,
    Other,
}

/// An HTB class as `tc -s class show` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Class {
    pub rate_bps: u64,
    pub ceil_bps: u64,
    pub prio: u32,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
}

/// One port's queues: whether our HTB root is there, its classes by minor id, and the
/// preferences of its filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortQueues {
    pub htb_root: bool,
    pub classes: BTreeMap<u16, Class>,
    pub filters: BTreeSet<u32>,
}

/// What the node has now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    pub links: BTreeMap<String, Link>,
    /// By Linux interface name.
    pub ports: BTreeMap<String, PortQueues>,
}

/// What to run: `tc` lines that remove before the links change, `ip` lines, then `tc`
/// lines that add (each list a batch for `-batch -`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub tc_remove: Vec<String>,
    pub ip: Vec<String>,
    pub tc_add: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tc_remove.is_empty() && self.ip.is_empty() && self.tc_add.is_empty()
    }
}

/// Why a desired state cannot be carried; nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("circuit {circuit}: no port {port} on this node")]
    UnknownPort { circuit: String, port: String },
    #[error("circuit {circuit}: label {label} is outside 1-{MAX_LABEL}")]
    BadLabel { circuit: String, label: u32 },
    #[error("circuits {first} and {second} both use label {label} on port {port}")]
    LabelTaken {
        first: String,
        second: String,
        port: String,
        label: u32,
    },
    #[error("port {port}: circuits reserve {reserved} Mb/s of its {capacity} Mb/s")]
    OverCapacity {
        port: String,
        reserved: u64,
        capacity: u64,
    },
    #[error(
        "circuit {circuit}: label {label} on port {port} clashes with {first}'s on port {other_port}: both use VXLAN UDP port {vxlan_port}, where a VNI is taken once (give the ports different vxlan_port)"
    )]
    SharedVni {
        circuit: String,
        label: u32,
        port: String,
        first: String,
        other_port: String,
        vxlan_port: u16,
    },
}

fn vxlan_name(port: usize, label: u32) -> String {
    format!("vx{port}.{label}")
}

fn bridge_name(port: usize, label: u32) -> String {
    format!("xc{port}.{label}")
}

/// Whether a link name is one this backend makes (so it may remove it).
fn ours(name: &str) -> bool {
    let rest = name.strip_prefix("vx").or_else(|| name.strip_prefix("xc"));
    rest.is_some_and(|r| {
        r.split_once('.')
            .is_some_and(|(p, l)| p.parse::<usize>().is_ok() && l.parse::<u32>().is_ok())
    })
}

/// A full-size IP packet inside a circuit, and the frame it leaves as (see the module
/// documentation).
const INNER_IP_BYTES: u64 = 1450;
const OUTER_FRAME_BYTES: u64 = 1514;

/// The HTB rate (kbit/s) that carries `booked` of IP packets in full-size VXLAN frames.
pub fn wire_kbit(booked: Mbps) -> u64 {
    (booked.0 * 1000 * OUTER_FRAME_BYTES).div_ceil(INNER_IP_BYTES)
}

struct WantClass {
    rate_kbit: u64,
    ceil_kbit: u64,
    prio: u32,
}

struct WantPort {
    classes: BTreeMap<u16, WantClass>,
    /// Filter preference (= label) → circuit class minor.
    filters: BTreeMap<u32, u16>,
}

/// The commands that make `current` carry `desired` on the node `cfg` describes.
/// A state with a circuit the node cannot carry is refused whole, with the first
/// such circuit's reason (the agent plans only what `admit` accepted).
pub fn plan(cfg: &AgentConfig, desired: &Desired, current: &Current) -> Result<Plan, PlanError> {
    if let Some(r) = admit(cfg, desired, &Desired::default())
        .1
        .into_iter()
        .next()
    {
        return Err(r.reason);
    }
    // What must exist.
    let mut links: BTreeMap<String, Link> = BTreeMap::new();
    let mut on_wire: Vec<u64> = vec![0; cfg.ports.len()];
    let mut want: Vec<WantPort> = cfg
        .ports
        .iter()
        .map(|_| WantPort {
            classes: BTreeMap::new(),
            filters: BTreeMap::new(),
        })
        .collect();
    for c in &desired.circuits {
        let mut ends = Vec::with_capacity(2);
        for end in [&c.a, &c.z] {
            let (pi, _) = cfg.port(&end.port).expect("admitted");
            ends.push((pi, end.label));
        }
        let bridge = bridge_name(ends[0].0, ends[0].1);
        links.insert(
            bridge.clone(),
            Link {
                kind: LinkKind::Bridge,
                master: None,
                up: true,
            },
        );
        for &(pi, label) in &ends {
            let p = &cfg.ports[pi];
            links.insert(
                vxlan_name(pi, label),
                Link {
                    kind: LinkKind::Vxlan {
                        vni: label,
                        local: Some(p.local),
                        remote: Some(p.remote),
                        dev: Some(p.dev.clone()),
                        port: p.vxlan_port,
                    },
                    master: Some(bridge.clone()),
                    up: true,
                },
            );
        }
        // A→Z leaves through z, Z→A through a; a rate of 0 is not reserved (best effort).
        for (&(pi, label), rate) in [(&ends[1], c.rate_az), (&ends[0], c.rate_za)] {
            if rate == Mbps::ZERO {
                continue;
            }
            let minor = CIRCUIT_CLASS_BASE + label as u16;
            want[pi].classes.insert(
                minor,
                WantClass {
                    rate_kbit: wire_kbit(rate),
                    ceil_kbit: wire_kbit(rate),
                    prio: 0,
                },
            );
            want[pi].filters.insert(label, minor);
            on_wire[pi] += wire_kbit(rate);
        }
    }
    for (pi, p) in cfg.ports.iter().enumerate() {
        let line = p.capacity.0 * 1000;
        want[pi].classes.insert(
            1,
            WantClass {
                rate_kbit: line,
                ceil_kbit: line,
                prio: 0,
            },
        );
        want[pi].classes.insert(
            BEST_EFFORT,
            WantClass {
                rate_kbit: line.saturating_sub(on_wire[pi]).max(1000),
                ceil_kbit: line,
                prio: 7,
            },
        );
    }

    let mut out = Plan::default();
    // Queues: remove what is not wanted (filters before their classes), add or change
    // what differs.
    for (pi, p) in cfg.ports.iter().enumerate() {
        let have = current.ports.get(&p.dev).cloned().unwrap_or_default();
        let w = &want[pi];
        let dev = &p.dev;
        if have.htb_root {
            for pref in have.filters.iter().filter(|f| !w.filters.contains_key(f)) {
                out.tc_remove
                    .push(format!("filter del dev {dev} parent 1: prio {pref}"));
            }
            for minor in have
                .classes
                .keys()
                .filter(|m| **m > CIRCUIT_CLASS_BASE && **m < BEST_EFFORT)
                .filter(|m| !w.classes.contains_key(m))
            {
                out.tc_remove
                    .push(format!("class del dev {dev} classid 1:{minor:x}"));
            }
        } else {
            out.tc_add.push(format!(
                "qdisc replace dev {dev} root handle 1: htb default {BEST_EFFORT:x}"
            ));
        }
        let classes = if have.htb_root {
            have.classes.clone()
        } else {
            BTreeMap::new()
        };
        for (minor, wc) in &w.classes {
            let same = classes.get(minor).is_some_and(|c| {
                c.rate_bps == wc.rate_kbit * 1000
                    && c.ceil_bps == wc.ceil_kbit * 1000
                    && c.prio == wc.prio
            });
            if same {
                continue;
            }
            let parent = if *minor == 1 { "1:" } else { "1:1" };
            out.tc_add.push(format!(
                "class replace dev {dev} parent {parent} classid 1:{minor:x} htb rate {}kbit ceil {}kbit prio {} quantum 1514",
                wc.rate_kbit, wc.ceil_kbit, wc.prio
            ));
        }
        let filters = if have.htb_root {
            have.filters.clone()
        } else {
            BTreeSet::new()
        };
        for (pref, minor) in &w.filters {
            if filters.contains(pref) {
                continue;
            }
            out.tc_add.push(format!(
                "filter add dev {dev} parent 1: protocol ip prio {pref} u32 match ip protocol 17 0xff match ip dport {} 0xffff match u32 0x{:06x}00 0xffffff00 at 32 flowid 1:{minor:x}",
                p.vxlan_port,
                pref
            ));
        }
    }
    // Links: remove ours that are not wanted or not as wanted, then add and attach.
    let mut removed = BTreeSet::new();
    for (name, have) in current.links.iter().filter(|(n, _)| ours(n)) {
        let keep = links.get(name).is_some_and(|w| w.kind == have.kind);
        if !keep {
            out.ip.push(format!("link del {name}"));
            removed.insert(name.clone());
        }
    }
    for (name, w) in links.iter().filter(|(_, l)| l.kind == LinkKind::Bridge) {
        let have = current.links.get(name).filter(|_| !removed.contains(name));
        if have.is_none() {
            out.ip.push(format!("link add {name} type bridge"));
        }
        if have.is_none_or(|h| !h.up) && w.up {
            out.ip.push(format!("link set {name} up"));
        }
    }
    for (name, w) in &links {
        let LinkKind::Vxlan {
            vni,
            local,
            remote,
            dev,
            port,
        } = &w.kind
        else {
            continue;
        };
        let have = current.links.get(name).filter(|_| !removed.contains(name));
        if have.is_none() {
            out.ip.push(format!(
                "link add {name} type vxlan id {vni} local {} remote {} dev {} dstport {port} nolearning",
                local.expect("set above"),
                remote.expect("set above"),
                dev.as_deref().expect("set above"),
            ));
        }
        if have.is_none_or(|h| h.master != w.master || !h.up) {
            out.ip.push(format!(
                "link set {name} master {} up",
                w.master
                    .as_deref()
                    .expect("a circuit's VXLAN has its bridge")
            ));
        }
    }
    Ok(out)
}

/// The links in `ip -j -d link show` output.
pub fn parse_links(json: &str) -> Result<BTreeMap<String, Link>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("ip -j link: {e}"))?;
    let mut out = BTreeMap::new();
    for l in v.as_array().ok_or("ip -j link: not a list")? {
        let Some(name) = l["ifname"].as_str() else {
            continue;
        };
        let info = &l["linkinfo"];
        let kind = match info["info_kind"].as_str() {
            Some("vxlan") => {
                let d = &info["info_data"];
                let ip = |k: &str| d[k].as_str().and_then(|s| s.parse().ok());
                LinkKind::Vxlan {
                    vni: d["id"].as_u64().unwrap_or(0) as u32,
                    local: ip("local"),
                    remote: ip("remote"),
                    dev: d["link"].as_str().map(str::to_string),
                    port: d["port"].as_u64().map_or(VXLAN_PORT, |p| p as u16),
                }
            }
            Some("bridge") => LinkKind::Bridge,
            _ => LinkKind::Other,
        };
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        out.insert(
            name.to_string(),
            Link {
                kind,
                master: l["master"].as_str().map(str::to_string),
                up,
            },
        );
    }
    Ok(out)
}

/// Whether `tc -j qdisc show dev D` lists our HTB root (handle 1:).
pub fn parse_htb_root(json: &str) -> Result<bool, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("tc -j qdisc: {e}"))?;
    Ok(v.as_array().is_some_and(|qs| {
        qs.iter()
            .any(|q| q["kind"] == "htb" && q["handle"] == "1:" && q["root"] == true)
    }))
}

/// The preferences of the u32 filters in `tc -j filter show dev D` that send to a class.
pub fn parse_filters(json: &str) -> Result<BTreeSet<u32>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("tc -j filter: {e}"))?;
    Ok(v.as_array()
        .map(|fs| {
            fs.iter()
                .filter(|f| f["kind"] == "u32" && f["options"]["flowid"].is_string())
                .filter_map(|f| f["pref"].as_u64().map(|p| p as u32))
                .collect()
        })
        .unwrap_or_default())
}

/// A tc rate (`200Mbit`, `1Gbit`, `1500Kbit`, `12bit`) in bit/s.
pub fn parse_rate(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let (num, mult) = [
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
        ("bit", 1),
    ]
    .into_iter()
    .find_map(|(suffix, m)| lower.strip_suffix(suffix).map(|n| (n.to_string(), m)))?;
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64).round() as u64)
}

/// The HTB classes in `tc -s class show dev D` output (tc prints no JSON for them), with
/// their counters, by minor id under handle 1:.
pub fn parse_classes(text: &str) -> BTreeMap<u16, Class> {
    let mut out = BTreeMap::new();
    let mut last: Option<u16> = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        if words.first() == Some(&"class") && words.get(1) == Some(&"htb") {
            last = words
                .get(2)
                .and_then(|h| h.strip_prefix("1:"))
                .and_then(|m| u16::from_str_radix(m, 16).ok());
            if let Some(minor) = last {
                out.insert(
                    minor,
                    Class {
                        rate_bps: after("rate").and_then(parse_rate).unwrap_or(0),
                        ceil_bps: after("ceil").and_then(parse_rate).unwrap_or(0),
                        prio: after("prio").and_then(|p| p.parse().ok()).unwrap_or(0),
                        ..Class::default()
                    },
                );
            }
        } else if words.first() == Some(&"Sent")
            && let Some(c) = last.and_then(|m| out.get_mut(&m))
        {
            c.bytes = words.get(1).and_then(|b| b.parse().ok()).unwrap_or(0);
            c.packets = words.get(3).and_then(|p| p.parse().ok()).unwrap_or(0);
            c.drops = after("(dropped")
                .map(|d| d.trim_end_matches(','))
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// Runs `ip` and `tc` in the node's namespace.
#[derive(Debug, Clone)]
pub struct LinuxNode {
    pub netns: Option<String>,
}

/// A command that failed, with what it printed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {tool}: {source} (is iproute2 installed?)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} {args} failed: {stderr}")]
    Failed {
        tool: &'static str,
        args: String,
        stderr: String,
    },
    #[error("{0}")]
    Parse(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("still not as desired after applying; left to do: {0:?}")]
    NotConverged(Box<Plan>),
}

impl LinuxNode {
    pub fn new(netns: Option<String>) -> LinuxNode {
        LinuxNode { netns }
    }

    fn run(
        &self,
        tool: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ExecError> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(tool);
        if let Some(ns) = &self.netns {
            cmd.args(["-n", ns]);
        }
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|source| ExecError::Spawn { tool, source })?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped");
            pipe.write_all(input.as_bytes())
                .map_err(|source| ExecError::Spawn { tool, source })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ExecError::Spawn { tool, source })?;
        if !out.status.success() {
            return Err(ExecError::Failed {
                tool,
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What the node has now: every link, and the queues of the configured ports.
    pub fn read(&self, cfg: &AgentConfig) -> Result<Current, ExecError> {
        let links = parse_links(&self.run("ip", &["-j", "-d", "link", "show"], None)?)
            .map_err(ExecError::Parse)?;
        let mut ports = BTreeMap::new();
        for p in &cfg.ports {
            let dev = p.dev.as_str();
            let htb_root =
                parse_htb_root(&self.run("tc", &["-j", "qdisc", "show", "dev", dev], None)?)
                    .map_err(ExecError::Parse)?;
            let (classes, filters) = if htb_root {
                (
                    parse_classes(&self.run("tc", &["-s", "class", "show", "dev", dev], None)?),
                    parse_filters(&self.run(
                        "tc",
                        &["-j", "filter", "show", "dev", dev, "parent", "1:"],
                        None,
                    )?)
                    .map_err(ExecError::Parse)?,
                )
            } else {
                Default::default()
            };
            ports.insert(
                p.dev.clone(),
                PortQueues {
                    htb_root,
                    classes,
                    filters,
                },
            );
        }
        Ok(Current { links, ports })
    }

    /// An interface's speed in Mb/s as the kernel reports it (0 when it reports none, as
    /// for veth) and whether it is up.
    pub fn port_status(&self, dev: &str) -> Result<(u64, bool), ExecError> {
        let v: Value =
            serde_json::from_str(&self.run("ip", &["-j", "link", "show", "dev", dev], None)?)
                .map_err(|e| ExecError::Parse(format!("ip -j link show dev {dev}: {e}")))?;
        let up = v[0]["operstate"] == "UP"
            || v[0]["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "LOWER_UP"));
        let path = format!("/sys/class/net/{dev}/speed");
        let speed = match &self.netns {
            None => std::fs::read_to_string(&path).ok(),
            Some(ns) => std::process::Command::new("ip")
                .args(["netns", "exec", ns, "cat", &path])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
        };
        let speed = speed
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map_or(0, |s| s as u64);
        Ok((speed, up))
    }

    /// Whether this kernel makes 802.1Q VLAN links: tried on a veth pair made and
    /// removed again in the node's namespace. `Err` says why not (this release labels
    /// circuits with VXLAN either way; the answer is reported so operators know).
    pub fn probe_8021q(&self) -> Result<(), String> {
        let (probe, vlan) = ("slprobe0", "slprobe0.2");
        self.run(
            "ip",
            &[
                "link", "add", probe, "type", "veth", "peer", "name", "slprobe1",
            ],
            None,
        )
        .map_err(|e| format!("cannot make a probe interface: {e}"))?;
        let made = self.run(
            "ip",
            &[
                "link", "add", "link", probe, "name", vlan, "type", "vlan", "id", "2",
            ],
            None,
        );
        // Removing one end removes the pair, and the VLAN link on it.
        let _ = self.run("ip", &["link", "del", probe], None);
        made.map(|_| ()).map_err(|e| match e {
            ExecError::Failed { stderr, .. } => stderr
                .strip_prefix("Error: ")
                .unwrap_or(&stderr)
                .to_string(),
            other => other.to_string(),
        })
    }

    /// Opens one end of a measurement on `circuit`'s cross-connect: a veth pair whose one
    /// side joins the circuit's bridge and whose other side, with `role`'s address, is
    /// alone in a namespace made for it. Leftovers of an earlier one (an agent that
    /// crashed mid-measurement) are removed first; the end removes itself when dropped.
    pub fn open_measurement_end(
        &self,
        cfg: &AgentConfig,
        circuit: &NodeCircuit,
        role: Role,
    ) -> Result<MeasurementEnd, ExecError> {
        let (pi, _) = cfg.port(&circuit.a.port).ok_or_else(|| {
            ExecError::Parse(format!("{}: no port {}", circuit.id, circuit.a.port))
        })?;
        let label = circuit.a.label;
        let bridge = bridge_name(pi, label);
        let veth = format!("m{}{pi}.{label}", role.letter());
        let ns = format!("sluice-m{}-{}-{pi}-{label}", role.letter(), cfg.node);
        let root = LinuxNode::new(None);
        let remove = {
            let (node, veth, ns) = (self.clone(), veth.clone(), ns.clone());
            move || {
                let _ = node.run("ip", &["link", "del", &veth], None);
                let _ = LinuxNode::new(None).run("ip", &["netns", "del", &ns], None);
            }
        };
        remove();
        // Frames leave the bridge through the circuit's VXLAN links: nothing larger than
        // their MTU may enter it.
        let v: Value =
            serde_json::from_str(&self.run("ip", &["-j", "link", "show", "dev", &bridge], None)?)
                .map_err(|e| ExecError::Parse(format!("ip -j link show dev {bridge}: {e}")))?;
        let mtu_value = v[0]["mtu"].as_u64().unwrap_or(1450) as u32;
        let mtu = mtu_value.to_string();
        root.run("ip", &["netns", "add", &ns], None)?;
        let addr = format!("{}/30", role.address());
        let made = (|| {
            self.run(
                "ip",
                &[
                    "link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name", "m0", "mtu",
                    &mtu, "netns", &ns,
                ],
                None,
            )?;
            self.run("ip", &["link", "set", &veth, "master", &bridge, "up"], None)?;
            let inside = LinuxNode::new(Some(ns.clone()));
            inside.run("ip", &["link", "set", "lo", "up"], None)?;
            inside.run("ip", &["addr", "add", &addr, "dev", "m0"], None)?;
            inside.run("ip", &["link", "set", "m0", "up"], None)
        })();
        if let Err(e) = made {
            remove();
            return Err(e);
        }
        Ok(MeasurementEnd::new(
            Some(ns),
            role.address(),
            Some(mtu_value),
            Some(Box::new(remove)),
        ))
    }

    /// Runs a plan: the removals, the links, then the additions, each as one batch.
    pub fn apply(&self, plan: &Plan) -> Result<(), ExecError> {
        for (tool, lines) in [
            ("tc", &plan.tc_remove),
            ("ip", &plan.ip),
            ("tc", &plan.tc_add),
        ] {
            if lines.is_empty() {
                continue;
            }
            let mut batch = lines.join("\n");
            batch.push('\n');
            self.run(tool, &["-batch", "-"], Some(&batch))?;
        }
        Ok(())
    }

    /// Makes the node carry `desired`, and checks that it does: returns what was done
    /// (empty if it already did).
    pub fn converge(&self, cfg: &AgentConfig, desired: &Desired) -> Result<Plan, ExecError> {
        let todo = plan(cfg, desired, &self.read(cfg)?)?;
        if todo.is_empty() {
            return Ok(todo);
        }
        self.apply(&todo)?;
        let left = plan(cfg, desired, &self.read(cfg)?)?;
        if !left.is_empty() {
            return Err(ExecError::NotConverged(Box::new(left)));
        }
        Ok(todo)
    }
}
