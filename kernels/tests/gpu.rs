//! The WGSL kernels (`kernels::gpu`) against the CPU kernels, bit for bit, on random
//! shapes (sizes off the workgroup and vector widths), edge values, u16 and u32 (u64
//! where the GPU backend supports it), and with artificially small buffers so that the
//! block splitting runs. Without any adapter every test prints `skipping: <reason>` and
//! passes.

use kernels::bitfc::{fc, pack_signs};
use kernels::dpf::{eval_dot2_batch, eval_dot_batch, gen_batch};
use kernels::gpu::{Gpu, GpuError};
use kernels::lut::{gather, gather2, onehot_dot, rotate_table};
use kernels::matmul::matmul;
use kernels::Word;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// The shared device, or None (with the reason printed) when there is none.
fn gpu() -> Option<&'static Gpu> {
    match Gpu::shared() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// A device with 4 KB bindings and 16-node DPF buffers (forces block splitting).
fn small_gpu() -> Option<&'static Gpu> {
    static SMALL: OnceLock<Result<Gpu, GpuError>> = OnceLock::new();
    match SMALL.get_or_init(|| Gpu::with_caps(4096, 16)) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// Random words with a good share of edge values (0, 1, MAX, 2^(BITS-1)).
fn words<W: Word>(rng: &mut StdRng, len: usize) -> Vec<W> {
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

fn signs(rng: &mut StdRng, len: usize) -> Vec<i8> {
    (0..len)
        .map(|_| match rng.gen_range(0..3) {
            0 => -1,
            1 => 1,
            _ => 0, // counts as +1
        })
        .collect()
}

fn check_matmul<W: Word>(g: &Gpu, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dims = [1usize, 3, 17, 65];
    for &m in &dims {
        for &k in &[1usize, 17, 65] {
            for &n in &dims {
                let a = words::<W>(&mut rng, m * k);
                let b = words::<W>(&mut rng, k * n);
                let got = g.matmul(&a, &b, m, k, n).expect("gpu matmul");
                assert_eq!(got, matmul(&a, &b, m, k, n), "u{} {m}x{k}x{n}", W::BITS);
            }
        }
    }
    // A larger, odd-shaped product (several workgroup tiles each way).
    let (m, k, n) = (67, 130, 97);
    let a = words::<W>(&mut rng, m * k);
    let b = words::<W>(&mut rng, k * n);
    assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
    // Zero-size shapes.
    for (m, k, n) in [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0)] {
        let a = words::<W>(&mut rng, m * k);
        let b = words::<W>(&mut rng, k * n);
        assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
    }
    // MAX · MAX = 1 per term; 2^(l-1) · 2 = 0.
    let max = W::ZERO.wsub(W::ONE);
    assert_eq!(
        g.matmul(&[max; 15], &[max; 10], 3, 5, 2).unwrap(),
        vec![W::from_u64(5); 6]
    );
    let half = W::ONE.shl(W::BITS - 1);
    assert_eq!(
        g.matmul(&[half; 4], &[W::from_u64(2); 4], 2, 2, 2).unwrap(),
        vec![W::ZERO; 4]
    );
}

#[test]
fn matmul_u16() {
    if let Some(g) = gpu() {
        check_matmul::<u16>(g, 1);
    }
}

#[test]
fn matmul_u32() {
    if let Some(g) = gpu() {
        check_matmul::<u32>(g, 2);
    }
}

#[test]
fn matmul_u64() {
    if let Some(g) = gpu() {
        check_matmul::<u64>(g, 20);
    }
}

fn check_fc<W: Word>(g: &Gpu, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for &n in &[1usize, 3, 17, 33] {
        for &d_in in &[1usize, 31, 32, 33, 64, 65, 130] {
            for &d_out in &[1usize, 3, 17, 33, 65] {
                let s = signs(&mut rng, d_in * d_out);
                let p = pack_signs(&s, d_in, d_out);
                let x = words::<W>(&mut rng, n * d_in);
                assert_eq!(
                    g.fc(&x, n, &p).expect("gpu fc"),
                    fc(&x, n, &p),
                    "u{} n={n} {d_in}x{d_out}",
                    W::BITS
                );
            }
        }
    }
    // Zero-size shapes and all-MAX inputs.
    let p = pack_signs(&[1i8; 6], 3, 2);
    assert!(g.fc::<W>(&[], 0, &p).unwrap().is_empty());
    let empty_in = pack_signs(&[], 0, 5);
    assert_eq!(g.fc::<W>(&[], 2, &empty_in).unwrap(), vec![W::ZERO; 10]);
    let x = vec![W::ZERO.wsub(W::ONE); 6];
    assert_eq!(g.fc(&x, 2, &p).unwrap(), fc(&x, 2, &p));
}

