//! TCP links: connect/listen, TLS 1.3 with pinned certificates unless
//! [`Security::Insecure`], a hello handshake, framed messages, emulation on the sending
//! side. See the module doc of `net` for the frame format and [`super::tls`] for TLS.
//! The plain functions ([`connect`], [`Listener::accept_all`], ...) are plain TCP, kept
//! for tests and in-process benchmarks; the `_with` variants take a [`Security`].

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::frame::{write_frame, FrameHeader, FrameReader, HELLO_TAG};
use super::link::{Outbox, Sink};
use super::tls::{self, Side, TlsSetup};
use super::{LinkConfig, Message, NetError, PartyId, Transport};

/// How long a listener gives a connected peer to complete the TLS handshake and the hello
/// when `recv_timeout` is `None`.
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
    /// connected). `hello_timeout` is a deadline for the TLS handshake and the hello
    /// together, counted from now: a watchdog shuts the socket down when it passes, so a
    /// peer that sends a byte now and then cannot keep the handshake alive
    /// ([`NetError::HandshakeTimeout`]). Communicates.
    fn handshake(
        stream: TcpStream,
        me: PartyId,
        expect: &[PartyId],
        cfg: &LinkConfig,
        hello_timeout: Duration,
        sec: &Security,
        connected: bool,
    ) -> Result<Self, NetError> {
        stream.set_nonblocking(false)?;
        let mut watchdog = Watchdog::arm(&stream, hello_timeout)?;
        let greeted = greet(&stream, me, expect, cfg, hello_timeout, sec, connected);
        if watchdog.disarm() {
            // the socket is shut down, whether or not the last step got through
            return Err(NetError::HandshakeTimeout {
                with: either(expect),
                timeout: hello_timeout,
            });
        }
        let Greeted {
            peer,
            reader,
            writer,
            closer,
        } = greeted?;
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

/// A connection after the TLS handshake and the hellos, before the endpoint is built.
struct Greeted {
    peer: PartyId,
    reader: FrameReader<BufReader<BoxRead>>,
    writer: BoxWrite,
    closer: Closer,
}

/// The TLS handshake (unless insecure) and the hello exchange of
/// [`TcpTransport::handshake`]; each socket call is bounded by `hello_timeout` as well.
fn greet(
    stream: &TcpStream,
    me: PartyId,
    expect: &[PartyId],
    cfg: &LinkConfig,
    hello_timeout: Duration,
    sec: &Security,
    connected: bool,
) -> Result<Greeted, NetError> {
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
            let est = tls::establish(setup, stream, side, hello_timeout)?;
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
            let hint = if m.contains("alert") {
                " (the peer refused our certificate: is it pinned there?)"
            } else {
                ""
            };
            NetError::Tls(format!("handshake with {}: {m}{hint}", either(&expect)))
        }
        other => other,
    };
    let read = reader.read_frame(0, |h| {
        peer = Some(h.check(cfg.session, &expect)?);
        if h.tag != HELLO_TAG || h.len != 0 || h.flight != 0 {
            return Err(NetError::BadHello(format!(
                "expected flight 0, tag {HELLO_TAG:#x}, length 0; got flight {}, tag {:#x}, length {}",
                h.flight, h.tag, h.len
            )));
        }
        Ok(())
    });
    if let Err(e) = read {
        // sends the alert the TLS reader may have queued (nothing else writes yet)
        closer();
        return Err(tls_context(e));
    }
    let Some(peer) = peer else {
        return Err(NetError::BadHello("no hello received".into()));
    };
    Ok(Greeted {
        peer,
        reader,
        writer,
        closer,
    })
}

/// `P1`, `P1 or D`.
fn either(parties: &[PartyId]) -> String {
    let who: Vec<String> = parties.iter().map(|p| p.to_string()).collect();
    who.join(" or ")
}

/// Bounds a handshake: unless disarmed in time, shuts the socket down in both directions,
/// which ends whatever read or write the handshake is blocked in.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    /// Returns whether it fired.
    thread: Option<JoinHandle<bool>>,
}

