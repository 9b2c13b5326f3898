//! `otwatch-agent`: the command line. Raw flags become one validated options value here; the
//! work happens in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use otwatch_agent::capture::bpf::Program;
use otwatch_agent::capture::pnet::PnetOptions;
use otwatch_agent::capture::ring::RingOptions;
use otwatch_agent::config::DEFAULT_SOCKET_BUFFER_MB;
use otwatch_agent::config::{AgentConfig, CaptureBackend, ConfigError};
use otwatch_agent::replay::{self, ReplayOptions};
use otwatch_agent::run;
use otwatch_agent::{learn, policy_file};
use otwatch_packet::flow_table::FlowConfig;
use otwatch_rules::detect::DetectionConfig;
use otwatch_rules::transaction::TrackerConfig;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::atomic::AtomicBool;

/// Passive Modbus security monitor agent.
#[derive(Debug, Parser)]
#[command(name = "otwatch-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch an interface (a SPAN port or TAP) or a pcap stream until stopped: detect, deliver
    /// to the collector, serve metrics. SIGHUP reloads the policy; SIGTERM or Ctrl-C flushes
    /// the outbox and exits.
    Run(Box<RunArgs>),
    /// Decode capture files as fast as possible, detect attacks, and print what they contain.
    Replay(Box<ReplayArgs>),
    /// Validate a policy file: errors name the line, the field and what was expected.
    Check(CheckArgs),
    /// Write a reviewable allowlist policy learned from normal traffic.
    Learn(LearnArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Capture on this interface (needs CAP_NET_RAW). Default: the configuration's `interface`.
    #[arg(long, value_name = "IF", env = "OTWATCH_INTERFACE")]
    iface: Option<String>,
    /// Read a pcap stream instead of an interface: a FIFO, a file being written, or `-` for
    /// standard input (`tcpdump -i eth1 -w - | otwatch-agent run --pcap-stream -`).
    #[arg(long, value_name = "FILE|-", conflicts_with = "iface")]
    pcap_stream: Option<PathBuf>,
    /// Check traffic against this policy (TOML); reloaded on SIGHUP and when the file changes.
    #[arg(long, value_name = "FILE", env = "OTWATCH_POLICY")]
    policy: Option<PathBuf>,
    /// Also append one JSON line per alert to this file.
    #[arg(long, value_name = "OUT.jsonl", env = "OTWATCH_ALERTS")]
    alerts: Option<PathBuf>,
    /// Print alerts readably on standard output (the default on a terminal).
    #[arg(long)]
    print_alerts: bool,
    /// This agent's name, carried in every alert.
    /// (Default: the configuration's agent_name, else the host name.)
    #[arg(long, value_name = "NAME", env = "OTWATCH_AGENT_NAME")]
    agent_name: Option<String>,
    /// The capture backend.
    #[arg(long, value_enum, env = "OTWATCH_CAPTURE_BACKEND")]
    capture_backend: Option<CaptureBackend>,
    /// pnet backend: megabytes of socket receive buffer.
    #[arg(long, value_name = "MB", env = "OTWATCH_SOCKET_BUFFER_MB", value_parser = clap::value_parser!(u64).range(1..=2048))]
    socket_buffer_mb: Option<u64>,
    /// Ring backend: kilobytes per block (a power of two, at least 4; default 1024).
    #[arg(long, value_name = "KB", env = "OTWATCH_RING_BLOCK_KB")]
    ring_block_kb: Option<u32>,
    /// Ring backend: blocks in the ring (default 64).
    #[arg(long, value_name = "N", env = "OTWATCH_RING_BLOCKS", value_parser = clap::value_parser!(u32).range(1..=65536))]
    ring_blocks: Option<u32>,
    /// Ring backend: pipelines in parallel, each with its own ring in one fanout group; a host
    /// pair's traffic always goes to the same one (default 1).
    #[arg(long, value_name = "N", env = "OTWATCH_WORKERS", value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: Option<u64>,
    /// What the kernel passes on: tcp-or-udp (default), all, or `tcpdump -ddd EXPR` output.
    #[arg(long, value_name = "FILTER", env = "OTWATCH_CAPTURE_FILTER")]
    capture_filter: Option<String>,
    /// Whether to put the interface in promiscuous mode (default true).
    #[arg(long, value_name = "BOOL", env = "OTWATCH_PROMISCUOUS")]
    promiscuous: Option<bool>,
    /// Whether to ignore frames this host sends (default: only on loopback).
    #[arg(long, value_name = "BOOL", env = "OTWATCH_IGNORE_OUTGOING")]
    ignore_outgoing: Option<bool>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("traffic").required(true).args(["pcaps", "iface"])))]
