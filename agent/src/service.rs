//! The agent's gRPC service: the IDC sends the node's whole desired state, the agent
//! makes the data plane match it (on a blocking thread: the backend runs `ip` and `tc`)
//! and reports what is applied, the last error, and per-circuit counters.

use std::sync::{Arc, Mutex};

use sluice_model::Error;
use sluice_model::dataplane::Desired;
use sluice_proto::status::to_status;
use sluice_proto::{agent as wire, v1};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::admit::{Refused, admit};
use crate::config::AgentConfig;
use crate::linux::{CIRCUIT_CLASS_BASE, LinuxNode};
use crate::mock::MockBackend;

/// Bytes, packets and drops of one circuit's class, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
}

/// A data plane the agent drives.
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Makes the node carry `desired` and checks it does; how many commands ran.
    fn converge(&self, cfg: &AgentConfig, desired: &Desired) -> Result<usize, String>;
    /// Per configured port: its interface's speed in Mb/s (0: unknown) and whether it is
    /// up.
    fn ports(&self, cfg: &AgentConfig) -> Vec<(u64, bool)>;
    /// Per circuit of `desired`, in order: (A→Z, Z→A) counters.
    fn counters(
        &self,
        cfg: &AgentConfig,
        desired: &Desired,
    ) -> Result<Vec<(Counters, Counters)>, String>;
}

impl Backend for LinuxNode {
    fn name(&self) -> &'static str {
        "linux-vxlan"
    }

    fn ports(&self, cfg: &AgentConfig) -> Vec<(u64, bool)> {
        cfg.ports
            .iter()
            .map(|p| self.port_status(&p.dev).unwrap_or((0, false)))
            .collect()
    }

    fn converge(&self, cfg: &AgentConfig, desired: &Desired) -> Result<usize, String> {
        let plan = LinuxNode::converge(self, cfg, desired).map_err(|e| e.to_string())?;
        Ok(plan.tc_remove.len() + plan.ip.len() + plan.tc_add.len())
    }

    fn counters(
        &self,
        cfg: &AgentConfig,
        desired: &Desired,
    ) -> Result<Vec<(Counters, Counters)>, String> {
        let cur = self.read(cfg).map_err(|e| e.to_string())?;
        let of = |port: &str, label: u32| {
            let dev = &cfg.port(port)?.1.dev;
            let c = cur
                .ports
                .get(dev)?
                .classes
                .get(&(CIRCUIT_CLASS_BASE + label as u16))?;
            Some(Counters {
                bytes: c.bytes,
                packets: c.packets,
                drops: c.drops,
            })
        };
        Ok(desired
            .circuits
            .iter()
            .map(|c| {
                (
                    of(&c.z.port, c.z.label).unwrap_or_default(),
                    of(&c.a.port, c.a.label).unwrap_or_default(),
                )
            })
            .collect())
    }
}

impl Backend for Mutex<MockBackend> {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn ports(&self, cfg: &AgentConfig) -> Vec<(u64, bool)> {
        cfg.ports.iter().map(|p| (p.capacity.0, true)).collect()
    }

    fn converge(&self, _cfg: &AgentConfig, desired: &Desired) -> Result<usize, String> {
        let mut m = self.lock().unwrap_or_else(|p| p.into_inner());
        m.apply(desired).map(usize::from)
    }

    fn counters(
        &self,
        _cfg: &AgentConfig,
        desired: &Desired,
    ) -> Result<Vec<(Counters, Counters)>, String> {
        Ok(vec![Default::default(); desired.circuits.len()])
    }
}

struct Applied {
    /// The version taken, and the circuits of it the node carries.
    desired: Desired,
    /// The circuits of it the node does not carry.
    refused: Vec<Refused>,
    error: Option<String>,
    changes: usize,
}

#[derive(Clone)]
pub struct AgentService {
    cfg: Arc<AgentConfig>,
    backend: Arc<dyn Backend>,
    applied: Arc<Mutex<Applied>>,
    /// Held for a whole apply.
    applying: Arc<tokio::sync::Mutex<()>>,
}

