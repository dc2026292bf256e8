//! Bringing the interface up: DHCPv4, falling back to an address derived from the MAC when no
//! server answers, or a static address fixed at build time.

use crate::settings;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

/// How long DHCP is tried before the fallback address is used. DHCP keeps running after it
/// and takes over if a server answers later.
pub const DHCP_FALLBACK_AFTER: Duration = Duration::from_secs(3);

/// The fallback when DHCP gets no answer: 10.0.0.X/24, X from the MAC's last byte (kept in
/// 2..=254), so QEMU instances started with distinct `mac=` get distinct addresses without a
/// rebuild.
pub fn address_from_mac(mac: [u8; 6]) -> Ipv4Cidr {
    let host = mac[5].clamp(2, 254);
    Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, host), 24)
}

/// The address state machine.
pub struct Network {
    dhcp: Option<SocketHandle>,
    started: Instant,
    fallback: Ipv4Cidr,
    configured: bool,
    /// Whether the address in use came from a DHCP lease.
    leased: bool,
}

impl Network {
    pub fn new(
        iface: &mut Interface,
        sockets: &mut SocketSet<'_>,
        mac: [u8; 6],
        now: Instant,
    ) -> Self {
        if let Some((ip, prefix)) = settings::STATIC_IP {
            let [a, b, c, d] = ip;
            set_address(
                iface,
                Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), prefix),
                settings::GATEWAY,
            );
            return Self {
                dhcp: None,
                started: now,
                fallback: address_from_mac(mac),
                configured: true,
                leased: false,
            };
        }
        Self {
            dhcp: Some(sockets.add(dhcpv4::Socket::new())),
            started: now,
            fallback: address_from_mac(mac),
            configured: false,
            leased: false,
        }
    }

    /// Applies DHCP events and the fallback; call after every interface poll.
    pub fn poll(&mut self, iface: &mut Interface, sockets: &mut SocketSet<'_>, now: Instant) {
        let Some(handle) = self.dhcp else { return };
        match sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(config)) => {
                defmt::info!("DHCP: address {}", config.address);
                set_address(iface, config.address, config.router.map(|r| r.octets()));
                self.configured = true;
                self.leased = true;
            }
            // Also reported once at start, before any lease: only a lost lease matters.
            Some(dhcpv4::Event::Deconfigured) if self.leased => {
                self.leased = false;
                defmt::warn!("DHCP: lease lost, using {}", self.fallback);
                set_address(iface, self.fallback, settings::GATEWAY);
            }
            Some(dhcpv4::Event::Deconfigured) => {}
            None if !self.configured && now - self.started >= DHCP_FALLBACK_AFTER => {
                defmt::info!("DHCP: no answer, using {}", self.fallback);
                set_address(iface, self.fallback, settings::GATEWAY);
                self.configured = true;
            }
            None => {}
        }
    }

    /// When the fallback is due, if it still is.
    pub fn poll_at(&self) -> Option<Instant> {
        (!self.configured).then_some(self.started + DHCP_FALLBACK_AFTER)
    }
}

fn set_address(iface: &mut Interface, cidr: Ipv4Cidr, gateway: Option<[u8; 4]>) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(cidr));
    });
    iface.routes_mut().remove_default_ipv4_route();
    if let Some([a, b, c, d]) = gateway {
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(a, b, c, d));
    }
}
