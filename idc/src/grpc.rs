//! The gRPC face of the IDC: requests are converted (naming the bad field), handed to
//! [`Idc`], and errors leave through [`sluice_proto::status::to_status`].

use std::pin::Pin;

use chrono::TimeDelta;
use sluice_model::{Error, ErrorCode, TimeWindow};
use sluice_proto::convert;
use sluice_proto::status::to_status;
use sluice_proto::v1;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::agents::AgentDriver;
use crate::federation::{Federation, Op};
use crate::operators::Operators;
use crate::service::{Idc, ListQuery};
use crate::store::EventRecord;

#[derive(Clone)]
pub struct Api {
    idc: Idc,
    stop: Option<watch::Receiver<bool>>,
    /// Set when this IDC is federated: circuits across domains go through it.
    fed: Option<Federation>,
    /// Set when this IDC drives node agents.
    agents: Option<AgentDriver>,
    /// Who may make operator-only requests.
    operators: Operators,
}

impl Api {
    pub fn new(idc: Idc) -> Api {
        Api {
            idc,
            stop: None,
            fed: None,
            agents: None,
            operators: Operators::default(),
        }
    }

    pub fn operated_by(mut self, operators: Operators) -> Api {
        self.operators = operators;
        self
    }

    /// The operator whose token the request carries; 00302 for anyone else.
    fn operator<T>(&self, req: &Request<T>) -> Result<String, Error> {
        let token = req
            .metadata()
            .get(sluice_proto::TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match self.operators.who(token) {
            Some(name) => Ok(name.to_string()),
            None if self.operators.is_empty() => Err(Error::field(
                ErrorCode::Unauthorized,
                "token",
                "only operators may do this, and this IDC has none (sluice serve --operators)",
            )),
            None if token.is_empty() => Err(Error::field(
                ErrorCode::Unauthorized,
                "token",
                "only operators may do this: give an operator's token (--token-file or SLUICE_TOKEN)",
            )),
            None => Err(Error::field(
                ErrorCode::Unauthorized,
                "token",
                "that token is not an operator's",
            )),
        }
    }

    async fn verify_unaudited(
        &self,
        who: &str,
        r: v1::VerifyRequest,
    ) -> Result<Response<v1::Measurement>, Status> {
        if r.id.is_empty() {
            return Err(to_status(&Error::missing("id")));
        }
        let thresholds = convert::thresholds(&r).map_err(|e| to_status(&e))?;
        let Some(agents) = &self.agents else {
            return Err(to_status(&no_agents(None)));
        };
        if self.circuit(&r.id)?.is_some() {
            return Err(to_status(&Error::invalid(
                "id",
                format!(
                    "{} crosses domains: verify each domain's segment in its own domain (sluice show lists them)",
                    r.id
                ),
            )));
        }
        let ask = crate::verify::VerifyAsk {
            id: r.id,
            occurrence: (r.occurrence > 0).then_some(r.occurrence),
            duration: r.duration_ms.map_or(crate::verify::DEFAULT_DURATION, |ms| {
                std::time::Duration::from_millis(ms.into())
            }),
            probes: r.probes,
            thresholds,
            who: who.to_string(),
            kind: sluice_model::MeasurementKind::Verify,
        };
        let agents = agents.clone();
        let m = detached(async move { agents.verify(ask).await })
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::measurement(&m)))
    }

    /// The emergency stop of one reservation: across domains if it is a circuit.
    async fn stop_one(&self, id: &str, reason: &str) -> Result<v1::Reservation, Error> {
        if let Some(fed) = self
            .circuit(id)
            .map_err(|s| sluice_proto::status::from_status(&s))?
        {
            let (fed, id, reason) = (fed.clone(), id.to_string(), reason.to_string());
            let (r, segs) = detached(async move { fed.emergency_stop(&id, &reason).await }).await?;
            return Ok(convert::circuit(&r, &segs));
        }
        let r = self.idc.emergency_stop(id, reason).await?;
        Ok(convert::reservation(&r))
    }

    /// The emergency stop of each of `bookings` that has not ended (still holds capacity
    /// or is up: not holds that ran out or were aborted), all at once (a user's runaway
    /// bookings must not go down one by one), at most STOPS_AT_ONCE calls out at a time.
    async fn stop_all(
        &self,
        bookings: Vec<sluice_model::Reservation>,
        reason: &str,
        reply: &mut v1::EmergencyStopReply,
    ) -> Result<(), Status> {
        const STOPS_AT_ONCE: usize = 32;
        let now = self.idc.now();
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(STOPS_AT_ONCE));
        let mut calls = tokio::task::JoinSet::new();
        for b in bookings.into_iter().filter(|b| {
            b.states.lifecycle == sluice_model::LifecycleState::Created
                && (b.holds_resources(now) || b.states.data_plane_active)
        }) {
            let (api, reason, slots) = (self.clone(), reason.to_string(), slots.clone());
            calls.spawn(async move {
                let _slot = slots.acquire_owned().await;
                (b.id.clone(), api.stop_one(&b.id, &reason).await)
            });
        }
        let mut done = Vec::new();
        while let Some(d) = calls.join_next().await {
            done.push(d.map_err(|e| Status::internal(format!("stop task failed: {e}")))?);
        }
        done.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, r) in done {
            match r {
                Ok(r) => reply.stopped.push(r),
                Err(e) => reply.failures.push(v1::StopFailure {
                    id,
                    code: e.code.as_str().to_string(),
                    message: e.message,
                }),
            }
        }
        Ok(())
    }

    async fn emergency_stop_unaudited(
        &self,
        operator: Result<String, Error>,
        ask: v1::EmergencyStopRequest,
    ) -> Result<Response<v1::EmergencyStopReply>, Status> {
        let operator = operator.map_err(|e| to_status(&e))?;
        let reason = format!(
            "emergency stop by operator {operator} of {}",
            self.idc.topology().domain
        );
        let mut reply = v1::EmergencyStopReply {
            operator: operator.clone(),
            ..Default::default()
        };
        match (ask.id.is_empty(), ask.owner.is_empty()) {
            (false, true) => match self.stop_one(&ask.id, &reason).await {
                Ok(r) => reply.stopped.push(r),
                Err(e) if e.code == ErrorCode::ReservationNonexistent => {
                    // A series: every occurrence that has not ended.
                    let Ok((_, occurrences)) = self.idc.get_series(&ask.id).await else {
                        return Err(to_status(&e));
                    };
                    self.stop_all(occurrences, &reason, &mut reply).await?;
                }
                Err(e) => return Err(to_status(&e)),
            },
            (true, false) => {
                let (bookings, _) = self
                    .idc
                    .list(ListQuery {
                        states: vec!["Created".into()],
                        window: None,
                        port: None,
                        owner: Some(ask.owner.clone()),
                        limit: Some(usize::MAX),
                    })
                    .await
                    .map_err(|e| to_status(&e))?;
                self.stop_all(bookings, &reason, &mut reply).await?;
            }
            (true, true) => return Err(to_status(&Error::missing("id"))),
            (false, false) => {
                return Err(to_status(&Error::invalid(
                    "owner",
                    "give a reservation id or an owner, not both",
                )));
            }
        }
        Ok(Response::new(reply))
    }

    pub fn driving(mut self, agents: AgentDriver) -> Api {
        self.agents = Some(agents);
        self
    }

    pub fn federated(mut self, fed: Federation) -> Api {
        self.fed = Some(fed);
        self
    }

    /// The federation, if `id` is a circuit across domains aggregated here.
    fn circuit(&self, id: &str) -> Result<Option<&Federation>, Status> {
        match &self.fed {
            Some(f) if f.is_circuit(id).map_err(|e| to_status(&e))? => Ok(Some(f)),
            _ => Ok(None),
        }
    }

    /// The federation, if series `id` is a recurring circuit across domains.
    async fn circuit_series(&self, id: &str) -> Result<Option<&Federation>, Status> {
        match &self.fed {
            Some(f) if f.is_circuit_series(id).await.map_err(|e| to_status(&e))? => Ok(Some(f)),
            _ => Ok(None),
        }
    }

    /// `op` on `id`: across domains if it is a circuit, here otherwise.
    async fn operate(&self, id: String, op: Op) -> Result<Response<v1::Reservation>, Status> {
        if let Some(fed) = self.circuit(&id)? {
            let fed = fed.clone();
            return circuit_reply(detached(async move { fed.transition(&id, op).await }).await);
        }
        let r = match op {
            Op::Commit => self.idc.commit(&id).await,
            Op::Abort => self.idc.abort(&id).await,
            Op::Provision => self.idc.provision(&id).await,
            Op::Release => self.idc.release(&id).await,
            Op::Terminate => self.idc.terminate(&id).await,
            Op::Query => self.idc.get(&id).await,
        };
        let mut reply = reply(r)?;
        if let (Some(agents), Op::Query) = (&self.agents, op) {
            let r = self.idc.get(&id).await.map_err(|e| to_status(&e))?;
            reply.get_mut().data_plane = convert::data_plane(&agents.data_plane_of(&r));
        }
        Ok(reply)
    }

    fn audited<T>(
        &self,
        who: &str,
        action: &str,
        target: &str,
        r: Result<Response<T>, Status>,
        made: impl Fn(&T) -> &str,
    ) -> Result<Response<T>, Status> {
        // `peer:` names are the peer domains' own (from their certificates), `operator:`
        // names the operators' (from their tokens): a user of this API who claims one is
        // recorded as such, not as that peer or operator.
        audited(&self.idc, &recorded_user(who), action, target, r, made)
    }

    /// A transition of the reservation `req` names, audited.
    async fn transition(
        &self,
        req: Request<v1::IdRequest>,
        op: Op,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (who, id) = (user(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = match id_of(req) {
                Ok(id) => api.operate(id, op).await,
                Err(e) => Err(e),
            };
            api.audited(&who, op.name(), &id, r, |r| &r.id)
        })
        .await
    }

    async fn reserve_unaudited(
        &self,
        req: Request<v1::ReserveRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let owner = booking_user(&req)?;
        let ask = req.into_inner();
        let Some(c) = ask.criteria else {
            return Err(to_status(&Error::missing("criteria")));
        };
        let criteria = convert::criteria(&c, self.idc.now()).map_err(|e| to_status(&e))?;
        let own = &self.idc.topology().domain;
        let across = criteria.src.stp.domain != *own || criteria.dst.stp.domain != *own;
        let one_node = criteria.src.stp.node == criteria.dst.stp.node;
        let check = self
            .verify_each(ask.verify_each.as_ref(), across, one_node)
            .map_err(|e| to_status(&e))?;
        if let Some(fed) = &self.fed
            && across
        {
            let fed = fed.clone();
            return circuit_reply(
                detached(async move { fed.reserve(&owner, criteria).await }).await,
            );
        }
        let r = self.idc.reserve(&owner, criteria).await;
        if let (Ok(r), Some(v)) = (&r, check)
            && let Err(e) = self.idc.set_verify_each(&r.id, v).await
        {
            // All or nothing: the hold goes too.
            let _ = self.idc.abort(&r.id).await;
            return Err(to_status(&e));
        }
        reply(r)
    }

    /// A booking's check at each start, if it asks for one and it can be had here.
    fn verify_each(
        &self,
        v: Option<&v1::VerifyEach>,
        across: bool,
        one_node: bool,
    ) -> Result<Option<sluice_model::VerifyEach>, Error> {
        let Some(v) = v else { return Ok(None) };
        let v = convert::verify_each(v)?;
        if self.agents.is_none() {
            return Err(no_agents(Some("verify_each")));
        }
        if across {
            return Err(Error::field(
                ErrorCode::NotImplemented,
                "verify_each",
                "a circuit across domains is verified per segment, in each domain",
            ));
        }
        if one_node {
            return Err(Error::field(
                ErrorCode::NotImplemented,
                "verify_each",
                "both ends are on one node: a measurement there would not cross the circuit's queues",
            ));
        }
        Ok(Some(v))
    }

    async fn modify_unaudited(
        &self,
        req: Request<v1::ModifyRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let m = req.into_inner();
        if m.id.is_empty() {
            return Err(to_status(&Error::missing("id")));
        }
        let (bw, rev, start, end) = convert::modify_fields(&m).map_err(|e| to_status(&e))?;
        if bw.is_none() && rev.is_none() && start.is_none() && end.is_none() {
            return Err(to_status(&Error::field(
                sluice_model::ErrorCode::MissingParameter,
                "capacity_mbps",
                "modify needs a new capacity, start or end",
            )));
        }
        if let Some(fed) = self.circuit(&m.id)? {
            let (fed, id) = (fed.clone(), m.id.clone());
            return circuit_reply(
                detached(async move { fed.modify(&id, bw, rev, start, end).await }).await,
            );
        }
        reply(self.idc.modify(&m.id, bw, rev, start, end).await)
    }

    async fn reserve_series_unaudited(
        &self,
        req: Request<v1::ReserveSeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let owner = booking_user(&req)?;
        let r = req.into_inner();
        let now = self.idc.now();
        let ask = series_ask(
            &r.criteria,
            &r.recurrence,
            now,
            !r.allow_path_change,
            r.skip_conflicts,
        )
        .map_err(|e| to_status(&e))?;
        let own = &self.idc.topology().domain;
        let across = ask.criteria.src.stp.domain != *own || ask.criteria.dst.stp.domain != *own;
        let one_node = ask.criteria.src.stp.node == ask.criteria.dst.stp.node;
        let check = self
            .verify_each(r.verify_each.as_ref(), across, one_node)
            .map_err(|e| to_status(&e))?;
        if let Some(fed) = &self.fed
            && across
        {
            let fed = fed.clone();
            return circuit_series_reply(
                detached(async move { fed.reserve_series(&owner, ask).await }).await,
            );
        }
        let made = self.idc.reserve_series(&owner, ask).await;
        if let (Ok((s, _)), Some(v)) = (&made, check)
            && let Err(e) = self.idc.set_verify_each(&s.id, v).await
        {
            // All or nothing: the held occurrences go too.
            let _ = self
                .idc
                .cancel_series(&s.id, crate::service::SeriesScope::All)
                .await;
            return Err(to_status(&e));
        }
        series_reply(made)
    }

    async fn commit_series_unaudited(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let id = id_of(req)?;
        if let Some(fed) = self.circuit_series(&id).await? {
            let fed = fed.clone();
            return circuit_series_reply(
                detached(async move { fed.commit_series(&id).await }).await,
            );
        }
        series_reply(self.idc.commit_series(&id).await)
    }

    async fn cancel_series_unaudited(
        &self,
        req: Request<v1::CancelSeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let r = req.into_inner();
        if r.id.is_empty() {
            return Err(to_status(&Error::missing("id")));
        }
        let scope = series_scope(&r.scope).map_err(|e| to_status(&e))?;
        if let Some(fed) = self.circuit_series(&r.id).await? {
            let (fed, id) = (fed.clone(), r.id.clone());
            return circuit_series_reply(
                detached(async move { fed.cancel_series(&id, scope).await }).await,
            );
        }
        series_reply(self.idc.cancel_series(&r.id, scope).await)
    }

    async fn modify_series_unaudited(
        &self,
        req: Request<v1::ModifySeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        use crate::service::SeriesScope;
        use v1::modify_series_request::Scope;
        let r = req.into_inner();
        let parsed = (|| {
            if r.id.is_empty() {
                return Err(Error::missing("id"));
            }
            let scope = match &r.scope {
                None => SeriesScope::All,
                Some(Scope::Occurrence(n)) => SeriesScope::One(*n),
                Some(Scope::From(t)) => SeriesScope::From(convert::from_timestamp(t, "from")?),
            };
            let bw = r
                .capacity_mbps
                .map(|v| convert::capacity(v, "capacity_mbps"))
                .transpose()?;
            let rev = r
                .reverse_capacity_mbps
                .map(|v| convert::reverse_capacity(v, "reverse_capacity_mbps"))
                .transpose()?;
            let seconds = |v: Option<i64>| v.map(chrono::TimeDelta::seconds);
            Ok((
                scope,
                crate::service::SeriesChange {
                    bw,
                    bw_reverse: rev,
                    shift: seconds(r.shift_seconds),
                    length: seconds(r.duration_seconds),
                },
            ))
        })();
        let (scope, change) = parsed.map_err(|e| to_status(&e))?;
        if self.circuit_series(&r.id).await?.is_some() {
            return Err(to_status(&Error::field(
                sluice_model::ErrorCode::InvalidParameter,
                "id",
                format!(
                    "{} is a recurring circuit across domains: changing its occurrences is not \
                     supported yet; cancel them and book again",
                    r.id
                ),
            )));
        }
        series_reply(self.idc.modify_series(&r.id, scope, change).await)
    }

    /// Ends open Watch streams once `stop` turns true. A watch has no end of its own, so
    /// without this a graceful shutdown waits for every watcher forever.
    pub fn stop_on(mut self, stop: watch::Receiver<bool>) -> Api {
        self.stop = Some(stop);
        self
    }
}

