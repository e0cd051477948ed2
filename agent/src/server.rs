//! Starting and stopping an agent's gRPC server (mutual TLS when given certificates).

use std::net::SocketAddr;

use sluice_proto::v1::agent_server::AgentServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::service::AgentService;

pub struct RunningAgent {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningAgent {
    /// Stops accepting and lets calls in flight finish.
    pub async fn shutdown(self) -> Result<(), tonic::transport::Error> {
        self.stop.send_replace(true);
        self.task.await.unwrap_or(Ok(()))
    }
}

pub async fn start(
    listen: SocketAddr,
    tls: Option<ServerTlsConfig>,
    svc: AgentService,
) -> Result<RunningAgent, String> {
    let incoming = TcpIncoming::bind(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?
        .with_nodelay(Some(true));
    let addr = incoming
        .local_addr()
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(
        builder
            .add_service(AgentServer::new(svc))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            }),
    );
    Ok(RunningAgent { addr, stop, task })
}
