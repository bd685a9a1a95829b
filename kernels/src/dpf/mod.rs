//! Distributed point functions with outputs in Z/2^BITS: the tree construction of Boyle,
//! Gilboa and Ishai ("Function Secret Sharing: Improvements and Extensions", CCS 2016,
//! Fig. 1), with early termination.
//!
//! **Shape.** Domain 2^k, 1 <= k <= 24. One 128-bit block holds E = 128/BITS ring words
//! (8 u16, 4 u32, 2 u64), and one tree leaf converts into [`LEAF_BLOCKS`] = 4 blocks
//! (BGI's Convert for outputs wider than the seed: a PRG on the leaf seed), so the last
//! nu = min(k, log2(4E)) levels of the tree are packed into one leaf and the GGM tree has
//! depth d = k − nu; the top d bits of alpha (most significant first) are the path, the
//! low nu bits the word within the leaf. Each party's full-domain expansion is its additive share of
//! beta·e_alpha (mod 2^BITS). No 1-bit-output tricks: the output group is the ring.
//!
//! **Keys.** party bit b, root seed s_b (127 random bits, LSB 0), root control bit t_b = b,
//! per level a correction word (seed CW, t_L CW, t_R CW), and one output correction word
//! of 2^nu ring words. Evaluation: at each level G(s) = (s_L, t_L, s_R, t_R) (see
//! [`crate::prg`]), XOR-corrected with (s_CW, t_L CW, s_CW, t_R CW) when t = 1; at a leaf
//! the share is (−1)^b · (Convert(s) + t·CW_out), Convert(s) block i being
//! `AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i` ([`leaf_tweak`]). Serialised size ([`key_bytes`]):
//! 1 + 16 + 16·d + ceil(2d/8) + 2^nu·BITS/8 bytes, i.e. about d·(128 + 2) + 128 + 512 bits
//! (228 bytes for k = 12 over Z/2^32).
//!
//! **Evaluation cost.** 2^d − 1 PRG doublings (2 AES each) and 2^d leaf conversions
//! (4 AES each), about 1.5·2^k/E AES blocks (the one-block leaf of earlier versions
//! needed 3·2^k/E), plus 2^k ring operations. [`eval_dot`] fuses
//! the expansion with the table product: the tree is walked depth first down to subtrees
//! of at most 2^9 leaves, each subtree expanded breadth first (so AES runs on long
//! batches of blocks), and its leaf words are multiply-accumulated against the rotated
//! table (a reversed copy with every row stored twice, so each row is one contiguous
//! dot product), so at most ~100 KB are live whatever k is. The batched evaluators
//! expand small trees (d <= 9) of several keys together, level by level (groups of
//! about 2^8 leaves), reading a batch of keys from flat arrays ([`DpfKeys`]: contiguous
//! runs per group, which the hardware prefetcher streams).
//! A 1-D table that is zero outside a short cyclic interval (the softmax's exp and p) is
//! evaluated only on the leaves that meet the interval as seen from each lookup's index
//! (`support`): the same shares, bit for bit, for 3-4x fewer AES blocks.
//!
//! **Speed.** Each tree level is one fused kernel (AES under k0 and k1, feed-forward,
//! control-bit correction), and so is the leaf conversion; with VAES + AVX-512 one leaf is
//! one register (its 4 blocks in the 4 lanes, tweaks included) and the leaf conversion
//! also does the table product in registers (see `crate::prg::Prg` for the
//! run-time choice of AES implementation). All implementations give identical results.

use crate::lut::{reverse_table2_doubled, rotated_dot2_doubled, DotTable};
use crate::prg::{block_words, split, AesImpl, Prg};
use crate::word::Word;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;

pub(crate) mod keys;
mod support;
pub use keys::DpfKeys;
use keys::KeysRef;
use support::SupportPlan;

/// Largest supported domain exponent.
pub const MAX_K: u32 = 24;
/// Most levels expanded breadth first per subtree in the evaluators: 2^9 leaves, 2^11
/// leaf blocks (8 KB of leaf seeds, 32 KB of leaf words, L2-resident), so the few narrow
/// levels at the top of each subtree (too few blocks to keep the AES pipeline full) are
/// amortised.
const CHUNK_LEVELS: u32 = 9;
/// Small trees (d <= CHUNK_LEVELS) are expanded in groups of keys with about
/// 2^GROUP_LEVELS leaves (2^(GROUP_LEVELS + 2) leaf blocks) in all (at least one key).
const GROUP_LEVELS: u32 = 8;
/// Keys restricted to their table's support ([`support`]) are expanded in groups of about
/// 2^SUPPORT_GROUP_LEVELS kept leaves.
const SUPPORT_GROUP_LEVELS: u32 = 9;
/// At most 2^MAX_GROUP_LOG small-tree keys are expanded together.
const MAX_GROUP_LOG: u32 = 6;
/// At most this many key groups per parallel task in the batched evaluators.
const TASK_GROUPS: usize = 8;
/// Keys per deterministic RNG stream in [`gen_batch`].
const GEN_CHUNK: usize = 256;
/// Domain size from which a single key's evaluation is split over threads.
const PAR_DOMAIN: usize = 1 << 16;

/// One level's correction word: seed CW (LSB 0) and the two control-bit CWs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CorrectionWord {
    /// s_CW = s0^lose ⊕ s1^lose.
    pub seed: u128,
    /// t_L CW = t0_L ⊕ t1_L ⊕ alpha_i ⊕ 1.
    pub t_l: bool,
    /// t_R CW = t0_R ⊕ t1_R ⊕ alpha_i.
    pub t_r: bool,
}

/// One party's DPF key for beta·e_alpha over the domain 2^k with outputs in Z/2^BITS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpfKey<W: Word> {
    /// Domain exponent (1..=24).
    pub k: u32,
    /// Party bit b (0 or 1); party 1's leaf values are negated.
    pub party: u8,
    /// Root seed (LSB 0).
    pub seed: u128,
    /// Root control bit (equals the party bit).
    pub t: bool,
    /// Correction words of the d = k − nu tree levels, root first.
    pub cws: Vec<CorrectionWord>,
    /// Output correction: 2^nu ring words (the used part of one leaf block).
    pub cw_out: Vec<W>,
}

/// Errors of [`DpfKey::read_from`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DpfError {
    /// k outside 1..=24.
    BadDomain(u32),
    /// The buffer is shorter than [`key_bytes`].
    Truncated {
        /// Bytes a key needs.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The header byte is not a valid (party, control bit) pair.
    BadHeader(u8),
    /// A field that is always zero in a well-formed key is not (seed LSB, padding bits).
    NonCanonical(&'static str),
}

impl std::fmt::Display for DpfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DpfError::BadDomain(k) => write!(f, "DPF domain exponent {k} outside 1..={MAX_K}"),
            DpfError::Truncated { need, got } => {
                write!(f, "DPF key truncated: need {need} bytes, got {got}")
            }
            DpfError::BadHeader(h) => write!(f, "DPF key header byte {h:#04x} is invalid"),
            DpfError::NonCanonical(what) => write!(f, "DPF key is not canonical: {what}"),
        }
    }
}

impl std::error::Error for DpfError {}

/// AES blocks one GGM-tree leaf converts into (when the domain is large enough).
///
/// Why 4: the leaf conversion costs one AES block per 128 output bits whatever the leaf
/// size, while every tree level above the leaves costs two AES blocks per node; a leaf of
/// 4 blocks makes the tree two levels shallower than a one-block leaf, which halves the
/// AES work of a full-domain evaluation (about 3·2^k/E blocks -> 1.5·2^k/E, E = 128/BITS
/// words per block) for 48 more bytes of output correction word per key. It is also one
/// 512-bit register, so the VAES kernel converts a leaf in one instruction stream.
pub const LEAF_BLOCKS: usize = 4;

/// The tweak of leaf block i: Convert(s) block i is `AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i` with
/// δ_i = i·2^64 (δ_0 = 0: block 0 is the one-block conversion). Distinct tweaks keep the
/// blocks independent outputs of the fixed-key permutation on points the other party
/// cannot guess (the seed is secret and uniform), the same assumption as the tree PRG.
#[inline]
pub fn leaf_tweak(i: usize) -> u128 {
    (i as u128) << 64
}

/// log2(LEAF_BLOCKS·128/BITS): levels packed into one leaf when the domain allows.
#[inline]
fn leaf_log(bits: u32) -> u32 {
    (LEAF_BLOCKS as u32 * 128 / bits).trailing_zeros()
}

/// (nu, d, words used per leaf) for domain 2^k and word size `bits`.
#[inline]
fn shape(k: u32, bits: u32) -> (u32, u32, usize) {
    let nu = k.min(leaf_log(bits));
    (nu, k - nu, 1usize << nu)
}

