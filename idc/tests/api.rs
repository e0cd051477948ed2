//! The IDC end to end through its real gRPC client: a server on 127.0.0.1:0 with its own
//! temporary SQLite database, driven the way users drive it. Every network wait is
//! bounded; asynchronous effects are polled with `testing::eventually`, never slept on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_idc::store::{BandwidthRow, LabelRow};
use sluice_idc::testing::{TestIdc, eventually};
use sluice_model::topology::fixture;
use sluice_model::{Direction, Error, ErrorCode, Topology};
use sluice_proto::convert::{self, timestamp as ts};
use sluice_proto::status::{from_status, grpc_code};
use sluice_proto::v1;
use sluice_proto::v1::reservations_client::ReservationsClient;
use tonic::transport::Channel;

/// The longest any single call or wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

// ---------------------------------------------------------------------------------------
// Client and request helpers

#[derive(Clone)]
struct Client {
    c: ReservationsClient<Channel>,
    user: String,
}

/// The error a call failed with, read back from the status; the status code must be the
/// one the stable code maps onto.
fn error(s: tonic::Status) -> Error {
    let e = from_status(&s);
    assert_eq!(s.code(), grpc_code(e.code), "gRPC status for {e}");
    e
}

type R<T> = Result<T, Error>;

impl Client {
    async fn new(idc: &TestIdc, user: &str) -> Client {
        Client {
            c: bounded("connect", idc.client()).await,
            user: user.to_string(),
        }
    }

    fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut().insert(
            sluice_proto::USER_HEADER,
            self.user.parse().expect("ascii user"),
        );
        r
    }

    async fn reserve_raw(&mut self, m: v1::ReserveRequest) -> R<v1::Reservation> {
        let r = self.req(m);
        bounded("reserve", self.c.reserve(r))
            .await
            .map(|r| r.into_inner())
            .map_err(error)
    }

    async fn reserve(&mut self, c: v1::Criteria) -> R<v1::Reservation> {
        self.reserve_raw(v1::ReserveRequest {
            verify_each: None,
            criteria: Some(c),
        })
        .await
    }

    /// Reserve and commit, expecting both to succeed.
    async fn book(&mut self, c: v1::Criteria) -> v1::Reservation {
        let r = self.reserve(c).await.expect("reserve");
        self.commit(&r.id).await.expect("commit")
    }

    async fn id_call(&mut self, what: &str, id: &str) -> R<v1::Reservation> {
        let m = v1::IdRequest { id: id.to_string() };
        let r = self.req(m);
        let fut = async {
            match what {
                "commit" => self.c.commit(r).await,
                "abort" => self.c.abort(r).await,
                "provision" => self.c.provision(r).await,
                "release" => self.c.release(r).await,
                "terminate" => self.c.terminate(r).await,
                "get" => self.c.get(r).await,
                other => panic!("no call {other}"),
            }
        };
        bounded(what, fut)
            .await
            .map(|r| r.into_inner())
            .map_err(error)
    }

    async fn commit(&mut self, id: &str) -> R<v1::Reservation> {
        self.id_call("commit", id).await
    }
    async fn abort(&mut self, id: &str) -> R<v1::Reservation> {
        self.id_call("abort", id).await
    }
    async fn provision(&mut self, id: &str) -> R<v1::Reservation> {
        self.id_call("provision", id).await
    }
    async fn release(&mut self, id: &str) -> R<v1::Reservation> {
        self.id_call("release", id).await
    }
    async fn terminate(&mut self, id: &str) -> R<v1::Reservation> {
        self.id_call("terminate", id).await
    }
    async fn get(&mut self, id: &str) -> R<v1::Reservation> {
        self.id_call("get", id).await
    }

    async fn modify(&mut self, m: v1::ModifyRequest) -> R<v1::Reservation> {
        let r = self.req(m);
        bounded("modify", self.c.modify(r))
            .await
            .map(|r| r.into_inner())
            .map_err(error)
    }

    async fn list(&mut self, m: v1::ListRequest) -> R<v1::ListReply> {
        let r = self.req(m);
        bounded("list", self.c.list(r))
            .await
            .map(|r| r.into_inner())
            .map_err(error)
    }

    async fn list_all(&mut self) -> Vec<v1::Reservation> {
        self.list(v1::ListRequest::default())
            .await
            .expect("list")
            .reservations
    }

    async fn availability(&mut self, m: v1::AvailabilityRequest) -> R<v1::AvailabilityReply> {
        let r = self.req(m);
        bounded("availability", self.c.availability(r))
            .await
            .map(|r| r.into_inner())
            .map_err(error)
    }

    async fn watch(&mut self, m: v1::WatchRequest) -> tonic::Streaming<v1::Event> {
        let r = self.req(m);
        bounded("watch", self.c.watch(r))
            .await
            .expect("watch")
            .into_inner()
    }
}

/// Shuts the server down, bounded: a shutdown that hangs fails the test.
async fn stop(t: TestIdc) {
    bounded("shutdown", t.shutdown()).await;
}

async fn next_event(s: &mut tonic::Streaming<v1::Event>) -> v1::Event {
    bounded("next event", s.message())
        .await
        .expect("the stream carries no error")
        .expect("the stream is still open")
}

fn crit(src: &str, dst: &str, bw: i64, start: DateTime<Utc>, end: DateTime<Utc>) -> v1::Criteria {
    v1::Criteria {
        src: src.into(),
        dst: dst.into(),
        capacity_mbps: bw,
        start: Some(ts(start)),
        end: Some(ts(end)),
        provision_mode: v1::ProvisionMode::Manual as i32,
        ..Default::default()
    }
}

fn modify(
    id: &str,
    bw: Option<i64>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> v1::ModifyRequest {
    v1::ModifyRequest {
        id: id.into(),
        capacity_mbps: bw,
        start: start.map(ts),
        end: end.map(ts),
        reverse_capacity_mbps: None,
    }
}

/// A wire time (`Option<Timestamp>`) as a `DateTime`.
macro_rules! time {
    ($t:expr) => {
        convert::from_timestamp($t.as_ref().expect("time is set"), "t").expect("valid time")
    };
}

/// The three machines, the data plane and the summary, by name.
fn states(r: &v1::Reservation) -> (&'static str, &'static str, &'static str, bool, String) {
    let s = r.states.as_ref().expect("states");
    (
        convert::reservation_state_name(s.reservation()),
        convert::provision_state_name(s.provision()),
        convert::lifecycle_state_name(s.lifecycle()),
        s.data_plane_active,
        s.summary.clone(),
    )
}

fn summary(r: &v1::Reservation) -> String {
    states(r).4
}

fn ids(rs: &[v1::Reservation]) -> Vec<String> {
    rs.iter().map(|r| r.id.clone()).collect()
}

fn expect_err<T: std::fmt::Debug>(r: R<T>, code: ErrorCode, field: &str) -> Error {
    let e = r.expect_err("expected an error");
    assert_eq!((e.code, e.field.as_deref()), (code, Some(field)), "{e}");
    e
}

/// A fixed time with whole seconds, well in the future of `now`: the base of windows.
fn base_after(now: DateTime<Utc>, hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp(), 0).unwrap() + TimeDelta::hours(hours)
}

fn h(x: f64) -> TimeDelta {
    TimeDelta::milliseconds((x * 3_600_000.0) as i64)
}

/// a —100— b, edge ports of 1000 Mb/s with VLANs 100-199.
fn line() -> Topology {
    fixture::from_links("d", &[("a", "b", 100, 1)], 1000)
}

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

/// Bandwidth rows that still count at `now` (committed, or held and unexpired), sorted.
fn live_rows(t: &TestIdc, now: DateTime<Utc>) -> Vec<BandwidthRow> {
    let now = now.timestamp_millis();
    let mut rows: Vec<_> = t
        .idc()
        .store()
        .all_bandwidth_bookings()
        .expect("bookings")
        .into_iter()
        .filter(|r| r.hold_expires_ms.is_none_or(|h| h > now))
        .collect();
    rows.sort_by(|a, b| {
        (&a.reservation_id, &a.resource, &a.direction).cmp(&(
            &b.reservation_id,
            &b.resource,
            &b.direction,
        ))
    });
    rows
}

fn all_rows(t: &TestIdc) -> Vec<BandwidthRow> {
    live_rows(t, DateTime::<Utc>::MIN_UTC)
}

