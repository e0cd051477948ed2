//! Recurring bookings through the IDC, on a virtual clock: all-or-nothing admission, the
//! conflicting occurrence reported, `skip_conflicts`, commit, cancelling one occurrence
//! or everything from a date on, the scheduler running each occurrence, and a restart
//! in the middle of one.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sluice_idc::Idc;
use sluice_idc::clock::ManualClock;
use sluice_idc::service::{SeriesAsk, SeriesChange, SeriesScope};
use sluice_model::topology::fixture;
use sluice_model::{
    Criteria, Ero, ErrorCode, LifecycleState, Mbps, ProvisionState, Recurrence, RecurrenceRule,
    ReservationState, StpRequest, TimeWindow, Topology,
};

/// A Monday morning in Rome.
fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// a-b-d short, a-c-d long, 1 Gb/s each.
fn diamond() -> Arc<Topology> {
    Arc::new(fixture::from_links(
        "d",
        &[
            ("a", "b", 1000, 1),
            ("b", "d", 1000, 1),
            ("a", "c", 1000, 5),
            ("c", "d", 1000, 5),
        ],
        10_000,
    ))
}

fn criteria(bw: u64, window: TimeWindow) -> Criteria {
    Criteria {
        src: StpRequest::parse("d:a:p0").unwrap(),
        dst: StpRequest::parse("d:d:p0").unwrap(),
        bw: Mbps(bw),
        bw_reverse: None,
        window,
        ero: Ero::default(),
        description: "weekly run".into(),
        auto_provision: true,
    }
}

/// Every Tuesday 14:00-18:00 Europe/Rome, ten times, from Tuesday 2026-12-01.
fn tuesdays() -> Recurrence {
    Recurrence {
        rule: RecurrenceRule::ICalendar(
            "DTSTART;TZID=Europe/Rome:20261201T140000\nRRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=10".into(),
        ),
        duration: TimeDelta::hours(4),
    }
}

fn ask(bw: u64, skip_conflicts: bool) -> SeriesAsk {
    SeriesAsk {
        criteria: criteria(
            bw,
            TimeWindow::new(start(), start() + TimeDelta::hours(1)).unwrap(),
        ),
        recurrence: tuesdays(),
        same_path: true,
        skip_conflicts,
    }
}

/// The 7th Tuesday (2027-01-12) 13:00-17:00 UTC.
fn seventh() -> TimeWindow {
    let day = NaiveDate::from_ymd_opt(2027, 1, 12).unwrap();
    let at = |h| day.and_hms_opt(h, 0, 0).unwrap().and_utc();
    TimeWindow::new(at(13), at(17)).unwrap()
}

struct World {
    idc: Idc,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let idc = Idc::open(
        diamond(),
        dir.path(),
        Arc::new(clock),
        TimeDelta::seconds(120),
    )
    .unwrap();
    World { idc, _dir: dir }
}

/// Fills both paths during the 7th occurrence: 900 Mb/s on each.
async fn block_the_seventh(w: &World) {
    for _ in 0..2 {
        let r = w
            .idc
            .reserve("other", criteria(900, seventh()))
            .await
            .unwrap();
        w.idc.commit(&r.id).await.unwrap();
    }
}

#[tokio::test]
async fn the_seventh_occurrence_conflicts_so_nothing_is_booked_and_it_is_reported() {
    let w = world();
    block_the_seventh(&w).await;
    let before = w.idc.store().count_reservations().unwrap();
    let e = w
        .idc
        .reserve_series("alice", ask(500, false))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{e}");
    assert_eq!(e.field.as_deref(), Some("recurrence"));
    assert_eq!(e.conflicts.len(), 1, "{e}");
    let c = &e.conflicts[0];
    assert_eq!(
        (c.number, c.start, c.end),
        (7, seventh().start, seventh().end)
    );
    assert_eq!(
        c.reason.capacity.as_ref().map(|f| f.available),
        Some(Mbps(100))
    );
    assert_eq!(c.reason.earliest_start, Some(seventh().end), "{e}");
    assert!(c.alternative.is_none(), "nothing fits the 7th anywhere");
    assert!(e.message.contains("#7"), "{e}");
    assert_eq!(
        w.idc.store().count_reservations().unwrap(),
        before,
        "nothing was booked"
    );
}

