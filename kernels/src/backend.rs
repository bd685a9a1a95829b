//! Which implementation runs the kernels: the process-wide [`Backend`] choice, the CPU's
//! SIMD level ([`Simd`]), the kernels' explicit rayon pool, and the short description run
//! reports print ([`describe`]).
//!
//! **Backends.** `Scalar` is the plain reference (naive loops, the test oracle); `Cpu` is
//! the SIMD code at the level [`Simd::active`] picks; `Gpu` runs the WGSL shaders of
//! [`crate::gpu`] on a hardware adapter and falls back to `Cpu` for what the GPU does not
//! support (a u64 ring, no adapter); `Auto` picks the GPU only when a hardware adapter
//! exists (software adapters such as lavapipe/llvmpipe are never chosen automatically) and
//! the call is large enough to pay for the transfers ([`GPU_MIN_WORK`]), else `Cpu`.
//! Every backend gives the same bits.
//!
//! **CPU SIMD levels** ([`Simd`], chosen at run time by feature detection):
//!
//! - x86_64: `Avx512` (explicit AVX-512F/BW/DQ intrinsics for the matmul micro-tiles, the
//!   1-bit FC, the gathers and the one-hot dot products), else `Avx2` (the portable code
//!   compiled a second time with AVX2 enabled), else `Portable`.
//! - aarch64: `Neon` (`is_aarch64_feature_detected!("neon")`, every aarch64 Linux CPU),
//!   else `Portable`. Explicit NEON intrinsics (`core::arch::aarch64`, `#[target_feature
//!   (enable = "neon")]` functions reached only after the check) run the ring matmul
//!   micro-tiles for u16 and u32 (8 × 24 / 8 × 12 tiles of `mla` by element), the 1-bit FC
//!   for every width (AND + ADD on register-resident accumulators), and the one-hot dot
//!   products for u16 and u32 (`mla` + `addv`). What stays portable at the `Neon` level,
//!   and why: the u64 matmul and u64 dot products (NEON has no 64-bit lane multiply; the
//!   portable code multiplies in general registers), the gathers (NEON has no gather
//!   instruction; the portable loop is one scalar load per lookup either way), the table
//!   rotations (memcpys), and the packing and transposes around the kernels. `Portable`
//!   on aarch64 is the plain Rust code, which LLVM may still auto-vectorise with NEON (the
//!   aarch64 baseline) but which calls no intrinsics.
//! - The DPF's fixed-key AES has its own detection ([`crate::prg::AesImpl`], named by
//!   [`aes_name`]): VAES-512 or AES-NI on x86_64, the ARMv8 AES instructions on aarch64
//!   (`is_aarch64_feature_detected!("aes")`), else the `aes` crate; same bits everywhere.
//!
//! Levels of the two families never coexist: [`Simd::supported`] is `[Portable, Neon]` on
//! aarch64 and `[Portable, Avx2, Avx512]` (or a prefix) on x86_64.
//!
//! **Selection.** [`set_backend`] (the harness calls it once, from `--backend`); without
//! it, the environment variable `HARNESS_BACKEND` (`auto|cpu|gpu|scalar`); else `Auto`.
//! The SIMD level can be capped (never raised above what the CPU has) with
//! `KERNELS_SIMD=portable|neon|avx2|avx512` (`portable` forces the portable code on
//! either architecture), the AES with `KERNELS_AES=portable|armv8|aesni|vaes`, and the
//! pool's size set with `KERNELS_THREADS`.
//! The dispatching entry points are in [`crate::ops`].

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Which implementation runs the kernels (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// GPU for large calls when a hardware adapter exists, else CPU SIMD.
    Auto,
    /// CPU SIMD (explicit intrinsics or auto-vectorised portable code), rayon-parallel.
    Cpu,
    /// GPU (WGSL through wgpu) whenever an adapter exists, software ones included; CPU for
    /// what it does not support.
    Gpu,
    /// The scalar reference: naive loops, one thread.
    Scalar,
}

