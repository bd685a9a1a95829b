//! Fixed-key AES-128 kernels for the DPF written with `core::arch::x86_64` intrinsics:
//! a VAES + AVX-512 path (4 blocks per zmm register, 8 registers in flight) and an
//! AES-NI path (8 xmm blocks in flight). [`crate::prg::Prg`] picks one at run time and
//! keeps the `aes` crate as the portable fallback; all paths compute exactly the same
//! bits (the tests compare them).
//!
//! Blocks are `u128` whose little-endian bytes are the AES block, which is also how an
//! unaligned 128-bit load sees them on x86, so no byte swapping is needed. The MMO
//! feed-forward `AES_k(s) ⊕ s ⊕ c` is folded into the last round: `aesenclast` XORs its
//! round key last, so `aesenclast(x, rk10 ⊕ s ⊕ c)` gives it in one instruction.
//!
//! The DPF kernels work on nodes that carry the control bit in the LSB (see
//! `crate::dpf`): for node i (seed s = v & !1, bit t = v & 1) of key i >> shift,
//! [`level_vaes`] / [`level_ni`] write the corrected children
//! `next[2i] = AES_k0(s) ⊕ s ⊕ (t ? cl[i >> shift] : 0)` and
//! `next[2i + 1] = AES_k1(s) ⊕ s ⊕ (t ? cr[i >> shift] : 0)`, and [`leaves_vaes`] /
//! [`leaves_ni`] write the leaf block `(AES_k2(s) ⊕ s) + (t ? cw[i >> shift] : 0)`
//! (word-wise addition of the little-endian ring words); [`leaves_dot_vaes`] converts
//! the DPF's 4-block leaves (one zmm register each, the blocks' tweaks in the lanes) and
//! feeds those leaf words straight into the rotated table product of the evaluators.
//!
//! Every function here is `unsafe` only because it needs CPU features the caller has
//! checked (`Prg` asserts the backend is supported) and slice lengths the caller has
//! checked (documented per function; `Prg`'s wrappers assert them).

// Indexed loops over small fixed arrays of registers (round keys, blocks in flight) read
// like the algorithm and unroll fully.
#![allow(clippy::needless_range_loop)]

use crate::lut::DotTable;
use crate::word::Word;
use core::arch::x86_64::*;

/// Expanded AES-128 encryption round keys (round 0 .. 10) as little-endian u128.
pub(crate) type RoundKeys = [u128; 11];

