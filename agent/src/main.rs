//! `otwatch-agent`: the command line. Raw flags become one validated options value here; the
//! work happens in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use otwatch_agent::flow::FlowConfig;
use otwatch_agent::replay::{self, ReplayOptions};
use otwatch_rules::transaction::TrackerConfig;

/// Passive Modbus security monitor agent.
#[derive(Debug, Parser)]
#[command(name = "otwatch-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode capture files as fast as possible and print what they contain.
    Replay(ReplayArgs),
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
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
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
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => run_replay(args),
    }
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    let options = ReplayOptions {
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
