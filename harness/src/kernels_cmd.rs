//! `harness kernels`: throughput of every kernel at bert-base seq-128 shapes, on every
//! backend, next to this machine's limits measured by the same command.
//!
//! **Limits.** Memory bandwidth: a stream-like triad `a[i] = b[i] + 3·c[i]` over three
//! 128 MiB arrays on the kernels' pool (bytes = 3 arrays; write-allocate traffic not
//! counted, as STREAM does), median of 5. Clock: a timed loop of dependent 64-bit adds
//! (one cycle each) on one thread. Vector width: from the detected SIMD level (512 bits
//! with AVX-512, 256 with AVX2, 128 otherwise). Peak integer rates per core assume one
//! full-width vector multiply and two full-width vector adds per cycle (Zen 4: one
//! 512-bit `vpmulld` per cycle, two 512-bit `vpaddd`), so
//! `peak = lanes × ops/cycle × clock × cores`, lanes = width / ring bits. AES: four
//! block-rounds per cycle with VAES-512 (one `vaesenc zmm` per cycle), two with AES-NI,
//! ten rounds per block. A gather's limit is one 64-byte line per lookup at the
//! measured bandwidth.
//!
//! Every kernel runs once to warm up, then `--reps` times; the table shows medians. The
//! scalar reference runs on a prefix of the problem (1/8 of the rows or lookups, marked
//! in the shape), one timed run, so the command stays short; `speedup_vs_scalar` is the
//! ratio of throughputs measured in the same run.

use anyhow::{bail, Context, Result};
use kernels::backend::{self, Backend, Simd};
use kernels::ops;
use kernels::Word;
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `harness kernels`.
#[derive(clap::Args, Clone, Debug)]
pub struct KernelsArgs {
    /// Backends to measure: all | auto | cpu | gpu | scalar (comma-separated);
    /// `all` = scalar, cpu (and its forced lower SIMD levels for the dense kernels), and
    /// gpu where a hardware adapter exists
    #[arg(long, default_value = "all")]
    pub backend: String,
    /// Timed repetitions per kernel and backend (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Smaller problems (1/8 of the lookups and rows), for a quick look
    #[arg(long)]
    pub quick: bool,
    /// Only kernels whose name contains this
    #[arg(long)]
    pub only: Option<String>,
    /// Write the table as CSV here (default: results/kernels.csv, except with --only,
    /// whose partial table must not replace the committed one)
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also write one JSON array of the rows here
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The kernels `harness kernels` measures (what `--only` matches against).
const KERNEL_NAMES: [&str; 15] = [
    "matmul-qkv",
    "matmul-qkv-u16",
    "matmul-ffn2",
    "matmul-attn",
    "matmul-attn-u16",
    "fc1bit-qkv",
    "fc1bit-ffn2",
    "fc1bit-qkv-u16",
    "gather",
    "gather2",
    "onehot-dot",
    "rotate-tables",
    "dpf-gen",
    "dpf-eval-dot",
    "dcf-eval",
];

/// The machine's limits, measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Limits {
    pub cores: usize,
    pub clock_ghz: f64,
    pub vector_bits: u32,
    pub simd: String,
    pub aes: String,
    pub triad_gbs: f64,
    pub copy_gbs: f64,
    /// Full-width vector multiplies (32-bit lanes) per cycle per core.
    pub mul_per_cycle: f64,
    /// Full-width vector adds per cycle per core.
    pub add_per_cycle: f64,
    /// Whether the two rates above were measured (else the model's 1 and 2).
    pub rates_measured: bool,
}

impl Limits {
    /// Peak multiply-adds per second for ring words of `bits` bits (all cores).
    fn muladd(&self, bits: u32) -> f64 {
        (self.vector_bits / bits) as f64
            * self.mul_per_cycle
            * self.clock_ghz
            * 1e9
            * self.cores as f64
    }
    /// Peak adds per second.
    fn add(&self, bits: u32) -> f64 {
        (self.vector_bits / bits) as f64
            * self.add_per_cycle
            * self.clock_ghz
            * 1e9
            * self.cores as f64
    }
    /// Peak AES blocks per second (fixed-key AES-128, 10 rounds).
    fn aes_blocks(&self) -> f64 {
        let rounds_per_cycle = match self.aes.as_str() {
            "vaes-avx512" => 8.0,
            "aes-ni" => 2.0,
            _ => 1.0,
        };
        rounds_per_cycle / 10.0 * self.clock_ghz * 1e9 * self.cores as f64
    }
    fn bw(&self) -> f64 {
        self.triad_gbs * 1e9
    }
}

