//! 1-bit fully connected layer: Y = X·S mod 2^BITS with S in {−1, +1}^(d_in × d_out).
//!
//! Writing S = 2B − 1 (B the 0/1 matrix of "+1" bits), `y[i,c] = 2·Σ_{r: B[r,c]=1} x[i,r]
//! − rowsum(x[i])`: one masked add per weight instead of a multiply.
//!
//! **Packing.** [`PackedSigns`] is column-major in bits: output column c owns
//! `wpc = ceil(d_in / 64)` consecutive u64 words, and bit `r % 64` of word
//! `c·wpc + r / 64` is 1 iff S[r, c] = +1 (padding bits are 0). The kernel works on X^T
//! (d_in × n, rows of X contiguous per input r) and, for a block of 4 output columns,
//! expands the 4 columns' bits along d_in once into select masks; then for every block of
//! 64 bytes of rows it runs `acc[c][i..] += x^T[r][i..] & mask[r][c]` over r: a contiguous
//! vector AND + ADD per weight with the accumulators in registers. Bits along d_in per
//! column are exactly what that mask expansion reads, sequentially, and a column's weights
//! are one contiguous slice (column blocks are the unit of parallelism). That is the
//! AVX2 / portable path, and on aarch64 the NEON path: the same algorithm written with
//! NEON intrinsics (the 16 accumulators of 4 columns × 64 bytes pinned in registers,
//! `and` + `add` per vector and weight; no multiplies, so u16, u32 and u64 alike).
//!
//! **AVX-512 path.** Lanes run along output columns instead, and the weights become
//! AVX-512 write masks: the bits are first transposed (64×64 bit-matrix transposes,
//! ~d_in·d_out/64 word operations) into rows, `rb[c/64][r]` = the 64 bits of S[r, c..c+64],
//! so that the 16 (u32) bits of a vector of columns are one `kmov`. For a tile of MR rows
//! of X and 64 columns, each input r costs MR broadcasts of x[i, r] and
//! MR·64/lanes masked adds `acc{k} += x[i, r]` (one instruction per 16 u32 weights, no
//! AND), accumulators in registers, written once as `2·acc − rowsum`. No transposes of X
//! or Y. Row tiles are the unit of parallelism.

use crate::backend::Simd;
use crate::matmul::transpose;
use crate::word::Word;
use rayon::prelude::*;

/// Output columns per register block.
const CB: usize = 4;
/// Output columns per parallel task.
const CG: usize = 32;
/// Work (n·d_in·d_out) below which the kernel runs on one thread.
const PAR_MIN: usize = 1 << 18;

/// Sign matrix S in {−1, +1}^(d_in × d_out), bit-packed per output column (layout in the
/// module docs): `words.len() == d_out · ceil(d_in / 64)`, bit = 1 means +1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedSigns {
    /// Rows of S (inputs).
    pub d_in: usize,
    /// Columns of S (outputs).
    pub d_out: usize,
    /// `d_out` runs of `ceil(d_in / 64)` words; bit `r % 64` of word `c·wpc + r/64` is 1 iff
    /// `S[r, c] = +1`.
    pub words: Vec<u64>,
}

impl PackedSigns {
    /// Words per output column, `ceil(d_in / 64)`.
    pub fn words_per_col(&self) -> usize {
        self.d_in.div_ceil(64)
    }

    /// Whether S[r, c] = +1. Cost: O(1).
    #[inline]
    pub fn is_plus(&self, r: usize, c: usize) -> bool {
        (self.words[c * self.words_per_col() + r / 64] >> (r % 64)) & 1 == 1
    }
}

/// Packs a row-major d_in × d_out sign matrix (entries ±1; any value >= 0 counts as +1).
///
/// Preconditions (asserted): `signs.len() == d_in·d_out`. Cost: d_in·d_out bit writes.
pub fn pack_signs(signs: &[i8], d_in: usize, d_out: usize) -> PackedSigns {
    assert_eq!(
        signs.len(),
        d_in * d_out,
        "pack_signs: signs.len() != d_in·d_out"
    );
    let wpc = d_in.div_ceil(64);
    let mut words = vec![0u64; d_out * wpc];
    for (r, row) in signs.chunks_exact(d_out.max(1)).enumerate().take(d_in) {
        for (c, &s) in row.iter().enumerate() {
            words[c * wpc + r / 64] |= ((s >= 0) as u64) << (r % 64);
        }
    }
    PackedSigns { d_in, d_out, words }
}

