//! A CrypTen-style baseline (CrypTen 0.4.1, two parties, trusted-first-party provider) on
//! the same engine, transport and accounting as our protocol, so that the harness can
//! report the speedup of our protocol over it measured in the same run.
//!
//! What CrypTen does and this module reproduces:
//! * values are fixed point in Z/2^64 with 16 fractional bits ([`FRAC`]), additively
//!   shared between P0 and P1 ([`Fx`] is an [`Additive<u64>`]);
//! * products and matrix products by Beaver triples: each party sends its shares of
//!   `x - a` and `y - b` in one flight (an all-reduce in CrypTen);
//! * truncation after a fixed-point product is CrypTen's two-party truncation: each party
//!   divides its own share by 2^16 rounding toward zero (`share.div_(2^16,
//!   rounding_mode="trunc")`), no message; its error is one unit in the last place, or
//!   (with probability about |x| 2^16 / 2^63) a wrap of the whole value;
//! * comparisons by arithmetic-to-binary conversion: the two shares become binary
//!   (XOR) sharings, a Kogge-Stone/SPK adder over 64-bit words adds them (one AND
//!   then six rounds of ANDs on the stacked (S, P) words, each AND by binary Beaver
//!   triples), the sign bit is taken and converted back by a single-bit B2A (one
//!   opening); equality by the P-circuit (six ANDs) on the binary shares;
//! * the dealer D plays CrypTen's trusted first party: it deals every Beaver triple,
//!   binary triple and B2A pair (P0's share from its seed, P1's as material). CrypTen's
//!   trusted first party makes them without any message; here they are offline traffic,
//!   reported apart from the online bytes, which are the figures compared with CrypTen.
//!
//! Every role runs the same code (see [`crate::engine`]): the dealer deals, P0 and P1
//! consume their material in the offline pass and compute in the online pass, and the
//! plaintext reference ([`Role::Plain`]) runs the same fixed-point algorithm on the
//! values themselves (exact products and truncations), which is what the tests compare
//! the secure results with.
//!
//! The approximations (exp, reciprocal, inverse square root, erf, max, softmax,
//! LayerNorm, GELU, tanh) are in [`approx`].

pub mod approx;
#[cfg(test)]
mod tests;

use crate::blocks::{bcast_cols, bcast_rows};
use crate::engine::{need, Additive, Engine, OpState, Role};
use crate::error::{shape_err, ProtocolError, Result};
use crate::net::PartyId;
use crate::ring;
use kernels::ops::matmul_batched;

/// Fractional bits of CrypTen's default fixed-point encoder.
pub const FRAC: u32 = 16;
/// 2^FRAC.
pub const SCALE: f64 = (1u64 << FRAC) as f64;

/// An arithmetic sharing of fixed-point values (or of integers, where a doc says so).
pub type Fx = Additive<u64>;

/// A binary (XOR) sharing of 64-bit words.
#[derive(Clone, Debug)]
pub struct Bin {
    pub shape: Vec<usize>,
    /// The party's share; the value (Plain); None for the dealer and offline.
    pub s: Option<Vec<u64>>,
}

impl Bin {
    pub fn len(&self) -> usize {
        crate::tensor::numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fixed-point encoding of `v` (round to nearest), as CrypTen's encoder does.
pub fn encode(v: f64) -> u64 {
    (v * SCALE).round() as i64 as u64
}

/// The value of a fixed-point word.
pub fn decode(w: u64) -> f64 {
    w as i64 as f64 / SCALE
}

/// How the second operand of an elementwise product lines up with the first (rows x
/// cols, cols = last axis of the first operand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bcast {
    /// Same shape.
    Same,
    /// One value per row (rows x 1).
    Rows,
    /// One value per column (a vector of cols).
    Cols,
    /// The first operand is `k` copies of the second stacked (binary ANDs of the SPK
    /// circuit: one word against the stacked (S, P) pair).
    Tile(usize),
}

impl Bcast {
    fn small_len(self, n: usize, cols: usize) -> usize {
        match self {
            Bcast::Same => n,
            Bcast::Rows => n.checked_div(cols).unwrap_or(0),
            Bcast::Cols => cols,
            Bcast::Tile(k) => n.checked_div(k).unwrap_or(0),
        }
    }
    fn expand(self, v: &[u64], n: usize, cols: usize) -> Vec<u64> {
        match self {
            Bcast::Same => v.to_vec(),
            Bcast::Rows => bcast_rows(v, n.checked_div(cols).unwrap_or(0), cols),
            Bcast::Cols => bcast_cols(v, n.checked_div(cols).unwrap_or(0)),
            Bcast::Tile(k) => {
                let mut out = Vec::with_capacity(n);
                for _ in 0..k {
                    out.extend_from_slice(v);
                }
                out
            }
        }
    }
}

/// The two algebras Beaver triples work in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    /// Z/2^64: +, -, *.
    Arith,
    /// GF(2)^64: XOR, XOR, AND.
    Bool,
}

