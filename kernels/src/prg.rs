//! Fixed-key AES-128 PRG for the DPF tree, and AES-CTR seed expansion.
//!
//! **DPF PRG.** Seeds are 128-bit blocks, held as `u128` whose little-endian bytes are the
//! AES block. The length-doubling PRG is Matyas–Meyer–Oseas under three fixed public keys
//! (nothing-up-my-sleeve: consecutive 128-bit words of the hexadecimal expansion of pi):
//! `G(s) = (AES_k0(s) ⊕ s, AES_k1(s) ⊕ s)`; the DPF takes the least significant bit of each
//! half as its control bit and clears it in the child seed (so seeds carry 127 bits of
//! entropy, as in standard fixed-key DPF implementations). The leaf conversion is
//! `AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i` for the leaf's blocks i = 0..4 (δ_i = i·2^64, see
//! `crate::dpf::leaf_tweak`), read as 128/BITS little-endian ring words each. Fixed keys mean one key
//! schedule for the whole process; every function here works on slices so AES runs on
//! many independent blocks at a time. Security rests on AES as a (fixed-key) random
//! permutation, the usual assumption of fixed-key DPF implementations.
//!
//! **Implementations.** The fixed-key AES runs on one of four backends, chosen once per
//! process (see [`Prg::fixed`]): VAES on 512-bit registers (4 blocks per instruction, 32
//! blocks in flight; x86_64 with VAES and AVX-512), AES-NI intrinsics (8 blocks in flight),
//! the ARMv8 AES instructions (`aese`/`aesmc`, 8 blocks in flight; aarch64 with the AES
//! extension), or the `aes` crate (portable fallback, any target). They compute the same
//! bits; the DPF's tree-level and leaf-conversion steps are fused kernels (AES,
//! feed-forward XOR, control-bit correction and word-wise output correction in one pass;
//! modules `fastaes` and `armaes`), and the tests compare every backend against the
//! portable one and against known answers. The fused leaf-conversion-and-dot kernel is
//! VAES only; elsewhere the evaluators convert the leaves and then run the dot product.
//!
//! **Seed expansion.** [`expand_seed`] is AES-128 in counter mode keyed by the 16-byte seed:
//! block i = AES_seed(i as 128-bit little-endian), words taken little-endian. It is
//! deterministic and platform independent (the dealer sends the seed, the party expands
//! it), parallelisable by counter range, and several GB/s with AES-NI.

use crate::word::Word;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The fixed keys k0, k1 (PRG halves) and k2 (leaf conversion): the first 384 bits of
/// the fractional part of pi.
const FIXED_KEYS: [u128; 3] = [
    0x243F_6A88_85A3_08D3_1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0_082E_FA98_EC4E_6C89,
    0x4528_21E6_38D0_1377_BE54_66CF_34E9_0C6C,
];

/// Blocks processed per AES call batch in the streaming helpers (a multiple of the 8
/// blocks AES-NI pipelines).
const BATCH: usize = 64;

/// How the fixed-key AES of the DPF is computed. All backends give the same bits; they
/// are ordered slowest first within a CPU family (`Armv8` is aarch64 only, `AesNi` and
/// `Vaes512` x86_64 only, so they never compete), and a backend is only used if the CPU
/// supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AesImpl {
    /// The `aes` crate, any target (AES-NI inside on x86_64; on aarch64 its software
    /// implementation, as the crate's ARMv8 code needs the `aes_armv8` cfg flag).
    Portable,
    /// ARMv8 Cryptography Extension intrinsics (`aese`/`aesmc`), 8 blocks in flight
    /// (aarch64 with the AES instructions).
    Armv8,
    /// AES-NI intrinsics, 8 blocks in flight (x86_64 with AES-NI).
    AesNi,
    /// VAES on 512-bit registers, 32 blocks in flight (x86_64 with VAES + AVX-512F/BW/DQ).
    Vaes512,
}

impl AesImpl {
    /// The fastest backend this CPU supports.
    fn detect() -> AesImpl {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("sse2") {
                if std::is_x86_feature_detected!("vaes")
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                {
                    return AesImpl::Vaes512;
                }
                return AesImpl::AesNi;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon")
                && std::arch::is_aarch64_feature_detected!("aes")
            {
                return AesImpl::Armv8;
            }
        }
        AesImpl::Portable
    }

