//! The IDC's core, independent of the transport: admission, the state machines applied
//! and persisted, the scheduler's tick, and the queries.
//!
//! Concurrency: path computation runs in parallel against the in-memory index (a read
//! lock). Every write holds the store's [`Writer`](crate::store::Writer); while it is
//! held nothing else changes the store or the index, so a plan computed optimistically
//! is re-validated under it (and recomputed if it no longer fits), and the store
//! re-checks again inside its transaction. The index is updated before the writer is
//! released.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::reservation::check_start;
use sluice_model::topology::PortIdx;
use sluice_model::{
    Change, Criteria, Direction, Error, ErrorCode, Mbps, PathCandidate, PathOffers, Reservation,
    ReservationState, Resource, TimeWindow, Topology, Vlan, VlanSet,
};
use sluice_pce::{Index, PathPlan, PathRequest, Place, Step, Usage};
use tokio::sync::{Notify, broadcast};
use tracing::{debug, error, info, warn};

mod audit;
mod circuits;
mod measurements;
mod nodes;
mod series;
pub use circuits::{CircuitOccurrence, FreeSpan};
pub use series::{SeriesAsk, SeriesChange, SeriesScope};

use crate::clock::Clock;
use crate::store::{
    BandwidthBooking, BookingChange, Bookings, Conflict, EventRecord, LabelBooking, ListFilter,
    Store, StoreError,
};

/// A state change applied to a loaded reservation at `now`, returning what it changed.
type Operation<'a> = dyn FnMut(&mut Reservation, DateTime<Utc>) -> Result<Vec<Change>, Error> + 'a;

/// Default time a hold waits for its commit.
pub const DEFAULT_HOLD_TIMEOUT: TimeDelta = TimeDelta::seconds(120);
/// Most reservations a list returns unless asked otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// How far a write must have reached before its caller hears about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    /// fsynced (group commit): survives a power loss.
    Yes,
    /// In the WAL: survives a killed process; a power loss may roll it back to the
    /// previous state, which is always a consistent one (a hold then expires by its timer).
    AfterCrash,
}

#[derive(Clone)]
pub struct Idc {
    inner: Arc<Inner>,
}

struct Inner {
    topo: Arc<Topology>,
    store: Store,
    index: RwLock<Index>,
    clock: Arc<dyn Clock>,
    /// The events this process wrote, as it wrote them: for what acts on a change
    /// (agents, notifications to other domains), which the replica that made the
    /// change does.
    events: broadcast::Sender<Arc<EventRecord>>,
    /// Every event of the domain, whichever replica wrote it, in sequence order with
    /// no gaps: for Watch.
    all_events: broadcast::Sender<Arc<EventRecord>>,
    sequencer: std::sync::Mutex<Sequencer>,
    /// Local changes of the index so far (the follower checks it did not race one).
    index_writes: std::sync::atomic::AtomicU64,
    /// The earliest deadline written since the scheduler last read the store; writers
    /// lower it and wake the scheduler only when they move it earlier.
    wake_hint: std::sync::Mutex<Option<DateTime<Utc>>>,
    wake: Notify,
    hold_timeout: TimeDelta,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Machine state names or summary words; any match selects.
    pub states: Vec<String>,
    pub window: Option<TimeWindow>,
    /// `node:port` or a full STP.
    pub port: Option<String>,
    pub owner: Option<String>,
    pub limit: Option<usize>,
}

/// Bandwidth of one resource over time, per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub resource: String,
    pub directions: Vec<DirectionSteps>,
    pub vlans_in_use: Vec<Vlan>,
    pub vlans: Option<VlanSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionSteps {
    pub direction: String,
    pub capacity: Mbps,
    pub steps: Vec<Step>,
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(Conflict::Bandwidth {
            resource,
            direction,
            requested,
            available,
        }) => {
            let mut err = Error::field(
                ErrorCode::CapacityUnavailable,
                "capacity_mbps",
                format!(
                    "requested {}, available {} on {resource} ({direction})",
                    requested.0, available.0
                ),
            );
            err.capacity = Some(Box::new(sluice_model::CapacityFeedback {
                requested,
                available,
                bottlenecks: vec![resource],
            }));
            err
        }
        StoreError::Conflict(Conflict::Label { resource, vlan }) => Error::field(
            ErrorCode::StpUnavailable,
            // Inner::admission_error names the destination when it was that end.
            if resource.starts_with("link:") {
                "path"
            } else {
                "src_vlan"
            },
            format!("VLAN {vlan} on {resource} was taken meanwhile"),
        ),
        StoreError::Stale(id) => Error::field(
            ErrorCode::Internal,
            STALE_FIELD,
            format!("{id} was changed by another IDC replica meanwhile; try again"),
        ),
        other => {
            error!(error = %other, "store failure");
            Error::internal(format!("store: {other}"))
        }
    }
}

/// The field a [`StoreError::Stale`] names once it is an [`Error`].
const STALE_FIELD: &str = "row_version";

