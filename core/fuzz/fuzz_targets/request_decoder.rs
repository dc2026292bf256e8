//! Request::parse on any bytes: never panics, a complete parse re-emits the same bytes, and
//! every prefix of a complete request is Incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_core::wire::{Parsed, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete { value, len }) = Request::parse(data) {
        let mut out = [0u8; Request::MAX_LEN];
        let written = value.emit(&mut out).unwrap();
        assert_eq!(written, len);
        assert_eq!(&out[..len], &data[..len]);
        for cut in 0..len {
            assert_eq!(Request::parse(&data[..cut]), Ok(Parsed::Incomplete));
        }
    }
});
