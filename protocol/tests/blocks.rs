//! Conformance tests of the building blocks (PROTOCOL.md blocks 1-10): every block run as
//! the three parties must equal the plaintext reference with the same carries bit for bit,
//! and the plaintext reference must equal an independent naive computation written here.

mod common;

use common::*;
use protocol::account::Phase;
use protocol::registry::{QLinear, QWeights};
use protocol::ring::{self, Ring};
use protocol::session::LocalTransport;
use protocol::tensor::Move;
use protocol::{
    Engine, LutMode, Masked, PartyId, PrivateModel, ProtocolError, Result, Reveal, Role, Table,
    Window,
};
use rand::Rng;
use std::sync::Arc;

const FRAME: u64 = protocol::account::FRAME_OVERHEAD;

fn wbytes<R: Ring>() -> u64 {
    (R::BITS / 8) as u64
}

fn internal(msg: &str) -> ProtocolError {
    ProtocolError::Internal(msg.to_string())
}

// ---------------------------------------------------------------------------------------
// Openings, to_additive, reveal.

/// input -> to_additive -> two openings started together (Both and P0-only) -> reveal
/// both. P1 returns [reveal(b), reveal(a), a^]; P0 returns [a^, b^]; the plaintext
/// reference returns [x, x, x + r_a, x + r_a, x + r_b].
fn open_case<R: Ring>(seed: u64) {
    let mut g = rng(seed);
    let mut x = edges::<R>();
    x.extend(random_ring::<R>(&mut g, 23));
    let n = x.len();
    let shape = [4, n / 4];
    assert_eq!(n % 4, 0);
    let xs = x.clone();
    let p = prog(no_reg, move |e| {
        let xm = input(e, &xs, &shape)?;
        let a = e.to_additive(&xm)?;
        let pa = e.open_start(&a, Reveal::Both)?;
        let pb = e.open_start(&a, Reveal::P0)?;
        let ma = e.open_finish(pa)?;
        let mb = e.open_finish(pb)?;
        if !e.is_online() {
            return Ok(None);
        }
        if e.role == Role::P1 && mb.hat.is_some() {
            return Err(internal("P1 learnt a P0-only opening"));
        }
        let hat_a = public_hat(e, &ma);
        let hat_b = public_hat(e, &mb);
        let rb = reveal_m(e, &mb)?;
        let ra = reveal_m(e, &ma)?;
        Ok(match e.role {
            Role::P1 => Some([rb.unwrap(), ra.unwrap(), hat_a.unwrap()].concat()),
            Role::P0 => Some([hat_a.unwrap(), hat_b.unwrap()].concat()),
            Role::Plain => Some(
                [
                    rb.unwrap(),
                    ra.unwrap(),
                    hat_a.clone().unwrap(),
                    hat_a.unwrap(),
                    hat_b.unwrap(),
                ]
                .concat(),
            ),
            Role::Dealer => None,
        })
    });
    let c = check(&model(), &p, &mem_cfg(seed));
    let xi = ring::to_i64s(&x);
    assert_eq!(&c.secure[..n], &xi[..], "reveal of the P0-only opening");
    assert_eq!(
        &c.secure[n..2 * n],
        &xi[..],
        "reveal of the opening to both"
    );
    // the masked value is masked: x^ != x almost everywhere
    let same = (0..n).filter(|&i| c.secure[2 * n + i] == xi[i]).count();
    assert!(
        same <= 1,
        "{same} of {n} opened values equal their plaintext"
    );
    // without the dealer's masks the reference's x^ is x itself
    assert_eq!(c.det, xi.repeat(5));
    // two openings started before either finished share one flight; the reveals one more
    assert_eq!(c.run.rounds(), 2, "rounds");
    let w = wbytes::<R>();
    let nb = n as u64 * w + FRAME;
    // P1 -> P0: x^, two opening shares; P0 -> P1: its share of the Both opening, 2 reveals
    assert_eq!(c.run.p1.acct.bytes(Phase::Online, PartyId::P0), 3 * nb);
    assert_eq!(c.run.p0.acct.bytes(Phase::Online, PartyId::P1), 3 * nb);
    assert_eq!(c.run.dealer.acct.bytes(Phase::Online, PartyId::P1), 0);
}

#[test]
fn open_reveal_u16() {
    open_case::<u16>(1);
}
#[test]
fn open_reveal_u32() {
    open_case::<u32>(2);
}
#[test]
fn open_reveal_u64() {
    open_case::<u64>(3);
}

// ---------------------------------------------------------------------------------------
// Block 1: private-weight linear layer.

/// The index bits of `windows` of block 1's output [[z]] as P1 holds them online
/// (checked: P1 holds no z^ and exactly those windows of n elements), the same bits of
/// z + r in the plaintext reference, nothing elsewhere.
fn index_bits_seen<R: Ring>(
    e: &Engine,
    z: &Masked<R>,
    windows: &[Window],
    n: usize,
) -> Result<Vec<i64>> {
    let mut out: Vec<i64> = vec![];
    match e.role {
        Role::P1 if e.is_online() => {
            if z.hat.is_some() || z.win.len() != windows.len() {
                return Err(internal("P1 holds more or less than the index bits"));
            }
            for (w, (ww, idx)) in windows.iter().zip(&z.win) {
                if w != ww || idx.len() != n {
                    return Err(internal("wrong window at P1"));
                }
                out.extend(idx.iter().map(|&v| v as i64));
            }
        }
        Role::Plain => {
            let (h, r) = (z.hat.as_ref().unwrap(), z.r.as_ref().unwrap());
            for w in windows {
                out.extend(
                    h.iter()
                        .zip(r)
                        .map(|(h, r)| h.wadd(*r).window(w.j, w.k) as i64),
                );
            }
        }
        _ => {}
    }
    Ok(out)
}

struct LinCase {
    signs: bool,
    in_scale: bool,
    remask: bool,
    windows: Vec<Window>,
}

