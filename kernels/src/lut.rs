//! Lookup-table kernels: gathers from per-lookup rotated tables (rotated-table mode),
//! one-hot dot products against a public table (DPF mode, and one-hot shares), and the
//! table rotations the dealer uses to build rotated tables.
//!
//! The dot `Σ_j T[(x − j) mod 2^k] · u[j]` walks T backwards. Instead of a reversed
//! (shuffle-heavy) loop per lookup, the table is reversed once, `R[m] = T[(−m) mod 2^k]`,
//! so `T[(x − j) mod 2^k] = R[(j − x) mod 2^k]` and each lookup is two contiguous forward
//! dot products (split at j = x) that vectorise. Two-input tables use the same trick per
//! axis (independent rotations), one row segment at a time.

use crate::backend::Simd;
use crate::word::Word;
use rayon::prelude::*;

/// Lookups per parallel task in the gathers and dots.
const PAR_CHUNK: usize = 1 << 12;

/// Per-lookup gather: `out[i] = tables[i·2^k + idx[i]]`.
///
/// Preconditions (asserted): `tables.len() == idx.len()·2^k`, every `idx[i] < 2^k`.
/// Cost: idx.len() random reads (memory-bound: one cache line per lookup), parallel for
/// large batches; with AVX-512, 16 (u16/u32) or 8 (u64) lookups per `vpgather`, the
/// next lookups' lines prefetched.
pub fn gather<W: Word>(tables: &[W], k: u32, idx: &[u32]) -> Vec<W> {
    gather_with(Simd::active(), tables, k, idx)
}

/// [`gather`] on a given SIMD level (panics on a level the CPU does not support).
pub fn gather_with<W: Word>(simd: Simd, tables: &[W], k: u32, idx: &[u32]) -> Vec<W> {
    assert_eq!(
        tables.len(),
        idx.len() << k,
        "gather: tables.len() != idx.len()·2^k"
    );
    check_indices(idx, k, "gather: index out of range");
    gather_core(simd, tables, k, idx.len(), |base, buf| {
        buf.copy_from_slice(&idx[base..base + buf.len()])
    })
}

/// The gather loop: the indices of lookups `base..base + buf.len()` are written into
/// `buf` by `fill` (chunk by chunk, so a 2-D gather forms its joint indices in cache).
/// Precondition: every index < 2^k, `tables.len() == n << k`.
fn gather_core<W: Word>(
    simd: Simd,
    tables: &[W],
    k: u32,
    n: usize,
    fill: impl Fn(usize, &mut [u32]) + Sync,
) -> Vec<W> {
    let mut out = vec![W::ZERO; n];
    let run = |ixb: &mut Vec<u32>, (c, o): (usize, &mut [W])| {
        let base = c * PAR_CHUNK;
        ixb.resize(o.len(), 0);
        fill(base, ixb);
        let ix = &ixb[..];
        #[cfg(target_arch = "x86_64")]
        if simd == Simd::Avx512 && k <= 24 {
            simd.check();
            // SAFETY: AVX-512F/BW/DQ available (checked); indices checked < 2^k and
            // tables.len() == n·2^k, so every read is inside `tables`.
            unsafe { avx512::gather(tables, k, ix, base, n, o) };
            return;
        }
        let _ = simd;
        for (t, (ov, &i)) in o.iter_mut().zip(ix).enumerate() {
            *ov = tables[((base + t) << k) + i as usize];
        }
    };
    if n > 2 * PAR_CHUNK {
        out.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each_init(Vec::new, run);
    } else {
        let mut ixb = Vec::new();
        out.chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|item| run(&mut ixb, item));
    }
    out
}

/// The scalar reference of [`gather`] (one plain loop).
pub fn gather_scalar<W: Word>(tables: &[W], k: u32, idx: &[u32]) -> Vec<W> {
    assert_eq!(
        tables.len(),
        idx.len() << k,
        "gather: tables.len() != idx.len()·2^k"
    );
    let size = 1usize << k;
    let mut out = Vec::with_capacity(idx.len());
    for (i, &x) in idx.iter().enumerate() {
        assert!((x as usize) < size, "gather: index out of range");
        out.push(tables[i * size + x as usize]);
    }
    out
}

/// Panics with `msg` unless every index is below 2^k (one vectorised pass).
#[inline]
fn check_indices(idx: &[u32], k: u32, msg: &str) {
    let bad = if k >= 32 {
        false
    } else {
        idx.iter().fold(0u32, |a, &x| a | (x >> k)) != 0
    };
    assert!(!bad, "{msg}");
}

/// Per-lookup 2-D gather: `out[i] = tables[i·2^(kx+ky) + ix[i]·2^ky + iy[i]]`.
///
/// Preconditions (asserted): `ix.len() == iy.len()`, `tables.len() == ix.len()·2^(kx+ky)`,
/// `ix[i] < 2^kx`, `iy[i] < 2^ky`. Cost: as [`gather`] (the combined index of each chunk
/// of lookups is formed in cache, then the 1-D gather runs on it).
pub fn gather2<W: Word>(tables: &[W], kx: u32, ky: u32, ix: &[u32], iy: &[u32]) -> Vec<W> {
    gather2_with(Simd::active(), tables, kx, ky, ix, iy)
}

