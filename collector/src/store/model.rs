//! What the collector keeps besides alerts: agents, assets, incidents, credentials.

use std::collections::BTreeSet;
use std::net::IpAddr;

use otwatch_rules::alert::Severity;
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::Heartbeat;
use serde::{Deserialize, Serialize};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An agent: may ingest and send heartbeats, nothing else.
    Agent,
    /// May read everything.
    Viewer,
    /// May read everything and acknowledge and resolve incidents.
    Admin,
}

impl Role {
    /// Parses `agent`, `viewer` or `admin`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "agent" => Some(Self::Agent),
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Whether this role may read alerts, incidents, assets and posture.
    pub fn can_read(self) -> bool {
        matches!(self, Self::Viewer | Self::Admin)
    }
}

/// Who holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The agent's or user's name.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

/// An agent as the collector last heard of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its latest heartbeat.
    pub heartbeat: Heartbeat,
    /// When the collector received that heartbeat (collector clock).
    pub seen_at: Timestamp,
    /// When the agent first reported.
    pub first_seen: Timestamp,
    /// Alerts received from it.
    pub alerts: u64,
}

/// The state of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    /// New or still happening.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Closed.
    Resolved,
}

/// A change of an incident's state, with who made it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The new state.
    pub state: IncidentState,
    /// Who.
    pub by: String,
    /// When (collector clock).
    pub at: Timestamp,
    /// Why, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Alerts of one rule between one source and one destination, across agents, grouped while
/// they keep coming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Sequential id.
    pub id: u64,
    /// The rule.
    pub rule: String,
    /// The rule's title.
    pub title: String,
    /// The highest severity seen.
    pub severity: Severity,
    /// ATT&CK for ICS techniques.
    pub technique: Vec<String>,
    /// The actor.
    pub src_ip: IpAddr,
    /// The target.
    pub dst_ip: IpAddr,
    /// Open, acknowledged or resolved.
    pub state: IncidentState,
    /// First alert's capture time.
    pub first_ts: Timestamp,
    /// Latest alert's capture time.
    pub last_ts: Timestamp,
    /// Alerts grouped.
    pub alerts: u64,
    /// Occurrences those alerts folded.
    pub occurrences: u64,
    /// Agents that reported it.
    pub agents: BTreeSet<String>,
    /// State changes, oldest first: the newest [`crate::store::MAX_HISTORY`].
    pub history: Vec<StateChange>,
    /// State changes older than those kept in `history`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier_changes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub use super::asset::{
    AssetRecord, Claim, Dropped, EARLIER_RELEASE, Labels, MAX_REPORTERS, Report,
};
