//! p2p-fetch: download a file from a swarm of p2p-blocks peers and optionally seed it back.
//! All framing goes through p2p-core's client session; this crate adds discovery, the
//! parallel scheduler, the resumable part file and the command line.

pub mod blockset;
pub mod cli;
pub mod connection;
pub mod control;
pub mod discovery;
pub mod download;
pub mod exit;
pub mod fetch;
pub mod log;
pub mod manifest;
pub mod pace;
pub mod part_file;
pub mod progress;
pub mod scheduler;
pub mod seed;
pub mod target;
