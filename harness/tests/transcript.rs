//! The threat model, tested on whole runs (docs/threat-model.md, "How each claim is
//! tested"): a small BERT (bert-tiny shapes, one encoder layer, pooler and classifier) runs
//! as the three parties over in-process links with every link tapped
//! (`session::run_local_recorded`), and what each party received is checked:
//!
//! (a) no plaintext secret of the other side appears in it, byte for byte, in any plausible
//!     encoding, and the scanner provably finds a secret that is planted;
//! (b) the distribution of what P0 receives from P1 does not depend on the client's input,
//!     and that of what P1 receives from P0 does not depend on the model: per byte
//!     position, chi-square tests over many runs with fresh dealer seeds, Bonferroni
//!     corrected to a stated false-alarm rate, and shown to flag leaky variants;
//! (c) the dealer's messages are bit for bit the same for the same dealer seed whatever the
//!     input and the model, and the dealer receives nothing in the protocol itself (these
//!     tests run the bare program; `harness bert` and `harness party` add a handshake,
//!     which D receives too: see docs/threat-model.md).
//!
//! All seeds are fixed, so the outcome is deterministic in CI; the false-alarm rates
//! below are what the tests would have with fresh seeds. `--nocapture` prints the figures
//! reported in results/reliability.md.

use harness::model;
use harness::program::{BertProgram, Tables};
use harness::quant::QuantConfig;
use harness::run::{prepare, ModelSource, Prepared, RunSpec};
use protocol::net::{LinkConfig, NetProfile, PartyId, Received, Transcripts};
use protocol::registry::QWeights;
use protocol::ring::{self, Ring};
use protocol::seed::{name_id, DealerSeeds};
use protocol::session::{self, LocalConfig, LocalTransport};
use protocol::stats::{chi2_critical, chi2_sf};
use protocol::{LutMode, Truncation};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Runs.

fn spec(seq: usize, model_seed: u64, input_seed: u64) -> RunSpec {
    RunSpec {
        model: ModelSource::Random("bert-tiny".into()),
        layers: Some(1),
        seq,
        batch: 1,
        quant: QuantConfig::parse("w1a4").expect("valid config"),
        net: NetProfile::none(),
        verify: false,
        model_seed,
        input_seed,
        ..RunSpec::default()
    }
}

fn program(p: &Prepared, with_input: bool) -> BertProgram<'static> {
    BertProgram {
        shapes: p.shapes.clone(),
        consts: p.consts.clone(),
        tables: Tables::new(&p.consts),
        input: with_input.then(|| p.input.clone()),
        progress: None,
    }
}

/// What each party received in one run (P0, P1, D), and P1's output.
struct Views {
    got: [Vec<Received>; 3],
    logits: Vec<i64>,
}

impl Views {
    fn of(&self, p: PartyId) -> &[Received] {
        &self.got[p.to_u8() as usize]
    }
}

/// One secure run of `p` with the dealer seeded by `master`, every link tapped.
fn run_recorded(p: &Prepared, master: u64, mode: LutMode, truncation: Truncation) -> Views {
    let prog = program(p, true);
    let mut link = LinkConfig::new(1, NetProfile::none());
    link.recv_timeout = Some(Duration::from_secs(60));
    let cfg = LocalConfig {
        link,
        transport: LocalTransport::Mem,
        seeds: DealerSeeds::from_master(master),
        lut_mode: mode,
        truncation,
        spill: None,
    };
    let rec = Transcripts::new();
    let res = session::run_local_recorded(&cfg, p.model.clone(), &prog, &rec).expect("secure run");
    Views {
        got: PartyId::ALL.map(|q| rec.take(q)),
        logits: res.p1.output.expect("P1 gets the logits"),
    }
}

// ---------------------------------------------------------------------------------------
// (a) Plaintext scan.

/// Needles must be at least this long ...
const NEEDLE_MIN: usize = 16;
/// ... and hold at least this many distinct byte values (see [`Needles::add`]).
const NEEDLE_DISTINCT: usize = 8;
/// A window of elements is extended up to this length to reach the distinctness rule.
const NEEDLE_MAX: usize = 64;

/// A hasher for the scan's 8-byte keys: one multiply (the keys are needles' first 8
/// bytes, not chosen by an adversary), so scanning tens of MB stays fast.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 32;
    }
}

