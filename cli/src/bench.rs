//! `sluice bench`: starts a fresh IDC as a child process (the real binary, real SQLite
//! with fsync on commit, real loopback gRPC) and measures what issue 2 asks for:
//! reserve+commit latency, the whole cycle, `sluice reserve` process time, throughput
//! with concurrent clients, and the server's memory after many bookings.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Args;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;
use sluice_proto::v1;

use crate::client::{Client, IdCall, connect};

#[derive(Args)]
pub struct BenchArgs {
    /// Sequential reserve+commit bookings timed one by one.
    #[arg(long, default_value_t = 1000)]
    sequential: usize,
    /// Whole reserve→commit→provision→release→terminate cycles timed.
    #[arg(long, default_value_t = 300)]
    cycles: usize,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 16)]
    pub(crate) clients: usize,
    /// Bookings made by the concurrent clients together.
    #[arg(long, default_value_t = 4000)]
    concurrent_bookings: usize,
    /// `sluice reserve` processes timed from start to exit.
    #[arg(long, default_value_t = 50)]
    cli_runs: usize,
    /// Bookings in the server (all phases together, topped up) when its RSS is read.
    #[arg(long, default_value_t = 10_000)]
    rss_bookings: usize,
    /// Serve this topology file instead of the bundled one (e.g. one written by
    /// `sluice topology --generate 1000x5000`).
    #[arg(long)]
    topology: Option<std::path::PathBuf>,
    /// Book this many first (by the concurrent clients, not timed), then restart the IDC
    /// and time how long it takes to rebuild its index from the store, so that every
    /// figure after is taken on a loaded IDC.
    #[arg(long, default_value_t = 0)]
    preload: usize,
    /// Keep the IDC's database in this directory (default: a temporary one, removed
    /// at the end).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Instead of the one-off figures: admit this many weekly series of 52 occurrences
    /// through gRPC (reserve and commit, timed one by one).
    #[arg(long, default_value_t = 0)]
    pub(crate) series: usize,
    /// Instead of the one-off figures: book this many series (4 weekly occurrences each,
    /// the first ones starting a few minutes ahead, spread over a minute), then measure
    /// how late after its start each first occurrence is provisioned.
    #[arg(long, default_value_t = 0)]
    pub(crate) scheduler_series: usize,
    /// Instead of the one-domain figures: start GARR, GÉANT and Internet2 as three
    /// federated IDC processes (mutual TLS on loopback) and time this many sequential
    /// reserve+commit of a Rome → Houston circuit through GARR.
    #[arg(long, default_value_t = 0)]
    federation: usize,
    /// With --federation: whole reserve→commit→provision→release→terminate cycles.
    #[arg(long, default_value_t = 100)]
    federation_cycles: usize,
    /// With --federation: weekly series of 52 occurrences, reserve and commit timed.
    #[arg(long, default_value_t = 10)]
    federation_series: usize,
    /// Instead of the one-domain figures: compare the stores under --clients concurrent
    /// clients making --concurrent-bookings (SQLite; PostgreSQL with one replica; with
    /// two), then kill -9 one of two replicas and time how late the other fires its
    /// timers. Takes a PostgreSQL admin URL (as `deploy/postgres/pg-local.sh start`
    /// prints); a database is made for each run and dropped after.
    #[arg(long, value_name = "POSTGRES_URL")]
    replicas_on: Option<String>,
    /// With --replicas-on: holds the killed replica leaves for the other to time out.
    #[arg(long, default_value_t = 200)]
    takeover_holds: usize,
    /// With --federation: where garr.toml, geant.toml and internet2.toml are.
    #[arg(long, default_value = "topologies")]
    topologies: std::path::PathBuf,
}

/// Kills the child IDC however the bench ends.
pub(crate) struct ChildIdc(pub(crate) Child);

impl Drop for ChildIdc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Progress {
    label: &'static str,
    total: usize,
    tty: bool,
    last: Instant,
}

impl Progress {
    pub(crate) fn new(label: &'static str, total: usize) -> Progress {
        Progress {
            label,
            total,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now() - Duration::from_secs(1),
        }
    }

    pub(crate) fn tick(&mut self, done: usize) {
        if self.tty && (self.last.elapsed() > Duration::from_millis(100) || done == self.total) {
            self.last = Instant::now();
            let width = 30;
            let filled = done * width / self.total.max(1);
            eprint!(
                "\r{:<28} [{}{}] {done}/{}",
                self.label,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.total
            );
            let _ = std::io::stderr().flush();
        }
    }

