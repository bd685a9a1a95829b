//! Model hyper-parameters and the presets the project uses.

use super::ModelError;

/// How the encoder output is reduced to one vector per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    /// BERT pooler: `tanh(h_[CLS]·W + b)` on the first token's final hidden state.
    Cls,
    /// Mean over the (attention-masked) tokens, then L2 normalisation
    /// (sentence-transformers style, as in all-MiniLM-L6-v2).
    Mean,
}

/// The shape of a BERT encoder plus its head.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BertConfig {
    /// Preset name (free text for configs read from elsewhere).
    pub name: String,
    /// Number of encoder layers.
    pub layers: usize,
    /// Hidden size (model width).
    pub hidden: usize,
    /// Number of attention heads; `hidden` must be divisible by it.
    pub heads: usize,
    /// Intermediate (feed-forward) width.
    pub ffn: usize,
    /// Word-piece vocabulary size.
    pub vocab: usize,
    /// Maximum sequence length (rows of the position table).
    pub max_pos: usize,
    /// Rows of the token-type (segment) table.
    pub type_vocab: usize,
    /// Output width of the classifier head.
    pub num_labels: usize,
    /// LayerNorm epsilon, used by every LayerNorm in the model.
    pub ln_eps: f32,
    /// How the sequence is pooled before the classifier.
    pub pooling: Pooling,
}

impl BertConfig {
    /// BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, CLS pooler, 2 labels.
    pub fn bert_base() -> Self {
        Self {
            name: "bert-base".into(),
            layers: 12,
            hidden: 768,
            heads: 12,
            ffn: 3072,
            vocab: 30522,
            max_pos: 512,
            type_vocab: 2,
            num_labels: 2,
            ln_eps: 1e-12,
            pooling: Pooling::Cls,
        }
    }

    /// BERT-tiny (google/bert_uncased_L-2_H-128_A-2 shapes): 2 layers, hidden 128,
    /// 2 heads, FFN 512, CLS pooler, 2 labels.
    pub fn bert_tiny() -> Self {
        Self {
            name: "bert-tiny".into(),
            layers: 2,
            hidden: 128,
            heads: 2,
            ffn: 512,
            ..Self::bert_base()
        }
    }

    /// all-MiniLM-L6-v2 shapes: 6 layers, hidden 384, 12 heads, FFN 1536, mean
    /// pooling with L2 normalisation, 2 labels for an optional classifier head.
    pub fn minilm_l6() -> Self {
        Self {
            name: "minilm-l6".into(),
            layers: 6,
            hidden: 384,
            heads: 12,
            ffn: 1536,
            pooling: Pooling::Mean,
            ..Self::bert_base()
        }
    }

    /// The preset names accepted by [`BertConfig::by_name`].
    pub const PRESETS: [&'static str; 3] = ["bert-base", "bert-tiny", "minilm-l6"];

    /// A preset by name: `"bert-base"`, `"bert-tiny"` or `"minilm-l6"`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "bert-base" => Some(Self::bert_base()),
            "bert-tiny" => Some(Self::bert_tiny()),
            "minilm-l6" => Some(Self::minilm_l6()),
            _ => None,
        }
    }

    /// Per-head width, `hidden / heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Checks that the sizes are nonzero and consistent, `ln_eps` is positive and
    /// finite, and that every tensor size (in bytes) and the total parameter count fit
    /// in `usize`.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        for (field, v) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("ffn", self.ffn),
            ("vocab", self.vocab),
            ("max_pos", self.max_pos),
            ("type_vocab", self.type_vocab),
            ("num_labels", self.num_labels),
        ] {
            if v == 0 {
                return bad(format!("`{field}` must be nonzero"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return bad(format!(
                "hidden {} is not divisible by heads {}",
                self.hidden, self.heads
            ));
        }
        if !(self.ln_eps.is_finite() && self.ln_eps > 0.0) {
            return bad(format!(
                "ln_eps {} must be positive and finite",
                self.ln_eps
            ));
        }
        if self.param_count_checked().is_none() {
            return bad("tensor sizes overflow usize".into());
        }
        Ok(())
    }

    /// Total number of parameters (embeddings, encoder, pooler, classifier), or
    /// `None` on overflow. Counts the pooler for both pooling modes.
    pub fn param_count_checked(&self) -> Option<usize> {
        let h = self.hidden;
        let lin = |i: usize, o: usize| i.checked_mul(o)?.checked_add(o);
        let emb = self
            .vocab
            .checked_add(self.max_pos)?
            .checked_add(self.type_vocab)?
            .checked_add(2)?
            .checked_mul(h)?;
        let layer = lin(h, h)?
            .checked_mul(4)?
            .checked_add(lin(h, self.ffn)?)?
            .checked_add(lin(self.ffn, h)?)?
            .checked_add(h.checked_mul(4)?)?;
        let total = emb
            .checked_add(layer.checked_mul(self.layers)?)?
            .checked_add(lin(h, h)?)?
            .checked_add(lin(h, self.num_labels)?)?;
        // Every tensor must also be addressable in bytes.
        total.checked_mul(4)?;
        Some(total)
    }

    /// Reads a HuggingFace `config.json` (`BertConfig` fields: `num_hidden_layers`,
    /// `hidden_size`, `num_attention_heads`, `intermediate_size`, `vocab_size`,
    /// `max_position_embeddings`, `type_vocab_size`, `layer_norm_eps`, and
    /// `num_labels` or `id2label`, default 2). Only `hidden_act = "gelu"` and absolute
    /// position embeddings are supported. The result is validated.
    pub fn from_hf_config_json(
        json: &str,
        name: &str,
        pooling: Pooling,
    ) -> Result<Self, ModelError> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| ModelError::InvalidConfig(format!("config.json is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ModelError::InvalidConfig("config.json is not an object".into()))?;
        let num = |key: &str| -> Result<usize, ModelError> {
            obj.get(key)
                .and_then(|x| x.as_u64())
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| {
                    ModelError::InvalidConfig(format!(
                        "config.json: `{key}` missing or not a non-negative integer"
                    ))
                })
        };
        if let Some(act) = obj.get("hidden_act") {
            if act.as_str() != Some("gelu") {
                return Err(ModelError::InvalidConfig(format!(
                    "config.json: hidden_act {act} is not supported (only \"gelu\")"
                )));
            }
        }
        if let Some(pe) = obj.get("position_embedding_type") {
            if pe.as_str() != Some("absolute") {
                return Err(ModelError::InvalidConfig(format!(
                    "config.json: position_embedding_type {pe} is not supported"
                )));
            }
        }
        let ln_eps = match obj.get("layer_norm_eps") {
            None => 1e-12,
            Some(x) => x.as_f64().ok_or_else(|| {
                ModelError::InvalidConfig("config.json: `layer_norm_eps` is not a number".into())
            })? as f32,
        };
        let num_labels = if obj.contains_key("num_labels") {
            num("num_labels")?
        } else if let Some(m) = obj.get("id2label").and_then(|x| x.as_object()) {
            m.len()
        } else {
            2
        };
        let cfg = Self {
            name: name.to_string(),
            layers: num("num_hidden_layers")?,
            hidden: num("hidden_size")?,
            heads: num("num_attention_heads")?,
            ffn: num("intermediate_size")?,
            vocab: num("vocab_size")?,
            max_pos: num("max_position_embeddings")?,
            type_vocab: num("type_vocab_size")?,
            num_labels,
            ln_eps,
            pooling,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
