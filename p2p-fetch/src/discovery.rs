//! Finding the swarm: ask the first host for its file size, blocks and peers, then each newly
//! found peer the same, level by level, up to `--max-peers`.

use crate::blockset::RangesText;
use crate::connection::{Answer, Connection, PeerError};
use crate::exit::{ExitCode, Failure};
use crate::log::Log;
use p2p_core::client::ClientLimits;
use p2p_core::wire::MAX_LIST_COUNT;
use p2p_core::{BlockRange, PeerAddr, Request};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The longest peer list accepted; a peer that sends more (up to the protocol's 32767) is
/// dropped before its entries are read.
pub const PEER_LIST_CAP: u16 = 1024;

/// Peers asked at once (one thread each).
const PARALLEL_SURVEYS: usize = 32;

/// Caps applied to what any peer may make us read.
pub const LIMITS: ClientLimits = ClientLimits {
    max_peers: PEER_LIST_CAP,
    max_ranges: MAX_LIST_COUNT,
};

/// A peer of the swarm: where it is and what it holds.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddrV4,
    pub ranges: Vec<BlockRange>,
}

/// What a peer told us and why it was not used.
#[derive(Debug, Clone)]
pub struct DroppedPeer {
    pub addr: SocketAddrV4,
    pub reason: String,
}

/// The swarm as found.
#[derive(Debug)]
pub struct Swarm {
    pub file_size: u32,
    /// The first host first, then the others in the order found.
    pub peers: Vec<Peer>,
    pub dropped: Vec<DroppedPeer>,
}

/// How far and how patiently to search.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub max_peers: usize,
    pub timeout: Duration,
    /// Our own listening address when seeding: never a peer of ourselves.
    pub own_address: Option<SocketAddrV4>,
}

/// One peer's answers to File Size, Block List and Peer List.
struct Answers {
    file_size: u32,
    ranges: Vec<BlockRange>,
    peers: Vec<PeerAddr>,
}

/// Surveys the swarm from `host`. Fails only when `host` itself cannot be used.
pub fn discover(host: SocketAddrV4, search: &Search, log: &Log) -> Result<Swarm, Failure> {
    let mut known: HashSet<SocketAddrV4> = HashSet::from([host]);
    let mut swarm = Swarm {
        file_size: 0,
        peers: Vec::new(),
        dropped: Vec::new(),
    };
    let mut level = vec![host];
    while !level.is_empty() {
        let answers: Vec<_> = level
            .chunks(PARALLEL_SURVEYS)
            .flat_map(|addresses| ask_all(addresses, search.timeout))
            .collect();
        let mut next = Vec::new();
        for (&addr, answer) in level.iter().zip(answers) {
            let answer = answer.and_then(|answer| {
                if addr != host {
                    check_size(swarm.file_size, answer.file_size)?;
                }
                Ok(answer)
            });
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) if addr == host => {
                    return Err(Failure::new(
                        ExitCode::Unreachable,
                        format!("{addr}: {error}"),
                    ));
                }
                Err(error) => {
                    log.warn(&format!("{addr}: {error}; not using this peer"));
                    swarm.dropped.push(DroppedPeer {
                        addr,
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            if addr == host {
                swarm.file_size = answer.file_size;
            }
            print_answers(addr, &answer, log);
            for listed in answer.peers {
                let listed_addr = SocketAddrV4::from(listed);
                match skip_reason(listed, &known, search) {
                    Some(reason) => {
                        log.detail(&format!("{addr} lists {listed_addr}: {reason}; skipped"))
                    }
                    None => {
                        known.insert(listed_addr);
                        next.push(listed_addr);
                    }
                }
            }
            swarm.peers.push(Peer {
                addr,
                ranges: answer.ranges,
            });
        }
        level = next;
    }
    Ok(swarm)
}

/// Why a listed address is not surveyed, or `None` when it is a new peer to ask.
fn skip_reason(listed: PeerAddr, known: &HashSet<SocketAddrV4>, search: &Search) -> Option<String> {
    let addr = SocketAddrV4::from(listed);
    if !listed.is_usable() {
        Some("cannot be a peer".to_string())
    } else if is_own(addr, search.own_address) {
        Some("that is us".to_string())
    } else if known.contains(&addr) {
        Some("already known".to_string())
    } else if known.len() >= search.max_peers {
        Some(format!("--max-peers {} reached", search.max_peers))
    } else {
        None
    }
}

fn print_answers(addr: SocketAddrV4, answers: &Answers, log: &Log) {
    let listed: Vec<String> = answers.peers.iter().map(ToString::to_string).collect();
    let peers = match listed.len() {
        0 => "no peers".to_string(),
        1 => format!("1 peer: {}", listed.join(", ")),
        count => format!("{count} peers: {}", listed.join(", ")),
    };
    log.say(&format!("{addr} lists {peers}"));
    log.say(&format!(
        "{addr} holds blocks {} of a {}-byte file",
        RangesText(&answers.ranges),
        answers.file_size
    ));
}

/// Whether `addr` is where we ourselves listen (a `0.0.0.0` listener is on every loopback
/// address too).
fn is_own(addr: SocketAddrV4, own: Option<SocketAddrV4>) -> bool {
    own.is_some_and(|own| {
        own.port() == addr.port()
            && (own.ip() == addr.ip()
                || (*own.ip() == Ipv4Addr::UNSPECIFIED && addr.ip().is_loopback()))
    })
}

fn check_size(expected: u32, got: u32) -> Result<(), PeerError> {
    if expected == got {
        Ok(())
    } else {
        Err(PeerError::SizeMismatch { expected, got })
    }
}

/// Asks every peer of `addresses` at once, each on its own thread.
fn ask_all(addresses: &[SocketAddrV4], timeout: Duration) -> Vec<Result<Answers, PeerError>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = addresses
            .iter()
            .map(|&addr| scope.spawn(move || ask(addr, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or(Err(PeerError::Closed {
                    mid_response: false,
                }))
            })
            .collect()
    })
}

/// Asks one peer everything at once, pipelined (File Size first: the session checks the
/// Block List against it); the whole exchange must end within twice `timeout`, so a peer
/// that trickles bytes cannot hold discovery up.
fn ask(addr: SocketAddrV4, timeout: Duration) -> Result<Answers, PeerError> {
    let mut connection: Connection = Connection::open(addr, timeout, LIMITS)?;
    let requests = [Request::FileSize, Request::BlockList, Request::PeerList];
    connection.send(&requests)?;
    let answers = connection.gather(requests.len(), Some(Instant::now() + timeout * 2))?;
    match <[Answer; 3]>::try_from(answers) {
        Ok(
            [
                Answer::Size(file_size),
                Answer::Ranges(ranges),
                Answer::Peers(peers),
            ],
        ) => Ok(Answers {
            file_size,
            ranges,
            peers,
        }),
        Err(answers) => match answers.into_iter().last() {
            Some(Answer::Error(reason)) => Err(PeerError::SentError(reason)),
            _ => Err(PeerError::Closed { mid_response: true }),
        },
        // The session checks that each answer's type answers its request.
        Ok(_) => Err(PeerError::Closed { mid_response: true }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_address_is_recognised() {
        let own = Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8888));
        assert!(is_own(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8888), own));
        assert!(!is_own(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8889), own));
        assert!(!is_own(
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 8888),
            own
        ));
        assert!(!is_own(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8888), None));
    }
}
