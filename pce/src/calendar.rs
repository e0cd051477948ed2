//! Bandwidth calendars: for one resource (a link or port in one direction), the booked
//! bandwidth as a step function of time, answering "peak booked inside [t0, t1)" exactly.
//!
//! Committed bookings are folded into a sorted vector of change points (time, level): a
//! peak query is a binary search and a scan of the points inside the window, and adding
//! or removing a booking moves a few points. Holds are few and short-lived, so they sit
//! beside it in a small list and are added in at query time while they are still live.

use chrono::{DateTime, Utc};
use sluice_model::{Mbps, TimeWindow};

use crate::weeks::{INDEX_FROM, WeekIndex};

/// Milliseconds since the Unix epoch: the calendars' time axis.
pub type Millis = i64;

pub fn millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

pub fn from_millis(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// One booking on a resource.
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

/// The highest total of `intervals` at any instant of `window`. (The store's re-check
/// uses this on the rows it reads; it is also the reference the calendar is tested
/// against.)
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
    let booked = Mbps(level.max(0) as u64);
    match steps.last_mut() {
        Some(last) if last.booked == booked && last.end == start => last.end = end,
        _ => steps.push(Step { start, end, booked }),
    }
}

/// A reservation's number inside the index (ids are interned once).
pub type Rid = u32;

/// Booked Mb/s in each direction of a resource: `[forward, reverse]`.
pub type Pair = [u64; 2];

/// The `until` of a commitment not yet folded into the points: it never expires.
pub const FOREVER: Millis = Millis::MAX;

/// How many recent commitments a calendar of `len` sorted entries keeps beside them
/// before folding them in: an insert then touches only the calendar's head, not the
/// entries (a cold binary search and a shift of everything after), and a fold rewrites
/// the entries once for many inserts: 16 on most calendars, up to 64 on the busiest,
/// whose folds cost the most. (Unit tests fold after two, so that the index's tests go
/// through both states.)
pub(crate) fn recent_max(len: usize) -> usize {
    if cfg!(test) {
        return 2;
    }
    (len / 16).clamp(16, 256)
}

/// A held booking: it counts until `until` unless committed first. A commitment not yet
/// folded into the points is one that never expires (`until == FOREVER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub rid: Rid,
    pub start: Millis,
    pub end: Millis,
    pub bw: [u32; 2],
    pub until: Millis,
}

/// A booking a query leaves out: the reservation being modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    Hold(Rid),
    /// A commitment: still beside the points under its `rid`, or folded into them.
    Committed {
        rid: Rid,
        start: Millis,
        end: Millis,
        bw: Pair,
    },
}

/// A change point: from `t` on (until the next point) the level is `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    t: Millis,
    level: [u32; 2],
}

/// The bookings of one resource (a link or an end port), both directions on one time
/// axis: a circuit books both at once, so they share their change points.
#[derive(Debug, Default, Clone)]
pub struct BandwidthCalendar {
    /// Change points, strictly increasing in time (time and level side by side: a search
    /// and the scan after it touch the same cache lines). Before the first point the
    /// level is 0, and the last level is 0.
    points: Vec<Point>,
    /// Where each week's points begin, so a lookup skips straight to its week.
    weeks: WeekIndex,
    /// Holds, and recent commitments (see `recent_max`).
    holds: Vec<Hold>,
    /// The highest level of the points at any time: a search asks this first, and most
    /// links have room for a request even at their busiest, so their points are never
    /// read.
    ceiling: [u32; 2],
    /// At least the most that `holds` add up to at any one instant.
    holds_top: Pair,
}

/// Makes room for one more entry, growing by a quarter rather than doubling: calendars
/// are many and long-lived, and an insert shifts entries anyway.
pub(crate) fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 4);
    }
}

/// Applies `deltas` (sorted by time) to `level`, calling `f(t, level)` once per distinct
/// time, after every change at that instant.
fn fold_deltas(
    deltas: &[(Millis, [i64; 2])],
    mut level: [i64; 2],
    mut f: impl FnMut(Millis, [i64; 2]),
) {
    let mut k = 0;
    while k < deltas.len() {
        let t = deltas[k].0;
        while k < deltas.len() && deltas[k].0 == t {
            level = [level[0] + deltas[k].1[0], level[1] + deltas[k].1[1]];
            k += 1;
        }
        f(t, level);
    }
}