impl Alg {
    fn add(self, a: u64, b: u64) -> u64 {
        match self {
            Alg::Arith => a.wrapping_add(b),
            Alg::Bool => a ^ b,
        }
    }
    fn sub(self, a: u64, b: u64) -> u64 {
        match self {
            Alg::Arith => a.wrapping_sub(b),
            Alg::Bool => a ^ b,
        }
    }
    fn mul(self, a: u64, b: u64) -> u64 {
        match self {
            Alg::Arith => a.wrapping_mul(b),
            Alg::Bool => a & b,
        }
    }
    fn vadd(self, a: &[u64], b: &[u64]) -> Vec<u64> {
        a.iter().zip(b).map(|(x, y)| self.add(*x, *y)).collect()
    }
    fn vsub(self, a: &[u64], b: &[u64]) -> Vec<u64> {
        a.iter().zip(b).map(|(x, y)| self.sub(*x, *y)).collect()
    }
    fn vmul(self, a: &[u64], b: &[u64]) -> Vec<u64> {
        a.iter().zip(b).map(|(x, y)| self.mul(*x, *y)).collect()
    }
}

/// Dealer: share `v` in `alg` (P0's share from its seed, P1's in the material).
fn deal(st: &mut OpState, alg: Alg, v: &[u64]) -> Result<()> {
    let s0: Vec<u64> = st.p0_share(v.len())?;
    let s1 = alg.vsub(v, &s0);
    ring::encode(&s1, &mut st.blob1);
    Ok(())
}

/// Per-share division by a positive integer rounding toward zero (CrypTen's two-party
/// `div_` by a public integer; the value's error is at most one unit, or a wrap).
fn div_share(s: u64, d: i64) -> u64 {
    ((s as i64) / d) as u64
}

fn check_len(v: &[u64], n: usize, what: &'static str) -> Result<()> {
    if v.len() != n {
        return Err(shape_err(
            what,
            format!("{} elements, expected {n}", v.len()),
        ));
    }
    Ok(())
}

fn map_s(s: &Option<Vec<u64>>, f: impl Fn(u64) -> u64) -> Option<Vec<u64>> {
    s.as_ref().map(|v| v.iter().map(|&x| f(x)).collect())
}

fn zip_s(
    a: &Option<Vec<u64>>,
    b: &Option<Vec<u64>>,
    f: impl Fn(u64, u64) -> u64,
) -> Option<Vec<u64>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect()),
        _ => None,
    }
}

/// The peer of P0 / P1.
fn peer(role: Role) -> Result<PartyId> {
    match role {
        Role::P0 => Ok(PartyId::P1),
        Role::P1 => Ok(PartyId::P0),
        _ => Err(ProtocolError::Internal("no peer outside P0/P1".into())),
    }
}

impl Engine {
    /// True where this role's shares carry data (P0/P1 online, the plaintext reference).
    pub fn ct_computes(&self) -> bool {
        self.computes()
    }

    /// Whether this role adds public constants (P0, and the plaintext reference).
    fn adds_public(&self) -> bool {
        matches!(self.role, Role::P0 | Role::Plain)
    }

    /// A sharing of a value P0 knows in the clear (its weights): P0 holds it, P1 holds 0.
    /// CrypTen shares P0's tensors with pseudo-random zero shares, also without a message;
    /// a fixed zero share is as safe here because every later use masks it with a fresh
    /// Beaver triple. No message.
    pub fn ct_from_p0(&self, v: Option<&[u64]>, shape: &[usize]) -> Result<Fx> {
        let n = crate::tensor::numel(shape);
        let s = match (self.role, self.ct_computes()) {
            (Role::P0 | Role::Plain, true) => {
                let v = v.ok_or_else(|| ProtocolError::Internal("P0 has no weights".into()))?;
                check_len(v, n, "P0 tensor")?;
                Some(v.to_vec())
            }
            (Role::P1, true) => Some(vec![0; n]),
            _ => None,
        };
        Ok(Fx {
            shape: shape.to_vec(),
            s,
        })
    }

