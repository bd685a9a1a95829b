//! The bodies of the fuzz targets in `fuzz/` (not part of the API; hidden from docs).
//! The fuzzers and the regression tests that replay their findings
//! (`tests/fuzz_regressions.rs`) call the same functions. Each must return normally on
//! any input: a panic is a bug.

use crate::blocks::exact::CarryKeys;
use crate::prep::{Keys, Prep};
use crate::ring;
use crate::PartyId;
use kernels::dcf::DcfKey;
use kernels::dpf::DpfKey;

/// The TCP frame decoder: header decode and check, and a `FrameReader` over arbitrary
/// bytes delivered in chunks (with receive timeouts in between, so partial frames are
/// resumed). Must never panic, and must refuse payloads above `max_frame`.
pub fn frame(data: &[u8]) {
    // First 4 bytes: chunk size, stall flag and the max_frame exponent; the rest is
    // the byte stream.
    if data.len() < 4 {
        return;
    }
    let chunk = 1 + (data[0] as usize % 64) * (1 + data[1] as usize % 32);
    let stall = data[2] & 1 == 1;
    let max_frame = 1usize << (data[3] % 21);
    let stream = &data[4..];
    let (_, err) = crate::net::fuzzing::read_frames(stream, 7, max_frame, chunk, stall);
    if let Some(crate::net::NetError::FrameTooLong { len, max }) = err {
        assert!(len > max && max == max_frame);
    }
}

fn vecs<R: crate::ring::Ring>(buf: &[u8], n: usize) {
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
        // Each key decodes as a single key too, to the same key.
        let mut one = vec![];
        keys.write_to(&mut one);
        let kb = one.len() / keys.len();
        for i in 0..keys.len() {
            let (key, used) = DpfKey::<R>::read_from(keys.k(), &one[i * kb..])
                .expect("a batch key decodes alone");
            assert_eq!(used, kb);
            assert_eq!(key, keys.key(i), "batch and single decoding agree");
        }
        // A decoded key re-encodes to the bytes it came from (canonical format).
        let mut out = vec![];
        Keys(keys).put(&mut out);
        assert_eq!(&out[..], &buf[..buf.len() - b.len()], "keys round trip");
    }
}

fn dpf<R: crate::ring::Ring>(k: u32, buf: &[u8]) {
    if let Ok((key, used)) = DpfKey::<R>::read_from(k, buf) {
        let mut out = vec![];
        key.write_to(&mut out);
        assert_eq!(&out[..], &buf[..used], "DPF key round trip");
    }
}

/// Decoders of message payloads and of dealer material: bytes to ring vectors of each
/// width (exact and prefix decoding, packed index bits), spill-file items (vectors,
/// tuples, options, DPF and DCF key batches) and single DPF and DCF keys. Every one must return `Err` on
/// bad input, never panic or allocate more than the input justifies.
pub fn message(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    // Byte 0: which decoder; bytes 1-2: the expected element count (small, so that a
    // matching payload is reachable); the rest is the payload.
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let buf = &data[3..];
    match data[0] % 7 {
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
        6 => {
            // exact truncation's DCF keys, single and as a spill-file batch
            let bits = data[1] as u32 % 66;
            if let Ok((key, used)) = DcfKey::<u32>::read_from(bits, buf) {
                let mut out = vec![];
                key.write_to(&mut out);
                assert_eq!(&out[..], &buf[..used], "DCF key round trip");
            }
            let mut b = buf;
            if let Ok(CarryKeys(keys)) = <CarryKeys as Prep>::get(&mut b) {
                let mut out = vec![];
                CarryKeys(keys).put(&mut out);
                assert_eq!(
                    &out[..],
                    &buf[..buf.len() - b.len()],
                    "DCF batch round trip"
                );
            }
        }
        _ => {
            // Huge counts: must be refused by the length check, not by an allocation.
            let n = usize::MAX >> (data[1] % 64);
            let _ = ring::decode::<u64>(buf, n, PartyId::P1, "fuzz");
            let _ = ring::unpack_bits(buf, n, 1 + data[2] as u32 % 32, PartyId::P0, "fuzz");
        }
    }
}

/// Replays every input under `root/tests/fuzz_regressions/<target>/` and the fuzzers'
/// committed seeds `root/../fuzz/seeds/<target>/` through `run` (for the regression
/// tests of the crate at `root`); returns how many ran. Panics on unreadable files.
pub fn replay(root: &std::path::Path, target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in [
        root.join("tests/fuzz_regressions").join(target),
        root.join("../fuzz/seeds").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "py") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            run(&bytes);
            n += 1;
        }
    }
    n
}
