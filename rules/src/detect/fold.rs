//! Thresholds and folding: repeats of one (rule, source, destination, unit) inside a window
//! become one alert with a count.
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
use crate::alert::Alert;
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
}

/// The threshold-and-fold state for all keys.
#[derive(Debug, Default)]
pub(super) struct Fold {
    windows: FxHashMap<Key, Window>,
}

impl Fold {
    /// Most keys tracked at once.
    pub const MAX_KEYS: usize = 65_536;

    /// Counts a finding; raises an alert when it reaches the threshold of a fresh window.
    pub fn add(
        &mut self,
        finding: Finding,
        window: Duration,
        threshold: u32,
        agent: &str,
        out: &mut impl FnMut(Alert),
    ) {
        let key = (
            finding.rule.clone(),
            finding.src.ip(),
            finding.dst.ip(),
            finding.unit_id,
        );
        let ts = finding.ts;
        if !self.windows.contains_key(&key) && self.windows.len() >= Self::MAX_KEYS {
            self.make_room(agent, out);
        }
        let w = self.windows.entry(key).or_insert_with(|| Window {
            start: ts,
            end: ts.saturating_add(window),
            count: 0,
            fired: false,
            folded: 0,
            folded_first: ts,
            latest: None,
        });
        if ts >= w.end {
            close(w, agent, out);
            *w = Window {
                start: ts,
                end: ts.saturating_add(window),
                count: 0,
                fired: false,
                folded: 0,
                folded_first: ts,
                latest: None,
            };
        }
        w.count += 1;
        if !w.fired {
            if w.count >= u64::from(threshold.max(1)) {
                w.fired = true;
                out(finding.into_alert(agent, w.count, w.start, 0));
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
        out(latest.into_alert(agent, w.folded, w.folded_first, 1));
    }
}