/// One row of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub kernel: String,
    pub backend: String,
    pub shape: String,
    pub median_ms: f64,
    pub throughput: f64,
    pub unit: String,
    pub limit: f64,
    pub pct_of_limit: f64,
    pub gb_per_s: f64,
    pub speedup_vs_scalar: Option<f64>,
}

/// Clock estimate from a chain of dependent adds (1 cycle each): the fastest of 300 short
/// (~0.5 ms) runs, so that runs preempted by other processes on a shared machine do not
/// count.
fn clock_ghz() -> f64 {
    const ITERS: u64 = 200_000;
    let mut best = f64::MAX;
    for _ in 0..300 {
        let t = Instant::now();
        let x = dependent_adds(ITERS);
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(x);
        best = best.min(dt);
    }
    (ITERS * 10) as f64 / best / 1e9
}

/// 10 dependent adds per iteration (the loop counter is a separate chain).
#[allow(unused_mut, unused_assignments)]
fn dependent_adds(iters: u64) -> u64 {
    let mut x: u64 = 0;
    let mut n = iters;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: register-only arithmetic on the two named operands.
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "dec {n}",
            "jnz 2b",
            x = inout(reg) x,
            n = inout(reg) n,
            options(nomem, nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: register-only arithmetic on the two named operands.
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, {x}, 1", "add {x}, {x}, 1", "add {x}, {x}, 1", "add {x}, {x}, 1",
            "add {x}, {x}, 1", "add {x}, {x}, 1", "add {x}, {x}, 1", "add {x}, {x}, 1",
            "add {x}, {x}, 1", "add {x}, {x}, 1",
            "subs {n}, {n}, 1",
            "b.ne 2b",
            x = inout(reg) x,
            n = inout(reg) n,
            options(nomem, nostack),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        for i in 0..iters {
            x = std::hint::black_box(x.wrapping_add(i | 1));
        }
    }
    x
}

/// Measured vector instructions per cycle on one thread: (multiplies, adds) of full-width
/// 32-bit lanes, from 24 independent register chains (fastest of 300 short runs). `None` where no
/// intrinsics probe exists for this CPU (then the model assumes 1 and 2).
fn probe_ops_per_cycle(clock_ghz: f64) -> Option<(f64, f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        // Short runs (~0.1 ms), the fastest of 300 (see `clock_ghz`).
        const ITERS: usize = 20_000;
        let simd = Simd::detect();
        if simd < Simd::Avx2 {
            return None;
        }
        let mut best = (f64::MAX, f64::MAX);
        for _ in 0..300 {
            for mul in [true, false] {
                let t = Instant::now();
                // SAFETY: the CPU supports the level `simd` (detected).
                let x = unsafe {
                    if simd == Simd::Avx512 {
                        probe::chains512(ITERS, mul)
                    } else {
                        probe::chains256(ITERS, mul)
                    }
                };
                std::hint::black_box(x);
                let dt = t.elapsed().as_secs_f64();
                if mul {
                    best.0 = best.0.min(dt);
                } else {
                    best.1 = best.1.min(dt);
                }
            }
        }
        let instr = (ITERS * probe::CHAINS) as f64;
        let cycles = |dt: f64| dt * clock_ghz * 1e9;
        Some((instr / cycles(best.0), instr / cycles(best.1)))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = clock_ghz;
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod probe {
    use core::arch::x86_64::*;
    pub const CHAINS: usize = 24;

    /// CHAINS independent chains of `vpmulld` (or `vpaddd`) on 512-bit registers.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains512(iters: usize, mul: bool) -> u32 {
        let mut acc = [_mm512_set1_epi32(1); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm512_set1_epi32(i as i32 + 3);
        }
        let c = _mm512_set1_epi32(std::hint::black_box(0x0101_0101));
        if mul {
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_mullo_epi32(*a, c);
                }
            }
        } else {
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_add_epi32(*a, c);
                }
            }
        }
        let s = acc
            .iter()
            .fold(_mm512_setzero_si512(), |s, &a| _mm512_xor_si512(s, a));
        _mm512_reduce_add_epi32(s) as u32
    }

    /// As [`chains512`] on 256-bit registers (AVX2).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    pub unsafe fn chains256(iters: usize, mul: bool) -> u32 {
        let mut acc = [_mm256_set1_epi32(1); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_set1_epi32(i as i32 + 3);
        }
        let c = _mm256_set1_epi32(std::hint::black_box(0x0101_0101));
        if mul {
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_mullo_epi32(*a, c);
                }
            }
        } else {
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_add_epi32(*a, c);
                }
            }
        }
        let s = acc
            .iter()
            .fold(_mm256_setzero_si256(), |s, &a| _mm256_xor_si256(s, a));
        let mut w = [0u32; 8];
        _mm256_storeu_si256(w.as_mut_ptr().cast(), s);
        w.iter().fold(0, |a, &b| a ^ b)
    }
}

