//! The f32 float reference of BERT: embeddings, post-LN encoder layers, pooling
//! and the classifier.
//!
//! Matrix products accumulate in f32 (blocked, rayon-parallel over rows);
//! LayerNorm statistics, softmax denominators, GELU and pooling use f64
//! internally.

use rayon::prelude::*;

use super::{BertConfig, BertWeights, LayerNormW, LayerWeights, ModelError, Pooling};

/// Rows per parallel task in [`matmul_f32`].
const MM_ROWS: usize = 4;
/// Depth of one k-block in [`matmul_f32`].
const MM_KB: usize = 256;
/// Width of one n-block in [`matmul_f32`].
const MM_NB: usize = 512;

/// `C = A·B` with `A` `m × k` and `B` `k × n`, all row-major; returns `m × n`.
///
/// Blocked over `k` and `n` so a block of `B` stays in cache, parallel over blocks
/// of rows, f32 accumulation.
///
/// # Panics
/// If `a.len() != m * k` or `b.len() != k * n`.
pub fn matmul_f32(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "matmul_f32: a is not m × k");
    assert_eq!(b.len(), k * n, "matmul_f32: b is not k × n");
    let mut c = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    c.par_chunks_mut(MM_ROWS * n)
        .enumerate()
        .for_each(|(blk, cblk)| {
            let r0 = blk * MM_ROWS;
            let rows = cblk.len() / n;
            for n0 in (0..n).step_by(MM_NB) {
                let n1 = (n0 + MM_NB).min(n);
                for k0 in (0..k).step_by(MM_KB) {
                    let k1 = (k0 + MM_KB).min(k);
                    for r in 0..rows {
                        let arow = &a[(r0 + r) * k..(r0 + r + 1) * k];
                        let crow = &mut cblk[r * n + n0..r * n + n1];
                        for (p, &av) in arow.iter().enumerate().take(k1).skip(k0) {
                            let brow = &b[p * n + n0..p * n + n1];
                            for (cv, &bv) in crow.iter_mut().zip(brow) {
                                *cv += av * bv;
                            }
                        }
                    }
                }
            }
        });
    c
}

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// `erf(x)` for `|x| < 3` by the all-positive series
/// `erf(x) = 2x/√π · e^{-x²} · Σ_n (2x²)^n / (1·3·…·(2n+1))` (no cancellation).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    let mut n = 0u32;
    while n < 200 {
        n += 1;
        term *= 2.0 * x2 / f64::from(2 * n + 1);
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    FRAC_2_SQRT_PI * x * (-x2).exp() * sum
}

/// `erfc(x)` for `x ≥ 3` by the continued fraction
/// `erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`,
/// evaluated backwards from a fixed depth (relative error below 1e-15 for x ≥ 3).
fn erfc_cf(x: f64) -> f64 {
    let mut t = x;
    for n in (1..=120).rev() {
        t = x + f64::from(n) * 0.5 / t;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / t
}

/// The error function, to about 1e-15 absolute.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.abs() < 3.0 {
        erf_series(x)
    } else {
        (1.0 - erfc_cf(x.abs())).copysign(x)
    }
}

/// The complementary error function `1 - erf(x)`, with relative accuracy in the
/// right tail.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x >= 3.0 {
        erfc_cf(x)
    } else if x <= -3.0 {
        2.0 - erfc_cf(-x)
    } else {
        1.0 - erf_series(x)
    }
}

/// Exact (erf-form) GELU, `0.5·x·(1 + erf(x/√2))`, computed in f64 as
/// `0.5·x·erfc(-x/√2)` so the negative tail keeps relative accuracy.
pub fn gelu(x: f32) -> f32 {
    if x.is_infinite() {
        return if x > 0.0 { x } else { -0.0 };
    }
    let x = f64::from(x);
    (0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)) as f32
}

