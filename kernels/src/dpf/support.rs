//! Support-restricted evaluation of the fused dot `Σ_j T[(y − j) mod 2^k] · u[j]`: a
//! party needs its share u_b[j] only where T[y − j] ≠ 0. Tables that are zero outside a
//! short cyclic interval (exp of centred scores below about −10, softmax probabilities
//! below about −6, GELU below 0) are evaluated on the few leaves covering that interval
//! as seen from y, instead of on the whole domain.
//!
//! **Exact.** Every skipped term is 0 · u_b[j] = 0 in each party's own sum, so each
//! party's output is bit-identical to the full-domain evaluation's. The leaves read
//! depend only on the public index y (an opened masked value) and the public table, so
//! which leaves are expanded reveals nothing a party does not already hold.
//!
//! **Shape.** With the table's support [s0, s0 + m) (cyclic), lookup y needs the domain
//! points j in [y − s0 − m + 1, y − s0] (cyclic): at most W_d = floor((m + 2L − 2) / L)
//! leaves of L = 2^nu words, from leaf lo = ((y − s0 − m + 1) mod 2^k) >> nu. Every key
//! of a batch keeps W_t consecutive (cyclic) nodes at level t, from lo >> (d − t), with
//! W_t = min(2^t, floor(W_(t+1) / 2) + 1): enough to hold every parent of the W_(t+1)
//! nodes below. A level expands each kept node (both children, as the full-domain
//! kernels do) and keeps W_(t+1) children from offset bit (d − t − 1) of lo. The extra
//! nodes are real nodes of the tree whose table entries are zero: they add nothing, and
//! W_d <= 2^(d−1) keeps every kept node distinct.
//!
//! **Cost.** 2·Σ_{t<d} W_t + 4·W_d AES blocks per key against 2·(2^d − 1) + 4·2^d for the
//! full domain. At bert-base seq 128: exp (k = 9 over Z/2^64, 117 of 512 entries
//! nonzero) 112 instead of 382 blocks; p (k = 10 over Z/2^32, 178 of 1024) about 100
//! instead of 382.

use super::{leaf_tweak, push_blocks, words_block, Expander, KeysRef, LEAF_BLOCKS};
use crate::lut::{rotated_dot2_doubled, DotTable};
use crate::prg::{AesImpl, Prg};
use crate::word::Word;

/// How a batch of 1-D lookups into one table is restricted to the table's support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SupportPlan {
    /// A lookup at y first needs domain point y − back (back = s0 + m − 1).
    back: usize,
    /// Nodes kept per key at levels 0..=d (the last: leaves per key). Empty when the
    /// table is zero everywhere (every output is 0).
    widths: Vec<usize>,
}

impl SupportPlan {
    /// The plan for lookups into `table` (2^k words, one axis: kx = 0) with keys of `d`
    /// tree levels and `used` words per leaf, or None when the full-domain expansion is
    /// about as cheap (wide support, a shallow tree, a partial leaf, a 2-D table).
    /// Cost: one pass over the table.
    pub(crate) fn new<W: Word>(table: &[W], kx: u32, d: u32, used: usize) -> Option<Self> {
        let e = (128 / W::BITS) as usize;
        if kx != 0 || d < 2 || used != LEAF_BLOCKS * e {
            return None;
        }
        let Some((s0, m)) = cyclic_support(table) else {
            return Some(SupportPlan {
                back: 0,
                widths: Vec::new(),
            });
        };
        let wd = (m + 2 * used - 2) / used;
        if wd > 1 << (d - 1) {
            return None;
        }
        let mut widths = vec![0usize; d as usize + 1];
        widths[d as usize] = wd;
        for t in (0..d as usize).rev() {
            widths[t] = (1usize << t).min(widths[t + 1] / 2 + 1);
        }
        let blocks = |w: &[usize]| 2 * w[..d as usize].iter().sum::<usize>() + 4 * w[d as usize];
        let full = 2 * ((1usize << d) - 1) + 4 * (1usize << d);
        // The compaction and per-node correction words cost a little: ask for 20 %.
        if 5 * blocks(&widths) > 4 * full {
            return None;
        }
        Some(SupportPlan {
            back: s0 + m - 1,
            widths,
        })
    }

