//! Security and robustness tests: what each party receives (captured by a recording
//! transport), statistically and byte for byte, and how malformed or out-of-step messages
//! are handled.
//!
//! The statistical tests use a two-sample chi-square test of homogeneity; a p-value below
//! [`ALPHA`] fails. The seeds are fixed, so a passing test passes deterministically; with
//! fresh seeds the false-alarm rate of each comparison would be ALPHA.

mod common;

use common::*;
use protocol::net::{LinkConfig, Message};
use protocol::registry::{QLinear, QWeights};
use protocol::ring::{self, Ring};
use protocol::seed::{name_id, DealerSeeds};
use protocol::session::{self, Program};
use protocol::{
    Engine, LutMode, PartyId, PrivateModel, ProtocolError, Reveal, Role, Table, Window,
};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fail a homogeneity test below this p-value.
const ALPHA: f64 = 1e-4;
/// Runs per sample in the statistical tests.
const RUNS: u64 = 200;

const ROWS: usize = 4;
const D_IN: usize = 16;
const D_OUT: usize = 16;
const WIN: Window = Window { j: 8, k: 8 };

fn lin_model(seed: u64) -> Arc<PrivateModel> {
    let mut g = rng(seed);
    let mut m = PrivateModel::default();
    m.linears.insert(
        "w".into(),
        QLinear {
            d_in: D_IN,
            d_out: D_OUT,
            w: QWeights::Int((0..D_IN * D_OUT).map(|_| g.gen_range(-8..=7)).collect()),
            in_scale: None,
            out_scale: (0..D_OUT).map(|_| g.gen_range(1..=20)).collect(),
            bias: (0..D_OUT).map(|_| g.gen_range(-1000..=1000)).collect(),
        },
    );
    Arc::new(m)
}

/// P1 inputs X; <X> is opened to P0 only (P1 sends its masked share); a linear layer on the
/// opened value sends P1 the index bits of WIN. Online messages: P1 -> P0 tag 0 (x^) and
/// tag 1 (opening); P0 -> P1 tag 2 (index bits).
fn view_prog(x: Vec<u32>) -> impl Program<Output = Vec<i64>> {
    prog(
        |e| e.register_linear::<u32>("w", D_IN, D_OUT),
        move |e| {
            let xm = input(e, &x, &[ROWS, D_IN])?;
            let xo = remask(e, &xm, Reveal::P0)?;
            let _z = e.linear(&xo, "w", &[WIN])?;
            Ok(None)
        },
    )
}

fn quiet() -> LinkConfig {
    LinkConfig {
        recv_timeout: Some(Duration::from_secs(30)),
        ..LinkConfig::default()
    }
}

fn tapped<P: Program<Output = Vec<i64>>>(model: &Arc<PrivateModel>, p: &P, master: u64) -> Tapped {
    let t = run_tapped(
        model.clone(),
        p,
        DealerSeeds::from_master(master),
        LutMode::Auto,
        &quiet(),
        HashMap::new(),
    );
    for (who, r) in [("P0", &t.p0), ("P1", &t.p1), ("D", &t.dealer)] {
        if let Err(e) = r {
            panic!("{who} failed: {e}");
        }
    }
    t
}

/// What P0 received online over `RUNS` runs: low and top bytes of the words of x^ (tag 0)
/// and of P1's opening share (tag 1).
struct P0View {
    input_lo: Vec<u64>,
    input_hi: Vec<u64>,
    open_lo: Vec<u64>,
    open_hi: Vec<u64>,
}