/// Inverse of [`pack_signs`]: the row-major d_in × d_out matrix of ±1.
///
/// Preconditions (asserted): `p.words.len() == d_out·ceil(d_in/64)`. Cost: d_in·d_out.
pub fn unpack_signs(p: &PackedSigns) -> Vec<i8> {
    assert_eq!(
        p.words.len(),
        p.d_out * p.words_per_col(),
        "unpack_signs: bad words length"
    );
    let mut out = vec![0i8; p.d_in * p.d_out];
    for r in 0..p.d_in {
        for c in 0..p.d_out {
            out[r * p.d_out + c] = if p.is_plus(r, c) { 1 } else { -1 };
        }
    }
    out
}

/// Y = X·S mod 2^BITS: X is n × d_in row-major, S = `w` (d_in × d_out); returns n × d_out
/// row-major.
///
/// Preconditions (asserted): `x.len() == n·w.d_in`, `w.words` of the packed length.
/// Cost: n·d_in·d_out vectorised masked adds (no multiplies) + an O(n·(d_in + d_out))
/// transpose in and out; parallel over blocks of 32 output columns.
pub fn fc<W: Word>(x: &[W], n: usize, w: &PackedSigns) -> Vec<W> {
    fc_with(Simd::active(), x, n, w)
}

/// The scalar reference of [`fc`]: `y[i][c] = Σ_r ±x[i][r]` term by term, one thread.
pub fn fc_scalar<W: Word>(x: &[W], n: usize, w: &PackedSigns) -> Vec<W> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    assert_eq!(x.len(), n * d_in, "fc: x.len() != n·d_in");
    assert_eq!(
        w.words.len(),
        d_out * w.words_per_col(),
        "fc: bad PackedSigns length"
    );
    let mut y = vec![W::ZERO; n * d_out];
    for i in 0..n {
        for c in 0..d_out {
            let mut acc = W::ZERO;
            for r in 0..d_in {
                let v = x[i * d_in + r];
                acc = if w.is_plus(r, c) {
                    acc.wadd(v)
                } else {
                    acc.wsub(v)
                };
            }
            y[i * d_out + c] = acc;
        }
    }
    y
}

/// [`fc`] on a given SIMD level (panics on a level the CPU does not support).
pub fn fc_with<W: Word>(simd: Simd, x: &[W], n: usize, w: &PackedSigns) -> Vec<W> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    assert_eq!(x.len(), n * d_in, "fc: x.len() != n·d_in");
    let wpc = w.words_per_col();
    assert_eq!(w.words.len(), d_out * wpc, "fc: bad PackedSigns length");
    // an empty inner dimension gives Y = 0 (and X^T would be empty below)
    if n == 0 || d_out == 0 || d_in == 0 {
        return vec![W::ZERO; n * d_out];
    }
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        simd.check();
        return avx512::fc(x, n, w);
    }
    // Rows per register block: 64 bytes of words.
    let nb = 512 / W::BITS as usize;
    let n_pad = n.div_ceil(nb) * nb;
    // X^T, zero-padded to n_pad columns.
    let mut xt = vec![W::ZERO; d_in * n_pad];
    if d_in > 0 {
        let t = transpose(x, n, d_in);
        for (dst, src) in xt.chunks_exact_mut(n_pad).zip(t.chunks_exact(n)) {
            dst[..n].copy_from_slice(src);
        }
    }
    let mut rowsum = vec![W::ZERO; n_pad];
    for (s, row) in rowsum.iter_mut().zip(x.chunks_exact(d_in.max(1))) {
        *s = row.iter().fold(W::ZERO, |a, &v| a.wadd(v));
    }
    if d_in == 0 {
        rowsum.iter_mut().for_each(|s| *s = W::ZERO);
    }
    // Y^T (d_out × n_pad), column groups in parallel.
    let mut yt = vec![W::ZERO; d_out * n_pad];
    #[cfg(target_arch = "aarch64")]
    if simd == Simd::Neon {
        simd.check();
    }
    let task = |masks: &mut Vec<W>, (g, ytg): (usize, &mut [W])| {
        let c0 = g * CG;
        let ncols = ytg.len() / n_pad;
        #[cfg(target_arch = "aarch64")]
        if simd == Simd::Neon {
            // SAFETY: the CPU supports NEON (checked above); xt is d_in × n_pad, rowsum
            // n_pad long, ytg ncols × n_pad, the words ncols × wpc, n_pad a multiple
            // of 512 / BITS words, d_in >= 1.
            unsafe {
                neon::group::<W>(
                    &xt,
                    n_pad,
                    d_in,
                    &w.words[c0 * wpc..(c0 + ncols) * wpc],
                    wpc,
                    &rowsum,
                    ytg,
                    masks,
                )
            };
            return;
        }
        fc_group::<W>(
            simd,
            &xt,
            n_pad,
            d_in,
            &w.words[c0 * wpc..(c0 + ncols) * wpc],
            wpc,
            &rowsum,
            ytg,
            masks,
        );
    };
    if n * d_in * d_out >= PAR_MIN {
        yt.par_chunks_mut(CG * n_pad)
            .enumerate()
            .for_each_init(Vec::new, task);
    } else {
        let mut masks = Vec::new();
        yt.chunks_mut(CG * n_pad)
            .enumerate()
            .for_each(|item| task(&mut masks, item));
    }
    // Y = (Y^T)^T without the padding rows.
    let mut y = transpose(&yt, d_out, n_pad);
    y.truncate(n * d_out);
    y
}

