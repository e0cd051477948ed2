//! Domain-level routes: from the exchanged documents, the sequences of domains a circuit
//! can cross, each domain entered and left through a demarcation point both sides
//! publish. The aggregator asks each domain on a route for its segment (each domain's own
//! engine finds the path inside it, so internals stay private) and tries the next route
//! when one fails.

use chrono::{DateTime, Utc};
use sluice_model::{Mbps, Stp};

use crate::documents::DomainDocument;

/// One domain's part of a circuit: from where it enters to where it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub domain: String,
    pub ingress: Stp,
    pub egress: Stp,
}

/// The segments of one route, from the source's domain to the destination's.
pub type DomainRoute = Vec<Segment>;

/// A route under way: the domains so far, the crossings (our port, theirs) taken, and
/// their summed metric.
type Partial = (Vec<String>, Vec<(Stp, Stp)>, u64);

/// How many partial routes the search may look at: domains are few, but a dense mesh
/// has many simple routes.
const MAX_EXPANDED: usize = 10_000;

/// What a route must carry.
#[derive(Debug, Clone)]
pub struct RouteAsk<'a> {
    pub src: &'a Stp,
    pub dst: &'a Stp,
    pub bw: Mbps,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Domains not to cross (they failed, or the caller said so); the end points'
    /// domains are always allowed.
    pub avoid: &'a [String],
}

/// Up to `k` routes from `ask.src` to `ask.dst` over the domains in `docs`: lowest total
/// demarcation metric first, then fewest domains, then the order the documents list
/// their demarcations. Never through a domain in `avoid` or twice through one. A
/// demarcation counts only if both of its sides publish it, facing each other, and both
/// summaries allow the bandwidth over the window.
pub fn domain_routes(docs: &[&DomainDocument], ask: &RouteAsk<'_>, k: usize) -> Vec<DomainRoute> {
    let (src, dst) = (ask.src, ask.dst);
    let doc = |d: &str| docs.iter().copied().find(|x| x.domain == d);
    // The crossings out of `d`: (our port, the next domain's port, metric).
    let crossings = |d: &str| -> Vec<(Stp, Stp, u32)> {
        let Some(here) = doc(d) else {
            return Vec::new();
        };
        here.demarcations
            .iter()
            .filter(|m| m.may_carry(ask.bw, ask.start, ask.end))
            .filter(|m| {
                doc(&m.remote.domain).is_some_and(|there| {
                    there.demarcations.iter().any(|back| {
                        back.local == m.remote
                            && back.remote == m.local
                            && back.may_carry(ask.bw, ask.start, ask.end)
                    })
                })
            })
            .map(|m| (m.local.clone(), m.remote.clone(), m.metric))
            .collect()
    };
    let allowed = |d: &str| !ask.avoid.iter().any(|a| a == d) || d == src.domain || d == dst.domain;
    if doc(&src.domain).is_none() || doc(&dst.domain).is_none() || !allowed(&src.domain) {
        return Vec::new();
    }
    // Every simple route (domains are few), breadth first, then ranked.
    let mut found: Vec<(u64, usize, DomainRoute)> = Vec::new();
    let mut frontier: Vec<Partial> = vec![(vec![src.domain.clone()], Vec::new(), 0)];
    let mut expanded = 0;
    while !frontier.is_empty() && expanded < MAX_EXPANDED {
        let mut next = Vec::new();
        for (domains, hops, metric) in frontier {
            expanded += 1;
            let last = domains
                .last()
                .expect("starts with the source domain")
                .clone();
            if last == dst.domain {
                found.push((metric, domains.len(), segments(src, dst, &domains, &hops)));
                continue;
            }
            for (out, into, m) in crossings(&last) {
                let d = &into.domain;
                if domains.contains(d) || !allowed(d) {
                    continue;
                }
                let mut domains = domains.clone();
                domains.push(d.clone());
                let mut hops = hops.clone();
                hops.push((out, into));
                next.push((domains, hops, metric + u64::from(m)));
            }
        }
        frontier = next;
    }
    // Stable: equal routes keep the order they were found in.
    found.sort_by_key(|(metric, len, _)| (*metric, *len));
    found.into_iter().take(k).map(|(_, _, r)| r).collect()
}

