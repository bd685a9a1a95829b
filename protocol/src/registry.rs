//! Model registration (PROTOCOL.md, once per model): for every private tensor M of P0,
//! the dealer and P0 derive a uniform mask A_M from P0's seed, P0 sends E_M = M - A_M to
//! P1. P1 sees a uniform E_M whatever M is; the dealer sees only A_M.
//!
//! Also P0's private model in integer form ([`PrivateModel`]): the quantizer in the harness
//! produces it, P0 and the plaintext reference consume it.

use crate::account::{OpKind, Phase, NO_LAYER};
use crate::engine::{Engine, Role};
use crate::error::{ProtocolError, Result};
use crate::net::PartyId;
use crate::ring::{self, Ring};
use crate::seed::{self, name_id, Purpose};
use kernels::bitfc::PackedSigns;
use std::collections::HashMap;

/// Weights of a private linear layer.
#[derive(Clone, Debug)]
pub enum QWeights {
    /// 1-bit: W in {-1, +1}, bit-packed for the 1-bit FC kernel.
    Signs(PackedSigns),
    /// k-bit integers, row-major d_in x d_out.
    Int(Vec<i64>),
}

/// A private linear layer in integer form: Z_j = sum_i (x_i g_i) w_ij a_j + b_j (mod 2^l).
/// `g` is an optional input-side scale (a LayerNorm gamma folded in, block 10), `a` the
/// per-output scale (weight scale x activation scales), `b` the bias, all fixed point.
#[derive(Clone, Debug)]
pub struct QLinear {
    pub d_in: usize,
    pub d_out: usize,
    pub w: QWeights,
    pub in_scale: Option<Vec<i64>>,
    pub out_scale: Vec<i64>,
    pub bias: Vec<i64>,
}

impl QLinear {
    /// The effective weights diag(g) W diag(a) that P0 registers (row-major d_in x d_out).
    pub fn effective<R: Ring>(&self) -> Vec<R> {
        let mut out = vec![R::ZERO; self.d_in * self.d_out];
        let w: Vec<i64> = match &self.w {
            QWeights::Signs(p) => kernels::bitfc::unpack_signs(p)
                .into_iter()
                .map(i64::from)
                .collect(),
            QWeights::Int(w) => w.clone(),
        };
        for i in 0..self.d_in {
            let g = self.in_scale.as_ref().map_or(1, |g| g[i]);
            for j in 0..self.d_out {
                let ij = i * self.d_out + j;
                out[ij] = R::from_i64(g)
                    .wmul(R::from_i64(w[ij]))
                    .wmul(R::from_i64(self.out_scale[j]));
            }
        }
        out
    }
    /// Apply the layer to ring values X (n x d_in): what P0 computes on X^ online and the
    /// plaintext reference on X. The 1-bit case runs the bit-packed kernel.
    pub fn apply<R: Ring>(&self, x: &[R], n: usize) -> Vec<R> {
        let scaled: Vec<R>;
        let xs: &[R] = match &self.in_scale {
            Some(g) => {
                let gr: Vec<R> = ring::from_i64s(g);
                scaled = x
                    .chunks(self.d_in)
                    .flat_map(|row| row.iter().zip(&gr).map(|(a, b)| a.wmul(*b)))
                    .collect();
                &scaled
            }
            None => x,
        };
        let mut acc = match &self.w {
            QWeights::Signs(p) => kernels::ops::fc(xs, n, p),
            QWeights::Int(w) => {
                let wr: Vec<R> = ring::from_i64s(w);
                kernels::ops::matmul(xs, &wr, n, self.d_in, self.d_out)
            }
        };
        let a: Vec<R> = ring::from_i64s(&self.out_scale);
        let b: Vec<R> = ring::from_i64s(&self.bias);
        for row in acc.chunks_mut(self.d_out) {
            for ((v, a), b) in row.iter_mut().zip(&a).zip(&b) {
                *v = v.wmul(*a).wadd(*b);
            }
        }
        acc
    }
    pub fn validate(&self, name: &str) -> Result<()> {
        let bad = |d: String| ProtocolError::Config(format!("linear {name}: {d}"));
        match &self.w {
            QWeights::Int(w) if w.len() != self.d_in * self.d_out => {
                return Err(bad(format!(
                    "{} weights for {}x{}",
                    w.len(),
                    self.d_in,
                    self.d_out
                )))
            }
            QWeights::Signs(p) if p.d_in != self.d_in || p.d_out != self.d_out => {
                return Err(bad(format!("packed {}x{}", p.d_in, p.d_out)))
            }
            _ => {}
        }
        if self.out_scale.len() != self.d_out || self.bias.len() != self.d_out {
            return Err(bad("scale/bias length".into()));
        }
        if let Some(g) = &self.in_scale {
            if g.len() != self.d_in {
                return Err(bad("input scale length".into()));
            }
        }
        Ok(())
    }
}

/// P0's private model: linear layers and private vectors (scales, LayerNorm gamma/beta as
/// fixed-point integers), by name.
#[derive(Clone, Debug, Default)]
pub struct PrivateModel {
    pub linears: HashMap<String, QLinear>,
    pub vectors: HashMap<String, Vec<i64>>,
}

impl PrivateModel {
    pub fn linear(&self, name: &str) -> Result<&QLinear> {
        self.linears
            .get(name)
            .ok_or_else(|| ProtocolError::UnknownTensor(name.into()))
    }
    pub fn vector(&self, name: &str) -> Result<&Vec<i64>> {
        self.vectors
            .get(name)
            .ok_or_else(|| ProtocolError::UnknownTensor(name.into()))
    }
}

