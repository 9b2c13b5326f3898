//! `otwatch-collector`: the command line.

use std::process::ExitCode;

use clap::Parser;

/// Central otwatch collector (not implemented yet: it prints what exists and exits).
#[derive(Debug, Parser)]
#[command(name = "otwatch-collector", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("otwatch-collector: the collector is not implemented yet; see the README");
    ExitCode::from(2)
}