    /// Leaves expanded per key (0 for an all-zero table).
    pub(crate) fn leaves(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }
}

/// The shortest cyclic interval [start, start + len) mod n holding every nonzero entry
/// of `table` (n = table.len()), or None if every entry is zero. Cost: one pass.
pub(crate) fn cyclic_support<W: Word>(table: &[W]) -> Option<(usize, usize)> {
    let n = table.len();
    let p = table.iter().position(|&v| v != W::ZERO)?;
    // The longest run of zeros, scanning cyclically from just after a nonzero entry.
    let (mut best, mut best_end, mut run) = (0usize, 0usize, 0usize);
    for i in 1..=n {
        let j = (p + i) % n;
        if table[j] == W::ZERO {
            run += 1;
            if run > best {
                best = run;
                best_end = j + 1;
            }
        } else {
            run = 0;
        }
    }
    Some((best_end % n, n - best))
}

/// Scratch of the support-restricted evaluator (reused across groups).
#[derive(Default)]
pub(crate) struct Scratch {
    /// First leaf of each key.
    lo: Vec<u32>,
}

impl<W: Word> Expander<W> {
    /// `out[g]` = the unsigned `Σ_j T[(ys[g] − j) mod 2^k] · u_g[j]` of key g of `keys`
    /// (a 1-D table, `tab.kx == 0`), evaluated on the leaves `plan` keeps: the same value
    /// as the full-domain [`Expander::expand_dot`] from the roots.
    pub(super) fn expand_dot_support(
        &mut self,
        keys: &KeysRef<'_, W>,
        plan: &SupportPlan,
        tab: &DotTable<'_, W>,
        ys: &[u32],
        out: &mut [W],
    ) {
        let g = keys.len();
        let out = &mut out[..g];
        out.fill(W::ZERO);
        if plan.widths.is_empty() || g == 0 {
            return;
        }
        let Expander {
            be,
            nodes,
            next,
            cwl,
            cwr,
            words,
            tmp,
            sup,
            ..
        } = self;
        let be = *be;
        let prg = Prg::fixed();
        let (k, d) = (keys.k, keys.d);
        let nu = k - d as u32;
        let (dmask, lmask) = ((1usize << k) - 1, (1usize << d) - 1);
        sup.lo.clear();
        sup.lo.extend(
            ys[..g]
                .iter()
                .map(|&y| (((y as usize).wrapping_sub(plan.back) & dmask) >> nu) as u32),
        );
        let wmax = plan.widths.iter().copied().max().unwrap_or(1);
        if nodes.len() < g * wmax {
            nodes.resize(g * wmax, 0);
        }
        if next.len() < 2 * g * wmax {
            next.resize(2 * g * wmax, 0);
        }
        for (i, v) in nodes[..g].iter_mut().enumerate() {
            *v = keys.root(i);
        }
        for t in 0..d {
            let (wt, wn) = (plan.widths[t], plan.widths[t + 1]);
            let n = g * wt;
            cwl.resize(n, 0);
            cwr.resize(n, 0);
            for i in 0..g {
                let (l, r) = keys.cw(i, t);
                cwl[i * wt..(i + 1) * wt].fill(l);
                cwr[i * wt..(i + 1) * wt].fill(r);
            }
            prg.dpf_level(be, &nodes[..n], &mut next[..2 * n], &cwl[..n], &cwr[..n], 0);
            let shift = d - t - 1;
            for (i, &lo) in sup.lo.iter().enumerate() {
                let off = (lo as usize >> shift) & 1;
                let ch = &next[2 * i * wt..2 * (i + 1) * wt];
                let dst = &mut nodes[i * wn..(i + 1) * wn];
                if off + wn <= 2 * wt {
                    dst.copy_from_slice(&ch[off..off + wn]);
                } else {
                    // a whole level kept (W_t = 2^t): its children wrap around
                    let (a, b) = ch.split_at(off);
                    dst[..b.len()].copy_from_slice(b);
                    dst[b.len()..].copy_from_slice(&a[..wn - b.len()]);
                }
            }
        }
        let wd = plan.widths[d];
        let n = g * wd;
        let used = keys.used;
        // Domain index of leaf w of key i.
        let leaf_j = |lo: u32, w: usize| ((lo as usize + w) & lmask) << nu;
        #[cfg(target_arch = "x86_64")]
        if be == AesImpl::Vaes512 {
            cwl.clear();
            push_blocks(cwl, keys.cw_out_all());
            prg.dpf_leaves_dot_support(be, &nodes[..n], cwl, wd, &sup.lo, ys, k, tab.rev2, out);
            return;
        }
        // Other backends: the leaf words block by block (one-block kernel on the tweaked
        // nodes, each leaf with its key's CW_out block), then one dot per leaf.
        let e = (128 / W::BITS) as usize;
        words.resize(n * used, W::ZERO);
        tmp.resize(n * e, W::ZERO);
        for b in 0..used / e {
            let tweaked = &mut next[..n];
            for (t, &v) in tweaked.iter_mut().zip(&nodes[..n]) {
                *t = v ^ leaf_tweak(b);
            }
            cwl.clear();
            for i in 0..g {
                let blk = words_block(&keys.cw_out(i)[b * e..(b + 1) * e]);
                cwl.extend(std::iter::repeat_n(blk, wd));
            }
            prg.dpf_leaves(be, tweaked, cwl, 0, tmp);
            for (leaf, blk) in words.chunks_exact_mut(used).zip(tmp.chunks_exact(e)) {
                leaf[b * e..(b + 1) * e].copy_from_slice(blk);
            }
        }
        for (i, (&lo, &y)) in sup.lo.iter().zip(ys).enumerate() {
            for w in 0..wd {
                let ws = &words[(i * wd + w) * used..][..used];
                let v = rotated_dot2_doubled(tab.rev2, 0, k, 0, y, leaf_j(lo, w), ws);
                out[i] = out[i].wadd(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{eval_dot2_batch_impl, eval_dot_batch, eval_dot_batch_scalar, gen_batch};
    use super::*;
    use crate::dpf::leaf_levels;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn cyclic_support_finds_the_shortest_interval() {
        assert_eq!(cyclic_support::<u32>(&[0; 8]), None);
        assert_eq!(cyclic_support::<u32>(&[1; 8]), Some((0, 8)));
        assert_eq!(
            cyclic_support::<u32>(&[0, 0, 3, 0, 5, 0, 0, 0]),
            Some((2, 3))
        );
        // wrapping: nonzero at 6, 7, 0
        assert_eq!(
            cyclic_support::<u32>(&[9, 0, 0, 0, 0, 0, 1, 2]),
            Some((6, 3))
        );
        assert_eq!(
            cyclic_support::<u64>(&[0, 0, 0, 0, 0, 0, 0, 7]),
            Some((7, 1))
        );
        assert_eq!(cyclic_support::<u16>(&[7, 0, 0, 0]), Some((0, 1)));
        // two zero runs: the longer one is left out
        assert_eq!(
            cyclic_support::<u32>(&[1, 0, 1, 0, 0, 0, 1, 1]),
            Some((6, 5))
        );
    }

    #[test]
    fn plan_widths_hold_every_parent_and_pay() {
        // k = 9 over u64 (nu = 3, d = 6): 117 nonzero entries -> 16 leaves
        let mut t = vec![0u64; 512];
        t[300..417].iter_mut().for_each(|v| *v = 5);
        let p = SupportPlan::new(&t, 0, 6, 8).unwrap();
        assert_eq!(p.leaves(), 16);
        assert_eq!(p.widths, vec![1, 2, 2, 3, 5, 9, 16]);
        assert_eq!(p.back, 300 + 117 - 1);
        // wide support, 2-D tables and partial leaves fall back to the full domain
        assert!(SupportPlan::new(&vec![1u64; 512], 0, 6, 8).is_none());
        assert!(SupportPlan::new(&t, 1, 6, 8).is_none());
        assert!(SupportPlan::new(&t[..4], 0, 0, 4).is_none());
        assert_eq!(SupportPlan::new(&[0u64; 512], 0, 6, 8).unwrap().leaves(), 0);
    }

    /// A table of 2^k random words that is zero outside a random cyclic interval of
    /// length `m` (possibly wrapping), with nonzero ends.
    fn sparse_table<W: Word>(rng: &mut ChaCha8Rng, k: u32, m: usize) -> Vec<W> {
        let n = 1usize << k;
        let s0 = match rng.gen_range(0..4) {
            0 => 0,
            1 => n - m.max(1) / 2 - 1, // wraps past the end
            _ => rng.gen_range(0..n),
        };
        let mut t = vec![W::ZERO; n];
        for i in 0..m {
            let v = match rng.gen_range(0..6) {
                0 => W::ZERO.wsub(W::ONE),
                1 => W::ONE.shl(W::BITS - 1),
                2 => W::ZERO,
                _ => W::from_u64(rng.gen()),
            };
            t[(s0 + i) % n] = v;
        }
        t[s0 % n] = W::ONE;
        t[(s0 + m - 1) % n] = W::ONE.wadd(W::ONE);
        t
    }

    fn check_support_eval<W: Word>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let backends = Prg::fixed().backends();
        for &k in &[6u32, 7, 8, 9, 10, 12, 14] {
            let n = 1usize << k;
            let d = k - leaf_levels::<W>(k);
            for &m in &[1usize, 2, 5, n / 16, n / 8 + 3, n / 5] {
                let table = sparse_table::<W>(&mut rng, k, m.max(1));
                let used = 1usize << leaf_levels::<W>(k);
                let plan = SupportPlan::new(&table, 0, d, used);
                if m <= n / 16 && d >= 4 {
                    assert!(plan.is_some(), "k={k} m={m}: the sparse path must be taken");
                }
                let cnt = 150;
                let alphas: Vec<u32> = (0..cnt)
                    .map(|i| match i {
                        0 => 0,
                        1 => (n - 1) as u32,
                        _ => rng.gen_range(0..n as u32),
                    })
                    .collect();
                let beta = W::from_u64(rng.gen::<u64>() | 1);
                let (k0, k1) = gen_batch::<W>(k, &alphas, beta, rng.gen());
                let xs: Vec<u32> = (0..cnt)
                    .map(|i| match i % 7 {
                        0 => 0,
                        1 => (n - 1) as u32,
                        2 => alphas[i],
                        _ => rng.gen_range(0..n as u32),
                    })
                    .collect();
                let zeros = vec![0u32; cnt];
                for keys in [&k0, &k1] {
                    let want = eval_dot_batch_scalar(keys, &table, &xs);
                    for &be in &backends {
                        let got = eval_dot2_batch_impl(be, keys, &table, 0, k, &zeros, &xs);
                        assert_eq!(got, want, "k={k} m={m} {be:?}");
                    }
                }
                let (d0, d1) = (
                    eval_dot_batch(&k0, &table, &xs),
                    eval_dot_batch(&k1, &table, &xs),
                );
                for i in 0..cnt {
                    let t = table[(xs[i] as usize).wrapping_sub(alphas[i] as usize) & (n - 1)];
                    assert_eq!(d0[i].wadd(d1[i]), t.wmul(beta), "k={k} m={m} i={i}");
                }
            }
        }
    }

    #[test]
    fn support_eval_matches_full_domain_u16() {
        check_support_eval::<u16>(70);
    }
    #[test]
    fn support_eval_matches_full_domain_u32() {
        check_support_eval::<u32>(71);
    }
    #[test]
    fn support_eval_matches_full_domain_u64() {
        check_support_eval::<u64>(72);
    }

    #[test]
    fn all_zero_table_gives_zero_shares() {
        let mut rng = ChaCha8Rng::seed_from_u64(73);
        let alphas: Vec<u32> = (0..40).map(|_| rng.gen_range(0..1024)).collect();
        let (k0, k1) = gen_batch::<u32>(10, &alphas, 7, [3; 32]);
        let xs: Vec<u32> = (0..40).map(|_| rng.gen_range(0..1024)).collect();
        let t = vec![0u32; 1024];
        assert!(eval_dot_batch(&k0, &t, &xs).iter().all(|&v| v == 0));
        assert!(eval_dot_batch(&k1, &t, &xs).iter().all(|&v| v == 0));
    }
}
