//! The bodies of the fuzz targets in `fuzz/` (not part of the API; hidden from docs).
//! The fuzzers and the regression tests that replay their findings
//! (`tests/fuzz_regressions.rs`) call the same functions. Each must return normally on
//! any input: a panic is a bug.

use crate::head::Head;
use crate::model::safetensors_io::stored_config;
use crate::model::{BertConfig, BertWeights, Pooling};
use crate::quant::{Consts, QuantConfig};
use protocol::net::NetProfile;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn tiny() -> BertConfig {
    BertConfig {
        name: "fuzz".into(),
        layers: 1,
        hidden: 8,
        heads: 2,
        ffn: 16,
        vocab: 16,
        max_pos: 8,
        type_vocab: 2,
        num_labels: 2,
        ln_eps: 1e-12,
        pooling: Pooling::Cls,
    }
}

fn valid() -> &'static Vec<u8> {
    static V: OnceLock<Vec<u8>> = OnceLock::new();
    V.get_or_init(|| {
        let mut w = BertWeights::random(&tiny(), 3);
        w.classifier = Some(crate::model::Linear {
            w: vec![0.5; 16],
            b: vec![0.0; 2],
            d_in: 8,
            d_out: 2,
        });
        w.to_safetensors_bytes().expect("valid model serialises")
    })
}

fn load(bytes: &[u8]) {
    let _ = BertWeights::from_safetensors_bytes(bytes, &tiny());
    // The config stored in the metadata is untrusted too: load with it as well.
    if let Ok(Some(cfg)) = stored_config(bytes) {
        let _ = BertWeights::from_safetensors_bytes(bytes, &cfg);
    }
}

const DTYPES: [&str; 12] = [
    "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "XX",
];

fn edit(ops: &[u8]) -> Option<Vec<u8>> {
    let base = valid();
    let hlen = u64::from_le_bytes(base[..8].try_into().ok()?) as usize;
    let mut header: Value = serde_json::from_slice(&base[8..8 + hlen]).ok()?;
    let mut data = base[8 + hlen..].to_vec();
    let obj = header.as_object_mut()?;
    let mut names: Vec<String> = obj
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    names.sort();
    let mut truncate = None;
    for op in ops.chunks(4) {
        if op.len() < 4 || names.is_empty() {
            break;
        }
        let name = names[op[1] as usize % names.len()].clone();
        let (a, b) = (op[2], op[3]);
        match op[0] % 9 {
            0 => {
                obj.get_mut(&name)?["dtype"] = json!(DTYPES[a as usize % DTYPES.len()]);
            }
            1 => {
                // Shapes with extreme dims (overflowing products included).
                let dims = [
                    0u64,
                    1,
                    2,
                    7,
                    8,
                    16,
                    1 << 20,
                    1 << 32,
                    u32::MAX as u64,
                    u64::MAX / 2,
                    u64::MAX,
                ];
                let s: Vec<u64> = (0..(a % 4))
                    .map(|i| dims[(b as usize + i as usize * 3) % dims.len()])
                    .collect();
                obj.get_mut(&name)?["shape"] = json!(s);
            }
            2 => {
                obj.remove(&name);
                names.retain(|n| *n != name);
            }
            3 => {
                let t = obj.get(&name)?.clone();
                obj.insert(format!("{name}.extra{a}"), t);
            }
            4 => {
                let t = obj.remove(&name)?;
                let new = if a % 2 == 0 {
                    name.trim_start_matches("bert.").to_string()
                } else {
                    format!("{name}{}", b as char)
                };
                obj.insert(new.clone(), t);
                names.retain(|n| *n != name);
                names.push(new);
            }
            5 => {
                let offs = obj.get_mut(&name)?.get_mut("data_offsets")?;
                let s = offs[0].as_u64()?;
                let e = offs[1].as_u64()?;
                let d = (a as u64) << (b % 40);
                *offs = match b % 4 {
                    0 => json!([s, e.wrapping_add(d)]),
                    1 => json!([s.wrapping_add(d), e]),
                    2 => json!([e, s]),
                    _ => json!([s, u64::MAX]),
                };
            }
            6 => {
                let meta = obj.entry("__metadata__").or_insert(json!({}));
                meta[crate::model::safetensors_io::CONFIG_METADATA_KEY] = json!(match a % 4 {
                    0 => serde_json::to_string(&BertConfig {
                        layers: 1 << (b % 60),
                        ..tiny()
                    })
                    .ok()?,
                    1 => serde_json::to_string(&BertConfig {
                        vocab: usize::MAX >> (b % 64),
                        ..tiny()
                    })
                    .ok()?,
                    2 => serde_json::to_string(&BertConfig {
                        hidden: 1 << (b % 40),
                        heads: 1,
                        ..tiny()
                    })
                    .ok()?,
                    _ => "{\"name\":1}".to_string(),
                });
            }
            7 => {
                // Overwrite data bytes (NaN/inf patterns included).
                if !data.is_empty() {
                    let i = ((a as usize) << 8 | b as usize) % data.len();
                    data[i] = if b % 2 == 0 { 0xff } else { 0x7f };
                }
            }
            _ => truncate = Some(((a as usize) << 8 | b as usize) % (hlen + 8 + data.len() + 1)),
        }
    }
    let h = serde_json::to_vec(&header).ok()?;
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    if let Some(t) = truncate {
        out.truncate(t);
    }
    Some(out)
}

