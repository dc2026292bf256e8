//! A TAP interface from the tun-tap crate as a smoltcp `phy::Device`: one system call a frame.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use tun_tap::{Iface, Mode};

/// An Ethernet header: destination, source, type.
const ETHERNET_HEADER: usize = 14;

pub struct Tap {
    iface: Iface,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl Tap {
    /// Attaches to the TAP device `name`, which must exist (it is made by whoever owns the
    /// network: `cargo xtask net up`, or `ip tuntap add NAME mode tap`), for IP packets of up
    /// to `mtu` bytes.
    pub fn open(name: &str, mtu: u16) -> Result<Self, String> {
        let help = format!(
            "Make one first, as root: `ip tuntap add {name} mode tap && ip link set {name} up` \
             (and put it on a bridge), or let `cargo xtask net up` make a private test \
             network; or serve over the kernel's TCP with --listen ADDR:PORT"
        );
        // As root, opening a missing TAP would quietly create a new one, attached to nothing.
        if nix::net::if_::if_nametoindex(name).is_err() {
            return Err(format!(
                "there is no network device {name} here (in this network namespace). {help}"
            ));
        }
        let iface = Iface::without_packet_info(name, Mode::Tap).map_err(|error| {
            format!(
                "cannot open {name} as a TAP device: {error} (it must be a TAP, and opening \
                     it needs root or its owner's user). {help}"
            )
        })?;
        iface
            .set_non_blocking()
            .map_err(|error| format!("cannot make TAP {name} non-blocking: {error}"))?;
        Ok(Self {
            iface,
            rx: vec![0; usize::from(mtu) + ETHERNET_HEADER],
            tx: vec![0; usize::from(mtu) + ETHERNET_HEADER],
        })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
}

pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

pub struct TxToken<'a> {
    iface: &'a Iface,
    buf: &'a mut [u8],
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let frame = &mut self.buf[..len];
        let result = f(frame);
        if let Err(error) = self.iface.send(frame) {
            // A full queue drops the frame as a congested link would; TCP resends it.
            if error.kind() != ErrorKind::WouldBlock {
                log::warn!("TAP send failed: {error}");
            }
        }
        result
    }
}

impl Device for Tap {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Self { iface, rx, tx } = self;
        match iface.recv(rx) {
            Ok(len) => Some((RxToken { frame: &rx[..len] }, TxToken { iface, buf: tx })),
            Err(error) => {
                if error.kind() != ErrorKind::WouldBlock {
                    log::warn!("TAP receive failed: {error}");
                }
                None
            }
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        let Self { iface, tx, .. } = self;
        Some(TxToken { iface, buf: tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.tx.len();
        caps
    }
}
