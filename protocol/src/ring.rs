//! Rings Z/2^l for l in {16, 32, 64}, their wire encodings and explicit width casts.
//!
//! The ring trait is the kernels crate's [`Word`]: one trait for every width, so a block
//! written once runs in each ring. Casts between widths are always explicit:
//! [`cast_down`] reduces mod 2^l' (valid on additive shares: reduction commutes with
//! addition), and going up needs a table (block 8), never a local cast.

pub use kernels::word::Word as Ring;

use crate::error::{ProtocolError, Result};
use crate::net::PartyId;

/// Reduce every element mod 2^(T::BITS); requires `T::BITS <= S::BITS`.
pub fn cast_down<S: Ring, T: Ring>(v: &[S]) -> Vec<T> {
    debug_assert!(T::BITS <= S::BITS);
    v.iter().map(|x| T::from_u64(x.to_u64())).collect()
}

/// Reduce signed integers into the ring.
pub fn from_i64s<R: Ring>(v: &[i64]) -> Vec<R> {
    v.iter().map(|&x| R::from_i64(x)).collect()
}

/// Signed representatives.
pub fn to_i64s<R: Ring>(v: &[R]) -> Vec<i64> {
    v.iter().map(|x| x.to_i64()).collect()
}

/// Little-endian wire encoding: BITS/8 bytes per element.
pub fn encode<R: Ring>(v: &[R], out: &mut Vec<u8>) {
    out.extend_from_slice(bytemuck::cast_slice(v));
}

/// Decode exactly `n` ring elements from the front of `buf`; returns them and the rest.
pub fn decode<'a, R: Ring>(
    buf: &'a [u8],
    n: usize,
    from: PartyId,
    what: &'static str,
) -> Result<(Vec<R>, &'a [u8])> {
    let w = (R::BITS / 8) as usize;
    let need = n
        .checked_mul(w)
        .ok_or_else(|| malformed(from, what, "length overflow".into()))?;
    if buf.len() < need {
        return Err(malformed(
            from,
            what,
            format!("need {need} bytes, got {}", buf.len()),
        ));
    }
    let (head, rest) = buf.split_at(need);
    let mut v = vec![R::ZERO; n];
    bytemuck::cast_slice_mut::<R, u8>(&mut v).copy_from_slice(head);
    Ok((v, rest))
}

/// Decode a whole buffer that must hold exactly `n` elements.
pub fn decode_exact<R: Ring>(
    buf: &[u8],
    n: usize,
    from: PartyId,
    what: &'static str,
) -> Result<Vec<R>> {
    let (v, rest) = decode(buf, n, from, what)?;
    if !rest.is_empty() {
        return Err(malformed(
            from,
            what,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(v)
}

pub(crate) fn malformed(from: PartyId, what: &'static str, detail: String) -> ProtocolError {
    ProtocolError::Malformed { from, what, detail }
}

/// Pack k-bit indices (k <= 32) into a little-endian bit stream: ceil(n k / 8) bytes.
/// Used for the index bits P0 sends after a linear layer: only log2(table size) bits
/// per output cross the wire.
pub fn pack_bits(idx: &[u32], k: u32, out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut nacc: u32 = 0;
    let mask = if k == 32 { u32::MAX } else { (1u32 << k) - 1 };
    out.reserve((idx.len() * k as usize).div_ceil(8));
    for &v in idx {
        acc |= ((v & mask) as u64) << nacc;
        nacc += k;
        while nacc >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nacc -= 8;
        }
    }
    if nacc > 0 {
        out.push(acc as u8);
    }
}

/// Inverse of [`pack_bits`]; errors if `k` is outside 1..=32 or `buf` is too short
/// (checked before allocating; `n · k` may not overflow).
pub fn unpack_bits<'a>(
    buf: &'a [u8],
    n: usize,
    k: u32,
    from: PartyId,
    what: &'static str,
) -> Result<(Vec<u32>, &'a [u8])> {
    if !(1..=32).contains(&k) {
        return Err(malformed(
            from,
            what,
            format!("index width {k} outside 1..=32"),
        ));
    }
    let need = n
        .checked_mul(k as usize)
        .ok_or_else(|| malformed(from, what, "length overflow".into()))?
        .div_ceil(8);
    if buf.len() < need {
        return Err(malformed(
            from,
            what,
            format!("need {need} bytes of index bits, got {}", buf.len()),
        ));
    }
    let (head, rest) = buf.split_at(need);
    let mask = if k == 32 {
        u32::MAX as u64
    } else {
        (1u64 << k) - 1
    };
    let mut out = Vec::with_capacity(n);
    let mut acc: u64 = 0;
    let mut nacc: u32 = 0;
    let mut it = head.iter();
    for _ in 0..n {
        while nacc < k {
            acc |= (*it.next().unwrap_or(&0) as u64) << nacc;
            nacc += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= k;
        nacc -= k;
    }
    Ok((out, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn bit_packing_round_trips_for_every_width() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for k in 1..=32u32 {
            for n in [0usize, 1, 7, 8, 9, 100] {
                let m = if k == 32 { u32::MAX } else { (1 << k) - 1 };
                let v: Vec<u32> = (0..n).map(|_| rng.gen::<u32>() & m).collect();
                let mut buf = vec![];
                pack_bits(&v, k, &mut buf);
                assert_eq!(buf.len(), (n * k as usize).div_ceil(8));
                let (w, rest) = unpack_bits(&buf, n, k, PartyId::P0, "t").unwrap();
                assert!(rest.is_empty());
                assert_eq!(v, w, "k={k} n={n}");
            }
        }
        assert!(unpack_bits(&[1, 2], 3, 12, PartyId::P0, "t").is_err());
        // Found by fuzzing (fuzz/ message target): n * k overflowed (a panic with
        // overflow checks, a wrong length check without).
        assert!(unpack_bits(&[1, 2], usize::MAX / 2, 12, PartyId::P0, "t").is_err());
        assert!(unpack_bits(&[1, 2], 1, 0, PartyId::P0, "t").is_err());
        assert!(unpack_bits(&[0; 16], 1, 64, PartyId::P0, "t").is_err());
    }

    #[test]
    fn encode_decode_and_errors() {
        let v: Vec<u32> = vec![0, 1, u32::MAX, 1 << 31];
        let mut buf = vec![];
        encode(&v, &mut buf);
        assert_eq!(buf.len(), 16);
        assert_eq!(decode_exact::<u32>(&buf, 4, PartyId::P1, "t").unwrap(), v);
        assert!(decode_exact::<u32>(&buf, 3, PartyId::P1, "t").is_err());
        assert!(decode_exact::<u32>(&buf[..15], 4, PartyId::P1, "t").is_err());
        assert!(decode::<u64>(&buf, usize::MAX, PartyId::P1, "t").is_err());
        let c: Vec<u16> = cast_down::<u32, u16>(&[0x1_2345, u32::MAX]);
        assert_eq!(c, vec![0x2345, 0xffff]);
    }
}
