//! The embedded-io adapters against real kernel TCP on loopback: a server on a std
//! `TcpListener` served by the blocking and the async adapter, asked by the adapters' clients
//! and by a bare `ClientSession` over a plain socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use embedded_io_adapters::std::FromStd;
use p2p_core::client::{ClientEvent, ClientLimits, ClientSession};
use p2p_core::io::{Ended, IoBuffers, RequestError, asynch, blocking};
use p2p_core::server::{CloseReason, ServerConfig, SessionEvent};
use p2p_core::wire::Request;
use p2p_core::{BlockRange, BlockRanges, Digest, Geometry, Instant, SliceStore};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// 69 blocks of 1 KiB, the last one short (368 bytes).
fn file() -> Vec<u8> {
    (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A std stream as an `embedded-io` and an `embedded-io-async` one, its read timeout as
/// `TimedOut`. The async calls block, which is fine for a connection of its own on its own
/// thread under a `block_on`.
struct Std(TcpStream);

impl embedded_io_async::ErrorType for Std {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for Std {
    /// A read timeout as embedded-io's `TimedOut` (std on Unix says `WouldBlock`).
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.read(buf).map_err(|error| match error.kind() {
            std::io::ErrorKind::WouldBlock => std::io::ErrorKind::TimedOut.into(),
            _ => error,
        })
    }
}

impl embedded_io_async::Write for Std {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf)
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush()
    }
}

impl embedded_io::Read for Std {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        embassy_futures::block_on(embedded_io_async::Read::read(self, buf))
    }
}

impl embedded_io::Write for Std {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Adapter {
    Blocking,
    Async,
}

/// Serves `connections` connections one after the other on a loopback listener with the
/// given adapter (a tiny 7-byte transmit buffer, so responses are cut everywhere); each
/// connection's outcome and events come back on the channel.
fn spawn_server(
    adapter: Adapter,
    data: Vec<u8>,
    held: Option<&'static str>,
    connections: usize,
    idle: Option<Duration>,
) -> (SocketAddr, mpsc::Receiver<(String, Vec<SessionEvent>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let digests: Vec<Digest> = data
            .chunks(Geometry::new(data.len() as u32).block_size() as usize)
            .map(Digest::of)
            .collect();
        let store = match held {
            Some(text) => {
                SliceStore::<4>::with_held(&data, text.parse::<BlockRanges<4>>().unwrap())
            }
            None => SliceStore::<4>::new(&data),
        }
        .unwrap()
        .with_digests(&digests)
        .unwrap();
        let started = std::time::Instant::now();
        for _ in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            let mut config = ServerConfig::new(&store, &[]);
            if let Some(idle) = idle {
                config.idle_timeout = p2p_core::Duration::from_millis(idle.as_millis() as u64);
                // The read timeout wakes the adapter so it sees the idle deadline.
                stream.set_read_timeout(Some(idle / 4)).unwrap();
            }
            let mut events = Vec::new();
            let (mut rx, mut tx) = ([0u8; 64], [0u8; 7]);
            let buffers = IoBuffers {
                rx: &mut rx,
                tx: &mut tx,
            };
            let mut now = || Instant::from_millis(started.elapsed().as_millis() as u64);
            let outcome = match adapter {
                Adapter::Blocking => {
                    let mut stream = FromStd::new(stream);
                    let mut on_event = |e| events.push(e);
                    format!(
                        "{:?}",
                        blocking::serve_connection(
                            &mut stream,
                            config,
                            buffers,
                            &mut now,
                            &mut on_event
                        )
                    )
                }
                Adapter::Async => {
                    let mut stream = Std(stream);
                    let mut on_event = |e| events.push(e);
                    format!(
                        "{:?}",
                        embassy_futures::block_on(asynch::serve_connection(
                            &mut stream,
                            config,
                            buffers,
                            &mut now,
                            &mut on_event,
                        ))
                    )
                }
            };
            send.send((outcome, events)).unwrap();
        }
    });
    (addr, receive)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Everything a client can ask, with the blocking client, checked against the store.
