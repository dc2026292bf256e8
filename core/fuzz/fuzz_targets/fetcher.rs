//! The fetcher with four connections fed any response bytes, interleaved with its own
//! requests, closes and timer polls: it never panics, and every block it holds is the file's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_core::fetch::{FetchConfig, Fetcher};
use p2p_core::flash_store::FlashStore;
use p2p_core::manifest::manifest_digest;
use p2p_core::ram_flash::RamFlash;
use p2p_core::store::held;
use p2p_core::{BlockStore, Digest, Geometry, Instant, PeerAddr};

const FILE_SIZE: usize = 5000;

fuzz_target!(|data: &[u8]| {
    let file: Vec<u8> = (0..FILE_SIZE).map(|i| (i * 7 % 253) as u8).collect();
    let digests: Vec<Digest> = file.chunks(1024).map(Digest::of).collect();
    let id = manifest_digest(FILE_SIZE as u32, &digests);
    let mut bytes = vec![0u8; 64 * 1024];
    let store = FlashStore::<_, 8>::open(RamFlash::new(&mut bytes), id).unwrap();
    // Half the cases start with the manifest known, so block data is reached too.
    if data.first().is_some_and(|b| b & 1 == 1) {
        store.begin_manifest(FILE_SIZE as u32).unwrap();
        for (block, digest) in digests.iter().enumerate() {
            store.put_manifest_digest(FILE_SIZE as u32, block as u16, digest).unwrap();
        }
        store.commit_manifest(FILE_SIZE as u32).unwrap();
    }
    let peers: Vec<PeerAddr> = (0..6).map(|i| PeerAddr::new([10, 0, 0, 2 + i], 8888)).collect();
    let mut fetcher = Fetcher::<8, 4, 8, 1024>::new(FetchConfig::default(), &peers, Instant::from_millis(0));
    let mut now = 0u64;
    let mut out = [0u8; 64];
    // Each record: a control byte (slot, action, length) and up to 63 bytes of input.
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control >> 2).min(tail.len());
        let (input, next) = tail.split_at(len);
        rest = next;
        let slot = usize::from(control & 3);
        now += u64::from(control & 0x30) * 10;
        let at = Instant::from_millis(now);
        while let Some((slot, _)) = fetcher.poll_connect(at) {
            fetcher.connected(slot, at);
        }
        fetcher.transmit(slot, &mut out, at, &store);
        let used = fetcher.receive(slot, input, at, &store, &mut |_| {});
        assert!(used <= input.len());
        fetcher.poll(at, &store, &mut |_| {});
        if fetcher.wants_close(slot) || control == 0xFF {
            fetcher.closed(slot, at);
        }
        store.publish();
    }
    for range in held(&store) {
        let span = Geometry::new(FILE_SIZE as u32).span(range).unwrap();
        let mut got = vec![0u8; span.len as usize];
        store.read_at(span.offset, &mut got).unwrap();
        assert_eq!(got, file[span.offset as usize..][..got.len()]);
    }
});