    /// Whether a CPU whose fastest backend is `hw` runs this one.
    fn runs_on(self, hw: AesImpl) -> bool {
        match self {
            AesImpl::Portable => true,
            AesImpl::Armv8 => hw == AesImpl::Armv8,
            AesImpl::AesNi | AesImpl::Vaes512 => hw >= AesImpl::AesNi && self <= hw,
        }
    }

    /// The lower-case name, as run reports print it.
    pub fn name(self) -> &'static str {
        match self {
            AesImpl::Portable => "aes-crate",
            AesImpl::Armv8 => "armv8-aes",
            AesImpl::AesNi => "aes-ni",
            AesImpl::Vaes512 => "vaes-avx512",
        }
    }
}

/// The DPF PRG: three fixed-key AES-128 instances. Obtain it with [`Prg::fixed`].
pub struct Prg {
    k: [Aes128; 3],
    /// Expanded round keys of the three fixed keys (for the intrinsics backends; all
    /// zero when the CPU has no AES-NI, in which case only `Portable` is ever used).
    rk: [[u128; 11]; 3],
    /// The fastest backend the CPU supports.
    hw: AesImpl,
    /// The backend used by default: `hw`, or lower if `KERNELS_AES` asks for it.
    best: AesImpl,
}

impl Prg {
    /// The process-wide PRG under the fixed public keys (key schedules computed once).
    /// The AES implementation is chosen once per process: on x86_64 VAES + AVX-512, else
    /// AES-NI intrinsics; on aarch64 the ARMv8 AES instructions; else the `aes` crate.
    /// The environment variable `KERNELS_AES` (`portable`, `armv8`, `aesni`, `vaes`) caps
    /// it (the best supported backend not above the cap; never a faster one than the CPU
    /// supports, and another family's name leaves the `aes` crate). All choices give
    /// bit-identical results. Cost: one atomic load after the first call.
    pub fn fixed() -> &'static Prg {
        static PRG: OnceLock<Prg> = OnceLock::new();
        PRG.get_or_init(|| {
            let hw = AesImpl::detect();
            let cap = match std::env::var("KERNELS_AES").as_deref() {
                Ok("portable") => AesImpl::Portable,
                Ok("armv8") => AesImpl::Armv8,
                Ok("aesni") => AesImpl::AesNi,
                _ => AesImpl::Vaes512,
            };
            #[allow(unused_mut)]
            let mut rk = [[0u128; 11]; 3];
            #[cfg(target_arch = "x86_64")]
            if hw >= AesImpl::AesNi {
                for (r, &key) in rk.iter_mut().zip(&FIXED_KEYS) {
                    // SAFETY: the CPU supports AES-NI (detected above).
                    *r = unsafe { crate::fastaes::expand_key(key) };
                }
            }
            #[cfg(target_arch = "aarch64")]
            if hw == AesImpl::Armv8 {
                for (r, &key) in rk.iter_mut().zip(&FIXED_KEYS) {
                    // SAFETY: the CPU supports NEON and the AES instructions (detected
                    // above).
                    *r = unsafe { crate::armaes::expand_key(key) };
                }
            }
            let best = [
                AesImpl::Portable,
                AesImpl::Armv8,
                AesImpl::AesNi,
                AesImpl::Vaes512,
            ]
            .into_iter()
            .filter(|&b| b.runs_on(hw) && b <= cap)
            .max()
            .unwrap_or(AesImpl::Portable);
            Prg {
                k: FIXED_KEYS.map(|key| Aes128::new(&key.to_le_bytes().into())),
                rk,
                hw,
                best,
            }
        })
    }

    /// The default backend (see [`Prg::fixed`]).
    #[inline]
    pub fn backend(&self) -> AesImpl {
        self.best
    }

    /// Every backend this CPU supports, slowest first (for tests and benchmarks).
    #[allow(dead_code)]
    pub(crate) fn backends(&self) -> Vec<AesImpl> {
        [
            AesImpl::Portable,
            AesImpl::Armv8,
            AesImpl::AesNi,
            AesImpl::Vaes512,
        ]
        .into_iter()
        .filter(|&b| b.runs_on(self.hw))
        .collect()
    }

    /// Panics unless the CPU supports `be` (so the intrinsics paths are only reached on
    /// CPUs that have the instructions).
    #[inline]
    fn check(&self, be: AesImpl) {
        assert!(
            be.runs_on(self.hw),
            "prg: AES backend {be:?} not supported here"
        );
    }

    /// `blocks[i] = AES_k(blocks[i])` in place under fixed key `which` (0, 1, 2): the raw
    /// permutation, for callers that fuse the MMO feed-forward XOR into their own pass.
    /// Cost: blocks.len() AES blocks, pipelined. Panics if `which > 2`.
    #[inline]
    pub fn encrypt(&self, which: usize, blocks: &mut [u128]) {
        self.encrypt_with(self.best, which, blocks);
    }

    /// [`Prg::encrypt`] with a given backend (panics if the CPU does not support it).
    pub(crate) fn encrypt_with(&self, be: AesImpl, which: usize, blocks: &mut [u128]) {
        self.check(be);
        let rk = &self.rk[which];
        match be {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check` verified that the CPU supports VAES + AVX-512F (and AES-NI).
            AesImpl::Vaes512 => unsafe { crate::fastaes::encrypt_vaes(rk, blocks) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check` verified that the CPU supports AES-NI.
            AesImpl::AesNi => unsafe { crate::fastaes::encrypt_ni(rk, blocks) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `check` verified that the CPU supports NEON and the AES
            // instructions.
            AesImpl::Armv8 => unsafe { crate::armaes::encrypt(rk, blocks) },
            _ => {
                let _ = rk;
                encrypt_in_place(&self.k[which], blocks)
            }
        }
    }

    /// One DPF tree level for nodes carrying their control bit in the LSB: node i
    /// (seed s = v & !1, bit t = v & 1) belongs to key `i >> shift` and gets the children
    /// `next[2i] = AES_k0(s) ⊕ s ⊕ (t ? cl[i >> shift] : 0)` and
    /// `next[2i + 1] = AES_k1(s) ⊕ s ⊕ (t ? cr[i >> shift] : 0)`.
    /// Cost: 2·nodes.len() AES blocks. Panics on length mismatches or an unsupported
    /// backend.
    pub(crate) fn dpf_level(
        &self,
        be: AesImpl,
        nodes: &[u128],
        next: &mut [u128],
        cl: &[u128],
        cr: &[u128],
        shift: u32,
    ) {
        self.check(be);
        let n = nodes.len();
        assert_eq!(next.len(), 2 * n, "dpf_level: next.len() != 2·nodes.len()");
        if n == 0 {
            return;
        }
        let keys = ((n - 1) >> shift) + 1;
        assert!(
            cl.len() >= keys && cr.len() >= keys,
            "dpf_level: too few correction words"
        );
        match be {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check` verified the CPU features; lengths checked above.
            AesImpl::Vaes512 => unsafe {
                crate::fastaes::level_vaes(&self.rk[0], &self.rk[1], nodes, next, cl, cr, shift)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check` verified the CPU features; lengths checked above.
            AesImpl::AesNi => unsafe {
                crate::fastaes::level_ni(&self.rk[0], &self.rk[1], nodes, next, cl, cr, shift)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `check` verified the CPU features; lengths checked above.
            AesImpl::Armv8 => unsafe {
                crate::armaes::level(&self.rk[0], &self.rk[1], nodes, next, cl, cr, shift)
            },
            _ => {
                let mut l = [0u128; BATCH];
                let mut r = [0u128; BATCH];
                for (c, (nc, xc)) in nodes
                    .chunks(BATCH)
                    .zip(next.chunks_mut(2 * BATCH))
                    .enumerate()
                {
                    let len = nc.len();
                    for (d, &v) in l.iter_mut().zip(nc) {
                        *d = v & !1;
                    }
                    r[..len].copy_from_slice(&l[..len]);
                    encrypt_in_place(&self.k[0], &mut l[..len]);
                    encrypt_in_place(&self.k[1], &mut r[..len]);
                    for (j, (nx, &v)) in xc.chunks_exact_mut(2).zip(nc).enumerate() {
                        let g = (c * BATCH + j) >> shift;
                        let s = v & !1;
                        let mask = 0u128.wrapping_sub(v & 1);
                        nx[0] = l[j] ^ s ^ (cl[g] & mask);
                        nx[1] = r[j] ^ s ^ (cr[g] & mask);
                    }
                }
            }
        }
    }

    /// Whether `Prg::dpf_leaves_dot` supports backend `be` and this shape: VAES only,
    /// table rows of at least 512 bits (one leaf of 4 blocks lies in one row).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn dpf_leaves_dot_ok<W: Word>(be: AesImpl, ky: u32) -> bool {
        be == AesImpl::Vaes512 && (W::BITS << ky) >= 512
    }

    /// Fused DPF leaf conversion of 4-block leaves and rotated dot product (see
    /// `fastaes::leaves_dot_vaes`): key g's leaves are `nodes[g·2^shift ..][.. 2^shift]`
    /// (512/BITS words each, at domain indices j0 .. of the key's range), its output
    /// correction blocks `cw[4g .. 4g + 4]`, and `out[g]` becomes the unsigned
    /// `crate::lut::rotated_dot2_doubled(rev2, kx, ky, xs[g], ys[g], j0, words)`.
    /// Cost: 4·nodes.len() AES blocks and one multiply-add per leaf word. Panics unless
    /// [`Prg::dpf_leaves_dot_ok`] and the lengths fit.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dpf_leaves_dot<W: Word>(
        &self,
        be: AesImpl,
        nodes: &[u128],
        cw: &[u128],
        shift: u32,
        tab: &crate::lut::DotTable<'_, W>,
        xs: &[u32],
        ys: &[u32],
        j0: usize,
        out: &mut [W],
    ) {
        self.check(be);
        assert!(
            Self::dpf_leaves_dot_ok::<W>(be, tab.ky),
            "dpf_leaves_dot: unsupported"
        );
        let g = nodes.len() >> shift;
        assert_eq!(nodes.len(), g << shift, "dpf_leaves_dot: partial key");
        assert!(
            cw.len() >= 4 * g && xs.len() >= g && ys.len() >= g && out.len() >= g,
            "dpf_leaves_dot: short inputs"
        );
        let lanes = (512 / W::BITS) as usize;
        assert!(tab.kx + tab.ky <= 40, "dpf_leaves_dot: table too large");
        let size = 1usize << (tab.kx + tab.ky);
        assert_eq!(tab.rev2.len(), 2 * size, "dpf_leaves_dot: table length");
        assert!(
            j0.is_multiple_of(lanes) && j0 + (lanes << shift) <= size,
            "dpf_leaves_dot: domain range"
        );
        // SAFETY: `check` verified the CPU features (Vaes512 implies AES-NI, VAES,
        // AVX-512F/BW/DQ); the shape and lengths were checked above.
        unsafe {
            crate::fastaes::leaves_dot_vaes(&self.rk[2], nodes, cw, shift, tab, xs, ys, j0, out)
        }
    }

    /// Fused DPF leaf conversion of 4-block leaves and 1-D table product for a
    /// support-restricted evaluation (see `fastaes::leaves_dot_support_vaes`): key g's
    /// `per` leaves are `nodes[g·per ..][.. per]`, leaf w at domain leaf
    /// `(lo[g] + w) mod 2^(k − nu)`, its output correction blocks `cw[4g ..][.. 4]`, and
    /// `out[g]` becomes the unsigned rotated dot of its leaves' words with the doubled
    /// reversed table `rev2` at index `ys[g]`. Cost: 4·nodes.len() AES blocks and one
    /// multiply-add per leaf word. Panics unless the backend is VAES and the shapes fit.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dpf_leaves_dot_support<W: Word>(
        &self,
        be: AesImpl,
        nodes: &[u128],
        cw: &[u128],
        per: usize,
        lo: &[u32],
        ys: &[u32],
        k: u32,
        rev2: &[W],
        out: &mut [W],
    ) {
        self.check(be);
        assert_eq!(be, AesImpl::Vaes512, "dpf_leaves_dot_support: VAES only");
        let nu = (512 / W::BITS).trailing_zeros();
        assert!(
            per >= 1 && nodes.len().is_multiple_of(per),
            "dpf_leaves_dot_support: partial key"
        );
        let g = nodes.len() / per;
        assert!(
            lo.len() >= g && ys.len() >= g && out.len() >= g && cw.len() >= 4 * g,
            "dpf_leaves_dot_support: short inputs"
        );
        assert!(
            (nu..=30).contains(&k) && rev2.len() == 2 << k,
            "dpf_leaves_dot_support: table shape"
        );
        // SAFETY: `check` verified the CPU features (Vaes512 implies AES-NI, VAES,
        // AVX-512F/BW/DQ); the shapes were checked above.
        unsafe {
            crate::fastaes::leaves_dot_support_vaes(
                &self.rk[2],
                nodes,
                cw,
                per,
                lo,
                ys,
                k,
                nu,
                rev2,
                out,
            )
        }
    }

    /// DPF leaf conversion for nodes carrying their control bit in the LSB: node i
    /// (seed s, bit t) of key `i >> shift` gives the 128/BITS words of the block
    /// `AES_k2(s) ⊕ s`, plus (word-wise, mod 2^BITS) the words of `cw[i >> shift]` if t,
    /// in `out[i·128/BITS ..]`. Cost: nodes.len() AES blocks. Panics on length
    /// mismatches or an unsupported backend.
    pub(crate) fn dpf_leaves<W: Word>(
        &self,
        be: AesImpl,
        nodes: &[u128],
        cw: &[u128],
        shift: u32,
        out: &mut [W],
    ) {
        self.check(be);
        let n = nodes.len();
        let per = (128 / W::BITS) as usize;
        assert_eq!(
            out.len(),
            n * per,
            "dpf_leaves: out.len() != nodes·128/BITS"
        );
        if n == 0 {
            return;
        }
        assert!(
            cw.len() > (n - 1) >> shift,
            "dpf_leaves: too few correction words"
        );
        match be {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check` verified the CPU features; lengths checked above.
            AesImpl::Vaes512 => unsafe {
                crate::fastaes::leaves_vaes(&self.rk[2], nodes, cw, shift, out)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check` verified the CPU features; lengths checked above.
            AesImpl::AesNi => unsafe {
                crate::fastaes::leaves_ni(&self.rk[2], nodes, cw, shift, out)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `check` verified the CPU features; lengths checked above.
            AesImpl::Armv8 => unsafe { crate::armaes::leaves(&self.rk[2], nodes, cw, shift, out) },
            _ => {
                let mut c = [0u128; BATCH];
                let mut a = [0u128; BATCH];
                for (ch, (nc, oc)) in nodes
                    .chunks(BATCH)
                    .zip(out.chunks_mut(BATCH * per))
                    .enumerate()
                {
                    let len = nc.len();
                    for (j, (d, &v)) in c.iter_mut().zip(nc).enumerate() {
                        *d = v & !1;
                        a[j] = cw[(ch * BATCH + j) >> shift] & 0u128.wrapping_sub(v & 1);
                    }
                    encrypt_in_place(&self.k[2], &mut c[..len]);
                    for (d, &v) in c.iter_mut().zip(nc) {
                        *d ^= v & !1;
                    }
                    add_blocks_as_words(&c[..len], &a[..len], oc);
                }
            }
        }
    }

    /// `out[i] = AES_k(seeds[i]) ⊕ seeds[i]` for fixed key `which` (0, 1: PRG halves;
    /// 2: leaf conversion). Cost: seeds.len() AES blocks, pipelined.
    /// Panics if the lengths differ or `which > 2`.
    #[inline]
    pub fn mmo(&self, which: usize, seeds: &[u128], out: &mut [u128]) {
        assert_eq!(seeds.len(), out.len(), "mmo: length mismatch");
        out.copy_from_slice(seeds);
        self.encrypt(which, out);
        for (o, &s) in out.iter_mut().zip(seeds) {
            *o ^= s;
        }
    }

    /// The length-doubling PRG on a batch of seeds, raw: `left[i] = AES_k0(s) ⊕ s`,
    /// `right[i] = AES_k1(s) ⊕ s`. The caller splits each half into control bit
    /// (`v & 1`) and seed (`v & !1`), see [`split`]. Cost: 2·seeds.len() AES blocks.
    #[inline]
    pub fn double_batch(&self, seeds: &[u128], left: &mut [u128], right: &mut [u128]) {
        self.mmo(0, seeds, left);
        self.mmo(1, seeds, right);
    }

    /// G(s) for one seed: `(s_L, t_L, s_R, t_R)` with the control bits taken from and
    /// cleared in the least significant bit. Cost: 2 AES blocks (not pipelined; use
    /// [`Prg::double_batch`] for throughput).
    #[inline]
    pub fn double(&self, s: u128) -> (u128, bool, u128, bool) {
        let mut l = [0u128];
        let mut r = [0u128];
        self.double_batch(&[s], &mut l, &mut r);
        let (sl, tl) = split(l[0]);
        let (sr, tr) = split(r[0]);
        (sl, tl, sr, tr)
    }

    /// Leaf conversion of a batch: `out[i] = AES_k2(seeds[i]) ⊕ seeds[i]`, 128 bits each,
    /// read as words by [`block_words`]. Cost: seeds.len() AES blocks.
    #[inline]
    pub fn convert_batch(&self, seeds: &[u128], out: &mut [u128]) {
        self.mmo(2, seeds, out);
    }

    /// Leaf conversion of one seed into `out.len() <= 128/BITS` ring words. Cost: 1 AES.
    pub fn convert<W: Word>(&self, s: u128, out: &mut [W]) {
        let mut b = [0u128];
        self.convert_batch(&[s], &mut b);
        block_words(b[0], out);
    }
}

