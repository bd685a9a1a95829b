//! Ring words: `u16`, `u32`, `u64` as elements of Z/2^l with wrapping arithmetic.
//!
//! Every kernel is generic over [`Word`]; the protocol crate re-exports it as its ring
//! trait. Casts between widths are explicit (`from_u64` truncates, `to_u64` zero-extends,
//! `to_i64` sign-extends) so a change of ring is always visible at the call site.

use bytemuck::Pod;
use std::fmt::Debug;

/// An element of Z/2^BITS stored in a machine word of exactly BITS bits.
pub trait Word:
    Pod + Copy + Clone + Default + Debug + Eq + Ord + Send + Sync + std::hash::Hash + 'static
{
    /// The ring is Z/2^BITS.
    const BITS: u32;
    /// 0 of the ring.
    const ZERO: Self;
    /// 1 of the ring.
    const ONE: Self;
    /// Sum mod 2^BITS.
    fn wadd(self, o: Self) -> Self;
    /// Difference mod 2^BITS.
    fn wsub(self, o: Self) -> Self;
    /// Product mod 2^BITS.
    fn wmul(self, o: Self) -> Self;
    /// Additive inverse mod 2^BITS.
    fn wneg(self) -> Self;
    /// Truncating cast from u64 (reduction mod 2^BITS).
    fn from_u64(v: u64) -> Self;
    /// Reduction of a signed integer mod 2^BITS.
    fn from_i64(v: i64) -> Self {
        Self::from_u64(v as u64)
    }
    /// Zero-extending cast.
    fn to_u64(self) -> u64;
    /// Signed representative in [-2^(BITS-1), 2^(BITS-1)).
    fn to_i64(self) -> i64;
    /// Logical right shift (requires s < BITS).
    fn shr(self, s: u32) -> Self;
    /// Left shift mod 2^BITS (requires s < BITS).
    fn shl(self, s: u32) -> Self;
    /// Bitwise AND (used for branch-free selects: `x.band(Self::mask(bit))`).
    fn band(self, o: Self) -> Self;
    /// Bitwise XOR.
    fn bxor(self, o: Self) -> Self;
    /// All ones if `bit`, zero otherwise: a select mask for [`Word::band`].
    #[inline(always)]
    fn mask(bit: bool) -> Self {
        Self::from_u64(0u64.wrapping_sub(bit as u64))
    }
    /// Appends the little-endian encoding (BITS / 8 bytes).
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads the little-endian encoding from the first BITS / 8 bytes of `buf`
    /// (precondition: `buf.len() >= BITS / 8`).
    fn read_le(buf: &[u8]) -> Self;
    /// Bits [j, j+k) as an index (requires k <= 32, j + k <= BITS).
    #[inline]
    fn window(self, j: u32, k: u32) -> u32 {
        ((self.to_u64() >> j) & ((1u64 << k) - 1)) as u32
    }
}

macro_rules! impl_word {
    ($t:ty, $s:ty, $bits:expr) => {
        impl Word for $t {
            const BITS: u32 = $bits;
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline(always)]
            fn wadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline(always)]
            fn wmul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline(always)]
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline(always)]
            fn from_u64(v: u64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                self as u64
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                self as $s as i64
            }
            #[inline(always)]
            fn shr(self, s: u32) -> Self {
                self >> s
            }
            #[inline(always)]
            fn shl(self, s: u32) -> Self {
                self << s
            }
            #[inline(always)]
            fn band(self, o: Self) -> Self {
                self & o
            }
            #[inline(always)]
            fn bxor(self, o: Self) -> Self {
                self ^ o
            }
            #[inline]
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn read_le(buf: &[u8]) -> Self {
                let mut b = [0u8; $bits / 8];
                b.copy_from_slice(&buf[..$bits / 8]);
                <$t>::from_le_bytes(b)
            }
        }
    };
}

impl_word!(u16, i16, 16);
impl_word!(u32, i32, 32);
impl_word!(u64, i64, 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_representatives_and_casts() {
        assert_eq!(u16::from_i64(-1), 0xffff);
        assert_eq!(0xffffu16.to_i64(), -1);
        assert_eq!(0x8000u16.to_i64(), -32768);
        assert_eq!(u32::from_u64(0x1_0000_0005), 5);
        assert_eq!(u64::from_i64(i64::MIN).to_i64(), i64::MIN);
        assert_eq!(0xabcdu32.window(4, 8), 0xbc);
        assert_eq!(u32::MAX.wadd(1), 0);
        assert_eq!(u16::mask(true), 0xffff);
        assert_eq!(u64::mask(false), 0);
        assert_eq!(0xf0f0u16.band(0xff00), 0xf000);
        let mut v = Vec::new();
        0x0102_0304u32.write_le(&mut v);
        assert_eq!(v, [4, 3, 2, 1]);
        assert_eq!(u32::read_le(&v), 0x0102_0304);
    }
}
