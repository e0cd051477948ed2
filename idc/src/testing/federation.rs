//! Several federated domains in one process: each its own IDC (client API on
//! `127.0.0.1:0`, federation over mutual TLS on loopback), its own database and its own
//! certificate from one development CA.
//!
//! A domain's fixture topology: a core node `core` with edge ports `e1` and `e2` (VLANs
//! 100-199), and per peer domain `p` a border node `b-p` whose port `to-p` faces
//! `p:b-<us>:to-<us>`, linked to the core (`core--b-p`) at the domain's internal capacity.
//! A transit segment therefore crosses two internal links, so a domain can be filled up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use sluice_model::topology::{LinkSpec, NodeSpec, PortSpec};
use sluice_model::{Mbps, Stp, Topology, VlanSet};
use sluice_proto::v1::reservations_client::ReservationsClient;
use tonic::transport::Channel;

use super::TestIdc;
use crate::federation::{DevCa, FederationSetup, PeerConfig, Policy, TlsMaterial};

/// One domain of the fixture.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    /// Capacity of its internal links, each direction.
    pub internal: Mbps,
    pub vlan_translation: bool,
}

/// An inter-domain link: both sides peer directly and exchange documents.
#[derive(Debug, Clone)]
pub struct Peering {
    pub a: String,
    pub b: String,
    pub metric: u32,
    pub capacity: Mbps,
}

pub struct TestFederationBuilder {
    domains: Vec<Domain>,
    peerings: Vec<Peering>,
    hold_timeout: TimeDelta,
    call_timeout: Duration,
    /// (callee, caller) → the callee's policy for the caller; default: allow all.
    policies: HashMap<(String, String), Policy>,
    /// Domains whose certificate comes from a CA nobody else trusts.
    untrusted: Vec<String>,
    /// Domains whose IDC drives node agents.
    agents: HashMap<String, crate::agents::AgentsConfig>,
    /// Domains with operators.
    operators: HashMap<String, crate::operators::Operators>,
    /// Domains with a topology of their own instead of the fixture's.
    topologies: HashMap<String, Topology>,
}

pub struct TestFederation {
    pub domains: Vec<TestIdc>,
    names: Vec<String>,
    ca: DevCa,
}

/// A federation listener bound now on a free loopback port and kept until its domain
/// starts: the peers' configurations need every address before any domain starts.
fn bound() -> (SocketAddr, Arc<Mutex<Option<std::net::TcpListener>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let addr = l.local_addr().expect("a bound address");
    (addr, Arc::new(Mutex::new(Some(l))))
}

impl TestFederation {
    pub fn builder() -> TestFederationBuilder {
        TestFederationBuilder {
            domains: Vec::new(),
            peerings: Vec::new(),
            hold_timeout: crate::service::DEFAULT_HOLD_TIMEOUT,
            call_timeout: Duration::from_secs(3),
            policies: HashMap::new(),
            untrusted: Vec::new(),
            agents: HashMap::new(),
            operators: HashMap::new(),
            topologies: HashMap::new(),
        }
    }

    /// Domains in a line, each peered with the next.
    pub fn line(names: &[&str]) -> TestFederationBuilder {
        let mut b = TestFederation::builder();
        for n in names {
            b = b.domain(n);
        }
        for w in names.windows(2) {
            b = b.peering(w[0], w[1], 1);
        }
        b
    }

    pub fn get(&self, name: &str) -> &TestIdc {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no domain {name} in the fixture"));
        &self.domains[i]
    }

    pub fn get_mut(&mut self, name: &str) -> &mut TestIdc {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no domain {name} in the fixture"));
        &mut self.domains[i]
    }

    pub async fn client(&self, name: &str) -> ReservationsClient<Channel> {
        self.get(name).client().await
    }

    /// The federation CA, to make more certificates (a rogue client, say).
    pub fn ca(&self) -> &DevCa {
        &self.ca
    }

    /// Rounds of document exchange until every running domain knows every other
    /// running domain (or `rounds` pass). Returns whether they all do.
    pub async fn exchange(&self, rounds: usize) -> bool {
        for _ in 0..rounds {
            for d in &self.domains {
                if let Some(s) = &d.server
                    && let Some((_, fed)) = &s.federation
                {
                    fed.refresh().await;
                }
            }
            let running: Vec<&TestIdc> =
                self.domains.iter().filter(|d| d.server.is_some()).collect();
            let all = running.iter().all(|d| {
                let (_, fed) = d.server().federation.as_ref().expect("federated");
                let known = fed.known_documents();
                running.iter().all(|o| {
                    known
                        .iter()
                        .any(|(doc, _)| doc.domain == o.idc().topology().domain)
                })
            });
            if all {
                return true;
            }
        }
        false
    }

    /// Stops one domain's IDC (its holds stay in its database).
    pub async fn kill(&mut self, name: &str) {
        let d = self.get_mut(name);
        if let Some(s) = d.server.take() {
            let _ = s.shutdown().await;
        }
    }

    pub async fn shutdown(self) {
        for d in self.domains {
            d.shutdown().await;
        }
    }
}

impl TestFederationBuilder {
    pub fn domain(mut self, name: &str) -> Self {
        self.domains.push(Domain {
            name: name.to_string(),
            internal: Mbps(10_000),
            vlan_translation: false,
        });
        self
    }

    /// Internal links of `name` at `mbps`.
    pub fn internal(mut self, name: &str, mbps: u64) -> Self {
        let d = self
            .domains
            .iter_mut()
            .find(|d| d.name == name)
            .expect("domain declared first");
        d.internal = Mbps(mbps);
        self
    }

    pub fn peering(mut self, a: &str, b: &str, metric: u32) -> Self {
        self.peerings.push(Peering {
            a: a.to_string(),
            b: b.to_string(),
            metric,
            capacity: Mbps(10_000),
        });
        self
    }