fn exchange_blocking(addr: SocketAddr, data: &[u8]) {
    let mut rx = [0u8; 1000];
    let mut client: blocking::Client<'_, _> = blocking::Client::new(
        FromStd::new(connect(addr)),
        ClientLimits::default(),
        &mut rx,
    );
    assert_eq!(client.file_size().unwrap(), data.len() as u32);
    let mut ranges = Vec::new();
    client
        .request(Request::BlockList, &mut |e| ranges.push(format!("{e:?}")))
        .unwrap();
    assert_eq!(
        ranges,
        [
            "RangeCount(1)".to_string(),
            format!("Range({:?})", BlockRange::new(0, 68).unwrap())
        ]
    );
    let mut fetched = Vec::new();
    client
        .fetch_blocks(0, 68, &mut |offset, bytes| {
            assert_eq!(offset as usize, fetched.len());
            fetched.extend_from_slice(bytes);
        })
        .unwrap();
    assert!(fetched == data, "every byte as stored");
    // Pipelined: a single block, a refusal and digests, answered in order.
    client.send(Request::Block { start: 68, end: 68 }).unwrap();
    client.send(Request::Block { start: 1, end: 0 }).unwrap();
    client.send(Request::Digest { start: 1, end: 2 }).unwrap();
    let mut tail = Vec::new();
    let first = client
        .receive(&mut |e| {
            if let ClientEvent::BlockData { offset, data } = e {
                assert!(offset >= 69_632);
                tail.extend_from_slice(data);
            }
        })
        .unwrap();
    assert_eq!(first, Request::Block { start: 68, end: 68 });
    assert!(tail == data[69_632..]);
    let mut events = Vec::new();
    let second = client
        .receive(&mut |e| events.push(format!("{e:?}")))
        .unwrap();
    assert_eq!(second, Request::Block { start: 1, end: 0 });
    assert!(events[0].starts_with("BlockFailure("), "{events:?}");
    let mut digests = Vec::new();
    client
        .receive(&mut |e| {
            if let ClientEvent::Digest { block, digest } = e {
                digests.push((block, digest));
            }
        })
        .unwrap();
    assert_eq!(
        digests,
        [
            (1, Digest::of(&data[1024..2048])),
            (2, Digest::of(&data[2048..3072]))
        ]
    );
    assert!(matches!(
        client.receive(&mut |_| {}),
        Err(RequestError::NothingOutstanding)
    ));
}

#[test]
fn blocking_adapter_serves_real_tcp() {
    let data = file();
    let (addr, outcomes) = spawn_server(Adapter::Blocking, data.clone(), None, 1, None);
    exchange_blocking(addr, &data);
    let (outcome, events) = outcomes.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, "Ok(Peer)");
    assert_eq!(events.len(), 6, "{events:?}");
}

#[test]
fn async_adapter_serves_real_tcp() {
    let data = file();
    let (addr, outcomes) = spawn_server(Adapter::Async, data.clone(), None, 1, None);
    exchange_blocking(addr, &data);
    let (outcome, _) = outcomes.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, "Ok(Peer)");
}

#[test]
fn async_client_fetches_from_blocking_server() {
    let data = file();
    let (addr, outcomes) = spawn_server(Adapter::Blocking, data.clone(), Some("1-68"), 1, None);
    let mut rx = [0u8; 300];
    let mut client: asynch::Client<'_, _, 4> =
        asynch::Client::new(Std(connect(addr)), ClientLimits::default(), &mut rx);
    embassy_futures::block_on(async {
        let mut held = Vec::new();
        client
            .request(Request::BlockList, &mut |e| {
                if let ClientEvent::Range(range) = e {
                    held.push(range);
                }
            })
            .await
            .unwrap();
        assert_eq!(held, [BlockRange::new(1, 68).unwrap()]);
        // Block 0 is not held: refused, and the connection goes on.
        assert!(matches!(
            client
                .fetch_blocks(0, 0, &mut |_, _| panic!("no data"))
                .await,
            Err(RequestError::Refused)
        ));
        let mut fetched = Vec::new();
        client
            .fetch_blocks(1, 68, &mut |_, bytes| fetched.extend_from_slice(bytes))
            .await
            .unwrap();
        assert!(fetched == data[1024..]);
    });
    drop(client);
    let (outcome, _) = outcomes.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, "Ok(Peer)");
}

/// A bare `ClientSession` over a plain socket, as a client without the adapter would: the
/// bytes on the wire are the protocol's, whatever the adapter.
#[test]
fn raw_bytes_on_the_wire() {
    for adapter in [Adapter::Blocking, Adapter::Async] {
        let data = file();
        let (addr, outcomes) = spawn_server(adapter, data.clone(), None, 2, None);
        let mut stream = connect(addr);
        // File Size Request, then a bad type byte: an Error and a close.
        stream.write_all(&[0x07]).unwrap();
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], 0x08, "{adapter:?}");
        assert_eq!(u32::from_be_bytes(answer[1..].try_into().unwrap()), 70_000);
        stream.write_all(&[0x42]).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        let mut session = ClientSession::<2>::new(ClientLimits::default());
        session.send(Request::FileSize, &mut [0; 8]).unwrap();
        let step = session.receive(&answer).unwrap();
        assert_eq!(step.event, Some(ClientEvent::FileSize(70_000)));
        assert!(
            String::from_utf8_lossy(&rest).contains("unknown message type 0x42"),
            "{rest:?}"
        );
        let (outcome, events) = outcomes.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            outcome,
            format!("Ok({:?})", Ended::Session(CloseReason::ProtocolError))
        );
        assert!(matches!(
            events.last(),
            Some(SessionEvent::ProtocolError(_))
        ));
        // The peer closing mid-request ends the second connection quietly.
        let mut stream = connect(addr);
        stream.write_all(&[0x04, 0x00]).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let (outcome, _) = outcomes.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(outcome, "Ok(Peer)", "{adapter:?}");
    }
}

