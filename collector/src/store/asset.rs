//! One host as every agent reported it: the merged view, who reported what, and where agents
//! disagree.
//!
//! An agent's report never overwrites another agent's: each agent's labels (the policy's name,
//! zone and criticality, the device identification) are kept apart, the first agent to name a
//! value keeps it in the merged view, and a different value from another agent shows up as a
//! conflict. Lists an agent can grow (MACs, unit ids, function codes, peers, reporting agents)
//! are capped; what did not fit is counted, never stored.
use std::collections::BTreeMap;

use otwatch_rules::time::Timestamp;
use otwatch_rules::validate::{MAX_CODES, MAX_MACS, MAX_PEERS};
use otwatch_rules::wire::AssetObservation;
use serde::{Deserialize, Serialize};

/// Most agents whose reports one asset keeps (a plant has far fewer per host).
pub const MAX_REPORTERS: usize = 64;

/// The name under which labels stored before reports were kept per agent appear: not a valid
/// agent name, so it can never be mistaken for one.
pub const EARLIER_RELEASE: &str = "(before per-agent reports)";

/// An asset as merged from every agent's observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRecord {
    /// The merged view: lists united (capped), each label as first reported.
    #[serde(flatten)]
    pub asset: AssetObservation,
    /// Each reporting agent's own labels, in the order they first reported the host.
    #[serde(default)]
    pub reported_by: Vec<Report>,
    /// Labels agents disagree on, by field: every agent's value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conflicts: BTreeMap<String, Vec<Claim>>,
    /// What did not fit under the caps.
    #[serde(default, skip_serializing_if = "Dropped::is_empty")]
    pub dropped: Dropped,
}

/// What one agent reported of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The agent.
    pub agent: String,
    /// When it first saw the host.
    pub first_seen: Timestamp,
    /// When it last saw the host.
    pub last_seen: Timestamp,
    /// Its labels, the latest it sent for each.
    #[serde(flatten)]
    pub labels: Labels,
}

/// The labels of a host an agent's policy or the device itself gives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The policy's name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The policy's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The policy's criticality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<String>,
    /// Device identification: vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Device identification: product code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Device identification: revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Device identification: product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
}

/// One agent's value for a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The agent.
    pub agent: String,
    /// Its value.
    pub value: String,
}

/// Entries refused because a list was full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// MAC addresses over [`MAX_MACS`].
    #[serde(default)]
    pub macs: u64,
    /// Unit ids over [`MAX_CODES`].
    #[serde(default)]
    pub units: u64,
    /// Function codes over [`MAX_CODES`].
    #[serde(default)]
    pub functions: u64,
    /// Peers over [`MAX_PEERS`].
    #[serde(default)]
    pub peers: u64,
    /// Reports from agents over [`MAX_REPORTERS`].
    #[serde(default)]
    pub reports: u64,
}

impl Dropped {
    fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Every entry dropped.
    pub fn total(&self) -> u64 {
        self.macs + self.units + self.functions + self.peers + self.reports
    }
}

/// The label fields, by name, for reading and writing one at a time.
const FIELDS: [&str; 7] = [
    "name",
    "zone",
    "criticality",
    "vendor",
    "product_code",
    "revision",
    "product_name",
];

impl Labels {
    fn of(o: &AssetObservation) -> Self {
        Self {
            name: o.name.clone(),
            zone: o.zone.clone(),
            criticality: o.criticality.clone(),
            vendor: o.vendor.clone(),
            product_code: o.product_code.clone(),
            revision: o.revision.clone(),
            product_name: o.product_name.clone(),
        }
    }

    /// Sets `o`'s labels to these (the inverse of [`Labels::of`]).
    fn write_to(self, o: &mut AssetObservation) {
        o.name = self.name;
        o.zone = self.zone;
        o.criticality = self.criticality;
        o.vendor = self.vendor;
        o.product_code = self.product_code;
        o.revision = self.revision;
        o.product_name = self.product_name;
    }

    fn fields(&self) -> [&Option<String>; 7] {
        [
            &self.name,
            &self.zone,
            &self.criticality,
            &self.vendor,
            &self.product_code,
            &self.revision,
            &self.product_name,
        ]
    }

    fn fields_mut(&mut self) -> [&mut Option<String>; 7] {
        [
            &mut self.name,
            &mut self.zone,
            &mut self.criticality,
            &mut self.vendor,
            &mut self.product_code,
            &mut self.revision,
            &mut self.product_name,
        ]
    }

    /// Takes every label `newer` sets.
    fn update(&mut self, newer: &Labels) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(newer.fields()) {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.fields().iter().all(|f| f.is_none())
    }
}