/// [`gather2`] on a given SIMD level.
pub fn gather2_with<W: Word>(
    simd: Simd,
    tables: &[W],
    kx: u32,
    ky: u32,
    ix: &[u32],
    iy: &[u32],
) -> Vec<W> {
    assert_eq!(ix.len(), iy.len(), "gather2: ix and iy lengths differ");
    let k = kx + ky;
    assert_eq!(
        tables.len(),
        ix.len() << k,
        "gather2: tables.len() != n·2^(kx+ky)"
    );
    check_indices(ix, kx, "gather2: index out of range");
    check_indices(iy, ky, "gather2: index out of range");
    gather_core(simd, tables, k, ix.len(), |base, buf| {
        let (a, b) = (&ix[base..base + buf.len()], &iy[base..base + buf.len()]);
        for ((j, &x), &y) in buf.iter_mut().zip(a).zip(b) {
            *j = (x << ky) | y;
        }
    })
}

/// The scalar reference of [`gather2`].
pub fn gather2_scalar<W: Word>(tables: &[W], kx: u32, ky: u32, ix: &[u32], iy: &[u32]) -> Vec<W> {
    assert_eq!(ix.len(), iy.len(), "gather2: ix and iy lengths differ");
    let k = kx + ky;
    assert_eq!(
        tables.len(),
        ix.len() << k,
        "gather2: tables.len() != n·2^(kx+ky)"
    );
    let mut out = Vec::with_capacity(ix.len());
    for i in 0..ix.len() {
        let (a, b) = (ix[i] as usize, iy[i] as usize);
        assert!(a >> kx == 0 && b >> ky == 0, "gather2: index out of range");
        out.push(tables[(i << k) + (a << ky) + b]);
    }
    out
}

/// One public table against per-lookup vectors:
/// `out[i] = Σ_j table[(idx[i] − j) mod 2^k] · u[i·2^k + j]` (mod 2^BITS).
/// With u the shares of a one-hot vector at r and idx = x + r, this is a share of
/// `table[x]`.
///
/// Preconditions (asserted): `table.len() == 2^k`, `u.len() == idx.len()·2^k`; indices
/// are taken mod 2^k. Cost: 2^k (table reversal, once) + idx.len()·2^k vectorised
/// multiply-adds, parallel over lookups.
pub fn onehot_dot<W: Word>(table: &[W], k: u32, idx: &[u32], u: &[W]) -> Vec<W> {
    onehot_dot_with(Simd::active(), table, k, idx, u)
}

/// [`onehot_dot`] on a given SIMD level.
pub fn onehot_dot_with<W: Word>(simd: Simd, table: &[W], k: u32, idx: &[u32], u: &[W]) -> Vec<W> {
    assert_eq!(table.len(), 1usize << k, "onehot_dot: table.len() != 2^k");
    assert_eq!(
        u.len(),
        idx.len() << k,
        "onehot_dot: u.len() != idx.len()·2^k"
    );
    let rev2 = reverse_table2_doubled(table, 0, k);
    let size = 1usize << k;
    let mut out = vec![W::ZERO; idx.len()];
    let one = |x: u32, ur: &[W]| rotated_dot2_doubled_with(simd, &rev2, 0, k, 0, x, 0, ur);
    if idx.len() * size >= 1 << 16 && idx.len() > 1 {
        out.par_iter_mut()
            .zip(idx.par_iter().zip(u.par_chunks(size)))
            .with_min_len(64)
            .for_each(|(o, (&x, ur))| *o = one(x, ur));
    } else {
        for ((o, &x), ur) in out.iter_mut().zip(idx).zip(u.chunks(size)) {
            *o = one(x, ur);
        }
    }
    out
}

/// The scalar reference of [`onehot_dot`]: the defining sum, term by term.
pub fn onehot_dot_scalar<W: Word>(table: &[W], k: u32, idx: &[u32], u: &[W]) -> Vec<W> {
    assert_eq!(table.len(), 1usize << k, "onehot_dot: table.len() != 2^k");
    assert_eq!(
        u.len(),
        idx.len() << k,
        "onehot_dot: u.len() != idx.len()·2^k"
    );
    let size = 1usize << k;
    let mut out = Vec::with_capacity(idx.len());
    for (i, &x) in idx.iter().enumerate() {
        let mut s = W::ZERO;
        for j in 0..size {
            let t = table[(x as usize).wrapping_sub(j) & (size - 1)];
            s = s.wadd(t.wmul(u[i * size + j]));
        }
        out.push(s);
    }
    out
}