#[tokio::test]
async fn skip_conflicts_books_the_rest_and_records_the_skipped_date() {
    let w = world();
    block_the_seventh(&w).await;
    let (series, held) = w.idc.reserve_series("alice", ask(500, true)).await.unwrap();
    let numbers: Vec<u32> = held
        .iter()
        .map(|r| r.series.as_ref().unwrap().occurrence)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 8, 9, 10]);
    assert_eq!(series.skipped.len(), 1);
    assert_eq!(
        (series.skipped[0].number, series.skipped[0].window),
        (7, seventh())
    );
    assert_eq!(series.skipped[0].code, "00705");
    // 14:00 Rome every time: 13:00 UTC in winter.
    assert!(
        held.iter()
            .all(|r| r.window.start.format("%H:%M").to_string() == "13:00")
    );
    assert!(
        held.iter()
            .all(|r| r.states.reservation == ReservationState::ReserveHeld)
    );
    // What the store gives back is what was admitted.
    let (stored, occurrences) = w.idc.get_series(&series.id).await.unwrap();
    assert_eq!(stored, series);
    assert_eq!(occurrences, held);
}

#[tokio::test]
async fn commit_cancel_one_and_cancel_from_a_date_on() {
    let w = world();
    let (series, _) = w
        .idc
        .reserve_series("alice", ask(500, false))
        .await
        .unwrap();
    let (_, all) = w.idc.commit_series(&series.id).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(
        all.iter()
            .all(|r| r.states.reservation == ReservationState::ReserveStart
                && r.committed_version.is_some())
    );
    // A second series of 500 fits on the short path too (1000 Mb/s); a third goes whole
    // onto the long one; a fourth fits nowhere, on any Tuesday.
    let (second, _) = w.idc.reserve_series("bob", ask(500, false)).await.unwrap();
    w.idc.commit_series(&second.id).await.unwrap();
    let (_, third) = w
        .idc
        .reserve_series("carol", ask(500, false))
        .await
        .unwrap();
    assert!(
        third.iter().all(|r| r.path[0].to == "c"),
        "{:?}",
        third[0].path
    );
    let e = w
        .idc
        .reserve_series("dave", ask(600, false))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{e}");
    assert_eq!(e.conflicts.len(), 10, "{e}");

    // Cancelling the 3rd of the first frees exactly that Tuesday.
    let (_, all) = w
        .idc
        .cancel_series(&series.id, SeriesScope::One(3))
        .await
        .unwrap();
    let terminated: Vec<u32> = all
        .iter()
        .filter(|r| r.states.lifecycle == LifecycleState::Terminated)
        .map(|r| r.series.as_ref().unwrap().occurrence)
        .collect();
    assert_eq!(terminated, [3]);
    // From the 8th on (2027-01-19).
    let eighth = all[7].window.start;
    let (_, all) = w
        .idc
        .cancel_series(&series.id, SeriesScope::From(eighth))
        .await
        .unwrap();
    let terminated: Vec<u32> = all
        .iter()
        .filter(|r| r.states.lifecycle == LifecycleState::Terminated)
        .map(|r| r.series.as_ref().unwrap().occurrence)
        .collect();
    assert_eq!(terminated, [3, 8, 9, 10]);
    let e = w
        .idc
        .cancel_series(&series.id, SeriesScope::One(11))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidParameter, Some("occurrence"))
    );
    let e = w.idc.get_series("d-nonesuch").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ReservationNonexistent);
}

