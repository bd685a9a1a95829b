//! The transport's error type.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::PartyId;

/// Everything that can go wrong on a link. Cloneable so that an error raised on an
/// endpoint's background writer can be reported on every later call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// An operating-system I/O error not covered by a more specific variant.
    #[error("network I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The peer closed the connection (clean end of stream between frames, reset,
    /// broken pipe, or the in-process peer endpoint was dropped).
    #[error("peer closed the connection")]
    PeerClosed,
    /// No data arrived within `LinkConfig::recv_timeout`. The link stays usable: a
    /// frame that was partly read when the timeout hit is resumed by the next `recv`.
    #[error("timed out waiting for data from the peer")]
    Timeout,
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame {part}: got {got} of {expected} bytes")]
    Truncated {
        /// `"header"` or `"payload"`.
        part: &'static str,
        got: usize,
        expected: usize,
    },
    /// A frame longer than the configured maximum (refused before allocating), or a
    /// message too long to send.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLong { len: usize, max: usize },
    /// The frame does not start with the protocol magic.
    #[error("bad frame magic: expected {expected:?}, got {got:?}")]
    BadMagic { expected: [u8; 4], got: [u8; 4] },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours is {ours}, the peer's is {theirs}")]
    VersionMismatch { ours: u16, theirs: u16 },
    /// The peer belongs to another session.
    #[error("session mismatch: ours is {ours:#018x}, the peer's is {theirs:#018x}")]
    SessionMismatch { ours: u64, theirs: u64 },
    /// The peer claims to be another party than the one expected.
    #[error("party mismatch: expected {expected}, the peer says it is {got}")]
    PartyMismatch { expected: PartyId, got: PartyId },
    /// A listener accepting several parties got one it does not expect (or twice).
    #[error("unexpected party {got}: expected one of {expected:?}")]
    UnexpectedParty {
        got: PartyId,
        expected: Vec<PartyId>,
    },
    /// The party byte of a frame header is not a known party.
    #[error("unknown party id byte {0} in frame header")]
    UnknownParty(u8),
    /// The first frame of a connection is not a valid hello frame.
    #[error("bad hello frame: {0}")]
    BadHello(String),
    /// Could not connect before the deadline.
    #[error("could not connect to {addr} within {timeout:?}: {last}")]
    Connect {
        addr: String,
        timeout: Duration,
        last: String,
    },
    /// Not every expected peer connected and completed its handshake before the
    /// listener's deadline.
    #[error("no connection from {waiting_for} within {timeout:?}{refused}")]
    AcceptTimeout {
        waiting_for: String,
        timeout: Duration,
        /// The incoming connections refused meanwhile, pre-formatted (`"; 1 connection
        /// refused meanwhile, the last: ..."`); empty when there were none.
        refused: String,
    },
    /// The TLS handshake and the hello exchange of a new connection did not finish
    /// within their deadline (a peer that sends too slowly, or not at all).
    #[error("handshake with {with}: not completed within {timeout:?}")]
    HandshakeTimeout {
        /// Who the peer was expected to be (`P1`, `P1 or D`).
        with: String,
        timeout: Duration,
    },
    /// A network profile string could not be parsed.
    #[error("invalid network profile {input:?}: {reason}")]
    BadProfile { input: String, reason: String },
    /// TLS failed: a certificate not pinned for the peer's role, missing or unreadable
    /// key material, or a record that does not decrypt (garbage or tampering).
    #[error("TLS: {0}")]
    Tls(String),
    /// The local endpoint has been shut down.
    #[error("endpoint closed")]
    Closed,
}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> Self {
        if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return NetError::Tls(super::tls::describe(t));
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetError::Timeout,
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected => NetError::PeerClosed,
            _ => NetError::Io(Arc::new(e)),
        }
    }
}
