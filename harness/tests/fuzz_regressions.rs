//! Replays the inputs under `tests/fuzz_regressions/<target>/` (inputs that made a fuzz
//! target of `fuzz/` fail before the bug was fixed) and the fuzzers' committed seeds
//! through the same target bodies (`harness::fuzzing`): each must now return normally.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    protocol::fuzzing::replay(Path::new(env!("CARGO_MANIFEST_DIR")), target, run)
}

#[test]
fn safetensors_inputs() {
    assert!(replay("safetensors", harness::fuzzing::safetensors) > 0);
}

#[test]
fn config_inputs() {
    assert!(replay("config", harness::fuzzing::config) > 0);
}

/// Found by the `safetensors` target: a config read from a file's own metadata with a
/// huge layer count made the loader reserve memory for every layer up front (a panic,
/// "capacity overflow"). Now the load fails on the first missing tensor.
#[test]
fn a_huge_layer_count_is_an_error_not_a_reservation() {
    use harness::model::{BertConfig, BertWeights, ModelError, Pooling};
    let tiny = BertConfig {
        name: "t".into(),
        layers: 1,
        hidden: 8,
        heads: 2,
        ffn: 16,
        vocab: 16,
        max_pos: 8,
        type_vocab: 2,
        num_labels: 2,
        ln_eps: 1e-12,
        pooling: Pooling::Mean,
    };
    let bytes = BertWeights::random(&tiny, 1)
        .to_safetensors_bytes()
        .unwrap();
    let huge = BertConfig {
        layers: 1 << 50,
        ..tiny.clone()
    };
    assert!(huge.validate().is_ok());
    match BertWeights::from_safetensors_bytes(&bytes, &huge) {
        Err(ModelError::MissingTensor { name }) => assert!(name.contains("layer.1."), "{name}"),
        other => panic!("expected a missing layer, got {other:?}"),
    }
    assert!(BertWeights::from_safetensors_bytes(&bytes, &tiny).is_ok());
}

/// A tensor whose declared shape and dtype need more bytes than the file holds (or than
/// its data offsets span) is refused by the header check, before anything is allocated
/// for it; so are a truncated file and an unsupported dtype.
#[test]
fn declared_sizes_beyond_the_file_are_errors() {
    use harness::model::{BertConfig, BertWeights, Pooling};
    let cfg = BertConfig {
        layers: 1,
        hidden: 8,
        heads: 2,
        ffn: 16,
        vocab: 16,
        max_pos: 8,
        pooling: Pooling::Mean,
        ..BertConfig::bert_tiny()
    };
    let bytes = BertWeights::random(&cfg, 1).to_safetensors_bytes().unwrap();
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    let rebuild = |h: &serde_json::Value| {
        let j = serde_json::to_vec(h).unwrap();
        let mut out = (j.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&j);
        out.extend_from_slice(&bytes[8 + hlen..]);
        out
    };
    let word = "bert.embeddings.word_embeddings.weight";
    for (field, value) in [
        ("shape", serde_json::json!([1u64 << 40, 8])),
        ("shape", serde_json::json!([u64::MAX, u64::MAX])),
        ("data_offsets", serde_json::json!([0, 1u64 << 40])),
        ("dtype", serde_json::json!("I64")),
    ] {
        let mut h = header.clone();
        h[word][field] = value.clone();
        let e = BertWeights::from_safetensors_bytes(&rebuild(&h), &cfg);
        assert!(e.is_err(), "{field} = {value}");
    }
    for cut in [0, 7, 8 + hlen / 2, bytes.len() - 1] {
        assert!(BertWeights::from_safetensors_bytes(&bytes[..cut], &cfg).is_err());
    }
}

/// Found by the `config` target: `--net 2e-204bps,3417s` parsed (the bandwidth is
/// positive), then the first frame's modelled delivery time overflowed a `Duration` and
/// the send panicked. Bandwidths below 1 bit/s are now refused by the parser.
#[test]
fn a_tiny_bandwidth_is_refused_by_the_parser() {
    use protocol::net::{NetError, NetProfile};
    for s in [
        "0.00200000000999534e-0204bps,3417s",
        "1e-300,1ms",
        "0.1bps,1ms",
    ] {
        match NetProfile::parse(s) {
            Err(NetError::BadProfile { reason, .. }) => assert!(reason.contains("1 bit/s")),
            other => panic!("{s}: expected BadProfile, got {other:?}"),
        }
    }
}
