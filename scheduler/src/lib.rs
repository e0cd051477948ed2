//! The timetable: when a reservation next needs the scheduler (hold expiry, start, end)
//! and what happens when that time comes.
//!
//! **Architecture invariant:** pure. The IDC stores `next_deadline` beside each
//! reservation and asks the store for what is due, so the timetable is derived from the
//! store and a restart loses nothing; `now` is always passed in.

pub mod recurrence;

use chrono::{DateTime, Utc};
use sluice_model::{Change, LifecycleState, ProvisionState, Reservation, ReservationState};

/// The next instant at which `r` needs the scheduler, seen at `now`; `None` if nothing
/// timed is left. A deadline at or before `now` means "due now".
pub fn next_deadline(r: &Reservation, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if r.states.lifecycle != LifecycleState::Created {
        return None;
    }
    match r.states.reservation {
        ReservationState::ReserveHeld => return r.hold_expires_at,
        ReservationState::ReserveStart if r.committed_version.is_some() => {}
        // Aborted, timed out or failed: nothing timed is left.
        _ => return None,
    }
    let wants_start = (r.auto_provision && r.states.provision == ProvisionState::Released)
        || r.states.provision == ProvisionState::Provisioned;
    if now < r.window.start && wants_start {
        Some(r.window.start)
    } else if r.auto_provision
        && r.states.provision == ProvisionState::Released
        && r.window.contains(now)
    {
        // Committed after its start: provisioning is due now, not at the end.
        Some(now)
    } else if r.data_plane_should_be_active(now) != r.states.data_plane_active {
        Some(now)
    } else {
        Some(r.window.end)
    }
}

/// Applies everything due at `now`: hold expiry, automatic provisioning at start, the
/// data plane following the window, and the end of the window. Idempotent.
pub fn run_due(r: &mut Reservation, now: DateTime<Utc>) -> Vec<Change> {
    let mut changes = r.expire_hold(now);
    if now >= r.window.end {
        changes.extend(r.pass_end_time(now));
    } else {
        changes.extend(r.auto_provision_at_start(now));
        changes.extend(r.sync_data_plane(now));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use sluice_model::{Criteria, Ero, Mbps, Stp, StpRequest, TimeWindow, Vlan};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn held(auto: bool) -> Reservation {
        let end = |p: &str| StpRequest {
            stp: Stp::parse(&format!("d:n:{p}")).unwrap(),
            vlans: None,
        };
        let c = Criteria {
            src: end("a"),
            dst: end("b"),
            bw: Mbps(10),
            bw_reverse: None,
            window: TimeWindow::new(t(1000), t(2000)).unwrap(),
            ero: Ero::default(),
            description: String::new(),
            auto_provision: auto,
        };
        let v = Vlan::new(100).unwrap();
        Reservation::held(
            "r".into(),
            "u".into(),
            &c,
            v,
            v,
            vec![],
            t(0),
            TimeDelta::seconds(120),
        )
        .0
    }

    /// Drives `r` the way the IDC loop does: wake at each deadline, run what is due.
    fn drive(r: &mut Reservation, until: i64) -> Vec<(i64, String)> {
        let mut log = Vec::new();
        let mut now = t(0);
        while let Some(at) = next_deadline(r, now) {
            now = now.max(at);
            if now > t(until) {
                break;
            }
            for c in run_due(r, now) {
                log.push((
                    (c.effective_at - t(0)).num_seconds(),
                    format!("{}:{}", c.machine.as_str(), c.to),
                ));
            }
        }
        log
    }

    #[test]
    fn an_uncommitted_hold_times_out_at_its_deadline() {
        let mut r = held(true);
        assert_eq!(next_deadline(&r, t(0)), Some(t(120)));
        let log = drive(&mut r, 10_000);
        assert_eq!(log, vec![(120, "reservation:ReserveTimeout".to_string())]);
        assert_eq!(next_deadline(&r, t(200)), None);
    }

    #[test]
    fn automatic_circuit_goes_up_at_start_and_down_at_end() {
        let mut r = held(true);
        r.commit(t(10)).unwrap();
        assert_eq!(next_deadline(&r, t(10)), Some(t(1000)));
        let log = drive(&mut r, 10_000);
        let expect: Vec<(i64, String)> = [
            (1000, "provision:Provisioning"),
            (1000, "provision:Provisioned"),
            (1000, "data_plane:active"),
            (2000, "provision:Releasing"),
            (2000, "provision:Released"),
            (2000, "data_plane:inactive"),
            (2000, "lifecycle:PassedEndTime"),
        ]
        .into_iter()
        .map(|(a, b)| (a, b.to_string()))
        .collect();
        assert_eq!(log, expect);
        assert_eq!(next_deadline(&r, t(3000)), None);
    }

    #[test]
    fn an_automatic_circuit_committed_after_its_start_goes_up_at_once() {
        let mut r = held(true);
        // Committed at 1500, inside the window that began at 1000.
        r.commit(t(1500)).unwrap();
        assert_eq!(next_deadline(&r, t(1500)), Some(t(1500)));
        let changes = run_due(&mut r, t(1500));
        assert!(r.states.data_plane_active, "{changes:?}");
        assert_eq!(next_deadline(&r, t(1500)), Some(t(2000)));
        // Released by hand: it stays down.
        r.release(t(1600)).unwrap();
        assert_eq!(next_deadline(&r, t(1600)), Some(t(2000)));
    }

    #[test]
    fn manual_circuit_waits_for_provision_and_still_ends() {
        let mut r = held(false);
        r.commit(t(10)).unwrap();
        assert_eq!(
            next_deadline(&r, t(10)),
            Some(t(2000)),
            "nothing happens at start"
        );
        r.provision(t(20)).unwrap();
        assert_eq!(next_deadline(&r, t(20)), Some(t(1000)));
        let log = drive(&mut r, 10_000);
        assert_eq!(
            log,
            vec![
                (1000, "data_plane:active".to_string()),
                (2000, "data_plane:inactive".to_string()),
                (2000, "lifecycle:PassedEndTime".to_string()),
            ]
        );
        // Manual mode keeps the provision state; only the data plane follows the window.
        assert_eq!(r.states.provision, ProvisionState::Provisioned);
    }

    #[test]
    fn catching_up_after_downtime_is_one_step() {
        let mut r = held(true);
        r.commit(t(10)).unwrap();
        // The IDC was down from before the start until after the end.
        let changes = run_due(&mut r, t(5000));
        assert_eq!(r.states.lifecycle, LifecycleState::PassedEndTime);
        assert!(!r.states.data_plane_active);
        assert!(changes.iter().all(|c| c.effective_at <= t(5000)));
        assert!(run_due(&mut r, t(5001)).is_empty(), "idempotent");
        // Down across the start only: provisioned at once when back.
        let mut r = held(true);
        r.commit(t(10)).unwrap();
        run_due(&mut r, t(1500));
        assert!(r.states.data_plane_active);
        assert_eq!(next_deadline(&r, t(1500)), Some(t(2000)));
    }
}
