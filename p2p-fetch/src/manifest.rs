//! Block digests for the download: the manifest, fetched from peers and checked against
//! `--manifest`, or (without it) taken on the first host's word where it offers digests.

use crate::connection::{Connection, MAX_PIPELINE, PeerError};
use crate::discovery::{LIMITS, Swarm};
use crate::exit::{ExitCode, Failure};
use crate::log::Log;
use p2p_core::client::ClientEvent;
use p2p_core::manifest::manifest_digest;
use p2p_core::{Digest, Geometry, Request};
use std::net::SocketAddrV4;
use std::time::Duration;

/// Digests asked for in one Digest Request (1 KiB of answer).
const PART: u32 = 32;

/// The digest of every block, and how far they are trusted.
pub struct Manifest {
    pub digests: Vec<Digest>,
    /// Checked against `--manifest`; otherwise only the first host's word.
    pub verified: bool,
}

/// The manifest to check blocks against: with `expected`, the first peer's whose manifest
/// hashes to it (an error if none does); without, the first host's if it serves digests.
pub fn obtain(
    swarm: &Swarm,
    expected: Option<Digest>,
    timeout: Duration,
    log: &Log,
) -> Result<Option<Manifest>, Failure> {
    let Some(expected) = expected else {
        let Some(host) = swarm.peers.first() else {
            return Ok(None);
        };
        return Ok(match fetch_digests(host.addr, swarm.file_size, timeout) {
            Ok(digests) => {
                log.say(&format!(
                    "checking every block against the digests {} serves (not verified: no --manifest)",
                    host.addr
                ));
                Some(Manifest {
                    digests,
                    verified: false,
                })
            }
            Err(error) => {
                log.say(&format!(
                    "{}: no block digests ({error}); only the whole file can be checked (--sha256)",
                    host.addr
                ));
                None
            }
        });
    };
    let mut problems = Vec::new();
    for peer in &swarm.peers {
        match fetch_digests(peer.addr, swarm.file_size, timeout) {
            Ok(digests) if manifest_digest(swarm.file_size, &digests) == expected => {
                log.say(&format!(
                    "manifest verified (from {}): checking every block against it",
                    peer.addr
                ));
                return Ok(Some(Manifest {
                    digests,
                    verified: true,
                }));
            }
            Ok(_) => {
                log.warn(&format!(
                    "{}: its manifest does not match --manifest; not using its digests",
                    peer.addr
                ));
                problems.push(format!("{}: a different manifest", peer.addr));
            }
            Err(error) => problems.push(format!("{}: {error}", peer.addr)),
        }
    }
    Err(Failure::new(
        ExitCode::ChecksumMismatch,
        format!(
            "no peer serves the manifest {expected} for a {}-byte file ({}); nothing downloaded",
            swarm.file_size,
            problems.join("; ")
        ),
    ))
}

/// Every block digest `addr` serves for a file of `file_size` bytes, in order.
fn fetch_digests(
    addr: SocketAddrV4,
    file_size: u32,
    timeout: Duration,
) -> Result<Vec<Digest>, PeerError> {
    let count = Geometry::new(file_size).block_count();
    let mut connection: Connection = Connection::open(addr, timeout, LIMITS)?;
    connection.set_file_size(file_size);
    let mut digests = Vec::with_capacity(count as usize);
    let mut requested = 0;
    while digests.len() < count as usize {
        let mut batch = Vec::new();
        while requested < count && connection.outstanding() + batch.len() < MAX_PIPELINE {
            let end = (requested + PART).min(count) - 1;
            batch.push(Request::Digest {
                start: requested as u16,
                end: end as u16,
            });
            requested = end + 1;
        }
        if !batch.is_empty() {
            connection.send(&batch)?;
        }
        connection.receive(&mut |event, _| match event {
            Some(ClientEvent::Digest { digest, .. }) => {
                digests.push(digest);
                Ok(())
            }
            Some(ClientEvent::BlockFailure(reason)) => {
                Err(PeerError::SentError(crate::connection::printable(reason)))
            }
            _ => Ok(()),
        })?;
    }
    Ok(digests)
}