async fn stopped(stop: Option<watch::Receiver<bool>>) {
    match stop {
        Some(mut s) => {
            let _ = s.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

/// Sends the recorded events after `last`, page by page until none is left (the store
/// returns at most a page per call), and returns the last sequence number sent; `None`
/// when the watcher has gone or the store failed (the error was sent).
async fn replay(
    idc: &Idc,
    mut last: u64,
    only: &Option<String>,
    tx: &mpsc::Sender<Result<v1::Event, Status>>,
) -> Option<u64> {
    loop {
        let events = match idc.events_after(last, only.clone()).await {
            Ok(events) => events,
            Err(e) => {
                let _ = tx.send(Err(to_status(&e))).await;
                return None;
            }
        };
        let Some(end) = events.last().map(|e| e.seq) else {
            return Some(last);
        };
        for e in &events {
            if tx.send(Ok(event(e))).await.is_err() {
                return None;
            }
        }
        last = end;
    }
}

/// Runs a request handler and its audit record in a task of their own, so a caller that
/// goes away (a reset, a deadline) does not drop the record of what still happened.
pub(crate) async fn spawn_audited<T: Send + 'static>(
    f: impl Future<Output = Result<Response<T>, Status>> + Send + 'static,
) -> Result<Response<T>, Status> {
    tokio::spawn(f)
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("request failed: {e}"))))
}