fn to_level(v: i64) -> u32 {
    debug_assert!(v >= 0, "a calendar level went negative");
    v.clamp(0, u32::MAX as i64) as u32
}

fn widen(l: [u32; 2]) -> Pair {
    [l[0] as u64, l[1] as u64]
}

/// What the holds that overlap `h` add up to, `h` included.
fn overlapping_sum(holds: &[Hold], h: &Hold) -> Pair {
    let mut sum: Pair = [0, 0];
    for o in holds.iter().filter(|o| o.start < h.end && h.start < o.end) {
        sum = [sum[0] + o.bw[0] as u64, sum[1] + o.bw[1] as u64];
    }
    sum
}

fn max2(a: Pair, b: Pair) -> Pair {
    [a[0].max(b[0]), a[1].max(b[1])]
}

impl BandwidthCalendar {
    /// The index of the first point after `t`.
    fn after(&self, t: Millis) -> usize {
        self.weeks.find(&self.points, t, |p| p.t, |p| p.t <= t)
    }

    /// The level holding at instant `t`.
    fn level_at(&self, t: Millis) -> [u32; 2] {
        let i = self.after(t);
        if i == 0 {
            [0, 0]
        } else {
            self.points[i - 1].level
        }
    }

    /// Index of the change point at `t`, creating it if needed.
    fn point(&mut self, t: Millis) -> usize {
        let i = self.weeks.find(&self.points, t, |p| p.t, |p| p.t < t);
        if self.points.get(i).map(|p| p.t) != Some(t) {
            let level = if i == 0 {
                [0, 0]
            } else {
                self.points[i - 1].level
            };
            let points = &self.points;
            self.weeks
                .inserted(t, |x| points.partition_point(|p| p.t < x));
            grow(&mut self.points);
            self.points.insert(i, Point { t, level });
            if self.weeks.is_empty() && self.points.len() >= INDEX_FROM {
                self.weeks = WeekIndex::build(self.points.iter().map(|p| p.t));
            }
        }
        i
    }

    /// Drops the point at `i` if it does not change the level.
    fn merge(&mut self, i: usize) {
        if i >= self.points.len() {
            return;
        }
        let before = if i == 0 {
            [0, 0]
        } else {
            self.points[i - 1].level
        };
        if self.points[i].level == before {
            self.weeks.removed(self.points[i].t);
            self.points.remove(i);
        }
    }

    fn add(&mut self, start: Millis, end: Millis, delta: [i64; 2]) {
        if start >= end || delta == [0, 0] {
            return;
        }
        let i = self.point(start);
        let j = self.point(end);
        let mut ceiling = self.ceiling;
        // A lowered level that was the ceiling may have been the only one there.
        let mut lowered_top = false;
        for level in self.points[i..j].iter_mut().map(|p| &mut p.level) {
            for d in 0..2 {
                lowered_top |= delta[d] < 0 && level[d] == ceiling[d];
                level[d] = to_level(level[d] as i64 + delta[d]);
                ceiling[d] = ceiling[d].max(level[d]);
            }
        }
        self.ceiling = ceiling;
        if lowered_top {
            self.ceiling = self
                .points
                .iter()
                .fold([0, 0], |c, p| [c[0].max(p.level[0]), c[1].max(p.level[1])]);
        }
        self.merge(j);
        self.merge(i);
    }

    /// At least the highest level `[forward, reverse]` booked at any time, holds counted
    /// whether live or not: when even this leaves room, the request fits in any window.
    pub fn ceiling(&self) -> [u64; 2] {
        let c = widen(self.ceiling);
        [c[0] + self.holds_top[0], c[1] + self.holds_top[1]]
    }

    /// Raises `holds_top` for the last of `holds`: the sum of the holds that overlap it.
    /// Of the holds covering any one instant, the last in the vector overlaps all the
    /// others, so this bounds the instant's sum once done for every hold in turn.
    fn raise_holds_top(&mut self) {
        let Some(new) = self.holds.last() else {
            return;
        };
        self.holds_top = max2(self.holds_top, overlapping_sum(&self.holds, new));
    }

    /// `holds_top` afresh, after a hold went (a few dozen holds at most).
    fn recount_holds_top(&mut self) {
        self.holds_top = self.holds.iter().enumerate().fold([0, 0], |top, (i, h)| {
            max2(top, overlapping_sum(&self.holds[..=i], h))
        });
    }

