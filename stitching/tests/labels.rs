//! `chain_labels` against brute force: over small random routes (VLANs 1-6), every
//! answer is consistent, lowest where it has a choice, and an `Err` only when no
//! consistent assignment exists at all.

use proptest::prelude::*;
use sluice_model::{Vlan, VlanSet};
use sluice_stitching::{LabelSpan, chain_labels};

const MAX_VLAN: u16 = 6;

fn set_of(bits: u8) -> VlanSet {
    VlanSet::from_ranges(
        (1..=MAX_VLAN)
            .filter(|v| bits & (1 << (v - 1)) != 0)
            .map(|v| (v, v)),
    )
}

fn span() -> impl Strategy<Value = LabelSpan> {
    (any::<u8>(), any::<u8>(), prop::bool::weighted(0.3)).prop_map(|(i, e, t)| LabelSpan {
        ingress: set_of(i),
        egress: set_of(e),
        translates: t,
    })
}

/// Every assignment is checked: (ingress, egress) per segment, each in its free set,
/// equal through a segment that cannot translate and across every demarcation point.
fn consistent(spans: &[LabelSpan], labels: &[(Vlan, Vlan)]) -> bool {
    labels.len() == spans.len()
        && spans.iter().zip(labels).all(|(s, (i, e))| {
            s.ingress.contains(*i) && s.egress.contains(*e) && (s.translates || i == e)
        })
        && labels.windows(2).all(|w| w[0].1 == w[1].0)
}

/// Whether any consistent assignment exists, by trying them all.
fn exists(spans: &[LabelSpan]) -> bool {
    fn go(spans: &[LabelSpan], k: usize, prev: Option<u16>) -> bool {
        let Some(s) = spans.get(k) else {
            return true;
        };
        (1..=MAX_VLAN).any(|i| {
            let vi = Vlan::new(i).unwrap();
            prev.is_none_or(|p| p == i)
                && s.ingress.contains(vi)
                && (1..=MAX_VLAN).any(|e| {
                    let ve = Vlan::new(e).unwrap();
                    s.egress.contains(ve) && (s.translates || i == e) && go(spans, k + 1, Some(e))
                })
        })
    }
    go(spans, 0, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chained_labels_are_consistent_and_found_whenever_they_exist(
        spans in prop::collection::vec(span(), 1..6)
    ) {
        match chain_labels(&spans) {
            Ok(labels) => {
                prop_assert!(consistent(&spans, &labels), "{labels:?}");
                // Lowest first: the first run's VLAN is the lowest any assignment could
                // give the source.
                let lowest = (1..=MAX_VLAN).find(|v| {
                    let mut first = spans[0].clone();
                    first.ingress = first.ingress.intersect(&VlanSet::single(Vlan::new(*v).unwrap()));
                    let mut rest = spans.clone();
                    rest[0] = first;
                    exists(&rest)
                });
                prop_assert_eq!(Some(labels[0].0.id()), lowest);
            }
            Err(i) => {
                prop_assert!(!exists(&spans), "a consistent assignment exists");
                prop_assert!(i < spans.len());
            }
        }
    }
}