struct LearnArgs {
    /// Capture files of normal traffic (pcap or pcapng).
    #[arg(long = "pcap", value_name = "FILE", num_args = 1..)]
    pcaps: Vec<PathBuf>,
    /// Watch this interface instead (needs CAP_NET_RAW), for --duration or until Ctrl-C.
    #[arg(long, value_name = "IF", conflicts_with = "pcaps")]
    iface: Option<String>,
    /// How long to watch the interface ("24h", "30m").
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration, requires = "iface")]
    duration: Duration,
    /// The capture backend for --iface.
    #[arg(long, value_enum, requires = "iface")]
    capture_backend: Option<CaptureBackend>,
    /// Where to write the policy (TOML).
    #[arg(long, value_name = "policy.toml")]
    out: PathBuf,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The policy file (TOML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), processed in order as one capture.
    #[arg(long = "pcap", value_name = "FILE", required = true, num_args = 1..)]
    pcaps: Vec<PathBuf>,
    /// Write one JSON line per transaction (request joined with response) to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    transactions: Option<PathBuf>,
    /// Write one JSON line per decode event (malformed frames, non-Modbus payloads, stream
    /// gaps, conflicting overlaps) to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    events: Option<PathBuf>,
    /// Write the summary as JSON to this file as well.
    #[arg(long, value_name = "OUT.json")]
    summary_json: Option<PathBuf>,
    /// Check traffic against this policy (TOML). Without one, only the built-in detectors run.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Write one JSON line per alert to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    alerts: Option<PathBuf>,
    /// Print alerts readably on standard output (the default on a terminal).
    #[arg(long)]
    print_alerts: bool,
    /// This agent's name, carried in every alert.
    /// (Default: the configuration's agent_name, else the host name.)
    #[arg(long, value_name = "NAME", env = "OTWATCH_AGENT_NAME")]
    agent_name: Option<String>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Where alerts go besides this machine. Each flag overrides the configuration file.
#[derive(Debug, Args)]
struct DeliveryArgs {
    /// The agent's configuration (agent.toml): name, collector, token, outbox, metrics, policy.
    #[arg(long, value_name = "FILE", env = "OTWATCH_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Deliver alerts and asset observations to this collector (https://HOST:PORT).
    #[arg(long, value_name = "URL", env = "OTWATCH_COLLECTOR_URL")]
    collector: Option<String>,
    /// The collector's certificate authority (ca.pem from `otwatch-collector init`).
    #[arg(long, value_name = "FILE", env = "OTWATCH_COLLECTOR_CA")]
    ca: Option<PathBuf>,
    /// A file holding the agent's token (or set OTWATCH_COLLECTOR_TOKEN).
    #[arg(long, value_name = "FILE", env = "OTWATCH_COLLECTOR_TOKEN_FILE")]
    collector_token_file: Option<PathBuf>,
    /// Folder of the outbox, where undelivered records wait (kept across runs).
    #[arg(long, value_name = "DIR", env = "OTWATCH_OUTBOX")]
    outbox: Option<PathBuf>,
    /// Most megabytes of undelivered records kept; the oldest are dropped beyond (and
    /// reported to the collector).
    #[arg(long, value_name = "MB", env = "OTWATCH_OUTBOX_BUDGET_MB")]
    outbox_budget_mb: Option<u64>,
    /// Time between heartbeats to the collector ("5s").
    #[arg(long, value_name = "DURATION", env = "OTWATCH_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Serve Prometheus metrics on this address (/metrics).
    #[arg(long, value_name = "ADDR", env = "OTWATCH_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds to wait at the end for every record to reach the collector (what is left waits
    /// in the outbox for the next run).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        env = "OTWATCH_DRAIN_TIMEOUT"
    )]
    drain_timeout: u64,
}

