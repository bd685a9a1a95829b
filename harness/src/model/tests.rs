//! Tests of the float model: configs, random init, safetensors I/O, numerics, and
//! the encoder against a naive f64 implementation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::safetensors_io::stored_config;
use super::*;

// ---------------------------------------------------------------- helpers

/// A tiny config for fast exact checks.
fn micro(pooling: Pooling) -> BertConfig {
    BertConfig {
        name: "micro".into(),
        layers: 2,
        hidden: 8,
        heads: 2,
        ffn: 12,
        vocab: 16,
        max_pos: 10,
        type_vocab: 2,
        num_labels: 3,
        ln_eps: 1e-12,
        pooling,
    }
}

fn rand_vec(rng: &mut ChaCha20Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One tensor for [`raw_safetensors`]: name, dtype string, shape, raw bytes.
type RawTensor = (String, &'static str, Vec<usize>, Vec<u8>);

/// Writes the safetensors format by hand (independent of the module's writer).
fn raw_safetensors(tensors: &[RawTensor]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{},{}]}}",
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// HuggingFace tensors of `w` built in the test (own transpose): names with
/// `prefix`, linear weights `[out, in]`, F32.
fn hf_tensors(w: &BertWeights, prefix: &str, classifier: bool) -> Vec<RawTensor> {
    let mut t: Vec<RawTensor> = Vec::new();
    let h = w.config.hidden;
    let mut put = |name: String, shape: Vec<usize>, v: &[f32]| {
        t.push((name, "F32", shape, f32_bytes(v)));
    };
    fn out_in(l: &Linear) -> Vec<f32> {
        let mut v = Vec::with_capacity(l.w.len());
        for o in 0..l.d_out {
            for i in 0..l.d_in {
                v.push(l.w[i * l.d_out + o]);
            }
        }
        v
    }
    let c = &w.config;
    put(
        format!("{prefix}embeddings.word_embeddings.weight"),
        vec![c.vocab, h],
        &w.emb.word,
    );
    put(
        format!("{prefix}embeddings.position_embeddings.weight"),
        vec![c.max_pos, h],
        &w.emb.pos,
    );
    put(
        format!("{prefix}embeddings.token_type_embeddings.weight"),
        vec![c.type_vocab, h],
        &w.emb.token_type,
    );
    put(
        format!("{prefix}embeddings.LayerNorm.weight"),
        vec![h],
        &w.emb.ln.gamma,
    );
    put(
        format!("{prefix}embeddings.LayerNorm.bias"),
        vec![h],
        &w.emb.ln.beta,
    );
    for (i, l) in w.layers.iter().enumerate() {
        let base = format!("{prefix}encoder.layer.{i}");
        for (name, lin) in [
            ("attention.self.query", &l.q),
            ("attention.self.key", &l.k),
            ("attention.self.value", &l.v),
            ("attention.output.dense", &l.o),
            ("intermediate.dense", &l.ffn1),
            ("output.dense", &l.ffn2),
        ] {
            put(
                format!("{base}.{name}.weight"),
                vec![lin.d_out, lin.d_in],
                &out_in(lin),
            );
            put(format!("{base}.{name}.bias"), vec![lin.d_out], &lin.b);
        }
        for (name, ln) in [
            ("attention.output.LayerNorm", &l.ln1),
            ("output.LayerNorm", &l.ln2),
        ] {
            put(format!("{base}.{name}.weight"), vec![h], &ln.gamma);
            put(format!("{base}.{name}.bias"), vec![h], &ln.beta);
        }
    }
    if let Some(p) = &w.pooler {
        put(
            format!("{prefix}pooler.dense.weight"),
            vec![h, h],
            &out_in(p),
        );
        put(format!("{prefix}pooler.dense.bias"), vec![h], &p.b);
    }
    if classifier {
        if let Some(cl) = &w.classifier {
            put(
                "classifier.weight".into(),
                vec![cl.d_out, cl.d_in],
                &out_in(cl),
            );
            put("classifier.bias".into(), vec![cl.d_out], &cl.b);
        }
    }
    t
}

fn set_tensor(
    t: &mut [RawTensor],
    name: &str,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
) {
    let e = t
        .iter_mut()
        .find(|e| e.0 == name)
        .unwrap_or_else(|| panic!("test tensor {name} not found"));
    *e = (name.to_string(), dtype, shape, bytes);
}

// ---------------------------------------------------------------- config

#[test]
fn config_presets() {
    let b = BertConfig::bert_base();
    assert_eq!(
        (
            b.layers,
            b.hidden,
            b.heads,
            b.ffn,
            b.vocab,
            b.max_pos,
            b.type_vocab,
            b.num_labels
        ),
        (12, 768, 12, 3072, 30522, 512, 2, 2)
    );
    assert_eq!(b.ln_eps, 1e-12);
    assert_eq!(b.pooling, Pooling::Cls);
    assert_eq!(b.head_dim(), 64);
    let t = BertConfig::bert_tiny();
    assert_eq!((t.layers, t.hidden, t.heads, t.ffn), (2, 128, 2, 512));
    assert_eq!((t.vocab, t.max_pos, t.type_vocab), (30522, 512, 2));
    assert_eq!(t.pooling, Pooling::Cls);
    assert_eq!(t.head_dim(), 64);
    let m = BertConfig::minilm_l6();
    assert_eq!((m.layers, m.hidden, m.heads, m.ffn), (6, 384, 12, 1536));
    assert_eq!((m.vocab, m.max_pos, m.ln_eps), (30522, 512, 1e-12));
    assert_eq!(m.pooling, Pooling::Mean);
    assert_eq!(m.head_dim(), 32);
    for name in BertConfig::PRESETS {
        let c = BertConfig::by_name(name).unwrap();
        assert_eq!(c.name, name);
        c.validate().unwrap();
        // serde round trip
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<BertConfig>(&json).unwrap(), c);
    }
    assert!(BertConfig::by_name("bert-huge").is_none());
    // BERT-base parameter count (with pooler and a 2-label head): 109,483,778.
    assert_eq!(b.param_count_checked(), Some(109_483_778));
}

