//! Tests of TCP links secured by TLS 1.3 with pinned certificates.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::tcp::{self, Listener, Security};
use super::tls::{self, TlsSetup};
use super::*;

const SAFETY: Duration = Duration::from_secs(5);
/// How long the listener waits in tests where a connection is refused.
const WAIT: Duration = Duration::from_secs(1);
/// Slack on top of a deadline for a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);

fn cfg() -> LinkConfig {
    let mut c = LinkConfig::new(0xC0FFEE, NetProfile::none());
    c.recv_timeout = Some(SAFETY);
    c
}

fn tls(s: TlsSetup) -> Security {
    Security::Tls(Arc::new(s))
}

type Ends = (
    Result<Box<dyn Transport>, NetError>,
    Result<Box<dyn Transport>, NetError>,
);

/// `me` listens for `peer`, which connects with `peer_sec`; returns both results.
fn link(me_sec: Security, peer_sec: Security, me: PartyId, peer: PartyId, c: &LinkConfig) -> Ends {
    link_within(me_sec, peer_sec, me, peer, c, SAFETY).0
}

/// [`link`] with the listener waiting at most `wait`; also how long the accept took.
fn link_within(
    me_sec: Security,
    peer_sec: Security,
    me: PartyId,
    peer: PartyId,
    c: &LinkConfig,
    wait: Duration,
) -> (Ends, Duration) {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let cc = c.clone();
    let h = thread::spawn(move || tcp::connect_with(addr, peer, me, &cc, SAFETY, &peer_sec));
    let t = Instant::now();
    let a = l
        .accept_all_with(me, &[peer], c, &me_sec, Some(wait))
        .map(|mut v| v.remove(0));
    let took = t.elapsed();
    ((a, h.join().unwrap()), took)
}

/// The listener's error after its wait: an accept timeout naming `who` and one refused
/// connection; returns the message.
fn refused_once(r: Result<Box<dyn Transport>, NetError>, who: PartyId, took: Duration) -> String {
    let e = r.err().expect("the listener must not accept");
    let m = e.to_string();
    assert!(matches!(e, NetError::AcceptTimeout { .. }), "{m}");
    assert!(
        m.starts_with(&format!(
            "no connection from {who} within {WAIT:?}; 1 connection refused meanwhile, the last: "
        )),
        "{m}"
    );
    assert!(took >= WAIT, "gave up after {took:?}: {m}");
    assert!(took < WAIT + MARGIN, "took {took:?}: {m}");
    m
}

#[test]
fn tls_links_carry_messages_both_ways_and_close_cleanly() {
    let [p0, p1, _] = TlsSetup::ephemeral().unwrap();
    let (a, b) = link(tls(p0), tls(p1), PartyId::P0, PartyId::P1, &cfg());
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.peer(), PartyId::P1);
    assert_eq!(b.peer(), PartyId::P0);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 991) as u8).collect();
    for (i, len) in [0usize, 1, 17_000, big.len()].into_iter().enumerate() {
        a.send(Message::new(i as u32, 10 + i as u32, big[..len].to_vec()))
            .unwrap();
        b.send(Message::new(i as u32, 20 + i as u32, big[..len].to_vec()))
            .unwrap();
    }
    for (i, len) in [0usize, 1, 17_000, big.len()].into_iter().enumerate() {
        let m = b.recv().unwrap();
        assert_eq!((m.tag, m.payload.as_slice()), (10 + i as u32, &big[..len]));
        let m = a.recv().unwrap();
        assert_eq!((m.tag, m.payload.as_slice()), (20 + i as u32, &big[..len]));
    }
    a.flush().unwrap();
    drop(a);
    assert!(matches!(b.recv(), Err(NetError::PeerClosed)));
}

