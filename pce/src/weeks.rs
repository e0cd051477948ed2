//! A coarse index over a vector sorted by time: for each week, where its entries begin.
//! A lookup goes straight to the week and searches only inside it, instead of binary
//! searching a year of entries (a dozen cache misses on a busy link); an insert or
//! remove adjusts one counter per later week.

use crate::calendar::Millis;

const WEEK: Millis = 7 * 24 * 3600 * 1000;

fn week(t: Millis) -> i64 {
    t.div_euclid(WEEK)
}

/// At most this many weeks (ten years) are indexed; entries outside the span are still
/// found, by a wider search.
const MAX_WEEKS: usize = 520;

/// Vectors shorter than this are binary searched whole: a few cache lines, and no index
/// to keep (most calendars stay this small). Unit tests index from a handful of entries,
/// so their small random calendars exercise the index.
pub const INDEX_FROM: usize = if cfg!(test) { 4 } else { 256 };

#[derive(Debug, Default, Clone)]
pub struct WeekIndex {
    /// The week of `first[0]`.
    base: i64,
    /// `first[k]`: the index of the first entry in week `base + k` or later.
    first: Vec<u32>,
}

impl WeekIndex {
    /// Where to search for `t` in a vector of `len` entries sorted by time: every entry
    /// before `lo` is in an earlier week than `t`, every entry from `hi` on in a later
    /// one. (Usually `[lo, hi)` is exactly `t`'s week.)
    pub fn bounds(&self, t: Millis, len: usize) -> (usize, usize) {
        if self.first.is_empty() {
            return (0, len);
        }
        let k = week(t) - self.base;
        if k < 0 {
            return (0, self.first[0] as usize);
        }
        let k = k as usize;
        if k >= self.first.len() {
            return (*self.first.last().expect("not empty") as usize, len);
        }
        let hi = self.first.get(k + 1).map_or(len, |&f| f as usize);
        (self.first[k] as usize, hi)
    }

    /// `v.partition_point(pred)` for `v` (the vector this indexes) sorted by `time`,
    /// where `pred` holds for the entries before about `t`: inside `t`'s week the place
    /// is guessed from how far into the week `t` is, which reads nothing but the index;
    /// elsewhere as `find_time`.
    pub fn find<T>(
        &self,
        v: &[T],
        t: Millis,
        time: impl Fn(&T) -> Millis,
        pred: impl Fn(&T) -> bool,
    ) -> usize {
        let (lo, hi) = self.bounds(t, v.len());
        let k = week(t) - self.base;
        let inside = !self.first.is_empty() && k >= 0 && (k as usize) + 1 < self.first.len();
        if !inside || hi - lo <= 1 {
            return lo + find_time(&v[lo..hi], t, time, pred);
        }
        let into = (t - (week(t) * WEEK)) as f64 / WEEK as f64;
        let guess = ((into * (hi - lo) as f64) as usize).min(hi - lo - 1);
        lo + gallop(&v[lo..hi], guess, pred)
    }

