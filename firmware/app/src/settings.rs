//! The settings fixed at build time (see `build.rs`): served file, held blocks, peers, address.

use p2p_core::Digest;
use p2p_core::wire::PeerAddr;

include!(concat!(env!("OUT_DIR"), "/settings.rs"));

/// Separate held ranges the firmware can serve; `build.rs` checks `P2P_BLOCKS` against it.
pub const MAX_HELD_RANGES: usize = 16;