#[test]
fn fc_u16() {
    if let Some(g) = gpu() {
        check_fc::<u16>(g, 3);
    }
}

#[test]
fn fc_u32() {
    if let Some(g) = gpu() {
        check_fc::<u32>(g, 4);
    }
}

#[test]
fn fc_u64() {
    if let Some(g) = gpu() {
        check_fc::<u64>(g, 21);
    }
}

fn check_gathers<W: Word>(g: &Gpu, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for k in [0u32, 1, 2, 5, 9] {
        let size = 1usize << k;
        for n in [0usize, 1, 3, 17, 65, 257] {
            let tables = words::<W>(&mut rng, n * size);
            let idx: Vec<u32> = (0..n).map(|_| rng.gen_range(0..size as u32)).collect();
            assert_eq!(
                g.gather(&tables, k, &idx).expect("gpu gather"),
                gather(&tables, k, &idx),
                "u{} k={k} n={n}",
                W::BITS
            );
            let kx = rng.gen_range(0..=k);
            let ky = k - kx;
            let ix: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << kx)).collect();
            let iy: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << ky)).collect();
            assert_eq!(
                g.gather2(&tables, kx, ky, &ix, &iy).expect("gpu gather2"),
                gather2(&tables, kx, ky, &ix, &iy),
                "u{} kx={kx} ky={ky} n={n}",
                W::BITS
            );
        }
    }
}

#[test]
fn gathers_u16() {
    if let Some(g) = gpu() {
        check_gathers::<u16>(g, 5);
    }
}

#[test]
fn gathers_u32() {
    if let Some(g) = gpu() {
        check_gathers::<u32>(g, 6);
    }
}

#[test]
fn gathers_u64() {
    if let Some(g) = gpu() {
        check_gathers::<u64>(g, 7);
    }
}

fn check_onehot<W: Word>(g: &Gpu, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for k in [0u32, 1, 3, 5, 8, 9, 11] {
        let size = 1usize << k;
        for n in [0usize, 1, 3, 17, 65] {
            let table = words::<W>(&mut rng, size);
            let u = words::<W>(&mut rng, n * size);
            // Indices are taken mod 2^k: include out-of-range ones.
            let idx: Vec<u32> = (0..n).map(|_| rng.gen()).collect();
            assert_eq!(
                g.onehot_dot(&table, k, &idx, &u).expect("gpu onehot_dot"),
                onehot_dot(&table, k, &idx, &u),
                "u{} k={k} n={n}",
                W::BITS
            );
        }
    }
}

#[test]
fn onehot_u16() {
    if let Some(g) = gpu() {
        check_onehot::<u16>(g, 8);
    }
}

#[test]
fn onehot_u32() {
    if let Some(g) = gpu() {
        check_onehot::<u32>(g, 9);
    }
}

#[test]
fn onehot_u64() {
    if let Some(g) = gpu() {
        check_onehot::<u64>(g, 22);
    }
}

fn check_rotate<W: Word>(g: &Gpu, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for k in [0u32, 1, 2, 5, 9] {
        let size = 1usize << k;
        for copies in [0usize, 1, 3, 17] {
            let table = words::<W>(&mut rng, size);
            let rhos: Vec<u32> = (0..copies).map(|_| rng.gen()).collect();
            let got = g
                .rotate_tables(&table, k, &rhos)
                .expect("gpu rotate_tables");
            let mut want = vec![W::ZERO; copies * size];
            for (r, o) in want.chunks_exact_mut(size).enumerate() {
                rotate_table(&table, k, rhos[r], o);
            }
            assert_eq!(got, want, "u{} k={k} copies={copies}", W::BITS);
        }
    }
}

