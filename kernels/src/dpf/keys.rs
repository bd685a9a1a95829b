//! [`DpfKeys`]: one party's batch of DPF keys stored flat (a struct of arrays), the form
//! the batched evaluators read and the parties keep their dealer material in.
//!
//! Why flat: a `Vec<DpfKey>` spreads each key over three places (the struct and two heap
//! blocks, ~300 bytes with the allocator's headers for a k = 8 key over Z/2^32, whose
//! content is 212 bytes), and a batched evaluation then loads every key from cold,
//! scattered memory; here a group of keys is a few contiguous runs that the hardware
//! prefetcher streams. The serialised form is unchanged: a batch is its keys'
//! [`DpfKey::write_to`] encodings back to back.

use super::{shape, CorrectionWord, DpfError, DpfKey, MAX_K};
use crate::word::Word;

/// One party's DPF keys on one domain 2^k (all of one party and one k).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpfKeys<W: Word> {
    k: u32,
    party: u8,
    /// Root seeds (LSB 0), one per key.
    seeds: Vec<u128>,
    /// Seed CWs (LSB 0), key-major: d per key, root level first.
    cw_seeds: Vec<u128>,
    /// Control-bit CWs, key-major like `cw_seeds`: bit 0 t_L, bit 1 t_R.
    cw_bits: Vec<u8>,
    /// Output CWs, key-major: 2^nu words per key.
    cw_out: Vec<W>,
}

/// A borrowed run of keys of a [`DpfKeys`] (what the evaluators work on).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeysRef<'a, W: Word> {
    pub(crate) k: u32,
    pub(crate) party: u8,
    /// Tree levels per key.
    pub(crate) d: usize,
    /// Output CW words per key.
    pub(crate) used: usize,
    seeds: &'a [u128],
    cw_seeds: &'a [u128],
    cw_bits: &'a [u8],
    cw_out: &'a [W],
}

impl<W: Word> DpfKeys<W> {
    /// An empty batch for domain 2^k of `party`. Cost: O(1).
    pub fn new(k: u32, party: u8) -> Self {
        DpfKeys {
            k,
            party: party & 1,
            seeds: Vec::new(),
            cw_seeds: Vec::new(),
            cw_bits: Vec::new(),
            cw_out: Vec::new(),
        }
    }

    /// The batch of `keys` (copied). An empty slice gives an empty batch with k = 1.
    ///
    /// Preconditions (asserted): well-formed keys, all of the same k and party.
    /// Cost: O(total key size).
    pub fn from_keys(keys: &[DpfKey<W>]) -> Self {
        let Some(first) = keys.first() else {
            return DpfKeys::new(1, 0);
        };
        let mut out = DpfKeys::new(first.k, first.party);
        let (_, d, used) = shape(first.k, W::BITS);
        out.seeds.reserve(keys.len());
        out.cw_seeds.reserve(keys.len() * d as usize);
        out.cw_bits.reserve(keys.len() * d as usize);
        out.cw_out.reserve(keys.len() * used);
        for key in keys {
            super::check_key(key);
            assert!(
                key.k == first.k && key.party == first.party,
                "DpfKeys::from_keys: keys of different domains or parties"
            );
            out.push(key);
        }
        out
    }

    fn push(&mut self, key: &DpfKey<W>) {
        self.seeds.push(key.seed & !1);
        for cw in &key.cws {
            self.cw_seeds.push(cw.seed);
            self.cw_bits.push(cw.t_l as u8 | (cw.t_r as u8) << 1);
        }
        self.cw_out.extend_from_slice(&key.cw_out);
    }

    /// Parses `n` keys for domain 2^k serialised back to back (each as
    /// [`DpfKey::write_to`] writes it); returns them and the bytes consumed
    /// (`n·key_bytes(k, BITS)`). Never panics and reserves no more than `buf` can hold:
    /// rejects what [`DpfKey::read_from`] rejects, and keys of two parties in one batch.
    /// Cost: O(n·key size), no allocation per key.
    pub fn read_from(k: u32, n: usize, buf: &[u8]) -> Result<(Self, usize), DpfError> {
        if !(1..=MAX_K).contains(&k) {
            return Err(DpfError::BadDomain(k));
        }
        let kb = super::key_bytes(k, W::BITS);
        let need = n.saturating_mul(kb);
        if buf.len() < need {
            return Err(DpfError::Truncated {
                need,
                got: buf.len(),
            });
        }
        let (_, d, used) = shape(k, W::BITS);
        let d = d as usize;
        let party = buf.first().map_or(0, |h| h & 1);
        let mut out = DpfKeys::new(k, party);
        out.seeds.reserve(n);
        out.cw_seeds.reserve(n * d);
        out.cw_bits.reserve(n * d);
        out.cw_out.reserve(n * used);
        for key in buf[..need].chunks_exact(kb) {
            let p = super::parse_key(k, key, &mut out.cw_seeds, &mut out.cw_bits, &mut out.cw_out)?;
            if p.party != party {
                return Err(DpfError::NonCanonical("keys of two parties in one batch"));
            }
            out.seeds.push(p.seed);
        }
        Ok((out, need))
    }

