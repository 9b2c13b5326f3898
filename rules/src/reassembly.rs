//! TCP stream reassembly for one direction of a connection.
//!
//! Segments arrive as captured: out of order, retransmitted, overlapping, with holes where the
//! capture lost packets, and sometimes without the handshake. The reassembler turns them into
//! the in-order byte stream the endpoint saw, plus a [`StreamEvent::Gap`] wherever bytes are
//! missing for good, so the framer above can resynchronise.
//!
//! Invariants:
//! - Every stream byte is delivered at most once, in order; retransmitted bytes never are.
//! - Buffered out-of-order data is bounded by [`ReassemblyLimits::max_buffered_bytes`]; when the
//!   bound is hit, the hole is declared a gap instead of growing memory.
//! - Overlapping bytes that differ from the bytes already seen for the same sequence range are
//!   reported as [`StreamEvent::OverlapConflict`] (an IDS-evasion technique); the first copy wins.

use std::collections::BTreeMap;

/// Bounds on what one direction may buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Out-of-order bytes held while waiting for a hole to fill.
    pub max_buffered_bytes: usize,
    /// Out-of-order segments held.
    pub max_buffered_segments: usize,
    /// How far past the next expected byte a segment may start and still be buffered.
    pub max_window: u32,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_buffered_bytes: 64 * 1024,
            max_buffered_segments: 256,
            max_window: 1 << 20,
        }
    }
}

/// What reassembly hands to the layer above, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// The next contiguous bytes of the stream.
    Data(&'a [u8]),
    /// `bytes` of the stream will never be seen (capture loss, or a segment past the window).
    Gap {
        /// How many bytes are missing.
        bytes: u64,
    },
    /// A segment repeated bytes already delivered (a retransmission).
    Retransmission {
        /// Bytes repeated.
        bytes: usize,
    },
    /// A segment carried different bytes for a range already seen.
    OverlapConflict {
        /// Bytes in the conflicting range.
        bytes: usize,
    },
}

/// The TCP flags reassembly looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentFlags {
    /// SYN: the segment's sequence number is the initial one, data starts one later.
    pub syn: bool,
    /// FIN: the stream ends after this segment's payload.
    pub fin: bool,
}

/// The bytes most recently delivered, kept to compare retransmissions against.
const RECENT: usize = 512;

/// Reassembly state for one direction of one TCP connection.
#[derive(Debug, Clone, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    /// Sequence number of the next byte to deliver, once known.
    next_seq: Option<u32>,
    /// Stream offset of the next byte to deliver.
    delivered: u64,
    /// Out-of-order segments keyed by stream offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// The last bytes delivered, ending at `delivered`.
    recent: Vec<u8>,
    /// Sequence number the FIN occupies, once seen: acknowledging it is not a gap.
    fin_seq: Option<u32>,
}

impl Reassembler {
    /// A direction that has seen nothing yet.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Bytes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes held out of order.
    pub fn buffered(&self) -> usize {
        self.pending_bytes
    }

    /// Takes one captured segment: its sequence number, whether it carries SYN or FIN, and its
    /// payload.
    pub fn segment(
        &mut self,
        seq: u32,
        flags: SegmentFlags,
        payload: &[u8],
        out: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let data_seq = if flags.syn { seq.wrapping_add(1) } else { seq };
        if flags.fin {
            self.fin_seq = Some(data_seq.wrapping_add(payload.len() as u32));
        }
        let next = match self.next_seq {
            Some(next) => next,
            None => {
                // First segment of this direction: a SYN or a mid-stream pickup both set the start.
                self.next_seq = Some(data_seq);
                data_seq
            }
        };
        if payload.is_empty() {
            return;
        }
        let delta = i64::from(data_seq.wrapping_sub(next) as i32);
        let len = payload.len() as i64;
        if delta <= 0 {
            let overlap = (-delta).min(len) as usize;
            if overlap > 0 {
                self.compare_with_recent(overlap, -delta as usize, payload, out);
            }
            if let Some(fresh) = payload.get(overlap..).filter(|f| !f.is_empty()) {
                self.deliver(fresh, out);
                self.drain(out);
            }
        } else if delta > i64::from(self.limits.max_window) {
            // Too far ahead to buffer: the stream jumped (loss, or a forged segment).
            self.skip_to(self.delivered + delta as u64, out);
            self.deliver(payload, out);
            self.drain(out);
        } else {
            self.buffer(self.delivered + delta as u64, payload, out);
        }
    }

