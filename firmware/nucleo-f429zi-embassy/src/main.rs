//! p2p-blocks on the ST Nucleo-F429ZI with embassy: embassy-stm32's Ethernet driver (LAN8742A
//! PHY over RMII), embassy-net's TCP/IP stack, and one task per connection, each serving the
//! built-in file through p2p-core's `embedded-io-async` adapter
//! ([`p2p_core::io::asynch::serve_connection`]) on an embassy-net `TcpSocket`. The serving
//! logic is p2p-core's `ServerSession`, the same as the hand-written boards run; only the
//! network stack and the scheduling differ. Each socket's reads wake the adapter once a second
//! (`Paced`), so the session's idle timeout closes a connection whose peer went silent, as on
//! the hand-written boards.
//!
//! Built and linted in CI; it has never run on hardware. Logs go out as defmt over RTT.
#![no_std]
#![no_main]

use defmt::{info, unwrap, warn};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_stm32::eth::{self, Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::time::Hertz;
use embassy_stm32::{Config, bind_interrupts};
use embassy_time::{Duration, Timer, with_timeout};
use p2p_core::io::{IoBuffers, asynch};
use p2p_core::server::ServerConfig;
use p2p_core::{BlockRanges, DEFAULT_PORT, Instant, SliceStore};
use p2p_firmware::settings::{self, MAX_HELD_RANGES};
use panic_probe as _;
use static_cell::StaticCell;

/// Connections served at once, one task and one socket each, as many as the hand-written
/// firmware serves. A connection attempt while all are busy is reset by the stack (embassy-net,
/// like smoltcp, has no accept backlog).
const CONNECTIONS: usize = 4;
/// Each socket's receive buffer: requests are at most 5 bytes.
const SOCKET_RX: usize = 512;
/// Each socket's transmit buffer: bounds the block data in flight per connection.
const SOCKET_TX: usize = 4096;
/// The adapter's own buffers per connection: requests read, and responses put together
/// before they are written into the socket.
const IO_RX: usize = 64;
const IO_TX: usize = 1024;
/// smoltcp's own timeout: a connection whose peer acknowledges nothing for this long is reset
/// (a peer that stops reading holds a write, where the session cannot see its idle timeout).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read waits before it wakes the adapter to check the session's idle timeout.
const READ_WAKEUP: Duration = Duration::from_secs(1);
/// How long DHCP is tried before the fallback address from the MAC is used.
const DHCP_FALLBACK_AFTER: Duration = Duration::from_secs(3);

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

// This example serves a built-in file; a filling node (the fetcher) is the hand-written
// boards' alone for now.
const _: () = assert!(
    settings::FILL_MANIFEST.is_none(),
    "nucleo-f429zi-embassy serves a built-in file: build it without P2P_MANIFEST"
);

/// The file every connection serves, with its digests (from the build-time settings).
static STORE: StaticCell<SliceStore<'static, MAX_HELD_RANGES>> = StaticCell::new();

/// An accepted socket whose reads give up after [`READ_WAKEUP`] with `ErrorKind::TimedOut`:
/// the adapter takes that as a wakeup, so the session's own idle timeout (30 s without
/// progress, writes included) closes a connection whose peer went silent.
struct Paced<'a>(TcpSocket<'a>);

/// A socket error, or a read that waited [`READ_WAKEUP`].
#[derive(Debug, defmt::Format)]
enum PacedError {
    Tcp(embassy_net::tcp::Error),
    Wakeup,
}

impl core::fmt::Display for PacedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Tcp(error) => write!(f, "{error:?}"),
            Self::Wakeup => f.write_str("no bytes within the read wakeup"),
        }
    }
}

impl core::error::Error for PacedError {}

impl embedded_io_async::Error for PacedError {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        match self {
            Self::Tcp(error) => embedded_io_async::Error::kind(error),
            Self::Wakeup => embedded_io_async::ErrorKind::TimedOut,
        }
    }
}

impl embedded_io_async::ErrorType for Paced<'_> {
    type Error = PacedError;
}

impl embedded_io_async::Read for Paced<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, PacedError> {
        // embassy-net's read is cancel-safe: a timed-out read loses no bytes.
        match with_timeout(READ_WAKEUP, self.0.read(buf)).await {
            Ok(read) => read.map_err(PacedError::Tcp),
            Err(_) => Err(PacedError::Wakeup),
        }
    }
}