fn linear_case<R: Ring>(seed: u64, lc: LinCase) {
    let mut g = rng(seed);
    let (rows, d_in, d_out) = (3usize, 48usize, 12usize);
    let (w, sgn): (QWeights, Vec<i64>) = if lc.signs {
        let s: Vec<i8> = (0..d_in * d_out)
            .map(|_| if g.gen() { 1 } else { -1 })
            .collect();
        (
            QWeights::Signs(kernels::bitfc::pack_signs(&s, d_in, d_out)),
            s.iter().map(|&v| v as i64).collect(),
        )
    } else {
        let v: Vec<i64> = (0..d_in * d_out).map(|_| g.gen_range(-8..=7)).collect();
        (QWeights::Int(v.clone()), v)
    };
    let gam: Option<Vec<i64>> = lc
        .in_scale
        .then(|| (0..d_in).map(|_| g.gen_range(-300..=300)).collect());
    let a: Vec<i64> = (0..d_out).map(|_| g.gen_range(-50..=50)).collect();
    let b: Vec<i64> = (0..d_out).map(|_| g.gen()).collect();
    let q = QLinear {
        d_in,
        d_out,
        w,
        in_scale: gam.clone(),
        out_scale: a.clone(),
        bias: b.clone(),
    };
    let mut m = PrivateModel::default();
    m.linears.insert("w".into(), q);
    let model = Arc::new(m);

    // X: a row of ring edges, then full-range random values (products wrap)
    let mut x = edges::<R>();
    x.extend(random_ring::<R>(&mut g, rows * d_in - x.len()));
    let nz = rows * d_out;
    let (xs, windows, remask_in) = (x.clone(), lc.windows.clone(), lc.remask);
    let p = prog(
        move |e| e.register_linear::<R>("w", d_in, d_out),
        move |e| {
            let xm = input(e, &xs, &[rows, d_in])?;
            let xm = if remask_in {
                remask(e, &xm, Reveal::P0)?
            } else {
                xm
            };
            let z = e.linear(&xm, "w", &windows)?;
            let out = index_bits_seen(e, &z, &windows, nz)?;
            let zr = reveal_m(e, &z)?;
            Ok(zr.map(|v| [out, v].concat()))
        },
    );
    let c = check(&model, &p, &mem_cfg(seed));

    // naive Z = sum_i x_i g_i w_ij a_j + b_j (mod 2^l), computed in Z/2^64 and reduced
    let mut naive = vec![0i64; nz];
    for r in 0..rows {
        for j in 0..d_out {
            let mut acc = b[j];
            for i in 0..d_in {
                let gi = gam.as_ref().map_or(1, |g| g[i]);
                let t = x[r * d_in + i]
                    .to_i64()
                    .wrapping_mul(gi)
                    .wrapping_mul(sgn[i * d_out + j])
                    .wrapping_mul(a[j]);
                acc = acc.wrapping_add(t);
            }
            naive[r * d_out + j] = sig::<R>(acc as i128);
        }
    }
    let nwin = lc.windows.len() * nz;
    assert_eq!(&c.secure[nwin..], &naive[..], "secure Z != X W_eff + b");
    assert_eq!(&c.det[nwin..], &naive[..], "plain Z != X W_eff + b");
    // the index bits are masked: not the bits of Z itself (for most elements)
    for (wi, w) in lc.windows.iter().enumerate() {
        let same = (0..nz)
            .filter(|&i| c.secure[wi * nz + i] == R::from_i64(naive[i]).window(w.j, w.k) as i64)
            .count();
        assert!(
            same < nz / 2 + 2,
            "index bits look unmasked ({same} of {nz})"
        );
    }
    // bytes: P1 -> P0 online: x^ (and its opening share); P0 -> P1: exactly the requested
    // bits (each window packed to whole bytes) and the reveal
    let w = wbytes::<R>();
    let xin = (rows * d_in) as u64 * w + FRAME;
    let p1_sent = c.run.p1.acct.bytes(Phase::Online, PartyId::P0);
    assert_eq!(p1_sent, if lc.remask { 2 * xin } else { xin });
    let bits: u64 = lc
        .windows
        .iter()
        .map(|w| (nz as u64 * w.k as u64).div_ceil(8))
        .sum();
    let idx_msg = if lc.windows.is_empty() {
        0
    } else {
        bits + FRAME
    };
    assert_eq!(
        c.run.p0.acct.bytes(Phase::Online, PartyId::P1),
        idx_msg + nz as u64 * w + FRAME
    );
    // two flights: x^ to P0, then index bits (and the reveal) to P1
    assert_eq!(c.run.rounds(), 2);
}

#[test]
fn linear_signs_u32_two_windows() {
    linear_case::<u32>(
        10,
        LinCase {
            signs: true,
            in_scale: false,
            remask: false,
            windows: vec![Window { j: 8, k: 8 }, Window { j: 3, k: 5 }],
        },
    );
}
#[test]
fn linear_signs_in_scale_u64_remasked() {
    linear_case::<u64>(
        11,
        LinCase {
            signs: true,
            in_scale: true,
            remask: true,
            windows: vec![Window { j: 20, k: 12 }],
        },
    );
}
#[test]
fn linear_int_u32_remasked_in_scale() {
    linear_case::<u32>(
        12,
        LinCase {
            signs: false,
            in_scale: true,
            remask: true,
            windows: vec![Window { j: 0, k: 12 }, Window { j: 20, k: 12 }],
        },
    );
}
#[test]
fn linear_int_u64_no_windows() {
    linear_case::<u64>(
        13,
        LinCase {
            signs: false,
            in_scale: false,
            remask: false,
            windows: vec![],
        },
    );
}
#[test]
fn linear_u16_signs_and_int() {
    linear_case::<u16>(
        14,
        LinCase {
            signs: true,
            in_scale: true,
            remask: true,
            windows: vec![Window { j: 4, k: 6 }],
        },
    );
    linear_case::<u16>(
        15,
        LinCase {
            signs: false,
            in_scale: false,
            remask: false,
            windows: vec![Window { j: 0, k: 16 }],
        },
    );
}

