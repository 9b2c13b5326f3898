//! The one validator for everything an agent reports: the syntax and bounds of every field of
//! an alert, an asset observation and a heartbeat. The collector applies it at ingest (a
//! record that fails is refused with 422 naming the record and the field), the agent to what it
//! is configured with, and `otwatch-agent check` to the rule ids, techniques and names a policy
//! gives alerts, so nothing `check` accepts is refused at ingest.
//!
//! Rule ids are checked by syntax, not against the catalogue: a newer agent's rules must pass
//! an older collector. Every string and list is bounded, so one agent cannot grow the
//! collector's memory, indexes or metrics without limit.

use std::fmt;

use crate::alert::{Alert, FoldKey, SCHEMA_VERSION, Seen, seen};
use crate::wire::{
    AssetObservation, ConversationObservation, EvidenceRecord, Heartbeat, IngestBatch,
    LearnedPolicy,
};

/// Longest rule id, in bytes.
pub const MAX_RULE_ID: usize = 128;
/// Longest agent name, in bytes.
pub const MAX_AGENT_NAME: usize = 64;
/// Most techniques one alert names.
pub const MAX_TECHNIQUES: usize = 16;
/// Longest title, in bytes.
pub const MAX_TITLE: usize = 1024;
/// Longest message (an alert's, a heartbeat's last error), in bytes.
pub const MAX_MESSAGE: usize = 4096;
/// Longest function or exception name, in bytes.
pub const MAX_NAME: usize = 64;
/// Most values one alert carries (a Write Multiple Coils request holds up to 1,968).
pub const MAX_VALUES: usize = 2048;
/// Longest evidence, in hex digits (64 bytes of frame).
pub const MAX_EVIDENCE: usize = 128;
/// Most MAC addresses one observation lists.
pub const MAX_MACS: usize = 16;
/// Most unit ids or function codes one observation lists (each fits in a byte).
pub const MAX_CODES: usize = 256;
/// Most peers one observation lists.
pub const MAX_PEERS: usize = 1024;
/// Longest device-identification string (vendor, product code, revision, product name) or
/// policy label (asset name, zone, criticality), in bytes.
pub const MAX_LABEL: usize = 256;
/// Longest version or policy hash in a heartbeat, in bytes.
pub const MAX_VERSION: usize = 64;
/// Longest policy text (TOML) the collector keeps, an agent fetches or uploads, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 << 10;
/// Highest policy-language version a heartbeat may claim: far above any there will be, low
/// enough to be a plain number everywhere it is shown.
pub const MAX_POLICY_LANGUAGE: u32 = 1000;
/// Longest collector address a heartbeat names.
pub const MAX_COLLECTOR_URL: usize = 256;

/// A field that is not what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {found} is not valid (expected {expected})")]
pub struct Invalid {
    /// The field, with the record's position where there is one (`alerts[3].rule`).
    pub field: String,
    /// What was found, quoted and cut short.
    pub found: String,
    /// What was expected.
    pub expected: String,
    /// The record is of a schema version this build does not know (a newer agent's): it may
    /// be valid, so it is to be kept for a collector that knows it, not set aside.
    pub unknown_version: bool,
}

impl Invalid {
    fn new(field: impl fmt::Display, found: impl fmt::Debug, expected: impl Into<String>) -> Self {
        let mut found = format!("{found:?}");
        if found.len() > 80 {
            truncate(&mut found, 77);
            found.push_str("...");
        }
        Self {
            field: field.to_string(),
            found,
            expected: expected.into(),
            unknown_version: false,
        }
    }

    /// The same error, its field inside `record` (`alerts[3]`).
    fn within(mut self, record: &str) -> Self {
        self.field = format!("{record}.{}", self.field);
        self
    }
}

/// What a rule id must be.
pub const RULE_ID_SYNTAX: &str = "a rule id: 1 to 128 bytes of printable ASCII, no space at either end, like \"policy.unauthorized_write\"";
/// What a technique must be.
pub const TECHNIQUE_SYNTAX: &str =
    "an ATT&CK technique id: T and four digits, optionally . and three more, like \"T0836\"";
