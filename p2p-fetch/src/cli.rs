//! The command line.

use crate::exit::EXIT_CODES_HELP;
use clap::Parser;
use std::net::SocketAddrV4;
use std::path::PathBuf;

/// Download a file from a swarm of p2p-blocks peers, as fast as the peers allow, and
/// optionally seed it back.
///
/// Starts from HOST, follows the peer lists of its peers, and fetches blocks in parallel from
/// every peer that has the same file.
#[derive(Debug, Parser)]
#[command(name = "p2p-fetch", version, after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The first peer: a hostname or IPv4 address, optionally HOST:PORT.
    pub host: String,

    /// Port of HOST when it names none.
    #[arg(long, default_value_t = p2p_core::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Where to save the file (a partial download is kept beside it as PATH.part and
    /// PATH.part.blocks).
    #[arg(short, long, value_name = "PATH", default_value = "download.bin")]
    pub output: PathBuf,

    /// Resume a partial download of PATH, fetching only missing blocks; also download what
    /// is available when some blocks are held by no peer.
    #[arg(long = "continue")]
    pub resume: bool,

    /// Overwrite PATH if it exists, and discard an earlier partial download of it that is not
    /// resumed.
    #[arg(long)]
    pub force: bool,

    /// Expected SHA-256 of the file (64 hex digits), checked at the end.
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    pub sha256: Option<[u8; 32]>,

    /// The file's manifest digest (64 hex digits, as `host-sim --print-manifest` prints):
    /// every block is checked as it arrives against the manifest that hashes to it; a peer
    /// that sends a bad block is dropped and the block fetched from another. Without it, the
    /// first host's digests are used where it serves them.
    #[arg(long, value_name = "HEX", value_parser = parse_manifest)]
    pub manifest: Option<p2p_core::Digest>,

    /// Print one JSON summary on stdout (peers, their ranges, bytes from each, errors,
    /// duration, rate, sha256); the peer survey goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Print only errors.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail (skipped peer addresses).
    #[arg(short, long)]
    pub verbose: bool,

    /// Most peers to use, HOST included (1 to 1024).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_peers: u16,

    /// TCP connections to open to each peer (at most 256 in all: with many peers, fewer a
    /// peer, then fewer peers).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub connections_per_peer: u8,

    /// Seconds to wait to connect, or for a peer that stops sending, before giving up on it.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// After the download, keep serving the file to other peers (Ctrl-C stops).
    #[arg(long)]
    pub seed: bool,

    /// Where to serve with --seed.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:8888",
        requires = "seed"
    )]
    pub listen: SocketAddrV4,
}

fn parse_manifest(text: &str) -> Result<p2p_core::Digest, String> {
    p2p_core::Digest::from_hex(text.trim()).map_err(|error| error.to_string())
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, got {} characters",
            text.len()
        ));
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hex"))?;
    }
    Ok(digest)
}

/// Lower-case hex, as `sha256sum` prints.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn sha256_hex_round_trips() {
        let text = "00ff".repeat(16);
        assert_eq!(parse_sha256(&text).map(|digest| hex(&digest)), Ok(text));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }
}
