//! One secure inference end to end: model, calibration, quantization, the three parties,
//! the references, and the report.

use crate::model::{self, BertConfig, BertWeights};
use crate::program::{BertProgram, ClientInput, Logits, Progress, Shapes, Tables};
use crate::quant::{self, Consts, QuantConfig};
use crate::report::{OpRow, RunReport};
use anyhow::{bail, Context, Result};
use protocol::account::{Accounting, OpKind, Phase};
use protocol::handshake::{Handshake, WithHandshake};
use protocol::net::{LinkConfig, NetProfile};
use protocol::seed::DealerSeeds;
use protocol::session::{self, LocalConfig, LocalRun, LocalTransport};
use protocol::{LutMode, PrivateModel, Truncation};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Where the model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A named shape (bert-base, bert-tiny, minilm-l6) with random weights from a seed.
    Random(String),
    /// A safetensors file with the shapes of a named preset.
    File(PathBuf, String),
}

/// Default of `--timeout`: long enough for the slowest step of bert-base on a small machine
/// (a party may compute for tens of seconds between two messages), short enough that a
/// vanished peer is noticed in minutes.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Which protocol a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Ours (PROTOCOL.md).
    #[default]
    Qbert,
    /// The CrypTen-style baseline (`crate::crypten`).
    Crypten,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Qbert => "qbert",
            Protocol::Crypten => "crypten",
        }
    }
}

/// Everything a run needs; mirrors the flags of `harness bert`.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub protocol: Protocol,
    pub model: ModelSource,
    pub layers: Option<usize>,
    pub seq: usize,
    pub batch: usize,
    pub quant: QuantConfig,
    pub net: NetProfile,
    pub transport: LocalTransport,
    pub verify: bool,
    pub lut_mode: LutMode,
    pub truncation: Truncation,
    /// Seeds: model weights (random models), the client's tokens, the dealer.
    pub model_seed: u64,
    pub input_seed: u64,
    pub dealer_seed: Option<u64>,
    /// Calibration sequences (drawn with a seed different from the input's).
    pub calib: usize,
    /// Session id of the links.
    pub session: u64,
    /// Keep P0's and P1's offline results in files here instead of memory.
    pub spill: Option<PathBuf>,
    /// How long a party waits for a peer (any message, the handshake) before failing.
    pub timeout: std::time::Duration,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            protocol: Protocol::Qbert,
            model: ModelSource::Random("bert-base".into()),
            layers: None,
            seq: 128,
            batch: 1,
            quant: QuantConfig::parse("w1a4").expect("valid"),
            net: NetProfile::lan(),
            transport: LocalTransport::Mem,
            verify: true,
            lut_mode: LutMode::Auto,
            truncation: Truncation::Stochastic,
            model_seed: 1,
            input_seed: 2,
            dealer_seed: None,
            calib: 2,
            session: 1,
            spill: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What P0 and the references know, and what P1 knows, prepared from a spec.
pub struct Prepared {
    pub weights: BertWeights,
    pub shapes: Shapes,
    pub consts: Consts,
    pub model: Arc<PrivateModel>,
    pub tokens: Vec<u32>,
    pub input: ClientInput,
    pub float_logits: Vec<f32>,
    pub model_name: String,
}

fn preset(name: &str) -> Result<BertConfig> {
    BertConfig::by_name(name).with_context(|| {
        format!(
            "unknown model {name:?}: use bert-base, bert-tiny, minilm-l6 or a .safetensors file"
        )
    })
}

pub(crate) fn random_tokens(rng: &mut impl Rng, cfg: &BertConfig, n: usize) -> Vec<u32> {
    // [CLS] ... [SEP]-like ids from the ordinary vocabulary range
    (0..n)
        .map(|_| rng.gen_range(1000..cfg.vocab.max(1001) as u32))
        .collect()
}

/// The float model of a spec and its name. Shapes are checked against the preset before
/// the model is loaded or anything is sized by them.
pub fn load_weights(spec: &RunSpec) -> Result<(BertWeights, String)> {
    let name = match &spec.model {
        ModelSource::Random(name) | ModelSource::File(_, name) => name,
    };
    let cfg = preset(name)?;
    let layers = spec.layers.unwrap_or(cfg.layers);
    crate::resources::check_shape(&cfg, layers, spec.seq, spec.batch)?;
    Ok(match &spec.model {
        ModelSource::Random(name) => (BertWeights::random(&cfg, spec.model_seed), name.clone()),
        ModelSource::File(path, _) => {
            let w = BertWeights::from_safetensors(path, &cfg)
                .with_context(|| format!("loading {}", path.display()))?;
            (w, path.display().to_string())
        }
    })
}

