//! The store against real databases, each test on a fresh SQLite file and on a fresh
//! PostgreSQL database (see `testing::TestDatabase`): migrations, the round trip of a reservation, the admission re-check inside the transaction, the
//! booking changes of a save, the scheduler's queries and the event log.

use chrono::{TimeDelta, Timelike};
use sluice_model::{Criteria, Endpoint, Ero, Machine, PathHop, Stp, StpRequest};

use super::*;
use crate::testing::TestDatabase;

const DOMAIN: &str = "d";

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn w(a: i64, b: i64) -> TimeWindow {
    TimeWindow::new(t(a), t(b)).unwrap()
}

fn vlan(v: u16) -> Vlan {
    Vlan::new(v).unwrap()
}

fn open(db: &TestDatabase) -> Store {
    Store::open_database(&db.database, DOMAIN).expect("store opens")
}

/// A held reservation `id` over `window`, created at `now` with a 120 s hold.
fn held(id: &str, window: TimeWindow, now: DateTime<Utc>) -> (Reservation, Vec<Change>) {
    let end = |n: &str| StpRequest {
        stp: Stp::parse(&format!("{DOMAIN}:{n}:p0")).unwrap(),
        vlans: None,
    };
    let criteria = Criteria {
        src: end("a"),
        dst: end("b"),
        bw: Mbps(10),
        bw_reverse: None,
        window,
        ero: Ero::default(),
        description: format!("test {id}"),
        auto_provision: false,
    };
    Reservation::held(
        id.into(),
        "alice".into(),
        &criteria,
        vlan(100),
        vlan(100),
        vec![PathHop {
            link: "a-b".into(),
            from: "a".into(),
            to: "b".into(),
            vlan: Some(vlan(100)),
        }],
        now,
        TimeDelta::seconds(120),
    )
}

/// What a reservation occupies: `bw` of a 100 Mb/s `link:a-b` forward, and `vlan` on `a:p0`.
fn on_link(window: TimeWindow, hold_until: Option<DateTime<Utc>>, bw: u64, v: u16) -> Bookings {
    Bookings {
        window,
        hold_until,
        bandwidth: vec![BandwidthBooking {
            resource: "link:a-b".into(),
            direction: Direction::Forward,
            bw: Mbps(bw),
            capacity: Mbps(100),
        }],
        labels: vec![LabelBooking {
            resource: "port:a:p0".into(),
            vlan: vlan(v),
        }],
    }
}

/// Inserts a hold with the given bookings; its hold ends when the bookings' hold does.
fn insert(
    store: &Store,
    id: &str,
    b: &Bookings,
    now: DateTime<Utc>,
) -> Result<Reservation, StoreError> {
    let (mut r, changes) = held(id, b.window, now);
    r.hold_expires_at = b.hold_until;
    r.bw = b.bandwidth.first().map_or(Mbps(10), |x| x.bw);
    store
        .writer()
        .unwrap()
        .insert_held(&r, r.hold_expires_at, b, &changes, now)?;
    Ok(r)
}

/// Bandwidth rows of `id`, sorted.
fn rows_of(store: &Store, id: &str) -> Vec<BandwidthRow> {
    let mut rows: Vec<_> = store
        .all_bandwidth_bookings()
        .unwrap()
        .into_iter()
        .filter(|r| r.reservation_id == id)
        .collect();
    rows.sort_by(|a, b| (&a.resource, &a.direction).cmp(&(&b.resource, &b.direction)));
    rows
}

#[test]
fn sqlite_lives_in_its_data_directory_and_migrate_prepares_a_new_one() {
    let db = TestDatabase::sqlite();
    let Database::Sqlite { dir } = &db.database else {
        unreachable!()
    };
    let store = open(&db);
    let path = store.path().expect("a SQLite file");
    assert!(path.exists(), "{}", path.display());
    assert_eq!(path, dir.join(DB_FILE));
    // Everything is applied already; `migrate` on a fresh directory applies them all.
    assert_eq!(Store::migrate(dir).unwrap(), Vec::<String>::new());
    let fresh = tempfile::tempdir().unwrap();
    let applied = Store::migrate(&fresh.path().join("nested")).unwrap();
    assert!(!applied.is_empty());
    assert_eq!(
        Store::migrate(&fresh.path().join("nested")).unwrap(),
        Vec::<String>::new()
    );
    // A migrated-only directory opens and takes the domain.
    let s = Store::open(&fresh.path().join("nested"), DOMAIN).unwrap();
    assert_eq!(s.count_reservations().unwrap(), 0);
}

