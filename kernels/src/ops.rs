//! Dispatching entry points: every kernel the protocol calls, run on the backend chosen
//! by [`crate::backend`] (scalar reference, CPU SIMD in the kernels' rayon pool, or GPU
//! with a CPU fallback). All backends return the same bits; the functions here have the
//! semantics (and panics) of the CPU functions of the same name in [`crate::matmul`],
//! [`crate::bitfc`], [`crate::lut`], [`crate::dpf`] and [`crate::dcf`].

use crate::backend::{backend, pool, Backend, COUNTERS, GPU_MIN_WORK};
use crate::bitfc::{self, PackedSigns};
use crate::dcf::{self, DcfKey};
use crate::dpf::{self, DpfKeys};
use crate::lut;
use crate::matmul;
use crate::word::Word;
use std::sync::atomic::Ordering;

/// Where one call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    Scalar,
    Cpu,
    Gpu,
}

/// Picks the implementation for a call of `work` elementary operations.
fn exec(work: usize) -> Exec {
    match backend() {
        Backend::Scalar => Exec::Scalar,
        Backend::Cpu => Exec::Cpu,
        Backend::Gpu => {
            if gpu_arm::usable(false) {
                Exec::Gpu
            } else {
                Exec::Cpu
            }
        }
        Backend::Auto => {
            if work >= GPU_MIN_WORK && gpu_arm::usable(true) {
                Exec::Gpu
            } else {
                Exec::Cpu
            }
        }
    }
}

