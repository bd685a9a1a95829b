//! Running a program as the three parties: registration, the offline phase (dealer
//! material and the parties' offline pass) and the online phase, with timings. The same
//! driver runs a party in its own process (TCP) or three parties as threads (in-process
//! channels or loopback TCP).

use crate::account::{Accounting, OpKind, Phase, NO_LAYER};
use crate::engine::{Engine, Role};
use crate::error::{ProtocolError, Result};
use crate::net::{LinkConfig, PartyId, Transcripts};
use crate::registry::PrivateModel;
use crate::seed::DealerSeeds;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A program the three parties (and the plaintext reference) run.
pub trait Program: Sync {
    type Output: Send;
    /// Register P0's private tensors (same order in every role).
    fn register(&self, e: &mut Engine) -> Result<()>;
    /// The computation: run once by the dealer, twice by P0 and P1 (offline, online), once
    /// by the plaintext reference. Returns the output where the role learns it.
    fn run(&self, e: &mut Engine) -> Result<Option<Self::Output>>;
    /// The public parameters to agree on before any protocol message (see
    /// [`crate::handshake`]); `None`: no handshake.
    fn handshake(&self) -> Option<&crate::handshake::Handshake> {
        None
    }
}

/// What one party measured.
#[derive(Debug)]
pub struct PartyReport<T> {
    pub role: Role,
    pub output: Option<T>,
    pub register_time: Duration,
    pub offline_time: Duration,
    pub online_time: Duration,
    pub rounds: u32,
    pub acct: Accounting,
}

/// Run `prog` as this engine's role. The engine's links must be connected: P0 to P1 and D,
/// P1 to P0 and D, D to P0 and P1.
pub fn drive<P: Program>(e: &mut Engine, prog: &P) -> Result<PartyReport<P::Output>> {
    // The kernels' pool and, when the backend may use it, the GPU adapter are set up
    // before any timed phase.
    kernels::backend::prepare();
    let t = Instant::now();
    e.start_phase(Phase::Register)?;
    if let Some(h) = prog.handshake() {
        crate::handshake::exchange(e, h)?;
    }
    e.exchange_seeds()?;
    prog.register(e)?;
    e.ctx.flush()?;
    let register_time = t.elapsed();

    let t = Instant::now();
    e.start_phase(Phase::Offline)?;
    let mut output = prog.run(e)?;
    e.ctx.flush()?;
    // P0 and P1 agree that both finished the offline pass before the clock starts.
    barrier(e)?;
    let offline_time = t.elapsed();

    let mut online_time = Duration::ZERO;
    if matches!(e.role, Role::P0 | Role::P1) {
        let t = Instant::now();
        e.start_phase(Phase::Online)?;
        output = prog.run(e)?;
        e.ctx.flush()?;
        online_time = t.elapsed();
        e.ctx.close_label();
        e.free_retired();
        e.ctx.restart_clock();
        if e.prep_left() != 0 {
            return Err(ProtocolError::Internal(format!(
                "{} offline results left unused",
                e.prep_left()
            )));
        }
    }
    e.ctx.close_label();
    Ok(PartyReport {
        role: e.role,
        output,
        register_time,
        offline_time,
        online_time,
        rounds: e.ctx.depth,
        acct: e.ctx.acct.clone(),
    })
}

/// P0 <-> P1 handshake between the phases (counted as offline traffic, not online).
fn barrier(e: &mut Engine) -> Result<()> {
    e.ctx.label(Phase::Offline, NO_LAYER, OpKind::Other);
    const TAG: u32 = u32::MAX - 1;
    match e.role {
        Role::P0 => {
            e.ctx.send(PartyId::P1, TAG, vec![])?;
            e.ctx.recv(PartyId::P1, TAG)?;
        }
        Role::P1 => {
            e.ctx.recv(PartyId::P0, TAG)?;
            e.ctx.send(PartyId::P0, TAG, vec![])?;
        }
        _ => {}
    }
    Ok(())
}

/// The three parties' reports of one in-process run.
pub struct LocalRun<T> {
    pub p0: PartyReport<T>,
    pub p1: PartyReport<T>,
    pub dealer: PartyReport<T>,
}