#[test]
fn rotate_u16() {
    if let Some(g) = gpu() {
        check_rotate::<u16>(g, 10);
    }
}

#[test]
fn rotate_u32() {
    if let Some(g) = gpu() {
        check_rotate::<u32>(g, 11);
    }
}

#[test]
fn rotate_u64() {
    if let Some(g) = gpu() {
        check_rotate::<u64>(g, 12);
    }
}

fn check_dpf<W: Word>(g: &Gpu, seed: u64, ks: &[u32], n: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    for &k in ks {
        let size = 1usize << k;
        let alphas: Vec<u32> = (0..n).map(|_| rng.gen_range(0..size as u32)).collect();
        let beta = W::from_u64(rng.gen());
        let (k0, k1) = gen_batch::<W>(k, &alphas, beta, rng.gen());
        let table = words::<W>(&mut rng, size);
        let xs: Vec<u32> = (0..n).map(|_| rng.gen()).collect();
        let ys: Vec<u32> = (0..n).map(|_| rng.gen()).collect();
        let kx = rng.gen_range(0..=k);
        let ky = k - kx;
        for keys in [&k0, &k1] {
            assert_eq!(
                g.dpf_eval_dot_batch(keys, &table, &xs)
                    .expect("gpu dpf dot"),
                eval_dot_batch(keys, &table, &xs),
                "u{} k={k}",
                W::BITS
            );
            assert_eq!(
                g.dpf_eval_dot2_batch(keys, &table, kx, ky, &xs, &ys)
                    .expect("gpu dpf dot2"),
                eval_dot2_batch(keys, &table, kx, ky, &xs, &ys),
                "u{} k={k} kx={kx} ky={ky}",
                W::BITS
            );
        }
    }
    let none = kernels::dpf::DpfKeys::<W>::new(1, 0);
    assert!(g.dpf_eval_dot_batch(&none, &[], &[]).unwrap().is_empty());
}

#[test]
fn dpf_u16() {
    if let Some(g) = gpu() {
        check_dpf::<u16>(g, 13, &[1, 2, 3, 4, 5, 8, 11, 13], 17);
    }
}

#[test]
fn dpf_u32() {
    if let Some(g) = gpu() {
        check_dpf::<u32>(g, 14, &[1, 2, 3, 6, 9, 12, 14], 17);
    }
}

#[test]
fn dpf_u64() {
    if let Some(g) = gpu() {
        check_dpf::<u64>(g, 23, &[1, 2, 3, 7, 12], 17);
    }
}

/// Every kernel with 4 KB bindings and 16-node DPF buffers: row, column, lookup and
/// copy blocks, DPF key groups and split trees.
#[test]
fn too_large_for_a_binding_is_unsupported() {
    let Some(g) = small_gpu() else { return };
    let un = |r: Result<Vec<u32>, GpuError>| matches!(r, Err(GpuError::Unsupported(_)));
    // One table of 2^11 u32 = 8 KB > 4 KB.
    assert!(un(g.gather(&vec![0u32; 2048], 11, &[0])));
    assert!(un(g.rotate_tables(&vec![0u32; 2048], 11, &[1])));
    assert!(un(g.onehot_dot(
        &vec![0u32; 2048],
        11,
        &[0],
        &vec![0; 2048]
    )));
    // One row of A (k = 2000 u32) exceeds a binding.
    assert!(un(g.matmul(
        &vec![0u32; 2000],
        &vec![0u32; 2000],
        1,
        2000,
        1
    )));
    // A DPF table of 2^14 u32.
    let (k0, _) = gen_batch::<u32>(14, &[5], 1, [1; 32]);
    let table = vec![0u32; 1 << 14];
    assert!(un(g.dpf_eval_dot_batch(&k0, &table, &[0])));
}

