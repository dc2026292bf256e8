//! The blocking adapter: serving and requesting over [`embedded_io::Read`] +
//! [`embedded_io::Write`] streams.
//!
//! ```no_run
//! use embedded_io_adapters::std::FromStd;
//! use p2p_core::io::{IoBuffers, blocking};
//! use p2p_core::server::ServerConfig;
//! use p2p_core::{Instant, SliceStore};
//!
//! let data = b"hello, p2p-blocks";
//! let store = SliceStore::<1>::new(data).unwrap();
//! let listener = std::net::TcpListener::bind(("127.0.0.1", p2p_core::DEFAULT_PORT)).unwrap();
//! let started = std::time::Instant::now();
//! for stream in listener.incoming() {
//!     let mut stream = FromStd::new(stream.unwrap());
//!     let (mut rx, mut tx) = ([0u8; 64], [0u8; 1024]);
//!     let buffers = IoBuffers { rx: &mut rx, tx: &mut tx };
//!     let mut now = || Instant::from_millis(started.elapsed().as_millis() as u64);
//!     let ended = blocking::serve_connection(
//!         &mut stream,
//!         ServerConfig::new(&store, &[]),
//!         buffers,
//!         &mut now,
//!         &mut |event| println!("{event:?}"),
//!     );
//!     println!("{ended:?}");
//! }
//! ```

use super::{
    ClientCore, Decoded, Ended, IoBuffers, RequestError, ServeError, ServeLoop, ServeStep,
};
use crate::client::{ClientEvent, ClientLimits, ClientSession};
use crate::fetch::{FetchEvent, Fetcher};
use crate::flash_store::FlashStore;
use crate::server::{PIPELINE_DEPTH, ServerConfig, SessionEvent};
use crate::time::Instant;
use crate::wire::Request;
use embedded_io::{Read, Write};
use embedded_storage::nor_flash::NorFlash;

/// Writes all of `bytes`; `Err(None)` if the stream took none of a write.
fn write_all<S: Write>(stream: &mut S, mut bytes: &[u8]) -> Result<(), Option<S::Error>> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(None),
            Ok(written) => bytes = bytes.get(written..).unwrap_or_default(),
            Err(error) => return Err(Some(error)),
        }
    }
    Ok(())
}

/// Serves one connection on `stream` until it ends: reads requests, feeds them to a
/// [`ServerSession`](crate::server::ServerSession) on `config`, and writes its answers, in
/// order, as they are produced. Returns how it ended; the stream is not closed (drop it).
///
/// `now` is the time in milliseconds on any clock the caller keeps; it is asked after every
/// read and write, for the session's idle timeout. A read that fails with
/// [`ErrorKind::TimedOut`](embedded_io::ErrorKind::TimedOut) or
/// [`ErrorKind::Interrupted`](embedded_io::ErrorKind::Interrupted) is only a wakeup: the
/// session checks its idle deadline and the read is retried. Any other error ends the
/// connection (see the [module docs](super) on time). `on_event` sees every request
/// as it is accepted or refused, for the caller's log.
pub fn serve_connection<S: Read + Write>(
    stream: &mut S,
    config: ServerConfig<'_>,
    buffers: IoBuffers<'_>,
    now: &mut dyn FnMut() -> Instant,
    on_event: &mut dyn FnMut(SessionEvent),
) -> Result<Ended, ServeError<S::Error>> {
    let mut serving = ServeLoop::new(config, buffers, now());
    if !serving.has_buffers() {
        return Err(ServeError::NoBuffer);
    }
    loop {
        match serving.next(now(), on_event) {
            ServeStep::Write(bytes) => {
                write_all(stream, bytes)
                    .map_err(|e| e.map_or(ServeError::WriteZero, ServeError::Write))?;
                serving.written();
            }
            ServeStep::Flush => {
                stream.flush().map_err(ServeError::Write)?;
                serving.flushed();
            }
            ServeStep::Read(buffer) => {
                match stream.read(buffer) {
                    Ok(len) => serving.read(len),
                    // A wakeup: the session checks its idle deadline, then the read is retried.
                    Err(error) if super::is_wakeup(&error) => {}
                    Err(error) => return Err(ServeError::Read(error)),
                }
            }
            ServeStep::Done(ended) => return Ok(ended),
        }
    }
}

