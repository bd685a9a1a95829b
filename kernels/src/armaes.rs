//! Fixed-key AES-128 kernels for the DPF with the ARMv8 Cryptography Extension
//! (`core::arch::aarch64`: `aese` / `aesmc`, 8 blocks in flight), the aarch64
//! counterpart of the AES-NI path of `crate::fastaes`. [`crate::prg::Prg`] picks it at
//! run time when the CPU has the AES instructions (`is_aarch64_feature_detected!("aes")`)
//! and keeps the `aes` crate as the portable fallback; every path computes exactly the
//! same bits (the tests compare them), so keys dealt on x86_64 evaluate identically here.
//!
//! Blocks are `u128` whose little-endian bytes are the AES block, which is also how
//! `vld1q_u8` sees them on little-endian aarch64, so no byte swapping is needed.
//!
//! **Rounds.** x86's `aesenc` is SubBytes, ShiftRows, MixColumns, then the round-key XOR;
//! ARM's `aese(x, k)` XORs the key *first* and then applies SubBytes and ShiftRows, and
//! `aesmc` is MixColumns. So AES-128 is `aesmc(aese(x, rk[r]))` for r = 0 .. 8, then
//! `aese(x, rk[9])` and a final XOR with rk[10]. The MMO feed-forward `AES_k(s) ⊕ s ⊕ c`
//! is folded into that final XOR (`rk[10] ⊕ s ⊕ c`), as the AES-NI path folds it into
//! `aesenclast`.
//!
//! The DPF kernels ([`level`], [`leaves`]) compute exactly what `fastaes::level_ni` and
//! `fastaes::leaves_ni` compute (see that module's docs and `crate::prg::Prg::dpf_level`
//! / `Prg::dpf_leaves`): nodes carry their control bit in the LSB.
//!
//! Every function here is `unsafe` only because it needs CPU features the caller has
//! checked (`Prg` asserts the backend is supported) and slice lengths the caller has
//! checked (documented per function; `Prg`'s wrappers assert them).

// Indexed loops over small fixed arrays of registers (round keys, blocks in flight) read
// like the algorithm and unroll fully.
#![allow(clippy::needless_range_loop)]

use crate::word::Word;
use core::arch::aarch64::*;

/// Expanded AES-128 encryption round keys (round 0 .. 10) as little-endian u128.
pub(crate) type RoundKeys = [u128; 11];

/// Bit 0 (the control bit) cleared, every other bit kept.
const CLEAR: u128 = !1;

/// The AES-128 key schedule of `key` (little-endian bytes), FIPS-197 section 5.2.
/// SubWord uses `aese` with a zero round key on a register holding the word in all four
/// columns: ShiftRows then moves no byte (every row is constant), so the result is
/// SubBytes of the word in every column.
///
/// # Safety
/// The CPU must support NEON and the AES instructions.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn expand_key(key: u128) -> RoundKeys {
    const RCON: [u32; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];
    let sub_word = |w: u32| -> u32 {
        let v = vreinterpretq_u8_u32(vdupq_n_u32(w));
        vgetq_lane_u32::<0>(vreinterpretq_u32_u8(vaeseq_u8(v, vdupq_n_u8(0))))
    };
    // Words w[i] little-endian: byte 0 of the key is the low byte of w[0].
    let mut w = [0u32; 44];
    for (i, wi) in w.iter_mut().take(4).enumerate() {
        *wi = (key >> (32 * i)) as u32;
    }
    for i in 4..44 {
        let mut t = w[i - 1];
        if i % 4 == 0 {
            // RotWord moves byte 1 to byte 0 (a right rotation of the little-endian
            // word); SubWord is byte-wise, so the order of the two does not matter.
            t = sub_word(t).rotate_right(8) ^ RCON[i / 4 - 1];
        }
        w[i] = w[i - 4] ^ t;
    }
    let mut out = [0u128; 11];
    for (r, o) in out.iter_mut().enumerate() {
        *o = (0..4).fold(0u128, |b, j| b | (w[4 * r + j] as u128) << (32 * j));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Small helpers (inlined into the target-feature functions that call them).

#[inline(always)]
unsafe fn ld(p: *const u128) -> uint8x16_t {
    vld1q_u8(p.cast())
}

#[inline(always)]
unsafe fn st(p: *mut u128, v: uint8x16_t) {
    vst1q_u8(p.cast(), v)
}

#[inline(always)]
unsafe fn keys(rk: &RoundKeys) -> [uint8x16_t; 11] {
    let mut k = [vdupq_n_u8(0); 11];
    for r in 0..11 {
        k[r] = ld(&rk[r]);
    }
    k
}

/// AES rounds 1 .. 9 and the SubBytes/ShiftRows of round 10 (everything but the final
/// round-key XOR, which the callers fold with the feed-forward).
///
/// # Safety
/// The CPU must support NEON and the AES instructions.
#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn rounds(k: &[uint8x16_t; 11], x: uint8x16_t) -> uint8x16_t {
    let mut x = x;
    for r in 0..9 {
        x = vaesmcq_u8(vaeseq_u8(x, k[r]));
    }
    vaeseq_u8(x, k[9])
}