/// One rotated copy of `table` per rho: `out[i·2^k + j] = table[(j − rhos[i]) mod 2^k]`
/// (the dealer's rotated tables; rhos taken mod 2^k).
///
/// Preconditions (asserted): `table.len() == 2^k`. Cost: rhos.len()·2^k words written
/// (two memcpys each), parallel over tables.
pub fn rotate_tables<W: Word>(table: &[W], k: u32, rhos: &[u32]) -> Vec<W> {
    let size = 1usize << k;
    assert_eq!(table.len(), size, "rotate_tables: table.len() != 2^k");
    let mut out = vec![W::ZERO; rhos.len() * size];
    let one = |(o, &r): (&mut [W], &u32)| rotate_row(table, r as usize & (size - 1), o);
    if out.len() >= 1 << 16 {
        out.par_chunks_mut(size)
            .zip(rhos.par_iter())
            .with_min_len((1 << 12) / size + 1)
            .for_each(one);
    } else {
        out.chunks_mut(size).zip(rhos).for_each(one);
    }
    out
}

/// The scalar reference of [`rotate_tables`] (word by word).
pub fn rotate_tables_scalar<W: Word>(table: &[W], k: u32, rhos: &[u32]) -> Vec<W> {
    let size = 1usize << k;
    assert_eq!(table.len(), size, "rotate_tables: table.len() != 2^k");
    let mut out = Vec::with_capacity(rhos.len() * size);
    for &r in rhos {
        for j in 0..size {
            out.push(table[j.wrapping_sub(r as usize) & (size - 1)]);
        }
    }
    out
}

/// One 2-D rotated copy per pair (as [`rotate_table2`] with `rx[i]`, `ry[i]`), all
/// concatenated (`rx.len()·2^(kx+ky)` words).
///
/// Preconditions (asserted): `rx.len() == ry.len()`, `table.len() == 2^(kx+ky)`.
/// Cost: the words written, parallel over tables.
pub fn rotate_tables2<W: Word>(table: &[W], kx: u32, ky: u32, rx: &[u32], ry: &[u32]) -> Vec<W> {
    assert_eq!(
        rx.len(),
        ry.len(),
        "rotate_tables2: rx and ry lengths differ"
    );
    let size = 1usize << (kx + ky);
    assert_eq!(
        table.len(),
        size,
        "rotate_tables2: table.len() != 2^(kx+ky)"
    );
    let mut out = vec![W::ZERO; rx.len() * size];
    let one = |(o, (&a, &b)): (&mut [W], (&u32, &u32))| rotate_table2(table, kx, ky, a, b, o);
    if out.len() >= 1 << 16 {
        out.par_chunks_mut(size)
            .zip(rx.par_iter().zip(ry.par_iter()))
            .with_min_len((1 << 12) / size + 1)
            .for_each(one);
    } else {
        out.chunks_mut(size).zip(rx.iter().zip(ry)).for_each(one);
    }
    out
}

/// The scalar reference of [`rotate_tables2`] (word by word).
pub fn rotate_tables2_scalar<W: Word>(
    table: &[W],
    kx: u32,
    ky: u32,
    rx: &[u32],
    ry: &[u32],
) -> Vec<W> {
    assert_eq!(
        rx.len(),
        ry.len(),
        "rotate_tables2: rx and ry lengths differ"
    );
    let (nx, ny) = (1usize << kx, 1usize << ky);
    assert_eq!(
        table.len(),
        nx * ny,
        "rotate_tables2: table.len() != 2^(kx+ky)"
    );
    let mut out = Vec::with_capacity(rx.len() * nx * ny);
    for (&a, &b) in rx.iter().zip(ry) {
        for i in 0..nx {
            for j in 0..ny {
                let si = i.wrapping_sub(a as usize) & (nx - 1);
                let sj = j.wrapping_sub(b as usize) & (ny - 1);
                out.push(table[si * ny + sj]);
            }
        }
    }
    out
}

/// Rotates a table: `out[i] = table[(i − rho) mod 2^k]` (rho taken mod 2^k).
///
/// Preconditions (asserted): `table.len() == out.len() == 2^k`. Cost: 2^k copies (two
/// memcpys).
pub fn rotate_table<W: Word>(table: &[W], k: u32, rho: u32, out: &mut [W]) {
    let size = 1usize << k;
    assert_eq!(table.len(), size, "rotate_table: table.len() != 2^k");
    assert_eq!(out.len(), size, "rotate_table: out.len() != 2^k");
    rotate_row(table, rho as usize & (size - 1), out);
}

/// Rotates a 2-D table (2^kx rows of 2^ky) independently per axis:
/// `out[a·2^ky + b] = table[((a − rx) mod 2^kx)·2^ky + ((b − ry) mod 2^ky)]`
/// (rx, ry taken mod 2^kx, 2^ky).
///
/// Preconditions (asserted): `table.len() == out.len() == 2^(kx+ky)`.
/// Cost: 2^(kx+ky) copies (two memcpys per row).
pub fn rotate_table2<W: Word>(table: &[W], kx: u32, ky: u32, rx: u32, ry: u32, out: &mut [W]) {
    let size = 1usize << (kx + ky);
    assert_eq!(table.len(), size, "rotate_table2: table.len() != 2^(kx+ky)");
    assert_eq!(out.len(), size, "rotate_table2: out.len() != 2^(kx+ky)");
    let (nx, ny) = (1usize << kx, 1usize << ky);
    let (rx, ry) = (rx as usize & (nx - 1), ry as usize & (ny - 1));
    for (a, orow) in out.chunks_exact_mut(ny).enumerate() {
        let src = (a + nx - rx) & (nx - 1);
        rotate_row(&table[src * ny..(src + 1) * ny], ry, orow);
    }
}

