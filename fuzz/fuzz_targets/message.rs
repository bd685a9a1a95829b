//! Decoders of message payloads and of dealer material: bytes to ring vectors of each
//! width (exact and prefix decoding, packed index bits), spill-file items (vectors,
//! tuples, options, DPF key batches) and single DPF keys. Every one must return `Err` on
//! bad input, never panic or allocate more than the input justifies.
#![no_main]

use kernels::dpf::DpfKey;
use libfuzzer_sys::fuzz_target;
use protocol::prep::{Keys, Prep};
use protocol::ring;
use protocol::PartyId;

fn vecs<R: protocol::ring::Ring>(buf: &[u8], n: usize) {
    if let Ok(v) = ring::decode_exact::<R>(buf, n, PartyId::P1, "fuzz") {
        assert_eq!(v.len(), n);
        let mut back = vec![];
        ring::encode(&v, &mut back);
        assert_eq!(back, buf, "decode/encode round trip");
    }
    if let Ok((v, rest)) = ring::decode::<R>(buf, n, PartyId::P0, "fuzz") {
        assert_eq!(v.len() * (R::BITS as usize / 8) + rest.len(), buf.len());
    }
    let mut b = buf;
    let _ = <Vec<R> as Prep>::get(&mut b);
    let mut b = buf;
    let _ = <(Vec<R>, Option<(Vec<R>, Vec<R>, Vec<R>)>) as Prep>::get(&mut b);
    let mut b = buf;
    if let Ok(Keys(keys)) = <Keys<R> as Prep>::get(&mut b) {
        if keys.is_empty() {
            return;
        }
        // A decoded key re-encodes to the bytes it came from (canonical format).
        let mut out = vec![];
        Keys(keys).put(&mut out);
        assert_eq!(&out[..], &buf[..buf.len() - b.len()], "keys round trip");
    }
}

fn dpf<R: protocol::ring::Ring>(k: u32, buf: &[u8]) {
    if let Ok((key, used)) = DpfKey::<R>::read_from(k, buf) {
        let mut out = vec![];
        key.write_to(&mut out);
        assert_eq!(&out[..], &buf[..used], "DPF key round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // Byte 0: which decoder; bytes 1-2: the expected element count (small, so that a
    // matching payload is reachable); the rest is the payload.
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let buf = &data[3..];
    match data[0] % 6 {
        0 => vecs::<u16>(buf, n),
        1 => vecs::<u32>(buf, n),
        2 => vecs::<u64>(buf, n),
        3 => {
            let k = 1 + (data[1] as u32 % 32);
            if let Ok((idx, rest)) = ring::unpack_bits(buf, n, k, PartyId::P0, "fuzz") {
                assert_eq!(idx.len(), n);
                let mut packed = vec![];
                ring::pack_bits(&idx, k, &mut packed);
                assert_eq!(packed.len() + rest.len(), buf.len());
            }
        }
        4 => {
            let k = data[1] as u32 % 26;
            match data[2] % 3 {
                0 => dpf::<u16>(k, buf),
                1 => dpf::<u32>(k, buf),
                _ => dpf::<u64>(k, buf),
            }
        }
        _ => {
            // Huge counts: must be refused by the length check, not by an allocation.
            let n = usize::MAX >> (data[1] % 64);
            let _ = ring::decode::<u64>(buf, n, PartyId::P1, "fuzz");
            let _ = ring::unpack_bits(buf, n, 1 + data[2] as u32 % 32, PartyId::P0, "fuzz");
        }
    }
});
