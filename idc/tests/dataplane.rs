//! A circuit booked through the IDC and delivered by the node agents on a real kernel:
//! the lab of `sluice_agent::lab` (two hosts, two virtual routers as network
//! namespaces, links shaped to 500 Mb/s), an IDC for its domain on `127.0.0.1:0`, and
//! one agent per router with the Linux backend, each a gRPC server on `127.0.0.1:0`
//! that the IDC reaches over mutual TLS. A 200 Mb/s circuit host A → host B is
//! reserved, committed and provisioned through the IDC's API; it keeps its rate while
//! best effort floods the same links and gets no more than it booked; after release
//! nothing of it is left in any namespace. Prints the time from the provision to the
//! first packet through the circuit. Needs root and iperf3 (CI has both); without them
//! the test says so and checks nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{TimeDelta, Utc};
use sluice_agent::lab::{CircuitRates, Lab, Prober};
use sluice_agent::linux::LinuxNode;
use sluice_agent::server::RunningAgent;
use sluice_agent::service::AgentService;
use sluice_idc::agents::AgentsConfig;
use sluice_idc::federation::tls::DevCa;
use sluice_idc::testing::{TestIdc, eventually};
use sluice_model::Mbps;
use sluice_proto::convert::timestamp;
use sluice_proto::v1;

const LINK_MBPS: u64 = 500;
const CIRCUIT_MBPS: u64 = 200;
const WAIT: Duration = Duration::from_secs(30);
/// How many times the circuit is provisioned, for the provision time.
const PROVISIONS: usize = 5;

type Client = v1::reservations_client::ReservationsClient<tonic::transport::Channel>;