/// `out[i] = row[(i − r) mod len]` for r < len.
#[inline]
fn rotate_row<W: Copy>(row: &[W], r: usize, out: &mut [W]) {
    let n = row.len();
    out[r..].copy_from_slice(&row[..n - r]);
    out[..r].copy_from_slice(&row[n - r..]);
}

/// The per-axis reversal `R[m1·2^ky + m2] = T[((−m1) mod 2^kx)·2^ky + ((−m2) mod 2^ky)]`,
/// so that `T[((x − a) mod)·2^ky + ((y − b) mod)] = R[((a − x) mod)·2^ky + ((b − y) mod)]`.
/// Cost: 2^(kx+ky) copies.
pub(crate) fn reverse_table2<W: Word>(table: &[W], kx: u32, ky: u32) -> Vec<W> {
    let (nx, ny) = (1usize << kx, 1usize << ky);
    debug_assert_eq!(table.len(), nx * ny);
    let mut rev = vec![W::ZERO; nx * ny];
    for (m1, rrow) in rev.chunks_exact_mut(ny).enumerate() {
        let src = &table[((nx - m1) & (nx - 1)) * ny..][..ny];
        rrow[0] = src[0];
        for (r, &s) in rrow[1..].iter_mut().zip(src[1..].iter().rev()) {
            *r = s;
        }
    }
    rev
}

/// A reversed lookup table with rows stored twice ([`reverse_table2_doubled`]: 2^kx rows
/// of 2·2^ky words), as the fused DPF evaluators read it.
pub(crate) struct DotTable<'a, W> {
    /// The doubled reversed table.
    pub rev2: &'a [W],
    /// log2 of the row count.
    pub kx: u32,
    /// log2 of the row length.
    pub ky: u32,
}

/// [`reverse_table2`] with every row stored twice in a row (rows of 2^(ky+1) words):
/// `R2[m1·2^(ky+1) + m2] = R[m1·2^ky + (m2 mod 2^ky)]`, so that a rotated row segment is
/// one contiguous run (see [`rotated_dot2_doubled`]). Cost: 2^(kx+ky+1) copies.
pub(crate) fn reverse_table2_doubled<W: Word>(table: &[W], kx: u32, ky: u32) -> Vec<W> {
    let ny = 1usize << ky;
    let rev = reverse_table2(table, kx, ky);
    let mut out = Vec::with_capacity(2 * rev.len());
    for row in rev.chunks_exact(ny) {
        out.extend_from_slice(row);
        out.extend_from_slice(row);
    }
    out
}

/// [`rotated_dot2`] on the doubled reversal `rev2` of [`reverse_table2_doubled`]:
/// the same value (wrapping sums are order independent), one contiguous dot product per
/// table row instead of two. Uses AVX-512 intrinsics when the CPU has them (F, BW, DQ),
/// NEON intrinsics on aarch64 for u16/u32, else the portable code compiled for AVX2 or
/// baseline.
#[inline]
pub(crate) fn rotated_dot2_doubled<W: Word>(
    rev2: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
) -> W {
    rotated_dot2_doubled_with(Simd::active(), rev2, kx, ky, x, y, j0, vals)
}

/// [`rotated_dot2_doubled`] on a given SIMD level.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rotated_dot2_doubled_with<W: Word>(
    simd: Simd,
    rev2: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
) -> W {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        simd.check();
        // SAFETY: the CPU supports AVX-512F/BW/DQ (`check` panics otherwise).
        return unsafe { rotated_dot2_doubled_avx512(rev2, kx, ky, x, y, j0, vals) };
    }
    #[cfg(target_arch = "aarch64")]
    if simd == Simd::Neon && W::BITS <= 32 {
        simd.check();
        // SAFETY: the CPU supports NEON (`check` panics otherwise); W is u16 or u32.
        return unsafe { rotated_dot2_doubled_neon(rev2, kx, ky, x, y, j0, vals) };
    }
    rotated_dot2_doubled_simd(simd, rev2, kx, ky, x, y, j0, vals)
}

simd_dispatch! {
    /// Portable [`rotated_dot2_doubled`].
    fn rotated_dot2_doubled_simd<W: Word>(
        rev2: &[W],
        kx: u32,
        ky: u32,
        x: u32,
        y: u32,
        j0: usize,
        vals: &[W],
    ) -> W => rotated_dot2_doubled_portable
}

/// [`rotated_dot2_doubled`] with AVX-512 dot products.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512DQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
unsafe fn rotated_dot2_doubled_avx512<W: Word>(
    rev2: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
) -> W {
    rotated_dot2_doubled_body(rev2, kx, ky, x, y, j0, vals, |a, b| {
        // SAFETY: this function's target features are enabled in the caller.
        unsafe { avx512::dot(a, b) }
    })
}

