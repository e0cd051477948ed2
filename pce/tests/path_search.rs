//! Path search against hand-built cases and, on random small graphs, against a
//! brute-force oracle that enumerates every simple path.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use sluice_model::topology::fixture;
use sluice_model::{
    Criteria, Ero, ErrorCode, Mbps, Resource, Stp, StpRequest, TimeWindow, Topology, VlanSet,
};
use sluice_pce::{Index, PathPlan, find_path, resolve};

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn criteria(src: &str, dst: &str, bw: u64, a: i64, b: i64) -> Criteria {
    let end = |n: &str| StpRequest {
        stp: Stp::parse(&format!("d:{n}:p0")).unwrap(),
        vlans: None,
    };
    Criteria {
        src: end(src),
        dst: end(dst),
        bw: Mbps(bw),
        window: TimeWindow::new(t(a), t(b)).unwrap(),
        ero: Ero::default(),
        description: String::new(),
        auto_provision: false,
    }
}

/// a-b-d is short, a-c-d is long; both 100 Mb/s.
fn diamond() -> Arc<Topology> {
    Arc::new(fixture::from_links(
        "d",
        &[
            ("a", "b", 100, 1),
            ("b", "d", 100, 1),
            ("a", "c", 100, 5),
            ("c", "d", 100, 5),
        ],
        1000,
    ))
}

fn book(index: &mut Index, id: &str, c: &Criteria, now: DateTime<Utc>) -> PathPlan {
    let req = resolve(index.topology(), c).unwrap();
    let plan = find_path(index, &req, now).unwrap();
    index.insert(id, &plan.usage(c.bw, c.window, None));
    plan
}

fn nodes_of(topo: &Topology, plan: &PathPlan) -> Vec<String> {
    plan.path_hops(topo).iter().map(|h| h.to.clone()).collect()
}

#[test]
fn takes_the_parallel_path_when_the_short_one_is_full_and_only_inside_the_window() {
    let topo = diamond();
    let mut index = Index::new(topo.clone());
    let first = book(&mut index, "r1", &criteria("a", "d", 80, 0, 100), t(0));
    assert_eq!(nodes_of(&topo, &first), ["b", "d"]);
    assert_eq!(first.metric, 2);
    let second = book(&mut index, "r2", &criteria("a", "d", 30, 50, 150), t(0));
    assert_eq!(nodes_of(&topo, &second), ["c", "d"], "80+30 > 100 on a-b-d");
    // Back to back with r1 (which ends at 100): no overlap, the short path again.
    let third = book(&mut index, "r3", &criteria("a", "d", 70, 100, 200), t(0));
    assert_eq!(nodes_of(&topo, &third), ["b", "d"]);
}

#[test]
fn capacity_error_says_what_would_fit() {
    let topo = diamond();
    let mut index = Index::new(topo.clone());
    book(&mut index, "r1", &criteria("a", "d", 60, 0, 100), t(0));
    book(&mut index, "r2", &criteria("a", "d", 60, 0, 100), t(0));
    let req = resolve(&topo, &criteria("a", "d", 50, 10, 20)).unwrap();
    let e = find_path(&index, &req, t(0)).unwrap_err();
    assert_eq!(e.code, ErrorCode::CapacityUnavailable);
    assert_eq!(e.field.as_deref(), Some("capacity_mbps"));
    let fb = e.capacity.unwrap();
    assert_eq!((fb.requested, fb.available), (Mbps(50), Mbps(40)));
    assert!(
        e.message.contains("requested 50, available 40"),
        "{}",
        e.message
    );
    assert!(!fb.bottlenecks.is_empty());
}

#[test]
fn expired_holds_do_not_block() {
    let topo = diamond();
    let mut index = Index::new(topo.clone());
    let c = criteria("a", "d", 100, 0, 100);
    let req = resolve(&topo, &c).unwrap();
    let plan = find_path(&index, &req, t(0)).unwrap();
    index.insert("held", &plan.usage(c.bw, c.window, Some(t(30))));
    let other = book(&mut index, "x", &criteria("a", "d", 100, 0, 100), t(0));
    assert_eq!(nodes_of(&topo, &other), ["c", "d"]);
    let req = resolve(&topo, &criteria("a", "d", 100, 0, 100)).unwrap();
    assert_eq!(
        find_path(&index, &req, t(10)).unwrap_err().code,
        ErrorCode::CapacityUnavailable
    );
    assert!(
        find_path(&index, &req, t(30)).is_ok(),
        "the hold expired at 30"
    );
}

