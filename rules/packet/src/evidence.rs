//! Evidence packets: the last frames of each Modbus flow, kept so that a serious alert can be
//! sent with the packets behind it as a pcap, and the check the collector makes of any pcap an
//! agent sends as evidence.
//!
//! [`EvidenceBuffer`] is bounded three ways, each cut counted: per flow by packets and by bytes
//! (the flow's oldest frames go first), and in all by bytes (the oldest frames of the flow
//! that has been quiet longest go first: what an alert of an active flow needs stays).
//! Flows are kept in a linked hash map in the order of their last frame, so both cuts cost a
//! lookup and a pop, whatever the number of flows. Frames are copied into buffers that
//! are reused when close to the frame's size (the bound counts lengths): a flow at its cap
//! writes its new frame into the buffer of the frame it cuts, so a busy capture allocates
//! little once the buffer is full.
//! [`EvidenceBuffer::pcap`] writes a flow's frames as a classic pcap (little-endian, nanosecond
//! timestamps, the capture's link type) with crate `pcap-file`; [`validate`] reads one back
//! with the project's own capture decoder and refuses what is not a whole classic pcap within
//! the bounds, of a link type agents capture.

use std::collections::VecDeque;
use std::time::Duration;

use hashlink::LinkedHashMap;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{Endianness, TsResolution};
use rustc_hash::FxBuildHasher;

use crate::capture_file::{CaptureDecoder, CaptureError, InMemory};
use crate::frame::{CapturedPacket, LinkType};
use otwatch_rules::time::Timestamp;

/// How much evidence is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most frames kept per flow.
    pub per_flow_packets: usize,
    /// Most bytes of frames kept per flow.
    pub per_flow_bytes: usize,
    /// Most bytes of frames kept in all.
    pub total_bytes: usize,
}

impl Default for Limits {
    /// 32 frames or 64 KiB per flow, 16 MiB in all.
    fn default() -> Self {
        Self {
            per_flow_packets: 32,
            per_flow_bytes: 64 << 10,
            total_bytes: 16 << 20,
        }
    }
}

/// Frames cut to keep within the limits, by which limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cuts {
    /// Frames dropped because their flow held its most frames or bytes.
    pub per_flow: u64,
    /// Frames dropped because the buffer held its most bytes in all.
    pub total: u64,
}

/// One kept frame.
#[derive(Debug)]
struct Kept {
    ts: Timestamp,
    orig_len: u32,
    data: Vec<u8>,
}

/// One flow's frames, oldest first, and their link type.
#[derive(Debug, Default)]
struct FlowFrames {
    link: Option<LinkType>,
    frames: VecDeque<Kept>,
    bytes: usize,
}

/// The last frames of each flow, within [`Limits`].
#[derive(Debug, Default)]
pub struct EvidenceBuffer {
    limits: Limits,
    /// Flows by their last frame: the one quiet longest at the front.
    flows: LinkedHashMap<u64, FlowFrames, FxBuildHasher>,
    /// The flow at the back, when known: the next frame of an exchange finds it without a
    /// lookup (a request's answer follows it).
    last: Option<u64>,
    bytes: usize,
    cuts: Cuts,
    /// Buffers of frames that went, for the next frames.
    spare: Vec<Vec<u8>>,
}

/// Flows held at most for a buffer of `total_bytes`: one per KiB (at least 16), so that the
/// bookkeeping of many small flows (a SYN flood's) stays a fraction of the frames' bound. Past
/// it, a new flow's first frame pushes out the flow quiet longest.
pub fn max_flows(total_bytes: usize) -> usize {
    (total_bytes / 1024).max(16)
}

/// Buffers kept for reuse at most: enough for a flow's worth of frames.
const SPARE: usize = 64;
/// The largest buffer kept for reuse: a full-size Ethernet frame's, so spare buffers hold at
/// most 128 KiB outside the bound.
const SPARE_BYTES: usize = 2048;

/// Keeps the buffer of a frame that went for the next frames, within [`SPARE`] buffers of at
/// most [`SPARE_BYTES`].
fn recycle(spare: &mut Vec<Vec<u8>>, data: Vec<u8>) {
    if spare.len() < SPARE && data.capacity() <= SPARE_BYTES {
        spare.push(data);
    }
}

impl EvidenceBuffer {
    /// An empty buffer within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames cut so far.
    pub fn cuts(&self) -> Cuts {
        self.cuts
    }

    /// Frames held for `flow`.
    pub fn frames(&self, flow: u64) -> usize {
        self.flows.get(&flow).map_or(0, |f| f.frames.len())
    }