/// The highest booked level of `rows` at any instant of [start, end).
fn peak(rows: &[&BandwidthRow], start: i64, end: i64) -> u64 {
    let mut points: BTreeSet<i64> = rows
        .iter()
        .map(|r| r.start_ms)
        .filter(|&s| s > start && s < end)
        .collect();
    points.insert(start);
    points
        .iter()
        .map(|&p| {
            rows.iter()
                .filter(|r| r.start_ms <= p && p < r.end_ms)
                .map(|r| r.bw_mbps as u64)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Asserts that no resource direction is booked beyond its capacity at any instant.
fn assert_never_over_booked(topo: &Topology, rows: &[BandwidthRow]) {
    let mut by_resource: BTreeMap<(String, String), Vec<&BandwidthRow>> = BTreeMap::new();
    for r in rows {
        by_resource
            .entry((r.resource.clone(), r.direction.clone()))
            .or_default()
            .push(r);
    }
    for ((resource, direction), rs) in by_resource {
        let dir = Direction::parse(&direction).expect("direction");
        let cap = topo
            .capacity(
                topo.resource_by_key(&resource, dir)
                    .expect("known resource"),
            )
            .0;
        // The level only rises at a start, so checking every start checks every instant.
        for r in &rs {
            let level: u64 = rs
                .iter()
                .filter(|x| x.start_ms <= r.start_ms && r.start_ms < x.end_ms)
                .map(|x| x.bw_mbps as u64)
                .sum();
            assert!(
                level <= cap,
                "{resource} ({direction}) is booked {level} > {cap} at {} ms",
                r.start_ms
            );
        }
    }
}

/// What a failed request must leave untouched.
async fn snapshot(t: &TestIdc, c: &mut Client) -> (Vec<v1::Reservation>, Vec<BandwidthRow>, u64) {
    let list = c.list_all().await;
    let seq = t.idc().last_event_seq().await.expect("seq");
    (list, all_rows(t), seq)
}

/// A small deterministic generator (splitmix64), so every run races the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        (!xs.is_empty()).then(|| &xs[self.range(0, xs.len() as i64 - 1) as usize])
    }
}

// ---------------------------------------------------------------------------------------
// The lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_lifecycle_reserve_commit_provision_release_terminate() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let now = t.idc().now();
    let end = now + TimeDelta::hours(1);
    // No start: it starts now, so provisioning brings the data plane up at once.
    let mut first = crit("d:a:p0", "d:b:p0", 80, now, end);
    first.start = None;
    first.description = "lifecycle".into();

    let r = c.reserve(first).await.unwrap();
    assert_eq!(
        states(&r),
        ("ReserveHeld", "Released", "Created", false, "held".into())
    );
    assert_eq!(r.owner, "alice");
    assert_eq!(r.description, "lifecycle");
    assert_eq!((r.version, r.committed_version), (1, None));
    assert_eq!(r.capacity_mbps, 80);
    assert_eq!((r.src.as_str(), r.dst.as_str()), ("d:a:p0", "d:b:p0"));
    assert!((100..=199).contains(&r.src_vlan));
    assert_eq!(
        r.src_vlan, r.dst_vlan,
        "same VLAN at both ends without translation"
    );
    let path: Vec<_> = r
        .path
        .iter()
        .map(|h| (h.link.as_str(), h.from.as_str(), h.to.as_str()))
        .collect();
    assert_eq!(path, [("a-b", "a", "b")]);
    assert!(time!(r.hold_expires_at) > now);
    assert_eq!(time!(r.end), end);
    assert_eq!(r.provision_mode, v1::ProvisionMode::Manual as i32);
    assert_eq!(
        c.get(&r.id).await.unwrap(),
        r,
        "Get shows what Reserve answered"
    );

    // A second booking that does not fit beside the first.
    let second = crit("d:b:p0", "d:a:p0", 50, now + TimeDelta::minutes(5), end);
    let e = expect_err(
        c.reserve(second.clone()).await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    assert_eq!(e.capacity.unwrap().available.0, 20);

    let r = c.commit(&r.id).await.unwrap();
    assert_eq!(
        states(&r),
        (
            "ReserveStart",
            "Released",
            "Created",
            false,
            "committed".into()
        )
    );
    assert_eq!(r.committed_version, Some(1));
    assert_eq!(r.hold_expires_at, None);
    assert_eq!(c.get(&r.id).await.unwrap(), r);

    let r = c.provision(&r.id).await.unwrap();
    assert_eq!(
        states(&r),
        (
            "ReserveStart",
            "Provisioned",
            "Created",
            true,
            "active".into()
        )
    );
    assert_eq!(c.get(&r.id).await.unwrap(), r);

    let r = c.release(&r.id).await.unwrap();
    assert_eq!(
        states(&r),
        (
            "ReserveStart",
            "Released",
            "Created",
            false,
            "committed".into()
        )
    );
    assert_eq!(c.get(&r.id).await.unwrap(), r);

    let r = c.terminate(&r.id).await.unwrap();
    assert_eq!(
        states(&r),
        (
            "ReserveStart",
            "Released",
            "Terminated",
            false,
            "terminated".into()
        )
    );
    assert_eq!(c.get(&r.id).await.unwrap(), r);
    assert!(
        all_rows(&t).iter().all(|b| b.reservation_id != r.id),
        "terminate freed the bookings"
    );
    expect_err(c.provision(&r.id).await, ErrorCode::InvalidTransition, "id");
    expect_err(c.terminate(&r.id).await, ErrorCode::InvalidTransition, "id");

    // What did not fit now fits.
    let s = c.book(second).await;
    assert_eq!(summary(&s), "committed");

    // The event log tells the same story, in order.
    let log: Vec<String> = t
        .idc()
        .events_after(0, Some(r.id.clone()))
        .await
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}->{}",
                e.change.machine.as_str(),
                e.change.from,
                e.change.to
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            "reservation:ReserveChecking->ReserveHeld",
            "reservation:ReserveHeld->ReserveCommitting",
            "reservation:ReserveCommitting->ReserveStart",
            "provision:Released->Provisioning",
            "provision:Provisioning->Provisioned",
            "data_plane:inactive->active",
            "provision:Provisioned->Releasing",
            "provision:Releasing->Released",
            "data_plane:active->inactive",
            "lifecycle:Created->Terminating",
            "lifecycle:Terminating->Terminated",
        ]
    );
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn times_are_kept_at_the_idcs_resolution_everywhere() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let base = base_after(t.idc().now(), 1);
    let odd = |d: DateTime<Utc>| d + TimeDelta::nanoseconds(123_456_789);
    let r = c
        .reserve(crit("d:a:p0", "d:b:p0", 10, odd(base), odd(base + h(1.0))))
        .await
        .unwrap();
    // What Reserve answers is what is stored: Get, List and a restart agree with it.
    assert_eq!(c.get(&r.id).await.unwrap(), r);
    assert_eq!(c.list_all().await, vec![r.clone()]);
    assert_eq!(
        time!(r.start).timestamp_subsec_nanos() % 1_000_000,
        0,
        "{:?}",
        r.start
    );
    stop(t).await;
}

// ---------------------------------------------------------------------------------------
// Bad input

enum Op {
    Reserve(v1::Criteria),
    ReserveRaw(v1::ReserveRequest),
    Commit(String),
    Abort(String),
    Provision(String),
    Release(String),
    Modify(v1::ModifyRequest),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_its_code_and_field_and_changes_nothing() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let now = t.idc().now();
    let base = base_after(now, 1);
    let (s, e) = (base, base + h(2.0));
    let good = || crit("d:a:p0", "d:b:p0", 10, s, e);
    // A committed 30, an aborted 10 and a held 10 on the 100 Mb/s link a-b.
    let committed = c.book(crit("d:a:p0", "d:b:p0", 30, s, e)).await;
    let aborted = c.reserve(good()).await.unwrap();
    c.abort(&aborted.id).await.unwrap();
    let held = c.reserve(good()).await.unwrap();
    let (x, a, hd) = (committed.id.clone(), aborted.id.clone(), held.id.clone());

