//! `sluice topology --check --agents F [--file T]`: the domain topology (the file, or the
//! IDC's) against what the node agents report of their ports. Every agent is asked in
//! parallel, each within [`CALL_TIMEOUT`]; the comparison itself is a pure function
//! ([`compare`]) so it is tested without sockets.
//!
//! Each finding has a stable word (scripts match on it, in `--json` too):
//!
//! | word | what |
//! |---|---|
//! | `unreachable` | the agent did not answer (with why) |
//! | `wrong-node` | the agent says it runs another node than the agents file says |
//! | `unknown-node` | the agents file names a node the topology does not have |
//! | `missing` | a topology port the agent does not report |
//! | `extra` | an agent port the topology does not have |
//! | `down` | the port's interface is down |
//! | `slow` | the interface's speed is known and below the topology's capacity |
//! | `capacity` | the agent shapes the port to another capacity than the topology's |
//! | `no-agent` | a topology node without an agent: a note, not a failure |
//!
//! Anything but `no-agent` fails the command: 00100 `[topology]` when the agents and the
//! topology disagree, 00500 `[agents]` when the only trouble is agents that did not answer
//! (the check could not be made, which says nothing against the topology).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use sluice_idc::agents::{AgentsConfig, CALL_TIMEOUT, endpoint};
use sluice_idc::federation::tls::TlsMaterial;
use sluice_model::{Error, ErrorCode};
use sluice_proto::v1;
use sluice_proto::v1::agent_client::AgentClient;

use crate::client::{connect, err};
use crate::output;

/// What can be found about a node or a port; in the order the summary counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    Unreachable,
    WrongNode,
    UnknownNode,
    Missing,
    Extra,
    Down,
    Slow,
    Capacity,
    NoAgent,
}

impl Finding {
    /// The stable word printed and put in the JSON.
    pub fn word(self) -> &'static str {
        match self {
            Finding::Unreachable => "unreachable",
            Finding::WrongNode => "wrong-node",
            Finding::UnknownNode => "unknown-node",
            Finding::Missing => "missing",
            Finding::Extra => "extra",
            Finding::Down => "down",
            Finding::Slow => "slow",
            Finding::Capacity => "capacity",
            Finding::NoAgent => "no-agent",
        }
    }

    /// A node without an agent is only a note: not every node needs one (yet).
    fn fails(self) -> bool {
        self != Finding::NoAgent
    }
}

/// One line of the report: a port (with what each side says of it), or a whole node when
/// its ports could not be compared (`port` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub node: String,
    pub port: Option<String>,
    pub dev: Option<String>,
    pub topology_mbps: Option<u64>,
    pub agent_mbps: Option<u64>,
    /// 0: the kernel does not know (veth, mock).
    pub speed_mbps: Option<u64>,
    pub up: Option<bool>,
    /// Empty: the port is ok.
    pub findings: Vec<(Finding, String)>,
}

