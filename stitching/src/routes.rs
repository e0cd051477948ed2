//! Domain-level routes: from the exchanged documents, the sequences of domains a circuit
//! can cross, each domain entered and left through a demarcation point both sides
//! publish. The aggregator asks each domain on a route for its segment (each domain's own
//! engine finds the path inside it, so internals stay private) and tries the next route
//! when one fails.

use sluice_model::Stp;

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

/// A route under way: the domains so far, and the crossings (our port, theirs) taken.
type Partial = (Vec<String>, Vec<(Stp, Stp)>);

/// How many partial routes the search may look at: domains are few, but a dense mesh
/// has many simple routes.
const MAX_EXPANDED: usize = 10_000;

/// Up to `k` routes from `src` to `dst` over the domains in `docs`, fewest domains first
/// (ties in the order the documents list their demarcations), never through a domain in
/// `avoid`, never through a domain twice. A demarcation counts only if both of its
/// sides publish it, facing each other.
pub fn domain_routes(
    docs: &[&DomainDocument],
    src: &Stp,
    dst: &Stp,
    avoid: &[String],
    k: usize,
) -> Vec<DomainRoute> {
    let doc = |d: &str| docs.iter().copied().find(|x| x.domain == d);
    // The crossings out of `d`: (our port, the next domain's port).
    let crossings = |d: &str| -> Vec<(Stp, Stp)> {
        let Some(here) = doc(d) else {
            return Vec::new();
        };
        here.demarcations
            .iter()
            .filter(|m| {
                doc(&m.remote.domain).is_some_and(|there| {
                    there
                        .demarcations
                        .iter()
                        .any(|back| back.local == m.remote && back.remote == m.local)
                })
            })
            .map(|m| (m.local.clone(), m.remote.clone()))
            .collect()
    };
    let allowed = |d: &str| !avoid.iter().any(|a| a == d) || d == src.domain || d == dst.domain;
    if doc(&src.domain).is_none() || doc(&dst.domain).is_none() || !allowed(&src.domain) {
        return Vec::new();
    }
    // Breadth first over partial routes, so fewer domains come first.
    let mut routes = Vec::new();
    let mut frontier: Vec<Partial> = vec![(vec![src.domain.clone()], Vec::new())];
    let mut expanded = 0;
    while !frontier.is_empty() && routes.len() < k && expanded < MAX_EXPANDED {
        let mut next = Vec::new();
        for (domains, hops) in frontier {
            expanded += 1;
            let last = domains
                .last()
                .expect("starts with the source domain")
                .clone();
            if last == dst.domain {
                routes.push(segments(src, dst, &domains, &hops));
                if routes.len() == k {
                    break;
                }
                continue;
            }
            for (out, into) in crossings(&last) {
                let d = &into.domain;
                if domains.contains(d) || !allowed(d) {
                    continue;
                }
                let mut domains = domains.clone();
                domains.push(d.clone());
                let mut hops = hops.clone();
                hops.push((out, into));
                next.push((domains, hops));
            }
        }
        frontier = next;
    }
    routes
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
    use crate::documents::tests::doc;

    fn stp(s: &str) -> Stp {
        Stp::parse(s).unwrap()
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
        let routes = domain_routes(&[&a, &b, &c], &stp("a:n:edge"), &stp("c:n:edge"), &[], 3);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            names(&routes[0]),
            ["a[edge>to-b]", "b[to-a>to-c]", "c[to-b>edge]"]
        );
        // Within one domain: one segment.
        let routes = domain_routes(&[&a], &stp("a:n:edge"), &stp("a:n:edge"), &[], 3);
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
        let routes = domain_routes(&all, &src, &dst, &[], 5);
        let domains: Vec<Vec<&str>> = routes
            .iter()
            .map(|r| r.iter().map(|s| s.domain.as_str()).collect())
            .collect();
        assert_eq!(
            domains,
            [vec!["a", "d"], vec!["a", "b", "d"], vec!["a", "c", "d"]]
        );
        // b is full for the window: around it.
        let routes = domain_routes(&all, &src, &dst, &["b".into()], 5);
        assert!(routes.iter().all(|r| r.iter().all(|s| s.domain != "b")));
        assert_eq!(routes.len(), 2);
        // k bounds the answer.
        assert_eq!(domain_routes(&all, &src, &dst, &[], 1).len(), 1);
    }

    #[test]
    fn a_demarcation_counts_only_when_both_sides_publish_it() {
        // a says it faces b; b does not say so.
        let a = doc("a", 1, 100, &[("b", "to-b", "to-a")]);
        let b = doc("b", 1, 100, &[]);
        assert!(domain_routes(&[&a, &b], &stp("a:n:edge"), &stp("b:n:edge"), &[], 3).is_empty());
        // b faces a, but through another port than the one a names.
        let b = doc("b", 1, 100, &[("a", "other", "to-b")]);
        assert!(domain_routes(&[&a, &b], &stp("a:n:edge"), &stp("b:n:edge"), &[], 3).is_empty());
        // Unknown domains give no route.
        assert!(domain_routes(&[&a], &stp("a:n:edge"), &stp("z:n:edge"), &[], 3).is_empty());
    }
}
