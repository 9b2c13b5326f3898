//! The collector's store: alerts in time order with indexes, agents, assets, incidents and
//! credentials, on any [`Kv`] engine.
//!
//! Invariants:
//! - Ingest is idempotent by alert id: an alert already stored is counted as a duplicate and
//!   changes nothing (a retried batch never double counts).
//! - [`Store::ingest`] returns only after the batch is durable (applied atomically, flushed), so
//!   an acknowledged alert survives `kill -9`.
//! - An alert and its index postings are written in the same atomic batch. Retention removes
//!   the oldest alerts, then every group of postings (those whose newest alert falls in one
//!   second) whose newest alert is gone. A posting may still list removed alerts until its
//!   group goes; queries skip those.
//! - The schema version is written on first open and checked on every open; an older store is
//!   upgraded in place before anything else reads it.
//!
//! Credentials are here only when the store is shared by replicas ([`CREDENTIALS_KEY`]); with
//! sled they live in a small file of their own ([`crate::auth`]), so agents can be enrolled
//! while the collector runs.

mod asset;
#[cfg(test)]
mod conformance;
pub mod conversation;
mod keys;
pub mod learn;
mod lease;
mod migrate;
pub mod model;
pub mod policy;
mod query;
mod retention;
pub mod rollup;
pub mod session;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Mutex;
use std::time::Duration;

use otwatch_rules::alert::Alert;
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::{Heartbeat, IngestBatch, IngestReply};

use crate::kv::{Batch, Kv, KvError, Order, scan_prefix};
use conversation::ConversationRecord;
use model::{AgentRecord, AssetRecord, Incident, IncidentState, Role, StateChange};
pub use query::{AlertFilter, AlertPage};

/// The on-disk schema this build reads and writes. A store of schema 1 (one index key per
/// alert and value, before postings), 2 (index keys not prefix-free) or 3 (before the
/// [`rollup`] counts) is upgraded in place when opened.
pub const SCHEMA_VERSION: u32 = 4;

/// The record holding the credentials when the store is shared by replicas
/// ([`crate::auth`]); with sled they are a file of their own.
pub const CREDENTIALS_KEY: &[u8] = b"Mcredentials";

/// The prefix of the audit records when the store is shared by replicas ([`crate::audit`]).
pub const AUDIT_PREFIX: &[u8] = &[keys::AUDIT];

/// Longest note on an incident change, in bytes.
pub const MAX_NOTE: usize = 4096;

/// Most state changes an incident keeps (the newest).
pub const MAX_HISTORY: usize = 100;

/// The counter of open incidents.
const OPEN_INCIDENTS: &[u8] = b"incidents_open";

/// The counter of asset list entries (MACs, units, functions, peers, reports) dropped because
/// a list was full.
const ASSET_ENTRIES_DROPPED: &[u8] = b"asset_entries_dropped";

/// The counters of conversations stored, and of reports of new ones not kept because
/// [`conversation::MAX_CONVERSATIONS`] were, or the reporting agent's
/// [`conversation::MAX_PER_AGENT`].
const CONVERSATIONS: &[u8] = b"conversations";
const CONVERSATIONS_DROPPED: &[u8] = b"conversations_dropped";

/// Most bytes of evidence one agent's alerts may hold: evidence beyond is refused, so one
/// agent's packets cannot crowd out every other agent's history.
pub const MAX_EVIDENCE_PER_AGENT: u64 = 256 << 20;

/// The counter of the bytes of evidence `agent`'s alerts hold.
fn evidence_bytes_key(agent: &str) -> Vec<u8> {
    let mut name = b"evidence_bytes/".to_vec();
    name.extend_from_slice(agent.as_bytes());
    keys::named(keys::COUNTER, &name)
}

/// The counter of conversations `agent` was first to report.
fn conversations_by(agent: &str) -> Vec<u8> {
    let mut name = b"conversations_by/".to_vec();
    name.extend_from_slice(agent.as_bytes());
    keys::named(keys::COUNTER, &name)
}

/// Alerts of one rule between the same hosts join an incident while they come less than this
/// apart.
pub const INCIDENT_WINDOW: Duration = Duration::from_secs(3600);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The data on disk is from another schema version.
    #[error("store schema version {found} is not supported (expected {SCHEMA_VERSION})")]
    Schema {
        /// The version found.
        found: u32,
    },
    /// Stored data does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The request refers to something that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is not valid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What was wrong and what was expected.
        message: String,
    },
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own types to JSON cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_vec(value).unwrap_or_default()
}

