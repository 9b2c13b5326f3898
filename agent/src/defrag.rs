//! Bounded IPv4 fragment reassembly (etherparse's `IpDefragBuf` per datagram).
//!
//! Invariants: at most [`Defragmenter::MAX_DATAGRAMS`] datagrams are in progress; a datagram
//! not completed within [`Defragmenter::TIMEOUT`] of capture time is dropped; each buffer is at
//! most 64 KiB (the IPv4 limit, enforced by `IpDefragBuf`). A fragment flood therefore costs at
//! most a few MiB, and every drop is counted.
//!
//! Fragments that overlap drop their datagram, as Linux does: `IpDefragBuf` would let the later
//! bytes win, and a sender could then show the agent other bytes than a device that keeps the
//! earlier ones (or drops the datagram) acts on.

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
    /// The byte ranges received, start to end (exclusive); they never overlap.
    received: BTreeMap<u32, u32>,
}

impl Partial {
    /// Records `start..end`, unless it overlaps a range already received.
    fn receive(&mut self, start: u32, end: u32) -> bool {
        let before = self.received.range(..end).next_back();
        if before.is_some_and(|(_, &before_end)| before_end > start) {
            return false;
        }
        self.received.insert(start, end);
        true
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
            received: BTreeMap::new(),
        });
        let offset = etherparse::IpFragOffset::try_new(fragment.offset).unwrap_or_default();
        let start = u32::from(offset.byte_offset());
        let end = start.saturating_add(u32::try_from(fragment.payload.len()).unwrap_or(u32::MAX));
        if !entry.receive(start, end)
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
