//! The agent's outbox: every alert and asset observation is written here (sled, through the
//! [`Kv`] trait) before it is shipped, and removed only once the collector has acknowledged
//! it. It survives restarts and `kill -9`, and a collector outage of hours.
//!
//! It holds one queue per [`Lane`] (alerts, then observations, then evidence), each delivered oldest
//! first, all within one disk budget (bytes of records). Each lane may hold at most its
//! [`Lane::budget`] share; when a new record would not fit, the oldest records go first: a new
//! alert pushes out the last lane's oldest records before any alert, a lower lane's record only
//! ever pushes out records of its own lane, so alerts are never dropped for the others. Every
//! drop is counted, persistently, so it can be reported to the collector as an alert of its
//! own once it is reachable (see [`Outbox::report_drops`]).
//!
//! Records are kept under a lane's prefix (`q` for alerts, as every record was before lanes,
//! `o` for observations, `e` for evidence) + a big-endian sequence number, so each lane's
//! oldest come first; counters under `m:`. An outbox from before lanes keeps its records, asset
//! observations included, in the alerts lane, and delivers them first.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use otwatch_delivery::Lane;
use otwatch_kv::{Batch, Kv, KvError, Order};
use otwatch_rules::alert::Alert;
use otwatch_rules::wire::{
    AssetObservation, ConversationObservation, EvidenceRecord, LearnedPolicy,
};
use serde::{Deserialize, Serialize};

/// One thing to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Record {
    /// An alert.
    Alert(Alert),
    /// What the agent learned about a host.
    Asset(AssetObservation),
    /// What the agent saw of a conversation over one report window.
    Conversation(ConversationObservation),
    /// The packets behind a serious alert, queued after the alert.
    Evidence(EvidenceRecord),
    /// A policy learned because the collector asked.
    Learned(LearnedPolicy),
}

