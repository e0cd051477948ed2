//! The federation service other domains' IDCs call. Mutual TLS is required by the
//! server; here the caller's domain is read from its certificate and checked against
//! this domain's peers and their policy before anything else happens.

use sluice_model::{Error, ErrorCode, Reservation, TimeWindow};
use sluice_proto::status::to_status;
use sluice_proto::{convert, federation as doc_wire, v1};
use tonic::{Request, Response, Status};
use tracing::info;

use super::{Federation, Op, Policy, lock, segment_owner, tls};
use crate::grpc::{audited, spawn_audited};

#[derive(Clone)]
pub struct FederationApi {
    fed: Federation,
}

impl FederationApi {
    pub fn new(fed: Federation) -> FederationApi {
        FederationApi { fed }
    }

    /// The calling domain, from its client certificate, and our policy for it.
    fn peer<T>(&self, req: &Request<T>) -> Result<(String, Policy), Status> {
        let domain = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| tls::peer_domain(c.as_ref())))
            .ok_or_else(|| {
                to_status(&Error::new(
                    ErrorCode::Unauthorized,
                    "no client certificate: peers must use mutual TLS",
                ))
            })?;
        let policy = self.fed.policy(&domain).cloned().ok_or_else(|| {
            to_status(&Error::field(
                ErrorCode::Unauthorized,
                "peer",
                format!("{domain} is not a peer of {}", self.fed.domain()),
            ))
        })?;
        Ok((domain, policy))
    }

    /// The series `id`, if the calling domain is the one it was held for.
    async fn own_series(&self, peer: &str, id: &str) -> Result<String, Status> {
        if id.is_empty() {
            return Err(to_status(&Error::missing("id")));
        }
        let (s, _) = self
            .fed
            .idc()
            .get_series(id)
            .await
            .map_err(|e| to_status(&e))?;
        if s.owner != segment_owner(peer) {
            return Err(to_status(&Error::field(
                ErrorCode::Unauthorized,
                "id",
                format!("{id} is not a series held for {peer}"),
            )));
        }
        Ok(s.id)
    }

    /// The segment `id`, if the calling domain is the one it was held for.
    async fn own_segment(&self, peer: &str, id: &str) -> Result<Reservation, Status> {
        if id.is_empty() {
            return Err(to_status(&Error::missing("id")));
        }
        let r = self.fed.idc().get(id).await.map_err(|e| to_status(&e))?;
        if r.owner != segment_owner(peer) {
            return Err(to_status(&Error::field(
                ErrorCode::Unauthorized,
                "id",
                format!("{id} is not a segment held for {peer}"),
            )));
        }
        Ok(r)
    }

    async fn hold_segment_unaudited(
        &self,
        req: Request<v1::HoldSegmentRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (peer, policy) = self.peer(&req)?;
        let r = req.into_inner();
        let Some(c) = r.criteria else {
            return Err(to_status(&Error::missing("criteria")));
        };
        let criteria = convert::criteria(&c, self.fed.idc().now())
            .map_err(|e| to_status(&e.within("criteria")))?;
        policy
            .check(&peer, &criteria)
            .map_err(|e| to_status(&e.within("criteria")))?;
        let held = self
            .fed
            .idc()
            .reserve(&segment_owner(&peer), criteria)
            .await;
        if let Ok(h) = &held {
            lock(&self.fed.inner.segment_of).insert(h.id.clone(), Some(peer.clone()));
            info!(
                reservation.id = %h.id,
                peer.id = %peer,
                circuit = %r.connection_id,
                requester = %r.requester,
                "segment held for a peer"
            );
        }
        segment_reply(held)
    }

    /// `op` on a segment the calling domain holds here, audited (as `<op>-segment`).
    async fn segment_transition(
        &self,
        req: Request<v1::IdRequest>,
        op: Op,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (who, id) = (caller(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = async {
                let (peer, _) = api.peer(&req)?;
                let id = api.own_segment(&peer, &req.into_inner().id).await?.id;
                let idc = api.fed.idc();
                segment_reply(match op {
                    Op::Commit => idc.commit(&id).await,
                    Op::Abort => idc.abort(&id).await,
                    Op::Provision => idc.provision(&id).await,
                    Op::Release => idc.release(&id).await,
                    Op::Terminate => idc.terminate(&id).await,
                    Op::Query => idc.get(&id).await,
                })
            }
            .await;
            let action = format!("{}-segment", op.name());
            audited(api.fed.idc(), &who, &action, &id, r, |x| &x.id)
        })
        .await
    }

    async fn modify_segment_unaudited(
        &self,
        req: Request<v1::ModifyRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (peer, policy) = self.peer(&req)?;
        let m = req.into_inner();
        let current = self.own_segment(&peer, &m.id).await?;
        let (bw, bw_reverse, start, end) = convert::modify_fields(&m).map_err(|e| to_status(&e))?;
        // The policy holds for the new version too.
        let as_criteria = sluice_model::Criteria {
            src: sluice_model::StpRequest {
                stp: current.src.stp.clone(),
                vlans: None,
            },
            dst: sluice_model::StpRequest {
                stp: current.dst.stp.clone(),
                vlans: None,
            },
            bw: bw.unwrap_or(current.bw),
            bw_reverse: Some(bw_reverse.unwrap_or(current.bw_reverse)),
            window: TimeWindow::new(
                start.unwrap_or(current.window.start),
                end.unwrap_or(current.window.end),
            )
            .map_err(|e| to_status(&e))?,
            ero: Default::default(),
            description: String::new(),
            auto_provision: current.auto_provision,
        };
        policy
            .check(&peer, &as_criteria)
            .map_err(|e| to_status(&e))?;
        segment_reply(
            self.fed
                .idc()
                .modify(&current.id, bw, bw_reverse, start, end)
                .await,
        )
    }

    async fn hold_series_segment_unaudited(
        &self,
        req: Request<v1::HoldSeriesSegmentRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (peer, policy) = self.peer(&req)?;
        let r = req.into_inner();
        let now = self.fed.idc().now();
        let ask = crate::grpc::series_ask(&r.criteria, &r.recurrence, now, true, false)
            .map_err(|e| to_status(&e))?;
        // The policy holds for every occurrence: check it on the first one's window.
        let first = sluice_scheduler::recurrence::occurrences(&ask.recurrence)
            .map_err(|e| to_status(&e.within("recurrence")))?;
        let mut one = ask.criteria.clone();
        one.window = first[0].window;
        policy
            .check(&peer, &one)
            .map_err(|e| to_status(&e.within("criteria")))?;
        let held = self
            .fed
            .idc()
            .reserve_series(&segment_owner(&peer), ask)
            .await;
        if let Ok((series, occurrences)) = &held {
            let mut known = lock(&self.fed.inner.segment_of);
            for o in occurrences {
                known.insert(o.id.clone(), Some(peer.clone()));
            }
            info!(
                series.id = %series.id,
                peer.id = %peer,
                circuit = %r.connection_id,
                occurrences = occurrences.len(),
                "series segment held for a peer"
            );
        }
        series_segment_reply(held)
    }

    async fn commit_series_segment_unaudited(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (peer, _) = self.peer(&req)?;
        let id = self.own_series(&peer, &req.into_inner().id).await?;
        series_segment_reply(self.fed.idc().commit_series(&id).await)
    }

    async fn cancel_series_segment_unaudited(
        &self,
        req: Request<v1::CancelSeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (peer, _) = self.peer(&req)?;
        let r = req.into_inner();
        let id = self.own_series(&peer, &r.id).await?;
        let scope = crate::grpc::series_scope(&r.scope).map_err(|e| to_status(&e))?;
        series_segment_reply(self.fed.idc().cancel_series(&id, scope).await)
    }
}