/// Serialised size in bytes of one key for domain 2^k over Z/2^bits:
/// `1 + 16 + 16·d + ceil(2d/8) + 2^nu·bits/8` with nu = min(k, log2(128/bits)),
/// d = k − nu (header byte, root seed, seed CWs, packed control-bit CWs, output CW).
///
/// Preconditions (asserted): 1 <= k <= 24, bits in {16, 32, 64}. Cost: O(1).
pub fn key_bytes(k: u32, bits: u32) -> usize {
    assert!((1..=MAX_K).contains(&k), "key_bytes: k outside 1..=24");
    assert!(
        matches!(bits, 16 | 32 | 64),
        "key_bytes: bits must be 16, 32 or 64"
    );
    let (nu, d, _) = shape(k, bits);
    let d = d as usize;
    1 + 16 + 16 * d + (2 * d).div_ceil(8) + (1usize << nu) * bits as usize / 8
}

impl<W: Word> DpfKey<W> {
    /// Appends the serialised key ([`key_bytes`]`(k, BITS)` bytes, little-endian): header
    /// byte (bit 0 party, bit 1 root control bit), root seed, the d seed CWs, the 2d
    /// control-bit CWs packed (bit 2i = t_L of level i, bit 2i+1 = t_R), the output CW.
    /// Cost: O(key size).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let seeds: Vec<u128> = self.cws.iter().map(|cw| cw.seed).collect();
        let bits: Vec<u8> = self
            .cws
            .iter()
            .map(|cw| cw.t_l as u8 | (cw.t_r as u8) << 1)
            .collect();
        write_key(
            out,
            self.party | (self.t as u8) << 1,
            self.seed,
            &seeds,
            &bits,
            &self.cw_out,
        );
    }

    /// Parses a key for domain 2^k from the start of `buf`; returns it and the number of
    /// bytes consumed ([`key_bytes`]`(k, BITS)`). Never panics: rejects k outside
    /// 1..=24, a short buffer, an invalid header, and non-canonical fields (seed LSBs and
    /// padding bits that a well-formed key has at zero). Random bytes are rejected with
    /// high probability (header alone: 254/256), not with certainty: the format has no
    /// checksum. Cost: O(key size).
    pub fn read_from(k: u32, buf: &[u8]) -> Result<(Self, usize), DpfError> {
        if !(1..=MAX_K).contains(&k) {
            return Err(DpfError::BadDomain(k));
        }
        let need = key_bytes(k, W::BITS);
        if buf.len() < need {
            return Err(DpfError::Truncated {
                need,
                got: buf.len(),
            });
        }
        let (mut seeds, mut bits, mut cw_out) = (Vec::new(), Vec::new(), Vec::new());
        let p = parse_key(k, &buf[..need], &mut seeds, &mut bits, &mut cw_out)?;
        let cws = seeds
            .iter()
            .zip(&bits)
            .map(|(&seed, &b)| CorrectionWord {
                seed,
                t_l: b & 1 == 1,
                t_r: b & 2 == 2,
            })
            .collect();
        let key = DpfKey {
            k,
            party: p.party,
            seed: p.seed,
            t: p.party == 1,
            cws,
            cw_out,
        };
        Ok((key, need))
    }
}

/// Appends one serialised key (the format of [`DpfKey::write_to`]; `header` bit 0 the
/// party, bit 1 the root control bit; `bits[i]` bit 0 t_L and bit 1 t_R of level i).
fn write_key<W: Word>(
    out: &mut Vec<u8>,
    header: u8,
    seed: u128,
    cw_seeds: &[u128],
    cw_bits: &[u8],
    cw_out: &[W],
) {
    out.push(header & 3);
    out.extend_from_slice(&seed.to_le_bytes());
    for s in cw_seeds {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let mut packed = vec![0u8; (2 * cw_seeds.len()).div_ceil(8)];
    for (i, &b) in cw_bits.iter().enumerate() {
        packed[(2 * i) / 8] |= (b & 3) << ((2 * i) % 8);
    }
    out.extend_from_slice(&packed);
    for &w in cw_out {
        w.write_le(out);
    }
}

/// The fields of a parsed key header.
struct Parsed {
    party: u8,
    seed: u128,
}

/// Parses one key for domain 2^k from `buf` (exactly [`key_bytes`]`(k, BITS)` bytes,
/// k valid), appending its d seed CWs, d control-bit pairs (bit 0 t_L, bit 1 t_R) and
/// output CW to the sinks; the checks of [`DpfKey::read_from`].
fn parse_key<W: Word>(
    k: u32,
    buf: &[u8],
    cw_seeds: &mut Vec<u128>,
    cw_bits: &mut Vec<u8>,
    cw_out: &mut Vec<W>,
) -> Result<Parsed, DpfError> {
    let (_, d, used) = shape(k, W::BITS);
    let d = d as usize;
    debug_assert_eq!(buf.len(), key_bytes(k, W::BITS));
    let h = buf[0];
    if h > 3 || (h & 1) != (h >> 1) {
        return Err(DpfError::BadHeader(h));
    }
    let block = |off: usize| -> u128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&buf[off..off + 16]);
        u128::from_le_bytes(b)
    };
    let seed = block(1);
    if seed & 1 != 0 {
        return Err(DpfError::NonCanonical("root seed LSB set"));
    }
    let tb = 17 + 16 * d;
    for i in 0..d {
        let s = block(17 + 16 * i);
        if s & 1 != 0 {
            return Err(DpfError::NonCanonical("correction seed LSB set"));
        }
        cw_seeds.push(s);
        cw_bits.push((buf[tb + (2 * i) / 8] >> ((2 * i) % 8)) & 3);
    }
    let nbits = (2 * d).div_ceil(8);
    if (2 * d) & 7 != 0 && buf[tb + nbits - 1] >> ((2 * d) & 7) != 0 {
        return Err(DpfError::NonCanonical("control-bit padding set"));
    }
    let wb = (W::BITS / 8) as usize;
    let ob = tb + nbits;
    cw_out.extend((0..used).map(|i| W::read_le(&buf[ob + i * wb..])));
    debug_assert_eq!(ob + used * wb, buf.len());
    Ok(Parsed { party: h & 1, seed })
}

/// Generates a key pair for `beta·e_alpha` over the domain 2^k (outputs in Z/2^BITS):
/// eval_full of the two keys sums to beta at alpha and 0 elsewhere.
///
/// Preconditions (asserted): 1 <= k <= 24, alpha < 2^k. Cost: 4·d + 2·ceil(2^nu/E) AES
/// blocks (d = k − nu) and two random 128-bit root seeds from `rng`.
pub fn gen<W: Word, R: RngCore + CryptoRng>(
    k: u32,
    alpha: u32,
    beta: W,
    rng: &mut R,
) -> (DpfKey<W>, DpfKey<W>) {
    let (mut k0, mut k1) = gen_many(k, &[alpha], beta, rng);
    (k0.pop().unwrap(), k1.pop().unwrap())
}

/// Generates key pairs for many points with the same beta, in parallel and
/// deterministically from `seed`: keys for alphas[256·c ..] come from a ChaCha12 stream
/// seeded with `seed` and stream number c (independent of the thread count).
///
/// Preconditions (asserted): as [`gen`] for every alpha. Cost: as [`gen`] per key,
/// level-synchronous over each chunk of 256 keys (so AES runs on batches).
pub fn gen_batch<W: Word>(
    k: u32,
    alphas: &[u32],
    beta: W,
    seed: [u8; 32],
) -> (DpfKeys<W>, DpfKeys<W>) {
    let (k0, k1) = crate::prg::gen_pairs_chunked(alphas, GEN_CHUNK, seed, |chunk, rng| {
        gen_many(k, chunk, beta, rng)
    });
    let (mut b0, mut b1) = (DpfKeys::from_keys(&k0), DpfKeys::from_keys(&k1));
    if alphas.is_empty() {
        (b0, b1) = (DpfKeys::new(k, 0), DpfKeys::new(k, 1));
    }
    (b0, b1)
}

