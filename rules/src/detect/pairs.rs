//! Per master/target pair state, looked up once per event.
//!
//! Detectors and the policy both keep state per (master, target): the policy's candidate rules
//! and rate buckets, the scan detectors' windows. Pairs are interned to small ids, found first
//! in a small table indexed by flow id (a flow's pair never changes), then by one
//! integer-keyed lookup, instead of one lookup per detector keyed by addresses.
//!
//! Invariant: at most [`Pairs::MAX`] pairs are held; beyond that all pair state is dropped and
//! rebuilt, which costs a few missed windows, never memory.

use std::hash::Hasher;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::verdicts::Verdicts;
use super::window::Distinct;
use crate::flow::FlowInfo;
use crate::policy::Candidates;
use crate::policy::matcher::{Rate, RateState};

/// State kept for one master/target pair, laid out by cache line so that the requests masters
/// send all day touch four lines of it: the set of remembered verdicts the request falls in
/// (one of two lines), the pair's fingerprint, unit window and flags (one line), the rate
/// buckets (one line), and the read-block windows of the table read (each window within one
/// line of two). What rarer requests need (candidate rules, other units' windows, written
/// points) follows. Offsets are pinned by a test.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct PairState {
    /// Which rule allowed each request shape lately.
    pub verdicts: Verdicts,
    /// A hash of the pair's addresses, to check a flow-id table hit (see [`Pairs::intern`]).
    fingerprint: u64,
    /// Unit ids addressed recently.
    pub units: Distinct,
    /// Whether the pair's candidate rules are computed and include no alert rule: then a
    /// remembered verdict is the whole policy check of a request.
    pub quiet: bool,
    /// The unit whose read-block windows are `blocks`, once the pair read any.
    blocks_unit: Option<u8>,
    /// Rate buckets of allow rules, by rule index.
    pub rates: Rates,
    /// Read-block windows of `blocks_unit`, per table.
    blocks: Tables,
    /// The policy rules that can apply, once computed.
    pub candidates: Option<Candidates>,
    /// Read-block windows of the other units the pair read.
    more_blocks: SmallVec<[(u8, Tables); 0]>,
    /// Points written recently, per unit.
    pub points: SmallVec<[(u8, Distinct); 1]>,
}

impl PairState {
    /// The read-block windows of `unit`, per table (in [`crate::modbus::Table`] order).
    pub fn tables(&mut self, unit: u8) -> &mut [Distinct; 4] {
        if *self.blocks_unit.get_or_insert(unit) == unit {
            &mut self.blocks.0
        } else {
            &mut slot(&mut self.more_blocks, unit).0
        }
    }

    /// Forgets what the policy computed.
    fn forget_policy(&mut self) {
        self.candidates = None;
        self.quiet = false;
        self.rates.0.clear();
        self.verdicts.clear();
    }
}

/// A pair's rate buckets: one rule's inline, on a cache line of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Rates(pub SmallVec<[(usize, Option<Bucket>); 1]>);

/// Read-block windows of one unit, one per table, on two cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Tables(pub [Distinct; 4]);

/// A rule's rate and its bucket (a remembered verdict takes a token without reading the rule).
pub(super) type Bucket = (Rate, RateState);

/// Slots of the flow-id table.
const RECENT: usize = 256;

/// A flow's pair as remembered in the flow-id table: flow id and pair id (checked against the
/// pair's fingerprint, which is read next anyway).
type Recent = (u64, u32);

/// All pairs.
#[derive(Debug)]
pub(super) struct Pairs {
    index: FxHashMap<(u128, u128), u32>,
    states: Vec<PairState>,
    recent: Vec<Option<Recent>>,
}

impl Default for Pairs {
    fn default() -> Self {
        Self {
            index: FxHashMap::default(),
            states: Vec::new(),
            recent: vec![None; RECENT],
        }
    }
}

impl Pairs {
    /// Most pairs held: a plant has hundreds, a sweep of a large subnet tens of thousands. A
    /// pair's state is one inline record (576 bytes), so this bounds it to about 29 MB.
    pub const MAX: usize = 50_000;

    /// The id of the flow's pair, and whether the pair is new.
    ///
    /// A flow's pair is found first in a small table indexed by flow id. Flow ids are only
    /// unique within one flow table, so a hit is checked against a 64-bit hash of the pair's
    /// addresses kept in its state: a wrong pair would need a reused flow id in the same slot
    /// and a hash collision of different addresses.
    pub fn intern(&mut self, flow: &FlowInfo) -> (u32, bool) {
        let key = (bits(flow.client.ip()), bits(flow.server.ip()));
        let fingerprint = fingerprint(key);
        let slot = (flow.id % RECENT as u64) as usize;
        if let Some(Some((f, id))) = self.recent.get(slot)
            && *f == flow.id
            && self
                .states
                .get(*id as usize)
                .is_some_and(|s| s.fingerprint == fingerprint)
        {
            return (*id, false);
        }
        let found = self.index.get(&key).copied();
        let (id, new) = match found {
            Some(id) => (id, false),
            None => {
                if self.states.len() >= Self::MAX {
                    self.index.clear();
                    self.states.clear();
                    self.recent.fill(None);
                }
                let id = u32::try_from(self.states.len()).unwrap_or(u32::MAX);
                self.states.push(PairState {
                    fingerprint,
                    ..PairState::default()
                });
                self.index.insert(key, id);
                (id, true)
            }
        };
        if let Some(r) = self.recent.get_mut(slot) {
            *r = Some((flow.id, id));
        }
        (id, new)
    }

    /// The state of pair `id`.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut PairState> {
        self.states.get_mut(id as usize)
    }

    /// Forgets everything the policy computed (a new policy is in force).
    pub fn reset_policy(&mut self) {
        self.states.iter_mut().for_each(PairState::forget_policy);
    }
}

/// A 64-bit hash of a pair's addresses (FxHash of their four halves).
fn fingerprint((client, server): (u128, u128)) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    for half in [client >> 64, client, server >> 64, server] {
        h.write_u64(half as u64);
    }
    h.finish()
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The value for `key` in a short association list, inserted if missing. Lists here hold a
/// handful of entries (units, tables), where a scan beats hashing.
pub(super) fn slot<K: PartialEq, V: Default, const N: usize>(
    list: &mut SmallVec<[(K, V); N]>,
    key: K,
) -> &mut V {
    let i = match list.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            list.push((key, V::default()));
            list.len() - 1
        }
    };
    // `i` is in bounds: found above, or the entry just pushed.
    &mut list[i].1
}

#[cfg(test)]
mod tests;
