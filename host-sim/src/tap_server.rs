//! Serving on a TAP interface: smoltcp on the TAP (with optional fault injection, delay,
//! reordering, shaping and pcap), p2p-core's driver on its sockets, sleeping on the TAP's
//! descriptor between events.

use crate::cli::{Args, MAX_CONNECTIONS};
use crate::delay::Delay;
use crate::filling::FillingStore;
use crate::shaper::Shaper;
use crate::tap::Tap;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use p2p_core::driver::{DriverEvent, Ended, LISTENERS, Server, SocketBuffers};
use p2p_core::server::{CloseReason, ServerConfig, SessionEvent};
use p2p_core::{BlockStore, Duration, PeerAddr};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::phy::{Device, FaultInjector, PcapMode, PcapWriter};
use smoltcp::socket::tcp::{self, CongestionControl};
use smoltcp::time::{Duration as NetDuration, Instant as NetInstant};
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

pub const SOCKETS: usize = MAX_CONNECTIONS + LISTENERS;
/// Requests are tiny: a small receive window (a fetching socket's is larger: see filling.rs).
const RX_BUFFER: usize = 2048;
/// Block data in flight per connection; the send window.
const TX_BUFFER: usize = 256 * 1024;
/// smoltcp's FaultInjector holds frames of up to 1536 bytes: that, less the Ethernet header.
const FAULT_INJECTOR_MAX_MTU: usize = 1536 - 14;
/// The longest sleep, so Ctrl-C is noticed promptly even when idle.
const MAX_SLEEP: NetDuration = NetDuration::from_millis(250);

