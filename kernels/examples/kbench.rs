//! Quick throughput check of the kernels (release mode):
//! `cargo run --release -p kernels --example kbench [filter]`.

use kernels::{bitfc, dpf, lut, matmul, prg, Word};
use std::time::Instant;

/// Prints the minimum and the median over `reps` timed runs (after one warm-up run):
/// the minimum is the figure to compare on a shared, noisy machine.
fn time<T>(name: &str, reps: usize, mut f: impl FnMut() -> T) {
    let _ = f(); // warm-up
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    println!(
        "{name:<44} {:>10.3} ms (median {:.3})",
        ts[0],
        ts[ts.len() / 2]
    );
}

fn words<W: Word>(n: usize, seed: u8) -> Vec<W> {
    prg::expand_seed::<W>([seed; 16], n)
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let on = |s: &str| s.contains(&filter);
    println!("threads: {}", rayon::current_num_threads());
    if on("fc") {
        let (n, di, dout) = (128, 768, 3072);
        let s: Vec<i8> = words::<u16>(di * dout, 1)
            .iter()
            .map(|v| if v & 1 == 1 { 1 } else { -1 })
            .collect();
        let p = bitfc::pack_signs(&s, di, dout);
        let x16 = words::<u16>(n * di, 2);
        let x32 = words::<u32>(n * di, 2);
        let x64 = words::<u64>(n * di, 2);
        time("fc 128x768x3072 u16", 5, || bitfc::fc(&x16, n, &p));
        time("fc 128x768x3072 u32", 5, || bitfc::fc(&x32, n, &p));
        time("fc 128x768x3072 u64", 5, || bitfc::fc(&x64, n, &p));
    }
    if on("matmul") {
        let (m, k, n) = (128, 768, 768);
        let a16 = words::<u16>(m * k, 3);
        let b16 = words::<u16>(k * n, 4);
        let a = words::<u32>(m * k, 3);
        let b = words::<u32>(k * n, 4);
        let a64 = words::<u64>(m * k, 3);
        let b64 = words::<u64>(k * n, 4);
        time("matmul 128x768x768 u16", 5, || {
            matmul::matmul(&a16, &b16, m, k, n)
        });
        time("matmul 128x768x768 u32", 5, || {
            matmul::matmul(&a, &b, m, k, n)
        });
        time("matmul 128x768x768 u64", 5, || {
            matmul::matmul(&a64, &b64, m, k, n)
        });
        let (bt, m2, k2, n2) = (12, 128, 64, 128);
        let qa = words::<u64>(bt * m2 * k2, 5);
        let qb = words::<u64>(bt * k2 * n2, 6);
        time("matmul_batched 12x(128x64x128) u64", 5, || {
            matmul::matmul_batched(&qa, &qb, bt, m2, k2, n2)
        });
    }
    // `dpf`: key generation and evaluation; `gen`: generation only; `eval`: evaluation only.
    if on("dpf") || on("gen") || on("eval") {
        // (keys, k, also time u64): the secure BERT run does ~1.3M k = 8/9 lookups per
        // encoder layer and ~1.5k with k = 16.
        for &(nk, k, wide) in &[
            (100_000usize, 8u32, true),
            (200_000, 9, false),
            (10_000, 12, true),
            (1536, 16, false),
        ] {
            let alphas: Vec<u32> = words::<u32>(nk, 7)
                .iter()
                .map(|v| v & ((1 << k) - 1))
                .collect();
            let xs: Vec<u32> = words::<u32>(nk, 8)
                .iter()
                .map(|v| v & ((1 << k) - 1))
                .collect();
            let table = words::<u32>(1 << k, 9);
            if filter != "eval" {
                time(&format!("dpf gen_batch {nk} keys k={k} u32"), 3, || {
                    dpf::gen_batch::<u32>(k, &alphas, 1, [1; 32])
                });
            }
            let (k0, _k1) = dpf::gen_batch::<u32>(k, &alphas, 1, [1; 32]);
            if filter == "gen" {
                continue;
            }
            time(
                &format!("dpf eval_dot_batch {nk} keys k={k} u32"),
                10,
                || dpf::eval_dot_batch(&k0, &table, &xs),
            );
            if k == 8 {
                let ys: Vec<u32> = xs.iter().map(|v| v >> 4).collect();
                time(
                    &format!("dpf eval_dot2_batch {nk} keys k=4+4 u32"),
                    10,
                    || dpf::eval_dot2_batch(&k0, &table, 4, 4, &ys, &xs),
                );
            }
            if !wide {
                continue;
            }
            let table64 = words::<u64>(1 << k, 9);
            let (k064, _) = dpf::gen_batch::<u64>(k, &alphas, 1, [1; 32]);
            time(
                &format!("dpf eval_dot_batch {nk} keys k={k} u64"),
                10,
                || dpf::eval_dot_batch(&k064, &table64, &xs),
            );
        }
        let (k0, _) = dpf::gen::<u32, _>(20, 5, 1, &mut rand::thread_rng());
        time("dpf eval_full k=20 u32", 10, || dpf::eval_full(&k0));
        let table = words::<u32>(1 << 20, 9);
        time("dpf eval_dot k=20 u32", 10, || {
            dpf::eval_dot(&k0, &table, 77)
        });
    }
    // `bertdpf`: the fused expand-and-dot at the batch shapes of one bert-base seq-128
    // layer (w1a4, one party), with the AES rate each reaches (the limit is the PRG's
    // block rate: `aes`).
    if on("bertdpf") {
        bert_dpf::<u32>(98_304, 8, None);
        bert_dpf::<u32>(393_216, 8, None);
        bert_dpf::<u64>(196_608, 9, None);
        bert_dpf::<u32>(196_608, 10, None);
        bert_dpf::<u32>(1536, 12, None);
        bert_dpf::<u64>(128, 16, None);
    }
    if on("bertdpf") || on("dpfsupport") {
        // the softmax tables as they are: zero outside a short interval (exp: 117 of 512
        // entries, p: 178 of 1024), so only the leaves meeting it are expanded
        bert_dpf::<u64>(196_608, 9, Some(117));
        bert_dpf::<u32>(196_608, 10, Some(178));
    }
    if on("lut") {
        let k = 8;
        let n = 100_000;
        let table = words::<u32>(1 << k, 9);
        let u = words::<u32>(n << k, 10);
        let idx: Vec<u32> = words::<u32>(n, 11).iter().map(|v| v & 255).collect();
        time("onehot_dot 100k x 2^8 u32", 3, || {
            lut::onehot_dot(&table, k, &idx, &u)
        });
        time("gather 100k x 2^8 u32", 3, || lut::gather(&u, k, &idx));
    }
    if on("aes") {
        let prg = prg::Prg::fixed();
        let mut buf: Vec<u128> = (0..4096u128).collect();
        time("fixed-key AES 4096 blocks x 256", 5, || {
            for _ in 0..256 {
                prg.encrypt(0, &mut buf);
            }
        });
    }
    if on("seed") {
        time("expand_seed 16M u32", 3, || {
            prg::expand_seed::<u32>([3; 16], 1 << 24)
        });
    }
}

