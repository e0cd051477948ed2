//! The federation settings of one IDC (a TOML file, `sluice serve --federation F`): where
//! its federation service listens, its certificates, and for each peer domain its
//! address and what it may ask for.
//!
//! ```toml
//! listen = "127.0.0.1:4443"
//! # What peers are told to call (default: https://<listen>).
//! url = "https://127.0.0.1:4443"
//! ca = "certs/ca.pem"            # paths relative to this file
//! cert = "certs/garr.pem"
//! key = "certs/garr.key"
//! document_ttl_s = 600           # how long our topology document stays valid
//! refresh_s = 20                 # how often documents are pulled and ours republished
//! call_timeout_ms = 5000         # a peer that has not answered by then has failed
//!
//! [[peer]]
//! domain = "geant"
//! url = "https://127.0.0.1:4444" # a direct peer: documents are exchanged with it
//! max_mbps = 10000               # the most one segment may ask for
//! max_duration_s = 31536000      # the longest window
//! ports = ["it:xe-9/0/0"]        # node:port it may use (empty: any)
//!
//! [[peer]]
//! domain = "internet2"           # no url: may request segments, not peered for documents
//! may_request = true
//! ```
//!
//! A domain not listed may do nothing here (00302).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use serde::Deserialize;
use sluice_model::{Criteria, Error, ErrorCode, Mbps};

use super::tls::TlsFiles;

#[derive(Debug, Clone, PartialEq)]
pub struct FederationConfig {
    pub listen: SocketAddr,
    pub url: Option<String>,
    pub tls: TlsFiles,
    pub document_ttl: TimeDelta,
    pub refresh: Duration,
    pub call_timeout: Duration,
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub domain: String,
    /// Set for a direct peer: documents are pulled from and pushed to it.
    pub url: Option<String>,
    pub policy: Policy,
}

/// What a peer domain may ask of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub may_request: bool,
    pub max_bw: Option<Mbps>,
    pub max_duration: Option<TimeDelta>,
    /// `node:port` of this domain the peer's segments may start or end on (empty: any).
    pub ports: Vec<String>,
    /// How much of its segments' status the peer may see (`status = "full"`,
    /// `"states"` or `"none"`; default full).
    pub status: sluice_model::StatusShare,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            may_request: true,
            max_bw: None,
            max_duration: None,
            ports: Vec::new(),
            status: sluice_model::StatusShare::Full,
        }
    }
}

pub const DEFAULT_DOCUMENT_TTL: TimeDelta = TimeDelta::seconds(600);
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20);
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn unauthorized(field: &str, message: String) -> Error {
    Error::field(ErrorCode::Unauthorized, field, message)
}

