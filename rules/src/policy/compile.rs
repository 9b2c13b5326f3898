//! From the policy file's text to a validated [`Policy`]: every error names the line, the field
//! and what was expected.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap;
use toml::Spanned;

use super::matcher::{
    AddrSet, Bounds, FunctionSet, RangeSet, Rate, ReadBounds, TimeWindow, UnitSet, parse_duration,
};
use super::syntax::{
    AssetSyntax, BoundsSyntax, DetectorsSyntax, FunctionItem, GroupsSyntax, OneOrMany, PolicyFile,
    RangeBoundsSyntax, RangeItem, RuleSyntax, TuningSyntax,
};
use super::{
    AlertRule, AllowRule, Asset, Criticality, Matcher, POLICY_VERSION, Policy, PolicyError, Role,
    Tuning,
};
use crate::alert::{Severity, rule_by_id};
use crate::mac::Mac;
use crate::modbus::{FunctionClass, FunctionCode, Table};
use crate::validate;

/// Where errors point: the text's line starts, for line numbers, and its name.
struct Source<'a> {
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    name: &'a str,
}

impl<'a> Source<'a> {
    fn new(text: &str, name: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { line_starts, name }
    }

    /// 1-based line and column of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = line
            .checked_sub(1)
            .and_then(|i| self.line_starts.get(i))
            .copied()
            .unwrap_or(0);
        (line.max(1), offset.saturating_sub(start) + 1)
    }

    fn error(&self, span: std::ops::Range<usize>, field: &str, message: String) -> PolicyError {
        let (line, column) = self.position(span.start);
        PolicyError {
            source_name: self.name.to_string(),
            line,
            column,
            field: field.to_string(),
            message,
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, field: &str, message: String) -> PolicyError {
        self.error(spanned.span(), field, message)
    }

    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        self.position(span.start).0
    }
}

pub(super) fn compile(text: &str, name: &str) -> Result<Policy, PolicyError> {
    let src = Source::new(text, name);
    let file: PolicyFile = toml::from_str(text).map_err(|e| {
        src.error(
            e.span().unwrap_or(0..0),
            "toml",
            e.message().trim().to_string(),
        )
    })?;
    let version = *file.version.get_ref();
    if !(1..=POLICY_VERSION).contains(&version) {
        return Err(src.at(
            &file.version,
            "version",
            format!(
                "version {version} is not supported (expected 1 to {POLICY_VERSION}; a newer agent reads newer versions)"
            ),
        ));
    }
    let utc_offset_minutes = match &file.utc_offset {
        Some(o) => parse_offset(o.get_ref()).ok_or_else(|| {
            src.at(
                o,
                "utc_offset",
                format!(
                    "{:?} is not an offset (expected \"+HH:MM\" or \"-HH:MM\")",
                    o.get_ref()
                ),
            )
        })?,
        None => 0,
    };
    let default_window = file
        .default_window
        .as_ref()
        .map(|w| duration(&src, w, "default_window"))
        .transpose()?;

    let assets = assets(&src, version, &file.assets)?;
    let groups = groups(&src, &file.groups, &assets)?;
    let resolver = Resolver::new(&assets, &groups);
    let allow = allow_rules(&src, &resolver, &file.allows)?;
    let alerts = alert_rules(&src, &resolver, &file.alerts)?;
    let tuning = tuning(&src, &resolver, &file.detectors)?;
    let checks_reads = allow.iter().any(|r| r.matcher.read_values.is_some());
    Ok(Policy {
        checks_reads,
        version: *file.version.get_ref(),
        name: file.name,
        hash: blake3::hash(text.as_bytes())
            .to_hex()
            .get(..16)
            .unwrap_or_default()
            .to_string(),
        utc_offset_minutes,
        default_window,
        assets,
        groups,
        allow,
        alerts,
        tuning,
    })
}

