//! Per master/target pair state, looked up once per event.
//!
//! Detectors and the policy both keep state per (master, target): the policy's candidate rules
//! and rate buckets, the scan detectors' windows. Pairs are interned to small ids, found first
//! in a small table indexed by flow id (a flow's pair never changes), then by one
//! integer-keyed lookup, instead of one lookup per detector keyed by addresses.
//!
//! Invariant: at most [`Pairs::MAX`] pairs are held; beyond that all pair state is dropped and
//! rebuilt, which costs a few missed windows, never memory.

use std::net::IpAddr;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::verdicts::Verdicts;
use super::window::Distinct;
use crate::flow::FlowInfo;
use crate::policy::Candidates;
use crate::policy::matcher::{Rate, RateState};

/// State kept for one master/target pair. What a request touches is held inline (a pair
/// usually addresses one unit, a few tables and one rule), so checking a request reads a few
/// neighbouring cache lines of one record instead of an allocation per window and list. The
/// fields a read request needs come first, in declaration order, starting on a cache line:
/// remembered verdicts (two lines, a lookup reads one), then the pair's key and unit window
/// (the next line), then the rate buckets.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct PairState {
    /// Which rule allowed each request shape lately.
    pub verdicts: Verdicts,
    /// The pair: client and server addresses as integers.
    key: (u128, u128),
    /// Unit ids addressed recently.
    pub units: Distinct,
    /// Rate buckets of allow rules, by rule index.
    pub rates: SmallVec<[(usize, Option<Bucket>); 1]>,
    /// The policy rules that can apply, once computed.
    pub candidates: Option<Candidates>,
    /// Read blocks recently, per unit and then per table (in [`crate::modbus::Table`] order).
    pub blocks: SmallVec<[(u8, [Distinct; 4]); 1]>,
    /// Points written recently, per unit.
    pub points: SmallVec<[(u8, Distinct); 1]>,
}

/// A rule's rate and its bucket (a remembered verdict takes a token without reading the rule).
pub(super) type Bucket = (Rate, RateState);

/// Slots of the flow-id table.
const RECENT: usize = 256;

/// A flow's pair as remembered in the flow-id table: flow id and pair id (the pair's key is
/// checked against its state, which is read next anyway).
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
    /// pair's state is one inline record (640 bytes), so this bounds it to about 32 MB.
    pub const MAX: usize = 50_000;

    /// The id of the flow's pair, and whether the pair is new.
    pub fn intern(&mut self, flow: &FlowInfo) -> (u32, bool) {
        let key = (bits(flow.client.ip()), bits(flow.server.ip()));
        let slot = (flow.id % RECENT as u64) as usize;
        // The key is compared too: flow ids are only unique within one capture.
        if let Some(Some((f, id))) = self.recent.get(slot)
            && *f == flow.id
            && self.states.get(*id as usize).is_some_and(|s| s.key == key)
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
                    key,
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
        for s in &mut self.states {
            s.candidates = None;
            s.rates.clear();
            s.verdicts.clear();
        }
    }
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
