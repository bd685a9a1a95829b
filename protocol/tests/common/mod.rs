//! Shared helpers of the protocol crate's integration tests: a closure-based test
//! [`Program`], the secure-vs-plaintext check, ring helpers, and a recording transport for
//! the view tests.
#![allow(dead_code)]

use protocol::engine::PlainStats;
use protocol::net::{mem_pair, LinkConfig, Message, NetError, Transport};
use protocol::ring::{self, Ring};
use protocol::seed::DealerSeeds;
use protocol::session::{self, LocalConfig, LocalRun, LocalTransport, PartyReport, Program};
use protocol::{Additive, Engine, LutMode, Masked, PartyId, PrivateModel, Result, Reveal, Role};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a test program returns where its role learns something: signed values.
pub type Out = Option<Vec<i64>>;

/// A test program made of two closures.
pub struct Prog<F, G> {
    pub reg: F,
    pub run: G,
}

pub fn prog<F, G>(reg: F, run: G) -> Prog<F, G>
where
    F: Fn(&mut Engine) -> Result<()> + Sync,
    G: Fn(&mut Engine) -> Result<Out> + Sync,
{
    Prog { reg, run }
}

impl<F, G> Program for Prog<F, G>
where
    F: Fn(&mut Engine) -> Result<()> + Sync,
    G: Fn(&mut Engine) -> Result<Out> + Sync,
{
    type Output = Vec<i64>;
    fn register(&self, e: &mut Engine) -> Result<()> {
        (self.reg)(e)
    }
    fn run(&self, e: &mut Engine) -> Result<Out> {
        (self.run)(e)
    }
}

/// Registration closure for programs without private tensors.
pub fn no_reg(_: &mut Engine) -> Result<()> {
    Ok(())
}

pub fn model() -> Arc<PrivateModel> {
    Arc::new(PrivateModel::default())
}

pub fn cfg(master: u64, mode: LutMode, transport: LocalTransport) -> LocalConfig {
    LocalConfig {
        // a party that fails leaves the others waiting in `run_local` (see
        // views::run_local_returns_when_one_party_fails): time out instead of hanging
        link: LinkConfig {
            recv_timeout: Some(std::time::Duration::from_secs(30)),
            ..LinkConfig::default()
        },
        transport,
        seeds: DealerSeeds::from_master(master),
        lut_mode: mode,
        truncation: protocol::Truncation::Stochastic,
        spill: None,
    }
}

pub fn mem_cfg(master: u64) -> LocalConfig {
    cfg(master, LutMode::Auto, LocalTransport::Mem)
}

/// One secure run and the two plaintext references.
pub struct Checked {
    /// P1's output of the secure run.
    pub secure: Vec<i64>,
    /// P0's output of the secure run (where the program returns one).
    pub p0: Option<Vec<i64>>,
    /// The plaintext reference with the secure run's carries (== `secure` followed by
    /// `p0`, asserted).
    pub plain: Vec<i64>,
    pub stats: PlainStats,
    /// The plaintext reference with deterministic rounding (no carries).
    pub det: Vec<i64>,
    pub det_stats: PlainStats,
    pub run: LocalRun<Vec<i64>>,
}

/// Run `p` securely (three parties) and as the plaintext reference with and without the
/// dealer's carries; asserts secure == plain-with-carries bit for bit.
pub fn check<P: Program<Output = Vec<i64>>>(
    model: &Arc<PrivateModel>,
    p: &P,
    cfg: &LocalConfig,
) -> Checked {
    let run = session::run_local(cfg, model.clone(), p).expect("secure run failed");
    let secure = run.p1.output.clone().expect("P1 learns the output");
    assert!(run.dealer.output.is_none(), "the dealer learnt an output");
    let (plain, stats) = session::run_plain(model.clone(), Some(cfg.seeds.mask), cfg.truncation, p)
        .expect("plain run");
    let plain = plain.expect("plain output");
    // the plaintext reference returns what P1 learns followed by what P0 learns
    let got: Vec<i64> = secure
        .iter()
        .chain(run.p0.output.iter().flatten())
        .copied()
        .collect();
    assert_eq!(
        got.len(),
        plain.len(),
        "secure and plain outputs differ in length"
    );
    if let Some(i) = (0..got.len()).find(|&i| got[i] != plain[i]) {
        panic!(
            "secure != plain with carries at {i}: {} vs {} (of {}; P1 returned {})",
            got[i],
            plain[i],
            got.len(),
            secure.len()
        );
    }
    let (det, det_stats) =
        session::run_plain(model.clone(), None, cfg.truncation, p).expect("plain run (det)");
    Checked {
        secure,
        p0: run.p0.output.clone(),
        plain,
        stats,
        det: det.expect("det output"),
        det_stats,
        run,
    }
}

