//! Exact truncation (`Truncation::Exact`, blocks/exact.rs): every table on a window
//! [j, j+k) with j > 0 reads round(z / 2^j) exactly, so the secure run equals the
//! plaintext reference with or without the dealer's carries, and the independent naive
//! computation here, bit for bit.

mod common;

use common::*;
use protocol::account::Phase;
use protocol::registry::{QLinear, QWeights};
use protocol::ring::{self, Ring};
use protocol::session::{LocalConfig, LocalTransport};
use protocol::{LutMode, PartyId, PrivateModel, Reveal, Role, Table, Truncation, Window};
use rand::Rng;
use std::sync::Arc;

const FRAME: u64 = protocol::account::FRAME_OVERHEAD;

fn exact_cfg(seed: u64, mode: LutMode, transport: LocalTransport) -> LocalConfig {
    LocalConfig {
        truncation: Truncation::Exact,
        ..cfg(seed, mode, transport)
    }
}

/// round(x / 2^j) mod 2^k as the protocol defines it: floor((x + 2^(j-1)) / 2^j) with the
/// sum wrapping in the ring.
fn round_index<R: Ring>(x: R, j: u32, k: u32) -> usize {
    let h = if j == 0 { 0 } else { 1u64 << (j - 1) };
    ((x.wadd(R::from_u64(h)).to_i64() >> j) & ((1i64 << k) - 1)) as usize
}

/// Edge and random inputs for window [j, j+k): ring edges, window edges, values exactly
/// half-way between two steps (where stochastic rounding is a coin toss), and values just
/// below and above half-way.
fn inputs<R: Ring>(g: &mut impl Rng, j: u32, k: u32, n_rand: usize) -> Vec<R> {
    let s = 1i128 << j;
    let h = s / 2;
    let lo = -(1i128 << (k - 1));
    let hi = 1i128 << (k - 1);
    let mut v: Vec<i128> = vec![
        0,
        1,
        -1,
        h,
        h - 1,
        -h,
        -h - 1,
        lo * s,
        (hi - 1) * s + h - 1,
        (hi - 1) * s + h, // rounds up out of the window: aliases to lo
        3 * s + h,
        -3 * s - h,
        1i128 << (R::BITS - 1),
        (1i128 << (R::BITS - 1)) - 1,
    ];
    for _ in 0..n_rand {
        v.push(g.gen_range(lo * s..hi * s));
    }
    v.iter().map(|&t| R::from_u64(t as u64)).collect()
}

fn distinct<O: Ring>(k: u32) -> Table<O> {
    Table::from_fn(k, true, |i| {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64)
            .wrapping_add(777)
    })
}

