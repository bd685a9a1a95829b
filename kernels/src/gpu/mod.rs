//! The kernels as WGSL compute shaders (`shaders/*.wgsl`) run through `wgpu`, with results
//! bit-identical to the CPU functions they mirror.
//!
//! **Device.** [`Gpu::new`] takes the first adapter wgpu finds (hardware preferred; a
//! software Vulkan such as Mesa's lavapipe is accepted, see [`Gpu::is_software`]) and
//! requests the adapter's own limits, so large storage buffers work. Pipelines are
//! compiled on first use per (kernel, word width) and cached; [`Gpu::shared`] is one
//! process-wide instance.
//!
//! **Calls.** Every kernel method uploads its inputs, dispatches, and reads the result
//! back before returning (that round trip is part of what the benchmarks time). Inputs
//! larger than one storage binding (`max_storage_buffer_binding_size`, `max_buffer_size`)
//! or than one dispatch grid (`max_compute_workgroups_per_dimension`, dispatches are 2-D)
//! are split into blocks, each uploaded, run and read back in turn. Storage and readback
//! buffers come from a per-device pool (up to 256 MB idle), so repeated calls skip the
//! allocation and first-touch cost of large buffers; inputs are written through the
//! queue. Errors the device
//! reports (validation, out of memory, lost device) come back as [`GpuError::Device`],
//! shapes the backend cannot run as [`GpuError::Unsupported`]; shape mismatches that are
//! caller bugs panic via `assert!`, as in the CPU kernels.
//!
//! **Words.** WGSL has 32-bit integers only. u32 rings map directly; u16 words are stored
//! packed two per u32 (the little-endian memory of a `&[u16]`, uploaded as is) and the
//! arithmetic runs in u32, which is exact mod 2^16 because 2^16 divides 2^32; the low 16
//! bits of each result are kept. u64 words are two u32 (low half first, again the
//! little-endian memory of the slice); the arithmetic kernels emulate Z/2^64 on
//! `vec2<u32>` (`shaders/ring64.wgsl`: carries by comparison, 32×32→64 products from
//! 16-bit limbs, several times the cost of a u32 operation).
//! `shaders/README.md` documents every shader's buffers.

mod aes;
mod dpf;

use crate::bitfc::PackedSigns;
use crate::dpf::DpfKeys;
use crate::word::Word;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a GPU call did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No usable adapter (no Vulkan driver, no device, or device creation failed).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The kernel, word width or shape is not supported by the GPU backend (the caller
    /// should use the CPU kernel).
    #[error("not supported on the GPU backend: {0}")]
    Unsupported(String),
    /// The device reported an error (validation, out of memory, mapping, lost device).
    #[error("GPU device error: {0}")]
    Device(String),
}

/// The shaders, by kernel (entry point and WGSL sources, concatenated after the
/// `const WB: u32` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    Matmul,
    Fc,
    Gather,
    Rotate,
    Onehot,
    DpfLevel,
    DpfLeaves,
}

const MATMUL_WGSL: &str = include_str!("../../../shaders/matmul.wgsl");
const FC_WGSL: &str = include_str!("../../../shaders/fc.wgsl");
const GATHER_WGSL: &str = include_str!("../../../shaders/gather.wgsl");
const ROTATE_WGSL: &str = include_str!("../../../shaders/rotate.wgsl");
const ONEHOT_WGSL: &str = include_str!("../../../shaders/onehot.wgsl");
const AES_WGSL: &str = include_str!("../../../shaders/aes.wgsl");
const RING32_WGSL: &str = include_str!("../../../shaders/ring32.wgsl");
const RING64_WGSL: &str = include_str!("../../../shaders/ring64.wgsl");
const DPF_WGSL: &str = include_str!("../../../shaders/dpf.wgsl");

impl Kernel {
    /// Whether the shader does ring arithmetic (needs the ring32 / ring64 prelude).
    fn ring(self) -> bool {
        !matches!(self, Kernel::Gather | Kernel::Rotate)
    }

    fn entry_and_sources(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Kernel::Matmul => ("main", &[MATMUL_WGSL]),
            Kernel::Fc => ("main", &[FC_WGSL]),
            Kernel::Gather => ("main", &[GATHER_WGSL]),
            Kernel::Rotate => ("main", &[ROTATE_WGSL]),
            Kernel::Onehot => ("main", &[ONEHOT_WGSL]),
            Kernel::DpfLevel => ("level", &[AES_WGSL, DPF_WGSL]),
            Kernel::DpfLeaves => ("leaves", &[AES_WGSL, DPF_WGSL]),
        }
    }
}

