//! The aggregator (NSI tree model): a circuit whose end points lie in other domains.
//!
//! Reserve: rank the domain-level routes the documents allow; for the first, ask every
//! domain on it for the VLANs free at its ingress and egress and chain a VLAN through
//! every demarcation point; hold every segment in parallel; if all hold, record the
//! circuit (held, with this IDC's hold timer); if any fails or does not answer in time,
//! abort the ones that held and try the next route. A segment whose answer never came is
//! left to its domain's own hold timer. Commit, abort, provision, release and terminate
//! reach every segment; a query asks every domain afresh.

use std::collections::HashSet;

use sluice_model::{
    CircuitSegment, Criteria, Error, ErrorCode, ReservationState, States, Stp, StpRequest, VlanSet,
};
use sluice_proto::status::from_status;
use sluice_proto::{convert, v1};
use sluice_stitching::{
    DomainDocument, LabelSpan, RouteAsk, SegmentAnswer, TwoPhase, chain_labels, domain_routes,
};
use tokio::task::JoinSet;
use tonic::Code;
use tracing::{info, warn};

use super::{Federation, border_bw, segment_owner};

/// What a circuit's reply carries.
pub type SegmentView = CircuitSegment;

/// How many domain-level routes a reserve tries before giving up.
const MAX_ROUTES: usize = 5;

/// An operation the aggregator passes to every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Commit,
    Abort,
    Provision,
    Release,
    Terminate,
    Query,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Commit => "commit",
            Op::Abort => "abort",
            Op::Provision => "provision",
            Op::Release => "release",
            Op::Terminate => "terminate",
            Op::Query => "query",
        }
    }
}

/// One domain's answer to a call on its segment, under way.
type SegmentCall = std::pin::Pin<Box<dyn Future<Output = Result<Answer, Error>> + Send>>;

/// A segment as its domain answered: its id there, states and one word.
#[derive(Debug, Clone)]
struct Answer {
    id: String,
    states: States,
    summary: String,
    /// Until when the segment is held, if it is.
    hold_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a route failed: where, and the domain's own error.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub domain: String,
    pub index: usize,
    pub error: Error,
}

impl Failure {
    /// Segment `index` of `route` failed with its domain's `error`, put in the user's terms.
    pub(super) fn on(route: &[sluice_stitching::Segment], index: usize, error: Error) -> Failure {
        Failure {
            domain: route[index].domain.clone(),
            index,
            error: in_user_terms(error, index, route.len()),
        }
    }
}

/// Runs `futs` in parallel, each to its end; their results in order, `None` for one
/// that panicked (its outcome is unknown).
pub(super) async fn in_parallel<T, F>(futs: Vec<F>) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut index = std::collections::HashMap::new();
    for (i, f) in futs.into_iter().enumerate() {
        index.insert(set.spawn(f).id(), i);
    }
    let mut out: Vec<Option<T>> = (0..index.len()).map(|_| None).collect();
    while let Some(done) = set.join_next_with_id().await {
        match done {
            Ok((id, v)) => out[index[&id]] = Some(v),
            Err(e) => warn!(error = %e, "a federation task failed"),
        }
    }
    out
}

/// A segment's error in terms of the user's request: the segment's own `src` is the
/// user's only on the first segment (and `dst` on the last); elsewhere the fault is in
/// the path.
fn in_user_terms(mut e: Error, index: usize, segments: usize) -> Error {
    let field = e.field.take().map(|f| {
        let f = f.strip_prefix("criteria.").unwrap_or(&f).to_string();
        let end = f.strip_suffix("_vlan").unwrap_or(&f);
        match end {
            "src" if index == 0 => f,
            "dst" if index + 1 == segments => f,
            "src" | "dst" => "path".to_string(),
            _ => f,
        }
    });
    e.field = field;
    e
}

fn task_failed() -> Error {
    Error::internal("the call's task failed; its outcome is unknown")
}

/// Sets the state of `machine` to the word `to`; false if either is not understood.
pub(super) fn apply_state_word(states: &mut States, machine: &str, to: &str) -> bool {
    use sluice_model::{LifecycleState, ProvisionState};
    match machine {
        "reservation" => ReservationState::parse(to).map(|s| states.reservation = s),
        "provision" => ProvisionState::parse(to).map(|s| states.provision = s),
        "lifecycle" => LifecycleState::parse(to).map(|s| states.lifecycle = s),
        "data_plane" => match to {
            "active" | "inactive" => {
                states.data_plane_active = to == "active";
                Some(())
            }
            _ => None,
        },
        _ => None,
    }
    .is_some()
}

