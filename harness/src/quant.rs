//! Quantization: the public plan (configs, protocol constants, windows and tables) and the
//! conversion of a float BERT into P0's private integer model.
//!
//! Every linear layer folds all private scales (weight scale, activation scales, the
//! previous LayerNorm's gamma and beta) into its integer weights and bias, so that its
//! output Z is a *public* fixed-point encoding of the float value (Z = y 2^F), or, for
//! Q/K/V, of the value in units of its private activation scale. Every table is then a
//! public function of a public encoding (PROTOCOL.md block 10); the constants below are
//! protocol constants, fixed independently of any model.

use crate::model::{BertConfig, BertWeights, LayerTrace, Linear};
use kernels::bitfc::pack_signs;
use protocol::{PrivateModel, QLinear, QWeights, Table, Window};
use std::fmt;

/// A quantization configuration: weight bits (1 = sign with per-output-channel scale,
/// 2..8 = symmetric per-output-channel integers) and activation bits (4 or 8).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QuantConfig {
    pub w_bits: u8,
    pub a_bits: u8,
}

impl QuantConfig {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown quantization {s:?}: expected wNaM, e.g. w1a4, w1a8, w8a8");
        let rest = s.strip_prefix('w').ok_or_else(bad)?;
        let (w, a) = rest.split_once('a').ok_or_else(bad)?;
        let w: u8 = w.parse().map_err(|_| bad())?;
        let a: u8 = a.parse().map_err(|_| bad())?;
        if !(1..=8).contains(&w) || !matches!(a, 4 | 8) {
            return Err(format!("{s}: weights take 1..8 bits, activations 4 or 8"));
        }
        Ok(QuantConfig {
            w_bits: w,
            a_bits: a,
        })
    }
}

impl fmt::Display for QuantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}a{}", self.w_bits, self.a_bits)
    }
}

/// The protocol constants of one plan (public).
#[derive(Clone, Debug)]
pub struct Consts {
    /// Activation bits and the largest a-bit value.
    pub a: u32,
    pub amax: i64,
    /// Guard bits below an a-bit output's resolution in table indices.
    pub g: u32,
    /// log2 of the step of LayerNorm outputs fed to linear layers (2^(3-a): +-4 range).
    pub ey: i32,
    /// log2 of the GELU output step (same as ey).
    pub eg: i32,
    /// Q/K/V linear output scale (value / s_act * 2^fa).
    pub fa: u32,
    /// Score scale 2^fc (private scalar c = s_q s_k / sqrt(d) in fixed point).
    pub fc: u32,
    /// exp outputs 2^fe; exp saturates at `sat`.
    pub fe: u32,
    pub sat: f64,
    /// ln E window bits.
    pub kl: u32,
    /// Residual stream scale 2^fres (ring 64).
    pub fres: u32,
    /// gamma fixed-point bits.
    pub fg: u32,
    /// Output scale of O, FFN1, FFN2 and pooler linears.
    pub flin: u32,
    /// Logit scale (logits within +-2^(31 - fl)).
    pub fl: u32,
    /// LayerNorm output scale before requantization.
    pub fy: u32,
    /// log2 of the largest LayerNorm input variance the rsqrt window covers.
    pub var_log2: u32,
    pub kv: u32,
    pub n: usize,
    pub hidden: usize,
    pub ln_eps: f64,
}

