//! Stitching an end-to-end circuit out of per-domain segments.
//!
//! The pure pieces the aggregator (federation) is built on: the topology documents
//! domains exchange and what a domain keeps of them ([`documents`]), the domain-level
//! routes over their demarcation points ([`routes`]), [`agree_label`], which picks the
//! VLAN both sides of a demarcation point can use, and [`TwoPhase`], which decides from
//! the answers of the domains holding segments whether to commit everywhere or abort
//! everywhere. No I/O here: the IDC sends and receives.
//!
//! **Architecture invariant:** no I/O, no clock, no tokio/tonic/diesel.

pub mod documents;
pub mod routes;

pub use documents::{Demarcation, DocumentStore, DomainDocument, EndPoint, Offer};
pub use routes::{DomainRoute, Segment, domain_routes};

use sluice_model::{Vlan, VlanSet};

/// The label on each side of a demarcation point: the lowest VLAN free on both sides;
/// failing that, if one side may translate, the lowest free on each side.
pub fn agree_label(
    ours: &VlanSet,
    theirs: &VlanSet,
    we_translate: bool,
    they_translate: bool,
) -> Option<(Vlan, Vlan)> {
    if let Some(v) = ours.intersect(theirs).first() {
        return Some((v, v));
    }
    if we_translate || they_translate {
        return Some((ours.first()?, theirs.first()?));
    }
    None
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
    fn agrees_on_a_common_vlan_or_translates() {
        let v = |n| Vlan::new(n).unwrap();
        assert_eq!(
            agree_label(&set("100-200"), &set("150-300"), false, false),
            Some((v(150), v(150)))
        );
        assert_eq!(agree_label(&set("100"), &set("200"), false, false), None);
        assert_eq!(
            agree_label(&set("100"), &set("200"), false, true),
            Some((v(100), v(200)))
        );
        assert_eq!(
            agree_label(&VlanSet::empty(), &set("200"), true, true),
            None
        );
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
