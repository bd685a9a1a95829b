//! TCP links: connect/listen with a hello handshake, framed messages, emulation on the
//! sending side. See the module doc of `net` for the frame format.

use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use super::frame::{write_frame, FrameHeader, FrameReader, HELLO_TAG};
use super::link::{Outbox, Sink};
use super::{LinkConfig, Message, NetError, PartyId, Transport};

/// How long a listener waits for a connected peer's hello when `recv_timeout` is `None`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

const BUF_SIZE: usize = 256 << 10;
const RETRY_EVERY: Duration = Duration::from_millis(25);

struct TcpSink {
    w: BufWriter<TcpStream>,
    session: u64,
    me: PartyId,
}

impl Sink for TcpSink {
    fn deliver(&mut self, msg: Message) -> Result<(), NetError> {
        // `send` has checked the length against `max_frame` and u32::MAX.
        let len = u32::try_from(msg.payload.len()).map_err(|_| NetError::FrameTooLong {
            len: msg.payload.len(),
            max: u32::MAX as usize,
        })?;
        let h = FrameHeader::new(self.session, self.me, msg.flight, msg.tag, len);
        write_frame(&mut self.w, &h, &msg.payload)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), NetError> {
        Ok(self.w.flush()?)
    }

    fn close(&mut self) {
        let _ = self.w.flush();
        let _ = self.w.get_ref().shutdown(Shutdown::Write);
    }
}

/// One end of a TCP link.
pub struct TcpTransport {
    me: PartyId,
    peer: PartyId,
    session: u64,
    max_frame: usize,
    reader: FrameReader<BufReader<TcpStream>>,
    out: Outbox,
}

impl TcpTransport {
    /// This party.
    pub fn me(&self) -> PartyId {
        self.me
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.reader.get_ref().get_ref().peer_addr()?)
    }

    /// Exchanges hellos on a fresh connection and builds the endpoint. `expect` lists who
    /// the peer may be; the hello must arrive within `hello_timeout`.
    fn handshake(
        stream: TcpStream,
        me: PartyId,
        expect: &[PartyId],
        cfg: &LinkConfig,
        hello_timeout: Option<Duration>,
    ) -> Result<Self, NetError> {
        stream.set_nodelay(true)?;
        (&stream).write_all(&FrameHeader::hello(cfg.session, me).encode())?;
        stream.set_read_timeout(hello_timeout.map(nonzero))?;
        let mut reader = FrameReader::new(BufReader::with_capacity(BUF_SIZE, stream.try_clone()?));
        let mut peer = None;
        reader.read_frame(0, |h| {
            peer = Some(h.check(cfg.session, expect)?);
            if h.tag != HELLO_TAG || h.len != 0 || h.flight != 0 {
                return Err(NetError::BadHello(format!(
                    "expected flight 0, tag {HELLO_TAG:#x}, length 0; got flight {}, tag {:#x}, length {}",
                    h.flight, h.tag, h.len
                )));
            }
            Ok(())
        })?;
        let Some(peer) = peer else {
            return Err(NetError::BadHello("no hello received".into()));
        };
        stream.set_read_timeout(cfg.recv_timeout.map(nonzero))?;
        tracing::debug!(%me, %peer, session = cfg.session, addr = ?stream.peer_addr().ok(), "tcp link up");
        let sink = Box::new(TcpSink {
            w: BufWriter::with_capacity(BUF_SIZE, stream.try_clone()?),
            session: cfg.session,
            me,
        });
        let killer = stream;
        let aborter = Box::new(move || {
            let _ = killer.shutdown(Shutdown::Both);
        });
        let out = Outbox::new(
            sink,
            &cfg.profile,
            cfg.max_frame,
            true,
            Some(aborter),
            format!("net-tcp-{me}-{peer}"),
        )?;
        Ok(Self {
            me,
            peer,
            session: cfg.session,
            max_frame: cfg.max_frame,
            reader,
            out,
        })
    }
}

