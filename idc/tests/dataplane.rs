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
use sluice_agent::lab::{CircuitRates, HOST_B_CIRCUIT, IperfServer, Lab, Prober, iperf};
use sluice_agent::linux::LinuxNode;
use sluice_agent::server::RunningAgent;
use sluice_agent::service::AgentService;
use sluice_idc::agents::AgentsConfig;
use sluice_idc::federation::tls::DevCa;
use sluice_idc::operators::Operators;
use sluice_idc::testing::{TestIdc, eventually};
use sluice_model::Mbps;
use sluice_proto::convert::timestamp;
use sluice_proto::v1;

const LINK_MBPS: u64 = 500;
const CIRCUIT_MBPS: u64 = 200;
const WAIT: Duration = Duration::from_secs(30);
/// How many times the circuit is provisioned, for the provision time.
const PROVISIONS: usize = 5;
const TOKEN: &str = "the-noc-token";

/// The tests measure rates: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// 200 Mb/s hA → hB (VLAN 150 at `src`'s edge, 160 at `dst`'s), for an hour from now;
/// provisioned at its start unless `manual`.
fn circuit_request(src: &str, dst: &str, manual: bool) -> v1::ReserveRequest {
    v1::ReserveRequest {
        verify_each: None,
        criteria: Some(v1::Criteria {
            src: format!("{src}:edge?vlan=150"),
            dst: format!("{dst}:edge?vlan=160"),
            capacity_mbps: CIRCUIT_MBPS as i64,
            end: Some(timestamp(Utc::now() + TimeDelta::hours(1))),
            provision_mode: if manual {
                v1::ProvisionMode::Manual
            } else {
                v1::ProvisionMode::Automatic
            } as i32,
            ..Default::default()
        }),
    }
}