/// [`rotated_dot2_doubled`] with NEON dot products (u16, u32; u64 has no NEON lane
/// multiply and stays portable).
///
/// # Safety
/// The CPU must support NEON; `W` must be u16 or u32.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn rotated_dot2_doubled_neon<W: Word>(
    rev2: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
) -> W {
    rotated_dot2_doubled_body(rev2, kx, ky, x, y, j0, vals, |a, b| {
        // SAFETY: NEON is enabled in this function (the caller checked the CPU), and the
        // caller guarantees W is u16 or u32.
        unsafe { neon::dot(a, b) }
    })
}

#[inline(always)]
fn rotated_dot2_doubled_portable<W: Word>(
    rev2: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
) -> W {
    rotated_dot2_doubled_body(rev2, kx, ky, x, y, j0, vals, dot::<W>)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rotated_dot2_doubled_body<W: Word>(
    rev2: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
    dot: impl Fn(&[W], &[W]) -> W,
) -> W {
    let (nx, ny) = (1usize << kx, 1usize << ky);
    let (x, y) = (x as usize & (nx - 1), y as usize & (ny - 1));
    let mut acc = W::ZERO;
    let mut j = j0;
    let end = j0 + vals.len();
    while j < end {
        let a = j >> ky;
        let b = j & (ny - 1);
        let row_end = end.min((a + 1) << ky);
        let len = row_end - j;
        // rev index (b' − y) mod ny of the row is b' + ny − y of the doubled row.
        let rrow = &rev2[((a + nx - x) & (nx - 1)) * 2 * ny..][..2 * ny];
        let v = &vals[j - j0..row_end - j0];
        acc = acc.wadd(dot(v, &rrow[b + ny - y..b + ny - y + len]));
        j = row_end;
    }
    acc
}

simd_dispatch! {
    /// `Σ_i vals[i] · rev[((a − x) mod 2^kx)·2^ky + ((b − y) mod 2^ky)]` where
    /// `j0 + i = a·2^ky + b`: a segment of a (2-D) rotated one-hot dot product, with `rev`
    /// from [`reverse_table2`]. Cost: vals.len() multiply-adds in contiguous runs (one
    /// split per table row at b = y).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn rotated_dot2<W: Word>(
        rev: &[W],
        kx: u32,
        ky: u32,
        x: u32,
        y: u32,
        j0: usize,
        vals: &[W],
    ) -> W => rotated_dot2_body
}

#[inline(always)]
fn rotated_dot2_body<W: Word>(
    rev: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
    j0: usize,
    vals: &[W],
) -> W {
    let (nx, ny) = (1usize << kx, 1usize << ky);
    let (x, y) = (x as usize & (nx - 1), y as usize & (ny - 1));
    let mut acc = W::ZERO;
    let mut j = j0;
    let end = j0 + vals.len();
    while j < end {
        let a = j >> ky;
        let b = j & (ny - 1);
        let row_end = end.min((a + 1) << ky);
        let b_end = b + (row_end - j);
        let rrow = &rev[((a + nx - x) & (nx - 1)) * ny..][..ny];
        let v = &vals[j - j0..row_end - j0];
        if b < y {
            // b' in [b, min(b_end, y)): rev index b' − y + ny.
            let e = b_end.min(y);
            acc = acc.wadd(dot(&v[..e - b], &rrow[b + ny - y..e + ny - y]));
            if b_end > y {
                acc = acc.wadd(dot(&v[y - b..], &rrow[..b_end - y]));
            }
        } else {
            acc = acc.wadd(dot(v, &rrow[b - y..b_end - y]));
        }
        j = row_end;
    }
    acc
}

