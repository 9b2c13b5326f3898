//! What one alert of a rule folded per (rule, master, target) covers: the unit ids, function
//! codes and address ranges of its occurrences (alert schema 3).
//!
//! A scan of 247 unit ids is one event, not 247: such rules fold every occurrence between one
//! master and one target into one window, and the alert says what the window saw. The lists
//! are bounded: unit ids and function codes by their domain (256 each), address ranges by
//! [`MAX_RANGES`], beyond which the two closest ranges are merged (so a listed range may also
//! cover addresses between two that were seen, never fewer than were seen).

use serde::{Deserialize, Serialize};

use crate::policy::matcher::RangeSet;

/// Most address ranges an alert lists.
pub const MAX_RANGES: usize = 16;

/// The unit ids, function codes and address ranges an alert's occurrences used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Unit ids addressed, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<u8>,
    /// Function codes used, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<u8>,
    /// Address ranges read or written, `[first, last]`, ascending and apart; at most
    /// [`MAX_RANGES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<[u16; 2]>,
}

impl Seen {
    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.functions.is_empty() && self.ranges.is_empty()
    }

    /// Why the lists are not what [`Tally`] makes (ascending, apart, bounded), if they are not:
    /// the field and what was expected.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !ascending_once(&self.units) {
            return Err((
                "seen.units",
                "unit ids in ascending order, each once".into(),
            ));
        }
        if !ascending_once(&self.functions) {
            return Err((
                "seen.functions",
                "function codes in ascending order, each once".into(),
            ));
        }
        check_ranges(&self.ranges).map_err(|expected| ("seen.ranges", expected))
    }
}

/// Whether `list` is in ascending order with each item once.
pub fn ascending_once(list: &[u8]) -> bool {
    list.windows(2).all(|w| w[0] < w[1])
}

/// Why `ranges` are not what [`Ranges`] makes (at most [`MAX_RANGES`], each `[first, last]`
/// with first <= last, ascending and apart), if they are not: what was expected.
pub fn check_ranges(ranges: &[[u16; 2]]) -> Result<(), String> {
    if ranges.len() > MAX_RANGES {
        return Err(format!("at most {MAX_RANGES} ranges"));
    }
    if !ranges.iter().all(|[a, b]| a <= b)
        || !ranges
            .windows(2)
            .all(|w| u32::from(w[0][1]) + 1 < u32::from(w[1][0]))
    {
        return Err("[first, last] ranges, first <= last, ascending and apart".into());
    }
    Ok(())
}

/// Address ranges gathered in bounded memory: ranges that overlap or touch merge, and past
/// [`MAX_RANGES`] the two closest merge (the cover grows least; a listed range may then cover
/// addresses between two that were seen, never fewer than were seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u16, u16)>);

impl Ranges {
    /// Adds the addresses `first` to `last`; false when they were listed already.
    pub fn add(&mut self, first: u16, last: u16) -> bool {
        let (first, last) = (first.min(last), first.max(last));
        // A poll reads what it read before: nothing to do, nothing allocated.
        if self.0.iter().any(|&(a, b)| a <= first && last <= b) {
            return false;
        }
        // Merged with what overlaps or touches, as a policy's ranges are.
        let mut ranges = self.0.clone();
        ranges.push((first, last));
        self.0 = RangeSet::from_ranges(ranges).ranges().to_vec();
        while self.0.len() > MAX_RANGES {
            let closest = (1..self.0.len())
                .min_by_key(|&i| self.0[i].0 - self.0[i - 1].1)
                .unwrap_or(1);
            let right = self.0.remove(closest);
            self.0[closest - 1].1 = right.1;
        }
        true
    }

    /// Adds `quantity` items from `address` (at least one; cut at the last address); false
    /// when they were listed already.
    pub fn add_items(&mut self, address: u16, quantity: u16) -> bool {
        self.add(address, address.saturating_add(quantity.max(1) - 1))
    }

    /// The ranges, `[first, last]`, ascending and apart.
    pub fn list(&self) -> Vec<[u16; 2]> {
        self.0.iter().map(|&(a, b)| [a, b]).collect()
    }

    /// Whether no address was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes `numbers` (ascending) as runs: `1-3, 7`.
fn runs(f: &mut std::fmt::Formatter<'_>, numbers: &[u8]) -> std::fmt::Result {
    let mut i = 0;
    while let Some(&first) = numbers.get(i) {
        let mut last = first;
        while numbers.get(i + 1) == Some(&last.wrapping_add(1)) && last < u8::MAX {
            last += 1;
            i += 1;
        }
        if first != numbers[0] {
            f.write_str(", ")?;
        }
        if first == last {
            write!(f, "{first}")?;
        } else {
            write!(f, "{first}-{last}")?;
        }
        i += 1;
    }
    Ok(())
}

/// One line for exports and logs: `units 2-247; functions 3; addresses 10-11, 300`.
impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = 0;
        let mut part = |f: &mut std::fmt::Formatter<'_>, name: &str| {
            let sep = if parts > 0 { "; " } else { "" };
            parts += 1;
            write!(f, "{sep}{name} ")
        };
        if !self.units.is_empty() {
            part(f, "units")?;
            runs(f, &self.units)?;
        }
        if !self.functions.is_empty() {
            part(f, "functions")?;
            runs(f, &self.functions)?;
        }
        if !self.ranges.is_empty() {
            part(f, "addresses")?;
            for (i, [first, last]) in self.ranges.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                if first == last {
                    write!(f, "{sep}{first}")?;
                } else {
                    write!(f, "{sep}{first}-{last}")?;
                }
            }
        }
        Ok(())
    }
}

