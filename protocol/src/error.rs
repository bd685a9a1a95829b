//! Errors of the protocol crate. Library code never panics on input from a peer or a file.

use crate::net::NetError;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// A link failed: names the peer (closed, stalled past the timeout, garbage, TLS).
    /// (The link error is part of the message, not a `source`, so that chains of
    /// causes do not print it twice.)
    #[error("link with {peer}: {error}")]
    Link {
        peer: crate::net::PartyId,
        error: NetError,
    },
    /// The session handshake found a difference (or an unreadable announcement).
    #[error("handshake with {peer}: {detail}")]
    Handshake {
        peer: crate::net::PartyId,
        detail: String,
    },
    #[error("malformed message from {from:?} in {what}: {detail}")]
    Malformed {
        from: crate::net::PartyId,
        what: &'static str,
        detail: String,
    },
    #[error("dealer material out of sync: expected op #{expected}, got tag {got}")]
    OutOfSync { expected: u64, got: u32 },
    #[error("shape error in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{0}")]
    Config(String),
    #[error("unknown registered tensor {0:?}")]
    UnknownTensor(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, ProtocolError>;

pub(crate) fn shape_err(op: &'static str, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::Shape {
        op,
        detail: detail.into(),
    }
}