/// Runs the [`Fetcher`]'s connection `slot` on `stream` until the fetcher is done with it,
/// the fetch is complete, or the stream ends; returns having told the fetcher
/// [`closed`](Fetcher::closed) (the stream is left to the caller to close).
///
/// Open `stream` to the peer [`Fetcher::poll_connect`] named for `slot` first; this reports
/// it [`connected`](Fetcher::connected). The fetcher's requests are put together in
/// `buffers.tx` and its answers read into `buffers.rx` (a few KiB: the bytes in flight per
/// read). Block data is verified and written to `store` as it arrives, exactly as with the
/// smoltcp fetch driver.
///
/// The fetcher has timers (stall, refresh, rotation), and this waits in `read` between
/// answers: the stream needs a read timeout that fails with
/// [`ErrorKind::TimedOut`](embedded_io::ErrorKind::TimedOut), shorter than the
/// [`FetchConfig`](crate::fetch::FetchConfig) refresh (500 ms by default), so the fetcher is
/// polled while nothing arrives. Without one a connection whose peer has nothing more to
/// give waits until the peer closes it.
#[allow(clippy::too_many_arguments)]
pub fn fetch_connection<
    S: Read + Write,
    F: NorFlash,
    const P: usize,
    const C: usize,
    const B: usize,
    const K: usize,
    const SB: usize,
>(
    stream: &mut S,
    fetcher: &mut Fetcher<P, C, B, K>,
    slot: usize,
    store: &FlashStore<F, SB>,
    buffers: IoBuffers<'_>,
    now: &mut dyn FnMut() -> Instant,
    on_event: &mut dyn FnMut(FetchEvent),
) -> Result<(), ServeError<S::Error>> {
    fetcher.connected(slot, now());
    let result = fetch_rounds(stream, fetcher, slot, store, buffers, now, on_event);
    fetcher.closed(slot, now());
    result
}

#[allow(clippy::too_many_arguments)]
fn fetch_rounds<
    S: Read + Write,
    F: NorFlash,
    const P: usize,
    const C: usize,
    const B: usize,
    const K: usize,
    const SB: usize,
>(
    stream: &mut S,
    fetcher: &mut Fetcher<P, C, B, K>,
    slot: usize,
    store: &FlashStore<F, SB>,
    buffers: IoBuffers<'_>,
    now: &mut dyn FnMut() -> Instant,
    on_event: &mut dyn FnMut(FetchEvent),
) -> Result<(), ServeError<S::Error>> {
    if buffers.rx.is_empty() || buffers.tx.is_empty() {
        return Err(ServeError::NoBuffer);
    }
    loop {
        let time = now();
        fetcher.poll(time, store, on_event);
        let mut wrote = false;
        while !fetcher.wants_close(slot) && fetcher.wants_transmit(slot, time, store) {
            let len = fetcher.transmit(slot, buffers.tx, time, store);
            if len == 0 {
                break;
            }
            write_all(stream, buffers.tx.get(..len).unwrap_or_default())
                .map_err(|e| e.map_or(ServeError::WriteZero, ServeError::Write))?;
            wrote = true;
        }
        if wrote {
            stream.flush().map_err(ServeError::Write)?;
        }
        if fetcher.wants_close(slot) || fetcher.is_complete() {
            return Ok(());
        }
        let len = match stream.read(buffers.rx) {
            Ok(0) => return Ok(()),
            Ok(len) => len,
            Err(error) if super::is_wakeup(&error) => continue,
            Err(error) => return Err(ServeError::Read(error)),
        };
        let mut at = 0;
        while at < len {
            let input = buffers.rx.get(at..len).unwrap_or_default();
            let used = fetcher.receive(slot, input, now(), store, on_event);
            if used == 0 {
                break;
            }
            at += used;
        }
    }
}

/// The client side of one connection: sends requests, and decodes the answers with a
/// [`ClientSession`] of `Q` outstanding requests (pipelined), reading into a buffer the
/// caller owns.
///
/// Block data must be asked for once the file size is known: [`Client::file_size`] (or any
/// File Size Response received) tells the session; [`Client::fetch_blocks`] asks for it
/// first if need be.
pub struct Client<'b, S, const Q: usize = PIPELINE_DEPTH> {
    stream: S,
    core: ClientCore<'b, Q>,
}