impl embedded_io_async::Write for Paced<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, PacedError> {
        self.0.write(buf).await.map_err(PacedError::Tcp)
    }

    async fn flush(&mut self) -> Result<(), PacedError> {
        self.0.flush().await.map_err(PacedError::Tcp)
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = CONNECTIONS)]
async fn serve_task(
    stack: Stack<'static>,
    index: usize,
    store: &'static SliceStore<'static, MAX_HELD_RANGES>,
) -> ! {
    let mut socket_rx = [0u8; SOCKET_RX];
    let mut socket_tx = [0u8; SOCKET_TX];
    let mut io_rx = [0u8; IO_RX];
    let mut io_tx = [0u8; IO_TX];
    loop {
        let mut socket = TcpSocket::new(stack, &mut socket_rx, &mut socket_tx);
        socket.set_timeout(Some(SOCKET_TIMEOUT));
        // Responses are written whole; waiting to coalesce small ones only adds delay.
        socket.set_nagle_enabled(false);
        if let Err(error) = socket.accept(DEFAULT_PORT).await {
            warn!("connection {}: accept failed: {}", index, error);
            continue;
        }
        info!("connection {}: from {}", index, socket.remote_endpoint());
        let mut stream = Paced(socket);
        let buffers = IoBuffers {
            rx: &mut io_rx,
            tx: &mut io_tx,
        };
        let mut now = || Instant::from_millis(embassy_time::Instant::now().as_millis());
        let ended = asynch::serve_connection(
            &mut stream,
            ServerConfig::new(store, settings::PEERS),
            buffers,
            &mut now,
            &mut |event| defmt::debug!("connection {}: {}", index, event),
        )
        .await;
        match ended {
            Ok(ended) => info!("connection {}: ended: {}", index, ended),
            Err(error) => info!("connection {}: ended: {}", index, error),
        }
        let Paced(mut socket) = stream;
        socket.close();
        // Let the FIN go out (or give up) before the socket's buffers are reused.
        let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
        socket.abort();
        Timer::after_millis(1).await;
    }
}

/// A locally administered unicast MAC from the chip's unique ID: 02 and 40 bits of an FNV-1a
/// hash of its 96 bits (the hand-written Nucleo firmware's rule).
fn mac_from_uid() -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in embassy_stm32::uid::uid() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let [a, b, c, d, e, ..] = hash.to_le_bytes();
    [0x02, a, b, c, d, e]
}

fn static_config(address: [u8; 4], prefix: u8) -> StaticConfigV4 {
    let [a, b, c, d] = address;
    StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), prefix),
        gateway: settings::GATEWAY.map(|[a, b, c, d]| Ipv4Address::new(a, b, c, d)),
        dns_servers: Default::default(),
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let mut config = Config::default();
    {
        use embassy_stm32::rcc::*;
        // HSE 8 MHz from the ST-LINK, through the PLL to 180 MHz, as the hand-written board.
        config.rcc.hse = Some(Hse {
            freq: Hertz(8_000_000),
            mode: HseMode::Bypass,
        });
        config.rcc.pll_src = PllSource::HSE;
        config.rcc.pll = Some(Pll {
            prediv: PllPreDiv::DIV4,
            mul: PllMul::MUL180,
            divp: Some(PllPDiv::DIV2),
            divq: None,
            divr: None,
        });
        config.rcc.ahb_pre = AHBPrescaler::DIV1;
        config.rcc.apb1_pre = APBPrescaler::DIV4;
        config.rcc.apb2_pre = APBPrescaler::DIV2;
        config.rcc.sys = Sysclk::PLL1_P;
    }
    let p = embassy_stm32::init(config);
    let mac = mac_from_uid();

    let held: BlockRanges<MAX_HELD_RANGES> = match settings::HELD {
        "" => BlockRanges::new(),
        text => unwrap!(text.parse().ok(), "P2P_BLOCKS was checked at build time"),
    };
    let store = if held.is_empty() {
        SliceStore::new(settings::FILE)
    } else {
        SliceStore::with_held(settings::FILE, held)
    }
    .and_then(|store| store.with_digests(&settings::DIGESTS));
    let store: &'static SliceStore<'static, MAX_HELD_RANGES> = STORE.init(unwrap!(store));
    info!(
        "nucleo-f429zi (embassy): MAC {=[u8]:02x}, serving {=usize} bytes, {=usize} connections",
        mac,
        settings::FILE.len(),
        CONNECTIONS
    );

    // Two transmit and two receive descriptors of 1.5 KiB, as the hand-written board: the
    // board only receives requests and ACKs.
    static PACKETS: StaticCell<PacketQueue<2, 2>> = StaticCell::new();
    // The Nucleo's RMII pins: REF_CLK PA1, CRS_DV PA7, RXD0 PC4, RXD1 PC5, TXD0 PG13,
    // TXD1 PB13, TX_EN PG11; MDIO PA2, MDC PC1.
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::<2, 2>::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        mac,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );

    let net_config = match settings::STATIC_IP {
        Some((address, prefix)) => embassy_net::Config::ipv4_static(static_config(address, prefix)),
        None => embassy_net::Config::dhcpv4(Default::default()),
    };
    // The TCP stack's seed (initial sequence numbers, ports) from the chip's unique ID.
    let seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x5e, 0xed]);
    static RESOURCES: StaticCell<StackResources<{ CONNECTIONS + 1 }>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        net_config,
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(unwrap!(net_task(runner)));

    if with_timeout(DHCP_FALLBACK_AFTER, stack.wait_config_up())
        .await
        .is_err()
    {
        // No DHCP server: the hand-written firmware's fallback, 10.0.0.X/24 from the MAC.
        let fallback = p2p_firmware::network::address_from_mac(mac);
        warn!("no DHCP lease: falling back to a static address");
        stack.set_config_v4(embassy_net::ConfigV4::Static(static_config(
            fallback.address().octets(),
            fallback.prefix_len(),
        )));
    }
    stack.wait_config_up().await;
    if let Some(config) = stack.config_v4() {
        info!("address {}", config.address);
    }
    for index in 0..CONNECTIONS {
        spawner.spawn(unwrap!(serve_task(stack, index, store)));
    }
}
