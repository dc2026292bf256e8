//! The p2p-core server session over the kernel's TCP: one thread per connection, up to a
//! limit. The same session code the firmware and host-sim run over smoltcp.

use p2p_core::server::{ServerConfig, ServerSession, SessionEvent, busy_error};
use p2p_core::wire::PeerAddr;
use p2p_core::{BlockStore, Duration, Instant};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant as StdInstant;

/// Transmit space handed to a session at a time: large writes keep system calls few.
const TRANSMIT_CHUNK: usize = 256 * 1024;

/// What a std TCP server serves, and how.
pub struct TcpServer<'a, S> {
    pub store: &'a S,
    pub peers: &'a [PeerAddr],
    pub idle_timeout: Duration,
    /// Connections beyond this get an Error saying the server is busy, then are closed.
    pub max_connections: usize,
}

impl<S: BlockStore + Sync> TcpServer<'_, S> {
    /// Accepts and serves connections until accepting fails.
    pub fn serve(&self, listener: &TcpListener) -> io::Result<()> {
        let active = AtomicUsize::new(0);
        let epoch = StdInstant::now();
        std::thread::scope(|scope| {
            loop {
                let (stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(error) if is_transient_accept_error(&error) => {
                        log::warn!("accept failed: {error}");
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if active.load(Ordering::Acquire) >= self.max_connections {
                    log::warn!("{peer}: refused, {} connections open", self.max_connections);
                    refuse_busy(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let active = &active;
                scope.spawn(move || {
                    log::info!("{peer}: connected");
                    match self.serve_connection(stream, peer, epoch) {
                        Ok(reason) => log::info!("{peer}: closed ({reason})"),
                        Err(error) => log::info!("{peer}: closed ({error})"),
                    }
                    active.fetch_sub(1, Ordering::AcqRel);
                });
            }
        })
    }

    /// Serves one connection until either side ends it; returns why it ended.
    fn serve_connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        epoch: StdInstant,
    ) -> io::Result<String> {
        let now = || Instant::from_millis(epoch.elapsed().as_millis() as u64);
        let idle = std::time::Duration::from_millis(self.idle_timeout.millis().max(1));
        stream.set_nodelay(true)?;
        // A reader that stops reading blocks our writes; give up after the idle time.
        stream.set_write_timeout(Some(idle))?;
        let mut config = ServerConfig::new(self.store, self.peers);
        config.idle_timeout = self.idle_timeout;
        let mut session = ServerSession::new(config, now());
        let mut input = [0u8; 4096];
        let (mut start, mut end) = (0, 0);
        let mut output = vec![0u8; TRANSMIT_CHUNK];
        let mut log_event = |event: SessionEvent| match event {
            SessionEvent::Accepted(request) => log::debug!("{peer}: {request}"),
            SessionEvent::Refused { request, refusal } => {
                log::info!("{peer}: {request} refused: {refusal}")
            }
            SessionEvent::ProtocolError(error) => log::warn!("{peer}: {error}"),
            SessionEvent::NoFileYet(request) => log::info!("{peer}: {request}: no file yet"),
            SessionEvent::ListTooLong => log::error!("{peer}: the Block List is too long to send"),
        };
        loop {
            if start < end {
                let offered = input.get(start..end).unwrap_or_default();
                start += session.receive(offered, now(), &mut log_event);
            }
            while session.wants_transmit() {
                let len = session.transmit(&mut output, now());
                if len == 0 {
                    break;
                }
                stream.write_all(output.get(..len).unwrap_or_default())?;
            }
            if let Some(reason) = session.poll_timeouts(now()) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Ok(reason.to_string());
            }
            if start < end {
                continue;
            }
            let wait = session
                .poll_at()
                .map(|at| at.saturating_since(now()).millis().max(1))
                .unwrap_or(1);
            stream.set_read_timeout(Some(std::time::Duration::from_millis(wait)))?;
            match stream.read(&mut input) {
                Ok(0) => return Ok("peer closed".to_string()),
                Ok(len) => (start, end) = (0, len),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Tells a client over the connection limit why it is being closed.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.write_all(&busy_error());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// accept() errors that concern one connection, or a passing shortage, not the listener.
fn is_transient_accept_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || error
        .raw_os_error()
        .is_some_and(|code| code == 24 || code == 23) // EMFILE, ENFILE
}
