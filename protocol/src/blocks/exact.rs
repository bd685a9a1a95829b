//! Exact truncation for windowed indexing ([`crate::Truncation::Exact`]).
//!
//! Window [j, j+k) of z^ = z + r gives idx = floor(z / 2^j) + rho + c (mod 2^k), with
//! rho = bits [j, j+k) of r and the carry c = [z^_low < r_low] out of the low j bits
//! (z^_low, r_low: z^ and r mod 2^j). Free indexing keeps c: stochastic rounding. Here
//! the carry is computed and removed, on z + 2^(j-1) (whose masked value is z^ + 2^(j-1),
//! same mask) so that the result is z / 2^j rounded to nearest, not floored (a floor would
//! bias every requantization by half a step):
//!
//! 1. The dealer deals a DCF key pair for `x < r_low` over j bits (payload 1 in Z/2^32)
//!    and shares of a fresh k-bit mask s. Each party evaluates its key at the public
//!    z^_low: additive shares of c.
//! 2. Both open w = c + s mod 2^k (k bits each way, one flight): uniform, since s is.
//! 3. idx' = idx - w = round(z / 2^j) + (rho - s) mod 2^k: exact, masked by rho - s,
//!    which the dealer knows. The table that follows reads window [0, k) of it.
//!
//! What a party sees beyond free indexing: w, uniform and independent of z; its own DCF
//! key, which hides r_low (Boyle et al., Eurocrypt 2021); and, at P1 after a linear
//! layer, the bits of z^ below the window (z^ is uniform: r is). The dealer learns
//! nothing online. Cost per lookup: a DCF key of about 20 j bytes to each party, 2 j + 1
//! AES blocks online, and k bits each way.

use crate::engine::{need, Engine, Masked, Role, Truncation, Window};
use crate::error::{ProtocolError, Result};
use crate::net::PartyId;
use crate::prep::Prep;
use crate::ring::{self, Ring};
use kernels::dcf::{self, DcfKey};
use std::borrow::Cow;

/// DCF keys with outputs in Z/2^32 (of any domain sizes), as a party keeps them between
/// its passes.
pub struct CarryKeys(pub Vec<DcfKey<u32>>);

impl Prep for CarryKeys {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u64).to_le_bytes());
        for k in &self.0 {
            out.push(k.n as u8);
            k.write_to(out);
        }
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        let bad = |m: String| ring::malformed(PartyId::P0, "spill file", m);
        if buf.len() < 8 {
            return Err(bad("short DCF batch header".into()));
        }
        let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
        *buf = &buf[8..];
        // `n` is read from the file: reserve no more keys than its bytes can hold.
        let mut keys = Vec::with_capacity(n.min(buf.len() / dcf::key_bytes(1, 32)));
        for _ in 0..n {
            let (&bits, rest) = buf
                .split_first()
                .ok_or_else(|| bad("DCF batch truncated".into()))?;
            let (key, used) =
                DcfKey::<u32>::read_from(bits as u32, rest).map_err(|e| bad(e.to_string()))?;
            *buf = &rest[used..];
            keys.push(key);
        }
        Ok(CarryKeys(keys))
    }
}

/// Bits [0, b) of z^ as this party sees them (b <= 64): from x^, or from index bits
/// received for a window [0, b') with b' >= b.
fn low_bits<R: Ring>(z: &Masked<R>, b: u32) -> Result<Vec<u64>> {
    let m = bits_mask(b);
    if let Some(h) = &z.hat {
        return Ok(h.iter().map(|v| v.to_u64() & m).collect());
    }
    z.win
        .iter()
        .find(|(ww, _)| ww.j == 0 && ww.k >= b)
        .map(|(_, v)| v.iter().map(|&x| x as u64 & m).collect())
        .ok_or_else(|| {
            ProtocolError::Internal(format!("no low {b} bits of a masked value at this party"))
        })
}

/// 2^b - 1 (b <= 64).
fn bits_mask(b: u32) -> u64 {
    if b >= 64 {
        u64::MAX
    } else {
        (1u64 << b) - 1
    }
}

impl Engine {
    /// The window P0 sends P1 for a table on window `w` of a value only P0 holds: `w`
    /// itself, or with exact truncation, [0, j + k) (the comparison needs the low bits).
    pub(crate) fn sent_window(&self, w: Window) -> Window {
        match self.truncation {
            Truncation::Exact if w.j > 0 => Window { j: 0, k: w.j + w.k },
            _ => w,
        }
    }

