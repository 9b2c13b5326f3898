//! The command line as clap parses it: raw values, no defaults from elsewhere, no environment.
//! [`super`] merges them with the environment and `agent.toml` and checks every range.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::settings::config::{CaptureBackend, EvidenceLevel};
use otwatch_rules::wire::PolicySource;
use otwatch_telemetry::LogFormat;

/// Passive Modbus security monitor agent.
#[derive(Debug, Parser)]
#[command(
    name = "otwatch-agent",
    version = otwatch_telemetry::build_version!(),
    about,
    after_help = "Every field of agent.toml but the inline token is also a flag of `run` and \
                  `replay` and an OTWATCH_* environment variable (named after the flag: \
                  --collector is OTWATCH_COLLECTOR_URL, --ca OTWATCH_COLLECTOR_CA, --config \
                  OTWATCH_AGENT_CONFIG, the token OTWATCH_COLLECTOR_TOKEN or \
                  OTWATCH_COLLECTOR_TOKEN_FILE, the log level OTWATCH_LOG or RUST_LOG). A flag \
                  wins over the environment, the environment over the file."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How much to log: error, warn, info (default), debug, trace, or per target
    /// ("info,otwatch_agent::delivery::shipper=debug"). [env: OTWATCH_LOG, RUST_LOG]
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Log lines as readable text (default) or one JSON object per line, for journald or a log
    /// shipper. [env: OTWATCH_LOG_FORMAT]
    #[arg(long, value_enum, value_name = "FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch an interface (a SPAN port or TAP) or a pcap stream until stopped: detect, deliver
    /// to the collector, serve metrics. SIGHUP reloads the policy; SIGTERM or Ctrl-C flushes
    /// the outbox and exits.
    Run(Box<RunFlags>),
    /// Decode capture files as fast as possible, detect attacks, and print what they contain.
    Replay(Box<ReplayFlags>),
    /// Validate a policy file: errors name the line, the field and what was expected.
    Check(CheckFlags),
    /// Write a reviewable allowlist policy learned from normal traffic.
    Learn(LearnFlags),
}

/// `run`'s flags.
#[derive(Debug, Default, Args)]
pub struct RunFlags {
    /// Capture on this interface (needs CAP_NET_RAW). Default: the configuration's `interface`.
    /// [env: OTWATCH_INTERFACE]
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Read a pcap stream instead of an interface: a FIFO, a file being written, or `-` for
    /// standard input (`tcpdump -i eth1 -w - | otwatch-agent run --pcap-stream -`).
    #[arg(long, value_name = "FILE|-", conflicts_with = "iface")]
    pub pcap_stream: Option<PathBuf>,
    /// Check traffic against this policy (TOML); reloaded on SIGHUP and when the file changes.
    /// [env: OTWATCH_POLICY]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Where the policy comes from: `file` (the default: --policy, edited on this host) or
    /// `collector` (the one the collector assigns this agent, fetched when it changes and kept
    /// in --policy, by default `assigned-policy.toml` beside the outbox).
    /// [env: OTWATCH_POLICY_SOURCE]
    #[arg(long, value_name = "file|collector")]
    pub policy_source: Option<PolicySource>,
    /// Also append one JSON line per alert to this file. [env: OTWATCH_ALERTS]
    #[arg(long, value_name = "OUT.jsonl")]
    pub alerts: Option<PathBuf>,
    /// Print alerts readably on standard output (the default on a terminal).
    #[arg(long)]
    pub print_alerts: bool,
    /// This agent's name, carried in every alert (default: the configuration's agent_name,
    /// else the host name). [env: OTWATCH_AGENT_NAME]
    #[arg(long, value_name = "NAME")]
    pub agent_name: Option<String>,
    /// The capture backend. [env: OTWATCH_CAPTURE_BACKEND]
    #[arg(long, value_enum)]
    pub capture_backend: Option<CaptureBackend>,
    /// pnet backend: megabytes of socket receive buffer, 1 to 2048 (default 8).
    /// [env: OTWATCH_SOCKET_BUFFER_MB]
    #[arg(long, value_name = "MB")]
    pub socket_buffer_mb: Option<u64>,
    /// Ring backend: kilobytes per block (a power of two, at least 4; default 1024).
    /// [env: OTWATCH_RING_BLOCK_KB]
    #[arg(long, value_name = "KB")]
    pub ring_block_kb: Option<u32>,
    /// Ring backend: blocks in the ring, 1 to 65536 (default 64). [env: OTWATCH_RING_BLOCKS]
    #[arg(long, value_name = "N")]
    pub ring_blocks: Option<u32>,
    /// Ring backend: pipelines in parallel, 1 to 64, each with its own ring in one fanout
    /// group; a host pair's traffic always goes to the same one (default 1).
    /// [env: OTWATCH_WORKERS]
    #[arg(long, value_name = "N")]
    pub workers: Option<u64>,
    /// What the kernel passes on: tcp-or-udp (default), all, or `tcpdump -ddd EXPR` output.
    /// [env: OTWATCH_CAPTURE_FILTER]
    #[arg(long, value_name = "FILTER")]
    pub capture_filter: Option<String>,
    /// Whether to put the interface in promiscuous mode (default true).
    /// [env: OTWATCH_PROMISCUOUS]
    #[arg(long, value_name = "BOOL")]
    pub promiscuous: Option<bool>,
    /// Whether to ignore frames this host sends (default: only on loopback).
    /// [env: OTWATCH_IGNORE_OUTGOING]
    #[arg(long, value_name = "BOOL")]
    pub ignore_outgoing: Option<bool>,
    /// How traffic is decoded.
    #[command(flatten)]
    pub decoding: DecodingFlags,
    /// Where alerts go.
    #[command(flatten)]
    pub delivery: DeliveryFlags,
}

