//! Faults: three parties of a small run (bert-tiny, one layer, 8 tokens) over loopback
//! TCP with TLS, one of which closes its links, stalls, or has its bytes corrupted at
//! points from the handshake to late online flights. Every other party must end with an
//! error (not a panic) that names a peer and the cause, within the configured timeout
//! plus a margin, and no party may leave a result file.
//!
//! Faults are injected by a wrapper transport (close or stall after N messages or at an
//! online flight) and, for garbage on the wire, by a byte-level proxy on the P1 -> P0
//! link; nothing here waits by sleeping except the stalled party itself.

use harness::party::{connect_links, run_on_links};
use harness::quant::QuantConfig;
use harness::run::{prepare, ModelSource, Prepared, RunSpec};
use protocol::net::tcp::{Listener, Security};
use protocol::net::tls::TlsSetup;
use protocol::net::{LinkConfig, Message, NetError, NetProfile, PartyId, Transport};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The parties' receive timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(1000);
/// How long after the fault the survivors must have ended.
const MARGIN: Duration = Duration::from_millis(1500);

fn spec() -> RunSpec {
    RunSpec {
        model: ModelSource::Random("bert-tiny".into()),
        layers: Some(1),
        seq: 8,
        batch: 1,
        quant: QuantConfig::parse("w1a4").unwrap(),
        net: NetProfile::none(),
        dealer_seed: Some(5),
        verify: false,
        timeout: TIMEOUT,
        ..RunSpec::default()
    }
}

fn prep() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| prepare(&spec()).unwrap())
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Close both links at the n-th message operation (send or receive) on a link.
    CloseAtMessage(usize),
    /// Close both links at the first message of this online flight or later.
    CloseAtFlight(u32),
    /// Stop at this flight: hold the links open without reading or writing, then close.
    StallAtFlight(u32),
}

/// Wraps one link of the faulty party.
struct FaultLink {
    inner: Option<Box<dyn Transport>>,
    peer: PartyId,
    fault: Option<Fault>,
    ops: usize,
    /// When the fault fired (shared by the party's links).
    fired: Arc<Mutex<Option<Instant>>>,
    /// Messages and the highest flight seen (for the fault-free baseline).
    seen: Arc<Mutex<(usize, u32)>>,
}

impl FaultLink {
    fn trips(&mut self, flight: u32) -> bool {
        self.ops += 1;
        let mut s = self.seen.lock().unwrap();
        s.0 += 1;
        s.1 = s.1.max(flight);
        match self.fault {
            None => false,
            Some(Fault::CloseAtMessage(n)) => self.ops > n,
            Some(Fault::CloseAtFlight(f) | Fault::StallAtFlight(f)) => flight >= f,
        }
    }

    fn fire(&mut self) -> NetError {
        self.fired.lock().unwrap().get_or_insert_with(Instant::now);
        if let Some(Fault::StallAtFlight(_)) = self.fault {
            // the peers must not wait for us: they time out long before we wake
            thread::sleep(TIMEOUT * 3);
        }
        self.inner = None;
        NetError::Closed
    }
}

impl Transport for FaultLink {
    fn send(&mut self, msg: Message) -> Result<(), NetError> {
        if self.inner.is_none() {
            return Err(NetError::Closed);
        }
        if self.trips(msg.flight) {
            return Err(self.fire());
        }
        self.inner.as_mut().ok_or(NetError::Closed)?.send(msg)
    }
    fn recv(&mut self) -> Result<Message, NetError> {
        let m = self.inner.as_mut().ok_or(NetError::Closed)?.recv()?;
        if self.trips(m.flight) {
            return Err(self.fire());
        }
        Ok(m)
    }
    fn peer(&self) -> PartyId {
        self.peer
    }
    fn flush(&mut self) -> Result<(), NetError> {
        self.inner.as_mut().ok_or(NetError::Closed)?.flush()
    }
}

#[derive(Clone, Copy, Debug)]
enum Wire {
    /// Flip 64 bytes of the P1 -> P0 stream from this offset on (TLS must notice).
    Corrupt(usize),
    /// Insert 64 garbage bytes at this offset.
    Insert(usize),
}