/// The AES-128 key schedule of `key` (little-endian bytes) via `aeskeygenassist`.
///
/// # Safety
/// The CPU must support AES-NI.
#[target_feature(enable = "aes")]
pub(crate) unsafe fn expand_key(key: u128) -> RoundKeys {
    #[inline(always)]
    unsafe fn step(k: __m128i, t: __m128i) -> __m128i {
        let t = _mm_shuffle_epi32::<0xff>(t);
        let mut k = k;
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        _mm_xor_si128(k, t)
    }
    let mut rk = [_mm_setzero_si128(); 11];
    rk[0] = ld(&key);
    rk[1] = step(rk[0], _mm_aeskeygenassist_si128::<0x01>(rk[0]));
    rk[2] = step(rk[1], _mm_aeskeygenassist_si128::<0x02>(rk[1]));
    rk[3] = step(rk[2], _mm_aeskeygenassist_si128::<0x04>(rk[2]));
    rk[4] = step(rk[3], _mm_aeskeygenassist_si128::<0x08>(rk[3]));
    rk[5] = step(rk[4], _mm_aeskeygenassist_si128::<0x10>(rk[4]));
    rk[6] = step(rk[5], _mm_aeskeygenassist_si128::<0x20>(rk[5]));
    rk[7] = step(rk[6], _mm_aeskeygenassist_si128::<0x40>(rk[6]));
    rk[8] = step(rk[7], _mm_aeskeygenassist_si128::<0x80>(rk[7]));
    rk[9] = step(rk[8], _mm_aeskeygenassist_si128::<0x1b>(rk[8]));
    rk[10] = step(rk[9], _mm_aeskeygenassist_si128::<0x36>(rk[9]));
    let mut out = [0u128; 11];
    for (o, &k) in out.iter_mut().zip(&rk) {
        st(o, k);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Small helpers (inlined into the target-feature functions that call them).

#[inline(always)]
unsafe fn ld(p: *const u128) -> __m128i {
    _mm_loadu_si128(p.cast())
}

#[inline(always)]
unsafe fn st(p: *mut u128, v: __m128i) {
    _mm_storeu_si128(p.cast(), v)
}

#[inline(always)]
unsafe fn keys128(rk: &RoundKeys) -> [__m128i; 11] {
    let mut k = [_mm_setzero_si128(); 11];
    for r in 0..11 {
        k[r] = ld(&rk[r]);
    }
    k
}

#[inline(always)]
unsafe fn keys512(rk: &RoundKeys) -> [__m512i; 11] {
    let mut k = [_mm512_setzero_si512(); 11];
    for r in 0..11 {
        k[r] = _mm512_broadcast_i32x4(ld(&rk[r]));
    }
    k
}

/// All ones in a 128-bit lane whose bit 0 is set, zero otherwise.
#[inline(always)]
unsafe fn tmask128(v: __m128i) -> __m128i {
    let t = _mm_and_si128(v, _mm_set_epi64x(0, 1));
    _mm_shuffle_epi32::<0x44>(_mm_sub_epi64(_mm_setzero_si128(), t))
}

/// Mask of the 64-bit elements of the 128-bit lanes whose bit 0 (the control bit) is
/// set: both halves of such a lane.
#[inline(always)]
unsafe fn tk512(v: __m512i) -> __mmask8 {
    let k = _mm512_test_epi64_mask(v, _mm512_set_epi64(0, 1, 0, 1, 0, 1, 0, 1));
    k | (k << 1)
}

/// Clears bit 0 of every 128-bit lane.
#[inline(always)]
unsafe fn clear512(v: __m512i) -> __m512i {
    _mm512_and_si512(v, _mm512_set_epi64(-1, -2, -1, -2, -1, -2, -1, -2))
}

/// The correction blocks of the 4 nodes i .. i + 4 (i a multiple of 4, i + 3 < the
/// node count): `cw[(i + j) >> shift]` in lane j. `MODE` is `shift.min(2)` (a constant,
/// so the kernels have no per-vector branch).
#[inline(always)]
unsafe fn cw4<const MODE: u32>(cw: *const u128, i: usize, shift: u32) -> __m512i {
    match MODE {
        0 => _mm512_loadu_si512(cw.add(i).cast()),
        1 => {
            let two = _mm256_loadu_si256(cw.add(i >> 1).cast());
            _mm512_permutexvar_epi64(
                _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
                _mm512_castsi256_si512(two),
            )
        }
        _ => _mm512_broadcast_i32x4(ld(cw.add(i >> shift))),
    }
}

/// Word-wise wrapping addition of the ring words in a 128-bit vector.
#[inline(always)]
unsafe fn addw128<W: Word>(a: __m128i, b: __m128i) -> __m128i {
    match W::BITS {
        16 => _mm_add_epi16(a, b),
        32 => _mm_add_epi32(a, b),
        _ => _mm_add_epi64(a, b),
    }
}

/// Word-wise wrapping addition of the ring words in a 512-bit vector.
#[inline(always)]
unsafe fn addw512<W: Word>(a: __m512i, b: __m512i) -> __m512i {
    match W::BITS {
        16 => _mm512_add_epi16(a, b),
        32 => _mm512_add_epi32(a, b),
        _ => _mm512_add_epi64(a, b),
    }
}

/// One node's two corrected children with AES-NI (no pipelining; for tails).
#[inline(always)]
unsafe fn level_one(
    k0: &[__m128i; 11],
    k1: &[__m128i; 11],
    v: __m128i,
    cl: __m128i,
    cr: __m128i,
) -> (__m128i, __m128i) {
    let s = _mm_and_si128(v, _mm_set_epi64x(-1, -2));
    let m = tmask128(v);
    let mut x = _mm_xor_si128(s, k0[0]);
    let mut y = _mm_xor_si128(s, k1[0]);
    for r in 1..10 {
        x = _mm_aesenc_si128(x, k0[r]);
        y = _mm_aesenc_si128(y, k1[r]);
    }
    let fl = _mm_xor_si128(_mm_and_si128(cl, m), _mm_xor_si128(s, k0[10]));
    let fr = _mm_xor_si128(_mm_and_si128(cr, m), _mm_xor_si128(s, k1[10]));
    (_mm_aesenclast_si128(x, fl), _mm_aesenclast_si128(y, fr))
}

/// One leaf block with AES-NI (no pipelining; for tails).
#[inline(always)]
unsafe fn leaf_one<W: Word>(k2: &[__m128i; 11], v: __m128i, cw: __m128i) -> __m128i {
    let s = _mm_and_si128(v, _mm_set_epi64x(-1, -2));
    let m = tmask128(v);
    let mut x = _mm_xor_si128(s, k2[0]);
    for r in 1..10 {
        x = _mm_aesenc_si128(x, k2[r]);
    }
    let c = _mm_aesenclast_si128(x, _mm_xor_si128(s, k2[10]));
    addw128::<W>(c, _mm_and_si128(cw, m))
}

// ---------------------------------------------------------------------------------------
// AES-NI path.

/// `blocks[i] = AES(blocks[i])` in place, 8 blocks in flight.
///
/// # Safety
/// The CPU must support AES-NI.
#[target_feature(enable = "aes")]
pub(crate) unsafe fn encrypt_ni(rk: &RoundKeys, blocks: &mut [u128]) {
    let k = keys128(rk);
    let mut chunks = blocks.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut x = [_mm_setzero_si128(); 8];
        for j in 0..8 {
            x[j] = _mm_xor_si128(ld(&c[j]), k[0]);
        }
        for r in 1..10 {
            for xj in x.iter_mut() {
                *xj = _mm_aesenc_si128(*xj, k[r]);
            }
        }
        for j in 0..8 {
            st(&mut c[j], _mm_aesenclast_si128(x[j], k[10]));
        }
    }
    for b in chunks.into_remainder() {
        let mut x = _mm_xor_si128(ld(b), k[0]);
        for kr in &k[1..10] {
            x = _mm_aesenc_si128(x, *kr);
        }
        st(b, _mm_aesenclast_si128(x, k[10]));
    }
}

/// One DPF tree level (see the module docs), 4 nodes (8 blocks) in flight.
///
/// # Safety
/// The CPU must support AES-NI. `next.len() == 2·nodes.len()`, and `cl`, `cr` hold at
/// least `((nodes.len() − 1) >> shift) + 1` blocks (checked by the caller).
#[target_feature(enable = "aes")]
pub(crate) unsafe fn level_ni(
    rk0: &RoundKeys,
    rk1: &RoundKeys,
    nodes: &[u128],
    next: &mut [u128],
    cl: &[u128],
    cr: &[u128],
    shift: u32,
) {
    let (k0, k1) = (keys128(rk0), keys128(rk1));
    let n = nodes.len();
    let (np, xp) = (nodes.as_ptr(), next.as_mut_ptr());
    let (clp, crp) = (cl.as_ptr(), cr.as_ptr());
    let clear = _mm_set_epi64x(-1, -2);
    let mut i = 0;
    while i + 4 <= n {
        let mut s = [_mm_setzero_si128(); 4];
        let mut m = s;
        let mut x = s;
        let mut y = s;
        for j in 0..4 {
            let v = ld(np.add(i + j));
            s[j] = _mm_and_si128(v, clear);
            m[j] = tmask128(v);
            x[j] = _mm_xor_si128(s[j], k0[0]);
            y[j] = _mm_xor_si128(s[j], k1[0]);
        }
        for r in 1..10 {
            for j in 0..4 {
                x[j] = _mm_aesenc_si128(x[j], k0[r]);
                y[j] = _mm_aesenc_si128(y[j], k1[r]);
            }
        }
        for j in 0..4 {
            let c = (i + j) >> shift;
            let fl = _mm_xor_si128(
                _mm_and_si128(ld(clp.add(c)), m[j]),
                _mm_xor_si128(s[j], k0[10]),
            );
            let fr = _mm_xor_si128(
                _mm_and_si128(ld(crp.add(c)), m[j]),
                _mm_xor_si128(s[j], k1[10]),
            );
            st(xp.add(2 * (i + j)), _mm_aesenclast_si128(x[j], fl));
            st(xp.add(2 * (i + j) + 1), _mm_aesenclast_si128(y[j], fr));
        }
        i += 4;
    }
    while i < n {
        let c = i >> shift;
        let (l, r) = level_one(&k0, &k1, ld(np.add(i)), ld(clp.add(c)), ld(crp.add(c)));
        st(xp.add(2 * i), l);
        st(xp.add(2 * i + 1), r);
        i += 1;
    }
}

/// DPF leaf conversion (see the module docs), 8 blocks in flight; `out` receives
/// 128/BITS words per node.
///
/// # Safety
/// The CPU must support AES-NI. `out.len()·BITS == 128·nodes.len()`, and `cw` holds at
/// least `((nodes.len() − 1) >> shift) + 1` blocks (checked by the caller).
#[target_feature(enable = "aes")]
pub(crate) unsafe fn leaves_ni<W: Word>(
    rk2: &RoundKeys,
    nodes: &[u128],
    cw: &[u128],
    shift: u32,
    out: &mut [W],
) {
    let k2 = keys128(rk2);
    let n = nodes.len();
    let (np, cp) = (nodes.as_ptr(), cw.as_ptr());
    let op = out.as_mut_ptr().cast::<u128>();
    let clear = _mm_set_epi64x(-1, -2);
    let mut i = 0;
    while i + 8 <= n {
        let mut s = [_mm_setzero_si128(); 8];
        let mut m = s;
        let mut x = s;
        for j in 0..8 {
            let v = ld(np.add(i + j));
            s[j] = _mm_and_si128(v, clear);
            m[j] = tmask128(v);
            x[j] = _mm_xor_si128(s[j], k2[0]);
        }
        for r in 1..10 {
            for xj in x.iter_mut() {
                *xj = _mm_aesenc_si128(*xj, k2[r]);
            }
        }
        for j in 0..8 {
            let c = _mm_aesenclast_si128(x[j], _mm_xor_si128(s[j], k2[10]));
            let add = _mm_and_si128(ld(cp.add((i + j) >> shift)), m[j]);
            st(op.add(i + j), addw128::<W>(c, add));
        }
        i += 8;
    }
    while i < n {
        st(
            op.add(i),
            leaf_one::<W>(&k2, ld(np.add(i)), ld(cp.add(i >> shift))),
        );
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------
// VAES + AVX-512 path.

/// `blocks[i] = AES(blocks[i])` in place, 8 zmm registers (32 blocks) in flight.
///
/// # Safety
/// The CPU must support AES-NI, VAES, AVX-512F.
#[target_feature(enable = "aes,avx512f,vaes")]
pub(crate) unsafe fn encrypt_vaes(rk: &RoundKeys, blocks: &mut [u128]) {
    let k = keys512(rk);
    let n = blocks.len();
    let p = blocks.as_mut_ptr();
    let mut i = 0;
    while i + 32 <= n {
        let mut x = [_mm512_setzero_si512(); 8];
        for j in 0..8 {
            x[j] = _mm512_xor_si512(_mm512_loadu_si512(p.add(i + 4 * j).cast()), k[0]);
        }
        for r in 1..10 {
            for xj in x.iter_mut() {
                *xj = _mm512_aesenc_epi128(*xj, k[r]);
            }
        }
        for j in 0..8 {
            _mm512_storeu_si512(
                p.add(i + 4 * j).cast(),
                _mm512_aesenclast_epi128(x[j], k[10]),
            );
        }
        i += 32;
    }
    while i + 4 <= n {
        let mut x = _mm512_xor_si512(_mm512_loadu_si512(p.add(i).cast()), k[0]);
        for kr in &k[1..10] {
            x = _mm512_aesenc_epi128(x, *kr);
        }
        _mm512_storeu_si512(p.add(i).cast(), _mm512_aesenclast_epi128(x, k[10]));
        i += 4;
    }
    encrypt_ni(rk, &mut blocks[i..]);
}

/// Children of the 4 nodes at `i` (one zmm register each for the left and right halves)
/// written to `next[2i ..][.. 8]`.
#[inline(always)]
unsafe fn store_children(xp: *mut u128, i: usize, l: __m512i, r: __m512i) {
    // [L0 R0 L1 R1] and [L2 R2 L3 R3] (64-bit lane indices; 8.. select from r).
    let lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    let hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    _mm512_storeu_si512(xp.add(2 * i).cast(), _mm512_permutex2var_epi64(l, lo, r));
    _mm512_storeu_si512(
        xp.add(2 * i + 4).cast(),
        _mm512_permutex2var_epi64(l, hi, r),
    );
}

/// One DPF tree level (see the module docs), 16 nodes (8 zmm registers) in flight.
///
/// # Safety
/// The CPU must support AES-NI, VAES, AVX-512F. `next.len() == 2·nodes.len()`, and
/// `cl`, `cr` hold at least `((nodes.len() − 1) >> shift) + 1` blocks (checked by the
/// caller).
#[target_feature(enable = "aes,avx512f,vaes")]
pub(crate) unsafe fn level_vaes(
    rk0: &RoundKeys,
    rk1: &RoundKeys,
    nodes: &[u128],
    next: &mut [u128],
    cl: &[u128],
    cr: &[u128],
    shift: u32,
) {
    match shift {
        0 => level_vaes_mode::<0>(rk0, rk1, nodes, next, cl, cr, shift),
        1 => level_vaes_mode::<1>(rk0, rk1, nodes, next, cl, cr, shift),
        _ => level_vaes_mode::<2>(rk0, rk1, nodes, next, cl, cr, shift),
    }
}

#[inline(always)]
unsafe fn level_vaes_mode<const MODE: u32>(
    rk0: &RoundKeys,
    rk1: &RoundKeys,
    nodes: &[u128],
    next: &mut [u128],
    cl: &[u128],
    cr: &[u128],
    shift: u32,
) {
    let (k0, k1) = (keys512(rk0), keys512(rk1));
    let n = nodes.len();
    let (np, xp) = (nodes.as_ptr(), next.as_mut_ptr());
    let (clp, crp) = (cl.as_ptr(), cr.as_ptr());
    let mut i = 0;
    while i + 16 <= n {
        let mut x = [_mm512_setzero_si512(); 4];
        let mut y = x;
        for j in 0..4 {
            let s = clear512(_mm512_loadu_si512(np.add(i + 4 * j).cast()));
            x[j] = _mm512_xor_si512(s, k0[0]);
            y[j] = _mm512_xor_si512(s, k1[0]);
        }
        for r in 1..10 {
            for j in 0..4 {
                x[j] = _mm512_aesenc_epi128(x[j], k0[r]);
                y[j] = _mm512_aesenc_epi128(y[j], k1[r]);
            }
        }
        for j in 0..4 {
            let at = i + 4 * j;
            // Reloaded (L1) rather than kept live across the rounds: fewer registers.
            let v = _mm512_loadu_si512(np.add(at).cast());
            let (s, m) = (clear512(v), tk512(v));
            let (sl, sr) = (_mm512_xor_si512(s, k0[10]), _mm512_xor_si512(s, k1[10]));
            let fl = _mm512_mask_xor_epi64(sl, m, sl, cw4::<MODE>(clp, at, shift));
            let fr = _mm512_mask_xor_epi64(sr, m, sr, cw4::<MODE>(crp, at, shift));
            let l = _mm512_aesenclast_epi128(x[j], fl);
            let r = _mm512_aesenclast_epi128(y[j], fr);
            store_children(xp, at, l, r);
        }
        i += 16;
    }
    while i + 4 <= n {
        let v = _mm512_loadu_si512(np.add(i).cast());
        let s = clear512(v);
        let m = tk512(v);
        let mut x = _mm512_xor_si512(s, k0[0]);
        let mut y = _mm512_xor_si512(s, k1[0]);
        for r in 1..10 {
            x = _mm512_aesenc_epi128(x, k0[r]);
            y = _mm512_aesenc_epi128(y, k1[r]);
        }
        let (sl, sr) = (_mm512_xor_si512(s, k0[10]), _mm512_xor_si512(s, k1[10]));
        let fl = _mm512_mask_xor_epi64(sl, m, sl, cw4::<MODE>(clp, i, shift));
        let fr = _mm512_mask_xor_epi64(sr, m, sr, cw4::<MODE>(crp, i, shift));
        store_children(
            xp,
            i,
            _mm512_aesenclast_epi128(x, fl),
            _mm512_aesenclast_epi128(y, fr),
        );
        i += 4;
    }
    if i < n {
        let (k0, k1) = (keys128(rk0), keys128(rk1));
        while i < n {
            let c = i >> shift;
            let (l, r) = level_one(&k0, &k1, ld(np.add(i)), ld(clp.add(c)), ld(crp.add(c)));
            st(xp.add(2 * i), l);
            st(xp.add(2 * i + 1), r);
            i += 1;
        }
    }
}

/// DPF leaf conversion (see the module docs), 32 blocks (8 zmm registers) in flight;
/// `out` receives 128/BITS words per node.
///
/// # Safety
/// The CPU must support AES-NI, VAES, AVX-512F and AVX-512BW. `out.len()·BITS ==
/// 128·nodes.len()`, and `cw` holds at least `((nodes.len() − 1) >> shift) + 1` blocks
/// (checked by the caller).
#[target_feature(enable = "aes,avx512f,avx512bw,vaes")]
pub(crate) unsafe fn leaves_vaes<W: Word>(
    rk2: &RoundKeys,
    nodes: &[u128],
    cw: &[u128],
    shift: u32,
    out: &mut [W],
) {
    match shift {
        0 => leaves_vaes_mode::<W, 0>(rk2, nodes, cw, shift, out),
        1 => leaves_vaes_mode::<W, 1>(rk2, nodes, cw, shift, out),
        _ => leaves_vaes_mode::<W, 2>(rk2, nodes, cw, shift, out),
    }
}

#[inline(always)]
unsafe fn leaves_vaes_mode<W: Word, const MODE: u32>(
    rk2: &RoundKeys,
    nodes: &[u128],
    cw: &[u128],
    shift: u32,
    out: &mut [W],
) {
    let k2 = keys512(rk2);
    let n = nodes.len();
    let (np, cp) = (nodes.as_ptr(), cw.as_ptr());
    let op = out.as_mut_ptr().cast::<u128>();
    let mut i = 0;
    while i + 32 <= n {
        let mut x = [_mm512_setzero_si512(); 8];
        for j in 0..8 {
            let s = clear512(_mm512_loadu_si512(np.add(i + 4 * j).cast()));
            x[j] = _mm512_xor_si512(s, k2[0]);
        }
        for r in 1..10 {
            for xj in x.iter_mut() {
                *xj = _mm512_aesenc_epi128(*xj, k2[r]);
            }
        }
        for j in 0..8 {
            let at = i + 4 * j;
            // Reloaded (L1) rather than kept live across the rounds: fewer registers.
            let v = _mm512_loadu_si512(np.add(at).cast());
            let (s, m) = (clear512(v), tk512(v));
            let c = _mm512_aesenclast_epi128(x[j], _mm512_xor_si512(s, k2[10]));
            let add = _mm512_maskz_mov_epi64(m, cw4::<MODE>(cp, at, shift));
            _mm512_storeu_si512(op.add(at).cast(), addw512::<W>(c, add));
        }
        i += 32;
    }
    while i + 4 <= n {
        let v = _mm512_loadu_si512(np.add(i).cast());
        let s = clear512(v);
        let m = tk512(v);
        let mut x = _mm512_xor_si512(s, k2[0]);
        for kr in &k2[1..10] {
            x = _mm512_aesenc_epi128(x, *kr);
        }
        let c = _mm512_aesenclast_epi128(x, _mm512_xor_si512(s, k2[10]));
        let add = _mm512_maskz_mov_epi64(m, cw4::<MODE>(cp, i, shift));
        _mm512_storeu_si512(op.add(i).cast(), addw512::<W>(c, add));
        i += 4;
    }
    if i < n {
        let k2 = keys128(rk2);
        while i < n {
            st(
                op.add(i),
                leaf_one::<W>(&k2, ld(np.add(i)), ld(cp.add(i >> shift))),
            );
            i += 1;
        }
    }
}

/// `acc + a·b` word-wise (wrapping) for the ring words in 512-bit vectors.
#[inline(always)]
unsafe fn muladd512<W: Word>(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    match W::BITS {
        16 => _mm512_add_epi16(acc, _mm512_mullo_epi16(a, b)),
        32 => _mm512_add_epi32(acc, _mm512_mullo_epi32(a, b)),
        _ => _mm512_add_epi64(acc, _mm512_mullo_epi64(a, b)),
    }
}

/// Wrapping sum of the ring words of a 512-bit vector.
#[inline(always)]
unsafe fn hsum512<W: Word>(v: __m512i) -> W {
    let h = _mm512_castsi256_si512(_mm512_extracti64x4_epi64::<1>(v));
    let v = addw512::<W>(v, h);
    let q = _mm512_castsi128_si512(_mm512_extracti64x2_epi64::<1>(v));
    let v = addw512::<W>(v, q);
    let mut words = [0u64; 2];
    _mm_storeu_si128(words.as_mut_ptr().cast(), _mm512_castsi512_si128(v));
    let ws: &[W] = bytemuck::cast_slice(&words);
    ws.iter().fold(W::ZERO, |t, &w| t.wadd(w))
}

/// Fused DPF leaf conversion and rotated dot product for 4-block leaves: leaf node q
/// of key g (`nodes[g·2^shift + q]`, seed s, control bit t) is one register, lane i
/// holding `(AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i) + (t ? cw[4g + i] : 0)` (δ_i = i·2^64, see
/// `crate::dpf::leaf_tweak`), i.e. the 512/BITS words at domain indices
/// `j0 + q·512/BITS ..`; they are multiplied with the rotated table on the fly and summed:
/// `out[g] = Σ_i w_i · rev2[((a_i − x_g) mod 2^kx)·2^(ky+1) + ((b_i − y_g) mod 2^ky) + ...]`
/// with `j0 + i = a_i·2^ky + b_i`, exactly the unsigned value of
/// `crate::lut::rotated_dot2_doubled` on the words (wrapping sums are order independent).
/// 8 leaves (32 blocks, 8 zmm registers) in flight.
///
/// # Safety
/// The CPU must support AES-NI, VAES, AVX-512F, AVX-512BW and AVX-512DQ. The caller checks
/// (see `Prg::dpf_leaves_dot`): `nodes.len()` is a multiple of 2^shift, `cw` holds at
/// least `4·(nodes.len() >> shift)` blocks and `xs`, `ys`, `out` at least
/// `nodes.len() >> shift` entries, 2^ky words fill at least one 512-bit register
/// (2^ky·BITS >= 512), `j0` is a multiple of 512/BITS,
/// `j0 + 2^shift·512/BITS <= 2^(kx+ky)` (the same j0 for every key), and
/// `rev2.len() == 2^(kx+ky+1)`.
#[target_feature(enable = "aes,avx512f,avx512bw,avx512dq,vaes")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn leaves_dot_vaes<W: Word>(
    rk2: &RoundKeys,
    nodes: &[u128],
    cw: &[u128],
    shift: u32,
    tab: &DotTable<'_, W>,
    xs: &[u32],
    ys: &[u32],
    j0: usize,
    out: &mut [W],
) {
    let k2 = keys512(rk2);
    let per = 1usize << shift;
    let lanes = (512 / W::BITS) as usize; // words per leaf
    let (nx, ny) = (1usize << tab.kx, 1usize << tab.ky);
    let tp = tab.rev2.as_ptr();
    // δ_i = i·2^64 in lane i: the high 64-bit half of each 128-bit lane.
    let tweak = _mm512_set_epi64(3, 0, 2, 0, 1, 0, 0, 0);
    // Seed (control bit cleared) plus tweak in every lane, and the control-bit mask.
    let leaf_in = |p: *const u128| {
        let n = _mm512_broadcast_i32x4(ld(p));
        (_mm512_xor_si512(clear512(n), tweak), tk512(n))
    };
    for (g, chunk) in nodes.chunks_exact(per).enumerate() {
        let np = chunk.as_ptr();
        let cwv = _mm512_loadu_si512(cw.as_ptr().add(4 * g).cast());
        let (x, y) = (xs[g] as usize & (nx - 1), ys[g] as usize & (ny - 1));
        // Rotated-table row of the leaf whose first word has domain index jj.
        let row = |jj: usize| {
            let (a, b) = (jj >> tab.ky, jj & (ny - 1));
            tp.add(((a + nx - x) & (nx - 1)) * 2 * ny + b + ny - y)
        };
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut q = 0;
        while q + 8 <= per {
            let mut v = [_mm512_setzero_si512(); 8];
            for j in 0..8 {
                v[j] = _mm512_xor_si512(leaf_in(np.add(q + j)).0, k2[0]);
            }
            for r in 1..10 {
                for vj in v.iter_mut() {
                    *vj = _mm512_aesenc_epi128(*vj, k2[r]);
                }
            }
            for j in 0..8 {
                // Reloaded (L1) rather than kept live across the rounds: fewer registers.
                let (s, m) = leaf_in(np.add(q + j));
                let c = _mm512_aesenclast_epi128(v[j], _mm512_xor_si512(s, k2[10]));
                let w = addw512::<W>(c, _mm512_maskz_mov_epi64(m, cwv));
                let t = row(j0 + (q + j) * lanes);
                acc[j & 3] = muladd512::<W>(acc[j & 3], w, _mm512_loadu_si512(t.cast()));
            }
            q += 8;
        }
        while q < per {
            let (s, m) = leaf_in(np.add(q));
            let mut v = _mm512_xor_si512(s, k2[0]);
            for kr in &k2[1..10] {
                v = _mm512_aesenc_epi128(v, *kr);
            }
            let c = _mm512_aesenclast_epi128(v, _mm512_xor_si512(s, k2[10]));
            let w = addw512::<W>(c, _mm512_maskz_mov_epi64(m, cwv));
            let t = row(j0 + q * lanes);
            acc[q & 3] = muladd512::<W>(acc[q & 3], w, _mm512_loadu_si512(t.cast()));
            q += 1;
        }
        let s = addw512::<W>(addw512::<W>(acc[0], acc[1]), addw512::<W>(acc[2], acc[3]));
        out[g] = hsum512::<W>(s);
    }
}

/// Fused DPF leaf conversion and table product for the 4-block leaves of a
/// support-restricted evaluation (`crate::dpf::support`): key g has `per` leaves,
/// `nodes[g·per ..][.. per]`, leaf w at domain leaf `(lo[g] + w) mod 2^(k − nu)` (512/BITS =
/// 2^nu words from domain index jj = that leaf · 2^nu); leaf w of key g (seed s, control
/// bit t) is one register, lane i holding `(AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i) + (t ? cw[4g + i] :
/// 0)`, and `out[g]` becomes the unsigned `Σ_w Σ_i w_i · rev2[jj + 2^k − y_g + i]` (y_g =
/// `ys[g] mod 2^k`): the 1-D rotated dot of `crate::lut::rotated_dot2_doubled` over the
/// kept leaves. 8 leaves (32 blocks) in flight, across keys.
///
/// # Safety
/// The CPU must support AES-NI, VAES, AVX-512F, AVX-512BW and AVX-512DQ. The caller checks
/// (see `Prg::dpf_leaves_dot_support`): `per >= 1`, `nodes.len()` is a multiple of `per`,
/// g = `nodes.len() / per` keys have `lo`, `ys` and `out` entries and 4 blocks of `cw`
/// each, 2^nu = 512/BITS, and `rev2.len() == 2^(k+1)` with k >= nu.
#[target_feature(enable = "aes,avx512f,avx512bw,avx512dq,vaes")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn leaves_dot_support_vaes<W: Word>(
    rk2: &RoundKeys,
    nodes: &[u128],
    cw: &[u128],
    per: usize,
    lo: &[u32],
    ys: &[u32],
    k: u32,
    nu: u32,
    rev2: &[W],
    out: &mut [W],
) {
    let k2 = keys512(rk2);
    let n = nodes.len();
    let (np, tp) = (nodes.as_ptr(), rev2.as_ptr());
    let (ny, lmask) = (1usize << k, (1usize << (k - nu)) - 1);
    let tweak = _mm512_set_epi64(3, 0, 2, 0, 1, 0, 0, 0);
    let leaf_in = |p: *const u128| {
        let v = _mm512_broadcast_i32x4(ld(p));
        (_mm512_xor_si512(clear512(v), tweak), tk512(v))
    };
    // Leaf w of key g is next; acc is key g's running sum, flushed at its last leaf.
    let (mut g, mut w) = (0usize, 0usize);
    let mut acc = _mm512_setzero_si512();
    let mut add = |c: __m512i, m: __mmask8| {
        let cwv = _mm512_loadu_si512(cw.as_ptr().add(4 * g).cast());
        let v = addw512::<W>(c, _mm512_maskz_mov_epi64(m, cwv));
        let jj = ((lo[g] as usize + w) & lmask) << nu;
        let t = _mm512_loadu_si512(tp.add(jj + ny - (ys[g] as usize & (ny - 1))).cast());
        acc = muladd512::<W>(acc, v, t);
        w += 1;
        if w == per {
            out[g] = hsum512::<W>(acc);
            acc = _mm512_setzero_si512();
            (g, w) = (g + 1, 0);
        }
    };
    let mut q = 0;
    while q + 8 <= n {
        let mut v = [_mm512_setzero_si512(); 8];
        for (j, vj) in v.iter_mut().enumerate() {
            *vj = _mm512_xor_si512(leaf_in(np.add(q + j)).0, k2[0]);
        }
        for r in 1..10 {
            for vj in v.iter_mut() {
                *vj = _mm512_aesenc_epi128(*vj, k2[r]);
            }
        }
        for (j, vj) in v.iter().enumerate() {
            let (s, m) = leaf_in(np.add(q + j));
            add(
                _mm512_aesenclast_epi128(*vj, _mm512_xor_si512(s, k2[10])),
                m,
            );
        }
        q += 8;
    }
    while q < n {
        let (s, m) = leaf_in(np.add(q));
        let mut v = _mm512_xor_si512(s, k2[0]);
        for kr in &k2[1..10] {
            v = _mm512_aesenc_epi128(v, *kr);
        }
        add(_mm512_aesenclast_epi128(v, _mm512_xor_si512(s, k2[10])), m);
        q += 1;
    }
}