    /// An index over `times` (sorted), from the first entry's week to the last's.
    pub fn build(times: impl ExactSizeIterator<Item = Millis> + Clone) -> WeekIndex {
        let mut all = times.clone();
        let (Some(first), Some(last)) = (all.next(), times.clone().last()) else {
            return WeekIndex::default();
        };
        let base = week(first);
        let span = ((week(last) - base) as usize + 1).min(MAX_WEEKS);
        let mut index = WeekIndex {
            base,
            first: Vec::with_capacity(span),
        };
        // Compared against each week's start rather than divided: a rebuild after a
        // fold runs over thousands of entries.
        let mut seen = 0usize;
        let mut it = times.peekable();
        for k in 0..span as i64 {
            let week_start = (base + k).saturating_mul(WEEK);
            while it.peek().is_some_and(|&t| t < week_start) {
                it.next();
                seen += 1;
            }
            index.first.push(seen as u32);
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// An entry at time `t` is being inserted. `count_before(x)` says how many entries
    /// (before this one) are earlier than `x`; it is asked only when the span grows.
    /// Does nothing until the index is built.
    pub fn inserted(&mut self, t: Millis, count_before: impl Fn(Millis) -> usize) {
        if self.first.is_empty() {
            return;
        }
        let w = week(t);
        let start_of = |k: i64| k.saturating_mul(WEEK);
        if w < self.base && self.first.len() + ((self.base - w) as usize) <= MAX_WEEKS {
            let extra = (self.base - w) as usize;
            let new: Vec<u32> = (0..extra as i64)
                .map(|i| count_before(start_of(w + i)) as u32)
                .collect();
            self.first.splice(0..0, new);
            self.base = w;
        }
        let k = w - self.base;
        if k >= self.first.len() as i64 && (k as usize) < MAX_WEEKS {
            for j in self.first.len() as i64..=k {
                let f = count_before(start_of(self.base + j)) as u32;
                self.first.push(f);
            }
        }
        // Weeks after `w` start one later (all of them if `w` is before the span).
        let from = if k < 0 { 0 } else { k as usize + 1 };
        for f in self.first.iter_mut().skip(from) {
            *f += 1;
        }
    }

    /// The entry at time `t` was removed.
    pub fn removed(&mut self, t: Millis) {
        let k = week(t) - self.base;
        let from = if k < 0 { 0 } else { k as usize + 1 };
        for f in self.first.iter_mut().skip(from) {
            *f -= 1;
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.first.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.first.capacity() * size_of::<u32>()
    }
}

/// `v.partition_point(pred)` for `v` sorted by `time`, where `pred` holds for the entries
/// before about `t`. Entries are spread fairly evenly over time, so the place is first
/// guessed from where `t` falls between the first and last entry, then found by galloping
/// from the guess: on a cold calendar a few cache lines instead of a binary search's
/// one miss per halving.
pub fn find_time<T>(
    v: &[T],
    t: Millis,
    time: impl Fn(&T) -> Millis,
    pred: impl Fn(&T) -> bool,
) -> usize {
    let n = v.len();
    if n <= 16 {
        return v.partition_point(pred);
    }
    let (t0, t1) = (time(&v[0]), time(&v[n - 1]));
    let guess = if t <= t0 || t1 <= t0 {
        0
    } else if t >= t1 {
        n - 1
    } else {
        // In floating point: a guess needs no exactness, and an integer division of
        // this width is a slow library call.
        let share = (t as f64 - t0 as f64) / (t1 as f64 - t0 as f64);
        ((share * (n - 1) as f64) as usize).min(n - 1)
    };
    gallop(v, guess, pred)
}

/// `v.partition_point(pred)`, searched outwards from `at` in doubling steps.
fn gallop<T>(v: &[T], at: usize, pred: impl Fn(&T) -> bool) -> usize {
    let n = v.len();
    if pred(&v[at]) {
        // Everything before `lo` holds; the answer is in `lo..=n`.
        let (mut lo, mut step) = (at + 1, 1);
        loop {
            let probe = lo + step - 1;
            if probe >= n {
                return lo + v[lo..].partition_point(pred);
            }
            if !pred(&v[probe]) {
                return lo + v[lo..probe].partition_point(pred);
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        // Nothing from `hi` on holds; the answer is in `0..=hi`.
        let (mut hi, mut step) = (at, 1);
        loop {
            if hi < step {
                return v[..hi].partition_point(pred);
            }
            let probe = hi - step;
            if pred(&v[probe]) {
                return probe + 1 + v[probe + 1..hi].partition_point(pred);
            }
            hi = probe;
            step *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Guessing and galloping finds what a binary search finds, however the
        /// entries are spread (repeats, clusters, one far outlier).
        #[test]
        fn find_time_is_partition_point(
            mut times in prop::collection::vec(prop_oneof![0i64..100, 0i64..1_000_000], 0..200),
            probes in prop::collection::vec(-10i64..1_000_010, 1..20),
        ) {
            times.sort_unstable();
            for t in probes {
                for strict in [true, false] {
                    let pred = |&x: &i64| if strict { x < t } else { x <= t };
                    prop_assert_eq!(
                        find_time(&times, t, |&x| x, pred),
                        times.partition_point(pred)
                    );
                }
            }
        }

        /// Every lookup brackets exactly the entries of its week, through inserts and
        /// removes in any order, also before the first week seen.
        #[test]
        fn bounds_bracket_the_week(
            ops in prop::collection::vec((-20i64..60, any::<bool>()), 1..80),
            probes in prop::collection::vec(-30i64..70, 1..20),
            spread in prop::sample::select(vec![1i64, 7 * 200]),
        ) {
            // With the wide spread, entries fall outside the indexed span.
            let mut times: Vec<Millis> = Vec::new();
            let mut idx = WeekIndex::default();
            let mut built = false;
            for (day, remove) in ops {
                let t = day * spread * 24 * 3600 * 1000 + 17;
                if remove {
                    if let Some(i) = times.iter().position(|&x| x == t) {
                        times.remove(i);
                        idx.removed(t);
                    }
                } else {
                    let i = times.partition_point(|&x| x < t);
                    idx.inserted(t, |x| times.partition_point(|&y| y < x));
                    times.insert(i, t);
                    // Built after the first few entries, then kept up to date.
                    if !built && times.len() >= 3 {
                        idx = WeekIndex::build(times.iter().copied());
                        built = true;
                    }
                }
            }
            for day in probes {
                let t = day * spread * 24 * 3600 * 1000;
                let (lo, hi) = idx.bounds(t, times.len());
                prop_assert!(lo <= hi && hi <= times.len());
                for t in [t, t + 3 * 24 * 3600 * 1000 + 5] {
                    prop_assert_eq!(
                        idx.find(&times, t, |&x| x, |&x| x < t),
                        times.partition_point(|&x| x < t)
                    );
                }
                prop_assert!(times[..lo].iter().all(|&x| week(x) < week(t)));
                prop_assert!(times[hi..].iter().all(|&x| week(x) > week(t)));
                let inside = times.first().is_some_and(|&a| week(a) <= week(t))
                    && times.last().is_some_and(|&b| week(t) <= week(b));
                if spread == 1 && inside && built {
                    // Inside the span the bracket is exactly the week.
                    prop_assert!(times[lo..hi].iter().all(|&x| week(x) == week(t)));
                }
            }
        }
    }
}