/// A window the index bits cannot carry (k = 0, k > 32, or bits beyond the ring) is a
/// shape error in every role: no panic in the bit packing, no silent garbage.
#[test]
fn linear_rejects_invalid_windows() {
    let mut pm = PrivateModel::default();
    pm.linears.insert(
        "w".into(),
        QLinear {
            d_in: 4,
            d_out: 4,
            w: QWeights::Int(vec![1; 16]),
            in_scale: None,
            out_scale: vec![1; 4],
            bias: vec![0; 4],
        },
    );
    let model = Arc::new(pm);
    for w in [
        Window { j: 0, k: 40 },
        Window { j: 28, k: 8 },
        Window { j: 0, k: 0 },
    ] {
        let p = prog(
            |e| e.register_linear::<u32>("w", 4, 4),
            move |e| {
                let z = input::<u32>(e, &[1; 8], &[2, 4])?;
                let a = e.linear(&z, "w", &[w])?;
                reveal_m(e, &a)
            },
        );
        let plain =
            protocol::session::run_plain(model.clone(), None, protocol::Truncation::Stochastic, &p);
        assert!(
            matches!(plain, Err(ProtocolError::Shape { .. })),
            "{w:?}: the plaintext reference accepted the window"
        );
        // run_tapped drops a party's engine when it stops, so nobody waits on a failed peer
        let t = run_tapped(
            model.clone(),
            &p,
            protocol::seed::DealerSeeds::from_master(1),
            LutMode::Auto,
            &protocol::net::LinkConfig {
                recv_timeout: Some(std::time::Duration::from_secs(20)),
                ..Default::default()
            },
            Default::default(),
        );
        for (who, r) in [("P0", &t.p0), ("P1", &t.p1), ("D", &t.dealer)] {
            assert!(
                matches!(r, Err(ProtocolError::Shape { .. })),
                "{w:?}: {who} did not reject the window: {:?}",
                r.as_ref().err()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Block 2: secret x secret matmul.

fn naive_matmul(x: &[i64], y: &[i64], b: usize, m: usize, k: usize, n: usize) -> Vec<i64> {
    let mut z = vec![0i64; b * m * n];
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i64;
                for t in 0..k {
                    acc = acc.wrapping_add(
                        x[(bi * m + i) * k + t].wrapping_mul(y[(bi * k + t) * n + j]),
                    );
                }
                z[(bi * m + i) * n + j] = acc;
            }
        }
    }
    z
}

fn matmul_case<R: Ring>(seed: u64, with_c: bool, remasked: bool, b: usize) {
    let mut g = rng(seed);
    let (m, k, n) = (3usize, 5usize, 4usize);
    let mut x = edges::<R>();
    x.extend(random_ring::<R>(&mut g, b * m * k - x.len()));
    let y = random_ring::<R>(&mut g, b * k * n);
    let cval: i64 = g.gen();
    let mut pm = PrivateModel::default();
    pm.vectors.insert("c".into(), vec![cval]);
    let model = Arc::new(pm);
    let (sx, sy): (Vec<usize>, Vec<usize>) = if b == 1 {
        (vec![m, k], vec![k, n])
    } else {
        (vec![b, m, k], vec![b, k, n])
    };
    let (xs, ys) = (x.clone(), y.clone());
    let p = prog(
        move |e| {
            if with_c {
                e.register_vector::<R>("c", 1)?;
            }
            Ok(())
        },
        move |e| {
            let mut xm = input(e, &xs, &sx)?;
            let mut ym = input(e, &ys, &sy)?;
            if remasked {
                xm = remask(e, &xm, Reveal::Both)?;
                ym = remask(e, &ym, Reveal::Both)?;
            }
            let z = e.matmul_masked(&xm, &ym, with_c.then_some("c"))?;
            if z.shape.last() != Some(&n) || z.len() != b * m * n {
                return Err(internal("matmul output shape"));
            }
            reveal(e, &z)
        },
    );
    let c = check(&model, &p, &mem_cfg(seed));
    let mut naive = naive_matmul(&ring::to_i64s(&x), &ring::to_i64s(&y), b, m, k, n);
    if with_c {
        naive.iter_mut().for_each(|v| *v = v.wrapping_mul(cval));
    }
    let naive: Vec<i64> = naive.iter().map(|&v| sig::<R>(v as i128)).collect();
    assert_eq!(c.secure, naive, "secure c X Y");
    assert_eq!(c.det, naive, "plain c X Y");
    // no online message for the product itself: only inputs/openings and the reveal
    let w = wbytes::<R>();
    let dealer_to_p1 = c.run.dealer.acct.bytes(Phase::Offline, PartyId::P1);
    let nz = (b * m * n) as u64;
    let ins = (b * m * k + b * k * n) as u64;
    let extra = if with_c { nz + ins } else { 0 };
    let (opens, frames) = if remasked { (ins, 5) } else { (0, 3) };
    assert_eq!(
        dealer_to_p1,
        (ins + nz + extra + opens) * w + frames * FRAME
    );
}

#[test]
fn matmul_masked_u32_plain_and_scaled() {
    matmul_case::<u32>(20, false, false, 2);
    matmul_case::<u32>(21, true, true, 2);
}
#[test]
fn matmul_masked_u64_plain_and_scaled() {
    matmul_case::<u64>(22, false, true, 1);
    matmul_case::<u64>(23, true, false, 2);
}
#[test]
fn matmul_masked_u16_scaled() {
    matmul_case::<u16>(24, true, true, 1);
}

// ---------------------------------------------------------------------------------------
// Block 9 and block 10: elementwise products, squares, private scale.

fn product_case<R: Ring>(seed: u64) {
    let mut g = rng(seed);
    let (rows, cols) = (3usize, 6usize);
    let n = rows * cols;
    let mut x = edges::<R>();
    x.extend(random_ring::<R>(&mut g, n - x.len()));
    let y = random_ring::<R>(&mut g, n);
    let yrow = random_ring::<R>(&mut g, rows);
    let cvec: Vec<i64> = (0..cols).map(|_| g.gen()).collect();
    let mut pm = PrivateModel::default();
    pm.vectors.insert("g".into(), cvec.clone());
    let model = Arc::new(pm);
    let (xs, ys, yr) = (x.clone(), y.clone(), yrow.clone());
    let p = prog(
        move |e| e.register_vector::<R>("g", cols),
        move |e| {
            let xm = input(e, &xs, &[rows, cols])?;
            let ym = input(e, &ys, &[rows, cols])?;
            let yrm = input(e, &yr, &[rows, 1])?;
            let xb = remask(e, &xm, Reveal::Both)?;
            let yb = remask(e, &ym, Reveal::Both)?;
            let m1 = e.mul_masked(&xb, &yb)?;
            let m2 = e.mul_masked(&xb, &yrm)?;
            let sq = e.square_masked(&xb)?;
            let sq_in = e.square_masked(&xm)?;
            // scale on a value whose x^ only P0 holds
            let x0 = remask(e, &xm, Reveal::P0)?;
            let sc = e.scale_private(&x0, "g")?;
            let sc_in = e.scale_private(&xm, "g")?;
            let mut out = vec![];
            for a in [&m1, &m2, &sq, &sq_in, &sc, &sc_in] {
                out.push(reveal(e, a)?);
            }
            Ok(out
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat()))
        },
    );
    let c = check(&model, &p, &mem_cfg(seed));
    let (xi, yi, yri) = (ring::to_i64s(&x), ring::to_i64s(&y), ring::to_i64s(&yrow));
    let s = |v: i64| sig::<R>(v as i128);
    let mut naive = vec![];
    naive.extend((0..n).map(|i| s(xi[i].wrapping_mul(yi[i]))));
    naive.extend((0..n).map(|i| s(xi[i].wrapping_mul(yri[i / cols]))));
    for _ in 0..2 {
        naive.extend((0..n).map(|i| s(xi[i].wrapping_mul(xi[i]))));
    }
    for _ in 0..2 {
        naive.extend((0..n).map(|i| s(xi[i].wrapping_mul(cvec[i % cols]))));
    }
    assert_eq!(c.secure, naive);
    assert_eq!(c.det, naive);
}

#[test]
fn products_square_scale_u16() {
    product_case::<u16>(30);
}
#[test]
fn products_square_scale_u32() {
    product_case::<u32>(31);
}
#[test]
fn products_square_scale_u64() {
    product_case::<u64>(32);
}

// ---------------------------------------------------------------------------------------
// P0's private affine map on a value whose x^ only P0 holds (block 1's output pattern).

fn affine_case<R: Ring>(seed: u64, windows: Vec<Window>, remask_in: bool) {
    let mut g = rng(seed);
    let (rows, cols) = (4usize, 5usize);
    let n = rows * cols;
    let mut x = edges::<R>();
    x.extend(random_ring::<R>(&mut g, n - x.len()));
    // scale: ring edges and random; bias: full range
    let mut cvec: Vec<i64> = vec![0, -1, 1];
    cvec.extend((cvec.len()..cols).map(|_| g.gen::<i64>()));
    let bvec: Vec<i64> = (0..cols).map(|_| g.gen()).collect();
    let mut pm = PrivateModel::default();
    pm.vectors.insert("g".into(), cvec.clone());
    pm.vectors.insert("b".into(), bvec.clone());
    let model = Arc::new(pm);
    let (xs, win) = (x.clone(), windows.clone());
    let p = prog(
        move |e| e.register_vector::<R>("g", cols),
        move |e| {
            let xm = input(e, &xs, &[rows, cols])?;
            let xm = if remask_in {
                remask(e, &xm, Reveal::P0)?
            } else {
                xm
            };
            let z = e.affine_private(&xm, "g", "b", &win)?;
            let out = index_bits_seen(e, &z, &win, n)?;
            let zr = reveal_m(e, &z)?;
            Ok(zr.map(|v| [out, v].concat()))
        },
    );
    let c = check(&model, &p, &mem_cfg(seed));
    let xi = ring::to_i64s(&x);
    let naive: Vec<i64> = (0..n)
        .map(|i| {
            let v = xi[i]
                .wrapping_mul(cvec[i % cols])
                .wrapping_add(bvec[i % cols]);
            sig::<R>(v as i128)
        })
        .collect();
    let nwin = windows.len() * n;
    assert_eq!(&c.secure[nwin..], &naive[..], "secure c x + b");
    assert_eq!(&c.det[nwin..], &naive[..], "plain c x + b");
    // the index bits are masked: not the bits of Z itself (for most elements)
    for (wi, w) in windows.iter().enumerate() {
        let same = (0..n)
            .filter(|&i| c.secure[wi * n + i] == R::from_i64(naive[i]).window(w.j, w.k) as i64)
            .count();
        assert!(same < n / 2 + 2, "index bits look unmasked ({same} of {n})");
    }
    // online, P0 -> P1: exactly the window bits (one message) and the reveal's share;
    // nothing of c x + b's own words
    let wb = wbytes::<R>();
    let bits: u64 = windows
        .iter()
        .map(|w| (n as u64 * w.k as u64).div_ceil(8))
        .sum();
    let idx_msg = if windows.is_empty() { 0 } else { bits + FRAME };
    // (a remask to P0 sends P0 -> P1 nothing)
    assert_eq!(
        c.run.p0.acct.bytes(Phase::Online, PartyId::P1),
        idx_msg + n as u64 * wb + FRAME
    );
    if !remask_in {
        // x^ to P0, then the index bits (and the reveal) to P1
        assert_eq!(c.run.rounds(), 2);
    }
}

