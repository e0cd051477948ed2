//! Path computation at scale: a generated research-network-like topology of 1,000 nodes
//! and 5,000 links carrying 100,000 committed bookings spread over one year.
//!
//! Before criterion runs, the setup prints what it built (bookings made, build time,
//! index sizes, process RSS) and a table of per-call latencies (p50/p99/max over
//! `SAMPLES` calls each, timed one call at a time with `Instant`), because criterion
//! reports means only.
//!
//! Run with `cargo bench -p sluice-pce`; `-- <name>` runs one benchmark (the setup and
//! the table always run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use sluice_model::topology::LinkIdx;
use sluice_model::{TimeWindow, Topology};
use sluice_pce::generate::{self, Params, Rng};
use sluice_pce::index::IndexLoader;
use sluice_pce::{
    Index, PathPlan, PathRequest, Place, Usage, VlanBits, check_plan, compute, find_path,
    find_path_in_all, plan_series,
};

const NODES: usize = 1_000;
const LINKS: usize = 5_000;
const BOOKINGS: usize = 100_000;
const SEED: u64 = 2030;
/// Pre-generated queries each benchmark cycles through.
const QUERIES: usize = 1_000;
/// Calls timed one by one for the p50/p99 table.
const SAMPLES: usize = 2_000;
const WEEKS: i64 = 52;

fn year_start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("2030-01-01T00:00:00Z")
}

const YEAR: TimeDelta = TimeDelta::days(365);
const WEEK: TimeDelta = TimeDelta::days(7);