fn answer_from_wire(r: v1::Reservation) -> Result<Answer, Error> {
    let states = convert::states_from_wire(&r.states, "states")?;
    let summary = r
        .states
        .as_ref()
        .map(|s| s.summary.clone())
        .unwrap_or_default();
    let hold_until = r
        .hold_expires_at
        .as_ref()
        .map(|t| convert::from_timestamp(t, "hold_expires_at"))
        .transpose()?;
    Ok(Answer {
        id: r.id,
        states,
        summary,
        hold_until,
    })
}

fn answer_local(r: sluice_model::Reservation) -> Answer {
    Answer {
        summary: r.summary().to_string(),
        hold_until: r.hold_expires_at,
        id: r.id,
        states: r.states,
    }
}

/// A failed call to a peer, as an error a person can act on: unreachable peers and
/// refused handshakes (untrusted certificates) say so.
pub(super) fn call_error(domain: &str, s: &tonic::Status) -> Error {
    match s.code() {
        Code::Unavailable | Code::Unknown if from_status(s).code == ErrorCode::Internal => {
            Error::internal(format!("{domain} unreachable: {}", s.message()))
        }
        _ => from_status(s),
    }
}

pub(super) fn timed_out(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled)
}

/// The 00502 that ends a reserve: the first route's failure, naming the others tried.
pub(super) fn final_error(mut failures: Vec<Failure>) -> Error {
    let first = failures.remove(0);
    let mut e = Error::child(&first.domain, first.index as u32 + 1, first.error);
    if !failures.is_empty() {
        let others: Vec<String> = failures
            .iter()
            .map(|f| {
                format!(
                    "segment {} in {}: {} {}",
                    f.index + 1,
                    f.domain,
                    f.error.code.as_str(),
                    f.error.message
                )
            })
            .collect();
        e.message = format!(
            "{}; {} other route(s) also failed: {}",
            e.message,
            failures.len(),
            others.join("; ")
        );
    }
    e
}

impl Federation {
    /// Whether `id` is a circuit across domains aggregated here.
    pub fn is_circuit(&self, id: &str) -> Result<bool, Error> {
        Ok(!self.idc().segments(id)?.is_empty())
    }

    /// The documents known, and the routes that may carry `c` (its end points checked).
    pub(super) fn routes_for(
        &self,
        c: &Criteria,
    ) -> Result<(Vec<DomainDocument>, Vec<sluice_stitching::DomainRoute>), Error> {
        let docs: Vec<DomainDocument> =
            self.known_documents().into_iter().map(|(d, _)| d).collect();
        for (field, end) in [("src", &c.src), ("dst", &c.dst)] {
            let Some(doc) = docs.iter().find(|d| d.domain == end.stp.domain) else {
                return Err(Error::field(
                    ErrorCode::UnknownStp,
                    field,
                    format!(
                        "no domain {} is known to {} (`sluice domains` lists those that are)",
                        end.stp.domain,
                        self.domain()
                    ),
                ));
            };
            if !doc.end_points.iter().any(|e| e.stp == end.stp) {
                return Err(Error::field(
                    ErrorCode::UnknownStp,
                    field,
                    format!(
                        "{} is not an end point that {} publishes",
                        end.stp, doc.domain
                    ),
                ));
            }
        }
        // Across domains a path is each domain's own business: the ERO can only name
        // domains to keep out of.
        if !c.ero.include.is_empty() {
            return Err(Error::field(
                ErrorCode::InvalidEroMember,
                "ero_include[0]",
                "a circuit across domains cannot be pinned to nodes; name domains to avoid instead",
            ));
        }
        for (i, name) in c.ero.exclude.iter().enumerate() {
            if !docs.iter().any(|d| d.domain == *name) {
                return Err(Error::field(
                    ErrorCode::InvalidEroMember,
                    format!("ero_exclude[{i}]"),
                    format!(
                        "{name:?} is not a known domain (across domains, --avoid names domains)"
                    ),
                ));
            }
        }
        let refs: Vec<&DomainDocument> = docs.iter().collect();
        let ask = RouteAsk {
            src: &c.src.stp,
            dst: &c.dst.stp,
            bw: border_bw(c),
            start: c.window.start,
            end: c.window.end,
            avoid: &c.ero.exclude,
        };
        let routes = domain_routes(&refs, &ask, MAX_ROUTES);
        if routes.is_empty() {
            return Err(Error::new(
                ErrorCode::NoPathFound,
                format!(
                    "no route of domains from {} to {} can carry {} Mb/s over the window",
                    c.src.stp.domain,
                    c.dst.stp.domain,
                    border_bw(c).0
                ),
            ));
        }
        Ok((docs, routes))
    }