/// Default cap on DPF tree nodes per node buffer (16 bytes each: 64 MB).
const DPF_NODES: usize = 1 << 22;

/// A wgpu device with the kernels' pipelines. `Send + Sync`; share one (see
/// [`Gpu::shared`]) rather than creating several.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// Largest buffer, in bytes, bound as one storage binding (device limits, or a
    /// smaller cap for tests).
    max_binding: u64,
    /// `max_compute_workgroups_per_dimension`.
    max_groups: u32,
    /// Most DPF tree nodes held in one node buffer (power of two).
    dpf_nodes: usize,
    pipelines: Mutex<HashMap<(Kernel, u32), wgpu::ComputePipeline>>,
    /// Idle storage and readback buffers for reuse (see [`Pooled`]).
    pool: Mutex<Vec<wgpu::Buffer>>,
    /// T-table and fixed round keys of the DPF's AES (`shaders/aes.wgsl`).
    aes: wgpu::Buffer,
    /// Last error reported outside any error scope (normally none: every call runs in
    /// scopes); kept instead of wgpu's default handler, which panics.
    uncaptured: Arc<Mutex<Option<String>>>,
}

// The API promises a shareable device (the protocol calls kernels from rayon threads).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Gpu>();
};

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter_name())
            .field("max_binding", &self.max_binding)
            .finish()
    }
}

impl Gpu {
    /// Opens the first adapter wgpu finds, hardware before software (discrete, integrated,
    /// virtual, other, CPU), with the adapter's own limits. `WGPU_BACKEND` and the other
    /// wgpu environment variables apply. Cost: instance and device creation (tens to
    /// hundreds of ms); pipelines are compiled later, on first use.
    pub fn new() -> Result<Gpu, GpuError> {
        Self::with_caps(u64::MAX, DPF_NODES)
    }

    /// [`Gpu::new`] with artificially small buffers: at most `max_binding` bytes per
    /// storage binding and `dpf_nodes` DPF tree nodes per node buffer (rounded down to a
    /// power of two, at least 2), so tests can exercise the block splitting on small inputs.
    #[doc(hidden)]
    pub fn with_caps(max_binding: u64, dpf_nodes: usize) -> Result<Gpu, GpuError> {
        let desc = wgpu::InstanceDescriptor {
            backends: wgpu::Backends::all().with_env(),
            flags: wgpu::InstanceFlags::empty().with_env(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        };
        let instance = wgpu::Instance::new(desc);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = adapters
            .into_iter()
            .find(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .ok_or_else(|| {
                GpuError::NoAdapter("wgpu found no adapter with compute shaders".into())
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kernels::gpu"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| GpuError::NoAdapter(format!("{} ({}): {e}", info.name, info.driver)))?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(e.to_string());
            }
        }));
        let device_max =
            (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size);
        // Keep bindings a multiple of 256 bytes, so block boundaries stay word aligned.
        let max_binding = (device_max.min(max_binding) & !255).max(256);
        let dpf_nodes = {
            let cap = dpf_nodes.min((max_binding / 16) as usize).max(2);
            1usize << cap.ilog2()
        };
        let aes_words = aes::table_words();
        let gpu = Gpu {
            aes: create_init(&device, "aes", bytemuck::cast_slice(&aes_words), STORAGE_IN)?,
            device,
            queue,
            info,
            max_binding,
            max_groups: limits.max_compute_workgroups_per_dimension.max(1),
            dpf_nodes,
            pipelines: Mutex::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
            uncaptured,
        };
        Ok(gpu)
    }