/// All ones in a block whose bit 0 is set, zero otherwise.
#[inline(always)]
unsafe fn tmask(v: uint8x16_t) -> uint8x16_t {
    let lo = vreinterpretq_s64_u64(vdupq_laneq_u64::<0>(vreinterpretq_u64_u8(v)));
    vreinterpretq_u8_s64(vshrq_n_s64::<63>(vshlq_n_s64::<63>(lo)))
}

/// Word-wise wrapping addition of the little-endian ring words in a block.
#[inline(always)]
unsafe fn addw<W: Word>(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
    match W::BITS {
        16 => vreinterpretq_u8_u16(vaddq_u16(vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(b))),
        32 => vreinterpretq_u8_u32(vaddq_u32(vreinterpretq_u32_u8(a), vreinterpretq_u32_u8(b))),
        _ => vreinterpretq_u8_u64(vaddq_u64(vreinterpretq_u64_u8(a), vreinterpretq_u64_u8(b))),
    }
}

/// `blocks[i] = AES(blocks[i])` in place, 8 blocks in flight.
///
/// # Safety
/// The CPU must support NEON and the AES instructions.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn encrypt(rk: &RoundKeys, blocks: &mut [u128]) {
    let k = keys(rk);
    let mut chunks = blocks.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut x = [vdupq_n_u8(0); 8];
        for j in 0..8 {
            x[j] = ld(&c[j]);
        }
        for r in 0..9 {
            for xj in x.iter_mut() {
                *xj = vaesmcq_u8(vaeseq_u8(*xj, k[r]));
            }
        }
        for j in 0..8 {
            st(&mut c[j], veorq_u8(vaeseq_u8(x[j], k[9]), k[10]));
        }
    }
    for b in chunks.into_remainder() {
        st(b, veorq_u8(rounds(&k, ld(b)), k[10]));
    }
}

/// One DPF tree level: node i (seed s = v & !1, bit t = v & 1) of key `i >> shift` gets
/// `next[2i] = AES_k0(s) ⊕ s ⊕ (t ? cl[i >> shift] : 0)` and
/// `next[2i + 1] = AES_k1(s) ⊕ s ⊕ (t ? cr[i >> shift] : 0)`; 4 nodes (8 blocks) in
/// flight.
///
/// # Safety
/// The CPU must support NEON and the AES instructions. `next.len() == 2·nodes.len()`,
/// and `cl`, `cr` hold at least `((nodes.len() − 1) >> shift) + 1` blocks (checked by
/// the caller).
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn level(
    rk0: &RoundKeys,
    rk1: &RoundKeys,
    nodes: &[u128],
    next: &mut [u128],
    cl: &[u128],
    cr: &[u128],
    shift: u32,
) {
    let (k0, k1) = (keys(rk0), keys(rk1));
    let n = nodes.len();
    let (np, xp) = (nodes.as_ptr(), next.as_mut_ptr());
    let (clp, crp) = (cl.as_ptr(), cr.as_ptr());
    let clear = ld(&CLEAR);
    // Node i's two children from its seed `s`, mask `m` and the raw rounds `x`, `y`.
    let finish = |i: usize, s, m, x, y| {
        let c = i >> shift;
        let fl = veorq_u8(vandq_u8(ld(clp.add(c)), m), veorq_u8(s, k0[10]));
        let fr = veorq_u8(vandq_u8(ld(crp.add(c)), m), veorq_u8(s, k1[10]));
        st(xp.add(2 * i), veorq_u8(x, fl));
        st(xp.add(2 * i + 1), veorq_u8(y, fr));
    };
    let mut i = 0;
    while i + 4 <= n {
        let mut s = [vdupq_n_u8(0); 4];
        let mut m = s;
        let mut x = s;
        let mut y = s;
        for j in 0..4 {
            let v = ld(np.add(i + j));
            s[j] = vandq_u8(v, clear);
            m[j] = tmask(v);
            x[j] = s[j];
            y[j] = s[j];
        }
        for r in 0..9 {
            for j in 0..4 {
                x[j] = vaesmcq_u8(vaeseq_u8(x[j], k0[r]));
                y[j] = vaesmcq_u8(vaeseq_u8(y[j], k1[r]));
            }
        }
        for j in 0..4 {
            let (xl, yr) = (vaeseq_u8(x[j], k0[9]), vaeseq_u8(y[j], k1[9]));
            finish(i + j, s[j], m[j], xl, yr);
        }
        i += 4;
    }
    while i < n {
        let v = ld(np.add(i));
        let s = vandq_u8(v, clear);
        finish(i, s, tmask(v), rounds(&k0, s), rounds(&k1, s));
        i += 1;
    }
}

