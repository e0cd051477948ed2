//! Bandwidth calendars: for one resource (a link or port in one direction), the bookings
//! on it as intervals, answering "peak booked inside [t0, t1)" exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::{Mbps, TimeWindow};

/// One booking on a resource. A hold counts only until `hold_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub bw: Mbps,
}

/// A constant stretch of booked bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub booked: Mbps,
}

/// Sorted (time, delta) points of the intervals clipped to `window`. Ends sort before
/// starts at the same instant: intervals are half-open, so back-to-back bookings do not
/// overlap.
fn deltas(
    intervals: impl IntoIterator<Item = Interval>,
    window: &TimeWindow,
) -> Vec<(DateTime<Utc>, i64)> {
    let mut points = Vec::new();
    for iv in intervals {
        if iv.start >= window.end || iv.end <= window.start || iv.bw == Mbps::ZERO {
            continue;
        }
        points.push((iv.start.max(window.start), iv.bw.0 as i64));
        if iv.end < window.end {
            points.push((iv.end, -(iv.bw.0 as i64)));
        }
    }
    points.sort_unstable_by_key(|&(t, d)| (t, d));
    points
}

/// The highest total of `intervals` at any instant of `window`.
pub fn peak_of(intervals: impl IntoIterator<Item = Interval>, window: &TimeWindow) -> Mbps {
    let mut level = 0i64;
    let mut peak = 0i64;
    for (_, d) in deltas(intervals, window) {
        level += d;
        peak = peak.max(level);
    }
    Mbps(peak as u64)
}

/// `intervals` summed, as a step function over `window` (adjacent equal steps merged).
pub fn steps_of(intervals: impl IntoIterator<Item = Interval>, window: &TimeWindow) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut level = 0i64;
    let mut at = window.start;
    let points = deltas(intervals, window);
    let mut i = 0;
    while i < points.len() {
        let t = points[i].0;
        if t > at {
            push_step(&mut steps, at, t, level);
            at = t;
        }
        while i < points.len() && points[i].0 == t {
            level += points[i].1;
            i += 1;
        }
    }
    push_step(&mut steps, at, window.end, level);
    steps
}

