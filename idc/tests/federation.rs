//! Circuits across domains: several IDCs in this process, each with its own database and
//! certificate, talking mutual TLS over loopback (`testing::TestFederation`). Every call
//! and wait is bounded; after each failure the test checks that no domain is left with a
//! hold or a booking.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use sluice_idc::federation::Policy;
use sluice_idc::testing::{TestFederation, eventually};
use sluice_model::{Error, ErrorCode, Mbps};
use sluice_proto::convert::timestamp as ts;
use sluice_proto::status::from_status;
use sluice_proto::v1;

const WAIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

fn criteria(src: &str, dst: &str, mbps: i64, start_in: i64, hours: i64) -> v1::Criteria {
    let start = Utc::now() + TimeDelta::seconds(start_in);
    v1::Criteria {
        src: src.into(),
        dst: dst.into(),
        capacity_mbps: mbps,
        start: Some(ts(start)),
        end: Some(ts(start + TimeDelta::hours(hours))),
        description: "federation test".into(),
        ..Default::default()
    }
}

async fn reserve(
    fed: &TestFederation,
    at: &str,
    c: v1::Criteria,
) -> Result<v1::Reservation, Error> {
    let mut client = fed.client(at).await;
    bounded(
        "reserve",
        client.reserve(v1::ReserveRequest {
            verify_each: None,
            criteria: Some(c),
        }),
    )
    .await
    .map(|r| r.into_inner())
    .map_err(|s| from_status(&s))
}

async fn op(
    fed: &TestFederation,
    at: &str,
    what: &str,
    id: &str,
) -> Result<v1::Reservation, Error> {
    let mut c = fed.client(at).await;
    let req = v1::IdRequest { id: id.into() };
    let r = match what {
        "commit" => bounded(what, c.commit(req)).await,
        "abort" => bounded(what, c.abort(req)).await,
        "provision" => bounded(what, c.provision(req)).await,
        "terminate" => bounded(what, c.terminate(req)).await,
        "get" => bounded(what, c.get(req)).await,
        _ => panic!("no operation {what}"),
    };
    r.map(|r| r.into_inner()).map_err(|s| from_status(&s))
}

fn summary(r: &v1::Reservation) -> &str {
    &r.states.as_ref().expect("states").summary
}

fn segment_summaries(r: &v1::Reservation) -> Vec<(String, String)> {
    r.segments
        .iter()
        .map(|s| {
            (
                s.domain.clone(),
                s.states.as_ref().expect("states").summary.clone(),
            )
        })
        .collect()
}