impl<'b, S: Read + Write, const Q: usize> Client<'b, S, Q> {
    /// A client on `stream`, reading into `rx` (any size; larger means fewer reads), that
    /// accepts lists up to `limits`.
    pub fn new(stream: S, limits: ClientLimits, rx: &'b mut [u8]) -> Self {
        Self {
            stream,
            core: ClientCore::new(ClientSession::new(limits), rx),
        }
    }

    /// The session: the file size it knows, the requests outstanding.
    pub fn session(&self) -> &ClientSession<Q> {
        &self.core.session
    }

    /// The stream, for settings such as timeouts.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Sends `request` (and flushes) without waiting for its answer: up to `Q` may be
    /// outstanding; [`Client::receive`] reads their answers in order.
    pub fn send(&mut self, request: Request) -> Result<(), RequestError<S::Error>> {
        let mut out = [0u8; Request::MAX_LEN];
        let len = self.core.encode(request, &mut out)?;
        write_all(&mut self.stream, out.get(..len).unwrap_or_default())
            .map_err(|e| e.map_or(RequestError::WriteZero, RequestError::Write))?;
        self.stream.flush().map_err(RequestError::Write)
    }

    /// Reads until the answer to the oldest outstanding request is complete, handing every
    /// piece of it to `on_event`; returns that request. A Block Response Failure is a
    /// complete answer too (its reason is a [`ClientEvent::BlockFailure`]).
    pub fn receive(
        &mut self,
        on_event: &mut dyn FnMut(ClientEvent<'_>),
    ) -> Result<Request, RequestError<S::Error>> {
        loop {
            match self.core.decode(on_event)? {
                Decoded::Completed(request) => return Ok(request),
                Decoded::ServerError => return Err(RequestError::ServerError),
                Decoded::NeedInput => {}
            }
            if self.core.session.outstanding() == 0 {
                return Err(RequestError::NothingOutstanding);
            }
            let buffer = self.core.read_buffer();
            if buffer.is_empty() {
                return Err(RequestError::NoBuffer);
            }
            let len = self.stream.read(buffer).map_err(RequestError::Read)?;
            if len == 0 {
                return Err(RequestError::Eof);
            }
            self.core.read(len);
        }
    }

    /// Sends `request` and reads until every outstanding answer is in, handing each piece to
    /// `on_event`. Fails with [`RequestError::Refused`] if the last answer was a Block
    /// Response Failure.
    pub fn request(
        &mut self,
        request: Request,
        on_event: &mut dyn FnMut(ClientEvent<'_>),
    ) -> Result<(), RequestError<S::Error>> {
        self.send(request)?;
        let mut refused = false;
        while self.core.session.outstanding() > 0 {
            refused = false;
            self.receive(&mut |event| {
                refused |= matches!(event, ClientEvent::BlockFailure(_));
                on_event(event);
            })?;
        }
        if refused {
            return Err(RequestError::Refused);
        }
        Ok(())
    }

    /// Asks the file size (and remembers it, so block data can be decoded).
    pub fn file_size(&mut self) -> Result<u32, RequestError<S::Error>> {
        let mut size = None;
        self.request(Request::FileSize, &mut |event| {
            if let ClientEvent::FileSize(bytes) = event {
                size = Some(bytes);
            }
        })?;
        // A File Size Request is only ever completed by a File Size Response.
        size.ok_or(RequestError::Session(crate::client::ClientError::Closed))
    }

    /// Fetches blocks `start..=end`, handing their bytes to `on_data` in order as they arrive,
    /// each with its offset in the file. Asks the file size first if the session does not
    /// know it. The bytes are not checked against any digest: verify them against the
    /// manifest ([`crate::manifest::BlockAssembler`]) before trusting them.
    pub fn fetch_blocks(
        &mut self,
        start: u16,
        end: u16,
        on_data: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), RequestError<S::Error>> {
        if self.core.session.geometry().is_none() {
            self.file_size()?;
        }
        self.request(Request::Block { start, end }, &mut |event| {
            if let ClientEvent::BlockData { offset, data } = event {
                on_data(offset, data);
            }
        })
    }
}
