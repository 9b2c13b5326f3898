//! Settings resolved once: the command line ([`flags`]), the environment ([`Env`]) and
//! `agent.toml` ([`AgentConfig`]) in, one validated value out ([`RunSettings`],
//! [`ReplaySettings`], [`Telemetry`]).
//!
//! Every precedence and range rule of the agent lives here:
//!
//! - For every field, a flag wins over its environment variable, the variable over the file,
//!   the file over the default.
//! - The collector token comes from the first source (flags, then environment, then file) that
//!   gives one, inline or as a file; one source giving both is an error naming both, as there
//!   is no telling which one the operator meant. No flag takes the token itself: a command
//!   line is visible to every user of the host.
//! - A value out of range is refused naming where it came from (`--workers`,
//!   `OTWATCH_WORKERS`, `[capture] workers`) and what was expected.

pub mod config;
pub mod flags;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use otwatch_packet::flow_table::FlowConfig;
use otwatch_rules::transaction::TrackerConfig;
use otwatch_rules::wire::PolicySource;

use crate::capture::bpf::Program;
#[cfg(target_os = "linux")]
use crate::capture::pnet::PnetOptions;
#[cfg(target_os = "linux")]
use crate::capture::ring::RingOptions;
use crate::commands::run::Source;
use crate::delivery::DeliveryOptions;
use crate::detection::evidence::EvidenceOptions;
use crate::settings::config::{AgentConfig, CaptureBackend, ConfigError, EvidenceLevel};
use flags::{DecodingFlags, DeliveryFlags, ReplayFlags, RunFlags};
use otwatch_packet::evidence::Limits;
use otwatch_telemetry::{LogFormat, Telemetry};

/// Default socket receive buffer of the pnet backend.
pub const DEFAULT_SOCKET_BUFFER_MB: u64 = 8;

/// Default outbox budget.
pub const DEFAULT_OUTBOX_BUDGET_MB: u64 = 256;

/// Default size of the evidence buffer.
pub const DEFAULT_EVIDENCE_BUFFER_MB: u64 = 16;

/// Default time between heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Default wait at the end for the outbox to empty.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the settings are unusable: the source of the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The configuration file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A value is unusable.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where it came from: a flag, an environment variable or a field of the file.
        origin: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

fn invalid(origin: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        origin: origin.into(),
        message: message.into(),
    }
}

/// The environment variables the agent reads, captured once at start. Its `Debug` shows the
/// names only: the token may be among the values.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// The process's `OTWATCH_*` variables and `RUST_LOG` (a variable that is not UTF-8 is
    /// kept as an error for whoever reads it).
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                (name.starts_with("OTWATCH_") || name == "RUST_LOG").then(|| {
                    let value = value
                        .into_string()
                        .unwrap_or_else(|_| "\u{fffd}(not UTF-8)".to_string());
                    (name, value)
                })
            })
            .collect();
        Self { vars }
    }

    /// An environment of these variables (for tests and embedding).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The variable `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The variable `name` parsed as a `T`, if set.
    fn parse<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, SettingsError> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| invalid(name, format!("{v:?} (expected {expected})")))
            })
            .transpose()
    }
}

/// A setting's three names.
#[derive(Debug, Clone, Copy)]
struct Field {
    flag: &'static str,
    env: &'static str,
    file: &'static str,
}

impl Field {
    const fn new(flag: &'static str, env: &'static str, file: &'static str) -> Self {
        Self { flag, env, file }
    }
}

const INTERFACE: Field = Field::new("--iface", "OTWATCH_INTERFACE", "interface");
const POLICY: Field = Field::new("--policy", "OTWATCH_POLICY", "policy");
const POLICY_SOURCE: Field =
    Field::new("--policy-source", "OTWATCH_POLICY_SOURCE", "policy_source");
