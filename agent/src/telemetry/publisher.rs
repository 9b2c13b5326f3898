//! Publishes the pipeline's counters to the shared [`Status`] (read by heartbeats and
//! `/metrics`) at most four times a second, so the packet path never takes a lock per packet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::detection::AlertCounts;
use crate::detection::evidence::EvidenceCounts;
use crate::telemetry::events::{FlowsEvicted, InternalEvent, PacketsDropped, Throttle};
use crate::telemetry::status::{Datagrams, Snapshot, Status};
use otwatch_packet::flow_table::FlowTable;
use otwatch_packet::modbus_counters::ModbusCounters;
use otwatch_packet::pipeline::PacketCounters;

/// What the pipeline and its observers have counted, borrowed for one publication.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// Packet-level counters.
    pub packets: &'a PacketCounters,
    /// The flow table.
    pub flows: &'a FlowTable,
    /// Modbus counters.
    pub modbus: &'a ModbusCounters,
    /// Alerts raised.
    pub alerts: &'a AlertCounts,
    /// Times the capture's clock stepped back.
    pub clock_steps: u64,
    /// What became of evidence, when it is on.
    pub evidence: Option<EvidenceCounts>,
}

/// Counters from outside the pipeline: the capture and the policy reloader.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    /// The policy in force.
    pub policy_hash: Option<String>,
    /// Packets the kernel dropped.
    pub kernel_drops: u64,
    /// Packets dropped for a full pipeline queue.
    pub queue_drops: u64,
}

/// Publishes snapshots.
#[derive(Debug)]
pub struct Publisher {
    status: Arc<Status>,
    /// The worker this publisher speaks for, when several pipelines share the status.
    worker: Option<usize>,
    /// Counters from outside the pipeline, set by the caller.
    pub extra: Extra,
    last: Instant,
    last_packets: u64,
    /// Log lines for what the packet path lost, at most one per quiet time each.
    kernel_drops: Throttle,
    queue_drops: Throttle,
    evicted: Throttle,
}

/// Least time between publications.
const EVERY: Duration = Duration::from_millis(250);

impl Publisher {
    /// A publisher into `status`.
    pub fn new(status: Arc<Status>, policy_hash: Option<String>) -> Self {
        Self {
            status,
            worker: None,
            extra: Extra {
                policy_hash,
                ..Extra::default()
            },
            last: Instant::now(),
            last_packets: 0,
            kernel_drops: Throttle::default(),
            queue_drops: Throttle::default(),
            evicted: Throttle::default(),
        }
    }

    /// The status published into (internal events are emitted into it).
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Publishes only worker `index`'s part of the status (the status sums the workers).
    pub fn for_worker(mut self, index: usize) -> Self {
        self.worker = Some(index);
        self
    }

    /// Publishes if the last publication is old enough.
    pub fn tick(&mut self, view: View<'_>) {
        if self.last.elapsed() >= EVERY {
            self.publish(view);
        }
    }

    /// Publishes now.
    pub fn publish(&mut self, view: View<'_>) {
        let flows = view.flows.counters();
        let elapsed = self.last.elapsed().as_secs_f64().max(1e-9);
        let packets = view.packets.packets;
        let snapshot = Snapshot {
            packets,
            bytes: view.packets.bytes,
            kernel_drops: self.extra.kernel_drops,
            queue_drops: self.extra.queue_drops,
            truncated: view.packets.truncated,
            datagrams: Datagrams {
                reassembled: view.packets.reassembled,
                invalid: view.packets.fragments_invalid,
                expired: view.packets.fragments_expired,
            },
            clock_steps: view.clock_steps,
            evidence: view.evidence.unwrap_or_default(),
            flows_active: view.flows.len() as u64,
            flows_created: flows.created,
            flows_evicted: flows.evicted,
            requests: view.modbus.requests.clone(),
            decode_errors: view.modbus.decode_errors.clone(),
            alerts: view.alerts.by_rule_severity.clone(),
            policy_hash: self.extra.policy_hash.clone(),
            packets_per_s: packets.saturating_sub(self.last_packets) as f64 / elapsed,
        };
        match self.worker {
            Some(index) => self.status.publish_part(index, snapshot),
            None => self.status.publish(snapshot),
        }
        self.last = Instant::now();
        self.last_packets = packets;
        for (stage, total, throttle) in [
            ("kernel", self.extra.kernel_drops, &mut self.kernel_drops),
            ("queue", self.extra.queue_drops, &mut self.queue_drops),
        ] {
            if let Some(count) = throttle.due(total) {
                PacketsDropped { stage, count }.emit(&self.status);
            }
        }
        if let Some(count) = self.evicted.due(flows.evicted) {
            FlowsEvicted { count }.emit(&self.status);
        }
    }
}
