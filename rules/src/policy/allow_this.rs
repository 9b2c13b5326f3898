//! "Allow this": the smallest change to a policy that stops one alert, and only what it saw.
//!
//! - A policy violation (`policy.unknown_master`, `policy.unauthorized_*`,
//!   `policy.write_outside_ranges`, `policy.setpoint_out_of_bounds`, `policy.outside_hours`)
//!   gets a new `[[allow]]` rule after the last one: from the alert's master to its
//!   target (addresses, not asset or group names, which may cover more hosts), for the unit
//!   ids, functions (with the sub-function of a Diagnostics or MEI request), address ranges and,
//!   for a single write, the values it saw; any time of day, no rate limit. The rule that came
//!   closest is named in a comment above it. A new rule rather than a wider old one: widening a
//!   rule would allow its other masters and targets the same.
//! - A built-in detector's alert gets its source added to `suppress` under
//!   `[detectors."<rule>"]`.
//! - A rate or a process value outside its limits, an explicit `[[alert]]` rule and the agent's
//!   own alerts have no such change: a rate or a limit is a number to choose, an `[[alert]]`
//!   rule fires on allowed traffic by design.
//!
//! What the alert does not say is taken from the frame it carries (`evidence`), decoded again:
//! the sub-function, the ranges of a read-write request, the values written. Comments and
//! layout of the policy are kept (`toml_edit`); the result is parsed again before it is offered.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use crate::alert::Alert;
use crate::modbus::{Adu, FunctionCode, Request, Table as DataTable};
use crate::policy::{Policy, PolicyError};

/// A change that allows an alert's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowChange {
    /// The whole policy with the change made.
    pub text: String,
    /// What the change does, in a sentence.
    pub summary: String,
    /// What it allows beyond exactly what the alert saw, if anything (for the reviewer).
    pub notes: Vec<String>,
}

/// Why no change is offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowable {
    /// The alert is of a kind no allow rule or suppression stops.
    #[error("{0}")]
    Kind(String),
    /// The policy in force already allows the alert's request (its version is newer than the
    /// alert): the rule that does.
    #[error("the policy already allows this request (rule {0:?})")]
    AlreadyAllowed(String),
    /// The policy is not TOML this can edit (it is checked before it is stored, so it was
    /// written by another version).
    #[error("the policy cannot be edited: {0}")]
    Unreadable(String),
    /// The changed policy does not pass the checker (a defect here: it is never offered).
    #[error("the change would not be a valid policy: {0}")]
    Invalid(#[from] PolicyError),
}

/// The change to `policy` (TOML) that allows exactly what `alert` saw.
pub fn allow_this(policy: &str, alert: &Alert) -> Result<AllowChange, NotAllowable> {
    let mut doc: DocumentMut = policy
        .parse()
        .map_err(|e: toml_edit::TomlError| NotAllowable::Unreadable(e.message().to_string()))?;
    let (summary, notes) = match alert.rule.as_str() {
        "policy.unknown_master"
        | "policy.unauthorized_read"
        | "policy.unauthorized_write"
        | "policy.unauthorized_function"
        | "policy.write_outside_ranges"
        | "policy.setpoint_out_of_bounds"
        | "policy.outside_hours" => add_allow_rule(&mut doc, alert)?,
        "policy.rate_exceeded" => {
            return Err(NotAllowable::Kind(
                "a rate limit was exceeded: raise the `rate` of the rule the alert names (no new rule helps: the first rule that covers a request also counts its rate)".into(),
            ));
        }
        "policy.process_value_out_of_bounds" => {
            return Err(NotAllowable::Kind(
                "a process value was read back outside its limits: widen the `read_values` bounds of the rule the alert names if the process really runs there".into(),
            ));
        }
        rule if rule.starts_with("policy.alert.") => {
            return Err(NotAllowable::Kind(format!(
                "{rule} is raised by an [[alert]] rule of the policy on allowed traffic by design: narrow or remove that rule"
            )));
        }
        rule if rule.starts_with("agent.") || rule.starts_with("collector.") => {
            return Err(NotAllowable::Kind(format!(
                "{rule} reports the agent's own health, not traffic: nothing in a policy allows it"
            )));
        }
        rule => suppress_source(&mut doc, rule, alert.src_ip)?,
    };
    let text = doc.to_string();
    Policy::parse(&text, "the changed policy")?;
    // What a new rule is for: the request in the alert's frame is allowed by the new text.
    if alert.rule.starts_with("policy.")
        && request_in(alert).is_some()
        && already_allowed(&text, alert).is_none()
    {
        return Err(NotAllowable::Kind(
            "no rule written from the alert's fields allows its request: add one by hand".into(),
        ));
    }
    Ok(AllowChange {
        text,
        summary,
        notes,
    })
}