/// Level-synchronous key generation for a batch of points (AES on batches of seeds).
fn gen_many<W: Word, R: RngCore + CryptoRng>(
    k: u32,
    alphas: &[u32],
    beta: W,
    rng: &mut R,
) -> (Vec<DpfKey<W>>, Vec<DpfKey<W>>) {
    assert!((1..=MAX_K).contains(&k), "dpf::gen: k outside 1..=24");
    let (nu, d, used) = shape(k, W::BITS);
    let n = alphas.len();
    for &a in alphas {
        assert!(a >> k == 0, "dpf::gen: alpha >= 2^k");
    }
    let prg = Prg::fixed();
    let mut rand_seed = || {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        u128::from_le_bytes(b) & !1
    };
    let mut s0: Vec<u128> = Vec::with_capacity(n);
    let mut s1: Vec<u128> = Vec::with_capacity(n);
    for _ in 0..n {
        s0.push(rand_seed());
        s1.push(rand_seed());
    }
    let mut keys0: Vec<DpfKey<W>> = s0
        .iter()
        .map(|&s| DpfKey {
            k,
            party: 0,
            seed: s,
            t: false,
            cws: Vec::with_capacity(d as usize),
            cw_out: Vec::new(),
        })
        .collect();
    let mut keys1: Vec<DpfKey<W>> = s1
        .iter()
        .map(|&s| DpfKey {
            k,
            party: 1,
            seed: s,
            t: true,
            cws: Vec::with_capacity(d as usize),
            cw_out: Vec::new(),
        })
        .collect();
    let mut t0 = vec![false; n];
    let mut t1 = vec![true; n];
    let (mut l0, mut r0, mut l1, mut r1) = (
        vec![0u128; n],
        vec![0u128; n],
        vec![0u128; n],
        vec![0u128; n],
    );
    for lvl in 0..d {
        prg.double_batch(&s0, &mut l0, &mut r0);
        prg.double_batch(&s1, &mut l1, &mut r1);
        for i in 0..n {
            let a = (alphas[i] >> (k - 1 - lvl)) & 1 == 1;
            let (sl0, tl0) = split(l0[i]);
            let (sr0, tr0) = split(r0[i]);
            let (sl1, tl1) = split(l1[i]);
            let (sr1, tr1) = split(r1[i]);
            let scw = if a { sl0 ^ sl1 } else { sr0 ^ sr1 };
            let t_l = tl0 ^ tl1 ^ a ^ true;
            let t_r = tr0 ^ tr1 ^ a;
            let cw = CorrectionWord {
                seed: scw,
                t_l,
                t_r,
            };
            keys0[i].cws.push(cw);
            keys1[i].cws.push(cw);
            let (ks0, kt0, ks1, kt1, tcw) = if a {
                (sr0, tr0, sr1, tr1, t_r)
            } else {
                (sl0, tl0, sl1, tl1, t_l)
            };
            s0[i] = ks0 ^ (scw & 0u128.wrapping_sub(t0[i] as u128));
            s1[i] = ks1 ^ (scw & 0u128.wrapping_sub(t1[i] as u128));
            t0[i] = kt0 ^ (t0[i] & tcw);
            t1[i] = kt1 ^ (t1[i] & tcw);
        }
    }
    let c0 = convert_leaves::<W>(prg, &s0, used);
    let c1 = convert_leaves::<W>(prg, &s1, used);
    for i in 0..n {
        let (w0, w1) = (&c0[i * used..][..used], &c1[i * used..][..used]);
        let lo = (alphas[i] & ((1u32 << nu) - 1)) as usize;
        let cw: Vec<W> = (0..used)
            .map(|w| {
                let b = if w == lo { beta } else { W::ZERO };
                let v = b.wsub(w0[w]).wadd(w1[w]);
                if t1[i] {
                    v.wneg()
                } else {
                    v
                }
            })
            .collect();
        keys0[i].cw_out = cw.clone();
        keys1[i].cw_out = cw;
    }
    (keys0, keys1)
}

/// Convert(s) of every seed: `used` words each (the words of its ceil(used/E) leaf
/// blocks `AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i`, see [`leaf_tweak`]), seed-major. Cost:
/// seeds.len()·ceil(used/E) AES blocks.
fn convert_leaves<W: Word>(prg: &Prg, seeds: &[u128], used: usize) -> Vec<W> {
    let e = (128 / W::BITS) as usize;
    let nb = used.div_ceil(e);
    let tweaked: Vec<u128> = seeds
        .iter()
        .flat_map(|&s| (0..nb).map(move |i| s ^ leaf_tweak(i)))
        .collect();
    let mut blocks = vec![0u128; tweaked.len()];
    prg.convert_batch(&tweaked, &mut blocks);
    let mut out = vec![W::ZERO; seeds.len() * used];
    let mut block = vec![W::ZERO; nb * e];
    for (o, bs) in out.chunks_exact_mut(used).zip(blocks.chunks_exact(nb)) {
        for (ws, &b) in block.chunks_exact_mut(e).zip(bs) {
            block_words(b, ws);
        }
        o.copy_from_slice(&block[..used]);
    }
    out
}

/// Scratch buffers of the evaluators (up to ~100 KB; reused across keys).
///
/// Nodes are held as one u128: the 127-bit seed with the control bit in the LSB (seeds
/// always have LSB 0), so a corrected child is `raw ⊕ (t ? (s_CW | t_CW) : 0)` in one
/// pass. Several keys can be expanded together (key-major: key g's nodes are contiguous
/// at every level) so that the AES batches are long even near the roots.
struct Expander<W> {
    /// AES backend (see [`Prg::fixed`]).
    be: AesImpl,
    nodes: Vec<u128>,
    next: Vec<u128>,
    cwl: Vec<u128>,
    cwr: Vec<u128>,
    roots: Vec<u128>,
    words: Vec<W>,
    /// One leaf block's words per node (the multi-block leaf conversion's staging).
    tmp: Vec<W>,
    /// The support-restricted evaluator's scratch.
    sup: support::Scratch,
}

impl<W: Word> Expander<W> {
    fn new(be: AesImpl) -> Self {
        Expander {
            be,
            nodes: Vec::new(),
            next: Vec::new(),
            cwl: Vec::new(),
            cwr: Vec::new(),
            roots: Vec::new(),
            words: Vec::new(),
            tmp: Vec::new(),
            sup: support::Scratch::default(),
        }
    }

    /// Depth-first walk of one key's (`key`, a run of one) subtree under `node` at
    /// `level` (domain offset `j0`), calling `f(j, words)` with the unsigned leaf values
    /// Convert(s) + t·CW_out of each chunk of 2^CHUNK_LEVELS leaves, in domain order (`j`
    /// is the domain index of `words[0]`).
    fn for_each_chunk(
        &mut self,
        key: &KeysRef<'_, W>,
        level: u32,
        node: u128,
        j0: usize,
        f: &mut impl FnMut(usize, &[W]),
    ) {
        let d = key.d as u32;
        if d - level > CHUNK_LEVELS {
            let (l, r) = children(self.be, key, level, node);
            let half = 1usize << (key.k - level - 1);
            self.for_each_chunk(key, level + 1, l, j0, f);
            self.for_each_chunk(key, level + 1, r, j0 + half, f);
        } else {
            self.roots.clear();
            self.roots.push(node);
            self.expand(key, level);
            f(j0, &self.words);
        }
    }

    /// Unsigned partial rotated dot product (as `rotated_dot2_doubled` over the leaf
    /// values) of one key's (`key`, a run of one) subtree under `node` at `level` (domain
    /// offset `j0`), walked depth first down to subtrees of 2^CHUNK_LEVELS leaves.
    #[allow(clippy::too_many_arguments)]
    fn dot_chunks(
        &mut self,
        key: &KeysRef<'_, W>,
        level: u32,
        node: u128,
        j0: usize,
        tab: &DotTable<'_, W>,
        x: u32,
        y: u32,
    ) -> W {
        let d = key.d as u32;
        if d - level > CHUNK_LEVELS {
            let (l, r) = children(self.be, key, level, node);
            let half = 1usize << (key.k - level - 1);
            let a = self.dot_chunks(key, level + 1, l, j0, tab, x, y);
            a.wadd(self.dot_chunks(key, level + 1, r, j0 + half, tab, x, y))
        } else {
            self.roots.clear();
            self.roots.push(node);
            let mut out = [W::ZERO];
            self.expand_dot(key, level, tab, &[x], &[y], j0, &mut out);
            out[0]
        }
    }

    /// Breadth-first expansion of `self.roots[g]` (a node of key g of `keys` at `level`)
    /// with the leaf values of each key fed straight into the rotated dot product:
    /// `out[g]` = unsigned `rotated_dot2_doubled(tab, xs[g], ys[g], j0, leaf values of
    /// key g)`. Fused into the leaf conversion when the backend and shape allow it.
    #[allow(clippy::too_many_arguments)]
    fn expand_dot(
        &mut self,
        keys: &KeysRef<'_, W>,
        level: u32,
        tab: &DotTable<'_, W>,
        xs: &[u32],
        ys: &[u32],
        j0: usize,
        out: &mut [W],
    ) {
        let m = self.expand_levels(keys, level);
        // The fused kernel exists on x86_64 only (VAES).
        #[cfg(target_arch = "x86_64")]
        {
            let shift = keys.d as u32 - level;
            let e = (128 / W::BITS) as usize;
            if keys.used == LEAF_BLOCKS * e && Prg::dpf_leaves_dot_ok::<W>(self.be, tab.ky) {
                self.cwl.clear();
                push_blocks(&mut self.cwl, keys.cw_out_all());
                let nodes = &self.nodes[..m];
                Prg::fixed().dpf_leaves_dot(self.be, nodes, &self.cwl, shift, tab, xs, ys, j0, out);
                return;
            }
        }
        self.leaf_words(keys, level, m);
        let span = self.words.len() / keys.len();
        for (g, o) in out.iter_mut().enumerate().take(keys.len()) {
            let ws = &self.words[g * span..(g + 1) * span];
            *o = rotated_dot2_doubled(tab.rev2, tab.kx, tab.ky, xs[g], ys[g], j0, ws);
        }
    }

