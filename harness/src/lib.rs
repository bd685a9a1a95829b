//! Quantized BERT under the secure protocol: the model, quantization, the plaintext
//! references and the programs the `harness` binary runs.

pub mod assets;
pub mod crypten;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod model;
pub mod party;
pub mod plot;
pub mod program;
pub mod quant;
pub mod report;
pub mod resources;
pub mod run;
