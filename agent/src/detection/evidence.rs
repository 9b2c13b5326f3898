//! The packets behind serious alerts: every frame of every flow goes through an
//! [`EvidenceBuffer`] (the last frames of each flow, bounded), and each alert at or above the
//! configured severity takes its flow's frames as a pcap, queued in the outbox's evidence lane
//! right after the alert.
//!
//! An alert is raised while its frame's events are handled, before the pipeline hands over the
//! frame itself ([`otwatch_packet::pipeline::Observer::frame`]): the pcap is made at that next
//! frame, of the flow's frames up to the alert's time, so it ends with the alert's own frame
//! and the flow's later frames can push nothing out. Alerts raised without a frame (a window
//! closing at a tick, a flow closing at the end) take theirs when the batch ends; one raised by
//! a frame of another window or flow (a folded alert whose window that frame closed) takes its
//! flow's frames up to its last occurrence. A flow's frames stay after it closes, until the
//! buffer needs their room for busier flows (the flows quiet longest go first), so a folded
//! alert raised when its window closes, after its connection ended, still finds them. An alert whose own frame
//! was not kept (larger than a flow may hold) takes the frames before it; of a datagram
//! rebuilt from fragments, the last fragment is kept.
//!
//! Bounds: the buffer's own (per flow and in all), and at most [`MAX_PER_BATCH`] pcaps per
//! batch of packets; every alert that wanted its packets and got none is counted by why.

use base64::Engine as _;
use otwatch_packet::evidence::{Cuts, EvidenceBuffer, Limits};
use otwatch_packet::frame::CapturedPacket;
use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::EvidenceRecord;

/// Most evidence pcaps made per batch of packets: a burst of serious alerts (an attack from
/// many addresses at once) costs bounded time and outbox room; the others are counted.
pub const MAX_PER_BATCH: usize = 64;

// What one batch of packets makes, and one batch of the outbox's evidence lane carries, the
// collector takes in one ingest batch.
const _: () = assert!(
    MAX_PER_BATCH <= otwatch_rules::validate::MAX_EVIDENCE_RECORDS
        && otwatch_delivery::lane::MAX_EVIDENCE_PER_BATCH
            <= otwatch_rules::validate::MAX_EVIDENCE_RECORDS
);

/// What evidence to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceOptions {
    /// Alerts at or above this severity take their packets.
    pub min_severity: Severity,
    /// The buffer's bounds.
    pub limits: Limits,
}

impl Default for EvidenceOptions {
    /// High and critical alerts (what the collector keeps evidence for), 16 MiB of frames.
    fn default() -> Self {
        Self {
            min_severity: Severity::High,
            limits: Limits::default(),
        }
    }
}

/// What became of the alerts that wanted their packets, and of the frames kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvidenceCounts {
    /// Pcaps queued.
    pub queued: u64,
    /// Alerts whose flow had no frame held (cut, or the flow is older than the buffer).
    pub no_frames: u64,
    /// Alerts over [`MAX_PER_BATCH`] in their batch.
    pub over_limit: u64,
    /// Frames the buffer cut, by limit.
    pub cuts: Cuts,
}

impl EvidenceCounts {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &EvidenceCounts) {
        self.queued += other.queued;
        self.no_frames += other.no_frames;
        self.over_limit += other.over_limit;
        self.cuts.per_flow += other.cuts.per_flow;
        self.cuts.total += other.cuts.total;
    }
}

/// The frames kept and the evidence being made.
#[derive(Debug)]
pub struct Evidence {
    buffer: EvidenceBuffer,
    min_severity: Severity,
    /// Alerts raised since the last frame that want their packets: (alert id, flow, time).
    pending: Vec<(String, u64, Timestamp)>,
    /// Evidence made in this batch, for the outbox.
    ready: Vec<EvidenceRecord>,
    /// Pcaps made or refused in this batch (against [`MAX_PER_BATCH`]).
    this_batch: usize,
    counts: EvidenceCounts,
}

impl Evidence {
    /// Evidence as `options` says.
    pub fn new(options: EvidenceOptions) -> Self {
        Self {
            buffer: EvidenceBuffer::new(options.limits),
            min_severity: options.min_severity,
            pending: Vec::new(),
            ready: Vec::new(),
            this_batch: 0,
            counts: EvidenceCounts::default(),
        }
    }

    /// Keeps a frame of `flow`, then makes the pcaps of the alerts its events raised.
    pub fn frame(&mut self, flow: u64, packet: &CapturedPacket<'_>) {
        self.buffer.keep(flow, packet);
        if !self.pending.is_empty() {
            self.make_pending();
        }
    }

    /// Notes an alert: one at or above the severity, of a flow, wants its packets.
    pub fn alert(&mut self, alert: &Alert) {
        // Flow 0 is no flow: alerts about the agent itself.
        if alert.severity >= self.min_severity && alert.flow != 0 {
            self.pending.push((alert.id.clone(), alert.flow, alert.ts));
        }
    }

    /// Ends a batch: makes the pcaps still pending and hands over the evidence made, oldest
    /// first.
    pub fn end_batch(&mut self) -> Vec<EvidenceRecord> {
        self.make_pending();
        self.this_batch = 0;
        std::mem::take(&mut self.ready)
    }

    /// What became of evidence so far.
    pub fn counts(&self) -> EvidenceCounts {
        EvidenceCounts {
            cuts: self.buffer.cuts(),
            ..self.counts
        }
    }

    fn make_pending(&mut self) {
        for (alert, flow, ts) in std::mem::take(&mut self.pending) {
            if self.this_batch >= MAX_PER_BATCH {
                self.counts.over_limit += 1;
                continue;
            }
            self.this_batch += 1;
            match self.buffer.pcap_until(flow, ts) {
                Some(pcap) => {
                    self.counts.queued += 1;
                    self.ready.push(EvidenceRecord {
                        alert,
                        pcap: base64::engine::general_purpose::STANDARD.encode(pcap),
                    });
                }
                None => self.counts.no_frames += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests;