fn lut_case<R: Ring, O: Ring>(mode: LutMode, k: u32, j: u32, seed: u64) {
    let mut g = rng(seed);
    let x: Vec<R> = inputs::<R>(&mut g, j, k, 40);
    let n = x.len();
    let t = distinct::<O>(k);
    let entries = ring::to_i64s(&t.entries);
    let (xs, tt) = (x.clone(), t.clone());
    let p = prog(no_reg, move |e| {
        let z = input(e, &xs, &[n])?;
        let z = remask(e, &z, Reveal::Both)?;
        let a = e.lut::<R, O>(&z, Window { j, k }, &tt)?;
        reveal(e, &a)
    });
    let c = check(&model(), &p, &exact_cfg(seed, mode, LocalTransport::Mem));
    for i in 0..n {
        assert_eq!(
            c.secure[i],
            entries[round_index(x[i], j, k)],
            "lookup {i}: x = {:?}, j = {j}, k = {k}",
            x[i]
        );
    }
    assert_eq!(c.det, c.secure, "the reference without carries differs");
    assert_eq!(c.stats.carries, 0);

    // the same program with stochastic truncation: one flight less, and no DCF keys
    let s = check(&model(), &p, &cfg(seed, mode, LocalTransport::Mem));
    // one more exchange; it costs two flights on the critical path here, where P0 is a
    // flight behind P1 when it starts (P1's opening share is still on its way)
    let extra = if j > 0 { 2 } else { 0 };
    assert_eq!(c.run.rounds(), s.run.rounds() + extra, "flights");
    let on = |r: &protocol::session::LocalRun<Vec<i64>>, from: PartyId| match from {
        PartyId::P0 => r.p0.acct.bytes(Phase::Online, PartyId::P1),
        _ => r.p1.acct.bytes(Phase::Online, PartyId::P0),
    };
    let opening = if j > 0 {
        (n as u64 * k as u64).div_ceil(8) + FRAME
    } else {
        0
    };
    for from in [PartyId::P0, PartyId::P1] {
        assert_eq!(on(&c.run, from), on(&s.run, from) + opening, "online bytes");
    }
    let dealt =
        |r: &protocol::session::LocalRun<Vec<i64>>, to| r.dealer.acct.bytes(Phase::Offline, to);
    let keys = if j > 0 {
        n as u64 * kernels::dcf::key_bytes(j, 32) as u64 + FRAME
    } else {
        0
    };
    assert_eq!(
        dealt(&c.run, PartyId::P0),
        dealt(&s.run, PartyId::P0) + keys,
        "DCF keys to P0 (its share of s comes from its seed)"
    );
    let s1 = if j > 0 { 4 * n as u64 } else { 0 };
    assert_eq!(
        dealt(&c.run, PartyId::P1),
        dealt(&s.run, PartyId::P1) + keys + s1,
        "DCF keys and the mask share to P1"
    );
}

#[test]
fn exact_lut_rounds_to_nearest_u32() {
    lut_case::<u32, u64>(LutMode::Dpf, 8, 12, 1);
    lut_case::<u32, u32>(LutMode::Rotated, 4, 1, 2);
    lut_case::<u32, u16>(LutMode::Dpf, 12, 19, 3);
    lut_case::<u32, u32>(LutMode::Dpf, 6, 0, 4);
}

#[test]
fn exact_lut_rounds_to_nearest_u64_and_u16() {
    lut_case::<u64, u32>(LutMode::Dpf, 9, 40, 5);
    lut_case::<u64, u64>(LutMode::Rotated, 4, 59, 6);
    lut_case::<u16, u32>(LutMode::Dpf, 8, 7, 7);
    lut_case::<u16, u16>(LutMode::Rotated, 3, 13, 8);
}