impl Consts {
    pub fn new(q: &QuantConfig, cfg: &BertConfig, seq: usize) -> Self {
        let a = q.a_bits as u32;
        Consts {
            a,
            amax: (1 << (a - 1)) - 1,
            g: 2,
            ey: 3 - a as i32,
            eg: 3 - a as i32,
            fa: 29 - a,
            // 4-bit activations: the score path fits Z/2^32 (n s 2^16 < 2^30 for n <= 512);
            // 8-bit: the private score scale c = s_q s_k / sqrt(d) is ~1e-4, so it needs 24
            // fractional bits and the score path runs in Z/2^64.
            fc: if a <= 4 { 16 } else { 24 },
            // exp outputs in Z/2^32: n e^sat 2^fe must stay below 2^30
            fe: (30
                - (seq.max(2) as f64).log2().ceil() as i64
                - (8.0f64 * std::f64::consts::LOG2_E).ceil() as i64)
                .clamp(4, 16) as u32,
            sat: 8.0,
            kl: 16,
            fres: 12,
            fg: 6,
            flin: 25,
            fl: 22,
            fy: 36,
            var_log2: 8,
            kv: 16,
            n: seq,
            hidden: cfg.hidden,
            ln_eps: cfg.ln_eps as f64,
        }
    }
    /// Whether the score path (Q K^T, softmax up to p) runs in Z/2^32 (else Z/2^64).
    pub fn scores_in_u32(&self) -> bool {
        self.fc <= 16
    }
    fn step(e: i32) -> f64 {
        2f64.powi(e)
    }
    pub fn sy(&self) -> f64 {
        Self::step(self.ey)
    }
    pub fn sg(&self) -> f64 {
        Self::step(self.eg)
    }
    /// Bits of an a-bit requantization table's index: a + guard + 2 (4x the clip range).
    pub fn k_req(&self) -> u32 {
        self.a + self.g + 2
    }
    /// Q/K/V linear -> a-bit window.
    pub fn w_qkv(&self) -> Window {
        Window {
            j: self.fa - self.g,
            k: self.k_req(),
        }
    }
    /// Linear output (2^flin in Z/2^32) -> residual stream 2^fres by truncation
    /// (`trunc_ext`): the whole rest of the ring, values within +-2^(31 - flin).
    pub fn w_res(&self) -> Window {
        Window {
            j: self.flin - self.fres,
            k: 32 - (self.flin - self.fres),
        }
    }
    /// FFN1 -> GELU: step SG / 2^g over +-16.
    pub fn w_gelu(&self) -> Window {
        let e = self.eg - self.g as i32; // log2 of the index step
        Window {
            j: (self.flin as i32 + e) as u32,
            k: (5 - e) as u32,
        }
    }
    /// Pooler -> tanh: step 1/64 over +-8.
    pub fn w_tanh(&self) -> Window {
        Window {
            j: self.flin - 6,
            k: 10,
        }
    }
    /// Scale of the centred scores n s 2^fc, as a float multiplier.
    fn s_scale(&self) -> f64 {
        self.n as f64 * 2f64.powi(self.fc as i32)
    }
    /// Centred scores -> exp: step <= 1/4 over >= +-32. Coarse on purpose: the exp
    /// outputs only feed the row sum E, and with the stochastic carry each lookup is an
    /// unbiased draw of the linear interpolation of exp between grid points, which
    /// overestimates exp by at most cosh(step / 2) - 1 < 0.8%.
    pub fn w_exp(&self) -> Window {
        let j = (self.s_scale() / 4.0).log2().floor() as u32;
        Window { j, k: 9 }
    }
    /// Row sums E -> ln E: the window covers n e^sat 2^fe.
    pub fn w_ln(&self) -> Window {
        let emax = self.n as f64 * self.sat.exp() * 2f64.powi(self.fe as i32);
        let top = emax.log2().ceil() as u32 + 1;
        Window {
            j: top.saturating_sub(self.kl),
            k: self.kl,
        }
    }
    /// d = s - L -> p: step <= 1/8 over >= +-16 (finer than the 8-bit output needs for
    /// the probabilities that matter: p >= 1/16 changes by < 1 LSB per step).
    pub fn w_p(&self) -> Window {
        let j = (self.s_scale() / 8.0).log2().floor() as u32;
        Window { j, k: 9 }
    }
    /// LayerNorm variance word V = H^3 var 2^(2 fres) -> rsqrt.
    pub fn w_var(&self) -> Window {
        let h3 = 3.0 * (self.hidden as f64).log2();
        let top = (h3 + 2.0 * self.fres as f64 + self.var_log2 as f64).ceil() as u32 + 1;
        Window {
            j: top - self.kv,
            k: self.kv,
        }
    }
    /// LayerNorm output y 2^fy -> a-bit.
    pub fn w_ya(&self) -> Window {
        Window {
            j: (self.fy as i32 + self.ey) as u32 - self.g,
            k: self.k_req(),
        }
    }
    /// LayerNorm output -> residual encoding 2^(fres - fg) by truncation (`trunc_ext`),
    /// values within +-64.
    pub fn w_yres(&self) -> Window {
        Window {
            j: self.fy - self.yres_bits(),
            k: self.yres_bits() + 8,
        }
    }
    /// Step of the residual-path LayerNorm output: 2^-(fres - fg).
    pub fn yres_bits(&self) -> u32 {
        self.fres - self.fg
    }