simd_dispatch! {
    /// One group of output columns: `ytg[c][i] = 2·Σ_r x^T[r][i]·B[r][c] − rowsum[i]`.
    #[allow(clippy::too_many_arguments)]
    fn fc_group<W: Word>(
        xt: &[W],
        n_pad: usize,
        d_in: usize,
        words: &[u64],
        wpc: usize,
        rowsum: &[W],
        ytg: &mut [W],
        masks: &mut Vec<W>,
    ) => fc_group_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fc_group_body<W: Word>(
    xt: &[W],
    n_pad: usize,
    d_in: usize,
    words: &[u64],
    wpc: usize,
    rowsum: &[W],
    ytg: &mut [W],
    masks: &mut Vec<W>,
) {
    match W::BITS {
        16 => fc_cols::<W, 32>(xt, n_pad, d_in, words, wpc, rowsum, ytg, masks),
        32 => fc_cols::<W, 16>(xt, n_pad, d_in, words, wpc, rowsum, ytg, masks),
        _ => fc_cols::<W, 8>(xt, n_pad, d_in, words, wpc, rowsum, ytg, masks),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fc_cols<W: Word, const NB: usize>(
    xt: &[W],
    n_pad: usize,
    d_in: usize,
    words: &[u64],
    wpc: usize,
    rowsum: &[W],
    ytg: &mut [W],
    masks: &mut Vec<W>,
) {
    let ncols = ytg.len() / n_pad;
    masks.clear();
    masks.resize(d_in * CB, W::ZERO);
    for cb0 in (0..ncols).step_by(CB) {
        let nc = CB.min(ncols - cb0);
        // Expand the bits of these columns into select masks, laid out [r][cb].
        for cb in 0..CB {
            if cb < nc {
                let col = &words[(cb0 + cb) * wpc..(cb0 + cb + 1) * wpc];
                for r in 0..d_in {
                    masks[r * CB + cb] = W::mask((col[r / 64] >> (r % 64)) & 1 == 1);
                }
            } else {
                for r in 0..d_in {
                    masks[r * CB + cb] = W::ZERO;
                }
            }
        }
        for i0 in (0..n_pad).step_by(NB) {
            let mut acc = [[W::ZERO; NB]; CB];
            for (xr, m) in xt[i0..].chunks(n_pad).zip(masks.chunks_exact(CB)) {
                crate::matmul::loop_vectoriser_barrier();
                let xv: &[W; NB] = xr[..NB].try_into().unwrap();
                for cb in 0..CB {
                    for j in 0..NB {
                        acc[cb][j] = acc[cb][j].wadd(xv[j].band(m[cb]));
                    }
                }
            }
            for (cb, a) in acc.iter().enumerate().take(nc) {
                let out = &mut ytg[(cb0 + cb) * n_pad + i0..][..NB];
                for j in 0..NB {
                    out[j] = a[j].wadd(a[j]).wsub(rowsum[i0 + j]);
                }
            }
        }
    }
}

/// The explicit NEON form of the AVX2 / portable kernel (`fc_cols`): the same layout
/// (X^T, select masks per 4 output columns, blocks of 64 bytes of rows), with the 16
/// accumulators (4 columns × 4 vectors of 128 bits) pinned in registers and one `and` +
/// `add` per vector and weight. No multiplies, so every width (u16, u32, u64) has it.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::CB;
    use crate::word::Word;
    use core::arch::aarch64::*;

    macro_rules! group_kernel {
        ($name:ident, $t:ty, $lanes:expr, $dup:ident, $ld:ident, $ld1r:ident, $st:ident,
         $and:ident, $add:ident, $sub:ident) => {
            /// One group of output columns (see `super::fc_group`) for one word width.
            ///
            /// # Safety
            /// NEON available; `d_in >= 1`, `n_pad` a multiple of 4·lanes, `xt.len() ==
            /// d_in·n_pad`, `rowsum.len() == n_pad`, `ytg.len()` a multiple of `n_pad`
            /// (ncols columns), `words.len() == ncols·wpc` with `wpc == ceil(d_in / 64)`,
            /// `masks.len() == d_in·CB`.
            #[target_feature(enable = "neon")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $name(
                xt: &[$t],
                n_pad: usize,
                d_in: usize,
                words: &[u64],
                wpc: usize,
                rowsum: &[$t],
                ytg: &mut [$t],
                masks: &mut [$t],
            ) {
                const V: usize = 4; // vectors per block of rows (64 bytes)
                const NB: usize = V * $lanes;
                debug_assert_eq!(n_pad % NB, 0);
                debug_assert_eq!(xt.len(), d_in * n_pad);
                debug_assert_eq!(masks.len(), d_in * CB);
                let ncols = ytg.len() / n_pad;
                let (xp, rp) = (xt.as_ptr(), rowsum.as_ptr());
                for cb0 in (0..ncols).step_by(CB) {
                    let nc = CB.min(ncols - cb0);
                    // Select masks of these columns, laid out [r][cb] (zero past ncols).
                    for cb in 0..CB {
                        if cb < nc {
                            let col = &words[(cb0 + cb) * wpc..(cb0 + cb + 1) * wpc];
                            for r in 0..d_in {
                                let bit = (col[r / 64] >> (r % 64)) & 1;
                                masks[r * CB + cb] = (0 as $t).wrapping_sub(bit as $t);
                            }
                        } else {
                            for r in 0..d_in {
                                masks[r * CB + cb] = 0;
                            }
                        }
                    }
                    let mp = masks.as_ptr();
                    for i0 in (0..n_pad).step_by(NB) {
                        let mut acc = [[$dup(0); V]; CB];
                        for r in 0..d_in {
                            let x = xp.add(r * n_pad + i0);
                            let xv = [
                                $ld(x),
                                $ld(x.add($lanes)),
                                $ld(x.add(2 * $lanes)),
                                $ld(x.add(3 * $lanes)),
                            ];
                            for (cb, acb) in acc.iter_mut().enumerate() {
                                let m = $ld1r(mp.add(r * CB + cb));
                                for q in 0..V {
                                    acb[q] = $add(acb[q], $and(xv[q], m));
                                }
                            }
                        }
                        for (cb, a) in acc.iter().enumerate().take(nc) {
                            let out = ytg.as_mut_ptr().add((cb0 + cb) * n_pad + i0);
                            for (q, &aq) in a.iter().enumerate() {
                                let rs = $ld(rp.add(i0 + q * $lanes));
                                $st(out.add(q * $lanes), $sub($add(aq, aq), rs));
                            }
                        }
                    }
                }
            }
        };
    }

    group_kernel!(
        group16,
        u16,
        8,
        vdupq_n_u16,
        vld1q_u16,
        vld1q_dup_u16,
        vst1q_u16,
        vandq_u16,
        vaddq_u16,
        vsubq_u16
    );
    group_kernel!(
        group32,
        u32,
        4,
        vdupq_n_u32,
        vld1q_u32,
        vld1q_dup_u32,
        vst1q_u32,
        vandq_u32,
        vaddq_u32,
        vsubq_u32
    );
    group_kernel!(
        group64,
        u64,
        2,
        vdupq_n_u64,
        vld1q_u64,
        vld1q_dup_u64,
        vst1q_u64,
        vandq_u64,
        vaddq_u64,
        vsubq_u64
    );

    /// Dispatch on the word width (slices reinterpreted, same bits); sizes `masks`.
    ///
    /// # Safety
    /// As the width kernels above (`masks` is resized here).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn group<W: Word>(
        xt: &[W],
        n_pad: usize,
        d_in: usize,
        words: &[u64],
        wpc: usize,
        rowsum: &[W],
        ytg: &mut [W],
        masks: &mut Vec<W>,
    ) {
        use bytemuck::{cast_slice, cast_slice_mut};
        masks.clear();
        masks.resize(d_in * CB, W::ZERO);
        let m = &mut masks[..];
        match W::BITS {
            16 => group16(
                cast_slice(xt),
                n_pad,
                d_in,
                words,
                wpc,
                cast_slice(rowsum),
                cast_slice_mut(ytg),
                cast_slice_mut(m),
            ),
            32 => group32(
                cast_slice(xt),
                n_pad,
                d_in,
                words,
                wpc,
                cast_slice(rowsum),
                cast_slice_mut(ytg),
                cast_slice_mut(m),
            ),
            _ => group64(
                cast_slice(xt),
                n_pad,
                d_in,
                words,
                wpc,
                cast_slice(rowsum),
                cast_slice_mut(ytg),
                cast_slice_mut(m),
            ),
        }
    }
}

