//! Which implementation runs the kernels: the process-wide [`Backend`] choice, the CPU's
//! SIMD level ([`Simd`]), the kernels' explicit rayon pool, and the short description run
//! reports print ([`describe`]).
//!
//! **Backends.** `Scalar` is the plain reference (naive loops, the test oracle); `Cpu` is
//! the SIMD code (explicit AVX-512 intrinsics where the CPU has AVX-512F/BW/DQ, the
//! portable code compiled for AVX2 or the baseline otherwise; on aarch64 the portable code,
//! which LLVM compiles with NEON, the aarch64 baseline); `Gpu` runs the WGSL shaders of
//! [`crate::gpu`] on a hardware adapter and falls back to `Cpu` for what the GPU does not
//! support (a u64 ring, no adapter); `Auto` picks the GPU only when a hardware adapter
//! exists (software adapters such as lavapipe/llvmpipe are never chosen automatically) and
//! the call is large enough to pay for the transfers ([`GPU_MIN_WORK`]), else `Cpu`.
//! Every backend gives the same bits.
//!
//! **Selection.** [`set_backend`] (the harness calls it once, from `--backend`); without
//! it, the environment variable `HARNESS_BACKEND` (`auto|cpu|gpu|scalar`); else `Auto`.
//! The SIMD level can be capped (never raised above what the CPU has) with
//! `KERNELS_SIMD=portable|avx2|avx512`, and the pool's size set with `KERNELS_THREADS`.
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

/// The CPU code path of the SIMD kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Portable Rust, auto-vectorised for the target's baseline (SSE2 on x86_64, NEON
    /// on aarch64).
    Portable,
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
        Simd::Portable
    }

    /// The level the CPU kernels use: [`Simd::detect`], capped by `KERNELS_SIMD`
    /// (`portable`, `avx2`, `avx512`). Detected once per process.
    #[inline]
    pub fn active() -> Simd {
        static ACTIVE: AtomicU8 = AtomicU8::new(0);
        match ACTIVE.load(Ordering::Relaxed) {
            1 => Simd::Portable,
            2 => Simd::Avx2,
            3 => Simd::Avx512,
            _ => {
                let cap = match std::env::var("KERNELS_SIMD").as_deref() {
                    Ok("portable") | Ok("scalar") => Simd::Portable,
                    Ok("avx2") => Simd::Avx2,
                    _ => Simd::Avx512,
                };
                let s = Simd::detect().min(cap);
                ACTIVE.store(
                    match s {
                        Simd::Portable => 1,
                        Simd::Avx2 => 2,
                        Simd::Avx512 => 3,
                    },
                    Ordering::Relaxed,
                );
                s
            }
        }
    }

    /// Every level this CPU supports, slowest first (tests and benchmarks force each).
    pub fn supported() -> Vec<Simd> {
        [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&s| s <= Simd::detect())
            .collect()
    }

    /// Panics unless the CPU supports this level (so intrinsics are only reached on CPUs
    /// that have them).
    #[inline]
    pub(crate) fn check(self) {
        assert!(
            self <= Simd::detect(),
            "kernels: SIMD level {self:?} not supported by this CPU"
        );
    }

    /// A short name (`avx512`, `avx2`, `portable`; `neon` for the portable code on
    /// aarch64).
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Portable if cfg!(target_arch = "aarch64") => "neon",
            Simd::Portable => "portable",
        }
    }
}

/// The kernels' rayon pool: `KERNELS_THREADS` threads, else one per available core
/// (measured when the pool is first used: build it before pinning threads to cores, or
/// it sees one core; `protocol::session` does). Every parallel kernel of [`crate::ops`]
/// runs inside it.
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
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("kernels-{i}"))
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
    match crate::prg::Prg::fixed().backend() {
        crate::prg::AesImpl::Portable => "aes-crate",
        crate::prg::AesImpl::AesNi => "aes-ni",
        crate::prg::AesImpl::Vaes512 => "vaes-avx512",
    }
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
        assert!(s.contains(&Simd::active()));
        assert!(pool().current_num_threads() >= 1);
    }
}