#[derive(Debug, Args)]
struct DecodingArgs {
    /// Ports where Modbus is expected (a hint: Modbus is recognised on any port).
    #[arg(long = "modbus-port", value_name = "PORT", default_values_t = [502u16])]
    modbus_ports: Vec<u16>,
    /// Most flows tracked at once; the least recently active is evicted beyond it.
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: u64,
    /// Seconds of silence after which a flow is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a request waits for its response before it counts as unanswered.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    response_timeout: u64,
    /// Most requests waiting for a response per connection.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_pending: u64,
}

impl DecodingArgs {
    fn flow_config(&self) -> FlowConfig {
        FlowConfig {
            max_flows: usize::try_from(self.max_flows).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            modbus_ports: self.modbus_ports.clone(),
            tracker: TrackerConfig {
                timeout: Duration::from_secs(self.response_timeout),
                max_pending: usize::try_from(self.max_pending).unwrap_or(usize::MAX),
            },
            ..FlowConfig::default()
        }
    }
}

/// Exit codes: 0 success, 1 a capture was damaged (what came before is reported), 2 nothing
/// could run (bad arguments, missing files, unwritable outputs).
fn main() -> ExitCode {
    // Log lines (tracing) on standard error, at info and above.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_live(&args),
        Command::Replay(args) => run_replay(*args),
        Command::Check(args) => run_check(&args),
        Command::Learn(args) => run_learn(&args),
    }
}

