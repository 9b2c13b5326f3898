//! The validated building blocks of policy rules: address sets, unit sets, function sets,
//! address ranges, value bounds, rate limits and time windows. Each one exists only in a valid
//! form; parsing them is where the policy's errors come from.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use smallvec::SmallVec;

use crate::modbus::{FunctionClass, FunctionCode, Request, Table};
use crate::time::Timestamp;

/// A set of hosts: networks, or everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSet {
    /// Any host.
    Any,
    /// Hosts inside any of these networks.
    Nets(Vec<IpNet>),
}

impl AddrSet {
    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Nets(nets) => nets.iter().any(|n| n.contains(&addr)),
        }
    }

    /// Whether every host of `other` is in `self`.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (Self::Nets(_), Self::Any) => false,
            (Self::Nets(mine), Self::Nets(theirs)) => {
                theirs.iter().all(|t| mine.iter().any(|m| m.contains(t)))
            }
        }
    }

    /// Whether the set holds no host.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Nets(n) if n.is_empty())
    }
}

/// A set of unit ids (256 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitSet([u64; 4]);

impl UnitSet {
    /// Every unit.
    pub const ALL: Self = Self([u64::MAX; 4]);
    /// No unit.
    pub const NONE: Self = Self([0; 4]);

    /// Adds a unit.
    pub fn insert(&mut self, unit: u8) {
        if let Some(word) = self.0.get_mut(usize::from(unit / 64)) {
            *word |= 1 << (unit % 64);
        }
    }

    /// Whether `unit` is in the set.
    pub fn contains(&self, unit: u8) -> bool {
        self.0
            .get(usize::from(unit / 64))
            .is_some_and(|w| w >> (unit % 64) & 1 == 1)
    }

    /// Whether every unit of `other` is in `self`.
    pub fn covers(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0).all(|(m, o)| o & !m == 0)
    }

    /// Whether the two sets share a unit.
    pub fn intersects(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0).any(|(m, o)| m & o != 0)
    }

    /// The units in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|u| self.contains(*u))
    }
}

/// A set of functions, optionally narrowed to sub-functions for Diagnostics (8) and MEI (43).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSet {
    /// Whole function codes allowed (bit per code 0-127).
    codes: u128,
    /// `(function, sub-function)` pairs allowed where the whole code is not.
    subs: Vec<(u8, u16)>,
}

impl FunctionSet {
    /// The empty set.
    pub fn new() -> Self {
        Self {
            codes: 0,
            subs: Vec::new(),
        }
    }

    /// Adds every code of a class.
    pub fn add_class(&mut self, class: FunctionClass) {
        for code in 1..=127u8 {
            if let Ok(f) = FunctionCode::new(code) {
                let matches = f.class() == class
                    || (code == 43
                        && matches!(class, FunctionClass::Identification | FunctionClass::Other));
                if matches {
                    self.subs_or_code(code, class);
                }
            }
        }
    }

    fn subs_or_code(&mut self, code: u8, class: FunctionClass) {
        // Function 43 belongs to two classes through its MEI type.
        if code == 43 {
            let mei = if class == FunctionClass::Identification {
                14
            } else {
                13
            };
            self.add_sub(43, mei);
        } else {
            self.add_code(code);
        }
    }

    /// Adds a whole function code.
    pub fn add_code(&mut self, code: u8) {
        if code < 128 {
            self.codes |= 1 << code;
        }
    }

    /// Adds one sub-function of function 8 or one MEI type of function 43.
    pub fn add_sub(&mut self, code: u8, sub: u16) {
        if !self.subs.contains(&(code, sub)) {
            self.subs.push((code, sub));
        }
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.codes == 0 && self.subs.is_empty()
    }

    /// Whether the request's function (and sub-function) is in the set.
    pub fn allows(&self, request: &Request<'_>) -> bool {
        let code = request.function().code();
        if self.codes >> code & 1 == 1 {
            return true;
        }
        request
            .sub_function()
            .is_some_and(|sub| self.subs.contains(&(code, sub)))
    }

    /// Whether every function of `other` is in `self`.
    pub fn covers(&self, other: &Self) -> bool {
        other.codes & !self.codes == 0
            && other
                .subs
                .iter()
                .all(|(c, s)| self.codes >> c & 1 == 1 || self.subs.contains(&(*c, *s)))
    }

    /// Whether any function in the set reads or writes a data table.
    pub fn touches_tables(&self) -> bool {
        [1u8, 2, 3, 4, 5, 6, 15, 16, 22, 23, 24]
            .iter()
            .any(|c| self.codes >> c & 1 == 1)
    }

    /// The whole codes in the set, ascending.
    pub fn codes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..128u8).filter(|c| self.codes >> c & 1 == 1)
    }

    /// The sub-function pairs in the set.
    pub fn subs(&self) -> &[(u8, u16)] {
        &self.subs
    }
}

