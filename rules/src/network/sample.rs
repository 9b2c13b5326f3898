//! What one capture worker saw in one second of capture time, in the form the
//! [`super::Watch`] merges: per server, connection attempts, connections that completed,
//! requests and their sources; per (address, Ethernet address), when it was claimed and how.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::sketch::{Distinct, Top};
use crate::mac::Mac;
use crate::time::Timestamp;

/// A server, as floods are counted against it: VLAN, address, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Outermost VLAN id, 0 when untagged.
    pub vlan: u16,
    /// Its address.
    pub ip: IpAddr,
    /// Its (Modbus) port.
    pub port: u16,
}

/// What one server saw in one second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCounts {
    /// Connections opened with a SYN.
    pub attempts: u64,
    /// Connections that completed: the client sent a request, or closed it in order.
    pub completed: u64,
    /// Modbus requests.
    pub requests: u64,
    /// Whether it serves Modbus: on a Modbus port, or a request or a recognised Modbus
    /// conversation showed it (floods are judged for Modbus servers only).
    pub modbus: bool,
    /// Capture time of the first of them.
    pub first: Timestamp,
    /// Capture time of the last of them.
    pub last: Timestamp,
    /// Distinct sources of attempts and requests.
    pub sources: Distinct,
    /// The heaviest of them.
    pub top: Top,
}

impl TargetCounts {
    fn new(ts: Timestamp) -> Self {
        Self {
            attempts: 0,
            completed: 0,
            requests: 0,
            modbus: false,
            first: ts,
            last: ts,
            sources: Distinct::default(),
            top: Top::default(),
        }
    }

    fn merge(&mut self, other: &TargetCounts) {
        self.attempts += other.attempts;
        self.completed += other.completed;
        self.requests += other.requests;
        self.modbus |= other.modbus;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.sources.merge(&other.sources);
        self.top.merge(&other.top);
    }
}

/// How an address was claimed for an Ethernet address (bits).
pub mod how {
    /// It was the source of IP traffic from that Ethernet address.
    pub const IP: u8 = 1;
    /// An ARP packet's sender said so.
    pub const ARP: u8 = 2;
    /// In an ARP reply or a gratuitous ARP: an announcement nobody had to ask for.
    pub const ANNOUNCED: u8 = 4;
}

/// One address seen at one Ethernet address within a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey {
    /// Outermost VLAN id.
    pub vlan: u16,
    /// The address claimed.
    pub ip: IpAddr,
    /// The Ethernet address claiming it.
    pub mac: Mac,
}

/// When and how a [`ClaimKey`] was seen within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimSeen {
    /// First time.
    pub first: Timestamp,
    /// Last time.
    pub last: Timestamp,
    /// [`how`] bits.
    pub how: u8,
}

/// Most servers one sample keeps (the rest count in [`Sample::overflow`]).
pub const MAX_TARGETS: usize = 4_096;
/// Most claims one sample keeps.
pub const MAX_CLAIMS: usize = 4_096;

/// What a worker saw in one second of capture time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// The second (capture time, seconds since the epoch).
    pub second: u64,
    /// Per server.
    pub targets: FxHashMap<Target, TargetCounts>,
    /// Per claim.
    pub claims: FxHashMap<ClaimKey, ClaimSeen>,
    /// Events not kept for lack of room.
    pub overflow: u64,
}

impl Sample {
    /// An empty sample of `second`.
    pub fn new(second: u64) -> Self {
        Self {
            second,
            ..Self::default()
        }
    }

    /// An empty sample of `second` with room for `targets` servers and `claims` claims
    /// before its maps grow.
    pub fn with_capacity(second: u64, targets: usize, claims: usize) -> Self {
        Self {
            second,
            targets: FxHashMap::with_capacity_and_hasher(targets, Default::default()),
            claims: FxHashMap::with_capacity_and_hasher(claims, Default::default()),
            overflow: 0,
        }
    }

    /// The counts of `target`, if there is room for it: a server known to serve Modbus
    /// (`modbus`) has [`MAX_TARGETS`] more places, so a scan of other ports cannot crowd it
    /// out.
    #[inline]
    pub fn target(
        &mut self,
        target: Target,
        ts: Timestamp,
        modbus: bool,
    ) -> Option<&mut TargetCounts> {
        let room = if modbus { 2 * MAX_TARGETS } else { MAX_TARGETS };
        if !self.targets.contains_key(&target) && self.targets.len() >= room {
            self.overflow += 1;
            return None;
        }
        let t = self
            .targets
            .entry(target)
            .or_insert_with(|| TargetCounts::new(ts));
        t.last = t.last.max(ts);
        t.first = t.first.min(ts);
        Some(t)
    }

    /// Records that `key` was claimed at `ts`, `how`. A claim in ARP has [`MAX_CLAIMS`] more
    /// places: a flood from spoofed sources cannot crowd out a poisoner's ARP.
    #[inline]
    pub fn claim(&mut self, key: ClaimKey, ts: Timestamp, how: u8) {
        let room = if how & how::ARP != 0 {
            2 * MAX_CLAIMS
        } else {
            MAX_CLAIMS
        };
        if let Some(c) = self.claims.get_mut(&key) {
            c.first = c.first.min(ts);
            c.last = c.last.max(ts);
            c.how |= how;
        } else if self.claims.len() < room {
            self.claims.insert(
                key,
                ClaimSeen {
                    first: ts,
                    last: ts,
                    how,
                },
            );
        } else {
            self.overflow += 1;
        }
    }

    /// Adds another worker's sample of the same second.
    pub fn merge(&mut self, other: &Sample) {
        for (target, counts) in &other.targets {
            let room = self.targets.len()
                < if counts.modbus {
                    2 * MAX_TARGETS
                } else {
                    MAX_TARGETS
                };
            match self.targets.get_mut(target) {
                Some(mine) => mine.merge(counts),
                None if room => {
                    self.targets.insert(*target, counts.clone());
                }
                None => self.overflow += 1,
            }
        }
        for (key, seen) in &other.claims {
            self.claim(*key, seen.first, seen.how);
            self.claim(*key, seen.last, 0);
        }
        self.overflow += other.overflow;
    }
}
