//! The model loader on hostile checkpoints. Mode 0: the input is the file (seeds are
//! valid small checkpoints). Mode 1 (structure-aware): a valid checkpoint of a small
//! config is built in memory, and the input is a list of edits to its header (dtype,
//! shape, name, data offsets of a tensor; a tensor removed or added; metadata; a
//! truncation). Loading must return `Ok` or `Err`, never panic, and never allocate for
//! a tensor its bytes do not back.
//! The body is `harness::fuzzing::safetensors`, shared with the regression tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| harness::fuzzing::safetensors(data));