/// Gathers what occurrences used, in bounded memory (two 256-bit sets and at most
/// [`MAX_RANGES`] + 1 ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    units: Bits,
    functions: Bits,
    ranges: Ranges,
}

/// A set of bytes (unit ids or function codes) in 256 bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bits([u64; 4]);

impl Bits {
    /// Adds `n`; true when it was new.
    pub fn insert(&mut self, n: u8) -> bool {
        let (word, bit) = (usize::from(n / 64), 1u64 << (n % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    /// The members, ascending.
    pub fn members(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|n| self.0[usize::from(n / 64)] & (1 << (n % 64)) != 0)
            .collect()
    }
}

impl Tally {
    /// Adds one occurrence: its unit, function and the `quantity` items from `address`.
    pub fn add(
        &mut self,
        unit: Option<u8>,
        function: Option<u8>,
        address: Option<u16>,
        quantity: Option<u16>,
    ) {
        if let Some(u) = unit {
            self.units.insert(u);
        }
        if let Some(f) = function {
            self.functions.insert(f);
        }
        if let Some(first) = address {
            self.ranges.add_items(first, quantity.unwrap_or(1));
        }
    }

    /// What was gathered.
    pub fn seen(&self) -> Seen {
        Seen {
            units: self.units.members(),
            functions: self.functions.members(),
            ranges: self.ranges.list(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_functions_come_out_ascending_and_once() {
        let mut t = Tally::default();
        for u in [9, 1, 255, 1, 0] {
            t.add(Some(u), Some(3), None, None);
        }
        t.add(None, Some(16), None, None);
        let seen = t.seen();
        assert_eq!(seen.units, [0, 1, 9, 255]);
        assert_eq!(seen.functions, [3, 16]);
        assert!(seen.check().is_ok());
    }

    #[test]
    fn touching_and_overlapping_ranges_merge() {
        let mut t = Tally::default();
        t.add(None, None, Some(10), Some(5)); // 10-14
        t.add(None, None, Some(15), Some(1)); // 15
        t.add(None, None, Some(0), Some(3)); // 0-2
        t.add(None, None, Some(12), Some(10)); // 12-21
        t.add(None, None, Some(65535), Some(10)); // saturates
        assert_eq!(t.seen().ranges, [[0, 2], [10, 21], [65535, 65535]]);
        assert!(t.seen().check().is_ok());
    }

    #[test]
    fn past_the_bound_the_closest_ranges_merge_and_every_address_stays_covered() {
        let mut t = Tally::default();
        let firsts: Vec<u16> = (0..100).map(|i| i * 100 + (i % 7)).collect();
        for &a in &firsts {
            t.add(None, None, Some(a), Some(2));
        }
        let seen = t.seen();
        assert_eq!(seen.ranges.len(), MAX_RANGES);
        assert!(seen.check().is_ok());
        for a in firsts {
            assert!(
                seen.ranges.iter().any(|[f, l]| *f <= a && a < *l),
                "{a} not covered"
            );
        }
    }

    #[test]
    fn one_line_gives_runs_of_units_and_functions_and_the_ranges() {
        let seen = Seen {
            units: vec![1, 2, 3, 7, 254, 255],
            functions: vec![3],
            ranges: vec![[10, 11], [300, 300]],
        };
        assert_eq!(
            seen.to_string(),
            "units 1-3, 7, 254-255; functions 3; addresses 10-11, 300"
        );
        assert_eq!(Seen::default().to_string(), "");
    }

    #[test]
    fn a_hostile_list_is_refused_naming_the_field() {
        let unsorted = Seen {
            units: vec![3, 1],
            ..Seen::default()
        };
        assert_eq!(unsorted.check().unwrap_err().0, "seen.units");
        let too_many = Seen {
            ranges: (0..17).map(|i| [i * 10, i * 10]).collect(),
            ..Seen::default()
        };
        assert_eq!(too_many.check().unwrap_err().0, "seen.ranges");
        let backwards = Seen {
            ranges: vec![[5, 1]],
            ..Seen::default()
        };
        assert_eq!(backwards.check().unwrap_err().0, "seen.ranges");
    }
}