#[test]
fn ero_include_and_exclude() {
    let topo = diamond();
    let index = Index::new(topo.clone());
    let mut c = criteria("a", "d", 10, 0, 100);
    c.ero.include = vec!["c".into()];
    let plan = find_path(&index, &resolve(&topo, &c).unwrap(), t(0)).unwrap();
    assert_eq!(nodes_of(&topo, &plan), ["c", "d"]);
    c.ero = Ero {
        include: vec![],
        exclude: vec!["b-d".into()],
    };
    let plan = find_path(&index, &resolve(&topo, &c).unwrap(), t(0)).unwrap();
    assert_eq!(nodes_of(&topo, &plan), ["c", "d"]);
    c.ero = Ero {
        include: vec![],
        exclude: vec!["b".into(), "c".into()],
    };
    let e = find_path(&index, &resolve(&topo, &c).unwrap(), t(0)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoPathFound);
    c.ero = Ero {
        include: vec!["nowhere".into()],
        exclude: vec![],
    };
    let e = resolve(&topo, &c).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidEroMember, Some("ero_include[0]"))
    );
    c.ero = Ero {
        include: vec![],
        exclude: vec!["a".into()],
    };
    assert_eq!(
        resolve(&topo, &c).unwrap_err().code,
        ErrorCode::InvalidEroMember
    );
}

#[test]
fn labels_must_be_free_and_in_range() {
    let topo = diamond();
    let mut index = Index::new(topo.clone());
    let mut c = criteria("a", "d", 10, 0, 100);
    c.src.vlans = Some(VlanSet::parse("150").unwrap());
    c.dst.vlans = Some(VlanSet::parse("150-151").unwrap());
    let plan = book(&mut index, "r1", &c, t(0));
    assert_eq!((plan.src_vlan.id(), plan.dst_vlan.id()), (150, 150));
    // 150 is taken at a now; the destination could use 151, but a-b-d cannot translate.
    let e = find_path(&index, &resolve(&topo, &c).unwrap(), t(0)).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::StpUnavailable, Some("src_vlan"))
    );
    c.src.vlans = Some(VlanSet::parse("151").unwrap());
    let plan = find_path(&index, &resolve(&topo, &c).unwrap(), t(0)).unwrap();
    assert_eq!(plan.dst_vlan.id(), 151);
    c.src.vlans = Some(VlanSet::parse("152").unwrap());
    let e = find_path(&index, &resolve(&topo, &c).unwrap(), t(0)).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::StpUnavailable, Some("dst_vlan"))
    );
    c.src.vlans = Some(VlanSet::parse("300").unwrap());
    let e = resolve(&topo, &c).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidLabelFormat, Some("src_vlan"))
    );
}

#[test]
fn unknown_and_internal_stps_are_refused() {
    let topo = diamond();
    let mut c = criteria("a", "d", 10, 0, 100);
    c.src.stp = Stp::parse("d:zz:p0").unwrap();
    assert_eq!(resolve(&topo, &c).unwrap_err().code, ErrorCode::UnknownStp);
    c.src.stp = Stp::parse("d:a:to-b").unwrap();
    let e = resolve(&topo, &c).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::UnknownStp, Some("src"))
    );
    c.src.stp = Stp::parse("other:a:p0").unwrap();
    assert_eq!(resolve(&topo, &c).unwrap_err().code, ErrorCode::UnknownStp);
}

// ---- brute-force oracle ----

fn simple_paths(
    topo: &Topology,
    from: usize,
    to: usize,
) -> Vec<Vec<(usize, sluice_model::Direction)>> {
    fn go(
        topo: &Topology,
        at: usize,
        to: usize,
        seen: &mut Vec<usize>,
        path: &mut Vec<(usize, sluice_model::Direction)>,
        out: &mut Vec<Vec<(usize, sluice_model::Direction)>>,
    ) {
        if at == to {
            out.push(path.clone());
            return;
        }
        for &(l, d) in topo.adjacent(at) {
            let next = topo.link_head(l, d);
            if seen.contains(&next) {
                continue;
            }
            seen.push(next);
            path.push((l, d));
            go(topo, next, to, seen, path, out);
            path.pop();
            seen.pop();
        }
    }
    let mut out = Vec::new();
    go(topo, from, to, &mut vec![from], &mut Vec::new(), &mut out);
    out
}