/// Normalises each of the `rows` rows of `x` to `(x - mean) / sqrt(var + eps)`
/// (population variance, statistics in f64), without any affine part.
///
/// # Panics
/// If `rows` is zero while `x` is not empty, or `x.len()` is not a multiple of `rows`.
pub fn normalize_rows(x: &mut [f32], rows: usize, eps: f32) {
    if x.is_empty() {
        return;
    }
    assert!(
        rows > 0 && x.len().is_multiple_of(rows),
        "normalize_rows: bad row count"
    );
    let cols = x.len() / rows;
    for row in x.chunks_exact_mut(cols) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = f64::from(v) - mean;
                d * d
            })
            .sum::<f64>()
            / cols as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        for v in row.iter_mut() {
            *v = ((f64::from(*v) - mean) * inv) as f32;
        }
    }
}

/// LayerNorm over each of the `rows` rows of `x` (row width `ln.gamma.len()`):
/// `(x - mean) / sqrt(var + eps) · gamma + beta`.
///
/// # Panics
/// If `x.len() != rows * ln.gamma.len()` or `beta` has another length.
pub fn layer_norm(x: &mut [f32], rows: usize, ln: &LayerNormW, eps: f32) {
    let cols = ln.gamma.len();
    assert_eq!(
        x.len(),
        rows * cols,
        "layer_norm: x is not rows × gamma.len()"
    );
    assert_eq!(ln.beta.len(), cols, "layer_norm: beta length");
    normalize_rows(x, rows, eps);
    for row in x.chunks_exact_mut(cols.max(1)) {
        for ((v, g), b) in row.iter_mut().zip(&ln.gamma).zip(&ln.beta) {
            *v = *v * g + b;
        }
    }
}

/// `word[token] + pos[i] + token_type[type]`, `seq × hidden`, after checking the ids.
fn embed_sum(
    w: &BertWeights,
    token_ids: &[u32],
    type_ids: Option<&[u32]>,
) -> Result<Vec<f32>, ModelError> {
    let c = &w.config;
    let h = c.hidden;
    let seq = token_ids.len();
    if seq == 0 {
        return Err(ModelError::EmptySequence);
    }
    if seq > c.max_pos {
        return Err(ModelError::SequenceTooLong {
            seq,
            max_pos: c.max_pos,
        });
    }
    if let Some(t) = type_ids {
        if t.len() != seq {
            return Err(ModelError::LengthMismatch {
                what: "type_ids",
                expected: seq,
                actual: t.len(),
            });
        }
    }
    let mut out = Vec::with_capacity(seq * h);
    for (i, &id) in token_ids.iter().enumerate() {
        if id as usize >= c.vocab {
            return Err(ModelError::TokenOutOfRange {
                position: i,
                id,
                vocab: c.vocab,
            });
        }
        let ty = type_ids.map_or(0, |t| t[i]);
        if ty as usize >= c.type_vocab {
            return Err(ModelError::TypeIdOutOfRange {
                position: i,
                id: ty,
                type_vocab: c.type_vocab,
            });
        }
        let word = w.emb.word.get(id as usize * h..(id as usize + 1) * h);
        let pos = w.emb.pos.get(i * h..(i + 1) * h);
        let typ = w.emb.token_type.get(ty as usize * h..(ty as usize + 1) * h);
        let (Some(word), Some(pos), Some(typ)) = (word, pos, typ) else {
            return Err(ModelError::WeightLength {
                name: "embedding tables".into(),
                expected: c.vocab * h,
                actual: w.emb.word.len(),
            });
        };
        out.extend(word.iter().zip(pos).zip(typ).map(|((a, b), c)| a + b + c));
    }
    Ok(out)
}

