//! Every CPU code path against the scalar reference, bit for bit: each kernel, each SIMD
//! level this CPU supports (forced through the `*_with` functions, so the AVX2 and portable
//! paths run on an AVX-512 machine too), each ring width, random shapes (sizes that are not
//! multiples of the vector width or the register tiles) and edge values; and the
//! dispatching entry points of `kernels::ops` under each backend.

use kernels::backend::{self, Backend, Simd};
use kernels::{bitfc, dpf, lut, matmul, ops, Word};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random words with a good share of edge values (0, 1, MAX, 2^(BITS-1)).
fn rand_words<W: Word>(rng: &mut ChaCha8Rng, len: usize) -> Vec<W> {
    (0..len)
        .map(|_| match rng.gen_range(0..8) {
            0 => W::ZERO,
            1 => W::ONE,
            2 => W::ZERO.wsub(W::ONE),
            3 => W::ONE.shl(W::BITS - 1),
            _ => W::from_u64(rng.gen()),
        })
        .collect()
}

fn rand_signs(rng: &mut ChaCha8Rng, len: usize) -> Vec<i8> {
    (0..len).map(|_| if rng.gen() { 1 } else { -1 }).collect()
}

const DIMS: [usize; 9] = [1, 2, 7, 8, 15, 17, 33, 64, 97];

fn matmul_all_levels<W: Word>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..40 {
        let m = DIMS[rng.gen_range(0..DIMS.len())] + rng.gen_range(0..3);
        let k = rng.gen_range(1..300);
        let n = DIMS[rng.gen_range(0..DIMS.len())] * rng.gen_range(1..4) + rng.gen_range(0..5);
        let a = rand_words::<W>(&mut rng, m * k);
        let b = rand_words::<W>(&mut rng, k * n);
        let want = matmul::matmul_scalar(&a, &b, m, k, n);
        for s in Simd::supported() {
            assert_eq!(
                matmul::matmul_with(s, &a, &b, m, k, n),
                want,
                "{s:?} {m}x{k}x{n} u{}",
                W::BITS
            );
        }
        assert_eq!(matmul::matmul(&a, &b, m, k, n), want);
    }
    // Larger than one packed block in every dimension, through the parallel path.
    let (m, k, n) = (75, 530, 1037);
    let a = rand_words::<W>(&mut rng, m * k);
    let b = rand_words::<W>(&mut rng, k * n);
    let want = matmul::matmul_scalar(&a, &b, m, k, n);
    for s in Simd::supported() {
        assert_eq!(matmul::matmul_with(s, &a, &b, m, k, n), want, "{s:?} big");
    }
    // Edge values: MAX·MAX = 1 per term, 2^(l-1)·2 = 0.
    let a = vec![W::ZERO.wsub(W::ONE); 9 * 33];
    let b = vec![W::ZERO.wsub(W::ONE); 33 * 40];
    for s in Simd::supported() {
        assert_eq!(
            matmul::matmul_with(s, &a, &b, 9, 33, 40),
            vec![W::from_u64(33); 9 * 40]
        );
    }
    let h = W::ONE.shl(W::BITS - 1);
    let a = vec![h; 8 * 16];
    let b = vec![W::from_u64(2); 16 * 32];
    for s in Simd::supported() {
        assert_eq!(
            matmul::matmul_with(s, &a, &b, 8, 16, 32),
            vec![W::ZERO; 8 * 32]
        );
    }
}

/// Shapes around the register tiles of every level (4 × 16/32, 8 × 12/24 for NEON,
/// 8 × 2 vectors for AVX-512) and the depth block (256), each large enough
/// (m·k·n >= 2^15) to take the packed micro-kernels rather than the small-product loop,
/// with edge values.
fn matmul_tile_edges<W: Word>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = [1usize, 3, 4, 5, 7, 8, 9, 15, 17];
    let cols = [1usize, 2, 5, 11, 12, 13, 23, 24, 25, 31, 33, 47];
    for &m in &rows {
        for &n in &cols {
            let k_min = (1usize << 15).div_ceil(m * n);
            for k in [k_min, k_min.max(257) + rng.gen_range(0..5)] {
                if m * k * n > 1 << 19 {
                    continue;
                }
                let a = rand_words::<W>(&mut rng, m * k);
                let b = rand_words::<W>(&mut rng, k * n);
                let want = matmul::matmul_scalar(&a, &b, m, k, n);
                for s in Simd::supported() {
                    assert_eq!(
                        matmul::matmul_with(s, &a, &b, m, k, n),
                        want,
                        "{s:?} {m}x{k}x{n} u{}",
                        W::BITS
                    );
                }
            }
        }
    }
    // All MAX: every term is 1, so each entry is k mod 2^BITS.
    let (m, k, n) = (9, 300, 25);
    let a = vec![W::ZERO.wsub(W::ONE); m * k];
    let b = vec![W::ZERO.wsub(W::ONE); k * n];
    for s in Simd::supported() {
        assert_eq!(
            matmul::matmul_with(s, &a, &b, m, k, n),
            vec![W::from_u64(k as u64); m * n],
            "{s:?}"
        );
    }
}