#[test]
fn a_listener_learns_each_role_from_its_certificate() {
    let [p0, p1, d] = TlsSetup::ephemeral().unwrap();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cfg();
    let mut hs = vec![];
    for (me, s) in [(PartyId::Dealer, d), (PartyId::P1, p1)] {
        let cc = c.clone();
        hs.push(thread::spawn(move || {
            let mut t = tcp::connect_with(addr, me, PartyId::P0, &cc, SAFETY, &tls(s)).unwrap();
            t.send(Message::new(0, me.to_u8() as u32, vec![me.to_u8()]))
                .unwrap();
            t.flush().unwrap();
            t.recv().unwrap()
        }));
    }
    let mut links = l
        .accept_all_with(
            PartyId::P0,
            &[PartyId::P1, PartyId::Dealer],
            &c,
            &tls(p0),
            Some(SAFETY),
        )
        .unwrap();
    for (t, want) in links.iter_mut().zip([PartyId::P1, PartyId::Dealer]) {
        assert_eq!(t.peer(), want);
        assert_eq!(t.recv().unwrap().payload, vec![want.to_u8()]);
        t.send(Message::new(0, 0, vec![])).unwrap();
    }
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn a_client_with_an_unpinned_certificate_is_refused_on_both_sides() {
    // the stranger pins the real P0, but P0 pins another P1 certificate
    let (k0, c0) = tls::generate(PartyId::P0).unwrap();
    let (_, c1) = tls::generate(PartyId::P1).unwrap();
    let (ks, cs) = tls::generate(PartyId::P1).unwrap();
    let p0 = TlsSetup::from_pem(PartyId::P0, &k0, &c0, &[(PartyId::P1, c1)]).unwrap();
    let stranger = TlsSetup::from_pem(PartyId::P1, &ks, &cs, &[(PartyId::P0, c0)]).unwrap();
    let got = stranger_fp(&stranger);
    let ((a, b), took) = link_within(
        tls(p0),
        tls(stranger),
        PartyId::P0,
        PartyId::P1,
        &cfg(),
        WAIT,
    );
    // the refusal does not end the listener's wait; its timeout names it
    let ea = refused_once(a, PartyId::P1, took);
    assert!(ea.contains("TLS: handshake with P1"), "{ea}");
    assert!(ea.contains("not pinned"), "{ea}");
    assert!(ea.contains(&format!("got {got}")), "{ea}");
    let eb = b.err().expect("client must fail").to_string();
    assert!(eb.starts_with("TLS: handshake with P0"), "{eb}");
}

#[test]
fn a_server_with_an_unpinned_certificate_is_refused_naming_both_fingerprints() {
    let [_, p1, _] = TlsSetup::ephemeral().unwrap();
    let [impostor, _, _] = TlsSetup::ephemeral().unwrap();
    let got = stranger_fp(&impostor);
    let ((a, b), took) = link_within(
        tls(impostor),
        tls(p1),
        PartyId::P0,
        PartyId::P1,
        &cfg(),
        WAIT,
    );
    let eb = b.err().expect("client must refuse").to_string();
    assert!(eb.contains("TLS: handshake with P0"), "{eb}");
    assert!(eb.contains(&format!("got {got}")), "{eb}");
    assert!(eb.contains("expected P0 "), "{eb}");
    // the impostor hears the client's alert
    let ea = refused_once(a, PartyId::P1, took);
    assert!(ea.contains("TLS: handshake with P1"), "{ea}");
    assert!(ea.contains("alert"), "{ea}");
}

fn stranger_fp(s: &TlsSetup) -> String {
    s.my_fingerprint()
}

#[test]
fn plain_tcp_and_tls_do_not_mix() {
    let [p0, p1, _] = TlsSetup::ephemeral().unwrap();
    let mut c = cfg();
    c.recv_timeout = Some(Duration::from_millis(500));
    // a TLS listener, a plain client: its hello is not a TLS record
    let ((a, b), took) = link_within(
        tls(p0),
        Security::Insecure,
        PartyId::P0,
        PartyId::P1,
        &c,
        WAIT,
    );
    let ea = refused_once(a, PartyId::P1, took);
    assert!(ea.contains("TLS: handshake with P1"), "{ea}");
    assert!(b.is_err());
    // a plain listener, a TLS client: its ClientHello is not a frame
    let ((a, b), took) = link_within(
        Security::Insecure,
        tls(p1),
        PartyId::P0,
        PartyId::P1,
        &c,
        WAIT,
    );
    let ea = refused_once(a, PartyId::P1, took);
    assert!(ea.contains("bad frame magic"), "{ea}");
    assert!(b.is_err());
}

#[test]
fn garbage_instead_of_a_handshake_is_a_tls_error_not_a_hang() {
    let [p0, _, _] = TlsSetup::ephemeral().unwrap();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[0x42; 300]).unwrap();
        thread::sleep(Duration::from_millis(300));
    });
    let t = Instant::now();
    let r = l
        .accept_all_with(PartyId::P0, &[PartyId::P1], &cfg(), &tls(p0), Some(WAIT))
        .map(|mut v| v.remove(0));
    let e = refused_once(r, PartyId::P1, t.elapsed());
    assert!(e.contains("TLS: handshake with P1: "), "{e}");
    h.join().unwrap();
}

#[test]
fn a_peer_that_never_connects_ends_the_accept_after_the_wait() {
    let [p0, _, _] = TlsSetup::ephemeral().unwrap();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    let e = l
        .accept_all_with(
            PartyId::P0,
            &[PartyId::Dealer],
            &cfg(),
            &tls(p0),
            Some(Duration::from_millis(200)),
        )
        .err()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(e.to_string(), "no connection from D within 200ms");
}