#[test]
fn config_validate_rejects_bad_configs() {
    let ok = micro(Pooling::Cls);
    ok.validate().unwrap();
    let mut c = ok.clone();
    c.heads = 3; // 8 % 3 != 0
    assert!(matches!(c.validate(), Err(ModelError::InvalidConfig(m)) if m.contains("divisible")));
    let zeroers: [fn(&mut BertConfig); 8] = [
        |c| c.layers = 0,
        |c| c.hidden = 0,
        |c| c.heads = 0,
        |c| c.ffn = 0,
        |c| c.vocab = 0,
        |c| c.max_pos = 0,
        |c| c.type_vocab = 0,
        |c| c.num_labels = 0,
    ];
    for z in zeroers {
        let mut c = ok.clone();
        z(&mut c);
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("nonzero"), "{e}");
    }
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        let mut c = ok.clone();
        c.ln_eps = eps;
        assert!(c.validate().is_err(), "eps {eps}");
    }
    let mut c = ok.clone();
    c.vocab = usize::MAX / 4;
    assert!(c.validate().unwrap_err().to_string().contains("overflow"));
}

#[test]
fn config_from_hf_json() {
    let json = r#"{
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu", "hidden_size": 384, "intermediate_size": 1536,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "num_attention_heads": 12, "num_hidden_layers": 6,
        "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522
    }"#;
    let c = BertConfig::from_hf_config_json(json, "minilm-l6", Pooling::Mean).unwrap();
    assert_eq!(c, BertConfig::minilm_l6());
    let bad = json.replace("\"gelu\"", "\"gelu_new\"");
    assert!(BertConfig::from_hf_config_json(&bad, "x", Pooling::Mean).is_err());
    let missing = json.replace("\"hidden_size\": 384,", "");
    let e = BertConfig::from_hf_config_json(&missing, "x", Pooling::Mean).unwrap_err();
    assert!(e.to_string().contains("hidden_size"), "{e}");
    let labels = json.replace(
        "\"vocab_size\"",
        "\"id2label\": {\"0\":\"a\",\"1\":\"b\",\"2\":\"c\"}, \"vocab_size\"",
    );
    let c = BertConfig::from_hf_config_json(&labels, "x", Pooling::Cls).unwrap();
    assert_eq!(c.num_labels, 3);
    assert!(BertConfig::from_hf_config_json("not json", "x", Pooling::Cls).is_err());
    assert!(BertConfig::from_hf_config_json("[1,2]", "x", Pooling::Cls).is_err());
}

// ---------------------------------------------------------------- random init

#[test]
fn random_is_deterministic_per_seed_and_differs_across_seeds() {
    let cfg = BertConfig::bert_tiny();
    let a = BertWeights::random(&cfg, 1);
    let b = BertWeights::random(&cfg, 1);
    let c = BertWeights::random(&cfg, 2);
    a.validate().unwrap();
    assert!(a == b);
    assert!(a.emb.word != c.emb.word);
    assert!(a.layers[1].ffn2.w != c.layers[1].ffn2.w);
    assert!(a.classifier != c.classifier);
    // different tensors of one model are not copies of one stream
    assert!(a.layers[0].q.w != a.layers[0].k.w);
    assert!(a.layers[0].q.w != a.layers[1].q.w);
    assert!(a.pooler.is_some() && a.classifier.is_some());
    let m = BertWeights::random(&micro(Pooling::Mean), 3);
    assert!(m.pooler.is_none());
    m.validate().unwrap();
}

#[test]
fn random_does_not_depend_on_thread_count() {
    let cfg = BertConfig::bert_tiny();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| BertWeights::random(&cfg, 7));
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(|| BertWeights::random(&cfg, 7));
    assert!(one == many);
}

#[test]
fn random_distributions_are_as_documented() {
    let cfg = BertConfig::bert_tiny();
    let w = BertWeights::random(&cfg, 11);
    let l = &w.layers[0];
    let close = |got: f64, want: f64, tol: f64, what: &str| {
        assert!(
            (got - want).abs() <= tol * want.abs().max(1e-3),
            "{what}: got {got}, want {want}"
        );
    };
    let (m, s) = mean_std(&l.ffn1.w);
    assert!(m.abs() < 0.01);
    close(s, 1.0 / 128f64.sqrt(), 0.03, "ffn1 std");
    let (_, s) = mean_std(&l.ffn2.w);
    close(s, 0.5 / 512f64.sqrt(), 0.03, "ffn2 std");
    let (_, s) = mean_std(&l.o.w);
    close(s, 0.5 / 128f64.sqrt(), 0.05, "o std");
    let (_, s) = mean_std(&l.q.w);
    close(s, 1.5 / 128f64.sqrt(), 0.05, "q std");
    let (_, s) = mean_std(&l.v.w);
    close(s, 1.0 / 128f64.sqrt(), 0.05, "v std");
    let (_, s) = mean_std(&w.emb.word);
    close(s, 0.02, 0.01, "word std");
    let all_bias: Vec<f32> = w
        .layers
        .iter()
        .flat_map(|l| [&l.q.b, &l.k.b, &l.v.b, &l.o.b, &l.ffn1.b, &l.ffn2.b])
        .flatten()
        .copied()
        .collect();
    let (_, s) = mean_std(&all_bias);
    close(s, 0.02, 0.1, "bias std");
    let gammas: Vec<f32> = w
        .layers
        .iter()
        .flat_map(|l| [&l.ln1.gamma, &l.ln2.gamma])
        .flatten()
        .copied()
        .collect();
    assert!(gammas.iter().all(|&g| (0.8..=1.2).contains(&g)));
    let (m, s) = mean_std(&gammas);
    close(m, 1.0, 0.02, "gamma mean");
    close(s, 0.4 / 12f64.sqrt(), 0.15, "gamma std");
    let betas: Vec<f32> = w
        .layers
        .iter()
        .flat_map(|l| [&l.ln1.beta, &l.ln2.beta])
        .flatten()
        .copied()
        .collect();
    let (_, s) = mean_std(&betas);
    close(s, 0.05, 0.15, "beta std");
}

