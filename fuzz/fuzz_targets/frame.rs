//! The TCP frame decoder: header decode and check, and a `FrameReader` over arbitrary
//! bytes delivered in chunks (with receive timeouts in between, so partial frames are
//! resumed). Must never panic, and must refuse payloads above `max_frame`.
//! The body is `protocol::fuzzing::frame`, shared with the regression tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| protocol::fuzzing::frame(data));
