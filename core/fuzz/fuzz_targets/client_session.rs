//! A client session with a few requests outstanding, fed any response bytes: never panics,
//! consumes or reports on every call, and hands out block data only inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_core::client::{ClientError, ClientEvent, ClientLimits, ClientSession};
use p2p_core::wire::Request;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, stream)) = data.split_first() else { return };
    let mut client = ClientSession::<4>::new(ClientLimits { max_peers: 64, max_ranges: 64 });
    let file_size = 3000;
    client.set_file_size(file_size);
    let requests = [
        Request::PeerList,
        Request::BlockList,
        Request::FileSize,
        Request::Block { start: 1, end: 2 },
    ];
    for index in 0..4 {
        client.send(requests[(usize::from(choice) + index) % 4], &mut [0u8; 8]).unwrap();
    }
    let chunk = usize::from(choice >> 4) + 1;
    for piece in stream.chunks(chunk) {
        let mut at = 0;
        while at < piece.len() {
            let step = match client.receive(&piece[at..]) {
                Ok(step) => step,
                Err(ClientError::Desync) => panic!("the session lost its place"),
                Err(_) => return,
            };
            assert!(step.consumed > 0 || step.event.is_some());
            at += step.consumed;
            if let Some(ClientEvent::BlockData { offset, data }) = step.event {
                assert!(offset as usize + data.len() <= file_size as usize);
            }
        }
    }
});
