//! Ring matrix products C = A·B mod 2^BITS (row-major), and a blocked transpose.
//!
//! Layout follows the GotoBLAS scheme: B is packed into KC×NR column panels and A into
//! MR×KC row panels, so the micro-kernel streams two contiguous buffers and keeps an MR×NR
//! accumulator tile in registers. A is packed once per product (every column block reads
//! it); B block by block into an L2-sized buffer of the thread that uses it. Products are
//! split over threads by columns (each thread packs and reads only its part of B, and
//! sums into a private C that is added at the end), or by rows when there are too few
//! columns. With the bert shapes (m = 128 rows against k×n weights of up to 7 MB) packing
//! B is the only cost besides the micro-kernel: packing all of B up front and splitting
//! rows, as before, left the kernel waiting on L3 and cost a third of the time.
//! Four micro-kernels, chosen by [`Simd`]:
//!
//! - **AVX-512** (explicit intrinsics): MR = 8 rows × NR = two 512-bit vectors (64 u16,
//!   32 u32 or 16 u64 columns), 16 accumulator registers; per k step two vector loads of
//!   B, eight broadcasts of A and 16 `vpmullw/vpmulld/vpmullq` + `vpadd`. The multiplier
//!   is the limit (measured on the Zen 5 development machine: two 512-bit `vpmulld` per
//!   cycle, four `vpaddd`; 8×3, 6×4, 4×4 and 12×2 tiles measured no better).
//! - **NEON** (explicit intrinsics, aarch64, u16 and u32): MR = 8 rows × NR = three
//!   128-bit vectors (24 u16 or 12 u32 columns), 24 accumulator registers; per k step
//!   three vector loads of B, one (u16) or two (u32) vector loads holding the 8 A values,
//!   and 24 `mla` by element. u64 runs the portable kernel at this level: NEON has no
//!   64-bit lane multiply.
//! - **AVX2 / portable**: the same source compiled with or without AVX2, MR = 4 and
//!   NR = 32 u16, 16 u32 or 4 u64 columns (64-bit products have no AVX2 instruction, and
//!   a narrower tile leaves registers for their emulation); LLVM's SLP vectoriser turns
//!   the unrolled tile into vector multiply-adds.
//! - **Scalar reference** ([`matmul_scalar`]): the textbook triple loop, the test oracle.
//!
//! Wrapping arithmetic is associative, so any summation order gives the exact ring result.
//! Small products run sequentially on a simple row-axpy loop.

use crate::backend::Simd;
use crate::word::Word;
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Depth of a packed panel (entries of k per pass); KC·NR words of B stay in L1.
const KC: usize = 256;
/// Rows of C per row block (upper bound; a multiple of every MR).
const MC: usize = 64;
/// Bytes of B per packed block (KC × NC words), sized for L2.
const NC_BYTES: usize = 256 * 1024;
/// Products with m·k·n below this run on the simple sequential loop.
const SMALL: usize = 1 << 15;
/// Products with m·k·n below this are not split over threads.
const PAR_MIN: usize = 1 << 18;
/// A parallel product is split over columns when every thread gets at least this many
/// micro-tile columns (NR wide), else over rows.
const COL_SPLIT_PANELS: usize = 4;

/// C = A·B mod 2^BITS for row-major A (m×k) and B (k×n); returns C (m×n, row-major).
///
/// Cost: m·k·n multiply-adds (vectorised, parallel over row blocks of C), plus packing
/// of O(m·k + k·n). Panics if `a.len() != m*k` or `b.len() != k*n`.
pub fn matmul<W: Word>(a: &[W], b: &[W], m: usize, k: usize, n: usize) -> Vec<W> {
    let mut c = vec![W::ZERO; m * n];
    matmul_into(a, b, &mut c, m, k, n, false);
    c
}

/// C = A·B (or C += A·B when `accumulate`) mod 2^BITS, all row-major: A m×k, B k×n,
/// C m×n.
///
/// Cost: as [`matmul`]; no allocation besides packing buffers. Panics on a length that
/// does not match the shape.
pub fn matmul_into<W: Word>(
    a: &[W],
    b: &[W],
    c: &mut [W],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    gemm(Simd::active(), a, b, c, m, k, n, accumulate, true);
}

/// [`matmul`] on a given SIMD level (tests and benchmarks force each level the CPU
/// supports; panics on a level it does not).
pub fn matmul_with<W: Word>(simd: Simd, a: &[W], b: &[W], m: usize, k: usize, n: usize) -> Vec<W> {
    let mut c = vec![W::ZERO; m * n];
    gemm(simd, a, b, &mut c, m, k, n, false, true);
    c
}

