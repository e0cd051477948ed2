//! The IDC driving node agents: one mock agent per node of the bundled Internet2 domain,
//! each a real gRPC server on `127.0.0.1:0` (the backend is the mock: what the Linux
//! backend does with a state is tested in the agent crate). A circuit that goes up reaches
//! the agents of the nodes on its path and no others; an agent that is down shows on the
//! reservation and is caught up when it returns; a circuit that ends leaves every node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use sluice_agent::AgentConfig;
use sluice_agent::mock::MockBackend;
use sluice_agent::server::RunningAgent;
use sluice_agent::service::AgentService;
use sluice_idc::agents::AgentsConfig;
use sluice_idc::federation::tls::DevCa;
use sluice_idc::testing::{TestIdc, eventually};
use sluice_model::ErrorCode;
use sluice_proto::convert::timestamp;
use sluice_proto::status::from_status;
use sluice_proto::v1;

const WAIT: Duration = Duration::from_secs(30);

struct Agents {
    servers: BTreeMap<String, RunningAgent>,
    backends: BTreeMap<String, Arc<Mutex<MockBackend>>>,
}

async fn start_agent(node: &str, at: SocketAddr, backend: Arc<Mutex<MockBackend>>) -> RunningAgent {
    start_agent_tls(node, at, backend, None).await
}

/// A mock agent's file for `node` of the bundled topology: every port, at its capacity.
fn mock_config(node: &str) -> AgentConfig {
    let topo = sluice_idc::topology_file::bundled();
    let n = topo.nodes().iter().find(|n| n.id == node).unwrap();
    AgentConfig {
        node: node.into(),
        netns: None,
        ports: n
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = topo.port(*p);
                sluice_agent::PortConfig {
                    name: p.name.clone(),
                    dev: format!("p{i}"),
                    capacity: p.capacity,
                    local: std::net::Ipv4Addr::new(10, i as u8, 0, 1),
                    remote: std::net::Ipv4Addr::new(10, i as u8, 0, 2),
                    vxlan_port: 4789 + i as u16,
                }
            })
            .collect(),
    }
}

