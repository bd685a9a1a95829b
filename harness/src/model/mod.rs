//! The float BERT model: configuration, weights, safetensors I/O and the f32
//! plaintext reference forward pass.
//!
//! Conventions used throughout the module:
//!
//! * Activations are row-major `seq × hidden` (`Vec<f32>` of length
//!   `seq * hidden`), one row per token.
//! * Every linear layer is stored row-major as `[in, out]`, so `y = x·W + b`
//!   (HuggingFace stores `[out, in]`; the loader transposes).
//! * An attention mask is a `&[bool]` of length `seq`: `true` marks a real token,
//!   `false` a padding position. Padding positions are never attended to as keys
//!   and are excluded from mean pooling; their own output rows are computed but
//!   meaningless.

pub mod config;
pub mod error;
pub mod float;
pub mod safetensors_io;
pub mod weights;

pub use config::{BertConfig, Pooling};
pub use error::ModelError;
pub use float::{
    attention_probs, embed, embed_normalized, encoder_layer, encoder_layer_traced, erf, erfc,
    forward, gelu, layer_norm, matmul_f32, normalize_rows, FloatTrace, LayerTrace,
};
pub use weights::{BertWeights, Embeddings, LayerNormW, LayerWeights, Linear};

#[cfg(test)]
mod tests;