impl AgentService {
    pub fn new(cfg: AgentConfig, backend: Arc<dyn Backend>) -> AgentService {
        AgentService {
            cfg: Arc::new(cfg),
            backend,
            applied: Arc::new(Mutex::new(Applied {
                desired: Desired::default(),
                refused: Vec::new(),
                error: None,
                changes: 0,
            })),
            applying: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn apply_serialized(&self, desired: Desired) {
        let _one = self.applying.lock().await;
        let carried = {
            let a = self.lock();
            if desired.version < a.desired.version {
                // An older state arriving late: what is applied stays.
                return;
            }
            a.desired.clone()
        };
        // Each circuit the node cannot carry is refused alone; the rest is applied.
        let (desired, refused) = admit(&self.cfg, &desired, &carried);
        for r in &refused {
            warn!(node = %self.cfg.node, circuit = %r.id, reason = %r.reason, "circuit refused");
        }
        let (cfg, backend, d) = (self.cfg.clone(), self.backend.clone(), desired.clone());
        let result = tokio::task::spawn_blocking(move || backend.converge(&cfg, &d))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let mut a = self.lock();
        match result {
            Ok(changes) => {
                info!(node = %self.cfg.node, version = desired.version, circuits = desired.circuits.len(), changes, "desired state applied");
                *a = Applied {
                    desired,
                    refused,
                    error: None,
                    changes,
                };
            }
            Err(e) => {
                warn!(node = %self.cfg.node, version = desired.version, error = %e, "desired state not applied");
                a.error = Some(e);
                a.changes = 0;
            }
        }
    }

    async fn state(&self) -> v1::AgentState {
        let (desired, refused, error, changes) = {
            let a = self.lock();
            (
                a.desired.clone(),
                a.refused.clone(),
                a.error.clone(),
                a.changes,
            )
        };
        let (cfg, backend, d) = (self.cfg.clone(), self.backend.clone(), desired.clone());
        let counters = tokio::task::spawn_blocking(move || backend.counters(&cfg, &d))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot read counters");
                vec![Default::default(); desired.circuits.len()]
            });
        v1::AgentState {
            node: self.cfg.node.clone(),
            version: desired.version,
            backend: self.backend.name().to_string(),
            error: error.unwrap_or_default(),
            circuits: desired
                .circuits
                .iter()
                .zip(counters)
                .map(|(c, (az, za))| v1::CircuitCounters {
                    id: c.id.clone(),
                    bytes_az: az.bytes,
                    packets_az: az.packets,
                    drops_az: az.drops,
                    bytes_za: za.bytes,
                    packets_za: za.packets,
                    drops_za: za.drops,
                })
                .collect(),
            changes: changes as u32,
            refused: refused
                .into_iter()
                .map(|r| v1::RefusedCircuit {
                    id: r.id,
                    reason: r.reason.to_string(),
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl v1::agent_server::Agent for AgentService {
    async fn apply(
        &self,
        req: Request<v1::DesiredState>,
    ) -> Result<Response<v1::AgentState>, Status> {
        let (node, desired) =
            wire::desired_from_wire(&req.into_inner()).map_err(|e| to_status(&e))?;
        if node != self.cfg.node {
            return Err(to_status(&Error::invalid(
                "node",
                format!("this agent runs node {}, not {node}", self.cfg.node),
            )));
        }
        // In a task of its own, one at a time: a caller that gives up (a timeout) does
        // not stop a converge halfway, and two never run side by side, so an older set
        // cannot finish after a newer one.
        let svc = self.clone();
        tokio::spawn(async move { svc.apply_serialized(desired).await })
            .await
            .map_err(|e| Status::internal(format!("apply: {e}")))?;
        Ok(Response::new(self.state().await))
    }

    async fn state(
        &self,
        _req: Request<v1::AgentStateRequest>,
    ) -> Result<Response<v1::AgentState>, Status> {
        Ok(Response::new(AgentService::state(self).await))
    }

    async fn ports(
        &self,
        _req: Request<v1::AgentPortsRequest>,
    ) -> Result<Response<v1::AgentPortsReply>, Status> {
        let (cfg, backend) = (self.cfg.clone(), self.backend.clone());
        let found = tokio::task::spawn_blocking(move || backend.ports(&cfg))
            .await
            .map_err(|e| to_status(&Error::internal(e.to_string())))?;
        Ok(Response::new(v1::AgentPortsReply {
            node: self.cfg.node.clone(),
            ports: self
                .cfg
                .ports
                .iter()
                .zip(found)
                .map(|(p, (speed, up))| v1::AgentPort {
                    name: p.name.clone(),
                    dev: p.dev.clone(),
                    capacity_mbps: p.capacity.0,
                    speed_mbps: speed,
                    up,
                })
                .collect(),
        }))
    }
}