/// The `[[asset]]` sections: names unique and not addresses, addresses parsed.
fn assets(
    src: &Source<'_>,
    version: u32,
    file_assets: &[AssetSyntax],
) -> Result<Vec<Asset>, PolicyError> {
    let mut assets: Vec<Asset> = Vec::new();
    for (i, a) in file_assets.iter().enumerate() {
        let asset = asset(src, version, i, a, &assets)?;
        assets.push(asset);
    }
    Ok(assets)
}

/// The `i`th `[[asset]]`, `a`, after the `earlier` ones, in a file of language `version`.
fn asset(
    src: &Source<'_>,
    version: u32,
    i: usize,
    a: &AssetSyntax,
    earlier: &[Asset],
) -> Result<Asset, PolicyError> {
    let field = |f: &str| format!("asset[{i}].{f}");
    let name = a.name.get_ref().trim().to_string();
    if name.is_empty()
        || name == "any"
        || name.parse::<IpNet>().is_ok()
        || name.parse::<IpAddr>().is_ok()
    {
        return Err(src.at(
            &a.name,
            &field("name"),
            format!("{name:?} cannot name an asset (expected a word other than \"any\" and not an address)"),
        ));
    }
    for (f, text) in [("name", Some(&name)), ("zone", a.zone.as_ref())] {
        if let Some(text) = text
            && text.len() > validate::MAX_LABEL
        {
            return Err(src.at(
                &a.name,
                &field(f),
                format!(
                    "{} bytes is too long (expected at most {}: the collector takes no longer label)",
                    text.len(),
                    validate::MAX_LABEL
                ),
            ));
        }
    }
    if earlier.iter().any(|x| x.name == name) {
        return Err(src.at(
            &a.name,
            &field("name"),
            format!("asset {name:?} is defined twice (expected unique asset names)"),
        ));
    }
    let mut nets = Vec::new();
    for addr in a.address.iter().chain(&a.addresses) {
        nets.push(net(addr.get_ref()).ok_or_else(|| {
            src.at(
                addr,
                &field("address"),
                format!(
                    "{:?} is not an IP address or CIDR network (expected like \"10.0.0.5\" or \"10.0.0.0/24\")",
                    addr.get_ref()
                ),
            )
        })?);
    }
    if nets.is_empty() {
        return Err(src.at(
            &a.name,
            &field("address"),
            format!("asset {name:?} has no address (expected address = \"10.0.0.5\" or a CIDR)"),
        ));
    }
    let units = units(src, &a.units, &field("units"))?.unwrap_or(UnitSet::ALL);
    let role = a
        .role
        .as_ref()
        .map(|r| match r.get_ref().as_str() {
            "master" => Ok(Role::Master),
            "slave" => Ok(Role::Slave),
            "engineering" => Ok(Role::Engineering),
            "router" if version >= 2 => Ok(Role::Router),
            "router" => Err(needs_version_2(src, r, &field("role"), "role = \"router\"")),
            other => Err(src.at(
                r,
                &field("role"),
                format!(
                    "{other:?} is not a role (expected \"master\", \"slave\", \"engineering\" or, from version 2, \"router\")"
                ),
            )),
        })
        .transpose()?;
    let criticality = a
        .criticality
        .as_ref()
        .map(|c| match c.get_ref().as_str() {
            "low" => Ok(Criticality::Low),
            "medium" => Ok(Criticality::Medium),
            "high" => Ok(Criticality::High),
            "critical" => Ok(Criticality::Critical),
            other => Err(src.at(
                c,
                &field("criticality"),
                format!("{other:?} is not a criticality (expected low, medium, high or critical)"),
            )),
        })
        .transpose()?;
    let macs = match &a.macs {
        Some(list) if version < 2 => {
            return Err(needs_version_2(src, list, &field("macs"), "macs"));
        }
        Some(list) => macs(src, list, &field("macs"))?,
        None => Vec::new(),
    };
    let mut rates = [None, None];
    for (slot, (f, text)) in rates.iter_mut().zip([
        ("connection_rate", &a.connection_rate),
        ("request_rate", &a.request_rate),
    ]) {
        let Some(text) = text else { continue };
        if version < 2 {
            return Err(needs_version_2(src, text, &field(f), f));
        }
        *slot = Some(Rate::parse(text.get_ref()).ok_or_else(|| {
            src.at(
                text,
                &field(f),
                format!(
                    "{:?} is not a rate (expected like \"6/min\": a positive count per s, min or h)",
                    text.get_ref()
                ),
            )
        })?);
    }
    let [connection_rate, request_rate] = rates;
    Ok(Asset {
        name,
        addresses: AddrSet::Nets(nets),
        units,
        role,
        zone: a.zone.clone(),
        criticality,
        macs,
        connection_rate,
        request_rate,
        line: src.line_of(a.name.span()),
    })
}

