//! Federation: this IDC among the IDCs of other domains (NSI CS 2.x, tree model).
//!
//! - **Documents.** Each domain publishes a versioned, expiring description of itself
//!   (end points, demarcation points and whom they face, label ranges, free capacity at
//!   its borders). Direct peers pull each other's known documents and push what they
//!   newly accept, never back where it came from, so every domain learns the domains it
//!   is not peered with ([`sluice_stitching::DocumentStore`] decides; this module moves
//!   the bytes).
//! - **Aggregation** ([`aggregate`]): a request whose end points lie in other domains
//!   makes this IDC the circuit's aggregator. It ranks domain-level routes, agrees the
//!   VLAN at every demarcation point, asks every domain on the route for its segment in
//!   parallel and commits all or aborts all.
//! - **Serving peers** ([`service`]): over mutual TLS only; the caller's domain is the
//!   common name of its certificate, and this domain's policy for that peer decides.
//! - **Notifications**: every state change of a segment held for another domain's
//!   circuit is sent to that domain, which records it on the circuit for its watchers.

pub mod config;
pub mod tls;

mod aggregate;
mod series;
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::{Error, Mbps, TimeWindow};
use sluice_proto::v1;
use sluice_proto::v1::federation_client::FederationClient;
use sluice_stitching::{Demarcation, DocumentStore, DomainDocument, EndPoint, FreeStep, Offer};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

pub use aggregate::{Op, SegmentView};
pub use config::{FederationConfig, PeerConfig, Policy};
pub use series::CircuitSeries;
pub use service::FederationApi;
pub use tls::{DevCa, TlsMaterial};

use crate::Idc;

/// The longest any document from a peer is kept, whatever its expiry says (documents
/// are not signed: this bounds how long a forged one can last).
pub const MAX_DOCUMENT_TTL: TimeDelta = TimeDelta::days(1);

/// How far ahead a document's free-capacity summary looks.
const SUMMARY_HORIZON: TimeDelta = TimeDelta::days(7);

/// The owner recorded on a segment held for another domain's circuit.
pub fn segment_owner(aggregator: &str) -> String {
    format!("peer:{aggregator}")
}

/// The aggregator a segment's owner names, if it is a segment.
pub fn aggregator_of(owner: &str) -> Option<&str> {
    owner.strip_prefix("peer:")
}

/// What a federated IDC is started with (the config file, certificates loaded).
#[derive(Debug, Clone)]
pub struct FederationSetup {
    pub listen: SocketAddr,
    /// What peers are told to call; `None`: `https://` + the bound address.
    pub url: Option<String>,
    pub tls: TlsMaterial,
    pub document_ttl: TimeDelta,
    pub refresh: Duration,
    pub call_timeout: Duration,
    pub peers: Vec<PeerConfig>,
    /// A listener already bound to `listen`, used on the first start instead of binding
    /// again: the test harness binds every domain's before starting any, so each knows
    /// its peers' addresses and no other socket can take one meanwhile.
    pub prebound: Option<Arc<Mutex<Option<std::net::TcpListener>>>>,
}

impl FederationSetup {
    pub fn from_config(c: &FederationConfig) -> Result<FederationSetup, String> {
        Ok(FederationSetup {
            listen: c.listen,
            url: c.url.clone(),
            tls: c.tls.load().map_err(|e| e.to_string())?,
            document_ttl: c.document_ttl,
            refresh: c.refresh,
            call_timeout: c.call_timeout,
            peers: c.peers.clone(),
            prebound: None,
        })
    }
}

/// One IDC's federation state; cheap to clone.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Shared>,
}