/// Records a state-changing request and how it ended (`target` empty: the id of what
/// it made), and passes its result on.
pub(crate) fn audited<T>(
    idc: &Idc,
    who: &str,
    action: &str,
    target: &str,
    r: Result<Response<T>, Status>,
    made: impl Fn(&T) -> &str,
) -> Result<Response<T>, Status> {
    let (target, failed) = match &r {
        Ok(reply) if target.is_empty() => (made(reply.get_ref()).to_string(), None),
        Ok(_) => (target.to_string(), None),
        Err(s) => (
            target.to_string(),
            Some(sluice_proto::status::from_status(s)),
        ),
    };
    idc.audit_request(who, action, &target, failed.as_ref());
    r
}

fn user<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(sluice_proto::USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or("anonymous")
        .to_string()
}

/// Names no user of the API may take: `peer:<domain>` (segments held for a peer's
/// circuit, and what peers did) and `operator:<name>` (what operators did).
fn reserved_name(u: &str) -> bool {
    crate::federation::aggregator_of(u).is_some() || u.starts_with("operator:")
}

/// 00103: nothing here can measure a circuit (on `field`, if the request named one).
fn no_agents(field: Option<&str>) -> Error {
    let mut e = Error::new(
        ErrorCode::NotImplemented,
        "this IDC drives no node agents (sluice serve --agents), so nothing can measure a circuit",
    );
    e.field = field.map(str::to_string);
    e
}