    pub(crate) fn done(&self) {
        if self.tty {
            eprintln!();
        } else {
            eprintln!("{}: {} done", self.label, self.total);
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Deterministic spread of bookings over end points and the coming year.
struct Workload {
    stps: Vec<String>,
    seed: u64,
}

impl Workload {
    fn next(&mut self) -> u64 {
        // xorshift64*: enough to scatter bookings, and repeatable.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn criteria(&mut self) -> v1::Criteria {
        let n = self.stps.len() as u64;
        let a = self.next() % n;
        let b = (a + 1 + self.next() % (n - 1)) % n;
        let start = Utc::now()
            + TimeDelta::hours(1)
            + TimeDelta::minutes((self.next() % (365 * 24 * 60)) as i64);
        let len = TimeDelta::minutes(30 + (self.next() % 240) as i64);
        v1::Criteria {
            src: self.stps[a as usize].clone(),
            dst: self.stps[b as usize].clone(),
            capacity_mbps: 1 + (self.next() % 10) as i64,
            start: Some(crate::time::timestamp(start)),
            end: Some(crate::time::timestamp(start + len)),
            description: "bench".into(),
            ..Default::default()
        }
    }
}

async fn book(c: &mut Client, criteria: v1::Criteria) -> Result<String, sluice_model::Error> {
    Ok(c.book(criteria, false).await?.id)
}

/// What concurrent clients measured, each list sorted.
pub(crate) struct Concurrent {
    /// Reserve and commit, each booking.
    pub(crate) bookings: Vec<Duration>,
    /// The reserve call alone (admission), each booking.
    pub(crate) admissions: Vec<Duration>,
    pub(crate) wall: Duration,
}

/// `clients` connections booking `per_client` each, all at once, client k on
/// `urls[k % urls.len()]`.
async fn concurrent(
    urls: Vec<String>,
    stps: Vec<String>,
    clients: usize,
    per_client: usize,
    seed: u64,
) -> anyhow::Result<Concurrent> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let url = urls[k % urls.len()].clone();
        let mut w = Workload {
            stps: stps.clone(),
            seed: (0x0c0f_fee0_0000_0001 ^ seed) + k as u64 * 7919,
        };
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url, "bench").await?;
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let criteria = w.criteria();
                let t = Instant::now();
                let held = c.book(criteria, true).await?;
                let admitted = t.elapsed();
                c.call(IdCall::Commit, &held.id).await?;
                lat.push((t.elapsed(), admitted));
            }
            Ok::<_, sluice_model::Error>(lat)
        }));
    }
    let (mut bookings, mut admissions) = (Vec::new(), Vec::new());
    for t in tasks {
        for (b, a) in t.await?.map_err(|e| anyhow::anyhow!("{e}"))? {
            bookings.push(b);
            admissions.push(a);
        }
    }
    let wall = started.elapsed();
    bookings.sort();
    admissions.sort();
    Ok(Concurrent {
        bookings,
        admissions,
        wall,
    })
}

/// `concurrent` on a multi-threaded runtime of its own.
pub(crate) fn run_concurrent(
    urls: &[String],
    stps: &[String],
    clients: usize,
    per_client: usize,
    seed: u64,
) -> anyhow::Result<Concurrent> {
    let (urls, stps) = (urls.to_vec(), stps.to_vec());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(concurrent(urls, stps, clients, per_client, seed))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the concurrent clients panicked"))?
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: BenchArgs, _server: &str, json_out: bool) -> std::process::ExitCode {
    // One thread, like `sluice` itself and like a client library in one process: the
    // sequential figures measure the IDC, not the client's thread hand-offs. The
    // concurrent clients get a multi-threaded runtime of their own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = if args.federation > 0 {
        rt.block_on(crate::bench_federation::run(
            crate::bench_federation::FederationBench {
                bookings: args.federation,
                cycles: args.federation_cycles,
                series: args.federation_series,
                topologies: args.topologies.clone(),
            },
            json_out,
        ))
    } else if let Some(admin) = &args.replicas_on {
        rt.block_on(crate::bench_replicas::run(
            crate::bench_replicas::ReplicaBench {
                admin_url: admin.clone(),
                clients: args.clients,
                bookings: args.concurrent_bookings,
                holds: args.takeover_holds,
            },
            json_out,
        ))
    } else {
        rt.block_on(bench(args, json_out))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A fresh IDC process on `dir`: waits for its "listening on" line. Returns it, its URL,
/// the time from spawn to listening, and the index rebuild time it logged.
pub(crate) fn spawn_idc(
    exe: &std::path::Path,
    dir: &std::path::Path,
    topology: Option<&std::path::Path>,
    extra: &[&str],
) -> anyhow::Result<(ChildIdc, String, Duration, Option<u64>)> {
    let started = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--data-dir",
    ])
    .arg(dir);
    if let Some(t) = topology {
        cmd.arg("--topology").arg(t);
    }
    cmd.args(extra);
    let mut child = ChildIdc(
        cmd.env("RUST_LOG", "warn,sluice_idc::service=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    // Drain the log: pick out the index rebuild time, pass warnings on.
    let stderr = child.0.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v["fields"]["message"] == "index built from the store" => {
                    let _ = tx.send(v["fields"]["elapsed_ms"].as_u64());
                }
                Ok(v) if v["level"] == "INFO" => {}
                _ => eprintln!("{line}"),
            }
        }
    });
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("piped")).read_line(&mut line)?;
    let ready = started.elapsed();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("the IDC did not say where it listens: {line:?}"))?
        .to_string();
    let index_ms = rx.recv_timeout(Duration::from_secs(5)).ok().flatten();
    Ok((child, format!("http://{addr}"), ready, index_ms))
}

