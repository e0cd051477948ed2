//! `sluice bench --federation N`: three domains as three IDC processes (GARR, GÉANT and
//! Internet2 from `topologies/`, each with its own SQLite database and certificate),
//! federated over mutual TLS on loopback, driven through GARR's client API as a user
//! would: N sequential reserve+commit of a circuit from Rome to Houston, whole cycles
//! (reserve, commit, provision, release, terminate), and weekly series of 52 occurrences.
//! At the end every booking is ended and each domain is asked what it still holds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;
use sluice_idc::federation::DevCa;
use sluice_idc::federation::tls::write_pem;
use sluice_proto::convert::timestamp;
use sluice_proto::v1;

use crate::bench::{ChildIdc, Progress, ms, percentile};
use crate::client::{Client, connect};

const DOMAINS: [&str; 3] = ["garr", "geant", "internet2"];
const SRC: &str = "garr:rm-1:xe-0/0/0";
const DST: &str = "internet2:houston:xe-0/0/0";

/// What to run (from `sluice bench`'s flags).
pub struct FederationBench {
    pub bookings: usize,
    pub cycles: usize,
    pub series: usize,
    pub topologies: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Domain {
    _child: ChildIdc,
    api: String,
}

/// One domain's IDC process: its certificate, its federation file (peers in a line),
/// and waits for both of its listening lines.
fn spawn(
    exe: &Path,
    dir: &Path,
    topologies: &Path,
    name: &str,
    fed_ports: &[u16; 3],
) -> anyhow::Result<Domain> {
    let i = DOMAINS
        .iter()
        .position(|d| *d == name)
        .expect("a bench domain");
    let mut peers = String::new();
    for (j, other) in DOMAINS.iter().enumerate() {
        if j == i {
            continue;
        }
        peers += &format!("\n[[peer]]\ndomain = \"{other}\"\n");
        if j.abs_diff(i) == 1 {
            peers += &format!("url = \"https://127.0.0.1:{}\"\n", fed_ports[j]);
        }
    }
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{}\"\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\nkey = \"certs/{name}.key\"\nrefresh_s = 1\n{peers}",
            fed_ports[i]
        ),
    )?;
    let mut child = ChildIdc(
        Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--topology")
            .arg(topologies.join(format!("{name}.toml")))
            .arg("--federation")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("{name} did not say where it listens: {line:?}"))?
        .to_string();
    line.clear();
    out.read_line(&mut line)?;
    anyhow::ensure!(
        line.contains("federation on"),
        "{name} did not start its federation: {line:?}"
    );
    Ok(Domain {
        _child: child,
        api: format!("http://{addr}"),
    })
}

fn criteria(start_in: TimeDelta, hours: i64, manual: bool) -> v1::Criteria {
    let start = Utc::now() + start_in;
    v1::Criteria {
        src: SRC.into(),
        dst: DST.into(),
        capacity_mbps: 10,
        start: Some(timestamp(start)),
        end: Some(timestamp(start + TimeDelta::hours(hours))),
        description: "bench federation".into(),
        provision_mode: if manual {
            v1::ProvisionMode::Manual
        } else {
            v1::ProvisionMode::Automatic
        } as i32,
        ..Default::default()
    }
}

