//! The agent's outbox: every alert and asset observation is written here (sled, through the
//! [`Kv`] trait) before it is shipped, and removed only once the collector has acknowledged
//! it. It survives restarts and `kill -9`, and a collector outage of hours.
//!
//! It is bounded by a disk budget (bytes of records): when a new record would not fit, the
//! oldest go first. Every drop is counted, persistently, so it can be reported to the
//! collector as an alert of its own once it is reachable (see [`Outbox::report_drops`]).
//!
//! Records are kept under `q` + a big-endian sequence number, so the oldest come first;
//! counters under `m:`.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use otwatch_kv::{Batch, Kv, KvError, Order};
use otwatch_rules::alert::Alert;
use otwatch_rules::wire::AssetObservation;
use serde::{Deserialize, Serialize};

/// One thing to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Record {
    /// An alert.
    Alert(Alert),
    /// What the agent learned about a host.
    Asset(AssetObservation),
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

const QUEUE: u8 = b'q';
const DROPPED_TOTAL: &[u8] = b"m:dropped_total";
const UNREPORTED: &[u8] = b"m:unreported";

fn key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = QUEUE;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    match key {
        [QUEUE, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

fn number(kv: &dyn Kv, key: &[u8]) -> Result<u64, KvError> {
    Ok(kv
        .get(key)?
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number and size of every record held, oldest first.
    held: VecDeque<(u64, u32)>,
    bytes: u64,
    next: u64,
    dropped_total: u64,
    unreported: u64,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Records stored.
    pub stored: usize,
    /// Records dropped to make room (older ones, or a new one larger than the whole budget).
    pub dropped: u64,
}

/// The oldest records, ready to send.
#[derive(Debug, Default)]
pub struct Peeked {
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Each record's sequence number. Held records are numbered without gaps, so the numbers
    /// between two of these are records that could not be read.
    pub seqs: Vec<u64>,
    /// The sequence number of the last record read: acknowledge through it.
    pub through: Option<u64>,
    /// Records that could not be read (they are acknowledged with the rest).
    pub unreadable: u64,
}

/// Records waiting for delivery, oldest first.
pub struct Outbox {
    kv: Arc<dyn Kv>,
    budget: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("budget", &self.budget)
            .finish()
    }
}

/// Records read per scan when reopening.
const SCAN: usize = 10_000;

impl Outbox {
    /// Opens the outbox kept in `kv`, holding at most `budget` bytes of records.
    pub fn open(kv: Arc<dyn Kv>, budget: u64) -> Result<Self, OutboxError> {
        let mut state = State {
            dropped_total: number(&*kv, DROPPED_TOTAL)?,
            unreported: number(&*kv, UNREPORTED)?,
            ..State::default()
        };
        let mut from = key(0).to_vec();
        loop {
            let end = [QUEUE + 1];
            let entries = kv.range(
                Bound::Included(&from),
                Bound::Excluded(&end),
                Order::Ascending,
                SCAN,
            )?;
            for (k, v) in &entries {
                if let Some(seq) = seq_of(k) {
                    let size = u32::try_from(v.len()).unwrap_or(u32::MAX);
                    state.held.push_back((seq, size));
                    state.bytes += u64::from(size);
                    state.next = seq + 1;
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
        Ok(Self {
            kv,
            budget,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, OutboxError> {
        self.state.lock().map_err(|_| OutboxError::Poisoned)
    }

    /// Stores records, dropping the oldest held ones when the budget would be exceeded.
    /// Durable once [`Outbox::flush`] returns (the shipper flushes before every delivery).
    /// When the write fails (a full or failing disk) the held records stay as they were and
    /// the new ones are lost: they are counted as drops (in memory, as the disk is failing)
    /// and reported with the others.
    pub fn push(&self, records: &[Record]) -> Result<Pushed, OutboxError> {
        let encoded = records
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.lock()?;
        let mut batch = Batch::new();
        let mut dropped = 0u64;
        let mut bytes = state.bytes;
        let mut next = state.next;
        // Held records dropped from the front, then new records (some of which a large push
        // may drop again before it ends).
        let mut old_dropped = 0;
        let mut new: VecDeque<(u64, u32)> = VecDeque::new();
        for value in encoded {
            let size = value.len() as u64;
            if size > self.budget {
                dropped += 1;
                continue;
            }
            while bytes + size > self.budget {
                let victim = if old_dropped < state.held.len() {
                    old_dropped += 1;
                    state.held.get(old_dropped - 1).copied()
                } else {
                    new.pop_front()
                };
                let Some((seq, old)) = victim else { break };
                bytes -= u64::from(old);
                batch.delete(key(seq));
                dropped += 1;
            }
            batch.put(key(next), value);
            new.push_back((next, u32::try_from(size).unwrap_or(u32::MAX)));
            bytes += size;
            next += 1;
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
        state.held.drain(..old_dropped);
        let stored = new.len();
        state.held.extend(new);
        state.bytes = bytes;
        state.next = next;
        state.dropped_total += dropped;
        state.unreported += dropped;
        Ok(Pushed { stored, dropped })
    }

    /// Makes everything pushed so far durable.
    pub fn flush(&self) -> Result<(), OutboxError> {
        Ok(self.kv.flush()?)
    }

    /// Up to `max_records` of the oldest records (and no more than `max_bytes` of them, but at
    /// least one). Acknowledge them with [`Outbox::ack_through`]`(peeked.through)`.
    pub fn peek(&self, max_records: usize, max_bytes: u64) -> Result<Peeked, OutboxError> {
        let mut peeked = Peeked::default();
        let first = match self.lock()?.held.front() {
            Some((seq, _)) => *seq,
            None => return Ok(peeked),
        };
        let end = [QUEUE + 1];
        let entries = self.kv.range(
            Bound::Included(&key(first)),
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
            let Some(seq) = seq_of(&k) else { continue };
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

    /// Removes every record up to and including `seq` (the collector acknowledged them), and
    /// makes the removal durable.
    pub fn ack_through(&self, seq: u64) -> Result<(), OutboxError> {
        let mut state = self.lock()?;
        let mut batch = Batch::new();
        let mut freed = 0;
        let mut count = 0;
        for (s, size) in state.held.iter() {
            if *s > seq {
                break;
            }
            batch.delete(key(*s));
            freed += u64::from(*size);
            count += 1;
        }
        self.kv.apply(batch)?;
        state.held.drain(..count);
        state.bytes -= freed;
        drop(state);
        self.flush()
    }

    /// Records waiting.
    pub fn depth(&self) -> u64 {
        self.lock().map_or(0, |s| s.held.len() as u64)
    }

    /// Bytes of records waiting.
    pub fn bytes(&self) -> u64 {
        self.lock().map_or(0, |s| s.bytes)
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
    /// atomic write, so a crash cannot report them twice or not at all.
    pub fn report_drops(&self, alert: Alert, reported: u64) -> Result<(), OutboxError> {
        let value = serde_json::to_vec(&Record::Alert(alert))?;
        let mut state = self.lock()?;
        let remaining = state.unreported.saturating_sub(reported);
        let seq = state.next;
        let mut batch = Batch::new();
        batch.put(key(seq), value.clone());
        batch.put(UNREPORTED, remaining.to_be_bytes().to_vec());
        self.kv.apply(batch)?;
        state.next += 1;
        state.bytes += value.len() as u64;
        state
            .held
            .push_back((seq, u32::try_from(value.len()).unwrap_or(u32::MAX)));
        state.unreported = remaining;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
