//! The real model (all-MiniLM-L6-v2) and real text, from `scripts/fetch-assets.sh`.
//! Without the assets these tests print why and pass, unless QBERT_REQUIRE_ASSETS is set
//! (CI sets it after fetching them).

use harness::assets::Assets;
use harness::eval::{self, Pipeline};
use harness::quant::QuantConfig;
use protocol::net::NetProfile;

fn assets() -> Option<Assets> {
    match Assets::find(None) {
        Ok(a) => Some(a),
        Err(e) if std::env::var_os("QBERT_REQUIRE_ASSETS").is_none() => {
            eprintln!("skipping: {e:#}");
            None
        }
        Err(e) => panic!("QBERT_REQUIRE_ASSETS is set but {e:#}"),
    }
}

#[test]
fn float_embedding_matches_the_published_one() {
    let Some(a) = assets() else { return };
    let w = a.minilm().unwrap();
    let toks = a
        .tokenizer()
        .unwrap()
        .encode("A man is playing a guitar.")
        .unwrap();
    assert_eq!(toks.first(), Some(&101)); // [CLS]
    assert_eq!(toks.last(), Some(&102)); // [SEP]
    let e = eval::sentence_embedding(&w, &toks).unwrap();
    assert_eq!(e.len(), 384);
    let published = [0.022, -0.005, -0.010, -0.063, -0.167, 0.005, 0.081, -0.024];
    for (i, (got, want)) in e.iter().zip(published).enumerate() {
        assert!(
            (got - want).abs() <= 0.0005 + 1e-6,
            "value {i}: {got} vs published {want}"
        );
    }
    let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
}

#[test]
fn secure_predictions_equal_the_plaintext_quantized_model() {
    let Some(a) = assets() else { return };
    let w = a.minilm().unwrap();
    let data = eval::load_data(&a, Some(300)).unwrap();
    // a float head on 300 training snippets (enough to be a real classifier)
    let feats: Vec<Vec<f64>> = data
        .train
        .iter()
        .map(|(t, _)| eval::float_features(&w, t).unwrap())
        .collect();
    let labels: Vec<bool> = data.train.iter().map(|(_, l)| *l).collect();
    let head = eval::train_head(&feats, &labels, "test").unwrap();
    assert!(head.train_accuracy > 0.7, "{}", head.train_accuracy);
    let calib: Vec<Vec<u32>> = data.train.iter().take(64).map(|(t, _)| t.clone()).collect();
    let pipe = Pipeline::new(&w, QuantConfig::parse("w1a4").unwrap(), &calib).unwrap();
    let lin = head.to_linear();
    let test: Vec<&[u32]> = data
        .test
        .iter()
        .take(4)
        .map(|(t, _)| t.as_slice())
        .collect();
    let plain = pipe.plain(&test, &lin, &|_| {}).unwrap();
    for (i, toks) in test.iter().enumerate() {
        let s = pipe
            .secure_with(toks, &lin, &NetProfile::none(), Pipeline::plain_seeds(i))
            .unwrap();
        assert!(
            s.verified,
            "snippet {i}: secure run differs from its plaintext reference"
        );
        assert_eq!(s.logits, plain[i], "snippet {i}");
        assert_eq!(s.logits[0] > 0.0, plain[i][0] > 0.0);
        assert!(s.online_bytes > 0 && s.rounds > 0);
    }
    // exact truncation: fresh random dealer seeds, and still the plaintext model's
    // (deterministic) output bit for bit
    let pipe = pipe.with_truncation(protocol::Truncation::Exact);
    let exact = pipe.plain(&test[..2], &lin, &|_| {}).unwrap();
    for (i, toks) in test[..2].iter().enumerate() {
        let s = pipe.secure(toks, &lin, &NetProfile::none()).unwrap();
        assert!(s.verified, "snippet {i}: exact secure run != its reference");
        assert_eq!(s.logits, exact[i], "snippet {i}: exact secure != plaintext");
    }
}