// ---------------------------------------------------------------- safetensors

#[test]
fn safetensors_round_trip_bert_tiny() {
    let cfg = BertConfig::bert_tiny();
    let w = BertWeights::random(&cfg, 5);
    let bytes = w.to_safetensors_bytes().unwrap();
    let back = BertWeights::from_safetensors_bytes(&bytes, &cfg).unwrap();
    assert!(back == w, "round trip changed the weights");
    assert_eq!(stored_config(&bytes).unwrap(), Some(cfg.clone()));
    // The writer's layout is HF's: the test's own HF writer gives the same tensors.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, dtype, shape, data) in hf_tensors(&w, "bert.", true) {
        let v = st
            .tensor(&name)
            .unwrap_or_else(|_| panic!("{name} not written"));
        assert_eq!(dtype, "F32");
        assert_eq!(v.shape(), shape.as_slice(), "{name}");
        assert_eq!(v.data(), data.as_slice(), "{name}");
    }
    // And through a file.
    let path = std::env::temp_dir().join(format!("model-rt-{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let from_file = BertWeights::from_safetensors(&path, &cfg);
    std::fs::remove_file(&path).ok();
    assert!(from_file.unwrap() == w);
    // A mean-pooling model without pooler round-trips too.
    let cfg = micro(Pooling::Mean);
    let w = BertWeights::random(&cfg, 6);
    let back = BertWeights::from_safetensors_bytes(&w.to_safetensors_bytes().unwrap(), &cfg);
    assert!(back.unwrap() == w);
}

/// A hand-written one-layer checkpoint with known values: checks that HF
/// `[out, in]` weights become `[in, out]` so that `y = x·W + b`.
#[test]
fn hf_linear_weights_are_transposed() {
    let cfg = BertConfig {
        name: "hand".into(),
        layers: 1,
        hidden: 2,
        heads: 1,
        ffn: 3,
        vocab: 3,
        max_pos: 4,
        type_vocab: 1,
        num_labels: 2,
        ln_eps: 1e-12,
        pooling: Pooling::Cls,
    };
    let f = |v: &[f32]| f32_bytes(v);
    let l = "bert.encoder.layer.0";
    let id2 = [1.0f32, 0.0, 0.0, 1.0];
    let z2 = [0.0f32; 2];
    let mut t: Vec<RawTensor> = vec![
        (
            "bert.embeddings.word_embeddings.weight".into(),
            "F32",
            vec![3, 2],
            f(&[1., 2., 3., 4., 5., 6.]),
        ),
        (
            "bert.embeddings.position_embeddings.weight".into(),
            "F32",
            vec![4, 2],
            f(&[0.; 8]),
        ),
        (
            "bert.embeddings.token_type_embeddings.weight".into(),
            "F32",
            vec![1, 2],
            f(&z2),
        ),
        (
            "bert.embeddings.LayerNorm.weight".into(),
            "F32",
            vec![2],
            f(&[1., 1.]),
        ),
        (
            "bert.embeddings.LayerNorm.bias".into(),
            "F32",
            vec![2],
            f(&z2),
        ),
        (
            "bert.embeddings.position_ids".into(),
            "I64",
            vec![1, 4],
            [0i64, 1, 2, 3]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
    ];
    for n in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ] {
        t.push((format!("{l}.{n}.weight"), "F32", vec![2, 2], f(&id2)));
        t.push((format!("{l}.{n}.bias"), "F32", vec![2], f(&z2)));
    }
    // intermediate.dense: HF [out = 3, in = 2]
    t.push((
        format!("{l}.intermediate.dense.weight"),
        "F32",
        vec![3, 2],
        f(&[1., 2., 3., 4., 5., 6.]),
    ));
    t.push((
        format!("{l}.intermediate.dense.bias"),
        "F32",
        vec![3],
        f(&[0.5, -0.5, 1.0]),
    ));
    // output.dense: HF [out = 2, in = 3]
    t.push((
        format!("{l}.output.dense.weight"),
        "F32",
        vec![2, 3],
        f(&[1., 0., -1., 2., 1., 0.]),
    ));
    t.push((format!("{l}.output.dense.bias"), "F32", vec![2], f(&z2)));
    for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
        // old TF-style names
        t.push((format!("{l}.{n}.gamma"), "F32", vec![2], f(&[1., 1.])));
        t.push((format!("{l}.{n}.beta"), "F32", vec![2], f(&z2)));
    }
    t.push((
        "bert.pooler.dense.weight".into(),
        "F32",
        vec![2, 2],
        f(&id2),
    ));
    t.push(("bert.pooler.dense.bias".into(), "F32", vec![2], f(&z2)));
    t.push((
        "classifier.weight".into(),
        "F32",
        vec![2, 2],
        f(&[1., 2., 3., 4.]),
    ));
    t.push(("classifier.bias".into(), "F32", vec![2], f(&[10., 20.])));
    let w = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap();
    w.validate().unwrap();
    let ffn1 = &w.layers[0].ffn1;
    assert_eq!((ffn1.d_in, ffn1.d_out), (2, 3));
    assert_eq!(ffn1.w, vec![1., 3., 5., 2., 4., 6.]);
    // y_o = Σ_i W_hf[o][i] x_i + b_o with x = (2, 1)
    assert_eq!(ffn1.forward(&[2., 1.], 1), vec![4.5, 9.5, 17.0]);
    let ffn2 = &w.layers[0].ffn2;
    assert_eq!((ffn2.d_in, ffn2.d_out), (3, 2));
    // x = (1, 2, 3): out0 = 1 - 3 = -2, out1 = 2 + 2 = 4
    assert_eq!(ffn2.forward(&[1., 2., 3.], 1), vec![-2.0, 4.0]);
    let cl = w.classifier.as_ref().unwrap();
    assert_eq!(cl.forward(&[1., 0.], 1), vec![11.0, 23.0]);
    assert_eq!(cl.forward(&[0., 1.], 1), vec![12.0, 24.0]);
    assert_eq!(w.layers[0].ln1.gamma, vec![1., 1.]);
    assert_eq!(w.emb.word, vec![1., 2., 3., 4., 5., 6.]);
    // Our writer emits the same HF layout again.
    let again = w.to_safetensors_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&again).unwrap();
    let v = st
        .tensor(&format!("{l}.intermediate.dense.weight"))
        .unwrap();
    assert_eq!(v.shape(), &[3, 2]);
    assert_eq!(v.data(), f(&[1., 2., 3., 4., 5., 6.]).as_slice());
}

