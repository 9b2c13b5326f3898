//! What agents send the collector: batches of alerts, asset and conversation observations,
//! and heartbeats.
//! JSON over HTTPS; versioned with the alert schema.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::time::Timestamp;

/// `POST /api/v1/ingest`: alerts and asset observations from one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBatch {
    /// The sending agent (must match its credential).
    pub agent: String,
    /// Alerts, each with its stable id: a retried batch is recognised and not counted twice.
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// What the agent learned about hosts since its last batch.
    #[serde(default)]
    pub assets: Vec<AssetObservation>,
    /// What the agent saw of each Modbus conversation in its last report windows (agents
    /// before the network map send none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversations: Vec<ConversationObservation>,
    /// The packets behind some of the agent's alerts (agents before evidence send none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<EvidenceRecord>,
    /// Policies the agent learned because the collector asked (sent only to a collector that
    /// asked, so never to one that would not know the field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<LearnedPolicy>,
}

/// The packets behind one alert, as the agent kept them: a classic pcap of the alert's flow,
/// the alert's frame among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRecord {
    /// The alert's id: an alert of the batch's agent, sent before or in the same batch.
    pub alert: String,
    /// The pcap, in base64 (standard alphabet, padded).
    pub pcap: String,
}

/// What an agent saw of one Modbus conversation, a master polling a slave, over one report
/// window: how busy it was, and what it touched so far. For the collector's network map and
/// asset pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationObservation {
    /// The master (the client that sends requests).
    pub master: IpAddr,
    /// The slave (the server that answers them).
    pub slave: IpAddr,
    /// The window's start, in capture time.
    pub since: Timestamp,
    /// The window's end: `requests / (until - since)` is the conversation's request rate.
    pub until: Timestamp,
    /// Requests in the window.
    pub requests: u64,
    /// Exception responses in the window.
    pub exceptions: u64,
    /// Unit ids addressed so far, ascending.
    #[serde(default)]
    pub units: Vec<u8>,
    /// Function codes used so far, ascending.
    #[serde(default)]
    pub functions: Vec<u8>,
    /// Addresses read so far, per table.
    #[serde(default)]
    pub reads: TableRanges,
    /// Addresses written so far, per table.
    #[serde(default)]
    pub writes: TableRanges,
}

/// Address ranges per Modbus table, each list `[first, last]` ranges, ascending and apart, at
/// most [`crate::alert::seen::MAX_RANGES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRanges {
    /// Coils.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coils: Vec<[u16; 2]>,
    /// Discrete inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discrete_inputs: Vec<[u16; 2]>,
    /// Holding registers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holding_registers: Vec<[u16; 2]>,
    /// Input registers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_registers: Vec<[u16; 2]>,
}

impl TableRanges {
    /// Each table's name and ranges, in the order above.
    pub fn tables(&self) -> [(&'static str, &Vec<[u16; 2]>); 4] {
        [
            ("coils", &self.coils),
            ("discrete_inputs", &self.discrete_inputs),
            ("holding_registers", &self.holding_registers),
            ("input_registers", &self.input_registers),
        ]
    }

    /// Each table's ranges, mutable, in the order of [`Self::tables`].
    pub fn tables_mut(&mut self) -> [&mut Vec<[u16; 2]>; 4] {
        [
            &mut self.coils,
            &mut self.discrete_inputs,
            &mut self.holding_registers,
            &mut self.input_registers,
        ]
    }
}

/// The collector's answer to an ingest, sent once the batch is durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReply {
    /// Alerts stored for the first time.
    pub accepted: usize,
    /// Alerts already stored (a retry).
    pub duplicates: usize,
    /// Asset observations merged.
    pub assets: usize,
}

