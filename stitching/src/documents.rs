//! Topology documents: what each domain publishes about itself (its end points, its
//! service demarcation points and whom they face), versioned and with an expiry, and
//! what a domain keeps of everyone's: the newest unexpired version of each, passed on to
//! its peers but never back where it came from, nor to the domain it describes (as NSI's
//! document distribution does). Pure: the IDC sends, receives and keeps the clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sluice_model::{Mbps, Stp, VlanSet};

/// An edge port circuits can start or end on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndPoint {
    pub stp: Stp,
    pub vlans: VlanSet,
    pub capacity: Mbps,
    /// Its node can change a circuit's VLAN.
    pub translates: bool,
}

/// A port of this domain that faces a port of another: where segments are stitched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demarcation {
    pub local: Stp,
    /// The port on the other side, in the other domain.
    pub remote: Stp,
    pub vlans: VlanSet,
    pub capacity: Mbps,
    /// Its node can change a circuit's VLAN (a border router rewriting at the hand-off).
    pub translates: bool,
    /// The cost of crossing here (the inter-domain link behind it); routes with the
    /// lowest total are tried first.
    pub metric: u32,
    /// What is free on this port (the lower of its two directions) over the document's
    /// horizon; outside the steps, nothing is claimed.
    pub free: Vec<FreeStep>,
}

/// Bandwidth free over `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeStep {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub free: Mbps,
}

impl Demarcation {
    /// Whether the summary allows `bw` over all of `[start, end)` (unknown times do).
    pub fn may_carry(&self, bw: Mbps, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        bw <= self.capacity
            && self
                .free
                .iter()
                .filter(|s| s.start < end && start < s.end)
                .all(|s| s.free >= bw)
    }
}

/// One domain's description of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDocument {
    pub domain: String,
    /// Where its IDC's federation service listens (`https://host:port`).
    pub url: String,
    /// Grows with every change the domain publishes; the highest wins.
    pub version: u64,
    pub expires_at: DateTime<Utc>,
    /// Every segment through it may change VLAN (each end point and demarcation also
    /// says whether its own node can).
    pub translates: bool,
    pub end_points: Vec<EndPoint>,
    pub demarcations: Vec<Demarcation>,
}

impl DomainDocument {
    /// Whether a segment from `ingress` to `egress` can change VLAN on the way.
    pub fn segment_translates(&self, ingress: &Stp, egress: &Stp) -> bool {
        let at = |stp: &Stp| {
            self.end_points
                .iter()
                .any(|e| e.stp == *stp && e.translates)
                || self
                    .demarcations
                    .iter()
                    .any(|m| m.local == *stp && m.translates)
        };
        self.translates || at(ingress) || at(egress)
    }
}

/// What became of a document offered to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Newer than what was kept: kept, and to be passed on to these peers.
    Accepted { flood_to: Vec<String> },
    /// Not newer than the version kept: dropped (this stops flooding loops).
    Stale,
    /// Already expired: dropped.
    Expired,
    /// A document about ourselves from someone else: dropped; only we speak for us.
    AboutUs,
}

#[derive(Debug, Clone)]
struct Kept {
    doc: DomainDocument,
    at: DateTime<Utc>,
    from: Option<String>,
}

/// The documents a domain knows, its own included.
#[derive(Debug, Clone)]
pub struct DocumentStore {
    own_domain: String,
    peers: Vec<String>,
    /// Each domain's newest document, when it came, and from which peer (None: ours).
    docs: BTreeMap<String, Kept>,
}

impl DocumentStore {
    /// A store for `own` (its own document), with the domains it peers with directly.
    pub fn new(own: DomainDocument, peers: Vec<String>, now: DateTime<Utc>) -> DocumentStore {
        let mut docs = BTreeMap::new();
        let domain = own.domain.clone();
        docs.insert(
            domain.clone(),
            Kept {
                doc: own,
                at: now,
                from: None,
            },
        );
        DocumentStore {
            own_domain: domain,
            peers,
            docs,
        }
    }