/// What one request the alert carries did, decoded from its frame when it decodes.
#[derive(Debug, Default)]
struct Access {
    /// Whole function codes, and `(code, sub-function)` pairs for 8 and 43.
    functions: BTreeSet<(u8, Option<u16>)>,
    /// `(table, first, last)` ranges read or written.
    ranges: BTreeSet<(DataTable, u16, u16)>,
    /// Values written to registers, when known for every occurrence.
    written: Option<(u16, u16)>,
}

/// The request in the alert's frame (a Modbus/TCP ADU, or an RTU frame over TCP), if it is
/// whole and of the alert's function.
fn request_in(alert: &Alert) -> Option<(Vec<u8>, u8)> {
    let hex = alert.evidence.as_deref()?;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let code = alert.function_code?;
    if let Ok((adu, _)) = Adu::split(&bytes)
        && adu.pdu.first() == Some(&code)
    {
        return Some((adu.pdu.to_vec(), code));
    }
    // RTU over TCP: unit, PDU, CRC.
    let pdu = bytes.get(1..bytes.len().checked_sub(2)?)?;
    (pdu.first() == Some(&code)).then(|| (pdu.to_vec(), code))
}

/// The table a function's address refers to, when the frame is not there to say.
fn table_of(code: u8) -> Option<DataTable> {
    match code {
        1 | 5 | 15 => Some(DataTable::Coils),
        2 => Some(DataTable::DiscreteInputs),
        3 | 6 | 16 | 22 | 23 | 24 => Some(DataTable::HoldingRegisters),
        4 => Some(DataTable::InputRegisters),
        _ => None,
    }
}

fn last(first: u16, quantity: u16) -> u16 {
    first.saturating_add(quantity.max(1) - 1)
}

/// Everything the alert saw: its own request, and for a folded alert the units, functions
/// and ranges of every occurrence (`seen`).
fn access_of(alert: &Alert, notes: &mut Vec<String>) -> Access {
    let mut access = Access::default();
    let decoded = request_in(alert);
    let request = decoded
        .as_ref()
        .and_then(|(pdu, _)| Request::decode_prefix(pdu).ok())
        .map(|(r, _)| r);
    // A sub-function is exact for one occurrence only: `seen` lists whole codes.
    let single = alert.count <= 1;
    if let Some(r) = &request {
        let sub = r.sub_function().filter(|_| single);
        access.functions.insert((r.function().code(), sub));
        for (table, first, quantity) in [r.read_range(), r.write_range()].into_iter().flatten() {
            access.ranges.insert((table, first, last(first, quantity)));
        }
    } else if let Some(code) = alert.function_code {
        access.functions.insert((code, None));
        if let (Some(table), Some(first)) = (table_of(code), alert.address) {
            access
                .ranges
                .insert((table, first, last(first, alert.quantity.unwrap_or(1))));
        }
    }
    if let Some((code, None)) = access.functions.iter().find(|(c, _)| matches!(c, 8 | 43)) {
        notes.push(format!(
            "every sub-function of function {code} is allowed: the alert does not say which one each occurrence used"
        ));
    }
    if !single && alert.seen.as_ref().is_none_or(|s| s.is_empty()) {
        notes.push(format!(
            "the alert folds {} occurrences and carries one: only what that one did is allowed, a replay may raise it again for the others",
            alert.count
        ));
    }
    let folded = alert.seen.as_ref().filter(|s| !s.is_empty());
    if let Some(seen) = folded {
        for &code in &seen.functions {
            if !access.functions.iter().any(|(c, _)| *c == code) {
                access.functions.insert((code, None));
            }
        }
        // Seen ranges do not say their table: each goes to every table the functions use.
        let tables: BTreeSet<DataTable> = access
            .functions
            .iter()
            .filter_map(|(c, _)| table_of(*c))
            .collect();
        for table in &tables {
            for [first, last] in &seen.ranges {
                access.ranges.insert((*table, *first, *last));
            }
        }
        if tables.len() > 1 && !seen.ranges.is_empty() {
            notes.push(
                "the occurrences' address ranges are allowed in every table their functions use"
                    .into(),
            );
        }
    }
    // Values bound only what one write wrote: other occurrences' values are not known.
    let writes_registers = access
        .functions
        .iter()
        .any(|(c, _)| matches!(c, 6 | 16 | 22 | 23));
    if writes_registers {
        let values = match &request {
            Some(r) => written_values(r),
            None => alert.values.clone(),
        };
        match values {
            Some(v) if alert.count <= 1 && !v.is_empty() => {
                access.written = v.iter().min().zip(v.iter().max()).map(|(a, b)| (*a, *b));
            }
            _ => notes.push(format!(
                "the values of the alert's {} occurrences are not all known: any value is allowed in the ranges (add `write_values` by hand to bound them)",
                alert.count
            )),
        }
    }
    access
}

