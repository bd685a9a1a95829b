//! Blocks 3-8: table lookups on masked values, with truncation for free by windowed
//! indexing: bits [j, j+k) of x^ minus those of r equal floor(x / 2^j) + c (mod 2^k),
//! c in {0, 1} with P(c = 1) = (x mod 2^j) / 2^j. A table's output ring can differ from
//! its input's: requantization, activation and ring change are one table.

use crate::blocks::bcast_rows;
use crate::engine::{need, Additive, Engine, LutMode, Masked, Role, Window};
use crate::error::{shape_err, ProtocolError, Result};
use crate::net::PartyId;
use crate::prep::Keys;
use crate::ring::{self, Ring};
use kernels::dpf::{self, DpfKeys};
use rand_core::RngCore;

/// Rotated tables dealt per batch (the dealer rotates a batch in parallel, then shares
/// it; the batch bounds the extra memory).
const ROT_CHUNK: usize = 4096;

/// A public table over a k-bit window. Entry i holds f at the representative of i
/// (mod 2^k) in [lo, lo + 2^k); `lo` only matters for the plaintext reference's
/// out-of-window statistics (`None`: the table expects indices outside its range, e.g. the
/// low window of a value whose high window selects another table there).
#[derive(Clone, Debug)]
pub struct Table<O> {
    pub k: u32,
    pub lo: Option<i64>,
    pub entries: Vec<O>,
}

impl<O: Ring> Table<O> {
    /// Build a table from f(index) with the index read as a signed or unsigned k-bit
    /// number.
    pub fn from_fn(k: u32, signed: bool, f: impl Fn(i64) -> i64) -> Self {
        Self::from_range(k, if signed { -(1i64 << (k - 1)) } else { 0 }, f)
    }

    /// Build a table from f(index) with the index read in [lo, lo + 2^k).
    pub fn from_range(k: u32, lo: i64, f: impl Fn(i64) -> i64) -> Self {
        let n = 1i64 << k;
        let entries = (0..n)
            .map(|i| O::from_i64(f((i - lo).rem_euclid(n) + lo)))
            .collect();
        Table {
            k,
            lo: Some(lo),
            entries,
        }
    }

    /// The same table without the out-of-window check (see [`Table::lo`]).
    pub fn unchecked(mut self) -> Self {
        self.lo = None;
        self
    }
}

/// Material of one batch of lookups, as a party holds it between its passes.
enum LutPrep<O: Ring> {
    Rotated(Vec<O>),
    Dpf(Keys<O>),
}

impl<O: Ring> crate::prep::Prep for LutPrep<O> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            LutPrep::Rotated(v) => {
                out.push(0);
                v.put(out);
            }
            LutPrep::Dpf(k) => {
                out.push(1);
                k.put(out);
            }
        }
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        let (t, rest) = buf
            .split_first()
            .ok_or_else(|| ring::malformed(PartyId::P0, "spill file", "empty".into()))?;
        *buf = rest;
        Ok(match t {
            0 => LutPrep::Rotated(Vec::get(buf)?),
            1 => LutPrep::Dpf(Keys::get(buf)?),
            _ => {
                return Err(ring::malformed(
                    PartyId::P0,
                    "spill file",
                    format!("lut tag {t}"),
                ))
            }
        })
    }
}

/// The mode a table is dealt in.
pub fn resolve_mode(mode: LutMode, k: u32, out_bits: u32) -> LutMode {
    match mode {
        LutMode::Auto => {
            let rotated = (1usize << k) * (out_bits as usize / 8);
            if dpf::key_bytes(k, out_bits) < rotated {
                LutMode::Dpf
            } else {
                LutMode::Rotated
            }
        }
        m => m,
    }
}

/// A fresh 32-byte seed from the dealer's material stream (key generation: DPF, DCF).
pub(crate) fn material_seed(st: &mut crate::engine::OpState) -> Result<[u8; 32]> {
    let m = st
        .mat
        .as_mut()
        .ok_or_else(|| ProtocolError::Internal("dealer without material stream".into()))?;
    let mut s = [0u8; 32];
    m.fill_bytes(&mut s);
    Ok(s)
}

fn read_keys<O: Ring>(k: u32, n: usize, buf: &[u8]) -> Result<DpfKeys<O>> {
    let (keys, used) = DpfKeys::<O>::read_from(k, n, buf)
        .map_err(|e| ring::malformed(PartyId::Dealer, "DPF key", e.to_string()))?;
    if used != buf.len() {
        return Err(ring::malformed(
            PartyId::Dealer,
            "DPF keys",
            format!("{} trailing bytes", buf.len() - used),
        ));
    }
    Ok(keys)
}

