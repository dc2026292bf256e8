//! Servers on a test network, as the end-to-end tests and `cargo xtask bench` run them: start
//! host-sim or the QEMU board, wait until it answers a real File Size Request (never a fixed
//! sleep: accepting a connection is not enough, QEMU's networking accepts before the guest
//! listens), and read a process's CPU time and peak memory from /proc. Every step returns a
//! `Result`; a test that cannot go on without it says `expect`.

use crate::TestNet;
use p2p_core::wire::{Parsed, Request, ResponseHeader};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The protocol's port, on which every server of a test network listens.
pub const PORT: u16 = 8888;

/// A step of the harness that failed, saying what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<crate::Unavailable> for HarnessError {
    fn from(error: crate::Unavailable) -> Self {
        Self(error.0)
    }
}

impl From<HarnessError> for String {
    fn from(error: HarnessError) -> Self {
        error.0
    }
}

/// Where host-sim on TAP `tap` listens: 10.0.0.(tap + 2), as [`TestNet::host_addr`].
pub fn host_sim_addr(tap: usize) -> SocketAddr {
    SocketAddr::new(
        std::net::Ipv4Addr::new(10, 0, 0, tap as u8 + 2).into(),
        PORT,
    )
}

/// Where the QEMU board with MAC 52:54:00:00:00:`mac_byte` listens: its fallback address
/// 10.0.0.`mac_byte`, taken when DHCP finds no server.
pub fn board_addr(mac_byte: u8) -> SocketAddr {
    SocketAddr::new(std::net::Ipv4Addr::new(10, 0, 0, mac_byte).into(), PORT)
}

impl TestNet {
    /// `binary` (a host-sim) on TAP `tap` as 10.0.0.(tap + 2)/24, logging warnings only; add
    /// its arguments, then start it with [`start_server`](Self::start_server).
    pub fn host_sim(&self, binary: &Path, tap: usize) -> Command {
        let mut command = self.command(&binary.to_string_lossy());
        command
            .args(["--tap", &Self::tap(tap)])
            .args([
                "--ip",
                &format!("{}/{}", Self::host_addr(tap), crate::PREFIX_LEN),
            ])
            .env("RUST_LOG", "warn");
        command
    }

    /// Starts `command` (a host-sim or a QEMU board) and waits until `addr` answers a File Size
    /// Request, for at most `limit`. Returns the process's index and the size it serves; fails
    /// at once if the process exits first.
    pub fn start_server(
        &mut self,
        command: &mut Command,
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<(usize, u32), HarnessError> {
        let index = self.spawn(command)?;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Short rounds, so an early exit is noticed without waiting out the limit.
            let round = left.min(Duration::from_secs(1));
            match self.wait_until_answering(addr, round) {
                Ok(size) => return Ok((index, size)),
                Err(error) if left.is_zero() => {
                    return Err(HarnessError(format!("{command:?}: {error}")));
                }
                Err(_) => {}
            }
            if let Some(Ok(Some(status))) = self.child(index).map(|child| child.try_wait()) {
                return Err(HarnessError(format!(
                    "{command:?} exited ({status}) before {addr} answered"
                )));
            }
        }
    }

    /// Waits until `addr`, inside the network, answers a File Size Request, for at most
    /// `limit`; returns the size. Needs root, as [`run_inside`](Self::run_inside).
    pub fn wait_until_answering(
        &self,
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<u32, HarnessError> {
        self.run_inside(move || wait_until_answering(addr, limit))?
    }
}

/// Waits until `addr`, from this thread's network namespace, answers a File Size Request, for
/// at most `limit`; returns the size.
pub fn wait_until_answering(addr: SocketAddr, limit: Duration) -> Result<u32, HarnessError> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ask_file_size(
            addr,
            left.clamp(Duration::from_millis(100), Duration::from_secs(2)),
        ) {
            Ok(size) => return Ok(size),
            Err(error) if Instant::now() >= deadline => {
                return Err(HarnessError(format!(
                    "{addr} answered no File Size Request within {limit:?}: {error}"
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One File Size Request to `addr` over a new connection, every wait bounded by `timeout`.
fn ask_file_size(addr: SocketAddr, timeout: Duration) -> Result<u32, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut request = [0u8; Request::MAX_LEN];
    let len = Request::FileSize
        .emit(&mut request)
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.get(..len).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match ResponseHeader::parse(&answer).map_err(|e| e.to_string())? {
            Parsed::Complete {
                value: ResponseHeader::FileSize(size),
                ..
            } => return Ok(size),
            Parsed::Complete { value, .. } => return Err(format!("answered {value:?}")),
            Parsed::Incomplete => {}
        }
        match stream.read(&mut byte) {
            Ok(0) => return Err("closed before answering".into()),
            Ok(_) => answer.extend_from_slice(&byte),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// CPU time process `pid` has used, user and system, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, HarnessError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| HarnessError(format!("{path}: {e}")))?;
    // After the parenthesised command name (which may hold spaces): utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after the name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|field| field.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        // Times in /proc are in USER_HZ, which Linux fixes at 100 a second.
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => Err(HarnessError(format!(
            "{path}: no utime and stime in {stat:?}"
        ))),
    }
}

/// The share of one core process `pid` used while `work` ran, with `work`'s result.
pub fn cpu_share<T>(pid: u32, work: impl FnOnce() -> T) -> Result<(f64, T), HarnessError> {
    let (before, started) = (cpu_seconds(pid)?, Instant::now());
    let result = work();
    let used = cpu_seconds(pid)? - before;
    Ok((used / started.elapsed().as_secs_f64(), result))
}

/// Process `pid`'s peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64, HarnessError> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| HarnessError(format!("{path}: {e}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| HarnessError(format!("{path}: no VmHWM")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on loopback that answers one File Size Request with `size`, byte by byte.
    fn answering(size: u32) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1];
            stream.read_exact(&mut request).unwrap();
            assert_eq!(request, [0x07]);
            let mut answer = [0u8; 5];
            ResponseHeader::FileSize(size).emit(&mut answer).unwrap();
            for byte in answer {
                stream.write_all(&[byte]).unwrap();
            }
        });
        addr
    }

    #[test]
    fn a_server_is_ready_when_it_answers_a_file_size_request() {
        let addr = answering(300_000);
        assert_eq!(
            wait_until_answering(addr, Duration::from_secs(5)),
            Ok(300_000)
        );
    }

    #[test]
    fn a_port_that_only_accepts_is_not_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let error = wait_until_answering(addr, Duration::from_millis(300)).unwrap_err();
        assert!(error.0.contains("answered no File Size Request"), "{error}");
        drop(listener);
    }

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let pid = std::process::id();
        let (share, spun) = cpu_share(pid, || {
            // Spin until /proc shows CPU time used (ticks are 10 ms), or give up after 10 s.
            let (start, started) = (cpu_seconds(pid).unwrap(), Instant::now());
            while cpu_seconds(pid).unwrap() < start + 0.05 && started.elapsed().as_secs() < 10 {}
            cpu_seconds(pid).unwrap() - start
        })
        .unwrap();
        assert!(
            spun >= 0.05,
            "no CPU time seen in /proc after spinning: {spun}"
        );
        assert!(share > 0.0, "{share}");
        assert!(peak_rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(u32::MAX).is_err());
        assert!(peak_rss_kib(u32::MAX).is_err());
    }
}
