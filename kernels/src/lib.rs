//! Hot kernels of the secure BERT engine, generic over the ring word ([`word::Word`]:
//! `u16`, `u32`, `u64` as Z/2^l).
//!
//! - [`matmul`]: ring matrix products (offline `<r_X> E_W`, secret x secret products).
//! - [`bitfc`]: the 1-bit fully connected layer `X^ W`, W in {-1, +1}, bit-packed.
//! - [`lut`]: lookup-table kernels (rotated-table gathers, one-hot dot products).
//! - [`prg`]: fixed-key AES PRG for the DPF tree and AES-CTR seed expansion.
//! - [`dpf`]: BGI distributed point functions with Z/2^l outputs and a fused
//!   expand-and-dot evaluation (the batched LUT kernel of DPF mode).
//! - [`dcf`]: distributed comparison functions (Boyle et al., Eurocrypt 2021) with Z/2^l
//!   outputs, batched level-synchronous generation and evaluation.
//! - [`gpu`]: the same kernels as WGSL compute shaders through `wgpu` (bit-identical).
//!
//! - [`backend`]: the backend choice (`Auto`, `Cpu`, `Gpu`, `Scalar`), the CPU SIMD
//!   level, the kernels' rayon pool and the run-report line ([`describe`]).
//! - [`ops`]: the dispatching entry points the protocol calls (same bits on every
//!   backend).
//!
//! Each kernel has these CPU forms: a scalar reference (`*_scalar`: naive loops, the
//! `Scalar` backend and the test oracle); on x86_64 explicit AVX-512 intrinsics
//! (`#[target_feature]` functions chosen at run time: matmul micro-tiles, 1-bit FC as
//! masked adds, `vpgather` lookups, one-hot dot products, and in the DPF fixed-key
//! VAES/AES-NI with fused tree levels and leaf products, private module `fastaes`); on
//! aarch64 explicit NEON intrinsics (matmul micro-tiles for u16/u32, the 1-bit FC for
//! every width, one-hot dot products for u16/u32, and in the DPF fixed-key AES with the
//! ARMv8 AES instructions, private module `armaes`; the u64 products, the gathers and the
//! rest stay portable, see [`backend`]); and portable Rust written so the compiler
//! vectorises it, compiled a second time with AVX2 enabled on x86_64 (`simd_dispatch!`).
//! `*_with(simd, ..)` forces a level (tests and benchmarks exercise every level the CPU
//! has). Large inputs are parallelised with rayon, small ones run sequentially. Shape
//! mismatches are caller bugs and panic via `assert!`.

#![warn(missing_docs)]

/// Compiles a generic `#[inline(always)]` body twice on x86_64, once as is and once
/// with AVX2 enabled; the generated function takes the SIMD level
/// ([`backend::Simd`]) as an extra first argument and runs the AVX2 build for `Avx2` and
/// above (tests force each level). The body is the same portable Rust; only the
/// instruction selection differs (e.g. `vpmulld` for u32 products, 8-wide lanes).
macro_rules! simd_dispatch {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident < $($gen:ident : $bound:path),* > ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? => $body:ident
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$($gen: $bound),*>(simd: crate::backend::Simd, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<$($gen: $bound),*>($($arg: $ty),*) $(-> $ret)? {
                    $body::<$($gen),*>($($arg),*)
                }
                if simd >= crate::backend::Simd::Avx2 {
                    simd.check();
                    // SAFETY: the CPU supports AVX2 (`check` panics otherwise); the body
                    // is safe Rust, the attribute only changes instruction selection.
                    return unsafe { avx2::<$($gen),*>($($arg),*) };
                }
            }
            let _ = simd;
            $body::<$($gen),*>($($arg),*)
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod armaes;
pub mod backend;
pub mod bitfc;
pub mod dcf;
pub mod dpf;
#[cfg(target_arch = "x86_64")]
mod fastaes;
pub mod gpu;
pub mod lut;
pub mod matmul;
pub mod ops;
pub mod prg;
pub mod word;

pub use word::Word;

pub use backend::{describe, Backend};

/// The backend line of run reports: the selected [`Backend`] and what it resolves to on
/// this machine (see [`backend::describe`]).
pub fn cpu_backend() -> String {
    backend::describe()
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::word::Word;
    use rand::Rng;

    /// Random words with a good share of edge values (0, 1, MAX, 2^(BITS-1)).
    pub(crate) fn rand_words<W: Word>(rng: &mut impl Rng, len: usize) -> Vec<W> {
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
}
