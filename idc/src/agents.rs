//! Driving the node agents: the IDC works out, from the reservations whose data plane
//! is active, the whole desired set of circuits of every node, and sends each node's
//! agent its set whenever it changes (a circuit goes up or down), at start (so a
//! restarted IDC reconciles every agent) and, for agents that failed, every few seconds
//! until they take it (so an agent that was down is caught up when it returns).
//!
//! The agents file (`sluice serve --agents F`):
//!
//! ```toml
//! # For https:// agents: the CA that signs them, and the IDC's own certificate.
//! ca = "certs/ca.pem"
//! cert = "certs/internet2.pem"
//! key = "certs/internet2.key"
//!
//! [[agent]]
//! node = "houston"
//! url = "https://127.0.0.1:50552"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sluice_model::Machine;
use sluice_model::dataplane::{Desired, NodeReport, NodeState, node_circuits};
use sluice_proto::v1::agent_client::AgentClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::Idc;
use crate::federation::tls::{TlsFiles, TlsMaterial};
use crate::service::ListQuery;
use crate::store::NodeUpdate;

/// How often agents that failed are tried again.
pub const RETRY: Duration = Duration::from_secs(2);
/// By default, how often every agent's version is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long one agent call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AgentsConfig {
    /// Node id → the agent's URL.
    pub agents: BTreeMap<String, String>,
    /// For https:// agents.
    pub tls: Option<TlsMaterial>,
    /// How often every agent is asked which version it has: one that restarted (or
    /// whose node rebooted) since it took its set gets it again.
    pub check_every: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    ca: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    #[serde(default)]
    agent: Vec<AgentFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    node: String,
    url: String,
}

impl AgentsConfig {
    pub fn new(agents: BTreeMap<String, String>, tls: Option<TlsMaterial>) -> AgentsConfig {
        AgentsConfig {
            agents,
            tls,
            check_every: CHECK_EVERY,
        }
    }

    pub fn load(path: &Path) -> Result<AgentsConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let f: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut agents = BTreeMap::new();
        for (i, a) in f.agent.into_iter().enumerate() {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                return Err(format!(
                    "agent[{i}].url: {:?} is not http:// or https://",
                    a.url
                ));
            }
            if agents.insert(a.node.clone(), a.url).is_some() {
                return Err(format!("agent[{i}]: node {} is listed twice", a.node));
            }
        }
        let tls = match (f.ca, f.cert, f.key) {
            (Some(ca), Some(cert), Some(key)) => Some(
                TlsFiles {
                    ca: base.join(ca),
                    cert: base.join(cert),
                    key: base.join(key),
                }
                .load()
                .map_err(|e| e.to_string())?,
            ),
            (None, None, None) => None,
            _ => return Err("ca, cert and key go together".into()),
        };
        if tls.is_none() && agents.values().any(|u| u.starts_with("https://")) {
            return Err("https:// agents need ca, cert and key".into());
        }
        Ok(AgentsConfig::new(agents, tls))
    }
}

/// What a node's agent last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The version it applied last (0: none yet).
    pub applied: u64,
    /// Why the last send failed, if it did.
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct AgentDriver {
    inner: Arc<Inner>,
}