/// Key pairs for `items`, generated in parallel (rayon) by `gen` over chunks of `chunk`
/// items: chunk c draws from a ChaCha12 stream seeded with `seed` and stream number c, so
/// the keys do not depend on the thread count. Returns (party 0's keys, party 1's keys)
/// in the order of `items`. Shared by the DPF and DCF batch generators.
pub(crate) fn gen_pairs_chunked<A: Sync, K: Send>(
    items: &[A],
    chunk: usize,
    seed: [u8; 32],
    gen: impl Fn(&[A], &mut rand_chacha::ChaCha12Rng) -> (Vec<K>, Vec<K>) + Sync,
) -> (Vec<K>, Vec<K>) {
    use rand_chacha::rand_core::SeedableRng;
    let parts: Vec<_> = items
        .par_chunks(chunk)
        .enumerate()
        .map(|(c, part)| {
            let mut rng = rand_chacha::ChaCha12Rng::from_seed(seed);
            rng.set_stream(c as u64);
            gen(part, &mut rng)
        })
        .collect();
    let mut k0 = Vec::with_capacity(items.len());
    let mut k1 = Vec::with_capacity(items.len());
    for (a, b) in parts {
        k0.extend(a);
        k1.extend(b);
    }
    (k0, k1)
}

/// Splits a raw PRG half into (seed with the LSB cleared, control bit = LSB).
#[inline(always)]
pub fn split(v: u128) -> (u128, bool) {
    (v & !1, v & 1 == 1)
}

