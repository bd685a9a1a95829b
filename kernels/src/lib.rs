//! Hot kernels of the secure BERT engine, generic over the ring word ([`word::Word`]:
//! `u16`, `u32`, `u64` as Z/2^l).
//!
//! - [`matmul`]: ring matrix products (offline `<r_X> E_W`, secret x secret products).
//! - [`bitfc`]: the 1-bit fully connected layer `X^ W`, W in {-1, +1}, bit-packed.
//! - [`lut`]: lookup-table kernels (rotated-table gathers, one-hot dot products).
//! - [`prg`]: fixed-key AES PRG for the DPF tree and AES-CTR seed expansion.
//! - [`dpf`]: BGI distributed point functions with Z/2^l outputs and a fused
//!   expand-and-dot evaluation (the batched LUT kernel of DPF mode).
//!
//! All kernels are plain portable Rust written so the compiler vectorises their inner
//! loops (contiguous, fixed-width accumulator blocks); the hottest loops are additionally
//! compiled a second time with AVX2 enabled and selected at run time (same source, no
//! intrinsics; see `simd_dispatch!`). The exception is the DPF: its fixed-key AES, tree
//! levels, leaf conversion and table product have x86_64 intrinsics paths (VAES +
//! AVX-512, AES-NI; private module `fastaes`) chosen at run time, with the portable code
//! as fallback and as the reference the tests compare them with. Large inputs are
//! parallelised with rayon, small ones run sequentially. Shape mismatches are caller bugs
//! and panic via `assert!`.

#![warn(missing_docs)]

/// Compiles a generic `#[inline(always)]` body twice on x86_64, once as is and once
/// with AVX2 enabled, and picks at run time. The body is the same portable Rust; only
/// the instruction selection differs (e.g. `vpmulld` for u32 products, 8-wide lanes).
macro_rules! simd_dispatch {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident < $($gen:ident : $bound:path),* > ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? => $body:ident
    ) => {
        $(#[$meta])*
        $vis fn $name<$($gen: $bound),*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<$($gen: $bound),*>($($arg: $ty),*) $(-> $ret)? {
                    $body::<$($gen),*>($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above); the body is
                    // safe Rust, the attribute only changes instruction selection.
                    return unsafe { avx2::<$($gen),*>($($arg),*) };
                }
            }
            $body::<$($gen),*>($($arg),*)
        }
    };
}

pub mod bitfc;
pub mod dpf;
#[cfg(target_arch = "x86_64")]
mod fastaes;
pub mod lut;
pub mod matmul;
pub mod prg;
pub mod word;

pub use word::Word;

/// A short description of the CPU code paths the kernels use on this machine, for run
/// reports: the AES backend of the DPF PRG and whether the AVX2 builds of the hot loops
/// are active.
pub fn cpu_backend() -> String {
    let aes = match prg::Prg::fixed().backend() {
        prg::Backend::Portable => "aes-crate",
        prg::Backend::AesNi => "aes-ni",
        prg::Backend::Vaes512 => "vaes-avx512",
    };
    #[cfg(target_arch = "x86_64")]
    let simd = if std::is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "sse2"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd = "portable";
    format!("cpu ({simd} loops, {aes} PRG)")
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
