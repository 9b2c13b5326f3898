//! Warnings about a valid policy: rules that can never match, and allow rules made redundant by
//! an earlier one (shadowed), which usually mean a typo in the later rule.

use ipnet::IpNet;
use rustc_hash::FxHashMap;

use super::matcher::{AddrSet, RangeSet, UnitSet};
use super::{Asset, Matcher, Policy};
use crate::modbus::Table;

/// Something in a valid policy that is probably not what its author meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Line of the rule in the policy file.
    pub line: usize,
    /// The rule's name.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: rule {:?}: {}",
            self.line, self.rule, self.message
        )
    }
}

/// What is odd about an asset's network-level fields (policy language 2).
fn network_fields(asset: &Asset) -> Option<String> {
    let hosts: u128 = match &asset.addresses {
        AddrSet::Nets(nets) => nets.iter().fold(0u128, |sum, n| {
            sum.saturating_add(1u128 << u32::from(n.max_prefix_len() - n.prefix_len()).min(127))
        }),
        AddrSet::Any => u128::MAX,
    };
    if !asset.macs.is_empty() && hosts > 1 {
        return Some(
            "macs name one device's Ethernet addresses, but this asset covers a network: every host in it is judged against them (expected one address per asset with macs)"
                .into(),
        );
    }
    if asset.role == Some(super::Role::Router) && asset.macs.is_empty() {
        return Some(
            "a router is told by its Ethernet addresses: without macs, its routed traffic is quiet only once it has carried many hosts (expected macs = [...])"
                .into(),
        );
    }
    None
}

pub(super) fn lint(policy: &Policy) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let rules = policy
        .allow
        .iter()
        .map(|r| (r.line, &r.name, &r.matcher, true))
        .chain(
            policy
                .alerts
                .iter()
                .map(|r| (r.line, &r.name, &r.matcher, false)),
        );
    let targets = Targets::of(policy);
    for (line, name, m, _) in rules {
        if let Some(why) = never_matches(&targets, m) {
            warnings.push(Warning {
                line,
                rule: name.clone(),
                message: format!("can never match: {why}"),
            });
        }
    }
    for rule in &policy.allow {
        if let Some(why) = bounds_never_apply(&rule.matcher) {
            warnings.push(Warning {
                line: rule.line,
                rule: rule.name.clone(),
                message: why,
            });
        }
    }
    for asset in &policy.assets {
        if let Some(why) = network_fields(asset) {
            warnings.push(Warning {
                line: asset.line,
                rule: format!("asset {}", asset.name),
                message: why,
            });
        }
    }
    for (j, later) in policy.allow.iter().enumerate() {
        if let Some(earlier) = policy
            .allow
            .iter()
            .take(j)
            .find(|earlier| covers(&earlier.matcher, &later.matcher))
        {
            warnings.push(Warning {
                line: later.line,
                rule: later.name.clone(),
                message: format!(
                    "shadowed by rule {:?} (line {}), which already allows everything it allows",
                    earlier.name, earlier.line
                ),
            });
        }
    }
    warnings
}

/// The assets that answer for units, found by the first of their networks: a rule's targets
/// are looked up through the networks it names instead of by scanning every asset for every
/// rule (quadratic in the policy's size).
struct Targets<'a> {
    by_first_net: FxHashMap<IpNet, Vec<&'a Asset>>,
    /// Assets with units but no network: every rule's targets include them.
    without_nets: Vec<&'a Asset>,
}

impl<'a> Targets<'a> {
    fn of(policy: &'a Policy) -> Self {
        let mut targets = Self {
            by_first_net: FxHashMap::default(),
            without_nets: Vec::new(),
        };
        for a in &policy.assets {
            if let AddrSet::Nets(nets) = &a.addresses
                && a.units != UnitSet::NONE
            {
                match nets.first() {
                    Some(first) => targets.by_first_net.entry(*first).or_default().push(a),
                    None => targets.without_nets.push(a),
                }
            }
        }
        targets
    }