/// `POST /api/v1/heartbeat`: an agent is alive, and how it is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent (must match its credential).
    pub agent: String,
    /// Its version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// The hash of the policy in force, if any.
    #[serde(default)]
    pub policy_hash: Option<String>,
    /// Where the agent's policy comes from (agents before central policies send none: a
    /// local file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_source: Option<PolicySource>,
    /// The newest policy-language version the agent reads (`version = N` in a policy; it
    /// reads every older one too). Agents before central policies send none: they read 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_language: Option<u32>,
    /// The learn request the agent is working on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<String>,
    /// The collector the agent delivers to (its address as the agent lists it), when it lists
    /// several replicas; agents with one collector send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
    /// Packets per second over the last interval.
    #[serde(default)]
    pub packets_per_s: f64,
    /// Packets seen since start.
    #[serde(default)]
    pub packets: u64,
    /// Packets dropped (kernel and internal) since start.
    #[serde(default)]
    pub drops: u64,
    /// Flows tracked now.
    #[serde(default)]
    pub flows: u64,
    /// Items waiting in the outbox.
    #[serde(default)]
    pub outbox_depth: u64,
    /// Items the outbox dropped for lack of disk budget since start.
    #[serde(default)]
    pub outbox_dropped: u64,
    /// The last error the agent met, if any.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Where an agent takes its policy from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// A file on the agent's host, edited there.
    #[default]
    File,
    /// The policy the collector assigns it, fetched when it changes.
    Collector,
}

impl PolicySource {
    /// Its name in settings and heartbeats.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Collector => "collector",
        }
    }
}

impl std::str::FromStr for PolicySource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file" => Ok(Self::File),
            "collector" => Ok(Self::Collector),
            other => Err(format!("{other:?} (expected file or collector)")),
        }
    }
}

/// A policy an agent learned from its traffic when the collector asked it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedPolicy {
    /// The request it answers ([`LearnRequest::id`]).
    pub request: String,
    /// The policy, as `otwatch-agent learn` writes it.
    pub toml: String,
    /// Requests it was learned from.
    pub requests: u64,
}

/// The collector asks the agent to learn its traffic for a while and send what it learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnRequest {
    /// The request's id: 32 hex digits.
    pub id: String,
    /// How long to learn, in seconds.
    pub duration_s: u64,
}

/// The collector's answer to a heartbeat. Read leniently: a newer collector may say more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The policy assigned to the agent and its version in force, if one is (collectors
    /// before central policies say nothing).
    #[serde(default)]
    pub policy: Option<AssignedPolicy>,
    /// A request to learn, until the agent has sent what it learned.
    #[serde(default)]
    pub learn: Option<LearnRequest>,
}

/// A policy assigned to an agent, as a heartbeat's answer names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedPolicy {
    /// The policy's name on the collector.
    pub name: String,
    /// The hash of its version in force (`Policy::hash`).
    pub hash: String,
}

/// What an agent saw of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetObservation {
    /// The host.
    pub ip: IpAddr,
    /// Its MAC addresses, `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub macs: Vec<String>,
    /// Unit ids it answered for (as a server) or addressed (as a client).
    #[serde(default)]
    pub units: Vec<u8>,
    /// It sent requests.
    #[serde(default)]
    pub master: bool,
    /// It answered requests.
    #[serde(default)]
    pub slave: bool,
    /// Function codes it used or answered.
    #[serde(default)]
    pub functions: Vec<u8>,
    /// Hosts it talked Modbus with.
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    /// Device identification (function 43/14) vendor name.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Device identification product code.
    #[serde(default)]
    pub product_code: Option<String>,
    /// Device identification revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// Device identification product or model name.
    #[serde(default)]
    pub product_name: Option<String>,
    /// The zone the agent's policy puts it in.
    #[serde(default)]
    pub zone: Option<String>,
    /// The criticality the agent's policy gives it.
    #[serde(default)]
    pub criticality: Option<String>,
    /// The policy's name for it.
    #[serde(default)]
    pub name: Option<String>,
    /// First seen.
    pub first_seen: Timestamp,
    /// Last seen.
    pub last_seen: Timestamp,
}

impl AssetObservation {
    /// A host seen once, at `ts`, with nothing known about it yet.
    pub fn new(ip: IpAddr, ts: Timestamp) -> Self {
        Self {
            ip,
            macs: Vec::new(),
            units: Vec::new(),
            master: false,
            slave: false,
            functions: Vec::new(),
            peers: Vec::new(),
            vendor: None,
            product_code: None,
            revision: None,
            product_name: None,
            zone: None,
            criticality: None,
            name: None,
            first_seen: ts,
            last_seen: ts,
        }
    }
}