    /// Reserves a circuit across domains: held in every domain on one route, or in none.
    pub async fn reserve(
        &self,
        owner: &str,
        c: Criteria,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        c.check(self.idc().now())?;
        let (docs, routes) = self.routes_for(&c)?;
        let id = self.idc().new_circuit_id();
        let mut failures: Vec<Failure> = Vec::new();
        let mut failed: HashSet<(String, Stp, Stp)> = HashSet::new();
        for route in routes {
            // A segment that failed once would fail again on another route.
            if route
                .iter()
                .any(|s| failed.contains(&(s.domain.clone(), s.ingress.clone(), s.egress.clone())))
            {
                continue;
            }
            match self.try_route(&id, owner, &c, &route, &docs).await {
                Ok((segs, hold_until)) => {
                    let (src_vlan, dst_vlan) = (
                        segs[0].ingress_vlan,
                        segs.last().expect("a route has a segment").egress_vlan,
                    );
                    return match self
                        .idc()
                        .insert_circuit(
                            id,
                            owner,
                            &c,
                            (src_vlan, dst_vlan),
                            hold_until,
                            segs.clone(),
                        )
                        .await
                    {
                        Ok(r) => Ok((r, segs)),
                        Err(e) => {
                            self.for_each(&segs, Op::Abort).await;
                            Err(e)
                        }
                    };
                }
                Err(f) => {
                    let s = &route[f.index];
                    info!(
                        reservation.id = %id,
                        domain.id = %f.domain,
                        segment = f.index + 1,
                        error = %f.error,
                        "route failed; trying the next"
                    );
                    failed.insert((s.domain.clone(), s.ingress.clone(), s.egress.clone()));
                    failures.push(f);
                }
            }
        }
        Err(final_error(failures))
    }

    /// The VLAN at each segment's ingress and egress: what is free at both ends of every
    /// segment over `window`, asked of every domain in parallel, then one VLAN chained
    /// through every demarcation point.
    pub(super) async fn agree_labels(
        &self,
        route: &[sluice_stitching::Segment],
        c: &Criteria,
        window: sluice_model::TimeWindow,
        docs: &[DomainDocument],
    ) -> Result<Vec<(sluice_model::Vlan, sluice_model::Vlan)>, Failure> {
        let fail = |index: usize, error: Error| Failure::on(route, index, error);
        // 1. What is free at every segment's two ends, asked in parallel.
        let asks = route
            .iter()
            .map(|s| {
                let fed = self.clone();
                let (domain, ports) = (s.domain.clone(), [s.ingress.clone(), s.egress.clone()]);
                async move { fed.free_labels(&domain, &ports, window).await }
            })
            .collect();
        let mut free: Vec<Option<[VlanSet; 2]>> = Vec::with_capacity(route.len());
        for (i, got) in in_parallel(asks).await.into_iter().enumerate() {
            free.push(Some(
                got.unwrap_or_else(|| Err(task_failed()))
                    .map_err(|e| fail(i, e))?,
            ));
        }
        let mut spans: Vec<LabelSpan> = free
            .into_iter()
            .zip(route)
            .map(|(f, s)| {
                let [ingress, egress] = f.expect("every domain answered");
                LabelSpan {
                    ingress,
                    egress,
                    translates: docs
                        .iter()
                        .find(|d| d.domain == s.domain)
                        .is_some_and(|d| d.segment_translates(&s.ingress, &s.egress)),
                }
            })
            .collect();
        let narrow = |set: &mut VlanSet, asked: &StpRequest| {
            if let Some(v) = &asked.vlans {
                *set = set.intersect(v);
            }
        };
        narrow(&mut spans[0].ingress, &c.src);
        let last = spans.len() - 1;
        narrow(&mut spans[last].egress, &c.dst);
        // 2. One VLAN through every demarcation point.
        chain_labels(&spans).map_err(|i| {
            fail(
                i,
                Error::field(
                    ErrorCode::StpUnavailable,
                    if i == 0 && c.src.vlans.is_some() {
                        "src_vlan"
                    } else if i == route.len() - 1 && c.dst.vlans.is_some() {
                        "dst_vlan"
                    } else {
                        "path"
                    },
                    format!(
                        "no VLAN is free on both sides of every demarcation point up to {}",
                        route[i].domain
                    ),
                ),
            )
        })
    }