impl<T> LocalRun<T> {
    /// All parties' accounting merged.
    pub fn accounting(&self) -> Accounting {
        let mut a = self.p0.acct.clone();
        a.merge(&self.p1.acct);
        a.merge(&self.dealer.acct);
        a
    }
    pub fn rounds(&self) -> u32 {
        self.p0.rounds.max(self.p1.rounds)
    }
    pub fn online_time(&self) -> Duration {
        self.p0.online_time.max(self.p1.online_time)
    }
    pub fn offline_time(&self) -> Duration {
        self.p0
            .offline_time
            .max(self.p1.offline_time)
            .max(self.dealer.offline_time)
    }
}

/// How the parties of a local run are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalTransport {
    /// In-process channels.
    Mem,
    /// TCP over loopback, real sockets and framing, no TLS (benchmarks, tests).
    Tcp,
    /// TCP over loopback secured by TLS 1.3, with certificates made in memory for the run
    /// (so that timings include TLS).
    TcpTls,
}

/// Settings of a local run.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub link: LinkConfig,
    pub transport: LocalTransport,
    pub seeds: DealerSeeds,
    pub lut_mode: crate::engine::LutMode,
    pub truncation: crate::engine::Truncation,
    /// Spill P0's and P1's offline results to files in this directory.
    pub spill: Option<std::path::PathBuf>,
}

/// Run `prog` as P0, P1 and D on three threads.
pub fn run_local<P: Program>(
    cfg: &LocalConfig,
    model: Arc<PrivateModel>,
    prog: &P,
) -> Result<LocalRun<P::Output>> {
    run_local_with(cfg, model, prog, None)
}

/// [`run_local`] with every link tapped: `record` gets a copy of every message each party
/// receives (sender, flight, tag, payload), for the transcript tests. Same messages, same
/// result as an untapped run.
pub fn run_local_recorded<P: Program>(
    cfg: &LocalConfig,
    model: Arc<PrivateModel>,
    prog: &P,
    record: &Transcripts,
) -> Result<LocalRun<P::Output>> {
    run_local_with(cfg, model, prog, Some(record))
}

fn run_local_with<P: Program>(
    cfg: &LocalConfig,
    model: Arc<PrivateModel>,
    prog: &P,
    record: Option<&Transcripts>,
) -> Result<LocalRun<P::Output>> {
    let mut p0 = Engine::p0(model);
    let mut p1 = Engine::p1();
    let mut d = Engine::dealer(cfg.seeds.clone());
    for e in [&mut p0, &mut p1, &mut d] {
        e.set_lut_mode(cfg.lut_mode);
        e.set_truncation(cfg.truncation);
    }
    if let Some(dir) = &cfg.spill {
        p0.spill_to(dir, cfg.link.session)?;
        p1.spill_to(dir, cfg.link.session)?;
    }
    connect_local(cfg, &mut p0, &mut p1, &mut d, record)?;
    // The kernels' pool sizes itself from the cores this process may use: build it before
    // any thread is pinned (a pinned thread would make it see one core).
    kernels::backend::prepare();
    let pins = pin_plan();
    // Each engine moves into its thread, so a party that fails (or panics) drops its links
    // at once and its peers see a closed link instead of waiting forever.
    let (r0, r1, rd) = std::thread::scope(|s| {
        let go = |mut e: Engine, i: usize| {
            if let Some(cores) = &pins {
                core_affinity::set_for_current(cores[i % cores.len()]);
            }
            drive(&mut e, prog)
        };
        let h0 = s.spawn(move || go(p0, 0));
        let h1 = s.spawn(move || go(p1, 1));
        let hd = s.spawn(move || go(d, 2));
        let j = |h: std::thread::ScopedJoinHandle<'_, Result<PartyReport<P::Output>>>| {
            h.join()
                .unwrap_or_else(|_| Err(ProtocolError::Internal("party thread panicked".into())))
        };
        (j(h0), j(h1), j(hd))
    });
    match (r0, r1, rd) {
        (Ok(p0), Ok(p1), Ok(dealer)) => Ok(LocalRun { p0, p1, dealer }),
        (a, b, c) => {
            // the root cause: a party that failed first makes the others see a closed link
            let errs: Vec<ProtocolError> =
                [a.err(), b.err(), c.err()].into_iter().flatten().collect();
            let closed = |e: &ProtocolError| {
                matches!(
                    e,
                    ProtocolError::Net(crate::net::NetError::PeerClosed)
                        | ProtocolError::Link {
                            error: crate::net::NetError::PeerClosed,
                            ..
                        }
                )
            };
            let mut errs = errs.into_iter();
            let first = errs.next().expect("at least one party failed");
            if !closed(&first) {
                return Err(first);
            }
            Err(errs.find(|e| !closed(e)).unwrap_or(first))
        }
    }
}

