//! The allocation-free protocol engine of p2p-blocks.
//!
//! Everything here is sans-IO: the caller feeds received bytes and the current time in, and
//! polls bytes out. Nothing reads a clock or a socket, nothing allocates, and every capacity is
//! in a type. The same code runs in firmware, in `host-sim` and behind `p2p-fetch`.
//!
//! - [`wire`]: the twelve messages, their typed representations, parse and emit.
//! - [`geometry`]: the block size rule and byte spans of block ranges.
//! - [`ranges`]: sorted, coalesced sets of inclusive block ranges and their text form.
//! - [`manifest`]: block and manifest digests, the trust root of a fetching node.
//! - [`store`]: where served bytes come from.
//! - [`flash_store`]: a writable store in any `embedded-storage` NOR flash, that resumes after
//!   a reset; [`ram_flash`] is such a flash in RAM, [`partition`] a window of a larger one.
//! - [`bitmap`]: sets of blocks one bit each.
//! - [`super_seed`]: a seed lists each client only blocks it has not served yet.
//! - [`server`]: the server session, one per connection.
//! - [`client`]: the client session, one per connection.
//! - [`fetch`]: the fetcher, filling a [`flash_store::FlashStore`] from many peers at once.
//! - `driver` (feature `smoltcp`): serving a pool of smoltcp TCP sockets.
//! - `fetch_driver` (feature `smoltcp`): the fetcher's connections as smoltcp client sockets.
//! - `egress` (feature `smoltcp`): a node's own requests and ACKs ahead of the data it serves,
//!   and its served connections in turn, when its link is what frames wait for.
//! - `neighbors` (feature `smoltcp`): ARP beyond smoltcp's own: asking for a peer at once,
//!   and learning the address of every known peer whose ARP request is overheard.
//! - `io` (features `embedded-io`, `embedded-io-async`): serving and requesting over any
//!   `embedded-io` or `embedded-io-async` stream (embassy-net, W5500 sockets, std streams).
//!
//! `PROTOCOL.md` at the repository root is the specification this crate implements.
#![no_std]
#![warn(missing_docs)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod bitmap;
pub mod client;
#[cfg(feature = "smoltcp")]
pub mod driver;
#[cfg(feature = "smoltcp")]
pub mod egress;
pub mod fetch;
#[cfg(feature = "smoltcp")]
pub mod fetch_driver;
pub mod flash_store;
pub mod geometry;
#[cfg(feature = "embedded-io")]
pub mod io;
pub mod manifest;
#[cfg(feature = "smoltcp")]
pub mod neighbors;
pub mod partition;
pub mod ram_flash;
pub mod ranges;
pub mod server;
pub mod store;
pub mod super_seed;
pub mod time;
pub mod wire;

/// The TCP port the protocol is served on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 8888;

pub use geometry::Geometry;
pub use manifest::Digest;
pub use ranges::{BlockRange, BlockRanges};
pub use store::{BlockStore, SliceStore, StoreError};
pub use time::{Duration, Instant};
pub use wire::{MessageType, PeerAddr, Request};