#[tokio::test]
async fn the_scheduler_runs_each_occurrence_and_catches_up_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let open = || {
        Idc::open(
            diamond(),
            dir.path(),
            Arc::new(clock.clone()),
            TimeDelta::seconds(120),
        )
        .unwrap()
    };
    let idc = open();
    let (series, held) = idc.reserve_series("alice", ask(500, false)).await.unwrap();
    idc.commit_series(&series.id).await.unwrap();
    let state = |idc: &Idc, n: usize| {
        let id = held[n].id.clone();
        let idc = idc.clone();
        async move { idc.get(&id).await.unwrap() }
    };
    // At the first start: up. At its end: released, the second still waiting.
    clock.set(held[0].window.start);
    idc.tick().await.unwrap();
    let first = state(&idc, 0).await;
    assert!(first.states.data_plane_active);
    assert_eq!(first.states.provision, ProvisionState::Provisioned);
    clock.set(held[0].window.end);
    idc.tick().await.unwrap();
    assert!(!state(&idc, 0).await.states.data_plane_active);
    assert!(!state(&idc, 1).await.states.data_plane_active);
    // Down during the second Tuesday's start; back an hour into it: it comes up at once.
    drop(idc);
    clock.set(held[1].window.start + TimeDelta::hours(1));
    let idc = open();
    idc.tick().await.unwrap();
    assert!(state(&idc, 1).await.states.data_plane_active, "caught up");
    assert!(!state(&idc, 2).await.states.data_plane_active);
    // Down from the second's end until after the third's: the second is closed as it
    // should be, the third recorded as missed, the fourth waits for its start.
    clock.set(held[1].window.end);
    idc.tick().await.unwrap();
    drop(idc);
    clock.set(held[2].window.end + TimeDelta::hours(2));
    let idc = open();
    idc.tick().await.unwrap();
    let (second, third, fourth) = (
        state(&idc, 1).await,
        state(&idc, 2).await,
        state(&idc, 3).await,
    );
    assert_eq!((second.summary(), second.missed), ("ended", false));
    assert_eq!((third.summary(), third.missed), ("missed", true));
    assert_eq!(third.states.lifecycle, LifecycleState::PassedEndTime);
    assert_eq!(fourth.summary(), "committed");
    let events = idc.events_after(0, Some(third.id.clone())).await.unwrap();
    let closed = events
        .iter()
        .find(|e| e.reservation_id == third.id && e.change.to == "PassedEndTime")
        .expect("the third's end is recorded");
    assert_eq!(
        closed.change.effective_at, held[2].window.end,
        "dated at its end, not the restart"
    );
    assert!(
        closed.change.detail.starts_with("missed"),
        "{:?}",
        closed.change.detail
    );
}

fn bw(mbps: u64) -> SeriesChange {
    SeriesChange {
        bw: Some(Mbps(mbps)),
        ..Default::default()
    }
}

#[tokio::test]
async fn modify_from_a_date_on_is_all_or_nothing() {
    let w = world();
    let (series, _) = w
        .idc
        .reserve_series("alice", ask(500, false))
        .await
        .unwrap();
    let (_, all) = w.idc.commit_series(&series.id).await.unwrap();
    // Someone takes 450 of the short path's 1000 during the 9th occurrence.
    let r = w
        .idc
        .reserve("other", criteria(450, all[8].window))
        .await
        .unwrap();
    w.idc.commit(&r.id).await.unwrap();
    let eighth = SeriesScope::From(all[7].window.start);
    let e = w
        .idc
        .modify_series(&series.id, eighth, bw(600))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{e}");
    let numbers: Vec<u32> = e.conflicts.iter().map(|c| c.number).collect();
    assert_eq!(numbers, [9], "{e}");
    assert_eq!(
        e.conflicts[0].reason.capacity.as_ref().unwrap().available,
        Mbps(550)
    );
    let (_, unchanged) = w.idc.get_series(&series.id).await.unwrap();
    assert!(
        unchanged
            .iter()
            .all(|r| r.bw == Mbps(500) && r.version == 1),
        "nothing changed"
    );
    // What fits goes through, from the 8th on only.
    let (_, after) = w
        .idc
        .modify_series(&series.id, eighth, bw(550))
        .await
        .unwrap();
    let bws: Vec<u64> = after.iter().map(|r| r.bw.0).collect();
    assert_eq!(bws, [500, 500, 500, 500, 500, 500, 500, 550, 550, 550]);
    // One occurrence alone.
    let (_, after) = w
        .idc
        .modify_series(&series.id, SeriesScope::One(2), bw(900))
        .await
        .unwrap();
    assert_eq!(after[1].bw, Mbps(900));
    assert_eq!(after[1].version, 2);
    // An hour later from the 8th on: 15:00-19:00 Rome, 14:00-18:00 UTC.
    let shift = SeriesChange {
        shift: Some(TimeDelta::hours(1)),
        ..Default::default()
    };
    let (_, moved) = w
        .idc
        .modify_series(&series.id, eighth, shift)
        .await
        .unwrap();
    let hours: Vec<String> = moved
        .iter()
        .map(|r| r.window.start.format("%H").to_string())
        .collect();
    assert_eq!(
        hours,
        ["13", "13", "13", "13", "13", "13", "13", "14", "14", "14"]
    );
    assert!(
        moved
            .iter()
            .all(|r| r.window.end - r.window.start == TimeDelta::hours(4))
    );
    let back = SeriesChange {
        shift: Some(TimeDelta::hours(-1)),
        ..Default::default()
    };
    w.idc.modify_series(&series.id, eighth, back).await.unwrap();
    // The index agrees with the store: the short path's 9th Tuesday is now full.
    let e = w.idc.reserve("x", criteria(1, all[8].window)).await;
    assert!(e.is_ok(), "the long path still has room");
    let e = w
        .idc
        .reserve("y", criteria(1000, all[8].window))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable);
}

