//! Learned policies from several agents merged into one proposal for review.
//!
//! A learned policy is hostile input: the agent that sent it may be compromised. Only what
//! `otwatch-agent learn` writes is taken ([`check_learned`]): `version`, `name`, `[[asset]]`,
//! `[groups]` and `[[allow]]`; a policy that turns detectors off, adds `[[alert]]` rules or
//! sets the plant's time would otherwise reach a proposal an admin may approve at a glance.
//!
//! The merge ([`merge_learned`]) keeps every agent's allow rules (the union of what each
//! segment did), each under a comment naming its agent. Assets of the same name and address
//! (learning names a host by its address) become one, with their unit ids together and no
//! role when the agents disagree; an asset of a name another agent gave another address, and
//! every group, is renamed `<agent>.<name>` and the rules of that agent follow the new name.
//! The result is parsed by the policy checker before it is offered.

use std::collections::{BTreeMap, BTreeSet};

use toml_edit::{Array, ArrayOfTables, Decor, DocumentMut, Item, Table, Value};

use crate::mac::Mac;
use crate::policy::matcher::Rate;
use crate::policy::{MAX_MACS, Policy, PolicyError};

/// The keys a learned policy may have at its top level.
const LEARNED_KEYS: [&str; 5] = ["version", "name", "asset", "groups", "allow"];

/// Why a learned policy or a merge of them is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LearnedError {
    /// Not a valid policy at all.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    /// A part `learn` never writes.
    #[error(
        "{0}: not something learning writes (expected only version, name, [[asset]], [groups] and [[allow]])"
    )]
    NotLearned(String),
}

/// Checks that `text` is a valid policy holding only what learning writes.
pub fn check_learned(text: &str, source: &str) -> Result<Policy, LearnedError> {
    let (policy, _) = Policy::parse(text, source)?;
    let doc: DocumentMut = text
        .parse()
        .map_err(|_| LearnedError::NotLearned("toml".into()))?;
    if let Some((key, _)) = doc.iter().find(|(k, _)| !LEARNED_KEYS.contains(k)) {
        return Err(LearnedError::NotLearned(key.to_string()));
    }
    for (i, rule) in doc
        .get("allow")
        .and_then(Item::as_array_of_tables)
        .into_iter()
        .flat_map(ArrayOfTables::iter)
        .enumerate()
    {
        // Learned rules allow; they never carry what only alert rules take.
        for key in ["severity", "technique", "message", "window", "threshold"] {
            if rule.contains_key(key) {
                return Err(LearnedError::NotLearned(format!("allow[{i}].{key}")));
            }
        }
    }
    Ok(policy)
}

/// A name safe to prefix another with: the agent's name, anything but letters, digits, `-`
/// and `_` made `_`; `-2`, `-3`... after it when another agent's made the same.
fn prefix_of(agent: &str, taken: &mut BTreeSet<String>) -> String {
    let base: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    unique(base, taken)
}

/// `name`, or `name-2`, `name-3`... whichever `taken` does not hold yet; then taken.
fn unique(name: String, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 1;
    while taken.contains(&candidate) {
        n += 1;
        candidate = format!("{name}-{n}");
    }
    taken.insert(candidate.clone());
    candidate
}

/// Marks every comment line of `decor` as the agent's: an agent's comments cannot pass for
/// the merge's own or another agent's.
fn attribute_decor(decor: &mut Decor, agent: &str) {
    let mark = |raw: Option<&str>| {
        raw.filter(|r| r.contains('#')).map(|r| {
            r.split_inclusive('\n')
                .map(|line| match line.trim_start().strip_prefix('#') {
                    Some(rest) => format!("# {agent}:{rest}"),
                    None => line.to_string(),
                })
                .collect::<String>()
        })
    };
    if let Some(p) = mark(decor.prefix().and_then(|p| p.as_str())) {
        decor.set_prefix(p);
    }
    if let Some(s) = mark(decor.suffix().and_then(|s| s.as_str())) {
        decor.set_suffix(s);
    }
}

