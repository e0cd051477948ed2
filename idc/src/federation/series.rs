//! Recurring circuits across domains: every domain on the route admits every occurrence
//! of the same rule as one series of its own (all or none), the aggregator records one
//! circuit per occurrence with each domain's occurrence as its segment. The VLAN agreed at
//! each demarcation point is free over the whole span of the series.

use sluice_model::{
    CircuitSegment, Criteria, Error, Reservation, Series, StpRequest, TimeWindow, VlanSet,
};
use sluice_proto::{convert, v1};
use sluice_stitching::{DomainDocument, Segment};
use tracing::{info, warn};

use super::aggregate::{Failure, call_error, final_error, in_parallel};
use super::{Federation, segment_owner};
use crate::service::{CircuitOccurrence, SeriesAsk, SeriesScope};

/// One domain's series: its id there, and per occurrence number its reservation.
#[derive(Debug, Clone)]
struct SeriesAnswer {
    id: String,
    occurrences: Vec<(u32, String, sluice_model::States, String)>,
}

fn series_answer_local(s: &Series, occurrences: &[Reservation]) -> SeriesAnswer {
    SeriesAnswer {
        id: s.id.clone(),
        occurrences: occurrences
            .iter()
            .map(|r| {
                (
                    r.series.as_ref().map_or(0, |s| s.occurrence),
                    r.id.clone(),
                    r.states,
                    r.summary().to_string(),
                )
            })
            .collect(),
    }
}

fn series_answer_wire(s: v1::Series) -> Result<SeriesAnswer, Error> {
    let mut occurrences = Vec::with_capacity(s.occurrences.len());
    for (i, r) in s.occurrences.into_iter().enumerate() {
        let states = convert::states_from_wire(&r.states, &format!("occurrences[{i}].states"))?;
        let summary = r.states.map(|s| s.summary).unwrap_or_default();
        occurrences.push((r.occurrence, r.id, states, summary));
    }
    Ok(SeriesAnswer {
        id: s.id,
        occurrences,
    })
}

/// A recurring circuit's occurrences, each with its segments.
pub type CircuitSeries = (Series, Vec<(Reservation, Vec<CircuitSegment>)>);

impl Federation {
    /// Whether series `id` is a recurring circuit across domains aggregated here.
    pub async fn is_circuit_series(&self, id: &str) -> Result<bool, Error> {
        let (_, occurrences) = self.idc().get_series(id).await?;
        match occurrences.first() {
            Some(r) => self.is_circuit(&r.id),
            None => Ok(false),
        }
    }

    /// A recurring circuit as stored here, each occurrence with its segments.
    pub async fn get_series(&self, id: &str) -> Result<CircuitSeries, Error> {
        let (s, occurrences) = self.idc().get_series(id).await?;
        Ok((s, self.with_segments(occurrences)?))
    }

    /// Each occurrence with its segments as stored.
    fn with_segments(
        &self,
        occurrences: Vec<Reservation>,
    ) -> Result<Vec<(Reservation, Vec<CircuitSegment>)>, Error> {
        occurrences
            .into_iter()
            .map(|r| {
                let segs = self.idc().segments(&r.id)?;
                Ok((r, segs))
            })
            .collect()
    }

