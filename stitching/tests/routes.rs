//! `domain_routes` over random meshes of up to six domains: every route it gives is a
//! real one (each crossing published by both sides, no domain twice, none avoided), they
//! come cheapest first, and it misses none: every simple route, found by brute force, is
//! in the answer when `k` is large enough.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use sluice_model::{Mbps, Stp, VlanSet};
use sluice_stitching::{
    Demarcation, DomainDocument, DomainRoute, EndPoint, RouteAsk, domain_routes,
};

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn stp(s: &str) -> Stp {
    Stp::parse(s).unwrap()
}

fn name(i: usize) -> String {
    format!("d{i}")
}

/// Domains d0..dn; each link (i, j, metric) is a demarcation both sides publish.
fn docs(n: usize, links: &[(usize, usize, u32)]) -> Vec<DomainDocument> {
    (0..n)
        .map(|i| DomainDocument {
            domain: name(i),
            url: String::new(),
            version: 1,
            expires_at: t(1000),
            translates: false,
            end_points: vec![EndPoint {
                stp: stp(&format!("{}:n:edge", name(i))),
                vlans: VlanSet::parse("100-199").unwrap(),
                capacity: Mbps(10_000),
                translates: false,
            }],
            demarcations: links
                .iter()
                .filter_map(|&(a, b, m)| {
                    let other = if a == i {
                        b
                    } else if b == i {
                        a
                    } else {
                        return None;
                    };
                    Some(Demarcation {
                        local: stp(&format!("{}:n:to-{}", name(i), name(other))),
                        remote: stp(&format!("{}:n:to-{}", name(other), name(i))),
                        vlans: VlanSet::parse("100-199").unwrap(),
                        capacity: Mbps(10_000),
                        translates: false,
                        metric: m,
                        free: Vec::new(),
                    })
                })
                .collect(),
        })
        .collect()
}

fn mesh() -> impl Strategy<Value = (usize, Vec<(usize, usize, u32)>)> {
    (2usize..=6).prop_flat_map(|n| {
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        let k = pairs.len();
        (
            Just(n),
            prop::collection::vec((any::<bool>(), 1u32..20), k).prop_map(move |picks| {
                pairs
                    .iter()
                    .zip(picks)
                    .filter(|(_, (on, _))| *on)
                    .map(|(&(a, b), (_, m))| (a, b, m))
                    .collect::<Vec<_>>()
            }),
        )
    })
}

/// Every simple route from d0 to the last domain, as domain sequences, with its metric.
fn all_routes(
    n: usize,
    links: &[(usize, usize, u32)],
    avoid: Option<usize>,
) -> Vec<(u64, Vec<usize>)> {
    fn go(
        at: usize,
        n: usize,
        links: &[(usize, usize, u32)],
        avoid: Option<usize>,
        path: &mut Vec<usize>,
        metric: u64,
        out: &mut Vec<(u64, Vec<usize>)>,
    ) {
        if at == n - 1 {
            out.push((metric, path.clone()));
            return;
        }
        for &(a, b, m) in links {
            let next = if a == at {
                b
            } else if b == at {
                a
            } else {
                continue;
            };
            if path.contains(&next) || (Some(next) == avoid && next != n - 1) {
                continue;
            }
            path.push(next);
            go(next, n, links, avoid, path, metric + u64::from(m), out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    go(0, n, links, avoid, &mut vec![0], 0, &mut out);
    out
}

fn domains_of(r: &DomainRoute) -> Vec<usize> {
    r.iter().map(|s| s.domain[1..].parse().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_route_is_real_cheapest_first_and_none_is_missed(
        (n, links) in mesh(),
        avoid_middle in any::<bool>(),
    ) {
        let docs = docs(n, &links);
        let refs: Vec<&DomainDocument> = docs.iter().collect();
        let avoid: Vec<String> = if avoid_middle && n > 2 { vec![name(1)] } else { vec![] };
        let (src, dst) = (stp("d0:n:edge"), stp(&format!("{}:n:edge", name(n - 1))));
        let ask = RouteAsk {
            src: &src,
            dst: &dst,
            bw: Mbps(100),
            start: t(10),
            end: t(20),
            avoid: &avoid,
        };
        let got = domain_routes(&refs, &ask, 10_000);
        let expected = all_routes(n, &links, (avoid_middle && n > 2).then_some(1));
        prop_assert_eq!(got.len(), expected.len());
        let metric_of = |r: &[usize]| -> u64 {
            r.windows(2)
                .map(|w| {
                    links
                        .iter()
                        .find(|&&(a, b, _)| (a, b) == (w[0], w[1]) || (b, a) == (w[0], w[1]))
                        .map(|l| u64::from(l.2))
                        .unwrap()
                })
                .sum()
        };
        let mut last = (0u64, 0usize);
        for r in &got {
            let d = domains_of(r);
            prop_assert!(expected.iter().any(|(_, e)| *e == d), "not a real route: {d:?}");
            // Stitched where the documents say: each egress faces the next ingress.
            for w in r.windows(2) {
                prop_assert_eq!(&w[0].egress.domain, &w[0].domain);
                prop_assert_eq!(&w[1].ingress.domain, &w[1].domain);
            }
            let key = (metric_of(&d), d.len());
            prop_assert!(key >= last, "not cheapest first");
            last = key;
        }
    }
}