/// The refusal of `what` in a file of policy-language version 1.
fn needs_version_2<T>(src: &Source<'_>, at: &Spanned<T>, field: &str, what: &str) -> PolicyError {
    src.at(
        at,
        field,
        format!(
            "{what} is policy language version 2 (expected version = 2 at the top of the file)"
        ),
    )
}

/// Most Ethernet addresses one asset declares.
pub const MAX_MACS: usize = 16;

/// An asset's `macs`: unicast Ethernet addresses, at most [`MAX_MACS`], none twice.
fn macs(
    src: &Source<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    field: &str,
) -> Result<Vec<Mac>, PolicyError> {
    if list.get_ref().len() > MAX_MACS {
        return Err(src.at(
            list,
            field,
            format!(
                "{} addresses (expected at most {MAX_MACS})",
                list.get_ref().len()
            ),
        ));
    }
    let mut out: Vec<Mac> = Vec::new();
    for item in list.get_ref() {
        let mac: Mac = item.get_ref().parse().map_err(|e: crate::mac::NotAMac| {
            src.at(item, field, format!("{:?} is {e}", item.get_ref()))
        })?;
        if mac.is_group() || mac.is_zero() {
            return Err(src.at(
                item,
                field,
                format!(
                    "{mac} is a group or empty address, which no one device owns (expected a unicast address)"
                ),
            ));
        }
        if out.contains(&mac) {
            return Err(src.at(item, field, format!("{mac} is listed twice")));
        }
        out.push(mac);
    }
    Ok(out)
}

/// The `[groups]` section: every member an asset, no group named like an asset.
fn groups(
    src: &Source<'_>,
    file_groups: &GroupsSyntax,
    assets: &[Asset],
) -> Result<BTreeMap<String, Vec<String>>, PolicyError> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, members) in file_groups {
        if assets.iter().any(|a| &a.name == group) {
            return Err(src.at(
                members,
                &format!("groups.{group}"),
                format!(
                    "{group:?} is already an asset's name (expected a group name no asset uses)"
                ),
            ));
        }
        let mut names = Vec::new();
        for m in members.get_ref() {
            if !assets.iter().any(|a| &a.name == m.get_ref()) {
                return Err(src.at(
                    m,
                    &format!("groups.{group}"),
                    format!(
                        "unknown asset {:?} (expected the name of an [[asset]])",
                        m.get_ref()
                    ),
                ));
            }
            names.push(m.get_ref().clone());
        }
        groups.insert(group.clone(), names);
    }
    Ok(groups)
}

/// The `[[allow]]` rules: matching fields only.
fn allow_rules(
    src: &Source<'_>,
    resolver: &Resolver<'_>,
    rules: &[Spanned<RuleSyntax>],
) -> Result<Vec<AllowRule>, PolicyError> {
    let mut allow = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("allow[{i}]");
        let matcher = matcher(src, resolver, rule.get_ref(), &field)?;
        let r = rule.get_ref();
        for (present, f) in [
            (r.severity.is_some(), "severity"),
            (r.technique.is_some(), "technique"),
            (r.window.is_some(), "window"),
            (r.threshold.is_some(), "threshold"),
            (r.message.is_some(), "message"),
        ] {
            if present {
                return Err(src.at(
                    rule,
                    &format!("{field}.{f}"),
                    format!("{f} belongs in an [[alert]] rule (expected only matching fields in [[allow]])"),
                ));
            }
        }
        allow.push(AllowRule {
            name: r.name.clone().unwrap_or_else(|| field.clone()),
            line: src.line_of(rule.span()),
            matcher,
        });
    }
    Ok(allow)
}

