//! Stopping a download from any thread: on completion, Ctrl-C or a local I/O failure, every
//! connection is shut down at once instead of waiting out its read timeout.

use crate::exit::Failure;
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Stopping everything: on completion, Ctrl-C or a local I/O failure.
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    fatal: Mutex<Option<Failure>>,
    /// Every open connection, so a stop interrupts reads that would otherwise wait out
    /// the stall timeout.
    streams: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
}

impl Control {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for (_, stream) in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the download because of a local failure, which is reported at the end.
    pub fn fail(&self, failure: Failure) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        fatal.get_or_insert(failure);
        drop(fatal);
        self.stop();
    }

    pub fn take_failure(&self) -> Option<Failure> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Keeps a handle on a connection's socket until [`Control::unregister`].
    pub fn register(&self, stream: TcpStream) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, stream));
        id
    }

    pub fn unregister(&self, id: u64) {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(other, _)| *other != id);
    }
}