#[test]
fn matmul_tile_edges_u16() {
    matmul_tile_edges::<u16>(4);
}
#[test]
fn matmul_tile_edges_u32() {
    matmul_tile_edges::<u32>(5);
}
#[test]
fn matmul_tile_edges_u64() {
    matmul_tile_edges::<u64>(6);
}

/// One-hot dot products whose lengths are not multiples of the vector widths (the
/// 2-D split gives row segments of 1 .. 2^ky words), every level.
fn onehot_odd_lengths<W: Word>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for k in 0..=10u32 {
        let n = 13;
        let table = rand_words::<W>(&mut rng, 1 << k);
        let idx: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << k)).collect();
        let u = rand_words::<W>(&mut rng, n << k);
        let want = lut::onehot_dot_scalar(&table, k, &idx, &u);
        for s in Simd::supported() {
            assert_eq!(
                lut::onehot_dot_with(s, &table, k, &idx, &u),
                want,
                "{s:?} k={k} u{}",
                W::BITS
            );
        }
    }
}

#[test]
fn onehot_odd_lengths_all_widths() {
    onehot_odd_lengths::<u16>(7);
    onehot_odd_lengths::<u32>(8);
    onehot_odd_lengths::<u64>(9);
}

/// The SIMD levels this CPU reports: the portable code always, NEON on aarch64, never
/// NEON and AVX together, and the names run reports print.
#[test]
fn simd_levels_of_this_cpu() {
    let s = Simd::supported();
    assert_eq!(s[0], Simd::Portable);
    assert_eq!(Simd::Portable.name(), "portable");
    assert_eq!(Simd::Neon.name(), "neon");
    assert!(!(s.contains(&Simd::Neon) && s.contains(&Simd::Avx2)));
    if cfg!(target_arch = "aarch64") {
        assert_eq!(s, vec![Simd::Portable, Simd::Neon]);
    }
    if cfg!(target_arch = "x86_64") {
        assert!(!s.contains(&Simd::Neon));
    }
    assert!(backend::describe_cpu().contains(Simd::active().name()));
}

#[test]
fn matmul_levels_u16() {
    matmul_all_levels::<u16>(1);
}
#[test]
fn matmul_levels_u32() {
    matmul_all_levels::<u32>(2);
}
#[test]
fn matmul_levels_u64() {
    matmul_all_levels::<u64>(3);
}

fn fc_all_levels<W: Word>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..40 {
        let n = rng.gen_range(1..40);
        let d_in = rng.gen_range(1..200);
        let d_out = DIMS[rng.gen_range(0..DIMS.len())] * rng.gen_range(1..4) + rng.gen_range(0..3);
        let s = rand_signs(&mut rng, d_in * d_out);
        let w = bitfc::pack_signs(&s, d_in, d_out);
        let x = rand_words::<W>(&mut rng, n * d_in);
        let want = bitfc::fc_scalar(&x, n, &w);
        for lv in Simd::supported() {
            assert_eq!(
                bitfc::fc_with(lv, &x, n, &w),
                want,
                "{lv:?} n={n} {d_in}x{d_out} u{}",
                W::BITS
            );
        }
    }
    // A bert-base shape (parallel row tiles, several 64x64 bit blocks per axis).
    let (n, d_in, d_out) = (37, 768, 200);
    let s = rand_signs(&mut rng, d_in * d_out);
    let w = bitfc::pack_signs(&s, d_in, d_out);
    let x = rand_words::<W>(&mut rng, n * d_in);
    let want = bitfc::fc_scalar(&x, n, &w);
    for lv in Simd::supported() {
        assert_eq!(bitfc::fc_with(lv, &x, n, &w), want, "{lv:?} bert shape");
    }
    // All +1 / all -1 with MAX entries.
    let x = vec![W::ZERO.wsub(W::ONE); 3 * 70];
    let plus = bitfc::pack_signs(&vec![1i8; 70 * 65], 70, 65);
    let minus = bitfc::pack_signs(&vec![-1i8; 70 * 65], 70, 65);
    for lv in Simd::supported() {
        assert_eq!(
            bitfc::fc_with(lv, &x, 3, &plus),
            vec![W::ZERO.wsub(W::from_u64(70)); 3 * 65]
        );
        assert_eq!(
            bitfc::fc_with(lv, &x, 3, &minus),
            vec![W::from_u64(70); 3 * 65]
        );
    }
}

