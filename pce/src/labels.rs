//! Label calendars: which VLANs of a port (or of a link, whose two ports carry the same
//! VLAN) are taken when; and `VlanBits`, the fixed-size VLAN set the path search carries.

use sluice_model::{Vlan, VlanSet};

use crate::calendar::grow;
use crate::calendar::{FOREVER, Millis, Rid, recent_max};
use crate::weeks::{INDEX_FROM, WeekIndex};

/// A set of VLAN ids 0..4096 as a bit set: intersections in a few dozen instructions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VlanBits([u64; 64]);

impl std::fmt::Debug for VlanBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VlanBits({})", self.to_set())
    }
}

impl VlanBits {
    pub const EMPTY: VlanBits = VlanBits([0; 64]);
    pub const FULL: VlanBits = VlanBits([u64::MAX; 64]);

    pub fn from_set(set: &VlanSet) -> VlanBits {
        let mut b = VlanBits::EMPTY;
        for &(lo, hi) in set.ranges() {
            // Whole words at a time: a topology has thousands of 2-4094 ranges.
            let (lo, hi) = (lo as usize, (hi as usize).min(4095));
            for word in lo / 64..=hi / 64 {
                let first = if word == lo / 64 { lo % 64 } else { 0 };
                let last = if word == hi / 64 { hi % 64 } else { 63 };
                let bits = (u64::MAX >> (63 - last)) & (u64::MAX << first);
                b.0[word] |= bits;
            }
        }
        b
    }

    pub fn to_set(&self) -> VlanSet {
        let mut ranges = Vec::new();
        let mut v = 0u16;
        while let Some(lo) = self.next_at_or_after(v) {
            let mut hi = lo;
            while hi < 4095 && self.contains(hi + 1) {
                hi += 1;
            }
            ranges.push((lo, hi));
            if hi == 4095 {
                break;
            }
            v = hi + 1;
        }
        VlanSet::from_ranges(ranges)
    }

    pub fn insert(&mut self, v: u16) {
        self.0[(v / 64) as usize & 63] |= 1 << (v % 64);
    }

    pub fn remove(&mut self, v: u16) {
        self.0[(v / 64) as usize & 63] &= !(1 << (v % 64));
    }

    pub fn contains(&self, v: u16) -> bool {
        self.0[(v / 64) as usize & 63] & (1 << (v % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn and(&self, other: &VlanBits) -> VlanBits {
        let mut out = VlanBits::EMPTY;
        for i in 0..64 {
            out.0[i] = self.0[i] & other.0[i];
        }
        out
    }

    /// Keeps only what `other` has too.
    pub fn intersect(&mut self, other: &VlanBits) {
        for i in 0..64 {
            self.0[i] &= other.0[i];
        }
    }

    /// Drops everything `other` has.
    pub fn remove_all(&mut self, other: &VlanBits) {
        for i in 0..64 {
            self.0[i] &= !other.0[i];
        }
    }

    pub fn and_not(&self, other: &VlanBits) -> VlanBits {
        let mut out = VlanBits::EMPTY;
        for i in 0..64 {
            out.0[i] = self.0[i] & !other.0[i];
        }
        out
    }

    /// Every member of `self` is in `other`.
    pub fn is_subset_of(&self, other: &VlanBits) -> bool {
        (0..64).all(|i| self.0[i] & !other.0[i] == 0)
    }

    fn next_at_or_after(&self, v: u16) -> Option<u16> {
        let mut word = (v / 64) as usize;
        if word >= 64 {
            return None;
        }
        let mut bits = self.0[word] & (u64::MAX << (v % 64));
        loop {
            if bits != 0 {
                return Some(word as u16 * 64 + bits.trailing_zeros() as u16);
            }
            word += 1;
            if word == 64 {
                return None;
            }
            bits = self.0[word];
        }
    }

    /// The lowest VLAN in the set.
    pub fn first(&self) -> Option<Vlan> {
        self.next_at_or_after(0).and_then(Vlan::new)
    }
}

/// One committed VLAN use no longer than `SHORT`: 16 bytes, as there are many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShortUse {
    start: Millis,
    len: u32,
    vlan: u16,
}

/// A committed VLAN use longer than `SHORT`. Kept apart so that the look-back of a query
/// over short uses stays short (a window can only overlap uses that started at most the
/// longest use earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LongUse {
    start: Millis,
    end: Millis,
    vlan: u16,
}

const DAY: Millis = 24 * 3600 * 1000;

/// Uses up to eight days long are short. They are kept in two tiers, up to a day and up
/// to eight days, so that a query over the many uses of a few hours looks back a day,
/// and only over the fewer longer ones eight.
const SHORT: Millis = 8 * DAY;
const TIER_MAX: [Millis; 2] = [DAY, SHORT];

fn tier_of(len: Millis) -> Option<usize> {
    TIER_MAX.iter().position(|&max| len <= max)
}

/// Short uses by (start, VLAN), with a week index once there are many.
#[derive(Debug, Default, Clone)]
struct Tier {
    uses: Vec<ShortUse>,
    weeks: WeekIndex,
    longest: Millis,
}

impl Tier {
    /// Where a use of `vlan` from `start` is, or would go.
    fn index(&self, start: Millis, vlan: u16) -> usize {
        let uses = &self.uses;
        let key = (start, vlan);
        self.weeks
            .find(uses, start, |u| u.start, |x| (x.start, x.vlan) < key)
    }