fn count(e: Exec) {
    let c = match e {
        Exec::Scalar => &COUNTERS.scalar,
        Exec::Cpu => &COUNTERS.cpu,
        Exec::Gpu => &COUNTERS.gpu,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// Runs `cpu` in the kernels' pool, or the scalar reference, or the GPU (falling back to
/// `cpu` when the GPU declines the call).
fn run<T: Send>(
    work: usize,
    scalar: impl FnOnce() -> T,
    gpu: impl FnOnce() -> Option<T>,
    cpu: impl FnOnce() -> T + Send,
) -> T {
    let e = exec(work);
    match e {
        Exec::Scalar => {
            count(e);
            scalar()
        }
        Exec::Gpu => {
            if let Some(r) = gpu() {
                count(e);
                return r;
            }
            COUNTERS.gpu_fallback.fetch_add(1, Ordering::Relaxed);
            count(Exec::Cpu);
            pool().install(cpu)
        }
        Exec::Cpu => {
            count(e);
            pool().install(cpu)
        }
    }
}

/// C = A·B mod 2^BITS (A m×k, B k×n, row-major); see [`matmul::matmul`].
pub fn matmul<W: Word>(a: &[W], b: &[W], m: usize, k: usize, n: usize) -> Vec<W> {
    run(
        m * k * n,
        || matmul::matmul_scalar(a, b, m, k, n),
        || gpu_arm::matmul(a, b, m, k, n),
        || matmul::matmul(a, b, m, k, n),
    )
}

/// `batch` independent products (contiguous blocks); see [`matmul::matmul_batched`].
pub fn matmul_batched<W: Word>(
    a: &[W],
    b: &[W],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<W> {
    run(
        batch * m * k * n,
        || {
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
            let mut c = Vec::with_capacity(batch * m * n);
            for t in 0..batch {
                c.extend(matmul::matmul_scalar(
                    &a[t * m * k..][..m * k],
                    &b[t * k * n..][..k * n],
                    m,
                    k,
                    n,
                ));
            }
            c
        },
        || {
            if a.len() != batch * m * k || b.len() != batch * k * n {
                return None; // let the CPU path report the shape error
            }
            let mut c = Vec::with_capacity(batch * m * n);
            for t in 0..batch {
                c.extend(gpu_arm::matmul(
                    &a[t * m * k..][..m * k],
                    &b[t * k * n..][..k * n],
                    m,
                    k,
                    n,
                )?);
            }
            Some(c)
        },
        || matmul::matmul_batched(a, b, batch, m, k, n),
    )
}

/// Transpose of a row-major matrix (memory-bound; always on the CPU).
pub fn transpose<W: Copy>(a: &[W], rows: usize, cols: usize) -> Vec<W> {
    matmul::transpose(a, rows, cols)
}

/// Y = X·S mod 2^BITS for a bit-packed sign matrix; see [`bitfc::fc`].
pub fn fc<W: Word>(x: &[W], n: usize, w: &PackedSigns) -> Vec<W> {
    run(
        n * w.d_in * w.d_out,
        || bitfc::fc_scalar(x, n, w),
        || gpu_arm::fc(x, n, w),
        || bitfc::fc(x, n, w),
    )
}

/// `out[i] = tables[i·2^k + idx[i]]`; see [`lut::gather`].
pub fn gather<W: Word>(tables: &[W], k: u32, idx: &[u32]) -> Vec<W> {
    run(
        idx.len() << 4, // a lookup moves a cache line: ~16 words of work
        || lut::gather_scalar(tables, k, idx),
        || gpu_arm::gather(tables, k, idx),
        || lut::gather(tables, k, idx),
    )
}

/// Two-input gather; see [`lut::gather2`].
pub fn gather2<W: Word>(tables: &[W], kx: u32, ky: u32, ix: &[u32], iy: &[u32]) -> Vec<W> {
    run(
        ix.len() << 4,
        || lut::gather2_scalar(tables, kx, ky, ix, iy),
        || gpu_arm::gather2(tables, kx, ky, ix, iy),
        || lut::gather2(tables, kx, ky, ix, iy),
    )
}

/// One-hot inner products against one public table; see [`lut::onehot_dot`].
pub fn onehot_dot<W: Word>(table: &[W], k: u32, idx: &[u32], u: &[W]) -> Vec<W> {
    run(
        u.len(),
        || lut::onehot_dot_scalar(table, k, idx, u),
        || gpu_arm::onehot_dot(table, k, idx, u),
        || lut::onehot_dot(table, k, idx, u),
    )
}

/// One rotated copy of `table` per rho (`n·2^k` words); see [`lut::rotate_tables`].
pub fn rotate_tables<W: Word>(table: &[W], k: u32, rhos: &[u32]) -> Vec<W> {
    run(
        rhos.len() << k,
        || lut::rotate_tables_scalar(table, k, rhos),
        || gpu_arm::rotate_tables(table, k, rhos),
        || lut::rotate_tables(table, k, rhos),
    )
}

/// One 2-D rotated copy per (rx, ry) pair (`n·2^(kx+ky)` words); see
/// [`lut::rotate_tables2`]. CPU only (a memcpy-bound dealer step).
pub fn rotate_tables2<W: Word>(table: &[W], kx: u32, ky: u32, rx: &[u32], ry: &[u32]) -> Vec<W> {
    run(
        rx.len() << (kx + ky),
        || lut::rotate_tables2_scalar(table, kx, ky, rx, ry),
        || None,
        || lut::rotate_tables2(table, kx, ky, rx, ry),
    )
}

/// Batched fused DPF expand-and-dot; see [`dpf::eval_dot_batch`].
pub fn dpf_eval_dot_batch<W: Word>(keys: &DpfKeys<W>, table: &[W], xs: &[u32]) -> Vec<W> {
    run(
        keys.len() * table.len(),
        || dpf::eval_dot_batch_scalar(keys, table, xs),
        || gpu_arm::dpf_eval_dot_batch(keys, table, xs),
        || dpf::eval_dot_batch(keys, table, xs),
    )
}

/// Batched two-input fused DPF expand-and-dot; see [`dpf::eval_dot2_batch`].
pub fn dpf_eval_dot2_batch<W: Word>(
    keys: &DpfKeys<W>,
    table: &[W],
    kx: u32,
    ky: u32,
    xs: &[u32],
    ys: &[u32],
) -> Vec<W> {
    run(
        keys.len() * table.len(),
        || dpf::eval_dot2_batch_scalar(keys, table, kx, ky, xs, ys),
        || gpu_arm::dpf_eval_dot2_batch(keys, table, kx, ky, xs, ys),
        || dpf::eval_dot2_batch(keys, table, kx, ky, xs, ys),
    )
}

/// Dealer key generation for many points; see [`dpf::gen_batch`]. Always the CPU code
/// (the same deterministic keys whatever the backend), in the kernels' pool.
pub fn dpf_gen_batch<W: Word>(
    k: u32,
    alphas: &[u32],
    beta: W,
    seed: [u8; 32],
) -> (DpfKeys<W>, DpfKeys<W>) {
    pool().install(|| dpf::gen_batch(k, alphas, beta, seed))
}

/// Dealer key generation for many comparisons; see [`dcf::gen_batch`]. Always the CPU
/// code (the same deterministic keys whatever the backend), in the kernels' pool.
pub fn dcf_gen_batch<W: Word>(
    n: u32,
    alphas: &[u64],
    beta: W,
    seed: [u8; 32],
) -> (Vec<DcfKey<W>>, Vec<DcfKey<W>>) {
    pool().install(|| dcf::gen_batch(n, alphas, beta, seed))
}

/// Batched DCF evaluation; see [`dcf::eval_batch`]. Always the CPU code (no GPU path),
/// in the kernels' pool.
pub fn dcf_eval_batch<W: Word>(keys: &[DcfKey<W>], xs: &[u64]) -> Vec<W> {
    pool().install(|| dcf::eval_batch(keys, xs))
}

/// What the GPU side of this process can do (for reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuStatus {
    /// A hardware adapter (its name).
    Hardware(String),
    /// A software adapter (lavapipe, llvmpipe, ...): used only when `Gpu` is forced.
    Software(String),
    /// No usable adapter (why).
    Unavailable(String),
}

/// The GPU adapter status (initialises the GPU on the first call).
pub fn gpu_status() -> GpuStatus {
    gpu_arm::status()
}

// ==== GPU arm =============================================================================
// Glue between the dispatcher and `crate::gpu`. Each function returns None when the GPU
// cannot run the call (no adapter, a ring width or shape the GPU backend declines, a device
// error), and the dispatcher then runs the CPU code.
mod gpu_arm {
    use super::*;
    use crate::gpu::Gpu;
    use std::sync::OnceLock;

    /// The adapter status, probed once per process.
    pub(super) fn status() -> GpuStatus {
        static STATUS: OnceLock<GpuStatus> = OnceLock::new();
        STATUS
            .get_or_init(|| match Gpu::shared() {
                Ok(g) if g.is_software() => GpuStatus::Software(g.adapter_name()),
                Ok(g) => GpuStatus::Hardware(g.adapter_name()),
                Err(e) => GpuStatus::Unavailable(e.to_string()),
            })
            .clone()
    }

    /// Whether calls can go to the GPU (`hardware_only`: refuse software adapters).
    pub(super) fn usable(hardware_only: bool) -> bool {
        match status() {
            GpuStatus::Hardware(_) => true,
            GpuStatus::Software(_) => !hardware_only,
            GpuStatus::Unavailable(_) => false,
        }
    }

    fn gpu() -> Option<&'static Gpu> {
        Gpu::shared().ok()
    }

    pub(super) fn matmul<W: Word>(
        a: &[W],
        b: &[W],
        m: usize,
        k: usize,
        n: usize,
    ) -> Option<Vec<W>> {
        gpu()?.matmul(a, b, m, k, n).ok()
    }
    pub(super) fn fc<W: Word>(x: &[W], n: usize, w: &PackedSigns) -> Option<Vec<W>> {
        gpu()?.fc(x, n, w).ok()
    }
    pub(super) fn gather<W: Word>(t: &[W], k: u32, idx: &[u32]) -> Option<Vec<W>> {
        gpu()?.gather(t, k, idx).ok()
    }
    pub(super) fn gather2<W: Word>(
        t: &[W],
        kx: u32,
        ky: u32,
        ix: &[u32],
        iy: &[u32],
    ) -> Option<Vec<W>> {
        gpu()?.gather2(t, kx, ky, ix, iy).ok()
    }
    pub(super) fn onehot_dot<W: Word>(t: &[W], k: u32, idx: &[u32], u: &[W]) -> Option<Vec<W>> {
        gpu()?.onehot_dot(t, k, idx, u).ok()
    }
    pub(super) fn rotate_tables<W: Word>(t: &[W], k: u32, rhos: &[u32]) -> Option<Vec<W>> {
        gpu()?.rotate_tables(t, k, rhos).ok()
    }
    pub(super) fn dpf_eval_dot_batch<W: Word>(
        keys: &DpfKeys<W>,
        t: &[W],
        xs: &[u32],
    ) -> Option<Vec<W>> {
        gpu()?.dpf_eval_dot_batch(keys, t, xs).ok()
    }
    pub(super) fn dpf_eval_dot2_batch<W: Word>(
        keys: &DpfKeys<W>,
        t: &[W],
        kx: u32,
        ky: u32,
        xs: &[u32],
        ys: &[u32],
    ) -> Option<Vec<W>> {
        gpu()?.dpf_eval_dot2_batch(keys, t, kx, ky, xs, ys).ok()
    }
}
