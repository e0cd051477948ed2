//! `sluice`: run an IDC (`serve`), and book, inspect and operate circuits from the shell.

mod agent;
mod bench;
mod bench_federation;
mod bench_replicas;
mod bench_series;
mod check;
mod client;
mod config;
mod federation;
mod output;
mod report;
mod series;
mod time;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use sluice_model::Error;
use sluice_proto::v1;
use tokio_stream::StreamExt;

use client::{Client, IdCall, connect, err};

const DEFAULT_SERVER: &str = "http://127.0.0.1:50551";
const DEFAULT_LISTEN: &str = "127.0.0.1:50551";

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: book time-bounded bandwidth circuits, and run the IDC that admits them",
    after_help = "Times: RFC 3339 (2026-12-01T14:00:00Z), a UTC date-time (2026-12-01T14:00), now, or +10m / +2h / +1d.\nStart an IDC with `sluice serve`, then e.g.\n  sluice reserve internet2:houston:xe-0/0/0 internet2:new-york:xe-0/0/0 --bw 1000 --start +10m --end +2h"
)]
struct Cli {
    /// The IDC to talk to.
    #[arg(long, global = true, env = "SLUICE_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Who you are (sent as x-sluice-user); defaults to $USER.
    #[arg(long, global = true, env = "SLUICE_USER")]
    user: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the IDC: gRPC API, scheduler, store (SQLite in the data directory, or
    /// PostgreSQL with --database, shared by the domain's replicas).
    Serve(ServeArgs),
    /// Run a node agent: make this node's data plane carry the circuits its IDC sends.
    Agent(agent::AgentArgs),
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// A PostgreSQL URL (postgres://user@host/db) instead of SQLite in --data-dir.
        #[arg(long, env = "SLUICE_DATABASE")]
        database: Option<String>,
    },
    /// Book a circuit: hold and commit (or only hold, with --hold-only).
    Reserve(Box<ReserveArgs>),
    /// What a booking would get now: the best path, alternatives and the widest path,
    /// with metric, hops, VLANs and headroom. Books nothing.
    Paths(PathsArgs),
    /// Commit a held reservation.
    Commit { id: String },
    /// Abort a held reservation (frees what it holds).
    Abort { id: String },
    /// Ask for the data plane: up while provisioned and inside the window.
    Provision { id: String },
    /// Take the data plane down (and stop automatic provisioning).
    Release { id: String },
    /// End a reservation for good and free its resources.
    Terminate { id: String },
    /// Change the capacity and/or schedule of a committed reservation.
    Modify(ModifyArgs),
    /// Show one reservation.
    Show { id: String },
    /// The occurrences of a series, each with its own state (as `series show`).
    Occurrences { id: String },
    /// Recurring bookings: show, commit, cancel (all, one, or from a date), export.
    #[command(subcommand)]
    Series(series::SeriesCmd),
    /// List reservations.
    List(ListArgs),
    /// Follow state changes as they happen.
    Watch(WatchArgs),
    /// Show the domain topology (from the IDC, or check a local file with --file), or
    /// write a generated one for scale tests with --generate, or check it against what
    /// the node agents report with --check --agents F.
    Topology {
        /// Read and check this topology file instead of asking the IDC.
        #[arg(long, conflicts_with = "generate")]
        file: Option<PathBuf>,
        /// Print a generated research-network-like topology as a topology file:
        /// NODESxLINKS, e.g. 1000x5000 (connected; 2 edge ports per node).
        #[arg(long, value_parser = parse_size)]
        generate: Option<(usize, usize)>,
        /// Seed for --generate (the same seed gives the same topology).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Every domain's published document (end points, demarcation points, free
        /// capacity at the borders), not only this domain's topology.
        #[arg(long, conflicts_with_all = ["file", "generate"])]
        all: bool,
        /// Ask every node agent for its ports and compare them with the topology (--file,
        /// or the IDC's): missing, extra, down, slow, wrong capacity, unreachable. Fails
        /// unless they all agree (see cli/src/check.rs for every finding).
        #[arg(long, requires = "agents", conflicts_with_all = ["generate", "all"])]
        check: bool,
        /// The agents file (as for `serve --agents`), for --check.
        #[arg(long, requires = "check")]
        agents: Option<PathBuf>,
    },
    /// The domains this IDC knows from the exchanged topology documents, and how fresh.
    Domains,
    /// Every state-changing request: who (a user, or peer:DOMAIN), what, on which
    /// reservation or series, when, and how it ended; oldest first.
    Audit {
        /// Only this caller's requests.
        #[arg(long)]
        who: Option<String>,
        /// Only those about this reservation or series.
        #[arg(long)]
        id: Option<String>,
        /// Only those after this sequence number (to page on).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Measure a circuit that is up, over the circuit itself, between its end nodes'
    /// agents: TWAMP-Light delay, jitter and loss, then a TCP stream for the throughput.
    /// Stored with the reservation; prints measured against booked, and a verdict.
    Verify(VerifyArgs),
    /// Every measurement of a reservation, or of each occurrence of a series.
    History { id: String },
    /// What a circuit (or every occurrence of a series) delivered against what was
    /// booked, from its measurements, and its path across domains: a table, or with
    /// --html FILE a self-contained page with charts.
    Report {
        id: String,
        /// Write the page here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// A circuit end to end: every domain's part (asked afresh, as much as each domain
    /// shares), each node's agent and the circuit's counters there, the last measurement.
    Status { id: String },
    /// Operators only: stop a circuit, or every booking of --owner, in every domain at
    /// once: data plane down everywhere, lifecycle Failed (a forced end), watchers and
    /// peer domains told, and an audit record.
    EmergencyStop {
        /// The reservation (a circuit across domains stops in each of its domains).
        #[arg(required_unless_present = "owner", conflicts_with = "owner")]
        id: Option<String>,
        /// Every booking of this user that has not ended.
        #[arg(long)]
        owner: Option<String>,
        /// A file holding your operator token (else $SLUICE_TOKEN).
        #[arg(long, env = "SLUICE_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Make an operator's token: prints the token (for the operator, to keep secret) and
    /// the entry for the IDC's operators file (`sluice serve --operators`), which holds
    /// only its digest.
    OperatorToken {
        /// The operator's name, as audit records will show it.
        name: String,
    },
    /// Make a development CA and a certificate per domain, for a demo federation.
    Certs(federation::CertsArgs),
    /// Booked and available bandwidth of a link or port over time.
    Availability(AvailabilityArgs),
    /// One week of a port or link: how full it is hour by hour, and the circuits on it.
    Calendar(series::CalendarArgs),
    /// Measure latency, throughput, CLI start-up and memory against a fresh IDC.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ServeArgs {
    /// A settings file (TOML, the options below by name; see cli/src/config.rs). The
    /// command line and the environment (SLUICE_<OPTION>) override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    /// [default: 127.0.0.1:50551]
    #[arg(long, env = "SLUICE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the SQLite database lives. [default: sluice-data]
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store in PostgreSQL instead (postgres://user[:password]@host[:port]/db).
    /// Several IDC processes of one domain on one database are replicas: any can
    /// answer, none double-books, and each takes over the others' timers.
    #[arg(long, env = "SLUICE_DATABASE")]
    database: Option<String>,
    /// The domain topology (TOML); default: the bundled Internet2 (Abilene) example.
    #[arg(long, env = "SLUICE_TOPOLOGY")]
    topology: Option<PathBuf>,
    /// How long a hold waits for its commit (e.g. 120s, 5m). [default: 120s]
    #[arg(long, env = "SLUICE_HOLD_TIMEOUT", value_parser = parse_duration_arg)]
    hold_timeout: Option<chrono::TimeDelta>,
    /// [default: text]
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Federate with other domains' IDCs: the federation file (its listener over mutual
    /// TLS, certificates, peers and their policy; see deploy/federation/).
    #[arg(long, env = "SLUICE_FEDERATION")]
    federation: Option<PathBuf>,
    /// Drive node agents: the file naming each node's agent (see idc/src/agents.rs).
    #[arg(long, env = "SLUICE_AGENTS")]
    agents: Option<PathBuf>,
    /// Who may make operator-only requests (the emergency stop): a TOML file of names
    /// and token digests (see `sluice operator-token`). Without it, nobody may.
    #[arg(long, env = "SLUICE_OPERATORS")]
    operators: Option<PathBuf>,
    /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:9184.
    #[arg(long, env = "SLUICE_METRICS")]
    metrics: Option<SocketAddr>,
}

/// `sluice serve`'s settings, each from the command line or the environment, else the
/// settings file, else its default.
struct Serve {
    listen: SocketAddr,
    data_dir: PathBuf,
    database: Option<String>,
    topology: Option<PathBuf>,
    hold_timeout: chrono::TimeDelta,
    log_format: LogFormat,
    federation: Option<PathBuf>,
    agents: Option<PathBuf>,
    operators: Option<PathBuf>,
    metrics: Option<SocketAddr>,
}

impl ServeArgs {
    fn resolve(self) -> Result<Serve, String> {
        let file = match &self.config {
            Some(path) => config::ServeFile::load(path)?,
            None => config::ServeFile::default(),
        };
        let hold_timeout = match (self.hold_timeout, &file.hold_timeout) {
            (Some(t), _) => t,
            (None, Some(s)) => parse_duration_arg(s).map_err(|e| format!("hold_timeout: {e}"))?,
            (None, None) => chrono::TimeDelta::seconds(120),
        };
        let log_format = match (self.log_format, &file.log_format) {
            (Some(f), _) => f,
            (None, Some(s)) => LogFormat::from_str(s, true)
                .map_err(|_| format!("log_format: {s:?} is not text or json"))?,
            (None, None) => LogFormat::Text,
        };
        Ok(Serve {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("static address")),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("sluice-data")),
            database: self.database.or(file.database),
            topology: self.topology.or(file.topology),
            hold_timeout,
            log_format,
            federation: self.federation.or(file.federation),
            agents: self.agents.or(file.agents),
            operators: self.operators.or(file.operators),
            metrics: self.metrics.or(file.metrics),
        })
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// A reservation, or a series with --occurrence.
    id: String,
    /// Which occurrence of the series `id` (from 1).
    #[arg(long)]
    occurrence: Option<u32>,
    /// How long the throughput stream runs (at most 60s; 0s: delay and loss only).
    #[arg(long, default_value = "10s", value_parser = parse_duration_or_zero)]
    duration: chrono::TimeDelta,
    /// Pass if the throughput is at least this share of the booking: 0.95 or 95%.
    #[arg(long, value_parser = parse_share)]
    min_throughput: Option<f64>,
    /// Pass if at most this share of the probes is lost: 0.01 or 1%.
    #[arg(long, value_parser = parse_share)]
    max_loss: Option<f64>,
    /// Pass only if the mean round trip is at most this many milliseconds.
    #[arg(long)]
    max_rtt_ms: Option<f64>,
    /// TWAMP-Light probes, 10 ms apart.
    #[arg(long, default_value_t = 100)]
    probes: u32,
}

fn parse_duration_or_zero(s: &str) -> Result<chrono::TimeDelta, String> {
    match time::parse_duration(s) {
        Some(d) if d >= chrono::TimeDelta::zero() => Ok(d),
        _ => Err(format!("{s:?} is not a duration (e.g. 10s, 1m, 0s)")),
    }
}

/// A share as a fraction (0.95) or a percentage (95%).
fn parse_share(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a share: 0.95 or 95%");
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(bad());
    }
    Ok(v)
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?} is not NODESxLINKS (e.g. 1000x5000)");
    let (n, l) = s.split_once('x').ok_or_else(bad)?;
    let (n, l): (usize, usize) = (n.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?);
    if n < 2 || l < n - 1 || l > n * (n - 1) / 2 {
        return Err(format!(
            "{n} nodes need between {} and {} links to be connected and simple",
            n.saturating_sub(1),
            n * n.saturating_sub(1) / 2
        ));
    }
    Ok((n, l))
}

fn parse_duration_arg(s: &str) -> Result<chrono::TimeDelta, String> {
    match time::parse_duration(s) {
        Some(d) if d > chrono::TimeDelta::zero() => Ok(d),
        _ => Err(format!(
            "{s:?} is not a positive duration (e.g. 120s, 5m, 1h)"
        )),
    }
}

/// What a circuit needs: shared by `reserve` and `paths`.
#[derive(Args)]
struct CircuitArgs {
    /// Source STP: domain:node:port, optionally ?vlan=100 or ?vlan=100-200.
    src: String,
    /// Destination STP.
    dst: String,
    /// Bandwidth in Mb/s, A→Z (src to dst); also Z→A unless --bw-reverse says otherwise.
    #[arg(long, allow_negative_numbers = true)]
    bw: i64,
    /// Z→A bandwidth in Mb/s, for an asymmetric circuit (0: one-way).
    #[arg(long, allow_negative_numbers = true)]
    bw_reverse: Option<i64>,
    /// Start (default: now).
    #[arg(long)]
    start: Option<String>,
    /// End (required, except for a series: each occurrence has its own).
    #[arg(long)]
    end: Option<String>,
    /// VLAN or range for both ends (unless the STP or --src-vlan/--dst-vlan says otherwise).
    #[arg(long)]
    vlan: Option<String>,
    #[arg(long)]
    src_vlan: Option<String>,
    #[arg(long)]
    dst_vlan: Option<String>,
    /// Pass through this node, or node:port of an internal link (repeat, in order).
    #[arg(long = "via")]
    via: Vec<String>,
    /// Avoid this node or link (repeat).
    #[arg(long = "avoid")]
    avoid: Vec<String>,
}

impl CircuitArgs {
    fn criteria(self) -> Result<v1::Criteria, Error> {
        let start = self
            .start
            .as_deref()
            .map(|s| time_arg(s, "start"))
            .transpose()?;
        let end = match &self.end {
            Some(e) => time_arg(e, "end")?,
            None => return Err(Error::missing("end")),
        };
        Ok(v1::Criteria {
            src: self.src,
            dst: self.dst,
            src_vlan: self
                .src_vlan
                .or_else(|| self.vlan.clone())
                .unwrap_or_default(),
            dst_vlan: self.dst_vlan.or(self.vlan).unwrap_or_default(),
            capacity_mbps: self.bw,
            reverse_capacity_mbps: self.bw_reverse,
            start: start.map(time::timestamp),
            end: Some(time::timestamp(end)),
            ero_include: self.via,
            ero_exclude: self.avoid,
            ..Default::default()
        })
    }
}

#[derive(Args)]
struct ReserveArgs {
    #[command(flatten)]
    circuit: CircuitArgs,
    #[arg(long, default_value = "")]
    description: String,
    /// Wait for `sluice provision` instead of provisioning at the start automatically.
    #[arg(long)]
    manual: bool,
    /// Only hold; commit later with `sluice commit` (before the hold timeout).
    #[arg(long)]
    hold_only: bool,
    /// A short verify each time the circuit comes up (each occurrence's start), stored
    /// with it (`sluice history`); needs an IDC that drives node agents.
    #[arg(long)]
    verify_each: bool,
    /// How long each such check's throughput stream runs (0s: delay and loss only).
    #[arg(long, requires = "verify_each", value_parser = parse_duration_or_zero)]
    verify_each_duration: Option<chrono::TimeDelta>,
    #[command(flatten)]
    repeat: series::RecurrenceArgs,
}

impl ReserveArgs {
    fn verify_each(&self) -> Option<v1::VerifyEach> {
        self.verify_each.then(|| v1::VerifyEach {
            duration_ms: self
                .verify_each_duration
                .map(|d| d.num_milliseconds().clamp(0, u32::MAX as i64) as u32),
            ..Default::default()
        })
    }
}

#[derive(Args)]
struct PathsArgs {
    #[command(flatten)]
    circuit: CircuitArgs,
    /// Alternatives to show after the best path (at most 10).
    #[arg(long, default_value_t = 3)]
    k: u32,
    /// Leave out the widest path (the one with the most room for the window).
    #[arg(long)]
    no_widest: bool,
}

#[derive(Args)]
struct ModifyArgs {
    id: String,
    #[arg(long, allow_negative_numbers = true)]
    bw: Option<i64>,
    /// Z→A bandwidth (default: a symmetric circuit stays symmetric).
    #[arg(long, allow_negative_numbers = true)]
    bw_reverse: Option<i64>,
    #[arg(long)]
    start: Option<String>,
    #[arg(long)]
    end: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// A state name (ReserveHeld, Provisioned, Terminated, ...) or summary (held,
    /// committed, active, ended, ...); repeat for any of several.
    #[arg(long = "state")]
    states: Vec<String>,
    #[arg(long)]
    owner: Option<String>,
    /// node:port or domain:node:port.
    #[arg(long)]
    port: Option<String>,
    /// Reservations whose window overlaps [from, to).
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Args)]
struct WatchArgs {
    /// Only this reservation.
    id: Option<String>,
    /// First replay the recorded events after this sequence number (0: all).
    #[arg(long)]
    since: Option<u64>,
}