fn p0_view(x: &[u32], model: &Arc<PrivateModel>, first_master: u64) -> P0View {
    let p = view_prog(x.to_vec());
    let (mut il, mut ih, mut ol, mut oh) = (vec![], vec![], vec![], vec![]);
    for m in first_master..first_master + RUNS {
        let t = tapped(model, &p, m);
        let got = t.online(PartyId::P0, PartyId::P1);
        assert_eq!(got.len(), 2, "P0 receives x^ and one opening online");
        for msg in got {
            assert_eq!(msg.payload.len(), x.len() * 4);
            let (lo, hi) = if msg.tag == 0 {
                (&mut il, &mut ih)
            } else {
                (&mut ol, &mut oh)
            };
            for w in words(&msg.payload, 4) {
                lo.push(w[0]);
                hi.push(w[3]);
            }
        }
    }
    P0View {
        input_lo: hist256(il),
        input_hi: hist256(ih),
        open_lo: hist256(ol),
        open_hi: hist256(oh),
    }
}

fn assert_same_dist(a: &[u64], b: &[u64], what: &str) {
    let (stat, df, p) = chi2_two_sample(a, b);
    assert!(
        p > ALPHA,
        "{what}: the two samples differ (chi2 = {stat:.1}, df = {df}, p = {p:.2e})"
    );
}

fn assert_uniform(h: &[u64], what: &str) {
    let n: u64 = h.iter().sum();
    let e = n as f64 / h.len() as f64;
    let stat: f64 = h.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
    let p = chi2_sf(stat, h.len() as f64 - 1.0);
    assert!(
        p > ALPHA,
        "{what}: not uniform (chi2 = {stat:.1}, p = {p:.2e})"
    );
}

fn distinctive_input(n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 0xDEAD_BEEFu32.wrapping_add(i.wrapping_mul(0x0101_0101)))
        .collect()
}

#[test]
fn chi2_machinery_detects_a_difference_and_accepts_equal_samples() {
    // sanity of the statistic itself: known quantiles of the chi-square distribution
    assert!((chi2_sf(3.841_458_820_694_124, 1.0) - 0.05).abs() < 1e-6);
    assert!((chi2_sf(310.457_388_920_1, 255.0) - 0.01).abs() < 1e-4);
    // power: the plaintext inputs themselves, repeated as often as the views, differ
    let (a, b) = (vec![0u32; ROWS * D_IN], distinctive_input(ROWS * D_IN));
    let rep = |x: &[u32]| {
        hist256(
            (0..RUNS)
                .flat_map(|_| x.iter().map(|v| *v as u8))
                .collect::<Vec<_>>(),
        )
    };
    let (_, _, p) = chi2_two_sample(&rep(&a), &rep(&b));
    assert!(p < ALPHA, "the test cannot tell two different inputs apart");
    // and two uniform samples agree
    let mut g = rng(5);
    let u1 = hist256((0..20_000).map(|_| g.gen::<u8>()));
    let u2 = hist256((0..20_000).map(|_| g.gen::<u8>()));
    assert_same_dist(&u1, &u2, "two uniform samples");
}

/// (a) What P0 receives online (x^ and P1's opening share) has the same distribution for
/// two different fixed inputs, and is uniform.
#[test]
fn p0_online_view_is_independent_of_the_input() {
    let model = lin_model(1);
    let a = p0_view(&vec![0u32; ROWS * D_IN], &model, 0);
    let b = p0_view(&distinctive_input(ROWS * D_IN), &model, 10_000);
    assert_same_dist(&a.input_lo, &b.input_lo, "x^ low byte");
    assert_same_dist(&a.input_hi, &b.input_hi, "x^ top byte");
    assert_same_dist(&a.open_lo, &b.open_lo, "opening low byte");
    assert_same_dist(&a.open_hi, &b.open_hi, "opening top byte");
    assert_uniform(&a.input_lo, "x^ low byte for x = 0");
    assert_uniform(&b.open_hi, "opening top byte for the distinctive x");
}