impl Default for FunctionSet {
    fn default() -> Self {
        Self::new()
    }
}

/// Sorted, merged inclusive address ranges of one table (a few, usually: kept inline in the
/// rule, next to the rest of what a request is checked against).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeSet(SmallVec<[(u16, u16); 4]>);

impl RangeSet {
    /// Builds a set from inclusive ranges, merging overlaps and neighbours.
    pub fn from_ranges(mut ranges: Vec<(u16, u16)>) -> Self {
        ranges.sort_unstable();
        let mut merged: SmallVec<[(u16, u16); 4]> = SmallVec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(start) <= u32::from(last.1) + 1 => {
                    last.1 = last.1.max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        Self(merged)
    }

    /// Whether `[address, address + quantity)` lies inside one range.
    pub fn covers_span(&self, address: u16, quantity: u16) -> bool {
        if quantity == 0 {
            return true;
        }
        let last = u32::from(address) + u32::from(quantity) - 1;
        self.holds(address, last)
    }

    /// Whether one range holds `first..=last`. Ranges are sorted and merged, so only the last
    /// one starting at or before `first` can; a binary search finds it without a data-dependent
    /// loop exit.
    fn holds(&self, first: u16, last: u32) -> bool {
        let i = self.0.partition_point(|&(s, _)| s <= first);
        i.checked_sub(1)
            .and_then(|i| self.0.get(i))
            .is_some_and(|&(_, e)| last <= u32::from(e))
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Self) -> bool {
        other.0.iter().all(|&(s, e)| self.holds(s, u32::from(e)))
    }

    /// The merged ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// Whether no address is covered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges in words, `start-end` each, in `quote`s, joined by commas (policy text,
    /// comments, warnings).
    pub fn list(&self, quote: &str) -> String {
        self.0
            .iter()
            .map(|(a, b)| format!("{quote}{a}-{b}{quote}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Process limits on register values read back: bounds per register range (a level, a
/// temperature, a pump speed each in its own), and one bound for the registers no range names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadBounds {
    /// Bounds of the registers in a range of a table, in the file's order: the first that
    /// covers a register is its bound.
    pub ranges: Vec<(Table, RangeSet, Bounds)>,
    /// The bound of every other register read; none: they are not bounded.
    pub rest: Option<Bounds>,
    /// `ranges` resolved, first wins, into disjoint intervals per register table (holding,
    /// input), by first address: a register's bound is one ordered lookup, however many
    /// ranges a learned policy lists.
    index: [BTreeMap<u16, (u16, Bounds)>; 2],
}

impl ReadBounds {
    /// Bounds for `ranges` (the first that covers a register wins) and for the rest.
    pub fn new(ranges: Vec<(Table, RangeSet, Bounds)>, rest: Option<Bounds>) -> Self {
        let mut index: [BTreeMap<u16, (u16, Bounds)>; 2] = Default::default();
        for (table, set, bounds) in &ranges {
            if let Some(map) = Self::slot(*table).and_then(|i| index.get_mut(i)) {
                for &(start, end) in set.ranges() {
                    insert_uncovered(map, (start, end), *bounds);
                }
            }
        }
        Self {
            ranges,
            rest,
            index,
        }
    }

    /// Where `table`'s intervals sit in the index: only registers carry values to bound.
    fn slot(table: Table) -> Option<usize> {
        match table {
            Table::HoldingRegisters => Some(0),
            Table::InputRegisters => Some(1),
            _ => None,
        }
    }

    /// The bound of register `address` of `table` (`None` for a value without an address,
    /// such as a FIFO queue's): the first range's that covers it, else the rest's.
    pub fn of(&self, register: Option<(Table, u16)>) -> Option<Bounds> {
        register
            .and_then(|(table, address)| {
                let map = self.index.get(Self::slot(table)?)?;
                map.range(..=address)
                    .next_back()
                    .filter(|(_, (end, _))| *end >= address)
                    .map(|(_, (_, bounds))| *bounds)
            })
            .or(self.rest)
    }
}

/// Adds the part of `start..=end` that no interval of `map` covers yet, with `bounds`.
fn insert_uncovered(
    map: &mut BTreeMap<u16, (u16, Bounds)>,
    (start, end): (u16, u16),
    bounds: Bounds,
) {
    // The intervals are disjoint and sorted, so their ends are too: those overlapping are the
    // last ones starting at or before `end` whose end reaches `start`.
    let mut overlapping: Vec<(u16, u16)> = map
        .range(..=end)
        .rev()
        .take_while(|(_, (e, _))| *e >= start)
        .map(|(s, (e, _))| (*s, *e))
        .collect();
    overlapping.reverse();
    let mut cursor = u32::from(start);
    for (s, e) in overlapping {
        if u32::from(s) > cursor {
            map.insert(cursor as u16, (s - 1, bounds));
        }
        cursor = cursor.max(u32::from(e) + 1);
    }
    if cursor <= u32::from(end) {
        map.insert(cursor as u16, (end, bounds));
    }
}

/// Inclusive bounds on 16-bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Smallest allowed value.
    pub min: u16,
    /// Largest allowed value.
    pub max: u16,
}

impl Bounds {
    /// Whether `value` is inside.
    pub fn contains(&self, value: u16) -> bool {
        self.min <= value && value <= self.max
    }

    /// Whether every value allowed by `other` is allowed by `self`.
    pub fn covers(&self, other: &Self) -> bool {
        self.min <= other.min && other.max <= self.max
    }
}

/// At most `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl Rate {
    /// Parses `"20/s"`, `"300/min"`, `"1000/h"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (count, unit) = text.trim().split_once('/')?;
        let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Self { count, period })
    }
}

