//! A connection to an IDC, with the caller's name on every request.

use sluice_model::Error;
use sluice_proto::USER_HEADER;
use sluice_proto::status::from_status;
use sluice_proto::v1;
use sluice_proto::v1::reservations_client::ReservationsClient;
use sluice_proto::v1::topology_client::TopologyClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct User(MetadataValue<Ascii>);

impl Interceptor for User {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(USER_HEADER, self.0.clone());
        Ok(req)
    }
}

pub type Reservations = ReservationsClient<InterceptedService<Channel, User>>;
pub type Topology = TopologyClient<InterceptedService<Channel, User>>;

pub struct Client {
    pub reservations: Reservations,
    pub topology: Topology,
}

pub async fn connect(url: &str, user: &str) -> Result<Client, Error> {
    let user = User(user.parse().map_err(|_| {
        Error::invalid(
            "user",
            format!("{user:?} cannot be sent as a header (ASCII only)"),
        )
    })?);
    let endpoint = Channel::from_shared(url.to_string())
        .map_err(|e| Error::invalid("server", format!("{url:?} is not a URL: {e}")))?
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| {
        Error::internal(format!(
            "cannot reach the IDC at {url}: {}; is `sluice serve` running? (set --server or SLUICE_SERVER)",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        ))
    })?;
    Ok(Client {
        reservations: ReservationsClient::with_interceptor(channel.clone(), user.clone()),
        topology: TopologyClient::with_interceptor(channel, user),
    })
}

/// A call's error as a Sluice error.
pub fn err(s: tonic::Status) -> Error {
    from_status(&s)
}

/// The calls that take a reservation id and answer with the reservation.
#[derive(Debug, Clone, Copy)]
pub enum IdCall {
    Commit,
    Abort,
    Provision,
    Release,
    Terminate,
    Get,
}

impl Client {
    pub async fn call(&mut self, call: IdCall, id: &str) -> Result<v1::Reservation, Error> {
        let req = v1::IdRequest { id: id.to_string() };
        let r = &mut self.reservations;
        let reply = match call {
            IdCall::Commit => r.commit(req).await,
            IdCall::Abort => r.abort(req).await,
            IdCall::Provision => r.provision(req).await,
            IdCall::Release => r.release(req).await,
            IdCall::Terminate => r.terminate(req).await,
            IdCall::Get => r.get(req).await,
        };
        reply.map(tonic::Response::into_inner).map_err(err)
    }

    /// Reserve, then commit unless `hold_only`. A failed commit aborts the hold rather
    /// than leave it for its timer.
    pub async fn book(
        &mut self,
        criteria: v1::Criteria,
        hold_only: bool,
    ) -> Result<v1::Reservation, Error> {
        self.book_checked(criteria, hold_only, None).await
    }

    /// `book`, with a check at each start if `verify_each` asks for one.
    pub async fn book_checked(
        &mut self,
        criteria: v1::Criteria,
        hold_only: bool,
        verify_each: Option<v1::VerifyEach>,
    ) -> Result<v1::Reservation, Error> {
        let held = self
            .reservations
            .reserve(v1::ReserveRequest {
                verify_each,
                criteria: Some(criteria),
            })
            .await
            .map_err(err)?
            .into_inner();
        if hold_only {
            return Ok(held);
        }
        match self.call(IdCall::Commit, &held.id).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let _ = self.call(IdCall::Abort, &held.id).await;
                Err(e)
            }
        }
    }
}