/// What a host-sim serves: a whole or partial file it was given, or what it fetches.
#[derive(Clone, Copy)]
pub enum Served<'a> {
    File(&'a dyn BlockStore),
    Filling(&'a FillingStore),
}

pub fn serve(
    args: &Args,
    store: Served<'_>,
    idle: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let faults = args.drop_chance > 0 || args.corrupt_chance > 0;
    if faults && usize::from(args.mtu) > FAULT_INJECTOR_MAX_MTU {
        return Err(format!(
            "--mtu {} cannot be combined with --drop-chance or --corrupt-chance: smoltcp's \
             fault injector handles IP packets of at most {FAULT_INJECTOR_MAX_MTU} bytes",
            args.mtu
        ));
    }
    let tap = Tap::open(&args.tap, args.mtu)?;
    let fd = tap.as_raw_fd();
    let pcap = match &args.pcap {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let with_faults = |tap: Tap| {
        let mut device = FaultInjector::new(tap, std::process::id());
        device.set_drop_chance(args.drop_chance);
        device.set_corrupt_chance(args.corrupt_chance);
        device
    };
    match (faults, pcap) {
        (false, None) => run(tap, fd, args, store, idle, stop),
        (true, None) => run(with_faults(tap), fd, args, store, idle, stop),
        (false, Some(file)) => run(
            PcapWriter::new(tap, file, PcapMode::Both),
            fd,
            args,
            store,
            idle,
            stop,
        ),
        (true, Some(file)) => run(
            PcapWriter::new(with_faults(tap), file, PcapMode::Both),
            fd,
            args,
            store,
            idle,
            stop,
        ),
    }
}

/// What runs each round: polls the interface (a filling node through the fetch driver's
/// `overhearing`), then the protocol server, the fetcher or the raw-TCP anchor on the
/// sockets. Returns what the interface poll did and when the service next needs a poll.
pub type Service<'a, D> = Box<
    dyn FnMut(
            NetInstant,
            &mut Interface,
            &mut D,
            &mut SocketSet<'a>,
        ) -> (PollResult, Option<NetInstant>)
        + 'a,
>;

fn run<'a, D: Device>(
    device: D,
    fd: i32,
    args: &'a Args,
    store: Served<'a>,
    idle: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let link = Delay::new(
        device,
        NetDuration::from_millis(args.delay_ms),
        args.reorder_chance,
        std::process::id(),
    );
    let mut device = Shaper::new(link, args.rate);
    let epoch = std::time::Instant::now();
    let now =
        || NetInstant::from_micros(i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX));
    let mut config = Config::new(EthernetAddress(args.mac()).into());
    config.random_seed = u64::from(std::process::id());
    let mut iface = Interface::new(config, &mut device, now());
    let (ip, prefix) = args.ip;
    let [a, b, c, d] = ip.octets();
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(Ipv4Address::new(a, b, c, d).into(), prefix));
    });
    if let Some(gateway) = args.gateway {
        let [a, b, c, d] = gateway.octets();
        iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(a, b, c, d))
            .map_err(|error| format!("gateway {gateway}: {error}"))?;
    }

    let mut sockets: SocketSet<'a> = SocketSet::new(Vec::new());
    let mut service: Service<'a, _> = match (args.raw_tcp_bytes, store) {
        (Some(total), _) => {
            let mut send = raw_sender(&mut sockets, args, total);
            Box::new(move |now, iface, device, sockets| {
                (iface.poll(now, device, sockets), send(now, sockets))
            })
        }
        (None, Served::File(store)) => {
            let mut server = protocol_server(&mut sockets, args, store, &args.peers, idle);
            Box::new(move |now, iface, device, sockets| {
                let polled = iface.poll(now, device, sockets);
                (polled, server.poll(now, sockets, &mut log_event))
            })
        }
        (None, Served::Filling(store)) => {
            crate::filling::service(&mut sockets, args, store, idle, now())
        }
    };
    log::info!(
        "{}/{} on {} (MAC {}, MTU {}), port {}, up to {} connections",
        args.ip.0,
        args.ip.1,
        args.tap,
        EthernetAddress(args.mac()),
        args.mtu,
        args.port,
        args.max_connections
    );

    while !stop.load(Ordering::SeqCst) {
        let timestamp = now();
        let mut server_at = None;
        // Until quiet: what the server queues goes out in the same round.
        for _ in 0..64 {
            let polled;
            (polled, server_at) = service(timestamp, &mut iface, &mut device, &mut sockets);
            if polled == PollResult::None {
                break;
            }
        }
        let mut delay = iface
            .poll_delay(timestamp, &sockets)
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        if let Some(due) = device.link().next_release(timestamp) {
            delay = delay.min(due);
        }
        if let Some(at) = server_at {
            delay = delay.min(if at > timestamp {
                at - timestamp
            } else {
                NetDuration::ZERO
            });
        }
        match device.blocked_for(now()) {
            // Nothing moves until the shaper's bucket refills (it refuses frames both ways, so
            // a readable TAP would only wake the loop to spin): sleep through it.
            Some(refill) => std::thread::sleep(std::time::Duration::from_micros(
                refill.min(MAX_SLEEP).total_micros(),
            )),
            None => wait_readable(fd, delay)?,
        }
    }
    log::info!("interrupted; exiting");
    Ok(())
}

/// The protocol server on `SOCKETS` sockets serving `store`, listing `peers`.
pub fn protocol_server<'a>(
    sockets: &mut SocketSet<'a>,
    args: &Args,
    store: &'a dyn BlockStore,
    peers: &'a [PeerAddr],
    idle: Duration,
) -> Server<'a, SOCKETS> {
    let mut server_config = ServerConfig::new(store, peers);
    server_config.idle_timeout = idle;
    let mut server = Server::new(server_config, args.port, sockets, socket_buffers());
    server.set_connection_limit(usize::from(args.max_connections));
    for handle in server.handles() {
        tune(
            sockets.get_mut::<tcp::Socket>(handle),
            &args.congestion_control,
        );
    }
    server
}

/// Buffers for `N` sockets, for the life of the process. Zeroed allocations: pages are only
/// touched as a connection's window grows.
pub fn socket_buffers<const N: usize>() -> [SocketBuffers<'static>; N] {
    [(); N].map(|()| SocketBuffers {
        rx: vec![0u8; RX_BUFFER].leak(),
        tx: vec![0u8; TX_BUFFER].leak(),
    })
}

