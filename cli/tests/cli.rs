//! The `sluice` binary against real IDCs: one in this process (on 127.0.0.1:0, its own
//! temporary SQLite), or `sluice serve` as a child process for the crash tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_idc::testing::TestIdc;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const HOUSTON: &str = "internet2:houston:xe-0/0/0";
const NEW_YORK: &str = "internet2:new-york:xe-0/0/0";

fn sluice(server: &str, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .args(["--server", server])
        .env_remove("SLUICE_SERVER")
        .env("SLUICE_USER", "alice")
        .stdin(Stdio::null())
        .output()
        .expect("run sluice")
}

/// Runs a command with --json and returns its document and whether it succeeded.
fn json(server: &str, args: &[&str]) -> (Value, bool) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = sluice(server, &all);
    let text = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {text:?} stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (doc, out.status.success())
}

fn ok(server: &str, args: &[&str]) -> Value {
    let (doc, success) = json(server, args);
    assert!(success, "sluice {args:?} failed: {doc}");
    doc
}

fn fail(server: &str, args: &[&str]) -> Value {
    let (doc, success) = json(server, args);
    assert!(!success, "sluice {args:?} should fail: {doc}");
    doc["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_show_list_and_lifecycle_through_the_binary() {
    let idc = TestIdc::builder().start().await;
    let url = idc.url();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let url = url2.as_str();
        let r = ok(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "1000",
                "--start",
                "+10m",
                "--end",
                "+2h",
                "--description",
                "cli test",
            ],
        );
        let id = r["id"].as_str().unwrap().to_string();
        assert_eq!(r["state"]["reservation"], "ReserveStart");
        assert_eq!(r["state"]["provision"], "Released");
        assert_eq!(r["state"]["lifecycle"], "Created");
        assert_eq!(r["state"]["summary"], "committed");
        assert_eq!(r["bw_mbps"], 1000);
        assert_eq!(r["owner"], "alice");
        assert!(r["path"].as_array().unwrap().len() >= 2, "{r}");
        assert!(r["start"].as_str().unwrap().ends_with('Z'));

        let held = ok(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "10",
                "--end",
                "+1h",
                "--hold-only",
                "--vlan",
                "200",
            ],
        );
        assert_eq!(held["state"]["reservation"], "ReserveHeld");
        assert_eq!(held["src_vlan"], 200);
        let hid = held["id"].as_str().unwrap().to_string();

        let listed = ok(url, &["list", "--state", "held"]);
        let ids: Vec<&str> = listed["reservations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![hid.as_str()]);
        let committed = ok(url, &["commit", &hid]);
        assert_eq!(committed["committed_version"], 1);
        let e = fail(url, &["commit", &hid]);
        assert_eq!(e["code"], "00201");

        assert_eq!(
            ok(url, &["provision", &id])["state"]["provision"],
            "Provisioned"
        );
        assert_eq!(ok(url, &["release", &id])["state"]["provision"], "Released");
        let modified = ok(url, &["modify", &id, "--bw", "2000"]);
        assert_eq!(
            (modified["version"].as_u64(), modified["bw_mbps"].as_u64()),
            (Some(2), Some(2000))
        );
        assert_eq!(
            ok(url, &["terminate", &id])["state"]["lifecycle"],
            "Terminated"
        );
        assert_eq!(ok(url, &["show", &id])["state"]["summary"], "terminated");

        // The human forms read well and say the same.
        let out = sluice(url, &["show", &hid]);
        let text = String::from_utf8_lossy(&out.stdout);
        // It started when it was booked and is automatic: committed after its start, it
        // went up at once.
        assert!(
            text.contains(&format!("reservation {hid}  active")),
            "{text}"
        );
        assert!(text.contains("houston"), "{text}");
        let out = sluice(url, &["list"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("2 reservations"));

        // What alice did to the first reservation, as the audit log has it.
        let log = ok(url, &["audit", "--id", &id]);
        let actions: Vec<(&str, &str)> = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            [
                ("reserve", "ok"),
                ("commit", "ok"),
                ("provision", "ok"),
                ("release", "ok"),
                ("modify", "ok"),
                ("terminate", "ok"),
            ],
            "{log}"
        );
        // The refused second commit of the held one, in the table.
        let out = sluice(url, &["audit", "--who", "alice"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .any(|l| l.contains("commit") && l.contains(&hid) && l.contains("00201")),
            "{text}"
        );
    })
    .await
    .unwrap();
    idc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_is_a_dry_run_with_alternatives_and_says_when_a_full_port_frees_up() {
    let idc = TestIdc::builder().start().await;
    let url = idc.url();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let url = url2.as_str();
        let window = ["--start", "+10m", "--end", "+2h"];
        let mut args = vec!["paths", HOUSTON, NEW_YORK, "--bw", "1000", "--k", "2"];
        args.extend(window);
        let p = ok(url, &args);
        let best = &p["best"];
        assert!(best["hops"].as_u64().unwrap() >= 2, "{p}");
        let alts = p["alternatives"].as_array().unwrap();
        assert_eq!(
            alts.len(),
            2,
            "Abilene has several routes Houston→New York: {p}"
        );
        let metrics: Vec<u64> = std::iter::once(best)
            .chain(alts)
            .map(|c| c["metric"].as_u64().unwrap())
            .collect();
        assert!(metrics.windows(2).all(|m| m[0] <= m[1]), "{metrics:?}");
        assert_ne!(best["path"], alts[0]["path"]);
        // Headroom is what is left after the request; the end ports (10 Gb/s) bind.
        assert_eq!(best["available_mbps"], 10_000);
        assert_eq!(best["headroom_mbps"], 9_000);
        assert!(p["widest"]["available_mbps"].as_u64().unwrap() >= 9_000);
        assert!(
            ok(url, &["list"])["reservations"]
                .as_array()
                .unwrap()
                .is_empty(),
            "a dry run books nothing"
        );
        let out = sluice(url, &args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("best") && text.contains("alt 2") && text.contains("headroom"),
            "{text}"
        );
        let mut too_many = args.clone();
        too_many[6] = "11";
        let e = fail(url, &too_many);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("00100"), Some("k")),
            "{e}"
        );

        // Fill the source port for the window: nothing fits until that booking ends.
        let mut fill = vec!["reserve", HOUSTON, NEW_YORK, "--bw", "10000"];
        fill.extend(window);
        let full = ok(url, &fill);
        let e = fail(url, &args);
        assert_eq!(e["code"], "00705", "{e}");
        assert_eq!(e["available_mbps"], 0);
        assert_eq!(e["earliest_start"], full["end"], "{e}");
        let out = sluice(url, &args);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("earliest start that fits"), "{text}");

        // Asymmetric: A→Z and Z→A are booked each in its own direction.
        let mut asym = vec![
            "reserve",
            "internet2:houston:xe-0/0/1",
            "internet2:kansas-city:xe-0/0/0",
            "--bw",
            "1000",
            "--bw-reverse",
            "100",
        ];
        asym.extend(window);
        let r = ok(url, &asym);
        assert_eq!(
            (r["bw_mbps"].as_u64(), r["reverse_bw_mbps"].as_u64()),
            (Some(1000), Some(100))
        );
        let hop = &r["path"][0];
        assert!(
            hop["vlan"].as_u64().is_some(),
            "each hop records its VLAN: {r}"
        );
        let link = hop["link"].as_str().unwrap();
        let from = hop["from"].as_str().unwrap();
        let av = ok(
            url,
            &[
                "availability",
                "--link",
                link,
                "--from",
                "+30m",
                "--to",
                "+31m",
            ],
        );
        for d in av["directions"].as_array().unwrap() {
            let booked = d["steps"][0]["booked_mbps"].as_u64().unwrap();
            let along = d["direction"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{from}→"));
            assert_eq!(booked, if along { 1000 } else { 100 }, "{av}");
        }
        let out = sluice(url, &["show", r["id"].as_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("1000 Mb/s A→Z, 100 Mb/s Z→A"), "{text}");
    })
    .await
    .unwrap();
    idc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_code_and_field_and_exit_non_zero() {
    let idc = TestIdc::builder().start().await;
    let url = idc.url();
    tokio::task::spawn_blocking(move || {
        let url = url.as_str();
        let e = fail(
            url,
            &[
                "reserve", HOUSTON, NEW_YORK, "--bw", "20000", "--end", "+1h",
            ],
        );
        assert_eq!(e["code"], "00705");
        assert_eq!(e["field"], "capacity_mbps");
        assert_eq!(e["requested_mbps"], 20000);
        assert_eq!(e["available_mbps"], 10000, "the edge ports are 10 Gb/s");
        let e = fail(
            url,
            &["reserve", HOUSTON, NEW_YORK, "--bw", "-5", "--end", "+1h"],
        );
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("00100"), Some("capacity_mbps"))
        );
        let e = fail(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "5",
                "--end",
                "yesterday",
            ],
        );
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("00100"), Some("end"))
        );
        let e = fail(
            url,
            &[
                "reserve",
                "internet2:nowhere:x",
                NEW_YORK,
                "--bw",
                "5",
                "--end",
                "+1h",
            ],
        );
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("00701"), Some("src"))
        );
        let e = fail(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "5",
                "--end",
                "+1h",
                "--src-vlan",
                "5",
            ],
        );
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("00709"), Some("src_vlan"))
        );
        let e = fail(url, &["show", "internet2-nope"]);
        assert_eq!(e["code"], "00203");
        // Nothing was booked by any of that.
        assert_eq!(
            ok(url, &["list"])["reservations"].as_array().unwrap().len(),
            0
        );

        // Without --json the error is one readable line on stderr.
        let out = sluice(
            url,
            &[
                "reserve", HOUSTON, NEW_YORK, "--bw", "20000", "--end", "+1h",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(
                "error 00705 CAPACITY_UNAVAILABLE [capacity_mbps]: requested 20000, available 10000"
            ),
            "{err}"
        );
    })
    .await
    .unwrap();
    idc.shutdown().await;
}