    /// Breadth-first expansion of `self.roots[g]` (a node of key g of `keys` at `level`)
    /// down to the leaves. Afterwards `self.words` holds, for each key in order, the
    /// 2^(d − level)·2^nu unsigned leaf values of its subtree.
    fn expand(&mut self, keys: &KeysRef<'_, W>, level: u32) {
        let m = self.expand_levels(keys, level);
        self.leaf_words(keys, level, m);
    }

    /// The tree levels of [`Expander::expand`]: afterwards `self.nodes[..m]` (returned m)
    /// holds the leaf nodes of every key's subtree, key-major.
    fn expand_levels(&mut self, keys: &KeysRef<'_, W>, level: u32) -> usize {
        let prg = Prg::fixed();
        let d = keys.d as u32;
        debug_assert_eq!(keys.len(), self.roots.len());
        // Both node buffers are sized for the leaf level once (they only ever grow, so
        // no per-level zero filling); `n` nodes of `self.nodes` are live.
        let m = self.roots.len() << (d - level);
        if self.nodes.len() < m {
            self.nodes.resize(m, 0);
            self.next.resize(m, 0);
        }
        let g = keys.len();
        let mut n = g;
        self.nodes[..n].copy_from_slice(&self.roots);
        // Correction words of levels level..d, level-major (cwl[depth·g + key]), gathered
        // in one pass over the keys.
        let levels = (d - level) as usize;
        self.cwl.resize(levels * g, 0);
        self.cwr.resize(levels * g, 0);
        for i in 0..g {
            for depth in 0..levels {
                let (l, r) = keys.cw(i, level as usize + depth);
                self.cwl[depth * g + i] = l;
                self.cwr[depth * g + i] = r;
            }
        }
        for depth in 0..levels {
            // Node i of this level belongs to key i >> depth.
            prg.dpf_level(
                self.be,
                &self.nodes[..n],
                &mut self.next[..2 * n],
                &self.cwl[depth * g..][..g],
                &self.cwr[depth * g..][..g],
                depth as u32,
            );
            std::mem::swap(&mut self.nodes, &mut self.next);
            n *= 2;
        }
        debug_assert_eq!(n, m);
        m
    }

    /// The leaf conversion of [`Expander::expand`] for the `m` leaf nodes of
    /// [`Expander::expand_levels`]: Convert(s) + t·CW_out into `self.words`.
    fn leaf_words(&mut self, keys: &KeysRef<'_, W>, level: u32, m: usize) {
        let prg = Prg::fixed();
        let d = keys.d as u32;
        let nodes = &self.nodes[..m];
        let per_key_shift = d - level;
        let used = keys.used;
        let e = (128 / W::BITS) as usize;
        self.words.resize(m * used, W::ZERO);
        if used == e {
            // Branch-free: addend block = CW_out block masked by t, added word-wise.
            self.cwl.clear();
            self.cwl
                .extend(keys.cw_out_all().chunks_exact(e).map(words_block));
            prg.dpf_leaves(self.be, nodes, &self.cwl, per_key_shift, &mut self.words);
        } else if used > e {
            // Block i of every leaf: the one-block kernel on the tweaked nodes (the tweak
            // leaves the control bit alone) with CW_out block i, then placed in its leaf.
            let tweaked = &mut self.next[..m];
            self.tmp.resize(m * e, W::ZERO);
            for i in 0..used / e {
                for (t, &v) in tweaked.iter_mut().zip(nodes) {
                    *t = v ^ leaf_tweak(i);
                }
                self.cwl.clear();
                self.cwl.extend(
                    (0..keys.len()).map(|g| words_block(&keys.cw_out(g)[i * e..(i + 1) * e])),
                );
                prg.dpf_leaves(self.be, tweaked, &self.cwl, per_key_shift, &mut self.tmp);
                for (leaf, blk) in self
                    .words
                    .chunks_exact_mut(used)
                    .zip(self.tmp.chunks_exact(e))
                {
                    leaf[i * e..(i + 1) * e].copy_from_slice(blk);
                }
            }
        } else {
            // Tiny domains (2^k < 128/BITS): one partial leaf block per key.
            let blocks = &mut self.next[..m];
            for (b, &v) in blocks.iter_mut().zip(nodes) {
                *b = v & !1;
            }
            prg.encrypt_with(self.be, 2, blocks);
            for (i, (wb, (&blk, &v))) in self
                .words
                .chunks_exact_mut(used)
                .zip(blocks.iter().zip(nodes))
                .enumerate()
            {
                block_words(blk ^ (v & !1), wb);
                let cw = keys.cw_out(i >> per_key_shift);
                let mask = W::mask(v & 1 == 1);
                for (w, &c) in wb.iter_mut().zip(cw) {
                    *w = w.wadd(c.band(mask));
                }
            }
        }
    }
}

/// Packs 128/BITS words little-endian into a block (inverse of [`block_words`]).
#[inline]
fn words_block<W: Word>(ws: &[W]) -> u128 {
    ws.iter().enumerate().fold(0u128, |b, (i, w)| {
        b | (w.to_u64() as u128) << (i as u32 * W::BITS)
    })
}

/// Appends the words of `ws` (a whole number of blocks) packed into blocks as
/// [`words_block`] packs them: on a little-endian target the words' bytes already are the
/// blocks' bytes, so this is a copy.
#[inline]
fn push_blocks<W: Word>(out: &mut Vec<u128>, ws: &[W]) {
    if cfg!(target_endian = "big") {
        out.extend(ws.chunks_exact((128 / W::BITS) as usize).map(words_block));
        return;
    }
    let bytes: &[u8] = bytemuck::cast_slice(ws);
    debug_assert!(bytes.len().is_multiple_of(16));
    out.extend(bytes.chunks_exact(16).map(|c| {
        let mut b = [0u8; 16];
        b.copy_from_slice(c);
        u128::from_le_bytes(b)
    }));
}

/// Both corrected children of `node` at `level` of key 0 of `key` (nodes carry t in the
/// LSB).
#[inline]
fn children<W: Word>(be: AesImpl, key: &KeysRef<'_, W>, level: u32, node: u128) -> (u128, u128) {
    let prg = Prg::fixed();
    let s = node & !1;
    let mut l = [s];
    let mut r = [s];
    prg.encrypt_with(be, 0, &mut l);
    prg.encrypt_with(be, 1, &mut r);
    let (cl, cr) = key.cw(0, level as usize);
    let mask = 0u128.wrapping_sub(node & 1);
    (l[0] ^ s ^ (cl & mask), r[0] ^ s ^ (cr & mask))
}

fn check_key<W: Word>(key: &DpfKey<W>) {
    assert!(
        (1..=MAX_K).contains(&key.k),
        "dpf: key domain outside 1..=24"
    );
    let (_, d, used) = shape(key.k, W::BITS);
    assert_eq!(
        key.cws.len(),
        d as usize,
        "dpf: key has the wrong number of levels"
    );
    assert_eq!(
        key.cw_out.len(),
        used,
        "dpf: key has the wrong output CW length"
    );
}

/// Full-domain evaluation: the party's additive share (2^k words) of beta·e_alpha.
///
/// Preconditions (asserted): a well-formed key. Cost: about 1.5·2^k/E AES blocks and
/// 2^k word operations (E = 128/BITS); parallel over subtrees for k >= 16.
pub fn eval_full<W: Word>(key: &DpfKey<W>) -> Vec<W> {
    let one = DpfKeys::from_keys(std::slice::from_ref(key));
    eval_full_with(Prg::fixed().backend(), &one.view())
}

/// [`eval_full`] of key 0 of `key`.
fn eval_full_with<W: Word>(be: AesImpl, key: &KeysRef<'_, W>) -> Vec<W> {
    let mut out = vec![W::ZERO; 1usize << key.k];
    full_rec(be, key, 0, key.root(0), &mut out);
    if key.party == 1 {
        out.iter_mut().for_each(|v| *v = v.wneg());
    }
    out
}

fn full_rec<W: Word>(be: AesImpl, key: &KeysRef<'_, W>, level: u32, node: u128, out: &mut [W]) {
    let d = key.d as u32;
    if out.len() >= PAR_DOMAIN && d - level > CHUNK_LEVELS {
        let (l, r) = children(be, key, level, node);
        let (lo, hi) = out.split_at_mut(out.len() / 2);
        rayon::join(
            || full_rec(be, key, level + 1, l, lo),
            || full_rec(be, key, level + 1, r, hi),
        );
    } else {
        let mut ex = Expander::new(be);
        ex.for_each_chunk(key, level, node, 0, &mut |j, ws: &[W]| {
            out[j..j + ws.len()].copy_from_slice(ws)
        });
    }
}

