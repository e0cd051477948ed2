//! A domain's topology: nodes, their ports, intra-domain links, and the ports that face
//! peer domains. Built once from specs and checked; indices are stable for its lifetime.

use std::collections::HashMap;
use std::fmt;

use crate::stp::{Stp, valid_node_id, valid_port_name};
use crate::units::{Mbps, VlanSet};

pub type NodeIdx = usize;
pub type PortIdx = usize;
pub type LinkIdx = usize;

/// Which way traffic crosses a link or a port. For a link `Forward` is from its `a` end
/// to its `b` end; for a port it is into the domain (ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Forward,
    Reverse,
}

impl Direction {
    pub fn reversed(self) -> Direction {
        match self {
            Direction::Forward => Direction::Reverse,
            Direction::Reverse => Direction::Forward,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "fwd",
            Direction::Reverse => "rev",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "fwd" => Some(Direction::Forward),
            "rev" => Some(Direction::Reverse),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// Whether this node can rewrite a circuit's VLAN between its ports.
    pub vlan_translation: bool,
    /// Longitude and latitude, for maps and metrics; optional.
    pub location: Option<(f64, f64)>,
    pub ports: Vec<PortIdx>,
}

/// The port on the other side of an inter-domain link (a service demarcation point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPort {
    pub stp: Stp,
    /// The cost of the inter-domain link behind this port, for ranking domain routes.
    pub metric: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub node: NodeIdx,
    pub name: String,
    pub vlans: VlanSet,
    /// The port's line rate per direction.
    pub capacity: Mbps,
    pub peer: Option<PeerPort>,
    /// The intra-domain link this port terminates, if any. Ports without a link are the
    /// domain's edge: circuits start and end there.
    pub link: Option<LinkIdx>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub id: String,
    pub a: PortIdx,
    pub b: PortIdx,
    pub capacity_ab: Mbps,
    pub capacity_ba: Mbps,
    /// Traffic-engineering metric: lower is preferred.
    pub metric: u32,
}

impl Link {
    pub fn capacity(&self, dir: Direction) -> Mbps {
        match dir {
            Direction::Forward => self.capacity_ab,
            Direction::Reverse => self.capacity_ba,
        }
    }
}

/// Something whose bandwidth is booked: one direction of a link or of an edge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Link(LinkIdx, Direction),
    Port(PortIdx, Direction),
}

/// What the topology is built from (a file, a test, a generator).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub id: String,
    pub name: String,
    pub vlan_translation: bool,
    pub location: Option<(f64, f64)>,
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub name: String,
    pub vlans: VlanSet,
    pub capacity: Mbps,
    pub peer: Option<Stp>,
    /// The cost of the inter-domain link behind a peer port (1 unless told).
    pub peer_metric: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    pub id: String,
    /// `(node, port)` of each end.
    pub a: (String, String),
    pub b: (String, String),
    pub capacity_ab: Mbps,
    pub capacity_ba: Mbps,
    pub metric: u32,
}

/// The most ports, and the most links, a domain may have (the path engine packs an index
/// into 19 bits).
pub const MAX_PLACES: usize = (1 << 19) - 1;