#[derive(Args)]
struct AvailabilityArgs {
    /// A link id.
    #[arg(long, conflicts_with = "port", required_unless_present = "port")]
    link: Option<String>,
    /// A port: node:port or domain:node:port.
    #[arg(long)]
    port: Option<String>,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// Draw an ASCII timeline instead of a table.
    #[arg(long)]
    timeline: bool,
    /// Width of the timeline in columns.
    #[arg(long, default_value_t = 72)]
    width: usize,
}

/// What a command produced: a JSON document and its text form.
struct Out {
    json: serde_json::Value,
    text: String,
    /// The command worked but its answer is a failure (a verify that did not pass):
    /// printed as usual, and the exit status is 1.
    failed: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_out = cli.json;
    let user = cli
        .user
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "anonymous".into());
    let result = match cli.cmd {
        Cmd::Serve(args) => return serve(args),
        Cmd::Agent(args) => return agent::run(args),
        Cmd::Bench(args) => return bench::run(args, &cli.server, json_out),
        Cmd::Migrate { data_dir, database } => migrate(&data_dir, database.as_deref()),
        // Before the --file arm: --check takes --file as the topology to check.
        Cmd::Topology {
            check: true,
            agents: Some(agents),
            file,
            ..
        } => return check::run(&agents, file.as_deref(), &cli.server, &user, json_out),
        Cmd::Topology { file: Some(f), .. } => check_topology_file(&f),
        Cmd::Certs(a) => federation::certs(&a).map(|(json, text)| {
            Some(Out {
                json,
                text,
                failed: false,
            })
        }),
        Cmd::OperatorToken { name } => {
            let (token, entry) = sluice_idc::operators::new_token(&name);
            Ok(Some(Out {
                failed: false,
                json: json!({ "name": name, "token": token, "operators_entry": entry }),
                text: format!(
                    "token for {name} (keep it secret; give it with --token-file or SLUICE_TOKEN):\n{token}\n\nadd to the IDC's operators file (sluice serve --operators):\n{entry}"
                ),
            }))
        }
        Cmd::Topology {
            generate: Some((nodes, links)),
            seed,
            ..
        } => {
            let t =
                sluice_pce::generate::build(&sluice_pce::generate::Params { nodes, links, seed });
            print!("{}", sluice_idc::topology_file::to_toml(&t));
            return ExitCode::SUCCESS;
        }
        cmd => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(run_client(cmd, &cli.server, &user, json_out))
        }
    };
    match result {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            let _ = if json_out {
                writeln!(stdout, "{}", out.json)
            } else {
                writeln!(stdout, "{}", out.text)
            };
            if out.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&e, json_out),
    }
}

