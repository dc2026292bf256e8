//! One entry of a Peer List Response.

use super::{WireError, put};
use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

/// A peer's IPv4 address and TCP port: 6 bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerAddr {
    /// IPv4 address octets, most significant first.
    pub ip: [u8; 4],
    /// TCP port.
    pub port: u16,
}

impl PeerAddr {
    /// Bytes of one entry on the wire: 4 of address, 2 of port.
    pub const WIRE_LEN: usize = 6;

    /// A peer at `ip`, port `port`.
    pub const fn new(ip: [u8; 4], port: u16) -> Self {
        Self { ip, port }
    }

    /// Parses the 6-byte entry; `None` if `input` is shorter.
    pub fn parse(input: &[u8]) -> Option<Self> {
        let bytes: [u8; 6] = input.get(..Self::WIRE_LEN)?.try_into().ok()?;
        let [a, b, c, d, hi, lo] = bytes;
        Some(Self::new([a, b, c, d], u16::from_be_bytes([hi, lo])))
    }

    /// Writes the 6-byte entry; returns the bytes written, or `BufferTooSmall`.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let [a, b, c, d] = self.ip;
        let [hi, lo] = self.port.to_be_bytes();
        put(out, &[a, b, c, d, hi, lo])
    }

    /// Whether this can be a peer at all: not 0.0.0.0, multicast, broadcast, nor port 0.
    pub fn is_usable(&self) -> bool {
        let ip = Ipv4Addr::from(self.ip);
        !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || self.port == 0)
    }
}

impl From<SocketAddrV4> for PeerAddr {
    fn from(addr: SocketAddrV4) -> Self {
        Self::new(addr.ip().octets(), addr.port())
    }
}

impl From<PeerAddr> for SocketAddrV4 {
    fn from(peer: PeerAddr) -> Self {
        SocketAddrV4::new(Ipv4Addr::from(peer.ip), peer.port)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddrV4::from(*self).fmt(f)
    }
}
