//! `sluice agent`: runs one node's agent, serving its IDC over gRPC (mutual TLS when given
//! certificates) and making the node's data plane carry the circuits it is sent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Args;
use sluice_agent::AgentConfig;
use sluice_agent::linux::LinuxNode;
use sluice_agent::mock::MockBackend;
use sluice_agent::service::{AgentService, Backend};
use tracing::{info, warn};

#[derive(Args)]
pub struct AgentArgs {
    /// The agent's file: its node, namespace, and each port's Linux interface and
    /// addresses (see agent/src/config.rs).
    #[arg(long)]
    config: PathBuf,
    /// Where the IDC calls (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:50552")]
    listen: SocketAddr,
    /// Mutual TLS: the CA that signs the IDC's certificate, and this agent's certificate
    /// and key (all three, or none for plain gRPC on a trusted network).
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    #[arg(long, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    #[arg(long, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// Drive no data plane: remember what is sent (for trying the IDC side out).
    #[arg(long)]
    mock: bool,
}

pub fn run(args: AgentArgs) -> ExitCode {
    crate::init_logging(crate::LogFormat::Text);
    let cfg = match std::fs::read_to_string(&args.config)
        .map_err(|e| e.to_string())
        .and_then(|t| AgentConfig::parse(&t))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: bad agent file {}: {e}", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    let tls = match (&args.ca, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => {
            let files = sluice_idc::federation::tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            };
            match files.load() {
                Ok(m) => Some(m.server()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let backend: Arc<dyn Backend> = if args.mock {
        Arc::new(Mutex::new(MockBackend::default()))
    } else {
        let linux = LinuxNode::new(cfg.netns.clone());
        // Said once at start: which labels this node's circuits get, and why.
        match linux.probe_8021q() {
            Ok(()) => info!(
                "labels: a VXLAN VNI per circuit and port (this kernel has 802.1Q links too; \
                 this release labels with VXLAN)"
            ),
            Err(why) => {
                info!("labels: a VXLAN VNI per circuit and port (no 802.1Q sub-interfaces: {why})")
            }
        }
        for (p, (speed, up)) in cfg.ports.iter().zip(linux.ports(&cfg)) {
            if !up {
                warn!(port = %p.name, dev = %p.dev, "the port's interface is missing or down");
            } else if speed != 0 && speed < p.capacity.0 {
                warn!(port = %p.name, dev = %p.dev, speed, capacity = p.capacity.0, "the interface is slower than the port's capacity");
            }
        }
        Arc::new(linux)
    };
    let (node, name, secure) = (cfg.node.clone(), backend.name(), tls.is_some());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let agent =
            match sluice_agent::server::start(args.listen, tls, AgentService::new(cfg, backend))
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
        // Scripts wait for this line.
        println!(
            "sluice: agent for node {node} (backend {name}{}) listening on {}",
            if secure { ", mutual TLS" } else { "" },
            agent.addr
        );
        crate::shutdown_signal().await;
        match agent.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