#[test]
fn affine_private_u32_two_windows() {
    affine_case::<u32>(
        40,
        vec![Window { j: 8, k: 8 }, Window { j: 3, k: 5 }],
        false,
    );
}
#[test]
fn affine_private_u64_remasked() {
    affine_case::<u64>(41, vec![Window { j: 20, k: 12 }], true);
}
#[test]
fn affine_private_u16_no_windows() {
    affine_case::<u16>(42, vec![], false);
    affine_case::<u16>(43, vec![Window { j: 0, k: 16 }], true);
}

// ---------------------------------------------------------------------------------------
// Blocks 3-5 and 8: public tables with windowed indexing, output ring != input ring.

/// A table with pairwise distinct entries (an odd multiplier is a bijection of Z/2^l).
fn distinct_table<O: Ring>(k: u32, signed: bool) -> Table<O> {
    Table::from_fn(k, signed, |i| {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64)
            .wrapping_add(12345)
    })
}

/// Test inputs for window [j, j+k): ring and window edges, random in-window values, and
/// out-of-window values (which alias mod 2^k). Returns the inputs.
fn lut_inputs<R: Ring>(g: &mut impl Rng, j: u32, k: u32, signed: bool, n_rand: usize) -> Vec<R> {
    let (lo, hi): (i128, i128) = if signed {
        (-(1i128 << (k - 1)), 1i128 << (k - 1))
    } else {
        (0, 1i128 << k)
    };
    let s = 1i128 << j;
    let mut v: Vec<i128> = vec![
        0,
        1,
        -1,
        lo * s,                       // window min
        (hi - 1) * s - 1,             // top of the window, room for a carry
        (hi - 1) * s,                 // floor = hi - 1 exactly
        hi * s + 3 * s + 1,           // out of window, aliases
        (lo - 5) * s - 1,             // out of window below
        1i128 << (R::BITS - 1),       // ring min
        (1i128 << (R::BITS - 1)) - 1, // ring max
        s / 2,                        // half-way: carry with probability 1/2
    ];
    for _ in 0..n_rand {
        let f = g.gen_range(lo..hi - 1);
        let low = g.gen_range(0..s);
        v.push(f * s + low);
    }
    v.iter().map(|&t| R::from_u64(t as u64)).collect()
}

/// Checks outputs of a table lookup against the naive T[floor(x/2^j) (+1)] and returns
/// the number of carries observed. `det` must equal T[floor(x/2^j)] exactly.
fn check_lut_outputs<R: Ring>(
    x: &[R],
    j: u32,
    k: u32,
    entries: &[i64],
    secure: &[i64],
    det: &[i64],
) -> u64 {
    let mk = (1i64 << k) - 1;
    let mut carries = 0;
    for i in 0..x.len() {
        let f = x[i].to_i64() >> j;
        let (i0, i1) = ((f & mk) as usize, (f.wrapping_add(1) & mk) as usize);
        assert_eq!(
            det[i], entries[i0],
            "det lookup {i}: x = {:?}, j = {j}, k = {k}",
            x[i]
        );
        if secure[i] == entries[i1] {
            assert!(j > 0, "a carry with j = 0 at {i}");
            carries += 1;
        } else {
            assert_eq!(
                secure[i], entries[i0],
                "secure lookup {i}: neither T[f] nor T[f+1]"
            );
        }
    }
    carries
}

fn expected_oow<R: Ring>(x: &[R], j: u32, k: u32, signed: bool) -> u64 {
    let (lo, hi) = if signed {
        (-(1i64 << (k - 1)), 1i64 << (k - 1))
    } else {
        (0, 1i64 << k)
    };
    x.iter()
        .filter(|v| {
            let f = v.to_i64() >> j;
            f < lo || f >= hi
        })
        .count() as u64
}

fn lut_case<R: Ring, O: Ring>(
    mode: LutMode,
    k: u32,
    j: u32,
    signed: bool,
    remasked: bool,
    seed: u64,
) {
    let mut g = rng(seed);
    let x: Vec<R> = lut_inputs::<R>(&mut g, j, k, signed, 13);
    let n = x.len();
    let t = distinct_table::<O>(k, signed);
    let entries: Vec<i64> = ring::to_i64s(&t.entries);
    let w = Window { j, k };
    let (xs, tt) = (x.clone(), t.clone());
    let p = prog(no_reg, move |e| {
        let mut z = input(e, &xs, &[n])?;
        if remasked {
            z = remask(e, &z, Reveal::Both)?;
        }
        let a = e.lut::<R, O>(&z, w, &tt)?;
        reveal(e, &a)
    });
    let cfg = cfg(seed, mode, LocalTransport::Mem);
    let c = check(&model(), &p, &cfg);
    let carries = check_lut_outputs(&x, j, k, &entries, &c.secure, &c.det);
    assert_eq!(
        carries, c.stats.carries,
        "carries seen vs the reference's count"
    );
    assert_eq!(c.det_stats.carries, 0);
    assert_eq!(c.det_stats.lookups, n as u64);
    let oow = expected_oow(&x, j, k, signed);
    if j + k < R::BITS {
        assert!(oow >= 3, "the inputs include out-of-window values");
    }
    assert_eq!(c.det_stats.out_of_window, oow, "out-of-window count");
    // dealer material of the lookup: 2^k words per lookup (rotated) or the DPF keys
    let (wi, wo) = (wbytes::<R>(), wbytes::<O>());
    let opens = if remasked { n as u64 * wi + FRAME } else { 0 };
    let base = n as u64 * wi + FRAME + opens;
    let to_p1 = c.run.dealer.acct.bytes(Phase::Offline, PartyId::P1);
    let to_p0 = c.run.dealer.acct.bytes(Phase::Offline, PartyId::P0);
    match mode {
        LutMode::Rotated => {
            assert_eq!(to_p1, base + ((n as u64) << k) * wo + FRAME);
            assert_eq!(to_p0, 0);
        }
        LutMode::Dpf => {
            let kb = kernels::dpf::key_bytes(k, O::BITS) as u64;
            assert_eq!(to_p1, base + n as u64 * kb + FRAME);
            assert_eq!(to_p0, n as u64 * kb + FRAME);
        }
        LutMode::Auto => {}
    }
    // a lookup sends nothing online: only x^ (and the opening) and the reveal
    let onl = c.run.p0.acct.bytes(Phase::Online, PartyId::P1);
    let both = if remasked { n as u64 * wi + FRAME } else { 0 };
    assert_eq!(onl, both + n as u64 * wo + FRAME);
}

