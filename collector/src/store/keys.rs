//! The store's key layout in one ordered keyspace. Every key starts with a one-byte namespace;
//! numbers are big-endian so they sort numerically.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `M` | `M` + name | metadata (schema version) |
//! | `A` | `A` + capture time (8) + alert id (16) | alert (JSON) |
//! | `I` | `I` + alert id (16) | capture time (8): idempotency and lookup |
//! | `Y` | `Y` + field + value length (4) + value + newest time (8) + id (16) | posting: the time-and-id of every alert of one batch with that value within [`POSTING_SPAN_NANOS`] |
//! | `P` | `P` + newest time (8) + id (16) of a group of postings (+ the first posting key, for postings upgraded from schema 1) | the group's posting keys (each a 4-byte length, then the key): for retention |
//! | `G` | `G` + agent name | agent record (JSON) |
//! | `S` | `S` + address | asset record (JSON) |
//! | `N` | `N` + incident id (8) | incident (JSON) |
//! | `K` | `K` + rule `0` source `0` destination | open incident id (8) |
//! | `C` | `C` + counter name | counter (8) |
//! | `E` | `E` + SHA-256 of a session id (hex) | dashboard session (JSON) |
//! | `H` | `H` + span + dimension + bucket (8) + tag (+ value) | alerts counted per hour and day ([`super::rollup`]) |
//! | `V` | `V` + master's length (1) + master + slave (addresses as text) | conversation (JSON) |
//! | `Q` | `Q` + alert id (16) | the length of the alert's evidence pcap (that it has one) |
//! | `Q` | `Q` + alert id (16) + `p` | the alert's evidence pcap |
//! | `L` | `L` + name length (1) + name + `h` | the policy's version in force ([`super::policy`]) |
//! | `L` | `L` + name length (1) + name + `v` + version (8) | a version of the policy |
//! | `B` | `B` + agent name | the name of the policy assigned to the agent |
//!
//! Index keys are prefix-free: the value's length comes before it, so no value's postings sort
//! among another's, whatever bytes either holds (schema 2 ended a value with a `0` byte, and an
//! agent could make a value that was another one followed by `0`). Schema 2's `X` postings are
//! moved to `Y` when such a store is opened.
use std::collections::BTreeMap;
use std::net::IpAddr;

use otwatch_rules::alert::Alert;

/// The widest capture-time span one posting covers. A posting's key carries its newest alert,
/// so a query for alerts before time T finds every alert it needs among the postings keyed at
/// or before T + span; the span bounds that overlap. One second keeps it small at any alert rate
/// while a busy batch still shares one posting per value.
pub const POSTING_SPAN_NANOS: u64 = 1_000_000_000;

/// Namespace bytes.
pub const META: u8 = b'M';
/// Alerts in time order.
pub const ALERT: u8 = b'A';
/// Alert ids.
pub const ID: u8 = b'I';
/// Secondary indexes: postings.
pub const INDEX: u8 = b'Y';
/// Postings listed by group, under the group's newest alert.
pub const POSTING_RECORDS: u8 = b'P';
/// Agents.
pub const AGENT: u8 = b'G';
/// Assets.
pub const ASSET: u8 = b'S';
/// Incidents.
pub const INCIDENT: u8 = b'N';
/// Open incident per (rule, source, destination).
pub const INCIDENT_KEY: u8 = b'K';
/// Counters.
pub const COUNTER: u8 = b'C';
/// Dashboard sessions.
pub const SESSION: u8 = b'E';
/// Alerts counted per hour and day, for charts.
pub const ROLLUP: u8 = b'H';
/// Conversations.
pub const CONVERSATION: u8 = b'V';
/// Evidence pcaps.
pub const EVIDENCE: u8 = b'Q';
/// Policies and their versions.
pub const POLICY: u8 = b'L';
/// Policies assigned to agents.
pub const ASSIGNMENT: u8 = b'B';
/// Learn requests.
pub const LEARN: u8 = b'R';
/// Audit events, in a store replicas share (written by [`crate::audit`], which owns the layout
/// of these keys; listed here so no namespace takes the byte).
pub const AUDIT: u8 = b'W';
/// What agents learned.
pub const LEARNED: u8 = b'U';
/// Stored alerts in ingest order, one record per ingest batch: the key holds the batch's last
/// sequence number (8 bytes, big-endian), the value its first, then each alert's
/// time-and-id suffix in sequence order; what a live-feed subscriber resumes from
/// (`Last-Event-ID`). One record per batch, not per alert: ingest writes one key more, not
/// one per alert.
pub const SEQUENCE: u8 = b'O';

