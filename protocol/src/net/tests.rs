//! Tests of both transports (in process and TCP on 127.0.0.1).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::frame::FrameHeader;
use super::tcp::{self, Listener};
use super::*;

const SAFETY: Duration = Duration::from_secs(5);

type Pair = (Box<dyn Transport>, Box<dyn Transport>);

fn cfg(profile: &str) -> LinkConfig {
    LinkConfig {
        session: 0xC0FFEE,
        profile: NetProfile::parse(profile).unwrap(),
        max_frame: DEFAULT_MAX_FRAME,
        recv_timeout: Some(SAFETY),
    }
}

fn mem(cfg: &LinkConfig) -> Pair {
    mem_pair(PartyId::P0, PartyId::P1, cfg)
}

/// P0 listens, P1 connects; returns (P0's end, P1's end).
fn tcp_pair(cfg: &LinkConfig) -> Pair {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cfg.clone();
    let h = thread::spawn(move || tcp::connect(addr, PartyId::P1, PartyId::P0, &c, SAFETY));
    let p0 = l.accept(PartyId::P0, PartyId::P1, cfg).unwrap();
    let p1 = h.join().unwrap().unwrap();
    assert_eq!(p0.peer(), PartyId::P1);
    assert_eq!(p1.peer(), PartyId::P0);
    (Box::new(p0), p1)
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (seed.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
        .collect()
}

const SIZES: [usize; 3] = [0, 1, 1 << 20];

/// Both ends send `n` messages at once (so TCP writes cannot deadlock on full buffers),
/// then each receives and checks the other's, in order.
fn round_trip(make: fn(&LinkConfig) -> Pair, profile: &str, n: usize) {
    let (a, b) = make(&cfg(profile));
    let side = |mut t: Box<dyn Transport>, me: usize| {
        thread::spawn(move || {
            for i in 0..n {
                let len = SIZES[i % SIZES.len()];
                let msg = Message::new(i as u32, (me * 1000 + i) as u32, pattern(me * n + i, len));
                t.send(msg).unwrap();
            }
            let other = 1 - me;
            for i in 0..n {
                let m = t.recv().unwrap();
                assert_eq!(m.flight, i as u32, "messages out of order");
                assert_eq!(m.tag, (other * 1000 + i) as u32);
                assert_eq!(m.payload.len(), SIZES[i % SIZES.len()]);
                assert!(
                    m.payload == pattern(other * n + i, m.payload.len()),
                    "payload {i} corrupted"
                );
            }
            t.flush().unwrap();
            t
        })
    };
    let ha = side(a, 0);
    let hb = side(b, 1);
    let (a, b) = (ha.join().unwrap(), hb.join().unwrap());
    drop((a, b));
}

#[test]
fn mem_round_trip() {
    round_trip(mem, "none", 60);
}

#[test]
fn mem_round_trip_emulated() {
    round_trip(mem, "100gbps,10us", 30);
}

#[test]
fn tcp_round_trip() {
    round_trip(tcp_pair, "none", 60);
}

#[test]
fn tcp_round_trip_emulated() {
    round_trip(tcp_pair, "100gbps,10us", 30);
}

#[test]
fn tcp_listener_accepts_several_parties() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cfg("none");
    // The dealer connects first although P1 is listed first.
    let mk = |me: PartyId, delay: u64| {
        let c = c.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(delay));
            let mut t = tcp::connect(addr, me, PartyId::P0, &c, SAFETY).unwrap();
            t.send(Message::new(0, me.to_u8() as u32, vec![me.to_u8()]))
                .unwrap();
            let m = t.recv().unwrap();
            assert_eq!(m.payload, vec![9, me.to_u8()]);
        })
    };
    let hd = mk(PartyId::Dealer, 0);
    let h1 = mk(PartyId::P1, 100);
    let mut links = l
        .accept_all(PartyId::P0, &[PartyId::P1, PartyId::Dealer], &c)
        .unwrap();
    assert_eq!(links[0].peer(), PartyId::P1);
    assert_eq!(links[1].peer(), PartyId::Dealer);
    for t in links.iter_mut() {
        let m = t.recv().unwrap();
        assert_eq!(m.payload, vec![t.peer().to_u8()]);
        t.send(Message::new(1, 0, vec![9, t.peer().to_u8()]))
            .unwrap();
    }
    hd.join().unwrap();
    h1.join().unwrap();
}