/// The cores to pin the party threads of a local run to (P0, P1, dealer in turn), when
/// `HARNESS_PIN=1` asks for it; `None` (no pinning) by default.
///
/// Pinning is opt-in because it does not pay here: the three party threads mostly wait
/// on each other, the heavy work runs in the kernels' rayon pool (one worker per core),
/// and on a 2-core machine P0, P1 and the dealer share the cores anyway; pinning P0 and P1
/// to different cores only keeps the scheduler from moving a party next to the pool
/// worker that does its work. Measured on the 2-core development machine: no gain (see
/// docs/design.md).
fn pin_plan() -> Option<Vec<core_affinity::CoreId>> {
    let on = std::env::var("HARNESS_PIN").is_ok_and(|v| v == "1" || v == "true");
    if !on {
        return None;
    }
    core_affinity::get_core_ids().filter(|c| !c.is_empty())
}

fn connect_local(
    cfg: &LocalConfig,
    p0: &mut Engine,
    p1: &mut Engine,
    d: &mut Engine,
    record: Option<&Transcripts>,
) -> Result<()> {
    use crate::net::{mem_pair, tcp};
    let pairs = [
        (PartyId::P0, PartyId::P1),
        (PartyId::P0, PartyId::Dealer),
        (PartyId::P1, PartyId::Dealer),
    ];
    let setups = match cfg.transport {
        LocalTransport::TcpTls => Some(crate::net::tls::TlsSetup::ephemeral()?.map(Arc::new)),
        _ => None,
    };
    let security = |p: PartyId| match &setups {
        Some(s) => tcp::Security::Tls(s[p.to_u8() as usize].clone()),
        None => tcp::Security::Insecure,
    };
    for (a, b) in pairs {
        let (ea, eb) = match cfg.transport {
            LocalTransport::Mem => mem_pair(a, b, &cfg.link),
            LocalTransport::Tcp | LocalTransport::TcpTls => {
                let l = tcp::Listener::bind("127.0.0.1:0")?;
                let addr = l.local_addr()?;
                let link = cfg.link.clone();
                let sb = security(b);
                let h = std::thread::spawn(move || {
                    tcp::connect_with(addr, b, a, &link, Duration::from_secs(10), &sb)
                });
                let ea = l
                    .accept_all_with(
                        a,
                        &[b],
                        &cfg.link,
                        &security(a),
                        Some(Duration::from_secs(10)),
                    )
                    .map(|mut v| v.remove(0));
                let eb = h
                    .join()
                    .map_err(|_| ProtocolError::Internal("connect thread panicked".into()))?;
                (ea?, eb?)
            }
        };
        let mut put = |p: PartyId, t| {
            let t = match record {
                Some(r) => r.tap(p, t),
                None => t,
            };
            match p {
                PartyId::P0 => p0.ctx.connect(t),
                PartyId::P1 => p1.ctx.connect(t),
                PartyId::Dealer => d.ctx.connect(t),
            }
        };
        put(a, ea);
        put(b, eb);
    }
    Ok(())
}

/// Run `prog` as the plaintext reference; with `carry_seed` (the dealer's mask seed) its
/// table indices take the secure run's carries. `truncation` must be the secure run's
/// (exact truncation adds operations); with [`crate::Truncation::Exact`] the carries are
/// all zero and the seed changes nothing.
pub fn run_plain<P: Program>(
    model: Arc<PrivateModel>,
    carry_seed: Option<crate::seed::Seed>,
    truncation: crate::engine::Truncation,
    prog: &P,
) -> Result<(Option<P::Output>, crate::engine::PlainStats)> {
    let mut e = Engine::plain(model, carry_seed);
    e.set_truncation(truncation);
    e.start_phase(Phase::Register)?;
    prog.register(&mut e)?;
    e.start_phase(Phase::Online)?;
    let out = prog.run(&mut e)?;
    Ok((out, e.plain_stats.clone()))
}