/// (a) What P1 receives online after a linear layer (the index bits of Z^) has the same
/// distribution for two different private weight matrices; the unmasked index bits would
/// not.
#[test]
fn p1_index_bits_are_independent_of_the_weights() {
    let x = distinctive_input(ROWS * D_IN);
    let p = view_prog(x.clone());
    let mut hists = vec![];
    for (mseed, first) in [(1u64, 20_000u64), (2, 30_000)] {
        let model = lin_model(mseed);
        let mut bytes = vec![];
        for m in first..first + RUNS {
            let t = tapped(&model, &p, m);
            let got = t.online(PartyId::P1, PartyId::P0);
            assert_eq!(got.len(), 1, "P1 receives only the index bits online");
            assert_eq!(got[0].tag, 2);
            // exactly k = 8 bits per output
            assert_eq!(got[0].payload.len(), ROWS * D_OUT);
            bytes.extend_from_slice(&got[0].payload);
        }
        // control: the unmasked index bits of Z for this model
        let q = model.linear("w").unwrap();
        let z = q.apply::<u32>(&x, ROWS);
        let plain: Vec<u8> = (0..RUNS)
            .flat_map(|_| {
                z.iter()
                    .map(|v| v.window(WIN.j, WIN.k) as u8)
                    .collect::<Vec<_>>()
            })
            .collect();
        hists.push((hist256(bytes), hist256(plain)));
    }
    assert_same_dist(
        &hists[0].0,
        &hists[1].0,
        "P1's index bits under two weight matrices",
    );
    assert_uniform(&hists[0].0, "P1's index bits");
    let (_, _, p) = chi2_two_sample(&hists[0].1, &hists[1].1);
    assert!(
        p < ALPHA,
        "control: unmasked index bits should differ between models"
    );
}

/// (b) No plaintext input word appears in P0's received bytes, no weight, scale or bias
/// word in P1's; E_M != M for every registered element; the dealer receives nothing.
#[test]
fn no_plaintext_appears_verbatim() {
    const X: u32 = 0xDEAD_BEEF;
    const W: i64 = 0x1234_5678;
    const B: i64 = 0x0BAD_CAFE;
    const G: i64 = 0x7777_1111;
    let mut m = PrivateModel::default();
    m.linears.insert(
        "w".into(),
        QLinear {
            d_in: D_IN,
            d_out: D_OUT,
            w: QWeights::Int(vec![W; D_IN * D_OUT]),
            in_scale: None,
            out_scale: vec![1; D_OUT],
            bias: vec![B; D_OUT],
        },
    );
    m.vectors.insert("g".into(), vec![G; D_IN]);
    let model = Arc::new(m);
    let x = vec![X; ROWS * D_IN];
    let p = prog(
        |e| {
            e.register_linear::<u32>("w", D_IN, D_OUT)?;
            e.register_vector::<u32>("g", D_IN)
        },
        move |e| {
            let xm = input(e, &x, &[ROWS, D_IN])?;
            let xo = remask(e, &xm, Reveal::P0)?;
            let z = e.linear(&xo, "w", &[WIN, Window { j: 0, k: 24 }])?;
            let s = e.scale_private(&xm, "g")?;
            let sm = e.open(&s, Reveal::Both)?;
            let zr = reveal_m(e, &z)?;
            let sr = reveal_m(e, &sm)?;
            Ok(zr.zip(sr).map(|(a, b)| [a, b].concat()))
        },
    );
    for master in [1u64, 2, 3] {
        let t = tapped(&model, &p, master);
        // P1 did learn the output (so the run is meaningful)
        let out = t.p1.as_ref().unwrap().output.clone().unwrap();
        assert_eq!(
            out[ROWS * D_OUT],
            (X as i32 as i64).wrapping_mul(G) as i32 as i64
        );
        let all = |to: PartyId| -> Vec<u8> {
            [PartyId::P0, PartyId::P1, PartyId::Dealer]
                .iter()
                .flat_map(|&from| t.got(to, from).iter().flat_map(|m| m.payload.clone()))
                .collect()
        };
        let p0_bytes = all(PartyId::P0);
        assert!(p0_bytes.len() > 3 * ROWS * D_IN * 4);
        assert!(
            !contains(&p0_bytes, &X.to_le_bytes()),
            "P0 received an input word in the clear"
        );
        let p1_bytes: Vec<u8> = [PartyId::P0, PartyId::Dealer]
            .iter()
            .flat_map(|&from| {
                t.got(PartyId::P1, from)
                    .iter()
                    // the final reveal is P1's output: leave it out
                    .filter(|m| m.flight == 0)
                    .flat_map(|m| m.payload.clone())
            })
            .collect();
        for (v, what) in [(W, "weight"), (B, "bias"), (G, "scale")] {
            assert!(
                !contains(&p1_bytes, &(v as u32).to_le_bytes()),
                "P1 received a {what} word in the clear"
            );
        }
        // registration: E_M = M - A_M with A_M uniform, never M itself
        for (name, val, len) in [("w", W, D_IN * D_OUT), ("g", G, D_IN)] {
            let reg: Vec<&Message> = t
                .got(PartyId::P1, PartyId::P0)
                .iter()
                .filter(|m| m.flight == 0 && m.tag == name_id(name) as u32)
                .collect();
            assert_eq!(reg.len(), 1, "one registration message for {name}");
            let e: Vec<u32> = ring::decode_exact(&reg[0].payload, len, PartyId::P0, "E_M").unwrap();
            let eq = e.iter().filter(|&&v| v == val as u32).count();
            assert_eq!(eq, 0, "{name}: {eq} of {len} elements of E_M equal M");
            // and E_M is not constant like M
            let distinct: std::collections::HashSet<u32> = e.iter().copied().collect();
            assert!(distinct.len() > len - 2);
        }
        // the dealer receives nothing at all
        assert!(t.got(PartyId::Dealer, PartyId::P0).is_empty());
        assert!(t.got(PartyId::Dealer, PartyId::P1).is_empty());
    }
}