fn attribute_value(value: &mut Value, agent: &str) {
    attribute_decor(value.decor_mut(), agent);
    match value {
        Value::Array(list) => {
            for v in list.iter_mut() {
                attribute_value(v, agent);
            }
            let trailing = list.trailing().as_str().filter(|t| t.contains('#'));
            if let Some(t) = trailing {
                let t = t.replace('#', &format!("# {agent}:"));
                list.set_trailing(t);
            }
        }
        Value::InlineTable(table) => {
            for (_, v) in table.iter_mut() {
                attribute_value(v, agent);
            }
        }
        _ => {}
    }
}

/// Marks every comment in `table` as the agent's.
fn attribute(table: &mut Table, agent: &str) {
    attribute_decor(table.decor_mut(), agent);
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        if let Some(mut k) = table.key_mut(&key) {
            attribute_decor(k.leaf_decor_mut(), agent);
        }
        if let Some(v) = table.get_mut(&key).and_then(Item::as_value_mut) {
            attribute_value(v, agent);
        }
    }
}

/// Replaces names in a `from` or `to` value (a string or a list of strings).
fn rename_in(item: &mut Item, renamed: &BTreeMap<String, String>) {
    let rename = |v: &mut Value| {
        if let Some(new) = v.as_str().and_then(|s| renamed.get(s)) {
            let decor = v.decor().clone();
            *v = Value::from(new.as_str());
            *v.decor_mut() = decor;
        }
    };
    match item.as_value_mut() {
        Some(Value::Array(list)) => list.iter_mut().for_each(rename),
        Some(v) => rename(v),
        None => {}
    }
}

/// What two agents learned of one asset for the network-level detectors (policy language
/// 2), together: every Ethernet address either saw (at most [`MAX_MACS`]), and the higher of
/// each rate (two agents on overlapping segments see the same traffic).
fn merge_network(known: &mut Table, other: &Table) {
    let macs = |t: &Table| -> BTreeSet<String> {
        t.get("macs")
            .and_then(Item::as_array)
            .into_iter()
            .flat_map(Array::iter)
            .filter_map(|v| v.as_str().and_then(|m| m.parse::<Mac>().ok()))
            .map(|m| m.to_string())
            .collect()
    };
    let all: BTreeSet<String> = macs(known).union(&macs(other)).cloned().collect();
    if !all.is_empty() {
        known.insert(
            "macs",
            toml_edit::value(all.into_iter().take(MAX_MACS).collect::<Array>()),
        );
    }
    for key in ["request_rate", "connection_rate"] {
        let per_s = |t: &Table| {
            t.get(key)
                .and_then(Item::as_str)
                .and_then(Rate::parse)
                .map(|r| f64::from(r.count) / r.period.as_secs_f64())
        };
        if let (Some(theirs), ours) = (per_s(other), per_s(known))
            && ours.is_none_or(|o| theirs > o)
            && let Some(v) = other.get(key)
        {
            known.insert(key, v.clone());
        }
    }
}

fn units_of(asset: &Table) -> BTreeSet<i64> {
    asset
        .get("units")
        .and_then(Item::as_array)
        .into_iter()
        .flat_map(Array::iter)
        .filter_map(Value::as_integer)
        .collect()
}

