//! Transport: ordered, reliable, message-oriented links between the three parties
//! (P0 the server, P1 the client, D the dealer), in process or over TCP, with optional
//! network emulation.
//!
//! # Links and messages
//! A [`Transport`] is one duplex connection to one peer. It carries whole [`Message`]s
//! (a flight number, a tag and a byte payload) in order and reliably; `send` does not
//! block the caller (messages are handed to a per-endpoint writer, like a NIC with a
//! buffer; at most [`MAX_IN_FLIGHT`] bytes are queued before `send` waits), `flush`
//! returns once everything sent has been handed to the peer, and `recv` blocks for the
//! next message (up to `LinkConfig::recv_timeout`). Errors from the background writer
//! (the peer went away) are reported by the next `send`, `flush` or `recv`. Dropping an
//! endpoint delivers what it still has queued (waiting at most the emulated delivery time
//! plus a few seconds), closes its direction of the link and stops its thread; the peer's
//! `recv` then returns [`NetError::PeerClosed`] once it has read everything.
//!
//! [`mem_pair`] gives two connected in-process endpoints; [`tcp`] connects parties over
//! TCP ([`tcp::Listener`] accepts several peers: P0 listens for P1 and D, P1 for D),
//! secured by TLS 1.3 with pinned certificates ([`tls`], [`tcp::Security`]) unless the
//! caller asks for plain TCP. The frames below travel inside TLS unchanged. On each new
//! connection the TLS handshake and the hello exchange together must complete within a
//! deadline, however slowly the peer sends ([`NetError::HandshakeTimeout`]). A listener
//! waiting for several peers has one deadline for all of them and drops an incoming
//! connection that fails (logged), so a stray connection cannot end its wait; if the
//! deadline passes, [`NetError::AcceptTimeout`] also reports the connections refused
//! meanwhile ([`tcp::Listener::accept_all_with`]).
//!
//! # Network emulation
//! Every endpoint's outgoing direction models a link of bandwidth `B` and one-way latency
//! `rtt/2` ([`NetProfile`]). A message whose frame is `s` bytes long (payload plus the
//! [`HEADER_LEN`]-byte header, on both transports) handed to `send` at time `t` is
//! delivered at `max(t, link_free) + 8s/B + rtt/2`, and the link is busy until
//! `link_free = max(t, link_free) + 8s/B`: messages queue behind each other (pacing).
//! The endpoint's writer thread really holds each message until its delivery time before
//! writing it to the socket or in-process channel, so measured wall times include the
//! modelled network. With [`NetProfile::none`] nothing is delayed (in process the
//! message is then passed on directly, without a thread).
//!
//! # TCP framing
//! Every frame is a fixed 27-byte header followed by the payload; integers are little
//! endian:
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! |      0 |    4 | magic `b"QBRT"`                                   |
//! |      4 |    2 | protocol version ([`PROTOCOL_VERSION`])           |
//! |      6 |    8 | session id (`LinkConfig::session`)                |
//! |     14 |    1 | sender: 0 = P0, 1 = P1, 2 = D                     |
//! |     15 |    4 | flight                                            |
//! |     19 |    4 | tag                                               |
//! |     23 |    4 | payload length in bytes                           |
//! |     27 |  len | payload                                           |
//!
//! On connecting, each side first sends a hello frame (flight 0, tag [`HELLO_TAG`], empty
//! payload) and then checks the peer's: a wrong magic, version, session or party is
//! reported as [`NetError::BadMagic`], [`NetError::VersionMismatch`],
//! [`NetError::SessionMismatch`] or [`NetError::PartyMismatch`] with both values (for a
//! listener waiting for several peers, as a refused connection). Every later frame is
//! checked the same way. A length above `LinkConfig::max_frame` is refused
//! with [`NetError::FrameTooLong`] before anything is allocated (payload buffers also
//! grow only as data arrives); end of stream inside a frame is [`NetError::Truncated`],
//! between frames [`NetError::PeerClosed`]; a read that times out is [`NetError::Timeout`]
//! and leaves the link usable (a partly read frame is resumed). Sockets use
//! `TCP_NODELAY`; writes go through a buffer, and large payloads are written straight
//! from the message without copying.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod error;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod mem;
mod profile;
mod tap;
pub mod tcp;
pub mod tls;

