//! Helpers for the end-to-end tests: test networks that skip (or, under CI, fail) where they
//! cannot be made, the project's binaries, and the protocol client: p2p-fetch's own
//! `Connection` over kernel TCP.

pub mod conformance;

use p2p_core::client::ClientLimits;
use p2p_core::wire::Request;
pub use p2p_fetch::connection::{Answer, Connection, PeerError};
pub use p2p_testnet::{TestNet, harness};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A test network with `taps` TAP devices; `None` (the test should return) where one cannot be
/// made here, after saying why. Under CI that is a failure instead. These tests talk to the
/// network from their own threads, which can join a namespace only as root (tests/rootless.rs
/// covers the network without root).
pub fn test_net(taps: usize) -> Option<TestNet> {
    let made = if !p2p_testnet::is_root() {
        Err(p2p_testnet::Unavailable(
            "the end-to-end tests need root: their threads join the test network".into(),
        ))
    } else {
        TestNet::new(taps)
    };
    match made {
        Ok(net) => Some(net),
        Err(reason) if std::env::var_os("CI").is_none() => {
            p2p_testnet::report_skip(&format!("no test network here: {reason}"));
            None
        }
        Err(reason) => panic!("CI is set, and the end-to-end tests need a test network: {reason}"),
    }
}

/// A binary of this workspace, built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as \
         `cargo xtask test` does)",
        path.display()
    );
    path
}

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("p2p-test-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }

    /// Writes `len` bytes of a recognisable pattern to `name`; returns path and bytes.
    pub fn file(&self, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let path = self.0.join(name);
        std::fs::write(&path, &data).expect("write test file");
        (path, data)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts host-sim on TAP `tap` of `net` as 10.0.0.(tap + 2) with `extra` arguments, and
/// waits until it answers a File Size Request. Returns its process index in `net` and address.
pub fn start_host_sim(net: &mut TestNet, tap: usize, extra: &[&str]) -> (usize, SocketAddr) {
    let mut command = net.host_sim(&binary("host-sim"), tap);
    command.args(extra);
    let addr = harness::host_sim_addr(tap);
    let (index, _) = net
        .start_server(&mut command, addr, Duration::from_secs(20))
        .expect("start host-sim");
    (index, addr)
}

/// Starts a filling host-sim on TAP `tap` (10.0.0.(tap + 2)) for the file whose manifest
/// digest is `manifest`, keeping it in `store`, fetching from `sources`, with its log (info
/// level) written to `log`. It listens only once its manifest is verified, so this does not wait.
pub fn start_filling_node(
    net: &mut TestNet,
    tap: usize,
    manifest: &str,
    store: &std::path::Path,
    sources: &[&str],
    log: &std::path::Path,
) -> usize {
    let mut command = net.host_sim(&binary("host-sim"), tap);
    command
        .args(["--manifest", manifest])
        .arg("--store")
        .arg(store)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).expect("log file"));
    for source in sources {
        command.args(["--fetch-from", source]);
    }
    net.spawn(&mut command).expect("start host-sim")
}

/// The manifest digest host-sim prints for `file` (the built-in sample for `None`).
pub fn manifest_of(file: Option<&std::path::Path>) -> String {
    let mut command = Command::new(binary("host-sim"));
    if let Some(file) = file {
        command.arg("--file").arg(file);
    }
    let output = command
        .arg("--print-manifest")
        .output()
        .expect("run host-sim");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("hex")
        .trim()
        .to_string()
}

