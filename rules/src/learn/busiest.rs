//! The busiest second of a stream of events in capture time: what `learn` writes as a rate
//! (requests per master and unit, connections per master and server).

use crate::time::Timestamp;

/// Events in the current second and in the busiest second so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BusiestSecond {
    second: u64,
    now: u32,
    peak: u32,
}

impl BusiestSecond {
    /// One event at `ts`.
    pub(super) fn add(&mut self, ts: Timestamp) {
        let second = ts.as_nanos() / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.now = 0;
        }
        self.now += 1;
        self.peak = self.peak.max(self.now);
    }

    /// Events in the busiest second.
    pub(super) fn peak(&self) -> u32 {
        self.peak
    }

    /// Takes in another worker's count of the same events (the busier of the two seconds:
    /// a host pair stays on one worker).
    pub(super) fn merge(&mut self, other: &BusiestSecond) {
        self.peak = self.peak.max(other.peak);
    }
}
