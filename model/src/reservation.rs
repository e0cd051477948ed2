//! Reservations and their three state machines (NSI CS 2.x): reservation (RSM),
//! provision (PSM) and lifecycle (LSM), plus whether the data plane is up.
//!
//! Every operation checks its transition here and returns the changes it made, so the
//! store records exactly these as events. Nothing here reads a clock: `now` is passed in.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorCode};
use crate::stp::{Stp, StpRequest};
use crate::units::{Mbps, TimeWindow, Vlan};

macro_rules! state_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => stringify!($v)),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $(stringify!($v) => Some($name::$v),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(
    /// NSI's reservation state machine. A successful commit or abort returns to
    /// `ReserveStart`; whether a version is committed is kept beside it.
    ReservationState {
        ReserveStart,
        ReserveChecking,
        ReserveHeld,
        ReserveCommitting,
        ReserveFailed,
        ReserveAborting,
        ReserveTimeout,
    }
);

state_enum!(
    /// Whether the circuit should be up (within its window).
    ProvisionState { Released, Provisioning, Provisioned, Releasing }
);

state_enum!(LifecycleState {
    Created,
    Failed,
    PassedEndTime,
    Terminating,
    Terminated,
});

/// What moves the reservation state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsmInput {
    Reserve,
    ReserveConfirmed,
    ReserveFailed,
    Commit,
    CommitConfirmed,
    CommitFailed,
    Abort,
    AbortConfirmed,
    HoldTimeout,
}

