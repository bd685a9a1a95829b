//! Block 2: secret x secret matmul on masked operands (Q K^T, P V), with an optional
//! private scalar c of P0 folded in at no extra flight.
//!   Z = X^ Y^ - X^ r_Y - r_X Y^ + r_X r_Y, with <r_X r_Y> from the dealer;
//!   c Z: register c = E_c + A_c, the dealer also deals <A_c r_X>, <A_c r_Y>, <A_c r_X r_Y>.

use crate::blocks::{vadd, vneg, vsub};
use crate::engine::{need, Additive, Engine, Masked, Role};
use crate::error::{shape_err, Result};
use crate::registry::need_model;
use crate::ring::Ring;
use kernels::ops::matmul_batched;

fn dims3(s: &[usize]) -> Option<(usize, usize, usize)> {
    match s {
        [a, b] => Some((1, *a, *b)),
        [b, m, k] => Some((*b, *m, *k)),
        _ => None,
    }
}

fn scale<R: Ring>(c: R, v: &[R]) -> Vec<R> {
    v.iter().map(|x| x.wmul(c)).collect()
}

impl Engine {
    /// c * X Y for masked X (batch, m, k) and Y (batch, k, n), x^ and y^ at both parties;
    /// `c` names a registered private scalar of P0 (or None for c = 1). Output additive.
    /// Offline: dealer -> P1 batch m n w bytes (x4 with c). Online: no message; P0 two or
    /// three ring matmuls, P1 two.
    pub fn matmul_masked<R: Ring>(
        &mut self,
        x: &Masked<R>,
        y: &Masked<R>,
        c: Option<&str>,
    ) -> Result<Additive<R>> {
        let (bx, m, k) =
            dims3(&x.shape).ok_or_else(|| shape_err("matmul", format!("{:?}", x.shape)))?;
        let (by, k2, n) =
            dims3(&y.shape).ok_or_else(|| shape_err("matmul", format!("{:?}", y.shape)))?;
        if bx != by || k != k2 {
            return Err(shape_err(
                "matmul",
                format!("{:?} x {:?}", x.shape, y.shape),
            ));
        }
        let b = bx;
        let nz = b * m * n;
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank >= 2") = n;
        let mm = |p: &[R], q: &[R]| matmul_batched(p, q, b, m, k, n);
        let mut st = self.begin(true, false)?;
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let (rx, ry) = (need(&x.r, "r_X")?, need(&y.r, "r_Y")?);
                let p = mm(rx, ry);
                st.deal(&p)?;
                if let Some(c) = c {
                    let ac = self.reg.get(c)?.a::<R>()?[0];
                    st.deal(&scale(ac, ry))?;
                    st.deal(&scale(ac, rx))?;
                    st.deal(&scale(ac, &p))?;
                }
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => {
                let z = mm(need(&x.hat, "X")?, need(&y.hat, "Y")?);
                Some(match c {
                    Some(c) => scale(self.reg.get(c)?.m::<R>()?[0], &z),
                    None => z,
                })
            }
            (role, false) => {
                let p: Vec<R> = st.share(role, nz)?;
                let extra = if c.is_some() {
                    let ay: Vec<R> = st.share(role, y.len())?;
                    let ax: Vec<R> = st.share(role, x.len())?;
                    let axy: Vec<R> = st.share(role, nz)?;
                    Some((ay, ax, axy))
                } else {
                    None
                };
                self.check_consumed(&st)?;
                self.push_prep((p, extra))?;
                None
            }
            (role, true) => {
                #[allow(clippy::type_complexity)]
                let (p, extra): (Vec<R>, Option<(Vec<R>, Vec<R>, Vec<R>)>) =
                    self.pop_prep("matmul")?;
                let (xh, yh) = (need(&x.hat, "X^")?, need(&y.hat, "Y^")?);
                let (rx, ry) = (need(&x.r, "r_X share")?, need(&y.r, "r_Y share")?);
                // the party's shares of c r_Y, c r_X and c r_X r_Y (c = 1: r_Y, r_X, p)
                let (cy, cx, cxy, cval) = match (c, extra) {
                    (Some(name), Some((ay, ax, axy))) => {
                        let e_c = self.reg.get(name)?.e::<R>()?[0];
                        let cval = if role == Role::P0 {
                            Some(R::from_i64(need_model(self)?.vector(name)?[0]))
                        } else {
                            None
                        };
                        (
                            vadd(&scale(e_c, ry), &ay),
                            vadd(&scale(e_c, rx), &ax),
                            vadd(&scale(e_c, &p), &axy),
                            cval,
                        )
                    }
                    _ => (ry.clone(), rx.clone(), p, Some(R::ONE)),
                };
                let t = vadd(&mm(xh, &cy), &mm(&cx, yh));
                if role == Role::P0 {
                    // c X^ Y^ - X^ (c r_Y)_0 - (c r_X)_0 Y^ + (c r_X r_Y)_0
                    let c0 = cval.unwrap_or(R::ONE);
                    let xy = mm(xh, yh);
                    Some(vadd(&vsub(&scale(c0, &xy), &t), &cxy))
                } else {
                    Some(vadd(&vneg(&t), &cxy))
                }
            }
        };
        Ok(Additive { shape, s })
    }
}
