//! Decoders of message payloads and of dealer material: bytes to ring vectors of each
//! width (exact and prefix decoding, packed index bits), spill-file items (vectors,
//! tuples, options, DPF key batches) and single DPF keys. Every one must return `Err` on
//! bad input, never panic or allocate more than the input justifies.
//! The body is `protocol::fuzzing::message`, shared with the regression tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| protocol::fuzzing::message(data));
