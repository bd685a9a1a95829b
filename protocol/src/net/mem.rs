//! In-process links over `std::sync::mpsc` channels, with the same emulation as TCP.

use std::sync::mpsc;

use super::link::{Outbox, Sink};
use super::{LinkConfig, Message, NetError, PartyId, Transport};

struct MemSink {
    tx: Option<mpsc::Sender<Message>>,
}

impl Sink for MemSink {
    fn deliver(&mut self, msg: Message) -> Result<(), NetError> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|_| NetError::PeerClosed),
            None => Err(NetError::Closed),
        }
    }
    fn flush(&mut self) -> Result<(), NetError> {
        Ok(())
    }
    fn close(&mut self) {
        self.tx = None;
    }
}

/// One end of an in-process link (see [`mem_pair`]).
pub struct MemTransport {
    peer: PartyId,
    out: Outbox,
    rx: mpsc::Receiver<Message>,
    cfg: LinkConfig,
}

impl Transport for MemTransport {
    fn send(&mut self, msg: Message) -> Result<(), NetError> {
        self.out.send(msg)
    }

    fn recv(&mut self) -> Result<Message, NetError> {
        if let Some(e) = self.out.error() {
            return Err(e);
        }
        let msg = match self.cfg.recv_timeout {
            Some(t) => self.rx.recv_timeout(t).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => NetError::Timeout,
                mpsc::RecvTimeoutError::Disconnected => NetError::PeerClosed,
            })?,
            None => self.rx.recv().map_err(|_| NetError::PeerClosed)?,
        };
        if msg.payload.len() > self.cfg.max_frame {
            return Err(NetError::FrameTooLong {
                len: msg.payload.len(),
                max: self.cfg.max_frame,
            });
        }
        Ok(msg)
    }

    fn peer(&self) -> PartyId {
        self.peer
    }

    fn flush(&mut self) -> Result<(), NetError> {
        self.out.flush()
    }
}

fn endpoint(
    me: PartyId,
    peer: PartyId,
    tx: mpsc::Sender<Message>,
    rx: mpsc::Receiver<Message>,
    cfg: &LinkConfig,
) -> Result<MemTransport, NetError> {
    let sink = Box::new(MemSink { tx: Some(tx) });
    let name = format!("net-mem-{me}-{peer}");
    let out = Outbox::new(sink, &cfg.profile, cfg.max_frame, false, None, name)?;
    Ok(MemTransport {
        peer,
        out,
        rx,
        cfg: cfg.clone(),
    })
}

/// In-process pair of endpoints (std mpsc), with emulation applied: the first talks as
/// `a` to `b`, the second as `b` to `a`. Fails only if a writer thread cannot be spawned.
pub fn try_mem_pair(
    a: PartyId,
    b: PartyId,
    cfg: &LinkConfig,
) -> Result<(MemTransport, MemTransport), NetError> {
    let (tx_ab, rx_ab) = mpsc::channel();
    let (tx_ba, rx_ba) = mpsc::channel();
    Ok((
        endpoint(a, b, tx_ab, rx_ba, cfg)?,
        endpoint(b, a, tx_ba, rx_ab, cfg)?,
    ))
}

/// In-process pair of endpoints (std mpsc), with emulation applied: the first talks as
/// `a` to `b`, the second as `b` to `a`.
///
/// # Panics
/// If the operating system refuses to spawn a writer thread (emulated profiles only),
/// like `std::thread::spawn`; use [`try_mem_pair`] to get an error instead.
pub fn mem_pair(
    a: PartyId,
    b: PartyId,
    cfg: &LinkConfig,
) -> (Box<dyn Transport>, Box<dyn Transport>) {
    match try_mem_pair(a, b, cfg) {
        Ok((ea, eb)) => (Box::new(ea), Box::new(eb)),
        Err(e) => panic!("mem_pair: cannot start the link writer thread: {e}"),
    }
}