impl Backend {
    /// The lower-case name (`auto`, `cpu`, `gpu`, `scalar`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
            Backend::Scalar => "scalar",
        }
    }

    /// The backend named by `HARNESS_BACKEND`, if it is set (an invalid value is an error).
    pub fn from_env() -> Result<Option<Backend>, String> {
        match std::env::var("HARNESS_BACKEND") {
            Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    fn code(self) -> u8 {
        match self {
            Backend::Auto => 1,
            Backend::Cpu => 2,
            Backend::Gpu => 3,
            Backend::Scalar => 4,
        }
    }

    fn from_code(c: u8) -> Option<Backend> {
        Some(match c {
            1 => Backend::Auto,
            2 => Backend::Cpu,
            3 => Backend::Gpu,
            4 => Backend::Scalar,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "cpu" | "simd" => Ok(Backend::Cpu),
            "gpu" | "wgpu" => Ok(Backend::Gpu),
            "scalar" | "reference" => Ok(Backend::Scalar),
            other => Err(format!(
                "unknown backend {other:?} (expected auto, cpu, gpu or scalar)"
            )),
        }
    }
}

static SELECTED: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide backend (the harness calls this once, before any kernel runs;
/// a later call replaces the choice for later kernel calls).
pub fn set_backend(b: Backend) {
    SELECTED.store(b.code(), Ordering::Relaxed);
}

/// The process-wide backend: the one [`set_backend`] chose, else `HARNESS_BACKEND`
/// (ignored if invalid), else `Auto`. Cost: one atomic load after the first call.
pub fn backend() -> Backend {
    if let Some(b) = Backend::from_code(SELECTED.load(Ordering::Relaxed)) {
        return b;
    }
    let b = Backend::from_env().ok().flatten().unwrap_or(Backend::Auto);
    // Only fill in the default: a concurrent set_backend wins.
    let _ = SELECTED.compare_exchange(0, b.code(), Ordering::Relaxed, Ordering::Relaxed);
    Backend::from_code(SELECTED.load(Ordering::Relaxed)).unwrap_or(b)
}

/// Work (multiply-adds, adds, or table words touched) from which `Auto` sends a call to a
/// hardware GPU: below it the host-device transfers and the launch (tens to hundreds of
/// microseconds) cost more than the CPU needs. 2^24 is ~1 ms of this machine's CPU
/// kernels.
pub const GPU_MIN_WORK: usize = 1 << 24;

/// The CPU code path of the SIMD kernels. Ordered slowest first; `Neon` (aarch64) and
/// the AVX levels (x86_64) never exist on the same CPU, so a level is supported when it
/// is `Portable` or of the CPU's own family and at most [`Simd::detect`] (see
/// [`Simd::supported`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Portable Rust, auto-vectorised for the target's baseline (SSE2 on x86_64; on
    /// aarch64 the baseline includes NEON, so LLVM may still emit NEON instructions here,
    /// but no NEON intrinsics are called).
    Portable,
    /// Explicit NEON intrinsics (aarch64 with NEON, i.e. every aarch64 Linux CPU): the
    /// ring matmul for u16/u32, the 1-bit FC for every width, the one-hot dot products
    /// for u16/u32; the rest of this level is the portable code (see the module docs).
    Neon,
    /// The portable code compiled with AVX2 enabled (x86_64).
    Avx2,
    /// Explicit AVX-512F/BW/DQ intrinsics (x86_64).
    Avx512,
}

impl Simd {
    /// The best level this CPU supports.
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx2")
            {
                return Simd::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                return Simd::Neon;
            }
        }
        Simd::Portable
    }

    /// The level the CPU kernels use: the best supported level not above the cap set by
    /// `KERNELS_SIMD` (`portable`, `neon`, `avx2`, `avx512`; unset or another value: no
    /// cap). A cap of another family's level (e.g. `neon` on x86_64) leaves the portable
    /// code. Detected once per process.
    #[inline]
    pub fn active() -> Simd {
        static ACTIVE: AtomicU8 = AtomicU8::new(0);
        match ACTIVE.load(Ordering::Relaxed) {
            1 => Simd::Portable,
            2 => Simd::Neon,
            3 => Simd::Avx2,
            4 => Simd::Avx512,
            _ => {
                let s = Simd::capped(std::env::var("KERNELS_SIMD").ok().as_deref());
                ACTIVE.store(
                    match s {
                        Simd::Portable => 1,
                        Simd::Neon => 2,
                        Simd::Avx2 => 3,
                        Simd::Avx512 => 4,
                    },
                    Ordering::Relaxed,
                );
                s
            }
        }
    }

    /// The best supported level not above the cap named by `cap` (a `KERNELS_SIMD` value;
    /// `None` or an unknown name: no cap).
    fn capped(cap: Option<&str>) -> Simd {
        let cap = match cap {
            Some("portable") | Some("scalar") => Simd::Portable,
            Some("neon") => Simd::Neon,
            Some("avx2") => Simd::Avx2,
            _ => Simd::Avx512,
        };
        Simd::supported()
            .into_iter()
            .filter(|&s| s <= cap)
            .max()
            .unwrap_or(Simd::Portable)
    }

    /// Whether this CPU can run this level: `Portable` always; `Neon` on aarch64 with
    /// NEON; `Avx2` and `Avx512` on x86_64 up to the detected level.
    pub fn is_supported(self) -> bool {
        let best = Simd::detect();
        match self {
            Simd::Portable => true,
            Simd::Neon => best == Simd::Neon,
            Simd::Avx2 | Simd::Avx512 => best >= Simd::Avx2 && self <= best,
        }
    }

    /// Every level this CPU supports, slowest first (tests and benchmarks force each):
    /// `[Portable, Neon]` on aarch64, `[Portable, Avx2, Avx512]` on an AVX-512 x86_64.
    pub fn supported() -> Vec<Simd> {
        [Simd::Portable, Simd::Neon, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|s| s.is_supported())
            .collect()
    }

    /// Panics unless the CPU supports this level (so intrinsics are only reached on CPUs
    /// that have them).
    #[inline]
    pub(crate) fn check(self) {
        assert!(
            self.is_supported(),
            "kernels: SIMD level {self:?} not supported by this CPU"
        );
    }

    /// A short name (`avx512`, `avx2`, `neon`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Neon => "neon",
            Simd::Portable => "portable",
        }
    }
}