#[test]
fn an_unreachable_server_is_reported_plainly() {
    let out = sluice("http://127.0.0.1:1", &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the IDC at http://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_availability_and_watch() {
    let idc = TestIdc::builder().start().await;
    let url = idc.url();
    tokio::task::spawn_blocking(move || {
        let url = url.as_str();
        let t = ok(url, &["topology"]);
        assert_eq!(t["domain"], "internet2");
        assert_eq!(t["nodes"].as_array().unwrap().len(), 11);
        // Not federated: no other domains, said plainly.
        let d = ok(url, &["domains"]);
        assert_eq!(d["domains"].as_array().unwrap().len(), 0);
        let text = String::from_utf8_lossy(&sluice(url, &["domains"]).stdout).to_string();
        assert!(text.contains("without federation"), "{text}");
        let r = ok(
            url,
            &[
                "reserve", HOUSTON, NEW_YORK, "--bw", "5000", "--start", "+1h", "--end", "+3h",
            ],
        );
        let id = r["id"].as_str().unwrap();

        let a = ok(
            url,
            &[
                "availability",
                "--port",
                "houston:xe-0/0/0",
                "--from",
                "now",
                "--to",
                "+4h",
            ],
        );
        let steps = a["directions"][0]["steps"].as_array().unwrap();
        let booked: Vec<u64> = steps
            .iter()
            .map(|s| s["booked_mbps"].as_u64().unwrap())
            .collect();
        assert_eq!(booked, vec![0, 5000, 0], "{a}");
        assert_eq!(a["vlans_in_use"], serde_json::json!([100]));
        let link = &r["path"][0]["link"];
        let out = sluice(
            url,
            &[
                "availability",
                "--link",
                link.as_str().unwrap(),
                "--from",
                "now",
                "--to",
                "+4h",
                "--timeline",
                "--width",
                "40",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("peak booked 5000 Mb/s") && text.contains('▄'),
            "{text}"
        );

        // Watch replays history with --since 0, then follows.
        let mut watch = Command::new(SLUICE)
            .args(["watch", id, "--since", "0", "--json", "--server", url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(
            (first["machine"].as_str(), first["to"].as_str()),
            (Some("reservation"), Some("ReserveHeld"))
        );
        ok(url, &["terminate", id]);
        let mut saw_terminated = false;
        for line in lines.by_ref().take(10) {
            let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if e["to"] == "Terminated" {
                saw_terminated = true;
                break;
            }
        }
        watch.kill().unwrap();
        watch.wait().unwrap();
        assert!(saw_terminated);
    })
    .await
    .unwrap();
    idc.shutdown().await;
}

#[test]
fn topology_file_errors_name_the_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[domain]\nid = \"d\"\n\n[[node]]\nid = \"a\"\nports = [ { name = \"p\", vlans = \"10-5\", capacity_mbps = 10 } ]\n",
    )
    .unwrap();
    let out = Command::new(SLUICE)
        .args(["topology", "--file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:6:") && err.contains("node[0].ports[0].vlans"),
        "{err}"
    );
    // `serve` refuses it too, before opening anything.
    let out = Command::new(SLUICE)
        .args(["serve", "--listen", "127.0.0.1:0", "--topology"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:6:"));
    // The bundled files are fine.
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/garr.toml");
    let out = Command::new(SLUICE)
        .args(["topology", "--json", "--file"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["domain"], "garr");
}

/// `sluice serve` as a child process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &Path, hold_timeout: &str) -> Server {
        Server::start_with(data_dir, hold_timeout, &[])
    }

    fn start_with(data_dir: &Path, hold_timeout: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(SLUICE)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--hold-timeout",
                hold_timeout,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next());
        let url = format!(
            "http://{}",
            addr.unwrap_or_else(|| panic!("no address in {line:?}"))
        );
        Server { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one load thread of the SIGKILL tests saw acknowledged.
struct Acknowledged {
    committed: Vec<String>,
    held: Vec<String>,
    /// A request failed (its server went away, or refused it).
    stopped: Option<Value>,
}

/// Books Houston → New York on `url` in a loop until `stop` (at most `max`), every
/// fourth only held; booking `i` of thread `w` over the window `window(w, i)` gives
/// (`--start`, `--end`). Stops at the first failure.
fn book_until(
    url: String,
    w: usize,
    max: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    window: fn(usize, usize) -> (String, String),
) -> std::thread::JoinHandle<Acknowledged> {
    std::thread::spawn(move || {
        let mut ack = Acknowledged {
            committed: Vec::new(),
            held: Vec::new(),
            stopped: None,
        };
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < max {
            i += 1;
            let (start, end) = window(w, i);
            let mut args = vec![
                "reserve", HOUSTON, NEW_YORK, "--bw", "1", "--start", &start, "--end", &end,
            ];
            if i % 4 == 0 {
                args.push("--hold-only");
            }
            let (doc, success) = json(&url, &args);
            if !success {
                ack.stopped = Some(doc);
                break;
            }
            let id = doc["id"].as_str().unwrap().to_string();
            if doc["state"]["reservation"] == "ReserveHeld" {
                ack.held.push(id)
            } else {
                ack.committed.push(id)
            }
        }
        ack
    })
}

/// Waits (until `deadline`) for every one of `held` to have timed out on `url`.
fn all_time_out(url: &str, held: &[String], deadline: Instant) {
    for id in held {
        loop {
            let r = ok(url, &["show", id]);
            if r["state"]["reservation"] == "ReserveTimeout" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} still held: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// On Houston's port from now to `to`, only commits count (1 Mb/s each): the peak is
/// at most the committed reservations in the store, of which there are at least the
/// `acknowledged` (a commit can land just before a kill with its answer lost).
fn only_commits_count(url: &str, to: &str, acknowledged: usize) {
    let a = ok(
        url,
        &[
            "availability",
            "--port",
            "houston:xe-0/0/0",
            "--from",
            "now",
            "--to",
            to,
        ],
    );
    let peak = a["directions"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["booked_mbps"].as_u64().unwrap())
        .max()
        .unwrap();
    let in_store = ok(url, &["list", "--state", "committed", "--limit", "5000"])["reservations"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        in_store >= acknowledged,
        "{in_store} committed < {acknowledged} acknowledged"
    );
    assert!(
        peak <= in_store as u64,
        "holds still counted: peak {peak} > {in_store} commits"
    );
}

#[test]
fn kill_9_under_load_loses_no_commit_and_leaks_no_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), "2s");
    let url = server.url.clone();
    // Load: reserve+commit in a loop from several threads, recording every id the
    // server acknowledged as committed; some only held.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            book_until(url.clone(), w, 200, stop.clone(), |w, i| {
                (format!("+{}m", 10 + (w * 1000 + i) % 5000), "+10d".into())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut committed, mut held) = (Vec::new(), Vec::new());
    for w in workers {
        let ack = w.join().unwrap();
        committed.extend(ack.committed);
        held.extend(ack.held);
    }
    assert!(
        committed.len() >= 10,
        "too little load before the kill: {}",
        committed.len()
    );
    assert!(!held.is_empty());
    let killed_at = Instant::now();

    // Stay down past the hold timeout, then come back on the same data.
    std::thread::sleep(Duration::from_millis(2500));
    let server = Server::start(dir.path(), "2s");
    let url = server.url.as_str();
    for id in &committed {
        let r = ok(url, &["show", id]);
        assert_eq!(
            r["committed_version"], 1,
            "{id} was acknowledged committed: {r}"
        );
        assert_eq!(r["state"]["lifecycle"], "Created");
    }
    // Every hold expired, at its own expiry time, though the server was down then.
    all_time_out(url, &held, Instant::now() + Duration::from_secs(10));
    let out = Command::new(SLUICE)
        .args(["watch", &held[0], "--since", "0", "--json", "--server", url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let lines: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(2)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines[1]["to"], "ReserveTimeout");
    let held_doc = ok(url, &["show", &held[0]]);
    assert_eq!(
        lines[1]["at"], held_doc["hold_expires_at"],
        "the timeout is dated at the expiry, not the restart"
    );
    // Nothing still counts for the expired holds: the port's bookings are the commits.
    only_commits_count(url, "+11d", committed.len());
    assert!(killed_at.elapsed() < Duration::from_secs(60));
}

#[test]
fn kill_9_of_one_replica_under_load_loses_nothing_and_the_other_takes_over() {
    let Some(db) = sluice_idc::testing::TestDatabase::postgres() else {
        return;
    };
    let url = db.url().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Server::start_with(dir_a.path(), "2s", &["--database", &url]);
    let b = Server::start_with(dir_b.path(), "2s", &["--database", &url]);
    // Load on both, half the threads on each replica; those on A stop when A dies.
    // An hour each, apart: the circuits never share a link's VLANs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let target = if w % 2 == 0 { &a.url } else { &b.url };
            book_until(target.clone(), w, 300, stop.clone(), |w, i| {
                let from = 10 + (w * 400 + i) * 70;
                (format!("+{from}m"), format!("+{}m", from + 60))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    a.kill();
    let killed_at = Instant::now();
    // B carries on under load for a while after A is gone.
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut committed, mut held) = (Vec::new(), Vec::new());
    for (w, worker) in workers.into_iter().enumerate() {
        let ack = worker.join().unwrap();
        if w % 2 == 1 {
            assert_eq!(ack.stopped, None, "B failed a request while A died");
        }
        committed.extend(ack.committed);
        held.extend(ack.held);
    }
    assert!(
        committed.len() >= 10,
        "too little load: {}",
        committed.len()
    );
    assert!(!held.is_empty());

    // Nothing lost: every acknowledged commit, whichever replica took it, is in the store.
    for id in &committed {
        let r = ok(&b.url, &["show", id]);
        assert_eq!(
            r["committed_version"], 1,
            "{id} was acknowledged committed: {r}"
        );
    }
    // Nothing leaked: every hold (A's too) times out, fired by B, and none is left.
    let deadline = killed_at + Duration::from_secs(15);
    all_time_out(&b.url, &held, deadline);
    loop {
        let left = ok(
            &b.url,
            &["list", "--state", "ReserveHeld", "--limit", "5000"],
        )["reservations"]
            .as_array()
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} holds outlived their timeout"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A hold A took just before dying, unanswered, is timed out too (the list above);
    // and the commits are exactly what counts on the busiest port.
    only_commits_count(&b.url, "+120d", committed.len());
}

#[test]
fn json_logs_name_the_domain_and_the_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(SLUICE)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!(
        "http://{}",
        line.split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    );
    let r = ok(
        &url,
        &[
            "reserve", HOUSTON, NEW_YORK, "--bw", "10", "--start", "+1h", "--end", "+2h",
        ],
    );
    let id = r["id"].as_str().unwrap().to_string();
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["domain.id"] == "internet2"),
        "a line names the domain: {log}"
    );
    let held = lines
        .iter()
        .find(|v| v["fields"]["message"] == "reservation held")
        .unwrap_or_else(|| panic!("no 'reservation held' line: {log}"));
    assert_eq!(held["fields"]["reservation.id"], id.as_str());
    assert_eq!(held["level"], "INFO");
    assert!(held["timestamp"].as_str().is_some());
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SLUICE)
        .args(["migrate", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let applied = doc["applied"].as_array().unwrap();
    let names: Vec<&str> = applied.iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(
        names,
        [
            "20261127000001",
            "20261127000002",
            "20261127000003",
            "20261127000004",
            "20261127000005",
            "20261127000006",
            "20261127000007",
            "20261127000008"
        ],
        "every migration, in order: {doc}"
    );
    let out = Command::new(SLUICE)
        .args(["migrate", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["applied"].as_array().unwrap().len(), 0);
}

#[test]
fn migrate_prepares_a_postgresql_database_once() {
    let Some(db) = sluice_idc::testing::TestDatabase::postgres() else {
        return;
    };
    let url = db.url().unwrap();
    let migrate = || {
        let out = Command::new(SLUICE)
            .args(["migrate", "--json", "--database", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["database"], url.as_str(), "no password to hide here");
        doc["applied"].as_array().unwrap().len()
    };
    assert_eq!(migrate(), 1, "the PostgreSQL schema in one migration");
    assert_eq!(migrate(), 0, "and then nothing");
    // A bad URL is refused, naming the option.
    let out = Command::new(SLUICE)
        .args(["migrate", "--json", "--database", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["field"], "database", "{doc}");
}

#[test]
fn bench_compares_the_stores_and_times_a_takeover() {
    let Some(_) = sluice_idc::testing::TestDatabase::postgres() else {
        return;
    };
    let admin = std::env::var(sluice_idc::testing::POSTGRES_ENV).unwrap();
    let out = Command::new(SLUICE)
        .args(["bench", "--json", "--replicas-on", &admin, "--clients", "4"])
        .args(["--concurrent-bookings", "8", "--takeover-holds", "3"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{doc}");
    for r in runs {
        assert!(r["committed_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
        assert!(r["admission_p99_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["bookings"], 8);
    }
    assert_eq!(doc["takeover"]["timed_out_by_survivor"], 3, "{doc}");
}

#[test]
fn bench_runs_end_to_end_and_prints_every_figure() {
    let out = Command::new(SLUICE)
        .args([
            "bench",
            "--json",
            "--sequential",
            "5",
            "--cycles",
            "2",
            "--clients",
            "2",
        ])
        .args([
            "--concurrent-bookings",
            "4",
            "--cli-runs",
            "2",
            "--rss-bookings",
            "0",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let figures = doc["figures"].as_object().unwrap();
    assert_eq!(figures.len(), 10);
    assert!(figures["reserve+commit p50 (ms)"].as_f64().unwrap() > 0.0);
    assert!(figures["server RSS after bookings (MB)"].as_f64().unwrap() > 1.0);
}

/// A weekly series through the binary: booked in Europe/Rome (14:00 local is 13:00 UTC
/// in winter), refused whole when one Tuesday is full (that Tuesday named, with the
/// nearest start that fits), booked without it with --skip-conflicts; one occurrence
/// cancelled; the series exported as iCalendar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_series_through_the_binary() {
    let idc = TestIdc::builder().start().await;
    let url = idc.url();
    tokio::task::spawn_blocking(move || {
        let url = url.as_str();
        // Next year's Tuesdays, so the test does not depend on today's date.
        let year = chrono::Utc::now()
            .format("%Y")
            .to_string()
            .parse::<i32>()
            .unwrap()
            + 1;
        let from = format!("{year}-01-01T00:00:00Z");
        let every = |bw: &str, extra: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = [
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                bw,
                "--every",
                "tue",
                "14:00-18:00",
                "--tz",
                "Europe/Rome",
                "--count",
                "10",
                "--start",
                &from,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        fn args(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let s = ok(url, &args(&every("1000", &[])));
        let occ = s["occurrences"].as_array().unwrap();
        assert_eq!(occ.len(), 10, "{s}");
        assert!(
            occ.iter()
                .all(|o| o["start"].as_str().unwrap().contains("T13:00:00")),
            "{s}"
        );
        assert!(
            occ.iter().all(|o| o["state"]["summary"] == "committed"),
            "{s}"
        );
        let seventh = occ[6]["start"].as_str().unwrap().to_string();
        let seventh_end = occ[6]["end"].as_str().unwrap().to_string();
        // Fill the 7th Tuesday's ports (10 Gb/s, 1 Gb/s of them taken by the series).
        ok(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "8000",
                "--start",
                &seventh,
                "--end",
                &seventh_end,
            ],
        );
        let e = fail(url, &args(&every("2000", &[])));
        assert_eq!(e["code"], "00705", "{e}");
        let conflicts = e["conflicts"].as_array().unwrap();
        assert_eq!(conflicts.len(), 1, "{e}");
        assert_eq!(conflicts[0]["occurrence"], 7);
        assert_eq!(conflicts[0]["available_mbps"], 1000);
        assert!(conflicts[0]["earliest_start"].is_string(), "{e}");
        let before = ok(url, &["list"])["reservations"].as_array().unwrap().len();
        assert_eq!(before, 11, "the refused series left nothing behind");
        let s = ok(url, &args(&every("2000", &["--skip-conflicts"])));
        assert_eq!(s["occurrences"].as_array().unwrap().len(), 9, "{s}");
        assert_eq!(s["skipped"][0]["occurrence"], 7, "{s}");
        let id = s["id"].as_str().unwrap().to_string();
        let s = ok(url, &["series", "cancel", &id, "--occurrence", "2"]);
        let states: Vec<&str> = s["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["state"]["summary"].as_str().unwrap())
            .collect();
        assert_eq!(
            states.iter().filter(|s| **s == "terminated").count(),
            1,
            "{states:?}"
        );
        assert_eq!(states[1], "terminated");
        let from8 = s["occurrences"][6]["start"].as_str().unwrap().to_string();
        let s = ok(
            url,
            &["series", "modify", &id, "--bw", "2500", "--from", &from8],
        );
        let bws: Vec<u64> = s["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["bw_mbps"].as_u64().unwrap())
            .collect();
        assert_eq!(
            bws,
            [2000, 2000, 2000, 2000, 2000, 2000, 2500, 2500, 2500],
            "{s}"
        );
        let s = ok(
            url,
            &[
                "series",
                "modify",
                &id,
                "--shift",
                "1h",
                "--occurrence",
                "10",
            ],
        );
        let last = &s["occurrences"][8];
        assert_eq!(last["occurrence"], 10);
        assert!(last["start"].as_str().unwrap().contains("T14:00:00"), "{s}");
        let e = fail(url, &["series", "modify", &id, "--shift", "soon"]);
        assert_eq!(e["field"], "shift", "{e}");
        let text = String::from_utf8(sluice(url, &["occurrences", &id]).stdout).unwrap();
        assert!(text.contains("skipped #7: 00705"), "{text}");
        assert!(text.contains("Tue ") && text.contains("14:00"), "{text}");
        let week = chrono::DateTime::parse_from_rfc3339(&from8)
            .unwrap()
            .format("%G-W%V")
            .to_string();
        let cal = String::from_utf8(
            sluice(
                url,
                &[
                    "calendar",
                    "--port",
                    HOUSTON,
                    "--week",
                    &week,
                    "--tz",
                    "Europe/Rome",
                ],
            )
            .stdout,
        )
        .unwrap();
        assert!(
            cal.contains("(times in Europe/Rome)") && cal.contains(&format!("{id} #8")),
            "{cal}"
        );
        assert!(
            cal.contains('▒') || cal.contains('░'),
            "the series' Tuesday is drawn: {cal}"
        );
        let out = sluice(url, &["series", "export", &id]);
        let ics = String::from_utf8(out.stdout).unwrap();
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
        assert_eq!(
            ics.matches("BEGIN:VEVENT").count(),
            8,
            "9 booked, 1 cancelled: {ics}"
        );
        assert!(ics.contains("DTSTART:") && ics.trim_end().ends_with("END:VCALENDAR"));
        // A rule that never ends, and an unknown zone, are refused with the field.
        let e = fail(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "10",
                "--cron",
                "0 14 * * 2",
                "--for",
                "1h",
                "--count",
                "2",
                "--tz",
                "Mars/Olympus",
            ],
        );
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("00100"), Some("recurrence.tz")),
            "{e}"
        );
        let e = fail(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "10",
                "--rrule",
                "DTSTART:20300101T100000Z\\nRRULE:FREQ=DAILY",
                "--for",
                "1h",
            ],
        );
        assert_eq!(e["field"], "recurrence.rrule", "{e}");
        let e = fail(
            url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "10",
                "--every",
                "tue",
                "14:00-18:00",
                "--count",
                "2",
                "--end",
                "+1h",
            ],
        );
        assert_eq!(e["field"], "end", "{e}");
    })
    .await
    .unwrap();
    idc.shutdown().await;
}

#[test]
fn certs_makes_a_ca_once_and_a_certificate_per_domain() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let run = |domains: &[&str]| {
        let out = Command::new(SLUICE)
            .args(["certs", "--json", "--out"])
            .arg(&out_dir)
            .args(domains)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = run(&["garr", "geant"]);
    assert_eq!(first["ca_reused"], false);
    let ca = std::fs::read_to_string(out_dir.join("ca.pem")).unwrap();
    // A domain added later is signed by the same CA.
    let second = run(&["internet2"]);
    assert_eq!(second["ca_reused"], true);
    assert_eq!(std::fs::read_to_string(out_dir.join("ca.pem")).unwrap(), ca);
    for d in ["garr", "geant", "internet2"] {
        let cert = std::fs::read_to_string(out_dir.join(format!("{d}.pem"))).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{d}");
        let key = out_dir.join(format!("{d}.key"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600,
            "{d}"
        );
    }
    // A bad domain id is refused, naming the field.
    let out = Command::new(SLUICE)
        .args(["certs", "--json", "--out"])
        .arg(&out_dir)
        .arg("no spaces")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["field"], "domains");
}

#[tokio::test]
async fn an_agent_starts_from_its_file_and_takes_a_desired_state() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "node = \"houston\"\n[[port]]\nname = \"xe-0/0/0\"\ndev = \"p0\"\ncapacity_mbps = 10000\nlocal = \"10.0.0.1\"\nremote = \"10.0.0.2\"\n\
         [[port]]\nname = \"et-1/0/0\"\ndev = \"p1\"\ncapacity_mbps = 100000\nlocal = \"10.1.0.1\"\nremote = \"10.1.0.2\"\nvxlan_port = 4790\n",
    )
    .unwrap();
    let mut child = Command::new(SLUICE)
        .args(["agent", "--mock", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("agent for node houston (backend mock)"),
        "{line}"
    );
    let addr = line.rsplit(' ').next().unwrap().trim().to_string();
    let mut c = sluice_proto::v1::agent_client::AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let s = c
        .apply(sluice_proto::v1::DesiredState {
            node: "houston".into(),
            version: 1,
            circuits: vec![sluice_proto::v1::NodeCircuit {
                id: "internet2-1".into(),
                a_port: "xe-0/0/0".into(),
                a_label: 150,
                z_port: "et-1/0/0".into(),
                z_label: 150,
                rate_az_mbps: 1000,
                rate_za_mbps: 1000,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (s.version, s.circuits.len(), s.backend.as_str()),
        (1, 1, "mock")
    );
    let _ = child.kill();
    let _ = child.wait();

    // A bad file is refused plainly.
    std::fs::write(&file, "node = \"houston\"\n[[port]]\nname = \"x\"\n").unwrap();
    let out = Command::new(SLUICE)
        .args(["agent", "--mock", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad agent file"));
}

/// `sluice agent --mock` as a child process on a port of its choosing, for the node and
/// ports given (the mock reports each port up, at its capacity). Killed when dropped, so
/// a failing test leaves no agent behind.
struct MockAgent {
    child: Child,
    url: String,
}

impl MockAgent {
    fn start(dir: &Path, node: &str, ports: &[(&str, u64)]) -> MockAgent {
        let file = dir.join(format!("agent-{node}.toml"));
        let mut text = format!("node = \"{node}\"\n");
        for (i, (name, mbps)) in ports.iter().enumerate() {
            text += &format!(
                "[[port]]\nname = \"{name}\"\ndev = \"p{i}\"\ncapacity_mbps = {mbps}\nlocal = \"10.0.{i}.1\"\nremote = \"10.0.{i}.2\"\nvxlan_port = {}\n",
                4789 + i
            );
        }
        std::fs::write(&file, text).unwrap();
        let child = Command::new(SLUICE)
            .args(["agent", "--mock", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice agent");
        // The guard first: a panic below still kills the child.
        let mut agent = MockAgent {
            child,
            url: String::new(),
        };
        let mut line = String::new();
        BufReader::new(agent.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("listening on ")
            .nth(1)
            .map(str::trim)
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        agent.url = format!("http://{addr}");
        agent
    }
}

impl Drop for MockAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A URL nothing listens on: a port the system just handed out and took back.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// An agents file naming `(node, url)` pairs.
fn agents_file(path: &Path, agents: &[(&str, &str)]) {
    let text: String = agents
        .iter()
        .map(|(node, url)| format!("[[agent]]\nnode = \"{node}\"\nurl = \"{url}\"\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A topology file of domain `lab`: per node, its ports and their capacities.
fn lab_topology(path: &Path, nodes: &[(&str, &[(&str, u64)])]) {
    let mut text = "[domain]\nid = \"lab\"\n".to_string();
    for (node, ports) in nodes {
        let ports: Vec<String> = ports
            .iter()
            .map(|(p, mbps)| {
                format!("{{ name = \"{p}\", vlans = \"100-199\", capacity_mbps = {mbps} }}")
            })
            .collect();
        text += &format!(
            "\n[[node]]\nid = \"{node}\"\nports = [ {} ]\n",
            ports.join(", ")
        );
    }
    std::fs::write(path, text).unwrap();
}

/// `sluice topology --check` with these arguments; the status, stdout and stderr.
fn topology_check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(SLUICE)
        .args(["topology", "--check"])
        .args(args)
        .env_remove("SLUICE_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Per result of a `--check --json` document: node, port and the findings' words.
fn check_results(doc: &Value) -> Vec<(String, Option<String>, Vec<String>)> {
    doc["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {doc}"))
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["port"].as_str().map(str::to_string),
                r["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["finding"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn topology_check_compares_the_file_with_what_the_agents_report() {
    let dir = tempfile::tempdir().unwrap();
    let a = MockAgent::start(dir.path(), "a", &[("p1", 1000), ("p2", 10_000)]);
    let b = MockAgent::start(dir.path(), "b", &[("p1", 10_000), ("p2", 1000)]);
    let path = |name: &str| dir.path().join(name);
    let (topo, topo2) = (path("topo.toml"), path("topo2.toml"));
    let (topo, topo2) = (topo.to_str().unwrap(), topo2.to_str().unwrap());
    let agents: Vec<String> = (1..=4)
        .map(|i| {
            path(&format!("agents{i}.toml"))
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // Everything agrees; c has no agent, which is only a note.
    lab_topology(
        Path::new(topo),
        &[
            ("a", &[("p1", 1000), ("p2", 10_000)]),
            ("b", &[("p1", 10_000), ("p2", 1000)]),
            ("c", &[("p1", 1000)]),
        ],
    );
    agents_file(Path::new(&agents[0]), &[("a", &a.url), ("b", &b.url)]);
    let good = ["--agents", &agents[0], "--file", topo];
    let (code, stdout, stderr) = topology_check(&[&good[..], &["--json"]].concat());
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    let ok = |n: &str, p: &str| (n.to_string(), Some(p.to_string()), Vec::<String>::new());
    assert_eq!(
        check_results(&doc),
        vec![ok("a", "p1"), ok("a", "p2"), ok("b", "p1"), ok("b", "p2")]
    );
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["counts"], serde_json::json!({"ok": 4}));
    assert_eq!(doc["notes"][0]["node"], "c");
    assert_eq!(doc["notes"][0]["finding"], "no-agent");
    assert!(doc.get("error").is_none(), "{doc}");
    let (code, stdout, _) = topology_check(&good);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("4 ports ok") && stdout.contains("no agent (not checked): c"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.split_whitespace().rev().nth(1) == Some("ok"))
            .count(),
        4,
        "{stdout}"
    );

    // Now the topology says otherwise: a's p3 is not on its agent (missing) and its p2
    // is not in the topology (extra); b's p2 is 500 Mb/s (the agent shapes it to 1000);
    // d's agent is not there; e's URL is a's agent; z is no node of the topology.
    lab_topology(
        Path::new(topo2),
        &[
            ("a", &[("p1", 1000), ("p3", 1000)]),
            ("b", &[("p1", 10_000), ("p2", 500)]),
            ("c", &[("p1", 1000)]),
            ("d", &[("p1", 1000)]),
            ("e", &[("p1", 1000)]),
        ],
    );
    let dead = dead_url();
    agents_file(
        Path::new(&agents[1]),
        &[
            ("a", &a.url),
            ("b", &b.url),
            ("d", &dead),
            ("e", &a.url),
            ("z", &b.url),
        ],
    );
    let bad = ["--agents", &agents[1], "--file", topo2];
    let (code, stdout, stderr) = topology_check(&[&bad[..], &["--json"]].concat());
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    let found = |n: &str, p: Option<&str>, f: &[&str]| {
        (
            n.to_string(),
            p.map(str::to_string),
            f.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        check_results(&doc),
        vec![
            found("a", Some("p1"), &[]),
            found("a", Some("p3"), &["missing"]),
            found("a", Some("p2"), &["extra"]),
            found("b", Some("p1"), &[]),
            found("b", Some("p2"), &["capacity"]),
            found("d", None, &["unreachable"]),
            found("e", None, &["wrong-node"]),
            found("z", None, &["unknown-node"]),
        ],
        "{doc}"
    );
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["results"][4]["agent_mbps"], 1000);
    assert_eq!(doc["results"][4]["topology_mbps"], 500);
    assert!(
        doc["results"][5]["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&dead),
        "{doc}"
    );
    assert_eq!(
        (&doc["error"]["code"], &doc["error"]["field"]),
        (&Value::from("00100"), &Value::from("topology"))
    );
    let (code, stdout, stderr) = topology_check(&bad);
    assert_eq!(code, Some(1));
    for word in [
        "missing:",
        "extra:",
        "capacity:",
        "unreachable:",
        "wrong-node:",
        "unknown-node:",
    ] {
        assert!(stdout.contains(word), "{word} in {stdout}");
    }
    assert!(
        stderr.starts_with("error 00100 INVALID_PARAMETER [topology]:"),
        "{stderr}"
    );

    // Agents that only failed to answer: the topology could not be checked (00500).
    agents_file(Path::new(&agents[2]), &[("a", &a.url), ("c", &dead)]);
    let (code, stdout, _) = topology_check(&["--json", "--agents", &agents[2], "--file", topo]);
    assert_eq!(code, Some(1));
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (&doc["error"]["code"], &doc["error"]["field"]),
        (&Value::from("00500"), &Value::from("agents"))
    );

    // --check needs --agents: a usage error, before anything is asked.
    let (code, _, stderr) = topology_check(&["--file", topo]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--agents"), "{stderr}");
    // A bad agents file is named.
    std::fs::write(&agents[3], "[[agent]]\nnode = \"a\"\n").unwrap();
    let (code, stdout, _) = topology_check(&["--json", "--agents", &agents[3], "--file", topo]);
    assert_eq!(code, Some(1));
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(doc["error"]["field"], "agents");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_check_without_a_file_checks_the_idcs_topology() {
    let idc = TestIdc::builder().start().await;
    let url = idc.url();
    tokio::task::spawn_blocking(move || {
        let topology = ok(&url, &["topology"]);
        let houston = topology["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "houston")
            .unwrap_or_else(|| panic!("no houston in {topology}"));
        let ports: Vec<(String, u64)> = houston["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["capacity_mbps"].as_u64().unwrap(),
                )
            })
            .collect();
        let ports: Vec<(&str, u64)> = ports.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let dir = tempfile::tempdir().unwrap();
        let agent = MockAgent::start(dir.path(), "houston", &ports);
        let file = dir.path().join("agents.toml");
        agents_file(&file, &[("houston", &agent.url)]);
        let doc = ok(
            &url,
            &["topology", "--check", "--agents", file.to_str().unwrap()],
        );
        let results = check_results(&doc);
        assert_eq!(results.len(), ports.len(), "{doc}");
        assert!(
            results
                .iter()
                .all(|(n, _, f)| n == "houston" && f.is_empty()),
            "{doc}"
        );
        // Every other node of the domain is a note.
        assert_eq!(
            doc["notes"].as_array().unwrap().len(),
            topology["nodes"].as_array().unwrap().len() - 1
        );
        assert_eq!(doc["domain"], topology["domain"]);
    })
    .await
    .unwrap();
    idc.shutdown().await;
}

#[test]
fn an_operator_with_a_token_stops_a_circuit_and_nobody_else_can() {
    let dir = tempfile::tempdir().unwrap();
    // A token, and the operators file that knows only its digest.
    let made = ok("http://unused", &["operator-token", "gmoc"]);
    let token = made["token"].as_str().unwrap().to_string();
    let entry = made["operators_entry"].as_str().unwrap();
    assert!(!entry.contains(&token));
    let ops = dir.path().join("operators.toml");
    std::fs::write(&ops, entry).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // A bad operators file stops the IDC with the field named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[operator]]\nname = \"x\"\ntoken_sha256 = \"12\"\n").unwrap();
    let out = Command::new(SLUICE)
        .args(["serve", "--listen", "127.0.0.1:0", "--operators"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator[0].token_sha256"), "{err}");

    let server = Server::start_with(
        &dir.path().join("data"),
        "120s",
        &["--operators", ops.to_str().unwrap()],
    );
    let url = server.url.as_str();
    let r = ok(
        url,
        &["reserve", HOUSTON, NEW_YORK, "--bw", "100", "--end", "+1h"],
    );
    let id = r["id"].as_str().unwrap();
    // Without a token, or with a wrong one: 00302 on the token, and the circuit stays.
    let e = fail(url, &["emergency-stop", id]);
    assert_eq!(e["code"], "00302");
    assert_eq!(e["field"], "token");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let e = fail(
        url,
        &[
            "emergency-stop",
            id,
            "--token-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(e["code"], "00302");
    assert_eq!(ok(url, &["show", id])["state"]["lifecycle"], "Created");

    let stopped = ok(
        url,
        &[
            "emergency-stop",
            id,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert_eq!(stopped["operator"], "gmoc");
    assert_eq!(stopped["stopped"][0]["id"], id);
    assert_eq!(stopped["stopped"][0]["state"]["lifecycle"], "Failed");
    assert_eq!(stopped["stopped"][0]["state"]["data_plane_active"], false);
    let text = sluice(
        url,
        &[
            "emergency-stop",
            "--owner",
            "alice",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("nothing to stop"),
        "{text:?}"
    );
    let log = ok(url, &["audit", "--id", id]);
    let stops: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "emergency-stop")
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        stops,
        [
            ("alice".to_string(), "00302".to_string()),
            ("alice".to_string(), "00302".to_string()),
            ("operator:gmoc".to_string(), "ok".to_string()),
        ]
    );
}

#[test]
fn verify_and_history_through_the_binary() {
    // Two nodes and a link; each node's agent is `sluice agent --mock`, whose measurement
    // ends are on loopback.
    let dir = tempfile::tempdir().unwrap();
    let agent = MockAgent::start(dir.path(), "r1", &[("a", 1000), ("l", 1000)]);
    let agent2 = MockAgent::start(dir.path(), "r2", &[("l", 1000), ("b", 1000)]);
    let (topo, agents) = (dir.path().join("lab.toml"), dir.path().join("agents.toml"));
    lab_topology(
        &topo,
        &[
            ("r1", &[("a", 1000), ("l", 1000)]),
            ("r2", &[("l", 1000), ("b", 1000)]),
        ],
    );
    let mut text = std::fs::read_to_string(&topo).unwrap();
    text += "\n[[link]]\nid = \"r1--r2\"\na = \"r1:l\"\nb = \"r2:l\"\ncapacity_mbps = 1000\nmetric = 1\n";
    std::fs::write(&topo, text).unwrap();
    agents_file(&agents, &[("r1", &agent.url), ("r2", &agent2.url)]);
    let server = Server::start_with(
        &dir.path().join("data"),
        "120s",
        &[
            "--topology",
            topo.to_str().unwrap(),
            "--agents",
            agents.to_str().unwrap(),
        ],
    );
    let url = server.url.as_str();
    let r = ok(
        url,
        &[
            "reserve", "lab:r1:a", "lab:r2:b", "--bw", "100", "--end", "+1h",
        ],
    );
    let id = r["id"].as_str().unwrap();
    // The agents take the circuit asynchronously: verify once both have it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = ok(url, &["show", id])["data_plane"].clone();
        let applied = states
            .as_array()
            .is_some_and(|nodes| nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "applied"));
        if applied {
            break;
        }
        assert!(Instant::now() < deadline, "never applied: {states}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = ok(url, &["verify", id, "--duration", "1s", "--probes", "10"]);
    assert_eq!(m["verdict"], "pass", "{m}");
    assert_eq!(m["booked_mbps"], 100);
    assert_eq!(m["probes_received"], 10);
    assert_eq!(m["thresholds"]["min_throughput_ratio"], 0.95);
    // Shares as percentages; with --duration 0s no stream runs.
    let args = [
        "verify",
        id,
        "--duration",
        "0s",
        "--probes",
        "5",
        "--max-loss",
        "0%",
    ];
    let out = sluice(url, &args);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PASS") && text.contains("round trip"),
        "{text}"
    );
    assert!(!text.contains("throughput A→Z"), "no stream: {text}");
    // A share over 100 % is refused before anything is sent.
    let out = sluice(url, &["verify", id, "--min-throughput", "120%"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a share"));
    // A verdict other than pass is printed, and the exit status says so.
    let args = [
        "verify",
        id,
        "--duration",
        "0s",
        "--probes",
        "5",
        "--max-rtt-ms",
        "0.000001",
    ];
    let (m, success) = json(url, &args);
    assert!(!success);
    assert_eq!(m["verdict"], "fail", "{m}");
    // Not up: refused with the field, nothing stored.
    let held = ok(
        url,
        &[
            "reserve", "lab:r1:a", "lab:r2:b", "--bw", "100", "--start", "+1h", "--end", "+2h",
        ],
    );
    let held = held["id"].as_str().unwrap();
    let e = fail(url, &["verify", held]);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("00201"), Some("id"))
    );

    let h = ok(url, &["history", id]);
    let verdicts: Vec<&str> = h["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["pass", "pass", "fail"]);
    let out = sluice(url, &["history", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("verify") && text.contains("100 Mb/s"),
        "{text}"
    );
    let out = sluice(url, &["history", held]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no measurements yet"));

    // Its status: the one domain, both nodes with their agents up, the last measurement.
    let st = ok(url, &["status", id]);
    let d = &st["domains"][0];
    assert_eq!(d["domain"], "lab");
    assert_eq!(d["state"]["lifecycle"], "Created");
    assert_eq!(d["nodes"][0]["node"], "r1");
    assert_eq!(d["nodes"][1]["node"], "r2");
    assert_eq!(d["nodes"][0]["agent"], "up");
    assert_eq!(d["nodes"][0]["state"], "applied");
    assert!(d["nodes"][0]["counters"]["az"]["bytes"].is_u64(), "{st}");
    assert_eq!(d["last_measurement"]["seq"], h["measurements"][2]["seq"]);
    let out = sluice(url, &["status", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("r2") && text.contains("applied") && text.contains("fail"),
        "{text}"
    );
    // The report: a table, and a page whose charts a browser renders.
    let out = sluice(url, &["report", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("path: lab (r1 – r2)") && text.contains("fail"),
        "{text}"
    );
    let page = dir.path().join("report.html");
    let made = ok(url, &["report", id, "--html", page.to_str().unwrap()]);
    assert_eq!(made["measurements"], 3);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("id=\"throughput\"") && html.contains("booked 100 Mb/s"));
    browser_renders(&page, 4);

    // A booking that asks for a check at each start gets one when it comes up.
    let checked = ok(
        url,
        &[
            "reserve",
            "lab:r1:a",
            "lab:r2:b",
            "--bw",
            "100",
            "--end",
            "+1h",
            "--verify-each",
            "--verify-each-duration",
            "0s",
        ],
    );
    let checked = checked["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let h = ok(url, &["history", checked]);
        if let Some(m) = h["measurements"].as_array().and_then(|a| a.first()) {
            break m.clone();
        }
        assert!(Instant::now() < deadline, "no check at its start");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (m["kind"].as_str(), m["verdict"].as_str()),
        (Some("start"), Some("pass")),
        "{m}"
    );
    assert_eq!(m["duration_ms"], 0);

    drop(agent2);
    let st = ok(url, &["status", id]);
    assert_eq!(st["domains"][0]["nodes"][1]["agent"], "unreachable", "{st}");
    drop(agent);
}

/// Opens `page` in headless Chromium (when installed; CI installs it and sets
/// SLUICE_REQUIRE_CHROMIUM): the page's script counts the charts laid out with a real
/// size, which must be `charts`; a screenshot is left in the test artefacts.
fn browser_renders(page: &Path, charts: usize) {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_CHROMIUM").is_none(),
            "SLUICE_REQUIRE_CHROMIUM is set but no Chromium is installed"
        );
        eprintln!("skipped the browser check: no chromium (apt-get install chromium)");
        return;
    };
    // A profile of its own for each launch: a run cut short leaves its lock behind.
    let browse = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        Command::new("timeout")
            .arg("90")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=900,1500",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("run chromium")
    };
    let dom = browse(&["--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains(&format!("data-charts=\"{charts}\"")),
        "the browser laid out other than {charts} charts: {}",
        dom_text
            .lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no <body>")
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse(&[&format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot ({size} bytes): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("report screenshot: {}", shot.display());
}

/// `sluice serve --config F`: the file's settings (paths from its folder), overridden by
/// the environment, overridden by the command line; a bad file names what is wrong.
#[test]
fn serve_takes_a_settings_file_the_environment_and_the_command_line_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nhold_timeout = \"5s\"\nmetrics = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    // The hold timeout the server uses, read off a hold: expires_at − created_at.
    let hold_seconds = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(SLUICE);
        cmd.args(["serve", "--config"]).arg(&file).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut first, mut second) = (String::new(), String::new());
        out.read_line(&mut first).unwrap();
        out.read_line(&mut second).unwrap();
        let url = format!(
            "http://{}",
            first
                .split("listening on ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or_else(|| panic!("no address in {first:?}"))
        );
        assert!(
            first.contains(&format!("data in {}", dir.path().join("data").display())),
            "{first}"
        );
        assert!(second.contains("metrics on http://127.0.0.1:"), "{second}");
        let r = ok(
            &url,
            &[
                "reserve",
                HOUSTON,
                NEW_YORK,
                "--bw",
                "10",
                "--start",
                "+1h",
                "--end",
                "+2h",
                "--hold-only",
            ],
        );
        let _ = child.kill();
        let _ = child.wait();
        let t = |k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
        (t("hold_expires_at") - t("created_at")).num_seconds()
    };
    assert_eq!(hold_seconds(&[], &[]), 5, "from the file");
    assert_eq!(
        hold_seconds(&[("SLUICE_HOLD_TIMEOUT", "7s")], &[]),
        7,
        "the environment over the file"
    );
    assert_eq!(
        hold_seconds(&[("SLUICE_HOLD_TIMEOUT", "7s")], &["--hold-timeout", "9s"]),
        9,
        "the command line over both"
    );
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nhold_timeout = \"soon\"\n").unwrap();
    let out = Command::new(SLUICE)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hold_timeout"), "{err}");
}