/// A one-connection proxy in front of `target`; returns its address and a counter of the
/// bytes it forwarded from the client to the server.
fn proxy(target: SocketAddr, wire: Option<Wire>) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else { return };
        let Ok(mut s) = TcpStream::connect(target) else {
            return;
        };
        let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let mut buf = vec![0u8; 16 << 10];
        let mut done = 0usize;
        loop {
            let k = match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => k,
            };
            let mut out = buf[..k].to_vec();
            match wire {
                Some(Wire::Corrupt(at)) if done + k > at && done < at + 64 => {
                    for (i, b) in out.iter_mut().enumerate() {
                        if (at..at + 64).contains(&(done + i)) {
                            *b ^= 0x5A;
                        }
                    }
                }
                Some(Wire::Insert(at)) if done <= at && at < done + k => {
                    out.splice(at - done..at - done, [0xA5u8; 64]);
                }
                _ => {}
            }
            done += k;
            n.store(done, Ordering::Relaxed);
            if s.write_all(&out).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    (addr, count)
}

struct Outcome {
    results: Vec<(PartyId, Result<(), String>, Instant)>,
    fired: Option<Instant>,
    seen: (usize, u32),
    proxied: usize,
    dir: PathBuf,
}

/// Runs the three parties, `faulty` with `fault` on its links, `wire` on P1 -> P0.
fn run(faulty: PartyId, fault: Option<Fault>, wire: Option<Wire>, tls: bool) -> Outcome {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qbert-faults-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = spec();
    let prep = prep();
    let secs = securities(tls);
    let l0 = Listener::bind("127.0.0.1:0").unwrap();
    let l1 = Listener::bind("127.0.0.1:0").unwrap();
    let a0 = l0.local_addr().unwrap();
    let a1 = l1.local_addr().unwrap().to_string();
    let (via, proxied) = proxy(a0, wire);
    let mut link = LinkConfig::new(spec.session, spec.net.clone());
    link.recv_timeout = Some(spec.timeout);
    let fired = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new((0, 0)));
    let mut listeners = [Some(l0), Some(l1), None];
    let results = thread::scope(|s| {
        let mut hs = vec![];
        for me in PartyId::ALL {
            let listener = listeners[me.to_u8() as usize].take();
            let sec = secs[me.to_u8() as usize].clone();
            // P1 reaches P0 through the proxy
            let p0 = if me == PartyId::P1 {
                via.to_string()
            } else {
                a0.to_string()
            };
            let (p1, link, spec, dir) = (a1.clone(), link.clone(), spec.clone(), dir.clone());
            let (fired, seen) = (fired.clone(), seen.clone());
            hs.push(s.spawn(move || {
                let r = (|| -> anyhow::Result<()> {
                    let mut links =
                        connect_links(me, &p0, &p1, listener, &link, &sec, Duration::from_secs(5))?;
                    if me == faulty {
                        links = links
                            .into_iter()
                            .map(|t| {
                                let peer = t.peer();
                                Box::new(FaultLink {
                                    inner: Some(t),
                                    peer,
                                    fault,
                                    ops: 0,
                                    fired: fired.clone(),
                                    seen: seen.clone(),
                                }) as Box<dyn Transport>
                            })
                            .collect();
                    }
                    let json = dir.join(format!("{me}.json"));
                    run_on_links(me, links, &spec, prep, sec.label(), Some(&json))?;
                    Ok(())
                })();
                (me, r.map_err(|e| format!("{e:#}")), Instant::now())
            }));
        }
        hs.into_iter()
            .map(|h| h.join().expect("a party panicked"))
            .collect::<Vec<_>>()
    });
    let fired = *fired.lock().unwrap();
    let seen = *seen.lock().unwrap();
    Outcome {
        results,
        fired,
        seen,
        proxied: proxied.load(Ordering::Relaxed),
        dir,
    }
}

