//! The firmware's main loop: poll the interface, keep the address, serve, sleep.

use crate::Board;
use crate::network::Network;
use crate::settings;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::wire::{EthernetAddress, HardwareAddress};

/// Connections served at once.
pub const CONNECTIONS: usize = 4;

pub fn run<B: Board>(board: &mut B) -> ! {
    let mac = board.mac();
    defmt::info!(
        "{}: MAC {=[u8]:02x}, serving {=usize} bytes, blocks {=str}, {=usize} peers",
        board.name(),
        mac,
        settings::FILE.len(),
        if settings::HELD.is_empty() { "all" } else { settings::HELD },
        settings::PEERS.len()
    );
    let now = board.now();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(config, board.device(), now);
    let mut storage: [SocketStorage<'_>; 8] = Default::default();
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut network = Network::new(&mut iface, &mut sockets, mac, now);
    loop {
        board.feed_watchdog();
        let now = board.now();
        iface.poll(now, board.device(), &mut sockets);
        network.poll(&mut iface, &mut sockets, now);
        let deadline = [iface.poll_at(now, &sockets), network.poll_at()]
            .into_iter()
            .flatten()
            .min();
        board.sleep_until(deadline);
    }
}