/// Byte strings that must not appear in a view, by category, with an index on their first
/// 8 bytes.
#[derive(Default)]
struct Needles {
    cats: Vec<String>,
    items: Vec<(usize, Vec<u8>)>,
    skipped: HashMap<usize, usize>,
    index: HashMap<u64, Vec<usize>, BuildHasherDefault<WordHasher>>,
}

impl Needles {
    fn cat(&mut self, name: &str) -> usize {
        match self.cats.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                self.cats.push(name.to_string());
                self.cats.len() - 1
            }
        }
    }

    /// Needles from a tensor encoded element by element (`enc` gives an element's bytes).
    ///
    /// The rule that keeps chance matches negligible: the tensor is cut into consecutive,
    /// non-overlapping windows of elements; a window becomes a needle once its encoding is
    /// at least [`NEEDLE_MIN`] bytes long and holds at least [`NEEDLE_DISTINCT`] distinct
    /// byte values (it grows element by element up to [`NEEDLE_MAX`] bytes; a window that
    /// never gets there, such as a run of zeros or of one repeated small value, is skipped
    /// and counted). A uniform byte string matches a given 16-byte needle at a given offset
    /// with probability 2^-128, so over every offset of a few MB of transcript and a few
    /// hundred thousand needles the chance of a false alarm is below 2^-80; the
    /// distinctness rule keeps out the low-entropy strings (zero runs, packed small
    /// integers, repeated words) that structured, non-uniform parts of a transcript could
    /// hold by coincidence. Any leaked run of the tensor at least two windows long
    /// (at most 2 x 64 bytes plus an element) contains a whole window and is found.
    fn add<T: Copy>(&mut self, cat: &str, vals: &[T], enc: impl Fn(T) -> Vec<u8>) {
        let c = self.cat(cat);
        let mut cur: Vec<u8> = vec![];
        for &v in vals {
            cur.extend(enc(v));
            if cur.len() < NEEDLE_MIN {
                continue;
            }
            let mut seen = [false; 256];
            cur.iter().for_each(|&b| seen[b as usize] = true);
            if seen.iter().filter(|&&s| s).count() >= NEEDLE_DISTINCT {
                let key = u64::from_le_bytes(cur[..8].try_into().expect("8 bytes"));
                self.index.entry(key).or_default().push(self.items.len());
                self.items.push((c, std::mem::take(&mut cur)));
            } else if cur.len() >= NEEDLE_MAX {
                *self.skipped.entry(c).or_default() += 1;
                cur.clear();
            }
        }
    }

    /// Every occurrence of a needle in the payloads of `view`: (category, message, offset).
    fn scan(&self, view: &[Received]) -> Vec<(String, usize, usize)> {
        let mut hits = vec![];
        for (mi, m) in view.iter().enumerate() {
            let p = &m.payload;
            for off in 0..p.len().saturating_sub(7) {
                let key = u64::from_le_bytes(p[off..off + 8].try_into().expect("8 bytes"));
                let Some(ids) = self.index.get(&key) else {
                    continue;
                };
                for &i in ids {
                    let (c, n) = &self.items[i];
                    if p[off..].starts_with(n) {
                        hits.push((self.cats[*c].clone(), mi, off));
                    }
                }
            }
        }
        hits
    }

    fn count(&self, c: usize) -> usize {
        self.items.iter().filter(|(k, _)| *k == c).count()
    }
}

fn le<T: Ring>(v: T) -> Vec<u8> {
    let mut b = vec![];
    ring::encode(&[v], &mut b);
    b
}

/// An i64 as the ring encodings it could travel in: u64, u32 and u16 little endian, and
/// u64 / u32 big endian.
fn add_ints(n: &mut Needles, cat: &str, v: &[i64]) {
    n.add(cat, v, |x| le(x as u64));
    n.add(cat, v, |x| le(x as u32));
    n.add(cat, v, |x| le(x as u16));
    n.add(cat, v, |x| (x as u64).to_be_bytes().to_vec());
    n.add(cat, v, |x| (x as u32).to_be_bytes().to_vec());
}

fn add_floats(n: &mut Needles, cat: &str, v: &[f32]) {
    n.add(cat, v, |x| x.to_le_bytes().to_vec());
    n.add(cat, v, |x| (x as f64).to_le_bytes().to_vec());
}