struct World {
    topo: Arc<Topology>,
    index: Index,
    /// Every booking made, as the store would hand it back on a restart: in booking
    /// order, and sorted by start.
    usages: Vec<(String, Usage)>,
    by_start: Vec<(String, Usage)>,
    now: DateTime<Utc>,
    /// Random requests, windows of at most a week inside the year.
    queries: Vec<PathRequest>,
    /// Random links, each with a random one-week window inside the year (`SAMPLES`).
    peaks: Vec<(LinkIdx, TimeWindow)>,
    /// Bookings along 6-link paths, not in the index, and the plans they came from.
    six: Vec<(String, Usage)>,
    six_plans: Vec<(String, PathPlan, PathRequest)>,
    /// The first window of weekly series (1-8 h, in the first week of the year).
    series: Vec<PathRequest>,
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A `/proc/self/status` field in kB (VmRSS, VmHWM).
fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn print_rss(when: &str) {
    let f = |k| {
        proc_status_kb(k).map_or("?".to_string(), |kb| {
            format!("{:.1} MiB", kb as f64 / 1024.0)
        })
    };
    eprintln!(
        "  process at {when}: VmRSS {}, VmHWM {}",
        f("VmRSS:"),
        f("VmHWM:")
    );
}

/// "p50 a, p99 b, max c" of counts.
fn spread(mut v: Vec<usize>) -> String {
    v.sort_unstable();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!("p50 {}, p99 {}, max {}", q(0.5), q(0.99), v[v.len() - 1])
}

fn build_world() -> World {
    let now = year_start();
    let params = Params {
        nodes: NODES,
        links: LINKS,
        seed: SEED,
    };
    eprintln!(
        "\n== sluice-pce bench: {NODES} nodes, {LINKS} links, {BOOKINGS} bookings over a year =="
    );
    print_rss("start");
    let t = Instant::now();
    let topo = Arc::new(generate::build(&params));
    eprintln!(
        "  topology generated and built in {:.2?} ({} ports, {} translating nodes)",
        t.elapsed(),
        topo.ports().len(),
        topo.nodes().iter().filter(|n| n.vlan_translation).count()
    );

    // Booking: route each request against what is booked so far. The first pass keeps
    // nothing else, so the process then holds what a controller would: the topology,
    // the index and its distance cache.
    let t = Instant::now();
    let mut index = Index::new(topo.clone());
    let booked = generate::book(&mut index, BOOKINGS, now, YEAR, SEED);
    let build_time = t.elapsed();
    eprintln!(
        "  booked {booked} of {BOOKINGS} requests in {build_time:.2?} ({:.1} µs per request routed and booked)",
        build_time.as_secs_f64() * 1e6 / BOOKINGS as f64,
    );
    eprintln!(
        "  index as booked: calendars {:.2} MiB, bookkeeping {:.2} MiB",
        mib(index.calendar_bytes()),
        mib(index.bookkeeping_bytes())
    );
    // What an IDC holds after its start-up rebuild: the vectors trimmed to size.
    index.shrink_to_fit();
    eprintln!(
        "  index trimmed (as after a rebuild): calendars {:.2} MiB, bookkeeping {:.2} MiB",
        mib(index.calendar_bytes()),
        mib(index.bookkeeping_bytes())
    );
    print_rss("after booking (topology + index + distance cache only)");

    // The second pass books the same again into a scratch index, keeping the usages
    // (what the store would hand back on a restart) for rebuild_index.
    let mut usages: Vec<(String, Usage)> = Vec::with_capacity(BOOKINGS);
    let mut scratch = Index::new(topo.clone());
    let again = generate::book_each(&mut scratch, BOOKINGS, now, YEAR, SEED, |id, u| {
        usages.push((id.to_string(), u.clone()));
    });
    scratch.shrink_to_fit();
    assert_eq!(
        (again, scratch.calendar_bytes()),
        (booked, index.calendar_bytes()),
        "booking is deterministic"
    );
    drop(scratch);
    let hops: usize = usages.iter().map(|(_, u)| u.labels.len() - 2).sum();
    let mut per_link = vec![0usize; topo.links().len()];
    let mut per_port = vec![0usize; topo.ports().len()];
    for (_, u) in &usages {
        for (place, _) in &u.labels {
            match *place {
                Place::Link(l) => per_link[l] += 1,
                Place::Port(p) => per_port[p] += 1,
            }
        }
    }
    let edge: Vec<usize> = topo.edge_ports().map(|p| per_port[p]).collect();
    eprintln!(
        "  mean path {:.2} links; bookings per link: {}; per edge port: {}",
        hops as f64 / booked.max(1) as f64,
        spread(per_link),
        spread(edge)
    );

    // Rebuild once, timed, and check it gives the same index.
    let t = Instant::now();
    let mut rebuilt = Index::new(topo.clone());
    for (id, u) in &usages {
        rebuilt.insert(id, u);
    }
    eprintln!(
        "  rebuild from saved usages, in booking order (one run): {:.2?}",
        t.elapsed()
    );
    let mut by_start: Vec<(String, Usage)> = usages.clone();
    by_start.sort_by_key(|(_, u)| u.window.start);
    let t = Instant::now();
    let mut sorted = Index::new(topo.clone());
    for (id, u) in &by_start {
        sorted.insert(id, u);
    }
    eprintln!(
        "  rebuild from saved usages, sorted by start (one run): {:.2?}",
        t.elapsed()
    );
    // As a restarted IDC rebuilds it: stored rows (one per place, in the store's order)
    // streamed into a loader that builds each calendar with one sort.
    let mut rows = Vec::new();
    for (id, u) in &usages {
        for (place, bw, vlan) in u.per_place() {
            rows.push((id.as_str(), place, u.window, u.hold_until, bw, vlan));
        }
    }
    rows.sort_by_key(|r| (r.1, r.2.start));
    let t = Instant::now();
    let mut loader = IndexLoader::new(topo.clone());
    for &(id, place, window, hold, bw, vlan) in &rows {
        loader.add(id, place, window.start, window.end, hold, bw, vlan);
    }
    let loaded = loader.finish();
    eprintln!(
        "  rebuild from {} stored rows with IndexLoader (one run): {:.2?}; calendars {:.2} MiB, bookkeeping {:.2} MiB",
        rows.len(),
        t.elapsed(),
        mib(loaded.calendar_bytes()),
        mib(loaded.bookkeeping_bytes())
    );
    drop(rows);
    let mut rng = Rng::new(SEED ^ 0x5eed);
    let week = |rng: &mut Rng| {
        let slack = (YEAR - WEEK).num_minutes() as usize;
        let s = now + TimeDelta::minutes(rng.below(slack) as i64);
        TimeWindow::new(s, s + WEEK).expect("positive")
    };
    for _ in 0..1_000 {
        let l = rng.below(LINKS);
        let w = week(&mut rng);
        let want = index.peak(Place::Link(l), &w, now, index.ignore(None));
        for other in [&rebuilt, &sorted, &loaded] {
            assert_eq!(
                want,
                other.peak(Place::Link(l), &w, now, other.ignore(None)),
                "a rebuilt index answers like the original"
            );
        }
    }
    drop((rebuilt, sorted, loaded));

    let queries = generate::requests(&topo, QUERIES, now, YEAR, SEED + 1);
    let peaks = (0..SAMPLES)
        .map(|_| (rng.below(LINKS), week(&mut rng)))
        .collect();

    // Bookings along 6-link paths, found by routing random requests.
    let mut six = Vec::new();
    let mut six_plans = Vec::new();
    for (i, r) in generate::requests(&topo, 50_000, now, YEAR, SEED + 2)
        .iter()
        .enumerate()
    {
        if six.len() == 256 {
            break;
        }
        if let Ok(plan) = find_path(&index, r, now)
            && plan.hops.len() == 6
        {
            let id = format!("six-{i}");
            six.push((id.clone(), plan.usage(r.bw, r.bw_reverse, r.window, None)));
            six_plans.push((id, plan, r.clone()));
        }
    }
    assert!(!six.is_empty(), "no 6-link paths found");

    let mut series = generate::requests(&topo, 200, now, WEEK, SEED + 3);
    for r in &mut series {
        let length = TimeDelta::minutes(60 + rng.below(7 * 60 + 1) as i64);
        r.window = TimeWindow::new(r.window.start, r.window.start + length).expect("positive");
    }

    World {
        topo,
        index,
        usages,
        by_start,
        now,
        queries,
        peaks,
        six,
        six_plans,
        series,
    }
}

/// How a weekly series was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeriesFit {
    /// The best path of the first window fits all 52.
    Best,
    /// The n-th alternative (1-based) of the first window fits all 52.
    Alternative(usize),
    None,
}

