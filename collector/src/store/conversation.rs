//! Modbus conversations as the collector keeps them, for the network map and asset pages: one
//! record per (master, slave), merged from every agent's window reports.
//!
//! - Unit ids, function codes and address ranges are united (ranges bounded as agents bound
//!   them, so a merged range may cover addresses between two seen, never fewer).
//! - Each agent's latest window is kept apart (at most [`MAX_REPORTERS`] agents): the record's
//!   request rate is that of the newest window, its request count the highest any one agent
//!   counted. Agents on one segment see the same requests; adding their counts would count
//!   each request once per agent. The window an agent sent last, sent again (a retried
//!   batch), adds nothing to the counts.
//! - At most [`MAX_CONVERSATIONS`] are stored, at most [`MAX_PER_AGENT`] first reported by
//!   any one agent: reports of further pairs are counted, not kept, so a hostile agent
//!   inventing pairs grows neither the store nor the map without bound. Retention with an age
//!   limit removes conversations quiet for longer than it.

use std::net::IpAddr;

use otwatch_rules::alert::seen::{Bits, Ranges};
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::{ConversationObservation, TableRanges};
use serde::{Deserialize, Serialize};

/// Most agents one conversation keeps windows of.
pub const MAX_REPORTERS: usize = 16;

/// Most conversations stored.
pub const MAX_CONVERSATIONS: u64 = 100_000;

/// Most conversations one agent may be first to report: a compromised agent inventing pairs
/// fills its own share, not the map.
pub const MAX_PER_AGENT: u64 = 10_000;

/// A conversation as merged from every agent's reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// The master.
    pub master: IpAddr,
    /// The slave.
    pub slave: IpAddr,
    /// The start of the first window any agent reported.
    pub first_seen: Timestamp,
    /// The end of the newest window with requests.
    pub last_seen: Timestamp,
    /// Requests counted, the highest any one agent counted.
    pub requests: u64,
    /// Exception responses counted, likewise.
    pub exceptions: u64,
    /// Requests per second in the newest window.
    pub rate: f64,
    /// The end of that window.
    pub rate_until: Timestamp,
    /// Unit ids addressed, ascending.
    pub units: Vec<u8>,
    /// Function codes used, ascending.
    pub functions: Vec<u8>,
    /// Addresses read.
    pub reads: TableRanges,
    /// Addresses written.
    pub writes: TableRanges,
    /// Each reporting agent's totals and newest window.
    pub agents: Vec<AgentWindow>,
}

/// What one agent counted of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentWindow {
    /// The agent.
    pub agent: String,
    /// Requests it counted in all.
    pub requests: u64,
    /// Exception responses it counted in all.
    pub exceptions: u64,
    /// The start of the window it sent last.
    pub since: Timestamp,
    /// The end of the window it sent last.
    pub until: Timestamp,
}

/// Requests per second in a window (a window shorter than a second counts as one second).
fn rate_of(o: &ConversationObservation) -> f64 {
    let secs = o.until.since(o.since).as_secs_f64().max(1.0);
    o.requests as f64 / secs
}

/// The union of two lists of ascending bytes.
fn union_codes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut bits = Bits::default();
    for &n in a.iter().chain(b) {
        bits.insert(n);
    }
    bits.members()
}

/// The union of two sets of table ranges, bounded.
fn union_ranges(a: &TableRanges, b: &TableRanges) -> TableRanges {
    let mut out = a.clone();
    for (mine, (_, theirs)) in out.tables_mut().into_iter().zip(b.tables()) {
        let mut merged = Ranges::default();
        for &[first, last] in mine.iter().chain(theirs) {
            merged.add(first, last);
        }
        *mine = merged.list();
    }
    out
}

impl ConversationRecord {
    /// A conversation first reported by `agent`.
    pub fn new(agent: &str, o: &ConversationObservation) -> Self {
        let mut record = Self {
            master: o.master,
            slave: o.slave,
            first_seen: o.since,
            last_seen: o.since,
            requests: 0,
            exceptions: 0,
            rate: 0.0,
            rate_until: o.since,
            units: Vec::new(),
            functions: Vec::new(),
            reads: TableRanges::default(),
            writes: TableRanges::default(),
            agents: Vec::new(),
        };
        record.observe(agent, o);
        record
    }