struct Shared {
    idc: Idc,
    domain: String,
    url: String,
    tls: TlsMaterial,
    peers: Vec<PeerConfig>,
    document_ttl: TimeDelta,
    call_timeout: Duration,
    docs: Mutex<DocumentStore>,
    /// The last version of our own document, so every new one is higher.
    own_version: Mutex<u64>,
    channels: Mutex<HashMap<String, (String, Channel)>>,
    /// Per aggregator domain, the queue of notifications to send it (in order).
    outbox: Mutex<HashMap<String, mpsc::UnboundedSender<v1::Event>>>,
    /// Reservation id → the domain whose circuit it is a segment of (None: none).
    segment_of: Mutex<HashMap<String, Option<String>>>,
    /// The node agents this IDC drives, if any (for the status of its segments).
    agents: std::sync::OnceLock<crate::agents::AgentDriver>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Federation {
    /// `url` is where our federation service is reachable.
    pub fn new(idc: Idc, setup: &FederationSetup, url: String) -> Federation {
        let domain = idc.topology().domain.clone();
        let direct: Vec<String> = setup
            .peers
            .iter()
            .filter(|p| p.url.is_some())
            .map(|p| p.domain.clone())
            .collect();
        let now = idc.now();
        let fed = Federation {
            inner: Arc::new(Shared {
                domain: domain.clone(),
                url,
                tls: setup.tls.clone(),
                peers: setup.peers.clone(),
                document_ttl: setup.document_ttl,
                call_timeout: setup.call_timeout,
                // A placeholder until the first document is built just below.
                docs: Mutex::new(DocumentStore::new(
                    DomainDocument {
                        domain,
                        url: String::new(),
                        version: 0,
                        expires_at: now,
                        translates: false,
                        end_points: Vec::new(),
                        demarcations: Vec::new(),
                    },
                    direct,
                    now,
                )),
                own_version: Mutex::new(0),
                channels: Mutex::new(HashMap::new()),
                outbox: Mutex::new(HashMap::new()),
                segment_of: Mutex::new(HashMap::new()),
                agents: std::sync::OnceLock::new(),
                idc,
            }),
        };
        fed.republish();
        fed
    }

    pub fn idc(&self) -> &Idc {
        &self.inner.idc
    }

    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// Tells the federation which agents this IDC drives (set once, at start).
    pub fn driving(&self, agents: crate::agents::AgentDriver) {
        let _ = self.inner.agents.set(agents);
    }

    pub fn agents(&self) -> Option<&crate::agents::AgentDriver> {
        self.inner.agents.get()
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn call_timeout(&self) -> Duration {
        self.inner.call_timeout
    }

    /// This domain's policy for `peer`, if it is listed at all.
    pub fn policy(&self, peer: &str) -> Option<&Policy> {
        self.inner
            .peers
            .iter()
            .find(|p| p.domain == peer)
            .map(|p| &p.policy)
    }

    /// Our own document as of now.
    fn own_document(&self) -> DomainDocument {
        let idc = &self.inner.idc;
        let topo = idc.topology();
        let now = idc.now();
        let horizon = TimeWindow::new(now, now + SUMMARY_HORIZON).expect("a week is a window");
        let mut end_points = Vec::new();
        let mut demarcations = Vec::new();
        for (pi, port) in topo.ports().iter().enumerate() {
            if port.link.is_some() {
                continue;
            }
            let stp = topo.stp(pi);
            match &port.peer {
                None => end_points.push(EndPoint {
                    stp,
                    vlans: port.vlans.clone(),
                    capacity: port.capacity,
                    translates: topo.node(port.node).vlan_translation,
                }),
                Some(peer) => {
                    let free = idc
                        .port_free_spans(&stp, &horizon)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| FreeStep {
                            start: s.start,
                            end: s.end,
                            free: s.free,
                        })
                        .collect();
                    demarcations.push(Demarcation {
                        local: stp,
                        remote: peer.stp.clone(),
                        vlans: port.vlans.clone(),
                        capacity: port.capacity,
                        translates: topo.node(port.node).vlan_translation,
                        metric: peer.metric,
                        free,
                    })
                }
            }
        }
        // Translation happens at a node: claim it only if every border node can.
        let translates = topo
            .ports()
            .iter()
            .all(|p| p.link.is_some() || topo.node(p.node).vlan_translation);
        let version = {
            let mut v = lock(&self.inner.own_version);
            *v = (*v + 1).max(now.timestamp_millis().max(0) as u64);
            *v
        };
        DomainDocument {
            domain: self.inner.domain.clone(),
            url: self.inner.url.clone(),
            version,
            expires_at: now + self.inner.document_ttl,
            translates,
            end_points,
            demarcations,
        }
    }

    /// A new version of our own document (fresh expiry and free-capacity summary).
    pub fn republish(&self) {
        let doc = self.own_document();
        let now = self.inner.idc.now();
        lock(&self.inner.docs).publish(doc, now);
    }

    /// The documents known now (expired ones dropped), with when each arrived; our own
    /// first.
    pub fn known_documents(&self) -> Vec<(DomainDocument, DateTime<Utc>)> {
        let now = self.inner.idc.now();
        let mut docs = lock(&self.inner.docs);
        docs.expire(now);
        let mut out: Vec<_> = docs.known().map(|(d, at)| (d.clone(), at)).collect();
        out.sort_by_key(|(d, _)| (d.domain != self.inner.domain, d.domain.clone()));
        out
    }

    pub fn is_direct_peer(&self, domain: &str) -> bool {
        self.inner
            .peers
            .iter()
            .any(|p| p.domain == domain && p.url.is_some())
    }

    /// Takes documents that came from `from` (None: found by our own pull of that peer,
    /// named by the caller); returns how many were new, and passes those on.
    fn take_documents(&self, docs: Vec<DomainDocument>, from: &str) -> u32 {
        let now = self.inner.idc.now();
        let mut accepted = 0;
        let mut flood: HashMap<String, Vec<DomainDocument>> = HashMap::new();
        {
            let mut store = lock(&self.inner.docs);
            for d in docs {
                match store.offer(d.clone(), Some(from), now, MAX_DOCUMENT_TTL) {
                    Offer::Accepted { flood_to } => {
                        accepted += 1;
                        debug!(peer.id = from, document = %d.domain, version = d.version, "document accepted");
                        for p in flood_to {
                            flood.entry(p).or_default().push(d.clone());
                        }
                    }
                    Offer::Stale | Offer::Expired | Offer::AboutUs => {}
                }
            }
        }
        for (peer, docs) in flood {
            let fed = self.clone();
            tokio::spawn(async move {
                if let Err(e) = fed.push_documents(&peer, docs).await {
                    debug!(peer.id = %peer, error = %e, "could not pass documents on");
                }
            });
        }
        accepted
    }

    async fn push_documents(&self, peer: &str, docs: Vec<DomainDocument>) -> Result<(), Error> {
        let mut client = self.client(peer)?;
        let req = v1::Documents {
            documents: docs
                .iter()
                .map(sluice_proto::federation::document)
                .collect(),
        };
        client
            .push_documents(self.request(req))
            .await
            .map_err(|s| sluice_proto::status::from_status(&s))?;
        Ok(())
    }

    /// One round of topology exchange: republish ours, pull every direct peer's.
    /// Returns how many documents were new.
    pub async fn refresh(&self) -> u32 {
        self.republish();
        // Bounded, so that unreachable domains never hold up the document exchange
        // (what is left is tried again next round).
        let _ = tokio::time::timeout(self.inner.call_timeout * 2, self.finish_terminations()).await;
        let peers: Vec<String> = self
            .inner
            .peers
            .iter()
            .filter(|p| p.url.is_some())
            .map(|p| p.domain.clone())
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for peer in peers {
            let fed = self.clone();
            set.spawn(async move {
                let got = fed.pull(&peer).await;
                (peer, got)
            });
        }
        let mut accepted = 0;
        while let Some(done) = set.join_next().await {
            match done {
                Ok((peer, Ok(docs))) => accepted += self.take_documents(docs, &peer),
                Ok((peer, Err(e))) => {
                    debug!(peer.id = %peer, error = %e, "document pull failed")
                }
                Err(e) => warn!(error = %e, "document pull panicked"),
            }
        }
        accepted
    }

    async fn pull(&self, peer: &str) -> Result<Vec<DomainDocument>, Error> {
        let mut client = self.client(peer)?;
        let reply = client
            .pull_documents(self.request(v1::PullDocumentsRequest {}))
            .await
            .map_err(|s| sluice_proto::status::from_status(&s))?
            .into_inner();
        let mut docs = Vec::with_capacity(reply.documents.len());
        for (i, d) in reply.documents.iter().enumerate() {
            match sluice_proto::federation::document_from_wire(d) {
                Ok(d) => docs.push(d),
                Err(e) => {
                    warn!(peer.id = %peer, index = i, error = %e, "bad document from peer dropped")
                }
            }
        }
        Ok(docs)
    }

    /// Pulls and republishes every `every` until `stop`.
    pub async fn run_exchange(self, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let accepted = self.refresh().await;
            if accepted > 0 {
                info!(domain.id = %self.inner.domain, accepted, "topology documents updated");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// A request with the per-call deadline.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.inner.call_timeout);
        r
    }

    /// The URL of `domain`'s federation service: configured, or from its document.
    fn url_of(&self, domain: &str) -> Option<String> {
        self.inner
            .peers
            .iter()
            .find(|p| p.domain == domain)
            .and_then(|p| p.url.clone())
            .or_else(|| {
                lock(&self.inner.docs)
                    .get(domain)
                    .map(|d| d.url.clone())
                    .filter(|u| !u.is_empty())
            })
    }

    /// A client for `domain` over mutual TLS (its certificate must name it); the
    /// connection is made on first use and kept.
    fn client(&self, domain: &str) -> Result<FederationClient<Channel>, Error> {
        let url = self.url_of(domain).ok_or_else(|| {
            Error::internal(format!(
                "no address for {domain}: not a configured peer and no document from it"
            ))
        })?;
        // Never in clear text, whatever a document says: tonic would connect without
        // TLS to an http:// address.
        if !url.starts_with("https://") {
            return Err(Error::internal(format!(
                "{domain}'s address {url:?} is not https://; peers talk over mutual TLS only"
            )));
        }
        let mut channels = lock(&self.inner.channels);
        if let Some((u, ch)) = channels.get(domain)
            && *u == url
        {
            return Ok(FederationClient::new(ch.clone()));
        }
        let ch = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::internal(format!("{domain}: bad address {url:?}: {e}")))?
            .tls_config(self.inner.tls.client(domain))
            .map_err(|e| Error::internal(format!("{domain}: TLS settings: {e}")))?
            .connect_timeout(self.inner.call_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(domain.to_string(), (url, ch.clone()));
        Ok(FederationClient::new(ch))
    }

    /// Forgets the connection to `domain` (after it failed), so the next call dials anew.
    fn forget(&self, domain: &str) {
        lock(&self.inner.channels).remove(domain);
    }

    /// Sends every state change of a segment held here for another domain's circuit to
    /// that domain, in order, until `stop`.
    pub async fn run_notifier(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut events = self.inner.idc.subscribe();
        loop {
            let e = tokio::select! {
                e = events.recv() => e,
                _ = stop.wait_for(|s| *s) => {
                    // Ends the per-aggregator senders: their tasks finish once the queue
                    // is empty.
                    lock(&self.inner.outbox).clear();
                    return;
                }
            };
            let e = match e {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "segment notifications lagged; aggregators can query"
                    );
                    continue;
                }
                Err(_) => return,
            };
            let Some(aggregator) = self.aggregator_for(&e.reservation_id).await else {
                continue;
            };
            let wire = sluice_proto::convert::event(e.seq, &e.reservation_id, &e.change);
            if aggregator == self.inner.domain {
                self.on_notify(&aggregator, &wire);
            } else {
                self.enqueue(&aggregator, wire);
            }
        }
    }

