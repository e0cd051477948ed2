//! `sluice bench --replicas-on POSTGRES_URL`: the stores compared under the same
//! concurrent load (SQLite; PostgreSQL with one IDC replica; with two), each IDC a real
//! `sluice serve` process on loopback; then a replica is killed with SIGKILL while
//! holding reservations, and the figure is how late the other fires their timers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;
use sluice_idc::testing::TestDatabase;
use sluice_proto::v1;

use crate::bench::{
    ChildIdc, Concurrent, Progress, edge_stps, ms, percentile, run_concurrent, spawn_idc,
};
use crate::client::connect;

pub struct ReplicaBench {
    pub admin_url: String,
    pub clients: usize,
    pub bookings: usize,
    pub holds: usize,
}

/// One store configuration under load.
struct Load {
    name: &'static str,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// The reserve call alone.
    admission_p99: Duration,
    bookings: usize,
}

fn database_url(db: &TestDatabase) -> String {
    db.url().expect("a PostgreSQL database")
}

/// `n` IDC processes on `database` (none: SQLite in `dir`), with `extra` options.
fn start(
    n: usize,
    dir: &std::path::Path,
    database: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<(Vec<ChildIdc>, Vec<String>)> {
    let exe = std::env::current_exe()?;
    let mut args: Vec<&str> = extra.to_vec();
    if let Some(url) = database {
        args.extend(["--database", url]);
    }
    let (mut children, mut urls) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (child, url, _, _) = spawn_idc(&exe, dir, None, &args)?;
        children.push(child);
        urls.push(url);
    }
    Ok((children, urls))
}

fn load(
    name: &'static str,
    urls: &[String],
    stps: &[String],
    b: &ReplicaBench,
    seed: u64,
) -> anyhow::Result<Load> {
    // Connections and caches warm, not measured.
    run_concurrent(urls, stps, b.clients, 3, seed ^ 0xdead)?;
    let per_client = b.bookings.div_ceil(b.clients.max(1));
    eprintln!("{name}: {} clients × {per_client} bookings ...", b.clients);
    let Concurrent {
        bookings,
        admissions,
        wall,
    } = run_concurrent(urls, stps, b.clients, per_client, seed)?;
    Ok(Load {
        name,
        per_second: bookings.len() as f64 / wall.as_secs_f64(),
        p50: percentile(&bookings, 50.0),
        p99: percentile(&bookings, 99.0),
        admission_p99: percentile(&admissions, 99.0),
        bookings: bookings.len(),
    })
}

/// How late (after its hold ran out) each timeout of a killed replica's holds fired on
/// the survivor, and how many of them it fired.
async fn takeover(b: &ReplicaBench, stps: &[String]) -> anyhow::Result<(Vec<Duration>, usize)> {
    let db = TestDatabase::postgres_on(&b.admin_url);
    let dir = tempfile::tempdir()?;
    let (mut children, urls) = start(
        2,
        dir.path(),
        Some(&database_url(&db)),
        &["--hold-timeout", "3s"],
    )?;
    let mut on_b = connect(&urls[1], "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut watch = on_b
        .reservations
        .watch(v1::WatchRequest::default())
        .await?
        .into_inner();
    let mut on_a = connect(&urls[0], "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut expiry: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut p = Progress::new("holds on the replica to kill", b.holds);
    for i in 0..b.holds {
        let n = stps.len();
        let start = Utc::now() + TimeDelta::days(1) + TimeDelta::minutes(i as i64);
        let criteria = v1::Criteria {
            src: stps[i % n].clone(),
            dst: stps[(i + 1) % n].clone(),
            capacity_mbps: 1,
            start: Some(crate::time::timestamp(start)),
            end: Some(crate::time::timestamp(start + TimeDelta::minutes(30))),
            description: "takeover".into(),
            ..Default::default()
        };
        let r = on_a
            .book(criteria, true)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let until = crate::time::from_timestamp(&r.hold_expires_at)
            .ok_or_else(|| anyhow::anyhow!("a hold without its expiry"))?;
        expiry.insert(r.id, until);
        p.tick(i + 1);
    }
    p.done();
    // SIGKILL: no shutdown, no last word to the store.
    let mut killed = children.remove(0);
    killed.0.kill()?;
    killed.0.wait()?;
    eprintln!("killed the replica that holds them; waiting for the other to time them out ...");
    let mut late = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while late.len() < expiry.len() && Instant::now() < deadline {
        let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_secs(5), watch.message()).await
        else {
            continue;
        };
        if e.to == "ReserveTimeout"
            && let Some(until) = expiry.get(&e.reservation_id)
        {
            late.push((Utc::now() - *until).to_std().unwrap_or_default());
        }
    }
    let fired = late.len();
    late.sort();
    drop(children);
    Ok((late, fired))
}

pub async fn run(b: ReplicaBench, json_out: bool) -> anyhow::Result<()> {
    let mut loads = Vec::new();
    let stps;
    {
        let dir = tempfile::tempdir()?;
        let (children, urls) = start(1, dir.path(), None, &[])?;
        let mut c = connect(&urls[0], "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        stps = edge_stps(&mut c).await?;
        loads.push(load("SQLite, one IDC", &urls, &stps, &b, 1)?);
        drop(children);
    }
    for (n, name) in [
        (1, "PostgreSQL, one replica"),
        (2, "PostgreSQL, two replicas"),
    ] {
        let db = TestDatabase::postgres_on(&b.admin_url);
        let dir = tempfile::tempdir()?;
        let (children, urls) = start(n, dir.path(), Some(&database_url(&db)), &[])?;
        loads.push(load(name, &urls, &stps, &b, 1 + n as u64)?);
        drop(children);
    }
    let (late, fired) = takeover(&b, &stps).await?;

    if json_out {
        let runs: Vec<_> = loads
            .iter()
            .map(|l| {
                json!({"store": l.name, "committed_per_s": l.per_second,
                       "p50_ms": ms(l.p50), "p99_ms": ms(l.p99),
                       "admission_p99_ms": ms(l.admission_p99), "bookings": l.bookings})
            })
            .collect();
        println!(
            "{}",
            json!({
                "clients": b.clients,
                "runs": runs,
                "takeover": {
                    "holds": b.holds, "timed_out_by_survivor": fired,
                    "late_p50_ms": ms(percentile(&late, 50.0)),
                    "late_max_ms": ms(late.last().copied().unwrap_or_default()),
                }
            })
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header([
            "store",
            "committed bookings/s",
            "booking p50 (ms)",
            "booking p99 (ms)",
            "admission p99 (ms)",
        ]);
        for l in &loads {
            t.add_row([
                l.name.to_string(),
                format!("{:.0}", l.per_second),
                format!("{:.2}", ms(l.p50)),
                format!("{:.2}", ms(l.p99)),
                format!("{:.2}", ms(l.admission_p99)),
            ]);
        }
        println!("{t}");
        println!(
            "{} concurrent clients, each booking a reserve (admission) then a commit, {} bookings per run; two replicas share the clients",
            b.clients, loads[0].bookings
        );
        println!(
            "takeover: {fired} of {} holds of the SIGKILLed replica timed out by the other, \
             p50 {:.0} ms and at most {:.0} ms after their holds ran out",
            b.holds,
            ms(percentile(&late, 50.0)),
            ms(late.last().copied().unwrap_or_default())
        );
    }
    anyhow::ensure!(
        fired == b.holds,
        "only {fired} of {} holds were timed out by the survivor",
        b.holds
    );
    Ok(())
}