/// Stream-like triad and copy bandwidth (GB/s) on the kernels' pool, best of 6 (the
/// machine is shared: slower runs were interrupted).
fn bandwidth() -> (f64, f64) {
    const N: usize = 32 << 20; // u32 words per array: 128 MiB
    let pool = backend::pool();
    let mut a = vec![0u32; N];
    let b: Vec<u32> = (0..N as u32).collect();
    let c: Vec<u32> = (0..N as u32).map(|v| v ^ 0x5555).collect();
    let chunk = N / (4 * pool.current_num_threads()).max(1);
    let mut triad = Vec::new();
    let mut copy = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk).zip(c.par_chunks(chunk)))
                .for_each(|(a, (b, c))| {
                    for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
                        *x = y.wrapping_add(z.wrapping_mul(3));
                    }
                })
        });
        triad.push(3.0 * 4.0 * N as f64 / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk))
                .for_each(|(a, b)| a.copy_from_slice(b))
        });
        copy.push(2.0 * 4.0 * N as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(&a);
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    (best(&triad), best(&copy))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Measures the limits of this machine.
pub fn limits() -> Limits {
    let simd = Simd::detect();
    let (triad, copy) = bandwidth();
    let clock = clock_ghz();
    let rates = probe_ops_per_cycle(clock);
    let (mul, add) = rates.unwrap_or((1.0, 2.0));
    Limits {
        cores: backend::pool().current_num_threads(),
        clock_ghz: clock,
        mul_per_cycle: (mul * 4.0).round() / 4.0,
        add_per_cycle: (add * 4.0).round() / 4.0,
        rates_measured: rates.is_some(),
        vector_bits: match simd {
            Simd::Avx512 => 512,
            Simd::Avx2 => 256,
            Simd::Neon | Simd::Portable => 128,
        },
        simd: simd.name().to_string(),
        aes: backend::aes_name().to_string(),
        triad_gbs: triad,
        copy_gbs: copy,
    }
}

/// Deterministic pseudo-random words (splitmix64), filled in parallel.
fn words<W: Word>(n: usize, seed: u64) -> Vec<W> {
    let mut v = vec![W::ZERO; n];
    backend::pool().install(|| {
        v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, ch)| {
            let mut s = seed ^ ((c as u64) << 32);
            for w in ch {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                *w = W::from_u64(z ^ (z >> 31));
            }
        })
    });
    v
}

fn indices(n: usize, k: u32, seed: u64) -> Vec<u32> {
    words::<u32>(n, seed)
        .into_iter()
        .map(|v| v & ((1u32 << k) - 1))
        .collect()
}

/// How one backend runs: a label and how to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    /// Through `kernels::ops` with this process-wide backend.
    Ops(Backend),
    /// The CPU code forced to a lower SIMD level (dense kernels only).
    Level(Simd),
}

impl Runner {
    fn label(self) -> String {
        match self {
            Runner::Ops(b) => b.name().to_string(),
            Runner::Level(s) => format!("cpu-{}", s.name()),
        }
    }
    fn scalar(self) -> bool {
        self == Runner::Ops(Backend::Scalar)
    }
}

/// Times `f` (warm-up + reps, or one run for the scalar reference); median seconds.
fn time(reps: usize, once: bool, mut f: impl FnMut()) -> f64 {
    f();
    if once {
        let t = Instant::now();
        f();
        return t.elapsed().as_secs_f64();
    }
    let mut v: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut v)
}

