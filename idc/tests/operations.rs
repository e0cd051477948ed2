//! The operator's view of a circuit that crosses three domains (a–b–c), each domain's
//! IDC driving a (mock-backed, real gRPC) agent per node. Its status end to end: every
//! domain's part, as much as that domain's policy shares. Its emergency stop: only an
//! operator of the aggregator may; then the data plane is gone on every node of every
//! domain, every segment and the circuit are Failed, the watchers and audits say so, and
//! nothing comes back up.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use sluice_agent::mock::MockBackend;
use sluice_agent::server::RunningAgent;
use sluice_idc::agents::AgentsConfig;
use sluice_idc::federation::Policy;
use sluice_idc::operators::Operators;
use sluice_idc::testing::{TestFederation, eventually};
use sluice_model::{ErrorCode, LifecycleState, Machine, StatusShare};
use sluice_proto::convert::timestamp as ts;
use sluice_proto::status::from_status;
use sluice_proto::v1;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "s3cret-token-of-the-gmoc";

/// The nodes of the line fixture's domains and their ports.
fn nodes(domain: &str) -> Vec<(&'static str, Vec<&'static str>)> {
    match domain {
        "a" => vec![
            ("core", vec!["e1", "e2", "l-b"]),
            ("b-b", vec!["to-b", "l"]),
        ],
        "b" => vec![
            ("core", vec!["e1", "e2", "l-a", "l-c"]),
            ("b-a", vec!["to-a", "l"]),
            ("b-c", vec!["to-c", "l"]),
        ],
        _ => vec![
            ("core", vec!["e1", "e2", "l-b"]),
            ("b-b", vec!["to-b", "l"]),
        ],
    }
}

struct DomainAgents {
    servers: Vec<RunningAgent>,
    backends: BTreeMap<String, Arc<Mutex<MockBackend>>>,
    urls: BTreeMap<String, String>,
}

async fn start_agents(domain: &str) -> DomainAgents {
    let mut out = DomainAgents {
        servers: Vec::new(),
        backends: BTreeMap::new(),
        urls: BTreeMap::new(),
    };
    for (node, ports) in nodes(domain) {
        let (a, backend) = common::mock_agent(node, &ports).await;
        out.urls
            .insert(node.to_string(), format!("http://{}", a.addr));
        out.backends.insert(format!("{domain}/{node}"), backend);
        out.servers.push(a);
    }
    out
}

/// How many circuits each node of every domain carries now.
fn carried(agents: &[DomainAgents]) -> BTreeMap<String, usize> {
    agents
        .iter()
        .flat_map(|d| d.backends.iter())
        .map(|(n, b)| (n.clone(), b.lock().unwrap().applied.circuits.len()))
        .collect()
}

fn as_user<T>(user: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(sluice_proto::USER_HEADER, user.parse().unwrap());
    req
}

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = as_user("somebody", msg);
    req.metadata_mut()
        .insert(sluice_proto::TOKEN_HEADER, token.parse().unwrap());
    req
}