fn open_applies_the_migrations_once(db: &TestDatabase) {
    let applied = Store::migrate_database(&db.database).unwrap();
    assert!(!applied.is_empty(), "a new database gets every migration");
    let store = open(db);
    assert_eq!(store.count_reservations().unwrap(), 0);
    assert_eq!(store.last_event_seq().unwrap(), 0);
    assert_eq!(store.next_deadline().unwrap(), None);
    assert_eq!(
        Store::migrate_database(&db.database).unwrap(),
        Vec::<String>::new()
    );
}

fn reopen_keeps_the_data_and_refuses_another_domain(db: &TestDatabase) {
    let r = {
        let store = open(db);
        insert(&store, "d-1", &on_link(w(0, 100), None, 10, 100), t(-10)).unwrap()
    };
    let store = open(db);
    assert_eq!(store.get("d-1").unwrap(), Some(r));
    assert_eq!(store.count_reservations().unwrap(), 1);
    assert_eq!(rows_of(&store, "d-1").len(), 1);
    assert!(store.last_event_seq().unwrap() > 0);
    drop(store);

    match Store::open_database(&db.database, "other") {
        Err(StoreError::WrongDomain { found, expected }) => {
            assert_eq!((found.as_str(), expected.as_str()), (DOMAIN, "other"));
        }
        Err(e) => panic!("expected WrongDomain, got {e}"),
        Ok(_) => panic!("expected WrongDomain, the store opened"),
    }
    // The refusal changed nothing.
    assert_eq!(open(db).count_reservations().unwrap(), 1);
}

fn a_reservation_round_trips_with_every_field(db: &TestDatabase) {
    let store = open(db);
    let now = t(0) + TimeDelta::milliseconds(123);
    let (mut r, changes) = held(
        "d-rt",
        TimeWindow::new(t(60) + TimeDelta::milliseconds(5), t(3600)).unwrap(),
        now,
    );
    r.owner = "bob".into();
    r.description = "multi\nline — ünïcode".into();
    r.dst = Endpoint {
        stp: Stp::parse("d:c:xe-1/0/0.100").unwrap(),
        vlan: vlan(4094),
    };
    r.src.vlan = vlan(2);
    r.bw = Mbps(123_456);
    r.bw_reverse = Mbps(1_000);
    r.ero = Ero {
        include: vec!["b".into(), "c".into()],
        exclude: vec!["x".into(), "y-z".into()],
    };
    r.path = vec![
        PathHop {
            link: "a-b".into(),
            from: "a".into(),
            to: "b".into(),
            vlan: Some(vlan(4094)),
        },
        // As written before VLANs were kept per hop.
        PathHop {
            link: "b-c".into(),
            from: "b".into(),
            to: "c".into(),
            vlan: None,
        },
    ];
    r.version = 3;
    r.committed_version = Some(2);
    r.auto_provision = true;
    r.states.provision = sluice_model::ProvisionState::Provisioned;
    r.states.data_plane_active = true;
    r.updated_at = now + TimeDelta::milliseconds(1);
    let b = on_link(r.window, r.hold_expires_at, 10, 100);
    store
        .writer()
        .unwrap()
        .insert_held(&r, Some(t(60)), &b, &changes, now)
        .unwrap();
    assert_eq!(store.get("d-rt").unwrap().as_ref(), Some(&r));
    assert_eq!(
        store.writer().unwrap().load("d-rt").unwrap().as_ref(),
        Some(&r)
    );
    assert_eq!(store.get("d-nope").unwrap(), None);

    // Below a millisecond, times are truncated (the store's resolution).
    let (mut r2, changes) = held("d-ns", w(60, 120), t(0));
    r2.created_at = t(0) + TimeDelta::nanoseconds(1_999_999);
    store
        .writer()
        .unwrap()
        .insert_held(
            &r2,
            None,
            &on_link(w(60, 120), None, 1, 101),
            &changes,
            t(0),
        )
        .unwrap();
    let got = store.get("d-ns").unwrap().unwrap();
    assert_eq!(got.created_at, t(0) + TimeDelta::milliseconds(1));
    assert_eq!(got.created_at.nanosecond() % 1_000_000, 0);
}