mod sequences {
    //! Any sequence of series operations: no link or port is ever booked over capacity
    //! at any instant (checked on the store's rows), and every occurrence of every
    //! request is either booked or reported, never silently dropped.

    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;
    use sluice_model::Direction;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// bw, weekday (0 Mon), hour, count, allow path change, skip conflicts
        Reserve(u64, u8, u32, u32, bool, bool),
        Commit(usize),
        Cancel(usize, Option<u32>),
        Modify(usize, Option<u32>, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (prop::sample::select(vec![200u64, 450, 600, 900]), 0u8..3, prop::sample::select(vec![10u32, 12, 14]), 1u32..6, any::<bool>(), any::<bool>())
                .prop_map(|(bw, d, h, n, a, s)| Op::Reserve(bw, d, h, n, a, s)),
            2 => any::<usize>().prop_map(Op::Commit),
            1 => (any::<usize>(), prop::option::of(1u32..6)).prop_map(|(i, n)| Op::Cancel(i, n)),
            1 => (any::<usize>(), prop::option::of(1u32..6), prop::sample::select(vec![100u64, 500, 800])).prop_map(|(i, n, bw)| Op::Modify(i, n, bw)),
        ]
    }

    const DAYS: [&str; 3] = ["MO", "TU", "WE"];

    fn recurrence(day: u8, hour: u32, count: u32) -> Recurrence {
        Recurrence {
            rule: RecurrenceRule::ICalendar(format!(
                "DTSTART;TZID=Europe/Rome:20261130T{hour:02}0000\nRRULE:FREQ=WEEKLY;BYDAY={};COUNT={count}",
                DAYS[day as usize]
            )),
            duration: TimeDelta::hours(3),
        }
    }

    /// The peak of every resource direction over all time, from the store's rows.
    fn over_booked(idc: &Idc, topo: &Topology, now_ms: i64) -> Option<String> {
        let rows = idc.store().all_bandwidth_bookings().unwrap();
        let mut by: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
        for r in rows
            .iter()
            .filter(|r| r.hold_expires_ms.is_none_or(|h| h > now_ms))
        {
            let e = by
                .entry((r.resource.clone(), r.direction.clone()))
                .or_default();
            e.push((r.start_ms, r.bw_mbps));
            e.push((r.end_ms, -r.bw_mbps));
        }
        for ((resource, dir), mut deltas) in by {
            deltas.sort();
            let dir = if dir == "forward" {
                Direction::Forward
            } else {
                Direction::Reverse
            };
            let cap = topo
                .resource_by_key(&resource, dir)
                .map(|r| topo.capacity(r).0 as i64)?;
            let mut level = 0;
            for (_, d) in deltas {
                level += d;
                if level > cap {
                    return Some(format!("{resource} {dir:?}: {level} > {cap}"));
                }
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn series_operations_never_overbook_and_account_for_every_occurrence(ops in prop::collection::vec(op(), 1..14)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let topo = diamond();
                let idc = Idc::open(topo.clone(), dir.path(), Arc::new(ManualClock::new(start())), TimeDelta::seconds(120)).unwrap();
                let mut series: Vec<String> = Vec::new();
                for op in ops {
                    match op {
                        Op::Reserve(bw, day, hour, count, allow, skip) => {
                            let before = idc.store().count_reservations().unwrap();
                            let a = SeriesAsk {
                                criteria: criteria(bw, TimeWindow::new(start(), start() + TimeDelta::hours(1)).unwrap()),
                                recurrence: recurrence(day, hour, count),
                                same_path: !allow,
                                skip_conflicts: skip,
                            };
                            let all: BTreeSet<u32> = (1..=count).collect();
                            match idc.reserve_series("p", a).await {
                                Ok((s, held)) => {
                                    let booked: BTreeSet<u32> = held.iter().map(|r| r.series.as_ref().unwrap().occurrence).collect();
                                    let skipped: BTreeSet<u32> = s.skipped.iter().map(|k| k.number).collect();
                                    prop_assert!(booked.is_disjoint(&skipped));
                                    prop_assert_eq!(booked.union(&skipped).copied().collect::<BTreeSet<_>>(), all, "every occurrence booked or skipped");
                                    prop_assert!(skip || skipped.is_empty());
                                    if !allow {
                                        let paths: BTreeSet<Vec<String>> = held.iter().map(|r| r.path.iter().map(|h| h.link.clone()).collect()).collect();
                                        prop_assert_eq!(paths.len(), 1, "one path for the series");
                                    }
                                    series.push(s.id);
                                }
                                Err(e) => {
                                    // Room (00705), or the series' VLAN taken on its path (00704).
                                    prop_assert!(matches!(e.code, ErrorCode::CapacityUnavailable | ErrorCode::StpUnavailable), "{}", e);
                                    let reported: BTreeSet<u32> = e.conflicts.iter().map(|c| c.number).collect();
                                    prop_assert!(!reported.is_empty() && reported.is_subset(&all), "{}", e);
                                    prop_assert!(!skip || reported == all, "skip refuses only when nothing fits: {}", e);
                                    prop_assert_eq!(idc.store().count_reservations().unwrap(), before, "a refused series writes nothing");
                                }
                            }
                        }
                        Op::Commit(i) if !series.is_empty() => {
                            idc.commit_series(&series[i % series.len()]).await.unwrap();
                        }
                        Op::Cancel(i, n) if !series.is_empty() => {
                            let scope = n.map_or(SeriesScope::All, SeriesScope::One);
                            let r = idc.cancel_series(&series[i % series.len()], scope).await;
                            prop_assert!(r.is_ok() || n.is_some(), "{:?}", r.err());
                        }
                        Op::Modify(i, n, bw) if !series.is_empty() => {
                            let scope = n.map_or(SeriesScope::All, SeriesScope::One);
                            let id = &series[i % series.len()];
                            let (_, before) = idc.get_series(id).await.unwrap();
                            match idc.modify_series(id, scope, super::bw(bw)).await {
                                Ok((_, after)) => {
                                    for (b, a) in before.iter().zip(&after) {
                                        let changed = a.version != b.version;
                                        prop_assert!(!changed || a.bw == Mbps(bw));
                                        prop_assert!(changed || a.bw == b.bw);
                                    }
                                }
                                Err(_) => {
                                    let (_, same) = idc.get_series(id).await.unwrap();
                                    prop_assert_eq!(same, before, "a refused modify changes nothing");
                                }
                            }
                        }
                        _ => {}
                    }
                    if let Some(why) = over_booked(&idc, &topo, start().timestamp_millis()) {
                        prop_assert!(false, "over-booked: {}", why);
                    }
                }
                Ok(())
            })?;
        }
    }
}