    /// The units the assets whose networks all lie among `nets` answer for.
    fn units_within(&self, nets: &[IpNet]) -> UnitSet {
        let found = nets
            .iter()
            .filter_map(|n| self.by_first_net.get(n))
            .flatten()
            .chain(&self.without_nets)
            .filter(
                |a| matches!(&a.addresses, AddrSet::Nets(n) if n.iter().all(|x| nets.contains(x))),
            );
        let mut units = UnitSet::NONE;
        for a in found {
            for u in a.units.iter() {
                units.insert(u);
            }
        }
        units
    }
}

fn never_matches(targets: &Targets<'_>, m: &Matcher) -> Option<String> {
    if m.from.is_empty() {
        return Some("`from` names no host".into());
    }
    if m.to.is_empty() {
        return Some("`to` names no host".into());
    }
    if m.units == UnitSet::NONE {
        return Some("no unit id".into());
    }
    if let AddrSet::Nets(nets) = &m.to {
        // The units the named targets answer for must meet the rule's units.
        let target_units = targets.units_within(nets);
        if target_units != UnitSet::NONE && !target_units.intersects(&m.units) {
            return Some("its units are not units the targets answer for".into());
        }
    }
    if m.functions.is_empty() {
        return Some("no function".into());
    }
    if let Some(ranges) = &m.ranges {
        let usable = m.functions.codes().any(|code| match tables_of(code) {
            [] => true,
            tables => tables
                .iter()
                .all(|t| ranges.get(*t).is_some_and(Option::is_some)),
        }) || !m.functions.subs().is_empty();
        if !usable {
            return Some("none of its functions uses a table it gives address ranges for".into());
        }
    }
    if let Some(h) = &m.hours
        && (h.days == 0 || h.start == h.end)
    {
        return Some("its time window is empty".into());
    }
    None
}

/// A `read_values` entry for registers the rule never lets be read: its bound is never
/// checked, which usually means a typo in the range or the table.
fn bounds_never_apply(m: &Matcher) -> Option<String> {
    let limits = m.read_values.as_deref()?;
    if limits.ranges.is_empty() && limits.rest.is_none() {
        return Some("read_values is an empty list: it bounds nothing".into());
    }
    let ranges = m.ranges.as_ref()?;
    limits.ranges.iter().find_map(|(table, registers, _)| {
        let index = match table {
            Table::HoldingRegisters => 2,
            _ => 3,
        };
        let allowed = ranges.get(index)?.as_ref();
        let covered = allowed.is_some_and(|a| a.covers(registers));
        (!covered).then(|| {
            format!(
                "read_values bounds {} {} the rule does not allow reading: never checked",
                table.name(),
                registers.list("")
            )
        })
    })
}

/// Tables (by index: coils, discrete inputs, holding, input registers) a function touches.
fn tables_of(code: u8) -> &'static [usize] {
    match code {
        1 | 5 | 15 => &[0],
        2 => &[1],
        3 | 6 | 16 | 22 | 23 | 24 => &[2],
        4 => &[3],
        _ => &[],
    }
}

/// Whether everything `later` allows, `earlier` allows too.
fn covers(earlier: &Matcher, later: &Matcher) -> bool {
    earlier.from.covers(&later.from)
        && earlier.to.covers(&later.to)
        && earlier.units.covers(&later.units)
        && earlier.functions.covers(&later.functions)
        && ranges_cover(earlier.ranges.as_ref(), later.ranges.as_ref())
        && match (earlier.write_values, later.write_values) {
            (None, _) => true,
            (Some(e), Some(l)) => e.covers(&l),
            (Some(_), None) => false,
        }
        && match (earlier.rate, later.rate) {
            (None, _) => true,
            (Some(e), Some(l)) => {
                e.count as f64 / e.period.as_secs_f64() >= l.count as f64 / l.period.as_secs_f64()
            }
            (Some(_), None) => false,
        }
        && match (earlier.hours, later.hours) {
            (None, _) => true,
            (Some(e), Some(l)) => e == l,
            (Some(_), None) => false,
        }
}

fn ranges_cover(
    earlier: Option<&[Option<RangeSet>; 4]>,
    later: Option<&[Option<RangeSet>; 4]>,
) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => e.iter().zip(l).all(|(e, l)| match (e, l) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(e), Some(l)) => e.covers(l),
        }),
    }
}
