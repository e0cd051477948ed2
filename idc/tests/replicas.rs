//! Several IDC replicas of one domain on one PostgreSQL database, each a real server on
//! 127.0.0.1:0 in this process: admission stays exact under concurrent conflicting
//! requests spread over both, Watch and the index of one see what the other wrote,
//! and timers fire once, taken over by the survivor when a replica stops.
//!
//! Skipped (with a note) without `SLUICE_TEST_POSTGRES`; CI sets it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_idc::testing::{TestDatabase, TestIdc, eventually};
use sluice_model::topology::fixture;
use sluice_model::{Direction, ErrorCode, Topology};
use sluice_proto::convert::timestamp as ts;
use sluice_proto::status::from_status;
use sluice_proto::v1;
use sluice_proto::v1::reservations_client::ReservationsClient;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

/// a-b-d is short, a-c-d is long; all 100 Mb/s.
fn diamond() -> Topology {
    fixture::from_links(
        "d",
        &[
            ("a", "b", 100, 1),
            ("b", "d", 100, 1),
            ("a", "c", 100, 5),
            ("c", "d", 100, 5),
        ],
        1000,
    )
}

fn crit(bw: i64, start: DateTime<Utc>, end: DateTime<Utc>) -> v1::Criteria {
    v1::Criteria {
        src: "d:a:p0".into(),
        dst: "d:d:p0".into(),
        capacity_mbps: bw,
        start: Some(ts(start)),
        end: Some(ts(end)),
        provision_mode: v1::ProvisionMode::Manual as i32,
        ..Default::default()
    }
}

fn req<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert(sluice_proto::USER_HEADER, "alice".parse().unwrap());
    r
}

async fn replicas(db: &TestDatabase, hold: TimeDelta) -> (TestIdc, TestIdc) {
    let start = || {
        TestIdc::builder()
            .topology(diamond())
            .hold_timeout(hold)
            .database(db.url())
            .start()
    };
    let a = start().await;
    let b = start().await;
    (a, b)
}

/// Reserve then commit; the answer's code if either is refused.
async fn book(
    mut c: ReservationsClient<Channel>,
    criteria: v1::Criteria,
) -> Result<String, ErrorCode> {
    let held = c
        .reserve(req(v1::ReserveRequest {
            criteria: Some(criteria),
            verify_each: None,
        }))
        .await
        .map_err(|s| from_status(&s).code)?
        .into_inner();
    c.commit(req(v1::IdRequest {
        id: held.id.clone(),
    }))
    .await
    .map_err(|s| from_status(&s).code)?;
    Ok(held.id)
}