/// Applies the chosen congestion control to a served socket (see BENCHMARKS.md for how each
/// fares under loss).
pub fn tune(socket: &mut tcp::Socket<'_>, algorithm: &str) {
    socket.set_congestion_control(match algorithm {
        "reno" => CongestionControl::Reno,
        "none" => CongestionControl::None,
        _ => CongestionControl::Cubic,
    });
}

/// The benchmark anchor: one socket with the server's buffer sizes that sends `total` bytes
/// of raw TCP to whoever connects, then closes.
fn raw_sender<'a>(
    sockets: &mut SocketSet<'a>,
    args: &Args,
    total: u64,
) -> impl FnMut(NetInstant, &mut SocketSet<'a>) -> Option<NetInstant> + use<'a> {
    let port = args.port;
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; RX_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TX_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    tune(&mut socket, &args.congestion_control);
    let _ = socket.listen(port);
    let handle = sockets.add(socket);
    let mut sent = 0u64;
    move |_, sockets| {
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        if socket.state() == tcp::State::Closed {
            sent = 0;
            let _ = socket.listen(port);
        }
        while sent < total && socket.can_send() {
            let left = usize::try_from(total - sent).unwrap_or(usize::MAX);
            let queued = socket.send(|space| {
                let len = space.len().min(left);
                (len, len)
            });
            match queued {
                Ok(0) | Err(_) => break,
                Ok(len) => sent += len as u64,
            }
        }
        if sent >= total && socket.may_send() {
            socket.close();
        }
        None
    }
}

/// Sleeps until the TAP has a frame or `delay` has passed: no busy spinning.
fn wait_readable(fd: i32, delay: NetDuration) -> Result<(), String> {
    if delay == NetDuration::ZERO {
        return Ok(());
    }
    // SAFETY: `fd` is the TAP's descriptor, open for as long as the device that owns it,
    // which outlives this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let millis = u16::try_from(delay.total_millis().max(1)).unwrap_or(u16::MAX);
    match poll(
        &mut [PollFd::new(borrowed, PollFlags::POLLIN)],
        PollTimeout::from(millis),
    ) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(error) => Err(format!("waiting on the TAP: {error}")),
    }
}

pub fn log_event(event: DriverEvent) {
    match event {
        DriverEvent::Connected { slot, remote } => {
            log::info!(
                "[{slot}] connected from {}",
                remote.map_or("?".into(), |r| r.to_string())
            )
        }
        DriverEvent::Session { slot, event } => match event {
            SessionEvent::Accepted(request) => log::debug!("[{slot}] {request}"),
            SessionEvent::Refused { request, refusal } => {
                log::info!("[{slot}] {request} refused: {refusal}")
            }
            SessionEvent::ProtocolError(error) => {
                log::warn!("[{slot}] {error}; sending Error and closing")
            }
            SessionEvent::NoFileYet(request) => {
                log::info!("[{slot}] {request}: no file yet (manifest not verified); closing")
            }
            SessionEvent::ListTooLong => {
                log::error!("[{slot}] the Block List needs more than 32767 ranges; closing")
            }
        },
        DriverEvent::Busy { remote } => log::warn!(
            "refused {} as busy: at the connection limit",
            remote.map_or("?".into(), |r| r.to_string())
        ),
        DriverEvent::Closed { slot, ended } => match ended {
            Ended::Peer => log::info!("[{slot}] closed by the peer"),
            Ended::Turn => log::info!("[{slot}] closed: a turn for a client turned away"),
            // Reset mid-response: a client sees only "connection reset", so say why here.
            Ended::Session(reason @ (CloseReason::Broken | CloseReason::StoreFailed)) => {
                log::error!("[{slot}] reset: {reason}")
            }
            Ended::Session(CloseReason::IdleTimeout) => {
                log::warn!("[{slot}] reset: {}", CloseReason::IdleTimeout)
            }
            Ended::Session(reason) => log::info!("[{slot}] closed: {reason}"),
        },
    }
}
