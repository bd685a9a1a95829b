//! TCP links: connect/listen, TLS 1.3 with pinned certificates unless
//! [`Security::Insecure`], a hello handshake, framed messages, emulation on the sending
//! side. See the module doc of `net` for the frame format and [`super::tls`] for TLS.
//! The plain functions ([`connect`], [`Listener::accept_all`], ...) are plain TCP, kept
//! for tests and in-process benchmarks; the `_with` variants take a [`Security`].

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::frame::{write_frame, FrameHeader, FrameReader, HELLO_TAG};
use super::link::{Outbox, Sink};
use super::tls::{self, Side, TlsSetup};
use super::{LinkConfig, Message, NetError, PartyId, Transport};

/// How long a listener waits for a connected peer's hello when `recv_timeout` is `None`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

const BUF_SIZE: usize = 256 << 10;
const RETRY_EVERY: Duration = Duration::from_millis(25);

/// How a TCP link is secured: TLS 1.3 with pinned certificates (see [`super::tls`]), or
/// nothing (plain TCP, only for benchmarks and tests; callers must say so in their output).
#[derive(Clone, Debug)]
pub enum Security {
    /// Plain TCP: no confidentiality, no authentication.
    Insecure,
    /// TLS 1.3, mutual authentication against pinned certificates.
    Tls(Arc<TlsSetup>),
}

impl Security {
    /// How reports name the transport: `tcp-tls` or `tcp-insecure`.
    pub fn label(&self) -> &'static str {
        match self {
            Security::Insecure => "tcp-insecure",
            Security::Tls(_) => "tcp-tls",
        }
    }

    /// A line for the run's output.
    pub fn describe(&self) -> &'static str {
        match self {
            Security::Insecure => "tcp (INSECURE: no TLS)",
            Security::Tls(_) => "tcp + TLS 1.3 (pinned certificates)",
        }
    }
}

type BoxWrite = Box<dyn Write + Send>;
type BoxRead = Box<dyn Read + Send>;
/// Ends the write direction of a connection (after the buffered writer was flushed).
type Closer = Box<dyn FnOnce() + Send>;

struct TcpSink {
    w: BufWriter<BoxWrite>,
    session: u64,
    me: PartyId,
    /// Ends this direction: TLS close_notify (if any), then shutdown of the write side.
    closer: Option<Closer>,
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
        if let Some(c) = self.closer.take() {
            c();
        }
    }
}

/// One end of a TCP link (plain or TLS).
pub struct TcpTransport {
    me: PartyId,
    peer: PartyId,
    session: u64,
    max_frame: usize,
    peer_addr: Option<SocketAddr>,
    reader: FrameReader<BufReader<BoxRead>>,
    out: Outbox,
}

impl TcpTransport {
    /// This party.
    pub fn me(&self) -> PartyId {
        self.me
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        self.peer_addr.ok_or(NetError::Closed)
    }

