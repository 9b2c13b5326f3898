//! Per-conversation figures an agent reports for the collector's network map and asset pages:
//! for each (master, slave) pair that speaks Modbus, the requests and exception responses of
//! each report window, and the unit ids, function codes and address ranges read and written so
//! far.
//!
//! Memory is bounded: at most [`MAX_CONVERSATIONS`] pairs are tracked (a scan from one master
//! to a whole subnet is counted beyond that, not kept, and pairs quiet for
//! [`FORGET_AFTER_WINDOWS`] windows are forgotten), each holding two 256-bit sets and at most
//! [`crate::alert::seen::MAX_RANGES`] ranges per table and direction.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::alert::seen::{Bits, Ranges};
use crate::flow::{FlowEvent, FlowInfo};
use crate::modbus::{Response, Table};
use crate::session::Event;
use crate::time::Timestamp;
use crate::validate;
use crate::wire::{ConversationObservation, TableRanges};

/// Most conversations tracked at once.
pub const MAX_CONVERSATIONS: usize = 16_384;

#[derive(Debug, Default)]
struct Conversation {
    /// Requests in the current window.
    requests: u64,
    /// Exception responses in the current window.
    exceptions: u64,
    units: Bits,
    functions: Bits,
    reads: [Ranges; 4],
    writes: [Ranges; 4],
    /// A list grew since the last report.
    changed: bool,
    /// The last report had requests: the next says if they stopped.
    was_active: bool,
    /// Windows in a row without a request.
    quiet_windows: u32,
}

/// Windows without a request after which a conversation is forgotten (an hour at the agent's
/// 10 s reports): a scan's one-off pairs leave room for the plant's own.
pub const FORGET_AFTER_WINDOWS: u32 = 360;

fn table_index(t: Table) -> usize {
    match t {
        Table::Coils => 0,
        Table::DiscreteInputs => 1,
        Table::HoldingRegisters => 2,
        Table::InputRegisters => 3,
    }
}

fn ranges_of(tables: &[Ranges; 4]) -> TableRanges {
    let mut out = TableRanges::default();
    for (list, ranges) in out.tables_mut().into_iter().zip(tables) {
        *list = ranges.list();
    }
    out
}

/// The conversations seen, and the current report window.
#[derive(Debug, Default)]
pub struct Conversations {
    pairs: HashMap<(IpAddr, IpAddr), Conversation>,
    /// When the current window began: the last report, or the first request before any.
    window_start: Option<Timestamp>,
    untracked: u64,
}

impl Conversations {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests not counted because the table was full when their pair was new.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Conversations tracked.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether none was seen yet.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn pair(&mut self, master: IpAddr, slave: IpAddr) -> Option<&mut Conversation> {
        if self.pairs.len() >= MAX_CONVERSATIONS && !self.pairs.contains_key(&(master, slave)) {
            self.untracked += 1;
            return None;
        }
        Some(self.pairs.entry((master, slave)).or_default())
    }

    /// Counts one flow event: a decoded request counts for its pair (client to server) with its
    /// unit, function and addresses; an exception response counts as one.
    pub fn observe(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        let FlowEvent::Session(event) = event else {
            return;
        };
        let (master, slave) = (flow.client.ip(), flow.server.ip());
        match event {
            Event::Request {
                unit_id, request, ..
            } => {
                self.window_start.get_or_insert(ts);
                let Some(c) = self.pair(master, slave) else {
                    return;
                };
                c.requests = c.requests.saturating_add(1);
                let mut fresh = c.units.insert(*unit_id);
                fresh |= c.functions.insert(request.function().code());
                for (range, tables) in [
                    (request.read_range(), &mut c.reads),
                    (request.write_range(), &mut c.writes),
                ] {
                    if let Some((table, address, quantity)) = range {
                        fresh |= tables[table_index(table)].add_items(address, quantity);
                    }
                }
                c.changed |= fresh;
            }
            Event::Transaction(t) if matches!(t.response, Some(Response::Exception { .. })) => {
                if let Some(c) = self.pairs.get_mut(&(master, slave)) {
                    c.exceptions = c.exceptions.saturating_add(1);
                }
            }
            _ => {}
        }
    }

    /// Forgets when the current window began (the capture's clock stepped back): the next
    /// window begins at the next request.
    pub fn restart(&mut self) {
        self.window_start = None;
    }

    /// Ends the report window at `until`: an observation for every conversation that had
    /// requests in it, touched something new, or had requests in the window before (so the
    /// collector learns it went quiet). Their window counts start again from zero.
    pub fn take_window(&mut self, until: Timestamp) -> Vec<ConversationObservation> {
        // Never longer than the collector takes (a clock that jumped ahead, a gap in a file).
        let since = self
            .window_start
            .take()
            .unwrap_or(until)
            .min(until)
            .max(until.saturating_sub(validate::MAX_WINDOW));
        for c in self.pairs.values_mut() {
            let quiet = c.requests == 0 && !c.changed && !c.was_active;
            c.quiet_windows = if quiet {
                c.quiet_windows.saturating_add(1)
            } else {
                0
            };
        }
        // Pairs quiet for long are forgotten: a scan's one-off pairs leave room.
        self.pairs
            .retain(|_, c| c.quiet_windows <= FORGET_AFTER_WINDOWS);
        let mut out: Vec<ConversationObservation> = self
            .pairs
            .iter_mut()
            .filter(|(_, c)| c.requests > 0 || c.changed || c.was_active)
            .map(|(&(master, slave), c)| {
                let o = ConversationObservation {
                    master,
                    slave,
                    since,
                    until,
                    requests: c.requests,
                    exceptions: c.exceptions,
                    units: c.units.members(),
                    functions: c.functions.members(),
                    reads: ranges_of(&c.reads),
                    writes: ranges_of(&c.writes),
                };
                c.was_active = c.requests > 0;
                c.requests = 0;
                c.exceptions = 0;
                c.changed = false;
                o
            })
            .collect();
        out.sort_by_key(|o| (o.master, o.slave));
        self.window_start = Some(until);
        out
    }
}

#[cfg(test)]
mod tests;