fn the_recheck_refuses_over_capacity_naming_what_is_left(db: &TestDatabase) {
    let store = open(db);
    insert(&store, "d-1", &on_link(w(0, 100), None, 60, 100), t(-10)).unwrap();
    let before = store.all_bandwidth_bookings().unwrap();
    let seq = store.last_event_seq().unwrap();

    let err = insert(&store, "d-2", &on_link(w(50, 150), None, 50, 101), t(-10)).unwrap_err();
    match err {
        StoreError::Conflict(Conflict::Bandwidth {
            resource,
            direction,
            requested,
            available,
        }) => {
            assert_eq!(resource, "link:a-b");
            assert_eq!(direction, Direction::Forward);
            assert_eq!(requested, Mbps(50));
            assert_eq!(available, Mbps(40));
        }
        other => panic!("expected a bandwidth conflict, got {other}"),
    }
    // Nothing of the refused reservation was written.
    assert_eq!(store.get("d-2").unwrap(), None);
    assert_eq!(store.all_bandwidth_bookings().unwrap(), before);
    assert_eq!(store.last_event_seq().unwrap(), seq);
    // Exactly what is left fits.
    insert(&store, "d-3", &on_link(w(50, 150), None, 40, 101), t(-10)).unwrap();
    // The other direction and another resource are separate.
    let mut rev = on_link(w(0, 100), None, 100, 102);
    rev.bandwidth[0].direction = Direction::Reverse;
    rev.bandwidth.push(BandwidthBooking {
        resource: "link:b-c".into(),
        direction: Direction::Forward,
        bw: Mbps(100),
        capacity: Mbps(100),
    });
    insert(&store, "d-4", &rev, t(-10)).unwrap();
}

fn the_recheck_counts_the_peak_not_the_sum(db: &TestDatabase) {
    let store = open(db);
    // Three 40s that overlap only pairwise: the peak is 80.
    insert(&store, "d-1", &on_link(w(0, 10), None, 40, 100), t(-10)).unwrap();
    insert(&store, "d-2", &on_link(w(5, 15), None, 40, 101), t(-10)).unwrap();
    insert(&store, "d-3", &on_link(w(12, 20), None, 40, 102), t(-10)).unwrap();
    let err = insert(&store, "d-4", &on_link(w(6, 13), None, 40, 103), t(-10)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict(Conflict::Bandwidth {
                available: Mbps(20),
                ..
            })
        ),
        "{err}"
    );
    insert(&store, "d-5", &on_link(w(6, 13), None, 20, 103), t(-10)).unwrap();
}

fn the_recheck_refuses_a_taken_label_but_not_outside_its_window(db: &TestDatabase) {
    let store = open(db);
    insert(&store, "d-1", &on_link(w(0, 100), None, 1, 100), t(-10)).unwrap();
    let err = insert(&store, "d-2", &on_link(w(99, 200), None, 1, 100), t(-10)).unwrap_err();
    match err {
        StoreError::Conflict(Conflict::Label { resource, vlan: v }) => {
            assert_eq!((resource.as_str(), v), ("port:a:p0", vlan(100)));
        }
        other => panic!("expected a label conflict, got {other}"),
    }
    assert_eq!(store.get("d-2").unwrap(), None);
    // Back to back, another VLAN, or another port: free.
    insert(&store, "d-3", &on_link(w(100, 200), None, 1, 100), t(-10)).unwrap();
    insert(&store, "d-4", &on_link(w(0, 100), None, 1, 101), t(-10)).unwrap();
    let mut other_port = on_link(w(0, 100), None, 1, 100);
    other_port.labels[0].resource = "port:b:p0".into();
    insert(&store, "d-5", &other_port, t(-10)).unwrap();
    // A link carries a VLAN too, in the same row as its bandwidth.
    let mut on_the_link = on_link(w(0, 100), None, 1, 300);
    on_the_link.labels[0].resource = "link:a-b".into();
    insert(&store, "d-6", &on_the_link, t(-10)).unwrap();
    let mut again = on_link(w(50, 60), None, 1, 301);
    again.labels.push(LabelBooking {
        resource: "link:a-b".into(),
        vlan: vlan(300),
    });
    match insert(&store, "d-7", &again, t(-10)).unwrap_err() {
        StoreError::Conflict(Conflict::Label { resource, vlan: v }) => {
            assert_eq!((resource.as_str(), v), ("link:a-b", vlan(300)));
        }
        other => panic!("expected a label conflict on the link, got {other}"),
    }
    assert_eq!(store.get("d-7").unwrap(), None);
}

fn the_recheck_ignores_expired_holds_and_bookings_outside_the_window(db: &TestDatabase) {
    let store = open(db);
    // A hold of the whole link that expires at t(5).
    insert(
        &store,
        "d-hold",
        &on_link(w(0, 100), Some(t(5)), 100, 100),
        t(0),
    )
    .unwrap();
    let err = insert(&store, "d-early", &on_link(w(0, 100), None, 1, 100), t(4)).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Bandwidth { .. })),
        "{err}"
    );
    // At its expiry it no longer counts, neither its bandwidth nor its label.
    insert(&store, "d-late", &on_link(w(0, 100), None, 100, 100), t(5)).unwrap();

    // Back-to-back windows do not conflict, on either side.
    insert(
        &store,
        "d-before",
        &on_link(w(-100, 0), None, 100, 100),
        t(-200),
    )
    .unwrap();
    insert(
        &store,
        "d-after",
        &on_link(w(100, 200), None, 100, 100),
        t(5),
    )
    .unwrap();
    let err = insert(&store, "d-over", &on_link(w(99, 101), None, 1, 101), t(5)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict(Conflict::Bandwidth {
                available: Mbps(0),
                ..
            })
        ),
        "{err}"
    );
}