    let with = |edit: &dyn Fn(&mut v1::Criteria)| {
        let mut c = good();
        edit(&mut c);
        Op::Reserve(c)
    };
    let bad_nanos = |d: DateTime<Utc>, nanos: i32| {
        let mut t = ts(d);
        t.nanos = nanos;
        Some(t)
    };
    // A second that ends in :59 is where a leap second could be spelt with nanos ≥ 1e9.
    let at59 = DateTime::from_timestamp(s.timestamp() - s.timestamp().rem_euclid(60) + 59, 0)
        .unwrap()
        + h(1.0);
    use ErrorCode as C;
    let rows: Vec<(&str, Op, ErrorCode, &str)> = vec![
        (
            "unknown node in src",
            with(&|c| c.src = "d:zz:p0".into()),
            C::UnknownStp,
            "src",
        ),
        (
            "unknown port in dst",
            with(&|c| c.dst = "d:b:nope".into()),
            C::UnknownStp,
            "dst",
        ),
        (
            "STP of another domain",
            with(&|c| c.src = "other:a:p0".into()),
            C::UnknownStp,
            "src",
        ),
        (
            "malformed STP",
            with(&|c| c.dst = "nonsense".into()),
            C::UnknownStp,
            "dst",
        ),
        (
            "internal port as end point",
            with(&|c| c.src = "d:a:to-b".into()),
            C::UnknownStp,
            "src",
        ),
        (
            "VLAN outside the port's range",
            with(&|c| c.src_vlan = "50".into()),
            C::InvalidLabelFormat,
            "src_vlan",
        ),
        (
            "VLAN outside the range in the STP",
            with(&|c| c.dst = "d:b:p0?vlan=300".into()),
            C::InvalidLabelFormat,
            "dst_vlan",
        ),
        (
            "VLAN that is not a number",
            with(&|c| c.src_vlan = "abc".into()),
            C::InvalidLabelFormat,
            "src_vlan",
        ),
        (
            "end before start",
            with(&|c| c.end = Some(ts(s - h(1.0)))),
            C::InvalidParameter,
            "end",
        ),
        (
            "end equal to start",
            with(&|c| c.end = Some(ts(s))),
            C::InvalidParameter,
            "end",
        ),
        (
            "start in the past",
            with(&|c| c.start = Some(ts(now - h(2.0)))),
            C::InvalidParameter,
            "start",
        ),
        (
            "zero bandwidth",
            with(&|c| c.capacity_mbps = 0),
            C::InvalidParameter,
            "capacity_mbps",
        ),
        (
            "negative bandwidth",
            with(&|c| c.capacity_mbps = -100),
            C::InvalidParameter,
            "capacity_mbps",
        ),
        (
            "over-capacity bandwidth",
            with(&|c| c.capacity_mbps = 80),
            C::CapacityUnavailable,
            "capacity_mbps",
        ),
        (
            "malformed start (nanos -1)",
            with(&|c| c.start = bad_nanos(s, -1)),
            C::InvalidParameter,
            "start",
        ),
        (
            "malformed end (nanos -1)",
            with(&|c| c.end = bad_nanos(e, -1)),
            C::InvalidParameter,
            "end",
        ),
        (
            "malformed end (nanos 1.5e9)",
            with(&|c| c.end = bad_nanos(at59, 1_500_000_000)),
            C::InvalidParameter,
            "end",
        ),
        (
            "missing criteria",
            Op::ReserveRaw(v1::ReserveRequest {
                verify_each: None,
                criteria: None,
            }),
            C::MissingParameter,
            "criteria",
        ),
        (
            "missing end",
            with(&|c| c.end = None),
            C::MissingParameter,
            "end",
        ),
        (
            "missing src",
            with(&|c| c.src.clear()),
            C::MissingParameter,
            "src",
        ),
        (
            "same port at both ends",
            with(&|c| c.dst = "d:a:p0".into()),
            C::InvalidParameter,
            "dst",
        ),
        (
            "unknown ERO member",
            with(&|c| c.ero_include = vec!["zz".into()]),
            C::InvalidEroMember,
            "ero_include[0]",
        ),
        (
            "commit of an unknown id",
            Op::Commit("d-000000000000".into()),
            C::ReservationNonexistent,
            "id",
        ),
        (
            "commit without an id",
            Op::Commit(String::new()),
            C::MissingParameter,
            "id",
        ),
        (
            "a second commit",
            Op::Commit(x.clone()),
            C::InvalidTransition,
            "id",
        ),
        (
            "commit after abort",
            Op::Commit(a.clone()),
            C::InvalidTransition,
            "id",
        ),
        (
            "provision before commit",
            Op::Provision(hd.clone()),
            C::InvalidTransition,
            "id",
        ),
        (
            "abort after commit",
            Op::Abort(x.clone()),
            C::InvalidTransition,
            "id",
        ),
        (
            "release before provision",
            Op::Release(x.clone()),
            C::InvalidTransition,
            "id",
        ),
        (
            "modify of an unknown id",
            Op::Modify(modify("d-000000000000", Some(5), None, None)),
            C::ReservationNonexistent,
            "id",
        ),
        (
            "modify of a hold",
            Op::Modify(modify(&hd, Some(5), None, None)),
            C::InvalidTransition,
            "id",
        ),
        (
            "modify with nothing to change",
            Op::Modify(modify(&x, None, None, None)),
            C::MissingParameter,
            "capacity_mbps",
        ),
        (
            "modify to zero",
            Op::Modify(modify(&x, Some(0), None, None)),
            C::InvalidParameter,
            "capacity_mbps",
        ),
        (
            "modify to end before start",
            Op::Modify(modify(&x, None, None, Some(s - h(1.0)))),
            C::InvalidParameter,
            "end",
        ),
        (
            "modify with a malformed end",
            Op::Modify(v1::ModifyRequest {
                end: bad_nanos(e, -1),
                ..modify(&x, None, None, None)
            }),
            C::InvalidParameter,
            "end",
        ),
        (
            "modify over capacity",
            Op::Modify(modify(&x, Some(100), None, None)),
            C::CapacityUnavailable,
            "capacity_mbps",
        ),
    ];

    let before = snapshot(&t, &mut c).await;
    assert_eq!(before.0.len(), 3);
    for (name, op, code, field) in rows {
        let result = match op {
            Op::Reserve(cr) => c.reserve(cr).await,
            Op::ReserveRaw(m) => c.reserve_raw(m).await,
            Op::Commit(id) => c.commit(&id).await,
            Op::Abort(id) => c.abort(&id).await,
            Op::Provision(id) => c.provision(&id).await,
            Op::Release(id) => c.release(&id).await,
            Op::Modify(m) => c.modify(m).await,
        };
        let e = match result {
            Ok(r) => panic!("{name}: accepted: {r:?}"),
            Err(e) => e,
        };
        assert_eq!(
            (e.code, e.field.as_deref()),
            (code, Some(field)),
            "{name}: {e}"
        );
        assert!(!e.message.is_empty(), "{name}: a message");
        if code == C::CapacityUnavailable {
            let cap = e
                .capacity
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no capacity feedback"));
            // 30 committed + 10 held of 100; a modify does not count its own 30.
            let (requested, available) = if name.starts_with("modify") {
                (100, 90)
            } else {
                (80, 60)
            };
            assert_eq!(
                (cap.requested.0, cap.available.0),
                (requested, available),
                "{name}"
            );
            assert!(!cap.bottlenecks.is_empty(), "{name}: names the bottleneck");
        }
        assert_eq!(
            snapshot(&t, &mut c).await,
            before,
            "{name}: something changed"
        );
    }
    stop(t).await;
}

