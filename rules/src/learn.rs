//! Learning mode: from normal traffic to a reviewable allowlist policy.
//!
//! Per (master, target, unit) the learner records the functions used (sub-functions for
//! diagnostics and MEI), the address ranges touched per table, the range of register values
//! written and the peak request rate. The policy it writes allows exactly that, with some room:
//! read ranges separated by small holes are merged, write bounds are rounded outward to two
//! significant digits of their span, and the rate limit is three times the busiest second seen.
//! Register values read back become process limits per register (`read_values`), rounded
//! the same way, except for registers that only grow (counters, clocks) or were read too
//! rarely to show their range.
//! Every rule carries a comment saying how many transactions backed it. Targets that behaved
//! alike (the same masters, units, read functions and read ranges) are written as one group with
//! one rule per (master, unit), a write seen on some members allowed on all and flagged for
//! review; `to_policy_per_device` writes one rule per (master, target, unit) instead.

mod busiest;
mod link;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::flow::{FlowEvent, FlowInfo, Protocol};
use crate::mac::Mac;
use crate::modbus::{Request, Response, Table};
use crate::network::ArpFrame;
use crate::policy::matcher::RangeSet;
use crate::session::Event;
use crate::time::Timestamp;
use crate::transaction::{Outcome, Transaction};

/// Holes of at most this many addresses between read ranges are allowed too: a master that
/// polls 0-9 and 12-20 will not be flagged for reading 10.
const READ_GAP: u16 = 8;

/// Registers per pair whose values are learned; past this many, new registers go unbounded
/// (memory stays flat whatever a master reads).
const MAX_REGISTERS: usize = 4096;

/// Reads of a register needed before its values become a bound: a register read a handful of
/// times has not shown its range.
const MIN_READS: u64 = 20;

/// The values one register was read back with, and how they moved.
#[derive(Debug, Clone, Copy, Default)]
struct Envelope {
    min: u16,
    max: u16,
    last: Option<u16>,
    reads: u64,
    rises: u64,
    /// Decreases, not counting wrap-arounds (a drop of more than half the 16-bit range).
    falls: u64,
}

impl Envelope {
    fn add(&mut self, value: u16) {
        match self.last {
            None => (self.min, self.max) = (value, value),
            Some(last) => {
                self.min = self.min.min(value);
                self.max = self.max.max(value);
                if value > last {
                    self.rises += 1;
                } else if value < last && last - value <= u16::MAX / 2 {
                    self.falls += 1;
                }
            }
        }
        self.last = Some(value);
        self.reads += 1;
    }

    /// A counter, a clock or a totaliser: it went up (wrapping round, or reset now and then:
    /// at most one fall for ten rises), so whatever range it showed, it will leave.
    fn only_grows(&self) -> bool {
        self.rises >= 3 && self.falls.saturating_mul(10) <= self.rises
    }

    fn merge(&mut self, other: &Envelope) {
        if other.reads == 0 {
            return;
        }
        if self.reads == 0 {
            *self = *other;
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.reads += other.reads;
        self.rises += other.rises;
        self.falls += other.falls;
    }
}

#[derive(Debug, Default)]
struct PairStats {
    requests: u64,
    first: Option<Timestamp>,
    last: Timestamp,
    functions: BTreeSet<u8>,
    subs: BTreeSet<(u8, u16)>,
    reads: [Vec<(u16, u16)>; 4],
    writes: [Vec<(u16, u16)>; 4],
    written: Option<(u16, u16)>,
    /// Values read back per (table index, register).
    read_values: BTreeMap<(usize, u16), Envelope>,
    /// Requests per second, for the rate.
    per_second: busiest::BusiestSecond,
}

/// Accumulates what normal traffic does.
#[derive(Debug, Default)]
pub struct Learner {
    pairs: BTreeMap<(IpAddr, IpAddr, u8), PairStats>,
    link: link::Link,
}

impl Learner {
    /// A learner that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in what another learner saw (another capture worker's share of the same
    /// traffic): one learner, as if it had seen both.
    pub fn merge(&mut self, other: Learner) {
        self.link.merge(other.link);
        for (key, theirs) in other.pairs {
            match self.pairs.get_mut(&key) {
                None => {
                    self.pairs.insert(key, theirs);
                }
                Some(ours) => ours.merge(&theirs),
            }
        }
    }

