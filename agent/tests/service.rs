//! The agent's gRPC service on `127.0.0.1:0`, as the IDC calls it: with the mock backend
//! (no root needed), and with the Linux backend in a namespace the test makes (root).

mod common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use common::circuit;
use sluice_agent::lab::{Netns, is_root};
use sluice_agent::linux::LinuxNode;
use sluice_agent::mock::MockBackend;
use sluice_agent::service::AgentService;
use sluice_agent::{AgentConfig, Desired, PortConfig};
use sluice_model::{ErrorCode, Mbps};
use sluice_proto::status::from_status;
use sluice_proto::v1;
use sluice_proto::v1::agent_client::AgentClient;

fn cfg(netns: Option<String>) -> AgentConfig {
    let port = |name: &str, dev: &str, n: u8| PortConfig {
        name: name.into(),
        dev: dev.into(),
        capacity: Mbps(1000),
        local: Ipv4Addr::new(10, n, 0, 1),
        remote: Ipv4Addr::new(10, n, 0, 2),
        vxlan_port: 4789 + u16::from(n),
    };
    AgentConfig {
        node: "r1".into(),
        netns,
        ports: vec![port("xe-0", "p0", 0), port("xe-1", "p1", 1)],
    }
}

fn state(version: u64, circuits: Vec<sluice_agent::NodeCircuit>) -> v1::DesiredState {
    sluice_proto::agent::desired("r1", &Desired { version, circuits })
}

