//! The agent's gRPC service: the IDC sends the node's whole desired state, the agent
//! makes the data plane match it (on a blocking thread: the backend runs `ip` and `tc`)
//! and reports what is applied, the last error, and per-circuit counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_model::dataplane::{Desired, NodeCircuit};
use sluice_model::{Error, ErrorCode};

use crate::measure::{self, MeasurementEnd, Role};
use crate::twamp;
use sluice_proto::status::to_status;
use sluice_proto::{agent as wire, v1};
use tokio::sync::oneshot;
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
    /// One end of a measurement on `circuit` (which the node carries).
    fn measurement_end(
        &self,
        cfg: &AgentConfig,
        circuit: &NodeCircuit,
        role: Role,
    ) -> Result<MeasurementEnd, String>;
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

    fn measurement_end(
        &self,
        cfg: &AgentConfig,
        circuit: &NodeCircuit,
        role: Role,
    ) -> Result<MeasurementEnd, String> {
        self.open_measurement_end(cfg, circuit, role)
            .map_err(|e| e.to_string())
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
    /// Both ends on loopback, in this namespace: the measurement code runs as for real,
    /// without a circuit under it.
    fn measurement_end(
        &self,
        _cfg: &AgentConfig,
        _circuit: &NodeCircuit,
        _role: Role,
    ) -> Result<MeasurementEnd, String> {
        Ok(MeasurementEnd::new(
            None,
            std::net::Ipv4Addr::LOCALHOST,
            None,
            None,
        ))
    }

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

/// A measurement end and its claim on the circuit's names: the claim goes only once the
/// end has been removed, also when the request is cancelled halfway (dropped).
struct OpenEnd {
    end: MeasurementEnd,
    claim: Option<Claim>,
}

impl OpenEnd {
    /// Removes the end from the node (on a blocking thread), then lets the claim go.
    async fn close(mut self) {
        let (end, claim) = self.take();
        let _ = tokio::task::spawn_blocking(move || {
            end.close();
            drop(claim);
        })
        .await;
    }

    fn take(&mut self) -> (MeasurementEnd, Option<Claim>) {
        let end = std::mem::replace(
            &mut self.end,
            MeasurementEnd::new(None, std::net::Ipv4Addr::UNSPECIFIED, None, None),
        );
        (end, self.claim.take())
    }
}

impl Drop for OpenEnd {
    fn drop(&mut self) {
        if self.claim.is_none() {
            return; // closed already
        }
        let (end, claim) = self.take();
        measure::cleanup_from_drop(move || {
            end.close();
            drop(claim);
        });
    }
}

struct Claim {
    open: Arc<Mutex<std::collections::HashSet<(String, Role)>>>,
    key: (String, Role),
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Reflectors running, by session: each ends when told (and says when it has).
    reflecting: Arc<Mutex<HashMap<String, oneshot::Sender<oneshot::Sender<()>>>>>,
    /// The measurement ends open now, by circuit and role: one of each at a time (their
    /// names on the node derive from the circuit's port and label).
    open_ends: Arc<Mutex<std::collections::HashSet<(String, Role)>>>,
    sessions: Arc<AtomicU64>,
}

/// Longest a measurement may run or a reflector stay.
const MOST_MEASURE: Duration = Duration::from_secs(120);
const MOST_LEASE: Duration = Duration::from_secs(600);

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
            reflecting: Arc::new(Mutex::new(HashMap::new())),
            open_ends: Arc::new(Mutex::new(std::collections::HashSet::new())),
            sessions: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The circuit `id` as this node carries it now.
    fn carried(&self, id: &str) -> Result<NodeCircuit, Status> {
        self.lock()
            .desired
            .circuits
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| {
                to_status(&Error::field(
                    ErrorCode::ReservationNonexistent,
                    "circuit_id",
                    format!("node {} does not carry circuit {id:?} now", self.cfg.node),
                ))
            })
    }

    /// Opens `role`'s end on circuit `c`, unless one is open already (refused: a second
    /// one would take the first one's names on the node).
    async fn open_end(&self, c: &NodeCircuit, role: Role) -> Result<OpenEnd, Status> {
        let key = (c.id.clone(), role);
        if !lock(&self.open_ends).insert(key.clone()) {
            return Err(to_status(&Error::field(
                ErrorCode::InvalidTransition,
                "circuit_id",
                format!(
                    "a measurement of {} is already under way at {}",
                    c.id, self.cfg.node
                ),
            )));
        }
        let claim = Claim {
            open: self.open_ends.clone(),
            key,
        };
        let (cfg, backend, circuit) = (self.cfg.clone(), self.backend.clone(), c.clone());
        // The claim travels with the end: if this request is cancelled while the end is
        // being made, the end (made all the same) is dropped with its claim, so the
        // claim goes only once the end is removed again.
        let made = tokio::task::spawn_blocking(move || {
            backend
                .measurement_end(&cfg, &circuit, role)
                .map(|end| OpenEnd {
                    end,
                    claim: Some(claim),
                })
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        made.map_err(|e| {
            to_status(&Error::internal(format!(
                "cannot open a measurement end on {} at {}: {e}",
                c.id, self.cfg.node
            )))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        lock(&self.applied)
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

    async fn reflect(
        &self,
        req: Request<v1::ReflectRequest>,
    ) -> Result<Response<v1::ReflectReply>, Status> {
        let r = req.into_inner();
        let c = self.carried(&r.circuit_id)?;
        let lease = match r.lease_ms {
            0 => Duration::from_secs(60),
            ms => Duration::from_millis(ms.into()).min(MOST_LEASE),
        };
        let end = self.open_end(&c, Role::Reflector).await?;
        let opened = async {
            let udp = end.end.udp().await?;
            let tcp = end.end.listen().await?;
            Ok::<_, std::io::Error>((udp, tcp))
        }
        .await;
        let (udp, tcp) = match opened {
            Ok(x) => x,
            Err(e) => {
                end.close().await;
                return Err(to_status(&Error::internal(format!(
                    "reflector sockets on {}: {e}",
                    c.id
                ))));
            }
        };
        let (twamp_port, sink_port) = (
            udp.local_addr().map(|a| a.port()).unwrap_or_default(),
            tcp.local_addr().map(|a| a.port()).unwrap_or_default(),
        );
        let session = format!("{}#{}", c.id, self.sessions.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel::<oneshot::Sender<()>>();
        lock(&self.reflecting).insert(session.clone(), tx);
        let (reflecting, name, address) =
            (self.reflecting.clone(), session.clone(), end.end.address);
        info!(node = %self.cfg.node, circuit = %c.id, %session, "reflector open");
        tokio::spawn(async move {
            let done = tokio::select! {
                r = twamp::reflect(udp) => { warn!(error = ?r.err(), "reflector stopped"); None }
                r = measure::sink(tcp) => { warn!(error = ?r.err(), "sink stopped"); None }
                _ = tokio::time::sleep(lease) => None,
                told = rx => told.ok(),
            };
            lock(&reflecting).remove(&name);
            end.close().await;
            if let Some(done) = done {
                let _ = done.send(());
            }
        });
        Ok(Response::new(v1::ReflectReply {
            session,
            address: address.to_string(),
            twamp_port: twamp_port.into(),
            sink_port: sink_port.into(),
        }))
    }

    async fn end_reflect(
        &self,
        req: Request<v1::EndReflectRequest>,
    ) -> Result<Response<v1::EndReflectReply>, Status> {
        let session = req.into_inner().session;
        let Some(tx) = lock(&self.reflecting).remove(&session) else {
            // Ended already (its lease ran out): nothing left to do.
            return Ok(Response::new(v1::EndReflectReply {}));
        };
        let (done_tx, done_rx) = oneshot::channel();
        if tx.send(done_tx).is_ok() {
            let _ = done_rx.await;
        }
        Ok(Response::new(v1::EndReflectReply {}))
    }

    async fn measure(
        &self,
        req: Request<v1::MeasureRequest>,
    ) -> Result<Response<v1::MeasureReply>, Status> {
        let r = req.into_inner();
        let reflector: std::net::Ipv4Addr = r.reflector_address.parse().map_err(|_| {
            to_status(&Error::invalid(
                "reflector_address",
                format!("{:?} is not an IPv4 address", r.reflector_address),
            ))
        })?;
        let session = twamp::Session {
            count: match r.probes {
                0 => 100,
                n => n.min(10_000),
            },
            interval: Duration::from_millis(match r.probe_interval_ms {
                0 => 10,
                ms => ms.into(),
            }),
            wait: Duration::from_secs(1),
            size: 64,
        };
        let duration = match r.duration_ms {
            0 => Duration::from_secs(10),
            ms => Duration::from_millis(ms.into()),
        };
        if duration > MOST_MEASURE || session.interval * session.count > MOST_MEASURE {
            return Err(to_status(&Error::invalid(
                "duration_ms",
                format!("a measurement runs at most {} s", MOST_MEASURE.as_secs()),
            )));
        }
        let c = self.carried(&r.circuit_id)?;
        let end = self.open_end(&c, Role::Sender).await?;
        let run = async {
            let udp = end.end.udp().await?;
            let probes =
                twamp::measure(&udp, (reflector, r.twamp_port as u16).into(), session).await?;
            let throughput = if r.skip_throughput {
                None
            } else {
                let s = end
                    .end
                    .connect(
                        (reflector, r.sink_port as u16).into(),
                        Duration::from_secs(5),
                    )
                    .await?;
                Some(measure::send(s, duration, Duration::from_secs(15)).await?)
            };
            Ok::<_, std::io::Error>((probes, throughput))
        }
        .await;
        let mtu = end.end.mtu;
        end.close().await;
        let (probes, throughput) = run.map_err(|e| {
            to_status(&Error::internal(format!(
                "measuring {} from {}: {e}",
                c.id, self.cfg.node
            )))
        })?;
        let us = |d: Option<(Duration, Duration, Duration)>, i: usize| {
            d.map_or(0, |t| [t.0, t.1, t.2][i].as_micros() as u64)
        };
        Ok(Response::new(v1::MeasureReply {
            probes_sent: probes.sent,
            probes_received: probes.received(),
            rtt_min_us: us(probes.round_trip(), 0),
            rtt_avg_us: us(probes.round_trip(), 1),
            rtt_max_us: us(probes.round_trip(), 2),
            forward_avg_us: us(probes.forward(), 1),
            backward_avg_us: us(probes.backward(), 1),
            jitter_us: probes.jitter().map_or(0, |d| d.as_micros() as u64),
            bytes: throughput.map_or(0, |t| t.bytes),
            receive_ns: throughput.map_or(0, |t| t.receive.as_nanos() as u64),
            throughput_mbps: throughput.map_or(0.0, |t| t.mbps()),
            ip_throughput_mbps: throughput.map_or(0.0, |t| mtu.map_or(t.mbps(), |m| t.ip_mbps(m))),
        }))
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