#[test]
fn sentence_transformers_naming_loads() {
    let cfg = micro(Pooling::Mean);
    let mut w = BertWeights::random(&micro(Pooling::Cls), 9);
    w.config = cfg.clone();
    // prefix-less names, a pooler (unused by mean pooling), no classifier, position_ids
    let mut t = hf_tensors(&w, "", false);
    t.push((
        "embeddings.position_ids".into(),
        "I64",
        vec![1, cfg.max_pos],
        (0..cfg.max_pos as i64)
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    ));
    let back = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap();
    assert!(back.classifier.is_none());
    assert!(back.pooler == w.pooler);
    assert!(back.emb == w.emb && back.layers == w.layers);
    // without pooler it still loads for mean pooling ...
    let t2: Vec<RawTensor> = t
        .iter()
        .filter(|e| !e.0.starts_with("pooler."))
        .cloned()
        .collect();
    let back2 = BertWeights::from_safetensors_bytes(&raw_safetensors(&t2), &cfg).unwrap();
    assert!(back2.pooler.is_none());
    let x = embed(&back2, &[1, 2, 3], None).unwrap();
    let tr = forward(&back2, &x, 3, None, None);
    assert!(tr.logits.is_empty());
    let norm: f32 = tr.pooled.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    // ... but not for CLS pooling, which needs it
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&t2), &micro(Pooling::Cls))
        .unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingTensor { name } if name == "pooler.dense.weight"),
        "{e}"
    );
}