/// Embedding layer: `word + pos + token_type`, then the embedding LayerNorm;
/// `seq × hidden`. `type_ids` defaults to all zeros.
pub fn embed(
    w: &BertWeights,
    token_ids: &[u32],
    type_ids: Option<&[u32]>,
) -> Result<Vec<f32>, ModelError> {
    let mut x = embed_sum(w, token_ids, type_ids)?;
    if w.emb.ln.gamma.len() != w.config.hidden || w.emb.ln.beta.len() != w.config.hidden {
        return Err(ModelError::WeightLength {
            name: "emb.ln".into(),
            expected: w.config.hidden,
            actual: w.emb.ln.gamma.len(),
        });
    }
    layer_norm(&mut x, token_ids.len(), &w.emb.ln, w.config.ln_eps);
    Ok(x)
}

/// `word + pos + token_type` followed by the normalisation `(x - mean)/sqrt(var + eps)`
/// only, WITHOUT the embedding LayerNorm's gamma/beta: what the client computes in
/// the clear (gamma/beta stay private to the server). `embed = this · gamma + beta`.
pub fn embed_normalized(
    w: &BertWeights,
    token_ids: &[u32],
    type_ids: Option<&[u32]>,
) -> Result<Vec<f32>, ModelError> {
    let mut x = embed_sum(w, token_ids, type_ids)?;
    normalize_rows(&mut x, token_ids.len(), w.config.ln_eps);
    Ok(x)
}

/// Whether position `j` is a real token under `mask` (no mask: all are).
fn is_kept(mask: Option<&[bool]>, j: usize) -> bool {
    match mask {
        None => true,
        Some(m) => m[j],
    }
}

/// In-place softmax over `row` (max subtracted, f64 denominator) restricted to the
/// positions where `keep` is true; the others get probability 0. If no position is
/// kept, all are used.
fn masked_softmax(row: &mut [f32], keep: Option<&[bool]>) {
    let kept = |j: usize| is_kept(keep, j);
    let any = (0..row.len()).any(kept);
    let use_j = |j: usize| !any || kept(j);
    let max = (0..row.len())
        .filter(|&j| use_j(j))
        .map(|j| row[j])
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for (j, v) in row.iter_mut().enumerate() {
        if use_j(j) {
            let e = f64::from(*v - max).exp();
            sum += e;
            *v = e as f32;
        } else {
            *v = 0.0;
        }
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v = (f64::from(*v) * inv) as f32;
    }
}