/// Writes the first `out.len()` (at most 128/BITS) little-endian ring words of a block.
#[inline(always)]
pub fn block_words<W: Word>(block: u128, out: &mut [W]) {
    debug_assert!(out.len() * W::BITS as usize <= 128);
    for (i, o) in out.iter_mut().enumerate() {
        *o = word_of::<W>(block, i);
    }
}

/// Writes the first `out.len()` (at most 128/BITS · blocks.len()) little-endian ring
/// words of a run of blocks (block i gives words i·128/BITS ..). Cost: one memcpy on
/// little-endian targets.
#[inline(always)]
pub fn blocks_to_words<W: Word>(blocks: &[u128], out: &mut [W]) {
    #[cfg(target_endian = "little")]
    {
        let src: &[W] = bytemuck::cast_slice(blocks);
        out.copy_from_slice(&src[..out.len()]);
    }
    #[cfg(target_endian = "big")]
    {
        let per = (128 / W::BITS) as usize;
        for (words, &b) in out.chunks_mut(per).zip(blocks) {
            block_words(b, words);
        }
    }
}

/// Word `i` (little-endian) of a 128-bit block.
#[inline(always)]
pub fn word_of<W: Word>(block: u128, i: usize) -> W {
    W::from_u64((block >> (i as u32 * W::BITS)) as u64)
}

