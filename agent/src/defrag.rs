//! Bounded IPv4 fragment reassembly (etherparse's `IpDefragBuf` per datagram).
//!
//! Invariants: at most [`Defragmenter::MAX_DATAGRAMS`] datagrams are in progress; a datagram
//! not completed within [`Defragmenter::TIMEOUT`] of capture time is dropped; each buffer is at
//! most 64 KiB (the IPv4 limit, enforced by `IpDefragBuf`). A fragment flood therefore costs at
//! most a few MiB, and every drop is counted.

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

/// IPv4 datagrams being reassembled.
#[derive(Debug, Default)]
pub struct Defragmenter {
    pending: FxHashMap<Key, (IpDefragBuf, Timestamp)>,
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
        let entry = self.pending.entry(key).or_insert_with(|| {
            (
                IpDefragBuf::new(IpNumber(fragment.protocol), Vec::new(), Vec::new()),
                now,
            )
        });
        let offset = etherparse::IpFragOffset::try_new(fragment.offset).unwrap_or_default();
        if entry
            .0
            .add(offset, fragment.more, fragment.payload)
            .is_err()
        {
            self.pending.remove(&key);
            return Reassembly::Invalid;
        }
        if !entry.0.is_complete() {
            return Reassembly::Incomplete;
        }
        match self.pending.remove(&key) {
            Some((buf, _)) => Reassembly::Complete(buf.take_bufs().0),
            None => Reassembly::Incomplete,
        }
    }

    fn expire(&mut self, now: Timestamp) {
        let before = self.pending.len();
        let deadline = now.saturating_sub(Self::TIMEOUT);
        self.pending.retain(|_, (_, started)| *started >= deadline);
        self.dropped += (before - self.pending.len()) as u64;
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, (_, started))| *started)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.pending.remove(&k);
            self.dropped += 1;
        }
    }
}