    /// Labels, then holds, on one route: every segment held, or none left held (but
    /// those whose answer never came, which their domains' hold timers end).
    async fn try_route(
        &self,
        id: &str,
        owner: &str,
        c: &Criteria,
        route: &[sluice_stitching::Segment],
        docs: &[DomainDocument],
    ) -> Result<(Vec<SegmentView>, Option<chrono::DateTime<chrono::Utc>>), Failure> {
        let fail = |index: usize, error: Error| Failure::on(route, index, error);
        let labels = self.agree_labels(route, c, c.window, docs).await?;
        // 3. Hold every segment in parallel.
        let mut holds = Vec::with_capacity(route.len());
        for (s, (vin, vout)) in route.iter().zip(&labels) {
            let seg = Criteria {
                src: StpRequest {
                    stp: s.ingress.clone(),
                    vlans: Some(VlanSet::single(*vin)),
                },
                dst: StpRequest {
                    stp: s.egress.clone(),
                    vlans: Some(VlanSet::single(*vout)),
                },
                bw: c.bw,
                bw_reverse: c.bw_reverse,
                window: c.window,
                ero: Default::default(),
                description: c.description.clone(),
                auto_provision: c.auto_provision,
            };
            let (fed, domain, id, owner) = (
                self.clone(),
                s.domain.clone(),
                id.to_string(),
                owner.to_string(),
            );
            holds.push(async move { fed.hold(&domain, &id, &owner, seg).await });
        }
        let mut two = TwoPhase::new(route.len());
        let mut held: Vec<Option<Answer>> = vec![None; route.len()];
        let mut first_failure: Option<Failure> = None;
        for (i, got) in in_parallel(holds).await.into_iter().enumerate() {
            // A task that failed may or may not have held: as if it never answered.
            match got.unwrap_or_else(|| Err((task_failed(), true))) {
                Ok(a) => {
                    two.record(i, SegmentAnswer::Held);
                    held[i] = Some(a);
                }
                Err((e, late)) => {
                    two.record(
                        i,
                        if late {
                            SegmentAnswer::TimedOut
                        } else {
                            SegmentAnswer::Failed
                        },
                    );
                    // Prefer the first on the route, so the error is stable.
                    if first_failure.as_ref().is_none_or(|f| i < f.index) {
                        first_failure = Some(fail(i, e));
                    }
                }
            }
        }
        let now = self.idc().now();
        let segs: Vec<SegmentView> = route
            .iter()
            .zip(&labels)
            .enumerate()
            .filter_map(|(i, (s, (vin, vout)))| {
                let a = held[i].as_ref()?;
                Some(CircuitSegment {
                    index: i as u32,
                    domain: s.domain.clone(),
                    segment_id: a.id.clone(),
                    series_id: None,
                    ingress: s.ingress.to_string(),
                    ingress_vlan: *vin,
                    egress: s.egress.to_string(),
                    egress_vlan: *vout,
                    states: a.states,
                    summary: a.summary.clone(),
                    updated_at: now,
                    error: None,
                })
            })
            .collect();
        match two.decide() {
            sluice_stitching::Decision::CommitAll => {
                // The circuit is held no longer than its first segment to expire.
                let until = held.iter().flatten().filter_map(|a| a.hold_until).min();
                Ok((segs, until))
            }
            _ => {
                self.for_each(&segs, Op::Abort).await;
                Err(first_failure.expect("a route that did not hold has a failure"))
            }
        }
    }

    /// The VLANs free at two ports of `domain` over `window`.
    async fn free_labels(
        &self,
        domain: &str,
        ports: &[Stp; 2],
        window: sluice_model::TimeWindow,
    ) -> Result<[VlanSet; 2], Error> {
        if domain == self.domain() {
            return Ok([
                self.idc().free_vlans(&ports[0], &window, "ingress")?,
                self.idc().free_vlans(&ports[1], &window, "egress")?,
            ]);
        }
        let mut client = self.client(domain)?;
        let reply = client
            .free_labels(self.request(v1::FreeLabelsRequest {
                ports: ports.iter().map(|p| p.to_string()).collect(),
                start: Some(convert::timestamp(window.start)),
                end: Some(convert::timestamp(window.end)),
            }))
            .await
            .map_err(|s| {
                self.forget(domain);
                call_error(domain, &s)
            })?
            .into_inner();
        let parse = |i: usize| {
            reply
                .vlans
                .get(i)
                .ok_or_else(|| Error::internal(format!("{domain} answered too few label sets")))
                .and_then(|v| VlanSet::parse(v))
        };
        Ok([parse(0)?, parse(1)?])
    }