    /// Folds the recent commitments into the points, in one pass over them.
    pub(crate) fn fold_recent(&mut self) {
        let mut deltas: Vec<(Millis, [i64; 2])> = Vec::new();
        for h in self.holds.iter().filter(|h| h.until == FOREVER) {
            if h.start < h.end {
                let bw = [h.bw[0] as i64, h.bw[1] as i64];
                deltas.push((h.start, bw));
                deltas.push((h.end, [-bw[0], -bw[1]]));
            }
        }
        // The holds left (usually none) get a vector of their own size.
        self.holds = self
            .holds
            .drain(..)
            .filter(|h| h.until != FOREVER)
            .collect();
        self.recount_holds_top();
        if deltas.is_empty() {
            return;
        }
        deltas.sort_unstable_by_key(|d| d.0);
        let old = std::mem::take(&mut self.points);
        let mut points: Vec<Point> = Vec::with_capacity(old.len() + deltas.len());
        // Commitments only raise levels, so the ceiling stays exact by rising with them.
        let mut ceiling = self.ceiling;
        let mut push = |points: &mut Vec<Point>, p: Point| {
            if points.last().map_or([0, 0], |q| q.level) != p.level {
                ceiling = [ceiling[0].max(p.level[0]), ceiling[1].max(p.level[1])];
                points.push(p);
            }
        };
        let shifted = |l: [u32; 2], added: [i64; 2]| {
            [
                to_level(l[0] as i64 + added[0]),
                to_level(l[1] as i64 + added[1]),
            ]
        };
        let (mut i, mut k) = (0, 0);
        let (mut base, mut added) = ([0u32; 2], [0i64; 2]);
        while k < deltas.len() {
            let t = deltas[k].0;
            // The old points before `t` keep their times, raised by what is added there;
            // where nothing is (most of the time) they are copied as they are.
            let j = i + old[i..].partition_point(|p| p.t < t);
            if j > i {
                if added == [0, 0] {
                    push(&mut points, old[i]);
                    points.extend_from_slice(&old[i + 1..j]);
                } else {
                    for p in &old[i..j] {
                        let level = shifted(p.level, added);
                        push(&mut points, Point { t: p.t, level });
                    }
                }
                base = old[j - 1].level;
                i = j;
            }
            if old.get(i).is_some_and(|p| p.t == t) {
                base = old[i].level;
                i += 1;
            }
            while deltas.get(k).is_some_and(|d| d.0 == t) {
                added = [added[0] + deltas[k].1[0], added[1] + deltas[k].1[1]];
                k += 1;
            }
            let level = shifted(base, added);
            push(&mut points, Point { t, level });
        }
        debug_assert_eq!(added, [0, 0], "every folded booking ends");
        if i < old.len() {
            push(&mut points, old[i]);
            points.extend_from_slice(&old[i + 1..]);
        }
        self.points = points;
        self.ceiling = ceiling;
        self.weeks = if self.points.len() >= INDEX_FROM {
            WeekIndex::build(self.points.iter().map(|p| p.t))
        } else {
            WeekIndex::default()
        };
    }

    fn fold_if_many(&mut self) {
        let recent = self.holds.iter().filter(|h| h.until == FOREVER).count();
        if recent > recent_max(self.points.len()) {
            self.fold_recent();
        }
    }

    /// `Leave::Committed` of a commitment still beside the points is left out like a hold.
    fn locate(&self, leave: Option<Leave>) -> Option<Leave> {
        match leave {
            Some(Leave::Committed { rid, .. }) if self.holds.iter().any(|h| h.rid == rid) => {
                Some(Leave::Hold(rid))
            }
            other => other,
        }
    }

    pub fn add_committed(&mut self, start: Millis, end: Millis, bw: Pair) {
        self.add(start, end, [bw[0] as i64, bw[1] as i64]);
    }

    pub fn remove_committed(&mut self, start: Millis, end: Millis, bw: Pair) {
        self.add(start, end, [-(bw[0] as i64), -(bw[1] as i64)]);
    }