async fn start_agent_tls(
    node: &str,
    at: SocketAddr,
    backend: Arc<Mutex<MockBackend>>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> RunningAgent {
    let cfg = mock_config(node);
    sluice_agent::server::start(at, tls, AgentService::new(cfg, backend))
        .await
        .unwrap()
}

impl Agents {
    /// A mock agent per node of `topo`; over mutual TLS with certificates of `ca`.
    async fn start(topo: &sluice_model::Topology, ca: Option<&DevCa>) -> Agents {
        let mut agents = Agents {
            servers: BTreeMap::new(),
            backends: BTreeMap::new(),
        };
        for n in topo.nodes() {
            let backend = Arc::new(Mutex::new(MockBackend::default()));
            let tls = ca.map(|ca| ca.material(&n.id).unwrap().server());
            let server =
                start_agent_tls(&n.id, "127.0.0.1:0".parse().unwrap(), backend.clone(), tls).await;
            agents.backends.insert(n.id.clone(), backend);
            agents.servers.insert(n.id.clone(), server);
        }
        agents
    }

    /// The agents file's entries for them.
    fn urls(&self, scheme: &str) -> BTreeMap<String, String> {
        self.servers
            .iter()
            .map(|(n, s)| (n.clone(), format!("{scheme}://{}", s.addr)))
            .collect()
    }
}

impl Agents {
    fn circuits(&self, node: &str) -> Vec<String> {
        self.backends[node]
            .lock()
            .unwrap()
            .applied
            .circuits
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }
}

/// Per node of the path: (node, state, error), as `Get` shows it.
async fn data_plane(
    c: &mut sluice_proto::v1::reservations_client::ReservationsClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<(String, String, String)> {
    c.get(v1::IdRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .data_plane
        .into_iter()
        .map(|d| {
            assert_eq!(d.applied, d.state == "applied", "{d:?}");
            (d.node, d.state, d.error)
        })
        .collect()
}

/// The `node` events of reservation `id`: (from, to, detail).
async fn node_events(idc: &TestIdc, id: &str) -> Vec<(String, String, String)> {
    idc.idc()
        .events_after(0, Some(id.to_string()))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.change.machine == sluice_model::Machine::Node)
        .map(|e| (e.change.from, e.change.to, e.change.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_reach_the_agents_on_their_path_and_an_agent_that_was_down_is_caught_up() {
    let topo = sluice_idc::topology_file::bundled();
    let mut agents = Agents::start(&topo, None).await;
    let cfg = AgentsConfig::new(agents.urls("http"), None);
    let mut idc = TestIdc::builder().agents(cfg).start().await;
    let mut c = idc.client().await;
    // Starts now, automatic: up as soon as committed.
    let r1 = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r1.id.clone() }).await.unwrap();
    let path: Vec<String> = std::iter::once(r1.path[0].from.clone())
        .chain(r1.path.iter().map(|h| h.to.clone()))
        .collect();
    assert!(path.len() >= 3, "{path:?}");
    let ok = eventually(WAIT, || async {
        path.iter().all(|n| agents.circuits(n) == [r1.id.clone()])
    })
    .await;
    assert!(ok, "every node on the path has the circuit");
    for n in topo.nodes().iter().filter(|n| !path.contains(&n.id)) {
        assert!(
            agents.circuits(&n.id).is_empty(),
            "{} is not on the path",
            n.id
        );
    }
    let applied_everywhere = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &r1.id).await;
        dp.iter().map(|d| d.0.clone()).collect::<Vec<_>>() == path
            && dp.iter().all(|d| d.1 == "applied" && d.2.is_empty())
    })
    .await;
    assert!(applied_everywhere, "{:?}", data_plane(&mut c, &r1.id).await);
    // Recorded with the reservation: one event per node, for watchers.
    let events = node_events(&idc, &r1.id).await;
    assert_eq!(events.len(), path.len(), "{events:?}");
    for n in &path {
        let of_n: Vec<_> = events
            .iter()
            .filter(|e| e.2.starts_with(&format!("{n}: ")))
            .map(|e| (e.0.as_str(), e.1.as_str()))
            .collect();
        assert_eq!(of_n, [("none", "applied")], "{n}: {events:?}");
    }
    // A restarted IDC reads the states back and reconciles every agent (each gets a
    // newer version) without a change: nothing on the nodes, no new events.
    let before: BTreeMap<String, (u64, usize)> = {
        let mut m = BTreeMap::new();
        for n in &path {
            let changes = agents.backends[n].lock().unwrap().changes;
            m.insert(
                n.clone(),
                (agent_version(agents.servers[n].addr).await, changes),
            );
        }
        m
    };
    idc.restart().await;
    let mut c = idc.client().await;
    let dp = data_plane(&mut c, &r1.id).await;
    assert!(dp.iter().all(|d| d.1 == "applied"), "{dp:?}");
    let reconciled = eventually(WAIT, || async {
        let mut all = true;
        for n in &path {
            all &= agent_version(agents.servers[n].addr).await > before[n].0;
        }
        all
    })
    .await;
    assert!(
        reconciled,
        "every agent on the path got a set from the restarted IDC"
    );
    for n in &path {
        assert_eq!(
            agents.backends[n].lock().unwrap().changes,
            before[n].1,
            "{n} changed"
        );
    }
    // Each node's answers are recorded in order: once a later circuit is recorded on
    // every node, the reconciliation's answers are too, and they made no event.
    let barrier = c.reserve(book(10)).await.unwrap().into_inner();
    c.commit(v1::IdRequest {
        id: barrier.id.clone(),
    })
    .await
    .unwrap();
    let recorded = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &barrier.id).await;
        dp.len() == path.len() && dp.iter().all(|d| d.1 == "applied")
    })
    .await;
    assert!(recorded);
    assert_eq!(node_events(&idc, &r1.id).await.len(), path.len());
    c.terminate(v1::IdRequest {
        id: barrier.id.clone(),
    })
    .await
    .unwrap();
    let gone = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &barrier.id).await;
        dp.iter().all(|d| d.1 == "removed")
    })
    .await;
    assert!(gone);

    // The second node's agent goes down; a second circuit on the same path shows it.
    let down = path[1].clone();
    let addr = agents.servers[&down].addr;
    agents
        .servers
        .remove(&down)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let r2 = c.reserve(book(200)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r2.id.clone() }).await.unwrap();
    let shows_it = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &r2.id).await;
        dp.iter().any(|(n, state, error)| {
            *n == down && state == "failed" && error.starts_with("agent not reached")
        })
    })
    .await;
    assert!(
        shows_it,
        "the reservation shows the node whose agent is down"
    );
    // Back on the same address: caught up within a retry.
    let server = start_agent(&down, addr, agents.backends[&down].clone()).await;
    agents.servers.insert(down.clone(), server);
    let caught_up = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &r2.id).await;
        dp.iter()
            .all(|(_, state, error)| state == "applied" && error.is_empty())
    })
    .await;
    assert!(caught_up, "the agent that came back has both circuits");
    let mut both = agents.circuits(&down);
    both.sort();
    let mut want = vec![r1.id.clone(), r2.id.clone()];
    want.sort();
    assert_eq!(both, want);

    // Ended: the circuits leave every node.
    for id in [&r1.id, &r2.id] {
        c.terminate(v1::IdRequest { id: id.clone() }).await.unwrap();
    }
    let gone = eventually(WAIT, || async {
        topo.nodes()
            .iter()
            .all(|n| agents.circuits(&n.id).is_empty())
    })
    .await;
    assert!(gone, "no node keeps a circuit that ended");
    let removed = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &r2.id).await;
        dp.len() == path.len() && dp.iter().all(|d| d.1 == "removed")
    })
    .await;
    assert!(removed, "{:?}", data_plane(&mut c, &r2.id).await);
    let events = node_events(&idc, &r2.id).await;
    let down_events: Vec<_> = events
        .iter()
        .filter(|e| e.2.starts_with(&format!("{down}: ")))
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    assert_eq!(
        down_events,
        [
            ("none", "failed"),
            ("failed", "applied"),
            ("applied", "removed")
        ],
        "{events:?}"
    );
    idc.shutdown().await;
    for (_, s) in agents.servers {
        s.shutdown().await.unwrap();
    }
}