/// The `[[alert]]` rules: a matcher, and what the alert says (severity, techniques, message,
/// window, threshold), each bounded as the collector bounds alerts.
fn alert_rules(
    src: &Source<'_>,
    resolver: &Resolver<'_>,
    rules: &[Spanned<RuleSyntax>],
) -> Result<Vec<AlertRule>, PolicyError> {
    let mut alerts = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("alert[{i}]");
        let r = rule.get_ref();
        let matcher = matcher(src, resolver, r, &field)?;
        let severity = match &r.severity {
            Some(s) => severity(src, s, &format!("{field}.severity"))?,
            None => Severity::Medium,
        };
        let mut technique = Vec::new();
        if let Some(t) = &r.technique {
            for id in t.get_ref().iter() {
                if !validate::is_technique(id) {
                    return Err(src.at(
                        t,
                        &format!("{field}.technique"),
                        format!(
                            "{id:?} is not valid (expected {})",
                            validate::TECHNIQUE_SYNTAX
                        ),
                    ));
                }
                technique.push(id.clone());
            }
            if technique.len() > validate::MAX_TECHNIQUES {
                return Err(src.at(
                    t,
                    &format!("{field}.technique"),
                    format!(
                        "{} techniques is too many (expected at most {})",
                        technique.len(),
                        validate::MAX_TECHNIQUES
                    ),
                ));
            }
        }
        if let Some(m) = &r.message
            && m.len() > validate::MAX_MESSAGE
        {
            return Err(src.at(
                rule,
                &format!("{field}.message"),
                format!(
                    "{} bytes is too long (expected at most {})",
                    m.len(),
                    validate::MAX_MESSAGE
                ),
            ));
        }
        let window = r
            .window
            .as_ref()
            .map(|w| duration(src, w, &format!("{field}.window")))
            .transpose()?;
        let threshold = threshold(src, r.threshold.as_ref(), &format!("{field}.threshold"))?;
        let name = r.name.clone().unwrap_or_else(|| format!("alert{i}"));
        // The same syntax the collector checks every alert's rule id against.
        let id = AlertRule::rule_id_of(&name);
        if !validate::is_rule_id(&id) {
            return Err(src.at(
                rule,
                &format!("{field}.name"),
                format!(
                    "{name:?} makes the rule id {id:?}, which is not valid (expected {})",
                    validate::RULE_ID_SYNTAX
                ),
            ));
        }
        alerts.push(AlertRule {
            name,
            line: src.line_of(rule.span()),
            matcher,
            severity,
            technique,
            message: r.message.clone(),
            window,
            threshold: threshold.unwrap_or(1),
        });
    }
    Ok(alerts)
}

/// The `[detectors]` section: settings of built-in rules, by their ids.
fn tuning(
    src: &Source<'_>,
    resolver: &Resolver<'_>,
    detectors: &DetectorsSyntax,
) -> Result<BTreeMap<String, Tuning>, PolicyError> {
    let mut tuning = BTreeMap::new();
    for (id, t) in detectors {
        if rule_by_id(id.get_ref()).is_none() {
            return Err(src.at(
                id,
                &format!("detectors.{}", id.get_ref()),
                format!(
                    "{:?} is not a built-in rule id (expected one of the ids listed in the README, e.g. \"recon.read_device_id\")",
                    id.get_ref()
                ),
            ));
        }
        tuning.insert(
            id.get_ref().clone(),
            tune(src, resolver, t, &format!("detectors.{}", id.get_ref()))?,
        );
    }
    Ok(tuning)
}