    /// A sharing of P1's input (P1 holds it, P0 holds 0), as CrypTen's `src=1` sharing.
    /// No message.
    pub fn ct_from_p1(&self, v: Option<&[u64]>, shape: &[usize]) -> Result<Fx> {
        let n = crate::tensor::numel(shape);
        let s = match (self.role, self.ct_computes()) {
            (Role::P1 | Role::Plain, true) => {
                let v = v.ok_or_else(|| ProtocolError::Internal("P1 has no input".into()))?;
                check_len(v, n, "P1 input")?;
                Some(v.to_vec())
            }
            (Role::P0, true) => Some(vec![0; n]),
            _ => None,
        };
        Ok(Fx {
            shape: shape.to_vec(),
            s,
        })
    }

    /// x + y (same shape, or y one value per row or per column). Local.
    pub fn ct_add(&self, x: &Fx, y: &Fx, b: Bcast) -> Result<Fx> {
        self.ct_zip(x, y, b, |a, c| a.wrapping_add(c))
    }
    /// x - y (same shape, or y one value per row or per column). Local.
    pub fn ct_sub(&self, x: &Fx, y: &Fx, b: Bcast) -> Result<Fx> {
        self.ct_zip(x, y, b, |a, c| a.wrapping_sub(c))
    }
    fn ct_zip(&self, x: &Fx, y: &Fx, b: Bcast, f: impl Fn(u64, u64) -> u64) -> Result<Fx> {
        let n = x.len();
        let cols = *x.shape.last().unwrap_or(&1);
        if y.len() != b.small_len(n, cols) {
            return Err(shape_err(
                "ct_zip",
                format!("{:?} vs {:?}", x.shape, y.shape),
            ));
        }
        let s = match (&x.s, &y.s) {
            (Some(a), Some(c)) => {
                let c = b.expand(c, n, cols);
                Some(a.iter().zip(&c).map(|(p, q)| f(*p, *q)).collect())
            }
            _ => None,
        };
        Ok(Fx {
            shape: x.shape.clone(),
            s,
        })
    }
    /// x + c for a public fixed-point constant. Local (P0 adds it).
    pub fn ct_add_const(&self, x: &Fx, c: f64) -> Fx {
        let e = encode(c);
        let p0 = self.adds_public();
        Fx {
            shape: x.shape.clone(),
            s: map_s(&x.s, |v| if p0 { v.wrapping_add(e) } else { v }),
        }
    }
    /// c - x for a public constant. Local.
    pub fn ct_rsub_const(&self, c: f64, x: &Fx) -> Fx {
        let n = self.ct_mul_int(x, -1);
        self.ct_add_const(&n, c)
    }
    /// x times a public integer (no truncation, as CrypTen's multiplication by an int).
    /// Local.
    pub fn ct_mul_int(&self, x: &Fx, k: i64) -> Fx {
        Fx {
            shape: x.shape.clone(),
            s: map_s(&x.s, |v| v.wrapping_mul(k as u64)),
        }
    }
    /// x / d for a public positive integer d: each party divides its share (CrypTen's
    /// two-party `div_`). Local.
    pub fn ct_div_int(&self, x: &Fx, d: i64) -> Fx {
        Fx {
            shape: x.shape.clone(),
            s: map_s(&x.s, |v| div_share(v, d)),
        }
    }
    /// Truncate a product at scale 2^32 back to 2^16. Local.
    pub fn ct_trunc(&self, x: &Fx) -> Fx {
        self.ct_div_int(x, 1 << FRAC)
    }
    /// x times a public fixed-point constant, then truncation. Local.
    pub fn ct_mul_const(&self, x: &Fx, c: f64) -> Fx {
        let e = encode(c);
        let p = Fx {
            shape: x.shape.clone(),
            s: map_s(&x.s, |v| v.wrapping_mul(e)),
        };
        self.ct_trunc(&p)
    }
    /// x times public per-column fixed-point constants, then truncation. Local.
    pub fn ct_mul_const_cols(&self, x: &Fx, c: &[f64]) -> Result<Fx> {
        let cols = *x.shape.last().unwrap_or(&1);
        if c.len() != cols {
            return Err(shape_err("mul_const_cols", format!("{:?}", x.shape)));
        }
        let e: Vec<u64> = c.iter().map(|&v| encode(v)).collect();
        let s = x.s.as_ref().map(|v| {
            v.iter()
                .enumerate()
                .map(|(i, &a)| a.wrapping_mul(e[i % cols]))
                .collect()
        });
        Ok(self.ct_trunc(&Fx {
            shape: x.shape.clone(),
            s,
        }))
    }