/// Merges the learned policies of several agents (`(agent, toml)`, each passed by
/// [`check_learned`]) into one policy named `name`.
pub fn merge_learned(name: &str, learned: &[(&str, &str)]) -> Result<String, LearnedError> {
    let mut assets: Vec<Table> = Vec::new();
    let mut asset_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups = Table::new();
    let mut rules = ArrayOfTables::new();
    let mut prefixes = BTreeSet::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut version = 1;
    for (agent, text) in learned {
        let policy = check_learned(text, &format!("learned by {agent}"))?;
        version = version.max(policy.version);
        let doc: DocumentMut = text
            .parse()
            .map_err(|_| LearnedError::NotLearned("toml".into()))?;
        let prefix = prefix_of(agent, &mut prefixes);
        let mut renamed: BTreeMap<String, String> = BTreeMap::new();
        for asset in doc
            .get("asset")
            .and_then(Item::as_array_of_tables)
            .into_iter()
            .flat_map(ArrayOfTables::iter)
        {
            let mut asset = asset.clone();
            attribute(&mut asset, agent);
            let asset_name = asset
                .get("name")
                .and_then(Item::as_str)
                .unwrap_or_default()
                .to_string();
            let address = |t: &Table| {
                (
                    t.get("address").map(|a| a.to_string().trim().to_string()),
                    t.get("addresses").map(|a| a.to_string().trim().to_string()),
                )
            };
            match asset_index
                .get(&asset_name)
                .and_then(|&i| assets.get_mut(i))
            {
                Some(known) if address(known) == address(&asset) => {
                    let units: BTreeSet<i64> =
                        units_of(known).union(&units_of(&asset)).copied().collect();
                    if !units.is_empty() {
                        known.insert(
                            "units",
                            toml_edit::value(units.into_iter().collect::<Array>()),
                        );
                    }
                    if known.get("role").map(|r| r.to_string())
                        != asset.get("role").map(|r| r.to_string())
                    {
                        known.remove("role");
                    }
                    merge_network(known, &asset);
                }
                Some(_) => {
                    let new = unique(format!("{prefix}.{asset_name}"), &mut names);
                    asset.insert("name", toml_edit::value(new.as_str()));
                    renamed.insert(asset_name, new.clone());
                    asset_index.insert(new, assets.len());
                    assets.push(asset);
                }
                None => {
                    names.insert(asset_name.clone());
                    asset_index.insert(asset_name, assets.len());
                    assets.push(asset);
                }
            }
        }
        if let Some(own) = doc.get("groups").and_then(Item::as_table) {
            for (group, members) in own.iter() {
                let new = unique(format!("{prefix}.{group}"), &mut names);
                let mut members = members.clone();
                rename_in(&mut members, &renamed);
                if let Some(v) = members.as_value_mut() {
                    attribute_value(v, agent);
                }
                renamed.insert(group.to_string(), new.clone());
                groups.insert(&new, members);
            }
        }
        let mut first = true;
        for rule in doc
            .get("allow")
            .and_then(Item::as_array_of_tables)
            .into_iter()
            .flat_map(ArrayOfTables::iter)
        {
            let mut rule = rule.clone();
            attribute(&mut rule, agent);
            for key in ["from", "to"] {
                if let Some(item) = rule.get_mut(key) {
                    rename_in(item, &renamed);
                }
            }
            if first {
                let kept = rule
                    .decor()
                    .prefix()
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .trim_start_matches('\n')
                    .to_string();
                rule.decor_mut()
                    .set_prefix(format!("\n# ---- learned by agent {agent} ----\n{kept}"));
                first = false;
            }
            rules.push(rule);
        }
    }
    let mut out = DocumentMut::new();
    let agents: Vec<&str> = learned.iter().map(|(a, _)| *a).collect();
    out.decor_mut().set_prefix(format!(
        "# Proposed by otwatch from what agents learned: {}.\n# Review it before assigning it: each rule allows what one agent saw, with a little room.\n",
        agents.join(", ")
    ));
    out.insert("version", toml_edit::value(i64::from(version)));
    out.insert("name", toml_edit::value(name));
    // Tables keep the place they had in their own policy: they are given new places, in order.
    let mut place = 0;
    let mut next = || {
        place += 1;
        Some(place)
    };
    let mut asset_tables = ArrayOfTables::new();
    for mut asset in assets {
        asset.set_position(next());
        asset_tables.push(asset);
    }
    groups.set_position(next());
    for rule in rules.iter_mut() {
        rule.set_position(next());
    }
    if !asset_tables.is_empty() {
        out.insert("asset", Item::ArrayOfTables(asset_tables));
    }
    if !groups.is_empty() {
        out.insert("groups", Item::Table(groups));
    }
    if !rules.is_empty() {
        out.insert("allow", Item::ArrayOfTables(rules));
    }
    let text = out.to_string();
    Policy::parse(&text, name)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
