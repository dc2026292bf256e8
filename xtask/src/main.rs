//! `cargo xtask`: the project's orchestration, so nothing depends on scattered scripts.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

mod bench;
mod check;
mod demo;
mod firmware;
mod net;
mod run;

#[derive(Parser)]
#[command(about = "p2p-blocks project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: three host-sims serve the sample, p2p-fetch downloads and verifies it.
    Demo,
    /// Every check: formatting, clippy, the embedded build, unit and end-to-end tests.
    Test(check::TestArgs),
    /// Measure against anchors, side by side in one run.
    Bench(bench::BenchArgs),
    /// Build the firmware boards, or measure their footprint.
    Firmware(firmware::FirmwareArgs),
    /// Private test networks: a network namespace with a bridge and TAP devices.
    Net(net::NetArgs),
    /// Waits until ADDR answers a File Size Request (the demo runs this inside its namespace).
    #[command(hide = true)]
    WaitUntilAnswering {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(args) => bench::run_bench(args),
        Command::Demo => demo::run_demo(),
        Command::Test(args) => check::run_all(args),
        Command::Firmware(args) => firmware::run_command(args),
        Command::Net(args) => net::run(args),
        Command::WaitUntilAnswering { addr, seconds } => {
            p2p_testnet::harness::wait_until_answering(addr, Duration::from_secs(seconds))
                .map(|_| ())
                .map_err(String::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