/// Load or generate the model, calibrate, quantize, and embed the client's input.
pub fn prepare(spec: &RunSpec) -> Result<Prepared> {
    let (weights, model_name) = load_weights(spec)?;
    let cfg = weights.config.clone();
    let layers = spec.layers.unwrap_or(cfg.layers);
    if weights.classifier.is_none() {
        bail!("the model has no classifier head");
    }
    let consts = Consts::new(&spec.quant, &cfg, spec.seq);

    // calibration on sequences the client never sends
    let mut crng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.input_seed ^ 0x5eed_ca11);
    let calib: Vec<Vec<u32>> = (0..spec.calib.max(1))
        .map(|_| random_tokens(&mut crng, &cfg, spec.seq))
        .collect();
    let (embs, traces) = calibration_traces(&weights, &calib, layers)?;
    let scales = quant::calibrate(&weights, &embs, &traces, &consts, &spec.quant, 0.0);
    let private = quant::quantize(&weights, &spec.quant, &consts, &scales, layers);

    // the client's sentences and their embedding, in the clear on the public table
    let mut irng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.input_seed);
    let mut tokens = vec![];
    let mut y_res = vec![];
    let mut float_logits = vec![];
    for _ in 0..spec.batch {
        let toks = random_tokens(&mut irng, &cfg, spec.seq);
        let one = client_input(&weights, &consts, &toks)?;
        y_res.extend(one.y_res);
        let x = model::embed(&weights, &toks, None)?;
        float_logits.extend(float_head(&weights, &x, spec.seq, layers));
        tokens.extend(toks);
    }
    let shapes = Shapes::of(&weights, layers, spec.seq, spec.batch);
    Ok(Prepared {
        weights,
        shapes,
        consts,
        model: Arc::new(private),
        tokens,
        input: ClientInput { y_res },
        float_logits,
        model_name,
    })
}

/// Per calibration sequence: the embedding LayerNorm's output, and the layers' traces.
pub type CalibrationTraces = (Vec<Vec<f32>>, Vec<Vec<model::LayerTrace>>);

/// Float embedding outputs and traces of the first `layers` encoder layers for each
/// calibration sequence (each at its own length), for [`quant::calibrate`].
pub fn calibration_traces(
    weights: &BertWeights,
    seqs: &[Vec<u32>],
    layers: usize,
) -> Result<CalibrationTraces> {
    let mut embs = vec![];
    let mut traces = vec![];
    for toks in seqs {
        let mut x = model::embed(weights, toks, None)?;
        embs.push(x.clone());
        let mut tr = vec![];
        for lw in weights.layers.iter().take(layers) {
            let t = model::encoder_layer_traced(lw, &x, toks.len(), &weights.config, None);
            x = t.out.clone();
            tr.push(t);
        }
        traces.push(tr);
    }
    Ok((embs, traces))
}

/// The client's input for one token sequence: its normalised embedding (public table,
/// computed in the clear) in the residual encoding.
pub fn client_input(weights: &BertWeights, consts: &Consts, toks: &[u32]) -> Result<ClientInput> {
    let rs = 2f64.powi(consts.yres_bits() as i32);
    let y = model::embed_normalized(weights, toks, None)?;
    Ok(ClientInput {
        y_res: y
            .iter()
            .map(|&v| (v as f64 * rs).round() as i64 as u64)
            .collect(),
    })
}

/// The float model's logits as the secure program defines the head: the BERT pooler, or
/// (mean pooling) the classifier on the mean of the last hidden states. The secure program
/// does not L2-normalise the mean (sentence-transformers do): the float reference here
/// does the same.
pub(crate) fn float_head(w: &BertWeights, x: &[f32], seq: usize, layers: usize) -> Vec<f32> {
    let tr = model::forward(w, x, seq, Some(layers), None);
    if w.pooler.is_some() {
        return tr.logits;
    }
    let h = w.config.hidden;
    let last = tr.hidden_per_layer.last().map_or(x, |v| v.as_slice());
    let mut mean = vec![0f32; h];
    for row in last.chunks(h) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / seq as f32;
        }
    }
    w.classifier
        .as_ref()
        .map_or(vec![], |c| c.forward(&mean, 1))
}