/// What a new agent name must be.
pub const AGENT_NAME_SYNTAX: &str =
    "an agent name: 1 to 64 ASCII letters, digits, '.', '-' or '_', like \"plant-1.line-2\"";
/// What an agent name already in use must be.
pub const REPORTED_NAME_SYNTAX: &str = "an agent name: 1 to 64 bytes without control characters";
/// What a schema 1 rule id must be.
pub const V1_RULE_ID_SYNTAX: &str =
    "a rule id: 1 to 128 bytes without control characters or a space at either end";

/// Whether `id` is a rule id: built-in (`recon.read_device_id`), from a policy
/// (`policy.alert.<name>`) or from a later release.
pub fn is_rule_id(id: &str) -> bool {
    (1..=MAX_RULE_ID).contains(&id.len())
        && id.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !id.starts_with(' ')
        && !id.ends_with(' ')
}

/// Whether `id` is a rule id as schema 1 agents (earlier releases) made them: their `check`
/// let a policy name an alert rule in any language, so only control characters are out.
fn is_v1_rule_id(id: &str) -> bool {
    (1..=MAX_RULE_ID).contains(&id.len())
        && !id.chars().any(char::is_control)
        && !id.starts_with(' ')
        && !id.ends_with(' ')
}

/// Whether `id` is an ATT&CK technique or sub-technique id (`T0836`, `T1059.001`).
pub fn is_technique(id: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match id.strip_prefix('T') {
        Some(rest) => match rest.split_once('.') {
            Some((main, sub)) => digits(main, 4) && digits(sub, 3),
            None => digits(rest, 4),
        },
        None => false,
    }
}

/// Whether `name` may name a new agent (`otwatch-collector enroll`): it names the agent's
/// credential, its index entries and its configuration line, so it is kept to characters no
/// output needs to escape.
pub fn is_agent_name(name: &str) -> bool {
    (1..=MAX_AGENT_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks the name an agent reports under: a credential enrolled by an earlier release may
/// hold any name, and refusing it would set aside every record of that agent, so only empty,
/// overlong and control-character names are refused here. New names meet [`is_agent_name`].
pub fn agent_name(field: &str, name: &str) -> Result<(), Invalid> {
    if (1..=MAX_AGENT_NAME).contains(&name.len()) && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Invalid::new(field, name, REPORTED_NAME_SYNTAX))
    }
}

fn bounded(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.len() <= max {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            text,
            format!("at most {max} bytes, not {}", text.len()),
        ))
    }
}

fn bounded_opt(field: &str, text: Option<&str>, max: usize) -> Result<(), Invalid> {
    text.map_or(Ok(()), |t| bounded(field, t, max))
}

fn at_most<T>(field: &str, list: &[T], max: usize) -> Result<(), Invalid> {
    if list.len() <= max {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format_args!("a list of {}", list.len()),
            format!("at most {max} entries"),
        ))
    }
}

/// The alert schema versions this build takes: every version an agent in the field may send.
pub const ALERT_SCHEMAS: &[u32] = &[1, 2, SCHEMA_VERSION];