/// P1's input: the values at P1 and in the plaintext reference, None elsewhere.
pub fn input<R: Ring>(e: &mut Engine, x: &[R], shape: &[usize]) -> Result<Masked<R>> {
    let v = if matches!(e.role, Role::P1 | Role::Plain) {
        Some(x)
    } else {
        None
    };
    e.input_p1(v, shape)
}

/// Re-mask [[x]] with a fresh dealer mask (to_additive + open): both shares of the new
/// mask are nonzero.
pub fn remask<R: Ring>(e: &mut Engine, m: &Masked<R>, to: Reveal) -> Result<Masked<R>> {
    let a = e.to_additive(m)?;
    e.open(&a, to)
}

/// Reveal <x> to P1 as signed values.
pub fn reveal<R: Ring>(e: &mut Engine, a: &Additive<R>) -> Result<Out> {
    Ok(e.reveal_p1(a)?.map(|v| ring::to_i64s(&v)))
}

/// Reveal [[x]] to P1 as signed values.
pub fn reveal_m<R: Ring>(e: &mut Engine, m: &Masked<R>) -> Result<Out> {
    let a = e.to_additive(m)?;
    reveal(e, &a)
}

/// Concatenate outputs; None unless every part is Some (where the role learns them all).
pub fn cat(parts: Vec<Out>) -> Out {
    parts
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(|v| v.concat())
}

/// The public masked value x^ as this role sees it: x^ at P0/P1, x + r in the plaintext
/// reference run with carries (r = the dealer's mask).
pub fn public_hat<R: Ring>(e: &Engine, m: &Masked<R>) -> Option<Vec<i64>> {
    let h = m.hat.as_ref()?;
    if e.role == Role::Plain {
        let r = m.r.as_ref()?;
        Some(h.iter().zip(r).map(|(a, b)| a.wadd(*b).to_i64()).collect())
    } else {
        Some(ring::to_i64s(h))
    }
}

/// Signed representative of `v` in Z/2^R::BITS.
pub fn sig<R: Ring>(v: i128) -> i64 {
    R::from_u64(v as u64).to_i64()
}

/// Ring edge values: 0, 1, -1, 2, -2, min 2^(l-1), max 2^(l-1)-1, min+1, max-1.
pub fn edges<R: Ring>() -> Vec<R> {
    let half = 1i128 << (R::BITS - 1);
    [0, 1, -1, 2, -2, half, half - 1, half + 1, half - 2]
        .iter()
        .map(|&v| R::from_u64(v as u64))
        .collect()
}

/// A deterministic test RNG.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub fn random_ring<R: Ring>(rng: &mut impl rand::Rng, n: usize) -> Vec<R> {
    (0..n).map(|_| R::from_u64(rng.gen())).collect()
}