/// How a user of the API is recorded: a claimed reserved name as `api:...`.
fn recorded_user(who: &str) -> String {
    if reserved_name(who) {
        format!("api:{who}")
    } else {
        who.to_string()
    }
}

/// The caller of a booking, which may not be a reserved name.
fn booking_user<T>(req: &Request<T>) -> Result<String, Status> {
    let u = user(req);
    if reserved_name(&u) {
        return Err(to_status(&Error::invalid(
            "user",
            format!(
                "{u:?}: names starting with peer: or operator: are kept for peer domains and operators"
            ),
        )));
    }
    Ok(u)
}

fn reply(r: Result<sluice_model::Reservation, Error>) -> Result<Response<v1::Reservation>, Status> {
    r.map(|r| Response::new(convert::reservation(&r)))
        .map_err(|e| to_status(&e))
}

/// Runs a federated operation to its end even if the caller goes away: dropped halfway,
/// it could leave some domains committed and others not.
async fn detached<T: Send + 'static>(
    f: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(f)
        .await
        .map_err(|e| Error::internal(format!("federated operation failed: {e}")))?
}

fn circuit_reply(
    r: Result<(sluice_model::Reservation, Vec<sluice_model::CircuitSegment>), Error>,
) -> Result<Response<v1::Reservation>, Status> {
    r.map(|(r, segs)| Response::new(convert::circuit(&r, &segs)))
        .map_err(|e| to_status(&e))
}