/// Waits until `log` has a line for which `wanted` holds; that line, or `None` after `limit`.
pub fn wait_for_log(
    log: &std::path::Path,
    limit: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| wanted(line)) {
            return Some(line.to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// CPU time process `pid` used while `work` ran, as a share of one core, with `work`'s result.
pub fn cpu_share<T>(pid: u32, work: impl FnOnce() -> T) -> (f64, T) {
    harness::cpu_share(pid, work).expect("CPU time from /proc")
}

/// The tests' protocol connection: p2p-fetch's, with room for long pipelines.
pub type Conn = Connection<256>;

/// Connects within 5 s; every later wait for an answer is bounded by 20 s.
pub fn connect(addr: SocketAddr) -> Result<Conn, PeerError> {
    let SocketAddr::V4(addr) = addr else {
        return Err(PeerError::Connect(std::io::Error::other("IPv4 only")));
    };
    let mut conn = Conn::open(addr, Duration::from_secs(5), ClientLimits::default())?;
    conn.set_stall_timeout(Duration::from_secs(20))?;
    Ok(conn)
}

/// As [`Connection::ask`], writing one byte at a time with a pause after each, so every byte reaches the
/// server in a TCP segment of its own.
pub fn ask_byte_by_byte(conn: &mut Conn, requests: &[Request]) -> Result<Vec<Answer>, PeerError> {
    for byte in conn.encode(requests)? {
        conn.stream_mut()
            .write_all(&[byte])
            .map_err(PeerError::Io)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.gather(requests.len(), None)
}

/// Whether the server has closed the connection (EOF within the read timeout).
pub fn closed_by_server(conn: &mut Conn) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.stream_mut().read(&mut byte), Ok(0) | Err(_))
}

/// A build of the QEMU board's firmware.
#[derive(Debug, Clone, Copy)]
pub enum Firmware {
    /// Serves the whole sample, no peers.
    Default,
    /// Holds blocks 0-99 of the sample and lists 10.0.0.3 and 10.0.0.4 (`cargo xtask firmware
    /// build` makes it with P2P_BLOCKS and P2P_PEERS).
    Swarm,
    /// Panics right after start-up (built with P2P_TEST_PANIC).
    Panic,
    /// A filling node for the sample, fetching from 10.0.0.2 and 10.0.0.3 (built with
    /// P2P_MANIFEST and P2P_PEERS).
    Filling,
}

impl Firmware {
    fn elf(self) -> PathBuf {
        let firmware = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firmware/target");
        let dir = match self {
            Self::Default => firmware,
            Self::Swarm => firmware.join("swarm"),
            Self::Panic => firmware.join("panic"),
            Self::Filling => firmware.join("filling"),
        };
        dir.join("thumbv7em-none-eabihf/release/mps2-an386")
    }

    /// The messages of a defmt log this build wrote, decoded with its ELF's format table.
    pub fn decode_log(self, log: &std::path::Path) -> Vec<String> {
        let elf = std::fs::read(self.elf()).expect("firmware ELF");
        let table = defmt_decoder::Table::parse(&elf)
            .expect("defmt table")
            .expect("the ELF has a .defmt section");
        let mut decoder = table.new_stream_decoder();
        decoder.received(&std::fs::read(log).expect("board log"));
        let mut messages = Vec::new();
        loop {
            match decoder.decode() {
                Ok(frame) => messages.push(frame.display_message().to_string()),
                Err(defmt_decoder::DecodeError::UnexpectedEof) => return messages,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    panic!("malformed defmt log after {messages:?}")
                }
            }
        }
    }
}

/// Whether QEMU boards can run here; `false` (the test should return) after saying why, and a
/// failure under CI.
pub fn qemu_available(firmware: Firmware) -> bool {
    let missing = if Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("qemu-system-arm is not installed (apt-get install qemu-system-arm)".to_string())
    } else if !firmware.elf().is_file() {
        Some(format!(
            "{} is not built (cargo xtask firmware build)",
            firmware.elf().display()
        ))
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("CI").is_none() => {
            p2p_testnet::report_skip(&reason);
            false
        }
        Some(reason) => panic!("CI is set, and the board tests need QEMU: {reason}"),
    }
}

/// Boots the QEMU board on TAP `tap` of `net` with MAC 52:54:00:00:00:`mac_byte`, so it takes
/// 10.0.0.`mac_byte` when DHCP gets no answer, and waits until it answers. Its defmt log goes
/// to `log` ([`Firmware::decode_log`] reads it).
pub fn start_board(
    net: &mut TestNet,
    tap: usize,
    mac_byte: u8,
    firmware: Firmware,
    log: &std::path::Path,
) -> (usize, SocketAddr) {
    let mut command = board_command(net, tap, mac_byte, firmware, log, None);
    let addr = harness::board_addr(mac_byte);
    let (index, _) = net
        .start_server(&mut command, addr, Duration::from_secs(30))
        .expect("boot the board");
    (index, addr)
}

/// Boots the QEMU board as [`start_board`] does, without waiting for it; returns its index in
/// `net`.
pub fn boot_board(
    net: &mut TestNet,
    tap: usize,
    mac_byte: u8,
    firmware: Firmware,
    log: &std::path::Path,
) -> usize {
    boot_board_with_monitor(net, tap, mac_byte, firmware, log, None)
}

/// [`boot_board`] with QEMU's monitor on the Unix socket `monitor` (see
/// [`TestNet::qemu_board_with_monitor`]).
pub fn boot_board_with_monitor(
    net: &mut TestNet,
    tap: usize,
    mac_byte: u8,
    firmware: Firmware,
    log: &std::path::Path,
    monitor: Option<&std::path::Path>,
) -> usize {
    let mut command = board_command(net, tap, mac_byte, firmware, log, monitor);
    net.spawn(&mut command).expect("start qemu")
}