/// Transposes a 64×64 bit matrix in place: afterwards bit j of `a[i]` is the former bit
/// i of `a[j]` (LSB-first rows). 6 rounds of 32 masked swaps.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32usize;
    let mut m = 0x0000_0000_FFFF_FFFFu64;
    while j != 0 {
        let mut k = 0usize;
        while k < 64 {
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k + j] ^= t;
            a[k] ^= t << j;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

/// The signs by rows: `rb[b·d_in + r]` holds S[r, 64b..64b+64] (bit j: column 64b + j is
/// +1; columns past d_out are 0). Cost: ceil(d_in/64)·ceil(d_out/64) 64×64 bit
/// transposes.
#[cfg(target_arch = "x86_64")]
pub(crate) fn row_bits(w: &PackedSigns) -> Vec<u64> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    let wpc = w.words_per_col();
    let nb = d_out.div_ceil(64);
    let mut rb = vec![0u64; nb * d_in];
    // Column blocks in parallel (each writes its own d_in words): done on every call, it
    // was the one sequential step of the kernel.
    let block = |(b, out): (usize, &mut [u64])| {
        let mut a = [0u64; 64];
        let cols = 64.min(d_out - 64 * b);
        for rw in 0..wpc {
            for (j, v) in a.iter_mut().enumerate() {
                *v = if j < cols {
                    w.words[(64 * b + j) * wpc + rw]
                } else {
                    0
                };
            }
            transpose64(&mut a);
            let rows = 64.min(d_in - 64 * rw);
            out[64 * rw..][..rows].copy_from_slice(&a[..rows]);
        }
    };
    if d_in > 0 {
        if nb * d_in >= PAR_MIN / 64 {
            rb.par_chunks_mut(d_in).enumerate().for_each(block);
        } else {
            rb.chunks_mut(d_in).enumerate().for_each(block);
        }
    }
    rb
}

