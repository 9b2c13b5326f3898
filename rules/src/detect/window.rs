//! Counting over time windows that open with their first occurrence.

use std::time::Duration;

use smallvec::SmallVec;

use crate::time::Timestamp;

/// Distinct items seen in a window that starts with the first item. Thresholds are small, so
/// a vector beats a hash set. The first few items are kept inline, and the window is 32 bytes,
/// so a pair's windows sit in its own state, each within one cache line, rather than in
/// allocations of their own.
///
/// The window fires when the item that brings it to the threshold is added, so at most once:
/// it never holds more items than the threshold. (A threshold lowered below the items already
/// held takes effect from the next window.)
#[derive(Debug, Default)]
pub(super) struct Distinct {
    start: Timestamp,
    items: SmallVec<[u32; 4]>,
}

impl Distinct {
    /// Adds an item; true the first time the window holds `threshold` distinct items.
    pub fn add(&mut self, ts: Timestamp, window: Duration, item: u32, threshold: u32) -> bool {
        if ts.passed(self.start, window) || self.items.is_empty() {
            self.start = ts;
            self.items.clear();
        }
        let threshold = threshold.max(1) as usize;
        if self.items.len() >= threshold || self.items.contains(&item) {
            return false;
        }
        self.items.push(item);
        self.items.len() == threshold
    }

    /// The distinct items the window holds.
    pub fn items(&self) -> &[u32] {
        &self.items
    }

    /// When the window that holds `item` ends, if one does: until then, adding `item` again
    /// changes nothing.
    pub fn holds_until(&self, item: u32, window: Duration) -> Option<Timestamp> {
        self.items
            .contains(&item)
            .then(|| self.start.saturating_add(window))
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
