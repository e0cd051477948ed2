//! A backend double for unit tests of the layers above the data plane (never the thing a
//! feature is delivered with): it keeps the last desired state it was given and counts
//! how often it changed.

use sluice_model::dataplane::Desired;

#[derive(Debug, Default)]
pub struct MockBackend {
    pub applied: Desired,
    /// How many applies changed something (applying the same state again does not).
    pub changes: usize,
    /// Set to make the next apply fail with this message.
    pub fail_next: Option<String>,
}

impl MockBackend {
    pub fn apply(&mut self, desired: &Desired) -> Result<bool, String> {
        if let Some(e) = self.fail_next.take() {
            return Err(e);
        }
        let mut wanted = desired.circuits.clone();
        wanted.sort_by(|a, b| a.id.cmp(&b.id));
        let mut have = self.applied.circuits.clone();
        have.sort_by(|a, b| a.id.cmp(&b.id));
        let changed = wanted != have;
        if changed {
            self.changes += 1;
        }
        self.applied = desired.clone();
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_state_twice_is_one_change() {
        let mut m = MockBackend::default();
        let d = Desired {
            version: 2,
            circuits: Vec::new(),
        };
        assert_eq!(m.apply(&d), Ok(false));
        m.fail_next = Some("boom".into());
        assert!(m.apply(&d).is_err());
        assert_eq!(m.changes, 0);
    }
}
