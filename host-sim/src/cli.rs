//! host-sim's command line. Scripts and docs depend on these names.

use clap::Parser;
use p2p_core::wire::PeerAddr;
use p2p_core::{DEFAULT_PORT, Digest};
use p2p_serve::HeldRanges;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

/// Most connections a host-sim serves at once.
pub const MAX_CONNECTIONS: usize = 64;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serve a file with the p2p-blocks board server on a Linux TAP interface",
    long_about = "Runs the same p2p-core server the firmware runs, over smoltcp on a TAP \
                  interface, so it looks like a board on the LAN. With --listen it serves \
                  through the kernel's TCP instead (no TAP needed)."
)]
pub struct Args {
    /// TAP device to attach to (it must exist; `cargo xtask net up` makes a test network).
    #[arg(long, default_value = "tap0")]
    pub tap: String,
    /// Address and prefix of the simulated board.
    #[arg(long, default_value = "10.0.0.2/24", value_parser = parse_cidr)]
    pub ip: (Ipv4Addr, u8),
    /// Default gateway of the simulated board.
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// MAC address (default: 02:00 followed by the IPv4 address).
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<[u8; 6]>,
    /// IP MTU of the link; the TAP device's own MTU must be at least this (e.g. `ip link set
    /// tap0 mtu 9000`). Above 1500, one system call moves more data: see BENCHMARKS.md.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(576..=9000))]
    pub mtu: u16,
    /// TCP port to serve on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// File to serve (default: the built-in 300000-byte sample).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print the manifest digest of the file (64 hex digits: what `--manifest` takes) and exit.
    #[arg(long)]
    pub print_manifest: bool,
    /// Serve only these blocks, e.g. 0-99,200-299 (default: all).
    #[arg(long, value_parser = parse_blocks)]
    pub blocks: Option<HeldRanges>,
    /// Be a filling node for the file with this manifest digest (64 hex digits, from
    /// `--print-manifest`): fetch the blocks missing from --store from --fetch-from peers (and
    /// the peers they list), verify each, and serve what is verified. Needs --store.
    #[arg(long, value_parser = parse_digest, requires = "store", conflicts_with_all = ["file", "blocks", "listen", "print_manifest"])]
    pub manifest: Option<Digest>,
    /// The filling node's store: a file created empty if missing, resumed if present (it
    /// holds the manifest, a record of verified blocks and the blocks).
    #[arg(long, requires = "manifest")]
    pub store: Option<PathBuf>,
    /// A peer to fetch from, IP[:PORT]; repeat for more. Also listed in the peer list.
    #[arg(long = "fetch-from", value_parser = parse_peer, requires = "manifest")]
    pub fetch_from: Vec<PeerAddr>,
    /// A peer for the peer list, IP[:PORT]; repeat for more.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<PeerAddr>,
    /// Connections served at once; more are told the server is busy.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=MAX_CONNECTIONS as i64))]
    pub max_connections: u16,
    /// Close connections that make no progress for this many seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Write every frame to this pcap file (for Wireshark).
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Drop this percentage of frames, both directions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_chance: u8,
    /// Corrupt this percentage of frames, both directions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub corrupt_chance: u8,
    /// Delay every frame this many milliseconds, both directions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub delay_ms: u64,
    /// Hold back this percentage of frames, both directions, so later frames overtake them.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub reorder_chance: u8,
    /// Shape what host-sim sends to this many kbit/s, like a slow board's link (frames are
    /// delayed, not dropped).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// TCP congestion control of the served sockets (smoltcp's): cubic, reno or none.
    #[arg(long, default_value = "cubic", value_parser = ["cubic", "reno", "none"])]
    pub congestion_control: String,
    /// Serve through the kernel's TCP on ADDR:PORT instead of a TAP (same session code).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Benchmark anchor: on each connection send this many bytes of raw TCP instead of the
    /// protocol, through the same TAP, smoltcp configuration and buffers.
    #[arg(long, hide = true)]
    pub raw_tcp_bytes: Option<u64>,
    /// More log output (-v: every request, -vv: everything).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Args {
    pub fn mac(&self) -> [u8; 6] {
        self.mac.unwrap_or_else(|| {
            let [a, b, c, d] = self.ip.0.octets();
            [0x02, 0x00, a, b, c, d]
        })
    }
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or("expected ADDR/PREFIX, e.g. 10.0.0.2/24")?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or(format!("{prefix} is not a prefix length from 0 to 32"))?;
    Ok((addr, prefix))
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "expected a MAC like 02:00:0a:00:00:02".to_string())?;
    let mac: [u8; 6] = bytes
        .try_into()
        .map_err(|_| "expected six bytes, like 02:00:0a:00:00:02".to_string())?;
    if mac[0] & 1 == 1 {
        return Err("a multicast MAC (first byte odd) cannot be an interface's address".into());
    }
    Ok(mac)
}

fn parse_digest(text: &str) -> Result<Digest, String> {
    Digest::from_hex(text).map_err(|error| error.to_string())
}

fn parse_blocks(text: &str) -> Result<HeldRanges, String> {
    text.parse().map_err(|error| format!("{error}"))
}

fn parse_peer(text: &str) -> Result<PeerAddr, String> {
    let addr = match text.parse::<SocketAddrV4>() {
        Ok(addr) => addr,
        Err(_) => SocketAddrV4::new(
            text.parse()
                .map_err(|_| format!("{text} is not IPv4[:PORT], e.g. 10.0.0.3:8888"))?,
            DEFAULT_PORT,
        ),
    };
    let peer = PeerAddr::from(addr);
    if !peer.is_usable() {
        return Err(format!(
            "{text} cannot be a peer (0.0.0.0, multicast, broadcast or port 0)"
        ));
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_values_are_checked() {
        assert_eq!(
            parse_cidr("10.0.0.7/16"),
            Ok((Ipv4Addr::new(10, 0, 0, 7), 16))
        );
        assert!(parse_cidr("10.0.0.7").is_err());
        assert!(parse_cidr("10.0.0.7/33").is_err());
        assert_eq!(parse_mac("02:00:0a:00:00:02"), Ok([2, 0, 10, 0, 0, 2]));
        assert!(parse_mac("01:00:0a:00:00:02").is_err());
        assert!(parse_mac("02:00:0a:00:00").is_err());
        assert_eq!(
            parse_peer("10.0.0.3"),
            Ok(PeerAddr::new([10, 0, 0, 3], 8888))
        );
        assert_eq!(
            parse_peer("10.0.0.3:9000"),
            Ok(PeerAddr::new([10, 0, 0, 3], 9000))
        );
        assert!(parse_peer("0.0.0.0").is_err());
        assert!(parse_peer("10.0.0.3:0").is_err());
        assert!(
            parse_blocks("9-3")
                .unwrap_err()
                .contains("starts after it ends")
        );
    }
}
