//! The domain topology file (TOML): read, check, and turn into a [`Topology`]. Every
//! error names the file, the line and the field.
//!
//! ```toml
//! [domain]
//! id = "internet2"
//! description = "Abilene"
//!
//! [[node]]
//! id = "new-york"
//! name = "New York"
//! location = [-74.01, 40.71]       # optional, [lon, lat]
//! vlan_translation = false          # optional
//! ports = [
//!   { name = "xe-0/0/0", vlans = "100-999", capacity_mbps = 10000 },
//!   { name = "et-1/0/0", vlans = "2-4094", capacity_mbps = 100000 },
//!   # A service demarcation point: faces a port of another domain; peer_metric (default 1)
//!   # is the cost of that inter-domain link when routes across domains are ranked.
//!   { name = "xe-9/0/0", vlans = "3000-3099", capacity_mbps = 10000, peer = "geant:uk:xe-9/0/0", peer_metric = 10 },
//! ]
//!
//! [[link]]
//! id = "new-york--chicago"
//! a = "new-york:et-1/0/0"
//! b = "chicago:et-1/0/0"
//! capacity_mbps = 100000            # A→B, and B→A unless capacity_ba_mbps is given
//! metric = 1146
//! ```

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use sluice_model::topology::{LinkSpec, NodeSpec, PortSpec, SpecItem};
use sluice_model::{Mbps, Stp, Topology, VlanSet};
use toml::Spanned;

/// The example domain bundled into the binary and used when no file is given.
pub const BUNDLED: &str = include_str!("../../topologies/internet2.toml");
pub const BUNDLED_NAME: &str = "topologies/internet2.toml (bundled)";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {field}: {message}")]
pub struct TopologyFileError {
    pub source_name: String,
    pub line: usize,
    pub column: usize,
    /// A dotted path into the file, such as `node[2].ports[0].vlans`.
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    domain: Spanned<DomainFile>,
    #[serde(default)]
    node: Vec<Spanned<NodeFile>>,
    #[serde(default)]
    link: Vec<Spanned<LinkFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    location: Option<(f64, f64)>,
    #[serde(default)]
    vlan_translation: bool,
    #[serde(default)]
    ports: Vec<Spanned<PortFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortFile {
    name: Spanned<String>,
    vlans: Spanned<String>,
    capacity_mbps: Spanned<u64>,
    #[serde(default)]
    peer: Option<Spanned<String>>,
    /// The cost of the inter-domain link behind a peer port.
    #[serde(default)]
    peer_metric: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkFile {
    id: Spanned<String>,
    a: Spanned<String>,
    b: Spanned<String>,
    capacity_mbps: Spanned<u64>,
    #[serde(default)]
    capacity_ba_mbps: Option<Spanned<u64>>,
    metric: Spanned<u32>,
}

struct Reader<'a> {
    name: &'a str,
    text: &'a str,
}

impl Reader<'_> {
    fn error(&self, span: Range<usize>, field: String, message: String) -> TopologyFileError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        TopologyFileError {
            source_name: self.name.to_string(),
            line,
            column,
            field,
            message,
        }
    }
}

/// Reads and checks a topology file.
pub fn load(path: &Path) -> Result<Topology, TopologyFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TopologyFileError {
        source_name: name.clone(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&name, &text)
}

/// Writes a topology in the file format `parse` reads (used to save generated test
/// topologies, e.g. `sluice topology --generate 1000x5000`).
pub fn to_toml(t: &Topology) -> String {
    // Strings are written as TOML basic strings via Debug, which escapes the same way
    // for everything a valid id, name or description can hold.
    let q = |s: &str| format!("{:?}", s);
    let mut out = format!(
        "[domain]\nid = {}\ndescription = {}\n",
        q(&t.domain),
        q(&t.description)
    );
    for n in t.nodes() {
        out += &format!("\n[[node]]\nid = {}\nname = {}\n", q(&n.id), q(&n.name));
        if let Some((lon, lat)) = n.location {
            out += &format!("location = [{lon}, {lat}]\n");
        }
        out += &format!("vlan_translation = {}\nports = [\n", n.vlan_translation);
        for &p in &n.ports {
            let port = t.port(p);
            out += &format!(
                "  {{ name = {}, vlans = {}, capacity_mbps = {}",
                q(&port.name),
                q(&port.vlans.to_string()),
                port.capacity.0
            );
            if let Some(peer) = &port.peer {
                out += &format!(", peer = {}", q(&peer.stp.to_string()));
                if peer.metric != 1 {
                    out += &format!(", peer_metric = {}", peer.metric);
                }
            }
            out += " },\n";
        }
        out += "]\n";
    }
    for l in t.links() {
        out += &format!(
            "\n[[link]]\nid = {}\na = {}\nb = {}\ncapacity_mbps = {}\n",
            q(&l.id),
            q(&t.port_local_name(l.a)),
            q(&t.port_local_name(l.b)),
            l.capacity_ab.0
        );
        if l.capacity_ba != l.capacity_ab {
            out += &format!("capacity_ba_mbps = {}\n", l.capacity_ba.0);
        }
        out += &format!("metric = {}\n", l.metric);
    }
    out
}