/// The `k`-th window of the weekly series that `first` opens.
fn week_of(first: &TimeWindow, k: i64) -> TimeWindow {
    let shift = WEEK * k as i32;
    TimeWindow {
        start: first.start + shift,
        end: first.end + shift,
    }
}

/// `plan` with one VLAN for the whole series: the lowest VLAN (of the request's end
/// ranges) free on every place of the plan in every window, if all 52 windows also have
/// room on its links and end ports. One VLAN end to end: a translating node on the path
/// is not used to change it, so this is conservative.
fn fit_series(
    index: &Index,
    first: &PathRequest,
    plan: &PathPlan,
    now: DateTime<Utc>,
) -> Option<PathPlan> {
    let ig = index.ignore(None);
    let mut places = vec![Place::Port(plan.src), Place::Port(plan.dst)];
    places.extend(plan.hops.iter().map(|h| Place::Link(h.link)));
    let mut free = VlanBits::from_set(&first.src_vlans).and(&VlanBits::from_set(&first.dst_vlans));
    for k in 0..WEEKS {
        let w = week_of(&first.window, k);
        for &p in &places {
            free = free.and(&index.free_labels(p, &w, now, ig));
        }
        if free.is_empty() {
            return None;
        }
    }
    let vlan = free.first()?;
    let mut plan = plan.clone();
    plan.src_vlan = vlan;
    plan.dst_vlan = vlan;
    for h in &mut plan.hops {
        h.vlan = vlan;
    }
    let mut req = first.clone();
    for k in 0..WEEKS {
        req.window = week_of(&first.window, k);
        check_plan(index, &plan, &req, now).ok()?;
    }
    Some(plan)
}