    /// The process-wide instance, created on first use; a creation error is cached (as
    /// its text, in the variant it came as) and returned on every later call.
    /// Cost: one atomic load after the first call.
    pub fn shared() -> Result<&'static Gpu, GpuError> {
        static SHARED: OnceLock<Result<Gpu, GpuError>> = OnceLock::new();
        SHARED.get_or_init(Gpu::new).as_ref().map_err(Clone::clone)
    }

    /// "name / backend / device type", e.g. `llvmpipe (LLVM 15.0.6, 256 bits) / Vulkan /
    /// Cpu`. Cost: a string format.
    pub fn adapter_name(&self) -> String {
        format!(
            "{} / {:?} / {:?}",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Whether the adapter is a software renderer (wgpu `DeviceType::Cpu`: lavapipe,
    /// llvmpipe, SwiftShader); its timings say nothing about a GPU. Cost: O(1).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// C = A·B mod 2^BITS, as [`crate::matmul::matmul`] (A m×k, B k×n, row-major).
    ///
    /// Cost: upload of A and B, m·k·n multiply-adds on the device (64×64 output tiles per
    /// workgroup, 4×4 per invocation), readback of m·n u32. Blocks of rows (and of
    /// columns, when B exceeds one binding) are separate round trips. All word widths
    /// (u64 emulated). Panics if `a.len() != m·k` or `b.len() != k·n`.
    pub fn matmul<W: Word>(
        &self,
        a: &[W],
        b: &[W],
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Vec<W>, GpuError> {
        assert_eq!(a.len(), m * k, "matmul: a has the wrong length");
        assert_eq!(b.len(), k * n, "matmul: b has the wrong length");
        let mut c = vec![W::ZERO; m * n];
        if m == 0 || n == 0 || k == 0 {
            return Ok(c);
        }
        let wb = word_bytes::<W>();
        let cap = self.max_binding;
        let tile_limit = 64 * self.max_groups as u64;
        // Columns per block: all of B if it fits, else multiples of 32 columns.
        let mut nb = (cap / (k as u64 * wb)).min(tile_limit).min(n as u64);
        if nb < n as u64 && nb >= 64 {
            nb = nb / 64 * 64; // whole workgroup tiles
        }
        // Rows per block: the A block and the u32 C block must fit.
        let per_row = (k as u64 * wb).max(nb * out_bytes::<W>());
        let mut mb = (cap / per_row).min(tile_limit).min(m as u64);
        if mb < m as u64 && mb >= 64 {
            mb = mb / 64 * 64;
        }
        if nb == 0 || mb == 0 {
            return Err(GpuError::Unsupported(format!(
                "matmul: k = {k} is too deep for one storage binding of {cap} bytes"
            )));
        }
        let (nb, mb) = (nb as usize, mb as usize);
        self.scoped(|| {
            let pipe = self.pipeline(Kernel::Matmul, W::BITS)?;
            for jc in (0..n).step_by(nb) {
                let ncols = nb.min(n - jc);
                let bblk: Vec<W>;
                let bsrc: &[W] = if ncols == n {
                    b
                } else {
                    bblk = b
                        .chunks_exact(n)
                        .flat_map(|row| &row[jc..jc + ncols])
                        .copied()
                        .collect();
                    &bblk
                };
                let bbuf = self.upload(bsrc)?;
                for ic in (0..m).step_by(mb) {
                    let nrows = mb.min(m - ic);
                    let abuf = self.upload(&a[ic * k..(ic + nrows) * k])?;
                    let cbuf = self.output(nrows as u64 * ncols as u64 * out_bytes::<W>())?;
                    let mut enc = self.encoder();
                    self.dispatch(
                        &mut enc,
                        &pipe,
                        &[nrows as u32, k as u32, ncols as u32, 0],
                        &[(1, &abuf), (2, &bbuf), (3, &cbuf)],
                        (ncols.div_ceil(64) as u32, nrows.div_ceil(64) as u32),
                    )?;
                    let vals: Vec<W> = self.read_ring(enc, &cbuf, nrows * ncols)?;
                    for (r, row) in vals.chunks_exact(ncols).enumerate() {
                        c[(ic + r) * n + jc..][..ncols].copy_from_slice(row);
                    }
                }
            }
            Ok(())
        })?;
        Ok(c)
    }

    /// Y = X·S mod 2^BITS for the packed sign matrix `w`, as [`crate::bitfc::fc`] (X is
    /// n × d_in row-major; returns n × d_out).
    ///
    /// Cost: upload of X and the packed signs, n·d_in·d_out selects and adds on the device
    /// (64×64 output tiles per workgroup, 4×4 per invocation), readback of n·d_out u32 (u64 words for u64);
    /// blocks of rows and of output columns as needed for the binding size. All word
    /// widths. Panics on the CPU kernel's preconditions.
    pub fn fc<W: Word>(&self, x: &[W], n: usize, w: &PackedSigns) -> Result<Vec<W>, GpuError> {
        let (d_in, d_out) = (w.d_in, w.d_out);
        assert_eq!(x.len(), n * d_in, "fc: x.len() != n·d_in");
        let wpc = w.words_per_col();
        assert_eq!(w.words.len(), d_out * wpc, "fc: bad PackedSigns length");
        let mut y = vec![W::ZERO; n * d_out];
        if n == 0 || d_out == 0 || d_in == 0 {
            return Ok(y);
        }
        let wb = word_bytes::<W>();
        let cap = self.max_binding;
        let signs: &[u32] = bytemuck::cast_slice(&w.words);
        let wpc32 = 2 * wpc;
        let mut cb = (cap / (wpc32 as u64 * 4))
            .min(64 * self.max_groups as u64)
            .min(d_out as u64);
        if cb < d_out as u64 && cb >= 64 {
            cb = cb / 64 * 64; // whole workgroup tiles
        }
        let per_row = (d_in as u64 * wb).max(cb * out_bytes::<W>());
        let mut rb = (cap / per_row)
            .min(64 * self.max_groups as u64)
            .min(n as u64);
        if rb < n as u64 && rb >= 64 {
            rb = rb / 64 * 64;
        }
        if cb == 0 || rb == 0 {
            return Err(GpuError::Unsupported(format!(
                "fc: d_in = {d_in} is too wide for one storage binding of {cap} bytes"
            )));
        }
        let (cb, rb) = (cb as usize, rb as usize);
        self.scoped(|| {
            let pipe = self.pipeline(Kernel::Fc, W::BITS)?;
            for c0 in (0..d_out).step_by(cb) {
                let ncols = cb.min(d_out - c0);
                let sbuf = self.upload(&signs[c0 * wpc32..(c0 + ncols) * wpc32])?;
                for r0 in (0..n).step_by(rb) {
                    let nrows = rb.min(n - r0);
                    let xbuf = self.upload(&x[r0 * d_in..(r0 + nrows) * d_in])?;
                    let ybuf = self.output(nrows as u64 * ncols as u64 * out_bytes::<W>())?;
                    let mut enc = self.encoder();
                    self.dispatch(
                        &mut enc,
                        &pipe,
                        &[nrows as u32, d_in as u32, ncols as u32, wpc32 as u32],
                        &[(1, &xbuf), (2, &sbuf), (3, &ybuf)],
                        (ncols.div_ceil(64) as u32, nrows.div_ceil(64) as u32),
                    )?;
                    let vals: Vec<W> = self.read_ring(enc, &ybuf, nrows * ncols)?;
                    for (r, row) in vals.chunks_exact(ncols).enumerate() {
                        y[(r0 + r) * d_out + c0..][..ncols].copy_from_slice(row);
                    }
                }
            }
            Ok(())
        })?;
        Ok(y)
    }

    /// Per-lookup gather `out[i] = tables[i·2^k + idx[i]]`, as [`crate::lut::gather`].
    ///
    /// Cost: upload of all tables (n·2^k words: the dominant cost) and the indices, one
    /// read per lookup on the device, readback of n words; blocks of lookups as needed
    /// for the binding size. All word widths. Panics on the CPU kernel's preconditions
    /// (including an index >= 2^k).
    pub fn gather<W: Word>(&self, tables: &[W], k: u32, idx: &[u32]) -> Result<Vec<W>, GpuError> {
        assert!(k < 32, "gather: k >= 32");
        assert_eq!(
            tables.len(),
            idx.len() << k,
            "gather: tables.len() != idx.len()·2^k"
        );
        let size = 1u64 << k;
        assert!(
            idx.iter().all(|&i| (i as u64) < size),
            "gather: index out of range"
        );
        self.gather_impl(tables, k, 0, idx, None)
    }

    /// Per-lookup 2-D gather `out[i] = tables[i·2^(kx+ky) + ix[i]·2^ky + iy[i]]`, as
    /// [`crate::lut::gather2`].
    ///
    /// Cost: as [`Gpu::gather`]. All word widths. Panics on the CPU kernel's
    /// preconditions.
    pub fn gather2<W: Word>(
        &self,
        tables: &[W],
        kx: u32,
        ky: u32,
        ix: &[u32],
        iy: &[u32],
    ) -> Result<Vec<W>, GpuError> {
        assert_eq!(ix.len(), iy.len(), "gather2: ix and iy lengths differ");
        let k = kx + ky;
        assert!(k < 32, "gather2: kx + ky >= 32");
        assert_eq!(
            tables.len(),
            ix.len() << k,
            "gather2: tables.len() != n·2^(kx+ky)"
        );
        assert!(
            ix.iter().all(|&a| (a as u64) >> kx == 0) && iy.iter().all(|&b| (b as u64) >> ky == 0),
            "gather2: index out of range"
        );
        self.gather_impl(tables, k, ky, ix, Some(iy))
    }

    fn gather_impl<W: Word>(
        &self,
        tables: &[W],
        k: u32,
        ky: u32,
        ix: &[u32],
        iy: Option<&[u32]>,
    ) -> Result<Vec<W>, GpuError> {
        let n = ix.len();
        let mut out = vec![W::ZERO; n];
        if n == 0 {
            return Ok(out);
        }
        let per_lookup = (1u64 << k) * word_bytes::<W>();
        let chunk = self.lookups_per_block::<W>(per_lookup, "gather")?;
        self.scoped(|| {
            let pipe = self.pipeline(Kernel::Gather, W::BITS)?;
            for i0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - i0);
                let tbuf = self.upload(&tables[i0 << k..(i0 + c) << k])?;
                let xbuf = self.upload(&ix[i0..i0 + c])?;
                let ybuf = match iy {
                    Some(iy) => Some(self.upload(&iy[i0..i0 + c])?),
                    None => None,
                };
                let obuf = self.output(c as u64 * word_bytes::<W>())?;
                let threads = if W::BITS == 16 { c.div_ceil(2) } else { c };
                let mut enc = self.encoder();
                self.dispatch_linear(
                    &mut enc,
                    &pipe,
                    &[c as u32, k, ky, iy.is_some() as u32],
                    &[
                        (1, &tbuf),
                        (2, &xbuf),
                        (3, ybuf.as_ref().unwrap_or(&xbuf)),
                        (4, &obuf),
                    ],
                    threads.div_ceil(64) as u64,
                )?;
                let vals: Vec<W> = self.read_back(enc, &obuf, c)?;
                out[i0..i0 + c].copy_from_slice(&vals);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// One public table against per-lookup vectors,
    /// `out[i] = Σ_j table[(idx[i] − j) mod 2^k] · u[i·2^k + j]`, as
    /// [`crate::lut::onehot_dot`].
    ///
    /// Cost: upload of the table and of u (n·2^k words: the dominant cost), n·2^k
    /// multiply-adds on the device (a loop per lookup for 2^k <= 256, else a workgroup
    /// per lookup), readback of n u32 (u64 words for u64); blocks of lookups as needed.
    /// All word widths. Panics on the CPU kernel's preconditions.
    pub fn onehot_dot<W: Word>(
        &self,
        table: &[W],
        k: u32,
        idx: &[u32],
        u: &[W],
    ) -> Result<Vec<W>, GpuError> {
        assert!(k < 32, "onehot_dot: k >= 32");
        assert_eq!(table.len(), 1usize << k, "onehot_dot: table.len() != 2^k");
        assert_eq!(
            u.len(),
            idx.len() << k,
            "onehot_dot: u.len() != idx.len()·2^k"
        );
        let n = idx.len();
        let mut out = vec![W::ZERO; n];
        if n == 0 {
            return Ok(out);
        }
        let size = 1usize << k;
        let chunk = self.lookups_per_block::<W>(size as u64 * word_bytes::<W>(), "onehot_dot")?;
        self.scoped(|| {
            let pipe = self.pipeline(Kernel::Onehot, W::BITS)?;
            let tbuf = self.upload(table)?;
            for i0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - i0);
                let ubuf = self.upload(&u[i0 << k..(i0 + c) << k])?;
                let ibuf = self.upload(&idx[i0..i0 + c])?;
                let obuf = self.output(c as u64 * out_bytes::<W>())?;
                // Small tables: one lookup per invocation; large: one per workgroup.
                let groups = if size <= 256 { c.div_ceil(256) } else { c };
                let mut enc = self.encoder();
                self.dispatch_linear(
                    &mut enc,
                    &pipe,
                    &[c as u32, k, 0, 0],
                    &[(1, &tbuf), (2, &ibuf), (3, &ubuf), (4, &obuf)],
                    groups as u64,
                )?;
                let vals: Vec<W> = self.read_ring(enc, &obuf, c)?;
                out[i0..i0 + c].copy_from_slice(&vals);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Batched fused DPF expand-and-dot, as [`crate::dpf::eval_dot_batch`]:
    /// `out[i] = eval_dot(keys[i], table, xs[i])`.
    ///
    /// Cost: upload of the table and the keys' correction words; on the device, per key,
    /// 2^d − 1 PRG doublings (2 AES each, one dispatch per tree level for a group of
    /// keys) and 2^d leaf conversions (ceil(2^nu/E) <= 4 AES each, E = 128/BITS) fused
    /// with the 2^k multiply-adds;
    /// readback of one u32 per key (or per subtree of a large tree; u64 words for u64).
    /// All word widths. Panics on the CPU function's preconditions.
    pub fn dpf_eval_dot_batch<W: Word>(
        &self,
        keys: &DpfKeys<W>,
        table: &[W],
        xs: &[u32],
    ) -> Result<Vec<W>, GpuError> {
        let k = keys.k();
        let ys = vec![0u32; xs.len()];
        dpf::eval_dot2_batch(self, keys, table, 0, k, &ys, xs)
    }

    /// Batched two-input fused DPF dot, as [`crate::dpf::eval_dot2_batch`]:
    /// `out[i] = eval_dot2(keys[i], table, kx, ky, xs[i], ys[i])`.
    ///
    /// Cost: as [`Gpu::dpf_eval_dot_batch`]. All word widths. Panics on the CPU function's
    /// preconditions.
    pub fn dpf_eval_dot2_batch<W: Word>(
        &self,
        keys: &DpfKeys<W>,
        table: &[W],
        kx: u32,
        ky: u32,
        xs: &[u32],
        ys: &[u32],
    ) -> Result<Vec<W>, GpuError> {
        dpf::eval_dot2_batch(self, keys, table, kx, ky, xs, ys)
    }

    /// The dealer's rotated tables: `rhos.len()` copies of `table` (2^k words), copy r
    /// equal to `crate::lut::rotate_table(table, k, rhos[r])`, concatenated.
    ///
    /// Cost: upload of the table and the rotations, one copy per output word on the
    /// device, readback of rhos.len()·2^k words (the dominant cost); blocks of copies as
    /// needed. All word widths. Panics if `table.len() != 2^k`.
    pub fn rotate_tables<W: Word>(
        &self,
        table: &[W],
        k: u32,
        rhos: &[u32],
    ) -> Result<Vec<W>, GpuError> {
        assert!(k < 32, "rotate_tables: k >= 32");
        assert_eq!(
            table.len(),
            1usize << k,
            "rotate_tables: table.len() != 2^k"
        );
        let size = 1usize << k;
        let total = rhos.len() * size;
        let mut out = vec![W::ZERO; total];
        if total == 0 {
            return Ok(out);
        }
        let wb = word_bytes::<W>();
        if size as u64 * wb > self.max_binding {
            return Err(GpuError::Unsupported(format!(
                "rotate_tables: a table of 2^{k} words exceeds one storage binding"
            )));
        }
        let chunk = self.lookups_per_block::<W>(size as u64 * wb, "rotate_tables")?;
        self.scoped(|| {
            let pipe = self.pipeline(Kernel::Rotate, W::BITS)?;
            let tbuf = self.upload(table)?;
            for r0 in (0..rhos.len()).step_by(chunk) {
                let c = chunk.min(rhos.len() - r0);
                let words = c * size;
                let rbuf = self.upload(&rhos[r0..r0 + c])?;
                let obuf = self.output(words as u64 * wb)?;
                let threads = if W::BITS == 16 {
                    words.div_ceil(2)
                } else {
                    words
                };
                let mut enc = self.encoder();
                self.dispatch_linear(
                    &mut enc,
                    &pipe,
                    &[words as u32, k, 0, 0],
                    &[(1, &tbuf), (2, &rbuf), (3, &obuf)],
                    threads.div_ceil(64) as u64,
                )?;
                let vals: Vec<W> = self.read_back(enc, &obuf, words)?;
                out[r0 * size..(r0 + c) * size].copy_from_slice(&vals);
            }
            Ok(())
        })?;
        Ok(out)
    }

    // ---- plumbing -------------------------------------------------------------------

    /// Lookups (of `per_lookup` bytes of table data each) per block: as many as fit one
    /// binding, even for u16 so that packed blocks start on a u32 boundary.
    fn lookups_per_block<W: Word>(&self, per_lookup: u64, what: &str) -> Result<usize, GpuError> {
        let mut c = self.max_binding / per_lookup.max(1);
        // Indices and outputs (4 or 8 bytes per lookup) must fit too.
        c = c.min(self.max_binding / 8);
        // Dispatch grid: 64 lookups per workgroup at most, 2-D.
        c = c.min(self.max_groups as u64 * self.max_groups as u64);
        if W::BITS == 16 {
            c &= !1;
        }
        if c == 0 {
            return Err(GpuError::Unsupported(format!(
                "{what}: one table of {per_lookup} bytes exceeds one storage binding of {} bytes",
                self.max_binding
            )));
        }
        Ok(c.min(u32::MAX as u64 / 2) as usize)
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and turns the
    /// first captured error (or one reported outside any scope) into
    /// [`GpuError::Device`].
    fn scoped<T>(&self, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let int = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let r = f();
        let e_int = pollster::block_on(int.pop());
        let e_val = pollster::block_on(val.pop());
        let e_oom = pollster::block_on(oom.pop());
        if let Some(e) = e_int.or(e_val).or(e_oom) {
            return Err(GpuError::Device(e.to_string()));
        }
        if let Some(e) = self.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            return Err(GpuError::Device(e));
        }
        r
    }

    /// The cached pipeline of `kernel` for words of `bits` bits, compiled on first use.
    fn pipeline(&self, kernel: Kernel, bits: u32) -> Result<wgpu::ComputePipeline, GpuError> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| GpuError::Device("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(&(kernel, bits)) {
            return Ok(p.clone());
        }
        let (entry, sources) = kernel.entry_and_sources();
        let mut src = format!("const WB: u32 = {bits}u;\n");
        if kernel.ring() {
            src.push_str(if bits == 64 { RING64_WGSL } else { RING32_WGSL });
            src.push('\n');
        }
        for s in sources {
            src.push_str(s);
            src.push('\n');
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipe = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[],
                    // Every shader writes its workgroup arrays before reading them.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Device(format!(
                "compiling {kernel:?} for u{bits}: {e}"
            )));
        }
        cache.insert((kernel, bits), pipe.clone());
        Ok(pipe)
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    /// A storage buffer holding `data` (padded with zeros to a multiple of 4 bytes, at
    /// least 4), from the pool, written through the queue.
    fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Pooled<'_>, GpuError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(bytes.len() as u64)?;
        let whole = bytes.len() & !3;
        if whole > 0 {
            self.queue.write_buffer(&buf, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buf, whole as u64, &tail);
        }
        Ok(buf)
    }

    /// A storage buffer of at least `bytes` bytes for a shader to write (contents
    /// undefined: every shader writes all the outputs the host reads).
    fn output(&self, bytes: u64) -> Result<Pooled<'_>, GpuError> {
        self.storage(bytes)
    }

    /// A storage buffer of at least `bytes` bytes (at most one binding) from the pool.
    fn storage(&self, bytes: u64) -> Result<Pooled<'_>, GpuError> {
        let size = pad4(bytes);
        if size > self.max_binding.max(256) {
            return Err(GpuError::Unsupported(format!(
                "buffer of {size} bytes exceeds one storage binding"
            )));
        }
        Ok(Pooled {
            buf: self.take(size, STORAGE_IN),
            gpu: self,
        })
    }

    /// Size class of a pooled buffer: the next power of two (at least 256 bytes), or the
    /// exact size past the largest binding.
    fn size_class(&self, size: u64) -> u64 {
        let c = size.next_power_of_two().max(256);
        if c <= self.max_binding {
            c
        } else {
            size
        }
    }

    /// An idle buffer of `size`'s class and `usage`, or a new one.
    fn take(&self, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let size = self.size_class(size);
        if let Ok(mut free) = self.pool.lock() {
            if let Some(i) = free
                .iter()
                .position(|b| b.size() == size && b.usage() == usage)
            {
                return free.swap_remove(i);
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    }

    /// Returns an idle (unmapped) buffer to the pool, evicting the oldest ones beyond
    /// [`POOL_BYTES`].
    fn give(&self, buf: wgpu::Buffer) {
        if let Ok(mut free) = self.pool.lock() {
            let mut total = free.iter().map(|b| b.size()).sum::<u64>() + buf.size();
            while total > POOL_BYTES && !free.is_empty() {
                total -= free.remove(0).size();
            }
            if total <= POOL_BYTES {
                free.push(buf);
            }
        }
    }

    /// Records one dispatch of `groups.0 × groups.1` workgroups with `params` (u32s, the
    /// shader's uniform `Params` at binding 0) and the given storage bindings.
    fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        bindings: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) -> Result<(), GpuError> {
        if groups.0 == 0 || groups.1 == 0 {
            return Ok(());
        }
        if groups.0 > self.max_groups || groups.1 > self.max_groups {
            return Err(GpuError::Unsupported(format!(
                "dispatch of {groups:?} workgroups exceeds the device limit {}",
                self.max_groups
            )));
        }
        let pbuf = create_init(
            &self.device,
            "params",
            bytemuck::cast_slice(params),
            wgpu::BufferUsages::UNIFORM,
        )?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: pbuf.as_entire_binding(),
        }];
        entries.extend(bindings.iter().map(|&(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        }));
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        Ok(())
    }

    /// [`Gpu::dispatch`] of `groups` workgroups numbered linearly (the shader computes
    /// `wid.x + wid.y · num_workgroups.x` and ignores the ids past `groups`).
    fn dispatch_linear(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        bindings: &[(u32, &wgpu::Buffer)],
        groups: u64,
    ) -> Result<(), GpuError> {
        let x = groups.min(self.max_groups as u64);
        let y = if x == 0 { 0 } else { groups.div_ceil(x) };
        if y > self.max_groups as u64 {
            return Err(GpuError::Unsupported(format!(
                "{groups} workgroups exceed the 2-D dispatch limit"
            )));
        }
        self.dispatch(enc, pipe, params, bindings, (x as u32, y as u32))
    }

    /// Reads back `count` ring outputs written one u32 each (two for u64) and keeps
    /// the low BITS bits.
    fn read_ring<W: Word>(
        &self,
        enc: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        count: usize,
    ) -> Result<Vec<W>, GpuError> {
        Ok(if W::BITS == 64 {
            let v: Vec<u64> = self.read_back(enc, src, count)?;
            v.into_iter().map(W::from_u64).collect()
        } else {
            let v: Vec<u32> = self.read_back(enc, src, count)?;
            v.into_iter().map(|x| W::from_u64(x as u64)).collect()
        })
    }

    /// Copies the first `count` elements of type `T` of `src` to a staging buffer at the
    /// end of `enc`, submits, waits and returns them.
    fn read_back<T: bytemuck::Pod + Default>(
        &self,
        mut enc: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        count: usize,
    ) -> Result<Vec<T>, GpuError> {
        let bytes = (count * std::mem::size_of::<T>()) as u64;
        let size = pad4(bytes);
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let staging = self.take(size, usage);
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Device(e.to_string()))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Device(format!("readback: {e}"))),
            Err(_) => return Err(GpuError::Device("readback: mapping never completed".into())),
        }
        let mut out = vec![T::default(); count];
        {
            let view = staging
                .get_mapped_range(0..size)
                .map_err(|e| GpuError::Device(format!("readback: {e}")))?;
            bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&view[..bytes as usize]);
        }
        staging.unmap();
        // Only a buffer that was read and unmapped goes back to the pool.
        self.give(staging);
        Ok(out)
    }
}

