//! Loading and saving [`BertWeights`] as safetensors, in HuggingFace naming.
//!
//! Accepted names (`P` is `bert.` for `BertModel`/`BertForSequenceClassification`
//! checkpoints, empty for sentence-transformers checkpoints such as
//! all-MiniLM-L6-v2; it is detected from the word-embedding tensor):
//!
//! | tensor | shape in file |
//! |---|---|
//! | `P embeddings.word_embeddings.weight` | `[vocab, hidden]` |
//! | `P embeddings.position_embeddings.weight` | `[max_pos, hidden]` |
//! | `P embeddings.token_type_embeddings.weight` | `[type_vocab, hidden]` |
//! | `P embeddings.LayerNorm.{weight,bias}` (or `{gamma,beta}`) | `[hidden]` |
//! | `P encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}` | `[hidden, hidden]`, `[hidden]` |
//! | `P encoder.layer.{i}.attention.output.dense.{weight,bias}` | `[hidden, hidden]`, `[hidden]` |
//! | `P encoder.layer.{i}.attention.output.LayerNorm.*` | `[hidden]` |
//! | `P encoder.layer.{i}.intermediate.dense.{weight,bias}` | `[ffn, hidden]`, `[ffn]` |
//! | `P encoder.layer.{i}.output.dense.{weight,bias}` | `[hidden, ffn]`, `[hidden]` |
//! | `P encoder.layer.{i}.output.LayerNorm.*` | `[hidden]` |
//! | `P pooler.dense.{weight,bias}` (required for CLS pooling) | `[hidden, hidden]`, `[hidden]` |
//! | `classifier.{weight,bias}` (optional, never prefixed) | `[num_labels, hidden]`, `[num_labels]` |
//!
//! HuggingFace linear weights are `[out, in]`; they are transposed to the module's
//! `[in, out]`. Other tensors (`embeddings.position_ids`, pre-training heads, ...)
//! are ignored. F32 is read as is, F16 and BF16 are converted exactly; any other
//! dtype, a wrong shape or a non-finite value is an error naming the tensor.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::{BertConfig, BertWeights, Embeddings, LayerNormW, LayerWeights, Linear, ModelError};

/// Key in the safetensors `__metadata__` under which [`BertWeights::to_safetensors_bytes`]
/// stores the config as JSON.
pub const CONFIG_METADATA_KEY: &str = "harness.bert_config";

const WORD_EMB: &str = "embeddings.word_embeddings.weight";

fn st_err(e: safetensors::SafeTensorError) -> ModelError {
    ModelError::SafeTensors(format!("{e:?}"))
}

/// IEEE binary16 → binary32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    if exp == 0 {
        // Zero or subnormal: mant · 2^-24, exact in f32.
        let v = mant as f32 * (1.0 / 16_777_216.0);
        return if sign != 0 { -v } else { v };
    }
    let bits = if exp == 31 {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 112) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