    /// Beaver product in `alg` of x (n elements) and y (laid out by `b`), without
    /// truncation. Offline: dealer -> P1 (2n + m) words (a, b, c; m = |y|). Online: each
    /// of P0, P1 sends (n + m) words, one flight.
    fn beaver(
        &mut self,
        alg: Alg,
        x: &Option<Vec<u64>>,
        y: &Option<Vec<u64>>,
        n: usize,
        cols: usize,
        b: Bcast,
    ) -> Result<Option<Vec<u64>>> {
        let m = b.small_len(n, cols);
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let a: Vec<u64> = st.mask(n);
                let bb: Vec<u64> = st.mask(m);
                let c = alg.vmul(&a, &b.expand(&bb, n, cols));
                deal(&mut st, alg, &a)?;
                deal(&mut st, alg, &bb)?;
                deal(&mut st, alg, &c)?;
                self.ship(st, false)?;
                Ok(None)
            }
            (Role::Plain, _) => {
                let (x, y) = (need(x, "x")?, need(y, "y")?);
                Ok(Some(alg.vmul(x, &b.expand(y, n, cols))))
            }
            (role, false) => {
                let a: Vec<u64> = st.share(role, n)?;
                let bb: Vec<u64> = st.share(role, m)?;
                let c: Vec<u64> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep((a, bb, c))?;
                Ok(None)
            }
            (role, true) => {
                let (a, bb, c): (Vec<u64>, Vec<u64>, Vec<u64>) = self.pop_prep("beaver")?;
                let (x, y) = (need(x, "x share")?, need(y, "y share")?);
                check_len(x, n, "beaver x")?;
                check_len(y, m, "beaver y")?;
                let mut eps = alg.vsub(x, &a);
                let mut del = alg.vsub(y, &bb);
                let mut buf = Vec::with_capacity(8 * (n + m));
                ring::encode(&eps, &mut buf);
                ring::encode(&del, &mut buf);
                let other = peer(role)?;
                self.ctx.send(other, tag, buf)?;
                let got = self.ctx.recv(other, tag)?;
                let (e1, rest) = ring::decode::<u64>(&got, n, other, "beaver opening")?;
                let d1 = ring::decode_exact::<u64>(rest, m, other, "beaver opening")?;
                eps = alg.vadd(&eps, &e1);
                del = alg.vadd(&del, &d1);
                // P0: c + eps (b + del) + a del; P1: c + eps b + a del
                let bx = if role == Role::P0 {
                    alg.vadd(&bb, &del)
                } else {
                    bb
                };
                let t1 = alg.vmul(&eps, &b.expand(&bx, n, cols));
                let t2 = alg.vmul(&a, &b.expand(&del, n, cols));
                Ok(Some(alg.vadd(&alg.vadd(&c, &t1), &t2)))
            }
        }
    }

    /// x y elementwise (y laid out by `b`), no truncation: for a product with an integer
    /// (scale 1) operand. See [`Self::ct_mul`] for the cost.
    pub fn ct_mul_raw(&mut self, x: &Fx, y: &Fx, b: Bcast) -> Result<Fx> {
        let n = x.len();
        let cols = *x.shape.last().unwrap_or(&1);
        if y.len() != b.small_len(n, cols) {
            return Err(shape_err(
                "ct_mul",
                format!("{:?} x {:?}", x.shape, y.shape),
            ));
        }
        let s = self.beaver(Alg::Arith, &x.s, &y.s, n, cols, b)?;
        Ok(Fx {
            shape: x.shape.clone(),
            s,
        })
    }

    /// Fixed-point x y elementwise (y laid out by `b`), then CrypTen's local truncation.
    /// Offline: dealer -> P1 (2n + m) words. Online: P0 and P1 each send (n + m) words
    /// (x - a, y - b), one flight.
    pub fn ct_mul(&mut self, x: &Fx, y: &Fx, b: Bcast) -> Result<Fx> {
        let p = self.ct_mul_raw(x, y, b)?;
        Ok(self.ct_trunc(&p))
    }

    /// Fixed-point x^2 by a square pair (a, a^2): only x - a is opened.
    /// Offline: dealer -> P1 2n words. Online: P0 and P1 each send n words, one flight.
    pub fn ct_square(&mut self, x: &Fx) -> Result<Fx> {
        let n = x.len();
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let a: Vec<u64> = st.mask(n);
                let c = Alg::Arith.vmul(&a, &a);
                deal(&mut st, Alg::Arith, &a)?;
                deal(&mut st, Alg::Arith, &c)?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => {
                let v = need(&x.s, "x")?;
                Some(Alg::Arith.vmul(v, v))
            }
            (role, false) => {
                let a: Vec<u64> = st.share(role, n)?;
                let c: Vec<u64> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep((a, c))?;
                None
            }
            (role, true) => {
                let (a, c): (Vec<u64>, Vec<u64>) = self.pop_prep("square")?;
                let xs = need(&x.s, "x share")?;
                check_len(xs, n, "square")?;
                let mut eps = Alg::Arith.vsub(xs, &a);
                let mut buf = Vec::with_capacity(8 * n);
                ring::encode(&eps, &mut buf);
                let other = peer(role)?;
                self.ctx.send(other, tag, buf)?;
                let got = self.ctx.recv(other, tag)?;
                let e1 = ring::decode_exact::<u64>(&got, n, other, "square opening")?;
                eps = Alg::Arith.vadd(&eps, &e1);
                // x^2 = c + 2 eps a + eps^2 (the last at P0)
                let p0 = role == Role::P0;
                Some(
                    c.iter()
                        .zip(&a)
                        .zip(&eps)
                        .map(|((&c, &a), &e)| {
                            let t = c.wrapping_add(e.wrapping_mul(a).wrapping_mul(2));
                            if p0 {
                                t.wrapping_add(e.wrapping_mul(e))
                            } else {
                                t
                            }
                        })
                        .collect(),
                )
            }
        };
        Ok(self.ct_trunc(&Fx {
            shape: x.shape.clone(),
            s,
        }))
    }

    /// Fixed-point X Y for X (batch, m, k) and Y (batch, k, n) (or 2-D), by a Beaver
    /// matrix triple, then truncation.
    /// Offline: dealer -> P1 b(mk + kn + mn) words. Online: P0 and P1 each send b(mk + kn)
    /// words, one flight; each party two matrix products.
    pub fn ct_matmul(&mut self, x: &Fx, y: &Fx) -> Result<Fx> {
        let d3 = |s: &[usize]| match s {
            [a, b] => Some((1, *a, *b)),
            [b, m, k] => Some((*b, *m, *k)),
            _ => None,
        };
        let (bx, m, k) = d3(&x.shape).ok_or_else(|| shape_err("ct_matmul", "x rank"))?;
        let (by, k2, n) = d3(&y.shape).ok_or_else(|| shape_err("ct_matmul", "y rank"))?;
        if bx != by || k != k2 {
            return Err(shape_err(
                "ct_matmul",
                format!("{:?} x {:?}", x.shape, y.shape),
            ));
        }
        let b = bx;
        let (nx, ny) = (b * m * k, b * k * n);
        let mm = |p: &[u64], q: &[u64]| matmul_batched(p, q, b, m, k, n);
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank >= 2") = n;
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let a: Vec<u64> = st.mask(nx);
                let bb: Vec<u64> = st.mask(ny);
                let c = mm(&a, &bb);
                deal(&mut st, Alg::Arith, &a)?;
                deal(&mut st, Alg::Arith, &bb)?;
                deal(&mut st, Alg::Arith, &c)?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => Some(mm(need(&x.s, "X")?, need(&y.s, "Y")?)),
            (role, false) => {
                let a: Vec<u64> = st.share(role, nx)?;
                let bb: Vec<u64> = st.share(role, ny)?;
                let c: Vec<u64> = st.share(role, b * m * n)?;
                self.check_consumed(&st)?;
                self.push_prep((a, bb, c))?;
                None
            }
            (role, true) => {
                let (a, bb, c): (Vec<u64>, Vec<u64>, Vec<u64>) = self.pop_prep("matmul")?;
                let (xs, ys) = (need(&x.s, "X share")?, need(&y.s, "Y share")?);
                check_len(xs, nx, "matmul X")?;
                check_len(ys, ny, "matmul Y")?;
                let mut eps = Alg::Arith.vsub(xs, &a);
                let mut del = Alg::Arith.vsub(ys, &bb);
                let mut buf = Vec::with_capacity(8 * (nx + ny));
                ring::encode(&eps, &mut buf);
                ring::encode(&del, &mut buf);
                let other = peer(role)?;
                self.ctx.send(other, tag, buf)?;
                let got = self.ctx.recv(other, tag)?;
                let (e1, rest) = ring::decode::<u64>(&got, nx, other, "matmul opening")?;
                let d1 = ring::decode_exact::<u64>(rest, ny, other, "matmul opening")?;
                eps = Alg::Arith.vadd(&eps, &e1);
                del = Alg::Arith.vadd(&del, &d1);
                let bx = if role == Role::P0 {
                    Alg::Arith.vadd(&bb, &del)
                } else {
                    bb
                };
                let t = Alg::Arith.vadd(&mm(&eps, &bx), &mm(&a, &del));
                Some(Alg::Arith.vadd(&c, &t))
            }
        };
        Ok(self.ct_trunc(&Fx { shape, s }))
    }

    /// Reveal a sharing to P1 (the output): P0 sends its share, one flight. Returns the
    /// value at P1 and in the plaintext reference.
    pub fn ct_reveal_p1(&mut self, x: &Fx) -> Result<Option<Vec<u64>>> {
        let st = self.begin(false, false)?;
        let tag = st.tag();
        let n = x.len();
        match (self.role, self.is_online()) {
            (Role::Plain, _) => Ok(Some(need(&x.s, "value")?.clone())),
            (Role::P0, true) => {
                let mut buf = vec![];
                ring::encode(need(&x.s, "share")?, &mut buf);
                self.ctx.send(PartyId::P1, tag, buf)?;
                Ok(None)
            }
            (Role::P1, true) => {
                let buf = self.ctx.recv(PartyId::P0, tag)?;
                let s0: Vec<u64> = ring::decode_exact(&buf, n, PartyId::P0, "reveal")?;
                Ok(Some(Alg::Arith.vadd(&s0, need(&x.s, "share")?)))
            }
            _ => Ok(None),
        }
    }

    // ---- binary sharings -------------------------------------------------------------

    /// Binary AND of `big` and `small` (`small` tiled `k` times, k = |big| / |small|).
    /// Offline: dealer -> P1 (2|big| + |small|) words. Online: P0 and P1 each send
    /// (|big| + |small|) words, one flight.
    pub fn ct_and(&mut self, big: &Bin, small: &Bin) -> Result<Bin> {
        let n = big.len();
        let k = if small.is_empty() { 0 } else { n / small.len() };
        if k * small.len() != n {
            return Err(shape_err(
                "ct_and",
                format!("{:?} & {:?}", big.shape, small.shape),
            ));
        }
        let s = self.beaver(Alg::Bool, &big.s, &small.s, n, 1, Bcast::Tile(k.max(1)))?;
        Ok(Bin {
            shape: big.shape.clone(),
            s,
        })
    }

    /// x XOR y. Local.
    pub fn bin_xor(&self, x: &Bin, y: &Bin) -> Bin {
        Bin {
            shape: x.shape.clone(),
            s: zip_s(&x.s, &y.s, |a, b| a ^ b),
        }
    }
    /// x AND a public word. Local.
    pub fn bin_and_const(&self, x: &Bin, c: u64) -> Bin {
        Bin {
            shape: x.shape.clone(),
            s: map_s(&x.s, |a| a & c),
        }
    }
    /// x XOR a public word (P0 applies it). Local.
    pub fn bin_xor_const(&self, x: &Bin, c: u64) -> Bin {
        let p0 = self.adds_public();
        Bin {
            shape: x.shape.clone(),
            s: map_s(&x.s, |a| if p0 { a ^ c } else { a }),
        }
    }
    /// Each share times a public word (CrypTen's fan-out of isolated bits). Local.
    fn bin_mul_const(&self, x: &Bin, c: u64) -> Bin {
        Bin {
            shape: x.shape.clone(),
            s: map_s(&x.s, |a| a.wrapping_mul(c)),
        }
    }
    /// x << k. Local.
    pub fn bin_shl(&self, x: &Bin, k: u32) -> Bin {
        Bin {
            shape: x.shape.clone(),
            s: map_s(&x.s, |a| a << k),
        }
    }
    /// Logical x >> k. Local.
    pub fn bin_shr(&self, x: &Bin, k: u32) -> Bin {
        Bin {
            shape: x.shape.clone(),
            s: map_s(&x.s, |a| a >> k),
        }
    }

    /// The binary sharings of P0's and of P1's arithmetic share (CrypTen's A2B starts by
    /// having each party share its own share; here the other party's share of it is 0).
    /// `neg1`: P1's share is negated first (the two-party equality test). Local.
    fn own_shares(&self, x: &Fx, neg1: bool) -> (Bin, Bin) {
        let z = |s: &Option<Vec<u64>>, mine: bool, neg: bool| {
            s.as_ref().map(|v| {
                v.iter()
                    .map(|&a| match (mine, neg) {
                        (false, _) => 0,
                        (true, false) => a,
                        (true, true) => a.wrapping_neg(),
                    })
                    .collect()
            })
        };
        let (m0, m1) = match self.role {
            Role::P0 => (true, false),
            Role::P1 => (false, true),
            // the plaintext reference holds the value as "P0's share", and 0 as P1's
            _ => (true, false),
        };
        let b0 = Bin {
            shape: x.shape.clone(),
            s: z(&x.s, m0, false),
        };
        let b1 = Bin {
            shape: x.shape.clone(),
            s: z(&x.s, m1, neg1),
        };
        (b0, b1)
    }

    /// Binary x + y by CrypTen's circuit: S = x & y, P = x ^ y, the SPK tree over the
    /// stacked (S, P) in log2(64) = 6 levels, result P ^ (carry << 1).
    /// Online: 7 flights; each party sends 2n + 6 (3n) = 20n words.
    pub fn bin_add(&mut self, x: &Bin, y: &Bin) -> Result<Bin> {
        let n = x.len();
        let s = self.ct_and(x, y)?;
        let p = self.bin_xor(x, y);
        let mut sp = stack2(&s, &p);
        for i in 0..6 {
            let (sp0, sp1) = split2(&sp, n);
            let p0 = self.bin_and_const(&sp1, OUT_MASKS[i]);
            let s1p1 = self.bin_mul_const(&self.bin_and_const(&sp, MASKS[i]), MULTIPLIERS[i]);
            let update = self.ct_and(&s1p1, &p0)?;
            let sp1 = self.bin_and_const(&sp1, !OUT_MASKS[i]);
            sp = self.bin_xor(&stack2(&sp0, &sp1), &update);
        }
        let (carry, _) = split2(&sp, n);
        Ok(self.bin_xor(&p, &self.bin_shl(&carry, 1)))
    }

    /// CrypTen's A2B: the binary sharing of x. Online: 7 flights, 20n words per party.
    pub fn ct_a2b(&mut self, x: &Fx) -> Result<Bin> {
        let (b0, b1) = self.own_shares(x, false);
        self.bin_add(&b0, &b1)
    }

    /// Bit 0 of a binary sharing as an arithmetic sharing of 0/1 (scale 1), by a dealt
    /// random bit r in both sharings: z = x ^ r is opened, x = r + z - 2 r z.
    /// Offline: dealer -> P1 2n words. Online: P0 and P1 each send n words, one flight.
    pub fn ct_b2a_bit(&mut self, x: &Bin) -> Result<Fx> {
        let n = x.len();
        let xb = self.bin_and_const(x, 1);
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let s = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let r: Vec<u64> = st.mask::<u64>(n).iter().map(|v| v & 1).collect();
                deal(&mut st, Alg::Arith, &r)?;
                deal(&mut st, Alg::Bool, &r)?;
                self.ship(st, false)?;
                None
            }
            (Role::Plain, _) => xb.s.clone(),
            (role, false) => {
                let ra: Vec<u64> = st.share(role, n)?;
                let rb: Vec<u64> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep((ra, rb))?;
                None
            }
            (role, true) => {
                let (ra, rb): (Vec<u64>, Vec<u64>) = self.pop_prep("b2a")?;
                let xs = need(&xb.s, "bit share")?;
                check_len(xs, n, "b2a")?;
                let mut z = Alg::Bool.vadd(xs, &rb);
                let mut buf = Vec::with_capacity(8 * n);
                ring::encode(&z, &mut buf);
                let other = peer(role)?;
                self.ctx.send(other, tag, buf)?;
                let got = self.ctx.recv(other, tag)?;
                let z1 = ring::decode_exact::<u64>(&got, n, other, "b2a opening")?;
                z = Alg::Bool.vadd(&z, &z1);
                let p0 = role == Role::P0;
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let zi = z[i] & 1;
                    // r (1 - 2z) + z
                    let v = ra[i].wrapping_mul(1u64.wrapping_sub(2 * zi));
                    out.push(if p0 { v.wrapping_add(zi) } else { v });
                }
                Some(out)
            }
        };
        Ok(Fx {
            shape: x.shape.clone(),
            s,
        })
    }

    /// Bits 0..bits of a binary sharing as one arithmetic integer (CrypTen's B2A with
    /// `bits`): every bit plane through one single-bit B2A, then a local weighted sum.
    /// Online: P0 and P1 each send bits n words, one flight.
    pub fn ct_b2a(&mut self, x: &Bin, bits: u32) -> Result<Fx> {
        let n = x.len();
        let planes = Bin {
            shape: vec![bits as usize * n],
            s: x.s.as_ref().map(|v| {
                (0..bits)
                    .flat_map(|i| v.iter().map(move |&a| (a >> i) & 1))
                    .collect()
            }),
        };
        let a = self.ct_b2a_bit(&planes)?;
        let s = a.s.map(|v| {
            (0..n)
                .map(|j| {
                    (0..bits as usize).fold(0u64, |acc, i| {
                        acc.wrapping_add(v[i * n + j].wrapping_mul(1u64 << i))
                    })
                })
                .collect()
        });
        Ok(Fx {
            shape: x.shape.clone(),
            s,
        })
    }

    /// 1 where x < 0, as fixed point (2^16) when `scaled`, else as an integer: A2B, the
    /// sign bit, single-bit B2A. Online: 8 flights, 21n words per party.
    pub fn ct_ltz(&mut self, x: &Fx, scaled: bool) -> Result<Fx> {
        let b = self.ct_a2b(x)?;
        let sign = self.bin_shr(&b, 63);
        let a = self.ct_b2a_bit(&sign)?;
        Ok(if scaled {
            self.ct_mul_int(&a, 1 << FRAC)
        } else {
            a
        })
    }

    /// 1 where x == 0 (CrypTen's two-party `_eqz_2PC`): P0's share and minus P1's share
    /// as binary sharings, the P-circuit (AND of all 64 bits of their XNOR, six levels),
    /// single-bit B2A. Online: 7 flights, 13n words per party.
    pub fn ct_eqz(&mut self, x: &Fx, scaled: bool) -> Result<Fx> {
        let (b0, b1) = self.own_shares(x, true);
        let mut p = self.bin_xor_const(&self.bin_xor(&b0, &b1), u64::MAX);
        let mut shift = 32;
        for _ in 0..6 {
            let q = self.bin_shl(&p, shift);
            p = self.ct_and(&p, &q)?;
            shift /= 2;
        }
        let sign = self.bin_shr(&p, 63);
        let a = self.ct_b2a_bit(&sign)?;
        Ok(if scaled {
            self.ct_mul_int(&a, 1 << FRAC)
        } else {
            a
        })
    }

    /// Uniform fixed-point values in [0, 1) (CrypTen's `MPCTensor.rand`: 16 random bits
    /// drawn locally by each party as binary shares, converted by B2A). Online: P0 and P1
    /// each send 16n words, one flight.
    pub fn ct_rand(&mut self, shape: &[usize]) -> Result<Fx> {
        use rand::RngCore;
        let n = crate::tensor::numel(shape);
        let s = if self.ct_computes() {
            let mut rng = rand::thread_rng();
            Some(
                (0..n)
                    .map(|_| rng.next_u64() & ((1 << FRAC) - 1))
                    .collect::<Vec<u64>>(),
            )
        } else {
            None
        };
        let b = Bin {
            shape: shape.to_vec(),
            s,
        };
        self.ct_b2a(&b, FRAC)
    }
}