/// The bundled example domain.
pub fn bundled() -> Topology {
    parse(BUNDLED_NAME, BUNDLED).expect("the bundled topology is valid (tested)")
}

/// Parses topology text; `name` is used in error messages.
pub fn parse(name: &str, text: &str) -> Result<Topology, TopologyFileError> {
    let rd = Reader { name, text };
    let file: FileSpec = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // toml's message names the key; keep its first line, without its own position.
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        let field = field_from_toml_message(&message);
        rd.error(span, field, message)
    })?;

    let mut nodes = Vec::with_capacity(file.node.len());
    for (ni, n) in file.node.iter().enumerate() {
        let n = n.get_ref();
        let mut ports = Vec::with_capacity(n.ports.len());
        for (pi, p) in n.ports.iter().enumerate() {
            let p = p.get_ref();
            let at = |f: &str| format!("node[{ni}].ports[{pi}].{f}");
            let vlans = VlanSet::parse(p.vlans.get_ref())
                .map_err(|e| rd.error(p.vlans.span(), at("vlans"), e.message))?;
            let peer = match &p.peer {
                None => None,
                Some(s) => Some(
                    Stp::parse(s.get_ref())
                        .map_err(|e| rd.error(s.span(), at("peer"), e.message))?,
                ),
            };
            ports.push(PortSpec {
                name: p.name.get_ref().clone(),
                vlans,
                capacity: Mbps(*p.capacity_mbps.get_ref()),
                peer,
                peer_metric: p.peer_metric.unwrap_or(1),
            });
        }
        nodes.push(NodeSpec {
            id: n.id.get_ref().clone(),
            name: n.name.clone().unwrap_or_else(|| n.id.get_ref().clone()),
            vlan_translation: n.vlan_translation,
            location: n.location,
            ports,
        });
    }
    let mut links = Vec::with_capacity(file.link.len());
    for (li, l) in file.link.iter().enumerate() {
        let l = l.get_ref();
        let end = |s: &Spanned<String>, f: &str| -> Result<(String, String), TopologyFileError> {
            s.get_ref()
                .split_once(':')
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| {
                    rd.error(
                        s.span(),
                        format!("link[{li}].{f}"),
                        format!("{:?} is not node:port", s.get_ref()),
                    )
                })
        };
        let capacity_ab = Mbps(*l.capacity_mbps.get_ref());
        links.push(LinkSpec {
            id: l.id.get_ref().clone(),
            a: end(&l.a, "a")?,
            b: end(&l.b, "b")?,
            capacity_ab,
            capacity_ba: l
                .capacity_ba_mbps
                .as_ref()
                .map_or(capacity_ab, |c| Mbps(*c.get_ref())),
            metric: *l.metric.get_ref(),
        });
    }

    let domain = file.domain.get_ref();
    Topology::build(domain.id.get_ref(), &domain.description, nodes, links).map_err(|e| {
        let (span, field) = match e.item {
            SpecItem::Domain if e.field == "id" => (domain.id.span(), "domain.id".to_string()),
            SpecItem::Domain => (file.domain.span(), e.field.to_string()),
            SpecItem::Node(ni) => {
                let n = &file.node[ni];
                let span = match e.field {
                    "id" => n.get_ref().id.span(),
                    _ => n.span(),
                };
                (span, format!("node[{ni}].{}", e.field))
            }
            SpecItem::Port(ni, pi) => {
                let p = &file.node[ni].get_ref().ports[pi];
                let pr = p.get_ref();
                let span = match e.field {
                    "name" => pr.name.span(),
                    "vlans" => pr.vlans.span(),
                    "capacity_mbps" => pr.capacity_mbps.span(),
                    "peer" => pr.peer.as_ref().map_or(p.span(), |s| s.span()),
                    _ => p.span(),
                };
                (span, format!("node[{ni}].ports[{pi}].{}", e.field))
            }
            SpecItem::Link(li) => {
                let l = &file.link[li];
                let lr = l.get_ref();
                let span = match e.field {
                    "id" => lr.id.span(),
                    "a" => lr.a.span(),
                    "b" => lr.b.span(),
                    "capacity_mbps" => lr.capacity_mbps.span(),
                    "capacity_ba_mbps" => {
                        lr.capacity_ba_mbps.as_ref().map_or(l.span(), |s| s.span())
                    }
                    "metric" => lr.metric.span(),
                    _ => l.span(),
                };
                (span, format!("link[{li}].{}", e.field))
            }
        };
        rd.error(span, field, e.message)
    })
}