/// DPF leaf conversion: node i (seed s, bit t) of key `i >> shift` gives the block
/// `(AES_k2(s) ⊕ s) + (t ? cw[i >> shift] : 0)` (word-wise addition of the
/// little-endian ring words), 128/BITS words per node in `out`; 8 blocks in flight.
///
/// # Safety
/// The CPU must support NEON and the AES instructions. `out.len()·BITS ==
/// 128·nodes.len()`, and `cw` holds at least `((nodes.len() − 1) >> shift) + 1` blocks
/// (checked by the caller).
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn leaves<W: Word>(
    rk2: &RoundKeys,
    nodes: &[u128],
    cw: &[u128],
    shift: u32,
    out: &mut [W],
) {
    let k2 = keys(rk2);
    let n = nodes.len();
    let (np, cp) = (nodes.as_ptr(), cw.as_ptr());
    let op = out.as_mut_ptr().cast::<u128>();
    let clear = ld(&CLEAR);
    let finish = |i: usize, s, m, x| {
        let c = veorq_u8(x, veorq_u8(s, k2[10]));
        let add = vandq_u8(ld(cp.add(i >> shift)), m);
        st(op.add(i), addw::<W>(c, add));
    };
    let mut i = 0;
    while i + 8 <= n {
        let mut s = [vdupq_n_u8(0); 8];
        let mut m = s;
        let mut x = s;
        for j in 0..8 {
            let v = ld(np.add(i + j));
            s[j] = vandq_u8(v, clear);
            m[j] = tmask(v);
            x[j] = s[j];
        }
        for r in 0..9 {
            for xj in x.iter_mut() {
                *xj = vaesmcq_u8(vaeseq_u8(*xj, k2[r]));
            }
        }
        for j in 0..8 {
            finish(i + j, s[j], m[j], vaeseq_u8(x[j], k2[9]));
        }
        i += 8;
    }
    while i < n {
        let v = ld(np.add(i));
        let s = vandq_u8(v, clear);
        finish(i, s, tmask(v), rounds(&k2, s));
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS-197 appendix A.1 (key expansion) and C.1 (cipher), when the CPU has the AES
    /// instructions.
    #[test]
    fn fips197_vectors() {
        if !std::arch::is_aarch64_feature_detected!("aes") {
            return;
        }
        let key = u128::from_le_bytes([
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ]);
        // SAFETY: the CPU has NEON and AES (checked above).
        let rk = unsafe { expand_key(key) };
        assert_eq!(
            rk[10].to_le_bytes(),
            [
                0xd0, 0x14, 0xf9, 0xa8, 0xc9, 0xee, 0x25, 0x89, 0xe1, 0x3f, 0x0c, 0xc8, 0xb6, 0x63,
                0x0c, 0xa6
            ]
        );
        assert_eq!(rk[1].to_le_bytes()[..4], [0xa0, 0xfa, 0xfe, 0x17]);
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let pt: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        // SAFETY: as above.
        let rk = unsafe { expand_key(u128::from_le_bytes(key)) };
        // Every tail length of the 8-block pipeline.
        for len in 0..=17 {
            let mut blocks = vec![u128::from_le_bytes(pt); len];
            // SAFETY: as above.
            unsafe { encrypt(&rk, &mut blocks) };
            for b in blocks {
                assert_eq!(
                    b.to_le_bytes(),
                    [
                        0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80,
                        0x70, 0xb4, 0xc5, 0x5a
                    ]
                );
            }
        }
    }
}
