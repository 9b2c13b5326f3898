//! The plant's policy: assets, what each master may do to each target (an allowlist), explicit
//! alert rules, and tuning of the built-in detectors. Written in TOML (see the README and
//! `deploy/policies/`), validated once into types that cannot be malformed, then evaluated
//! against every request.

mod allow_this;
mod compile;
mod eval;
mod lint;
pub mod matcher;
mod merge;
mod syntax;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::alert::Severity;

pub use allow_this::{AllowChange, NotAllowable, allow_this};
pub use compile::MAX_MACS;
pub use eval::{Candidates, Violation, ViolationKind};
pub use lint::Warning;
use matcher::{AddrSet, Bounds, FunctionSet, RangeSet, Rate, ReadBounds, TimeWindow, UnitSet};
pub use merge::{LearnedError, check_learned, merge_learned};

/// The newest policy-language version this build reads (it reads every version from 1 up),
/// which agents report in their heartbeats so the collector never assigns one a policy it
/// cannot read. 2: assets may declare `macs`, `connection_rate`, `request_rate` and
/// `role = "router"` (network-level detection).
pub const POLICY_VERSION: u32 = 2;

/// Whether an agent that reads policy-language versions up to `agent_reads` can read a policy
/// written in `policy_version` (agents read every version up to their own).
pub fn readable_by(policy_version: u32, agent_reads: u32) -> bool {
    policy_version <= agent_reads
}

/// What an asset is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Polls and commands (SCADA, HMI).
    Master,
    /// Is polled and commanded (PLC, RTU, gateway).
    Slave,
    /// Programs and configures devices.
    Engineering,
    /// Routes between networks: every routed host's traffic carries its Ethernet address
    /// (policy language 2).
    Router,
}

/// How much an asset matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Loss is an inconvenience.
    Low,
    /// Loss degrades production.
    Medium,
    /// Loss stops production.
    High,
    /// Loss endangers people or equipment.
    Critical,
}

impl Criticality {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// A named host or network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Its name in the policy.
    pub name: String,
    /// Where it is.
    pub addresses: AddrSet,
    /// Unit ids it answers for (all when empty in the file).
    pub units: UnitSet,
    /// What it does.
    pub role: Option<Role>,
    /// Its zone.
    pub zone: Option<String>,
    /// How much it matters.
    pub criticality: Option<Criticality>,
    /// The Ethernet addresses it answers from (policy language 2; empty: not declared).
    pub macs: Vec<crate::mac::Mac>,
    /// The connections it normally takes per period, learned (policy language 2): connection
    /// floods are judged against it.
    pub connection_rate: Option<Rate>,
    /// The requests it normally answers per period, learned (policy language 2): request
    /// floods are judged against it.
    pub request_rate: Option<Rate>,
    /// Line of its `[[asset]]` in the policy file.
    pub line: usize,
}

/// Which traffic a rule covers.
///
/// Laid out in declaration order, what every request is checked against first (units,
/// functions, rate, value bounds, hours, ranges), so that check reads two or three neighbouring
/// cache lines; the addresses, used once per master/target pair, come last.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct Matcher {
    /// Units at the targets.
    pub units: UnitSet,
    /// Functions.
    pub functions: FunctionSet,
    /// Rate limit per master and target.
    pub rate: Option<Rate>,
    /// Bounds on values written.
    pub write_values: Option<Bounds>,
    /// When the rule applies.
    pub hours: Option<TimeWindow>,
    /// Address ranges per table (coils, discrete inputs, holding registers, input registers);
    /// `None` for all tables means any address.
    pub ranges: Option<[Option<RangeSet>; 4]>,
    /// Bounds on values read back (process-variable limits), per register range.
    pub read_values: Option<Box<ReadBounds>>,
    /// Masters.
    pub from: AddrSet,
    /// Targets.
    pub to: AddrSet,
}

/// An `[[allow]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// Its name, or `allow[i]`.
    pub name: String,
    /// Line in the policy file.
    pub line: usize,
    /// The traffic allowed.
    pub matcher: Matcher,
}

/// An `[[alert]]` rule: traffic that raises an alert even when allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// Its name, used as the alert's rule id (`policy.alert.<name>`).
    pub name: String,
    /// Line in the policy file.
    pub line: usize,
    /// The traffic that raises it.
    pub matcher: Matcher,
    /// Severity of the alert.
    pub severity: Severity,
    /// ATT&CK for ICS techniques.
    pub technique: Vec<String>,
    /// Message carried in the alert.
    pub message: Option<String>,
    /// Fold window.
    pub window: Option<Duration>,
    /// Matches needed within the window before the alert is raised.
    pub threshold: u32,
}

impl AlertRule {
    /// The rule id the alerts of a rule named `name` carry.
    pub fn rule_id_of(name: &str) -> String {
        format!("policy.alert.{name}")
    }
}

/// Tuning of one built-in detector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuning {
    /// `false` turns the detector off.
    pub enabled: Option<bool>,
    /// Severity instead of the default.
    pub severity: Option<Severity>,
    /// Fold (and threshold) window instead of the default.
    pub window: Option<Duration>,
    /// Occurrences (or distinct items) needed to alert, instead of the default.
    pub threshold: Option<u32>,
    /// Sources this detector never alerts on.
    pub suppress: Option<AddrSet>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy-language version it is written in (`version = N`).
    pub version: u32,
    /// The policy's name.
    pub name: Option<String>,
    /// A hash of the file's text, reported in heartbeats to tell versions apart.
    pub hash: String,
    /// Plant time offset from UTC, in minutes.
    pub utc_offset_minutes: i32,
    /// Default fold window.
    pub default_window: Option<Duration>,
    /// Assets in file order.
    pub assets: Vec<Asset>,
    /// Groups: name to asset names.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Allow rules in file order.
    pub allow: Vec<AllowRule>,
    /// Alert rules in file order.
    pub alerts: Vec<AlertRule>,
    /// Detector tuning by rule id.
    pub tuning: BTreeMap<String, Tuning>,
    /// Whether any allow rule bounds the values read back (responses then need checking).
    pub checks_reads: bool,
}

/// Why a policy was rejected: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {field}: {message}")]
pub struct PolicyError {
    /// The file name (or a label) the text came from.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field at fault (`allow[2].from`), or `toml` for syntax errors.
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl Policy {
    /// Parses and validates a policy, returning it with its warnings.
    pub fn parse(text: &str, source_name: &str) -> Result<(Self, Vec<Warning>), PolicyError> {
        let policy = compile::compile(text, source_name)?;
        let warnings = lint::lint(&policy);
        Ok((policy, warnings))
    }

    /// The asset whose addresses contain `addr`, if any (the first in file order).
    pub fn asset_of(&self, addr: std::net::IpAddr) -> Option<&Asset> {
        self.assets.iter().find(|a| a.addresses.contains(addr))
    }

    /// Tuning for a built-in rule.
    pub fn tuning(&self, rule: &str) -> Option<&Tuning> {
        self.tuning.get(rule)
    }
}

#[cfg(test)]
mod tests;