/// P0's secrets: the integer model (effective weights in both rings the protocol uses,
/// signs, integer weights, scales, biases, private vectors) and the float weights of
/// every layer the run uses.
fn model_needles(p: &Prepared, n: &mut Needles) {
    let mut names: Vec<&String> = p.model.linears.keys().collect();
    names.sort();
    for name in names {
        let q = &p.model.linears[name];
        let eff32: Vec<u32> = q.effective();
        let eff64: Vec<u64> = q.effective();
        n.add("effective weights", &eff32, le);
        n.add("effective weights", &eff64, le);
        n.add("effective weights", &eff32, |x| x.to_be_bytes().to_vec());
        match &q.w {
            QWeights::Signs(s) => n.add("weights (signs, ints)", &s.words, le),
            QWeights::Int(w) => add_ints(n, "weights (signs, ints)", w),
        }
        add_ints(n, "scales and biases", &q.out_scale);
        add_ints(n, "scales and biases", &q.bias);
        if let Some(g) = &q.in_scale {
            add_ints(n, "scales and biases", g);
        }
    }
    let mut vnames: Vec<&String> = p.model.vectors.keys().collect();
    vnames.sort();
    for name in vnames {
        add_ints(n, "private vectors", &p.model.vectors[name]);
    }
    let w = &p.weights;
    let lin = |n: &mut Needles, l: &model::Linear| {
        add_floats(n, "float weights", &l.w);
        add_floats(n, "float weights", &l.b);
    };
    for lw in w.layers.iter().take(p.shapes.layers) {
        for l in [&lw.q, &lw.k, &lw.v, &lw.o, &lw.ffn1, &lw.ffn2] {
            lin(n, l);
        }
        for ln in [&lw.ln1, &lw.ln2] {
            add_floats(n, "float weights", &ln.gamma);
            add_floats(n, "float weights", &ln.beta);
        }
    }
    add_floats(n, "float weights", &w.emb.ln.gamma);
    add_floats(n, "float weights", &w.emb.ln.beta);
    for l in w.pooler.iter().chain(&w.classifier) {
        lin(n, l);
    }
}

/// Every entry of every public table, at its ring width: public, but a table (or its
/// rotation) in the clear in a transcript would mean an unmasked share.
fn table_needles(p: &Prepared, n: &mut Needles) {
    let c = &p.consts;
    let cat = "table entries";
    n.add(cat, &c.t_requant::<u32>(c.k_req()).entries, le);
    n.add(cat, &c.t_requant::<u64>(c.k_req()).entries, le);
    n.add(cat, &c.t_gelu().entries, le);
    n.add(cat, &c.t_tanh().entries, le);
    n.add(cat, &c.t_exp().entries, le);
    n.add(cat, &c.t_p().entries, le);
    n.add(cat, &c.t_rsqrt().entries, le);
    for i in 0..harness::quant::LN_WINDOWS {
        n.add(cat, &c.t_ln::<u32>(i).entries, le);
        n.add(cat, &c.t_ln::<u64>(i).entries, le);
    }
}

/// P1's secrets: its tokens, the float embedding it computes in the clear, and that
/// embedding in the residual encoding it inputs (y_res).
fn input_needles(p: &Prepared, n: &mut Needles) {
    let toks: Vec<i64> = p.tokens.iter().map(|&t| t as i64).collect();
    add_ints(n, "tokens", &toks);
    let y: Vec<i64> = p.input.y_res.iter().map(|&v| v as i64).collect();
    add_ints(n, "input activations (y_res)", &y);
    let emb = model::embed_normalized(&p.weights, &p.tokens, None).expect("embedding");
    add_floats(n, "input activations (float)", &emb);
}

/// A copy of the largest message of `view` (or of an empty one) with `needle` written
/// into it: what a leak would look like.
fn planted(view: &[Received], needle: &[u8], salt: usize) -> Vec<Received> {
    let mut m = view
        .iter()
        .max_by_key(|m| m.payload.len())
        .cloned()
        .unwrap_or(Received {
            from: PartyId::P0,
            flight: 0,
            tag: 0,
            payload: vec![],
        });
    if m.payload.len() < needle.len() {
        m.payload.extend_from_slice(needle);
    } else {
        let off = (salt * 7919) % (m.payload.len() - needle.len() + 1);
        m.payload[off..off + needle.len()].copy_from_slice(needle);
    }
    vec![m]
}