/// The public index bits of window `w` of [[z]] as this party sees them: from x^, or
/// from the index bits received for `w` or for a window that contains it.
pub(crate) fn public_index<R: Ring>(z: &Masked<R>, w: Window) -> Result<Vec<u32>> {
    if let Some(h) = &z.hat {
        return Ok(h.iter().map(|v| v.window(w.j, w.k)).collect());
    }
    z.win
        .iter()
        .find(|(ww, _)| *ww == w)
        .map(|(_, v)| v.clone())
        .or_else(|| {
            let (ww, v) = z
                .win
                .iter()
                .find(|(ww, _)| ww.j <= w.j && w.j + w.k <= ww.j + ww.k)?;
            Some(v.iter().map(|&b| b.window(w.j - ww.j, w.k)).collect())
        })
        .ok_or_else(|| {
            ProtocolError::Internal(format!(
                "no index bits for window [{}, {}) at this party",
                w.j,
                w.j + w.k
            ))
        })
}

/// The dealer's rotation of window `w`: bits [j, j+k) of the whole mask r of [[z]].
pub(crate) fn mask_index<R: Ring>(z: &Masked<R>, w: Window) -> Result<Vec<u32>> {
    Ok(need(&z.r, "mask")?
        .iter()
        .map(|r| r.window(w.j, w.k))
        .collect())
}

fn check_window<R: Ring>(w: Window) -> Result<()> {
    if w.k == 0 || w.k > 24 || w.j + w.k > R::BITS {
        return Err(shape_err(
            "lut",
            format!("window [{}, {}) in Z/2^{}", w.j, w.j + w.k, R::BITS),
        ));
    }
    Ok(())
}

impl Engine {
    /// The plaintext reference's index: window(x + r) - window(r) mod 2^k, which is
    /// floor(x / 2^j) + carry (carry = 0 without the dealer's masks); also counts indices
    /// that left the table's window.
    fn plain_index<R: Ring>(
        &mut self,
        z: &Masked<R>,
        w: Window,
        lo: Option<i64>,
    ) -> Result<Vec<u32>> {
        let v = need(&z.hat, "value")?;
        let n = v.len();
        let zero = vec![R::ZERO; n];
        let r = z.r.as_ref().unwrap_or(&zero);
        let mk = (1u32 << w.k) - 1;
        let mut out = Vec::with_capacity(n);
        for (x, rr) in v.iter().zip(r) {
            let idx = x
                .wadd(*rr)
                .window(w.j, w.k)
                .wrapping_sub(rr.window(w.j, w.k))
                & mk;
            let low = if w.j == 0 { 0 } else { (1u64 << w.j) - 1 };
            let carry = ((x.to_u64() & low) + (rr.to_u64() & low)) >> w.j;
            let f = (x.to_i64() >> w.j) + carry as i64;
            self.plain_stats.carries += carry;
            if lo.is_some_and(|lo| f < lo || f >= lo + (1i64 << w.k)) {
                self.plain_stats.out_of_window += 1;
            }
            out.push(idx);
        }
        self.plain_stats.lookups += n as u64;
        Ok(out)
    }

