//! Bounded IPv4 fragment reassembly (etherparse's `IpDefragBuf` per datagram).
//!
//! Invariants: at most [`Defragmenter::MAX_DATAGRAMS`] datagrams are in progress; a datagram
//! not completed within [`Defragmenter::TIMEOUT`] of capture time is dropped; each buffer is at
//! most 64 KiB (the IPv4 limit, enforced by `IpDefragBuf`). A fragment flood therefore costs at
//! most a few MiB, and every drop is counted.
//!
//! Overlaps are judged as Linux judges them: a fragment wholly inside what was already received
//! is a duplicate and ignored (the first bytes stay); one that partly overlaps drops its
//! datagram. `IpDefragBuf` alone would let the later bytes win, and a sender could then show
//! the agent other bytes than the device acts on.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use etherparse::IpNumber;
use etherparse::defrag::IpDefragBuf;
use rustc_hash::FxHashMap;

use crate::dissect::Fragment;
use otwatch_rules::time::Timestamp;

type Key = (u16, IpAddr, IpAddr, u16, u8);

/// What feeding a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// Still waiting for more fragments.
    Incomplete,
    /// The datagram is whole: its transport header and payload.
    Complete(Vec<u8>),
    /// The fragment contradicted earlier ones (overlap or bad length) and the datagram was
    /// dropped.
    Invalid,
}

/// One datagram being reassembled.
#[derive(Debug)]
struct Partial {
    buf: IpDefragBuf,
    started: Timestamp,
    /// The runs of contiguous bytes received, start to end (exclusive): disjoint, and apart.
    runs: BTreeMap<u32, u32>,
}

/// How a fragment's bytes relate to what was received before.
#[derive(Debug, PartialEq, Eq)]
enum Fit {
    /// New bytes only.
    New,
    /// Bytes already received, all of them: a duplicate.
    Duplicate,
    /// Partly received already (an overlap), or empty.
    Overlap,
}

impl Partial {
    /// Judges `start..end` against the runs received and, when new, records it. An empty
    /// fragment is refused like an overlap, as Linux refuses it.
    fn receive(&mut self, start: u32, end: u32) -> Fit {
        if start >= end {
            return Fit::Overlap;
        }
        // Runs are disjoint: only the last one starting before `end` can overlap.
        if let Some((&run_start, &run_end)) = self.runs.range(..end).next_back()
            && run_end > start
        {
            return if run_start <= start && end <= run_end {
                Fit::Duplicate
            } else {
                Fit::Overlap
            };
        }
        // Joined with the runs it touches.
        let mut run = (start, end);
        if let Some((&before, &before_end)) = self.runs.range(..start).next_back()
            && before_end == start
        {
            self.runs.remove(&before);
            run.0 = before;
        }
        if let Some(after_end) = self.runs.remove(&end) {
            run.1 = after_end;
        }
        self.runs.insert(run.0, run.1);
        Fit::New
    }
}

/// IPv4 datagrams being reassembled.
#[derive(Debug, Default)]
pub struct Defragmenter {
    pending: FxHashMap<Key, Partial>,
    /// Datagrams dropped for lack of room or time.
    pub dropped: u64,
}

impl Defragmenter {
    /// Most datagrams reassembled at once.
    pub const MAX_DATAGRAMS: usize = 64;
    /// How long a datagram may take to complete.
    pub const TIMEOUT: Duration = Duration::from_secs(30);

    /// Adds one fragment.
    pub fn add(&mut self, now: Timestamp, fragment: &Fragment<'_>) -> Reassembly {
        let key = (
            fragment.vlan,
            fragment.src,
            fragment.dst,
            fragment.id,
            fragment.protocol,
        );
        if !self.pending.contains_key(&key) {
            self.expire(now);
            if self.pending.len() >= Self::MAX_DATAGRAMS {
                self.evict_oldest();
            }
        }
        let entry = self.pending.entry(key).or_insert_with(|| Partial {
            buf: IpDefragBuf::new(IpNumber(fragment.protocol), Vec::new(), Vec::new()),
            started: now,
            runs: BTreeMap::new(),
        });
        let offset = etherparse::IpFragOffset::try_new(fragment.offset).unwrap_or_default();
        let start = u32::from(offset.byte_offset());
        let end = start.saturating_add(u32::try_from(fragment.payload.len()).unwrap_or(u32::MAX));
        let fit = entry.receive(start, end);
        if fit == Fit::Duplicate {
            return Reassembly::Incomplete;
        }
        if fit == Fit::Overlap
            || entry
                .buf
                .add(offset, fragment.more, fragment.payload)
                .is_err()
        {
            self.pending.remove(&key);
            return Reassembly::Invalid;
        }
        if !entry.buf.is_complete() {
            return Reassembly::Incomplete;
        }
        match self.pending.remove(&key) {
            Some(done) => Reassembly::Complete(done.buf.take_bufs().0),
            None => Reassembly::Incomplete,
        }
    }

    /// Drops every datagram in progress, counted (the clock stepped back: their start times
    /// lie in the future, so they would neither expire nor make room).
    pub fn give_up_all(&mut self) {
        self.dropped += self.pending.len() as u64;
        self.pending.clear();
    }

    fn expire(&mut self, now: Timestamp) {
        let before = self.pending.len();
        let deadline = now.saturating_sub(Self::TIMEOUT);
        self.pending.retain(|_, p| p.started >= deadline);
        self.dropped += (before - self.pending.len()) as u64;
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.started)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.pending.remove(&k);
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests;