#[test]
fn f16_and_bf16_are_converted() {
    assert_eq!(safetensors_io::f16_to_f32(0x3c00), 1.0);
    assert_eq!(safetensors_io::f16_to_f32(0xc000), -2.0);
    assert_eq!(safetensors_io::f16_to_f32(0x3555), 0.333_251_95);
    assert_eq!(safetensors_io::f16_to_f32(0x7bff), 65504.0);
    assert_eq!(safetensors_io::f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(safetensors_io::f16_to_f32(0x8000), -0.0);
    assert!(safetensors_io::f16_to_f32(0x7c00).is_infinite());

    let cfg = micro(Pooling::Cls);
    let w = BertWeights::random(&cfg, 4);
    let mut t = hf_tensors(&w, "bert.", true);
    let f16_bits: [u16; 8] = [
        0x3c00, 0xc000, 0x3800, 0x0001, 0x3555, 0x0000, 0x4200, 0xbc00,
    ];
    set_tensor(
        &mut t,
        "bert.embeddings.LayerNorm.weight",
        "F16",
        vec![8],
        f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
    );
    // BF16: the top half of the f32 bits
    let bf16: Vec<u16> = w
        .emb
        .ln
        .beta
        .iter()
        .map(|x| (x.to_bits() >> 16) as u16)
        .collect();
    set_tensor(
        &mut t,
        "bert.embeddings.LayerNorm.bias",
        "BF16",
        vec![8],
        bf16.iter().flat_map(|b| b.to_le_bytes()).collect(),
    );
    let back = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap();
    assert_eq!(
        back.emb.ln.gamma,
        vec![1.0, -2.0, 0.5, 2f32.powi(-24), 0.333_251_95, 0.0, 3.0, -1.0]
    );
    let want: Vec<f32> = bf16
        .iter()
        .map(|&b| f32::from_bits((b as u32) << 16))
        .collect();
    assert_eq!(back.emb.ln.beta, want);
    assert!(max_abs_diff(&back.emb.ln.beta, &w.emb.ln.beta) < 1e-2);
}

#[test]
fn loader_errors_are_clear() {
    let cfg = micro(Pooling::Cls);
    let w = BertWeights::random(&cfg, 8);
    let good = hf_tensors(&w, "bert.", true);
    BertWeights::from_safetensors_bytes(&raw_safetensors(&good), &cfg).unwrap();

    // missing tensor
    let name = "bert.encoder.layer.1.output.dense.weight";
    let t: Vec<RawTensor> = good.iter().filter(|e| e.0 != name).cloned().collect();
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingTensor { name: n } if n == name),
        "{e}"
    );
    assert!(e.to_string().contains(name));

    // missing LayerNorm (neither weight nor gamma)
    let name = "bert.encoder.layer.0.attention.output.LayerNorm.weight";
    let t: Vec<RawTensor> = good.iter().filter(|e| e.0 != name).cloned().collect();
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap_err();
    assert!(
        e.to_string().contains(name) && e.to_string().contains("gamma"),
        "{e}"
    );

    // wrong shape: the file is [12, 8] but the config says ffn = 16
    let mut cfg16 = cfg.clone();
    cfg16.ffn = 16;
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&good), &cfg16).unwrap_err();
    match &e {
        ModelError::ShapeMismatch {
            name,
            expected,
            actual,
        } => {
            assert_eq!(name, "bert.encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, &vec![16, 8]);
            assert_eq!(actual, &vec![12, 8]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert!(e.to_string().contains("[16, 8]") && e.to_string().contains("[12, 8]"));

    // wrong shape: a transposed ([in, out]) square-breaking weight
    let mut t = good.clone();
    let name = "bert.encoder.layer.1.intermediate.dense.weight";
    set_tensor(&mut t, name, "F32", vec![8, 12], f32_bytes(&[0.0; 96]));
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap_err();
    assert!(
        matches!(&e, ModelError::ShapeMismatch { name: n, .. } if n == name),
        "{e}"
    );

    // wrong dtype
    for (dtype, size) in [("I32", 4), ("F64", 8), ("U8", 1)] {
        let mut t = good.clone();
        let name = "bert.pooler.dense.bias";
        set_tensor(&mut t, name, dtype, vec![8], vec![0u8; 8 * size]);
        let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap_err();
        assert!(
            matches!(&e, ModelError::UnsupportedDtype { name: n, dtype: d } if n == name && d == dtype),
            "{e}"
        );
    }

    // non-finite value
    let mut t = good.clone();
    let mut v = w.layers[0].ln2.beta.clone();
    v[3] = f32::NAN;
    set_tensor(
        &mut t,
        "bert.encoder.layer.0.output.LayerNorm.bias",
        "F32",
        vec![8],
        f32_bytes(&v),
    );
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&t), &cfg).unwrap_err();
    assert!(matches!(&e, ModelError::NonFinite { index: 3, .. }), "{e}");

    // classifier with the wrong label count
    let mut cfg2 = cfg.clone();
    cfg2.num_labels = 2;
    let e = BertWeights::from_safetensors_bytes(&raw_safetensors(&good), &cfg2).unwrap_err();
    assert!(
        matches!(&e, ModelError::ShapeMismatch { name, .. } if name == "classifier.weight"),
        "{e}"
    );

    // invalid config
    let mut bad = cfg.clone();
    bad.heads = 3;
    assert!(matches!(
        BertWeights::from_safetensors_bytes(&raw_safetensors(&good), &bad),
        Err(ModelError::InvalidConfig(_))
    ));

    // missing file
    let e = BertWeights::from_safetensors(std::path::Path::new("/nonexistent/x.safetensors"), &cfg)
        .unwrap_err();
    assert!(
        matches!(e, ModelError::Io { .. }) && e.to_string().contains("/nonexistent/x.safetensors")
    );
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() {
    let cfg = micro(Pooling::Cls);
    let w = BertWeights::random(&cfg, 12);
    let bytes = w.to_safetensors_bytes().unwrap();
    let load = |b: &[u8]| BertWeights::from_safetensors_bytes(b, &cfg);
    assert!(load(&bytes).is_ok());
    // every truncation (the file is ~5 kB)
    for len in 0..bytes.len() {
        let e = load(&bytes[..len]).unwrap_err();
        assert!(matches!(e, ModelError::SafeTensors(_)), "len {len}: {e}");
    }
    // appended junk
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 4]);
    assert!(matches!(load(&long), Err(ModelError::SafeTensors(_))));
    // garbage
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    for n in [0usize, 1, 7, 8, 9, 100, 5000] {
        let g: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        assert!(load(&g).is_err());
    }
    let mut fake = 10u64.to_le_bytes().to_vec();
    fake.extend_from_slice(b"{not json}");
    assert!(matches!(load(&fake), Err(ModelError::SafeTensors(_))));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(load(&huge), Err(ModelError::SafeTensors(_))));
    // offsets beyond the data, overflowing shapes
    let overflow = raw_safetensors(&[(
        "bert.embeddings.word_embeddings.weight".into(),
        "F32",
        vec![usize::MAX, 4],
        vec![0; 16],
    )]);
    assert!(load(&overflow).is_err());
    // random byte flips anywhere: Ok or Err, never a panic
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
        }
        let _ = load(&b);
        let _ = stored_config(&b);
    }
}

// ---------------------------------------------------------------- numerics

#[test]
fn erf_matches_libm_values() {
    let table = [
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (1.5, 0.9661051464753108),
        (2.0, 0.9953222650189527),
        (2.5, 0.999593047982555),
        (2.9999, 0.9999778955735178),
        (3.0, 0.9999779095030014),
        (3.0001, 0.9999779234241298),
        (3.5, 0.9999992569016276),
        (4.0, 0.9999999845827421),
        (5.0, 0.9999999999984626),
        (6.0, 1.0),
        (-0.7, -0.6778011938374184),
        (-2.2, -0.9981371537020182),
        (-4.5, -0.9999999998033839),
        (0.0, 0.0),
    ];
    for (x, want) in table {
        let got = erf(x);
        assert!((got - want).abs() < 1e-14, "erf({x}) = {got}, want {want}");
        assert_eq!(erf(-x), -got);
    }
    for (x, want) in [
        (3.0, 2.2090496998585438e-05),
        (4.0, 1.541725790028002e-08),
        (5.0, 1.5374597944280351e-12),
        (6.0, 2.1519736712498916e-17),
        (8.0, 1.1224297172982928e-29),
    ] {
        let got = erfc(x);
        assert!(
            ((got - want) / want).abs() < 1e-12,
            "erfc({x}) = {got}, want {want}"
        );
    }
    // the two branches agree at the switch point
    assert!((erfc(3.0 - 1e-12) - erfc(3.0)).abs() < 1e-15);
    assert!(erf(f64::NAN).is_nan());
    assert_eq!(erf(f64::INFINITY), 1.0);
}