fn written_values(request: &Request<'_>) -> Option<Vec<u16>> {
    match request {
        Request::WriteSingleRegister { value, .. } => Some(vec![*value]),
        Request::WriteMultipleRegisters { values, .. }
        | Request::ReadWriteMultipleRegisters { values, .. } => Some(values.iter().collect()),
        _ => None,
    }
}

/// The units the alert's requests addressed.
fn units_of(alert: &Alert) -> BTreeSet<u8> {
    let mut units: BTreeSet<u8> = alert.unit_id.into_iter().collect();
    if let Some(seen) = &alert.seen {
        units.extend(seen.units.iter().copied());
    }
    units
}

fn function_item(code: u8, sub: Option<u16>) -> Value {
    match sub {
        Some(sub) => Value::from(format!("{code}/{sub}")),
        None => match FunctionCode::new(code) {
            Ok(f) if FunctionCode::from_name(f.name()) == Some(f) => Value::from(f.name()),
            _ => Value::from(i64::from(code)),
        },
    }
}

fn range_item(first: u16, last: u16) -> Value {
    if first == last {
        Value::from(i64::from(first))
    } else {
        Value::from(format!("{first}-{last}"))
    }
}

/// Appends the `[[allow]]` rule; its summary and notes.
fn add_allow_rule(
    doc: &mut DocumentMut,
    alert: &Alert,
) -> Result<(String, Vec<String>), NotAllowable> {
    if let Some(rule) = already_allowed(&doc.to_string(), alert) {
        return Err(NotAllowable::AlreadyAllowed(rule));
    }
    let mut notes = Vec::new();
    let access = access_of(alert, &mut notes);
    if access.functions.is_empty() {
        return Err(NotAllowable::Kind(
            "the alert names no function: no rule can be written for it".into(),
        ));
    }
    let short = alert.id.get(..8).unwrap_or(&alert.id);
    let mut rule = Table::new();
    rule.insert("name", toml_edit::value(format!("from-alert-{short}")));
    rule.insert("from", toml_edit::value(alert.src_ip.to_string()));
    rule.insert("to", toml_edit::value(alert.dst_ip.to_string()));
    let units = units_of(alert);
    if units.is_empty() {
        notes.push("the alert names no unit id: the rule allows every unit of the target".into());
    } else {
        rule.insert(
            "units",
            toml_edit::value(units.iter().map(|u| i64::from(*u)).collect::<Array>()),
        );
    }
    let functions: Array = access
        .functions
        .iter()
        .map(|(c, s)| function_item(*c, *s))
        .collect();
    rule.insert("functions", toml_edit::value(functions));
    for table in [
        DataTable::Coils,
        DataTable::DiscreteInputs,
        DataTable::HoldingRegisters,
        DataTable::InputRegisters,
    ] {
        let ranges: Array = access
            .ranges
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, first, last)| range_item(*first, *last))
            .collect();
        if !ranges.is_empty() {
            rule.insert(table.name(), toml_edit::value(ranges));
        }
    }
    if let Some((min, max)) = access.written {
        let mut bounds = InlineTable::new();
        bounds.insert("min", Value::from(i64::from(min)));
        bounds.insert("max", Value::from(i64::from(max)));
        rule.insert("write_values", toml_edit::value(bounds));
    }
    let closest = closest_rule(alert);
    let mut comment = format!(
        "\n# Allowed from alert {} ({}, {}): {} -> {}.\n",
        alert.id, alert.rule, alert.ts, alert.src_ip, alert.dst_ip
    );
    if let Some(name) = &closest {
        let _ = writeln!(comment, "# The closest rule before this one: {name:?}.");
    }
    rule.decor_mut().set_prefix(comment);
    match doc.get_mut("allow") {
        Some(Item::ArrayOfTables(rules)) => rules.push(rule),
        None => {
            let mut rules = ArrayOfTables::new();
            rules.push(rule);
            doc.insert("allow", Item::ArrayOfTables(rules));
        }
        Some(_) => {
            return Err(NotAllowable::Unreadable(
                "`allow` is not written as [[allow]] tables".into(),
            ));
        }
    }
    if alert.rule == "policy.outside_hours" {
        notes.push("the new rule allows this at any time of day".into());
    }
    let summary = format!(
        "a new [[allow]] rule from {} to {}{}",
        alert.src_ip,
        alert.dst_ip,
        closest
            .map(|c| format!(" (the closest rule was {c:?})"))
            .unwrap_or_default()
    );
    Ok((summary, notes))
}

