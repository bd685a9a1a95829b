//! A recording tap: a [`Transport`] wrapper that keeps a copy of every message its owner
//! receives, for the transcript tests (what each party sees, byte for byte).
//!
//! It wraps any transport, so it costs nothing where it is not used: the in-process and
//! TCP links are unchanged, and only a run that asks for a [`Transcripts`] (see
//! `session::run_local_recorded`) puts taps on its links. Recording copies each payload
//! once; it is meant for small test runs, not for benchmarks.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Message, NetError, PartyId, Transport};

/// One received message as its receiver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender.
    pub from: PartyId,
    /// The sender's flight number (0 outside the online phase).
    pub flight: u32,
    /// The message's tag (operation index, registration name id, ...).
    pub tag: u32,
    /// The payload bytes, exactly as delivered.
    pub payload: Vec<u8>,
}

/// What every party received during a run, per receiver, in the order each link
/// delivered it (messages from different senders keep their per-link order; their
/// interleaving across links follows the receiver's reads).
#[derive(Clone, Debug, Default)]
pub struct Transcripts {
    logs: [Arc<Mutex<Vec<Received>>>; 3],
}

fn slot(p: PartyId) -> usize {
    p.to_u8() as usize
}

impl Transcripts {
    /// Empty transcripts for the three parties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wrap `inner`, a link owned by `me`, so that everything `me` receives on it is
    /// recorded here. Does not communicate.
    pub fn tap(&self, me: PartyId, inner: Box<dyn Transport>) -> Box<dyn Transport> {
        Box::new(Tap {
            inner,
            log: self.logs[slot(me)].clone(),
        })
    }

    /// A copy of everything `to` received, in order.
    pub fn received(&self, to: PartyId) -> Vec<Received> {
        self.logs[slot(to)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Take everything `to` received, leaving its transcript empty.
    pub fn take(&self, to: PartyId) -> Vec<Received> {
        std::mem::take(
            &mut *self.logs[slot(to)]
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// The wrapper itself: sends pass through, each successful receive is copied to the log.
struct Tap {
    inner: Box<dyn Transport>,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Transport for Tap {
    fn send(&mut self, msg: Message) -> Result<(), NetError> {
        self.inner.send(msg)
    }

    fn recv(&mut self) -> Result<Message, NetError> {
        let m = self.inner.recv()?;
        let rec = Received {
            from: self.inner.peer(),
            flight: m.flight,
            tag: m.tag,
            payload: m.payload.clone(),
        };
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rec);
        Ok(m)
    }

    fn peer(&self) -> PartyId {
        self.inner.peer()
    }

    fn flush(&mut self) -> Result<(), NetError> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{mem_pair, LinkConfig};

    #[test]
    fn records_what_each_end_receives_and_passes_it_on() {
        let rec = Transcripts::new();
        let (a, b) = mem_pair(PartyId::P0, PartyId::P1, &LinkConfig::default());
        let (mut a, mut b) = (rec.tap(PartyId::P0, a), rec.tap(PartyId::P1, b));
        a.send(Message::new(3, 7, vec![1, 2, 3])).unwrap();
        b.send(Message::new(0, 9, vec![])).unwrap();
        a.flush().unwrap();
        b.flush().unwrap();
        assert_eq!(b.recv().unwrap(), Message::new(3, 7, vec![1, 2, 3]));
        assert_eq!(a.recv().unwrap(), Message::new(0, 9, vec![]));
        let got1 = rec.received(PartyId::P1);
        assert_eq!(
            got1,
            vec![Received {
                from: PartyId::P0,
                flight: 3,
                tag: 7,
                payload: vec![1, 2, 3]
            }]
        );
        assert_eq!(rec.take(PartyId::P0)[0].from, PartyId::P1);
        assert!(rec.received(PartyId::P0).is_empty());
        assert!(rec.received(PartyId::Dealer).is_empty());
        assert_eq!((a.peer(), b.peer()), (PartyId::P1, PartyId::P0));
    }
}