fn board_command(
    net: &TestNet,
    tap: usize,
    mac_byte: u8,
    firmware: Firmware,
    log: &std::path::Path,
    monitor: Option<&std::path::Path>,
) -> Command {
    let log_file = std::fs::File::create(log).expect("board log file");
    let mut command = net.qemu_board_with_monitor(tap, mac_byte, &firmware.elf(), monitor);
    command.stdout(log_file);
    command
}

/// Waits until `addr` answers a File Size Request (not just accepts: QEMU's user networking
/// accepts before the guest listens).
pub fn wait_until_answering(net: &TestNet, addr: SocketAddr, limit: Duration) {
    net.wait_until_answering(addr, limit)
        .expect("the server is ready");
}

/// p2p-fetch run inside `net` against `host`, saving to `output`, with `extra` arguments.
pub fn p2p_fetch(net: &TestNet, host: &str, output: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = net.command(binary("p2p-fetch").to_str().expect("utf-8 path"));
    command.arg(host).arg("-o").arg(output).args(extra);
    command
}

/// Runs `command` (a p2p-fetch) to completion; panics with its stderr unless it succeeded and
/// saved exactly `expected` at `output`. Returns its stdout (the summary with `--json`).
pub fn fetch_exactly(command: &mut Command, output: &std::path::Path, expected: &[u8]) -> Vec<u8> {
    fetched_exactly(command.output().expect("run p2p-fetch"), output, expected)
}

/// What a finished p2p-fetch left (`result`, from its `Child`); panics with its stderr unless
/// it succeeded and saved exactly `expected` at `output`. Returns its stdout.
pub fn fetched_exactly(
    result: std::process::Output,
    output: &std::path::Path,
    expected: &[u8],
) -> Vec<u8> {
    assert!(
        result.status.success(),
        "p2p-fetch failed ({}): {}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let saved = std::fs::read(output).expect("the saved file");
    assert!(
        saved == expected,
        "the saved file is not byte-identical ({} bytes, expected {})",
        saved.len(),
        expected.len()
    );
    result.stdout
}

/// Waits until the p2p-fetch writing `output` has saved a progress record with at least one
/// block done, so a fault injected now lands mid-download; panics after 20 s.
pub fn wait_for_progress(output: &std::path::Path) {
    // The record: 8 bytes of magic, the file size, then one bit a block done.
    const HEADER: usize = 12;
    let mut record = output.as_os_str().to_owned();
    record.push(".part.blocks");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let saved = std::fs::read(&record).unwrap_or_default();
        if saved.iter().skip(HEADER).any(|&bits| bits != 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no block recorded as done in {} after 20 s",
            std::path::Path::new(&record).display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The built-in sample file every server serves by default.
pub const SAMPLE: &[u8] = include_bytes!("../../assets/sample.txt");

/// A Block Request for every block of a file of `len` bytes (at least one byte).
pub fn whole_file(len: usize) -> Request {
    let count =
        p2p_core::Geometry::new(u32::try_from(len).expect("file under 4 GiB")).block_count();
    Request::Block {
        start: 0,
        end: u16::try_from(count - 1).expect("at most 65536 blocks"),
    }
}

/// `count` one-block requests spread over the sample (block `i * step % 293`), each followed by
/// `between`, and the answers they must get in order: a pipeline to send in one write.
pub fn pipelined_sample_blocks(
    count: u16,
    step: u16,
    between: (Request, Answer),
) -> (Vec<Request>, Vec<Answer>) {
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..count {
        let block = (i * step) % 293;
        requests.push(Request::Block {
            start: block,
            end: block,
        });
        expected.push(sample_block(block));
        requests.push(between.0);
        expected.push(between.1.clone());
    }
    (requests, expected)
}

/// The answer to a Block Request for block `block` of the sample (1 KiB blocks, the last short).
pub fn sample_block(block: u16) -> Answer {
    let start = usize::from(block) * 1024;
    Answer::Data(SAMPLE[start..(start + 1024).min(SAMPLE.len())].to_vec())
}

/// `clients` whole-file downloads of `data` from `addr` at once, each on a connection of its
/// own (call from inside the test network); asserts that every one was byte-identical.
pub fn download_concurrently(addr: SocketAddr, clients: usize, data: &std::sync::Arc<Vec<u8>>) {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let data = std::sync::Arc::clone(data);
            std::thread::spawn(move || {
                let mut conn = connect(addr).expect("connect");
                conn.set_file_size(u32::try_from(data.len()).expect("file under 4 GiB"));
                conn.ask(&[whole_file(data.len())]).expect("download")
                    == [Answer::Data(data.to_vec())]
            })
        })
        .collect();
    for thread in threads {
        assert!(
            thread.join().expect("client thread"),
            "a concurrent download was not byte-identical"
        );
    }
}