pub use error::NetError;
pub use frame::{HEADER_LEN, HELLO_TAG, MAGIC};
pub use link::MAX_IN_FLIGHT;
pub use mem::{mem_pair, try_mem_pair, MemTransport};
pub use profile::NetProfile;
pub use tap::{Received, Transcripts};

/// Version carried in every frame header; peers must agree.
pub const PROTOCOL_VERSION: u16 = 1;
/// Default largest accepted payload; longer frames are refused before allocating.
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;

/// The three parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PartyId {
    /// The server, owner of the model.
    P0,
    /// The client, owner of the input.
    P1,
    /// The dealer (offline only).
    Dealer,
}

impl PartyId {
    /// All parties, in wire-id order.
    pub const ALL: [PartyId; 3] = [PartyId::P0, PartyId::P1, PartyId::Dealer];

    /// The byte identifying the party on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            PartyId::P0 => 0,
            PartyId::P1 => 1,
            PartyId::Dealer => 2,
        }
    }

    /// Inverse of [`PartyId::to_u8`].
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.get(b as usize).copied()
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartyId::P0 => "P0",
            PartyId::P1 => "P1",
            PartyId::Dealer => "D",
        })
    }
}

impl FromStr for PartyId {
    type Err = String;
    /// Accepts `p0`, `p1`, `d` / `dealer` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "p0" | "server" => Ok(PartyId::P0),
            "p1" | "client" => Ok(PartyId::P1),
            "d" | "dealer" => Ok(PartyId::Dealer),
            _ => Err(format!("unknown party {s:?} (expected p0, p1 or dealer)")),
        }
    }
}

/// One message between two parties. `flight` is the sender's causal flight depth (used to
/// count rounds), `tag` is an opaque u32 the engine uses for accounting/sanity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub flight: u32,
    pub tag: u32,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn new(flight: u32, tag: u32, payload: Vec<u8>) -> Self {
        Self {
            flight,
            tag,
            payload,
        }
    }
}

/// A duplex, ordered, reliable connection to ONE peer carrying whole messages.
pub trait Transport: Send {
    /// Queues a message for the peer; does not wait for it to be delivered (but waits
    /// while more than [`MAX_IN_FLIGHT`] bytes are queued).
    fn send(&mut self, msg: Message) -> Result<(), NetError>;
    /// The next message from the peer, in order.
    fn recv(&mut self) -> Result<Message, NetError>;
    /// The party at the other end.
    fn peer(&self) -> PartyId;
    /// Flush anything queued (emulated link) — returns when all sent messages have been handed to the peer.
    fn flush(&mut self) -> Result<(), NetError>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, msg: Message) -> Result<(), NetError> {
        (**self).send(msg)
    }
    fn recv(&mut self) -> Result<Message, NetError> {
        (**self).recv()
    }
    fn peer(&self) -> PartyId {
        (**self).peer()
    }
    fn flush(&mut self) -> Result<(), NetError> {
        (**self).flush()
    }
}

/// Settings of one link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// Session id; both ends must agree (checked in every frame).
    pub session: u64,
    /// Emulated network.
    pub profile: NetProfile,
    /// Largest payload accepted (and sent).
    pub max_frame: usize,
    /// How long `recv` waits for data before [`NetError::Timeout`]; `None` waits forever
    /// (but still returns [`NetError::PeerClosed`] when the peer goes away).
    pub recv_timeout: Option<Duration>,
}

impl LinkConfig {
    /// A link of the given session and profile, default frame limit, no receive timeout.
    pub fn new(session: u64, profile: NetProfile) -> Self {
        Self {
            session,
            profile,
            max_frame: DEFAULT_MAX_FRAME,
            recv_timeout: None,
        }
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self::new(0, NetProfile::none())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