/// Runs `f` under a runner: sets the process-wide backend (ops) or runs the forced-level
/// CPU code in the kernels' pool.
fn under<T: Send>(
    r: Runner,
    ops_call: impl FnOnce() -> T + Send,
    level_call: impl FnOnce(Simd) -> T + Send,
) -> T {
    match r {
        Runner::Ops(b) => {
            backend::set_backend(b);
            ops_call()
        }
        Runner::Level(s) => backend::pool().install(|| level_call(s)),
    }
}

struct Ctx {
    lim: Limits,
    reps: usize,
    rows: Vec<Row>,
    runners: Vec<Runner>,
    only: Option<String>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        kernel: &str,
        r: Runner,
        shape: String,
        secs: f64,
        work: f64,
        unit: &str,
        limit: f64,
        bytes: f64,
    ) {
        let throughput = work / secs;
        let scalar = self
            .rows
            .iter()
            .find(|x| x.kernel == kernel && x.backend == "scalar")
            .map(|x| x.throughput);
        let row = Row {
            kernel: kernel.to_string(),
            backend: r.label(),
            shape,
            median_ms: secs * 1e3,
            throughput,
            unit: unit.to_string(),
            limit,
            pct_of_limit: 100.0 * throughput / limit,
            gb_per_s: bytes / secs / 1e9,
            speedup_vs_scalar: if r.scalar() {
                None
            } else {
                scalar.map(|s| throughput / s)
            },
        };
        eprintln!(
            "  {:<22} {:<14} {:>10.3} ms {:>10.3e} {:<10} {:>6.1}% of limit",
            row.kernel, row.backend, row.median_ms, row.throughput, row.unit, row.pct_of_limit
        );
        self.rows.push(row);
    }

    fn wants(&self, kernel: &str) -> bool {
        self.only.as_deref().is_none_or(|o| kernel.contains(o))
    }

    /// The runners for a kernel: scalar first (so speedups can refer to it), forced
    /// lower levels only for the dense kernels.
    fn runners(&self, levels: bool) -> Vec<Runner> {
        self.runners
            .iter()
            .copied()
            .filter(|r| levels || matches!(r, Runner::Ops(_)))
            .collect()
    }
}

fn matmul_case<W: Word>(cx: &mut Ctx, name: &str, batch: usize, m: usize, k: usize, n: usize) {
    if !cx.wants(name) {
        return;
    }
    let a = words::<W>(batch * m * k, 1);
    let b = words::<W>(batch * k * n, 2);
    for r in cx.runners(true) {
        let (bs, sub) = if r.scalar() && batch > 1 {
            (
                batch.div_ceil(8),
                format!(" (scalar: {} of {batch})", batch.div_ceil(8)),
            )
        } else if r.scalar() {
            (batch, format!(" (scalar: {} rows)", m.div_ceil(8)))
        } else {
            (batch, String::new())
        };
        let ms = if r.scalar() && batch == 1 {
            m.div_ceil(8)
        } else {
            m
        };
        let (a, b) = (&a[..bs * ms * k], &b[..bs * k * n]);
        let secs = time(cx.reps, r.scalar(), || {
            let c = under(
                r,
                || {
                    if bs == 1 {
                        ops::matmul(a, b, ms, k, n)
                    } else {
                        ops::matmul_batched(a, b, bs, ms, k, n)
                    }
                },
                |s| {
                    let mut c = Vec::with_capacity(bs * ms * n);
                    for t in 0..bs {
                        c.extend(kernels::matmul::matmul_with(
                            s,
                            &a[t * ms * k..][..ms * k],
                            &b[t * k * n..][..k * n],
                            ms,
                            k,
                            n,
                        ));
                    }
                    c
                },
            );
            std::hint::black_box(c);
        });
        let work = (bs * ms * k * n) as f64;
        let bytes = ((bs * (ms * k + k * n + ms * n)) * (W::BITS as usize / 8)) as f64;
        let shape = if batch > 1 {
            format!("{batch}x({m}x{k} . {k}x{n}) u{}{sub}", W::BITS)
        } else {
            format!("{m}x{k} . {k}x{n} u{}{sub}", W::BITS)
        };
        let limit = cx.lim.muladd(W::BITS);
        cx.push(name, r, shape, secs, work, "mul-add/s", limit, bytes);
    }
}