fn saving_a_commit_makes_the_hold_count_until_its_end(db: &TestDatabase) {
    let store = open(db);
    let now = t(0);
    let mut r = insert(
        &store,
        "d-1",
        &on_link(w(0, 100), Some(t(120)), 100, 100),
        now,
    )
    .unwrap();
    assert_eq!(
        rows_of(&store, "d-1")[0].hold_expires_ms,
        Some(rows::ms(t(120)))
    );
    // A commit clears the reservation's hold; its bookings need no change.
    let changes = r.commit(t(1)).unwrap();
    assert_eq!(r.hold_expires_at, None);
    let events = store
        .writer()
        .unwrap()
        .save(&r, Some(t(100)), BookingChange::Keep, &changes, t(1))
        .unwrap();
    assert_eq!(events.len(), changes.len());
    assert_eq!(rows_of(&store, "d-1")[0].hold_expires_ms, None);
    let (bw, labels) = store.live_bookings(t(99)).unwrap();
    assert_eq!((bw.len(), labels.len()), (1, 1));
    assert!(labels.iter().all(|l| l.hold_expires_ms.is_none()));
    // The streaming form the index is rebuilt from says the same: the link's bandwidth
    // in its row, the port's VLAN in its own.
    let mut live = Vec::new();
    store
        .for_each_live_booking(t(99), |b| live.push(b))
        .unwrap();
    let row = |resource: &str, bw, vlan| super::LiveBooking {
        reservation_id: "d-1".into(),
        resource: resource.into(),
        start: t(0),
        end: t(100),
        bw,
        vlan,
        hold_until: None,
    };
    assert_eq!(
        live,
        vec![
            row("link:a-b", [100, 0], None),
            row("port:a:p0", [0, 0], Some(vlan(100)))
        ]
    );
    // Long after the hold would have expired, it still counts.
    let err = insert(&store, "d-2", &on_link(w(0, 100), None, 1, 101), t(99)).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Bandwidth { .. })),
        "{err}"
    );
    assert_eq!(store.get("d-1").unwrap(), Some(r));
}

fn save_delete_frees_the_resources(db: &TestDatabase) {
    let store = open(db);
    let mut r = insert(
        &store,
        "d-1",
        &on_link(w(0, 100), Some(t(120)), 100, 100),
        t(0),
    )
    .unwrap();
    let changes = r.abort(t(1)).unwrap();
    store
        .writer()
        .unwrap()
        .save(&r, None, BookingChange::Delete, &changes, t(1))
        .unwrap();
    assert!(rows_of(&store, "d-1").is_empty());
    let (bw, labels) = store.live_bookings(t(1)).unwrap();
    assert!(bw.is_empty() && labels.is_empty());
    let mut live = 0;
    store.for_each_live_booking(t(1), |_| live += 1).unwrap();
    assert_eq!(live, 0);
    insert(&store, "d-2", &on_link(w(0, 100), None, 100, 100), t(1)).unwrap();
    // The reservation itself stays, aborted.
    assert_eq!(store.get("d-1").unwrap().unwrap().summary(), "aborted");
}

fn save_keep_leaves_the_bookings(db: &TestDatabase) {
    let store = open(db);
    let mut r = insert(
        &store,
        "d-1",
        &on_link(w(0, 100), Some(t(120)), 30, 100),
        t(0),
    )
    .unwrap();
    let before = rows_of(&store, "d-1");
    r.description = "changed".into();
    store
        .writer()
        .unwrap()
        .save(&r, Some(t(120)), BookingChange::Keep, &[], t(1))
        .unwrap();
    assert_eq!(rows_of(&store, "d-1"), before);
    assert_eq!(store.get("d-1").unwrap().unwrap().description, "changed");
}

