//! The CrypTen-style baseline end to end on bert-tiny (random weights): the output
//! against the float model and the plaintext fixed-point reference, and the flights of
//! each layer against CrypTen 0.4.1's round count for its algorithms.

use harness::run::{ModelSource, Protocol, RunSpec};
use protocol::net::NetProfile;

fn spec(seq: usize, batch: usize) -> RunSpec {
    RunSpec {
        protocol: Protocol::Crypten,
        model: ModelSource::Random("bert-tiny".into()),
        seq,
        batch,
        net: NetProfile::none(),
        dealer_seed: Some(3),
        ..RunSpec::default()
    }
}

/// CrypTen's rounds for one post-LN encoder layer at sequence length n: one flight per
/// Beaver product, 8 per comparison (A2B: 7, B2A: 1), 7 per equality.
fn crypten_layer_rounds(n: usize) -> u32 {
    fn pow(p: u32) -> u32 {
        match p {
            1 => 0,
            2 => 1,
            p if p % 2 == 0 => 1 + pow(p / 2),
            p => 2 + pow((p - 1) / 2),
        }
    }
    let weighted_index = 1 + 1 + 8; // rand, product, comparison
    let steps = (n as f64).ln().floor() as usize;
    let mut m = n;
    for _ in 0..steps {
        m = m / 2 + m % 2;
    }
    let prod = (m.max(2) - 1) as f64;
    let pairwise = 8 + prod.log2().ceil() as u32 + weighted_index + 1;
    let max = steps as u32 * (8 + 2) + pairwise + 7 + weighted_index;
    let softmax = max + 8 + (8 + 2 * 10) + 1;
    let layernorm = 1 + (8 + 3 * 3) + 1 + 1;
    let gelu = (1..=8).map(|k| pow(2 * k + 1)).sum::<u32>() + 1;
    // Q, K, V; QK^T; softmax; PV; O; LN; FFN1; GELU; FFN2; LN
    3 + 1 + softmax + 1 + 1 + layernorm + 1 + gelu + 1 + layernorm
}

#[test]
fn the_round_formula_matches_the_crypten_anchors() {
    // real CrypTen 0.4.1, one bert-base layer: 188 rounds at seq 32, 199 at seq 128
    assert_eq!(crypten_layer_rounds(32), 188);
    assert_eq!(crypten_layer_rounds(128), 199);
}

#[test]
fn bert_tiny_matches_the_float_model_and_crypten_rounds() {
    for (seq, batch) in [(8usize, 1usize), (5, 2)] {
        let r = harness::run::run(&spec(seq, batch), None).expect("crypten run");
        assert_eq!(r.protocol, "crypten");
        assert_eq!(r.logits.len(), 2 * batch);
        assert!(
            r.max_abs_err_vs_float < 0.3,
            "seq {seq}: error vs float {} ({:?} vs {:?})",
            r.max_abs_err_vs_float,
            r.logits,
            r.logits_float
        );
        assert_eq!(r.verified, Some(true));
        let plain = r.max_abs_err_vs_plain.expect("verify on");
        assert!(
            plain < 0.05,
            "seq {seq}: error vs plaintext fixed point {plain}"
        );
        assert_eq!(r.per_layer.len(), 2);
        for l in &r.per_layer {
            assert_eq!(
                l.rounds,
                crypten_layer_rounds(seq),
                "layer {} seq {seq}",
                l.layer
            );
            // the openings are symmetric: each party sends the same
            assert!((l.mb_p0_to_p1 - l.mb_p1_to_p0).abs() < 1e-9);
            assert!(l.mb_p0_to_p1 > 0.0 && l.dealer_mb > 0.0);
        }
        let row = r.csv_row();
        assert_eq!(row.protocol, "crypten");
    }
}

/// With GELU inputs inside the range where CrypTen's erf series holds (|x| < ~2.5: FFN1
/// scaled down to a std of ~0.4), everything else is accurate: the error left is that of
/// exp, the reciprocal, inv_sqrt and tanh in 16-bit fixed point.
#[test]
fn bert_tiny_is_accurate_where_crypten_gelu_holds() {
    let cfg = harness::model::BertConfig::by_name("bert-tiny").unwrap();
    let mut w = harness::model::BertWeights::random(&cfg, 1);
    for l in &mut w.layers {
        l.ffn1.w.iter_mut().for_each(|v| *v *= 0.4);
    }
    let r =
        harness::crypten::run_crypten_on(&spec(16, 1), &w, "bert-tiny (ffn1 x 0.4)".into(), None)
            .expect("crypten run");
    eprintln!(
        "bert-tiny, ffn1 x 0.4: error vs float {}",
        r.max_abs_err_vs_float
    );
    assert!(
        r.max_abs_err_vs_float < 0.02,
        "error vs float {} ({:?} vs {:?})",
        r.max_abs_err_vs_float,
        r.logits,
        r.logits_float
    );
}
