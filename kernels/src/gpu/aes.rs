//! Host side of the WGSL AES (`shaders/aes.wgsl`): the T-table and the expanded round
//! keys of the three fixed DPF keys, in the layout the shader reads.
//!
//! Words are little-endian throughout (a block is the little-endian u128 of
//! [`crate::prg`], word c = AES state column c, byte r = row r), so the round keys are
//! the FIPS-197 key schedule with every word byte-reversed, and T0 is the MixColumns
//! column of a row-0 byte in that byte order.

/// The fixed keys k0, k1 (PRG halves) and k2 (leaf conversion) of [`crate::prg`] (pi's
/// fractional bits). `tests::matches_cpu_prg` checks them against the CPU PRG.
const FIXED_KEYS: [u128; 3] = [
    0x243F_6A88_85A3_08D3_1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0_082E_FA98_EC4E_6C89,
    0x4528_21E6_38D0_1377_BE54_66CF_34E9_0C6C,
];

/// u32 words of the `aes_tab` buffer: 256 T0 entries, then 3 × 44 round-key words.
pub(super) const TAB_WORDS: usize = 256 + 3 * 44;

/// Multiplication by x in GF(2^8) mod x^8 + x^4 + x^3 + x + 1.
fn xtime(b: u8) -> u8 {
    (b << 1) ^ if b & 0x80 != 0 { 0x1b } else { 0 }
}

/// The AES S-box, generated (multiplicative inverse via the 3-power walk, then the
/// affine map) rather than typed in, so there is no table to mistype.
fn sbox() -> [u8; 256] {
    let mut s = [0u8; 256];
    let (mut p, mut q) = (1u8, 1u8);
    loop {
        // p ·= 3, q ·= 3^-1: q stays the inverse of p.
        p ^= xtime(p);
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        let x = q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4);
        s[p as usize] = x ^ 0x63;
        if p == 1 {
            break;
        }
    }
    s[0] = 0x63;
    s
}

/// AES-128 key schedule of `key` (its little-endian bytes are the AES key), as 44
/// little-endian words.
fn expand_key(key: u128, s: &[u8; 256]) -> [u32; 44] {
    let sub = |w: u32| u32::from_le_bytes(w.to_le_bytes().map(|b| s[b as usize]));
    let kb = key.to_le_bytes();
    let mut w = [0u32; 44];
    for (i, wi) in w.iter_mut().take(4).enumerate() {
        *wi = u32::from_le_bytes([kb[4 * i], kb[4 * i + 1], kb[4 * i + 2], kb[4 * i + 3]]);
    }
    let mut rcon = 1u8;
    for i in 4..44 {
        let mut t = w[i - 1];
        if i % 4 == 0 {
            // RotWord moves byte 1 to byte 0: a right rotation of the little-endian word.
            t = sub(t.rotate_right(8)) ^ rcon as u32;
            rcon = xtime(rcon);
        }
        w[i] = w[i - 4] ^ t;
    }
    w
}

/// The `aes_tab` buffer contents (see `shaders/aes.wgsl`).
pub(super) fn table_words() -> Vec<u32> {
    let s = sbox();
    let mut out = Vec::with_capacity(TAB_WORDS);
    for &v in &s {
        let (v1, v2) = (v as u32, xtime(v) as u32);
        out.push(v2 | v1 << 8 | v1 << 16 | (v2 ^ v1) << 24);
    }
    for key in FIXED_KEYS {
        out.extend_from_slice(&expand_key(key, &s));
    }
    debug_assert_eq!(out.len(), TAB_WORDS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Prg;

    /// A line-by-line Rust transcription of `aes_enc` in `shaders/aes.wgsl`.
    fn aes_ref(tab: &[u32], which: usize, blk: u128) -> u128 {
        let t = &tab[..256];
        let rk = &tab[256 + which * 44..][..44];
        let sb = |v: u32| (t[v as usize] >> 8) & 0xff;
        let mut s = [0u32; 4];
        for (c, sc) in s.iter_mut().enumerate() {
            *sc = (blk >> (32 * c)) as u32 ^ rk[c];
        }
        for r in 1..10 {
            let mut n = [0u32; 4];
            for (c, nc) in n.iter_mut().enumerate() {
                *nc = t[(s[c] & 0xff) as usize]
                    ^ t[((s[(c + 1) % 4] >> 8) & 0xff) as usize].rotate_left(8)
                    ^ t[((s[(c + 2) % 4] >> 16) & 0xff) as usize].rotate_left(16)
                    ^ t[(s[(c + 3) % 4] >> 24) as usize].rotate_left(24)
                    ^ rk[4 * r + c];
            }
            s = n;
        }
        let mut out = 0u128;
        for c in 0..4 {
            let v = sb(s[c] & 0xff)
                | sb((s[(c + 1) % 4] >> 8) & 0xff) << 8
                | sb((s[(c + 2) % 4] >> 16) & 0xff) << 16
                | sb(s[(c + 3) % 4] >> 24) << 24;
            out |= ((v ^ rk[40 + c]) as u128) << (32 * c);
        }
        out
    }

    #[test]
    fn sbox_known_entries() {
        let s = sbox();
        assert_eq!((s[0], s[1], s[0x53], s[0xff]), (0x63, 0x7c, 0xed, 0x16));
    }

    #[test]
    fn matches_cpu_prg() {
        let tab = table_words();
        let prg = Prg::fixed();
        let mut x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for _ in 0..50 {
            for which in 0..3 {
                let mut b = [x];
                prg.encrypt(which, &mut b);
                assert_eq!(aes_ref(&tab, which, x), b[0], "key {which}");
            }
            x = x
                .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                .rotate_left(17);
        }
    }
}
