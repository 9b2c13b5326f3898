//! Thresholds and folding: repeats of one (rule, source, destination, unit) inside a window
//! become one alert with a count. Rules whose unit, function and addresses are detail rather
//! than identity ([`FoldKey::Target`]: an unknown master, unauthorized commands, scans) fold
//! per (rule, master, target) instead, and each alert lists what its occurrences used
//! ([`crate::alert::Seen`]).
//!
//! The first occurrence that reaches the rule's threshold is raised at once (an operator should
//! not wait for a window to close to hear about a stop command). Further occurrences in the same
//! window are folded; when the window closes, one more alert carries how many were folded. A
//! 3,000-request flood inside one window is therefore two alerts, not 3,000.
//!
//! Invariants: at most [`Fold::MAX_KEYS`] keys are tracked (the oldest windows are closed first
//! when full); every finding counts in exactly one alert or in a window that never reached its
//! threshold.

use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::{Finding, RuleKey};
use crate::alert::seen::Tally;
use crate::alert::{Alert, FoldKey};
use crate::time::Timestamp;

type Key = (RuleKey, IpAddr, IpAddr, Option<u8>);

#[derive(Debug, Clone)]
struct Window {
    start: Timestamp,
    end: Timestamp,
    /// Occurrences in this window.
    count: u64,
    /// Whether the threshold was reached and the first alert raised.
    fired: bool,
    /// Occurrences after the first alert, and the latest of them.
    folded: u64,
    folded_first: Timestamp,
    latest: Option<Finding>,
    /// For a rule folded per target: what the occurrences not yet in an alert used.
    tally: Option<Tally>,
}

impl Window {
    fn new(ts: Timestamp, window: Duration, by: FoldKey) -> Self {
        Self {
            start: ts,
            end: ts.saturating_add(window),
            count: 0,
            fired: false,
            folded: 0,
            folded_first: ts,
            latest: None,
            tally: (by == FoldKey::Target).then(Tally::default),
        }
    }

    /// What the occurrences since the last alert used, and a fresh tally for the next.
    fn take_seen(&mut self) -> Option<crate::alert::Seen> {
        self.tally.as_mut().map(|t| std::mem::take(t).seen())
    }
}

/// The threshold-and-fold state for all keys.
#[derive(Debug, Default)]
pub(super) struct Fold {
    windows: FxHashMap<Key, Window>,
}

impl Fold {
    /// Most keys tracked at once.
    pub const MAX_KEYS: usize = 65_536;

    /// Counts a finding in its window (per unit or per target, `by`); raises an alert when
    /// it reaches the threshold of a fresh window.
    pub fn add(
        &mut self,
        finding: Finding,
        window: Duration,
        threshold: u32,
        by: FoldKey,
        agent: &str,
        out: &mut impl FnMut(Alert),
    ) {
        let unit = match by {
            FoldKey::Unit => finding.unit_id,
            FoldKey::Target => None,
        };
        let key = (
            finding.rule.clone(),
            finding.src.ip(),
            finding.dst.ip(),
            unit,
        );
        let ts = finding.ts;
        if !self.windows.contains_key(&key) && self.windows.len() >= Self::MAX_KEYS {
            self.make_room(agent, out);
        }
        let w = self
            .windows
            .entry(key)
            .or_insert_with(|| Window::new(ts, window, by));
        if ts >= w.end {
            close(w, agent, out);
            *w = Window::new(ts, window, by);
        }
        w.count += 1;
        if let Some(tally) = &mut w.tally {
            tally.add(
                finding.unit_id,
                finding.function.map(|f| f.code()),
                finding.address,
                finding.quantity,
            );
            for unit in &finding.counted.units {
                tally.add(Some(*unit), None, None, None);
            }
            for (address, quantity) in &finding.counted.ranges {
                tally.add(None, None, Some(*address), Some(*quantity));
            }
        }
        if !w.fired {
            if w.count >= u64::from(threshold.max(1)) {
                w.fired = true;
                let seen = w.take_seen();
                out(finding.into_alert(agent, w.count, w.start, 0, seen));
            }
        } else {
            if w.folded == 0 {
                w.folded_first = ts;
            }
            w.folded += 1;
            w.latest = Some(finding);
        }
    }

    /// Closes windows that ended before `now`, raising the alerts for what they folded.
    pub fn flush(&mut self, now: Timestamp, agent: &str, out: &mut impl FnMut(Alert)) {
        self.windows.retain(|_, w| {
            if w.end <= now {
                close(w, agent, out);
                false
            } else {
                true
            }
        });
    }

    /// Closes every window (end of capture or shutdown).
    pub fn finish(&mut self, agent: &str, out: &mut impl FnMut(Alert)) {
        for (_, mut w) in self.windows.drain() {
            close(&mut w, agent, out);
        }
    }

    /// Closes the half of the windows that end soonest.
    fn make_room(&mut self, agent: &str, out: &mut impl FnMut(Alert)) {
        let mut ends: Vec<Timestamp> = self.windows.values().map(|w| w.end).collect();
        ends.sort_unstable();
        let Some(&cut) = ends.get(ends.len() / 2) else {
            return;
        };
        self.flush(cut.saturating_add(Duration::from_nanos(1)), agent, out);
    }
}

fn close(w: &mut Window, agent: &str, out: &mut impl FnMut(Alert)) {
    if w.fired
        && w.folded > 0
        && let Some(latest) = w.latest.take()
    {
        let seen = w.take_seen();
        out(latest.into_alert(agent, w.folded, w.folded_first, 1, seen));
    }
}