/// Scan a party's view; the needles are the other side's secrets. Also plants the first
/// needle of each category into a copy of the view and checks that the scan finds it.
fn scan_view(who: &str, view: &[Received], needles: &Needles) {
    let hits = needles.scan(view);
    assert!(
        hits.is_empty(),
        "{who} received plaintext secrets: {:?}",
        &hits[..hits.len().min(10)]
    );
    for (c, name) in needles.cats.iter().enumerate() {
        let (i, (_, needle)) = needles
            .items
            .iter()
            .enumerate()
            .find(|(_, (k, _))| *k == c)
            .unwrap_or_else(|| panic!("no needle of category {name}"));
        let leaky = planted(view, needle, i);
        let found = needles.scan(&leaky);
        assert!(
            found.iter().any(|(cat, _, _)| cat == name),
            "{who}: a planted {name} needle was not found"
        );
    }
}

fn bytes<'a>(msgs: impl IntoIterator<Item = &'a Received>) -> usize {
    msgs.into_iter().map(|m| m.payload.len()).sum()
}

#[test]
fn no_plaintext_secret_reaches_the_other_parties() {
    let p = prepare(&spec(8, 1, 2)).expect("prepare");
    let mut model = Needles::default();
    model_needles(&p, &mut model);
    table_needles(&p, &mut model);
    let mut input = Needles::default();
    input_needles(&p, &mut input);
    table_needles(&p, &mut input);
    for needles in [&model, &input] {
        for (c, name) in needles.cats.iter().enumerate() {
            let (k, s) = (needles.count(c), needles.skipped.get(&c).unwrap_or(&0));
            eprintln!("needles: {name}: {k} scanned, {s} low-entropy windows skipped");
            assert!(
                k > 0,
                "no needle of category {name}: the scan would be vacuous"
            );
        }
    }
    for (i, (mode, trunc)) in [
        (LutMode::Auto, Truncation::Stochastic),
        (LutMode::Rotated, Truncation::Stochastic),
        (LutMode::Dpf, Truncation::Stochastic),
        (LutMode::Auto, Truncation::Exact),
    ]
    .into_iter()
    .enumerate()
    {
        let v = run_recorded(&p, 100 + i as u64, mode, trunc);
        // the tapped run is the real protocol: same output as the plaintext model with the
        // same carries
        let prog = program(&p, true);
        let seeds = DealerSeeds::from_master(100 + i as u64);
        let (plain, _) =
            session::run_plain(p.model.clone(), Some(seeds.mask), trunc, &prog).unwrap();
        assert_eq!(
            Some(v.logits.clone()),
            plain,
            "{mode:?} {trunc:?}: tapped run != plaintext"
        );
        let (p0, p1, d) = (v.of(PartyId::P0), v.of(PartyId::P1), v.of(PartyId::Dealer));
        eprintln!(
            "{mode:?} {trunc:?}: scanned P0 {} B in {} messages, P1 {} B in {}, D {} B",
            bytes(p0),
            p0.len(),
            bytes(p1),
            p1.len(),
            bytes(d)
        );
        assert!(bytes(p0) > 0 && bytes(p1) > 0);
        scan_view("P1", p1, &model);
        scan_view("P0", p0, &input);
        scan_view("D", d, &model);
        scan_view("D", d, &input);
    }
}

// ---------------------------------------------------------------------------------------
// (b) Distribution tests.

/// Overall false-alarm rate of each distribution test (a family of per-position tests,
/// Bonferroni corrected).
const FAMILY_ALPHA: f64 = 1e-3;
/// Runs per sample (fresh dealer seed each run; at most 255: counts are bytes).
const RUNS: usize = 160;
/// Bins per test: a byte position is tested twice, on its high and on its low nibble
/// (16 values each), so a leak confined to either half of a byte (a mask missing its top
/// bit, a packed small value) shows up, and every bin expects RUNS / 16 = 10 counts per
/// sample.
const BINS: usize = 16;

/// The public shape of a view: per message, sender, flight, tag and length.
type Shape = Vec<(PartyId, u32, u32, usize)>;

fn shape(msgs: &[&Received]) -> Shape {
    msgs.iter()
        .map(|m| (m.from, m.flight, m.tag, m.payload.len()))
        .collect()
}