/// Runs `f`, and again (up to three more times) while its save finds that another
/// replica changed the row since `f` loaded it: each run loads what is stored now.
fn retrying_stale<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e)
                if attempt < 4
                    && e.code == ErrorCode::Internal
                    && e.field.as_deref() == Some(STALE_FIELD) =>
            {
                debug!(attempt, error = %e.message, "row changed by another replica; again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// What each reservation occupies, from its booking rows as stored.
fn usages_from_rows(
    topo: &Topology,
    bw_rows: &[crate::store::BandwidthRow],
    label_rows: &[crate::store::LabelRow],
    now: DateTime<Utc>,
) -> HashMap<String, Usage> {
    let mut usages: HashMap<String, Usage> = HashMap::new();
    let mut unknown = 0usize;
    for row in bw_rows {
        let Some(res) =
            Direction::parse(&row.direction).and_then(|d| topo.resource_by_key(&row.resource, d))
        else {
            unknown += 1;
            continue;
        };
        let usage = usages
            .entry(row.reservation_id.clone())
            .or_insert_with(|| Usage {
                window: TimeWindow {
                    start: DateTime::from_timestamp_millis(row.start_ms).unwrap_or(now),
                    end: DateTime::from_timestamp_millis(row.end_ms).unwrap_or(now),
                },
                hold_until: row
                    .hold_expires_ms
                    .and_then(DateTime::from_timestamp_millis),
                bandwidth: Vec::new(),
                labels: Vec::new(),
            });
        usage.bandwidth.push((res, Mbps(row.bw_mbps as u64)));
    }
    for row in label_rows {
        let place = topo
            .resource_by_key(&row.resource, Direction::Forward)
            .map(|r| match r {
                Resource::Port(p, _) => Place::Port(p),
                Resource::Link(l, _) => Place::Link(l),
            });
        let vlan = u16::try_from(row.vlan).ok().and_then(Vlan::new);
        match (usages.get_mut(&row.reservation_id), place, vlan) {
            (Some(u), Some(p), Some(v)) => u.labels.push((p, v)),
            _ => unknown += 1,
        }
    }
    if unknown > 0 {
        warn!(
            rows = unknown,
            "bookings that name resources not in the topology were left out of the index"
        );
    }
    usages
}

/// Hands every event to Watch in sequence order, whichever replica wrote it.
struct Sequencer {
    /// Every event up to this one has been sent.
    sent: u64,
    /// Reservations that events read from the store (written by another replica, or
    /// by a local writer not yet published) name: the index is refreshed for them.
    others: Vec<String>,
}

/// How many times admission plans again after the store found its plan taken. On
/// SQLite one is enough (one writer: the index lags only its own crash recovery). On
/// PostgreSQL the writers of every replica race for the same lowest free VLAN and the
/// same headroom; each try learns what the winners took, so a request is refused only
/// once the index (brought up to date from the store) says it does not fit, or after
/// this many lost races.
const STALE_REPLANS: u32 = 24;

/// How far apart the clocks of a domain's replicas may be (they run NTP): a hold
/// committed closer than this to its expiry is re-checked, since a replica whose clock
/// runs ahead may already have given its room away.
const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(5);

/// How often a replica looks for what the others wrote.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Idc {
    /// Opens the SQLite store in `data_dir` and builds the index from it.
    pub fn open(
        topo: Arc<Topology>,
        data_dir: &std::path::Path,
        clock: Arc<dyn Clock>,
        hold_timeout: TimeDelta,
    ) -> Result<Idc, StoreError> {
        let database = crate::store::Database::Sqlite {
            dir: data_dir.to_path_buf(),
        };
        Idc::open_database(topo, &database, clock, hold_timeout)
    }

    /// Opens the store in `database` and builds the index from it.
    pub fn open_database(
        topo: Arc<Topology>,
        database: &crate::store::Database,
        clock: Arc<dyn Clock>,
        hold_timeout: TimeDelta,
    ) -> Result<Idc, StoreError> {
        let store = Store::open_database(database, &topo.domain)?;
        // Before the index is read: what other replicas write from here on reaches the
        // index through the follower (reading a change twice does no harm).
        let events_seen = store.last_event_seq()?;
        // The index is rebuilt from the bookings as stored (paths are not re-routed),
        // streamed and gathered per calendar, each calendar built in one sort.
        let started = std::time::Instant::now();
        let now = clock.now();
        // Resource keys as the store writes them.
        let mut places: HashMap<String, Place> = HashMap::new();
        for l in 0..topo.links().len() {
            let key = topo.resource_key(Resource::Link(l, Direction::Forward)).0;
            places.insert(key, Place::Link(l));
        }
        for p in 0..topo.ports().len() {
            let key = topo.resource_key(Resource::Port(p, Direction::Forward)).0;
            places.insert(key, Place::Port(p));
        }
        let mut loader = sluice_pce::index::IndexLoader::new(topo.clone());
        let mut unknown = 0usize;
        // Reading the rows and building the index each take about half the time: one
        // thread reads, this one builds, batches passing between them.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<crate::store::LiveBooking>>(16);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let tx = tx;
                let mut batch = Vec::with_capacity(4096);
                store.for_each_live_booking(now, |b| {
                    batch.push(b);
                    if batch.len() == 4096 {
                        // The receiver only goes away if this thread's caller panicked.
                        let _ = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(4096)));
                    }
                })?;
                let _ = tx.send(batch);
                Ok::<(), StoreError>(())
            });
            for batch in rx {
                for b in batch {
                    match places.get(&b.resource) {
                        Some(&place) => loader.add(
                            &b.reservation_id,
                            place,
                            b.start,
                            b.end,
                            b.hold_until,
                            b.bw,
                            b.vlan,
                        ),
                        None => unknown += 1,
                    }
                }
            }
            reader.join().expect("the store reader does not panic")
        })?;
        if unknown > 0 {
            warn!(
                rows = unknown,
                "bookings that name resources not in the topology were left out of the index"
            );
        }
        let index = loader.finish();
        info!(
            domain.id = %topo.domain,
            reservations = index.reservations(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index built from the store"
        );
        let (events, _) = broadcast::channel(4096);
        let (all_events, _) = broadcast::channel(4096);
        let sequencer = Sequencer {
            sent: events_seen,
            others: Vec::new(),
        };
        Ok(Idc {
            inner: Arc::new(Inner {
                topo,
                store,
                index: RwLock::new(index),
                clock,
                events,
                all_events,
                sequencer: std::sync::Mutex::new(sequencer),
                index_writes: std::sync::atomic::AtomicU64::new(0),
                wake_hint: std::sync::Mutex::new(None),
                wake: Notify::new(),
                hold_timeout,
            }),
        })
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.inner.topo
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Live events this process writes (subscribe before replaying from the store to
    /// miss nothing).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.inner.events.subscribe()
    }

    /// Every event of the domain, also those other replicas write, in sequence order.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.inner.all_events.subscribe()
    }

    /// On a shared database: follows what the other replicas write until `shutdown`.
    /// Their events go to Watch, the index takes their bookings, and the scheduler
    /// looks again (their timers may now be due here, if they went away).
    pub async fn run_follower(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if !self.inner.store.database().is_shared() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if let Err(e) = self.blocking(|inner| inner.follow()).await {
                warn!(error = %e, "cannot follow the other replicas; trying again");
            }
        }
    }

    /// Runs work that may scan many rows (lists, replays, timer batches) on a blocking
    /// thread: the store is synchronous.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::internal(format!("worker failed: {e}")))?
    }

    /// Runs `f`, which writes to the store, from async code that cannot hand it to a
    /// blocking thread (its arguments are borrowed). On PostgreSQL a writer may be a
    /// while coming (all of them waiting for another replica's locks): the runtime is
    /// told, so this worker's other tasks move on meanwhile.
    pub(crate) fn may_block<T>(&self, f: impl FnOnce() -> T) -> T {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.inner.store.database().is_shared() && multi_thread {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }

    /// Runs a point operation. On SQLite where it is: one transaction on indexed rows
    /// and at most one shared fsync, a fraction of a millisecond; handing it to another
    /// thread and back costs more than that on small machines (measured with `sluice
    /// bench`: 1.05 → 0.77 ms for reserve+commit), and the writer is never held across
    /// an await. On PostgreSQL on a blocking thread: there it may wait for locks that
    /// other replicas hold, or for a connection, which must not stall the runtime (this
    /// costs about 30 % of the bookings per second; `block_in_place` cost more).
    async fn inline<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        if self.inner.store.database().is_shared() {
            self.blocking(f).await
        } else {
            f(&self.inner)
        }
    }

    pub async fn reserve(&self, owner: &str, criteria: Criteria) -> Result<Reservation, Error> {
        let started = std::time::Instant::now();
        let r = match sluice_pce::resolve(&self.inner.topo, &criteria) {
            Ok(req) => {
                let owner = owner.to_string();
                self.inline(move |inner| inner.reserve(owner, criteria, req))
                    .await
            }
            Err(e) => Err(e),
        };
        let result = match &r {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::histogram!(crate::metrics::ADMISSION, "result" => result)
            .record(started.elapsed().as_secs_f64());
        r
    }

    /// How many reservations are in each combination of states (for the metrics).
    pub async fn count_by_states(&self) -> Result<Vec<crate::store::StateCount>, Error> {
        self.blocking(|inner| inner.store.count_by_states().map_err(store_error))
            .await
    }

    /// A dry run of reserve: the path it would get now, up to `k` alternatives and, with
    /// `widest`, the path with the most room. Books nothing.
    pub async fn compute_paths(
        &self,
        criteria: Criteria,
        k: usize,
        widest: bool,
    ) -> Result<PathOffers, Error> {
        const MAX_K: usize = 10;
        if k > MAX_K {
            return Err(Error::invalid(
                "k",
                format!("at most {MAX_K} alternatives, asked for {k}"),
            ));
        }
        let req = sluice_pce::resolve(&self.inner.topo, &criteria)?;
        let now = self.now();
        criteria.check(now)?;
        self.blocking(move |inner| {
            let index = inner.read_index();
            let topo = &inner.topo;
            let c = sluice_pce::compute(&index, &req, now, k, widest)?;
            let offer = |c: &sluice_pce::Candidate| PathCandidate {
                path: c.plan.path_hops(topo),
                metric: c.plan.metric,
                src_vlan: c.plan.src_vlan,
                dst_vlan: c.plan.dst_vlan,
                available: c.available,
                bottlenecks: c.bottlenecks.iter().map(|r| topo.describe(*r)).collect(),
            };
            Ok(PathOffers {
                requested: req.bw,
                requested_reverse: req.bw_reverse,
                best: offer(&c.best),
                alternatives: c.alternatives.iter().map(offer).collect(),
                widest: c.widest.as_ref().map(offer),
            })
        })
        .await
    }

    /// Durable: on disk before the caller hears "committed".
    pub async fn commit(&self, id: &str) -> Result<Reservation, Error> {
        self.transition(id, "commit", Reservation::commit, Durable::Yes)
            .await
    }

    /// A commit that is in the WAL but not yet fsynced, for a caller that makes a
    /// durable write right after (one group fsync then covers both): the aggregator
    /// commits its own segment so, then the circuit.
    pub async fn commit_unsynced(&self, id: &str) -> Result<Reservation, Error> {
        self.transition(id, "commit", Reservation::commit, Durable::AfterCrash)
            .await
    }

    pub async fn abort(&self, id: &str) -> Result<Reservation, Error> {
        self.transition(id, "abort", Reservation::abort, Durable::AfterCrash)
            .await
    }

    pub async fn provision(&self, id: &str) -> Result<Reservation, Error> {
        self.transition(id, "provision", Reservation::provision, Durable::AfterCrash)
            .await
    }

    pub async fn release(&self, id: &str) -> Result<Reservation, Error> {
        self.transition(id, "release", Reservation::release, Durable::AfterCrash)
            .await
    }

    /// Durable: a terminated reservation does not come back.
    pub async fn terminate(&self, id: &str) -> Result<Reservation, Error> {
        self.transition(id, "terminate", Reservation::terminate, Durable::Yes)
            .await
    }

    /// Durable: a stopped circuit must not come back up after a crash.
    pub async fn emergency_stop(&self, id: &str, reason: &str) -> Result<Reservation, Error> {
        let (id, reason) = (id.to_string(), reason.to_string());
        let r = self
            .inline(move |inner| {
                inner.apply(
                    &id,
                    &mut |r, now| r.emergency_stop(now, &reason),
                    Durable::Yes,
                )
            })
            .await?;
        warn!(reservation.id = %r.id, state = r.summary(), "emergency stop");
        Ok(r)
    }

    async fn transition(
        &self,
        id: &str,
        what: &'static str,
        op: fn(&mut Reservation, DateTime<Utc>) -> Result<Vec<Change>, Error>,
        durable: Durable,
    ) -> Result<Reservation, Error> {
        let id = id.to_string();
        let r = self
            .inline(move |inner| inner.apply(&id, &mut |r, now| op(r, now), durable))
            .await?;
        info!(reservation.id = %r.id, operation = what, state = r.summary(), "reservation updated");
        Ok(r)
    }

    pub async fn modify(
        &self,
        id: &str,
        bw: Option<Mbps>,
        bw_reverse: Option<Mbps>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Reservation, Error> {
        if bw.is_none() && bw_reverse.is_none() && start.is_none() && end.is_none() {
            return Err(Error::field(
                ErrorCode::MissingParameter,
                "capacity_mbps",
                "modify needs a new capacity, start or end",
            ));
        }
        let id = id.to_string();
        let r = self
            .inline(move |inner| inner.modify(&id, bw, bw_reverse, start, end))
            .await?;
        info!(reservation.id = %r.id, version = r.version, "reservation modified");
        Ok(r)
    }

    pub async fn get(&self, id: &str) -> Result<Reservation, Error> {
        let id = id.to_string();
        self.inline(move |inner| {
            inner
                .store
                .get(&id)
                .map_err(store_error)?
                .ok_or_else(|| Error::not_found(&id))
        })
        .await
    }

    /// Matching reservations, oldest first, and whether more matched than the limit.
    pub async fn list(&self, q: ListQuery) -> Result<(Vec<Reservation>, bool), Error> {
        for s in &q.states {
            if !state_word_known(s) {
                return Err(Error::invalid(
                    "states",
                    format!(
                        "{s:?} is not a state name (e.g. ReserveHeld, Provisioned, Terminated) or summary (held, committed, active, ended, ...)"
                    ),
                ));
            }
        }
        let stp = match &q.port {
            None => None,
            Some(p) => Some(self.port_stp(p, "port")?.1),
        };
        let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        self.blocking(move |inner| {
            let filter = ListFilter {
                owner: q.owner.clone(),
                window: q.window,
                stp,
            };
            let mut all = inner.store.list(&filter).map_err(store_error)?;
            if !q.states.is_empty() {
                all.retain(|r| q.states.iter().any(|s| state_matches(r, s)));
            }
            let truncated = all.len() > limit;
            all.truncate(limit);
            Ok((all, truncated))
        })
        .await
    }

    pub async fn events_after(
        &self,
        seq: u64,
        reservation_id: Option<String>,
    ) -> Result<Vec<EventRecord>, Error> {
        self.blocking(move |inner| {
            inner
                .store
                .events_after(seq, reservation_id.as_deref(), 10_000)
                .map_err(store_error)
        })
        .await
    }

    /// The sequence number of the newest recorded event (0 if none).
    pub async fn last_event_seq(&self) -> Result<u64, Error> {
        self.inline(|inner| inner.store.last_event_seq().map_err(store_error))
            .await
    }

    fn port_stp(&self, text: &str, field: &str) -> Result<(PortIdx, String), Error> {
        let topo = &self.inner.topo;
        let local = match text.matches(':').count() {
            1 => text.to_string(),
            _ => match sluice_model::Stp::parse(text) {
                Ok(stp) if stp.domain == topo.domain => stp.local(),
                _ => String::new(),
            },
        };
        local
            .split_once(':')
            .and_then(|(n, p)| topo.port_by_local(n, p))
            .map(|p| (p, topo.stp(p).to_string()))
            .ok_or_else(|| {
                Error::field(
                    ErrorCode::UnknownStp,
                    field,
                    format!(
                        "{text:?} is not a port of {} (node:port or {}:node:port)",
                        topo.domain, topo.domain
                    ),
                )
            })
    }

    /// Booked and available bandwidth of a link or port over `window`.
    pub fn availability(
        &self,
        link: Option<&str>,
        port: Option<&str>,
        window: TimeWindow,
    ) -> Result<Availability, Error> {
        let topo = &self.inner.topo;
        let now = self.now();
        let index = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        let report = |rs: Vec<(String, Resource)>| -> Vec<DirectionSteps> {
            rs.into_iter()
                .map(|(label, r)| DirectionSteps {
                    direction: label,
                    capacity: topo.capacity(r),
                    steps: index.steps(r, &window, now),
                })
                .collect()
        };
        match (link, port) {
            (Some(l), None) => {
                let li = topo.link_by_id(l).ok_or_else(|| {
                    Error::field(
                        ErrorCode::InvalidParameter,
                        "link",
                        format!("no link {l:?} in {}", topo.domain),
                    )
                })?;
                let name = |d: Direction| {
                    format!(
                        "{}→{}",
                        topo.node(topo.link_tail(li, d)).id,
                        topo.node(topo.link_head(li, d)).id
                    )
                };
                let dirs = [Direction::Forward, Direction::Reverse]
                    .map(|d| (name(d), Resource::Link(li, d)))
                    .to_vec();
                let link = topo.link(li);
                Ok(Availability {
                    resource: format!("link {l}"),
                    directions: report(dirs),
                    vlans_in_use: index.vlans_in_use(Place::Link(li), &window, now),
                    vlans: Some(topo.port(link.a).vlans.intersect(&topo.port(link.b).vlans)),
                })
            }
            (None, Some(p)) => {
                let (pi, stp) = self.port_stp(p, "port")?;
                let dirs = vec![
                    ("in".to_string(), Resource::Port(pi, Direction::Forward)),
                    ("out".to_string(), Resource::Port(pi, Direction::Reverse)),
                ];
                Ok(Availability {
                    resource: format!("port {stp}"),
                    directions: report(dirs),
                    vlans_in_use: index.vlans_in_use(Place::Port(pi), &window, now),
                    vlans: Some(topo.port(pi).vlans.clone()),
                })
            }
            _ => Err(Error::invalid("link", "give exactly one of link and port")),
        }
    }

    /// Runs every due timer once: hold expiry, provisioning at start, end of window.
    /// Returns how many reservations it touched.
    pub async fn tick(&self) -> Result<usize, Error> {
        self.blocking(|inner| inner.tick()).await.map(|t| t.touched)
    }

    /// The scheduler: sleeps until the next deadline (from the store, or an earlier one
    /// a write reported), then ticks. Runs until `shutdown` says stop.
    pub async fn run_scheduler(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            // Deadlines written from here on either reach the store before the read
            // below, or lower the hint after it.
            *self.inner.hint() = None;
            let failing = match self.blocking(|inner| inner.tick()).await {
                Ok(t) => t.failed > 0,
                Err(e) => {
                    error!(error = %e, "scheduler tick failed");
                    true
                }
            };
            let inner = self.inner.clone();
            let stored =
                match tokio::task::spawn_blocking(move || inner.store.next_deadline()).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        error!(error = %e, "cannot read the next deadline; retrying in a second");
                        Some(self.now() + TimeDelta::seconds(1))
                    }
                    Err(e) => {
                        error!(error = %e, "scheduler worker failed");
                        Some(self.now() + TimeDelta::seconds(1))
                    }
                };
            let mut target = {
                let mut hint = self.inner.hint();
                *hint = earliest(stored, *hint);
                *hint
            };
            if failing {
                // A step that failed is still due: retry in a second, not in a hot loop.
                let retry = self.now() + TimeDelta::seconds(1);
                target = target.map(|t| t.max(retry));
            }
            loop {
                let clock = self.inner.clock.clone();
                let sleep = async move {
                    match target {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sleep => break,
                    _ = self.inner.wake.notified() => {
                        target = earliest(target, *self.inner.hint());
                        if target.is_some_and(|t| t <= self.now()) {
                            break;
                        }
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }

    pub fn indexed_reservations(&self) -> usize {
        self.inner
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .reservations()
    }
}

/// What one scheduler tick did.
struct Tick {
    touched: usize,
    failed: usize,
}

/// A reservation loaded (under the writer) for a new version: its due timers run, the
/// modification allowed, and the version's rates and window worked out.
struct NewVersion {
    r: Reservation,
    changes: Vec<Change>,
    bw: Mbps,
    bw_reverse: Mbps,
    window: TimeWindow,
}

impl NewVersion {
    fn load(
        writer: &mut crate::store::Writer<'_>,
        id: &str,
        (bw, bw_reverse): (Option<Mbps>, Option<Mbps>),
        (start, end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        now: DateTime<Utc>,
    ) -> Result<NewVersion, Error> {
        let mut r = writer
            .load(id)
            .map_err(store_error)?
            .ok_or_else(|| Error::not_found(id))?;
        let changes = sluice_scheduler::run_due(&mut r, now);
        r.check_modifiable(now)?;
        let (bw, bw_reverse) = new_rates(&r, bw, bw_reverse);
        let window = new_window(&r, start, end, now)?;
        Ok(NewVersion {
            r,
            changes,
            bw,
            bw_reverse,
            window,
        })
    }
}

/// The window of a new version: a start can move only before it has come, and not
/// into the past; the end must lie ahead.
fn new_window(
    r: &Reservation,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<TimeWindow, Error> {
    let new_start = start.unwrap_or(r.window.start);
    let new_end = end.unwrap_or(r.window.end);
    if new_start != r.window.start {
        if r.window.start <= now {
            return Err(Error::invalid(
                "start",
                "the reservation has started; its start can no longer change",
            ));
        }
        check_start(new_start, now)?;
    }
    let window = TimeWindow::new(new_start, new_end)?;
    if new_end <= now {
        return Err(Error::invalid("end", "the new end is in the past"));
    }
    Ok(window)
}

/// The rates of a new version: a symmetric circuit stays symmetric; an asymmetric one
/// keeps its Z→A rate unless told otherwise.
fn new_rates(r: &Reservation, bw: Option<Mbps>, bw_reverse: Option<Mbps>) -> (Mbps, Mbps) {
    let new_bw = bw.unwrap_or(r.bw);
    let new_rev = bw_reverse.unwrap_or(if r.bw_reverse == r.bw {
        new_bw
    } else {
        r.bw_reverse
    });
    (new_bw, new_rev)
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Every state name of the three machines, and the summary words.
const SUMMARIES: &[&str] = &[
    "held",
    "timed-out",
    "reserve-failed",
    "checking",
    "committing",
    "aborting",
    "aborted",
    "committed",
    "provisioned",
    "active",
    "ended",
    "failed",
    "terminating",
    "terminated",
];

fn state_word_known(s: &str) -> bool {
    SUMMARIES.contains(&s)
        || ReservationState::parse(s).is_some()
        || sluice_model::ProvisionState::parse(s).is_some()
        || sluice_model::LifecycleState::parse(s).is_some()
}

fn state_matches(r: &Reservation, s: &str) -> bool {
    r.summary() == s
        || r.states.reservation.as_str() == s
        || r.states.provision.as_str() == s
        || r.states.lifecycle.as_str() == s
}

impl Inner {
    fn new_id(&self) -> String {
        let u = uuid::Uuid::new_v4().simple().to_string();
        format!("{}-{}", self.topo.domain, &u[..12])
    }

    fn bookings(&self, usage: &Usage) -> Bookings {
        Bookings {
            window: usage.window,
            hold_until: usage.hold_until,
            bandwidth: usage
                .bandwidth
                .iter()
                .map(|(r, bw)| {
                    let (resource, direction) = self.topo.resource_key(*r);
                    BandwidthBooking {
                        resource,
                        direction,
                        bw: *bw,
                        capacity: self.topo.capacity(*r),
                    }
                })
                .collect(),
            labels: usage
                .labels
                .iter()
                .map(|(place, v)| LabelBooking {
                    resource: match *place {
                        Place::Port(p) => {
                            self.topo
                                .resource_key(Resource::Port(p, Direction::Forward))
                                .0
                        }
                        Place::Link(l) => {
                            self.topo
                                .resource_key(Resource::Link(l, Direction::Forward))
                                .0
                        }
                    },
                    vlan: *v,
                })
                .collect(),
        }
    }

    fn hint(&self) -> std::sync::MutexGuard<'_, Option<DateTime<Utc>>> {
        self.wake_hint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the scheduler about a deadline just written, waking it if it is earlier
    /// than anything it knows of.
    fn schedule(&self, deadline: Option<DateTime<Utc>>) {
        let Some(d) = deadline else { return };
        let mut hint = self.hint();
        if hint.is_none_or(|h| d < h) {
            *hint = Some(d);
            drop(hint);
            self.wake.notify_one();
        }
    }

    /// A store error from admitting `plan`, naming the end whose VLAN was taken.
    fn admission_error(&self, e: StoreError, plan: &PathPlan) -> Error {
        let dst_key = self
            .topo
            .resource_key(Resource::Port(plan.dst, Direction::Forward))
            .0;
        let at_dst = matches!(&e, StoreError::Conflict(Conflict::Label { resource, .. })
            if *resource == dst_key);
        let mut err = store_error(e);
        if at_dst {
            err.field = Some("dst_vlan".into());
        }
        err
    }

    /// What a commit of hold `r` (about to be saved, committed) must re-check, if
    /// anything. Replicas read their own clocks: one whose clock runs ahead may find the
    /// hold expired and book its room. Clocks of replicas agree within [`CLOCK_SKEW`]
    /// (NTP), so only a commit in the last moments of its hold re-checks its own
    /// bookings (`BookingChange::Confirm`); one process alone never needs to. A circuit
    /// across domains has no bookings here (an empty path): its domains check theirs.
    fn confirmation(
        &self,
        hold_until: &Option<DateTime<Utc>>,
        r: &Reservation,
        committing: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Bookings>, Error> {
        let near_expiry = hold_until.is_some_and(|until| until - now <= CLOCK_SKEW);
        if !(committing && near_expiry && self.store.database().is_shared()) || r.path.is_empty() {
            return Ok(None);
        }
        let (bw, bw_reverse) = new_rates(r, None, None);
        let (plan, _) = self.new_version_request(r, bw, bw_reverse, r.window)?;
        Ok(Some(
            self.bookings(&plan.usage(bw, bw_reverse, r.window, None)),
        ))
    }

    /// Says that admission found the index behind the store: to be expected with
    /// replicas (another one just booked), a warning for one process alone.
    fn stale_index(&self, id: &str, conflict: &Conflict) {
        if self.store.database().is_shared() {
            debug!(reservation.id = %id, conflict = %conflict, "another replica booked it first; planning again");
        } else {
            warn!(reservation.id = %id, conflict = %conflict, "index was stale; refreshed, planning again");
        }
    }

    /// Reloads from the store every reservation booked on a resource `usage` names, so
    /// the index agrees with the store there. Called with the writer held.
    fn refresh_index(&self, usage: &Usage, now: DateTime<Utc>) -> Result<(), Error> {
        let b = self.bookings(usage);
        let mut resources: Vec<String> = b
            .bandwidth
            .iter()
            .map(|x| x.resource.clone())
            .chain(b.labels.iter().map(|l| l.resource.clone()))
            .collect();
        resources.sort();
        resources.dedup();
        let (bw_rows, label_rows) = self
            .store
            .live_bookings_on(&resources, now)
            .map_err(store_error)?;
        let usages = usages_from_rows(&self.topo, &bw_rows, &label_rows, now);
        let mut index = self.write_index();
        for (id, u) in &usages {
            index.insert(id, u);
        }
        Ok(())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The index, to change it after a local write (counted: see `follow`).
    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        let index = self.index.write().unwrap_or_else(|p| p.into_inner());
        self.index_writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        index
    }

    fn publish(&self, events: Vec<EventRecord>) {
        let events: Vec<Arc<EventRecord>> = events.into_iter().map(Arc::new).collect();
        for e in &events {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(e.clone());
        }
        if let Err(e) = self.sequence(&events) {
            warn!(error = %e, "events for Watch were read late; watchers catch up from the store");
        }
    }

    /// Sends Watch everything up to the last of `local` (or whatever the store has, if
    /// none) that it has not had, in order. Events come from `local` while they follow
    /// on; a gap (another writer's events) is filled from the store.
    fn sequence(&self, local: &[Arc<EventRecord>]) -> Result<(), Error> {
        let mut seq = self.sequencer.lock().unwrap_or_else(|p| p.into_inner());
        for e in local {
            if e.seq == seq.sent + 1 {
                let _ = self.all_events.send(e.clone());
                seq.sent = e.seq;
            }
        }
        if local.last().is_some_and(|e| e.seq <= seq.sent) {
            return Ok(());
        }
        // Sequence numbers become visible in order (the store's guarantee), so reading
        // after `sent` finds any gap filled.
        let shared = self.store.database().is_shared();
        loop {
            let batch = self
                .store
                .events_after(seq.sent, None, 1000)
                .map_err(store_error)?;
            let full = batch.len() == 1000;
            for e in batch {
                if shared && !local.iter().any(|l| l.seq == e.seq) {
                    seq.others.push(e.reservation_id.clone());
                }
                seq.sent = e.seq;
                let _ = self.all_events.send(Arc::new(e));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// One look at what other replicas wrote: their events to Watch, their bookings
    /// into the index, and a wake-up for the scheduler.
    fn follow(&self) -> Result<(), Error> {
        self.sequence(&[])?;
        let mut ids = std::mem::take(
            &mut self
                .sequencer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .others,
        );
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        // A local writer may commit one of these after the read below and move the
        // index before this puts the older rows in: if any local write touched the index
        // meanwhile, these are read again at the next look.
        let seen = self.index_writes.load(std::sync::atomic::Ordering::Acquire);
        let now = self.clock.now();
        let (bw_rows, label_rows) = self
            .store
            .live_bookings_of(&ids, now)
            .map_err(store_error)?;
        let usages = usages_from_rows(&self.topo, &bw_rows, &label_rows, now);
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                match usages.get(id) {
                    Some(u) => index.insert(id, u),
                    None => index.remove(id),
                }
            }
            if self.index_writes.load(std::sync::atomic::Ordering::Acquire) != seen {
                self.sequencer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .others
                    .extend(ids.iter().cloned());
            }
        }
        debug!(
            reservations = ids.len(),
            "index brought up to date with other replicas"
        );
        self.schedule(Some(now));
        Ok(())
    }

    fn reserve(
        &self,
        owner: String,
        criteria: Criteria,
        req: PathRequest,
    ) -> Result<Reservation, Error> {
        // Optimistic: computed while others may be writing.
        let early = self.clock.now();
        let computing = std::time::Instant::now();
        let found = sluice_pce::find_path(&self.read_index(), &req, early);
        metrics::histogram!(crate::metrics::PCE).record(computing.elapsed().as_secs_f64());
        let mut plan = found?;
        let mut writer = self.store.writer().map_err(store_error)?;
        let now = self.clock.now();
        criteria.check(now)?;
        {
            // On SQLite nothing changes the index while we hold the writer: if the plan
            // still fits now, it fits; if not, the answer computed now is the true one.
            // (On PostgreSQL other writers run meanwhile; the store's re-check decides.)
            let index = self.read_index();
            if sluice_pce::check_plan(&index, &plan, &req, now).is_err() {
                plan = sluice_pce::find_path(&index, &req, now)?;
            }
        }
        let id = self.new_id();
        let mut replans = 0;
        let (r, usage, events, deadline) = loop {
            let (r, changes) = Reservation::held(
                id.clone(),
                owner.clone(),
                &criteria,
                plan.src_vlan,
                plan.dst_vlan,
                plan.path_hops(&self.topo),
                now,
                self.hold_timeout,
            );
            let usage = plan.usage(r.bw, r.bw_reverse, criteria.window, r.hold_expires_at);
            let deadline = sluice_scheduler::next_deadline(&r, now);
            match writer.insert_held(&r, deadline, &self.bookings(&usage), &changes, now) {
                Ok(events) => break (r, usage, events, deadline),
                // The index missed a booking the store has (it is a cache): bring what
                // the plan touched up to date and plan again (a few times: see STALE_REPLANS).
                Err(StoreError::Conflict(c)) if replans < STALE_REPLANS => {
                    self.stale_index(&id, &c);
                    self.refresh_index(&usage, now)?;
                    replans += 1;
                    plan = sluice_pce::find_path(&self.read_index(), &req, now)?;
                }
                Err(e) => return Err(self.admission_error(e, &plan)),
            }
        };
        self.write_index().insert(&r.id, &usage);
        drop(writer);
        info!(
            reservation.id = %r.id,
            bw_mbps = r.bw.0,
            hops = r.path.len(),
            "reservation held"
        );
        self.publish(events);
        self.schedule(deadline);
        Ok(r)
    }

    /// Loads, catches up the timers, applies `op`, and saves with whatever the result
    /// means for the bookings. On error nothing is written. If another replica saved
    /// the reservation meanwhile, all of it runs again on what that replica wrote (so
    /// a timer both found due fires once).
    fn apply(
        &self,
        id: &str,
        op: &mut Operation<'_>,
        durable: Durable,
    ) -> Result<Reservation, Error> {
        retrying_stale(|| self.apply_once(id, op, durable))
    }

    fn apply_once(
        &self,
        id: &str,
        op: &mut Operation<'_>,
        durable: Durable,
    ) -> Result<Reservation, Error> {
        let mut writer = self.store.writer().map_err(store_error)?;
        let now = self.clock.now();
        let mut r = writer
            .load(id)
            .map_err(store_error)?
            .ok_or_else(|| Error::not_found(id))?;
        let was_held = r.states.reservation == ReservationState::ReserveHeld;
        let loaded_hold = r.hold_expires_at;
        let had_resources = r.holds_resources(now) || was_held;
        let mut changes = sluice_scheduler::run_due(&mut r, now);
        changes.extend(op(&mut r, now)?);
        let released = had_resources && !r.holds_resources(now);
        let committed_now = was_held && r.committed_version.is_some();
        let confirm = self.confirmation(&loaded_hold, &r, committed_now && !released, now)?;
        let booking_change = match (&confirm, released) {
            (_, true) => BookingChange::Delete,
            (Some(own), false) => BookingChange::Confirm(own),
            (None, false) => BookingChange::Keep,
        };
        let deadline = sluice_scheduler::next_deadline(&r, now);
        let events = writer
            .save(&r, deadline, booking_change, &changes, now)
            .map_err(store_error)?;
        if released {
            self.write_index().remove(id);
        } else if committed_now {
            self.write_index().commit(id);
        }
        drop(writer);
        if durable == Durable::Yes {
            self.store.sync().map_err(store_error)?;
        }
        self.publish(events);
        self.schedule(deadline);
        Ok(r)
    }

    fn modify(
        &self,
        id: &str,
        bw: Option<Mbps>,
        bw_reverse: Option<Mbps>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Reservation, Error> {
        retrying_stale(|| self.modify_once(id, bw, bw_reverse, start, end))
    }

    fn modify_once(
        &self,
        id: &str,
        bw: Option<Mbps>,
        bw_reverse: Option<Mbps>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Reservation, Error> {
        let mut writer = self.store.writer().map_err(store_error)?;
        let now = self.clock.now();
        let NewVersion {
            mut r,
            mut changes,
            bw: new_bw,
            bw_reverse: new_rev,
            window,
        } = NewVersion::load(&mut writer, id, (bw, bw_reverse), (start, end), now)?;
        let (plan, req) = self.new_version_request(&r, new_bw, new_rev, window)?;
        sluice_pce::check_plan(&self.read_index(), &plan, &req, now)?;
        changes.extend(r.apply_version(new_bw, new_rev, window, now)?);
        let usage = plan.usage(new_bw, new_rev, window, None);
        let bookings = self.bookings(&usage);
        let deadline = sluice_scheduler::next_deadline(&r, now);
        let events = writer
            .save(
                &r,
                deadline,
                BookingChange::Replace(&bookings),
                &changes,
                now,
            )
            .map_err(|e| self.admission_error(e, &plan))?;
        self.write_index().insert(id, &usage);
        drop(writer);
        self.store.sync().map_err(store_error)?;
        self.publish(events);
        self.schedule(deadline);
        Ok(r)
    }

    /// A reservation's own path, and the request for a new version of it on that path
    /// (its own bookings left out): what modify checks.
    fn new_version_request(
        &self,
        r: &Reservation,
        bw: Mbps,
        bw_reverse: Mbps,
        window: TimeWindow,
    ) -> Result<(PathPlan, PathRequest), Error> {
        let (Some(src), Some(dst)) = (
            self.topo.port_by_stp(&r.src.stp),
            self.topo.port_by_stp(&r.dst.stp),
        ) else {
            return Err(Error::internal(format!(
                "{}: its end points are no longer in the topology",
                r.id
            )));
        };
        let plan = PathPlan::from_hops(&self.topo, src, dst, &r.path, r.src.vlan, r.dst.vlan)
            .ok_or_else(|| {
                Error::internal(format!("{}: its path is no longer in the topology", r.id))
            })?;
        let req = PathRequest {
            src,
            dst,
            src_vlans: VlanSet::single(r.src.vlan),
            dst_vlans: VlanSet::single(r.dst.vlan),
            bw,
            bw_reverse,
            window,
            include: Vec::new(),
            exclude_nodes: Default::default(),
            exclude_links: Default::default(),
            ignore: Some(Arc::from(r.id.as_str())),
        };
        Ok((plan, req))
    }

    fn tick(&self) -> Result<Tick, Error> {
        let now = self.clock.now();
        let due = self.store.due(now, 1000).map_err(store_error)?;
        let (mut touched, mut failed) = (0, 0);
        for id in &due {
            // Timer transitions are derived from the clock: if a power loss rolls one
            // back, the next tick does it again.
            match self.apply(id, &mut |_, _| Ok(Vec::new()), Durable::AfterCrash) {
                Ok(r) => {
                    touched += 1;
                    info!(reservation.id = %id, state = r.summary(), "timer fired");
                }
                Err(e) => {
                    failed += 1;
                    error!(reservation.id = %id, error = %e, "timer failed");
                }
            }
        }
        Ok(Tick { touched, failed })
    }
}