/// Prints an error the way every command does (scripts match on its code and field).
fn fail(e: &Error, json_out: bool) -> ExitCode {
    if json_out {
        println!("{}", output::error_json(e));
    } else {
        eprintln!("{}", output::error_human(e));
    }
    ExitCode::FAILURE
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn time_arg(text: &str, field: &str) -> Result<DateTime<Utc>, Error> {
    time::parse_time(text, now()).map_err(|m| Error::invalid(field, m))
}

fn reservation_out(r: &v1::Reservation) -> Out {
    Out {
        failed: false,
        json: output::reservation_json(r),
        text: output::reservation_human(r),
    }
}

async fn run_client(
    cmd: Cmd,
    server: &str,
    user: &str,
    json_out: bool,
) -> Result<Option<Out>, Error> {
    let mut c = connect(server, user).await?;
    let out = match cmd {
        Cmd::Reserve(a) => reserve(&mut c, *a).await?,
        Cmd::Paths(a) => {
            let req = v1::ComputePathsRequest {
                criteria: Some(a.circuit.criteria()?),
                k: a.k,
                widest: !a.no_widest,
            };
            let reply = c
                .reservations
                .compute_paths(req)
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: output::paths_json(&reply),
                text: output::paths_human(&reply),
            }
        }
        Cmd::Commit { id } => reservation_out(&c.call(IdCall::Commit, &id).await?),
        Cmd::Abort { id } => reservation_out(&c.call(IdCall::Abort, &id).await?),
        Cmd::Provision { id } => reservation_out(&c.call(IdCall::Provision, &id).await?),
        Cmd::Release { id } => reservation_out(&c.call(IdCall::Release, &id).await?),
        Cmd::Terminate { id } => reservation_out(&c.call(IdCall::Terminate, &id).await?),
        Cmd::Show { id } => reservation_out(&c.call(IdCall::Get, &id).await?),
        Cmd::Occurrences { id } | Cmd::Series(series::SeriesCmd::Show { id }) => series_out(
            &c.reservations
                .get_series(v1::IdRequest { id })
                .await
                .map_err(err)?
                .into_inner(),
        ),
        Cmd::Series(series::SeriesCmd::Commit { id }) => series_out(
            &c.reservations
                .commit_series(v1::IdRequest { id })
                .await
                .map_err(err)?
                .into_inner(),
        ),
        Cmd::Series(series::SeriesCmd::Cancel {
            id,
            occurrence,
            from,
        }) => {
            use v1::cancel_series_request::Scope;
            let scope = match (occurrence, from) {
                (Some(n), _) => Some(Scope::Occurrence(n)),
                (None, Some(f)) => Some(Scope::From(time::timestamp(series::from_arg(&f)?))),
                (None, None) => None,
            };
            series_out(
                &c.reservations
                    .cancel_series(v1::CancelSeriesRequest { id, scope })
                    .await
                    .map_err(err)?
                    .into_inner(),
            )
        }
        Cmd::Series(series::SeriesCmd::Modify {
            id,
            bw,
            bw_reverse,
            shift,
            length,
            occurrence,
            from,
        }) => {
            use v1::modify_series_request::Scope;
            let scope = match (occurrence, from) {
                (Some(n), _) => Some(Scope::Occurrence(n)),
                (None, Some(f)) => Some(Scope::From(time::timestamp(series::from_arg(&f)?))),
                (None, None) => None,
            };
            let req = v1::ModifySeriesRequest {
                id,
                scope,
                capacity_mbps: bw,
                reverse_capacity_mbps: bw_reverse,
                shift_seconds: shift
                    .map(|s| series::shift_arg(&s))
                    .transpose()?
                    .map(|d| d.num_seconds()),
                duration_seconds: length.map(|d| d.num_seconds()),
            };
            series_out(
                &c.reservations
                    .modify_series(req)
                    .await
                    .map_err(err)?
                    .into_inner(),
            )
        }
        Cmd::Series(series::SeriesCmd::Export { id }) => {
            let s = c
                .reservations
                .get_series(v1::IdRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            let ics = series::ics(&s, now());
            Out {
                failed: false,
                json: json!({ "ics": ics }),
                text: ics.trim_end().to_string(),
            }
        }
        Cmd::Modify(m) => {
            let req = v1::ModifyRequest {
                id: m.id,
                capacity_mbps: m.bw,
                start: m
                    .start
                    .map(|s| time_arg(&s, "start"))
                    .transpose()?
                    .map(time::timestamp),
                end: m
                    .end
                    .map(|s| time_arg(&s, "end"))
                    .transpose()?
                    .map(time::timestamp),
                reverse_capacity_mbps: m.bw_reverse,
            };
            reservation_out(&c.reservations.modify(req).await.map_err(err)?.into_inner())
        }
        Cmd::List(l) => {
            let req = v1::ListRequest {
                states: l.states,
                from: l
                    .from
                    .map(|s| time_arg(&s, "from"))
                    .transpose()?
                    .map(time::timestamp),
                to: l
                    .to
                    .map(|s| time_arg(&s, "to"))
                    .transpose()?
                    .map(time::timestamp),
                port: l.port.unwrap_or_default(),
                owner: l.owner.unwrap_or_default(),
                limit: l.limit.unwrap_or(0),
            };
            let reply = c.reservations.list(req).await.map_err(err)?.into_inner();
            Out {
                failed: false,
                json: json!({
                    "reservations": reply.reservations.iter().map(output::reservation_json).collect::<Vec<_>>(),
                    "truncated": reply.truncated,
                }),
                text: output::list_human(&reply.reservations, reply.truncated),
            }
        }
        Cmd::Watch(w) => {
            watch(&mut c, w, json_out).await?;
            return Ok(None);
        }
        Cmd::Verify(a) => {
            let m = c
                .reservations
                .verify(v1::VerifyRequest {
                    id: a.id,
                    occurrence: a.occurrence.unwrap_or(0),
                    duration_ms: Some(
                        a.duration.num_milliseconds().clamp(0, u32::MAX as i64) as u32
                    ),
                    min_throughput_ratio: a.min_throughput,
                    max_loss: a.max_loss,
                    max_rtt_ms: a.max_rtt_ms,
                    probes: a.probes,
                })
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: m.verdict != "pass",
                json: output::measurement_json(&m),
                text: output::measurement_human(&m),
            }
        }
        Cmd::Report { id, html } => {
            let (reservation, series_id) = match c.call(IdCall::Get, &id).await {
                Ok(r) => (r, None),
                Err(e) if e.code == sluice_model::ErrorCode::ReservationNonexistent => {
                    let s = c
                        .reservations
                        .get_series(v1::IdRequest { id: id.clone() })
                        .await
                        .map_err(|_| e)?
                        .into_inner();
                    let first = s.occurrences.first().cloned().ok_or_else(|| {
                        Error::invalid("id", format!("series {id} has no occurrences"))
                    })?;
                    (first, Some(s.id))
                }
                Err(e) => return Err(e),
            };
            let history = c
                .reservations
                .history(v1::IdRequest { id: id.clone() })
                .await
                .map_err(err)?
                .into_inner();
            // The path as each domain shows it now; without it the report still stands.
            let domains = c
                .reservations
                .status(v1::IdRequest {
                    id: reservation.id.clone(),
                })
                .await
                .map(|s| s.into_inner().domains)
                .unwrap_or_default();
            let rep = report::Report {
                reservation,
                series_id,
                measurements: history.measurements.clone(),
                domains,
            };
            match html {
                Some(path) => {
                    std::fs::write(&path, report::html(&rep)).map_err(|e| {
                        Error::invalid("html", format!("cannot write {}: {e}", path.display()))
                    })?;
                    Out {
                        failed: false,
                        json: json!({
                            "id": id,
                            "html": path.display().to_string(),
                            "measurements": rep.measurements.len(),
                        }),
                        text: format!(
                            "wrote {}: {} measurement{}, the path across {} domain{}",
                            path.display(),
                            rep.measurements.len(),
                            if rep.measurements.len() == 1 { "" } else { "s" },
                            rep.domains.len(),
                            if rep.domains.len() == 1 { "" } else { "s" }
                        ),
                    }
                }
                None => Out {
                    failed: false,
                    json: json!({
                        "id": id,
                        "reservation": output::reservation_json(&rep.reservation),
                        "measurements": rep.measurements.iter().map(output::measurement_json).collect::<Vec<_>>(),
                    }),
                    text: report::text(&rep, &output::history_human(&history)),
                },
            }
        }
        Cmd::Status { id } => {
            let s = c
                .reservations
                .status(v1::IdRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: output::status_json(&s),
                text: output::status_human(&s),
            }
        }
        Cmd::History { id } => {
            let h = c
                .reservations
                .history(v1::IdRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: json!({
                    "measurements": h.measurements.iter().map(output::measurement_json).collect::<Vec<_>>()
                }),
                text: output::history_human(&h),
            }
        }
        Cmd::EmergencyStop {
            id,
            owner,
            token_file,
        } => {
            let token = match token_file {
                Some(f) => std::fs::read_to_string(&f)
                    .map_err(|e| {
                        Error::invalid("token_file", format!("cannot read {}: {e}", f.display()))
                    })?
                    .trim()
                    .to_string(),
                None => std::env::var("SLUICE_TOKEN").unwrap_or_default(),
            };
            let mut req = tonic::Request::new(v1::EmergencyStopRequest {
                id: id.unwrap_or_default(),
                owner: owner.unwrap_or_default(),
            });
            if !token.is_empty() {
                let v = token.parse().map_err(|_| {
                    Error::invalid("token_file", "the token is not printable ASCII")
                })?;
                req.metadata_mut().insert(sluice_proto::TOKEN_HEADER, v);
            }
            let reply = c
                .reservations
                .emergency_stop(req)
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: output::emergency_stop_json(&reply),
                text: output::emergency_stop_human(&reply),
            }
        }
        Cmd::Audit {
            who,
            id,
            after,
            limit,
        } => {
            let a = c
                .reservations
                .audit(v1::AuditRequest {
                    who: who.unwrap_or_default(),
                    target: id.unwrap_or_default(),
                    after_seq: after,
                    limit,
                })
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: output::audit_json(&a),
                text: output::audit_human(&a),
            }
        }
        Cmd::Topology { all: true, .. } | Cmd::Domains => {
            let all = matches!(cmd, Cmd::Topology { .. });
            let d = c
                .topology
                .domains(v1::DomainsRequest {})
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: federation::domains_json(&d),
                text: if all {
                    federation::documents_human(&d)
                } else {
                    federation::domains_human(&d)
                },
            }
        }
        Cmd::Topology { .. } => {
            let t = c
                .topology
                .get_topology(v1::GetTopologyRequest {})
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: output::topology_json(&t),
                text: output::topology_human(&t),
            }
        }
        Cmd::Availability(a) => {
            let req = v1::AvailabilityRequest {
                link: a.link.unwrap_or_default(),
                port: a.port.unwrap_or_default(),
                from: a
                    .from
                    .map(|s| time_arg(&s, "from"))
                    .transpose()?
                    .map(time::timestamp),
                to: a
                    .to
                    .map(|s| time_arg(&s, "to"))
                    .transpose()?
                    .map(time::timestamp),
            };
            let reply = c
                .reservations
                .availability(req)
                .await
                .map_err(err)?
                .into_inner();
            Out {
                failed: false,
                json: output::availability_json(&reply),
                text: if a.timeline {
                    output::availability_timeline(&reply, a.width.clamp(10, 400))
                } else {
                    output::availability_table(&reply)
                },
            }
        }
        Cmd::Calendar(a) => {
            let tz: chrono_tz::Tz = a.tz.parse().map_err(|_| {
                Error::invalid("tz", format!("{:?} is not an IANA time zone", a.tz))
            })?;
            let (from, to) = series::week_bounds(a.week.as_deref(), tz, now())?;
            let avail = c
                .reservations
                .availability(v1::AvailabilityRequest {
                    link: a.link.clone().unwrap_or_default(),
                    port: a.port.clone().unwrap_or_default(),
                    from: Some(time::timestamp(from)),
                    to: Some(time::timestamp(to)),
                })
                .await
                .map_err(err)?
                .into_inner();
            let listed = c
                .reservations
                .list(v1::ListRequest {
                    from: Some(time::timestamp(from)),
                    to: Some(time::timestamp(to)),
                    port: a.port.clone().unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(err)?
                .into_inner();
            // Circuits that hold the resource: on a link, those whose path crosses it.
            let mut circuits: Vec<v1::Reservation> = listed
                .reservations
                .into_iter()
                .filter(|r| {
                    a.link
                        .as_ref()
                        .is_none_or(|l| r.path.iter().any(|h| &h.link == l))
                })
                .filter(|r| {
                    !matches!(
                        output::states(r).summary.as_str(),
                        "terminated" | "aborted" | "timed-out"
                    )
                })
                .collect();
            circuits.sort_by_key(|r| r.start.as_ref().map(|t| (t.seconds, t.nanos)));
            Out {
                failed: false,
                json: json!({
                    "availability": output::availability_json(&avail),
                    "reservations": circuits.iter().map(output::reservation_json).collect::<Vec<_>>(),
                }),
                text: series::calendar_human(&avail, &circuits, tz, from),
            }
        }
        Cmd::Serve(_)
        | Cmd::Agent(_)
        | Cmd::Migrate { .. }
        | Cmd::Bench(_)
        | Cmd::Certs(_)
        | Cmd::OperatorToken { .. } => {
            unreachable!("handled before connecting")
        }
    };
    Ok(Some(out))
}