/// Per byte position of a view (its messages concatenated), the nibble histograms of two
/// samples and the bits that varied at all.
struct PosHist {
    len: usize,
    n: [usize; 2],
    /// Per sample, per position: 16 counts of the high nibble, then 16 of the low one.
    h: [Vec<u8>; 2],
    and: Vec<u8>,
    or: Vec<u8>,
}

impl PosHist {
    fn new(len: usize) -> Self {
        PosHist {
            len,
            n: [0, 0],
            h: [vec![0; len * 2 * BINS], vec![0; len * 2 * BINS]],
            and: vec![0xff; len],
            or: vec![0; len],
        }
    }

    fn add(&mut self, s: usize, bytes: impl Iterator<Item = u8>) {
        assert!(self.n[s] < 255, "at most 255 runs per sample");
        let mut k = 0;
        for (i, b) in bytes.enumerate() {
            let h = &mut self.h[s][i * 2 * BINS..(i + 1) * 2 * BINS];
            h[(b >> 4) as usize] += 1;
            h[BINS + (b & 15) as usize] += 1;
            self.and[i] &= b;
            self.or[i] |= b;
            k += 1;
        }
        assert_eq!(k, self.len, "views of different lengths");
        self.n[s] += 1;
    }

    /// The tests at position `i`, per nibble (high, low): the equality statistic and its
    /// df (2 x 16 contingency table, df = non-empty bins - 1; df 0 when both samples sit in
    /// one bin, a constant nibble), and the uniformity statistic of the pooled sample (df
    /// 15) where all four bits of the nibble varied over the runs (None for a nibble with
    /// a fixed bit: structure such as the unused top bits of packed index bits, whose
    /// equality between the samples is still tested).
    fn tests_at(&self, i: usize) -> [((f64, usize), Option<f64>); 2] {
        let (na, nb) = (self.n[0] as f64, self.n[1] as f64);
        let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
        let e = (na + nb) / BINS as f64;
        let varied = self.and[i] ^ self.or[i];
        [0usize, 1].map(|half| {
            let base = i * 2 * BINS + half * BINS;
            let a = &self.h[0][base..base + BINS];
            let b = &self.h[1][base..base + BINS];
            let (mut eq, mut bins, mut uni) = (0.0, 0usize, 0.0);
            for (&x, &y) in a.iter().zip(b) {
                let t = (x as u32 + y as u32) as f64;
                uni += (t - e) * (t - e) / e;
                if t == 0.0 {
                    continue;
                }
                bins += 1;
                let d = ka * x as f64 - kb * y as f64;
                eq += d * d / t;
            }
            let df = if na == nb {
                bins.saturating_sub(1)
            } else {
                bins
            };
            let bits = if half == 0 { varied >> 4 } else { varied & 15 };
            ((eq, df), (bits == 15).then_some(uni))
        })
    }
}

/// The outcome of one family of tests.
#[derive(Debug)]
struct Outcome {
    /// Byte positions tested.
    positions: usize,
    /// Tests of equality of the two samples' distributions (two per position, less
    /// constant nibbles).
    eq_tests: usize,
    /// Tests of uniformity (nibbles whose 4 bits all varied).
    uni_tests: usize,
    /// Positions with a bit that never changed (structure, the same in both samples).
    structured: usize,
    /// Tests past the Bonferroni threshold.
    flagged: usize,
    /// Smallest p-value of any test.
    min_p: f64,
    /// Fraction of tests with p < 0.01 (about 0.01 if the tests are calibrated).
    frac_1pct: f64,
}

/// The number of tests `evaluate` runs on `hist` (the Bonferroni denominator).
fn tests_in(hist: &PosHist) -> usize {
    (0..hist.len)
        .flat_map(|i| hist.tests_at(i))
        .map(|((_, df), uni)| usize::from(df > 0) + usize::from(uni.is_some()))
        .sum()
}