/// The highest total booked at any instant on each resource direction, from the rows
/// of the shared store, with its capacity in the topology.
fn peaks(t: &TestIdc) -> Vec<(String, String, u64, u64)> {
    let topo = t.idc().topology().clone();
    let mut by: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
    for r in t.idc().store().all_bandwidth_bookings().unwrap() {
        by.entry((r.resource.clone(), r.direction.clone()))
            .or_default()
            .extend([(r.start_ms, r.bw_mbps), (r.end_ms, -r.bw_mbps)]);
    }
    by.into_iter()
        .map(|((resource, direction), mut deltas)| {
            // Ends before starts at the same instant: [s, e) windows.
            deltas.sort_by_key(|&(t, d)| (t, d));
            let (mut level, mut peak) = (0i64, 0i64);
            for (_, d) in deltas {
                level += d;
                peak = peak.max(level);
            }
            let dir = Direction::parse(&direction).unwrap();
            let res = topo.resource_by_key(&resource, dir).unwrap();
            (resource, direction, peak as u64, topo.capacity(res).0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_take_500_concurrent_conflicting_requests_without_overbooking() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let (a, b) = replicas(&db, TimeDelta::seconds(120)).await;
    let clients = [a.client().await, b.client().await];
    let base = a.idc().now() + TimeDelta::days(1);
    // Ten one-hour slots; in each, two 100 Mb/s paths take five 20 Mb/s circuits each:
    // 100 of the 500 fit.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..500usize {
        let slot = (n % 10) as i64;
        let start = base + TimeDelta::hours(slot);
        let c = clients[n % 2].clone();
        tasks.spawn(book(c, crit(20, start, start + TimeDelta::hours(1))));
    }
    let (mut admitted, mut refused) = (0, 0);
    let answers = tokio::time::timeout(WAIT * 3, async {
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(_) => admitted += 1,
                Err(ErrorCode::CapacityUnavailable | ErrorCode::NoPathFound) => refused += 1,
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
    })
    .await;
    assert!(answers.is_ok(), "every request answered within the bound");
    assert_eq!(admitted + refused, 500, "every request got an answer");
    // Bookings only accumulate here, so the indexes can only miss bookings (never
    // show too many): every refusal is real, and exactly the capacity is booked.
    assert_eq!(admitted, 100, "ten per slot");
    for (resource, direction, peak, capacity) in peaks(&a) {
        assert!(
            peak <= capacity,
            "{resource} {direction}: {peak} Mb/s booked at once on {capacity}"
        );
    }
    assert_eq!(b.idc().store().count_reservations().unwrap(), 100);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_books_reaches_the_others_watch_and_index() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let (a, b) = replicas(&db, TimeDelta::seconds(120)).await;
    let mut on_b = b.client().await;
    let mut watch = on_b
        .watch(req(v1::WatchRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let base = a.idc().now() + TimeDelta::days(1);
    let id = book(a.client().await, crit(60, base, base + TimeDelta::hours(1)))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("an event on the other replica's Watch")
            .unwrap()
            .unwrap();
        assert_eq!(e.reservation_id, id);
        seen.push(e.to);
    }
    assert_eq!(seen[0], "ReserveHeld");
    assert!(
        eventually(WAIT, || async { b.idc().indexed_reservations() == 1 }).await,
        "B's index took A's booking"
    );
    // B plans around it at once: 60 + 60 does not fit a-b-d, so B takes a-c-d.
    let second = book(on_b.clone(), crit(60, base, base + TimeDelta::hours(1)))
        .await
        .unwrap();
    let r = on_b
        .get(req(v1::IdRequest { id: second }))
        .await
        .unwrap()
        .into_inner();
    let nodes: Vec<&str> = r.path.iter().map(|h| h.to.as_str()).collect();
    assert!(nodes.contains(&"c"), "took the long way: {nodes:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_times_out_once_and_the_survivor_takes_over_the_timers() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let (a, b) = replicas(&db, TimeDelta::seconds(2)).await;
    let base = a.idc().now() + TimeDelta::days(1);
    let hold = |c: ReservationsClient<Channel>| async move {
        let mut c = c;
        c.reserve(req(v1::ReserveRequest {
            criteria: Some(crit(10, base, base + TimeDelta::hours(1))),
            verify_each: None,
        }))
        .await
        .unwrap()
        .into_inner()
        .id
    };
    let timeouts = |t: &TestIdc, id: String| {
        let store = t.idc().store();
        store
            .events_after(0, Some(&id), 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.change.to == "ReserveTimeout")
            .count()
    };
    // Both replicas run: both find the hold due; it times out once.
    let first = hold(a.client().await).await;
    assert!(
        eventually(WAIT, || async { timeouts(&b, first.clone()) > 0 }).await,
        "the hold timed out"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(timeouts(&b, first), 1, "one timeout, not one per replica");

    // A holds, then stops before the hold ends: B times it out.
    let second = hold(a.client().await).await;
    a.shutdown().await;
    assert!(
        eventually(WAIT, || async { timeouts(&b, second.clone()) == 1 }).await,
        "the survivor timed out the stopped replica's hold"
    );
    b.shutdown().await;
}