    /// Keeps a copy of `packet`, a frame of `flow`, cutting what the limits require; returns
    /// whether it was kept. A frame larger than a flow may hold, or of another link type than
    /// the flow's first, is not kept (and counted as cut).
    pub fn keep(&mut self, flow: u64, packet: &CapturedPacket<'_>) -> bool {
        let size = packet.data.len();
        let limit = self.limits.per_flow_bytes.min(self.limits.total_bytes);
        let other_link = |f: &FlowFrames| f.link.is_some_and(|l| l != packet.link);
        if size > limit || self.limits.per_flow_packets == 0 {
            self.cuts.per_flow += 1;
            return false;
        }
        // The whole buffer's bound first: the flows quiet longest lose their oldest frames
        // (this flow's own included, while it is among them; its entry stays). Nothing is cut
        // for a frame that will not be kept.
        if self.bytes + size > self.limits.total_bytes
            && self.flows.get(&flow).is_some_and(other_link)
        {
            self.cuts.per_flow += 1;
            return false;
        }
        while self.bytes + size > self.limits.total_bytes {
            let alone = self.flows.len() == 1;
            let Some(mut front) = self.flows.front_entry() else {
                break;
            };
            let f = front.get_mut();
            if let Some(old) = f.frames.pop_front() {
                f.bytes -= old.data.len();
                self.bytes -= old.data.len();
                self.cuts.total += 1;
                recycle(&mut self.spare, old.data);
            }
            if f.frames.is_empty() {
                if *front.key() == flow {
                    // This flow, emptied: the others pay the rest (it moves to the back below
                    // anyway); alone, it holds nothing and the frame fits.
                    if alone {
                        break;
                    }
                    front.to_back();
                    continue;
                }
                if self.last == Some(*front.key()) {
                    self.last = None;
                }
                front.remove();
            }
        }
        // Then the flow's own, the flow moving to the back (the latest to send a frame).
        let held = if self.last == Some(flow) {
            self.flows.back_entry().map(|e| e.into_mut())
        } else {
            self.flows.to_back(&flow)
        };
        // The flow is at the back now, kept or not (a new one is put there below).
        self.last = Some(flow);
        let entry = match held {
            Some(entry) if other_link(entry) => {
                self.cuts.per_flow += 1;
                return false;
            }
            Some(entry) => entry,
            None => {
                while self.flows.len() >= max_flows(self.limits.total_bytes) {
                    let Some((_, old)) = self.flows.pop_front() else {
                        break;
                    };
                    self.bytes -= old.bytes;
                    self.cuts.total += old.frames.len() as u64;
                    for k in old.frames {
                        recycle(&mut self.spare, k.data);
                    }
                }
                self.flows.entry(flow).or_insert_with(FlowFrames::default)
            }
        };
        let mut reuse = None;
        while entry.frames.len() >= self.limits.per_flow_packets
            || entry.bytes + size > self.limits.per_flow_bytes
        {
            let Some(old) = entry.frames.pop_front() else {
                break;
            };
            entry.bytes -= old.data.len();
            self.bytes -= old.data.len();
            self.cuts.per_flow += 1;
            if let Some(earlier) = reuse.replace(old.data) {
                recycle(&mut self.spare, earlier);
            }
        }
        // A reused buffer only when it is not much larger than the frame: the bound counts
        // lengths, so capacity must stay close to them.
        let fits = |v: &Vec<u8>| v.capacity() <= size.max(64) * 2;
        let mut data = match reuse {
            Some(v) if fits(&v) => v,
            other => {
                if let Some(v) = other {
                    recycle(&mut self.spare, v);
                }
                match self.spare.pop() {
                    Some(v) if fits(&v) => v,
                    _ => Vec::with_capacity(size),
                }
            }
        };
        data.clear();
        data.extend_from_slice(packet.data);
        self.bytes += size;
        entry.link.get_or_insert(packet.link);
        entry.bytes += size;
        entry.frames.push_back(Kept {
            ts: packet.ts,
            orig_len: packet.orig_len,
            data,
        });
        true
    }

    /// Whether the buffer's bookkeeping holds (for tests and fuzzing): its bytes are those of
    /// the frames held, every flow keeps within its bounds and the buffer within its own, the
    /// flow of the last frame is the last in the order, and no flow but that one is empty.
    pub fn is_consistent(&self) -> bool {
        let held: usize = self.flows.values().map(|f| f.bytes).sum();
        let flows_ok = self.flows.iter().all(|(id, f)| {
            f.bytes == f.frames.iter().map(|k| k.data.len()).sum::<usize>()
                && f.frames.len() <= self.limits.per_flow_packets
                && f.bytes <= self.limits.per_flow_bytes
                && (!f.frames.is_empty() || self.last == Some(*id))
        });
        let last_ok = match self.last {
            Some(id) => self.flows.back().is_some_and(|(k, _)| *k == id),
            None => true,
        };
        held == self.bytes
            && self.bytes <= self.limits.total_bytes
            && self.flows.len() <= max_flows(self.limits.total_bytes)
            && flows_ok
            && last_ok
    }

    /// Forgets a flow and its frames (one that sends no more frames and whose alerts are all
    /// made; the agent lets closed flows go with the bounds instead, for alerts raised later).
    pub fn forget(&mut self, flow: u64) {
        if self.last == Some(flow) {
            self.last = None;
        }
        if let Some(f) = self.flows.remove(&flow) {
            self.bytes -= f.bytes;
            for k in f.frames {
                recycle(&mut self.spare, k.data);
            }
        }
    }

