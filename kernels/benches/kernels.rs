//! `cargo bench -p kernels`: every kernel at bert-base seq-128 shapes, on every backend.
//!
//! Backends: `scalar` (the reference loops; on 1/8 of the rows or lookups, so a run stays
//! short: compare throughputs, not times), `cpu` (SIMD at the detected level), the CPU
//! code forced to each lower SIMD level for the dense kernels (`cpu-avx2`,
//! `cpu-portable`), and `gpu` when a hardware adapter exists (a software adapter only
//! with `KERNELS_BENCH_SOFTWARE_GPU=1`). Throughput is reported per element of work
//! (multiply-adds, adds, lookups). `harness kernels` prints the same measurements next to
//! the machine's limits.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::backend::{self, Backend, Simd};
use kernels::ops;
use kernels::Word;
use std::hint::black_box;
use std::time::Duration;

fn words<W: Word>(n: usize, seed: u64) -> Vec<W> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            W::from_u64(z ^ (z >> 31))
        })
        .collect()
}

fn indices(n: usize, k: u32, seed: u64) -> Vec<u32> {
    words::<u32>(n, seed)
        .into_iter()
        .map(|v| v & ((1 << k) - 1))
        .collect()
}

#[derive(Clone, Copy)]
enum Run {
    Ops(Backend),
    Level(Simd),
}

impl Run {
    fn name(self) -> String {
        match self {
            Run::Ops(b) => b.name().to_string(),
            Run::Level(s) => format!("cpu-{}", s.name()),
        }
    }
    fn scalar(self) -> bool {
        matches!(self, Run::Ops(Backend::Scalar))
    }
}

fn runs(levels: bool) -> Vec<Run> {
    let mut v = vec![Run::Ops(Backend::Scalar)];
    if levels {
        for s in Simd::supported() {
            if s != Simd::active() {
                v.push(Run::Level(s));
            }
        }
    }
    v.push(Run::Ops(Backend::Cpu));
    let gpu = match ops::gpu_status() {
        ops::GpuStatus::Hardware(_) => true,
        ops::GpuStatus::Software(_) => std::env::var_os("KERNELS_BENCH_SOFTWARE_GPU").is_some(),
        ops::GpuStatus::Unavailable(_) => false,
    };
    if gpu {
        v.push(Run::Ops(Backend::Gpu));
    }
    v
}

/// Sets the backend for `Ops` runs; `Level` runs go through the pool directly.
fn with<T: Send>(
    r: Run,
    ops_call: impl FnOnce() -> T + Send,
    level: impl FnOnce(Simd) -> T + Send,
) -> T {
    match r {
        Run::Ops(b) => {
            backend::set_backend(b);
            ops_call()
        }
        Run::Level(s) => backend::pool().install(|| level(s)),
    }
}

fn matmul_bench<W: Word>(
    c: &mut Criterion,
    name: &str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    let a = words::<W>(batch * m * k, 1);
    let b = words::<W>(batch * k * n, 2);
    for r in runs(true) {
        let (bs, ms) = match (r.scalar(), batch) {
            (true, 1) => (1, m.div_ceil(8)),
            (true, _) => (batch.div_ceil(8), m),
            _ => (batch, m),
        };
        let (a, b) = (&a[..bs * ms * k], &b[..bs * k * n]);
        g.throughput(Throughput::Elements((bs * ms * k * n) as u64));
        g.bench_function(BenchmarkId::from_parameter(r.name()), |bch| {
            bch.iter(|| {
                black_box(with(
                    r,
                    || ops::matmul_batched(a, b, bs, ms, k, n),
                    |s| {
                        (0..bs)
                            .flat_map(|t| {
                                kernels::matmul::matmul_with(
                                    s,
                                    &a[t * ms * k..][..ms * k],
                                    &b[t * k * n..][..k * n],
                                    ms,
                                    k,
                                    n,
                                )
                            })
                            .collect::<Vec<W>>()
                    },
                ))
            })
        });
    }
    g.finish();
}

fn fc_bench<W: Word>(c: &mut Criterion, name: &str, n: usize, d_in: usize, d_out: usize) {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    let x = words::<W>(n * d_in, 3);
    let s: Vec<i8> = words::<u32>(d_in * d_out, 4)
        .into_iter()
        .map(|v| if v & 1 == 1 { 1 } else { -1 })
        .collect();
    let w = kernels::bitfc::pack_signs(&s, d_in, d_out);
    for r in runs(true) {
        let ns = if r.scalar() { n.div_ceil(8) } else { n };
        let xs = &x[..ns * d_in];
        g.throughput(Throughput::Elements((ns * d_in * d_out) as u64));
        g.bench_function(BenchmarkId::from_parameter(r.name()), |b| {
            b.iter(|| {
                black_box(with(
                    r,
                    || ops::fc(xs, ns, &w),
                    |s| kernels::bitfc::fc_with(s, xs, ns, &w),
                ))
            })
        });
    }
    g.finish();
}

