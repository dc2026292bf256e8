//! The block-range text parser on any text: never panics, and what it accepts prints back to a
//! text that parses to the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_core::BlockRanges;

fuzz_target!(|text: &str| {
    if let Ok(set) = text.parse::<BlockRanges<16>>() {
        let printed = set.to_string();
        assert_eq!(printed.parse::<BlockRanges<16>>().unwrap(), set);
        for pair in set.as_slice().windows(2) {
            assert!(u32::from(pair[0].end()) + 1 < u32::from(pair[1].start()));
        }
    }
});