const ALERTS: Field = Field::new("--alerts", "OTWATCH_ALERTS", "alerts");
const AGENT_NAME: Field = Field::new("--agent-name", "OTWATCH_AGENT_NAME", "agent_name");
const BACKEND: Field = Field::new(
    "--capture-backend",
    "OTWATCH_CAPTURE_BACKEND",
    "[capture] backend",
);
const SOCKET_BUFFER: Field = Field::new(
    "--socket-buffer-mb",
    "OTWATCH_SOCKET_BUFFER_MB",
    "[capture] socket_buffer_mb",
);
const RING_BLOCK_KB: Field = Field::new(
    "--ring-block-kb",
    "OTWATCH_RING_BLOCK_KB",
    "[capture] ring_block_kb",
);
const RING_BLOCKS: Field = Field::new(
    "--ring-blocks",
    "OTWATCH_RING_BLOCKS",
    "[capture] ring_blocks",
);
const WORKERS: Field = Field::new("--workers", "OTWATCH_WORKERS", "[capture] workers");
const FILTER: Field = Field::new(
    "--capture-filter",
    "OTWATCH_CAPTURE_FILTER",
    "[capture] filter",
);
const PROMISCUOUS: Field = Field::new(
    "--promiscuous",
    "OTWATCH_PROMISCUOUS",
    "[capture] promiscuous",
);
const IGNORE_OUTGOING: Field = Field::new(
    "--ignore-outgoing",
    "OTWATCH_IGNORE_OUTGOING",
    "[capture] ignore_outgoing",
);
const NETWORK_DETECTION: Field = Field::new(
    "--network-detection",
    "OTWATCH_NETWORK_DETECTION",
    "network_detection",
);
const COLLECTOR: Field = Field::new("--collector", "OTWATCH_COLLECTOR_URL", "collector_url");
const RETURN_AFTER: Field = Field::new(
    "--collector-return-after",
    "OTWATCH_COLLECTOR_RETURN_AFTER",
    "collector_return_after",
);
/// Most collector replicas one agent lists.
pub const MAX_COLLECTORS: usize = 16;
/// How long after leaving the preferred collector it is tried again, by default.
const DEFAULT_RETURN_AFTER: Duration = Duration::from_secs(30);
const CA: Field = Field::new("--ca", "OTWATCH_COLLECTOR_CA", "collector_ca");
const OUTBOX: Field = Field::new("--outbox", "OTWATCH_OUTBOX", "outbox");
const OUTBOX_BUDGET: Field = Field::new(
    "--outbox-budget-mb",
    "OTWATCH_OUTBOX_BUDGET_MB",
    "outbox_budget_mb",
);
const HEARTBEAT: Field = Field::new(
    "--heartbeat-interval",
    "OTWATCH_HEARTBEAT_INTERVAL",
    "heartbeat_interval",
);
const METRICS: Field = Field::new(
    "--metrics-listen",
    "OTWATCH_METRICS_LISTEN",
    "metrics_listen",
);
const DRAIN: Field = Field::new("--drain-timeout", "OTWATCH_DRAIN_TIMEOUT", "drain_timeout");
const EVIDENCE: Field = Field::new("--evidence", "OTWATCH_EVIDENCE", "evidence");
const EVIDENCE_BUFFER: Field = Field::new(
    "--evidence-buffer-mb",
    "OTWATCH_EVIDENCE_BUFFER_MB",
    "evidence_buffer_mb",
);
const EVIDENCE_FLOW_PACKETS: Field = Field::new(
    "--evidence-flow-packets",
    "OTWATCH_EVIDENCE_FLOW_PACKETS",
    "evidence_flow_packets",
);
const EVIDENCE_FLOW_KB: Field = Field::new(
    "--evidence-flow-kb",
    "OTWATCH_EVIDENCE_FLOW_KB",
    "evidence_flow_kb",
);