fn fc_case<W: Word>(cx: &mut Ctx, name: &str, n: usize, d_in: usize, d_out: usize) {
    if !cx.wants(name) {
        return;
    }
    let x = words::<W>(n * d_in, 3);
    let signs: Vec<i8> = words::<u32>(d_in * d_out, 4)
        .into_iter()
        .map(|v| if v & 1 == 1 { 1 } else { -1 })
        .collect();
    let w = kernels::bitfc::pack_signs(&signs, d_in, d_out);
    for r in cx.runners(true) {
        let ns = if r.scalar() { n.div_ceil(8) } else { n };
        let xs = &x[..ns * d_in];
        let secs = time(cx.reps, r.scalar(), || {
            let y = under(
                r,
                || ops::fc(xs, ns, &w),
                |s| kernels::bitfc::fc_with(s, xs, ns, &w),
            );
            std::hint::black_box(y);
        });
        let sub = if r.scalar() {
            format!(" (scalar: {ns} rows)")
        } else {
            String::new()
        };
        let bytes = ((ns * (d_in + d_out)) * (W::BITS as usize / 8) + d_in * d_out / 8) as f64;
        let limit = cx.lim.add(W::BITS);
        cx.push(
            name,
            r,
            format!("{n}x{d_in} . signs {d_in}x{d_out} u{}{sub}", W::BITS),
            secs,
            (ns * d_in * d_out) as f64,
            "add/s",
            limit,
            bytes,
        );
    }
}

fn gather_case<W: Word>(cx: &mut Ctx, name: &str, n: usize, k: u32) {
    if !cx.wants(name) {
        return;
    }
    let tables = words::<W>(n << k, 5);
    let idx = indices(n, k, 6);
    let (kx, ky) = (k / 2, k - k / 2);
    let ix: Vec<u32> = idx.iter().map(|&v| v >> ky).collect();
    let iy: Vec<u32> = idx.iter().map(|&v| v & ((1 << ky) - 1)).collect();
    let wb = W::BITS as usize / 8;
    for two in [false, true] {
        let kname = if two {
            format!("{name}2")
        } else {
            name.to_string()
        };
        if !cx.wants(&kname) {
            continue;
        }
        for r in cx.runners(true) {
            let ns = if r.scalar() { n / 8 } else { n };
            let (t, i, a, b) = (&tables[..ns << k], &idx[..ns], &ix[..ns], &iy[..ns]);
            let secs = time(cx.reps, r.scalar(), || {
                let o = if two {
                    under(
                        r,
                        || ops::gather2(t, kx, ky, a, b),
                        |s| kernels::lut::gather2_with(s, t, kx, ky, a, b),
                    )
                } else {
                    under(
                        r,
                        || ops::gather(t, k, i),
                        |s| kernels::lut::gather_with(s, t, k, i),
                    )
                };
                std::hint::black_box(o);
            });
            let shape = if two {
                format!("{ns} lookups, k={kx}+{ky}, u{}", W::BITS)
            } else {
                format!("{ns} lookups, k={k}, u{}", W::BITS)
            };
            let limit = cx.lim.bw() / 64.0;
            cx.push(
                &kname,
                r,
                shape,
                secs,
                ns as f64,
                "lookups/s",
                limit,
                (ns * (64 + 4 * (1 + two as usize) + wb)) as f64,
            );
        }
    }
}

fn onehot_case<W: Word>(cx: &mut Ctx, name: &str, n: usize, k: u32) {
    if !cx.wants(name) {
        return;
    }
    let table = words::<W>(1 << k, 7);
    let u = words::<W>(n << k, 8);
    let idx = indices(n, k, 9);
    let wb = W::BITS as usize / 8;
    for r in cx.runners(true) {
        let ns = if r.scalar() { n / 8 } else { n };
        let (uu, i) = (&u[..ns << k], &idx[..ns]);
        let secs = time(cx.reps, r.scalar(), || {
            let o = under(
                r,
                || ops::onehot_dot(&table, k, i, uu),
                |s| kernels::lut::onehot_dot_with(s, &table, k, i, uu),
            );
            std::hint::black_box(o);
        });
        let bytes = ((ns << k) * wb + ns * 4) as f64;
        let limit = cx.lim.bw() / 1e9;
        cx.push(
            name,
            r,
            format!("{ns} lookups, k={k}, u{}", W::BITS),
            secs,
            bytes / 1e9,
            "GB/s",
            limit,
            bytes,
        );
    }
}