fn save_replace_rechecks_without_the_reservations_own_bookings(db: &TestDatabase) {
    let store = open(db);
    let mut r = insert(&store, "d-1", &on_link(w(0, 100), None, 60, 100), t(0)).unwrap();
    insert(&store, "d-2", &on_link(w(0, 100), None, 20, 101), t(0)).unwrap();

    // 60 → 80 fits only if its own 60 is left out (20 + 80 = 100). Same VLAN too.
    let new = on_link(w(0, 150), None, 80, 100);
    r.version += 1;
    r.bw = Mbps(80);
    r.window = new.window;
    store
        .writer()
        .unwrap()
        .save(&r, Some(t(150)), BookingChange::Replace(&new), &[], t(1))
        .unwrap();
    let rows = rows_of(&store, "d-1");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].bw_mbps, rows[0].start_ms, rows[0].end_ms),
        (80, rows::ms(t(0)), rows::ms(t(150)))
    );
    assert_eq!(store.get("d-1").unwrap(), Some(r.clone()));

    // 80 → 90 does not fit beside the other 20: refused, and nothing changes.
    let before_rows = store.all_bandwidth_bookings().unwrap();
    let seq = store.last_event_seq().unwrap();
    let too_big = on_link(w(0, 150), None, 90, 100);
    let mut r2 = r.clone();
    r2.version += 1;
    r2.bw = Mbps(90);
    let change = Change {
        machine: Machine::Version,
        from: "2".into(),
        to: "3".into(),
        effective_at: t(2),
        detail: String::new(),
    };
    let err = store
        .writer()
        .unwrap()
        .save(&r2, None, BookingChange::Replace(&too_big), &[change], t(2))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict(Conflict::Bandwidth {
                available: Mbps(80),
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(store.all_bandwidth_bookings().unwrap(), before_rows);
    assert_eq!(store.get("d-1").unwrap(), Some(r));
    assert_eq!(store.last_event_seq().unwrap(), seq);

    // A label taken by another reservation is refused too.
    let mut theirs = on_link(w(0, 150), None, 1, 101);
    theirs.bandwidth.clear();
    let mut r3 = store.get("d-1").unwrap().unwrap();
    r3.version += 1;
    let err = store
        .writer()
        .unwrap()
        .save(&r3, None, BookingChange::Replace(&theirs), &[], t(3))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Label { .. })),
        "{err}"
    );
}

fn save_of_a_vanished_reservation_fails_and_writes_nothing(db: &TestDatabase) {
    let store = open(db);
    let (r, changes) = held("d-ghost", w(0, 100), t(0));
    let err = store
        .writer()
        .unwrap()
        .save(&r, None, BookingChange::Keep, &changes, t(0))
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert_eq!(store.last_event_seq().unwrap(), 0);
}

fn due_and_next_deadline_follow_the_stored_deadlines(db: &TestDatabase) {
    let store = open(db);
    let mut ids = Vec::new();
    for (i, deadline) in [Some(30), None, Some(10), Some(20)].into_iter().enumerate() {
        let (r, changes) = held(&format!("d-{i}"), w(0, 100), t(0));
        store
            .writer()
            .unwrap()
            .insert_held(
                &r,
                deadline.map(t),
                &on_link(w(0, 100), None, 1, 100 + i as u16),
                &changes,
                t(0),
            )
            .unwrap();
        ids.push(r);
    }
    assert_eq!(store.next_deadline().unwrap(), Some(t(10)));
    assert!(store.due(t(9), 100).unwrap().is_empty());
    assert_eq!(store.due(t(10), 100).unwrap(), vec!["d-2"]);
    assert_eq!(store.due(t(25), 100).unwrap(), vec!["d-2", "d-3"]);
    assert_eq!(store.due(t(1000), 100).unwrap(), vec!["d-2", "d-3", "d-0"]);
    assert_eq!(
        store.due(t(1000), 2).unwrap(),
        vec!["d-2", "d-3"],
        "limit, earliest first"
    );
    // Clearing a deadline takes it out.
    store
        .writer()
        .unwrap()
        .save(&ids[2], None, BookingChange::Keep, &[], t(1))
        .unwrap();
    assert_eq!(store.next_deadline().unwrap(), Some(t(20)));
    assert_eq!(store.due(t(1000), 100).unwrap(), vec!["d-3", "d-0"]);
    for r in &ids {
        store
            .writer()
            .unwrap()
            .save(r, None, BookingChange::Keep, &[], t(1))
            .unwrap();
    }
    assert_eq!(store.next_deadline().unwrap(), None);
    assert!(store.due(t(1000), 100).unwrap().is_empty());
}