/// A registered tensor as one role holds it, stored in u64 words and viewed in its ring.
#[derive(Clone, Debug, Default)]
pub struct RegEntry {
    pub bits: u32,
    pub len: usize,
    /// Public shape of a registered linear (d_in, d_out); (len, 1) for vectors.
    pub dims: (usize, usize),
    /// A_M (P0, dealer), E_M (P0, P1), M (P0, plain).
    pub a: Option<Vec<u64>>,
    pub e: Option<Vec<u64>>,
    pub m: Option<Vec<u64>>,
}

fn backing<R: Ring>(v: Vec<R>) -> Vec<u64> {
    let bytes: &[u8] = bytemuck::cast_slice(&v);
    let mut out = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut out)[..bytes.len()].copy_from_slice(bytes);
    out
}

fn view<R: Ring>(b: &[u64], len: usize) -> &[R] {
    &bytemuck::cast_slice::<u64, R>(b)[..len]
}

impl RegEntry {
    fn get<'a, R: Ring>(&self, v: &'a Option<Vec<u64>>, what: &'static str) -> Result<&'a [R]> {
        if R::BITS != self.bits {
            return Err(ProtocolError::Internal(format!(
                "registered {what} is in Z/2^{}, used as Z/2^{}",
                self.bits,
                R::BITS
            )));
        }
        let b = v
            .as_ref()
            .ok_or_else(|| ProtocolError::Internal(format!("this role holds no {what}")))?;
        Ok(view(b, self.len))
    }
    pub fn a<R: Ring>(&self) -> Result<&[R]> {
        self.get(&self.a, "A_M")
    }
    pub fn e<R: Ring>(&self) -> Result<&[R]> {
        self.get(&self.e, "E_M")
    }
    pub fn m<R: Ring>(&self) -> Result<&[R]> {
        self.get(&self.m, "M")
    }
}

#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub entries: HashMap<String, RegEntry>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Result<&RegEntry> {
        self.entries
            .get(name)
            .ok_or_else(|| ProtocolError::UnknownTensor(name.into()))
    }
}

impl Engine {
    /// Register P0's tensor `name` (length `dims.0 * dims.1`) in Z/2^R::BITS. P0 passes the
    /// values, everyone else `None`. Communicates in the registration phase: P0 -> P1, the
    /// whole E_M (len words); no dealer message (A_M comes from P0's seed).
    pub fn register<R: Ring>(
        &mut self,
        name: &str,
        dims: (usize, usize),
        values: Option<Vec<R>>,
    ) -> Result<()> {
        self.ctx.label(Phase::Register, NO_LAYER, OpKind::Other);
        let len = dims.0 * dims.1;
        let tag = name_id(name) as u32;
        let mut ent = RegEntry {
            bits: R::BITS,
            len,
            dims,
            ..Default::default()
        };
        let mask = |e: &Engine| -> Result<Vec<R>> {
            let s = e
                .p0_seed()
                .ok_or_else(|| ProtocolError::Internal("registration before seeds".into()))?;
            Ok(seed::uniform(
                &mut seed::stream(s, Purpose::Register, name_id(name)),
                len,
            ))
        };
        match self.role {
            Role::P0 | Role::Plain => {
                let m = values.ok_or_else(|| {
                    ProtocolError::Internal(format!("P0 registers {name} without values"))
                })?;
                if m.len() != len {
                    return Err(ProtocolError::Config(format!(
                        "{name}: {} values for {len}",
                        m.len()
                    )));
                }
                if self.role == Role::P0 {
                    let a = mask(self)?;
                    let e: Vec<R> = m.iter().zip(&a).map(|(m, a)| m.wsub(*a)).collect();
                    let mut buf = Vec::with_capacity(len * (R::BITS as usize / 8));
                    ring::encode(&e, &mut buf);
                    self.ctx.send(PartyId::P1, tag, buf)?;
                    ent.a = Some(backing(a));
                    ent.e = Some(backing(e));
                }
                ent.m = Some(backing(m));
            }
            Role::Dealer => ent.a = Some(backing(mask(self)?)),
            Role::P1 => {
                let buf = self.ctx.recv(PartyId::P0, tag)?;
                let e: Vec<R> = ring::decode_exact(&buf, len, PartyId::P0, "registration")?;
                ent.e = Some(backing(e));
            }
        }
        self.reg.entries.insert(name.to_string(), ent);
        Ok(())
    }

    /// Register a private linear layer's effective weights diag(g) W diag(a).
    pub fn register_linear<R: Ring>(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<()> {
        let values = match self.role {
            Role::P0 | Role::Plain => {
                let q = need_model(self)?.linear(name)?;
                q.validate(name)?;
                if q.d_in != d_in || q.d_out != d_out {
                    return Err(ProtocolError::Config(format!(
                        "linear {name} is {}x{}, the public shape says {d_in}x{d_out}",
                        q.d_in, q.d_out
                    )));
                }
                Some(q.effective::<R>())
            }
            _ => None,
        };
        self.register(name, (d_in, d_out), values)
    }

    /// Register a private vector (a scale or gamma) of length `len`.
    pub fn register_vector<R: Ring>(&mut self, name: &str, len: usize) -> Result<()> {
        let values = match self.role {
            Role::P0 | Role::Plain => Some(ring::from_i64s::<R>(need_model(self)?.vector(name)?)),
            _ => None,
        };
        self.register(name, (len, 1), values)
    }
}

pub(crate) fn need_model(e: &Engine) -> Result<&PrivateModel> {
    e.model
        .as_deref()
        .ok_or_else(|| ProtocolError::Internal("this role holds no model".into()))
}