    /// Requests seen in all.
    pub fn requests(&self) -> u64 {
        self.pairs.values().map(|p| p.requests).sum()
    }

    /// Learns from one flow event: decoded requests, and the register values answered reads
    /// brought back.
    pub fn observe(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        let (unit_id, request) = match event {
            FlowEvent::Session(Event::Request {
                unit_id, request, ..
            }) => (unit_id, request),
            FlowEvent::Session(Event::Transaction(t)) => return self.read_back(flow, t),
            FlowEvent::Opened if flow.protocol == Protocol::Tcp && flow.handshake_seen => {
                return self.link.connection(ts, flow.client.ip(), flow.server.ip());
            }
            _ => return,
        };
        let key = (flow.client.ip(), flow.server.ip(), *unit_id);
        let stats = self.pairs.entry(key).or_default();
        stats.requests += 1;
        stats.first.get_or_insert(ts);
        stats.last = stats.last.max(ts);
        stats.per_second.add(ts);
        match request {
            Request::Diagnostics { sub_function, .. } => {
                stats.subs.insert((8, sub_function.code()));
            }
            Request::ReadDeviceId(_) => {
                stats.subs.insert((43, 14));
            }
            Request::CanOpen { .. } => {
                stats.subs.insert((43, 13));
            }
            other => {
                stats.functions.insert(other.function().code());
            }
        }
        if let Some((table, address, quantity)) = request.read_range() {
            stats.reads[table_index(table)].push(span(address, quantity));
        }
        if let Some((table, address, quantity)) = request.write_range() {
            stats.writes[table_index(table)].push(span(address, quantity));
        }
        let values: Vec<u16> = match *request {
            Request::WriteSingleRegister { value, .. } => vec![value],
            Request::WriteMultipleRegisters { values, .. }
            | Request::ReadWriteMultipleRegisters { values, .. } => values.iter().collect(),
            _ => Vec::new(),
        };
        for v in values {
            stats.written = Some(match stats.written {
                Some((lo, hi)) => (lo.min(v), hi.max(v)),
                None => (v, v),
            });
        }
        // Keep memory flat on long captures: merge spans as they pile up.
        for list in stats.reads.iter_mut().chain(stats.writes.iter_mut()) {
            if list.len() > 4096 {
                *list = RangeSet::from_ranges(std::mem::take(list))
                    .ranges()
                    .to_vec();
            }
        }
    }

    /// Learns from a frame of IP traffic from `ip` with Ethernet source `mac`: the Ethernet
    /// addresses each host answers from (written as its asset's `macs`).
    pub fn ip_source(&mut self, ip: IpAddr, mac: Mac) {
        self.link.ip_source(ip, mac);
    }

    /// Learns from an ARP packet: the address its sender claims.
    pub fn arp(&mut self, frame: &ArpFrame) {
        self.link.arp(frame);
    }

    /// Records the register values an answered read brought back.
    fn read_back(&mut self, flow: &FlowInfo, t: &Transaction<'_>) {
        let (Outcome::Answered, Some(request), Some(Response::ReadRegisters { values, .. })) =
            (t.outcome, &t.request, &t.response)
        else {
            return;
        };
        let Some((table, address, quantity)) = request.read_range() else {
            return;
        };
        let key = (flow.client.ip(), flow.server.ip(), t.unit_id);
        let Some(stats) = self.pairs.get_mut(&key) else {
            return;
        };
        for (i, value) in values.iter().take(usize::from(quantity)).enumerate() {
            let register = (table_index(table), address.wrapping_add(i as u16));
            let known = stats.read_values.len();
            match stats.read_values.get_mut(&register) {
                Some(envelope) => envelope.add(value),
                None if known < MAX_REGISTERS => {
                    let mut envelope = Envelope::default();
                    envelope.add(value);
                    stats.read_values.insert(register, envelope);
                }
                None => {}
            }
        }
    }

    /// Writes the learned policy as TOML, with `sources` named in its header comment. Targets
    /// that behave alike (the same masters, unit ids, functions and read ranges per table) are
    /// written as a `[groups]` entry with one rule per (master, group, unit); the rest get one
    /// rule per (master, target, unit).
    pub fn to_policy(&self, sources: &[String]) -> String {
        self.write_policy(sources, true)
    }