struct Resolver<'a> {
    /// Assets by name (the first of a name, as file order decides elsewhere too).
    assets: FxHashMap<&'a str, &'a Asset>,
    groups: &'a BTreeMap<String, Vec<String>>,
}

impl<'a> Resolver<'a> {
    /// A resolver over the policy's assets and groups: each rule names hosts, and looking them
    /// up by scanning every asset made compiling a policy quadratic in its size.
    fn new(assets: &'a [Asset], groups: &'a BTreeMap<String, Vec<String>>) -> Self {
        let mut by_name = FxHashMap::default();
        for a in assets {
            by_name.entry(a.name.as_str()).or_insert(a);
        }
        Self {
            assets: by_name,
            groups,
        }
    }

    /// Resolves names, groups, addresses and `any` to a host set, and the units the named assets
    /// answer for.
    fn hosts(&self, names: &[String]) -> Result<(AddrSet, UnitSet), String> {
        let mut nets = Vec::new();
        let mut units = UnitSet::NONE;
        for n in names {
            let name = n.trim();
            if name == "any" {
                return Ok((AddrSet::Any, UnitSet::ALL));
            }
            if let Some(a) = self.assets.get(name) {
                push_asset(a, &mut nets, &mut units);
            } else if let Some(members) = self.groups.get(name) {
                for m in members {
                    if let Some(a) = self.assets.get(m.as_str()) {
                        push_asset(a, &mut nets, &mut units);
                    }
                }
            } else if let Some(net) = net(name) {
                nets.push(net);
                units = UnitSet::ALL;
            } else {
                return Err(format!(
                    "unknown asset or group {name:?} (expected an asset or group name, an IP address or CIDR, or \"any\")"
                ));
            }
        }
        Ok((AddrSet::Nets(nets), units))
    }
}

fn push_asset(a: &Asset, nets: &mut Vec<IpNet>, units: &mut UnitSet) {
    if let AddrSet::Nets(n) = &a.addresses {
        nets.extend(n.iter().copied());
    }
    for u in a.units.iter() {
        units.insert(u);
    }
}

fn matcher(
    src: &Source<'_>,
    resolver: &Resolver<'_>,
    r: &RuleSyntax,
    field: &str,
) -> Result<Matcher, PolicyError> {
    let hosts = |list: &Spanned<OneOrMany<String>>, f: &str| {
        let items: Vec<String> = list.get_ref().iter().cloned().collect();
        resolver
            .hosts(&items)
            .map_err(|message| src.at(list, &format!("{field}.{f}"), message))
    };
    let (from, _) = hosts(&r.from, "from")?;
    let (to, target_units) = hosts(&r.to, "to")?;
    let units = match &r.units {
        Some(u) => units(src, u.get_ref(), &format!("{field}.units"))?.unwrap_or(UnitSet::ALL),
        None => target_units,
    };
    let mut functions = FunctionSet::new();
    for item in r.functions.get_ref().iter() {
        function(
            src,
            &r.functions,
            item,
            &mut functions,
            &format!("{field}.functions"),
        )?;
    }
    let tables = [
        (&r.coils, "coils"),
        (&r.discrete_inputs, "discrete_inputs"),
        (&r.holding_registers, "holding_registers"),
        (&r.input_registers, "input_registers"),
    ];
    let ranges = if tables.iter().all(|(t, _)| t.is_none()) {
        None
    } else {
        let mut out: [Option<RangeSet>; 4] = Default::default();
        for (slot, (t, name)) in out.iter_mut().zip(tables) {
            if let Some(list) = t {
                *slot = Some(range_set(src, list, &format!("{field}.{name}"))?);
            }
        }
        Some(out)
    };
    let write_values = r
        .write_values
        .as_ref()
        .map(|b| bounds(src, b, &format!("{field}.write_values")))
        .transpose()?;
    let read_values = r
        .read_values
        .as_ref()
        .map(|b| read_bounds(src, b, &format!("{field}.read_values")))
        .transpose()?
        .map(Box::new);
    let rate = r
        .rate
        .as_ref()
        .map(|rate| {
            Rate::parse(rate.get_ref()).ok_or_else(|| {
                src.at(
                    rate,
                    &format!("{field}.rate"),
                    format!(
                        "{:?} is not a rate (expected like \"20/s\", \"300/min\" or \"1000/h\")",
                        rate.get_ref()
                    ),
                )
            })
        })
        .transpose()?;
    let mut days = TimeWindow::ALL_DAYS;
    if let Some(d) = &r.days {
        days = 0;
        for day in d.get_ref() {
            days |= TimeWindow::day_bit(day.get_ref()).ok_or_else(|| {
                src.at(
                    day,
                    &format!("{field}.days"),
                    format!(
                        "{:?} is not a day (expected mon, tue, wed, thu, fri, sat or sun)",
                        day.get_ref()
                    ),
                )
            })?;
        }
    }
    let hours = match (&r.hours, &r.days) {
        (Some(h), _) => {
            let (start, end) = TimeWindow::parse_hours(h.get_ref()).ok_or_else(|| {
                src.at(
                    h,
                    &format!("{field}.hours"),
                    format!(
                        "{:?} is not a time window (expected like \"06:00-18:00\")",
                        h.get_ref()
                    ),
                )
            })?;
            Some(TimeWindow { start, end, days })
        }
        (None, Some(_)) => Some(TimeWindow {
            start: 0,
            end: 24 * 60,
            days,
        }),
        (None, None) => None,
    };
    Ok(Matcher {
        from,
        to,
        units,
        functions,
        ranges,
        write_values,
        read_values,
        rate,
        hours,
    })
}