/// A table after a linear layer: P1 holds only the index bits P0 sent (with exact
/// truncation, bits [0, j + k)); the lookup and `trunc_ext` read round(Z / 2^j), checked
/// against Z revealed by the same program.
#[test]
fn exact_after_linear_and_trunc_ext() {
    type R = u32;
    let mut g = rng(20);
    let (rows, d_in, d_out) = (4usize, 32usize, 16usize);
    let signs: Vec<i8> = (0..d_in * d_out)
        .map(|_| if g.gen() { 1 } else { -1 })
        .collect();
    let q = QLinear {
        d_in,
        d_out,
        w: QWeights::Signs(kernels::bitfc::pack_signs(&signs, d_in, d_out)),
        in_scale: None,
        out_scale: (0..d_out).map(|_| g.gen_range(1..=40)).collect(),
        bias: (0..d_out).map(|_| g.gen_range(-5000..=5000)).collect(),
    };
    let mut m = PrivateModel::default();
    m.linears.insert("w".into(), q);
    let model = Arc::new(m);
    let x: Vec<R> = random_small(&mut g, rows * d_in, 100);
    let (wl, wt) = (Window { j: 6, k: 10 }, Window { j: 9, k: 16 });
    let t = distinct::<u64>(wl.k);
    let entries = ring::to_i64s(&t.entries);
    let n = rows * d_out;
    let (xs, tt) = (x.clone(), t.clone());
    let p = prog(
        move |e| e.register_linear::<R>("w", d_in, d_out),
        move |e| {
            let xm = input(e, &xs, &[rows, d_in])?;
            let xm = remask(e, &xm, Reveal::P0)?;
            let z = e.linear(&xm, "w", &[wl, wt])?;
            if e.role == Role::P1 && e.is_online() {
                let widest: Vec<Window> = z.win.iter().map(|(w, _)| *w).collect();
                if widest != [Window { j: 0, k: 16 }, Window { j: 0, k: 25 }] {
                    return Err(protocol::ProtocolError::Internal(format!(
                        "P1 got windows {widest:?}"
                    )));
                }
            }
            let a = e.lut::<R, u64>(&z, wl, &tt)?;
            let b = e.trunc_ext::<R, u64>(&z, wt, 3)?;
            Ok(cat(vec![reveal_m(e, &z)?, reveal(e, &a)?, reveal(e, &b)?]))
        },
    );
    let c = check(
        &model,
        &p,
        &exact_cfg(20, LutMode::Dpf, LocalTransport::Mem),
    );
    assert_eq!(c.det, c.secure);
    let zs: Vec<R> = c.secure[..n].iter().map(|&v| R::from_i64(v)).collect();
    for i in 0..n {
        assert_eq!(
            c.secure[n + i],
            entries[round_index(zs[i], wl.j, wl.k)],
            "lut {i}"
        );
        let h = 1i64 << (wt.j - 1);
        let want = (zs[i].to_i64() + h) >> wt.j;
        assert_eq!(
            c.secure[2 * n + i],
            3 * want,
            "trunc_ext {i}: z = {}",
            zs[i].to_i64()
        );
    }
    // P0 sent P1 the bits below each window too, (6 + 10) and (9 + 16) bits per element;
    // then one opening per table (k bits) and the three reveals
    let bits = |b: u32| (n as u64 * b as u64).div_ceil(8);
    let want = bits(16)
        + bits(25)
        + FRAME
        + (bits(wl.k) + FRAME)
        + (bits(wt.k) + FRAME)
        + (4 * n as u64 + FRAME)
        + 2 * (8 * n as u64 + FRAME);
    assert_eq!(c.run.p0.acct.bytes(Phase::Online, PartyId::P1), want);
}

/// Two-input tables: each axis with j > 0 is rounded exactly, per row or per element.
#[test]
fn exact_lut2_per_row() {
    let mut g = rng(30);
    let (rows, cols) = (5usize, 7usize);
    let (wx, wy) = (Window { j: 5, k: 4 }, Window { j: 11, k: 5 });
    let x: Vec<u32> = (0..rows * cols)
        .map(|_| u32::from_i64(g.gen_range(-(8i64 << 5)..(8 << 5))))
        .collect();
    let y: Vec<u64> = (0..rows)
        .map(|_| u64::from_i64(g.gen_range(-(16i64 << 11)..(16 << 11))))
        .collect();
    let k = wx.k + wy.k;
    let entries: Vec<u32> = (0..1u64 << k)
        .map(|i| u32::from_u64(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x55))
        .collect();
    let t = Table {
        k,
        lo: Some(0),
        entries: entries.clone(),
    };
    let (xs, ys) = (x.clone(), y.clone());
    let p = prog(no_reg, move |e| {
        let zx = input(e, &xs, &[rows, cols])?;
        let zx = remask(e, &zx, Reveal::Both)?;
        let zy = input(e, &ys, &[rows, 1])?;
        let zy = remask(e, &zy, Reveal::Both)?;
        let a = e.lut2::<u32, u64, u32>(&zx, wx, &zy, wy, &t)?;
        reveal(e, &a)
    });
    for mode in [LutMode::Rotated, LutMode::Dpf] {
        let c = check(&model(), &p, &exact_cfg(30, mode, LocalTransport::Mem));
        assert_eq!(c.det, c.secure);
        for i in 0..rows * cols {
            let (a, b) = (
                round_index(x[i], wx.j, wx.k),
                round_index(y[i / cols], wy.j, wy.k),
            );
            assert_eq!(
                c.secure[i],
                entries[(a << wy.k) | b].to_i64(),
                "2-D lookup {i} ({mode:?})"
            );
        }
    }
}