/// No domain holds anything: no live hold, nothing in any index.
async fn nothing_held(fed: &TestFederation) {
    for d in &fed.domains {
        let Some(s) = &d.server else { continue };
        let domain = &s.idc.topology().domain;
        let (held, _) = s
            .idc
            .list(sluice_idc::service::ListQuery {
                states: vec!["held".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            held.is_empty(),
            "{domain} still holds {:?}",
            held.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        assert_eq!(
            s.idc.indexed_reservations(),
            0,
            "{domain} still has bookings"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_three_domains_reserves_commits_queries_and_terminates_everywhere() {
    let fed = TestFederation::line(&["a", "b", "c"]).start().await;
    assert!(fed.exchange(4).await, "documents reach every domain");
    // a knows c only through b.
    let (_, a_fed) = fed.get("a").server().federation.as_ref().unwrap();
    assert!(!a_fed.is_direct_peer("c"));
    assert!(a_fed.known_documents().iter().any(|(d, _)| d.domain == "c"));

    let r = reserve(
        &fed,
        "a",
        criteria("a:core:e1", "c:core:e2?vlan=150", 1000, 60, 2),
    )
    .await
    .expect("held across three domains");
    assert_eq!(summary(&r), "held");
    let domains: Vec<&str> = r.segments.iter().map(|s| s.domain.as_str()).collect();
    assert_eq!(domains, ["a", "b", "c"]);
    // One VLAN through both demarcation points (nobody translates), the one asked for
    // at the far end.
    for s in &r.segments {
        assert_eq!((s.ingress_vlan, s.egress_vlan), (150, 150), "{s:?}");
    }
    assert_eq!(r.segments[0].egress, "a:b-b:to-b");
    assert_eq!(r.segments[1].ingress, "b:b-a:to-a");
    assert_eq!(r.segments[2].egress, "c:core:e2");
    // Each domain holds its own segment, owned by the aggregator, with its own path.
    for s in &r.segments {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert_eq!(seg.owner, "peer:a");
        assert!(!seg.path.is_empty());
    }

    let r = op(&fed, "a", "commit", &r.id).await.expect("committed");
    assert_eq!(summary(&r), "committed");
    assert!(
        segment_summaries(&r).iter().all(|(_, s)| s == "committed"),
        "{:?}",
        segment_summaries(&r)
    );

    // A new version everywhere, or nowhere.
    let mut client = fed.client("a").await;
    let m = client
        .modify(v1::ModifyRequest {
            id: r.id.clone(),
            capacity_mbps: Some(1500),
            ..Default::default()
        })
        .await
        .expect("modified in every domain")
        .into_inner();
    assert_eq!(m.capacity_mbps, 1500);
    for s in &m.segments {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert_eq!(seg.bw, Mbps(1500), "{}", s.domain);
    }
    let e = from_status(
        &client
            .modify(v1::ModifyRequest {
                id: r.id.clone(),
                capacity_mbps: Some(20_000),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    assert_eq!(
        e.child.as_ref().unwrap().domain,
        "a",
        "the first segment refuses: {e}"
    );
    for s in &m.segments {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert_eq!(seg.bw, Mbps(1500), "{} keeps the old version", s.domain);
    }

    // A query asks every domain afresh: terminate c's segment behind a's back and look.
    let c_seg = r.segments[2].id.clone();
    fed.get("c").idc().terminate(&c_seg).await.unwrap();
    let got = op(&fed, "a", "get", &r.id).await.unwrap();
    assert_eq!(
        got.segments[2].states.as_ref().unwrap().summary,
        "terminated"
    );
    assert_eq!(
        got.segments[1].states.as_ref().unwrap().summary,
        "committed"
    );

    let r = op(&fed, "a", "terminate", &r.id).await.unwrap();
    assert_eq!(summary(&r), "terminated");
    for s in &r.segments {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert_eq!(seg.summary(), "terminated", "{}", s.domain);
    }
    // Each domain's audit log has what the aggregator asked of it, under its
    // certificate's name, on the segment it holds; c had ended its segment already, so
    // the terminate was refused there (00201).
    for (s, ended) in r.segments[1..].iter().zip(["ok", "00201"]) {
        let log = fed
            .get(&s.domain)
            .idc()
            .audit_log(sluice_idc::store::AuditFilter {
                target: Some(s.id.clone()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let asked: Vec<(&str, &str, &str)> = log
            .iter()
            .map(|e| (e.who.as_str(), e.action.as_str(), e.result.as_str()))
            .collect();
        assert_eq!(
            asked,
            [
                ("peer:a", "hold-segment", "ok"),
                ("peer:a", "commit-segment", "ok"),
                ("peer:a", "modify-segment", "ok"),
                ("peer:a", "terminate-segment", ended),
            ],
            "{}",
            s.domain
        );
    }
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triangle_goes_around_a_domain_that_is_full_for_the_window() {
    // a-b-c over cheap links, a-c directly over an expensive one: b is tried first.
    let fed = TestFederation::builder()
        .domain("a")
        .domain("b")
        .domain("c")
        .peering("a", "b", 1)
        .peering("b", "c", 1)
        .peering("a", "c", 10)
        .start()
        .await;
    assert!(fed.exchange(4).await);
    // b fills its link towards c for the window, after a last heard from it.
    let c = criteria("b:core:e1", "b:b-c:to-c", 10_000, 60, 3);
    let mut bc = fed.client("b").await;
    let full = bc
        .reserve(v1::ReserveRequest {
            verify_each: None,
            criteria: Some(c),
        })
        .await
        .expect("b books its own border")
        .into_inner();
    bc.commit(v1::IdRequest {
        id: full.id.clone(),
    })
    .await
    .unwrap();

    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 120, 1))
        .await
        .expect("held around b");
    let domains: Vec<&str> = r.segments.iter().map(|s| s.domain.as_str()).collect();
    assert_eq!(domains, ["a", "c"]);
    // Nothing was left in b by the route that failed there.
    let b = fed.get("b").idc();
    assert_eq!(b.indexed_reservations(), 1, "only b's own booking");

    // With a-c full too, the answer names the first route's failure: b, 00705.
    op(&fed, "a", "commit", &r.id).await.unwrap();
    let e = reserve(&fed, "a", criteria("a:core:e2", "c:core:e2", 9500, 120, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    let child = e.child.as_ref().expect("names the child");
    assert_eq!(
        (child.domain.as_str(), child.segment, child.code),
        ("b", 2, ErrorCode::CapacityUnavailable),
        "{e}"
    );
    assert!(e.message.contains("other route"), "{}", e.message);

    // The ERO names domains to keep out of: around b by request; nodes cannot be named.
    let mut avoid_b = criteria("a:core:e2", "c:core:e2", 100, 120, 1);
    avoid_b.ero_exclude = vec!["b".into()];
    let r = reserve(&fed, "a", avoid_b).await.expect("around b");
    let domains: Vec<&str> = r.segments.iter().map(|s| s.domain.as_str()).collect();
    assert_eq!(domains, ["a", "c"]);
    let mut bad = criteria("a:core:e2", "c:core:e2", 100, 120, 1);
    bad.ero_exclude = vec!["core".into()];
    let e = reserve(&fed, "a", bad).await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidEroMember, Some("ero_exclude[0]"))
    );
    let mut bad = criteria("a:core:e2", "c:core:e2", 100, 120, 1);
    bad.ero_include = vec!["b".into()];
    let e = reserve(&fed, "a", bad).await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidEroMember, Some("ero_include[0]"))
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_policy_is_refused_and_nothing_is_held_anywhere() {
    let fed = TestFederation::line(&["a", "b", "c"])
        .policy(
            "c",
            "a",
            Policy {
                max_bw: Some(Mbps(500)),
                ..Policy::default()
            },
        )
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let e = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    let child = e.child.as_ref().unwrap();
    assert_eq!(
        (child.domain.as_str(), child.code),
        ("c", ErrorCode::Unauthorized)
    );
    assert_eq!(e.field.as_deref(), Some("capacity_mbps"));
    nothing_held(&fed).await;
    // Within the policy it goes through.
    reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 500, 60, 1))
        .await
        .expect("500 is allowed");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_domain_fails_the_reserve_and_leaves_nothing() {
    let mut fed = TestFederation::line(&["a", "b", "c"])
        .call_timeout(Duration::from_secs(2))
        .start()
        .await;
    assert!(fed.exchange(4).await);
    fed.kill("c").await;
    let e = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    assert_eq!(e.child.as_ref().unwrap().domain, "c");
    assert!(e.message.contains("unreachable"), "{}", e.message);
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_killed_between_hold_and_commit_aborts_the_rest_and_its_hold_expires() {
    let hold = TimeDelta::seconds(2);
    let mut fed = TestFederation::line(&["a", "b", "c"])
        .hold_timeout(hold)
        .call_timeout(Duration::from_secs(2))
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap();
    let c_seg = r.segments[2].id.clone();
    fed.kill("c").await;
    let e = op(&fed, "a", "commit", &r.id).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    assert_eq!(e.child.as_ref().unwrap().domain, "c");
    // a and b let go at once; the circuit is aborted.
    nothing_held(&fed).await;
    let got = fed.get("a").idc().get(&r.id).await.unwrap();
    assert_eq!(got.summary(), "aborted");
    // c's orphaned hold ends by c's own timer: when c comes back after the timeout, it
    // is gone.
    tokio::time::sleep(hold.to_std().unwrap() + Duration::from_millis(200)).await;
    fed.get_mut("c").restart().await;
    let c = fed.get("c").idc().clone();
    assert!(
        eventually(WAIT, || async {
            // The row is written before the index lets go (both under the writer): wait
            // for both, as nothing_held reads both.
            c.get(&c_seg).await.unwrap().summary() == "timed-out" && c.indexed_reservations() == 0
        })
        .await,
        "c's hold timed out"
    );
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_known_by_their_certificate_only() {
    // c's certificate comes from another CA: nobody accepts its connections, and it
    // accepts none.
    let fed = TestFederation::line(&["a", "b", "c"])
        .untrusted("c")
        .call_timeout(Duration::from_secs(2))
        .start()
        .await;
    assert!(!fed.exchange(3).await, "c cannot exchange documents");
    let e = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownStp, "{e}");
    assert_eq!(e.field.as_deref(), Some("dst"));
    nothing_held(&fed).await;

    // A client with a certificate from the right CA, but for a domain b does not list:
    // 00302, and nothing reserved.
    let (b_addr, _) = fed.get("b").server().federation.as_ref().unwrap();
    let mallory = fed.ca().material("mallory").unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{b_addr}"))
        .unwrap()
        .tls_config(mallory.client("b"))
        .unwrap()
        .connect()
        .await
        .expect("TLS with a certificate from the federation CA");
    let mut client = v1::federation_client::FederationClient::new(ch);
    let s = client
        .hold_segment(v1::HoldSegmentRequest {
            connection_id: "x".into(),
            criteria: Some(criteria("b:b-a:to-a", "b:core:e1", 100, 60, 1)),
            requester: "a".into(),
        })
        .await
        .unwrap_err();
    let e = from_status(&s);
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
    assert!(e.message.contains("mallory"), "{}", e.message);
    // A field in the request cannot make it someone else: `requester` is only recorded.
    nothing_held(&fed).await;
    fed.shutdown().await;
}

fn weekly(count: u32) -> v1::Recurrence {
    v1::Recurrence {
        rule: Some(v1::recurrence::Rule::Cron(v1::CronRule {
            expression: "0 14 * * 2".into(),
            time_zone: "Europe/Rome".into(),
            from: Some(ts(Utc::now() + TimeDelta::days(1))),
            count: Some(count),
            ..Default::default()
        })),
        duration_seconds: 4 * 3600,
    }
}

async fn reserve_series(
    fed: &TestFederation,
    at: &str,
    c: v1::Criteria,
    r: v1::Recurrence,
) -> Result<v1::Series, Error> {
    let mut client = fed.client(at).await;
    bounded(
        "reserve series",
        client.reserve_series(v1::ReserveSeriesRequest {
            criteria: Some(c),
            recurrence: Some(r),
            ..Default::default()
        }),
    )
    .await
    .map(|r| r.into_inner())
    .map_err(|s| from_status(&s))
}

/// Per domain: its series held for `a`, and the summaries of their occurrences.
async fn domain_series(fed: &TestFederation, s: &v1::Series) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for seg in &s.occurrences[0].segments {
        let idc = fed.get(&seg.domain).idc();
        let (series, occurrences) = idc.get_series(&seg.series_id).await.unwrap();
        assert_eq!(series.owner, "peer:a");
        out.push((
            seg.domain.clone(),
            occurrences
                .iter()
                .map(|r| r.summary().to_string())
                .collect(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_series_is_admitted_by_every_domain_for_every_occurrence() {
    let fed = TestFederation::line(&["a", "b", "c"]).start().await;
    assert!(fed.exchange(4).await);
    let s = reserve_series(
        &fed,
        "a",
        criteria("a:core:e1", "c:core:e1", 2000, 60, 1),
        weekly(10),
    )
    .await
    .expect("ten weeks across three domains");
    assert_eq!(s.occurrences.len(), 10);
    for o in &s.occurrences {
        let domains: Vec<&str> = o.segments.iter().map(|x| x.domain.as_str()).collect();
        assert_eq!(domains, ["a", "b", "c"]);
        assert_eq!(o.states.as_ref().unwrap().summary, "held");
    }
    for (domain, states) in domain_series(&fed, &s).await {
        assert_eq!(states, vec!["held"; 10], "{domain}");
    }

    let mut client = fed.client("a").await;
    let s = client
        .commit_series(v1::IdRequest { id: s.id.clone() })
        .await
        .expect("committed everywhere")
        .into_inner();
    assert!(
        s.occurrences
            .iter()
            .all(|o| o.states.as_ref().unwrap().summary == "committed")
    );
    for (domain, states) in domain_series(&fed, &s).await {
        assert_eq!(states, vec!["committed"; 10], "{domain}");
    }

    // One occurrence off, everywhere.
    let s = client
        .cancel_series(v1::CancelSeriesRequest {
            id: s.id.clone(),
            scope: Some(v1::cancel_series_request::Scope::Occurrence(3)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.occurrences[2].states.as_ref().unwrap().summary,
        "terminated"
    );
    for (domain, states) in domain_series(&fed, &s).await {
        assert_eq!(states[2], "terminated", "{domain}");
        assert_eq!(
            states.iter().filter(|x| *x == "committed").count(),
            9,
            "{domain}"
        );
    }
    // The rest, everywhere.
    let s = client
        .cancel_series(v1::CancelSeriesRequest {
            id: s.id.clone(),
            scope: None,
        })
        .await
        .unwrap()
        .into_inner();
    for (domain, states) in domain_series(&fed, &s).await {
        assert_eq!(states, vec!["terminated"; 10], "{domain}");
    }
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_occurrence_that_does_not_fit_in_one_domain_refuses_the_whole_series() {
    let fed = TestFederation::line(&["a", "b", "c"]).start().await;
    assert!(fed.exchange(4).await);
    // b's border towards c is full during the 7th occurrence.
    let probe = reserve_series(
        &fed,
        "a",
        criteria("a:core:e1", "c:core:e1", 100, 60, 1),
        weekly(10),
    )
    .await
    .unwrap();
    let seventh = probe.occurrences[6].clone();
    let mut a = fed.client("a").await;
    a.cancel_series(v1::CancelSeriesRequest {
        id: probe.id.clone(),
        scope: None,
    })
    .await
    .unwrap();
    let mut b = fed.client("b").await;
    let full = b
        .reserve(v1::ReserveRequest {
            verify_each: None,
            criteria: Some(v1::Criteria {
                start: seventh.start,
                end: seventh.end,
                ..criteria("b:core:e1", "b:b-c:to-c", 10_000, 60, 1)
            }),
        })
        .await
        .unwrap()
        .into_inner();
    b.commit(v1::IdRequest {
        id: full.id.clone(),
    })
    .await
    .unwrap();

    let e = reserve_series(
        &fed,
        "a",
        criteria("a:core:e1", "c:core:e1", 2000, 60, 1),
        weekly(10),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    let child = e.child.as_ref().unwrap();
    assert_eq!(
        (child.domain.as_str(), child.code),
        ("b", ErrorCode::CapacityUnavailable)
    );
    let numbers: Vec<u32> = e.conflicts.iter().map(|c| c.number).collect();
    assert_eq!(numbers, [7], "{e}");
    // With b's own booking gone, nothing is left anywhere.
    b.terminate(v1::IdRequest { id: full.id }).await.unwrap();
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modify_one_domain_refuses_puts_back_the_segments_that_took_it() {
    let fed = TestFederation::line(&["a", "b", "c"])
        .internal("b", 5000)
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap();
    op(&fed, "a", "commit", &r.id).await.unwrap();
    let mut client = fed.client("a").await;
    let e = from_status(
        &client
            .modify(v1::ModifyRequest {
                id: r.id.clone(),
                capacity_mbps: Some(6000),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    let child = e.child.as_ref().expect("names the domain");
    assert_eq!(
        (child.domain.as_str(), child.code),
        ("b", ErrorCode::CapacityUnavailable),
        "{e}"
    );
    for s in &r.segments {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert_eq!(
            seg.bw,
            Mbps(1000),
            "{} is back on the old version",
            s.domain
        );
    }
    let got = op(&fed, "a", "get", &r.id).await.unwrap();
    assert_eq!(got.capacity_mbps, 1000);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_state_changes_reach_the_aggregators_watchers() {
    // The transit domain drives a (mock) agent per node: what they answer reaches the
    // aggregator's watchers too.
    let mut agents = Vec::new();
    let mut urls = std::collections::BTreeMap::new();
    // The fixture's ports of b (see sluice_idc::testing::federation).
    for (node, ports) in [
        ("core", &["e1", "e2", "l-a", "l-c"][..]),
        ("b-a", &["to-a", "l"][..]),
        ("b-c", &["to-c", "l"][..]),
    ] {
        let (a, _) = common::mock_agent(node, ports).await;
        urls.insert(node.to_string(), format!("http://{}", a.addr));
        agents.push(a);
    }
    let fed = TestFederation::line(&["a", "b", "c"])
        .agents("b", sluice_idc::agents::AgentsConfig::new(urls, None))
        .start()
        .await;
    assert!(fed.exchange(4).await);
    // Starts now, provisioned automatically: every domain brings its data plane up.
    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 0, 1))
        .await
        .unwrap();
    let mut client = fed.client("a").await;
    let mut stream = client
        .watch(v1::WatchRequest {
            reservation_id: r.id.clone(),
            since_seq: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    op(&fed, "a", "commit", &r.id).await.unwrap();
    let mut active_in: Vec<String> = Vec::new();
    let mut nodes_in_b: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while active_in.len() < 3 || nodes_in_b.len() < 3 {
        let e = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("segment events within the wait")
            .unwrap()
            .expect("the stream stays open");
        if e.machine == "segment" && e.detail.contains("data_plane") && e.to == "active" {
            let domain = e
                .detail
                .split(" in ")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            active_in.push(domain.to_string());
        }
        // machine node, "segment 2 in b: core: the agent has the circuit"
        if e.machine == "node"
            && e.to == "applied"
            && let Some(rest) = e.detail.strip_prefix("segment 2 in b: ")
            && let Some(node) = rest.strip_suffix(": the agent has the circuit")
        {
            nodes_in_b.push(node.to_string());
        }
    }
    active_in.sort();
    assert_eq!(active_in, ["a", "b", "c"]);
    nodes_in_b.sort();
    assert_eq!(nodes_in_b, ["b-a", "b-c", "core"]);
    // And the circuit shows every segment active.
    let got = op(&fed, "a", "get", &r.id).await.unwrap();
    assert!(
        segment_summaries(&got).iter().all(|(_, s)| s == "active"),
        "{:?}",
        segment_summaries(&got)
    );
    fed.shutdown().await;
    for a in agents {
        a.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_that_answers_too_late_is_aborted_around_and_its_hold_expires_there() {
    let hold = TimeDelta::seconds(2);
    let fed = TestFederation::line(&["a", "b", "c"])
        .hold_timeout(hold)
        .call_timeout(Duration::from_millis(1500))
        .start()
        .await;
    assert!(fed.exchange(4).await);
    // c's store is busy for 3 s: its hold lands long after a stopped waiting.
    let c = fed.get("c").idc().clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let busy = std::thread::spawn(move || {
        let _writer = c.store().writer().unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    locked_rx.recv().unwrap();
    let e = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ChildSegmentError, "{e}");
    assert_eq!(e.child.as_ref().unwrap().domain, "c", "{e}");
    busy.join().unwrap();
    // a and b let go at once. c's hold lands once its store is free, after a stopped
    // waiting, and ends by c's own timer.
    let c = fed.get("c").idc().clone();
    let late_hold_timed_out = || async {
        let (all, _) = c.list(Default::default()).await.unwrap();
        // The row is written before the index lets go: wait for both.
        all.len() == 1 && all[0].summary() == "timed-out" && c.indexed_reservations() == 0
    };
    assert!(
        eventually(WAIT, late_hold_timed_out).await,
        "the late hold landed in c and timed out there"
    );
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_whose_domain_was_down_at_terminate_is_ended_when_it_comes_back() {
    let mut fed = TestFederation::line(&["a", "b", "c"])
        .call_timeout(Duration::from_secs(2))
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap();
    op(&fed, "a", "commit", &r.id).await.unwrap();
    let c_seg = r.segments[2].id.clone();
    fed.kill("c").await;
    // The circuit ends; c's segment cannot be told and says so.
    let t = op(&fed, "a", "terminate", &r.id).await.unwrap();
    assert_eq!(summary(&t), "terminated");
    assert!(!t.segments[2].error.is_empty(), "{:?}", t.segments[2]);
    assert_eq!(t.segments[2].states.as_ref().unwrap().summary, "committed");
    // c comes back (same address, same database): the next exchange ends it there.
    fed.get_mut("c").restart().await;
    assert_eq!(
        fed.get("c").idc().get(&c_seg).await.unwrap().summary(),
        "committed"
    );
    fed.exchange(1).await;
    assert_eq!(
        fed.get("c").idc().get(&c_seg).await.unwrap().summary(),
        "terminated"
    );
    let got = op(&fed, "a", "get", &r.id).await.unwrap();
    assert!(
        segment_summaries(&got)
            .iter()
            .all(|(_, s)| s == "terminated"),
        "{:?}",
        segment_summaries(&got)
    );
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_committed_for_a_circuit_that_never_committed_are_ended() {
    // As if a stopped after its segments committed and before it committed the circuit:
    // the segments are committed in every domain, the circuit's hold runs out.
    let hold = TimeDelta::seconds(2);
    let fed = TestFederation::line(&["a", "b", "c"])
        .hold_timeout(hold)
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap();
    for s in &r.segments {
        fed.get(&s.domain).idc().commit(&s.id).await.unwrap();
    }
    let a = fed.get("a").idc().clone();
    let id = r.id.clone();
    assert!(
        eventually(WAIT, || async {
            a.get(&id).await.unwrap().summary() == "timed-out"
        })
        .await,
        "the circuit's own hold ran out"
    );
    fed.exchange(1).await;
    for s in &r.segments {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert_eq!(seg.summary(), "terminated", "{}", s.domain);
    }
    nothing_held(&fed).await;
    fed.shutdown().await;
}

/// A federation client to `to`'s IDC that presents `as_domain`'s certificate.
async fn peer_client(
    fed: &TestFederation,
    to: &str,
    as_domain: &str,
) -> v1::federation_client::FederationClient<tonic::transport::Channel> {
    let (addr, _) = fed.get(to).server().federation.as_ref().unwrap();
    let tls = fed.ca().material(as_domain).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls.client(to))
        .unwrap()
        .connect()
        .await
        .unwrap();
    v1::federation_client::FederationClient::new(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_can_touch_only_what_is_its_own_and_only_a_direct_peer_passes_documents_on() {
    let fed = TestFederation::line(&["a", "b", "c"]).start().await;
    assert!(fed.exchange(4).await);
    let r = reserve(&fed, "a", criteria("a:core:e1", "c:core:e1", 1000, 60, 1))
        .await
        .unwrap();
    let b_seg = r.segments[1].id.clone();
    // c is a listed peer of b, but the segment is a's.
    let mut as_c = peer_client(&fed, "b", "c").await;
    for e in [
        as_c.commit_segment(v1::IdRequest { id: b_seg.clone() })
            .await
            .unwrap_err(),
        as_c.terminate_segment(v1::IdRequest { id: b_seg.clone() })
            .await
            .unwrap_err(),
        as_c.query_segment(v1::IdRequest { id: b_seg.clone() })
            .await
            .unwrap_err(),
    ] {
        let e = from_status(&e);
        assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
    }
    let seg = fed.get("b").idc().get(&b_seg).await.unwrap();
    assert_eq!(seg.summary(), "held", "untouched");

    // Documents: only a direct peer may pass them on, and never with a clear-text address.
    let (_, a_fed) = fed.get("a").server().federation.as_ref().unwrap();
    let mut forged = sluice_proto::federation::document(
        &a_fed
            .known_documents()
            .into_iter()
            .find(|(d, _)| d.domain == "c")
            .unwrap()
            .0,
    );
    forged.version = u64::MAX;
    forged.url = "http://127.0.0.1:9".into();
    let mut as_c = peer_client(&fed, "a", "c").await;
    let e = from_status(
        &as_c
            .push_documents(v1::Documents {
                documents: vec![forged.clone()],
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.code,
        ErrorCode::Unauthorized,
        "c is not a's direct peer: {e}"
    );
    let mut as_b = peer_client(&fed, "a", "b").await;
    let e = from_status(
        &as_b
            .push_documents(v1::Documents {
                documents: vec![forged],
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(e.field.as_deref(), Some("documents[0].url"), "{e}");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_of_peers_are_kept_for_peers() {
    let fed = TestFederation::line(&["a", "b"]).start().await;
    let mut client = fed.client("a").await;
    let mut req = tonic::Request::new(v1::ReserveRequest {
        verify_each: None,
        criteria: Some(criteria("a:core:e1", "a:core:e2", 10, 60, 1)),
    });
    req.metadata_mut()
        .insert(sluice_proto::USER_HEADER, "peer:b".parse().unwrap());
    let e = from_status(&client.reserve(req).await.unwrap_err());
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidParameter, Some("user"))
    );
    nothing_held(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_one_domain_cannot_take_is_turned_back_everywhere_and_can_be_retried() {
    let mut fed = TestFederation::line(&["a", "b", "c"])
        .call_timeout(Duration::from_secs(2))
        .start()
        .await;
    assert!(fed.exchange(4).await);
    let mut c = criteria("a:core:e1", "c:core:e1", 1000, 0, 1);
    c.provision_mode = v1::ProvisionMode::Manual as i32;
    let r = reserve(&fed, "a", c).await.unwrap();
    op(&fed, "a", "commit", &r.id).await.unwrap();
    fed.kill("c").await;
    let e = op(&fed, "a", "provision", &r.id).await.unwrap_err();
    assert_eq!(e.child.as_ref().unwrap().domain, "c", "{e}");
    for s in &r.segments[..2] {
        let seg = fed.get(&s.domain).idc().get(&s.id).await.unwrap();
        assert!(!seg.states.data_plane_active, "{} turned back", s.domain);
    }
    let circuit = fed.get("a").idc().get(&r.id).await.unwrap();
    assert_eq!(
        circuit.summary(),
        "committed",
        "the circuit stays as it was"
    );
    // c back: the same call goes through.
    fed.get_mut("c").restart().await;
    let p = op(&fed, "a", "provision", &r.id)
        .await
        .expect("provisioned");
    assert_eq!(summary(&p), "active");
    assert!(
        segment_summaries(&p).iter().all(|(_, s)| s == "active"),
        "{:?}",
        segment_summaries(&p)
    );
    fed.shutdown().await;
}