/// One path for all 52 weekly windows of a series, the simple way: take the best path
/// for the first window (`find_path`) and try it on all 52 (`fit_series`: one VLAN free
/// in every window on every place of it, found with 52 × places `free_labels`, then 52
/// `check_plan`s for bandwidth); if it does not fit every week, try the k = 3
/// alternatives for the first window (`compute`) the same way, in order. So this
/// measures one `find_path`, ~52 × 9 label look-ups and 52 `check_plan`s in the common
/// case, and a `compute` plus up to three more rounds when the best path does not fit.
/// (Not an exact search: a path outside the first window's best four is never tried.
/// `find_path_in_all`, one search over all the windows at once, is measured beside it
/// as `weekly_series_52_in_all`.)
fn weekly_series(index: &Index, first: &PathRequest, now: DateTime<Utc>) -> SeriesFit {
    let Ok(best) = find_path(index, first, now) else {
        return SeriesFit::None;
    };
    if fit_series(index, first, &best, now).is_some() {
        return SeriesFit::Best;
    }
    let Ok(computed) = compute(index, first, now, 3, false) else {
        return SeriesFit::None;
    };
    for (i, alt) in computed.alternatives.iter().enumerate() {
        if fit_series(index, first, &alt.plan, now).is_some() {
            return SeriesFit::Alternative(i + 1);
        }
    }
    SeriesFit::None
}

/// The 52 windows of the series `first` opens.
fn weeks(first: &PathRequest) -> Vec<TimeWindow> {
    (0..WEEKS).map(|k| week_of(&first.window, k)).collect()
}

/// Times `SAMPLES` calls of `f(i)` one by one and prints p50/p99/max/mean.
fn percentiles(name: &str, mut f: impl FnMut(usize)) {
    percentiles_of(name, |i| {
        let t = Instant::now();
        f(i);
        t.elapsed()
    });
}

/// Prints p50/p99/max/mean of `SAMPLES` durations, each measured by `f(i)` itself (so
/// it can leave untimed work out).
fn percentiles_of(name: &str, mut f: impl FnMut(usize) -> Duration) {
    let mut times: Vec<Duration> = (0..SAMPLES).map(&mut f).collect();
    times.sort_unstable();
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    eprintln!(
        "  {name:<42} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?}",
        q(0.50),
        q(0.99),
        times[times.len() - 1],
        mean
    );
}

/// The reference the engine is measured against on the same machine in the same run:
/// plain Dijkstra from the source node until the destination is settled, over the same
/// adjacency arrays, looking at no calendar at all.
fn plain_dijkstra(index: &Index, req: &PathRequest) -> Option<u64> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let topo = index.topology();
    let (from, to) = (topo.port(req.src).node, topo.port(req.dst).node);
    let mut dist = vec![u64::MAX; topo.nodes().len()];
    let mut heap = BinaryHeap::new();
    dist[from] = 0;
    heap.push(Reverse((0u64, from)));
    while let Some(Reverse((d, u))) = heap.pop() {
        if u == to {
            return Some(d);
        }
        if d > dist[u] {
            continue;
        }
        for e in index.edges_from(u) {
            let (v, nd) = (e.head as usize, d + e.metric as u64);
            if nd < dist[v] {
                dist[v] = nd;
                heap.push(Reverse((nd, v)));
            }
        }
    }
    None
}