/// Who a federation request is from, for the audit log: `peer:<domain>` as its
/// certificate says (`peer:?` without one: such a request is refused).
fn caller<T>(req: &Request<T>) -> String {
    let domain = req
        .peer_certs()
        .and_then(|certs| certs.first().and_then(|c| tls::peer_domain(c.as_ref())))
        .unwrap_or_else(|| "?".to_string());
    segment_owner(&domain)
}

/// A series segment as its aggregator sees it: paths stay private.
fn series_segment_reply(
    r: Result<(sluice_model::Series, Vec<Reservation>), Error>,
) -> Result<Response<v1::Series>, Status> {
    r.map(|(s, occurrences)| {
        let mut wire = convert::series(&s, &occurrences);
        for o in &mut wire.occurrences {
            o.path.clear();
        }
        Response::new(wire)
    })
    .map_err(|e| to_status(&e))
}

/// A segment as its aggregator sees it: our internal path stays private.
fn segment_reply(r: Result<Reservation, Error>) -> Result<Response<v1::Reservation>, Status> {
    r.map(|r| {
        let mut wire = convert::reservation(&r);
        wire.path.clear();
        Response::new(wire)
    })
    .map_err(|e| to_status(&e))
}

#[tonic::async_trait]
impl v1::federation_server::Federation for FederationApi {
    async fn pull_documents(
        &self,
        req: Request<v1::PullDocumentsRequest>,
    ) -> Result<Response<v1::Documents>, Status> {
        let (peer, _) = self.peer(&req)?;
        let docs = lock(&self.fed.inner.docs);
        Ok(Response::new(v1::Documents {
            documents: docs.for_peer(&peer).map(doc_wire::document).collect(),
        }))
    }