pub fn dealer_seeds(spec: &RunSpec) -> DealerSeeds {
    match spec.dealer_seed {
        // mixed with the session, so that a reused --seed does not reuse the masks of
        // another session
        Some(s) => DealerSeeds::from_master(s ^ spec.session.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        None => DealerSeeds::random(),
    }
}

/// Run the secure inference in this process (three party threads) and the references.
pub fn run<'a>(spec: &RunSpec, progress: Option<&'a Progress<'a>>) -> Result<RunReport> {
    if spec.protocol == Protocol::Crypten {
        return crate::crypten::run_crypten(spec, progress);
    }
    let prep = prepare(spec)?;
    let seeds = dealer_seeds(spec);
    let prog = BertProgram {
        shapes: prep.shapes.clone(),
        consts: prep.consts.clone(),
        tables: Tables::new(&prep.consts),
        input: Some(prep.input.clone()),
        progress,
    };
    let mut link = LinkConfig::new(spec.session, spec.net.clone());
    link.recv_timeout = Some(spec.timeout);
    let agreed = WithHandshake {
        inner: &prog,
        hello: hello_of(spec, &prep),
    };
    let cfg = LocalConfig {
        link,
        transport: spec.transport,
        seeds: seeds.clone(),
        lut_mode: spec.lut_mode,
        truncation: spec.truncation,
        spill: spec.spill.clone(),
    };
    let t = Instant::now();
    let res = session::run_local(&cfg, prep.model.clone(), &agreed)?;
    let wall = t.elapsed();
    let logits = res.p1.output.clone().context("P1 received no output")?;
    let mut report = report_of(spec, &prep, &res, logits);
    report.wall_s = wall.as_secs_f64();
    if spec.verify {
        verify(&mut report, &prep, &prog, &seeds, spec.truncation)?;
    }
    Ok(report)
}

/// How reports name a local transport: `mem`, `tcp-tls` or `tcp-insecure`.
pub fn transport_label(t: LocalTransport) -> &'static str {
    match t {
        LocalTransport::Mem => "mem",
        LocalTransport::Tcp => "tcp-insecure",
        LocalTransport::TcpTls => "tcp-tls",
    }
}

/// What the parties agree on before the first protocol message (see
/// `protocol::handshake`): the session, the model's preset name, the quantization and
/// table mode, the shapes, the sequence length and the batch, the fixed-point constants,
/// and P0's commitment to the quantized weights (every party of this harness derives the
/// model from the same seed or file, so P1 and the dealer check P0's commitment against
/// the hash of the model they derived; they never receive the weights). Per-party settings (network emulation,
/// backend, spill, timeouts, seeds) are not compared.
pub fn hello_of(spec: &RunSpec, prep: &Prepared) -> Handshake {
    let sh = &prep.shapes;
    let shape_name = match &spec.model {
        ModelSource::Random(n) | ModelSource::File(_, n) => n.clone(),
    };
    // the derived values last: a different sequence length also changes the constants
    // and the quantized weights, and the first difference reported should be the cause
    Handshake::new(spec.session)
        .field("model shapes", shape_name)
        .field("quantization", &spec.quant)
        .field("table mode", format!("{:?}", spec.lut_mode).to_lowercase())
        .field(
            "truncation",
            format!("{:?}", spec.truncation).to_lowercase(),
        )
        .field("layers", sh.layers)
        .field("hidden size", sh.hidden)
        .field("heads", sh.heads)
        .field("ffn size", sh.ffn)
        .field("labels", sh.labels)
        .field("pooler", sh.pooler)
        .field("sequence length", sh.seq)
        .field("batch", sh.batch)
        .field(
            "fixed-point constants",
            blake3::hash(format!("{:?}", prep.consts).as_bytes()).to_hex(),
        )
        .field(
            "model commitment",
            protocol::handshake::model_commitment(&prep.model),
        )
}

/// Compare with the plaintext quantized model (same carries: bit-exact; deterministic
/// rounding: error) and the float model.
pub fn verify(
    report: &mut RunReport,
    prep: &Prepared,
    prog: &BertProgram,
    seeds: &DealerSeeds,
    truncation: Truncation,
) -> Result<()> {
    let (same, stats) = session::run_plain(prep.model.clone(), Some(seeds.mask), truncation, prog)?;
    let same = same.context("plaintext reference gave no output")?;
    // without the dealer's carries: floor (stochastic truncation's deterministic
    // counterpart) or, with exact truncation, round to nearest, which the secure run must
    // then equal bit for bit whatever the dealer's masks
    let (det, _) = session::run_plain(prep.model.clone(), None, truncation, prog)?;
    let det = det.context("plaintext reference gave no output")?;
    let scale = 2f64.powi(prep.consts.fl as i32);
    report.verified = Some(same == report.logits_int);
    report.max_abs_err_vs_plain = Some(max_err(&report.logits_int, &det, scale));
    report.logits_plain = det.iter().map(|&v| v as f64 / scale).collect();
    report.out_of_window = Some(stats.out_of_window);
    report.lookups = Some(stats.lookups);
    Ok(())
}

