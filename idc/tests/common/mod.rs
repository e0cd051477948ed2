//! Helpers shared by the IDC's integration tests.

use std::sync::{Arc, Mutex};

use sluice_agent::mock::MockBackend;
use sluice_agent::server::RunningAgent;
use sluice_model::Mbps;

/// A mock-backed agent (a real gRPC server on `127.0.0.1:0`) for `node` with these
/// topology ports, each of ample capacity on a VXLAN UDP port of its own; and its
/// backend, to see what it carries.
pub async fn mock_agent(node: &str, ports: &[&str]) -> (RunningAgent, Arc<Mutex<MockBackend>>) {
    let cfg = sluice_agent::AgentConfig {
        node: node.into(),
        netns: None,
        ports: ports
            .iter()
            .enumerate()
            .map(|(i, name)| sluice_agent::PortConfig {
                name: name.to_string(),
                dev: format!("p{i}"),
                capacity: Mbps(100_000),
                local: std::net::Ipv4Addr::new(10, i as u8, 0, 1),
                remote: std::net::Ipv4Addr::new(10, i as u8, 0, 2),
                vxlan_port: 4789 + i as u16,
            })
            .collect(),
    };
    let backend = Arc::new(Mutex::new(MockBackend::default()));
    let agent = sluice_agent::server::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        sluice_agent::service::AgentService::new(cfg, backend.clone()),
    )
    .await
    .unwrap();
    (agent, backend)
}
