//! Parsers of user and file input: `--quant` (QuantConfig::parse, then the protocol
//! constants for a few sequence lengths), `--net` (NetProfile::parse, then the modelled
//! delivery times), a HuggingFace `config.json`, and a head JSON file. Byte 0 picks the
//! parser; the rest is the text.
//! The body is `harness::fuzzing::config`, shared with the regression tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| harness::fuzzing::config(data));
