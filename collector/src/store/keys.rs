//! The store's key layout in one ordered keyspace. Every key starts with a one-byte namespace;
//! numbers are big-endian so they sort numerically.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `M` | `M` + name | metadata (schema version) |
//! | `A` | `A` + capture time (8) + alert id (16) | alert (JSON) |
//! | `I` | `I` + alert id (16) | capture time (8): idempotency and lookup |
//! | `X` | `X` + field + value + `0` + time (8) + id (16) | empty: secondary index |
//! | `G` | `G` + agent name | agent record (JSON) |
//! | `S` | `S` + address | asset record (JSON) |
//! | `N` | `N` + incident id (8) | incident (JSON) |
//! | `K` | `K` + rule `0` source `0` destination | open incident id (8) |
//! | `C` | `C` + counter name | counter (8) |

use otwatch_rules::alert::Alert;

/// Namespace bytes.
pub const META: u8 = b'M';
/// Alerts in time order.
pub const ALERT: u8 = b'A';
/// Alert ids.
pub const ID: u8 = b'I';
/// Secondary indexes.
pub const INDEX: u8 = b'X';
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
    fn byte(self) -> u8 {
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

/// The alert's key in time order.
pub fn alert(suffix: &[u8; 24]) -> Vec<u8> {
    named(ALERT, suffix)
}

/// The prefix of one index value's entries.
pub fn index_prefix(field: Field, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + value.len() + 24);
    k.push(INDEX);
    k.push(field.byte());
    k.extend_from_slice(value);
    k.push(0);
    k
}

/// Every index entry of an alert.
pub fn index_entries(alert: &Alert, suffix: &[u8; 24]) -> Vec<Vec<u8>> {
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
        .into_iter()
        .map(|(field, value)| {
            let mut k = index_prefix(field, &value);
            k.extend_from_slice(suffix);
            k
        })
        .collect()
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