fn function<T>(
    src: &Source<'_>,
    list: &Spanned<T>,
    item: &FunctionItem,
    set: &mut FunctionSet,
    field: &str,
) -> Result<(), PolicyError> {
    let expected = "expected a function code 1-127, a name like \"read_holding_registers\", a class (read, write, diagnostics, identification, programming, file, other), or \"8/4\" / \"43/14\" for a sub-function";
    let bad = |what: String| src.at(list, field, format!("{what} ({expected})"));
    match item {
        FunctionItem::Code(code) => {
            let code = u8::try_from(*code)
                .ok()
                .filter(|c| FunctionCode::new(*c).is_ok())
                .ok_or_else(|| bad(format!("{code} is not a known function code")))?;
            set.add_code(code);
        }
        FunctionItem::Name(name) => {
            let name = name.trim();
            let class = match name {
                "read" => Some(FunctionClass::Read),
                "write" => Some(FunctionClass::Write),
                "diagnostics" => Some(FunctionClass::Diagnostics),
                "identification" => Some(FunctionClass::Identification),
                "programming" => Some(FunctionClass::Programming),
                "file" => Some(FunctionClass::File),
                "other" => Some(FunctionClass::Other),
                _ => None,
            };
            if let Some(class) = class {
                set.add_class(class);
            } else if let Some(f) = FunctionCode::from_name(name) {
                set.add_code(f.code());
            } else if let Some((code, sub)) = name.split_once('/') {
                let code: u8 = code
                    .trim()
                    .parse()
                    .ok()
                    .filter(|c| *c == 8 || *c == 43)
                    .ok_or_else(|| bad(format!("{name:?}: only 8 and 43 have sub-functions")))?;
                let sub: u16 = sub
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("{name:?}: the sub-function is not a number")))?;
                set.add_sub(code, sub);
            } else {
                return Err(bad(format!("{name:?} is not a function")));
            }
        }
    }
    Ok(())
}

fn range_set(
    src: &Source<'_>,
    list: &Spanned<OneOrMany<RangeItem>>,
    field: &str,
) -> Result<RangeSet, PolicyError> {
    range_list(src, list, list.get_ref(), field)
}