fn latency_table(w: &mut World) {
    let now = w.now;
    eprintln!(
        "\n  per-call latency, {SAMPLES} calls each            {:>11} {:>11} {:>11} {:>11}",
        "p50", "p99", "max", "mean"
    );
    percentiles("(timer overhead: empty call)", |i| {
        black_box(i);
    });
    let index = &w.index;
    let failed = w
        .queries
        .iter()
        .filter(|r| find_path(index, r, now).is_err())
        .count();
    percentiles("reference: plain Dijkstra, no calendars", |i| {
        black_box(plain_dijkstra(index, &w.queries[i % QUERIES]));
    });
    percentiles("single_path (find_path)", |i| {
        black_box(find_path(index, &w.queries[i % QUERIES], now).ok());
    });
    // First pass: each call on a link not looked at before in this loop (cold caches);
    // second pass: the same calls again (warm, as in criterion's loop).
    for pass in ["cold", "warm"] {
        percentiles(&format!("link_peak_week ({pass})"), |i| {
            let (l, win) = &w.peaks[i];
            black_box(index.peak(Place::Link(*l), win, now, index.ignore(None)));
        });
    }
    percentiles("k3_alternatives (compute k=3)", |i| {
        black_box(compute(index, &w.queries[i % QUERIES], now, 3, false).ok());
    });
    let mut outcomes = [0usize; 3];
    for r in &w.series {
        match weekly_series(index, r, now) {
            SeriesFit::Best => outcomes[0] += 1,
            SeriesFit::Alternative(_) => outcomes[1] += 1,
            SeriesFit::None => outcomes[2] += 1,
        }
    }
    let series = w.series.len();
    percentiles("weekly_series_52", |i| {
        black_box(weekly_series(index, &w.series[i % series], now));
    });
    // The same, as one search over all 52 windows at once.
    let series_windows: Vec<Vec<TimeWindow>> = w.series.iter().map(weeks).collect();
    let in_all = w
        .series
        .iter()
        .zip(&series_windows)
        .filter(|(r, ws)| find_path_in_all(index, r, ws, now).is_ok())
        .count();
    percentiles("weekly_series_52 (find_path_in_all)", |i| {
        let k = i % series;
        black_box(find_path_in_all(index, &w.series[k], &series_windows[k], now).ok());
    });
    // As a series is admitted: `plan_series`, one path for all 52 (what issue 4 asks).
    let numbered: Vec<Vec<(u32, TimeWindow)>> = series_windows
        .iter()
        .map(|ws| {
            ws.iter()
                .enumerate()
                .map(|(i, w)| (i as u32 + 1, *w))
                .collect()
        })
        .collect();
    percentiles("weekly_series_52 (plan_series, one path)", |i| {
        let k = i % series;
        black_box(plan_series(index, &w.series[k], &numbered[k], now, true));
    });
    let six = w.six.len();
    let index = &mut w.index;
    // Cold: the 256 bookings cycled through touch more calendar memory than the caches
    // hold. Hot: the same booking was just inserted and removed.
    percentiles_of("add_booking_6_links (insert, cold)", |i| {
        let (id, u) = &w.six[i % six];
        let t = Instant::now();
        index.insert(id, u);
        let took = t.elapsed();
        index.remove(id);
        took
    });
    percentiles_of("add_booking_6_links (insert, hot)", |i| {
        let (id, u) = &w.six[i % six];
        index.insert(id, u);
        index.remove(id);
        let t = Instant::now();
        index.insert(id, u);
        let took = t.elapsed();
        index.remove(id);
        took
    });
    // As the controller does it: route the request (untimed; it reads the calendars
    // the booking then goes into), then insert, and the booking stays. Recent
    // commitments pile up beside each calendar's points and are folded in every so
    // often, inside the timed inserts.
    let mut kept = Vec::with_capacity(SAMPLES);
    percentiles_of("add_booking_6_links (insert after route, kept)", |i| {
        let (_, stored, req) = &w.six_plans[i % six];
        // Later rounds of the same request may no longer fit: book the first plan then.
        let plan = find_path(index, req, now).unwrap_or_else(|_| stored.clone());
        let usage = plan.usage(req.bw, req.bw_reverse, req.window, None);
        let id = format!("kept-{i}");
        let t = Instant::now();
        index.insert(&id, &usage);
        let took = t.elapsed();
        kept.push(id);
        took
    });
    percentiles_of("add_booking_6_links (remove the kept)", |i| {
        let t = Instant::now();
        index.remove(&kept[i]);
        t.elapsed()
    });
    percentiles_of("add_booking_6_links (remove, hot)", |i| {
        let (id, u) = &w.six[i % six];
        index.insert(id, u);
        let t = Instant::now();
        index.remove(id);
        t.elapsed()
    });
    percentiles("add_booking_6_links (insert+remove, cold)", |i| {
        let (id, u) = &w.six[i % six];
        index.insert(id, u);
        index.remove(id);
    });
    percentiles_of("add_booking_6_links (usage()+insert, cold)", |i| {
        let (id, plan, req) = &w.six_plans[i % six];
        let t = Instant::now();
        index.insert(id, &plan.usage(req.bw, req.bw_reverse, req.window, None));
        let took = t.elapsed();
        index.remove(id);
        took
    });
    percentiles("single_path again (after the inserts)", |i| {
        black_box(find_path(index, &w.queries[i % QUERIES], now).ok());
    });
    eprintln!(
        "  ({failed} of {QUERIES} single-path queries found no path; weekly series: {} fit on the best path, {} on an alternative, {} on none, of {series}; find_path_in_all places {in_all})",
        outcomes[0], outcomes[1], outcomes[2]
    );
    eprintln!("  ({six} distinct 6-link bookings cycled through)\n");
}