    fn insert(&mut self, u: ShortUse) {
        self.longest = self.longest.max(u.len as Millis);
        let i = self.index(u.start, u.vlan);
        let uses = &self.uses;
        self.weeks
            .inserted(u.start, |x| uses.partition_point(|u| u.start < x));
        grow(&mut self.uses);
        self.uses.insert(i, u);
        if self.weeks.is_empty() && self.uses.len() >= INDEX_FROM {
            self.weeks = WeekIndex::build(self.uses.iter().map(|u| u.start));
        }
    }

    fn remove(&mut self, start: Millis, vlan: u16) -> bool {
        let i = self.index(start, vlan);
        if self
            .uses
            .get(i)
            .is_some_and(|u| u.start == start && u.vlan == vlan)
        {
            self.weeks.removed(start);
            self.uses.remove(i);
            return true;
        }
        false
    }

    /// Merges `new` (sorted by (start, VLAN)) in, in one pass.
    fn merge(&mut self, new: Vec<ShortUse>) {
        if new.is_empty() {
            return;
        }
        let longest = new.iter().map(|u| u.len as Millis).max().unwrap_or(0);
        self.longest = self.longest.max(longest);
        let old = std::mem::take(&mut self.uses);
        let mut merged = Vec::with_capacity(old.len() + new.len());
        // The old uses between two new ones are copied as a block.
        let mut i = 0;
        for u in new {
            let j = i + old[i..].partition_point(|x| (x.start, x.vlan) < (u.start, u.vlan));
            merged.extend_from_slice(&old[i..j]);
            merged.push(u);
            i = j;
        }
        merged.extend_from_slice(&old[i..]);
        self.uses = merged;
        self.reindex();
    }

    fn reindex(&mut self) {
        self.weeks = if self.uses.len() >= INDEX_FROM {
            WeekIndex::build(self.uses.iter().map(|u| u.start))
        } else {
            WeekIndex::default()
        };
    }

    fn shrink_to_fit(&mut self) {
        self.uses.shrink_to_fit();
        self.weeks.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.uses.capacity() * size_of::<ShortUse>() + self.weeks.heap_bytes()
    }

    /// Uses that may overlap `[w0, w1)`: those that started at most the longest use
    /// before `w0`, up to `w1`.
    fn around(&self, w0: Millis, w1: Millis) -> impl Iterator<Item = (Millis, Millis, u16)> {
        let from = w0.saturating_sub(self.longest);
        let i = self
            .weeks
            .find(&self.uses, from, |u| u.start, |u| u.start < from);
        self.uses[i..]
            .iter()
            .take_while(move |u| u.start < w1)
            .map(|u| (u.start, u.start + u.len as Millis, u.vlan))
    }
}

/// A held VLAN use: counts until `until` unless committed first. A commitment not yet
/// folded into the sorted uses never expires (`until == FOREVER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelHold {
    pub rid: Rid,
    pub start: Millis,
    pub end: Millis,
    pub vlan: Vlan,
    pub until: Millis,
}

/// A VLAN use a query leaves out: the reservation being modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveLabel {
    Hold(Rid),
    /// A commitment: beside the sorted uses under its `rid`, or among them, where (start,
    /// VLAN) names it, as two uses of one VLAN on one port never overlap.
    Committed {
        rid: Rid,
        start: Millis,
        vlan: Vlan,
    },
}

