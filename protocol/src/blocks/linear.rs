//! Block 1: the private-weight linear layer Z = X W_eff + b, W_eff = diag(g) W diag(a)
//! registered, X masked with x^ at P0:  X W = X^ W - r_X E_W - r_X A_W.

use crate::blocks::{vadd, vneg};
use crate::engine::{need, Engine, Masked, Role, Window};
use crate::error::{shape_err, Result};
use crate::net::PartyId;
use crate::registry::need_model;
use crate::ring::{self, Ring};

impl Engine {
    /// Private-weight linear layer `name` on [[X]] (x^ at P0); returns [[Z]] with Z^ at P0
    /// and, at P1, only the index bits of `windows` (what the next tables need).
    ///
    /// Offline: dealer -> P1 2 n d_out w bytes (shares of r_X A_W and r_Z); P1 -> P0 its
    /// share of Z + r_Z, n d_out w bytes; each party one ring matmul r_X,b E_W.
    /// Online: P0 alone runs the 1-bit (or k-bit) kernel on X^ and sends P1
    /// n d_out sum(k) bits, one flight (none when `windows` is empty); with
    /// [`crate::Truncation::Exact`], n d_out sum(j + k) bits (the bits below each window).
    pub fn linear<R: Ring>(
        &mut self,
        x: &Masked<R>,
        name: &str,
        windows: &[Window],
    ) -> Result<Masked<R>> {
        let (d_in, d_out) = self.reg.get(name)?.dims;
        let rows = x.shape.iter().rev().skip(1).product::<usize>();
        if x.shape.last() != Some(&d_in) {
            return Err(shape_err(
                "linear",
                format!("{name}: input {:?}, weights {d_in}x{d_out}", x.shape),
            ));
        }
        // Every role checks the windows before the operation starts, so all fail alike
        // (ring::pack_bits supports 1 <= k <= 32; bits beyond the ring are no window).
        if let Some(w) = windows
            .iter()
            .find(|w| w.k == 0 || w.k > 32 || w.j + w.k > R::BITS)
        {
            return Err(shape_err(
                "linear",
                format!("{name}: window [{}, {}) in Z/2^{}", w.j, w.j + w.k, R::BITS),
            ));
        }
        // Exact truncation needs the bits below each window too (the carry's comparison).
        let windows: Vec<Window> = windows.iter().map(|w| self.sent_window(*w)).collect();
        let windows = windows.as_slice();
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("nonempty") = d_out;
        let nz = rows * d_out;
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let out = |hat, r, win| Masked {
            shape: shape.clone(),
            hat,
            r: Some(r),
            win,
        };
        match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let rz: Vec<R> = st.mask(nz);
                let a_w = self.reg.get(name)?.a::<R>()?;
                let t = kernels::ops::matmul(need(&x.r, "r_X")?, a_w, rows, d_in, d_out);
                st.deal(&t)?;
                st.deal(&rz)?;
                self.ship(st, false)?;
                Ok(out(None, rz, vec![]))
            }
            (Role::Plain, _) => {
                let q = need_model(self)?.linear(name)?;
                let z = q.apply(need(&x.hat, "value")?, rows);
                let rz = st.mask(nz);
                Ok(out(Some(z), rz, vec![]))
            }
            (role, false) => {
                let t: Vec<R> = st.share(role, nz)?;
                let rz: Vec<R> = st.share(role, nz)?;
                self.check_consumed(&st)?;
                let e_w = self.reg.get(name)?.e::<R>()?;
                let re = kernels::ops::matmul(need(&x.r, "r_X share")?, e_w, rows, d_in, d_out);
                // this party's share of Z + r_Z minus X^ W: -(r_X,b E_W + t_b) + r_Z,b
                let mine = vadd(&vneg(&vadd(&re, &t)), &rz);
                if role == Role::P1 {
                    let mut buf = vec![];
                    ring::encode(&mine, &mut buf);
                    self.ctx.send(PartyId::P0, tag, buf)?;
                    self.push_prep(rz.clone())?;
                } else {
                    let buf = self.ctx.recv(PartyId::P1, tag)?;
                    let theirs: Vec<R> =
                        ring::decode_exact(&buf, nz, PartyId::P1, "linear offline")?;
                    self.push_prep((rz.clone(), vadd(&mine, &theirs)))?;
                }
                Ok(out(None, rz, vec![]))
            }
            (Role::P0, true) => {
                let (rz, offset): (Vec<R>, Vec<R>) = self.pop_prep("linear")?;
                let q = need_model(self)?.linear(name)?;
                let zhat = vadd(&q.apply(need(&x.hat, "X^ at P0")?, rows), &offset);
                if windows.is_empty() {
                    return Ok(out(Some(zhat), rz, vec![]));
                }
                let mut buf = vec![];
                for w in windows {
                    let idx: Vec<u32> = zhat.iter().map(|v| v.window(w.j, w.k)).collect();
                    ring::pack_bits(&idx, w.k, &mut buf);
                }
                self.ctx.send(PartyId::P1, tag, buf)?;
                Ok(out(Some(zhat), rz, vec![]))
            }
            (Role::P1, true) => {
                let rz: Vec<R> = self.pop_prep("linear")?;
                if windows.is_empty() {
                    return Ok(out(None, rz, vec![]));
                }
                let buf = self.ctx.recv(PartyId::P0, tag)?;
                let mut rest = buf.as_slice();
                let mut win = Vec::with_capacity(windows.len());
                for w in windows {
                    let (idx, r) = ring::unpack_bits(rest, nz, w.k, PartyId::P0, "index bits")?;
                    rest = r;
                    win.push((*w, idx));
                }
                if !rest.is_empty() {
                    return Err(ring::malformed(
                        PartyId::P0,
                        "index bits",
                        format!("{} trailing bytes", rest.len()),
                    ));
                }
                Ok(out(None, rz, win))
            }
        }
    }
}