    /// A calendar of committed bookings `(start, end, [forward, reverse])`, built in one
    /// sort and sweep (a rebuild) instead of one insert at a time.
    pub fn from_committed(bookings: &[(Millis, Millis, [u32; 2])]) -> BandwidthCalendar {
        let mut deltas: Vec<(Millis, [i64; 2])> = Vec::with_capacity(2 * bookings.len());
        for &(start, end, bw) in bookings {
            if start < end && bw != [0, 0] {
                let bw = [bw[0] as i64, bw[1] as i64];
                deltas.push((start, bw));
                deltas.push((end, [-bw[0], -bw[1]]));
            }
        }
        deltas.sort_unstable_by_key(|d| d.0);
        let mut c = BandwidthCalendar::default();
        c.points.reserve_exact(deltas.len());
        fold_deltas(&deltas, [0, 0], |t, level| {
            let now = [to_level(level[0]), to_level(level[1])];
            if c.points.last().map_or([0, 0], |p| p.level) != now {
                c.ceiling = [c.ceiling[0].max(now[0]), c.ceiling[1].max(now[1])];
                c.points.push(Point { t, level: now });
            }
        });
        c.points.shrink_to_fit();
        if c.points.len() >= INDEX_FROM {
            c.weeks = WeekIndex::build(c.points.iter().map(|p| p.t));
        }
        c
    }

    /// Gives back memory the vectors grew into (after a rebuild).
    pub fn shrink_to_fit(&mut self) {
        self.points.shrink_to_fit();
        self.weeks.shrink_to_fit();
        self.holds.shrink_to_fit();
    }

    /// Adds a hold, or with `until == FOREVER` a commitment, beside the points.
    pub fn add_hold(&mut self, hold: Hold) {
        self.remove_hold(hold.rid);
        grow(&mut self.holds);
        self.holds.push(hold);
        self.raise_holds_top();
        if hold.until == FOREVER {
            self.fold_if_many();
        }
    }

    pub fn remove_hold(&mut self, rid: Rid) -> Option<Hold> {
        let i = self.holds.iter().position(|h| h.rid == rid)?;
        let hold = self.holds.swap_remove(i);
        self.recount_holds_top();
        Some(hold)
    }

    /// The hold becomes a commitment: it counts until its end from now on.
    pub fn commit_hold(&mut self, rid: Rid) {
        if let Some(h) = self.holds.iter_mut().find(|h| h.rid == rid) {
            h.until = FOREVER;
            self.fold_if_many();
        }
    }

    /// Takes out the commitment of `rid`, beside the points or (given its extent) in them.
    pub fn remove_commitment(&mut self, rid: Rid, start: Millis, end: Millis, bw: Pair) {
        if self.remove_hold(rid).is_none() {
            self.remove_committed(start, end, bw);
        }
    }

    /// Change points held, and holds: a measure of size.
    pub fn len(&self) -> usize {
        self.points.len() + self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.holds.is_empty()
    }