/// The operator's emergency stop of `id` (with [`TOKEN`]).
fn operator_stop(id: &str) -> tonic::Request<v1::EmergencyStopRequest> {
    let mut req = tonic::Request::new(v1::EmergencyStopRequest {
        id: id.into(),
        owner: String::new(),
    });
    req.metadata_mut()
        .insert(sluice_proto::TOKEN_HEADER, TOKEN.parse().unwrap());
    req
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

/// The IDC of the lab's domain, driving an agent per router (Linux backend, mutual TLS),
/// with one operator (token [`TOKEN`]).
async fn start(lab: &Lab) -> (TestIdc, Vec<RunningAgent>) {
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
    let idc = TestIdc::builder()
        .topology(topo)
        .agents(cfg)
        .operators(Operators::default().with("noc", TOKEN))
        .start()
        .await;
    (idc, agents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_provisioned_through_the_idc_is_delivered_by_the_agents_and_leaves_nothing() {
    if let Err(why) = Lab::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::new("e2e", Mbps(LINK_MBPS));
    let (idc, agents) = start(&lab).await;
    let mut c = idc.client().await;

    // hA's end of the circuit is VLAN 150 at r1, hB's VLAN 160 at r2.
    lab.host_ends(150, 160);
    let r = c
        .reserve(circuit_request("lab:r1", "lab:r2", true))
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

/// `verify` on the same lab: its throughput against iperf3's over the same circuit, its
/// verdict when the circuit's HTB class on r1 is set too low by hand, and then an
/// operator's emergency stop, timed until nothing of the circuit is left on either router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_agrees_with_iperf3_fails_on_a_class_set_too_low_and_an_emergency_stop_clears_it() {
    if let Err(why) = Lab::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::new("vf", Mbps(LINK_MBPS));
    let (idc, agents) = start(&lab).await;
    let mut c = idc.client().await;
    lab.host_ends(150, 160);
    // Up now: provisioned automatically at its start.
    let r = c
        .reserve(circuit_request("lab:r1", "lab:r2", false))
        .await
        .unwrap()
        .into_inner();
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let applied = eventually(WAIT, || async {
        let states = node_states(&mut idc.client().await, &r.id).await;
        states.len() == 2 && states.iter().all(|(_, s, _)| s == "applied")
    })
    .await;
    assert!(applied, "{:?}", node_states(&mut c, &r.id).await);

    let by_iperf = tokio::task::block_in_place(|| {
        let _server = IperfServer::start(&lab.hb, HOST_B_CIRCUIT, 5201);
        iperf(&lab.ha.0, &format!("-c {HOST_B_CIRCUIT} -p 5201 -t 8"))
    });
    let verify = |secs: u32| v1::VerifyRequest {
        id: r.id.clone(),
        duration_ms: Some(secs * 1000),
        probes: 100,
        ..Default::default()
    };
    let m = c.verify(verify(8)).await.unwrap().into_inner();
    let off = (m.throughput_mbps - by_iperf) / by_iperf;
    eprintln!(
        "verify {CIRCUIT_MBPS} Mb/s circuit: {:.1} Mb/s of TCP payload ({:.1} Mb/s of IP \
         packets), iperf3 {by_iperf:.1} Mb/s on the same circuit ({:+.1} %); round trip \
         {:.3}/{:.3}/{:.3} ms min/mean/max, jitter {:.3} ms, loss {}/{}; verdict {}",
        m.throughput_mbps,
        m.ip_throughput_mbps,
        100.0 * off,
        m.rtt_min_us as f64 / 1e3,
        m.rtt_avg_us as f64 / 1e3,
        m.rtt_max_us as f64 / 1e3,
        m.jitter_us as f64 / 1e3,
        m.probes_sent - m.probes_received,
        m.probes_sent,
        m.verdict
    );
    assert!(
        off.abs() <= 0.05,
        "verify {m:?} against iperf3 {by_iperf:.1}"
    );
    assert_eq!(m.verdict, "pass", "{m:?}");
    assert_eq!(m.probes_received, m.probes_sent);
    // Every measurement end was removed again.
    let left = tokio::task::block_in_place(|| lab.circuit_leftovers());
    assert!(
        left.iter()
            .all(|l| !l.contains("measurement") && !l.contains(" link m")),
        "{left:?}"
    );

    // The circuit's class on r1's link to r2 (A→Z leaves there) set to half by hand.
    tokio::task::block_in_place(|| {
        let out = lab
            .r1
            .command("tc")
            .args(["class", "show", "dev", "p1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let class = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .find(|id| *id != "1:1" && *id != "1:fffe")
            .unwrap_or_else(|| panic!("no circuit class on r1 p1: {text}"))
            .to_string();
        let ok = lab
            .r1
            .command("tc")
            .args([
                "class", "change", "dev", "p1", "parent", "1:1", "classid", &class,
            ])
            .args(["htb", "rate", "100mbit", "ceil", "100mbit", "prio", "0"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tc class change {class}");
    });
    let low = c.verify(verify(5)).await.unwrap().into_inner();
    eprintln!(
        "with the class set to 100 Mb/s: verify {:.1} Mb/s, verdict {} ({})",
        low.throughput_mbps,
        low.verdict,
        low.reasons.join("; ")
    );
    assert_eq!(low.verdict, "fail", "{low:?}");
    assert!(low.reasons[0].starts_with("throughput"), "{low:?}");
    let h = c
        .history(v1::IdRequest { id: r.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let verdicts: Vec<&str> = h.measurements.iter().map(|m| m.verdict.as_str()).collect();
    assert_eq!(verdicts, ["pass", "fail"]);

    // The emergency stop: timed from the call until no link, class or filter of the
    // circuit is left on either router.
    let began = Instant::now();
    let req = operator_stop(&r.id);
    let stop = {
        let mut c = c.clone();
        tokio::spawn(async move { c.emergency_stop(req).await })
    };
    let gone = tokio::task::block_in_place(|| {
        while !lab.circuit_leftovers().is_empty() {
            assert!(began.elapsed() < WAIT, "{:?}", lab.circuit_leftovers());
            std::thread::sleep(Duration::from_millis(2));
        }
        began.elapsed()
    });
    let reply = stop.await.unwrap().unwrap().into_inner();
    eprintln!(
        "emergency stop: nothing of the circuit left on r1 and r2 {:.1} ms after the call",
        gone.as_secs_f64() * 1e3
    );
    assert_eq!(
        reply.stopped[0].states.as_ref().unwrap().lifecycle,
        v1::LifecycleState::Failed as i32
    );
    assert!(
        tokio::task::block_in_place(|| lab.wait_for_circuit(Duration::from_millis(300))).is_none(),
        "no traffic after the stop"
    );
    idc.shutdown().await;
    for a in agents {
        a.shutdown().await.unwrap();
    }
}

/// The emergency stop on a real data plane across three domains: one router each (the
/// lab across three domains), each domain's IDC driving its router's agent (Linux
/// backend), a 200 Mb/s circuit hA → hB booked at `a` through `b` to `c`. Timed from the
/// operator's call until nothing of the circuit is left on any of the three routers;
/// then every domain says Failed, and no packet crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_stop_clears_a_circuit_from_all_three_domains() {
    if let Err(why) = Lab::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::across_three_domains("es3", Mbps(LINK_MBPS));
    let mut agents: Vec<RunningAgent> = Vec::new();
    let mut builder = sluice_idc::testing::TestFederation::line(&["a", "b", "c"])
        .operators("a", Operators::default().with("noc", TOKEN));
    for (cfg, (domain, toml)) in lab
        .all_agent_configs()
        .into_iter()
        .zip(lab.domain_topologies_toml())
    {
        let backend = Arc::new(LinuxNode::new(cfg.netns.clone()));
        let node = cfg.node.clone();
        let agent = sluice_agent::server::start(
            "127.0.0.1:0".parse().unwrap(),
            None,
            AgentService::new(cfg, backend),
        )
        .await
        .unwrap();
        let topo = sluice_idc::topology_file::parse(&format!("{domain}.toml"), &toml).unwrap();
        builder = builder.topology(domain, topo).agents(
            domain,
            AgentsConfig::new([(node, format!("http://{}", agent.addr))].into(), None),
        );
        agents.push(agent);
    }
    let fed = builder.start().await;
    assert!(fed.exchange(4).await);
    let mut c = fed.client("a").await;
    lab.host_ends(150, 160);
    let r = c
        .reserve(circuit_request("a:r1", "c:r2", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.segments.len(), 3);
    c.commit(v1::IdRequest { id: r.id.clone() }).await.unwrap();
    let up = tokio::task::block_in_place(|| lab.wait_for_circuit(WAIT));
    if up.is_none() {
        let status = c
            .status(v1::IdRequest { id: r.id.clone() })
            .await
            .map(|s| format!("{:#?}", s.into_inner().domains));
        panic!(
            "the circuit never carried a ping across a, b and c; on the routers: {:?}; \
             status: {status:?}",
            tokio::task::block_in_place(|| lab.circuit_leftovers())
        );
    }

    let began = Instant::now();
    let req = operator_stop(&r.id);
    let stop = {
        let mut c = c.clone();
        tokio::spawn(async move {
            let r = c.emergency_stop(req).await;
            (r, began.elapsed())
        })
    };
    // Gone: no cross-connect or label link on any router, looked at with one `ip` per
    // router (a full look, classes and filters too, takes a dozen commands: done after).
    let routers: Vec<String> = lab
        .all_agent_configs()
        .into_iter()
        .filter_map(|c| c.netns)
        .collect();
    let (gone, look) = tokio::task::block_in_place(|| {
        let mut look = Duration::ZERO;
        loop {
            let t = Instant::now();
            let carrying = routers.iter().any(|ns| {
                let out = std::process::Command::new("ip")
                    .args(["-n", ns, "-o", "link", "show"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .split(": ")
                    .any(|name| name.starts_with("xc") || name.starts_with("vx"))
            });
            look = look.max(t.elapsed());
            if !carrying {
                return (began.elapsed(), look);
            }
            assert!(began.elapsed() < WAIT, "{:?}", lab.circuit_leftovers());
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let left = tokio::task::block_in_place(|| lab.circuit_leftovers());
    assert!(left.is_empty(), "left behind: {left:?}");
    let (reply, answered) = stop.await.unwrap();
    let reply = reply.unwrap().into_inner();
    eprintln!(
        "emergency stop across three domains: nothing of the circuit left on r1 (a), rt (b) \
         and r2 (c) {:.1} ms after the call (one look at the routers takes up to {:.1} ms; \
         the call answered after {:.1} ms)",
        gone.as_secs_f64() * 1e3,
        look.as_secs_f64() * 1e3,
        answered.as_secs_f64() * 1e3
    );
    let stopped = &reply.stopped[0];
    assert_eq!(
        stopped.states.as_ref().unwrap().lifecycle,
        v1::LifecycleState::Failed as i32
    );
    let failed: Vec<(&str, i32)> = stopped
        .segments
        .iter()
        .map(|s| (s.domain.as_str(), s.states.as_ref().unwrap().lifecycle))
        .collect();
    let f = v1::LifecycleState::Failed as i32;
    assert_eq!(failed, [("a", f), ("b", f), ("c", f)]);
    assert!(
        tokio::task::block_in_place(|| lab.wait_for_circuit(Duration::from_millis(300))).is_none(),
        "no traffic after the stop"
    );
    fed.shutdown().await;
    for a in agents {
        a.shutdown().await.unwrap();
    }
}