    /// The flow's frames as a classic pcap, oldest first; `None` when none is held.
    pub fn pcap(&self, flow: u64) -> Option<Vec<u8>> {
        self.pcap_until(flow, Timestamp::from_nanos(u64::MAX))
    }

    /// The flow's frames captured at or before `until` as a classic pcap, oldest first (what
    /// an alert of that time saw); `None` when none is held.
    pub fn pcap_until(&self, flow: u64, until: Timestamp) -> Option<Vec<u8>> {
        let f = self.flows.get(&flow)?;
        let link = f.link?;
        let frames = f.frames.iter().take_while(|k| k.ts <= until);
        if f.frames.front().is_none_or(|k| k.ts > until) {
            return None;
        }
        let header = PcapHeader {
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Little,
            // Larger than any frame kept (a frame over the snap length is refused by writers).
            snaplen: 1 << 18,
            datalink: pcap_file::DataLink::from(linktype(link)),
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).ok()?;
        for k in frames {
            let packet = PcapPacket::new(
                Duration::from_nanos(k.ts.as_nanos()),
                k.orig_len.max(len32(k.data.len())),
                &k.data,
            );
            w.write_packet(&packet).ok()?;
        }
        Some(w.into_writer())
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A link type's LINKTYPE number.
fn linktype(link: LinkType) -> u32 {
    match link {
        LinkType::Ethernet => 1,
        LinkType::LinuxSll => 113,
        LinkType::LinuxSll2 => 276,
        LinkType::RawIp => 101,
        LinkType::Ipv4 => 228,
        LinkType::Ipv6 => 229,
        LinkType::Null => 0,
        LinkType::Unsupported(code) => code,
    }
}

/// Most bytes of evidence the collector takes for one alert: a flow's worth at the default
/// limits, with headers.
pub const MAX_EVIDENCE_BYTES: usize = 80 << 10;
/// Most frames of evidence for one alert.
pub const MAX_EVIDENCE_PACKETS: usize = 64;

/// What an evidence pcap holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceSummary {
    /// Frames.
    pub packets: usize,
    /// The first frame's capture time.
    pub first: Timestamp,
    /// The last frame's capture time.
    pub last: Timestamp,
}

/// Why an evidence pcap is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceError {
    /// Larger than [`MAX_EVIDENCE_BYTES`].
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Not a classic pcap, or damaged.
    Unreadable(String),
    /// A pcapng file: agents write classic pcap.
    Pcapng,
    /// A link type no capture of an agent has.
    LinkType(u32),
    /// No frame.
    Empty,
    /// More than [`MAX_EVIDENCE_PACKETS`] frames.
    TooManyPackets,
}

impl std::fmt::Display for EvidenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { bytes } => {
                write!(f, "{bytes} bytes (expected at most {MAX_EVIDENCE_BYTES})")
            }
            Self::Unreadable(why) => write!(f, "not a readable classic pcap: {why}"),
            Self::Pcapng => f.write_str("a pcapng file (expected a classic pcap)"),
            Self::LinkType(code) => write!(
                f,
                "link type {code} (expected one an agent captures: Ethernet, Linux cooked, raw IP, null)"
            ),
            Self::Empty => f.write_str("no frame (expected at least one)"),
            Self::TooManyPackets => write!(f, "more than {MAX_EVIDENCE_PACKETS} frames"),
        }
    }
}

impl std::error::Error for EvidenceError {}

/// Checks a pcap an agent sent as evidence: a classic pcap within the bounds, of a link type
/// agents capture, every record whole, at least one frame. What it takes, tshark and
/// Wireshark open.
pub fn validate(bytes: &[u8]) -> Result<EvidenceSummary, EvidenceError> {
    if bytes.len() > MAX_EVIDENCE_BYTES {
        return Err(EvidenceError::TooLarge { bytes: bytes.len() });
    }
    if bytes.get(..4) == Some(&[0x0A, 0x0D, 0x0D, 0x0A][..]) {
        return Err(EvidenceError::Pcapng);
    }
    let mut input = InMemory::new(bytes, &[]);
    // A buffer the size of the input, not of the largest input.
    let mut decoder = CaptureDecoder::with_limits(bytes.len(), MAX_EVIDENCE_BYTES);
    let unreadable = |e: CaptureError| EvidenceError::Unreadable(e.to_string());
    let mut summary: Option<EvidenceSummary> = None;
    while let Some(p) = decoder.next_packet(&mut input).map_err(unreadable)? {
        if let LinkType::Unsupported(code) = p.link {
            return Err(EvidenceError::LinkType(code));
        }
        let s = summary.get_or_insert(EvidenceSummary {
            packets: 0,
            first: p.ts,
            last: p.ts,
        });
        s.packets += 1;
        s.first = s.first.min(p.ts);
        s.last = s.last.max(p.ts);
        if s.packets > MAX_EVIDENCE_PACKETS {
            return Err(EvidenceError::TooManyPackets);
        }
    }
    summary.ok_or(EvidenceError::Empty)
}

#[cfg(test)]
mod tests;