fn max_err(a: &[i64], b: &[i64], scale: f64) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64 / scale).abs())
        .fold(0.0, f64::max)
}

/// Build the report from the parties' accounting.
pub fn report_of(
    spec: &RunSpec,
    prep: &Prepared,
    res: &LocalRun<Logits>,
    logits: Logits,
) -> RunReport {
    let scale = 2f64.powi(prep.consts.fl as i32);
    let logits_f: Vec<f64> = logits.iter().map(|&v| v as f64 / scale).collect();
    let err_float = logits_f
        .iter()
        .zip(&prep.float_logits)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    let accts = [&res.p0.acct, &res.p1.acct, &res.dealer.acct];
    let mut r = RunReport::from_accounting(&accts, res.rounds());
    r.model = prep.model_name.clone();
    r.quant = spec.quant.to_string();
    r.seq = spec.seq;
    r.batch = spec.batch;
    r.layers = prep.shapes.layers;
    r.net = spec.net.name.clone();
    r.transport = transport_label(spec.transport).into();
    r.lut_mode = format!("{:?}", spec.lut_mode).to_lowercase();
    r.truncation = format!("{:?}", spec.truncation).to_lowercase();
    r.online_s = res.online_time().as_secs_f64();
    r.offline_s = res.offline_time().as_secs_f64();
    r.register_s = res.p0.register_time.max(res.p1.register_time).as_secs_f64();
    r.logits = logits_f;
    r.logits_int = logits;
    r.logits_float = prep.float_logits.iter().map(|&v| v as f64).collect();
    r.max_abs_err_vs_float = err_float;
    r
}

/// Totals of the three parties' accounting (P0, P1, D in that order) grouped by `key` of
/// (layer, kind); rows the key maps to None are left out. A step's time is the slower
/// party's; bytes are counted at their sender.
fn aggregate<K: Ord + Copy>(
    accts: &[&Accounting],
    key: impl Fn(u16, OpKind) -> Option<K>,
) -> std::collections::BTreeMap<K, OpRow> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut merged = Accounting::default();
    for a in accts {
        merged.merge(a);
    }
    let mut by: BTreeMap<K, (OpRow, BTreeSet<u32>)> = BTreeMap::new();
    for ((phase, layer, kind), row) in &merged.rows {
        let Some(k) = key(*layer, *kind) else {
            continue;
        };
        let (e, flights) = by.entry(k).or_default();
        let ms = row.time.as_secs_f64() * 1e3;
        match phase {
            Phase::Online => {
                e.online_ms += ms;
                flights.extend(row.flights.iter().copied());
            }
            Phase::Offline => e.offline_ms += ms,
            Phase::Register => {}
        }
    }
    for (i, a) in accts.iter().enumerate() {
        for ((phase, layer, kind), row) in &a.rows {
            let Some(k) = key(*layer, *kind) else {
                continue;
            };
            let (e, _) = by.entry(k).or_default();
            let mb = |to: &[usize]| to.iter().map(|&t| row.bytes_to[t]).sum::<u64>() as f64 / 1e6;
            match (phase, i) {
                (Phase::Online, 0) => e.mb_p0_to_p1 += mb(&[1]),
                (Phase::Online, 1) => e.mb_p1_to_p0 += mb(&[0]),
                (Phase::Offline, 2) => e.dealer_mb += mb(&[0, 1]),
                (Phase::Offline, _) => e.offline_mb += mb(&[0, 1]),
                _ => {}
            }
        }
    }
    by.into_iter()
        .map(|(k, (mut r, flights))| {
            r.rounds = flights.len() as u32;
            (k, r)
        })
        .collect()
}

/// Per-operation rows from the three parties' accounting (P0, P1, D).
pub fn op_rows(accts: &[&Accounting]) -> Vec<OpRow> {
    aggregate(accts, |_, kind| Some(kind))
        .into_iter()
        .map(|(kind, r)| OpRow {
            op: kind.name().to_string(),
            ..r
        })
        .collect()
}

/// Per-layer online rows from the three parties' accounting (P0, P1, D).
pub fn layer_rows(accts: &[&Accounting]) -> Vec<crate::report::LayerRow> {
    let encoder = |layer: u16, _| (layer != protocol::account::NO_LAYER).then_some(layer);
    aggregate(accts, encoder)
        .into_iter()
        .map(|(layer, r)| crate::report::LayerRow {
            layer,
            online_ms: r.online_ms,
            mb_p0_to_p1: r.mb_p0_to_p1,
            mb_p1_to_p0: r.mb_p1_to_p0,
            rounds: r.rounds,
            dealer_mb: r.dealer_mb,
        })
        .collect()
}