    async fn push_documents(
        &self,
        req: Request<v1::Documents>,
    ) -> Result<Response<v1::PushDocumentsReply>, Status> {
        let (peer, _) = self.peer(&req)?;
        // Documents travel between direct peers only.
        if !self.fed.is_direct_peer(&peer) {
            return Err(to_status(&Error::field(
                ErrorCode::Unauthorized,
                "peer",
                format!(
                    "{peer} is not a direct peer of {}: it cannot pass documents on",
                    self.fed.domain()
                ),
            )));
        }
        let mut docs = Vec::new();
        for (i, d) in req.into_inner().documents.iter().enumerate() {
            docs.push(
                doc_wire::document_from_wire(d)
                    .map_err(|e| to_status(&e.within(&format!("documents[{i}]"))))?,
            );
        }
        let accepted = self.fed.take_documents(docs, &peer);
        Ok(Response::new(v1::PushDocumentsReply { accepted }))
    }

    async fn free_labels(
        &self,
        req: Request<v1::FreeLabelsRequest>,
    ) -> Result<Response<v1::FreeLabelsReply>, Status> {
        let (peer, policy) = self.peer(&req)?;
        if !policy.may_request {
            return Err(to_status(&Error::field(
                ErrorCode::Unauthorized,
                "peer",
                format!("{peer} may not request segments here"),
            )));
        }
        let r = req.into_inner();
        let (start, end) = match (&r.start, &r.end) {
            (Some(s), Some(e)) => (
                convert::from_timestamp(s, "start").map_err(|e| to_status(&e))?,
                convert::from_timestamp(e, "end").map_err(|e| to_status(&e))?,
            ),
            (None, _) => return Err(to_status(&Error::missing("start"))),
            (_, None) => return Err(to_status(&Error::missing("end"))),
        };
        let window = TimeWindow::new(start, end).map_err(|e| to_status(&e))?;
        let mut vlans = Vec::with_capacity(r.ports.len());
        for (i, p) in r.ports.iter().enumerate() {
            let field = format!("ports[{i}]");
            let stp = sluice_model::Stp::parse(p).map_err(|e| to_status(&e.within(&field)))?;
            if !policy.ports.is_empty() && !policy.ports.contains(&stp.local()) {
                return Err(to_status(&Error::field(
                    ErrorCode::Unauthorized,
                    field,
                    format!("{peer} may not use port {} here", stp.local()),
                )));
            }
            let free = self
                .fed
                .idc()
                .free_vlans(&stp, &window, &field)
                .map_err(|e| to_status(&e))?;
            vlans.push(free.to_string());
        }
        Ok(Response::new(v1::FreeLabelsReply { vlans }))
    }