    // ---- tables (public functions of public encodings)
    fn round_div(i: i64, g: u32) -> i64 {
        if g == 0 {
            i
        } else {
            (i + (1 << (g - 1))) >> g
        }
    }
    /// Index with `g` guard bits -> a-bit value, clipped.
    pub fn t_requant<O: protocol::ring::Ring>(&self, k: u32) -> Table<O> {
        let (g, amax) = (self.g, self.amax);
        Table::from_fn(k, true, move |i| {
            Self::round_div(i, g).clamp(-amax - 1, amax)
        })
    }
    /// GELU as an a-bit value with a public zero point: GELU >= -0.17, so the 2^a levels
    /// cover [-1, 2^a - 2] steps (e.g. [-0.5, 7] for a = 4) instead of a symmetric range.
    /// FFN2 consumes the integer as is (its value is level x step), so nothing is folded.
    pub fn t_gelu(&self) -> Table<u32> {
        let w = self.w_gelu();
        let step = self.sg() / 2f64.powi(self.g as i32);
        let (sg, top) = (self.sg(), 2 * self.amax);
        Table::from_fn(w.k, true, move |i| {
            let x = i as f64 * step;
            ((crate::model::gelu(x as f32) as f64 / sg).round() as i64).clamp(-1, top)
        })
    }
    pub fn t_tanh(&self) -> Table<u32> {
        let amax = self.amax;
        Table::from_fn(self.w_tanh().k, true, move |i| {
            ((i as f64 / 64.0).tanh() * amax as f64).round() as i64
        })
    }
    /// exp of centred scores, saturating at `sat`, 2^fe.
    pub fn t_exp(&self) -> Table<u32> {
        let w = self.w_exp();
        let step = 2f64.powi(w.j as i32) / self.s_scale();
        let (sat, fe) = (self.sat, self.fe);
        Table::from_fn(w.k, true, move |i| {
            ((i as f64 * step).min(sat).exp() * 2f64.powi(fe as i32)).round() as i64
        })
    }
    /// ln(E / 2^fe) at the centred-score scale n 2^fc.
    pub fn t_ln<O: protocol::ring::Ring>(&self) -> Table<O> {
        let w = self.w_ln();
        let (fe, sc) = (self.fe, self.s_scale());
        Table::from_fn(w.k, false, move |i| {
            let e = (i as f64).max(0.5) * 2f64.powi(w.j as i32) / 2f64.powi(fe as i32);
            (e.ln() * sc).round() as i64
        })
    }
    /// p = exp(d) as 8 bits (0..255); indices above d = 2 can only be aliases of very
    /// negative d (d <= ~0 by construction), so they map to 0.
    pub fn t_p(&self) -> Table<u32> {
        let w = self.w_p();
        let step = 2f64.powi(w.j as i32) / self.s_scale();
        Table::from_fn(w.k, true, move |i| {
            let d = i as f64 * step;
            if d > 2.0 {
                0
            } else {
                ((256.0 * d.exp()).round() as i64).clamp(0, 255)
            }
        })
    }
    /// 2^fy / (H 2^fres sigma) from the variance word.
    pub fn t_rsqrt(&self) -> Table<u64> {
        let w = self.w_var();
        let h = self.hidden as f64;
        let (fres, fy, eps) = (self.fres as i32, self.fy as i32, self.ln_eps);
        Table::from_fn(w.k, false, move |i| {
            let v = (i as f64).max(0.5) * 2f64.powi(w.j as i32);
            let var = v / (h.powi(3) * 2f64.powi(2 * fres));
            (2f64.powi(fy) / (h * 2f64.powi(fres) * (var + eps).sqrt())).round() as i64
        })
    }
}

/// Per-layer activation scales from calibration (private to P0).
#[derive(Clone, Debug)]
pub struct LayerScales {
    pub q: ActQuant,
    pub k: ActQuant,
    pub v: ActQuant,
}

/// An activation's private quantization: value = s (level - z), levels in the signed a-bit
/// range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    pub s: f64,
    pub z: i64,
}