/// The scalar reference: `C[i][j] = Σ_t A[i][t]·B[t][j]` by the textbook triple loop (one
/// thread, no blocking). The oracle of the tests and the `Scalar` backend.
pub fn matmul_scalar<W: Word>(a: &[W], b: &[W], m: usize, k: usize, n: usize) -> Vec<W> {
    assert_eq!(a.len(), m * k, "matmul: a has the wrong length");
    assert_eq!(b.len(), k * n, "matmul: b has the wrong length");
    let mut c = vec![W::ZERO; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = W::ZERO;
            for t in 0..k {
                s = s.wadd(a[i * k + t].wmul(b[t * n + j]));
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// A batch of independent products: for each t < batch, C_t = A_t·B_t with A_t the
/// t-th m×k block of `a`, B_t the t-th k×n block of `b` (contiguous, row-major);
/// returns the batch·m×n results contiguously.
///
/// Cost: batch·m·k·n multiply-adds; parallel over the batch when each product is small,
/// inside each product otherwise. Panics on mismatched lengths.
pub fn matmul_batched<W: Word>(
    a: &[W],
    b: &[W],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<W> {
    assert_eq!(
        a.len(),
        batch * m * k,
        "matmul_batched: a has the wrong length"
    );
    assert_eq!(
        b.len(),
        batch * k * n,
        "matmul_batched: b has the wrong length"
    );
    let simd = Simd::active();
    let mut c = vec![W::ZERO; batch * m * n];
    if m * n == 0 {
        return c;
    }
    let work = m * k * n;
    let threads = rayon::current_num_threads();
    if batch > 1 && (work < PAR_MIN * 4 || batch >= 2 * threads) && batch * work >= PAR_MIN {
        c.par_chunks_mut(m * n).enumerate().for_each(|(t, ct)| {
            let at = &a[t * m * k..(t + 1) * m * k];
            let bt = &b[t * k * n..(t + 1) * k * n];
            gemm(simd, at, bt, ct, m, k, n, false, false);
        });
    } else {
        for (t, ct) in c.chunks_mut(m * n).enumerate() {
            let at = &a[t * m * k..(t + 1) * m * k];
            let bt = &b[t * k * n..(t + 1) * k * n];
            gemm(simd, at, bt, ct, m, k, n, false, true);
        }
    }
    c
}

/// Transpose of a row-major `rows × cols` matrix (returns `cols × rows`, row-major).
///
/// Cost: rows·cols copies in 32×32 tiles, so reads and writes both stay within a few
/// cache lines per tile (memory-bound; sequential). Panics if `a.len() != rows*cols`.
pub fn transpose<W: Copy>(a: &[W], rows: usize, cols: usize) -> Vec<W> {
    assert_eq!(a.len(), rows * cols, "transpose: wrong length");
    if a.is_empty() {
        return Vec::new();
    }
    // Fill with a valid value first (no Default bound needed), then overwrite.
    let mut out = vec![a[0]; rows * cols];
    const T: usize = 32;
    for j0 in (0..cols).step_by(T) {
        let j1 = (j0 + T).min(cols);
        for i0 in (0..rows).step_by(T) {
            let i1 = (i0 + T).min(rows);
            for j in j0..j1 {
                let orow = &mut out[j * rows + i0..j * rows + i1];
                for (o, i) in orow.iter_mut().zip(i0..i1) {
                    *o = a[i * cols + j];
                }
            }
        }
    }
    out
}

/// Shared driver: validates, zeroes when not accumulating, picks the path.
///
/// A is packed once for every depth block (every column block of B reads it). B is
/// packed block by block into an L2-sized buffer of the thread that uses it (sequential,
/// and parallel split over columns), or, when there are too few columns to split, all
/// at once in parallel before one parallel pass over row blocks of C.
#[allow(clippy::too_many_arguments)]
fn gemm<W: Word>(
    simd: Simd,
    a: &[W],
    b: &[W],
    c: &mut [W],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    parallel: bool,
) {
    assert_eq!(a.len(), m * k, "matmul: a has the wrong length");
    assert_eq!(b.len(), k * n, "matmul: b has the wrong length");
    assert_eq!(c.len(), m * n, "matmul: c has the wrong length");
    if !accumulate {
        c.fill(W::ZERO);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let work = m * k * n;
    if work < SMALL {
        small_gemm(a, b, c, k, n);
        return;
    }
    let (mr, nr) = geometry::<W>(simd);
    let nc = ((NC_BYTES / std::mem::size_of::<W>() / KC) / nr).max(1) * nr;
    let parallel = parallel && work >= PAR_MIN && rayon::current_num_threads() > 1;
    let mc = if parallel {
        // One row block per thread: every thread streams the packed B once.
        let per = m.div_ceil(rayon::current_num_threads());
        per.div_ceil(mr) * mr
    } else {
        MC
    }
    .clamp(mr, MC / mr * mr);
    let panels = m.div_ceil(mr);
    with_scratch(&APACK, panels * mr * k, |apack: &mut [W]| {
        pack_a(a, m, k, mr, apack, parallel);
        let apack = &*apack;
        // The packed rows ic..ic+mcb (ic a multiple of mr) of depth block pc.
        let a_block = |ic: usize, mcb: usize, pc: usize| {
            let kc = KC.min(k - pc);
            let start = panels * mr * pc + ic / mr * kc * mr;
            &apack[start..start + mcb.div_ceil(mr) * kc * mr]
        };
        // Columns col0..col0+w of C, held in `cpart` (row stride `stride`, column col0
        // at offset 0): B packed block by block into this thread's L2-sized buffer, every
        // row block run against it while it is hot.
        let column_pass = |cpart: &mut [W], stride: usize, col0: usize, w: usize| {
            let most = nc.min(w).div_ceil(nr) * nr * KC.min(k);
            with_scratch(&BPACK, most, |buf: &mut [W]| {
                for jc in (col0..col0 + w).step_by(nc) {
                    let ncb = nc.min(col0 + w - jc);
                    for pc in (0..k).step_by(KC) {
                        let kc = KC.min(k - pc);
                        let bp = &mut buf[..ncb.div_ceil(nr) * nr * kc];
                        pack_b(simd, b, n, pc, kc, jc, ncb, nr, bp);
                        let bp = &*bp;
                        for (blk, cblk) in cpart.chunks_mut(mc * stride).enumerate() {
                            let (ic, mcb) = (blk * mc, cblk.len() / stride);
                            let ap = a_block(ic, mcb, pc);
                            block_kernel::<W>(simd, ap, bp, cblk, stride, jc - col0, ncb, kc, mcb);
                        }
                    }
                }
            });
        };
        let threads = rayon::current_num_threads();
        if parallel && n >= threads * COL_SPLIT_PANELS * nr {
            // Split over columns: B is read and packed once in all, each thread's blocks
            // in its own cache; every thread sums into a private C that is then added.
            let per = n.div_ceil(threads).div_ceil(nr) * nr;
            // The threads' private sums share one scratch buffer, split into disjoint
            // parts; then C's rows add them, in parallel.
            let cols: Vec<(usize, usize)> =
                (0..n).step_by(per).map(|j| (j, per.min(n - j))).collect();
            with_scratch(&CPART, m * n, |all: &mut [W]| {
                let mut parts = split_parts(all, cols.iter().map(|&(_, w)| m * w));
                parts
                    .par_iter_mut()
                    .zip(cols.par_iter())
                    .for_each(|(cpart, &(col0, w))| {
                        cpart.fill(W::ZERO);
                        column_pass(cpart, w, col0, w);
                    });
                c.par_chunks_mut(n).enumerate().for_each(|(i, crow)| {
                    for (part, &(col0, w)) in parts.iter().zip(&cols) {
                        let src = &part[i * w..][..w];
                        for (cv, &pv) in crow[col0..col0 + w].iter_mut().zip(src) {
                            *cv = cv.wadd(pv);
                        }
                    }
                });
            });
        } else if parallel {
            // Too few columns to split: row blocks in parallel, every one against all of
            // B packed once up front.
            let blocks: Vec<(usize, usize)> = (0..n)
                .step_by(nc)
                .flat_map(|jc| (0..k).step_by(KC).map(move |pc| (jc, pc)))
                .collect();
            let size = |(jc, pc): (usize, usize)| nc.min(n - jc).div_ceil(nr) * nr * KC.min(k - pc);
            let total: usize = blocks.iter().map(|&blk| size(blk)).sum();
            with_scratch(&BPACK, total, |all: &mut [W]| {
                let mut parts = split_parts(all, blocks.iter().map(|&blk| size(blk)));
                parts
                    .par_iter_mut()
                    .zip(blocks.par_iter())
                    .for_each(|(dst, &(jc, pc))| {
                        pack_b(simd, b, n, pc, KC.min(k - pc), jc, nc.min(n - jc), nr, dst)
                    });
                let packed: Vec<&[W]> = parts.into_iter().map(|p| &*p).collect();
                c.par_chunks_mut(mc * n)
                    .enumerate()
                    .for_each(|(blk, cblk)| {
                        let (ic, mcb) = (blk * mc, cblk.len() / n);
                        for (&(jc, pc), bp) in blocks.iter().zip(&packed) {
                            let (kc, ncb) = (KC.min(k - pc), nc.min(n - jc));
                            let ap = a_block(ic, mcb, pc);
                            block_kernel::<W>(simd, ap, bp, cblk, n, jc, ncb, kc, mcb);
                        }
                    });
            });
        } else {
            column_pass(c, n, 0, n);
        }
    });
}

thread_local! {
    // Packing buffers kept across calls: fresh pages cost more than the product on some
    // machines. u128 storage so that any word type is aligned in it.
    static APACK: RefCell<Vec<u128>> = const { RefCell::new(Vec::new()) };
    static BPACK: RefCell<Vec<u128>> = const { RefCell::new(Vec::new()) };
    static CPART: RefCell<Vec<u128>> = const { RefCell::new(Vec::new()) };
}

/// Consecutive disjoint parts of `all` with the given lengths (their sum at most
/// `all.len()`).
fn split_parts<W>(all: &mut [W], lens: impl Iterator<Item = usize>) -> Vec<&mut [W]> {
    let mut parts = Vec::new();
    let mut rest = all;
    for len in lens {
        let (head, tail) = rest.split_at_mut(len);
        parts.push(head);
        rest = tail;
    }
    parts
}

/// Runs `f` on `words` words of this thread's packing buffer `key` (contents
/// unspecified), grown as needed; a nested use on the same thread gets a fresh buffer.
fn with_scratch<W: Word, R>(
    key: &'static LocalKey<RefCell<Vec<u128>>>,
    words: usize,
    f: impl FnOnce(&mut [W]) -> R,
) -> R {
    key.with(|cell| {
        let mut fresh = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let store: &mut Vec<u128> = match guard.as_mut() {
            Ok(v) => v,
            Err(_) => &mut fresh,
        };
        let need = (words * std::mem::size_of::<W>()).div_ceil(16);
        if store.len() < need {
            store.resize(need, 0);
        }
        f(&mut bytemuck::cast_slice_mut::<u128, W>(&mut store[..need])[..words])
    })
}

/// Rows per micro-tile of the AVX2 / portable kernels.
const MR: usize = 4;
/// Rows per micro-tile of the AVX-512 kernels.
const MR512: usize = 8;
/// 512-bit vectors of B per micro-tile row of the AVX-512 kernels.
const NV512: usize = 2;

/// Rows per micro-tile of the NEON kernels.
const MR_NEON: usize = 8;

/// Whether the explicit NEON micro-kernel runs for this level and word width (u16 and
/// u32 only: NEON has no 64-bit lane multiply, u64 stays on the portable kernel).
#[inline]
fn neon_tiles<W: Word>(simd: Simd) -> bool {
    simd == Simd::Neon && cfg!(target_arch = "aarch64") && W::BITS <= 32
}

/// (rows, columns) of the micro-tile of a SIMD level (see the module docs).
fn geometry<W: Word>(simd: Simd) -> (usize, usize) {
    if simd == Simd::Avx512 && cfg!(target_arch = "x86_64") {
        return (MR512, NV512 * 512 / W::BITS as usize);
    }
    if neon_tiles::<W>(simd) {
        return (MR_NEON, 3 * 128 / W::BITS as usize);
    }
    (MR, nr_of::<W>())
}

/// Columns per micro-tile of the AVX2 / portable kernels (see the module docs).
fn nr_of<W: Word>() -> usize {
    match W::BITS {
        16 => 32,
        32 => 16,
        _ => NR64,
    }
}
const NR64: usize = 4;

/// Row-axpy loop for small products: C[i,:] += A[i,kk] · B[kk,:].
fn small_gemm<W: Word>(a: &[W], b: &[W], c: &mut [W], k: usize, n: usize) {
    for (ci, ai) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        for (&aik, bk) in ai.iter().zip(b.chunks_exact(n)) {
            for (cv, &bv) in ci.iter_mut().zip(bk) {
                *cv = cv.wadd(aik.wmul(bv));
            }
        }
    }
}

/// Packs B[pc..pc+kc, jc..jc+ncb] into `out` (exactly `ceil(ncb / nr)·kc·nr` words):
/// panel p holds `kc` rows of `nr` words, zero-padded past column ncb.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pack_b_body<W: Word>(
    b: &[W],
    n: usize,
    pc: usize,
    kc: usize,
    jc: usize,
    ncb: usize,
    nr: usize,
    out: &mut [W],
) {
    debug_assert_eq!(out.len(), ncb.div_ceil(nr) * kc * nr);
    // Row by row of B, so the reads stream; each row fills one line of every panel.
    let panel_words = kc * nr;
    for kk in 0..kc {
        let row = &b[(pc + kk) * n + jc..][..ncb];
        for (p, src) in row.chunks(nr).enumerate() {
            let dst = &mut out[p * panel_words + kk * nr..][..nr];
            if src.len() == nr {
                copy_line(dst, src);
            } else {
                dst[..src.len()].copy_from_slice(src);
                dst[src.len()..].fill(W::ZERO);
            }
        }
    }
}

simd_dispatch! {
    /// [`pack_b_body`], with 256-bit moves where AVX2 exists.
    fn pack_b<W: Word>(
        b: &[W],
        n: usize,
        pc: usize,
        kc: usize,
        jc: usize,
        ncb: usize,
        nr: usize,
        out: &mut [W],
    ) => pack_b_body
}

/// `dst.copy_from_slice(src)` for one panel line, inlined for the line sizes of the
/// micro-kernels (a call to `memcpy` per 128-byte line cost as much as the copy).
#[inline(always)]
fn copy_line<W: Word>(dst: &mut [W], src: &[W]) {
    fn fixed<const B: usize>(d: &mut [u8], s: &[u8]) {
        let d: &mut [u8; B] = d.try_into().expect("line length");
        *d = *<&[u8; B]>::try_from(s).expect("line length");
    }
    let (d, s): (&mut [u8], &[u8]) = (bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(src));
    match s.len() {
        128 => fixed::<128>(d, s),
        64 => fixed::<64>(d, s),
        48 => fixed::<48>(d, s),
        32 => fixed::<32>(d, s),
        _ => d.copy_from_slice(s),
    }
}

/// Packs all of A (m×k) into `out` (exactly `ceil(m / mr)·mr·k` words): depth blocks of
/// KC columns one after the other, each holding every panel of `mr` rows as `kc` groups
/// of `mr` words (column kk of the panel's rows), zero-padded past row m. Depth blocks
/// are packed in parallel when `parallel`.
fn pack_a<W: Word>(a: &[W], m: usize, k: usize, mr: usize, out: &mut [W], parallel: bool) {
    let panels = m.div_ceil(mr);
    debug_assert_eq!(out.len(), panels * mr * k);
    let depth_block = |(d, seg): (usize, &mut [W])| {
        let pc = d * KC;
        let kc = KC.min(k - pc);
        for (q, panel) in seg.chunks_exact_mut(kc * mr).enumerate() {
            let r0 = q * mr;
            let h = mr.min(m - r0);
            if h < mr {
                panel.fill(W::ZERO);
            }
            for r in 0..h {
                let src = &a[(r0 + r) * k + pc..][..kc];
                for (kk, &v) in src.iter().enumerate() {
                    panel[kk * mr + r] = v;
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(panels * mr * KC)
            .enumerate()
            .for_each(depth_block);
    } else {
        out.chunks_mut(panels * mr * KC)
            .enumerate()
            .for_each(depth_block);
    }
}

/// Runs every micro-tile of one row block against one packed B block, on the kernel of
/// `simd` (packing as [`geometry`] says).
#[allow(clippy::too_many_arguments)]
fn block_kernel<W: Word>(
    simd: Simd,
    ap: &[W],
    bp: &[W],
    cblk: &mut [W],
    n: usize,
    jc: usize,
    ncb: usize,
    kc: usize,
    mcb: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        simd.check();
        // SAFETY: the CPU supports AVX-512F/BW/DQ (`check` panics otherwise); the panels
        // were packed with this level's geometry.
        unsafe { avx512::tiles::<W>(ap, bp, cblk, n, jc, ncb, kc, mcb) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if neon_tiles::<W>(simd) {
        simd.check();
        // SAFETY: the CPU supports NEON (`check` panics otherwise); W is u16 or u32
        // (`neon_tiles`) and the panels were packed with this level's geometry.
        unsafe { neon::tiles::<W>(ap, bp, cblk, n, jc, ncb, kc, mcb) };
        return;
    }
    block_kernel_simd::<W>(simd, ap, bp, cblk, n, jc, ncb, kc, mcb)
}

simd_dispatch! {
    /// [`block_kernel`] of the AVX2 / portable levels.
    fn block_kernel_simd<W: Word>(
        ap: &[W],
        bp: &[W],
        cblk: &mut [W],
        n: usize,
        jc: usize,
        ncb: usize,
        kc: usize,
        mcb: usize,
    ) => block_kernel_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_kernel_body<W: Word>(
    ap: &[W],
    bp: &[W],
    cblk: &mut [W],
    n: usize,
    jc: usize,
    ncb: usize,
    kc: usize,
    mcb: usize,
) {
    match W::BITS {
        16 => tiles::<W, 32>(ap, bp, cblk, n, jc, ncb, kc, mcb),
        32 => tiles::<W, 16>(ap, bp, cblk, n, jc, ncb, kc, mcb),
        _ => tiles::<W, NR64>(ap, bp, cblk, n, jc, ncb, kc, mcb),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles<W: Word, const NR: usize>(
    ap: &[W],
    bp: &[W],
    cblk: &mut [W],
    n: usize,
    jc: usize,
    ncb: usize,
    kc: usize,
    mcb: usize,
) {
    debug_assert_eq!(NR, nr_of::<W>());
    for (p, bpanel) in bp.chunks_exact(kc * NR).enumerate() {
        let j0 = jc + p * NR;
        let w = NR.min(jc + ncb - j0);
        for (q, apanel) in ap.chunks_exact(kc * MR).enumerate() {
            let r0 = q * MR;
            let h = MR.min(mcb - r0);
            let t = micro::<W, NR>(apanel, bpanel);
            for (i, trow) in t.iter().enumerate().take(h) {
                let crow = &mut cblk[(r0 + i) * n + j0..][..w];
                for (cv, &tv) in crow.iter_mut().zip(trow) {
                    *cv = cv.wadd(tv);
                }
            }
        }
    }
}

/// Emits no instruction. Inside the micro-kernel's k loop it stops LLVM's loop
/// vectoriser from vectorising across k (strided gathers of A and B, accumulators
/// spilled), so that the SLP vectoriser turns the unrolled body into NR-wide vector
/// multiply-adds on register-resident accumulators instead. (`nomem`: accumulators stay
/// in registers; a `compiler_fence` would force them to memory.)
#[inline(always)]
pub(crate) fn loop_vectoriser_barrier() {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: an empty asm block with no operands that touches no memory, stack or flags.
    unsafe {
        std::arch::asm!("", options(nomem, nostack, preserves_flags));
    }
}

/// MR×NR register tile: Σ_kk apanel[kk][i] · bpanel[kk][j].
#[inline(always)]
fn micro<W: Word, const NR: usize>(apanel: &[W], bpanel: &[W]) -> [[W; NR]; MR] {
    let mut t = [[W::ZERO; NR]; MR];
    for (av, bv) in apanel.chunks_exact(MR).zip(bpanel.chunks_exact(NR)) {
        loop_vectoriser_barrier();
        for i in 0..MR {
            let ai = av[i];
            for j in 0..NR {
                t[i][j] = t[i][j].wadd(ai.wmul(bv[j]));
            }
        }
    }
    t
}

/// The AVX-512 micro-kernels: MR512 × (2 vectors) tiles, explicit intrinsics.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR512, NV512};
    use crate::word::Word;
    use core::arch::x86_64::*;

    macro_rules! tile_kernel {
        ($name:ident, $t:ty, $lanes:expr, $set1:ident, $as:ty, $mul:ident, $add:ident) => {
            /// Every micro-tile of a row block against a packed B block (see
            /// `super::tiles`), for one word type.
            ///
            /// # Safety
            /// AVX-512F/BW/DQ must be available; panels packed with MR512 rows and
            /// 2·lanes columns.
            #[target_feature(enable = "avx512f,avx512bw,avx512dq")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $name(
                ap: &[$t],
                bp: &[$t],
                cblk: &mut [$t],
                n: usize,
                jc: usize,
                ncb: usize,
                kc: usize,
                mcb: usize,
            ) {
                const NR: usize = NV512 * $lanes;
                for (p, bpanel) in bp.chunks_exact(kc * NR).enumerate() {
                    let j0 = jc + p * NR;
                    let w = NR.min(jc + ncb - j0);
                    for (q, apanel) in ap.chunks_exact(kc * MR512).enumerate() {
                        let r0 = q * MR512;
                        let h = MR512.min(mcb - r0);
                        let mut acc = [_mm512_setzero_si512(); NV512 * MR512];
                        let (pa, pb) = (apanel.as_ptr(), bpanel.as_ptr());
                        for kk in 0..kc {
                            let mut bv = [_mm512_setzero_si512(); NV512];
                            for (v, b) in bv.iter_mut().enumerate() {
                                *b = _mm512_loadu_si512(pb.add(kk * NR + v * $lanes).cast());
                            }
                            for i in 0..MR512 {
                                let av = $set1(*pa.add(kk * MR512 + i) as $as);
                                for v in 0..NV512 {
                                    acc[NV512 * i + v] = $add(acc[NV512 * i + v], $mul(av, bv[v]));
                                }
                            }
                        }
                        if h == MR512 && w == NR {
                            for (i, row) in acc.chunks_exact(NV512).enumerate() {
                                let c = cblk.as_mut_ptr().add((r0 + i) * n + j0);
                                for (v, &x) in row.iter().enumerate() {
                                    let cv = c.add(v * $lanes);
                                    let c0 = _mm512_loadu_si512(cv.cast());
                                    _mm512_storeu_si512(cv.cast(), $add(c0, x));
                                }
                            }
                        } else {
                            let mut t = [[0 as $t; NR]; MR512];
                            for (i, trow) in t.iter_mut().enumerate() {
                                for v in 0..NV512 {
                                    _mm512_storeu_si512(
                                        trow.as_mut_ptr().add(v * $lanes).cast(),
                                        acc[NV512 * i + v],
                                    );
                                }
                            }
                            for (i, trow) in t.iter().enumerate().take(h) {
                                let crow = &mut cblk[(r0 + i) * n + j0..][..w];
                                for (cv, &tv) in crow.iter_mut().zip(trow) {
                                    *cv = cv.wrapping_add(tv);
                                }
                            }
                        }
                    }
                }
            }
        };
    }

    tile_kernel!(
        tiles16,
        u16,
        32,
        _mm512_set1_epi16,
        i16,
        _mm512_mullo_epi16,
        _mm512_add_epi16
    );
    tile_kernel!(
        tiles32,
        u32,
        16,
        _mm512_set1_epi32,
        i32,
        _mm512_mullo_epi32,
        _mm512_add_epi32
    );
    tile_kernel!(
        tiles64,
        u64,
        8,
        _mm512_set1_epi64,
        i64,
        _mm512_mullo_epi64,
        _mm512_add_epi64
    );

    /// Dispatch on the word width (the slices are reinterpreted, same bits).
    ///
    /// # Safety
    /// AVX-512F/BW/DQ must be available; panels packed with this level's geometry.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tiles<W: Word>(
        ap: &[W],
        bp: &[W],
        cblk: &mut [W],
        n: usize,
        jc: usize,
        ncb: usize,
        kc: usize,
        mcb: usize,
    ) {
        use bytemuck::{cast_slice, cast_slice_mut};
        match W::BITS {
            16 => tiles16(
                cast_slice(ap),
                cast_slice(bp),
                cast_slice_mut(cblk),
                n,
                jc,
                ncb,
                kc,
                mcb,
            ),
            32 => tiles32(
                cast_slice(ap),
                cast_slice(bp),
                cast_slice_mut(cblk),
                n,
                jc,
                ncb,
                kc,
                mcb,
            ),
            _ => tiles64(
                cast_slice(ap),
                cast_slice(bp),
                cast_slice_mut(cblk),
                n,
                jc,
                ncb,
                kc,
                mcb,
            ),
        }
    }
}

/// The NEON micro-kernels (u16, u32): MR_NEON = 8 rows × 3 vectors (24 u16 or 12 u32
/// columns), 24 accumulator registers; per k step three vector loads of B, one (u16) or
/// two (u32) vector loads of the 8 A values, and 24 `mla` by element.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::MR_NEON;
    use crate::word::Word;
    use core::arch::aarch64::*;

    /// Adds the MR_NEON × NR tile `acc` (rows of 3 vectors) to C rows `r0 ..` and columns
    /// `j0 ..`, only the first `h` rows and `w` columns (the rest is padding).
    macro_rules! store_tile {
        ($t:ty, $lanes:expr, $ld:ident, $st:ident, $add:ident, $acc:ident, $cblk:ident,
         $n:ident, $r0:ident, $j0:ident, $h:ident, $w:ident) => {{
            const NR: usize = 3 * $lanes;
            if $h == MR_NEON && $w == NR {
                for (i, row) in $acc.iter().enumerate() {
                    let c = $cblk.as_mut_ptr().add(($r0 + i) * $n + $j0);
                    for (v, &a) in row.iter().enumerate() {
                        let cv = c.add(v * $lanes);
                        $st(cv, $add($ld(cv), a));
                    }
                }
            } else {
                let mut t = [[0 as $t; NR]; MR_NEON];
                for (trow, row) in t.iter_mut().zip(&$acc) {
                    for (v, &a) in row.iter().enumerate() {
                        $st(trow.as_mut_ptr().add(v * $lanes), a);
                    }
                }
                for (i, trow) in t.iter().enumerate().take($h) {
                    let crow = &mut $cblk[($r0 + i) * $n + $j0..][..$w];
                    for (cv, &tv) in crow.iter_mut().zip(trow) {
                        *cv = cv.wrapping_add(tv);
                    }
                }
            }
        }};
    }

    /// Every micro-tile of a row block against a packed B block (see `super::tiles`),
    /// u16: 8 rows × 24 columns.
    ///
    /// # Safety
    /// NEON must be available; panels packed with MR_NEON rows and 24 columns
    /// (`ap.len()` a multiple of `kc·8`, `bp.len()` of `kc·24`), `cblk` holds `mcb` rows
    /// of `n` words and `jc + ncb <= n`.
    #[target_feature(enable = "neon")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles16(
        ap: &[u16],
        bp: &[u16],
        cblk: &mut [u16],
        n: usize,
        jc: usize,
        ncb: usize,
        kc: usize,
        mcb: usize,
    ) {
        const NR: usize = 24;
        for (p, bpanel) in bp.chunks_exact(kc * NR).enumerate() {
            let j0 = jc + p * NR;
            let w = NR.min(jc + ncb - j0);
            for (q, apanel) in ap.chunks_exact(kc * MR_NEON).enumerate() {
                let r0 = q * MR_NEON;
                let h = MR_NEON.min(mcb - r0);
                let mut acc = [[vdupq_n_u16(0); 3]; MR_NEON];
                let (pa, pb) = (apanel.as_ptr(), bpanel.as_ptr());
                for kk in 0..kc {
                    let b = [
                        vld1q_u16(pb.add(kk * NR)),
                        vld1q_u16(pb.add(kk * NR + 8)),
                        vld1q_u16(pb.add(kk * NR + 16)),
                    ];
                    // The 8 A values of this k, one per row, in one register.
                    let a = vld1q_u16(pa.add(kk * MR_NEON));
                    macro_rules! row {
                        ($i:literal) => {
                            for v in 0..3 {
                                acc[$i][v] = vmlaq_laneq_u16::<$i>(acc[$i][v], b[v], a);
                            }
                        };
                    }
                    row!(0);
                    row!(1);
                    row!(2);
                    row!(3);
                    row!(4);
                    row!(5);
                    row!(6);
                    row!(7);
                }
                store_tile!(u16, 8, vld1q_u16, vst1q_u16, vaddq_u16, acc, cblk, n, r0, j0, h, w);
            }
        }
    }

    /// As [`tiles16`] for u32: 8 rows × 12 columns.
    ///
    /// # Safety
    /// As [`tiles16`], with 12-column B panels.
    #[target_feature(enable = "neon")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles32(
        ap: &[u32],
        bp: &[u32],
        cblk: &mut [u32],
        n: usize,
        jc: usize,
        ncb: usize,
        kc: usize,
        mcb: usize,
    ) {
        const NR: usize = 12;
        for (p, bpanel) in bp.chunks_exact(kc * NR).enumerate() {
            let j0 = jc + p * NR;
            let w = NR.min(jc + ncb - j0);
            for (q, apanel) in ap.chunks_exact(kc * MR_NEON).enumerate() {
                let r0 = q * MR_NEON;
                let h = MR_NEON.min(mcb - r0);
                let mut acc = [[vdupq_n_u32(0); 3]; MR_NEON];
                let (pa, pb) = (apanel.as_ptr(), bpanel.as_ptr());
                for kk in 0..kc {
                    let b = [
                        vld1q_u32(pb.add(kk * NR)),
                        vld1q_u32(pb.add(kk * NR + 4)),
                        vld1q_u32(pb.add(kk * NR + 8)),
                    ];
                    // The 8 A values of this k: rows 0..4 and 4..8.
                    let a = [
                        vld1q_u32(pa.add(kk * MR_NEON)),
                        vld1q_u32(pa.add(kk * MR_NEON + 4)),
                    ];
                    macro_rules! row {
                        ($i:literal, $half:literal, $lane:literal) => {
                            for v in 0..3 {
                                acc[$i][v] = vmlaq_laneq_u32::<$lane>(acc[$i][v], b[v], a[$half]);
                            }
                        };
                    }
                    row!(0, 0, 0);
                    row!(1, 0, 1);
                    row!(2, 0, 2);
                    row!(3, 0, 3);
                    row!(4, 1, 0);
                    row!(5, 1, 1);
                    row!(6, 1, 2);
                    row!(7, 1, 3);
                }
                store_tile!(u32, 4, vld1q_u32, vst1q_u32, vaddq_u32, acc, cblk, n, r0, j0, h, w);
            }
        }
    }

    /// Dispatch on the word width (the slices are reinterpreted, same bits).
    ///
    /// # Safety
    /// NEON must be available; `W` is u16 or u32; panels packed with this level's
    /// geometry (`super::geometry`).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tiles<W: Word>(
        ap: &[W],
        bp: &[W],
        cblk: &mut [W],
        n: usize,
        jc: usize,
        ncb: usize,
        kc: usize,
        mcb: usize,
    ) {
        use bytemuck::{cast_slice, cast_slice_mut};
        match W::BITS {
            16 => tiles16(
                cast_slice(ap),
                cast_slice(bp),
                cast_slice_mut(cblk),
                n,
                jc,
                ncb,
                kc,
                mcb,
            ),
            32 => tiles32(
                cast_slice(ap),
                cast_slice(bp),
                cast_slice_mut(cblk),
                n,
                jc,
                ncb,
                kc,
                mcb,
            ),
            _ => unreachable!("matmul: no NEON kernel for {}-bit words", W::BITS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::rand_words;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn naive<W: Word>(a: &[W], b: &[W], m: usize, k: usize, n: usize) -> Vec<W> {
        let mut c = vec![W::ZERO; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = W::ZERO;
                for t in 0..k {
                    s = s.wadd(a[i * k + t].wmul(b[t * n + j]));
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    fn check<W: Word>(rng: &mut ChaCha8Rng) {
        let dims = [1usize, 3, 17, 63, 65, 130];
        for &m in &dims {
            for &k in &[1usize, 17, 65, 300] {
                for &n in &dims {
                    if m * k * n > 3_000_000 {
                        continue;
                    }
                    let a = rand_words::<W>(rng, m * k);
                    let b = rand_words::<W>(rng, k * n);
                    let want = naive(&a, &b, m, k, n);
                    assert_eq!(matmul(&a, &b, m, k, n), want, "{m}x{k}x{n}");
                    let mut c = rand_words::<W>(rng, m * n);
                    let c0 = c.clone();
                    matmul_into(&a, &b, &mut c, m, k, n, true);
                    for i in 0..m * n {
                        assert_eq!(c[i], c0[i].wadd(want[i]));
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_matches_naive_u16() {
        check::<u16>(&mut ChaCha8Rng::seed_from_u64(1));
    }
    #[test]
    fn matmul_matches_naive_u32() {
        check::<u32>(&mut ChaCha8Rng::seed_from_u64(2));
    }
    #[test]
    fn matmul_matches_naive_u64() {
        check::<u64>(&mut ChaCha8Rng::seed_from_u64(3));
    }

    #[test]
    fn matmul_large_parallel_and_edge_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Larger than one KC / NC block in every dimension.
        let (m, k, n) = (70, 520, 1100);
        let a = rand_words::<u32>(&mut rng, m * k);
        let b = rand_words::<u32>(&mut rng, k * n);
        assert_eq!(matmul(&a, &b, m, k, n), naive(&a, &b, m, k, n));
        // MAX · MAX = 1, 2^(l-1) · 2 = 0.
        let a = vec![u64::MAX; 3 * 5];
        let b = vec![u64::MAX; 5 * 2];
        assert_eq!(matmul(&a, &b, 3, 5, 2), vec![5u64; 6]);
        let a = vec![0x8000u16; 4];
        assert_eq!(matmul(&a, &[2u16, 2, 2, 2], 2, 2, 2), vec![0u16; 4]);
        // Overwrite (not accumulate) really overwrites.
        let mut c = vec![7u16; 4];
        matmul_into(&[1u16, 0, 0, 1], &[1u16, 2, 3, 4], &mut c, 2, 2, 2, false);
        assert_eq!(c, vec![1, 2, 3, 4]);
    }

    /// Both parallel splits (over columns, and over rows when there are too few
    /// columns), with uneven parts and accumulation, on a 3-thread pool whatever the
    /// machine.
    fn check_parallel<W: Word>(rng: &mut ChaCha8Rng) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        pool.install(|| {
            for &(m, k, n) in &[
                (70usize, 520usize, 1100usize),
                (1000, 300, 130),
                (9, 260, 777),
            ] {
                let a = rand_words::<W>(rng, m * k);
                let b = rand_words::<W>(rng, k * n);
                let want = naive(&a, &b, m, k, n);
                assert_eq!(matmul(&a, &b, m, k, n), want, "{m}x{k}x{n}");
                let mut c = rand_words::<W>(rng, m * n);
                let c0 = c.clone();
                matmul_into(&a, &b, &mut c, m, k, n, true);
                for i in 0..m * n {
                    assert_eq!(c[i], c0[i].wadd(want[i]), "{m}x{k}x{n} accumulate");
                }
            }
        });
    }

    #[test]
    fn parallel_splits_match_naive() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        check_parallel::<u16>(&mut rng);
        check_parallel::<u32>(&mut rng);
        check_parallel::<u64>(&mut rng);
    }

    #[test]
    fn batched_matches_individual() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &(batch, m, k, n) in &[
            (3usize, 5usize, 7usize, 9usize),
            (12, 33, 64, 65),
            (2, 130, 64, 130),
        ] {
            let a = rand_words::<u64>(&mut rng, batch * m * k);
            let b = rand_words::<u64>(&mut rng, batch * k * n);
            let c = matmul_batched(&a, &b, batch, m, k, n);
            for t in 0..batch {
                let want = naive(&a[t * m * k..][..m * k], &b[t * k * n..][..k * n], m, k, n);
                assert_eq!(&c[t * m * n..][..m * n], &want[..]);
            }
        }
    }

    #[test]
    fn transpose_matches_naive() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for &(r, c) in &[
            (1usize, 1usize),
            (1, 65),
            (65, 1),
            (3, 17),
            (63, 130),
            (300, 257),
        ] {
            let a = rand_words::<u16>(&mut rng, r * c);
            let t = transpose(&a, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], a[i * c + j]);
                }
            }
            assert_eq!(transpose(&t, c, r), a);
        }
    }

    #[test]
    #[should_panic]
    fn shape_mismatch_panics() {
        matmul(&[1u32; 5], &[1u32; 6], 2, 3, 2);
    }
}
