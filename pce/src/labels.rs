//! Label calendars: which VLANs of a port are taken when.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::{TimeWindow, Vlan, VlanSet};

#[derive(Debug, Clone, Copy)]
struct Use {
    end: DateTime<Utc>,
    hold_until: Option<DateTime<Utc>>,
}

/// The VLAN bookings of one port: per VLAN, indexed by start time (like the bandwidth
/// calendar), so a check touches only bookings near the window.
/// One VLAN's bookings, by (start, reservation).
type Uses = BTreeMap<(DateTime<Utc>, Arc<str>), Use>;

#[derive(Debug, Default, Clone)]
pub struct LabelCalendar {
    by_vlan: BTreeMap<Vlan, Uses>,
    keys: HashMap<Arc<str>, (Vlan, DateTime<Utc>)>,
    longest: TimeDelta,
}

impl LabelCalendar {
    pub fn insert(
        &mut self,
        id: Arc<str>,
        vlan: Vlan,
        window: TimeWindow,
        hold_until: Option<DateTime<Utc>>,
    ) {
        self.remove(&id);
        self.longest = self.longest.max(window.end - window.start);
        self.keys.insert(id.clone(), (vlan, window.start));
        self.by_vlan.entry(vlan).or_default().insert(
            (window.start, id),
            Use {
                end: window.end,
                hold_until,
            },
        );
    }

    pub fn remove(&mut self, id: &str) {
        let Some((vlan, start)) = self.keys.remove(id) else {
            return;
        };
        if let Some(uses) = self.by_vlan.get_mut(&vlan) {
            uses.remove(&(start, Arc::from(id)));
            if uses.is_empty() {
                self.by_vlan.remove(&vlan);
            }
        }
    }

    pub fn commit(&mut self, id: &str) {
        if let Some((vlan, start)) = self.keys.get(id)
            && let Some(u) = self
                .by_vlan
                .get_mut(vlan)
                .and_then(|uses| uses.get_mut(&(*start, Arc::from(id))))
        {
            u.hold_until = None;
        }
    }

    /// Is `vlan` taken at some instant of `window` by a booking other than `ignore`?
    pub fn is_taken(
        &self,
        vlan: Vlan,
        window: &TimeWindow,
        now: DateTime<Utc>,
        ignore: Option<&str>,
    ) -> bool {
        let Some(uses) = self.by_vlan.get(&vlan) else {
            return false;
        };
        // Saturating: a query may start near the earliest representable time.
        let lookback = window
            .start
            .checked_sub_signed(self.longest)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let from = (lookback, Arc::<str>::from(""));
        uses.range(from..)
            .take_while(|((start, _), _)| *start < window.end)
            .any(|((_, id), u)| {
                u.end > window.start
                    && u.hold_until.is_none_or(|h| h > now)
                    && ignore.is_none_or(|ig| &**id != ig)
            })
    }

    /// The VLANs of `wanted` that are free for the whole of `window`.
    pub fn free(
        &self,
        wanted: &VlanSet,
        window: &TimeWindow,
        now: DateTime<Utc>,
        ignore: Option<&str>,
    ) -> VlanSet {
        let mut free = wanted.clone();
        for &vlan in self.by_vlan.keys() {
            if wanted.contains(vlan) && self.is_taken(vlan, window, now, ignore) {
                free.remove(vlan);
            }
        }
        free
    }

    /// VLANs booked at some instant of `window`.
    pub fn in_use(&self, window: &TimeWindow, now: DateTime<Utc>) -> Vec<Vlan> {
        self.by_vlan
            .keys()
            .copied()
            .filter(|&v| self.is_taken(v, window, now, None))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn w(a: i64, b: i64) -> TimeWindow {
        TimeWindow::new(t(a), t(b)).unwrap()
    }
    fn v(n: u16) -> Vlan {
        Vlan::new(n).unwrap()
    }

    #[test]
    fn a_window_at_the_edge_of_time_does_not_overflow() {
        let mut c = LabelCalendar::default();
        c.insert("a".into(), v(100), w(0, 10), None);
        let edge = TimeWindow::new(DateTime::<Utc>::MIN_UTC, t(5)).unwrap();
        assert!(c.is_taken(v(100), &edge, t(0), None));
        assert_eq!(c.in_use(&edge, t(0)), vec![v(100)]);
    }

    #[test]
    fn a_vlan_is_free_outside_its_bookings() {
        let mut c = LabelCalendar::default();
        c.insert("a".into(), v(100), w(0, 10), None);
        c.insert("b".into(), v(101), w(0, 10), Some(t(3)));
        let wanted = VlanSet::parse("100-102").unwrap();
        assert_eq!(c.free(&wanted, &w(5, 15), t(0), None).to_string(), "102");
        assert_eq!(
            c.free(&wanted, &w(5, 15), t(3), None).to_string(),
            "101-102"
        );
        assert_eq!(
            c.free(&wanted, &w(10, 15), t(0), None).to_string(),
            "100-102"
        );
        assert_eq!(
            c.free(&wanted, &w(5, 15), t(0), Some("a")).to_string(),
            "100,102"
        );
        assert_eq!(c.in_use(&w(0, 5), t(0)), vec![v(100), v(101)]);
        c.commit("b");
        assert!(c.is_taken(v(101), &w(5, 6), t(9), None));
        c.remove("a");
        assert!(!c.is_taken(v(100), &w(0, 10), t(0), None));
    }
}