/// The domain's edge ports (no link, no peer) as STPs: where bookings start and end.
pub(crate) async fn edge_stps(c: &mut Client) -> anyhow::Result<Vec<String>> {
    let topo = c
        .topology
        .get_topology(v1::GetTopologyRequest {})
        .await?
        .into_inner();
    Ok(topo
        .nodes
        .iter()
        .flat_map(|n| {
            n.ports
                .iter()
                .filter(|p| p.link.is_empty() && p.peer.is_empty())
                .map(|p| format!("{}:{}:{}", topo.domain, n.id, p.name))
                .collect::<Vec<_>>()
        })
        .collect())
}

async fn bench(args: BenchArgs, json_out: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let temp = tempfile::tempdir()?;
    let dir = args.data_dir.as_deref().unwrap_or(temp.path());
    let topology = args.topology.as_deref();
    let (mut child, mut url, _, _) = spawn_idc(&exe, dir, topology, &[])?;
    let mut pid = child.0.id();
    eprintln!("bench: IDC pid {pid} on {url}, data in {}", dir.display());

    let mut c = connect(&url, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stps = edge_stps(&mut c).await?;
    let mut work = Workload {
        stps: stps.clone(),
        seed: 0x5eed_1234_abcd_0001,
    };
    let mut booked = 0usize;

    // 0. Load the IDC, then restart it: the index is rebuilt from the store.
    let mut restart = None;
    if args.preload > 0 {
        let per_client = args.preload.div_ceil(args.clients.max(1));
        eprintln!(
            "preload: {} clients × {per_client} bookings (not timed) ...",
            args.clients
        );
        let Concurrent { bookings, wall, .. } = run_concurrent(
            std::slice::from_ref(&url),
            &stps,
            args.clients,
            per_client,
            0x9e37_79b9,
        )?;
        booked += bookings.len();
        eprintln!(
            "preload: {} bookings in {:.1} s; restarting the IDC",
            bookings.len(),
            wall.as_secs_f64()
        );
        drop(c);
        drop(child);
        let (ch, u, ready, index_ms) = spawn_idc(&exe, dir, topology, &[])?;
        (child, url) = (ch, u);
        pid = child.0.id();
        restart = Some((ready, index_ms));
        c = connect(&url, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    if args.series > 0 || args.scheduler_series > 0 {
        return crate::bench_series::run(&url, &stps, &args, json_out, restart.and_then(|r| r.1))
            .await;
    }

    // Warm up connections and caches; not measured.
    for _ in 0..20 {
        book(&mut c, work.criteria())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        booked += 1;
    }

    // 1. Sequential reserve+commit.
    let mut lat = Vec::with_capacity(args.sequential);
    let mut p = Progress::new("reserve+commit, sequential", args.sequential);
    for i in 0..args.sequential {
        let criteria = work.criteria();
        let t = Instant::now();
        book(&mut c, criteria)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lat.push(t.elapsed());
        booked += 1;
        p.tick(i + 1);
    }
    p.done();
    lat.sort();

    // The floor under every call: a read (one indexed row) over the same connection.
    let probe = c
        .reservations
        .list(v1::ListRequest {
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .reservations
        .remove(0)
        .id;
    let mut gets = Vec::with_capacity(args.sequential);
    for _ in 0..args.sequential {
        let t = Instant::now();
        c.reservations
            .get(v1::IdRequest { id: probe.clone() })
            .await?;
        gets.push(t.elapsed());
    }
    gets.sort();

    // 2. The whole cycle.
    let mut cyc = Vec::with_capacity(args.cycles);
    let mut p = Progress::new("whole cycle", args.cycles);
    for i in 0..args.cycles {
        let criteria = work.criteria();
        let t = Instant::now();
        let id = book(&mut c, criteria)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for step in [IdCall::Provision, IdCall::Release, IdCall::Terminate] {
            c.call(step, &id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        cyc.push(t.elapsed());
        p.tick(i + 1);
    }
    p.done();
    cyc.sort();

    // 3. Concurrent clients.
    let per_client = args.concurrent_bookings.div_ceil(args.clients.max(1));
    eprintln!(
        "concurrent: {} clients × {per_client} bookings ...",
        args.clients
    );
    let Concurrent {
        bookings: clat,
        wall,
        ..
    } = run_concurrent(
        std::slice::from_ref(&url),
        &stps,
        args.clients,
        per_client,
        0,
    )?;
    booked += clat.len();
    let throughput = clat.len() as f64 / wall.as_secs_f64();

    // 4. `sluice reserve` as a process, start to exit.
    let mut procs = Vec::with_capacity(args.cli_runs);
    let mut p = Progress::new("sluice reserve processes", args.cli_runs);
    for i in 0..args.cli_runs {
        let criteria = work.criteria();
        let end = crate::time::from_timestamp(&criteria.end).expect("set");
        let start = crate::time::from_timestamp(&criteria.start).expect("set");
        let t = Instant::now();
        let out = Command::new(&exe)
            .args([
                "reserve",
                &criteria.src,
                &criteria.dst,
                "--bw",
                "1",
                "--json",
                "--server",
                &url,
            ])
            .args(["--start", &start.to_rfc3339(), "--end", &end.to_rfc3339()])
            .stdin(Stdio::null())
            .output()?;
        procs.push(t.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "sluice reserve failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        booked += 1;
        p.tick(i + 1);
    }
    p.done();
    procs.sort();

    // 5. Top up, then read the server's memory.
    let top_up = args.rss_bookings.saturating_sub(booked);
    let mut p = Progress::new("top-up before RSS", top_up);
    for i in 0..top_up {
        book(&mut c, work.criteria())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        booked += 1;
        p.tick(i + 1);
    }
    if top_up > 0 {
        p.done();
    }
    let rss = rss_mb(pid);

    let mut rows = vec![
        ("reserve+commit p50 (ms)", ms(percentile(&lat, 50.0)), "≤ 1"),
        ("reserve+commit p99 (ms)", ms(percentile(&lat, 99.0)), "≤ 5"),
        (
            "get p50 (ms), the RPC floor",
            ms(percentile(&gets, 50.0)),
            "-",
        ),
        ("whole cycle p50 (ms)", ms(percentile(&cyc, 50.0)), "≤ 2.5"),
        ("whole cycle p99 (ms)", ms(percentile(&cyc, 99.0)), "-"),
        (
            "`sluice reserve` process p50 (ms)",
            ms(percentile(&procs, 50.0)),
            "≤ 20",
        ),
        (
            "`sluice reserve` process p90 (ms)",
            ms(percentile(&procs, 90.0)),
            "-",
        ),
        ("committed bookings/s, concurrent", throughput, "≥ 1000"),
        (
            "reserve+commit p99 under concurrency (ms)",
            ms(percentile(&clat, 99.0)),
            "-",
        ),
        (
            "server RSS after bookings (MB)",
            rss.unwrap_or(f64::NAN),
            "≤ 100",
        ),
    ];
    if let Some((ready, index_ms)) = restart {
        rows.push((
            "restart with the preload: spawn to listening (ms)",
            ms(ready),
            "-",
        ));
        rows.push((
            "  of which the index rebuild (ms)",
            index_ms.map_or(f64::NAN, |m| m as f64),
            "≤ 1000",
        ));
    }
    if json_out {
        let figures: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v, _)| (k.to_string(), json!(v)))
            .collect();
        println!(
            "{}",
            json!({
                "figures": figures,
                "bookings_in_server": booked,
                "sequential": args.sequential,
                "cycles": args.cycles,
                "clients": args.clients,
                "concurrent_bookings": clat.len(),
                "cli_runs": args.cli_runs,
            })
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(["figure", "measured", "target"]);
        for (k, v, target) in &rows {
            t.add_row([k.to_string(), format!("{v:.2}"), target.to_string()]);
        }
        println!("{t}");
        println!(
            "{} sequential, {} cycles, {} clients × {per_client}, {} CLI runs; {booked} bookings in the server at the RSS reading",
            args.sequential, args.cycles, args.clients, args.cli_runs
        );
    }
    drop(child);
    Ok(())
}