struct Reader<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
        let names = st.names();
        let has = |n: &str| names.iter().any(|s| s.as_str() == n);
        let prefix = if has(&format!("bert.{WORD_EMB}")) {
            "bert."
        } else if has(WORD_EMB) {
            ""
        } else if names.iter().any(|s| s.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        Ok(Self { st, prefix })
    }

    fn has(&self, full: &str) -> bool {
        self.st.names().iter().any(|s| s.as_str() == full)
    }

    /// Reads tensor `full` (already prefixed), checking its shape.
    fn tensor(&self, full: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let view = self
            .st
            .tensor(full)
            .map_err(|_| ModelError::MissingTensor {
                name: full.to_string(),
            })?;
        let actual = view.shape().to_vec();
        if actual != shape {
            return Err(ModelError::ShapeMismatch {
                name: full.to_string(),
                expected: shape.to_vec(),
                actual,
            });
        }
        let n: usize = shape.iter().product();
        let data = view.data();
        let size = match view.dtype() {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(ModelError::UnsupportedDtype {
                    name: full.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        if data.len() != n * size {
            return Err(ModelError::SafeTensors(format!(
                "tensor `{full}`: {} data bytes for {n} elements of {:?}",
                data.len(),
                view.dtype()
            )));
        }
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => data
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
        };
        if let Some(index) = out.iter().position(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite {
                name: full.to_string(),
                index,
            });
        }
        Ok(out)
    }

    /// `base.weight` (`[d_out, d_in]` in the file, transposed) and `base.bias`.
    fn linear(&self, base: &str, d_in: usize, d_out: usize) -> Result<Linear, ModelError> {
        let w_out_in = self.tensor(&format!("{base}.weight"), &[d_out, d_in])?;
        let b = self.tensor(&format!("{base}.bias"), &[d_out])?;
        Ok(Linear {
            w: transpose(&w_out_in, d_out, d_in),
            b,
            d_in,
            d_out,
        })
    }

    /// `base.{weight,bias}`, or the old `base.{gamma,beta}`.
    fn layer_norm(&self, base: &str, n: usize) -> Result<LayerNormW, ModelError> {
        let pick = |new: &str, old: &str| -> Result<Vec<f32>, ModelError> {
            let new_name = format!("{base}.{new}");
            let old_name = format!("{base}.{old}");
            if self.has(&new_name) {
                self.tensor(&new_name, &[n])
            } else if self.has(&old_name) {
                self.tensor(&old_name, &[n])
            } else {
                Err(ModelError::MissingTensor {
                    name: format!("{new_name} (or {old_name})"),
                })
            }
        };
        Ok(LayerNormW {
            gamma: pick("weight", "gamma")?,
            beta: pick("bias", "beta")?,
        })
    }
}

/// `src` is `rows × cols` row-major; returns `cols × rows`.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let mut dst = vec![0f32; src.len()];
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    dst
}

/// An owned F32 tensor for serialisation.
struct OwnedF32 {
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl OwnedF32 {
    fn new(shape: Vec<usize>, values: &[f32]) -> Self {
        let mut data = Vec::with_capacity(values.len() * 4);
        for x in values {
            data.extend_from_slice(&x.to_le_bytes());
        }
        Self { shape, data }
    }
}

impl View for &OwnedF32 {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

struct Writer(Vec<(String, OwnedF32)>);

impl Writer {
    fn put(&mut self, name: String, shape: Vec<usize>, values: &[f32]) {
        self.0.push((name, OwnedF32::new(shape, values)));
    }

    /// HuggingFace layout: `[out, in]`.
    fn linear(&mut self, base: String, l: &Linear) {
        let w = transpose(&l.w, l.d_in, l.d_out);
        self.put(format!("{base}.weight"), vec![l.d_out, l.d_in], &w);
        self.put(format!("{base}.bias"), vec![l.d_out], &l.b);
    }

    fn layer_norm(&mut self, base: String, ln: &LayerNormW) {
        self.put(format!("{base}.weight"), vec![ln.gamma.len()], &ln.gamma);
        self.put(format!("{base}.bias"), vec![ln.beta.len()], &ln.beta);
    }
}

impl BertWeights {
    /// Loads a safetensors checkpoint from a file; see [`BertWeights::from_safetensors_bytes`].
    pub fn from_safetensors(path: &Path, config: &BertConfig) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes, config)
    }