#[test]
fn block_splitting() {
    let Some(g) = small_gpu() else { return };
    let mut rng = StdRng::seed_from_u64(15);
    let (m, k, n) = (70, 20, 75);
    let a = words::<u32>(&mut rng, m * k);
    let b = words::<u32>(&mut rng, k * n);
    assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
    let a = words::<u16>(&mut rng, m * k);
    let b = words::<u16>(&mut rng, k * n);
    assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
    let a = words::<u64>(&mut rng, m * k);
    let b = words::<u64>(&mut rng, k * n);
    assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
    let (n, d_in, d_out) = (40, 100, 300);
    let p = pack_signs(&signs(&mut rng, d_in * d_out), d_in, d_out);
    let x = words::<u32>(&mut rng, n * d_in);
    assert_eq!(g.fc(&x, n, &p).unwrap(), fc(&x, n, &p));
    let k = 4;
    let n = 301;
    let tables = words::<u16>(&mut rng, n << k);
    let idx: Vec<u32> = (0..n).map(|_| rng.gen_range(0..16)).collect();
    assert_eq!(
        g.gather(&tables, k, &idx).unwrap(),
        gather(&tables, k, &idx)
    );
    let ix: Vec<u32> = idx.iter().map(|v| v >> 3).collect();
    let iy: Vec<u32> = idx.iter().map(|v| v & 7).collect();
    let t64 = words::<u64>(&mut rng, n << k);
    assert_eq!(
        g.gather2(&t64, 1, 3, &ix, &iy).unwrap(),
        gather2(&t64, 1, 3, &ix, &iy)
    );
    let table = words::<u32>(&mut rng, 16);
    let u = words::<u32>(&mut rng, n << k);
    assert_eq!(
        g.onehot_dot(&table, k, &idx, &u).unwrap(),
        onehot_dot(&table, k, &idx, &u)
    );
    let table = words::<u16>(&mut rng, 64);
    let rhos: Vec<u32> = (0..77).map(|_| rng.gen()).collect();
    let got = g.rotate_tables(&table, 6, &rhos).unwrap();
    for (r, chunk) in got.chunks_exact(64).enumerate() {
        let mut want = vec![0u16; 64];
        rotate_table(&table, 6, rhos[r], &mut want);
        assert_eq!(chunk, &want[..]);
    }
    // DPF (4-block leaves, nu = 4 over u32): k = 7 (d = 3) runs in groups of 2 keys;
    // k = 10 (d = 6) splits each tree into 4 subtrees of 16 leaves.
    for (k, nkeys) in [(7u32, 7usize), (10, 3)] {
        let size = 1u32 << k;
        let alphas: Vec<u32> = (0..nkeys).map(|_| rng.gen_range(0..size)).collect();
        let (k0, k1) = gen_batch::<u32>(k, &alphas, rng.gen(), rng.gen());
        let table = words::<u32>(&mut rng, size as usize);
        let xs: Vec<u32> = (0..nkeys).map(|_| rng.gen()).collect();
        let ys: Vec<u32> = (0..nkeys).map(|_| rng.gen()).collect();
        for keys in [&k0, &k1] {
            assert_eq!(
                g.dpf_eval_dot2_batch(keys, &table, 3, k - 3, &xs, &ys)
                    .unwrap(),
                eval_dot2_batch(keys, &table, 3, k - 3, &xs, &ys),
                "k={k}"
            );
        }
    }
}

/// Every kernel on random shapes (not only the fixed lists above).
fn check_random_shapes<W: Word>(g: &Gpu, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..8 {
        let (m, k, n) = (
            rng.gen_range(0..90),
            rng.gen_range(0..150),
            rng.gen_range(0..90),
        );
        let a = words::<W>(&mut rng, m * k);
        let b = words::<W>(&mut rng, k * n);
        assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
        // d_in >= 1: the CPU fc (portable path) indexes past X^T when d_in = 0 and
        // n > 512 / BITS.
        let k = k.max(1);
        let p = pack_signs(&signs(&mut rng, k * n), k, n);
        let x = words::<W>(&mut rng, m * k);
        assert_eq!(g.fc(&x, m, &p).unwrap(), fc(&x, m, &p), "{m}x{k}x{n}");
        let kt = rng.gen_range(0..10u32);
        let nl = rng.gen_range(0..200usize);
        let tables = words::<W>(&mut rng, nl << kt);
        let idx: Vec<u32> = (0..nl).map(|_| rng.gen_range(0..1u32 << kt)).collect();
        assert_eq!(
            g.gather(&tables, kt, &idx).unwrap(),
            gather(&tables, kt, &idx)
        );
        let table = words::<W>(&mut rng, 1 << kt);
        assert_eq!(
            g.onehot_dot(&table, kt, &idx, &tables).unwrap(),
            onehot_dot(&table, kt, &idx, &tables)
        );
        let kd = rng.gen_range(1..=12u32);
        let nk = rng.gen_range(1..40usize);
        let alphas: Vec<u32> = (0..nk).map(|_| rng.gen_range(0..1u32 << kd)).collect();
        let (k0, k1) = gen_batch::<W>(kd, &alphas, W::from_u64(rng.gen()), rng.gen());
        let table = words::<W>(&mut rng, 1 << kd);
        let xs: Vec<u32> = (0..nk).map(|_| rng.gen()).collect();
        let ys: Vec<u32> = (0..nk).map(|_| rng.gen()).collect();
        let kx = rng.gen_range(0..=kd);
        let keys = if rng.gen() { &k0 } else { &k1 };
        assert_eq!(
            g.dpf_eval_dot2_batch(keys, &table, kx, kd - kx, &xs, &ys)
                .unwrap(),
            eval_dot2_batch(keys, &table, kx, kd - kx, &xs, &ys),
            "k={kd} kx={kx}"
        );
    }
}

