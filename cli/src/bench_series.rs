//! `sluice bench --series N --scheduler-series M`: recurring bookings against a fresh
//! (optionally preloaded) IDC. The admission of a weekly series of 52 occurrences through
//! gRPC, store included; and how late the scheduler brings the first occurrence of each
//! of M booked series up after its start (the IDC's own record of when the data plane
//! went active, against the occurrence's start).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;
use sluice_proto::v1;
use tokio_stream::StreamExt;

use crate::bench::{BenchArgs, Progress, ms, percentile};
use crate::client::connect;
use crate::time::from_timestamp;

fn rule(first: chrono::DateTime<Utc>, count: u32) -> v1::Recurrence {
    v1::Recurrence {
        rule: Some(v1::recurrence::Rule::Ical(format!(
            "DTSTART:{}\nRRULE:FREQ=WEEKLY;COUNT={count}",
            first.format("%Y%m%dT%H%M%SZ")
        ))),
        duration_seconds: 3600,
    }
}

fn criteria(stps: &[String], i: usize) -> v1::Criteria {
    let n = stps.len();
    let a = (i * 7919) % n;
    let b = (a + 1 + (i * 104_729) % (n - 1)) % n;
    v1::Criteria {
        src: stps[a].clone(),
        dst: stps[b].clone(),
        capacity_mbps: 1,
        description: "bench series".into(),
        ..Default::default()
    }
}

async fn book_series(
    c: &mut crate::client::Client,
    criteria: v1::Criteria,
    recurrence: v1::Recurrence,
) -> anyhow::Result<v1::Series> {
    let held = c
        .reservations
        .reserve_series(v1::ReserveSeriesRequest {
            verify_each: None,
            criteria: Some(criteria),
            recurrence: Some(recurrence),
            allow_path_change: false,
            skip_conflicts: false,
        })
        .await?
        .into_inner();
    Ok(c.reservations
        .commit_series(v1::IdRequest { id: held.id })
        .await?
        .into_inner())
}

pub async fn run(
    url: &str,
    stps: &[String],
    args: &BenchArgs,
    json_out: bool,
    index_ms: Option<u64>,
) -> anyhow::Result<()> {
    let mut c = connect(url, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows: Vec<(String, f64, &str)> = Vec::new();
    if let Some(ms) = index_ms {
        rows.push(("restart: index rebuild (ms)".into(), ms as f64, "≤ 1000"));
    }

    // 1. A weekly series of 52 occurrences, reserve + commit, one at a time.
    if args.series > 0 {
        let mut lat = Vec::with_capacity(args.series);
        let mut p = Progress::new("series of 52, reserve+commit", args.series);
        for i in 0..args.series {
            // Spread over the hours of the week, from tomorrow on.
            let first = Utc::now()
                + TimeDelta::days(1)
                + TimeDelta::minutes(((i * 97) % (7 * 24 * 60)) as i64);
            let first = first - TimeDelta::seconds(first.timestamp() % 60);
            let t = Instant::now();
            book_series(&mut c, criteria(stps, i), rule(first, 52)).await?;
            lat.push(t.elapsed());
            p.tick(i + 1);
        }
        p.done();
        lat.sort();
        rows.push((
            "52-occurrence series, reserve+commit p50 (ms)".into(),
            ms(percentile(&lat, 50.0)),
            "≤ 20",
        ));
        rows.push((
            "52-occurrence series, reserve+commit p99 (ms)".into(),
            ms(percentile(&lat, 99.0)),
            "-",
        ));
    }

    // 2. Scheduler latency with many series booked.
    if args.scheduler_series > 0 {
        let n = args.scheduler_series;
        // Every first occurrence starts after all are booked: a lead for the booking
        // (20 s and 3 ms a series; this machine booked 250-320 a second, and any first
        // occurrence that starts before booking ends is left out and counted), then spread
        // over a minute so the scheduler has a stream of starts to keep up with.
        let lead = TimeDelta::seconds(20) + TimeDelta::milliseconds(3 * n as i64);
        let t0 = Utc::now() + lead;
        // From now on: a Watch without since_seq follows new events only.
        let mut watch = c
            .reservations
            .watch(v1::WatchRequest {
                reservation_id: String::new(),
                since_seq: None,
            })
            .await?
            .into_inner();
        let clients = args.clients.max(1);
        let per = n.div_ceil(clients);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..clients {
            let (url, stps) = (url.to_string(), stps.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut c = connect(&url, "bench")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut firsts = Vec::with_capacity(per);
                for j in 0..per {
                    let i = k * per + j;
                    if i >= n {
                        break;
                    }
                    let first = t0 + TimeDelta::milliseconds(((i * 60_000) / n) as i64);
                    let s = book_series(&mut c, criteria(&stps, i), rule(first, 4)).await?;
                    let o = &s.occurrences[0];
                    firsts.push((o.id.clone(), from_timestamp(&o.start).expect("a start")));
                }
                Ok::<_, anyhow::Error>(firsts)
            }));
        }
        let mut first_of: HashMap<String, chrono::DateTime<Utc>> = HashMap::new();
        for t in tasks {
            first_of.extend(t.await??);
        }
        let booked_at = Utc::now();
        eprintln!(
            "scheduler: {n} series booked in {:.1} s; the first occurrences start from {} for a minute",
            started.elapsed().as_secs_f64(),
            t0.format("%H:%M:%S")
        );
        let late_booked = first_of.values().filter(|&&s| s <= booked_at).count();
        let deadline = Instant::now()
            + (t0 + TimeDelta::seconds(75) - Utc::now())
                .to_std()
                .unwrap_or_default();
        let mut late: Vec<Duration> = Vec::new();
        let mut p = Progress::new("scheduler: occurrences up", first_of.len());
        while late.len() < first_of.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(ev)) = tokio::time::timeout(left, watch.next()).await else {
                break;
            };
            let ev = ev?;
            if ev.machine != "data_plane" || ev.to != "active" {
                continue;
            }
            let (Some(start), Some(at)) =
                (first_of.get(&ev.reservation_id), from_timestamp(&ev.at))
            else {
                continue;
            };
            if *start > booked_at {
                late.push((at - *start).to_std().unwrap_or_default());
            }
            p.tick(late.len());
        }
        p.done();
        let expected = first_of.len() - late_booked;
        late.sort();
        rows.push((
            "series booked for the scheduler figure".into(),
            n as f64,
            "10000",
        ));
        rows.push((
            "first occurrences measured (started after booking)".into(),
            late.len() as f64,
            "-",
        ));
        rows.push((
            "  of which missing (not up 15 s after the last start)".into(),
            expected.saturating_sub(late.len()) as f64,
            "0",
        ));
        rows.push((
            "provisioned after start, p50 (ms)".into(),
            ms(percentile(&late, 50.0)),
            "-",
        ));
        rows.push((
            "provisioned after start, p99 (ms)".into(),
            ms(percentile(&late, 99.0)),
            "≤ 100",
        ));
        rows.push((
            "provisioned after start, max (ms)".into(),
            ms(late.last().copied().unwrap_or_default()),
            "≤ 100",
        ));
    }

    if json_out {
        let figures: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(k, v, _)| (k.clone(), json!(v))).collect();
        println!("{}", json!({ "figures": figures }));
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(["figure", "measured", "target"]);
        for (k, v, target) in &rows {
            t.add_row([k.clone(), format!("{v:.2}"), target.to_string()]);
        }
        println!("{t}");
    }
    Ok(())
}