/// A value and where it came from (for error messages).
type Sourced<T> = Option<(T, &'static str)>;

/// The first of flag, environment and file that gives `field` a value.
fn pick<T: FromStr>(
    field: Field,
    flag: Option<T>,
    env: &Env,
    expected: &str,
    file: Option<T>,
) -> Result<Sourced<T>, SettingsError> {
    if let Some(v) = flag {
        return Ok(Some((v, field.flag)));
    }
    if let Some(v) = env.parse(field.env, expected)? {
        return Ok(Some((v, field.env)));
    }
    Ok(file.map(|v| (v, field.file)))
}

/// `value` (from `source`) if it lies in `range`, else an error naming both.
fn in_range<T>(
    value: Sourced<T>,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, SettingsError>
where
    T: PartialOrd + std::fmt::Display,
{
    match value {
        Some((v, source)) if !range.contains(&v) => Err(invalid(
            source,
            format!("{v} (expected {} to {})", range.start(), range.end()),
        )),
        other => Ok(other.map(|(v, _)| v)),
    }
}

/// The configuration file named by `--config` or `OTWATCH_AGENT_CONFIG`, or an empty one.
pub fn config_file(flags: &DeliveryFlags, env: &Env) -> Result<AgentConfig, SettingsError> {
    let path = flags
        .config
        .clone()
        .or_else(|| env.get("OTWATCH_AGENT_CONFIG").map(PathBuf::from));
    Ok(match path {
        Some(path) => AgentConfig::load(&path)?,
        None => AgentConfig::default(),
    })
}

/// How to log (the order is `otwatch_telemetry::resolve`'s, shared with the collector).
pub fn telemetry(
    level: Option<&str>,
    format: Option<LogFormat>,
    env: &Env,
    file: &AgentConfig,
) -> Result<Telemetry, SettingsError> {
    otwatch_telemetry::resolve(
        level,
        format,
        |name| env.get(name).map(str::to_string),
        file.log_level.as_deref(),
        file.log_format,
    )
    .map_err(|e| invalid(e.origin, e.message))
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Where packets come from.
    pub source: Source,
    /// Flow tracking.
    pub flows: FlowConfig,
    /// The agent's name.
    pub agent_name: String,
    /// The policy file, if any (with `policy_source = "collector"`, where the assigned
    /// policy is kept).
    pub policy: Option<PathBuf>,
    /// Where the policy comes from.
    pub policy_source: PolicySource,
    /// Where to append alerts as JSON lines, if anywhere.
    pub alerts: Option<PathBuf>,
    /// Whether `--print-alerts` was given.
    pub print_alerts: bool,
    /// Where alerts go, if to a collector.
    pub delivery: Option<DeliveryOptions>,
    /// Where to serve `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Pipelines in parallel.
    pub workers: usize,
    /// Whether floods and ARP or MAC spoofing are detected.
    pub network_detection: bool,
}

/// Everything `replay` needs from the settings, validated (the rest is its flags).
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// Flow tracking.
    pub flows: FlowConfig,
    /// The agent's name.
    pub agent_name: String,
    /// The policy file, if any.
    pub policy: Option<PathBuf>,
    /// Where alerts go, if to a collector.
    pub delivery: Option<DeliveryOptions>,
    /// Where to serve `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether floods and ARP or MAC spoofing are detected.
    pub network_detection: bool,
}

/// Whether floods and ARP or MAC spoofing are detected: flag, environment, file, else on.
fn network_detection(
    flags: &DecodingFlags,
    env: &Env,
    file: &AgentConfig,
) -> Result<bool, SettingsError> {
    Ok(pick(
        NETWORK_DETECTION,
        flags.network_detection,
        env,
        "true or false",
        file.network_detection,
    )?
    .is_none_or(|(on, _)| on))
}

/// Resolves `run`'s settings; `host` is the host's name (the default agent name).
pub fn run(
    flags: &RunFlags,
    env: &Env,
    file: &AgentConfig,
    host: Option<String>,
) -> Result<RunSettings, SettingsError> {
    let delivery = delivery(&flags.delivery, env, file)?;
    let network_detection = network_detection(&flags.decoding, env, file)?;
    let interface = pick(
        INTERFACE,
        flags.iface.clone(),
        env,
        "a name",
        file.interface.clone(),
    )?;
    let backend = pick(
        BACKEND,
        flags.capture_backend,
        env,
        "ring or pnet",
        file.capture.backend,
    )?;
    let (source, ring) = match (&flags.pcap_stream, interface) {
        (Some(stream), _) => (Source::Stream(stream.clone()), false),
        (None, Some((interface, _))) => {
            let backend = backend.map_or(CaptureBackend::default(), |(b, _)| b);
            (
                interface_source(flags, env, file, interface, backend, network_detection)?,
                backend == CaptureBackend::Ring,
            )
        }
        (None, None) => {
            return Err(invalid(
                "--iface",
                "nothing to capture: give --iface IF (or `interface` in the configuration, or OTWATCH_INTERFACE), or --pcap-stream FILE|-",
            ));
        }
    };
    let workers = pick(WORKERS, flags.workers, env, "1 to 64", file.capture.workers)?;
    let workers_from = workers.map_or(WORKERS.flag, |(_, from)| from);
    let workers = in_range(workers, 1..=64)?.unwrap_or(1);
    if workers > 1 && !(ring && cfg!(target_os = "linux")) {
        return Err(invalid(
            workers_from,
            format!(
                "{workers} needs the ring backend on an interface (expected 1 with pnet or a pcap stream)"
            ),
        ));
    }
    let (policy, policy_source) = policy(flags, env, file, delivery.as_ref())?;
    Ok(RunSettings {
        source,
        flows: FlowConfig {
            ethernet_sources: network_detection,
            ..flow_config(&flags.decoding)?
        },
        agent_name: agent_name(flags.agent_name.clone(), env, file, host)?,
        policy,
        policy_source,
        alerts: pick(
            ALERTS,
            flags.alerts.clone(),
            env,
            "a file",
            file.alerts.clone(),
        )?
        .map(|(p, _)| p),
        print_alerts: flags.print_alerts,
        metrics_listen: metrics_listen(&flags.delivery, env, file)?,
        delivery,
        workers: usize::try_from(workers).unwrap_or(1),
        network_detection,
    })
}

/// The policy file and where the policy comes from. Following the collector needs one, and
/// keeps what it assigns in the policy file, by default `assigned-policy.toml` beside the
/// outbox.
fn policy(
    flags: &RunFlags,
    env: &Env,
    file: &AgentConfig,
    delivery: Option<&DeliveryOptions>,
) -> Result<(Option<PathBuf>, PolicySource), SettingsError> {
    let path = pick(
        POLICY,
        flags.policy.clone(),
        env,
        "a file",
        file.policy.clone(),
    )?
    .map(|(p, _)| p);
    let source = pick(
        POLICY_SOURCE,
        flags.policy_source,
        env,
        "file or collector",
        file.policy_source,
    )?;
    match (source, delivery) {
        (Some((PolicySource::Collector, from)), None) => Err(invalid(
            from,
            "collector, but no collector is set (expected collector_url in agent.toml, --collector or OTWATCH_COLLECTOR_URL)",
        )),
        (Some((PolicySource::Collector, _)), Some(delivery)) => {
            let kept = path.unwrap_or_else(|| {
                delivery
                    .outbox
                    .parent()
                    .unwrap_or_else(|| Path::new(""))
                    .join("assigned-policy.toml")
            });
            Ok((Some(kept), PolicySource::Collector))
        }
        _ => Ok((path, PolicySource::File)),
    }
}

/// Resolves `replay`'s settings; `host` is the host's name (the default agent name).
pub fn replay(
    flags: &ReplayFlags,
    env: &Env,
    file: &AgentConfig,
    host: Option<String>,
) -> Result<ReplaySettings, SettingsError> {
    let network_detection = network_detection(&flags.decoding, env, file)?;
    Ok(ReplaySettings {
        flows: FlowConfig {
            ethernet_sources: network_detection,
            ..flow_config(&flags.decoding)?
        },
        agent_name: agent_name(flags.agent_name.clone(), env, file, host)?,
        policy: pick(
            POLICY,
            flags.policy.clone(),
            env,
            "a file",
            file.policy.clone(),
        )?
        .map(|(p, _)| p),
        delivery: delivery(&flags.delivery, env, file)?,
        metrics_listen: metrics_listen(&flags.delivery, env, file)?,
        network_detection,
    })
}

/// The decoding flags, range-checked.
pub fn flow_config(flags: &DecodingFlags) -> Result<FlowConfig, SettingsError> {
    let at_least_one = |value: u64, flag: &str| {
        if value == 0 {
            Err(invalid(flag, "0 (expected at least 1)"))
        } else {
            Ok(value)
        }
    };
    let max_flows = at_least_one(flags.max_flows, "--max-flows")?;
    let idle = at_least_one(flags.idle_timeout, "--idle-timeout")?;
    let response = at_least_one(flags.response_timeout, "--response-timeout")?;
    let pending = at_least_one(flags.max_pending, "--max-pending")?;
    Ok(FlowConfig {
        max_flows: usize::try_from(max_flows).unwrap_or(usize::MAX),
        idle_timeout: Duration::from_secs(idle),
        modbus_ports: flags.modbus_ports.clone(),
        tracker: TrackerConfig {
            timeout: Duration::from_secs(response),
            max_pending: usize::try_from(pending).unwrap_or(usize::MAX),
        },
        ..FlowConfig::default()
    })
}

/// The agent's name: flag, environment, file, else the host's name. `run` and `replay` share
/// it: the outbox they share must not hold alerts under a name the agent's collector
/// credential does not cover. It must pass the collector's check of every alert's `agent`
/// field, or every alert would be refused.
fn agent_name(
    flag: Option<String>,
    env: &Env,
    file: &AgentConfig,
    host: Option<String>,
) -> Result<String, SettingsError> {
    let (name, source) = pick(AGENT_NAME, flag, env, "a name", file.agent_name.clone())?
        .or_else(|| host.map(|h| (h, "the host name")))
        .unwrap_or_else(|| ("otwatch-agent".to_string(), "the default"));
    otwatch_rules::validate::agent_name("agent_name", &name).map_err(|e| {
        invalid(
            source,
            format!("{e} (set --agent-name or agent_name in agent.toml)"),
        )
    })?;
    Ok(name)
}

fn metrics_listen(
    flags: &DeliveryFlags,
    env: &Env,
    file: &AgentConfig,
) -> Result<Option<SocketAddr>, SettingsError> {
    Ok(pick(
        METRICS,
        flags.metrics_listen,
        env,
        "an address and port such as 127.0.0.1:9102",
        file.metrics_listen,
    )?
    .map(|(a, _)| a))
}

/// Where the token comes from.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Inline(String),
    File(PathBuf),
}

