//! CrypTen 0.4.1's approximations with its default parameters, on the primitives of
//! [`super`]. Each function runs its multiplications one after the other, as CrypTen
//! does (one flight per multiplication or comparison step), so the flight counts match
//! CrypTen's round counts.

use super::{Bcast, Fx, FRAC};
use crate::engine::Engine;
use crate::error::{shape_err, Result};
use crate::tensor::{Move, Tensor};

/// `functions.exp_iterations`.
pub const EXP_ITERS: u32 = 8;
/// `functions.reciprocal_nr_iters`.
pub const RECIP_ITERS: u32 = 10;
/// `functions.sqrt_nr_iters`.
pub const SQRT_ITERS: u32 = 3;
/// `functions.erf_iterations`.
pub const ERF_ITERS: u32 = 8;

/// Rows and columns of x (columns = last axis).
fn rc(x: &Fx) -> (usize, usize) {
    let cols = *x.shape.last().unwrap_or(&1);
    (x.len().checked_div(cols).unwrap_or(0), cols)
}

fn with_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}

/// Columns [from, to) of every row. Local.
fn cols_range(x: &Fx, from: usize, to: usize) -> Fx {
    let (_, cols) = rc(x);
    Fx {
        shape: with_last(&x.shape, to - from),
        s: x.s.as_ref().map(|v| {
            v.chunks(cols.max(1))
                .flat_map(|r| r[from..to].iter().copied())
                .collect()
        }),
    }
}

/// Row-wise concatenation [a | b]. Local.
fn cat_cols(a: &Fx, b: &Fx) -> Fx {
    let (_, ca) = rc(a);
    let (_, cb) = rc(b);
    let s = match (&a.s, &b.s) {
        (Some(x), Some(y)) => {
            let mut out = Vec::with_capacity(x.len() + y.len());
            let rows = x.len().checked_div(ca.max(1)).unwrap_or(0);
            for i in 0..rows {
                out.extend_from_slice(&x[i * ca..(i + 1) * ca]);
                if cb > 0 {
                    out.extend_from_slice(&y[i * cb..(i + 1) * cb]);
                }
            }
            Some(out)
        }
        _ => None,
    };
    Fx {
        shape: with_last(&a.shape, ca + cb),
        s,
    }
}

