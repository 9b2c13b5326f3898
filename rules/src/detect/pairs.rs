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
use std::time::Duration;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::availability::{Judgement, Liveness, Outage};
use super::memo::{Memo, Recall};
use super::window::Distinct;
use crate::flow::FlowInfo;
use crate::policy::Candidates;
use crate::policy::matcher::{Rate, RateState};
use crate::time::Timestamp;

/// State kept for one master/target pair, laid out by cache line so that the requests masters
/// send all day touch two lines of it: the set of the memo the request falls in (one of four
/// lines) and, for a rule with a rate, the rate buckets. What the built-in detectors count
/// when the memo does not answer (the unit window, the read-block windows of the table read,
/// each within one line) follows, then what rarer requests need (candidate rules, other
/// units' windows, written points). Offsets are pinned by a test.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct PairState {
    /// Which rule allowed each request shape lately, and until when the windows hold it.
    pub memo: Memo,
    /// Rate buckets of allow rules, by rule index.
    pub rates: Rates,
    /// Unit ids addressed recently.
    pub units: Distinct,
    /// The unit whose read-block windows are `blocks`, once the pair read any.
    blocks_unit: Option<u8>,
    /// Read-block windows of `blocks_unit`, per table.
    blocks: Tables,
    /// The policy rules that can apply, once computed.
    pub candidates: Option<Candidates>,
    /// Read-block windows of the other units the pair read (boxed: inline, their alignment
    /// would pad the record by a line).
    more_blocks: SmallVec<[(u8, Box<Tables>); 0]>,
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

    /// Restarts every window (the clock stepped back); keeps the policy's candidate rules.
    fn restart_windows(&mut self) {
        let candidates = self.candidates.take();
        *self = Self {
            candidates,
            ..Self::default()
        };
    }

    /// Forgets what the policy computed.
    fn forget_policy(&mut self) {
        self.candidates = None;
        self.rates.0.clear();
        self.memo.clear();
    }
}

/// A request's pair as the detectors see it: its id, whether it is new, its state, and what
/// its memo holds of the request's shape, which the detectors update and [`PairRef::remember`]
/// writes back (one memo lookup per request, however many detectors ask).
pub(super) struct PairRef<'a> {
    /// The pair's id.
    pub id: u32,
    /// Whether this request made the pair.
    pub new: bool,
    /// The pair's state.
    pub state: &'a mut PairState,
    /// What is known of the request's shape: read from the memo, updated by the detectors.
    pub recall: Recall,
    shape: Option<u64>,
    recalled: Recall,
}

impl<'a> PairRef<'a> {
    /// Pair `id`'s state, with what its memo holds of `shape` (a request's, if it has one).
    pub fn new(id: u32, new: bool, state: &'a mut PairState, shape: Option<u64>) -> Self {
        let recalled = shape.and_then(|s| state.memo.get(s)).unwrap_or_default();
        Self {
            id,
            new,
            state,
            recall: recalled,
            shape,
            recalled,
        }
    }