/// The token: from the first source that gives one; both forms in one source is an error.
fn token(
    flags: &DeliveryFlags,
    env: &Env,
    file: &AgentConfig,
) -> Result<Option<Token>, SettingsError> {
    if let Some(path) = &flags.collector_token_file {
        return Ok(Some(Token::File(path.clone())));
    }
    let from =
        |inline: Option<String>, path: Option<PathBuf>, names: (&str, &str)| match (inline, path) {
            (Some(_), Some(_)) => Err(invalid(
                format!("{} and {}", names.0, names.1),
                "both are set (expected one: the token inline or the file holding it)",
            )),
            (Some(t), None) => Ok(Some(Token::Inline(t))),
            (None, Some(p)) => Ok(Some(Token::File(p))),
            (None, None) => Ok(None),
        };
    let env_token = from(
        env.get("OTWATCH_COLLECTOR_TOKEN").map(str::to_string),
        env.get("OTWATCH_COLLECTOR_TOKEN_FILE").map(PathBuf::from),
        ("OTWATCH_COLLECTOR_TOKEN", "OTWATCH_COLLECTOR_TOKEN_FILE"),
    )?;
    if env_token.is_some() {
        return Ok(env_token);
    }
    from(
        file.collector_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        file.collector_token_file.clone(),
        ("collector_token", "collector_token_file"),
    )
}