fn series_out(s: &v1::Series) -> Out {
    Out {
        failed: false,
        json: series::series_json(s),
        text: series::series_human(s),
    }
}

async fn reserve(c: &mut Client, a: ReserveArgs) -> Result<Out, Error> {
    if a.repeat.is_series() {
        return reserve_series(c, a).await;
    }
    let check = a.verify_each();
    let criteria = v1::Criteria {
        description: a.description,
        provision_mode: if a.manual {
            v1::ProvisionMode::Manual
        } else {
            v1::ProvisionMode::Automatic
        } as i32,
        ..a.circuit.criteria()?
    };
    Ok(reservation_out(
        &c.book_checked(criteria, a.hold_only, check).await?,
    ))
}

/// Holds every occurrence and, unless --hold-only, commits them; a failed commit
/// cancels the series so nothing is left held.
async fn reserve_series(c: &mut Client, a: ReserveArgs) -> Result<Out, Error> {
    if a.circuit.end.is_some() {
        return Err(Error::invalid(
            "end",
            "a series takes each occurrence's times from its rule (--every, --cron, --rrule with --for); drop --end",
        ));
    }
    let from = a
        .circuit
        .start
        .as_deref()
        .map(|s| time_arg(s, "start"))
        .transpose()?
        .unwrap_or_else(now);
    let check = a.verify_each();
    let criteria = v1::Criteria {
        src: a.circuit.src,
        dst: a.circuit.dst,
        src_vlan: a
            .circuit
            .src_vlan
            .or_else(|| a.circuit.vlan.clone())
            .unwrap_or_default(),
        dst_vlan: a.circuit.dst_vlan.or(a.circuit.vlan).unwrap_or_default(),
        capacity_mbps: a.circuit.bw,
        reverse_capacity_mbps: a.circuit.bw_reverse,
        ero_include: a.circuit.via,
        ero_exclude: a.circuit.avoid,
        description: a.description,
        provision_mode: if a.manual {
            v1::ProvisionMode::Manual
        } else {
            v1::ProvisionMode::Automatic
        } as i32,
        ..Default::default()
    };
    let mut req = a.repeat.request(criteria, from)?;
    req.verify_each = check;
    let held = c
        .reservations
        .reserve_series(req)
        .await
        .map_err(err)?
        .into_inner();
    if a.hold_only {
        return Ok(series_out(&held));
    }
    match c
        .reservations
        .commit_series(v1::IdRequest {
            id: held.id.clone(),
        })
        .await
    {
        Ok(s) => Ok(series_out(&s.into_inner())),
        Err(e) => {
            let _ = c
                .reservations
                .cancel_series(v1::CancelSeriesRequest {
                    id: held.id,
                    scope: None,
                })
                .await;
            Err(err(e))
        }
    }
}