/// A program touching every kind of dealer material.
fn material_prog(x: Vec<u32>) -> impl Program<Output = Vec<i64>> {
    let t4 = Table::<u32>::from_fn(4, true, |i| 3 * i);
    let t12 = Table::<u64>::from_fn(12, true, |i| i * i);
    let t2 = Table::<u32>::from_fn(8, false, |i| i ^ 0x55);
    prog(
        |e| {
            e.register_linear::<u32>("w", D_IN, D_OUT)?;
            e.register_vector::<u32>("c", 1)?;
            e.register_vector::<u32>("g", D_IN)?;
            e.register_vector::<u64>("tab", 16)
        },
        move |e| {
            let xm = input(e, &x, &[ROWS, D_IN])?;
            let xb = remask(e, &xm, Reveal::Both)?;
            let z = e.linear(&xb, "w", &[WIN, Window { j: 4, k: 4 }])?;
            let l4 = e.lut::<u32, u32>(&z, Window { j: 4, k: 4 }, &t4)?;
            let l12 = e.lut::<u32, u64>(&xb, Window { j: 3, k: 12 }, &t12)?;
            let xt = e.move_masked(&xb, protocol::tensor::Move::TransposeLast2)?;
            let mm = e.matmul_masked(&xb, &xt, Some("c"))?;
            let mm2 = e.open(&mm, Reveal::Both)?;
            let col = e.move_masked(&mm2, protocol::tensor::Move::FirstRows { batch: ROWS })?;
            let col = e.move_masked(&col, protocol::tensor::Move::TransposeLast2)?;
            let l2 = e.lut2::<u32, u32, u32>(
                &mm2,
                Window { j: 2, k: 4 },
                &col,
                Window { j: 6, k: 4 },
                &t2,
            )?;
            let pr = e.mul_masked(&xb, &xb)?;
            let sq = e.square_masked(&xb)?;
            let sc = e.scale_private(&xm, "g")?;
            let lp = e.lut_private::<u32, u64>(&xb, Window { j: 5, k: 4 }, "tab")?;
            let out = vec![
                reveal(e, &l4)?,
                reveal(e, &l12)?,
                reveal(e, &l2)?,
                reveal(e, &pr)?,
                reveal(e, &sq)?,
                reveal(e, &sc)?,
                reveal(e, &lp)?,
            ];
            Ok(out
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat()))
        },
    )
}