/// The VLAN bookings of one port or link, by start time. A check looks back from the
/// window's start by the longest booking seen, so it touches only nearby bookings.
#[derive(Debug, Default, Clone)]
pub struct LabelCalendar {
    /// Uses up to a day long, and up to eight days.
    tiers: [Tier; 2],
    /// By (start, VLAN).
    long: Vec<LongUse>,
    longest_long: Millis,
    /// Holds, and recent commitments (see `calendar::recent_max`).
    holds: Vec<LabelHold>,
}

impl LabelCalendar {
    pub fn add_committed(&mut self, start: Millis, end: Millis, vlan: Vlan) {
        let (len, v) = (end - start, vlan.id());
        match tier_of(len) {
            Some(k) => self.tiers[k].insert(ShortUse {
                start,
                len: len as u32,
                vlan: v,
            }),
            None => self.insert_long(start, end, v),
        }
    }

    fn insert_long(&mut self, start: Millis, end: Millis, vlan: u16) {
        self.longest_long = self.longest_long.max(end - start);
        let i = self
            .long
            .partition_point(|x| (x.start, x.vlan) < (start, vlan));
        self.long.insert(i, LongUse { start, end, vlan });
    }

    pub fn remove_committed(&mut self, start: Millis, vlan: Vlan) -> bool {
        let v = vlan.id();
        if self.tiers.iter_mut().any(|t| t.remove(start, v)) {
            return true;
        }
        let i = self
            .long
            .partition_point(|x| (x.start, x.vlan) < (start, v));
        if self
            .long
            .get(i)
            .is_some_and(|u| u.start == start && u.vlan == v)
        {
            self.long.remove(i);
            return true;
        }
        false
    }

    /// A calendar of committed uses `(start, end, VLAN)`, built in one sort (a rebuild).
    pub fn from_committed(mut uses: Vec<(Millis, Millis, Vlan)>) -> LabelCalendar {
        uses.sort_unstable_by_key(|u| (u.0, u.2));
        let mut c = LabelCalendar::default();
        for (start, end, vlan) in uses {
            let len = end - start;
            match tier_of(len) {
                Some(k) => {
                    let tier = &mut c.tiers[k];
                    tier.longest = tier.longest.max(len);
                    tier.uses.push(ShortUse {
                        start,
                        len: len as u32,
                        vlan: vlan.id(),
                    });
                }
                None => {
                    c.longest_long = c.longest_long.max(len);
                    c.long.push(LongUse {
                        start,
                        end,
                        vlan: vlan.id(),
                    });
                }
            }
        }
        c.shrink_to_fit();
        for tier in &mut c.tiers {
            tier.reindex();
        }
        c
    }

    /// Gives back memory the vectors grew into (after a rebuild).
    pub fn shrink_to_fit(&mut self) {
        for tier in &mut self.tiers {
            tier.shrink_to_fit();
        }
        self.long.shrink_to_fit();
        self.holds.shrink_to_fit();
    }

    /// Adds a hold, or with `until == FOREVER` a commitment, beside the sorted uses.
    pub fn add_hold(&mut self, hold: LabelHold) {
        self.remove_hold(hold.rid);
        grow(&mut self.holds);
        self.holds.push(hold);
        if hold.until == FOREVER {
            self.fold_if_many();
        }
    }

    fn fold_if_many(&mut self) {
        let recent = self.holds.iter().filter(|h| h.until == FOREVER).count();
        if recent > recent_max(self.tiers[0].uses.len() + self.tiers[1].uses.len()) {
            self.fold_recent();
        }
    }

    /// Moves the recent commitments among the sorted uses, in one merge per tier.
    pub(crate) fn fold_recent(&mut self) {
        let mut new: [Vec<ShortUse>; 2] = Default::default();
        let recent: Vec<LabelHold> = self
            .holds
            .iter()
            .filter(|h| h.until == FOREVER)
            .copied()
            .collect();
        if recent.is_empty() {
            return;
        }
        self.holds.retain(|h| h.until != FOREVER);
        self.holds.shrink_to_fit();
        for h in recent {
            let (len, vlan) = (h.end - h.start, h.vlan.id());
            match tier_of(len) {
                Some(k) => new[k].push(ShortUse {
                    start: h.start,
                    len: len as u32,
                    vlan,
                }),
                None => self.insert_long(h.start, h.end, vlan),
            }
        }
        for (tier, mut new) in self.tiers.iter_mut().zip(new) {
            new.sort_unstable_by_key(|u| (u.start, u.vlan));
            tier.merge(new);
        }
    }