/// AVX-512 wrapping dot products (the auto-vectorised [`dot`] turns into gathers when
/// compiled for AVX-512, hence explicit intrinsics).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::word::Word;
    use core::arch::x86_64::*;

    /// Lookups ahead whose cache lines are prefetched in [`gather`].
    const PF: usize = 32;

    /// `out[t] = tables[((base + t) << k) + idx[t]]` for the lookups of one chunk
    /// (`n` lookups in all: the u16 path never gathers the very last word of `tables`
    /// with a 4-byte read).
    ///
    /// # Safety
    /// AVX-512F/BW/DQ available; `idx[t] < 2^k <= 2^24`, `tables.len() == n << k`,
    /// `base + out.len() <= n`, `idx.len() == out.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq")]
    pub(super) unsafe fn gather<W: Word>(
        tables: &[W],
        k: u32,
        idx: &[u32],
        base: usize,
        n: usize,
        out: &mut [W],
    ) {
        let len = out.len();
        let tp = tables.as_ptr();
        let op = out.as_mut_ptr();
        let ip = idx.as_ptr();
        // Lane offsets (t << k) within a group of lookups starting at `base + t0`.
        let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let lane_k = _mm512_sllv_epi32(lane, _mm512_set1_epi32(k as i32));
        let prefetch = |t: usize| {
            if t < len {
                let p = tp.wrapping_add(((base + t) << k) + *ip.add(t) as usize);
                _mm_prefetch::<_MM_HINT_T0>(p.cast());
            }
        };
        for t in 0..PF.min(len) {
            prefetch(t);
        }
        let mut t = 0;
        match W::BITS {
            32 => {
                while t + 16 <= len {
                    for u in 0..16 {
                        prefetch(t + PF + u);
                    }
                    let iv = _mm512_loadu_si512(ip.add(t).cast());
                    let off = _mm512_add_epi32(lane_k, iv);
                    let g = _mm512_i32gather_epi32::<4>(off, tp.add((base + t) << k).cast());
                    _mm512_storeu_si512(op.add(t).cast(), g);
                    t += 16;
                }
            }
            16 => {
                // 4-byte reads at 2-byte offsets: safe unless the word read is the last
                // one of `tables` (only the final lookup's table can hold it).
                while t + 16 <= len && base + t + 16 < n {
                    for u in 0..16 {
                        prefetch(t + PF + u);
                    }
                    let iv = _mm512_loadu_si512(ip.add(t).cast());
                    let off = _mm512_add_epi32(lane_k, iv);
                    let g = _mm512_i32gather_epi32::<2>(off, tp.add((base + t) << k).cast());
                    _mm256_storeu_si256(op.add(t).cast(), _mm512_cvtepi32_epi16(g));
                    t += 16;
                }
            }
            _ => {
                while t + 8 <= len {
                    for u in 0..8 {
                        prefetch(t + PF + u);
                    }
                    let iv = _mm256_loadu_si256(ip.add(t).cast());
                    let off = _mm256_add_epi32(_mm512_castsi512_si256(lane_k), iv);
                    let g = _mm512_i32gather_epi64::<8>(off, tp.add((base + t) << k).cast());
                    _mm512_storeu_si512(op.add(t).cast(), g);
                    t += 8;
                }
            }
        }
        while t < len {
            *op.add(t) = *tp.add(((base + t) << k) + *ip.add(t) as usize);
            t += 1;
        }
    }

    #[inline(always)]
    unsafe fn load<W: Word>(p: *const W, len: usize) -> __m512i {
        let lanes = 64 / std::mem::size_of::<W>();
        if len >= lanes {
            return _mm512_loadu_si512(p.cast());
        }
        // Masked load of the first `len` words (the others read as zero, not touched).
        match W::BITS {
            16 => _mm512_maskz_loadu_epi16(((1u64 << len) - 1) as u32, p.cast()),
            32 => _mm512_maskz_loadu_epi32(((1u32 << len) - 1) as u16, p.cast()),
            _ => _mm512_maskz_loadu_epi64(((1u32 << len) - 1) as u8, p.cast()),
        }
    }

    #[inline(always)]
    unsafe fn muladd<W: Word>(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        match W::BITS {
            16 => _mm512_add_epi16(acc, _mm512_mullo_epi16(a, b)),
            32 => _mm512_add_epi32(acc, _mm512_mullo_epi32(a, b)),
            _ => _mm512_add_epi64(acc, _mm512_mullo_epi64(a, b)),
        }
    }

    /// `Σ a[i]·b[i]` mod 2^BITS, four 512-bit accumulators, masked tail.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, BW and DQ. Precondition: `a.len() == b.len()`.
    #[inline(always)]
    pub(super) unsafe fn dot<W: Word>(a: &[W], b: &[W]) -> W {
        debug_assert_eq!(a.len(), b.len());
        let n = a.len().min(b.len());
        let lanes = 64 / std::mem::size_of::<W>();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut i = 0;
        while i + 4 * lanes <= n {
            for (u, ac) in acc.iter_mut().enumerate() {
                let o = i + u * lanes;
                *ac = muladd::<W>(
                    *ac,
                    _mm512_loadu_si512(pa.add(o).cast()),
                    _mm512_loadu_si512(pb.add(o).cast()),
                );
            }
            i += 4 * lanes;
        }
        while i < n {
            let len = (n - i).min(lanes);
            acc[0] = muladd::<W>(acc[0], load(pa.add(i), len), load(pb.add(i), len));
            i += len;
        }
        let s = add::<W>(add::<W>(acc[0], acc[1]), add::<W>(acc[2], acc[3]));
        // Horizontal sum: 512 -> 256 -> 128 bits, then the last few words.
        let h = _mm512_extracti64x4_epi64::<1>(s);
        let s = add::<W>(s, _mm512_castsi256_si512(h));
        let q = _mm512_extracti64x2_epi64::<1>(s);
        let s = add::<W>(s, _mm512_castsi128_si512(q));
        let mut words = [0u64; 2];
        _mm_storeu_si128(words.as_mut_ptr().cast(), _mm512_castsi512_si128(s));
        let ws: &[W] = bytemuck::cast_slice(&words);
        ws.iter().fold(W::ZERO, |t, &w| t.wadd(w))
    }

    #[inline(always)]
    unsafe fn add<W: Word>(a: __m512i, b: __m512i) -> __m512i {
        match W::BITS {
            16 => _mm512_add_epi16(a, b),
            32 => _mm512_add_epi32(a, b),
            _ => _mm512_add_epi64(a, b),
        }
    }
}