/// `learn`'s flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("traffic").required(true).args(["pcaps", "iface"])))]
pub struct LearnFlags {
    /// Capture files of normal traffic (pcap or pcapng).
    #[arg(long = "pcap", value_name = "FILE", num_args = 1..)]
    pub pcaps: Vec<PathBuf>,
    /// Watch this interface instead (needs CAP_NET_RAW), for --duration or until Ctrl-C.
    #[arg(long, value_name = "IF", conflicts_with = "pcaps")]
    pub iface: Option<String>,
    /// How long to watch the interface ("24h", "30m").
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration, requires = "iface")]
    pub duration: Duration,
    /// The capture backend for --iface.
    #[arg(long, value_enum, requires = "iface")]
    pub capture_backend: Option<CaptureBackend>,
    /// Where to write the policy (TOML).
    #[arg(long, value_name = "policy.toml")]
    pub out: PathBuf,
    /// One rule per (master, target, unit): no groups of targets that behaved alike.
    #[arg(long)]
    pub per_device: bool,
    /// How traffic is decoded.
    #[command(flatten)]
    pub decoding: DecodingFlags,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `check`'s flags.
#[derive(Debug, Args)]
pub struct CheckFlags {
    /// The policy file (TOML).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
}

/// `replay`'s flags.
#[derive(Debug, Default, Args)]
pub struct ReplayFlags {
    /// Capture files (pcap or pcapng), processed in order as one capture.
    #[arg(long = "pcap", value_name = "FILE", required = true, num_args = 1..)]
    pub pcaps: Vec<PathBuf>,
    /// Write one JSON line per transaction (request joined with response) to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    pub transactions: Option<PathBuf>,
    /// Write one JSON line per decode event (malformed frames, non-Modbus payloads, stream
    /// gaps, conflicting overlaps) to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    pub events: Option<PathBuf>,
    /// Write the summary as JSON to this file as well.
    #[arg(long, value_name = "OUT.json")]
    pub summary_json: Option<PathBuf>,
    /// Check traffic against this policy (TOML). Without one, only the built-in detectors run.
    /// [env: OTWATCH_POLICY]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Write one JSON line per alert to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    pub alerts: Option<PathBuf>,
    /// Print alerts readably on standard output (the default on a terminal).
    #[arg(long)]
    pub print_alerts: bool,
    /// This agent's name, carried in every alert (default: the configuration's agent_name,
    /// else the host name). [env: OTWATCH_AGENT_NAME]
    #[arg(long, value_name = "NAME")]
    pub agent_name: Option<String>,
    /// How traffic is decoded.
    #[command(flatten)]
    pub decoding: DecodingFlags,
    /// Where alerts go.
    #[command(flatten)]
    pub delivery: DeliveryFlags,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Where alerts go besides this machine.
#[derive(Debug, Default, Args)]
pub struct DeliveryFlags {
    /// The agent's configuration (agent.toml): name, collector, token, outbox, metrics, policy.
    /// [env: OTWATCH_AGENT_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Deliver alerts and asset observations to this collector (https://HOST:PORT); repeat it
    /// for replicas, the first preferred. [env: OTWATCH_COLLECTOR_URL, comma-separated]
    #[arg(long, value_name = "URL")]
    pub collector: Vec<String>,
    /// How long after leaving the preferred collector (the first) it is tried again ("30s").
    /// [env: OTWATCH_COLLECTOR_RETURN_AFTER]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub collector_return_after: Option<Duration>,
    /// The collector's certificate authority (ca.pem from `otwatch-collector init`).
    /// [env: OTWATCH_COLLECTOR_CA]
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A file holding the agent's token (never the token itself on a command line).
    /// [env: OTWATCH_COLLECTOR_TOKEN_FILE, or the token in OTWATCH_COLLECTOR_TOKEN]
    #[arg(long, value_name = "FILE")]
    pub collector_token_file: Option<PathBuf>,
    /// Folder of the outbox, where undelivered records wait (kept across runs).
    /// [env: OTWATCH_OUTBOX]
    #[arg(long, value_name = "DIR")]
    pub outbox: Option<PathBuf>,
    /// Most megabytes of undelivered records kept, at least 1 (default 256); the oldest are
    /// dropped beyond (and reported to the collector). [env: OTWATCH_OUTBOX_BUDGET_MB]
    #[arg(long, value_name = "MB")]
    pub outbox_budget_mb: Option<u64>,
    /// Which alerts send the packets behind them to the collector, as a pcap: high (high and
    /// critical, the default), critical, or off. [env: OTWATCH_EVIDENCE]
    #[arg(long, value_name = "LEVEL")]
    pub evidence: Option<EvidenceLevel>,
    /// Megabytes of recent frames kept for evidence, shared by the capture workers (default
    /// 16, 1 to 1024). [env: OTWATCH_EVIDENCE_BUFFER_MB]
    #[arg(long, value_name = "MB")]
    pub evidence_buffer_mb: Option<u64>,
    /// Most frames of one flow kept for evidence (default 32, 1 to 64).
    /// [env: OTWATCH_EVIDENCE_FLOW_PACKETS]
    #[arg(long, value_name = "FRAMES")]
    pub evidence_flow_packets: Option<u64>,
    /// Most kilobytes of one flow's frames kept for evidence (default 64, 1 to 64).
    /// [env: OTWATCH_EVIDENCE_FLOW_KB]
    #[arg(long, value_name = "KB")]
    pub evidence_flow_kb: Option<u64>,
    /// Time between heartbeats to the collector ("5s"). [env: OTWATCH_HEARTBEAT_INTERVAL]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Serve Prometheus metrics on this address (/metrics). [env: OTWATCH_METRICS_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds to wait at the end for every record to reach the collector (what is left waits
    /// in the outbox for the next run; default 60). [env: OTWATCH_DRAIN_TIMEOUT]
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
}

/// How traffic is decoded (flags only; the defaults suit every plant seen so far).
#[derive(Debug, Args)]
pub struct DecodingFlags {
    /// Ports where Modbus is expected (a hint: Modbus is recognised on any port).
    #[arg(long = "modbus-port", value_name = "PORT", default_values_t = [502u16])]
    pub modbus_ports: Vec<u16>,
    /// Most flows tracked at once, at least 1; the least recently active is evicted beyond it.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub max_flows: u64,
    /// Seconds of silence after which a flow is closed, at least 1.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Seconds a request waits for its response before it counts as unanswered, at least 1.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub response_timeout: u64,
    /// Most requests waiting for a response per connection, at least 1.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_pending: u64,
    /// Whether to detect floods and ARP or MAC spoofing (default true; `network_detection` in
    /// agent.toml).
    #[arg(long, value_name = "BOOL")]
    pub network_detection: Option<bool>,
}

impl Default for DecodingFlags {
    fn default() -> Self {
        Self {
            modbus_ports: vec![502],
            max_flows: 65_536,
            idle_timeout: 300,
            response_timeout: 10,
            max_pending: 1024,
            network_detection: None,
        }
    }
}