#[test]
fn lut_rotated_u32_to_u64() {
    lut_case::<u32, u64>(LutMode::Rotated, 4, 3, true, true, 40);
    lut_case::<u32, u64>(LutMode::Rotated, 8, 0, false, false, 41);
    lut_case::<u32, u64>(LutMode::Rotated, 12, 10, true, true, 42);
}
#[test]
fn lut_rotated_u64_to_u32() {
    lut_case::<u64, u32>(LutMode::Rotated, 4, 30, false, true, 43);
    lut_case::<u64, u32>(LutMode::Rotated, 8, 20, true, false, 44);
    lut_case::<u64, u32>(LutMode::Rotated, 12, 0, true, true, 45);
}
#[test]
fn lut_dpf_u32_to_u64() {
    lut_case::<u32, u64>(LutMode::Dpf, 4, 0, true, false, 46);
    lut_case::<u32, u64>(LutMode::Dpf, 8, 12, true, true, 47);
    lut_case::<u32, u64>(LutMode::Dpf, 12, 6, false, true, 48);
}
#[test]
fn lut_dpf_u64_to_u32() {
    lut_case::<u64, u32>(LutMode::Dpf, 4, 40, true, true, 49);
    lut_case::<u64, u32>(LutMode::Dpf, 8, 0, false, true, 50);
    lut_case::<u64, u32>(LutMode::Dpf, 12, 24, true, false, 51);
}
#[test]
fn lut_u16_and_same_ring() {
    lut_case::<u16, u32>(LutMode::Dpf, 12, 4, true, true, 52);
    lut_case::<u16, u64>(LutMode::Rotated, 8, 2, true, true, 53);
    lut_case::<u32, u16>(LutMode::Dpf, 8, 5, true, true, 54);
    lut_case::<u32, u16>(LutMode::Rotated, 4, 5, false, true, 55);
    lut_case::<u32, u32>(LutMode::Dpf, 1, 7, false, true, 56);
    lut_case::<u64, u64>(LutMode::Auto, 12, 16, true, true, 57);
}