    /// The learned policy with one rule per (master, target, unit), no groups (`learn
    /// --per-device`).
    pub fn to_policy_per_device(&self, sources: &[String]) -> String {
        self.write_policy(sources, false)
    }

    fn write_policy(&self, sources: &[String], grouping: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# otwatch policy learned from normal traffic: {}",
            sources.join(", ")
        );
        let _ = writeln!(
            out,
            "# {} requests between {} master/target/unit combinations. Review it before enforcing:",
            self.requests(),
            self.pairs.len()
        );
        out.push_str("# each rule allows what was seen, with a little room (see the README).\n");
        let header = out.len();
        let mut language = 1;
        let masters: BTreeSet<IpAddr> = self.pairs.keys().map(|k| k.0).collect();
        let servers: BTreeMap<IpAddr, BTreeSet<u8>> =
            self.pairs.keys().fold(BTreeMap::new(), |mut m, k| {
                m.entry(k.1).or_insert_with(BTreeSet::new).insert(k.2);
                m
            });
        let hosts: BTreeSet<IpAddr> = masters.iter().chain(servers.keys()).copied().collect();
        for host in &hosts {
            let role = match (masters.contains(host), servers.contains_key(host)) {
                (true, false) => Some("master"),
                (false, true) => Some("slave"),
                _ => None,
            };
            let _ = writeln!(
                out,
                "\n[[asset]]\nname = \"{}\"\naddress = \"{host}\"",
                asset_name(*host)
            );
            if let Some(units) = servers.get(host).filter(|_| role == Some("slave")) {
                let _ = writeln!(out, "units = {}", list(units.iter()));
            }
            if let Some(role) = role {
                let _ = writeln!(out, "role = \"{role}\"");
            }
            language =
                language.max(self.write_network(&mut out, *host, servers.contains_key(host)));
        }
        language = language.max(self.write_routers(&mut out, &hosts));
        out.insert_str(
            header,
            &format!("version = {language}\nname = \"learned\"\n"),
        );
        let groups = if grouping { self.alike() } else { Vec::new() };
        if !groups.is_empty() {
            out.push_str(
                "\n# Targets that behaved alike: the same masters, unit ids, functions and read\n",
            );
            out.push_str(
                "# ranges. Each rule below allows the group what any member was seen doing.\n",
            );
            out.push_str("[groups]\n");
            for (i, members) in groups.iter().enumerate() {
                let names: Vec<String> = members
                    .iter()
                    .map(|m| format!("\"{}\"", asset_name(*m)))
                    .collect();
                let _ = writeln!(out, "{} = [{}]", group_name(i), names.join(", "));
            }
        }
        let grouped: BTreeSet<IpAddr> = groups.iter().flatten().copied().collect();
        for ((client, server, unit), s) in &self.pairs {
            if grouped.contains(server) {
                continue;
            }
            let _ = writeln!(
                out,
                "\n# {} requests from {} to {}",
                s.requests,
                s.first.unwrap_or_default(),
                s.last
            );
            write_rule(&mut out, *client, &asset_name(*server), *unit, s);
        }
        for (i, members) in groups.iter().enumerate() {
            self.write_group_rules(&mut out, &group_name(i), members);
        }
        out
    }

    /// Writes what the network-level detectors judge `host` by: the Ethernet addresses it
    /// answered from and, for a server, the busiest second's requests and the busiest
    /// minute's connections (every master together). Returns the policy language this needs
    /// (2 when anything was written, 1 otherwise).
    fn write_network(&self, out: &mut String, host: IpAddr, server: bool) -> u32 {
        let mut language = 1;
        let macs = self.link.macs_of(host);
        if !macs.is_empty() && macs.len() <= crate::policy::MAX_MACS {
            let macs: Vec<String> = macs.iter().map(|m| format!("\"{m}\"")).collect();
            let _ = writeln!(out, "macs = [{}]", macs.join(", "));
            language = 2;
        }
        if server {
            let requests: u64 = self
                .pairs
                .iter()
                .filter(|((_, s, _), _)| *s == host)
                .map(|(_, p)| u64::from(p.per_second.peak()))
                .sum();
            if requests > 0 {
                let _ = writeln!(out, "request_rate = \"{requests}/s\"");
                language = 2;
            }
            let connections = self.link.connections_to(host);
            if connections > 0 {
                let _ = writeln!(out, "connection_rate = \"{connections}/s\"");
                language = 2;
            }
        }
        language
    }

