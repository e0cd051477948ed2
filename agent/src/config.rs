//! The agent's own file: which node it runs, in which network namespace, and how each of
//! the node's topology ports maps onto a Linux interface.
//!
//! ```toml
//! node = "r1"
//! netns = "sluice-r1"          # optional: the namespace the node's interfaces live in
//!
//! [[port]]
//! name = "xe-0/0/0"            # as in the domain topology
//! dev = "p-ha"                 # the Linux interface
//! capacity_mbps = 1000         # the port's line rate, shared by circuits and best effort
//! local = "10.1.0.1"           # this end's address on the link (the labels' underlay)
//! remote = "10.1.0.2"          # the other end's
//! vxlan_port = 4790            # optional (default 4789): the link's VXLAN UDP port
//! ```
//!
//! Labels are VXLAN VNIs, and the kernel takes a VNI once per UDP port: where a circuit
//! may keep its label through the node (no VLAN translation), give the node's ports
//! different `vxlan_port`s (both ends of a link must use the same). The agent refuses a
//! circuit whose label would clash, naming both ports.

use std::net::Ipv4Addr;

use serde::Deserialize;
use sluice_model::Mbps;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node: String,
    pub netns: Option<String>,
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub dev: String,
    pub capacity: Mbps,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    /// The UDP port of the link's VXLAN labels (both ends must agree).
    pub vxlan_port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    node: String,
    netns: Option<String>,
    #[serde(default)]
    port: Vec<PortFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortFile {
    name: String,
    dev: String,
    capacity_mbps: u64,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    vxlan_port: Option<u16>,
}

/// Linux interface names are at most 15 bytes.
const IFNAMSIZ: usize = 15;

impl AgentConfig {
    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut ports: Vec<PortConfig> = Vec::with_capacity(f.port.len());
        for (i, p) in f.port.into_iter().enumerate() {
            if p.dev.is_empty() || p.dev.len() > IFNAMSIZ {
                return Err(format!(
                    "port[{i}].dev: {:?} is not a Linux interface name (1 to 15 bytes)",
                    p.dev
                ));
            }
            if p.capacity_mbps == 0 {
                return Err(format!("port[{i}].capacity_mbps: must be positive"));
            }
            if ports.iter().any(|q| q.name == p.name || q.dev == p.dev) {
                return Err(format!("port[{i}]: {} / {} is listed twice", p.name, p.dev));
            }
            if p.vxlan_port == Some(0) {
                return Err(format!("port[{i}].vxlan_port: must be a UDP port, not 0"));
            }
            ports.push(PortConfig {
                name: p.name,
                dev: p.dev,
                capacity: Mbps(p.capacity_mbps),
                local: p.local,
                remote: p.remote,
                vxlan_port: p.vxlan_port.unwrap_or(crate::linux::VXLAN_PORT),
            });
        }
        Ok(AgentConfig {
            node: f.node,
            netns: f.netns,
            ports,
        })
    }

    /// The index and settings of the port named `name`.
    pub fn port(&self, name: &str) -> Option<(usize, &PortConfig)> {
        self.ports.iter().enumerate().find(|(_, p)| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_example_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/agent.toml");
        let c = AgentConfig::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_ne!(c.ports[0].vxlan_port, c.ports[1].vxlan_port);
    }

    #[test]
    fn parses_ports_and_refuses_bad_ones() {
        let c = AgentConfig::parse(
            r#"
            node = "r1"
            netns = "sluice-r1"
            [[port]]
            name = "xe-0/0/0"
            dev = "p-ha"
            capacity_mbps = 1000
            local = "10.1.0.1"
            remote = "10.1.0.2"
            [[port]]
            name = "xe-0/0/1"
            dev = "p-r2"
            capacity_mbps = 1000
            local = "10.2.0.1"
            remote = "10.2.0.2"
            vxlan_port = 4790
            "#,
        )
        .unwrap();
        assert_eq!(c.port("xe-0/0/0").unwrap().0, 0);
        assert_eq!(c.ports[0].capacity, Mbps(1000));
        assert_eq!((c.ports[0].vxlan_port, c.ports[1].vxlan_port), (4789, 4790));
        let bad = |extra: &str| {
            AgentConfig::parse(&format!(
                "node = \"r1\"\n[[port]]\nname = \"x\"\ndev = \"{extra}\"\ncapacity_mbps = 1\nlocal = \"10.0.0.1\"\nremote = \"10.0.0.2\"\n"
            ))
            .unwrap_err()
        };
        assert!(bad("a-name-far-too-long").contains("port[0].dev"));
        let e = AgentConfig::parse("node = \"r1\"\n[[port]]\nname = \"x\"\ndev = \"d\"\ncapacity_mbps = 1\nlocal = \"10.0.0.1\"\nremote = \"10.0.0.2\"\nvxlan_port = 0\n").unwrap_err();
        assert!(e.contains("port[0].vxlan_port"), "{e}");
        assert!(AgentConfig::parse("node = \"r1\"\n[[port]]\nname = \"x\"\ndev = \"d\"\ncapacity_mbps = 1\nlocal = \"nope\"\nremote = \"10.0.0.2\"\n").is_err());
    }
}
