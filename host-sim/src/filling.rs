//! A filling node: the fetcher fills a file-backed store from peers while the server serves
//! what is verified, both on the one smoltcp interface, as on a board.

use crate::cli::Args;
use crate::file_flash::FileFlash;
use crate::tap_server::{SOCKETS, Service, log_event, protocol_server, tune};
use p2p_core::driver::{Server, SocketBuffers};
use p2p_core::fetch::{FetchConfig, FetchEvent, Fetcher};
use p2p_core::fetch_driver::{FetchDriver, learn_client};
use p2p_core::flash_store::FlashStore;
use p2p_core::{Duration, Instant, PeerAddr};
use smoltcp::iface::SocketSet;
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;

/// Up to 65536 blocks: any file the protocol allows (less the store's own few MiB).
const BITMAP_BYTES: usize = 8192;
/// Connections fetching at once, one per peer.
const FETCH_CONNECTIONS: usize = 8;
/// Peers the fetcher keeps track of.
const KNOWN_PEERS: usize = 64;
/// The largest block, of a file near 4 GiB.
const BLOCK_BUFFER: usize = 65536;
/// A fetching socket receives block data: a large window. It sends only requests.
const FETCH_RX_BUFFER: usize = 256 * 1024;
const FETCH_TX_BUFFER: usize = 2048;

pub type FillingStore = FlashStore<FileFlash, BITMAP_BYTES>;
type HostFetcher = Fetcher<KNOWN_PEERS, FETCH_CONNECTIONS, BITMAP_BYTES, BLOCK_BUFFER>;

/// Opens (or creates) the store for `--manifest`, for the life of the process.
pub fn open_store(args: &Args) -> Result<&'static FillingStore, String> {
    let (Some(digest), Some(path)) = (args.manifest, args.store.as_ref()) else {
        return Err("--manifest and --store go together".into());
    };
    let flash = FileFlash::open(path)
        .map_err(|error| format!("cannot open the store {}: {error}", path.display()))?;
    let store = FlashStore::open(flash, digest)
        .map_err(|error| format!("the store {}: {error}", path.display()))?;
    match store.geometry() {
        Some(geometry) => log::info!(
            "store {}: file {digest}, {} bytes, {} of {} blocks verified",
            path.display(),
            geometry.file_size(),
            store.verified_count(),
            geometry.block_count()
        ),
        None => log::info!(
            "store {}: file {digest}, empty: fetching the manifest first",
            path.display()
        ),
    }
    Ok(Box::leak(Box::new(store)))
}

/// Fetches into `store` and serves it once its manifest is verified.
pub fn service<'a, D: Device>(
    sockets: &mut SocketSet<'a>,
    args: &'a Args,
    store: &'a FillingStore,
    idle: Duration,
    now: NetInstant,
) -> Service<'a, D> {
    let mut listed: Vec<PeerAddr> = args.peers.clone();
    listed.extend(args.fetch_from.iter().filter(|p| !args.peers.contains(p)));
    let listed: &'a [PeerAddr] = listed.leak();
    let [_, _, _, last] = args.ip.0.octets();
    let config = FetchConfig {
        own_addr: Some(PeerAddr::new(args.ip.0.octets(), args.port)),
        // Nodes filling at once start their search apart.
        start_hint: u32::from(last).wrapping_mul(7919),
        // 6 requests of up to 16 blocks: up to 96 KiB in flight per peer, within the
        // fetching sockets' 256 KiB windows.
        max_run: 16,
        requests: 6,
        ..FetchConfig::default()
    };
    let started = Instant::from_millis(u64::try_from(now.total_millis()).unwrap_or(0));
    let mut fetcher = Box::new(HostFetcher::new(config, &args.fetch_from, started));
    let buffers = [(); FETCH_CONNECTIONS].map(|()| SocketBuffers {
        rx: vec![0u8; FETCH_RX_BUFFER].leak(),
        tx: vec![0u8; FETCH_TX_BUFFER].leak(),
    });
    let mut driver = FetchDriver::new(sockets, buffers, u16::from(last));
    for handle in driver.handles() {
        tune(
            sockets.get_mut::<tcp::Socket>(handle),
            &args.congestion_control,
        );
    }
    let mut server: Option<Server<'a, SOCKETS>> = None;
    let mut on_fetch = progress_logger(store);
    Box::new(move |now, iface, device, sockets| {
        let known = |ip| fetcher.knows_host(ip);
        let polled = iface.poll(now, &mut driver.overhearing(device, iface, &known), sockets);
        let fetch_at = driver.poll(
            now,
            iface,
            device,
            sockets,
            &mut fetcher,
            store,
            &mut on_fetch,
        );
        if server.is_none() {
            // Until the manifest is verified it answers only Peer Lists, so peers find each
            // other through a node that is still starting.
            server = Some(protocol_server(sockets, args, store, listed, idle));
            log::info!("serving on port {} (verified blocks only)", args.port);
        }
        let serve_at = server.as_mut().and_then(|server| {
            server.poll(now, sockets, &mut |event| {
                learn_client(&mut fetcher, &event, now);
                log_event(event);
            })
        });
        // New blocks become visible only between Block List Responses.
        if server.as_ref().is_none_or(|server| !server.listing()) {
            store.publish();
        }
        (polled, [fetch_at, serve_at].into_iter().flatten().min())
    })
}

/// Logs what the fetcher does: every problem, and progress in tenths.
fn progress_logger(store: &FillingStore) -> impl FnMut(FetchEvent) + '_ {
    move |event| match event {
        FetchEvent::PeerFound(peer) => log::info!("fetch: found peer {peer}"),
        FetchEvent::ManifestVerified { file_size, from } => {
            let blocks = store.geometry().map_or(0, |g| g.block_count());
            log::info!("fetch: manifest verified (from {from}): {file_size} bytes, {blocks} blocks")
        }
        FetchEvent::NoDigests(peer) => log::warn!(
            "fetch: {peer} serves no digests (an older peer?); fetching blocks only from it"
        ),
        FetchEvent::ManifestMoved { from, to } => {
            log::info!("fetch: {from} lags sending the manifest; asking {to} for the rest")
        }
        FetchEvent::BlockVerified { block, from } => {
            let blocks = store.geometry().map_or(0, |g| g.block_count());
            let done = store.verified_count();
            let tenth = (blocks / 10).max(1);
            log::debug!("fetch: block {block} verified (from {from})");
            if done.is_multiple_of(tenth) {
                log::info!("fetch: {done} of {blocks} blocks verified");
            }
        }
        FetchEvent::PeerDropped { peer, reason } => {
            log::warn!("fetch: dropped {peer}: {reason}")
        }
        FetchEvent::Stalled(peer) => {
            log::warn!("fetch: {peer} stalled; its blocks go to other peers")
        }
        FetchEvent::PeerError(peer) => log::info!("fetch: {peer} sent an Error and closed"),
        FetchEvent::StoreFailed(error) => log::error!("fetch: store: {error}"),
        FetchEvent::Complete { fill_time } => {
            let geometry = store.geometry();
            log::info!(
                "fetch: file complete: all {} blocks ({} bytes) verified, {} ms after the \
                 manifest; serving all of it",
                geometry.map_or(0, |g| g.block_count()),
                geometry.map_or(0, |g| g.file_size()),
                fill_time.millis()
            )
        }
    }
}