    /// Writes each router seen (an Ethernet address carrying many hosts' traffic) as an
    /// asset with `role = "router"`, under the address it claimed in ARP; one that claimed
    /// none, or one of the Modbus `hosts`, is only named in a comment. Returns the policy
    /// language this needs.
    fn write_routers(&self, out: &mut String, hosts: &BTreeSet<IpAddr>) -> u32 {
        let mut language = 1;
        for (mac, own, carried) in self.link.routers() {
            match own.map(IpAddr::V4).filter(|ip| !hosts.contains(ip)) {
                Some(ip) => {
                    let _ = writeln!(
                        out,
                        "\n# Carried the traffic of {carried} addresses: a router.\n[[asset]]\nname = \"router-{}\"\naddress = \"{ip}\"\nrole = \"router\"\nmacs = [\"{mac}\"]",
                        ip.to_string().replace(['.', ':'], "-")
                    );
                    language = 2;
                }
                None => {
                    let _ = writeln!(
                        out,
                        "\n# {mac} carried the traffic of {carried} addresses: a router? Declare it as an\n# asset with role = \"router\" and macs = [\"{mac}\"]."
                    );
                }
            }
        }
        language
    }

    /// Targets seen by the same masters on the same units doing the same reads, in groups of
    /// two or more (writes may differ: a write seen on one member is the reviewer's call).
    fn alike(&self) -> Vec<Vec<IpAddr>> {
        let mut by_shape: BTreeMap<Vec<Shape>, Vec<IpAddr>> = BTreeMap::new();
        let mut shapes: BTreeMap<IpAddr, Vec<Shape>> = BTreeMap::new();
        for ((client, server, unit), s) in &self.pairs {
            shapes
                .entry(*server)
                .or_default()
                .push(Shape::of(*client, *unit, s));
        }
        for (server, shape) in shapes {
            // Only reads make targets alike: two targets a master only writes to have
            // nothing in common to go by.
            if shape
                .iter()
                .all(|s| s.reads.is_empty() && s.subs.is_empty())
            {
                continue;
            }
            by_shape.entry(shape).or_default().push(server);
        }
        by_shape.into_values().filter(|m| m.len() > 1).collect()
    }

    /// One rule per (master, unit) for the group `name` of `members`: what any member was seen
    /// doing, with a comment saying which member saw what.
    fn write_group_rules(&self, out: &mut String, name: &str, members: &[IpAddr]) {
        let keys: BTreeSet<(IpAddr, u8)> = self
            .pairs
            .keys()
            .filter(|(_, server, _)| members.contains(server))
            .map(|(client, _, unit)| (*client, *unit))
            .collect();
        for (client, unit) in keys {
            let mut merged = PairStats::default();
            let _ = writeln!(
                out,
                "\n# {} -> group {name}, unit {unit}:",
                asset_name(client)
            );
            let mut writes: BTreeMap<u8, Vec<String>> = BTreeMap::new();
            let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut peaks = BTreeSet::new();
            for member in members {
                let Some(s) = self.pairs.get(&(client, *member, unit)) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "#   {}: {} requests from {} to {}, functions {}",
                    asset_name(*member),
                    s.requests,
                    s.first.unwrap_or_default(),
                    s.last,
                    list(s.functions.iter())
                );
                for f in s.functions.iter().filter(|f| WRITES.contains(f)) {
                    writes.entry(*f).or_default().push(asset_name(*member));
                }
                written
                    .entry(write_summary(s))
                    .or_default()
                    .push(asset_name(*member));
                peaks.insert(s.per_second.peak());
                merged.merge(s);
            }
            for (f, seen_on) in &writes {
                if seen_on.len() < members.len() {
                    let _ = writeln!(
                        out,
                        "#   function {f} (a write) was seen only on {}: allowed on the whole group, review it",
                        seen_on.join(", ")
                    );
                }
            }
            if written.len() > 1 {
                for (summary, seen_on) in &written {
                    let _ = writeln!(out, "#   writes on {}: {summary}", seen_on.join(", "));
                }
                out.push_str(
                    "#   the members' writes differ: all of them are allowed on the whole group, review them\n",
                );
            }
            if peaks.len() > 1 {
                out.push_str("#   rates differ: the limit is three times the busiest member's busiest second\n");
            }
            write_rule(out, client, name, unit, &merged);
        }
    }
}