/// The rounded index both parties learn is uniform whatever the input: constant inputs
/// give spread-out public indices (their mask rho - s), with the same distribution for two
/// different constants.
#[test]
fn exact_public_index_is_masked() {
    let (j, k, n) = (8u32, 6u32, 4096usize);
    let mut hists = vec![];
    for value in [0i64, 1000 * 256 + 128] {
        let xs = vec![u32::from_i64(value); n];
        let p = prog(no_reg, move |e| {
            let z = input(e, &xs, &[n])?;
            let z = remask(e, &z, Reveal::Both)?;
            let r = e.round_windows(&[(&z, Window { j, k })])?.remove(0);
            Ok(match e.role {
                Role::P1 => r.hat.as_ref().map(|h| ring::to_i64s(h)),
                _ => None,
            })
        });
        let run = protocol::session::run_local(
            &exact_cfg(40 + value as u64, LutMode::Auto, LocalTransport::Mem),
            model(),
            &p,
        )
        .expect("secure run");
        let idx = run.p1.output.expect("P1's public indices");
        let mut h = vec![0f64; 1 << k];
        for &v in &idx {
            assert!((0..1 << k).contains(&v), "index {v} beyond k bits");
            h[v as usize] += 1.0;
        }
        // chi-square against uniform, 63 degrees of freedom: 1e-4 tail at about 120
        let e = n as f64 / (1 << k) as f64;
        let chi: f64 = h.iter().map(|o| (o - e) * (o - e) / e).sum();
        assert!(chi < 120.0, "public indices not uniform (chi2 {chi:.1})");
        hists.push(h);
    }
    assert_ne!(hists[0], hists[1]);
}

/// `table_inputs` rounds several windows in one exchange: the same outputs as one
/// exchange per table, fewer flights, and items with j = 0 pass through untouched.
#[test]
fn batched_rounding_shares_one_flight() {
    let mut g = rng(50);
    let (wa, wb, w0) = (
        Window { j: 4, k: 8 },
        Window { j: 9, k: 6 },
        Window { j: 0, k: 5 },
    );
    let x: Vec<u32> = inputs::<u32>(&mut g, 4, 8, 30);
    let n = x.len();
    let (ta, tb, t0) = (distinct::<u32>(8), distinct::<u64>(6), distinct::<u32>(5));
    let run = |batched: bool| {
        let (xs, ta, tb, t0) = (x.clone(), ta.clone(), tb.clone(), t0.clone());
        let p = prog(no_reg, move |e| {
            let z = input(e, &xs, &[n])?;
            let z = remask(e, &z, Reveal::Both)?;
            let (a, b, c) = if batched {
                let ins = e.table_inputs(&[(&z, wa), (&z, wb), (&z, w0)])?;
                if e.role == Role::P0 && ins[2].1 != w0 {
                    return Err(protocol::ProtocolError::Internal(
                        "j = 0 was changed".into(),
                    ));
                }
                (
                    e.lut::<u32, u32>(&ins[0].0, ins[0].1, &ta)?,
                    e.lut::<u32, u64>(&ins[1].0, ins[1].1, &tb)?,
                    e.lut::<u32, u32>(&ins[2].0, ins[2].1, &t0)?,
                )
            } else {
                (
                    e.lut::<u32, u32>(&z, wa, &ta)?,
                    e.lut::<u32, u64>(&z, wb, &tb)?,
                    e.lut::<u32, u32>(&z, w0, &t0)?,
                )
            };
            Ok(cat(vec![reveal(e, &a)?, reveal(e, &b)?, reveal(e, &c)?]))
        });
        check(
            &model(),
            &p,
            &exact_cfg(50, LutMode::Dpf, LocalTransport::Mem),
        )
    };
    let (one, each) = (run(true), run(false));
    assert_eq!(one.secure, each.secure);
    assert_eq!(one.det, one.secure);
    // one message each way for the two windows instead of two: one frame less (the
    // flight depth does not show it here: P1 runs a flight ahead of P0 from the input on,
    // so the two exchanges overlap on the critical path)
    let sent = |c: &Checked, to| match to {
        PartyId::P1 => c.run.p0.acct.bytes(Phase::Online, PartyId::P1),
        _ => c.run.p1.acct.bytes(Phase::Online, PartyId::P0),
    };
    for to in [PartyId::P0, PartyId::P1] {
        assert_eq!(
            sent(&one, to) + FRAME,
            sent(&each, to),
            "one exchange for two windows"
        );
    }
    let ea = ring::to_i64s(&distinct::<u32>(8).entries);
    for i in 0..n {
        assert_eq!(one.secure[i], ea[round_index(x[i], 4, 8)], "window a, {i}");
    }
}