/// Checks every field of an alert. A schema 2 alert's id must be the one its own fields derive
/// ([`Alert::stable_id`] with sequence 0 or 1), so an id names exactly one agent's alert. A
/// schema 1 alert's id derived from nanoseconds the alert does not carry: [`bind_id`] makes it
/// one agent's where it cannot be checked.
pub fn alert(a: &Alert) -> Result<(), Invalid> {
    if !ALERT_SCHEMAS.contains(&a.schema) {
        let mut e = Invalid::new(
            "schema",
            a.schema,
            format!("one of the alert schema versions {ALERT_SCHEMAS:?}"),
        );
        e.unknown_version = true;
        return Err(e);
    }
    agent_name("agent", &a.agent)?;
    if a.schema >= 2 && !is_rule_id(&a.rule) {
        return Err(Invalid::new("rule", &a.rule, RULE_ID_SYNTAX));
    }
    if !is_v1_rule_id(&a.rule) {
        return Err(Invalid::new("rule", &a.rule, V1_RULE_ID_SYNTAX));
    }
    bounded("title", &a.title, MAX_TITLE)?;
    at_most("technique", &a.technique, MAX_TECHNIQUES)?;
    for (i, t) in a.technique.iter().enumerate() {
        if !is_technique(t) {
            return Err(Invalid::new(
                format_args!("technique[{i}]"),
                t,
                TECHNIQUE_SYNTAX,
            ));
        }
    }
    bounded_opt("function", a.function.as_deref(), MAX_NAME)?;
    bounded_opt("exception", a.exception.as_deref(), MAX_NAME)?;
    bounded_opt("message", a.message.as_deref(), MAX_MESSAGE)?;
    if let Some(values) = &a.values {
        at_most("values", values, MAX_VALUES)?;
    }
    if let Some(e) = &a.evidence
        && (e.len() > MAX_EVIDENCE || !e.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Invalid::new(
            "evidence",
            e,
            format!("at most {MAX_EVIDENCE} hex digits"),
        ));
    }
    if a.count == 0 {
        return Err(Invalid::new("count", a.count, "at least 1"));
    }
    if let Some(seen) = &a.seen {
        if a.schema < 3 {
            return Err(Invalid::new(
                "seen",
                "a list of what the alert covers",
                "no such field before alert schema 3",
            ));
        }
        if let Err((field, expected)) = seen.check() {
            return Err(Invalid::new(field, seen, expected));
        }
        seen_fits(a, seen)?;
    }
    if a.schema >= 2 && !id_derives(a) {
        return Err(Invalid::new(
            "id",
            &a.id,
            "the id the alert's own agent, rule, addresses, unit (none when it has `seen`) and first_ts derive (alert schema 2 and later)",
        ));
    }
    if !(a.id.len() == 32
        && a.id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(Invalid::new("id", &a.id, "32 lowercase hex digits"));
    }
    Ok(())
}

/// `seen` belongs to the rules that fold per target (a later release's rules included, which
/// this build does not know) and lists the occurrence the alert names: without this, `seen`
/// on a per-unit rule would take the unit out of the id and make alerts to two units one.
fn seen_fits(a: &Alert, seen: &Seen) -> Result<(), Invalid> {
    let per_unit = match crate::alert::rule_by_id(&a.rule) {
        Some(meta) => meta.key == FoldKey::Unit,
        None => a.rule.starts_with("policy.alert."),
    };
    if per_unit {
        return Err(Invalid::new(
            "seen",
            &a.rule,
            "no `seen` on a rule that folds per unit",
        ));
    }
    if let Some(unit) = a.unit_id
        && !seen.units.contains(&unit)
    {
        return Err(Invalid::new(
            "seen.units",
            &seen.units,
            format!("unit_id {unit} among them"),
        ));
    }
    if let Some(code) = a.function_code
        && !seen.functions.contains(&code)
    {
        return Err(Invalid::new(
            "seen.functions",
            &seen.functions,
            format!("function_code {code} among them"),
        ));
    }
    if let Some(address) = a.address
        && !seen
            .ranges
            .iter()
            .any(|[first, last]| (*first..=*last).contains(&address))
    {
        return Err(Invalid::new(
            "seen.ranges",
            &seen.ranges,
            format!("a range holding address {address}"),
        ));
    }
    Ok(())
}

/// Whether the alert's id is the one its fields derive.
fn id_derives(a: &Alert) -> bool {
    a.id == a.derived_id(0) || a.id == a.derived_id(1)
}

/// Makes a checked alert's id name this agent's alert alone. A schema 1 alert whose id its
/// fields do not derive (its capture time had nanoseconds) gets an id derived from its agent
/// and the id it came with: a retry maps to the same id, and no other agent can make it.
/// Returns whether the id changed.
pub fn bind_id(a: &mut Alert) -> bool {
    if a.schema >= 2 || id_derives(a) {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"otwatch alert schema 1 id\0");
    hasher.update(a.agent.as_bytes());
    hasher.update(&[0]);
    hasher.update(a.id.as_bytes());
    a.id = hasher
        .finalize()
        .to_hex()
        .get(..32)
        .unwrap_or_default()
        .to_string();
    true
}