fn book(mbps: i64) -> v1::ReserveRequest {
    v1::ReserveRequest {
        verify_each: None,
        criteria: Some(v1::Criteria {
            src: "internet2:houston:xe-0/0/0".into(),
            dst: "internet2:new-york:xe-0/0/0".into(),
            capacity_mbps: mbps,
            end: Some(timestamp(Utc::now() + TimeDelta::hours(1))),
            ..Default::default()
        }),
    }
}

/// Agents serve over mutual TLS: an IDC whose certificate their CA signed drives them;
/// one with a certificate of another CA is refused, and its reservation says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_take_circuits_only_from_an_idc_their_ca_vouches_for() {
    let topo = sluice_idc::topology_file::bundled();
    let ca = DevCa::new().unwrap();
    let agents = Agents::start(&topo, Some(&ca)).await;
    let trusted = TestIdc::builder()
        .agents(AgentsConfig::new(
            agents.urls("https"),
            Some(ca.material("internet2").unwrap()),
        ))
        .start()
        .await;
    let mut c = trusted.client().await;
    let r = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let ok = eventually(WAIT, || async {
        let dp = data_plane(&mut trusted.client().await, &r.id).await;
        !dp.is_empty() && dp.iter().all(|d| d.1 == "applied")
    })
    .await;
    assert!(ok, "{:?}", data_plane(&mut c, &r.id).await);

    let other_ca = DevCa::new().unwrap();
    let stranger = TestIdc::builder()
        .agents(AgentsConfig::new(
            agents.urls("https"),
            Some(other_ca.material("internet2").unwrap()),
        ))
        .start()
        .await;
    let mut s = stranger.client().await;
    let r2 = s.reserve(book(100)).await.unwrap().into_inner();
    s.commit(v1::IdRequest { id: r2.id.clone() }).await.unwrap();
    let refused = eventually(WAIT, || async {
        let dp = data_plane(&mut stranger.client().await, &r2.id).await;
        !dp.is_empty()
            && dp
                .iter()
                .all(|d| d.1 == "failed" && d.2.starts_with("agent not reached"))
    })
    .await;
    assert!(refused, "{:?}", data_plane(&mut s, &r2.id).await);
    // The agents still carry only the trusted IDC's circuit.
    let mut carried = 0;
    for n in topo.nodes() {
        for id in agents.circuits(&n.id) {
            assert_eq!(id, r.id, "{} took a circuit from the stranger", n.id);
            carried += 1;
        }
    }
    assert_eq!(
        carried,
        r.path.len() + 1,
        "every node of the path carries it"
    );
    stranger.shutdown().await;
    trusted.shutdown().await;
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}