impl Policy {
    /// Whether `peer` may hold a segment with these criteria here (00302 naming the
    /// field that is over the limit if not).
    pub fn check(&self, peer: &str, c: &Criteria) -> Result<(), Error> {
        if !self.may_request {
            return Err(unauthorized(
                "peer",
                format!("{peer} may not request segments here"),
            ));
        }
        if let Some(max) = self.max_bw {
            let asked = c.bw.max(c.bw_reverse.unwrap_or(c.bw));
            if asked > max {
                return Err(unauthorized(
                    "capacity_mbps",
                    format!(
                        "{peer} may ask for at most {} Mb/s here, not {}",
                        max.0, asked.0
                    ),
                ));
            }
        }
        if let Some(max) = self.max_duration {
            let asked = c.window.end - c.window.start;
            if asked > max {
                return Err(unauthorized(
                    "end",
                    format!(
                        "{peer} may book at most {} s at a time here, not {} s",
                        max.num_seconds(),
                        asked.num_seconds()
                    ),
                ));
            }
        }
        if !self.ports.is_empty() {
            for (field, end) in [("src", &c.src), ("dst", &c.dst)] {
                let local = end.stp.local();
                if !self.ports.contains(&local) {
                    return Err(unauthorized(
                        field,
                        format!("{peer} may not use port {local} here"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: SocketAddr,
    url: Option<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    document_ttl_s: Option<u32>,
    refresh_s: Option<u32>,
    call_timeout_ms: Option<u32>,
    #[serde(default)]
    peer: Vec<PeerFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile {
    domain: String,
    url: Option<String>,
    may_request: Option<bool>,
    max_mbps: Option<u64>,
    max_duration_s: Option<u32>,
    #[serde(default)]
    ports: Vec<String>,
    status: Option<String>,
}

impl FederationConfig {
    pub fn load(path: &Path) -> Result<FederationConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        FederationConfig::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text; relative certificate paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<FederationConfig, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(u) = &f.url
            && !u.starts_with("https://")
        {
            return Err(format!(
                "url: {u:?} must start with https:// (peers talk over mutual TLS)"
            ));
        }
        let mut peers: Vec<PeerConfig> = Vec::with_capacity(f.peer.len());
        for (i, p) in f.peer.into_iter().enumerate() {
            if p.domain.is_empty() {
                return Err(format!("peer[{i}].domain is empty"));
            }
            if peers.iter().any(|q| q.domain == p.domain) {
                return Err(format!("peer[{i}]: {} is listed twice", p.domain));
            }
            if let Some(u) = &p.url
                && !u.starts_with("https://")
            {
                return Err(format!(
                    "peer[{i}].url: {u:?} must start with https:// (peers talk over mutual TLS)"
                ));
            }
            let status = match &p.status {
                None => sluice_model::StatusShare::Full,
                Some(s) => sluice_model::StatusShare::parse(s).ok_or_else(|| {
                    format!("peer[{i}].status: {s:?} is not full, states or none")
                })?,
            };
            peers.push(PeerConfig {
                domain: p.domain,
                url: p.url,
                policy: Policy {
                    may_request: p.may_request.unwrap_or(true),
                    max_bw: p.max_mbps.map(Mbps),
                    max_duration: p.max_duration_s.map(|s| TimeDelta::seconds(s.into())),
                    ports: p.ports,
                    status,
                },
            });
        }
        Ok(FederationConfig {
            listen: f.listen,
            url: f.url,
            tls: TlsFiles {
                ca: base.join(f.ca),
                cert: base.join(f.cert),
                key: base.join(f.key),
            },
            document_ttl: f
                .document_ttl_s
                .map_or(DEFAULT_DOCUMENT_TTL, |s| TimeDelta::seconds(s.into())),
            refresh: f
                .refresh_s
                .map_or(DEFAULT_REFRESH, |s| Duration::from_secs(s.into())),
            call_timeout: f
                .call_timeout_ms
                .map_or(DEFAULT_CALL_TIMEOUT, |ms| Duration::from_millis(ms.into())),
            peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers_with_their_policy_and_refuses_what_is_wrong() {
        let c = FederationConfig::parse(
            r#"
            listen = "127.0.0.1:4443"
            ca = "certs/ca.pem"
            cert = "certs/garr.pem"
            key = "/abs/garr.key"
            [[peer]]
            domain = "geant"
            url = "https://127.0.0.1:4444"
            max_mbps = 5000
            ports = ["mi-1:xe-9/0/0"]
            [[peer]]
            domain = "internet2"
            may_request = false
            status = "states"
            "#,
            Path::new("/etc/sluice"),
        )
        .unwrap();
        assert_eq!(c.tls.ca, Path::new("/etc/sluice/certs/ca.pem"));
        assert_eq!(c.tls.key, Path::new("/abs/garr.key"));
        assert_eq!(c.call_timeout, DEFAULT_CALL_TIMEOUT);
        assert_eq!(c.peers[0].policy.max_bw, Some(Mbps(5000)));
        assert!(!c.peers[1].policy.may_request);
        assert!(c.peers[1].url.is_none());
        assert_eq!(c.peers[0].policy.status, sluice_model::StatusShare::Full);
        assert_eq!(c.peers[1].policy.status, sluice_model::StatusShare::States);

        let bad = |text: &str| FederationConfig::parse(text, Path::new(".")).unwrap_err();
        let head = "listen = \"127.0.0.1:1\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        assert!(
            bad(&format!(
                "{head}[[peer]]\ndomain = \"x\"\nurl = \"http://x\"\n"
            ))
            .contains("https://")
        );
        assert!(
            bad(&format!(
                "{head}[[peer]]\ndomain = \"x\"\n[[peer]]\ndomain = \"x\"\n"
            ))
            .contains("twice")
        );
        assert!(bad(&format!("{head}colour = 1\n")).contains("colour"));
        assert!(
            bad(&format!(
                "{head}[[peer]]\ndomain = \"x\"\nstatus = \"some\"\n"
            ))
            .contains("peer[0].status")
        );
    }

    #[test]
    fn the_policy_names_what_is_over_the_limit() {
        use sluice_model::{Ero, StpRequest, TimeWindow};
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let c = Criteria {
            src: StpRequest::parse("garr:mi-1:xe-9/0/0").unwrap(),
            dst: StpRequest::parse("garr:rm:xe-0/0/0").unwrap(),
            bw: Mbps(2000),
            bw_reverse: None,
            window: TimeWindow::new(t(0), t(7200)).unwrap(),
            ero: Ero::default(),
            description: String::new(),
            auto_provision: true,
        };
        let field = |p: Policy| p.check("geant", &c).unwrap_err().field.unwrap();
        assert!(Policy::default().check("geant", &c).is_ok());
        let p = Policy {
            max_bw: Some(Mbps(1000)),
            ..Policy::default()
        };
        assert_eq!(field(p), "capacity_mbps");
        let p = Policy {
            max_duration: Some(TimeDelta::hours(1)),
            ..Policy::default()
        };
        assert_eq!(field(p), "end");
        let p = Policy {
            ports: vec!["mi-1:xe-9/0/0".into()],
            ..Policy::default()
        };
        assert_eq!(field(p), "dst");
        let p = Policy {
            may_request: false,
            ..Policy::default()
        };
        let e = p.check("geant", &c).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
    }
}