    /// Appends every key's serialised form ([`DpfKey::write_to`]) back to back.
    /// Cost: O(total key size).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let r = self.view();
        out.reserve(self.len() * super::key_bytes(self.k, W::BITS));
        for i in 0..self.len() {
            super::write_key(
                out,
                self.party * 3,
                self.seeds[i],
                &r.cw_seeds[i * r.d..][..r.d],
                &r.cw_bits[i * r.d..][..r.d],
                r.cw_out(i),
            );
        }
    }

    /// Keeps the first `n` keys (all if there are fewer). Cost: O(1).
    pub fn truncate(&mut self, n: usize) {
        let (_, d, used) = shape(self.k, W::BITS);
        let n = n.min(self.len());
        self.seeds.truncate(n);
        self.cw_seeds.truncate(n * d as usize);
        self.cw_bits.truncate(n * d as usize);
        self.cw_out.truncate(n * used);
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether the batch holds no key.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Domain exponent of every key.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// The party bit of every key.
    pub fn party(&self) -> u8 {
        self.party
    }

    /// Key `i` as a [`DpfKey`] (copied). Preconditions (asserted): i < len. Cost: O(key).
    pub fn key(&self, i: usize) -> DpfKey<W> {
        let r = self.view();
        assert!(i < self.len(), "DpfKeys::key: index out of range");
        DpfKey {
            k: self.k,
            party: self.party,
            seed: self.seeds[i],
            t: self.party == 1,
            cws: (0..r.d)
                .map(|l| {
                    let b = r.cw_bits[i * r.d + l];
                    CorrectionWord {
                        seed: r.cw_seeds[i * r.d + l],
                        t_l: b & 1 == 1,
                        t_r: b & 2 == 2,
                    }
                })
                .collect(),
            cw_out: r.cw_out(i).to_vec(),
        }
    }

    pub(crate) fn view(&self) -> KeysRef<'_, W> {
        let (_, d, used) = shape(self.k, W::BITS);
        KeysRef {
            k: self.k,
            party: self.party,
            d: d as usize,
            used,
            seeds: &self.seeds,
            cw_seeds: &self.cw_seeds,
            cw_bits: &self.cw_bits,
            cw_out: &self.cw_out,
        }
    }
}

impl<'a, W: Word> KeysRef<'a, W> {
    pub(crate) fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Keys a..b.
    pub(crate) fn range(&self, a: usize, b: usize) -> KeysRef<'a, W> {
        KeysRef {
            seeds: &self.seeds[a..b],
            cw_seeds: &self.cw_seeds[a * self.d..b * self.d],
            cw_bits: &self.cw_bits[a * self.d..b * self.d],
            cw_out: &self.cw_out[a * self.used..b * self.used],
            ..*self
        }
    }

    /// Key i's root node (seed with the control bit, = the party bit, in the LSB).
    #[inline]
    pub(crate) fn root(&self, i: usize) -> u128 {
        self.seeds[i] | self.party as u128
    }

    /// Key i's correction words of `level` as (seed | t_L, seed | t_R).
    #[inline]
    pub(crate) fn cw(&self, i: usize, level: usize) -> (u128, u128) {
        let j = i * self.d + level;
        let (s, b) = (self.cw_seeds[j], self.cw_bits[j]);
        (s | (b & 1) as u128, s | (b >> 1) as u128)
    }

    /// Key i's output correction words.
    #[inline]
    pub(crate) fn cw_out(&self, i: usize) -> &'a [W] {
        &self.cw_out[i * self.used..(i + 1) * self.used]
    }

    /// Every key's output correction words, key after key.
    #[inline]
    pub(crate) fn cw_out_all(&self) -> &'a [W] {
        self.cw_out
    }
}