/// The version an agent says it applied last.
async fn agent_version(addr: SocketAddr) -> u64 {
    let mut c = sluice_proto::v1::agent_client::AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    c.state(v1::AgentStateRequest {})
        .await
        .unwrap()
        .into_inner()
        .version
}

/// An agent that restarts between two sends (no send failed, so the IDC saw nothing) is
/// noticed by the IDC's version check and sent its set again: with its node's data
/// plane intact, nothing on the node changes; after a reboot (nothing left), the node
/// gets its circuits back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_restart_unnoticed_get_their_set_again_and_nothing_right_is_touched() {
    let topo = sluice_idc::topology_file::bundled();
    let mut agents = Agents::start(&topo, None).await;
    let mut cfg = AgentsConfig::new(agents.urls("http"), None);
    cfg.check_every = Duration::from_millis(300);
    let idc = TestIdc::builder().agents(cfg).start().await;
    let mut c = idc.client().await;
    let r = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let (restarted, rebooted) = (r.path[0].to.clone(), r.path[0].from.clone());
    let up = eventually(WAIT, || async {
        [&restarted, &rebooted]
            .iter()
            .all(|n| agents.circuits(n) == [r.id.clone()])
    })
    .await;
    assert!(up);
    let changes_before = agents.backends[&restarted].lock().unwrap().changes;

    // The agent process restarts; the node keeps its data plane (the same backend).
    let addr = agents.servers[&restarted].addr;
    agents
        .servers
        .remove(&restarted)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let server = start_agent(&restarted, addr, agents.backends[&restarted].clone()).await;
    agents.servers.insert(restarted.clone(), server);
    assert_eq!(
        agent_version(addr).await,
        0,
        "a restarted agent knows no set"
    );
    let resent = eventually(WAIT, || async { agent_version(addr).await != 0 }).await;
    assert!(resent, "the IDC sent the restarted agent its set again");
    assert_eq!(agents.circuits(&restarted), std::slice::from_ref(&r.id));
    assert_eq!(
        agents.backends[&restarted].lock().unwrap().changes,
        changes_before,
        "the circuit in place was not touched"
    );

    // The other node reboots: its agent comes back on an empty data plane.
    let addr = agents.servers[&rebooted].addr;
    agents
        .servers
        .remove(&rebooted)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let empty = Arc::new(Mutex::new(MockBackend::default()));
    agents.backends.insert(rebooted.clone(), empty.clone());
    let server = start_agent(&rebooted, addr, empty).await;
    agents.servers.insert(rebooted.clone(), server);
    let back = eventually(WAIT, || async {
        agents.circuits(&rebooted) == [r.id.clone()]
    })
    .await;
    assert!(back, "the rebooted node got its circuit back");

    idc.shutdown().await;
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}