/// NEON wrapping dot products (u16, u32): four 128-bit accumulators of `mla`, a
/// horizontal `addv` (modular in the lane width), a scalar tail.
#[cfg(target_arch = "aarch64")]
mod neon {
    use crate::word::Word;
    use core::arch::aarch64::*;

    macro_rules! dot_kernel {
        ($name:ident, $t:ty, $lanes:expr, $dup:ident, $ld:ident, $mla:ident, $add:ident,
         $addv:ident) => {
            /// `Σ a[i]·b[i]` mod 2^BITS over the common length.
            ///
            /// # Safety
            /// The CPU must support NEON.
            #[inline(always)]
            unsafe fn $name(a: &[$t], b: &[$t]) -> $t {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut acc = [$dup(0); 4];
                let mut i = 0;
                while i + 4 * $lanes <= n {
                    for (u, ac) in acc.iter_mut().enumerate() {
                        let o = i + u * $lanes;
                        *ac = $mla(*ac, $ld(pa.add(o)), $ld(pb.add(o)));
                    }
                    i += 4 * $lanes;
                }
                while i + $lanes <= n {
                    acc[0] = $mla(acc[0], $ld(pa.add(i)), $ld(pb.add(i)));
                    i += $lanes;
                }
                let mut s = $addv($add($add(acc[0], acc[1]), $add(acc[2], acc[3])));
                while i < n {
                    s = s.wrapping_add(a[i].wrapping_mul(b[i]));
                    i += 1;
                }
                s
            }
        };
    }

    dot_kernel!(
        dot16,
        u16,
        8,
        vdupq_n_u16,
        vld1q_u16,
        vmlaq_u16,
        vaddq_u16,
        vaddvq_u16
    );
    dot_kernel!(
        dot32,
        u32,
        4,
        vdupq_n_u32,
        vld1q_u32,
        vmlaq_u32,
        vaddq_u32,
        vaddvq_u32
    );

    /// `Σ a[i]·b[i]` mod 2^BITS (u16 or u32 words; slices reinterpreted, same bits).
    ///
    /// # Safety
    /// The CPU must support NEON; `W` must be u16 or u32. Precondition:
    /// `a.len() == b.len()`.
    #[inline(always)]
    pub(super) unsafe fn dot<W: Word>(a: &[W], b: &[W]) -> W {
        debug_assert_eq!(a.len(), b.len());
        use bytemuck::cast_slice;
        match W::BITS {
            16 => W::from_u64(dot16(cast_slice(a), cast_slice(b)) as u64),
            32 => W::from_u64(dot32(cast_slice(a), cast_slice(b)) as u64),
            _ => unreachable!("lut: no NEON dot for {}-bit words", W::BITS),
        }
    }
}