/// The kernels' rayon pool: `KERNELS_THREADS` threads, else one per available core
/// (measured when the pool is first used: build it before pinning threads to cores, or
/// it sees one core; `protocol::session` does), worker i pinned to the i-th core this
/// process may use (`KERNELS_PIN=0`: not pinned). Every parallel kernel of
/// [`crate::ops`] runs inside it.
pub fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("KERNELS_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        // Worker i stays on core i: unpinned, the scheduler would now and then keep two
        // busy workers on one core for a whole run (measured here: a 2-thread product at
        // the 1-thread time in most runs of `harness kernels`). KERNELS_PIN=0 turns it off.
        let cores = match std::env::var("KERNELS_PIN").as_deref() {
            Ok("0") => None,
            _ => core_affinity::get_core_ids().filter(|c| c.len() > 1),
        };
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("kernels-{i}"))
            .start_handler(move |i| {
                if let Some(cores) = &cores {
                    core_affinity::set_for_current(cores[i % cores.len()]);
                }
            })
            .build()
            .expect("kernels: cannot build the rayon pool")
    })
}

/// Builds the kernels' pool and, when the selected backend may use a GPU (`Auto`, `Gpu`),
/// probes the adapter, so that neither happens inside a timed phase. Idempotent; call
/// it before pinning threads to cores.
pub fn prepare() {
    let _ = pool();
    if matches!(backend(), Backend::Auto | Backend::Gpu) {
        let _ = crate::ops::gpu_status();
    }
}

/// Calls executed per implementation since the start (for run reports).
pub(crate) struct Counters {
    pub cpu: AtomicUsize,
    pub gpu: AtomicUsize,
    pub scalar: AtomicUsize,
    pub gpu_fallback: AtomicUsize,
}

pub(crate) static COUNTERS: Counters = Counters {
    cpu: AtomicUsize::new(0),
    gpu: AtomicUsize::new(0),
    scalar: AtomicUsize::new(0),
    gpu_fallback: AtomicUsize::new(0),
};

/// Kernel calls run so far on (cpu, gpu, scalar), and GPU calls that fell back to the CPU.
pub fn call_counts() -> (usize, usize, usize, usize) {
    let c = &COUNTERS;
    (
        c.cpu.load(Ordering::Relaxed),
        c.gpu.load(Ordering::Relaxed),
        c.scalar.load(Ordering::Relaxed),
        c.gpu_fallback.load(Ordering::Relaxed),
    )
}

/// The AES implementation of the DPF PRG, by name.
pub fn aes_name() -> &'static str {
    crate::prg::Prg::fixed().backend().name()
}

/// What the CPU backend runs on this machine, e.g. `cpu (avx512 kernels, vaes-avx512 PRG,
/// 2 threads)`.
pub fn describe_cpu() -> String {
    format!(
        "cpu ({} kernels, {} PRG, {} threads)",
        Simd::active().name(),
        aes_name(),
        pool().current_num_threads()
    )
}