/// A circuit a node cannot carry (its agent lacks the port) is refused there alone: the
/// reservation says why on that node, the node's other circuits are applied and still
/// change (a modify of an active circuit's rate reaches the agents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_a_node_cannot_carry_is_refused_alone_and_a_modify_reaches_the_agents() {
    let topo = sluice_idc::topology_file::bundled();
    let mut agents = Agents::start(&topo, None).await;
    // Houston's agent knows every port but xe-0/0/1.
    let addr = agents.servers["houston"].addr;
    agents
        .servers
        .remove("houston")
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let mut cfg = mock_config("houston");
    cfg.ports.retain(|p| p.name != "xe-0/0/1");
    let server = sluice_agent::server::start(
        addr,
        None,
        AgentService::new(cfg, agents.backends["houston"].clone()),
    )
    .await
    .unwrap();
    agents.servers.insert("houston".into(), server);
    let idc = TestIdc::builder()
        .agents(AgentsConfig::new(agents.urls("http"), None))
        .start()
        .await;
    let mut c = idc.client().await;
    let ok = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: ok.id.clone() }).await.unwrap();
    let mut other = book(100);
    other.criteria.as_mut().unwrap().src = "internet2:houston:xe-0/0/1".into();
    let refused = c.reserve(other).await.unwrap().into_inner();
    c.commit(v1::IdRequest {
        id: refused.id.clone(),
    })
    .await
    .unwrap();
    let why = format!(
        "refused by the agent: circuit {}: no port xe-0/0/1 on this node",
        refused.id
    );
    let shown = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &refused.id).await;
        dp.iter()
            .any(|(n, s, e)| n == "houston" && s == "failed" && *e == why)
            && dp
                .iter()
                .filter(|(n, _, _)| n != "houston")
                .all(|(_, s, _)| s == "applied")
    })
    .await;
    assert!(shown, "{:?}", data_plane(&mut c, &refused.id).await);
    // Houston carries the other circuit, and nothing of the refused one.
    let dp = data_plane(&mut c, &ok.id).await;
    assert!(dp.iter().all(|(_, s, _)| s == "applied"), "{dp:?}");
    assert_eq!(agents.circuits("houston"), std::slice::from_ref(&ok.id));

    // A modify of the active circuit's rate reaches every node of its path.
    c.modify(v1::ModifyRequest {
        id: ok.id.clone(),
        capacity_mbps: Some(250),
        ..Default::default()
    })
    .await
    .unwrap();
    let rate = |node: &str| {
        agents.backends[node]
            .lock()
            .unwrap()
            .applied
            .circuits
            .iter()
            .find(|x| x.id == ok.id)
            .map(|x| (x.rate_az.0, x.rate_za.0))
    };
    let nodes: Vec<String> = std::iter::once(ok.path[0].from.clone())
        .chain(ok.path.iter().map(|h| h.to.clone()))
        .collect();
    let modified = eventually(WAIT, || async {
        nodes.iter().all(|n| rate(n) == Some((250, 250)))
    })
    .await;
    assert!(
        modified,
        "{:?}",
        nodes.iter().map(|n| rate(n)).collect::<Vec<_>>()
    );
    idc.shutdown().await;
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}

/// An agent that accepts connections but never answers (a hung process, a black hole)
/// delays no other node: each node has its own worker, and the hung one shows failed
/// once its call times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_agent_delays_no_other_node() {
    let topo = sluice_idc::topology_file::bundled();
    let mut agents = Agents::start(&topo, None).await;
    let r_path = {
        // Which nodes the circuit crosses: ask a throwaway IDC without agents.
        let probe = TestIdc::builder().start().await;
        let r = probe
            .client()
            .await
            .reserve(book(100))
            .await
            .unwrap()
            .into_inner();
        let nodes: Vec<String> = std::iter::once(r.path[0].from.clone())
            .chain(r.path.iter().map(|h| h.to.clone()))
            .collect();
        probe.shutdown().await;
        nodes
    };
    // The second node's agent: a socket that is listened on and never served.
    let hung = r_path[1].clone();
    agents
        .servers
        .remove(&hung)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut urls = agents.urls("http");
    urls.insert(
        hung.clone(),
        format!("http://{}", black_hole.local_addr().unwrap()),
    );
    let idc = TestIdc::builder()
        .agents(AgentsConfig::new(urls, None))
        .start()
        .await;
    let mut c = idc.client().await;
    let r = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    // Well within the hung call's timeout (10 s), every other node has it.
    let others_up = eventually(Duration::from_secs(5), || async {
        r_path
            .iter()
            .filter(|n| **n != hung)
            .all(|n| agents.circuits(n) == std::slice::from_ref(&r.id))
    })
    .await;
    assert!(others_up, "the other nodes waited for the hung agent");
    let shown = eventually(WAIT, || async {
        data_plane(&mut idc.client().await, &r.id)
            .await
            .iter()
            .any(|(n, s, e)| *n == hung && s == "failed" && e.starts_with("agent not reached"))
    })
    .await;
    assert!(shown, "{:?}", data_plane(&mut c, &r.id).await);
    idc.shutdown().await;
    drop(black_hole);
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}