/// The collector's data.
pub struct Store<K: Kv> {
    kv: K,
    /// Ingest and incident updates read, then write: one at a time.
    writer: Mutex<()>,
}

impl<K: Kv> Store<K> {
    /// Opens a store, writing the schema version if it is new, upgrading it if it is older and
    /// refusing it if it is unknown.
    pub fn open(kv: K) -> Result<Self, StoreError> {
        {
            // Replicas opening one shared store together upgrade it once.
            let _section = kv.section()?;
            Self::prepare_schema(&kv)?;
        }
        let store = Self {
            kv,
            writer: Mutex::new(()),
        };
        store.remove_spent_postings()?;
        store.count_open_incidents()?;
        store.count_stored_by_agent()?;
        Ok(store)
    }

    /// Writes the schema version of a new store, upgrades an older one and refuses one it
    /// does not know.
    fn prepare_schema(kv: &K) -> Result<(), StoreError> {
        let key = keys::named(keys::META, b"schema");
        match kv.get(&key)? {
            Some(v) => {
                let found = v
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if found == migrate::V1 {
                    migrate::from_v1(kv, key.clone(), migrate::V2)?;
                }
                if found == migrate::V1 || found == migrate::V2 {
                    migrate::from_v2(kv, key.clone(), migrate::V3)?;
                }
                if (migrate::V1..=migrate::V3).contains(&found) {
                    migrate::from_v3(kv, key, SCHEMA_VERSION)?;
                } else if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
            None => {
                let mut b = Batch::new();
                b.put(key, SCHEMA_VERSION.to_be_bytes().to_vec());
                kv.apply(b)?;
                kv.flush()?;
            }
        }
        Ok(())
    }

    /// The engine underneath.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    // ---- ingest ----

    /// Stores a batch from `principal` and returns once it is durable.
    pub fn ingest(
        &self,
        batch: &IngestBatch,
        now: Timestamp,
    ) -> Result<(IngestReply, Vec<Alert>), StoreError> {
        self.ingest_sequenced(batch, now)
            .map(|(reply, fresh)| (reply, fresh.into_iter().map(|(_, a)| a).collect()))
    }

    /// [`Store::ingest`], each stored alert with its ingest sequence number: numbers grow by
    /// one per stored alert, in the order alerts were stored, and are never reused (the live
    /// feed's event ids, which a subscriber resumes from).
    pub fn ingest_sequenced(
        &self,
        batch: &IngestBatch,
        now: Timestamp,
    ) -> Result<(IngestReply, Vec<(u64, Alert)>), StoreError> {
        // Work that needs no lock: ids checked, keys and records encoded, postings made as if
        // every alert were new (a batch with duplicates makes them again below).
        let mut prepared = Vec::with_capacity(batch.alerts.len());
        for alert in &batch.alerts {
            let id = keys::alert_id(&alert.id).ok_or_else(|| StoreError::Invalid {
                field: "alerts[].id".into(),
                message: format!("{:?} is not an alert id (expected 32 hex digits)", alert.id),
            })?;
            let suffix = keys::order(alert.ts.as_nanos(), &id);
            prepared.push((id, suffix, alert, json(alert)));
        }
        let mut postings = keys::postings(prepared.iter().map(|(_, s, a, _)| (s, *a)));

        let writer = self.write_lock()?;
        let mut reply = IngestReply::default();
        let mut b = Batch::new();
        let mut seen_in_batch = std::collections::HashSet::new();
        let mut incidents: Vec<Incident> = Vec::new();
        let first_new_incident = self.counter(b"incident")?;
        let mut next_seq = self.counter(b"sequence")?;
        let mut next_incident = first_new_incident;
        let mut indexed: Vec<([u8; 24], &Alert)> = Vec::new();
        // Which ids are stored already, asked at once (one round trip to a database).
        let id_keys: Vec<Vec<u8>> = prepared
            .iter()
            .map(|(id, ..)| keys::named(keys::ID, id))
            .collect();
        let id_refs: Vec<&[u8]> = id_keys.iter().map(Vec::as_slice).collect();
        let stored_already = self.kv.get_many(&id_refs)?;
        let mut known = self.incidents_of_keys(prepared.iter().map(|(_, _, a, _)| *a))?;
        for ((id, suffix, alert, encoded), stored) in prepared.into_iter().zip(stored_already) {
            if !seen_in_batch.insert(id) || stored.is_some() {
                reply.duplicates += 1;
                continue;
            }
            b.put(keys::alert(&suffix), encoded);
            b.put(
                keys::named(keys::ID, &id),
                alert.ts.as_nanos().to_be_bytes().to_vec(),
            );
            indexed.push((suffix, alert));
            self.group(alert, &mut incidents, &mut next_incident, &mut known);
            reply.accepted += 1;
        }
        if reply.duplicates > 0 {
            postings = keys::postings(indexed.iter().map(|(s, a)| (s, *a)));
        }
        for (record, list) in
            keys::posting_records(postings.iter().map(|(k, _)| k.as_slice()), false)
        {
            b.put(record, list);
        }
        for (key, posting) in postings {
            b.put(key, posting);
        }
        self.put_incidents(&mut b, incidents, first_new_incident, next_incident)?;
        if !indexed.is_empty() {
            // One record numbers the batch's alerts: the first number, then their suffixes.
            let first = next_seq + 1;
            next_seq += indexed.len() as u64;
            let mut record = Vec::with_capacity(8 + 24 * indexed.len());
            record.extend_from_slice(&first.to_be_bytes());
            for (suffix, _) in &indexed {
                record.extend_from_slice(suffix);
            }
            b.put(keys::sequence(next_seq), record);
            b.put(
                keys::named(keys::COUNTER, b"sequence"),
                next_seq.to_be_bytes().to_vec(),
            );
        }
        let stored = self.counter(b"alerts")? + reply.accepted as u64;
        b.put(
            keys::named(keys::COUNTER, b"alerts"),
            stored.to_be_bytes().to_vec(),
        );
        self.count_per_agent(&mut b, &indexed)?;
        let mut counts = rollup::Changes::default();
        for (_, a) in &indexed {
            counts.add(a);
        }
        counts.write(&self.kv, &mut b)?;
        reply.assets += self.merge_assets(&mut b, batch)?;
        self.merge_conversations(&mut b, batch)?;
        if reply.accepted > 0 {
            let key = keys::named(keys::AGENT, batch.agent.as_bytes());
            let mut record = self.agent(&batch.agent)?.unwrap_or_else(|| AgentRecord {
                heartbeat: Heartbeat {
                    agent: batch.agent.clone(),
                    ..Heartbeat::default()
                },
                seen_at: now,
                first_seen: now,
                alerts: 0,
            });
            record.alerts += reply.accepted as u64;
            b.put(key, json(&record));
        }
        self.kv.apply(b)?;
        drop(writer);
        let first_seq = next_seq - indexed.len() as u64;
        let fresh = indexed
            .into_iter()
            .enumerate()
            .map(|(i, (_, a))| (first_seq + 1 + i as u64, a.clone()))
            .collect();
        // Flushed outside the writer lock: the next batch is applied while this one reaches
        // the disk, and one flush makes both durable (group commit). A batch that found an id
        // already stored by a batch not yet flushed is acknowledged only after its own flush,
        // which covers that earlier batch too.
        self.kv.flush()?;
        Ok((reply, fresh))
    }

    /// Writes the incidents a batch opened or joined (`incidents`), the incident counter
    /// (`next`: the next id; ids above `first_new` were opened by the batch), and the count of
    /// open incidents.
    fn put_incidents(
        &self,
        b: &mut Batch,
        mut incidents: Vec<Incident>,
        first_new_incident: u64,
        next_incident: u64,
    ) -> Result<(), StoreError> {
        // Oldest first, so that where a batch closed one incident and opened the next for the
        // same key, the key is left pointing at the newer.
        incidents.sort_unstable_by_key(|i| i.id);
        for incident in &incidents {
            b.put(
                keys::named(keys::INCIDENT, &incident.id.to_be_bytes()),
                json(incident),
            );
            // An incident this batch joined is already the open one for its key.
            if incident.id > first_new_incident {
                let k = keys::incident_key(
                    &incident.rule,
                    &incident.src_ip.to_string(),
                    &incident.dst_ip.to_string(),
                );
                b.put(k, incident.id.to_be_bytes().to_vec());
            }
        }
        b.put(
            keys::named(keys::COUNTER, b"incident"),
            next_incident.to_be_bytes().to_vec(),
        );
        // Every incident this batch opened is open.
        if next_incident > first_new_incident {
            let open = self.counter(OPEN_INCIDENTS)? + (next_incident - first_new_incident);
            b.put(
                keys::named(keys::COUNTER, OPEN_INCIDENTS),
                open.to_be_bytes().to_vec(),
            );
        }
        Ok(())
    }

    /// Adds the alerts a batch stored (`indexed`) to each agent's count, for retention's fair
    /// shares.
    fn count_per_agent(
        &self,
        b: &mut Batch,
        indexed: &[([u8; 24], &Alert)],
    ) -> Result<(), StoreError> {
        let mut by_agent: HashMap<&str, u64> = HashMap::new();
        for (_, a) in indexed {
            *by_agent.entry(a.agent.as_str()).or_default() += 1;
        }
        for (agent, n) in by_agent {
            let key = retention::stored_key(agent);
            let held = self.kv.get(&key)?.map_or(0, |v| u64_of(&v)) + n;
            b.put(key, held.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// Merges a batch's asset observations into the stored assets, each agent's labels kept
    /// apart; returns how many observations were taken.
    fn merge_assets(&self, b: &mut Batch, batch: &IngestBatch) -> Result<usize, StoreError> {
        let mut taken = 0;
        // Merged into what this batch already merged for the host (several workers each report
        // their view of it), else into what is stored.
        let mut assets: HashMap<Vec<u8>, AssetRecord> = HashMap::new();
        let mut dropped = 0;
        for obs in &batch.assets {
            let key = keys::named(keys::ASSET, obs.ip.to_string().as_bytes());
            match assets.entry(key) {
                Entry::Occupied(mut merged) => {
                    dropped += merged.get_mut().observe(&batch.agent, obs)
                }
                Entry::Vacant(slot) => {
                    let merged = match self.kv.get(slot.key())? {
                        Some(v) => {
                            let mut known: AssetRecord =
                                serde_json::from_slice(&v).map_err(corrupt)?;
                            dropped += known.observe(&batch.agent, obs);
                            known
                        }
                        None => {
                            let fresh = AssetRecord::new(&batch.agent, obs);
                            dropped += fresh.dropped.total();
                            fresh
                        }
                    };
                    slot.insert(merged);
                }
            }
            taken += 1;
        }
        for (key, merged) in assets {
            b.put(key, json(&merged));
        }
        if dropped > 0 {
            let total = self.counter(ASSET_ENTRIES_DROPPED)? + dropped;
            b.put(
                keys::named(keys::COUNTER, ASSET_ENTRIES_DROPPED),
                total.to_be_bytes().to_vec(),
            );
        }
        Ok(taken)
    }

    /// Merges a batch's conversation windows into the stored conversations; a new pair past
    /// [`conversation::MAX_CONVERSATIONS`], or past [`conversation::MAX_PER_AGENT`] first
    /// reported by this agent, is counted, not stored: one agent cannot fill the map for all.
    fn merge_conversations(&self, b: &mut Batch, batch: &IngestBatch) -> Result<(), StoreError> {
        if batch.conversations.is_empty() {
            return Ok(());
        }
        let mut merged: HashMap<Vec<u8>, ConversationRecord> = HashMap::new();
        let mut stored = self.counter(CONVERSATIONS)?;
        let by_agent_key = conversations_by(&batch.agent);
        let mut by_agent = self.kv.get(&by_agent_key)?.map_or(0, |v| u64_of(&v));
        let mut dropped = 0u64;
        for o in &batch.conversations {
            let key = keys::conversation(o.master, o.slave);
            match merged.entry(key) {
                Entry::Occupied(mut known) => known.get_mut().observe(&batch.agent, o),
                Entry::Vacant(slot) => match self.kv.get(slot.key())? {
                    Some(v) => {
                        let mut known: ConversationRecord =
                            serde_json::from_slice(&v).map_err(corrupt)?;
                        known.observe(&batch.agent, o);
                        slot.insert(known);
                    }
                    None if stored < conversation::MAX_CONVERSATIONS
                        && by_agent < conversation::MAX_PER_AGENT =>
                    {
                        stored += 1;
                        by_agent += 1;
                        slot.insert(ConversationRecord::new(&batch.agent, o));
                    }
                    None => dropped += 1,
                },
            }
        }
        for (key, record) in merged {
            b.put(key, json(&record));
        }
        b.put(
            keys::named(keys::COUNTER, CONVERSATIONS),
            stored.to_be_bytes().to_vec(),
        );
        b.put(by_agent_key, by_agent.to_be_bytes().to_vec());
        if dropped > 0 {
            let total = self.counter(CONVERSATIONS_DROPPED)? + dropped;
            b.put(
                keys::named(keys::COUNTER, CONVERSATIONS_DROPPED),
                total.to_be_bytes().to_vec(),
            );
        }
        Ok(())
    }

    /// Takes `gone` conversations off the stored count, and each first reporter's share off
    /// its count (`by_agent`).
    fn count_conversations_gone(
        &self,
        b: &mut Batch,
        gone: u64,
        by_agent: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        let left = self.counter(CONVERSATIONS)?.saturating_sub(gone);
        b.put(
            keys::named(keys::COUNTER, CONVERSATIONS),
            left.to_be_bytes().to_vec(),
        );
        for (agent, n) in by_agent {
            let key = conversations_by(agent);
            let left = self
                .kv
                .get(&key)?
                .map_or(0, |v| u64_of(&v))
                .saturating_sub(*n);
            b.put(key, left.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// Keeps `agent`'s evidence pcaps by alert id (checked by the caller), durably before it
    /// returns; under the writer lock, so an alert retention removed meanwhile gets none (its
    /// evidence would never go). Sent again, one replaces itself. Counts each agent's bytes.
    pub fn put_evidence(
        &self,
        agent: &str,
        records: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let writer = self.write_lock()?;
        let mut b = Batch::new();
        let key = evidence_bytes_key(agent);
        let mut held = self.kv.get(&key)?.map_or(0, |v| u64_of(&v));
        for (id, pcap) in records {
            let Some(bytes) = keys::alert_id(id) else {
                continue;
            };
            if self.kv.get(&keys::named(keys::ID, &bytes))?.is_none() {
                continue;
            }
            let marker = keys::named(keys::EVIDENCE, &bytes);
            let before = self.kv.get(&marker)?.map_or(0, |v| u64_of(&v));
            let mut body = marker.clone();
            body.push(b'p');
            held = held
                .saturating_sub(before)
                .saturating_add(pcap.len() as u64);
            b.put(marker, (pcap.len() as u64).to_be_bytes().to_vec());
            b.put(body, pcap.clone());
        }
        b.put(key, held.to_be_bytes().to_vec());
        self.kv.apply(b)?;
        drop(writer);
        self.kv.flush()?;
        Ok(())
    }

    /// Bytes of evidence `agent`'s alerts hold.
    pub fn evidence_bytes(&self, agent: &str) -> Result<u64, StoreError> {
        Ok(self
            .kv
            .get(&evidence_bytes_key(agent))?
            .map_or(0, |v| u64_of(&v)))
    }

    /// The evidence pcap of an alert, if its agent sent one.
    pub fn evidence(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = keys::alert_id(id) else {
            return Ok(None);
        };
        let mut body = keys::named(keys::EVIDENCE, &bytes);
        body.push(b'p');
        Ok(self.kv.get(&body)?)
    }

    /// Whether an alert has evidence (reads the small marker, not the pcap).
    pub fn has_evidence(&self, id: &str) -> Result<bool, StoreError> {
        let Some(bytes) = keys::alert_id(id) else {
            return Ok(false);
        };
        Ok(self.kv.get(&keys::named(keys::EVIDENCE, &bytes))?.is_some())
    }

    /// Stored conversations (at most `limit`).
    pub fn conversations(&self, limit: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        self.list(keys::CONVERSATION, limit)
    }

    /// Reports of new conversations not stored because the store held its most.
    pub fn conversations_dropped(&self) -> Result<u64, StoreError> {
        self.counter(CONVERSATIONS_DROPPED)
    }

    /// The incidents stored as the current ones of the keys (rule, source, destination) of
    /// `alerts`, read at once (two round trips to a database), for [`Store::group`].
    fn incidents_of_keys<'a>(
        &self,
        alerts: impl Iterator<Item = &'a Alert>,
    ) -> Result<HashMap<Vec<u8>, Incident>, StoreError> {
        let mut wanted: Vec<Vec<u8>> = alerts
            .map(|a| keys::incident_key(&a.rule, &a.src_ip.to_string(), &a.dst_ip.to_string()))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let refs: Vec<&[u8]> = wanted.iter().map(Vec::as_slice).collect();
        let ids = self.kv.get_many(&refs)?;
        let found: Vec<(Vec<u8>, Vec<u8>)> = wanted
            .into_iter()
            .zip(ids)
            .filter_map(|(key, id)| {
                let id = id?;
                Some((key, keys::named(keys::INCIDENT, &u64_of(&id).to_be_bytes())))
            })
            .collect();
        let refs: Vec<&[u8]> = found.iter().map(|(_, k)| k.as_slice()).collect();
        let records = self.kv.get_many(&refs)?;
        let mut known = HashMap::with_capacity(found.len());
        for ((key, _), record) in found.into_iter().zip(records) {
            if let Some(v) = record {
                known.insert(key, serde_json::from_slice(&v).map_err(corrupt)?);
            }
        }
        Ok(known)
    }

    /// Puts an alert into its incident: the open one for its (rule, source, destination) if the
    /// last alert came within the incident window, a new one (numbered after `next`)
    /// otherwise. `pending` holds the incidents changed by this batch, not yet written;
    /// `known`, the stored ones of the batch's keys, read before.
    fn group(
        &self,
        alert: &Alert,
        pending: &mut Vec<Incident>,
        next: &mut u64,
        known: &mut HashMap<Vec<u8>, Incident>,
    ) {
        let (src, dst) = (alert.src_ip.to_string(), alert.dst_ip.to_string());
        let same = |i: &Incident| {
            i.rule == alert.rule && i.src_ip == alert.src_ip && i.dst_ip == alert.dst_ip
        };
        // The newest for this key: a batch may hold a closed one and the one that replaced it.
        let newest = pending
            .iter()
            .enumerate()
            .filter(|(_, i)| same(i))
            .max_by_key(|(_, i)| i.id)
            .map(|(index, _)| index);
        let current = match newest {
            Some(i) => Some(pending.swap_remove(i)),
            None => known.remove(&keys::incident_key(&alert.rule, &src, &dst)),
        };
        let joinable = |i: &Incident| {
            i.state != IncidentState::Resolved
                && alert.ts.since(i.last_ts) <= INCIDENT_WINDOW
                && i.first_ts.since(alert.ts) <= INCIDENT_WINDOW
        };
        let current = match current {
            Some(i) if joinable(&i) => Some(i),
            Some(done) => {
                // Closed or gone quiet: it stays as it is (and is written if this batch changed
                // it), and the alert starts a new incident.
                pending.push(done);
                None
            }
            None => None,
        };
        let incident = match current {
            Some(mut i) => {
                i.severity = i.severity.max(alert.severity);
                i.first_ts = i.first_ts.min(alert.first_ts);
                i.last_ts = i.last_ts.max(alert.ts);
                // A hostile agent's counts cannot wrap the incident's totals.
                i.alerts = i.alerts.saturating_add(1);
                i.occurrences = i.occurrences.saturating_add(alert.count);
                i.agents.insert(alert.agent.clone());
                i
            }
            None => {
                *next += 1;
                Incident {
                    id: *next,
                    rule: alert.rule.clone(),
                    title: alert.title.clone(),
                    severity: alert.severity,
                    technique: alert.technique.clone(),
                    src_ip: alert.src_ip,
                    dst_ip: alert.dst_ip,
                    state: IncidentState::Open,
                    first_ts: alert.first_ts,
                    last_ts: alert.ts,
                    alerts: 1,
                    occurrences: alert.count,
                    agents: [alert.agent.clone()].into(),
                    history: Vec::new(),
                    earlier_changes: 0,
                }
            }
        };
        pending.push(incident);
    }

    fn counter(&self, name: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .kv
            .get(&keys::named(keys::COUNTER, name))?
            .map_or(0, |v| u64_of(&v)))
    }

    /// One alert by its id (`None` when not stored; [`StoreError::Invalid`] naming `id` when
    /// it is not an alert id).
    pub fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let bytes = keys::alert_id(id).ok_or_else(|| StoreError::Invalid {
            field: "id".into(),
            message: format!("{id:?} is not an alert id (expected 32 hex digits)"),
        })?;
        let Some(ts) = self.kv.get(&keys::named(keys::ID, &bytes))? else {
            return Ok(None);
        };
        self.kv
            .get(&keys::alert(&keys::order(u64_of(&ts), &bytes)))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// Stored alerts with sequence numbers above `after`, in ingest order, at most `limit`
    /// (alerts retention removed meanwhile are skipped), and the number they cover through: the
    /// caller asks again after it to go on. At most 16 sequence records are read per call, so
    /// one call costs a bounded amount however many removed alerts lie behind `after`.
    pub fn alerts_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Alert)>, u64), StoreError> {
        let mut out = Vec::new();
        let mut through = after;
        // The first record whose last number is past `after` holds the next alert.
        let start = keys::sequence(after.saturating_add(1));
        let end = [keys::SEQUENCE + 1];
        let page = self.kv.range(
            Bound::Included(start.as_slice()),
            Bound::Excluded(&end[..]),
            Order::Ascending,
            16,
        )?;
        // The alerts' keys first, then one read for all of them (one round trip to a database).
        let mut wanted: Vec<(u64, Vec<u8>)> = Vec::new();
        'records: for (_, record) in &page {
            let first = u64_of(record);
            let suffixes = record.get(8..).unwrap_or_default().chunks_exact(24);
            for (seq, suffix) in (first..).zip(suffixes) {
                if seq <= after {
                    continue;
                }
                if wanted.len() >= limit {
                    break 'records;
                }
                through = seq;
                if let Ok(suffix) = <[u8; 24]>::try_from(suffix) {
                    wanted.push((seq, keys::alert(&suffix)));
                }
            }
        }
        let refs: Vec<&[u8]> = wanted.iter().map(|(_, k)| k.as_slice()).collect();
        for ((seq, _), value) in wanted.iter().zip(self.kv.get_many(&refs)?) {
            // Absent: removed by retention since.
            if let Some(v) = value {
                out.push((*seq, serde_json::from_slice(&v).map_err(corrupt)?));
            }
        }
        Ok((out, through))
    }

    /// The newest ingest sequence number given out (0 before the first alert).
    pub fn last_sequence(&self) -> Result<u64, StoreError> {
        self.counter(b"sequence")
    }

    // ---- agents ----

    /// Records a heartbeat received at `now`.
    pub fn heartbeat(&self, hb: &Heartbeat, now: Timestamp) -> Result<(), StoreError> {
        let _writer = self.write_lock()?;
        let record = match self.agent(&hb.agent)? {
            Some(mut r) => {
                r.heartbeat = hb.clone();
                r.seen_at = now;
                r
            }
            None => AgentRecord {
                heartbeat: hb.clone(),
                seen_at: now,
                first_seen: now,
                alerts: 0,
            },
        };
        let mut b = Batch::new();
        b.put(keys::named(keys::AGENT, hb.agent.as_bytes()), json(&record));
        self.kv.apply(b)?;
        Ok(())
    }

    /// One agent's record.
    pub fn agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.kv
            .get(&keys::named(keys::AGENT, name.as_bytes()))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// Every agent's record (at most `limit`).
    pub fn agents(&self, limit: usize) -> Result<Vec<AgentRecord>, StoreError> {
        self.list(keys::AGENT, limit)
    }

    // ---- assets ----

    /// Every asset (at most `limit`).
    pub fn assets(&self, limit: usize) -> Result<Vec<AssetRecord>, StoreError> {
        self.list(keys::ASSET, limit)
    }

    /// Asset list entries dropped because a list was full, ever.
    pub fn asset_entries_dropped(&self) -> Result<u64, StoreError> {
        self.counter(ASSET_ENTRIES_DROPPED)
    }

    /// One asset.
    pub fn asset(&self, ip: IpAddr) -> Result<Option<AssetRecord>, StoreError> {
        self.kv
            .get(&keys::named(keys::ASSET, ip.to_string().as_bytes()))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    // ---- incidents ----

    /// One incident.
    pub fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        self.kv
            .get(&keys::named(keys::INCIDENT, &id.to_be_bytes()))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// Incidents, newest first, optionally only in one state (at most `limit`).
    pub fn incidents(
        &self,
        state: Option<IncidentState>,
        limit: usize,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut out = Vec::new();
        let mut end: Option<Vec<u8>> = None;
        loop {
            let upper = match &end {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => Bound::Excluded(&[keys::INCIDENT + 1][..]),
            };
            let page = self.kv.range(
                Bound::Included(&[keys::INCIDENT][..]),
                upper,
                Order::Descending,
                256,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            end = Some(last.clone());
            for (_, v) in &page {
                let i: Incident = serde_json::from_slice(v).map_err(corrupt)?;
                if state.is_none_or(|s| s == i.state) {
                    out.push(i);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// Changes an incident's state, recording who and when.
    pub fn set_incident_state(
        &self,
        id: u64,
        state: IncidentState,
        by: &str,
        note: Option<String>,
        now: Timestamp,
    ) -> Result<Incident, StoreError> {
        if let Some(n) = &note
            && n.len() > MAX_NOTE
        {
            return Err(StoreError::Invalid {
                field: "note".into(),
                message: format!(
                    "{} bytes is too long (expected at most {MAX_NOTE})",
                    n.len()
                ),
            });
        }
        let _writer = self.write_lock()?;
        let mut incident = self
            .incident(id)?
            .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
        let was_open = incident.state == IncidentState::Open;
        incident.state = state;
        incident.history.push(StateChange {
            state,
            by: by.to_string(),
            at: now,
            note,
        });
        // The newest changes are kept; the oldest go, counted.
        let over = incident.history.len().saturating_sub(MAX_HISTORY);
        if over > 0 {
            incident.history.drain(..over);
            incident.earlier_changes = incident.earlier_changes.saturating_add(over as u64);
        }
        let mut b = Batch::new();
        b.put(
            keys::named(keys::INCIDENT, &id.to_be_bytes()),
            json(&incident),
        );
        let is_open = state == IncidentState::Open;
        if was_open != is_open {
            let open = self.counter(OPEN_INCIDENTS)?;
            let open = if is_open {
                open.saturating_add(1)
            } else {
                open.saturating_sub(1)
            };
            b.put(
                keys::named(keys::COUNTER, OPEN_INCIDENTS),
                open.to_be_bytes().to_vec(),
            );
        }
        if state == IncidentState::Resolved {
            b.delete(keys::incident_key(
                &incident.rule,
                &incident.src_ip.to_string(),
                &incident.dst_ip.to_string(),
            ));
        }
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(incident)
    }

    // ---- retention ----

    /// Alerts stored.
    pub fn alert_count(&self) -> Result<u64, StoreError> {
        self.counter(b"alerts")
    }

    /// Incidents open (neither acknowledged nor resolved): a counter kept with every change, so
    /// `/metrics` never scans the incidents.
    pub fn open_incident_count(&self) -> Result<u64, StoreError> {
        self.counter(OPEN_INCIDENTS)
    }

    /// Counts the open incidents once, for a store written before the counter was kept.
    fn count_open_incidents(&self) -> Result<(), StoreError> {
        let key = keys::named(keys::COUNTER, OPEN_INCIDENTS);
        if self.kv.get(&key)?.is_some() {
            return Ok(());
        }
        let _writer = self.write_lock()?;
        let open = self.incidents(Some(IncidentState::Open), usize::MAX)?.len() as u64;
        let mut b = Batch::new();
        b.put(key, open.to_be_bytes().to_vec());
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(())
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        namespace: u8,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        scan_prefix(&self.kv, &[namespace], Order::Ascending, limit)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(corrupt))
            .collect()
    }
}

fn u64_of(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn poisoned() -> StoreError {
    StoreError::Corrupt("a writer panicked while holding the store".into())
}

/// A writer's turn: this process's writers one at a time, and, on an engine that replicas
/// share, one writer across all of them (the engine's section). Held while a writer reads,
/// decides and applies.
pub(crate) struct WriteLock<'a> {
    // Dropped in order: the engine's section ends before the local lock is released.
    _section: crate::kv::Section<'a>,
    _local: std::sync::MutexGuard<'a, ()>,
}

impl<K: Kv> Store<K> {
    /// Waits for the writer's turn (see [`WriteLock`]).
    pub(crate) fn write_lock(&self) -> Result<WriteLock<'_>, StoreError> {
        let local = self.writer.lock().map_err(|_| poisoned())?;
        let section = self.kv.section()?;
        Ok(WriteLock {
            _section: section,
            _local: local,
        })
    }
}

/// Whether a role may do an action; kept here so every entry point shares one definition.
pub fn allowed(role: Role, action: Action) -> bool {
    match action {
        Action::Ingest => role == Role::Agent,
        Action::Read => role.can_read(),
        Action::Change => role == Role::Admin,
        Action::ReadPolicy => role == Role::Agent || role.can_read(),
    }
}

/// What a request wants to do, for [`allowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ingest alerts or send heartbeats.
    Ingest,
    /// Read alerts, incidents, assets, agents, posture.
    Read,
    /// Acknowledge or resolve incidents.
    Change,
    /// Read the policy assigned to an agent: viewers and admins any agent's, an agent its own
    /// only (the caller checks the name).
    ReadPolicy,
}

#[cfg(test)]
mod tests;