/// A conversation's key: the master's length first, so no pair's key is another's prefix.
pub fn conversation(master: IpAddr, slave: IpAddr) -> Vec<u8> {
    let (m, s) = (master.to_string(), slave.to_string());
    let mut k = Vec::with_capacity(2 + m.len() + s.len());
    k.push(CONVERSATION);
    // An address as text is at most 45 bytes.
    k.push(u8::try_from(m.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(m.as_bytes());
    k.extend_from_slice(s.as_bytes());
    k
}

/// Which field an index is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The reporting agent.
    Agent,
    /// Source or destination address.
    Asset,
    /// Severity (one byte, `Severity as u8`).
    Severity,
    /// Rule id.
    Rule,
    /// ATT&CK technique.
    Technique,
}

impl Field {
    /// The byte that names the field in an index key.
    pub(super) fn byte(self) -> u8 {
        match self {
            Self::Agent => b'g',
            Self::Asset => b's',
            Self::Severity => b'v',
            Self::Rule => b'r',
            Self::Technique => b't',
        }
    }
}

/// A key with a namespace byte and a name.
pub fn named(namespace: u8, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(namespace);
    k.extend_from_slice(name);
    k
}

/// An alert id as 16 bytes, if it is 32 hex digits.
pub fn alert_id(id: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some(out)
}

/// The time-and-id suffix shared by alert and index keys.
pub fn order(ts_nanos: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&ts_nanos.to_be_bytes());
    out[8..].copy_from_slice(id);
    out
}

/// The key of the sequence record whose last number is `seq`.
pub fn sequence(seq: u64) -> Vec<u8> {
    named(SEQUENCE, &seq.to_be_bytes())
}

/// The alert's key in time order.
pub fn alert(suffix: &[u8; 24]) -> Vec<u8> {
    named(ALERT, suffix)
}

/// The prefix of one index value's entries: no other value's prefix starts with it.
pub fn index_prefix(field: Field, value: &[u8]) -> Vec<u8> {
    index_prefix_of(field.byte(), value)
}

/// [`index_prefix`] by field byte (the upgrade from schema 2 reads field bytes off old keys).
pub(super) fn index_prefix_of(field: u8, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + value.len() + 24);
    k.push(INDEX);
    k.push(field);
    // Index values are an agent name, a rule id, a technique, an address or a severity byte,
    // bounded by ingest's validation and, in any case, by the request body limit (a few MiB).
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(value);
    k
}

/// The index values of an alert: agent, source and destination, severity, rule, techniques.
pub(super) fn index_values(alert: &Alert) -> Vec<(Field, Vec<u8>)> {
    let mut values: Vec<(Field, Vec<u8>)> = vec![
        (Field::Agent, alert.agent.as_bytes().to_vec()),
        (Field::Asset, alert.src_ip.to_string().into_bytes()),
        (Field::Severity, vec![alert.severity as u8]),
        (Field::Rule, alert.rule.as_bytes().to_vec()),
    ];
    if alert.dst_ip != alert.src_ip {
        values.push((Field::Asset, alert.dst_ip.to_string().into_bytes()));
    }
    for t in &alert.technique {
        values.push((Field::Technique, t.as_bytes().to_vec()));
    }
    values
}

/// The capture time in a time-and-id suffix.
pub fn time_of(suffix: &[u8; 24]) -> u64 {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&suffix[..8]);
    u64::from_be_bytes(ts)
}