    /// Holds one segment. The error says whether the answer never came (`true`): then
    /// the hold may exist, and only its domain's timer will end it.
    async fn hold(
        &self,
        domain: &str,
        circuit: &str,
        owner: &str,
        seg: Criteria,
    ) -> Result<Answer, (Error, bool)> {
        if domain == self.domain() {
            return self
                .idc()
                .reserve(&segment_owner(self.domain()), seg)
                .await
                .map(answer_local)
                .map_err(|e| (e, false));
        }
        let mut client = self.client(domain).map_err(|e| (e, false))?;
        let wire = convert::criteria_to_wire(&seg);
        match client
            .hold_segment(self.request(v1::HoldSegmentRequest {
                connection_id: circuit.to_string(),
                criteria: Some(wire),
                requester: owner.to_string(),
            }))
            .await
        {
            Ok(r) => answer_from_wire(r.into_inner()).map_err(|e| (e, false)),
            Err(s) => {
                self.forget(domain);
                Err((call_error(domain, &s), timed_out(&s)))
            }
        }
    }

    /// `op` on one segment.
    async fn segment_op(&self, seg: &CircuitSegment, op: Op) -> Result<Answer, Error> {
        if seg.domain == self.domain() {
            let idc = self.idc();
            let id = seg.segment_id.as_str();
            let r = match op {
                // Not fsynced on its own: the circuit's commit right after is, and one
                // fsync covers every write before it.
                Op::Commit => idc.commit_unsynced(id).await,
                Op::Abort => idc.abort(id).await,
                Op::Provision => idc.provision(id).await,
                Op::Release => idc.release(id).await,
                Op::Terminate => idc.terminate(id).await,
                Op::Query => idc.get(id).await,
            };
            return r.map(answer_local);
        }
        let mut client = self.client(&seg.domain)?;
        let req = self.request(v1::IdRequest {
            id: seg.segment_id.clone(),
        });
        let started = std::time::Instant::now();
        let r = match op {
            Op::Commit => client.commit_segment(req).await,
            Op::Abort => client.abort_segment(req).await,
            Op::Provision => client.provision_segment(req).await,
            Op::Release => client.release_segment(req).await,
            Op::Terminate => client.terminate_segment(req).await,
            Op::Query => client.query_segment(req).await,
        };
        metrics::histogram!(
            crate::metrics::FEDERATION_CALL,
            "peer" => seg.domain.clone(),
            "op" => op.name(),
            "result" => if r.is_ok() { "ok" } else { "error" },
        )
        .record(started.elapsed().as_secs_f64());
        match r {
            Ok(r) => answer_from_wire(r.into_inner()),
            Err(s) => {
                self.forget(&seg.domain);
                Err(call_error(&seg.domain, &s))
            }
        }
    }

    /// The emergency stop of one segment, with who stopped it and where.
    async fn stop_segment(&self, seg: &CircuitSegment, reason: &str) -> Result<Answer, Error> {
        if seg.domain == self.domain() {
            return self
                .idc()
                .emergency_stop(&seg.segment_id, reason)
                .await
                .map(answer_local);
        }
        let mut client = self.client(&seg.domain)?;
        let req = self.request(v1::EmergencyStopSegmentRequest {
            id: seg.segment_id.clone(),
            reason: reason.to_string(),
        });
        match client.emergency_stop_segment(req).await {
            Ok(r) => answer_from_wire(r.into_inner()),
            Err(s) => {
                self.forget(&seg.domain);
                Err(call_error(&seg.domain, &s))
            }
        }
    }

