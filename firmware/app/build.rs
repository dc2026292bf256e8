//! Build-time settings of the firmware, checked here so a bad one fails the build with a clear
//! message instead of the board at run time:
//!
//! - `P2P_FILE`: the file to serve, placed in flash (default: the built-in sample), with the
//!   digest of each of its blocks (its manifest), computed here.
//! - `P2P_MANIFEST`: a manifest digest (64 hex digits, from `host-sim --print-manifest`): the
//!   board is then a filling node, with no file built in: it fetches the file from
//!   `P2P_PEERS` (and the peers they list), verifies every block and keeps it in its storage.
//! - `P2P_BLOCKS`: the blocks held, e.g. `0-99,200-299` (default: all).
//! - `P2P_PEERS`: the peer list, e.g. `10.0.0.3:8888,10.0.0.4` (default: none).
//! - `P2P_IP`: `dhcp` (default: DHCP, falling back to an address derived from the MAC) or a
//!   static `ADDR/PREFIX`; `P2P_GATEWAY`: a static gateway.
//! - `P2P_BENCH_SHA256`: benchmark only: at start-up, hash the served file's first blocks
//!   and log how long each took by the board's clock (under QEMU with `-icount`, a count of
//!   instructions), then serve as usual.
//! - `P2P_TEST_PANIC`: test only: panic right after start-up, so the tests see the panic path
//!   (message logged, QEMU exits with a failure code).
//!
//! The benchmark's raw-TCP anchor is not a setting but the cargo feature `bench-raw-tcp`.

use p2p_core::Digest;
use p2p_core::geometry::Geometry;
use p2p_core::store::check_held;
use p2p_core::{BlockRanges, DEFAULT_PORT};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

/// The firmware's capacity for held ranges; must match `config::MAX_HELD_RANGES`.
const MAX_HELD_RANGES: usize = 16;
const MAX_PEERS: usize = 16;