/// `set_read_timeout` rejects a zero duration.
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_micros(1))
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Message) -> Result<(), NetError> {
        self.out.send(msg)
    }

    fn recv(&mut self) -> Result<Message, NetError> {
        if let Some(e) = self.out.error() {
            return Err(e);
        }
        let (session, peer) = (self.session, self.peer);
        let (h, payload) = self
            .reader
            .read_frame(self.max_frame, |h| h.check(session, &[peer]).map(|_| ()))?;
        Ok(Message {
            flight: h.flight,
            tag: h.tag,
            payload,
        })
    }

    fn peer(&self) -> PartyId {
        self.peer
    }

    fn flush(&mut self) -> Result<(), NetError> {
        self.out.flush()
    }
}

/// A listening socket that accepts one or several parties.
pub struct Listener {
    inner: TcpListener,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Self, NetError> {
        Ok(Self {
            inner: TcpListener::bind(addr)?,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.inner.local_addr()?)
    }

    /// Accepts one connection as `me` from `expect`. Waits for the connection without a
    /// limit, then for its hello up to `cfg.recv_timeout` (or [`HANDSHAKE_TIMEOUT`]).
    pub fn accept(
        &self,
        me: PartyId,
        expect: PartyId,
        cfg: &LinkConfig,
    ) -> Result<TcpTransport, NetError> {
        self.accept_any(me, &[expect], cfg)
    }

    /// Accepts one connection from any of `expected` (see [`Transport::peer`] for which).
    pub fn accept_any(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
    ) -> Result<TcpTransport, NetError> {
        let (stream, from) = loop {
            match self.inner.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
        tracing::debug!(%me, ?expected, %from, "tcp connection accepted");
        TcpTransport::handshake(
            stream,
            me,
            expected,
            cfg,
            Some(cfg.recv_timeout.unwrap_or(HANDSHAKE_TIMEOUT)),
        )
    }

    /// Accepts one connection from each of `expected`, in whatever order they arrive;
    /// returns them in the order of `expected`. A party connecting twice, or one not
    /// listed, is an error ([`NetError::UnexpectedParty`]).
    pub fn accept_all(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
    ) -> Result<Vec<Box<dyn Transport>>, NetError> {
        let mut slots: Vec<Option<TcpTransport>> = expected.iter().map(|_| None).collect();
        let mut missing: Vec<PartyId> = expected.to_vec();
        while !missing.is_empty() {
            let t = self.accept_any(me, expected, cfg)?;
            let peer = t.peer;
            let Some(pos) = missing.iter().position(|&p| p == peer) else {
                return Err(NetError::UnexpectedParty {
                    got: peer,
                    expected: missing,
                });
            };
            missing.remove(pos);
            if let Some(slot) = expected.iter().position(|&p| p == peer) {
                slots[slot] = Some(t);
            }
        }
        Ok(slots
            .into_iter()
            .flatten()
            .map(|t| Box::new(t) as Box<dyn Transport>)
            .collect())
    }
}

/// Binds `addr` and accepts one connection as `me` from `expect`.
pub fn listen(
    addr: impl ToSocketAddrs,
    me: PartyId,
    expect: PartyId,
    cfg: &LinkConfig,
) -> Result<Box<dyn Transport>, NetError> {
    Ok(Box::new(Listener::bind(addr)?.accept(me, expect, cfg)?))
}

/// Connects as `me` to `peer` listening at `addr`, retrying refused connections until
/// `connect_timeout` has passed (so parties may start in any order); then waits up to
/// `connect_timeout` again for the peer's hello (the peer may accept late).
pub fn connect(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
) -> Result<Box<dyn Transport>, NetError> {
    Ok(Box::new(connect_tcp(addr, me, peer, cfg, connect_timeout)?))
}

/// [`connect`], returning the concrete type.
pub fn connect_tcp(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
) -> Result<TcpTransport, NetError> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let shown = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let deadline = Instant::now() + connect_timeout;
    let mut last = String::from("no address to connect to");
    loop {
        for a in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(a, nonzero(left.min(Duration::from_secs(5)))) {
                Ok(stream) => {
                    return TcpTransport::handshake(stream, me, &[peer], cfg, Some(connect_timeout))
                }
                Err(e) => last = e.to_string(),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || addrs.is_empty() {
            return Err(NetError::Connect {
                addr: shown,
                timeout: connect_timeout,
                last,
            });
        }
        tracing::trace!(%me, %peer, addr = %shown, %last, "connect failed; retrying");
        thread::sleep(left.min(RETRY_EVERY));
    }
}