#[test]
fn tcp_hello_session_mismatch_both_sides() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut c1 = cfg("none");
    c1.session = 1;
    let h = thread::spawn(move || tcp::connect(addr, PartyId::P1, PartyId::P0, &c1, SAFETY).err());
    let mut c2 = cfg("none");
    c2.session = 2;
    match l.accept(PartyId::P0, PartyId::P1, &c2) {
        Err(NetError::SessionMismatch { ours: 2, theirs: 1 }) => {}
        other => panic!("expected SessionMismatch, got {:?}", other.err()),
    }
    match h.join().unwrap() {
        Some(NetError::SessionMismatch { ours: 1, theirs: 2 }) => {}
        other => panic!("expected SessionMismatch, got {other:?}"),
    }
}

#[test]
fn tcp_hello_party_mismatch() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cfg("none");
    let h =
        thread::spawn(move || tcp::connect(addr, PartyId::Dealer, PartyId::P1, &c, SAFETY).err());
    match l.accept(PartyId::P0, PartyId::P1, &cfg("none")) {
        Err(NetError::PartyMismatch {
            expected: PartyId::P1,
            got: PartyId::Dealer,
        }) => {}
        other => panic!("expected PartyMismatch, got {:?}", other.err()),
    }
    // The dealer expected P1 but reached P0.
    match h.join().unwrap() {
        Some(NetError::PartyMismatch {
            expected: PartyId::P1,
            got: PartyId::P0,
        }) => {}
        other => panic!("expected PartyMismatch, got {other:?}"),
    }
}

/// A hand-driven client: connects, sends `hello` (raw bytes), reads the server's hello.
fn raw_client(addr: SocketAddr, hello: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s.write_all(hello).unwrap();
    s
}

fn read_server_hello(s: &mut TcpStream) -> FrameHeader {
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b).unwrap();
    FrameHeader::decode(&b)
}

/// Listener plus a raw client that has completed the hello exchange as P1.
fn raw_session(c: &LinkConfig) -> (Box<dyn Transport>, TcpStream) {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let hello = FrameHeader::hello(c.session, PartyId::P1).encode();
    let mut s = raw_client(l.local_addr().unwrap(), &hello);
    let t = l.accept(PartyId::P0, PartyId::P1, c).unwrap();
    let h = read_server_hello(&mut s);
    assert_eq!(h.check(c.session, &[PartyId::P0]).unwrap(), PartyId::P0);
    assert_eq!((h.tag, h.len), (HELLO_TAG, 0));
    (Box::new(t), s)
}

#[test]
fn tcp_hello_version_mismatch() {
    let c = cfg("none");
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let mut h = FrameHeader::hello(c.session, PartyId::P1);
    h.version = PROTOCOL_VERSION + 1;
    let _s = raw_client(l.local_addr().unwrap(), &h.encode());
    match l.accept(PartyId::P0, PartyId::P1, &c) {
        Err(NetError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        }) => {
            assert_eq!(theirs, PROTOCOL_VERSION + 1)
        }
        other => panic!("expected VersionMismatch, got {:?}", other.err()),
    }
}