    /// Every domain's part of circuit `id`, asked in parallel: this domain's own, and
    /// each peer's over `SegmentStatus` (what its policy shares). A domain that cannot
    /// answer shows why.
    pub async fn status(&self, id: &str) -> Result<Vec<v1::DomainStatus>, Error> {
        let segs = self.idc().segments(id)?;
        let calls = segs
            .iter()
            .map(|seg| {
                let (fed, seg) = (self.clone(), seg.clone());
                async move {
                    let got = if seg.domain == fed.domain() {
                        crate::status::domain_status(
                            fed.idc(),
                            fed.agents(),
                            &seg.segment_id,
                            sluice_model::StatusShare::Full,
                            crate::status::AGENT_WAIT,
                        )
                        .await
                        .map(|d| convert::domain_status(&d))
                    } else {
                        match fed.client(&seg.domain) {
                            Err(e) => Err(e),
                            Ok(mut c) => c
                                .segment_status(fed.request(v1::IdRequest {
                                    id: seg.segment_id.clone(),
                                }))
                                .await
                                .map(tonic::Response::into_inner)
                                .map_err(|s| {
                                    fed.forget(&seg.domain);
                                    call_error(&seg.domain, &s)
                                }),
                        }
                    };
                    match got {
                        // Named as this domain knows the segment, whatever the peer says.
                        Ok(d) => v1::DomainStatus {
                            domain: seg.domain.clone(),
                            segment_id: seg.segment_id.clone(),
                            ..d
                        },
                        Err(e) => v1::DomainStatus {
                            domain: seg.domain.clone(),
                            segment_id: seg.segment_id.clone(),
                            error: format!("{}: {}", e.code.as_str(), e.message),
                            ..Default::default()
                        },
                    }
                }
            })
            .collect();
        Ok(in_parallel(calls)
            .await
            .into_iter()
            .zip(&segs)
            .map(|(got, seg)| {
                got.unwrap_or_else(|| v1::DomainStatus {
                    domain: seg.domain.clone(),
                    segment_id: seg.segment_id.clone(),
                    error: task_failed().message,
                    ..Default::default()
                })
            })
            .collect())
    }

    /// The emergency stop of circuit `id`: the circuit here first (so nothing here brings
    /// it back), then every segment at once. A segment that cannot be told now is
    /// terminated when its domain answers again (see `finish_terminations`).
    pub async fn emergency_stop(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        let r = self.idc().emergency_stop(id, reason).await?;
        let segs = self.idc().segments(id)?;
        let reason: std::sync::Arc<str> = reason.into();
        let results = self
            .each(&segs, "emergency-stop", move |fed, s| {
                let reason = reason.clone();
                Box::pin(async move { fed.stop_segment(&s, &reason).await })
            })
            .await;
        Ok((r, self.record(id, &results)))
    }

    /// `op` on every segment in parallel; each segment comes back with its new states,
    /// or with the error its domain gave.
    async fn for_each(
        &self,
        segs: &[CircuitSegment],
        op: Op,
    ) -> Vec<(CircuitSegment, Option<Error>)> {
        self.each(segs, op.name(), move |fed, s| {
            Box::pin(async move { fed.segment_op(&s, op).await })
        })
        .await
    }

    /// `call` on every segment in parallel (`what` names it in the log).
    async fn each(
        &self,
        segs: &[CircuitSegment],
        what: &'static str,
        call: impl Fn(Federation, CircuitSegment) -> SegmentCall,
    ) -> Vec<(CircuitSegment, Option<Error>)> {
        let calls = segs.iter().map(|s| call(self.clone(), s.clone())).collect();
        let mut out: Vec<(CircuitSegment, Option<Error>)> =
            segs.iter().map(|s| (s.clone(), None)).collect();
        for (i, got) in in_parallel(calls).await.into_iter().enumerate() {
            let now = self.idc().now();
            match got.unwrap_or_else(|| Err(task_failed())) {
                Ok(a) => {
                    out[i].0.states = a.states;
                    out[i].0.summary = a.summary;
                    out[i].0.updated_at = now;
                }
                Err(e) => {
                    if what != Op::Query.name() {
                        warn!(
                            domain.id = %out[i].0.domain,
                            segment = i + 1,
                            operation = what,
                            error = %e,
                            "segment operation failed"
                        );
                    }
                    out[i].0.error = Some(format!("{}: {}", e.code.as_str(), e.message));
                    out[i].1 = Some(e);
                }
            }
        }
        out
    }

    /// Records the segments' states as just reported, and returns the views.
    fn record(
        &self,
        circuit: &str,
        results: &[(CircuitSegment, Option<Error>)],
    ) -> Vec<SegmentView> {
        for (s, err) in results {
            if err.is_none()
                && let Err(e) =
                    self.idc()
                        .update_segment(circuit, s.index, s.states, &s.summary, &[])
            {
                warn!(reservation.id = %circuit, error = %e, "segment state not recorded");
            }
        }
        results.iter().map(|(s, _)| s.clone()).collect()
    }