#[test]
fn random_shapes_u16() {
    if let Some(g) = gpu() {
        check_random_shapes::<u16>(g, 30);
    }
}

#[test]
fn random_shapes_u32() {
    if let Some(g) = gpu() {
        check_random_shapes::<u32>(g, 31);
    }
}

#[test]
fn random_shapes_u64() {
    if let Some(g) = gpu() {
        check_random_shapes::<u64>(g, 32);
    }
}

/// The 64-bit emulation on carries and products that cross the 32-bit halves.
#[test]
fn u64_carries_and_products() {
    let Some(g) = gpu() else { return };
    let vals = [
        0u64,
        1,
        u32::MAX as u64,
        1 << 32,
        (1 << 32) + 1,
        u64::MAX,
        1 << 63,
        0xffff_0000_ffff_0000,
        0x0001_0000_0001_0000,
        0x1234_5678_9abc_def0,
        0xfedc_ba98_7654_3210,
    ];
    // Every ordered pair as a 1×1×1 product, then all pairs as one dot product.
    let a: Vec<u64> = vals.iter().flat_map(|&x| vals.map(|_| x)).collect();
    let b: Vec<u64> = vals.iter().flat_map(|_| vals).collect();
    let m = a.len();
    let prods: Vec<u64> = (0..m)
        .map(|i| g.matmul(&a[i..i + 1], &b[i..i + 1], 1, 1, 1).unwrap()[0])
        .collect();
    let want: Vec<u64> = a.iter().zip(&b).map(|(x, y)| x.wrapping_mul(*y)).collect();
    assert_eq!(prods, want);
    let dot = g.matmul(&a, &b, 1, m, 1).unwrap()[0];
    assert_eq!(dot, matmul(&a, &b, 1, m, 1)[0]);
    // Sums and negations with carries.
    let n = vals.len();
    let x = vals.to_vec();
    let p = pack_signs(&vec![-1i8; n * 2], n, 2);
    assert_eq!(g.fc(&x, 1, &p).unwrap(), fc(&x, 1, &p));
}

/// Calls from several threads at once (the protocol runs kernels on rayon threads).
#[test]
fn concurrent_calls() {
    let Some(g) = gpu() else { return };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + t);
                for _ in 0..5 {
                    let (m, k, n) = (19, 33, 21);
                    let a = words::<u32>(&mut rng, m * k);
                    let b = words::<u32>(&mut rng, k * n);
                    assert_eq!(g.matmul(&a, &b, m, k, n).unwrap(), matmul(&a, &b, m, k, n));
                    let tables = words::<u16>(&mut rng, 37 << 3);
                    let idx: Vec<u32> = (0..37).map(|_| rng.gen_range(0..8)).collect();
                    assert_eq!(
                        g.gather(&tables, 3, &idx).unwrap(),
                        gather(&tables, 3, &idx)
                    );
                }
            });
        }
    });
}

#[test]
fn adapter_is_described() {
    let Some(g) = gpu() else { return };
    let name = g.adapter_name();
    eprintln!("adapter: {name} (software: {}); {g:?}", g.is_software());
    assert!(!name.is_empty());
}