/// Stochastic rounding: P(carry) = (x mod 2^j) / 2^j, the same in both modes.
#[test]
fn lut_carries_are_unbiased_rounding() {
    let (j, k) = (6u32, 8u32);
    let n = 256usize;
    // x mod 2^6 = 16: carry probability 1/4; x mod 2^6 = 48: 3/4
    for (low, p_c) in [(16i64, 0.25f64), (48, 0.75)] {
        let mut g = rng(low as u64);
        let x: Vec<u32> = (0..n)
            .map(|_| u32::from_i64(g.gen_range(-100i64..100) * 64 + low))
            .collect();
        let t = distinct_table::<u32>(k, true);
        let entries = ring::to_i64s(&t.entries);
        let mut outs = vec![];
        for mode in [LutMode::Rotated, LutMode::Dpf] {
            let (xs, tt) = (x.clone(), t.clone());
            let p = prog(no_reg, move |e| {
                let z = input(e, &xs, &[n])?;
                let z = remask(e, &z, Reveal::Both)?;
                let a = e.lut::<u32, u32>(&z, Window { j, k }, &tt)?;
                reveal(e, &a)
            });
            let c = check(&model(), &p, &cfg(77, mode, LocalTransport::Mem));
            let carries = check_lut_outputs(&x, j, k, &entries, &c.secure, &c.det);
            let (mean, sd) = (n as f64 * p_c, (n as f64 * p_c * (1.0 - p_c)).sqrt());
            assert!(
                (carries as f64 - mean).abs() < 5.0 * sd,
                "{carries} carries of {n}, expected {mean} +- {sd}"
            );
            outs.push(c.secure);
        }
        // the carries come from the masks, not from the table's dealing mode
        assert_eq!(
            outs[0], outs[1],
            "rotated and DPF mode disagree under the same seed"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Block 7: two-input tables with a rotation per axis.

fn lut2_case<R: Ring, S: Ring, O: Ring>(
    mode: LutMode,
    wx: Window,
    wy: Window,
    per_row: bool,
    seed: u64,
) {
    let mut g = rng(seed);
    let (rows, cols) = (4usize, 6usize);
    let n = rows * cols;
    let ny = if per_row { rows } else { n };
    let fx = |g: &mut rand::rngs::StdRng, w: Window| -> i128 {
        let s = 1i128 << w.j;
        g.gen_range(-(1i128 << w.k)..(2i128 << w.k)) * s + g.gen_range(0..s)
    };
    let mut x: Vec<R> = (0..n).map(|_| R::from_u64(fx(&mut g, wx) as u64)).collect();
    x[0] = R::ZERO;
    x[1] = R::from_i64(-1);
    let mut y: Vec<S> = (0..ny)
        .map(|_| S::from_u64(fx(&mut g, wy) as u64))
        .collect();
    y[0] = S::from_i64(-1);
    let k = wx.k + wy.k;
    let entries: Vec<O> = (0..1u64 << k)
        .map(|i| O::from_u64(i.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(99)))
        .collect();
    let t = Table {
        k,
        lo: Some(0),
        entries: entries.clone(),
    };
    let (xs, ys, tt) = (x.clone(), y.clone(), t);
    let yshape = if per_row {
        vec![rows, 1]
    } else {
        vec![rows, cols]
    };
    let p = prog(no_reg, move |e| {
        let zx = input(e, &xs, &[rows, cols])?;
        let zx = remask(e, &zx, Reveal::Both)?;
        let zy = input(e, &ys, &yshape)?;
        let zy = remask(e, &zy, Reveal::Both)?;
        let a = e.lut2::<R, S, O>(&zx, wx, &zy, wy, &tt)?;
        reveal(e, &a)
    });
    let c = check(&model(), &p, &cfg(seed, mode, LocalTransport::Mem));
    let ent = ring::to_i64s(&entries);
    let (mx, my) = ((1i64 << wx.k) - 1, (1i64 << wy.k) - 1);
    let at = |a: i64, b: i64| ent[(((a & mx) << wy.k) | (b & my)) as usize];
    let mut row_carry: Vec<Option<i64>> = vec![None; rows];
    for i in 0..n {
        let yi = if per_row { i / cols } else { i };
        let (f, h) = (x[i].to_i64() >> wx.j, y[yi].to_i64() >> wy.j);
        assert_eq!(c.det[i], at(f, h), "det 2-D lookup {i}");
        let found = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .into_iter()
            .filter(|&(cx, cy)| c.secure[i] == at(f + cx, h + cy))
            .collect::<Vec<_>>();
        assert_eq!(
            found.len(),
            1,
            "secure 2-D lookup {i} is none of T[f+cx, h+cy]"
        );
        let (cx, cy) = found[0];
        assert!(wx.j > 0 || cx == 0, "carry on x with j = 0");
        assert!(wy.j > 0 || cy == 0, "carry on y with j = 0");
        if per_row {
            // y has one mask per row: one carry per row
            let rc = row_carry[i / cols].get_or_insert(cy);
            assert_eq!(*rc, cy, "row {}: y carries differ within a row", i / cols);
        }
    }
    assert_eq!(c.det_stats.lookups, (n + ny) as u64);
}

#[test]
fn lut2_rotated_per_row() {
    lut2_case::<u32, u64, u32>(
        LutMode::Rotated,
        Window { j: 4, k: 4 },
        Window { j: 10, k: 4 },
        true,
        60,
    );
    lut2_case::<u64, u32, u64>(
        LutMode::Rotated,
        Window { j: 0, k: 6 },
        Window { j: 3, k: 6 },
        true,
        61,
    );
}
#[test]
fn lut2_dpf_per_row() {
    lut2_case::<u32, u64, u32>(
        LutMode::Dpf,
        Window { j: 4, k: 4 },
        Window { j: 10, k: 4 },
        true,
        62,
    );
    lut2_case::<u64, u32, u64>(
        LutMode::Dpf,
        Window { j: 7, k: 6 },
        Window { j: 0, k: 6 },
        true,
        63,
    );
}
#[test]
fn lut2_per_element_both_modes() {
    lut2_case::<u32, u32, u64>(
        LutMode::Rotated,
        Window { j: 2, k: 5 },
        Window { j: 2, k: 3 },
        false,
        64,
    );
    lut2_case::<u32, u32, u64>(
        LutMode::Dpf,
        Window { j: 2, k: 5 },
        Window { j: 2, k: 3 },
        false,
        65,
    );
    lut2_case::<u16, u64, u32>(
        LutMode::Dpf,
        Window { j: 6, k: 2 },
        Window { j: 30, k: 10 },
        false,
        66,
    );
}

// ---------------------------------------------------------------------------------------
// Block 6: private tables.

fn lut_private_case<R: Ring, O: Ring>(k: u32, j: u32, seed: u64) {
    let mut g = rng(seed);
    let x: Vec<R> = lut_inputs::<R>(&mut g, j, k, false, 9);
    let n = x.len();
    // distinct private entries
    let entries: Vec<i64> = (0..1i64 << k)
        .map(|i| sig::<O>((i as i128) * 0x6A09_E667 + g.gen_range(0..1i128 << 20) * (1 << k)))
        .collect();
    let mut pm = PrivateModel::default();
    pm.vectors.insert("tab".into(), entries.clone());
    let model = Arc::new(pm);
    let xs = x.clone();
    let p = prog(
        move |e| e.register_vector::<O>("tab", 1 << k),
        move |e| {
            let z = input(e, &xs, &[n])?;
            let z = remask(e, &z, Reveal::Both)?;
            let a = e.lut_private::<R, O>(&z, Window { j, k }, "tab")?;
            reveal(e, &a)
        },
    );
    let c = check(&model, &p, &mem_cfg(seed));
    let carries = check_lut_outputs(&x, j, k, &entries, &c.secure, &c.det);
    assert_eq!(carries, c.stats.carries);
}

#[test]
fn lut_private_u32_to_u64() {
    lut_private_case::<u32, u64>(4, 3, 70);
    lut_private_case::<u32, u64>(8, 0, 71);
}
#[test]
fn lut_private_u64_to_u32() {
    lut_private_case::<u64, u32>(8, 33, 72);
    lut_private_case::<u64, u32>(4, 0, 73);
}

// ---------------------------------------------------------------------------------------
// Local operations: sub_masked, cast_down, moves, additive arithmetic.

#[test]
fn sub_masked_then_lookup() {
    type R = u32;
    let mut g = rng(80);
    let (rows, cols) = (4usize, 5usize);
    let n = rows * cols;
    let x: Vec<R> = random_small(&mut g, n, 1 << 14);
    let y: Vec<R> = random_small(&mut g, n, 1 << 14);
    let yr: Vec<R> = random_small(&mut g, rows, 1 << 14);
    let (j, k) = (5u32, 12u32);
    let t = distinct_table::<u64>(k, true);
    let entries = ring::to_i64s(&t.entries);
    let (xs, ys, yrs, tt) = (x.clone(), y.clone(), yr.clone(), t.clone());
    let p = prog(no_reg, move |e| {
        let xm = input(e, &xs, &[rows, cols])?;
        let xm = remask(e, &xm, Reveal::Both)?;
        let ym = input(e, &ys, &[rows, cols])?;
        let yrm = input(e, &yrs, &[rows, 1])?;
        let d1 = e.sub_masked(&xm, &ym)?;
        let d2 = e.sub_masked(&xm, &yrm)?;
        let l1 = e.lut::<R, u64>(&d1, Window { j, k }, &tt)?;
        let l2 = e.lut::<R, u64>(&d2, Window { j, k }, &tt)?;
        let out = vec![
            reveal_m(e, &d1)?,
            reveal_m(e, &d2)?,
            reveal(e, &l1)?,
            reveal(e, &l2)?,
        ];
        Ok(out
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()))
    });
    let c = check(&model(), &p, &mem_cfg(80));
    let d1: Vec<R> = (0..n).map(|i| x[i].wsub(y[i])).collect();
    let d2: Vec<R> = (0..n).map(|i| x[i].wsub(yr[i / cols])).collect();
    assert_eq!(&c.secure[..n], &ring::to_i64s(&d1)[..]);
    assert_eq!(&c.secure[n..2 * n], &ring::to_i64s(&d2)[..]);
    check_lut_outputs(
        &d1,
        j,
        k,
        &entries,
        &c.secure[2 * n..3 * n],
        &c.det[2 * n..3 * n],
    );
    check_lut_outputs(&d2, j, k, &entries, &c.secure[3 * n..], &c.det[3 * n..]);
}

#[test]
fn cast_down_additive() {
    let mut g = rng(81);
    let mut x = edges::<u64>();
    x.extend(random_ring::<u64>(&mut g, 7));
    let n = x.len();
    let xs = x.clone();
    let p = prog(no_reg, move |e| {
        let xm = input(e, &xs, &[n])?;
        let xm = remask(e, &xm, Reveal::Both)?;
        let a = e.to_additive(&xm)?;
        let a32 = e.cast_down::<u64, u32>(&a);
        let a16 = e.cast_down::<u64, u16>(&a);
        let m32 = e.open(&a32, Reveal::Both)?;
        let a32b = e.to_additive(&m32)?;
        let a16b = e.cast_down::<u32, u16>(&a32b);
        let out = vec![reveal_m(e, &m32)?, reveal(e, &a16)?, reveal(e, &a16b)?];
        Ok(out
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()))
    });
    let c = check(&model(), &p, &mem_cfg(81));
    let mut naive: Vec<i64> = x.iter().map(|v| *v as u32 as i32 as i64).collect();
    naive.extend(x.iter().map(|v| *v as u16 as i16 as i64));
    naive.extend(x.iter().map(|v| *v as u16 as i16 as i64));
    assert_eq!(c.secure, naive);
    assert_eq!(c.det, naive);
}

#[test]
fn local_additive_ops() {
    type R = u32;
    let mut g = rng(82);
    let (rows, cols) = (3usize, 4usize);
    let n = rows * cols;
    let x: Vec<R> = random_ring(&mut g, n);
    let y: Vec<R> = random_ring(&mut g, n);
    let yr: Vec<R> = random_ring(&mut g, rows);
    let bias: Vec<i64> = (0..cols).map(|_| g.gen()).collect();
    let mut pm = PrivateModel::default();
    pm.vectors.insert("b".into(), bias.clone());
    let model = Arc::new(pm);
    let (xs, ys, yrs) = (x.clone(), y.clone(), yr.clone());
    let p = prog(no_reg, move |e| {
        let xm = input(e, &xs, &[rows, cols])?;
        let x0 = remask(e, &xm, Reveal::P0)?;
        let xa = e.to_additive(&x0)?;
        let ym = input(e, &ys, &[rows, cols])?;
        let ya = e.to_additive(&ym)?;
        let yrm = input(e, &yrs, &[rows, 1])?;
        let yra = e.to_additive(&yrm)?;
        let s = e.add(&xa, &ya)?;
        let d = e.sub(&xa, &yra)?;
        let m = e.mul_public(&xa, -3);
        let t = e.sum_last(&xa);
        let b = e.add_private(&xa, "b")?;
        let mut out = vec![];
        for a in [&s, &d, &m, &t, &b] {
            out.push(reveal(e, a)?);
        }
        Ok(out
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()))
    });
    let c = check(&model, &p, &mem_cfg(82));
    let s = |v: u32| v as i32 as i64;
    let mut naive = vec![];
    naive.extend((0..n).map(|i| s(x[i].wrapping_add(y[i]))));
    naive.extend((0..n).map(|i| s(x[i].wrapping_sub(yr[i / cols]))));
    naive.extend((0..n).map(|i| s(x[i].wrapping_mul(3u32.wrapping_neg()))));
    naive.extend((0..rows).map(|r| {
        s(x[r * cols..(r + 1) * cols]
            .iter()
            .fold(0u32, |a, b| a.wrapping_add(*b)))
    }));
    naive.extend((0..n).map(|i| s(x[i].wrapping_add(bias[i % cols] as u32))));
    assert_eq!(c.secure, naive);
    assert_eq!(c.det, naive);
}

