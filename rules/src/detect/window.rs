//! Counting over time windows that open with their first occurrence.

use std::time::Duration;

use crate::time::Timestamp;

/// Distinct items seen in a window that starts with the first item. Thresholds are small, so
/// a vector beats a hash set.
#[derive(Debug, Default)]
pub(super) struct Distinct {
    start: Timestamp,
    items: Vec<u32>,
    fired: bool,
}

impl Distinct {
    /// Adds an item; true the first time the window holds `threshold` distinct items.
    pub fn add(&mut self, ts: Timestamp, window: Duration, item: u32, threshold: u32) -> bool {
        if ts.since(self.start) >= window || self.items.is_empty() {
            self.start = ts;
            self.items.clear();
            self.fired = false;
        }
        if self.items.len() < threshold as usize && !self.items.contains(&item) {
            self.items.push(item);
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
        if ts.since(self.start) >= window || self.count == 0 {
            self.start = ts;
            self.count = 0;
        }
        self.count += 1;
        self.count >= threshold && self.count.is_multiple_of(threshold)
    }
}