#[test]
fn fc_levels_u16() {
    fc_all_levels::<u16>(11);
}
#[test]
fn fc_levels_u32() {
    fc_all_levels::<u32>(12);
}
#[test]
fn fc_levels_u64() {
    fc_all_levels::<u64>(13);
}

fn lut_all_levels<W: Word>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for k in [0u32, 1, 3, 5, 8, 12] {
        for n in [0usize, 1, 7, 15, 16, 17, 33, 100, 9000] {
            if (n << k) > 1 << 22 {
                continue;
            }
            let size = 1u32 << k;
            let tables = rand_words::<W>(&mut rng, n << k);
            // Indices with edge values 0 and 2^k - 1.
            let idx: Vec<u32> = (0..n)
                .map(|i| match i % 5 {
                    0 => 0,
                    1 => size - 1,
                    _ => rng.gen_range(0..size),
                })
                .collect();
            let want = lut::gather_scalar(&tables, k, &idx);
            let (kx, ky) = (k / 2, k - k / 2);
            let ix: Vec<u32> = idx.iter().map(|&v| v >> ky).collect();
            let iy: Vec<u32> = idx.iter().map(|&v| v & ((1 << ky) - 1)).collect();
            assert_eq!(lut::gather2_scalar(&tables, kx, ky, &ix, &iy), want);
            for s in Simd::supported() {
                assert_eq!(
                    lut::gather_with(s, &tables, k, &idx),
                    want,
                    "{s:?} k={k} n={n}"
                );
                assert_eq!(lut::gather2_with(s, &tables, kx, ky, &ix, &iy), want);
            }
            if n <= 100 {
                let table = rand_words::<W>(&mut rng, 1 << k);
                let u = rand_words::<W>(&mut rng, n << k);
                let want = lut::onehot_dot_scalar(&table, k, &idx, &u);
                for s in Simd::supported() {
                    assert_eq!(lut::onehot_dot_with(s, &table, k, &idx, &u), want, "{s:?}");
                }
                let rot = lut::rotate_tables(&table, k, &idx);
                assert_eq!(rot, lut::rotate_tables_scalar(&table, k, &idx));
                // A rotated table read at x + rho gives table[x].
                for (i, &r) in idx.iter().enumerate() {
                    let x = rng.gen_range(0..size);
                    let xh = (x + r) & (size - 1);
                    assert_eq!(rot[(i << k) + xh as usize], table[x as usize]);
                }
                let rx: Vec<u32> = idx.iter().map(|&v| v >> ky).collect();
                let ry: Vec<u32> = idx.iter().map(|&v| v & ((1 << ky) - 1)).collect();
                assert_eq!(
                    lut::rotate_tables2(&table, kx, ky, &rx, &ry),
                    lut::rotate_tables2_scalar(&table, kx, ky, &rx, &ry)
                );
            }
        }
    }
}

#[test]
fn lut_levels_u16() {
    lut_all_levels::<u16>(21);
}
#[test]
fn lut_levels_u32() {
    lut_all_levels::<u32>(22);
}
#[test]
fn lut_levels_u64() {
    lut_all_levels::<u64>(23);
}

