//! Truncation with ring change for *linear* tables: c (floor(z / 2^j) + carry) into any
//! ring, from the index bits of a masked z, without a table of 2^k entries.
//!
//! With idx = bits [j, j+k) of z^ and rho = those of r, the truncated value v satisfies
//! v = idx - rho - 2^k w for a wrap w in {-1, 0, 1}. When |v| stays within a quarter of
//! the window (-2^(k-2) <= v < 2^(k-2)), w is a function of the top two bits of idx
//! (public) and of rho (secret): w = 1 if ti - tr = 3, -1 if ti - tr = -3, else 0. The
//! dealer shares rho and the one-hot vector of its top two bits (5 words per lookup); the
//! parties combine them with the public idx. Cost: no online message, a handful of
//! operations per element, instead of a 2^k-entry table (2^(k-nu) PRG blocks and 2^k
//! multiply-adds per lookup in DPF mode). This is the requantization to the residual
//! stream after O and FFN2, and of LayerNorm outputs to the residual encoding.

use crate::engine::{need, Additive, Engine, Masked, Role, Window};
use crate::error::{shape_err, Result};
use crate::ring::Ring;

/// The wrap w for public top bits `ti` and the mask's top bits `tr`.
pub fn wrap(ti: u32, tr: u32) -> i64 {
    match ti as i64 - tr as i64 {
        3 => 1,
        -3 => -1,
        _ => 0,
    }
}

/// v = idx - rho - 2^k wrap(idx >> (k-2), rho >> (k-2)): what the protocol computes.
pub fn trunc_value(idx: u32, rho: u32, k: u32) -> i64 {
    idx as i64 - rho as i64 - (wrap(idx >> (k - 2), rho >> (k - 2)) << k)
}

impl Engine {
    /// c (floor(z / 2^j) + carry) as an additive value in ring O (any width), for masked z
    /// with x^ at P0 (and its window bits or x^ at P1), valid while the truncated value
    /// stays within [-2^(k-2), 2^(k-2)).
    /// Offline: dealer -> P1 5 n w_out bytes. Online: no message (with exact truncation
    /// and j > 0, the rounding exchange of [`Self::round_windows`] first).
    pub fn trunc_ext<R: Ring, O: Ring>(
        &mut self,
        z: &Masked<R>,
        w: Window,
        c: i64,
    ) -> Result<Additive<O>> {
        if w.k < 3 || w.k > 32 || w.j + w.k > R::BITS {
            return Err(shape_err(
                "trunc_ext",
                format!("window [{}, {}) in Z/2^{}", w.j, w.j + w.k, R::BITS),
            ));
        }
        let (z, w) = self.table_input(z, w)?;
        let z = z.as_ref();
        let n = z.len();
        let cc = O::from_i64(c);
        let twok = O::from_u64(1u64 << w.k);
        let mut st = self.begin(true, false)?;
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let rho = crate::blocks::lut::mask_index(z, w)?;
                let rv: Vec<O> = rho.iter().map(|&r| O::from_u64(r as u64)).collect();
                let mut onehot = vec![O::ZERO; 4 * n];
                for (i, &r) in rho.iter().enumerate() {
                    onehot[4 * i + (r >> (w.k - 2)) as usize] = O::ONE;
                }
                st.deal(&rv)?;
                st.deal(&onehot)?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => {
                let v = need(&z.hat, "value")?;
                let zero = vec![R::ZERO; n];
                let r = z.r.as_ref().unwrap_or(&zero);
                let q = 1i64 << (w.k - 2);
                let mut out = Vec::with_capacity(n);
                for (x, rr) in v.iter().zip(r) {
                    let idx = x.wadd(*rr).window(w.j, w.k);
                    let rho = rr.window(w.j, w.k);
                    let t = trunc_value(idx, rho, w.k);
                    let f = x.to_i64() >> w.j;
                    if !(-q..q).contains(&f) {
                        self.plain_stats.out_of_window += 1;
                    }
                    out.push(O::from_i64(t).wmul(cc));
                }
                self.plain_stats.lookups += n as u64;
                Some(out)
            }
            (role, false) => {
                let rv: Vec<O> = st.share(role, n)?;
                let oh: Vec<O> = st.share(role, 4 * n)?;
                self.check_consumed(&st)?;
                self.push_prep((rv, oh))?;
                None
            }
            (role, true) => {
                let (rv, oh): (Vec<O>, Vec<O>) = self.pop_prep("trunc_ext")?;
                let idx = crate::blocks::lut::public_index(z, w)?;
                let p0 = role == Role::P0;
                let out = idx
                    .iter()
                    .enumerate()
                    .map(|(i, &ix)| {
                        let ti = ix >> (w.k - 2);
                        // share of the wrap: sum_t wrap(ti, t) u[t]
                        let mut wr = O::ZERO;
                        for t in 0..4u32 {
                            match wrap(ti, t) {
                                1 => wr = wr.wadd(oh[4 * i + t as usize]),
                                -1 => wr = wr.wsub(oh[4 * i + t as usize]),
                                _ => {}
                            }
                        }
                        let base = if p0 { O::from_u64(ix as u64) } else { O::ZERO };
                        base.wsub(rv[i]).wsub(twok.wmul(wr)).wmul(cc)
                    })
                    .collect();
                Some(out)
            }
        };
        Ok(Additive {
            shape: z.shape.clone(),
            s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrap_formula_recovers_every_quarter_window_value() {
        for k in [3u32, 4, 6] {
            let q = 1i64 << (k - 2);
            let m = 1i64 << k;
            for v in -q..q {
                for rho in 0..m {
                    let idx = (v + rho).rem_euclid(m) as u32;
                    assert_eq!(trunc_value(idx, rho as u32, k), v, "k={k} v={v} rho={rho}");
                }
            }
        }
    }
}
