//! Service termination points: `domain:node:port`, optionally with `?vlan=...`.

use std::fmt;

use crate::error::{Error, ErrorCode};
use crate::units::VlanSet;

/// A port that a circuit can start or end on, named across domains.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stp {
    pub domain: String,
    pub node: String,
    pub port: String,
}

/// Characters allowed in domain and node ids. Port names may also hold `/`, `.` and `-`,
/// as router interface names do (`xe-1/0/0`, `et-3/1/0.100`).
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

pub fn valid_node_id(s: &str) -> bool {
    valid_id(s)
}

impl Stp {
    /// Parses `domain:node:port`.
    pub fn parse(text: &str) -> Result<Stp, Error> {
        let bad = |why: &str| {
            Error::new(
                ErrorCode::UnknownStp,
                format!("{text:?} is not an STP: {why} (expected domain:node:port)"),
            )
        };
        let mut parts = text.splitn(3, ':');
        let (Some(domain), Some(node), Some(port)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it needs three parts"));
        };
        if !valid_id(domain) {
            return Err(bad("the domain id is empty or has invalid characters"));
        }
        if !valid_id(node) {
            return Err(bad("the node id is empty or has invalid characters"));
        }
        if !valid_port_name(port) {
            return Err(bad("the port name is empty or has invalid characters"));
        }
        Ok(Stp {
            domain: domain.to_string(),
            node: node.to_string(),
            port: port.to_string(),
        })
    }

    /// `node:port`, the part that is unique inside one domain.
    pub fn local(&self) -> String {
        format!("{}:{}", self.node, self.port)
    }
}

impl fmt::Display for Stp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.domain, self.node, self.port)
    }
}

/// One end of a requested circuit: the STP and the labels the caller accepts there
/// (`None`: any label in the port's range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StpRequest {
    pub stp: Stp,
    pub vlans: Option<VlanSet>,
}

impl StpRequest {
    /// Parses `domain:node:port` or `domain:node:port?vlan=100-200`.
    pub fn parse(text: &str) -> Result<StpRequest, Error> {
        let (stp, query) = match text.split_once('?') {
            Some((stp, q)) => (stp, Some(q)),
            None => (text, None),
        };
        let stp = Stp::parse(stp)?;
        let vlans = match query {
            None => None,
            Some(q) => match q.split_once('=') {
                Some(("vlan", v)) => Some(VlanSet::parse(v)?),
                _ => {
                    return Err(Error::new(
                        ErrorCode::InvalidLabelFormat,
                        format!(
                            "{q:?}: the only label type is vlan (write ?vlan=100 or ?vlan=100-200)"
                        ),
                    ));
                }
            },
        };
        Ok(StpRequest { stp, vlans })
    }
}

impl fmt::Display for StpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.vlans {
            Some(v) => write!(f, "{}?vlan={}", self.stp, v),
            None => write!(f, "{}", self.stp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stp_with_router_port_names() {
        let s = Stp::parse("geant:mil1:xe-1/0/0").unwrap();
        assert_eq!(s.domain, "geant");
        assert_eq!(s.node, "mil1");
        assert_eq!(s.port, "xe-1/0/0");
        assert_eq!(s.to_string(), "geant:mil1:xe-1/0/0");
        assert_eq!(s.local(), "mil1:xe-1/0/0");
    }

    #[test]
    fn refuses_malformed_stps() {
        for bad in ["", "a", "a:b", "a::c", ":b:c", "a:b:", "a b:c:d", "a:b:c d"] {
            let e = Stp::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnknownStp, "{bad:?}");
        }
    }

    #[test]
    fn parses_labels() {
        let r = StpRequest::parse("i2:hous:xe-0/0/0?vlan=100-110").unwrap();
        assert_eq!(r.vlans.unwrap().len(), 11);
        assert!(
            StpRequest::parse("i2:hous:xe-0/0/0")
                .unwrap()
                .vlans
                .is_none()
        );
        let e = StpRequest::parse("i2:hous:xe-0/0/0?mpls=3").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidLabelFormat);
        let e = StpRequest::parse("i2:hous:xe-0/0/0?vlan=5000").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidLabelFormat);
    }
}