fn rotate_case<W: Word>(cx: &mut Ctx, name: &str, n: usize, k: u32) {
    if !cx.wants(name) {
        return;
    }
    let table = words::<W>(1 << k, 10);
    let rhos = indices(n, k, 11);
    let wb = W::BITS as usize / 8;
    for r in cx.runners(false) {
        let ns = if r.scalar() { n / 8 } else { n };
        let rh = &rhos[..ns];
        let secs = time(cx.reps, r.scalar(), || {
            let o = under(r, || ops::rotate_tables(&table, k, rh), |_| Vec::new());
            std::hint::black_box(o);
        });
        let bytes = ((ns << k) * wb) as f64;
        let limit = cx.lim.copy_gbs / 2.0; // write-only stream: half of copy's two arrays
        cx.push(
            name,
            r,
            format!("{ns} tables, k={k}, u{}", W::BITS),
            secs,
            bytes / 1e9,
            "GB/s",
            limit,
            bytes,
        );
    }
}

/// A one-thread rayon pool (the scalar rows of kernels that have no separate reference).
fn one_thread() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("one-thread pool")
    })
}

fn dpf_case<W: Word>(cx: &mut Ctx, n: usize, k: u32) {
    let nu = kernels::dpf::leaf_levels::<W>(k);
    let d = k - nu;
    // blocks per leaf: 2^nu words of 128/BITS per block
    let leaf = ((1u64 << nu) * W::BITS as u64).div_ceil(128);
    let blocks_eval = (2 * ((1u64 << d) - 1) + leaf * (1u64 << d)) as f64;
    let blocks_gen = (4 * d as u64 + 2 * leaf) as f64;
    let alphas = indices(n, k, 12);
    let table = words::<W>(1 << k, 13);
    let xs = indices(n, k, 14);
    let seed = [7u8; 32];
    if cx.wants("dpf-gen") {
        for r in cx.runners(false) {
            if r == Runner::Ops(Backend::Gpu) {
                continue; // key generation is CPU code on every backend
            }
            let ns = if r.scalar() { n / 8 } else { n };
            let a = &alphas[..ns];
            let secs = time(cx.reps, r.scalar(), || {
                let keys = if r.scalar() {
                    // the reference: the same code on one thread
                    one_thread().install(|| kernels::dpf::gen_batch::<W>(k, a, W::ONE, seed))
                } else {
                    under(
                        r,
                        || ops::dpf_gen_batch::<W>(k, a, W::ONE, seed),
                        |_| unreachable!(),
                    )
                };
                std::hint::black_box(keys);
            });
            let limit = cx.lim.aes_blocks();
            cx.push(
                "dpf-gen",
                r,
                format!("{ns} key pairs, k={k}, u{}", W::BITS),
                secs,
                ns as f64 * blocks_gen,
                "AES blocks/s",
                limit,
                (ns * 2 * kernels::dpf::key_bytes(k, W::BITS)) as f64,
            );
        }
    }
    if !cx.wants("dpf-eval") {
        return;
    }
    let (k0, _) =
        backend::pool().install(|| kernels::dpf::gen_batch::<W>(k, &alphas, W::ONE, seed));
    for r in cx.runners(false) {
        let ns = if r.scalar() { n / 64 } else { n };
        let mut ks = k0.clone();
        ks.truncate(ns);
        let x = &xs[..ns];
        let secs = time(cx.reps, r.scalar(), || {
            let o = under(
                r,
                || ops::dpf_eval_dot_batch(&ks, &table, x),
                |_| Vec::new(),
            );
            std::hint::black_box(o);
        });
        let limit = cx.lim.aes_blocks();
        let sub = if r.scalar() {
            " (scalar: 1/64 of the keys)"
        } else {
            ""
        };
        cx.push(
            "dpf-eval-dot",
            r,
            format!("{ns} lookups, k={k}, u{}{sub}", W::BITS),
            secs,
            ns as f64 * blocks_eval,
            "AES blocks/s",
            limit,
            (ns * kernels::dpf::key_bytes(k, W::BITS)) as f64,
        );
    }
}