/// Fused expand-and-dot: `Σ_j table[(x − j) mod 2^k] · u[j]` with u = eval_full(key),
/// i.e. the party's share of table[x − alpha] (times beta). The expansion is never
/// materialised (a few KB of scratch).
///
/// Preconditions (asserted): `table.len() == 2^key.k`; x is taken mod 2^k.
/// Cost: 2^k (table reversal) + eval_full's AES work + 2^k multiply-adds, no 2^k buffer
/// of leaves; use [`eval_dot_batch`] for many keys (one table reversal for all).
pub fn eval_dot<W: Word>(key: &DpfKey<W>, table: &[W], x: u32) -> W {
    eval_dot2(key, table, 0, key.k, 0, x)
}

/// [`eval_dot`] for many keys against one table: `out[i] = eval_dot(key i, table, xs[i])`.
///
/// Preconditions (asserted): `keys.len() == xs.len()`, `table.len() == 2^k` (the keys'
/// k). Cost: keys.len() fused evaluations, parallel over keys; keys with small trees
/// are expanded several at a time (longer AES batches).
pub fn eval_dot_batch<W: Word>(keys: &DpfKeys<W>, table: &[W], xs: &[u32]) -> Vec<W> {
    let ys = vec![0u32; xs.len()];
    eval_dot2_batch_impl(Prg::fixed().backend(), keys, table, 0, keys.k(), &ys, xs)
}

/// Two-input fused dot for a DPF on the joint domain kx + ky (point a·2^ky + b):
/// `Σ_{a,b} table[((x − a) mod 2^kx)·2^ky + ((y − b) mod 2^ky)] · u[a·2^ky + b]`, each axis
/// rotated independently.
///
/// Preconditions (asserted): `key.k == kx + ky`, `table.len() == 2^(kx+ky)`; x, y taken
/// mod 2^kx, 2^ky. Cost: as [`eval_dot`] (one extra split per table row).
pub fn eval_dot2<W: Word>(key: &DpfKey<W>, table: &[W], kx: u32, ky: u32, x: u32, y: u32) -> W {
    check_key(key);
    assert_eq!(key.k, kx + ky, "eval_dot2: key.k != kx + ky");
    assert_eq!(
        table.len(),
        1usize << key.k,
        "eval_dot2: table.len() != 2^k"
    );
    let one = DpfKeys::from_keys(std::slice::from_ref(key));
    eval_dot2_with(Prg::fixed().backend(), &one.view(), table, kx, ky, x, y)
}

/// [`eval_dot2`] of key 0 of `key` with the AES backend `be`.
fn eval_dot2_with<W: Word>(
    be: AesImpl,
    key: &KeysRef<'_, W>,
    table: &[W],
    kx: u32,
    ky: u32,
    x: u32,
    y: u32,
) -> W {
    let rev = reverse_table2_doubled(table, kx, ky);
    let tab = DotTable { rev2: &rev, kx, ky };
    let r = dot_rec(be, key, &tab, x, y, 0, key.root(0), 0);
    if key.party == 1 {
        r.wneg()
    } else {
        r
    }
}

/// [`eval_dot2`] for many keys against one table: `out[i] = eval_dot2(key i, table,
/// kx, ky, xs[i], ys[i])`.
///
/// Preconditions (asserted): equal lengths of keys, xs, ys; keys on domain kx + ky;
/// `table.len() == 2^(kx+ky)`. Cost: keys.len() fused evaluations, parallel over keys.
pub fn eval_dot2_batch<W: Word>(
    keys: &DpfKeys<W>,
    table: &[W],
    kx: u32,
    ky: u32,
    xs: &[u32],
    ys: &[u32],
) -> Vec<W> {
    eval_dot2_batch_impl(Prg::fixed().backend(), keys, table, kx, ky, xs, ys)
}

/// The scalar reference of [`eval_dot_batch`]: each key expanded in full with the
/// portable AES (the `aes` crate) and the defining sum `Σ_j table[(x − j) mod 2^k]·u[j]`
/// taken term by term. One thread.
pub fn eval_dot_batch_scalar<W: Word>(keys: &DpfKeys<W>, table: &[W], xs: &[u32]) -> Vec<W> {
    let ys = vec![0u32; xs.len()];
    eval_dot2_batch_scalar(keys, table, 0, keys.k(), &ys, xs)
}

/// The scalar reference of [`eval_dot2_batch`] (as [`eval_dot_batch_scalar`], the sum
/// over both rotated axes).
pub fn eval_dot2_batch_scalar<W: Word>(
    keys: &DpfKeys<W>,
    table: &[W],
    kx: u32,
    ky: u32,
    xs: &[u32],
    ys: &[u32],
) -> Vec<W> {
    check_batch(keys, table, kx, ky, xs, ys);
    let (nx, ny) = (1usize << kx, 1usize << ky);
    let v = keys.view();
    let mut out = Vec::with_capacity(keys.len());
    for (i, (&x, &y)) in xs.iter().zip(ys).enumerate() {
        let u = eval_full_with(AesImpl::Portable, &v.range(i, i + 1));
        let mut s = W::ZERO;
        for a in 0..nx {
            for b in 0..ny {
                let ta = (x as usize).wrapping_sub(a) & (nx - 1);
                let tb = (y as usize).wrapping_sub(b) & (ny - 1);
                s = s.wadd(table[ta * ny + tb].wmul(u[a * ny + b]));
            }
        }
        out.push(s);
    }
    out
}

/// The preconditions of the batched evaluators (asserted).
fn check_batch<W: Word>(keys: &DpfKeys<W>, table: &[W], kx: u32, ky: u32, xs: &[u32], ys: &[u32]) {
    assert_eq!(
        keys.len(),
        xs.len(),
        "eval_dot batch: keys and xs lengths differ"
    );
    assert_eq!(
        keys.len(),
        ys.len(),
        "eval_dot batch: keys and ys lengths differ"
    );
    if keys.is_empty() {
        return;
    }
    assert_eq!(keys.k(), kx + ky, "eval_dot batch: key on the wrong domain");
    assert_eq!(
        table.len(),
        1usize << (kx + ky),
        "eval_dot batch: table.len() != 2^k"
    );
}

fn eval_dot2_batch_impl<W: Word>(
    be: AesImpl,
    keys: &DpfKeys<W>,
    table: &[W],
    kx: u32,
    ky: u32,
    xs: &[u32],
    ys: &[u32],
) -> Vec<W> {
    check_batch(keys, table, kx, ky, xs, ys);
    let mut out = vec![W::ZERO; keys.len()];
    if keys.is_empty() {
        return out;
    }
    let k = kx + ky;
    let all = keys.view();
    let rev = reverse_table2_doubled(table, kx, ky);
    let d = all.d as u32;
    // A table that is zero outside a short interval: only the leaves that meet it.
    let plan = SupportPlan::new(table, kx, d, all.used);
    // Keys per group: whole small trees expanded together, about 2^GROUP_LEVELS leaves
    // (about 2^SUPPORT_GROUP_LEVELS kept leaves when restricted to the support).
    let group = match &plan {
        Some(p) => {
            ((1usize << SUPPORT_GROUP_LEVELS) / p.leaves().max(1)).clamp(1, 1 << MAX_GROUP_LOG)
        }
        None => 1usize << GROUP_LEVELS.saturating_sub(d).min(MAX_GROUP_LOG),
    };
    let tab = DotTable { rev2: &rev, kx, ky };
    // Keys a.. of the batch, their outputs in `o`.
    let run = |ex: &mut Expander<W>, a: usize, o: &mut [W]| {
        let b = a + o.len();
        let kg = all.range(a, b);
        let (xg, yg) = (&xs[a..b], &ys[a..b]);
        if let Some(p) = &plan {
            ex.expand_dot_support(&kg, p, &tab, yg, o);
        } else if d <= CHUNK_LEVELS {
            ex.roots.clear();
            ex.roots.extend((0..kg.len()).map(|i| kg.root(i)));
            ex.expand_dot(&kg, 0, &tab, xg, yg, 0, o);
        } else {
            for (i, ov) in o.iter_mut().enumerate() {
                let key = kg.range(i, i + 1);
                *ov = ex.dot_chunks(&key, 0, key.root(0), 0, &tab, xg[i], yg[i]);
            }
        }
        if all.party == 1 {
            o.iter_mut().for_each(|v| *v = v.wneg());
        }
    };
    // A task is a run of groups (the keys are contiguous arrays: the hardware prefetcher
    // streams them, no software prefetch needed).
    let ngroups = keys.len().div_ceil(group);
    let tg = (ngroups / (8 * rayon::current_num_threads())).clamp(1, TASK_GROUPS);
    let task = group * tg;
    let run_task = |ex: &mut Expander<W>, (t, o): (usize, &mut [W])| {
        for (gi, og) in o.chunks_mut(group).enumerate() {
            run(ex, t * task + gi * group, og);
        }
    };
    let items = out.chunks_mut(task).enumerate();
    if keys.len() > task && (keys.len() << k) >= 1 << 14 {
        let items: Vec<_> = items.collect();
        // At least ~1/8 of a thread's share per rayon job: few scratch allocations.
        let min_len = (items.len() / (8 * rayon::current_num_threads())).max(1);
        items
            .into_par_iter()
            .with_min_len(min_len)
            .for_each_init(|| Expander::new(be), |ex, item| run_task(ex, item));
    } else {
        let mut ex = Expander::new(be);
        items.for_each(|item| run_task(&mut ex, item));
    }
    out
}