/// `out` = word-wise sum (mod 2^BITS) of the little-endian words of blocks `a` and `b`
/// (`out.len() == a.len()·128/BITS`).
#[inline]
pub(crate) fn add_blocks_as_words<W: Word>(a: &[u128], b: &[u128], out: &mut [W]) {
    #[cfg(target_endian = "little")]
    {
        let wa: &[W] = bytemuck::cast_slice(a);
        let wb: &[W] = bytemuck::cast_slice(b);
        for ((o, &x), &y) in out.iter_mut().zip(wa).zip(wb) {
            *o = x.wadd(y);
        }
    }
    #[cfg(target_endian = "big")]
    {
        let per = (128 / W::BITS) as usize;
        for ((ow, &x), &y) in out.chunks_exact_mut(per).zip(a).zip(b) {
            for (i, o) in ow.iter_mut().enumerate() {
                *o = word_of::<W>(x, i).wadd(word_of::<W>(y, i));
            }
        }
    }
}

/// AES-encrypts `u128` blocks in place (their little-endian bytes are the AES blocks).
#[inline]
fn encrypt_in_place(key: &Aes128, v: &mut [u128]) {
    #[cfg(target_endian = "big")]
    for x in v.iter_mut() {
        *x = x.swap_bytes();
    }
    // SAFETY: `Block` is `GenericArray<u8, U16>`, `#[repr(transparent)]` over `[u8; 16]`:
    // same size as u128, alignment 1 <= 16, every bit pattern valid both ways. The
    // slice covers exactly the same bytes.
    let blocks: &mut [Block] =
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<Block>(), v.len()) };
    key.encrypt_blocks(blocks);
    #[cfg(target_endian = "big")]
    for x in v.iter_mut() {
        *x = x.swap_bytes();
    }
}

