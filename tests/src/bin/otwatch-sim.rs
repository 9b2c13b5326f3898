//! `otwatch-sim`: the simulated plant from the command line.
//!
//! - `otwatch-sim plc --listen 10.66.0.2:502` runs tank PLCs until stopped.
//! - `otwatch-sim plant --pcap-out - | otwatch-agent run --pcap-stream -` runs the whole plant
//!   on loopback (no root), attacks included, and writes its traffic as a pcap stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use otwatch_tests::sim::{self, Layout, Pace, tap::Tap};

/// A simulated Modbus plant: tank PLCs, an HMI, an engineering workstation, an intruder.
#[derive(Debug, Parser)]
#[command(name = "otwatch-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run tank PLCs (Modbus/TCP servers) until stopped.
    Plc {
        /// Where each PLC listens.
        #[arg(long, value_name = "ADDR", required = true, num_args = 1..)]
        listen: Vec<SocketAddr>,
    },
    /// Run the whole plant on loopback aliases (127.0.x.y) and write its traffic as a pcap
    /// stream.
    Plant {
        /// Where to write the pcap stream (`-`: standard output).
        #[arg(long, value_name = "FILE|-")]
        pcap_out: PathBuf,
        /// Time between two runs of the attack script (the first comes after 10 s).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        attack_every: Duration,
        /// Only normal traffic, no attacks.
        #[arg(long)]
        no_attack: bool,
    },
    /// Replay a capture's frames onto an interface at a fixed rate (needs CAP_NET_RAW): the
    /// traffic source of the capture load benchmark.
    Wire {
        /// The interface to send on.
        #[arg(long, value_name = "IF")]
        iface: String,
        /// The frames to send (classic pcap; the first 100,000 are cycled through).
        #[arg(long, value_name = "FILE")]
        pcap: PathBuf,
        /// Frames to send in all.
        #[arg(long, value_name = "N")]
        count: u64,
        /// Frames per second (0: as fast as possible).
        #[arg(long, value_name = "N", default_value_t = 0)]
        pps: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Wire {
        iface,
        pcap,
        count,
        pps,
    } = &cli.command
    {
        return wire(iface, pcap, *count, *pps);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otwatch-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Plc { listen } => {
                let bound = sim::start_plcs(&listen).await?;
                for addr in &bound {
                    eprintln!("otwatch-sim: PLC listening on {addr}");
                }
                tokio::signal::ctrl_c().await
            }
            Command::Wire { .. } => Ok(()),
            Command::Plant {
                pcap_out,
                attack_every,
                no_attack,
            } => {
                let out: Box<dyn std::io::Write + Send> = if pcap_out.as_os_str() == "-" {
                    Box::new(std::io::stdout())
                } else {
                    Box::new(std::fs::File::create(&pcap_out)?)
                };
                let tap = Tap::new(out)?;
                let layout = Layout::loopback();
                let plcs = sim::start_plcs(&layout.plcs).await?;
                sim::start_masters(&layout, &plcs, Some(&tap), Pace::default());
                eprintln!("otwatch-sim: plant running, PLCs on {plcs:?}");
                let attacks = async {
                    if no_attack {
                        return std::future::pending().await;
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    loop {
                        sim::attack_once(&layout, &plcs, Some(&tap), &|s| {
                            eprintln!("otwatch-sim: attack: {} (expect {})", s.what, s.rule);
                        })
                        .await;
                        tokio::time::sleep(attack_every).await;
                    }
                };
                let reader_gone = async {
                    while !tap.closed() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                };
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r,
                    () = attacks => Ok(()),
                    () = reader_gone => Ok(()),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otwatch-sim: {e}");
            ExitCode::from(2)
        }
    }
}

/// `otwatch-sim wire`: prints `sent N failed F seconds S pps P`.
fn wire(iface: &str, pcap: &std::path::Path, count: u64, pps: u64) -> ExitCode {
    let result = otwatch_tests::wire::load(pcap, 100_000)
        .and_then(|frames| otwatch_tests::wire::send(iface, &frames, count, pps));
    match result {
        Ok(sent) => {
            let seconds = sent.elapsed.as_secs_f64();
            println!(
                "sent {} failed {} seconds {seconds:.3} pps {:.0}",
                sent.frames,
                sent.failed,
                sent.frames as f64 / seconds.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otwatch-sim: {e}");
            ExitCode::from(2)
        }
    }
}