    /// Takes out the commitment of `rid`, beside the sorted uses or (given its start and
    /// VLAN) among them.
    pub fn remove_commitment(&mut self, rid: Rid, start: Millis, vlan: Vlan) -> bool {
        self.remove_hold(rid).is_some() || self.remove_committed(start, vlan)
    }

    pub fn remove_hold(&mut self, rid: Rid) -> Option<LabelHold> {
        let i = self.holds.iter().position(|h| h.rid == rid)?;
        Some(self.holds.swap_remove(i))
    }

    /// The hold becomes a commitment: it counts until its end from now on.
    pub fn commit_hold(&mut self, rid: Rid) {
        if let Some(h) = self.holds.iter_mut().find(|h| h.rid == rid) {
            h.until = FOREVER;
            self.fold_if_many();
        }
    }

    pub fn len(&self) -> usize {
        self.tiers.iter().map(|t| t.uses.len()).sum::<usize>() + self.long.len() + self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn heap_bytes(&self) -> usize {
        self.tiers.iter().map(Tier::heap_bytes).sum::<usize>()
            + self.long.capacity() * size_of::<LongUse>()
            + self.holds.capacity() * size_of::<LabelHold>()
    }

    /// Committed uses that overlap `[w0, w1)`, as (start, end, VLAN).
    fn overlapping(&self, w0: Millis, w1: Millis) -> impl Iterator<Item = (Millis, Millis, u16)> {
        let from = w0.saturating_sub(self.longest_long);
        let i = self.long.partition_point(|u| u.start < from);
        let long = self.long[i..]
            .iter()
            .take_while(move |u| u.start < w1)
            .map(|u| (u.start, u.end, u.vlan));
        self.tiers[0]
            .around(w0, w1)
            .chain(self.tiers[1].around(w0, w1))
            .chain(long)
            .filter(move |u| u.1 > w0)
    }

    /// Calls `f` with every VLAN taken at some instant of `[w0, w1)` (repeats possible).
    pub(crate) fn for_each_taken(
        &self,
        w0: Millis,
        w1: Millis,
        now: Millis,
        leave: Option<LeaveLabel>,
        mut f: impl FnMut(u16),
    ) {
        let leave = match leave {
            Some(LeaveLabel::Committed { rid, .. }) if self.holds.iter().any(|h| h.rid == rid) => {
                Some(LeaveLabel::Hold(rid))
            }
            other => other,
        };
        let skip = match leave {
            Some(LeaveLabel::Committed { start, vlan, .. }) => Some((start, vlan.id())),
            _ => None,
        };
        for (start, _, vlan) in self.overlapping(w0, w1) {
            if skip != Some((start, vlan)) {
                f(vlan);
            }
        }
        for h in &self.holds {
            if h.until > now && h.start < w1 && h.end > w0 && leave != Some(LeaveLabel::Hold(h.rid))
            {
                f(h.vlan.id());
            }
        }
    }

    /// The VLANs taken at some instant of `[w0, w1)`.
    pub fn taken(
        &self,
        w0: Millis,
        w1: Millis,
        now: Millis,
        leave: Option<LeaveLabel>,
    ) -> VlanBits {
        let mut out = VlanBits::EMPTY;
        self.for_each_taken(w0, w1, now, leave, |v| out.insert(v));
        out
    }

    /// Nothing at all is booked in `[w0, w1)`: the common case, answered without a set.
    pub fn is_free_in(
        &self,
        w0: Millis,
        w1: Millis,
        now: Millis,
        leave: Option<LeaveLabel>,
    ) -> bool {
        let mut any = false;
        self.for_each_taken(w0, w1, now, leave, |_| any = true);
        !any
    }

    /// The first instant after `t` at which a VLAN booked here is released.
    pub fn next_release_after(&self, t: Millis, now: Millis) -> Option<Millis> {
        let committed = self
            .overlapping(t, Millis::MAX)
            .map(|u| u.1)
            .filter(|&e| e > t)
            .min();
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

    fn v(n: u16) -> Vlan {
        Vlan::new(n).unwrap()
    }

    #[test]
    fn a_vlan_is_free_outside_its_bookings() {
        let mut c = LabelCalendar::default();
        c.add_committed(0, 10, v(100));
        c.add_hold(LabelHold {
            rid: 7,
            start: 0,
            end: 10,
            vlan: v(101),
            until: 3,
        });
        let wanted = VlanBits::from_set(&VlanSet::parse("100-102").unwrap());
        let free = |w0, w1, now, leave| {
            wanted
                .and_not(&c.taken(w0, w1, now, leave))
                .to_set()
                .to_string()
        };
        assert_eq!(free(5, 15, 0, None), "102");
        assert_eq!(free(5, 15, 3, None), "101-102", "the hold expired at 3");
        assert_eq!(free(10, 15, 0, None), "100-102", "half-open windows");
        let leave = LeaveLabel::Committed {
            rid: 99,
            start: 0,
            vlan: v(100),
        };
        assert_eq!(free(5, 15, 0, Some(leave)), "100,102");
        assert_eq!(free(5, 15, 0, Some(LeaveLabel::Hold(7))), "101-102");
        assert!(!c.is_free_in(0, 5, 0, None));
        assert!(c.is_free_in(10, 20, 0, None));
        c.commit_hold(7);
        assert!(c.taken(5, 6, 9, None).contains(101), "committed: no expiry");
        assert!(c.remove_committed(0, v(100)));
        assert!(!c.remove_committed(0, v(100)));
        assert_eq!(c.next_release_after(0, 0), Some(10));
    }

    #[test]
    fn bits_round_trip_and_find_the_lowest() {
        let set = VlanSet::parse("2-5,63-65,4094").unwrap();
        let b = VlanBits::from_set(&set);
        assert_eq!(b.to_set(), set);
        assert_eq!(b.len(), 8);
        assert_eq!(b.first(), Some(v(2)));
        assert_eq!(VlanBits::EMPTY.first(), None);
        let other = VlanBits::from_set(&VlanSet::parse("64-100").unwrap());
        assert_eq!(b.and(&other).to_set().to_string(), "64-65");
        assert!(b.and(&other).is_subset_of(&b));
        assert!(!b.is_subset_of(&other));
    }

    proptest! {
        #[test]
        fn bits_and_sets_agree(ranges in prop::collection::vec((1u16..4095, 0u16..200), 0..6)) {
            let set = VlanSet::from_ranges(ranges.iter().map(|&(a, l)| (a, a.saturating_add(l).min(4094))));
            let bits = VlanBits::from_set(&set);
            prop_assert_eq!(bits.to_set(), set.clone());
            prop_assert_eq!(bits.len(), set.len());
            for v in [1u16, 63, 64, 65, 127, 128, 4094] {
                prop_assert_eq!(bits.contains(v), set.contains(Vlan::new(v).unwrap()));
            }
        }

        #[test]
        fn taken_matches_brute_force(
            uses in prop::collection::vec((0i64..50, 1i64..20, 1u16..6), 0..20),
            removed in prop::collection::vec(any::<bool>(), 20),
            a in 0i64..60, len in 1i64..30,
            unit in prop::sample::select(vec![1i64, SHORT / 8]),
        ) {
            // With the larger unit some uses are long (over SHORT), some short.
            let mut c = LabelCalendar::default();
            let mut kept = Vec::new();
            for (i, &(s, l, vlan)) in uses.iter().enumerate() {
                let (s, e) = (s * unit, (s + l) * unit);
                // Admission never books one VLAN twice at once.
                if kept.iter().any(|&(s2, e2, v2)| v2 == vlan && s < e2 && s2 < e) {
                    continue;
                }
                // Straight among the sorted uses, or beside them until folded in.
                if i % 2 == 0 {
                    c.add_committed(s, e, v(vlan));
                } else {
                    c.add_hold(LabelHold { rid: i as Rid, start: s, end: e, vlan: v(vlan), until: FOREVER });
                }
                if removed[i] {
                    prop_assert!(c.remove_commitment(i as Rid, s, v(vlan)));
                } else {
                    kept.push((s, e, vlan));
                }
            }
            let (a, b) = (a * unit, (a + len) * unit);
            for pass in ["recent beside", "all folded"] {
                let got = c.taken(a, b, 0, None);
                for vlan in 1u16..6 {
                    let brute = kept.iter().any(|&(s, e, v2)| v2 == vlan && s < b && a < e);
                    prop_assert_eq!(got.contains(vlan), brute, "{}", pass);
                }
                prop_assert_eq!(c.len(), kept.len());
                c.fold_recent();
            }
        }
    }
}