/// A deterministic stream of `n` uniform ring words from a 16-byte seed: AES-128-CTR
/// keyed by `seed`, block i = AES_seed(i as u128, little-endian), each block giving
/// 128/BITS little-endian words (word j of the stream is word j mod (128/BITS) of block
/// j / (128/BITS)). Different lengths from the same seed are prefixes of each other.
///
/// Cost: n·BITS/128 AES blocks (AES-NI, pipelined), parallel over counter ranges for
/// large n; the output does not depend on the thread count.
pub fn expand_seed<W: Word>(seed: [u8; 16], n: usize) -> Vec<W> {
    let cipher = Aes128::new(&seed.into());
    let per = (128 / W::BITS) as usize;
    let mut out = vec![W::ZERO; n];
    // Each chunk is a whole number of blocks, so chunk c starts at counter c·CHUNK/per.
    const CHUNK: usize = 1 << 14;
    let fill = |(c, dst): (usize, &mut [W])| {
        let mut ctr = (c * CHUNK / per) as u128;
        let mut buf = [0u128; BATCH];
        for group in dst.chunks_mut(BATCH * per) {
            let nb = group.len().div_ceil(per);
            for b in buf[..nb].iter_mut() {
                *b = ctr;
                ctr += 1;
            }
            encrypt_in_place(&cipher, &mut buf[..nb]);
            blocks_to_words(&buf[..nb], group);
        }
    };
    if n >= 4 * CHUNK {
        out.par_chunks_mut(CHUNK).enumerate().for_each(fill);
    } else {
        out.chunks_mut(CHUNK).enumerate().for_each(fill);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_matches_fips197_vector() {
        // FIPS-197 appendix C.1 (AES-128): checks the byte order of the u128 wrapper.
        let key_bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        let pt: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        let c = Aes128::new(&key_bytes.into());
        let mut v = [u128::from_le_bytes(pt)];
        encrypt_in_place(&c, &mut v);
        let want: [u8; 16] = [
            0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
            0xc5, 0x5a,
        ];
        assert_eq!(v[0].to_le_bytes(), want);
    }

    /// The three fixed-key permutations on one block, against values computed
    /// independently (OpenSSL through Python's `cryptography`), through every backend this
    /// CPU has and every tail length of their pipelines: the PRG is the same function on
    /// every platform, so keys dealt on one evaluate identically on another.
    #[test]
    fn fixed_keys_known_answers_every_backend() {
        let s: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let want: [u128; 3] = [
            0x60bc_59b9_9b11_df86_0c0d_ad36_428a_7c12,
            0xb216_6c35_008b_db84_a2e3_5d22_c145_4453,
            0x4184_7ac3_162e_0590_526c_d67b_14b8_c32f,
        ];
        let prg = Prg::fixed();
        let backends = prg.backends();
        assert_eq!(backends[0], AesImpl::Portable);
        assert!(backends.contains(&prg.backend()));
        // One family per CPU.
        assert!(!(backends.contains(&AesImpl::Armv8) && backends.contains(&AesImpl::AesNi)));
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("aes") {
            assert!(backends.contains(&AesImpl::Armv8), "{backends:?}");
        }
        for be in backends {
            for (which, &w) in want.iter().enumerate() {
                for len in [1usize, 7, 8, 9, 33, 37] {
                    let mut v = vec![s; len];
                    prg.encrypt_with(be, which, &mut v);
                    assert!(v.iter().all(|&x| x == w), "{be:?} key {which} len {len}");
                }
            }
        }
    }

    #[test]
    fn prg_halves_differ_and_batch_matches_single() {
        let prg = Prg::fixed();
        let seeds: Vec<u128> = (0..37u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c))
            .collect();
        let mut l = vec![0; seeds.len()];
        let mut r = vec![0; seeds.len()];
        prg.double_batch(&seeds, &mut l, &mut r);
        let mut c = vec![0; seeds.len()];
        prg.convert_batch(&seeds, &mut c);
        for i in 0..seeds.len() {
            let (sl, tl, sr, tr) = prg.double(seeds[i]);
            assert_eq!((sl, tl), split(l[i]));
            assert_eq!((sr, tr), split(r[i]));
            assert_eq!(sl & 1, 0);
            assert_ne!(l[i], r[i]);
            assert_ne!(l[i], c[i]);
            let mut w = [0u32; 4];
            prg.convert(seeds[i], &mut w);
            assert_eq!(w[0], c[i] as u32);
            assert_eq!(w[3], (c[i] >> 96) as u32);
        }
        // Control bits are not constant.
        let ones = l.iter().filter(|v| *v & 1 == 1).count();
        assert!(ones > 5 && ones < 32, "{ones}");
    }

    #[test]
    fn expand_seed_deterministic_prefix_and_spread() {
        let seed = [7u8; 16];
        let a = expand_seed::<u16>(seed, 1 << 17);
        let b = expand_seed::<u16>(seed, 1000);
        assert_eq!(&a[..1000], &b[..]);
        assert_eq!(a, expand_seed::<u16>(seed, 1 << 17));
        assert_ne!(&expand_seed::<u16>([8u8; 16], 1000)[..], &b[..]);
        // u16 stream is the u32 stream split into halves (little-endian words).
        let w32 = expand_seed::<u32>(seed, 500);
        for i in 0..500 {
            assert_eq!(w32[i] as u16, a[2 * i]);
            assert_eq!((w32[i] >> 16) as u16, a[2 * i + 1]);
        }
        // Odd lengths, u64, and a crude uniformity check on the top bit.
        for n in [0usize, 1, 3, 17, 63, 65, 130] {
            assert_eq!(expand_seed::<u64>(seed, n).len(), n);
        }
        let top = a.iter().filter(|&&v| v >= 0x8000).count() as f64 / a.len() as f64;
        assert!((top - 0.5).abs() < 0.01, "{top}");
        // First block is AES_seed(0).
        let c = Aes128::new(&seed.into());
        let mut z = [0u128];
        encrypt_in_place(&c, &mut z);
        assert_eq!(
            expand_seed::<u64>(seed, 2),
            vec![z[0] as u64, (z[0] >> 64) as u64]
        );
    }
}