impl Row {
    fn node(node: &str, finding: Finding, message: String) -> Row {
        Row {
            node: node.to_string(),
            port: None,
            dev: None,
            topology_mbps: None,
            agent_mbps: None,
            speed_mbps: None,
            up: None,
            findings: vec![(finding, message)],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub domain: String,
    /// Where the topology came from (a file, or the IDC's URL) and the agents file.
    pub topology_source: String,
    pub agents_source: String,
    pub rows: Vec<Row>,
    /// Findings that do not fail the check (nodes without an agent).
    pub notes: Vec<(String, Finding, String)>,
}

/// What each agent answered, by the node the agents file names it for.
pub type Answers = BTreeMap<String, Result<v1::AgentPortsReply, String>>;

/// Compares the topology with the agents' answers: topology nodes in the topology's
/// order (each port in its order, then the agent's extra ones), then the agents file's
/// nodes the topology does not have.
pub fn compare(
    topology: &v1::TopologyReply,
    agents: &BTreeMap<String, String>,
    answers: &Answers,
) -> (Vec<Row>, Vec<(String, Finding, String)>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for n in &topology.nodes {
        let Some(url) = agents.get(&n.id) else {
            notes.push((
                n.id.clone(),
                Finding::NoAgent,
                "no agent in the agents file: not checked".to_string(),
            ));
            continue;
        };
        let reply = match answers.get(&n.id) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                rows.push(Row::node(
                    &n.id,
                    Finding::Unreachable,
                    format!("{url}: {e}"),
                ));
                continue;
            }
            None => {
                rows.push(Row::node(
                    &n.id,
                    Finding::Unreachable,
                    format!("{url}: not asked"),
                ));
                continue;
            }
        };
        if reply.node != n.id {
            // Its ports are another node's: comparing them would only add noise.
            rows.push(Row::node(
                &n.id,
                Finding::WrongNode,
                format!("the agent at {url} runs node {}", reply.node),
            ));
            continue;
        }
        for p in &n.ports {
            let Some(a) = reply.ports.iter().find(|a| a.name == p.name) else {
                rows.push(Row {
                    node: n.id.clone(),
                    port: Some(p.name.clone()),
                    dev: None,
                    topology_mbps: Some(p.capacity_mbps),
                    agent_mbps: None,
                    speed_mbps: None,
                    up: None,
                    findings: vec![(Finding::Missing, "not in the agent's file".to_string())],
                });
                continue;
            };
            let mut findings = Vec::new();
            if !a.up {
                findings.push((Finding::Down, format!("{} is down", a.dev)));
            }
            if a.speed_mbps > 0 && a.speed_mbps < p.capacity_mbps {
                findings.push((
                    Finding::Slow,
                    format!(
                        "{} runs at {} Mb/s, the topology says {} Mb/s",
                        a.dev, a.speed_mbps, p.capacity_mbps
                    ),
                ));
            }
            if a.capacity_mbps != p.capacity_mbps {
                findings.push((
                    Finding::Capacity,
                    format!(
                        "shaped to {} Mb/s, the topology says {} Mb/s",
                        a.capacity_mbps, p.capacity_mbps
                    ),
                ));
            }
            rows.push(Row {
                node: n.id.clone(),
                port: Some(p.name.clone()),
                dev: Some(a.dev.clone()),
                topology_mbps: Some(p.capacity_mbps),
                agent_mbps: Some(a.capacity_mbps),
                speed_mbps: Some(a.speed_mbps),
                up: Some(a.up),
                findings,
            });
        }
        let known: BTreeSet<&str> = n.ports.iter().map(|p| p.name.as_str()).collect();
        for a in reply
            .ports
            .iter()
            .filter(|a| !known.contains(a.name.as_str()))
        {
            rows.push(Row {
                node: n.id.clone(),
                port: Some(a.name.clone()),
                dev: Some(a.dev.clone()),
                topology_mbps: None,
                agent_mbps: Some(a.capacity_mbps),
                speed_mbps: Some(a.speed_mbps),
                up: Some(a.up),
                findings: vec![(Finding::Extra, "not in the topology".to_string())],
            });
        }
    }
    let in_topology: BTreeSet<&str> = topology.nodes.iter().map(|n| n.id.as_str()).collect();
    for (node, url) in agents
        .iter()
        .filter(|(n, _)| !in_topology.contains(n.as_str()))
    {
        let mut row = Row::node(
            node,
            Finding::UnknownNode,
            format!("the agent at {url} runs a node not in the topology"),
        );
        if let Some(Err(e)) = answers.get(node) {
            row.findings
                .push((Finding::Unreachable, format!("{url}: {e}")));
        }
        rows.push(row);
    }
    (rows, notes)
}

impl Report {
    /// How many of each failing finding, in [`Finding`] order.
    fn counts(&self) -> BTreeMap<Finding, usize> {
        let mut counts = BTreeMap::new();
        for (f, _) in self.rows.iter().flat_map(|r| &r.findings) {
            *counts.entry(*f).or_insert(0) += 1;
        }
        counts
    }

