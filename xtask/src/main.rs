//! `cargo xtask`: the project's orchestration, so nothing depends on scattered scripts.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod net;

#[derive(Parser)]
#[command(about = "p2p-blocks project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Private test networks: a network namespace with a bridge and TAP devices.
    Net(net::NetArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Net(args) => net::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