/// An address list given inside `at` (whose position refusals name).
fn range_list<T>(
    src: &Source<'_>,
    at: &Spanned<T>,
    items: &OneOrMany<RangeItem>,
    field: &str,
) -> Result<RangeSet, PolicyError> {
    let mut ranges = Vec::new();
    for item in items.iter() {
        let bad = |text: String| {
            src.at(
                at,
                field,
                format!("{text} is not an address range (expected an address 0-65535 or \"start-end\" with start <= end)"),
            )
        };
        let range = match item {
            RangeItem::Address(a) => {
                let a = u16::try_from(*a).map_err(|_| bad(a.to_string()))?;
                (a, a)
            }
            RangeItem::Range(text) => {
                let parse = |s: &str| s.trim().parse::<u16>().ok();
                let parsed = match text.split_once('-') {
                    Some((s, e)) => parse(s).zip(parse(e)),
                    None => parse(text).map(|a| (a, a)),
                };
                parsed
                    .filter(|(s, e)| s <= e)
                    .ok_or_else(|| bad(format!("{text:?}")))?
            }
        };
        ranges.push(range);
    }
    Ok(RangeSet::from_ranges(ranges))
}

fn bounds(src: &Source<'_>, b: &Spanned<BoundsSyntax>, field: &str) -> Result<Bounds, PolicyError> {
    let v = b.get_ref();
    min_max(src, b, field, (v.min, v.max))
}

/// Bounds from `min` and `max` (each 0-65535, defaulting to the widest), refused at `at`.
fn min_max<T>(
    src: &Source<'_>,
    at: &Spanned<T>,
    field: &str,
    (min, max): (Option<i64>, Option<i64>),
) -> Result<Bounds, PolicyError> {
    let check = |x: Option<i64>, default: u16| -> Result<u16, PolicyError> {
        match x {
            None => Ok(default),
            Some(x) => u16::try_from(x).map_err(|_| {
                src.at(
                    at,
                    field,
                    format!("{x} is outside 0-65535 (expected a 16-bit register value)"),
                )
            }),
        }
    };
    let bounds = Bounds {
        min: check(min, 0)?,
        max: check(max, u16::MAX)?,
    };
    if bounds.min > bounds.max {
        return Err(src.at(
            at,
            field,
            format!(
                "min {} is above max {} (expected min <= max)",
                bounds.min, bounds.max
            ),
        ));
    }
    Ok(bounds)
}

/// `read_values`: one `{ min, max }`, with or without a register range, or a list of them
/// (at most one table named per entry; an entry naming none bounds the registers no other
/// entry names).
fn read_bounds(
    src: &Source<'_>,
    b: &Spanned<toml::Value>,
    field: &str,
) -> Result<ReadBounds, PolicyError> {
    let entry = |value: &toml::Value, field: &str| {
        value.clone().try_into::<RangeBoundsSyntax>().map_err(|e| {
            src.at(
                b,
                field,
                format!(
                    "{} (expected {{ min = .., max = .. }}, with holding_registers or input_registers for a range)",
                    e.message().trim()
                ),
            )
        })
    };
    let entries = match b.get_ref() {
        toml::Value::Table(_) => vec![entry(b.get_ref(), field)?],
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| entry(item, &format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(src.at(
                b,
                field,
                format!(
                    "a {} (expected {{ min = .., max = .. }} or a list of them per register range)",
                    other.type_str()
                ),
            ));
        }
    };
    let listed = matches!(b.get_ref(), toml::Value::Array(_));
    let mut ranges = Vec::new();
    let mut rest = None;
    for (i, entry) in entries.iter().enumerate() {
        let field = if listed {
            format!("{field}[{i}]")
        } else {
            field.to_string()
        };
        let bounds = min_max(src, b, &field, (entry.min, entry.max))?;
        let table = match (&entry.holding_registers, &entry.input_registers) {
            (Some(list), None) => Some((Table::HoldingRegisters, list, "holding_registers")),
            (None, Some(list)) => Some((Table::InputRegisters, list, "input_registers")),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(src.at(
                    b,
                    &field,
                    "names both holding_registers and input_registers (expected one table per entry)".into(),
                ));
            }
        };
        match table {
            Some((table, list, name)) => {
                let set = range_list(src, b, list, &format!("{field}.{name}"))?;
                ranges.push((table, set, bounds));
            }
            None if rest.is_some() => {
                return Err(src.at(
                    b,
                    &field,
                    "a second entry without a register range (expected holding_registers or input_registers, or one entry for the rest)".into(),
                ));
            }
            None => rest = Some(bounds),
        }
    }
    Ok(ReadBounds::new(ranges, rest))
}