/// Run every test at the per-test level `alpha`.
fn evaluate(hist: &PosHist, alpha: f64) -> Outcome {
    let crit_at = |a: f64| -> Vec<f64> {
        (0..BINS)
            .map(|df| {
                if df == 0 {
                    f64::INFINITY
                } else {
                    chi2_critical(a, df as f64)
                }
            })
            .collect()
    };
    let (crit, c1) = (crit_at(alpha), crit_at(0.01));
    let mut o = Outcome {
        positions: hist.len,
        eq_tests: 0,
        uni_tests: 0,
        structured: 0,
        flagged: 0,
        min_p: 1.0,
        frac_1pct: 0.0,
    };
    let mut below = 0usize;
    // the largest statistic relative to its critical value, for the smallest p-value
    let mut worst: Option<(f64, usize, f64)> = None;
    let mut look = |stat: f64, df: usize, o: &mut Outcome| {
        if stat > crit[df] {
            o.flagged += 1;
        }
        if stat > c1[df] {
            below += 1;
        }
        let r = stat / crit[df];
        if worst.is_none_or(|(w, _, _)| r > w) {
            worst = Some((r, df, stat));
        }
    };
    for i in 0..hist.len {
        if hist.and[i] ^ hist.or[i] != 0xff {
            o.structured += 1;
        }
        for ((eq, df), uni) in hist.tests_at(i) {
            if df > 0 {
                o.eq_tests += 1;
                look(eq, df, &mut o);
            }
            if let Some(u) = uni {
                o.uni_tests += 1;
                look(u, BINS - 1, &mut o);
            }
        }
    }
    let tests = o.eq_tests + o.uni_tests;
    o.frac_1pct = below as f64 / tests.max(1) as f64;
    if let Some((_, df, stat)) = worst {
        o.min_p = chi2_sf(stat, df as f64);
    }
    o
}

/// The messages `to` received from `from` (all phases).
fn from_peer(v: &Views, to: PartyId, from: PartyId) -> Vec<&Received> {
    v.of(to).iter().filter(|m| m.from == from).collect()
}

/// A leaky variant of one message of a view, for the power check: the plaintext `x` that
/// a masked payload `hat = x + r` hides, encoded in its ring.
#[derive(Clone, Copy)]
enum Leak {
    /// The plaintext itself.
    Unmasked,
    /// x + r with r reduced mod 2^16 (a mask drawn in the wrong, smaller ring): the bits
    /// of x above bit 16 show, up to a carry. (A mask reduced to half of Z/2^64 would
    /// not be flagged, and rightly: the input's values are below 2^20, so x + (r mod 2^32)
    /// is within statistical distance 2^-12 of the same for another input.)
    NarrowMask,
}

fn leaky<R: Ring>(hat: &[u8], x: &[R], leak: Leak, sign: i64) -> Vec<u8> {
    let hat: Vec<R> = ring::decode_exact(hat, x.len(), PartyId::P0, "test").expect("decode");
    let low = R::from_u64(0xffff);
    let vals: Vec<R> = match leak {
        Leak::Unmasked => x.to_vec(),
        Leak::NarrowMask => hat
            .iter()
            .zip(x)
            .map(|(&h, &x)| {
                // hat = x + sign r; the same with r reduced mod 2^16
                if sign > 0 {
                    x.wadd(h.wsub(x).band(low))
                } else {
                    x.wsub(x.wsub(h).band(low))
                }
            })
            .collect(),
    };
    let mut out = vec![];
    ring::encode(&vals, &mut out);
    out
}

/// `p` with another client input (tokens from `input_seed`), same model and calibration.
fn other_input(p: &Prepared, input_seed: u64) -> Prepared {
    use rand::{Rng, SeedableRng};
    let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(input_seed);
    let vocab = p.weights.config.vocab as u32;
    let tokens: Vec<u32> = (0..p.tokens.len())
        .map(|_| g.gen_range(1000..vocab))
        .collect();
    assert_ne!(tokens, p.tokens);
    let input = harness::run::client_input(&p.weights, &p.consts, &tokens).expect("embed");
    Prepared {
        weights: p.weights.clone(),
        shapes: p.shapes.clone(),
        consts: p.consts.clone(),
        model: p.model.clone(),
        tokens,
        input,
        float_logits: vec![],
        model_name: p.model_name.clone(),
    }
}