/// DCF evaluation (exact truncation's carries): `n` comparisons over `bits` bits, u32
/// shares. CPU code on every backend; the scalar row is the one-key reference evaluator
/// (both children expanded) on one thread, on 1/16 of the keys.
fn dcf_case(cx: &mut Ctx, n: usize, bits: u32) {
    if !cx.wants("dcf-eval") {
        return;
    }
    let m = (1u64 << bits) - 1;
    let alphas: Vec<u64> = words::<u64>(n, 21).iter().map(|v| v & m).collect();
    let xs: Vec<u64> = words::<u64>(n, 22).iter().map(|v| v & m).collect();
    let (k0, _) = ops::dcf_gen_batch::<u32>(bits, &alphas, 1, [9u8; 32]);
    let blocks = (2 * bits + 1) as f64; // the batched evaluator's AES blocks per key
    for r in cx.runners(false) {
        if r == Runner::Ops(Backend::Gpu) {
            continue;
        }
        let ns = if r.scalar() { n / 16 } else { n };
        let (ks, x) = (&k0[..ns], &xs[..ns]);
        let secs = time(cx.reps, r.scalar(), || {
            let o: Vec<u32> = if r.scalar() {
                ks.iter()
                    .zip(x)
                    .map(|(k, &x)| kernels::dcf::eval(k, x))
                    .collect()
            } else {
                under(r, || ops::dcf_eval_batch(ks, x), |_| unreachable!())
            };
            std::hint::black_box(o);
        });
        let sub = if r.scalar() {
            " (scalar: one key at a time, 1/16 of the keys)"
        } else {
            ""
        };
        let limit = cx.lim.aes_blocks();
        cx.push(
            "dcf-eval",
            r,
            format!("{ns} comparisons, {bits} bits, u32{sub}"),
            secs,
            ns as f64 * blocks,
            "AES blocks/s",
            limit,
            (ns * kernels::dcf::key_bytes(bits, 32)) as f64,
        );
    }
}

fn runners_of(spec: &str) -> Result<Vec<Runner>> {
    let gpu_ok = match ops::gpu_status() {
        ops::GpuStatus::Hardware(_) => true,
        ops::GpuStatus::Software(_) => std::env::var_os("KERNELS_BENCH_SOFTWARE_GPU").is_some(),
        ops::GpuStatus::Unavailable(_) => false,
    };
    let mut v = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part == "all" {
            v.push(Runner::Ops(Backend::Scalar));
            for s in Simd::supported() {
                if s != Simd::active() {
                    v.push(Runner::Level(s));
                }
            }
            v.push(Runner::Ops(Backend::Cpu));
            if gpu_ok {
                v.push(Runner::Ops(Backend::Gpu));
            }
        } else {
            let b: Backend = part.parse().map_err(anyhow::Error::msg)?;
            v.push(Runner::Ops(b));
        }
    }
    // scalar first, so every other row can refer to it
    v.sort_by_key(|r| !r.scalar());
    v.dedup();
    Ok(v)
}