impl Record {
    /// The lane the record waits in.
    pub fn lane(&self) -> Lane {
        match self {
            Record::Alert(_) => Lane::Alerts,
            Record::Asset(_) | Record::Conversation(_) => Lane::Observations,
            Record::Evidence(_) => Lane::Evidence,
            Record::Learned(_) => Lane::Learned,
        }
    }
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The storage engine failed.
    #[error("outbox: {0}")]
    Storage(#[from] KvError),
    /// A record could not be encoded.
    #[error("outbox: cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another thread panicked while holding the outbox.
    #[error("outbox: poisoned by a panic in another thread")]
    Poisoned,
}

const DROPPED_TOTAL: &[u8] = b"m:dropped_total";
const UNREPORTED: &[u8] = b"m:unreported";

/// The key prefix of a lane's queue.
fn prefix(lane: Lane) -> u8 {
    match lane {
        Lane::Alerts => b'q',
        Lane::Observations => b'o',
        Lane::Evidence => b'e',
        Lane::Learned => b'l',
    }
}

fn key(lane: Lane, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix(lane);
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(lane: Lane, key: &[u8]) -> Option<u64> {
    match key {
        [p, rest @ ..] if *p == prefix(lane) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

fn number(kv: &dyn Kv, key: &[u8]) -> Result<u64, KvError> {
    Ok(kv
        .get(key)?
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// One lane's queue.
#[derive(Debug, Default)]
struct Queue {
    /// Sequence number and size of every record held, oldest first.
    held: VecDeque<(u64, u32)>,
    bytes: u64,
    next: u64,
}

#[derive(Debug, Default)]
struct State {
    lanes: [Queue; Lane::COUNT],
    dropped_total: u64,
    unreported: u64,
}

impl State {
    fn bytes(&self) -> u64 {
        self.lanes.iter().map(|q| q.bytes).sum()
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Records stored.
    pub stored: usize,
    /// Records dropped to make room (older ones, or a new one larger than its lane's budget).
    pub dropped: u64,
}

/// The oldest records of a lane, ready to send.
#[derive(Debug, Default)]
pub struct Peeked {
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Each record's sequence number. A lane's records are numbered without gaps, so the
    /// numbers between two of these are records that could not be read.
    pub seqs: Vec<u64>,
    /// The sequence number of the last record read: acknowledge through it.
    pub through: Option<u64>,
    /// Records that could not be read (they are acknowledged with the rest).
    pub unreadable: u64,
}

/// Records waiting for delivery, one queue per lane.
pub struct Outbox {
    kv: Arc<dyn Kv>,
    budget: u64,
    state: Mutex<State>,
    /// Told when records were stored (the shipper, so it looks at once rather than at its
    /// next idle poll).
    on_push: Mutex<Option<Waker>>,
}

/// Told that records are waiting.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("budget", &self.budget)
            .finish()
    }
}

/// Records read per scan when reopening.
const SCAN: usize = 10_000;

/// A push's plan for one lane, before it is written: how many held records it drops from the
/// front, and the new records it keeps (some of which a large push may drop again).
#[derive(Debug, Default)]
struct Plan {
    old_dropped: usize,
    new: VecDeque<(u64, u32)>,
    bytes: u64,
    next: u64,
}

impl Plan {
    /// Drops the lane's oldest record, held or new; returns its size, or none when the lane
    /// is empty.
    fn drop_oldest(&mut self, lane: Lane, queue: &Queue, batch: &mut Batch) -> Option<u64> {
        let (seq, size) = if self.old_dropped < queue.held.len() {
            self.old_dropped += 1;
            queue.held.get(self.old_dropped - 1).copied()?
        } else {
            self.new.pop_front()?
        };
        batch.delete(key(lane, seq));
        self.bytes -= u64::from(size);
        Some(u64::from(size))
    }
}

impl Outbox {
    /// Opens the outbox kept in `kv`, holding at most `budget` bytes of records.
    pub fn open(kv: Arc<dyn Kv>, budget: u64) -> Result<Self, OutboxError> {
        let mut state = State {
            dropped_total: number(&*kv, DROPPED_TOTAL)?,
            unreported: number(&*kv, UNREPORTED)?,
            ..State::default()
        };
        for lane in Lane::ALL {
            let queue = &mut state.lanes[lane.index()];
            let mut from = key(lane, 0).to_vec();
            let end = [prefix(lane) + 1];
            loop {
                let entries = kv.range(
                    Bound::Included(&from),
                    Bound::Excluded(&end),
                    Order::Ascending,
                    SCAN,
                )?;
                for (k, v) in &entries {
                    if let Some(seq) = seq_of(lane, k) {
                        let size = u32::try_from(v.len()).unwrap_or(u32::MAX);
                        queue.held.push_back((seq, size));
                        queue.bytes += u64::from(size);
                        queue.next = seq + 1;
                    }
                }
                match entries.last() {
                    Some((k, _)) if entries.len() == SCAN => {
                        from = k.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(Self {
            kv,
            budget,
            state: Mutex::new(state),
            on_push: Mutex::new(None),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, OutboxError> {
        self.state.lock().map_err(|_| OutboxError::Poisoned)
    }

    /// Stores records, each in its lane, dropping the oldest held ones when a budget would be
    /// exceeded (see the module's documentation for which go). Durable once
    /// [`Outbox::flush`] returns (the shipper flushes before every delivery). When the write
    /// fails (a full or failing disk) the held records stay as they were and the new ones are
    /// lost: they are counted as drops (in memory, as the disk is failing) and reported with
    /// the others.
    pub fn push(&self, records: &[Record]) -> Result<Pushed, OutboxError> {
        let encoded = records
            .iter()
            .map(|r| Ok((r.lane(), serde_json::to_vec(r)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let mut state = self.lock()?;
        let mut batch = Batch::new();
        let mut dropped = 0u64;
        let mut plans: [Plan; Lane::COUNT] = Default::default();
        for (plan, queue) in plans.iter_mut().zip(&state.lanes) {
            plan.bytes = queue.bytes;
            plan.next = queue.next;
        }
        for (lane, value) in encoded {
            let size = value.len() as u64;
            let l = lane.index();
            let lane_budget = lane.budget(self.budget);
            // Room that dropping this lane's and later lanes' records cannot make (earlier
            // lanes' records are never dropped for it): the new record alone goes.
            let earlier: u64 = plans[..l].iter().map(|p| p.bytes).sum();
            if size > lane_budget || earlier + size > self.budget {
                dropped += 1;
                continue;
            }
            // Room within the lane's own share, from its own oldest.
            while plans[l].bytes + size > lane_budget {
                if plans[l]
                    .drop_oldest(lane, &state.lanes[l], &mut batch)
                    .is_none()
                {
                    break;
                }
                dropped += 1;
            }
            // Room within the whole budget: from the last lane first, down to this one.
            for victim in Lane::ALL.into_iter().rev().filter(|v| *v >= lane) {
                let v = victim.index();
                while plans.iter().map(|p| p.bytes).sum::<u64>() + size > self.budget {
                    if plans[v]
                        .drop_oldest(victim, &state.lanes[v], &mut batch)
                        .is_none()
                    {
                        break;
                    }
                    dropped += 1;
                }
            }
            let plan = &mut plans[l];
            batch.put(key(lane, plan.next), value);
            plan.new
                .push_back((plan.next, u32::try_from(size).unwrap_or(u32::MAX)));
            plan.bytes += size;
            plan.next += 1;
        }
        if dropped > 0 {
            batch.put(
                DROPPED_TOTAL,
                (state.dropped_total + dropped).to_be_bytes().to_vec(),
            );
            batch.put(
                UNREPORTED,
                (state.unreported + dropped).to_be_bytes().to_vec(),
            );
        }
        if let Err(e) = self.kv.apply(batch) {
            let lost = records.len() as u64;
            state.dropped_total += lost;
            state.unreported += lost;
            return Err(e.into());
        }
        let mut stored = 0;
        for (queue, plan) in state.lanes.iter_mut().zip(plans) {
            queue.held.drain(..plan.old_dropped);
            stored += plan.new.len();
            queue.held.extend(plan.new);
            queue.bytes = plan.bytes;
            queue.next = plan.next;
        }
        state.dropped_total += dropped;
        state.unreported += dropped;
        drop(state);
        if stored > 0 {
            self.wake();
        }
        Ok(Pushed { stored, dropped })
    }

    /// Calls `waker` whenever records were stored (after the outbox's lock is released).
    pub fn on_push(&self, waker: Waker) {
        if let Ok(mut slot) = self.on_push.lock() {
            *slot = Some(waker);
        }
    }

    fn wake(&self) {
        let waker = self.on_push.lock().ok().and_then(|w| w.clone());
        if let Some(waker) = waker {
            waker();
        }
    }

    /// Makes everything pushed so far durable.
    pub fn flush(&self) -> Result<(), OutboxError> {
        Ok(self.kv.flush()?)
    }

    /// Up to `max_records` of the oldest records of `lane` (and no more than `max_bytes` of
    /// them, but at least one). Acknowledge them with
    /// [`Outbox::ack_through`]`(lane, peeked.through)`.
    pub fn peek(
        &self,
        lane: Lane,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Peeked, OutboxError> {
        let mut peeked = Peeked::default();
        let first = match self.lock()?.lanes[lane.index()].held.front() {
            Some((seq, _)) => *seq,
            None => return Ok(peeked),
        };
        let end = [prefix(lane) + 1];
        let entries = self.kv.range(
            Bound::Included(&key(lane, first)),
            Bound::Excluded(&end),
            Order::Ascending,
            max_records.max(1),
        )?;
        let mut bytes = 0;
        for (k, v) in entries {
            bytes += v.len() as u64;
            if peeked.through.is_some() && bytes > max_bytes {
                break;
            }
            let Some(seq) = seq_of(lane, &k) else {
                continue;
            };
            peeked.through = Some(seq);
            match serde_json::from_slice(&v) {
                Ok(record) => {
                    peeked.records.push(record);
                    peeked.seqs.push(seq);
                }
                // A record this build cannot read (left by another version): it goes with the
                // records around it, counted.
                Err(_) => peeked.unreadable += 1,
            }
        }
        Ok(peeked)
    }

    /// Removes every record of `lane` up to and including `seq` (the collector acknowledged
    /// them), and makes the removal durable.
    pub fn ack_through(&self, lane: Lane, seq: u64) -> Result<(), OutboxError> {
        let mut state = self.lock()?;
        let queue = &mut state.lanes[lane.index()];
        let mut batch = Batch::new();
        let mut freed = 0;
        let mut count = 0;
        for (s, size) in queue.held.iter() {
            if *s > seq {
                break;
            }
            batch.delete(key(lane, *s));
            freed += u64::from(*size);
            count += 1;
        }
        self.kv.apply(batch)?;
        queue.held.drain(..count);
        queue.bytes -= freed;
        drop(state);
        self.flush()
    }

    /// Records waiting, every lane.
    pub fn depth(&self) -> u64 {
        self.lock()
            .map_or(0, |s| s.lanes.iter().map(|q| q.held.len() as u64).sum())
    }

    /// Records waiting in `lane`.
    pub fn depth_of(&self, lane: Lane) -> u64 {
        self.lock()
            .map_or(0, |s| s.lanes[lane.index()].held.len() as u64)
    }

    /// Bytes of records waiting.
    pub fn bytes(&self) -> u64 {
        self.lock().map_or(0, |s| s.bytes())
    }

    /// Records dropped for lack of room, ever (kept across restarts).
    pub fn dropped_total(&self) -> u64 {
        self.lock().map_or(0, |s| s.dropped_total)
    }

    /// Drops not yet reported to the collector.
    pub fn unreported(&self) -> u64 {
        self.lock().map_or(0, |s| s.unreported)
    }

    /// Queues `alert` (which reports `reported` drops) and marks those drops reported, in one
    /// atomic write, so a crash cannot report them twice or not at all. The report is not held
    /// to the budget: it is the one record that says the budget was too small.
    pub fn report_drops(&self, alert: Alert, reported: u64) -> Result<(), OutboxError> {
        let value = serde_json::to_vec(&Record::Alert(alert))?;
        let mut state = self.lock()?;
        let remaining = state.unreported.saturating_sub(reported);
        let queue = &state.lanes[Lane::Alerts.index()];
        let seq = queue.next;
        let mut batch = Batch::new();
        batch.put(key(Lane::Alerts, seq), value.clone());
        batch.put(UNREPORTED, remaining.to_be_bytes().to_vec());
        self.kv.apply(batch)?;
        let queue = &mut state.lanes[Lane::Alerts.index()];
        queue.next += 1;
        queue.bytes += value.len() as u64;
        queue
            .held
            .push_back((seq, u32::try_from(value.len()).unwrap_or(u32::MAX)));
        state.unreported = remaining;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