/// What one distribution test saw and decided.
struct Family {
    main: Outcome,
    tests: usize,
    alpha: f64,
    leaks: Vec<(&'static str, Outcome)>,
}

/// Record `to`'s view of `from`'s messages over [`RUNS`] runs of each of the two prepared
/// runs (fresh dealer seeds), with the message `pick` selects also rewritten as each
/// [`Leak`] (the power check), and test per byte position.
fn distribution_test(
    samples: [&Prepared; 2],
    truncation: Truncation,
    to: PartyId,
    from: PartyId,
    pick: impl Fn(&Prepared, &[&Received]) -> (usize, Vec<Vec<u8>>),
) -> Family {
    let leaks = [
        ("unmasked", Leak::Unmasked),
        ("mask drawn in Z/2^16", Leak::NarrowMask),
    ];
    let mut hist: Option<PosHist> = None;
    let mut leak_hist: Vec<PosHist> = vec![];
    let mut first_shape: Option<Shape> = None;
    for (s, p) in samples.iter().enumerate() {
        for i in 0..RUNS {
            let master = 10_000 * (s as u64 + 1) + i as u64;
            let v = run_recorded(p, master, LutMode::Auto, truncation);
            let msgs = from_peer(&v, to, from);
            // sizes, order, tags and flights are public and the same in every run
            let sh = shape(&msgs);
            match &first_shape {
                None => first_shape = Some(sh),
                Some(f) => assert_eq!(f, &sh, "{to}'s view changed shape (run {master})"),
            }
            let h = hist.get_or_insert_with(|| PosHist::new(bytes(msgs.iter().copied())));
            h.add(s, msgs.iter().flat_map(|m| m.payload.iter().copied()));
            let (k, variants) = pick(p, &msgs);
            assert_eq!(variants.len(), leaks.len());
            if leak_hist.is_empty() {
                leak_hist = variants.iter().map(|l| PosHist::new(l.len())).collect();
            }
            assert_eq!(msgs[k].payload.len(), variants[0].len());
            for (lh, l) in leak_hist.iter_mut().zip(&variants) {
                lh.add(s, l.iter().copied());
            }
        }
    }
    let hist = hist.expect("runs");
    let tests = tests_in(&hist);
    let alpha = FAMILY_ALPHA / tests as f64;
    Family {
        main: evaluate(&hist, alpha),
        tests,
        alpha,
        leaks: leaks
            .iter()
            .zip(&leak_hist)
            .map(|((name, _), h)| (*name, evaluate(h, alpha)))
            .collect(),
    }
}

fn report_family(what: &str, f: &Family) {
    let m = &f.main;
    eprintln!(
        "{what}: {RUNS} + {RUNS} runs, {} byte positions ({} with a fixed bit), {} tests \
         ({} equality, {} uniformity), per-test alpha {:.2e} (family {FAMILY_ALPHA}), \
         flagged {}, smallest p {:.3e} (Bonferroni-adjusted {:.3}), p < 0.01 in {:.3} % of tests",
        m.positions,
        m.structured,
        f.tests,
        m.eq_tests,
        m.uni_tests,
        f.alpha,
        m.flagged,
        m.min_p,
        (m.min_p * f.tests as f64).min(1.0),
        100.0 * m.frac_1pct
    );
    for (name, o) in &f.leaks {
        eprintln!(
            "  leaky variant ({name}): {} of {} tests flagged, smallest p {:.3e}",
            o.flagged,
            o.eq_tests + o.uni_tests,
            o.min_p
        );
    }
}

fn check_family(what: &str, f: &Family) {
    report_family(what, f);
    let m = &f.main;
    assert_eq!(
        m.flagged, 0,
        "{what}: the view depends on the other party's secret"
    );
    // the tests are calibrated: under the null about 1 % of them fall below p = 0.01
    assert!(
        (0.004..0.025).contains(&m.frac_1pct),
        "{what}: {} of tests below p = 0.01: the chi-square approximation is off",
        m.frac_1pct
    );
    for (name, o) in &f.leaks {
        assert!(o.flagged > 0, "{what}: the {name} leak was not detected");
    }
}

#[test]
fn p0_view_does_not_depend_on_the_input() {
    p0_view_case(Truncation::Stochastic);
}

/// Exact truncation adds the carry openings (k bits each way per table layer) and, at P1,
/// the bits below each window: the same test over those views.
#[test]
fn p0_view_does_not_depend_on_the_input_exact() {
    p0_view_case(Truncation::Exact);
}

#[test]
fn p1_view_does_not_depend_on_the_model_exact() {
    p1_view_case(Truncation::Exact);
}

fn p0_view_case(truncation: Truncation) {
    let a = prepare(&spec(4, 1, 2)).expect("prepare");
    let b = other_input(&a, 3);
    // the power check rewrites P1's input message x^ = y_res + r (Z/2^64)
    let f = distribution_test([&a, &b], truncation, PartyId::P0, PartyId::P1, |p, msgs| {
        let k = msgs
            .iter()
            .position(|m| m.flight > 0)
            .expect("an online message");
        let x: Vec<u64> = p.input.y_res.clone();
        assert_eq!(msgs[k].payload.len(), x.len() * 8, "the input message");
        let v = [Leak::Unmasked, Leak::NarrowMask].map(|l| leaky(&msgs[k].payload, &x, l, 1));
        (k, v.to_vec())
    });
    check_family(
        &format!("P0's view of P1 (inputs A vs B, same model, {truncation:?} truncation)"),
        &f,
    );
}

#[test]
fn p1_view_does_not_depend_on_the_model() {
    p1_view_case(Truncation::Stochastic);
}

fn p1_view_case(truncation: Truncation) {
    let x = prepare(&spec(4, 1, 2)).expect("prepare");
    let y = prepare(&spec(4, 7, 2)).expect("prepare");
    assert_eq!(x.tokens, y.tokens, "same input");
    assert_ne!(x.weights.layers[0].q.w, y.weights.layers[0].q.w);
    // the power check rewrites the registration of L0.q: E = M - A (Z/2^32)
    let f = distribution_test([&x, &y], truncation, PartyId::P1, PartyId::P0, |p, msgs| {
        let tag = name_id("L0.q") as u32;
        let k = msgs
            .iter()
            .position(|m| m.tag == tag && m.flight == 0)
            .expect("the registration of L0.q");
        let m: Vec<u32> = p.model.linears["L0.q"].effective();
        let v = [Leak::Unmasked, Leak::NarrowMask].map(|l| leaky(&msgs[k].payload, &m, l, -1));
        (k, v.to_vec())
    });
    check_family(
        &format!("P1's view of P0 (models X vs Y, same input, {truncation:?} truncation)"),
        &f,
    );
}

// ---------------------------------------------------------------------------------------
// (c) The dealer.

#[test]
fn dealer_messages_depend_only_on_the_dealer_seed() {
    let a = prepare(&spec(4, 1, 2)).expect("prepare");
    let b = other_input(&a, 3);
    let y = prepare(&spec(4, 7, 2)).expect("prepare");
    assert_ne!(a.input.y_res, b.input.y_res);
    for (mode, trunc) in [
        (LutMode::Auto, Truncation::Stochastic),
        (LutMode::Rotated, Truncation::Stochastic),
        (LutMode::Dpf, Truncation::Stochastic),
        (LutMode::Auto, Truncation::Exact),
    ] {
        let dealt = |p: &Prepared, master: u64| {
            let v = run_recorded(p, master, mode, trunc);
            assert!(
                v.of(PartyId::Dealer).is_empty(),
                "the dealer received {} messages",
                v.of(PartyId::Dealer).len()
            );
            let of = |to| -> Vec<Received> {
                v.of(to)
                    .iter()
                    .filter(|m| m.from == PartyId::Dealer)
                    .cloned()
                    .collect()
            };
            (of(PartyId::P0), of(PartyId::P1))
        };
        let base = dealt(&a, 77);
        assert!(!base.0.is_empty() && !base.1.is_empty());
        let n = base.0.len() + base.1.len();
        let size: usize = base.0.iter().chain(&base.1).map(|m| m.payload.len()).sum();
        eprintln!(
            "{mode:?} {trunc:?}: dealer sent {n} messages, {size} bytes: compared bit for bit"
        );
        assert!(
            dealt(&b, 77) == base,
            "{mode:?} {trunc:?}: dealer messages changed with the input"
        );
        assert!(
            dealt(&y, 77) == base,
            "{mode:?} {trunc:?}: dealer messages changed with the model"
        );
        // and they are not constant: another dealer seed gives other messages
        let other = dealt(&a, 78);
        assert!(
            other != base,
            "{mode:?} {trunc:?}: dealer messages ignore the seed"
        );
        assert_eq!(
            shape(&other.0.iter().chain(&other.1).collect::<Vec<_>>()),
            shape(&base.0.iter().chain(&base.1).collect::<Vec<_>>()),
            "{mode:?} {trunc:?}: the dealer's message sizes depend on its seed"
        );
    }
}