fn run_learn(args: &LearnArgs) -> ExitCode {
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let learned = match &args.iface {
        Some(iface) => learn_live(args, iface),
        None => learn::learn(&args.pcaps, args.decoding.flow_config(), progress)
            .map_err(|e| e.to_string()),
    };
    let learned = match learned {
        Ok(learned) => learned,
        Err(e) => {
            eprintln!("otwatch-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(&args.out, &learned.policy) {
        eprintln!("otwatch-agent: {}: {e}", args.out.display());
        return ExitCode::from(2);
    }
    println!(
        "{}: policy learned from {} requests",
        args.out.display(),
        learned.requests
    );
    let mut damaged = false;
    for f in &learned.files {
        if let Some(e) = &f.error {
            eprintln!("otwatch-agent: {}: {e}", f.path.display());
            damaged = true;
        }
    }
    if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_check(args: &CheckArgs) -> ExitCode {
    match policy_file::load(&args.policy) {
        Ok((policy, warnings)) => {
            for w in &warnings {
                eprintln!("{}: warning: {w}", args.policy.display());
            }
            println!(
                "{}: ok: {} assets, {} groups, {} allow rules, {} alert rules, {} detector settings, {} warnings (hash {})",
                args.policy.display(),
                policy.assets.len(),
                policy.groups.len(),
                policy.allow.len(),
                policy.alerts.len(),
                policy.tuning.len(),
                warnings.len(),
                policy.hash
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otwatch-agent: {e}");
            ExitCode::from(2)
        }
    }
}

/// The configuration file with the flags applied over it.
fn agent_config(args: &DeliveryArgs) -> Result<AgentConfig, ConfigError> {
    let mut config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    if let Some(url) = &args.collector {
        config.collector_url = Some(url.clone());
    }
    if let Some(ca) = &args.ca {
        config.collector_ca = Some(ca.clone());
    }
    if let Some(file) = &args.collector_token_file {
        config.collector_token = None;
        config.collector_token_file = Some(file.clone());
    }
    if let Some(every) = args.heartbeat_interval {
        config.heartbeat_interval = Some(every);
    }
    if let Some(outbox) = &args.outbox {
        config.outbox = Some(outbox.clone());
    }
    if let Some(mb) = args.outbox_budget_mb {
        config.outbox_budget_mb = Some(mb);
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics_listen = Some(addr);
    }
    Ok(config)
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    let config = match agent_config(&args.delivery) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otwatch-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let delivery = match config.delivery(
        std::env::var("OTWATCH_COLLECTOR_TOKEN").ok(),
        Duration::from_secs(args.delivery.drain_timeout),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("otwatch-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let agent_name = match agent_name(args.agent_name.as_ref(), &config) {
        Ok(name) => name,
        Err(code) => return code,
    };
    let policy_path = args.policy.clone().or_else(|| config.policy.clone());
    let policy = match policy_path.as_deref().map(load_policy).transpose() {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let options = ReplayOptions {
        policy,
        alerts: args.alerts,
        print_alerts: args.print_alerts || std::io::stdout().is_terminal(),
        detection: DetectionConfig {
            agent: agent_name,
            ..DetectionConfig::default()
        },
        delivery,
        metrics_listen: config.metrics_listen,
        pcaps: args.pcaps,
        transactions: args.transactions,
        events: args.events,
        flows: args.decoding.flow_config(),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let report = match replay::replay(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("otwatch-agent: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(path) = &args.summary_json
        && let Err(e) = replay::write_json(&report, path)
    {
        eprintln!("otwatch-agent: {e}");
        return ExitCode::from(2);
    }
    if report.damaged() {
        for f in report.files.iter().filter(|f| f.error.is_some()) {
            eprintln!(
                "otwatch-agent: {}: {}",
                f.path.display(),
                f.error.as_deref().unwrap_or_default()
            );
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Loads a policy, printing its warnings; on error prints it and gives the exit code.
fn load_policy(path: &std::path::Path) -> Result<Arc<otwatch_rules::policy::Policy>, ExitCode> {
    match policy_file::load(path) {
        Ok((policy, warnings)) => {
            for w in &warnings {
                eprintln!("{}: warning: {w}", path.display());
            }
            Ok(Arc::new(policy))
        }
        Err(e) => {
            eprintln!("otwatch-agent: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `learn --iface`: watches the interface until the duration ends or SIGTERM/Ctrl-C.
fn learn_live(args: &LearnArgs, iface: &str) -> Result<learn::Learned, String> {
    let source = match args.capture_backend.unwrap_or_default() {
        CaptureBackend::Ring => run::Source::Ring(RingOptions::new(iface)),
        CaptureBackend::Pnet => run::Source::Pnet(PnetOptions {
            interface: iface.to_string(),
            socket_buffer: usize::try_from(DEFAULT_SOCKET_BUFFER_MB << 20).unwrap_or(usize::MAX),
            ignore_outgoing: None,
            promiscuous: true,
            filter: Program::tcp_or_udp(),
        }),
    };
    let source = run::open_source(&source).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| e.to_string())?;
    }
    let what = format!(
        "interface {iface}, {}",
        humantime::format_duration(args.duration)
    );
    learn::learn_live(
        source,
        &what,
        args.decoding.flow_config(),
        args.duration,
        &stop,
    )
    .map_err(|e| e.to_string())
}

/// The agent's name: the flag, else the configuration's, else the host's name. `run` and
/// `replay` share it: the outbox they share must not hold alerts under a name the agent's
/// collector credential does not cover.
/// The name must pass the collector's check of every alert's `agent` field, or every alert
/// would be refused.
fn agent_name(flag: Option<&String>, config: &AgentConfig) -> Result<String, ExitCode> {
    let name = flag
        .cloned()
        .or_else(|| config.agent_name.clone())
        .or_else(host_name)
        .unwrap_or_else(|| "otwatch-agent".to_string());
    match otwatch_rules::validate::agent_name("agent_name", &name) {
        Ok(()) => Ok(name),
        Err(e) => {
            tracing::error!("{e} (set --agent-name or agent_name in agent.toml)");
            Err(ExitCode::from(2))
        }
    }
}

/// The host's name, the default agent name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// How to capture on `interface`: the flags over the configuration's `[capture]` section.
fn interface_source(
    args: &RunArgs,
    config: &AgentConfig,
    interface: String,
) -> Result<run::Source, String> {
    let capture = &config.capture;
    let filter = match args.capture_filter.as_ref().or(capture.filter.as_ref()) {
        Some(setting) => Program::from_setting(setting).map_err(|e| e.to_string())?,
        None => Program::tcp_or_udp(),
    };
    let ignore_outgoing = args.ignore_outgoing.or(capture.ignore_outgoing);
    let promiscuous = args.promiscuous.or(capture.promiscuous).unwrap_or(true);
    Ok(
        match args.capture_backend.or(capture.backend).unwrap_or_default() {
            CaptureBackend::Pnet => run::Source::Pnet(PnetOptions {
                interface,
                socket_buffer: usize::try_from(
                    args.socket_buffer_mb
                        .or(capture.socket_buffer_mb)
                        .unwrap_or(DEFAULT_SOCKET_BUFFER_MB)
                        .saturating_mul(1 << 20),
                )
                .unwrap_or(usize::MAX),
                ignore_outgoing,
                promiscuous,
                filter,
            }),
            CaptureBackend::Ring => {
                let mut ring = RingOptions::new(&interface);
                if let Some(kb) = args.ring_block_kb.or(capture.ring_block_kb) {
                    ring.block_size = kb.saturating_mul(1024);
                }
                if let Some(n) = args.ring_blocks.or(capture.ring_blocks) {
                    ring.blocks = n;
                }
                ring.ignore_outgoing = ignore_outgoing;
                ring.promiscuous = promiscuous;
                ring.filter = filter;
                run::Source::Ring(ring)
            }
        },
    )
}

/// Exit codes: 0 stopped cleanly (signal or end of stream), 2 could not start.
fn run_live(args: &RunArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("otwatch-agent: {e}");
        ExitCode::from(2)
    };
    let config = match agent_config(&args.delivery) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let delivery = match config.delivery(
        std::env::var("OTWATCH_COLLECTOR_TOKEN").ok(),
        Duration::from_secs(args.delivery.drain_timeout),
    ) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let source = match (
        &args.pcap_stream,
        args.iface.clone().or(config.interface.clone()),
    ) {
        (Some(stream), _) => run::Source::Stream(stream.clone()),
        (None, Some(interface)) => match interface_source(args, &config, interface) {
            Ok(source) => source,
            Err(e) => return fail(&e),
        },
        (None, None) => {
            return fail(
                &"nothing to capture: give --iface IF (or `interface` in the configuration, or OTWATCH_INTERFACE), or --pcap-stream FILE|-",
            );
        }
    };
    let workers = args
        .workers
        .or(config.capture.workers)
        .map_or(1, |n| usize::try_from(n).unwrap_or(1));
    #[cfg(target_os = "linux")]
    let ring = matches!(source, run::Source::Ring(_));
    #[cfg(not(target_os = "linux"))]
    let ring = false;
    if !(1..=64).contains(&workers) {
        return fail(&format!("workers: {workers} (expected 1 to 64)"));
    }
    if workers > 1 && !ring {
        return fail(&format!(
            "workers: {workers} needs the ring backend on an interface (expected 1 with pnet or a pcap stream)"
        ));
    }
    let policy = match args.policy.clone().or_else(|| config.policy.clone()) {
        Some(path) => match load_policy(&path) {
            Ok(policy) => Some((path, policy)),
            Err(code) => return code,
        },
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            return fail(&e);
        }
    }
    if policy.is_none() {
        // Without a policy there is nothing to reload: SIGHUP must not end the agent.
        if let Err(e) = signal_hook::flag::register(SIGHUP, Arc::new(AtomicBool::new(false))) {
            return fail(&e);
        }
    }
    let agent = match agent_name(args.agent_name.as_ref(), &config) {
        Ok(name) => name,
        Err(code) => return code,
    };
    let options = run::RunOptions {
        source,
        flows: args.decoding.flow_config(),
        detection: DetectionConfig {
            agent,
            ..DetectionConfig::default()
        },
        policy,
        alerts: args.alerts.clone().or_else(|| config.alerts.clone()),
        print_alerts: args.print_alerts || std::io::stdout().is_terminal(),
        delivery,
        metrics_listen: config.metrics_listen,
        workers,
    };
    match run::run(&options, &stop) {
        Ok(report) => {
            eprint!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