#[test]
fn gelu_values() {
    let table: [(f32, f64); 12] = [
        (1.0, 0.8413447460685429),
        (-3.0, -0.004049694094890287),
        (0.0, 0.0),
        (2.0, 1.9544997361036416),
        (-1.0, -0.15865525393145707),
        (0.5, 0.34573123063700656),
        (-0.5, -0.15426876936299344),
        (3.5, 3.4991857982233756),
        (-5.0, -1.4332578593959731e-06),
        (-8.0, -4.9767684594174555e-15),
        (10.0, 10.0),
        (-10.0, -7.619853024160593e-23),
    ];
    for (x, want) in table {
        let got = f64::from(gelu(x));
        assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
        // relative accuracy (f32 rounding) even in the tail
        assert!(
            (got - want).abs() <= 1e-6 * want.abs() + 1e-30,
            "gelu({x}) rel"
        );
    }
    assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
    assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
    assert_eq!(gelu(f32::NEG_INFINITY), 0.0);
    assert!(gelu(f32::NAN).is_nan());
}

#[test]
fn layer_norm_normalises_rows() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (rows, cols) = (5, 64);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| rng.gen_range(-3.0..3.0) + (i / cols) as f32 * 10.0)
        .collect();
    let mut y = x.clone();
    layer_norm(&mut y, rows, &LayerNormW::identity(cols), 1e-12);
    for row in y.chunks(cols) {
        let (m, s) = mean_std(row);
        assert!(m.abs() < 1e-6, "mean {m}");
        assert!((s - 1.0).abs() < 1e-5, "std {s}");
    }
    let ln = LayerNormW {
        gamma: rand_vec(&mut rng, cols, 2.0),
        beta: rand_vec(&mut rng, cols, 1.0),
    };
    let mut z = x.clone();
    layer_norm(&mut z, rows, &ln, 1e-12);
    for (r, row) in z.chunks(cols).enumerate() {
        for c in 0..cols {
            let want = y[r * cols + c] * ln.gamma[c] + ln.beta[c];
            assert!((row[c] - want).abs() < 1e-5);
        }
    }
    // eps matters for a constant row
    let mut k = vec![3.0f32; cols];
    normalize_rows(&mut k, 1, 1e-5);
    assert!(k.iter().all(|&v| v == 0.0));
}

#[test]
fn matmul_matches_naive() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for (m, k, n) in [
        (7, 300, 530),
        (1, 1, 1),
        (9, 513, 3),
        (4, 4, 1030),
        (0, 3, 4),
        (3, 0, 4),
    ] {
        let a = rand_vec(&mut rng, m * k, 1.0);
        let b = rand_vec(&mut rng, k * n, 1.0);
        let c = matmul_f32(&a, &b, m, k, n);
        assert_eq!(c.len(), m * n);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum();
                assert!(
                    (f64::from(c[i * n + j]) - want).abs() < 1e-4,
                    "({m},{k},{n}) [{i},{j}]"
                );
            }
        }
    }
}

#[test]
fn embeddings_and_their_errors() {
    let cfg = micro(Pooling::Cls);
    let w = BertWeights::random(&cfg, 13);
    let ids = [1u32, 15, 0, 7];
    let types = [0u32, 0, 1, 1];
    let e = embed(&w, &ids, Some(&types)).unwrap();
    let n = embed_normalized(&w, &ids, Some(&types)).unwrap();
    assert_eq!(e.len(), 4 * 8);
    let h = cfg.hidden;
    for (i, (&id, &ty)) in ids.iter().zip(&types).enumerate() {
        let s: Vec<f64> = (0..h)
            .map(|c| {
                f64::from(w.emb.word[id as usize * h + c])
                    + f64::from(w.emb.pos[i * h + c])
                    + f64::from(w.emb.token_type[ty as usize * h + c])
            })
            .collect();
        let mean = s.iter().sum::<f64>() / h as f64;
        let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
        for c in 0..h {
            let norm = (s[c] - mean) / (var + 1e-12).sqrt();
            assert!((f64::from(n[i * h + c]) - norm).abs() < 1e-5);
            let aff = norm * f64::from(w.emb.ln.gamma[c]) + f64::from(w.emb.ln.beta[c]);
            assert!((f64::from(e[i * h + c]) - aff).abs() < 1e-5);
        }
    }
    // default type ids are zeros
    assert_eq!(
        embed(&w, &ids, None).unwrap(),
        embed(&w, &ids, Some(&[0; 4])).unwrap()
    );
    assert!(matches!(
        embed(&w, &[1, 16], None),
        Err(ModelError::TokenOutOfRange {
            position: 1,
            id: 16,
            ..
        })
    ));
    assert!(matches!(
        embed(&w, &[1, 2], Some(&[0, 2])),
        Err(ModelError::TypeIdOutOfRange { position: 1, .. })
    ));
    assert!(matches!(
        embed(&w, &[1, 2], Some(&[0])),
        Err(ModelError::LengthMismatch { .. })
    ));
    assert!(matches!(
        embed(&w, &[], None),
        Err(ModelError::EmptySequence)
    ));
    assert!(matches!(
        embed_normalized(&w, &[0; 11], None),
        Err(ModelError::SequenceTooLong {
            seq: 11,
            max_pos: 10
        })
    ));
    assert!(embed(&w, &[0; 10], None).is_ok());
}

// ---------------------------------------------------------------- encoder

/// Test-local erf by composite Simpson integration of 2/√π e^{-t²} (independent of
/// the module's series).
fn erf_simpson(x: f64) -> f64 {
    let n = 4000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

fn naive_linear(x: &[f64], rows: usize, l: &Linear) -> Vec<f64> {
    let mut y = vec![0.0; rows * l.d_out];
    for r in 0..rows {
        for o in 0..l.d_out {
            let mut s = f64::from(l.b[o]);
            for i in 0..l.d_in {
                s += x[r * l.d_in + i] * f64::from(l.w[i * l.d_out + o]);
            }
            y[r * l.d_out + o] = s;
        }
    }
    y
}

fn naive_ln(x: &mut [f64], cols: usize, ln: &LayerNormW, eps: f64) {
    for row in x.chunks_mut(cols) {
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        for (c, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) / (var + eps).sqrt() * f64::from(ln.gamma[c]) + f64::from(ln.beta[c]);
        }
    }
}