    /// Loads a checkpoint in HuggingFace naming (see the module docs), validating
    /// every shape against `config`. The pooler is required for CLS pooling and
    /// loaded if present otherwise; the classifier is loaded if present.
    pub fn from_safetensors_bytes(bytes: &[u8], config: &BertConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let r = Reader::new(bytes)?;
        let p = r.prefix;
        let c = config;
        let h = c.hidden;
        let emb = Embeddings {
            word: r.tensor(&format!("{p}{WORD_EMB}"), &[c.vocab, h])?,
            pos: r.tensor(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[c.max_pos, h],
            )?,
            token_type: r.tensor(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[c.type_vocab, h],
            )?,
            ln: r.layer_norm(&format!("{p}embeddings.LayerNorm"), h)?,
        };
        // `c.layers` may come from the file's own metadata (`stored_config`): reserve no
        // more than a real model has, a missing layer is an error below (found by fuzzing:
        // a huge `layers` overflowed the reservation).
        let mut layers = Vec::with_capacity(c.layers.min(1024));
        for i in 0..c.layers {
            let l = format!("{p}encoder.layer.{i}");
            layers.push(LayerWeights {
                q: r.linear(&format!("{l}.attention.self.query"), h, h)?,
                k: r.linear(&format!("{l}.attention.self.key"), h, h)?,
                v: r.linear(&format!("{l}.attention.self.value"), h, h)?,
                o: r.linear(&format!("{l}.attention.output.dense"), h, h)?,
                ln1: r.layer_norm(&format!("{l}.attention.output.LayerNorm"), h)?,
                ffn1: r.linear(&format!("{l}.intermediate.dense"), h, c.ffn)?,
                ffn2: r.linear(&format!("{l}.output.dense"), c.ffn, h)?,
                ln2: r.layer_norm(&format!("{l}.output.LayerNorm"), h)?,
            });
        }
        let pooler_name = format!("{p}pooler.dense");
        let pooler = if c.pooling == super::Pooling::Cls || r.has(&format!("{pooler_name}.weight"))
        {
            Some(r.linear(&pooler_name, h, h)?)
        } else {
            None
        };
        let classifier = if r.has("classifier.weight") || r.has("classifier.bias") {
            Some(r.linear("classifier", h, c.num_labels)?)
        } else {
            None
        };
        Ok(Self {
            config: c.clone(),
            emb,
            layers,
            pooler,
            classifier,
        })
    }

    /// Serialises in HuggingFace `BertForSequenceClassification` naming (`bert.`
    /// prefix, linear weights `[out, in]`, LayerNorm `weight`/`bias`, F32). The config
    /// is stored as JSON in the metadata under [`CONFIG_METADATA_KEY`] (read it back
    /// with [`stored_config`]).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.validate()?;
        let c = &self.config;
        let h = c.hidden;
        let mut t = Writer(Vec::new());
        let p = "bert.";
        t.put(format!("{p}{WORD_EMB}"), vec![c.vocab, h], &self.emb.word);
        t.put(
            format!("{p}embeddings.position_embeddings.weight"),
            vec![c.max_pos, h],
            &self.emb.pos,
        );
        t.put(
            format!("{p}embeddings.token_type_embeddings.weight"),
            vec![c.type_vocab, h],
            &self.emb.token_type,
        );
        t.layer_norm(format!("{p}embeddings.LayerNorm"), &self.emb.ln);
        for (i, lw) in self.layers.iter().enumerate() {
            let l = format!("{p}encoder.layer.{i}");
            t.linear(format!("{l}.attention.self.query"), &lw.q);
            t.linear(format!("{l}.attention.self.key"), &lw.k);
            t.linear(format!("{l}.attention.self.value"), &lw.v);
            t.linear(format!("{l}.attention.output.dense"), &lw.o);
            t.layer_norm(format!("{l}.attention.output.LayerNorm"), &lw.ln1);
            t.linear(format!("{l}.intermediate.dense"), &lw.ffn1);
            t.linear(format!("{l}.output.dense"), &lw.ffn2);
            t.layer_norm(format!("{l}.output.LayerNorm"), &lw.ln2);
        }
        if let Some(pl) = &self.pooler {
            t.linear(format!("{p}pooler.dense"), pl);
        }
        if let Some(cl) = &self.classifier {
            t.linear("classifier".to_string(), cl);
        }
        let config_json =
            serde_json::to_string(c).map_err(|e| ModelError::Serialize(e.to_string()))?;
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            (CONFIG_METADATA_KEY.to_string(), config_json),
        ]);
        safetensors::serialize(t.0.iter().map(|(n, v)| (n.as_str(), v)), &Some(meta))
            .map_err(|e| ModelError::Serialize(format!("{e:?}")))
    }
}

/// The config stored by [`BertWeights::to_safetensors_bytes`] in a file's metadata,
/// `None` if the file has none (e.g. a HuggingFace checkpoint).
pub fn stored_config(bytes: &[u8]) -> Result<Option<BertConfig>, ModelError> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let Some(json) = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_METADATA_KEY))
    else {
        return Ok(None);
    };
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| ModelError::SafeTensors(format!("bad `{CONFIG_METADATA_KEY}` metadata: {e}")))
}
