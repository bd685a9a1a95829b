//! The sentiment head: L2-regularised logistic regression on pooled sentence embeddings,
//! trained by Newton's method. P0 (the server) owns it like the rest of the model.
//!
//! Features are standardised inside training (so one penalty suits every feature scale)
//! and the standardisation is folded back, so the saved head is a plain linear map
//! `logit = w·x + b` on the raw features, which is what the secure program evaluates.

use crate::model::Linear;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Penalties tried (sum-of-losses units, on standardised features); the best on a
/// held-out fifth of the training split is kept, ties going to the stronger penalty.
pub const LAMBDAS: [f64; 5] = [0.1, 1.0, 10.0, 100.0, 1000.0];

/// Features whose standard deviation is below this fraction of the median one are left out
/// of the head (weight 0).
pub const DEAD_SPREAD: f64 = 1e-3;

/// A trained head: `logit = w·x + b`, positive when the logit is > 0.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Head {
    /// What the features are (model, pooling, quantization config), for the file's reader.
    pub features: String,
    pub w: Vec<f64>,
    pub b: f64,
    pub lambda: f64,
    /// Accuracy on its own training split.
    pub train_accuracy: f64,
    pub train_size: usize,
}

impl Head {
    pub fn logit(&self, x: &[f64]) -> f64 {
        self.w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + self.b
    }

    pub fn positive(&self, x: &[f64]) -> bool {
        self.logit(x) > 0.0
    }

    /// The head as a model layer (d_in = features, d_out = 1).
    pub fn to_linear(&self) -> Linear {
        Linear {
            w: self.w.iter().map(|&v| v as f32).collect(),
            b: vec![self.b as f32],
            d_in: self.w.len(),
            d_out: 1,
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn load(path: &Path, dim: usize) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&bytes, dim).with_context(|| format!("{}", path.display()))
    }

    /// The head saved at `path` if it was trained on `features` (see [`Head::features`]);
    /// `None` if it was trained on other features (another model, config or quantizer
    /// version), so that the caller trains a new one rather than reading embeddings with a
    /// head that was never fitted to them.
    pub fn load_for(path: &Path, dim: usize, features: &str) -> Result<Option<Self>> {
        let h = Self::load(path, dim)?;
        Ok((h.features == features).then_some(h))
    }

    /// Parses a head file's bytes (untrusted): JSON of a [`Head`] with `dim` finite
    /// weights and a finite bias, else an error (never a panic).
    pub fn from_json(bytes: &[u8], dim: usize) -> Result<Self> {
        let h: Head = serde_json::from_slice(bytes).context("not a head file")?;
        if h.w.len() != dim {
            bail!(
                "head has {} inputs, the model's embedding has {dim}",
                h.w.len()
            );
        }
        if !h.b.is_finite() || h.w.iter().any(|v| !v.is_finite()) {
            bail!("head has non-finite weights");
        }
        Ok(h)
    }
}

/// Fraction of rows of `x` (n × d) whose prediction matches `y`.
pub fn accuracy(head: &Head, x: &[f64], y: &[bool]) -> f64 {
    let d = head.w.len();
    let ok = x
        .chunks_exact(d)
        .zip(y)
        .filter(|(r, &l)| head.positive(r) == l)
        .count();
    ok as f64 / y.len().max(1) as f64
}

