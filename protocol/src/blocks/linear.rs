//! Block 1: the private-weight linear layer Z = X W_eff + b, W_eff = diag(g) W diag(a)
//! registered, X masked with x^ at P0:  X W = X^ W - r_X E_W - r_X A_W.

use crate::blocks::{bcast_cols, vadd, vmul, vneg};
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
        let windows = self.index_windows::<R>("linear", name, windows)?;
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
                self.exchange_offset(role, tag, &mine, &rz, "linear offline")?;
                Ok(out(None, rz, vec![]))
            }
            (Role::P0, true) => {
                let (rz, offset): (Vec<R>, Vec<R>) = self.pop_prep("linear")?;
                let q = need_model(self)?.linear(name)?;
                let zhat = vadd(&q.apply(need(&x.hat, "X^ at P0")?, rows), &offset);
                self.send_index_bits(tag, &zhat, windows)?;
                Ok(out(Some(zhat), rz, vec![]))
            }
            (Role::P1, true) => {
                let rz: Vec<R> = self.pop_prep("linear")?;
                let (hat, win) = self.recv_index_bits(tag, nz, windows)?;
                Ok(out(hat, rz, win))
            }
        }
    }

    /// P0's private per-column affine map `Z = c x + b` of masked x (x^ at P0; c
    /// registered as `scale`, b P0's vector `bias`), returned as block 1 returns a linear
    /// layer's output: Z^ at P0 and, at P1, only the index bits of `windows`. P1's share
    /// of Z + r_Z, `-(E_c r_1 + <A_c r>_1) + r_Z,1`, does not depend on the input, so it
    /// travels offline; the same value as `scale_private`, `add_private` and an opening
    /// to both, without the opening's two words per element online.
    ///
    /// Offline: dealer -> P1 2 n w bytes (<A_c r>, r_Z); P1 -> P0 n w bytes.
    /// Online: P0 -> P1 n sum(k) bits, one flight (none when `windows` is empty); with
    /// [`crate::Truncation::Exact`], n sum(j + k) bits.
    pub fn affine_private<R: Ring>(
        &mut self,
        x: &Masked<R>,
        scale: &str,
        bias: &str,
        windows: &[Window],
    ) -> Result<Masked<R>> {
        let n = x.len();
        let cols = *x.shape.last().unwrap_or(&1);
        let rows = n.checked_div(cols).unwrap_or(0);
        if self.reg.get(scale)?.len != cols {
            return Err(shape_err("affine", format!("{scale} vs {:?}", x.shape)));
        }
        let windows = self.index_windows::<R>("affine", scale, windows)?;
        let windows = windows.as_slice();
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let out = |hat, r, win| Masked {
            shape: x.shape.clone(),
            hat,
            r: Some(r),
            win,
        };
        let private = |e: &Engine, name: &str| -> Result<Vec<R>> {
            let v: Vec<R> = ring::from_i64s(need_model(e)?.vector(name)?);
            if v.len() != cols {
                return Err(shape_err(
                    "affine",
                    format!("{name}: {} vs {cols}", v.len()),
                ));
            }
            Ok(bcast_cols(&v, rows))
        };
        match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let rz: Vec<R> = st.mask(n);
                let a = bcast_cols(self.reg.get(scale)?.a::<R>()?, rows);
                st.deal(&vmul(&a, need(&x.r, "r_x")?))?;
                st.deal(&rz)?;
                self.ship(st, false)?;
                Ok(out(None, rz, vec![]))
            }
            (Role::Plain, _) => {
                let c = bcast_cols(self.reg.get(scale)?.m::<R>()?, rows);
                let z = vadd(&vmul(&c, need(&x.hat, "x")?), &private(self, bias)?);
                let rz = st.mask(n);
                Ok(out(Some(z), rz, vec![]))
            }
            (role, false) => {
                let t: Vec<R> = st.share(role, n)?;
                let rz: Vec<R> = st.share(role, n)?;
                self.check_consumed(&st)?;
                let e = bcast_cols(self.reg.get(scale)?.e::<R>()?, rows);
                // this party's share of Z + r_Z minus c x^ + b: -(E_c r_b + <A_c r>_b) + r_Z,b
                let mine = vadd(&vneg(&vadd(&vmul(&e, need(&x.r, "r share")?), &t)), &rz);
                self.exchange_offset(role, tag, &mine, &rz, "affine offline")?;
                Ok(out(None, rz, vec![]))
            }
            (Role::P0, true) => {
                let (rz, offset): (Vec<R>, Vec<R>) = self.pop_prep("affine")?;
                let c = private(self, scale)?;
                let cx = vmul(&c, need(&x.hat, "x^ at P0")?);
                let zhat = vadd(&vadd(&cx, &private(self, bias)?), &offset);
                self.send_index_bits(tag, &zhat, windows)?;
                Ok(out(Some(zhat), rz, vec![]))
            }
            (Role::P1, true) => {
                let rz: Vec<R> = self.pop_prep("affine")?;
                let (hat, win) = self.recv_index_bits(tag, n, windows)?;
                Ok(out(hat, rz, win))
            }
        }
    }

    /// Offline, P0 and P1 (block 1's output pattern): P1 sends P0 its share `mine` of
    /// Z + r_Z minus P0's online term and keeps its r_Z share; P0 keeps its r_Z share and
    /// the offset `mine + theirs` it adds online. One message P1 -> P0, n w bytes.
    fn exchange_offset<R: Ring>(
        &mut self,
        role: Role,
        tag: u32,
        mine: &[R],
        rz: &[R],
        what: &'static str,
    ) -> Result<()> {
        if role == Role::P1 {
            let mut buf = vec![];
            ring::encode(mine, &mut buf);
            self.ctx.send(PartyId::P0, tag, buf)?;
            self.push_prep(rz.to_vec())
        } else {
            let buf = self.ctx.recv(PartyId::P1, tag)?;
            let theirs: Vec<R> = ring::decode_exact(&buf, mine.len(), PartyId::P1, what)?;
            self.push_prep((rz.to_vec(), vadd(mine, &theirs)))
        }
    }

    /// The windows P0 sends P1 for tables on `windows` of a value only P0 holds, checked
    /// by every role before the operation starts, so all fail alike
    /// (ring::pack_bits supports 1 <= k <= 32; bits beyond the ring are no window).
    fn index_windows<R: Ring>(
        &self,
        op: &'static str,
        name: &str,
        windows: &[Window],
    ) -> Result<Vec<Window>> {
        if let Some(w) = windows
            .iter()
            .find(|w| w.k == 0 || w.k > 32 || w.j + w.k > R::BITS)
        {
            return Err(shape_err(
                op,
                format!("{name}: window [{}, {}) in Z/2^{}", w.j, w.j + w.k, R::BITS),
            ));
        }
        // Exact truncation needs the bits below each window too (the carry's comparison).
        Ok(windows.iter().map(|w| self.sent_window(*w)).collect())
    }

    /// P0: sends P1 the bits of each window of z^ (no message when `windows` is empty),
    /// or z^ itself when a window is wider than index bits carry (exact truncation's
    /// [0, j + k) past 32 bits): then P1 holds what an opening to both would give it.
    fn send_index_bits<R: Ring>(&mut self, tag: u32, zhat: &[R], windows: &[Window]) -> Result<()> {
        if windows.is_empty() {
            return Ok(());
        }
        let mut buf = vec![];
        if sends_hat(windows) {
            ring::encode(zhat, &mut buf);
        } else {
            for w in windows {
                let idx: Vec<u32> = zhat.iter().map(|v| v.window(w.j, w.k)).collect();
                ring::pack_bits(&idx, w.k, &mut buf);
            }
        }
        self.ctx.send(PartyId::P1, tag, buf)
    }

    /// P1: receives [`Self::send_index_bits`]'s message for n elements: z^ or the
    /// index bits.
    fn recv_index_bits<R: Ring>(
        &mut self,
        tag: u32,
        n: usize,
        windows: &[Window],
    ) -> Result<Received<R>> {
        if windows.is_empty() {
            return Ok((None, vec![]));
        }
        let buf = self.ctx.recv(PartyId::P0, tag)?;
        if sends_hat(windows) {
            let hat = ring::decode_exact(&buf, n, PartyId::P0, "masked output")?;
            return Ok((Some(hat), vec![]));
        }
        let mut rest = buf.as_slice();
        let mut win = Vec::with_capacity(windows.len());
        for w in windows {
            let (idx, r) = ring::unpack_bits(rest, n, w.k, PartyId::P0, "index bits")?;
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
        Ok((None, win))
    }
}

/// What P1 receives from [`Engine::send_index_bits`]: z^, or the index bits per window.
type Received<R> = (Option<Vec<R>>, Vec<(Window, Vec<u32>)>);

/// Whether P0 sends z^ instead of index bits: some window is wider than
/// `ring::pack_bits` packs.
fn sends_hat(windows: &[Window]) -> bool {
    windows.iter().any(|w| w.k > 32)
}
