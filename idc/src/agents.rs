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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sluice_model::Machine;
use sluice_model::dataplane::{Desired, NodeCircuit, NodeReport, NodeState, node_circuits};
use sluice_proto::v1::agent_client::AgentClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
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
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The channel to `node`'s agent at `url` (dialled on first use), with the call and
/// connect timeouts; over mutual TLS when `tls` is given, where the agent's certificate
/// must name its node.
pub fn endpoint(node: &str, url: &str, tls: Option<&TlsMaterial>) -> Result<Endpoint, String> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad address {url:?}: {e}"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.client(node))
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    Ok(ep)
}

#[derive(Clone)]
pub struct AgentDriver {
    inner: Arc<Inner>,
}

struct Inner {
    idc: Idc,
    cfg: AgentsConfig,
    /// Per node with an agent: the circuits it must carry now (`None` until first
    /// worked out, so a restarted IDC never sends an empty set by mistake). Each node's
    /// worker watches its own.
    wanted: BTreeMap<String, watch::Sender<Option<Vec<NodeCircuit>>>>,
    /// The last version handed out: versions only grow, also across a clock step back
    /// (an agent that answers with a higher one raises it).
    version: Mutex<u64>,
    /// Reservations being measured now (one measurement of a circuit at a time).
    verifying: Arc<Mutex<BTreeSet<String>>>,
}

/// The right to measure one reservation, until dropped.
pub(crate) struct Measuring {
    verifying: Arc<Mutex<BTreeSet<String>>>,
    id: String,
}

impl Drop for Measuring {
    fn drop(&mut self) {
        lock(&self.verifying).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one send to an agent ended.
enum Sent {
    /// It carries the set as `version`, but for the circuits it refused (id, why).
    Taken {
        version: u64,
        refused: Vec<(String, String)>,
    },
    /// It could not be reached, or did not take the set: why.
    Failed(String),
}

impl AgentDriver {
    pub fn new(idc: Idc, cfg: AgentsConfig) -> AgentDriver {
        let wanted = cfg
            .agents
            .keys()
            .map(|n| (n.clone(), watch::channel(None).0))
            .collect();
        AgentDriver {
            inner: Arc::new(Inner {
                idc,
                cfg,
                wanted,
                version: Mutex::new(0),
                verifying: Arc::new(Mutex::new(BTreeSet::new())),
            }),
        }
    }

    /// Every node's circuits now: those of the reservations whose data plane is active,
    /// each node's sorted by id.
    async fn desired_by_node(
        &self,
    ) -> Result<BTreeMap<String, Vec<NodeCircuit>>, sluice_model::Error> {
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
        let now = self.inner.idc.now();
        let mut out: BTreeMap<String, Vec<NodeCircuit>> = BTreeMap::new();
        // The stored flag may be stale right after a start (a circuit that ended while
        // the IDC was down, before the scheduler's first step): the window decides too.
        for r in active.iter().filter(|r| r.data_plane_should_be_active(now)) {
            let Some(hops) = node_circuits(topo, r) else {
                // Circuits across domains: their segments here are reservations of their own.
                continue;
            };
            for (node, c) in hops {
                out.entry(node).or_default().push(c);
            }
        }
        for circuits in out.values_mut() {
            circuits.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(out)
    }

    /// Hands every node's worker its set if it changed. False if the sets could not be
    /// worked out (tried again after [`RETRY`]).
    async fn publish(&self) -> bool {
        let mut desired = match self.desired_by_node().await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "cannot work out the nodes' circuits; trying again");
                return false;
            }
        };
        for (node, tx) in &self.inner.wanted {
            let set = desired.remove(node).unwrap_or_default();
            tx.send_if_modified(|cur| {
                if cur.as_ref() == Some(&set) {
                    return false;
                }
                *cur = Some(set);
                true
            });
        }
        true
    }

    fn next_version(&self) -> u64 {
        let mut v = lock(&self.inner.version);
        let now = self.inner.idc.now().timestamp_millis().max(0) as u64;
        *v = (*v + 1).max(now);
        *v
    }