/// Trains a head on rows of `x` (n × d) with labels `y`: the penalty is chosen on a
/// seeded held-out fifth of the data among [`LAMBDAS`], then the head is refitted on all
/// of it.
pub fn train(x: &[f64], d: usize, y: &[bool], seed: u64, features: &str) -> Result<Head> {
    let n = y.len();
    if d == 0 || x.len() != n * d {
        bail!("train: {} values for {n} rows of {d}", x.len());
    }
    if n < 10 || y.iter().all(|&l| l) || y.iter().all(|&l| !l) {
        bail!("train: need at least 10 rows of both labels");
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let cut = n - n / 5;
    let pick = |ids: &[usize]| -> (Vec<f64>, Vec<bool>) {
        (
            ids.iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
                .collect(),
            ids.iter().map(|&i| y[i]).collect(),
        )
    };
    let (xf, yf) = pick(&idx[..cut]);
    let (xv, yv) = pick(&idx[cut..]);
    let mut best = (f64::NEG_INFINITY, LAMBDAS[0]);
    for &lambda in &LAMBDAS {
        let h = fit(&xf, d, &yf, lambda)?;
        let acc = accuracy(&h, &xv, &yv);
        if acc >= best.0 {
            best = (acc, lambda);
        }
    }
    let mut h = fit(x, d, y, best.1)?;
    h.train_accuracy = accuracy(&h, x, y);
    h.features = features.to_string();
    Ok(h)
}

/// Newton's method on the penalised log-loss `sum log(1 + e^{-s z}) + lambda/2 |w|^2`
/// over standardised features (bias unpenalised).
fn fit(x: &[f64], d: usize, y: &[bool], lambda: f64) -> Result<Head> {
    let n = y.len();
    let mut mu = vec![0f64; d];
    let mut sd = vec![0f64; d];
    for r in x.chunks_exact(d) {
        for j in 0..d {
            mu[j] += r[j] / n as f64;
        }
    }
    for r in x.chunks_exact(d) {
        for j in 0..d {
            sd[j] += (r[j] - mu[j]).powi(2) / n as f64;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt());
    // Features that barely vary carry no information, and standardising them would turn
    // rounding noise into signal: all-MiniLM-L6-v2's pooled embedding has three
    // dimensions with a spread of 1e-32..1e-9 (where the median is 0.2), which gave
    // weights of 1e7 that made any quantized model's features read as one class. They
    // get weight 0.
    let mut sorted = sd.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let floor = DEAD_SPREAD * sorted[d / 2];
    let live: Vec<bool> = sd.iter().map(|&s| s > floor && s > 0.0).collect();
    // z = [standardised x, 1]
    let p = d + 1;
    let z: Vec<f64> = x
        .chunks_exact(d)
        .flat_map(|r| {
            (0..d)
                .map(|j| if live[j] { (r[j] - mu[j]) / sd[j] } else { 0.0 })
                .chain(std::iter::once(1.0))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut theta = vec![0f64; p];
    for _ in 0..50 {
        // gradient and Hessian, rows in parallel
        let (mut g, mut h) = z
            .par_chunks(p * 256)
            .zip(y.par_chunks(256))
            .map(|(zc, yc)| {
                let mut g = vec![0f64; p];
                let mut h = vec![0f64; p * p];
                for (zr, &l) in zc.chunks_exact(p).zip(yc) {
                    let s: f64 = zr.iter().zip(&theta).map(|(a, b)| a * b).sum();
                    let pr = 1.0 / (1.0 + (-s).exp());
                    let r = pr - if l { 1.0 } else { 0.0 };
                    let wgt = pr * (1.0 - pr);
                    for a in 0..p {
                        g[a] += r * zr[a];
                        let wa = wgt * zr[a];
                        let row = &mut h[a * p..a * p + a + 1];
                        for (hb, zb) in row.iter_mut().zip(&zr[..=a]) {
                            *hb += wa * zb;
                        }
                    }
                }
                (g, h)
            })
            .reduce(
                || (vec![0f64; p], vec![0f64; p * p]),
                |(mut g1, mut h1), (g2, h2)| {
                    g1.iter_mut().zip(&g2).for_each(|(a, b)| *a += b);
                    h1.iter_mut().zip(&h2).for_each(|(a, b)| *a += b);
                    (g1, h1)
                },
            );
        for a in 0..p {
            for b in 0..a {
                h[b * p + a] = h[a * p + b];
            }
            let pen = if a < d { lambda } else { 1e-9 };
            h[a * p + a] += pen;
            if a < d {
                g[a] += lambda * theta[a];
            }
        }
        let step = cholesky_solve(&mut h, p, g)?;
        let mut big = 0f64;
        for (t, s) in theta.iter_mut().zip(&step) {
            *t -= s;
            big = big.max(s.abs());
        }
        if big < 1e-9 {
            break;
        }
    }
    // fold the standardisation back: w_j = t_j / sd_j, b = t_d - sum t_j mu_j / sd_j
    let w: Vec<f64> = (0..d)
        .map(|j| if live[j] { theta[j] / sd[j] } else { 0.0 })
        .collect();
    let b = theta[d] - (0..d).map(|j| w[j] * mu[j]).sum::<f64>();
    Ok(Head {
        features: String::new(),
        w,
        b,
        lambda,
        train_accuracy: 0.0,
        train_size: n,
    })
}

/// Solves `A s = g` for symmetric positive definite `A` (p × p, overwritten by its
/// Cholesky factor).
fn cholesky_solve(a: &mut [f64], p: usize, mut g: Vec<f64>) -> Result<Vec<f64>> {
    for j in 0..p {
        let mut s = a[j * p + j];
        for k in 0..j {
            s -= a[j * p + k] * a[j * p + k];
        }
        if s <= 0.0 || !s.is_finite() {
            bail!("logistic regression: Hessian not positive definite");
        }
        let djj = s.sqrt();
        a[j * p + j] = djj;
        for i in j + 1..p {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = s / djj;
        }
    }
    for i in 0..p {
        let mut s = g[i];
        for k in 0..i {
            s -= a[i * p + k] * g[k];
        }
        g[i] = s / a[i * p + i];
    }
    for i in (0..p).rev() {
        let mut s = g[i];
        for k in i + 1..p {
            s -= a[k * p + i] * g[k];
        }
        g[i] = s / a[i * p + i];
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn learns_a_separable_rule_and_round_trips() {
        // label = 2 x0 - x1 + 0.5 > 0 on features of very different scales
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (600, 3);
        let x: Vec<f64> = (0..n * d)
            .map(|i| rng.gen_range(-1.0..1.0) * [1.0, 100.0, 0.01][i % d])
            .collect();
        let y: Vec<bool> = x
            .chunks(d)
            .map(|r| 2.0 * r[0] - r[1] / 100.0 + 0.5 > 0.0)
            .collect();
        let h = train(&x, d, &y, 1, "test").unwrap();
        assert!(h.train_accuracy > 0.97, "{}", h.train_accuracy);
        assert!(h.w[0] > 0.0 && h.w[1] < 0.0);
        let dir = std::env::temp_dir().join(format!("qbert-head-{}", std::process::id()));
        let path = dir.join("h.json");
        h.save(&path).unwrap();
        let back = Head::load(&path, d).unwrap();
        assert_eq!((back.lambda, back.train_size), (h.lambda, h.train_size));
        assert!((back.b - h.b).abs() < 1e-12);
        assert!(back.w.iter().zip(&h.w).all(|(a, b)| (a - b).abs() < 1e-12));
        assert!(Head::load(&path, d + 1).is_err());
        assert!(Head::load_for(&path, d, "test").unwrap().is_some());
        assert!(Head::load_for(&path, d, "test, quantizer q0")
            .unwrap()
            .is_none());
        std::fs::write(&path, b"{\"w\": [1.0").unwrap();
        assert!(Head::load(&path, d).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        // the linear layer computes the same logit
        let lin = h.to_linear();
        let xf: Vec<f32> = x[..d].iter().map(|&v| v as f32).collect();
        assert!((lin.forward(&xf, 1)[0] as f64 - h.logit(&x[..d])).abs() < 1e-3);
    }

    #[test]
    fn refuses_degenerate_data() {
        assert!(train(&[1.0; 20], 1, &[true; 20], 1, "").is_err());
        assert!(train(&[1.0; 5], 1, &[true, false, true, false, true], 1, "").is_err());
        assert!(train(&[1.0; 7], 2, &[true; 4], 1, "").is_err());
    }
}