/// An agent that holds a later version than the IDC hands out (an IDC whose clock has
/// since gone back sent it) is sent the set again at once, with a version above its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_ahead_of_the_idcs_versions_is_caught_up_at_once() {
    let topo = sluice_idc::topology_file::bundled();
    let agents = Agents::start(&topo, None).await;
    // Every agent took version 2^62 from "an earlier IDC".
    let ahead = 1u64 << 62;
    for (node, a) in &agents.servers {
        let mut c =
            sluice_proto::v1::agent_client::AgentClient::connect(format!("http://{}", a.addr))
                .await
                .unwrap();
        c.apply(sluice_proto::agent::desired(
            node,
            &sluice_agent::Desired {
                version: ahead,
                circuits: Vec::new(),
            },
        ))
        .await
        .unwrap();
    }
    let idc = TestIdc::builder()
        .agents(AgentsConfig::new(agents.urls("http"), None))
        .start()
        .await;
    let mut c = idc.client().await;
    let r = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let applied = eventually(WAIT, || async {
        let dp = data_plane(&mut idc.client().await, &r.id).await;
        !dp.is_empty() && dp.iter().all(|d| d.1 == "applied")
    })
    .await;
    assert!(applied, "{:?}", data_plane(&mut c, &r.id).await);
    // No retry period was waited for: no node ever showed failed.
    let failed_once = node_events(&idc, &r.id)
        .await
        .iter()
        .any(|(_, to, _)| to == "failed");
    assert!(!failed_once);
    let node = r.path[0].from.clone();
    assert!(agent_version(agents.servers[&node].addr).await > ahead);
    idc.shutdown().await;
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}