fn material_model(seed: u64) -> Arc<PrivateModel> {
    let base = lin_model(seed);
    let mut m = (*base).clone();
    let mut g = rng(seed + 100);
    m.vectors.insert("c".into(), vec![g.gen_range(1..100)]);
    m.vectors
        .insert("g".into(), (0..D_IN).map(|_| g.gen()).collect());
    m.vectors
        .insert("tab".into(), (0..16).map(|_| g.gen()).collect());
    Arc::new(m)
}

/// (c) The dealer's messages to P1 and to P0 depend on its seed only: byte-identical for
/// two inputs and two models under the same seed.
#[test]
fn dealer_messages_are_independent_of_input_and_model() {
    let xs = [vec![0u32; ROWS * D_IN], distinctive_input(ROWS * D_IN)];
    let models = [material_model(1), material_model(2)];
    let mut seen: Option<(Vec<Message>, Vec<Message>)> = None;
    let mut offline: Vec<Option<Vec<Message>>> = vec![None, None];
    let mut outputs = vec![];
    for x in &xs {
        for (mi, m) in models.iter().enumerate() {
            let t = tapped(m, &material_prog(x.clone()), 42);
            // everything P0 and P1 exchange before the online phase (registration, P1's
            // linear shares, the barrier) is independent of the input as well
            let off: Vec<Message> = [(PartyId::P0, PartyId::P1), (PartyId::P1, PartyId::P0)]
                .iter()
                .flat_map(|&(a, b)| t.got(a, b).iter().filter(|m| m.flight == 0).cloned())
                .collect();
            assert!(off.len() >= 6);
            match &offline[mi] {
                None => offline[mi] = Some(off),
                Some(o) => assert!(&off == o, "P0-P1 offline traffic depends on the input"),
            }
            let d1 = t.got(PartyId::P1, PartyId::Dealer).to_vec();
            let d0 = t.got(PartyId::P0, PartyId::Dealer).to_vec();
            assert!(d1.len() >= 10, "dealer sent P1 material for every block");
            // DPF keys for the lut of k = 12, lut2 and lut_private, and the seed
            assert!(d0.len() >= 4);
            outputs.push(t.p1.unwrap().output.unwrap());
            match &seen {
                None => seen = Some((d1, d0)),
                Some((s1, s0)) => {
                    assert!(
                        &d1 == s1,
                        "the dealer's messages to P1 depend on the input or model"
                    );
                    assert!(
                        &d0 == s0,
                        "the dealer's messages to P0 depend on the input or model"
                    );
                }
            }
        }
    }
    // the runs did compute different things
    assert_ne!(outputs[0], outputs[1]);
    assert_ne!(outputs[0], outputs[2]);
    // control: another seed gives other material
    let t = tapped(&models[0], &material_prog(xs[0].clone()), 43);
    assert!(t.got(PartyId::P1, PartyId::Dealer) != seen.unwrap().0.as_slice());
}

// ---------------------------------------------------------------------------------------
// Malformed and out-of-step messages: an error at the party that sees them, no panic, no
// hang.

fn small_prog() -> impl Program<Output = Vec<i64>> {
    prog(
        |e| e.register_linear::<u32>("w", D_IN, D_OUT),
        |e| {
            let x = distinctive_input(ROWS * D_IN);
            let xm = input(e, &x, &[ROWS, D_IN])?; // op 0
            let xo = remask(e, &xm, Reveal::P0)?; // op 1
            let z = e.linear(&xo, "w", &[WIN])?; // op 2
            let t = Table::<u32>::from_fn(8, true, |i| i);
            let l = e.lut::<u32, u32>(&z, WIN, &t)?; // op 3
            reveal(e, &l) // op 4
        },
    )
}

