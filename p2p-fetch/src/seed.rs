//! Seeding: after the download, serve the file through p2p-serve's std TCP server, the same
//! p2p-core server session the boards run, so this PC becomes a full peer.

use crate::exit::Failure;
use crate::log::Log;
use p2p_core::PeerAddr;
use p2p_core::server::DEFAULT_IDLE_TIMEOUT;
use p2p_serve::FileStore;
use p2p_serve::tcp::TcpServer;
use std::net::TcpListener;
use std::path::Path;

/// Connections served at once while seeding.
const MAX_CONNECTIONS: usize = 64;

/// Serves `path` on `listener` until accepting fails; `peers` are listed to clients.
pub fn serve(
    path: &Path,
    listener: &TcpListener,
    peers: &[PeerAddr],
    log: &Log,
) -> Result<(), Failure> {
    let store = FileStore::open(path, None).map_err(|error| {
        Failure::new(crate::exit::ExitCode::Io, format!("cannot seed: {error}"))
    })?;
    let address = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |address| address.to_string());
    log.say(&format!(
        "seeding {} on {address} (Ctrl-C stops)",
        path.display()
    ));
    let server = TcpServer {
        store: &store,
        peers,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
    };
    server
        .serve(listener)
        .map_err(|error| Failure::io(format!("seeding on {address} stopped"), error))
}