impl ReservationState {
    /// The NSI CS 2.0 transition table; `None` where the input is not allowed.
    pub fn next(self, input: RsmInput) -> Option<ReservationState> {
        use ReservationState as S;
        use RsmInput as I;
        Some(match (self, input) {
            (S::ReserveStart, I::Reserve) => S::ReserveChecking,
            (S::ReserveChecking, I::ReserveConfirmed) => S::ReserveHeld,
            (S::ReserveChecking, I::ReserveFailed) => S::ReserveFailed,
            (S::ReserveHeld, I::Commit) => S::ReserveCommitting,
            (S::ReserveHeld, I::Abort) => S::ReserveAborting,
            (S::ReserveHeld, I::HoldTimeout) => S::ReserveTimeout,
            (S::ReserveCommitting, I::CommitConfirmed | I::CommitFailed) => S::ReserveStart,
            (S::ReserveFailed | S::ReserveTimeout, I::Abort) => S::ReserveAborting,
            (S::ReserveAborting, I::AbortConfirmed) => S::ReserveStart,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsmInput {
    Provision,
    ProvisionConfirmed,
    Release,
    ReleaseConfirmed,
}

impl ProvisionState {
    pub fn next(self, input: PsmInput) -> Option<ProvisionState> {
        use ProvisionState as S;
        use PsmInput as I;
        Some(match (self, input) {
            (S::Released, I::Provision) => S::Provisioning,
            (S::Provisioning, I::ProvisionConfirmed) => S::Provisioned,
            (S::Provisioned, I::Release) => S::Releasing,
            (S::Releasing, I::ReleaseConfirmed) => S::Released,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsmInput {
    Terminate,
    TerminateConfirmed,
    EndTime,
    Error,
}

impl LifecycleState {
    pub fn next(self, input: LsmInput) -> Option<LifecycleState> {
        use LifecycleState as S;
        use LsmInput as I;
        Some(match (self, input) {
            (S::Created | S::PassedEndTime | S::Failed, I::Terminate) => S::Terminating,
            (S::Terminating, I::TerminateConfirmed) => S::Terminated,
            (S::Created, I::EndTime) => S::PassedEndTime,
            (S::Created, I::Error) => S::Failed,
            _ => return None,
        })
    }
}

/// Which machine a change belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Machine {
    Reservation,
    Provision,
    Lifecycle,
    DataPlane,
    /// A new version of the criteria (modify).
    Version,
    /// A change in one domain's segment of a circuit across domains, as that domain
    /// reported it (`from`/`to` are its states, the detail names the domain and machine).
    Segment,
    /// The circuit on one node of its path, as that node's agent answered
    /// (`applied`, `failed`, `removed`; the detail names the node and says why).
    Node,
}

impl Machine {
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Reservation => "reservation",
            Machine::Provision => "provision",
            Machine::Lifecycle => "lifecycle",
            Machine::DataPlane => "data_plane",
            Machine::Version => "version",
            Machine::Segment => "segment",
            Machine::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Machine> {
        [
            Machine::Reservation,
            Machine::Provision,
            Machine::Lifecycle,
            Machine::DataPlane,
            Machine::Version,
            Machine::Segment,
            Machine::Node,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// One state change, as recorded in the event log and sent to watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub machine: Machine,
    pub from: String,
    pub to: String,
    /// When it took effect; for a hold that expired while the IDC was down, the
    /// expiry time rather than the time the IDC noticed.
    pub effective_at: DateTime<Utc>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct States {
    pub reservation: ReservationState,
    pub provision: ProvisionState,
    pub lifecycle: LifecycleState,
    pub data_plane_active: bool,
}

/// Nodes or links a path must pass (`include`, in order) or avoid (`exclude`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ero {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    pub src: StpRequest,
    pub dst: StpRequest,
    /// A→Z (src to dst) bandwidth.
    pub bw: Mbps,
    /// Z→A bandwidth, when it differs from A→Z.
    pub bw_reverse: Option<Mbps>,
    pub window: TimeWindow,
    pub ero: Ero,
    pub description: String,
    /// Provision at start and release at end without being asked.
    pub auto_provision: bool,
}

/// How far in the past a start may lie (clock skew, transit) before it is refused.
pub const START_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl Criteria {
    /// Checks what can be checked without the topology.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), Error> {
        if self.bw == Mbps::ZERO {
            return Err(Error::invalid(
                "capacity_mbps",
                "capacity must be a positive number of Mb/s",
            ));
        }
        check_start(self.window.start, now)?;
        Ok(())
    }
}

pub fn check_start(start: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Error> {
    if start < now - START_GRACE {
        return Err(Error::invalid(
            "start",
            format!(
                "start {} is in the past (now is {})",
                start.format("%Y-%m-%dT%H:%M:%SZ"),
                now.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        ));
    }
    Ok(())
}

/// One end of a booked circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub stp: Stp,
    pub vlan: Vlan,
}

/// One link crossed, with the nodes it is crossed from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathHop {
    pub link: String,
    pub from: String,
    pub to: String,
    /// The VLAN the circuit uses on this link (absent on paths stored before VLANs were
    /// recorded per hop: then it is the source VLAN).
    pub vlan: Option<Vlan>,
}

/// A path a dry run offers (ComputePaths), with how much room it has for the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCandidate {
    pub path: Vec<PathHop>,
    pub metric: u64,
    pub src_vlan: Vlan,
    pub dst_vlan: Vlan,
    /// The most A→Z bandwidth (at the request's A→Z:Z→A ratio) that fits on it.
    pub available: Mbps,
    /// What sets `available`.
    pub bottlenecks: Vec<String>,
}

/// What a dry run answers: the path a reservation would get, then alternatives by
/// metric, and the widest path if asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathOffers {
    pub requested: Mbps,
    pub requested_reverse: Mbps,
    pub best: PathCandidate,
    pub alternatives: Vec<PathCandidate>,
    pub widest: Option<PathCandidate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub id: String,
    pub owner: String,
    pub description: String,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// A→Z bandwidth.
    pub bw: Mbps,
    /// Z→A bandwidth (equal to `bw` for a symmetric circuit).
    pub bw_reverse: Mbps,
    pub window: TimeWindow,
    pub ero: Ero,
    pub path: Vec<PathHop>,
    pub version: u32,
    pub committed_version: Option<u32>,
    pub states: States,
    pub auto_provision: bool,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The series this reservation is an occurrence of, if any.
    pub series: Option<SeriesRef>,
    /// It ended without ever having been provisioned though it was to be, automatically:
    /// the IDC was not running at any moment of its window.
    pub missed: bool,
}

/// Which series a reservation belongs to, and which of its occurrences it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRef {
    pub id: String,
    /// From 1, in the order of the rule.
    pub occurrence: u32,
}

fn refuse(what: &str, id: &str, why: String) -> Error {
    Error::field(
        ErrorCode::InvalidTransition,
        "id",
        format!("cannot {what} {id}: {why}"),
    )
}

impl Reservation {
    /// A reservation that passed admission: Start → Checking → Held.
    #[allow(clippy::too_many_arguments)]
    pub fn held(
        id: String,
        owner: String,
        criteria: &Criteria,
        src_vlan: Vlan,
        dst_vlan: Vlan,
        path: Vec<PathHop>,
        now: DateTime<Utc>,
        hold_timeout: chrono::TimeDelta,
    ) -> (Reservation, Vec<Change>) {
        let r = Reservation {
            id,
            owner,
            description: criteria.description.clone(),
            src: Endpoint {
                stp: criteria.src.stp.clone(),
                vlan: src_vlan,
            },
            dst: Endpoint {
                stp: criteria.dst.stp.clone(),
                vlan: dst_vlan,
            },
            bw: criteria.bw,
            bw_reverse: criteria.bw_reverse.unwrap_or(criteria.bw),
            window: criteria.window,
            ero: criteria.ero.clone(),
            path,
            version: 1,
            committed_version: None,
            states: States {
                reservation: ReservationState::ReserveHeld,
                provision: ProvisionState::Released,
                lifecycle: LifecycleState::Created,
                data_plane_active: false,
            },
            auto_provision: criteria.auto_provision,
            hold_expires_at: Some(now + hold_timeout),
            created_at: now,
            updated_at: now,
            series: None,
            missed: false,
        };
        let changes = vec![Change {
            machine: Machine::Reservation,
            from: ReservationState::ReserveChecking.as_str().into(),
            to: ReservationState::ReserveHeld.as_str().into(),
            effective_at: now,
            detail: format!(
                "held until {}",
                (now + hold_timeout).format("%Y-%m-%dT%H:%M:%SZ")
            ),
        }];
        (r, changes)
    }

    /// Does this reservation's current version occupy bandwidth and labels at `now`?
    pub fn holds_resources(&self, now: DateTime<Utc>) -> bool {
        if matches!(
            self.states.lifecycle,
            LifecycleState::Terminating | LifecycleState::Terminated | LifecycleState::Failed
        ) {
            return false;
        }
        match self.states.reservation {
            ReservationState::ReserveHeld => self.hold_expires_at.is_some_and(|t| t > now),
            _ => self.committed_version.is_some(),
        }
    }

    fn change(&self, machine: Machine, from: &str, to: &str, at: DateTime<Utc>) -> Change {
        Change {
            machine,
            from: from.into(),
            to: to.into(),
            effective_at: at,
            detail: String::new(),
        }
    }

    fn rsm(&mut self, input: RsmInput, at: DateTime<Utc>, out: &mut Vec<Change>) -> bool {
        match self.states.reservation.next(input) {
            Some(next) => {
                let from = self.states.reservation;
                self.states.reservation = next;
                out.push(self.change(Machine::Reservation, from.as_str(), next.as_str(), at));
                true
            }
            None => false,
        }
    }

    fn psm(&mut self, input: PsmInput, at: DateTime<Utc>, out: &mut Vec<Change>) -> bool {
        match self.states.provision.next(input) {
            Some(next) => {
                let from = self.states.provision;
                self.states.provision = next;
                out.push(self.change(Machine::Provision, from.as_str(), next.as_str(), at));
                true
            }
            None => false,
        }
    }

    fn lsm(&mut self, input: LsmInput, at: DateTime<Utc>, out: &mut Vec<Change>) -> bool {
        match self.states.lifecycle.next(input) {
            Some(next) => {
                let from = self.states.lifecycle;
                self.states.lifecycle = next;
                out.push(self.change(Machine::Lifecycle, from.as_str(), next.as_str(), at));
                true
            }
            None => false,
        }
    }

    fn require_created(&self, what: &str) -> Result<(), Error> {
        if self.states.lifecycle != LifecycleState::Created {
            return Err(refuse(
                what,
                &self.id,
                format!("its lifecycle is {}", self.states.lifecycle),
            ));
        }
        Ok(())
    }

    /// The hold timer: Held → Timeout once `hold_expires_at` has passed. Called before
    /// every operation and by the scheduler, so a hold that expired while the IDC was
    /// down is recorded as expiring at its expiry time.
    pub fn expire_hold(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let mut out = Vec::new();
        if self.states.reservation == ReservationState::ReserveHeld
            && let Some(at) = self.hold_expires_at
            && at <= now
            && self.rsm(RsmInput::HoldTimeout, at, &mut out)
        {
            out[0].detail = "hold timer expired".into();
            self.updated_at = now;
        }
        out
    }

    pub fn commit(&mut self, now: DateTime<Utc>) -> Result<Vec<Change>, Error> {
        self.require_created("commit")?;
        if self.states.reservation == ReservationState::ReserveTimeout {
            return Err(refuse(
                "commit",
                &self.id,
                format!(
                    "its hold timed out at {}; reserve again",
                    self.hold_expires_at
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        let mut out = Vec::new();
        if !self.rsm(RsmInput::Commit, now, &mut out) {
            let why = if self.states.reservation == ReservationState::ReserveStart {
                match self.committed_version {
                    Some(v) => format!("version {v} is already committed"),
                    None => "it was aborted".into(),
                }
            } else {
                format!("it is {}, not ReserveHeld", self.states.reservation)
            };
            return Err(refuse("commit", &self.id, why));
        }
        self.rsm(RsmInput::CommitConfirmed, now, &mut out);
        self.committed_version = Some(self.version);
        self.hold_expires_at = None;
        self.updated_at = now;
        Ok(out)
    }

    pub fn abort(&mut self, now: DateTime<Utc>) -> Result<Vec<Change>, Error> {
        self.require_created("abort")?;
        let mut out = Vec::new();
        if !self.rsm(RsmInput::Abort, now, &mut out) {
            let why = if self.committed_version.is_some() {
                "it is committed; terminate it instead".to_string()
            } else {
                format!("it is {}", self.states.reservation)
            };
            return Err(refuse("abort", &self.id, why));
        }
        self.rsm(RsmInput::AbortConfirmed, now, &mut out);
        self.hold_expires_at = None;
        self.updated_at = now;
        Ok(out)
    }

    pub fn provision(&mut self, now: DateTime<Utc>) -> Result<Vec<Change>, Error> {
        self.require_created("provision")?;
        if self.committed_version.is_none() {
            return Err(refuse(
                "provision",
                &self.id,
                "nothing is committed yet; commit first".into(),
            ));
        }
        let mut out = Vec::new();
        if !self.psm(PsmInput::Provision, now, &mut out) {
            return Err(refuse(
                "provision",
                &self.id,
                format!("it is already {}", self.states.provision),
            ));
        }
        self.psm(PsmInput::ProvisionConfirmed, now, &mut out);
        out.extend(self.sync_data_plane(now));
        self.updated_at = now;
        Ok(out)
    }

    /// An explicit release also turns automatic provisioning off, so the scheduler does
    /// not bring the circuit back up behind the caller's back.
    pub fn release(&mut self, now: DateTime<Utc>) -> Result<Vec<Change>, Error> {
        self.require_created("release")?;
        let mut out = Vec::new();
        if !self.psm(PsmInput::Release, now, &mut out) {
            return Err(refuse(
                "release",
                &self.id,
                format!("it is {}, not Provisioned", self.states.provision),
            ));
        }
        self.psm(PsmInput::ReleaseConfirmed, now, &mut out);
        self.auto_provision = false;
        out.extend(self.sync_data_plane(now));
        self.updated_at = now;
        Ok(out)
    }

    pub fn terminate(&mut self, now: DateTime<Utc>) -> Result<Vec<Change>, Error> {
        let mut out = Vec::new();
        if !self.lsm(LsmInput::Terminate, now, &mut out) {
            return Err(refuse(
                "terminate",
                &self.id,
                format!("it is already {}", self.states.lifecycle),
            ));
        }
        if self.states.provision == ProvisionState::Provisioned {
            self.psm(PsmInput::Release, now, &mut out);
            self.psm(PsmInput::ReleaseConfirmed, now, &mut out);
        }
        self.lsm(LsmInput::TerminateConfirmed, now, &mut out);
        self.hold_expires_at = None;
        out.extend(self.sync_data_plane(now));
        self.updated_at = now;
        Ok(out)
    }

    /// The emergency stop: a forced end. The lifecycle goes to Failed (which holds no
    /// bandwidth or labels), a provisioned circuit is released, and the data plane goes
    /// down at once. `reason` (who stopped it) is the lifecycle change's detail. Stopping
    /// a reservation that already failed changes nothing, so a stop can be repeated
    /// everywhere; one that has ended otherwise is refused.
    pub fn emergency_stop(
        &mut self,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<Change>, Error> {
        if self.states.lifecycle == LifecycleState::Failed {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if !self.lsm(LsmInput::Error, now, &mut out) {
            return Err(refuse(
                "emergency-stop",
                &self.id,
                format!("it has already ended ({})", self.states.lifecycle),
            ));
        }
        out[0].detail = reason.to_string();
        if self.states.provision == ProvisionState::Provisioned {
            self.psm(PsmInput::Release, now, &mut out);
            self.psm(PsmInput::ReleaseConfirmed, now, &mut out);
        }
        self.auto_provision = false;
        self.hold_expires_at = None;
        out.extend(self.sync_data_plane(now));
        self.updated_at = now;
        Ok(out)
    }

    /// Checks that a new version may be admitted: committed, nothing pending, not ended.
    pub fn check_modifiable(&self, now: DateTime<Utc>) -> Result<(), Error> {
        self.require_created("modify")?;
        if self.states.reservation != ReservationState::ReserveStart
            || self.committed_version.is_none()
        {
            return Err(refuse(
                "modify",
                &self.id,
                format!(
                    "only a committed reservation can be modified; it is {}",
                    self.states.reservation
                ),
            ));
        }
        if self.window.end <= now {
            return Err(refuse("modify", &self.id, "its end time has passed".into()));
        }
        Ok(())
    }

    /// Applies an admitted new version: Start → Checking → Held → Committing → Start.
    pub fn apply_version(
        &mut self,
        bw: Mbps,
        bw_reverse: Mbps,
        window: TimeWindow,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>, Error> {
        self.check_modifiable(now)?;
        let mut out = Vec::new();
        for input in [
            RsmInput::Reserve,
            RsmInput::ReserveConfirmed,
            RsmInput::Commit,
            RsmInput::CommitConfirmed,
        ] {
            self.rsm(input, now, &mut out);
        }
        let mut version = self.change(
            Machine::Version,
            &self.version.to_string(),
            &(self.version + 1).to_string(),
            now,
        );
        let rate = |a: Mbps, z: Mbps| {
            if a == z {
                a.to_string()
            } else {
                format!("{a}/{z}")
            }
        };
        version.detail = format!(
            "{} {} → {} {}",
            rate(self.bw, self.bw_reverse),
            self.window,
            rate(bw, bw_reverse),
            window
        );
        out.push(version);
        self.version += 1;
        self.committed_version = Some(self.version);
        self.bw = bw;
        self.bw_reverse = bw_reverse;
        self.window = window;
        out.extend(self.sync_data_plane(now));
        self.updated_at = now;
        Ok(out)
    }

    /// The data plane is up only while Provisioned, Created and start ≤ now < end.
    pub fn data_plane_should_be_active(&self, now: DateTime<Utc>) -> bool {
        self.states.lifecycle == LifecycleState::Created
            && self.states.provision == ProvisionState::Provisioned
            && self.window.contains(now)
    }

    /// Brings `data_plane_active` in line with the states and the clock.
    pub fn sync_data_plane(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let should = self.data_plane_should_be_active(now);
        if should == self.states.data_plane_active {
            return Vec::new();
        }
        self.states.data_plane_active = should;
        let (from, to) = if should {
            ("inactive", "active")
        } else {
            ("active", "inactive")
        };
        // Going down because the window ended belongs at the end, even when noticed late;
        // coming up happens when it happens.
        let at = if should {
            now
        } else {
            now.min(self.window.end)
        };
        self.updated_at = now;
        vec![self.change(Machine::DataPlane, from, to, at)]
    }

    /// Automatic provisioning at the start of the window.
    pub fn auto_provision_at_start(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let mut out = Vec::new();
        if self.auto_provision
            && self.states.lifecycle == LifecycleState::Created
            && self.committed_version.is_some()
            && self.states.provision == ProvisionState::Released
            && self.window.contains(now)
        {
            let at = self.window.start;
            self.psm(PsmInput::Provision, at, &mut out);
            self.psm(PsmInput::ProvisionConfirmed, at, &mut out);
            out.extend(self.sync_data_plane(now));
            self.updated_at = now;
        }
        out
    }

    /// At the end of the window: data plane down, automatic release, PassedEndTime.
    pub fn pass_end_time(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let mut out = Vec::new();
        if self.states.lifecycle != LifecycleState::Created || now < self.window.end {
            return out;
        }
        let at = self.window.end;
        // Only a committed circuit reaches its end time; a held or aborted one is
        // settled by its hold timer or was never booked.
        if self.committed_version.is_none() {
            return out;
        }
        if self.auto_provision && self.states.provision == ProvisionState::Provisioned {
            self.psm(PsmInput::Release, at, &mut out);
            self.psm(PsmInput::ReleaseConfirmed, at, &mut out);
        } else if self.auto_provision && self.states.provision == ProvisionState::Released {
            // Automatic, yet never provisioned: the whole window passed while the IDC
            // was down. It is closed all the same, and said to be missed.
            self.missed = true;
        }
        out.extend(self.sync_data_plane(now));
        self.lsm(LsmInput::EndTime, at, &mut out);
        if self.missed
            && let Some(last) = out.last_mut()
        {
            last.detail = "missed: the IDC was not running at any time in the window".into();
        }
        self.updated_at = now;
        out
    }

    /// A one-word summary for people: held, committed, provisioned, active, ...
    pub fn summary(&self) -> &'static str {
        match self.states.lifecycle {
            LifecycleState::Terminated => return "terminated",
            LifecycleState::Terminating => return "terminating",
            LifecycleState::Failed => return "failed",
            LifecycleState::PassedEndTime if self.missed => return "missed",
            LifecycleState::PassedEndTime => return "ended",
            LifecycleState::Created => {}
        }
        match self.states.reservation {
            ReservationState::ReserveHeld => "held",
            ReservationState::ReserveTimeout => "timed-out",
            ReservationState::ReserveFailed => "reserve-failed",
            ReservationState::ReserveChecking => "checking",
            ReservationState::ReserveCommitting => "committing",
            ReservationState::ReserveAborting => "aborting",
            ReservationState::ReserveStart => match self.committed_version {
                None => "aborted",
                Some(_) if self.states.data_plane_active => "active",
                Some(_) if self.states.provision == ProvisionState::Provisioned => "provisioned",
                Some(_) => "committed",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::VlanSet;
    use chrono::TimeDelta;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn held(start: i64, end: i64, auto: bool) -> Reservation {
        let stp = |p: &str| StpRequest {
            stp: Stp::parse(&format!("d:n:{p}")).unwrap(),
            vlans: Some(VlanSet::parse("100").unwrap()),
        };
        let criteria = Criteria {
            src: stp("a"),
            dst: stp("b"),
            bw: Mbps(100),
            bw_reverse: None,
            window: TimeWindow::new(t(start), t(end)).unwrap(),
            ero: Ero::default(),
            description: "test".into(),
            auto_provision: auto,
        };
        let vlan = Vlan::new(100).unwrap();
        Reservation::held(
            "d-1".into(),
            "me".into(),
            &criteria,
            vlan,
            vlan,
            vec![],
            t(0),
            TimeDelta::seconds(120),
        )
        .0
    }

    fn codes<T>(r: Result<T, Error>) -> ErrorCode {
        r.err().expect("expected an error").code
    }

    #[test]
    fn rsm_table_matches_nsi() {
        use ReservationState as S;
        use RsmInput as I;
        let allowed = [
            (S::ReserveStart, I::Reserve, S::ReserveChecking),
            (S::ReserveChecking, I::ReserveConfirmed, S::ReserveHeld),
            (S::ReserveChecking, I::ReserveFailed, S::ReserveFailed),
            (S::ReserveHeld, I::Commit, S::ReserveCommitting),
            (S::ReserveHeld, I::Abort, S::ReserveAborting),
            (S::ReserveHeld, I::HoldTimeout, S::ReserveTimeout),
            (S::ReserveCommitting, I::CommitConfirmed, S::ReserveStart),
            (S::ReserveCommitting, I::CommitFailed, S::ReserveStart),
            (S::ReserveFailed, I::Abort, S::ReserveAborting),
            (S::ReserveTimeout, I::Abort, S::ReserveAborting),
            (S::ReserveAborting, I::AbortConfirmed, S::ReserveStart),
        ];
        let inputs = [
            I::Reserve,
            I::ReserveConfirmed,
            I::ReserveFailed,
            I::Commit,
            I::CommitConfirmed,
            I::CommitFailed,
            I::Abort,
            I::AbortConfirmed,
            I::HoldTimeout,
        ];
        for &s in S::ALL {
            for input in inputs {
                let expect = allowed
                    .iter()
                    .find(|(from, i, _)| *from == s && *i == input)
                    .map(|(_, _, to)| *to);
                assert_eq!(s.next(input), expect, "{s} on {input:?}");
            }
        }
    }

    #[test]
    fn psm_and_lsm_tables() {
        use LifecycleState as L;
        use ProvisionState as P;
        assert_eq!(P::Released.next(PsmInput::Provision), Some(P::Provisioning));
        assert_eq!(P::Released.next(PsmInput::Release), None);
        assert_eq!(P::Provisioned.next(PsmInput::Provision), None);
        assert_eq!(P::Provisioned.next(PsmInput::Release), Some(P::Releasing));
        assert_eq!(L::Created.next(LsmInput::EndTime), Some(L::PassedEndTime));
        assert_eq!(
            L::PassedEndTime.next(LsmInput::Terminate),
            Some(L::Terminating)
        );
        assert_eq!(L::Terminated.next(LsmInput::Terminate), None);
        assert_eq!(L::PassedEndTime.next(LsmInput::EndTime), None);
        for s in L::ALL {
            assert_eq!(L::parse(s.as_str()), Some(*s));
        }
    }

    #[test]
    fn commit_twice_or_after_abort_is_invalid() {
        let mut r = held(100, 200, false);
        assert_eq!(r.summary(), "held");
        let changes = r.commit(t(1)).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(r.committed_version, Some(1));
        assert_eq!(r.summary(), "committed");
        assert_eq!(codes(r.commit(t(2))), ErrorCode::InvalidTransition);
        assert_eq!(codes(r.abort(t(2))), ErrorCode::InvalidTransition);

        let mut r = held(100, 200, false);
        r.abort(t(1)).unwrap();
        assert_eq!(r.summary(), "aborted");
        assert!(!r.holds_resources(t(1)));
        assert_eq!(codes(r.commit(t(2))), ErrorCode::InvalidTransition);
    }

    #[test]
    fn hold_times_out_at_its_expiry_even_when_noticed_late() {
        let mut r = held(1000, 2000, false);
        assert!(r.holds_resources(t(119)));
        assert!(!r.holds_resources(t(120)));
        assert!(r.expire_hold(t(60)).is_empty());
        let changes = r.expire_hold(t(500));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to, "ReserveTimeout");
        assert_eq!(changes[0].effective_at, t(120));
        let e = r.commit(t(500)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTransition);
        assert!(e.message.contains("timed out"), "{}", e.message);
        // NSI allows an abort after a timeout.
        r.abort(t(501)).unwrap();
        assert_eq!(r.states.reservation, ReservationState::ReserveStart);
    }

    #[test]
    fn provision_needs_a_commit() {
        let mut r = held(100, 200, false);
        assert_eq!(codes(r.provision(t(1))), ErrorCode::InvalidTransition);
        r.commit(t(1)).unwrap();
        r.provision(t(2)).unwrap();
        assert_eq!(r.states.provision, ProvisionState::Provisioned);
        assert!(!r.states.data_plane_active, "not before start");
        assert_eq!(codes(r.provision(t(3))), ErrorCode::InvalidTransition);
        let c = r.sync_data_plane(t(150));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].effective_at, t(150));
        assert!(r.states.data_plane_active);
        assert_eq!(r.summary(), "active");
        r.release(t(160)).unwrap();
        assert!(!r.states.data_plane_active);
        assert_eq!(codes(r.release(t(161))), ErrorCode::InvalidTransition);
    }

    #[test]
    fn automatic_mode_provisions_at_start_and_releases_at_end() {
        let mut r = held(100, 200, true);
        r.commit(t(1)).unwrap();
        assert!(r.auto_provision_at_start(t(50)).is_empty(), "too early");
        let c = r.auto_provision_at_start(t(100));
        let machines: Vec<_> = c.iter().map(|c| (c.machine, c.to.as_str())).collect();
        assert_eq!(
            machines,
            vec![
                (Machine::Provision, "Provisioning"),
                (Machine::Provision, "Provisioned"),
                (Machine::DataPlane, "active"),
            ]
        );
        let c = r.pass_end_time(t(250));
        assert_eq!(r.states.provision, ProvisionState::Released);
        assert_eq!(r.states.lifecycle, LifecycleState::PassedEndTime);
        assert!(!r.states.data_plane_active);
        assert!(c.iter().all(|c| c.effective_at == t(200)), "{c:?}");
        assert_eq!(codes(r.provision(t(251))), ErrorCode::InvalidTransition);
        r.terminate(t(252)).unwrap();
        assert_eq!(r.states.lifecycle, LifecycleState::Terminated);
        assert_eq!(codes(r.terminate(t(253))), ErrorCode::InvalidTransition);
    }

    #[test]
    fn explicit_release_stops_automatic_provisioning() {
        let mut r = held(100, 200, true);
        r.commit(t(1)).unwrap();
        r.auto_provision_at_start(t(100));
        r.release(t(120)).unwrap();
        assert!(r.auto_provision_at_start(t(121)).is_empty());
        assert_eq!(r.states.provision, ProvisionState::Released);
    }

    #[test]
    fn terminate_frees_and_releases() {
        let mut r = held(100, 200, false);
        r.commit(t(1)).unwrap();
        r.provision(t(110)).unwrap();
        assert!(r.states.data_plane_active);
        r.terminate(t(120)).unwrap();
        assert_eq!(r.states.provision, ProvisionState::Released);
        assert!(!r.states.data_plane_active);
        assert!(!r.holds_resources(t(120)));
        assert_eq!(codes(r.provision(t(121))), ErrorCode::InvalidTransition);
        assert_eq!(codes(r.commit(t(121))), ErrorCode::InvalidTransition);
    }

    #[test]
    fn emergency_stop_is_a_forced_end_that_can_be_repeated() {
        let mut r = held(100, 200, true);
        r.commit(t(1)).unwrap();
        r.auto_provision_at_start(t(100));
        assert!(r.states.data_plane_active);
        let changes = r.emergency_stop(t(120), "emergency stop by gmoc").unwrap();
        assert_eq!(r.states.lifecycle, LifecycleState::Failed);
        assert_eq!(r.states.provision, ProvisionState::Released);
        assert!(!r.states.data_plane_active);
        assert!(!r.holds_resources(t(120)));
        assert!(changes.iter().any(|c| c.machine == Machine::Lifecycle
            && c.to == "Failed"
            && c.detail == "emergency stop by gmoc"));
        assert!(
            changes
                .iter()
                .any(|c| c.machine == Machine::DataPlane && c.to == "inactive")
        );
        // Nothing brings it back: not the scheduler, not a provision.
        assert!(r.auto_provision_at_start(t(130)).is_empty());
        assert!(!r.data_plane_should_be_active(t(130)));
        assert_eq!(codes(r.provision(t(131))), ErrorCode::InvalidTransition);
        // Again: nothing to do; a terminate still ends it.
        assert!(r.emergency_stop(t(140), "again").unwrap().is_empty());
        r.terminate(t(150)).unwrap();
        assert_eq!(
            codes(r.emergency_stop(t(160), "late")),
            ErrorCode::InvalidTransition
        );
    }

    #[test]
    fn modify_makes_a_new_version() {
        let mut r = held(100, 200, false);
        assert_eq!(
            codes(r.check_modifiable(t(1))),
            ErrorCode::InvalidTransition
        );
        r.commit(t(1)).unwrap();
        let w = TimeWindow::new(t(100), t(300)).unwrap();
        let c = r.apply_version(Mbps(50), Mbps(50), w, t(2)).unwrap();
        assert_eq!(r.version, 2);
        assert_eq!(r.committed_version, Some(2));
        assert_eq!(r.bw, Mbps(50));
        assert_eq!(r.states.reservation, ReservationState::ReserveStart);
        assert!(
            c.iter()
                .any(|c| c.machine == Machine::Version && c.to == "2")
        );
        assert_eq!(
            codes(r.check_modifiable(t(400))),
            ErrorCode::InvalidTransition
        );
    }

    #[test]
    fn criteria_check_refuses_zero_and_past() {
        let r = held(100, 200, false);
        let mut c = Criteria {
            src: StpRequest {
                stp: r.src.stp.clone(),
                vlans: None,
            },
            dst: StpRequest {
                stp: r.dst.stp.clone(),
                vlans: None,
            },
            bw: Mbps(0),
            bw_reverse: None,
            window: r.window,
            ero: Ero::default(),
            description: String::new(),
            auto_provision: false,
        };
        assert_eq!(
            c.check(t(0)).unwrap_err().field.as_deref(),
            Some("capacity_mbps")
        );
        c.bw = Mbps(1);
        assert!(c.check(t(0)).is_ok());
        assert!(c.check(t(150)).is_ok(), "within the grace");
        assert_eq!(c.check(t(500)).unwrap_err().field.as_deref(), Some("start"));
    }
}
