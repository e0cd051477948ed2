//! Recurring bookings through the IDC, on a virtual clock: all-or-nothing admission, the
//! conflicting occurrence reported, `skip_conflicts`, commit, cancelling one occurrence
//! or everything from a date on, the scheduler running each occurrence, and a restart
//! in the middle of one.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sluice_idc::Idc;
use sluice_idc::clock::ManualClock;
use sluice_idc::service::{SeriesAsk, SeriesScope};
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
        .modify_series(&series.id, eighth, Some(Mbps(600)), None)
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
        .modify_series(&series.id, eighth, Some(Mbps(550)), None)
        .await
        .unwrap();
    let bws: Vec<u64> = after.iter().map(|r| r.bw.0).collect();
    assert_eq!(bws, [500, 500, 500, 500, 500, 500, 500, 550, 550, 550]);
    // One occurrence alone.
    let (_, after) = w
        .idc
        .modify_series(&series.id, SeriesScope::One(2), Some(Mbps(900)), None)
        .await
        .unwrap();
    assert_eq!(after[1].bw, Mbps(900));
    assert_eq!(after[1].version, 2);
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