impl ActQuant {
    /// Asymmetric quantization of [lo, hi] onto the 2^a signed levels.
    pub fn from_range(lo: f64, hi: f64, a: u32) -> Self {
        let levels = ((1i64 << a) - 1) as f64;
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let s = ((hi - lo) / levels).max(1e-6);
        let z = -(1i64 << (a - 1)) - (lo / s).round() as i64;
        ActQuant { s, z }
    }
}

/// Calibration: per-tensor scale and zero point of Q, K and V from the smallest and largest
/// values over the calibration inputs (never the client's input).
pub fn calibrate(traces: &[Vec<LayerTrace>], c: &Consts) -> Vec<LayerScales> {
    let layers = traces.first().map_or(0, |t| t.len());
    (0..layers)
        .map(|l| {
            let m = |f: &dyn Fn(&LayerTrace) -> &Vec<f32>| {
                let (lo, hi) = traces
                    .iter()
                    .flat_map(|t| f(&t[l]).iter())
                    .fold((0f64, 0f64), |(a, b), &v| {
                        (a.min(v as f64), b.max(v as f64))
                    });
                ActQuant::from_range(lo, hi, c.a)
            };
            LayerScales {
                q: m(&|t| &t.q),
                k: m(&|t| &t.k),
                v: m(&|t| &t.v),
            }
        })
        .collect()
}

/// Weights quantized per output channel: (integer weights, per-channel scale alpha).
fn quantize_weights(lin: &Linear, bits: u8) -> (Vec<i64>, Vec<f64>) {
    let (din, dout) = (lin.d_in, lin.d_out);
    let mut alpha = vec![0f64; dout];
    let mut w = vec![0i64; din * dout];
    for j in 0..dout {
        let col = (0..din).map(|i| lin.w[i * dout + j] as f64);
        if bits == 1 {
            alpha[j] = col.clone().map(f64::abs).sum::<f64>() / din as f64;
            for i in 0..din {
                w[i * dout + j] = if lin.w[i * dout + j] >= 0.0 { 1 } else { -1 };
            }
        } else {
            let qmax = ((1i64 << (bits - 1)) - 1) as f64;
            let m = col.map(f64::abs).fold(0.0, f64::max);
            alpha[j] = if m > 0.0 { m / qmax } else { 1.0 };
            for i in 0..din {
                w[i * dout + j] = (lin.w[i * dout + j] as f64 / alpha[j]).round() as i64;
            }
        }
    }
    (w, alpha)
}

/// The input side of a linear: the step of its integer input and, optionally, the
/// previous LayerNorm's gamma/beta to fold in.
struct InputSide<'a> {
    step: f64,
    ln: Option<&'a crate::model::LayerNormW>,
}

/// Fold everything into a [`QLinear`] whose output is (value / s_out + z_out) 2^f.
fn qlinear(
    lin: &Linear,
    bits: u8,
    input: InputSide,
    (s_out, z_out): (f64, i64),
    f: u32,
    fg: u32,
) -> QLinear {
    let (w, alpha) = quantize_weights(lin, bits);
    let (din, dout) = (lin.d_in, lin.d_out);
    let two_f = 2f64.powi(f as i32);
    let (in_scale, gshift) = match input.ln {
        Some(ln) => (
            Some(
                ln.gamma
                    .iter()
                    .map(|&g| (g as f64 * 2f64.powi(fg as i32)).round() as i64)
                    .collect::<Vec<_>>(),
            ),
            fg as i32,
        ),
        None => (None, 0),
    };
    let out_scale: Vec<i64> = alpha
        .iter()
        .map(|a| (a * input.step * 2f64.powi(f as i32 - gshift) / s_out).round() as i64)
        .collect();
    let bias: Vec<i64> = (0..dout)
        .map(|j| {
            let folded = input.ln.map_or(0.0, |ln| {
                (0..din)
                    .map(|i| ln.beta[i] as f64 * alpha[j] * w[i * dout + j] as f64)
                    .sum::<f64>()
            });
            (((lin.b[j] as f64 + folded) / s_out + z_out as f64) * two_f).round() as i64
        })
        .collect();
    if bits > 1 {
        // k-bit weights run through the general ring matmul, so each weight can carry the
        // whole effective scale: W_eff = round(w alpha g step 2^f / s_out), one rounding per
        // weight instead of a rounded per-channel factor (which is coarse where the input
        // step is tiny, e.g. the attention context with scale s_v / 256).
        let eff: Vec<i64> = (0..din * dout)
            .map(|ij| {
                let (i, j) = (ij / dout, ij % dout);
                let g = input.ln.map_or(1.0, |ln| ln.gamma[i] as f64);
                (w[ij] as f64 * alpha[j] * g * input.step * two_f / s_out).round() as i64
            })
            .collect();
        return QLinear {
            d_in: din,
            d_out: dout,
            w: QWeights::Int(eff),
            in_scale: None,
            out_scale: vec![1; dout],
            bias,
        };
    }
    let s: Vec<i8> = w.iter().map(|&v| v as i8).collect();
    QLinear {
        d_in: din,
        d_out: dout,
        w: QWeights::Signs(pack_signs(&s, din, dout)),
        in_scale,
        out_scale,
        bias,
    }
}