/// The postings of a batch of alerts (each with its time-and-id suffix): per index value, the
/// alerts' suffixes in ascending order, cut wherever a posting would span more than
/// [`POSTING_SPAN_NANOS`]. Each posting is keyed by its index prefix and its newest suffix.
/// One write per value and second instead of one per alert and value: the index is most of
/// what ingest writes.
pub fn postings<'a>(
    alerts: impl IntoIterator<Item = (&'a [u8; 24], &'a Alert)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut by_value: BTreeMap<Vec<u8>, Vec<[u8; 24]>> = BTreeMap::new();
    for (suffix, alert) in alerts {
        for (field, value) in index_values(alert) {
            by_value
                .entry(index_prefix(field, &value))
                .or_default()
                .push(*suffix);
        }
    }
    let mut out = Vec::new();
    for (prefix, mut suffixes) in by_value {
        suffixes.sort_unstable();
        suffixes.dedup();
        let mut rest = suffixes.as_slice();
        while let Some(first) = rest.first() {
            let start = time_of(first);
            let len = rest
                .iter()
                .take_while(|s| time_of(s).saturating_sub(start) <= POSTING_SPAN_NANOS)
                .count();
            let (run, tail) = rest.split_at(len);
            rest = tail;
            let Some(newest) = run.last() else { break };
            let mut key = prefix.clone();
            key.extend_from_slice(newest);
            out.push((key, run.concat()));
        }
    }
    out
}

/// The suffixes a posting lists.
pub fn posting_entries(value: &[u8]) -> impl Iterator<Item = [u8; 24]> + '_ {
    value.chunks_exact(24).filter_map(|c| c.try_into().ok())
}

/// The records that list postings for retention: postings grouped by the second their newest
/// alert falls in, each group under `P` + its newest suffix (+ `unique`'s first posting key, when
/// groups made separately may share a newest alert). A group is removed once its newest alert
/// is gone, so grouping by second keeps one far-off alert (a skewed clock) from holding the
/// postings of a whole batch.
pub fn posting_records<'a>(
    posting_keys: impl IntoIterator<Item = &'a [u8]>,
    unique: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut groups: BTreeMap<u64, ([u8; 24], Vec<&[u8]>)> = BTreeMap::new();
    for key in posting_keys {
        let Some(newest) = suffix_of(key) else {
            continue;
        };
        let group = groups
            .entry(time_of(&newest) / POSTING_SPAN_NANOS)
            .or_insert((newest, Vec::new()));
        group.0 = group.0.max(newest);
        group.1.push(key);
    }
    groups
        .into_values()
        .map(|(newest, keys)| {
            let mut record = named(POSTING_RECORDS, &newest);
            if unique && let Some(first) = keys.first() {
                record.extend_from_slice(first);
            }
            (record, posting_list(keys))
        })
        .collect()
}

/// Posting keys, each as a 4-byte length and the key.
pub(super) fn posting_list<'a>(posting_keys: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for key in posting_keys {
        // Keys are far below 4 GiB: a request body is limited to a few megabytes.
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// The posting keys in a record of [`posting_records`].
pub fn posting_keys(mut list: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = list.split_first_chunk::<4>() {
        let Ok(len) = usize::try_from(u32::from_be_bytes(*len)) else {
            break;
        };
        let Some((key, rest)) = rest.split_at_checked(len) else {
            break;
        };
        out.push(key);
        list = rest;
    }
    out
}

/// The incident grouping key of an alert.
pub fn incident_key(rule: &str, src: &str, dst: &str) -> Vec<u8> {
    let mut k = vec![INCIDENT_KEY];
    for (i, part) in [rule, src, dst].iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part.as_bytes());
    }
    k
}

/// The last 24 bytes of a key: time and id.
pub fn suffix_of(key: &[u8]) -> Option<[u8; 24]> {
    let tail = key.get(key.len().checked_sub(24)?..)?;
    let mut out = [0u8; 24];
    out.copy_from_slice(tail);
    Some(out)
}
