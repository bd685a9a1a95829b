//! Parsers of user and file input: `--quant` (QuantConfig::parse, then the protocol
//! constants for a few sequence lengths), `--net` (NetProfile::parse, then the modelled
//! delivery times), a HuggingFace `config.json`, and a head JSON file. Byte 0 picks the
//! parser; the rest is the text.
#![no_main]

use harness::head::Head;
use harness::model::{BertConfig, Pooling};
use harness::quant::{Consts, QuantConfig};
use libfuzzer_sys::fuzz_target;
use protocol::net::NetProfile;

fuzz_target!(|data: &[u8]| {
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
});
