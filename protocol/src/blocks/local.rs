//! Local operations: no message, no dealer material.

use crate::blocks::{bcast_cols, bcast_rows, vadd, vsub};
use crate::engine::{Additive, Engine, Masked, Role};
use crate::error::{shape_err, Result};
use crate::registry::need_model;
use crate::ring::{self, Ring};
use crate::tensor::{Move, Tensor};

fn map_opt<R: Ring>(
    v: &Option<Vec<R>>,
    f: impl Fn(&[R]) -> Result<Vec<R>>,
) -> Result<Option<Vec<R>>> {
    v.as_deref().map(f).transpose()
}

impl Engine {
    /// <a> + <b>.
    pub fn add<R: Ring>(&self, a: &Additive<R>, b: &Additive<R>) -> Result<Additive<R>> {
        if a.shape != b.shape {
            return Err(shape_err("add", format!("{:?} + {:?}", a.shape, b.shape)));
        }
        Ok(Additive {
            shape: a.shape.clone(),
            s: zip_opt(&a.s, &b.s, vadd),
        })
    }
    /// <a> - <b>, with b of the same shape or one value per row.
    pub fn sub<R: Ring>(&self, a: &Additive<R>, b: &Additive<R>) -> Result<Additive<R>> {
        let cols = *a.shape.last().unwrap_or(&1);
        let rows = a.len() / cols.max(1);
        if b.len() != a.len() && b.len() != rows {
            return Err(shape_err("sub", format!("{:?} - {:?}", a.shape, b.shape)));
        }
        Ok(Additive {
            shape: a.shape.clone(),
            s: zip_opt(&a.s, &b.s, |x, y| vsub(x, &bcast_rows(y, rows, cols))),
        })
    }
    /// <a> times a public integer.
    pub fn mul_public<R: Ring>(&self, a: &Additive<R>, c: i64) -> Additive<R> {
        let c = R::from_i64(c);
        Additive {
            shape: a.shape.clone(),
            s: a.s.as_ref().map(|v| v.iter().map(|x| x.wmul(c)).collect()),
        }
    }
    /// Sum over the last axis, kept as an axis of size 1.
    pub fn sum_last<R: Ring>(&self, a: &Additive<R>) -> Additive<R> {
        let cols = *a.shape.last().unwrap_or(&1);
        let mut shape = a.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = 1;
        }
        Additive {
            shape,
            s: a.s.as_ref().map(|v| {
                v.chunks(cols.max(1))
                    .map(|c| c.iter().fold(R::ZERO, |s, x| s.wadd(*x)))
                    .collect()
            }),
        }
    }
    /// <a> + b for P0's private per-column vector b (`name`): P0 adds it to its share.
    pub fn add_private<R: Ring>(&self, a: &Additive<R>, name: &str) -> Result<Additive<R>> {
        let cols = *a.shape.last().unwrap_or(&1);
        let rows = a.len() / cols.max(1);
        let s = match self.role {
            Role::P0 | Role::Plain if a.s.is_some() => {
                let b: Vec<R> = ring::from_i64s(need_model(self)?.vector(name)?);
                if b.len() != cols {
                    return Err(shape_err(
                        "add_private",
                        format!("{name}: {} vs {cols}", b.len()),
                    ));
                }
                Some(vadd(a.s.as_ref().expect("checked"), &bcast_cols(&b, rows)))
            }
            _ => a.s.clone(),
        };
        Ok(Additive {
            shape: a.shape.clone(),
            s,
        })
    }
    /// Reduce an additive value to a smaller ring (valid: reduction commutes with addition).
    pub fn cast_down<S: Ring, T: Ring>(&self, a: &Additive<S>) -> Additive<T> {
        Additive {
            shape: a.shape.clone(),
            s: a.s.as_ref().map(|v| ring::cast_down(v)),
        }
    }
    /// [[x]] - [[y]] with y of the same shape or one value per row: x^ - y^ with mask
    /// r_x - r_y (the dealer knows it).
    pub fn sub_masked<R: Ring>(&self, x: &Masked<R>, y: &Masked<R>) -> Result<Masked<R>> {
        let cols = *x.shape.last().unwrap_or(&1);
        let rows = x.len() / cols.max(1);
        if y.len() != x.len() && y.len() != rows {
            return Err(shape_err(
                "sub_masked",
                format!("{:?} - {:?}", x.shape, y.shape),
            ));
        }
        let f = |a: &[R], b: &[R]| vsub(a, &bcast_rows(b, rows, cols));
        Ok(Masked {
            shape: x.shape.clone(),
            hat: zip_opt(&x.hat, &y.hat, f),
            r: zip_opt(&x.r, &y.r, f),
            win: vec![],
        })
    }
    /// A shape move on a masked value (applied to x^, r and index bits alike).
    pub fn move_masked<R: Ring>(&self, x: &Masked<R>, m: Move) -> Result<Masked<R>> {
        let ap =
            |v: &[R]| -> Result<Vec<R>> { Ok(m.apply(&Tensor::new(&x.shape, v.to_vec())?)?.data) };
        let shape = m.apply(&Tensor::<u8>::zeros(&x.shape))?.shape;
        let win = x
            .win
            .iter()
            .map(|(w, v)| Ok((*w, m.apply(&Tensor::new(&x.shape, v.clone())?)?.data)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Masked {
            shape,
            hat: map_opt(&x.hat, ap)?,
            r: map_opt(&x.r, ap)?,
            win,
        })
    }
    /// Sum the rows of each of `batch` sequences of a masked value: (b n, d) -> (b, d), or
    /// (b, n, d) -> (b, d) for a 3-D value (`batch` is then its first axis). x^ and r are
    /// summed alike (the dealer knows the new mask). Index bits do not survive.
    pub fn sum_rows_masked<R: Ring>(&self, x: &Masked<R>, batch: usize) -> Result<Masked<R>> {
        let (batch, n, d) = match x.shape[..] {
            [b, n, d] => (b, n, d),
            [bn, d] if batch > 0 && bn.is_multiple_of(batch) => (batch, bn / batch, d),
            _ => return Err(shape_err("sum_rows", format!("{:?} / {batch}", x.shape))),
        };
        let f = |v: &[R]| -> Result<Vec<R>> {
            let mut out = vec![R::ZERO; batch * d];
            for (i, row) in v.chunks(d).enumerate() {
                let o = &mut out[(i / n) * d..(i / n + 1) * d];
                for (a, b) in o.iter_mut().zip(row) {
                    *a = a.wadd(*b);
                }
            }
            Ok(out)
        };
        Ok(Masked {
            shape: vec![batch, d],
            hat: map_opt(&x.hat, f)?,
            r: map_opt(&x.r, f)?,
            win: vec![],
        })
    }

    /// Sum over the last axis of a masked value, kept as an axis of size 1 (local: x^ and r
    /// summed alike).
    pub fn sum_last_masked<R: Ring>(&self, x: &Masked<R>) -> Result<Masked<R>> {
        let cols = *x.shape.last().unwrap_or(&1);
        let f = |v: &[R]| -> Result<Vec<R>> {
            Ok(v.chunks(cols.max(1))
                .map(|c| c.iter().fold(R::ZERO, |s, x| s.wadd(*x)))
                .collect())
        };
        let mut shape = x.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = 1;
        }
        Ok(Masked {
            shape,
            hat: map_opt(&x.hat, f)?,
            r: map_opt(&x.r, f)?,
            win: vec![],
        })
    }

    /// <a> - <b> for a of shape (b, m, n) and b of shape (b, n): b is broadcast over the
    /// m rows of each batch element.
    pub fn sub_cols<R: Ring>(&self, a: &Additive<R>, b: &Additive<R>) -> Result<Additive<R>> {
        let (bt, m, n) = match a.shape[..] {
            [bt, m, n] => (bt, m, n),
            _ => return Err(shape_err("sub_cols", format!("{:?}", a.shape))),
        };
        if b.len() != bt * n {
            return Err(shape_err(
                "sub_cols",
                format!("{:?} - {:?}", a.shape, b.shape),
            ));
        }
        let s = zip_opt(&a.s, &b.s, |x, y| {
            let mut out = x.to_vec();
            for (i, row) in out.chunks_mut(n).enumerate() {
                let yb = &y[(i / m) * n..(i / m + 1) * n];
                for (o, v) in row.iter_mut().zip(yb) {
                    *o = o.wsub(*v);
                }
            }
            out
        });
        Ok(Additive {
            shape: a.shape.clone(),
            s,
        })
    }

    /// A shape move on an additive value.
    pub fn move_additive<R: Ring>(&self, a: &Additive<R>, m: Move) -> Result<Additive<R>> {
        let shape = m.apply(&Tensor::<u8>::zeros(&a.shape))?.shape;
        let s = map_opt(&a.s, |v| {
            Ok(m.apply(&Tensor::new(&a.shape, v.to_vec())?)?.data)
        })?;
        Ok(Additive { shape, s })
    }
}

fn zip_opt<R: Ring>(
    a: &Option<Vec<R>>,
    b: &Option<Vec<R>>,
    f: impl Fn(&[R], &[R]) -> Vec<R>,
) -> Option<Vec<R>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        _ => None,
    }
}