fn push_step(steps: &mut Vec<Step>, start: DateTime<Utc>, end: DateTime<Utc>, level: i64) {
    if start >= end {
        return;
    }
    let booked = Mbps(level as u64);
    match steps.last_mut() {
        Some(last) if last.booked == booked && last.end == start => last.end = end,
        _ => steps.push(Step { start, end, booked }),
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    end: DateTime<Utc>,
    bw: Mbps,
    hold_until: Option<DateTime<Utc>>,
}

/// The bookings of one resource, indexed by start time. Overlap queries look back from
/// the window's start by the longest booking seen, so they touch only nearby bookings.
#[derive(Debug, Default, Clone)]
pub struct BandwidthCalendar {
    by_start: BTreeMap<(DateTime<Utc>, Arc<str>), Entry>,
    starts: HashMap<Arc<str>, DateTime<Utc>>,
    longest: TimeDelta,
}

impl BandwidthCalendar {
    /// Adds (or replaces) the booking of reservation `id`.
    pub fn insert(&mut self, id: Arc<str>, iv: Interval, hold_until: Option<DateTime<Utc>>) {
        self.remove(&id);
        self.longest = self.longest.max(iv.end - iv.start);
        self.starts.insert(id.clone(), iv.start);
        self.by_start.insert(
            (iv.start, id),
            Entry {
                end: iv.end,
                bw: iv.bw,
                hold_until,
            },
        );
    }

    pub fn remove(&mut self, id: &str) -> bool {
        match self.starts.remove(id) {
            Some(start) => {
                let key: Arc<str> = Arc::from(id);
                self.by_start.remove(&(start, key)).is_some()
            }
            None => false,
        }
    }

    /// Marks a hold as committed (it counts until its end from now on).
    pub fn commit(&mut self, id: &str) {
        if let Some(start) = self.starts.get(id) {
            let key: Arc<str> = Arc::from(id);
            if let Some(e) = self.by_start.get_mut(&(*start, key)) {
                e.hold_until = None;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Bookings that overlap `window` and count at `now` (live holds and commitments),
    /// leaving out reservation `ignore` (the one being modified).
    pub fn overlapping<'a>(
        &'a self,
        window: &'a TimeWindow,
        now: DateTime<Utc>,
        ignore: Option<&'a str>,
    ) -> impl Iterator<Item = Interval> + 'a {
        // Saturating: a query may start near the earliest representable time.
        let from = window
            .start
            .checked_sub_signed(self.longest)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let lo = (from, Arc::<str>::from(""));
        self.by_start
            .range(lo..)
            .take_while(move |((start, _), _)| *start < window.end)
            .filter(move |((_, id), e)| {
                e.end > window.start
                    && e.hold_until.is_none_or(|h| h > now)
                    && ignore.is_none_or(|ig| &**id != ig)
            })
            .map(|((start, _), e)| Interval {
                start: *start,
                end: e.end,
                bw: e.bw,
            })
    }

    pub fn peak(&self, window: &TimeWindow, now: DateTime<Utc>, ignore: Option<&str>) -> Mbps {
        peak_of(self.overlapping(window, now, ignore), window)
    }

    pub fn steps(&self, window: &TimeWindow, now: DateTime<Utc>) -> Vec<Step> {
        steps_of(self.overlapping(window, now, None), window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn w(a: i64, b: i64) -> TimeWindow {
        TimeWindow::new(t(a), t(b)).unwrap()
    }
    fn iv(a: i64, b: i64, bw: u64) -> Interval {
        Interval {
            start: t(a),
            end: t(b),
            bw: Mbps(bw),
        }
    }

    #[test]
    fn back_to_back_bookings_do_not_overlap() {
        let ivs = [iv(0, 10, 60), iv(10, 20, 60)];
        assert_eq!(peak_of(ivs, &w(0, 20)), Mbps(60));
        assert_eq!(peak_of(ivs, &w(5, 15)), Mbps(60));
        // A booking that ends before the window starts does not count.
        assert_eq!(peak_of(ivs, &w(20, 30)), Mbps(0));
    }

    #[test]
    fn peak_is_the_concurrent_maximum_not_the_sum() {
        // OSCARS 0.6 would count 30+30+30 = 90 here; only two overlap at once.
        let ivs = [iv(0, 10, 30), iv(5, 15, 30), iv(12, 20, 30)];
        assert_eq!(peak_of(ivs, &w(0, 20)), Mbps(60));
        assert_eq!(peak_of(ivs, &w(10, 12)), Mbps(30));
    }

    #[test]
    fn steps_describe_the_level() {
        let ivs = [iv(0, 10, 30), iv(5, 15, 20)];
        let s = steps_of(ivs, &w(-5, 20));
        let got: Vec<_> = s.iter().map(|s| (s.start, s.end, s.booked.0)).collect();
        assert_eq!(
            got,
            vec![
                (t(-5), t(0), 0),
                (t(0), t(5), 30),
                (t(5), t(10), 50),
                (t(10), t(15), 20),
                (t(15), t(20), 0),
            ]
        );
    }

    #[test]
    fn calendar_ignores_expired_holds_and_the_modified_booking() {
        let mut c = BandwidthCalendar::default();
        c.insert("a".into(), iv(0, 100, 40), Some(t(5)));
        c.insert("b".into(), iv(50, 60, 10), None);
        assert_eq!(c.peak(&w(0, 100), t(0), None), Mbps(50));
        assert_eq!(c.peak(&w(0, 100), t(5), None), Mbps(10), "hold expired");
        assert_eq!(c.peak(&w(0, 100), t(0), Some("a")), Mbps(10));
        c.commit("a");
        assert_eq!(c.peak(&w(0, 100), t(50), None), Mbps(50));
        assert!(c.remove("a"));
        assert!(!c.remove("a"));
        assert_eq!(c.peak(&w(0, 100), t(0), None), Mbps(10));
        // Replacing a booking moves it.
        c.insert("b".into(), iv(200, 300, 10), None);
        assert_eq!(c.len(), 1);
        assert_eq!(c.peak(&w(0, 100), t(0), None), Mbps(0));
    }

    #[test]
    fn a_window_at_the_edge_of_time_does_not_overflow() {
        let mut c = BandwidthCalendar::default();
        c.insert("a".into(), iv(0, 100, 40), None);
        let edge = TimeWindow::new(DateTime::<Utc>::MIN_UTC, t(50)).unwrap();
        assert_eq!(c.peak(&edge, t(0), None), Mbps(40));
        assert_eq!(c.steps(&edge, t(0)).len(), 2);
    }

    proptest! {
        /// The indexed query agrees with checking every instant by brute force.
        #[test]
        fn peak_matches_brute_force(
            bookings in prop::collection::vec((0i64..50, 1i64..20, 1u64..100, prop::option::of(0i64..10)), 0..25),
            a in 0i64..60, len in 1i64..30, now in 0i64..10,
        ) {
            let mut c = BandwidthCalendar::default();
            for (i, (s, l, bw, hold)) in bookings.iter().enumerate() {
                c.insert(Arc::from(i.to_string()), iv(*s, s + l, *bw), hold.map(t));
            }
            let window = w(a, a + len);
            let mut brute = 0;
            for x in a..a + len {
                let level: u64 = bookings.iter()
                    .filter(|(s, l, _, hold)| *s <= x && x < s + l && hold.is_none_or(|h| h > now))
                    .map(|b| b.2).sum();
                brute = brute.max(level);
            }
            prop_assert_eq!(c.peak(&window, t(now), None), Mbps(brute));
            let steps = c.steps(&window, t(now));
            prop_assert_eq!(steps.first().unwrap().start, window.start);
            prop_assert_eq!(steps.last().unwrap().end, window.end);
            prop_assert_eq!(steps.iter().map(|s| s.booked).max().unwrap(), Mbps(brute));
        }
    }
}