/// Rough timings of every kernel against the CPU (`cargo test --test gpu -- --ignored
/// --nocapture`). On a software adapter they describe the software renderer, not a GPU.
#[test]
#[ignore]
fn timings() {
    use std::time::Instant;
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(99);
    // GPU_TIMINGS=<substring> runs only the matching lines.
    let only = std::env::var("GPU_TIMINGS").unwrap_or_default();
    let time = |label: &str, gpu_f: &mut dyn FnMut(), cpu_f: &mut dyn FnMut()| {
        if !label.contains(only.as_str()) {
            return;
        }
        gpu_f(); // compile the pipeline, warm caches
        let reps = 3;
        let t = Instant::now();
        for _ in 0..reps {
            gpu_f();
        }
        let tg = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            cpu_f();
        }
        let tc = t.elapsed().as_secs_f64() / reps as f64;
        eprintln!(
            "{label:<40} gpu {:>9.2} ms   cpu {:>9.2} ms",
            tg * 1e3,
            tc * 1e3
        );
    };
    eprintln!("adapter: {}", g.adapter_name());
    time(
        "gather u32 k=0 n=1 (per-call overhead)",
        &mut || drop(g.gather(&[7u32], 0, &[0]).unwrap()),
        &mut || drop(gather(&[7u32], 0, &[0])),
    );
    let (m, k, n) = (128, 768, 768);
    let a = words::<u32>(&mut rng, m * k);
    let b = words::<u32>(&mut rng, k * n);
    time(
        "matmul u32 128x768x768",
        &mut || drop(g.matmul(&a, &b, m, k, n).unwrap()),
        &mut || drop(matmul(&a, &b, m, k, n)),
    );
    let a64 = words::<u64>(&mut rng, m * k);
    let b64 = words::<u64>(&mut rng, k * n);
    time(
        "matmul u64 128x768x768",
        &mut || drop(g.matmul(&a64, &b64, m, k, n).unwrap()),
        &mut || drop(matmul(&a64, &b64, m, k, n)),
    );
    let p = pack_signs(&signs(&mut rng, 768 * 768), 768, 768);
    let x = words::<u16>(&mut rng, 128 * 768);
    time(
        "fc u16 128x768x768",
        &mut || drop(g.fc(&x, 128, &p).unwrap()),
        &mut || drop(fc(&x, 128, &p)),
    );
    let (kk, nn) = (8u32, 1 << 15);
    let tables = words::<u32>(&mut rng, nn << kk);
    let idx: Vec<u32> = (0..nn).map(|_| rng.gen_range(0..256)).collect();
    time(
        "gather u32 k=8 n=32768",
        &mut || drop(g.gather(&tables, kk, &idx).unwrap()),
        &mut || drop(gather(&tables, kk, &idx)),
    );
    let table = words::<u32>(&mut rng, 256);
    time(
        "onehot_dot u32 k=8 n=32768",
        &mut || drop(g.onehot_dot(&table, kk, &idx, &tables).unwrap()),
        &mut || drop(onehot_dot(&table, kk, &idx, &tables)),
    );
    let rhos: Vec<u32> = (0..nn as u32).collect();
    time(
        "rotate_tables u32 k=8 x32768",
        &mut || drop(g.rotate_tables(&table, kk, &rhos).unwrap()),
        &mut || {
            let mut out = vec![0u32; nn << kk];
            for (r, o) in out.chunks_exact_mut(256).enumerate() {
                rotate_table(&table, kk, rhos[r], o);
            }
        },
    );
    for (k, nkeys) in [(8u32, 4096usize), (12, 1024), (16, 64)] {
        let size = 1usize << k;
        let alphas: Vec<u32> = (0..nkeys).map(|_| rng.gen_range(0..size as u32)).collect();
        let (k0, _) = gen_batch::<u32>(k, &alphas, 1, [3; 32]);
        let table = words::<u32>(&mut rng, size);
        let xs: Vec<u32> = (0..nkeys).map(|_| rng.gen()).collect();
        time(
            &format!("dpf_eval_dot_batch u32 k={k} keys={nkeys}"),
            &mut || drop(g.dpf_eval_dot_batch(&k0, &table, &xs).unwrap()),
            &mut || drop(eval_dot_batch(&k0, &table, &xs)),
        );
    }
}
