//! Feeds the asset inventory from the pipeline and queues what changed in the outbox for the
//! collector: 5 seconds after the first packet, then every 10 seconds of capture time (only the
//! hosts that changed), and when the capture ends.

use std::sync::Arc;
use std::time::Duration;

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

/// The inventory and where its changes go.
#[derive(Debug)]
pub struct AssetReporter {
    inventory: Inventory,
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
        if changed.is_empty() {
            return;
        }
        let records: Vec<Record> = changed.into_iter().map(Record::Asset).collect();
        if let Err(e) = self.outbox.push(&records) {
            OutboxFailed { error: &e }.emit(&self.status);
        }
    }
}

impl Observer for AssetReporter {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        self.inventory.observe(ts, flow, event);
        self.tick(ts);
    }

    fn tick(&mut self, ts: Timestamp) {
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

    fn clock_stepped(&mut self, _before: Timestamp, _now: Timestamp) {
        // The next tick reports soon and restarts the cadence from the new time.
        self.last_report = None;
    }
}