async fn reserve_commit(c: &mut Client, crit: v1::Criteria) -> anyhow::Result<v1::Reservation> {
    let held = c
        .reservations
        .reserve(v1::ReserveRequest {
            verify_each: None,
            criteria: Some(crit),
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        held.segments.len() == 3,
        "not across three domains: {held:?}"
    );
    Ok(c.reservations
        .commit(v1::IdRequest { id: held.id })
        .await?
        .into_inner())
}

fn stats(label: &str, mut d: Vec<Duration>) -> (String, serde_json::Value, [f64; 3]) {
    d.sort();
    let (p50, p99, max) = (
        ms(percentile(&d, 50.0)),
        ms(percentile(&d, 99.0)),
        ms(*d.last().unwrap_or(&Duration::ZERO)),
    );
    (
        label.to_string(),
        json!({"n": d.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
        [p50, p99, max],
    )
}

pub async fn run(args: FederationBench, json_out: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let ca = DevCa::new()?;
    std::fs::create_dir_all(dir.join("certs"))?;
    write_pem(&dir.join("certs/ca.pem"), ca.cert_pem(), false)?;
    for d in DOMAINS {
        let (cert, key) = ca.issue(d)?;
        write_pem(&dir.join(format!("certs/{d}.pem")), &cert, false)?;
        write_pem(&dir.join(format!("certs/{d}.key")), &key, true)?;
    }
    let ports = [free_port()?, free_port()?, free_port()?];
    let mut domains = Vec::new();
    for d in DOMAINS {
        domains.push(spawn(&exe, dir, &args.topologies, d, &ports)?);
    }
    eprintln!(
        "bench: garr {}, geant {}, internet2 {} (federation on ports {:?}, mutual TLS)",
        domains[0].api, domains[1].api, domains[2].api, ports
    );
    let mut c = connect(&domains[0].api, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let known = c
            .topology
            .domains(v1::DomainsRequest {})
            .await?
            .into_inner()
            .domains
            .len();
        if known == 3 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "garr knows {known} domains after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Warm up: connections and TLS sessions between the IDCs.
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = reserve_commit(
            &mut c,
            criteria(TimeDelta::days(60) + TimeDelta::hours(2 * i), 1, false),
        )
        .await?;
        ids.push(r.id);
    }

    let mut rows = Vec::new();
    let mut p = Progress::new("reserve+commit across 3 domains", args.bookings);
    let mut took = Vec::with_capacity(args.bookings);
    for i in 0..args.bookings {
        // Windows one after another: every booking takes the same VLANs and ports.
        let crit = criteria(TimeDelta::hours(1 + 2 * i as i64), 1, false);
        let t = Instant::now();
        let r = reserve_commit(&mut c, crit).await?;
        took.push(t.elapsed());
        ids.push(r.id);
        p.tick(i + 1);
    }
    p.done();
    rows.push(stats("reserve+commit, 3 domains", took));

    let mut p = Progress::new("whole cycles across 3 domains", args.cycles);
    let mut took = Vec::with_capacity(args.cycles);
    for i in 0..args.cycles {
        // Already started, manual: provision brings it up at once.
        let crit = criteria(TimeDelta::seconds(-30), 1, true);
        let t = Instant::now();
        let r = reserve_commit(&mut c, crit).await?;
        for call in ["provision", "release", "terminate"] {
            let req = v1::IdRequest { id: r.id.clone() };
            match call {
                "provision" => c.reservations.provision(req).await?,
                "release" => c.reservations.release(req).await?,
                _ => c.reservations.terminate(req).await?,
            };
        }
        took.push(t.elapsed());
        p.tick(i + 1);
    }
    p.done();
    rows.push(stats("whole cycle, 3 domains", took));

    let mut series_ids = Vec::new();
    let mut p = Progress::new("52-week series across 3 domains", args.series);
    let mut took = Vec::with_capacity(args.series);
    for i in 0..args.series {
        let first = Utc::now() + TimeDelta::days(400) + TimeDelta::hours(2 * i as i64);
        let rule = v1::Recurrence {
            rule: Some(v1::recurrence::Rule::Ical(format!(
                "DTSTART:{}\nRRULE:FREQ=WEEKLY;COUNT=52",
                first.format("%Y%m%dT%H%M%SZ")
            ))),
            duration_seconds: 3600,
        };
        let t = Instant::now();
        let held = c
            .reservations
            .reserve_series(v1::ReserveSeriesRequest {
                criteria: Some(criteria(TimeDelta::zero(), 1, false)),
                recurrence: Some(rule),
                ..Default::default()
            })
            .await?
            .into_inner();
        let s = c
            .reservations
            .commit_series(v1::IdRequest { id: held.id })
            .await?
            .into_inner();
        took.push(t.elapsed());
        anyhow::ensure!(
            s.occurrences.len() == 52 && s.occurrences.iter().all(|o| o.segments.len() == 3),
            "series {} is not 52 occurrences across 3 domains",
            s.id
        );
        series_ids.push(s.id);
        p.tick(i + 1);
    }
    p.done();
    rows.push(stats("52-week series (reserve+commit), 3 domains", took));

    // End everything, then ask every domain what it still holds.
    for id in &ids {
        c.reservations
            .terminate(v1::IdRequest { id: id.clone() })
            .await?;
    }
    for id in &series_ids {
        c.reservations
            .cancel_series(v1::CancelSeriesRequest {
                id: id.clone(),
                scope: None,
            })
            .await?;
    }
    let mut left = Vec::new();
    for (name, d) in DOMAINS.iter().zip(&domains) {
        let mut dc = connect(&d.api, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let n = dc
            .reservations
            .list(v1::ListRequest {
                states: vec!["held".into(), "committed".into(), "active".into()],
                ..Default::default()
            })
            .await?
            .into_inner()
            .reservations
            .len();
        left.push((name.to_string(), n));
    }

    if json_out {
        println!(
            "{}",
            json!({
                "domains": DOMAINS,
                "circuit": {"src": SRC, "dst": DST, "mbps": 10},
                "figures": rows.iter().map(|(l, j, _)| json!({"what": l, "latency": j})).collect::<Vec<_>>(),
                "left_held_or_committed": left.iter().map(|(d, n)| json!({"domain": d, "count": n})).collect::<Vec<_>>(),
            })
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header([
            "across GARR → GÉANT → Internet2 (mTLS)",
            "n",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]);
        for (label, j, [p50, p99, max]) in &rows {
            t.add_row([
                label.clone(),
                j["n"].to_string(),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                format!("{max:.2}"),
            ]);
        }
        println!("{t}");
        for (d, n) in &left {
            println!("{d}: {n} held or committed left after ending everything");
        }
    }
    Ok(())
}
