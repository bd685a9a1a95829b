//! Quantization: the public plan (configs, protocol constants, windows and tables) and the
//! conversion of a float BERT into P0's private integer model.
//!
//! Every linear layer folds all private scales (weight scale, activation scales, the
//! previous LayerNorm's gamma and beta) into its integer weights and bias, so that its
//! output Z is a *public* fixed-point encoding of the float value (Z = y 2^F), or, for
//! Q/K/V, of the value in units of its private activation scale. Every table is then a
//! public function of a public encoding (PROTOCOL.md block 10); the constants below are
//! protocol constants, fixed independently of any model.

use crate::model::{matmul_f32, BertConfig, BertWeights, LayerTrace, Linear};
use kernels::bitfc::pack_signs;
use protocol::{PrivateModel, QLinear, QWeights, Table, Window};
use std::fmt;

/// A quantization configuration: weight bits (1 = sign with per-output-channel scale,
/// 2..8 = symmetric per-output-channel integers) and activation bits (4 or 8). Written
/// `wNaM`; `wNaM-attK` gives the attention projections (Q, K, V, O) K-bit weights and the
/// feed-forward layers N-bit ones (mixed precision, e.g. `w1a8-att8`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QuantConfig {
    /// Bits of the feed-forward weights (and of every linear when `att_bits == w_bits`).
    pub w_bits: u8,
    pub a_bits: u8,
    /// Bits of the attention projections' weights.
    pub att_bits: u8,
}

impl QuantConfig {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("unknown quantization {s:?}: expected wNaM or wNaM-attK, e.g. w1a4, w8a8, w1a8-att8")
        };
        let (body, att) = match s.split_once("-att") {
            Some((b, k)) => (b, Some(k.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let rest = body.strip_prefix('w').ok_or_else(bad)?;
        let (w, a) = rest.split_once('a').ok_or_else(bad)?;
        let w: u8 = w.parse().map_err(|_| bad())?;
        let a: u8 = a.parse().map_err(|_| bad())?;
        let att = att.unwrap_or(w);
        if !(1..=8).contains(&w) || !(1..=8).contains(&att) || !matches!(a, 4 | 8) {
            return Err(format!("{s}: weights take 1..8 bits, activations 4 or 8"));
        }
        Ok(QuantConfig {
            w_bits: w,
            a_bits: a,
            att_bits: att,
        })
    }
}

impl fmt::Display for QuantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}a{}", self.w_bits, self.a_bits)?;
        if self.att_bits != self.w_bits {
            write!(f, "-att{}", self.att_bits)?;
        }
        Ok(())
    }
}

/// Where exp saturates (centred-score units). Real attention rows are peaked: in
/// all-MiniLM-L6-v2 the largest score of a row exceeds the row mean by more than 8 in 8-16 %
/// of the rows of layers 0 and 1 (by up to 40); below the saturation point the log-sum-exp
/// and with it every probability of the row is wrong: keys more than ~6 below the
/// saturation point get p ~ 1 when the top key saturates. At 15 that was 7.7 % of the
/// rows of layer 0 (one row in 13 wrong; cosine of the w8a8 embedding 0.93 with float);
/// at 27, 0.3 % of the rows saturate. 27 is what [`LN_WINDOWS`] windows of ln E,
/// [`LN_BITS`] bits each and [`LN_SPACING`] bits apart, cover (`w_ln`), and E = n e^27 2^fe
/// still fits Z/2^61 with fe >= 8 for n <= 512.
pub const SAT: f64 = 27.0;

/// Windows of E read for ln E, their width, the bits between consecutive windows, and
/// the index from which a window is selected: window i + 1 is selected when its index
/// is at least 2^LN_SELECT_BITS (E >= 2^(j_i + LN_SPACING + LN_SELECT_BITS)), where
/// window i still holds E (LN_SPACING + LN_SELECT_BITS <= LN_BITS), so each selected
/// window keeps at least 4 significant bits (E to within 1/32 when rounded to nearest:
/// ln E within 0.03).
///
/// Five 12-bit windows instead of three 16-bit ones selected from index 8 (3 bits): one
/// table per row and window, each a DPF over the window's domain, so 9 tables of 2^12 per
/// row instead of 5 of 2^16, 9x fewer AES blocks. The 16-bit windows took 1.7 s of
/// bert-base's 6.2 s online on the 2-core machine, more than the 2.4 M exp lookups of the
/// same rows. Selecting from index 8 with 12-bit windows (3 bits where selected, as the
/// 16-bit design) cost w1a4 0.8 points over re-drawn splits; from 16 it keeps a bit more
/// than the 16-bit design did.
pub const LN_WINDOWS: usize = 5;
pub const LN_BITS: u32 = 12;
pub const LN_SPACING: u32 = 8;
pub const LN_SELECT_BITS: u32 = 4;

/// The GELU table's input window covers +-2^(GELU_RANGE_BITS - 1) = +-32. Real FFN1
/// outputs reach ~25 (all-MiniLM-L6-v2: one token per sequence in one channel of layers
/// 0-2, the feature that makes the residual stream's outlier dimension; -17 at the low
/// end): a +-16 window wrapped them onto the opposite end, turning a GELU of 24 into 0
/// and the residual outlier of 218 into 30.
pub const GELU_RANGE_BITS: u32 = 6;
/// Index bits below the GELU output's step: one (the output is rounded to the step
/// anyway; a second guard bit would cost a table twice the size for the same window).
pub const GELU_GUARD: u32 = 1;