fn units(
    src: &Source<'_>,
    list: &[Spanned<u16>],
    field: &str,
) -> Result<Option<UnitSet>, PolicyError> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut set = UnitSet::NONE;
    for u in list {
        let unit = u8::try_from(*u.get_ref()).map_err(|_| {
            src.at(
                u,
                field,
                format!("{} is not a unit id (expected 0-255)", u.get_ref()),
            )
        })?;
        set.insert(unit);
    }
    Ok(Some(set))
}

fn duration(
    src: &Source<'_>,
    text: &Spanned<String>,
    field: &str,
) -> Result<std::time::Duration, PolicyError> {
    parse_duration(text.get_ref())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            src.at(
                text,
                field,
                format!(
                    "{:?} is not a duration (expected like \"60s\", \"5m\" or \"1h\")",
                    text.get_ref()
                ),
            )
        })
}

fn severity(src: &Source<'_>, s: &Spanned<String>, field: &str) -> Result<Severity, PolicyError> {
    Severity::from_name(s.get_ref()).ok_or_else(|| {
        src.at(
            s,
            field,
            format!(
                "{:?} is not a severity (expected info, low, medium, high or critical)",
                s.get_ref()
            ),
        )
    })
}

fn threshold(
    src: &Source<'_>,
    t: Option<&Spanned<u32>>,
    field: &str,
) -> Result<Option<u32>, PolicyError> {
    match t {
        Some(t) if *t.get_ref() == 0 => {
            Err(src.at(t, field, "0 is not a threshold (expected 1 or more)".into()))
        }
        Some(t) => Ok(Some(*t.get_ref())),
        None => Ok(None),
    }
}

fn tune(
    src: &Source<'_>,
    resolver: &Resolver<'_>,
    t: &TuningSyntax,
    field: &str,
) -> Result<Tuning, PolicyError> {
    let suppress = match &t.suppress {
        Some(list) => {
            let items: Vec<String> = list.get_ref().iter().cloned().collect();
            let (hosts, _) = resolver
                .hosts(&items)
                .map_err(|message| src.at(list, &format!("{field}.suppress"), message))?;
            Some(hosts)
        }
        None => None,
    };
    Ok(Tuning {
        enabled: t.enabled,
        severity: t
            .severity
            .as_ref()
            .map(|s| severity(src, s, &format!("{field}.severity")))
            .transpose()?,
        window: t
            .window
            .as_ref()
            .map(|w| duration(src, w, &format!("{field}.window")))
            .transpose()?,
        threshold: threshold(src, t.threshold.as_ref(), &format!("{field}.threshold"))?,
        suppress,
    })
}

fn net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

pub(super) fn parse_offset(text: &str) -> Option<i32> {
    let text = text.trim();
    if text == "Z" || text == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match text.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let digits = |t: &str, most: usize| {
        (1..=most).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
    };
    if !(digits(h, 2) && m.len() == 2 && digits(m, 2)) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=14).contains(&h) && (0..60).contains(&m)).then(|| sign * (h * 60 + m))
}

impl<T> OneOrMany<T> {
    fn iter(&self) -> std::slice::Iter<'_, T> {
        match self {
            Self::One(x) => std::slice::from_ref(x).iter(),
            Self::Many(v) => v.iter(),
        }
    }
}