async fn watch(c: &mut Client, w: WatchArgs, json_out: bool) -> Result<(), Error> {
    let mut stream = c
        .reservations
        .watch(v1::WatchRequest {
            reservation_id: w.id.unwrap_or_default(),
            since_seq: w.since,
        })
        .await
        .map_err(err)?
        .into_inner();
    let mut stdout = std::io::stdout();
    while let Some(e) = stream.next().await {
        let e = e.map_err(err)?;
        let line = if json_out {
            output::event_json(&e).to_string()
        } else {
            output::event_human(&e)
        };
        if writeln!(stdout, "{line}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            break; // the reader went away (e.g. `| head`)
        }
    }
    Ok(())
}

fn migrate(data_dir: &std::path::Path, url: Option<&str>) -> Result<Option<Out>, Error> {
    use sluice_idc::store::{Database, Store};
    let database =
        Database::choose(data_dir, url).map_err(|e| Error::invalid("database", e.to_string()))?;
    let applied = Store::migrate_database(&database).map_err(|e| Error::internal(e.to_string()))?;
    let db = database.describe();
    Ok(Some(Out {
        failed: false,
        json: json!({"database": db, "applied": applied}),
        text: if applied.is_empty() {
            format!("{db}: up to date")
        } else {
            format!("{db}: applied {}", applied.join(", "))
        },
    }))
}