/// Most bytes of idle buffers the pool keeps (per device).
const POOL_BYTES: u64 = 256 << 20;

/// A buffer from the device's pool, returned to it when dropped. Every call waits for its
/// device work before returning, and all work goes through one queue in order, so a
/// buffer handed out again is never still in use by an earlier call. Reuse saves the
/// allocation and first-touch cost of large buffers on every call.
struct Pooled<'g> {
    buf: wgpu::Buffer,
    gpu: &'g Gpu,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buf
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        self.gpu.give(self.buf.clone());
    }
}

/// Usage of every storage buffer: bound to shaders, filled by mapping or copies, read
/// back by copies.
const STORAGE_IN: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

fn pad4(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

fn word_bytes<W: Word>() -> u64 {
    (W::BITS / 8) as u64
}

/// Bytes per ring output of the arithmetic kernels: one u32, or two for u64.
fn out_bytes<W: Word>() -> u64 {
    if W::BITS == 64 {
        8
    } else {
        4
    }
}

/// A buffer with `usage` holding `bytes`, zero-padded to a multiple of 4 (at least 4):
/// created mapped and filled in place (no staging copy).
fn create_init(
    device: &wgpu::Device,
    label: &str,
    bytes: &[u8],
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer, GpuError> {
    let size = pad4(bytes.len() as u64);
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: true,
    });
    {
        let mut view = buf
            .get_mapped_range_mut(..)
            .map_err(|e| GpuError::Device(format!("mapping {label}: {e}")))?;
        view.slice(..bytes.len()).copy_from_slice(bytes);
        if size as usize > bytes.len() {
            let pad = [0u8; 4];
            view.slice(bytes.len()..)
                .copy_from_slice(&pad[..size as usize - bytes.len()]);
        }
    }
    buf.unmap();
    Ok(buf)
}