fn segments(src: &Stp, dst: &Stp, domains: &[String], hops: &[(Stp, Stp)]) -> DomainRoute {
    domains
        .iter()
        .enumerate()
        .map(|(i, d)| Segment {
            domain: d.clone(),
            ingress: if i == 0 {
                src.clone()
            } else {
                hops[i - 1].1.clone()
            },
            egress: if i + 1 == domains.len() {
                dst.clone()
            } else {
                hops[i].0.clone()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::FreeStep;
    use crate::documents::tests::{doc, t};

    fn stp(s: &str) -> Stp {
        Stp::parse(s).unwrap()
    }

    fn find(
        docs: &[&DomainDocument],
        src: &Stp,
        dst: &Stp,
        avoid: &[String],
        k: usize,
    ) -> Vec<DomainRoute> {
        let ask = RouteAsk {
            src,
            dst,
            bw: Mbps(100),
            start: t(10),
            end: t(20),
            avoid,
        };
        domain_routes(docs, &ask, k)
    }

    fn names(r: &DomainRoute) -> Vec<String> {
        r.iter()
            .map(|s| format!("{}[{}>{}]", s.domain, s.ingress.port, s.egress.port))
            .collect()
    }

    #[test]
    fn a_line_of_three_domains_gives_one_route_with_its_ports() {
        let a = doc("a", 1, 100, &[("b", "to-b", "to-a")]);
        let b = doc("b", 1, 100, &[("a", "to-a", "to-b"), ("c", "to-c", "to-b")]);
        let c = doc("c", 1, 100, &[("b", "to-b", "to-c")]);
        let routes = find(&[&a, &b, &c], &stp("a:n:edge"), &stp("c:n:edge"), &[], 3);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            names(&routes[0]),
            ["a[edge>to-b]", "b[to-a>to-c]", "c[to-b>edge]"]
        );
        // Within one domain: one segment.
        let routes = find(&[&a], &stp("a:n:edge"), &stp("a:n:edge"), &[], 3);
        assert_eq!(names(&routes[0]), ["a[edge>edge]"]);
    }

    #[test]
    fn a_triangle_goes_around_a_domain_to_avoid_and_fewest_domains_come_first() {
        // a-b-d and a-c-d, and a-d directly.
        let a = doc(
            "a",
            1,
            100,
            &[
                ("b", "to-b", "to-a"),
                ("c", "to-c", "to-a"),
                ("d", "to-d", "to-a"),
            ],
        );
        let b = doc("b", 1, 100, &[("a", "to-a", "to-b"), ("d", "to-d", "to-b")]);
        let c = doc("c", 1, 100, &[("a", "to-a", "to-c"), ("d", "to-d", "to-c")]);
        let d = doc(
            "d",
            1,
            100,
            &[
                ("a", "to-a", "to-d"),
                ("b", "to-b", "to-d"),
                ("c", "to-c", "to-d"),
            ],
        );
        let all = [&a, &b, &c, &d];
        let (src, dst) = (stp("a:n:edge"), stp("d:n:edge"));
        let routes = find(&all, &src, &dst, &[], 5);
        let domains: Vec<Vec<&str>> = routes
            .iter()
            .map(|r| r.iter().map(|s| s.domain.as_str()).collect())
            .collect();
        assert_eq!(
            domains,
            [vec!["a", "d"], vec!["a", "b", "d"], vec!["a", "c", "d"]]
        );
        // b is full for the window: around it.
        let routes = find(&all, &src, &dst, &["b".into()], 5);
        assert!(routes.iter().all(|r| r.iter().all(|s| s.domain != "b")));
        assert_eq!(routes.len(), 2);
        // k bounds the answer.
        assert_eq!(find(&all, &src, &dst, &[], 1).len(), 1);
    }

    #[test]
    fn a_demarcation_counts_only_when_both_sides_publish_it() {
        // a says it faces b; b does not say so.
        let a = doc("a", 1, 100, &[("b", "to-b", "to-a")]);
        let b = doc("b", 1, 100, &[]);
        assert!(find(&[&a, &b], &stp("a:n:edge"), &stp("b:n:edge"), &[], 3).is_empty());
        // b faces a, but through another port than the one a names.
        let b = doc("b", 1, 100, &[("a", "other", "to-b")]);
        assert!(find(&[&a, &b], &stp("a:n:edge"), &stp("b:n:edge"), &[], 3).is_empty());
        // Unknown domains give no route.
        assert!(find(&[&a], &stp("a:n:edge"), &stp("z:n:edge"), &[], 3).is_empty());
    }

    #[test]
    fn the_cheapest_route_comes_first_and_summaries_rule_out_full_crossings() {
        // A triangle: a-c directly over an expensive link, or a-b-c over cheap ones.
        let mut a = doc("a", 1, 100, &[("b", "to-b", "to-a"), ("c", "to-c", "to-a")]);
        let b = doc("b", 1, 100, &[("a", "to-a", "to-b"), ("c", "to-c", "to-b")]);
        let mut c = doc("c", 1, 100, &[("a", "to-a", "to-c"), ("b", "to-b", "to-c")]);
        a.demarcations[1].metric = 10;
        c.demarcations[0].metric = 10;
        let (src, dst) = (stp("a:n:edge"), stp("c:n:edge"));
        let domains = |docs: &[&DomainDocument]| -> Vec<Vec<String>> {
            find(docs, &src, &dst, &[], 5)
                .iter()
                .map(|r| r.iter().map(|s| s.domain.clone()).collect())
                .collect()
        };
        assert_eq!(
            domains(&[&a, &b, &c]),
            [vec!["a", "b", "c"], vec!["a", "c"]]
        );
        // b's side of b-c says only 50 Mb/s are free during the window: that crossing
        // cannot carry 100, so only the direct route is left.
        let mut b_full = b.clone();
        b_full.demarcations[1].free = vec![FreeStep {
            start: t(0),
            end: t(15),
            free: Mbps(50),
        }];
        assert_eq!(domains(&[&a, &b_full, &c]), [vec!["a", "c"]]);
        // Free again after the window: no effect.
        b_full.demarcations[1].free[0].end = t(10);
        assert_eq!(domains(&[&a, &b_full, &c]).len(), 2);
    }
}
