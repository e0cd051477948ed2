//! Starting and stopping an IDC: store, index, scheduler and gRPC server (with health
//! and reflection) on one listening socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::TimeDelta;
use sluice_model::Topology;
use sluice_proto::v1::federation_server::FederationServer;
use sluice_proto::v1::reservations_server::ReservationsServer;
use sluice_proto::v1::topology_server::TopologyServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::agents::{AgentDriver, AgentsConfig};
use crate::clock::Clock;
use crate::federation::{Federation, FederationApi, FederationSetup};
use crate::grpc::Api;
use crate::service::Idc;
use crate::store::{Database, StoreError};

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: the store there, shared with the domain's other replicas.
    /// `None`: SQLite in `data_dir`.
    pub database: Option<String>,
    pub topology: Arc<Topology>,
    pub hold_timeout: TimeDelta,
    /// Meet other domains' IDCs (a second, mutual-TLS listener).
    pub federation: Option<FederationSetup>,
    /// Drive these nodes' agents.
    pub agents: Option<AgentsConfig>,
    /// Who may make operator-only requests (the emergency stop); none by default.
    pub operators: crate::operators::Operators,
    /// Serve Prometheus metrics (`GET /metrics`) here.
    pub metrics: Option<SocketAddr>,
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
    #[error("federation TLS: {0}")]
    Tls(String),
}

/// A started IDC. Dropping it without [`RunningServer::shutdown`] leaves the tasks
/// running until the runtime ends.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub idc: Idc,
    /// Set when federated: where peers call, and the federation state.
    pub federation: Option<(SocketAddr, Federation)>,
    /// Where the metrics are served, if they are.
    pub metrics: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    scheduler: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
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
        for task in self.background {
            let _ = task.await;
        }
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
    let database = Database::choose(&opts.data_dir, opts.database.as_deref())?;
    let idc = {
        let (topo, database, hold) = (opts.topology.clone(), database.clone(), opts.hold_timeout);
        tokio::task::spawn_blocking(move || Idc::open_database(topo, &database, clock, hold))
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
    let mut api = Api::new(idc.clone())
        .stop_on(stop_rx.clone())
        .operated_by(opts.operators.clone());
    let mut background = Vec::new();
    let mut federation = None;
    let mut driver = None;
    let mut metrics = None;
    if let Some(at) = opts.metrics {
        let bind_error = |source| StartError::Bind { addr: at, source };
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(bind_error)?;
        metrics = Some(listener.local_addr().map_err(bind_error)?);
        background.push(tokio::spawn(crate::metrics::serve(
            listener,
            idc.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(cfg) = &opts.agents {
        let d = AgentDriver::new(idc.clone(), cfg.clone());
        driver = Some(d.clone());
        let driver = d;
        api = api.driving(driver.clone());
        background.push(tokio::spawn(driver.clone().run(stop_rx.clone())));
        // Subscribed now, before the scheduler runs: the starts it makes at once are seen.
        let events = idc.subscribe();
        background.push(tokio::spawn(driver.run_checks(events, stop_rx.clone())));
        info!(agents = cfg.agents.len(), "driving node agents");
    }
    if let Some(setup) = &opts.federation {
        let bind_error = |source| StartError::Bind {
            addr: setup.listen,
            source,
        };
        let prebound = setup
            .prebound
            .as_ref()
            .and_then(|l| l.lock().unwrap_or_else(|p| p.into_inner()).take());
        let incoming = match prebound {
            Some(l) => {
                l.set_nonblocking(true).map_err(bind_error)?;
                TcpIncoming::from(tokio::net::TcpListener::from_std(l).map_err(bind_error)?)
            }
            None => TcpIncoming::bind(setup.listen).map_err(bind_error)?,
        }
        .with_nodelay(Some(true));
        let fed_addr = incoming.local_addr().map_err(|source| StartError::Bind {
            addr: setup.listen,
            source,
        })?;
        let url = setup
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{fed_addr}"));
        let fed = Federation::new(idc.clone(), setup, url);
        if let Some(d) = &driver {
            fed.driving(d.clone());
        }
        api = api.federated(fed.clone());
        let mut fed_stop = stop_rx.clone();
        let serve = Server::builder()
            .tls_config(setup.tls.server())
            .map_err(|e| StartError::Tls(e.to_string()))?
            .add_service(FederationServer::new(FederationApi::new(fed.clone())))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = fed_stop.wait_for(|s| *s).await;
            });
        background.push(tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "federation server failed");
            }
        }));
        background.push(tokio::spawn(
            fed.clone().run_exchange(setup.refresh, stop_rx.clone()),
        ));
        background.push(tokio::spawn(fed.clone().run_notifier(stop_rx.clone())));
        info!(
            domain.id = %opts.topology.domain,
            listen = %fed_addr,
            url = %fed.url(),
            peers = setup.peers.len(),
            "federation serving (mutual TLS)"
        );
        federation = Some((fed_addr, fed));
    }
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
    background.push(tokio::spawn(idc.clone().run_follower(stop_rx.clone())));
    let scheduler = tokio::spawn(idc.clone().run_scheduler(stop_rx));
    info!(
        domain.id = %opts.topology.domain,
        listen = %addr,
        database = %database.describe(),
        hold_timeout_s = opts.hold_timeout.num_seconds(),
        "IDC serving"
    );
    Ok(RunningServer {
        addr,
        idc,
        federation,
        metrics,
        stop,
        server,
        scheduler,
        background,
    })
}