fn fixed(v: &[f32], bits: u32) -> Vec<i64> {
    v.iter()
        .map(|&x| (x as f64 * 2f64.powi(bits as i32)).round() as i64)
        .collect()
}

/// The name of a layer's tensor in the private model and the registry.
pub fn name(layer: usize, what: &str) -> String {
    format!("L{layer}.{what}")
}

/// Quantize `w` (first `layers` layers) into P0's private integer model.
pub fn quantize(
    w: &BertWeights,
    q: &QuantConfig,
    c: &Consts,
    scales: &[LayerScales],
    layers: usize,
) -> PrivateModel {
    let mut m = PrivateModel::default();
    let dh = w.config.head_dim() as f64;
    let amax = c.amax as f64;
    for (l, lw) in w.layers.iter().take(layers).enumerate() {
        let prev = if l == 0 {
            &w.emb.ln
        } else {
            &w.layers[l - 1].ln2
        };
        let sc = &scales[l];
        let inp = || InputSide {
            step: c.sy(),
            ln: Some(prev),
        };
        m.linears.insert(
            name(l, "q"),
            qlinear(&lw.q, q.w_bits, inp(), (sc.q.s, sc.q.z), c.fa, c.fg),
        );
        m.linears.insert(
            name(l, "k"),
            qlinear(&lw.k, q.w_bits, inp(), (sc.k.s, sc.k.z), c.fa, c.fg),
        );
        m.linears.insert(
            name(l, "v"),
            qlinear(&lw.v, q.w_bits, inp(), (sc.v.s, sc.v.z), c.fa, c.fg),
        );
        let score = (sc.q.s * sc.k.s / dh.sqrt() * 2f64.powi(c.fc as i32)).round() as i64;
        m.vectors.insert(name(l, "c"), vec![score]);
        // zero points: c sum_d (q - zq)(k - zk) = c q.k - c zq sum_d k - (terms constant
        // along a row, which the softmax centring removes); sum_j p (v - zv) = p.v - zv sum_j p
        m.vectors
            .insert(name(l, "czq"), vec![score.wrapping_mul(sc.q.z); c.n]);
        m.vectors.insert(name(l, "zv"), vec![sc.v.z]);
        let ctx_step = sc.v.s / 256.0;
        m.linears.insert(
            name(l, "o"),
            qlinear(
                &lw.o,
                q.w_bits,
                InputSide {
                    step: ctx_step,
                    ln: None,
                },
                (1.0, 0),
                c.flin,
                c.fg,
            ),
        );
        m.linears.insert(
            name(l, "ffn1"),
            qlinear(
                &lw.ffn1,
                q.w_bits,
                InputSide {
                    step: c.sy(),
                    ln: Some(&lw.ln1),
                },
                (1.0, 0),
                c.flin,
                c.fg,
            ),
        );
        m.linears.insert(
            name(l, "ffn2"),
            qlinear(
                &lw.ffn2,
                q.w_bits,
                InputSide {
                    step: c.sg(),
                    ln: None,
                },
                (1.0, 0),
                c.flin,
                c.fg,
            ),
        );
        for (t, ln) in [("ln1", &lw.ln1), ("ln2", &lw.ln2)] {
            m.vectors
                .insert(name(l, &format!("{t}.g")), fixed(&ln.gamma, c.fg));
            m.vectors
                .insert(name(l, &format!("{t}.b")), fixed(&ln.beta, c.fres));
        }
    }
    m.vectors
        .insert("emb.g".into(), fixed(&w.emb.ln.gamma, c.fg));
    m.vectors
        .insert("emb.b".into(), fixed(&w.emb.ln.beta, c.fres));
    let last = if layers == 0 {
        &w.emb.ln
    } else {
        &w.layers[layers - 1].ln2
    };
    if let Some(p) = &w.pooler {
        m.linears.insert(
            "pool".into(),
            qlinear(
                p,
                q.w_bits,
                InputSide {
                    step: c.sy(),
                    ln: Some(last),
                },
                (1.0, 0),
                c.flin,
                c.fg,
            ),
        );
    }
    if let Some(cls) = &w.classifier {
        // the head is small: 8-bit weights whatever the body uses. Its input is the
        // pooler's a-bit tanh output, or (mean pooling) the sum of the last layer's a-bit
        // LayerNorm outputs over the sequence, with 1/n, gamma and beta folded in.
        let input = if w.pooler.is_some() {
            InputSide {
                step: 1.0 / amax,
                ln: None,
            }
        } else {
            InputSide {
                step: c.sy() / c.n as f64,
                ln: Some(last),
            }
        };
        m.linears
            .insert("cls".into(), qlinear(cls, 8, input, (1.0, 0), c.fl, c.fg));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_reject() {
        assert_eq!(
            QuantConfig::parse("w1a4").unwrap(),
            QuantConfig {
                w_bits: 1,
                a_bits: 4
            }
        );
        assert_eq!(QuantConfig::parse("w8a8").unwrap().to_string(), "w8a8");
        for bad in ["", "w1", "a4", "w0a8", "w1a5", "w9a8", "x1a4"] {
            assert!(QuantConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_fit_their_rings() {
        for q in ["w1a4", "w1a8", "w8a8"] {
            for seq in [1, 16, 128, 512] {
                let c = Consts::new(
                    &QuantConfig::parse(q).unwrap(),
                    &BertConfig::bert_base(),
                    seq,
                );
                for w in [c.w_qkv(), c.w_res(), c.w_gelu(), c.w_tanh(), c.w_ln()] {
                    assert!(w.j + w.k <= 32, "{q} {seq} {w:?}");
                }
                for w in [c.w_var(), c.w_ya(), c.w_yres()] {
                    assert!(w.j + w.k <= 64, "{q} {seq} {w:?}");
                }
                let score_bits = if c.scores_in_u32() { 32 } else { 64 };
                for w in [c.w_exp(), c.w_p()] {
                    assert!(w.j + w.k <= score_bits, "{q} {seq} {w:?}");
                }
                // the largest centred score word n 32 2^fc stays inside its ring
                assert!(
                    (seq as f64 * 32.0 * 2f64.powi(c.fc as i32)).log2() < (score_bits - 1) as f64
                );
                // the exp and p windows cover at least +-32 and +-16 in score units
                let half = |w: Window| {
                    2f64.powi((w.j + w.k - 1) as i32) / (seq as f64 * 2f64.powi(c.fc as i32))
                };
                assert!(half(c.w_exp()) >= 32.0 && half(c.w_p()) >= 16.0);
            }
        }
    }

    #[test]
    fn tables_compute_what_they_say() {
        let c = Consts::new(
            &QuantConfig::parse("w1a8").unwrap(),
            &BertConfig::bert_base(),
            128,
        );
        let t = c.t_requant::<u32>(c.k_req());
        assert_eq!(t.entries[4], 1); // 4 / 2^2
        assert_eq!(t.entries[(1 << c.k_req()) - 4].to_i64(), -1);
        assert_eq!(t.entries[(1 << (c.k_req() - 1)) - 1].to_i64(), 127); // clipped
        let g = c.t_gelu();
        // a = 8: output step 1/32, index step 1/128: index 128 is x = 1.0,
        // gelu(1) = 0.8413 -> 27 output steps
        assert_eq!(g.entries[128].to_i64(), 27);
        let p = c.t_p();
        assert_eq!(p.entries[0], 255); // d = 0 -> 256 clipped
        let rs = c.t_rsqrt();
        assert!(rs.entries[1] > rs.entries[2]);
    }
    use protocol::ring::Ring;
}