/// Attention probabilities `softmax(q_h k_hᵀ / √head_dim)` per head, with masked
/// keys (mask `false`) given probability 0: `heads × seq × seq`, index
/// `(h * seq + i) * seq + j` (query `i`, key `j`). `q` and `k` are `seq × hidden`.
///
/// # Panics
/// If the lengths do not match `seq` and `cfg`.
pub fn attention_probs(
    q: &[f32],
    k: &[f32],
    seq: usize,
    cfg: &BertConfig,
    mask: Option<&[bool]>,
) -> Vec<f32> {
    let (h, nh, dh) = (cfg.hidden, cfg.heads, cfg.head_dim());
    assert_eq!(q.len(), seq * h, "attention_probs: q is not seq × hidden");
    assert_eq!(k.len(), seq * h, "attention_probs: k is not seq × hidden");
    if let Some(m) = mask {
        assert_eq!(m.len(), seq, "attention_probs: mask length");
    }
    let scale = 1.0 / (dh as f32).sqrt();
    let mut probs = vec![0f32; nh * seq * seq];
    if seq == 0 {
        return probs;
    }
    probs.par_chunks_mut(seq).enumerate().for_each(|(hi, row)| {
        let (head, i) = (hi / seq, hi % seq);
        let qi = &q[i * h + head * dh..i * h + (head + 1) * dh];
        for (j, s) in row.iter_mut().enumerate() {
            let kj = &k[j * h + head * dh..j * h + (head + 1) * dh];
            *s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        masked_softmax(row, mask);
    });
    probs
}

/// Every intermediate of one encoder layer (all row-major, `seq` rows).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTrace {
    /// `x·Wq + bq`, `seq × hidden`.
    pub q: Vec<f32>,
    /// `x·Wk + bk`, `seq × hidden`.
    pub k: Vec<f32>,
    /// `x·Wv + bv`, `seq × hidden`.
    pub v: Vec<f32>,
    /// Attention probabilities, `heads × seq × seq` (see [`attention_probs`]).
    pub probs: Vec<f32>,
    /// Concatenated head outputs `Σ_j p_ij v_j`, `seq × hidden`.
    pub ctx: Vec<f32>,
    /// `ctx·Wo + bo`, `seq × hidden`.
    pub attn_out: Vec<f32>,
    /// `x + attn_out` (LN1 input), `seq × hidden`.
    pub resid1: Vec<f32>,
    /// `LN1(resid1)`, `seq × hidden`.
    pub ln1_out: Vec<f32>,
    /// `ln1_out·W1 + b1` (GELU input), `seq × ffn`.
    pub ffn1_out: Vec<f32>,
    /// `GELU(ffn1_out)`, `seq × ffn`.
    pub gelu_out: Vec<f32>,
    /// `gelu_out·W2 + b2`, `seq × hidden`.
    pub ffn2_out: Vec<f32>,
    /// `ln1_out + ffn2_out` (LN2 input), `seq × hidden`.
    pub resid2: Vec<f32>,
    /// `LN2(resid2)`: the layer output, `seq × hidden`.
    pub out: Vec<f32>,
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// One post-LN BERT encoder layer, keeping every intermediate; see
/// [`encoder_layer`].
///
/// # Panics
/// If `x.len() != seq * cfg.hidden`, the mask length is not `seq`, or `w` does not
/// match `cfg` (use [`BertWeights::validate`] on weights from outside).
pub fn encoder_layer_traced(
    w: &LayerWeights,
    x: &[f32],
    seq: usize,
    cfg: &BertConfig,
    mask: Option<&[bool]>,
) -> LayerTrace {
    let (h, dh) = (cfg.hidden, cfg.head_dim());
    assert_eq!(x.len(), seq * h, "encoder_layer: x is not seq × hidden");
    let q = w.q.forward(x, seq);
    let k = w.k.forward(x, seq);
    let v = w.v.forward(x, seq);
    let probs = attention_probs(&q, &k, seq, cfg, mask);
    let mut ctx = vec![0f32; seq * h];
    ctx.par_chunks_mut(h.max(1))
        .enumerate()
        .for_each(|(i, crow)| {
            for head in 0..cfg.heads {
                let p = &probs[(head * seq + i) * seq..(head * seq + i + 1) * seq];
                let out = &mut crow[head * dh..(head + 1) * dh];
                for (j, &pij) in p.iter().enumerate() {
                    let vj = &v[j * h + head * dh..j * h + (head + 1) * dh];
                    for (o, &vv) in out.iter_mut().zip(vj) {
                        *o += pij * vv;
                    }
                }
            }
        });
    let attn_out = w.o.forward(&ctx, seq);
    let resid1 = add(x, &attn_out);
    let mut ln1_out = resid1.clone();
    layer_norm(&mut ln1_out, seq, &w.ln1, cfg.ln_eps);
    let ffn1_out = w.ffn1.forward(&ln1_out, seq);
    let gelu_out: Vec<f32> = ffn1_out.par_iter().map(|&z| gelu(z)).collect();
    let ffn2_out = w.ffn2.forward(&gelu_out, seq);
    let resid2 = add(&ln1_out, &ffn2_out);
    let mut out = resid2.clone();
    layer_norm(&mut out, seq, &w.ln2, cfg.ln_eps);
    LayerTrace {
        q,
        k,
        v,
        probs,
        ctx,
        attn_out,
        resid1,
        ln1_out,
        ffn1_out,
        gelu_out,
        ffn2_out,
        resid2,
        out,
    }
}

/// One post-LN BERT encoder layer on `x` (`seq × hidden`): multi-head scaled
/// dot-product attention (masked keys excluded), output projection, `+ x`, LN1,
/// FFN with exact GELU, `+`, LN2. Returns `seq × hidden`.
///
/// # Panics
/// As [`encoder_layer_traced`].
pub fn encoder_layer(
    w: &LayerWeights,
    x: &[f32],
    seq: usize,
    cfg: &BertConfig,
    mask: Option<&[bool]>,
) -> Vec<f32> {
    encoder_layer_traced(w, x, seq, cfg, mask).out
}

/// The result of [`forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTrace {
    /// The output of each encoder layer that ran, `seq × hidden` each.
    pub hidden_per_layer: Vec<Vec<f32>>,
    /// The pooled vector (`hidden`).
    pub pooled: Vec<f32>,
    /// Classifier logits (`num_labels`), empty when the weights have no classifier.
    pub logits: Vec<f32>,
}