/// Split heads of a masked value (x^, masks and P1's index bits move together), the
/// attention product Q K^T on the moved values, merge back, first rows.
#[test]
fn move_masked_heads_and_transpose() {
    type R = u32;
    let mut g = rng(83);
    let (batch, seq, heads, dh) = (2usize, 3usize, 2usize, 4usize);
    let (nr, nc) = (batch * seq, heads * dh);
    let n = nr * nc;
    let q: Vec<R> = random_small(&mut g, n, 1000);
    let kk: Vec<R> = random_small(&mut g, n, 1000);
    // a linear whose index bits P1 holds, moved before its lookup
    let sg: Vec<i8> = (0..nc * nc).map(|_| if g.gen() { 1 } else { -1 }).collect();
    let mut pm = PrivateModel::default();
    pm.linears.insert(
        "w".into(),
        QLinear {
            d_in: nc,
            d_out: nc,
            w: QWeights::Signs(kernels::bitfc::pack_signs(&sg, nc, nc)),
            in_scale: None,
            out_scale: vec![1; nc],
            bias: vec![0; nc],
        },
    );
    let model = Arc::new(pm);
    let (j, k) = (3u32, 8u32);
    let t = distinct_table::<u32>(k, true);
    let entries = ring::to_i64s(&t.entries);
    let split = Move::SplitHeads { batch, heads };
    let (qs, ks, tt) = (q.clone(), kk.clone(), t.clone());
    let p = prog(
        move |e| e.register_linear::<R>("w", nc, nc),
        move |e| {
            let qm = input(e, &qs, &[nr, nc])?;
            let qm = remask(e, &qm, Reveal::Both)?;
            let km = input(e, &ks, &[nr, nc])?;
            let km = remask(e, &km, Reveal::Both)?;
            let qh = e.move_masked(&qm, split)?;
            let kh = e.move_masked(&km, split)?;
            let kt = e.move_masked(&kh, Move::TransposeLast2)?;
            if qh.shape != [batch * heads, seq, dh] || kt.shape != [batch * heads, dh, seq] {
                return Err(internal("moved shapes"));
            }
            let s = e.matmul_masked(&qh, &kt, None)?;
            let back = e.move_masked(&qh, Move::MergeHeads { batch })?;
            let first = e.move_masked(&qm, Move::FirstRows { batch })?;
            let z = e.linear(&qm, "w", &[Window { j, k }])?;
            let zh = e.move_masked(&z, split)?;
            let l = e.lut::<R, u32>(&zh, Window { j, k }, &tt)?;
            let out = vec![
                reveal_m(e, &qh)?,
                reveal(e, &s)?,
                reveal_m(e, &back)?,
                reveal_m(e, &first)?,
                reveal(e, &l)?,
            ];
            Ok(out
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat()))
        },
    );
    let c = check(&model, &p, &mem_cfg(83));
    let qi = ring::to_i64s(&q);
    let ki = ring::to_i64s(&kk);
    // naive split: out[((b H + h) n + i) d + t] = in[(b n + i) H d + h d + t]
    let split_n = |v: &[i64]| {
        let mut o = vec![0i64; n];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    for t in 0..dh {
                        o[((b * heads + h) * seq + i) * dh + t] =
                            v[(b * seq + i) * nc + h * dh + t];
                    }
                }
            }
        }
        o
    };
    let (qh, kh) = (split_n(&qi), split_n(&ki));
    let mut scores = vec![];
    for bh in 0..batch * heads {
        for i in 0..seq {
            for jj in 0..seq {
                let s: i64 = (0..dh)
                    .map(|t| qh[(bh * seq + i) * dh + t] * kh[(bh * seq + jj) * dh + t])
                    .sum();
                scores.push(sig::<R>(s as i128));
            }
        }
    }
    let mut first = vec![];
    for b in 0..batch {
        first.extend_from_slice(&qi[b * seq * nc..b * seq * nc + nc]);
    }
    let mut off = 0;
    let mut take = |len: usize| {
        let r = off..off + len;
        off += len;
        r
    };
    let r = take(n);
    assert_eq!(&c.secure[r.clone()], &qh[..], "split heads");
    let r = take(batch * heads * seq * seq);
    assert_eq!(&c.secure[r], &scores[..], "Q K^T per head");
    let r = take(n);
    assert_eq!(&c.secure[r], &qi[..], "merge heads");
    let r = take(batch * nc);
    assert_eq!(&c.secure[r], &first[..], "first rows");
    let r = take(n);
    // the lookup on moved index bits: naive Z = Q W, split, T[floor(z/2^j) (+1)]
    let mut z = vec![0u32; n];
    for i in 0..nr {
        for o in 0..nc {
            let s: i64 = (0..nc)
                .map(|t| qi[i * nc + t] * sg[t * nc + o] as i64)
                .sum();
            z[i * nc + o] = s as u32;
        }
    }
    let zh: Vec<u32> = split_n(&ring::to_i64s(&z))
        .iter()
        .map(|&v| v as u32)
        .collect();
    check_lut_outputs(&zh, j, k, &entries, &c.secure[r.clone()], &c.det[r]);
    assert_eq!(off, c.secure.len());
}

// ---------------------------------------------------------------------------------------
// A small chain over both transports and both table modes.

