//! Replays the inputs under `tests/fuzz_regressions/<target>/` (inputs that made a fuzz
//! target of `fuzz/` fail before the bug was fixed) and the fuzzers' committed seeds
//! through the same target bodies (`protocol::fuzzing`): each must now return normally.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    protocol::fuzzing::replay(Path::new(env!("CARGO_MANIFEST_DIR")), target, run)
}

#[test]
fn frame_inputs() {
    assert!(replay("frame", protocol::fuzzing::frame) > 0);
}

#[test]
fn message_inputs() {
    assert!(replay("message", protocol::fuzzing::message) > 0);
}

/// Found by the `message` target: unpacking `n` k-bit indices computed `n · k` without
/// an overflow check. Huge counts and bad widths are now clean errors.
#[test]
fn index_bits_with_a_huge_count_are_an_error() {
    use protocol::{ring, PartyId, ProtocolError};
    for (n, k) in [
        (usize::MAX, 32),
        (usize::MAX / 3, 7),
        (1 << 62, 4),
        (3, 0),
        (3, 33),
    ] {
        match ring::unpack_bits(&[0u8; 64], n, k, PartyId::P0, "index bits") {
            Err(ProtocolError::Malformed { .. }) => {}
            other => panic!("n {n} k {k}: expected Malformed, got {other:?}"),
        }
    }
}

/// Oversized counts in spill-file items are refused by the length check before any
/// allocation sized by them.
#[test]
fn spill_items_with_huge_counts_are_errors() {
    use protocol::prep::{Keys, Prep};
    let mut item = (u64::MAX / 8).to_le_bytes().to_vec();
    item.extend_from_slice(&[0u8; 32]);
    assert!(<Vec<u64> as Prep>::get(&mut item.as_slice()).is_err());
    let mut keys = u64::MAX.to_le_bytes().to_vec();
    keys.push(2); // k = 2
    keys.extend_from_slice(&[0u8; 40]);
    assert!(<Keys<u32> as Prep>::get(&mut keys.as_slice()).is_err());
    keys[8] = 0; // k = 0: not a DPF domain
    assert!(<Keys<u32> as Prep>::get(&mut keys.as_slice()).is_err());
}