/// Checks every field of an asset observation.
pub fn asset(o: &AssetObservation) -> Result<(), Invalid> {
    at_most("macs", &o.macs, MAX_MACS)?;
    for (i, mac) in o.macs.iter().enumerate() {
        if !is_mac(mac) {
            return Err(Invalid::new(
                format_args!("macs[{i}]"),
                mac,
                "a MAC address like \"00:1d:9c:c7:b0:70\" (lowercase)",
            ));
        }
    }
    at_most("units", &o.units, MAX_CODES)?;
    at_most("functions", &o.functions, MAX_CODES)?;
    at_most("peers", &o.peers, MAX_PEERS)?;
    for (field, text) in [
        ("vendor", &o.vendor),
        ("product_code", &o.product_code),
        ("revision", &o.revision),
        ("product_name", &o.product_name),
        ("zone", &o.zone),
        ("criticality", &o.criticality),
        ("name", &o.name),
    ] {
        bounded_opt(field, text.as_deref(), MAX_LABEL)?;
    }
    Ok(())
}

/// The longest evidence pcap in base64 characters: 80 KiB of pcap (what the collector takes,
/// `otwatch_packet::evidence::MAX_EVIDENCE_BYTES`), encoded.
pub const MAX_EVIDENCE_BASE64: usize = (80usize << 10).div_ceil(3) * 4;

/// Most evidence records one batch carries.
pub const MAX_EVIDENCE_RECORDS: usize = 64;

/// Checks the shape of an evidence record: an alert id, and base64 within the bound. (The
/// collector decodes the pcap and checks its structure with `otwatch_packet::evidence`.)
pub fn evidence(e: &EvidenceRecord) -> Result<(), Invalid> {
    if e.alert.len() != 32 || !e.alert.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Invalid::new(
            "alert",
            &e.alert,
            "an alert id (32 hex digits)",
        ));
    }
    if e.pcap.len() > MAX_EVIDENCE_BASE64 {
        return Err(Invalid::new(
            "pcap",
            format_args!("{} characters", e.pcap.len()),
            format!("at most {MAX_EVIDENCE_BASE64} characters of base64"),
        ));
    }
    Ok(())
}

/// The longest report window a conversation observation may cover.
pub const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Checks every field of a conversation observation.
pub fn conversation(o: &ConversationObservation) -> Result<(), Invalid> {
    if o.until < o.since || o.until.since(o.since) > MAX_WINDOW {
        return Err(Invalid::new(
            "until",
            o.until,
            format!("a time at or after since ({}), within a day of it", o.since),
        ));
    }
    for (field, list, what) in [
        ("units", &o.units, "unit ids"),
        ("functions", &o.functions, "function codes"),
    ] {
        if !seen::ascending_once(list) {
            return Err(Invalid::new(
                field,
                list,
                format!("{what} in ascending order, each once"),
            ));
        }
    }
    for (side, ranges) in [("reads", &o.reads), ("writes", &o.writes)] {
        for (table, list) in ranges.tables() {
            seen::check_ranges(list)
                .map_err(|expected| Invalid::new(format_args!("{side}.{table}"), list, expected))?;
        }
    }
    Ok(())
}