    /// Merges one more window from `agent`.
    pub fn observe(&mut self, agent: &str, o: &ConversationObservation) {
        self.first_seen = self.first_seen.min(o.since);
        if o.requests > 0 {
            self.last_seen = self.last_seen.max(o.until);
        }
        if o.until >= self.rate_until {
            self.rate = rate_of(o);
            self.rate_until = o.until;
        }
        self.units = union_codes(&self.units, &o.units);
        self.functions = union_codes(&self.functions, &o.functions);
        self.reads = union_ranges(&self.reads, &o.reads);
        self.writes = union_ranges(&self.writes, &o.writes);
        let at = match self.agents.iter().position(|w| w.agent == agent) {
            // The window this agent sent last, again (a retried batch): counted once.
            Some(at)
                if self
                    .agents
                    .get(at)
                    .is_some_and(|w| (w.since, w.until) == (o.since, o.until)) =>
            {
                return;
            }
            Some(at) => at,
            None if self.agents.len() < MAX_REPORTERS => {
                self.agents.push(AgentWindow {
                    agent: agent.to_string(),
                    requests: 0,
                    exceptions: 0,
                    since: o.since,
                    until: o.until,
                });
                self.agents.len() - 1
            }
            // A conversation seen by more agents than that: the rest still shape the lists
            // and the rate, not the totals.
            None => return,
        };
        let Some(window) = self.agents.get_mut(at) else {
            return;
        };
        window.requests = window.requests.saturating_add(o.requests);
        window.exceptions = window.exceptions.saturating_add(o.exceptions);
        window.since = o.since;
        window.until = o.until;
        self.requests = self.agents.iter().map(|w| w.requests).max().unwrap_or(0);
        self.exceptions = self.agents.iter().map(|w| w.exceptions).max().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(since: u64, until: u64, requests: u64) -> ConversationObservation {
        ConversationObservation {
            master: "10.0.0.9".parse().unwrap(),
            slave: "10.0.1.5".parse().unwrap(),
            since: Timestamp::from_secs(since),
            until: Timestamp::from_secs(until),
            requests,
            exceptions: 0,
            units: vec![1],
            functions: vec![3],
            reads: TableRanges {
                holding_registers: vec![[10, 13]],
                ..TableRanges::default()
            },
            writes: TableRanges::default(),
        }
    }

    #[test]
    fn two_agents_on_one_segment_do_not_double_the_count_and_the_newest_window_sets_the_rate() {
        let mut r = ConversationRecord::new("a1", &window(100, 110, 50));
        r.observe("a2", &window(100, 110, 50));
        r.observe("a1", &window(110, 120, 20));
        assert_eq!(
            r.requests, 70,
            "a1 counted 70, a2 50: the busiest agent's count"
        );
        assert_eq!(r.rate, 2.0);
        assert_eq!(
            (r.first_seen, r.last_seen),
            (Timestamp::from_secs(100), Timestamp::from_secs(120))
        );
        // An older window arriving late does not set the rate back.
        r.observe("a2", &window(105, 106, 500));
        assert_eq!(r.rate, 2.0);
        assert_eq!(r.agents.len(), 2);
    }

    #[test]
    fn a_retried_window_is_counted_once() {
        let mut r = ConversationRecord::new("a1", &window(100, 110, 50));
        r.observe("a1", &window(100, 110, 50));
        assert_eq!(r.requests, 50);
        r.observe("a1", &window(110, 120, 10));
        r.observe("a1", &window(110, 120, 10));
        assert_eq!(r.requests, 60);
    }

    #[test]
    fn lists_are_united_and_ranges_stay_bounded() {
        let mut r = ConversationRecord::new("a1", &window(100, 110, 5));
        let mut other = window(110, 120, 5);
        other.units = vec![2];
        other.functions = vec![6];
        other.writes.holding_registers = (0..40).map(|i| [i * 100, i * 100]).collect::<Vec<_>>();
        other.writes.holding_registers.truncate(16);
        r.observe("a1", &other);
        assert_eq!(r.units, [1, 2]);
        assert_eq!(r.functions, [3, 6]);
        assert_eq!(r.reads.holding_registers, [[10, 13]]);
        assert_eq!(r.writes.holding_registers.len(), 16);
        let mut more = window(120, 130, 5);
        more.writes.holding_registers = vec![[5_000, 5_000], [6_000, 6_000]];
        r.observe("a1", &more);
        assert!(r.writes.holding_registers.len() <= otwatch_rules::alert::seen::MAX_RANGES);
        assert!(otwatch_rules::alert::seen::check_ranges(&r.writes.holding_registers).is_ok());
    }
}