/// A series request's criteria and rule, checked field by field.
pub(crate) fn series_ask(
    criteria: &Option<v1::Criteria>,
    recurrence: &Option<v1::Recurrence>,
    now: chrono::DateTime<chrono::Utc>,
    same_path: bool,
    skip_conflicts: bool,
) -> Result<crate::service::SeriesAsk, Error> {
    let c = criteria
        .as_ref()
        .ok_or_else(|| Error::missing("criteria"))?;
    let rec = recurrence
        .as_ref()
        .ok_or_else(|| Error::missing("recurrence"))?;
    Ok(crate::service::SeriesAsk {
        criteria: convert::series_criteria(c, now)?,
        recurrence: convert::recurrence(rec, now)?,
        same_path,
        skip_conflicts,
    })
}

/// Which occurrences a cancel names.
pub(crate) fn series_scope(
    scope: &Option<v1::cancel_series_request::Scope>,
) -> Result<crate::service::SeriesScope, Error> {
    use crate::service::SeriesScope;
    use v1::cancel_series_request::Scope;
    Ok(match scope {
        None => SeriesScope::All,
        Some(Scope::Occurrence(n)) => SeriesScope::One(*n),
        Some(Scope::From(t)) => SeriesScope::From(convert::from_timestamp(t, "from")?),
    })
}