    pub fn hold_timeout(mut self, t: TimeDelta) -> Self {
        self.hold_timeout = t;
        self
    }

    pub fn call_timeout(mut self, t: Duration) -> Self {
        self.call_timeout = t;
        self
    }

    /// `callee`'s policy for requests from `caller`.
    pub fn policy(mut self, callee: &str, caller: &str, p: Policy) -> Self {
        self.policies
            .insert((callee.to_string(), caller.to_string()), p);
        self
    }

    /// `name`'s IDC drives these node agents (the fixture's nodes: `core`, and `b-<peer>`
    /// per peer).
    pub fn agents(mut self, name: &str, cfg: crate::agents::AgentsConfig) -> Self {
        self.agents.insert(name.to_string(), cfg);
        self
    }

    /// `name` runs on `topology` instead of the fixture's (its demarcation ports must
    /// face the other domains' as the peerings say).
    pub fn topology(mut self, name: &str, topology: Topology) -> Self {
        self.topologies.insert(name.to_string(), topology);
        self
    }

    /// `name`'s operators (the emergency stop).
    pub fn operators(mut self, name: &str, o: crate::operators::Operators) -> Self {
        self.operators.insert(name.to_string(), o);
        self
    }

    /// `name` gets a certificate from a CA the others do not trust.
    pub fn untrusted(mut self, name: &str) -> Self {
        self.untrusted.push(name.to_string());
        self
    }

    fn fixture_topology(&self, d: &Domain) -> Topology {
        let vlans = VlanSet::parse("100-199").expect("static range");
        let port = |name: &str, peer: Option<Stp>, metric: u32, cap: Mbps| PortSpec {
            name: name.to_string(),
            vlans: vlans.clone(),
            capacity: cap,
            peer,
            peer_metric: metric,
        };
        let mut core = vec![
            port("e1", None, 1, Mbps(10_000)),
            port("e2", None, 1, Mbps(10_000)),
        ];
        let mut nodes = Vec::new();
        let mut links = Vec::new();
        for p in &self.peerings {
            let other = if p.a == d.name {
                &p.b
            } else if p.b == d.name {
                &p.a
            } else {
                continue;
            };
            let border = format!("b-{other}");
            core.push(port(&format!("l-{other}"), None, 1, d.internal));
            let remote =
                Stp::parse(&format!("{other}:b-{}:to-{}", d.name, d.name)).expect("fixture STP");
            nodes.push(NodeSpec {
                id: border.clone(),
                name: border.clone(),
                vlan_translation: d.vlan_translation,
                location: None,
                ports: vec![
                    port(&format!("to-{other}"), Some(remote), p.metric, p.capacity),
                    port("l", None, 1, d.internal),
                ],
            });
            links.push(LinkSpec {
                id: format!("core--{border}"),
                a: ("core".to_string(), format!("l-{other}")),
                b: (border, "l".to_string()),
                capacity_ab: d.internal,
                capacity_ba: d.internal,
                metric: 1,
            });
        }
        nodes.insert(
            0,
            NodeSpec {
                id: "core".into(),
                name: "core".into(),
                vlan_translation: d.vlan_translation,
                location: None,
                ports: core,
            },
        );
        Topology::build(&d.name, "federation fixture", nodes, links)
            .expect("fixture topology is valid")
    }

    pub async fn start(self) -> TestFederation {
        let ca = DevCa::new().expect("development CA");
        let rogue = DevCa::new().expect("second CA");
        let listeners: Vec<_> = self.domains.iter().map(|_| bound()).collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|(a, _)| *a).collect();
        let url = |name: &str| {
            let i = self
                .domains
                .iter()
                .position(|d| d.name == name)
                .expect("peering names a declared domain");
            format!("https://{}", addrs[i])
        };
        let mut started = Vec::new();
        for (i, d) in self.domains.iter().enumerate() {
            let tls: TlsMaterial = if self.untrusted.contains(&d.name) {
                rogue.material(&d.name)
            } else {
                ca.material(&d.name)
            }
            .expect("certificate");
            // Every other domain may ask; direct peers also exchange documents.
            let peers = self
                .domains
                .iter()
                .filter(|o| o.name != d.name)
                .map(|o| {
                    let direct = self.peerings.iter().any(|p| {
                        (p.a == d.name && p.b == o.name) || (p.b == d.name && p.a == o.name)
                    });
                    PeerConfig {
                        domain: o.name.clone(),
                        url: direct.then(|| url(&o.name)),
                        policy: self
                            .policies
                            .get(&(d.name.clone(), o.name.clone()))
                            .cloned()
                            .unwrap_or_default(),
                    }
                })
                .collect();
            let setup = FederationSetup {
                listen: addrs[i],
                url: None,
                tls,
                document_ttl: TimeDelta::seconds(600),
                // The test drives the exchange (TestFederation::exchange).
                refresh: Duration::from_secs(3600),
                call_timeout: self.call_timeout,
                peers,
                prebound: Some(listeners[i].1.clone()),
            };
            let mut idc = TestIdc::builder()
                .topology(
                    self.topologies
                        .get(&d.name)
                        .cloned()
                        .unwrap_or_else(|| self.fixture_topology(d)),
                )
                .hold_timeout(self.hold_timeout)
                .federation(setup);
            if let Some(a) = self.agents.get(&d.name) {
                idc = idc.agents(a.clone());
            }
            if let Some(o) = self.operators.get(&d.name) {
                idc = idc.operators(o.clone());
            }
            started.push(idc.start().await);
        }
        TestFederation {
            domains: started,
            names: self.domains.iter().map(|d| d.name.clone()).collect(),
            ca,
        }
    }
}