/// The model loader on hostile checkpoints. Mode 0: the input is the file (seeds are
/// valid small checkpoints). Mode 1 (structure-aware): a valid checkpoint of a small
/// config is built in memory, and the input is a list of edits to its header (dtype,
/// shape, name, data offsets of a tensor; a tensor removed or added; metadata; a
/// truncation). Loading must return `Ok` or `Err`, never panic, and never allocate for
/// a tensor its bytes do not back.
pub fn safetensors(data: &[u8]) {
    match data.first() {
        Some(m) if m % 2 == 1 => {
            if let Some(bytes) = edit(&data[1..]) {
                load(&bytes);
            }
        }
        Some(_) => load(&data[1..]),
        None => {}
    }
}

/// Parsers of user and file input: `--quant` (QuantConfig::parse, then the protocol
/// constants for a few sequence lengths), `--net` (NetProfile::parse, then the modelled
/// delivery times), a HuggingFace `config.json`, and a head JSON file. Byte 0 picks the
/// parser; the rest is the text.
pub fn config(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match sel % 4 {
        0 => {
            if let Ok(q) = QuantConfig::parse(&text) {
                assert_eq!(
                    QuantConfig::parse(&q.to_string()),
                    Ok(q.clone()),
                    "display round trip"
                );
                let cfg = BertConfig::bert_tiny();
                for seq in [1, 2, 3, 128, 257, cfg.max_pos] {
                    let c = Consts::new(&q, &cfg, seq);
                    let _ = (
                        c.w_qkv(),
                        c.w_res(),
                        c.w_gelu(),
                        c.w_exp(),
                        c.w_p(),
                        c.w_var(),
                    );
                }
            }
        }
        1 => {
            if let Ok(p) = NetProfile::parse(&text) {
                let _ = p.to_string();
                for bytes in [0usize, 27, 1 << 20, 256 << 20] {
                    let _ = p.one_way_time(bytes);
                }
            }
        }
        2 => {
            if let Ok(c) = BertConfig::from_hf_config_json(&text, "fuzz", Pooling::Mean) {
                assert!(c.validate().is_ok());
                let _ = c.param_count_checked();
            }
        }
        _ => {
            let dim = rest.first().map_or(0, |&b| b as usize % 8);
            if let Ok(h) = Head::from_json(rest, dim) {
                assert_eq!(h.w.len(), dim);
                let _ = h.logit(&vec![1.0; dim]);
            }
        }
    }
}