/// Books (reserve and commit) `src`→`dst` as `user`, up now, provisioned automatically.
async fn book(
    fed: &TestFederation,
    user: &str,
    src: &str,
    dst: &str,
    mbps: i64,
) -> v1::Reservation {
    let mut c = fed.client("a").await;
    let start = Utc::now();
    let r = c
        .reserve(as_user(
            user,
            v1::ReserveRequest {
                verify_each: None,
                criteria: Some(v1::Criteria {
                    src: src.into(),
                    dst: dst.into(),
                    capacity_mbps: mbps,
                    start: Some(ts(start)),
                    end: Some(ts(start + TimeDelta::hours(1))),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.commit(as_user(user, v1::IdRequest { id: r.id.clone() }))
        .await
        .unwrap()
        .into_inner()
}

fn lifecycle(r: &v1::Reservation) -> i32 {
    r.states.as_ref().unwrap().lifecycle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_stops_a_circuit_in_all_three_domains_at_once_and_nobody_else_can() {
    // The metrics recorder (process-wide), to see the federation calls counted.
    assert!(sluice_idc::metrics::handle().is_some());
    let mut agents = Vec::new();
    for d in ["a", "b", "c"] {
        agents.push(start_agents(d).await);
    }
    let mut builder = TestFederation::line(&["a", "b", "c"])
        .operators("a", Operators::default().with("gmoc", TOKEN))
        .operators("c", Operators::default().with("c-noc", "c's own token"));
    for (d, a) in ["a", "b", "c"].iter().zip(&agents) {
        builder = builder.agents(d, AgentsConfig::new(a.urls.clone(), None));
    }
    let fed = builder.start().await;
    assert!(fed.exchange(4).await);

    let r = book(&fed, "alice", "a:core:e1", "c:core:e1", 100).await;
    assert_eq!(r.segments.len(), 3);
    // Every node on the path in every domain carries it: 2 + 3 + 2.
    assert!(
        eventually(WAIT, || async {
            carried(&agents).values().all(|n| *n == 1)
        })
        .await,
        "{:?}",
        carried(&agents)
    );

    let mut client = fed.client("a").await;
    // Not an operator: no token, a wrong token, or a's operator's token at c (each
    // domain has its own operators). 00302, and nothing changes anywhere.
    for (at, token) in [("a", ""), ("a", "guess"), ("c", TOKEN)] {
        let mut c = fed.client(at).await;
        let id = if at == "a" {
            r.id.clone()
        } else {
            r.segments[2].id.clone()
        };
        let e = c
            .emergency_stop(with_token(
                token,
                v1::EmergencyStopRequest {
                    id,
                    owner: String::new(),
                },
            ))
            .await
            .map_err(|s| from_status(&s))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}");
        assert_eq!(e.field.as_deref(), Some("token"));
    }
    // A peer may stop only segments held for it: b asking c to stop the segment c holds
    // for a is refused.
    {
        let (c_addr, _) = fed.get("c").server().federation.as_ref().unwrap();
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{c_addr}"))
            .unwrap()
            .tls_config(fed.ca().material("b").unwrap().client("c"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let e = v1::federation_client::FederationClient::new(ch)
            .emergency_stop_segment(v1::EmergencyStopSegmentRequest {
                id: r.segments[2].id.clone(),
                reason: "b says so".into(),
            })
            .await
            .map_err(|s| from_status(&s))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}");
    }
    let got = client
        .get(v1::IdRequest { id: r.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lifecycle(&got), v1::LifecycleState::Created as i32);
    assert!(carried(&agents).values().all(|n| *n == 1));

    // The operator: measured from the call to the last node's data plane gone.
    let mut watch = client
        .watch(v1::WatchRequest {
            reservation_id: r.id.clone(),
            since_seq: None,
        })
        .await
        .unwrap()
        .into_inner();
    let began = Instant::now();
    let stop = {
        let mut c = client.clone();
        let id = r.id.clone();
        tokio::spawn(async move {
            c.emergency_stop(with_token(
                TOKEN,
                v1::EmergencyStopRequest {
                    id,
                    owner: String::new(),
                },
            ))
            .await
        })
    };
    let deadline = began + WAIT;
    while carried(&agents).values().any(|n| *n > 0) {
        assert!(Instant::now() < deadline, "{:?}", carried(&agents));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let gone = began.elapsed();
    let reply = stop.await.unwrap().unwrap().into_inner();
    eprintln!(
        "emergency stop: data plane gone on all 7 nodes of 3 domains {:.1} ms after the call",
        gone.as_secs_f64() * 1e3
    );
    assert_eq!(reply.operator, "gmoc");
    assert_eq!(reply.stopped.len(), 1);
    let stopped = &reply.stopped[0];
    assert_eq!(lifecycle(stopped), v1::LifecycleState::Failed as i32);
    assert_eq!(stopped.segments.len(), 3);
    for s in &stopped.segments {
        assert!(s.error.is_empty(), "{s:?}");
        let st = s.states.as_ref().unwrap();
        assert_eq!(st.lifecycle, v1::LifecycleState::Failed as i32, "{s:?}");
        assert!(!st.data_plane_active);
    }

    // Each domain's own record: its segment Failed, with who stopped it; its audit.
    for (d, seg) in ["a", "b", "c"].iter().zip(&stopped.segments) {
        let idc = fed.get(d).idc();
        let own = idc.get(&seg.id).await.unwrap();
        assert_eq!(own.states.lifecycle, LifecycleState::Failed);
        let events = idc.events_after(0, Some(seg.id.clone())).await.unwrap();
        assert!(
            events.iter().any(|e| e.change.machine == Machine::Lifecycle
                && e.change.to == "Failed"
                && e.change.detail == "emergency stop by operator gmoc of a"),
            "{d}: {events:?}"
        );
        // Recorded once the agents have answered (a moment after they took it away).
        let removal_recorded = eventually(WAIT, || async {
            idc.events_after(0, Some(seg.id.clone()))
                .await
                .unwrap()
                .iter()
                .any(|e| e.change.machine == Machine::Node && e.change.to == "removed")
        })
        .await;
        assert!(removal_recorded, "{d}: the agents' removal is recorded");
        if *d != "a" {
            let audit = idc
                .audit_log(sluice_idc::store::AuditFilter {
                    who: Some("peer:a".into()),
                    target: Some(seg.id.clone()),
                    after: 0,
                    limit: 10,
                })
                .await
                .unwrap();
            assert!(
                audit
                    .iter()
                    .any(|a| a.action == "emergency-stop-segment" && a.result == "ok"),
                "{d}: {audit:?}"
            );
        }
    }
    let audit = fed
        .get("a")
        .idc()
        .audit_log(sluice_idc::store::AuditFilter {
            who: None,
            target: Some(r.id.clone()),
            after: 0,
            limit: 20,
        })
        .await
        .unwrap();
    let stops: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a.action == "emergency-stop")
        .map(|a| (a.who.as_str(), a.result.as_str()))
        .collect();
    assert_eq!(
        stops,
        [
            ("somebody", "00302"),
            ("somebody", "00302"),
            ("operator:gmoc", "ok")
        ],
        "{audit:?}"
    );

    // The watcher heard it: the circuit's lifecycle, and b's and c's segments.
    let mut heard_circuit = false;
    let mut heard_segments = std::collections::BTreeSet::new();
    while !(heard_circuit && heard_segments.len() == 2) {
        let e = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("events within the wait")
            .unwrap()
            .expect("the stream stays open");
        if e.machine == "lifecycle" && e.to == "Failed" {
            heard_circuit = true;
        }
        if e.machine == "segment" && e.to == "Failed" && e.detail.contains("lifecycle") {
            for d in ["b", "c"] {
                if e.detail.contains(&format!(" in {d}:")) {
                    heard_segments.insert(d);
                }
            }
        }
    }

    // Nothing brings it back: the agents' periodic check and the scheduler leave it down.
    let e = client
        .provision(v1::IdRequest { id: r.id.clone() })
        .await
        .map_err(|s| from_status(&s))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidTransition);
    // Longer than the agent driver's retry (2 s): still nothing on any node.
    tokio::time::sleep(sluice_idc::agents::RETRY + Duration::from_millis(500)).await;
    assert!(carried(&agents).values().all(|n| *n == 0));
    // a's calls to b and c were timed, by peer, operation and result.
    let page = sluice_idc::metrics::render(fed.get("a").idc()).await;
    for peer in ["b", "c"] {
        let series = format!(
            "sluice_federation_call_seconds_count{{peer=\"{peer}\",op=\"commit\",result=\"ok\"}}"
        );
        assert!(page.contains(&series), "no {series} in {page}");
    }

    fed.shutdown().await;
    for d in agents {
        for a in d.servers {
            a.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_every_domains_part_as_far_as_its_policy_shares() {
    let mut agents = Vec::new();
    for d in ["a", "b", "c"] {
        agents.push(start_agents(d).await);
    }
    let mut builder = TestFederation::line(&["a", "b", "c"]).policy(
        "c",
        "a",
        Policy {
            status: StatusShare::States,
            ..Policy::default()
        },
    );
    for (d, a) in ["a", "b", "c"].iter().zip(&agents) {
        builder = builder.agents(d, AgentsConfig::new(a.urls.clone(), None));
    }
    let fed = builder.start().await;
    assert!(fed.exchange(4).await);
    let r = book(&fed, "alice", "a:core:e1", "c:core:e1", 100).await;
    assert!(
        eventually(WAIT, || async {
            carried(&agents).values().all(|n| *n == 1)
        })
        .await,
        "{:?}",
        carried(&agents)
    );
    // b's segment verified in b (both its ends are b's): its result shows in a's view.
    let b_segment = r.segments[1].id.clone();
    let m = fed
        .client("b")
        .await
        .verify(v1::VerifyRequest {
            id: b_segment.clone(),
            duration_ms: Some(200),
            probes: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.verdict, "pass");
    // One of b's agents goes away.
    let gone = agents[1].servers.remove(1);
    gone.shutdown().await.unwrap();

    let s = fed
        .client("a")
        .await
        .status(v1::IdRequest { id: r.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.reservation.as_ref().unwrap().id, r.id);
    let domains: Vec<(&str, &str, &str)> = s
        .domains
        .iter()
        .map(|d| (d.domain.as_str(), d.shared.as_str(), d.error.as_str()))
        .collect();
    assert_eq!(
        domains,
        [("a", "full", ""), ("b", "full", ""), ("c", "states", "")]
    );
    for d in &s.domains {
        let st = d.states.as_ref().unwrap();
        assert_eq!(st.lifecycle, v1::LifecycleState::Created as i32, "{d:?}");
        assert!(st.data_plane_active, "{d:?}");
    }
    // a: both nodes, their agents up, the circuit's counters read from them.
    let a = &s.domains[0];
    let nodes: Vec<(&str, &str, &str)> = a
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.state.as_str(), n.agent.as_str()))
        .collect();
    assert_eq!(nodes, [("core", "applied", "up"), ("b-b", "applied", "up")]);
    assert!(a.nodes.iter().all(|n| n.counters.is_some()));
    assert!(a.last_measurement.is_none());
    // b: three nodes, one agent unreachable (no counters from it), the verify result.
    let b = &s.domains[1];
    assert_eq!(b.nodes.len(), 3);
    let down: Vec<&v1::NodeStatus> = b.nodes.iter().filter(|n| n.agent != "up").collect();
    assert_eq!(down.len(), 1, "{:?}", b.nodes);
    assert_eq!(down[0].agent, "unreachable");
    assert!(!down[0].agent_error.is_empty() && down[0].counters.is_none());
    let last = b.last_measurement.as_ref().expect("b's last measurement");
    assert_eq!((last.seq, last.verdict.as_str()), (m.seq, "pass"));
    // c shares its states only.
    assert!(s.domains[2].nodes.is_empty() && s.domains[2].last_measurement.is_none());

    fed.shutdown().await;
    for d in agents {
        for a in d.servers {
            a.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_booking_of_one_user_stops_and_no_one_elses() {
    let fed = TestFederation::line(&["a", "b", "c"])
        .operators("a", Operators::default().with("gmoc", TOKEN))
        // c shares no status with a: its part says so, the others' are there.
        .policy(
            "c",
            "a",
            Policy {
                status: StatusShare::Nothing,
                ..Policy::default()
            },
        )
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let local = book(&fed, "runaway", "a:core:e1", "a:core:e2", 100).await;
    let across = book(&fed, "runaway", "a:core:e2", "c:core:e2", 6000).await;
    let other = book(&fed, "careful", "a:core:e1", "c:core:e1", 100).await;

    let mut client = fed.client("a").await;
    let s = client
        .status(v1::IdRequest {
            id: across.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let errors: Vec<&str> = s.domains.iter().map(|d| d.error.as_str()).collect();
    assert_eq!(errors[..2], ["", ""]);
    assert!(
        errors[2].starts_with("00502") || errors[2].starts_with("00302"),
        "{errors:?}"
    );
    assert!(errors[2].contains("shares no status"), "{errors:?}");
    // Both an id and an owner: refused, naming the field; nothing stops.
    let e = client
        .emergency_stop(with_token(
            TOKEN,
            v1::EmergencyStopRequest {
                id: other.id.clone(),
                owner: "runaway".into(),
            },
        ))
        .await
        .map_err(|s| from_status(&s))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidParameter);
    assert_eq!(e.field.as_deref(), Some("owner"));

    let reply = client
        .emergency_stop(with_token(
            TOKEN,
            v1::EmergencyStopRequest {
                id: String::new(),
                owner: "runaway".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<&str> = reply.stopped.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    let mut want = vec![local.id.as_str(), across.id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert!(reply.failures.is_empty(), "{:?}", reply.failures);
    for id in [&local.id, &across.id, &other.id] {
        let got = client
            .get(v1::IdRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        let want = if *id == other.id {
            v1::LifecycleState::Created
        } else {
            v1::LifecycleState::Failed
        };
        assert_eq!(lifecycle(&got), want as i32, "{id}");
        for s in &got.segments {
            assert_eq!(
                s.states.as_ref().unwrap().lifecycle,
                want as i32,
                "{id} in {}",
                s.domain
            );
        }
    }
    // Again: nothing left to stop.
    let again = client
        .emergency_stop(with_token(
            TOKEN,
            v1::EmergencyStopRequest {
                id: String::new(),
                owner: "runaway".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.stopped.is_empty() && again.failures.is_empty());
    // The capacity is free again: 6000 of e2's 10000 Mb/s were booked, and are again.
    let next = book(&fed, "careful", "a:core:e2", "c:core:e2", 6000).await;
    assert_eq!(
        next.states.as_ref().unwrap().lifecycle,
        v1::LifecycleState::Created as i32
    );

    // A series by its id: every occurrence that has not ended.
    let s = client
        .reserve_series(as_user(
            "weekly",
            v1::ReserveSeriesRequest {
                criteria: Some(v1::Criteria {
                    src: "a:core:e1".into(),
                    dst: "a:core:e2".into(),
                    capacity_mbps: 100,
                    ..Default::default()
                }),
                recurrence: Some(v1::Recurrence {
                    rule: Some(v1::recurrence::Rule::Cron(v1::CronRule {
                        expression: "0 14 * * 2".into(),
                        time_zone: "Europe/Rome".into(),
                        from: Some(ts(Utc::now() + TimeDelta::days(1))),
                        count: Some(3),
                        ..Default::default()
                    })),
                    duration_seconds: 3600,
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .commit_series(as_user("weekly", v1::IdRequest { id: s.id.clone() }))
        .await
        .unwrap();
    let reply = client
        .emergency_stop(with_token(
            TOKEN,
            v1::EmergencyStopRequest {
                id: s.id.clone(),
                owner: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.stopped.len(), 3, "{reply:?}");
    assert!(
        reply
            .stopped
            .iter()
            .all(|r| lifecycle(r) == v1::LifecycleState::Failed as i32)
    );
    fed.shutdown().await;
}
