//! Serves a whole file on an address through p2p-serve's std TCP server (the code behind
//! `p2p-fetch --seed` and `host-sim --listen`): the peer the loopback benchmark fetches from.
//!
//! `cargo run --release -p p2p-fetch --example serve_file -- FILE 127.0.0.1:8888`

use p2p_core::server::DEFAULT_IDLE_TIMEOUT;
use p2p_serve::FileStore;
use p2p_serve::tcp::TcpServer;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(address), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: serve_file FILE ADDR:PORT");
        return ExitCode::from(2);
    };
    let store = match FileStore::open(&PathBuf::from(&path), None) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("serve_file: {error}");
            return ExitCode::from(6);
        }
    };
    let listener = match TcpListener::bind(&address) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("serve_file: cannot listen on {address}: {error}");
            return ExitCode::from(6);
        }
    };
    let server = TcpServer {
        store: &store,
        peers: &[],
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        max_connections: 64,
    };
    match server.serve(&listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("serve_file: {error}");
            ExitCode::FAILURE
        }
    }
}