/// GELU's wide band: the table's inputs in [[`GELU_NARROW`], 2 [`GELU_NARROW`]) read
/// x = [`GELU_WIDE`] (i - 1.5 [`GELU_NARROW`]), so they cover +-[`GELU_WIDE`]
/// [`GELU_NARROW`] at [`GELU_WIDE`] times the index step, and give GELU(x) at the normal
/// output step without the a-bit clip (up to 2^(a+3) levels: the band's outputs are
/// wider than a bits, the price of not clipping them). P0 sends an FFN1 channel there by
/// folding the affine map into its weights and bias (a 1-bit layer into its per-channel
/// scale); which channels go there is private, the table is public. All-MiniLM-L6-v2
/// has one such channel in each of layers 0-2 (GELU inputs up to 25, once per sequence:
/// the source of the residual stream's outlier feature, 218 after layer 0); clipped at
/// the a-bit top (7.8 for a = 8) that feature came out at 90.
pub const GELU_WIDE: f64 = 4.0;
/// The normal band's bound: FFN1 channels whose calibrated |value| exceeds
/// [`GELU_WIDE_AT`] (half the bound, for inputs the calibration did not see) go to the
/// wide band.
pub const GELU_NARROW: f64 = 16.0;
pub const GELU_WIDE_AT: f64 = 8.0;
/// Where the wide band's x = 0 sits in the table's input.
pub const GELU_WIDE_CENTRE: f64 = 1.5 * GELU_NARROW;

/// The p table's window spans at least this many score units (see [`Consts::w_p`]), of
/// which the top [`P_TOP`] are d > 0: rows past exp's saturation [`SAT`], whose top score
/// exceeds the row mean by at most ~41 in real text, so d <= 41 - SAT < P_TOP.
pub const P_SPAN: f64 = 112.0;
pub const P_TOP: f64 = 16.0;

/// Headroom of a per-channel LayerNorm output step over its calibrated range: one channel's
/// range from a few hundred rows says less about unseen inputs than a whole tensor's
/// (with 2 calibration sequences of a random bert-tiny, exact ranges doubled the logit
/// error); 1.25 costs the real model nothing measurable (w8a8 cosine 0.9967 -> 0.9966).
pub const PC_HEADROOM: f64 = 1.25;

/// Fraction of values clipped at each tail by a LayerNorm output step shared by all
/// channels (1-bit consumers, see [`LayerScales::ln1`]): the outlier channels (a few of
/// 384 in all-MiniLM-L6-v2, ~0.3 % of the values) then saturate instead of setting a step
/// that rounds most other values to 0 at 4 bits. Measured on 1000 training / 973 test
/// snippets, re-trained head: w1a4 62.0 -> 65.5 %, w1a4-att8 60.9 -> 63.0 %, w1a8 65.3 ->
/// 65.7 % (clip 1e-4 -> 1e-2).
pub const SHARED_STEP_CLIP: f64 = 1e-2;

/// Fractional bits of P0's gamma / s for the a-bit LayerNorm outputs (applied to y 2^fy:
/// products stay below 2^60 for |y gamma / s| < 2^12).
pub const LNX_BITS: u32 = 12;

/// log2 of the largest |gamma y + beta| a layer's LayerNorm hands the residual stream
/// (|y| <= sqrt(hidden) ~ 28 for bert-base; beyond it the value wraps, which the
/// plaintext run counts as an index outside its window).
pub const LNRES_RANGE_BITS: u32 = 10;