/// Wrapping dot product with 16 independent accumulators (vectorises).
#[inline(always)]
pub(crate) fn dot<W: Word>(a: &[W], b: &[W]) -> W {
    debug_assert_eq!(a.len(), b.len());
    const L: usize = 16;
    let mut acc = [W::ZERO; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] = acc[i].wadd(x[i].wmul(y[i]));
        }
    }
    let mut s = W::ZERO;
    for (&x, &y) in ra.iter().zip(rb) {
        s = s.wadd(x.wmul(y));
    }
    acc.iter().fold(s, |t, &v| t.wadd(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::rand_words;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check_all<W: Word>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for k in [0u32, 1, 2, 3, 5, 6, 7, 9] {
            let size = 1usize << k;
            for n in [0usize, 1, 3, 17, 63, 65, 130] {
                let tables = rand_words::<W>(&mut rng, n * size);
                let idx: Vec<u32> = (0..n).map(|_| rng.gen_range(0..size as u32)).collect();
                let g = gather(&tables, k, &idx);
                for i in 0..n {
                    assert_eq!(g[i], tables[i * size + idx[i] as usize]);
                }
                // onehot_dot against the naive formula.
                let table = rand_words::<W>(&mut rng, size);
                let u = rand_words::<W>(&mut rng, n * size);
                let d = onehot_dot(&table, k, &idx, &u);
                for i in 0..n {
                    let mut s = W::ZERO;
                    for j in 0..size {
                        let t = table[(idx[i] as usize + size - j) % size];
                        s = s.wadd(t.wmul(u[i * size + j]));
                    }
                    assert_eq!(d[i], s, "k={k} n={n} i={i}");
                }
            }
            // Rotation, and onehot_dot of a one-hot vector at r reads T[x − r].
            let table = rand_words::<W>(&mut rng, size);
            let rho = rng.gen_range(0..size as u32);
            let mut out = vec![W::ZERO; size];
            rotate_table(&table, k, rho, &mut out);
            for i in 0..size {
                assert_eq!(out[i], table[(i + size - rho as usize) % size]);
            }
            let x = rng.gen_range(0..size as u32);
            let mut u = vec![W::ZERO; size];
            u[rho as usize] = W::ONE;
            let xh = (x + rho) % size as u32;
            assert_eq!(onehot_dot(&table, k, &[xh], &u)[0], table[x as usize]);
            assert_eq!(gather(&out, k, &[xh])[0], table[x as usize]);
        }
    }

    fn check_2d<W: Word>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (kx, ky) in [(0u32, 3u32), (3, 0), (1, 1), (2, 5), (4, 3), (5, 6)] {
            let (nx, ny) = (1usize << kx, 1usize << ky);
            let table = rand_words::<W>(&mut rng, nx * ny);
            let (rx, ry) = (rng.gen_range(0..nx as u32), rng.gen_range(0..ny as u32));
            let mut out = vec![W::ZERO; nx * ny];
            rotate_table2(&table, kx, ky, rx, ry, &mut out);
            for a in 0..nx {
                for b in 0..ny {
                    let src = ((a + nx - rx as usize) % nx) * ny + (b + ny - ry as usize) % ny;
                    assert_eq!(out[a * ny + b], table[src]);
                }
            }
            // Masked indices read the unrotated table at (x, y).
            for _ in 0..20 {
                let (x, y) = (rng.gen_range(0..nx as u32), rng.gen_range(0..ny as u32));
                let xh = (x + rx) % nx as u32;
                let yh = (y + ry) % ny as u32;
                let g = gather2(&out, kx, ky, &[xh], &[yh]);
                assert_eq!(g[0], table[x as usize * ny + y as usize]);
            }
            // 2-D rotated dot (used by the DPF) against the naive sum, on random segments.
            let rev = reverse_table2(&table, kx, ky);
            let u = rand_words::<W>(&mut rng, nx * ny);
            let (x, y) = (rng.gen_range(0..nx as u32), rng.gen_range(0..ny as u32));
            let term = |j: usize| {
                let (a, b) = (j / ny, j % ny);
                let t = table[((x as usize + nx - a) % nx) * ny + (y as usize + ny - b) % ny];
                t.wmul(u[j])
            };
            for _ in 0..10 {
                let j0 = rng.gen_range(0..nx * ny);
                let j1 = rng.gen_range(j0..=nx * ny);
                let want = (j0..j1).fold(W::ZERO, |s, j| s.wadd(term(j)));
                let got = rotated_dot2(Simd::active(), &rev, kx, ky, x, y, j0, &u[j0..j1]);
                assert_eq!(got, want, "kx={kx} ky={ky} [{j0},{j1})");
                let rev2 = reverse_table2_doubled(&table, kx, ky);
                let got2 = rotated_dot2_doubled(&rev2, kx, ky, x, y, j0, &u[j0..j1]);
                assert_eq!(got2, want, "doubled kx={kx} ky={ky} [{j0},{j1})");
            }
            // gather2 on several lookups.
            let n = 17;
            let tables = rand_words::<W>(&mut rng, n * nx * ny);
            let ix: Vec<u32> = (0..n).map(|_| rng.gen_range(0..nx as u32)).collect();
            let iy: Vec<u32> = (0..n).map(|_| rng.gen_range(0..ny as u32)).collect();
            let g = gather2(&tables, kx, ky, &ix, &iy);
            for i in 0..n {
                assert_eq!(
                    g[i],
                    tables[i * nx * ny + ix[i] as usize * ny + iy[i] as usize]
                );
            }
        }
    }

    #[test]
    fn lut_u16() {
        check_all::<u16>(11);
        check_2d::<u16>(12);
    }
    #[test]
    fn lut_u32() {
        check_all::<u32>(13);
        check_2d::<u32>(14);
    }
    #[test]
    fn lut_u64() {
        check_all::<u64>(15);
        check_2d::<u64>(16);
    }

    #[test]
    fn large_batch_parallel_paths() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let k = 4;
        let n = 3 * PAR_CHUNK + 5;
        let tables = rand_words::<u32>(&mut rng, n << k);
        let idx: Vec<u32> = (0..n).map(|_| rng.gen_range(0..16)).collect();
        let g = gather(&tables, k, &idx);
        let g2 = gather2(
            &tables,
            1,
            3,
            &idx.iter().map(|v| v >> 3).collect::<Vec<_>>(),
            &idx.iter().map(|v| v & 7).collect::<Vec<_>>(),
        );
        assert_eq!(g, g2);
        for i in 0..n {
            assert_eq!(g[i], tables[(i << k) + idx[i] as usize]);
        }
        let table = rand_words::<u32>(&mut rng, 16);
        let d = onehot_dot(&table, k, &idx, &tables);
        for i in (0..n).step_by(97) {
            let want = (0..16).fold(0u32, |s, j| {
                s.wrapping_add(
                    table[(idx[i] as usize + 16 - j) % 16].wrapping_mul(tables[i * 16 + j]),
                )
            });
            assert_eq!(d[i], want);
        }
    }

    #[test]
    #[should_panic]
    fn gather_index_out_of_range_panics() {
        gather(&[0u16; 8], 2, &[1, 4]);
    }

    #[test]
    fn dot_edge_values() {
        let a = vec![u64::MAX; 33];
        let b = vec![u64::MAX; 33];
        assert_eq!(dot(&a, &b), 33);
        let a = vec![0x8000u16; 31];
        assert_eq!(dot(&a, &[3u16; 31]), 0x8000);
    }
}