    async fn hold_segment(
        &self,
        req: Request<v1::HoldSegmentRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let who = caller(&req);
        let api = self.clone();
        spawn_audited(async move {
            let r = api.hold_segment_unaudited(req).await;
            audited(api.fed.idc(), &who, "hold-segment", "", r, |x| &x.id)
        })
        .await
    }

    async fn commit_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.segment_transition(req, Op::Commit).await
    }

    async fn abort_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.segment_transition(req, Op::Abort).await
    }

    async fn provision_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.segment_transition(req, Op::Provision).await
    }

    async fn release_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.segment_transition(req, Op::Release).await
    }

    async fn terminate_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        self.segment_transition(req, Op::Terminate).await
    }

    async fn segment_status(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::DomainStatus>, Status> {
        let (peer, policy) = self.peer(&req)?;
        let id = self.own_segment(&peer, &req.into_inner().id).await?.id;
        if policy.status == sluice_model::StatusShare::Nothing {
            return Err(to_status(&Error::field(
                ErrorCode::Unauthorized,
                "id",
                format!(
                    "{} shares no status of its segments with {peer}",
                    self.fed.domain()
                ),
            )));
        }
        // Only what is shared is gathered (the agents are not asked for a peer that sees
        // states only), and in time for the peer's deadline.
        let d = crate::status::domain_status(
            self.fed.idc(),
            self.fed.agents(),
            &id,
            policy.status,
            crate::status::AGENT_WAIT.min(self.fed.call_timeout() / 2),
        )
        .await
        .map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::domain_status(
            &d.restricted(policy.status),
        )))
    }

    async fn emergency_stop_segment(
        &self,
        req: Request<v1::EmergencyStopSegmentRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (who, id) = (caller(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = async {
                let (peer, _) = api.peer(&req)?;
                let ask = req.into_inner();
                let id = api.own_segment(&peer, &ask.id).await?.id;
                let reason = if ask.reason.is_empty() {
                    format!("emergency stop by {peer}")
                } else {
                    ask.reason
                };
                segment_reply(api.fed.idc().emergency_stop(&id, &reason).await)
            }
            .await;
            audited(api.fed.idc(), &who, "emergency-stop-segment", &id, r, |x| {
                &x.id
            })
        })
        .await
    }

    async fn modify_segment(
        &self,
        req: Request<v1::ModifyRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (who, id) = (caller(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.modify_segment_unaudited(req).await;
            audited(api.fed.idc(), &who, "modify-segment", &id, r, |x| &x.id)
        })
        .await
    }

    async fn hold_series_segment(
        &self,
        req: Request<v1::HoldSeriesSegmentRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let who = caller(&req);
        let api = self.clone();
        spawn_audited(async move {
            let r = api.hold_series_segment_unaudited(req).await;
            audited(api.fed.idc(), &who, "hold-series-segment", "", r, |x| &x.id)
        })
        .await
    }

    async fn commit_series_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (who, id) = (caller(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.commit_series_segment_unaudited(req).await;
            audited(api.fed.idc(), &who, "commit-series-segment", &id, r, |x| {
                &x.id
            })
        })
        .await
    }

    async fn cancel_series_segment(
        &self,
        req: Request<v1::CancelSeriesRequest>,
    ) -> Result<Response<v1::Series>, Status> {
        let (who, id) = (caller(&req), req.get_ref().id.clone());
        let api = self.clone();
        spawn_audited(async move {
            let r = api.cancel_series_segment_unaudited(req).await;
            audited(api.fed.idc(), &who, "cancel-series-segment", &id, r, |x| {
                &x.id
            })
        })
        .await
    }

    async fn query_segment(
        &self,
        req: Request<v1::IdRequest>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let (peer, _) = self.peer(&req)?;
        let r = self.own_segment(&peer, &req.into_inner().id).await?;
        segment_reply(Ok(r))
    }

    async fn notify(
        &self,
        req: Request<v1::SegmentEvents>,
    ) -> Result<Response<v1::NotifyReply>, Status> {
        let (peer, _) = self.peer(&req)?;
        for e in &req.into_inner().events {
            self.fed.on_notify(&peer, e);
        }
        Ok(Response::new(v1::NotifyReply {}))
    }
}
