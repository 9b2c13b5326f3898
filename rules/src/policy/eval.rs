//! Evaluating requests and responses against the policy.
//!
//! A request is allowed when one allow rule covers all of it: master, target, unit, function,
//! address ranges, written values, time window and rate. When none does, the closest rule (the
//! one that matched the most, in that order) says what the violation is, so the alert names the
//! real problem: an unknown master, a function never allowed, a write outside the configured
//! ranges, a setpoint out of bounds, a command at the wrong hour, a rate exceeded.

use std::net::IpAddr;

use smallvec::SmallVec;

use super::matcher::Rate;
use super::{Matcher, Policy};
use crate::modbus::{FunctionClass, Request, Response, Table};
use crate::time::Timestamp;

/// The rules that can apply between one master and one target, computed once per pair. A pair
/// usually has one or two, held inline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Whether any allow rule names this master at all.
    pub master_known: bool,
    /// Allow rules whose `from` and `to` match, in file order.
    pub allow: SmallVec<[usize; 2]>,
    /// Alert rules whose `from` and `to` match, in file order.
    pub alerts: SmallVec<[usize; 1]>,
    /// Whether any candidate allow rule bounds the values read back.
    pub checks_reads: bool,
    /// Whether no candidate allow rule has a time window: then which rule allows a request
    /// depends on the request alone (its rate aside).
    pub timeless: bool,
}

/// What kind of violation a request or response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// No allow rule names the master.
    UnknownMaster,
    /// A read no rule allows.
    UnauthorizedRead,
    /// A write no rule allows.
    UnauthorizedWrite,
    /// Another function no rule allows.
    UnauthorizedFunction,
    /// A write to addresses outside every allowed range.
    WriteOutsideRanges,
    /// A written value outside the allowed bounds.
    SetpointOutOfBounds,
    /// A value read back outside the process limits.
    ProcessValueOutOfBounds,
    /// More requests than the rule's rate allows.
    RateExceeded,
    /// Outside the rule's time window.
    OutsideHours,
}

/// A violation with the rule that came closest to allowing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What kind.
    pub kind: ViolationKind,
    /// The closest allow rule, if any.
    pub closest: Option<String>,
    /// What exactly was wrong.
    pub detail: String,
}

/// How far a rule got in matching a request; higher is closer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    Unit,
    Function,
    Range,
    Values,
    Hours,
}