    /// Books a recurring circuit across domains: every occurrence in every domain on one
    /// route, or nothing.
    pub async fn reserve_series(
        &self,
        owner: &str,
        ask: SeriesAsk,
    ) -> Result<CircuitSeries, Error> {
        if ask.skip_conflicts {
            return Err(Error::invalid(
                "skip_conflicts",
                "a recurring circuit across domains is booked whole or not at all",
            ));
        }
        let occurrences = sluice_scheduler::recurrence::occurrences(&ask.recurrence)?;
        let first = occurrences[0].window;
        let last = occurrences.last().expect("at least one occurrence").window;
        let span = TimeWindow::new(first.start, last.end)?;
        let mut c = ask.criteria.clone();
        c.window = first;
        c.check(self.idc().now())?;
        let (docs, routes) = self.routes_for(&c)?;
        let id = self.idc().new_circuit_id();
        let mut failures: Vec<Failure> = Vec::new();
        for route in routes {
            match self
                .try_series_route(&id, owner, &c, &ask, span, &route, &docs)
                .await
            {
                Ok(answers) => {
                    let occ = occurrences
                        .iter()
                        .map(|o| CircuitOccurrence {
                            number: o.number,
                            window: o.window,
                            src_vlan: answers.labels[0].0,
                            dst_vlan: answers.labels.last().expect("a segment").1,
                            segments: route
                                .iter()
                                .enumerate()
                                .filter_map(|(i, s)| {
                                    let a = &answers.series[i];
                                    let (_, seg_id, states, summary) =
                                        a.occurrences.iter().find(|x| x.0 == o.number)?;
                                    Some(CircuitSegment {
                                        index: i as u32,
                                        domain: s.domain.clone(),
                                        segment_id: seg_id.clone(),
                                        series_id: Some(a.id.clone()),
                                        ingress: s.ingress.to_string(),
                                        ingress_vlan: answers.labels[i].0,
                                        egress: s.egress.to_string(),
                                        egress_vlan: answers.labels[i].1,
                                        states: *states,
                                        summary: summary.clone(),
                                        updated_at: self.idc().now(),
                                        error: None,
                                    })
                                })
                                .collect(),
                        })
                        .collect();
                    let stored = self
                        .idc()
                        .insert_circuit_series(
                            id.clone(),
                            owner,
                            &ask.criteria,
                            ask.recurrence.clone(),
                            occ,
                        )
                        .await;
                    return match stored {
                        Ok((s, rs)) => Ok((s, self.with_segments(rs)?)),
                        Err(e) => {
                            let held: Vec<Option<SeriesAnswer>> =
                                answers.series.into_iter().map(Some).collect();
                            self.cancel_partial(&route, &held).await;
                            Err(e)
                        }
                    };
                }
                Err(f) => {
                    info!(series.id = %id, domain.id = %f.domain, error = %f.error, "route failed for the series; trying the next");
                    failures.push(f);
                }
            }
        }
        Err(final_error(failures))
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_series_route(
        &self,
        id: &str,
        owner: &str,
        c: &Criteria,
        ask: &SeriesAsk,
        span: TimeWindow,
        route: &[Segment],
        docs: &[DomainDocument],
    ) -> Result<SeriesHeld, Failure> {
        let labels = self.agree_labels(route, c, span, docs).await?;
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
                ero: Default::default(),
                ..c.clone()
            };
            let (fed, domain, id, owner, recurrence) = (
                self.clone(),
                s.domain.clone(),
                id.to_string(),
                owner.to_string(),
                ask.recurrence.clone(),
            );
            holds.push(async move { fed.hold_series(&domain, &id, &owner, seg, recurrence).await });
        }
        let mut held: Vec<Option<SeriesAnswer>> = vec![None; route.len()];
        let mut failure: Option<Failure> = None;
        for (i, got) in in_parallel(holds).await.into_iter().enumerate() {
            // A task that failed may have held: its series ends by that domain's timers.
            match got.unwrap_or_else(|| Err(Error::internal("the hold's task failed"))) {
                Ok(a) => held[i] = Some(a),
                Err(e) => {
                    if failure.as_ref().is_none_or(|f| i < f.index) {
                        failure = Some(Failure::on(route, i, e));
                    }
                }
            }
        }
        if let Some(f) = failure {
            let partial: Vec<Option<SeriesAnswer>> = held;
            self.cancel_partial(route, &partial).await;
            return Err(f);
        }
        Ok(SeriesHeld {
            labels,
            series: held.into_iter().map(|a| a.expect("all held")).collect(),
        })
    }

    async fn hold_series(
        &self,
        domain: &str,
        circuit: &str,
        owner: &str,
        seg: Criteria,
        recurrence: sluice_model::Recurrence,
    ) -> Result<SeriesAnswer, Error> {
        if domain == self.domain() {
            let ask = SeriesAsk {
                criteria: seg,
                recurrence,
                same_path: true,
                skip_conflicts: false,
            };
            return self
                .idc()
                .reserve_series(&segment_owner(self.domain()), ask)
                .await
                .map(|(s, rs)| series_answer_local(&s, &rs));
        }
        let mut client = self.client(domain)?;
        let wire = convert::criteria_to_wire(&seg);
        match client
            .hold_series_segment(self.request(v1::HoldSeriesSegmentRequest {
                connection_id: circuit.to_string(),
                criteria: Some(wire),
                recurrence: Some(convert::recurrence_to_wire(&recurrence)),
                requester: owner.to_string(),
            }))
            .await
        {
            Ok(r) => series_answer_wire(r.into_inner()),
            Err(s) => {
                self.forget(domain);
                Err(call_error(domain, &s))
            }
        }
    }

    /// Cancels, whole, the series each domain of `route` holds (`None`: holds none).
    async fn cancel_partial(&self, route: &[Segment], held: &[Option<SeriesAnswer>]) {
        let pairs: Vec<(String, String)> = route
            .iter()
            .zip(held)
            .filter_map(|(s, a)| Some((s.domain.clone(), a.as_ref()?.id.clone())))
            .collect();
        self.cancel_each(&pairs, SeriesScope::All).await;
    }

    /// `(domain, its series id)` pairs: cancels `scope` in each, in parallel; returns
    /// the first failure.
    async fn cancel_each(
        &self,
        pairs: &[(String, String)],
        scope: SeriesScope,
    ) -> (Vec<Option<SeriesAnswer>>, Option<Failure>) {
        self.series_each(pairs, SeriesOp::Cancel(scope)).await
    }

    /// `op` on each domain's series in parallel: the answers, in order, and the first
    /// failure on the route.
    async fn series_each(
        &self,
        pairs: &[(String, String)],
        op: SeriesOp,
    ) -> (Vec<Option<SeriesAnswer>>, Option<Failure>) {
        let calls = pairs
            .iter()
            .map(|(domain, id)| {
                let (fed, domain, id) = (self.clone(), domain.clone(), id.clone());
                async move { fed.series_op(&domain, &id, op).await }
            })
            .collect();
        let mut first: Option<Failure> = None;
        let mut answers: Vec<Option<SeriesAnswer>> = vec![None; pairs.len()];
        for (i, got) in in_parallel(calls).await.into_iter().enumerate() {
            let domain = pairs[i].0.clone();
            match got.unwrap_or_else(|| Err(Error::internal("the call's task failed"))) {
                Ok(a) => answers[i] = Some(a),
                Err(e) => {
                    warn!(domain.id = %domain, error = %e, "series segment operation failed");
                    if first.as_ref().is_none_or(|f| i < f.index) {
                        first = Some(Failure {
                            domain,
                            index: i,
                            error: e,
                        });
                    }
                }
            }
        }
        (answers, first)
    }

    /// Records the occurrences' segment states as the domains just answered.
    fn record_answers(
        &self,
        occurrences: &[(Reservation, Vec<CircuitSegment>)],
        answers: &[Option<SeriesAnswer>],
    ) {
        for (r, segs) in occurrences {
            let Some(n) = r.series.as_ref().map(|s| s.occurrence) else {
                continue;
            };
            for (seg, a) in segs.iter().zip(answers) {
                let Some((_, _, states, summary)) = a
                    .as_ref()
                    .and_then(|a| a.occurrences.iter().find(|o| o.0 == n))
                else {
                    continue;
                };
                if let Err(e) = self
                    .idc()
                    .update_segment(&r.id, seg.index, *states, summary, &[])
                {
                    warn!(reservation.id = %r.id, error = %e, "segment state not recorded");
                }
            }
        }
    }

    async fn series_op(&self, domain: &str, id: &str, op: SeriesOp) -> Result<SeriesAnswer, Error> {
        if domain == self.domain() {
            let r = match op {
                SeriesOp::Commit => self.idc().commit_series(id).await,
                SeriesOp::Cancel(scope) => self.idc().cancel_series(id, scope).await,
            };
            return r.map(|(s, rs)| series_answer_local(&s, &rs));
        }
        let mut client = self.client(domain)?;
        let r = match op {
            SeriesOp::Commit => {
                client
                    .commit_series_segment(self.request(v1::IdRequest { id: id.to_string() }))
                    .await
            }
            SeriesOp::Cancel(scope) => {
                use v1::cancel_series_request::Scope;
                let scope = match scope {
                    SeriesScope::All => None,
                    SeriesScope::One(n) => Some(Scope::Occurrence(n)),
                    SeriesScope::From(t) => Some(Scope::From(convert::timestamp(t))),
                };
                client
                    .cancel_series_segment(self.request(v1::CancelSeriesRequest {
                        id: id.to_string(),
                        scope,
                    }))
                    .await
            }
        };
        match r {
            Ok(r) => series_answer_wire(r.into_inner()),
            Err(s) => {
                self.forget(domain);
                Err(call_error(domain, &s))
            }
        }
    }

    /// Each domain's series id for recurring circuit `id`, in route order.
    fn domain_series(
        &self,
        occurrences: &[(Reservation, Vec<CircuitSegment>)],
    ) -> Vec<(String, String)> {
        occurrences
            .first()
            .map(|(_, segs)| {
                segs.iter()
                    .filter_map(|s| Some((s.domain.clone(), s.series_id.clone()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Commits the series in every domain, then here; if any domain cannot, all are
    /// cancelled and the error names it.
    pub async fn commit_series(&self, id: &str) -> Result<CircuitSeries, Error> {
        let (_, occurrences) = self.get_series(id).await?;
        let pairs = self.domain_series(&occurrences);
        let (answers, failed) = self.series_each(&pairs, SeriesOp::Commit).await;
        if let Some(f) = failed {
            let (undone, _) = self.cancel_each(&pairs, SeriesScope::All).await;
            self.record_answers(&occurrences, &undone);
            if let Err(e) = self.idc().cancel_series(id, SeriesScope::All).await {
                warn!(series.id = %id, error = %e, "series not cancelled after a failed commit");
            }
            return Err(Error::child(&f.domain, f.index as u32 + 1, f.error));
        }
        self.record_answers(&occurrences, &answers);
        if let Err(e) = self.idc().commit_series(id).await {
            // Committed in every domain but not here (say its holds ran out meanwhile):
            // undo everywhere.
            let (undone, _) = self.cancel_each(&pairs, SeriesScope::All).await;
            self.record_answers(&occurrences, &undone);
            return Err(e);
        }
        self.get_series(id).await
    }

    /// Cancels `scope` of the series in every domain and here.
    pub async fn cancel_series(
        &self,
        id: &str,
        scope: SeriesScope,
    ) -> Result<CircuitSeries, Error> {
        let (_, occurrences) = self.get_series(id).await?;
        let pairs = self.domain_series(&occurrences);
        let (answers, failed) = self.cancel_each(&pairs, scope).await;
        self.record_answers(&occurrences, &answers);
        self.idc().cancel_series(id, scope).await?;
        if let Some(f) = failed {
            return Err(Error::child(&f.domain, f.index as u32 + 1, f.error));
        }
        self.get_series(id).await
    }
}

/// What a series route that held everywhere gives back.
struct SeriesHeld {
    labels: Vec<(sluice_model::Vlan, sluice_model::Vlan)>,
    series: Vec<SeriesAnswer>,
}

#[derive(Debug, Clone, Copy)]
enum SeriesOp {
    Commit,
    Cancel(SeriesScope),
}