struct Inner {
    idc: Idc,
    cfg: AgentsConfig,
    channels: Mutex<HashMap<String, Channel>>,
    /// Per node: what was last taken by its agent.
    sent: Mutex<HashMap<String, Desired>>,
    status: Mutex<BTreeMap<String, NodeStatus>>,
    version: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentDriver {
    pub fn new(idc: Idc, cfg: AgentsConfig) -> AgentDriver {
        AgentDriver {
            inner: Arc::new(Inner {
                idc,
                cfg,
                channels: Mutex::new(HashMap::new()),
                sent: Mutex::new(HashMap::new()),
                status: Mutex::new(BTreeMap::new()),
                version: Mutex::new(0),
            }),
        }
    }

    /// Every node's circuits now: those of the reservations whose data plane is active.
    async fn desired_by_node(&self) -> Result<BTreeMap<String, Desired>, sluice_model::Error> {
        let (active, _) = self
            .inner
            .idc
            .list(ListQuery {
                states: vec!["active".into()],
                limit: Some(usize::MAX),
                ..ListQuery::default()
            })
            .await?;
        let topo = self.inner.idc.topology();
        let mut out: BTreeMap<String, Desired> = BTreeMap::new();
        for r in &active {
            let Some(hops) = node_circuits(topo, r) else {
                // Circuits across domains: their segments here are reservations of their own.
                continue;
            };
            for (node, c) in hops {
                out.entry(node).or_default().circuits.push(c);
            }
        }
        Ok(out)
    }

    fn next_version(&self) -> u64 {
        let mut v = lock(&self.inner.version);
        let now = self.inner.idc.now().timestamp_millis().max(0) as u64;
        *v = (*v + 1).max(now);
        *v
    }

    fn client(&self, node: &str, url: &str) -> Result<AgentClient<Channel>, String> {
        let mut channels = lock(&self.inner.channels);
        if let Some(ch) = channels.get(node) {
            return Ok(AgentClient::new(ch.clone()));
        }
        let mut ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("bad address {url:?}: {e}"))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        if let Some(tls) = &self.inner.cfg.tls {
            ep = ep
                .tls_config(tls.client(node))
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        let ch = ep.connect_lazy();
        channels.insert(node.to_string(), ch.clone());
        Ok(AgentClient::new(ch))
    }

    /// Sends each agent its node's set if it changed since the agent last took one, or
    /// if the agent failed last time.
    pub async fn sync(&self) {
        let desired = match self.desired_by_node().await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "cannot work out the nodes' circuits");
                return;
            }
        };
        let mut calls = Vec::new();
        for (node, url) in &self.inner.cfg.agents {
            let mut want = desired.get(node).cloned().unwrap_or_default();
            want.circuits.sort_by(|a, b| a.id.cmp(&b.id));
            let failing = lock(&self.inner.status)
                .get(node)
                .is_none_or(|s| s.error.is_some());
            let same = lock(&self.inner.sent)
                .get(node)
                .is_some_and(|sent| sent.circuits == want.circuits);
            if same && !failing {
                continue;
            }
            want.version = self.next_version();
            let (driver, node, url) = (self.clone(), node.clone(), url.clone());
            calls.push(tokio::spawn(
                async move { driver.send(&node, &url, want).await },
            ));
        }
        for c in calls {
            let _ = c.await;
        }
    }

    async fn send(&self, node: &str, url: &str, want: Desired) {
        let result = match self.client(node, url) {
            Ok(mut client) => client
                .apply(sluice_proto::agent::desired(node, &want))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| {
                    lock(&self.inner.channels).remove(node);
                    sluice_proto::status::from_status(&s).message
                }),
            Err(e) => Err(e),
        };
        let status = match result {
            Ok(state) if state.error.is_empty() && state.version == want.version => {
                info!(
                    node,
                    version = want.version,
                    circuits = want.circuits.len(),
                    changes = state.changes,
                    "agent applied the node's circuits"
                );
                NodeStatus {
                    applied: state.version,
                    error: None,
                }
            }
            Ok(state) => NodeStatus {
                applied: state.version,
                error: Some(if state.error.is_empty() {
                    format!("the agent kept version {}", state.version)
                } else {
                    state.error
                }),
            },
            Err(e) => {
                warn!(node, error = %e, "agent not reached; trying again");
                NodeStatus {
                    applied: lock(&self.inner.status).get(node).map_or(0, |s| s.applied),
                    error: Some(format!("agent not reached: {e}")),
                }
            }
        };
        self.record(node, &want, status.error.as_deref());
        if status.error.is_none() {
            lock(&self.inner.sent).insert(node.to_string(), want);
        }
        lock(&self.inner.status).insert(node.to_string(), status);
    }

    /// Records with each reservation what `node`'s agent did with it: every circuit of
    /// `want` applied or failed, and every one it had that is no longer wanted removed
    /// (or failed: it may still be there).
    fn record(&self, node: &str, want: &Desired, error: Option<&str>) {
        let idc = &self.inner.idc;
        let had = match idc.circuits_on_node(node) {
            Ok(h) => h,
            Err(e) => {
                warn!(node, error = %e, "cannot read the node's circuits");
                return;
            }
        };
        let wanted: BTreeSet<&str> = want.circuits.iter().map(|c| c.id.as_str()).collect();
        let (ok, failed) = match error {
            None => (NodeState::Applied, String::new()),
            Some(e) => (NodeState::Failed, e.to_string()),
        };
        let mut updates: Vec<NodeUpdate> = wanted
            .iter()
            .map(|id| NodeUpdate {
                reservation_id: id.to_string(),
                state: ok,
                error: failed.clone(),
            })
            .collect();
        for id in had.iter().filter(|id| !wanted.contains(id.as_str())) {
            updates.push(match error {
                None => NodeUpdate {
                    reservation_id: id.clone(),
                    state: NodeState::Removed,
                    error: String::new(),
                },
                Some(e) => NodeUpdate {
                    reservation_id: id.clone(),
                    state: NodeState::Failed,
                    error: format!("not removed yet: {e}"),
                },
            });
        }
        if let Err(e) = idc.record_node_states(node, &updates) {
            warn!(node, error = %e, "the agent's answer not recorded");
        }
    }

    /// Per node of the path of `r`: what its agent last answered for it. Nodes whose
    /// agent has not answered show no state (with why, if no agent is configured).
    pub fn data_plane_of(&self, r: &sluice_model::Reservation) -> Vec<NodeReport> {
        let Some(hops) = node_circuits(self.inner.idc.topology(), r) else {
            return Vec::new();
        };
        let recorded = match self.inner.idc.node_states(&r.id) {
            Ok(rec) => rec,
            Err(e) => {
                warn!(reservation.id = %r.id, error = %e, "cannot read the nodes' states");
                Vec::new()
            }
        };
        if recorded.is_empty() && !r.states.data_plane_active {
            return Vec::new();
        }
        hops.into_iter()
            .map(|(node, _)| match recorded.iter().find(|n| n.node == node) {
                Some(n) => NodeReport {
                    node,
                    state: Some(n.state),
                    error: n.error.clone(),
                    updated_at: Some(n.updated_at),
                },
                None => NodeReport {
                    error: if self.inner.cfg.agents.contains_key(&node) {
                        String::new()
                    } else {
                        "no agent configured for this node".to_string()
                    },
                    node,
                    state: None,
                    updated_at: None,
                },
            })
            .collect()
    }

    /// Asks every agent that took a set which version it has now; one that has another
    /// (it restarted with nothing, its node rebooted) or does not answer is sent its
    /// set again by the next sync. The agent's plan touches only what is missing, so
    /// circuits still in place are left alone.
    async fn check_versions(&self) {
        let sent: Vec<(String, u64)> = lock(&self.inner.sent)
            .iter()
            .map(|(n, d)| (n.clone(), d.version))
            .collect();
        let mut calls = Vec::new();
        for (node, version) in sent {
            let Some(url) = self.inner.cfg.agents.get(&node).cloned() else {
                continue;
            };
            let driver = self.clone();
            calls.push(tokio::spawn(async move {
                let answer = match driver.client(&node, &url) {
                    Ok(mut c) => c
                        .state(sluice_proto::v1::AgentStateRequest {})
                        .await
                        .map(|r| r.into_inner().version)
                        .map_err(|s| sluice_proto::status::from_status(&s).message),
                    Err(e) => Err(e),
                };
                if answer.as_ref().is_ok_and(|v| *v == version) {
                    return;
                }
                match answer {
                    Ok(has) => {
                        warn!(
                            node,
                            has,
                            sent = version,
                            "agent lost its set; sending it again"
                        )
                    }
                    Err(e) => {
                        lock(&driver.inner.channels).remove(&node);
                        warn!(node, error = %e, "agent not reached; trying again")
                    }
                }
                lock(&driver.inner.sent).remove(&node);
            }));
        }
        for c in calls {
            let _ = c.await;
        }
    }

    /// Syncs at start, at every data plane change, every [`RETRY`] while an agent is
    /// failing, and after each check of the agents' versions, until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut events = self.inner.idc.subscribe();
        let mut check = tokio::time::interval(self.inner.cfg.check_every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            self.sync().await;
            let failing = lock(&self.inner.status).values().any(|s| s.error.is_some());
            let retry = async {
                if failing {
                    tokio::time::sleep(RETRY).await
                } else {
                    std::future::pending().await
                }
            };
            let check_now = tokio::select! {
                _ = check.tick() => true,
                e = async {
                    loop {
                        match events.recv().await {
                            Ok(e) if e.change.machine == Machine::DataPlane => return true,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                            Err(_) => return false,
                        }
                    }
                } => if e { false } else { return },
                _ = retry => false,
                _ = stop.wait_for(|s| *s) => return,
            };
            if check_now {
                self.check_versions().await;
            }
        }
    }
}