    /// Bytes of heap this calendar uses.
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * size_of::<Point>()
            + self.weeks.heap_bytes()
            + self.holds.capacity() * size_of::<Hold>()
    }

    fn live_holds(
        &self,
        w0: Millis,
        w1: Millis,
        now: Millis,
        leave: Option<Leave>,
    ) -> impl Iterator<Item = &Hold> {
        self.holds.iter().filter(move |h| {
            h.until > now && h.start < w1 && h.end > w0 && leave != Some(Leave::Hold(h.rid))
        })
    }

    /// The highest booked level in each direction at any instant of `[w0, w1)`.
    pub fn peak(&self, w0: Millis, w1: Millis, now: Millis, leave: Option<Leave>) -> Pair {
        let leave = self.locate(leave);
        let simple = match leave {
            Some(Leave::Committed { start, end, .. }) => start >= w1 || end <= w0,
            _ => true,
        } && self.live_holds(w0, w1, now, leave).next().is_none();
        if simple {
            let i = self.after(w0);
            let mut peak = if i == 0 {
                [0, 0]
            } else {
                self.points[i - 1].level
            };
            for p in &self.points[i..] {
                if p.t >= w1 {
                    break;
                }
                let l = p.level;
                peak = [peak[0].max(l[0]), peak[1].max(l[1])];
            }
            return widen(peak);
        }
        let mut peak = [0, 0];
        self.sweep(w0, w1, now, leave, |_, level| peak = max2(peak, level));
        peak
    }

    /// Calls `f(t, level)` at `w0` and at every change of the level inside `(w0, w1)`,
    /// live holds added in and `leave` taken out.
    fn sweep(
        &self,
        w0: Millis,
        w1: Millis,
        now: Millis,
        leave: Option<Leave>,
        mut f: impl FnMut(Millis, Pair),
    ) {
        let leave = self.locate(leave);
        let mut deltas: Vec<(Millis, [i64; 2])> = Vec::new();
        let l0 = self.level_at(w0);
        let mut level = [l0[0] as i64, l0[1] as i64];
        let i = self.after(w0);
        for k in i..self.points.len() {
            if self.points[k].t >= w1 {
                break;
            }
            let before = if k == 0 {
                [0, 0]
            } else {
                self.points[k - 1].level
            };
            let now_l = self.points[k].level;
            deltas.push((
                self.points[k].t,
                [
                    now_l[0] as i64 - before[0] as i64,
                    now_l[1] as i64 - before[1] as i64,
                ],
            ));
        }
        let mut interval = |start: Millis, end: Millis, bw: [i64; 2]| {
            if start >= w1 || end <= w0 {
                return;
            }
            if start <= w0 {
                level = [level[0] + bw[0], level[1] + bw[1]];
            } else {
                deltas.push((start, bw));
            }
            if end < w1 {
                deltas.push((end, [-bw[0], -bw[1]]));
            }
        };
        for h in self.live_holds(w0, w1, now, leave) {
            interval(h.start, h.end, [h.bw[0] as i64, h.bw[1] as i64]);
        }
        if let Some(Leave::Committed { start, end, bw, .. }) = leave {
            interval(start, end, [-(bw[0] as i64), -(bw[1] as i64)]);
        }
        deltas.sort_unstable();
        let clamp = |l: [i64; 2]| [l[0].max(0) as u64, l[1].max(0) as u64];
        f(w0, clamp(level));
        fold_deltas(&deltas, level, |t, level| f(t, clamp(level)));
    }

    /// The level in direction `dir` (0 forward, 1 reverse) over `window`, as steps.
    pub fn steps(&self, dir: usize, window: &TimeWindow, now: DateTime<Utc>) -> Vec<Step> {
        let (w0, w1) = (millis(window.start), millis(window.end));
        let mut changes: Vec<(Millis, u64)> = Vec::new();
        self.sweep(w0, w1, millis(now), None, |t, l| changes.push((t, l[dir])));
        let mut steps = Vec::with_capacity(changes.len());
        for (i, &(t, level)) in changes.iter().enumerate() {
            let end = changes.get(i + 1).map_or(w1, |c| c.0);
            push_step(&mut steps, from_millis(t), from_millis(end), level as i64);
        }
        steps
    }

    /// The first instant after `t` at which something booked here ends (the level drops
    /// in some direction, or a live hold ends): the earliest time a later window could
    /// find more room on this resource.
    pub fn next_release_after(&self, t: Millis, now: Millis) -> Option<Millis> {
        let i = self.after(t);
        let p = &self.points;
        let committed = (i..p.len())
            .find(|&k| {
                k > 0 && (p[k].level[0] < p[k - 1].level[0] || p[k].level[1] < p[k - 1].level[1])
            })
            .map(|k| p[k].t);
        let held = self
            .holds
            .iter()
            .filter(|h| h.until > now && h.end > t)
            .map(|h| h.end)
            .min();
        match (committed, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn ms(s: i64) -> Millis {
        millis(t(s))
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
        let mut c = BandwidthCalendar::default();
        c.add_committed(ms(0), ms(10), [60, 10]);
        c.add_committed(ms(10), ms(20), [60, 10]);
        assert_eq!(c.points.len(), 2, "equal neighbours merge into one step");
        let mut d = BandwidthCalendar::default();
        for (rid, a) in [(1, 0), (2, 10)] {
            let (start, end, bw, until) = (ms(a), ms(a + 10), [60, 10], FOREVER);
            d.add_hold(Hold {
                rid,
                start,
                end,
                bw,
                until,
            });
        }
        d.fold_recent();
        assert_eq!(d.points, c.points, "folding merges equal neighbours too");
        assert_eq!(c.peak(ms(5), ms(15), 0, None), [60, 10]);
        assert_eq!(c.peak(ms(20), ms(30), 0, None), [0, 0]);
    }

    #[test]
    fn peak_is_the_concurrent_maximum_not_the_sum() {
        // OSCARS 0.6 would count 30+30+30 = 90 here; only two overlap at once.
        let ivs = [iv(0, 10, 30), iv(5, 15, 30), iv(12, 20, 30)];
        assert_eq!(peak_of(ivs, &w(0, 20)), Mbps(60));
        assert_eq!(peak_of(ivs, &w(10, 12)), Mbps(30));
        let mut c = BandwidthCalendar::default();
        for (a, b) in [(0, 10), (5, 15), (12, 20)] {
            c.add_committed(ms(a), ms(b), [30, 0]);
        }
        assert_eq!(c.peak(ms(0), ms(20), 0, None), [60, 0]);
    }

    #[test]
    fn steps_describe_the_level() {
        let ivs = [iv(0, 10, 30), iv(5, 15, 20)];
        let s = steps_of(ivs, &w(-5, 20));
        let got: Vec<_> = s.iter().map(|s| (s.start, s.end, s.booked.0)).collect();
        let want = vec![
            (t(-5), t(0), 0),
            (t(0), t(5), 30),
            (t(5), t(10), 50),
            (t(10), t(15), 20),
            (t(15), t(20), 0),
        ];
        assert_eq!(got, want);
        let mut c = BandwidthCalendar::default();
        c.add_committed(ms(0), ms(10), [30, 1]);
        c.add_committed(ms(5), ms(15), [20, 1]);
        let got: Vec<_> = c
            .steps(0, &w(-5, 20), t(0))
            .iter()
            .map(|s| (s.start, s.end, s.booked.0))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn holds_count_until_they_expire_and_leave_takes_a_booking_out() {
        let mut c = BandwidthCalendar::default();
        c.add_hold(Hold {
            rid: 1,
            start: ms(0),
            end: ms(100),
            bw: [40, 40],
            until: ms(5),
        });
        c.add_committed(ms(50), ms(60), [10, 10]);
        assert_eq!(c.peak(ms(0), ms(100), ms(0), None), [50, 50]);
        assert_eq!(
            c.peak(ms(0), ms(100), ms(5), None),
            [10, 10],
            "hold expired"
        );
        assert_eq!(
            c.peak(ms(0), ms(100), ms(0), Some(Leave::Hold(1))),
            [10, 10]
        );
        let without = Leave::Committed {
            rid: 99,
            start: ms(50),
            end: ms(60),
            bw: [10, 10],
        };
        assert_eq!(c.peak(ms(0), ms(100), ms(0), Some(without)), [40, 40]);
        c.commit_hold(1);
        assert_eq!(c.peak(ms(0), ms(100), ms(50), None), [50, 50]);
        c.remove_commitment(1, ms(0), ms(100), [40, 40]);
        c.remove_commitment(99, ms(50), ms(60), [10, 10]);
        assert!(c.is_empty(), "removing everything leaves no points");
    }

    #[test]
    fn next_release_is_where_the_level_drops() {
        let mut c = BandwidthCalendar::default();
        c.add_committed(ms(0), ms(10), [30, 30]);
        c.add_committed(ms(5), ms(20), [20, 20]);
        assert_eq!(c.next_release_after(ms(0), 0), Some(ms(10)));
        assert_eq!(c.next_release_after(ms(10), 0), Some(ms(20)));
        assert_eq!(c.next_release_after(ms(20), 0), None);
    }

    #[test]
    fn a_window_at_the_edge_of_time_does_not_overflow() {
        let mut c = BandwidthCalendar::default();
        c.add_committed(ms(0), ms(100), [40, 40]);
        let edge = TimeWindow::new(DateTime::<Utc>::MIN_UTC, t(50)).unwrap();
        assert_eq!(
            c.peak(millis(edge.start), millis(edge.end), 0, None),
            [40, 40]
        );
        assert_eq!(c.steps(0, &edge, t(0)).len(), 2);
    }

    /// (start, length, forward, reverse, hold until)
    type B = (i64, i64, u64, u64, Option<i64>);

    proptest! {
        /// The calendar agrees with checking every instant by brute force, through any
        /// sequence of adds, holds, removes and commits, leaving any one booking out.
        #[test]
        fn peak_matches_brute_force(
            bookings in prop::collection::vec(
                (0i64..50, 1i64..20, 0u64..100, 0u64..100, prop::option::of(0i64..10)), 0..25),
            removed in prop::collection::vec(any::<bool>(), 25),
            committed in prop::collection::vec(any::<bool>(), 25),
            a in 0i64..60, len in 1i64..30, now in 0i64..10,
            leave in prop::option::of(0usize..25),
            unit in prop::sample::select(vec![1i64, 86_400]),
        ) {
            // Seconds, or days: with days the bookings cross week boundaries.
            let ms = |x: i64| ms(x * unit);
            let t = |x: i64| t(x * unit);
            let w = |a: i64, b: i64| TimeWindow::new(t(a), t(b)).unwrap();
            let bookings: Vec<B> = bookings;
            let mut c = BandwidthCalendar::default();
            for (i, &(s, l, f, r, hold)) in bookings.iter().enumerate() {
                match hold {
                    Some(h) => c.add_hold(Hold { rid: i as Rid, start: ms(s), end: ms(s + l), bw: [f as u32, r as u32], until: ms(h) }),
                    // Straight into the points, or beside them until folded in.
                    None if i % 2 == 0 => c.add_committed(ms(s), ms(s + l), [f, r]),
                    None => c.add_hold(Hold { rid: i as Rid, start: ms(s), end: ms(s + l), bw: [f as u32, r as u32], until: FOREVER }),
                }
            }
            // Bookings still there, with their hold expiry (None once committed).
            let mut kept: Vec<(usize, B)> = Vec::new();
            for (i, &(s, l, f, r, hold)) in bookings.iter().enumerate() {
                if removed[i] {
                    match hold {
                        Some(_) => { c.remove_hold(i as Rid); }
                        None => c.remove_commitment(i as Rid, ms(s), ms(s + l), [f, r]),
                    }
                } else if hold.is_some() && committed[i] {
                    c.commit_hold(i as Rid);
                    kept.push((i, (s, l, f, r, None)));
                } else {
                    kept.push((i, (s, l, f, r, hold)));
                }
            }
            let leave_i = leave.filter(|&i| kept.iter().any(|(k, _)| *k == i));
            let leave = leave_i.map(|i| {
                let (_, (s, l, f, r, hold)) = kept.iter().find(|(k, _)| *k == i).unwrap();
                match hold {
                    Some(_) => Leave::Hold(i as Rid),
                    None => Leave::Committed { rid: i as Rid, start: ms(*s), end: ms(s + l), bw: [*f, *r] },
                }
            });
            let mut brute = [0u64, 0];
            for x in a..a + len {
                for (d, peak) in brute.iter_mut().enumerate() {
                    let level: u64 = kept.iter()
                        .filter(|(i, (s, l, _, _, hold))| Some(*i) != leave_i
                            && *s <= x && x < s + l && hold.is_none_or(|h| h > now))
                        .map(|(_, b)| if d == 0 { b.2 } else { b.3 }).sum();
                    *peak = (*peak).max(level);
                }
            }
            prop_assert_eq!(c.peak(ms(a), ms(a + len), ms(now), leave), brute);
            // The ceiling bounds the level at any instant, holds counted live or not;
            // with everything folded into the points and no holds, it is exact.
            let top = |with_holds: bool| {
                let mut top = [0u64, 0];
                for x in 0..70 {
                    for (d, top) in top.iter_mut().enumerate() {
                        let level: u64 = kept.iter()
                            .filter(|(_, (s, l, _, _, hold))| (with_holds || hold.is_none()) && *s <= x && x < s + l)
                            .map(|(_, b)| if d == 0 { b.2 } else { b.3 }).sum();
                        *top = (*top).max(level);
                    }
                }
                top
            };
            let (all, committed) = (top(true), top(false));
            let ceiling = c.ceiling();
            prop_assert!(ceiling[0] >= all[0] && ceiling[1] >= all[1], "{:?} < {:?}", ceiling, all);
            if kept.iter().all(|(_, b)| b.4.is_none()) {
                c.fold_recent();
                prop_assert_eq!(c.ceiling(), committed);
                prop_assert_eq!(c.peak(ms(a), ms(a + len), ms(now), leave), brute, "after folding");
            }
            if leave.is_none() {
                for (d, peak) in brute.iter().enumerate() {
                    let steps = c.steps(d, &w(a, a + len), t(now));
                    prop_assert_eq!(steps.first().unwrap().start, t(a));
                    prop_assert_eq!(steps.last().unwrap().end, t(a + len));
                    prop_assert_eq!(steps.iter().map(|s| s.booked.0).max().unwrap(), *peak);
                }
            }
            if removed.iter().take(bookings.len()).all(|r| *r) {
                prop_assert!(c.is_empty());
            }
        }
    }
}
