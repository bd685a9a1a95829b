//! Block 9 (masked products and squares, outputs additive) and block 10's private scalar
//! times a masked value (local given the dealer's <A_c r>).

use crate::blocks::{bcast_cols, bcast_rows, vadd, vmul, vneg, vsub};
use crate::engine::{need, Additive, Engine, Masked, Role};
use crate::error::{shape_err, Result};
use crate::registry::need_model;
use crate::ring::{self, Ring};

fn twice<R: Ring>(v: &[R]) -> Vec<R> {
    v.iter().map(|x| x.wadd(*x)).collect()
}

impl Engine {
    /// x y elementwise for masked x (rows x cols) and y of the same shape or one value per
    /// row (rows x 1), x^ and y^ at both parties.
    /// Offline: dealer -> P1 n w bytes (<r_x r_y>). Online: no message.
    pub fn mul_masked<R: Ring>(&mut self, x: &Masked<R>, y: &Masked<R>) -> Result<Additive<R>> {
        let n = x.len();
        let cols = *x.shape.last().unwrap_or(&1);
        let rows = n.checked_div(cols).unwrap_or(0);
        if y.len() != n && y.len() != rows {
            return Err(shape_err("mul", format!("{:?} x {:?}", x.shape, y.shape)));
        }
        let mut st = self.begin(true, false)?;
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let ry = bcast_rows(need(&y.r, "r_y")?, rows, cols);
                st.deal(&vmul(need(&x.r, "r_x")?, &ry))?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => Some(vmul(
                need(&x.hat, "x")?,
                &bcast_rows(need(&y.hat, "y")?, rows, cols),
            )),
            (role, false) => {
                let q: Vec<R> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep(q)?;
                None
            }
            (role, true) => {
                let q: Vec<R> = self.pop_prep("mul")?;
                let (xh, rx) = (need(&x.hat, "x^")?, need(&x.r, "r_x")?);
                let yh = bcast_rows(need(&y.hat, "y^")?, rows, cols);
                let ry = bcast_rows(need(&y.r, "r_y")?, rows, cols);
                let t = vadd(&vmul(xh, &ry), &vmul(rx, &yh));
                Some(if role == Role::P0 {
                    vadd(&vsub(&vmul(xh, &yh), &t), &q)
                } else {
                    vadd(&vneg(&t), &q)
                })
            }
        };
        Ok(Additive {
            shape: x.shape.clone(),
            s,
        })
    }

    /// x^2 elementwise: x^2 = x^^2 - 2 x^ r + r^2, local given <r^2>.
    /// Offline: dealer -> P1 n w bytes. Online: no message.
    pub fn square_masked<R: Ring>(&mut self, x: &Masked<R>) -> Result<Additive<R>> {
        let n = x.len();
        let mut st = self.begin(true, false)?;
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let r = need(&x.r, "r")?;
                st.deal(&vmul(r, r))?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => {
                let v = need(&x.hat, "x")?;
                Some(vmul(v, v))
            }
            (role, false) => {
                let q: Vec<R> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep(q)?;
                None
            }
            (role, true) => {
                let q: Vec<R> = self.pop_prep("square")?;
                let (xh, r) = (need(&x.hat, "x^")?, need(&x.r, "r")?);
                let t = twice(&vmul(xh, r));
                Some(if role == Role::P0 {
                    vadd(&vsub(&vmul(xh, xh), &t), &q)
                } else {
                    vadd(&vneg(&t), &q)
                })
            }
        };
        Ok(Additive {
            shape: x.shape.clone(),
            s,
        })
    }

    /// c x for P0's private per-column vector c (registered as `name`, one value per
    /// column of x) and masked x with x^ at P0: c x = c x^ - E_c r - A_c r.
    /// Offline: dealer -> P1 n w bytes (<A_c r>). Online: no message.
    pub fn scale_private<R: Ring>(&mut self, x: &Masked<R>, name: &str) -> Result<Additive<R>> {
        let n = x.len();
        let cols = *x.shape.last().unwrap_or(&1);
        let rows = n.checked_div(cols).unwrap_or(0);
        if self.reg.get(name)?.len != cols {
            return Err(shape_err("scale", format!("{name} vs {:?}", x.shape)));
        }
        let mut st = self.begin(true, false)?;
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let a = bcast_cols(self.reg.get(name)?.a::<R>()?, rows);
                st.deal(&vmul(&a, need(&x.r, "r")?))?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => {
                let c = bcast_cols(self.reg.get(name)?.m::<R>()?, rows);
                Some(vmul(&c, need(&x.hat, "x")?))
            }
            (role, false) => {
                let q: Vec<R> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep(q)?;
                None
            }
            (role, true) => {
                let a: Vec<R> = self.pop_prep("scale")?;
                let e = bcast_cols(self.reg.get(name)?.e::<R>()?, rows);
                let er = vadd(&vmul(&e, need(&x.r, "r")?), &a);
                Some(if role == Role::P0 {
                    let c: Vec<R> =
                        bcast_cols(&ring::from_i64s(need_model(self)?.vector(name)?), rows);
                    vsub(&vmul(&c, need(&x.hat, "x^ at P0")?), &er)
                } else {
                    vneg(&er)
                })
            }
        };
        Ok(Additive {
            shape: x.shape.clone(),
            s,
        })
    }
}