    /// One node's worker: sends the node's set whenever it changes, again every
    /// [`RETRY`] while sending fails, and again when the agent is found with another
    /// version than it took (it restarted, or its node rebooted). One task per node, so
    /// an agent that hangs delays no other, and answers are recorded in order.
    async fn drive(
        self,
        node: String,
        url: String,
        mut wanted: watch::Receiver<Option<Vec<NodeCircuit>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut channel: Option<Channel> = None;
        // The version and the set the agent took last.
        let mut taken: Option<(u64, Vec<NodeCircuit>)> = None;
        let mut failing = false;
        let mut check = tokio::time::interval(self.inner.cfg.check_every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            let want = wanted.borrow_and_update().clone();
            if let Some(want) = want
                && (failing || taken.as_ref().is_none_or(|(_, t)| *t != want))
            {
                let version = self.next_version();
                let sent = self.send(&node, &url, &mut channel, version, &want).await;
                match &sent {
                    Sent::Failed(_) => {
                        metrics::counter!(crate::metrics::AGENT_ERRORS, "node" => node.clone(), "kind" => "not_taken")
                            .increment(1);
                    }
                    Sent::Taken { refused, .. } if !refused.is_empty() => {
                        metrics::counter!(crate::metrics::AGENT_ERRORS, "node" => node.clone(), "kind" => "refused")
                            .increment(refused.len() as u64);
                    }
                    Sent::Taken { .. } => {}
                }
                let recorded = self.record(&node, &want, &sent);
                if let Err(e) = &recorded {
                    warn!(node, error = %e, "the agent's answer not recorded; sending again");
                }
                (failing, taken) = match sent {
                    Sent::Taken { version, .. } if recorded.is_ok() => {
                        (false, Some((version, want)))
                    }
                    _ => (true, None),
                };
            }
            let retry = async {
                if failing {
                    tokio::time::sleep(RETRY).await
                } else {
                    std::future::pending().await
                }
            };
            let check_now = tokio::select! {
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
                _ = retry => false,
                _ = check.tick() => true,
                _ = stop.wait_for(|s| *s) => return,
            };
            if check_now
                && let Some((version, _)) = &taken
                && let Err(why) = self.check(&node, &url, &mut channel, *version).await
            {
                warn!(node, "{why}; sending its set again");
                taken = None;
            }
        }
    }

    fn client(
        &self,
        node: &str,
        url: &str,
        channel: &mut Option<Channel>,
    ) -> Result<AgentClient<Channel>, String> {
        if channel.is_none() {
            *channel = Some(endpoint(node, url, self.inner.cfg.tls.as_ref())?.connect_lazy());
        }
        Ok(AgentClient::new(channel.clone().expect("just made")))
    }