fn dpf_matches_scalar<W: Word>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for k in [1u32, 2, 3, 5, 8, 12] {
        let n = 37;
        let alphas: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << k)).collect();
        let (k0, k1) = dpf::gen_batch::<W>(k, &alphas, W::ONE, [seed as u8; 32]);
        let table = rand_words::<W>(&mut rng, 1 << k);
        let xs: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << k)).collect();
        for keys in [&k0, &k1] {
            let want = dpf::eval_dot_batch_scalar(keys, &table, &xs);
            assert_eq!(dpf::eval_dot_batch(keys, &table, &xs), want, "k={k}");
        }
        // The two shares reconstruct table[x - alpha].
        let a = dpf::eval_dot_batch(&k0, &table, &xs);
        let b = dpf::eval_dot_batch(&k1, &table, &xs);
        for i in 0..n {
            let j = xs[i].wrapping_sub(alphas[i]) & ((1 << k) - 1);
            assert_eq!(a[i].wadd(b[i]), table[j as usize]);
        }
        if k >= 2 {
            let (kx, ky) = (k / 2, k - k / 2);
            let ys: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << ky)).collect();
            let xs2: Vec<u32> = xs.iter().map(|&x| x & ((1 << kx) - 1)).collect();
            let want = dpf::eval_dot2_batch_scalar(&k0, &table, kx, ky, &xs2, &ys);
            assert_eq!(dpf::eval_dot2_batch(&k0, &table, kx, ky, &xs2, &ys), want);
        }
    }
}

#[test]
fn dpf_u16() {
    dpf_matches_scalar::<u16>(31);
}
#[test]
fn dpf_u32() {
    dpf_matches_scalar::<u32>(32);
}
#[test]
fn dpf_u64() {
    dpf_matches_scalar::<u64>(33);
}

/// The dispatching entry points under every backend (one test: the backend is
/// process-wide). `Gpu` falls back to the CPU where no adapter exists (or declines).
#[test]
fn ops_every_backend_same_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (m, k, n) = (19, 70, 45);
    let a = rand_words::<u32>(&mut rng, m * k);
    let b = rand_words::<u32>(&mut rng, k * n);
    let a16 = rand_words::<u16>(&mut rng, 3 * m * k);
    let b16 = rand_words::<u16>(&mut rng, 3 * k * n);
    let s = rand_signs(&mut rng, k * n);
    let w = bitfc::pack_signs(&s, k, n);
    let kt = 6;
    let idx: Vec<u32> = (0..300).map(|_| rng.gen_range(0..1 << kt)).collect();
    let tables = rand_words::<u32>(&mut rng, 300 << kt);
    let table = rand_words::<u32>(&mut rng, 1 << kt);
    let (k0, _) = dpf::gen_batch::<u32>(kt, &idx, 1, [9; 32]);
    let ix: Vec<u32> = idx.iter().map(|&v| v >> 3).collect();
    let iy: Vec<u32> = idx.iter().map(|&v| v & 7).collect();
    type Out = (
        Vec<u32>,
        Vec<u16>,
        Vec<u32>,
        Vec<u32>,
        Vec<u32>,
        Vec<u32>,
        Vec<u32>,
        Vec<u32>,
        Vec<u32>,
    );
    let run = || -> Out {
        (
            ops::matmul(&a, &b, m, k, n),
            ops::matmul_batched(&a16, &b16, 3, m, k, n),
            ops::fc(&a, m, &w),
            ops::gather(&tables, kt, &idx),
            ops::gather2(&tables, 3, 3, &ix, &iy),
            ops::onehot_dot(&table, kt, &idx, &tables),
            ops::rotate_tables(&table, kt, &idx),
            ops::dpf_eval_dot_batch(&k0, &table, &idx),
            ops::dpf_eval_dot2_batch(&k0, &table, 3, 3, &ix, &iy),
        )
    };
    let before = backend::backend();
    backend::set_backend(Backend::Scalar);
    let want = run();
    for b in [Backend::Cpu, Backend::Auto, Backend::Gpu] {
        backend::set_backend(b);
        assert_eq!(run(), want, "{b:?}");
        assert!(backend::describe().starts_with(b.name()));
    }
    backend::set_backend(before);
}

#[test]
fn fc_with_no_inputs_is_zero_on_every_simd_level() {
    use kernels::backend::Simd;
    use kernels::bitfc::{fc_scalar, fc_with, PackedSigns};
    // n above one register block of rows (512 / BITS) on the portable path
    for n in [1, 9, 33, 70] {
        let w = PackedSigns {
            d_in: 0,
            d_out: 3,
            words: vec![],
        };
        for simd in Simd::supported() {
            assert_eq!(fc_with::<u64>(simd, &[], n, &w), vec![0u64; n * 3]);
            assert_eq!(fc_with::<u16>(simd, &[], n, &w), vec![0u16; n * 3]);
        }
        assert_eq!(fc_scalar::<u32>(&[], n, &w), vec![0u32; n * 3]);
    }
}