/// The three parties' link security, in the order P0, P1, D: fresh TLS material each
/// pinning the others, or plain TCP.
fn securities(tls: bool) -> Vec<Security> {
    if tls {
        TlsSetup::ephemeral()
            .unwrap()
            .into_iter()
            .map(|s| Security::Tls(Arc::new(s)))
            .collect()
    } else {
        vec![Security::Insecure; 3]
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The fault-free run: every party succeeds and writes its report; (messages on the
/// dealer's links, last online flight, bytes P1 sent to P0).
fn baseline() -> (usize, u32, usize) {
    static B: OnceLock<(usize, u32, usize)> = OnceLock::new();
    *B.get_or_init(|| {
        let o = run(PartyId::Dealer, None, None, true);
        for (p, r, _) in &o.results {
            assert!(r.is_ok(), "{p}: {r:?}");
        }
        let mut f = files_in(&o.dir);
        f.sort();
        assert_eq!(f, vec!["D.json", "P0.json", "P1.json"]);
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(o.dir.join("P1.json")).unwrap()).unwrap();
        assert_eq!(j["transport"], "tcp-tls");
        let _ = std::fs::remove_dir_all(&o.dir);
        // flights come from P0's and P1's online traffic: measure them on P1
        let o1 = run(PartyId::P1, None, None, true);
        assert!(o1.results.iter().all(|(_, r, _)| r.is_ok()));
        let _ = std::fs::remove_dir_all(&o1.dir);
        (o.seen.0, o1.seen.1, o1.proxied)
    })
}

/// Every party fails without panicking; survivors within TIMEOUT + MARGIN of the fault,
/// naming a peer and a cause (at least one names `faulty`); no result file anywhere.
fn check(o: &Outcome, faulty: PartyId, causes: &[&str]) {
    let fired = o.fired.expect("the fault must have fired");
    let mut names_faulty = false;
    for (p, r, end) in &o.results {
        let e = r.as_ref().err().unwrap_or_else(|| panic!("{p} succeeded"));
        eprintln!("{p}: {e}");
        if *p == faulty {
            continue;
        }
        let took = end.saturating_duration_since(fired);
        assert!(
            took < TIMEOUT + MARGIN,
            "{p} ended {took:?} after the fault: {e}"
        );
        assert!(
            e.contains("link with") || e.contains("handshake with"),
            "{p}: error names no peer: {e}"
        );
        assert!(
            causes.iter().any(|c| e.contains(c)),
            "{p}: unexpected cause: {e}"
        );
        names_faulty |= e.contains(&format!("with {faulty}"));
    }
    assert!(names_faulty, "no survivor names {faulty}: {:?}", o.results);
    assert_eq!(files_in(&o.dir), Vec::<String>::new(), "result files left");
    let _ = std::fs::remove_dir_all(&o.dir);
}

const CLOSED: &[&str] = &["peer closed the connection", "closed inside a frame"];

#[test]
fn a_clean_run_over_tls_writes_every_report() {
    let (dealer_msgs, flights, bytes) = baseline();
    assert!(dealer_msgs > 10 && flights > 4 && bytes > 10_000);
}

#[test]
fn a_party_closing_during_the_handshake() {
    let o = run(PartyId::P1, Some(Fault::CloseAtMessage(0)), None, true);
    check(&o, PartyId::P1, CLOSED);
}

#[test]
fn the_dealer_closing_during_the_offline_phase() {
    let (dealer_msgs, _, _) = baseline();
    // per link: the dealer's messages are split over its two links
    let at = dealer_msgs / 4;
    let o = run(PartyId::Dealer, Some(Fault::CloseAtMessage(at)), None, true);
    check(&o, PartyId::Dealer, CLOSED);
}

#[test]
fn p0_closing_at_an_early_and_a_late_online_flight() {
    let (_, flights, _) = baseline();
    for f in [2, flights - 1] {
        let o = run(PartyId::P0, Some(Fault::CloseAtFlight(f)), None, true);
        check(&o, PartyId::P0, CLOSED);
    }
}

#[test]
fn p1_stalling_online_makes_the_others_time_out() {
    let (_, flights, _) = baseline();
    let o = run(
        PartyId::P1,
        Some(Fault::StallAtFlight(flights / 2)),
        None,
        true,
    );
    let e = o.results[0].1.as_ref().expect_err("P0 must fail").clone();
    assert!(
        e.contains("link with P1: timed out waiting for data"),
        "{e}"
    );
    // the dealer, waiting for the others' counters, then sees P0 go away
    check(
        &o,
        PartyId::P1,
        &["timed out waiting for data", "peer closed the connection"],
    );
}

#[test]
fn garbage_on_the_wire_is_a_tls_error_naming_the_sender() {
    let (_, _, bytes) = baseline();
    // inside the TLS handshake, and in the middle of the run
    for at in [600, bytes / 2] {
        let o = run(PartyId::P1, None, Some(Wire::Corrupt(at)), true);
        // the proxy corrupts what P1 sends: P0 must blame P1 and TLS
        assert!(o.proxied > at, "the run ended before the corruption");
        let p0 = &o.results[0];
        let e = p0.1.as_ref().expect_err("P0 must fail");
        eprintln!("corrupt at {at}: P0: {e}");
        assert!(e.contains("with P1") && e.contains("TLS"), "{e}");
        assert!(o.results.iter().all(|(_, r, _)| r.is_err()));
        assert_eq!(files_in(&o.dir), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&o.dir);
    }
}

#[test]
fn garbage_inserted_in_a_frame_over_plain_tcp_is_refused() {
    let (_, _, bytes) = baseline();
    let o = run(PartyId::P1, None, Some(Wire::Insert(bytes / 2)), false);
    let e = o.results[0].1.as_ref().expect_err("P0 must fail");
    eprintln!("insert: P0: {e}");
    // misaligned frames (bad magic, a huge length) or a malformed message, from P1
    assert!(e.contains("P1"), "{e}");
    assert!(o.results.iter().all(|(_, r, _)| r.is_err()));
    assert_eq!(files_in(&o.dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&o.dir);
}

/// Runs the three parties with their own specs (plain TCP: the handshake is what is
/// tested); returns their errors.
fn run_specs(specs: [RunSpec; 3]) -> Vec<(PartyId, Result<(), String>)> {
    run_specs_over(specs, false)
        .into_iter()
        .map(|(p, r)| (p, r.map(|_| ())))
        .collect()
}

/// Three parties, each with its own spec, over loopback TCP (TLS when `tls`).
fn run_specs_over(
    specs: [RunSpec; 3],
    tls: bool,
) -> Vec<(PartyId, Result<harness::report::RunReport, String>)> {
    let preps: Vec<Prepared> = specs.iter().map(|s| prepare(s).unwrap()).collect();
    let secs = securities(tls);
    let l0 = Listener::bind("127.0.0.1:0").unwrap();
    let l1 = Listener::bind("127.0.0.1:0").unwrap();
    let a0 = l0.local_addr().unwrap().to_string();
    let a1 = l1.local_addr().unwrap().to_string();
    let mut listeners = [Some(l0), Some(l1), None];
    thread::scope(|s| {
        let hs: Vec<_> = PartyId::ALL
            .into_iter()
            .map(|me| {
                let i = me.to_u8() as usize;
                let listener = listeners[i].take();
                let (spec, prep, a0, a1, sec) = (&specs[i], &preps[i], &a0, &a1, &secs[i]);
                s.spawn(move || {
                    let mut link = LinkConfig::new(spec.session, spec.net.clone());
                    link.recv_timeout = Some(spec.timeout);
                    let r = connect_links(me, a0, a1, listener, &link, sec, Duration::from_secs(5))
                        .and_then(|links| run_on_links(me, links, spec, prep, sec.label(), None));
                    (me, r.map_err(|e| format!("{e:#}")))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn the_handshake_names_each_differing_field_on_both_sides() {
    type Change = fn(&mut RunSpec);
    let cases: [(&str, Change, &str, &str); 7] = [
        ("sequence length", |s| s.seq = 6, "8", "6"),
        (
            "quantization",
            |s| s.quant = QuantConfig::parse("w1a8").unwrap(),
            "w1a4",
            "w1a8",
        ),
        ("layers", |s| s.layers = Some(2), "1", "2"),
        ("batch", |s| s.batch = 2, "1", "2"),
        (
            "table mode",
            |s| s.lut_mode = protocol::LutMode::Dpf,
            "auto",
            "dpf",
        ),
        (
            "truncation",
            |s| s.truncation = protocol::Truncation::Exact,
            "stochastic",
            "exact",
        ),
        ("model commitment", |s| s.model_seed = 99, "", ""),
    ];
    for (field, change, ours, theirs) in cases {
        let mut p1 = spec();
        change(&mut p1);
        let r = run_specs([spec(), p1, spec()]);
        for (p, r) in &r {
            let e = r
                .as_ref()
                .err()
                .unwrap_or_else(|| panic!("{p} passed: {field}"));
            eprintln!("{field}: {p}: {e}");
            match p {
                PartyId::P0 => assert!(
                    e.contains(&format!("handshake with P1: {field} differs: here {ours}")),
                    "{e}"
                ),
                PartyId::P1 => assert!(
                    e.contains(&format!(
                        "handshake with P0: {field} differs: here {theirs}"
                    )) || e.contains(&format!("handshake with D: {field} differs: here {theirs}")),
                    "{e}"
                ),
                PartyId::Dealer => {}
            }
            if !ours.is_empty() {
                let pair = if *p == PartyId::P1 {
                    format!("here {theirs}, peer {ours}")
                } else {
                    format!("here {ours}, peer {theirs}")
                };
                assert!(*p == PartyId::Dealer || e.contains(&pair), "{e}");
            }
        }
    }
}

#[test]
fn a_peer_of_another_session_is_refused_before_any_protocol_message() {
    // each role in turn belongs to another session, over plain TCP and over TLS: the
    // parties it links with refuse it at the hello, and it names the mismatch itself
    for tls in [false, true] {
        for odd in PartyId::ALL {
            let mut specs = [spec(), spec(), spec()];
            specs[odd.to_u8() as usize].session = 77;
            let r = run_specs_over(specs, tls);
            for (p, r) in &r {
                let e = r.as_ref().err().unwrap_or_else(|| panic!("{p} passed"));
                eprintln!("session (tls {tls}, odd {odd}): {p}: {e}");
                if *p == odd {
                    assert!(e.contains("session mismatch"), "{e}");
                }
            }
            // the party that accepted the odd one's connection refused it for its session
            // (P0 accepts P1 and D; P1 accepts D)
            let acceptor = if odd == PartyId::P0 {
                PartyId::P1
            } else {
                PartyId::P0
            };
            let e = r[acceptor.to_u8() as usize].1.as_ref().unwrap_err();
            assert!(
                odd == PartyId::P0 || e.contains("session mismatch"),
                "{acceptor}: {e}"
            );
        }
    }
}

#[test]
fn p1_verifies_a_seeded_run_over_links_and_a_wrong_seed_is_caught() {
    let mut s = spec();
    s.verify = true;
    s.session = 0x5eed_0001;
    let r = run_specs_over([s.clone(), s.clone(), s.clone()], true);
    for (p, r) in &r {
        let rep = r.as_ref().unwrap_or_else(|e| panic!("{p}: {e}"));
        let want = (*p == PartyId::P1).then_some(true);
        assert_eq!(rep.verified, want, "{p}");
    }
    // P1 verifies with another dealer seed than the dealer's: the masks differ, so the
    // plaintext rerun differs and the run is reported as not verified
    let mut wrong = s.clone();
    wrong.dealer_seed = Some(6);
    let r = run_specs_over([s.clone(), wrong, s], true);
    let rep = r[1].1.as_ref().unwrap();
    assert_eq!(rep.verified, Some(false));
}

#[test]
fn three_threads_over_loopback_tls_match_the_in_process_run() {
    use harness::run::run as run_local;
    use protocol::session::LocalTransport;
    let mut s = spec();
    s.verify = true;
    let mem = run_local(&s, None).unwrap();
    s.transport = LocalTransport::TcpTls;
    let tls = run_local(&s, None).unwrap();
    assert_eq!(tls.verified, Some(true));
    assert_eq!(tls.transport, "tcp-tls");
    assert!(tls.render().contains("transport tcp + TLS 1.3"));
    assert_eq!(mem.logits, tls.logits);
    assert_eq!(mem.online_bytes, tls.online_bytes);
    s.transport = LocalTransport::Tcp;
    let plain = run_local(&s, None).unwrap();
    assert_eq!(plain.transport, "tcp-insecure");
    assert!(plain.render().contains("transport tcp (INSECURE: no TLS)"));
}

#[test]
fn csv_rows_are_appended_by_replacing_the_whole_file() {
    let dir = std::env::temp_dir().join(format!("qbert-atomic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("runs.csv");
    let r = harness::report::RunReport {
        model: "bert-tiny".into(),
        transport: "tcp-tls".into(),
        ..Default::default()
    };
    r.append_csv(&path).unwrap();
    let one = std::fs::read_to_string(&path).unwrap();
    r.append_csv(&path).unwrap();
    let two = std::fs::read_to_string(&path).unwrap();
    assert!(two.starts_with(&one), "the old rows must stay as they were");
    assert_eq!(two.lines().count(), 3);
    assert_eq!(csv::Reader::from_path(&path).unwrap().records().count(), 2);
    r.write_json(&dir.join("r.json")).unwrap();
    let mut names = files_in(&dir);
    names.sort();
    assert_eq!(names, vec!["r.json", "runs.csv"], "temporary files left");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keygen_refuses_to_replace_a_key_pair_without_force() {
    let dir = std::env::temp_dir().join(format!("qbert-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keygen = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["keygen", "--role", "p1", "--out"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = keygen(&[]);
    assert!(ok, "{err}");
    let crt = std::fs::read(dir.join("p1.crt")).unwrap();
    let (ok, err) = keygen(&[]);
    assert!(
        !ok && err.contains("p1.key exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("p1.crt")).unwrap(),
        crt,
        "the pinned certificate changed"
    );
    let (ok, err) = keygen(&["--force"]);
    assert!(ok, "{err}");
    assert_ne!(std::fs::read(dir.join("p1.crt")).unwrap(), crt);
    let _ = std::fs::remove_dir_all(&dir);
}
