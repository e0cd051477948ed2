//! Stitching an end-to-end circuit out of per-domain segments.
//!
//! The pure pieces the aggregator (federation) is built on: the topology documents
//! domains exchange and what a domain keeps of them ([`documents`]), the domain-level
//! routes over their demarcation points ([`routes`]), [`chain_labels`], which picks the
//! VLAN on each side of every demarcation point, and [`TwoPhase`], which decides from
//! the answers of the domains holding segments whether to commit everywhere or abort
//! everywhere. No I/O here: the IDC sends and receives.
//!
//! **Architecture invariant:** no I/O, no clock, no tokio/tonic/diesel.

pub mod documents;
pub mod routes;

pub use documents::{Demarcation, DocumentStore, DomainDocument, EndPoint, FreeStep, Offer};
pub use routes::{DomainRoute, RouteAsk, Segment, domain_routes};

use sluice_model::{Vlan, VlanSet};

/// One domain's segment as far as labels go: the VLANs free at its ingress and egress
/// for the window (at the route's ends, narrowed to what the caller asked for), and
/// whether it can change the VLAN between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSpan {
    pub ingress: VlanSet,
    pub egress: VlanSet,
    pub translates: bool,
}

/// The VLAN at each segment's ingress and egress. Both sides of a demarcation point are
/// one wire, so they carry the same VLAN, and so do the two ends of a segment in a domain
/// that cannot translate: each such run of ports gets the lowest VLAN free on all of
/// them. `Err(i)`: no VLAN is free along the run that reaches segment `i`.
pub fn chain_labels(spans: &[LabelSpan]) -> Result<Vec<(Vlan, Vlan)>, usize> {
    let Some(first) = spans.first() else {
        return Ok(Vec::new());
    };
    // Ports whose VLAN must be equal: (segment, at its egress).
    let mut run: Vec<(usize, bool)> = vec![(0, false)];
    let mut set = first.ingress.clone();
    let lowest = Vlan::new(Vlan::MIN).expect("the lowest VLAN is valid");
    let mut out = vec![(lowest, lowest); spans.len()];
    let close = |run: &mut Vec<(usize, bool)>, set: &VlanSet, out: &mut [(Vlan, Vlan)], at| {
        let v = set.first().ok_or(at)?;
        for (seg, egress) in run.drain(..) {
            if egress {
                out[seg].1 = v;
            } else {
                out[seg].0 = v;
            }
        }
        Ok::<(), usize>(())
    };
    for (i, span) in spans.iter().enumerate() {
        if span.translates {
            close(&mut run, &set, &mut out, i)?;
            set = span.egress.clone();
        } else {
            set = set.intersect(&span.egress);
        }
        if set.first().is_none() {
            return Err(i);
        }
        run.push((i, true));
        if let Some(next) = spans.get(i + 1) {
            set = set.intersect(&next.ingress);
            if set.first().is_none() {
                return Err(i + 1);
            }
            run.push((i + 1, false));
        }
    }
    close(&mut run, &set, &mut out, spans.len() - 1)?;
    Ok(out)
}

/// What one domain said about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentAnswer {
    /// No answer yet.
    Pending,
    Held,
    Failed,
    /// No answer within the deadline.
    TimedOut,
}

/// What the aggregator must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Wait,
    /// Every segment is held: commit them all.
    CommitAll,
    /// Some segment failed: abort these (the ones that are or may be held).
    Abort(Vec<usize>),
}

/// The hold phase of a reservation across several segments: all or nothing.
#[derive(Debug, Clone)]
pub struct TwoPhase {
    answers: Vec<SegmentAnswer>,
}

impl TwoPhase {
    pub fn new(segments: usize) -> TwoPhase {
        TwoPhase {
            answers: vec![SegmentAnswer::Pending; segments],
        }
    }

    pub fn record(&mut self, segment: usize, answer: SegmentAnswer) {
        self.answers[segment] = answer;
    }

    /// Commit only when every segment is held; abort as soon as one fails, including
    /// the segments still pending (their hold may land later and must not be orphaned).
    pub fn decide(&self) -> Decision {
        let failed = self
            .answers
            .iter()
            .any(|a| matches!(a, SegmentAnswer::Failed | SegmentAnswer::TimedOut));
        if failed {
            let to_abort = self
                .answers
                .iter()
                .enumerate()
                .filter(|(_, a)| !matches!(a, SegmentAnswer::Failed))
                .map(|(i, _)| i)
                .collect();
            return Decision::Abort(to_abort);
        }
        if self.answers.iter().all(|a| *a == SegmentAnswer::Held) {
            Decision::CommitAll
        } else {
            Decision::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> VlanSet {
        VlanSet::parse(s).unwrap()
    }

    #[test]
    fn labels_chain_through_domains_that_cannot_translate() {
        let v = |n| Vlan::new(n).unwrap();
        let span = |i: &str, e: &str, tr| LabelSpan {
            ingress: set(i),
            egress: set(e),
            translates: tr,
        };
        // a -> b -> c, nobody translates: one VLAN free everywhere.
        let spans = [
            span("100-200", "150-300", false),
            span("100-4000", "160-170", false),
            span("165-999", "100-999", false),
        ];
        assert_eq!(chain_labels(&spans), Ok(vec![(v(165), v(165)); 3]));
        // Nothing common across b's egress and c's ingress: the run fails at c.
        let spans = [
            span("100-200", "100-200", false),
            span("100-200", "100-200", false),
            span("300", "100-999", false),
        ];
        assert_eq!(chain_labels(&spans), Err(2));
        // b translates: a-b and b-c are separate runs.
        let spans = [
            span("100-200", "100-200", false),
            span("100-200", "300-400", true),
            span("350-400", "100-999", false),
        ];
        assert_eq!(
            chain_labels(&spans),
            Ok(vec![(v(100), v(100)), (v(100), v(350)), (v(350), v(350))])
        );
        // One segment alone: its own ends.
        assert_eq!(
            chain_labels(&[span("10-20", "15-30", false)]),
            Ok(vec![(v(15), v(15))])
        );
        assert_eq!(chain_labels(&[span("10", "20", false)]), Err(0));
        assert_eq!(chain_labels(&[]), Ok(vec![]));
    }

    #[test]
    fn commits_only_when_all_hold_and_aborts_the_rest_on_failure() {
        let mut tp = TwoPhase::new(3);
        assert_eq!(tp.decide(), Decision::Wait);
        tp.record(0, SegmentAnswer::Held);
        tp.record(2, SegmentAnswer::Held);
        assert_eq!(tp.decide(), Decision::Wait);
        tp.record(1, SegmentAnswer::Held);
        assert_eq!(tp.decide(), Decision::CommitAll);

        let mut tp = TwoPhase::new(3);
        tp.record(0, SegmentAnswer::Held);
        tp.record(1, SegmentAnswer::Failed);
        // Segment 2 has not answered: its hold may still land, so it is aborted too.
        assert_eq!(tp.decide(), Decision::Abort(vec![0, 2]));
        tp.record(2, SegmentAnswer::TimedOut);
        assert_eq!(tp.decide(), Decision::Abort(vec![0, 2]));
    }
}
