//! Retention: alerts older than the age limit go, and when the store outgrows its size limit
//! the oldest alerts go too, taken from the agents holding the most first, so one agent's
//! volume can never evict another's history (each agent's stored alerts are counted as they
//! come and go).
use std::collections::BTreeMap;
use std::ops::Bound;

use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::time::Timestamp;

use super::conversation::ConversationRecord;
use super::{Store, StoreError, corrupt, keys, rollup, u64_of};
use crate::kv::{Batch, Kv, Order, scan_prefix};

/// The prefix of the per-agent stored-alert counters (`C` + this + agent name).
const STORED_BY: &[u8] = b"stored/";

/// Set once every agent's stored alerts have been counted (a store written before the counts
/// were kept is counted once, at open).
const STORED_COUNTED: &[u8] = b"stored_counted";

/// Alerts one retention page looks at under the writer lock.
const PAGE: usize = 512;

/// The counter key of `agent`'s stored alerts.
pub(super) fn stored_key(agent: &str) -> Vec<u8> {
    let mut name = STORED_BY.to_vec();
    name.extend_from_slice(agent.as_bytes());
    keys::named(keys::COUNTER, &name)
}

/// How many of its oldest alerts each agent gives up so that `budget` alerts go in all, taken
/// from the agents holding the most: every agent above a level comes down to it (one more
/// for some, to make the sum exact), every agent at or below it keeps everything.
pub fn shares(held: &BTreeMap<String, u64>, budget: u64) -> BTreeMap<String, u64> {
    let total: u64 = held.values().sum();
    let budget = budget.min(total);
    let over = |level: u64| -> u64 { held.values().map(|c| c.saturating_sub(level)).sum() };
    // The highest level at which cutting everyone down to it removes at least `budget`.
    let (mut low, mut high) = (0u64, held.values().copied().max().unwrap_or(0));
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if over(mid) >= budget {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let level = low;
    let mut excess = over(level) - budget;
    let mut out = BTreeMap::new();
    for (agent, &count) in held {
        let mut give = count.saturating_sub(level);
        // Those that give up one fewer stay at level + 1, where the search found too little.
        if give > 0 && excess > 0 {
            give -= 1;
            excess -= 1;
        }
        if give > 0 {
            out.insert(agent.clone(), give);
        }
    }
    out
}

impl<K: Kv> Store<K> {
    /// Alerts stored per agent.
    pub fn stored_by_agent(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let prefix = keys::named(keys::COUNTER, STORED_BY);
        Ok(
            scan_prefix(&self.kv, &prefix, Order::Ascending, usize::MAX)?
                .into_iter()
                .filter_map(|(k, v)| {
                    let agent = String::from_utf8(k.get(prefix.len()..)?.to_vec()).ok()?;
                    Some((agent, u64_of(&v)))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    /// Counts every agent's stored alerts once, for a store written before the counts were
    /// kept.
    pub(super) fn count_stored_by_agent(&self) -> Result<(), StoreError> {
        let marker = keys::named(keys::COUNTER, STORED_COUNTED);
        if self.kv.get(&marker)?.is_some() {
            return Ok(());
        }
        let _writer = self.write_lock()?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut from = Bound::Included(vec![keys::ALERT]);
        loop {
            let page = self.kv.range(
                from.as_ref().map(Vec::as_slice),
                Bound::Excluded(&[keys::ALERT + 1][..]),
                Order::Ascending,
                4096,
            )?;
            let Some((last, _)) = page.last() else { break };
            from = Bound::Excluded(last.clone());
            for (_, v) in &page {
                let alert: Alert = serde_json::from_slice(v).map_err(corrupt)?;
                *counts.entry(alert.agent).or_default() += 1;
            }
        }
        let mut b = Batch::new();
        for (agent, n) in counts {
            b.put(stored_key(&agent), n.to_be_bytes().to_vec());
        }
        b.put(marker, 1u64.to_be_bytes().to_vec());
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(())
    }

    /// Removes alerts with their index postings: every alert captured before `older_than`,
    /// and, when the store is larger than `max_bytes`, a tenth of the rest, the oldest of the
    /// agents holding the most ([`shares`]): an agent that floods the store loses its own
    /// history first. Called periodically, this converges without emptying the store on an
    /// engine that reclaims space lazily. Returns how many were removed.
    ///
    /// The writer lock is held for one page of alerts at a time, so ingest and heartbeats go
    /// on while a long pass (a first age cut over a large backlog) works through the store.
    pub fn enforce_retention(
        &self,
        older_than: Option<Timestamp>,
        max_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        let over = match max_bytes {
            Some(max) => self.kv.live_bytes()? > max,
            None => false,
        };
        let mut quota = if over {
            let held = self.stored_by_agent()?;
            let budget = (held.values().sum::<u64>() / 10).max(1);
            shares(&held, budget)
        } else {
            BTreeMap::new()
        };
        let mut removed = 0u64;
        // The newest alert a share removed: shares take alerts out of time order, so the
        // postings that listed them may be older than alerts that stay.
        let mut newest_shared: Option<u64> = None;
        let mut from = Bound::Included(vec![keys::ALERT]);
        'pages: loop {
            let writer = self.write_lock()?;
            let page = self.kv.range(
                from.as_ref().map(Vec::as_slice),
                Bound::Excluded(&[keys::ALERT + 1][..]),
                Order::Ascending,
                PAGE,
            )?;
            let mut b = Batch::new();
            let mut gone: BTreeMap<String, u64> = BTreeMap::new();
            let mut counts = rollup::Changes::default();
            let mut evidence_gone: BTreeMap<String, u64> = BTreeMap::new();
            let mut done = page.len() < PAGE;
            for (k, v) in &page {
                from = Bound::Excluded(k.clone());
                let alert: Alert = serde_json::from_slice(v).map_err(corrupt)?;
                let expired = older_than.is_some_and(|t| alert.ts < t);
                if !expired && quota.is_empty() {
                    // Alerts are in time order: none after this one is expired either.
                    done = true;
                    break;
                }
                let share = quota.get_mut(&alert.agent);
                if !expired && share.is_none() {
                    continue;
                }
                if let Some(left) = share {
                    *left -= 1;
                    if *left == 0 {
                        quota.remove(&alert.agent);
                    }
                    if !expired {
                        newest_shared = Some(alert.ts.as_nanos());
                    }
                }
                b.delete(k.clone());
                if let Some(id) = keys::alert_id(&alert.id) {
                    b.delete(keys::named(keys::ID, &id));
                    if alert.severity >= Severity::High {
                        let marker = keys::named(keys::EVIDENCE, &id);
                        if let Some(len) = self.kv.get(&marker)? {
                            *evidence_gone.entry(alert.agent.clone()).or_default() += u64_of(&len);
                            let mut body = marker.clone();
                            body.push(b'p');
                            b.delete(marker);
                            b.delete(body);
                        }
                    }
                }
                counts.remove(&alert);
                *gone.entry(alert.agent).or_default() += 1;
            }
            let in_page: u64 = gone.values().sum();
            if in_page > 0 {
                removed += in_page;
                let left = self.counter(b"alerts")?.saturating_sub(in_page);
                b.put(
                    keys::named(keys::COUNTER, b"alerts"),
                    left.to_be_bytes().to_vec(),
                );
                for (agent, n) in gone {
                    self.take_off(&mut b, stored_key(&agent), n)?;
                }
                counts.write(&self.kv, &mut b)?;
                for (agent, n) in evidence_gone {
                    self.take_off(&mut b, super::evidence_bytes_key(&agent), n)?;
                }
                self.kv.apply(b)?;
                drop(writer);
                self.kv.flush()?;
            }
            if done {
                break 'pages;
            }
        }
        self.remove_spent_postings()?;
        self.remove_spent_rollups()?;
        self.remove_spent_sequences()?;
        if let Some(t) = older_than {
            self.expire_conversations(t)?;
        }
        if let Some(newest) = newest_shared {
            self.remove_dead_postings(newest.saturating_add(keys::POSTING_SPAN_NANOS))?;
        }
        Ok(removed)
    }

    /// Removes the oldest sequence records none of whose alerts is stored any more, up to the
    /// first that still numbers one (what stays is bounded by the alerts that stay).
    fn remove_spent_sequences(&self) -> Result<(), StoreError> {
        loop {
            let writer = self.write_lock()?;
            let page = self.kv.range(
                Bound::Included(&[keys::SEQUENCE][..]),
                Bound::Excluded(&[keys::SEQUENCE + 1][..]),
                Order::Ascending,
                16,
            )?;
            let mut b = Batch::new();
            let mut spent = 0;
            for (k, record) in &page {
                let mut alive = false;
                for suffix in record.get(8..).unwrap_or_default().chunks_exact(24) {
                    if let Ok(suffix) = <[u8; 24]>::try_from(suffix)
                        && self.kv.get(&keys::alert(&suffix))?.is_some()
                    {
                        alive = true;
                        break;
                    }
                }
                if alive {
                    break;
                }
                b.delete(k.clone());
                spent += 1;
            }
            if spent > 0 {
                self.kv.apply(b)?;
            }
            drop(writer);
            if spent < 16 || page.len() < 16 {
                return Ok(());
            }
        }
    }

    /// Writes the counter under `key` less `n` (not below 0) into `b`.
    fn take_off(&self, b: &mut Batch, key: Vec<u8>, n: u64) -> Result<(), StoreError> {
        let left = self
            .kv
            .get(&key)?
            .map_or(0, |v| u64_of(&v))
            .saturating_sub(n);
        b.put(key, left.to_be_bytes().to_vec());
        Ok(())
    }

    /// Removes the conversations quiet since before `older_than` (no window with requests
    /// since), freeing their place under the caps. A page at a time under the writer lock.
    fn expire_conversations(&self, older_than: Timestamp) -> Result<(), StoreError> {
        let mut from = Bound::Included(vec![keys::CONVERSATION]);
        loop {
            let writer = self.write_lock()?;
            let page = self.kv.range(
                from.as_ref().map(Vec::as_slice),
                Bound::Excluded(&[keys::CONVERSATION + 1][..]),
                Order::Ascending,
                PAGE,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            from = Bound::Excluded(last.clone());
            let mut b = Batch::new();
            let mut gone = 0u64;
            let mut by_agent: BTreeMap<String, u64> = BTreeMap::new();
            for (k, v) in &page {
                let c: ConversationRecord = serde_json::from_slice(v).map_err(corrupt)?;
                if c.last_seen.max(c.first_seen) >= older_than {
                    continue;
                }
                b.delete(k.clone());
                gone += 1;
                if let Some(first) = c.agents.first() {
                    *by_agent.entry(first.agent.clone()).or_default() += 1;
                }
            }
            if gone > 0 {
                self.count_conversations_gone(&mut b, gone, &by_agent)?;
                self.kv.apply(b)?;
            }
            drop(writer);
        }
    }

    /// Removes every posting, among the groups whose newest alert is before `until`
    /// (nanoseconds), that lists no alert still stored, and every group left empty. After a
    /// pass that took alerts out of time order (fair shares), the oldest alert left may be
    /// another agent's and hold back [`Self::remove_spent_postings`]; this frees the index of
    /// what was removed all the same, so the store shrinks. Each page of groups is judged under
    /// the writer lock (an ingest cannot add to a posting: each is written once).
    fn remove_dead_postings(&self, until: u64) -> Result<(), StoreError> {
        let end = keys::named(keys::POSTING_RECORDS, &until.to_be_bytes());
        let mut from = Bound::Included(vec![keys::POSTING_RECORDS]);
        loop {
            let writer = self.write_lock()?;
            let page = self.kv.range(
                from.as_ref().map(Vec::as_slice),
                Bound::Excluded(end.as_slice()),
                Order::Ascending,
                256,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            from = Bound::Excluded(last.clone());
            let mut b = Batch::new();
            let mut changed = false;
            for (record, list) in &page {
                let postings = keys::posting_keys(list);
                let mut live: Vec<&[u8]> = Vec::with_capacity(postings.len());
                for posting in postings.iter().copied() {
                    if self.lists_a_stored_alert(posting)? {
                        live.push(posting);
                    } else {
                        b.delete(posting.to_vec());
                        changed = true;
                    }
                }
                if live.is_empty() {
                    b.delete(record.clone());
                    changed = true;
                } else if live.len() < postings.len() {
                    b.put(record.clone(), keys::posting_list(live));
                }
            }
            if changed {
                self.kv.apply(b)?;
            }
            drop(writer);
        }
    }

    /// Whether the posting under `key` lists an alert still stored (newest first: alerts go
    /// oldest first, so a live posting usually answers at its first look).
    fn lists_a_stored_alert(&self, key: &[u8]) -> Result<bool, StoreError> {
        let Some(members) = self.kv.get(key)? else {
            return Ok(false);
        };
        let entries: Vec<[u8; 24]> = keys::posting_entries(&members).collect();
        for suffix in entries.iter().rev() {
            if self.kv.get(&keys::alert(suffix))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes every group of postings whose newest alert is older than the oldest alert left:
    /// all they list is gone. Each page is judged under the writer lock against the oldest
    /// alert at that moment (a batch ingested meanwhile could list older alerts). Also run at
    /// open (a crash may have come between removing alerts and this).
    pub(super) fn remove_spent_postings(&self) -> Result<(), StoreError> {
        loop {
            let writer = self.write_lock()?;
            let oldest = scan_prefix(&self.kv, &[keys::ALERT], Order::Ascending, 1)?;
            let end = match oldest.first().and_then(|(k, _)| keys::suffix_of(k)) {
                Some(suffix) => keys::named(keys::POSTING_RECORDS, &suffix),
                None => vec![keys::POSTING_RECORDS + 1],
            };
            let page = self.kv.range(
                Bound::Included(&[keys::POSTING_RECORDS][..]),
                Bound::Excluded(end.as_slice()),
                Order::Ascending,
                256,
            )?;
            if page.is_empty() {
                drop(writer);
                // Stale postings are harmless to queries; one flush at the end is enough.
                self.kv.flush()?;
                return Ok(());
            }
            let mut b = Batch::new();
            for (k, list) in &page {
                for posting in keys::posting_keys(list) {
                    b.delete(posting.to_vec());
                }
                b.delete(k.clone());
            }
            self.kv.apply(b)?;
        }
    }
}

#[cfg(test)]
mod tests;