/// Runs the encoder on an embedded input (`x_embedded`, `seq × hidden`, i.e. after
/// the embedding LayerNorm, as [`embed`] returns), then pooling and the classifier.
///
/// * `layers`: run only the first `N` layers (clamped to `config.layers`); pooling
///   and the classifier then act on the last computed hidden state (the input itself
///   for `N = 0`).
/// * `mask`: `true` for real tokens; padded keys are excluded from attention and
///   padded rows from mean pooling.
/// * Pooling: [`Pooling::Cls`] → `tanh(h_0·Wp + bp)` (the raw `h_0` if the weights
///   have no pooler); [`Pooling::Mean`] → masked mean of the rows, divided by
///   `max(‖·‖₂, 1e-12)`.
///
/// # Panics
/// If `seq == 0`, `x_embedded.len() != seq * hidden`, the mask length is not `seq`,
/// or the weights are inconsistent with their config (see [`BertWeights::validate`]).
pub fn forward(
    w: &BertWeights,
    x_embedded: &[f32],
    seq: usize,
    layers: Option<usize>,
    mask: Option<&[bool]>,
) -> FloatTrace {
    let cfg = &w.config;
    let h = cfg.hidden;
    assert!(seq > 0, "forward: empty sequence");
    assert_eq!(x_embedded.len(), seq * h, "forward: x is not seq × hidden");
    if let Some(m) = mask {
        assert_eq!(m.len(), seq, "forward: mask length");
    }
    let n = layers
        .unwrap_or(cfg.layers)
        .min(cfg.layers)
        .min(w.layers.len());
    let mut hidden_per_layer: Vec<Vec<f32>> = Vec::with_capacity(n);
    for lw in &w.layers[..n] {
        let x = hidden_per_layer.last().map_or(x_embedded, |v| v.as_slice());
        let y = encoder_layer(lw, x, seq, cfg, mask);
        hidden_per_layer.push(y);
    }
    let last = hidden_per_layer.last().map_or(x_embedded, |v| v.as_slice());
    let pooled = match cfg.pooling {
        Pooling::Cls => match &w.pooler {
            Some(p) => p
                .forward(&last[..h], 1)
                .into_iter()
                .map(f32::tanh)
                .collect(),
            None => last[..h].to_vec(),
        },
        Pooling::Mean => {
            let kept = |i: usize| is_kept(mask, i);
            let any = (0..seq).any(kept);
            let mut acc = vec![0f64; h];
            let mut count = 0usize;
            for (i, row) in last.chunks_exact(h).enumerate() {
                if !any || kept(i) {
                    count += 1;
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += f64::from(v);
                    }
                }
            }
            let count = count as f64;
            acc.iter_mut().for_each(|a| *a /= count);
            let norm = acc.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
            acc.iter().map(|a| (a / norm) as f32).collect()
        }
    };
    let logits = w
        .classifier
        .as_ref()
        .map_or_else(Vec::new, |c| c.forward(&pooled, 1));
    FloatTrace {
        hidden_per_layer,
        pooled,
        logits,
    }
}