/// Runs the command.
pub fn run(a: &KernelsArgs) -> Result<()> {
    let runners = runners_of(&a.backend)?;
    if let Some(o) = a
        .only
        .as_deref()
        .filter(|o| !KERNEL_NAMES.iter().any(|k| k.contains(o)))
    {
        bail!(
            "no kernel matches --only {o:?} (kernels: {})",
            KERNEL_NAMES.join(", ")
        );
    }
    let before = backend::backend();
    eprintln!("measuring this machine's limits ...");
    let lim = limits();
    println!(
        "machine: {} threads, ~{:.2} GHz (dependent-add loop), {}-bit vectors ({}), AES {}; \
         triad {:.1} GB/s, copy {:.1} GB/s; per core and cycle {} vector multiplies, {} vector \
         adds ({})",
        lim.cores,
        lim.clock_ghz,
        lim.vector_bits,
        lim.simd,
        lim.aes,
        lim.triad_gbs,
        lim.copy_gbs,
        lim.mul_per_cycle,
        lim.add_per_cycle,
        if lim.rates_measured {
            "measured: 24 independent register chains"
        } else {
            "assumed"
        }
    );
    println!(
        "peaks (all threads): u32 mul-add {:.1} G/s, u32 add {:.1} G/s, u16 mul-add {:.1} G/s, \
         AES {:.2} G blocks/s",
        lim.muladd(32) / 1e9,
        lim.add(32) / 1e9,
        lim.muladd(16) / 1e9,
        lim.aes_blocks() / 1e9
    );
    println!("backends: {}", {
        let v: Vec<String> = runners.iter().map(|r| r.label()).collect();
        v.join(", ")
    });
    println!("gpu: {:?}", ops::gpu_status());
    let q = if a.quick { 8 } else { 1 };
    let mut cx = Ctx {
        lim,
        reps: a.reps,
        rows: Vec::new(),
        runners,
        only: a.only.clone(),
    };
    matmul_case::<u32>(&mut cx, "matmul-qkv", 1, 128 / q, 768, 2304);
    matmul_case::<u16>(&mut cx, "matmul-qkv-u16", 1, 128 / q, 768, 2304);
    matmul_case::<u32>(&mut cx, "matmul-ffn2", 1, 128 / q, 3072, 768);
    matmul_case::<u32>(&mut cx, "matmul-attn", 12, 128, 64, 128);
    matmul_case::<u16>(&mut cx, "matmul-attn-u16", 12, 128, 64, 128);
    fc_case::<u32>(&mut cx, "fc1bit-qkv", 128 / q, 768, 2304);
    fc_case::<u32>(&mut cx, "fc1bit-ffn2", 128 / q, 3072, 768);
    fc_case::<u16>(&mut cx, "fc1bit-qkv-u16", 128 / q, 768, 2304);
    gather_case::<u32>(&mut cx, "gather", 1_500_000 / q, 8);
    onehot_case::<u32>(&mut cx, "onehot-dot", 1_500_000 / q / 4, 8);
    rotate_case::<u32>(&mut cx, "rotate-tables", 1_500_000 / q / 4, 8);
    dpf_case::<u32>(&mut cx, 200_000 / q, 12);
    dcf_case(&mut cx, 400_000 / q, 20);
    backend::set_backend(before);
    // --only is checked against KERNEL_NAMES before the run: keep the list complete
    debug_assert!(
        cx.rows
            .iter()
            .all(|r| KERNEL_NAMES.contains(&r.kernel.as_str())),
        "a measured kernel is missing from KERNEL_NAMES"
    );
    print!("{}", render(&cx.rows));
    let csv = a.csv.clone().or_else(|| {
        a.only
            .is_none()
            .then(|| PathBuf::from("results/kernels.csv"))
    });
    match csv {
        Some(path) => {
            write_csv(&path, &cx.rows).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None => println!("(a partial table with --only: no CSV written unless --csv FILE)"),
    }
    if let Some(j) = &a.json {
        let doc = serde_json::to_string_pretty(&cx.rows)?;
        harness::report::write_atomically(j, doc.as_bytes())
            .with_context(|| format!("writing {}", j.display()))?;
        println!("wrote {}", j.display());
    }
    Ok(())
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let mut last = "";
    for r in rows {
        if r.kernel != last {
            s.push_str(&format!(
                "\n{} ({})\n  {:<14} {:>10} {:>12} {:>12} {:>7} {:>8} {:>9}  shape\n",
                r.kernel,
                r.unit,
                "backend",
                "median ms",
                "throughput",
                "limit",
                "% limit",
                "GB/s",
                "x scalar"
            ));
            last = &r.kernel;
        }
        s.push_str(&format!(
            "  {:<14} {:>10.3} {:>12.4e} {:>12.4e} {:>6.1}% {:>8.2} {:>9}  {}\n",
            r.backend,
            r.median_ms,
            r.throughput,
            r.limit,
            r.pct_of_limit,
            r.gb_per_s,
            r.speedup_vs_scalar
                .map_or("-".to_string(), |x| format!("{x:.1}")),
            r.shape
        ));
    }
    s
}

fn write_csv(path: &std::path::Path, rows: &[Row]) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record([
        "kernel",
        "backend",
        "shape",
        "median_ms",
        "throughput",
        "unit",
        "limit",
        "pct_of_limit",
        "gb_per_s",
        "speedup_vs_scalar",
    ])?;
    for r in rows {
        w.write_record([
            r.kernel.clone(),
            r.backend.clone(),
            r.shape.clone(),
            format!("{:.4}", r.median_ms),
            format!("{:.6e}", r.throughput),
            r.unit.clone(),
            format!("{:.6e}", r.limit),
            format!("{:.2}", r.pct_of_limit),
            format!("{:.3}", r.gb_per_s),
            r.speedup_vs_scalar
                .map_or(String::new(), |x| format!("{x:.2}")),
        ])?;
    }
    harness::report::write_csv_atomically(w, path)
}