/// Pulls the key out of toml's messages such as "missing field `metric`".
fn field_from_toml_message(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_topologies_read_back_the_same() {
        let generated = sluice_pce::generate::build(&sluice_pce::generate::Params {
            nodes: 60,
            links: 200,
            seed: 7,
        });
        let mut all = vec![bundled(), generated];
        for f in ["garr", "geant", "jgn2plus"] {
            let path = format!("{}/../topologies/{f}.toml", env!("CARGO_MANIFEST_DIR"));
            all.push(load(Path::new(&path)).unwrap());
        }
        for t in all {
            let text = to_toml(&t);
            let back = parse("written", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(to_toml(&back), text, "{}", t.domain);
            assert_eq!(back.nodes().len(), t.nodes().len());
            assert_eq!(back.links().len(), t.links().len());
            for (a, b) in t.links().iter().zip(back.links()) {
                assert_eq!(
                    (a.capacity_ab, a.capacity_ba, a.metric),
                    (b.capacity_ab, b.capacity_ba, b.metric)
                );
            }
        }
    }

    const GOOD: &str = r#"
[domain]
id = "d"

[[node]]
id = "a"
ports = [
  { name = "e", vlans = "100-200", capacity_mbps = 1000 },
  { name = "l", vlans = "2-4094", capacity_mbps = 10000 },
]

[[node]]
id = "b"
ports = [
  { name = "e", vlans = "100-200", capacity_mbps = 1000 },
  { name = "l", vlans = "2-4094", capacity_mbps = 10000 },
]

[[link]]
id = "a-b"
a = "a:l"
b = "b:l"
capacity_mbps = 10000
metric = 5
"#;

    fn err(text: &str) -> TopologyFileError {
        parse("t.toml", text).unwrap_err()
    }

    #[test]
    fn reads_a_good_file() {
        let t = parse("t.toml", GOOD).unwrap();
        assert_eq!(t.nodes().len(), 2);
        assert_eq!(t.links()[0].capacity_ba, Mbps(10000));
        assert_eq!(t.nodes()[0].name, "a", "name defaults to the id");
    }

    #[test]
    fn every_bundled_topology_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let t = load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(t.nodes().len() >= 6, "{}", path.display());
                seen += 1;
            }
        }
        assert_eq!(seen, 4);
        assert_eq!(bundled().domain, "internet2");
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let cases: Vec<(String, usize, &str, &str)> = vec![
            (GOOD.replace("vlans = \"100-200\", capacity_mbps = 1000 },\n  { name = \"l\", vlans = \"2-4094\", capacity_mbps = 10000 },\n]\n\n[[node]]\nid = \"b\"", "vlans = \"100-5000\", capacity_mbps = 1000 },\n  { name = \"l\", vlans = \"2-4094\", capacity_mbps = 10000 },\n]\n\n[[node]]\nid = \"b\""), 8, "node[0].ports[0].vlans", "outside"),
            (GOOD.replace("b = \"b:l\"", "b = \"c:l\""), 22, "link[0].b", "no node"),
            (GOOD.replace("metric = 5", "metric = 0"), 24, "link[0].metric", "at least 1"),
            (GOOD.replace("metric = 5", "metrik = 5"), 24, "metrik", "unknown field"),
            (GOOD.replace("id = \"b\"", "id = \"a\""), 13, "node[1].id", "twice"),
            (GOOD.replace("capacity_mbps = 10000\nmetric", "capacity_mbps = -3\nmetric"), 23, "", ""),
            (GOOD.replace("a = \"a:l\"", "a = \"a-l\""), 21, "link[0].a", "node:port"),
        ];
        for (i, (text, line, field, words)) in cases.into_iter().enumerate() {
            let e = err(&text);
            assert_eq!(e.line, line, "case {i}: {e}");
            assert!(e.field.contains(field), "case {i}: {e}");
            assert!(e.message.contains(words), "case {i}: {e}");
            assert!(
                e.to_string().starts_with(&format!("t.toml:{line}:")),
                "case {i}: {e}"
            );
        }
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = err("[domain]\nid = \"d\"\n\n[[node]\nid = 3\n");
        assert_eq!(e.line, 4, "{e}");
        let e = err("[[node]]\nid = \"a\"\n");
        assert!(e.message.contains("domain"), "{e}");
    }
}