    /// A document that arrived from peer `from` (or, for our own, from nobody), kept at
    /// most `max_ttl` whatever its expiry says. Documents are not signed, so a domain's
    /// own word (`from` is the domain it describes) replaces what others passed on even
    /// at a lower version: a forged document lasts at most `max_ttl` unless renewed, and
    /// not at all once the domain speaks for itself.
    pub fn offer(
        &mut self,
        mut doc: DomainDocument,
        from: Option<&str>,
        now: DateTime<Utc>,
        max_ttl: chrono::TimeDelta,
    ) -> Offer {
        if doc.expires_at <= now {
            return Offer::Expired;
        }
        doc.expires_at = doc.expires_at.min(now + max_ttl);
        if doc.domain == self.own_domain && from.is_some() {
            return Offer::AboutUs;
        }
        let first_hand = from == Some(doc.domain.as_str());
        if let Some(kept) = self.docs.get(&doc.domain)
            && kept.doc.expires_at > now
            && (kept.doc.version >= doc.version
                && !(first_hand && kept.from.as_deref() != Some(doc.domain.as_str())))
        {
            return Offer::Stale;
        }
        let flood_to = self
            .peers
            .iter()
            .filter(|p| Some(p.as_str()) != from && **p != doc.domain)
            .cloned()
            .collect();
        let from = from.map(str::to_string);
        self.docs
            .insert(doc.domain.clone(), Kept { doc, at: now, from });
        Offer::Accepted { flood_to }
    }

    /// Drops what has expired at `now`; returns the domains forgotten.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let gone: Vec<String> = self
            .docs
            .iter()
            .filter(|(d, k)| **d != self.own_domain && k.doc.expires_at <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for d in &gone {
            self.docs.remove(d);
        }
        gone
    }

    /// The documents known, with when each was received.
    pub fn known(&self) -> impl Iterator<Item = (&DomainDocument, DateTime<Utc>)> {
        self.docs.values().map(|k| (&k.doc, k.at))
    }

    pub fn get(&self, domain: &str) -> Option<&DomainDocument> {
        self.docs.get(domain).map(|k| &k.doc)
    }