#[tokio::test]
async fn applies_whole_states_idempotently_ignores_old_ones_and_refuses_another_nodes() {
    let backend = Arc::new(Mutex::new(MockBackend::default()));
    let svc = AgentService::new(cfg(None), backend.clone());
    let agent = sluice_agent::server::start("127.0.0.1:0".parse().unwrap(), None, svc)
        .await
        .unwrap();
    let mut c = AgentClient::connect(format!("http://{}", agent.addr))
        .await
        .unwrap();
    let one = vec![circuit("c1", ("xe-0", 150), ("xe-1", 151), 200, 200)];
    let s = c.apply(state(1, one.clone())).await.unwrap().into_inner();
    assert_eq!((s.version, s.backend.as_str(), s.changes), (1, "mock", 1));
    assert_eq!(s.circuits.len(), 1);
    // The same state again: nothing changes.
    let s = c.apply(state(2, one.clone())).await.unwrap().into_inner();
    assert_eq!((s.version, s.changes), (2, 0));
    // An older version arriving late is ignored.
    let s = c.apply(state(1, vec![])).await.unwrap().into_inner();
    assert_eq!((s.version, s.circuits.len()), (2, 1));
    assert_eq!(backend.lock().unwrap().applied.circuits.len(), 1);
    // Another node's state is refused, naming the field.
    let mut other = state(30, vec![]);
    other.node = "r2".into();
    let e = from_status(&c.apply(other).await.unwrap_err());
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidParameter, Some("node"))
    );
    // A circuit the node cannot carry is refused alone, with why; the others go on.
    let mixed = vec![
        circuit("c1", ("xe-0", 150), ("xe-1", 151), 200, 200),
        circuit("c2", ("xe-0", 152), ("xe-9", 152), 10, 10),
    ];
    let s = c.apply(state(3, mixed)).await.unwrap().into_inner();
    assert_eq!(s.version, 3);
    assert_eq!(
        s.circuits.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c1"]
    );
    assert_eq!(
        s.refused
            .iter()
            .map(|r| (r.id.as_str(), r.reason.as_str()))
            .collect::<Vec<_>>(),
        [("c2", "circuit c2: no port xe-9 on this node")]
    );
    assert_eq!(backend.lock().unwrap().applied.circuits.len(), 1);
    // A backend failure is reported; the version stays the one before.
    backend.lock().unwrap().fail_next = Some("ip: boom".into());
    let s = c.apply(state(4, vec![])).await.unwrap().into_inner();
    assert_eq!((s.version, s.error.as_str()), (3, "ip: boom"));
    let ports = c
        .ports(v1::AgentPortsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = ports.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["xe-0", "xe-1"]);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_linux_backend_through_grpc_reports_each_circuits_counters() {
    if !is_root() {
        eprintln!("skipped: creating network namespaces needs root (CI runs as root)");
        return;
    }
    let ns = Netns::new("svc");
    for i in 0..2 {
        ns.ip(&format!("link add p{i} type veth peer name q{i}"));
        ns.ip(&format!("addr add 10.{i}.0.1/30 dev p{i}"));
        ns.ip(&format!("link set p{i} up"));
        ns.ip(&format!("link set q{i} up"));
    }
    let svc = AgentService::new(
        cfg(Some(ns.0.clone())),
        Arc::new(LinuxNode::new(Some(ns.0.clone()))),
    );
    let agent = sluice_agent::server::start("127.0.0.1:0".parse().unwrap(), None, svc)
        .await
        .unwrap();
    let mut c = AgentClient::connect(format!("http://{}", agent.addr))
        .await
        .unwrap();
    let one = vec![circuit("c1", ("xe-0", 150), ("xe-1", 151), 200, 100)];
    let s = c.apply(state(1, one.clone())).await.unwrap().into_inner();
    assert_eq!(s.backend, "linux-vxlan");
    assert!(s.changes > 0 && s.error.is_empty(), "{s:?}");
    assert_eq!(s.circuits[0].id, "c1");
    let again = c.apply(state(2, one)).await.unwrap().into_inner();
    assert_eq!(again.changes, 0, "applying twice changes nothing");
    let ports = c
        .ports(v1::AgentPortsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(ports.ports.iter().all(|p| p.up), "{ports:?}");
    // Empty: the node is left with no circuit.
    let s = c.apply(state(3, vec![])).await.unwrap().into_inner();
    assert!(s.circuits.is_empty() && s.error.is_empty());
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn measures_a_carried_circuit_against_a_reflector_and_refuses_any_other() {
    // The mock backend puts both measurement ends on loopback: the RPCs, the TWAMP-Light
    // session and the throughput stream run as for real, without a circuit under them.
    let backend = Arc::new(Mutex::new(MockBackend::default()));
    let agent = sluice_agent::server::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        AgentService::new(cfg(None), backend),
    )
    .await
    .unwrap();
    let mut c = AgentClient::connect(format!("http://{}", agent.addr))
        .await
        .unwrap();
    let one = vec![circuit("c1", ("xe-0", 150), ("xe-1", 151), 200, 200)];
    c.apply(state(1, one)).await.unwrap();

    let e = c
        .reflect(v1::ReflectRequest {
            circuit_id: "c9".into(),
            lease_ms: 0,
        })
        .await
        .map_err(|s| from_status(&s))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ReservationNonexistent);
    assert_eq!(e.field.as_deref(), Some("circuit_id"));

    let far = c
        .reflect(v1::ReflectRequest {
            circuit_id: "c1".into(),
            lease_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(far.address, "127.0.0.1");
    assert!(far.twamp_port > 0 && far.sink_port > 0);
    // One reflector per circuit at a time: on a node its names are the circuit's.
    let e = c
        .reflect(v1::ReflectRequest {
            circuit_id: "c1".into(),
            lease_ms: 0,
        })
        .await
        .map_err(|s| from_status(&s))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidTransition, "{e:?}");
    let m = c
        .measure(v1::MeasureRequest {
            circuit_id: "c1".into(),
            reflector_address: far.address.clone(),
            twamp_port: far.twamp_port,
            sink_port: far.sink_port,
            probes: 20,
            probe_interval_ms: 5,
            duration_ms: 300,
            skip_throughput: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.probes_sent, m.probes_received), (20, 20));
    assert!(m.rtt_min_us <= m.rtt_avg_us && m.rtt_avg_us <= m.rtt_max_us);
    assert!(m.bytes > 0 && m.receive_ns > 0, "{m:?}");
    let rate = m.bytes as f64 * 8.0 / (m.receive_ns as f64 / 1e9) / 1e6;
    assert!((rate - m.throughput_mbps).abs() < 1e-6 * rate.max(1.0));

    // A bad address names its field; an over-long run is refused before anything starts.
    let bad = |r: v1::MeasureRequest| {
        let mut c = c.clone();
        async move { from_status(&c.measure(r).await.unwrap_err()) }
    };
    let e = bad(v1::MeasureRequest {
        circuit_id: "c1".into(),
        reflector_address: "here".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(e.field.as_deref(), Some("reflector_address"));
    let e = bad(v1::MeasureRequest {
        circuit_id: "c1".into(),
        reflector_address: far.address.clone(),
        duration_ms: 3_600_000,
        ..Default::default()
    })
    .await;
    assert_eq!(e.field.as_deref(), Some("duration_ms"));

    // Ended: the reflector answers no more (the probes are lost).
    c.end_reflect(v1::EndReflectRequest {
        session: far.session.clone(),
    })
    .await
    .unwrap();
    let m = c
        .measure(v1::MeasureRequest {
            circuit_id: "c1".into(),
            reflector_address: far.address,
            twamp_port: far.twamp_port,
            probes: 3,
            probe_interval_ms: 5,
            skip_throughput: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.probes_sent, m.probes_received), (3, 0));
    // Ending it again is no error; the circuit can have a reflector again.
    c.end_reflect(v1::EndReflectRequest {
        session: far.session,
    })
    .await
    .unwrap();
    let again = c
        .reflect(v1::ReflectRequest {
            circuit_id: "c1".into(),
            lease_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.twamp_port, 0);
    // Its lease ends it: then yet another may open.
    let reopened = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if c.reflect(v1::ReflectRequest {
                circuit_id: "c1".into(),
                lease_ms: 0,
            })
            .await
            .is_ok()
            {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), reopened)
        .await
        .expect("a reflector whose lease ran out lets go of the circuit");
    agent.shutdown().await.unwrap();
}
