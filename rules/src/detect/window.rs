//! Counting over time windows that open with their first occurrence.

use std::time::Duration;

use smallvec::SmallVec;

use crate::time::Timestamp;

/// Distinct items seen in a window that starts with the first item. Thresholds are small, so
/// a vector beats a hash set; and since masters poll the same items in the same order, the
/// item after the last one found is checked first. The first few items are kept inline, so a
/// pair's windows sit in its own state rather than in allocations of their own.
#[derive(Debug, Default)]
pub(super) struct Distinct {
    start: Timestamp,
    items: SmallVec<[u32; 4]>,
    /// Where the next item is expected.
    next: u32,
    fired: bool,
}

impl Distinct {
    /// Adds an item; true the first time the window holds `threshold` distinct items.
    pub fn add(&mut self, ts: Timestamp, window: Duration, item: u32, threshold: u32) -> bool {
        if ts.passed(self.start, window) || self.items.is_empty() {
            self.start = ts;
            self.items.clear();
            self.next = 0;
            self.fired = false;
        }
        let next = self.next as usize;
        let found = if self.items.get(next) == Some(&item) {
            Some(next)
        } else {
            self.items.iter().position(|&i| i == item)
        };
        match found {
            Some(i) => self.next = u32::try_from((i + 1) % self.items.len()).unwrap_or(0),
            None if self.items.len() < threshold as usize => {
                self.items.push(item);
                self.next = 0;
            }
            None => {}
        }
        if !self.fired && self.items.len() >= threshold as usize {
            self.fired = true;
            return true;
        }
        false
    }
}

/// Occurrences in a window that starts with the first.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counter {
    start: Timestamp,
    count: u32,
}

impl Counter {
    /// Counts one; true when the window reaches `threshold` (again).
    pub fn add(&mut self, ts: Timestamp, window: Duration, threshold: u32) -> bool {
        if ts.passed(self.start, window) || self.count == 0 {
            self.start = ts;
            self.count = 0;
        }
        self.count += 1;
        self.count >= threshold && self.count.is_multiple_of(threshold)
    }
}

#[cfg(test)]
mod tests;