/// The selected backend and what it resolves to on this machine, for run reports, e.g.
/// `auto -> cpu (avx512 kernels; vaes-avx512 PRG; 2 threads); gpu: none (...); kernel
/// calls: cpu 3120 gpu 0 scalar 0 gpu-fallbacks 0` (no commas: it also goes into CSV
/// rows).
pub fn describe() -> String {
    let b = backend();
    let gpu = crate::ops::gpu_status();
    let chosen = match b {
        Backend::Scalar => "scalar reference (naive loops, 1 thread)".to_string(),
        Backend::Cpu => describe_cpu(),
        Backend::Gpu => match &gpu {
            crate::ops::GpuStatus::Hardware(name) | crate::ops::GpuStatus::Software(name) => {
                format!("gpu ({name}), cpu fallback {}", describe_cpu())
            }
            crate::ops::GpuStatus::Unavailable(_) => {
                format!("gpu unavailable, fell back to {}", describe_cpu())
            }
        },
        Backend::Auto => match &gpu {
            crate::ops::GpuStatus::Hardware(name) => format!(
                "gpu ({name}) for calls of >= 2^{} work, else {}",
                GPU_MIN_WORK.trailing_zeros(),
                describe_cpu()
            ),
            _ => describe_cpu(),
        },
    };
    let g = match gpu {
        crate::ops::GpuStatus::Hardware(n) => format!("hardware adapter {n}"),
        crate::ops::GpuStatus::Software(n) => format!("software adapter {n} (not used by auto)"),
        crate::ops::GpuStatus::Unavailable(why) => format!("none ({why})"),
    };
    let (cpu, gpu_calls, scalar, fell) = call_counts();
    let calls = if cpu + gpu_calls + scalar == 0 {
        String::new()
    } else {
        format!("; kernel calls: cpu {cpu} gpu {gpu_calls} scalar {scalar} gpu-fallbacks {fell}")
    };
    // No commas: the line also goes into CSV rows unquoted.
    format!("{b} -> {chosen}; gpu: {g}{calls}").replace(',', ";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for b in [Backend::Auto, Backend::Cpu, Backend::Gpu, Backend::Scalar] {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
            assert_eq!(b.name().to_uppercase().parse::<Backend>().unwrap(), b);
        }
        assert!("tpu".parse::<Backend>().is_err());
    }

    #[test]
    fn simd_levels_are_ordered_and_supported() {
        let s = Simd::supported();
        assert_eq!(s[0], Simd::Portable);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s.contains(&Simd::active()));
        assert!(s.contains(&Simd::detect()));
        assert!(s.iter().all(|l| l.is_supported()));
        // One family per CPU: NEON never next to an AVX level.
        let avx = s.iter().any(|&l| l >= Simd::Avx2);
        assert!(!(avx && s.contains(&Simd::Neon)), "{s:?}");
        if cfg!(target_arch = "aarch64") {
            assert!(!avx);
            #[cfg(target_arch = "aarch64")]
            if std::arch::is_aarch64_feature_detected!("neon") {
                assert_eq!(s, vec![Simd::Portable, Simd::Neon]);
            }
        } else {
            assert!(!s.contains(&Simd::Neon));
            assert!(!Simd::Neon.is_supported());
        }
        let names: std::collections::HashSet<_> =
            [Simd::Portable, Simd::Neon, Simd::Avx2, Simd::Avx512]
                .iter()
                .map(|l| l.name())
                .collect();
        assert_eq!(names.len(), 4);
        assert_eq!(Simd::Portable.name(), "portable");
        assert!(pool().current_num_threads() >= 1);
    }

    #[test]
    fn simd_cap_picks_best_supported_level_below_it() {
        assert_eq!(Simd::capped(None), Simd::detect());
        assert_eq!(Simd::capped(Some("bogus")), Simd::detect());
        assert_eq!(Simd::capped(Some("portable")), Simd::Portable);
        assert_eq!(Simd::capped(Some("scalar")), Simd::Portable);
        let neon = Simd::capped(Some("neon"));
        let avx2 = Simd::capped(Some("avx2"));
        if Simd::detect() == Simd::Neon {
            assert_eq!(neon, Simd::Neon);
            assert_eq!(avx2, Simd::Neon);
        } else {
            // Another family's name leaves the portable code.
            assert_eq!(neon, Simd::Portable);
            assert_eq!(avx2, Simd::detect().min(Simd::Avx2));
        }
        // The process-wide level is the cap of this process's KERNELS_SIMD (run the
        // suite with KERNELS_SIMD=portable to force the portable code everywhere).
        let env = std::env::var("KERNELS_SIMD").ok();
        assert_eq!(Simd::active(), Simd::capped(env.as_deref()));
        if matches!(env.as_deref(), Some("portable")) {
            assert_eq!(Simd::active(), Simd::Portable);
        }
    }
}