/// A token bucket enforcing a [`Rate`] in capture time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Tokens, in units of 1/period-in-nanoseconds of a token: whole integers, so refilling
    /// is exact and costs no division. A `u128` kept as two halves, so the bucket needs no
    /// 16-byte alignment and a pair's buckets fit one cache line.
    scaled: [u64; 2],
    last: Timestamp,
}

impl RateState {
    /// A full bucket.
    pub fn new(rate: Rate, now: Timestamp) -> Self {
        let mut state = Self {
            scaled: [0; 2],
            last: now,
        };
        state.set_scaled(capacity(rate));
        state
    }

    /// Takes one token; false when the rate is exceeded. The bucket holds `count` tokens and
    /// refills `count` per `period`.
    pub fn take(&mut self, rate: Rate, now: Timestamp) -> bool {
        let elapsed = now.as_nanos().saturating_sub(self.last.as_nanos());
        self.last = self.last.max(now);
        let one = period_nanos(rate);
        // Every term is below 2^97 (nanoseconds and periods fit 64 bits, counts 32), so plain
        // arithmetic cannot overflow.
        let refill = u128::from(elapsed) * u128::from(rate.count);
        let scaled = (self.scaled() + refill).min(capacity(rate));
        let (scaled, allowed) = if scaled >= one {
            (scaled - one, true)
        } else {
            (scaled, false)
        };
        self.set_scaled(scaled);
        allowed
    }

    fn scaled(&self) -> u128 {
        u128::from(self.scaled[0]) << 64 | u128::from(self.scaled[1])
    }

    fn set_scaled(&mut self, scaled: u128) {
        self.scaled = [(scaled >> 64) as u64, scaled as u64];
    }
}

/// One token in [`RateState`]'s units: the period in nanoseconds (at least 1).
fn period_nanos(rate: Rate) -> u128 {
    let nanos = rate
        .period
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(rate.period.subsec_nanos()));
    u128::from(nanos.max(1))
}

/// A full bucket in [`RateState`]'s units.
fn capacity(rate: Rate) -> u128 {
    period_nanos(rate) * u128::from(rate.count)
}

/// Hours of the day (and optionally days of the week) when a rule applies, in plant time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Minutes after midnight the window opens.
    pub start: u16,
    /// Minutes after midnight the window closes (before `start` when it spans midnight).
    pub end: u16,
    /// Days allowed, bit 0 = Monday.
    pub days: u8,
}

impl TimeWindow {
    /// Every day of the week.
    pub const ALL_DAYS: u8 = 0x7F;

    /// Parses `"06:00-18:30"`.
    pub fn parse_hours(text: &str) -> Option<(u16, u16)> {
        let (start, end) = text.trim().split_once('-')?;
        Some((minutes(start)?, minutes(end)?))
    }

    /// Parses a day name (`mon`..`sun`) to its bit.
    pub fn day_bit(name: &str) -> Option<u8> {
        let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let i = days
            .iter()
            .position(|d| name.trim().to_ascii_lowercase().starts_with(d))?;
        Some(1 << i)
    }

    /// Whether `ts` (UTC) shifted by `utc_offset_minutes` falls inside the window.
    pub fn contains(&self, ts: Timestamp, utc_offset_minutes: i32) -> bool {
        let local = ts.as_nanos() as i128 / 1_000_000_000 + i128::from(utc_offset_minutes) * 60;
        let day_secs = local.rem_euclid(86_400);
        let minute = (day_secs / 60) as u16;
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = ((local.div_euclid(86_400) + 3).rem_euclid(7)) as u8;
        if self.days >> weekday & 1 == 0 {
            return false;
        }
        if self.start <= self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

/// Parses `"90s"`, `"5m"`, `"1h"`, `"250ms"` (humantime syntax).
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}