/// The delivery settings, if a collector is configured.
fn delivery(
    flags: &DeliveryFlags,
    env: &Env,
    file: &AgentConfig,
) -> Result<Option<DeliveryOptions>, SettingsError> {
    let Some(urls) = collectors(flags, env, file)? else {
        return Ok(None);
    };
    let token = match token(flags, env, file)? {
        Some(Token::Inline(t)) => t.trim().to_string(),
        Some(Token::File(path)) => read_token(&path)?,
        None => {
            return Err(invalid(
                "collector_token",
                "a collector is set but no token (expected collector_token_file or collector_token in agent.toml, --collector-token-file, or OTWATCH_COLLECTOR_TOKEN_FILE or OTWATCH_COLLECTOR_TOKEN; `otwatch-collector enroll --agent NAME` issues one)",
            ));
        }
    };
    if token.is_empty() {
        return Err(invalid(
            "collector_token",
            "empty (expected the token `otwatch-collector enroll` printed)",
        ));
    }
    let budget = pick(
        OUTBOX_BUDGET,
        flags.outbox_budget_mb,
        env,
        "megabytes, at least 1",
        file.outbox_budget_mb,
    )?;
    let budget_mb = match budget {
        Some((0, source)) => return Err(invalid(source, "0 (expected at least 1)")),
        Some((mb, _)) => mb,
        None => DEFAULT_OUTBOX_BUDGET_MB,
    };
    let heartbeat = positive_duration(
        HEARTBEAT,
        flags.heartbeat_interval,
        env,
        file.heartbeat_interval,
        "5s",
    )?;
    let return_after = positive_duration(
        RETURN_AFTER,
        flags.collector_return_after,
        env,
        file.collector_return_after,
        "30s",
    )?;
    let drain = pick(
        DRAIN,
        flags.drain_timeout,
        env,
        "seconds",
        file.drain_timeout,
    )?;
    let evidence = evidence(flags, env, file)?;
    Ok(Some(DeliveryOptions {
        urls,
        return_after: return_after.map_or(DEFAULT_RETURN_AFTER, |(d, _)| d),
        token,
        ca: pick(
            CA,
            flags.ca.clone(),
            env,
            "a file",
            file.collector_ca.clone(),
        )?
        .map(|(p, _)| p),
        outbox: pick(
            OUTBOX,
            flags.outbox.clone(),
            env,
            "a folder",
            file.outbox.clone(),
        )?
        .map_or_else(|| PathBuf::from("otwatch-outbox"), |(p, _)| p),
        outbox_budget: budget_mb.saturating_mul(1024 * 1024),
        heartbeat_every: heartbeat.map_or(DEFAULT_HEARTBEAT, |(d, _)| d),
        drain_timeout: drain.map_or(DEFAULT_DRAIN_TIMEOUT, |(s, _)| Duration::from_secs(s)),
        evidence,
    }))
}