fn events_come_back_in_order_and_filtered(db: &TestDatabase) {
    let store = open(db);
    let mut a = insert(
        &store,
        "d-a",
        &on_link(w(0, 100), Some(t(120)), 1, 100),
        t(0),
    )
    .unwrap();
    let b = insert(
        &store,
        "d-b",
        &on_link(w(0, 100), Some(t(120)), 1, 101),
        t(0),
    )
    .unwrap();
    let changes = a.commit(t(1)).unwrap();
    let recorded = store
        .writer()
        .unwrap()
        .save(&a, None, BookingChange::Keep, &changes, t(1))
        .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].seq + 1, recorded[1].seq);

    let all = store.events_after(0, None, 100).unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all.windows(2).all(|p| p[0].seq < p[1].seq),
        "ascending: {all:?}"
    );
    assert_eq!(store.last_event_seq().unwrap(), all.last().unwrap().seq);
    let ids: Vec<&str> = all.iter().map(|e| e.reservation_id.as_str()).collect();
    assert_eq!(ids, ["d-a", "d-b", "d-a", "d-a"]);
    assert_eq!(all[0].change.to, "ReserveHeld");
    assert_eq!(all[0].change.effective_at, t(0));
    assert_eq!(&all[2..], &recorded[..]);
    assert_eq!(all[3].change.to, "ReserveStart");

    let only_a = store.events_after(0, Some("d-a"), 100).unwrap();
    assert_eq!(
        only_a.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [all[0].seq, all[2].seq, all[3].seq]
    );
    let only_b = store.events_after(0, Some(&b.id), 100).unwrap();
    assert_eq!(only_b, vec![all[1].clone()]);
    assert_eq!(
        store.events_after(all[1].seq, None, 100).unwrap(),
        all[2..].to_vec()
    );
    assert_eq!(
        store.events_after(0, None, 2).unwrap(),
        all[..2].to_vec(),
        "limit"
    );
    assert!(
        store
            .events_after(all[3].seq, None, 100)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_after(0, Some("d-none"), 100)
            .unwrap()
            .is_empty()
    );
}

fn live_bookings_leave_out_expired_holds_and_ended_bookings(db: &TestDatabase) {
    let store = open(db);
    insert(
        &store,
        "d-held",
        &on_link(w(0, 100), Some(t(50)), 1, 100),
        t(0),
    )
    .unwrap();
    insert(&store, "d-booked", &on_link(w(0, 100), None, 1, 101), t(0)).unwrap();
    insert(&store, "d-later", &on_link(w(200, 300), None, 1, 102), t(0)).unwrap();
    let ids = |now: i64| {
        let (bw, labels) = store.live_bookings(t(now)).unwrap();
        let mut a: Vec<String> = bw.into_iter().map(|r| r.reservation_id).collect();
        let mut b: Vec<String> = labels.into_iter().map(|r| r.reservation_id).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "bandwidth and labels agree at {now}");
        a
    };
    assert_eq!(ids(0), ["d-booked", "d-held", "d-later"]);
    assert_eq!(ids(49), ["d-booked", "d-held", "d-later"]);
    assert_eq!(ids(50), ["d-booked", "d-later"], "the hold expired at 50");
    assert_eq!(ids(100), ["d-later"], "ended at 100");
    assert!(ids(300).is_empty());
    // Every row is still there for audits.
    assert_eq!(store.all_bandwidth_bookings().unwrap().len(), 3);
}

fn list_filters_by_owner_window_and_stp(db: &TestDatabase) {
    let store = open(db);
    let mut r1 = insert(&store, "d-1", &on_link(w(0, 100), None, 1, 100), t(0)).unwrap();
    r1.owner = "bob".into();
    store
        .writer()
        .unwrap()
        .save(&r1, None, BookingChange::Keep, &[], t(0))
        .unwrap();
    insert(&store, "d-2", &on_link(w(100, 200), None, 1, 101), t(1)).unwrap();
    let ids = |f: ListFilter| -> Vec<String> {
        store.list(&f).unwrap().into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(ListFilter::default()), ["d-1", "d-2"], "oldest first");
    assert_eq!(
        ids(ListFilter {
            owner: Some("bob".into()),
            ..Default::default()
        }),
        ["d-1"]
    );
    assert_eq!(
        ids(ListFilter {
            window: Some(w(100, 150)),
            ..Default::default()
        }),
        ["d-2"],
        "[0,100) does not overlap [100,150)"
    );
    assert_eq!(
        ids(ListFilter {
            stp: Some("d:b:p0".into()),
            ..Default::default()
        }),
        ["d-1", "d-2"]
    );
    assert!(
        ids(ListFilter {
            stp: Some("d:c:p0".into()),
            ..Default::default()
        })
        .is_empty()
    );
}

/// The highest total booked on `resource` forward at any instant, from the stored rows.
fn peak_booked(store: &Store, resource: &str) -> u64 {
    let intervals = store
        .all_bandwidth_bookings()
        .unwrap()
        .into_iter()
        .filter(|r| r.resource == resource && r.direction == "forward")
        .map(|r| sluice_pce::Interval {
            start: from_ms(r.start_ms).unwrap(),
            end: from_ms(r.end_ms).unwrap(),
            bw: Mbps(r.bw_mbps as u64),
        });
    sluice_pce::peak_of(intervals, &w(-1_000_000, 1_000_000)).0
}