    async fn aggregator_for(&self, id: &str) -> Option<String> {
        if let Some(known) = lock(&self.inner.segment_of).get(id) {
            return known.clone();
        }
        let r = self.inner.idc.get(id).await.ok()?;
        let agg = aggregator_of(&r.owner).map(str::to_string);
        lock(&self.inner.segment_of).insert(id.to_string(), agg.clone());
        agg
    }

    fn enqueue(&self, aggregator: &str, e: v1::Event) {
        let mut outbox = lock(&self.inner.outbox);
        let tx = outbox.entry(aggregator.to_string()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<v1::Event>();
            let fed = self.clone();
            let to = aggregator.to_string();
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    if let Err(e) = fed.send_events(&to, batch).await {
                        // The aggregator reads the states afresh on every query.
                        debug!(peer.id = %to, error = %e, "notification not delivered");
                    }
                }
            });
            tx
        });
        let _ = tx.send(e);
    }

    async fn send_events(&self, to: &str, events: Vec<v1::Event>) -> Result<(), Error> {
        let mut client = self.client(to)?;
        client
            .notify(self.request(v1::SegmentEvents { events }))
            .await
            .map_err(|s| sluice_proto::status::from_status(&s))?;
        Ok(())
    }

    /// A state change that `from` reports for one of its segments of our circuits:
    /// recorded on the circuit (machine "segment") with the segment's new state.
    fn on_notify(&self, from: &str, e: &v1::Event) {
        let idc = &self.inner.idc;
        let Ok(Some((circuit, index))) = idc.circuit_of(from, &e.reservation_id) else {
            return;
        };
        let Ok(segs) = idc.segments(&circuit) else {
            return;
        };
        let Some(seg) = segs.into_iter().find(|s| s.index == index) else {
            return;
        };
        let at =
            e.at.as_ref()
                .and_then(|t| sluice_proto::convert::from_timestamp(t, "at").ok())
                .unwrap_or_else(|| idc.now());
        if e.machine == sluice_model::Machine::Node.as_str() {
            // A node of that domain's data plane: changes none of the segment's states
            // (so the segment's row is left alone), but the circuit's watchers see it.
            let change = sluice_model::Change {
                machine: sluice_model::Machine::Node,
                from: e.from.clone(),
                to: e.to.clone(),
                effective_at: at,
                detail: format!("segment {} in {from}: {}", index + 1, e.detail),
            };
            if let Err(err) = idc.record_events(&circuit, &[change]) {
                warn!(reservation.id = %circuit, error = %err, "node notification not recorded");
            }
            return;
        }
        let mut states = seg.states;
        if !aggregate::apply_state_word(&mut states, &e.machine, &e.to) {
            return;
        }
        let change = sluice_model::Change {
            machine: sluice_model::Machine::Segment,
            from: e.from.clone(),
            to: e.to.clone(),
            effective_at: at,
            detail: format!(
                "segment {} in {from}: {} {} → {}",
                index + 1,
                e.machine,
                e.from,
                e.to
            ),
        };
        let summary = if e.machine == "reservation" && e.from == "ReserveAborting" {
            "aborted"
        } else {
            sluice_proto::convert::segment_summary(&states)
        };
        if let Err(err) = idc.update_segment(&circuit, index, states, summary, &[change]) {
            warn!(reservation.id = %circuit, error = %err, "segment notification not recorded");
        }
    }
}

/// A bandwidth both directions of a request need at a border.
fn border_bw(c: &sluice_model::Criteria) -> Mbps {
    c.bw.max(c.bw_reverse.unwrap_or(c.bw))
}