/// A duration from the flag, else the environment (humantime text), else the file, refused
/// when zero; `example` is what the messages suggest ("5s").
fn positive_duration(
    field: Field,
    flag: Option<Duration>,
    env: &Env,
    file: Option<Duration>,
    example: &str,
) -> Result<Sourced<Duration>, SettingsError> {
    let value = match flag {
        Some(d) => Some((d, field.flag)),
        None => match env.get(field.env) {
            Some(text) => Some((
                humantime::parse_duration(text).map_err(|e| {
                    invalid(
                        field.env,
                        format!("{text:?}: {e} (expected e.g. \"{example}\")"),
                    )
                })?,
                field.env,
            )),
            None => file.map(|d| (d, field.file)),
        },
    };
    if let Some((d, source)) = value
        && d.is_zero()
    {
        return Err(invalid(
            source,
            format!("0s (expected a positive duration such as \"{example}\")"),
        ));
    }
    Ok(value)
}

/// The collectors to deliver to, the first preferred: `--collector` (repeated), else
/// `OTWATCH_COLLECTOR_URL` (comma-separated), else `collector_urls` or `collector_url` in
/// the file (not both); none when no collector is set.
fn collectors(
    flags: &DeliveryFlags,
    env: &Env,
    file: &AgentConfig,
) -> Result<Option<Vec<String>>, SettingsError> {
    let (urls, source) = if !flags.collector.is_empty() {
        (flags.collector.clone(), COLLECTOR.flag)
    } else if let Some(text) = env.get(COLLECTOR.env) {
        let urls = text
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        (urls, COLLECTOR.env)
    } else {
        match (&file.collector_url, &file.collector_urls) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "collector_urls",
                    "set together with collector_url (expected one of them)",
                ));
            }
            (Some(url), None) => (vec![url.clone()], COLLECTOR.file),
            (None, Some(urls)) => (urls.clone(), "collector_urls"),
            (None, None) => return Ok(None),
        }
    };
    if urls.is_empty() {
        return Err(invalid(source, "empty (expected https://HOST:PORT)"));
    }
    if urls.len() > MAX_COLLECTORS {
        return Err(invalid(
            source,
            format!(
                "{} collectors (expected at most {MAX_COLLECTORS})",
                urls.len()
            ),
        ));
    }
    for (i, url) in urls.iter().enumerate() {
        // What the heartbeat may name (the collector checks it), one address per entry.
        if url.len() > otwatch_rules::validate::MAX_COLLECTOR_URL
            || !url.bytes().all(|b| b.is_ascii_graphic())
            || url.contains(',')
        {
            return Err(invalid(
                source,
                format!(
                    "{url:?} (expected one https://HOST:PORT per entry, printable, at most {} bytes)",
                    otwatch_rules::validate::MAX_COLLECTOR_URL
                ),
            ));
        }
        let base = url.trim_end_matches('/');
        if urls[..i].iter().any(|u| u.trim_end_matches('/') == base) {
            return Err(invalid(
                source,
                format!("{url:?} listed twice (expected each collector once)"),
            ));
        }
    }
    Ok(Some(urls))
}