impl AssetRecord {
    /// A host first reported by `agent`.
    pub fn new(agent: &str, observed: &AssetObservation) -> Self {
        let mut asset = AssetObservation::new(observed.ip, observed.first_seen);
        asset.last_seen = observed.last_seen;
        let mut record = Self {
            asset,
            reported_by: Vec::new(),
            conflicts: BTreeMap::new(),
            dropped: Dropped::default(),
        };
        record.observe(agent, observed);
        record
    }

    /// Folds what `agent` observed of the host into the record; returns how many entries the
    /// caps dropped.
    pub fn observe(&mut self, agent: &str, observed: &AssetObservation) -> u64 {
        let before = self.dropped.total();
        self.adopt_unattributed_labels();
        self.cut_to_caps();
        let labels = Labels::of(observed);
        match self.reported_by.iter().position(|r| r.agent == agent) {
            Some(at) => {
                let report = &mut self.reported_by[at];
                report.first_seen = report.first_seen.min(observed.first_seen);
                report.last_seen = report.last_seen.max(observed.last_seen);
                report.labels.update(&labels);
            }
            None if self.reported_by.len() < MAX_REPORTERS => self.reported_by.push(Report {
                agent: agent.to_string(),
                first_seen: observed.first_seen,
                last_seen: observed.last_seen,
                labels,
            }),
            None => self.dropped.reports += 1,
        }
        let a = &mut self.asset;
        let d = &mut self.dropped;
        d.macs += unite(&mut a.macs, &observed.macs, MAX_MACS);
        d.units += unite(&mut a.units, &observed.units, MAX_CODES);
        d.functions += unite(&mut a.functions, &observed.functions, MAX_CODES);
        d.peers += unite(&mut a.peers, &observed.peers, MAX_PEERS);
        a.master |= observed.master;
        a.slave |= observed.slave;
        a.first_seen = a.first_seen.min(observed.first_seen);
        a.last_seen = a.last_seen.max(observed.last_seen);
        self.settle_labels();
        self.dropped.total() - before
    }

    /// The criticality that weighs most among every agent's claims: no agent can lower what
    /// another reported.
    pub fn highest_criticality(&self) -> Option<&str> {
        let rank = |c: &str| match c {
            "critical" => 4,
            "high" => 3,
            "medium" => 2,
            "low" => 1,
            _ => 0,
        };
        self.reported_by
            .iter()
            .filter_map(|r| r.labels.criticality.as_deref())
            .max_by_key(|c| rank(c))
    }

    /// A record stored before reports were kept per agent has labels but no reports: they
    /// become the report of [`EARLIER_RELEASE`], so the first agent to report again does not
    /// silently replace them.
    fn adopt_unattributed_labels(&mut self) {
        if !self.reported_by.is_empty() {
            return;
        }
        let labels = Labels::of(&self.asset);
        if !labels.is_empty() {
            self.reported_by.push(Report {
                agent: EARLIER_RELEASE.to_string(),
                first_seen: self.asset.first_seen,
                last_seen: self.asset.last_seen,
                labels,
            });
        }
    }

    /// A record stored before the caps may hold longer lists: they are cut, and what was cut
    /// is counted.
    fn cut_to_caps(&mut self) {
        fn cut<T>(list: &mut Vec<T>, cap: usize) -> u64 {
            let over = list.len().saturating_sub(cap);
            list.truncate(cap);
            over as u64
        }
        let a = &mut self.asset;
        self.dropped.macs += cut(&mut a.macs, MAX_MACS);
        self.dropped.units += cut(&mut a.units, MAX_CODES);
        self.dropped.functions += cut(&mut a.functions, MAX_CODES);
        self.dropped.peers += cut(&mut a.peers, MAX_PEERS);
    }

    /// Sets each label of the merged view to the first reporter's value and lists the fields
    /// where reporters differ.
    fn settle_labels(&mut self) {
        let mut view = Labels::default();
        self.conflicts.clear();
        for (i, field) in FIELDS.iter().enumerate() {
            let claims: Vec<Claim> = self
                .reported_by
                .iter()
                .filter_map(|r| {
                    r.labels.fields()[i].as_ref().map(|v| Claim {
                        agent: r.agent.clone(),
                        value: v.clone(),
                    })
                })
                .collect();
            if let Some(first) = claims.first() {
                *view.fields_mut()[i] = Some(first.value.clone());
                if claims.iter().any(|c| c.value != first.value) {
                    self.conflicts.insert((*field).to_string(), claims);
                }
            }
        }
        view.write_to(&mut self.asset);
    }
}

/// Adds the entries of `new` that `list` (sorted, unique) lacks while it holds fewer than
/// `cap`; returns how many did not fit.
fn unite<T: Ord + Clone>(list: &mut Vec<T>, new: &[T], cap: usize) -> u64 {
    let mut dropped = 0;
    for item in new {
        if let Err(at) = list.binary_search(item) {
            if list.len() < cap {
                list.insert(at, item.clone());
            } else {
                dropped += 1;
            }
        }
    }
    dropped
}