/// The allow rule of `policy` that allows the request in the alert's frame, if one does (at any
/// rate, at the alert's time).
fn already_allowed(policy: &str, alert: &Alert) -> Option<String> {
    let (pdu, _) = request_in(alert)?;
    let (request, _) = Request::decode_prefix(&pdu).ok()?;
    let (policy, _) = Policy::parse(policy, "policy").ok()?;
    let candidates = policy.candidates(alert.src_ip, alert.dst_ip);
    let rule = policy
        .allowing_rule(&candidates, alert.ts, alert.unit_id?, &request, |_, _| true)
        .ok()?;
    policy.allow.get(rule).map(|r| r.name.clone())
}

/// The rule the alert's message names as closest: `(closest allow rule: NAME)`.
fn closest_rule(alert: &Alert) -> Option<String> {
    let message = alert.message.as_deref()?;
    let start = message.rfind("(closest allow rule: ")? + "(closest allow rule: ".len();
    let name = message.get(start..)?.strip_suffix(')')?;
    Some(name.to_string())
}

/// Adds `source` to `suppress` under `[detectors."<rule>"]`.
fn suppress_source(
    doc: &mut DocumentMut,
    rule: &str,
    source: IpAddr,
) -> Result<(String, Vec<String>), NotAllowable> {
    let unreadable = |what: &str| NotAllowable::Unreadable(format!("{what} is not a table"));
    let detectors = doc
        .entry("detectors")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| unreadable("`detectors`"))?;
    let tuning = detectors
        .entry(rule)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| unreadable(&format!("`detectors.\"{rule}\"`")))?;
    let address = source.to_string();
    let mut list: Array = match tuning.get("suppress").and_then(Item::as_value) {
        None => Array::new(),
        Some(Value::String(one)) => std::iter::once(one.value().clone()).collect(),
        Some(Value::Array(many)) => many.clone(),
        Some(_) => return Err(unreadable(&format!("`detectors.\"{rule}\".suppress`"))),
    };
    if !list.iter().any(|v| v.as_str() == Some(address.as_str())) {
        list.push(address.as_str());
    }
    tuning.insert("suppress", toml_edit::value(list));
    Ok((
        format!("{source} added to the sources {rule} never alerts on"),
        vec![format!(
            "{rule} no longer alerts on anything {source} does, to any target"
        )],
    ))
}

#[cfg(test)]
mod tests;