    /// Writes what the detectors learnt of the shape into the memo.
    pub fn remember(self) {
        if let Some(shape) = self.shape
            && self.recall != self.recalled
        {
            self.state.memo.insert(shape, self.recall);
        }
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

/// A flow's pair as remembered in the flow-id table: flow id, a fingerprint of the pair's
/// addresses (to check a hit, see [`Pairs::intern`]) and pair id.
type Recent = (u64, u64, u32);

/// All pairs.
#[derive(Debug)]
pub(super) struct Pairs {
    index: FxHashMap<(u128, u128), u32>,
    states: Vec<PairState>,
    recent: Vec<Option<Recent>>,
    /// What availability knows of each pair whose device answered, by pair id (apart from
    /// the states: most pairs never need it, and the states' layout is tuned).
    lives: Vec<Option<Box<Liveness>>>,
    /// Pairs whose device may be silent or is down, to judge as time passes; while there are
    /// any, requests and answers go to availability.
    watched: Vec<u32>,
}

impl Default for Pairs {
    fn default() -> Self {
        Self {
            index: FxHashMap::default(),
            states: Vec::new(),
            recent: vec![None; RECENT],
            lives: Vec::new(),
            watched: Vec::new(),
        }
    }
}

impl Pairs {
    /// Most pairs held: a plant has hundreds, a sweep of a large subnet tens of thousands. A
    /// pair's state is one inline record (640 bytes), plus availability's (about 900 bytes)
    /// once its device answered, so this bounds it to about 32 MB, 77 MB if every pair did.
    pub const MAX: usize = 50_000;

    /// The id of the flow's pair, and whether the pair is new.
    ///
    /// A flow's pair is found first in a small table indexed by flow id. Flow ids are only
    /// unique within one flow table, so a hit is checked against a fingerprint of the pair's
    /// addresses kept with it: exact for IPv4, so a wrong pair would need a reused flow id in
    /// the same slot and, with IPv6, a hash collision of different addresses.
    #[inline]
    pub fn intern(&mut self, flow: &FlowInfo) -> (u32, bool) {
        match self.recent_hit(flow) {
            Ok(id) => (id, false),
            Err((slot, fingerprint)) => self.intern_afresh(flow, slot, fingerprint),
        }
    }

    /// The flow's pair as the flow-id table remembers it, or where to remember it (slot and
    /// fingerprint of the pair's addresses).
    #[inline]
    fn recent_hit(&self, flow: &FlowInfo) -> Result<u32, (usize, u64)> {
        let fingerprint = fingerprint(flow.client.ip(), flow.server.ip());
        let slot = (flow.id % RECENT as u64) as usize;
        match self.recent.get(slot) {
            Some(Some((f, h, id))) if *f == flow.id && *h == fingerprint => Ok(*id),
            _ => Err((slot, fingerprint)),
        }
    }

    /// [`Pairs::intern`] past the flow-id table: the pair by its addresses, made if new. Apart,
    /// so the table hit of every request does not set up room for a new pair's state.
    #[cold]
    #[inline(never)]
    fn intern_afresh(&mut self, flow: &FlowInfo, slot: usize, fingerprint: u64) -> (u32, bool) {
        let key = (bits(flow.client.ip()), bits(flow.server.ip()));
        let found = self.index.get(&key).copied();
        let (id, new) = match found {
            Some(id) => (id, false),
            None => {
                if self.states.len() >= Self::MAX {
                    self.index.clear();
                    self.states.clear();
                    self.recent.fill(None);
                    self.lives.clear();
                    self.watched.clear();
                }
                let id = u32::try_from(self.states.len()).unwrap_or(u32::MAX);
                self.states.push(PairState::default());
                self.lives.push(None);
                self.index.insert(key, id);
                (id, true)
            }
        };
        if let Some(r) = self.recent.get_mut(slot) {
            *r = Some((flow.id, fingerprint, id));
        }
        (id, new)
    }

    /// Whether a device is silent or down: availability then hears of every request and
    /// answer.
    #[inline]
    pub fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// The id of the flow's pair, if the pair is known (unlike [`Pairs::intern`], never makes
    /// one: a SYN or a stray response does not cost a pair's state).
    pub fn find(&self, flow: &FlowInfo) -> Option<u32> {
        self.recent_hit(flow).ok().or_else(|| {
            let key = (bits(flow.client.ip()), bits(flow.server.ip()));
            self.index.get(&key).copied()
        })
    }

    /// The state of pair `id`.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut PairState> {
        self.states.get_mut(id as usize)
    }

    /// What availability knows of pair `id`, once its device answered.
    #[inline]
    pub fn live_mut(&mut self, id: u32) -> Option<&mut Liveness> {
        self.lives.get_mut(id as usize)?.as_deref_mut()
    }

    /// What availability knows of pair `id` (`None` inside until its device answers).
    pub fn liveness(&mut self, id: u32) -> Option<&mut Option<Box<Liveness>>> {
        self.lives.get_mut(id as usize)
    }

    /// Puts pair `id` on the list of silences to judge, unless it is there.
    pub fn watch(&mut self, id: u32) {
        if let Some(live) = self.live_mut(id)
            && live.watch()
        {
            self.watched.push(id);
        }
    }

    /// Takes pair `id` off the list of silences to judge: its device answered or accepted.
    pub fn unwatch(&mut self, id: u32) {
        if let Some(live) = self.live_mut(id)
            && live.watched()
        {
            live.unwatch();
            self.watched.retain(|&w| w != id);
        }
    }

    /// Judges the silence of every watched pair at `now` (`silence`: how long one may last),
    /// handing each outage found to `outage`; pairs with nothing left to judge leave the list.
    pub fn judge_silences(
        &mut self,
        now: Timestamp,
        silence: Duration,
        outage: &mut impl FnMut(Box<Outage>),
    ) {
        let lives = &mut self.lives;
        self.watched.retain(|&id| {
            let Some(Some(live)) = lives.get_mut(id as usize) else {
                return false;
            };
            match live.judge(now, silence) {
                Judgement::Waiting | Judgement::Down => true,
                Judgement::Outage(o) => {
                    outage(o);
                    true
                }
                Judgement::Done => {
                    live.unwatch();
                    false
                }
            }
        });
    }

    /// Forgets everything the policy computed (a new policy is in force).
    pub fn reset_policy(&mut self) {
        self.states.iter_mut().for_each(PairState::forget_policy);
    }

    /// Restarts every pair's windows and memo (the clock stepped back); the pairs themselves
    /// stay known.
    pub fn restart_windows(&mut self) {
        self.states.iter_mut().for_each(PairState::restart_windows);
        // A silence's start lies in the future now: availability starts over from the
        // devices' next answers.
        self.lives.iter_mut().for_each(|l| *l = None);
        self.watched.clear();
    }
}

/// 64 bits that tell a pair's addresses apart: both IPv4 addresses exactly, or a hash (FxHash
/// of their halves) when either is IPv6.
fn fingerprint(client: IpAddr, server: IpAddr) -> u64 {
    if let (IpAddr::V4(c), IpAddr::V4(s)) = (client, server) {
        return u64::from(c.to_bits()) << 32 | u64::from(s.to_bits());
    }
    let mut h = rustc_hash::FxHasher::default();
    for addr in [bits(client), bits(server)] {
        h.write_u64((addr >> 64) as u64);
        h.write_u64(addr as u64);
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