fn lut_bench(c: &mut Criterion) {
    // 1.5M lookups, k = 8, per-lookup rotated tables (1.5 GB of u32 tables).
    let (n, k) = (1_500_000usize, 8u32);
    let tables = words::<u32>(n << k, 5);
    let idx = indices(n, k, 6);
    let mut g = c.benchmark_group("gather-1.5M-k8-u32");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    for r in runs(true) {
        let ns = if r.scalar() { n / 8 } else { n };
        let (t, i) = (&tables[..ns << k], &idx[..ns]);
        g.throughput(Throughput::Elements(ns as u64));
        g.bench_function(BenchmarkId::from_parameter(r.name()), |b| {
            b.iter(|| {
                black_box(with(
                    r,
                    || ops::gather(t, k, i),
                    |s| kernels::lut::gather_with(s, t, k, i),
                ))
            })
        });
    }
    g.finish();
    drop(tables);
    // One-hot inner products: 375k lookups against one k = 8 table (384 MB of shares).
    let n1 = n / 4;
    let table = words::<u32>(1 << k, 7);
    let u = words::<u32>(n1 << k, 8);
    let mut g = c.benchmark_group("onehot-dot-375k-k8-u32");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    for r in runs(true) {
        let ns = if r.scalar() { n1 / 8 } else { n1 };
        let (uu, i) = (&u[..ns << k], &idx[..ns]);
        g.throughput(Throughput::Bytes(((ns << k) * 4) as u64));
        g.bench_function(BenchmarkId::from_parameter(r.name()), |b| {
            b.iter(|| {
                black_box(with(
                    r,
                    || ops::onehot_dot(&table, k, i, uu),
                    |s| kernels::lut::onehot_dot_with(s, &table, k, i, uu),
                ))
            })
        });
    }
    g.finish();
}

fn dpf_bench(c: &mut Criterion) {
    // 200k lookups, k = 12, DPF mode (fused expand-and-dot), and the dealer's keys.
    let (n, k) = (200_000usize, 12u32);
    let alphas = indices(n, k, 9);
    let xs = indices(n, k, 10);
    let table = words::<u32>(1 << k, 11);
    let (k0, _) =
        backend::pool().install(|| kernels::dpf::gen_batch::<u32>(k, &alphas, 1, [3; 32]));
    let mut g = c.benchmark_group("dpf-eval-dot-200k-k12-u32");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for r in runs(false) {
        let ns = if r.scalar() { n / 64 } else { n };
        let mut ks = k0.clone();
        ks.truncate(ns);
        let (ks, x) = (&ks, &xs[..ns]);
        g.throughput(Throughput::Elements(ns as u64));
        g.bench_function(BenchmarkId::from_parameter(r.name()), |b| {
            b.iter(|| {
                black_box(with(
                    r,
                    || ops::dpf_eval_dot_batch(ks, &table, x),
                    |_| Vec::new(),
                ))
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("dpf-gen-200k-k12-u32");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("cpu", |b| {
        b.iter(|| black_box(ops::dpf_gen_batch::<u32>(k, &alphas, 1, [3; 32])))
    });
    g.finish();
    let rhos = indices(n, 8, 12);
    let t8 = words::<u32>(1 << 8, 13);
    let mut g = c.benchmark_group("rotate-tables-200k-k8-u32");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    for r in runs(false) {
        g.throughput(Throughput::Bytes((n << 8) as u64 * 4));
        g.bench_function(BenchmarkId::from_parameter(r.name()), |b| {
            b.iter(|| {
                black_box(with(
                    r,
                    || ops::rotate_tables(&t8, 8, &rhos),
                    |_| Vec::new(),
                ))
            })
        });
    }
    g.finish();
}

fn dense(c: &mut Criterion) {
    matmul_bench::<u32>(c, "matmul-qkv-128x768x2304-u32", 1, 128, 768, 2304);
    matmul_bench::<u16>(c, "matmul-qkv-128x768x2304-u16", 1, 128, 768, 2304);
    matmul_bench::<u32>(c, "matmul-ffn2-128x3072x768-u32", 1, 128, 3072, 768);
    matmul_bench::<u32>(c, "matmul-attn-12x128x64x128-u32", 12, 128, 64, 128);
    matmul_bench::<u16>(c, "matmul-attn-12x128x64x128-u16", 12, 128, 64, 128);
    fc_bench::<u32>(c, "fc1bit-qkv-128x768x2304-u32", 128, 768, 2304);
    fc_bench::<u32>(c, "fc1bit-ffn2-128x3072x768-u32", 128, 3072, 768);
    fc_bench::<u16>(c, "fc1bit-qkv-128x768x2304-u16", 128, 768, 2304);
}

criterion_group!(benches, dense, lut_bench, dpf_bench);
criterion_main!(benches);
