//! The TCP frame decoder: header decode and check, and a `FrameReader` over arbitrary
//! bytes delivered in chunks (with receive timeouts in between, so partial frames are
//! resumed). Must never panic, and must refuse payloads above `max_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First 4 bytes: chunk size, stall flag and the max_frame exponent; the rest is
    // the byte stream.
    if data.len() < 4 {
        return;
    }
    let chunk = 1 + (data[0] as usize % 64) * (1 + data[1] as usize % 32);
    let stall = data[2] & 1 == 1;
    let max_frame = 1usize << (data[3] % 21);
    let stream = &data[4..];
    let (_, err) = protocol::net::fuzzing::read_frames(stream, 7, max_frame, chunk, stall);
    if let Some(protocol::net::NetError::FrameTooLong { len, max }) = err {
        assert!(len > max && max == max_frame);
    }
});