/// Which alerts send their packets and how many frames are kept for them; none when off.
fn evidence(
    flags: &DeliveryFlags,
    env: &Env,
    file: &AgentConfig,
) -> Result<Option<EvidenceOptions>, SettingsError> {
    let level = pick(
        EVIDENCE,
        flags.evidence,
        env,
        "high, critical or off",
        file.evidence,
    )?
    .map_or(EvidenceLevel::High, |(l, _)| l);
    let buffer_mb = in_range(
        pick(
            EVIDENCE_BUFFER,
            flags.evidence_buffer_mb,
            env,
            "megabytes, 1 to 1024",
            file.evidence_buffer_mb,
        )?,
        1..=1024,
    )?
    .unwrap_or(DEFAULT_EVIDENCE_BUFFER_MB);
    // A flow's pcap stays within what the collector takes for one alert (64 frames, 80 KiB).
    let defaults = Limits::default();
    let flow_packets = in_range(
        pick(
            EVIDENCE_FLOW_PACKETS,
            flags.evidence_flow_packets,
            env,
            "frames, 1 to 64",
            file.evidence_flow_packets,
        )?,
        1..=64,
    )?
    .map_or(defaults.per_flow_packets, |n| n as usize);
    let flow_kb = in_range(
        pick(
            EVIDENCE_FLOW_KB,
            flags.evidence_flow_kb,
            env,
            "kilobytes, 1 to 64",
            file.evidence_flow_kb,
        )?,
        1..=64,
    )?
    .map_or(defaults.per_flow_bytes, |kb| (kb as usize) << 10);
    Ok(level.min_severity().map(|min_severity| EvidenceOptions {
        min_severity,
        limits: Limits {
            per_flow_packets: flow_packets,
            per_flow_bytes: flow_kb,
            total_bytes: usize::try_from(buffer_mb << 20).unwrap_or(usize::MAX),
        },
    }))
}