#[test]
fn tcp_hello_bad_magic() {
    let c = cfg("none");
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let _s = raw_client(
        l.local_addr().unwrap(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    match l.accept(PartyId::P0, PartyId::P1, &c) {
        Err(NetError::BadMagic { got, .. }) => assert_eq!(&got, b"GET "),
        other => panic!("expected BadMagic, got {:?}", other.err()),
    }
}

#[test]
fn tcp_hello_not_a_hello() {
    let c = cfg("none");
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let h = FrameHeader::new(c.session, PartyId::P1, 0, 5, 0);
    let _s = raw_client(l.local_addr().unwrap(), &h.encode());
    assert!(matches!(
        l.accept(PartyId::P0, PartyId::P1, &c),
        Err(NetError::BadHello(_))
    ));
}

#[test]
fn tcp_truncated_header() {
    let (mut t, mut s) = raw_session(&cfg("none"));
    let h = FrameHeader::new(0xC0FFEE, PartyId::P1, 1, 2, 10).encode();
    s.write_all(&h[..HEADER_LEN / 2]).unwrap();
    drop(s);
    match t.recv() {
        Err(NetError::Truncated {
            part: "header",
            got,
            expected: HEADER_LEN,
        }) => {
            assert_eq!(got, HEADER_LEN / 2)
        }
        other => panic!("expected Truncated header, got {other:?}"),
    }
    // The stream is poisoned: the same error again, no hang.
    assert!(matches!(t.recv(), Err(NetError::Truncated { .. })));
}

#[test]
fn tcp_truncated_payload() {
    let (mut t, mut s) = raw_session(&cfg("none"));
    // One whole frame first, then half of the next.
    let h = FrameHeader::new(0xC0FFEE, PartyId::P1, 1, 2, 3).encode();
    s.write_all(&h).unwrap();
    s.write_all(b"abc").unwrap();
    let h = FrameHeader::new(0xC0FFEE, PartyId::P1, 2, 2, 100).encode();
    s.write_all(&h).unwrap();
    s.write_all(&[7u8; 50]).unwrap();
    drop(s);
    assert_eq!(t.recv().unwrap(), Message::new(1, 2, b"abc".to_vec()));
    match t.recv() {
        Err(NetError::Truncated {
            part: "payload",
            got: 50,
            expected: 100,
        }) => {}
        other => panic!("expected Truncated payload, got {other:?}"),
    }
}

#[test]
fn tcp_frame_too_long_refused_before_reading() {
    let mut c = cfg("none");
    c.max_frame = 1024;
    let (mut t, mut s) = raw_session(&c);
    // Announce 2 KiB but send nothing and keep the socket open: reading the payload would
    // time out after SAFETY; refusing the header must be immediate.
    let h = FrameHeader::new(c.session, PartyId::P1, 1, 2, 2048).encode();
    s.write_all(&h).unwrap();
    let t0 = Instant::now();
    match t.recv() {
        Err(NetError::FrameTooLong {
            len: 2048,
            max: 1024,
        }) => {}
        other => panic!("expected FrameTooLong, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
    drop(s);

    // A 4 GiB announcement against the default limit.
    let (mut t, mut s) = raw_session(&cfg("none"));
    s.write_all(&FrameHeader::new(0xC0FFEE, PartyId::P1, 1, 2, u32::MAX).encode())
        .unwrap();
    match t.recv() {
        Err(NetError::FrameTooLong {
            len,
            max: DEFAULT_MAX_FRAME,
        }) => {
            assert_eq!(len, u32::MAX as usize)
        }
        other => panic!("expected FrameTooLong, got {other:?}"),
    }
}

#[test]
fn tcp_wrong_session_or_party_mid_stream() {
    let (mut t, mut s) = raw_session(&cfg("none"));
    s.write_all(&FrameHeader::new(0xBAD, PartyId::P1, 1, 2, 0).encode())
        .unwrap();
    assert!(matches!(
        t.recv(),
        Err(NetError::SessionMismatch {
            ours: 0xC0FFEE,
            theirs: 0xBAD
        })
    ));
    let (mut t, mut s) = raw_session(&cfg("none"));
    s.write_all(&FrameHeader::new(0xC0FFEE, PartyId::Dealer, 1, 2, 0).encode())
        .unwrap();
    assert!(matches!(
        t.recv(),
        Err(NetError::PartyMismatch {
            expected: PartyId::P1,
            got: PartyId::Dealer
        })
    ));
}

#[test]
fn tcp_timeout_mid_frame_resumes() {
    let mut c = cfg("none");
    c.recv_timeout = Some(Duration::from_millis(100));
    let (mut t, mut s) = raw_session(&c);
    let h = FrameHeader::new(c.session, PartyId::P1, 3, 4, 6).encode();
    s.write_all(&h[..10]).unwrap();
    assert!(matches!(t.recv(), Err(NetError::Timeout)));
    s.write_all(&h[10..]).unwrap();
    s.write_all(b"hel").unwrap();
    assert!(matches!(t.recv(), Err(NetError::Timeout)));
    s.write_all(b"lo!").unwrap();
    assert_eq!(t.recv().unwrap(), Message::new(3, 4, b"hello!".to_vec()));
}

fn recv_timeout(make: fn(&LinkConfig) -> Pair) {
    let mut c = cfg("none");
    c.recv_timeout = Some(Duration::from_millis(150));
    let (mut a, mut b) = make(&c);
    let t0 = Instant::now();
    assert!(matches!(a.recv(), Err(NetError::Timeout)));
    let el = t0.elapsed();
    assert!(el >= Duration::from_millis(140), "timed out after {el:?}");
    assert!(el < Duration::from_secs(2), "timed out after {el:?}");
    // Still usable.
    b.send(Message::new(1, 1, vec![1, 2, 3])).unwrap();
    assert_eq!(a.recv().unwrap().payload, vec![1, 2, 3]);
}

#[test]
fn mem_recv_timeout() {
    recv_timeout(mem);
}

#[test]
fn tcp_recv_timeout() {
    recv_timeout(tcp_pair);
}

/// The peer sends a few messages and is dropped at once: they all arrive (even on an
/// emulated link, where they are still queued at the drop), then `PeerClosed`.
fn peer_dropped(make: fn(&LinkConfig) -> Pair, profile: &str) {
    let (mut a, mut b) = make(&cfg(profile));
    for i in 0..3 {
        b.send(Message::new(i, 0, vec![i as u8; 1000])).unwrap();
    }
    drop(b);
    for i in 0..3 {
        assert_eq!(a.recv().unwrap().flight, i);
    }
    assert!(matches!(a.recv(), Err(NetError::PeerClosed)));
    assert!(matches!(a.recv(), Err(NetError::PeerClosed)));
}

#[test]
fn mem_peer_dropped() {
    peer_dropped(mem, "none");
    peer_dropped(mem, "10mbps,20ms");
}

#[test]
fn tcp_peer_dropped() {
    peer_dropped(tcp_pair, "none");
    peer_dropped(tcp_pair, "10mbps,20ms");
}

/// With no receive timeout, a blocked `recv` returns `PeerClosed` when the peer goes.
fn blocked_recv_sees_close(make: fn(&LinkConfig) -> Pair) {
    let mut c = cfg("none");
    c.recv_timeout = None;
    let (mut a, b) = make(&c);
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _ = tx.send(a.recv());
    });
    thread::sleep(Duration::from_millis(100));
    drop(b);
    match rx.recv_timeout(SAFETY) {
        Ok(Err(NetError::PeerClosed)) => {}
        Ok(other) => panic!("expected PeerClosed, got {other:?}"),
        Err(_) => panic!("recv still blocked after the peer was dropped"),
    }
    h.join().unwrap();
}

#[test]
fn mem_blocked_recv_sees_close() {
    blocked_recv_sees_close(mem);
}

#[test]
fn tcp_blocked_recv_sees_close() {
    blocked_recv_sees_close(tcp_pair);
}

/// Sending to a dropped peer fails on a later send/flush/recv, not silently.
fn send_to_dropped_peer(make: fn(&LinkConfig) -> Pair, profile: &str) {
    let (mut a, b) = make(&cfg(profile));
    drop(b);
    let t0 = Instant::now();
    let err = loop {
        let r = a
            .send(Message::new(0, 0, vec![0; 4096]))
            .and_then(|_| a.flush());
        if let Err(e) = r {
            break e;
        }
        assert!(
            t0.elapsed() < SAFETY,
            "sending to a dropped peer never failed"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert!(matches!(err, NetError::PeerClosed), "got {err:?}");
    // Reported again, on recv too.
    assert!(a.send(Message::new(0, 0, vec![])).is_err());
    assert!(a.flush().is_err());
    assert!(a.recv().is_err());
}

#[test]
fn mem_send_to_dropped_peer() {
    send_to_dropped_peer(mem, "none");
    send_to_dropped_peer(mem, "1gbps,1ms");
}

#[test]
fn tcp_send_to_dropped_peer() {
    send_to_dropped_peer(tcp_pair, "none");
    send_to_dropped_peer(tcp_pair, "1gbps,1ms");
}

#[test]
fn oversized_send_refused() {
    let mut c = cfg("none");
    c.max_frame = 100;
    for (mut a, _b) in [mem(&c), tcp_pair(&c)] {
        assert!(matches!(
            a.send(Message::new(0, 0, vec![0; 101])),
            Err(NetError::FrameTooLong { len: 101, max: 100 })
        ));
        a.send(Message::new(0, 0, vec![0; 100])).unwrap();
    }
}

/// "10mbps,20ms": 125 000 bytes take 100 ms on the wire plus 10 ms one way; `send`
/// returns at once; a second message queues behind the first; `flush` waits.
fn emulated_bandwidth(make: fn(&LinkConfig) -> Pair) {
    let c = cfg("10mbps,20ms");
    let (mut a, mut b) = make(&c);
    let t0 = Instant::now();
    a.send(Message::new(0, 0, vec![1; 125_000])).unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "send blocked for {:?}",
        t0.elapsed()
    );
    assert_eq!(b.recv().unwrap().payload.len(), 125_000);
    let el = t0.elapsed();
    assert!(el >= Duration::from_millis(110), "delivered after {el:?}");
    assert!(el < Duration::from_secs(1), "delivered after {el:?}");

    // Pacing: two half-size messages back to back; the second waits for the first.
    let t0 = Instant::now();
    a.send(Message::new(1, 0, vec![2; 62_500])).unwrap();
    a.send(Message::new(2, 0, vec![3; 62_500])).unwrap();
    let m1 = b.recv().unwrap();
    let e1 = t0.elapsed();
    let m2 = b.recv().unwrap();
    let e2 = t0.elapsed();
    assert_eq!((m1.flight, m2.flight), (1, 2));
    assert!(e1 >= Duration::from_millis(60), "first after {e1:?}");
    assert!(e2 >= Duration::from_millis(110), "second after {e2:?}");
    assert!(e2 < Duration::from_secs(1), "second after {e2:?}");

    // flush returns only once the message has been handed over.
    let t0 = Instant::now();
    a.send(Message::new(3, 0, vec![4; 125_000])).unwrap();
    a.flush().unwrap();
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(110),
        "flush returned after {el:?}"
    );
    assert_eq!(b.recv().unwrap().flight, 3);
}

#[test]
fn mem_emulated_bandwidth() {
    emulated_bandwidth(mem);
}

#[test]
fn tcp_emulated_bandwidth() {
    emulated_bandwidth(tcp_pair);
}

/// 10 sequential ping-pongs over a 20 ms RTT take at least 200 ms.
fn emulated_ping_pong(make: fn(&LinkConfig) -> Pair) {
    let (mut a, mut b) = make(&cfg("10mbps,20ms"));
    let echo = thread::spawn(move || {
        for _ in 0..10 {
            let m = b.recv().unwrap();
            b.send(Message::new(m.flight + 1, m.tag, m.payload))
                .unwrap();
        }
        b
    });
    let t0 = Instant::now();
    for i in 0..10u32 {
        a.send(Message::new(2 * i, 7, vec![i as u8; 8])).unwrap();
        let m = a.recv().unwrap();
        assert_eq!((m.flight, m.payload), (2 * i + 1, vec![i as u8; 8]));
    }
    let el = t0.elapsed();
    assert!(el >= Duration::from_millis(200), "10 round trips in {el:?}");
    assert!(el < Duration::from_secs(2), "10 round trips in {el:?}");
    let _b = echo.join().unwrap();
}

#[test]
fn mem_emulated_ping_pong() {
    emulated_ping_pong(mem);
}

#[test]
fn tcp_emulated_ping_pong() {
    emulated_ping_pong(tcp_pair);
}

#[test]
fn unemulated_ping_pong_is_fast() {
    for make in [mem as fn(&LinkConfig) -> Pair, tcp_pair] {
        let (mut a, mut b) = make(&cfg("none"));
        let t0 = Instant::now();
        for i in 0..10u32 {
            a.send(Message::new(i, 0, vec![1])).unwrap();
            let m = b.recv().unwrap();
            b.send(m).unwrap();
            a.recv().unwrap();
        }
        // Generous, for loaded machines: no emulated or accidental delay.
        let el = t0.elapsed();
        assert!(el < Duration::from_millis(400), "10 round trips in {el:?}");
    }
}

#[test]
fn connect_gives_up_after_timeout() {
    // Bind then drop to get a port that is (very likely) closed.
    let addr = Listener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let t0 = Instant::now();
    let r = tcp::connect(
        addr,
        PartyId::P1,
        PartyId::P0,
        &cfg("none"),
        Duration::from_millis(200),
    );
    assert!(matches!(r, Err(NetError::Connect { .. })), "{:?}", r.err());
    assert!(t0.elapsed() >= Duration::from_millis(190));
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn connect_retries_until_listener_appears() {
    let addr = Listener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = cfg("none");
    let h = thread::spawn(move || tcp::connect(addr, PartyId::P1, PartyId::P0, &c, SAFETY));
    thread::sleep(Duration::from_millis(150));
    let l = Listener::bind(addr).unwrap();
    let mut p0 = l.accept(PartyId::P0, PartyId::P1, &cfg("none")).unwrap();
    let mut p1 = h.join().unwrap().unwrap();
    p1.send(Message::new(0, 0, vec![5])).unwrap();
    assert_eq!(p0.recv().unwrap().payload, vec![5]);
}

#[test]
fn party_ids_round_trip() {
    for p in PartyId::ALL {
        assert_eq!(PartyId::from_u8(p.to_u8()), Some(p));
        assert_eq!(p.to_string().parse::<PartyId>(), Ok(p));
    }
    assert_eq!(PartyId::from_u8(3), None);
    assert_eq!("dealer".parse::<PartyId>(), Ok(PartyId::Dealer));
    assert!("p2".parse::<PartyId>().is_err());
}

/// Sends `bytes` on `s` one at a time, one every `every`, until they run out, a write
/// fails or the returned function is called (which also waits for the thread).
pub(super) fn trickle(s: TcpStream, bytes: Vec<u8>, every: Duration) -> Box<dyn FnOnce() + Send> {
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let h = thread::spawn(move || {
        for b in bytes {
            if halt.load(Ordering::SeqCst) || (&s).write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(every);
        }
    });
    Box::new(move || {
        stop.store(true, Ordering::SeqCst);
        let _ = h.join();
    })
}

#[test]
fn stray_connections_do_not_end_a_plain_tcp_wait() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cfg("none");
    let cc = c.clone();
    let h = thread::spawn(move || {
        // a port scan: connects and closes
        drop(TcpStream::connect(addr).unwrap());
        // a hello of another session
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&FrameHeader::hello(cc.session + 1, PartyId::P1).encode())
            .unwrap();
        drop(s);
        // a party not expected (its own check passes: it did reach P0)
        let mut p0 = tcp::connect(addr, PartyId::P0, PartyId::P0, &cc, SAFETY).unwrap();
        assert!(p0.recv().is_err(), "P0 must be dropped");
        let mut ends = vec![];
        for me in [PartyId::P1, PartyId::P1, PartyId::Dealer] {
            let mut t = tcp::connect(addr, me, PartyId::P0, &cc, SAFETY).unwrap();
            t.send(Message::new(1, 7, vec![me.to_u8()])).unwrap();
            t.flush().unwrap();
            ends.push(t);
        }
        assert!(ends[1].recv().is_err(), "the second P1 must be dropped");
        [
            ends.remove(2).recv().unwrap(),
            ends.remove(0).recv().unwrap(),
        ]
    });
    let t0 = Instant::now();
    let mut links = l
        .accept_all_with(
            PartyId::P0,
            &[PartyId::P1, PartyId::Dealer],
            &c,
            &tcp::Security::Insecure,
            Some(SAFETY),
        )
        .unwrap();
    assert!(t0.elapsed() < SAFETY, "took {:?}", t0.elapsed());
    for (t, want) in links.iter_mut().zip([PartyId::P1, PartyId::Dealer]) {
        assert_eq!(t.peer(), want);
        assert_eq!(t.recv().unwrap(), Message::new(1, 7, vec![want.to_u8()]));
        t.send(Message::new(2, 8, vec![9, want.to_u8()])).unwrap();
    }
    let [from_d, from_p1] = h.join().unwrap();
    assert_eq!(from_d.payload, vec![9, PartyId::Dealer.to_u8()]);
    assert_eq!(from_p1.payload, vec![9, PartyId::P1.to_u8()]);
}

#[test]
fn a_hello_trickled_byte_by_byte_is_refused_at_the_handshake_deadline() {
    let c = LinkConfig {
        recv_timeout: Some(Duration::from_millis(300)),
        ..cfg("none")
    };
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    // a valid hello, each byte well within the per-read timeout: 2.7 s in all
    let hello = FrameHeader::hello(c.session, PartyId::P1).encode().to_vec();
    let stop = trickle(s, hello, Duration::from_millis(100));
    let wait = Duration::from_secs(1);
    let t0 = Instant::now();
    let r = l.accept_all_with(
        PartyId::P0,
        &[PartyId::P1],
        &c,
        &tcp::Security::Insecure,
        Some(wait),
    );
    let took = t0.elapsed();
    stop();
    let e = r.err().expect("the trickle must be cut").to_string();
    assert_eq!(
        e,
        "no connection from P1 within 1s; 1 connection refused meanwhile, the last: \
         handshake with P1: not completed within 300ms"
    );
    assert!(took >= wait, "gave up after {took:?}");
    assert!(took < wait + Duration::from_millis(1500), "took {took:?}");
}

#[test]
fn a_hello_trickled_to_a_connecting_party_is_cut_at_the_connect_deadline() {
    let c = cfg("none");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hello = FrameHeader::hello(c.session, PartyId::P0).encode().to_vec();
    let h = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        trickle(s, hello, Duration::from_millis(100))
    });
    let t0 = Instant::now();
    let r = tcp::connect_tcp(
        addr,
        PartyId::P1,
        PartyId::P0,
        &c,
        Duration::from_millis(300),
    );
    let took = t0.elapsed();
    h.join().unwrap()();
    let e = r.err().expect("the trickle must be cut").to_string();
    assert_eq!(e, "handshake with P0: not completed within 300ms");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn the_wait_is_one_deadline_for_all_connections_not_one_each() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    // a stray connection every 200 ms for 4 s: a wait per connection would never end
    let h = thread::spawn(move || {
        let t0 = Instant::now();
        while !halt.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(4) {
            drop(TcpStream::connect(addr).unwrap());
            thread::sleep(Duration::from_millis(200));
        }
    });
    let wait = Duration::from_secs(1);
    let t0 = Instant::now();
    let r = l.accept_all_with(
        PartyId::P0,
        &[PartyId::P1, PartyId::Dealer],
        &cfg("none"),
        &tcp::Security::Insecure,
        Some(wait),
    );
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    let e = r.err().expect("no peer connected").to_string();
    assert!(took >= wait, "gave up after {took:?}");
    assert!(
        took < wait + Duration::from_millis(1500),
        "took {took:?}: {e}"
    );
    assert!(
        e.starts_with("no connection from P1 and D within 1s; "),
        "{e}"
    );
    assert!(
        e.contains("connections refused meanwhile, the last: peer closed the connection"),
        "{e}"
    );
}