fn main() {
    if let Err(message) = generate() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn setting(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn generate() -> Result<(), String> {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let fill_manifest = match setting("P2P_MANIFEST") {
        Some(text) => {
            Some(Digest::from_hex(text.trim()).map_err(|e| format!("P2P_MANIFEST={text}: {e}"))?)
        }
        None => None,
    };
    if fill_manifest.is_some() && (setting("P2P_FILE").is_some() || setting("P2P_BLOCKS").is_some())
    {
        return Err(
            "P2P_MANIFEST builds a filling node, which starts with no file: leave \
                    P2P_FILE and P2P_BLOCKS unset"
                .into(),
        );
    }
    let file = match setting("P2P_FILE") {
        Some(path) => PathBuf::from(path),
        None => crate_dir.join("../../assets/sample.txt"),
    };
    let file = file
        .canonicalize()
        .map_err(|e| format!("P2P_FILE {}: {e}", file.display()))?;
    println!("cargo:rerun-if-changed={}", file.display());
    let size = std::fs::metadata(&file)
        .map_err(|e| format!("P2P_FILE {}: {e}", file.display()))?
        .len();
    let size = u32::try_from(size)
        .map_err(|_| format!("P2P_FILE {} is over 4 GiB - 1 bytes", file.display()))?;

    let held = match setting("P2P_BLOCKS") {
        Some(text) => {
            let held: BlockRanges<MAX_HELD_RANGES> = text
                .parse()
                .map_err(|e| format!("P2P_BLOCKS={text}: {e}"))?;
            check_held(size, held.as_slice()).map_err(|e| format!("P2P_BLOCKS={text}: {e}"))?;
            held.to_string()
        }
        None => String::new(),
    };

    let mut peers = Vec::new();
    for item in setting("P2P_PEERS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let addr = match item.parse::<SocketAddrV4>() {
            Ok(addr) => addr,
            Err(_) => SocketAddrV4::new(
                item.parse::<Ipv4Addr>()
                    .map_err(|_| format!("P2P_PEERS: {item} is not IPv4[:PORT]"))?,
                DEFAULT_PORT,
            ),
        };
        peers.push(format!(
            "PeerAddr::new({:?}, {})",
            addr.ip().octets(),
            addr.port()
        ));
    }
    if peers.len() > MAX_PEERS {
        return Err(format!("P2P_PEERS: at most {MAX_PEERS} peers"));
    }

    let static_ip = match setting("P2P_IP").as_deref() {
        None | Some("dhcp") => "None".to_string(),
        Some(text) => {
            let (addr, prefix) = text
                .split_once('/')
                .ok_or(format!("P2P_IP={text}: expected dhcp or ADDR/PREFIX"))?;
            let addr: Ipv4Addr = addr
                .parse()
                .map_err(|_| format!("P2P_IP={text}: bad address"))?;
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or(format!("P2P_IP={text}: bad prefix"))?;
            format!("Some(({:?}, {prefix}))", addr.octets())
        }
    };
    let gateway = match setting("P2P_GATEWAY") {
        None => "None".to_string(),
        Some(text) => {
            let addr: Ipv4Addr = text
                .parse()
                .map_err(|_| format!("P2P_GATEWAY={text}: bad address"))?;
            format!("Some({:?})", addr.octets())
        }
    };

    if setting("P2P_BENCH_RAW_TCP").is_some() {
        return Err("P2P_BENCH_RAW_TCP is gone: build with `--features bench-raw-tcp`".into());
    }
    if fill_manifest.is_some() && std::env::var_os("CARGO_FEATURE_BENCH_RAW_TCP").is_some() {
        return Err(
            "the bench-raw-tcp feature serves a built-in file: leave P2P_MANIFEST unset".into(),
        );
    }
    let bench_sha256 = setting("P2P_BENCH_SHA256").is_some();
    let test_panic = setting("P2P_TEST_PANIC").is_some();

    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    // A filling node builds in no file (and so no digests).
    let data = match fill_manifest {
        Some(_) => Vec::new(),
        None => std::fs::read(&file).map_err(|e| format!("P2P_FILE {}: {e}", file.display()))?,
    };
    let size = if fill_manifest.is_some() { 0 } else { size };
    std::fs::write(out.join("served.bin"), &data).map_err(|e| e.to_string())?;
    let geometry = Geometry::new(size);
    let digests: Vec<String> = data
        .chunks(geometry.block_size() as usize)
        .map(|block| format!("Digest({:?})", Digest::of(block).0))
        .collect();
    let fill_manifest = match fill_manifest {
        Some(digest) => format!("Some(Digest({:?}))", digest.0),
        None => "None".into(),
    };
    let generated = format!(
        "/// The served file ({size} bytes, {} blocks of {}), in flash under its own symbol so the\n\
         /// footprint measurement can leave it out.\n\
         pub static FILE_DATA: [u8; {size}] = *include_bytes!(concat!(env!(\"OUT_DIR\"), \"/served.bin\"));\n\
         pub static FILE: &[u8] = &FILE_DATA;\n\
         /// The SHA-256 of each block of the file, in order (its manifest less the size), under\n\
         /// its own symbol too: it grows with the file.\n\
         pub static DIGESTS: [Digest; {digest_count}] = [{digests}];\n\
         /// With `P2P_MANIFEST`: the manifest digest of the file this filling node fetches.\n\
         pub const FILL_MANIFEST: Option<Digest> = {fill_manifest};\n\
         /// Blocks held, checked at build time; empty means all.\n\
         pub const HELD: &str = {held:?};\n\
         pub const PEERS: &[PeerAddr] = &[{}];\n\
         /// A static address and prefix, or `None` for DHCP with a fallback.\n\
         pub const STATIC_IP: Option<([u8; 4], u8)> = {static_ip};\n\
         pub const GATEWAY: Option<[u8; 4]> = {gateway};\n\
         /// Benchmark only: time the SHA-256 of the file's first blocks at start-up.\n\
         pub const BENCH_SHA256: bool = {bench_sha256};\n\
         /// Test only: panic right after start-up.\n\
         pub const TEST_PANIC: bool = {test_panic};\n",
        geometry.block_count(),
        geometry.block_size(),
        peers.join(", "),
        digest_count = digests.len(),
        digests = digests.join(", "),
    );
    std::fs::write(out.join("settings.rs"), generated).map_err(|e| e.to_string())
}