    /// Secures a fresh connection (TLS handshake unless insecure), exchanges hellos and
    /// builds the endpoint. `expect` lists who the peer may be (one entry when we
    /// connected); the TLS handshake and the hello must each finish within
    /// `hello_timeout`. Communicates.
    fn handshake(
        stream: TcpStream,
        me: PartyId,
        expect: &[PartyId],
        cfg: &LinkConfig,
        hello_timeout: Duration,
        sec: &Security,
        connected: bool,
    ) -> Result<Self, NetError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(nonzero(hello_timeout)))?;
        stream.set_write_timeout(Some(nonzero(hello_timeout)))?;
        let (reader, mut writer, closer, expect): (BoxRead, BoxWrite, _, Vec<PartyId>) = match sec {
            Security::Insecure => {
                let s = stream.try_clone()?;
                let closer: Closer = Box::new(move || {
                    let _ = s.shutdown(Shutdown::Write);
                });
                (
                    Box::new(stream.try_clone()?),
                    Box::new(stream.try_clone()?),
                    closer,
                    expect.to_vec(),
                )
            }
            Security::Tls(setup) => {
                let side = if connected {
                    Side::Client(expect[0])
                } else {
                    Side::Server(expect)
                };
                let est = tls::establish(setup, &stream, side, hello_timeout)?;
                let closer = est.writer.closer();
                (
                    Box::new(est.reader),
                    Box::new(est.writer),
                    Box::new(move || closer.close()) as Closer,
                    // the certificate told us the role: the hello must claim it
                    vec![est.peer_role],
                )
            }
        };
        writer.write_all(&FrameHeader::hello(cfg.session, me).encode())?;
        writer.flush()?;
        let mut reader = FrameReader::new(BufReader::with_capacity(BUF_SIZE, reader));
        let mut peer = None;
        let tls_context = |e: NetError| match e {
            // TLS 1.3 clients finish before the server has checked their certificate:
            // a refusal arrives as an alert on the first read
            NetError::Tls(m) => {
                let who: Vec<String> = expect.iter().map(|p| p.to_string()).collect();
                let hint = if m.contains("alert") {
                    " (the peer refused our certificate: is it pinned there?)"
                } else {
                    ""
                };
                NetError::Tls(format!("handshake with {}: {m}{hint}", who.join(" or ")))
            }
            other => other,
        };
        reader.read_frame(0, |h| {
            peer = Some(h.check(cfg.session, &expect)?);
            if h.tag != HELLO_TAG || h.len != 0 || h.flight != 0 {
                return Err(NetError::BadHello(format!(
                    "expected flight 0, tag {HELLO_TAG:#x}, length 0; got flight {}, tag {:#x}, length {}",
                    h.flight, h.tag, h.len
                )));
            }
            Ok(())
        })
        .map_err(tls_context)?;
        let Some(peer) = peer else {
            return Err(NetError::BadHello("no hello received".into()));
        };
        stream.set_read_timeout(cfg.recv_timeout.map(nonzero))?;
        // a peer that stops reading makes our writes fail after the same time
        stream.set_write_timeout(cfg.recv_timeout.map(nonzero))?;
        let peer_addr = stream.peer_addr().ok();
        tracing::debug!(%me, %peer, session = cfg.session, addr = ?peer_addr, tls = sec.label(), "tcp link up");
        let sink = Box::new(TcpSink {
            w: BufWriter::with_capacity(BUF_SIZE, writer),
            session: cfg.session,
            me,
            closer: Some(closer),
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
            peer_addr,
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

    /// Accepts one connection as `me` from `expect` over plain TCP. Waits for the
    /// connection without a limit, then for its hello up to `cfg.recv_timeout` (or
    /// [`HANDSHAKE_TIMEOUT`]).
    pub fn accept(
        &self,
        me: PartyId,
        expect: PartyId,
        cfg: &LinkConfig,
    ) -> Result<TcpTransport, NetError> {
        self.accept_any(me, &[expect], cfg)
    }

    /// Accepts one plain-TCP connection from any of `expected` (see [`Transport::peer`]).
    pub fn accept_any(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
    ) -> Result<TcpTransport, NetError> {
        self.accept_any_with(me, expected, cfg, &Security::Insecure, None)
    }

    /// Accepts one connection from any of `expected`, secured by `sec`. Waits for the
    /// connection up to `wait` (`None`: without a limit), then for the TLS handshake and
    /// the hello up to `cfg.recv_timeout` (or [`HANDSHAKE_TIMEOUT`]). Communicates.
    pub fn accept_any_with(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
        sec: &Security,
        wait: Option<Duration>,
    ) -> Result<TcpTransport, NetError> {
        let deadline = wait.map(|w| Instant::now() + w);
        self.inner.set_nonblocking(deadline.is_some())?;
        let (stream, from) = loop {
            match self.inner.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        let who: Vec<String> = expected.iter().map(|p| p.to_string()).collect();
                        return Err(NetError::AcceptTimeout {
                            waiting_for: who.join(" or "),
                            timeout: wait.unwrap_or_default(),
                        });
                    }
                    thread::sleep(RETRY_EVERY);
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        tracing::debug!(%me, ?expected, %from, "tcp connection accepted");
        TcpTransport::handshake(
            stream,
            me,
            expected,
            cfg,
            cfg.recv_timeout.unwrap_or(HANDSHAKE_TIMEOUT),
            sec,
            false,
        )
    }

    /// Accepts one plain-TCP connection from each of `expected`, in whatever order they
    /// arrive; returns them in the order of `expected`. A party connecting twice, or one
    /// not listed, is an error ([`NetError::UnexpectedParty`]).
    pub fn accept_all(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
    ) -> Result<Vec<Box<dyn Transport>>, NetError> {
        self.accept_all_with(me, expected, cfg, &Security::Insecure, None)
    }

    /// [`Listener::accept_all`] secured by `sec`, waiting at most `wait` for each
    /// connection (see [`Listener::accept_any_with`]). Communicates.
    pub fn accept_all_with(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
        sec: &Security,
        wait: Option<Duration>,
    ) -> Result<Vec<Box<dyn Transport>>, NetError> {
        let mut slots: Vec<Option<TcpTransport>> = expected.iter().map(|_| None).collect();
        let mut missing: Vec<PartyId> = expected.to_vec();
        while !missing.is_empty() {
            // with TLS only the missing roles' certificates are accepted; over plain TCP a
            // repeated party is reported as unexpected below
            let allowed = match sec {
                Security::Insecure => expected,
                Security::Tls(_) => &missing,
            };
            let t = self.accept_any_with(me, allowed, cfg, sec, wait)?;
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

/// [`connect`] secured by `sec` (TLS handshake, then the hello, each within
/// `connect_timeout`). Communicates.
pub fn connect_with(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
    sec: &Security,
) -> Result<Box<dyn Transport>, NetError> {
    Ok(Box::new(connect_tcp_with(
        addr,
        me,
        peer,
        cfg,
        connect_timeout,
        sec,
    )?))
}

/// [`connect`], returning the concrete type.
pub fn connect_tcp(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
) -> Result<TcpTransport, NetError> {
    connect_tcp_with(addr, me, peer, cfg, connect_timeout, &Security::Insecure)
}

/// [`connect_with`], returning the concrete type.
pub fn connect_tcp_with(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
    sec: &Security,
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
                    return TcpTransport::handshake(
                        stream,
                        me,
                        &[peer],
                        cfg,
                        connect_timeout,
                        sec,
                        true,
                    )
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