fn circuit_series_reply(
    r: Result<crate::federation::CircuitSeries, Error>,
) -> Result<Response<v1::Series>, Status> {
    r.map(|(s, occurrences)| Response::new(convert::circuit_series(&s, &occurrences)))
        .map_err(|e| to_status(&e))
}

fn series_reply(
    r: Result<(sluice_model::Series, Vec<sluice_model::Reservation>), Error>,
) -> Result<Response<v1::Series>, Status> {
    r.map(|(s, occurrences)| Response::new(convert::series(&s, &occurrences)))
        .map_err(|e| to_status(&e))
}

fn id_of(req: Request<v1::IdRequest>) -> Result<String, Status> {
    let id = req.into_inner().id;
    if id.is_empty() {
        return Err(to_status(&Error::missing("id")));
    }
    Ok(id)
}

fn event(e: &EventRecord) -> v1::Event {
    convert::event(e.seq, &e.reservation_id, &e.change)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

#[tonic::async_trait]
impl v1::reservations_server::Reservations for Api {
    async fn reserve(
        &self,
        req: Request<v1::ReserveRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let who = user(&req);
        let api = self.clone();
        spawn_audited(async move {
            let r = api.reserve_unaudited(req).await;
            api.audited(&who, "reserve", "", r, |r| &r.id)
        })
        .await
    }

    async fn commit(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.transition(req, Op::Commit).await
    }

    async fn abort(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.transition(req, Op::Abort).await
    }

    async fn provision(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.transition(req, Op::Provision).await
    }

    async fn release(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.transition(req, Op::Release).await
    }

    async fn terminate(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.transition(req, Op::Terminate).await
    }

    async fn modify(
        &self,
        req: Request<v1::ModifyRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (who, id) = (user(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.modify_unaudited(req).await;
            api.audited(&who, "modify", &id, r, |r| &r.id)
        })
        .await
    }
    async fn compute_paths(
        &self,
        req: Request<v1::ComputePathsRequest>,
    ) -> Result<Response<v1::ComputePathsReply>, Status> {
        let r = req.into_inner();
        let Some(c) = r.criteria else {
            return Err(to_status(&Error::missing("criteria")));
        };
        let criteria = convert::criteria(&c, self.idc.now()).map_err(|e| to_status(&e))?;
        match self
            .idc
            .compute_paths(criteria, r.k as usize, r.widest)
            .await
        {
            Ok(o) => Ok(Response::new(convert::path_offers(&o))),
            Err(e) => Err(to_status(&e)),
        }
    }

    async fn reserve_series(
        &self,
        req: Request<v1::ReserveSeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let who = user(&req);
        let api = self.clone();
        spawn_audited(async move {
            let r = api.reserve_series_unaudited(req).await;
            api.audited(&who, "reserve-series", "", r, |s| &s.id)
        })
        .await
    }

    async fn commit_series(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (who, id) = (user(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.commit_series_unaudited(req).await;
            api.audited(&who, "commit-series", &id, r, |s| &s.id)
        })
        .await
    }

    async fn cancel_series(
        &self,
        req: Request<v1::CancelSeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (who, id) = (user(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.cancel_series_unaudited(req).await;
            api.audited(&who, "cancel-series", &id, r, |s| &s.id)
        })
        .await
    }

    async fn modify_series(
        &self,
        req: Request<v1::ModifySeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (who, id) = (user(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.modify_series_unaudited(req).await;
            api.audited(&who, "modify-series", &id, r, |s| &s.id)
        })
        .await
    }

    async fn verify(
        &self,
        req: Request<v1::VerifyRequest>,
    ) -> Result<Response<v1::Measurement>, Status> {
        let (who, id) = (user(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.verify_unaudited(&who, req.into_inner()).await;
            api.audited(&who, "verify", &id, r, |m| &m.reservation_id)
        })
        .await
    }

    async fn status(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::CircuitStatus>, Status> {
        let id = id_of(req)?;
        if let Some(fed) = self.circuit(&id)? {
            let fed = fed.clone();
            let (reservation, domains) = detached(async move {
                let (r, segs) = fed.get(&id).await?;
                let domains = fed.status(&id).await?;
                Ok((convert::circuit(&r, &segs), domains))
            })
            .await
            .map_err(|e| to_status(&e))?;
            return Ok(Response::new(v1::CircuitStatus {
                reservation: Some(reservation),
                domains,
            }));
        }
        let here = crate::status::domain_status(
            &self.idc,
            self.agents.as_ref(),
            &id,
            sluice_model::StatusShare::Full,
            crate::status::AGENT_WAIT,
        )
        .await
        .map_err(|e| to_status(&e))?;
        let reservation = self.operate(id, Op::Query).await?.into_inner();
        Ok(Response::new(v1::CircuitStatus {
            reservation: Some(reservation),
            domains: vec![convert::domain_status(&here)],
        }))
    }

    async fn history(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::HistoryReply>, Status> {
        let id = id_of(req)?;
        let all = self
            .idc
            .measurements(&id)
            .await
            .map_err(|e| to_status(&e))?;
        if all.is_empty() {
            // Say whether the id is wrong or simply never measured.
            if self.idc.get(&id).await.is_err() {
                self.idc.get_series(&id).await.map_err(|e| to_status(&e))?;
            }
        }
        Ok(Response::new(v1::HistoryReply {
            measurements: all.iter().map(convert::measurement).collect(),
        }))
    }

    async fn emergency_stop(
        &self,
        req: Request<v1::EmergencyStopRequest>,
    ) -> Result<Response<v1::EmergencyStopReply>, Status> {
        let operator = self.operator(&req);
        // The operator as its token says; anyone else as any user (a claimed operator:
        // name is recorded as api:operator:...).
        let who = match &operator {
            Ok(name) => format!("operator:{name}"),
            Err(_) => recorded_user(&user(&req)),
        };
        let ask = req.into_inner();
        let target = if ask.owner.is_empty() {
            ask.id.clone()
        } else {
            format!("owner:{}", ask.owner)
        };
        let api = self.clone();
        spawn_audited(async move {
            let r = api.emergency_stop_unaudited(operator, ask).await;
            audited(&api.idc, &who, "emergency-stop", &target, r, |_| "")
        })
        .await
    }

    async fn audit(
        &self,
        req: Request<v1::AuditRequest>,
    ) -> Result<Response<v1::AuditReply>, Status> {
        const MOST: u32 = 1000;
        let r = req.into_inner();
        let limit = if r.limit == 0 {
            MOST
        } else {
            r.limit.min(MOST)
        } as usize;
        let mut rows = self
            .idc
            .audit_log(crate::store::AuditFilter {
                who: (!r.who.is_empty()).then_some(r.who),
                target: (!r.target.is_empty()).then_some(r.target),
                after: r.after_seq,
                limit: limit as i64 + 1,
            })
            .await
            .map_err(|e| to_status(&e))?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok(Response::new(v1::AuditReply {
            entries: rows.iter().map(convert::audit_entry).collect(),
            more,
        }))
    }

    async fn get_series(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let id = id_of(req)?;
        if let Some(fed) = self.circuit_series(&id).await? {
            return circuit_series_reply(fed.get_series(&id).await);
        }
        series_reply(self.idc.get_series(&id).await)
    }

    async fn get(&self, req: Request<v1::IdRequest>) -> Result<Response<v1::Reservation>, Status> {
        self.operate(id_of(req)?, Op::Query).await
    }

    async fn list(&self, req: Request<v1::ListRequest>) -> Result<Response<v1::ListReply>, Status> {
        let l = req.into_inner();
        let window = || -> Result<Option<TimeWindow>, Error> {
            let from = l
                .from
                .as_ref()
                .map(|t| convert::from_timestamp(t, "from"))
                .transpose()?;
            let to =
                l.to.as_ref()
                    .map(|t| convert::from_timestamp(t, "to"))
                    .transpose()?;
            Ok(match (from, to) {
                (None, None) => None,
                (from, to) => {
                    let from = from.unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
                    let to = to.unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                    Some(
                        TimeWindow::new(from, to)
                            .map_err(|_| Error::invalid("to", "`to` is not after `from`"))?,
                    )
                }
            })
        };
        let query = ListQuery {
            states: l.states.clone(),
            window: window().map_err(|e| to_status(&e))?,
            port: (!l.port.is_empty()).then(|| l.port.clone()),
            owner: (!l.owner.is_empty()).then(|| l.owner.clone()),
            limit: (l.limit > 0).then_some(l.limit as usize),
        };
        let (rs, truncated) = self.idc.list(query).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::ListReply {
            reservations: rs.iter().map(convert::reservation).collect(),
            truncated,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let w = req.into_inner();
        let only = (!w.reservation_id.is_empty()).then(|| w.reservation_id.clone());
        // Subscribe before replaying, then skip what the replay already sent.
        let mut live = self.idc.subscribe_all();
        let (tx, rx) = mpsc::channel::<Result<v1::Event, Status>>(256);
        let idc = self.idc.clone();
        let mut last = match w.since_seq {
            Some(s) => s,
            None => idc.last_event_seq().await.map_err(|e| to_status(&e))?,
        };
        let feed = async move {
            if let Some(since) = w.since_seq {
                match replay(&idc, since, &only, &tx).await {
                    Some(l) => last = l,
                    None => return,
                }
            }
            loop {
                let e = match live.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(n)) => {
                        // Too slow for the live feed: catch up from the store.
                        debug!(skipped = n, "watcher lagged; replaying from the store");
                        match replay(&idc, last, &only, &tx).await {
                            Some(l) => last = l,
                            None => return,
                        }
                        continue;
                    }
                };
                if e.seq <= last {
                    continue;
                }
                if e.seq > last + 1 {
                    // A gap: writers publish after their transactions, concurrently, so
                    // events can arrive out of order (or not at all, if a writer failed
                    // after committing). With one writer, everything up to `e` is in the
                    // store: fill the gap from there, and skip the stragglers later.
                    match replay(&idc, last, &only, &tx).await {
                        Some(l) => last = l.max(e.seq),
                        None => return,
                    }
                    continue;
                }
                // Every event moves the cursor, sent or filtered out, so gaps are real.
                last = e.seq;
                if only.as_ref().is_some_and(|id| *id != e.reservation_id) {
                    continue;
                }
                if tx.send(Ok(event(&e))).await.is_err() {
                    return;
                }
            }
        };
        let stop = self.stop.clone();
        tokio::spawn(async move {
            // Dropping the feed drops its sender, which ends the stream.
            tokio::select! {
                () = feed => {}
                () = stopped(stop) => {}
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn availability(
        &self,
        req: Request<v1::AvailabilityRequest>,
    ) -> Result<Response<v1::AvailabilityReply>, Status> {
        let a = req.into_inner();
        let now = self.idc.now();
        let window = || -> Result<TimeWindow, Error> {
            let from = a
                .from
                .as_ref()
                .map(|t| convert::from_timestamp(t, "from"))
                .transpose()?
                .unwrap_or(now);
            let to =
                a.to.as_ref()
                    .map(|t| convert::from_timestamp(t, "to"))
                    .transpose()?
                    // Saturating: `from` may be near the end of representable time.
                    .unwrap_or_else(|| {
                        from.checked_add_signed(TimeDelta::days(7))
                            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
                    });
            TimeWindow::new(from, to).map_err(|_| Error::invalid("to", "`to` is not after `from`"))
        };
        let window = window().map_err(|e| to_status(&e))?;
        let link = (!a.link.is_empty()).then_some(a.link.as_str());
        let port = (!a.port.is_empty()).then_some(a.port.as_str());
        let report = self
            .idc
            .availability(link, port, window)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::AvailabilityReply {
            resource: report.resource,
            directions: report
                .directions
                .into_iter()
                .map(|d| v1::DirectionAvailability {
                    direction: d.direction,
                    capacity_mbps: d.capacity.0,
                    steps: d
                        .steps
                        .iter()
                        .map(|s| v1::Step {
                            start: Some(convert::timestamp(s.start)),
                            end: Some(convert::timestamp(s.end)),
                            booked_mbps: s.booked.0,
                            available_mbps: d.capacity.saturating_sub(s.booked).0,
                        })
                        .collect(),
                })
                .collect(),
            vlans_in_use: report.vlans_in_use.iter().map(|v| v.id() as u32).collect(),
            vlans: report.vlans.map(|v| v.to_string()).unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl v1::topology_server::Topology for Api {
    async fn get_topology(
        &self,
        _req: Request<v1::GetTopologyRequest>,
    ) -> Result<Response<v1::TopologyReply>, Status> {
        Ok(Response::new(convert::topology(self.idc.topology())))
    }

    async fn domains(
        &self,
        _req: Request<v1::DomainsRequest>,
    ) -> Result<Response<v1::DomainsReply>, Status> {
        let Some(fed) = &self.fed else {
            return Ok(Response::new(v1::DomainsReply::default()));
        };
        let domains = fed
            .known_documents()
            .into_iter()
            .map(|(d, at)| v1::KnownDomain {
                own: d.domain == fed.domain(),
                direct: fed.is_direct_peer(&d.domain),
                received_at: Some(convert::timestamp(at)),
                document: Some(sluice_proto::federation::document(&d)),
            })
            .collect();
        Ok(Response::new(v1::DomainsReply {
            domains,
            federation_url: fed.url().to_string(),
        }))
    }
}