/// Times `dpf::eval_dot_batch` for `nk` keys on 2^k and prints its AES block rate (as
/// full-domain blocks: with `support` = Some(m), the table is zero outside m entries and
/// the rate is what a full-domain evaluation would need to match it).
fn bert_dpf<W: Word>(nk: usize, k: u32, support: Option<usize>) {
    let mask = (1u32 << k) - 1;
    let alphas: Vec<u32> = words::<u32>(nk, 7).iter().map(|v| v & mask).collect();
    let xs: Vec<u32> = words::<u32>(nk, 8).iter().map(|v| v & mask).collect();
    let mut table = words::<W>(1 << k, 9);
    if let Some(m) = support {
        table[m..].iter_mut().for_each(|v| *v = W::ZERO);
    }
    let (k0, _) = dpf::gen_batch::<W>(k, &alphas, W::ONE, [1; 32]);
    // AES blocks per full-domain evaluation: two per inner tree node, four per leaf.
    let nu = dpf::leaf_levels::<W>(k);
    let d = k - nu;
    let blocks = ((1u64 << (d + 1)) - 2 + (1u64 << d) * dpf::LEAF_BLOCKS as u64) as f64;
    let sup = support.map_or(String::new(), |m| format!(" support {m}"));
    let name = format!("dpf eval_dot_batch {nk} keys k={k} u{}{sup}", W::BITS);
    let t = Instant::now();
    let reps = 7;
    for _ in 0..reps {
        std::hint::black_box(dpf::eval_dot_batch(&k0, &table, &xs));
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:<44} {:>10.3} ms ({:.3} us/lookup, {:.2} G AES blocks/s)",
        s * 1e3,
        s * 1e6 / nk as f64,
        nk as f64 * blocks / s / 1e9
    );
}