impl Watchdog {
    fn arm(stream: &TcpStream, within: Duration) -> Result<Self, NetError> {
        let sock = stream.try_clone()?;
        let (cancel, cancelled) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("net-handshake-deadline".into())
            .spawn(move || {
                // a send or a dropped sender cancels it
                let fired = matches!(
                    cancelled.recv_timeout(within),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                if fired {
                    let _ = sock.shutdown(Shutdown::Both);
                }
                fired
            })?;
        Ok(Self {
            cancel: Some(cancel),
            thread: Some(thread),
        })
    }

    /// Stops the watchdog (waiting for its thread); true if it had fired.
    fn disarm(&mut self) -> bool {
        drop(self.cancel.take());
        self.thread.take().is_some_and(|t| t.join().unwrap_or(true))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
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
    /// [`HANDSHAKE_TIMEOUT`]). Communicates.
    pub fn accept(
        &self,
        me: PartyId,
        expect: PartyId,
        cfg: &LinkConfig,
    ) -> Result<TcpTransport, NetError> {
        self.accept_any(me, &[expect], cfg)
    }

    /// Accepts one plain-TCP connection from any of `expected` (see [`Transport::peer`]).
    /// Communicates.
    pub fn accept_any(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
    ) -> Result<TcpTransport, NetError> {
        self.accept_any_with(me, expected, cfg, &Security::Insecure, None)
    }

    /// Accepts one connection from any of `expected`, secured by `sec`. Waits for the
    /// connection up to `wait` (`None`: without a limit); its TLS handshake and hello must
    /// then complete within `cfg.recv_timeout` (or [`HANDSHAKE_TIMEOUT`]) and before
    /// `wait` has run out. The first connection decides: if it fails, that is the error
    /// ([`Listener::accept_all_with`] drops it and goes on). Communicates.
    pub fn accept_any_with(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
        sec: &Security,
        wait: Option<Duration>,
    ) -> Result<TcpTransport, NetError> {
        let deadline = wait.and_then(|w| Instant::now().checked_add(w));
        if let Security::Tls(setup) = sec {
            setup.require_pins(expected)?;
        }
        let Some((stream, from)) = self.next_connection(deadline)? else {
            return Err(NetError::AcceptTimeout {
                waiting_for: either(expected),
                timeout: wait.unwrap_or_default(),
                refused: String::new(),
            });
        };
        tracing::debug!(%me, ?expected, %from, "tcp connection accepted");
        TcpTransport::handshake(
            stream,
            me,
            expected,
            cfg,
            hello_within(cfg, deadline),
            sec,
            false,
        )
    }

    /// Accepts one plain-TCP connection from each of `expected`, in whatever order they
    /// arrive, without a time limit; returns them in the order of `expected`. See
    /// [`Listener::accept_all_with`]. Communicates.
    pub fn accept_all(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
    ) -> Result<Vec<Box<dyn Transport>>, NetError> {
        self.accept_all_with(me, expected, cfg, &Security::Insecure, None)
    }

    /// Accepts one connection from each of `expected`, secured by `sec`, in whatever order
    /// they arrive; returns them in the order of `expected`.
    ///
    /// `wait` is one deadline for all of them, not a limit per connection; with `None`
    /// accepting goes on without a limit until every expected peer is in. Each
    /// connection's TLS handshake and hello must complete within `cfg.recv_timeout` (or
    /// [`HANDSHAKE_TIMEOUT`]) and before the deadline. An incoming connection that fails
    /// (a TLS refusal, a bad hello, a handshake that does not complete in time, a peer
    /// that closes, another session, or over plain TCP a party not expected or already
    /// connected; with TLS only the roles still missing are accepted) is logged
    /// (`tracing::warn!`) and dropped, and accepting goes on: a stray connection cannot
    /// end the wait for the real peers. If the deadline passes first, the error is
    /// [`NetError::AcceptTimeout`] naming the peers still missing and the connections
    /// refused meanwhile (how many, and the last one's error). Connections are
    /// handshaken one at a time, so a slow one delays the next by up to its handshake
    /// time. Communicates.
    pub fn accept_all_with(
        &self,
        me: PartyId,
        expected: &[PartyId],
        cfg: &LinkConfig,
        sec: &Security,
        wait: Option<Duration>,
    ) -> Result<Vec<Box<dyn Transport>>, NetError> {
        let deadline = wait.and_then(|w| Instant::now().checked_add(w));
        if let Security::Tls(setup) = sec {
            // a missing pin would refuse every connection until the deadline
            setup.require_pins(expected)?;
        }
        let mut slots: Vec<Option<TcpTransport>> = expected.iter().map(|_| None).collect();
        let mut missing: Vec<PartyId> = expected.to_vec();
        let mut refused = 0usize;
        let mut last_refusal = String::new();
        while !missing.is_empty() {
            let passed = deadline.is_some_and(|d| Instant::now() >= d);
            let next = if passed {
                None
            } else {
                self.next_connection(deadline)?
            };
            let Some((stream, from)) = next else {
                let who: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
                return Err(NetError::AcceptTimeout {
                    waiting_for: who.join(" and "),
                    timeout: wait.unwrap_or_default(),
                    refused: refusals(refused, &last_refusal),
                });
            };
            tracing::debug!(%me, ?missing, %from, "tcp connection accepted");
            // with TLS only the missing roles' certificates are accepted; over plain TCP a
            // repeated party is refused below
            let allowed = match sec {
                Security::Insecure => expected,
                Security::Tls(_) => &missing,
            };
            let hello = hello_within(cfg, deadline);
            let linked = TcpTransport::handshake(stream, me, allowed, cfg, hello, sec, false)
                .and_then(|t| {
                    if missing.contains(&t.peer) {
                        Ok(t)
                    } else {
                        Err(NetError::UnexpectedParty {
                            got: t.peer,
                            expected: missing.clone(),
                        })
                    }
                });
            match linked {
                Ok(t) => {
                    let peer = t.peer;
                    missing.retain(|&p| p != peer);
                    if let Some(slot) = expected.iter().position(|&p| p == peer) {
                        slots[slot] = Some(t);
                    }
                }
                Err(e) => {
                    refused += 1;
                    tracing::warn!(%me, %from, error = %e, ?missing, "incoming connection refused; still waiting");
                    last_refusal = e.to_string();
                }
            }
        }
        Ok(slots
            .into_iter()
            .flatten()
            .map(|t| Box::new(t) as Box<dyn Transport>)
            .collect())
    }

    /// The next incoming connection; `None` once `deadline` has passed without one.
    fn next_connection(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<(TcpStream, SocketAddr)>, NetError> {
        self.inner.set_nonblocking(deadline.is_some())?;
        loop {
            match self.inner.accept() {
                Ok(s) => return Ok(Some(s)),
                // a connection reset before we got to it
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline
                        .map_or(RETRY_EVERY, |d| d.saturating_duration_since(Instant::now()));
                    if left.is_zero() {
                        return Ok(None);
                    }
                    thread::sleep(left.min(RETRY_EVERY));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The handshake deadline of a connection accepted now: `cfg.recv_timeout` (or
/// [`HANDSHAKE_TIMEOUT`]), cut short by the listener's deadline.
fn hello_within(cfg: &LinkConfig, deadline: Option<Instant>) -> Duration {
    let hello = cfg.recv_timeout.unwrap_or(HANDSHAKE_TIMEOUT);
    match deadline {
        Some(d) => hello.min(d.saturating_duration_since(Instant::now())),
        None => hello,
    }
}

/// The tail of [`NetError::AcceptTimeout`]'s message: the connections refused meanwhile.
fn refusals(count: usize, last: &str) -> String {
    match count {
        0 => String::new(),
        1 => format!("; 1 connection refused meanwhile, the last: {last}"),
        n => format!("; {n} connections refused meanwhile, the last: {last}"),
    }
}

/// Binds `addr` and accepts one connection as `me` from `expect`. Communicates.
pub fn listen(
    addr: impl ToSocketAddrs,
    me: PartyId,
    expect: PartyId,
    cfg: &LinkConfig,
) -> Result<Box<dyn Transport>, NetError> {
    Ok(Box::new(Listener::bind(addr)?.accept(me, expect, cfg)?))
}

/// Connects as `me` to `peer` listening at `addr` over plain TCP, retrying refused
/// connections until `connect_timeout` has passed (so parties may start in any order);
/// then the hello exchange must complete within `connect_timeout` of the connection (the
/// peer may accept late; a deadline, however slowly the peer sends). Communicates.
pub fn connect(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
) -> Result<Box<dyn Transport>, NetError> {
    Ok(Box::new(connect_tcp(addr, me, peer, cfg, connect_timeout)?))
}

/// [`connect`] secured by `sec`: the TLS handshake and the hello together must complete
/// within `connect_timeout` of the connection. Communicates.
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

/// [`connect`], returning the concrete type. Communicates.
pub fn connect_tcp(
    addr: impl ToSocketAddrs,
    me: PartyId,
    peer: PartyId,
    cfg: &LinkConfig,
    connect_timeout: Duration,
) -> Result<TcpTransport, NetError> {
    connect_tcp_with(addr, me, peer, cfg, connect_timeout, &Security::Insecure)
}

/// [`connect_with`], returning the concrete type. Communicates.
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
