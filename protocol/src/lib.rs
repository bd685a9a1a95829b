//! Secure two-party inference of quantized BERT: rings, the two sharings, the dealer, the
//! building blocks of PROTOCOL.md, transport and accounting.
//!
//! Three parties: P0 (server, the model), P1 (client, the input), D (dealer, offline
//! correlated randomness; colludes with neither). See `docs/design.md` for how the code
//! maps onto the protocol.

pub mod account;
pub mod blocks;
pub mod crypten;
pub mod ctx;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod net;
pub mod prep;
pub mod registry;
pub mod ring;
pub mod seed;
pub mod session;
pub mod stats;
pub mod tensor;

pub use account::{Accounting, OpKind, Phase};
pub use blocks::lut::Table;
pub use blocks::open::Pending;
pub use engine::{Additive, Engine, LutMode, Masked, Reveal, Role, Truncation, Window};
pub use error::{ProtocolError, Result};
pub use net::PartyId;
pub use registry::{PrivateModel, QLinear, QWeights};
