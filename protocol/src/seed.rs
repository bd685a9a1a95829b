//! Where every random value comes from.
//!
//! The dealer holds one master seed. From it, ChaCha12 streams are derived per purpose and
//! per operation index, so that
//! - P0's share of any dealt value is expanded from the P0 seed (sent once, 32 bytes)
//!   instead of being sent (PROTOCOL.md, "Dealer material");
//! - the masks r of a run can be regenerated from the mask seed alone, which is how the
//!   plaintext reference reproduces the carries of a secure run bit for bit;
//! - a run is reproducible from `--seed`.

use crate::ring::Ring;
use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

pub type Seed = [u8; 32];

/// The purposes a stream is drawn for; part of the stream id, so streams never overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// Masks r of masked values (known to the dealer only).
    Mask = 1,
    /// P0's share of every dealt additive sharing.
    P0Share = 2,
    /// Dealer-internal randomness (DPF roots).
    Material = 3,
    /// Registration masks A_M of P0's private tensors.
    Register = 4,
}

/// A ChaCha12 stream for (`seed`, `purpose`, `index`).
pub fn stream(seed: &Seed, purpose: Purpose, index: u64) -> ChaCha12Rng {
    let mut r = ChaCha12Rng::from_seed(*seed);
    r.set_stream(((purpose as u64) << 56) ^ (index & ((1 << 56) - 1)));
    r
}

/// `n` uniform ring elements.
pub fn uniform<R: Ring>(rng: &mut impl RngCore, n: usize) -> Vec<R> {
    let mut v = vec![R::ZERO; n];
    rng.fill_bytes(bytemuck::cast_slice_mut(&mut v));
    v
}

/// The dealer's seeds, derived from one master seed.
#[derive(Clone, Debug)]
pub struct DealerSeeds {
    pub mask: Seed,
    pub p0: Seed,
    pub material: Seed,
}

impl DealerSeeds {
    pub fn from_master(master: u64) -> Self {
        let mut r = ChaCha12Rng::seed_from_u64(master);
        let mut s = || {
            let mut x = [0u8; 32];
            r.fill_bytes(&mut x);
            x
        };
        DealerSeeds {
            mask: s(),
            p0: s(),
            material: s(),
        }
    }
    /// Fresh seeds from the operating system's randomness.
    pub fn random() -> Self {
        use rand::RngCore as _;
        let mut r = rand::rngs::OsRng;
        let mut s = || {
            let mut x = [0u8; 32];
            r.fill_bytes(&mut x);
            x
        };
        DealerSeeds {
            mask: s(),
            p0: s(),
            material: s(),
        }
    }
}

/// Stable 56-bit id of a registered tensor's name (FNV-1a), used as its stream index.
pub fn name_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h & ((1 << 56) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let s = DealerSeeds::from_master(7);
        let a: Vec<u32> = uniform(&mut stream(&s.mask, Purpose::Mask, 3), 8);
        let b: Vec<u32> = uniform(&mut stream(&s.mask, Purpose::Mask, 3), 8);
        let c: Vec<u32> = uniform(&mut stream(&s.mask, Purpose::Mask, 4), 8);
        let d: Vec<u32> = uniform(&mut stream(&s.mask, Purpose::P0Share, 3), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(s.mask, s.p0);
        assert_ne!(name_id("L0.q"), name_id("L0.k"));
    }
}