/// CrypTen's SPK masks (circuit.py): [i] has one bit set every 2^(i+1) bits.
pub const MASKS: [u64; 6] = [
    6148914691236517205,
    2459565876494606882,
    578721382704613384,
    36029346783166592,
    140737488388096,
    2147483648,
];
/// Fan-out multipliers (1 << (2^i + 1)) - 2.
pub const MULTIPLIERS: [u64; 6] = [2, 6, 30, 510, 131070, 8589934590];
/// MASKS[i] * MULTIPLIERS[i] (wrapping).
pub const OUT_MASKS: [u64; 6] = [
    MASKS[0].wrapping_mul(MULTIPLIERS[0]),
    MASKS[1].wrapping_mul(MULTIPLIERS[1]),
    MASKS[2].wrapping_mul(MULTIPLIERS[2]),
    MASKS[3].wrapping_mul(MULTIPLIERS[3]),
    MASKS[4].wrapping_mul(MULTIPLIERS[4]),
    MASKS[5].wrapping_mul(MULTIPLIERS[5]),
];

fn stack2(a: &Bin, b: &Bin) -> Bin {
    let mut shape = vec![2];
    shape.extend_from_slice(&a.shape);
    Bin {
        shape,
        s: match (&a.s, &b.s) {
            (Some(x), Some(y)) => {
                let mut v = x.clone();
                v.extend_from_slice(y);
                Some(v)
            }
            _ => None,
        },
    }
}

fn split2(x: &Bin, n: usize) -> (Bin, Bin) {
    let shape: Vec<usize> = x.shape[1..].to_vec();
    let (a, b) = match &x.s {
        Some(v) => (Some(v[..n].to_vec()), Some(v[n..].to_vec())),
        None => (None, None),
    };
    (
        Bin {
            shape: shape.clone(),
            s: a,
        },
        Bin { shape, s: b },
    )
}

/// The SPK adder on plain words, exactly as [`Engine::bin_add`] runs it on shares (the
/// tests check it against wrapping addition).
pub fn spk_add_plain(x: u64, y: u64) -> u64 {
    let s = x & y;
    let p = x ^ y;
    let (mut s0, mut s1) = (s, p);
    for i in 0..6 {
        let p0 = s1 & OUT_MASKS[i];
        let u0 = (s0 & MASKS[i]).wrapping_mul(MULTIPLIERS[i]) & p0;
        let u1 = (s1 & MASKS[i]).wrapping_mul(MULTIPLIERS[i]) & p0;
        s1 &= !OUT_MASKS[i];
        s0 ^= u0;
        s1 ^= u1;
    }
    p ^ (s0 << 1)
}
