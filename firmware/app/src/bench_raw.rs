//! The benchmark's anchor (cargo feature `bench-raw-tcp`, which `cargo xtask bench firmware`
//! builds; never a product build): instead of the protocol, one socket with a serving
//! connection's buffers sends the served file's length of raw TCP to whoever connects, then
//! closes, through the same network stack, address handling and main loop.

use crate::Board;
use crate::network::Network;
use crate::serve::{RX_BUFFER, SocketMemory, TX_BUFFER, poll_forever};
use crate::settings;
use p2p_core::DEFAULT_PORT;
use p2p_core::driver::SocketBuffers;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress};
use static_cell::ConstStaticCell;

pub fn run<B: Board>(board: &mut B) -> ! {
    // Statics, as the server's are.
    static MEMORY: ConstStaticCell<SocketMemory<1, RX_BUFFER, TX_BUFFER>> =
        ConstStaticCell::new(SocketMemory::new());
    let mac = board.mac();
    defmt::warn!(
        "{}: MAC {=[u8]:02x}; benchmark build: raw TCP on port {=u16}, not the protocol",
        board.name(),
        mac,
        DEFAULT_PORT
    );
    let now = board.now();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(config, board.device(), now);
    // The sender's socket and DHCP's.
    let mut storage: [SocketStorage<'_>; 2] = Default::default();
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut network = Network::new(&mut iface, &mut sockets, mac, now);
    let [buffers] = MEMORY.take().buffers();
    let mut sender = RawSender::new(&mut sockets, buffers, settings::FILE.len());
    poll_forever(
        board,
        &mut iface,
        &mut sockets,
        &mut network,
        &mut |now, iface, sockets, board| {
            let polled = iface.poll(now, board.device(), sockets);
            (polled, sender.poll(sockets))
        },
    )
}

/// One socket that sends `total` bytes of raw TCP to whoever connects, then closes.
struct RawSender {
    handle: SocketHandle,
    total: usize,
    sent: usize,
}

impl RawSender {
    fn new<'a>(sockets: &mut SocketSet<'a>, buffers: SocketBuffers<'a>, total: usize) -> Self {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(buffers.rx),
            tcp::SocketBuffer::new(buffers.tx),
        );
        socket.set_nagle_enabled(false);
        let _ = socket.listen(DEFAULT_PORT);
        Self {
            handle: sockets.add(socket),
            total,
            sent: 0,
        }
    }

    fn poll(&mut self, sockets: &mut SocketSet<'_>) -> Option<Instant> {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.state() == tcp::State::Closed {
            self.sent = 0;
            let _ = socket.listen(DEFAULT_PORT);
        }
        while self.sent < self.total && socket.can_send() {
            let left = self.total - self.sent;
            match socket.send(|space| {
                let len = space.len().min(left);
                (len, len)
            }) {
                Ok(0) | Err(_) => break,
                Ok(len) => self.sent += len,
            }
        }
        if self.sent >= self.total && socket.may_send() {
            socket.close();
        }
        None
    }
}