    fn ports_ok(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.port.is_some() && r.findings.is_empty())
            .count()
    }

    /// Why the check fails, if it does: the stable error scripts match on.
    pub fn failure(&self) -> Option<Error> {
        let counts = self.counts();
        if !counts.keys().any(|f| f.fails()) {
            return None;
        }
        let summary: Vec<String> = counts
            .iter()
            .filter(|(f, _)| f.fails())
            .map(|(f, n)| format!("{n} {}", f.word()))
            .collect();
        Some(if counts.keys().all(|f| *f == Finding::Unreachable) {
            Error::field(
                ErrorCode::Internal,
                "agents",
                format!(
                    "not every agent answered, the topology could not be checked: {}",
                    summary.join(", ")
                ),
            )
        } else {
            Error::invalid(
                "topology",
                format!(
                    "the node agents disagree with the topology: {}",
                    summary.join(", ")
                ),
            )
        })
    }

    pub fn json(&self) -> Value {
        let counts: serde_json::Map<String, Value> =
            std::iter::once(("ok".into(), json!(self.ports_ok())))
                .chain(
                    self.counts()
                        .into_iter()
                        .map(|(f, n)| (f.word().to_string(), json!(n))),
                )
                .collect();
        json!({
            "domain": self.domain,
            "topology": self.topology_source,
            "agents": self.agents_source,
            "ok": self.failure().is_none(),
            "results": self.rows.iter().map(|r| json!({
                "node": r.node,
                "port": r.port,
                "dev": r.dev,
                "topology_mbps": r.topology_mbps,
                "agent_mbps": r.agent_mbps,
                "speed_mbps": r.speed_mbps,
                "up": r.up,
                "ok": r.findings.is_empty(),
                "findings": r.findings.iter().map(|(f, m)| json!({
                    "finding": f.word(), "message": m,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "notes": self.notes.iter().map(|(node, f, m)| json!({
                "node": node, "finding": f.word(), "message": m,
            })).collect::<Vec<_>>(),
            "counts": counts,
        })
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "topology {} ({}) against the agents of {}\n\n",
            self.domain, self.topology_source, self.agents_source
        );
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header([
            "node",
            "port",
            "dev",
            "topology Mb/s",
            "agent Mb/s",
            "speed Mb/s",
            "state",
            "verdict",
        ]);
        let num = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        for r in &self.rows {
            let verdict = if r.findings.is_empty() {
                "ok".to_string()
            } else {
                r.findings
                    .iter()
                    .map(|(f, m)| format!("{}: {m}", f.word()))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            t.add_row([
                r.node.clone(),
                r.port.clone().unwrap_or_else(|| "-".into()),
                r.dev.clone().unwrap_or_else(|| "-".into()),
                num(r.topology_mbps),
                num(r.agent_mbps),
                match r.speed_mbps {
                    Some(0) => "unknown".into(),
                    s => num(s),
                },
                match r.up {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "-",
                }
                .into(),
                verdict,
            ]);
        }
        out += &t.to_string();
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(f, n)| format!("{n} {}", f.word()))
            .collect();
        let ok = self.ports_ok();
        out += &format!("\n{ok} port{} ok", if ok == 1 { "" } else { "s" });
        if !counts.is_empty() {
            out += &format!("; {}", counts.join(", "));
        }
        if !self.notes.is_empty() {
            let nodes: Vec<&str> = self.notes.iter().map(|(n, _, _)| n.as_str()).collect();
            out += &format!("\nno agent (not checked): {}", nodes.join(", "));
        }
        out
    }
}

/// Runs the check and prints it; the exit status says whether everything agrees.
pub fn run(
    agents_file: &Path,
    topology_file: Option<&Path>,
    server: &str,
    user: &str,
    json_out: bool,
) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = match rt.block_on(check(agents_file, topology_file, server, user)) {
        Ok(r) => r,
        Err(e) => return crate::fail(&e, json_out),
    };
    let failure = report.failure();
    if json_out {
        // One document, as for every command: the report, and the error when it fails.
        let mut doc = report.json();
        if let Some(e) = &failure {
            doc["error"] = output::error_json(e)["error"].clone();
        }
        println!("{doc}");
    } else {
        println!("{}", report.human());
        if let Some(e) = &failure {
            eprintln!("{}", output::error_human(e));
        }
    }
    if failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn check(
    agents_file: &Path,
    topology_file: Option<&Path>,
    server: &str,
    user: &str,
) -> Result<Report, Error> {
    let cfg = AgentsConfig::load(agents_file).map_err(|e| Error::invalid("agents", e))?;
    if cfg.agents.is_empty() {
        // A check of nothing would pass and prove nothing.
        return Err(Error::invalid(
            "agents",
            format!("{} lists no agent", agents_file.display()),
        ));
    }
    let (topology, topology_source) = match topology_file {
        Some(path) => {
            let t = sluice_idc::topology_file::load(path)
                .map_err(|e| Error::invalid("topology", e.to_string()))?;
            (
                sluice_proto::convert::topology(&t),
                path.display().to_string(),
            )
        }
        None => {
            let mut c = connect(server, user).await?;
            let t = c
                .topology
                .get_topology(v1::GetTopologyRequest {})
                .await
                .map_err(err)?
                .into_inner();
            (t, format!("from the IDC at {server}"))
        }
    };
    let answers = ask_all(&cfg).await;
    let (rows, notes) = compare(&topology, &cfg.agents, &answers);
    Ok(Report {
        domain: topology.domain,
        topology_source,
        agents_source: agents_file.display().to_string(),
        rows,
        notes,
    })
}

/// Every agent's ports, asked in parallel.
async fn ask_all(cfg: &AgentsConfig) -> Answers {
    let calls: Vec<_> = cfg
        .agents
        .iter()
        .map(|(node, url)| {
            let (node, url, tls) = (node.clone(), url.clone(), cfg.tls.clone());
            tokio::spawn(async move {
                let answer = tokio::time::timeout(CALL_TIMEOUT, ports(&node, &url, tls.as_ref()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs()))
                    });
                (node, answer)
            })
        })
        .collect();
    let mut answers = Answers::new();
    for c in calls {
        if let Ok((node, answer)) = c.await {
            answers.insert(node, answer);
        }
    }
    answers
}

/// One agent's ports, over the channel `idc::agents` makes (the agent's certificate
/// must name its node), so a check that passes means the IDC gets through.
async fn ports(
    node: &str,
    url: &str,
    tls: Option<&TlsMaterial>,
) -> Result<v1::AgentPortsReply, String> {
    let channel = endpoint(node, url, tls)?
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", causes(&e)))?;
    AgentClient::new(channel)
        .ports(v1::AgentPortsRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| sluice_proto::status::from_status(&s).message)
}

/// What is behind an error: tonic's own message ("transport error") says nothing, its
/// causes do ("tcp connect error: Connection refused").
fn causes(e: &dyn std::error::Error) -> String {
    let Some(first) = e.source() else {
        return e.to_string();
    };
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(first);
    while let Some(s) = next {
        let text = s.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, mbps: u64) -> v1::Port {
        v1::Port {
            name: name.into(),
            capacity_mbps: mbps,
            ..Default::default()
        }
    }

    fn agent_port(name: &str, mbps: u64, speed: u64, up: bool) -> v1::AgentPort {
        v1::AgentPort {
            name: name.into(),
            dev: format!("d-{name}"),
            capacity_mbps: mbps,
            speed_mbps: speed,
            up,
        }
    }

    fn topology() -> v1::TopologyReply {
        v1::TopologyReply {
            domain: "lab".into(),
            nodes: ["a", "b", "c"]
                .iter()
                .map(|n| v1::Node {
                    id: n.to_string(),
                    ports: vec![port("p1", 1000), port("p2", 10_000)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn words(r: &Row) -> Vec<&'static str> {
        r.findings.iter().map(|(f, _)| f.word()).collect()
    }

    #[test]
    fn agreeing_agents_pass_and_nodes_without_one_are_a_note() {
        let agents: BTreeMap<String, String> = [("a", "http://x:1"), ("b", "http://x:2")]
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .into();
        let answers: Answers = ["a", "b"]
            .map(|n| {
                (
                    n.to_string(),
                    Ok(v1::AgentPortsReply {
                        node: n.into(),
                        ports: vec![
                            agent_port("p1", 1000, 1000, true),
                            // Speed unknown (veth): not held against it.
                            agent_port("p2", 10_000, 0, true),
                        ],
                    }),
                )
            })
            .into();
        let (rows, notes) = compare(&topology(), &agents, &answers);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.findings.is_empty()), "{rows:?}");
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].0.as_str(), notes[0].1), ("c", Finding::NoAgent));
        let report = Report {
            domain: "lab".into(),
            topology_source: "t".into(),
            agents_source: "a".into(),
            rows,
            notes,
        };
        assert_eq!(report.failure(), None);
        assert_eq!(report.json()["counts"], json!({"ok": 4}));
    }

    #[test]
    fn every_kind_of_disagreement_is_named() {
        let agents: BTreeMap<String, String> = [
            ("a", "http://x:1"),
            ("b", "http://x:2"),
            ("c", "http://x:3"),
            ("z", "http://x:4"),
        ]
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .into();
        let answers: Answers = [
            (
                "a",
                Ok(v1::AgentPortsReply {
                    node: "a".into(),
                    ports: vec![
                        agent_port("p1", 1000, 100, false),
                        agent_port("p3", 1000, 1000, true),
                    ],
                }),
            ),
            (
                "b",
                Ok(v1::AgentPortsReply {
                    node: "c".into(),
                    ports: vec![],
                }),
            ),
            ("c", Err("cannot connect: refused".to_string())),
            ("z", Err("cannot connect: refused".to_string())),
        ]
        .map(|(n, r)| (n.to_string(), r))
        .into();
        let (rows, notes) = compare(&topology(), &agents, &answers);
        let got: Vec<(&str, Option<&str>, Vec<&str>)> = rows
            .iter()
            .map(|r| (r.node.as_str(), r.port.as_deref(), words(r)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Some("p1"), vec!["down", "slow"]),
                ("a", Some("p2"), vec!["missing"]),
                ("a", Some("p3"), vec!["extra"]),
                ("b", None, vec!["wrong-node"]),
                ("c", None, vec!["unreachable"]),
                ("z", None, vec!["unknown-node", "unreachable"]),
            ]
        );
        assert!(notes.is_empty());
        let report = Report {
            domain: "lab".into(),
            topology_source: "t".into(),
            agents_source: "a".into(),
            rows,
            notes,
        };
        let e = report.failure().unwrap();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidParameter, Some("topology"))
        );
        assert!(e.message.contains("2 unreachable"), "{}", e.message);
    }

    #[test]
    fn a_wrong_capacity_is_named_and_agents_that_only_failed_to_answer_are_00500() {
        let agents: BTreeMap<String, String> = [("a", "http://x:1"), ("b", "http://x:2")]
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .into();
        let mut answers: Answers = [(
            "a".to_string(),
            Ok(v1::AgentPortsReply {
                node: "a".into(),
                ports: vec![
                    agent_port("p1", 1000, 1000, true),
                    agent_port("p2", 5000, 10_000, true),
                ],
            }),
        )]
        .into();
        answers.insert("b".into(), Err("no answer within 10 s".into()));
        let (rows, _) = compare(&topology(), &agents, &answers);
        assert_eq!(words(&rows[1]), vec!["capacity"]);
        answers.insert(
            "a".into(),
            Ok(v1::AgentPortsReply {
                node: "a".into(),
                ports: vec![
                    agent_port("p1", 1000, 1000, true),
                    agent_port("p2", 10_000, 10_000, true),
                ],
            }),
        );
        let (rows, notes) = compare(&topology(), &agents, &answers);
        let e = Report {
            domain: "lab".into(),
            topology_source: "t".into(),
            agents_source: "a".into(),
            rows,
            notes,
        }
        .failure()
        .unwrap();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::Internal, Some("agents"))
        );
    }
}