/// Sum over the last axis (kept as size 1). Local.
pub fn sum_last(x: &Fx) -> Fx {
    let (_, cols) = rc(x);
    Fx {
        shape: with_last(&x.shape, 1),
        s: x.s.as_ref().map(|v| {
            v.chunks(cols.max(1))
                .map(|c| c.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
                .collect()
        }),
    }
}

/// A local shape move applied to the shares (a zero tensor gives the shape where there
/// are none).
pub fn move_fx(x: &Fx, mv: Move) -> Result<Fx> {
    let t = Tensor::new(&x.shape, x.s.clone().unwrap_or_else(|| vec![0; x.len()]))?;
    let t = mv.apply(&t)?;
    Ok(Fx {
        shape: t.shape,
        s: x.s.as_ref().map(|_| t.data),
    })
}

impl Engine {
    /// x >= y (1 - (x - y < 0)), fixed point. Online: 8 flights.
    pub fn ct_ge(&mut self, x: &Fx, y: &Fx) -> Result<Fx> {
        let d = self.ct_sub(x, y, Bcast::Same)?;
        let l = self.ct_ltz(&d, true)?;
        Ok(self.ct_rsub_const(1.0, &l))
    }

    /// CrypTen's `where(c, x, y) = x c + (1 - c) y` for a fixed-point 0/1 condition: two
    /// products one after the other. Online: 2 flights.
    pub fn ct_where(&mut self, c: &Fx, x: &Fx, y: &Fx) -> Result<Fx> {
        let a = self.ct_mul(x, c, Bcast::Same)?;
        let nc = self.ct_rsub_const(1.0, c);
        let b = self.ct_mul(&nc, y, Bcast::Same)?;
        self.ct_add(&a, &b, Bcast::Same)
    }

    /// exp(x) by the limit (1 + x / 2^d)^(2^d), d = `iters` squarings. Online: d flights.
    pub fn ct_exp_iters(&mut self, x: &Fx, iters: u32) -> Result<Fx> {
        let mut r = self.ct_add_const(&self.ct_div_int(x, 1 << iters), 1.0);
        for _ in 0..iters {
            r = self.ct_square(&r)?;
        }
        Ok(r)
    }

    /// exp(x) with CrypTen's default 8 iterations. Online: 8 flights.
    pub fn ct_exp(&mut self, x: &Fx) -> Result<Fx> {
        self.ct_exp_iters(x, EXP_ITERS)
    }

    /// 1 / x for positive x (`reciprocal_all_pos`): Newton-Raphson from 3 exp(1 - 2x) +
    /// 0.003, 10 iterations of y <- 2y - x y^2. Online: 8 + 20 flights.
    pub fn ct_reciprocal(&mut self, x: &Fx) -> Result<Fx> {
        let t = self.ct_add_const(&self.ct_mul_int(x, -2), 1.0);
        let e = self.ct_exp(&t)?;
        let mut y = self.ct_add_const(&self.ct_mul_int(&e, 3), 0.003);
        for _ in 0..RECIP_ITERS {
            let sq = self.ct_square(&y)?;
            let t = self.ct_mul(&sq, x, Bcast::Same)?;
            y = self.ct_sub(&self.ct_mul_int(&y, 2), &t, Bcast::Same)?;
        }
        Ok(y)
    }

    /// 1 / sqrt(x): Newton-Raphson from 2.2 exp(-(x/2 + 0.2)) + 0.2 - x/1024, 3
    /// iterations of y <- y (3 - x y^2) / 2. Online: 8 + 9 flights.
    pub fn ct_inv_sqrt(&mut self, x: &Fx) -> Result<Fx> {
        let t = self.ct_add_const(&self.ct_div_int(x, 2), 0.2);
        let e = self.ct_exp(&self.ct_mul_int(&t, -1))?;
        let y = self.ct_add_const(&self.ct_mul_const(&e, 2.2), 0.2);
        let mut y = self.ct_sub(&y, &self.ct_div_int(x, 1024), Bcast::Same)?;
        for _ in 0..SQRT_ITERS {
            let sq = self.ct_square(&y)?;
            let t = self.ct_mul(x, &sq, Bcast::Same)?;
            let u = self.ct_rsub_const(3.0, &t);
            let p = self.ct_mul(&y, &u, Bcast::Same)?;
            y = self.ct_div_int(&p, 2);
        }
        Ok(y)
    }

    /// x^p for an integer p >= 1 with CrypTen's `pow` recursion: even p squares and
    /// recurses on p/2; odd p squares, multiplies once and recurses on (p-1)/2. CrypTen
    /// 0.4.1's odd branch recurses on x^3 (computing (x^3)^((p-1)/2), not x^p, for p >= 5);
    /// this one does the same multiplications, one flight each, in an order that gives
    /// x^p: x (x^2)^((p-1)/2).
    pub fn ct_pow(&mut self, x: &Fx, p: u32) -> Result<Fx> {
        match p {
            0 => Err(shape_err("ct_pow", "p = 0")),
            1 => Ok(x.clone()),
            2 => self.ct_square(x),
            p if p % 2 == 0 => {
                let s = self.ct_square(x)?;
                self.ct_pow(&s, p / 2)
            }
            p => {
                let s = self.ct_square(x)?;
                let u = self.ct_pow(&s, (p - 1) / 2)?;
                self.ct_mul(&u, x, Bcast::Same)
            }
        }
    }

    /// erf(x) by CrypTen's Taylor series, 8 terms: x + sum_n (-1)^n x^(2n+1) / (n!
    /// (2n+1)), times 2/sqrt(pi); each power computed on its own by [`Self::ct_pow`].
    /// Accurate for |x| up to about 2; diverges beyond (as CrypTen's).
    pub fn ct_erf(&mut self, x: &Fx) -> Result<Fx> {
        let mut out = x.clone();
        let mut fact = 1f64;
        for n in 1..=ERF_ITERS {
            fact *= n as f64;
            let sign = if n % 2 == 1 { -1.0 } else { 1.0 };
            let m = sign / (fact * (2 * n + 1) as f64);
            let p = self.ct_pow(x, 2 * n + 1)?;
            out = self.ct_add(&out, &self.ct_mul_const(&p, m), Bcast::Same)?;
        }
        Ok(self.ct_mul_const(&out, 2.0 / std::f64::consts::PI.sqrt()))
    }

    /// GELU(x) = x (1 + erf(x / sqrt 2)) / 2 with CrypTen's erf.
    pub fn ct_gelu(&mut self, x: &Fx) -> Result<Fx> {
        let t = self.ct_mul_const(x, std::f64::consts::FRAC_1_SQRT_2);
        let e = self.ct_erf(&t)?;
        let u = self.ct_add_const(&e, 1.0);
        let g = self.ct_mul(x, &u, Bcast::Same)?;
        Ok(self.ct_div_int(&g, 2))
    }

    /// tanh(x) = 2 sigmoid(2x) - 1 with CrypTen's default sigmoid ("reciprocal"): the
    /// sign by a comparison, exp(-|x|) with 9 iterations, 1 / (1 + exp(-|x|)) by 3
    /// Newton-Raphson iterations from 0.75, then `where` picks s or 1 - s by the sign.
    pub fn ct_tanh(&mut self, x: &Fx) -> Result<Fx> {
        let x2 = self.ct_mul_int(x, 2);
        let ltz = self.ct_ltz(&x2, true)?;
        let sign = self.ct_rsub_const(1.0, &self.ct_mul_int(&ltz, 2));
        let pos = self.ct_mul(&x2, &sign, Bcast::Same)?;
        let e = self.ct_exp_iters(&self.ct_mul_int(&pos, -1), 9)?;
        let den = self.ct_add_const(&e, 1.0);
        // first iteration with the public initial value 0.75: 2 (0.75) - 0.75^2 den
        let mut y = self.ct_rsub_const(1.5, &self.ct_mul_const(&den, 0.5625));
        for _ in 1..3 {
            let sq = self.ct_square(&y)?;
            let t = self.ct_mul(&sq, &den, Bcast::Same)?;
            y = self.ct_sub(&self.ct_mul_int(&y, 2), &t, Bcast::Same)?;
        }
        let keep = self.ct_rsub_const(1.0, &ltz);
        let flip = self.ct_rsub_const(1.0, &y);
        let s = self.ct_where(&keep, &y, &flip)?;
        Ok(self.ct_add_const(&self.ct_mul_int(&s, 2), -1.0))
    }

    /// CrypTen's `weighted_index` over the last axis: a one-hot row picking an index with
    /// probability proportional to the weights (cumulative sums compared with a random
    /// fraction of the total). Online: 1 + 1 + 8 flights.
    pub fn ct_weighted_index(&mut self, w: &Fx) -> Result<Fx> {
        let (rows, cols) = rc(w);
        let cum = Fx {
            shape: w.shape.clone(),
            s: w.s.as_ref().map(|v| {
                let mut out = v.clone();
                for r in out.chunks_mut(cols.max(1)) {
                    for j in 1..r.len() {
                        r[j] = r[j].wrapping_add(r[j - 1]);
                    }
                }
                out
            }),
        };
        let maxw = cols_range(&cum, cols.saturating_sub(1), cols);
        let r = self.ct_rand(&maxw.shape)?;
        let r = self.ct_mul(&r, &maxw, Bcast::Same)?;
        // cum > r  <=>  r - cum < 0
        let d = self.ct_mul_int(&self.ct_sub(&cum, &r, Bcast::Rows)?, -1);
        let gt = self.ct_ltz(&d, true)?;
        let shifted = Fx {
            shape: gt.shape.clone(),
            s: gt.s.as_ref().map(|v| {
                let mut out = vec![0u64; v.len()];
                for i in 0..rows {
                    for j in 1..cols {
                        out[i * cols + j] = v[i * cols + j - 1];
                    }
                }
                out
            }),
        };
        self.ct_sub(&gt, &shifted, Bcast::Same)
    }

    /// CrypTen's pairwise max over the last axis (row length r): every element compared
    /// with the r - 1 others (one comparison of (r-1) r elements per row), the product of
    /// the comparisons over a log-depth tree gives the one-hot argmax, ties broken by
    /// [`Self::ct_weighted_index`], and the max is the sum of x times the one-hot.
    pub fn ct_max_pairwise(&mut self, x: &Fx) -> Result<(Fx, Fx)> {
        let (rows, r) = rc(x);
        let k = r.max(2) - 1;
        let n = rows * r;
        let mut shape = vec![k];
        shape.extend_from_slice(&x.shape);
        let (a, b) = match &x.s {
            Some(v) => {
                let mut a = Vec::with_capacity(k * n);
                let mut b = Vec::with_capacity(k * n);
                for i in 0..k {
                    a.extend_from_slice(v);
                    for row in v.chunks(r.max(1)) {
                        for j in 0..r {
                            b.push(row[(j + r - (i + 1) % r) % r]);
                        }
                    }
                }
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let a = Fx {
            shape: shape.clone(),
            s: a,
        };
        let b = Fx {
            shape: shape.clone(),
            s: b,
        };
        let mut comp = self.ct_ge(&a, &b)?;
        // product over the stacked axis by halves
        let mut size = k;
        while size > 1 {
            let h = size / 2;
            let part = |f: usize, t: usize| Fx {
                shape: vec![t - f, n],
                s: comp.s.as_ref().map(|v| v[f * n..t * n].to_vec()),
            };
            let (p, q, rem) = (part(0, h), part(h, 2 * h), part(2 * h, size));
            let m = self.ct_mul(&p, &q, Bcast::Same)?;
            let s = match (m.s, rem.s) {
                (Some(mut m), Some(rr)) => {
                    m.extend_from_slice(&rr);
                    Some(m)
                }
                _ => None,
            };
            size = h + size % 2;
            comp = Fx {
                shape: vec![size, n],
                s,
            };
        }
        let onehot = Fx {
            shape: x.shape.clone(),
            s: comp.s,
        };
        let onehot = self.ct_weighted_index(&onehot)?;
        let prod = self.ct_mul(x, &onehot, Bcast::Same)?;
        Ok((sum_last(&prod), onehot))
    }

    /// CrypTen's default max over the last axis (`log_reduction`): floor(ln L) rounds of
    /// pairwise maxima of the two halves (`where(x >= y, x, y)`), the pairwise max on
    /// what is left, then the one-hot argmax over the whole row (equality with the max,
    /// ties broken by [`Self::ct_weighted_index`]). Returns (max, one-hot).
    pub fn ct_max(&mut self, x: &Fx) -> Result<(Fx, Fx)> {
        let (_, l) = rc(x);
        let steps = (l as f64).ln().floor().max(0.0) as usize;
        let mut cur = x.clone();
        let mut m = l;
        for _ in 0..steps {
            let h = m / 2;
            let p = cols_range(&cur, 0, h);
            let q = cols_range(&cur, h, 2 * h);
            let rem = cols_range(&cur, 2 * h, m);
            let c = self.ct_ge(&p, &q)?;
            let w = self.ct_where(&c, &p, &q)?;
            cur = cat_cols(&w, &rem);
            m = h + m % 2;
        }
        let (mx, _) = self.ct_max_pairwise(&cur)?;
        let d = self.ct_sub(x, &mx, Bcast::Rows)?;
        let eq = self.ct_eqz(&d, true)?;
        let onehot = self.ct_weighted_index(&eq)?;
        Ok((mx, onehot))
    }

    /// CrypTen's softmax over the last axis: x - max(x), exp, the row sum's reciprocal
    /// (all positive), one product.
    pub fn ct_softmax(&mut self, x: &Fx) -> Result<Fx> {
        let (_, l) = rc(x);
        if l == 1 {
            let one = super::encode(1.0);
            return Ok(Fx {
                shape: x.shape.clone(),
                s: x.s.as_ref().map(|v| {
                    let p0 = matches!(self.role, crate::Role::P0 | crate::Role::Plain);
                    vec![if p0 { one } else { 0 }; v.len()]
                }),
            });
        }
        let (mx, _onehot) = self.ct_max(x)?;
        let logits = self.ct_sub(x, &mx, Bcast::Rows)?;
        let num = self.ct_exp(&logits)?;
        let den = sum_last(&num);
        let inv = self.ct_reciprocal(&den)?;
        self.ct_mul(&num, &inv, Bcast::Rows)
    }

    /// CrypTen's LayerNorm over the last axis: mean by a local sum and division, the
    /// variance by one square, inv_sqrt(var + eps), one product by it, one by the shared
    /// gamma (`Bcast::Cols`), beta added locally.
    pub fn ct_layernorm(&mut self, x: &Fx, gamma: &Fx, beta: &Fx, eps: f64) -> Result<Fx> {
        let (_, h) = rc(x);
        let mean = self.ct_div_int(&sum_last(x), h as i64);
        let xc = self.ct_sub(x, &mean, Bcast::Rows)?;
        let sq = self.ct_square(&xc)?;
        let var = self.ct_div_int(&sum_last(&sq), h as i64);
        let inv = self.ct_inv_sqrt(&self.ct_add_const(&var, eps))?;
        let y = self.ct_mul(&xc, &inv, Bcast::Rows)?;
        let y = self.ct_mul(&y, gamma, Bcast::Cols)?;
        self.ct_add(&y, beta, Bcast::Cols)
    }

    /// x W + b for shared W (din x dout) and b (dout): one Beaver matrix product.
    pub fn ct_linear(&mut self, x: &Fx, w: &Fx, b: &Fx) -> Result<Fx> {
        let y = self.ct_matmul(x, w)?;
        self.ct_add(&y, b, Bcast::Cols)
    }
}

/// 2^FRAC as an i64, for callers that build integer constants.
pub const ONE: i64 = 1 << FRAC;
