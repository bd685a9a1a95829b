//! The error type of the model module.

use std::path::PathBuf;

/// Everything that can go wrong when building, loading or running the float model
/// on external input (a config, a checkpoint file, token ids).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration is inconsistent (e.g. `hidden` not divisible by `heads`).
    #[error("invalid BERT config: {0}")]
    InvalidConfig(String),

    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a valid safetensors file (bad header, truncated, ...).
    #[error("invalid safetensors data: {0}")]
    SafeTensors(String),

    /// A required tensor is absent from the checkpoint.
    #[error("missing tensor `{name}` in checkpoint")]
    MissingTensor { name: String },

    /// A tensor has a shape other than the config implies.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    /// A tensor has a dtype the loader does not accept (only F32, F16, BF16).
    #[error("tensor `{name}` has dtype {dtype}, expected F32 (F16/BF16 are converted)")]
    UnsupportedDtype { name: String, dtype: String },

    /// A tensor holds NaN or an infinity.
    #[error("tensor `{name}` holds a non-finite value at flat index {index}")]
    NonFinite { name: String, index: usize },

    /// A weight struct is inconsistent with its config (wrong vector length).
    #[error("weights `{name}` have {actual} elements, expected {expected}")]
    WeightLength {
        name: String,
        expected: usize,
        actual: usize,
    },

    /// Serialising to safetensors failed.
    #[error("cannot serialise to safetensors: {0}")]
    Serialize(String),

    /// The token sequence is empty.
    #[error("empty token sequence")]
    EmptySequence,

    /// The token sequence is longer than the position table.
    #[error("sequence of {seq} tokens exceeds max_pos {max_pos}")]
    SequenceTooLong { seq: usize, max_pos: usize },

    /// A token id is outside the vocabulary.
    #[error("token id {id} at position {position} is out of range (vocab {vocab})")]
    TokenOutOfRange {
        position: usize,
        id: u32,
        vocab: usize,
    },

    /// A token-type id is outside the token-type table.
    #[error("token type id {id} at position {position} is out of range (type_vocab {type_vocab})")]
    TypeIdOutOfRange {
        position: usize,
        id: u32,
        type_vocab: usize,
    },

    /// Two inputs that must have equal length do not.
    #[error("{what}: length {actual}, expected {expected}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
}