/// The AVX-512 masked-add kernel (see the module docs).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{row_bits, PackedSigns, PAR_MIN};
    use crate::word::Word;
    use core::arch::x86_64::*;
    use rayon::prelude::*;

    macro_rules! fc_kernel {
        ($name:ident, $t:ty, $lanes:expr, $mr:expr, $mask:ty, $set1:ident, $as:ty,
         $madd:ident, $add:ident, $sub:ident, $mstore:ident) => {
            /// One tile of `$mr` rows (`xr`: $mr rows of d_in words, zero-padded),
            /// all column blocks; writes `rows` rows of `y` (row-major, d_out columns).
            ///
            /// # Safety
            /// AVX-512F/BW/DQ available; `xr.len() == $mr·d_in`, `rb` from `row_bits`,
            /// `y.len() >= rows·d_out`, `rows <= $mr`.
            #[target_feature(enable = "avx512f,avx512bw,avx512dq")]
            unsafe fn $name(
                xr: &[$t],
                d_in: usize,
                d_out: usize,
                rb: &[u64],
                y: &mut [$t],
                rows: usize,
            ) {
                const V: usize = 64 / $lanes; // vectors per 64 columns
                const MR: usize = $mr;
                let mut rowsum = [0 as $t; MR];
                for (s, row) in rowsum.iter_mut().zip(xr.chunks_exact(d_in.max(1))) {
                    *s = row.iter().fold(0 as $t, |a, &v| a.wrapping_add(v));
                }
                if d_in == 0 {
                    rowsum = [0 as $t; MR];
                }
                let xp = xr.as_ptr();
                for (b, bits) in rb
                    .chunks_exact(d_in.max(1))
                    .enumerate()
                    .take(d_out.div_ceil(64))
                {
                    let mut acc = [[_mm512_setzero_si512(); V]; MR];
                    for (r, &m) in bits.iter().enumerate().take(d_in) {
                        let mut ks = [0 as $mask; V];
                        for (q, kq) in ks.iter_mut().enumerate() {
                            *kq = (m >> (q * $lanes)) as $mask;
                        }
                        for (i, ai) in acc.iter_mut().enumerate() {
                            let xv = $set1(*xp.add(i * d_in + r) as $as);
                            for q in 0..V {
                                ai[q] = $madd(ai[q], ks[q], ai[q], xv);
                            }
                        }
                    }
                    let cols = 64.min(d_out - 64 * b);
                    for (i, ai) in acc.iter().enumerate().take(rows) {
                        let rs = $set1(rowsum[i] as $as);
                        let yrow = y.as_mut_ptr().wrapping_add(i * d_out + 64 * b);
                        for (q, &a) in ai.iter().enumerate() {
                            let v = $sub($add(a, a), rs);
                            let valid = cols.saturating_sub(q * $lanes).min($lanes);
                            if valid == 0 {
                                break;
                            }
                            let km = (u64::MAX >> (64 - valid)) as $mask;
                            $mstore(yrow.wrapping_add(q * $lanes).cast(), km, v);
                        }
                    }
                }
            }
        };
    }

    fc_kernel!(
        tile16,
        u16,
        32,
        12,
        u32,
        _mm512_set1_epi16,
        i16,
        _mm512_mask_add_epi16,
        _mm512_add_epi16,
        _mm512_sub_epi16,
        _mm512_mask_storeu_epi16
    );
    fc_kernel!(
        tile32,
        u32,
        16,
        6,
        u16,
        _mm512_set1_epi32,
        i32,
        _mm512_mask_add_epi32,
        _mm512_add_epi32,
        _mm512_sub_epi32,
        _mm512_mask_storeu_epi32
    );
    fc_kernel!(
        tile64,
        u64,
        8,
        3,
        u8,
        _mm512_set1_epi64,
        i64,
        _mm512_mask_add_epi64,
        _mm512_add_epi64,
        _mm512_sub_epi64,
        _mm512_mask_storeu_epi64
    );

    /// The AVX-512 [`super::fc`] (caller checked the CPU features and the shapes).
    pub(super) fn fc<W: Word>(x: &[W], n: usize, w: &PackedSigns) -> Vec<W> {
        match W::BITS {
            16 => {
                run::<W, u16, 12>(x, n, w, |a, b, c, d, e, f| {
                    // SAFETY: features checked by the caller; shapes as tile16 requires.
                    unsafe { tile16(a, b, c, d, e, f) }
                })
            }
            32 => {
                run::<W, u32, 6>(x, n, w, |a, b, c, d, e, f| {
                    // SAFETY: as above.
                    unsafe { tile32(a, b, c, d, e, f) }
                })
            }
            _ => {
                run::<W, u64, 3>(x, n, w, |a, b, c, d, e, f| {
                    // SAFETY: as above.
                    unsafe { tile64(a, b, c, d, e, f) }
                })
            }
        }
    }

    /// Runs `tile` over the row tiles of X (W reinterpreted as T, the same width).
    fn run<W: Word, T: bytemuck::Pod + Default + Sync, const MR: usize>(
        x: &[W],
        n: usize,
        w: &PackedSigns,
        tile: impl Fn(&[T], usize, usize, &[u64], &mut [T], usize) + Sync,
    ) -> Vec<W> {
        let x: &[T] = bytemuck::cast_slice(x);
        let (d_in, d_out) = (w.d_in, w.d_out);
        let rb = row_bits(w);
        let mut y = vec![W::ZERO; n * d_out];
        let task = |(t, yt): (usize, &mut [W])| {
            let yt: &mut [T] = bytemuck::cast_slice_mut(yt);
            let rows = yt.len() / d_out;
            let i0 = t * MR;
            if rows == MR {
                tile(&x[i0 * d_in..(i0 + MR) * d_in], d_in, d_out, &rb, yt, rows);
            } else {
                let mut xr = vec![T::default(); MR * d_in];
                xr[..rows * d_in].copy_from_slice(&x[i0 * d_in..(i0 + rows) * d_in]);
                tile(&xr, d_in, d_out, &rb, yt, rows);
            }
        };
        if n * d_in * d_out >= PAR_MIN {
            y.par_chunks_mut(MR * d_out).enumerate().for_each(task);
        } else {
            y.chunks_mut(MR * d_out).enumerate().for_each(task);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::rand_words;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn naive<W: Word>(x: &[W], n: usize, s: &[i8], d_in: usize, d_out: usize) -> Vec<W> {
        let mut y = vec![W::ZERO; n * d_out];
        for i in 0..n {
            for c in 0..d_out {
                let mut acc = W::ZERO;
                for r in 0..d_in {
                    let v = x[i * d_in + r];
                    acc = if s[r * d_out + c] >= 0 {
                        acc.wadd(v)
                    } else {
                        acc.wsub(v)
                    };
                }
                y[i * d_out + c] = acc;
            }
        }
        y
    }

    fn check<W: Word>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dims = [1usize, 3, 17, 63, 64, 65, 130];
        for &n in &[1usize, 3, 17, 33, 65] {
            for &d_in in &dims {
                for &d_out in &dims {
                    let s: Vec<i8> = (0..d_in * d_out)
                        .map(|_| match rng.gen_range(0..3) {
                            0 => -1,
                            1 => 1,
                            _ => 0, // 0 counts as +1
                        })
                        .collect();
                    let p = pack_signs(&s, d_in, d_out);
                    let x = rand_words::<W>(&mut rng, n * d_in);
                    assert_eq!(
                        fc(&x, n, &p),
                        naive(&x, n, &s, d_in, d_out),
                        "n={n} {d_in}x{d_out}"
                    );
                }
            }
        }
    }

    #[test]
    fn fc_matches_naive_u16() {
        check::<u16>(21);
    }
    #[test]
    fn fc_matches_naive_u32() {
        check::<u32>(22);
    }
    #[test]
    fn fc_matches_naive_u64() {
        check::<u64>(23);
    }

    #[test]
    fn fc_parallel_path_and_edges() {
        let mut rng = ChaCha8Rng::seed_from_u64(24);
        let (n, d_in, d_out) = (37, 200, 100);
        let s: Vec<i8> = (0..d_in * d_out)
            .map(|_| if rng.gen() { 1 } else { -1 })
            .collect();
        let p = pack_signs(&s, d_in, d_out);
        let x = rand_words::<u32>(&mut rng, n * d_in);
        assert_eq!(fc(&x, n, &p), naive(&x, n, &s, d_in, d_out));
        // All +1: row sums; all −1: negated row sums; MAX entries.
        let x = vec![u64::MAX; 2 * 3];
        let plus = pack_signs(&[1i8; 3 * 2], 3, 2);
        let minus = pack_signs(&[-1i8; 3 * 2], 3, 2);
        assert_eq!(fc(&x, 2, &plus), vec![u64::MAX.wrapping_mul(3); 4]);
        assert_eq!(fc(&x, 2, &minus), vec![3u64; 4]);
        // Empty shapes.
        assert!(fc::<u16>(&[], 0, &plus).is_empty());
        let empty_in = pack_signs(&[], 0, 5);
        assert_eq!(fc::<u16>(&[], 2, &empty_in), vec![0u16; 10]);
    }

    #[test]
    fn pack_roundtrip_and_layout() {
        let mut rng = ChaCha8Rng::seed_from_u64(25);
        for &(d_in, d_out) in &[(1usize, 1usize), (63, 3), (64, 2), (65, 17), (130, 5)] {
            let s: Vec<i8> = (0..d_in * d_out)
                .map(|_| if rng.gen() { 1 } else { -1 })
                .collect();
            let p = pack_signs(&s, d_in, d_out);
            assert_eq!(p.words.len(), d_out * d_in.div_ceil(64));
            assert_eq!(unpack_signs(&p), s);
        }
        // Layout: column c owns words [c·wpc, (c+1)·wpc), bit r%64 is row r.
        let mut s = vec![-1i8; 70 * 2];
        s[65 * 2 + 1] = 1; // S[65, 1] = +1
        let p = pack_signs(&s, 70, 2);
        assert_eq!(p.words, vec![0, 0, 0, 1 << 1]);
    }
}