#[test]
fn a_stalled_tls_peer_times_out_and_a_later_message_still_arrives() {
    let [p0, p1, _] = TlsSetup::ephemeral().unwrap();
    let mut c = cfg();
    c.recv_timeout = Some(Duration::from_millis(150));
    let (a, b) = link(tls(p0), tls(p1), PartyId::P0, PartyId::P1, &c);
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert!(matches!(a.recv(), Err(NetError::Timeout)));
    b.send(Message::new(1, 2, vec![3; 100_000])).unwrap();
    b.flush().unwrap();
    assert_eq!(a.recv().unwrap().payload, vec![3; 100_000]);
}

#[test]
fn keygen_writes_a_private_key_and_the_files_load() {
    let dir = std::env::temp_dir().join(format!("qbert-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for p in PartyId::ALL {
        let (key, crt) = tls::keygen(p, &dir).unwrap();
        assert!(crt.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    let d = TlsSetup::load(&dir, PartyId::Dealer).unwrap();
    assert_eq!(d.me(), PartyId::Dealer);
    std::fs::remove_file(dir.join("p1.crt")).unwrap();
    let e = TlsSetup::load(&dir, PartyId::Dealer)
        .unwrap_err()
        .to_string();
    assert!(e.contains("p1.crt") && e.contains("harness keygen"), "{e}");
    std::fs::write(dir.join("p1.crt"), "not a certificate").unwrap();
    assert!(TlsSetup::load(&dir, PartyId::Dealer).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dealer_frame_of_another_session_is_refused_mid_stream() {
    use super::frame::FrameHeader;
    use std::io::Read;
    let c = cfg();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let session = c.session;
    let h = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&FrameHeader::hello(session, PartyId::Dealer).encode())
            .unwrap();
        let mut b = [0u8; HEADER_LEN];
        s.read_exact(&mut b).unwrap();
        let good = FrameHeader::new(session, PartyId::Dealer, 0, 5, 2);
        s.write_all(&good.encode()).unwrap();
        s.write_all(&[1, 2]).unwrap();
        let other = FrameHeader::new(session + 1, PartyId::Dealer, 0, 6, 2);
        s.write_all(&other.encode()).unwrap();
        s.write_all(&[3, 4]).unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let mut t = l.accept(PartyId::P0, PartyId::Dealer, &c).unwrap();
    assert_eq!(t.recv().unwrap().payload, vec![1, 2]);
    match t.recv() {
        Err(NetError::SessionMismatch { ours, theirs }) => {
            assert_eq!((ours, theirs), (session, session + 1))
        }
        other => panic!("expected SessionMismatch, got {other:?}"),
    }
    h.join().unwrap();
}

#[test]
fn stray_connections_do_not_end_the_wait_for_the_real_peer() {
    let [p0, p1, _] = TlsSetup::ephemeral().unwrap();
    let [_, impostor, _] = TlsSetup::ephemeral().unwrap();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cfg();
    let cc = c.clone();
    let h = thread::spawn(move || {
        // a port scan: connects and closes
        drop(TcpStream::connect(addr).unwrap());
        // garbage instead of a ClientHello
        let mut g = TcpStream::connect(addr).unwrap();
        g.write_all(&[0x42; 300]).unwrap();
        drop(g);
        // a TLS peer whose certificate is not pinned
        let e = tcp::connect_with(addr, PartyId::P1, PartyId::P0, &cc, SAFETY, &tls(impostor));
        assert!(e.is_err(), "the impostor got in");
        // the real P1
        let mut t =
            tcp::connect_with(addr, PartyId::P1, PartyId::P0, &cc, SAFETY, &tls(p1)).unwrap();
        t.send(Message::new(1, 7, vec![1, 2, 3])).unwrap();
        t.flush().unwrap();
        t.recv().unwrap()
    });
    let t0 = Instant::now();
    let mut links = l
        .accept_all_with(PartyId::P0, &[PartyId::P1], &c, &tls(p0), Some(SAFETY))
        .unwrap();
    assert!(t0.elapsed() < SAFETY, "took {:?}", t0.elapsed());
    let a = &mut links[0];
    assert_eq!(a.peer(), PartyId::P1);
    assert_eq!(a.recv().unwrap(), Message::new(1, 7, vec![1, 2, 3]));
    a.send(Message::new(2, 8, vec![4])).unwrap();
    assert_eq!(h.join().unwrap().payload, vec![4]);
}

/// A TLS record header announcing 512 bytes, then zeros: a start that looks valid and
/// never completes.
fn tls_record_start(version_minor: u8) -> Vec<u8> {
    let mut b = vec![0x16, 0x03, version_minor, 0x02, 0x00];
    b.resize(200, 0);
    b
}

#[test]
fn a_client_hello_trickled_byte_by_byte_is_cut_at_the_handshake_deadline() {
    let [p0, _, _] = TlsSetup::ephemeral().unwrap();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    // each byte comes well within the per-read timeout
    let stop = super::tests::trickle(s, tls_record_start(1), Duration::from_millis(100));
    let mut c = cfg();
    c.recv_timeout = Some(Duration::from_millis(300));
    let t = Instant::now();
    let r = l.accept_any_with(PartyId::P0, &[PartyId::P1], &c, &tls(p0), Some(SAFETY));
    let took = t.elapsed();
    stop();
    let e = r.err().expect("the trickle must be cut").to_string();
    assert_eq!(e, "handshake with P1: not completed within 300ms");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_server_hello_trickled_byte_by_byte_is_cut_at_the_connect_deadline() {
    let [_, p1, _] = TlsSetup::ephemeral().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        super::tests::trickle(s, tls_record_start(3), Duration::from_millis(100))
    });
    let t = Instant::now();
    let r = tcp::connect_tcp_with(
        addr,
        PartyId::P1,
        PartyId::P0,
        &cfg(),
        Duration::from_millis(300),
        &tls(p1),
    );
    let took = t.elapsed();
    h.join().unwrap()();
    let e = r.err().expect("the trickle must be cut").to_string();
    assert_eq!(e, "handshake with P0: not completed within 300ms");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// A one-connection proxy to `target` that, once `flip` is set, flips the last byte of
/// each chunk the client sends (inside a record: it no longer decrypts).
fn flipping_proxy(target: SocketAddr, flip: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut s = TcpStream::connect(target).unwrap();
        let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if flip.load(Ordering::SeqCst) {
                buf[n - 1] ^= 0x5A;
            }
            if s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    addr
}

#[test]
fn a_record_that_does_not_decrypt_is_refused_and_the_peer_hears_the_alert() {
    let [p0, p1, _] = TlsSetup::ephemeral().unwrap();
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let flip = Arc::new(AtomicBool::new(false));
    let via = flipping_proxy(l.local_addr().unwrap(), flip.clone());
    let c = cfg();
    let cc = c.clone();
    let h = thread::spawn(move || {
        tcp::connect_with(via, PartyId::P1, PartyId::P0, &cc, SAFETY, &tls(p1))
    });
    let mut a = l
        .accept_all_with(PartyId::P0, &[PartyId::P1], &c, &tls(p0), Some(SAFETY))
        .unwrap()
        .remove(0);
    let mut b = h.join().unwrap().unwrap();
    b.send(Message::new(1, 1, vec![5; 10])).unwrap();
    b.flush().unwrap();
    assert_eq!(a.recv().unwrap().payload, vec![5; 10]);
    flip.store(true, Ordering::SeqCst);
    b.send(Message::new(2, 1, vec![6; 10])).unwrap();
    b.flush().unwrap();
    let ea = a.recv().unwrap_err();
    assert!(matches!(ea, NetError::Tls(_)), "{ea}");
    // the reader only queued the alert: P0's writer sends it when the endpoint closes
    drop(a);
    let eb = b.recv().unwrap_err().to_string();
    assert!(eb.contains("alert"), "{eb}");
}

#[test]
fn one_certificate_pinned_for_two_roles_or_ours_for_a_peer_is_refused() {
    let (k0, c0) = tls::generate(PartyId::P0).unwrap();
    let (_, c1) = tls::generate(PartyId::P1).unwrap();
    let (_, cd) = tls::generate(PartyId::Dealer).unwrap();
    let fp1 = tls::pem_fingerprint(&c1).unwrap();
    let fp0 = tls::pem_fingerprint(&c0).unwrap();
    let ok = [(PartyId::P1, c1.clone()), (PartyId::Dealer, cd)];
    TlsSetup::from_pem(PartyId::P0, &k0, &c0, &ok).unwrap();
    let twice = [(PartyId::P1, c1.clone()), (PartyId::Dealer, c1)];
    let e = TlsSetup::from_pem(PartyId::P0, &k0, &c0, &twice)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("TLS: the same certificate is pinned for P1 and D ({fp1})")
    );
    let ours = [(PartyId::Dealer, c0.clone())];
    let e = TlsSetup::from_pem(PartyId::P0, &k0, &c0, &ours)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("TLS: the certificate pinned for D is P0's own ({fp0})")
    );
}
