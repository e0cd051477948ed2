//! The federation from the shell: `sluice certs` (a development CA and certificates),
//! `sluice domains` and `sluice topology --all` (what the IDC knows of other domains).

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Args;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use sluice_idc::federation::DevCa;
use sluice_idc::federation::tls::write_pem;
use sluice_model::Error;
use sluice_proto::v1;

use crate::time::{from_timestamp, human_duration, show};

#[derive(Args)]
pub struct CertsArgs {
    /// The domains to make certificates for (their ids: garr, geant, internet2, ...).
    #[arg(required = true)]
    pub domains: Vec<String>,
    /// Where to write ca.pem, ca.key and DOMAIN.pem, DOMAIN.key. An existing ca.pem and
    /// ca.key there are reused, so domains can be added later.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
}

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

/// Makes (or reuses) the development CA in `out` and a certificate for each domain.
pub fn certs(args: &CertsArgs) -> Result<(Value, String), Error> {
    for d in &args.domains {
        if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::invalid(
                "domains",
                format!("{d:?} is not a domain id (letters, digits and -)"),
            ));
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::invalid("out", format!("cannot create {}: {e}", args.out.display())))?;
    let (ca_cert, ca_key) = (args.out.join("ca.pem"), args.out.join("ca.key"));
    let (ca, reused) = if ca_cert.exists() && ca_key.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::invalid("out", format!("cannot read {}: {e}", p.display())))
        };
        (
            DevCa::load(&read(&ca_cert)?, &read(&ca_key)?).map_err(tls_error)?,
            true,
        )
    } else {
        let ca = DevCa::new().map_err(tls_error)?;
        write_pem(&ca_cert, ca.cert_pem(), false).map_err(tls_error)?;
        write_pem(&ca_key, &ca.key_pem(), true).map_err(tls_error)?;
        (ca, false)
    };
    let mut written = Vec::new();
    for d in &args.domains {
        let (cert, key) = ca.issue(d).map_err(tls_error)?;
        let (cp, kp) = (
            args.out.join(format!("{d}.pem")),
            args.out.join(format!("{d}.key")),
        );
        write_pem(&cp, &cert, false).map_err(tls_error)?;
        write_pem(&kp, &key, true).map_err(tls_error)?;
        written.push((d.clone(), cp, kp));
    }
    let json = json!({
        "ca": ca_cert.display().to_string(),
        "ca_reused": reused,
        "domains": written.iter().map(|(d, c, k)| json!({
            "domain": d, "cert": c.display().to_string(), "key": k.display().to_string()
        })).collect::<Vec<_>>(),
    });
    let mut text = format!(
        "{} development CA {} (for demos and tests only)\n",
        if reused { "reused" } else { "made" },
        ca_cert.display()
    );
    for (d, c, k) in &written {
        text += &format!("  {d}: {} {}\n", c.display(), k.display());
    }
    Ok((json, text.trim_end().to_string()))
}

fn age(ts: &Option<prost_types::Timestamp>) -> String {
    match from_timestamp(ts) {
        Some(t) => {
            let d = Utc::now() - t;
            if d.num_seconds() < 1 {
                "just now".into()
            } else {
                format!("{} ago", human_duration(d))
            }
        }
        None => "-".into(),
    }
}

fn left(ts: &Option<prost_types::Timestamp>) -> String {
    match from_timestamp(ts) {
        Some(t) if t > Utc::now() => format!("in {}", human_duration(t - Utc::now())),
        Some(_) => "expired".into(),
        None => "-".into(),
    }
}

fn role(d: &v1::KnownDomain) -> &'static str {
    if d.own {
        "this domain"
    } else if d.direct {
        "direct peer"
    } else {
        "learned"
    }
}

pub fn domains_json(r: &v1::DomainsReply) -> Value {
    json!({
        "federation_url": r.federation_url,
        "domains": r.domains.iter().map(|k| {
            let d = k.document.clone().unwrap_or_default();
            json!({
                "domain": d.domain,
                "role": role(k),
                "url": d.url,
                "version": d.version,
                "received_at": show(&k.received_at),
                "expires_at": show(&d.expires_at),
                "translates": d.translates,
                "end_points": d.end_points.iter().map(|e| json!({
                    "stp": e.stp, "vlans": e.vlans, "capacity_mbps": e.capacity_mbps
                })).collect::<Vec<_>>(),
                "demarcations": d.demarcations.iter().map(|m| json!({
                    "local": m.local, "remote": m.remote, "vlans": m.vlans,
                    "capacity_mbps": m.capacity_mbps, "metric": m.metric,
                    "free": m.free.iter().map(|f| json!({
                        "start": show(&f.start), "end": show(&f.end), "free_mbps": f.free_mbps
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}

pub fn domains_human(r: &v1::DomainsReply) -> String {
    if r.federation_url.is_empty() {
        return "this IDC runs without federation (start it with --federation FILE)".into();
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "domain",
        "role",
        "version",
        "received",
        "expires",
        "end points",
        "faces",
        "url",
    ]);
    for k in &r.domains {
        let d = k.document.clone().unwrap_or_default();
        let mut faces: Vec<String> = d
            .demarcations
            .iter()
            .map(|m| m.remote.split(':').next().unwrap_or_default().to_string())
            .collect();
        faces.sort();
        faces.dedup();
        t.add_row([
            d.domain.clone(),
            role(k).to_string(),
            d.version.to_string(),
            age(&k.received_at),
            left(&d.expires_at),
            d.end_points.len().to_string(),
            faces.join(" "),
            d.url.clone(),
        ]);
    }
    format!(
        "{t}\n{} domains known; peers call this IDC at {}",
        r.domains.len(),
        r.federation_url
    )
}

/// Every known domain's document in full: `sluice topology --all`.
pub fn documents_human(r: &v1::DomainsReply) -> String {
    if r.federation_url.is_empty() {
        return domains_human(r);
    }
    let mut out = String::new();
    for k in &r.domains {
        let d = k.document.clone().unwrap_or_default();
        out += &format!(
            "domain {} ({}), version {}, received {}, expires {}{}\n",
            d.domain,
            role(k),
            d.version,
            age(&k.received_at),
            left(&d.expires_at),
            if d.translates {
                ", translates VLANs"
            } else {
                ""
            }
        );
        out += "  end points:\n";
        for e in &d.end_points {
            out += &format!(
                "    {}  vlans {}  {} Mb/s\n",
                e.stp, e.vlans, e.capacity_mbps
            );
        }
        out += "  demarcation points:\n";
        for m in &d.demarcations {
            out += &format!(
                "    {} ↔ {}  vlans {}  {} Mb/s  metric {}\n",
                m.local, m.remote, m.vlans, m.capacity_mbps, m.metric
            );
            for f in &m.free {
                out += &format!(
                    "      {} .. {}: {} Mb/s free\n",
                    show(&f.start),
                    show(&f.end),
                    f.free_mbps
                );
            }
        }
        out += "\n";
    }
    out.trim_end().to_string()
}