/// The fuzz target's DCF case on well-formed input: a key batch as a spill file holds it,
/// and a single key, round trip without a false alarm; truncated copies are refused.
#[test]
fn dcf_keys_decode_as_the_fuzz_target_checks() {
    use protocol::blocks::exact::CarryKeys;
    use protocol::prep::Prep;
    let (k0, _) = kernels::dcf::gen_batch::<u32>(13, &[5, 900, 8191], 1, [4u8; 32]);
    let mut batch = vec![];
    CarryKeys(k0.clone()).put(&mut batch);
    let mut single = vec![];
    k0[0].write_to(&mut single);
    for payload in [&batch, &single] {
        for cut in [payload.len(), payload.len() - 1, 9, 0] {
            let mut data = vec![6u8, 13, 0];
            data.extend_from_slice(&payload[..cut]);
            protocol::fuzzing::message(&data);
        }
    }
    let mut b = batch.as_slice();
    let back = <CarryKeys as Prep>::get(&mut b).expect("a whole batch decodes");
    assert_eq!(back.0, k0);
    assert!(b.is_empty());
    let mut short = &batch[..batch.len() - 1];
    assert!(<CarryKeys as Prep>::get(&mut short).is_err());
}

/// P0's private affine map with a table window that exact truncation widens past what
/// index bits carry ([0, 38) in Z/2^64): P0 sends z^ itself (what an opening to both
/// gives P1), the table still reads round(z / 2^j), and P1 holds z^ and no index bits.
#[test]
fn exact_affine_with_a_wide_window_sends_the_masked_value() {
    let (j, k) = (30u32, 8u32);
    let mut g = rng(71);
    let x: Vec<u64> = inputs::<u64>(&mut g, j, k, 30);
    let n = x.len();
    let (c1, b1) = (3i64, -(5i64 << 28));
    let mut pm = PrivateModel::default();
    pm.vectors.insert("g".into(), vec![c1]);
    pm.vectors.insert("b".into(), vec![b1]);
    let model = Arc::new(pm);
    let t = distinct::<u32>(k);
    let entries = ring::to_i64s(&t.entries);
    let (xs, tt) = (x.clone(), t.clone());
    let p = prog(
        move |e| e.register_vector::<u64>("g", 1),
        move |e| {
            let z = input(e, &xs, &[n, 1])?;
            let z = e.affine_private(&z, "g", "b", &[Window { j, k }])?;
            if e.role == Role::P1 && e.is_online() && (z.hat.is_none() || !z.win.is_empty()) {
                return Err(protocol::ProtocolError::Internal(
                    "P1 should hold z^ and no index bits".into(),
                ));
            }
            let a = e.lut::<u64, u32>(&z, Window { j, k }, &tt)?;
            reveal(e, &a)
        },
    );
    let c = check(
        &model,
        &p,
        &exact_cfg(71, LutMode::Auto, LocalTransport::Mem),
    );
    for (i, xi) in x.iter().enumerate() {
        let zi = xi.wrapping_mul(c1 as u64).wrapping_add(b1 as u64);
        assert_eq!(c.secure[i], entries[round_index(zi, j, k)], "lookup {i}");
    }
    assert_eq!(c.det, c.secure, "the reference without carries differs");
}