/// Stores on one database are IDC replicas: four writers race for one 100 Mb/s link
/// with overlapping windows, and the stored bookings never exceed it.
fn replicas_racing_for_a_link_never_overbook_it(db: &TestDatabase) {
    let replicas = [open(db), open(db), open(db), open(db)];
    let outcomes = std::sync::Mutex::new((0usize, 0usize));
    std::thread::scope(|scope| {
        for (r, store) in replicas.iter().enumerate() {
            for thread in 0..2 {
                let outcomes = &outcomes;
                scope.spawn(move || {
                    for i in 0..12 {
                        // 30 Mb/s each: 3 fit in a slot. Four writers ask for the same
                        // slot at about the same moment (n % 24 repeats every 24).
                        let n = (r * 2 + thread) * 12 + i;
                        let start = (n as i64 % 24) * 10;
                        let b = on_link(w(start, start + 10), None, 30, 100 + n as u16);
                        match insert(store, &format!("d-{n}"), &b, t(-100)) {
                            Ok(_) => outcomes.lock().unwrap().0 += 1,
                            Err(StoreError::Conflict(Conflict::Bandwidth { .. })) => {
                                outcomes.lock().unwrap().1 += 1
                            }
                            Err(e) => panic!("d-{n}: {e}"),
                        }
                    }
                });
            }
        }
    });
    let (admitted, refused) = *outcomes.lock().unwrap();
    assert_eq!(admitted + refused, 96, "every request answered");
    assert_eq!(admitted, 72, "3 of the 4 in each of the 24 slots");
    let peak = peak_booked(&replicas[0], "link:a-b");
    assert!(peak <= 100, "booked {peak} Mb/s on a 100 Mb/s link");
    assert_eq!(replicas[1].count_reservations().unwrap(), admitted as i64);
}

/// Two writers load the same reservation; the second save finds it changed and
/// writes nothing, and a save after loading again goes through.
fn a_save_of_a_row_changed_since_it_was_loaded_is_stale(db: &TestDatabase) {
    let (a, b) = (open(db), open(db));
    let r = insert(&a, "d-1", &on_link(w(0, 100), Some(t(50)), 10, 100), t(0)).unwrap();
    let mut wa = a.writer().unwrap();
    let mut wb = b.writer().unwrap();
    let mut ra = wa.load("d-1").unwrap().unwrap();
    let mut rb = wb.load("d-1").unwrap().unwrap();
    ra.description = "by a".into();
    wa.save(&ra, None, BookingChange::Keep, &[], t(1)).unwrap();
    let events = a.last_event_seq().unwrap();
    rb.description = "by b".into();
    let change = Change {
        machine: Machine::Reservation,
        from: "ReserveHeld".into(),
        to: "ReserveCommitting".into(),
        effective_at: t(1),
        detail: String::new(),
    };
    match wb.save(
        &rb,
        None,
        BookingChange::Delete,
        std::slice::from_ref(&change),
        t(1),
    ) {
        Err(StoreError::Stale(id)) => assert_eq!(id, "d-1"),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(b.get("d-1").unwrap().unwrap().description, "by a");
    assert_eq!(b.last_event_seq().unwrap(), events, "no event written");
    assert_eq!(rows_of(&b, "d-1").len(), 1, "bookings untouched");
    // Loaded again, it saves; and the first writer's next save is now the stale one.
    let mut rb = wb.load("d-1").unwrap().unwrap();
    rb.description = "by b".into();
    wb.save(&rb, None, BookingChange::Keep, &[change], t(2))
        .unwrap();
    assert!(matches!(
        wa.save(&ra, None, BookingChange::Keep, &[], t(3)),
        Err(StoreError::Stale(_))
    ));
    assert_eq!(a.get("d-1").unwrap().unwrap().description, "by b");
    drop((wa, wb));
    let _ = r;
}

/// Writers on two replicas append events at once; a reader polling the log never sees
/// a sequence number before one that comes earlier (Watch and the other replica
/// advance past what they have seen, so a late lower number would be lost).
fn events_become_visible_in_sequence_order(db: &TestDatabase) {
    let replicas = [open(db), open(db), open(db), open(db)];
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let (mut last, mut seen) = (0u64, 0usize);
            loop {
                let finished = done.load(Ordering::Acquire);
                for e in replicas[0].events_after(last, None, 1000).unwrap() {
                    assert_eq!(e.seq, last + 1, "a gap after {last}: saw {}", e.seq);
                    last = e.seq;
                    seen += 1;
                }
                if finished {
                    return seen;
                }
            }
        });
        let writers: Vec<_> = (0..4)
            .map(|k| {
                let store = &replicas[k];
                scope.spawn(move || {
                    for i in 0..40 {
                        // Each on its own link: no waiting on each other's bookings.
                        let mut b = on_link(w(0, 100), None, 1, 100);
                        b.bandwidth[0].resource = format!("link:l{k}-{i}");
                        b.labels[0].resource = format!("port:n{k}-{i}:p0");
                        insert(store, &format!("d-{k}-{i}"), &b, t(0)).unwrap();
                    }
                })
            })
            .collect();
        for wr in writers {
            wr.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let seen = reader.join().unwrap();
        assert_eq!(seen as u64, replicas[1].last_event_seq().unwrap());
    });
}

