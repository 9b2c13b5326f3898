//! The agent's configuration file, `agent.toml`: its name, its collector and credential, its
//! outbox, its metrics address, its policy, its logging. Parsing only: errors name the line
//! and the field. Flags and environment variables override it, in [`crate::settings`].
//!
//! ```toml
//! agent_name = "hall-1"
//! collector_url = "https://collector.plant.example:8443"
//! collector_token_file = "/etc/otwatch/agent.token"
//! collector_ca = "/etc/otwatch/ca.pem"
//! outbox = "/var/lib/otwatch-agent/outbox"
//! outbox_budget_mb = 256
//! evidence = "high"
//! evidence_buffer_mb = 16
//! heartbeat_interval = "5s"
//! metrics_listen = "127.0.0.1:9102"
//! policy = "/etc/otwatch/policy.toml"
//! policy_source = "file"
//! interface = "eth1"
//!
//! [capture]
//! backend = "pnet"
//! socket_buffer_mb = 8
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use otwatch_rules::wire::PolicySource;
use otwatch_telemetry::LogFormat;

/// `agent.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name (as enrolled at the collector).
    pub agent_name: Option<String>,
    /// The collector, `https://host:port`.
    pub collector_url: Option<String>,
    /// Several collector replicas, the first preferred (instead of `collector_url`).
    pub collector_urls: Option<Vec<String>>,
    /// How long after leaving the preferred collector it is tried again ("30s").
    #[serde(default, deserialize_with = "duration")]
    pub collector_return_after: Option<Duration>,
    /// The agent's token (prefer `collector_token_file`, readable by the agent only).
    pub collector_token: Option<Secret>,
    /// A file holding the agent's token.
    pub collector_token_file: Option<PathBuf>,
    /// The collector's certificate authority (`ca.pem` from `otwatch-collector init`).
    pub collector_ca: Option<PathBuf>,
    /// The outbox's folder.
    pub outbox: Option<PathBuf>,
    /// Most megabytes of undelivered records kept (oldest dropped beyond).
    pub outbox_budget_mb: Option<u64>,
    /// Which alerts send the packets behind them to the collector: "high" (high and critical,
    /// the default), "critical", or "off".
    pub evidence: Option<EvidenceLevel>,
    /// Megabytes of recent frames kept for evidence, shared by the capture workers (default 16).
    pub evidence_buffer_mb: Option<u64>,
    /// Most frames of one flow kept for evidence (default 32, at most 64).
    pub evidence_flow_packets: Option<u64>,
    /// Most kilobytes of one flow's frames kept for evidence (default 64, at most 64).
    pub evidence_flow_kb: Option<u64>,
    /// Time between heartbeats ("5s").
    #[serde(default, deserialize_with = "duration")]
    pub heartbeat_interval: Option<Duration>,
    /// Where to serve `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// The policy file (with `policy_source = "collector"`, where the assigned one is kept).
    pub policy: Option<PathBuf>,
    /// Where the policy comes from: `"file"` (the default) or `"collector"`.
    pub policy_source: Option<PolicySource>,
    /// The interface `run` captures on (a SPAN port or TAP).
    pub interface: Option<String>,
    /// Also append every alert to this JSON-lines file.
    pub alerts: Option<PathBuf>,
    /// Seconds to wait at the end for every record to reach the collector.
    pub drain_timeout: Option<u64>,
    /// How much to log ("info", "debug", or per target: "info,otwatch_agent::delivery::shipper=debug").
    pub log_level: Option<String>,
    /// Log lines as "text" or "json".
    pub log_format: Option<LogFormat>,
    /// Whether to detect floods and ARP or MAC spoofing (default true). On, the default
    /// capture filter lets ARP through.
    pub network_detection: Option<bool>,
    /// How `run` captures.
    #[serde(default)]
    pub capture: CaptureConfig,
}

/// A secret read from the file (the agent's token): its `Debug` never shows it, so no log
/// line or error made from the configuration can.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `[capture]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Which capture backend reads the interface (default: the ring).
    pub backend: Option<CaptureBackend>,
    /// pnet: megabytes of socket receive buffer (bursts wait there while the agent is busy).
    pub socket_buffer_mb: Option<u64>,
    /// Ring: kilobytes per block (a power of two, at least 4; default 1024).
    pub ring_block_kb: Option<u32>,
    /// Ring: blocks (default 64).
    pub ring_blocks: Option<u32>,
    /// Ring: pipelines in parallel, each with its own ring in one fanout group (default 1).
    pub workers: Option<u64>,
    /// What the kernel passes on: "tcp-or-udp" (the default), "all", or a classic BPF program
    /// as `tcpdump -ddd EXPRESSION` prints it (e.g. for some VLANs or hosts only).
    pub filter: Option<String>,
    /// Whether to put the interface in promiscuous mode (default true: a SPAN port needs it).
    pub promiscuous: Option<bool>,
    /// Whether to ignore frames this host sends (default: only on loopback, where every frame
    /// would be seen twice).
    pub ignore_outgoing: Option<bool>,
}

/// A capture backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CaptureBackend {
    /// An `AF_PACKET` TPACKET_V3 ring shared with the kernel: a block of frames per wake-up.
    #[default]
    Ring,
    /// pnet's `AF_PACKET` channel: one system call per frame (portable, simple).
    Pnet,
}

/// Which alerts send the packets behind them (a pcap of their flow's last frames) to the
/// collector, which keeps evidence of high and critical alerts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceLevel {
    /// High and critical alerts.
    High,
    /// Critical alerts only.
    Critical,
    /// None.
    Off,
}

impl EvidenceLevel {
    /// The lowest severity that sends its packets; none when off.
    pub fn min_severity(self) -> Option<otwatch_rules::alert::Severity> {
        use otwatch_rules::alert::Severity;
        match self {
            Self::High => Some(Severity::High),
            Self::Critical => Some(Severity::Critical),
            Self::Off => None,
        }
    }
}

impl std::str::FromStr for EvidenceLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} (expected high, critical or off)")),
        }
    }
}

impl std::str::FromStr for CaptureBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ring" => Ok(Self::Ring),
            "pnet" => Ok(Self::Pnet),
            other => Err(format!("{other:?} (expected ring or pnet)")),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}; expected e.g. \"5s\")"
        ))
    })
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse, or a field has the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the line and the field.
        message: String,
    },
}

impl AgentConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of `agent.toml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }
}

#[cfg(test)]
mod tests;