    /// The value and window a table on window `w` of [[z]] reads: as given (stochastic
    /// truncation, or nothing to truncate), or [[round(z / 2^j)]] and [0, k).
    pub(crate) fn table_input<'a, R: Ring>(
        &mut self,
        z: &'a Masked<R>,
        w: Window,
    ) -> Result<(Cow<'a, Masked<R>>, Window)> {
        Ok(self.table_inputs(&[(z, w)])?.pop().expect("one item"))
    }

    /// What tables on windows `items` read, prepared together: with exact truncation, the
    /// items with j > 0 are rounded in one operation (one flight for all, instead of one
    /// per table) and come back with window [0, k); the others come back as they are.
    /// Pass the results to the tables instead of the originals.
    pub fn table_inputs<'a, R: Ring>(
        &mut self,
        items: &[(&'a Masked<R>, Window)],
    ) -> Result<Vec<(Cow<'a, Masked<R>>, Window)>> {
        let exact = self.truncation == Truncation::Exact;
        let todo: Vec<(&Masked<R>, Window)> = items
            .iter()
            .filter(|(_, w)| exact && w.j > 0)
            .copied()
            .collect();
        let mut rounded = if todo.is_empty() {
            vec![]
        } else {
            self.round_windows(&todo)?
        }
        .into_iter();
        Ok(items
            .iter()
            .map(|&(z, w)| {
                if exact && w.j > 0 {
                    let r = rounded.next().expect("one result per rounded item");
                    (Cow::Owned(r), Window { j: 0, k: w.k })
                } else {
                    (Cow::Borrowed(z), w)
                }
            })
            .collect())
    }

    /// [[floor(z / 2^j + 1/2) mod 2^k]] (z / 2^j rounded to nearest, ties up) for each
    /// (z, [j, j+k)) of `items` (module doc, on z + 2^(j-1)), in one operation: the
    /// results' x^ are public to both parties; read them through window [0, k).
    ///
    /// Offline: dealer -> each party n dcf::key_bytes(j, 32) bytes per item (n its
    /// elements), and -> P1 4 n bytes (its share of s). Online: P0 <-> P1 n k bits per item
    /// each way, one flight for all items; 2 j + 1 AES blocks per element.
    pub fn round_windows<R: Ring>(
        &mut self,
        items: &[(&Masked<R>, Window)],
    ) -> Result<Vec<Masked<R>>> {
        for (_, w) in items {
            if w.j == 0 || w.j > dcf::MAX_BITS || w.k == 0 || w.k > 32 || w.j + w.k > R::BITS {
                return Err(crate::error::shape_err(
                    "round_windows",
                    format!("window [{}, {}) in Z/2^{}", w.j, w.j + w.k, R::BITS),
                ));
            }
        }
        let total: usize = items.iter().map(|(z, _)| z.len()).sum();
        let mut st = self.begin(true, true)?;
        let tag = st.tag();
        let out = |z: &Masked<R>, hat, r| Masked {
            shape: z.shape.clone(),
            hat,
            r,
            win: vec![],
        };
        // round to nearest: floor((z + 2^(j-1)) / 2^j); z^ + 2^(j-1) masks z + 2^(j-1)
        // with the same r
        let half = |w: &Window| 1u64 << (w.j - 1);
        match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let s_all: Vec<u32> = st.mask::<u32>(total);
                let mut s_dealt = Vec::with_capacity(total);
                let mut res = Vec::with_capacity(items.len());
                let mut off = 0;
                for (z, w) in items {
                    let (n, mk) = (z.len(), bits_mask(w.k) as u32);
                    let r = need(&z.r, "mask")?;
                    let rlow: Vec<u64> = r.iter().map(|v| v.to_u64() & bits_mask(w.j)).collect();
                    let s: Vec<u32> = s_all[off..off + n].iter().map(|v| v & mk).collect();
                    off += n;
                    let seed = crate::blocks::lut::material_seed(&mut st)?;
                    let (k0, k1) = kernels::ops::dcf_gen_batch::<u32>(w.j, &rlow, 1, seed);
                    for k in &k0 {
                        k.write_to(&mut st.blob0);
                    }
                    for k in &k1 {
                        k.write_to(&mut st.blob1);
                    }
                    let rr = r
                        .iter()
                        .zip(&s)
                        .map(|(v, s)| {
                            R::from_u64((v.window(w.j, w.k).wrapping_sub(*s) & mk) as u64)
                        })
                        .collect();
                    s_dealt.extend(s);
                    res.push(out(z, None, Some(rr)));
                }
                st.deal(&s_dealt)?;
                self.ship(st, true)?;
                Ok(res)
            }
            (Role::Plain, _) => items
                .iter()
                .map(|(z, w)| {
                    let v = need(&z.hat, "value")?;
                    let h = R::from_u64(half(w));
                    let f = v
                        .iter()
                        .map(|x| R::from_i64(x.wadd(h).to_i64() >> w.j))
                        .collect();
                    Ok(out(z, Some(f), None))
                })
                .collect(),
            (role, false) => {
                let mut keys = Vec::with_capacity(total);
                let mut rest = st.blob1.as_slice();
                for (z, w) in items {
                    for _ in 0..z.len() {
                        let (key, used) = DcfKey::<u32>::read_from(w.j, rest).map_err(|e| {
                            ring::malformed(PartyId::Dealer, "DCF key", e.to_string())
                        })?;
                        if key.party != (role == Role::P1) as u8 {
                            return Err(ring::malformed(
                                PartyId::Dealer,
                                "DCF key",
                                "a key of the other party".into(),
                            ));
                        }
                        keys.push(key);
                        rest = &rest[used..];
                    }
                }
                st.cursor = st.blob1.len() - rest.len();
                let s: Vec<u32> = if role == Role::P1 {
                    st.take::<u32>(total)?
                } else {
                    st.cursor = st.blob1.len();
                    st.p0_share::<u32>(total)?
                };
                self.check_consumed(&st)?;
                self.push_prep((CarryKeys(keys), s))?;
                Ok(items.iter().map(|(z, _)| out(z, None, None)).collect())
            }
            (role, true) => {
                let (keys, s): (CarryKeys, Vec<u32>) = self.pop_prep("round_windows")?;
                if keys.0.len() != total || s.len() != total {
                    return Err(ProtocolError::Internal(format!(
                        "round_windows: {} keys and {} masks for {total} elements",
                        keys.0.len(),
                        s.len()
                    )));
                }
                let peer = if role == Role::P0 {
                    PartyId::P1
                } else {
                    PartyId::P0
                };
                // this party's k-bit shares of w = c + s, and the public indices, per item
                let mut mine = Vec::with_capacity(items.len());
                let mut idxs = Vec::with_capacity(items.len());
                let mut buf = vec![];
                let mut off = 0;
                for (z, w) in items {
                    let (n, mk, lowm) = (z.len(), bits_mask(w.k) as u32, bits_mask(w.j));
                    let top = bits_mask(w.j + w.k);
                    let v: Vec<u64> = low_bits(*z, w.j + w.k)?
                        .iter()
                        .map(|b| b.wrapping_add(half(w)) & top)
                        .collect();
                    let low: Vec<u64> = v.iter().map(|b| b & lowm).collect();
                    let ks = &keys.0[off..off + n];
                    // (the keys come back from a spill file: checked, never a panic)
                    if ks.iter().any(|k| k.n != w.j) {
                        return Err(ring::malformed(
                            PartyId::Dealer,
                            "DCF key",
                            format!("a key over other than {} bits", w.j),
                        ));
                    }
                    let c = kernels::ops::dcf_eval_batch(ks, &low);
                    let m: Vec<u32> = c
                        .iter()
                        .zip(&s[off..off + n])
                        .map(|(c, s)| c.wadd(*s) & mk)
                        .collect();
                    ring::pack_bits(&m, w.k, &mut buf);
                    mine.push(m);
                    idxs.push(
                        v.iter()
                            .map(|b| (b >> w.j) as u32 & mk)
                            .collect::<Vec<u32>>(),
                    );
                    off += n;
                }
                self.retire(keys);
                self.ctx.send(peer, tag, buf)?;
                let got = self.ctx.recv(peer, tag)?;
                let mut rest = got.as_slice();
                let mut res = Vec::with_capacity(items.len());
                for (((z, w), m), idx) in items.iter().zip(&mine).zip(&idxs) {
                    let mk = bits_mask(w.k) as u32;
                    let (theirs, r) = ring::unpack_bits(rest, z.len(), w.k, peer, "carry opening")?;
                    rest = r;
                    let hat = idx
                        .iter()
                        .zip(m.iter().zip(&theirs))
                        .map(|(i, (a, b))| R::from_u64((i.wrapping_sub(a.wadd(*b)) & mk) as u64))
                        .collect();
                    res.push(out(z, Some(hat), None));
                }
                if !rest.is_empty() {
                    return Err(ring::malformed(
                        peer,
                        "carry opening",
                        format!("{} trailing bytes", rest.len()),
                    ));
                }
                Ok(res)
            }
        }
    }
}