// ---------------------------------------------------------------------------------------
// Exact admission

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_that_ends_before_the_window_does_not_count() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    let (ab, ba) = ("d:a:p0", "d:b:p0");
    c.book(crit(ab, ba, 100, b + h(1.0), b + h(2.0))).await;
    // Back to back on both sides: the whole link each time.
    c.book(crit(ba, ab, 100, b + h(2.0), b + h(3.0))).await;
    c.book(crit(ab, ba, 100, b, b + h(1.0))).await;
    // Anything that overlaps by a second is refused, with nothing available.
    let e = expect_err(
        c.reserve(crit(
            ab,
            ba,
            1,
            b + h(2.0) - TimeDelta::seconds(1),
            b + h(2.5),
        ))
        .await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    assert_eq!(e.capacity.unwrap().available.0, 0);
    c.book(crit(ab, ba, 100, b + h(3.0), b + h(4.0))).await;
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_counts_the_peak_not_the_sum() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    let (ab, ba) = ("d:a:p0", "d:b:p0");
    // OSCARS 0.6 would sum these to 120 on a 100 Mb/s link; only two overlap at a time.
    for (s, e) in [(0.0, 10.0), (5.0, 15.0), (12.0, 20.0)] {
        c.book(crit(ab, ba, 40, b + h(s), b + h(e))).await;
    }
    let e = expect_err(
        c.reserve(crit(ab, ba, 40, b + h(6.0), b + h(13.0))).await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    let cap = e.capacity.unwrap();
    assert_eq!((cap.requested.0, cap.available.0), (40, 20));
    c.book(crit(ab, ba, 20, b + h(6.0), b + h(13.0))).await;
    assert_never_over_booked(t.idc().topology(), &live_rows(&t, t.idc().now()));
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_error_reports_the_best_paths_headroom() {
    let t = TestIdc::builder().topology(diamond()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    let (ad, da) = ("d:a:p0", "d:d:p0");
    let first = c.book(crit(ad, da, 70, b, b + h(2.0))).await;
    let hops = |r: &v1::Reservation| r.path.iter().map(|h| h.to.clone()).collect::<Vec<_>>();
    assert_eq!(hops(&first), ["b", "d"], "the short path first");
    let second = c.book(crit(ad, da, 60, b, b + h(2.0))).await;
    assert_eq!(
        hops(&second),
        ["c", "d"],
        "the long path when the short one is full"
    );
    // 30 left on a-b-d, 40 on a-c-d: the best path has 40.
    let e = expect_err(
        c.reserve(crit(da, ad, 50, b + h(1.0), b + h(3.0))).await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    let cap = e.capacity.expect("capacity feedback");
    assert_eq!((cap.requested.0, cap.available.0), (50, 40));
    assert!(
        cap.bottlenecks
            .iter()
            .all(|b| b.contains("a-c") || b.contains("c-d")),
        "{:?}",
        cap.bottlenecks
    );
    assert!(
        e.message.contains("requested 50") && e.message.contains("available 40"),
        "{}",
        e.message
    );
    // And 40 does fit.
    let third = c.book(crit(da, ad, 40, b + h(1.0), b + h(3.0))).await;
    assert_eq!(hops(&third), ["c", "a"]);
    stop(t).await;
}

// ---------------------------------------------------------------------------------------
// Modify

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modify_admits_a_new_version_or_keeps_the_old_one() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    let (ab, ba) = ("d:a:p0", "d:b:p0");
    let x = c.book(crit(ab, ba, 40, b, b + h(2.0))).await;
    let y = c.book(crit(ba, ab, 30, b + h(1.0), b + h(3.0))).await;

    // A bigger capacity that fits: version 2, committed.
    let y2 = c.modify(modify(&y.id, Some(60), None, None)).await.unwrap();
    assert_eq!(
        (y2.version, y2.committed_version, y2.capacity_mbps),
        (2, Some(2), 60)
    );
    assert_eq!(summary(&y2), "committed");
    assert_eq!(c.get(&y.id).await.unwrap(), y2);
    let y_rows: Vec<i64> = all_rows(&t)
        .iter()
        .filter(|r| r.reservation_id == y.id)
        .map(|r| r.bw_mbps)
        .collect();
    assert!(
        !y_rows.is_empty() && y_rows.iter().all(|&bw| bw == 60),
        "{y_rows:?}"
    );

    // One that does not fit: refused, and version 1 stays in force.
    let rows = all_rows(&t);
    let e = expect_err(
        c.modify(modify(&x.id, Some(50), None, None)).await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    let cap = e.capacity.unwrap();
    assert_eq!((cap.requested.0, cap.available.0), (50, 40));
    let x_now = c.get(&x.id).await.unwrap();
    assert_eq!(
        (x_now.version, x_now.committed_version, x_now.capacity_mbps),
        (1, Some(1), 40)
    );
    assert_eq!(x_now, x, "unchanged");
    assert_eq!(all_rows(&t), rows, "bookings unchanged");

    // Stretching the schedule: 40 + 60 = 100 still fits.
    let x2 = c
        .modify(modify(&x.id, None, None, Some(b + h(4.0))))
        .await
        .unwrap();
    assert_eq!(
        (x2.version, x2.capacity_mbps, time!(x2.end)),
        (2, 40, b + h(4.0))
    );
    let y3 = c.modify(modify(&y.id, None, Some(b), None)).await.unwrap();
    assert_eq!(
        (y3.version, time!(y3.start), time!(y3.end)),
        (3, b, b + h(3.0))
    );
    // A new version is recorded as an event.
    let versions: Vec<(String, String)> = t
        .idc()
        .events_after(0, Some(y.id.clone()))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.change.machine == sluice_model::Machine::Version)
        .map(|e| (e.change.from, e.change.to))
        .collect();
    assert_eq!(
        versions,
        [("1".into(), "2".into()), ("2".into(), "3".into())]
    );
    assert_never_over_booked(t.idc().topology(), &live_rows(&t, t.idc().now()));
    stop(t).await;
}

// ---------------------------------------------------------------------------------------
// Queries: List, Watch, Availability

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_filters_by_state_owner_port_and_time() {
    let topo = fixture::from_links("d", &[("a", "b", 1000, 1), ("b", "c", 1000, 1)], 1000);
    let t = TestIdc::builder().topology(topo).start().await;
    let mut alice = Client::new(&t, "alice").await;
    let mut bob = Client::new(&t, "bob").await;
    let mut carol = Client::new(&t, "carol").await;
    let b = base_after(t.idc().now(), 1);
    let r1 = alice
        .book(crit("d:a:p0", "d:b:p0", 10, b, b + h(1.0)))
        .await
        .id;
    let r2 = alice
        .reserve(crit("d:a:p0", "d:c:p0", 10, b + h(2.0), b + h(3.0)))
        .await
        .unwrap()
        .id;
    let r3 = bob
        .reserve(crit("d:b:p0", "d:c:p0", 10, b, b + h(1.0)))
        .await
        .unwrap()
        .id;
    bob.abort(&r3).await.unwrap();
    let r4 = bob
        .book(crit("d:a:p0", "d:b:p0", 10, b + h(5.0), b + h(6.0)))
        .await
        .id;
    bob.provision(&r4).await.unwrap();
    let r5 = carol
        .book(crit("d:c:p0", "d:a:p0", 10, b + h(1.0), b + h(2.0)))
        .await
        .id;
    carol.terminate(&r5).await.unwrap();

    let (r1, r2, r3, r4, r5) = (
        r1.as_str(),
        r2.as_str(),
        r3.as_str(),
        r4.as_str(),
        r5.as_str(),
    );
    let mut c = alice.clone();
    let mut list = async |q: v1::ListRequest| ids(&c.list(q).await.unwrap().reservations);
    let states = |s: &[&str]| v1::ListRequest {
        states: s.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(
        list(v1::ListRequest::default()).await,
        [r1, r2, r3, r4, r5],
        "all, oldest first"
    );
    // Machine state names and summary words.
    assert_eq!(list(states(&["ReserveHeld"])).await, [r2]);
    assert_eq!(list(states(&["held"])).await, [r2]);
    assert_eq!(list(states(&["committed"])).await, [r1]);
    assert_eq!(list(states(&["provisioned"])).await, [r4]);
    assert_eq!(list(states(&["Provisioned"])).await, [r4]);
    assert_eq!(list(states(&["aborted"])).await, [r3]);
    assert_eq!(list(states(&["terminated"])).await, [r5]);
    assert_eq!(list(states(&["Terminated"])).await, [r5]);
    assert_eq!(list(states(&["Created"])).await, [r1, r2, r3, r4]);
    assert_eq!(list(states(&["ReserveStart"])).await, [r1, r3, r4, r5]);
    assert_eq!(
        list(states(&["held", "aborted"])).await,
        [r2, r3],
        "any match selects"
    );
    assert!(list(states(&["active"])).await.is_empty());
    // Owner.
    let owner = |o: &str| v1::ListRequest {
        owner: o.into(),
        ..Default::default()
    };
    assert_eq!(list(owner("alice")).await, [r1, r2]);
    assert_eq!(list(owner("bob")).await, [r3, r4]);
    assert!(list(owner("nobody")).await.is_empty());
    // Port, as node:port or a full STP.
    let port = |p: &str| v1::ListRequest {
        port: p.into(),
        ..Default::default()
    };
    assert_eq!(list(port("b:p0")).await, [r1, r3, r4]);
    assert_eq!(list(port("d:c:p0")).await, [r2, r3, r5]);
    assert_eq!(list(port("a:p0")).await, [r1, r2, r4, r5]);
    // Time range: windows that overlap [from, to).
    let range = |from: Option<f64>, to: Option<f64>| v1::ListRequest {
        from: from.map(|x| ts(b + h(x))),
        to: to.map(|x| ts(b + h(x))),
        ..Default::default()
    };
    assert_eq!(list(range(Some(0.5), Some(2.5))).await, [r1, r2, r3, r5]);
    assert_eq!(list(range(Some(5.0), None)).await, [r4]);
    assert_eq!(
        list(range(None, Some(1.0))).await,
        [r1, r3],
        "[1h, 2h) does not overlap [.., 1h)"
    );
    assert_eq!(
        list(range(Some(6.0), Some(7.0))).await,
        Vec::<String>::new()
    );
    // Combined filters narrow each other.
    let combined = v1::ListRequest {
        owner: "bob".into(),
        port: "a:p0".into(),
        states: vec!["ReserveStart".into()],
        ..Default::default()
    };
    assert_eq!(list(combined).await, [r4]);
    // Limit.
    let reply = c
        .list(v1::ListRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (ids(&reply.reservations), reply.truncated),
        (vec![r1.to_string(), r2.to_string()], true)
    );
    assert!(!c.list(v1::ListRequest::default()).await.unwrap().truncated);
    // Bad filters name their field.
    expect_err(
        c.list(states(&["nonsense"])).await,
        ErrorCode::InvalidParameter,
        "states",
    );
    expect_err(c.list(port("zz:p0")).await, ErrorCode::UnknownStp, "port");
    expect_err(
        c.list(range(Some(2.0), Some(1.0))).await,
        ErrorCode::InvalidParameter,
        "to",
    );
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_replays_history_then_streams_live_and_filters_by_reservation() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    let start_seq = t.idc().last_event_seq().await.unwrap();
    let r1 = c
        .reserve(crit("d:a:p0", "d:b:p0", 10, b, b + h(1.0)))
        .await
        .unwrap();
    let r2 = c
        .reserve(crit("d:a:p0", "d:b:p0", 10, b, b + h(1.0)))
        .await
        .unwrap();

    // Everything since start_seq: the two holds, then what happens next, live.
    let mut all = c
        .watch(v1::WatchRequest {
            reservation_id: String::new(),
            since_seq: Some(start_seq),
        })
        .await;
    // Only r2, from the beginning of time.
    let mut only_r2 = c
        .watch(v1::WatchRequest {
            reservation_id: r2.id.clone(),
            since_seq: Some(0),
        })
        .await;
    // Live only: nothing of the past.
    let mut live = c.watch(v1::WatchRequest::default()).await;

    let e1 = next_event(&mut all).await;
    let e2 = next_event(&mut all).await;
    assert_eq!(
        (
            e1.reservation_id.as_str(),
            e1.machine.as_str(),
            e1.to.as_str()
        ),
        (r1.id.as_str(), "reservation", "ReserveHeld")
    );
    assert_eq!(
        (e2.reservation_id.as_str(), e2.to.as_str()),
        (r2.id.as_str(), "ReserveHeld")
    );
    assert!(start_seq < e1.seq && e1.seq < e2.seq);
    assert_eq!(time!(e1.at), time!(r1.created_at));
    let replayed = next_event(&mut only_r2).await;
    assert_eq!(replayed, e2, "the same event, filtered");

    c.commit(&r1.id).await.unwrap();
    c.abort(&r2.id).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_event(&mut all).await;
        seen.push((e.reservation_id.clone(), e.to.clone(), e.seq));
    }
    let names: Vec<(&str, &str)> = seen
        .iter()
        .map(|(id, to, _)| (id.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (r1.id.as_str(), "ReserveCommitting"),
            (r1.id.as_str(), "ReserveStart"),
            (r2.id.as_str(), "ReserveAborting"),
            (r2.id.as_str(), "ReserveStart"),
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 + 1 == w[1].2),
        "consecutive: {seen:?}"
    );
    assert!(
        seen[0].2 == e2.seq + 1,
        "nothing between the replay and the live feed"
    );
    // The filtered watch skips r1's commit: its next events are r2's abort.
    for to in ["ReserveAborting", "ReserveStart"] {
        let e = next_event(&mut only_r2).await;
        assert_eq!(
            (e.reservation_id.as_str(), e.to.as_str()),
            (r2.id.as_str(), to)
        );
    }
    // The live watch starts after the holds.
    let first_live = next_event(&mut live).await;
    assert_eq!(first_live.seq, seen[0].2);
    // Open watches do not hold up a shutdown; they end with it.
    stop(t).await;
    for s in [&mut all, &mut only_r2, &mut live] {
        // What was sent before the shutdown, then the end.
        while let Ok(Some(e)) = bounded("end of stream", s.message()).await {
            assert!(e.seq <= seen[3].2, "an event after shutdown: {e:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn availability_of_a_link_and_a_port_is_a_step_function_of_the_bookings() {
    let t0 = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let t = TestIdc::builder()
        .topology(line())
        .manual_clock(t0)
        .start()
        .await;
    let mut c = Client::new(&t, "alice").await;
    let (ab, ba) = ("d:a:p0", "d:b:p0");
    let r1 = c.book(crit(ab, ba, 30, t0 + h(1.0), t0 + h(3.0))).await;
    let r2 = c.book(crit(ba, ab, 50, t0 + h(2.0), t0 + h(4.0))).await;
    // A hold counts while it lasts (120 s).
    let r3 = c
        .reserve(crit(ab, ba, 10, t0 + h(1.0), t0 + h(2.0)))
        .await
        .unwrap();

    let steps = |d: &v1::DirectionAvailability| -> Vec<(f64, f64, u64, u64)> {
        d.steps
            .iter()
            .map(|s| {
                let hours = |x: DateTime<Utc>| (x - t0).num_seconds() as f64 / 3600.0;
                (
                    hours(time!(s.start)),
                    hours(time!(s.end)),
                    s.booked_mbps,
                    s.available_mbps,
                )
            })
            .collect()
    };
    let range = |link: &str, port: &str| v1::AvailabilityRequest {
        link: link.into(),
        port: port.into(),
        from: Some(ts(t0)),
        to: Some(ts(t0 + h(5.0))),
    };
    let link = c.availability(range("a-b", "")).await.unwrap();
    assert_eq!(link.resource, "link a-b");
    let names: Vec<_> = link
        .directions
        .iter()
        .map(|d| (d.direction.as_str(), d.capacity_mbps))
        .collect();
    assert_eq!(names, [("a→b", 100), ("b→a", 100)]);
    let expect = vec![
        (0.0, 1.0, 0, 100),
        (1.0, 2.0, 40, 60),
        (2.0, 3.0, 80, 20),
        (3.0, 4.0, 50, 50),
        (4.0, 5.0, 0, 100),
    ];
    for d in &link.directions {
        assert_eq!(steps(d), expect, "{}", d.direction);
    }

    let port = c.availability(range("", "a:p0")).await.unwrap();
    assert_eq!(port.resource, "port d:a:p0");
    assert_eq!(port.vlans, "100-199");
    // Circuits that overlap in time on a port use distinct VLANs there.
    assert_ne!(r1.src_vlan, r3.src_vlan);
    assert_ne!(r1.src_vlan, r2.dst_vlan);
    let in_use: BTreeSet<u32> = [r1.src_vlan, r2.dst_vlan, r3.src_vlan].into();
    assert_eq!(port.vlans_in_use, in_use.into_iter().collect::<Vec<_>>());
    let names: Vec<_> = port
        .directions
        .iter()
        .map(|d| (d.direction.as_str(), d.capacity_mbps))
        .collect();
    assert_eq!(names, [("in", 1000), ("out", 1000)]);
    for d in &port.directions {
        let expect: Vec<_> = expect
            .iter()
            .map(|&(a, b, booked, _)| (a, b, booked, 1000 - booked))
            .collect();
        assert_eq!(steps(d), expect, "{}", d.direction);
    }
    // The same port named by its STP, and a sub-range.
    let sub = c
        .availability(v1::AvailabilityRequest {
            port: "d:a:p0".into(),
            from: Some(ts(t0 + h(2.5))),
            to: Some(ts(t0 + h(3.5))),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        steps(&sub.directions[0]),
        [(2.5, 3.0, 80, 920), (3.0, 3.5, 50, 950)]
    );
    let in_use: BTreeSet<u32> = [r1.src_vlan, r2.dst_vlan].into();
    assert_eq!(sub.vlans_in_use, in_use.into_iter().collect::<Vec<_>>());

    // Once the hold has expired it no longer shows, tick or not.
    t.clock.as_ref().unwrap().advance(TimeDelta::seconds(121));
    let link = c.availability(range("a-b", "")).await.unwrap();
    assert_eq!(steps(&link.directions[0])[1], (1.0, 2.0, 30, 70));
    // Default range: from now, for a week.
    let default = c
        .availability(v1::AvailabilityRequest {
            link: "a-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let d = &default.directions[0].steps;
    assert_eq!(time!(d.first().unwrap().start), t.idc().now());
    assert_eq!(
        time!(d.last().unwrap().end),
        t.idc().now() + TimeDelta::days(7)
    );
    // Bad requests.
    expect_err(
        c.availability(range("nope", "")).await,
        ErrorCode::InvalidParameter,
        "link",
    );
    expect_err(
        c.availability(range("", "a:nope")).await,
        ErrorCode::UnknownStp,
        "port",
    );
    expect_err(
        c.availability(range("a-b", "a:p0")).await,
        ErrorCode::InvalidParameter,
        "link",
    );
    expect_err(
        c.availability(range("", "")).await,
        ErrorCode::InvalidParameter,
        "link",
    );
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extreme_times_are_answered_or_refused_never_crash_the_call() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    c.book(crit("d:a:p0", "d:b:p0", 10, b, b + h(1.0))).await;
    let min = DateTime::<Utc>::MIN_UTC + TimeDelta::seconds(1);
    let max = DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(1);
    let ranges = [
        (Some(min), None),
        (Some(min), Some(b)),
        (Some(max), None),
        (None, Some(max)),
        (Some(min), Some(max)),
    ];
    for ((from, to), (link, port)) in ranges
        .into_iter()
        .flat_map(|r| [(r, ("a-b", "")), (r, ("", "a:p0"))])
    {
        let r = c
            .availability(v1::AvailabilityRequest {
                link: link.into(),
                port: port.into(),
                from: from.map(ts),
                to: to.map(ts),
            })
            .await;
        match r {
            Ok(a) => assert!(!a.directions[0].steps.is_empty()),
            Err(e) => assert_eq!(e.code, ErrorCode::InvalidParameter, "{from:?}..{to:?}: {e}"),
        }
    }
    // A reservation that ends at the end of time is booked like any other.
    let far = c.reserve(crit("d:a:p0", "d:b:p0", 10, b, max)).await;
    match far {
        Ok(r) => assert_eq!(
            time!(r.end),
            DateTime::from_timestamp_millis(max.timestamp_millis()).unwrap()
        ),
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidParameter, "{e}"),
    }
    let list = c
        .list(v1::ListRequest {
            from: Some(ts(min)),
            to: Some(ts(max)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!list.reservations.is_empty());
    stop(t).await;
}

// ---------------------------------------------------------------------------------------
// Timers on the virtual clock

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uncommitted_hold_times_out_and_frees_its_capacity() {
    let t0 = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let hold = TimeDelta::seconds(30);
    let t = TestIdc::builder()
        .topology(line())
        .manual_clock(t0)
        .hold_timeout(hold)
        .start()
        .await;
    let clock = t.clock.clone().unwrap();
    let mut c = Client::new(&t, "alice").await;
    let (s, e) = (t0 + h(1.0), t0 + h(2.0));
    let r = c.reserve(crit("d:a:p0", "d:b:p0", 80, s, e)).await.unwrap();
    assert_eq!(time!(r.hold_expires_at), t0 + hold);
    let e1 = expect_err(
        c.reserve(crit("d:a:p0", "d:b:p0", 50, s, e)).await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    assert_eq!(e1.capacity.unwrap().available.0, 20);

    clock.advance(hold + TimeDelta::seconds(1));
    bounded("tick", t.idc().tick()).await.unwrap();
    let got = c.get(&r.id).await.unwrap();
    assert_eq!(
        states(&got),
        (
            "ReserveTimeout",
            "Released",
            "Created",
            false,
            "timed-out".into()
        )
    );
    assert!(
        all_rows(&t).iter().all(|b| b.reservation_id != r.id),
        "its bookings are gone"
    );
    let events = t.idc().events_after(0, Some(r.id.clone())).await.unwrap();
    let timeout = events.last().unwrap();
    assert_eq!(
        (timeout.change.to.as_str(), timeout.change.effective_at),
        ("ReserveTimeout", t0 + hold)
    );
    // Its capacity is free again, and it can no longer be committed.
    let e2 = expect_err(c.commit(&r.id).await, ErrorCode::InvalidTransition, "id");
    assert!(e2.message.contains("timed out"), "{}", e2.message);
    c.book(crit("d:a:p0", "d:b:p0", 100, s, e)).await;
    // NSI allows an abort after a timeout.
    let aborted = c.abort(&r.id).await.unwrap();
    assert_eq!(summary(&aborted), "aborted");
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_times_out_holds_by_itself() {
    let t0 = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let hold = TimeDelta::seconds(30);
    let t = TestIdc::builder()
        .topology(line())
        .manual_clock(t0)
        .hold_timeout(hold)
        .start()
        .await;
    let mut c = Client::new(&t, "alice").await;
    let r = c
        .reserve(crit("d:a:p0", "d:b:p0", 80, t0 + h(1.0), t0 + h(2.0)))
        .await
        .unwrap();
    t.clock.as_ref().unwrap().advance(hold);
    let timed_out = eventually(WAIT, || {
        let (mut c, id) = (c.clone(), r.id.clone());
        async move { c.get(&id).await.is_ok_and(|r| summary(&r) == "timed-out") }
    })
    .await;
    assert!(timed_out, "the scheduler timed the hold out");
    assert!(all_rows(&t).iter().all(|b| b.reservation_id != r.id));
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn automatic_mode_provisions_at_start_and_releases_at_end() {
    let t0 = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let t = TestIdc::builder()
        .topology(line())
        .manual_clock(t0)
        .start()
        .await;
    let clock = t.clock.clone().unwrap();
    let mut c = Client::new(&t, "alice").await;
    let (s, e) = (t0 + TimeDelta::minutes(10), t0 + TimeDelta::minutes(20));
    let mut auto = crit("d:a:p0", "d:b:p0", 50, s, e);
    auto.provision_mode = v1::ProvisionMode::Automatic as i32;
    let a = c.book(auto).await;
    let m = c.book(crit("d:a:p0", "d:b:p0", 50, s, e)).await;
    assert_eq!(
        (summary(&a), summary(&m)),
        ("committed".into(), "committed".into())
    );

    let watcher = c.clone();
    let wait_for = move |id: String, want: &'static str| {
        let c = watcher.clone();
        async move {
            let ok = eventually(WAIT, || {
                let (mut c, id) = (c.clone(), id.clone());
                async move { c.get(&id).await.is_ok_and(|r| summary(&r) == want) }
            })
            .await;
            assert!(ok, "{id} never became {want}");
        }
    };

    // Not before the start.
    clock.set(s - TimeDelta::seconds(1));
    bounded("tick", t.idc().tick()).await.unwrap();
    assert_eq!(summary(&c.get(&a.id).await.unwrap()), "committed");

    clock.set(s);
    wait_for(a.id.clone(), "active").await;
    let got = c.get(&a.id).await.unwrap();
    assert_eq!(
        states(&got),
        (
            "ReserveStart",
            "Provisioned",
            "Created",
            true,
            "active".into()
        )
    );
    assert_eq!(
        summary(&c.get(&m.id).await.unwrap()),
        "committed",
        "manual mode waits"
    );
    let events = t.idc().events_after(0, Some(a.id.clone())).await.unwrap();
    let up: Vec<_> = events
        .iter()
        .filter(|e| e.change.machine != sluice_model::Machine::Reservation)
        .map(|e| (e.change.to.as_str(), e.change.effective_at))
        .collect();
    assert_eq!(up, [("Provisioning", s), ("Provisioned", s), ("active", s)]);

    clock.set(e + TimeDelta::seconds(1));
    wait_for(a.id.clone(), "ended").await;
    wait_for(m.id.clone(), "ended").await;
    let got = c.get(&a.id).await.unwrap();
    assert_eq!(
        states(&got),
        (
            "ReserveStart",
            "Released",
            "PassedEndTime",
            false,
            "ended".into()
        )
    );
    let events = t.idc().events_after(0, Some(a.id.clone())).await.unwrap();
    let down: Vec<_> = events
        .iter()
        .skip_while(|e| e.change.to != "active")
        .skip(1)
        .map(|e| (e.change.to.as_str(), e.change.effective_at))
        .collect();
    assert_eq!(
        down,
        [
            ("Releasing", e),
            ("Released", e),
            ("inactive", e),
            ("PassedEndTime", e)
        ],
        "recorded at the end time"
    );
    expect_err(c.provision(&a.id).await, ErrorCode::InvalidTransition, "id");
    let done = c.terminate(&a.id).await.unwrap();
    assert_eq!(summary(&done), "terminated");
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_that_expires_while_the_idc_is_down_times_out_at_its_expiry() {
    let t0 = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let hold = TimeDelta::seconds(60);
    let mut t = TestIdc::builder()
        .topology(line())
        .manual_clock(t0)
        .hold_timeout(hold)
        .start()
        .await;
    let clock = t.clock.clone().unwrap();
    let mut c = Client::new(&t, "alice").await;
    let (s, e) = (t0 + h(1.0), t0 + h(2.0));
    let held = c.reserve(crit("d:a:p0", "d:b:p0", 80, s, e)).await.unwrap();
    let committed = c.book(crit("d:a:p0", "d:b:p0", 20, s, e)).await;

    // Down across the hold's expiry.
    bounded("shutdown", t.server.take().unwrap().shutdown())
        .await
        .unwrap();
    clock.advance(TimeDelta::minutes(10));
    bounded("restart", t.restart()).await;
    let mut c = Client::new(&t, "alice").await;

    let ok = eventually(WAIT, || {
        let (mut c, id) = (c.clone(), held.id.clone());
        async move { c.get(&id).await.is_ok_and(|r| summary(&r) == "timed-out") }
    })
    .await;
    assert!(ok, "the hold timed out after the restart");
    let mut w = c
        .watch(v1::WatchRequest {
            reservation_id: held.id.clone(),
            since_seq: Some(0),
        })
        .await;
    assert_eq!(next_event(&mut w).await.to, "ReserveHeld");
    let timeout = next_event(&mut w).await;
    assert_eq!(timeout.to, "ReserveTimeout");
    assert_eq!(
        time!(timeout.at),
        t0 + hold,
        "at its expiry, not when the IDC noticed"
    );
    // The committed reservation survived; the hold's capacity is free.
    assert_eq!(c.get(&committed.id).await.unwrap(), committed);
    expect_err(c.commit(&held.id).await, ErrorCode::InvalidTransition, "id");
    c.book(crit("d:a:p0", "d:b:p0", 80, s, e)).await;
    expect_err(
        c.reserve(crit("d:a:p0", "d:b:p0", 1, s, e)).await,
        ErrorCode::CapacityUnavailable,
        "capacity_mbps",
    );
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_replays_a_history_longer_than_one_page() {
    let t = TestIdc::builder().topology(line()).start().await;
    let mut c = Client::new(&t, "alice").await;
    let b = base_after(t.idc().now(), 1);
    let r = c
        .reserve(crit("d:a:p0", "d:b:p0", 10, b, b + h(1.0)))
        .await
        .unwrap();
    // A long history, written straight into the event log (the store pages at 10,000).
    const SYNTHETIC: usize = 10_050;
    let model = t.idc().store().get(&r.id).unwrap().unwrap();
    let now = t.idc().now();
    let changes: Vec<_> = (0..SYNTHETIC)
        .map(|i| sluice_model::Change {
            machine: sluice_model::Machine::DataPlane,
            from: "inactive".into(),
            to: "inactive".into(),
            effective_at: now,
            detail: format!("synthetic {i}"),
        })
        .collect();
    t.idc()
        .store()
        .writer()
        .unwrap()
        .save(
            &model,
            model.hold_expires_at,
            sluice_idc::store::BookingChange::Keep,
            &changes,
            now,
        )
        .unwrap();

    let mut w = c
        .watch(v1::WatchRequest {
            reservation_id: r.id.clone(),
            since_seq: Some(0),
        })
        .await;
    assert_eq!(next_event(&mut w).await.to, "ReserveHeld");
    let mut last = 0;
    for i in 0..SYNTHETIC {
        let e = next_event(&mut w).await;
        assert_eq!(e.detail, format!("synthetic {i}"));
        assert!(e.seq > last);
        last = e.seq;
    }
    // Then live.
    c.commit(&r.id).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.to.as_str(), e.seq), ("ReserveCommitting", last + 1));
    stop(t).await;
}

// ---------------------------------------------------------------------------------------
// Concurrency and random sequences

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_clients_racing_for_one_link_never_over_book_it() {
    const CLIENTS: usize = 40;
    const ROUNDS: usize = 4;
    let t = TestIdc::builder().topology(line()).start().await;
    let base = base_after(t.idc().now(), 1);
    // A watcher that must see every event of the race, in order.
    let mut watcher = Client::new(&t, "watcher").await;
    let mut feed = watcher.watch(v1::WatchRequest::default()).await;
    let first_seq = t.idc().last_event_seq().await.unwrap();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = Client::new(&t, &format!("user-{i}")).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x5eed + i as u64);
            let (mut admitted, mut refused) = (Vec::new(), 0);
            barrier.wait().await;
            for _ in 0..ROUNDS {
                let start = base + TimeDelta::minutes(rng.range(0, 8 * 60));
                let end = start + TimeDelta::minutes(rng.range(30, 240));
                let bw = rng.range(5, 60);
                let (src, dst) = if rng.range(0, 1) == 0 {
                    ("d:a:p0", "d:b:p0")
                } else {
                    ("d:b:p0", "d:a:p0")
                };
                match c.reserve(crit(src, dst, bw, start, end)).await {
                    Ok(r) => {
                        match rng.range(0, 9) {
                            0..=6 => assert_eq!(
                                summary(&c.commit(&r.id).await.expect("commit")),
                                "committed"
                            ),
                            7 => assert_eq!(
                                summary(&c.abort(&r.id).await.expect("abort")),
                                "aborted"
                            ),
                            _ => {} // left held
                        }
                        if rng.range(0, 9) == 0 {
                            c.terminate(&r.id).await.expect("terminate");
                        }
                        admitted.push(r);
                    }
                    Err(e) => {
                        assert!(
                            matches!(
                                e.code,
                                ErrorCode::CapacityUnavailable | ErrorCode::StpUnavailable
                            ),
                            "only a lack of room may refuse: {e}"
                        );
                        refused += 1;
                    }
                }
            }
            (admitted, refused)
        }));
    }
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for task in tasks {
        let (a, r) = bounded("client", task).await.expect("client task");
        admitted.extend(a);
        refused += r;
    }
    assert!(
        !admitted.is_empty() && refused > 0,
        "a real race: {} admitted, {refused} refused",
        admitted.len()
    );
    for r in &admitted {
        assert_eq!(r.path.len(), 1, "one link to race for");
    }

    // The store never over-books, at any instant, any resource direction.
    let now = t.idc().now();
    let rows = live_rows(&t, now);
    assert_never_over_booked(t.idc().topology(), &rows);
    // Exactly the reservations that hold resources have bookings, of their bandwidth.
    let mut c = watcher.clone();
    let holding: BTreeMap<String, u64> = c
        .list_all()
        .await
        .into_iter()
        .filter(|r| match summary(r).as_str() {
            "committed" => true,
            "held" => time!(r.hold_expires_at) > now,
            _ => false,
        })
        .map(|r| (r.id, r.capacity_mbps))
        .collect();
    let booked: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| (r.reservation_id.clone(), r.bw_mbps as u64))
        .collect();
    assert_eq!(holding, booked);
    assert!(
        rows.iter()
            .all(|r| holding[&r.reservation_id] == r.bw_mbps as u64)
    );

    // The watcher saw every event of the race exactly once, in order.
    let last = t.idc().last_event_seq().await.unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&s| s < last) {
        match tokio::time::timeout(Duration::from_secs(5), feed.message()).await {
            Ok(Ok(Some(e))) => seen.push(e.seq),
            _ => break,
        }
    }
    let recorded: Vec<u64> = t
        .idc()
        .events_after(first_seq, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seen.len(), recorded.len(), "events missed by the watcher");
    assert_eq!(seen, recorded);
    stop(t).await;
}

/// The resources of the only path between two edge ports of the line a-b-c.
fn line_path(src: &str, dst: &str) -> Vec<(String, String)> {
    const NODES: [&str; 3] = ["a", "b", "c"];
    let at = |n: &str| NODES.iter().position(|x| *x == n).unwrap();
    let (lo, hi) = (at(src).min(at(dst)), at(src).max(at(dst)));
    let mut keys: Vec<String> = [src, dst].iter().map(|p| format!("port:{p}:p0")).collect();
    keys.extend((lo..hi).map(|i| format!("link:{}-{}", NODES[i], NODES[i + 1])));
    keys.into_iter()
        .flat_map(|k| [(k.clone(), "fwd".to_string()), (k, "rev".to_string())])
        .collect()
}

/// The room left on `path` over [start, end), not counting reservation `ignore`: what
/// exact admission must admit, and what a refusal must report as available.
fn room(
    topo: &Topology,
    rows: &[BandwidthRow],
    path: &[(String, String)],
    start: i64,
    end: i64,
    ignore: Option<&str>,
) -> u64 {
    path.iter()
        .map(|(res, dir)| {
            let cap = topo
                .capacity(
                    topo.resource_by_key(res, Direction::parse(dir).unwrap())
                        .unwrap(),
                )
                .0;
            let mine: Vec<&BandwidthRow> = rows
                .iter()
                .filter(|r| {
                    r.resource == *res
                        && r.direction == *dir
                        && Some(r.reservation_id.as_str()) != ignore
                })
                .collect();
            cap.saturating_sub(peak(&mine, start, end))
        })
        .min()
        .unwrap()
}

/// Label rows that still count at `now`, however old.
fn live_labels(t: &TestIdc, now: DateTime<Utc>) -> Vec<LabelRow> {
    let now = now.timestamp_millis();
    let (_, labels) = t
        .idc()
        .store()
        .live_bookings(DateTime::<Utc>::MIN_UTC)
        .expect("labels");
    labels
        .into_iter()
        .filter(|r| r.hold_expires_ms.is_none_or(|h| h > now))
        .collect()
}

fn vlan_taken(
    labels: &[LabelRow],
    port: &str,
    vlan: u32,
    start: i64,
    end: i64,
    ignore: Option<&str>,
) -> bool {
    labels.iter().any(|l| {
        l.resource == format!("port:{port}")
            && l.vlan as u32 == vlan
            && l.start_ms < end
            && start < l.end_ms
            && Some(l.reservation_id.as_str()) != ignore
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tracked {
    Held(DateTime<Utc>),
    /// Held past its expiry (commit refused), not yet aborted.
    TimedOut,
    Committed,
    Aborted,
    Terminated,
}

struct Booking {
    id: String,
    src: &'static str,
    dst: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// The same at both ends (no node translates).
    vlan: u32,
    state: Tracked,
}

/// Checks that Availability (the in-memory index) shows exactly the store's bookings.
async fn assert_index_matches_store(
    t: &TestIdc,
    c: &mut Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<v1::AvailabilityReply> {
    let topo = t.idc().topology().clone();
    let rows = live_rows(t, t.idc().now());
    let mut replies = Vec::new();
    for (link, port, key) in [
        ("a-b", "", "link:a-b"),
        ("b-c", "", "link:b-c"),
        ("", "a:p0", "port:a:p0"),
        ("", "b:p0", "port:b:p0"),
        ("", "c:p0", "port:c:p0"),
    ] {
        let a = c
            .availability(v1::AvailabilityRequest {
                link: link.into(),
                port: port.into(),
                from: Some(ts(from)),
                to: Some(ts(to)),
            })
            .await
            .unwrap();
        for (d, dir) in a.directions.iter().zip(["fwd", "rev"]) {
            let cap = topo
                .capacity(
                    topo.resource_by_key(key, Direction::parse(dir).unwrap())
                        .unwrap(),
                )
                .0;
            assert_eq!(d.capacity_mbps, cap);
            let mine: Vec<&BandwidthRow> = rows
                .iter()
                .filter(|r| r.resource == key && r.direction == dir)
                .collect();
            let mut at = from;
            for s in &d.steps {
                let (s0, s1) = (time!(s.start), time!(s.end));
                assert_eq!(s0, at, "{key} {dir}: contiguous steps");
                let (a, b) = (s0.timestamp_millis(), s1.timestamp_millis());
                // Constant inside the step: its peak and its level at the start agree.
                assert_eq!(peak(&mine, a, b), s.booked_mbps, "{key} {dir} at {s0}");
                assert_eq!(peak(&mine, a, a + 1), s.booked_mbps, "{key} {dir} at {s0}");
                assert_eq!(s.available_mbps, cap - s.booked_mbps);
                at = s1;
            }
            assert_eq!(at, to);
        }
        replies.push(a);
    }
    replies
}

async fn random_sequence(seed: u64, steps: usize) {
    let topo = fixture::from_links("d", &[("a", "b", 100, 1), ("b", "c", 60, 1)], 80);
    let t0 = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let hold = TimeDelta::minutes(10);
    let mut t = TestIdc::builder()
        .topology(topo.clone())
        .manual_clock(t0)
        .hold_timeout(hold)
        .start()
        .await;
    let clock = t.clock.clone().unwrap();
    let mut c = Client::new(&t, "fuzz").await;
    let mut rng = Rng(seed);
    let mut book: Vec<Booking> = Vec::new();
    const ENDS: [&str; 3] = ["a", "b", "c"];

    for step in 0..steps {
        let now = t.idc().now();
        let ctx = format!("seed {seed} step {step}");
        let rows = live_rows(&t, now);
        let pick = |rng: &mut Rng, book: &[Booking], ok: &dyn Fn(&Booking) -> bool| {
            let idx: Vec<usize> = (0..book.len()).filter(|&i| ok(&book[i])).collect();
            rng.pick(&idx).copied()
        };
        match rng.range(0, 99) {
            0..=39 => {
                let src = *rng.pick(&ENDS).unwrap();
                let dst = *rng
                    .pick(
                        &ENDS
                            .iter()
                            .copied()
                            .filter(|&e| e != src)
                            .collect::<Vec<_>>(),
                    )
                    .unwrap();
                let start = now + TimeDelta::minutes(5 * rng.range(0, 72));
                let end = start + TimeDelta::minutes(5 * rng.range(1, 36));
                let bw = rng.range(5, 60) as u64;
                let (s_ms, e_ms) = (start.timestamp_millis(), end.timestamp_millis());
                let room = room(&topo, &rows, &line_path(src, dst), s_ms, e_ms, None);
                let labels = live_labels(&t, now);
                let free = |p: &str| -> BTreeSet<u32> {
                    (100..=199)
                        .filter(|&v| !vlan_taken(&labels, &format!("{p}:p0"), v, s_ms, e_ms, None))
                        .collect()
                };
                let common: Vec<u32> = free(src).intersection(&free(dst)).copied().collect();
                let result = c
                    .reserve(crit(
                        &format!("d:{src}:p0"),
                        &format!("d:{dst}:p0"),
                        bw as i64,
                        start,
                        end,
                    ))
                    .await;
                match result {
                    Ok(r) => {
                        assert!(bw <= room, "{ctx}: admitted {bw} with only {room} left");
                        assert_eq!(
                            (r.src_vlan, r.dst_vlan),
                            (common[0], common[0]),
                            "{ctx}: the lowest VLAN free at both ends"
                        );
                        book.push(Booking {
                            id: r.id,
                            src,
                            dst,
                            start,
                            end,
                            vlan: r.src_vlan,
                            state: Tracked::Held(now + hold),
                        });
                    }
                    Err(e) if e.code == ErrorCode::StpUnavailable => {
                        assert!(common.is_empty() && bw <= room, "{ctx}: {e}");
                    }
                    Err(e) => {
                        assert!(bw > room, "{ctx}: refused {bw} with {room} left: {e}");
                        assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{ctx}: {e}");
                        assert_eq!(
                            e.capacity.unwrap().available.0,
                            room,
                            "{ctx}: the reported headroom"
                        );
                    }
                }
            }
            40..=59 => {
                let Some(i) = pick(&mut rng, &book, &|b| matches!(b.state, Tracked::Held(_)))
                else {
                    continue;
                };
                let Tracked::Held(expiry) = book[i].state else {
                    unreachable!()
                };
                let result = c.commit(&book[i].id).await;
                if now < expiry {
                    assert_eq!(summary(&result.expect(&ctx)), "committed", "{ctx}");
                    book[i].state = Tracked::Committed;
                } else {
                    expect_err(result, ErrorCode::InvalidTransition, "id");
                    book[i].state = Tracked::TimedOut;
                }
            }
            60..=67 => {
                let Some(i) = pick(&mut rng, &book, &|b| {
                    matches!(b.state, Tracked::Held(_) | Tracked::TimedOut)
                }) else {
                    continue;
                };
                assert_eq!(
                    summary(&c.abort(&book[i].id).await.expect(&ctx)),
                    "aborted",
                    "{ctx}"
                );
                book[i].state = Tracked::Aborted;
            }
            68..=75 => {
                let Some(i) = pick(&mut rng, &book, &|b| b.state != Tracked::Terminated) else {
                    continue;
                };
                assert_eq!(
                    summary(&c.terminate(&book[i].id).await.expect(&ctx)),
                    "terminated",
                    "{ctx}"
                );
                book[i].state = Tracked::Terminated;
            }
            76..=91 => {
                let Some(i) = pick(&mut rng, &book, &|b| b.state == Tracked::Committed) else {
                    continue;
                };
                let b = &book[i];
                let bw = rng.range(5, 60) as u64;
                let new_start = (b.start > now && rng.range(0, 2) == 0)
                    .then(|| now + TimeDelta::minutes(5 * rng.range(0, 24)));
                let from = new_start.unwrap_or(b.start).max(now);
                let new_end = from + TimeDelta::minutes(5 * rng.range(1, 36));
                let result = c
                    .modify(modify(&b.id, Some(bw as i64), new_start, Some(new_end)))
                    .await;
                if b.end <= now {
                    expect_err(result, ErrorCode::InvalidTransition, "id");
                    continue;
                }
                let start = new_start.unwrap_or(b.start);
                let (s_ms, e_ms) = (start.timestamp_millis(), new_end.timestamp_millis());
                let room = room(
                    &topo,
                    &rows,
                    &line_path(b.src, b.dst),
                    s_ms,
                    e_ms,
                    Some(&b.id),
                );
                // A new version keeps its VLANs: they must be free for the new window.
                let labels = live_labels(&t, now);
                let taken = |p: &str| {
                    vlan_taken(&labels, &format!("{p}:p0"), b.vlan, s_ms, e_ms, Some(&b.id))
                };
                let label_conflict = if taken(b.src) {
                    Some("src_vlan")
                } else if taken(b.dst) {
                    Some("dst_vlan")
                } else {
                    None
                };
                if let Some(field) = label_conflict {
                    expect_err(result, ErrorCode::StpUnavailable, field);
                    continue;
                }
                match result {
                    Ok(r) => {
                        assert!(bw <= room, "{ctx}: modified to {bw} with only {room} left");
                        assert_eq!(
                            (r.capacity_mbps, time!(r.start), time!(r.end)),
                            (bw, start, new_end),
                            "{ctx}"
                        );
                        book[i].start = start;
                        book[i].end = new_end;
                    }
                    Err(e) => {
                        assert!(
                            bw > room,
                            "{ctx}: modify to {bw} refused with {room} left: {e}"
                        );
                        assert_eq!(e.code, ErrorCode::CapacityUnavailable, "{ctx}: {e}");
                        assert_eq!(
                            e.capacity.unwrap().available.0,
                            room,
                            "{ctx}: the reported headroom"
                        );
                        // The old version stays.
                        let got = c.get(&b.id).await.unwrap();
                        assert_eq!(
                            (time!(got.start), time!(got.end)),
                            (b.start, b.end),
                            "{ctx}"
                        );
                    }
                }
            }
            _ => {
                clock.advance(TimeDelta::minutes(rng.range(1, 40)));
                if rng.range(0, 1) == 0 {
                    bounded("tick", t.idc().tick()).await.unwrap();
                }
            }
        }
        assert_never_over_booked(&topo, &live_rows(&t, t.idc().now()));
    }

    // Every reservation is in the state the sequence led it to.
    let now = t.idc().now();
    for b in &book {
        let got = summary(&c.get(&b.id).await.unwrap());
        let ok = match b.state {
            Tracked::Held(expiry) if now < expiry => got == "held",
            Tracked::Held(_) | Tracked::TimedOut => got == "held" || got == "timed-out",
            Tracked::Committed => got == "committed" || (b.end <= now && got == "ended"),
            Tracked::Aborted => got == "aborted",
            Tracked::Terminated => got == "terminated",
        };
        assert!(ok, "seed {seed}: {} is {got}, expected {:?}", b.id, b.state);
    }
    // The in-memory index agrees with the store, before and after a restart rebuilds it.
    let (from, to) = (now, now + TimeDelta::hours(12));
    let before = assert_index_matches_store(&t, &mut c, from, to).await;
    bounded("restart", t.restart()).await;
    let mut c = Client::new(&t, "fuzz").await;
    let after = assert_index_matches_store(&t, &mut c, from, to).await;
    assert_eq!(before, after, "seed {seed}: the rebuilt index");
    stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_operation_sequences_never_over_book_and_never_falsely_refuse() {
    for seed in [1, 2, 3, 4] {
        random_sequence(seed, 150).await;
    }
}

/// Every state-changing request is in the audit log: who, what, on which reservation,
/// and how it ended (a refusal with its stable code and message); reads are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_changing_request_is_audited_with_who_what_and_result() {
    let t = TestIdc::builder().topology(line()).start().await;
    let (mut alice, mut bob) = (Client::new(&t, "alice").await, Client::new(&t, "bob").await);
    let now = t.idc().now();
    let r = alice
        .book(crit("d:a:p0", "d:b:p0", 10, now + h(1.0), now + h(2.0)))
        .await;
    alice.get(&r.id).await.unwrap();
    let e = bob.commit("no-such-id").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ReservationNonexistent);
    let full = bob
        .reserve(crit("d:a:p0", "d:b:p0", 5000, now + h(1.0), now + h(2.0)))
        .await
        .unwrap_err();
    alice.terminate(&r.id).await.unwrap();

    let audit = |who: &str, target: &str| {
        let mut c = alice.c.clone();
        let req = v1::AuditRequest {
            who: who.into(),
            target: target.into(),
            ..Default::default()
        };
        async move { c.audit(req).await.unwrap().into_inner() }
    };
    let all = audit("", "").await;
    let rows: Vec<(&str, &str, &str, &str)> = all
        .entries
        .iter()
        .map(|e| {
            (
                e.who.as_str(),
                e.action.as_str(),
                e.target.as_str(),
                e.result.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alice", "reserve", r.id.as_str(), "ok"),
            ("alice", "commit", r.id.as_str(), "ok"),
            ("bob", "commit", "no-such-id", e.code.as_str()),
            ("bob", "reserve", "", full.code.as_str()),
            ("alice", "terminate", r.id.as_str(), "ok"),
        ],
        "{all:?}"
    );
    assert!(!all.more);
    assert!(all.entries.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all.entries[2].detail, e.message);
    // Filtered by caller, by reservation, and paged.
    assert_eq!(audit("bob", "").await.entries.len(), 2);
    assert_eq!(audit("", &r.id).await.entries.len(), 3);
    let mut c = alice.c.clone();
    let page = c
        .audit(v1::AuditRequest {
            after_seq: all.entries[1].seq,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 2);
    assert!(page.more);
    assert_eq!(page.entries[0].seq, all.entries[2].seq);
    // A user who claims a peer domain's name is not taken for that peer.
    let mut mallory = Client::new(&t, "peer:d2").await;
    mallory.terminate(&r.id).await.unwrap_err();
    assert!(audit("peer:d2", "").await.entries.is_empty());
    assert_eq!(audit("api:peer:d2", "").await.entries.len(), 1);
    stop(t).await;
}

/// `GET /metrics` on the metrics listener: reservations by state from the store, the
/// admission histogram by result, the path computation time; anything else is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_admissions_and_reservations_by_state() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idc = TestIdc::builder().metrics().start().await;
    let at = idc.server().metrics.expect("metrics served");
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let mut c = idc.client().await;
    let held = c
        .reserve(v1::ReserveRequest {
            criteria: Some(crit(
                "internet2:houston:xe-0/0/0",
                "internet2:new-york:xe-0/0/0",
                100,
                Utc::now() + TimeDelta::minutes(10),
                Utc::now() + TimeDelta::hours(1),
            )),
            verify_each: None,
        })
        .await
        .unwrap()
        .into_inner();
    // One refused: 00705 (more than any link carries).
    let refused = c
        .reserve(v1::ReserveRequest {
            criteria: Some(crit(
                "internet2:houston:xe-0/0/0",
                "internet2:new-york:xe-0/0/0",
                10_000_000,
                Utc::now() + TimeDelta::minutes(10),
                Utc::now() + TimeDelta::hours(1),
            )),
            verify_each: None,
        })
        .await;
    assert!(refused.is_err());
    let page = get("/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("text/plain; version=0.0.4"));
    let line = |prefix: &str| {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {page}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    // The recorder is the process's: other tests' IDCs count too, so at least.
    assert!(line("sluice_admission_seconds_count{result=\"ok\"}") >= 1.0);
    assert!(line("sluice_admission_seconds_count{result=\"00705\"}") >= 1.0);
    assert!(line("sluice_pce_seconds_count") >= 2.0);
    // This IDC's store: one held reservation.
    assert_eq!(
        line(
            "sluice_reservations{reservation=\"ReserveHeld\",provision=\"Released\",lifecycle=\"Created\",data_plane=\"inactive\"}"
        ),
        1.0,
        "{}",
        held.id
    );
    assert!(get("/other").await.starts_with("HTTP/1.1 404"));
    idc.shutdown().await;
}