/// Which spec item a topology error is about, so a file reader can point at its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecItem {
    Domain,
    Node(usize),
    Port(usize, usize),
    Link(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TopologyError {
    pub item: SpecItem,
    pub field: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub domain: String,
    pub description: String,
    nodes: Vec<Node>,
    ports: Vec<Port>,
    links: Vec<Link>,
    node_by_id: HashMap<String, NodeIdx>,
    port_by_name: HashMap<(NodeIdx, String), PortIdx>,
    link_by_id: HashMap<String, LinkIdx>,
    /// Per node, the links leaving it and the direction they are left in.
    adjacency: Vec<Vec<(LinkIdx, Direction)>>,
}

impl Topology {
    pub fn build(
        domain: &str,
        description: &str,
        nodes: Vec<NodeSpec>,
        links: Vec<LinkSpec>,
    ) -> Result<Topology, TopologyError> {
        let err = |item, field, message: String| TopologyError {
            item,
            field,
            message,
        };
        if !valid_node_id(domain) {
            return Err(err(
                SpecItem::Domain,
                "id",
                format!("{domain:?} is not a valid domain id (letters, digits, - _ .)"),
            ));
        }
        if nodes.is_empty() {
            return Err(err(
                SpecItem::Domain,
                "node",
                "the topology has no nodes".into(),
            ));
        }
        let ports: usize = nodes.iter().map(|n| n.ports.len()).sum();
        if ports > MAX_PLACES || links.len() > MAX_PLACES {
            return Err(err(
                SpecItem::Domain,
                "node",
                format!(
                    "{ports} ports and {} links: a domain may have at most {MAX_PLACES} of each",
                    links.len()
                ),
            ));
        }
        let mut topo = Topology {
            domain: domain.to_string(),
            description: description.to_string(),
            nodes: Vec::with_capacity(nodes.len()),
            ports: Vec::new(),
            links: Vec::with_capacity(links.len()),
            node_by_id: HashMap::new(),
            port_by_name: HashMap::new(),
            link_by_id: HashMap::new(),
            adjacency: vec![Vec::new(); nodes.len()],
        };
        for (ni, n) in nodes.into_iter().enumerate() {
            if !valid_node_id(&n.id) {
                return Err(err(
                    SpecItem::Node(ni),
                    "id",
                    format!("{:?} is not a valid node id (letters, digits, - _ .)", n.id),
                ));
            }
            if topo.node_by_id.insert(n.id.clone(), ni).is_some() {
                return Err(err(
                    SpecItem::Node(ni),
                    "id",
                    format!("node {:?} is defined twice", n.id),
                ));
            }
            let mut port_idxs = Vec::with_capacity(n.ports.len());
            for (pi, p) in n.ports.into_iter().enumerate() {
                let item = SpecItem::Port(ni, pi);
                if !valid_port_name(&p.name) {
                    return Err(err(
                        item,
                        "name",
                        format!("{:?} is not a valid port name", p.name),
                    ));
                }
                if p.vlans.is_empty() {
                    return Err(err(item, "vlans", "the VLAN range is empty".into()));
                }
                if p.capacity == Mbps::ZERO {
                    return Err(err(
                        item,
                        "capacity_mbps",
                        "capacity must be positive".into(),
                    ));
                }
                if let Some(peer) = &p.peer
                    && peer.domain == domain
                {
                    return Err(err(
                        item,
                        "peer",
                        format!("peer {peer} is in this domain; a peer port faces another domain"),
                    ));
                }
                let idx = topo.ports.len();
                if topo
                    .port_by_name
                    .insert((ni, p.name.clone()), idx)
                    .is_some()
                {
                    return Err(err(
                        item,
                        "name",
                        format!("port {:?} is defined twice on node {:?}", p.name, n.id),
                    ));
                }
                topo.ports.push(Port {
                    node: ni,
                    name: p.name,
                    vlans: p.vlans,
                    capacity: p.capacity,
                    peer: p.peer.map(|stp| PeerPort {
                        stp,
                        metric: p.peer_metric,
                    }),
                    link: None,
                });
                port_idxs.push(idx);
            }
            topo.nodes.push(Node {
                id: n.id,
                name: n.name,
                vlan_translation: n.vlan_translation,
                location: n.location,
                ports: port_idxs,
            });
        }
        for (li, l) in links.into_iter().enumerate() {
            let item = SpecItem::Link(li);
            if !valid_node_id(&l.id) {
                return Err(err(
                    item,
                    "id",
                    format!("{:?} is not a valid link id", l.id),
                ));
            }
            if topo.link_by_id.contains_key(&l.id) {
                return Err(err(item, "id", format!("link {:?} is defined twice", l.id)));
            }
            let mut ends = [0usize; 2];
            for (k, (field, (node, port))) in [("a", &l.a), ("b", &l.b)].into_iter().enumerate() {
                let Some(&ni) = topo.node_by_id.get(node) else {
                    return Err(err(item, field, format!("no node {node:?}")));
                };
                let Some(&pi) = topo.port_by_name.get(&(ni, port.clone())) else {
                    return Err(err(
                        item,
                        field,
                        format!("node {node:?} has no port {port:?}"),
                    ));
                };
                if let Some(other) = topo.ports[pi].link {
                    return Err(err(
                        item,
                        field,
                        format!(
                            "port {node}:{port} already terminates link {:?}",
                            topo.links[other].id
                        ),
                    ));
                }
                if topo.ports[pi].peer.is_some() {
                    return Err(err(
                        item,
                        field,
                        format!(
                            "port {node}:{port} faces a peer domain and cannot carry an internal link"
                        ),
                    ));
                }
                ends[k] = pi;
            }
            if topo.ports[ends[0]].node == topo.ports[ends[1]].node {
                return Err(err(
                    item,
                    "b",
                    "a link must join two different nodes".into(),
                ));
            }
            if l.capacity_ab == Mbps::ZERO {
                return Err(err(
                    item,
                    "capacity_mbps",
                    "capacity must be positive".into(),
                ));
            }
            if l.capacity_ba == Mbps::ZERO {
                return Err(err(
                    item,
                    "capacity_ba_mbps",
                    "capacity must be positive".into(),
                ));
            }
            if l.metric == 0 {
                return Err(err(item, "metric", "metric must be at least 1".into()));
            }
            topo.ports[ends[0]].link = Some(li);
            topo.ports[ends[1]].link = Some(li);
            topo.adjacency[topo.ports[ends[0]].node].push((li, Direction::Forward));
            topo.adjacency[topo.ports[ends[1]].node].push((li, Direction::Reverse));
            topo.link_by_id.insert(l.id.clone(), li);
            topo.links.push(Link {
                id: l.id,
                a: ends[0],
                b: ends[1],
                capacity_ab: l.capacity_ab,
                capacity_ba: l.capacity_ba,
                metric: l.metric,
            });
        }
        Ok(topo)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }
    pub fn links(&self) -> &[Link] {
        &self.links
    }
    pub fn node(&self, i: NodeIdx) -> &Node {
        &self.nodes[i]
    }
    pub fn port(&self, i: PortIdx) -> &Port {
        &self.ports[i]
    }
    pub fn link(&self, i: LinkIdx) -> &Link {
        &self.links[i]
    }
    pub fn node_by_id(&self, id: &str) -> Option<NodeIdx> {
        self.node_by_id.get(id).copied()
    }
    pub fn link_by_id(&self, id: &str) -> Option<LinkIdx> {
        self.link_by_id.get(id).copied()
    }
    pub fn port_by_name(&self, node: NodeIdx, name: &str) -> Option<PortIdx> {
        self.port_by_name.get(&(node, name.to_string())).copied()
    }

    /// Finds a port of this domain by its STP.
    pub fn port_by_stp(&self, stp: &Stp) -> Option<PortIdx> {
        if stp.domain != self.domain {
            return None;
        }
        self.port_by_local(&stp.node, &stp.port)
    }

    /// Finds a port by `node` and `port` name.
    pub fn port_by_local(&self, node: &str, port: &str) -> Option<PortIdx> {
        let n = self.node_by_id(node)?;
        self.port_by_name(n, port)
    }

    /// Links leaving `node`, with the direction in which they leave it.
    pub fn adjacent(&self, node: NodeIdx) -> &[(LinkIdx, Direction)] {
        &self.adjacency[node]
    }

    /// The node a link reaches when crossed in `dir`.
    pub fn link_head(&self, link: LinkIdx, dir: Direction) -> NodeIdx {
        let l = &self.links[link];
        match dir {
            Direction::Forward => self.ports[l.b].node,
            Direction::Reverse => self.ports[l.a].node,
        }
    }

    /// The node a link starts from when crossed in `dir`.
    pub fn link_tail(&self, link: LinkIdx, dir: Direction) -> NodeIdx {
        self.link_head(link, dir.reversed())
    }

    pub fn stp(&self, port: PortIdx) -> Stp {
        let p = &self.ports[port];
        Stp {
            domain: self.domain.clone(),
            node: self.nodes[p.node].id.clone(),
            port: p.name.clone(),
        }
    }

    /// `node:port`.
    pub fn port_local_name(&self, port: PortIdx) -> String {
        let p = &self.ports[port];
        format!("{}:{}", self.nodes[p.node].id, p.name)
    }

    pub fn capacity(&self, r: Resource) -> Mbps {
        match r {
            Resource::Link(l, d) => self.links[l].capacity(d),
            Resource::Port(p, _) => self.ports[p].capacity,
        }
    }

    /// A stable name for a resource, used as the key in the store: `link:<id>` or
    /// `port:<node>:<port>`. The direction is kept beside it.
    pub fn resource_key(&self, r: Resource) -> (String, Direction) {
        match r {
            Resource::Link(l, d) => (format!("link:{}", self.links[l].id), d),
            Resource::Port(p, d) => (format!("port:{}", self.port_local_name(p)), d),
        }
    }

    pub fn resource_by_key(&self, key: &str, dir: Direction) -> Option<Resource> {
        if let Some(id) = key.strip_prefix("link:") {
            return self.link_by_id(id).map(|l| Resource::Link(l, dir));
        }
        let local = key.strip_prefix("port:")?;
        let (node, port) = local.split_once(':')?;
        self.port_by_local(node, port)
            .map(|p| Resource::Port(p, dir))
    }

    /// A human description: `link chic-nycm (chic→nycm)` or `port hous:xe-0/0/0 (in)`.
    pub fn describe(&self, r: Resource) -> String {
        match r {
            Resource::Link(l, d) => {
                let from = &self.nodes[self.link_tail(l, d)].id;
                let to = &self.nodes[self.link_head(l, d)].id;
                format!("link {} ({from}→{to})", self.links[l].id)
            }
            Resource::Port(p, d) => format!(
                "port {} ({})",
                self.port_local_name(p),
                match d {
                    Direction::Forward => "in",
                    Direction::Reverse => "out",
                }
            ),
        }
    }

    /// Ports where circuits may start or end: those not used by an internal link.
    pub fn edge_ports(&self) -> impl Iterator<Item = PortIdx> + '_ {
        (0..self.ports.len()).filter(|&p| self.ports[p].link.is_none())
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds small topologies for tests: `line("d", &[("a","b",100)])` and friends.
pub mod fixture {
    use super::*;

    /// Every node gets one edge port `p0` with VLANs 100-199 at `edge_mbps`; every link
    /// gets ports named after the node it leads to.
    pub fn from_links(domain: &str, links: &[(&str, &str, u64, u32)], edge_mbps: u64) -> Topology {
        let mut order: Vec<String> = Vec::new();
        for (a, b, _, _) in links {
            for n in [a, b] {
                if !order.iter().any(|x| x == n) {
                    order.push(n.to_string());
                }
            }
        }
        let vlans = VlanSet::parse("100-199").expect("static range");
        let nodes = order
            .iter()
            .map(|id| {
                let mut ports = vec![PortSpec {
                    name: "p0".into(),
                    vlans: vlans.clone(),
                    capacity: Mbps(edge_mbps),
                    peer: None,
                    peer_metric: 1,
                }];
                for (a, b, cap, _) in links {
                    let other = if a == id {
                        b
                    } else if b == id {
                        a
                    } else {
                        continue;
                    };
                    let name = format!("to-{other}");
                    if !ports.iter().any(|p| p.name == name) {
                        ports.push(PortSpec {
                            name,
                            vlans: vlans.clone(),
                            capacity: Mbps(*cap),
                            peer: None,
                            peer_metric: 1,
                        });
                    }
                }
                NodeSpec {
                    id: id.clone(),
                    name: id.clone(),
                    vlan_translation: false,
                    location: None,
                    ports,
                }
            })
            .collect();
        let links = links
            .iter()
            .map(|(a, b, cap, metric)| LinkSpec {
                id: format!("{a}-{b}"),
                a: (a.to_string(), format!("to-{b}")),
                b: (b.to_string(), format!("to-{a}")),
                capacity_ab: Mbps(*cap),
                capacity_ba: Mbps(*cap),
                metric: *metric,
            })
            .collect();
        Topology::build(domain, "test fixture", nodes, links).expect("fixture topology is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str) -> PortSpec {
        PortSpec {
            name: name.into(),
            vlans: VlanSet::parse("1-10").unwrap(),
            capacity: Mbps(1000),
            peer: None,
            peer_metric: 1,
        }
    }

    fn node(id: &str, ports: &[&str]) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            name: id.into(),
            vlan_translation: false,
            location: None,
            ports: ports.iter().map(|p| port(p)).collect(),
        }
    }

    fn link(id: &str, a: (&str, &str), b: (&str, &str)) -> LinkSpec {
        LinkSpec {
            id: id.into(),
            a: (a.0.into(), a.1.into()),
            b: (b.0.into(), b.1.into()),
            capacity_ab: Mbps(100),
            capacity_ba: Mbps(50),
            metric: 1,
        }
    }

    #[test]
    fn builds_and_indexes() {
        let t = Topology::build(
            "d",
            "",
            vec![node("x", &["e", "l"]), node("y", &["l", "e"])],
            vec![link("x-y", ("x", "l"), ("y", "l"))],
        )
        .unwrap();
        let l = t.link_by_id("x-y").unwrap();
        let x = t.node_by_id("x").unwrap();
        let y = t.node_by_id("y").unwrap();
        assert_eq!(t.link_head(l, Direction::Forward), y);
        assert_eq!(t.link_tail(l, Direction::Forward), x);
        assert_eq!(t.adjacent(y), &[(l, Direction::Reverse)]);
        assert_eq!(t.capacity(Resource::Link(l, Direction::Reverse)), Mbps(50));
        let edge: Vec<String> = t.edge_ports().map(|p| t.port_local_name(p)).collect();
        assert_eq!(edge, vec!["x:e", "y:e"]);
        let (key, dir) = t.resource_key(Resource::Port(0, Direction::Reverse));
        assert_eq!(key, "port:x:e");
        assert_eq!(
            t.resource_by_key(&key, dir),
            Some(Resource::Port(0, Direction::Reverse))
        );
        assert_eq!(
            t.resource_by_key("link:x-y", Direction::Forward),
            Some(Resource::Link(l, Direction::Forward))
        );
    }

    #[test]
    fn refuses_broken_specs_naming_the_item_and_field() {
        let cases: Vec<(Vec<NodeSpec>, Vec<LinkSpec>, SpecItem, &str)> = vec![
            (vec![], vec![], SpecItem::Domain, "node"),
            (
                vec![node("x", &["e"]), node("x", &["e"])],
                vec![],
                SpecItem::Node(1),
                "id",
            ),
            (
                vec![node("x", &["e", "e"])],
                vec![],
                SpecItem::Port(0, 1),
                "name",
            ),
            (
                vec![node("x", &["l"]), node("y", &["l"])],
                vec![link("x-y", ("x", "l"), ("z", "l"))],
                SpecItem::Link(0),
                "b",
            ),
            (
                vec![node("x", &["l"]), node("y", &["l"])],
                vec![link("x-y", ("x", "nope"), ("y", "l"))],
                SpecItem::Link(0),
                "a",
            ),
            (
                vec![node("x", &["l", "m"]), node("y", &["l", "m"])],
                vec![
                    link("x-y", ("x", "l"), ("y", "l")),
                    link("x-y2", ("x", "l"), ("y", "m")),
                ],
                SpecItem::Link(1),
                "a",
            ),
            (
                vec![node("x", &["l", "m"])],
                vec![link("x-x", ("x", "l"), ("x", "m"))],
                SpecItem::Link(0),
                "b",
            ),
        ];
        for (i, (nodes, links, item, field)) in cases.into_iter().enumerate() {
            let e = Topology::build("d", "", nodes, links).unwrap_err();
            assert_eq!((e.item, e.field), (item, field), "case {i}: {e}");
        }
    }

    #[test]
    fn fixture_builds_a_line() {
        let t = fixture::from_links("d", &[("a", "b", 100, 1), ("b", "c", 100, 1)], 1000);
        assert_eq!(t.nodes().len(), 3);
        assert_eq!(t.links().len(), 2);
        assert_eq!(t.edge_ports().count(), 3);
    }
}