/// The protocol constants of one plan (public).
#[derive(Clone, Debug)]
pub struct Consts {
    /// Activation bits and the largest a-bit value.
    pub a: u32,
    pub amax: i64,
    /// Guard bits below an a-bit output's resolution in table indices.
    pub g: u32,
    /// log2 of the GELU output step (2^(3-a): levels up to 7 or 8).
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
            eg: 3 - a as i32,
            fa: 29 - a,
            // 4-bit activations: the score path fits Z/2^32 (n s 2^16 < 2^30 for n <= 512);
            // 8-bit: the private score scale c = s_q s_k / sqrt(d) is ~1e-4, so it needs 24
            // fractional bits and the score path runs in Z/2^64.
            // (the exp window, 128 score units wide or more, must fit Z/2^32: n 2^fc <= 2^24)
            fc: if a <= 4 {
                16.min(24 - (seq.max(2) as f64).log2().ceil() as u32)
            } else {
                24
            },
            // exp outputs in Z/2^64: n e^sat 2^fe must stay below 2^61
            fe: (61.0 - (seq.max(2) as f64).log2().ceil() - SAT * std::f64::consts::LOG2_E)
                .floor()
                .clamp(8.0, 40.0) as u32,
            sat: SAT,
            kl: LN_BITS,
            fres: 12,
            fg: 6,
            // linear outputs within +-2^(31 - flin) = +-512: real models' FFN2 outputs
            // reach ~200 on outlier features (all-MiniLM-L6-v2: 190 in layer 0), too close
            // to +-256 once the GELU stops clipping them
            flin: 22,
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
    /// FFN1 -> GELU: step SG / 2^[`GELU_GUARD`] over +-2^([`GELU_RANGE_BITS`] - 1).
    pub fn w_gelu(&self) -> Window {
        let e = self.eg - GELU_GUARD as i32; // log2 of the index step
        Window {
            j: (self.flin as i32 + e) as u32,
            k: (GELU_RANGE_BITS as i32 - e) as u32,
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
    pub(crate) fn s_scale(&self) -> f64 {
        self.n as f64 * 2f64.powi(self.fc as i32)
    }
    /// Centred scores -> exp: step <= 1/2, k = 9, the index range read as [-(W - 48), 48)
    /// for the window width W in (128, 256]: the largest centred score of a real row
    /// reaches ~40, far negative ones give exp ~ 0. Coarse on purpose: the exp outputs
    /// only feed the row sum E, and with the stochastic carry each lookup is an unbiased
    /// draw of the linear interpolation of exp between grid points (its mean bias, a
    /// constant factor for uniform offsets, is divided out of the table).
    pub fn w_exp(&self) -> Window {
        let j = (self.s_scale() / 2.0).log2().floor() as u32;
        Window { j, k: 9 }
    }
    /// Row sums E -> ln E, window `i` of [`LN_WINDOWS`]: the lowest starts where
    /// E >= n 2^fe (Jensen: the centred scores sum to 0) keeps 5 significant bits (an
    /// index step of 2^-4 n 2^fe, at least the [`LN_SELECT_BITS`] + 1 of a selected
    /// window); window i + 1 is [`LN_SPACING`] bits higher and is selected when its index
    /// is at least 2^LN_SELECT_BITS.
    pub fn w_ln(&self, i: usize) -> Window {
        let j = (self.n as f64).log2().floor() as u32 + self.fe - LN_SELECT_BITS;
        Window {
            j: j + LN_SPACING * i as u32,
            k: self.kl,
        }
    }
    /// Largest E: n e^sat 2^fe.
    pub fn e_max(&self) -> f64 {
        self.n as f64 * self.sat.exp() * 2f64.powi(self.fe as i32)
    }
    /// d = s - L -> p: k = 10, the window at least [`P_SPAN`] score units wide (W in
    /// [P_SPAN, 2 P_SPAN), step W / 1024 < 0.22), its index range read as
    /// [-(W - [`P_TOP`]), [`P_TOP`]): d > 0 (a row above saturation) means p ~ 1, and very
    /// negative d must not alias onto it: in peaked rows of real models (all-MiniLM-L6-v2,
    /// layer 0) the lowest key sits ~85 units below the top one, and a 64-unit window
    /// gave it p = 1.
    pub fn w_p(&self) -> Window {
        let j = (P_SPAN * self.s_scale() / 1024.0).log2().ceil() as u32;
        Window { j, k: 10 }
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
    /// LayerNorm output (gamma y + beta) / s at 2^(fy + LNX_BITS) -> a-bit.
    pub fn w_lnx(&self) -> Window {
        Window {
            j: self.fy + LNX_BITS - self.g,
            k: self.k_req(),
        }
    }
    /// LayerNorm output gamma y + beta at 2^(fy + fg) -> residual stream 2^fres by
    /// truncation (`trunc_ext`), values within +-2^[`LNRES_RANGE_BITS`].
    pub fn w_lnres(&self) -> Window {
        Window {
            j: self.fy + self.fg - self.fres,
            k: self.fres + LNRES_RANGE_BITS + 2,
        }
    }
    /// Fractional bits of the client's normalised embedding y (its residual encoding,
    /// step 2^-(fres - fg)), before the embedding LayerNorm's gamma (2^fg) and beta.
    pub fn yres_bits(&self) -> u32 {
        self.fres - self.fg
    }

    // ---- tables (public functions of public encodings)
    /// i / 2^g rounded to nearest, ties to even. The index is already an unbiased
    /// (stochastically rounded) reading of the value, so the table's own rounding must
    /// not add a bias: ties up would shift every requantized value by +1/8 of its step
    /// (g = 2: a quarter of the indices are ties), which a head trained on float
    /// features reads as a constant offset along every feature.
    fn round_div(i: i64, g: u32) -> i64 {
        if g == 0 {
            return i;
        }
        let (q, r) = (i >> g, i & ((1 << g) - 1));
        let half = 1 << (g - 1);
        if r > half || (r == half && q & 1 == 1) {
            q + 1
        } else {
            q
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
    /// Inputs from [`GELU_NARROW`] up are the wide band (see [`GELU_WIDE`]).
    pub fn t_gelu(&self) -> Table<u32> {
        let w = self.w_gelu();
        let step = self.sg() / 2f64.powi(GELU_GUARD as i32);
        let (sg, lo) = (self.sg(), self.gelu_low());
        let top = 2 * self.amax + 1 - lo;
        let wide_top = (GELU_WIDE * GELU_NARROW / sg).ceil() as i64;
        Table::from_fn(w.k, true, move |i| {
            let x = i as f64 * step;
            let (x, top) = if x >= GELU_NARROW {
                ((x - GELU_WIDE_CENTRE) * GELU_WIDE, wide_top)
            } else {
                (x, top)
            };
            ((crate::model::gelu(x as f32) as f64 / sg).round() as i64).clamp(-lo, top)
        })
    }
    /// Negative GELU output levels: enough to reach GELU's minimum (-0.17), so negative
    /// outputs are rounded, not clipped (a clip there biases every FFN2 output).
    pub fn gelu_low(&self) -> i64 {
        ((0.17 / self.sg()).ceil() as i64).max(1)
    }
    pub fn t_tanh(&self) -> Table<u32> {
        let amax = self.amax;
        Table::from_fn(self.w_tanh().k, true, move |i| {
            ((i as f64 / 64.0).tanh() * amax as f64).round() as i64
        })
    }
    /// exp of centred scores, saturating at `sat`, 2^fe.
    pub fn t_exp(&self) -> Table<u64> {
        let w = self.w_exp();
        let step = 2f64.powi(w.j as i32) / self.s_scale();
        let (sat, fe) = (self.sat, self.fe);
        // mean of exp over a step / mean of its linear interpolation (uniform offsets)
        let unbias = ((step.exp() - 1.0) / step) / ((1.0 + step.exp()) / 2.0);
        // indices read in [-(2^k - top), top): exp ~ 0 far below, saturated far above
        let top = (48.0 / step).round() as i64;
        Table::from_range(w.k, top - (1i64 << w.k), move |i| {
            ((i as f64 * step).min(sat).exp() * unbias * 2f64.powi(fe as i32)).round() as i64
        })
    }
    /// ln(E / 2^fe) at the centred-score scale n 2^fc, over window `w` of E.
    fn t_ln_at<O: protocol::ring::Ring>(&self, w: Window) -> Table<O> {
        let (fe, sc) = (self.fe, self.s_scale());
        Table::from_fn(w.k, false, move |i| {
            let e = (i as f64).max(0.5) * 2f64.powi(w.j as i32) / 2f64.powi(fe as i32);
            (e.ln() * sc).round() as i64
        })
    }
    /// ln E on window `i`; every window but the top one wraps for large E, where a
    /// selector picks a higher one.
    pub fn t_ln<O: protocol::ring::Ring>(&self, i: usize) -> Table<O> {
        let t = self.t_ln_at(self.w_ln(i));
        if i + 1 < LN_WINDOWS {
            t.unchecked()
        } else {
            t
        }
    }
    /// 1 where a higher window of E is not used (index below 2^[`LN_SELECT_BITS`]), else 0.
    pub fn t_ln_unsel<O: protocol::ring::Ring>(&self) -> Table<O> {
        Table::from_fn(self.kl, false, |i| i64::from(i < 1 << LN_SELECT_BITS))
    }
    /// p = exp(d) as 8 bits (0..255); the index range is read as [-(W - P_TOP), P_TOP), and
    /// d > 0 (only in rows past the saturation of exp) gives 255.
    pub fn t_p(&self) -> Table<u32> {
        let w = self.w_p();
        let step = 2f64.powi(w.j as i32) / self.s_scale();
        let top = (P_TOP / step).round() as i64;
        Table::from_range(w.k, top - (1i64 << w.k), move |i| {
            ((256.0 * (i as f64 * step).exp()).round() as i64).clamp(0, 255)
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

/// The quantized model's version, written into every head file trained on a quantized
/// model's embeddings (a head fits one version's embeddings, not another's). q2: 1-bit
/// scales fitted on the calibration outputs ([`sign_scales`]; q1 took mean |W|); q3: ln E
/// over five 12-bit windows ([`LN_WINDOWS`]; q2 read three 16-bit ones).
pub const QUANTIZER: &str = "q3";

/// Activation scales from calibration (private to P0).
#[derive(Clone, Debug)]
pub struct Scales {
    /// Steps of the embedding LayerNorm's a-bit output per channel (symmetric; see
    /// [`LayerScales::ln1`]).
    pub emb: Vec<f64>,
    pub layers: Vec<LayerScales>,
}

/// One layer's private activation scales.
#[derive(Clone, Debug)]
pub struct LayerScales {
    pub q: ActQuant,
    pub k: ActQuant,
    pub v: ActQuant,
    /// Steps of the two LayerNorm outputs' a-bit encodings (symmetric), one per channel.
    /// LayerNorm outputs carry a few outlier channels (all-MiniLM-L6-v2: one reaches ~28
    /// where most stay within ~3); one step for the whole tensor spends the a bits on
    /// them, and a w8a8 embedding keeps a cosine of only 0.94 with float. A step per
    /// channel costs nothing in the protocol (P0 divides gamma and beta by it, and a
    /// k-bit linear folds it into its weights), so every channel is calibrated on its own
    /// unless the consumer is a 1-bit linear, whose sign weights cannot absorb a
    /// per-input factor: then all channels share one step.
    pub ln1: Vec<f64>,
    pub ln2: Vec<f64>,
    /// FFN1 channels sent to the GELU table's wide band (see [`GELU_WIDE`]).
    pub gelu_wide: Vec<bool>,
    /// Scales of the layer's 1-bit linears, fitted on the calibration inputs.
    pub signs: SignScales,
}

/// Per-output-channel scales alpha of a layer's 1-bit linears (W ~ alpha_j sign(W_j)),
/// fitted on the calibration inputs by [`sign_scales`]; empty for a linear with k > 1 bit
/// weights.
#[derive(Clone, Debug, Default)]
pub struct SignScales {
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub v: Vec<f64>,
    pub o: Vec<f64>,
    pub ffn1: Vec<f64>,
    pub ffn2: Vec<f64>,
}

/// The sign of a weight as a 1-bit linear stores it (0 counts as +1).
fn sign(w: f32) -> i64 {
    if w >= 0.0 {
        1
    } else {
        -1
    }
}

/// Mean |W_j| of output channel j: the weight-space least-squares scale of sign(W_j).
fn mean_abs(lin: &Linear, j: usize) -> f64 {
    let (din, dout) = (lin.d_in, lin.d_out);
    (0..din)
        .map(|i| lin.w[i * dout + j].abs() as f64)
        .sum::<f64>()
        / din.max(1) as f64
}

/// The output-space scales of a 1-bit linear: alpha_j = <u_j, y_j> / |u_j|^2 over the
/// calibration rows `x` (n x d_in), with y = x W (the float layer's output less its bias)
/// and u = x sign(W). That is the least-squares scale for the outputs the layer actually
/// produces; mean |W_j| (the weight-space least-squares scale, the usual choice) ignores
/// that LayerNorm outputs put most of their energy in a few channels. On the real model
/// it helps the 4-bit-activation configs by 1-5 points and costs the 8-bit ones about one
/// (docs/design.md, "What was tried for w1a4"). A channel whose fit is not positive (or
/// with no rows) keeps mean |W_j|.
pub fn sign_scales(lin: &Linear, x: &[f32], y: &[f32]) -> Vec<f64> {
    let (din, dout) = (lin.d_in, lin.d_out);
    let rows = x.len().checked_div(din).unwrap_or(0);
    if rows == 0 || y.len() != rows * dout {
        return (0..dout).map(|j| mean_abs(lin, j)).collect();
    }
    let s: Vec<f32> = lin.w.iter().map(|&w| sign(w) as f32).collect();
    let u = matmul_f32(&x[..rows * din], &s, rows, din, dout);
    let (mut num, mut den) = (vec![0f64; dout], vec![0f64; dout]);
    for (ur, yr) in u.chunks_exact(dout).zip(y.chunks_exact(dout)) {
        for j in 0..dout {
            let (a, b) = (ur[j] as f64, yr[j] as f64 - lin.b[j] as f64);
            num[j] += a * b;
            den[j] += a * a;
        }
    }
    (0..dout)
        .map(|j| {
            if den[j] > 0.0 && num[j] > 0.0 {
                num[j] / den[j]
            } else {
                mean_abs(lin, j)
            }
        })
        .collect()
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

/// Calibration: per-tensor scale and zero point of Q, K and V, and the (symmetric) steps
/// of every LayerNorm output, per channel where the consuming linear has k > 1 bit weights
/// (see [`LayerScales::ln1`]), over the calibration inputs (never the client's input):
/// `embs` are the embedding LayerNorm's outputs, `traces` the layers'. `clip` is the
/// fraction of values left outside the range at each tail: 0 takes the smallest and
/// largest values (min/max); with real text a small fraction (e.g. 1e-4: the 0.01th and
/// 99.99th percentiles) keeps one outlier token from stretching the step of every other
/// value. Clipped values saturate at the ends of the a-bit range (the requantization
/// window covers 4x the range, so only values beyond that would alias). A step shared by
/// all channels clips at least [`SHARED_STEP_CLIP`].
pub fn calibrate(
    w: &BertWeights,
    embs: &[Vec<f32>],
    traces: &[Vec<LayerTrace>],
    c: &Consts,
    q: &QuantConfig,
    clip: f64,
) -> Scales {
    let layers = traces.first().map_or(0, |t| t.len());
    let h = c.hidden.max(1);
    // the symmetric step of the values `v` clipped by `clip` at each tail
    let step = |mut v: Vec<f32>, clip: f64| {
        let (lo, hi) = percentile_range(&mut v, clip);
        (lo.abs().max(hi) / c.amax as f64).max(1e-6)
    };
    // one step per channel of rows `h` wide, or the tensor's step repeated
    let sym = |rows: Vec<f32>, per_channel: bool| -> Vec<f64> {
        if !per_channel {
            return vec![step(rows, clip.max(SHARED_STEP_CLIP)); h];
        }
        (0..h)
            .map(|i| step(rows.iter().skip(i).step_by(h).copied().collect(), clip) * PC_HEADROOM)
            .collect()
    };
    let (att, ffn) = (q.att_bits > 1, q.w_bits > 1);
    let ffn_width = |l: usize| {
        traces.first().map_or(0, |t| {
            let rows = t[l].q.len() / h;
            t[l].ffn1_out.len() / rows.max(1)
        })
    };
    let emb = sym(embs.iter().flatten().copied().collect(), att);
    let layers = (0..layers)
        .map(|l| {
            let all = |f: &dyn Fn(&LayerTrace) -> &Vec<f32>| -> Vec<f32> {
                traces
                    .iter()
                    .flat_map(|t| f(&t[l]).iter().copied())
                    .collect()
            };
            let asym = |mut v: Vec<f32>| {
                let (lo, hi) = percentile_range(&mut v, clip);
                ActQuant::from_range(lo, hi, c.a)
            };
            // the last LayerNorm feeds the head (8-bit weights) and, in models with a
            // pooler, the pooler (feed-forward bits)
            let ln2_pc = if l + 1 == layers { ffn } else { att };
            let signs = if att && ffn {
                SignScales::default()
            } else {
                // the 1-bit linears' calibration inputs, gathered only for them
                let lw = &w.layers[l];
                let fit = |one_bit: bool,
                           lin: &Linear,
                           x: &[f32],
                           y: &dyn Fn(&LayerTrace) -> &Vec<f32>| {
                    if one_bit {
                        sign_scales(lin, x, &all(y))
                    } else {
                        vec![]
                    }
                };
                let input = |one_bit: bool, f: &dyn Fn(&LayerTrace) -> &Vec<f32>| {
                    if one_bit {
                        all(f)
                    } else {
                        vec![]
                    }
                };
                let prev: Vec<f32> = match (att, l) {
                    (true, _) => vec![],
                    (false, 0) => embs.iter().flatten().copied().collect(),
                    (false, _) => traces
                        .iter()
                        .flat_map(|t| t[l - 1].out.iter().copied())
                        .collect(),
                };
                let (ctx, ln1, gelu) = (
                    input(!att, &|t| &t.ctx),
                    input(!ffn, &|t| &t.ln1_out),
                    input(!ffn, &|t| &t.gelu_out),
                );
                SignScales {
                    q: fit(!att, &lw.q, &prev, &|t| &t.q),
                    k: fit(!att, &lw.k, &prev, &|t| &t.k),
                    v: fit(!att, &lw.v, &prev, &|t| &t.v),
                    o: fit(!att, &lw.o, &ctx, &|t| &t.attn_out),
                    ffn1: fit(!ffn, &lw.ffn1, &ln1, &|t| &t.ffn1_out),
                    ffn2: fit(!ffn, &lw.ffn2, &gelu, &|t| &t.ffn2_out),
                }
            };
            LayerScales {
                q: asym(all(&|t| &t.q)),
                k: asym(all(&|t| &t.k)),
                v: asym(all(&|t| &t.v)),
                ln1: sym(all(&|t| &t.ln1_out), ffn),
                ln2: sym(all(&|t| &t.out), ln2_pc),
                gelu_wide: wide_channels(&all(&|t| &t.ffn1_out), ffn_width(l)),
                signs,
            }
        })
        .collect();
    Scales { emb, layers }
}

/// The FFN1 channels (`v`: rows of `ffn` FFN1 outputs) whose largest |value| exceeds
/// [`GELU_WIDE_AT`].
fn wide_channels(v: &[f32], ffn: usize) -> Vec<bool> {
    let mut wide = vec![false; ffn];
    if ffn > 0 {
        for row in v.chunks_exact(ffn) {
            for (w, &x) in wide.iter_mut().zip(row) {
                *w |= x.abs() as f64 > GELU_WIDE_AT;
            }
        }
    }
    wide
}

/// The `clip` and `1 - clip` quantiles of `v` (nearest rank; min and max for clip = 0),
/// widened to include 0. Reorders `v`.
fn percentile_range(v: &mut [f32], clip: f64) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len();
    let k = ((clip.clamp(0.0, 0.5) * n as f64).floor() as usize).min(n - 1);
    let cmp = |a: &f32, b: &f32| a.total_cmp(b);
    let lo = *v.select_nth_unstable_by(k, cmp).1 as f64;
    let hi = *v.select_nth_unstable_by(n - 1 - k, cmp).1 as f64;
    (lo.min(0.0), hi.max(0.0))
}

/// Weights quantized per output channel: (integer weights, per-channel scale alpha).
fn quantize_weights(lin: &Linear, bits: u8) -> (Vec<i64>, Vec<f64>) {
    let (din, dout) = (lin.d_in, lin.d_out);
    let mut alpha = vec![0f64; dout];
    let mut w = vec![0i64; din * dout];
    for j in 0..dout {
        let col = (0..din).map(|i| lin.w[i * dout + j] as f64);
        if bits == 1 {
            alpha[j] = mean_abs(lin, j);
            for i in 0..din {
                w[i * dout + j] = sign(lin.w[i * dout + j]);
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

/// A linear layer's output encoding: value / s + z per output channel.
#[derive(Clone, Copy)]
enum Out<'a> {
    /// The same (s, z) for every channel.
    All(f64, i64),
    /// The value itself, or, for the channels marked, the GELU table's wide band
    /// (s = [`GELU_WIDE`], z = its centre 1.5 [`GELU_NARROW`]).
    GeluBands(&'a [bool]),
}

impl Out<'_> {
    fn at(self, j: usize) -> (f64, i64) {
        match self {
            Out::All(s, z) => (s, z),
            Out::GeluBands(w) if w.get(j) == Some(&true) => (GELU_WIDE, GELU_WIDE_CENTRE as i64),
            Out::GeluBands(_) => (1.0, 0),
        }
    }
}

/// Fold everything into a [`QLinear`] whose output is (value / s_out + z_out) 2^f (per
/// channel, see [`Out`]) for an integer input whose channel i has step `step[i]` (LayerNorm gamma and beta are applied
/// before the input's quantization, see `BertProgram::affine`, so nothing else is folded).
/// 1-bit weights take one step for all channels (`step[0]`; calibration gives them equal
/// steps, see [`LayerScales::ln1`]).
fn qlinear(lin: &Linear, bits: u8, step: &[f64], alpha1: &[f64], out: Out, f: u32) -> QLinear {
    let (w, mut alpha) = quantize_weights(lin, bits);
    if bits == 1 && alpha1.len() == lin.d_out {
        alpha.copy_from_slice(alpha1);
    }
    let (din, dout) = (lin.d_in, lin.d_out);
    let two_f = 2f64.powi(f as i32);
    let bias: Vec<i64> = (0..dout)
        .map(|j| {
            let (s_out, z_out) = out.at(j);
            ((lin.b[j] as f64 / s_out + z_out as f64) * two_f).round() as i64
        })
        .collect();
    if bits > 1 {
        // k-bit weights run through the general ring matmul, so each weight can carry the
        // whole effective scale: W_eff = round(w alpha step 2^f / s_out), one rounding per
        // weight instead of a rounded per-channel factor (which is coarse where the input
        // step is tiny, e.g. the attention context with scale s_v / 256), and the input's
        // step can differ per channel.
        let eff: Vec<i64> = (0..din * dout)
            .map(|ij| {
                let (st, j) = (step[ij / dout], ij % dout);
                (w[ij] as f64 * alpha[j] * st * two_f / out.at(j).0).round() as i64
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
    debug_assert!(
        step.iter().all(|&s| s == step[0]),
        "1-bit weights need one input step"
    );
    let out_scale: Vec<i64> = alpha
        .iter()
        .enumerate()
        .map(|(j, a)| (a * step[0] * two_f / out.at(j).0).round() as i64)
        .collect();
    let s: Vec<i8> = w.iter().map(|&v| v as i8).collect();
    QLinear {
        d_in: din,
        d_out: dout,
        w: QWeights::Signs(pack_signs(&s, din, dout)),
        in_scale: None,
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
    scales: &Scales,
    layers: usize,
) -> PrivateModel {
    let mut m = PrivateModel::default();
    let dh = w.config.head_dim() as f64;
    for (l, lw) in w.layers.iter().take(layers).enumerate() {
        let sc = &scales.layers[l];
        let prev = if l == 0 {
            &scales.emb
        } else {
            &scales.layers[l - 1].ln2
        };
        m.linears.insert(
            name(l, "q"),
            qlinear(
                &lw.q,
                q.att_bits,
                prev,
                &sc.signs.q,
                Out::All(sc.q.s, sc.q.z),
                c.fa,
            ),
        );
        m.linears.insert(
            name(l, "k"),
            qlinear(
                &lw.k,
                q.att_bits,
                prev,
                &sc.signs.k,
                Out::All(sc.k.s, sc.k.z),
                c.fa,
            ),
        );
        m.linears.insert(
            name(l, "v"),
            qlinear(
                &lw.v,
                q.att_bits,
                prev,
                &sc.signs.v,
                Out::All(sc.v.s, sc.v.z),
                c.fa,
            ),
        );
        let score = (sc.q.s * sc.k.s / dh.sqrt() * 2f64.powi(c.fc as i32)).round() as i64;
        m.vectors.insert(name(l, "c"), vec![score]);
        // zero points: c sum_d (q - zq)(k - zk) = c q.k - c zq sum_d k - (terms constant
        // along a row, which the softmax centring removes); sum_j p (v - zv) = p.v - zv sum_j p
        m.vectors
            .insert(name(l, "czq"), vec![score.wrapping_mul(sc.q.z); c.n]);
        m.vectors.insert(name(l, "zv"), vec![sc.v.z]);
        let ctx_step = vec![sc.v.s / 256.0; lw.o.d_in];
        m.linears.insert(
            name(l, "o"),
            qlinear(
                &lw.o,
                q.att_bits,
                &ctx_step,
                &sc.signs.o,
                Out::All(1.0, 0),
                c.flin,
            ),
        );
        m.linears.insert(
            name(l, "ffn1"),
            qlinear(
                &lw.ffn1,
                q.w_bits,
                &sc.ln1,
                &sc.signs.ffn1,
                Out::GeluBands(&sc.gelu_wide),
                c.flin,
            ),
        );
        m.linears.insert(
            name(l, "ffn2"),
            qlinear(
                &lw.ffn2,
                q.w_bits,
                &vec![c.sg(); lw.ffn2.d_in],
                &sc.signs.ffn2,
                Out::All(1.0, 0),
                c.flin,
            ),
        );
        // layer LayerNorms scale y 2^fy; the embedding's the client's y 2^(fres - fg)
        let lnx = (c.fy, c.fy + LNX_BITS, c.fy + c.fg);
        ln_vectors(&mut m, &name(l, "ln1"), &lw.ln1, &sc.ln1, c, lnx);
        ln_vectors(&mut m, &name(l, "ln2"), &lw.ln2, &sc.ln2, c, lnx);
    }
    ln_vectors(
        &mut m,
        "emb",
        &w.emb.ln,
        &scales.emb,
        c,
        (c.yres_bits(), c.fa, c.fres),
    );
    let last = last_scale(scales, layers);
    if let Some(p) = &w.pooler {
        m.linears.insert(
            "pool".into(),
            qlinear(p, q.w_bits, last, &[], Out::All(1.0, 0), c.flin),
        );
    }
    if let Some(cls) = &w.classifier {
        m.linears
            .insert("cls".into(), quantize_head(w, cls, c, scales, layers));
    }
    m
}

/// Steps of the a-bit output of the last LayerNorm before the head.
fn last_scale(scales: &Scales, layers: usize) -> &[f64] {
    match layers {
        0 => &scales.emb,
        l => &scales.layers[l - 1].ln2,
    }
}

/// A LayerNorm's private vectors (see `BertProgram::layernorm`): gamma (2^fg) and beta
/// (2^`b_bits`: 2^fres for the embedding's, added on the residual stream; 2^(fy + fg)
/// for a layer's, added to gamma y before the truncation into it), and gamma and beta
/// divided by the a-bit output's step s, as `gx` and `bx`, for the requantization to a
/// bits: `gx` multiplies y at 2^`y_bits` and the result, like `bx`, lands at 2^`x_bits`.
fn ln_vectors(
    m: &mut PrivateModel,
    base: &str,
    ln: &crate::model::LayerNormW,
    s: &[f64],
    c: &Consts,
    (y_bits, x_bits, b_bits): (u32, u32, u32),
) {
    m.vectors
        .insert(format!("{base}.g"), fixed(&ln.gamma, c.fg));
    m.vectors
        .insert(format!("{base}.b"), fixed(&ln.beta, b_bits));
    let scaled = |v: &[f32], bits: i32| -> Vec<i64> {
        v.iter()
            .zip(s)
            .map(|(&x, &s)| (x as f64 / s * 2f64.powi(bits)).round() as i64)
            .collect()
    };
    m.vectors.insert(
        format!("{base}.gx"),
        scaled(&ln.gamma, x_bits as i32 - y_bits as i32),
    );
    m.vectors
        .insert(format!("{base}.bx"), scaled(&ln.beta, x_bits as i32));
}

/// The classifier `cls` on top of the first `layers` layers of `w`, as P0's private layer
/// "cls". The head is small: 8-bit weights whatever the body uses. Its input is the
/// pooler's a-bit tanh output, or (mean pooling) the sum of the last LayerNorm's a-bit
/// outputs over the sequence, with 1/n and their step folded in.
pub fn quantize_head(
    w: &BertWeights,
    cls: &Linear,
    c: &Consts,
    scales: &Scales,
    layers: usize,
) -> QLinear {
    let step: Vec<f64> = if w.pooler.is_some() {
        vec![1.0 / c.amax as f64; cls.d_in]
    } else {
        let n = c.n as f64;
        last_scale(scales, layers).iter().map(|s| s / n).collect()
    };
    qlinear(cls, 8, &step, &[], Out::All(1.0, 0), c.fl)
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
                a_bits: 4,
                att_bits: 1
            }
        );
        let m = QuantConfig::parse("w1a8-att8").unwrap();
        assert_eq!((m.w_bits, m.a_bits, m.att_bits), (1, 8, 8));
        assert_eq!(m.to_string(), "w1a8-att8");
        assert_eq!(QuantConfig::parse("w4a8-att4").unwrap().to_string(), "w4a8");
        assert_eq!(QuantConfig::parse("w8a8").unwrap().to_string(), "w8a8");
        for bad in [
            "",
            "w1",
            "a4",
            "w0a8",
            "w1a5",
            "w9a8",
            "x1a4",
            "w1a4-att",
            "w1a4-att9",
            "w1a4-att0",
        ] {
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
                for w in [c.w_qkv(), c.w_res(), c.w_gelu(), c.w_tanh()] {
                    assert!(w.j + w.k <= 32, "{q} {seq} {w:?}");
                }
                for w in [c.w_var(), c.w_lnres(), c.w_lnx()] {
                    assert!(w.j + w.k <= 64, "{q} {seq} {w:?}");
                }
                let score_bits = if c.scores_in_u32() { 32 } else { 64 };
                for w in [c.w_exp(), c.w_p()] {
                    assert!(w.j + w.k <= score_bits, "{q} {seq} {w:?}");
                }
                // the largest centred score word n 64 2^fc stays inside its ring
                assert!(
                    (seq as f64 * 64.0 * 2f64.powi(c.fc as i32)).log2() < (score_bits - 1) as f64
                );
                // the exp window is at least 128 score units wide (step <= 1/2), p's at
                // least P_SPAN (step < 0.22)
                let units = |w: Window| 2f64.powi(w.j as i32) / c.s_scale();
                assert!(units(c.w_exp()) <= 0.5 && units(c.w_exp()) * 512.0 >= 128.0);
                assert!(units(c.w_p()) < 0.22 && units(c.w_p()) * 1024.0 >= P_SPAN);
                // ln E: the low window keeps 5 significant bits at E = n 2^fe, the top
                // one covers n e^sat 2^fe, and no window wraps below the next one's
                // threshold 2^(LN_SELECT_BITS + j_next)
                let (lo, top) = (c.w_ln(0), c.w_ln(LN_WINDOWS - 1));
                assert!((seq as f64 * 2f64.powi(c.fe as i32)) >= 16.0 * 2f64.powi(lo.j as i32));
                assert!(c.e_max() < 2f64.powi((top.j + top.k) as i32) && top.j + top.k <= 63);
                for i in 1..LN_WINDOWS {
                    assert!(c.w_ln(i - 1).j + c.kl >= c.w_ln(i).j + LN_SELECT_BITS);
                }
                // the exp outputs keep >= 8 fractional bits
                assert!(
                    c.fe >= 8 && c.e_max() < 2f64.powi(61),
                    "{q} {seq} fe {}",
                    c.fe
                );
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
        // a = 8: output step 1/32, index step 1/64: index 64 is x = 1.0,
        // gelu(1) = 0.8413 -> 27 output steps
        assert_eq!(g.entries[64].to_i64(), 27);
        // x = 12: past the a-bit top (7.8), clipped
        assert_eq!(g.entries[12 * 64].to_i64(), 2 * c.amax + 1 - c.gelu_low());
        // the wide band: x = 24 + z / 4 reads z, unclipped: z = 20 at x = 29
        assert_eq!(g.entries[29 * 64].to_i64(), 20 * 32);
        // z = -1 at x = 23.75: gelu(-1) = -0.1587 -> -5 steps
        assert_eq!(g.entries[(23.75 * 64.0) as usize].to_i64(), -5);
        // x = -20 (a normal channel's value far below) is gelu ~ 0, not a wrap
        let n = g.entries.len();
        assert_eq!(g.entries[n - 20 * 64].to_i64(), 0);
        let p = c.t_p();
        assert_eq!(p.entries[0], 255); // d = 0 -> 256 clipped
        let rs = c.t_rsqrt();
        assert!(rs.entries[1] > rs.entries[2]);
    }
    use protocol::ring::Ring;

    #[test]
    fn requant_rounds_ties_to_even() {
        // g = 2: quarter steps; ties (x.5) go to the even level, so they add no bias
        let got: Vec<i64> = (-8..=8).map(|i| Consts::round_div(i, 2)).collect();
        let want = [-2, -2, -2, -1, -1, -1, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        assert_eq!(got, want);
        assert_eq!(got.iter().sum::<i64>(), 0);
        assert_eq!(Consts::round_div(5, 0), 5);
    }

    #[test]
    fn wide_channels_are_the_large_ones() {
        // two rows of three FFN1 channels: channel 1 reaches -9, channel 2 exactly 8
        let v = [0.5, 3.0, 8.0, -2.0, -9.0, 1.0];
        assert_eq!(wide_channels(&v, 3), vec![false, true, false]);
        assert!(wide_channels(&[], 3).iter().all(|&w| !w));
    }

    #[test]
    fn linear_output_maps_fold_per_channel() {
        // the wide band's map: value / 4 + 24 on marked channels only
        let marks = [false, true];
        let o = Out::GeluBands(&marks);
        assert_eq!(o.at(0), (1.0, 0));
        assert_eq!(o.at(1), (GELU_WIDE, 24));
        // a 2x2 8-bit linear with per-input steps: each weight carries its input's step
        let lin = Linear {
            w: vec![1.0, 0.5, -1.0, 0.25],
            b: vec![0.0, 1.0],
            d_in: 2,
            d_out: 2,
        };
        let q = qlinear(&lin, 8, &[0.5, 2.0], &[], o, 4);
        let QWeights::Int(w) = &q.w else {
            panic!("8-bit weights are integers")
        };
        // W_eff = w step 2^4 / s_out: column 1 divided by 4
        assert_eq!(w, &vec![8, 1, -32, 2]);
        // bias (b / s + z) 2^4: column 1: (1 / 4 + 24) 16
        assert_eq!(q.bias, vec![0, 388]);
    }

    #[test]
    fn percentile_range_clips_tails() {
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 - 5000.0).collect();
        v.push(1e9);
        assert_eq!(percentile_range(&mut v.clone(), 0.0), (-5000.0, 1e9));
        let (lo, hi) = percentile_range(&mut v, 1e-3);
        assert_eq!((lo, hi), (-4990.0, 4990.0));
        // the range always contains 0
        assert_eq!(percentile_range(&mut [2.0, 3.0], 0.0), (0.0, 3.0));
        assert_eq!(percentile_range(&mut [], 0.1), (0.0, 0.0));
    }

    #[test]
    fn sign_scales_fit_the_outputs() {
        // inputs with one outlier channel (as LayerNorm outputs have), a bias
        let (din, dout, rows) = (16, 5, 400);
        let mut st = 0x1234_5678u64;
        let mut rnd = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let w: Vec<f32> = (0..din * dout).map(|_| rnd()).collect();
        let b: Vec<f32> = (0..dout).map(|j| j as f32 - 2.0).collect();
        let lin = Linear {
            w,
            b,
            d_in: din,
            d_out: dout,
        };
        let x: Vec<f32> = (0..rows * din)
            .map(|i| rnd() * if i % din == 0 { 20.0 } else { 1.0 })
            .collect();
        let mut y = matmul_f32(&x, &lin.w, rows, din, dout);
        for r in y.chunks_exact_mut(dout) {
            for (v, b) in r.iter_mut().zip(&lin.b) {
                *v += b;
            }
        }
        let fitted = sign_scales(&lin, &x, &y);
        let (_, mean_abs) = quantize_weights(&lin, 1);
        // squared output error of channel j with scale a
        let err = |j: usize, a: f64| -> f64 {
            (0..rows)
                .map(|r| {
                    let xr = &x[r * din..(r + 1) * din];
                    let yq: f64 = (0..din)
                        .map(|i| a * sign(lin.w[i * dout + j]) as f64 * xr[i] as f64)
                        .sum();
                    let yt: f64 = (0..din)
                        .map(|i| lin.w[i * dout + j] as f64 * xr[i] as f64)
                        .sum();
                    (yq - yt).powi(2)
                })
                .sum()
        };
        let (mut total_fit, mut total_mean) = (0.0, 0.0);
        for j in 0..dout {
            let a = fitted[j];
            assert!(a > 0.0);
            // a minimum: moving alpha either way costs output error
            assert!(err(j, a) <= err(j, a * 1.01) && err(j, a) <= err(j, a * 0.99));
            assert!(err(j, a) <= err(j, mean_abs[j]) * (1.0 + 1e-6));
            total_fit += err(j, a);
            total_mean += err(j, mean_abs[j]);
        }
        assert!(total_fit < 0.9 * total_mean, "{total_fit} vs {total_mean}");
        // no calibration rows: the weight-space scale
        assert_eq!(sign_scales(&lin, &[], &[]), mean_abs);
        // and the scale reaches the 1-bit linear's output scale
        let with = qlinear(&lin, 1, &[1.0], &fitted, Out::All(1.0, 0), 8);
        let without = qlinear(&lin, 1, &[1.0], &[], Out::All(1.0, 0), 8);
        assert_ne!(with.out_scale, without.out_scale);
    }
}
