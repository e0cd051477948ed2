//! Starting and stopping an IDC: store, index, scheduler and gRPC server (with health
//! and reflection) on one listening socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::TimeDelta;
use sluice_model::Topology;
use sluice_proto::v1::reservations_server::ReservationsServer;
use sluice_proto::v1::topology_server::TopologyServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::clock::Clock;
use crate::grpc::Api;
use crate::service::Idc;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub topology: Arc<Topology>,
    pub hold_timeout: TimeDelta,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start gRPC reflection: {0}")]
    Reflection(String),
}

/// A started IDC. Dropping it without [`RunningServer::shutdown`] leaves the tasks
/// running until the runtime ends.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub idc: Idc,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    scheduler: JoinHandle<()>,
}

impl RunningServer {
    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight calls finish, stops the scheduler.
    pub async fn shutdown(self) -> Result<(), tonic::transport::Error> {
        self.stop.send_replace(true);
        let result = self.server.await.unwrap_or(Ok(()));
        let _ = self.scheduler.await;
        result
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        signal.await;
        info!("shutting down");
        self.shutdown().await
    }
}

pub async fn start(
    opts: ServerOptions,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let idc = {
        let (topo, dir, hold) = (
            opts.topology.clone(),
            opts.data_dir.clone(),
            opts.hold_timeout,
        );
        tokio::task::spawn_blocking(move || Idc::open(topo, &dir, clock, hold))
            .await
            .expect("opening the store does not panic")?
    };
    let incoming = TcpIncoming::bind(opts.listen)
        .map_err(|source| StartError::Bind {
            addr: opts.listen,
            source,
        })?
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().map_err(|source| StartError::Bind {
        addr: opts.listen,
        source,
    })?;

    let (stop, stop_rx) = watch::channel(false);
    let api = Api::new(idc.clone()).stop_on(stop_rx.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ReservationsServer<Api>>().await;
    health.set_serving::<TopologyServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;

    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(ReservationsServer::new(api.clone()))
            .add_service(TopologyServer::new(api))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop.wait_for(|s| *s).await;
            }),
    );
    let scheduler = tokio::spawn(idc.clone().run_scheduler(stop_rx));
    info!(
        domain.id = %opts.topology.domain,
        listen = %addr,
        data_dir = %opts.data_dir.display(),
        hold_timeout_s = opts.hold_timeout.num_seconds(),
        "IDC serving"
    );
    Ok(RunningServer {
        addr,
        idc,
        stop,
        server,
        scheduler,
    })
}
