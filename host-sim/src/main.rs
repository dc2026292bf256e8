//! host-sim: the p2p-blocks board server on a Linux TAP interface, or on kernel TCP.

mod cli;
mod delay;
mod file_flash;
mod filling;
mod shaper;
mod store;
mod tap;
mod tap_server;

use clap::Parser;
use p2p_core::{BlockStore, Duration, Geometry};
use p2p_serve::tcp::TcpServer;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("host-sim: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &cli::Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_interrupt = Arc::clone(&stop);
    let listening = args.listen.is_some();
    ctrlc::set_handler(move || {
        if listening {
            // The kernel-TCP server blocks in accept(); nothing is left to flush.
            log::info!("interrupted; exiting");
            std::process::exit(0);
        }
        on_interrupt.store(true, Ordering::SeqCst);
    })
    .map_err(|error| format!("cannot catch Ctrl-C: {error}"))?;
    let idle_timeout = Duration::from_secs(args.idle_timeout);

    if args.manifest.is_some() {
        let store = filling::open_store(args)?;
        log::info!(
            "filling from {} peer(s): {}",
            args.fetch_from.len(),
            args.fetch_from
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return tap_server::serve(
            args,
            tap_server::Served::Filling(store),
            idle_timeout,
            &stop,
        );
    }
    let store = store::HostStore::open(args.file.as_deref(), args.blocks.clone())?;
    if args.print_manifest {
        let digest = p2p_core::store::manifest_digest_of(&store)
            .ok_or("the file's block digests are incomplete")?;
        println!("{digest}");
        return Ok(());
    }
    let geometry = Geometry::new(store.file_size());
    let held: Vec<String> = p2p_core::store::held(&store)
        .map(|range| range.to_string())
        .collect();
    log::info!(
        "serving {} ({} bytes, {} blocks of {} bytes), holding blocks {}; {} peers",
        args.file
            .as_ref()
            .map_or("the built-in sample".into(), |p| p.display().to_string()),
        geometry.file_size(),
        geometry.block_count(),
        geometry.block_size(),
        if held.is_empty() {
            "none".into()
        } else {
            held.join(",")
        },
        args.peers.len()
    );
    match args.listen {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
            log::info!("listening on {addr} (kernel TCP)");
            TcpServer {
                store: &store,
                peers: &args.peers,
                idle_timeout,
                max_connections: usize::from(args.max_connections),
            }
            .serve(&listener)
            .map_err(|error| format!("accepting on {addr}: {error}"))
        }
        None => tap_server::serve(args, tap_server::Served::File(&store), idle_timeout, &stop),
    }
}
