//! The in-memory index is a cache of the store, not the truth: an IDC whose index missed
//! a booking (here: a second IDC on the same database, which built its index before the
//! first one booked) may plan a path that no longer fits, and the store's re-check then
//! refuses it. The IDC then reloads what the plan touched from the store and plans once
//! more; nothing is over-booked or half-written.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_idc::Idc;
use sluice_idc::clock::SystemClock;
use sluice_model::{Criteria, Ero, ErrorCode, Mbps, StpRequest, TimeWindow};

fn criteria(bw: u64) -> Criteria {
    // Whole seconds: the store keeps milliseconds.
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let end = |s: &str| StpRequest::parse(s).unwrap();
    Criteria {
        src: end("internet2:houston:xe-0/0/0"),
        dst: end("internet2:new-york:xe-0/0/0"),
        bw: Mbps(bw),
        bw_reverse: None,
        window: TimeWindow::new(now + TimeDelta::hours(1), now + TimeDelta::hours(3)).unwrap(),
        ero: Ero::default(),
        description: String::new(),
        auto_provision: false,
    }
}

#[tokio::test]
async fn a_stale_index_costs_a_retry_never_an_overbooking() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Arc::new(sluice_idc::topology_file::bundled());
    let open = || {
        Idc::open(
            topo.clone(),
            dir.path(),
            Arc::new(SystemClock),
            TimeDelta::seconds(120),
        )
        .unwrap()
    };
    let first = open();
    let stale = open();
    let c = criteria(8_000);

    let r = first.reserve("alice", c.clone()).await.unwrap();
    first.commit(&r.id).await.unwrap();

    // The stale index still sees 10 Gb/s free on the end ports; the store does not. The
    // answer is the one a fresh index gives: what fits, and from when all of it would.
    let e = stale.reserve("bob", c.clone()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{e}");
    assert_eq!(e.earliest_start, Some(c.window.end), "{e}");
    let fb = e.capacity.expect("feedback");
    assert_eq!((fb.requested, fb.available), (Mbps(8_000), Mbps(2_000)));
    assert_eq!(
        stale.store().count_reservations().unwrap(),
        1,
        "the refused request wrote nothing"
    );

    // The retry with what the store says is free goes through, on the stale IDC too.
    let smaller = Criteria {
        bw: fb.available,
        ..c.clone()
    };
    let r2 = stale.reserve("bob", smaller).await.unwrap();
    stale.commit(&r2.id).await.unwrap();
    // Now the ports are full; neither IDC can add a megabit, whatever its index says.
    for idc in [&first, &stale] {
        let e = idc.reserve("carol", criteria(1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{e}");
    }
    assert_eq!(first.store().count_reservations().unwrap(), 2);

    // A fresh IDC builds its index from the store: it knows both bookings, and says when
    // the ports free up.
    let fresh = open();
    let e = fresh
        .compute_paths(criteria(1), 0, false)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{e}");
    assert_eq!(e.earliest_start, Some(c.window.end), "{e}");
}
