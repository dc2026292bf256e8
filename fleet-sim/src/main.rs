//! `fleet-sim`: a fleet of p2p-blocks nodes in one process (see the library's documentation).

use clap::Parser;
use fleet_sim::{FleetConfig, run};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Simulate a fleet of p2p-blocks nodes filling from one seed, and compare the time to the
/// theoretical minimum distribution time.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Nodes besides the seed.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    nodes: u32,
    /// Size of the distributed file, bytes (at most 8 MiB: the nodes' stores are sized so).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(0..=8 << 20))]
    file_size: u32,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Frames lost on each hop, percent.
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    loss: f64,
    /// Nodes that go away once and come back, resuming from their store, percent.
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    churn: f64,
    /// Each node's upload and download rate, kbit/s.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(8..))]
    node_rate: u64,
    /// The seed's upload and download rate, kbit/s.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(8..))]
    seed_rate: u64,
    /// Peers each node is told of besides the seed.
    #[arg(long, default_value_t = 4)]
    known_peers: usize,
    /// Every node fetches from the seed only (client-server, the anchor).
    #[arg(long)]
    client_server: bool,
    /// Give up after this many simulated seconds.
    #[arg(long, default_value_t = 3600)]
    limit: u64,
    /// Print one JSON object (otherwise a short summary).
    #[arg(long)]
    json: bool,
}

fn percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("{text} is not a percentage from 0 to 100")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = FleetConfig {
        nodes: args.nodes as usize,
        file_size: args.file_size,
        seed: args.seed,
        node_bps: args.node_rate * 1000,
        seed_bps: args.seed_rate * 1000,
        loss_percent: args.loss,
        churn_percent: args.churn,
        known_peers: args.known_peers,
        client_server: args.client_server,
        limit: args.limit.saturating_mul(1_000_000),
        ..FleetConfig::default()
    };
    let tty = std::io::stderr().is_terminal();
    let report = run(&config, &mut |t, done| {
        if tty {
            eprint!(
                "\rsimulated {t:.0} s: {done}/{} nodes complete",
                config.nodes
            );
        }
    });
    if tty {
        eprintln!();
    }
    let summary = if args.json {
        report.to_json().to_string()
    } else {
        format!(
            "{} of {} nodes complete in {:.2} s simulated (minimum {:.2} s: {:.2}x), {:.1} s of wall time",
            report.completed,
            report.nodes,
            report.t_seconds,
            report.t_min_seconds,
            report.t_over_tmin(),
            report.wall_seconds
        )
    };
    // Not println!, which panics when stdout is gone (`fleet-sim ... | head -c 10`).
    if let Err(error) = writeln!(std::io::stdout(), "{summary}") {
        eprintln!("fleet-sim: writing the result: {error}");
        return ExitCode::FAILURE;
    }
    if report.completed == report.nodes {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "fleet-sim: {} of {} nodes did not complete within {} s",
            report.nodes - report.completed,
            report.nodes,
            args.limit
        );
        ExitCode::FAILURE
    }
}