/// The token in `path`, trimmed.
fn read_token(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| invalid("collector_token_file", format!("{}: {e}", path.display())))
}

/// How to capture on `interface` with `backend`.
#[cfg(target_os = "linux")]
fn interface_source(
    flags: &RunFlags,
    env: &Env,
    file: &AgentConfig,
    interface: String,
    backend: CaptureBackend,
    network_detection: bool,
) -> Result<Source, SettingsError> {
    let capture = &file.capture;
    let filter = match pick(
        FILTER,
        flags.capture_filter.clone(),
        env,
        "tcp-or-udp, all or a program",
        capture.filter.clone(),
    )? {
        Some((setting, source)) => {
            let program =
                Program::from_setting(&setting).map_err(|e| invalid(source, e.to_string()))?;
            if network_detection {
                match program.keeps_arp() {
                    Some(true) => {}
                    Some(false) => tracing::warn!(
                        "the capture filter ({source}) drops ARP: ARP spoofing is judged from the Ethernet source of IP traffic only (expected a filter that keeps arp, such as \"tcp-udp-or-arp\", or network_detection = false)"
                    ),
                    None => tracing::warn!(
                        "cannot tell whether the capture filter ({source}) keeps ARP, which ARP spoofing detection reads"
                    ),
                }
            }
            program
        }
        None if network_detection => Program::tcp_udp_or_arp(),
        None => Program::tcp_or_udp(),
    };
    let ignore_outgoing = pick(
        IGNORE_OUTGOING,
        flags.ignore_outgoing,
        env,
        "true or false",
        capture.ignore_outgoing,
    )?
    .map(|(b, _)| b);
    let promiscuous = pick(
        PROMISCUOUS,
        flags.promiscuous,
        env,
        "true or false",
        capture.promiscuous,
    )?
    .is_none_or(|(b, _)| b);
    Ok(match backend {
        CaptureBackend::Pnet => {
            let mb = pick(
                SOCKET_BUFFER,
                flags.socket_buffer_mb,
                env,
                "megabytes, 1 to 2048",
                capture.socket_buffer_mb,
            )?;
            let mb = in_range(mb, 1..=2048)?.unwrap_or(DEFAULT_SOCKET_BUFFER_MB);
            Source::Pnet(PnetOptions {
                interface,
                socket_buffer: usize::try_from(mb << 20).unwrap_or(usize::MAX),
                ignore_outgoing,
                promiscuous,
                filter,
            })
        }
        CaptureBackend::Ring => {
            let mut ring = RingOptions::new(&interface);
            let kb = pick(
                RING_BLOCK_KB,
                flags.ring_block_kb,
                env,
                "kilobytes, a power of two",
                capture.ring_block_kb,
            )?;
            if let Some((kb, source)) = kb {
                if kb < 4 || !kb.is_power_of_two() || kb > 1 << 20 {
                    return Err(invalid(
                        source,
                        format!("{kb} (expected a power of two from 4 to 1048576)"),
                    ));
                }
                ring.block_size = kb * 1024;
            }
            let blocks = pick(
                RING_BLOCKS,
                flags.ring_blocks,
                env,
                "1 to 65536",
                capture.ring_blocks,
            )?;
            if let Some(n) = in_range(blocks, 1..=65536)? {
                ring.blocks = n;
            }
            ring.ignore_outgoing = ignore_outgoing;
            ring.promiscuous = promiscuous;
            ring.filter = filter;
            Source::Ring(ring)
        }
    })
}

/// Interfaces are captured on Linux only.
#[cfg(not(target_os = "linux"))]
fn interface_source(
    _flags: &RunFlags,
    _env: &Env,
    _file: &AgentConfig,
    interface: String,
    _backend: CaptureBackend,
    _network_detection: bool,
) -> Result<Source, SettingsError> {
    Err(invalid(
        "--iface",
        format!("{interface}: live capture needs Linux (expected --pcap-stream here)"),
    ))
}

#[cfg(test)]
mod tests;