/// Unsigned partial dot over the subtree of `node` at `level` of key 0 of `key` (domain
/// offset j0), split over threads for large subtrees.
#[allow(clippy::too_many_arguments)]
fn dot_rec<W: Word>(
    be: AesImpl,
    key: &KeysRef<'_, W>,
    tab: &DotTable<'_, W>,
    x: u32,
    y: u32,
    level: u32,
    node: u128,
    j0: usize,
) -> W {
    let d = key.d as u32;
    let span = 1usize << (key.k - level);
    if span >= PAR_DOMAIN && d - level > CHUNK_LEVELS {
        let (l, r) = children(be, key, level, node);
        let (a, b) = rayon::join(
            || dot_rec(be, key, tab, x, y, level + 1, l, j0),
            || dot_rec(be, key, tab, x, y, level + 1, r, j0 + span / 2),
        );
        a.wadd(b)
    } else {
        Expander::new(be).dot_chunks(key, level, node, j0, tab, x, y)
    }
}

/// Levels packed into one leaf for domain 2^k over W: nu = min(k, log2(LEAF_BLOCKS·128/BITS)).
pub fn leaf_levels<W: Word>(k: u32) -> u32 {
    shape(k, W::BITS).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lut::onehot_dot;
    use crate::testutil::rand_words;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn edge_or_random<W: Word>(rng: &mut ChaCha8Rng, i: usize) -> W {
        match i % 5 {
            0 => W::ONE,
            1 => W::ZERO.wsub(W::ONE),
            2 => W::ONE.shl(W::BITS - 1),
            _ => W::from_u64(rng.gen()),
        }
    }

    fn check_correctness<W: Word>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut ks: Vec<u32> = (1..=12).collect();
        ks.push(16);
        for (i, &k) in ks.iter().enumerate() {
            let size = 1usize << k;
            for rep in 0..6 {
                let alpha = match rep {
                    0 => 0,
                    1 => (size - 1) as u32,
                    _ => rng.gen_range(0..size as u32),
                };
                let beta: W = edge_or_random(&mut rng, i + rep);
                let (k0, k1) = gen(k, alpha, beta, &mut rng);
                let u0 = eval_full(&k0);
                let u1 = eval_full(&k1);
                for j in 0..size {
                    let want = if j == alpha as usize { beta } else { W::ZERO };
                    assert_eq!(u0[j].wadd(u1[j]), want, "k={k} alpha={alpha} j={j}");
                }
                // Single keys look random: off-point values are not all zero and the
                // parties' values differ.
                if size > 2 {
                    assert!(u0
                        .iter()
                        .enumerate()
                        .any(|(j, &v)| j != alpha as usize && v != W::ZERO));
                    assert!(u0.iter().zip(&u1).filter(|(a, b)| a != b).count() >= size / 2);
                }
                // Fused dot vs onehot_dot of the reconstructed vector and of each share.
                let table = rand_words::<W>(&mut rng, size);
                let x = rng.gen_range(0..size as u32);
                let u: Vec<W> = u0.iter().zip(&u1).map(|(a, b)| a.wadd(*b)).collect();
                let want = onehot_dot(&table, k, &[x], &u)[0];
                let d0 = eval_dot(&k0, &table, x);
                let d1 = eval_dot(&k1, &table, x);
                assert_eq!(d0, onehot_dot(&table, k, &[x], &u0)[0], "k={k}");
                assert_eq!(d1, onehot_dot(&table, k, &[x], &u1)[0], "k={k}");
                assert_eq!(d0.wadd(d1), want);
                assert_eq!(
                    want,
                    table[(x as usize + size - alpha as usize) % size].wmul(beta)
                );
                // Serialisation round trip.
                for key in [&k0, &k1] {
                    let mut buf = vec![0xAA];
                    key.write_to(&mut buf);
                    buf.push(0x55);
                    assert_eq!(buf.len(), key_bytes(k, W::BITS) + 2);
                    let (back, used) = DpfKey::<W>::read_from(k, &buf[1..]).unwrap();
                    assert_eq!(used, key_bytes(k, W::BITS));
                    assert_eq!(&back, key);
                }
            }
        }
    }

    #[test]
    fn dpf_correct_u16() {
        check_correctness::<u16>(31);
    }
    #[test]
    fn dpf_correct_u32() {
        check_correctness::<u32>(32);
    }
    #[test]
    fn dpf_correct_u64() {
        check_correctness::<u64>(33);
    }

    #[test]
    fn dpf_k20_full_and_dot() {
        let mut rng = ChaCha8Rng::seed_from_u64(34);
        let k = 20;
        let alpha = rng.gen_range(0..1u32 << k);
        let beta = 0xdead_beefu32;
        let (k0, k1) = gen(k, alpha, beta, &mut rng);
        let u0 = eval_full(&k0);
        let u1 = eval_full(&k1);
        let mut nonzero = 0;
        for j in 0..1usize << k {
            let s = u0[j].wrapping_add(u1[j]);
            if j == alpha as usize {
                assert_eq!(s, beta);
            } else {
                nonzero += (s != 0) as usize;
            }
        }
        assert_eq!(nonzero, 0);
        let table = rand_words::<u32>(&mut rng, 1 << k);
        let x: u32 = rng.gen_range(0..1 << k);
        let got = eval_dot(&k0, &table, x).wrapping_add(eval_dot(&k1, &table, x));
        let want = table[(x.wrapping_sub(alpha) & ((1 << k) - 1)) as usize].wrapping_mul(beta);
        assert_eq!(got, want);
    }

    #[test]
    fn batch_gen_and_dot() {
        let mut rng = ChaCha8Rng::seed_from_u64(35);
        for &k in &[3u32, 8, 12] {
            let size = 1usize << k;
            let n = 600; // more than two GEN_CHUNKs
            let alphas: Vec<u32> = (0..n).map(|_| rng.gen_range(0..size as u32)).collect();
            let beta = 3u64;
            let seed = [9u8; 32];
            let (a0, a1) = gen_batch::<u64>(k, &alphas, beta, seed);
            let (b0, _) = gen_batch::<u64>(k, &alphas, beta, seed);
            assert_eq!(a0, b0, "gen_batch is deterministic");
            assert_ne!(a0, gen_batch::<u64>(k, &alphas, beta, [8u8; 32]).0);
            let table = rand_words::<u64>(&mut rng, size);
            let xs: Vec<u32> = (0..n).map(|_| rng.gen_range(0..size as u32)).collect();
            let d0 = eval_dot_batch(&a0, &table, &xs);
            let d1 = eval_dot_batch(&a1, &table, &xs);
            for i in 0..n {
                let want =
                    table[(xs[i] as usize + size - alphas[i] as usize) % size].wrapping_mul(beta);
                assert_eq!(d0[i].wrapping_add(d1[i]), want, "k={k} i={i}");
                if i % 100 == 0 {
                    assert_eq!(d0[i], eval_dot(&a0.key(i), &table, xs[i]));
                }
            }
        }
    }

    fn check_dot2<W: Word>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for &(kx, ky) in &[(0u32, 5u32), (5, 0), (1, 1), (1, 2), (3, 4), (6, 6), (2, 9)] {
            let (nx, ny) = (1usize << kx, 1usize << ky);
            let k = kx + ky;
            let (rx, ry) = (rng.gen_range(0..nx as u32), rng.gen_range(0..ny as u32));
            let beta: W = W::from_u64(rng.gen());
            let alpha = (rx << ky) | ry;
            let table = rand_words::<W>(&mut rng, nx * ny);
            let mut keys = (Vec::new(), Vec::new());
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for _ in 0..5 {
                let (k0, k1) = gen(k, alpha, beta, &mut rng);
                let (x, y) = (rng.gen_range(0..nx as u32), rng.gen_range(0..ny as u32));
                let (xh, yh) = ((x + rx) % nx as u32, (y + ry) % ny as u32);
                let r = eval_dot2(&k0, &table, kx, ky, xh, yh)
                    .wadd(eval_dot2(&k1, &table, kx, ky, xh, yh));
                // Per-axis rotation: the masked pair reads T[x, y].
                assert_eq!(
                    r,
                    table[x as usize * ny + y as usize].wmul(beta),
                    "kx={kx} ky={ky}"
                );
                // Against the naive double sum over eval_full.
                let u0 = eval_full(&k0);
                let mut naive = W::ZERO;
                for a in 0..nx {
                    for b in 0..ny {
                        let t =
                            table[((xh as usize + nx - a) % nx) * ny + (yh as usize + ny - b) % ny];
                        naive = naive.wadd(t.wmul(u0[a * ny + b]));
                    }
                }
                assert_eq!(eval_dot2(&k0, &table, kx, ky, xh, yh), naive);
                keys.0.push(k0);
                keys.1.push(k1);
                xs.push(xh);
                ys.push(yh);
            }
            let (keys0, keys1) = (DpfKeys::from_keys(&keys.0), DpfKeys::from_keys(&keys.1));
            let b0 = eval_dot2_batch(&keys0, &table, kx, ky, &xs, &ys);
            let b1 = eval_dot2_batch(&keys1, &table, kx, ky, &xs, &ys);
            for i in 0..xs.len() {
                assert_eq!(b0[i], eval_dot2(&keys.0[i], &table, kx, ky, xs[i], ys[i]));
                assert_eq!(b1[i], eval_dot2(&keys.1[i], &table, kx, ky, xs[i], ys[i]));
            }
        }
    }

    #[test]
    fn dpf_dot2_u16() {
        check_dot2::<u16>(36);
    }
    #[test]
    fn dpf_dot2_u32() {
        check_dot2::<u32>(37);
    }
    #[test]
    fn dpf_dot2_u64() {
        check_dot2::<u64>(38);
    }

    /// Every AES backend this CPU has (intrinsics paths) against the portable one: eval_full,
    /// eval_dot2 (single and batched, 1-D and 2-D splits) for k = 1..=16 and all word types.
    fn check_backends_agree<W: Word>(seed: u64) {
        let prg = Prg::fixed();
        let backends = prg.backends();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for k in 1..=16u32 {
            let size = 1usize << k;
            let n = if k <= 10 { 37 } else { 3 };
            let alphas: Vec<u32> = (0..n).map(|_| rng.gen_range(0..size as u32)).collect();
            let beta: W = W::from_u64(rng.gen());
            let (k0, k1) = gen_batch::<W>(k, &alphas, beta, rng.gen());
            let table = rand_words::<W>(&mut rng, size);
            let kx = rng.gen_range(0..=k);
            let ky = k - kx;
            let xs: Vec<u32> = (0..n).map(|_| rng.gen()).collect();
            let ys: Vec<u32> = (0..n).map(|_| rng.gen()).collect();
            for keys in [&k0, &k1] {
                let want = eval_dot2_batch_impl(AesImpl::Portable, keys, &table, kx, ky, &xs, &ys);
                let want1 = eval_dot2_batch_impl(AesImpl::Portable, keys, &table, 0, k, &xs, &xs);
                let (v0, v1) = (keys.view().range(0, 1), keys.view().range(1, 2));
                let full = eval_full_with(AesImpl::Portable, &v0);
                let single = eval_dot2_with(AesImpl::Portable, &v1, &table, kx, ky, xs[1], ys[1]);
                assert_eq!(single, want[1], "k={k}");
                for &be in &backends {
                    let got = eval_dot2_batch_impl(be, keys, &table, kx, ky, &xs, &ys);
                    assert_eq!(got, want, "{be:?} k={k} kx={kx} ky={ky}");
                    let got1 = eval_dot2_batch_impl(be, keys, &table, 0, k, &xs, &xs);
                    assert_eq!(got1, want1, "{be:?} k={k}");
                    assert_eq!(eval_full_with(be, &v0), full, "{be:?} k={k}");
                    assert_eq!(
                        eval_dot2_with(be, &v1, &table, kx, ky, xs[1], ys[1]),
                        single,
                        "{be:?} k={k}"
                    );
                }
            }
        }
    }

    #[test]
    fn backends_agree_u16() {
        check_backends_agree::<u16>(40);
    }
    #[test]
    fn backends_agree_u32() {
        check_backends_agree::<u32>(41);
    }
    #[test]
    fn backends_agree_u64() {
        check_backends_agree::<u64>(42);
    }

    /// The level and leaf kernels of every backend against the portable ones, on random
    /// nodes and correction words, all lengths up to 70 and key shifts 0..=7.
    #[test]
    fn backend_kernels_agree() {
        fn leaves<W: Word>(be: AesImpl, nodes: &[u128], cw: &[u128], shift: u32) -> Vec<W> {
            let mut out = vec![W::ZERO; nodes.len() * (128 / W::BITS) as usize];
            Prg::fixed().dpf_leaves(be, nodes, cw, shift, &mut out);
            out
        }
        let prg = Prg::fixed();
        let mut rng = ChaCha8Rng::seed_from_u64(43);
        let mut block = || (rng.gen::<u128>(), rng.gen::<u128>());
        for n in 0..=70usize {
            for shift in 0..=7u32 {
                let nodes: Vec<u128> = (0..n).map(|_| block().0).collect();
                let cws = ((n.max(1) - 1) >> shift) + 1;
                let (cl, cr): (Vec<u128>, Vec<u128>) = (0..cws).map(|_| block()).unzip();
                let mut want = vec![0u128; 2 * n];
                prg.dpf_level(AesImpl::Portable, &nodes, &mut want, &cl, &cr, shift);
                let want16 = leaves::<u16>(AesImpl::Portable, &nodes, &cl, shift);
                let want32 = leaves::<u32>(AesImpl::Portable, &nodes, &cl, shift);
                let want64 = leaves::<u64>(AesImpl::Portable, &nodes, &cl, shift);
                let mut raw = nodes.clone();
                prg.encrypt_with(AesImpl::Portable, 1, &mut raw);
                for be in prg.backends() {
                    let mut got = vec![0u128; 2 * n];
                    prg.dpf_level(be, &nodes, &mut got, &cl, &cr, shift);
                    assert_eq!(got, want, "{be:?} n={n} shift={shift}");
                    assert_eq!(leaves::<u16>(be, &nodes, &cl, shift), want16, "{be:?}");
                    assert_eq!(leaves::<u32>(be, &nodes, &cl, shift), want32, "{be:?}");
                    assert_eq!(leaves::<u64>(be, &nodes, &cl, shift), want64, "{be:?}");
                    let mut enc = nodes.clone();
                    prg.encrypt_with(be, 1, &mut enc);
                    assert_eq!(enc, raw, "{be:?} n={n}");
                }
            }
        }
        // The portable level kernel against its definition.
        let nodes: Vec<u128> = (0..9).map(|_| block().0).collect();
        let (cl, cr): (Vec<u128>, Vec<u128>) = (0..5).map(|_| block()).unzip();
        let mut next = vec![0u128; 18];
        prg.dpf_level(AesImpl::Portable, &nodes, &mut next, &cl, &cr, 1);
        for (i, &v) in nodes.iter().enumerate() {
            let (sl, tl, sr, tr) = prg.double(v & !1);
            let t = v & 1 == 1;
            let l = (sl | tl as u128) ^ if t { cl[i >> 1] } else { 0 };
            let r = (sr | tr as u128) ^ if t { cr[i >> 1] } else { 0 };
            assert_eq!((next[2 * i], next[2 * i + 1]), (l, r));
        }
    }

    /// The fused leaf-conversion + rotated-dot kernel against leaf words (the one-block
    /// portable kernel on the tweaked nodes) and `rotated_dot2`, on random nodes, tables,
    /// rotations and domain offsets, trees of 1 to 2^6 leaves (tails of the 8-leaf loop).
    #[cfg(target_arch = "x86_64")]
    fn check_fused_dot<W: Word>(seed: u64) {
        let prg = Prg::fixed();
        if !prg.backends().contains(&AesImpl::Vaes512) {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let e = (128 / W::BITS) as usize;
        let lanes = LEAF_BLOCKS * e;
        let min_ky = (512 / W::BITS).trailing_zeros();
        for shift in 0..=6u32 {
            for (kx, ky) in [(0, min_ky), (0, 12), (1, min_ky), (3, min_ky + 1), (2, 9)] {
                let size = 1usize << (kx + ky);
                let words_per_key = lanes << shift;
                if words_per_key > size {
                    continue;
                }
                let table = rand_words::<W>(&mut rng, size);
                let rev2 = reverse_table2_doubled(&table, kx, ky);
                let tab = DotTable {
                    rev2: &rev2,
                    kx,
                    ky,
                };
                let g = 3usize;
                let nodes: Vec<u128> = (0..g << shift).map(|_| rng.gen()).collect();
                let cw: Vec<u128> = (0..LEAF_BLOCKS * g).map(|_| rng.gen()).collect();
                let xs: Vec<u32> = (0..g).map(|_| rng.gen()).collect();
                let ys: Vec<u32> = (0..g).map(|_| rng.gen()).collect();
                let starts = (size - words_per_key) / words_per_key;
                let j0 = rng.gen_range(0..=starts) * words_per_key;
                let mut got = vec![W::ZERO; g];
                prg.dpf_leaves_dot(
                    AesImpl::Vaes512,
                    &nodes,
                    &cw,
                    shift,
                    &tab,
                    &xs,
                    &ys,
                    j0,
                    &mut got,
                );
                let mut words = vec![W::ZERO; nodes.len() * lanes];
                for (q, &v) in nodes.iter().enumerate() {
                    for i in 0..LEAF_BLOCKS {
                        let c = [cw[LEAF_BLOCKS * (q >> shift) + i]];
                        let at = q * lanes + i * e;
                        let node = [v ^ leaf_tweak(i)];
                        prg.dpf_leaves(AesImpl::Portable, &node, &c, 0, &mut words[at..at + e]);
                    }
                }
                for i in 0..g {
                    let ws = &words[i * words_per_key..(i + 1) * words_per_key];
                    let want = crate::lut::rotated_dot2(
                        crate::backend::Simd::active(),
                        &crate::lut::reverse_table2(&table, kx, ky),
                        kx,
                        ky,
                        xs[i],
                        ys[i],
                        j0,
                        ws,
                    );
                    assert_eq!(got[i], want, "shift={shift} kx={kx} ky={ky} j0={j0} i={i}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fused_dot_kernel() {
        check_fused_dot::<u16>(44);
        check_fused_dot::<u32>(45);
        check_fused_dot::<u64>(46);
    }

    /// The blocks of one leaf are independent PRG outputs: with the tweaks missing, the
    /// four blocks of every leaf off the path (t = 0 for both parties) would be equal.
    #[test]
    fn leaf_blocks_are_distinct() {
        let mut rng = ChaCha8Rng::seed_from_u64(47);
        for k in [4u32, 8, 11] {
            let (k0, k1) = gen::<u32, _>(k, rng.gen_range(0..1 << k), 1, &mut rng);
            assert_eq!(k0.cw_out.len(), 16);
            for key in [&k0, &k1] {
                for leaf in eval_full(key).chunks_exact(16) {
                    let b: Vec<&[u32]> = leaf.chunks_exact(4).collect();
                    for i in 0..4 {
                        for j in i + 1..4 {
                            assert_ne!(b[i], b[j], "k={k} blocks {i} and {j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn key_size_formula() {
        // k = 12 over Z/2^32: 8 levels, 4-block leaves, 228 bytes (about 1.8 kbit).
        assert_eq!(key_bytes(12, 32), 1 + 16 + 128 + 2 + 64);
        assert_eq!(key_bytes(1, 32), 1 + 16 + 8);
        assert_eq!(key_bytes(3, 16), 1 + 16 + 16);
        assert_eq!(key_bytes(4, 32), 1 + 16 + 64);
        assert_eq!(key_bytes(5, 16), 1 + 16 + 64);
        assert_eq!(key_bytes(6, 16), 1 + 16 + 16 + 1 + 64);
        assert_eq!(key_bytes(24, 64), 1 + 16 + 21 * 16 + 6 + 64);
        for k in 1..=MAX_K {
            for bits in [16u32, 32, 64] {
                let nu = k.min((512 / bits).trailing_zeros());
                let d = (k - nu) as f64;
                let approx = (d * 130.0 + 128.0 + ((1u32 << nu) * bits) as f64) / 8.0;
                assert!((key_bytes(k, bits) as f64 - approx).abs() <= 2.0);
            }
        }
    }

    /// A batch is its keys: the same bytes as the keys written one by one, the same keys
    /// back (`key(i)`), the same evaluation; a batch that mixes parties, is cut short or
    /// has a corrupt key is refused.
    #[test]
    fn key_batches_round_trip() {
        let mut rng = ChaCha8Rng::seed_from_u64(44);
        for &k in &[1u32, 3, 8, 9, 13] {
            let n = 19;
            let alphas: Vec<u32> = (0..n).map(|_| rng.gen_range(0..1u32 << k)).collect();
            let (b0, b1) = gen_batch::<u32>(k, &alphas, 7, rng.gen());
            assert_eq!((b0.len(), b0.k(), b0.party(), b1.party()), (n, k, 0, 1));
            let singles: Vec<DpfKey<u32>> = (0..n).map(|i| b1.key(i)).collect();
            assert_eq!(DpfKeys::from_keys(&singles), b1);
            let mut bytes = Vec::new();
            b1.write_to(&mut bytes);
            let mut one_by_one = Vec::new();
            singles.iter().for_each(|key| key.write_to(&mut one_by_one));
            assert_eq!(bytes, one_by_one);
            assert_eq!(bytes.len(), n * key_bytes(k, 32));
            let (back, used) = DpfKeys::<u32>::read_from(k, n, &bytes).unwrap();
            assert_eq!((&back, used), (&b1, bytes.len()));
            let table = rand_words::<u32>(&mut rng, 1 << k);
            let xs: Vec<u32> = (0..n).map(|_| rng.gen()).collect();
            let (e0, e1) = (
                eval_dot_batch(&b0, &table, &xs),
                eval_dot_batch(&back, &table, &xs),
            );
            for i in 0..n {
                assert_eq!(e1[i], eval_dot(&singles[i], &table, xs[i]));
                let want = table[(xs[i].wrapping_sub(alphas[i]) & ((1 << k) - 1)) as usize];
                assert_eq!(
                    e0[i].wrapping_add(e1[i]),
                    want.wrapping_mul(7),
                    "k={k} i={i}"
                );
            }
            // Short, mixed parties, corrupt key in the middle.
            assert!(matches!(
                DpfKeys::<u32>::read_from(k, n, &bytes[..bytes.len() - 1]),
                Err(DpfError::Truncated { .. })
            ));
            let mut mixed = bytes.clone();
            b0.key(3).write_to(&mut mixed);
            assert!(DpfKeys::<u32>::read_from(k, n + 1, &mixed).is_err());
            let mut bad = bytes.clone();
            bad[5 * key_bytes(k, 32) + 1] |= 1; // seed LSB of key 5
            assert!(matches!(
                DpfKeys::<u32>::read_from(k, n, &bad),
                Err(DpfError::NonCanonical(_))
            ));
            assert!(matches!(
                DpfKeys::<u32>::read_from(0, n, &bytes),
                Err(DpfError::BadDomain(0))
            ));
            // A count beyond the bytes is refused before anything is reserved.
            assert!(DpfKeys::<u32>::read_from(k, usize::MAX, &bytes).is_err());
        }
    }

    #[test]
    fn read_from_rejects_bad_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(39);
        for &k in &[1u32, 2, 5, 8, 12, 24] {
            let (k0, k1) = gen::<u32, _>(k, 1, 5, &mut rng);
            let mut buf = Vec::new();
            k0.write_to(&mut buf);
            for cut in [0, 1, 16, buf.len() / 2, buf.len() - 1] {
                assert!(matches!(
                    DpfKey::<u32>::read_from(k, &buf[..cut]),
                    Err(DpfError::Truncated { .. })
                ));
            }
            assert!(DpfKey::<u32>::read_from(k, &buf).is_ok());
            // Reading with the wrong k either fails or yields a different key.
            assert!(matches!(
                DpfKey::<u32>::read_from(0, &buf),
                Err(DpfError::BadDomain(0))
            ));
            assert!(matches!(
                DpfKey::<u32>::read_from(25, &buf),
                Err(DpfError::BadDomain(25))
            ));
            // Corrupted header / seed LSB.
            let mut bad = buf.clone();
            bad[0] = 0x7;
            assert!(matches!(
                DpfKey::<u32>::read_from(k, &bad),
                Err(DpfError::BadHeader(7))
            ));
            let mut bad = buf.clone();
            bad[0] = 0x1; // party 1 with control bit 0
            assert!(DpfKey::<u32>::read_from(k, &bad).is_err());
            let mut bad = buf.clone();
            bad[1] |= 1;
            assert!(matches!(
                DpfKey::<u32>::read_from(k, &bad),
                Err(DpfError::NonCanonical(_))
            ));
            // Party 1's key round-trips too.
            let mut b1 = Vec::new();
            k1.write_to(&mut b1);
            assert_eq!(DpfKey::<u32>::read_from(k, &b1).unwrap().0, k1);
            // Random bytes: with this seed, every attempt is rejected.
            for _ in 0..50 {
                let len = rng.gen_range(0..2 * buf.len());
                let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                assert!(DpfKey::<u32>::read_from(k, &junk).is_err());
            }
        }
        // Random single-byte corruptions never panic (Ok or Err, both fine).
        let (k0, _) = gen::<u16, _>(13, 77, 9, &mut rng);
        let mut buf = Vec::new();
        k0.write_to(&mut buf);
        for _ in 0..500 {
            let mut bad = buf.clone();
            let at = rng.gen_range(0..bad.len());
            bad[at] ^= 1 << rng.gen_range(0..8);
            let _ = DpfKey::<u16>::read_from(13, &bad);
            let _ =
                DpfKey::<u16>::read_from(rng.gen_range(0..30), &bad[..rng.gen_range(0..bad.len())]);
        }
        // Errors display.
        let e = DpfKey::<u16>::read_from(3, &[]).unwrap_err();
        assert!(e.to_string().contains("truncated"));
        let _: &dyn std::error::Error = &e;
    }
}
