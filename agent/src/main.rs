//! `otwatch-agent`: the command line. Flags, environment and `agent.toml` become one validated
//! value in `otwatch_agent::settings`; the work happens in the library; this file prints and
//! picks exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use otwatch_agent::capture::bpf::Program;
use otwatch_agent::capture::pnet::PnetOptions;
use otwatch_agent::capture::ring::RingOptions;
use otwatch_agent::commands::learn;
use otwatch_agent::commands::replay::{self, ReplayOptions};
use otwatch_agent::commands::run;
use otwatch_agent::delivery::policy_follow;
use otwatch_agent::detection::policy_file;
use otwatch_agent::settings::config::{AgentConfig, CaptureBackend};
use otwatch_agent::settings::flags::{CheckFlags, Cli, Command, LearnFlags, ReplayFlags, RunFlags};
use otwatch_agent::settings::{self, DEFAULT_SOCKET_BUFFER_MB, Env};
use otwatch_rules::detect::DetectionConfig;
use otwatch_rules::wire::PolicySource;
use otwatch_telemetry::Telemetry;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Exit codes: 0 success, 1 a capture was damaged (what came before is reported), 2 nothing
/// could run (bad arguments, missing files, unwritable outputs).
fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let file = match &cli.command {
        Command::Run(flags) => settings::config_file(&flags.delivery, &env),
        Command::Replay(flags) => settings::config_file(&flags.delivery, &env),
        Command::Check(_) | Command::Learn(_) => Ok(AgentConfig::default()),
    };
    let telemetry = file.and_then(|file| {
        let telemetry = settings::telemetry(cli.log_level.as_deref(), cli.log_format, &env, &file)?;
        Ok((file, telemetry))
    });
    let (file, telemetry) = match telemetry {
        Ok(resolved) => resolved,
        Err(e) => {
            Telemetry::fallback().init();
            return fail(&e);
        }
    };
    telemetry.init();
    match cli.command {
        Command::Run(flags) => run_live(&flags, &env, &file),
        Command::Replay(flags) => run_replay(*flags, &env, &file),
        Command::Check(flags) => run_check(&flags),
        Command::Learn(flags) => run_learn(&flags),
    }
}

/// Logs why nothing could run (an error, in the format the settings chose); exit code 2.
fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{e}");
    ExitCode::from(2)
}

fn run_learn(args: &LearnFlags) -> ExitCode {
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let flows = match settings::flow_config(&args.decoding) {
        Ok(flows) => flows,
        Err(e) => return fail(&e),
    };
    let learned = match &args.iface {
        Some(iface) => learn_live(args, iface, flows),
        None => learn::learn(&args.pcaps, flows, progress, layout(args)).map_err(|e| e.to_string()),
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

fn run_check(args: &CheckFlags) -> ExitCode {
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

fn run_replay(args: ReplayFlags, env: &Env, file: &AgentConfig) -> ExitCode {
    let resolved = match settings::replay(&args, env, file, host_name()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let policy = match resolved.policy.as_deref().map(load_policy).transpose() {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let options = ReplayOptions {
        policy,
        alerts: args.alerts,
        print_alerts: args.print_alerts || std::io::stdout().is_terminal(),
        detection: DetectionConfig {
            agent: resolved.agent_name,
            ..DetectionConfig::default()
        },
        delivery: resolved.delivery,
        metrics_listen: resolved.metrics_listen,
        network_detection: resolved.network_detection,
        pcaps: args.pcaps,
        transactions: args.transactions,
        events: args.events,
        flows: resolved.flows,
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

/// The last good policy the collector assigned, kept in `path`: enforced from the start, even
/// while the collector is unreachable. None kept yet, or one this build cannot read (it was
/// written by another), and the built-in detectors run until the collector's arrives.
fn cached_policy(path: &std::path::Path) -> Option<Arc<otwatch_rules::policy::Policy>> {
    if !path.exists() {
        tracing::info!(
            "no policy from the collector kept in {} yet: the built-in detectors run until the assigned one arrives",
            path.display()
        );
        return None;
    }
    match policy_file::load(path) {
        Ok((policy, _)) => {
            tracing::info!(
                "enforcing the last policy the collector assigned ({}, {}) until it says otherwise",
                path.display(),
                policy.hash
            );
            Some(Arc::new(policy))
        }
        Err(e) => {
            tracing::error!(
                "the kept policy is unusable ({e}): the built-in detectors run until the collector's arrives"
            );
            None
        }
    }
}

/// `learn --iface`: watches the interface until the duration ends or SIGTERM/Ctrl-C.
fn learn_live(
    args: &LearnFlags,
    iface: &str,
    flows: otwatch_packet::flow_table::FlowConfig,
) -> Result<learn::Learned, String> {
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
    learn::learn_live(source, &what, flows, args.duration, &stop, layout(args))
        .map_err(|e| e.to_string())
}

/// How `learn` writes its policy.
fn layout(args: &LearnFlags) -> learn::Layout {
    if args.per_device {
        learn::Layout::PerDevice
    } else {
        learn::Layout::Grouped
    }
}

/// The host's name, the default agent name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Exit codes: 0 stopped cleanly (signal or end of stream), 2 could not start.
fn run_live(args: &RunFlags, env: &Env, file: &AgentConfig) -> ExitCode {
    let resolved = match settings::run(args, env, file, host_name()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let following = resolved.policy_source == PolicySource::Collector;
    if following
        && let Some(path) = &resolved.policy
        && let Err(e) = policy_follow::can_keep(path)
    {
        return fail(&format_args!(
            "policy: {}: {e} (with policy_source = \"collector\" the agent keeps the assigned policy there: expected a file in a writable folder, such as the state folder)",
            path.display()
        ));
    }
    let policy = match resolved.policy.clone() {
        Some(path) if following => cached_policy(&path).map(|p| (path, p)),
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
    if policy.is_none() && !following {
        // Without a policy there is nothing to reload: SIGHUP must not end the agent.
        if let Err(e) = signal_hook::flag::register(SIGHUP, Arc::new(AtomicBool::new(false))) {
            return fail(&e);
        }
    }
    let options = run::RunOptions {
        source: resolved.source,
        flows: resolved.flows,
        detection: DetectionConfig {
            agent: resolved.agent_name,
            ..DetectionConfig::default()
        },
        policy,
        follow: resolved.policy.filter(|_| following),
        alerts: resolved.alerts,
        print_alerts: resolved.print_alerts || std::io::stdout().is_terminal(),
        delivery: resolved.delivery,
        metrics_listen: resolved.metrics_listen,
        workers: resolved.workers,
        network_detection: resolved.network_detection,
    };
    match run::run(&options, &stop) {
        Ok(report) => {
            eprint!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