/// A pair's writes in words: the ranges per table and the values written.
fn write_summary(s: &PairStats) -> String {
    let mut parts = Vec::new();
    for (i, table) in TABLES.iter().enumerate() {
        let ranges = RangeSet::from_ranges(s.writes[i].clone());
        if !ranges.is_empty() {
            parts.push(format!("{} {}", table.name(), ranges.list("")));
        }
    }
    if let Some((lo, hi)) = s.written {
        parts.push(format!("values {lo}-{hi}"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// The function codes that write.
const WRITES: [u8; 6] = [5, 6, 15, 16, 22, 23];

/// What makes two targets alike for one (master, unit): the reads, not the writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    master: IpAddr,
    unit: u8,
    reads: BTreeSet<u8>,
    subs: BTreeSet<(u8, u16)>,
    ranges: [Vec<(u16, u16)>; 4],
}

impl Shape {
    fn of(master: IpAddr, unit: u8, s: &PairStats) -> Self {
        Self {
            master,
            unit,
            reads: s
                .functions
                .iter()
                .filter(|f| !WRITES.contains(f))
                .copied()
                .collect(),
            subs: s.subs.clone(),
            ranges: std::array::from_fn(|i| {
                RangeSet::from_ranges(widen(&s.reads[i])).ranges().to_vec()
            }),
        }
    }
}

impl PairStats {
    /// Adds another pair's statistics (a group's member).
    fn merge(&mut self, other: &PairStats) {
        self.requests += other.requests;
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(other.last);
        self.functions.extend(&other.functions);
        self.subs.extend(&other.subs);
        for i in 0..4 {
            self.reads[i].extend_from_slice(&other.reads[i]);
            self.writes[i].extend_from_slice(&other.writes[i]);
        }
        self.written = match (self.written, other.written) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
        for (register, envelope) in &other.read_values {
            self.read_values
                .entry(*register)
                .or_default()
                .merge(envelope);
        }
        self.per_second.merge(&other.per_second);
    }
}

fn group_name(index: usize) -> String {
    format!("alike-{}", index + 1)
}

/// One `[[allow]]` rule from `client` to `to` (an asset or group name) for `unit`, allowing
/// what `s` saw.
fn write_rule(out: &mut String, client: IpAddr, to: &str, unit: u8, s: &PairStats) {
    let _ = writeln!(
        out,
        "[[allow]]\nname = \"{} -> {to} unit {unit}\"\nfrom = \"{}\"\nto = \"{to}\"\nunits = [{unit}]",
        asset_name(client),
        asset_name(client),
    );
    let functions: Vec<String> = s
        .functions
        .iter()
        .map(|c| match crate::modbus::FunctionCode::new(*c) {
            Ok(f) if !matches!(f.name(), "user_defined" | "reserved") => {
                format!("\"{}\"", f.name())
            }
            _ => c.to_string(),
        })
        .chain(s.subs.iter().map(|(c, sub)| format!("\"{c}/{sub}\"")))
        .collect();
    let _ = writeln!(out, "functions = [{}]", functions.join(", "));
    for (i, table) in TABLES.iter().enumerate() {
        let reads = RangeSet::from_ranges(widen(&s.reads[i]));
        let all =
            RangeSet::from_ranges(reads.ranges().iter().chain(&s.writes[i]).copied().collect());
        if !all.is_empty() {
            let _ = writeln!(out, "{} = [{}]", table.name(), all.list("\""));
        }
    }
    if let Some((lo, hi)) = s.written {
        let (lo, hi) = round_out(lo, hi);
        let _ = writeln!(out, "write_values = {{ min = {lo}, max = {hi} }}");
    }
    write_read_values(out, s);
    let rate = s.per_second.peak().saturating_mul(3).max(10);
    let _ = writeln!(out, "rate = \"{rate}/s\"");
}

/// The process envelope: per register read back often enough, the values seen widened by a
/// tenth of their span on each side (and by the values the master wrote, when it writes the
/// register: a setpoint read back), rounded outward like written values; neighbouring
/// registers with the same bounds share an entry. Registers that only grow (counters, clocks),
/// never changed, or were read too rarely are left unbounded, each with a comment.
fn write_read_values(out: &mut String, s: &PairStats) {
    let written: Vec<RangeSet> = (0..4)
        .map(|i| RangeSet::from_ranges(s.writes[i].clone()))
        .collect();
    let mut entries: Vec<(usize, u16, u16, (u16, u16))> = Vec::new();
    let mut left_out: Vec<String> = Vec::new();
    for (&(table, address), envelope) in &s.read_values {
        let name = TABLES.get(table).map_or("registers", |t| t.name());
        if envelope.only_grows() {
            left_out.push(format!(
                "# {name} {address} only grows (a counter or a clock): its values are not bounded"
            ));
            continue;
        }
        if envelope.min == envelope.max {
            left_out.push(format!(
                "# {name} {address} never changed while learning ({}): not bounded",
                envelope.min
            ));
            continue;
        }
        if envelope.reads < MIN_READS {
            left_out.push(format!(
                "# {name} {address} was read {} times, too few to learn its range: not bounded",
                envelope.reads
            ));
            continue;
        }
        // A tenth of the span on each side: the learning window seldom saw the extremes.
        let margin = ((envelope.max - envelope.min) / 10).max(1);
        let (mut lo, mut hi) = (
            envelope.min.saturating_sub(margin),
            envelope.max.saturating_add(margin),
        );
        if let Some((wlo, whi)) = s.written
            && written
                .get(table)
                .is_some_and(|w| w.covers_span(address, 1))
        {
            (lo, hi) = (lo.min(wlo), hi.max(whi));
        }
        let bounds = round_out(lo, hi);
        match entries.last_mut() {
            Some((t, _, end, b))
                if *t == table && end.checked_add(1) == Some(address) && *b == bounds =>
            {
                *end = address
            }
            _ => entries.push((table, address, address, bounds)),
        }
    }
    if !entries.is_empty() {
        out.push_str("read_values = [\n");
        for (table, start, end, (lo, hi)) in entries {
            let registers = if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            };
            let _ = writeln!(
                out,
                "  {{ {} = \"{registers}\", min = {lo}, max = {hi} }},",
                TABLES.get(table).map_or("holding_registers", |t| t.name())
            );
        }
        out.push_str("]\n");
    }
    for line in left_out {
        let _ = writeln!(out, "{line}");
    }
}

const TABLES: [Table; 4] = [
    Table::Coils,
    Table::DiscreteInputs,
    Table::HoldingRegisters,
    Table::InputRegisters,
];

fn table_index(table: Table) -> usize {
    TABLES.iter().position(|t| *t == table).unwrap_or(0)
}

fn span(address: u16, quantity: u16) -> (u16, u16) {
    (address, address.saturating_add(quantity.saturating_sub(1)))
}

/// Read spans with the small holes between them closed.
fn widen(spans: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let merged = RangeSet::from_ranges(spans.to_vec());
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &(s, e) in merged.ranges() {
        match out.last_mut() {
            Some(last) if s.saturating_sub(last.1) <= READ_GAP + 1 => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// Rounds `[lo, hi]` outward to two significant digits of its span, so a value a little
/// beyond what the learning capture happened to see is still allowed.
fn round_out(lo: u16, hi: u16) -> (u16, u16) {
    let span = u32::from(hi - lo).max(1);
    let digits = span.ilog10();
    let unit = 10u32.pow(digits.saturating_sub(1));
    let lo = u32::from(lo) / unit * unit;
    let hi = (u32::from(hi).div_ceil(unit) * unit).min(u32::from(u16::MAX));
    (lo as u16, hi as u16)
}

fn asset_name(addr: IpAddr) -> String {
    let text = addr.to_string().replace(['.', ':'], "-");
    format!("host-{text}")
}

fn list<'a>(items: impl Iterator<Item = &'a u8>) -> String {
    let items: Vec<String> = items.map(u8::to_string).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests;