    /// Public-table lookup T[floor(z / 2^j) + c] on window `w` of [[z]] (blocks 3, 4, 5);
    /// with [`crate::Truncation::Exact`] (and j > 0), T[round(z / 2^j)].
    ///
    /// Offline, rotated mode: dealer -> P1 n 2^k w_out bytes (P0's share from its seed).
    /// DPF mode: dealer -> each party n key_bytes(k) bytes. Online: no message (with
    /// exact truncation, the rounding exchange of [`Self::round_windows`] first); a gather
    /// (rotated) or 2^(k-nu) PRG blocks and 2^k multiply-adds per lookup (DPF).
    pub fn lut<R: Ring, O: Ring>(
        &mut self,
        z: &Masked<R>,
        w: Window,
        t: &Table<O>,
    ) -> Result<Additive<O>> {
        check_window::<R>(w)?;
        if t.k != w.k || t.entries.len() != 1usize << t.k {
            return Err(shape_err(
                "lut",
                format!("table of 2^{} for window k={}", t.k, w.k),
            ));
        }
        let (z, w) = self.table_input(z, w)?;
        let z = z.as_ref();
        let n = z.len();
        let mode = resolve_mode(self.lut_mode, w.k, O::BITS);
        let dpf_mode = mode == LutMode::Dpf;
        let mut st = self.begin(true, dpf_mode)?;
        let shape = z.shape.clone();
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let rho = mask_index(z, w)?;
                if dpf_mode {
                    let seed = material_seed(&mut st)?;
                    let (k0, k1) = kernels::ops::dpf_gen_batch::<O>(w.k, &rho, O::ONE, seed);
                    k0.write_to(&mut st.blob0);
                    k1.write_to(&mut st.blob1);
                } else {
                    // In chunks of tables: parallel rotation, bounded extra memory.
                    for rc in rho.chunks(ROT_CHUNK) {
                        st.deal(&kernels::ops::rotate_tables(&t.entries, w.k, rc))?;
                    }
                }
                self.ship(st, dpf_mode)?;
                None
            }
            (Role::Plain, _) => {
                let idx = self.plain_index(z, w, t.lo)?;
                Some(idx.iter().map(|&i| t.entries[i as usize]).collect())
            }
            (role, false) => {
                let prep = if dpf_mode {
                    let keys = read_keys::<O>(w.k, n, &st.blob1)?;
                    st.cursor = st.blob1.len();
                    LutPrep::Dpf(Keys(keys))
                } else {
                    LutPrep::Rotated(st.share::<O>(role, n << w.k)?)
                };
                self.check_consumed(&st)?;
                self.push_prep(prep)?;
                None
            }
            (_, true) => {
                let prep: LutPrep<O> = self.pop_prep("lut")?;
                let idx = public_index(z, w)?;
                let y = match &prep {
                    LutPrep::Rotated(tabs) => kernels::ops::gather(tabs, w.k, &idx),
                    LutPrep::Dpf(keys) => {
                        kernels::ops::dpf_eval_dot_batch(&keys.0, &t.entries, &idx)
                    }
                };
                self.retire(prep);
                Some(y)
            }
        };
        Ok(Additive { shape, s })
    }

    /// Two-input public table T[x, y] (block 7) with independent rotation per axis:
    /// x per element of [[zx]], y per row of [[zy]] (shape rows x 1) or per element.
    /// Costs as [`Self::lut`] with k = kx + ky (with exact truncation, one rounding
    /// exchange per axis with j > 0).
    pub fn lut2<R: Ring, S: Ring, O: Ring>(
        &mut self,
        zx: &Masked<R>,
        wx: Window,
        zy: &Masked<S>,
        wy: Window,
        t: &Table<O>,
    ) -> Result<Additive<O>> {
        check_window::<R>(wx)?;
        check_window::<S>(wy)?;
        let k = wx.k + wy.k;
        if t.k != k || t.entries.len() != 1usize << k || k > 24 {
            return Err(shape_err("lut2", format!("table of 2^{} for k={k}", t.k)));
        }
        let n = zx.len();
        let rows = zx.shape.iter().rev().skip(1).product::<usize>();
        let cols = *zx.shape.last().unwrap_or(&1);
        if zy.len() != rows && zy.len() != n {
            return Err(shape_err(
                "lut2",
                format!("{:?} vs {:?}", zx.shape, zy.shape),
            ));
        }
        let (zx, wx) = self.table_input(zx, wx)?;
        let (zy, wy) = self.table_input(zy, wy)?;
        let (zx, zy) = (zx.as_ref(), zy.as_ref());
        let mode = resolve_mode(self.lut_mode, k, O::BITS);
        let dpf_mode = mode == LutMode::Dpf;
        let mut st = self.begin(true, dpf_mode)?;
        let shape = zx.shape.clone();
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let rx = mask_index(zx, wx)?;
                let ry = mask_index(zy, wy)?;
                let ry = bcast_rows(&ry, rows, cols);
                if dpf_mode {
                    let alpha: Vec<u32> =
                        rx.iter().zip(&ry).map(|(a, b)| (a << wy.k) | b).collect();
                    let seed = material_seed(&mut st)?;
                    let (k0, k1) = kernels::ops::dpf_gen_batch::<O>(k, &alpha, O::ONE, seed);
                    k0.write_to(&mut st.blob0);
                    k1.write_to(&mut st.blob1);
                } else {
                    for (cx, cy) in rx.chunks(ROT_CHUNK).zip(ry.chunks(ROT_CHUNK)) {
                        st.deal(&kernels::ops::rotate_tables2(
                            &t.entries, wx.k, wy.k, cx, cy,
                        ))?;
                    }
                }
                self.ship(st, dpf_mode)?;
                None
            }
            (Role::Plain, _) => {
                let ix = self.plain_index(zx, wx, t.lo)?;
                let iy = bcast_rows(&self.plain_index(zy, wy, t.lo)?, rows, cols);
                Some(
                    ix.iter()
                        .zip(&iy)
                        .map(|(a, b)| t.entries[((a << wy.k) | b) as usize])
                        .collect(),
                )
            }
            (role, false) => {
                let prep = if dpf_mode {
                    let keys = read_keys::<O>(k, n, &st.blob1)?;
                    st.cursor = st.blob1.len();
                    LutPrep::Dpf(Keys(keys))
                } else {
                    LutPrep::Rotated(st.share::<O>(role, n << k)?)
                };
                self.check_consumed(&st)?;
                self.push_prep(prep)?;
                None
            }
            (_, true) => {
                let prep: LutPrep<O> = self.pop_prep("lut2")?;
                let ix = public_index(zx, wx)?;
                let iy = bcast_rows(&public_index(zy, wy)?, rows, cols);
                let y = match &prep {
                    LutPrep::Rotated(tabs) => kernels::ops::gather2(tabs, wx.k, wy.k, &ix, &iy),
                    LutPrep::Dpf(keys) => {
                        kernels::ops::dpf_eval_dot2_batch(&keys.0, &t.entries, wx.k, wy.k, &ix, &iy)
                    }
                };
                self.retire(prep);
                Some(y)
            }
        };
        Ok(Additive { shape, s })
    }

    /// Private-table lookup (block 6): T registered as `name` (E_T, A_T), T[x] =
    /// sum_j E_T[x^ - j] u[j] + A_T[x^ - r] with u the one-hot at r (DPF keys) and the
    /// rotated A_T dealt as shares.
    /// Offline: dealer -> each party n key_bytes(k) bytes, and -> P1 n 2^k w bytes.
    /// Online: no message (with exact truncation and j > 0, the rounding exchange of
    /// [`Self::round_windows`] first); 2^k multiply-adds per lookup and one gather.
    pub fn lut_private<R: Ring, O: Ring>(
        &mut self,
        z: &Masked<R>,
        w: Window,
        name: &str,
    ) -> Result<Additive<O>> {
        check_window::<R>(w)?;
        let size = 1usize << w.k;
        if self.reg.get(name)?.len != size {
            return Err(shape_err(
                "lut_private",
                format!("{name} is not a 2^{} table", w.k),
            ));
        }
        let (z, w) = self.table_input(z, w)?;
        let z = z.as_ref();
        let n = z.len();
        let mut st = self.begin(true, true)?;
        let shape = z.shape.clone();
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let rho = mask_index(z, w)?;
                let seed = material_seed(&mut st)?;
                let (k0, k1) = kernels::ops::dpf_gen_batch::<O>(w.k, &rho, O::ONE, seed);
                k0.write_to(&mut st.blob0);
                k1.write_to(&mut st.blob1);
                let a_t = self.reg.get(name)?.a::<O>()?.to_vec();
                for rc in rho.chunks(ROT_CHUNK) {
                    st.deal(&kernels::ops::rotate_tables(&a_t, w.k, rc))?;
                }
                self.ship(st, true)?;
                None
            }
            (Role::Plain, _) => {
                let idx = self.plain_index(z, w, Some(0))?;
                let t = self.reg.get(name)?.m::<O>()?;
                Some(idx.iter().map(|&i| t[i as usize]).collect())
            }
            (role, false) => {
                let kb = dpf::key_bytes(w.k, O::BITS) * n;
                if st.blob1.len() < kb {
                    return Err(ring::malformed(PartyId::Dealer, "DPF keys", "short".into()));
                }
                let keys = read_keys::<O>(w.k, n, &st.blob1[..kb])?;
                st.cursor = kb;
                let rot = if role == Role::P1 {
                    st.take::<O>(n * size)?
                } else {
                    st.cursor = st.blob1.len();
                    st.p0_share::<O>(n * size)?
                };
                self.check_consumed(&st)?;
                self.push_prep((Keys(keys), rot))?;
                None
            }
            (_, true) => {
                let (keys, rot): (Keys<O>, Vec<O>) = self.pop_prep("lut_private")?;
                let idx = public_index(z, w)?;
                let e_t = self.reg.get(name)?.e::<O>()?;
                let a = kernels::ops::dpf_eval_dot_batch(&keys.0, e_t, &idx);
                let b = kernels::ops::gather(&rot, w.k, &idx);
                self.retire(keys);
                Some(crate::blocks::vadd(&a, &b))
            }
        };
        Ok(Additive { shape, s })
    }
}