/// Replicas' clocks differ: B, later, finds A's hold expired and books its room; A,
/// earlier, then commits the hold. A confirming commit re-checks and fails, and the
/// link stays within its capacity (a plain one would have over-booked it).
fn a_confirming_commit_fails_where_another_writer_took_the_expired_holds_room(db: &TestDatabase) {
    let (a, b) = (open(db), open(db));
    let own = on_link(w(0, 100), Some(t(50)), 100, 100);
    insert(&a, "d-held", &own, t(0)).unwrap();
    // B's clock says t(60): the hold no longer counts, the whole link is free.
    insert(&b, "d-later", &on_link(w(0, 100), None, 100, 101), t(60)).unwrap();
    // A's clock says t(10): the hold is live, and A commits it.
    let mut writer = a.writer().unwrap();
    let mut r = writer.load("d-held").unwrap().unwrap();
    let changes = r.commit(t(10)).unwrap();
    let mut committed_own = own.clone();
    committed_own.hold_until = None;
    match writer.save(
        &r,
        None,
        BookingChange::Confirm(&committed_own),
        &changes,
        t(10),
    ) {
        Err(StoreError::Conflict(Conflict::Bandwidth { available, .. })) => {
            assert_eq!(available, Mbps(0));
        }
        other => panic!("expected a bandwidth conflict, got {other:?}"),
    }
    drop(writer);
    assert_eq!(
        a.get("d-held").unwrap().unwrap().states.reservation,
        sluice_model::ReservationState::ReserveHeld,
        "nothing written"
    );
    assert_eq!(a.last_event_seq().unwrap(), 2, "the two holds' events only");
}

/// PostgreSQL restarted (every connection of the store cut): the next reads and writes
/// get new connections instead of failing for good.
#[test]
fn postgres_connections_cut_under_the_store_are_replaced() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let store = open(&db);
    insert(&store, "d-1", &on_link(w(0, 100), None, 10, 100), t(0)).unwrap();
    let Database::Postgres { url } = &db.database else {
        unreachable!()
    };
    let mut admin = diesel::pg::PgConnection::establish(url).unwrap();
    let cut = diesel::sql_query(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .unwrap();
    assert!(cut > 0, "the store had connections to cut");
    insert(&store, "d-2", &on_link(w(0, 100), None, 10, 101), t(1)).unwrap();
    assert_eq!(store.count_reservations().unwrap(), 2);
    assert!(store.get("d-1").unwrap().is_some());
}

/// Each case once on SQLite and once on PostgreSQL.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&crate::testing::TestDatabase::sqlite());
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(db) = crate::testing::TestDatabase::postgres() {
                    super::$name(&db);
                }
            })*
        }
    };
}

on_both_databases!(
    a_confirming_commit_fails_where_another_writer_took_the_expired_holds_room,
    replicas_racing_for_a_link_never_overbook_it,
    a_save_of_a_row_changed_since_it_was_loaded_is_stale,
    events_become_visible_in_sequence_order,
    open_applies_the_migrations_once,
    reopen_keeps_the_data_and_refuses_another_domain,
    a_reservation_round_trips_with_every_field,
    the_recheck_refuses_over_capacity_naming_what_is_left,
    the_recheck_counts_the_peak_not_the_sum,
    the_recheck_refuses_a_taken_label_but_not_outside_its_window,
    the_recheck_ignores_expired_holds_and_bookings_outside_the_window,
    saving_a_commit_makes_the_hold_count_until_its_end,
    save_delete_frees_the_resources,
    save_keep_leaves_the_bookings,
    save_replace_rechecks_without_the_reservations_own_bookings,
    save_of_a_vanished_reservation_fails_and_writes_nothing,
    due_and_next_deadline_follow_the_stored_deadlines,
    events_come_back_in_order_and_filtered,
    live_bookings_leave_out_expired_holds_and_ended_bookings,
    list_filters_by_owner_window_and_stp,
);