impl Policy {
    /// The rules that can apply between `client` and `server`.
    pub fn candidates(&self, client: IpAddr, server: IpAddr) -> Candidates {
        let allow: SmallVec<[usize; 2]> = self
            .allow
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matcher.from.contains(client) && r.matcher.to.contains(server))
            .map(|(i, _)| i)
            .collect();
        Candidates {
            master_known: self.allow.iter().any(|r| r.matcher.from.contains(client)),
            checks_reads: allow
                .iter()
                .filter_map(|&i| self.allow.get(i))
                .any(|r| r.matcher.read_values.is_some()),
            timeless: allow
                .iter()
                .filter_map(|&i| self.allow.get(i))
                .all(|r| r.matcher.hours.is_none()),
            allow,
            alerts: self
                .alerts
                .iter()
                .enumerate()
                .filter(|(_, r)| r.matcher.from.contains(client) && r.matcher.to.contains(server))
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// Checks a request: the index of the allow rule that allows it, or the violation.
    /// `take_token(rule, rate)` consumes one unit of that allow rule's rate and returns false
    /// when the rate is exceeded; it is called only for the rule that allows the request, and
    /// only when that rule has a rate.
    pub fn allowing_rule(
        &self,
        candidates: &Candidates,
        ts: Timestamp,
        unit: u8,
        request: &Request<'_>,
        mut take_token: impl FnMut(usize, Rate) -> bool,
    ) -> Result<usize, Violation> {
        if !candidates.master_known {
            return Err(Violation {
                kind: ViolationKind::UnknownMaster,
                closest: None,
                detail: "no allow rule names this master".into(),
            });
        }
        // The rule that got furthest; its message is written only if a violation is reported.
        let mut best: Option<(Reach, usize)> = None;
        for &i in &candidates.allow {
            let Some(rule) = self.allow.get(i) else {
                continue;
            };
            match self.reach(&rule.matcher, ts, unit, request) {
                Ok(()) => {
                    if rule.matcher.rate.is_none_or(|rate| take_token(i, rate)) {
                        return Ok(i);
                    }
                    return Err(Violation {
                        kind: ViolationKind::RateExceeded,
                        closest: Some(rule.name.clone()),
                        detail: format!("faster than the rate of rule {:?}", rule.name),
                    });
                }
                Err(reach) => {
                    if best.is_none_or(|(b, _)| reach > b) {
                        best = Some((reach, i));
                    }
                }
            }
        }
        let detail = |i: usize| {
            self.allow
                .get(i)
                .map(|r| self.reach_detail(&r.matcher, ts, unit, request))
                .unwrap_or_default()
        };
        let write = request.class() == FunctionClass::Write;
        let (kind, closest, detail) = match best {
            Some((Reach::Range, i)) if write => {
                (ViolationKind::WriteOutsideRanges, Some(i), detail(i))
            }
            Some((Reach::Values, i)) => (ViolationKind::SetpointOutOfBounds, Some(i), detail(i)),
            Some((Reach::Hours, i)) => (ViolationKind::OutsideHours, Some(i), detail(i)),
            other => {
                let kind = match request.class() {
                    FunctionClass::Read => ViolationKind::UnauthorizedRead,
                    FunctionClass::Write => ViolationKind::UnauthorizedWrite,
                    _ => ViolationKind::UnauthorizedFunction,
                };
                let detail = match other {
                    Some((_, i)) => detail(i),
                    None => "no allow rule covers this master and target".into(),
                };
                (kind, other.map(|(_, i)| i), detail)
            }
        };
        Err(Violation {
            kind,
            closest: closest
                .and_then(|i| self.allow.get(i))
                .map(|r| r.name.clone()),
            detail,
        })
    }

    /// Checks the values of a read response against the process limits of the rule that
    /// allows its request: each register against its own range's bound. Returns the first
    /// value outside, with its register's address (none for a FIFO queue's values).
    pub fn check_read_values(
        &self,
        candidates: &Candidates,
        ts: Timestamp,
        unit: u8,
        request: &Request<'_>,
        response: &Response<'_>,
    ) -> Option<(Violation, Option<u16>, u16)> {
        if !candidates.checks_reads {
            return None;
        }
        let values = match response {
            Response::ReadRegisters { values, .. } | Response::ReadFifoQueue { values } => values,
            _ => return None,
        };
        let rule = candidates
            .allow
            .iter()
            .filter_map(|&i| self.allow.get(i))
            .find(|r| self.reach(&r.matcher, ts, unit, request).is_ok())?;
        let limits = rule.matcher.read_values.as_deref()?;
        let (start, quantity) = match (response, request.read_range()) {
            (Response::ReadRegisters { .. }, Some((t, a, q))) => (Some((t, a)), usize::from(q)),
            _ => (None, usize::MAX),
        };
        // Values past the quantity asked (a response padded to a whole byte count) belong to
        // no register read.
        let (register, value, bounds) =
            values
                .iter()
                .take(quantity)
                .enumerate()
                .find_map(|(i, value)| {
                    let register = start.map(|(t, a)| (t, a.wrapping_add(i as u16)));
                    let bounds = limits.of(register)?;
                    (!bounds.contains(value)).then_some((register, value, bounds))
                })?;
        let at = match register {
            Some((table, address)) => format!(" at {} {address}", table.name()),
            None => String::new(),
        };
        Some((
            Violation {
                kind: ViolationKind::ProcessValueOutOfBounds,
                closest: Some(rule.name.clone()),
                detail: format!(
                    "value {value}{at} read back outside {}..={} (rule {:?})",
                    bounds.min, bounds.max, rule.name
                ),
            },
            register.map(|(_, a)| a),
            value,
        ))
    }

    /// Whether an alert rule matches a request.
    pub fn alert_matches(
        &self,
        rule: usize,
        ts: Timestamp,
        unit: u8,
        request: &Request<'_>,
    ) -> bool {
        self.alerts
            .get(rule)
            .is_some_and(|r| self.reach(&r.matcher, ts, unit, request).is_ok())
    }

    /// Matches everything but master, target and rate; on failure, how far it got. Runs for
    /// every candidate rule of every request, so it allocates nothing; [`Self::reach_detail`]
    /// says why, for the one rule a violation names.
    fn reach(
        &self,
        m: &Matcher,
        ts: Timestamp,
        unit: u8,
        request: &Request<'_>,
    ) -> Result<(), Reach> {
        if !m.units.contains(unit) {
            return Err(Reach::Unit);
        }
        if !m.functions.allows(request) {
            return Err(Reach::Function);
        }
        if uncovered(m, request).is_some() {
            return Err(Reach::Range);
        }
        if let Some(bounds) = m.write_values
            && first_outside(request, bounds).is_some()
        {
            return Err(Reach::Values);
        }
        if let Some(hours) = &m.hours
            && !hours.contains(ts, self.utc_offset_minutes)
        {
            return Err(Reach::Hours);
        }
        Ok(())
    }

    /// Why `m` does not match the request (the step [`Self::reach`] stopped at), for messages.
    fn reach_detail(&self, m: &Matcher, ts: Timestamp, unit: u8, request: &Request<'_>) -> String {
        match self.reach(m, ts, unit, request) {
            Ok(()) => String::new(),
            Err(Reach::Unit) => format!("unit {unit} not allowed"),
            Err(Reach::Function) => format!("function {} not allowed", request.function()),
            Err(Reach::Range) => match uncovered(m, request) {
                Some((table, address, quantity)) => {
                    let last = u32::from(address) + u32::from(quantity).saturating_sub(1);
                    format!(
                        "{} {address}-{last} outside the allowed ranges",
                        table.name()
                    )
                }
                None => String::new(),
            },
            Err(Reach::Values) => match m.write_values {
                Some(bounds) => format!(
                    "value {} outside {}..={}",
                    first_outside(request, bounds).unwrap_or_default(),
                    bounds.min,
                    bounds.max
                ),
                None => String::new(),
            },
            Err(Reach::Hours) => "outside the allowed time window".into(),
        }
    }
}

/// The first span the request reads or writes that `m`'s ranges do not cover.
fn uncovered(m: &Matcher, request: &Request<'_>) -> Option<(Table, u16, u16)> {
    let ranges = m.ranges.as_ref()?;
    let covered = |&(table, address, quantity): &(Table, u16, u16)| {
        ranges
            .get(table_index(table))
            .and_then(Option::as_ref)
            .is_some_and(|r| r.covers_span(address, quantity))
    };
    if let Some(span) = request.read_range()
        && !covered(&span)
    {
        return Some(span);
    }
    request.write_range().filter(|span| !covered(span))
}

/// The first register value a request writes outside `bounds` (coil writes are on/off and not
/// bounded).
fn first_outside(request: &Request<'_>, bounds: super::matcher::Bounds) -> Option<u16> {
    match *request {
        Request::WriteSingleRegister { value, .. } => (!bounds.contains(value)).then_some(value),
        Request::WriteMultipleRegisters { values, .. }
        | Request::ReadWriteMultipleRegisters { values, .. } => {
            values.iter().find(|v| !bounds.contains(*v))
        }
        _ => None,
    }
}

fn table_index(table: Table) -> usize {
    match table {
        Table::Coils => 0,
        Table::DiscreteInputs => 1,
        Table::HoldingRegisters => 2,
        Table::InputRegisters => 3,
    }
}