#[test]
fn chain_linear_lut_matmul_lut_mem_and_tcp() {
    type R = u32;
    let mut g = rng(90);
    let (rows, d_in, d_out) = (4usize, 16usize, 8usize);
    let x: Vec<R> = random_small(&mut g, rows * d_in, 100);
    let sg: Vec<i8> = (0..d_in * d_out)
        .map(|_| if g.gen() { 1 } else { -1 })
        .collect();
    let bias: Vec<i64> = (0..d_out).map(|_| g.gen_range(-50..=50)).collect();
    let cval = 3i64;
    let mut pm = PrivateModel::default();
    pm.linears.insert(
        "w1".into(),
        QLinear {
            d_in,
            d_out,
            w: QWeights::Signs(kernels::bitfc::pack_signs(&sg, d_in, d_out)),
            in_scale: None,
            out_scale: vec![3; d_out],
            bias: bias.clone(),
        },
    );
    pm.vectors.insert("c".into(), vec![cval]);
    let model = Arc::new(pm);
    let w1 = Window { j: 4, k: 10 };
    let w2 = Window { j: 12, k: 12 };
    let t1 = Table::<u32>::from_fn(w1.k, true, |i| i.max(0) - 7);
    let t2 = Table::<u64>::from_fn(w2.k, true, |i| i * i * 1000 + 1);
    let (xs, tt1, tt2) = (x.clone(), t1.clone(), t2.clone());
    let p = prog(
        move |e| {
            e.register_linear::<R>("w1", d_in, d_out)?;
            e.register_vector::<R>("c", 1)
        },
        move |e| {
            let xm = input(e, &xs, &[rows, d_in])?;
            let z = e.linear(&xm, "w1", &[w1])?;
            let a = e.lut::<R, R>(&z, w1, &tt1)?;
            let am = e.open(&a, Reveal::Both)?;
            let at = e.move_masked(&am, Move::TransposeLast2)?;
            let m = e.matmul_masked(&am, &at, Some("c"))?;
            let mm = e.open(&m, Reveal::Both)?;
            let o = e.lut::<R, u64>(&mm, w2, &tt2)?;
            reveal(e, &o)
        },
    );
    // naive deterministic chain, exact integers
    let xi = ring::to_i64s(&x);
    let mut a = vec![0i64; rows * d_out];
    for r in 0..rows {
        for o in 0..d_out {
            let z: i64 = (0..d_in)
                .map(|i| xi[r * d_in + i] * sg[i * d_out + o] as i64)
                .sum::<i64>()
                * 3
                + bias[o];
            let f = z >> w1.j;
            assert!(
                (-512..511).contains(&f),
                "chain inputs leave the first window"
            );
            a[r * d_out + o] = f.max(0) - 7;
        }
    }
    let mut naive = vec![];
    for r in 0..rows {
        for s in 0..rows {
            let m: i64 = cval
                * (0..d_out)
                    .map(|o| a[r * d_out + o] * a[s * d_out + o])
                    .sum::<i64>();
            let f = m >> w2.j;
            assert!((-2048..2047).contains(&f), "chain leaves the second window");
            naive.push(f * f * 1000 + 1);
        }
    }
    let mut outs = vec![];
    // the last run spills P0's and P1's offline results to disk (a directory of its own:
    // spill files are named by process and role only)
    let spill_dir =
        std::env::temp_dir().join(format!("protocol-blocks-chain-{}", std::process::id()));
    for (mode, tr, spill) in [
        (LutMode::Rotated, LocalTransport::Mem, false),
        (LutMode::Dpf, LocalTransport::Tcp, false),
        (LutMode::Auto, LocalTransport::Mem, false),
        (LutMode::Rotated, LocalTransport::Tcp, false),
        (LutMode::Dpf, LocalTransport::Mem, true),
    ] {
        let mut cf = cfg(90, mode, tr);
        if spill {
            cf.spill = Some(spill_dir.clone());
        }
        let c = check(&model, &p, &cf);
        assert_eq!(c.det, naive, "plain chain vs naive");
        assert_eq!(c.det_stats.out_of_window, 0);
        // with the same dealer seed all modes, transports and spilling agree
        outs.push(c.secure);
        // x^ to P0; index bits to P1; P1's halves of the openings of A and of M (P0's
        // halves travel in parallel); the reveal
        assert_eq!(c.run.rounds(), 4);
    }
    let _ = std::fs::remove_dir_all(&spill_dir);
    for o in &outs[1..] {
        assert_eq!(
            o, &outs[0],
            "same seed, different mode/transport, different output"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Truncation with ring change without a table (trunc_ext).

/// c (floor(z / 2^j) + carry) into ring O from the window bits, valid while the truncated
/// value stays in [-2^(k-2), 2^(k-2)); P1 reads the index from x^ or from a linear's bits.
fn trunc_case<R: Ring, O: Ring>(w: Window, c: i64, via_linear: bool, seed: u64) {
    let mut g = rng(seed);
    let q = 1i128 << (w.k - 2);
    let s = 1i128 << w.j;
    let mut v: Vec<i128> = vec![0, 1, -1, -q * s, (q - 1) * s - 1, s / 2];
    while v.len() < 24 {
        v.push(g.gen_range(-q..q - 1) * s + g.gen_range(0..s));
    }
    // out of the quarter window (garbage, but the same garbage as the reference)
    v.extend([q * s + 5, -(q + 3) * s, 3 * q * s]);
    let x: Vec<R> = v.iter().map(|&t| R::from_u64(t as u64)).collect();
    let n = x.len();
    let (rows, cols) = (3usize, n / 3);
    assert_eq!(n % 3, 0);
    let mut pm = PrivateModel::default();
    let mut id = vec![0i64; cols * cols];
    for i in 0..cols {
        id[i * cols + i] = 1;
    }
    pm.linears.insert(
        "id".into(),
        QLinear {
            d_in: cols,
            d_out: cols,
            w: QWeights::Int(id),
            in_scale: None,
            out_scale: vec![1; cols],
            bias: vec![0; cols],
        },
    );
    let model = Arc::new(pm);
    let xs = x.clone();
    let p = prog(
        move |e| e.register_linear::<R>("id", cols, cols),
        move |e| {
            let xm = input(e, &xs, &[rows, cols])?;
            let z = if via_linear {
                let x0 = remask(e, &xm, Reveal::P0)?;
                e.linear(&x0, "id", &[w])?
            } else {
                remask(e, &xm, Reveal::Both)?
            };
            let t = e.trunc_ext::<R, O>(&z, w, c)?;
            reveal(e, &t)
        },
    );
    let ch = check(&model, &p, &mem_cfg(seed));
    let mut carries = 0;
    let mut oow = 0;
    for (i, xi) in x.iter().enumerate() {
        let f = xi.to_i64() >> w.j;
        if !(-q..q).contains(&(f as i128)) {
            oow += 1;
            continue;
        }
        let (t0, t1) = (
            sig::<O>((c as i128) * f as i128),
            sig::<O>((c as i128) * (f as i128 + 1)),
        );
        assert_eq!(ch.det[i], t0, "det trunc {i}: x = {xi:?}");
        if ch.secure[i] == t1 && t0 != t1 {
            assert!(w.j > 0, "a carry with j = 0");
            carries += 1;
        } else {
            assert_eq!(
                ch.secure[i], t0,
                "secure trunc {i}: neither c f nor c (f + 1)"
            );
        }
    }
    assert!(oow >= 2, "the inputs leave the quarter window");
    assert_eq!(ch.det_stats.out_of_window, oow);
    assert_eq!(ch.det_stats.lookups, n as u64);
    if w.j > 2 {
        assert!(carries > 0, "no carry at all in {n} values");
    }
    // no table: the dealer sends 5 words per element
    let wo = wbytes::<O>();
    let wi = wbytes::<R>();
    let lin = if via_linear {
        2 * n as u64 * wi + FRAME
    } else {
        0
    };
    assert_eq!(
        ch.run.dealer.acct.bytes(Phase::Offline, PartyId::P1),
        2 * (n as u64 * wi + FRAME) + lin + 5 * n as u64 * wo + FRAME
    );
}

#[test]
fn trunc_ext_ring_changes() {
    trunc_case::<u32, u64>(Window { j: 6, k: 12 }, 3, false, 100);
    trunc_case::<u32, u64>(Window { j: 6, k: 12 }, -7, true, 101);
    trunc_case::<u64, u16>(Window { j: 20, k: 10 }, 1, true, 102);
    trunc_case::<u64, u32>(Window { j: 0, k: 30 }, 5, false, 103);
    trunc_case::<u16, u32>(Window { j: 3, k: 13 }, 1, false, 104);
}