async fn node_states(c: &mut Client, id: &str) -> Vec<(String, String, String)> {
    c.get(v1::IdRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .data_plane
        .into_iter()
        .map(|d| (d.node, d.state, d.error))
        .collect()
}

/// Provisions `id` while pinging over the circuit: how long the `Provision` call took,
/// and how long from asking until the first ping came back through the circuit.
async fn provision_until_flowing(lab: &Lab, c: &mut Client, id: &str) -> (Duration, Duration) {
    let probe = Prober::start(lab, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (asked, clock) = (SystemTime::now(), Instant::now());
    c.provision(v1::IdRequest { id: id.into() }).await.unwrap();
    let answered = clock.elapsed();
    let first = tokio::task::spawn_blocking(move || probe.first_answer())
        .await
        .unwrap()
        .expect("the circuit carried a ping");
    let flowing = first
        .duration_since(asked)
        .expect("no traffic before the provision");
    (answered, flowing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_provisioned_through_the_idc_is_delivered_by_the_agents_and_leaves_nothing() {
    if let Err(why) = Lab::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::new("e2e", Mbps(LINK_MBPS));
    let ca = DevCa::new().unwrap();
    let (r1, r2) = lab.agent_configs();
    let mut agents: Vec<RunningAgent> = Vec::new();
    for cfg in [r1, r2] {
        let tls = ca.material(&cfg.node).unwrap().server();
        let backend = Arc::new(LinuxNode::new(cfg.netns.clone()));
        agents.push(
            sluice_agent::server::start(
                "127.0.0.1:0".parse().unwrap(),
                Some(tls),
                AgentService::new(cfg, backend),
            )
            .await
            .unwrap(),
        );
    }
    let topo = sluice_idc::topology_file::parse("lab.toml", &lab.topology_toml()).unwrap();
    let cfg = AgentsConfig::new(
        [("r1", &agents[0]), ("r2", &agents[1])]
            .into_iter()
            .map(|(n, a)| (n.to_string(), format!("https://{}", a.addr)))
            .collect(),
        Some(ca.material("lab").unwrap()),
    );
    let idc = TestIdc::builder().topology(topo).agents(cfg).start().await;
    let mut c = idc.client().await;

    // hA's end of the circuit is VLAN 150 at r1, hB's VLAN 160 at r2.
    lab.host_ends(150, 160);
    let r = c
        .reserve(v1::ReserveRequest {
            criteria: Some(v1::Criteria {
                src: "lab:r1:edge?vlan=150".into(),
                dst: "lab:r2:edge?vlan=160".into(),
                capacity_mbps: CIRCUIT_MBPS as i64,
                end: Some(timestamp(Utc::now() + TimeDelta::hours(1))),
                provision_mode: v1::ProvisionMode::Manual as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    assert!(
        lab.wait_for_circuit(Duration::from_millis(300)).is_none(),
        "no traffic before the provision"
    );

    // From the provision to the first packet through the circuit.
    let (answered, flowing) = provision_until_flowing(&lab, &mut c, &r.id).await;
    let applied = eventually(WAIT, || async {
        let states = node_states(&mut idc.client().await, &r.id).await;
        states.len() == 2
            && states
                .iter()
                .all(|(_, s, e)| s == "applied" && e.is_empty())
    })
    .await;
    assert!(applied, "{:?}", node_states(&mut c, &r.id).await);

    let rates: CircuitRates = {
        let lab = &lab;
        tokio::task::block_in_place(|| lab.measure_circuit(CIRCUIT_MBPS))
    };
    eprintln!(
        "circuit {CIRCUIT_MBPS} Mb/s: alone {:.1}, under a best-effort flood {:.1} (the \
         flood got {:.1}), sending {} Mb/s {:.1}",
        rates.alone,
        rates.flooded,
        rates.flood,
        2 * CIRCUIT_MBPS,
        rates.over
    );
    assert!(
        rates.flood > 0.4 * LINK_MBPS as f64,
        "the flood only got {:.1} Mb/s",
        rates.flood
    );
    assert!(
        rates.flooded >= 0.95 * CIRCUIT_MBPS as f64,
        "under the flood: {:.1} Mb/s",
        rates.flooded
    );
    assert!(
        rates.over <= 1.05 * CIRCUIT_MBPS as f64,
        "rate limit: {:.1} Mb/s",
        rates.over
    );

    // Released: the agents take it away, the reservation shows it, nothing is left.
    // Four more rounds of release and provision, for the provision time.
    let mut times = vec![(answered, flowing)];
    loop {
        c.release(v1::IdRequest { id: r.id.clone() }).await.unwrap();
        let removed = eventually(WAIT, || async {
            let states = node_states(&mut idc.client().await, &r.id).await;
            states.len() == 2 && states.iter().all(|(_, s, _)| s == "removed")
        })
        .await;
        assert!(removed, "{:?}", node_states(&mut c, &r.id).await);
        assert!(
            tokio::task::block_in_place(|| lab.wait_for_circuit(Duration::from_millis(300)))
                .is_none(),
            "no traffic after the release"
        );
        if times.len() == PROVISIONS {
            break;
        }
        times.push(provision_until_flowing(&lab, &mut c, &r.id).await);
        let applied = eventually(WAIT, || async {
            let states = node_states(&mut idc.client().await, &r.id).await;
            states.len() == 2 && states.iter().all(|(_, s, _)| s == "applied")
        })
        .await;
        assert!(applied, "{:?}", node_states(&mut c, &r.id).await);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut flows: Vec<f64> = times.iter().map(|t| ms(t.1)).collect();
    flows.sort_by(f64::total_cmp);
    eprintln!(
        "provision → traffic flowing over {PROVISIONS} provisions: min {:.1} ms, median {:.1} \
         ms, max {:.1} ms (each: {}; the Provision call itself answered in {})",
        flows[0],
        flows[PROVISIONS / 2],
        flows[PROVISIONS - 1],
        times
            .iter()
            .map(|t| format!("{:.1}", ms(t.1)))
            .collect::<Vec<_>>()
            .join(", "),
        times
            .iter()
            .map(|t| format!("{:.1}", ms(t.0)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let left = tokio::task::block_in_place(|| lab.circuit_leftovers());
    assert!(left.is_empty(), "left behind: {left:?}");
    c.terminate(v1::IdRequest { id: r.id.clone() })
        .await
        .unwrap();
    idc.shutdown().await;
    for a in agents {
        a.shutdown().await.unwrap();
    }
}