/// `verify` end to end through the IDC, with the mock agents' loopback measurement ends:
/// what is stored and judged, what is refused (and stores nothing), and an end whose
/// agent is gone, stored as an error with why. The numbers over a real circuit are
/// checked in `dataplane.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_measures_a_running_circuit_between_its_end_agents_and_keeps_every_result() {
    let topo = sluice_idc::topology_file::bundled();
    let mut agents = Agents::start(&topo, None).await;
    let cfg = AgentsConfig::new(agents.urls("http"), None);
    let idc = TestIdc::builder().agents(cfg).start().await;
    let mut c = idc.client().await;
    let verify = |id: &str| v1::VerifyRequest {
        id: id.into(),
        duration_ms: Some(300),
        probes: 20,
        ..Default::default()
    };
    // Held, not committed: not up, so nothing to measure; nothing is stored.
    let held = c.reserve(book(100)).await.unwrap().into_inner();
    let e = from_status(&c.verify(verify(&held.id)).await.unwrap_err());
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidTransition, Some("id"))
    );
    assert!(e.message.contains("not up now"), "{e:?}");
    c.abort(v1::IdRequest {
        id: held.id.clone(),
    })
    .await
    .unwrap();

    let r = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let (near, far) = (r.path[0].from.clone(), r.path.last().unwrap().to.clone());
    assert!(
        eventually(WAIT, || async {
            agents.circuits(&near) == [r.id.clone()] && agents.circuits(&far) == [r.id.clone()]
        })
        .await
    );
    // Bad thresholds name their field and store nothing.
    let mut bad = verify(&r.id);
    bad.min_throughput_ratio = Some(95.0);
    let e = from_status(&c.verify(bad).await.unwrap_err());
    assert_eq!(e.field.as_deref(), Some("min_throughput_ratio"));
    let mut bad = verify(&r.id);
    bad.duration_ms = Some(3_600_000);
    let e = from_status(&c.verify(bad).await.unwrap_err());
    assert_eq!(e.field.as_deref(), Some("duration_ms"));

    let m = c.verify(verify(&r.id)).await.unwrap().into_inner();
    assert_eq!(m.verdict, "pass", "{m:?}");
    assert_eq!((m.probes_sent, m.probes_received), (20, 20));
    assert_eq!(m.booked_mbps, 100);
    assert!(m.throughput_mbps > 100.0, "loopback carries more: {m:?}");
    assert_eq!((m.min_throughput_ratio, m.max_loss), (0.95, 0.01));
    // Held to more than loopback can give: fail, with the reason.
    let mut strict = verify(&r.id);
    strict.min_throughput_ratio = Some(1.0);
    strict.max_rtt_ms = Some(0.000_001);
    let m2 = c.verify(strict).await.unwrap().into_inner();
    assert_eq!(m2.verdict, "fail");
    assert!(
        m2.reasons.iter().any(|r| r.starts_with("mean round trip")),
        "{m2:?}"
    );
    // One measurement of a circuit at a time: a second while the first runs is refused
    // (00201) and stores nothing.
    let first = {
        let mut c = c.clone();
        let mut long = verify(&r.id);
        long.duration_ms = Some(1500);
        tokio::spawn(async move { c.verify(long).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = from_status(&c.verify(verify(&r.id)).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::InvalidTransition, "{e:?}");
    assert!(e.message.contains("being measured already"), "{e:?}");
    assert_eq!(first.await.unwrap().unwrap().into_inner().verdict, "pass");
    // Too many probes: refused on the field.
    let mut many = verify(&r.id);
    many.probes = 20_000;
    let e = from_status(&c.verify(many).await.unwrap_err());
    assert_eq!(e.field.as_deref(), Some("probes"));
    // The far end's agent is gone: stored as an error, saying where.
    agents
        .servers
        .remove(&far)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let m3 = c.verify(verify(&r.id)).await.unwrap().into_inner();
    assert_eq!(m3.verdict, "error");
    assert!(
        m3.reasons[0].contains(&format!("reflector at {far}")),
        "{m3:?}"
    );

    let h = c
        .history(v1::IdRequest { id: r.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let verdicts: Vec<&str> = h.measurements.iter().map(|m| m.verdict.as_str()).collect();
    assert_eq!(verdicts, ["pass", "fail", "pass", "error"]);
    assert!(h.measurements.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(h.measurements[0].who, "anonymous");
    // Nothing was stored for the refused requests; an unknown id says so.
    let h = c
        .history(v1::IdRequest {
            id: held.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.measurements.is_empty());
    let e = from_status(
        &c.history(v1::IdRequest { id: "nope".into() })
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, ErrorCode::ReservationNonexistent);
    // Every verify is in the audit, refused ones too.
    let audit = idc
        .idc()
        .audit_log(sluice_idc::store::AuditFilter {
            who: None,
            target: Some(r.id.clone()),
            after: 0,
            limit: 50,
        })
        .await
        .unwrap();
    let results: Vec<&str> = audit
        .iter()
        .filter(|a| a.action == "verify")
        .map(|a| a.result.as_str())
        .collect();
    assert_eq!(
        results,
        ["00100", "00100", "ok", "ok", "00201", "ok", "00100", "ok"]
    );
    idc.shutdown().await;
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}

/// A booking that asks for a check at each start (`verify_each`) gets one, stored as
/// kind `start`, once its circuit is up on every node; a series asks for all its
/// occurrences. An IDC without agents, or a bad check, refuses the booking, and nothing
/// is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_that_asks_is_checked_at_its_start() {
    let each = || v1::VerifyEach {
        duration_ms: Some(300),
        probes: 10,
        ..Default::default()
    };
    // No agents here: refused on the field, nothing held.
    let plain = TestIdc::builder().start().await;
    let mut c = plain.client().await;
    let mut ask = book(100);
    ask.verify_each = Some(each());
    let e = from_status(&c.reserve(ask).await.unwrap_err());
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::NotImplemented, Some("verify_each"))
    );
    let listed = c
        .list(v1::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.reservations.is_empty());
    plain.shutdown().await;

    let topo = sluice_idc::topology_file::bundled();
    let agents = Agents::start(&topo, None).await;
    let cfg = AgentsConfig::new(agents.urls("http"), None);
    let idc = TestIdc::builder().agents(cfg).start().await;
    let mut c = idc.client().await;
    let mut bad = book(100);
    bad.verify_each = Some(v1::VerifyEach {
        min_throughput_ratio: Some(2.0),
        ..each()
    });
    let e = from_status(&c.reserve(bad).await.unwrap_err());
    assert_eq!(e.field.as_deref(), Some("verify_each.min_throughput_ratio"));
    // Both ends on one node: no check could cross the circuit's queues.
    let mut one_node = book(100);
    if let Some(c) = one_node.criteria.as_mut() {
        c.dst = "internet2:houston:xe-0/0/1".into();
    }
    one_node.verify_each = Some(each());
    let e = from_status(&c.reserve(one_node).await.unwrap_err());
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::NotImplemented, Some("verify_each"))
    );
    let listed = c
        .list(v1::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.reservations.is_empty());

    // Up now, automatically: checked once the agents on its path have it.
    let mut ask = book(100);
    ask.verify_each = Some(each());
    let r = c.reserve(ask).await.unwrap().into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let checked = eventually(WAIT, || async {
        let h = idc
            .client()
            .await
            .history(v1::IdRequest { id: r.id.clone() })
            .await
            .unwrap()
            .into_inner();
        h.measurements.len() == 1
    })
    .await;
    assert!(checked, "a check at the start");
    let h = c
        .history(v1::IdRequest { id: r.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let m = &h.measurements[0];
    assert_eq!(
        (m.kind.as_str(), m.who.as_str(), m.verdict.as_str()),
        ("start", "scheduler", "pass"),
        "{m:?}"
    );
    assert_eq!((m.probes_sent, m.duration_ms), (10, 300));
    // A booking that did not ask gets none.
    let other = c.reserve(book(100)).await.unwrap().into_inner();
    c.commit(v1::IdRequest {
        id: other.id.clone(),
    })
    .await
    .unwrap();

    // A series asks for every occurrence.
    let mut criteria = book(100).criteria.unwrap();
    criteria.start = None;
    criteria.end = None;
    let s = c
        .reserve_series(v1::ReserveSeriesRequest {
            criteria: Some(criteria),
            recurrence: Some(v1::Recurrence {
                rule: Some(v1::recurrence::Rule::Cron(v1::CronRule {
                    expression: "0 14 * * 2".into(),
                    time_zone: "Europe/Rome".into(),
                    from: Some(timestamp(Utc::now() + TimeDelta::days(1))),
                    count: Some(3),
                    ..Default::default()
                })),
                duration_seconds: 3600,
            }),
            verify_each: Some(each()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (_, occurrences) = idc.idc().get_series(&s.id).await.unwrap();
    assert_eq!(occurrences.len(), 3);
    for o in &occurrences {
        let v = idc.idc().verify_each_of(o).await.unwrap();
        assert_eq!(v.map(|v| (v.duration_ms, v.probes)), Some((300, 10)));
    }
    assert_eq!(
        idc.idc()
            .verify_each_of(&idc.idc().get(&other.id).await.unwrap())
            .await
            .unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = c
        .history(v1::IdRequest {
            id: other.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.measurements.is_empty());
    idc.shutdown().await;
    for (_, a) in agents.servers {
        a.shutdown().await.unwrap();
    }
}