/// Straightforward f64 post-LN BERT layer; returns (output, probs[head][i][j]).
fn naive_layer(
    w: &LayerWeights,
    x: &[f32],
    seq: usize,
    cfg: &BertConfig,
    mask: Option<&[bool]>,
) -> (Vec<f64>, Vec<f64>) {
    let (h, nh, dh) = (cfg.hidden, cfg.heads, cfg.head_dim());
    let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let q = naive_linear(&x, seq, &w.q);
    let k = naive_linear(&x, seq, &w.k);
    let v = naive_linear(&x, seq, &w.v);
    let mut probs = vec![0.0; nh * seq * seq];
    let mut ctx = vec![0.0; seq * h];
    for hd in 0..nh {
        for i in 0..seq {
            let mut s = vec![f64::NEG_INFINITY; seq];
            for (j, sj) in s.iter_mut().enumerate() {
                if mask.is_none_or(|m| m[j]) {
                    *sj = (0..dh)
                        .map(|d| q[i * h + hd * dh + d] * k[j * h + hd * dh + d])
                        .sum::<f64>()
                        / (dh as f64).sqrt();
                }
            }
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|&v| (v - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..seq {
                let p = e[j] / z;
                probs[(hd * seq + i) * seq + j] = p;
                for d in 0..dh {
                    ctx[i * h + hd * dh + d] += p * v[j * h + hd * dh + d];
                }
            }
        }
    }
    let a = naive_linear(&ctx, seq, &w.o);
    let mut r1: Vec<f64> = x.iter().zip(&a).map(|(p, q)| p + q).collect();
    naive_ln(&mut r1, h, &w.ln1, f64::from(cfg.ln_eps));
    let f1 = naive_linear(&r1, seq, &w.ffn1);
    let g: Vec<f64> = f1
        .iter()
        .map(|&z| 0.5 * z * (1.0 + erf_simpson(z / 2f64.sqrt())))
        .collect();
    let f2 = naive_linear(&g, seq, &w.ffn2);
    let mut out: Vec<f64> = r1.iter().zip(&f2).map(|(p, q)| p + q).collect();
    naive_ln(&mut out, h, &w.ln2, f64::from(cfg.ln_eps));
    (out, probs)
}

#[test]
fn encoder_layer_matches_naive_f64() {
    let cfg = micro(Pooling::Cls);
    let w = BertWeights::random(&cfg, 21);
    let seq = 6;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let x = rand_vec(&mut rng, seq * cfg.hidden, 2.0);
    let mask = [true, true, false, true, true, false];
    for m in [None, Some(&mask[..])] {
        for lw in &w.layers {
            let tr = encoder_layer_traced(lw, &x, seq, &cfg, m);
            let (want, want_p) = naive_layer(lw, &x, seq, &cfg, m);
            let got: Vec<f64> = tr.out.iter().map(|&v| f64::from(v)).collect();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-4, "layer output differs by {err}");
            let perr = tr
                .probs
                .iter()
                .zip(&want_p)
                .map(|(&a, b)| (f64::from(a) - b).abs())
                .fold(0.0, f64::max);
            assert!(perr < 1e-5, "probs differ by {perr}");
            assert_eq!(encoder_layer(lw, &x, seq, &cfg, m), tr.out);
            // softmax rows sum to one; masked keys get zero
            for row in tr.probs.chunks(seq) {
                let s: f64 = row.iter().map(|&p| f64::from(p)).sum();
                assert!((s - 1.0).abs() < 1e-6);
                if let Some(m) = m {
                    for j in 0..seq {
                        if !m[j] {
                            assert_eq!(row[j], 0.0);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn attention_probs_rows_sum_to_one() {
    let cfg = BertConfig::bert_tiny();
    let seq = 9;
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let q = rand_vec(&mut rng, seq * cfg.hidden, 3.0);
    let k = rand_vec(&mut rng, seq * cfg.hidden, 3.0);
    let p = attention_probs(&q, &k, seq, &cfg, None);
    assert_eq!(p.len(), cfg.heads * seq * seq);
    for row in p.chunks(seq) {
        assert!(row.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!((row.iter().map(|&v| f64::from(v)).sum::<f64>() - 1.0).abs() < 1e-6);
    }
    // huge scores: max subtraction keeps it finite
    let q2: Vec<f32> = q.iter().map(|v| v * 1e3).collect();
    let p2 = attention_probs(&q2, &k, seq, &cfg, None);
    assert!(p2.iter().all(|v| v.is_finite()));
    // all keys masked: falls back to unmasked
    let p3 = attention_probs(&q, &k, seq, &cfg, Some(&[false; 9]));
    assert_eq!(p3, p);
}

#[test]
fn padding_does_not_affect_real_tokens() {
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let cfg = micro(pooling);
        let w = BertWeights::random(&cfg, 31);
        let real = [2u32, 5, 9, 11, 3];
        let padded = [2u32, 5, 9, 11, 3, 0, 14, 7];
        let mask = [true, true, true, true, true, false, false, false];
        let xr = embed(&w, &real, None).unwrap();
        let xp = embed(&w, &padded, None).unwrap();
        let a = forward(&w, &xr, 5, None, None);
        let b = forward(&w, &xp, 8, None, Some(&mask));
        let h = cfg.hidden;
        for (la, lb) in a.hidden_per_layer.iter().zip(&b.hidden_per_layer) {
            assert!(max_abs_diff(la, &lb[..5 * h]) < 1e-5);
        }
        assert!(max_abs_diff(&a.pooled, &b.pooled) < 1e-5);
        assert!(max_abs_diff(&a.logits, &b.logits) < 1e-5);
        // without the mask the padding does change things (the test can fail)
        let c = forward(&w, &xp, 8, None, None);
        assert!(max_abs_diff(&a.pooled, &c.pooled) > 1e-3, "{pooling:?}");
    }
}

#[test]
fn forward_layers_pooling_and_logits() {
    let cfg = micro(Pooling::Cls);
    let w = BertWeights::random(&cfg, 41);
    let x = embed(&w, &[1, 2, 3, 4], None).unwrap();
    let full = forward(&w, &x, 4, None, None);
    assert_eq!(full.hidden_per_layer.len(), 2);
    assert_eq!(full.logits.len(), 3);
    let one = forward(&w, &x, 4, Some(1), None);
    assert_eq!(one.hidden_per_layer, full.hidden_per_layer[..1]);
    assert_ne!(one.pooled, full.pooled);
    assert_eq!(forward(&w, &x, 4, Some(9), None), full);
    let zero = forward(&w, &x, 4, Some(0), None);
    assert!(zero.hidden_per_layer.is_empty());
    // CLS pooling = tanh(h0 W + b), logits = pooled Wc + bc
    let last = full.hidden_per_layer.last().unwrap();
    let p = naive_linear(
        &last[..8].iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        1,
        w.pooler.as_ref().unwrap(),
    );
    for (a, b) in full.pooled.iter().zip(&p) {
        assert!((f64::from(*a) - b.tanh()).abs() < 1e-6);
    }
    let l = naive_linear(
        &full
            .pooled
            .iter()
            .map(|&v| f64::from(v))
            .collect::<Vec<_>>(),
        1,
        w.classifier.as_ref().unwrap(),
    );
    for (a, b) in full.logits.iter().zip(&l) {
        assert!((f64::from(*a) - b).abs() < 1e-5);
    }
    // Mean pooling: masked mean then unit norm
    let mut wm = w.clone();
    wm.config.pooling = Pooling::Mean;
    let mask = [true, false, true, true];
    let m = forward(&wm, &x, 4, None, Some(&mask));
    let last = m.hidden_per_layer.last().unwrap();
    let mean: Vec<f64> = (0..8)
        .map(|c| {
            [0, 2, 3]
                .iter()
                .map(|&r| f64::from(last[r * 8 + c]))
                .sum::<f64>()
                / 3.0
        })
        .collect();
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (a, b) in m.pooled.iter().zip(&mean) {
        assert!((f64::from(*a) - b / norm).abs() < 1e-6);
    }
}

/// With the random init, 12 BERT-base-shaped layers keep every intermediate finite
/// and O(1), and attention is not degenerate.
#[test]
fn bert_base_random_activations_stay_order_one() {
    // BERT-base layers; a small vocabulary keeps the init fast (the embedding table
    // does not enter the encoder).
    let cfg = BertConfig {
        vocab: 1000,
        ..BertConfig::bert_base()
    };
    let w = BertWeights::random(&cfg, 2024);
    let seq = 8;
    let ids: Vec<u32> = (0..seq as u32).map(|i| 101 + 37 * i).collect();
    let mut x = embed(&w, &ids, None).unwrap();
    for (li, lw) in w.layers.iter().enumerate() {
        let t = encoder_layer_traced(lw, &x, seq, &cfg, None);
        for (what, v) in [
            ("q", &t.q),
            ("ctx", &t.ctx),
            ("attn_out", &t.attn_out),
            ("resid1", &t.resid1),
            ("ffn1_out", &t.ffn1_out),
            ("ffn2_out", &t.ffn2_out),
            ("resid2", &t.resid2),
            ("out", &t.out),
        ] {
            assert!(
                v.iter().all(|x| x.is_finite()),
                "layer {li} {what} not finite"
            );
            let (_, s) = mean_std(v);
            assert!((0.2..3.0).contains(&s), "layer {li} {what} std {s}");
            let mx = v.iter().fold(0f32, |a, b| a.max(b.abs()));
            assert!(mx < 20.0, "layer {li} {what} max {mx}");
        }
        // attention neither uniform nor one-hot
        let mean_max: f64 = t
            .probs
            .chunks(seq)
            .map(|r| f64::from(r.iter().cloned().fold(0.0, f32::max)))
            .sum::<f64>()
            / (t.probs.len() / seq) as f64;
        assert!(
            mean_max > 1.5 / seq as f64 && mean_max < 0.9,
            "layer {li} mean max prob {mean_max}"
        );
        // tokens stay distinct: mean pairwise cosine of the output rows
        let rows: Vec<&[f32]> = t.out.chunks(768).collect();
        let norm = |r: &[f32]| r.iter().map(|a| a * a).sum::<f32>().sqrt();
        let mut cos_sum = 0.0;
        let mut pairs = 0;
        for i in 0..seq {
            for j in i + 1..seq {
                let d: f32 = rows[i].iter().zip(rows[j]).map(|(a, b)| a * b).sum();
                cos_sum += d / (norm(rows[i]) * norm(rows[j]));
                pairs += 1;
            }
        }
        let cos = cos_sum / pairs as f32;
        assert!(cos < 0.97, "layer {li}: tokens collapse, mean cosine {cos}");
        x = t.out;
    }
    let tr = forward(&w, &embed(&w, &ids, None).unwrap(), seq, None, None);
    assert_eq!(tr.hidden_per_layer.last().unwrap(), &x);
    assert!(tr.pooled.iter().all(|v| v.is_finite() && v.abs() < 1.0));
    assert!(tr.logits.iter().all(|v| v.is_finite() && v.abs() < 10.0));
}