fn run_edited(at: (PartyId, PartyId), mode: LutMode, edit: Edit) -> (Tapped, Duration) {
    let mut edits = HashMap::new();
    edits.insert(at, edit);
    let t0 = Instant::now();
    let t = run_tapped(
        lin_model(3),
        &small_prog(),
        DealerSeeds::from_master(9),
        mode,
        &quiet(),
        edits,
    );
    let el = t0.elapsed();
    assert!(
        el < Duration::from_secs(15),
        "the failing run took {el:?}: a party hung"
    );
    (t, el)
}

fn online_tag(tag: u32, f: impl Fn(&mut Vec<u8>) + Send + 'static) -> Edit {
    Box::new(move |m: &mut Message| {
        if m.flight > 0 && m.tag == tag {
            f(&mut m.payload)
        }
    })
}

fn tag_at(tag: u32, f: impl Fn(&mut Message) + Send + 'static) -> Edit {
    Box::new(move |m: &mut Message| {
        if m.tag == tag {
            f(m)
        }
    })
}

fn err_of(r: &protocol::Result<session::PartyReport<Vec<i64>>>) -> &ProtocolError {
    match r {
        Ok(_) => panic!("the run succeeded"),
        Err(e) => e,
    }
}

#[test]
fn unedited_small_program_succeeds() {
    let (t, _) = run_edited((PartyId::P0, PartyId::P1), LutMode::Dpf, Box::new(|_| {}));
    assert!(t.p0.is_ok() && t.p1.is_ok() && t.dealer.is_ok());
    assert_eq!(t.p1.unwrap().output.unwrap().len(), ROWS * D_OUT);
}

#[test]
fn malformed_opening_from_p1_is_an_error_at_p0() {
    type F = fn(&mut Vec<u8>);
    let cases: [(F, &str); 3] = [
        (
            |p| {
                p.pop();
            },
            "truncated",
        ),
        (|p| p.push(0), "one byte too long"),
        (|p| p.clear(), "empty"),
    ];
    for (f, what) in cases {
        let (t, _) = run_edited((PartyId::P0, PartyId::P1), LutMode::Auto, online_tag(1, f));
        match err_of(&t.p0) {
            ProtocolError::Malformed { from, what: w, .. } => {
                assert_eq!(*from, PartyId::P1, "{what}");
                assert_eq!(*w, "opening", "{what}");
            }
            e => panic!("{what}: P0 failed with {e:?}, not Malformed"),
        }
        // P1 sees P0 go away rather than waiting forever
        assert!(t.p1.is_err(), "{what}: P1 finished although P0 failed");
    }
}

#[test]
fn malformed_input_and_index_bits_are_errors() {
    let (t, _) = run_edited(
        (PartyId::P0, PartyId::P1),
        LutMode::Auto,
        online_tag(0, |p| p.truncate(5)),
    );
    assert!(
        matches!(
            err_of(&t.p0),
            ProtocolError::Malformed {
                from: PartyId::P1,
                what: "input",
                ..
            }
        ),
        "{:?}",
        err_of(&t.p0)
    );
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::P0),
        LutMode::Auto,
        online_tag(2, |p| {
            p.pop();
        }),
    );
    assert!(
        matches!(
            err_of(&t.p1),
            ProtocolError::Malformed {
                from: PartyId::P0,
                what: "index bits",
                ..
            }
        ),
        "{:?}",
        err_of(&t.p1)
    );
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::P0),
        LutMode::Auto,
        online_tag(2, |p| p.push(1)),
    );
    assert!(
        matches!(
            err_of(&t.p1),
            ProtocolError::Malformed {
                from: PartyId::P0,
                what: "index bits",
                ..
            }
        ),
        "{:?}",
        err_of(&t.p1)
    );
    // the reveal of the output, truncated
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::P0),
        LutMode::Auto,
        online_tag(4, |p| {
            p.pop();
        }),
    );
    assert!(matches!(
        err_of(&t.p1),
        ProtocolError::Malformed {
            from: PartyId::P0,
            what: "reveal",
            ..
        }
    ));
}