/// A silent peer: a read timeout reported as `TimedOut` wakes the adapter, and the session's
/// idle timeout closes the connection; one reported otherwise (std's `WouldBlock` through
/// `FromStd`) ends it as a read error.
#[test]
fn a_silent_peer_is_dropped() {
    for (adapter, expected) in [
        (Adapter::Async, "Ok(Session(IdleTimeout))"),
        (Adapter::Blocking, "Err(Read("),
    ] {
        let idle = Duration::from_millis(400);
        let (addr, outcomes) = spawn_server(adapter, file(), None, 1, Some(idle));
        let started = std::time::Instant::now();
        let stream = connect(addr);
        let (outcome, _) = outcomes.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(outcome.starts_with(expected), "{adapter:?}: {outcome}");
        if adapter == Adapter::Async {
            assert!(started.elapsed() >= idle, "{:?}", started.elapsed());
        }
        drop(stream);
    }
}

/// The fetcher, one connection at a time over std TCP, fills a flash store from a server on
/// the other adapter, verifying every block against the manifest.
#[test]
fn the_fetcher_fills_a_store_over_streams() {
    use p2p_core::fetch::{FetchConfig, Fetcher};
    use p2p_core::flash_store::FlashStore;
    use p2p_core::manifest::manifest_digest;
    use p2p_core::ram_flash::RamFlash;
    use p2p_core::{BlockStore, PeerAddr};

    for adapter in [Adapter::Blocking, Adapter::Async] {
        let data = file();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let (addr, _outcomes) = spawn_server(adapter, data.clone(), None, 8, None);
        let mut flash = vec![0u8; 256 * 1024];
        let store: FlashStore<RamFlash<'_>, 64> = FlashStore::open(
            RamFlash::new(&mut flash),
            manifest_digest(data.len() as u32, &digests),
        )
        .unwrap();
        let peer = PeerAddr::new([127, 0, 0, 1], addr.port());
        let started = std::time::Instant::now();
        let mut now = || Instant::from_millis(started.elapsed().as_millis() as u64);
        let mut fetcher: Fetcher<4, 1, 64, 1024> =
            Fetcher::new(FetchConfig::default(), &[peer], now());
        let mut events = Vec::new();
        let mut connections = 0;
        while !fetcher.is_complete() && started.elapsed() < Duration::from_secs(20) {
            fetcher.poll(now(), &store, &mut |e| events.push(format!("{e:?}")));
            let Some((slot, to)) = fetcher.poll_connect(now()) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            assert_eq!(to, peer);
            connections += 1;
            let stream = TcpStream::connect(addr).unwrap();
            // Wakes the fetcher for its timers while nothing arrives.
            stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut stream = Std(stream);
            let (mut rx, mut tx) = ([0u8; 3000], [0u8; 64]);
            let buffers = IoBuffers {
                rx: &mut rx,
                tx: &mut tx,
            };
            let mut on_event = |e| events.push(format!("{e:?}"));
            let result = match adapter {
                Adapter::Blocking => blocking::fetch_connection(
                    &mut stream,
                    &mut fetcher,
                    slot,
                    &store,
                    buffers,
                    &mut now,
                    &mut on_event,
                ),
                Adapter::Async => embassy_futures::block_on(asynch::fetch_connection(
                    &mut stream,
                    &mut fetcher,
                    slot,
                    &store,
                    buffers,
                    &mut now,
                    &mut on_event,
                )),
            };
            result.unwrap();
        }
        assert!(fetcher.is_complete(), "{adapter:?}: {events:?}");
        assert!(
            connections <= 2,
            "{adapter:?}: {connections} connections: {events:?}"
        );
        let mut fetched = vec![0u8; data.len()];
        store.read_at(0, &mut fetched).unwrap();
        assert!(fetched == data, "{adapter:?}: the store holds the file");
    }
}