fn is_mac(text: &str) -> bool {
    text.len() == 17
        && text.split(':').count() == 6
        && text.split(':').all(|octet| {
            octet.len() == 2
                && octet
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Checks a heartbeat.
pub fn heartbeat(h: &Heartbeat) -> Result<(), Invalid> {
    agent_name("agent", &h.agent)?;
    bounded("version", &h.version, MAX_VERSION)?;
    bounded_opt("policy_hash", h.policy_hash.as_deref(), MAX_VERSION)?;
    bounded_opt("last_error", h.last_error.as_deref(), MAX_MESSAGE)?;
    if let Some(id) = &h.learning {
        learn_id("learning", id)?;
    }
    if let Some(url) = &h.collector {
        bounded("collector", url, MAX_COLLECTOR_URL)?;
        if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::new(
                "collector",
                url,
                "a collector address (https://HOST:PORT, printable, no spaces)",
            ));
        }
    }
    if let Some(language) = h.policy_language
        && !(1..=MAX_POLICY_LANGUAGE).contains(&language)
    {
        return Err(Invalid::new(
            "policy_language",
            language,
            format!("a policy-language version from 1 to {MAX_POLICY_LANGUAGE}"),
        ));
    }
    if !(h.packets_per_s.is_finite() && h.packets_per_s >= 0.0) {
        return Err(Invalid::new(
            "packets_per_s",
            h.packets_per_s,
            "a number of packets per second, 0 or more",
        ));
    }
    Ok(())
}

/// Checks a batch: its agent's name, then every record, each error naming the record
/// (`alerts[3].rule`). Every alert must be the batch's agent's own.
pub fn batch(b: &IngestBatch) -> Result<(), Invalid> {
    agent_name("agent", &b.agent)?;
    for (i, a) in b.alerts.iter().enumerate() {
        let record = format!("alerts[{i}]");
        if a.agent != b.agent {
            return Err(Invalid::new(
                "agent",
                &a.agent,
                format!("the batch's agent {:?}", b.agent),
            )
            .within(&record));
        }
        alert(a).map_err(|e| e.within(&record))?;
    }
    for (i, o) in b.assets.iter().enumerate() {
        asset(o).map_err(|e| e.within(&format!("assets[{i}]")))?;
    }
    for (i, o) in b.conversations.iter().enumerate() {
        conversation(o).map_err(|e| e.within(&format!("conversations[{i}]")))?;
    }
    if b.evidence.len() > MAX_EVIDENCE_RECORDS {
        return Err(Invalid::new(
            "evidence",
            format_args!("{} records", b.evidence.len()),
            format!("at most {MAX_EVIDENCE_RECORDS} records per batch"),
        ));
    }
    for (i, e) in b.evidence.iter().enumerate() {
        evidence(e).map_err(|e| e.within(&format!("evidence[{i}]")))?;
    }
    if b.learned.len() > MAX_LEARNED_RECORDS {
        return Err(Invalid::new(
            "learned",
            format_args!("{} records", b.learned.len()),
            format!("at most {MAX_LEARNED_RECORDS} learned policies per batch"),
        ));
    }
    for (i, l) in b.learned.iter().enumerate() {
        learned(l).map_err(|e| e.within(&format!("learned[{i}]")))?;
    }
    Ok(())
}

/// Most learned policies in one batch (each up to [`MAX_POLICY_BYTES`]).
pub const MAX_LEARNED_RECORDS: usize = 4;

/// Checks a learn request's id: 32 lowercase hex digits, as the collector makes them.
pub fn learn_id(field: &str, id: &str) -> Result<(), Invalid> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            id,
            "a learn request id: 32 lowercase hex digits",
        ))
    }
}

/// Checks a learned policy: its request id, its size, and that it is a valid policy holding
/// only what learning writes (it goes into a proposal an admin reviews).
pub fn learned(l: &LearnedPolicy) -> Result<(), Invalid> {
    learn_id("request", &l.request)?;
    if l.toml.len() > MAX_POLICY_BYTES {
        return Err(Invalid::new(
            "toml",
            format_args!("{} bytes", l.toml.len()),
            format!("at most {MAX_POLICY_BYTES} bytes"),
        ));
    }
    crate::policy::check_learned(&l.toml, "learned").map_err(|e| {
        Invalid::new(
            "toml",
            format_args!("{e}"),
            "a policy as `otwatch-agent learn` writes it",
        )
    })?;
    Ok(())
}

/// Cuts `text` to at most `max` bytes at a character boundary: what an agent does to a
/// message or title it builds from traffic or configuration, so it stays within the bounds
/// above.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests;
