//! Bandwidth, labels and time windows.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorCode};

/// Bandwidth in megabits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mbps(pub u64);

impl Mbps {
    pub const ZERO: Mbps = Mbps(0);

    pub fn saturating_sub(self, other: Mbps) -> Mbps {
        Mbps(self.0.saturating_sub(other.0))
    }
}

impl std::ops::Add for Mbps {
    type Output = Mbps;
    fn add(self, rhs: Mbps) -> Mbps {
        Mbps(self.0 + rhs.0)
    }
}

impl fmt::Display for Mbps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Mb/s", self.0)
    }
}

/// An 802.1Q VLAN id, 1..=4094.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vlan(u16);

impl Vlan {
    pub const MIN: u16 = 1;
    pub const MAX: u16 = 4094;

    pub fn new(id: u16) -> Option<Vlan> {
        (Vlan::MIN..=Vlan::MAX).contains(&id).then_some(Vlan(id))
    }

    pub fn id(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Vlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of VLANs kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VlanSet {
    ranges: Vec<(u16, u16)>,
}

impl VlanSet {
    pub fn empty() -> VlanSet {
        VlanSet::default()
    }

    pub fn single(v: Vlan) -> VlanSet {
        VlanSet {
            ranges: vec![(v.0, v.0)],
        }
    }

    pub fn range(lo: Vlan, hi: Vlan) -> VlanSet {
        VlanSet::from_ranges([(lo.0, hi.0)])
    }

    /// From inclusive `(lo, hi)` ranges in any order; overlapping ones are merged.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> VlanSet {
        let mut rs: Vec<(u16, u16)> = ranges.into_iter().filter(|(a, b)| a <= b).collect();
        rs.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(rs.len());
        for (a, b) in rs {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        VlanSet { ranges: merged }
    }

    /// Parses `100`, `100-200` or a comma-separated list of those.
    pub fn parse(text: &str) -> Result<VlanSet, Error> {
        let bad = |why: String| Error::new(ErrorCode::InvalidLabelFormat, why);
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad(format!("empty VLAN range in {text:?}")));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (part, part),
            };
            let parse_one = |s: &str| -> Result<u16, Error> {
                let n: u32 = s
                    .parse()
                    .map_err(|_| bad(format!("{s:?} is not a VLAN id (expected 1-4094)")))?;
                if !(Vlan::MIN as u32..=Vlan::MAX as u32).contains(&n) {
                    return Err(bad(format!("VLAN {n} is outside 1-4094")));
                }
                Ok(n as u16)
            };
            let (lo, hi) = (parse_one(lo)?, parse_one(hi)?);
            if lo > hi {
                return Err(bad(format!("VLAN range {part:?} runs backwards")));
            }
            ranges.push((lo, hi));
        }
        Ok(VlanSet::from_ranges(ranges))
    }

    /// The sorted, disjoint inclusive ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ranges
            .iter()
            .map(|(a, b)| (*b - *a) as usize + 1)
            .sum()
    }

    pub fn contains(&self, v: Vlan) -> bool {
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&v.0))
    }

    pub fn is_subset_of(&self, other: &VlanSet) -> bool {
        self.intersect(other) == *self
    }

    pub fn first(&self) -> Option<Vlan> {
        self.ranges.first().map(|(a, _)| Vlan(*a))
    }

    pub fn intersect(&self, other: &VlanSet) -> VlanSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a1, b1) = self.ranges[i];
            let (a2, b2) = other.ranges[j];
            let (lo, hi) = (a1.max(a2), b1.min(b2));
            if lo <= hi {
                out.push((lo, hi));
            }
            if b1 < b2 { i += 1 } else { j += 1 }
        }
        VlanSet { ranges: out }
    }

    pub fn remove(&mut self, v: Vlan) {
        let v = v.0;
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(a, b) in &self.ranges {
            if v < a || v > b {
                out.push((a, b));
                continue;
            }
            if a < v {
                out.push((a, v - 1));
            }
            if v < b {
                out.push((v + 1, b));
            }
        }
        self.ranges = out;
    }

    pub fn iter(&self) -> impl Iterator<Item = Vlan> + '_ {
        self.ranges.iter().flat_map(|(a, b)| (*a..=*b).map(Vlan))
    }
}

impl fmt::Display for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// A half-open interval of time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl TimeWindow {
    /// A window; `end` must be after `start`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<TimeWindow, Error> {
        if end <= start {
            return Err(Error::invalid(
                "end",
                format!("end {end} is not after start {start}"),
            ));
        }
        Ok(TimeWindow { start, end })
    }

    pub fn overlaps(&self, other: &TimeWindow) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} .. {}",
            self.start.format("%Y-%m-%dT%H:%M:%SZ"),
            self.end.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ranges_and_lists() {
        let s = VlanSet::parse("100-102, 200,101-150").unwrap();
        assert_eq!(s.to_string(), "100-150,200");
        assert_eq!(s.len(), 52);
        assert!(s.contains(Vlan::new(150).unwrap()));
        assert!(!s.contains(Vlan::new(151).unwrap()));
    }

    #[test]
    fn refuses_bad_vlans() {
        for bad in ["0", "4095", "abc", "200-100", "", "1,,2", "-5"] {
            let e = VlanSet::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidLabelFormat, "{bad}");
        }
    }

    #[test]
    fn window_needs_positive_length() {
        let t = DateTime::from_timestamp(1_000, 0).unwrap();
        assert!(TimeWindow::new(t, t).is_err());
        let e = TimeWindow::new(t, t - chrono::Duration::seconds(1)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("end"));
    }

    fn set_strategy() -> impl Strategy<Value = VlanSet> {
        prop::collection::vec((1u16..60, 0u16..8), 0..6)
            .prop_map(|v| VlanSet::from_ranges(v.into_iter().map(|(a, l)| (a, a + l))))
    }

    proptest! {
        #[test]
        fn set_operations_match_naive_sets(a in set_strategy(), b in set_strategy(), r in 1u16..70) {
            use std::collections::BTreeSet;
            let na: BTreeSet<u16> = a.iter().map(Vlan::id).collect();
            let nb: BTreeSet<u16> = b.iter().map(Vlan::id).collect();
            let inter: BTreeSet<u16> = a.intersect(&b).iter().map(Vlan::id).collect();
            prop_assert_eq!(inter, na.intersection(&nb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(a.len(), na.len());
            let mut removed = a.clone();
            removed.remove(Vlan(r));
            let mut expect = na.clone();
            expect.remove(&r);
            prop_assert_eq!(removed.iter().map(Vlan::id).collect::<BTreeSet<_>>(), expect);
            // The printed form parses back to the same set.
            if !a.is_empty() {
                prop_assert_eq!(VlanSet::parse(&a.to_string()).unwrap(), a);
            }
        }
    }
}
