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
use sluice_idc::testing::{TestIdc, eventually};
use sluice_proto::convert::timestamp;
use sluice_proto::v1;

const WAIT: Duration = Duration::from_secs(30);

struct Agents {
    servers: BTreeMap<String, RunningAgent>,
    backends: BTreeMap<String, Arc<Mutex<MockBackend>>>,
}

async fn start_agent(node: &str, at: SocketAddr, backend: Arc<Mutex<MockBackend>>) -> RunningAgent {
    let cfg = AgentConfig {
        node: node.into(),
        netns: None,
        ports: Vec::new(),
    };
    sluice_agent::server::start(at, None, AgentService::new(cfg, backend))
        .await
        .unwrap()
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

async fn data_plane(
    c: &mut sluice_proto::v1::reservations_client::ReservationsClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<(String, bool, String)> {
    c.get(v1::IdRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .data_plane
        .into_iter()
        .map(|d| (d.node, d.applied, d.error))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_reach_the_agents_on_their_path_and_an_agent_that_was_down_is_caught_up() {
    let topo = sluice_idc::topology_file::bundled();
    let mut agents = Agents {
        servers: BTreeMap::new(),
        backends: BTreeMap::new(),
    };
    for n in topo.nodes() {
        let backend = Arc::new(Mutex::new(MockBackend::default()));
        let server = start_agent(&n.id, "127.0.0.1:0".parse().unwrap(), backend.clone()).await;
        agents.backends.insert(n.id.clone(), backend);
        agents.servers.insert(n.id.clone(), server);
    }
    let cfg = AgentsConfig {
        agents: agents
            .servers
            .iter()
            .map(|(n, s)| (n.clone(), format!("http://{}", s.addr)))
            .collect(),
        tls: None,
    };
    let idc = TestIdc::builder().agents(cfg).start().await;
    let mut c = idc.client().await;
    let book = |mbps: i64| v1::ReserveRequest {
        criteria: Some(v1::Criteria {
            src: "internet2:houston:xe-0/0/0".into(),
            dst: "internet2:new-york:xe-0/0/0".into(),
            capacity_mbps: mbps,
            end: Some(timestamp(Utc::now() + TimeDelta::hours(1))),
            ..Default::default()
        }),
    };
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
    let dp = data_plane(&mut c, &r1.id).await;
    assert_eq!(dp.iter().map(|d| d.0.clone()).collect::<Vec<_>>(), path);
    assert!(dp.iter().all(|d| d.1 && d.2.is_empty()), "{dp:?}");

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
        dp.iter()
            .any(|(n, applied, error)| *n == down && !applied && !error.is_empty())
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
            .all(|(_, applied, error)| *applied && error.is_empty())
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
    idc.shutdown().await;
    for (_, s) in agents.servers {
        s.shutdown().await.unwrap();
    }
}
