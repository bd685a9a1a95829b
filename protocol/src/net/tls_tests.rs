//! Tests of TCP links secured by TLS 1.3 with pinned certificates.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::tcp::{self, Listener, Security};
use super::tls::{self, TlsSetup};
use super::*;

const SAFETY: Duration = Duration::from_secs(5);

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
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let cc = c.clone();
    let h = thread::spawn(move || tcp::connect_with(addr, peer, me, &cc, SAFETY, &peer_sec));
    let a = l
        .accept_all_with(me, &[peer], c, &me_sec, Some(SAFETY))
        .map(|mut v| v.remove(0));
    (a, h.join().unwrap())
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
    let (a, b) = link(tls(p0), tls(stranger), PartyId::P0, PartyId::P1, &cfg());
    let ea = a.err().expect("listener must refuse").to_string();
    assert!(ea.contains("not pinned"), "{ea}");
    assert!(ea.contains("P1"), "{ea}");
    assert!(ea.contains(&got), "{ea}");
    let eb = b.err().expect("client must fail").to_string();
    assert!(eb.starts_with("TLS: handshake with P0"), "{eb}");
}

#[test]
fn a_server_with_an_unpinned_certificate_is_refused_naming_both_fingerprints() {
    let [_, p1, _] = TlsSetup::ephemeral().unwrap();
    let [impostor, _, _] = TlsSetup::ephemeral().unwrap();
    let got = stranger_fp(&impostor);
    let (a, b) = link(tls(impostor), tls(p1), PartyId::P0, PartyId::P1, &cfg());
    let eb = b.err().expect("client must refuse").to_string();
    assert!(eb.contains("TLS: handshake with P0"), "{eb}");
    assert!(eb.contains(&format!("got {got}")), "{eb}");
    assert!(eb.contains("expected P0 "), "{eb}");
    assert!(a.is_err());
}

fn stranger_fp(s: &TlsSetup) -> String {
    s.my_fingerprint()
}

#[test]
fn plain_tcp_and_tls_do_not_mix() {
    let [p0, _, _] = TlsSetup::ephemeral().unwrap();
    let mut c = cfg();
    c.recv_timeout = Some(Duration::from_millis(500));
    let (a, b) = link(tls(p0), Security::Insecure, PartyId::P0, PartyId::P1, &c);
    assert!(a.is_err());
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
    let e = l
        .accept_all_with(PartyId::P0, &[PartyId::P1], &cfg(), &tls(p0), Some(SAFETY))
        .err()
        .expect("garbage must be refused");
    assert!(t.elapsed() < SAFETY, "took {:?}", t.elapsed());
    assert!(matches!(e, NetError::Tls(_)), "{e}");
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
    assert!(e.to_string().contains("no connection from D"), "{e}");
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
