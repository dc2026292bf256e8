//! `FLEET_WIRE`: what the fleet's frames carried, by kind, counted as the switch takes them
//! from the uplinks. At these rates both bounds of t_min are tight, so every byte that is not
//! file data costs time: this is the table that shows where the wire goes (Ethernet, IP and
//! TCP headers, ACKs, requests, connection set-up) without a packet capture.

use crate::switch::wire_bytes;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

/// What a frame is, from its headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// ARP (and anything that is not IPv4 TCP).
    Other,
    /// A TCP segment with SYN, FIN or RST set: connections opening and closing.
    Control,
    /// A TCP segment with no payload: an ACK or a window update.
    PureAck,
    /// A TCP segment with up to [`SMALL_PAYLOAD`] bytes of payload: requests, and short
    /// answers such as a File Size Response or a refusal.
    Small,
    /// Any longer TCP segment: block data, digests, Block and Peer Lists.
    Data,
}

impl FrameKind {
    const ALL: [FrameKind; 5] = [
        FrameKind::Other,
        FrameKind::Control,
        FrameKind::PureAck,
        FrameKind::Small,
        FrameKind::Data,
    ];

    fn label(self) -> &'static str {
        match self {
            FrameKind::Other => "ARP and other",
            FrameKind::Control => "SYN, FIN, RST",
            FrameKind::PureAck => "ACK only",
            FrameKind::Small => "requests (<= 64 B)",
            FrameKind::Data => "data segments",
        }
    }
}

/// The longest payload counted as a request rather than data: a Block Request is 5 bytes,
/// a few pipelined together stay well under it.
pub const SMALL_PAYLOAD: usize = 64;

/// The kind of `frame` (an Ethernet frame without its FCS) and its TCP payload length.
pub fn classify(frame: &[u8]) -> (FrameKind, usize) {
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return (FrameKind::Other, 0);
    };
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return (FrameKind::Other, 0);
    }
    let Ok(ip) = Ipv4Packet::new_checked(ethernet.payload()) else {
        return (FrameKind::Other, 0);
    };
    if ip.next_header() != IpProtocol::Tcp {
        return (FrameKind::Other, 0);
    }
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return (FrameKind::Other, 0);
    };
    let payload = tcp.payload().len();
    let kind = if tcp.syn() || tcp.fin() || tcp.rst() {
        FrameKind::Control
    } else if payload == 0 {
        FrameKind::PureAck
    } else if payload <= SMALL_PAYLOAD {
        FrameKind::Small
    } else {
        FrameKind::Data
    };
    (kind, payload)
}

/// Frames and wire bytes of each kind, and the TCP payload of data segments.
#[derive(Debug, Default, Clone)]
pub struct WireCensus {
    frames: [u64; 5],
    /// On the wire, as the switch counts them ([`wire_bytes`]).
    bytes: [u64; 5],
    data_payload: u64,
}

impl WireCensus {
    pub fn count(&mut self, frame: &[u8]) {
        let (kind, payload) = classify(frame);
        let index = kind as usize;
        if let (Some(frames), Some(bytes)) = (self.frames.get_mut(index), self.bytes.get_mut(index))
        {
            *frames += 1;
            *bytes += wire_bytes(frame.len());
        }
        if kind == FrameKind::Data {
            self.data_payload += payload as u64;
        }
    }

    /// The table, a line a kind, then the payload of data segments as a share of the wire.
    pub fn report(&self) -> String {
        let total: u64 = self.bytes.iter().sum();
        let share = |bytes: u64| bytes as f64 * 100.0 / total.max(1) as f64;
        let mut out = String::new();
        for kind in FrameKind::ALL {
            let index = kind as usize;
            let frames = self.frames.get(index).copied().unwrap_or(0);
            let bytes = self.bytes.get(index).copied().unwrap_or(0);
            out.push_str(&format!(
                "{:<20} {frames:>9} frames {bytes:>11} B {:>5.1} %\n",
                kind.label(),
                share(bytes)
            ));
        }
        out.push_str(&format!(
            "{:<20} {:>9}        {:>11} B {:>5.1} % (file data, digests and lists)\n",
            "data payload",
            "",
            self.data_payload,
            share(self.data_payload)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `flags` (byte 13 of the TCP header) and `payload`
    /// bytes of payload.
    fn tcp_frame(flags: u8, payload: usize) -> Vec<u8> {
        let ip_len = 20 + 20 + payload;
        let mut frame = vec![0u8; 14 + ip_len];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut frame[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        let tcp = &mut ip[20..];
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        frame
    }

    #[test]
    fn frames_are_told_apart_by_their_headers() {
        let arp = [&[0xFF; 6][..], &[2; 6], &[0x08, 0x06], &[0; 28]].concat();
        assert_eq!(classify(&arp), (FrameKind::Other, 0));
        assert_eq!(classify(&tcp_frame(0x02, 0)), (FrameKind::Control, 0));
        assert_eq!(classify(&tcp_frame(0x14, 0)), (FrameKind::Control, 0));
        assert_eq!(classify(&tcp_frame(0x10, 0)), (FrameKind::PureAck, 0));
        assert_eq!(classify(&tcp_frame(0x18, 5)), (FrameKind::Small, 5));
        assert_eq!(classify(&tcp_frame(0x18, 64)), (FrameKind::Small, 64));
        assert_eq!(classify(&tcp_frame(0x10, 1460)), (FrameKind::Data, 1460));
        // Cut short: not a TCP segment one can read, so not counted as one.
        assert_eq!(
            classify(&tcp_frame(0x10, 1460)[..40]),
            (FrameKind::Other, 0)
        );
    }

    #[test]
    fn the_census_counts_wire_bytes_and_data_payload() {
        let mut census = WireCensus::default();
        census.count(&tcp_frame(0x10, 0));
        census.count(&tcp_frame(0x10, 1460));
        census.count(&tcp_frame(0x10, 1460));
        assert_eq!(census.frames, [0, 0, 1, 0, 2]);
        assert_eq!(census.bytes, [0, 0, 54 + 20, 0, 2 * (1514 + 20)]);
        assert_eq!(census.data_payload, 2920);
        let report = census.report();
        assert!(report.contains("data segments                2 frames        3068 B  97.6 %"));
        assert!(report.contains("2920 B  92.9 %"), "{report}");
    }
}