/// Random signed values in [-bound, bound] reduced into the ring.
pub fn random_small<R: Ring>(rng: &mut impl rand::Rng, n: usize, bound: i64) -> Vec<R> {
    (0..n)
        .map(|_| R::from_i64(rng.gen_range(-bound..=bound)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Recording transports and manual wiring of the three parties.

/// A received message's edit (truncation, tag change) applied before the engine sees it.
pub type Edit = Box<dyn FnMut(&mut Message) + Send>;

/// A [`Transport`] wrapper that records every message its owner receives (after `edit`).
pub struct Tap {
    inner: Box<dyn Transport>,
    log: Arc<Mutex<Vec<Message>>>,
    edit: Option<Edit>,
}

impl Transport for Tap {
    fn send(&mut self, msg: Message) -> std::result::Result<(), NetError> {
        self.inner.send(msg)
    }
    fn recv(&mut self) -> std::result::Result<Message, NetError> {
        let mut m = self.inner.recv()?;
        if let Some(f) = self.edit.as_mut() {
            f(&mut m);
        }
        self.log.lock().unwrap().push(m.clone());
        Ok(m)
    }
    fn peer(&self) -> PartyId {
        self.inner.peer()
    }
    fn flush(&mut self) -> std::result::Result<(), NetError> {
        self.inner.flush()
    }
}

/// What a tapped run returns: each party's result and what each party received, keyed by
/// (receiver, sender).
pub struct Tapped {
    pub p0: Result<PartyReport<Vec<i64>>>,
    pub p1: Result<PartyReport<Vec<i64>>>,
    pub dealer: Result<PartyReport<Vec<i64>>>,
    pub logs: HashMap<(PartyId, PartyId), Vec<Message>>,
}

impl Tapped {
    /// Messages `to` received from `from`.
    pub fn got(&self, to: PartyId, from: PartyId) -> &[Message] {
        self.logs.get(&(to, from)).map_or(&[], |v| v.as_slice())
    }
    /// Online messages (flight > 0) `to` received from `from`.
    pub fn online(&self, to: PartyId, from: PartyId) -> Vec<&Message> {
        self.got(to, from).iter().filter(|m| m.flight > 0).collect()
    }
}

/// Run `p` as the three parties over in-process links wrapped in [`Tap`]s. `edits` modify
/// what (receiver, sender) receives. Each engine is moved into its thread and dropped when
/// its run ends, so a failing party closes its links and its peers are not left waiting.
pub fn run_tapped<P: Program<Output = Vec<i64>>>(
    model: Arc<PrivateModel>,
    p: &P,
    seeds: DealerSeeds,
    mode: LutMode,
    link: &LinkConfig,
    mut edits: HashMap<(PartyId, PartyId), Edit>,
) -> Tapped {
    let mut p0 = Engine::p0(model);
    let mut p1 = Engine::p1();
    let mut d = Engine::dealer(seeds);
    for e in [&mut p0, &mut p1, &mut d] {
        e.set_lut_mode(mode);
    }
    let mut logs = HashMap::new();
    let pairs = [
        (PartyId::P0, PartyId::P1),
        (PartyId::P0, PartyId::Dealer),
        (PartyId::P1, PartyId::Dealer),
    ];
    for (a, b) in pairs {
        let (ea, eb) = mem_pair(a, b, link);
        for (me, peer, t) in [(a, b, ea), (b, a, eb)] {
            let log = Arc::new(Mutex::new(Vec::new()));
            logs.insert((me, peer), log.clone());
            let tap: Box<dyn Transport> = Box::new(Tap {
                inner: t,
                log,
                edit: edits.remove(&(me, peer)),
            });
            match me {
                PartyId::P0 => p0.ctx.connect(tap),
                PartyId::P1 => p1.ctx.connect(tap),
                PartyId::Dealer => d.ctx.connect(tap),
            }
        }
    }
    let go = |mut e: Engine| {
        let r = session::drive(&mut e, p);
        drop(e);
        r
    };
    let (r0, r1, rd) = std::thread::scope(|s| {
        let h0 = s.spawn(move || go(p0));
        let h1 = s.spawn(move || go(p1));
        let hd = s.spawn(move || go(d));
        (
            h0.join().expect("P0 panicked"),
            h1.join().expect("P1 panicked"),
            hd.join().expect("dealer panicked"),
        )
    });
    let logs = logs
        .into_iter()
        .map(|(k, v)| (k, std::mem::take(&mut *v.lock().unwrap())))
        .collect();
    Tapped {
        p0: r0,
        p1: r1,
        dealer: rd,
        logs,
    }
}

// ---------------------------------------------------------------------------------------
// Statistics.

// (used by views.rs, not by every test binary that includes this module)
#[allow(unused_imports)]
pub use protocol::stats::{chi2_sf, chi2_two_sample};

/// Histogram of `f(v)` over 256 bins.
pub fn hist256(vals: impl IntoIterator<Item = u8>) -> Vec<u64> {
    let mut h = vec![0u64; 256];
    for v in vals {
        h[v as usize] += 1;
    }
    h
}

/// Little-endian words of a payload (`w` bytes each).
pub fn words(payload: &[u8], w: usize) -> impl Iterator<Item = &[u8]> {
    payload.chunks_exact(w)
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The default LocalTransport set the chain test runs over.
pub const TRANSPORTS: [LocalTransport; 2] = [LocalTransport::Mem, LocalTransport::Tcp];