    /// What to give peer `to` when it pulls: everything known but its own document
    /// and what came from it (never back where it came from).
    pub fn for_peer<'a>(&'a self, to: &'a str) -> impl Iterator<Item = &'a DomainDocument> + 'a {
        self.docs
            .values()
            .filter(move |k| k.doc.domain != to && k.from.as_deref() != Some(to))
            .map(|k| &k.doc)
    }

    /// Replaces our own document (a new version of it).
    pub fn publish(&mut self, own: DomainDocument, now: DateTime<Utc>) {
        debug_assert_eq!(own.domain, self.own_domain);
        self.docs.insert(
            own.domain.clone(),
            Kept {
                doc: own,
                at: now,
                from: None,
            },
        );
    }

    pub fn own_domain(&self) -> &str {
        &self.own_domain
    }

    pub fn peers(&self) -> &[String] {
        &self.peers
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The longest a test store keeps any document.
    const TTL: chrono::TimeDelta = chrono::TimeDelta::seconds(10_000);

    pub fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn stp(s: &str) -> Stp {
        Stp::parse(s).unwrap()
    }

    /// A domain with one end point `d:n:edge` and demarcations to `(peer, local port,
    /// remote port)`.
    pub fn doc(
        domain: &str,
        version: u64,
        expires: i64,
        peers: &[(&str, &str, &str)],
    ) -> DomainDocument {
        DomainDocument {
            domain: domain.into(),
            url: format!("https://{domain}.example:4443"),
            version,
            expires_at: t(expires),
            translates: false,
            end_points: vec![EndPoint {
                stp: stp(&format!("{domain}:n:edge")),
                vlans: VlanSet::parse("100-199").unwrap(),
                capacity: Mbps(10_000),
                translates: false,
            }],
            demarcations: peers
                .iter()
                .map(|(peer, local, remote)| Demarcation {
                    local: stp(&format!("{domain}:n:{local}")),
                    remote: stp(&format!("{peer}:n:{remote}")),
                    vlans: VlanSet::parse("100-199").unwrap(),
                    capacity: Mbps(10_000),
                    translates: false,
                    metric: 1,
                    free: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_newest_version_is_kept_and_passed_on_but_never_back() {
        // b peers with a and c; a document about a comes in from a.
        let mut b = DocumentStore::new(doc("b", 1, 1000, &[]), vec!["a".into(), "c".into()], t(0));
        assert_eq!(
            b.offer(doc("a", 3, 1000, &[]), Some("a"), t(1), TTL),
            Offer::Accepted {
                flood_to: vec!["c".into()]
            }
        );
        // The same version again (say, back from c): dropped, so flooding ends.
        assert_eq!(
            b.offer(doc("a", 3, 1000, &[]), Some("c"), t(2), TTL),
            Offer::Stale
        );
        assert_eq!(
            b.offer(doc("a", 2, 1000, &[]), Some("c"), t(2), TTL),
            Offer::Stale
        );
        // A newer one that came through c goes on to a's other peers, not to a itself.
        assert_eq!(
            b.offer(doc("a", 4, 1000, &[]), Some("c"), t(3), TTL),
            Offer::Accepted { flood_to: vec![] }
        );
        assert_eq!(b.get("a").unwrap().version, 4);
        // Someone else's word about b is not taken.
        assert_eq!(
            b.offer(doc("b", 9, 1000, &[]), Some("a"), t(4), TTL),
            Offer::AboutUs
        );
        assert_eq!(b.get("b").unwrap().version, 1);
        // Pulled by a: b's own, but not a's (its own) ; pulled by c: a's came through c
        // last (version 4), so c gets only b's.
        let to_a: Vec<&str> = b.for_peer("a").map(|d| d.domain.as_str()).collect();
        assert_eq!(to_a, ["b"]);
        let to_c: Vec<&str> = b.for_peer("c").map(|d| d.domain.as_str()).collect();
        assert_eq!(to_c, ["b"]);
        // A third peer gets both.
        let to_x: Vec<&str> = b.for_peer("x").map(|d| d.domain.as_str()).collect();
        assert_eq!(to_x, ["a", "b"]);
    }

    #[test]
    fn expired_documents_are_refused_and_forgotten() {
        let mut b = DocumentStore::new(doc("b", 1, 100, &[]), vec!["a".into()], t(0));
        assert_eq!(
            b.offer(doc("a", 1, 5, &[]), Some("a"), t(10), TTL),
            Offer::Expired
        );
        assert!(matches!(
            b.offer(doc("a", 1, 50, &[]), Some("a"), t(10), TTL),
            Offer::Accepted { .. }
        ));
        assert_eq!(b.expire(t(60)), vec!["a".to_string()]);
        assert!(b.get("a").is_none());
        // Our own document is never expired away by the store: we republish it.
        assert!(b.get("b").is_some());
        // Once expired, even an old version is welcome again.
        assert!(matches!(
            b.offer(doc("a", 1, 200, &[]), Some("a"), t(61), TTL),
            Offer::Accepted { .. }
        ));
    }

    #[test]
    fn a_forged_document_expires_soon_and_yields_to_the_domains_own_word() {
        let mut b = DocumentStore::new(
            doc("b", 1, 100_000, &[]),
            vec!["a".into(), "c".into()],
            t(0),
        );
        // c passes on a document about a with a huge version and a far expiry.
        let mut forged = doc("a", u64::MAX, 1_000_000_000, &[]);
        forged.url = "https://evil.example:1".into();
        assert!(matches!(
            b.offer(forged, Some("c"), t(1), TTL),
            Offer::Accepted { .. }
        ));
        // Kept no longer than the longest allowed.
        assert_eq!(b.get("a").unwrap().expires_at, t(1) + TTL);
        // A second-hand lower version is stale...
        assert_eq!(
            b.offer(doc("a", 5, 1000, &[]), Some("c"), t(2), TTL),
            Offer::Stale
        );
        // ... but a's own word replaces it, whatever its version.
        assert!(matches!(
            b.offer(doc("a", 5, 1000, &[]), Some("a"), t(2), TTL),
            Offer::Accepted { .. }
        ));
        assert_eq!(b.get("a").unwrap().version, 5);
        // Documents are not signed: a higher version from elsewhere still replaces it, but
        // only until a speaks again.
        assert!(matches!(
            b.offer(doc("a", 9, 1000, &[]), Some("c"), t(3), TTL),
            Offer::Accepted { .. }
        ));
        assert!(matches!(
            b.offer(doc("a", 6, 1000, &[]), Some("a"), t(4), TTL),
            Offer::Accepted { .. }
        ));
        assert_eq!(b.get("a").unwrap().version, 6);
    }
}
