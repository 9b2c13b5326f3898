//! Feeds the asset inventory and the conversation figures from the pipeline and queues them in
//! the outbox for the collector: 5 seconds after the first packet, then every 10 seconds of
//! capture time (the hosts that changed, the conversations of the window), and when the capture
//! ends.

use std::sync::Arc;
use std::time::Duration;

use otwatch_rules::conversations::Conversations;
use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::inventory::Inventory;
use otwatch_rules::policy::Policy;
use otwatch_rules::time::Timestamp;

use crate::delivery::outbox::{Outbox, Record};
use crate::telemetry::events::{InternalEvent, OutboxFailed};
use crate::telemetry::status::Status;
use otwatch_packet::pipeline::Observer;

/// How often changed hosts are queued, in capture time.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// When the first report is due after the first packet: soon, so a new agent's hosts show up
/// at the collector within seconds.
pub const FIRST_REPORT: Duration = Duration::from_secs(5);

/// The inventory, the conversations, and where their reports go.
#[derive(Debug)]
pub struct AssetReporter {
    inventory: Inventory,
    conversations: Conversations,
    /// The latest capture time seen, which ends the last window.
    now: Option<Timestamp>,
    outbox: Arc<Outbox>,
    status: Arc<Status>,
    policy: Option<Arc<Policy>>,
    last_report: Option<Timestamp>,
}

impl AssetReporter {
    /// A reporter queueing into `outbox`, naming hosts from `policy`.
    pub fn new(outbox: Arc<Outbox>, status: Arc<Status>, policy: Option<Arc<Policy>>) -> Self {
        Self {
            inventory: Inventory::new(),
            conversations: Conversations::new(),
            now: None,
            outbox,
            status,
            policy,
            last_report: None,
        }
    }

    /// Names hosts from `policy` from now on (after a reload).
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.policy = policy;
    }

    /// Hosts known.
    pub fn hosts(&self) -> usize {
        self.inventory.len()
    }

    fn report(&mut self) {
        let changed = self.inventory.take_changed(self.policy.as_deref());
        let window = match self.now {
            Some(now) => self.conversations.take_window(now),
            None => Vec::new(),
        };
        if changed.is_empty() && window.is_empty() {
            return;
        }
        let records: Vec<Record> = changed
            .into_iter()
            .map(Record::Asset)
            .chain(window.into_iter().map(Record::Conversation))
            .collect();
        if let Err(e) = self.outbox.push(&records) {
            OutboxFailed { error: &e }.emit(&self.status);
        }
    }
}

impl Observer for AssetReporter {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        self.inventory.observe(ts, flow, event);
        self.conversations.observe(ts, flow, event);
        self.tick(ts);
    }

    fn tick(&mut self, ts: Timestamp) {
        self.now = Some(self.now.map_or(ts, |n| n.max(ts)));
        match self.last_report {
            None => self.last_report = Some(ts.saturating_sub(REPORT_EVERY - FIRST_REPORT)),
            Some(last) if ts.since(last) >= REPORT_EVERY => {
                self.last_report = Some(ts);
                self.report();
            }
            Some(_) => {}
        }
    }

    fn finish(&mut self) {
        self.report();
    }

    fn clock_stepped(&mut self, before: Timestamp, _now: Timestamp) {
        // What was counted so far is reported up to the old clock; the next tick reports soon
        // and restarts the cadence (and the windows) from the new time.
        self.now = Some(before);
        self.report();
        self.now = None;
        self.conversations.restart();
        self.last_report = None;
    }
}