fn benches(c: &mut Criterion) {
    let mut w = build_world();
    latency_table(&mut w);
    let now = w.now;

    let index = &w.index;
    let mut i = 0;
    c.bench_function("single_path", |b| {
        b.iter(|| {
            i += 1;
            black_box(find_path(index, &w.queries[i % QUERIES], now).ok())
        })
    });
    c.bench_function("link_peak_week", |b| {
        b.iter(|| {
            i += 1;
            let (l, win) = &w.peaks[i % w.peaks.len()];
            black_box(index.peak(Place::Link(*l), win, now, index.ignore(None)))
        })
    });
    c.bench_function("k3_alternatives", |b| {
        b.iter(|| {
            i += 1;
            black_box(compute(index, &w.queries[i % QUERIES], now, 3, false).ok())
        })
    });
    c.bench_function("weekly_series_52", |b| {
        b.iter(|| {
            i += 1;
            black_box(weekly_series(index, &w.series[i % w.series.len()], now))
        })
    });
    let series_windows: Vec<Vec<TimeWindow>> = w.series.iter().map(weeks).collect();
    c.bench_function("weekly_series_52_in_all", |b| {
        b.iter(|| {
            i += 1;
            let k = i % w.series.len();
            black_box(find_path_in_all(index, &w.series[k], &series_windows[k], now).ok())
        })
    });
    let index = &mut w.index;
    let six = &w.six;
    c.bench_function("add_booking_6_links (insert+remove pair)", |b| {
        b.iter(|| {
            i += 1;
            let (id, u) = &six[i % six.len()];
            index.insert(id, u);
            index.remove(id);
        })
    });

    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(20));
    let topo = &w.topo;
    // As a restarted IDC does it: the stored rows (one per place, in the store's order,
    // by resource) streamed into an IndexLoader.
    let mut rows = Vec::new();
    for (id, u) in &w.usages {
        for (place, bw, vlan) in u.per_place() {
            rows.push((id.as_str(), place, u.window, u.hold_until, bw, vlan));
        }
    }
    rows.sort_by_key(|r| (r.1, r.2.start));
    g.bench_function("rebuild_index_from_stored_rows", |b| {
        b.iter(|| {
            let mut loader = IndexLoader::new(topo.clone());
            for &(id, place, window, hold, bw, vlan) in &rows {
                loader.add(id, place, window.start, window.end, hold, bw, vlan);
            }
            loader.finish()
        })
    });
    for (name, usages) in [
        ("rebuild_index", &w.usages),
        ("rebuild_index_sorted_by_start", &w.by_start),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Index::new(topo.clone()),
                |mut ix| {
                    for (id, u) in usages {
                        ix.insert(id, u);
                    }
                    ix
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = pce;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(pce);