    /// Terminates the segments that should be gone but whose domains have not said so:
    /// of terminated circuits whose domain could not be told (down or unreachable then),
    /// and of circuits that never committed while a segment had (this IDC stopped
    /// between the segments' commits and its own). Returns how many ended now. Runs with
    /// every document exchange, so a domain that comes back is cleaned up.
    pub async fn finish_terminations(&self) -> usize {
        let pending = match self.idc().unended_segments() {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read the segments left to terminate");
                return 0;
            }
        };
        let mut set = JoinSet::new();
        for (circuit, seg) in pending {
            let fed = self.clone();
            set.spawn(async move {
                let mut results = fed
                    .for_each(std::slice::from_ref(&seg), Op::Terminate)
                    .await;
                let ended = results[0].1.is_none();
                if ended {
                    info!(reservation.id = %circuit, domain.id = %seg.domain, "segment terminated after its domain came back");
                } else {
                    // It may have ended by itself meanwhile (terminated there, or past
                    // its end): take the domain's word for its state.
                    results = fed.for_each(std::slice::from_ref(&seg), Op::Query).await;
                }
                if results[0].1.is_some() {
                    // Still unreachable: to the back of the queue.
                    let s = &results[0].0;
                    let _ = fed
                        .idc()
                        .update_segment(&circuit, s.index, s.states, &s.summary, &[]);
                }
                fed.record(&circuit, &results);
                ended
            });
        }
        let mut ended = 0;
        while let Some(done) = set.join_next().await {
            ended += usize::from(done.unwrap_or(false));
        }
        ended
    }

    /// A circuit's row and its segments, each asked afresh (a recursive query).
    pub async fn get(
        &self,
        id: &str,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        let r = self.idc().get(id).await?;
        let segs = self.idc().segments(id)?;
        let results = self.for_each(&segs, Op::Query).await;
        Ok((r, self.record(id, &results)))
    }

    /// Commits every segment, then the circuit; if any segment cannot commit, the others
    /// are aborted (or terminated, if they had committed) and so is the circuit.
    pub async fn commit(
        &self,
        id: &str,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        let r = self.idc().get(id).await?;
        let now = self.idc().now();
        if r.states.reservation != ReservationState::ReserveHeld
            || r.hold_expires_at.is_some_and(|t| t <= now)
        {
            // The circuit's own state machine gives the precise refusal.
            let r = self.idc().commit(id).await?;
            return Ok((r, self.idc().segments(id)?));
        }
        let segs = self.idc().segments(id)?;
        let results = self.for_each(&segs, Op::Commit).await;
        let failed = results.iter().find_map(|(s, e)| {
            e.as_ref().map(|e| {
                let e = in_user_terms(e.clone(), s.index as usize, segs.len());
                Error::child(&s.domain, s.index + 1, e)
            })
        });
        let error = match failed {
            None => {
                let views = self.record(id, &results);
                match self.idc().commit(id).await {
                    Ok(r) => return Ok((r, views)),
                    // Say the circuit's own hold ran out while its segments committed.
                    Err(e) => e,
                }
            }
            Some(e) => e,
        };
        // Undo everywhere: terminate every segment, the one that failed too (its commit
        // may have happened with the answer lost). What cannot be reached now is ended by
        // the sweep at the next document exchange.
        let undone = self.for_each(&segs, Op::Terminate).await;
        self.record(id, &undone);
        if let Err(e) = self.idc().abort(id).await {
            warn!(reservation.id = %id, error = %e, "circuit not aborted after a failed commit");
        }
        Err(error)
    }

    /// A new version (rates, window) of a committed circuit: every segment takes it in
    /// turn, and if one cannot, those that did are put back, so the old version stays in
    /// force everywhere.
    pub async fn modify(
        &self,
        id: &str,
        bw: Option<sluice_model::Mbps>,
        bw_reverse: Option<sluice_model::Mbps>,
        start: Option<chrono::DateTime<chrono::Utc>>,
        end: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        let old = self.idc().check_circuit_modifiable(id).await?;
        let segs = self.idc().segments(id)?;
        let new = v1::ModifyRequest {
            id: String::new(),
            capacity_mbps: bw.map(|b| b.0 as i64),
            start: start.map(convert::timestamp),
            end: end.map(convert::timestamp),
            reverse_capacity_mbps: bw_reverse.map(|b| b.0 as i64),
        };
        let back = v1::ModifyRequest {
            id: String::new(),
            capacity_mbps: Some(old.bw.0 as i64),
            start: start.map(|_| convert::timestamp(old.window.start)),
            end: end.map(|_| convert::timestamp(old.window.end)),
            reverse_capacity_mbps: Some(old.bw_reverse.0 as i64),
        };
        let mut done: Vec<&CircuitSegment> = Vec::new();
        for s in &segs {
            if let Err(e) = self.modify_segment(s, &new).await {
                // A call that failed in transit may have been applied: put it back too.
                if e.code == ErrorCode::Internal {
                    done.push(s);
                }
                self.put_back(id, &done, &back).await;
                let e = in_user_terms(e, s.index as usize, segs.len());
                return Err(Error::child(&s.domain, s.index + 1, e));
            }
            done.push(s);
        }
        let r = match self
            .idc()
            .modify_circuit(id, bw, bw_reverse, start, end)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.put_back(id, &done, &back).await;
                return Err(e);
            }
        };
        let results = self.for_each(&segs, Op::Query).await;
        Ok((r, self.record(id, &results)))
    }

    /// The old version again on the segments that took the new one.
    async fn put_back(&self, id: &str, done: &[&CircuitSegment], back: &v1::ModifyRequest) {
        for d in done {
            if let Err(e) = self.modify_segment(d, back).await {
                warn!(reservation.id = %id, domain.id = %d.domain, error = %e, "segment not put back after a failed modify");
            }
        }
    }

    async fn modify_segment(
        &self,
        seg: &CircuitSegment,
        m: &v1::ModifyRequest,
    ) -> Result<(), Error> {
        if seg.domain == self.domain() {
            let time = |t: &Option<prost_types::Timestamp>, f| {
                t.as_ref()
                    .map(|t| convert::from_timestamp(t, f))
                    .transpose()
            };
            let mbps = |v: Option<i64>| v.map(|v| sluice_model::Mbps(v as u64));
            return self
                .idc()
                .modify(
                    &seg.segment_id,
                    mbps(m.capacity_mbps),
                    mbps(m.reverse_capacity_mbps),
                    time(&m.start, "start")?,
                    time(&m.end, "end")?,
                )
                .await
                .map(|_| ());
        }
        let mut client = self.client(&seg.domain)?;
        let mut m = m.clone();
        m.id = seg.segment_id.clone();
        client
            .modify_segment(self.request(m))
            .await
            .map(|_| ())
            .map_err(|s| {
                self.forget(&seg.domain);
                call_error(&seg.domain, &s)
            })
    }

    /// `op` on the circuit and every segment. The circuit's state machine decides
    /// first whether `op` is allowed; then every segment is asked. Terminate and abort
    /// go on when a segment fails (it shows its error); provision and release report it
    /// as 00502.
    pub async fn transition(
        &self,
        id: &str,
        op: Op,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        let idc = self.idc();
        let r = match op {
            Op::Abort => idc.abort(id).await?,
            Op::Terminate => idc.terminate(id).await?,
            Op::Provision | Op::Release => return self.provision_or_release(id, op).await,
            Op::Commit => return self.commit(id).await,
            Op::Query => return self.get(id).await,
        };
        let segs = idc.segments(id)?;
        let results = self.for_each(&segs, op).await;
        Ok((r, self.record(id, &results)))
    }

    /// Provision or release: allowed by the circuit's state machine (asked of a copy),
    /// then every segment, then the circuit. If a segment refuses, those that took it are
    /// turned back and the circuit stays as it was, so the call can simply be retried.
    async fn provision_or_release(
        &self,
        id: &str,
        op: Op,
    ) -> Result<(sluice_model::Reservation, Vec<SegmentView>), Error> {
        let idc = self.idc();
        let mut probe = idc.get(id).await?;
        let now = idc.now();
        sluice_scheduler::run_due(&mut probe, now);
        match op {
            Op::Provision => probe.provision(now)?,
            _ => probe.release(now)?,
        };
        let segs = idc.segments(id)?;
        let results = self.for_each(&segs, op).await;
        let failed = results.iter().find_map(|(s, e)| {
            e.as_ref().map(|e| {
                let e = in_user_terms(e.clone(), s.index as usize, segs.len());
                Error::child(&s.domain, s.index + 1, e)
            })
        });
        if let Some(error) = failed {
            let took: Vec<CircuitSegment> = results
                .iter()
                .filter(|(_, e)| e.is_none())
                .map(|(s, _)| s.clone())
                .collect();
            let undo = if op == Op::Provision {
                Op::Release
            } else {
                Op::Provision
            };
            self.record(id, &results);
            let undone = self.for_each(&took, undo).await;
            self.record(id, &undone);
            return Err(error);
        }
        let views = self.record(id, &results);
        let r = match op {
            Op::Provision => idc.provision(id).await?,
            _ => idc.release(id).await?,
        };
        Ok((r, views))
    }
}
