//! A party's connections, flight depth and accounting: the thin IO layer every block uses.

use crate::account::{Accounting, OpKind, Phase, NO_LAYER};
use crate::error::{ProtocolError, Result};
use crate::net::{Message, PartyId, Transport};
use std::time::Instant;

/// One party's view of the network.
pub struct Ctx {
    pub me: PartyId,
    links: [Option<Box<dyn Transport>>; 3],
    /// Causal flight depth (online only).
    pub depth: u32,
    pub phase: Phase,
    pub layer: u16,
    pub kind: OpKind,
    pub acct: Accounting,
    since: Instant,
}

fn slot(p: PartyId) -> usize {
    crate::account::party_index(p)
}

impl Ctx {
    pub fn new(me: PartyId) -> Self {
        Ctx {
            me,
            links: [None, None, None],
            depth: 0,
            phase: Phase::Register,
            layer: NO_LAYER,
            kind: OpKind::Other,
            acct: Accounting::default(),
            since: Instant::now(),
        }
    }

    pub fn connect(&mut self, link: Box<dyn Transport>) {
        let p = link.peer();
        self.links[slot(p)] = Some(link);
    }

    pub fn has_link(&self, p: PartyId) -> bool {
        self.links[slot(p)].is_some()
    }

    fn link(&mut self, p: PartyId) -> Result<&mut Box<dyn Transport>> {
        let me = self.me;
        self.links[slot(p)]
            .as_mut()
            .ok_or_else(|| ProtocolError::Internal(format!("{me:?} has no link to {p:?}")))
    }

    /// Close the time slice of the current label and start a new one.
    pub fn label(&mut self, phase: Phase, layer: u16, kind: OpKind) {
        let now = Instant::now();
        self.acct
            .time((self.phase, self.layer, self.kind), now - self.since);
        self.since = now;
        self.phase = phase;
        self.layer = layer;
        self.kind = kind;
    }

    /// Start the clock of the current label again without counting the time since the
    /// last label (work that belongs to no operation, such as freeing used material).
    pub fn restart_clock(&mut self) {
        self.since = Instant::now();
    }

    /// Flush the time of the current label (call at the end of a phase).
    pub fn close_label(&mut self) {
        let (p, l, k) = (self.phase, self.layer, self.kind);
        self.label(p, l, k);
    }

    /// Send one message; online messages are stamped with flight depth + 1.
    pub fn send(&mut self, to: PartyId, tag: u32, payload: Vec<u8>) -> Result<()> {
        let flight = if self.phase == Phase::Online {
            self.depth + 1
        } else {
            0
        };
        let key = (self.phase, self.layer, self.kind);
        self.acct.sent(key, to, payload.len(), flight);
        self.link(to)?
            .send(Message {
                flight,
                tag,
                payload,
            })
            .map_err(|error| ProtocolError::Link { peer: to, error })?;
        Ok(())
    }

    /// Receive the next message from `from`, which must carry `tag` (the operation index:
    /// both parties walk the same program, so a different tag means the peer is out of step).
    pub fn recv(&mut self, from: PartyId, tag: u32) -> Result<Vec<u8>> {
        let m = self
            .link(from)?
            .recv()
            .map_err(|error| ProtocolError::Link { peer: from, error })?;
        if m.tag != tag {
            return Err(ProtocolError::OutOfSync {
                expected: tag as u64,
                got: m.tag,
            });
        }
        if self.phase == Phase::Online {
            self.depth = self.depth.max(m.flight);
        }
        Ok(m.payload)
    }

    pub fn flush(&mut self) -> Result<()> {
        for l in self.links.iter_mut().flatten() {
            let peer = l.peer();
            l.flush()
                .map_err(|error| ProtocolError::Link { peer, error })?;
        }
        Ok(())
    }
}