/// Booked level of a resource at every whole second of the window, by brute force.
fn brute_peak(bookings: &[(Resource, i64, i64, u64)], r: Resource, a: i64, b: i64) -> u64 {
    (a..b)
        .map(|x| {
            bookings
                .iter()
                .filter(|(rr, s, e, _)| *rr == r && *s <= x && x < *e)
                .map(|bk| bk.3)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

fn graph_strategy() -> impl Strategy<Value = (Vec<(usize, usize, u64, u32)>, usize)> {
    (3usize..6).prop_flat_map(|n| {
        let edges = prop::collection::vec((0..n, 0..n, 50u64..200, 1u32..10), n..2 * n + 2);
        (edges, Just(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn search_agrees_with_the_oracle(
        (edges, n) in graph_strategy(),
        existing in prop::collection::vec((0usize..6, 0usize..6, 10u64..120, 0i64..40, 1i64..40), 0..12),
        bw in 10u64..150, a in 0i64..40, len in 1i64..40,
    ) {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let mut links = Vec::new();
        let mut seen_pairs = std::collections::HashSet::new();
        for (x, y, cap, m) in edges {
            if x == y || !seen_pairs.insert((x.min(y), x.max(y))) { continue; }
            links.push((names[x].as_str(), names[y].as_str(), cap, m));
        }
        prop_assume!(!links.is_empty());
        let topo = Arc::new(fixture::from_links("d", &links, 10_000));
        let mut index = Index::new(topo.clone());
        let node_name = |i: usize| topo.node(i % topo.nodes().len()).id.clone();
        // Book what fits of the existing set, recording the per-resource bookings.
        let mut booked: Vec<(Resource, i64, i64, u64)> = Vec::new();
        for (k, (s, d, b, st, l)) in existing.iter().enumerate() {
            let (s, d) = (node_name(*s), node_name(*d));
            if s == d { continue; }
            let c = criteria(&s, &d, *b, *st, st + l);
            let req = resolve(&topo, &c).unwrap();
            if let Ok(plan) = find_path(&index, &req, t(0)) {
                let usage = plan.usage(c.bw, c.window, None);
                for (r, bw) in &usage.bandwidth {
                    booked.push((*r, *st, st + l, bw.0));
                }
                index.insert(&format!("e{k}"), &usage);
            }
        }
        // Nothing booked so far exceeds any capacity at any instant.
        for r in booked.iter().map(|b| b.0).collect::<std::collections::HashSet<_>>() {
            prop_assert!(brute_peak(&booked, r, 0, 100) <= topo.capacity(r).0);
        }
        let (src, dst) = (topo.port(0).node, topo.nodes().len() - 1);
        let c = criteria(&topo.node(src).id, &topo.node(dst).id, bw, a, a + len);
        let req = resolve(&topo, &c).unwrap();
        let room = |r: Resource| topo.capacity(r).0.saturating_sub(brute_peak(&booked, r, a, a + len));
        let both = |l: usize| {
            room(Resource::Link(l, sluice_model::Direction::Forward))
                .min(room(Resource::Link(l, sluice_model::Direction::Reverse)))
        };
        let ports = [req.src, req.dst]
            .iter()
            .flat_map(|&p| [sluice_model::Direction::Forward, sluice_model::Direction::Reverse].map(|d| room(Resource::Port(p, d))))
            .min()
            .unwrap();
        let paths = simple_paths(&topo, src, dst);
        let widths: Vec<(u64, u64)> = paths
            .iter()
            .map(|p| {
                let w = p.iter().map(|(l, _)| both(*l)).min().unwrap_or(u64::MAX).min(ports);
                let m = p.iter().map(|(l, _)| topo.link(*l).metric as u64).sum();
                (w, m)
            })
            .collect();
        let best_fitting_metric = widths.iter().filter(|(w, _)| *w >= bw).map(|(_, m)| *m).min();
        match find_path(&index, &req, t(0)) {
            Ok(plan) => {
                let w = plan.hops.iter().map(|(l, _)| both(*l)).min().unwrap_or(u64::MAX).min(ports);
                prop_assert!(w >= bw, "returned path over-books: room {w} < {bw}");
                prop_assert_eq!(Some(plan.metric), best_fitting_metric, "not the lowest metric");
            }
            Err(e) if paths.is_empty() => prop_assert_eq!(e.code, ErrorCode::NoPathFound),
            Err(e) => {
                prop_assert_eq!(best_fitting_metric, None, "a path fits but none was returned: {}", e);
                prop_assert_eq!(e.code, ErrorCode::CapacityUnavailable);
                let widest = widths.iter().map(|(w, _)| *w).max().unwrap();
                prop_assert_eq!(e.capacity.unwrap().available, Mbps(widest));
            }
        }
    }
}