    /// The peer acknowledged up to `ack`: bytes before it that were never captured are a gap.
    pub fn acknowledged(&mut self, ack: u32, out: &mut impl FnMut(StreamEvent<'_>)) {
        let Some(next) = self.next_seq else {
            return;
        };
        let delta = ack.wrapping_sub(next) as i32;
        if delta <= 0 || delta as u32 > self.limits.max_window {
            return;
        }
        if self.fin_seq == Some(next) && delta == 1 && self.pending.is_empty() {
            // The peer acknowledged the FIN, which takes a sequence number but carries no byte.
            return;
        }
        let acked = self.delivered + delta as u64;
        while self
            .next_seq
            .is_some_and(|n| (ack.wrapping_sub(n) as i32) > 0)
        {
            let target = match self.pending.first_key_value() {
                Some((&offset, _)) if offset < acked => offset,
                _ => acked,
            };
            self.skip_to(target, out);
            self.drain(out);
        }
    }

    /// The stream ended (FIN, RST or eviction): whatever is buffered past a hole is delivered
    /// after a gap.
    pub fn flush(&mut self, out: &mut impl FnMut(StreamEvent<'_>)) {
        while let Some((&offset, _)) = self.pending.first_key_value() {
            self.skip_to(offset, out);
            self.drain(out);
        }
    }

    fn deliver(&mut self, data: &[u8], out: &mut impl FnMut(StreamEvent<'_>)) {
        out(StreamEvent::Data(data));
        self.advance(data.len());
        if data.len() >= RECENT {
            self.recent.clear();
            self.recent
                .extend_from_slice(data.get(data.len() - RECENT..).unwrap_or_default());
        } else {
            if self.recent.len() + data.len() > 2 * RECENT {
                let drop = self.recent.len() + data.len() - RECENT;
                self.recent.drain(..drop.min(self.recent.len()));
            }
            self.recent.extend_from_slice(data);
        }
    }

    fn advance(&mut self, n: usize) {
        self.delivered += n as u64;
        if let Some(next) = self.next_seq.as_mut() {
            *next = next.wrapping_add(n as u32);
        }
    }

    /// Declares everything up to stream offset `target` lost.
    fn skip_to(&mut self, target: u64, out: &mut impl FnMut(StreamEvent<'_>)) {
        if target <= self.delivered {
            return;
        }
        let bytes = target - self.delivered;
        out(StreamEvent::Gap { bytes });
        self.delivered = target;
        if let Some(next) = self.next_seq.as_mut() {
            *next = next.wrapping_add(bytes as u32);
        }
        self.recent.clear();
    }

    /// Compares the first `overlap` bytes of `payload`, which start `behind` bytes before the
    /// delivery point, with what was delivered.
    fn compare_with_recent(
        &self,
        overlap: usize,
        behind: usize,
        payload: &[u8],
        out: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let start = self.recent.len().checked_sub(behind);
        let seen = start.and_then(|s| self.recent.get(s..s + overlap));
        let repeated = payload.get(..overlap).unwrap_or_default();
        match seen {
            Some(seen) if seen != repeated => {
                out(StreamEvent::OverlapConflict { bytes: overlap });
            }
            _ => out(StreamEvent::Retransmission { bytes: overlap }),
        }
    }

    fn buffer(&mut self, offset: u64, payload: &[u8], out: &mut impl FnMut(StreamEvent<'_>)) {
        if let Some(existing) = self.pending.get(&offset) {
            let common = existing.len().min(payload.len());
            if existing.get(..common) != payload.get(..common) {
                out(StreamEvent::OverlapConflict { bytes: common });
            } else {
                out(StreamEvent::Retransmission { bytes: common });
            }
            if existing.len() >= payload.len() {
                return;
            }
        }
        if self.pending_bytes + payload.len() > self.limits.max_buffered_bytes
            || self.pending.len() >= self.limits.max_buffered_segments
        {
            // No room to wait for the hole: give up on it.
            if let Some((&first, _)) = self.pending.first_key_value() {
                self.skip_to(first.min(offset), out);
                self.drain(out);
            } else {
                self.skip_to(offset, out);
            }
            if offset <= self.delivered {
                let behind = (self.delivered - offset) as usize;
                let fresh = payload.get(behind.min(payload.len())..).unwrap_or_default();
                if !fresh.is_empty() {
                    self.deliver(fresh, out);
                }
                self.drain(out);
                return;
            }
        }
        if let Some(old) = self.pending.insert(offset, payload.to_vec()) {
            self.pending_bytes -= old.len();
        }
        self.pending_bytes += payload.len();
    }

    /// Delivers buffered segments that are now contiguous with the stream.
    fn drain(&mut self, out: &mut impl FnMut(StreamEvent<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let offset = *entry.key();
            if offset > self.delivered {
                return;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            let behind = (self.delivered - offset) as usize;
            let overlap = behind.min(data.len());
            if overlap > 0 {
                self.compare_with_recent(overlap, behind, &data, out);
            }
            if let Some(fresh) = data.get(overlap..).filter(|f| !f.is_empty()) {
                self.deliver(fresh, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
