//! Federation documents, model ⇄ wire. A document from a peer is checked field by field:
//! one bad field refuses the whole document, naming the field.

use sluice_model::{Error, Mbps, Stp, VlanSet};
use sluice_stitching::{Demarcation, DomainDocument, EndPoint, FreeStep};

use crate::convert::{from_timestamp, timestamp};
use crate::v1;

pub fn document(d: &DomainDocument) -> v1::DomainDocument {
    v1::DomainDocument {
        domain: d.domain.clone(),
        url: d.url.clone(),
        version: d.version,
        expires_at: Some(timestamp(d.expires_at)),
        translates: d.translates,
        end_points: d
            .end_points
            .iter()
            .map(|e| v1::DocumentEndPoint {
                stp: e.stp.to_string(),
                vlans: e.vlans.to_string(),
                capacity_mbps: e.capacity.0,
                translates: e.translates,
            })
            .collect(),
        demarcations: d
            .demarcations
            .iter()
            .map(|m| v1::DocumentDemarcation {
                local: m.local.to_string(),
                remote: m.remote.to_string(),
                vlans: m.vlans.to_string(),
                capacity_mbps: m.capacity.0,
                metric: m.metric,
                translates: m.translates,
                free: m
                    .free
                    .iter()
                    .map(|f| v1::FreeStep {
                        start: Some(timestamp(f.start)),
                        end: Some(timestamp(f.end)),
                        free_mbps: f.free.0,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn stp(text: &str, field: &str) -> Result<Stp, Error> {
    Stp::parse(text).map_err(|mut e| {
        e.field = Some(field.to_string());
        e
    })
}

fn vlans(text: &str, field: &str) -> Result<VlanSet, Error> {
    VlanSet::parse(text).map_err(|mut e| {
        e.field = Some(field.to_string());
        e
    })
}

fn required<T>(v: &Option<T>, field: &str) -> Result<T, Error>
where
    T: Clone,
{
    v.clone().ok_or_else(|| Error::missing(field))
}

pub fn document_from_wire(d: &v1::DomainDocument) -> Result<DomainDocument, Error> {
    if d.domain.is_empty() {
        return Err(Error::missing("domain"));
    }
    if !d.url.is_empty() && !d.url.starts_with("https://") {
        return Err(Error::invalid(
            "url",
            format!(
                "{:?}: a federation address must be https:// (mutual TLS)",
                d.url
            ),
        ));
    }
    let expires_at = from_timestamp(&required(&d.expires_at, "expires_at")?, "expires_at")?;
    let mut end_points = Vec::with_capacity(d.end_points.len());
    for (i, e) in d.end_points.iter().enumerate() {
        let at = |f: &str| format!("end_points[{i}].{f}");
        let s = stp(&e.stp, &at("stp"))?;
        if s.domain != d.domain {
            return Err(Error::invalid(
                at("stp"),
                format!("{s} is not in {}", d.domain),
            ));
        }
        end_points.push(EndPoint {
            stp: s,
            vlans: vlans(&e.vlans, &at("vlans"))?,
            capacity: Mbps(e.capacity_mbps),
            translates: e.translates,
        });
    }
    let mut demarcations = Vec::with_capacity(d.demarcations.len());
    for (i, m) in d.demarcations.iter().enumerate() {
        let at = |f: &str| format!("demarcations[{i}].{f}");
        let local = stp(&m.local, &at("local"))?;
        if local.domain != d.domain {
            return Err(Error::invalid(
                at("local"),
                format!("{local} is not in {}", d.domain),
            ));
        }
        let mut free = Vec::with_capacity(m.free.len());
        for (j, f) in m.free.iter().enumerate() {
            let field = |x: &str| format!("demarcations[{i}].free[{j}].{x}");
            free.push(FreeStep {
                start: from_timestamp(&required(&f.start, &field("start"))?, &field("start"))?,
                end: from_timestamp(&required(&f.end, &field("end"))?, &field("end"))?,
                free: Mbps(f.free_mbps),
            });
        }
        demarcations.push(Demarcation {
            local,
            remote: stp(&m.remote, &at("remote"))?,
            vlans: vlans(&m.vlans, &at("vlans"))?,
            capacity: Mbps(m.capacity_mbps),
            translates: m.translates,
            metric: m.metric,
            free,
        });
    }
    Ok(DomainDocument {
        domain: d.domain.clone(),
        url: d.url.clone(),
        version: d.version,
        expires_at,
        translates: d.translates,
        end_points,
        demarcations,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_document_survives_the_wire_and_a_bad_field_is_named() {
        let doc = DomainDocument {
            domain: "geant".into(),
            url: "https://127.0.0.1:4443".into(),
            version: 7,
            expires_at: t(600),
            translates: true,
            end_points: vec![EndPoint {
                stp: Stp::parse("geant:uk:xe-0/0/0").unwrap(),
                vlans: VlanSet::parse("100-999").unwrap(),
                capacity: Mbps(10_000),
                translates: false,
            }],
            demarcations: vec![Demarcation {
                local: Stp::parse("geant:it:xe-9/0/0").unwrap(),
                remote: Stp::parse("garr:mi-1:xe-9/0/0").unwrap(),
                vlans: VlanSet::parse("3000-3099").unwrap(),
                capacity: Mbps(10_000),
                translates: true,
                metric: 3,
                free: vec![FreeStep {
                    start: t(0),
                    end: t(60),
                    free: Mbps(4_000),
                }],
            }],
        };
        assert_eq!(document_from_wire(&document(&doc)).unwrap(), doc);

        let mut wire = document(&doc);
        wire.demarcations[0].local = "garr:mi-1:xe-9/0/0".into();
        let e = document_from_wire(&wire).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("demarcations[0].local"));
        let mut wire = document(&doc);
        wire.demarcations[0].free[0].end = None;
        let e = document_from_wire(&wire).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("demarcations[0].free[0].end"));
        let mut wire = document(&doc);
        wire.url = "http://127.0.0.1:4443".into();
        let e = document_from_wire(&wire).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("url"));
        let mut wire = document(&doc);
        wire.end_points[0].vlans = "5000".into();
        let e = document_from_wire(&wire).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("end_points[0].vlans"));
    }
}