#[test]
fn dealer_out_of_sync_is_detected() {
    // P1 gets the material of op 1 labelled as op 7
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::Dealer),
        LutMode::Auto,
        tag_at(1, |m| m.tag = 7),
    );
    match err_of(&t.p1) {
        ProtocolError::OutOfSync { expected, got } => {
            assert_eq!((*expected, *got), (1, 7));
        }
        e => panic!("P1 failed with {e:?}, not OutOfSync"),
    }
    assert!(t.p0.is_err(), "P0 finished although P1 failed offline");
    // P0's DPF keys of op 3 labelled as op 2
    let (t, _) = run_edited(
        (PartyId::P0, PartyId::Dealer),
        LutMode::Dpf,
        tag_at(3, |m| m.tag = 2),
    );
    assert!(matches!(
        err_of(&t.p0),
        ProtocolError::OutOfSync {
            expected: 3,
            got: 2
        }
    ));
}

#[test]
fn malformed_dealer_material_is_an_error() {
    // material with bytes left over
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::Dealer),
        LutMode::Auto,
        tag_at(1, |m| m.payload.push(0)),
    );
    assert!(matches!(
        err_of(&t.p1),
        ProtocolError::Malformed {
            from: PartyId::Dealer,
            what: "dealer material",
            ..
        }
    ));
    // short material
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::Dealer),
        LutMode::Rotated,
        tag_at(3, |m| {
            m.payload.pop();
        }),
    );
    assert!(matches!(
        err_of(&t.p1),
        ProtocolError::Malformed {
            from: PartyId::Dealer,
            ..
        }
    ));
    // a DPF key with an invalid header byte
    let (t, _) = run_edited(
        (PartyId::P1, PartyId::Dealer),
        LutMode::Dpf,
        tag_at(3, |m| m.payload[0] = 0xff),
    );
    assert!(
        matches!(
            err_of(&t.p1),
            ProtocolError::Malformed {
                from: PartyId::Dealer,
                what: "DPF key",
                ..
            }
        ),
        "{:?}",
        err_of(&t.p1)
    );
    // truncated DPF keys at P0
    let (t, _) = run_edited(
        (PartyId::P0, PartyId::Dealer),
        LutMode::Dpf,
        tag_at(3, |m| m.payload.truncate(10)),
    );
    assert!(matches!(
        err_of(&t.p0),
        ProtocolError::Malformed {
            from: PartyId::Dealer,
            ..
        }
    ));
    // P0's share seed of the wrong length
    let (t, _) = run_edited(
        (PartyId::P0, PartyId::Dealer),
        LutMode::Auto,
        tag_at(protocol::engine::SEED_TAG, |m| {
            m.payload.pop();
        }),
    );
    assert!(matches!(
        err_of(&t.p0),
        ProtocolError::Malformed {
            from: PartyId::Dealer,
            what: "seed",
            ..
        }
    ));
}

/// `session::run_local` must return (with the failing party's error) when one party's
/// program fails, instead of leaving the other parties waiting for it.
#[test]
fn run_local_returns_when_one_party_fails() {
    let p = prog(no_reg, |e: &mut Engine| {
        if e.role == Role::P1 && e.is_online() {
            return Err(ProtocolError::Config("injected failure at P1".into()));
        }
        let x = input(e, &[1u32, 2, 3], &[3])?;
        reveal_m(e, &x)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // the default link: no receive timeout
        let mut cfg = mem_cfg(1);
        cfg.link = LinkConfig::default();
        let r = session::run_local(&cfg, model(), &p);
        let _ = tx.send(r.err().map(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(e)) => assert!(e.contains("injected failure"), "{e}"),
        Ok(None) => panic!("run_local succeeded although P1 failed"),
        Err(_) => panic!(
            "run_local hung for 10 s after P1 failed: P0 waits for P1's input forever \
             (session.rs keeps the failed party's engine, and so its links, alive until \
             every party thread has returned)"
        ),
    }
}