    /// Why a call to an agent failed, in the reservation's words; forgets the channel
    /// when the agent was not reached, so the next call dials anew.
    fn call_error(s: &tonic::Status, channel: &mut Option<Channel>) -> String {
        let e = sluice_proto::status::from_status(s);
        match s.code() {
            // tonic ends a call that ran out of time as Cancelled.
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
                *channel = None;
                format!(
                    "agent not reached: no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )
            }
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                *channel = None;
                format!("agent not reached: {}", e.message)
            }
            _ => format!("agent refused the set: {}", e.message),
        }
    }

    async fn send(
        &self,
        node: &str,
        url: &str,
        channel: &mut Option<Channel>,
        version: u64,
        want: &[NodeCircuit],
    ) -> Sent {
        let mut desired = Desired {
            version,
            circuits: want.to_vec(),
        };
        let mut client = match self.client(node, url, channel) {
            Ok(c) => c,
            Err(e) => return Sent::Failed(e),
        };
        // Once more, at once, if the agent is ahead of this IDC's versions (it took a
        // later one before this IDC's clock went back): with a version above its own.
        for attempt in 0..2 {
            let state = match client
                .apply(sluice_proto::agent::desired(node, &desired))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let why = Self::call_error(&s, channel);
                    warn!(node, error = %why, "trying again");
                    return Sent::Failed(why);
                }
            };
            if state.version > desired.version && attempt == 0 {
                {
                    let mut v = lock(&self.inner.version);
                    *v = (*v).max(state.version);
                }
                desired.version = self.next_version();
                continue;
            }
            if !state.error.is_empty() {
                warn!(node, error = %state.error, "agent could not apply the set; trying again");
                return Sent::Failed(format!("the agent could not apply it: {}", state.error));
            }
            if state.version != desired.version {
                return Sent::Failed(format!("the agent kept version {}", state.version));
            }
            info!(
                node,
                version = desired.version,
                circuits = desired.circuits.len(),
                refused = state.refused.len(),
                changes = state.changes,
                "agent applied the node's circuits"
            );
            return Sent::Taken {
                version: desired.version,
                refused: state
                    .refused
                    .into_iter()
                    .map(|r| (r.id, r.reason))
                    .collect(),
            };
        }
        Sent::Failed("the agent stays ahead of this IDC's versions".into())
    }

    /// Whether the agent still has `version`.
    async fn check(
        &self,
        node: &str,
        url: &str,
        channel: &mut Option<Channel>,
        version: u64,
    ) -> Result<(), String> {
        let mut client = self.client(node, url, channel)?;
        let has = client
            .state(sluice_proto::v1::AgentStateRequest {})
            .await
            .map_err(|s| Self::call_error(&s, channel))?
            .into_inner()
            .version;
        if has == version {
            Ok(())
        } else {
            Err(format!("agent has version {has}, not {version}"))
        }
    }

    /// Records with each reservation what `node`'s agent did with it: each circuit of
    /// `want` applied, refused or failed, and each one it had that is no longer wanted
    /// removed (or failed: it may still be there).
    fn record(&self, node: &str, want: &[NodeCircuit], sent: &Sent) -> Result<(), String> {
        let idc = &self.inner.idc;
        let had = idc
            .circuits_on_node(node)
            .map_err(|e| format!("cannot read the node's circuits: {e}"))?;
        let wanted: BTreeSet<&str> = want.iter().map(|c| c.id.as_str()).collect();
        let mut updates: Vec<NodeUpdate> = want
            .iter()
            .map(|c| {
                let (state, error) = match sent {
                    Sent::Taken { refused, .. } => match refused.iter().find(|(id, _)| *id == c.id)
                    {
                        Some((_, why)) => {
                            (NodeState::Failed, format!("refused by the agent: {why}"))
                        }
                        None => (NodeState::Applied, String::new()),
                    },
                    Sent::Failed(why) => (NodeState::Failed, why.clone()),
                };
                NodeUpdate {
                    reservation_id: c.id.clone(),
                    state,
                    error,
                }
            })
            .collect();
        for id in had.iter().filter(|id| !wanted.contains(id.as_str())) {
            updates.push(match sent {
                Sent::Taken { .. } => NodeUpdate {
                    reservation_id: id.clone(),
                    state: NodeState::Removed,
                    error: String::new(),
                },
                Sent::Failed(why) => NodeUpdate {
                    reservation_id: id.clone(),
                    state: NodeState::Failed,
                    error: format!("not removed yet: {why}"),
                },
            });
        }
        idc.record_node_states(node, &updates)
            .map_err(|e| e.to_string())
    }

    /// The right to measure `id` now; `None` while another measurement of it runs.
    pub(crate) fn begin_measuring(&self, id: &str) -> Option<Measuring> {
        lock(&self.inner.verifying)
            .insert(id.to_string())
            .then(|| Measuring {
                verifying: self.inner.verifying.clone(),
                id: id.to_string(),
            })
    }

    /// Whether this IDC drives an agent for `node`.
    pub(crate) fn drives(&self, node: &str) -> bool {
        self.inner.cfg.agents.contains_key(node)
    }

    pub(crate) fn idc(&self) -> &Idc {
        &self.inner.idc
    }

    /// A client for `node`'s agent, for calls that run longer than [`CALL_TIMEOUT`]
    /// (measurements): the caller bounds each call itself.
    pub(crate) fn long_client(&self, node: &str) -> Result<AgentClient<Channel>, String> {
        let url = self
            .inner
            .cfg
            .agents
            .get(node)
            .ok_or_else(|| format!("node {node} has no agent in this IDC's agents file"))?;
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("bad address {url:?}: {e}"))?
            .connect_timeout(CALL_TIMEOUT);
        if let Some(tls) = &self.inner.cfg.tls {
            ep = ep
                .tls_config(tls.client(node))
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        Ok(AgentClient::new(ep.connect_lazy()))
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

    /// Starts a worker per node, and hands them their sets at start and at every change
    /// of a data plane or of an active circuit's version (modify), until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut workers = JoinSet::new();
        for (node, url) in &self.inner.cfg.agents {
            let rx = self.inner.wanted[node].subscribe();
            workers.spawn(
                self.clone()
                    .drive(node.clone(), url.clone(), rx, stop.clone()),
            );
        }
        let mut events = self.inner.idc.subscribe();
        loop {
            let published = self.publish().await;
            let retry = async {
                if published {
                    std::future::pending().await
                } else {
                    tokio::time::sleep(RETRY).await
                }
            };
            tokio::select! {
                open = async {
                    loop {
                        match events.recv().await {
                            Ok(e) if matches!(e.change.machine, Machine::DataPlane | Machine::Version) => return true,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                            Err(_) => return false,
                        }
                    }
                } => if !open { break },
                _ = retry => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        // The workers end with `stop`; if the IDC went away instead, end them here.
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
}