fn check_topology_file(path: &std::path::Path) -> Result<Option<Out>, Error> {
    let t = sluice_idc::topology_file::load(path)
        .map_err(|e| Error::invalid("topology", e.to_string()))?;
    let reply = sluice_proto::convert::topology(&t);
    Ok(Some(Out {
        failed: false,
        json: output::topology_json(&reply),
        text: output::topology_human(&reply),
    }))
}

/// Logs to stderr, `RUST_LOG` or info.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let args = match args.resolve() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: bad settings: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(args.log_format);
    let (topology, topology_name) = match &args.topology {
        Some(path) => match sluice_idc::topology_file::load(path) {
            Ok(t) => (t, path.display().to_string()),
            Err(e) => {
                eprintln!("error: bad topology: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => (
            sluice_idc::topology_file::bundled(),
            sluice_idc::topology_file::BUNDLED_NAME.to_string(),
        ),
    };
    let federation = match &args.federation {
        None => None,
        Some(path) => match sluice_idc::federation::FederationConfig::load(path)
            .and_then(|c| sluice_idc::federation::FederationSetup::from_config(&c))
        {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: bad federation file: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let agents = match &args.agents {
        None => None,
        Some(path) => match sluice_idc::agents::AgentsConfig::load(path) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("error: bad agents file: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let operators = match &args.operators {
        None => sluice_idc::operators::Operators::default(),
        Some(path) => match sluice_idc::operators::Operators::load(path) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: bad operators file: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let opts = sluice_idc::ServerOptions {
            listen: args.listen,
            data_dir: args.data_dir.clone(),
            database: args.database.clone(),
            topology: Arc::new(topology),
            hold_timeout: args.hold_timeout,
            federation,
            agents,
            operators,
            metrics: args.metrics,
        };
        let nodes = opts.topology.nodes().len();
        let links = opts.topology.links().len();
        let domain = opts.topology.domain.clone();
        let server = match sluice_idc::start(opts, Arc::new(sluice_idc::clock::SystemClock)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Scripts wait for this line; keep its shape.
        println!(
            "sluice: domain {domain} ({nodes} nodes, {links} links, from {topology_name}) listening on {} (data in {})",
            server.addr,
            server.idc.store().database().describe()
        );
        if let Some((addr, fed)) = &server.federation {
            println!(
                "sluice: domain {domain} federation on {addr} (mutual TLS; peers call {})",
                fed.url()
            );
        }
        if let Some(addr) = &server.metrics {
            println!("sluice: domain {domain} metrics on http://{addr}/metrics");
        }
        let _ = std::io::stdout().flush();
        match server.run_until(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
